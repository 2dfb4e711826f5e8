//! The `RateLimit` response fields of an admitted HTTP call; admission and metering themselves
//! are protocol-neutral ([`crate::call`]).

use hyper::header::{HeaderName, HeaderValue};
use hyper::HeaderMap;

use crate::ratelimit::Admission;

/// The `RateLimit` fields (draft-ietf-httpapi-ratelimit-headers) and their older
/// `RateLimit-Limit/Remaining/Reset` forms.
pub fn rate_headers(headers: &mut HeaderMap, a: &Admission) {
    const POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
    const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
    const LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
    const REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
    const RESET: HeaderName = HeaderName::from_static("ratelimit-reset");
    let text = |value: String| HeaderValue::from_str(&value).expect("rate fields are ASCII");
    headers.insert(POLICY, text(format!("\"{}\";q={};w=1", a.policy, a.burst)));
    headers.insert(RATELIMIT, text(format!("\"{}\";r={};t={}", a.policy, a.remaining, a.reset_seconds)));
    headers.insert(LIMIT, HeaderValue::from(a.burst));
    headers.insert(REMAINING, HeaderValue::from(a.remaining));
    headers.insert(RESET, HeaderValue::from(a.reset_seconds));
}
