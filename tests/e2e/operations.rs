//! Running it in production: graceful shutdown, and protection against slow and too many
//! clients.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use serde_json::{json, Value};

use crate::fixture::{client, Gateway, Site};

/// A site with one unconditional CSV dataset `big` of about `bytes` bytes, and `settings`.
fn site_with_big_file(settings: &str, bytes: usize) -> (Site, usize) {
    let site = Site::with_settings(
        settings,
        &[("big", "csv", "big.csv", r#"[{ name = "n", type = "int64" }, { name = "text", type = "string" }]"#)],
    );
    let mut text = String::from("n,text\n");
    let mut n = 0;
    while text.len() < bytes {
        text.push_str(&format!("{n},row number {n} of the big file\n"));
        n += 1;
    }
    std::fs::write(site.data_dir.join("big.csv"), &text).unwrap();
    (site, text.len())
}

#[tokio::test]
async fn sigterm_lets_a_download_in_flight_finish_refuses_new_work_and_exits_zero() {
    let (site, size) = site_with_big_file("", 64 << 20);
    let mut g = Gateway::with_config(&site.config, &site.data_dir);
    let mut response = client().get(g.url("/v1/datasets/big/download")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let mut received = response.chunk().await.unwrap().unwrap().len();
    g.signal("TERM");
    // New connections are refused once the listeners close.
    let mut refused = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if TcpStream::connect(g.base.trim_start_matches("http://")).is_err() {
            refused = true;
            break;
        }
    }
    assert!(refused, "the listener still accepts connections after SIGTERM");
    // The download in flight goes on to its last byte, slowly.
    while let Some(chunk) = response.chunk().await.unwrap() {
        received += chunk.len();
        if received < size / 2 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    assert_eq!(received, size, "the download in flight is complete");
    let status = g.wait_exit(Duration::from_secs(20)).expect("the gateway exits once the download is done");
    assert!(status.success(), "exit status {status}");
    // Its last act: a record behind every other in the audit log, synced.
    let mut segments: Vec<_> = std::fs::read_dir(g.data_dir.join("audit"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "ndjson"))
        .collect();
    segments.sort();
    let log = std::fs::read_to_string(segments.last().unwrap()).unwrap();
    let last: Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    assert_eq!(
        (last["kind"].as_str(), last["note"].as_str()),
        (Some("checkpoint"), Some("the gateway stopped")),
        "{last}"
    );
}

#[tokio::test]
async fn a_slow_header_client_is_cut_off_at_the_configured_time_while_others_are_served() {
    let site = Site::with_settings("[server]\nheader_read_timeout_seconds = 1\n", &[]);
    let g = Gateway::with_config(&site.config, &site.data_dir);
    let address = g.base.trim_start_matches("http://").to_owned();
    let mut slow = TcpStream::connect(&address).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: kaifang\r\nX-Slow: ").unwrap();
    let started = Instant::now();
    let reader = std::thread::spawn(move || {
        slow.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = Vec::new();
        let read = slow.read_to_end(&mut buf);
        (started.elapsed(), read.map(|_| String::from_utf8_lossy(&buf).into_owned()))
    });
    // Meanwhile other clients are served as usual.
    for _ in 0..10 {
        let r = client().get(g.url("/healthz")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (elapsed, outcome) = tokio::task::spawn_blocking(move || reader.join().unwrap()).await.unwrap();
    let text = outcome.expect("the connection is closed, not left hanging");
    assert!(!text.contains("200 OK"), "a half-sent request is never answered: {text}");
    assert!(elapsed >= Duration::from_millis(900), "cut off after {elapsed:?}, before the configured second");
    assert!(elapsed < Duration::from_secs(5), "cut off only after {elapsed:?}");
}

#[tokio::test]
async fn connections_past_the_limit_wait_until_one_closes() {
    let site = Site::with_settings("[server]\nmax_connections = 2\n", &[]);
    let g = Gateway::with_config(&site.config, &site.data_dir);
    let address = g.base.trim_start_matches("http://").to_owned();
    // Two idle keep-alive connections hold both places.
    let mut held: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(&address).unwrap()).collect();
    for connection in &mut held {
        connection.write_all(b"GET /healthz HTTP/1.1\r\nHost: kaifang\r\n\r\n").unwrap();
        let mut buf = [0u8; 512];
        let n = connection.read(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    }
    crate::fixture::tls_provider();
    let quick = reqwest::Client::builder().timeout(Duration::from_millis(1500)).build().unwrap();
    let e = quick.get(g.url("/healthz")).send().await.unwrap_err();
    assert!(e.is_timeout(), "a third connection waits: {e}");
    drop(held.pop());
    let r = client().get(g.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200, "served once a place is free");
}

/// The catalog entry of a one-column CSV dataset `id` at `file`.
fn entry(id: &str, file: &str) -> String {
    format!(
        "[[datasets]]\nid = \"{id}\"\ntitle = \"{id}\"\nowner = \"Test Bureau\"\nopen_type = \"unconditional\"\n\
         format = \"csv\"\nupdate_frequency = \"daily\"\nlast_updated = \"2025-01-01T00:00:00Z\"\n\
         license = \"CC-BY-4.0\"\nsource = {{ file = \"{file}\" }}\nfields = [{{ name = \"n\", type = \"int64\" }}]\n\n"
    )
}

async fn reload(g: &Gateway) -> (u16, Value) {
    g.admin(reqwest::Method::POST, "/admin/reload", None).await
}

#[tokio::test]
async fn reload_changes_catalog_and_limits_under_load_without_failing_a_request_or_cutting_a_stream() {
    let (site, size) =
        site_with_big_file("[limits]\nanonymous_rate = { per_second = 100000, burst = 100000 }\n", 48 << 20);
    std::fs::write(site.data_dir.join("small.csv"), "n\n1\n2\n3\n").unwrap();
    let original = std::fs::read_to_string(&site.config).unwrap() + &entry("small", "small.csv");
    std::fs::write(&site.config, &original).unwrap();
    let g = Gateway::with_config(&site.config, &site.data_dir);

    // A download in flight, read slowly, and continuous load on other connections.
    let mut download = client().get(g.url("/v1/datasets/big/download")).send().await.unwrap();
    assert_eq!(download.status(), 200);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (url, stop) = (g.url("/v1/datasets/small/rows?format=csv"), stop.clone());
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0, Vec::new());
            let client = client();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match client.get(&url).send().await {
                    Ok(r) if r.status() == 200 => match r.text().await {
                        Ok(t) if t == "n\n1\n2\n3\n" => ok += 1,
                        other => failed.push(format!("{other:?}")),
                    },
                    other => failed.push(format!("{other:?}")),
                }
            }
            (ok, failed)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A new dataset and a tighter anonymous rate, by the admin API.
    std::fs::write(site.data_dir.join("added.csv"), "n\n7\n").unwrap();
    let changed = original.replace("per_second = 100000, burst = 100000", "per_second = 100000, burst = 99999")
        + &entry("added", "added.csv");
    std::fs::write(&site.config, &changed).unwrap();
    let (status, body) = reload(&g).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["datasets"], 3);
    assert_eq!(body["restart_required"], json!([]));
    let r = client().get(g.url("/v1/datasets/added/rows?format=csv")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["ratelimit-policy"], "\"anonymous\";q=99999;w=1", "the new rate applies");
    assert_eq!(r.text().await.unwrap(), "n\n7\n");

    // And away again, by SIGHUP.
    std::fs::write(&site.config, &original).unwrap();
    g.signal("HUP");
    let mut gone = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if client().get(g.url("/v1/datasets/added")).send().await.unwrap().status() == 404 {
            gone = true;
            break;
        }
    }
    assert!(gone, "SIGHUP did not reload the catalog");

    let mut received = download.chunk().await.unwrap().map_or(0, |c| c.len());
    while let Some(chunk) = download.chunk().await.unwrap() {
        received += chunk.len();
    }
    assert_eq!(received, size, "the download in flight completed across both reloads");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = load.await.unwrap();
    assert!(
        failed.is_empty(),
        "{} requests failed during the reloads: {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    assert!(ok > 10, "the load made only {ok} requests");
}

#[tokio::test]
async fn an_invalid_reload_is_refused_with_its_errors_and_the_running_configuration_goes_on() {
    let site = Site::new(&[]);
    std::fs::write(site.data_dir.join("small.csv"), "n\n1\n").unwrap();
    let original = std::fs::read_to_string(&site.config).unwrap() + &entry("small", "small.csv");
    std::fs::write(&site.config, &original).unwrap();
    let g = Gateway::with_config(&site.config, &site.data_dir);
    let broken =
        original.replace("[upstream]", "[upstream]\nconect_timeout_seconds = 3") + &entry("small", "other.csv");
    std::fs::write(&site.config, &broken).unwrap();
    let (status, body) = reload(&g).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_config");
    let errors: Vec<&str> = body["error"]["errors"].as_array().unwrap().iter().map(|e| e.as_str().unwrap()).collect();
    assert!(errors.iter().any(|e| e.contains("kaifang.toml:") && e.contains("conect_timeout_seconds")), "{errors:?}");
    assert!(errors.iter().any(|e| e.contains("small")), "the duplicate id is named too: {errors:?}");
    // SIGHUP with the same file: refused too, and the gateway keeps serving what it had.
    g.signal("HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = client().get(g.url("/v1/datasets/small/rows?format=csv")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "n\n1\n");
    let (status, _) = crate::fixture::get_json(&g.url("/readyz")).await;
    assert_eq!(status, 200);
    // Without the operator token nothing is reloaded at all.
    let r = client().post(format!("{}/admin/reload", g.admin)).send().await.unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn a_reload_applies_changed_agreement_terms_at_the_next_request() {
    // The demo configuration, as files the test can edit.
    let dir = tempfile::tempdir().unwrap();
    let config = crate::fixture::copy_shipped_config(dir.path());
    let demo = std::fs::read_to_string(&config).unwrap();
    let data_dir = dir.path().join("data");
    let out = std::process::Command::new(crate::fixture::BIN)
        .args(["demo-data", "--rows", "200", "--out", data_dir.join("demo").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let g = Gateway::with_config(&config, &data_dir);
    let key = std::process::Command::new(crate::fixture::BIN)
        .args(["keys", "issue", "--principal", "demo-analytics", "--config", config.to_str().unwrap()])
        .args(["--data-dir", data_dir.to_str().unwrap()])
        .output()
        .unwrap();
    let key = String::from_utf8(key.stdout).unwrap().trim().to_owned();
    let columns = |key: String| {
        let url = g.url("/v1/datasets/enterprises/rows?limit=1");
        async move {
            let rows: Value = client().get(url).bearer_auth(key).send().await.unwrap().json().await.unwrap();
            rows[0].as_object().unwrap().keys().cloned().collect::<Vec<_>>()
        }
    };
    assert!(columns(key.clone()).await.contains(&"legal_rep_mobile".to_owned()));
    // The declared agreement loses the mobile column.
    let narrowed = demo.replace(
        "\"legal_rep_name\", \"legal_rep_id_card\", \"legal_rep_mobile\",",
        "\"legal_rep_name\", \"legal_rep_id_card\",",
    );
    assert_ne!(narrowed, demo, "the demo agreement's columns were found");
    std::fs::write(&config, narrowed.replace(", legal_rep_mobile = \"cn_mobile\"", "")).unwrap();
    let (status, body) = reload(&g).await;
    assert_eq!(status, 200, "{body}");
    assert!(!columns(key.clone()).await.contains(&"legal_rep_mobile".to_owned()), "the narrower scope applies at once");
    let r = client()
        .get(g.url("/v1/datasets/enterprises/rows?columns=legal_rep_mobile"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn a_request_head_past_the_size_limit_is_refused_and_others_are_served() {
    let site = Site::with_settings("[server]\nmax_header_bytes = 8192\n", &[]);
    let g = Gateway::with_config(&site.config, &site.data_dir);
    let outcome = client().get(g.url("/healthz")).header("x-padding", "p".repeat(16 << 10)).send().await;
    match outcome {
        Ok(r) => assert_eq!(r.status(), 431, "an oversized head"),
        Err(e) => assert!(!e.is_connect() && !e.is_timeout(), "refused, not unreachable: {e}"),
    }
    let r = client().get(g.url("/healthz")).header("x-padding", "p".repeat(4 << 10)).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn json_logs_carry_the_request_id_on_every_line_of_a_request() {
    use std::io::BufRead;
    let site = Site::new(&[]);
    // Past the first batches of 8,192 rows, a value that is not a number.
    let mut text = String::from("n\n");
    for n in 0..30_000 {
        text.push_str(&format!("{n}\n"));
    }
    text.push_str("not a number\n");
    std::fs::write(site.data_dir.join("broken.csv"), text).unwrap();
    std::fs::write(&site.config, std::fs::read_to_string(&site.config).unwrap() + &entry("broken", "broken.csv"))
        .unwrap();
    let log = site.data_dir.join("kaifang.log");
    let mut child = std::process::Command::new(crate::fixture::BIN)
        .args(["serve", "--config", site.config.to_str().unwrap(), "--data-dir", site.data_dir.to_str().unwrap()])
        .args(["--http", "127.0.0.1:0", "--flight", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--log-format", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let base = stdout
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("kaifang: http listening on ").map(|a| format!("http://{a}")))
        .unwrap();
    // A source that fails midway: the warning logged while the body streams has the id too.
    let r = client()
        .get(format!("{base}/v1/datasets/broken/rows?format=csv"))
        .header("x-request-id", "trace-7")
        .send()
        .await;
    if let Ok(r) = r {
        let _ = r.bytes().await;
    }
    let generated = client().get(format!("{base}/healthz")).header("x-request-id", "bad id!").send().await.unwrap();
    let generated = generated.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(generated.len(), 36, "a malformed id is replaced by a UUID: {generated}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = child.kill();
    let _ = child.wait();
    let lines: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let of = |id: &str| lines.iter().filter(|l| l["span"]["request_id"] == id).collect::<Vec<_>>();
    let traced = of("trace-7");
    assert!(traced.iter().any(|l| l["fields"]["message"] == "request"), "{traced:?}");
    assert!(
        traced.iter().any(|l| l["level"] == "WARN"),
        "the mid-stream failure is logged under the request: {lines:?}"
    );
    assert_eq!(of(&generated).len(), 1, "{lines:?}");
}

/// How long after `started` the peer closes `connection`, reading (and dropping) what it sends
/// meanwhile; `None` if it is still open after `limit` (give or take one read's wait).
fn time_until_closed(mut connection: TcpStream, started: Instant, limit: Duration) -> Option<Duration> {
    connection.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match connection.read(&mut buf) {
            Ok(0) => return Some(started.elapsed()),
            // A peer that keeps answering (pings, say) and never closes.
            Ok(_) if started.elapsed() > limit => return None,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Some(started.elapsed()),
            Err(_) => return None,
        }
    }
}

#[tokio::test]
async fn silent_and_idle_connections_are_closed_on_every_listener_while_calls_in_flight_are_not() {
    let (site, size) =
        site_with_big_file("[server]\nheader_read_timeout_seconds = 1\nidle_timeout_seconds = 2\n", 8 << 20);
    let g = Gateway::with_config(&site.config, &site.data_dir);
    let http = g.base.trim_start_matches("http://").to_owned();
    let admin = g.admin.trim_start_matches("http://").to_owned();
    let flight = g.flight.trim_start_matches("http://").to_owned();

    // Connections that never start a request: silent ones on every listener, one that sends
    // half an HTTP/2 preface, and one that opens HTTP/2 and then only sends pings, every 300 ms.
    // Each is closed one or two seconds after it was accepted (bytes heard buy one more second).
    let mut silent = Vec::new();
    {
        let started = Instant::now();
        let mut connection = TcpStream::connect(&http).unwrap();
        connection.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0").unwrap();
        let mut pinger = connection.try_clone().unwrap();
        std::thread::spawn(move || {
            let ping = b"\0\0\x08\x06\0\0\0\0\0kaifang!";
            while pinger.write_all(ping).is_ok() {
                std::thread::sleep(Duration::from_millis(300));
            }
        });
        let waiting = std::thread::spawn(move || time_until_closed(connection, started, Duration::from_secs(10)));
        silent.push(("http/2, pings only", waiting));
    }
    for (name, address, first_bytes) in [
        ("http", &http, &b""[..]),
        ("http, half a preface", &http, &b"PRI * HTTP/2.0\r\n"[..]),
        ("admin", &admin, &b""[..]),
        ("flight", &flight, &b""[..]),
    ] {
        let started = Instant::now();
        let mut connection = TcpStream::connect(address).unwrap();
        connection.write_all(first_bytes).unwrap();
        let waiting = std::thread::spawn(move || time_until_closed(connection, started, Duration::from_secs(10)));
        silent.push((name, waiting));
    }
    // Meanwhile others are served.
    for _ in 0..5 {
        assert_eq!(client().get(g.url("/healthz")).send().await.unwrap().status(), 200);
    }
    for (name, waiting) in silent {
        let closed = tokio::task::spawn_blocking(move || waiting.join().unwrap()).await.unwrap();
        let closed = closed.unwrap_or_else(|| panic!("{name}: a silent connection is still open after 10 s"));
        assert!(closed >= Duration::from_millis(900), "{name}: closed after {closed:?}, before the configured second");
        assert!(closed < Duration::from_secs(4), "{name}: closed only after {closed:?}");
    }

    // An HTTP/2 connection: a download read slowly for longer than the idle limit completes;
    // once it is over, the connection is closed after the idle limit.
    let tcp = tokio::net::TcpStream::connect(&http).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    let (ended_tx, ended) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let _ = connection.await;
        let _ = ended_tx.send(Instant::now());
    });
    let request = hyper::Request::get(g.url("/v1/datasets/big/download"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let started = Instant::now();
    let mut body = response.into_body();
    let mut received = 0;
    while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
        if let Ok(data) = frame.unwrap().into_data() {
            received += data.len();
            if started.elapsed() < Duration::from_secs(3) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let finished = Instant::now();
    assert!(finished - started >= Duration::from_secs(3), "the download was read for longer than the idle limit");
    assert_eq!(received, size, "the download in flight is not cut for idleness");
    let ended =
        tokio::time::timeout(Duration::from_secs(10), ended).await.expect("the idle connection is closed").unwrap();
    let idle = ended - finished;
    // The gateway's clock starts when it has handed over the last bytes, a little before the
    // client has read them.
    assert!(idle >= Duration::from_millis(1500), "closed {idle:?} after its last call, before the idle limit");
    assert!(idle < Duration::from_secs(5), "closed only {idle:?} after its last call");

    // A Flight answer read slowly for longer than the idle limit is not cut either; and the
    // client whose idle connection was closed carries on: its channel connects again.
    let mut flights = crate::flight::connect(&g, None).await;
    let mut stream = flights.do_get(arrow_flight::Ticket::new("big")).await.unwrap();
    let (started, mut rows) = (Instant::now(), 0);
    while let Some(batch) = stream.try_next().await.unwrap() {
        rows += batch.num_rows();
        if started.elapsed() < Duration::from_secs(3) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert!(started.elapsed() >= Duration::from_secs(3), "the Flight answer was read for longer than the idle limit");
    let lines = std::fs::read_to_string(site.data_dir.join("big.csv")).unwrap().lines().count();
    assert_eq!(rows, lines - 1, "the Flight answer in flight is not cut for idleness");
    for call in ["first", "after the idle close"] {
        let listed: Vec<_> = flights.list_flights("").await.unwrap().try_collect().await.unwrap();
        assert_eq!(listed.len(), 1, "the {call} call is served");
        tokio::time::sleep(Duration::from_secs(3)).await;
    }

    // Counted by listener: the silent ones before a first request; the HTTP/2 connection and
    // both of the Flight client's connections (it connected again after the first was closed)
    // for idleness. HTTP/1.1 keep-alive connections are closed by the header timeout first, and
    // are not counted. Open: the admin connection of the scrape only. Scraped until the counts
    // settle, since the last close may still be under way on a busy machine.
    let expected = vec![3.0, 1.0, 1.0, 0.0, 1.0, 2.0, 0.0, 1.0, 0.0];
    let names = "http first_request, http idle, admin first_request, admin idle, flight first_request, \
                 flight idle; open http, admin, flight";
    let started = Instant::now();
    loop {
        let s = crate::metrics::samples(&crate::metrics::scrape(&g).await);
        let closed = |listener: &str, phase: &str| {
            let series = format!(r#"kaifang_idle_connections_closed_total{{listener="{listener}",phase="{phase}"}}"#);
            crate::metrics::value(&s, &series)
        };
        let open =
            |listener: &str| crate::metrics::value(&s, &format!(r#"kaifang_connections{{listener="{listener}"}}"#));
        let mut counts: Vec<f64> =
            ["http", "admin", "flight"].iter().flat_map(|l| [closed(l, "first_request"), closed(l, "idle")]).collect();
        counts.extend(["http", "admin", "flight"].map(open));
        if counts == expected || started.elapsed() > Duration::from_secs(10) {
            assert_eq!(counts, expected, "{names}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
