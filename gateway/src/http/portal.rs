//! The portal: the platform's pages for people, from assets built into the binary. The pages are
//! one document and one script that build every page in the browser from the public JSON API,
//! so a page can do nothing the API does not let its user do.
//!
//! `/` (the catalog), `/datasets/{id}`, `/docs` (the API) answer the document; a dataset page of a
//! dataset the API does not show answers with the API's status (404 for unknown and non-open
//! ids alike), so its URL cannot probe for non-open datasets either.

use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, ETAG};
use hyper::{HeaderMap, Response, StatusCode};
use sha2::{Digest, Sha256};

use super::response::{self, Body};
use crate::call;
use crate::error::Error;
use crate::state::State;

const DOCUMENT: &str = include_str!("../../portal/index.html");
const SCRIPT: &str = include_str!("../../portal/portal.js");
const STYLE: &str = include_str!("../../portal/portal.css");
const ICON: &str = include_str!("../../portal/favicon.svg");

/// Changes whenever an asset does: the assets' URLs carry it, and it is their entity tag.
static VERSION: LazyLock<String> = LazyLock::new(|| {
    let mut hash = Sha256::new();
    for asset in [DOCUMENT, SCRIPT, STYLE, ICON] {
        hash.update(asset.as_bytes());
    }
    hex::encode(&hash.finalize()[..8])
});

/// The pages' own rules for the browser: nothing but this origin's script, style and API, and no
/// framing.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
    img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Whether a data-port path is one of the portal's: `/`, `/datasets/{id}`, `/docs`, `/account`,
/// `/portal/{asset}`, `/favicon.ico`.
pub fn is_page(path: &[&str]) -> bool {
    matches!(path, [""] | ["datasets", _] | ["docs"] | ["account"] | ["portal", _] | ["favicon.ico"])
}

/// The answer to a portal path (GET or HEAD, checked by the caller).
pub fn page(state: &Arc<State>, path: &[&str], headers: &HeaderMap) -> Result<Response<Body>, Error> {
    match path {
        ["portal", "portal.js"] => Ok(asset(headers, SCRIPT, "text/javascript; charset=utf-8")),
        ["portal", "portal.css"] => Ok(asset(headers, STYLE, "text/css; charset=utf-8")),
        ["favicon.ico"] => Ok(asset(headers, ICON, "image/svg+xml")),
        ["portal", _] => Err(super::request::no_route()),
        ["datasets", id] => {
            // The dataset's page exists when the API shows the dataset; otherwise the page
            // answers as the API does, with the document to say so to a person.
            let status = match call::lookup(&state.live(), id) {
                Ok(_) => StatusCode::OK,
                Err(e) => response::status(e.kind),
            };
            Ok(document(state, status))
        }
        _ => Ok(document(state, StatusCode::OK)),
    }
}

/// The document every page starts from, with what the script needs to know of this gateway.
fn document(state: &Arc<State>, status: StatusCode) -> Response<Body> {
    let config = &state.config;
    let flight_port = state.flight_port.get().copied().unwrap_or_else(|| config.flight.listen.port());
    let html = DOCUMENT
        .replace("{{utc_offset_hours}}", &config.limits.quota_utc_offset_hours.to_string())
        .replace("{{flight_scheme}}", if config.flight.tls.is_some() { "grpc+tls" } else { "grpc" })
        .replace("{{flight_port}}", &flight_port.to_string())
        .replace("{{version}}", &VERSION);
    let mut answer = Response::new(response::full(Bytes::from(html)));
    *answer.status_mut() = status;
    let h = answer.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("content-security-policy", HeaderValue::from_static(POLICY));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    answer
}

/// A static asset, revalidated by its entity tag.
fn asset(headers: &HeaderMap, body: &'static str, media_type: &'static str) -> Response<Body> {
    let etag = format!("\"{}\"", *VERSION);
    let fresh = super::download::not_modified_by_etag(headers, &etag);
    let mut answer =
        Response::new(response::full(if fresh { Bytes::new() } else { Bytes::from_static(body.as_bytes()) }));
    if fresh {
        *answer.status_mut() = StatusCode::NOT_MODIFIED;
    }
    let h = answer.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(media_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    h.insert(ETAG, HeaderValue::from_str(&etag).expect("a hex tag is a header value"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    answer
}
