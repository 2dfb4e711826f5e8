//! HTTP as its clients expect it: CORS, compression, formats by suffix and by Accept, paging
//! links and counts, caching validators, Range reads counted once, and the parameters of other
//! clients (`_`, SoQL).

use reqwest::{Method, Response};
use serde_json::Value;
use tokio::io::AsyncReadExt;

use crate::audit::records;
use crate::fixture::{client, expect_error, get_json, read_arrow_stream, read_csv, Gateway, Site};

async fn get(url: &str, headers: &[(&str, &str)]) -> Response {
    let mut request = client().get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

fn header<'a>(r: &'a Response, name: &str) -> &'a str {
    r.headers().get(name).map(|v| v.to_str().unwrap()).unwrap_or_else(|| panic!("no {name} in {:?}", r.headers()))
}

async fn decode(coding: &str, body: &[u8]) -> Vec<u8> {
    use async_compression::tokio::bufread::{BrotliDecoder, GzipDecoder, ZstdDecoder};
    let mut out = Vec::new();
    match coding {
        "gzip" => GzipDecoder::new(body).read_to_end(&mut out).await.unwrap(),
        "br" => BrotliDecoder::new(body).read_to_end(&mut out).await.unwrap(),
        "zstd" => ZstdDecoder::new(body).read_to_end(&mut out).await.unwrap(),
        other => panic!("{other}"),
    };
    out
}

#[tokio::test]
async fn preflights_are_answered_with_what_each_endpoint_takes() {
    let g = Gateway::demo();
    let preflight = |path: &str, method: &str| {
        client()
            .request(Method::OPTIONS, g.url(path))
            .header("origin", "https://observable.example")
            .header("access-control-request-method", method)
            .header("access-control-request-headers", "authorization, x-api-key")
    };
    for (path, methods) in [
        ("/v1/datasets/bus-arrivals/rows", "GET, HEAD, OPTIONS"),
        ("/v1/datasets/enterprises/rows.csv", "GET, HEAD, OPTIONS"),
        ("/v1/datasets/air-quality/download", "GET, HEAD, OPTIONS"),
        ("/v1/catalog", "GET, HEAD, OPTIONS"),
        ("/v1/applications", "GET, HEAD, POST, OPTIONS"),
        ("/v1/datasets/enterprises/draft", "GET, HEAD, PUT, OPTIONS"),
        ("/v1/reports", "POST, OPTIONS"),
    ] {
        let r = preflight(path, "GET").send().await.unwrap();
        assert_eq!(r.status(), 204, "{path}");
        assert_eq!(header(&r, "access-control-allow-origin"), "*", "{path}");
        assert_eq!(header(&r, "access-control-allow-methods"), methods, "{path}");
        let allowed = header(&r, "access-control-allow-headers").to_ascii_lowercase();
        for name in ["authorization", "x-api-key", "range", "if-none-match"] {
            assert!(allowed.contains(name), "{path}: {allowed}");
        }
        assert_eq!(header(&r, "access-control-max-age"), "600");
    }
    // No such endpoint: no preflight either.
    assert_eq!(preflight("/v1/nothing", "GET").send().await.unwrap().status(), 404);
    // A plain OPTIONS says what the path takes.
    let r = client().request(Method::OPTIONS, g.url("/v1/applications")).send().await.unwrap();
    assert_eq!((r.status().as_u16(), header(&r, "allow")), (204, "GET, HEAD, POST, OPTIONS"));
    // A preflight is no call: nothing is recorded for it on conditional data.
    assert!(records(&g, "dataset=enterprises").await.is_empty());
    // The admin API is never open to pages.
    let r = client()
        .request(Method::OPTIONS, format!("{}/admin/keys", g.admin))
        .header("origin", "https://observable.example")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    assert_ne!(r.status(), 204);
}

#[tokio::test]
async fn answers_to_pages_expose_the_fields_scripts_read() {
    let g = Gateway::demo();
    let key = g.demo_key();
    let auth = format!("Bearer {key}");
    for (path, headers) in [
        ("/v1/datasets/bus-arrivals/rows?limit=2", vec![("origin", "https://a.example")]),
        (
            "/v1/datasets/enterprises/rows?limit=2",
            vec![("origin", "https://a.example"), ("authorization", auth.as_str())],
        ),
        ("/v1/datasets/enterprises/rows", vec![("origin", "https://a.example")]),
        ("/v1/catalog", vec![("origin", "https://a.example")]),
    ] {
        let r = get(&g.url(path), &headers).await;
        assert_eq!(header(&r, "access-control-allow-origin"), "*", "{path}");
        let exposed = header(&r, "access-control-expose-headers").to_ascii_lowercase();
        for name in ["ratelimit-remaining", "retry-after", "etag", "x-request-id", "content-range", "link"] {
            assert!(exposed.contains(name), "{path}: {exposed}");
        }
    }
    let r = get(&format!("{}/metrics", g.admin), &[("origin", "https://a.example")]).await;
    assert!(r.headers().get("access-control-allow-origin").is_none(), "never on the admin API");
}

#[tokio::test]
async fn only_the_listed_origins_may_call() {
    let site = Site::with_settings(
        "[http.cors]\nallowed_origins = [\"https://data.example.gov\"]\n",
        &[("t", "csv", "t.csv", r#"[{ name = "a", type = "int64" }]"#)],
    );
    std::fs::write(site.data_dir.join("t.csv"), "a\n1\n2\n").unwrap();
    let g = site.start();
    let url = g.url("/v1/datasets/t/rows");
    let r = get(&url, &[("origin", "https://data.example.gov")]).await;
    assert_eq!(header(&r, "access-control-allow-origin"), "https://data.example.gov");
    let vary: Vec<&str> = r.headers().get_all("vary").iter().map(|v| v.to_str().unwrap()).collect();
    assert!(vary.iter().any(|v| v.contains("Origin")), "{vary:?}");
    let r = get(&url, &[("origin", "https://elsewhere.example")]).await;
    assert_eq!(r.status(), 200, "the call itself is answered; the browser keeps it from the page");
    assert!(r.headers().get("access-control-allow-origin").is_none());
    let r = client()
        .request(Method::OPTIONS, &url)
        .header("origin", "https://elsewhere.example")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "origin_not_allowed");
}

#[tokio::test]
async fn answers_round_trip_through_every_coding_byte_for_byte() {
    let g = Gateway::demo();
    for path in [
        // Whole answers (small, from memory) and a streamed one (past the whole-answer bound).
        "/v1/datasets/bus-arrivals/rows.csv",
        "/v1/datasets/parking-lots/rows",
        "/v1/datasets/bus-arrivals/rows.ndjson",
        "/v1/datasets/bus-arrivals/preview",
        "/v1/catalog",
        "/v1/datasets/air-quality",
    ] {
        let plain = get(&g.url(path), &[]).await;
        assert_eq!(plain.status(), 200, "{path}");
        assert!(plain.headers().get("content-encoding").is_none());
        let plain = plain.bytes().await.unwrap();
        for coding in ["gzip", "br", "zstd"] {
            let r = get(&g.url(path), &[("accept-encoding", coding)]).await;
            assert_eq!(r.status(), 200, "{path} {coding}");
            assert_eq!(header(&r, "content-encoding"), coding, "{path}");
            assert!(header(&r, "vary").contains("Accept-Encoding"), "{path}");
            let body = r.bytes().await.unwrap();
            assert!(body.len() < plain.len(), "{path} {coding}: {} of {}", body.len(), plain.len());
            assert_eq!(decode(coding, &body).await, plain, "{path} {coding}");
        }
    }
    // The client's preference decides, ours breaks ties.
    let r = get(&g.url("/v1/catalog"), &[("accept-encoding", "gzip;q=1, br;q=0.5")]).await;
    assert_eq!(header(&r, "content-encoding"), "gzip");
    let r = get(&g.url("/v1/catalog"), &[("accept-encoding", "gzip, deflate, br, zstd")]).await;
    assert_eq!(header(&r, "content-encoding"), "zstd");
}

#[tokio::test]
async fn downloads_stay_byte_exact_unless_a_compressed_copy_lies_beside_the_file() {
    let g = Gateway::demo();
    let url = g.url("/v1/datasets/bus-arrivals/download");
    let file = std::fs::read(g.data_dir.join("demo/bus-arrivals.csv")).unwrap();
    let r = get(&url, &[("accept-encoding", "gzip, br, zstd")]).await;
    assert!(r.headers().get("content-encoding").is_none());
    assert_eq!(r.bytes().await.unwrap(), file);
    // A gzip copy, written after the file: sent as it is to clients that take gzip.
    let copy = b"not really gzip, but the copy's bytes are sent as they are".to_vec();
    std::fs::write(g.data_dir.join("demo/bus-arrivals.csv.gz"), &copy).unwrap();
    let r = get(&url, &[("accept-encoding", "gzip")]).await;
    assert_eq!(header(&r, "content-encoding"), "gzip");
    assert_eq!(header(&r, "content-length"), copy.len().to_string());
    let etag = header(&r, "etag").to_owned();
    assert!(etag.ends_with("-gzip\""), "{etag}");
    assert_eq!(r.bytes().await.unwrap(), copy);
    let r = get(&url, &[("accept-encoding", "br")]).await;
    assert!(r.headers().get("content-encoding").is_none(), "no br copy: the file itself");
    assert_eq!(r.bytes().await.unwrap(), file);
    // A copy older than the file is stale: the file is sent.
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(g.data_dir.join("demo/bus-arrivals.csv.gz"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    let r = get(&url, &[("accept-encoding", "gzip")]).await;
    assert!(r.headers().get("content-encoding").is_none());
    assert_eq!(r.bytes().await.unwrap(), file);
}

#[tokio::test]
async fn a_key_may_come_as_the_password_of_basic_authentication() {
    let g = Gateway::demo();
    let key = g.demo_key();
    let url = g.url("/v1/datasets/enterprises/rows.csv?limit=2");
    let r = client().get(&url).basic_auth("anyone", Some(&key)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(read_csv(&r.text().await.unwrap()).len(), 3);
    let r = client().get(&url).basic_auth("anyone", Some("kf_0000000000000000_00")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = client().get(&url).header("authorization", "Basic not-base64!").send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "unknown_key");
}

#[tokio::test]
async fn a_compressed_conditional_answer_is_recorded_by_the_bytes_sent() {
    let g = Gateway::demo();
    let key = g.demo_key();
    let auth = format!("Bearer {key}");
    let r = get(
        &g.url("/v1/datasets/enterprises/rows.csv?limit=300"),
        &[("authorization", &auth), ("accept-encoding", "gzip"), ("x-request-id", "coded-1")],
    )
    .await;
    assert_eq!(header(&r, "content-encoding"), "gzip");
    assert_eq!(header(&r, "cache-control"), "private, no-store");
    assert!(r.headers().get("etag").is_none());
    let sent = r.bytes().await.unwrap();
    let plain = decode("gzip", &sent).await;
    assert_eq!(read_csv(std::str::from_utf8(&plain).unwrap()).len(), 301);
    let log = records(&g, "dataset=enterprises").await;
    assert_eq!(log["coded-1"][1]["bytes"], sent.len() as u64);
    assert_eq!(log["coded-1"][1]["rows"], 300);
}

#[tokio::test]
async fn formats_are_named_by_suffix_or_accept_and_files_are_named() {
    let g = Gateway::demo();
    let base = g.url("/v1/datasets/bus-arrivals");
    let r = get(&format!("{base}/rows.csv?limit=3"), &[]).await;
    assert_eq!(header(&r, "content-type"), "text/csv; charset=utf-8");
    assert_eq!(header(&r, "content-disposition"), "attachment; filename=\"bus-arrivals.csv\"");
    assert_eq!(read_csv(&r.text().await.unwrap()).len(), 4);
    let r = get(&format!("{base}/rows.arrow?limit=3"), &[]).await;
    assert_eq!(header(&r, "content-disposition"), "attachment; filename=\"bus-arrivals.arrow\"");
    let batches = read_arrow_stream(&r.bytes().await.unwrap());
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 3);
    let r = get(&format!("{base}/rows.ndjson?limit=3"), &[]).await;
    assert_eq!(header(&r, "content-type"), "application/x-ndjson");
    assert_eq!(r.text().await.unwrap().lines().count(), 3);
    let r = get(&format!("{base}/rows.json?limit=3"), &[]).await;
    assert!(r.headers().get("content-disposition").is_none(), "JSON is shown, not saved");
    assert_eq!(r.json::<Value>().await.unwrap().as_array().unwrap().len(), 3);
    // Suffix and parameter must agree.
    expect_error(&format!("{base}/rows.csv?format=json"), 400, "bad_parameter").await;
    assert_eq!(get(&format!("{base}/rows.xml"), &[]).await.status(), 404);
    // Accept: what cannot be served is 406, not silent JSON; wildcards and qualities are read.
    let r = get(&format!("{base}/rows?limit=1"), &[("accept", "text/html, application/xml")]).await;
    assert_eq!(r.status(), 406);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "not_acceptable");
    let r = get(&format!("{base}/rows?limit=1"), &[("accept", "text/html, */*;q=0.8")]).await;
    assert_eq!(header(&r, "content-type"), "application/json");
    let r = get(&format!("{base}/rows?limit=1"), &[("accept", "application/json;q=0.4, text/csv")]).await;
    assert_eq!(header(&r, "content-type"), "text/csv; charset=utf-8");
}

#[tokio::test]
async fn full_pages_link_the_next_and_counts_are_given_on_request() {
    let g = Gateway::demo();
    let all = get(&g.url("/v1/datasets/bus-arrivals/rows.ndjson"), &[]).await.text().await.unwrap();
    let total = all.lines().count();
    let filtered = get(&g.url("/v1/datasets/bus-arrivals/rows.ndjson?filter=delay_seconds%20%3E%20120"), &[])
        .await
        .text()
        .await
        .unwrap()
        .lines()
        .count();
    assert!(filtered > 10 && filtered < total, "{filtered} of {total}");

    let r = get(&g.url("/v1/datasets/bus-arrivals/rows?limit=5&columns=route&_=1712345"), &[]).await;
    assert_eq!(r.status(), 200, "`_` is ignored");
    assert_eq!(header(&r, "link"), "</v1/datasets/bus-arrivals/rows?limit=5&columns=route&offset=5>; rel=\"next\"");
    assert!(r.headers().get("content-range").is_none(), "counted only on request");
    // The last page, short: no next.
    let r = get(&g.url(&format!("/v1/datasets/bus-arrivals/rows?limit=5&offset={}", total - 3)), &[]).await;
    assert!(r.headers().get("link").is_none());
    // Exact counts, as PostgREST gives them.
    let count = [("prefer", "count=exact")];
    let r = get(&g.url("/v1/datasets/bus-arrivals/rows?limit=100"), &count).await;
    assert_eq!(header(&r, "content-range"), format!("0-99/{total}"));
    assert_eq!(header(&r, "preference-applied"), "count=exact");
    let r =
        get(&g.url("/v1/datasets/bus-arrivals/rows?limit=10&offset=20&filter=delay_seconds%20%3E%20120"), &count).await;
    assert_eq!(header(&r, "content-range"), format!("20-29/{filtered}"));
    let r = get(&g.url(&format!("/v1/datasets/bus-arrivals/rows?offset={total}")), &count).await;
    assert_eq!(header(&r, "content-range"), format!("*/{total}"));
    // A streamed answer (past the whole-answer bound) is counted and linked too.
    let page = total - 10;
    let r = get(&g.url(&format!("/v1/datasets/bus-arrivals/rows.ndjson?limit={page}")), &count).await;
    assert!(r.headers().get("content-length").is_none(), "streamed");
    assert_eq!(header(&r, "content-range"), format!("0-{}/{total}", page - 1));
    assert!(header(&r, "link").contains(&format!("offset={page}")));
    assert_eq!(r.text().await.unwrap().lines().count(), page);
}

#[tokio::test]
async fn a_count_that_would_need_a_whole_read_is_refused_clearly() {
    let site = Site::new(&[
        ("c", "csv", "c.csv", r#"[{ name = "a", type = "int64" }]"#),
        ("p", "parquet", "p.parquet", r#"[{ name = "a", type = "int64" }]"#),
    ]);
    std::fs::write(site.data_dir.join("c.csv"), "a\n1\n2\n3\n").unwrap();
    {
        let batch = arrow::record_batch::RecordBatch::try_from_iter([(
            "a",
            std::sync::Arc::new(arrow::array::Int64Array::from(vec![1, 2, 3, 4, 5])) as arrow::array::ArrayRef,
        )])
        .unwrap();
        let file = std::fs::File::create(site.data_dir.join("p.parquet")).unwrap();
        let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
    }
    site.set_entry("c.csv", "cache = \"never\"");
    site.set_entry("p.parquet", "cache = \"never\"");
    let g = site.start();
    let count = [("prefer", "count=exact")];
    let r = get(&g.url("/v1/datasets/c/rows?limit=1"), &count).await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "count_unavailable", "{body}");
    // Parquet records its rows in its footer.
    let r = get(&g.url("/v1/datasets/p/rows?limit=2"), &count).await;
    assert_eq!(header(&r, "content-range"), "0-1/5");
    let r = get(&g.url("/v1/datasets/p/rows?limit=2&filter=a%20%3E%201"), &count).await;
    assert_eq!(r.status(), 400, "a filter on data read from its file needs a whole read");
    assert_eq!(get(&g.url("/v1/datasets/c/rows?limit=1"), &[]).await.status(), 200, "without a count it is served");
}

#[tokio::test]
async fn unconditional_answers_are_cacheable_and_revalidated() {
    let g = Gateway::demo();
    let url = g.url("/v1/datasets/parking-lots/rows?limit=3");
    let r = get(&url, &[]).await;
    assert_eq!(header(&r, "cache-control"), "public, max-age=300", "hourly data");
    let etag = header(&r, "etag").to_owned();
    let r = get(&url, &[("if-none-match", &etag)]).await;
    assert_eq!(r.status(), 304);
    assert_eq!(header(&r, "etag"), etag);
    assert!(r.bytes().await.unwrap().is_empty());
    let r = get(&url, &[("if-none-match", "\"something-else\"")]).await;
    assert_eq!(r.status(), 200);
    // Another query, another format or another coding is another answer.
    let others = [
        get(&g.url("/v1/datasets/parking-lots/rows?limit=4"), &[]).await,
        get(&g.url("/v1/datasets/parking-lots/rows.csv?limit=3"), &[]).await,
        get(&url, &[("accept-encoding", "gzip")]).await,
    ];
    for other in &others {
        assert_ne!(header(other, "etag"), etag);
    }
    let r = get(&g.url("/v1/datasets/bus-arrivals/rows?limit=1"), &[]).await;
    assert_eq!(header(&r, "cache-control"), "public, no-cache", "real-time data is checked every time");
    // A changed file is a new version: the old ETag no longer matches.
    let path = g.data_dir.join("demo/parking-lots.ndjson");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.lines().take(10).collect::<Vec<_>>().join("\n") + "\n").unwrap();
    let r = get(&url, &[("if-none-match", &etag)]).await;
    assert_eq!(r.status(), 200);
    assert_ne!(header(&r, "etag"), etag);
}

#[tokio::test]
async fn socrata_parameters_are_taken_where_they_mean_the_same() {
    let g = Gateway::demo();
    let ours = get(&g.url("/v1/datasets/bus-arrivals/rows?columns=route,delay_seconds&filter=delay_seconds%20%3E%20100&order=-delay_seconds,route&limit=4&offset=2"), &[])
        .await
        .text()
        .await
        .unwrap();
    let soql = get(
        &g.url("/v1/datasets/bus-arrivals/rows?$select=route,delay_seconds&$where=delay_seconds%20%3E%20100&$order=delay_seconds%20DESC,route&$limit=4&$offset=2"),
        &[],
    )
    .await;
    assert_eq!(soql.status(), 200);
    assert_eq!(soql.text().await.unwrap(), ours);
    let message = expect_error(&g.url("/v1/datasets/bus-arrivals/rows?$group=route"), 400, "soql_unsupported").await;
    assert!(message.contains("$group"), "{message}");
    let message =
        expect_error(&g.url("/v1/datasets/bus-arrivals/rows?$select=count(route)"), 400, "soql_unsupported").await;
    assert!(message.contains("count(route)"), "{message}");
    expect_error(&g.url("/v1/datasets/bus-arrivals/rows?$limit=1&limit=2"), 400, "bad_parameter").await;
    let (status, _) = get_json(&g.url("/v1/catalog?_=99")).await;
    assert_eq!(status, 200, "`_` is ignored everywhere");
}

#[tokio::test]
async fn range_reads_of_one_file_count_as_one_call() {
    let g = Gateway::demo();
    let url = g.url("/v1/datasets/bus-arrivals/download");
    // Past the anonymous burst (40) several times over: one read of the file's ranges.
    let c = client();
    for i in 0..120u64 {
        let range = format!("bytes={}-{}", i * 1000, i * 1000 + 999);
        let r = c.get(&url).header("range", &range).send().await.unwrap();
        assert_eq!(r.status(), 206, "range {i}");
        assert_eq!(r.bytes().await.unwrap().len(), 1000);
    }
    let metrics = client().get(format!("{}/metrics", g.admin)).send().await.unwrap().text().await.unwrap();
    let joined: f64 =
        metrics.lines().find_map(|l| l.strip_prefix("kaifang_range_reads_joined_total ")).unwrap().parse().unwrap();
    assert!(joined >= 110.0, "{joined}");
    // Whole downloads are calls each: sixty in a row, on one connection, spend the burst.
    let c = client();
    let mut statuses = Vec::new();
    for _ in 0..60 {
        statuses.push(c.head(&url).send().await.unwrap().status().as_u16());
    }
    assert!(statuses.contains(&429), "whole downloads are counted one by one: {statuses:?}");
}

#[tokio::test]
async fn the_document_describes_every_operation_and_refusal() {
    let (_, doc) = get_json(&Gateway::demo().url("/openapi.json")).await;
    assert_eq!(doc["servers"][0]["url"], "/");
    for tag in doc["tags"].as_array().unwrap() {
        assert!(tag["description"].as_str().is_some_and(|d| !d.is_empty()), "{tag}");
    }
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            assert!(operation["summary"].as_str().is_some_and(|s| !s.is_empty()), "{method} {path}");
            assert!(operation["description"].as_str().is_some_and(|s| !s.is_empty()), "{method} {path}");
            let responses = operation["responses"].as_object().unwrap();
            assert!(!responses.contains_key("4XX"), "{method} {path}: refusals listed one by one");
        }
    }
    let rows = &doc["paths"]["/v1/datasets/{id}/rows"]["get"];
    for status in ["400", "401", "403", "404", "406", "410", "429"] {
        assert!(rows["responses"][status]["description"].as_str().is_some(), "rows: {status}");
    }
    assert!(rows["responses"]["406"]["description"].as_str().unwrap().contains("not_acceptable"));
    let format = rows["parameters"].as_array().unwrap().iter().find(|p| p["name"] == "format").unwrap();
    let schema = &format["schema"];
    let schema = if schema["$ref"].is_string() {
        let name = schema["$ref"].as_str().unwrap().rsplit('/').next().unwrap();
        &doc["components"]["schemas"][name]
    } else {
        schema
    };
    assert_eq!(schema["enum"], serde_json::json!(["csv", "ndjson", "json", "arrow"]), "{format}");
    let media = rows["responses"]["200"]["content"].as_object().unwrap();
    for kind in ["application/json", "text/csv", "application/x-ndjson", "application/vnd.apache.arrow.stream"] {
        assert!(media.contains_key(kind), "{kind}");
    }
    assert!(doc["paths"]["/v1/datasets/{id}/rows.{format}"]["get"].is_object());
}
