//! Upstream HTTP origins: the streaming proxy's client side.
//!
//! The client keeps a bounded pool: at most `max_connections` requests to origins are in flight
//! at once (a semaphore permit travels with each response body and is returned when the body is
//! done or dropped), idle connections are kept per host for reuse, and every phase has a
//! timeout: connect, response head, and the silence between two body frames. Bodies are handed
//! on frame by frame as they arrive; nothing buffers a whole body.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::ByteStream;
use crate::config::UpstreamConfig;
use crate::error::{Error, Kind};

/// The request headers a raw download passes on to the origin.
pub const FORWARDED_REQUEST_HEADERS: [HeaderName; 4] =
    [hyper::header::RANGE, hyper::header::IF_RANGE, hyper::header::IF_NONE_MATCH, hyper::header::IF_MODIFIED_SINCE];

/// Bytes read from an origin connection at a time.
const READ_BUF_BYTES: usize = 256 * 1024;

/// A client for upstream origins, shared by all requests.
#[derive(Clone)]
pub struct Upstream {
    client: Client<HttpConnector, Empty<Bytes>>,
    permits: Arc<Semaphore>,
    response_timeout: Duration,
    idle_timeout: Duration,
    /// `kaifang_upstream_errors_total`, by kind.
    errors: prometheus::IntCounterVec,
}

/// An origin's answer: status and headers now, the body as it arrives.
pub struct UpstreamResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: ByteStream,
}

impl UpstreamResponse {
    /// The origin's ETag without quotes or weakness marker, as a dataset version.
    pub fn etag(&self) -> Option<String> {
        let tag = self.headers.get(hyper::header::ETAG)?.to_str().ok()?;
        Some(tag.trim_start_matches("W/").trim_matches('"').to_owned())
    }
}

impl Upstream {
    pub fn new(config: &UpstreamConfig, errors: prometheus::IntCounterVec) -> Upstream {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(config.connect_timeout_seconds)));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            // Large reads from the origin mean few, large frames on the way through.
            .http1_read_buf_exact_size(READ_BUF_BYTES)
            .pool_max_idle_per_host(config.max_idle_per_host)
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_timer(TokioTimer::new())
            .build(connector);
        Upstream {
            client,
            permits: Arc::new(Semaphore::new(config.max_connections)),
            response_timeout: Duration::from_secs(config.response_timeout_seconds),
            idle_timeout: Duration::from_secs(config.idle_timeout_seconds),
            errors,
        }
    }

    /// Sends a GET or HEAD for `url` with the given request headers. Fails if the origin cannot
    /// be reached or does not answer in time; any status the origin gives is returned as it is.
    pub async fn request(&self, method: &Method, url: &str, headers: &HeaderMap) -> Result<UpstreamResponse, Error> {
        let permit =
            self.permits.clone().acquire_owned().await.map_err(|_| Error::internal("upstream client closed"))?;
        let mut request = Request::builder()
            .method(method.clone())
            .uri(url)
            .body(Empty::new())
            .map_err(|e| Error::internal(format!("bad upstream URL {url}: {e}")))?;
        request.headers_mut().extend(headers.iter().map(|(k, v)| (k.clone(), v.clone())));
        request.headers_mut().insert(
            hyper::header::USER_AGENT,
            HeaderValue::from_static(concat!("kaifang/", env!("CARGO_PKG_VERSION"))),
        );
        let response = match tokio::time::timeout(self.response_timeout, self.client.request(request)).await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => {
                self.error("connect");
                return Err(Error::source(format!("the origin cannot be reached: {}", error_chain(&e))));
            }
            Err(_) => {
                self.error("timeout");
                return Err(Error::new(
                    Kind::SourceTimeout,
                    "source_timeout",
                    format!("the origin did not answer within {} s", self.response_timeout.as_secs()),
                ));
            }
        };
        let (parts, body) = response.into_parts();
        Ok(UpstreamResponse {
            status: parts.status,
            headers: parts.headers,
            body: body_stream(body, permit, self.idle_timeout, self.errors.clone()),
        })
    }

    /// Counts a failure of kind `connect`, `timeout`, `idle`, `broken` or `status`.
    pub fn error(&self, kind: &str) {
        self.errors.with_label_values(&[kind]).inc();
    }
}

/// The origin's body as a stream of data frames. An origin that goes silent for longer than
/// `idle` or breaks the connection ends the stream with an error.
fn body_stream(
    body: Incoming,
    permit: OwnedSemaphorePermit,
    idle: Duration,
    errors: prometheus::IntCounterVec,
) -> ByteStream {
    Box::pin(futures_util::stream::unfold(Some((body, permit)), move |state| {
        let errors = errors.clone();
        async move {
            let (mut body, permit) = state?;
            loop {
                match tokio::time::timeout(idle, body.frame()).await {
                    Err(_) => {
                        errors.with_label_values(&["idle"]).inc();
                        let e = Error::source(format!("the origin sent nothing for {} s", idle.as_secs()));
                        return Some((Err(e), None));
                    }
                    Ok(None) => return None,
                    Ok(Some(Err(e))) => {
                        errors.with_label_values(&["broken"]).inc();
                        let e = Error::source(format!("the origin's body broke off: {}", error_chain(&e)));
                        return Some((Err(e), None));
                    }
                    Ok(Some(Ok(frame))) => {
                        if let Ok(data) = frame.into_data() {
                            return Some((Ok(data), Some((body, permit))));
                        }
                    }
                }
            }
        }
    }))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
