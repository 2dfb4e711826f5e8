//! Routing and the data API's handlers.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use chrono::Utc;
use futures_util::StreamExt;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCEPT, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use policy::{decide, Caller, OpenType, Operation};

use std::net::IpAddr;

use super::response::{self, json, Body, DatasetVersion};
use super::{api, download, limits, workflow};
use crate::call::lifecycle::{self, FrontEnd, Reply};
use crate::call::{self, start, Call, Started};
use crate::encode::{encode_stream, OutputFormat};
use crate::error::{Error, Kind};
use crate::metrics::Timing;
use crate::pipeline::Query;
use crate::source::{self, arrow_schema};
use crate::state::{CatalogEntry, Live, State};

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

/// Query parameters that carry secrets and must never be in a URL.
const KEY_PARAMETERS: [&str; 5] = ["key", "api_key", "apikey", "access_token", "token"];

/// Matches the request to its handler.
pub async fn route(
    state: &Arc<State>,
    req: Request<Incoming>,
    client: IpAddr,
    request_id: &str,
) -> Result<Response<Body>, Error> {
    if let ["", "v1", "datasets", id, operation @ ("rows" | "preview" | "download")] =
        req.uri().path().split('/').collect::<Vec<_>>().as_slice()
    {
        let (id, operation) = (id.to_string(), operation.to_string());
        return data_call(state, req, client, request_id, &id, &operation).await;
    }
    let params = params(req.uri().query())?;
    if req.uri().path() == "/v1/reports" {
        only(&params, &[])?;
        return report(state, req, client).await;
    }
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let method = req.method().clone();
    let decoded = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
    let post = || if method == Method::POST { Ok(()) } else { Err(method_not_allowed("POST")) };
    let get_or_head = || {
        if method == Method::GET || method == Method::HEAD {
            Ok(())
        } else {
            Err(method_not_allowed("GET, HEAD"))
        }
    };
    match segments.as_slice() {
        ["healthz"] => {
            get_or_head()?;
            Ok(json(StatusCode::OK, &api::Health { status: "ok".into() }))
        }
        ["readyz"] => {
            get_or_head()?;
            Ok(readyz(state).await)
        }
        ["openapi.json"] => {
            get_or_head()?;
            let mut r = Response::new(response::full(api::data_document()));
            r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            Ok(r)
        }
        ["v1", "catalog"] => {
            get_or_head()?;
            catalog(state, &params).await
        }
        ["v1", "applications"] => {
            if !matches!(method, Method::GET | Method::HEAD | Method::POST) {
                return Err(method_not_allowed("GET, HEAD, POST"));
            }
            let actor = workflow::actor(state, req.headers()).await?;
            if method == Method::POST {
                only(&params, &[])?;
                workflow::apply(state, actor, req).await
            } else {
                only(&params, &["status"])?;
                workflow::applications(state, actor, param(&params, "status")).await
            }
        }
        ["v1", "applications", id] => {
            get_or_head()?;
            only(&params, &[])?;
            workflow::application(state, workflow::actor(state, req.headers()).await?, &decoded(id)).await
        }
        ["v1", "applications", id, decision @ ("approve" | "reject")] => {
            post()?;
            only(&params, &[])?;
            let actor = workflow::actor(state, req.headers()).await?;
            if *decision == "approve" {
                workflow::approve(state, actor, &decoded(id), req).await
            } else {
                workflow::reject(state, actor, &decoded(id), req).await
            }
        }
        ["v1", "objections"] => {
            get_or_head()?;
            only(&params, &["status", "dataset"])?;
            let actor = workflow::actor(state, req.headers()).await?;
            workflow::objections(state, actor, param(&params, "status"), param(&params, "dataset")).await
        }
        ["v1", "objections", id] => {
            get_or_head()?;
            only(&params, &[])?;
            let viewer = workflow::principal(state, req.headers()).await?.map(policy::Actor::Principal);
            workflow::objection(state, viewer, &decoded(id)).await
        }
        ["v1", "objections", id, "resolve"] => {
            post()?;
            only(&params, &[])?;
            workflow::resolve(state, workflow::actor(state, req.headers()).await?, &decoded(id), req).await
        }
        ["v1", "agreements", id, action] if policy::AgreementAction::parse(action).is_some() => {
            post()?;
            only(&params, &[])?;
            let action = policy::AgreementAction::parse(action).expect("checked by the guard");
            workflow::change_agreement(state, workflow::actor(state, req.headers()).await?, &decoded(id), action).await
        }
        ["v1", "datasets", id, "draft"] => {
            if !matches!(method, Method::GET | Method::HEAD | Method::PUT) {
                return Err(method_not_allowed("GET, HEAD, PUT"));
            }
            only(&params, &[])?;
            let actor = workflow::actor(state, req.headers()).await?;
            match method {
                Method::PUT => workflow::put_draft(state, actor, &decoded(id), req).await,
                _ => workflow::get_draft(state, actor, &decoded(id)).await,
            }
        }
        ["v1", "datasets", id, "objections"] => {
            post()?;
            only(&params, &[])?;
            let filer = workflow::principal(state, req.headers()).await?;
            let limit = match &filer {
                None => policy::Limit::Anonymous,
                Some(p) => policy::Limit::Key(p.id.clone()),
            };
            call::admit_under(state, &state.live().limits, &limit, client, "http").await?;
            workflow::object(state, filer, &decoded(id), req).await
        }
        ["v1", "datasets", id, action @ ("withdraw" | "reopen")] => {
            post()?;
            only(&params, &[])?;
            let actor = workflow::actor(state, req.headers()).await?;
            if *action == "withdraw" {
                workflow::withdraw(state, actor, &decoded(id), req).await
            } else {
                workflow::reopen(state, actor, &decoded(id)).await
            }
        }
        ["v1", "agreements", id, "feedback"] => {
            post()?;
            only(&params, &[])?;
            feedback(state, req, decoded(id)).await
        }
        ["v1", "agreements", rest @ ..] => {
            get_or_head()?;
            only(&params, &[])?;
            let id = match rest {
                [] => None,
                [id] => Some(percent_encoding::percent_decode_str(id).decode_utf8_lossy().into_owned()),
                _ => return Err(no_route()),
            };
            agreements(state, req.headers(), id).await
        }
        ["v1", "datasets", id] => {
            get_or_head()?;
            only(&params, &[])?;
            let live = state.live();
            let entry = lookup(&live, id)?;
            let caller = state.keys.caller(req.headers()).await?;
            let open = workflow::open_objections(state).await?;
            Ok(json(StatusCode::OK, &describe(entry, &caller, &open)))
        }
        _ => Err(no_route()),
    }
}

/// A data call: rows, preview or download of one dataset, through the one call lifecycle
/// ([`lifecycle::serve`]). Every refusal of a call on conditional data leaves its record, those
/// before the call proper (a wrong method, a key in the URL, no room for the answer) included.
async fn data_call(
    state: &Arc<State>,
    req: Request<Incoming>,
    client: IpAddr,
    request_id: &str,
    raw_id: &str,
    operation: &str,
) -> Result<Response<Body>, Error> {
    let id = decoded_id(raw_id)?;
    let operation = match operation {
        "rows" => Operation::Rows,
        "preview" => Operation::Preview,
        _ => Operation::Download,
    };
    let front = DataRequest { req, operation, params: Vec::new() };
    match lifecycle::serve(state, &id, client, request_id, front).await {
        Ok((head, body)) => Ok(Response::from_parts(head, response::streamed(body))),
        Err(refusal) => Ok(refusal),
    }
}

/// An HTTP data call's side of the lifecycle.
struct DataRequest {
    req: Request<Incoming>,
    operation: Operation,
    /// The query parameters, once checked.
    params: Vec<(String, String)>,
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
        if self.req.method() != Method::GET && self.req.method() != Method::HEAD {
            return Err(method_not_allowed("GET, HEAD"));
        }
        self.params = params(self.req.uri().query())?;
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

fn no_route() -> Error {
    Error::new(Kind::NotFound, "not_found", "no such endpoint; see /openapi.json")
}

fn method_not_allowed(allow: &'static str) -> Error {
    let mut e = Error::new(Kind::MethodNotAllowed, "method_not_allowed", format!("this endpoint answers {allow}"));
    e.headers.push(("allow", allow.to_owned()));
    e
}

/// The dataset `raw_id` names, if it exists and is not non-open. A segment that is not a valid
/// id once percent-decoded (`..`, `a%2Fb`) is simply not found: nothing is looked up by it.
fn lookup<'a>(live: &'a Live, raw_id: &str) -> Result<&'a CatalogEntry, Error> {
    call::lookup(live, &decoded_id(raw_id)?)
}

fn decoded_id(raw_id: &str) -> Result<std::borrow::Cow<'_, str>, Error> {
    percent_encoding::percent_decode_str(raw_id).decode_utf8().map_err(|_| Error::dataset_not_found())
}

async fn download(call: &Call<'_>, req: &Request<Incoming>, params: &[(String, String)]) -> Result<HttpReply, Error> {
    only(params, &[])?;
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

/// Decoded query parameters; a key in the query string is refused, since URLs end up in logs.
fn params(query: Option<&str>) -> Result<Vec<(String, String)>, Error> {
    let params: Vec<(String, String)> =
        form_urlencoded::parse(query.unwrap_or("").as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    if let Some((k, _)) = params.iter().find(|(k, _)| KEY_PARAMETERS.contains(&k.to_ascii_lowercase().as_str())) {
        return Err(Error::bad_request(
            "key_in_query",
            format!("`{k}` must not be sent in the URL; send the key in the Authorization or X-API-Key header"),
        ));
    }
    Ok(params)
}

/// Refuses parameters the endpoint does not take, so a typo is not silently ignored.
fn only(params: &[(String, String)], allowed: &[&str]) -> Result<(), Error> {
    match params.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
        None => Ok(()),
        Some((k, _)) if allowed.is_empty() => {
            Err(Error::bad_request("unknown_parameter", format!("this endpoint takes no parameters, not `{k}`")))
        }
        Some((k, _)) => Err(Error::bad_request(
            "unknown_parameter",
            format!("unknown parameter `{k}`; this endpoint takes {}", allowed.join(", ")),
        )),
    }
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn positive(params: &[(String, String)], name: &str, default: usize) -> Result<usize, Error> {
    match param(params, name) {
        None => Ok(default),
        Some(v) => v.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
            Error::bad_request("bad_parameter", format!("`{name}` takes a positive integer, not `{v}`"))
        }),
    }
}

async fn catalog(state: &Arc<State>, params: &[(String, String)]) -> Result<Response<Body>, Error> {
    only(params, &["owner", "open_type", "q", "page", "per_page"])?;
    let open_type = match param(params, "open_type") {
        None | Some("") => None,
        Some(t) => Some(t.parse::<OpenType>().map_err(|()| {
            Error::bad_request("bad_parameter", format!("`open_type` is unconditional or conditional, not `{t}`"))
        })?),
    };
    let owner = param(params, "owner").filter(|o| !o.is_empty());
    let text = param(params, "q").filter(|q| !q.trim().is_empty());
    let page = positive(params, "page", 1)?;
    let per_page = positive(params, "per_page", 20)?;
    let live = state.live();
    if per_page > live.limits.max_per_page {
        return Err(Error::bad_request("bad_parameter", format!("`per_page` is at most {}", live.limits.max_per_page)));
    }
    let matching: Vec<&CatalogEntry> = live
        .catalog
        .listed()
        .filter(|e| open_type.is_none_or(|t| e.dataset.open_type == t))
        .filter(|e| owner.is_none_or(|o| e.dataset.owner.eq_ignore_ascii_case(o)))
        .filter(|e| text.is_none_or(|q| e.dataset.matches_text(q.trim())))
        .collect();
    let open = workflow::open_objections(state).await?;
    let datasets =
        matching.iter().skip((page - 1).saturating_mul(per_page)).take(per_page).map(|e| summary(e, &open)).collect();
    Ok(json(StatusCode::OK, &api::CatalogPage { total: matching.len(), page, per_page, datasets }))
}

/// A catalog entry's metadata as the API shows it; the names follow DCAT where it has one
/// (title, description, publisher, keyword, modified, accrualPeriodicity, license).
fn summary(entry: &CatalogEntry, open_objections: &HashMap<String, u64>) -> api::DatasetSummary {
    let d = &entry.dataset;
    let base = format!("/v1/datasets/{}", d.id);
    api::DatasetSummary {
        id: d.id.clone(),
        title: d.title.clone(),
        description: d.description.clone(),
        owner: d.owner.clone(),
        open_type: d.open_type,
        format: d.format,
        update_frequency: d.update_frequency,
        last_updated: d.last_updated,
        version: entry.version,
        open_objections: open_objections.get(d.id.as_str()).copied().unwrap_or(0),
        license: d.license.clone(),
        keywords: d.keywords.clone(),
        links: api::DatasetLinks {
            rows: format!("{base}/rows"),
            preview: format!("{base}/preview"),
            download: format!("{base}/download"),
            this: base,
        },
    }
}

/// A dataset's metadata. Fields and schema are those the caller would receive: under an
/// agreement, its columns with masked types; otherwise every field, so that users can see what
/// to apply for.
fn describe(entry: &CatalogEntry, caller: &Caller, open_objections: &HashMap<String, u64>) -> api::DatasetDescription {
    let fields = match decide(caller, &entry.dataset, Operation::Rows, Utc::now()) {
        Ok(grant) => grant.scope.visible_fields(&entry.dataset),
        Err(_) => entry.dataset.fields.clone(),
    };
    let schema = arrow_schema(&fields)
        .fields()
        .iter()
        .map(|f| api::SchemaField {
            name: f.name().clone(),
            arrow_type: f.data_type().to_string(),
            nullable: f.is_nullable(),
        })
        .collect();
    api::DatasetDescription {
        summary: summary(entry, open_objections),
        fields,
        schema,
        media_type: entry.dataset.format.media_type().to_owned(),
    }
}

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

async fn rows(call: &Call<'_>, req: &Request<Incoming>, params: &[(String, String)]) -> Result<HttpReply, Error> {
    only(params, &["columns", "filter", "order", "limit", "offset", "format"])?;
    let format = match param(params, "format") {
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
    let query = Query::from_params(params.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
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

async fn preview(call: &Call<'_>, params: &[(String, String)]) -> Result<HttpReply, Error> {
    only(params, &["columns", "filter", "order"])?;
    let mut query = Query::from_params(params.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
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
    let body = response::json_bytes(&api::Preview { dataset: call.entry.dataset.id.clone(), columns, rows });
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

/// Readiness: the data directory and the store take writes, and every file source is there.
async fn readyz(state: &State) -> Response<Body> {
    let data_dir = state.config.data_dir.clone();
    let store = state.store.clone();
    let (writable, store_writable) = tokio::task::spawn_blocking(move || {
        let probe = data_dir.join(".readyz");
        let dir = std::fs::write(&probe, b"ok").and_then(|()| std::fs::remove_file(&probe));
        (dir.map_err(|e| e.to_string()), store.writable().map_err(|e| e.to_string()))
    })
    .await
    .unwrap_or_else(|e| (Err(e.to_string()), Err(e.to_string())));
    let missing: Vec<String> = state
        .live()
        .catalog
        .listed()
        .filter_map(|e| match &e.config.source {
            crate::config::SourceConfig::File(p) if !state.config.data_dir.join(p).is_file() => {
                Some(e.dataset.id.to_string())
            }
            _ => None,
        })
        .collect();
    let audit = state.audit.health();
    let limiter = match &state.shared {
        Some(shared) => shared.ping().await.map(|()| "reachable".to_owned()).map_err(|e| format!("unreachable: {e}")),
        None => Ok("local".to_owned()),
    };
    for (backend, up) in [("store", store_writable.is_ok()), ("audit", audit.is_ok()), ("limiter", limiter.is_ok())] {
        state.metrics.backend_up.with_label_values(&[backend]).set(i64::from(up));
    }
    // Without the shared limiter conditional data may still flow (the local share), so it
    // makes the instance unready only where conditional calls fail closed.
    let limiter_blocks = limiter.is_err()
        && state
            .config
            .cluster
            .as_ref()
            .is_some_and(|c| c.on_limiter_failure == crate::shared_limits::OnFailure::FailClosed);
    let ready = writable.is_ok() && store_writable.is_ok() && audit.is_ok() && missing.is_empty() && !limiter_blocks;
    let check = |r: &Result<(), String>| match r {
        Ok(()) => "writable".to_owned(),
        Err(e) => format!("not writable: {e}"),
    };
    let body = api::Readiness {
        status: if ready { "ready" } else { "not_ready" }.to_owned(),
        checks: api::ReadinessChecks {
            data_dir: check(&writable),
            store: check(&store_writable),
            audit: check(&audit),
            limiter: limiter.unwrap_or_else(|e| e),
            missing_sources: missing,
        },
    };
    json(if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, &body)
}

/// Longest misuse report taken, in characters.
const MAX_REPORT_CHARS: usize = 10_000;

/// A misuse report as filed.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ReportRequest {
    /// The dataset concerned, if one.
    dataset: Option<String>,
    /// What was misused and how.
    #[schema(min_length = 1, max_length = 10000)]
    description: String,
    /// How to reach the reporter; required without a key.
    #[schema(max_length = 200)]
    contact: Option<String>,
}

/// `POST /v1/reports`: anyone reports misuse of public data; the operators read the reports
/// on the admin API. Anonymous reporters must say how to reach them. Rate limited like data
/// calls, by address or key.
async fn report(state: &Arc<State>, req: Request<Incoming>, client: IpAddr) -> Result<Response<Body>, Error> {
    if req.method() != Method::POST {
        return Err(method_not_allowed("POST"));
    }
    let caller = state.keys.caller(req.headers()).await?;
    let (limit, principal) = match &caller {
        Caller::Anonymous => (policy::Limit::Anonymous, None),
        Caller::Key { key_id, principal, .. } => (policy::Limit::Key(key_id.clone()), Some(principal.clone())),
    };
    call::admit_under(state, &state.live().limits, &limit, client, "http").await?;
    let body: ReportRequest = read_object(req).await?;
    let description = body.description.trim().to_owned();
    if description.is_empty() || description.chars().count() > MAX_REPORT_CHARS {
        return Err(Error::bad_request(
            "bad_body",
            format!("description: say what was misused and how, in 1 to {MAX_REPORT_CHARS} characters"),
        ));
    }
    let contact = workflow::contact(body.contact.as_deref(), principal.is_none())?;
    let dataset = match body.dataset {
        Some(id) => Some(call::lookup(&state.live(), &id)?.dataset.id.to_string()),
        None => None,
    };
    let report = crate::store::Report {
        id: uuid::Uuid::new_v4().to_string(),
        received_at: Utc::now(),
        dataset,
        description,
        contact,
        principal,
    };
    let store = state.store.clone();
    let stored = report.clone();
    tokio::task::spawn_blocking(move || store.insert_report(&stored))
        .await
        .map_err(|e| Error::internal(format!("report task failed: {e}")))?
        .map_err(|e| Error::new(Kind::Unavailable, "store_unavailable", e.to_string()))?;
    Ok(json(StatusCode::CREATED, &api::Receipt { id: report.id, received_at: report.received_at }))
}

/// `GET /v1/agreements` and `GET /v1/agreements/{id}`: a user's own agreements, with their terms
/// and their status now (an active agreement past its end reads `expired`). Another principal's
/// agreement is not found, exactly like one that does not exist.
async fn agreements(
    state: &Arc<State>,
    headers: &hyper::HeaderMap,
    id: Option<String>,
) -> Result<Response<Body>, Error> {
    let (principal, _) = holder(state, headers).await?;
    let principal = blocking_principal(state, principal)
        .await?
        .ok_or_else(|| Error::new(Kind::Unauthenticated, "unknown_key", "the key's principal is gone"))?;
    // Users read their own; owners those on their datasets (policy::authorize).
    let held = workflow::readable_agreements(state, &policy::Actor::Principal(principal)).await?;
    let now = Utc::now();
    let shown = |a: &policy::Agreement| {
        let mut a = a.clone();
        a.status = a.status_at(now);
        a
    };
    match id {
        None => Ok(json(StatusCode::OK, &api::AgreementList { agreements: held.iter().map(shown).collect() })),
        Some(id) => held.iter().find(|a| a.id == id).map(|a| json(StatusCode::OK, &shown(a))).ok_or_else(no_agreement),
    }
}

/// The principal a key names and its agreements, as the key check loaded them (the cache is
/// dropped on every change to keys or agreements); 401 without a key.
async fn holder(state: &Arc<State>, headers: &hyper::HeaderMap) -> Result<(String, Arc<[policy::Agreement]>), Error> {
    match state.keys.caller(headers).await? {
        Caller::Key { principal, agreements, .. } => Ok((principal, agreements)),
        Caller::Anonymous => {
            Err(Error::new(Kind::Unauthenticated, "key_required", "agreements are their holder's: send your API key"))
        }
    }
}

async fn blocking_principal(state: &Arc<State>, id: String) -> Result<Option<policy::Principal>, Error> {
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || store.principal(&id))
        .await
        .map_err(|e| Error::internal(format!("store task failed: {e}")))?
        .map_err(|e| Error::new(Kind::Unavailable, "store_unavailable", e.to_string()))
}

/// Another principal's agreement reads exactly like one that does not exist.
fn no_agreement() -> Error {
    Error::new(Kind::NotFound, "not_found", "no agreement with this id")
}

/// `POST /v1/agreements/{id}/feedback`: the holder's account of how it used the data
/// (`{"usage": "..."}`), kept with the agreement for its owner and the operators.
async fn feedback(state: &Arc<State>, req: Request<Incoming>, id: String) -> Result<Response<Body>, Error> {
    let (principal, held) = holder(state, req.headers()).await?;
    if !held.iter().any(|a| a.id == id) {
        return Err(no_agreement());
    }
    let body: FeedbackRequest = read_object(req).await?;
    let usage = body.usage.trim().to_owned();
    if usage.is_empty() || usage.chars().count() > MAX_REPORT_CHARS {
        return Err(Error::bad_request(
            "bad_body",
            format!("usage: say how the data was used, in 1 to {MAX_REPORT_CHARS} characters"),
        ));
    }
    let feedback = crate::store::Feedback {
        id: uuid::Uuid::new_v4().to_string(),
        agreement: id,
        principal,
        received_at: Utc::now(),
        usage,
    };
    let (store, stored) = (state.store.clone(), feedback.clone());
    tokio::task::spawn_blocking(move || store.insert_feedback(&stored))
        .await
        .map_err(|e| Error::internal(format!("feedback task failed: {e}")))?
        .map_err(|e| Error::new(Kind::Unavailable, "store_unavailable", e.to_string()))?;
    Ok(json(StatusCode::CREATED, &api::Receipt { id: feedback.id, received_at: feedback.received_at }))
}

/// A holder's account of its use of the data.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct FeedbackRequest {
    /// How the data was used.
    #[schema(min_length = 1, max_length = 10000)]
    usage: String,
}

/// A JSON object body as `T`: serde alone would also take a JSON array as the fields in order.
async fn read_object<T: serde::de::DeserializeOwned>(req: Request<Incoming>) -> Result<T, Error> {
    let body: serde_json::Map<String, serde_json::Value> = super::admin::read_json(req).await?;
    serde_json::from_value(serde_json::Value::Object(body)).map_err(|e| Error::bad_request("bad_body", e.to_string()))
}
