//! What both HTTP routers read from a request, read one way: path segments, query parameters,
//! the JSON body, the method, and the principal behind a key.

use std::sync::Arc;

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request};
use policy::{Actor, Principal};
use serde::de::DeserializeOwned;

use crate::error::{Error, Kind};
use crate::state::State;

/// Largest request body either API reads.
const MAX_BODY_BYTES: usize = 1 << 20;

/// Query parameters that carry secrets and must never be in a URL.
const KEY_PARAMETERS: [&str; 5] = ["key", "api_key", "apikey", "access_token", "token"];

/// The path's segments, each percent-decoded on its own (so `a%2Fb` stays one segment).
pub fn segments(path: &str) -> Vec<String> {
    path.trim_start_matches('/')
        .split('/')
        .map(|s| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned())
        .collect()
}

/// Refuses a method the path does not answer (405 with `Allow`); `allowed` lists them as the
/// `Allow` field does ("GET, HEAD").
pub fn allow(method: &Method, allowed: &'static str) -> Result<(), Error> {
    if allowed.split(", ").any(|m| m == method.as_str()) {
        Ok(())
    } else {
        let mut e =
            Error::new(Kind::MethodNotAllowed, "method_not_allowed", format!("this endpoint answers {allowed}"));
        e.headers.push(("allow", allowed.to_owned()));
        Err(e)
    }
}

/// The answer for a path no route matches.
pub fn no_route() -> Error {
    Error::new(Kind::NotFound, "not_found", "no such endpoint; see /openapi.json")
}

/// A request's query parameters, percent-decoded. A repeated parameter counts as its last value;
/// a key in the query string is refused, since URLs end up in logs. `_`, the cache-buster some
/// clients add (jQuery's `cache: false`), is ignored everywhere.
#[derive(Clone, Default)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// Parameters already read, as pairs in order.
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Params {
        Params(pairs)
    }

    pub fn parse(query: Option<&str>) -> Result<Params, Error> {
        let params: Vec<(String, String)> = form_urlencoded::parse(query.unwrap_or("").as_bytes())
            .filter(|(k, _)| k != "_")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        if let Some((k, _)) = params.iter().find(|(k, _)| KEY_PARAMETERS.contains(&k.to_ascii_lowercase().as_str())) {
            return Err(Error::bad_request(
                "key_in_query",
                format!("`{k}` must not be sent in the URL; send the key in the Authorization or X-API-Key header"),
            ));
        }
        Ok(Params(params))
    }

    /// Refuses parameters the endpoint does not take, so a typo is not silently ignored.
    pub fn only(&self, allowed: &[&str]) -> Result<&Params, Error> {
        match self.0.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
            None => Ok(self),
            Some((k, _)) if allowed.is_empty() => {
                Err(Error::bad_request("unknown_parameter", format!("this endpoint takes no parameters, not `{k}`")))
            }
            Some((k, _)) => Err(Error::bad_request(
                "unknown_parameter",
                format!("unknown parameter `{k}`; this endpoint takes {}", allowed.join(", ")),
            )),
        }
    }

    /// The parameter's value (the last, if repeated).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The parameter's value unless it is missing or empty.
    pub fn given(&self, name: &str) -> Option<&str> {
        self.get(name).filter(|v| !v.is_empty())
    }

    /// A positive integer parameter, `default` when missing.
    pub fn positive(&self, name: &str, default: usize) -> Result<usize, Error> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                Error::bad_request("bad_parameter", format!("`{name}` takes a positive integer, not `{v}`"))
            }),
        }
    }

    /// An RFC 3339 time parameter.
    pub fn time(&self, name: &str) -> Result<Option<chrono::DateTime<chrono::Utc>>, Error> {
        self.given(name)
            .map(|v| {
                v.parse().map_err(|_| {
                    Error::bad_request("bad_parameter", format!("`{name}` takes an RFC 3339 time, not `{v}`"))
                })
            })
            .transpose()
    }

    /// Every parameter, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// Reads a JSON object body of at most [`MAX_BODY_BYTES`] as `T`, naming the field of any error.
/// Only an object is taken: serde alone would also take an array as the fields in order.
pub async fn read_json<T: DeserializeOwned>(req: Request<Incoming>) -> Result<T, Error> {
    let bytes = Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|e| Error::bad_request("bad_body", format!("cannot read the body: {e}")))?
        .to_bytes();
    if bytes.iter().find(|b| !b.is_ascii_whitespace()).is_some_and(|b| *b != b'{') {
        return Err(Error::bad_request("bad_body", "the body must be a JSON object"));
    }
    let mut de = serde_json::Deserializer::from_slice(&bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." { String::new() } else { format!("{path}: ") };
        Error::bad_request("bad_body", format!("{at}{}", e.inner()))
    })
}

/// The principal behind the key a data-port request presents; `None` without a key.
pub async fn principal(state: &Arc<State>, headers: &hyper::HeaderMap) -> Result<Option<Principal>, Error> {
    match state.keys.caller(headers).await? {
        policy::Caller::Anonymous => Ok(None),
        policy::Caller::Key { principal, .. } => {
            let found = state.store_call(move |s| s.principal(&principal)).await?;
            found
                .map(Some)
                .ok_or_else(|| Error::new(Kind::Unauthenticated, "unknown_key", "the key's principal is gone"))
        }
    }
}

/// The actor behind a data-port request; 401 without a key.
pub async fn actor(state: &Arc<State>, headers: &hyper::HeaderMap) -> Result<Actor, Error> {
    principal(state, headers)
        .await?
        .map(Actor::Principal)
        .ok_or_else(|| Error::new(Kind::Unauthenticated, "key_required", "this workflow needs your API key"))
}
