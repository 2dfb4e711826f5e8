//! The HTTP data API: HTTP/1.1 and HTTP/2 (h2c, detected from the connection preface) on one
//! listener.
//!
//! Each request goes through the same phases, in [`handle`]: a request id is taken or made,
//! the route is matched, the handler authenticates the caller, asks [`policy::decide`] for a
//! grant, plans the query and streams the answer; every response, refusals included, carries
//! `X-Request-Id` and is logged once with its status.

mod admin;
mod download;
mod limits;
mod response;
mod routes;

pub use response::status;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use response::Body;

use crate::state::State;

/// How long in-flight responses may take to finish after shutdown begins.
const DRAIN_DEADLINE: Duration = Duration::from_secs(30);
/// Time a client has to send its request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Which API a listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    /// The data and workflow API.
    Data,
    /// The operators' API.
    Admin,
}

/// Serves `api` on `listener` until `shutdown` completes, then drains.
pub async fn serve(listener: TcpListener, state: Arc<State>, api: Api, shutdown: impl Future<Output = ()>) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
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
                let state = state.clone();
                let service = hyper::service::service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(handle(state, api, peer, req).await) }
                });
                let connection = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
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
        () = tokio::time::sleep(DRAIN_DEADLINE) => tracing::warn!("drain deadline passed; closing remaining connections"),
    }
}

/// Every request's path through the gateway.
async fn handle(state: Arc<State>, api: Api, peer: SocketAddr, req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let request_id = request_id(req.headers());
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let routed = match api {
        Api::Data => routes::route(&state, req, peer.ip(), &request_id).await,
        Api::Admin => admin::route(&state, req).await,
    };
    let mut response = match routed {
        Ok(r) => r,
        Err(e) => response::error(&e),
    };
    response
        .headers_mut()
        .insert("x-request-id", HeaderValue::from_str(&request_id).expect("request ids are visible ASCII"));
    tracing::info!(
        request_id = %request_id,
        peer = %peer,
        api = ?api,
        method = %method,
        path = %path,
        status = response.status().as_u16(),
        head_ms = started.elapsed().as_millis() as u64,
        "request"
    );
    response
}

/// The client's `X-Request-Id` when it is well-formed (1 to 128 characters of letters, digits,
/// `-`, `_`, `.`), otherwise a new UUID.
pub fn request_id(headers: &hyper::HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        })
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned)
}
