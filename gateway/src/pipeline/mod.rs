//! The scoped stream pipeline: source batches in, the caller's rows and columns out.
//!
//! ```text
//! source ──► filter (grant's row filter AND caller's filter) ──► order ──► offset/limit ──► project
//! ```
//! A [`Plan`] is made once per request from the dataset, the [`policy::Grant`] and the caller's
//! [`Query`]; it knows which columns to read (projection pushdown to the source), which to
//! return, and the compiled predicate. [`execute`] then applies it batch by batch: without
//! `order` nothing is held beyond the batch in hand; with `order` the filtered result is
//! sorted in memory, bounded by `limits.max_sort_rows`.

mod predicate;
mod query;

use std::sync::Arc;

use arrow::compute::{
    concat_batches, filter_record_batch, lexsort_to_indices, take_record_batch, SortColumn, SortOptions,
};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use futures_util::StreamExt;
use policy::Grant;

pub use predicate::Predicate;
pub use query::{OrderKey, Query};

use crate::config::DatasetConfig;
use crate::error::{Error, Kind};
use crate::source::{arrow_schema, BatchStream};

/// How one request reads a dataset.
pub struct Plan {
    /// Indices (into the declared fields) the source reads: output columns plus those the
    /// filter and order need.
    pub read: Vec<usize>,
    /// Schema of the batches the source delivers.
    pub read_schema: SchemaRef,
    /// Positions in the read schema of the output columns, in output order.
    output: Vec<usize>,
    /// Schema of the rows sent to the caller.
    pub output_schema: SchemaRef,
    predicate: Option<Predicate>,
    /// Sort keys as positions in the read schema.
    order: Vec<(usize, bool)>,
    offset: usize,
    limit: Option<usize>,
    max_sort_rows: usize,
}

impl Plan {
    /// Checks the caller's query against the dataset and the grant and plans it.
    pub fn new(dataset: &DatasetConfig, grant: &Grant, query: &Query, max_sort_rows: usize) -> Result<Plan, Error> {
        let field_index = |name: &str| dataset.fields.iter().position(|f| f.name == name);
        let unknown = |name: &str| {
            Error::bad_request(
                "unknown_column",
                format!("dataset `{}` has no column `{name}`", dataset.id),
            )
        };

        let output_names: Vec<String> = match &query.columns {
            Some(cols) => cols.clone(),
            None => dataset
                .fields
                .iter()
                .map(|f| f.name.clone())
                .filter(|n| grant.scope.allows_column(n))
                .collect(),
        };
        let mut read: Vec<usize> = Vec::new();
        for name in &output_names {
            let i = field_index(name).ok_or_else(|| unknown(name))?;
            if !grant.scope.allows_column(name) {
                return Err(Error::new(
                    Kind::Forbidden,
                    "column_outside_scope",
                    format!("column `{name}` is outside your agreement's scope"),
                ));
            }
            if read.contains(&i) {
                return Err(Error::bad_request(
                    "duplicate_column",
                    format!("column `{name}` is asked for twice"),
                ));
            }
            read.push(i);
        }
        let output: Vec<usize> = (0..read.len()).collect();

        let filter = match (&grant.scope.row_filter, &query.filter) {
            (Some(a), Some(b)) => Some(a.clone().and(b.clone())),
            (a, b) => a.clone().or_else(|| b.clone()),
        };
        if let Some(f) = &query.filter {
            f.check(&dataset.fields)?;
        }
        let mut order_columns = Vec::new();
        for key in &query.order {
            field_index(&key.column).ok_or_else(|| unknown(&key.column))?;
            order_columns.push(key.column.as_str());
        }
        let extra: Vec<&str> = filter.iter().flat_map(|f| f.columns()).chain(order_columns).collect();
        for name in extra {
            let i = field_index(name).ok_or_else(|| unknown(name))?;
            if !read.contains(&i) {
                read.push(i);
            }
        }
        let declared = arrow_schema(&dataset.fields);
        let read_schema = Arc::new(declared.project(&read)?);
        let output_schema = Arc::new(read_schema.project(&output)?);
        let predicate = filter
            .as_ref()
            .map(|f| Predicate::compile(f, &read_schema))
            .transpose()?;
        let order = query
            .order
            .iter()
            .map(|k| {
                (
                    read_schema.index_of(&k.column).expect("order columns are read"),
                    k.descending,
                )
            })
            .collect();
        Ok(Plan {
            read,
            read_schema,
            output,
            output_schema,
            predicate,
            order,
            offset: query.offset,
            limit: query.limit,
            max_sort_rows,
        })
    }
}

/// Applies `plan` to the source's batches.
pub fn execute(plan: Plan, source: BatchStream) -> BatchStream {
    let plan = Arc::new(plan);
    let filtered = {
        let plan = plan.clone();
        source.map(move |batch| {
            let batch = batch?;
            match &plan.predicate {
                Some(p) => Ok(filter_record_batch(&batch, &p.evaluate(&batch)?)?),
                None => Ok(batch),
            }
        })
    };
    if plan.order.is_empty() {
        return window(plan, Box::pin(filtered));
    }
    let sorted = futures_util::stream::once(sort(plan.clone(), Box::pin(filtered))).flat_map(|result| {
        let items: Vec<Result<RecordBatch, Error>> = match result {
            Ok(batches) => batches.into_iter().map(Ok).collect(),
            Err(e) => vec![Err(e)],
        };
        futures_util::stream::iter(items)
    });
    window(plan, Box::pin(sorted))
}

/// Collects and sorts the whole filtered result, refusing past `max_sort_rows`.
async fn sort(plan: Arc<Plan>, mut filtered: BatchStream) -> Result<Vec<RecordBatch>, Error> {
    let mut batches = Vec::new();
    let mut rows = 0;
    while let Some(batch) = filtered.next().await {
        let batch = batch?;
        rows += batch.num_rows();
        if rows > plan.max_sort_rows {
            return Err(Error::bad_request(
                "result_too_large_to_order",
                format!(
                    "ordering is limited to {} rows; narrow the filter or drop `order`",
                    plan.max_sort_rows
                ),
            ));
        }
        batches.push(batch);
    }
    let all = concat_batches(&plan.read_schema, &batches)?;
    drop(batches);
    let columns: Vec<SortColumn> = plan
        .order
        .iter()
        .map(|&(i, descending)| SortColumn {
            values: all.column(i).clone(),
            options: Some(SortOptions {
                descending,
                nulls_first: descending,
            }),
        })
        .collect();
    // Only offset + limit rows can ever be sent; sort just those when a limit is given.
    let wanted = plan.limit.map(|l| l + plan.offset);
    let indices = lexsort_to_indices(&columns, wanted)?;
    let sorted = take_record_batch(&all, &indices)?;
    let chunk = 8192;
    Ok((0..sorted.num_rows())
        .step_by(chunk)
        .map(|start| sorted.slice(start, chunk.min(sorted.num_rows() - start)))
        .collect())
}

/// Skips `offset` rows, stops after `limit`, and projects to the output columns. Stopping
/// drops the source, which ends its reader.
fn window(plan: Arc<Plan>, batches: BatchStream) -> BatchStream {
    let state = (batches, plan.offset, plan.limit, plan);
    Box::pin(futures_util::stream::unfold(
        state,
        |(mut batches, mut skip, mut left, plan)| async move {
            loop {
                if left == Some(0) {
                    return None;
                }
                let batch = match batches.next().await? {
                    Ok(b) => b,
                    Err(e) => return Some((Err(e), (batches, skip, Some(0), plan))),
                };
                let mut batch = batch;
                if skip > 0 {
                    let n = skip.min(batch.num_rows());
                    skip -= n;
                    batch = batch.slice(n, batch.num_rows() - n);
                }
                if let Some(l) = left.as_mut() {
                    let n = (*l).min(batch.num_rows());
                    batch = batch.slice(0, n);
                    *l -= n;
                }
                if batch.num_rows() == 0 {
                    continue;
                }
                let projected = batch.project(&plan.output).map_err(Error::from);
                return Some((projected, (batches, skip, left, plan)));
            }
        },
    ))
}
