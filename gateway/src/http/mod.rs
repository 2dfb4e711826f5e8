//! The HTTP data API: HTTP/1.1 and HTTP/2 (h2c, detected from the connection preface) on one
//! listener.
//!
//! Each request goes through the same phases, in [`handle`]: a request id is taken or made,
//! the route is matched, the handler authenticates the caller, asks [`policy::decide`] for a
//! grant, plans the query and streams the answer; every response, refusals included, carries
//! `X-Request-Id` and is logged once with its status.

mod admin;
mod agreements;
pub mod api;
mod applications;
mod catalog;
mod compress;
mod cors;
mod data;
pub(crate) mod download;
mod drafts;
mod health;
mod limits;
pub(crate) mod objections;
mod portal;
mod reports;
pub(crate) mod request;
mod response;
mod routes;
pub(crate) mod soql;
mod workflow;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tracing::Instrument;

use response::Body;

use crate::connection::Tracked;
use crate::state::State;

/// Which API a listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    /// The data and workflow API.
    Data,
    /// The operators' API.
    Admin,
}

/// Serves `api` on `listener` (over TLS when there is an acceptor) until `shutdown` completes,
/// then drains.
pub async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    api: Api,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    let limits = state.config.server.clone();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(limits.header_read_timeout_seconds))
        .max_buf_size(limits.max_header_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.http2_max_concurrent_streams)
        // What an answer may queue for a stream whose window is closed is part of what it
        // reserves in the answer memory budget.
        .max_send_buf_size(crate::source::MAX_STEP_BYTES / 4)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Duration::from_secs(limits.http2_keep_alive_seconds))
        .keep_alive_timeout(crate::connection::HTTP2_PING_TIMEOUT);
    let connections = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // At the connection limit, wait for one to close before accepting the next; clients
        // wait in the listen backlog meanwhile.
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let (state, limits) = (state.clone(), limits.clone());
                let metrics = state.metrics.listener(match api {
                    Api::Data => "http",
                    Api::Admin => "admin",
                });
                let (builder, watcher, tls) = (builder.clone(), graceful.watcher(), tls.clone());
                tokio::spawn(async move {
                    // A client that does not finish its TLS handshake in time is dropped, like
                    // one that does not finish its request head.
                    let io = match crate::connection::accept(stream, permit, tls.as_ref(), &limits, metrics).await {
                        Ok(io) => io,
                        Err(e) => {
                            tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
                            return;
                        }
                    };
                    let activity = io.activity().clone();
                    let service = hyper::service::service_fn(move |req| {
                        let (state, in_flight) = (state.clone(), activity.begin());
                        async move {
                            let response = handle(state, api, peer, req).await;
                            Ok::<_, Infallible>(response.map(|body| Tracked::new(body, Some(in_flight))))
                        }
                    });
                    let connection = builder.serve_connection(TokioIo::new(io), service).into_owned();
                    if let Err(e) = watcher.watch(connection).await {
                        tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections drained"),
        () = tokio::time::sleep(Duration::from_secs(limits.drain_seconds)) => {
            tracing::warn!("drain deadline passed; closing remaining connections")
        }
    }
}

/// Every request's path through the gateway.
async fn handle(state: Arc<State>, api: Api, peer: SocketAddr, req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let request_id = crate::call::request_id(req.headers());
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    // Every line logged for this request, its body's included, carries its id.
    let span = tracing::info_span!("request", request_id = %request_id);
    // Boxed: the routes' futures hold every step of a call, which each future around them
    // would otherwise carry inline and copy as it is moved.
    // The data API's answers may be read by pages of the origins `[http.cors]` allows.
    let origin = (api == Api::Data).then(|| cors::origin(req.headers())).flatten();
    // Its JSON answers are compressed here, but for data calls', which compress their own.
    let coding = (api == Api::Data)
        .then(|| compress::Coding::negotiate(req.headers()))
        .flatten()
        .filter(|_| !routes::is_data_call(&path));
    let routed = Box::pin(
        async {
            match api {
                Api::Data if method == Method::OPTIONS => routes::options(&state, req, peer.ip(), &request_id).await,
                Api::Data => routes::data(&state, req, peer.ip(), &request_id).await,
                Api::Admin => routes::admin(&state, req).await,
            }
        }
        .instrument(span.clone()),
    )
    .await;
    let mut response = match routed {
        Ok(r) => r,
        Err(e) => {
            e.log();
            response::error(&e)
        }
    };
    response
        .headers_mut()
        .insert("x-request-id", HeaderValue::from_str(&request_id).expect("request ids are visible ASCII"));
    if api == Api::Data {
        cors::decorate(&state.config.http.cors, origin.as_ref(), response.headers_mut());
        if method != Method::HEAD {
            response = compress::answer(response, coding).await;
        }
    }
    let _in_request = span.enter();
    tracing::info!(
        peer = %peer,
        api = ?api,
        method = %method,
        path = %path,
        status = response.status().as_u16(),
        head_ms = started.elapsed().as_millis() as u64,
        "request"
    );
    response.map(|body| response::in_span(body, span.clone()))
}
