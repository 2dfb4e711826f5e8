//! SQL over the datasets a caller may read, run by Apache DataFusion: what Flight SQL's
//! statements execute.
//!
//! A statement sees one catalog (`kaifang`) with one schema (`public`) whose tables are the
//! datasets its caller may read now, each with the schema it would receive (columns outside
//! the scope absent, masked columns as sent). A dataset the caller may not read is not a table,
//! so a non-open dataset and an unknown name give the same error.
//!
//! The scan of each table is a data call of its own through [`lifecycle::serve`], whose front
//! end is [`Scan`]: decided, limited by the dataset's rate and quotas and held to the answer
//! memory budget. Every scan the plan holds is opened before the statement runs, so a refusal
//! of any (a rate, a quota, a column outside the scope) is the statement's, before anything is
//! recorded as served or sent. The statement is then one call in the audit log: one intent
//! naming every conditional dataset its scans read, each with its agreement, columns, filter and
//! masks, durable before the engine runs; one completion with the rows and bytes of the answer
//! sent and the rows each read handed the engine (a refused scan leaves its refusal record,
//! naming the statement). The
//! agreement's columns, row filter and masks are applied before the engine sees a row, and
//! DataFusion runs the caller's SQL on top, so no SQL can reach what is outside a scope. The
//! caller's filters on a table are handed to its scan as a filter of the HTTP API's language
//! where they can be written in it (so they prune and use indexes as on HTTP, and a filter on a
//! masked column is evaluated on masked values), and evaluated again by the engine.
//!
//! Statements are read-only: DDL, DML and session statements are refused. The engine's working
//! memory (sorts, joins, aggregates) is one pool for all statements
//! (`[server] sql_memory_bytes`): a statement past it fails with `sql_memory_exhausted`, and
//! the process does not.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use arrow::array::RecordBatchOptions;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use chrono::Utc;
use datafusion::catalog::{
    CatalogProvider, CatalogProviderList, MemoryCatalogProvider, MemoryCatalogProviderList, SchemaProvider, Session,
    TableProvider,
};
use datafusion::common::{DataFusionError, ParamValues, SchemaError};
use datafusion::datasource::TableType;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{DataFrame, SQLOptions, SessionConfig, SessionContext};
use datafusion::scalar::ScalarValue;
use futures_util::{stream, StreamExt, TryStreamExt};
use policy::filter::{CmpOp, Column, Literal};
use policy::{decide, Caller, Operation};

use crate::audit::{self, CallGuard};
use crate::call::lifecycle::{self, Body, FrontEnd, Reply};
use crate::call::{self, start, Call};
use crate::error::{Error, Kind};
use crate::pipeline::{Plan, Query};
use crate::source::{self, BatchStream};
use crate::state::{Live, State};

/// The one catalog the tables are in.
pub const CATALOG: &str = "kaifang";
/// The one schema the tables are in.
pub const SCHEMA: &str = "public";
/// The audit log's and the metrics' name for a table scan of a SQL statement.
pub const OPERATION: &str = "sql";
/// Longest statement taken, in bytes.
pub const MAX_STATEMENT_BYTES: usize = 64 * 1024;

/// The SQL engine: DataFusion with one bounded memory pool for every statement.
pub struct Engine {
    /// A session with the engine's configuration, functions and memory pool, and no tables:
    /// each statement's session is a copy of it with the caller's tables (building one from
    /// nothing registers every function again, which would cost each statement a millisecond).
    template: SessionState,
    /// The result schemas of statements planned lately ([`Engine::schema`]).
    schemas: moka::sync::Cache<SchemaKey, SchemaRef>,
}

/// A statement as its schema is remembered: the caller's key id (empty for anonymous callers),
/// the statement and its bound parameters.
pub type SchemaKey = (String, String, Option<String>);

/// How long a statement's result schema is remembered for the `FlightInfo` of the same
/// statement by the same key.
pub const SCHEMA_TTL: std::time::Duration = std::time::Duration::from_secs(5);

impl Engine {
    /// An engine whose statements together hold at most `memory_bytes` of working memory.
    /// Nothing spills to disk: a statement past the pool fails instead of filling a disk.
    pub fn new(memory_bytes: u64, batch_rows: usize) -> Engine {
        let no_spilling = DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled);
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(usize::try_from(memory_bytes).unwrap_or(usize::MAX), 1.0)
            .with_disk_manager_builder(no_spilling)
            .build_arc()
            .expect("a runtime with a memory pool and no disk is always built");
        let config = SessionConfig::new()
            .with_default_catalog_and_schema(CATALOG, SCHEMA)
            .with_information_schema(true)
            .with_batch_size(batch_rows.max(1));
        let template =
            SessionStateBuilder::new().with_config(config).with_runtime_env(runtime).with_default_features().build();
        let schemas = moka::sync::Cache::builder()
            .weigher(|(key, sql, params): &SchemaKey, _: &SchemaRef| {
                u32::try_from(key.len() + sql.len() + params.as_ref().map_or(0, String::len) + 256).unwrap_or(u32::MAX)
            })
            .max_capacity(16 << 20)
            .time_to_live(SCHEMA_TTL)
            .build();
        Engine { template, schemas }
    }

    /// The result schema of the statement `key` names, planned by `plan` unless the same key
    /// had it planned within [`SCHEMA_TTL`]: a client that asks for a statement's `FlightInfo`
    /// before each execution does not have it planned twice in a row. This is only the schema
    /// a `FlightInfo` states: every execution is planned and decided anew, and answers with the
    /// schema of its own plan.
    pub async fn schema(
        &self,
        key: SchemaKey,
        plan: impl std::future::Future<Output = Result<Planned, Error>>,
    ) -> Result<SchemaRef, Error> {
        if let Some(schema) = self.schemas.get(&key) {
            return Ok(schema);
        }
        let schema = plan.await?.schema();
        self.schemas.insert(key, schema.clone());
        Ok(schema)
    }

    /// A session in which `caller`'s statements see the datasets it may read.
    fn session(&self, caller: Arc<Caller>, scans: Arc<Scans>) -> SessionContext {
        let catalog = MemoryCatalogProvider::new();
        catalog.register_schema(SCHEMA, Arc::new(Datasets { caller, scans })).expect("a memory catalog takes schemas");
        let catalogs = MemoryCatalogProviderList::new();
        catalogs.register_catalog(CATALOG.to_owned(), Arc::new(catalog));
        let mut state = self.template.clone();
        state.register_catalog_list(Arc::new(catalogs));
        SessionContext::new_with_state(state)
    }
}

/// Who runs a statement, from where, under which request id: what each of its scans presents
/// as a data call.
pub struct Scans {
    state: Arc<State>,
    /// The request's headers (its key, its User-Agent), presented again by each scan.
    headers: http::HeaderMap,
    client: IpAddr,
    request_id: String,
    /// The statement, and the reads its scans add for its audit records.
    statement: Arc<audit::Statement>,
    /// The scans the statement's plan holds, not yet opened.
    planned: Mutex<Vec<Arc<Slot>>>,
}

impl Scans {
    pub fn new(state: Arc<State>, headers: http::HeaderMap, client: IpAddr, request_id: String, sql: &str) -> Scans {
        let statement = Arc::new(audit::Statement::new(sql));
        Scans { state, headers, client, request_id, statement, planned: Mutex::default() }
    }

    /// Opens a scan of `dataset` as a data call of the statement.
    async fn open(&self, dataset: &str, query: Query) -> Result<BatchStream, Error> {
        let scan = Scan { headers: self.headers.clone(), query, statement: self.statement.clone() };
        let served = lifecycle::serve(&self.state, dataset, self.client, &self.request_id, scan).await;
        served.map(|((), batches)| batches)
    }
}

/// A scan in a statement's plan: opened before the statement runs, taken by the engine when it
/// runs the scan.
struct Slot {
    dataset: String,
    query: Query,
    opened: Mutex<Option<BatchStream>>,
}

/// A statement planned for its caller: its result's schema is known, nothing is read yet.
pub struct Planned {
    frame: DataFrame,
    sql: String,
    scans: Arc<Scans>,
    caller: Arc<Caller>,
}

impl Planned {
    /// The schema of the rows the statement returns.
    pub fn schema(&self) -> SchemaRef {
        Arc::new(self.frame.schema().as_arrow().clone())
    }

    /// The schema of the statement's parameters (`$1`, `$2`, …), in order; a parameter whose
    /// type the statement does not fix is typed as text.
    pub fn parameter_schema(&self) -> Result<SchemaRef, Error> {
        let types = self.frame.logical_plan().get_parameter_types().map_err(|e| error(e, &self.sql))?;
        let mut names: Vec<_> = types.keys().cloned().collect();
        names.sort_by_key(|name| (name.len(), name.clone()));
        let fields = names.into_iter().map(|name| {
            let data_type = types[&name].clone().unwrap_or(arrow::datatypes::DataType::Utf8);
            arrow::datatypes::Field::new(name, data_type, true)
        });
        Ok(Arc::new(Schema::new(fields.collect::<Vec<_>>())))
    }

    /// Runs the statement. Every scan of its plan is opened first, so a refusal of one of them
    /// (a rate limit, a quota) is the error of this call, before any row; then, if they read
    /// conditional data, its intent is recorded, and the guard that records its completion is
    /// handed back with the answer: the front end wraps its encoded answer in it
    /// ([`audit::audited`]), so the completion counts the bytes sent. The guard's rows are the
    /// answer's.
    pub async fn run(self) -> Result<(SchemaRef, BatchStream, Option<CallGuard>), Error> {
        let schema = self.schema();
        let Planned { frame, sql, scans, caller } = self;
        let task = Arc::new(frame.task_ctx());
        let plan = frame.create_physical_plan().await.map_err(|e| error(e, &sql))?;
        let slots = std::mem::take(&mut *scans.planned.lock().unwrap_or_else(PoisonError::into_inner));
        for slot in slots {
            let opened = scans.open(&slot.dataset, slot.query.clone()).await?;
            *slot.opened.lock().unwrap_or_else(PoisonError::into_inner) = Some(opened);
        }
        let rows = Arc::new(AtomicU64::new(0));
        let guard = match scans.statement.is_recorded() {
            true => {
                let (key_id, principal) = call::key_and_principal(&caller);
                let user_agent = scans.headers.get(http::header::USER_AGENT).and_then(|v| v.to_str().ok());
                let info = audit::StatementInfo {
                    request_id: scans.request_id.clone(),
                    key_id,
                    principal,
                    client: scans.client.to_string(),
                    user_agent: user_agent.map(audit::bounded_text),
                };
                Some(scans.state.audit.statement_intent(info, scans.statement.clone(), rows.clone()).await?)
            }
            false => None,
        };
        let batches = match datafusion::physical_plan::execute_stream(plan, task) {
            Ok(batches) => batches,
            Err(e) => return Err(failed(guard, error(e, &sql)).await),
        };
        let mut batches = batches
            .map_err(move |e| error(e, &sql))
            .inspect_ok(move |batch| {
                rows.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
            })
            .fuse();
        let first = match batches.next().await.transpose() {
            Ok(first) => first,
            Err(e) => return Err(failed(guard, e).await),
        };
        Ok((schema, Box::pin(stream::iter(first.map(Ok)).chain(batches)), guard))
    }
}

/// `error`, with the completion of the statement's intent (if recorded) as failed before its
/// answer began.
async fn failed(guard: Option<CallGuard>, error: Error) -> Error {
    if let Some(guard) = guard {
        guard.failed(error.kind.status()).await;
    }
    error
}

/// Plans `sql` for `caller`, with `params` bound to its placeholders when given.
pub async fn plan(
    engine: &Engine,
    caller: Caller,
    scans: Scans,
    sql: &str,
    params: Option<Vec<ScalarValue>>,
) -> Result<Planned, Error> {
    if sql.len() > MAX_STATEMENT_BYTES {
        return Err(Error::bad_request(
            "statement_too_long",
            format!("a statement is at most {MAX_STATEMENT_BYTES} bytes, not {}", sql.len()),
        ));
    }
    let scans = Arc::new(scans);
    let caller = Arc::new(caller);
    let session = engine.session(caller.clone(), scans.clone());
    let options = SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
    let numbered = numbered_placeholders(sql);
    let frame = match session.sql_with_options(numbered.as_deref().unwrap_or(sql), options).await {
        Ok(frame) => frame,
        Err(e) => {
            let refusal = outside_scope(&scans.state.live(), &caller, &e).unwrap_or_else(|| error(e, sql));
            return Err(refused(&session, &scans, &caller, sql, refusal).await);
        }
    };
    let frame = match params {
        Some(values) => frame.with_param_values(ParamValues::from(values)).map_err(|e| error(e, sql))?,
        None => frame,
    };
    Ok(Planned { frame, sql: sql.to_owned(), scans, caller })
}

/// The schema `public`: the datasets the caller may read.
struct Datasets {
    caller: Arc<Caller>,
    scans: Arc<Scans>,
}

impl fmt::Debug for Datasets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Datasets").finish_non_exhaustive()
    }
}

impl Datasets {
    /// The table `name` is, if it names a dataset the caller may read now.
    fn table_of(&self, name: &str) -> Option<Table> {
        let live = self.scans.state.live();
        let entry = call::lookup(&live, name).ok()?;
        let grant = decide(&self.caller, &entry.dataset, Operation::Rows, Utc::now()).ok()?;
        let whole = Query::default();
        let plan = Plan::new(&entry.config, &grant, &whole, live.limits.max_sort_rows, live.hash_key.clone()).ok()?;
        let fields = grant.scope.visible_fields(&entry.dataset);
        Some(Table { dataset: name.to_owned(), schema: plan.output_schema, fields, scans: self.scans.clone() })
    }
}

#[async_trait]
impl SchemaProvider for Datasets {
    fn table_names(&self) -> Vec<String> {
        let live = self.scans.state.live();
        call::readable(&live, &self.caller).map(|(entry, _)| entry.dataset.id.to_string()).collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        Ok(self.table_of(name).map(|table| Arc::new(table) as Arc<dyn TableProvider>))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.table_of(name).is_some()
    }
}

/// One dataset as a table: its scan is a data call on the dataset.
struct Table {
    dataset: String,
    /// What the caller receives of the dataset.
    schema: SchemaRef,
    /// The caller's fields, typed as it receives them (masked columns as text).
    fields: Vec<policy::Field>,
    scans: Arc<Scans>,
}

impl fmt::Debug for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Table").field("dataset", &self.dataset).finish_non_exhaustive()
    }
}

impl Table {
    /// `expr` in the HTTP API's filter language, if it can be written in it and checks against
    /// the caller's fields.
    fn filter_of(&self, expr: &Expr) -> Option<policy::Expr> {
        let filter = to_filter(expr)?;
        filter.check(&self.fields).ok()?;
        Some(filter)
    }
}

impl Table {
    /// Whether the scan applies `filter` exactly as SQL would, so the engine need not again:
    /// `and`s of `=`, `<`, `<=`, `>`, `>=`, `in` and `is [not] null` on a column of the
    /// literal's own type (integers, text, booleans), where SQL's null answers and the filter
    /// language's agree. Negations and `!=` (null answers), `like` and floating point
    /// comparisons are left to the engine as well.
    fn exact(&self, filter: &policy::Expr) -> bool {
        use policy::Expr as F;
        use policy::FieldType;
        let type_of = |column: &Column| self.fields.iter().find(|f| f.name == column.name).map(|f| f.field_type);
        let same_type = |column: &Column, value: &Literal| {
            matches!(
                (type_of(column), value),
                (Some(FieldType::Int64), Literal::Int(_))
                    | (Some(FieldType::String), Literal::String(_))
                    | (Some(FieldType::Boolean), Literal::Bool(_))
            )
        };
        match filter {
            F::Compare { column, op, value } => *op != CmpOp::NotEq && same_type(column, value),
            F::In { column, values, negated } => !negated && values.iter().all(|v| same_type(column, v)),
            F::IsNull { .. } => true,
            F::And(a, b) => self.exact(a) && self.exact(b),
            _ => false,
        }
    }
}

#[async_trait]
impl TableProvider for Table {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    /// Filters the scan can apply are applied there (to prune and use indexes); the engine
    /// evaluates them again unless the scan's answer is exactly SQL's ([`Table::exact`]).
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>, DataFusionError> {
        Ok(filters
            .iter()
            .map(|f| match self.filter_of(f) {
                Some(filter) if self.exact(&filter) => TableProviderFilterPushDown::Exact,
                Some(_) => TableProviderFilterPushDown::Inexact,
                None => TableProviderFilterPushDown::Unsupported,
            })
            .collect())
    }

    async fn scan(
        &self,
        _session: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>, DataFusionError> {
        let schema = match projection {
            Some(columns) => Arc::new(self.schema.project(columns)?),
            None => self.schema.clone(),
        };
        let filter =
            filters.iter().filter_map(|f| self.filter_of(f)).reduce(|a, b| policy::Expr::And(Box::new(a), Box::new(b)));
        // A count reads no column, but the scan reads one to count its rows by.
        let mut columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        if columns.is_empty() {
            columns.extend(self.schema.fields().first().map(|f| f.name().clone()));
        }
        // A limit counts rows that passed every filter: kept only when the scan applies them all
        // exactly.
        let exact = filters.iter().all(|f| self.filter_of(f).is_some_and(|filter| self.exact(&filter)));
        let limit = if exact { limit } else { None };
        let query = Query { columns: Some(columns), filter, limit, ..Query::default() };
        let slot = Arc::new(Slot { dataset: self.dataset.clone(), query, opened: Mutex::default() });
        self.scans.planned.lock().unwrap_or_else(PoisonError::into_inner).push(slot.clone());
        let partition = ScanPartition { schema: schema.clone(), slot, scans: self.scans.clone() };
        let exec = StreamingTableExec::try_new(schema, vec![Arc::new(partition)], None, [], false, limit)?;
        Ok(Arc::new(exec))
    }
}

/// The one partition of a table's scan.
struct ScanPartition {
    /// The batches' schema as the engine expects them.
    schema: SchemaRef,
    slot: Arc<Slot>,
    scans: Arc<Scans>,
}

impl fmt::Debug for ScanPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScanPartition").field("dataset", &self.slot.dataset).finish_non_exhaustive()
    }
}

impl PartitionStream for ScanPartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The scan opened before the statement ran; a scan the engine runs again (a recursive
    /// query) is opened again, as another call of the statement on the same read.
    fn execute(&self, _context: Arc<TaskContext>) -> SendableRecordBatchStream {
        let opened = self.slot.opened.lock().unwrap_or_else(PoisonError::into_inner).take();
        let (scans, slot) = (self.scans.clone(), self.slot.clone());
        let answered = async move {
            match opened {
                Some(batches) => Ok(batches),
                None => scans.open(&slot.dataset, slot.query.clone()).await,
            }
        };
        let schema = self.schema.clone();
        let batches = stream::once(answered).try_flatten().map(move |batch| {
            batch.and_then(|b| fitted(b, &schema)).map_err(|e| DataFusionError::External(Box::new(e)))
        });
        Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), batches))
    }
}

/// `batch` under the schema the engine planned with (the same columns; a scan that reads a
/// column only to count rows gives its row count alone).
fn fitted(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, Error> {
    let columns = if schema.fields().is_empty() { Vec::new() } else { batch.columns().to_vec() };
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    RecordBatch::try_new_with_options(schema.clone(), columns, &options)
        .map_err(|e| Error::internal(format!("a scan's batch does not fit its table: {e}")))
}

/// A table scan's side of the call lifecycle: the scan's query in, record batches out to the
/// engine.
struct Scan {
    headers: http::HeaderMap,
    query: Query,
    statement: Arc<audit::Statement>,
}

impl FrontEnd for Scan {
    type Piece = RecordBatch;
    type Head = ();
    /// Handed to the engine as its error, and back to the statement's front end.
    type Refusal = Error;
    const PROTOCOL: &'static str = OPERATION;

    fn size(batch: &RecordBatch) -> usize {
        source::slice_bytes(batch)
    }

    fn refuse(error: Error) -> (Error, usize) {
        (error, 0)
    }

    fn operation(&self) -> &'static str {
        OPERATION
    }

    fn statement(&self) -> Option<&audit::Statement> {
        Some(&self.statement)
    }

    fn headers(&self) -> &http::HeaderMap {
        &self.headers
    }

    fn check(&mut self) -> Result<(), Error> {
        Ok(())
    }

    async fn answer(&mut self, call: &Call<'_>) -> Result<Reply<(), RecordBatch>, Error> {
        let started = start(call, Operation::Rows, &self.query).await?;
        let call::Started { version, first, rest, budget, granted, .. } = started;
        let batches: BatchStream = Box::pin(stream::iter(first.map(Ok)).chain(rest));
        let batches = call::meter_bytes(batches, budget, source::slice_bytes, call.quota_refusals("bytes_per_day"));
        Ok(Reply { head: (), body: Body::Streamed(batches), version, status: 200, granted })
    }
}

/// `expr` in the HTTP API's filter language, if it can be written in it: comparisons of a
/// column with a literal, `in` lists, `like`, `is null`, and `and`, `or`, `not` of them.
fn to_filter(expr: &Expr) -> Option<policy::Expr> {
    use policy::Expr as F;
    let column = |e: &Expr| match e {
        Expr::Column(c) => Some(Column { name: c.name.clone(), position: 1 }),
        _ => None,
    };
    Some(match expr {
        Expr::BinaryExpr(b) => match b.op {
            Operator::And => F::And(Box::new(to_filter(&b.left)?), Box::new(to_filter(&b.right)?)),
            Operator::Or => F::Or(Box::new(to_filter(&b.left)?), Box::new(to_filter(&b.right)?)),
            op => {
                let (op, column, value) = match (column(&b.left), literal(&b.right)) {
                    (Some(c), Some(v)) => (compare(op)?, c, v),
                    _ => (compare(op.swap()?)?, column(&b.right)?, literal(&b.left)?),
                };
                F::Compare { column, op, value }
            }
        },
        Expr::Not(inner) => F::Not(Box::new(to_filter(inner)?)),
        Expr::IsNull(inner) => F::IsNull { column: column(inner)?, negated: false },
        Expr::IsNotNull(inner) => F::IsNull { column: column(inner)?, negated: true },
        Expr::InList(list) => F::In {
            column: column(&list.expr)?,
            values: list.list.iter().map(literal).collect::<Option<_>>()?,
            negated: list.negated,
        },
        Expr::Like(like) if !like.case_insensitive && like.escape_char.is_none() => match literal(&like.pattern)? {
            Literal::String(pattern) => F::Like { column: column(&like.expr)?, pattern, negated: like.negated },
            _ => return None,
        },
        _ => return None,
    })
}

fn compare(op: Operator) -> Option<CmpOp> {
    Some(match op {
        Operator::Eq => CmpOp::Eq,
        Operator::NotEq => CmpOp::NotEq,
        Operator::Lt => CmpOp::Lt,
        Operator::LtEq => CmpOp::LtEq,
        Operator::Gt => CmpOp::Gt,
        Operator::GtEq => CmpOp::GtEq,
        _ => return None,
    })
}

fn literal(expr: &Expr) -> Option<Literal> {
    let Expr::Literal(value, _) = expr else { return None };
    Some(match value {
        ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)) => {
            Literal::String(s.clone())
        }
        ScalarValue::Int8(Some(n)) => Literal::Int(i64::from(*n)),
        ScalarValue::Int16(Some(n)) => Literal::Int(i64::from(*n)),
        ScalarValue::Int32(Some(n)) => Literal::Int(i64::from(*n)),
        ScalarValue::Int64(Some(n)) => Literal::Int(*n),
        ScalarValue::UInt8(Some(n)) => Literal::Int(i64::from(*n)),
        ScalarValue::UInt16(Some(n)) => Literal::Int(i64::from(*n)),
        ScalarValue::UInt32(Some(n)) => Literal::Int(i64::from(*n)),
        ScalarValue::UInt64(Some(n)) => Literal::Int(i64::try_from(*n).ok()?),
        ScalarValue::Float64(Some(x)) if x.is_finite() => Literal::Float(*x),
        ScalarValue::Float32(Some(x)) if x.is_finite() => Literal::Float(f64::from(*x)),
        ScalarValue::Boolean(Some(b)) => Literal::Bool(*b),
        _ => return None,
    })
}

/// A DataFusion error as the gateway's: a scan's own error as it was; a syntax error with the
/// character position it points at; a table the caller may not read as a missing dataset; a
/// column outside the caller's scope as a refusal; a statement past the memory pool as
/// `sql_memory_exhausted`.
pub fn error(e: DataFusionError, sql: &str) -> Error {
    let root = e.find_root();
    match root {
        DataFusionError::External(inner) => {
            if let Some(ours) = inner.downcast_ref::<Error>() {
                return ours.clone();
            }
            Error::internal(format!("SQL statement: {inner}"))
        }
        DataFusionError::SQL(parser, _) => {
            let message = parser.to_string();
            let mut e = Error::bad_request("sql_syntax", format!("the statement is not valid SQL: {message}"));
            e.position = position(&message, sql);
            e
        }
        DataFusionError::SchemaError(schema, _) => match &**schema {
            SchemaError::FieldNotFound { field, .. } => Error::bad_request(
                "unknown_column",
                format!("no table of this statement has a column `{}`", field.name),
            ),
            other => Error::bad_request("bad_sql", other.to_string()),
        },
        DataFusionError::Plan(message) if message.starts_with("table '") && message.ends_with("' not found") => {
            Error::dataset_not_found()
        }
        DataFusionError::ResourcesExhausted(message) => Error::new(
            Kind::TooManyRequests,
            "sql_memory_exhausted",
            format!("the statement needs more working memory than the SQL engine may use now: {message}"),
        ),
        DataFusionError::NotImplemented(message) => {
            Error::bad_request("sql_not_supported", format!("this SQL is not supported: {message}"))
        }
        DataFusionError::Plan(message) if read_only(message) => Error::new(
            Kind::MethodNotAllowed,
            "read_only",
            "kaifang serves open data read-only: only queries (SELECT, WITH, VALUES, EXPLAIN) are taken",
        ),
        DataFusionError::Plan(message) | DataFusionError::Execution(message) => {
            Error::bad_request("bad_sql", message.clone())
        }
        DataFusionError::ArrowError(arrow, _) => Error::bad_request("bad_sql", arrow.to_string()),
        other => Error::internal(format!("SQL statement: {other}")),
    }
}

/// Whether a planning error is the refusal of a statement that would change something.
fn read_only(message: &str) -> bool {
    ["DDL not supported", "DML not supported", "Statement not supported"].iter().any(|m| message.contains(m))
}

/// The 1-based character position a parser message's `Line: l, Column: c` points at in `sql`.
fn position(message: &str, sql: &str) -> Option<usize> {
    let number_after = |label: &str| -> Option<usize> {
        let rest = &message[message.rfind(label)? + label.len()..];
        rest.trim_start().split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    };
    let (line, column) = (number_after("Line:")?, number_after("Column:")?);
    let before: usize = sql.split('\n').take(line.checked_sub(1)?).map(|l| l.chars().count() + 1).sum();
    Some(before + column)
}

/// Records the refusal of a statement before any scan, once for each conditional dataset it
/// names (whether or not the caller may read it), as a refused call on that dataset is recorded
/// on HTTP; hands back the refusal (a limited one past the address's refusal rate).
async fn refused(session: &SessionContext, scans: &Scans, caller: &Caller, sql: &str, refusal: Error) -> Error {
    let live = scans.state.live();
    let state = session.state();
    let dialect = state.config().options().sql_parser.dialect;
    let named = match state.sql_to_statement(sql, &dialect) {
        Ok(statement) => state.resolve_table_references(&statement).unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    let user_agent = scans.headers.get(http::header::USER_AGENT).and_then(|v| v.to_str().ok());
    let mut answer = refusal.clone();
    let mut recorded = BTreeSet::new();
    for table in named {
        let Ok(entry) = call::lookup(&live, table.table()) else { continue };
        if !policy::recorded(&entry.dataset) || !recorded.insert(entry.dataset.id.to_string()) {
            continue;
        }
        let recorder =
            call::Recorder::new(&scans.state, &scans.request_id, entry, OPERATION, OPERATION, scans.client, user_agent)
                .of_statement(Some(&scans.statement));
        answer = recorder.unserved(Some(caller), refusal.clone(), refusal.kind.status()).await;
    }
    answer
}

/// `sql` with its positional `?` placeholders (as JDBC and ADBC clients write them) numbered
/// `$1`, `$2`, … as the engine reads them; `None` when it has none (or does not tokenize: the
/// parser then says what is wrong with it).
fn numbered_placeholders(sql: &str) -> Option<String> {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    if !sql.contains('?') {
        return None;
    }
    let tokens = Tokenizer::new(&GenericDialect {}, sql).tokenize().ok()?;
    let mut n = 0;
    let mut numbered = String::with_capacity(sql.len() + 8);
    for token in tokens {
        match token {
            Token::Placeholder(p) if p == "?" => {
                n += 1;
                numbered.push_str(&format!("${n}"));
            }
            other => numbered.push_str(&other.to_string()),
        }
    }
    (n > 0).then_some(numbered)
}

/// The refusal of a column the statement names that is in one of its tables' datasets but
/// outside the caller's scope (as on HTTP, a 403, not an unknown column).
fn outside_scope(live: &Live, caller: &Caller, e: &DataFusionError) -> Option<Error> {
    let DataFusionError::SchemaError(schema, _) = e.find_root() else { return None };
    let SchemaError::FieldNotFound { field, valid_fields } = &**schema else { return None };
    let tables: BTreeSet<&str> = valid_fields.iter().filter_map(|c| c.relation.as_ref()).map(|t| t.table()).collect();
    let named = field.relation.as_ref().map(|t| t.table());
    let column = field.name.as_str();
    let hidden = call::readable(live, caller).any(|(entry, grant)| {
        let id = entry.dataset.id.as_str();
        named.map_or(tables.contains(id), |t| t == id)
            && entry.dataset.fields.iter().any(|f| f.name == column)
            && !grant.scope.allows_column(column)
    });
    hidden.then(|| {
        Error::new(
            Kind::Forbidden,
            "column_outside_scope",
            format!("column `{column}` is outside your agreement's scope"),
        )
    })
}
