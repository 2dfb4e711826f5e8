//! The decoded-data cache and declared indexes: the same answers as reading the source, never
//! an old version once a change is seen, never an index on what a mask hides, within its bytes.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use serde_json::Value;

use crate::fixture::{client, get_json, Gateway, Site};

const FIELDS: &str =
    r#"[{ name = "k", type = "int64" }, { name = "s", type = "string" }, { name = "x", type = "float64" }]"#;

async fn metric(g: &Gateway, name: &str) -> f64 {
    let text = client().get(format!("{}/metrics", g.admin)).send().await.unwrap().text().await.unwrap();
    text.lines().filter(|l| l.starts_with(name)).map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap()).sum()
}

async fn rows(g: &Gateway, dataset: &str, query: &str) -> (u16, Value) {
    get_json(&g.url(&format!("/v1/datasets/{dataset}/rows?format=json&{query}"))).await
}

#[tokio::test]
async fn a_replaced_file_is_never_answered_from_the_old_version_once_the_change_is_seen() {
    let site = Site::new(&[("t", "csv", "t.csv", FIELDS)]);
    let file = site.data_dir.join("t.csv");
    std::fs::write(&file, "k,s,x\n1,one,1.5\n2,two,2.5\n").unwrap();
    let g = site.start();
    let (status, first) = rows(&g, "t", "").await;
    assert_eq!(status, 200);
    assert_eq!(first.as_array().unwrap().len(), 2);
    assert_eq!(rows(&g, "t", "").await.1, first);
    assert_eq!(metric(&g, "kaifang_cache_lookups_total{cache=\"decoded\",result=\"hit\"}").await, 1.0);
    assert_eq!(metric(&g, "kaifang_cache_lookups_total{cache=\"decoded\",result=\"miss\"}").await, 1.0);
    // An answer is kept the second time it is given, not the first.
    assert_eq!(metric(&g, "kaifang_cache_lookups_total{cache=\"answers\",result=\"hit\"}").await, 0.0);
    assert_eq!(rows(&g, "t", "").await.1, first);
    // The third call was answered from the answer kept from the second, encoded.
    assert_eq!(metric(&g, "kaifang_cache_lookups_total{cache=\"answers\",result=\"hit\"}").await, 1.0);

    // Same length, new content: the modification time tells the new version.
    let modified = std::fs::metadata(&file).unwrap().modified().unwrap();
    std::fs::write(&file, "k,s,x\n7,sev,7.5\n8,eig,8.5\n").unwrap();
    std::fs::File::options().write(true).open(&file).unwrap().set_modified(modified + Duration::from_secs(1)).unwrap();
    let (_, second) = rows(&g, "t", "").await;
    assert_eq!(second[0]["k"], 7, "{second}");
    assert_eq!(
        metric(&g, "kaifang_cache_lookups_total{cache=\"answers\",result=\"hit\"}").await,
        1.0,
        "no answer of the old version is given for the new one"
    );
    // A longer file, written within the same second.
    std::fs::write(&file, "k,s,x\n7,sev,7.5\n8,eig,8.5\n9,nin,9.5\n").unwrap();
    let (_, third) = rows(&g, "t", "").await;
    assert_eq!(third.as_array().unwrap().len(), 3, "{third}");
    // The old versions' memory is given back.
    let held = metric(&g, "kaifang_decoded_cache_bytes").await;
    let (_, once) = rows(&g, "t", "").await;
    assert_eq!(once, third);
    assert!(held > 0.0 && held < 64.0 * 1024.0, "{held} bytes held for one three-row version");
}

/// A random comparison on one of the columns, as a filter expression.
fn random_comparison<R: Rng>(rng: &mut R) -> String {
    let op = ["=", "<", "<=", ">", ">=", "!="][rng.random_range(0..6)];
    match rng.random_range(0..4) {
        0 => format!("k {op} {}", rng.random_range(-5..60)),
        1 => format!("s {op} 's{:02}'", rng.random_range(0..25)),
        2 => format!("x {op} {}.5", rng.random_range(-2..30)),
        _ => {
            let values: Vec<String> =
                (0..rng.random_range(1..4)).map(|_| rng.random_range(0..55).to_string()).collect();
            format!("k in ({})", values.join(", "))
        }
    }
}

/// A random filter of one to three comparisons from `comparison`, joined by `and` and `or`.
fn random_filter<R: Rng>(rng: &mut R, comparison: fn(&mut R) -> String) -> String {
    match rng.random_range(0..5) {
        0 | 1 => comparison(rng),
        2 => format!("{} and {}", comparison(rng), comparison(rng)),
        3 => format!("({}) or ({})", comparison(rng), comparison(rng)),
        _ => format!("{} and ({} or {})", comparison(rng), comparison(rng), comparison(rng)),
    }
}

/// Asks `dataset` and `scanned` (the same file read from the source on every call) for the rows
/// `filter` keeps, with `extra` parameters; asserts they answer the same rows and returns how
/// many.
async fn same_as_a_full_scan(g: &Gateway, dataset: &str, scanned: &str, filter: &str, extra: &str) -> usize {
    let query =
        format!("filter={}{extra}", percent_encoding::utf8_percent_encode(filter, percent_encoding::NON_ALPHANUMERIC));
    let (status, found) = rows(g, dataset, &query).await;
    let (_, all) = rows(g, scanned, &query).await;
    assert_eq!(status, 200, "{filter}: {found}");
    let count = |v: &Value| v.as_array().map(Vec::len);
    assert_eq!(count(&found), count(&all), "{filter}");
    assert!(found == all, "{filter}: the same number of rows, not the same rows");
    all.as_array().unwrap().len()
}

#[tokio::test]
async fn an_index_lookup_returns_exactly_the_rows_a_full_scan_returns() {
    // The same file twice: indexed in memory, and read from the file on every call.
    let site = Site::with_settings(
        "[limits]\nanonymous_rate = { per_second = 100000, burst = 100000 }\n",
        &[("indexed", "csv", "data.csv", FIELDS), ("scanned", "csv", "copy.csv", FIELDS)],
    );
    site.set_entry("data.csv", "index = [\"k\", \"s\", \"x\"]");
    site.set_entry("copy.csv", "cache = \"never\"");
    let mut rng = rand::rngs::StdRng::seed_from_u64(15);
    let mut text = String::from("k,s,x\n");
    for _ in 0..3000 {
        // Duplicates and nulls in every indexed column.
        let k = if rng.random_range(0..10) == 0 { String::new() } else { rng.random_range(0..50).to_string() };
        let s = if rng.random_range(0..10) == 0 { String::new() } else { format!("s{:02}", rng.random_range(0..20)) };
        let x = if rng.random_range(0..10) == 0 { String::new() } else { format!("{}.5", rng.random_range(0..25)) };
        text.push_str(&format!("{k},{s},{x}\n"));
    }
    std::fs::write(site.data_dir.join("data.csv"), &text).unwrap();
    std::fs::write(site.data_dir.join("copy.csv"), &text).unwrap();
    let g = site.start();
    let mut matched = 0;
    for _ in 0..150 {
        let filter = random_filter(&mut rng, random_comparison);
        matched += same_as_a_full_scan(&g, "indexed", "scanned", &filter, "").await;
    }
    assert!(matched > 0, "the predicates matched nothing at all");
    // Ordered and limited answers too.
    for query in ["filter=k%20%3D%2017&order=-x&limit=3", "filter=s%20%3E%3D%20%27s15%27&offset=5&limit=10"] {
        assert_eq!(rows(&g, "indexed", query).await, rows(&g, "scanned", query).await, "{query}");
    }
}

#[tokio::test]
async fn an_index_on_a_masked_column_never_finds_rows_by_the_value_the_mask_hides() {
    masked_column_lookups("index = [\"legal_rep_mobile\", \"district\"]").await;
}

#[tokio::test]
async fn block_summaries_of_a_masked_column_never_skip_rows_by_the_value_the_mask_hides() {
    // No index: the filters below meet the block summaries, which hold raw values.
    masked_column_lookups("cache = \"always\"").await;
}

/// Filters on a masked column of the demo's enterprises, with `entry` added to its catalog entry:
/// a raw value behind the mask finds nothing, and the masked value finds what a scan finds.
async fn masked_column_lookups(entry: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (config, data_dir) = crate::fixture::demo_with_enterprises(dir.path(), entry);
    let g = Gateway::with_config(&config, &data_dir);
    let (status, issued) =
        g.admin(reqwest::Method::POST, "/admin/keys", Some(serde_json::json!({"principal": "demo-analytics"}))).await;
    assert_eq!(status, 201, "{issued}");
    let key = issued["key"].as_str().unwrap().to_owned();
    let get = |query: String| {
        let (g, key) = (&g, key.clone());
        async move {
            let url =
                g.url(&format!("/v1/datasets/enterprises/rows?format=json&columns=uscc,legal_rep_mobile&{query}"));
            loop {
                let r = client().get(&url).bearer_auth(&key).send().await.unwrap();
                // The agreement's rate: wait as told.
                if r.status() == 429 {
                    let wait: f64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
                    tokio::time::sleep(Duration::from_secs_f64(wait)).await;
                    continue;
                }
                assert_eq!(r.status(), 200);
                return r.json::<Vec<Value>>().await.unwrap();
            }
        }
    };
    // The holder's rows, mobiles masked (first 3 and last 4 kept).
    let all = get(String::new()).await;
    assert!(!all.is_empty());
    let masked = all[0]["legal_rep_mobile"].as_str().unwrap().to_owned();
    assert!(masked.contains('*'), "{masked}");
    // Raw values behind the mask, from the file itself.
    let source = crate::fixture::read_source(&data_dir.join("demo/enterprises.arrow"));
    let mobiles = source.column_by_name("legal_rep_mobile").unwrap();
    let mobiles = mobiles.as_any().downcast_ref::<arrow::array::StringArray>().unwrap();
    let enc = |f: &str| percent_encoding::utf8_percent_encode(f, percent_encoding::NON_ALPHANUMERIC).to_string();
    for raw in mobiles.iter().flatten().take(8) {
        for filter in [
            format!("legal_rep_mobile = '{raw}'"),
            format!("legal_rep_mobile in ('{raw}')"),
            format!("legal_rep_mobile >= '{raw}' and legal_rep_mobile <= '{raw}'"),
        ] {
            assert_eq!(get(format!("filter={}", enc(&filter))).await, Vec::<Value>::new(), "{filter}");
        }
    }
    // A filter on the masked value finds the rows whose masked value it is, as a scan would.
    let expected: Vec<&Value> = all.iter().filter(|r| r["legal_rep_mobile"] == masked.as_str()).collect();
    let found = get(format!("filter={}", enc(&format!("legal_rep_mobile = '{masked}'")))).await;
    assert_eq!(found.iter().collect::<Vec<_>>(), expected);
}

#[tokio::test]
async fn the_cache_stays_within_its_bytes_and_small_answers_carry_their_length() {
    let datasets: Vec<(String, String)> = (0..4).map(|i| (format!("d{i}"), format!("d{i}.csv"))).collect();
    let entries: Vec<(&str, &str, &str, &str)> =
        datasets.iter().map(|(id, file)| (id.as_str(), "csv", file.as_str(), FIELDS)).collect();
    // Room for about two of the four.
    let site = Site::with_settings("[cache]\nmax_bytes = 600000\n", &entries);
    for (_, file) in &datasets {
        let mut text = String::from("k,s,x\n");
        for i in 0..8000 {
            text.push_str(&format!("{i},s{:05},{i}.25\n", i % 977));
        }
        std::fs::write(site.data_dir.join(file), text).unwrap();
    }
    let g = site.start();
    for round in 0..3 {
        for (id, _) in &datasets {
            let r = client().get(g.url(&format!("/v1/datasets/{id}/rows?limit=2&format=csv"))).send().await.unwrap();
            assert_eq!(r.status(), 200);
            let length: usize = r.headers()["content-length"].to_str().unwrap().parse().unwrap();
            assert!(r.headers().get("transfer-encoding").is_none(), "round {round}");
            assert_eq!(r.bytes().await.unwrap().len(), length);
            let held = metric(&g, "kaifang_decoded_cache_bytes").await;
            assert!(held <= 600000.0, "{held} bytes held, over max_bytes");
        }
    }
    assert!(metric(&g, "kaifang_decoded_cache_evictions_total").await > 0.0);
    assert!(metric(&g, "kaifang_decoded_cache_bytes").await > 0.0);
    // A large answer streams.
    let r = client().get(g.url("/v1/datasets/d0/rows?format=csv")).send().await.unwrap();
    let text = r.text().await.unwrap();
    assert_eq!(text.lines().count(), 8001);
}

/// Columns of every summarized kind, and one that is not (`x`).
const ZONED_FIELDS: &str = r#"[{ name = "k", type = "int64" }, { name = "s", type = "string" }, { name = "d", type = "date" }, { name = "t", type = "timestamp" }, { name = "x", type = "float64" }]"#;

fn random_zoned_comparison<R: Rng>(rng: &mut R) -> String {
    let op = ["=", "<", "<=", ">", ">=", "!="][rng.random_range(0..6)];
    match rng.random_range(0..6) {
        0 => format!("k {op} {}", rng.random_range(-100..28_100)),
        1 => format!("s {op} 'v{}'", rng.random_range(0..30_000)),
        2 => format!("d {op} '2025-{:02}-{:02}'", rng.random_range(1..13), rng.random_range(1..29)),
        3 => format!("t {op} '2025-01-01T{:02}:{:02}:00Z'", rng.random_range(0..24), rng.random_range(0..60)),
        4 => format!("x {op} {}.5", rng.random_range(0..100)),
        _ => {
            let values: Vec<String> =
                (0..rng.random_range(1..4)).map(|_| format!("'v{}'", rng.random_range(0..30_000))).collect();
            format!("s in ({})", values.join(", "))
        }
    }
}

#[tokio::test]
async fn a_filter_on_unindexed_cached_data_skips_blocks_and_returns_exactly_what_a_full_scan_returns() {
    // The same file twice: cached with block summaries, and read from the file on every call.
    let site = Site::with_settings(
        "[limits]\nanonymous_rate = { per_second = 100000, burst = 100000 }\n",
        &[("zoned", "csv", "data.csv", ZONED_FIELDS), ("scanned", "csv", "copy.csv", ZONED_FIELDS)],
    );
    site.set_entry("copy.csv", "cache = \"never\"");
    let mut rng = rand::rngs::StdRng::seed_from_u64(16);
    let mut text = String::from("k,s,d,t,x\n");
    // Three blocks and a part: `k` and `d` rise with the row (with some noise), `t` too within
    // each block, `s` is scattered; every column has nulls.
    for row in 0..28_000 {
        let null = |rng: &mut rand::rngs::StdRng| rng.random_range(0..20) == 0;
        let k = if null(&mut rng) { String::new() } else { (row + rng.random_range(0..100)).to_string() };
        let s = if null(&mut rng) { String::new() } else { format!("v{}", rng.random_range(0..30_000)) };
        let d = if null(&mut rng) {
            String::new()
        } else {
            let day = row / 80 + rng.random_range(0..3);
            (chrono::NaiveDate::from_ymd_opt(2025, 1, 1).unwrap() + chrono::Duration::days(day)).to_string()
        };
        let t = if null(&mut rng) {
            String::new()
        } else {
            format!("2025-01-01T{:02}:{:02}:00Z", (row % 8192) * 24 / 8192, rng.random_range(0..60))
        };
        let x = if null(&mut rng) { String::new() } else { format!("{}.5", rng.random_range(0..100)) };
        text.push_str(&format!("{k},{s},{d},{t},{x}\n"));
    }
    std::fs::write(site.data_dir.join("data.csv"), &text).unwrap();
    std::fs::write(site.data_dir.join("copy.csv"), &text).unwrap();
    let g = site.start();
    // A value in the data: found, and the blocks without it are not read.
    let present = text.lines().nth(10_000).unwrap().split(',').nth(1).unwrap().to_owned();
    let found = same_as_a_full_scan(&g, "zoned", "scanned", &format!("s = '{present}'"), "").await;
    assert!(found > 0, "{present} not found");
    let skipped = metric(&g, "kaifang_decoded_cache_blocks_total{result=\"skipped\"}").await;
    assert!(skipped >= 2.0, "{skipped} of 4 blocks skipped for a value in one or two of them");

    let mut matched = 0;
    for _ in 0..70 {
        let filter = random_filter(&mut rng, random_zoned_comparison);
        matched += same_as_a_full_scan(&g, "zoned", "scanned", &filter, "&columns=k,s,d,t,x").await;
    }
    assert!(matched > 0, "the predicates matched nothing at all");
    assert!(metric(&g, "kaifang_decoded_cache_blocks_total{result=\"skipped\"}").await > skipped);
}
