//! Applying a grant's limits to an HTTP call: admission (rate and daily request quota), the
//! `RateLimit` response fields, and metering of rows and bytes against the daily quotas.

use chrono::Utc;
use futures_util::StreamExt;
use hyper::header::HeaderValue;
use hyper::HeaderMap;
use policy::Grant;
use std::net::IpAddr;

use crate::error::{Error, Kind};
use crate::ratelimit::{Admission, Budget, Denied};
use crate::source::{BatchStream, ByteStream};
use crate::state::State;

/// Admits the call or refuses it with 429 and `Retry-After`.
pub fn admit(state: &State, grant: &Grant, client: IpAddr) -> Result<(Admission, Option<Budget>), Error> {
    let store = state.store.clone();
    let load = move |agreement: &str, day: &str| {
        store.usage(agreement, day).unwrap_or_else(|e| {
            tracing::warn!(agreement, error = %e, "quota usage not readable; counting from zero");
            Default::default()
        })
    };
    state.limiter.admit(&grant.limit, client, Utc::now(), load).map_err(|denied| {
        let (mut error, retry_after) = match denied {
            Denied::Rate { policy, burst, retry_after } => {
                let mut e = Error::new(
                    Kind::TooManyRequests,
                    "rate_limited",
                    format!("the {policy} rate limit is spent; retry in {:.1} s", retry_after.as_secs_f64()),
                );
                let t = retry_after.as_secs_f64().ceil().max(1.0) as u64;
                e.headers.extend([
                    ("ratelimit-policy", format!("\"{policy}\";q={burst};w=1")),
                    ("ratelimit", format!("\"{policy}\";r=0;t={t}")),
                    ("ratelimit-limit", burst.to_string()),
                    ("ratelimit-remaining", "0".into()),
                    ("ratelimit-reset", t.to_string()),
                ]);
                (e, retry_after)
            }
            Denied::Quota { quota, limit, retry_after } => (
                Error::new(
                    Kind::TooManyRequests,
                    "quota_exhausted",
                    format!("the daily quota `{quota}` ({limit}) of your agreement is spent; it renews at midnight"),
                ),
                retry_after,
            ),
        };
        error.headers.push(("retry-after", retry_after.as_secs_f64().ceil().max(1.0).to_string()));
        error
    })
}

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

fn quota_spent(which: &str, left: u64) -> Error {
    Error::new(
        Kind::TooManyRequests,
        "quota_exhausted",
        format!("the daily quota `{which}` of your agreement does not cover this result ({left} left today); narrow the query or wait for midnight"),
    )
}

/// Counts the rows of a result against the budget. A batch that would pass it is not sent:
/// before the first row that makes a clean 429 and spends nothing; after it the response breaks
/// off (the client never takes a cut result for a complete one) and what was left of the day's
/// quota is spent.
pub fn meter_rows(batches: BatchStream, budget: Option<Budget>) -> BatchStream {
    let Some(budget) = budget else { return batches };
    let mut sent = 0u64;
    let mut over = None;
    Box::pin(batches.map(move |batch| {
        if let Some(left) = over {
            return Err(quota_spent("rows_per_day", left));
        }
        let batch = batch?;
        let rows = batch.num_rows() as u64;
        if let Err(left) = budget.take_rows(rows) {
            over = Some(left);
            if sent > 0 {
                budget.exhaust_rows();
            }
            return Err(quota_spent("rows_per_day", left));
        }
        sent += rows;
        Ok(batch)
    }))
}

/// Counts the bytes of a response body against the budget. The head is already sent, so a body
/// that runs past the budget breaks off and spends what was left of the day's quota.
pub fn meter_bytes(body: ByteStream, budget: Option<Budget>) -> ByteStream {
    let Some(budget) = budget else { return body };
    Box::pin(body.map(move |chunk| {
        let chunk = chunk?;
        if let Err(left) = budget.take_bytes(chunk.len() as u64) {
            budget.exhaust_bytes();
            return Err(quota_spent("bytes_per_day", left));
        }
        Ok(chunk)
    }))
}
