//! Block summaries of cached data, so that a filter on a column without a declared index need
//! not read every row.
//!
//! A cached version is cut into blocks of [`BLOCK_ROWS`] rows. For each block and each column of
//! a type that orders and hashes exactly (integers, dates, times, strings) the summary keeps the
//! smallest and largest non-null value and a split-block Bloom filter of the values (the one
//! Parquet writes, sized at a byte per row and folded down where the block has few distinct
//! values). A comparison skips the blocks whose range cannot hold a match; `=` and `in` also
//! skip the blocks whose filter says the value is absent. A filter never says "absent" of a value
//! that is there, so the blocks kept hold every row that can match, and the caller's whole
//! filter is still evaluated on them. Floating-point and boolean columns are not summarized.

use std::sync::Arc;

use arrow::array::{as_string_array, Array, ArrayRef, AsArray, PrimitiveArray, StringArray};
use arrow::buffer::BooleanBuffer;
use arrow::compute::kernels::cmp;
use arrow::compute::{and, max, max_string, min, min_string};
use arrow::datatypes::{
    ArrowPrimitiveType, DataType, Date32Type, Int64Type, Schema, TimeUnit, TimestampMillisecondType,
};
use arrow::record_batch::RecordBatch;
use parquet::bloom_filter::Sbbf;
use parquet::data_type::AsBytes;
use policy::filter::{CmpOp, Expr};

use crate::pipeline::literal_scalar;

/// Rows per block.
pub const BLOCK_ROWS: usize = 8192;

/// Past this estimated false-positive rate a block's filter is folded no further.
const FOLD_TO_FPP: f64 = 0.05;

/// The summaries of one cached batch.
pub struct Zones {
    block_rows: usize,
    blocks: usize,
    /// By field position; `None` for a column that is not summarized.
    columns: Vec<Option<Column>>,
}

/// One column's summaries, one entry per block.
struct Column {
    /// Smallest non-null value of each block (null where the block has none).
    min: ArrayRef,
    max: ArrayRef,
    blooms: Vec<Sbbf>,
}

impl Zones {
    /// Summarizes `batch` in blocks of `block_rows` rows.
    pub fn build(batch: &RecordBatch, block_rows: usize) -> Zones {
        let block_rows = block_rows.max(1);
        let blocks = batch.num_rows().div_ceil(block_rows);
        let columns = batch.columns().iter().map(|c| Column::build(c, block_rows, blocks)).collect();
        Zones { block_rows, blocks, columns }
    }

    pub fn block_rows(&self) -> usize {
        self.block_rows
    }

    /// Bytes the summaries take.
    pub fn bytes(&self) -> usize {
        self.columns
            .iter()
            .flatten()
            .map(|c| {
                c.min.get_array_memory_size()
                    + c.max.get_array_memory_size()
                    + c.blooms.iter().map(|b| b.num_blocks() * 32).sum::<usize>()
            })
            .sum()
    }

    /// The blocks that may hold a row for which `expr` is true (set at their position), or
    /// `None` when the summaries cannot tell. `column` gives the field position of a column
    /// whose summaries may be used; `schema` is the summarized batch's.
    pub fn select(
        &self,
        expr: &Expr,
        schema: &Schema,
        column: &dyn Fn(&str) -> Option<usize>,
    ) -> Option<BooleanBuffer> {
        let summarized = |name: &str| {
            let i = column(name)?;
            Some((i, self.columns.get(i)?.as_ref()?))
        };
        match expr {
            Expr::Compare { column: c, op, value } if *op != CmpOp::NotEq => {
                let (i, zones) = summarized(&c.name)?;
                let literal = literal_scalar(schema.field(i).data_type(), value, c).ok()?;
                zones.compare(*op, literal.as_ref())
            }
            Expr::In { column: c, values, negated: false } => {
                let (i, zones) = summarized(&c.name)?;
                let mut found = BooleanBuffer::new_unset(self.blocks);
                for value in values {
                    let literal = literal_scalar(schema.field(i).data_type(), value, c).ok()?;
                    found = &found | &zones.compare(CmpOp::Eq, literal.as_ref())?;
                }
                Some(found)
            }
            Expr::And(a, b) => match (self.select(a, schema, column), self.select(b, schema, column)) {
                (Some(a), Some(b)) => Some(&a & &b),
                (a, b) => a.or(b),
            },
            Expr::Or(a, b) => Some(&self.select(a, schema, column)? | &self.select(b, schema, column)?),
            _ => None,
        }
    }
}

impl Column {
    fn build(column: &ArrayRef, block_rows: usize, blocks: usize) -> Option<Column> {
        let cut = |b: usize| column.slice(b * block_rows, block_rows.min(column.len() - b * block_rows));
        match column.data_type() {
            DataType::Int64 => Some(Column::primitive::<Int64Type>(column, blocks, cut)),
            DataType::Date32 => Some(Column::primitive::<Date32Type>(column, blocks, cut)),
            DataType::Timestamp(TimeUnit::Millisecond, _) => {
                Some(Column::primitive::<TimestampMillisecondType>(column, blocks, cut))
            }
            DataType::Utf8 => {
                let (mut low, mut high, mut blooms) = (Vec::new(), Vec::new(), Vec::new());
                for b in 0..blocks {
                    let block = cut(b);
                    let block = as_string_array(&block);
                    low.push(min_string(block).map(str::to_owned));
                    high.push(max_string(block).map(str::to_owned));
                    blooms.push(bloom(block.len(), |f| block.iter().flatten().for_each(|s| f.insert(s.as_bytes()))));
                }
                Some(Column { min: Arc::new(StringArray::from(low)), max: Arc::new(StringArray::from(high)), blooms })
            }
            _ => None,
        }
    }

    fn primitive<T>(column: &ArrayRef, blocks: usize, cut: impl Fn(usize) -> ArrayRef) -> Column
    where
        T: ArrowPrimitiveType,
        T::Native: AsBytes,
    {
        let (mut low, mut high, mut blooms) = (Vec::new(), Vec::new(), Vec::new());
        for b in 0..blocks {
            let block = cut(b);
            let block = block.as_primitive::<T>();
            low.push(min(block));
            high.push(max(block));
            blooms.push(bloom(block.len(), |f| block.iter().flatten().for_each(|v| f.insert(&v))));
        }
        let typed = |values: Vec<Option<T::Native>>| -> ArrayRef {
            Arc::new(values.into_iter().collect::<PrimitiveArray<T>>().with_data_type(column.data_type().clone()))
        };
        Column { min: typed(low), max: typed(high), blooms }
    }

    /// The blocks whose range (and, for `=`, filter) admits a value in `op` to `literal`.
    fn compare(&self, op: CmpOp, literal: &dyn arrow::array::Datum) -> Option<BooleanBuffer> {
        let found = match op {
            CmpOp::Eq => and(&cmp::lt_eq(&self.min, literal).ok()?, &cmp::gt_eq(&self.max, literal).ok()?).ok()?,
            CmpOp::Lt => cmp::lt(&self.min, literal).ok()?,
            CmpOp::LtEq => cmp::lt_eq(&self.min, literal).ok()?,
            CmpOp::Gt => cmp::gt(&self.max, literal).ok()?,
            CmpOp::GtEq => cmp::gt_eq(&self.max, literal).ok()?,
            CmpOp::NotEq => return None,
        };
        // A block without values (null bounds) holds no match.
        let found = match found.nulls() {
            Some(valid) => found.values() & valid.inner(),
            None => found.values().clone(),
        };
        if op != CmpOp::Eq {
            return Some(found);
        }
        let (value, _) = literal.get();
        let present = |b: usize| match value.data_type() {
            DataType::Int64 => self.blooms[b].check(&value.as_primitive::<Int64Type>().value(0)),
            DataType::Date32 => self.blooms[b].check(&value.as_primitive::<Date32Type>().value(0)),
            DataType::Timestamp(..) => self.blooms[b].check(&value.as_primitive::<TimestampMillisecondType>().value(0)),
            DataType::Utf8 => self.blooms[b].check(value.as_string::<i32>().value(0).as_bytes()),
            _ => true,
        };
        Some(BooleanBuffer::collect_bool(found.len(), |b| found.value(b) && present(b)))
    }
}

/// A filter sized for `rows` distinct values, filled by `fill`, and folded to what it holds.
fn bloom(rows: usize, fill: impl FnOnce(&mut Sbbf)) -> Sbbf {
    let mut filter = Sbbf::new_with_num_of_bytes(rows.max(32));
    fill(&mut filter);
    filter.fold_to_target_fpp(FOLD_TO_FPP);
    filter
}
