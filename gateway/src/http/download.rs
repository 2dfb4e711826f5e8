//! Raw download: the original file, byte for byte, with the HTTP caching and range machinery
//! (RFC 9110 §13–14): `ETag` + `If-None-Match`, `Last-Modified` + `If-Modified-Since`, a single
//! `Range` (206, or 416 when unsatisfiable), `If-Range`, and `HEAD`. Upstream datasets pass the
//! same request headers to the origin and its answer back, streamed as it arrives. A file with
//! a compressed copy beside it is sent as that copy to a client that takes its coding.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use hyper::body::Incoming;
use hyper::header::{
    HeaderMap, HeaderName, HeaderValue, ACCEPT_RANGES, CONTENT_DISPOSITION, CONTENT_ENCODING, CONTENT_LENGTH,
    CONTENT_RANGE, CONTENT_TYPE, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, LAST_MODIFIED, RANGE, VARY,
};
use hyper::{Method, Request, Response, StatusCode};
use policy::Grant;

use super::compress::Coding;
use super::response::{self, Body, DatasetVersion};
use crate::config::SourceConfig;
use crate::error::{Error, Kind};
use crate::ratelimit::Budget;
use crate::source::{file, upstream};
use crate::state::{CatalogEntry, State};

/// Origin response headers passed back to the client.
const PASSED_RESPONSE_HEADERS: [HeaderName; 6] =
    [CONTENT_TYPE, CONTENT_LENGTH, CONTENT_RANGE, ETAG, LAST_MODIFIED, ACCEPT_RANGES];

pub async fn serve(
    state: &State,
    entry: &CatalogEntry,
    grant: &Grant,
    req: &Request<Incoming>,
    budget: Option<Budget>,
    refused: prometheus::IntCounter,
) -> Result<Response<Body>, Error> {
    debug_assert!(grant.scope.is_whole_dataset(&entry.dataset), "policy grants downloads of whole datasets only");
    match &entry.config.source {
        SourceConfig::File(path) => {
            from_file(state, entry, req, state.config.data_dir.join(path), budget, refused).await
        }
        SourceConfig::Url(url) => from_origin(state, entry, req, url, budget, refused).await,
    }
}

async fn from_file(
    state: &State,
    entry: &CatalogEntry,
    req: &Request<Incoming>,
    path: std::path::PathBuf,
    budget: Option<Budget>,
    refused: prometheus::IntCounter,
) -> Result<Response<Body>, Error> {
    let headers = req.headers();
    // A compressed copy beside the file, as current as the file, is sent instead when the
    // client takes its coding: the file's bytes stay exact, and nothing is compressed on the fly.
    let (file, coding, data_version) = match precompressed(&path, headers) {
        Some((sibling, coding, original)) => (file::open_bytes(sibling).await?, Some(coding), original.version),
        None => {
            let file = file::open_bytes(path).await?;
            let version = file.info.version.clone();
            (file, None, version)
        }
    };
    let info = file.info.clone();
    let etag = match coding {
        Some(coding) => format!("\"{}-{}\"", info.version, coding.name()),
        None => format!("\"{}\"", info.version),
    };

    let mut response = Response::new(response::full(""));
    {
        let h = response.headers_mut();
        h.insert(VARY, HeaderValue::from_static("Accept-Encoding"));
        if let Some(coding) = coding {
            h.insert(CONTENT_ENCODING, coding.header());
        }
        h.insert(ETAG, value(&etag));
        // HTTP dates cover 1970 to 9999; a file stamped outside that has no Last-Modified.
        if let Some(date) = http_date(info.modified) {
            h.insert(LAST_MODIFIED, value(&date));
        }
        h.insert("x-dataset-version", value(&data_version));
        h.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    }
    response.extensions_mut().insert(DatasetVersion(data_version));
    if not_modified(headers, &etag, info.modified) {
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        return Ok(response);
    }

    let range = match headers.get(RANGE).and_then(|r| r.to_str().ok()) {
        Some(r) if if_range_holds(headers, &etag, info.modified) => parse_range(r, info.len)?,
        _ => None,
    };
    let (start, end) = range.unwrap_or((0, info.len));
    {
        let h = response.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static(entry.dataset.format.media_type()));
        h.insert(CONTENT_LENGTH, value(&(end - start).to_string()));
        h.insert(
            CONTENT_DISPOSITION,
            value(&format!("attachment; filename=\"{}.{}\"", entry.dataset.id, entry.dataset.format.extension())),
        );
        if range.is_some() {
            h.insert(CONTENT_RANGE, value(&format!("bytes {start}-{}/{}", end - 1, info.len)));
        }
    }
    if range.is_some() {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    if req.method() != Method::HEAD {
        let body = file.stream(start, end, state.live().limits.download_chunk_bytes);
        *response.body_mut() = response::streamed(crate::call::meter_bytes(body, budget, bytes::Bytes::len, refused));
    }
    Ok(response)
}

async fn from_origin(
    state: &State,
    entry: &CatalogEntry,
    req: &Request<Incoming>,
    url: &str,
    budget: Option<Budget>,
    refused: prometheus::IntCounter,
) -> Result<Response<Body>, Error> {
    let mut forwarded = HeaderMap::new();
    for name in upstream::FORWARDED_REQUEST_HEADERS {
        if let Some(v) = req.headers().get(&name) {
            forwarded.insert(name, v.clone());
        }
    }
    let origin = state.upstream.request(req.method(), url, &forwarded).await?;
    match origin.status {
        StatusCode::OK | StatusCode::PARTIAL_CONTENT | StatusCode::NOT_MODIFIED | StatusCode::RANGE_NOT_SATISFIABLE => {
        }
        other => {
            state.upstream.error("status");
            return Err(Error::source(format!("the origin answered {other}")));
        }
    }
    let version = origin.etag();
    let mut response = Response::new(response::full(""));
    *response.status_mut() = origin.status;
    let h = response.headers_mut();
    for name in PASSED_RESPONSE_HEADERS {
        if let Some(v) = origin.headers.get(&name) {
            h.insert(name, v.clone());
        }
    }
    if !h.contains_key(CONTENT_TYPE) {
        h.insert(CONTENT_TYPE, HeaderValue::from_static(entry.dataset.format.media_type()));
    }
    if let Some(version) = version {
        if let Ok(v) = HeaderValue::from_str(&version) {
            h.insert("x-dataset-version", v);
        }
        response.extensions_mut().insert(DatasetVersion(version));
    }
    if req.method() != Method::HEAD && origin.status != StatusCode::NOT_MODIFIED {
        *response.body_mut() =
            response::streamed(crate::call::meter_bytes(origin.body, budget, bytes::Bytes::len, refused));
    }
    Ok(response)
}

/// The compressed copy of the file at `path` to send for a request with `headers`: of the
/// codings the request takes, the one preferred ([`Coding::accepted`]) whose copy lies beside
/// the file (`.zst`, `.br`, `.gz`, as nginx's `gzip_static` finds `.gz`) and was written no
/// earlier than the file; with the file's own `stat`.
fn precompressed(path: &Path, headers: &HeaderMap) -> Option<(PathBuf, Coding, file::FileInfo)> {
    let accepted = Coding::accepted(headers);
    if accepted.is_empty() {
        return None;
    }
    let original = file::FileInfo::of_path(path).ok()?;
    accepted.into_iter().find_map(|coding| {
        let mut name = path.as_os_str().to_owned();
        name.push(coding.file_suffix());
        let sibling = PathBuf::from(name);
        let copy = file::FileInfo::of_path(&sibling).ok()?;
        (copy.modified >= original.modified).then(|| (sibling, coding, original.clone()))
    })
}

fn http_date(t: SystemTime) -> Option<String> {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_secs();
    (secs < 253_402_300_800).then(|| httpdate::fmt_http_date(t))
}

fn value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).expect("header values built here are visible ASCII")
}

/// Whether the client's copy is current: `If-None-Match` decides when present (weak
/// comparison), otherwise `If-Modified-Since` at one-second resolution.
fn not_modified(headers: &HeaderMap, etag: &str, modified: SystemTime) -> bool {
    if headers.contains_key(IF_NONE_MATCH) {
        return not_modified_by_etag(headers, etag);
    }
    match headers.get(IF_MODIFIED_SINCE).and_then(|v| v.to_str().ok()).and_then(|v| httpdate::parse_http_date(v).ok()) {
        Some(since) => whole_seconds(modified) <= since,
        None => false,
    }
}

/// Whether `If-None-Match` names `etag` (weak comparison) or `*`.
pub fn not_modified_by_etag(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|t| t == "*" || t.trim_start_matches("W/") == etag)
}

/// `If-Range`: the range applies only if the validator still matches (strong comparison for
/// entity tags, exact second for dates).
fn if_range_holds(headers: &HeaderMap, etag: &str, modified: SystemTime) -> bool {
    match headers.get(IF_RANGE).and_then(|v| v.to_str().ok()) {
        None => true,
        Some(v) if v.starts_with('"') => v == etag,
        Some(v) => httpdate::parse_http_date(v).is_ok_and(|d| d == whole_seconds(modified)),
    }
}

fn whole_seconds(t: SystemTime) -> SystemTime {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs)
}

/// A single byte range as `start..end` (end exclusive). Several ranges, or a header that is
/// not a byte range, are ignored and the whole file is served, as RFC 9110 allows; a range
/// that lies wholly outside the file is a 416.
pub fn parse_range(header: &str, len: u64) -> Result<Option<(u64, u64)>, Error> {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Ok(None);
    };
    let unsatisfiable =
        || Error::new(Kind::RangeNotSatisfiable, "range_not_satisfiable", format!("the whole answer has {len} bytes"));
    let range = match (first.trim(), last.trim()) {
        ("", "") => return Ok(None),
        ("", suffix) => {
            let Ok(n) = suffix.parse::<u64>() else { return Ok(None) };
            if n == 0 || len == 0 {
                return Err(unsatisfiable());
            }
            (len - n.min(len), len)
        }
        (start, last) => {
            let Ok(start) = start.parse::<u64>() else {
                return Ok(None);
            };
            let end = match last {
                "" => len,
                l => match l.parse::<u64>() {
                    Ok(l) if l >= start => l.saturating_add(1).min(len),
                    _ => return Ok(None),
                },
            };
            if start >= len {
                return Err(unsatisfiable());
            }
            (start, end)
        }
    };
    Ok(Some(range))
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges_follow_rfc_9110() {
        assert_eq!(parse_range("bytes=0-9", 100).unwrap(), Some((0, 10)));
        assert_eq!(parse_range("bytes=90-", 100).unwrap(), Some((90, 100)));
        assert_eq!(parse_range("bytes=-10", 100).unwrap(), Some((90, 100)));
        assert_eq!(parse_range("bytes=-500", 100).unwrap(), Some((0, 100)));
        assert_eq!(parse_range("bytes=95-200", 100).unwrap(), Some((95, 100)));
        assert_eq!(parse_range("bytes=0-1,5-6", 100).unwrap(), None);
        assert_eq!(parse_range("items=0-1", 100).unwrap(), None);
        assert_eq!(parse_range("bytes=9-3", 100).unwrap(), None);
        assert_eq!(parse_range("bytes=0-18446744073709551615", 100).unwrap(), Some((0, 100)));
        assert_eq!(parse_range("bytes=10-18446744073709551615", 100).unwrap(), Some((10, 100)));
        assert!(parse_range("bytes=100-", 100).is_err());
        assert!(parse_range("bytes=-0", 100).is_err());
    }
}
