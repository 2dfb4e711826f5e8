//! The `RateLimit` response fields of an admitted HTTP call; admission and metering themselves
//! are protocol-neutral ([`crate::call`]).

use hyper::header::HeaderValue;
use hyper::HeaderMap;

use crate::ratelimit::Admission;

/// The `RateLimit` fields (draft-ietf-httpapi-ratelimit-headers) and their older
/// `RateLimit-Limit/Remaining/Reset` forms.
pub fn rate_headers(headers: &mut HeaderMap, a: &Admission) {
    let mut set = |name: &'static str, value: String| {
        headers.insert(name, HeaderValue::from_str(&value).expect("rate fields are ASCII"));
    };
    set("ratelimit-policy", format!("\"{}\";q={};w=1", a.policy, a.burst));
    set("ratelimit", format!("\"{}\";r={};t={}", a.policy, a.remaining, a.reset_seconds));
    set("ratelimit-limit", a.burst.to_string());
    set("ratelimit-remaining", a.remaining.to_string());
    set("ratelimit-reset", a.reset_seconds.to_string());
}
