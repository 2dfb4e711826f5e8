//! Arrow Flight `DoGet` throughput: kaifang against a bare arrow-flight server streaming the
//! same file's batches, in one run.
//!
//! The dataset is the demo's enterprises file (Arrow IPC, ten columns, batches of 65,536 rows) at
//! `ROWS` rows, served eight ways:
//! - `bare`: a minimal arrow-flight server (below, in this file) reading the file batch by batch
//!   on a blocking thread and encoding with `FlightDataEncoder` at the same 2 MiB message size,
//!   leaving the cutting of batches to the encoder;
//! - `bare-sliced`: the same server cutting batches by the bytes they hold, as kaifang does
//!   (`kaifang::flight::message_slices`): the encoder's own estimate counts an IPC batch's one
//!   shared buffer once per column and so sends many more, smaller messages;
//! - `unconditional`: kaifang, the file catalogued as unconditionally open;
//! - `conditional`: kaifang, conditionally open, under an agreement covering every row and
//!   column with no masks: decision, admission, audit records and quota metering;
//! - `masked`: as `conditional`, with three masks (`keep_first(1)`, `cn_id_card`, `cn_mobile`);
//! - `pyarrow`: a bare pyarrow Flight server holding the file's table in memory
//!   (`benches/flight_pyarrow.py`, run by the Python in `PYTHON`; skipped, and said so, when
//!   `PYTHON` is not set);
//! - `open-cached` and `masked-cached`: kaifang as `unconditional` and `masked`, with the
//!   dataset held decoded in memory (`cache = "always"`), as the pyarrow peer holds it.
//!
//! Servers take turns on one core (`SERVER_CPU`, one runtime worker each), the client on
//! the other; each figure is the median of `RUNS` full reads, the cases taken in turn. Run with
//! `benches/flight.sh` (which pins the client); `ROWS` defaults to 10,000,000 and `RUNS` to 5.
//! `flight get ADDRESS TICKET` (with `KAIFANG_KEY` for a key) times one read on its own.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use arrow::ipc::reader::FileReader;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo, HandshakeRequest, HandshakeResponse,
    PollInfo, PutResult, SchemaResult, Ticket,
};
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use kaifang::flight::{encoder, message_slices, MAX_MESSAGE_BYTES};
use tonic::{Request, Response, Status, Streaming};

const KAIFANG: &str = env!("CARGO_BIN_EXE_kaifang");

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    match args.as_slice() {
        [mode, file] if mode == "bare" => bare(PathBuf::from(file), false),
        [mode, file] if mode == "bare-sliced" => bare(PathBuf::from(file), true),
        [mode, address, ticket] if mode == "get" => {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let key = std::env::var("KAIFANG_KEY").ok();
            let (elapsed, bytes, rows) = runtime.block_on(fetch(address, ticket, key.as_deref()));
            println!("{rows} rows, {bytes} bytes in {:.3} s", elapsed.as_secs_f64());
        }
        [] => compare(),
        _ => panic!("usage: flight [bare FILE | bare-sliced FILE | get ADDRESS TICKET]"),
    }
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A server process and the address of its Flight listener.
struct Server {
    child: Child,
    address: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `program args` pinned to the server core, and waits for the line `prefix ADDRESS`.
fn start(program: &str, args: &[&str], prefix: &str) -> Server {
    let cpu = std::env::var("SERVER_CPU").unwrap_or_else(|_| "0".into());
    let mut child = Command::new("taskset")
        .args(["-c", &cpu, program])
        .args(args)
        .env("TOKIO_WORKER_THREADS", "1")
        .env("KAIFANG_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start a server under taskset");
    let stdout = child.stdout.take().unwrap();
    let prefix = prefix.to_owned();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(address) = line.strip_prefix(&prefix) {
                let _ = tx.send(address.to_owned());
            }
        }
    });
    let address = rx.recv_timeout(Duration::from_secs(120)).expect("the server did not start");
    Server { child, address }
}

fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// One full `DoGet`: wall time, bytes of messages received, rows.
async fn fetch(address: &str, ticket: &str, key: Option<&str>) -> (Duration, u64, u64) {
    let channel = tonic::transport::Channel::from_shared(format!("http://{address}")).unwrap().connect().await.unwrap();
    let mut client = FlightServiceClient::new(channel).max_decoding_message_size(16 << 20);
    let mut request = Request::new(Ticket::new(ticket.to_owned()));
    if let Some(key) = key {
        request.metadata_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
    }
    let started = Instant::now();
    let mut messages = client.do_get(request).await.unwrap().into_inner();
    let (mut bytes, mut rows) = (0u64, 0u64);
    while let Some(message) = messages.message().await.unwrap() {
        bytes += prost::Message::encoded_len(&message) as u64;
        if !message.data_body.is_empty() {
            let header = arrow::ipc::root_as_message(&message.data_header).unwrap();
            rows += header.header_as_record_batch().map_or(0, |b| b.length() as u64);
        }
    }
    (started.elapsed(), bytes, rows)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The enterprises catalog entry under `id` with `open_type`, held decoded in memory if `cached`.
fn entry(market: &str, id: &str, open_type: &str, cached: bool) -> String {
    let source = "source = { file = \"demo/enterprises.arrow\" }";
    market
        .replace("id = \"enterprises\"", &format!("id = \"{id}\""))
        .replace("open_type = \"conditional\"", &format!("open_type = \"{open_type}\""))
        .replace(source, &if cached { format!("{source}\ncache = \"always\"") } else { source.to_owned() })
}

fn site(work: &Path, rows: usize) -> PathBuf {
    let data = work.join("data");
    let out = Command::new(KAIFANG)
        .args(["demo-data", "--rows", &rows.to_string(), "--out", data.join("demo").to_str().unwrap()])
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "demo-data failed");
    let market =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../config/catalog/market.toml")).unwrap();
    let every = r#"columns = ["uscc", "name", "district", "industry", "registered_capital", "established_on", "status", "legal_rep_name", "legal_rep_id_card", "legal_rep_mobile"]"#;
    let terms = r#"valid_until = "2099-01-01T00:00:00Z"
rate = { per_second = 100000, burst = 100000 }
quota = { requests_per_day = 100000000, rows_per_day = 1000000000000, bytes_per_day = 1000000000000000 }"#;
    let config = format!(
        r#"data_dir = "{data}"
[limits]
anonymous_rate = {{ per_second = 100000, burst = 100000 }}
key_rate = {{ per_second = 100000, burst = 100000 }}

[cache]
max_bytes = 17179869184

{open}
{plain}
{masked}
{open_cached}
{masked_cached}

[[principals]]
id = "bench"
name = "Bench"
role = "user"

[[agreements]]
id = "bench-plain"
principal = "bench"
{terms}
datasets = [{{ dataset = "enterprises-plain", {every} }}]

[[agreements]]
id = "bench-masked"
principal = "bench"
{terms}
datasets = [
    {{ dataset = "enterprises", {every}, masks = {{ {masks} }} }},
    {{ dataset = "enterprises-masked-cached", {every}, masks = {{ {masks} }} }},
]
"#,
        data = data.display(),
        open = entry(&market, "enterprises-open", "unconditional", false),
        plain = entry(&market, "enterprises-plain", "conditional", false),
        masked = market,
        open_cached = entry(&market, "enterprises-open-cached", "unconditional", true),
        masked_cached = entry(&market, "enterprises-masked-cached", "conditional", true),
        masks = r#"legal_rep_name = "keep_first(1)", legal_rep_id_card = "cn_id_card", legal_rep_mobile = "cn_mobile""#,
    );
    let path = work.join("kaifang.toml");
    std::fs::write(&path, config).unwrap();
    path
}

fn compare() {
    let rows = env_number("ROWS", 10_000_000);
    let runs = env_number("RUNS", 5);
    let work = tempfile::tempdir().unwrap();
    eprintln!("writing the demo data at {rows} rows");
    let config = site(work.path(), rows);
    let data_dir = work.path().join("data");
    let key = Command::new(KAIFANG)
        .args(["keys", "issue", "--principal", "bench", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(key.status.success(), "{}", String::from_utf8_lossy(&key.stderr));
    let key = String::from_utf8(key.stdout).unwrap().trim().to_owned();
    let file = data_dir.join("demo/enterprises.arrow");
    let file_mib = std::fs::metadata(&file).unwrap().len() as f64 / 1048576.0;

    let this = std::env::current_exe().unwrap();
    let bare_server = start(this.to_str().unwrap(), &["bare", file.to_str().unwrap()], "bare listening on ");
    let sliced_server = start(this.to_str().unwrap(), &["bare-sliced", file.to_str().unwrap()], "bare listening on ");
    let gateway = start(
        KAIFANG,
        &[
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--http",
            "127.0.0.1:0",
            "--flight",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
        ],
        "kaifang: flight listening on ",
    );
    let python = std::env::var("PYTHON").ok().filter(|p| !p.is_empty());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../benches/flight_pyarrow.py");
    let pyarrow_server =
        python.as_deref().map(|python| start(python, &[script, file.to_str().unwrap()], "pyarrow listening on "));
    let mut cases: Vec<(&str, &str, &str, Option<&str>)> = vec![
        ("bare", &bare_server.address, "enterprises", None),
        ("bare-sliced", &sliced_server.address, "enterprises", None),
        ("unconditional", &gateway.address, "enterprises-open", None),
        ("conditional", &gateway.address, "enterprises-plain", Some(&key)),
        ("masked", &gateway.address, "enterprises", Some(&key)),
        ("open-cached", &gateway.address, "enterprises-open-cached", None),
        ("masked-cached", &gateway.address, "enterprises-masked-cached", Some(&key)),
    ];
    match &pyarrow_server {
        Some(server) => cases.push(("pyarrow", &server.address, "enterprises", None)),
        None => eprintln!("PYTHON is not set: the pyarrow peer is not run (benches/flight.sh sets it)"),
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut seconds: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut sizes = vec![(0u64, 0u64); cases.len()];
    runtime.block_on(async {
        // One read each first, to warm the page cache and the connections' code paths.
        for (_, address, ticket, key) in &cases {
            fetch(address, ticket, *key).await;
        }
        for run in 0..runs {
            for i in 0..cases.len() {
                // Rotate the order so no case always runs first.
                let i = (i + run) % cases.len();
                let (_, address, ticket, key) = cases[i];
                let (elapsed, bytes, got) = fetch(address, ticket, key).await;
                assert_eq!(got, rows as u64, "{}: every row", cases[i].0);
                seconds[i].push(elapsed.as_secs_f64());
                sizes[i] = (bytes, got);
            }
        }
    });
    println!("{}", machine());
    println!(
        "DoGet of {rows} rows (enterprises, Arrow IPC file of {file_mib:.0} MiB), median of {runs} runs, server on one core"
    );
    let bare = median(seconds[0].clone());
    let pyarrow = pyarrow_server.as_ref().map(|_| median(seconds[cases.len() - 1].clone()));
    for (i, (name, ..)) in cases.iter().enumerate() {
        let s = median(seconds[i].clone());
        let (bytes, rows) = sizes[i];
        let over_pyarrow = pyarrow.map(|p| format!("  {:.2}x pyarrow", p / s)).unwrap_or_default();
        println!(
            "{name:<14} {s:7.3} s  {:6.2} GB/s  {:6.1} Mrows/s  ({} MB sent)  {:.2}x bare{over_pyarrow}",
            bytes as f64 / s / 1e9,
            rows as f64 / s / 1e6,
            bytes / 1_000_000,
            bare / s,
        );
    }
    let pyarrow_rss =
        pyarrow_server.as_ref().map(|p| format!(", pyarrow {:.0} MiB", peak_rss_mib(p.child.id()))).unwrap_or_default();
    println!(
        "peak RSS: bare {:.0} MiB, bare-sliced {:.0} MiB, kaifang {:.0} MiB{pyarrow_rss}",
        peak_rss_mib(bare_server.child.id()),
        peak_rss_mib(sliced_server.child.id()),
        peak_rss_mib(gateway.child.id())
    );
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpu.lines().find_map(|l| l.strip_prefix("model name")).map(|m| m.trim_start_matches([' ', '\t', ':']));
    // Counted from /proc/cpuinfo: this process is pinned to one of them.
    let cores = cpu.lines().filter(|l| l.starts_with("processor")).count();
    format!("machine: {cores} cores, {}", model.unwrap_or("unknown CPU"))
}

/// The bare server: the file's batches, as read, through arrow-flight's encoder.
fn bare(file: PathBuf, sliced: bool) {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("bare listening on {}", listener.local_addr().unwrap());
        // The same socket option kaifang sets on every accepted connection.
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(|accepted| {
            let stream = accepted?;
            stream.set_nodelay(true)?;
            Ok::<_, std::io::Error>(stream)
        });
        tonic::transport::Server::builder()
            .add_service(FlightServiceServer::new(Bare { file, sliced }))
            .serve_with_incoming(incoming)
            .await
            .unwrap();
    });
}

struct Bare {
    file: PathBuf,
    /// Cut batches to message size by the bytes they hold (as kaifang does), rather than leave
    /// it to the encoder's estimate.
    sliced: bool,
}

type Messages<T> = BoxStream<'static, Result<T, Status>>;

#[tonic::async_trait]
impl FlightService for Bare {
    type HandshakeStream = Messages<HandshakeResponse>;
    type ListFlightsStream = Messages<FlightInfo>;
    type DoGetStream = Messages<FlightData>;
    type DoPutStream = Messages<PutResult>;
    type DoActionStream = Messages<arrow_flight::Result>;
    type ListActionsStream = Messages<ActionType>;
    type DoExchangeStream = Messages<FlightData>;

    async fn do_get(&self, _: Request<Ticket>) -> Result<Response<Self::DoGetStream>, Status> {
        let file = self.file.clone();
        // Read on a blocking thread, two batches ahead at most, as a file source in kaifang is.
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let schema =
            FileReader::try_new(std::fs::File::open(&file)?, None).map_err(|e| Status::internal(e.to_string()))?;
        let schema = schema.schema();
        tokio::task::spawn_blocking(move || {
            let reader = FileReader::try_new(std::fs::File::open(&file).unwrap(), None).unwrap();
            for batch in reader {
                if tx.blocking_send(batch.map_err(arrow_flight::error::FlightError::Arrow)).is_err() {
                    break;
                }
            }
        });
        let batches = tokio_stream::wrappers::ReceiverStream::new(rx);
        let messages = if self.sliced {
            let batches = batches.flat_map(|batch| {
                let pieces = match batch {
                    Ok(b) => message_slices(&b, MAX_MESSAGE_BYTES).into_iter().map(Ok).collect(),
                    Err(e) => vec![Err(e)],
                };
                futures_util::stream::iter(pieces)
            });
            encoder(schema).build(batches).boxed()
        } else {
            FlightDataEncoderBuilder::new()
                .with_schema(schema)
                .with_max_flight_data_size(MAX_MESSAGE_BYTES)
                .build(batches)
                .boxed()
        };
        let messages = messages.map_err(|e| Status::internal(e.to_string()));
        Ok(Response::new(messages.boxed()))
    }

    async fn handshake(
        &self,
        _: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn list_flights(&self, _: Request<Criteria>) -> Result<Response<Self::ListFlightsStream>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn get_flight_info(&self, _: Request<FlightDescriptor>) -> Result<Response<FlightInfo>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn poll_flight_info(&self, _: Request<FlightDescriptor>) -> Result<Response<PollInfo>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn get_schema(&self, _: Request<FlightDescriptor>) -> Result<Response<SchemaResult>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn do_put(&self, _: Request<Streaming<FlightData>>) -> Result<Response<Self::DoPutStream>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn do_exchange(&self, _: Request<Streaming<FlightData>>) -> Result<Response<Self::DoExchangeStream>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn do_action(&self, _: Request<Action>) -> Result<Response<Self::DoActionStream>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn list_actions(&self, _: Request<Empty>) -> Result<Response<Self::ListActionsStream>, Status> {
        Err(Status::unimplemented("bare"))
    }
}
