//! Cross-origin calls to the data API (`[http.cors]`): every answer to an allowed origin says
//! so, with the fields a page's script may read, and a preflight is answered with the methods
//! the endpoint takes and the fields a call may send. The admin API takes none of this.
//!
//! No cookies are used (credentials are not allowed): a key travels in `Authorization` or
//! `X-API-Key`, which a page sends only on purpose.

use hyper::header::{
    HeaderMap, HeaderValue, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use hyper::{Method, Response, StatusCode};

use super::response::{self, Body};
use crate::config::CorsConfig;

/// What a cross-origin call may send besides the CORS-safelisted fields.
pub const ALLOWED_HEADERS: &str =
    "Authorization, X-API-Key, Range, If-None-Match, If-Range, Prefer, Content-Type, X-Request-Id";

/// What a page's script may read of an answer besides the CORS-safelisted fields.
pub const EXPOSED_HEADERS: &str = "RateLimit, RateLimit-Policy, RateLimit-Limit, RateLimit-Remaining, \
    RateLimit-Reset, Retry-After, ETag, X-Request-Id, X-Dataset-Version, Content-Range, Content-Length, \
    Content-Disposition, Accept-Ranges, Link";

/// The request's `Origin`.
pub fn origin(request: &HeaderMap) -> Option<HeaderValue> {
    request.get(ORIGIN).cloned()
}

/// The `Access-Control-Allow-Origin` value for a request from `origin`, if it may call. Any
/// origin allowed: `*` (whether or not the request names one, so caches can share the answer);
/// a list: the request's own origin, when listed.
fn allowed_origin(cors: &CorsConfig, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
    if cors.allows_any() {
        return Some(HeaderValue::from_static("*"));
    }
    let origin = origin?;
    cors.allows(origin.to_str().ok()?).then(|| origin.clone())
}

/// Adds the CORS fields to an answer of the data API to a request from `origin`.
pub fn decorate(cors: &CorsConfig, origin: Option<&HeaderValue>, answer: &mut HeaderMap) {
    if !cors.allows_any() && !cors.allowed_origins.is_empty() {
        // The answer differs by origin: a shared cache must keep them apart.
        answer.append(VARY, HeaderValue::from_static("Origin"));
    }
    if let Some(origin) = allowed_origin(cors, origin) {
        answer.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        answer.insert(ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(EXPOSED_HEADERS));
    }
}

/// Whether a request is a CORS preflight: `OPTIONS` naming the method it asks for.
pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS && headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
}

/// The answer to a preflight from `origin` for an endpoint that takes `methods` (as `Allow`
/// lists them): 204 with what the call may use, or 403 `origin_not_allowed` for an origin not
/// allowed (the browser then refuses the call itself).
pub fn preflight(cors: &CorsConfig, origin: Option<&HeaderValue>, methods: &str) -> Response<Body> {
    let Some(origin) = allowed_origin(cors, origin).filter(|_| origin.is_some()) else {
        let error = crate::error::Error::new(
            crate::error::Kind::Forbidden,
            "origin_not_allowed",
            "pages of this origin may not call this API ([http.cors] allowed_origins)",
        );
        return response::error(&error);
    };
    let mut answer = Response::new(response::full(bytes::Bytes::new()));
    *answer.status_mut() = StatusCode::NO_CONTENT;
    let headers = answer.headers_mut();
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    // OPTIONS itself is answered here; the rest is what the endpoint takes.
    let methods = format!("{methods}, OPTIONS");
    headers.insert(ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_str(&methods).expect("methods are ASCII"));
    headers.insert(ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static(ALLOWED_HEADERS));
    headers.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from(cors.max_age_seconds));
    if !cors.allows_any() {
        headers.append(VARY, HeaderValue::from_static("Origin"));
    }
    headers.append(VARY, HeaderValue::from_static("Access-Control-Request-Method, Access-Control-Request-Headers"));
    answer
}
