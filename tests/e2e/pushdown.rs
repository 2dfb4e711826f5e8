//! Pushdown: what is read from disk is cut by statistics and by the rows an answer needs, and
//! the answers are still exactly those of a full scan.
//!
//! The full scan to compare with is the same data in an Arrow IPC file, which has no
//! statistics: the gateway reads it whole for any filter.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, BooleanArray, Date32Array, Float64Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use reqwest::Method;
use serde_json::{json, Value};

use crate::fixture::{client, get_json, Gateway, Site};
use crate::rows::urlencode;

const FIELDS: &str = r#"[
    { name = "id", type = "int64" }, { name = "day", type = "date" }, { name = "district", type = "string" },
    { name = "score", type = "float64" }, { name = "open", type = "boolean" }, { name = "mobile", type = "string" },
]"#;

const DISTRICTS: [&str; 6] = ["Haizhou", "Lianyun", "Ganyu", "Donghai", "Guanyun", "Guannan"];

/// A small deterministic generator, so that a failing case can be run again.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `rows` rows: `id` and `day` rise with the row (so row groups and pages hold ranges of them),
/// `district`, `score` and `open` are random with some nulls, `mobile` an 11-digit number.
fn table(rows: usize, seed: u64) -> RecordBatch {
    let mut random = Random(seed);
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("day", DataType::Date32, true),
        Field::new("district", DataType::Utf8, true),
        Field::new("score", DataType::Float64, true),
        Field::new("open", DataType::Boolean, true),
        Field::new("mobile", DataType::Utf8, true),
    ]));
    let id = Int64Array::from_iter_values(0..rows as i64);
    let day = Date32Array::from_iter_values((0..rows).map(|i| 19_000 + (i / 100) as i32));
    let district =
        StringArray::from_iter((0..rows).map(|_| (random.below(37) != 0).then(|| DISTRICTS[random.below(6) as usize])));
    let score = Float64Array::from_iter(
        (0..rows).map(|_| (random.below(23) != 0).then(|| (random.below(100_000) as f64) / 1000.0)),
    );
    let open = BooleanArray::from_iter((0..rows).map(|_| Some(random.below(2) == 0)));
    let mobile = StringArray::from_iter_values((0..rows).map(|_| format!("138{:08}", random.below(100_000_000))));
    let columns: Vec<ArrayRef> =
        vec![Arc::new(id), Arc::new(day), Arc::new(district), Arc::new(score), Arc::new(open), Arc::new(mobile)];
    RecordBatch::try_new(schema, columns).unwrap()
}

/// Writes `batch` as Parquet with row groups of `group_rows` rows and pages of `page_rows`.
/// Only `district` is dictionary-encoded: a column chunk's dictionary page is read whole before
/// any of its values, so the dictionaries of the nearly unique columns (hundreds of KiB here)
/// would hide what reading one page rather than many saves.
fn write_parquet(path: &Path, batch: &RecordBatch, group_rows: usize, page_rows: usize) {
    let props = WriterProperties::builder()
        .set_dictionary_enabled(false)
        .set_column_dictionary_enabled(parquet::schema::types::ColumnPath::from("district"), true)
        .set_max_row_group_row_count(Some(group_rows))
        .set_data_page_row_count_limit(page_rows)
        .set_write_batch_size(page_rows)
        .build();
    let mut writer = ArrowWriter::try_new(std::fs::File::create(path).unwrap(), batch.schema(), Some(props)).unwrap();
    writer.write(batch).unwrap();
    let metadata = writer.close().unwrap();
    assert_eq!(metadata.num_row_groups(), batch.num_rows().div_ceil(group_rows));
}

/// Writes `batch` as an Arrow IPC file in batches of `batch_rows` rows.
fn write_arrow(path: &Path, batch: &RecordBatch, batch_rows: usize) {
    let mut writer =
        arrow::ipc::writer::FileWriter::try_new(std::fs::File::create(path).unwrap(), &batch.schema()).unwrap();
    for start in (0..batch.num_rows()).step_by(batch_rows) {
        writer.write(&batch.slice(start, batch_rows.min(batch.num_rows() - start))).unwrap();
    }
    writer.finish().unwrap();
}

fn write_csv(path: &Path, batch: &RecordBatch) {
    let mut writer = arrow::csv::WriterBuilder::new().build(std::fs::File::create(path).unwrap());
    writer.write(batch).unwrap();
}

async fn rows(g: &Gateway, dataset: &str, query: &str) -> Vec<Value> {
    let url = g.url(&format!("/v1/datasets/{dataset}/rows?format=json&{query}"));
    let (status, body) = get_json(&url).await;
    assert_eq!(status, 200, "{query}: {body}");
    body.as_array().unwrap().clone()
}

/// A random filter over every column type and every operator, up to `depth` levels of
/// `and`, `or` and `not`.
fn random_filter(random: &mut Random, rows: u64, depth: u32) -> String {
    if depth > 0 && random.below(3) != 0 {
        let a = random_filter(random, rows, depth - 1);
        let b = random_filter(random, rows, depth - 1);
        return match random.below(5) {
            0 => format!("not ({a})"),
            1 | 2 => format!("({a}) and ({b})"),
            _ => format!("({a}) or ({b})"),
        };
    }
    let op = ["=", "!=", "<", "<=", ">", ">="][random.below(6) as usize];
    let district = DISTRICTS[random.below(6) as usize];
    match random.below(11) {
        0 | 1 => format!("id {op} {}", random.below(rows + 10)),
        2 => {
            let day =
                chrono::NaiveDate::from_ymd_opt(2022, 1, 8).unwrap() + chrono::Days::new(random.below(rows / 100 + 2));
            format!("day {op} '{day}'")
        }
        3 => format!("district {op} '{district}'"),
        4 => format!("district in ('{district}', '{}')", DISTRICTS[random.below(6) as usize]),
        5 => format!("district not in ('{district}')"),
        6 => format!("score {op} {}.5", random.below(101)),
        7 => format!("open = {}", random.below(2) == 0),
        8 => ["district is null", "score is not null", "score is null"][random.below(3) as usize].to_owned(),
        9 => format!("district like '{}%'", &district[..2]),
        _ => format!("id in ({}, {})", random.below(rows), random.below(rows)),
    }
}

#[tokio::test]
async fn pruned_parquet_answers_equal_full_scans_for_random_filters() {
    const ROWS: usize = 20_000;
    let site = Site::new(&[("pruned", "parquet", "t.parquet", FIELDS), ("scanned", "arrow_ipc", "t.arrow", FIELDS)]);
    // Both read from their files on every call: what is read from disk is what is tested.
    site.set_entry("t.parquet", "cache = \"never\"");
    site.set_entry("t.arrow", "cache = \"never\"");
    let data = table(ROWS, 0x5eed);
    // 20 row groups of 1,000 rows, pages of 100 rows.
    write_parquet(&site.data_dir.join("t.parquet"), &data, 1_000, 100);
    write_arrow(&site.data_dir.join("t.arrow"), &data, 4_096);
    let g = site.start();

    let chosen = [
        "id = 12345",
        "id >= 19990 or id < 3",
        "id > 4000 and id <= 4100 and district = 'Ganyu'",
        "not (id < 19000) and score < 50",
        "day = '2022-03-01'",
        "day >= '2022-06-01' and open = false",
        "id in (5, 15005) or district is null",
        "not (id >= 100 and id <= 19900)",
        "district not in ('Haizhou') and id < 500",
        "id != 7 and id < 10",
        "score > 99.5 or id < 2",
        "id < 0",
    ];
    let mut random = Random(0xf17e);
    let generated: Vec<String> = (0..80).map(|_| random_filter(&mut random, ROWS as u64, 3)).collect();
    let mut selective = 0;
    for filter in chosen.iter().map(|f| f.to_string()).chain(generated) {
        for window in ["", "&limit=7&offset=3"] {
            let query = format!("filter={}{window}", urlencode(&filter));
            let pruned = rows(&g, "pruned", &query).await;
            let scanned = rows(&g, "scanned", &query).await;
            assert_eq!(pruned.len(), scanned.len(), "`{filter}`{window}: row counts differ");
            assert_eq!(pruned, scanned, "`{filter}`{window}");
            if window.is_empty() && scanned.len() < ROWS / 10 {
                selective += 1;
            }
        }
    }
    assert!(selective > 20, "the filters include selective ones: {selective}");
    // Limit and offset without a filter.
    for query in ["limit=1", "limit=5&offset=999", "limit=2500&offset=17000", "offset=19995", "limit=0"] {
        assert_eq!(rows(&g, "pruned", query).await, rows(&g, "scanned", query).await, "{query}");
    }
}

/// A conditional copy of the data under an agreement that masks `mobile` and limits rows by a
/// row filter on raw values; returns the gateway and the holder's key.
async fn masked_site(data: &RecordBatch) -> (Site, Gateway, String) {
    let site = Site::new(&[]);
    write_parquet(&site.data_dir.join("t.parquet"), data, 500, 100);
    let mut config = std::fs::read_to_string(&site.config).unwrap();
    config.push_str(&format!(
        "[[datasets]]\nid = \"people\"\ntitle = \"people\"\nowner = \"Test Bureau\"\nopen_type = \"conditional\"\n\
         format = \"parquet\"\nupdate_frequency = \"daily\"\nlast_updated = \"2025-01-01T00:00:00Z\"\n\
         license = \"Agreement\"\nsource = {{ file = \"t.parquet\" }}\ncache = \"never\"\nfields = {FIELDS}\n"
    ));
    std::fs::write(&site.config, config).unwrap();
    let g = site.start();
    let (status, body) =
        g.admin(Method::POST, "/admin/principals", Some(json!({"id": "acme", "name": "Acme", "role": "user"}))).await;
    assert_eq!(status, 201, "{body}");
    let (_, key) = g.admin(Method::POST, "/admin/keys", Some(json!({"principal": "acme"}))).await;
    let (status, body) = g
        .admin(
            Method::POST,
            "/admin/agreements",
            Some(json!({
                "principal": "acme", "dataset": "people", "columns": ["id", "district", "mobile"],
                "row_filter": "id < 4000", "masks": {"mobile": "keep_last(4)", "district": "keep_first(1)"},
                "valid_until": "2099-01-01T00:00:00Z", "rate": {"per_second": 1000, "burst": 1000},
                "quota": {"requests_per_day": 100_000, "rows_per_day": 100_000_000, "bytes_per_day": 100_000_000_000u64},
            })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    (site, g, key["key"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn pruning_never_judges_raw_data_by_a_filter_on_a_masked_column() {
    let data = table(10_000, 0xa11ce);
    let (_site, g, key) = masked_site(&data).await;
    let ids = data.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
    let mobiles = data.column(5).as_any().downcast_ref::<StringArray>().unwrap();
    let get = |filter: String| {
        let url = g.url(&format!("/v1/datasets/people/rows?format=json&filter={}", urlencode(&filter)));
        let key = key.clone();
        async move {
            let r = client().get(url).bearer_auth(key).send().await.unwrap();
            assert_eq!(r.status(), 200, "{filter}");
            let rows: Vec<Value> = r.json().await.unwrap();
            rows.iter().map(|r| r["id"].as_i64().unwrap()).collect::<Vec<_>>()
        }
    };
    let masked = |i: usize| format!("*******{}", &mobiles.value(i)[7..]);
    // What filtering the masked values keeps, computed here: rows under the agreement's row
    // filter whose masked mobile passes `keep`.
    let expected = |keep: &dyn Fn(&str) -> bool| -> Vec<i64> {
        (0..data.num_rows()).filter(|&i| ids.value(i) < 4000 && keep(&masked(i))).map(|i| ids.value(i)).collect()
    };

    // The raw value of a masked cell matches nothing: the caller sees only masked values.
    let raw = mobiles.value(1234);
    assert_eq!(get(format!("mobile = '{raw}'")).await, Vec::<i64>::new());
    assert_eq!(get(format!("mobile >= '{raw}' and mobile <= '{raw}'")).await, Vec::<i64>::new());
    // A masked value sorts below every raw one ('*' < '1'): statistics of the raw values would
    // rule out every row group, yet these rows pass on their masked values.
    let target = masked(1234);
    let found = get(format!("mobile = '{target}'")).await;
    assert!(found.contains(&1234), "{found:?}");
    assert_eq!(found, expected(&|m: &str| m == target));
    let found = get("mobile < '1' and id >= 1000 and id < 1100".into()).await;
    assert_eq!(found, (1000..1100).collect::<Vec<i64>>());
    let found = get(format!("mobile in ('{target}', '13800000000') or mobile > '2'")).await;
    assert_eq!(found, expected(&|m: &str| m == target || m > "2"));
    // A masked district: `district = 'Haizhou'` holds for no masked value ('H*****').
    assert_eq!(get("district = 'Haizhou'".into()).await, Vec::<i64>::new());
    assert_eq!(get("district = 'H******' and id < 100".into()).await.len(), {
        let district = data.column(2).as_any().downcast_ref::<StringArray>().unwrap();
        (0..100).filter(|&i| arrow::array::Array::is_valid(district, i) && district.value(i) == "Haizhou").count()
    });
    // The agreement's row filter is applied (and may prune) on raw values; nothing is lost.
    assert_eq!(get("id >= 0".into()).await, (0..4000).collect::<Vec<i64>>());
    assert_eq!(get("id >= 3990 or id < 2".into()).await, [0, 1].into_iter().chain(3990..4000).collect::<Vec<i64>>());
}

/// Reads `/proc/<pid>/io` field `rchar`: bytes the process has read, files and sockets alike.
fn read_bytes(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap();
    let line = text.lines().find(|l| l.starts_with("rchar:")).unwrap();
    line["rchar:".len()..].trim().parse().unwrap()
}

/// Bytes the gateway reads, and the time it takes, to answer `path`; the reading one step
/// ahead of an answer is let finish before counting.
async fn measured(g: &Gateway, path: &str) -> (u64, Duration, usize) {
    let before = read_bytes(g.pid());
    let started = Instant::now();
    let r = client().get(g.url(path)).send().await.unwrap();
    assert_eq!(r.status(), 200, "{path}");
    let body = r.bytes().await.unwrap();
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    (read_bytes(g.pid()) - before, took, body.len())
}

#[tokio::test]
async fn a_small_or_selective_answer_reads_a_small_part_of_a_large_file() {
    const ROWS: usize = 400_000;
    let site = Site::new(&[
        ("big-parquet", "parquet", "big.parquet", FIELDS),
        ("big-arrow", "arrow_ipc", "big.arrow", FIELDS),
        ("big-csv", "csv", "big.csv", FIELDS),
    ]);
    let data = table(ROWS, 0xb16);
    let parquet = site.data_dir.join("big.parquet");
    // 8 row groups of 50,000 rows, pages of 1,000 rows.
    write_parquet(&parquet, &data, 50_000, 1_000);
    let arrow_file = site.data_dir.join("big.arrow");
    write_arrow(&arrow_file, &data, 10_000);
    let csv = site.data_dir.join("big.csv");
    write_csv(&csv, &data);
    for file in ["big.parquet", "big.arrow", "big.csv"] {
        site.set_entry(file, "cache = \"never\"");
    }
    let g = site.start();
    let size = |p: &Path| std::fs::metadata(p).unwrap().len();
    // A first call on each warms what is read once per process.
    for dataset in ["big-parquet", "big-arrow", "big-csv"] {
        rows(&g, dataset, "limit=1").await;
    }

    // Every case is measured before any is judged, so that a failure shows them all.
    let mut cases = Vec::new();
    let mut measure = async |what: &'static str, path: &str, file: &Path, most: u64| {
        let (read, took, _) = measured(&g, path).await;
        let of = size(file);
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "{what}: read {read} of {of} bytes in {took:?}");
        cases.push((what, read, of, most));
    };
    // `limit=1` reads about one page of each column, not two batches of 8,192 rows.
    let parquet_size = size(&parquet);
    measure("parquet limit=1", "/v1/datasets/big-parquet/rows?limit=1", &parquet, parquet_size / 100).await;
    // A selective filter reads the row group and pages that may hold the row.
    let path = "/v1/datasets/big-parquet/rows?filter=id%20%3D%20312345";
    measure("parquet id = 312345", path, &parquet, parquet_size / 20).await;
    // With `order`, nothing can be cut: all of the column is read.
    let path = "/v1/datasets/big-parquet/rows?limit=1&order=-id&columns=id";
    measure("parquet limit=1 order=-id", path, &parquet, parquet_size).await;
    // Arrow IPC: one batch of 10,000 rows (a fortieth of the file), not that and the next one.
    let arrow_size = size(&arrow_file);
    measure("arrow limit=1", "/v1/datasets/big-arrow/rows?limit=1", &arrow_file, arrow_size / 40 * 3 / 2).await;
    // CSV: one read of 256 KiB, not a batch of 1 MiB of rows and the next one.
    measure("csv limit=1", "/v1/datasets/big-csv/rows?limit=1", &csv, 512 << 10).await;
    for (what, read, of, most) in cases {
        assert!(read < most, "{what} read {read} of {of} bytes, more than {most}");
    }

    let (_, body) = get_json(&g.url("/v1/datasets/big-parquet/rows?filter=id%20%3D%20312345")).await;
    assert_eq!(body.as_array().unwrap().len(), 1);
    assert_eq!(body[0]["id"], 312345);
}
