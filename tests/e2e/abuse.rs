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
    let refused = match flight.do_get(ticket).await {
        Ok(_) => panic!("served"),
        Err(e) => e,
    };
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
    // Both protocols count and time these refusals alike: the same call lifecycle runs them.
    let samples = crate::metrics::samples(&crate::metrics::scrape(&g).await);
    let value = |key: &str| crate::metrics::value(&samples, key);
    for (protocol, refused) in [("http", 3.0), ("flight", 1.0)] {
        let requests = format!(
            "kaifang_requests_total{{dataset=\"enterprises\",open_type=\"conditional\",protocol=\"{protocol}\",status_class=\"4xx\"}}"
        );
        assert_eq!(value(&requests), refused, "{protocol}");
        let timed =
            format!("kaifang_request_duration_seconds_count{{open_type=\"conditional\",protocol=\"{protocol}\"}}");
        assert_eq!(value(&timed), refused, "{protocol}");
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

/// A draft of an unconditional dataset of the market department on `source`.
fn market_draft(source: Value) -> Value {
    serde_json::json!({
        "title": "Published from a draft", "description": "A test entry.", "open_type": "unconditional",
        "format": "csv", "update_frequency": "daily", "license": "CC-BY-4.0", "keywords": [],
        "source": source, "fields": [{"name": "line", "type": "string"}],
    })
}

#[tokio::test]
async fn owners_drafts_cannot_serve_the_gateways_files_files_through_links_or_internal_urls_nor_change_after_review() {
    use crate::workflows::{call, platform, principal, MARKET};
    use reqwest::Method;
    let (_dir, config, data_dir) = platform("");
    let g = Gateway::with_config(&config, &data_dir);
    let market = principal(&g, "market", "owner", Some(MARKET)).await;
    let folder = data_dir.join("sources/market");
    std::os::unix::fs::symlink("/etc/passwd", folder.join("passwd.csv")).unwrap();
    std::os::unix::fs::symlink(data_dir.join("demo/subsistence-allowance.csv"), folder.join("allowance.csv")).unwrap();
    std::os::unix::fs::symlink(&data_dir, folder.join("data")).unwrap();
    let segment = std::fs::read_dir(data_dir.join("audit")).unwrap().next().unwrap().unwrap().file_name();
    let admin = g.admin.trim_start_matches("http://").to_owned();
    let own = g.base.trim_start_matches("http://").to_owned();
    let refused = [
        serde_json::json!({"file": "admin.token"}),
        serde_json::json!({"file": "mask-hash.key"}),
        serde_json::json!({"file": "kaifang.db"}),
        serde_json::json!({"file": format!("audit/{}", segment.to_str().unwrap())}),
        serde_json::json!({"file": "demo/subsistence-allowance.csv"}),
        serde_json::json!({"file": "sources/market/passwd.csv"}),
        serde_json::json!({"file": "sources/market/allowance.csv"}),
        serde_json::json!({"file": "sources/market/data/admin.token"}),
        serde_json::json!({"url": format!("http://{admin}/metrics")}),
        serde_json::json!({"url": format!("http://{own}/v1/datasets/air-quality/download")}),
        serde_json::json!({"url": "http://169.254.169.254/latest/meta-data"}),
    ];
    for source in refused {
        let (status, answer) =
            call(&g, Method::PUT, "/v1/datasets/leak/draft", Some(&market), Some(market_draft(source.clone()))).await;
        assert_eq!((status, answer["error"]["code"].as_str()), (400, Some("source_not_allowed")), "{source}: {answer}");
    }
    let (_, drafts) = g.admin(Method::GET, "/admin/drafts", None).await;
    assert_eq!(drafts["drafts"], serde_json::json!([]), "nothing was drafted");

    // A file in the folder is drafted; the operator reviews revision 1; the owner then swaps
    // the source: the publication of what was reviewed is refused, and nothing is published.
    std::fs::write(folder.join("lines.csv"), "line\nfirst\nsecond\n").unwrap();
    let good = market_draft(serde_json::json!({"file": "sources/market/lines.csv"}));
    let (status, written) = call(&g, Method::PUT, "/v1/datasets/lines/draft", Some(&market), Some(good)).await;
    assert_eq!(status, 200, "{written}");
    let reviewed = written["draft_version"].as_u64().unwrap();
    std::fs::write(folder.join("other.csv"), "line\nswapped\n").unwrap();
    let swapped = market_draft(serde_json::json!({"file": "sources/market/other.csv"}));
    let (status, rewritten) = call(&g, Method::PUT, "/v1/datasets/lines/draft", Some(&market), Some(swapped)).await;
    assert_eq!(status, 200);
    assert_eq!(rewritten["draft_version"].as_u64(), Some(reviewed + 1));
    let review = serde_json::json!({"draft_version": reviewed});
    let (status, answer) = g.admin(Method::POST, "/admin/datasets/lines/publish", Some(review)).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (409, Some("draft_changed")), "{answer}");
    assert_eq!(call(&g, Method::GET, "/v1/datasets/lines", None, None).await.0, 404);
    let (status, answer) = g.admin(Method::POST, "/admin/datasets/lines/publish", None).await;
    assert_eq!(status, 400, "a publication names the revision reviewed: {answer}");

    // A file that is not there when drafted is checked again when published: by then a link
    // out of the folder is refused.
    let later = market_draft(serde_json::json!({"file": "sources/market/later.csv"}));
    let (status, written) = call(&g, Method::PUT, "/v1/datasets/later/draft", Some(&market), Some(later)).await;
    assert_eq!(status, 200, "{written}");
    std::os::unix::fs::symlink(data_dir.join("admin.token"), folder.join("later.csv")).unwrap();
    let review = serde_json::json!({"draft_version": written["draft_version"]});
    let (status, answer) = g.admin(Method::POST, "/admin/datasets/later/publish", Some(review)).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (409, Some("source_not_allowed")), "{answer}");
    assert_eq!(call(&g, Method::GET, "/v1/datasets/later/download", None, None).await.0, 404);

    // What was reviewed is published.
    let review = serde_json::json!({"draft_version": reviewed + 1});
    assert_eq!(g.admin(Method::POST, "/admin/datasets/lines/publish", Some(review)).await.0, 200);
    let body = client().get(g.url("/v1/datasets/lines/download")).send().await.unwrap().text().await.unwrap();
    assert_eq!(body, "line\nswapped\n");
}

#[tokio::test]
async fn a_non_open_dataset_answers_every_workflow_endpoint_exactly_like_an_unknown_id() {
    use crate::workflows::{application, call, platform, principal, TRANSPORT};
    use reqwest::Method;
    let (_dir, config, data_dir) = platform("");
    let g = Gateway::with_config(&config, &data_dir);
    let transport = principal(&g, "transport", "owner", Some(TRANSPORT)).await;
    let user = principal(&g, "someone", "user", None).await;
    let draft = market_draft(serde_json::json!({"url": "http://data.example/x.csv"}));
    for key in [None, Some(user.as_str()), Some(transport.as_str())] {
        for (method, path, body) in [
            (Method::PUT, "/v1/datasets/ID/draft", Some(serde_json::json!({}))),
            (Method::PUT, "/v1/datasets/ID/draft", Some(draft.clone())),
            (Method::GET, "/v1/datasets/ID/draft", None),
            (Method::GET, "/v1/datasets/ID", None),
            (
                Method::POST,
                "/v1/datasets/ID/objections",
                Some(serde_json::json!({"description": "wrong", "contact": "a@b.c"})),
            ),
            (Method::POST, "/v1/datasets/ID/withdraw", Some(serde_json::json!({"reason": "leak"}))),
            (Method::POST, "/v1/datasets/ID/reopen", None),
            (Method::GET, "/v1/datasets/ID/rows", None),
            (Method::POST, "/v1/applications", Some(application("ID"))),
            (
                Method::POST,
                "/v1/reports",
                Some(serde_json::json!({"dataset": "ID", "description": "misuse", "contact": "a@b.c"})),
            ),
        ] {
            let mut answers = Vec::new();
            for id in ["subsistence-allowance", "no-such-dataset"] {
                let body = body
                    .as_ref()
                    .map(|b| serde_json::from_str(&b.to_string().replace("\"ID\"", &format!("\"{id}\""))).unwrap());
                let (status, answer) = call(&g, method.clone(), &path.replace("ID", id), key, body).await;
                let answer = answer.to_string().replace(id, "ID");
                answers.push((status, answer));
            }
            assert_eq!(answers[0], answers[1], "{method} {path} with {key:?}");
        }
    }
}
