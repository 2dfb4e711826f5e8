//! The demo datasets: plausible city data, generated deterministically.
//!
//! `kaifang serve` with no `--config` writes them into `<data-dir>/demo` on first run;
//! `kaifang demo-data --rows N --out DIR` writes bigger ones for benchmarks. The same row count
//! always gives the same bytes, so tests and benchmarks can compare against known content.
//! Generation works in batches, so memory stays flat however many rows are asked for.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Float64Builder, Int64Builder, StringBuilder, TimestampMillisecondBuilder,
};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use indicatif::{ProgressBar, ProgressStyle};
use policy::Format;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::{Config, SourceConfig};
use crate::source::arrow_schema;

/// Rows per dataset on the first run of the embedded demo.
pub const DEFAULT_ROWS: u64 = 5000;
/// Rows generated and written at a time.
const CHUNK_ROWS: u64 = 65_536;
/// 2025-06-01T00:00:00Z, the start of the demo's month of data.
const EPOCH_MS: i64 = 1_748_736_000_000;

const DISTRICTS: [(&str, &str); 6] = [
    ("Haizhou", "320706"),
    ("Lianyun", "320703"),
    ("Ganyu", "320707"),
    ("Donghai", "320722"),
    ("Guanyun", "320723"),
    ("Guannan", "320724"),
];
const SURNAMES: [&str; 16] =
    ["王", "李", "张", "刘", "陈", "杨", "黄", "赵", "吴", "周", "徐", "孙", "马", "朱", "胡", "郭"];
const GIVEN: [&str; 16] =
    ["伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛", "明"];
const ROUTES: [&str; 10] = ["1", "2", "5", "10", "17", "23", "K1", "K8", "Y2", "B1"];
const STOPS: [&str; 12] = [
    "Xinpu Station",
    "Hailian Road",
    "Cangwu Park",
    "Huaguo Mountain",
    "Port Gate 4",
    "City Hall",
    "Railway Station",
    "Donghai Square",
    "Ganyu Bus Terminal",
    "University Town",
    "People's Hospital",
    "Lianyun Harbour",
];
const INDUSTRIES: [&str; 8] = [
    "manufacturing",
    "wholesale and retail",
    "construction",
    "transport and logistics",
    "information technology",
    "accommodation and catering",
    "agriculture",
    "scientific research",
];

/// The demo datasets the generator knows, by id.
const KNOWN: [&str; 5] = ["bus-arrivals", "parking-lots", "air-quality", "enterprises", "subsistence-allowance"];

/// Writes the demo datasets of `config` named in `only` (every one when it is empty) with `rows`
/// rows into `out`, named as the file sources of the demo catalog name them. Shows a progress
/// bar when stderr is a terminal.
pub fn write_all(config: &Config, rows: u64, out: &Path, only: &[String]) -> Result<(), String> {
    if let Some(unknown) = only.iter().find(|id| !KNOWN.contains(&id.as_str())) {
        return Err(format!("`{unknown}` is not a demo dataset; the demo datasets are {}", KNOWN.join(", ")));
    }
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let targets: Vec<_> = config
        .datasets
        .iter()
        .filter(|d| KNOWN.contains(&d.id.as_str()))
        .filter(|d| only.is_empty() || only.iter().any(|id| id == d.id.as_str()))
        .filter_map(|d| match &d.source {
            SourceConfig::File(path) => Some((d, out.join(path.file_name()?))),
            SourceConfig::Url(_) => None,
        })
        .collect();
    let progress = ProgressBar::new(rows * targets.len() as u64);
    progress.set_style(
        ProgressStyle::with_template("{msg:>22} [{bar:30}] {human_pos}/{human_len} rows ({per_sec}, {eta} left)")
            .expect("static template")
            .progress_chars("=> "),
    );
    for (dataset, path) in targets {
        progress.set_message(dataset.id.to_string());
        let schema = arrow_schema(&dataset.fields);
        write_dataset(dataset.id.as_str(), dataset.format, schema, rows, &path, &progress)
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    progress.finish_and_clear();
    Ok(())
}

/// The principal the demo's declared agreement belongs to.
pub const DEMO_PRINCIPAL: &str = "demo-analytics";

/// Issues the demo user a key on first run and writes it to `<data-dir>/demo-user.key`
/// (mode 0600), so the README's examples can read it from there.
pub fn ensure_key(state: &crate::state::State) -> Result<(), String> {
    let path = state.config.data_dir.join("demo-user.key");
    if path.exists() {
        return Ok(());
    }
    let issued = crate::auth::issue(state.store.as_ref(), DEMO_PRINCIPAL).map_err(|e| format!("demo key: {e}"))?;
    crate::state::write_private(&path, &issued.key).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    tracing::info!(path = %path.display(), principal = DEMO_PRINCIPAL, "issued the demo user a key");
    Ok(())
}

/// Generates the demo data into `<data_dir>/demo` unless it is already there.
pub fn ensure(config: &Config) -> Result<PathBuf, String> {
    let dir = config.data_dir.join("demo");
    let complete = config.datasets.iter().all(|d| match &d.source {
        SourceConfig::File(path) => config.data_dir.join(path).exists(),
        SourceConfig::Url(_) => true,
    });
    if !complete {
        tracing::info!(dir = %dir.display(), rows = DEFAULT_ROWS, "generating demo data");
        write_all(config, DEFAULT_ROWS, &dir, &[])?;
    }
    Ok(dir)
}

fn write_dataset(
    id: &str,
    format: Format,
    schema: SchemaRef,
    rows: u64,
    path: &Path,
    progress: &ProgressBar,
) -> Result<(), Box<dyn std::error::Error>> {
    // Write to a temporary name and rename, so a crash never leaves a half-written dataset
    // that a later start would take as complete.
    let partial = path.with_extension("partial");
    let file = BufWriter::with_capacity(1 << 20, File::create(&partial)?);
    let mut sink = Sink::new(format, schema.clone(), file)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed(id));
    let mut start = 0;
    while start < rows {
        let n = CHUNK_ROWS.min(rows - start);
        let batch = generate(id, &schema, start, n, &mut rng)?;
        sink.write(&batch)?;
        start += n;
        progress.inc(n);
    }
    sink.finish()?;
    std::fs::rename(&partial, path)?;
    Ok(())
}

fn seed(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

enum Sink {
    Csv(arrow::csv::Writer<BufWriter<File>>),
    Ndjson(arrow::json::LineDelimitedWriter<BufWriter<File>>),
    Parquet(parquet::arrow::ArrowWriter<BufWriter<File>>),
    Arrow(arrow::ipc::writer::FileWriter<BufWriter<File>>),
}

impl Sink {
    fn new(format: Format, schema: SchemaRef, file: BufWriter<File>) -> Result<Sink, Box<dyn std::error::Error>> {
        Ok(match format {
            Format::Csv => Sink::Csv(arrow::csv::WriterBuilder::new().build(file)),
            Format::Ndjson => Sink::Ndjson(arrow::json::LineDelimitedWriter::new(file)),
            Format::Parquet => {
                let props = parquet::file::properties::WriterProperties::builder()
                    .set_compression(parquet::basic::Compression::SNAPPY)
                    .set_max_row_group_row_count(Some(128 * 1024))
                    .build();
                Sink::Parquet(parquet::arrow::ArrowWriter::try_new(file, schema, Some(props))?)
            }
            Format::ArrowIpc => Sink::Arrow(arrow::ipc::writer::FileWriter::try_new(file, &schema)?),
        })
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<(), Box<dyn std::error::Error>> {
        match self {
            Sink::Csv(w) => w.write(batch)?,
            Sink::Ndjson(w) => w.write(batch)?,
            Sink::Parquet(w) => w.write(batch)?,
            Sink::Arrow(w) => w.write(batch)?,
        }
        Ok(())
    }

    fn finish(self) -> Result<(), Box<dyn std::error::Error>> {
        let mut file = match self {
            Sink::Csv(w) => w.into_inner(),
            Sink::Ndjson(mut w) => {
                w.finish()?;
                w.into_inner()
            }
            Sink::Parquet(w) => w.into_inner()?,
            Sink::Arrow(mut w) => {
                w.finish()?;
                w.into_inner()?
            }
        };
        file.flush()?;
        file.get_ref().sync_all()?;
        Ok(())
    }
}

/// Column builders in schema order, filled row by row.
struct Columns {
    schema: SchemaRef,
    columns: Vec<Column>,
}

enum Column {
    Str(StringBuilder),
    Int(Int64Builder),
    Float(Float64Builder),
    Bool(BooleanBuilder),
    Date(Date32Builder),
    Time(TimestampMillisecondBuilder),
}

/// One value of a demo row.
enum V {
    S(String),
    I(i64),
    F(Option<f64>),
    B(bool),
    D(i32),
    T(i64),
}

impl Columns {
    fn new(schema: &SchemaRef) -> Columns {
        use arrow::datatypes::DataType;
        let columns = schema
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                DataType::Utf8 => Column::Str(StringBuilder::new()),
                DataType::Int64 => Column::Int(Int64Builder::new()),
                DataType::Float64 => Column::Float(Float64Builder::new()),
                DataType::Boolean => Column::Bool(BooleanBuilder::new()),
                DataType::Date32 => Column::Date(Date32Builder::new()),
                _ => Column::Time(TimestampMillisecondBuilder::new().with_timezone("+00:00")),
            })
            .collect();
        Columns { schema: schema.clone(), columns }
    }

    fn push(&mut self, row: Vec<V>) -> Result<(), String> {
        if row.len() != self.columns.len() {
            return Err(format!("demo row has {} values for {} fields", row.len(), self.columns.len()));
        }
        for (column, value) in self.columns.iter_mut().zip(row) {
            match (column, value) {
                (Column::Str(b), V::S(s)) => b.append_value(s),
                (Column::Int(b), V::I(i)) => b.append_value(i),
                (Column::Float(b), V::F(x)) => b.append_option(x),
                (Column::Float(b), V::I(i)) => b.append_value(i as f64),
                (Column::Bool(b), V::B(x)) => b.append_value(x),
                (Column::Date(b), V::D(d)) => b.append_value(d),
                (Column::Time(b), V::T(t)) => b.append_value(t),
                _ => return Err("demo value does not fit the declared field type".into()),
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<RecordBatch, arrow::error::ArrowError> {
        let arrays: Vec<ArrayRef> = self
            .columns
            .into_iter()
            .map(|c| -> ArrayRef {
                match c {
                    Column::Str(mut b) => Arc::new(b.finish()),
                    Column::Int(mut b) => Arc::new(b.finish()),
                    Column::Float(mut b) => Arc::new(b.finish()),
                    Column::Bool(mut b) => Arc::new(b.finish()),
                    Column::Date(mut b) => Arc::new(b.finish()),
                    Column::Time(mut b) => Arc::new(b.finish()),
                }
            })
            .collect();
        RecordBatch::try_new(self.schema, arrays)
    }
}

fn generate(
    id: &str,
    schema: &SchemaRef,
    start: u64,
    n: u64,
    rng: &mut ChaCha8Rng,
) -> Result<RecordBatch, Box<dyn std::error::Error>> {
    let mut columns = Columns::new(schema);
    for i in start..start + n {
        let row = match id {
            "bus-arrivals" => bus_arrival(i, rng),
            "parking-lots" => parking_lot(i, rng),
            "air-quality" => air_quality(i, rng),
            "enterprises" => enterprise(i, rng),
            _ => subsistence_household(i, rng),
        };
        columns.push(row)?;
    }
    Ok(columns.finish()?)
}

fn pick<'a, T>(rng: &mut ChaCha8Rng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

fn person_name(rng: &mut ChaCha8Rng) -> String {
    let mut name = pick(rng, &SURNAMES).to_string();
    name.push_str(pick::<&str>(rng, &GIVEN));
    if rng.random_bool(0.6) {
        name.push_str(pick::<&str>(rng, &GIVEN));
    }
    name
}

/// An 18-digit resident ID card number with a valid GB 11643 check digit.
fn id_card(rng: &mut ChaCha8Rng, region: &str) -> String {
    let birth = chrono::NaiveDate::from_ymd_opt(1950, 1, 1).expect("valid date")
        + chrono::Days::new(rng.random_range(0..20_000));
    let body = format!("{region}{}{:03}", birth.format("%Y%m%d"), rng.random_range(0..1000));
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    let sum: u32 = body.bytes().zip(WEIGHTS).map(|(b, w)| u32::from(b - b'0') * w).sum();
    let check = b"10X98765432"[(sum % 11) as usize] as char;
    format!("{body}{check}")
}

fn mobile(rng: &mut ChaCha8Rng) -> String {
    let prefix = pick(rng, &["133", "135", "138", "139", "150", "152", "158", "177", "180", "186", "189", "199"]);
    format!("{prefix}{:08}", rng.random_range(0..100_000_000))
}

fn bus_arrival(i: u64, rng: &mut ChaCha8Rng) -> Vec<V> {
    let stop = rng.random_range(0..STOPS.len());
    let scheduled = EPOCH_MS + (i as i64) * 20_000 + rng.random_range(0..60) * 1000;
    let delay = rng.random_range(-120..600i64);
    vec![
        V::I(i as i64 + 1),
        V::S(pick(rng, &ROUTES).to_string()),
        V::S(format!("S{:04}", stop * 37 + 101)),
        V::S(STOPS[stop].to_string()),
        V::S(DISTRICTS[stop % DISTRICTS.len()].0.to_string()),
        V::S(format!("LYG-{:04}", rng.random_range(1..900))),
        V::T(scheduled),
        V::T(scheduled + delay * 1000),
        V::I(delay),
        V::F(rng.random_bool(0.95).then(|| (rng.random_range(0..=100) as f64) / 100.0)),
        V::B(rng.random_bool(0.8)),
    ]
}

fn parking_lot(i: u64, rng: &mut ChaCha8Rng) -> Vec<V> {
    let district = pick(rng, &DISTRICTS).0;
    let capacity = rng.random_range(40..1200i64);
    vec![
        V::S(format!("P{:05}", i + 1)),
        V::S(format!("{district} {} Parking", pick(rng, &STOPS))),
        V::S(district.to_string()),
        V::I(capacity),
        V::I(rng.random_range(0..=capacity)),
        V::F(Some(f64::from(rng.random_range(0..=16u32)) / 2.0)),
        V::B(rng.random_bool(0.3)),
        V::D(rng.random_range(10_000..20_000)),
        V::T(EPOCH_MS + 29 * 86_400_000 + rng.random_range(0..86_400) * 1000),
    ]
}

fn air_quality(i: u64, rng: &mut ChaCha8Rng) -> Vec<V> {
    let station = (i % 12) as usize;
    let hour = (i / 12) as i64;
    let pm25 = f64::from(rng.random_range(5..220u32));
    let aqi = (pm25 * 1.4) as i64 + rng.random_range(0..10);
    let level = match aqi {
        0..=50 => "excellent",
        51..=100 => "good",
        101..=150 => "light",
        151..=200 => "moderate",
        201..=300 => "heavy",
        _ => "severe",
    };
    vec![
        V::S(format!("LYG{:03}", station + 1)),
        V::S(format!("{} monitoring station", STOPS[station])),
        V::S(DISTRICTS[station % DISTRICTS.len()].0.to_string()),
        V::T(EPOCH_MS + hour * 3_600_000),
        V::F(Some(pm25)),
        V::F(Some(pm25 * 1.6 + f64::from(rng.random_range(0..30u32)))),
        V::F(Some(f64::from(rng.random_range(5..90u32)))),
        V::F(rng.random_bool(0.97).then(|| f64::from(rng.random_range(10..240u32)))),
        V::I(aqi),
        V::S(level.to_string()),
    ]
}

fn enterprise(i: u64, rng: &mut ChaCha8Rng) -> Vec<V> {
    let (district, region) = *pick(rng, &DISTRICTS);
    let industry = pick(rng, &INDUSTRIES);
    let status = if rng.random_bool(0.9) { "active" } else { pick(rng, &["revoked", "cancelled"]) };
    vec![
        V::S(format!("91{region}MA{:08X}", i * 7919 + 0x1000_0000)),
        V::S(format!(
            "连云港{}{}有限公司",
            pick(rng, &GIVEN),
            pick(rng, &["科技", "物流", "建设", "商贸", "食品", "海洋"])
        )),
        V::S(district.to_string()),
        V::S(industry.to_string()),
        V::F(Some(f64::from(rng.random_range(10..50_000u32)))),
        V::D(rng.random_range(7_000..20_200)),
        V::S(status.to_string()),
        V::S(person_name(rng)),
        V::S(id_card(rng, region)),
        V::S(mobile(rng)),
    ]
}

fn subsistence_household(i: u64, rng: &mut ChaCha8Rng) -> Vec<V> {
    let (district, region) = *pick(rng, &DISTRICTS);
    let members = rng.random_range(1..6i64);
    vec![
        V::S(format!("DB{:07}", i + 1)),
        V::S(person_name(rng)),
        V::S(id_card(rng, region)),
        V::S(district.to_string()),
        V::I(members),
        V::F(Some(members as f64 * 760.0)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_cards_carry_a_valid_check_digit() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..100 {
            let id = id_card(&mut rng, "320706");
            assert_eq!(id.len(), 18);
            assert!(id.starts_with("320706"));
        }
        // A published example number with a known check digit.
        let sum: u32 = "11010519491231002"
            .bytes()
            .zip([7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2])
            .map(|(b, w)| u32::from(b - b'0') * w)
            .sum();
        assert_eq!(b"10X98765432"[(sum % 11) as usize], b'X');
    }

    #[test]
    fn demo_rows_fit_the_declared_schemas() {
        let config = crate::config::load(crate::config::Origin::Embedded, Path::new("kaifang.toml")).unwrap();
        for dataset in &config.datasets {
            assert!(KNOWN.contains(&dataset.id.as_str()), "{} has no generator", dataset.id);
            let schema = arrow_schema(&dataset.fields);
            let mut rng = ChaCha8Rng::seed_from_u64(seed(dataset.id.as_str()));
            let batch = generate(dataset.id.as_str(), &schema, 0, 10, &mut rng).unwrap();
            assert_eq!(batch.num_rows(), 10);
        }
    }
}
