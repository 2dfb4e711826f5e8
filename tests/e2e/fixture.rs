//! Starting and stopping gateways, and reading datasets directly for comparison.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use arrow::record_batch::RecordBatch;

pub const BIN: &str = env!("CARGO_BIN_EXE_kaifang");

/// A running gateway: a process of the binary, or one started in this process with
/// `kaifang::server::start`. Killed (a process) or stopped at once (in process) when dropped.
pub struct Gateway {
    runner: Runner,
    args: Vec<String>,
    pub base: String,
    /// Base URL of the admin API.
    pub admin: String,
    /// URL of the Arrow Flight service (`http://host:port`).
    pub flight: String,
    pub data_dir: PathBuf,
    /// The operator token, when given by environment rather than generated into the data dir.
    token: Option<String>,
    /// The time the workflows' clock started at (`KAIFANG_TEST_NOW`), if set.
    clock: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

/// How a gateway runs.
enum Runner {
    /// The binary, for what needs a process: signals, crashes, resource limits, its own memory.
    Process(Child),
    /// `kaifang::server::start` on a runtime of its own, in this process.
    InProcess(InProcess),
}

/// A gateway started in this process, on a runtime of its own (so that it serves whatever the
/// test's runtime does).
struct InProcess {
    runtime: Option<tokio::runtime::Runtime>,
    running: Option<kaifang::server::Running>,
}

impl InProcess {
    /// The embedded demo (as `kaifang serve --data-dir DIR` runs it), on free ports.
    fn demo(data_dir: &Path) -> InProcess {
        let mut config = kaifang::config::load(kaifang::config::Origin::Embedded, Path::new("kaifang.toml"))
            .expect("the embedded configuration loads");
        config.data_dir = data_dir.to_owned();
        let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
        (config.http.listen, config.flight.listen, config.admin.listen) = (any, any, any);
        std::fs::create_dir_all(data_dir).unwrap();
        kaifang::demo::ensure(&config).expect("the demo data is written");
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        // Started from a thread of its own: the test's runtime may be running on this one.
        let running = std::thread::scope(|scope| {
            scope.spawn(|| runtime.block_on(kaifang::server::start(config))).join().unwrap()
        })
        .expect("the gateway starts");
        kaifang::demo::ensure_key(&running.state).expect("the demo key is written");
        InProcess { runtime: Some(runtime), running: Some(running) }
    }

    fn addrs(&self) -> kaifang::server::Addrs {
        self.running.as_ref().expect("running").addrs
    }

    /// Stops it as `kaifang` does on SIGTERM: answers in flight finish, the audit log is synced.
    fn shutdown(&mut self) {
        if let (Some(runtime), Some(running)) = (self.runtime.take(), self.running.take()) {
            // Off the test's runtime, where blocking on another is not allowed.
            std::thread::spawn(move || {
                runtime.block_on(running.shutdown());
                runtime.shutdown_timeout(Duration::from_secs(5));
            })
            .join()
            .unwrap();
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        drop(self.running.take());
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Gateway {
    /// The embedded demo, in a fresh data directory, started in this process.
    pub fn demo() -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let gateway = InProcess::demo(&data_dir);
        let addrs = gateway.addrs();
        Gateway {
            runner: Runner::InProcess(gateway),
            args: Vec::new(),
            base: format!("http://{}", addrs.http),
            admin: format!("http://{}", addrs.admin),
            flight: format!("http://{}", addrs.flight),
            data_dir,
            token: None,
            clock: None,
            _dir: Some(dir),
        }
    }

    /// The embedded demo as a process of the binary, in a fresh data directory: for tests that
    /// signal, crash or limit the process.
    pub fn demo_process() -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let mut g = Gateway::spawn(&["serve", "--data-dir", data_dir.to_str().unwrap()], data_dir.clone());
        g._dir = Some(dir);
        g
    }

    /// A gateway on `config`, with `data_dir` holding its data.
    pub fn with_config(config: &Path, data_dir: &Path) -> Gateway {
        Gateway::spawn(
            &["serve", "--config", config.to_str().unwrap(), "--data-dir", data_dir.to_str().unwrap()],
            data_dir.to_owned(),
        )
    }

    /// A gateway on `config` whose workflows' clock starts at `now` (RFC 3339): applications
    /// are submitted, and their deadlines judged, as on that day.
    pub fn with_clock(config: &Path, data_dir: &Path, now: &str) -> Gateway {
        let args = ["serve", "--config", config.to_str().unwrap(), "--data-dir", data_dir.to_str().unwrap()];
        Gateway::spawn_full(&args, data_dir.to_owned(), None, Some(now.to_owned()))
    }

    /// One instance of a cluster on `config`: its name, the operator token all instances share.
    pub fn instance(config: &Path, data_dir: &Path, name: &str, token: &str) -> Gateway {
        let args = [
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--instance",
            name,
        ];
        Gateway::spawn_with(&args, data_dir.to_owned(), Some(token.to_owned()))
    }

    /// Runs `kaifang ARGS` with every listener on a free port.
    fn spawn(args: &[&str], data_dir: PathBuf) -> Gateway {
        Gateway::spawn_with(args, data_dir, None)
    }

    fn spawn_with(args: &[&str], data_dir: PathBuf, token: Option<String>) -> Gateway {
        Gateway::spawn_full(args, data_dir, token, None)
    }

    fn spawn_full(args: &[&str], data_dir: PathBuf, token: Option<String>, clock: Option<String>) -> Gateway {
        let listeners = ["--http", "127.0.0.1:0", "--flight", "127.0.0.1:0", "--admin", "127.0.0.1:0"];
        let mut command = Command::new(BIN);
        if let Some(token) = &token {
            command.env("KAIFANG_ADMIN_TOKEN", token);
        }
        if let Some(now) = &clock {
            command.env("KAIFANG_TEST_NOW", now);
        }
        let mut child = command
            .args(args.iter().copied().chain(listeners))
            .env("KAIFANG_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start kaifang");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // One line per listener, in any order.
            let (mut http, mut admin, mut flight) = (None, None, None);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let Some((name, addr)) = line.strip_prefix("kaifang: ").and_then(|l| l.split_once(" listening on "))
                else {
                    continue;
                };
                match name {
                    "http" => http = Some(addr.to_owned()),
                    "admin" => admin = Some(addr.to_owned()),
                    "flight" => flight = Some(addr.to_owned()),
                    _ => {}
                }
                if let (Some(h), Some(f), Some(a)) = (&http, &flight, &admin) {
                    let _ = tx.send((h.clone(), f.clone(), a.clone()));
                    break;
                }
            }
        });
        let (addr, flight, admin) =
            rx.recv_timeout(Duration::from_secs(60)).expect("kaifang did not start listening within 60 s");
        let args = args.iter().map(|a| a.to_string()).collect();
        Gateway {
            runner: Runner::Process(child),
            args,
            base: format!("http://{addr}"),
            admin: format!("http://{admin}"),
            flight: format!("http://{flight}"),
            data_dir,
            token,
            clock,
            _dir: None,
        }
    }

    /// The process, for tests that need one ([`Gateway::demo_process`]).
    fn child(&mut self) -> &mut Child {
        match &mut self.runner {
            Runner::Process(child) => child,
            Runner::InProcess(_) => panic!("this test needs the gateway as a process: start it with demo_process()"),
        }
    }

    pub fn pid(&self) -> u32 {
        match &self.runner {
            Runner::Process(child) => child.id(),
            Runner::InProcess(_) => panic!("this test needs the gateway as a process: start it with demo_process()"),
        }
    }

    /// Sends the process a signal (`TERM`, `HUP`, ...).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill").args(["-s", name, &self.pid().to_string()]).status().unwrap();
        assert!(status.success(), "kill -s {name}");
    }

    /// Waits up to `limit` for the process to exit; its exit status, if it did.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child().try_wait().unwrap() {
                return Some(status);
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sets the process's file size limit (`prlimit --fsize=SOFT:HARD`): at `1:unlimited` no
    /// file may grow, so every audit write fails with EFBIG.
    pub fn limit_file_size(&self, value: &str) {
        let status = Command::new("prlimit")
            .args(["--pid", &self.pid().to_string(), &format!("--fsize={value}")])
            .status()
            .unwrap();
        assert!(status.success(), "prlimit {value}");
    }

    /// Kills the process with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        self.child().kill().unwrap();
        self.child().wait().unwrap();
    }

    /// Starts the gateway again on the same data directory (after [`Gateway::kill`]).
    pub fn restart(self) -> Gateway {
        let clock = self.clock.clone();
        self.restart_with_clock(clock)
    }

    /// Starts the gateway again on the same data directory, its workflows' clock starting at
    /// `now` (RFC 3339).
    pub fn restart_at(self, now: &str) -> Gateway {
        self.restart_with_clock(Some(now.to_owned()))
    }

    fn restart_with_clock(mut self, clock: Option<String>) -> Gateway {
        if let Runner::InProcess(gateway) = &mut self.runner {
            assert!(clock.is_none(), "the workflows' clock is set for processes only");
            gateway.shutdown();
            let again = InProcess::demo(&self.data_dir);
            let addrs = again.addrs();
            self.runner = Runner::InProcess(again);
            (self.base, self.admin, self.flight) = (
                format!("http://{}", addrs.http),
                format!("http://{}", addrs.admin),
                format!("http://{}", addrs.flight),
            );
            return self;
        }
        let _ = self.child().kill();
        let _ = self.child().wait();
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let mut again = Gateway::spawn_full(&args, self.data_dir.clone(), self.token.clone(), clock);
        again._dir = self._dir.take();
        again
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The operator token the gateway generated into its data directory.
    pub fn admin_token(&self) -> String {
        if let Some(token) = &self.token {
            return token.clone();
        }
        std::fs::read_to_string(self.data_dir.join("admin.token")).unwrap().trim().to_owned()
    }

    /// The demo user's key, issued on first run.
    pub fn demo_key(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("demo-user.key")).unwrap().trim().to_owned()
    }

    /// Calls the admin API with the operator token; returns status and JSON body.
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut request = client().request(method, format!("{}{path}", self.admin)).bearer_auth(self.admin_token());
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Runner::Process(child) = &mut self.runner {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub use crate::services::say_skipped;

/// Makes ring the process's TLS provider, which every reqwest client needs (the TLS tests'
/// clients bring their own configuration; the others speak plain HTTP).
pub fn tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// An HTTP/1.1 client that fails a test instead of hanging it.
pub fn client() -> reqwest::Client {
    tls_provider();
    reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap()
}

/// GETs `url` and returns status and JSON body.
pub async fn get_json(url: &str) -> (u16, serde_json::Value) {
    let r = client().get(url).send().await.unwrap();
    let status = r.status().as_u16();
    let body = r.bytes().await.unwrap();
    let value = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{url}: not JSON ({e}): {}", String::from_utf8_lossy(&body)));
    (status, value)
}

/// Asserts a JSON error body with this status and code; returns the message.
pub async fn expect_error(url: &str, status: u16, code: &str) -> String {
    let (got, body) = get_json(url).await;
    assert_eq!(got, status, "{url}: {body}");
    assert_eq!(body["error"]["code"], code, "{url}: {body}");
    body["error"]["message"].as_str().unwrap().to_owned()
}

/// Asserts that the response at `url` breaks off: the head may still sit in the server's
/// write buffer when the stream breaks, so the client sees either a failed response or a 200
/// whose body fails; never a complete one.
pub async fn expect_broken(url: &str) {
    expect_broken_with(&client(), url).await
}

/// [`expect_broken`] with a given client (e.g. an HTTP/2 one).
pub async fn expect_broken_with(client: &reqwest::Client, url: &str) {
    match client.get(url).send().await {
        // The connection was cut mid-response; not refused, not timed out.
        Err(e) => assert!(e.is_request() && !e.is_connect() && !e.is_timeout(), "{url}: {e}"),
        Ok(r) => {
            assert_eq!(r.status(), 200, "{url}");
            assert!(r.bytes().await.is_err(), "{url}: a broken source must not look like a complete file");
        }
    }
}

/// Every batch of an Arrow IPC stream.
pub fn read_arrow_stream(bytes: &[u8]) -> Vec<RecordBatch> {
    arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

/// The whole demo dataset `file`, read straight from disk with Arrow's own readers.
pub fn read_source(path: &Path) -> RecordBatch {
    let batches: Vec<RecordBatch> = match path.extension().and_then(|e| e.to_str()) {
        Some("parquet") => {
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path).unwrap())
                .unwrap()
                .build()
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        }
        Some("arrow") => arrow::ipc::reader::FileReader::try_new(std::fs::File::open(path).unwrap(), None)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap(),
        other => panic!("read_source: {other:?}"),
    };
    arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap()
}

/// Lines of an NDJSON file as JSON values.
pub fn read_ndjson(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Records of a CSV text, header first, parsed with a real CSV parser.
pub fn read_csv(text: &str) -> Vec<Vec<String>> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(text.as_bytes())
        .records()
        .map(|r| r.unwrap().iter().map(str::to_owned).collect())
        .collect()
}

/// The enterprises dataset's field list, for catalogs written by tests.
pub const ENTERPRISE_FIELDS: &str = r#"[
    { name = "uscc", type = "string" }, { name = "name", type = "string" },
    { name = "district", type = "string" }, { name = "industry", type = "string" },
    { name = "registered_capital", type = "float64" }, { name = "established_on", type = "date" },
    { name = "status", type = "string" }, { name = "legal_rep_name", type = "string" },
    { name = "legal_rep_id_card", type = "string" }, { name = "legal_rep_mobile", type = "string" },
]"#;

/// A configuration written by a test: a data directory and a catalog of unconditional datasets.
pub struct Site {
    _dir: tempfile::TempDir,
    pub config: PathBuf,
    pub data_dir: PathBuf,
}

impl Site {
    /// Datasets as (id, format, source, fields); a source starting with `http://` is an
    /// upstream origin, anything else a file under the data directory.
    pub fn new(datasets: &[(&str, &str, &str, &str)]) -> Site {
        Site::with_settings("", datasets)
    }

    /// As [`Site::new`], with further top-level settings (`[limits]` and the like) first.
    pub fn with_settings(settings: &str, datasets: &[(&str, &str, &str, &str)]) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        std::fs::create_dir_all(&data_dir).unwrap();
        let mut text = format!("{settings}\n[upstream]\nresponse_timeout_seconds = 2\nidle_timeout_seconds = 2\n\n");
        for (id, format, source, fields) in datasets {
            let source = if source.starts_with("http://") {
                format!("{{ url = \"{source}\" }}")
            } else {
                format!("{{ file = \"{source}\" }}")
            };
            text.push_str(&format!(
                "[[datasets]]\nid = \"{id}\"\ntitle = \"{id}\"\nowner = \"Test Bureau\"\nopen_type = \"unconditional\"\n\
                 format = \"{format}\"\nupdate_frequency = \"daily\"\nlast_updated = \"2025-01-01T00:00:00Z\"\n\
                 license = \"CC-BY-4.0\"\nsource = {source}\nfields = {fields}\n\n"
            ));
        }
        let config = dir.path().join("kaifang.toml");
        std::fs::write(&config, text).unwrap();
        Site { _dir: dir, config, data_dir }
    }

    pub fn start(&self) -> Gateway {
        Gateway::with_config(&self.config, &self.data_dir)
    }

    /// Adds entry settings (`cache = "never"`, `index = [...]`) to the dataset read from `file`.
    pub fn set_entry(&self, file: &str, settings: &str) {
        let source = format!("source = {{ file = \"{file}\" }}");
        let text = std::fs::read_to_string(&self.config).unwrap();
        assert!(text.contains(&source), "no dataset reads {file}");
        std::fs::write(&self.config, text.replace(&source, &format!("{source}\n{settings}"))).unwrap();
    }
}

/// The shipped configuration (`kaifang.toml` with its catalog and calendar files) copied into
/// `dir`, for a test to edit; returns the path of the copied `kaifang.toml`.
pub fn copy_shipped_config(dir: &Path) -> PathBuf {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../config");
    for folder in ["catalog", "calendar"] {
        std::fs::create_dir_all(dir.join(folder)).unwrap();
        for file in std::fs::read_dir(format!("{root}/{folder}")).unwrap() {
            let file = file.unwrap().path();
            std::fs::copy(&file, dir.join(folder).join(file.file_name().unwrap())).unwrap();
        }
    }
    let config = dir.join("kaifang.toml");
    std::fs::copy(format!("{root}/kaifang.toml"), &config).unwrap();
    config
}

/// The shipped configuration in `dir` with `settings` added to the enterprises entry, and its
/// demo data at 2,000 rows: returns the paths of `kaifang.toml` and of the data directory.
pub fn demo_with_enterprises(dir: &Path, settings: &str) -> (PathBuf, PathBuf) {
    let config = copy_shipped_config(dir);
    let market = dir.join("catalog/market.toml");
    let source = "source = { file = \"demo/enterprises.arrow\" }";
    let text = std::fs::read_to_string(&market).unwrap();
    assert!(text.contains(source), "the enterprises entry reads its shipped file");
    std::fs::write(&market, text.replace(source, &format!("{source}\n{settings}"))).unwrap();
    let data_dir = dir.join("data");
    let out = Command::new(BIN)
        .args(["demo-data", "--rows", "2000", "--out", data_dir.join("demo").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (config, data_dir)
}
