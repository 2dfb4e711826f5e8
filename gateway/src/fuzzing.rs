//! What the fuzz targets in `fuzz/` call (feature `fuzzing`): each function takes outside input
//! as the gateway receives it, runs it through the parsers and evaluators that read it, and
//! asserts what must hold whatever the input. A panic is a defect; an error answer is not.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Float64Array, Int64Array, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{Field, Schema};
use arrow::record_batch::RecordBatch;
use arrow_flight::{FlightDescriptor, Ticket};

use crate::config::{self, Origin};
use crate::flight::sql::SqlCommand;
use crate::flight::Command;
use crate::http::{download, request::Params, soql};
use crate::pipeline::{Predicate, Query};

/// A filter as callers and agreements write it: parsed, printed and parsed again to the same
/// expression (the same but for the character positions its columns were found at, which only
/// error messages use: so the same printed form), then evaluated on a small batch of every
/// column type a catalog declares.
pub fn filter(text: &str) {
    let Ok(expr) = policy::Expr::parse(text) else { return };
    let printed = expr.to_string();
    let again = policy::Expr::parse(&printed)
        .unwrap_or_else(|e| panic!("{printed:?}, printed from {text:?}, does not parse: {e}"));
    assert_eq!(again.to_string(), printed, "{text:?} printed as {printed:?} parses to another filter");
    let batch = sample();
    if let Ok(predicate) = Predicate::compile(&expr, &batch.schema()) {
        if let Ok(kept) = predicate.evaluate(&batch) {
            assert_eq!(kept.len(), batch.num_rows(), "{text:?}: one answer per row");
        }
    }
}

/// Five rows of the column types a catalog declares, with nulls and edge values.
fn sample() -> RecordBatch {
    static SAMPLE: OnceLock<RecordBatch> = OnceLock::new();
    SAMPLE
        .get_or_init(|| {
            let columns: Vec<(&str, ArrayRef)> = vec![
                ("id", Arc::new(Int64Array::from(vec![Some(1), Some(-7), None, Some(i64::MAX), Some(i64::MIN)]))),
                (
                    "name",
                    Arc::new(StringArray::from(vec![Some("Zhang Wei"), Some(""), None, Some("王芳"), Some("a'b")])),
                ),
                ("score", Arc::new(Float64Array::from(vec![Some(1.5), Some(f64::NAN), None, Some(-0.0), Some(1e300)]))),
                ("active", Arc::new(BooleanArray::from(vec![Some(true), Some(false), None, Some(true), None]))),
                ("day", Arc::new(Date32Array::from(vec![Some(0), Some(20_000), None, Some(-1), Some(i32::MAX)]))),
                (
                    "at",
                    Arc::new(
                        TimestampMicrosecondArray::from(vec![
                            Some(0),
                            Some(1_700_000_000_000_000),
                            None,
                            Some(-1),
                            None,
                        ])
                        .with_timezone("UTC"),
                    ),
                ),
            ];
            let fields: Vec<Field> =
                columns.iter().map(|(name, column)| Field::new(*name, column.data_type().clone(), true)).collect();
            let schema = Arc::new(Schema::new(fields));
            RecordBatch::try_new(schema, columns.into_iter().map(|(_, c)| c).collect()).expect("a valid sample")
        })
        .clone()
}

/// The query string of a data call: parameters, SoQL's names, and the query they make.
pub fn query_string(query: &str) {
    let Ok(params) = Params::parse(Some(query)) else { return };
    let Ok(params) = soql::translate(&params) else { return };
    if let Ok(query) = Query::from_params(params.iter()) {
        if let Some(filter) = &query.filter {
            let batch = sample();
            if let Ok(predicate) = Predicate::compile(filter, &batch.schema()) {
                let _ = predicate.evaluate(&batch);
            }
        }
    }
}

/// A `Range` header against an answer of `len` bytes: a range served lies within the answer.
pub fn range(header: &str, len: u64) {
    if let Ok(Some((start, end))) = download::parse_range(header, len) {
        assert!(start < end && end <= len, "{header:?} of {len} bytes gave {start}..{end}");
    }
}

/// A Flight ticket, a descriptor's command and a prepared statement's handle, as the Flight
/// port receives them: plain commands, Flight SQL commands and the parameters bound to them.
pub fn flight(bytes: &[u8]) {
    let ticket = Ticket::new(bytes.to_vec());
    if let Ok(command) = Command::from_ticket(&ticket) {
        if let Ok(query) = command.query() {
            assert!(query.columns.as_ref().is_none_or(|c| !c.is_empty()));
        }
        let again = Command::from_ticket(&command.ticket()).expect("a command's own ticket reads back");
        assert_eq!(again.ticket(), command.ticket());
    }
    let _ = Command::dataset_named(&ticket);
    let _ = Command::from_descriptor(&FlightDescriptor::new_cmd(bytes.to_vec()));
    if let Some(Ok(SqlCommand::Statement(statement))) = SqlCommand::parse(bytes) {
        let _ = statement.params();
    }
    if let Ok(statement) = crate::flight::sql::Statement::from_handle(bytes) {
        let _ = statement.params();
    }
}

/// Audit segment text as `audit verify` reads it from disk: every line parsed, the chain walked.
pub fn audit(text: &[u8]) {
    if let Ok(text) = std::str::from_utf8(text) {
        for line in text.lines() {
            let _ = crate::audit::segments::parse_line(line);
        }
    }
    let dir = scratch("audit");
    std::fs::write(dir.join("segment-000000000001.ndjson"), text).expect("the scratch directory is writable");
    let _ = crate::audit::segments::verify(&dir);
}

/// A configuration as `kaifang check-config` reads it: the main file, an included catalog file
/// and a calendar file, cut from `text` at NUL characters (`main\0included\0calendar`).
pub fn config(text: &str) {
    let dir = scratch("config");
    let mut parts = text.splitn(3, '\0');
    let main = parts.next().unwrap_or_default();
    std::fs::write(dir.join("kaifang.toml"), main).expect("the scratch directory is writable");
    std::fs::write(dir.join("included.toml"), parts.next().unwrap_or_default()).expect("writable");
    std::fs::write(dir.join("calendar.toml"), parts.next().unwrap_or_default()).expect("writable");
    let _ = config::load(Origin::Files, &dir.join("kaifang.toml"));
}

/// A working-day calendar file as `kaifang calendar check` reads it.
pub fn calendar(text: &str) {
    let path = scratch("calendar").join("calendar.toml");
    std::fs::write(&path, text).expect("the scratch directory is writable");
    let _ = config::load_calendar_file(&path);
}

/// A directory of this process's own for files a target writes, made once.
fn scratch(name: &str) -> PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    let root = ROOT.get_or_init(|| {
        let root = std::env::temp_dir().join(format!("kaifang-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&root).expect("the temporary directory is writable");
        root
    });
    let dir: &Path = &root.join(name);
    std::fs::create_dir_all(dir).expect("the temporary directory is writable");
    dir.to_path_buf()
}
