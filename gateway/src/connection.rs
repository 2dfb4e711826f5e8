//! Accepted connections, on every listener: plain TCP or TLS, holding their listener's
//! connection permit, and closed when they sit idle.
//!
//! A connection is idle while no request on it is in flight. One that has not started a request
//! within `header_read_timeout_seconds` of being accepted (a client that connects and sends
//! nothing, or half an HTTP/2 preface) is closed, as is one with no request in flight for
//! `idle_timeout_seconds` after its last one ended. Without this, silent connections would hold
//! the listener's places (`max_connections`) for as long as their clients like; HTTP/2 pings
//! answered by the peer do not count as activity.
//!
//! The front ends mark requests in flight with [`Activity::begin`], whose guard lives as long as
//! the response body ([`Tracked`]); HTTP does it in its service, Flight in a tower layer
//! ([`TrackLayer`]) since tonic owns its connections. The connection notices the deadline when
//! it waits for bytes from the peer (HTTP servers read whenever they are not blocked writing; a
//! peer that reads nothing is dropped by the HTTP/2 keep-alive ping instead), and then fails
//! that read, which closes the connection. Bytes that arrived since the deadline was last looked
//! at buy one more [`GRACE`], once per deadline: they may be a request the server has read but
//! not yet handed to its service.
//!
//! A connection whose socket takes no bytes for `stalled_answer_seconds` while the server has
//! bytes to write (a client that stopped reading its answer) is closed too: its writes fail,
//! which ends the answer and gives back everything it held.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;

use crate::config::ServerConfig;
use crate::metrics::ListenerMetrics;

/// How long a peer has to answer an HTTP/2 keep-alive ping, on the data, admin and Flight
/// listeners alike.
pub const HTTP2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// `last_change` before any request has started on the connection.
const NEVER: u64 = 0;
/// How long a connection past its deadline is kept when bytes came from the peer meanwhile.
const GRACE: Duration = Duration::from_secs(1);

/// What a connection is doing, shared by the connection and its requests.
#[derive(Debug)]
pub struct Activity {
    accepted: Instant,
    first_request_within: Duration,
    idle_within: Duration,
    in_flight: AtomicUsize,
    /// One more than the milliseconds from `accepted` to the last start or end of a request, or
    /// [`NEVER`].
    last_change: AtomicU64,
}

impl Activity {
    fn new(limits: &ServerConfig) -> Arc<Activity> {
        Arc::new(Activity {
            accepted: Instant::now(),
            first_request_within: Duration::from_secs(limits.header_read_timeout_seconds),
            idle_within: Duration::from_secs(limits.idle_timeout_seconds),
            in_flight: AtomicUsize::new(0),
            last_change: AtomicU64::new(NEVER),
        })
    }

    /// A request starts; it is in flight until the guard is dropped (with its response body).
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.touch();
        InFlight(self.clone())
    }

    fn touch(&self) {
        let since = u64::try_from(self.accepted.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        // Requests on other threads may touch at the same time; the latest time wins.
        self.last_change.fetch_max(since + 1, Ordering::AcqRel);
    }

    fn any_request(&self) -> bool {
        self.last_change.load(Ordering::Acquire) != NEVER
    }

    /// When the connection is to be closed if nothing happens meanwhile; `None` while a request
    /// is in flight.
    fn deadline(&self) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        Some(match self.last_change.load(Ordering::Acquire) {
            NEVER => self.accepted + self.first_request_within,
            since => self.accepted + Duration::from_millis(since - 1) + self.idle_within,
        })
    }
}

/// A request in flight on a connection.
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        // The end is noted before the count drops, so the deadline is never taken from the
        // previous change.
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request in flight until it is dropped.
#[derive(Debug)]
pub struct Tracked<B> {
    body: B,
    _in_flight: Option<InFlight>,
}

impl<B> Tracked<B> {
    pub fn new(body: B, in_flight: Option<InFlight>) -> Tracked<B> {
        Tracked { body, _in_flight: in_flight }
    }
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// The Flight listener's tower layer: every gRPC call is a request in flight on its connection.
#[derive(Clone, Copy, Debug, Default)]
pub struct TrackLayer;

impl<S> tower::Layer<S> for TrackLayer {
    type Service = Track<S>;

    fn layer(&self, inner: S) -> Track<S> {
        Track { inner }
    }
}

/// See [`TrackLayer`].
#[derive(Clone, Debug)]
pub struct Track<S> {
    inner: S,
}

impl<S, B, R> tower::Service<http::Request<B>> for Track<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: hyper::body::Body<Data = Bytes> + Unpin,
{
    type Response = http::Response<Tracked<R>>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let info = request.extensions().get::<ConnectInfo>().cloned();
        if info.is_none() {
            // The call is served, but its connection may be closed as idle under it.
            tracing::error!("a Flight call without its connection's activity; connections are not tracked");
        }
        let in_flight = info.map(|info| {
            // tonic finds the peer's address (`Request::remote_addr`) under its own type.
            request.extensions_mut().insert(info.tcp);
            info.activity.begin()
        });
        let response = self.inner.call(request);
        Box::pin(async move { Ok(response.await?.map(|body| Tracked::new(body, in_flight))) })
    }
}

/// What tonic learns of a connection: its addresses and its [`Activity`].
#[derive(Clone, Debug)]
pub struct ConnectInfo {
    tcp: tonic::transport::server::TcpConnectInfo,
    activity: Arc<Activity>,
}

/// An accepted connection: plain TCP or TLS over it, holding its listener's connection permit
/// until it closes.
pub struct Stream {
    io: Io,
    activity: Arc<Activity>,
    /// Wakes the connection's reader at its deadline.
    idle_timer: Pin<Box<Sleep>>,
    /// Whether bytes came from the peer since the timer was last set.
    heard: bool,
    /// The deadline already extended by a [`GRACE`]: each deadline is extended once, so a peer
    /// that keeps sending bytes without requests (pings, say) is still closed.
    graced: Option<Instant>,
    /// Closed for idleness: every read from now on fails.
    closed: bool,
    /// Wakes the writer when the peer has taken no bytes for `stall_within`.
    write_timer: Pin<Box<Sleep>>,
    /// Whether the last write found the socket full, and the timer runs.
    write_blocked: bool,
    stall_within: Duration,
    counted: Counted,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// A connection counted open in its listener's metrics until it is dropped.
struct Counted(ListenerMetrics);

impl Counted {
    fn new(metrics: ListenerMetrics) -> Counted {
        metrics.open.inc();
        Counted(metrics)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.open.dec();
    }
}

enum Io {
    Plain(tokio::net::TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>),
}

impl Stream {
    pub fn tcp(&self) -> &tokio::net::TcpStream {
        match &self.io {
            Io::Plain(s) => s,
            Io::Tls(s) => s.get_ref().0,
        }
    }

    /// The connection's activity, for its requests to mark themselves in flight.
    pub fn activity(&self) -> &Arc<Activity> {
        &self.activity
    }

    /// Whether the connection has been idle past its deadline; otherwise the timer is set to
    /// wake the reader when it might be.
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        while self.idle_timer.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            let next = match self.activity.deadline() {
                // Bytes came meanwhile: perhaps a request the server has not handed over yet.
                Some(deadline) if deadline <= now && self.heard && self.graced != Some(deadline) => {
                    self.graced = Some(deadline);
                    now + GRACE
                }
                Some(deadline) if deadline <= now => {
                    let metrics = &self.counted.0;
                    if self.activity.any_request() {
                        metrics.closed_idle.inc();
                    } else {
                        metrics.closed_before_first_request.inc();
                    }
                    return true;
                }
                Some(deadline) => deadline,
                // Busy: look again once the shortest idle period could have passed.
                None => now + self.activity.idle_within,
            };
            self.heard = false;
            self.idle_timer.as_mut().reset(next);
        }
        false
    }
}

/// The connection's peer and activity, for tonic.
impl tonic::transport::server::Connected for Stream {
    type ConnectInfo = ConnectInfo;

    fn connect_info(&self) -> ConnectInfo {
        ConnectInfo { tcp: self.tcp().connect_info(), activity: self.activity.clone() }
    }
}

impl tokio::io::AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let idle = || std::io::Error::new(std::io::ErrorKind::TimedOut, "connection idle");
        if this.closed {
            return Poll::Ready(Err(idle()));
        }
        let before = buf.filled().len();
        let read = match &mut this.io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        };
        match read {
            Poll::Ready(Ok(())) if buf.filled().len() > before => this.heard = true,
            Poll::Pending if this.idle_expired(cx) => {
                this.closed = true;
                return Poll::Ready(Err(idle()));
            }
            _ => {}
        }
        read
    }
}

impl Stream {
    /// Watches a write's progress: a socket that has taken nothing for `stall_within` fails the
    /// write, which closes the connection.
    fn watched_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        written: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if written.is_ready() {
            self.write_blocked = false;
            return written;
        }
        if !self.write_blocked {
            self.write_blocked = true;
            self.write_timer.as_mut().reset(Instant::now() + self.stall_within);
        }
        if self.write_timer.as_mut().poll(cx).is_ready() {
            self.counted.0.closed_stalled.inc();
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client took no bytes for stalled_answer_seconds",
            )));
        }
        written
    }
}

impl tokio::io::AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let written = match &mut this.io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        };
        this.watched_write(cx, written)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let written = match &mut this.io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        };
        this.watched_write(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let flushed = match &mut this.io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        };
        this.watched_write(cx, flushed)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Completes the TLS handshake of `stream` when the listener has an acceptor, within the time a
/// client has to send a request head; the connection keeps `permit` until it closes.
pub async fn accept(
    stream: tokio::net::TcpStream,
    permit: tokio::sync::OwnedSemaphorePermit,
    acceptor: Option<&TlsAcceptor>,
    limits: &ServerConfig,
    metrics: ListenerMetrics,
) -> std::io::Result<Stream> {
    let counted = Counted::new(metrics);
    let activity = Activity::new(limits);
    let io = match acceptor {
        None => Io::Plain(stream),
        Some(acceptor) => match tokio::time::timeout(activity.first_request_within, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => Io::Tls(Box::new(tls)),
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                counted.0.closed_before_first_request.inc();
                return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out"));
            }
        },
    };
    let idle_timer = Box::pin(tokio::time::sleep_until(activity.accepted + activity.first_request_within));
    let stall_within = Duration::from_secs(limits.stalled_answer_seconds);
    Ok(Stream {
        io,
        activity,
        idle_timer,
        heard: false,
        graced: None,
        closed: false,
        write_timer: Box::pin(tokio::time::sleep(stall_within)),
        write_blocked: false,
        stall_within,
        counted,
        _permit: permit,
    })
}
