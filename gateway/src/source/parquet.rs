//! Parquet files read through their statistics: what cannot pass is never read.
//!
//! The filters of a [`super::Pushdown`] are judged against the footer's statistics (minimum, maximum
//! and null count per column): a row group is read only if they leave open that one of its rows
//! passes every filter. Within the row groups read, where the file has a page index, each filter
//! term on a single column does the same for pages, as a [`RowSelection`]. A query that needs
//! only its first rows reads only those ([`ParquetRecordBatchReaderBuilder::with_limit`]).
//!
//! Pruning is conservative: a statistic that is missing, a column whose stored type is not one
//! the declared type is an order-keeping cast of, and any test the statistics cannot settle
//! (`!=`, `not in`, `like`, `>` on floating point, where NaN sorts above every bound but is left
//! out of them) all mean "read". The pipeline still applies every filter to what is read.

use std::fs::File;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, Datum, UInt64Array};
use arrow::compute::kernels::cmp;
use arrow::datatypes::{DataType, Schema, SchemaRef};
use parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection};
use parquet::arrow::ProjectionMask;
use parquet::basic::{ColumnOrder, SortOrder, Type as PhysicalType};
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData};
use policy::filter::CmpOp;
use policy::Expr;

use super::file::{batches_of, Reading};
use super::BatchStream;
use crate::error::Error;
use crate::pipeline::literal_scalar;

/// The batches of a Parquet file, reading only the row groups and pages `read.pushdown` leaves
/// open, and no more rows than it needs.
pub fn batches(file: File, read: &Reading) -> Result<BatchStream, Error> {
    let failed = |e: parquet::errors::ParquetError| Error::source(format!("the Parquet file cannot be read: {e}"));
    let tests: Vec<Test> = read.pushdown.filters.iter().map(|f| Test::of(f, false, &read.declared)).collect();
    let prunes = tests.iter().any(|t| !matches!(t, Test::Unknown));
    // The page index is read only when a filter can use it.
    let policy = if prunes { PageIndexPolicy::Optional } else { PageIndexPolicy::Skip };
    let options = ArrowReaderOptions::new().with_page_index_policy(policy);
    let mut builder = ParquetRecordBatchReaderBuilder::try_new_with_options(file, options).map_err(failed)?;
    let file_schema = builder.schema().clone();
    if prunes {
        let metadata = builder.metadata().clone();
        let statistics = Statistics { metadata: &metadata, file_schema: &file_schema, declared: &read.declared };
        let row_groups = statistics.row_groups_to_read(&tests);
        if row_groups.is_empty() {
            return Ok(Box::pin(futures_util::stream::empty()));
        }
        if let Some(selection) = statistics.pages_to_read(&tests, &row_groups) {
            builder = builder.with_row_selection(selection);
        }
        builder = builder.with_row_groups(row_groups);
    }
    let roots: Vec<usize> = read.schema.fields().iter().filter_map(|f| file_schema.index_of(f.name()).ok()).collect();
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let mut batch_rows = read.batch_rows;
    if let Some(rows) = read.pushdown.rows {
        builder = builder.with_limit(rows);
        batch_rows = batch_rows.min(rows.max(1));
    }
    let reader = builder.with_projection(mask).with_batch_size(batch_rows).build().map_err(failed)?;
    Ok(batches_of(reader, read.schema.clone(), read.pushdown.rows))
}

/// A filter in the form statistics can judge: negations pushed down to the tests (exact under
/// SQL's three-valued logic: `not (a < 1)` keeps the rows `a >= 1` keeps), literals typed as the
/// declared column, and every test statistics cannot settle made [`Test::Unknown`].
enum Test {
    Compare {
        column: String,
        op: CmpOp,
        value: Arc<dyn Datum + Send + Sync>,
    },
    /// `column in (values)`.
    In {
        column: String,
        values: Vec<Arc<dyn Datum + Send + Sync>>,
    },
    IsNull {
        column: String,
        negated: bool,
    },
    And(Box<Test>, Box<Test>),
    Or(Box<Test>, Box<Test>),
    /// Any row may pass.
    Unknown,
}

impl Test {
    /// `expr`, or `not expr` when `negated`, against the `declared` schema.
    fn of(expr: &Expr, negated: bool, declared: &SchemaRef) -> Test {
        let typed = |column: &policy::filter::Column, literal| {
            let field = declared.field_with_name(&column.name).ok()?;
            literal_scalar(field.data_type(), literal, column).ok()
        };
        let both =
            |a: &Expr, b: &Expr| (Box::new(Test::of(a, negated, declared)), Box::new(Test::of(b, negated, declared)));
        match expr {
            Expr::Compare { column, op, value } => {
                let op = if negated { opposite(*op) } else { *op };
                match typed(column, value) {
                    Some(value) if op != CmpOp::NotEq => Test::Compare { column: column.name.clone(), op, value },
                    _ => Test::Unknown,
                }
            }
            Expr::In { column, values, negated: not_in } if *not_in == negated => {
                match values.iter().map(|v| typed(column, v)).collect::<Option<Vec<_>>>() {
                    Some(values) => Test::In { column: column.name.clone(), values },
                    None => Test::Unknown,
                }
            }
            Expr::IsNull { column, negated: not_null } => {
                Test::IsNull { column: column.name.clone(), negated: *not_null != negated }
            }
            Expr::And(a, b) if negated => {
                let (a, b) = both(a, b);
                Test::Or(a, b)
            }
            Expr::And(a, b) => {
                let (a, b) = both(a, b);
                Test::And(a, b)
            }
            Expr::Or(a, b) if negated => {
                let (a, b) = both(a, b);
                Test::And(a, b)
            }
            Expr::Or(a, b) => {
                let (a, b) = both(a, b);
                Test::Or(a, b)
            }
            Expr::Not(e) => Test::of(e, !negated, declared),
            Expr::In { .. } | Expr::Like { .. } => Test::Unknown,
        }
    }

    /// The single column this test reads, if it reads exactly one.
    fn column(&self) -> Option<&str> {
        match self {
            Test::Compare { column, .. } | Test::In { column, .. } | Test::IsNull { column, .. } => Some(column),
            Test::And(a, b) | Test::Or(a, b) => match (a.column(), b.column()) {
                (Some(x), Some(y)) if x == y => Some(x),
                _ => None,
            },
            Test::Unknown => None,
        }
    }

    /// The terms of this test's top-level `and`s.
    fn terms(&self) -> Vec<&Test> {
        match self {
            Test::And(a, b) => {
                let mut terms = a.terms();
                terms.extend(b.terms());
                terms
            }
            other => vec![other],
        }
    }

    /// For each of `count` containers (row groups or pages), whether a row in it may pass, as
    /// far as `stats` tell.
    fn may_pass(&self, count: usize, stats: &mut dyn FnMut(&str) -> Option<ColumnStats>) -> Vec<bool> {
        match self {
            Test::Compare { column, op, value } => match stats(column) {
                Some(s) => s.compare(*op, value.as_ref()),
                None => vec![true; count],
            },
            Test::In { column, values } => match stats(column) {
                Some(s) => values
                    .iter()
                    .map(|v| s.compare(CmpOp::Eq, v.as_ref()))
                    .fold(vec![false; count], |a, b| a.iter().zip(b).map(|(x, y)| *x || y).collect()),
                None => vec![true; count],
            },
            Test::IsNull { column, negated } => match stats(column) {
                Some(s) => (0..count)
                    .map(|i| match (s.nulls.is_valid(i), s.rows.is_valid(i)) {
                        (false, _) => true,
                        (true, _) if !negated => s.nulls.value(i) > 0,
                        (true, true) => s.nulls.value(i) < s.rows.value(i),
                        (true, false) => true,
                    })
                    .collect(),
                None => vec![true; count],
            },
            Test::And(a, b) => {
                a.may_pass(count, stats).into_iter().zip(b.may_pass(count, stats)).map(|(x, y)| x && y).collect()
            }
            Test::Or(a, b) => {
                a.may_pass(count, stats).into_iter().zip(b.may_pass(count, stats)).map(|(x, y)| x || y).collect()
            }
            Test::Unknown => vec![true; count],
        }
    }
}

/// The operator that keeps exactly the non-null rows `op` drops.
fn opposite(op: CmpOp) -> CmpOp {
    match op {
        CmpOp::Eq => CmpOp::NotEq,
        CmpOp::NotEq => CmpOp::Eq,
        CmpOp::Lt => CmpOp::GtEq,
        CmpOp::LtEq => CmpOp::Gt,
        CmpOp::Gt => CmpOp::LtEq,
        CmpOp::GtEq => CmpOp::Lt,
    }
}

/// One column's statistics over a run of containers, in the declared type. A null entry is an
/// unknown statistic.
struct ColumnStats {
    min: ArrayRef,
    max: ArrayRef,
    nulls: UInt64Array,
    rows: UInt64Array,
}

impl ColumnStats {
    /// Whether a row of each container may satisfy `column op value`. A container whose rows
    /// are all null has none that does (a comparison with null drops the row).
    fn compare(&self, op: CmpOp, value: &dyn Datum) -> Vec<bool> {
        let floating = self.min.data_type().is_floating();
        let bounds = match op {
            // NaN sorts above every value but is left out of the maximum.
            CmpOp::Gt | CmpOp::GtEq if floating => None,
            CmpOp::Eq => cmp::lt_eq(&self.min, value)
                .and_then(|low| arrow::compute::and_kleene(&low, &cmp::gt_eq(&self.max, value)?))
                .ok(),
            CmpOp::Lt => cmp::lt(&self.min, value).ok(),
            CmpOp::LtEq => cmp::lt_eq(&self.min, value).ok(),
            CmpOp::Gt => cmp::gt(&self.max, value).ok(),
            CmpOp::GtEq => cmp::gt_eq(&self.max, value).ok(),
            CmpOp::NotEq => None,
        };
        (0..self.min.len())
            .map(|i| {
                let all_null =
                    self.nulls.is_valid(i) && self.rows.is_valid(i) && self.nulls.value(i) == self.rows.value(i);
                let in_bounds = bounds.as_ref().is_none_or(|b: &BooleanArray| !b.is_valid(i) || b.value(i));
                in_bounds && !all_null
            })
            .collect()
    }
}

/// A file's statistics, read in the declared types.
struct Statistics<'a> {
    metadata: &'a ParquetMetaData,
    file_schema: &'a Schema,
    declared: &'a Schema,
}

impl Statistics<'_> {
    /// The row groups in which a row may pass every test.
    fn row_groups_to_read(&self, tests: &[Test]) -> Vec<usize> {
        let groups = self.metadata.row_groups();
        let rows = UInt64Array::from_iter_values(groups.iter().map(|g| g.num_rows().max(0) as u64));
        let mut stats = |column: &str| {
            let converter = self.converter(column)?;
            let target = self.target_type(column)?;
            Some(ColumnStats {
                min: cast(converter.row_group_mins(groups.iter()).ok()?, target)?,
                max: cast(converter.row_group_maxes(groups.iter()).ok()?, target)?,
                nulls: converter.row_group_null_counts(groups.iter()).ok()?,
                rows: rows.clone(),
            })
        };
        let mut keep = vec![true; groups.len()];
        for test in tests {
            for (k, may) in keep.iter_mut().zip(test.may_pass(groups.len(), &mut stats)) {
                *k &= may;
            }
        }
        keep.iter().enumerate().filter(|(_, k)| **k).map(|(i, _)| i).collect()
    }

    /// The rows of `row_groups` (counted over those groups only) in pages where a row may pass
    /// every single-column test term, from the page index; `None` when nothing is ruled out.
    fn pages_to_read(&self, tests: &[Test], row_groups: &[usize]) -> Option<RowSelection> {
        let column_index = self.metadata.column_index()?;
        let offset_index = self.metadata.offset_index()?;
        let total: usize = row_groups.iter().map(|&g| self.metadata.row_group(g).num_rows().max(0) as usize).sum();
        let mut selection: Option<RowSelection> = None;
        for term in tests.iter().flat_map(Test::terms) {
            let Some(column) = term.column() else { continue };
            let Some(converter) = self.converter(column) else { continue };
            let Some(target) = self.target_type(column) else { continue };
            let Ok(Some(rows)) = converter.data_page_row_counts(offset_index, self.metadata.row_groups(), row_groups)
            else {
                continue;
            };
            let page_stats = || {
                Some(ColumnStats {
                    min: cast(converter.data_page_mins(column_index, offset_index, row_groups).ok()?, target)?,
                    max: cast(converter.data_page_maxes(column_index, offset_index, row_groups).ok()?, target)?,
                    nulls: converter.data_page_null_counts(column_index, offset_index, row_groups).ok()?,
                    rows: rows.clone(),
                })
            };
            let Some(stats) = page_stats() else { continue };
            let pages = rows.len();
            // Every page must be accounted for, or the selection would not line up with the rows.
            let aligned = [stats.min.len(), stats.max.len(), stats.nulls.len()].iter().all(|&n| n == pages)
                && rows.null_count() == 0
                && rows.values().iter().sum::<u64>() == total as u64;
            if !aligned {
                continue;
            }
            let mut stats = Some(stats);
            let may = term.may_pass(pages, &mut |_| stats.take());
            let mut start = 0;
            let mut ranges = Vec::new();
            for (page_rows, may) in rows.values().iter().zip(may) {
                let end = start + *page_rows as usize;
                if may {
                    ranges.push(start..end);
                }
                start = end;
            }
            let pages_selected = RowSelection::from_consecutive_ranges(ranges.into_iter(), total);
            selection = Some(match selection {
                Some(s) => s.intersection(&pages_selected),
                None => pages_selected,
            });
        }
        selection.filter(|s| s.skipped_row_count() > 0)
    }

    fn converter(&self, column: &str) -> Option<StatisticsConverter<'_>> {
        let parquet_schema = self.metadata.file_metadata().schema_descr();
        let converter = StatisticsConverter::try_new(column, self.file_schema, parquet_schema).ok()?;
        let index = converter.parquet_column_index()?;
        // Bounds are used only where the file says how its values are ordered: a column whose
        // order the writer left undefined (INT96 timestamps, say) is never used to prune.
        let ordered = self.metadata.file_metadata().column_order(index);
        if !matches!(ordered, ColumnOrder::TYPE_DEFINED_ORDER(SortOrder::SIGNED | SortOrder::UNSIGNED))
            || parquet_schema.column(index).physical_type() == PhysicalType::INT96
        {
            return None;
        }
        Some(converter.with_missing_null_counts_as_zero(false))
    }

    /// The declared type of `column`, if the file's values reach it by a cast that keeps their
    /// order (so the cast bounds bound the cast values the pipeline sees).
    fn target_type(&self, column: &str) -> Option<&DataType> {
        use DataType::*;
        let stored = self.file_schema.field_with_name(column).ok()?.data_type();
        let declared = self.declared.field_with_name(column).ok()?.data_type();
        let keeps_order = stored == declared
            || matches!(
                (stored, declared),
                (Int8 | Int16 | Int32 | UInt8 | UInt16 | UInt32, Int64)
                    | (Float32, Float64)
                    | (LargeUtf8 | Utf8View, Utf8)
                    | (Timestamp(..), Timestamp(..))
            );
        keeps_order.then_some(declared)
    }
}

fn cast(array: ArrayRef, to: &DataType) -> Option<ArrayRef> {
    if array.data_type() == to {
        return Some(array);
    }
    arrow::compute::cast(&array, to).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
    use arrow::datatypes::Field;
    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::WriterProperties;

    /// A file of `groups` row groups of 100 rows: `n` counts up from 0; `x` is `n` as a float
    /// with NaN at every 50th row; `s` is null in the second group.
    fn file(groups: usize) -> (tempfile::NamedTempFile, SchemaRef) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, true),
            Field::new("x", DataType::Float64, true),
            Field::new("s", DataType::Utf8, true),
        ]));
        let out = tempfile::NamedTempFile::new().unwrap();
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(100))
            .set_data_page_row_count_limit(10)
            .set_write_batch_size(10)
            .build();
        let mut writer = ArrowWriter::try_new(out.reopen().unwrap(), schema.clone(), Some(props)).unwrap();
        let rows = (groups * 100) as i64;
        let n = Int64Array::from_iter_values(0..rows);
        let x = Float64Array::from_iter_values((0..rows).map(|i| if i % 50 == 0 { f64::NAN } else { i as f64 }));
        let s = StringArray::from_iter((0..rows).map(|i| (!(100..200).contains(&i)).then(|| format!("v{i:04}"))));
        writer
            .write(&RecordBatch::try_new(schema.clone(), vec![Arc::new(n), Arc::new(x), Arc::new(s)]).unwrap())
            .unwrap();
        writer.close().unwrap();
        (out, schema)
    }

    fn groups_read(filter: &str) -> Vec<usize> {
        let (file, schema) = file(5);
        let builder = ParquetRecordBatchReaderBuilder::try_new(file.reopen().unwrap()).unwrap();
        let statistics = Statistics { metadata: builder.metadata(), file_schema: builder.schema(), declared: &schema };
        let tests = [Test::of(&Expr::parse(filter).unwrap(), false, &schema)];
        statistics.row_groups_to_read(&tests)
    }

    #[test]
    fn row_groups_are_skipped_only_where_statistics_rule_every_row_out() {
        assert_eq!(groups_read("n = 250"), vec![2]);
        assert_eq!(groups_read("n < 100 or n >= 420"), vec![0, 4]);
        assert_eq!(groups_read("not (n >= 100)"), vec![0]);
        assert_eq!(groups_read("n in (5, 305)"), vec![0, 3]);
        assert_eq!(groups_read("n != 250"), vec![0, 1, 2, 3, 4]);
        assert_eq!(groups_read("s is null"), vec![1]);
        assert_eq!(groups_read("s is not null"), vec![0, 2, 3, 4]);
        assert_eq!(groups_read("s = 'v0150'"), Vec::<usize>::new(), "the second group holds only nulls");
        assert_eq!(groups_read("s like 'v01%'"), vec![0, 1, 2, 3, 4]);
        assert_eq!(groups_read("x < 50"), vec![0]);
        // NaN passes `x > 1000` under Arrow's total order, and no maximum counts it.
        assert_eq!(groups_read("x > 1000"), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn pages_are_skipped_within_the_row_groups_read() {
        let (file, schema) = file(5);
        let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
        let builder = ParquetRecordBatchReaderBuilder::try_new_with_options(file.reopen().unwrap(), options).unwrap();
        let statistics = Statistics { metadata: builder.metadata(), file_schema: builder.schema(), declared: &schema };
        let tests = [Test::of(&Expr::parse("n >= 215 and n < 232").unwrap(), false, &schema)];
        let groups = statistics.row_groups_to_read(&tests);
        assert_eq!(groups, vec![2]);
        let selection = statistics.pages_to_read(&tests, &groups).unwrap();
        // Pages of 10 rows: 210..220, 220..230 and 230..240 of the group's 100 rows.
        assert_eq!(selection.row_count(), 30);
        assert_eq!(selection.skipped_row_count(), 70);
    }
}
