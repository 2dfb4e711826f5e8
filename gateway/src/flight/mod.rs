//! The Arrow Flight service: datasets as Arrow record batches over gRPC, for analytics platforms
//! (pyarrow.flight, ADBC, arrow-rs).
//!
//! Every RPC runs on the same rules as the HTTP data API, through [`crate::call`]: the caller
//! comes from `authorization: Bearer <key>` metadata (or is anonymous), [`policy::decide`] grants,
//! the limiter admits, the pipeline plans the query within the grant, and a `DoGet` on
//! conditional data is audited (operation `flight`) with its intent durable before the first
//! message. What is particular to Flight is only the wire: descriptors and tickets in
//! ([`Command`]), `FlightData` messages and gRPC statuses out.
//!
//! - `Handshake` checks a key (Basic authentication with the key as password, or the key as
//!   payload) and hands it back as the bearer token.
//! - `ListFlights`: the datasets the caller may read, each with the schema it would receive.
//! - `GetFlightInfo`, `PollFlightInfo`, `GetSchema`: for a path `[dataset_id]` or a JSON command;
//!   the schema is the caller's (columns outside its scope absent, masked columns typed as sent).
//! - `DoGet`: streams batch by batch from the source, in messages of at most
//!   [`MAX_MESSAGE_BYTES`] (common clients take 4 MiB); a slow client holds the source back
//!   through HTTP/2 flow control instead of growing a buffer.

mod command;
pub(crate) mod sql;
mod wire;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use arrow::ipc::writer::IpcWriteOptions;
use arrow::record_batch::RecordBatch;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest,
    HandshakeResponse, PollInfo, PutResult, SchemaAsIpc, SchemaResult, Ticket,
};
use base64::Engine;
use bytes::Bytes;
use chrono::Utc;
use futures_util::stream::{self, BoxStream};
use futures_util::{StreamExt, TryStreamExt};
use policy::{decide, Caller, Grant, Operation};
use prost::Message as _;
use serde_json::json;
use tokio::net::TcpListener;
use tonic::metadata::MetadataValue;
use tonic::{Code, Request, Response, Status, Streaming};
use tracing::Instrument;

pub use command::Command;

use crate::call::lifecycle::{self, Body, FrontEnd, Reply};
use crate::call::{self, start, Call};
use crate::config::SourceConfig;
use crate::error::{Error, Kind};
use crate::pipeline::Plan;
use crate::source::file;
use crate::state::{CatalogEntry, Live, State};

/// Largest `FlightData` message the encoder aims for: half the 4 MiB gRPC default of common
/// clients, so that encoding overhead never pushes a message past it.
pub const MAX_MESSAGE_BYTES: usize = 2 << 20;
/// The audit log's name for a Flight `DoGet`.
const AUDIT_OPERATION: &str = "flight";

/// Serves the Flight service on `listener` until `shutdown` completes, then lets streams in
/// flight finish (up to a deadline).
pub async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let limits = state.config.server.clone();
    // At the connection limit, the next connection is accepted once one closes; clients wait in
    // the listen backlog meanwhile.
    let connections = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let accepted = stream::unfold((listener, connections), |(listener, connections)| async move {
        let permit = connections.clone().acquire_owned().await.ok()?;
        let accepted = match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                Ok((stream, permit))
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "flight accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                Err(e)
            }
        };
        Some((accepted, (listener, connections)))
    });
    // TLS handshakes run side by side, so a slow one holds up no other client.
    let (per_connection, metrics) = (limits.clone(), state.metrics.listener("flight"));
    let incoming = accepted
        .map(move |accepted| {
            let (tls, limits, metrics) = (tls.clone(), per_connection.clone(), metrics.clone());
            async move {
                let (stream, permit) = accepted?;
                crate::connection::accept(stream, permit, tls.as_ref(), &limits, metrics).await
            }
        })
        .buffer_unordered(64);
    let service = wire::Routes::new(Service { state });
    let (draining, drain) = tokio::sync::oneshot::channel::<()>();
    let server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(limits.http2_keep_alive_seconds)))
        .http2_keepalive_timeout(Some(crate::connection::HTTP2_PING_TIMEOUT))
        .max_concurrent_streams(Some(limits.http2_max_concurrent_streams))
        .http2_max_header_list_size(Some(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX)))
        .layer(crate::connection::TrackLayer)
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, async move {
            shutdown.await;
            let _ = draining.send(());
        });
    let deadline = async move {
        match drain.await {
            Ok(()) => tokio::time::sleep(Duration::from_secs(limits.drain_seconds)).await,
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        served = server => match served {
            Ok(()) => tracing::info!("flight streams drained"),
            Err(e) => tracing::error!(error = %e, "the flight server failed"),
        },
        () = deadline => tracing::warn!("flight drain deadline passed; closing remaining streams"),
    }
}

/// The gRPC status of each kind of error; the message starts with the error's stable code.
pub fn status(e: &Error) -> Status {
    let code = match e.kind {
        Kind::BadRequest | Kind::NotAcceptable => Code::InvalidArgument,
        Kind::Unauthenticated => Code::Unauthenticated,
        Kind::Forbidden => Code::PermissionDenied,
        Kind::NotFound => Code::NotFound,
        Kind::Gone => Code::FailedPrecondition,
        Kind::MethodNotAllowed => Code::Unimplemented,
        Kind::RangeNotSatisfiable => Code::OutOfRange,
        Kind::Conflict => Code::AlreadyExists,
        Kind::TooManyRequests => Code::ResourceExhausted,
        Kind::Unavailable | Kind::SourceFailed => Code::Unavailable,
        Kind::SourceTimeout => Code::DeadlineExceeded,
        Kind::Internal => Code::Internal,
    };
    let mut message = format!("{}: {}", e.code, e.message);
    if let Some(position) = e.position.filter(|_| !e.message.contains("position")) {
        message.push_str(&format!(" (at position {position})"));
    }
    let mut status = Status::new(code, message);
    for (name, value) in &e.headers {
        if let Ok(value) = value.parse() {
            status.metadata_mut().insert(*name, value);
        }
    }
    status
}

/// Cuts a batch into slices of at most about `max` bytes of data each.
///
/// arrow-flight's encoder sizes a batch by `get_buffer_memory_size`, which counts the whole
/// allocation a sliced array points into, so it would cut a slice of an Arrow IPC file's batch
/// into ten times too many messages. This counts the bytes of the slice itself
/// ([`crate::source::slice_bytes`]); the encoder, given slices that fit, sends each as one
/// message.
pub fn message_slices(batch: &RecordBatch, max: usize) -> Vec<RecordBatch> {
    let bytes = crate::source::slice_bytes(batch);
    let rows = batch.num_rows();
    let pieces = bytes.div_ceil(max.max(1)).clamp(1, rows.max(1));
    let per_piece = rows.div_ceil(pieces).max(1);
    (0..rows).step_by(per_piece).map(|start| batch.slice(start, per_piece.min(rows - start))).collect()
}

/// The encoder of a `DoGet` stream: the schema first (even for no rows), then one message per
/// slice from [`message_slices`].
pub fn encoder(schema: SchemaRef) -> FlightDataEncoderBuilder {
    FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .with_options(IpcWriteOptions::default())
        // The slices are cut to size already; the encoder's own estimate would cut them again.
        .with_max_flight_data_size(usize::MAX)
}

/// Bytes a message puts on the wire (its IPC header and body).
fn wire_size(message: &wire::Message) -> usize {
    message.wire_size()
}

/// Who is calling, from where, under which request id.
struct Context {
    rpc: &'static str,
    request_id: String,
    client: IpAddr,
    headers: http::HeaderMap,
    started: Instant,
    /// Every line logged for this call, its stream's included, carries its id.
    span: tracing::Span,
}

impl Context {
    fn of<T>(rpc: &'static str, request: &Request<T>) -> Context {
        let headers = request.metadata().clone().into_headers();
        let request_id = crate::call::request_id(&headers);
        Context {
            rpc,
            span: tracing::info_span!("request", request_id = %request_id),
            request_id,
            // Only a listener that is not TCP has no peer address; such a caller counts as one.
            client: request.remote_addr().map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip()),
            headers,
            started: Instant::now(),
        }
    }

    async fn caller(&self, state: &Arc<State>) -> Result<Caller, Error> {
        state.keys.caller(&self.headers).await
    }

    /// Turns the outcome of an RPC into its gRPC answer, with the request id in its metadata,
    /// and logs it once.
    fn answer<T>(&self, outcome: Result<T, Error>, dataset: Option<&str>) -> Result<Response<T>, Status> {
        let request_id: MetadataValue<_> = self.request_id.parse().expect("request ids are visible ASCII");
        let (code, answer) = match outcome {
            Ok(value) => {
                let mut response = Response::new(value);
                response.metadata_mut().insert("x-request-id", request_id);
                (Code::Ok, Ok(response))
            }
            Err(e) => {
                e.log();
                let mut status = status(&e);
                status.metadata_mut().insert("x-request-id", request_id);
                (status.code(), Err(status))
            }
        };
        let _in_request = self.span.enter();
        tracing::info!(
            peer = %self.client,
            api = "Flight",
            rpc = self.rpc,
            dataset = dataset.unwrap_or(""),
            status = ?code,
            head_ms = self.started.elapsed().as_millis() as u64,
            "request"
        );
        answer
    }
}

struct Service {
    state: Arc<State>,
}

impl Service {
    /// The schema and size of what `command` would return to `caller`, without reading data.
    async fn info(&self, caller: &Caller, command: &Command) -> Result<(FlightInfo, SchemaRef), Error> {
        let live = self.state.live();
        let entry = call::lookup(&live, &command.dataset)?;
        let grant = decide(caller, &entry.dataset, Operation::Rows, Utc::now())?;
        self.info_under(&live, entry, &grant, command).await
    }

    /// The info of `command` on `entry` for a caller granted `grant`.
    async fn info_under(
        &self,
        live: &Live,
        entry: &CatalogEntry,
        grant: &Grant,
        command: &Command,
    ) -> Result<(FlightInfo, SchemaRef), Error> {
        let state = &self.state;
        let query = command.query()?;
        let plan = Plan::new(&entry.config, grant, &query, live.limits.max_sort_rows, live.hash_key.clone())?;
        let schema = plan.output_schema.clone();
        let mut info = FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(|e| Error::internal(format!("schema encoding: {e}")))?
            .with_descriptor(FlightDescriptor::new_cmd(serde_json::to_vec(command).expect("commands serialize")))
            .with_endpoint(FlightEndpoint::new().with_ticket(command.ticket()))
            .with_ordered(!command.order.is_empty())
            .with_app_metadata(metadata(entry));
        if grant.scope.row_filter.is_none() && command.filter.is_none() {
            if let Some(rows) = recorded_rows(state, entry).await {
                let rows = rows.saturating_sub(command.offset as u64);
                let rows = command.limit.map_or(rows, |l| rows.min(l as u64));
                info = info.with_total_records(i64::try_from(rows).unwrap_or(i64::MAX));
            }
        }
        Ok((info, schema))
    }

    /// The RPCs that describe a descriptor's data without reading it: `answer` makes the reply
    /// from the info and the caller's schema.
    async fn described<T>(
        &self,
        rpc: &'static str,
        request: Request<FlightDescriptor>,
        answer: impl FnOnce(FlightInfo, SchemaRef) -> Result<T, Error>,
    ) -> Result<Response<T>, Status> {
        let context = Context::of(rpc, &request);
        if let Some(command) = sql::SqlCommand::parse(&request.get_ref().cmd) {
            let outcome = async {
                let command = command?;
                // The caller's key is checked as for every other command.
                let caller = context.caller(&self.state).await?;
                let schema = match &command {
                    sql::SqlCommand::Statement(statement) => {
                        let key = match &caller {
                            Caller::Key { key_id, .. } => key_id.clone(),
                            Caller::Anonymous => String::new(),
                        };
                        let key = (key, statement.sql.clone(), statement.bound_parameters().map(str::to_owned));
                        self.state.sql.schema(key, self.planned(&context, caller, statement)).await?
                    }
                    _ => command.schema(),
                };
                let info = FlightInfo::new()
                    .try_with_schema(&schema)
                    .map_err(|e| Error::internal(format!("schema encoding: {e}")))?
                    .with_descriptor(request.get_ref().clone())
                    .with_endpoint(FlightEndpoint::new().with_ticket(command.ticket()));
                answer(info, schema)
            }
            .instrument(context.span.clone())
            .await;
            return context.answer(outcome, None);
        }
        let command = Command::from_descriptor(request.get_ref());
        let dataset = command.as_ref().ok().map(|c| c.dataset.clone());
        let outcome = async {
            let caller = context.caller(&self.state).await?;
            let (info, schema) = self.info(&caller, &command?).await?;
            answer(info, schema)
        }
        .await;
        context.answer(outcome, dataset.as_deref())
    }
}

impl Service {
    /// `statement` planned for `caller`: each table it reads is scanned as a data call of this
    /// request ([`crate::sql`]).
    async fn planned(
        &self,
        context: &Context,
        caller: Caller,
        statement: &sql::Statement,
    ) -> Result<crate::sql::Planned, Error> {
        let scans = crate::sql::Scans::new(
            self.state.clone(),
            context.headers.clone(),
            context.client,
            context.request_id.clone(),
            &statement.sql,
        );
        crate::sql::plan(&self.state.sql, caller, scans, &statement.sql, statement.params()?).await
    }
}

/// A `DoGet`'s side of the call lifecycle: its ticket in, Flight messages out.
struct Get<'a> {
    context: &'a Context,
    command: Result<Command, Error>,
}

impl FrontEnd for Get<'_> {
    type Piece = wire::Message;
    type Head = ();
    /// Rendered as a status by [`Context::answer`].
    type Refusal = Error;
    const PROTOCOL: &'static str = "flight";

    fn size(message: &wire::Message) -> usize {
        wire_size(message)
    }

    /// A status has no body.
    fn refuse(error: Error) -> (Error, usize) {
        (error, 0)
    }

    fn operation(&self) -> &'static str {
        AUDIT_OPERATION
    }

    /// Flight answers are streams of messages, however small.
    fn streams(&self) -> bool {
        true
    }

    fn headers(&self) -> &http::HeaderMap {
        &self.context.headers
    }

    fn check(&mut self) -> Result<(), Error> {
        self.command.as_ref().map(|_| ()).map_err(Clone::clone)
    }

    async fn answer(&mut self, call: &Call<'_>) -> Result<Reply<(), wire::Message>, Error> {
        let command = self.command.as_ref().map_err(Clone::clone)?;
        let started = start(call, Operation::Rows, &command.query()?).await?;
        let call::Started { schema, version, first, rest, budget, granted, .. } = started;
        let messages = wire::messages(&schema, Box::pin(stream::iter(first.map(Ok)).chain(rest)))?;
        let messages = call::meter_bytes(messages, budget, wire_size, call.quota_refusals("bytes_per_day"));
        Ok(Reply { head: (), body: Body::Streamed(messages), version, status: 200, granted })
    }
}

impl Service {
    /// `DoGet`, through the call lifecycle: the answer's messages, counted, observed, audited and
    /// held to the answer memory budget. A ticket that is not a valid command is refused through
    /// it too when it still names a dataset (recorded where the dataset's calls are); one that
    /// names none cannot be told apart from noise, and concerns no dataset.
    async fn get_messages(&self, request: Request<Ticket>) -> Result<Response<Messages<wire::Message>>, Status> {
        let context = Context::of("DoGet", &request);
        if let Some(command) = sql::SqlCommand::parse(&request.get_ref().ticket) {
            let outcome = async {
                let command = command?;
                let caller = context.caller(&self.state).await?;
                if let sql::SqlCommand::Statement(statement) = &command {
                    // Each table the statement reads is a data call of its own, limited as
                    // such; on conditional data the statement is recorded as one call, its
                    // completion durable before the last message.
                    let (schema, batches, guard) = self.planned(&context, caller, statement).await?.run().await?;
                    let messages = wire::messages(&schema, batches)?;
                    return Ok(match guard {
                        Some(guard) => crate::audit::audited(messages, guard, 200, wire_size),
                        None => messages,
                    });
                }
                // A catalog command's answer: small, and no dataset's data.
                let batch = command.answer(&self.state.live(), &caller)?;
                wire::messages(&batch.schema(), Box::pin(stream::once(async { Ok(batch) })))
            }
            .instrument(context.span.clone())
            .await;
            let span = context.span.clone();
            let outcome = outcome.map(|mut messages| {
                stream::poll_fn(move |cx| {
                    let _in_request = span.enter();
                    messages.poll_next_unpin(cx)
                })
                .map(|message| {
                    message.map_err(|e| {
                        e.log();
                        status(&e)
                    })
                })
                .boxed()
            });
            return context.answer(outcome, None);
        }
        let command = Command::from_ticket(request.get_ref());
        let dataset = match &command {
            Ok(command) => Some(command.dataset.clone()),
            Err(_) => Command::dataset_named(request.get_ref()),
        };
        let outcome = match (&dataset, command) {
            (Some(dataset), command) => {
                let get = Get { context: &context, command };
                lifecycle::serve(&self.state, dataset, context.client, &context.request_id, get)
                    .instrument(context.span.clone())
                    .await
            }
            (None, command) => Err(command.err().unwrap_or_else(|| Error::internal("a command without a dataset"))),
        };
        let span = context.span.clone();
        let outcome = outcome.map(|((), mut messages)| {
            let messages = stream::poll_fn(move |cx| {
                let _in_request = span.enter();
                messages.poll_next_unpin(cx)
            });
            messages
                .map(|message| {
                    message.map_err(|e| {
                        tracing::warn!(error = %e, "flight stream aborted");
                        status(&e)
                    })
                })
                .boxed()
        });
        context.answer(outcome, dataset.as_deref())
    }
}

/// What a `FlightInfo` tells of its dataset beyond the schema, as JSON (DCAT names where there
/// is one, as in the HTTP catalog).
fn metadata(entry: &CatalogEntry) -> Bytes {
    let d = &entry.dataset;
    let value = json!({
        "id": d.id,
        "title": d.title,
        "description": d.description,
        "owner": d.owner,
        "open_type": d.open_type,
        "update_frequency": d.update_frequency,
        "last_updated": d.last_updated,
        "license": d.license,
        "keywords": d.keywords,
    });
    serde_json::to_vec(&value).expect("metadata serializes").into()
}

/// The dataset's row count where its source records one without a scan.
async fn recorded_rows(state: &State, entry: &CatalogEntry) -> Option<u64> {
    match &entry.config.source {
        SourceConfig::File(path) => file::recorded_rows(state.config.data_dir.join(path), entry.dataset.format).await,
        SourceConfig::Url(_) => None,
    }
}

/// The key a `Handshake` presents: the password of Basic authentication, a bearer token, or the
/// first message's payload.
async fn handshake_key(headers: &http::HeaderMap, messages: &mut Streaming<HandshakeRequest>) -> Result<String, Error> {
    let missing = || {
        Error::new(
            Kind::Unauthenticated,
            "key_required",
            "send the API key as the password of Basic authentication, or as the handshake payload",
        )
    };
    if let Some(authorization) = headers.get(http::header::AUTHORIZATION) {
        let authorization = authorization.to_str().map_err(|_| missing())?;
        let (scheme, value) = authorization.split_once(' ').unwrap_or((authorization, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD.decode(value.trim()).map_err(|_| missing())?;
            let decoded = String::from_utf8(decoded).map_err(|_| missing())?;
            let (_user, password) = decoded.split_once(':').ok_or_else(missing)?;
            return Ok(password.to_owned());
        }
        if scheme.eq_ignore_ascii_case("bearer") {
            return Ok(value.trim().to_owned());
        }
        return Err(missing());
    }
    match messages.message().await {
        Ok(Some(request)) if !request.payload.is_empty() => {
            String::from_utf8(request.payload.to_vec()).map_err(|_| missing())
        }
        _ => Err(missing()),
    }
}

fn unimplemented(what: &str) -> Status {
    status(&unimplemented_error(what))
}

fn unimplemented_error(what: &str) -> Error {
    Error::new(
        Kind::MethodNotAllowed,
        "read_only",
        format!("{what} is not offered: kaifang serves open data read-only, through DoGet"),
    )
}

/// Flight SQL's action creating a prepared statement.
const CREATE_PREPARED_STATEMENT: &str = "CreatePreparedStatement";
/// Flight SQL's action closing a prepared statement.
const CLOSE_PREPARED_STATEMENT: &str = "ClosePreparedStatement";

type Messages<T> = BoxStream<'static, Result<T, Status>>;

#[tonic::async_trait]
impl FlightService for Service {
    type HandshakeStream = Messages<HandshakeResponse>;
    type ListFlightsStream = Messages<FlightInfo>;
    type DoGetStream = Messages<FlightData>;
    type DoPutStream = Messages<PutResult>;
    type DoActionStream = Messages<arrow_flight::Result>;
    type ListActionsStream = Messages<ActionType>;
    type DoExchangeStream = Messages<FlightData>;

    async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        let context = Context::of("Handshake", &request);
        let mut messages = request.into_inner();
        let outcome = async {
            let key = handshake_key(&context.headers, &mut messages).await?;
            let bearer = format!("Bearer {key}");
            let mut headers = http::HeaderMap::new();
            let value = http::HeaderValue::from_str(&bearer).map_err(|_| {
                Error::new(Kind::Unauthenticated, "unknown_key", "the API key is not known or has been revoked")
            })?;
            headers.insert(http::header::AUTHORIZATION, value);
            // A key is present, so the caller is never anonymous: it is the key's, or refused.
            self.state.keys.caller(&headers).await?;
            Ok((key, bearer))
        }
        .await;
        let (key, bearer) = match outcome {
            Ok(v) => v,
            Err(e) => return context.answer(Err(e), None),
        };
        let reply = HandshakeResponse { protocol_version: 0, payload: Bytes::from(key) };
        let mut response = context.answer(Ok(stream::iter([Ok(reply)]).boxed()), None)?;
        response.metadata_mut().insert("authorization", bearer.parse().expect("checked as a header value above"));
        Ok(response)
    }

    async fn list_flights(&self, request: Request<Criteria>) -> Result<Response<Self::ListFlightsStream>, Status> {
        let context = Context::of("ListFlights", &request);
        let outcome = async {
            let caller = context.caller(&self.state).await?;
            let text = std::str::from_utf8(&request.get_ref().expression)
                .map_err(|_| Error::bad_request("bad_criteria", "the criteria is a search text, in UTF-8"))?
                .trim()
                .to_owned();
            let mut infos = Vec::new();
            let live = self.state.live();
            // What is listed is what the decision granted.
            for (entry, grant) in call::readable(&live, &caller) {
                if !text.is_empty() && !entry.dataset.matches_text(&text) {
                    continue;
                }
                let command = Command::whole(entry.dataset.id.as_str());
                match self.info_under(&live, entry, &grant, &command).await {
                    Ok((info, _)) => infos.push(Ok(info)),
                    // One entry that cannot be described does not hide the others.
                    Err(e) => {
                        tracing::warn!(dataset = %entry.dataset.id, error = %e, "dataset left out of ListFlights")
                    }
                }
            }
            Ok(stream::iter(infos).boxed())
        }
        .await;
        context.answer(outcome, None)
    }

    async fn get_flight_info(&self, request: Request<FlightDescriptor>) -> Result<Response<FlightInfo>, Status> {
        self.described("GetFlightInfo", request, |info, _| Ok(info)).await
    }

    async fn poll_flight_info(&self, request: Request<FlightDescriptor>) -> Result<Response<PollInfo>, Status> {
        // The answer is complete at once: no descriptor to poll again.
        self.described("PollFlightInfo", request, |info, _| {
            PollInfo::new().with_info(info).try_with_progress(1.0).map_err(|e| Error::internal(e.to_string()))
        })
        .await
    }

    async fn get_schema(&self, request: Request<FlightDescriptor>) -> Result<Response<SchemaResult>, Status> {
        self.described("GetSchema", request, |_, schema| {
            SchemaResult::try_from(SchemaAsIpc::new(&schema, &IpcWriteOptions::default()))
                .map_err(|e| Error::internal(format!("schema encoding: {e}")))
        })
        .await
    }

    /// `DoGet` through tonic's codec. The listener serves `DoGet` framed by [`wire::Routes`]
    /// instead; this answers the same messages for a server built on the generated service.
    async fn do_get(&self, request: Request<Ticket>) -> Result<Response<Self::DoGetStream>, Status> {
        let response = self.get_messages(request).await?;
        Ok(response.map(|messages| messages.map_ok(wire::Message::into_flight_data).boxed()))
    }

    /// `DoPut` binds the parameters of a prepared statement (one row) and hands back its new
    /// handle; updates and ingestion are refused, the data being served read-only.
    async fn do_put(&self, request: Request<Streaming<FlightData>>) -> Result<Response<Self::DoPutStream>, Status> {
        let context = Context::of("DoPut", &request);
        let outcome = async {
            context.caller(&self.state).await?;
            let mut messages = request.into_inner();
            let opening =
                messages.message().await.map_err(|e| Error::bad_request("bad_parameters", e.message().to_owned()))?;
            let descriptor = opening.as_ref().and_then(|m| m.flight_descriptor.clone());
            let statement = match descriptor.map(|d| sql::SqlCommand::parse(&d.cmd)) {
                Some(Some(Ok(sql::SqlCommand::Statement(statement)))) => statement,
                Some(Some(Err(e))) => return Err(e),
                _ => return Err(unimplemented_error("DoPut other than binding a prepared statement's parameters")),
            };
            let messages = stream::iter(opening.map(Ok))
                .chain(messages)
                .map_err(|e| arrow_flight::error::FlightError::Tonic(Box::new(e)));
            let mut batches = arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(messages);
            let first = batches.next().await.transpose();
            let first = first.map_err(|e| Error::bad_request("bad_parameters", format!("the parameters: {e}")))?;
            let batch = first.ok_or_else(|| Error::bad_request("bad_parameters", "no parameters were sent"))?;
            if batches.next().await.is_some() {
                return Err(Error::bad_request("bad_parameters", "bind one batch of one row of parameters"));
            }
            let bound = statement.bound(&batch)?;
            let result =
                arrow_flight::sql::DoPutPreparedStatementResult { prepared_statement_handle: Some(bound.handle()) };
            let put = PutResult { app_metadata: result.encode_to_vec().into() };
            Ok(stream::iter([Ok(put)]).boxed())
        }
        .instrument(context.span.clone())
        .await;
        context.answer(outcome, None)
    }

    async fn do_exchange(&self, _: Request<Streaming<FlightData>>) -> Result<Response<Self::DoExchangeStream>, Status> {
        Err(unimplemented("DoExchange"))
    }

    /// Flight SQL's prepared statements: `CreatePreparedStatement` plans the statement for the
    /// caller and answers its handle with the schemas of its result and its parameters;
    /// `ClosePreparedStatement` has nothing to free (the handle is the statement).
    async fn do_action(&self, request: Request<Action>) -> Result<Response<Self::DoActionStream>, Status> {
        let context = Context::of("DoAction", &request);
        let outcome = async {
            let caller = context.caller(&self.state).await?;
            let action = request.get_ref();
            let body = || {
                arrow_flight::sql::Any::decode(action.body.as_ref())
                    .map_err(|e| Error::bad_request("bad_action", format!("the action's body: {e}")))
            };
            let unpacked = |e: arrow::error::ArrowError| Error::bad_request("bad_action", e.to_string());
            match action.r#type.as_str() {
                CREATE_PREPARED_STATEMENT => {
                    let request: arrow_flight::sql::ActionCreatePreparedStatementRequest = body()?
                        .unpack()
                        .map_err(unpacked)?
                        .ok_or_else(|| Error::bad_request("bad_action", "not a CreatePreparedStatement request"))?;
                    if request.transaction_id.is_some() {
                        return Err(Error::new(
                            Kind::MethodNotAllowed,
                            "read_only",
                            "transactions are not supported: the data is served read-only",
                        ));
                    }
                    let statement = sql::Statement::new(request.query);
                    let planned = self.planned(&context, caller, &statement).await?;
                    let ipc = |schema: &arrow::datatypes::Schema| -> Result<Bytes, Error> {
                        let arrow_flight::IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
                            .try_into()
                            .map_err(|e: arrow::error::ArrowError| Error::internal(format!("schema encoding: {e}")))?;
                        Ok(bytes)
                    };
                    let result = arrow_flight::sql::ActionCreatePreparedStatementResult {
                        prepared_statement_handle: statement.handle(),
                        dataset_schema: ipc(&planned.schema())?,
                        parameter_schema: ipc(planned.parameter_schema()?.as_ref())?,
                    };
                    let body = arrow_flight::sql::ProstMessageExt::as_any(&result).encode_to_vec();
                    Ok(stream::iter([Ok(arrow_flight::Result { body: body.into() })]).boxed())
                }
                CLOSE_PREPARED_STATEMENT => Ok(stream::empty().boxed()),
                other => Err(unimplemented_error(&format!("the action `{other}`"))),
            }
        }
        .instrument(context.span.clone())
        .await;
        context.answer(outcome, None)
    }

    async fn list_actions(&self, _: Request<Empty>) -> Result<Response<Self::ListActionsStream>, Status> {
        let actions = [
            (
                CREATE_PREPARED_STATEMENT,
                "Plans a SQL statement; answers its handle and the schemas of its result and parameters",
            ),
            (CLOSE_PREPARED_STATEMENT, "Closes a prepared statement (nothing is kept between calls)"),
        ];
        let actions = actions
            .map(|(r#type, description)| Ok(ActionType { r#type: r#type.into(), description: description.into() }));
        Ok(Response::new(stream::iter(actions).boxed()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    #[test]
    fn slices_are_cut_by_the_bytes_of_the_slice_not_of_the_allocation_behind_it() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, false),
            Field::new("s", DataType::Utf8, false),
        ]));
        let numbers = Int64Array::from_iter_values(0..100_000);
        let text = StringArray::from_iter_values((0..100_000).map(|i| format!("row {i:>10}")));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(numbers), Arc::new(text)]).unwrap();
        // 800 kB of numbers, 1.4 MB of text and 400 kB of offsets: about 2.6 MB.
        let pieces = message_slices(&batch, 1 << 20);
        assert_eq!(pieces.len(), 3);
        assert_eq!(pieces.iter().map(RecordBatch::num_rows).sum::<usize>(), 100_000);
        assert_eq!(pieces[1].column(0).as_any().downcast_ref::<Int64Array>().unwrap().value(0), 33_334);
        // A slice of the batch weighs what it holds, though it shares the batch's buffers.
        let small = batch.slice(0, 1000);
        assert_eq!(message_slices(&small, 1 << 20).len(), 1);
        assert!(message_slices(&batch.slice(0, 0), 1 << 20).is_empty());
    }

    #[test]
    fn each_kind_of_error_has_its_grpc_status() {
        let cases = [
            (Kind::BadRequest, Code::InvalidArgument),
            (Kind::Unauthenticated, Code::Unauthenticated),
            (Kind::Forbidden, Code::PermissionDenied),
            (Kind::NotFound, Code::NotFound),
            (Kind::Gone, Code::FailedPrecondition),
            (Kind::TooManyRequests, Code::ResourceExhausted),
            (Kind::Unavailable, Code::Unavailable),
            (Kind::SourceFailed, Code::Unavailable),
            (Kind::Internal, Code::Internal),
        ];
        for (kind, code) in cases {
            let mut error = Error::new(kind, "some_code", "what happened");
            error.headers.push(("retry-after", "3".into()));
            let status = status(&error);
            assert_eq!(status.code(), code, "{kind:?}");
            assert_eq!(status.message(), "some_code: what happened");
            assert_eq!(status.metadata().get("retry-after").unwrap(), "3");
        }
    }
}
