//! Queries through the scoped pipeline, checked row by row against the source files.

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Float64Type, Int64Type};
use serde_json::Value;

use crate::fixture::{
    client, expect_broken, expect_error, get_json, read_arrow_stream, read_csv, read_ndjson, read_source, Gateway,
    Site, ENTERPRISE_FIELDS,
};

async fn text(url: &str) -> String {
    let r = client().get(url).send().await.unwrap();
    assert_eq!(r.status(), 200, "{url}");
    r.text().await.unwrap()
}

async fn bytes(url: &str) -> (reqwest::header::HeaderMap, Vec<u8>) {
    let r = client().get(url).send().await.unwrap();
    assert_eq!(r.status(), 200, "{url}");
    let headers = r.headers().clone();
    (headers, r.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn csv_rows_equal_the_source_file_record_for_record() {
    let g = Gateway::demo();
    let source = std::fs::read_to_string(g.data_dir.join("demo/bus-arrivals.csv")).unwrap();
    let served = text(&g.url("/v1/datasets/bus-arrivals/rows?format=csv")).await;
    let source = read_csv(&source);
    let served = read_csv(&served);
    assert_eq!(served.len(), 5001, "header and 5000 rows");
    assert_eq!(served, source);
}

#[tokio::test]
async fn arrow_ipc_rows_equal_the_parquet_source() {
    let g = Gateway::demo();
    let source = read_source(&g.data_dir.join("demo/air-quality.parquet"));
    let (headers, body) = bytes(&g.url("/v1/datasets/air-quality/rows?format=arrow")).await;
    assert_eq!(headers["content-type"], "application/vnd.apache.arrow.stream");
    let batches = read_arrow_stream(&body);
    let served = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    assert_eq!(served.num_rows(), 5000);
    assert_eq!(served.columns(), source.columns());
}

#[tokio::test]
async fn ndjson_and_json_rows_equal_the_ndjson_source() {
    let g = Gateway::demo();
    let source = read_ndjson(&g.data_dir.join("demo/parking-lots.ndjson"));
    let ndjson: Vec<Value> = text(&g.url("/v1/datasets/parking-lots/rows?format=ndjson"))
        .await
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(ndjson, source);
    let (_, json) = get_json(&g.url("/v1/datasets/parking-lots/rows?format=json")).await;
    assert_eq!(json.as_array().unwrap(), &source);
    // The Accept header chooses the format when `format` is absent.
    let r = client()
        .get(g.url("/v1/datasets/parking-lots/rows?limit=1"))
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "text/csv; charset=utf-8");
    assert!(r.text().await.unwrap().starts_with("lot_id,name,district"));
}

#[tokio::test]
async fn arrow_ipc_file_sources_are_served_in_the_declared_schema() {
    // The demo's Arrow file belongs to a conditional dataset; serve a copy as unconditional.
    let demo = Gateway::demo();
    let site = Site::new(&[("enterprises-copy", "arrow_ipc", "enterprises.arrow", ENTERPRISE_FIELDS)]);
    std::fs::copy(demo.data_dir.join("demo/enterprises.arrow"), site.data_dir.join("enterprises.arrow")).unwrap();
    let g = site.start();
    let source = read_source(&site.data_dir.join("enterprises.arrow"));
    let (_, body) =
        bytes(&g.url("/v1/datasets/enterprises-copy/rows?format=arrow&columns=uscc,established_on,legal_rep_name"))
            .await;
    let batches = read_arrow_stream(&body);
    let served = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    assert_eq!(served.num_rows(), 5000);
    for name in ["uscc", "established_on", "legal_rep_name"] {
        assert_eq!(served.column_by_name(name).unwrap(), source.column_by_name(name).unwrap(), "{name}");
    }
}

#[tokio::test]
async fn filter_order_offset_and_limit_match_a_direct_computation() {
    let g = Gateway::demo();
    let source = read_source(&g.data_dir.join("demo/air-quality.parquet"));
    let station = source.column_by_name("station_id").unwrap().as_string::<i32>();
    let district = source.column_by_name("district").unwrap().as_string::<i32>();
    let aqi = source.column_by_name("aqi").unwrap().as_primitive::<Int64Type>();
    let o3 = source.column_by_name("o3").unwrap().as_primitive::<Float64Type>();
    // (district = 'Haizhou' or district = 'Ganyu') and aqi >= 150 and o3 is not null, by aqi
    // descending then station ascending, rows 6 to 15.
    let mut expected: Vec<(i64, String)> = (0..source.num_rows())
        .filter(|&i| ["Haizhou", "Ganyu"].contains(&district.value(i)) && aqi.value(i) >= 150 && o3.is_valid(i))
        .map(|i| (aqi.value(i), station.value(i).to_owned()))
        .collect();
    expected.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let expected: Vec<(i64, String)> = expected.into_iter().skip(5).take(10).collect();
    assert_eq!(expected.len(), 10);

    let filter = "(district = 'Haizhou' or district = 'Ganyu') and aqi >= 150 and o3 is not null";
    let url = format!(
        "/v1/datasets/air-quality/rows?columns=aqi,station_id&order=-aqi,station_id&offset=5&limit=10&filter={}",
        urlencode(filter)
    );
    let (status, body) = get_json(&g.url(&url)).await;
    assert_eq!(status, 200);
    let served: Vec<(i64, String)> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r.as_object().unwrap().keys().collect::<Vec<_>>(), vec!["aqi", "station_id"]);
            (r["aqi"].as_i64().unwrap(), r["station_id"].as_str().unwrap().to_owned())
        })
        .collect();
    assert_eq!(served.iter().map(|r| r.0).collect::<Vec<_>>(), expected.iter().map(|r| r.0).collect::<Vec<_>>());
    assert_eq!(served, expected);
}

#[tokio::test]
async fn every_filter_operator_selects_the_rows_it_names() {
    let g = Gateway::demo();
    let all: Vec<Value> = read_ndjson(&g.data_dir.join("demo/parking-lots.ndjson"));
    type Check = fn(&Value) -> bool;
    let cases: [(&str, Check); 9] = [
        ("capacity < 100", |r| r["capacity"].as_i64().unwrap() < 100),
        ("capacity != 500 and available <= 10", |r| r["capacity"] != 500 && r["available"].as_i64().unwrap() <= 10),
        ("hourly_fee > 7.5", |r| r["hourly_fee"].as_f64().unwrap() > 7.5),
        ("district in ('Ganyu', 'Guannan')", |r| ["Ganyu", "Guannan"].contains(&r["district"].as_str().unwrap())),
        ("district not in ('Ganyu', 'Guannan', 'Haizhou')", |r| {
            !["Ganyu", "Guannan", "Haizhou"].contains(&r["district"].as_str().unwrap())
        }),
        ("name like 'Donghai City%'", |r| r["name"].as_str().unwrap().starts_with("Donghai City")),
        ("not open_24h = true", |r| r["open_24h"] == false),
        ("opened_on >= '2024-01-01'", |r| r["opened_on"].as_str().unwrap() >= "2024-01-01"),
        ("updated_at < '2025-06-30T06:00:00Z'", |r| r["updated_at"].as_str().unwrap() < "2025-06-30T06:00:00Z"),
    ];
    for (filter, keep) in cases {
        let expected: Vec<&Value> = all.iter().filter(|r| keep(r)).collect();
        assert!(!expected.is_empty() && expected.len() < all.len(), "{filter} selects {} rows", expected.len());
        let (status, body) =
            get_json(&g.url(&format!("/v1/datasets/parking-lots/rows?filter={}", urlencode(filter)))).await;
        assert_eq!(status, 200, "{filter}: {body}");
        assert_eq!(body.as_array().unwrap().iter().collect::<Vec<_>>(), expected, "{filter}");
    }
    let (_, body) =
        get_json(&g.url(&format!("/v1/datasets/bus-arrivals/rows?filter={}", urlencode("occupancy is null")))).await;
    assert!(body.as_array().unwrap().iter().all(|r| r["occupancy"].is_null()));
    assert!(!body.as_array().unwrap().is_empty());
}

#[tokio::test]
async fn bad_filters_are_refused_with_the_position_of_the_mistake() {
    let g = Gateway::demo();
    let cases = [
        ("district = ", 12, "expected a value"),
        ("district = Haizhou", 12, "single quotes"),
        ("aqi > 1 and nope = 2", 13, "unknown column `nope`"),
        ("aqi = 'high'", 1, "takes an integer"),
        ("measured_at > 'yesterday'", 1, "RFC 3339"),
        ("aqi >> 3", 6, "expected a value"),
    ];
    for (filter, position, fragment) in cases {
        let (status, body) =
            get_json(&g.url(&format!("/v1/datasets/air-quality/rows?filter={}", urlencode(filter)))).await;
        assert_eq!(status, 400, "{filter}");
        assert_eq!(body["error"]["code"], "bad_filter");
        assert_eq!(body["error"]["position"], position, "{filter}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains(fragment), "{filter}: {body}");
    }
}

#[tokio::test]
async fn bad_query_parameters_are_refused() {
    let g = Gateway::demo();
    let base = "/v1/datasets/bus-arrivals/rows";
    expect_error(&g.url(&format!("{base}?columns=route,nope")), 400, "unknown_column").await;
    expect_error(&g.url(&format!("{base}?order=-nope")), 400, "unknown_column").await;
    expect_error(&g.url(&format!("{base}?columns=route,route")), 400, "duplicate_column").await;
    expect_error(&g.url(&format!("{base}?limit=-3")), 400, "bad_parameter").await;
    expect_error(&g.url(&format!("{base}?format=xml")), 400, "bad_parameter").await;
    expect_error(&g.url(&format!("{base}?colums=route")), 400, "unknown_parameter").await;
}

#[tokio::test]
async fn preview_gives_the_first_twenty_rows_as_json() {
    let g = Gateway::demo();
    let (status, body) = get_json(&g.url("/v1/datasets/bus-arrivals/preview?columns=arrival_id,route")).await;
    assert_eq!(status, 200);
    assert_eq!(body["dataset"], "bus-arrivals");
    assert_eq!(body["columns"], serde_json::json!(["arrival_id", "route"]));
    let rows = body["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 20);
    assert_eq!(
        rows.iter().map(|r| r["arrival_id"].as_i64().unwrap()).collect::<Vec<_>>(),
        (1..=20).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn data_responses_carry_request_id_and_dataset_version() {
    let g = Gateway::demo();
    let r = client()
        .get(g.url("/v1/datasets/bus-arrivals/rows?limit=1"))
        .header("x-request-id", "trace-42.a_b")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "trace-42.a_b");
    let version = r.headers()["x-dataset-version"].to_str().unwrap().to_owned();
    let r = client()
        .get(g.url("/v1/datasets/bus-arrivals/download"))
        .header("x-request-id", "bad id with spaces")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-dataset-version"].to_str().unwrap(), version);
    let generated = r.headers()["x-request-id"].to_str().unwrap();
    assert_eq!(generated.len(), 36, "a fresh UUID replaces a malformed id: {generated}");
}

#[tokio::test]
async fn http2_cleartext_is_served_on_the_same_port() {
    let g = Gateway::demo();
    crate::fixture::tls_provider();
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let r = h2.get(g.url("/v1/datasets/bus-arrivals/rows?format=csv&limit=2")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap().lines().count(), 3);
}

#[tokio::test]
async fn a_source_failing_mid_stream_aborts_the_response() {
    // A record far past the first batch is broken: the response has started when the reader
    // meets it.
    let site = Site::new(&[("numbers", "csv", "numbers.csv", r#"[{ name = "n", type = "int64" }]"#)]);
    let mut text = String::from("n\n");
    for i in 0..30_000 {
        text.push_str(&if i == 25_000 { "not a number\n".to_owned() } else { format!("{i}\n") });
    }
    std::fs::write(site.data_dir.join("numbers.csv"), text).unwrap();
    let g = site.start();
    for format in ["csv", "arrow", "json"] {
        expect_broken(&g.url(&format!("/v1/datasets/numbers/rows?format={format}"))).await;
    }
    // Broken before the first batch is complete: a proper error instead of a 200.
    expect_error(&g.url("/v1/datasets/numbers/rows?offset=24600"), 502, "source_failed").await;
}

pub fn urlencode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[tokio::test]
async fn hostile_parameters_get_a_400_not_a_crash() {
    let g = Gateway::demo();
    let deep = format!("{}a = 1{}", "(".repeat(3_000), ")".repeat(3_000));
    let (status, body) = get_json(&g.url(&format!("/v1/datasets/bus-arrivals/rows?filter={}", urlencode(&deep)))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("bad_filter")));
    let wide = vec!["route = '1'"; 1000].join(" or ");
    let (status, _) = get_json(&g.url(&format!("/v1/datasets/bus-arrivals/rows?filter={}", urlencode(&wide)))).await;
    assert_eq!(status, 400);
    let (status, _) = get_json(
        &g.url("/v1/datasets/bus-arrivals/rows?order=route&limit=18446744073709551615&offset=1&columns=route"),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = get_json(&g.url("/v1/catalog?page=18446744073709551615&per_page=2")).await;
    assert_eq!((status, body["datasets"].as_array().map(Vec::len)), (200, Some(0)));
    // The gateway is still there.
    assert_eq!(get_json(&g.url("/healthz")).await.0, 200);
}
