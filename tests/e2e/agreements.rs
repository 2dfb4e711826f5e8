//! Conditional data: keys, agreements, scopes, masks, rate limits and quotas.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::fixture::{client, read_arrow_stream, read_csv, read_source, Gateway, BIN};
use crate::rows::urlencode;

const SCOPE: [&str; 9] = [
    "uscc",
    "name",
    "district",
    "industry",
    "established_on",
    "status",
    "legal_rep_name",
    "legal_rep_id_card",
    "legal_rep_mobile",
];

/// The source's enterprises by credit code, as strings.
fn source_enterprises(g: &Gateway) -> HashMap<String, HashMap<String, String>> {
    let batch = read_source(&g.data_dir.join("demo/enterprises.arrow"));
    let mut json = arrow::json::ArrayWriter::new(Vec::new());
    json.write(&batch).unwrap();
    json.finish().unwrap();
    let rows: Vec<HashMap<String, Value>> = serde_json::from_slice(&json.into_inner()).unwrap();
    rows.into_iter()
        .map(|r| {
            let text: HashMap<String, String> =
                r.into_iter().map(|(k, v)| (k, v.as_str().map_or_else(|| v.to_string(), str::to_owned))).collect();
            (text["uscc"].clone(), text)
        })
        .collect()
}

async fn get(url: &str, key: &str) -> reqwest::Response {
    client().get(url).bearer_auth(key).send().await.unwrap()
}

/// The rows of `/v1/datasets/enterprises/rows` in every format, as string maps.
async fn rows_in_every_format(
    g: &Gateway,
    key: &str,
    query: &str,
) -> Vec<(&'static str, Vec<HashMap<String, String>>)> {
    let mut out = Vec::new();
    for format in ["json", "ndjson", "csv", "arrow"] {
        let r = get(&g.url(&format!("/v1/datasets/enterprises/rows?format={format}&{query}")), key).await;
        assert_eq!(r.status(), 200, "{format}");
        let body = r.bytes().await.unwrap();
        let values: Vec<HashMap<String, Value>> = match format {
            "json" => serde_json::from_slice(&body).unwrap(),
            "ndjson" => body
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .map(|l| serde_json::from_slice(l).unwrap())
                .collect(),
            "csv" => {
                let records = read_csv(std::str::from_utf8(&body).unwrap());
                let header = records[0].clone();
                records[1..]
                    .iter()
                    .map(|r| header.iter().cloned().zip(r.iter().map(|v| Value::String(v.clone()))).collect())
                    .collect()
            }
            _ => {
                let batches = read_arrow_stream(&body);
                let mut w = arrow::json::ArrayWriter::new(Vec::new());
                for b in &batches {
                    w.write(b).unwrap();
                }
                w.finish().unwrap();
                let bytes = w.into_inner();
                if bytes.is_empty() {
                    Vec::new()
                } else {
                    serde_json::from_slice(&bytes).unwrap()
                }
            }
        };
        let text = values
            .into_iter()
            .map(|r| r.into_iter().map(|(k, v)| (k, v.as_str().map_or_else(|| v.to_string(), str::to_owned))).collect())
            .collect();
        out.push((format, text));
    }
    out
}

#[tokio::test]
async fn an_agreement_holder_receives_only_its_rows_and_columns_masked_in_every_format() {
    let g = Gateway::demo();
    let key = g.demo_key();
    let source = source_enterprises(&g);
    let haizhou = source.values().filter(|r| r["district"] == "Haizhou").count();
    assert!(haizhou > 100 && haizhou < source.len());
    for (format, rows) in rows_in_every_format(&g, &key, "").await {
        assert_eq!(rows.len(), haizhou, "{format}: exactly the rows of the agreement's row filter");
        for row in &rows {
            let mut columns: Vec<&str> = row.keys().map(String::as_str).collect();
            columns.sort();
            let mut scope = SCOPE.to_vec();
            scope.sort();
            assert_eq!(columns, scope, "{format}: exactly the agreement's columns");
            let raw = &source[&row["uscc"]];
            assert_eq!(row["district"], "Haizhou");
            assert_eq!(row["name"], raw["name"], "{format}: unmasked columns pass as they are");
            let name: Vec<char> = raw["legal_rep_name"].chars().collect();
            let expected_name: String =
                std::iter::once(name[0]).chain(std::iter::repeat_n('*', name.len() - 1)).collect();
            assert_eq!(row["legal_rep_name"], expected_name, "{format}: keep_first(1)");
            let id = &raw["legal_rep_id_card"];
            assert_eq!(row["legal_rep_id_card"], format!("{}********{}", &id[..6], &id[14..]), "{format}: cn_id_card");
            let mobile = &raw["legal_rep_mobile"];
            assert_eq!(row["legal_rep_mobile"], format!("{}****{}", &mobile[..3], &mobile[7..]), "{format}: cn_mobile");
        }
    }
}

#[tokio::test]
async fn masked_values_cannot_be_recovered_by_filtering_or_ordering() {
    let g = Gateway::demo();
    let key = g.demo_key();
    let source = source_enterprises(&g);
    let some = source.values().find(|r| r["district"] == "Haizhou").unwrap();
    for (column, raw) in
        [("legal_rep_mobile", &some["legal_rep_mobile"]), ("legal_rep_id_card", &some["legal_rep_id_card"])]
    {
        for filter in [format!("{column} = '{raw}'"), format!("{column} like '{}%'", &raw[..8])] {
            let r = get(&g.url(&format!("/v1/datasets/enterprises/rows?filter={}", urlencode(&filter))), &key).await;
            assert_eq!(r.status(), 200);
            let rows: Vec<Value> = r.json().await.unwrap();
            assert!(rows.is_empty(), "`{filter}` matched raw values: {rows:?}");
        }
    }
    // The masked value itself is what filters see.
    let masked = format!("{}****{}", &some["legal_rep_mobile"][..3], &some["legal_rep_mobile"][7..]);
    let r = get(
        &g.url(&format!(
            "/v1/datasets/enterprises/rows?filter={}",
            urlencode(&format!("legal_rep_mobile = '{masked}'"))
        )),
        &key,
    )
    .await;
    let rows: Vec<Value> = r.json().await.unwrap();
    assert!(rows.iter().any(|r| r["uscc"] == some["uscc"].as_str()));
    // Ordering by a masked column orders by the masked text.
    let r = get(&g.url("/v1/datasets/enterprises/rows?columns=legal_rep_mobile&order=legal_rep_mobile"), &key).await;
    let rows: Vec<Value> = r.json().await.unwrap();
    let values: Vec<&str> = rows.iter().map(|r| r["legal_rep_mobile"].as_str().unwrap()).collect();
    assert!(values.iter().all(|v| v.contains("****")));
    assert!(values.windows(2).all(|w| w[0] <= w[1]));
}

#[tokio::test]
async fn columns_outside_the_scope_are_refused_by_name() {
    let g = Gateway::demo();
    let key = g.demo_key();
    for query in
        ["columns=uscc,registered_capital", "filter=registered_capital%20%3E%201000", "order=-registered_capital"]
    {
        let r = get(&g.url(&format!("/v1/datasets/enterprises/rows?{query}")), &key).await;
        assert_eq!(r.status(), 403, "{query}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "column_outside_scope");
        assert!(body["error"]["message"].as_str().unwrap().contains("`registered_capital`"), "{body}");
    }
    let r = get(&g.url("/v1/datasets/enterprises/download"), &key).await;
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "download_outside_scope");
    assert!(body["error"]["message"].as_str().unwrap().contains("/v1/datasets/enterprises/rows"));
}

#[tokio::test]
async fn the_metadata_a_holder_sees_is_its_scope_with_masked_types() {
    let g = Gateway::demo();
    let r = get(&g.url("/v1/datasets/enterprises"), &g.demo_key()).await;
    let body: Value = r.json().await.unwrap();
    let names: Vec<&str> = body["fields"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(names, SCOPE.to_vec());
    let (_, anonymous) = crate::fixture::get_json(&g.url("/v1/datasets/enterprises")).await;
    assert_eq!(anonymous["fields"].as_array().unwrap().len(), 10, "anyone sees every field, to know what to apply for");
}

#[tokio::test]
async fn refusals_have_the_right_status_and_body() {
    let g = Gateway::demo();
    let cases: [(Option<&str>, &str, u16, &str); 5] = [
        (None, "/v1/datasets/enterprises/rows", 401, "key_required"),
        (Some("kf_0000000000000000_00"), "/v1/datasets/enterprises/rows", 401, "unknown_key"),
        (Some("not-even-shaped-like-a-key"), "/v1/datasets/bus-arrivals/rows", 401, "unknown_key"),
        (Some("DEMO"), "/v1/datasets/subsistence-allowance/rows", 404, "not_found"),
        (Some("DEMO"), "/v1/datasets/nope/rows", 404, "not_found"),
    ];
    for (key, path, status, code) in cases {
        let mut request = client().get(g.url(path));
        if let Some(key) = key {
            request = request.bearer_auth(if key == "DEMO" { g.demo_key() } else { key.to_owned() });
        }
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), status, "{path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{path}");
    }
    // A key whose principal holds no agreement.
    let (status, _) =
        g.admin(Method::POST, "/admin/principals", Some(json!({"id": "acme", "name": "Acme", "role": "user"}))).await;
    assert_eq!(status, 201);
    let (status, issued) = g.admin(Method::POST, "/admin/keys", Some(json!({"principal": "acme"}))).await;
    assert_eq!(status, 201);
    let r = get(&g.url("/v1/datasets/enterprises/rows"), issued["key"].as_str().unwrap()).await;
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "no_agreement");
    // The same key reads unconditional data, limited per key.
    let r = get(&g.url("/v1/datasets/bus-arrivals/rows?limit=1"), issued["key"].as_str().unwrap()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["ratelimit-policy"], "\"key\";q=100;w=1");
}

#[tokio::test]
async fn a_revoked_key_is_refused_on_its_very_next_request() {
    let g = Gateway::demo();
    let key = g.demo_key();
    let url = g.url("/v1/datasets/enterprises/rows?limit=1");
    assert_eq!(get(&url, &key).await.status(), 200);
    let key_id = key.split('_').nth(1).unwrap();
    let (status, _) = g.admin(Method::DELETE, &format!("/admin/keys/{key_id}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(get(&url, &key).await.status(), 401);

    // Revoked from another process, with the command line, while the gateway runs.
    let out = std::process::Command::new(BIN)
        .args(["keys", "issue", "--principal", "demo-analytics", "--data-dir", g.data_dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let second = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(get(&url, &second).await.status(), 200);
    let second_id = second.split('_').nth(1).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["keys", "revoke", second_id, "--data-dir", g.data_dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(get(&url, &second).await.status(), 401);
    let list = std::process::Command::new(BIN)
        .args(["keys", "list", "--data-dir", g.data_dir.to_str().unwrap()])
        .output()
        .unwrap();
    let list = String::from_utf8(list.stdout).unwrap();
    assert_eq!(list.lines().count(), 3, "header and two keys:\n{list}");
    assert!(!list.contains(&second[20..]), "secrets are never listed");
}

/// Creates principal `p`, a key and an agreement on enterprises with the given rate and quota.
pub async fn holder(g: &Gateway, p: &str, rate: Value, quota: Value) -> (String, String) {
    let (status, body) =
        g.admin(Method::POST, "/admin/principals", Some(json!({"id": p, "name": p, "role": "user"}))).await;
    assert_eq!(status, 201, "{body}");
    let (_, key) = g.admin(Method::POST, "/admin/keys", Some(json!({"principal": p}))).await;
    let (status, agreement) = g
        .admin(
            Method::POST,
            "/admin/agreements",
            Some(json!({
                "principal": p, "dataset": "enterprises", "columns": ["uscc", "name", "legal_rep_mobile"],
                "masks": {"legal_rep_mobile": "keep_last(4)"}, "valid_until": "2099-01-01T00:00:00Z",
                "rate": rate, "quota": quota,
            })),
        )
        .await;
    assert_eq!(status, 201, "{agreement}");
    (key["key"].as_str().unwrap().to_owned(), agreement["id"].as_str().unwrap().to_owned())
}

/// What a refusal says: status, code and message.
fn refusal((status, body): &(u16, Value)) -> (u16, Value, Value) {
    (*status, body["error"]["code"].clone(), body["error"]["message"].clone())
}

/// Another principal's application or agreement is refused exactly like an id that does not
/// exist, on every endpoint that takes its id, to a user and to another department's owner,
/// whatever state it is in: nothing in the answer tells them it exists. (Its applicant or holder,
/// and its dataset's owner, see it; they are not asked here.)
#[tokio::test]
async fn someone_elses_application_or_agreement_is_refused_exactly_like_an_unknown_id() {
    use crate::workflows::{call, platform, principal, MARKET, TRANSPORT};
    let (_dir, config, data_dir) = platform("");
    let g = Gateway::with_config(&config, &data_dir);
    let market = principal(&g, "market", "owner", Some(MARKET)).await;
    let transport = principal(&g, "transport", "owner", Some(TRANSPORT)).await;
    let acme = principal(&g, "acme", "user", None).await;
    let beta = principal(&g, "beta", "user", None).await;
    let terms = json!({"columns": ["uscc", "name"], "valid_until": "2099-01-01T00:00:00Z",
                       "rate": {"per_second": 10, "burst": 10},
                       "quota": {"requests_per_day": 100, "rows_per_day": 1000, "bytes_per_day": 1000000}});

    // acme's applications on market's enterprises: one waiting, one approved; acme's agreements:
    // the approved one (active) and one revoked; and the demo's agreement of another user.
    let mut applications = Vec::new();
    for _ in 0..2 {
        let body = json!({"dataset": "enterprises", "purpose": "Supplier checks", "scenario": "Procurement",
                          "security_measures": "Encrypted storage", "columns": ["uscc", "name"]});
        let (status, applied) = call(&g, Method::POST, "/v1/applications", Some(&acme), Some(body)).await;
        assert_eq!(status, 201, "{applied}");
        applications.push(applied["id"].as_str().unwrap().to_owned());
    }
    let approve = format!("/v1/applications/{}/approve", applications[1]);
    let (status, approved) = call(&g, Method::POST, &approve, Some(&market), Some(terms.clone())).await;
    assert_eq!(status, 200, "{approved}");
    let active = approved["agreement"]["id"].as_str().unwrap().to_owned();
    let (status, made) = g
        .admin(
            Method::POST,
            "/admin/agreements",
            Some(json!({"principal": "acme", "dataset": "enterprises", "columns": ["uscc"],
                        "valid_until": "2099-01-01T00:00:00Z", "rate": terms["rate"], "quota": terms["quota"]})),
        )
        .await;
    assert_eq!(status, 201, "{made}");
    let revoked = made["id"].as_str().unwrap().to_owned();
    assert_eq!(g.admin(Method::POST, &format!("/admin/agreements/{revoked}/revoke"), None).await.0, 200);
    let agreements = [active.as_str(), revoked.as_str(), "demo-enterprises"];

    // Every endpoint that takes an application's or an agreement's id, with a body it takes.
    let endpoints = [
        (Method::GET, "/v1/applications/{id}", None),
        (Method::POST, "/v1/applications/{id}/approve", Some(terms.clone())),
        (Method::POST, "/v1/applications/{id}/reject", Some(json!({"reason": "no"}))),
        (Method::GET, "/v1/agreements/{id}", None),
        (Method::POST, "/v1/agreements/{id}/suspend", None),
        (Method::POST, "/v1/agreements/{id}/resume", None),
        (Method::POST, "/v1/agreements/{id}/revoke", None),
        (Method::POST, "/v1/agreements/{id}/feedback", Some(json!({"usage": "a report"}))),
    ];
    let applications: Vec<&str> = applications.iter().map(String::as_str).collect();
    let state = || async {
        let (_, applications) = g.admin(Method::GET, "/admin/applications", None).await;
        let (_, agreements) = g.admin(Method::GET, "/admin/agreements", None).await;
        (applications, agreements)
    };
    let before = state().await;
    let mut oracles = Vec::new();
    for (who, key) in [("user beta", &beta), ("transport's owner", &transport)] {
        for (method, path, body) in &endpoints {
            let (ids, unknown) = if path.starts_with("/v1/applications") {
                (&applications[..], "ap-0000000000000000")
            } else {
                (&agreements[..], "ag-0000000000000000")
            };
            let unknown_answer =
                refusal(&call(&g, method.clone(), &path.replace("{id}", unknown), Some(key), body.clone()).await);
            assert!(unknown_answer.0 >= 400, "{who}: {method} {path} with an unknown id: {unknown_answer:?}");
            for id in ids {
                let answer =
                    refusal(&call(&g, method.clone(), &path.replace("{id}", id), Some(key), body.clone()).await);
                if answer != unknown_answer {
                    oracles.push(format!(
                        "{who}: {method} {path} for {id}: {answer:?}; for an unknown id: {unknown_answer:?}"
                    ));
                }
            }
        }
    }
    assert!(oracles.is_empty(), "someone else's ids answered unlike unknown ones:\n{}", oracles.join("\n"));
    assert_eq!(state().await, before, "the refused calls changed nothing");
}

/// The slowest rate a limit can have gives a token back after one second; a run of calls that
/// took longer than that (a loaded machine) shows nothing about the burst, so it is run again,
/// on a fresh limit, up to five times, and the test fails if no run was quick enough.
const REFILL: Duration = Duration::from_millis(950);

#[tokio::test]
async fn the_agreement_rate_admits_exactly_its_burst_then_429s() {
    let g = Gateway::demo();
    let big = json!({"requests_per_day": 1000, "rows_per_day": 1_000_000, "bytes_per_day": 1_000_000_000});
    let url = g.url("/v1/datasets/enterprises/rows?limit=1");
    for attempt in 1.. {
        let (key, _) = holder(&g, &format!("acme{attempt}"), json!({"per_second": 1, "burst": 3}), big.clone()).await;
        let started = Instant::now();
        let mut statuses = Vec::new();
        let mut remaining = Vec::new();
        for _ in 0..3 {
            let r = get(&url, &key).await;
            statuses.push(r.status().as_u16());
            assert_eq!(r.headers()["ratelimit-policy"], "\"agreement\";q=3;w=1");
            assert_eq!(r.headers()["ratelimit-limit"], "3");
            remaining.push(r.headers()["ratelimit-remaining"].to_str().unwrap().to_owned());
        }
        let refused = get(&url, &key).await;
        if started.elapsed() >= REFILL && attempt < 5 {
            continue;
        }
        assert!(started.elapsed() < REFILL, "no run of four calls fit inside one second in five tries");
        assert_eq!(statuses, vec![200, 200, 200]);
        assert_eq!(remaining, vec!["2", "1", "0"]);
        assert_eq!(refused.status(), 429);
        assert_eq!(refused.headers()["retry-after"], "1");
        assert!(refused.headers()["ratelimit"].to_str().unwrap().starts_with("\"agreement\";r=0;"));
        let body: Value = refused.json().await.unwrap();
        assert_eq!(body["error"]["code"], "rate_limited");
        break;
    }
}

#[tokio::test]
async fn daily_quotas_refuse_once_spent_naming_the_quota() {
    let g = Gateway::demo();
    let fast = json!({"per_second": 100, "burst": 100});
    let (key, _) = holder(
        &g,
        "acme",
        fast.clone(),
        json!({"requests_per_day": 2, "rows_per_day": 1_000_000, "bytes_per_day": 1_000_000_000}),
    )
    .await;
    let url = g.url("/v1/datasets/enterprises/rows?limit=1");
    assert_eq!(get(&url, &key).await.status(), 200);
    assert_eq!(get(&url, &key).await.status(), 200);
    let r = get(&url, &key).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "quota_exhausted");
    assert!(body["error"]["message"].as_str().unwrap().contains("requests_per_day"));

    // Rows: a result larger than what is left is refused, and counts nothing; what is left can
    // still be used, and then nothing more.
    let (key, _) = holder(
        &g,
        "beta",
        fast.clone(),
        json!({"requests_per_day": 100, "rows_per_day": 10, "bytes_per_day": 1_000_000_000}),
    )
    .await;
    let rows = |limit: u32| g.url(&format!("/v1/datasets/enterprises/rows?limit={limit}"));
    assert_eq!(get(&rows(4), &key).await.json::<Vec<Value>>().await.unwrap().len(), 4);
    let r = get(&rows(50_000), &key).await;
    assert_eq!(r.status(), 429);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("rows_per_day` of your agreement does not cover this result (6 left"),
        "{body}"
    );
    assert_eq!(get(&rows(6), &key).await.json::<Vec<Value>>().await.unwrap().len(), 6);
    let r = get(&rows(1), &key).await;
    assert_eq!(r.status(), 429);
    let body: Value = r.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("rows_per_day"), "{body}");

    // Bytes: a small answer from memory is counted whole before it is sent, so one past the
    // quota is refused cleanly and spends nothing.
    let (key, _) =
        holder(&g, "gamma", fast, json!({"requests_per_day": 100, "rows_per_day": 1_000_000, "bytes_per_day": 2_000}))
            .await;
    assert_eq!(get(&rows(1), &key).await.status(), 200);
    let r = get(&rows(1000), &key).await;
    assert_eq!(r.status(), 429);
    let body: Value = r.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("bytes_per_day"), "{body}");
    assert_eq!(get(&rows(1), &key).await.status(), 200, "the refused answer spent nothing");
}

#[tokio::test]
async fn a_streamed_answer_passing_the_byte_quota_breaks_off() {
    // Read from the file, not from memory: the answer streams and is counted as it is sent.
    let dir = tempfile::tempdir().unwrap();
    let (config, data_dir) = crate::fixture::demo_with_enterprises(dir.path(), "cache = \"never\"");
    let g = Gateway::with_config(&config, &data_dir);
    let fast = json!({"per_second": 100, "burst": 100});
    let rows = |n: usize| g.url(&format!("/v1/datasets/enterprises/rows?limit={n}"));
    let (key, _) =
        holder(&g, "gamma", fast, json!({"requests_per_day": 100, "rows_per_day": 1_000_000, "bytes_per_day": 2_000}))
            .await;
    assert_eq!(get(&rows(1), &key).await.status(), 200);
    crate::fixture::tls_provider();
    let with_key = reqwest::Client::builder().default_headers(bearer(&key)).build().unwrap();
    crate::fixture::expect_broken_with(&with_key, &rows(1000)).await;
    let r = get(&rows(1000), &key).await;
    assert_eq!(r.status(), 429);
    let body: Value = r.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("bytes_per_day"), "{body}");
}

fn bearer(key: &str) -> reqwest::header::HeaderMap {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("authorization", format!("Bearer {key}").parse().unwrap());
    headers
}

#[tokio::test]
async fn an_agreement_revoked_through_the_admin_api_stops_at_the_next_request() {
    let g = Gateway::demo();
    let fast = json!({"per_second": 100, "burst": 100});
    let (key, agreement) = holder(
        &g,
        "acme",
        fast,
        json!({"requests_per_day": 100, "rows_per_day": 1_000_000, "bytes_per_day": 1_000_000_000}),
    )
    .await;
    let url = g.url("/v1/datasets/enterprises/rows?limit=2&columns=legal_rep_mobile");
    let r = get(&url, &key).await;
    let rows: Vec<Value> = r.json().await.unwrap();
    assert!(
        rows.iter().all(|r| r["legal_rep_mobile"].as_str().unwrap().starts_with("*******")),
        "keep_last(4): {rows:?}"
    );
    let (status, body) = g.admin(Method::POST, &format!("/admin/agreements/{agreement}/revoke"), None).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("revoked")));
    let r = get(&url, &key).await;
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("revoked"), "{body}");
}

#[tokio::test]
async fn the_admin_api_needs_the_operator_token_and_refuses_bad_terms() {
    let g = Gateway::demo();
    let r = client()
        .post(format!("{}/admin/keys", g.admin))
        .json(&json!({"principal": "demo-analytics"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = client().get(format!("{}/admin/agreements", g.admin)).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(r.status(), 401);
    let (status, body) = g.admin(Method::POST, "/admin/keys", Some(json!({"principal": "nobody"}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")));
    let (status, body) = g
        .admin(Method::POST, "/admin/principals", Some(json!({"id": "demo-analytics", "name": "x", "role": "user"})))
        .await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("conflict")));
    let (status, body) =
        g.admin(Method::POST, "/admin/principals", Some(json!({"id": "x", "name": "x", "role": "king"}))).await;
    assert_eq!(status, 400);
    assert!(body["error"]["message"].as_str().unwrap().starts_with("role:"), "{body}");
    let terms = |columns: Value, masks: Value, dataset: &str| {
        json!({"principal": "demo-analytics", "dataset": dataset, "columns": columns, "masks": masks,
               "valid_until": "2099-01-01T00:00:00Z", "rate": {"per_second": 1, "burst": 1},
               "quota": {"requests_per_day": 1, "rows_per_day": 1, "bytes_per_day": 1}})
    };
    for (body, field) in [
        (terms(json!(["nope"]), json!({}), "enterprises"), "datasets[0].columns"),
        (terms(json!(["uscc"]), json!({"uscc": "year_only"}), "enterprises"), "datasets[0].masks.uscc"),
        (terms(json!(["route"]), json!({}), "bus-arrivals"), "datasets[0].dataset"),
        (terms(json!(["x"]), json!({}), "subsistence-allowance"), "datasets[0].dataset"),
    ] {
        let (status, answer) = g.admin(Method::POST, "/admin/agreements", Some(body)).await;
        assert_eq!(status, 400, "{answer}");
        assert!(answer["error"]["message"].as_str().unwrap().starts_with(field), "{answer}");
    }
    let (status, body) =
        g.admin(Method::POST, "/admin/agreements", Some(json!({"principal": "x", "masks": {"a": "blur"}}))).await;
    assert_eq!(status, 400);
    assert!(body["error"]["message"].as_str().unwrap().contains("unknown mask `blur`"), "{body}");
}

#[tokio::test]
async fn anonymous_callers_are_limited_per_address() {
    let site = crate::fixture::Site::with_settings(
        "[limits]\nanonymous_rate = { per_second = 1, burst = 2 }\nkey_rate = { per_second = 1, burst = 4 }\n",
        &[("numbers", "csv", "numbers.csv", r#"[{ name = "n", type = "int64" }]"#)],
    );
    std::fs::write(site.data_dir.join("numbers.csv"), "n\n1\n2\n").unwrap();
    let g = site.start();
    let url = g.url("/v1/datasets/numbers/rows");
    for attempt in 1.. {
        let started = Instant::now();
        let mut statuses = Vec::new();
        for _ in 0..3 {
            statuses.push(client().get(&url).send().await.unwrap().status().as_u16());
        }
        let r = client().get(&url).send().await.unwrap();
        if started.elapsed() >= REFILL && attempt < 5 {
            // The address's limit is the same on the next try: wait until it is full again.
            tokio::time::sleep(Duration::from_secs(3)).await;
            continue;
        }
        assert!(started.elapsed() < REFILL, "no run of four calls fit inside one second in five tries");
        assert_eq!(statuses, vec![200, 200, 429], "burst 2 per address");
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["ratelimit-policy"], "\"anonymous\";q=2;w=1");
        assert!(r.headers().contains_key("retry-after"));
        break;
    }
    // Metadata and the catalog are not rate limited.
    assert_eq!(client().get(g.url("/v1/catalog")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn every_mask_gives_its_exact_output_through_the_pipeline() {
    let g = Gateway::demo();
    let (status, _) =
        g.admin(Method::POST, "/admin/principals", Some(json!({"id": "acme", "name": "Acme", "role": "user"}))).await;
    assert_eq!(status, 201);
    let (_, key) = g.admin(Method::POST, "/admin/keys", Some(json!({"principal": "acme"}))).await;
    let key = key["key"].as_str().unwrap().to_owned();
    let (status, body) = g
        .admin(
            Method::POST,
            "/admin/agreements",
            Some(json!({
                "principal": "acme", "dataset": "enterprises",
                "columns": ["uscc", "name", "registered_capital", "established_on", "legal_rep_name", "status"],
                "masks": {"name": "redact", "uscc": "hash", "registered_capital": "null", "established_on": "year_only",
                          "legal_rep_name": "keep_last(1)", "status": "keep_first(2)"},
                "valid_until": "2099-01-01T00:00:00Z", "rate": {"per_second": 100, "burst": 100},
                "quota": {"requests_per_day": 1000, "rows_per_day": 1_000_000, "bytes_per_day": 1_000_000_000},
            })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let hash_key = std::fs::read_to_string(g.data_dir.join("mask-hash.key")).unwrap();
    let source = read_source(&g.data_dir.join("demo/enterprises.arrow"));
    let raw = |column: &str, row: usize| -> String {
        let array = source.column_by_name(column).unwrap();
        arrow::util::display::array_value_to_string(array, row).unwrap()
    };

    // JSON: values, in source order (no row filter in these terms).
    let rows: Vec<Value> = get(&g.url("/v1/datasets/enterprises/rows?limit=50"), &key).await.json().await.unwrap();
    assert_eq!(rows.len(), 50);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row["name"], "***");
        assert_eq!(row["uscc"], policy::Mask::Hash.apply_text(&raw("uscc", i), hash_key.trim().as_bytes()));
        assert_eq!(row["uscc"].as_str().unwrap().len(), 64);
        assert_eq!(row["registered_capital"], Value::Null);
        assert_eq!(row["established_on"], json!(raw("established_on", i)[..4].parse::<i64>().unwrap()));
        let name: Vec<char> = raw("legal_rep_name", i).chars().collect();
        let expected: String =
            std::iter::repeat_n('*', name.len() - 1).chain(std::iter::once(name[name.len() - 1])).collect();
        assert_eq!(row["legal_rep_name"], expected);
        let status = raw("status", i);
        assert_eq!(row["status"], format!("{}{}", &status[..2], "*".repeat(status.len() - 2)));
    }
    // Arrow: masked columns arrive typed as the masks make them.
    let body = get(&g.url("/v1/datasets/enterprises/rows?format=arrow&limit=50"), &key).await.bytes().await.unwrap();
    let batches = read_arrow_stream(&body);
    let schema = batches[0].schema();
    assert_eq!(schema.field_with_name("established_on").unwrap().data_type(), &arrow::datatypes::DataType::Int64);
    assert_eq!(schema.field_with_name("uscc").unwrap().data_type(), &arrow::datatypes::DataType::Utf8);
    assert_eq!(batches[0].column_by_name("registered_capital").unwrap().null_count(), batches[0].num_rows());
    // A filter on a year_only column takes the masked type: an integer year.
    let r = get(&g.url("/v1/datasets/enterprises/rows?filter=established_on%20%3E%3D%202020"), &key).await;
    assert_eq!(r.status(), 200);
    let rows: Vec<Value> = r.json().await.unwrap();
    assert!(!rows.is_empty() && rows.iter().all(|r| r["established_on"].as_i64().unwrap() >= 2020));
    // The store keeps the hash key across restarts: the same value hashes the same way.
    assert_eq!(hash_key.trim().len(), 64);
}

#[tokio::test]
async fn concurrent_calls_cannot_together_pass_the_row_quota() {
    let g = Gateway::demo();
    let fast = json!({"per_second": 1000, "burst": 1000});
    let (key, _) =
        holder(&g, "acme", fast, json!({"requests_per_day": 1000, "rows_per_day": 10, "bytes_per_day": 1_000_000_000}))
            .await;
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let (url, key) = (g.url("/v1/datasets/enterprises/rows?limit=4"), key.clone());
            tokio::spawn(async move {
                let r = client().get(url).bearer_auth(key).send().await.unwrap();
                if r.status() == 200 {
                    r.json::<Vec<Value>>().await.unwrap().len()
                } else {
                    assert_eq!(r.status(), 429);
                    0
                }
            })
        })
        .collect();
    let mut delivered = 0;
    for c in calls {
        delivered += c.await.unwrap();
    }
    assert!(delivered <= 10, "{delivered} rows left under a quota of 10");
    assert_eq!(delivered, 8, "two calls of 4 fit; the rest are refused");
}

#[tokio::test]
async fn users_see_their_own_agreements_and_no_one_elses() {
    let g = Gateway::demo();
    let demo = g.demo_key();
    let big = json!({"requests_per_day": 10, "rows_per_day": 10, "bytes_per_day": 10_000});
    let (acme, acme_agreement) = holder(&g, "acme", json!({"per_second": 1, "burst": 1}), big).await;
    let get_with = |path: &str, key: Option<&str>| {
        let mut request = client().get(g.url(path));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        async move {
            let r = request.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = get_with("/v1/agreements", None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("key_required")));
    let (status, _) = get_with("/v1/agreements", Some("kf_0123456789abcdef_00")).await;
    assert_eq!(status, 401);

    let (status, body) = get_with("/v1/agreements", Some(&demo)).await;
    assert_eq!(status, 200, "{body}");
    let mine = body["agreements"].as_array().unwrap();
    assert_eq!(mine.len(), 1, "{body}");
    assert_eq!(mine[0]["id"], "demo-enterprises");
    assert_eq!(mine[0]["status"], "active");
    assert_eq!(mine[0]["datasets"][0]["row_filter"], "district = 'Haizhou'");
    assert_eq!(mine[0]["datasets"][0]["masks"]["legal_rep_mobile"], "cn_mobile");

    let (status, body) = get_with("/v1/agreements", Some(&acme)).await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = body["agreements"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [acme_agreement.as_str()], "acme sees its own only");
    let (status, one) = get_with(&format!("/v1/agreements/{acme_agreement}"), Some(&acme)).await;
    assert_eq!((status, one["principal"].as_str()), (200, Some("acme")));
    let (status, other) = get_with("/v1/agreements/demo-enterprises", Some(&acme)).await;
    let (_, missing) = get_with("/v1/agreements/no-such", Some(&acme)).await;
    assert_eq!(status, 404);
    assert_eq!(other, missing, "another's agreement reads exactly like one that does not exist");

    // Revoked by the operators: the holder sees it so at once.
    let (status, _) = g.admin(Method::POST, &format!("/admin/agreements/{acme_agreement}/revoke"), None).await;
    assert_eq!(status, 200);
    let (_, one) = get_with(&format!("/v1/agreements/{acme_agreement}"), Some(&acme)).await;
    assert_eq!(one["status"], "revoked");
}

/// A holder sees what its agreement used today against its quotas, as the limits count it: from
/// the first call, and after a restart from the usage the store kept.
#[tokio::test]
async fn a_holder_sees_what_its_agreement_used_today() {
    let g = Gateway::demo();
    let quota = json!({"requests_per_day": 100, "rows_per_day": 1000, "bytes_per_day": 10_000_000});
    let (key, id) = holder(&g, "acme", json!({"per_second": 100, "burst": 100}), quota).await;
    let used = |g: &Gateway| {
        let request = client().get(g.url(&format!("/v1/agreements/{id}"))).bearer_auth(&key);
        async move {
            let r = request.send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }
    };
    let today = (chrono::Utc::now() + chrono::Duration::hours(8)).date_naive().to_string();
    let fresh = used(&g).await;
    assert_eq!(fresh["used_today"], json!({"requests": 0, "rows": 0, "bytes": 0}), "{fresh}");
    assert_eq!(fresh["quota_day"], today, "the quota day is the platform's (UTC+8)");
    let mut bytes = 0;
    for _ in 0..3 {
        let r = get(&g.url("/v1/datasets/enterprises/rows?limit=2"), &key).await;
        assert_eq!(r.status(), 200);
        bytes += r.bytes().await.unwrap().len() as u64;
    }
    let after = used(&g).await["used_today"].clone();
    assert_eq!((&after["requests"], &after["rows"]), (&json!(3), &json!(6)), "{after}");
    assert!(after["bytes"].as_u64().unwrap() >= bytes, "{after}: {bytes} bytes received");
    let listed = client().get(g.url("/v1/agreements")).bearer_auth(&key).send().await.unwrap();
    let listed: Value = listed.json().await.unwrap();
    assert_eq!(listed["agreements"][0]["used_today"], after, "the list says the same");
    let g = g.restart();
    assert_eq!(used(&g).await["used_today"], after, "kept across a restart");
}

#[tokio::test]
async fn holders_report_how_they_used_the_data_on_their_own_agreements_only() {
    let g = Gateway::demo();
    let demo = g.demo_key();
    let big = json!({"requests_per_day": 10, "rows_per_day": 10, "bytes_per_day": 10_000});
    let (acme, acme_agreement) = holder(&g, "acme", json!({"per_second": 1, "burst": 1}), big).await;
    let post = |path: String, key: Option<String>, body: Value| {
        let mut request = client().post(g.url(&path)).json(&body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        async move {
            let r = request.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let url = "/v1/agreements/demo-enterprises/feedback".to_owned();
    let usage = json!({"usage": "Scored 1,204 Haizhou enterprises for a credit model; no record left our servers."});
    assert_eq!(post(url.clone(), None, usage.clone()).await.0, 401);
    assert_eq!(post(url.clone(), Some(acme.clone()), usage.clone()).await.0, 404, "not acme's agreement");
    assert_eq!(post(url.clone(), Some(demo.clone()), json!({"usage": " "})).await.0, 400);
    assert_eq!(post(url.clone(), Some(demo.clone()), json!({"usage": "x", "rating": 5})).await.0, 400);
    let (status, filed) = post(url.clone(), Some(demo.clone()), usage.clone()).await;
    assert_eq!(status, 201, "{filed}");
    let (status, _) =
        post(format!("/v1/agreements/{acme_agreement}/feedback"), Some(acme), json!({"usage": "tests"})).await;
    assert_eq!(status, 201);

    let (status, body) = g.admin(Method::GET, "/admin/agreements/demo-enterprises/feedback", None).await;
    assert_eq!(status, 200);
    let kept = body["feedback"].as_array().unwrap();
    assert_eq!(kept.len(), 1, "{body}");
    assert_eq!((kept[0]["id"].clone(), kept[0]["principal"].as_str()), (filed["id"].clone(), Some("demo-analytics")));
    assert_eq!(kept[0]["usage"], usage["usage"]);
    let g = g.restart();
    let (_, again) = g.admin(Method::GET, "/admin/agreements/demo-enterprises/feedback", None).await;
    assert_eq!(again, body, "feedback survives a restart");
}

/// A preview is charged to `bytes_per_day` for the bytes it is sent as (the pretty-printed
/// envelope), not for its rows alone: a quota one byte short of it refuses it, and spends
/// nothing.
#[tokio::test]
async fn a_preview_is_charged_for_the_bytes_it_is_sent_as() {
    let g = Gateway::demo();
    let fast = json!({"per_second": 100, "burst": 100});
    let preview = g.url("/v1/datasets/enterprises/preview");
    let big = json!({"requests_per_day": 100, "rows_per_day": 1_000_000, "bytes_per_day": 1_000_000_000});
    let (key, _) = holder(&g, "measure", fast.clone(), big).await;
    let r = get(&preview, &key).await;
    assert_eq!(r.status(), 200);
    let length: u64 = r.headers()["content-length"].to_str().unwrap().parse().unwrap();
    let sent = r.bytes().await.unwrap().len() as u64;
    assert_eq!(sent, length);
    let short = json!({"requests_per_day": 100, "rows_per_day": 1_000_000, "bytes_per_day": sent - 1});
    let (key, _) = holder(&g, "short", fast.clone(), short).await;
    let r = get(&preview, &key).await;
    assert_eq!(r.status(), 429);
    let body: Value = r.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("bytes_per_day"), "{body}");
    let exact = json!({"requests_per_day": 100, "rows_per_day": 1_000_000, "bytes_per_day": sent});
    let (key, _) = holder(&g, "exact", fast, exact).await;
    assert_eq!(get(&preview, &key).await.status(), 200, "a quota of exactly its size covers it");
    assert_eq!(get(&g.url("/v1/datasets/enterprises/rows?limit=1"), &key).await.status(), 429, "and is spent by it");
}
