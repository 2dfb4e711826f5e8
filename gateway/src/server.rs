//! Starting the gateway's three listeners (data, Flight, admin) and its background work on the
//! current runtime, and stopping them: what `kaifang serve` runs, and what tests start in
//! process.
//!
//! ```no_run
//! # async fn example(config: kaifang::config::Config) -> Result<(), kaifang::error::StartupError> {
//! let running = kaifang::server::start(config).await?;
//! println!("data API on http://{}", running.addrs.http);
//! running.shutdown().await;
//! # Ok(())
//! # }
//! ```

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::config::{Config, TlsConfig};
use crate::error::StartupError;
use crate::http::Api;
use crate::state::State;
use crate::tls::Certs;

/// Where a running gateway listens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Addrs {
    /// The data API (HTTP/1.1 and HTTP/2).
    pub http: SocketAddr,
    /// Arrow Flight.
    pub flight: SocketAddr,
    /// The operators' API and the metrics.
    pub admin: SocketAddr,
}

/// A gateway serving on its listeners until [`Running::shutdown`].
pub struct Running {
    pub addrs: Addrs,
    pub state: Arc<State>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, lets the answers in flight finish (up to `[server] drain_seconds`), stops
    /// the background work and syncs the audit log: every record written before is durable once
    /// this returns.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        // Behind every record written before it, so once it is durable they all are.
        match self.state.audit.checkpoint("the gateway stopped".into()).await {
            Ok(_) => tracing::info!("audit log synced; stopped"),
            Err(e) => tracing::error!(error = %e, "the audit log could not be synced on the way out"),
        }
    }
}

/// Opens the gateway's state on `config` and starts it ([`serve`]).
pub async fn start(config: Config) -> Result<Running, StartupError> {
    // Opening the store may run a blocking client with a runtime of its own.
    let state = tokio::task::spawn_blocking(move || State::open(config))
        .await
        .map_err(|e| StartupError::Runtime(std::io::Error::other(e)))??;
    serve(Arc::new(state)).await
}

/// Binds the three listeners of `state`'s configuration and serves on them, with the background
/// work (cache refresh, quota saving, notifications) and, in a cluster, the changes other
/// instances announce.
pub async fn serve(state: Arc<State>) -> Result<Running, StartupError> {
    state.follow_changes()?;
    let config = &state.config;
    let data = bind(config.http.listen).await?;
    let flight = bind(config.flight.listen).await?;
    let admin = bind(config.admin.listen).await?;
    let data_tls = acceptor("http", &state.certs.http, &config.http.tls, crate::tls::HTTP_ALPN)?;
    let flight_tls = acceptor("flight", &state.certs.flight, &config.flight.tls, crate::tls::GRPC_ALPN)?;
    let admin_tls = acceptor("admin", &state.certs.admin, &config.admin.tls, crate::tls::HTTP_ALPN)?;
    let address =
        |l: &TcpListener, addr: SocketAddr| l.local_addr().map_err(|source| StartupError::Listen { addr, source });
    let addrs = Addrs {
        http: address(&data, config.http.listen)?,
        flight: address(&flight, config.flight.listen)?,
        admin: address(&admin, config.admin.listen)?,
    };
    let _ = state.flight_port.set(addrs.flight.port());
    tracing::info!(http = %addrs.http, flight = %addrs.flight, admin = %addrs.admin, datasets = state.live().catalog.entries().count(), data_dir = %config.data_dir.display(), "serving");
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let tasks = vec![
        tokio::spawn(crate::background::run(state.clone(), stopped())),
        tokio::spawn(crate::notify::run(state.clone(), stopped())),
        tokio::spawn(crate::http::serve(data, state.clone(), Api::Data, data_tls, stopped())),
        tokio::spawn(crate::flight::serve(flight, state.clone(), flight_tls, stopped())),
        tokio::spawn(crate::http::serve(admin, state.clone(), Api::Admin, admin_tls, stopped())),
    ];
    Ok(Running { addrs, state, stop, tasks })
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartupError> {
    TcpListener::bind(addr).await.map_err(|source| StartupError::Listen { addr, source })
}

/// A listener's TLS acceptor, when it has certificates.
fn acceptor(
    name: &str,
    certs: &Option<Arc<Certs>>,
    tls: &Option<TlsConfig>,
    alpn: &[&[u8]],
) -> Result<Option<tokio_rustls::TlsAcceptor>, StartupError> {
    match (certs, tls) {
        (Some(certs), Some(tls)) => crate::tls::acceptor(certs.clone(), tls, alpn)
            .map(Some)
            .map_err(|e| StartupError::Tls(format!("{name}.tls: {e}"))),
        _ => Ok(None),
    }
}
