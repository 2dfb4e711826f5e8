//! The scoped stream pipeline: source batches in, the caller's rows and columns out.
//!
//! ```text
//! source ──► grant's row filter (raw values) ──► masks ──► caller's filter (masked values)
//!        ──► order ──► offset/limit ──► project
//! ```
//! A [`Plan`] is made once per request from the dataset, the [`policy::Grant`] and the caller's
//! [`Query`]; it knows which columns to read (projection pushdown to the source), which to
//! return, and the compiled predicates. [`execute`] then applies it batch by batch: without
//! `order` nothing is held beyond the batch in hand; with `order` the filtered result is
//! sorted in memory, bounded by `limits.max_sort_rows`.
//!
//! Masked columns: the agreement's own row filter sees the raw values (it is the owner's
//! rule), but everything the caller controls sees only masked values. A caller's filter or
//! order on a masked column is evaluated on the masked values, so `legal_rep_mobile like
//! '1381%'` matches nothing once the mobile is masked to `138****5678`, and ordering by a hash
//! orders by the hash: neither can reveal what the mask hides.
//!
//! What the source may leave unread is the plan's [`Pushdown`]: the agreement's row filter and
//! the parts (`and` terms) of the caller's filter that read no masked column, which hold on raw
//! values exactly as they do here, and `offset + limit` when nothing filters or orders. A term
//! on a masked column is never handed down: it holds on masked values, and judging raw data by
//! it could drop rows the masked values let through.

mod mask;
mod predicate;
mod query;

use std::sync::Arc;

use arrow::compute::{
    concat_batches, filter_record_batch, lexsort_to_indices, take_record_batch, SortColumn, SortOptions,
};
use arrow::datatypes::{Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use futures_util::StreamExt;
use policy::{FilterError, Grant, Mask};

pub use predicate::{literal_array, literal_scalar, Predicate};
pub use query::{OrderKey, Query};

use crate::config::DatasetConfig;
use crate::error::{Error, Kind};
use crate::source::{arrow_schema, arrow_type, BatchStream, Pushdown};

/// How one request reads a dataset.
pub struct Plan {
    /// Indices (into the declared fields) the source reads: output columns plus those the
    /// filters and order need.
    pub read: Vec<usize>,
    /// Schema of the batches once masked.
    masked_schema: SchemaRef,
    /// Positions in the read schema of the output columns, in output order.
    output: Vec<usize>,
    /// Schema of the rows sent to the caller.
    pub output_schema: SchemaRef,
    /// The grant's row filter, on raw values.
    scope_predicate: Option<Predicate>,
    /// Masks by position in the read schema.
    masks: Vec<(usize, Mask)>,
    hash_key: Arc<[u8]>,
    /// The caller's filter, on masked values.
    predicate: Option<Predicate>,
    /// Sort keys as positions in the read schema.
    order: Vec<(usize, bool)>,
    offset: usize,
    limit: Option<usize>,
    max_sort_rows: usize,
    pushdown: Pushdown,
}

impl Plan {
    /// Checks the caller's query against the dataset and the grant and plans it.
    pub fn new(
        dataset: &DatasetConfig,
        grant: &Grant,
        query: &Query,
        max_sort_rows: usize,
        hash_key: Arc<[u8]>,
    ) -> Result<Plan, Error> {
        let scope = &grant.scope;
        let field_index = |name: &str| dataset.fields.iter().position(|f| f.name == name);
        // A column the caller names must exist (400) and be within the grant (403).
        let visible = |name: &str| -> Result<usize, Error> {
            let i = field_index(name).ok_or_else(|| {
                Error::bad_request("unknown_column", format!("dataset `{}` has no column `{name}`", dataset.id))
            })?;
            if !scope.allows_column(name) {
                return Err(Error::new(
                    Kind::Forbidden,
                    "column_outside_scope",
                    format!("column `{name}` is outside your agreement's scope"),
                ));
            }
            Ok(i)
        };

        let output_names: Vec<String> = match &query.columns {
            Some(cols) => cols.clone(),
            None => dataset.fields.iter().map(|f| f.name.clone()).filter(|n| scope.allows_column(n)).collect(),
        };
        let mut read: Vec<usize> = Vec::new();
        for name in &output_names {
            let i = visible(name)?;
            if read.contains(&i) {
                return Err(Error::bad_request("duplicate_column", format!("column `{name}` is asked for twice")));
            }
            read.push(i);
        }
        let output: Vec<usize> = (0..read.len()).collect();

        // The caller's filter and order: visible columns only, checked against masked types.
        if let Some(filter) = &query.filter {
            let visible_fields = scope.visible_fields(&dataset.to_dataset());
            for column in filter.columns() {
                if field_index(column).is_none() {
                    let position = first_position(filter, column).unwrap_or(1);
                    return Err(FilterError { position, message: format!("unknown column `{column}`") }.into());
                }
                visible(column)?;
            }
            filter.check(&visible_fields)?;
        }
        let mut extra: Vec<usize> = Vec::new();
        for column in query.filter.iter().flat_map(|f| f.columns()) {
            extra.push(visible(column)?);
        }
        for key in &query.order {
            extra.push(visible(&key.column)?);
        }
        // The grant's filter may read columns the caller never sees.
        for column in scope.row_filter.iter().flat_map(|f| f.columns()) {
            extra.push(
                field_index(column)
                    .ok_or_else(|| Error::internal(format!("the grant's filter names unknown column `{column}`")))?,
            );
        }
        for i in extra {
            if !read.contains(&i) {
                read.push(i);
            }
        }

        let declared = arrow_schema(&dataset.fields);
        let read_schema = Arc::new(declared.project(&read)?);
        let masks: Vec<(usize, Mask)> = read
            .iter()
            .enumerate()
            .filter_map(|(pos, &i)| scope.masks.get(&dataset.fields[i].name).map(|m| (pos, *m)))
            .collect();
        let masked_fields: Vec<arrow::datatypes::Field> = read
            .iter()
            .map(|&i| {
                let field = &dataset.fields[i];
                arrow::datatypes::Field::new(
                    &field.name,
                    arrow_type(scope.shown_type(&field.name, field.field_type)),
                    true,
                )
            })
            .collect();
        let masked_schema = Arc::new(Schema::new(masked_fields));
        let output_schema = Arc::new(masked_schema.project(&output)?);
        let scope_predicate = scope.row_filter.as_ref().map(|f| Predicate::compile(f, &read_schema)).transpose()?;
        let predicate = query.filter.as_ref().map(|f| Predicate::compile(f, &masked_schema)).transpose()?;
        let order = query
            .order
            .iter()
            .map(|k| (masked_schema.index_of(&k.column).expect("order columns are read"), k.descending))
            .collect();
        let mut filters: Vec<policy::Expr> = scope.row_filter.iter().cloned().collect();
        if let Some(filter) = &query.filter {
            filters.extend(
                conjuncts(filter)
                    .into_iter()
                    .filter(|term| term.columns().iter().all(|c| !scope.masks.contains_key(*c)))
                    .cloned(),
            );
        }
        let unfiltered = scope.row_filter.is_none() && query.filter.is_none();
        let rows = query.limit.filter(|_| unfiltered && query.order.is_empty()).map(|l| l.saturating_add(query.offset));
        Ok(Plan {
            read,
            masked_schema,
            output,
            output_schema,
            scope_predicate,
            masks,
            hash_key,
            predicate,
            order,
            offset: query.offset,
            limit: query.limit,
            max_sort_rows,
            pushdown: Pushdown { filters, rows },
        })
    }

    /// What the source may leave unread for this plan.
    pub fn pushdown(&self) -> Pushdown {
        self.pushdown.clone()
    }

    /// The grant's filter, the masks, and the caller's filter, on one batch.
    fn scope_and_filter(&self, batch: RecordBatch) -> Result<RecordBatch, Error> {
        let batch = match &self.scope_predicate {
            Some(p) => filter_record_batch(&batch, &p.evaluate(&batch)?)?,
            None => batch,
        };
        let batch = if self.masks.is_empty() {
            batch
        } else {
            let mut columns = batch.columns().to_vec();
            for &(pos, mask) in &self.masks {
                columns[pos] = mask::apply(mask, &columns[pos], &self.hash_key)?;
            }
            RecordBatch::try_new(self.masked_schema.clone(), columns)?
        };
        Ok(match &self.predicate {
            Some(p) => filter_record_batch(&batch, &p.evaluate(&batch)?)?,
            None => batch,
        })
    }
}

/// The terms of `filter`'s top-level `and`s: each holds for every row the whole filter keeps.
fn conjuncts(filter: &policy::Expr) -> Vec<&policy::Expr> {
    match filter {
        policy::Expr::And(a, b) => {
            let mut terms = conjuncts(a);
            terms.extend(conjuncts(b));
            terms
        }
        other => vec![other],
    }
}

/// Where `column` first appears in `filter`, for error positions.
fn first_position(filter: &policy::Expr, column: &str) -> Option<usize> {
    use policy::Expr;
    match filter {
        Expr::Compare { column: c, .. }
        | Expr::In { column: c, .. }
        | Expr::Like { column: c, .. }
        | Expr::IsNull { column: c, .. } => (c.name == column).then_some(c.position),
        Expr::And(a, b) | Expr::Or(a, b) => first_position(a, column).or_else(|| first_position(b, column)),
        Expr::Not(e) => first_position(e, column),
    }
}

/// Applies `plan` to the source's batches.
pub fn execute(plan: Plan, source: BatchStream) -> BatchStream {
    let plan = Arc::new(plan);
    let filtered = {
        let plan = plan.clone();
        source.map(move |batch| plan.scope_and_filter(batch?))
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
                format!("ordering is limited to {} rows; narrow the filter or drop `order`", plan.max_sort_rows),
            ));
        }
        batches.push(batch);
    }
    let all = concat_batches(&plan.masked_schema, &batches)?;
    drop(batches);
    let columns: Vec<SortColumn> = plan
        .order
        .iter()
        .map(|&(i, descending)| SortColumn {
            values: all.column(i).clone(),
            options: Some(SortOptions { descending, nulls_first: descending }),
        })
        .collect();
    // Only offset + limit rows can ever be sent; sort just those when a limit is given.
    let wanted = plan.limit.map(|l| l.saturating_add(plan.offset));
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
    Box::pin(futures_util::stream::unfold(state, |(mut batches, mut skip, mut left, plan)| async move {
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
    }))
}
