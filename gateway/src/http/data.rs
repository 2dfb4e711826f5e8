//! Data calls: rows, preview and download of one dataset, as HTTP's side of the one call
//! lifecycle ([`crate::call::lifecycle::serve`]).

use std::net::IpAddr;
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use futures_util::StreamExt;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCEPT, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Request, Response};
use policy::{DatasetId, Operation};
use serde::Serialize;
use utoipa::ToSchema;

use super::request::{allow, Params};
use super::response::{self, Body, DatasetVersion};
use super::{download, limits};
use crate::call::lifecycle::{self, FrontEnd, Reply};
use crate::call::{self, start, Call, Started};
use crate::encode::{encode_stream, OutputFormat};
use crate::error::Error;
use crate::metrics::Timing;
use crate::pipeline::Query;
use crate::source;
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
    let operation = match operation {
        "rows" => Operation::Rows,
        "preview" => Operation::Preview,
        _ => Operation::Download,
    };
    let front = DataRequest { req, operation, params: Params::default() };
    match lifecycle::serve(state, id, client, request_id, front).await {
        Ok((head, body)) => Ok(Response::from_parts(head, response::streamed(body))),
        Err(refusal) => Ok(refusal),
    }
}

/// An HTTP data call's side of the lifecycle.
struct DataRequest {
    req: Request<Incoming>,
    operation: Operation,
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
            Operation::Rows => rows(call, &self.req, &self.params).await,
            Operation::Preview => preview(call, &self.params).await,
            Operation::Download => download(call, &self.req, &self.params).await,
        }
    }
}

async fn download(call: &Call<'_>, req: &Request<Incoming>, params: &Params) -> Result<HttpReply, Error> {
    params.only(&[])?;
    let (granted, admission, budget) = call.grant(Operation::Download).await?;
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

async fn rows(call: &Call<'_>, req: &Request<Incoming>, params: &Params) -> Result<HttpReply, Error> {
    params.only(&["columns", "filter", "order", "limit", "offset", "format"])?;
    let format = match params.get("format") {
        Some(name) => OutputFormat::from_name(name).ok_or_else(|| {
            Error::bad_request("bad_parameter", format!("`format` is csv, ndjson, json or arrow, not `{name}`"))
        })?,
        None => req
            .headers()
            .get(ACCEPT)
            .and_then(|a| a.to_str().ok())
            .and_then(OutputFormat::from_accept)
            .unwrap_or(OutputFormat::Json),
    };
    let query = Query::from_params(params.iter())?;
    let started = start(call, Operation::Rows, &query).await?;
    let mut head = ok_head();
    started_headers(call, &started, &mut head.headers);
    let Started { schema, first, rest, budget, in_memory, granted, version, .. } = started;
    // A small answer from memory is encoded whole and sent with its length (some clients,
    // polars' URL readers among them, take nothing else); under a byte quota it is counted
    // whole before anything is sent, so one past the quota is refused cleanly. Answers from a
    // source stream as they are read, counted as they are sent.
    let body = encode_stream(format.encoder(&schema)?, first, rest);
    let refused = call.quota_refusals("bytes_per_day");
    let body = if in_memory {
        match whole_if_small(body, SMALL_ANSWER_BYTES).await? {
            Answer::Whole(bytes) => {
                // A withdrawal or an ended agreement seen by now refuses it before it is charged.
                call.cut_now(&granted)?;
                call.charge_whole(budget.as_ref(), bytes.len())?;
                head.headers.insert(CONTENT_LENGTH, HeaderValue::from(bytes.len()));
                lifecycle::Body::Whole(bytes)
            }
            Answer::Streamed(body) => lifecycle::Body::Streamed(call::meter_bytes(body, budget, Bytes::len, refused)),
        }
    } else {
        lifecycle::Body::Streamed(call::meter_bytes(body, budget, Bytes::len, refused))
    };
    head.headers.insert(CONTENT_TYPE, HeaderValue::from_static(format.content_type()));
    head.headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(Reply { head, body, version, status: 200, granted })
}

async fn preview(call: &Call<'_>, params: &Params) -> Result<HttpReply, Error> {
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
    let body = response::json_bytes(&Preview { dataset: call.entry.dataset.id.clone(), columns, rows });
    // Nothing is sent yet: the preview, as sent, is charged whole (past the byte quota it is
    // refused) and answered whole.
    call.cut_now(&started.granted)?;
    call.charge_whole(started.budget.as_ref(), body.len())?;
    let mut head = ok_head();
    head.headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    head.headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    started_headers(call, &started, &mut head.headers);
    let Started { version, granted, .. } = started;
    Ok(Reply { head, body: lifecycle::Body::Whole(Bytes::from(body)), version, status: 200, granted })
}
