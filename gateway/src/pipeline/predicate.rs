//! Row filters evaluated on Arrow record batches.
//!
//! A [`policy::Expr`] is compiled once per request against the schema being read: column names
//! become positions and literals become typed scalars (dates and times parsed here, with the
//! position of a bad one reported), so evaluating a batch is a handful of vectorised kernels.
//! Comparisons follow SQL: a comparison with a null is unknown, and unknown rows are dropped.

use std::sync::Arc;

use arrow::array::{
    Array, BooleanArray, Date32Array, Datum, Float64Array, Int64Array, Scalar, StringArray, TimestampMillisecondArray,
};
use arrow::compute::kernels::cmp;
use arrow::compute::{and_kleene, is_not_null, is_null, not, or_kleene};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use policy::filter::{CmpOp, Literal};
use policy::{Expr, FilterError};

use crate::error::Error;

/// A compiled row filter.
pub enum Predicate {
    Compare { column: usize, op: CmpOp, value: Arc<dyn Datum + Send + Sync> },
    In { column: usize, values: Vec<Arc<dyn Datum + Send + Sync>>, negated: bool },
    Like { column: usize, pattern: Scalar<StringArray>, negated: bool },
    IsNull { column: usize, negated: bool },
    And(Box<Predicate>, Box<Predicate>),
    Or(Box<Predicate>, Box<Predicate>),
    Not(Box<Predicate>),
}

impl Predicate {
    /// Compiles `expr` against `schema`, which must hold every column it names.
    pub fn compile(expr: &Expr, schema: &SchemaRef) -> Result<Predicate, Error> {
        let column = |c: &policy::filter::Column| {
            schema.index_of(&c.name).map_err(|_| {
                Error::from(FilterError { position: c.position, message: format!("unknown column `{}`", c.name) })
            })
        };
        Ok(match expr {
            Expr::Compare { column: c, op, value } => {
                let i = column(c)?;
                Predicate::Compare { column: i, op: *op, value: literal_scalar(schema.field(i).data_type(), value, c)? }
            }
            Expr::In { column: c, values, negated } => {
                let i = column(c)?;
                let values = values
                    .iter()
                    .map(|v| literal_scalar(schema.field(i).data_type(), v, c))
                    .collect::<Result<_, _>>()?;
                Predicate::In { column: i, values, negated: *negated }
            }
            Expr::Like { column: c, pattern, negated } => {
                Predicate::Like { column: column(c)?, pattern: StringArray::new_scalar(pattern), negated: *negated }
            }
            Expr::IsNull { column: c, negated } => Predicate::IsNull { column: column(c)?, negated: *negated },
            Expr::And(a, b) => Predicate::And(Box::new(Self::compile(a, schema)?), Box::new(Self::compile(b, schema)?)),
            Expr::Or(a, b) => Predicate::Or(Box::new(Self::compile(a, schema)?), Box::new(Self::compile(b, schema)?)),
            Expr::Not(e) => Predicate::Not(Box::new(Self::compile(e, schema)?)),
        })
    }

    /// Which rows of `batch` pass: true to keep; false or null to drop.
    pub fn evaluate(&self, batch: &RecordBatch) -> Result<BooleanArray, Error> {
        Ok(match self {
            Predicate::Compare { column, op, value } => compare(batch.column(*column), *op, value.as_ref())?,
            Predicate::In { column, values, negated } => {
                let array = batch.column(*column);
                let mut any = BooleanArray::from(vec![false; batch.num_rows()]);
                for v in values {
                    any = or_kleene(&any, &cmp::eq(array, v.as_ref())?)?;
                }
                if *negated {
                    not(&any)?
                } else {
                    any
                }
            }
            Predicate::Like { column, pattern, negated } => {
                let array = batch.column(*column);
                if *negated {
                    arrow::compute::kernels::comparison::nlike(array, pattern)?
                } else {
                    arrow::compute::kernels::comparison::like(array, pattern)?
                }
            }
            Predicate::IsNull { column, negated } => {
                let array = batch.column(*column);
                if *negated {
                    is_not_null(array)?
                } else {
                    is_null(array)?
                }
            }
            Predicate::And(a, b) => and_kleene(&a.evaluate(batch)?, &b.evaluate(batch)?)?,
            Predicate::Or(a, b) => or_kleene(&a.evaluate(batch)?, &b.evaluate(batch)?)?,
            Predicate::Not(e) => not(&e.evaluate(batch)?)?,
        })
    }
}

fn compare(array: &dyn Array, op: CmpOp, value: &dyn Datum) -> Result<BooleanArray, arrow::error::ArrowError> {
    match op {
        CmpOp::Eq => cmp::eq(&array, value),
        CmpOp::NotEq => cmp::neq(&array, value),
        CmpOp::Lt => cmp::lt(&array, value),
        CmpOp::LtEq => cmp::lt_eq(&array, value),
        CmpOp::Gt => cmp::gt(&array, value),
        CmpOp::GtEq => cmp::gt_eq(&array, value),
    }
}

/// A filter literal as a one-value array of `data_type`, as comparisons on a column of that
/// type take it.
pub fn literal_array(
    data_type: &DataType,
    literal: &Literal,
    column: &policy::filter::Column,
) -> Result<arrow::array::ArrayRef, Error> {
    Ok(arrow::array::make_array(literal_scalar(data_type, literal, column)?.get().0.to_data()))
}

/// The literal as a scalar of the column's type; `column` names the column in errors.
pub fn literal_scalar(
    data_type: &DataType,
    literal: &Literal,
    column: &policy::filter::Column,
) -> Result<Arc<dyn Datum + Send + Sync>, Error> {
    let bad = |expected: &str| {
        Error::from(FilterError {
            position: column.position,
            message: format!("column `{}` takes {expected}, not {literal}", column.name),
        })
    };
    Ok(match (data_type, literal) {
        (DataType::Utf8, Literal::String(s)) => Arc::new(StringArray::new_scalar(s)),
        (DataType::Int64, Literal::Int(i)) => Arc::new(Int64Array::new_scalar(*i)),
        (DataType::Float64, Literal::Int(i)) => Arc::new(Float64Array::new_scalar(*i as f64)),
        (DataType::Float64, Literal::Float(x)) => Arc::new(Float64Array::new_scalar(*x)),
        (DataType::Boolean, Literal::Bool(b)) => Arc::new(BooleanArray::new_scalar(*b)),
        (DataType::Date32, Literal::String(s)) => {
            let date =
                chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| bad("a date such as '2025-01-31'"))?;
            let days = (date - chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date")).num_days();
            Arc::new(Date32Array::new_scalar(days as i32))
        }
        (DataType::Timestamp(_, tz), Literal::String(s)) => {
            let t = chrono::DateTime::parse_from_rfc3339(s)
                .map_err(|_| bad("an RFC 3339 time such as '2025-01-31T08:00:00Z'"))?;
            let array = TimestampMillisecondArray::from(vec![t.timestamp_millis()]).with_timezone_opt(tz.clone());
            Arc::new(Scalar::new(array))
        }
        (DataType::Utf8, _) => return Err(bad("a quoted string")),
        (DataType::Int64, _) => return Err(bad("an integer")),
        (DataType::Float64, _) => return Err(bad("a number")),
        (DataType::Boolean, _) => return Err(bad("true or false")),
        _ => return Err(bad("a quoted value")),
    })
}
