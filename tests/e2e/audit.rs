//! The audit log of conditional data: one record set per call, durable, tamper-evident.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::fixture::{client, Gateway, BIN};

/// The audit records the admin API exports for `query` (`dataset=...` and the like), by request
/// id.
pub async fn records(g: &Gateway, query: &str) -> HashMap<String, Vec<Value>> {
    let r = client().get(format!("{}/admin/audit?{query}", g.admin)).bearer_auth(g.admin_token()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    let mut by_request: HashMap<String, Vec<Value>> = HashMap::new();
    for line in r.text().await.unwrap().lines() {
        let record: Value = serde_json::from_str(line).unwrap();
        if let Some(id) = record["request_id"].as_str() {
            by_request.entry(id.to_owned()).or_default().push(record);
        }
    }
    by_request
}

fn kinds(records: &[Value]) -> Vec<&str> {
    records.iter().map(|r| r["kind"].as_str().unwrap()).collect()
}

async fn call(g: &Gateway, path: &str, key: Option<&str>, request_id: &str) -> (u16, usize) {
    let mut request = client().get(g.url(path)).header("x-request-id", request_id).header("user-agent", "audit-test/1");
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let r = request.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.bytes().await.unwrap().len())
}

fn verify(data_dir: &std::path::Path) -> (bool, String) {
    let out = Command::new(BIN).args(["audit", "verify", "--data-dir", data_dir.to_str().unwrap()]).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[tokio::test]
async fn every_conditional_call_leaves_exactly_one_complete_set_of_records() {
    let g = Gateway::demo();
    let key = g.demo_key();
    let served = [
        ("/v1/datasets/enterprises/rows?format=json&filter=status%20%3D%20%27active%27", "rows"),
        ("/v1/datasets/enterprises/rows?format=csv&columns=uscc,legal_rep_mobile", "rows"),
        ("/v1/datasets/enterprises/rows?format=arrow&limit=7", "rows"),
        ("/v1/datasets/enterprises/preview", "preview"),
    ];
    let mut expected = Vec::new();
    for (i, (path, operation)) in served.iter().enumerate() {
        let id = format!("served-{i}");
        let (status, bytes) = call(&g, path, Some(&key), &id).await;
        assert_eq!(status, 200);
        expected.push((id, *operation, bytes));
    }
    let refused = [
        ("/v1/datasets/enterprises/rows", None, 401),
        ("/v1/datasets/enterprises/rows", Some("kf_0000000000000000_00"), 401),
        ("/v1/datasets/enterprises/rows?columns=registered_capital", Some(key.as_str()), 403),
        ("/v1/datasets/enterprises/download", Some(key.as_str()), 403),
        ("/v1/datasets/enterprises/rows?filter=name%20%3D", Some(key.as_str()), 400),
    ];
    for (i, (path, key, status)) in refused.iter().enumerate() {
        assert_eq!(call(&g, path, *key, &format!("refused-{i}")).await.0, *status, "{path}");
    }
    // Unconditional data is not recorded call by call.
    assert_eq!(call(&g, "/v1/datasets/bus-arrivals/rows?limit=1", None, "open-0").await.0, 200);

    let log = records(&g, "dataset=enterprises").await;
    for (id, operation, bytes) in expected {
        let set = &log[&id];
        assert_eq!(kinds(set), vec!["intent", "completion"], "{id}");
        let (intent, completion) = (&set[0], &set[1]);
        assert_eq!(intent["principal"], "demo-analytics");
        assert_eq!(intent["agreement"], "demo-enterprises");
        assert_eq!(intent["key_id"].as_str().unwrap(), key.split('_').nth(1).unwrap());
        assert!(!serde_json::to_string(intent).unwrap().contains(&key), "the secret never reaches the log");
        assert_eq!(intent["operation"], operation);
        assert_eq!(intent["user_agent"], "audit-test/1");
        assert_eq!(intent["client"], "127.0.0.1");
        assert!(intent["dataset_version"].as_str().is_some());
        assert_eq!(completion["status"], 200);
        assert_eq!(completion["outcome"], "complete");
        assert_eq!(completion["bytes"], bytes as u64, "{id}: bytes counted are bytes sent");
    }
    assert_eq!(log["served-0"][0]["filter"], "\"status\" = 'active'");
    assert_eq!(log["served-1"][0]["columns"], json!(["uscc", "legal_rep_mobile"]));
    assert_eq!(log["served-1"][0]["masks"], json!({"legal_rep_mobile": "cn_mobile"}));
    assert_eq!(log["served-2"][1]["rows"], 7);
    assert_eq!(log["served-3"][1]["rows"], 20);
    for (i, (_, _, status)) in refused.iter().enumerate() {
        let set = &log[&format!("refused-{i}")];
        assert_eq!(kinds(set), vec!["unserved"]);
        assert_eq!((set[0]["status"].as_u64(), set[0]["outcome"].as_str()), (Some(*status as u64), Some("refused")));
    }
    assert!(!log.contains_key("open-0"));
    let (ok, report) = verify(&g.data_dir);
    assert!(ok, "{report}");
}

#[tokio::test]
async fn trace_names_who_received_a_dataset() {
    let g = Gateway::demo();
    let key = g.demo_key();
    for i in 0..3 {
        assert_eq!(call(&g, "/v1/datasets/enterprises/rows?limit=5", Some(&key), &format!("t{i}")).await.0, 200);
    }
    call(&g, "/v1/datasets/enterprises/rows", None, "anonymous").await;
    let (status, trace) =
        g.admin(Method::GET, "/admin/datasets/enterprises/trace?since=2020-01-01T00:00:00Z", None).await;
    assert_eq!(status, 200);
    let recipients = trace["recipients"].as_array().unwrap();
    assert_eq!(recipients.len(), 1, "{trace}");
    assert_eq!(
        (recipients[0]["principal"].as_str(), recipients[0]["agreement"].as_str()),
        (Some("demo-analytics"), Some("demo-enterprises"))
    );
    assert_eq!((recipients[0]["calls"].as_u64(), recipients[0]["rows"].as_u64()), (Some(3), Some(15)));
    let (_, none) = g.admin(Method::GET, "/admin/datasets/enterprises/trace?until=2020-01-01T00:00:00Z", None).await;
    assert_eq!(none["recipients"], json!([]));

    let out = Command::new(BIN)
        .args([
            "audit",
            "trace",
            "--dataset",
            "enterprises",
            "--format",
            "json",
            "--data-dir",
            g.data_dir.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let cli: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cli["recipients"], trace["recipients"]);
    let table = Command::new(BIN)
        .args(["audit", "trace", "--dataset", "enterprises", "--data-dir", g.data_dir.to_str().unwrap()])
        .output()
        .unwrap();
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(table.lines().nth(1).unwrap().starts_with("demo-analytics"), "{table}");
}

#[tokio::test]
async fn verify_names_the_first_edited_deleted_inserted_or_reordered_record() {
    let g = Gateway::demo();
    let key = g.demo_key();
    for i in 0..4 {
        call(&g, "/v1/datasets/enterprises/rows?limit=2", Some(&key), &format!("v{i}")).await;
    }
    let (ok, report) = verify(&g.data_dir);
    assert!(ok && report.contains("8 records verified"), "{report}");
    let segment = std::fs::read_dir(g.data_dir.join("audit"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "ndjson"))
        .unwrap();
    let original = std::fs::read_to_string(&segment).unwrap();
    let lines: Vec<&str> = original.lines().collect();
    let tamper = |make: &dyn Fn(&mut Vec<String>), expected: &str| {
        let copy = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(copy.path().join("audit")).unwrap();
        let mut changed: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        make(&mut changed);
        std::fs::write(copy.path().join("audit").join(segment.file_name().unwrap()), changed.join("\n") + "\n")
            .unwrap();
        let (ok, report) = verify(copy.path());
        assert!(!ok, "tampering went unnoticed: {expected}");
        assert!(report.contains(expected), "expected `{expected}` in: {report}");
    };
    tamper(
        &|l| l[3] = l[3].replace("\"rows\":2", "\"rows\":1"),
        "line 4 (seq 4): its content does not match its hash (edited)",
    );
    tamper(
        &|l| {
            l.remove(2);
        },
        "line 3 (seq 4): record 3 is missing",
    );
    tamper(
        &|l| {
            let copy = l[1].clone();
            l.insert(2, copy);
        },
        "line 3 (seq 2): seq 2 comes after 2",
    );
    tamper(&|l| l.swap(4, 5), "line 5 (seq 6): record 5 is missing");
    tamper(
        &|l| {
            let last = l.len() - 1;
            l[last].truncate(40);
        },
        "line 8: the line is not an audit record",
    );
}

/// The audit segment files of a data directory, in order.
fn segment_files(data_dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(data_dir.join("audit"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "ndjson"))
        .collect();
    files.sort();
    files
}

/// A copy of a log's lines as one segment in a data directory of its own, with `anchor` as its
/// `anchor.json`; the verification's success and report.
fn verify_copy(first_seq: u64, lines: &[String], anchor: Option<Value>) -> (bool, String) {
    let copy = tempfile::tempdir().unwrap();
    let dir = copy.path().join("audit");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("segment-{first_seq:012}.ndjson")), lines.join("\n") + "\n").unwrap();
    if let Some(anchor) = anchor {
        std::fs::write(dir.join("anchor.json"), anchor.to_string()).unwrap();
    }
    verify(copy.path())
}

/// A record's hash, as its line states it.
fn hash_of(line: &str) -> String {
    serde_json::from_str::<Value>(line).unwrap()["hash"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_forged_anchor_hides_no_record_edited_in_place() {
    let g = Gateway::demo();
    let key = g.demo_key();
    for i in 0..4 {
        call(&g, "/v1/datasets/enterprises/rows?limit=2", Some(&key), &format!("f{i}")).await;
    }
    let lines: Vec<String> =
        std::fs::read_to_string(&segment_files(&g.data_dir)[0]).unwrap().lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 8);
    let mut edited = lines.clone();
    edited[1] = edited[1].replace("\"rows\":2", "\"rows\":1");
    assert_ne!(edited[1], lines[1]);
    let forged = json!({"seq": 100, "hash": "ab".repeat(32)});

    // Record 2 edited, and an anchor claiming everything up to seq 100 was removed: the records
    // present are checked all the same.
    let (ok, report) = verify_copy(1, &edited, Some(forged.clone()));
    assert!(!ok, "an edited record went unnoticed behind a forged anchor: {report}");
    assert!(report.contains("line 2 (seq 2): its content does not match its hash (edited)"), "{report}");
    // Nothing edited: the anchor itself claims records that are present.
    let (ok, report) = verify_copy(1, &lines, Some(forged));
    assert!(!ok, "an anchor past the end of the log went unnoticed: {report}");
    assert!(
        report.contains("anchor.json line 1 (seq 100): the anchor says records up to seq 100 were removed"),
        "{report}"
    );
    // An anchor at seq 4 with record 4's hash, every record still present (retention stopped
    // between writing the anchor and removing the segment): all eight are checked.
    let at_4 = json!({"seq": 4, "hash": hash_of(&lines[3])});
    let (ok, report) = verify_copy(1, &lines, Some(at_4.clone()));
    assert!(ok && report.contains("8 records verified, last seq 8"), "{report}");
    let (ok, report) = verify_copy(1, &edited, Some(at_4));
    assert!(!ok && report.contains("(seq 2): its content does not match its hash (edited)"), "{report}");
    // An anchor whose hash is not its record's.
    let (ok, report) = verify_copy(1, &lines, Some(json!({"seq": 4, "hash": hash_of(&lines[2])})));
    assert!(!ok && report.contains("(seq 4): the anchor names seq 4 with another hash"), "{report}");
}

#[tokio::test]
async fn a_retention_anchor_still_verifies_and_verify_says_what_it_could_not_check() {
    // Every record older than now is past retention, and each commit closes its segment: on a
    // restart, retention removes every segment but the one being written.
    let (_dir, config, data_dir) = crate::workflows::platform("\n[audit]\nretention_days = 0\nsegment_bytes = 1\n");
    let g = Gateway::with_config(&config, &data_dir);
    let big = json!({"requests_per_day": 1000, "rows_per_day": 1_000_000, "bytes_per_day": 1_000_000_000});
    let (key, _) = crate::agreements::holder(&g, "acme", json!({"per_second": 100, "burst": 100}), big).await;
    for i in 0..2 {
        assert_eq!(call(&g, "/v1/datasets/enterprises/rows?limit=2", Some(&key), &format!("old{i}")).await.0, 200);
    }
    let (ok, report) = verify(&data_dir);
    assert!(ok && report.contains("4 records verified, last seq 4"), "{report}");
    assert!(!report.contains("removed by retention"), "{report}");

    let g = g.restart();
    let current = data_dir.join("audit").join("segment-000000000005.ndjson");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while segment_files(&data_dir) != vec![current.clone()] {
        assert!(std::time::Instant::now() < deadline, "retention did not run: {:?}", segment_files(&data_dir));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for i in 0..2 {
        assert_eq!(call(&g, "/v1/datasets/enterprises/rows?limit=2", Some(&key), &format!("new{i}")).await.0, 200);
    }
    let (ok, report) = verify(&data_dir);
    assert!(ok, "{report}");
    assert!(report.contains("4 records verified, last seq 8"), "{report}");
    assert!(report.contains("records 1 to 4, removed by retention"), "what could not be checked is said: {report}");

    // The same log with record 6 edited, or with the anchor moved past its end, fails.
    let mut lines = Vec::new();
    for file in segment_files(&data_dir) {
        lines.extend(std::fs::read_to_string(file).unwrap().lines().map(str::to_owned));
    }
    assert_eq!(lines.len(), 4);
    let anchor: Value = serde_json::from_slice(&std::fs::read(data_dir.join("audit/anchor.json")).unwrap()).unwrap();
    assert_eq!(anchor["seq"], 4, "{anchor}");
    let (ok, report) = verify_copy(5, &lines, Some(anchor.clone()));
    assert!(ok && report.contains("4 records verified, last seq 8"), "{report}");
    let mut edited = lines.clone();
    edited[1] = edited[1].replace("\"rows\":2", "\"rows\":1");
    assert_ne!(edited[1], lines[1]);
    let (ok, report) = verify_copy(5, &edited, Some(anchor.clone()));
    assert!(!ok && report.contains("line 2 (seq 6): its content does not match its hash (edited)"), "{report}");
    let (ok, report) = verify_copy(5, &lines, Some(json!({"seq": 100, "hash": anchor["hash"]})));
    assert!(!ok && report.contains("the anchor says records up to seq 100 were removed"), "{report}");
}

#[tokio::test]
async fn a_torn_last_record_is_cut_off_on_start_and_the_chain_goes_on() {
    let mut g = Gateway::demo_process();
    let key = g.demo_key();
    call(&g, "/v1/datasets/enterprises/rows?limit=2", Some(&key), "before").await;
    g.kill();
    let segment = std::fs::read_dir(g.data_dir.join("audit"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "ndjson"))
        .unwrap();
    let mut text = std::fs::read(&segment).unwrap();
    text.extend_from_slice(b"{\"seq\":3,\"prev\":\"ab12");
    std::fs::write(&segment, &text).unwrap();
    assert!(!verify(&g.data_dir).0, "a torn record fails verification until repaired");
    let g = g.restart();
    call(&g, "/v1/datasets/enterprises/rows?limit=2", Some(&key), "after").await;
    let (ok, report) = verify(&g.data_dir);
    assert!(ok && report.contains("4 records verified"), "{report}");
}

#[tokio::test]
async fn an_audit_log_that_cannot_write_stops_conditional_data_only_and_recovers() {
    let g = Gateway::demo_process();
    let key = g.demo_key();
    let conditional = "/v1/datasets/enterprises/rows?limit=1";
    assert_eq!(call(&g, conditional, Some(&key), "ok-before").await.0, 200);
    // No file of the process may grow past one byte now: every audit write fails (EFBIG).
    let limit = |value: &str| g.limit_file_size(value);
    limit("1:unlimited");
    let r = client().get(g.url(conditional)).bearer_auth(&key).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "audit_unavailable");
    assert_eq!(
        call(&g, "/v1/datasets/bus-arrivals/rows?limit=1", None, "open").await.0,
        200,
        "unconditional data keeps flowing"
    );
    let (status, ready) = crate::fixture::get_json(&g.url("/readyz")).await;
    assert_eq!(status, 503);
    assert!(ready["checks"]["audit"].as_str().unwrap().starts_with("not writable"), "{ready}");

    limit("unlimited:unlimited");
    let mut recovered = false;
    for _ in 0..50 {
        if crate::fixture::get_json(&g.url("/readyz")).await.0 == 200 {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "readyz did not recover within 5 s of the disk taking writes again");
    assert_eq!(call(&g, conditional, Some(&key), "ok-after").await.0, 200);
    let log = records(&g, "dataset=enterprises").await;
    assert_eq!(kinds(&log["ok-after"]), vec!["intent", "completion"]);
    let (ok, report) = verify(&g.data_dir);
    assert!(ok, "no half-written record is left behind by the failed writes: {report}");
}

#[tokio::test]
async fn a_crash_under_load_loses_no_record_of_a_response_received_in_full() {
    let mut g = Gateway::demo_process();
    let (key, _) = crate::agreements::holder(
        &g,
        "load",
        json!({"per_second": 100000, "burst": 100000}),
        json!({"requests_per_day": 10_000_000, "rows_per_day": 10_000_000_000u64, "bytes_per_day": 10_000_000_000_000u64}),
    )
    .await;
    let url = g.url("/v1/datasets/enterprises/rows?format=csv");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut clients = Vec::new();
    for worker in 0..6 {
        let (url, key, stop, done) = (url.clone(), key.clone(), stop.clone(), done.clone());
        clients.push(tokio::spawn(async move {
            let mut complete = Vec::new();
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let id = format!("w{worker}-{n}");
                let Ok(r) = client().get(&url).bearer_auth(&key).header("x-request-id", &id).send().await else {
                    break;
                };
                if r.status() != 200 {
                    continue;
                }
                // Received in full means the body ended cleanly.
                if r.bytes().await.is_ok() {
                    complete.push(id);
                    done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
            complete
        }));
    }
    // Crash once the load is well under way: after at least 30 complete responses (however long
    // a busy machine takes to get there), with more in flight.
    for _ in 0..600 {
        if done.load(std::sync::atomic::Ordering::Relaxed) >= 30 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    g.kill();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut received = Vec::new();
    for c in clients {
        received.extend(c.await.unwrap());
    }
    assert!(received.len() > 20, "the load produced only {} complete responses", received.len());

    let g = g.restart();
    let (ok, report) = verify(&g.data_dir);
    assert!(ok, "{report}");
    let log = records(&g, "principal=load").await;
    for id in &received {
        let set = log.get(id).unwrap_or_else(|| panic!("{id} was received in full but has no record"));
        assert_eq!(kinds(set), vec!["intent", "completion"], "{id}");
        assert_eq!(set[1]["outcome"], "complete", "{id}");
    }
}

#[tokio::test]
async fn unconditional_traffic_is_counted_in_metrics_not_recorded() {
    let g = Gateway::demo();
    let mut sent = 0;
    for i in 0..3 {
        let (status, bytes) = call(&g, "/v1/datasets/bus-arrivals/rows?limit=5", None, &format!("m{i}")).await;
        assert_eq!(status, 200);
        sent += bytes;
    }
    let (status, error_bytes) = call(&g, "/v1/datasets/bus-arrivals/rows?filter=nope", None, "bad").await;
    assert_eq!(status, 400);
    let samples = crate::metrics::samples(&crate::metrics::scrape(&g).await);
    let value = |key: &str| crate::metrics::value(&samples, key);
    let requests = |class: &str| {
        value(&format!(
            "kaifang_requests_total{{dataset=\"bus-arrivals\",open_type=\"unconditional\",protocol=\"http\",status_class=\"{class}\"}}"
        ))
    };
    assert_eq!((requests("2xx"), requests("4xx")), (3.0, 1.0));
    let bytes =
        value(r#"kaifang_response_bytes_total{dataset="bus-arrivals",open_type="unconditional",protocol="http"}"#);
    assert_eq!(bytes, (sent + error_bytes) as f64, "every body byte sent is counted");
    assert!(records(&g, "dataset=bus-arrivals").await.is_empty());
}

/// A small answer from memory is recorded whole: its intent and its completion are committed
/// together, next to each other in the chain, before the answer (sent with its length) leaves.
#[tokio::test]
async fn a_whole_answer_is_recorded_as_one_intent_and_completion_pair() {
    let g = Gateway::demo();
    let key = g.demo_key();
    let r = client()
        .get(g.url("/v1/datasets/enterprises/rows?limit=3&columns=uscc,legal_rep_mobile"))
        .header("x-request-id", "whole-1")
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("transfer-encoding").is_none());
    let length: u64 = r.headers()["content-length"].to_str().unwrap().parse().unwrap();
    assert_eq!(r.bytes().await.unwrap().len() as u64, length);
    let log = records(&g, "dataset=enterprises").await;
    let set = &log["whole-1"];
    assert_eq!(kinds(set), vec!["intent", "completion"]);
    let (intent, completion) = (&set[0], &set[1]);
    let seq = intent["seq"].as_u64().unwrap();
    assert_eq!(completion["seq"].as_u64(), Some(seq + 1), "the pair is adjacent in the chain");
    assert_eq!(completion["intent_seq"].as_u64(), Some(seq));
    assert_eq!((completion["rows"].as_u64(), completion["bytes"].as_u64()), (Some(3), Some(length)));
    assert_eq!(completion["outcome"], "complete");
    let (ok, report) = verify(&g.data_dir);
    assert!(ok, "{report}");
}

/// A download of conditional data (an agreement on the whole dataset) is recorded with the
/// version of the file it served, as rows are.
#[tokio::test]
async fn a_conditional_download_is_recorded_with_the_version_it_served() {
    let g = Gateway::demo();
    let (status, body) =
        g.admin(Method::POST, "/admin/principals", Some(json!({"id": "whole", "name": "Whole", "role": "user"}))).await;
    assert_eq!(status, 201, "{body}");
    let (_, key) = g.admin(Method::POST, "/admin/keys", Some(json!({"principal": "whole"}))).await;
    let key = key["key"].as_str().unwrap().to_owned();
    let every = [
        "uscc",
        "name",
        "district",
        "industry",
        "registered_capital",
        "established_on",
        "status",
        "legal_rep_name",
        "legal_rep_id_card",
        "legal_rep_mobile",
    ];
    let agreement = json!({
        "principal": "whole", "dataset": "enterprises", "columns": every, "valid_until": "2099-01-01T00:00:00Z",
        "rate": {"per_second": 10, "burst": 10},
        "quota": {"requests_per_day": 10, "rows_per_day": 1_000_000, "bytes_per_day": 1_000_000_000},
    });
    let (status, body) = g.admin(Method::POST, "/admin/agreements", Some(agreement)).await;
    assert_eq!(status, 201, "{body}");
    let (status, bytes) = call(&g, "/v1/datasets/enterprises/download", Some(&key), "download-1").await;
    assert_eq!(status, 200);
    let set = &records(&g, "dataset=enterprises").await["download-1"];
    assert_eq!(kinds(set), vec!["intent", "completion"]);
    assert_eq!(set[0]["operation"], "download");
    let version = set[0]["dataset_version"].as_str().expect("the intent names the version served");
    let file = std::fs::metadata(g.data_dir.join("demo/enterprises.arrow")).unwrap();
    assert!(version.contains(&format!("{:x}", file.len())), "{version} names the file's length");
    assert_eq!(set[1]["bytes"], bytes as u64);
}
