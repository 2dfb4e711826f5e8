//! Prometheus metrics: exact counts after known traffic, bounded labels, an exposition that
//! promtool accepts, and a Grafana dashboard whose every query uses exported metrics.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use crate::fixture::{client, Gateway};

/// Every sample of an exposition, as `name{labels}` (labels as rendered) to value.
pub fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap();
            (name.to_owned(), value.parse().unwrap())
        })
        .collect()
}

pub async fn scrape(g: &Gateway) -> String {
    let r = client().get(format!("{}/metrics", g.admin)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    r.text().await.unwrap()
}

pub fn value(samples: &HashMap<String, f64>, key: &str) -> f64 {
    *samples.get(key).unwrap_or_else(|| {
        let mut near: Vec<&String> = samples.keys().filter(|k| k.starts_with(key.split('{').next().unwrap())).collect();
        near.sort();
        panic!("no sample `{key}`; there are {near:#?}")
    })
}

/// promtool's path: `KAIFANG_PROMTOOL`, else `promtool` on the PATH.
fn promtool() -> Option<String> {
    let candidate = std::env::var("KAIFANG_PROMTOOL").unwrap_or_else(|_| "promtool".into());
    Command::new(&candidate).arg("--version").output().ok().filter(|o| o.status.success()).map(|_| candidate)
}

#[tokio::test]
async fn metrics_count_known_traffic_exactly_and_keep_labels_bounded() {
    let g = Gateway::demo();
    let key = g.demo_key();
    let get = |path: &str, key: Option<&str>| {
        let mut request = client().get(g.url(path));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        async move {
            let r = request.send().await.unwrap();
            let status = r.status().as_u16();
            let bytes = r.bytes().await.unwrap().len();
            (status, bytes)
        }
    };
    let mut sent = 0;
    for _ in 0..3 {
        let (status, bytes) = get("/v1/datasets/bus-arrivals/rows?limit=5&format=csv", None).await;
        assert_eq!(status, 200);
        sent += bytes;
    }
    assert_eq!(get("/v1/datasets/bus-arrivals/rows?columns=nope", None).await.0, 400);
    assert_eq!(get("/v1/datasets/enterprises/rows?limit=2", Some(&key)).await.0, 200);
    assert_eq!(get("/v1/datasets/enterprises/rows?limit=2", Some(&key)).await.0, 200);
    assert_eq!(get("/v1/datasets/enterprises/rows?limit=2", None).await.0, 401);
    assert_eq!(get("/v1/datasets/no-such/rows", None).await.0, 404);
    // The agreement's rate admits a burst of 3 and then one call a second: calls in a row are
    // refused after at least three (more on a machine slow enough to let a second pass). Stop at
    // the first refusal and count what was served.
    let big = json!({"requests_per_day": 1000, "rows_per_day": 1_000_000, "bytes_per_day": 1_000_000_000});
    let (limited, _) = crate::agreements::holder(&g, "acme", json!({"per_second": 1, "burst": 3}), big).await;
    let mut served = 0;
    loop {
        match get("/v1/datasets/enterprises/rows?limit=1", Some(&limited)).await.0 {
            200 => served += 1,
            429 => break,
            other => panic!("status {other}"),
        }
        assert!(served < 50, "never refused");
    }
    assert!(served >= 3, "served {served}");

    let text = scrape(&g).await;
    let s = samples(&text);
    let requests = |dataset: &str, open_type: &str, class: &str| {
        value(
            &s,
            &format!(
                "kaifang_requests_total{{dataset=\"{dataset}\",open_type=\"{open_type}\",protocol=\"http\",status_class=\"{class}\"}}"
            ),
        )
    };
    assert_eq!(requests("bus-arrivals", "unconditional", "2xx"), 3.0);
    assert_eq!(requests("bus-arrivals", "unconditional", "4xx"), 1.0);
    assert_eq!(requests("enterprises", "conditional", "2xx"), 2.0 + served as f64);
    assert_eq!(requests("enterprises", "conditional", "4xx"), 2.0);
    assert!(!text.contains("no-such"), "unknown ids are not labels");
    let bytes = r#"kaifang_response_bytes_total{dataset="bus-arrivals",open_type="unconditional",protocol="http"}"#;
    // The refused call's error body counts as bytes sent too.
    assert!(value(&s, bytes) > sent as f64, "{} <= {sent}", value(&s, bytes));
    // Rows answered, the third bus-arrivals call's from the answer kept encoded after the
    // second (its query did not run again: its rows count all the same).
    let rows = |dataset: &str, open_type: &str| {
        value(
            &s,
            &format!(
                "kaifang_response_rows_total{{dataset=\"{dataset}\",open_type=\"{open_type}\",protocol=\"http\"}}"
            ),
        )
    };
    assert_eq!(value(&s, r#"kaifang_cache_lookups_total{cache="answers",result="hit"}"#), 1.0);
    assert_eq!(rows("bus-arrivals", "unconditional"), 15.0);
    assert_eq!(rows("enterprises", "conditional"), 4.0 + served as f64);
    let calls = |open_type: &str| {
        value(&s, &format!("kaifang_request_duration_seconds_count{{open_type=\"{open_type}\",protocol=\"http\"}}"))
    };
    assert_eq!(calls("unconditional"), 4.0);
    let conditional_calls = 4.0 + served as f64;
    assert_eq!(calls("conditional"), conditional_calls);
    let gateway = r#"kaifang_request_gateway_seconds_count{open_type="conditional",protocol="http"}"#;
    assert_eq!(value(&s, gateway), conditional_calls);
    let source = r#"kaifang_request_source_seconds_count{open_type="conditional",protocol="http"}"#;
    assert_eq!(value(&s, source), conditional_calls);
    assert_eq!(value(&s, r#"kaifang_limit_refusals_total{limit="agreement_rate",protocol="http"}"#), 1.0);
    assert_eq!(value(&s, r#"kaifang_active_streams{protocol="http"}"#), 0.0);
    // Audit: the served calls of the demo user and of acme (intent and completion each), the
    // anonymous refusal and acme's 429 (one record each).
    assert_eq!(value(&s, "kaifang_audit_records_total"), 2.0 * (2.0 + served as f64) + 2.0);
    assert_eq!(value(&s, "kaifang_audit_write_failures_total"), 0.0);
    assert_eq!(value(&s, "kaifang_audit_queue_depth"), 0.0);
    assert!(value(&s, "kaifang_audit_commit_seconds_count") >= 1.0);
    // Keys: the demo key is looked up once, then cached; acme's likewise.
    assert_eq!(value(&s, r#"kaifang_cache_lookups_total{cache="keys",result="miss"}"#), 2.0);
    assert_eq!(value(&s, r#"kaifang_cache_lookups_total{cache="keys",result="hit"}"#), 1.0 + served as f64);
    assert_eq!(value(&s, &format!("kaifang_build_info{{version=\"{}\"}}", env!("CARGO_PKG_VERSION"))), 1.0);

    // Freshness, against the catalog's own dates: the demo's bus arrivals are real-time and
    // were last updated long ago, so stale; the age is the catalog date's.
    let (_, meta) = crate::fixture::get_json(&g.url("/v1/datasets/bus-arrivals")).await;
    let updated: chrono::DateTime<chrono::Utc> = meta["last_updated"].as_str().unwrap().parse().unwrap();
    let age = value(&s, r#"kaifang_dataset_age_seconds{dataset="bus-arrivals"}"#);
    let expected = (chrono::Utc::now() - updated).num_seconds() as f64;
    assert!((age - expected).abs() < 60.0, "age {age} against {expected}");
    let interval = value(&s, r#"kaifang_dataset_update_interval_seconds{dataset="bus-arrivals"}"#);
    let stale = value(&s, r#"kaifang_dataset_stale{dataset="bus-arrivals"}"#);
    assert_eq!(stale, f64::from(u8::from(age > 2.0 * interval)), "age {age}, interval {interval}");
    assert!(!text.contains("subsistence-allowance"), "non-open datasets are not even named");

    // Bounded labels: no key ids, principals, client addresses or paths.
    let key_id = key.split('_').nth(1).unwrap();
    for secret in [key_id, "demo-analytics", "acme", "127.0.0.1", "/v1/"] {
        assert!(!text.contains(secret), "`{secret}` in the exposition");
    }
}

#[tokio::test]
async fn promtool_accepts_the_exposition() {
    let Some(promtool) = promtool() else {
        if std::env::var("KAIFANG_REQUIRE_PROMTOOL").is_ok_and(|v| v == "1") {
            panic!(
                "promtool is required (KAIFANG_REQUIRE_PROMTOOL=1) but not found; install Debian's prometheus package"
            );
        }
        crate::fixture::say_skipped(
            "promtool_accepts_the_exposition",
            "promtool not found (install Debian's prometheus package, or set KAIFANG_PROMTOOL); .ci/run requires it",
        );
        return;
    };
    let g = Gateway::demo();
    // Traffic first, so that every labelled family has samples.
    client().get(g.url("/v1/datasets/bus-arrivals/rows?limit=1")).send().await.unwrap().bytes().await.unwrap();
    let text = scrape(&g).await;
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn every_dashboard_query_uses_metrics_kaifang_exports() {
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../config/grafana/kaifang-dashboard.json"))
            .unwrap(),
    )
    .unwrap();
    let mut expressions = Vec::new();
    fn collect(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("expr" | "query" | "definition", Value::String(e)) => out.push(e.clone()),
                        _ => collect(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| collect(v, out)),
            _ => {}
        }
    }
    collect(&dashboard, &mut expressions);
    let used: BTreeSet<String> = expressions
        .iter()
        .flat_map(|e| {
            e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("kaifang_"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(used.len() >= 12, "the dashboard uses {used:?}");

    let g = Gateway::demo();
    client().get(g.url("/v1/datasets/bus-arrivals/rows?limit=1")).send().await.unwrap().bytes().await.unwrap();
    let text = scrape(&g).await;
    let exported: BTreeSet<&str> =
        text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).map(|l| l.split(' ').next().unwrap()).collect();
    for name in &used {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix).filter(|base| exported.contains(base)))
            .unwrap_or(name);
        assert!(exported.contains(family), "the dashboard queries `{name}`, which kaifang does not export");
    }
    // Every panel has a query, and the panels cover what operators watch.
    let titles: Vec<String> =
        dashboard["panels"].as_array().unwrap().iter().map(|p| p["title"].as_str().unwrap().to_lowercase()).collect();
    for topic in ["traffic", "error", "latency", "bytes", "quota", "audit", "stale"] {
        assert!(titles.iter().any(|t| t.contains(topic)), "no panel about {topic}: {titles:?}");
    }
}
