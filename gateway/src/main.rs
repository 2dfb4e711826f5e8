//! The `kaifang` command line: `serve`, `check-config`, `demo-data`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use kaifang::config::{self, Config, Origin};
use kaifang::state::State;

#[derive(Parser)]
#[command(
    name = "kaifang",
    version,
    about = "The data gateway of a city's public-data open platform"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway. With no --config: the embedded demo (demo catalog, demo data generated
    /// into the data dir on first run).
    Serve {
        /// Configuration file (TOML).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Data directory; overrides the configuration's `data_dir`.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// HTTP listen address; overrides `[http] listen`.
        #[arg(long)]
        http: Option<std::net::SocketAddr>,
    },
    /// Check a configuration and its catalog; every error is printed with file, line and field.
    CheckConfig {
        /// Configuration file (TOML).
        file: PathBuf,
    },
    /// Write the demo datasets with N rows each (deterministic: same N, same bytes).
    DemoData {
        /// Rows per dataset.
        #[arg(long, default_value_t = kaifang::demo::DEFAULT_ROWS)]
        rows: u64,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("KAIFANG_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config, data_dir, http } => serve(config, data_dir, http),
        Command::CheckConfig { file } => load(Origin::Files, &file).map(|c| {
            for dataset in &c.datasets {
                if let config::SourceConfig::File(path) = &dataset.source {
                    if !c.data_dir.join(path).is_file() {
                        eprintln!(
                            "warning: dataset `{}`: file {} not found (yet)",
                            dataset.id,
                            c.data_dir.join(path).display()
                        );
                    }
                }
            }
            println!("{}: ok, {} datasets", file.display(), c.datasets.len());
        }),
        Command::DemoData { rows, out } => {
            load(Origin::Embedded, Path::new("kaifang.toml")).and_then(|c| kaifang::demo::write_all(&c, rows, &out))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}

fn load(origin: Origin, path: &Path) -> Result<Config, String> {
    config::load(origin, path).map_err(|e| e.to_string())
}

fn serve(
    config_path: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    http: Option<std::net::SocketAddr>,
) -> Result<(), String> {
    let embedded = config_path.is_none();
    let mut config = match &config_path {
        Some(path) => load(Origin::Files, path)?,
        None => load(Origin::Embedded, Path::new("kaifang.toml"))?,
    };
    if let Some(dir) = data_dir {
        config.data_dir = dir;
    }
    if let Some(addr) = http {
        config.http.listen = addr;
    }
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| format!("cannot create data dir {}: {e}", config.data_dir.display()))?;
    if embedded {
        kaifang::demo::ensure(&config)?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.http.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", config.http.listen))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        tracing::info!(addr = %addr, datasets = config.datasets.len(), data_dir = %config.data_dir.display(), "serving");
        // A line scripts and tests can wait for.
        println!("kaifang: http listening on {addr}");
        let state = Arc::new(State::new(config));
        kaifang::http::serve(listener, state, shutdown_signal()).await;
        Ok(())
    })
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}
