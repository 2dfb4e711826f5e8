//! Answers nobody reads: bounded per client and overall, cut when stalled, and never in the way
//! of other clients' calls.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::fixture::{client, Gateway, Site};

const FIELDS: &str =
    r#"[{ name = "id", type = "int64" }, { name = "name", type = "string" }, { name = "value", type = "float64" }]"#;

/// A site with a CSV dataset `big` of `rows` rows (about 40 bytes each) and the given settings.
fn site_with_big_csv(settings: &str, rows: usize) -> Site {
    let site = site_with_big_csv_cached(settings, rows);
    // Read from the file on every call: the answers stream from a reader, which is what stalls.
    let config = std::fs::read_to_string(&site.config)
        .unwrap()
        .replace("source = { file = \"big.csv\" }", "source = { file = \"big.csv\" }\ncache = \"never\"");
    std::fs::write(&site.config, config).unwrap();
    site
}

/// The same, with the catalog's default `cache = "auto"`.
fn site_with_big_csv_cached(settings: &str, rows: usize) -> Site {
    let site = Site::with_settings(settings, &[("big", "csv", "big.csv", FIELDS)]);
    let mut text = String::with_capacity(rows * 40 + 32);
    text.push_str("id,name,value\n");
    for i in 0..rows {
        text.push_str(&format!("{i},name-{i:08}-padding-padding,{}.25\n", i % 977));
    }
    std::fs::write(site.data_dir.join("big.csv"), text).unwrap();
    site
}

fn address(base: &str) -> SocketAddr {
    base.trim_start_matches("http://").parse().unwrap()
}

fn loopback(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

/// A TCP connection from `from` with a small receive buffer, so that what the client does not
/// read backs up to the server at once.
async fn connect(from: IpAddr, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    socket.connect(to).await.unwrap()
}

/// Sends an HTTP/1.1 request and reads no more than the status line's code.
async fn stalled_http1(from: IpAddr, to: SocketAddr, path: &str) -> (TcpStream, u16) {
    let mut stream = connect(from, to).await;
    stream.write_all(format!("GET {path} HTTP/1.1\r\nhost: test\r\n\r\n").as_bytes()).await.unwrap();
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await.unwrap();
    let status = std::str::from_utf8(&head[9..12]).unwrap().parse().unwrap();
    (stream, status)
}

/// Opens an HTTP/2 connection whose streams get a flow-control window of zero, sends `n`
/// requests on it and keeps the answers unread; returns them with their statuses.
async fn stalled_http2(
    from: IpAddr,
    to: SocketAddr,
    path: &str,
    n: usize,
) -> (Vec<hyper::Response<hyper::body::Incoming>>, Vec<u16>) {
    let stream = connect(from, to).await;
    let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(0)
        .adaptive_window(false)
        .handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut waiting = Vec::new();
    for _ in 0..n {
        let mut sender = sender.clone();
        let request = hyper::Request::get(format!("http://{to}{path}")).body(Empty::<Bytes>::new()).unwrap();
        waiting.push(tokio::spawn(async move { sender.send_request(request).await.unwrap() }));
    }
    let mut answers = Vec::new();
    let mut statuses = Vec::new();
    for w in waiting {
        let answer = w.await.unwrap();
        statuses.push(answer.status().as_u16());
        answers.push(answer);
    }
    (answers, statuses)
}

async fn metric(g: &Gateway, name: &str) -> f64 {
    let text = client().get(format!("{}/metrics", g.admin)).send().await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with(name) && (l.len() == name.len() || matches!(l.as_bytes()[name.len()], b' ' | b'{')))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

/// Calls another client makes while the stalled answers sit: each must answer within a second.
async fn others_are_served(g: &Gateway, key: &str) {
    let other = reqwest::Client::builder().local_address(loopback(9)).build().unwrap();
    for (path, key) in
        [("/v1/catalog", None), ("/v1/agreements", Some(key)), ("/v1/datasets/big/rows?limit=5&format=csv", None)]
    {
        let started = Instant::now();
        let mut request = other.get(g.url(path));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = tokio::time::timeout(Duration::from_secs(5), request.send()).await.expect(path).unwrap();
        let status = response.status().as_u16();
        response.bytes().await.unwrap();
        let took = started.elapsed();
        assert_eq!(status, 200, "{path}");
        assert!(took < Duration::from_secs(1), "{path} took {took:?} while answers were stalled");
    }
}

/// Answers held open and unread: HTTP/1.1 sockets and HTTP/2 answers.
struct Stalled {
    _sockets: Vec<TcpStream>,
    _answers: Vec<hyper::Response<hyper::body::Incoming>>,
}

/// Three addresses over HTTP/1.1 (rows and raw downloads) and one over HTTP/2 (three connections
/// of 60 streams whose windows stay at zero), each asking for more answers than it may have,
/// none reading: 64 answers are admitted, 236 refused.
async fn stall_answers(g: &Gateway) -> Stalled {
    let to = address(&g.base);
    let rows = "/v1/datasets/big/rows?format=csv";
    let mut sockets = Vec::new();
    for (last, path) in [(1, rows), (2, rows), (3, "/v1/datasets/big/download")] {
        let mut statuses = Vec::new();
        for _ in 0..40 {
            let (stream, status) = stalled_http1(loopback(last), to, path).await;
            statuses.push(status);
            sockets.push(stream);
        }
        assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 16, "127.0.0.{last}: {statuses:?}");
        assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 24, "127.0.0.{last}: {statuses:?}");
    }
    let mut answers = Vec::new();
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let (a, s) = stalled_http2(loopback(5), to, rows, 60).await;
        answers.extend(a);
        statuses.extend(s);
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 16, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 164, "{statuses:?}");
    assert_eq!(metric(g, "kaifang_answers_in_flight").await, 64.0);
    Stalled { _sockets: sockets, _answers: answers }
}

/// Memory of the process's own (not file-backed pages of the binary, which count in VmRSS as its
/// code is first run).
pub(crate) fn anon_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("RssAnon:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

#[tokio::test]
async fn answers_nobody_reads_are_bounded_per_client_cut_when_stalled_and_do_not_hold_up_other_clients() {
    let settings = "[server]\nstalled_answer_seconds = 20\nmax_answers_per_client = 16\n\n\
                    [limits]\nanonymous_rate = { per_second = 100000, burst = 100000 }\n";
    let site = site_with_big_csv(settings, 1_000_000);
    let g = site.start();
    let (status, _) = g
        .admin(
            reqwest::Method::POST,
            "/admin/principals",
            Some(serde_json::json!({"id": "someone", "name": "Someone", "role": "user"})),
        )
        .await;
    assert_eq!(status, 201);
    let (status, issued) =
        g.admin(reqwest::Method::POST, "/admin/keys", Some(serde_json::json!({"principal": "someone"}))).await;
    assert_eq!(status, 201);
    let key = issued["key"].as_str().unwrap().to_owned();
    others_are_served(&g, &key).await;
    let before = anon_bytes(g.pid());

    let stalled = stall_answers(&g).await;
    assert_eq!(metric(&g, "kaifang_overload_refusals_total{protocol=\"http\",reason=\"client_answers\"}").await, 236.0);
    others_are_served(&g, &key).await;
    let peak = anon_bytes(g.pid());
    // Each answer holds at most what it reserves in the answer memory budget (8 MiB).
    assert!(
        peak < before + 64 * (8 << 20),
        "memory grew from {} MiB to {} MiB with 64 stalled answers",
        before >> 20,
        peak >> 20
    );

    // Past stalled_answer_seconds every stalled answer is cut and gives its place back.
    let deadline = Instant::now() + Duration::from_secs(40);
    while metric(&g, "kaifang_answers_in_flight").await > 0.0 {
        assert!(Instant::now() < deadline, "stalled answers were not cut");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(metric(&g, "kaifang_stalled_answers_cut_total").await >= 64.0);
    others_are_served(&g, &key).await;
    drop(stalled);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = anon_bytes(g.pid());

    // A second wave takes the same places again, in memory the first one gave back.
    let stalled = stall_answers(&g).await;
    let second = anon_bytes(g.pid());
    drop(stalled);
    println!(
        "memory: {} MiB before, {} MiB with 64 stalled answers, {} MiB after they were cut, {} MiB with 64 more",
        before >> 20,
        peak >> 20,
        after >> 20,
        second >> 20
    );
    // Not above the peak, give or take the allocator's noise from the calls made meanwhile (a
    // MiB has been seen), far less than one answer's reservation.
    assert!(
        after <= peak + (4 << 20),
        "memory rose to {} MiB after the answers were cut (peak {} MiB)",
        after >> 20,
        peak >> 20
    );
    // Within the budget still, and mostly in the memory the first wave left: not another wave's
    // worth. What the allocator gave back to the system after the cut (`peak - after`) the second
    // wave may take again; past that it adds less than half of what the first one took.
    assert!(second < before + 64 * (8 << 20), "a second wave took memory to {} MiB", second >> 20);
    assert!(
        second.saturating_sub(peak) < (peak - after) + (peak - before) / 2,
        "a second wave grew memory from {} MiB to {} MiB (the first took it from {} MiB, {} MiB of it \
         given back after the cut)",
        peak >> 20,
        second >> 20,
        before >> 20,
        (peak - after) >> 20
    );
}

#[tokio::test]
async fn when_the_answer_memory_budget_is_full_a_call_waits_briefly_then_gets_503_overloaded() {
    // Room for two streamed answers of 8 MiB in the streamed answers' share (18 of 24 MiB).
    let settings = "[server]\nanswer_memory_bytes = 25165824\nanswer_wait_ms = 300\nstalled_answer_seconds = 30\n";
    let site = site_with_big_csv(settings, 400_000);
    let g = site.start();
    let to = address(&g.base);
    let path = "/v1/datasets/big/rows?format=csv";
    let (_a, first) = stalled_http1(loopback(1), to, path).await;
    let (_b, second) = stalled_http1(loopback(2), to, path).await;
    assert_eq!((first, second), (200, 200));

    let started = Instant::now();
    let response = client().get(g.url(path)).send().await.unwrap();
    let waited = started.elapsed();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "overloaded");
    assert!(waited >= Duration::from_millis(300), "answered after {waited:?}, before answer_wait_ms");
    assert_eq!(metric(&g, "kaifang_overload_refusals_total{protocol=\"http\",reason=\"memory_budget\"}").await, 1.0);
    // Flight calls share the budget.
    let mut flight = arrow_flight::FlightClient::new(
        tonic::transport::Channel::from_shared(g.flight.clone()).unwrap().connect().await.unwrap(),
    );
    let refused = match flight.do_get(arrow_flight::Ticket::new("big")).await {
        Ok(_) => panic!("served"),
        Err(e) => e,
    };
    assert!(refused.to_string().contains("overloaded"), "{refused}");

    // Once an answer ends, its room is taken by the next call.
    drop(_a);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = client().get(g.url("/v1/datasets/big/rows?limit=3")).send().await.unwrap();
        if response.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the closed answer's room was not given back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_dataset_that_would_decode_past_the_whole_memory_budget_is_served_from_its_source() {
    // Room for two answers of 8 MiB; the file fits the cache's bytes, but decoded (held twice
    // while it is joined) it takes more than the budget could ever give one call.
    let settings = "[server]\nanswer_memory_bytes = 16777216\nanswer_wait_ms = 300\n";
    let site = site_with_big_csv_cached(settings, 400_000);
    let g = site.start();
    for _ in 0..2 {
        let response = client().get(g.url("/v1/datasets/big/rows?format=csv")).send().await.unwrap();
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
        let body = response.text().await.unwrap();
        assert_eq!(body.lines().count(), 400_001);
        assert_eq!(body.lines().last().unwrap(), "399999,name-00399999-padding-padding,406.25");
    }
    assert_eq!(metric(&g, "kaifang_overload_refusals_total").await, 0.0);
    assert_eq!(metric(&g, "kaifang_answers_in_flight").await, 0.0);
}

#[tokio::test]
async fn streamed_answers_filling_their_share_of_the_budget_leave_room_for_small_answers() {
    // 24 MiB: streamed answers (8 MiB each) may hold 18 MiB between them, so two at once; every
    // answer is admitted with 2 MiB, which a small answer from memory needs and no more.
    let settings = "[server]\nanswer_memory_bytes = 25165824\nanswer_wait_ms = 300\nstalled_answer_seconds = 30\n";
    let site =
        Site::with_settings(settings, &[("big", "csv", "big.csv", FIELDS), ("small", "csv", "small.csv", FIELDS)]);
    let mut text = String::from("id,name,value\n");
    for i in 0..400_000 {
        text.push_str(&format!("{i},name-{i:08}-padding-padding,{}.25\n", i % 977));
    }
    std::fs::write(site.data_dir.join("big.csv"), text).unwrap();
    std::fs::write(site.data_dir.join("small.csv"), "id,name,value\n1,one,1.5\n2,two,2.5\n3,three,3.5\n").unwrap();
    site.set_entry("big.csv", "cache = \"never\"");
    let g = site.start();
    let to = address(&g.base);
    let small = g.url("/v1/datasets/small/rows?limit=2");
    assert_eq!(client().get(&small).send().await.unwrap().status(), 200, "small is decoded into the cache");

    // Long answers nobody reads, from four addresses: two are streamed, the others refused.
    let mut stalled = Vec::new();
    let mut statuses = Vec::new();
    for last in 1..=4 {
        let (connection, status) = stalled_http1(loopback(last), to, "/v1/datasets/big/rows?format=csv").await;
        statuses.push(status);
        stalled.push(connection);
    }
    assert_eq!(statuses, vec![200, 200, 503, 503], "two streamed answers fit the streamed answers' share");

    // Small answers from memory are served at once all the same, again and again.
    for _ in 0..20 {
        let started = Instant::now();
        let response = client().get(&small).send().await.unwrap();
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
        assert!(started.elapsed() < Duration::from_millis(300), "a small answer waited for room");
    }
    assert_eq!(metric(&g, "kaifang_answers_in_flight").await, 2.0);
    drop(stalled);
}
