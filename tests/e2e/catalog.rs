//! The open catalog: listing, filters, paging, and the invisibility of non-open data.

use serde_json::Value;

use crate::fixture::{client, expect_error, get_json, Gateway};

fn ids(body: &Value) -> Vec<&str> {
    body["datasets"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn catalog_lists_unconditional_and_conditional_datasets_but_never_non_open_ones() {
    let g = Gateway::demo();
    let (status, body) = get_json(&g.url("/v1/catalog")).await;
    assert_eq!(status, 200);
    assert_eq!(body["total"], 4);
    assert_eq!(ids(&body), vec!["bus-arrivals", "parking-lots", "air-quality", "enterprises"]);
    let enterprises = &body["datasets"][3];
    assert_eq!(enterprises["open_type"], "conditional");
    assert_eq!(enterprises["owner"], "Municipal Market Supervision Administration");

    let (_, body) = get_json(&g.url("/v1/catalog?open_type=non_open")).await;
    assert_eq!(body["total"], 0);
    let (_, body) = get_json(&g.url("/v1/catalog?q=allowance")).await;
    assert_eq!(body["total"], 0, "non-open entries must not be found by search either");
}

#[tokio::test]
async fn catalog_filters_by_owner_open_type_and_keyword() {
    let g = Gateway::demo();
    let (_, body) = get_json(&g.url("/v1/catalog?owner=Municipal%20Transport%20Bureau")).await;
    assert_eq!(ids(&body), vec!["bus-arrivals", "parking-lots"]);
    let (_, body) = get_json(&g.url("/v1/catalog?open_type=conditional")).await;
    assert_eq!(ids(&body), vec!["enterprises"]);
    let (_, body) = get_json(&g.url("/v1/catalog?q=%E5%85%AC%E4%BA%A4")).await; // 公交
    assert_eq!(ids(&body), vec!["bus-arrivals"]);
    let (_, body) = get_json(&g.url("/v1/catalog?q=PM2.5&open_type=unconditional")).await;
    assert_eq!(ids(&body), vec!["air-quality"]);
    let (_, body) = get_json(&g.url("/v1/catalog?owner=nobody")).await;
    assert_eq!((body["total"].as_u64(), ids(&body).len()), (Some(0), 0));
}

#[tokio::test]
async fn catalog_filters_by_format_and_update_frequency_and_counts_each_filters_values() {
    let g = Gateway::demo();
    let (_, body) = get_json(&g.url("/v1/catalog?format=csv")).await;
    assert_eq!(ids(&body), vec!["bus-arrivals"]);
    let (_, body) = get_json(&g.url("/v1/catalog?update_frequency=hourly")).await;
    assert_eq!(ids(&body), vec!["parking-lots", "air-quality"]);
    let (_, body) = get_json(&g.url("/v1/catalog?update_frequency=hourly&format=parquet")).await;
    assert_eq!(ids(&body), vec!["air-quality"]);

    // Each filter's values are counted over what the other filters keep: with format=csv given,
    // the formats still list every format, and the other facets only the CSV entry's values.
    let (_, body) = get_json(&g.url("/v1/catalog?format=csv&per_page=1")).await;
    let facet = |name: &str| -> Vec<(String, u64)> {
        body["facets"][name]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| (v["value"].as_str().unwrap().to_owned(), v["count"].as_u64().unwrap()))
            .collect()
    };
    let owned = |pairs: &[(&str, u64)]| pairs.iter().map(|(v, n)| (v.to_string(), *n)).collect::<Vec<_>>();
    assert_eq!(facet("format"), owned(&[("arrow_ipc", 1), ("csv", 1), ("ndjson", 1), ("parquet", 1)]));
    assert_eq!(facet("open_type"), owned(&[("unconditional", 1)]));
    assert_eq!(facet("update_frequency"), owned(&[("realtime", 1)]));
    assert_eq!(facet("owner"), owned(&[("Municipal Transport Bureau", 1)]));

    let (_, body) = get_json(&g.url("/v1/catalog")).await;
    let owners = body["facets"]["owner"].as_array().unwrap();
    assert_eq!(owners[0]["value"], "Municipal Transport Bureau");
    assert_eq!(owners[0]["count"], 2);
    assert!(
        owners.iter().all(|o| o["value"] != "Municipal Civil Affairs Bureau"),
        "no non-open owner's entry is counted"
    );
    assert_eq!(owners.iter().map(|o| o["count"].as_u64().unwrap()).sum::<u64>(), 4);
    for (query, code) in [("format=xlsx", "bad_parameter"), ("update_frequency=sometimes", "bad_parameter")] {
        expect_error(&g.url(&format!("/v1/catalog?{query}")), 400, code).await;
    }
}

#[tokio::test]
async fn entries_not_updated_within_their_declared_frequency_are_marked_stale() {
    // The demo entries were last updated in mid-2025 and declare hourly to daily updates.
    let g = Gateway::demo();
    let (_, body) = get_json(&g.url("/v1/catalog")).await;
    for d in body["datasets"].as_array().unwrap() {
        assert_eq!(d["stale"], true, "{}", d["id"]);
    }
    let (_, body) = get_json(&g.url("/v1/datasets/air-quality")).await;
    assert_eq!(body["stale"], true);
}

#[tokio::test]
async fn catalog_pages_through_every_entry_exactly_once() {
    let g = Gateway::demo();
    let mut seen = Vec::new();
    for page in 1..=3 {
        let (status, body) = get_json(&g.url(&format!("/v1/catalog?per_page=3&page={page}"))).await;
        assert_eq!(status, 200);
        assert_eq!(body["total"], 4);
        assert_eq!(body["page"], page);
        seen.extend(ids(&body).into_iter().map(str::to_owned));
    }
    assert_eq!(seen, vec!["bus-arrivals", "parking-lots", "air-quality", "enterprises"]);
}

#[tokio::test]
async fn catalog_refuses_bad_parameters() {
    let g = Gateway::demo();
    for (query, code) in [
        ("page=0", "bad_parameter"),
        ("page=x", "bad_parameter"),
        ("per_page=0", "bad_parameter"),
        ("per_page=101", "bad_parameter"),
        ("open_type=sometimes", "bad_parameter"),
        ("sort=title", "unknown_parameter"),
    ] {
        expect_error(&g.url(&format!("/v1/catalog?{query}")), 400, code).await;
    }
}

#[tokio::test]
async fn dataset_metadata_shows_fields_and_schema() {
    let g = Gateway::demo();
    let (status, body) = get_json(&g.url("/v1/datasets/enterprises")).await;
    assert_eq!(status, 200);
    let fields = body["fields"].as_array().unwrap();
    assert_eq!(fields.len(), 10);
    let mobile = fields.iter().find(|f| f["name"] == "legal_rep_mobile").unwrap();
    assert_eq!(mobile["sensitivity"], "personal");
    assert_eq!(mobile["type"], "string");
    let schema = body["schema"].as_array().unwrap();
    assert_eq!(schema[5]["name"], "established_on");
    assert_eq!(schema[5]["arrow_type"], "Date32");
}

#[tokio::test]
async fn non_open_datasets_answer_exactly_like_unknown_ones_on_every_endpoint() {
    let g = Gateway::demo();
    let client = client();
    for suffix in ["", "/rows", "/rows?format=csv", "/preview", "/download"] {
        let hidden = client.get(g.url(&format!("/v1/datasets/subsistence-allowance{suffix}"))).send().await.unwrap();
        let unknown = client.get(g.url(&format!("/v1/datasets/no-such-dataset{suffix}"))).send().await.unwrap();
        assert_eq!(hidden.status(), 404);
        assert_eq!(unknown.status(), 404);
        let header_names = |r: &reqwest::Response| {
            let mut names: Vec<String> =
                r.headers().keys().map(|k| k.to_string()).filter(|k| k != "date" && k != "x-request-id").collect();
            names.sort();
            names
        };
        assert_eq!(header_names(&hidden), header_names(&unknown), "{suffix}");
        assert_eq!(hidden.bytes().await.unwrap(), unknown.bytes().await.unwrap(), "{suffix}");
    }
    let head = client.head(g.url("/v1/datasets/subsistence-allowance/download")).send().await.unwrap();
    assert_eq!(head.status(), 404);
}

#[tokio::test]
async fn conditional_data_is_described_but_its_data_endpoints_refuse() {
    let g = Gateway::demo();
    for suffix in ["/rows", "/preview", "/download"] {
        let message = expect_error(&g.url(&format!("/v1/datasets/enterprises{suffix}")), 401, "key_required").await;
        assert!(message.contains("apply for an agreement"), "{message}");
    }
    let r = client().get(g.url("/v1/datasets/enterprises/rows")).send().await.unwrap();
    assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"kaifang\"");
}

#[tokio::test]
async fn dataset_ids_with_path_tricks_are_not_found() {
    let g = Gateway::demo();
    for path in [
        "/v1/datasets/..%2F..%2Fetc%2Fpasswd/download",
        "/v1/datasets/%2e%2e/download",
        "/v1/datasets/..",
        "/v1/datasets/demo%2Fbus-arrivals.csv/download",
        "/v1/datasets/bus-arrivals%2Fdownload",
        "/v1/datasets/BUS-ARRIVALS",
        "/v1/datasets/bus-arrivals%00/rows",
    ] {
        expect_error(&g.url(path), 404, "not_found").await;
    }
}

#[tokio::test]
async fn health_readiness_and_openapi_answer() {
    let g = Gateway::demo();
    assert_eq!(get_json(&g.url("/healthz")).await, (200, serde_json::json!({"status": "ok"})));
    let (status, ready) = get_json(&g.url("/readyz")).await;
    assert_eq!((status, ready["status"].as_str()), (200, Some("ready")));
    let (status, doc) = get_json(&g.url("/openapi.json")).await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/v1/catalog",
        "/v1/datasets/{id}",
        "/v1/datasets/{id}/rows",
        "/v1/datasets/{id}/preview",
        "/v1/datasets/{id}/download",
        "/healthz",
        "/readyz",
        "/v1/reports",
    ] {
        assert!(doc["paths"][path].is_object(), "openapi lacks {path}");
    }
    for path in ["/v1/applications", "/v1/applications/{id}/approve", "/v1/objections/{id}/resolve"] {
        assert!(doc["paths"][path].is_object(), "openapi lacks {path}");
    }
    assert!(doc["paths"]["/admin/principals"].is_null(), "the admin API is documented on its own port");
    let admin =
        client().get(format!("{}/admin/openapi.json", g.admin)).bearer_auth(g.admin_token()).send().await.unwrap();
    assert_eq!(admin.status(), 200);
    let admin: serde_json::Value = admin.json().await.unwrap();
    for path in [
        "/admin/principals",
        "/admin/keys",
        "/admin/keys/{id}",
        "/admin/agreements",
        "/admin/agreements/{id}/revoke",
        "/admin/reports",
        "/admin/reload",
        "/admin/datasets/{id}/publish",
        "/admin/datasets/{id}/withdraw",
    ] {
        assert!(admin["paths"][path].is_object(), "the admin document lacks {path}");
    }
    // Every JSON answer's schema comes from the code's types: the refusal body is one of them.
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
    assert!(doc["components"]["schemas"]["ApplicationView"].is_object());
    // Whether an application's due day is provisional, and in which years, is documented.
    let application = &doc["components"]["schemas"]["Application"];
    for field in ["due_by", "due_by_provisional", "due_by_provisional_years"] {
        assert!(application["properties"][field].is_object(), "Application lacks {field}: {application}");
    }
    assert_eq!(application["properties"]["due_by_provisional"]["type"], "boolean", "{application}");
    let reloaded = &admin["components"]["schemas"]["Reloaded"]["properties"]["applications_recounted"];
    assert!(reloaded.is_object(), "Reloaded lacks applications_recounted");
    assert!(doc["paths"]["/v1/datasets/{id}/rows"]["get"]["responses"]["429"].is_object());
    let r = client().post(g.url("/v1/catalog")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET, HEAD");
}

/// Every operation both documents list is routed: none answers "no such endpoint". (The
/// answers' shapes are schemathesis's to check, in `.ci/run`.)
#[tokio::test]
async fn every_documented_operation_is_routed() {
    let g = Gateway::demo();
    let token = g.admin_token();
    for (base, document, key) in
        [(g.base.clone(), "/openapi.json", None), (g.admin.clone(), "/admin/openapi.json", Some(&token))]
    {
        let mut request = client().get(format!("{base}{document}"));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let doc: serde_json::Value = request.send().await.unwrap().json().await.unwrap();
        let mut operations = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                let url = format!("{base}{}", path.replace("{id}", "no-such-id").replace("{format}", "csv"));
                let mut request = client().request(method.to_uppercase().parse().unwrap(), &url);
                if let Some(key) = key {
                    request = request.bearer_auth(key);
                }
                let r = request.send().await.unwrap();
                let status = r.status();
                let body = r.text().await.unwrap_or_default();
                assert!(
                    status != 405 && !body.contains("no such endpoint") && !body.contains("no such admin endpoint"),
                    "{method} {path}: {status} {body}"
                );
                operations += 1;
            }
        }
        assert!(operations >= 20, "{document}: {operations} operations");
    }
}

#[tokio::test]
async fn readiness_fails_when_a_source_file_is_missing() {
    let g = Gateway::demo();
    std::fs::remove_file(g.data_dir.join("demo/parking-lots.ndjson")).unwrap();
    let (status, ready) = get_json(&g.url("/readyz")).await;
    assert_eq!(status, 503);
    assert_eq!(ready["checks"]["missing_sources"], serde_json::json!(["parking-lots"]));
    expect_error(&g.url("/v1/datasets/parking-lots/rows"), 502, "source_failed").await;
}

#[tokio::test]
async fn keys_in_the_query_string_are_refused_and_unknown_keys_rejected() {
    let g = Gateway::demo();
    for query in ["api_key=abc", "key=abc", "access_token=abc", "ApiKey=abc"] {
        expect_error(&g.url(&format!("/v1/datasets/bus-arrivals/rows?{query}")), 400, "key_in_query").await;
    }
    let r = client().get(g.url("/v1/datasets/bus-arrivals/rows")).bearer_auth("not-a-key").send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = client().get(g.url("/v1/datasets/bus-arrivals/rows")).header("x-api-key", "nope").send().await.unwrap();
    assert_eq!(r.status(), 401);
}

/// Refusals are the documented error body: the codes the document names are the codes sent,
/// and an error carries no key the document does not describe.
#[tokio::test]
async fn refusals_are_the_documented_error_body() {
    let g = Gateway::demo();
    let (_, doc) = get_json(&g.url("/openapi.json")).await;
    let detail = &doc["components"]["schemas"]["ErrorDetail"];
    let described = detail["properties"]["code"]["description"].as_str().unwrap();
    let (status, body) = get_json(&g.url("/v1/datasets/no-such-dataset")).await;
    assert_eq!(status, 404);
    let code = body["error"]["code"].as_str().unwrap();
    assert!(described.contains(&format!("`{code}`")), "`{code}` is sent; the document names: {described}");
    let (status, body) = get_json(&g.url("/v1/datasets/bus-arrivals/rows?filter=delay_seconds%20%3E")).await;
    assert_eq!(status, 400);
    for key in body["error"].as_object().unwrap().keys() {
        assert!(detail["properties"][key.as_str()].is_object(), "`{key}` is not in the documented ErrorDetail");
    }
    assert!(body["error"]["position"].as_u64().is_some(), "{body}");
}

/// Both ports read a request one way: a wrong method is 405 with `Allow`, ids are
/// percent-decoded, a repeated parameter counts as its last value, unknown parameters are refused,
/// and a body must be a JSON object.
#[tokio::test]
async fn both_ports_read_requests_one_way() {
    let g = Gateway::demo();
    let admin = |method: reqwest::Method, path: &str| {
        client().request(method, format!("{}{path}", g.admin)).bearer_auth(g.admin_token())
    };
    for (method, path, allow) in [
        (reqwest::Method::PUT, "/admin/keys", "GET, HEAD, POST"),
        (reqwest::Method::GET, "/admin/reload", "POST"),
        (reqwest::Method::POST, "/admin/agreements/demo-enterprises", "GET, HEAD"),
    ] {
        let r = admin(method.clone(), path).send().await.unwrap();
        assert_eq!(r.status(), 405, "{method} {path}");
        assert_eq!(r.headers()["allow"], allow, "{method} {path}");
    }
    let r = client().put(g.url("/v1/catalog")).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.headers()["allow"].to_str().unwrap()), (405, "GET, HEAD"));

    // `%2D` is `-`: the id is the demo agreement's on both ports.
    let r = admin(reqwest::Method::GET, "/admin/agreements/demo%2Denterprises").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = client().get(g.url("/v1/agreements/demo%2Denterprises")).bearer_auth(g.demo_key()).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // The last of a repeated parameter counts, on both ports.
    let r = admin(reqwest::Method::GET, "/admin/applications?status=bogus&status=submitted").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let (status, _) = get_json(&g.url("/v1/catalog?open_type=bogus&open_type=conditional")).await;
    assert_eq!(status, 200);

    // A typo is not silently ignored, on the admin lists too.
    for path in ["/admin/applications?statu=submitted", "/admin/objections?datset=x", "/admin/keys?all=1"] {
        let r = admin(reqwest::Method::GET, path).send().await.unwrap();
        assert_eq!(r.status(), 400, "{path}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unknown_parameter", "{path}");
    }

    // A JSON array is not taken for an object's fields in order, and nothing is made of it.
    let r = admin(reqwest::Method::POST, "/admin/principals")
        .json(&serde_json::json!(["array-principal", "Array", "user", null]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let (_, keys) =
        g.admin(reqwest::Method::POST, "/admin/keys", Some(serde_json::json!({"principal": "array-principal"}))).await;
    assert_ne!(keys["principal"], "array-principal", "no principal was made: {keys}");
}
