//! The `kaifang` command line: `serve`, `check-config`, `calendar check`, `demo-data`, `keys`,
//! `audit`, `webhooks`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use kaifang::config::{self, Config, Origin};
use kaifang::error::StartupError;
use kaifang::state::State;
use kaifang::store::sqlite::SqliteStore;

/// mimalloc rather than the system allocator: record batches are allocated on reader threads in
/// blocks of several MiB and freed on runtime threads, which glibc's per-thread arenas kept, so a
/// gateway's memory grew with every large read (README, Benchmarks: Flight).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "kaifang", version, about = "The data gateway of a city's public-data open platform")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines as text or as JSON objects (one per line); levels from `KAIFANG_LOG`.
    #[arg(long, global = true, env = "KAIFANG_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Where the configuration and the state are.
#[derive(Args, Clone)]
struct Place {
    /// Configuration file (TOML); the embedded demo configuration when absent.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Data directory; overrides the configuration's `data_dir`.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
}

impl Place {
    fn load(&self) -> Result<Config, String> {
        let mut config = match &self.config {
            Some(path) => load(Origin::Files, path)?,
            None => load(Origin::Embedded, Path::new("kaifang.toml"))?,
        };
        if let Some(dir) = &self.data_dir {
            config.data_dir = dir.clone();
        }
        Ok(config)
    }

    /// The store of the data directory, with the configuration's declared principals and
    /// agreements in it, as `serve` would have them.
    fn store(&self) -> Result<Box<dyn kaifang::store::Store>, String> {
        let config = self.load()?;
        let store: Box<dyn kaifang::store::Store> = match &config.cluster {
            Some(cluster) => {
                Box::new(kaifang::store::postgres::PgStore::open(&cluster.store).map_err(|e| e.to_string())?)
            }
            None => {
                std::fs::create_dir_all(&config.data_dir).map_err(|e| format!("{}: {e}", config.data_dir.display()))?;
                Box::new(SqliteStore::open(&config.data_dir).map_err(|e| e.to_string())?)
            }
        };
        kaifang::state::store_declared(store.as_ref(), &config)?;
        Ok(store)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway. With no --config: the embedded demo (demo catalog, demo data and a demo
    /// user's key generated into the data dir on first run).
    Serve {
        #[command(flatten)]
        place: Place,
        /// HTTP listen address; overrides `[http] listen`.
        #[arg(long)]
        http: Option<SocketAddr>,
        /// Arrow Flight listen address; overrides `[flight] listen`.
        #[arg(long)]
        flight: Option<SocketAddr>,
        /// Admin listen address; overrides `[admin] listen`.
        #[arg(long)]
        admin: Option<SocketAddr>,
        /// This instance's name in a cluster; overrides `[cluster] instance`.
        #[arg(long, env = "KAIFANG_INSTANCE")]
        instance: Option<String>,
    },
    /// Check a configuration and its catalog; every error is printed with file, line and field.
    CheckConfig {
        /// Configuration file (TOML).
        file: PathBuf,
    },
    /// The working-day calendar file application deadlines are counted on.
    Calendar {
        #[command(subcommand)]
        action: CalendarAction,
    },
    /// Write the demo datasets with N rows each (deterministic: same N, same bytes).
    DemoData {
        /// Rows per dataset.
        #[arg(long, default_value_t = kaifang::demo::DEFAULT_ROWS)]
        rows: u64,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Only this dataset (repeat for more); every demo dataset when absent.
        #[arg(long = "dataset", value_name = "ID")]
        datasets: Vec<String>,
    },
    /// Manage API keys in the data directory's store.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
        #[command(flatten)]
        place: Place,
    },
    /// Check and read the audit log of conditional data.
    Audit {
        #[command(subcommand)]
        action: AuditAction,
        #[command(flatten)]
        place: Place,
    },
    /// The platform's operation report over a period (regulation art. 37, 39): the catalog,
    /// data quality, applications and their deadlines, the use of conditional data, misuse
    /// reports, the audit log's integrity.
    Report {
        /// First day (YYYY-MM-DD, in the platform's time zone).
        #[arg(long)]
        from: chrono::NaiveDate,
        /// Last day, included.
        #[arg(long)]
        to: chrono::NaiveDate,
        /// Where to write it; standard output when absent.
        #[arg(long)]
        out: Option<PathBuf>,
        /// json, html or pdf (printed by Chromium); by default the --out file's extension, else json.
        #[arg(long, value_enum)]
        format: Option<kaifang::operation::Format>,
        /// Only the datasets of this owning department.
        #[arg(long)]
        owner: Option<String>,
        #[command(flatten)]
        place: Place,
    },
    /// Owners' webhooks.
    Webhooks {
        #[command(subcommand)]
        action: WebhooksAction,
        #[command(flatten)]
        place: Place,
    },
}

#[derive(Subcommand)]
enum CalendarAction {
    /// Check a calendar file; list the years it covers officially and those counted
    /// provisionally on the statutory holidays, with the next provisional year's days off.
    /// Every error is printed as `file:line: field: message`; exit 1 on error.
    Check {
        /// Calendar file (TOML, `[[years]]`).
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum WebhooksAction {
    /// Print the key a department's receiver checks the `X-Kaifang-Signature` of its
    /// notifications with.
    Key {
        /// The department, as in datasets' `owner`.
        #[arg(long)]
        department: String,
    },
}

#[derive(Subcommand)]
enum AuditAction {
    /// Verify the hash chain; names the first edited, deleted, inserted or reordered record.
    Verify,
    /// Who received a dataset: principals, agreements, calls, rows, bytes, first and last access.
    Trace {
        #[arg(long)]
        dataset: String,
        /// Start of the window (RFC 3339), inclusive.
        #[arg(long)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// End of the window (RFC 3339), exclusive.
        #[arg(long)]
        until: Option<chrono::DateTime<chrono::Utc>>,
        #[arg(long, value_enum, default_value_t = TraceFormat::Table)]
        format: TraceFormat,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum TraceFormat {
    Table,
    Json,
}

#[derive(Subcommand)]
enum KeysAction {
    /// Issue a key for a principal; the key is printed once and stored only as a hash.
    Issue {
        #[arg(long)]
        principal: String,
    },
    /// Revoke a key by its id; the gateway refuses it from its next request.
    Revoke { key_id: String },
    /// List keys (ids, principals, dates; never secrets).
    List,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("KAIFANG_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        // A log line that cannot be written (a full disk under the log file) is dropped; the
        // default reports it with eprintln!, which panics when stderr cannot be written either
        // and would take the thread that logged down with it (the audit writer, say).
        .log_internal_errors(false);
    match cli.log_format {
        LogFormat::Text => logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
        // One object per line; the fields of the request's span (its request id) in each.
        LogFormat::Json => logs.json().with_current_span(true).with_span_list(false).init(),
    }
    let result = match cli.command {
        Command::Serve { place, http, flight, admin, instance } => {
            serve(place, Listeners { http, flight, admin, instance }).map_err(|e| e.to_string())
        }
        Command::CheckConfig { file } => check_config(&file),
        Command::Calendar { action: CalendarAction::Check { file } } => check_calendar(&file),
        Command::DemoData { rows, out, datasets } => load(Origin::Embedded, Path::new("kaifang.toml"))
            .and_then(|c| kaifang::demo::write_all(&c, rows, &out, &datasets)),
        Command::Keys { action, place } => keys(action, &place),
        Command::Audit { action, place } => audit(action, &place),
        Command::Report { from, to, out, format, owner, place } => report(&place, from, to, out, format, owner),
        Command::Webhooks { action: WebhooksAction::Key { department }, place } => place.load().and_then(|config| {
            if !config.webhooks.owners.contains_key(&department) {
                return Err(format!("no webhook is configured for `{department}` ([webhooks] owners)"));
            }
            let secret = kaifang::notify::existing_signing_secret(&config)?;
            println!("{}", kaifang::notify::department_key(&secret, &department));
            Ok(())
        }),
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

fn check_config(file: &Path) -> Result<(), String> {
    let c = load(Origin::Files, file)?;
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
    println!("{}: ok, {} datasets, {} agreements", file.display(), c.datasets.len(), c.agreements.len());
    Ok(())
}

fn check_calendar(file: &Path) -> Result<(), String> {
    use std::fmt::Write as _;
    let (calendar, warnings) = config::load_calendar_file(file).map_err(|e| e.to_string())?;
    for warning in &warnings {
        eprintln!("warning: {warning}");
    }
    let official: Vec<i32> = calendar.official_years().collect();
    let provisional: Vec<i32> = calendar.provisional_years().collect();
    let mut out = String::new();
    let _ = writeln!(out, "{}: ok", file.display());
    let _ = writeln!(out, "official: {}", year_runs(&official));
    let _ = writeln!(
        out,
        "provisional (statutory holidays, days given back, no make-up working days): {}",
        year_runs(&provisional)
    );
    let last_official = official.last().copied().unwrap_or(i32::MIN);
    if let Some(&next) = provisional.iter().find(|&&y| y > last_official).or(provisional.first()) {
        let arrangement = policy::statutory::arrangement(next).map_err(|e| e.to_string())?;
        let _ = writeln!(out, "{next}, until its arrangement is added, has these days off (and weekends):");
        let mut days: Vec<(chrono::NaiveDate, String)> =
            arrangement.statutory.iter().map(|h| (h.date, h.festival.to_string())).collect();
        days.extend(arrangement.given_back.iter().map(|h| (h.date, format!("{}, given back", h.festival))));
        days.sort();
        days.dedup_by(|b, a| {
            a.0 == b.0 && {
                a.1 = format!("{}; {}", a.1, b.1);
                true
            }
        });
        for (date, what) in days {
            let _ = writeln!(out, "  {} {}  {what}", date, date.format("%a"));
        }
    }
    // Read through `head` and the like: a reader that stops early is not an error.
    match std::io::Write::write_all(&mut std::io::stdout(), out.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(format!("cannot write the listing: {e}")),
        _ => Ok(()),
    }
}

/// Years as runs: `2025, 2027-2100`; `none` when there are none.
fn year_runs(years: &[i32]) -> String {
    let mut runs: Vec<(i32, i32)> = Vec::new();
    for &year in years {
        match runs.last_mut() {
            Some((_, last)) if *last + 1 == year => *last = year,
            _ => runs.push((year, year)),
        }
    }
    if runs.is_empty() {
        return "none".into();
    }
    let shown: Vec<String> =
        runs.iter().map(|&(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") }).collect();
    shown.join(", ")
}

fn keys(action: KeysAction, place: &Place) -> Result<(), String> {
    let store = place.store()?;
    match action {
        KeysAction::Issue { principal } => {
            let issued = kaifang::auth::issue(store.as_ref(), &principal).map_err(|e| e.to_string())?;
            eprintln!("key {} for {}; the key is shown only this once:", issued.record.id, principal);
            println!("{}", issued.key);
        }
        KeysAction::Revoke { key_id } => {
            let revoked = store.revoke_key(&key_id, chrono::Utc::now()).map_err(|e| e.to_string())?;
            println!("key {key_id} {}", if revoked { "revoked" } else { "was already revoked" });
        }
        KeysAction::List => {
            let time = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            println!("{:<18} {:<24} {:<22} revoked", "id", "principal", "created");
            for k in store.keys().map_err(|e| e.to_string())? {
                let revoked = k.revoked_at.map_or("-".to_owned(), time);
                println!("{:<18} {:<24} {:<22} {revoked}", k.id, k.principal, time(k.created_at));
            }
        }
    }
    Ok(())
}

fn report(
    place: &Place,
    from: chrono::NaiveDate,
    to: chrono::NaiveDate,
    out: Option<PathBuf>,
    format: Option<kaifang::operation::Format>,
    owner: Option<String>,
) -> Result<(), String> {
    use kaifang::operation::{self, Format};
    let extension = out.as_ref().and_then(|p| p.extension()).and_then(|e| e.to_str()).and_then(Format::parse);
    let format = format.or(extension).unwrap_or(Format::Json);
    let period = operation::Period::new(from, to)?;
    let config = place.load()?;
    let store = place.store()?;
    let now = kaifang::clock::Clock::from_env()?.now();
    // On a terminal: how much of the audit log is read (indicatif draws nothing elsewhere).
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template("reading the audit log {wide_bar} {bytes}/{total_bytes} {eta}")
            .expect("a valid template"),
    );
    let progress = |done: u64, total: Option<u64>| {
        if let Some(total) = total {
            bar.set_length(total);
        }
        bar.set_position(done);
    };
    let report = operation::build_for(&config, store.as_ref(), now, period, owner.as_deref(), &progress)?;
    bar.finish_and_clear();
    let bytes = format.encode(&report)?;
    match out {
        Some(path) => {
            std::fs::write(&path, &bytes).map_err(|e| format!("{}: {e}", path.display()))?;
            eprintln!("{}: the operation report of {from} to {to}", path.display());
            Ok(())
        }
        None => std::io::Write::write_all(&mut std::io::stdout(), &bytes).map_err(|e| format!("standard output: {e}")),
    }
}

fn audit(action: AuditAction, place: &Place) -> Result<(), String> {
    let config = place.load()?;
    let dir = kaifang::state::audit_dir(&config.data_dir);
    let cluster = config.cluster.as_ref().map(|c| c.store.as_str());
    match (action, cluster) {
        (AuditAction::Verify, Some(url)) => {
            let mut broken = Vec::new();
            for chain in kaifang::audit::postgres::verify(url)? {
                match &chain.broken {
                    None => println!(
                        "audit chain of {} intact: {} records verified, last seq {}\n  {}",
                        chain.instance,
                        chain.records,
                        chain.last_seq,
                        not_verifiable(chain.removed, chain.last_seq)
                    ),
                    Some((seq, problem)) => {
                        broken.push(format!("audit chain of {} broken at seq {seq}: {problem}", chain.instance))
                    }
                }
            }
            if broken.is_empty() {
                Ok(())
            } else {
                Err(broken.join("\n"))
            }
        }
        (AuditAction::Trace { dataset, since, until, format }, Some(url)) => {
            let records: Vec<_> = kaifang::audit::postgres::read_lines(url)?.into_iter().map(|(_, r)| r).collect();
            print_trace(&records, &dataset, since, until, format);
            Ok(())
        }
        (action, None) => audit_files(action, &dir),
    }
}

type Time = chrono::DateTime<chrono::Utc>;

fn print_trace(
    records: &[kaifang::audit::Record],
    dataset: &str,
    since: Option<Time>,
    until: Option<Time>,
    format: TraceFormat,
) {
    let recipients = kaifang::audit::trace(records, dataset, since, until);
    match format {
        TraceFormat::Json => {
            let report =
                serde_json::json!({"dataset": dataset, "since": since, "until": until, "recipients": recipients});
            println!("{}", serde_json::to_string_pretty(&report).expect("reports serialize"));
        }
        TraceFormat::Table => {
            let time = |t: Time| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            println!(
                "{:<20} {:<20} {:>7} {:>10} {:>10} {:>12}  {:<20}  {:<20}",
                "principal", "agreement", "calls", "unfinished", "rows", "bytes", "first access", "last access"
            );
            for r in &recipients {
                println!(
                    "{:<20} {:<20} {:>7} {:>10} {:>10} {:>12}  {:<20}  {:<20}",
                    r.principal,
                    r.agreement,
                    r.calls,
                    r.unfinished_calls,
                    r.rows,
                    r.bytes,
                    time(r.first_access),
                    time(r.last_access)
                );
            }
        }
    }
}

/// What an intact chain's verification could not check: the records retention removed before
/// the first one present, and any cut from the very end.
fn not_verifiable(removed: u64, last_seq: u64) -> String {
    let end = format!(
        "records after seq {last_seq}, if any were cut from the end (compare the last seq with one kept elsewhere)"
    );
    if removed == 0 {
        format!("not verifiable here: {end}")
    } else {
        format!(
            "not verifiable here: records 1 to {removed}, removed by retention (the chain is verified from its \
             anchor, which is taken as given); {end}"
        )
    }
}

fn audit_files(action: AuditAction, dir: &Path) -> Result<(), String> {
    use kaifang::audit::segments;
    match action {
        AuditAction::Verify => match segments::verify(dir)? {
            segments::Verdict::Intact { records, last_seq, removed } => {
                println!("audit log intact: {records} records verified, last seq {last_seq}");
                println!("{}", not_verifiable(removed, last_seq));
                Ok(())
            }
            segments::Verdict::Broken { segment, line, seq, problem } => {
                let seq = seq.map_or(String::new(), |s| format!(" (seq {s})"));
                Err(format!("audit log broken at {} line {line}{seq}: {problem}", segment.display()))
            }
        },
        AuditAction::Trace { dataset, since, until, format } => {
            let records: Vec<_> = segments::read_lines(dir)?.into_iter().map(|(_, r)| r).collect();
            print_trace(&records, &dataset, since, until, format);
            Ok(())
        }
    }
}

/// Listen addresses given on the command line, over those of the configuration.
#[derive(Clone)]
struct Listeners {
    http: Option<SocketAddr>,
    flight: Option<SocketAddr>,
    admin: Option<SocketAddr>,
    instance: Option<String>,
}

/// The configuration with the command line's overrides.
fn configure(place: &Place, listeners: &Listeners) -> Result<Config, String> {
    let mut config = place.load()?;
    if let Some(name) = &listeners.instance {
        let cluster =
            config.cluster.as_mut().ok_or("--instance names an instance of a [cluster]; the configuration has none")?;
        cluster.instance = name.clone();
    }
    if let Some(addr) = listeners.http {
        config.http.listen = addr;
    }
    if let Some(addr) = listeners.flight {
        config.flight.listen = addr;
    }
    if let Some(addr) = listeners.admin {
        config.admin.listen = addr;
    }
    Ok(config)
}

fn serve(place: Place, listeners: Listeners) -> Result<(), StartupError> {
    let config = configure(&place, &listeners).map_err(StartupError::Config)?;
    let embedded = place.config.is_none();
    if embedded {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|source| StartupError::Directory { path: config.data_dir.clone(), source })?;
        kaifang::demo::ensure(&config).map_err(StartupError::Demo)?;
    }
    let source = {
        let place = place.clone();
        move || configure(&place, &listeners).map_err(|e| e.lines().map(str::to_owned).collect())
    };
    let state = Arc::new(State::open(config)?.with_source(Box::new(source)));
    if embedded {
        kaifang::demo::ensure_key(&state).map_err(StartupError::Demo)?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(StartupError::Runtime)?;
    runtime.block_on(run(state))
}

async fn run(state: Arc<State>) -> Result<(), StartupError> {
    let running = kaifang::server::serve(state.clone()).await?;
    let addrs = running.addrs;
    // Lines scripts and tests can wait for.
    println!("kaifang: admin listening on {}", addrs.admin);
    println!("kaifang: flight listening on {}", addrs.flight);
    println!("kaifang: http listening on {}", addrs.http);
    ignore_file_size_signal();
    reload_on_hangup(state);
    shutdown_signal().await;
    running.shutdown().await;
    Ok(())
}

/// A write past the file size limit (RLIMIT_FSIZE) should fail with an error the audit log can
/// report and recover from, not kill the gateway: catching SIGXFSZ turns it into EFBIG.
fn ignore_file_size_signal() {
    #[cfg(target_os = "linux")]
    {
        const SIGXFSZ: i32 = 25;
        if let Ok(mut signals) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(SIGXFSZ)) {
            tokio::spawn(async move { while signals.recv().await.is_some() {} });
        }
    }
}

/// Reloads the configuration on every SIGHUP; an invalid one is logged with its errors and the
/// running one goes on.
fn reload_on_hangup(state: Arc<State>) {
    #[cfg(unix)]
    tokio::spawn(async move {
        let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
            return;
        };
        while hangups.recv().await.is_some() {
            if let Err(errors) = state.reload().await {
                for error in errors {
                    tracing::error!(error = %error, "reload refused; the running configuration goes on");
                }
            }
        }
    });
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
