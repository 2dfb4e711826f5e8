//! Callers who try to abuse the gateway: refusals that would flood the audit log, refusals that
//! would go unrecorded, and what a narrow scope's answers must not tell.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::audit::records;
use crate::fixture::{client, Gateway};

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum()
}

/// Every record of `dataset` in the audit log, in order.
async fn all_records(g: &Gateway, dataset: &str) -> Vec<Value> {
    let r = client()
        .get(format!("{}/admin/audit?dataset={dataset}", g.admin))
        .bearer_auth(g.admin_token())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[tokio::test]
async fn a_flood_of_refused_conditional_calls_gets_429s_and_grows_the_audit_log_by_a_bounded_amount() {
    let g = Gateway::demo();
    let audit_dir = g.data_dir.join("audit");
    let log_before = dir_bytes(&audit_dir);
    let user_agent = "x".repeat(60_000);
    let url = g.url("/v1/datasets/enterprises/rows");
    let (mut refused, mut limited) = (0u64, 0u64);
    let started = Instant::now();
    for _ in 0..1000 {
        let r = client()
            .get(&url)
            .bearer_auth("kf_0000000000000000_00")
            .header("user-agent", &user_agent)
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            401 => refused += 1,
            429 => {
                assert!(r.headers().contains_key("retry-after"));
                limited += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    // The demo's anonymous rate per address: 20 a second, bursts of 40.
    let most_recorded = 40.0 + 20.0 * elapsed.ceil() + 1.0;
    assert!((refused as f64) <= most_recorded, "{refused} refusals recorded in {elapsed:.1} s");
    assert_eq!(refused + limited, 1000);
    let grown = dir_bytes(&audit_dir) - log_before;
    // A refusal's record keeps at most 256 bytes of the User-Agent and of the reason: about 1 KiB.
    assert!(grown <= refused * 1024, "the audit log grew {grown} bytes for {refused} recorded refusals");

    let log = all_records(&g, "enterprises").await;
    let unserved: Vec<&Value> = log.iter().filter(|r| r["kind"] == "unserved").collect();
    assert_eq!(unserved.len() as u64, refused);
    for record in &unserved {
        let kept = record["user_agent"].as_str().unwrap();
        assert!(kept.len() < 300 && kept.ends_with("more bytes]"), "{kept}");
    }
    // The calls past the rate are counted in the address's next record.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = client().get(&url).header("x-request-id", "after-the-flood").send().await.unwrap();
    assert_eq!(r.status(), 401);
    let after = &records(&g, "dataset=enterprises").await["after-the-flood"][0];
    let counted = after["unrecorded_refusals"].as_u64().unwrap_or(0)
        + unserved.iter().map(|r| r["unrecorded_refusals"].as_u64().unwrap_or(0)).sum::<u64>();
    assert_eq!(counted, limited, "{after}");
}

#[tokio::test]
async fn refusals_before_the_call_proper_are_recorded_too() {
    let g = Gateway::demo();
    let key = g.demo_key();
    let call = |method: reqwest::Method, path: &str, id: &str| {
        client().request(method, g.url(path)).bearer_auth(&key).header("x-request-id", id).send()
    };
    assert_eq!(call(reqwest::Method::POST, "/v1/datasets/enterprises/rows", "posted").await.unwrap().status(), 405);
    assert_eq!(
        call(reqwest::Method::GET, "/v1/datasets/enterprises/rows?token=abc", "token-in-url").await.unwrap().status(),
        400
    );
    assert_eq!(
        call(reqwest::Method::DELETE, "/v1/datasets/enterprises/download", "deleted").await.unwrap().status(),
        405
    );

    // A Flight ticket that is not a valid command but names the dataset.
    let channel = tonic::transport::Channel::from_shared(g.flight.clone()).unwrap().connect().await.unwrap();
    let mut flight = arrow_flight::FlightClient::new(channel);
    flight.add_header("authorization", &format!("Bearer {key}")).unwrap();
    flight.add_header("x-request-id", "bad-ticket").unwrap();
    let ticket = arrow_flight::Ticket::new(r#"{"dataset": "enterprises", "rows": 5}"#);
    let refused = flight.do_get(ticket).await.err().expect("refused");
    assert!(refused.to_string().contains("bad_command"), "{refused}");

    let log = records(&g, "dataset=enterprises").await;
    for (id, status, operation) in [
        ("posted", 405, "rows"),
        ("token-in-url", 400, "rows"),
        ("deleted", 405, "download"),
        ("bad-ticket", 400, "flight"),
    ] {
        let set = log.get(id).unwrap_or_else(|| panic!("no record of {id}"));
        assert_eq!(set.len(), 1, "{id}: {set:?}");
        assert_eq!(set[0]["kind"], "unserved", "{id}");
        assert_eq!(set[0]["status"], status, "{id}");
        assert_eq!(set[0]["operation"], operation, "{id}");
    }
}

#[tokio::test]
async fn a_conditional_caller_is_shown_a_dataset_version_that_does_not_tell_the_size_of_the_whole_dataset() {
    let g = Gateway::demo();
    let key = g.demo_key();
    let file = g.data_dir.join("demo/enterprises.arrow");
    let length = format!("{:x}", std::fs::metadata(&file).unwrap().len());
    let version = |path: &'static str, id: &'static str| {
        let (g, key) = (&g, key.clone());
        async move {
            let r = client().get(g.url(path)).bearer_auth(key).header("x-request-id", id).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.headers()["x-dataset-version"].to_str().unwrap().to_owned()
        }
    };
    let shown = version("/v1/datasets/enterprises/rows?limit=1", "first").await;
    assert!(!shown.contains('-') && !shown.ends_with(&length), "{shown} tells the file's length {length}");
    assert_eq!(version("/v1/datasets/enterprises/preview", "preview").await, shown);
    // Unconditional data keeps its plain version.
    let open = client().get(g.url("/v1/datasets/air-quality/rows?limit=1")).send().await.unwrap();
    assert!(open.headers()["x-dataset-version"].to_str().unwrap().contains('-'));
    // The audit record keeps the version itself, for the operators.
    let log = records(&g, "dataset=enterprises").await;
    let recorded = log["first"][0]["dataset_version"].as_str().unwrap().to_owned();
    assert!(recorded.ends_with(&format!("-{length}")), "{recorded}");
    // A new version of the file is a new version shown.
    let modified = std::fs::metadata(&file).unwrap().modified().unwrap();
    std::fs::File::options().write(true).open(&file).unwrap().set_modified(modified + Duration::from_secs(1)).unwrap();
    assert_ne!(version("/v1/datasets/enterprises/rows?limit=2", "later").await, shown);
}
