//! Data calls: rows, preview and download of one dataset, as HTTP's side of the one call
//! lifecycle ([`crate::call::lifecycle::serve`]).

use std::net::IpAddr;
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use futures_util::StreamExt;
use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, ACCEPT, ACCEPT_RANGES, CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_ENCODING, CONTENT_LENGTH,
    CONTENT_RANGE, CONTENT_TYPE, ETAG, IF_RANGE, LINK, RANGE, VARY,
};
use hyper::{Request, Response};
use policy::{DatasetId, Operation, UpdateFrequency};
use serde::Serialize;
use utoipa::ToSchema;

use super::compress::{self, Coding};
use super::request::{allow, Params};
use super::response::{self, Body, DatasetVersion};
use super::{download, limits, soql};
use crate::cache::{AnswerKey, KeptAnswer};
use crate::call::lifecycle::{self, FrontEnd, Reply};
use crate::call::{self, start, start_keeping, Call, Started};
use crate::config::SourceConfig;
use crate::encode::{encode_stream, OutputFormat};
use crate::error::{Error, Kind};
use crate::metrics::Timing;
use crate::pipeline::Query;
use crate::source;
use crate::source::file::FileInfo;
use crate::state::State;

#[derive(Serialize, ToSchema)]
pub struct Preview {
    pub dataset: DatasetId,
    pub columns: Vec<String>,
    /// Up to 20 rows, one object each, scoped and masked.
    #[schema(value_type = Vec<Object>)]
    pub rows: serde_json::Value,
}

/// Rows in a preview.
pub const PREVIEW_ROWS: usize = 20;

/// Answers up to this size are encoded whole and sent with `Content-Length`.
const SMALL_ANSWER_BYTES: usize = 1 << 20;

/// An encoded answer: whole, or streaming (the pieces read so far, then the rest).
enum Answer {
    Whole(Bytes),
    Streamed(source::ByteStream),
}

/// Reads `body` until it ends or passes `limit` bytes. An error before then is the call's error:
/// nothing has been sent.
async fn whole_if_small(mut body: source::ByteStream, limit: usize) -> Result<Answer, Error> {
    let mut pieces = Vec::new();
    let mut size = 0;
    while let Some(piece) = body.next().await {
        let piece = piece?;
        size += piece.len();
        pieces.push(piece);
        if size > limit {
            let read = futures_util::stream::iter(pieces.into_iter().map(Ok));
            return Ok(Answer::Streamed(Box::pin(read.chain(body))));
        }
    }
    let mut whole = bytes::BytesMut::with_capacity(size);
    for piece in pieces {
        whole.extend_from_slice(&piece);
    }
    Ok(Answer::Whole(whole.freeze()))
}

/// A data call: rows, preview or download of one dataset, through the one call lifecycle
/// ([`lifecycle::serve`]). Every refusal of a call on conditional data leaves its record, those
/// before the call proper (a wrong method, a key in the URL, no room for the answer) included.
pub async fn call(
    state: &Arc<State>,
    req: Request<Incoming>,
    client: IpAddr,
    request_id: &str,
    id: &str,
    operation: &str,
) -> Result<Response<Body>, Error> {
    let (operation, suffix) = match operation.split_once('.') {
        Some((_, suffix)) => (Operation::Rows, OutputFormat::from_name(suffix)),
        None if operation == "rows" => (Operation::Rows, None),
        None if operation == "preview" => (Operation::Preview, None),
        None => (Operation::Download, None),
    };
    let front = DataRequest { req, operation, suffix, params: Params::default() };
    match lifecycle::serve(state, id, client, request_id, front).await {
        Ok((head, body)) => Ok(Response::from_parts(head, response::streamed(body))),
        Err(refusal) => Ok(refusal),
    }
}

/// An HTTP data call's side of the lifecycle.
struct DataRequest {
    req: Request<Incoming>,
    operation: Operation,
    /// The format a `rows.{suffix}` path names.
    suffix: Option<OutputFormat>,
    /// The query parameters, once checked.
    params: Params,
}

impl FrontEnd for DataRequest {
    type Piece = Bytes;
    type Head = hyper::http::response::Parts;
    type Refusal = Response<Body>;
    const PROTOCOL: &'static str = "http";

    fn size(piece: &Bytes) -> usize {
        piece.len()
    }

    fn refuse(error: Error) -> (Response<Body>, usize) {
        let response = response::error(&error);
        let size = hyper::body::Body::size_hint(response.body()).exact().unwrap_or(0);
        (response, size as usize)
    }

    fn operation(&self) -> &'static str {
        self.operation.as_str()
    }

    /// A download streams the file; rows and previews are often small enough to send whole.
    fn streams(&self) -> bool {
        self.operation.as_str() == "download"
    }

    fn headers(&self) -> &hyper::HeaderMap {
        self.req.headers()
    }

    fn check(&mut self) -> Result<(), Error> {
        allow(self.req.method(), "GET, HEAD")?;
        self.params = Params::parse(self.req.uri().query())?;
        Ok(())
    }

    async fn answer(&mut self, call: &Call<'_>) -> Result<Reply<Self::Head, Bytes>, Error> {
        match self.operation {
            Operation::Rows => rows(call, &self.req, &self.params, self.suffix).await,
            Operation::Preview => preview(call, &self.req, &self.params).await,
            Operation::Download => download(call, &self.req, &self.params).await,
        }
    }
}

async fn download(call: &Call<'_>, req: &Request<Incoming>, params: &Params) -> Result<HttpReply, Error> {
    params.only(&[])?;
    // A range read of a file shares the admission of the caller's range reads of the same
    // version made within the window ([`Call::grant_range`]).
    let range_of = match (&call.entry.config.source, req.headers().contains_key(RANGE)) {
        // A file that cannot be read fails in the download itself, after its grant.
        (SourceConfig::File(path), true) => {
            FileInfo::of_path(&call.state.config.data_dir.join(path)).ok().map(|i| i.version)
        }
        (SourceConfig::Url(_), true) => Some(String::from("origin")),
        (_, false) => None,
    };
    let (granted, admission, budget) = match range_of {
        Some(version) => call.grant_range(Operation::Download, &version).await?,
        None => call.grant(Operation::Download).await?,
    };
    let refused = call.quota_refusals("bytes_per_day");
    let response = download::serve(call.state, call.entry, granted.grant(), req, budget, refused).await?;
    // A download's body is the source's bytes passing through: its time is the source's.
    let (mut parts, body) = response.into_parts();
    let body = http_body_util::BodyExt::into_data_stream(body);
    let body = crate::metrics::timed(body, call.timing.clone(), Timing::add_source);
    limits::rate_headers(&mut parts.headers, &admission);
    let version = parts.extensions.remove::<DatasetVersion>().map(|DatasetVersion(v)| v);
    let status = parts.status.as_u16();
    Ok(Reply { head: parts, body: lifecycle::Body::Streamed(Box::pin(body)), version, status, granted })
}

/// An HTTP data call's reply.
type HttpReply = Reply<hyper::http::response::Parts, Bytes>;

/// The dataset version and `RateLimit` fields of a started query. The audit record takes the
/// version itself from the started query: the caller of conditional data is shown only a
/// digest of it ([`Call::shown_version`]).
fn started_headers(call: &Call<'_>, started: &Started, headers: &mut hyper::HeaderMap) {
    if let Some(version) = &started.version {
        if let Ok(v) = HeaderValue::from_str(&call.shown_version(version)) {
            headers.insert("x-dataset-version", v);
        }
    }
    limits::rate_headers(headers, &started.admission);
}

/// The head of a 200 answer.
fn ok_head() -> hyper::http::response::Parts {
    Response::new(()).into_parts().0
}

/// The format of a rows answer: the path's suffix, else `format=`, else the `Accept` field
/// (JSON when it names none); 406 when `Accept` takes nothing produced here.
fn rows_format(params: &Params, suffix: Option<OutputFormat>, req: &Request<Incoming>) -> Result<OutputFormat, Error> {
    let named = params
        .get("format")
        .map(|name| {
            OutputFormat::from_name(name).ok_or_else(|| {
                Error::bad_request("bad_parameter", format!("`format` is csv, ndjson, json or arrow, not `{name}`"))
            })
        })
        .transpose()?;
    match (suffix, named) {
        (Some(suffix), Some(named)) if suffix != named => Err(Error::bad_request(
            "bad_parameter",
            format!("the path asks for {} and `format` for {}; ask for one", suffix.suffix(), named.suffix()),
        )),
        (Some(format), _) | (None, Some(format)) => Ok(format),
        (None, None) => match req.headers().get(ACCEPT).map(|a| a.to_str().unwrap_or("")).map(str::trim) {
            None | Some("") => Ok(OutputFormat::Json),
            Some(accept) => OutputFormat::from_accept(accept).ok_or_else(|| {
                Error::new(
                    Kind::NotAcceptable,
                    "not_acceptable",
                    format!(
                        "rows are answered as text/csv, application/json, application/x-ndjson or \
                         application/vnd.apache.arrow.stream, none of which `Accept: {accept}` takes \
                         (or ask with `format=` or a path ending in .csv, .json, .ndjson or .arrow)"
                    ),
                )
            }),
        },
    }
}

async fn rows(
    call: &Call<'_>,
    req: &Request<Incoming>,
    params: &Params,
    suffix: Option<OutputFormat>,
) -> Result<HttpReply, Error> {
    let params = &*soql::translate(params)?;
    params.only(&["columns", "filter", "order", "limit", "offset", "format"])?;
    let format = rows_format(params, suffix, req)?;
    let query = Query::from_params(params.iter())?;
    let coding = Coding::negotiate(req.headers());
    let key = AnswerKey(format!("{format:?} {coding:?} {query:?}").into());
    let started = start_keeping(call, Operation::Rows, &query, Some(key.clone())).await?;
    let mut head = ok_head();
    started_headers(call, &started, &mut head.headers);
    let Started { schema, first, rest, budget, in_memory, granted, version, kept, keep, .. } = started;
    head.headers.insert(CONTENT_TYPE, HeaderValue::from_static(format.content_type()));
    // The format may come from `Accept`, the coding from `Accept-Encoding`.
    head.headers.insert(VARY, HeaderValue::from_static("Accept, Accept-Encoding"));
    if format.is_file() {
        let name = format!("attachment; filename=\"{}.{}\"", call.entry.dataset.id, format.suffix());
        if let Ok(value) = HeaderValue::from_str(&name) {
            head.headers.insert(CONTENT_DISPOSITION, value);
        }
    }
    if caching_headers(call, req, version.as_deref(), &key, &mut head.headers) == Validated::NotModified {
        head.status = hyper::StatusCode::NOT_MODIFIED;
        head.headers.remove(CONTENT_DISPOSITION);
        return Ok(Reply { head, body: lifecycle::Body::Whole(Bytes::new()), version, status: 304, granted });
    }
    // An exact count, asked for as PostgREST takes it, is had before anything is read.
    let total = match prefers_exact_count(req.headers()) {
        true => Some(call::count(call, granted.grant(), &query).await?),
        false => None,
    };
    let page = Page { limit: query.limit, offset: query.offset, total };
    // A small answer from memory is encoded whole and sent with its length (some clients,
    // polars' URL readers among them, take nothing else); under a byte quota it is counted
    // whole before anything is sent, so one past the quota is refused cleanly. Answers from a
    // source stream as they are read, counted as they are sent.
    let whole = match kept {
        Some(kept) => {
            granted.answered_rows(kept.rows);
            kept
        }
        None => {
            let body = encode_stream(format.encoder(&schema)?, first, rest);
            let body = if in_memory { whole_if_small(body, SMALL_ANSWER_BYTES).await? } else { Answer::Streamed(body) };
            match body {
                Answer::Whole(body) => {
                    let coded = coding.filter(|_| body.len() >= compress::MIN_BYTES);
                    let body = match coded {
                        Some(coding) => compress::whole(coding, &body).await?,
                        None => body,
                    };
                    let answer = KeptAnswer { body, rows: granted.rows(), coded: coded.is_some() };
                    if let Some(keep) = keep {
                        keep.keep(call.state, answer.clone());
                    }
                    answer
                }
                Answer::Streamed(body) => {
                    page.headers(req, params, None, &mut head.headers);
                    let body = match coding {
                        Some(coding) => {
                            head.headers.insert(CONTENT_ENCODING, coding.header());
                            compress::streamed(coding, body)
                        }
                        None => body,
                    };
                    let body = call::meter_bytes(body, budget, Bytes::len, call.quota_refusals("bytes_per_day"));
                    return Ok(Reply { head, body: lifecycle::Body::Streamed(body), version, status: 200, granted });
                }
            }
        }
    };
    page.headers(req, params, Some(whole.rows), &mut head.headers);
    if let Some(coding) = coding.filter(|_| whole.coded) {
        head.headers.insert(CONTENT_ENCODING, coding.header());
    }
    let (body, status) = byte_range(req, &mut head, whole.body)?;
    // A withdrawal or an ended agreement seen by now refuses it before it is charged.
    call.cut_now(&granted)?;
    call.charge_whole(budget.as_ref(), body.len())?;
    head.headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    Ok(Reply { head, body: lifecycle::Body::Whole(body), version, status, granted })
}

/// Whether the client's copy of an answer is current.
#[derive(PartialEq, Eq)]
enum Validated {
    NotModified,
    Send,
}

/// `Cache-Control` and `ETag` of a rows answer. Unconditional data is the same for everyone: it
/// may be kept by any cache, for as long as its update frequency suggests, and checked again by
/// its ETag (the data's version and the normalized query, format and coding), which
/// `If-None-Match` may name. Conditional answers are the caller's alone and are never kept.
fn caching_headers(
    call: &Call<'_>,
    req: &Request<Incoming>,
    version: Option<&str>,
    key: &AnswerKey,
    headers: &mut hyper::HeaderMap,
) -> Validated {
    match (version, policy::recorded(&call.entry.dataset)) {
        (Some(data_version), false) => {
            let etag = rows_etag(call.entry, data_version, key);
            headers.insert(ETAG, HeaderValue::from_str(&etag).expect("ETags are hex"));
            headers.insert(CACHE_CONTROL, HeaderValue::from_static(public_cache(call.entry.dataset.update_frequency)));
            if download::not_modified_by_etag(req.headers(), &etag) {
                return Validated::NotModified;
            }
        }
        (None, false) => {
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("public, no-cache"));
        }
        (_, true) => {
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
        }
    }
    Validated::Send
}

/// A whole answer is a file of known length: a reader that takes files by ranges (polars' and
/// object_store's) gets the single range it asks for (206), while the answer is the same one
/// (`If-Range` naming its ETag); otherwise all of it (200).
fn byte_range(
    req: &Request<Incoming>,
    head: &mut hyper::http::response::Parts,
    body: Bytes,
) -> Result<(Bytes, u16), Error> {
    head.headers.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let len = body.len() as u64;
    let same = |etag: &str| head.headers.get(ETAG).is_some_and(|ours| ours.as_bytes() == etag.as_bytes());
    let range = match req.headers().get(RANGE).and_then(|r| r.to_str().ok()) {
        Some(range) => match req.headers().get(IF_RANGE).and_then(|v| v.to_str().ok()) {
            Some(etag) if !same(etag) => None,
            _ => download::parse_range(range, len)?,
        },
        None => None,
    };
    let Some((start, end)) = range else { return Ok((body, 200)) };
    head.status = hyper::StatusCode::PARTIAL_CONTENT;
    let value = format!("bytes {start}-{}/{len}", end - 1);
    head.headers.insert(CONTENT_RANGE, HeaderValue::from_str(&value).expect("numbers are ASCII"));
    Ok((body.slice(start as usize..end as usize), 206))
}

/// The ETag of a rows answer on unconditional data: a digest of the dataset, its catalog and data
/// versions and the normalized query with its format, the same on every instance.
fn rows_etag(entry: &crate::state::CatalogEntry, data_version: &str, key: &AnswerKey) -> String {
    use sha2::Digest;
    let mut digest = sha2::Sha256::new();
    for part in [entry.dataset.id.as_str(), &entry.version.to_string(), data_version, &key.0] {
        digest.update(part.as_bytes());
        digest.update([0]);
    }
    format!("\"{}\"", hex::encode(&digest.finalize()[..16]))
}

/// How long any cache may keep an answer on unconditional data, by how often the data changes;
/// past that it checks again with the ETag. Data updated in real time is checked every time.
fn public_cache(frequency: UpdateFrequency) -> &'static str {
    match frequency {
        UpdateFrequency::Realtime => "public, no-cache",
        UpdateFrequency::Hourly | UpdateFrequency::Irregular => "public, max-age=300",
        UpdateFrequency::Daily => "public, max-age=3600",
        UpdateFrequency::Weekly => "public, max-age=21600",
        UpdateFrequency::Monthly | UpdateFrequency::Quarterly | UpdateFrequency::Yearly => "public, max-age=86400",
    }
}

/// Whether the request asks for an exact count (`Prefer: count=exact`, as PostgREST takes it).
fn prefers_exact_count(headers: &hyper::HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("count=exact"))
}

/// Where a page of rows stands: what it asked for, and the exact count when it was asked for.
struct Page {
    limit: Option<usize>,
    offset: usize,
    total: Option<u64>,
}

impl Page {
    /// `Content-Range` (with the count) and `Link: rel="next"` of a page holding `rows` rows
    /// (`None` while a streamed answer's rows are not known yet). The next page is linked when
    /// this one is full: by the count or the rows when they are known, and otherwise whenever a
    /// `limit` was given, since the page may be full.
    fn headers(&self, req: &Request<Incoming>, params: &Params, rows: Option<u64>, headers: &mut hyper::HeaderMap) {
        let offset = self.offset as u64;
        let rows = rows.or_else(|| {
            let left = self.total?.saturating_sub(offset);
            Some(self.limit.map_or(left, |l| left.min(l as u64)))
        });
        if let Some(total) = self.total {
            let sent = rows.unwrap_or(0);
            let range = match sent {
                0 => format!("*/{total}"),
                n => format!("{offset}-{}/{total}", offset + n - 1),
            };
            headers.insert(CONTENT_RANGE, HeaderValue::from_str(&range).expect("numbers are ASCII"));
            headers.insert("preference-applied", HeaderValue::from_static("count=exact"));
        }
        let Some(limit) = self.limit.filter(|l| *l > 0) else { return };
        if rows.is_none_or(|r| r >= limit as u64) {
            let mut next = form_urlencoded::Serializer::new(String::new());
            for (name, value) in params.iter().filter(|(name, _)| *name != "offset") {
                next.append_pair(name, value);
            }
            next.append_pair("offset", &(offset + limit as u64).to_string());
            let link = format!("<{}?{}>; rel=\"next\"", req.uri().path(), next.finish());
            if let Ok(value) = HeaderValue::from_str(&link) {
                headers.insert(LINK, value);
            }
        }
    }
}

async fn preview(call: &Call<'_>, req: &Request<Incoming>, params: &Params) -> Result<HttpReply, Error> {
    let params = &*soql::translate(params)?;
    params.only(&["columns", "filter", "order"])?;
    let mut query = Query::from_params(params.iter())?;
    query.limit = Some(PREVIEW_ROWS);
    let mut started = start(call, Operation::Preview, &query).await?;
    let mut batches: Vec<RecordBatch> = started.first.take().into_iter().collect();
    while let Some(batch) = started.rest.next().await {
        batches.push(batch?);
    }
    let mut encoder = OutputFormat::Json.encoder(&started.schema)?;
    let mut rows = encoder.begin()?.to_vec();
    for b in &batches {
        rows.extend_from_slice(&encoder.batch(b)?);
    }
    rows.extend_from_slice(&encoder.finish()?);
    let rows: serde_json::Value =
        serde_json::from_slice(&rows).map_err(|e| Error::internal(format!("preview encoding: {e}")))?;
    let columns = started.schema.fields().iter().map(|f| f.name().clone()).collect();
    let body = Bytes::from(response::json_bytes(&Preview { dataset: call.entry.dataset.id.clone(), columns, rows }));
    let mut head = ok_head();
    head.headers.insert(VARY, HeaderValue::from_static("Accept-Encoding"));
    let body = match Coding::negotiate(req.headers()).filter(|_| body.len() >= compress::MIN_BYTES) {
        Some(coding) => {
            head.headers.insert(CONTENT_ENCODING, coding.header());
            compress::whole(coding, &body).await?
        }
        None => body,
    };
    // Nothing is sent yet: the preview, as sent, is charged whole (past the byte quota it is
    // refused) and answered whole.
    call.cut_now(&started.granted)?;
    call.charge_whole(started.budget.as_ref(), body.len())?;
    head.headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    head.headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    started_headers(call, &started, &mut head.headers);
    let Started { version, granted, .. } = started;
    Ok(Reply { head, body: lifecycle::Body::Whole(body), version, status: 200, granted })
}
