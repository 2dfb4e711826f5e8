//! Misuse reports: anyone files one, the operators read them, and they survive a restart.

use reqwest::Method;
use serde_json::{json, Value};

use crate::fixture::{client, Gateway};

async fn file(g: &Gateway, body: Value, key: Option<&str>) -> (u16, Value) {
    let mut request = client().post(g.url("/v1/reports")).json(&body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let r = request.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn reports(g: &Gateway) -> Vec<Value> {
    let (status, body) = g.admin(Method::GET, "/admin/reports", None).await;
    assert_eq!(status, 200, "{body}");
    body["reports"].as_array().unwrap().clone()
}

#[tokio::test]
async fn anyone_reports_misuse_the_operators_read_it_and_it_survives_a_restart() {
    let g = Gateway::demo();
    let key = g.demo_key();

    // Refused, and nothing stored: no way to reach an anonymous reporter, an empty or endless
    // description, an unknown or non-open dataset, a malformed body, an unknown field.
    for (body, status, needle) in [
        (json!({"description": "resold bus data"}), 400, "contact"),
        (json!({"description": "  ", "contact": "a@example.cn"}), 400, "description"),
        (json!({"description": "x".repeat(10_001), "contact": "a@example.cn"}), 400, "description"),
        (json!({"description": "d", "contact": "a@example.cn", "dataset": "subsistence-allowance"}), 404, "no dataset"),
        (json!({"description": "d", "contact": "a@example.cn", "dataset": "no-such"}), 404, "no dataset"),
        (json!({"description": "d", "contact": "a@example.cn", "severity": "high"}), 400, "severity"),
        (json!(["not", "an", "object"]), 400, "bad_body"),
    ] {
        let (got, answer) = file(&g, body.clone(), None).await;
        assert_eq!(got, status, "{body}: {answer}");
        assert!(answer.to_string().contains(needle), "{body}: {answer}");
    }
    let (status, _) = file(&g, json!({"description": "d"}), Some("kf_0123456789abcdef_00")).await;
    assert_eq!(status, 401, "an unknown key is refused, not taken as anonymous");
    assert!(reports(&g).await.is_empty());

    let (status, first) = file(
        &g,
        json!({"dataset": "bus-arrivals", "description": "An app resells the arrival feed as its own.", "contact": "13800000000"}),
        None,
    )
    .await;
    assert_eq!(status, 201, "{first}");
    // With a key, the reporter is known and a contact is optional.
    let (status, second) =
        file(&g, json!({"description": "A partner publishes masked enterprise data unmasked."}), Some(&key)).await;
    assert_eq!(status, 201, "{second}");

    let listed = reports(&g).await;
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["id"], second["id"], "newest first");
    assert_eq!(listed[0]["principal"], "demo-analytics");
    assert_eq!(listed[0]["contact"], Value::Null);
    assert_eq!(listed[1]["dataset"], "bus-arrivals");
    assert_eq!(listed[1]["contact"], "13800000000");
    assert_eq!(listed[1]["principal"], Value::Null);

    // Only the operators read them, only POST files one.
    let r = client().get(format!("{}/admin/reports", g.admin)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = client().get(g.url("/v1/reports")).send().await.unwrap();
    assert_eq!(r.status(), 405);

    let g = g.restart();
    assert_eq!(reports(&g).await, listed, "reports survive a restart");
}
