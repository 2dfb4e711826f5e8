//! One call on one dataset, whatever the front end: the grant, admission by the limiter, the
//! planned and metered stream of batches, and the call's audit records.
//!
//! The HTTP data API and the Arrow Flight service both go through here, so the rules exist
//! once: [`lifecycle::serve`] drives the order of every data call (lookup, admission, caller,
//! grant, audit intent, stream, completion, metrics); [`policy::decide`] grants,
//! [`admit_under`] applies the rate limit and daily quotas, [`start`] plans the query within the
//! grant and opens the source, and a call on conditional data leaves its records through
//! [`Recorder`]. What stays in each front end is the wire ([`lifecycle::FrontEnd`]): the
//! request in, encodings and statuses out.

pub mod lifecycle;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use chrono::Utc;
use futures_util::StreamExt;
use policy::{decide, Caller, DatasetId, Grant, Limit, Operation};
use prometheus::{Histogram, IntCounter, IntGauge};

use crate::audit::{self, CallGuard, CallInfo, Outcome, Record};
use crate::cache::{AnswerKey, Decoded, KeptAnswer};
use crate::config::Limits;
use crate::error::{Error, Kind};
use crate::metrics::{timed, Metrics, Timing};
use crate::pipeline::{execute, Plan, Query};
use crate::ratelimit::{Admission, Budget, Denied};
use crate::shared_limits::OnFailure;
use crate::source::{self, BatchStream, Pieces};
use crate::state::{CatalogEntry, Cuts, Live, State};

/// The client's `X-Request-Id` when it is well-formed (1 to 128 characters of letters, digits,
/// `-`, `_`, `.`), otherwise a new UUID.
pub fn request_id(headers: &hyper::HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        })
        // A version 4 id from the thread's generator: no system call per request.
        .map_or_else(|| uuid::Builder::from_random_bytes(rand::random()).into_uuid().to_string(), str::to_owned)
}

/// The datasets `caller` may read now, in catalog order, each with its grant, decided once: what
/// the Flight listing and the Flight SQL tables show.
pub fn readable<'a>(live: &'a Live, caller: &'a Caller) -> impl Iterator<Item = (&'a CatalogEntry, Grant)> + 'a {
    let now = chrono::Utc::now();
    live.catalog
        .listed()
        .filter_map(move |entry| Some((entry, decide(caller, &entry.dataset, Operation::Rows, now).ok()?)))
}

/// The dataset `id` names, if it exists and is not non-open: unknown and non-open ids get the
/// same answer, so non-open ids cannot be probed. A string that is not a valid id is simply not
/// found: nothing is looked up by it.
pub fn lookup<'a>(live: &'a Live, id: &str) -> Result<&'a CatalogEntry, Error> {
    let entry = lookup_any(live, id)?;
    policy::available(&entry.dataset)?;
    Ok(entry)
}

/// The dataset `id` names, withdrawn or not, if it exists and is not non-open: for the workflows
/// that act on withdrawn datasets (reopening, tracing).
pub fn lookup_any<'a>(live: &'a Live, id: &str) -> Result<&'a CatalogEntry, Error> {
    let id: DatasetId = id.parse().map_err(|_| Error::dataset_not_found())?;
    live.catalog.get(&id).filter(|e| policy::known(&e.dataset)).ok_or_else(Error::dataset_not_found)
}

/// One admitted call on one dataset: who, from where, on what. Only [`lifecycle::serve`] makes
/// one, once the call is admitted and its caller known, so whatever starts a query from a
/// `Call` runs admitted.
pub struct Call<'a> {
    pub state: &'a State,
    /// The catalog and limits the call started under.
    pub live: &'a Live,
    pub entry: &'a CatalogEntry,
    pub caller: &'a Caller,
    pub client: IpAddr,
    /// `http` or `flight`, for the metrics.
    pub protocol: &'static str,
    /// Where the call's time goes, for the metrics.
    pub timing: Timing,
}

/// A granted call: its grant, and what its audit records say of it (the columns and filter as
/// planned, the rows yielded). Only [`Call::grant`] and [`start`] make one, and an answer is
/// handed to the wire only with it ([`lifecycle::Reply`]), so no answer leaves ungranted or, on
/// conditional data, unrecorded.
pub struct Granted {
    grant: Grant,
    columns: Vec<String>,
    filter: Option<String>,
    rows: Arc<AtomicU64>,
}

impl Granted {
    pub fn grant(&self) -> &Grant {
        &self.grant
    }

    /// The rows the call's query has yielded so far.
    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }

    /// Counts `rows` answered without the query running (an answer kept encoded).
    pub fn answered_rows(&self, rows: u64) {
        self.rows.fetch_add(rows, Ordering::Relaxed);
    }

    /// The agreement the call is under, if any.
    fn agreement(&self) -> Option<&str> {
        match &self.grant.limit {
            Limit::Agreement { id, .. } => Some(id),
            _ => None,
        }
    }
}

impl<'a> Call<'a> {
    fn new(
        state: &'a State,
        live: &'a Live,
        entry: &'a CatalogEntry,
        caller: &'a Caller,
        client: IpAddr,
        protocol: &'static str,
        timing: Timing,
    ) -> Call<'a> {
        Call { state, live, entry, caller, client, protocol, timing }
    }

    /// The dataset version this call's caller is shown. For conditional data it is a keyed
    /// digest of the version: the version of a file source is its length and modification time,
    /// and the length of the whole file would tell a holder of a narrow scope how much data lies
    /// outside it. The digest still changes with every version, so caching clients keep working.
    pub fn shown_version(&self, version: &str) -> String {
        if !policy::recorded(&self.entry.dataset) {
            return version.to_owned();
        }
        let digest = crate::notify::hmac_sha256(
            &self.live.hash_key,
            &[b"dataset-version\0", self.entry.dataset.id.as_str().as_bytes(), b"\0", version.as_bytes()],
        );
        digest[..32].to_owned()
    }

    /// The counter of refusals by the daily quota `quota`.
    pub fn quota_refusals(&self, quota: &str) -> IntCounter {
        self.state.metrics.limit_refusals.with_label_values(&[self.protocol, quota])
    }

    /// Asks the rules for a grant, then the limiter for admission.
    pub async fn grant(&self, operation: Operation) -> Result<(Granted, Admission, Option<Budget>), Error> {
        let grant = decide(self.caller, &self.entry.dataset, operation, Utc::now())?;
        let (admission, budget) =
            admit_under(self.state, &self.live.limits, &grant.limit, self.client, self.protocol).await?;
        Ok((self.granted(grant), admission, budget))
    }

    /// [`Call::grant`] for a range read of the dataset's `version`: within
    /// `[limits] range_window_seconds` of an admitted range read of the same version by the same
    /// caller it is admitted as part of that call (the rules still decide it; its bytes count
    /// against that call's budget). A reader of Parquet over HTTP makes dozens of range requests
    /// for one query (the footer, then each row group's columns); counted one by one they would
    /// spend an anonymous caller's whole burst on one query.
    pub async fn grant_range(
        &self,
        operation: Operation,
        version: &str,
    ) -> Result<(Granted, Admission, Option<Budget>), Error> {
        let window = std::time::Duration::from_secs(self.live.limits.range_window_seconds);
        let grant = decide(self.caller, &self.entry.dataset, operation, Utc::now())?;
        let holder = match &grant.limit {
            Limit::Anonymous => format!("address {}", self.client),
            Limit::Key(key) => format!("key {key}"),
            Limit::Agreement { id, .. } => format!("agreement {id}"),
        };
        let key = (holder, self.entry.dataset.id.to_string(), format!("{} {version}", self.entry.version));
        if let Some((admission, budget)) = self.state.limiter.range_window(&key, window) {
            self.state.metrics.range_reads_joined.inc();
            return Ok((self.granted(grant), admission, budget));
        }
        let (admission, budget) =
            admit_under(self.state, &self.live.limits, &grant.limit, self.client, self.protocol).await?;
        if !window.is_zero() {
            self.state.limiter.open_range_window(key, &admission, &budget);
        }
        Ok((self.granted(grant), admission, budget))
    }

    fn granted(&self, grant: Grant) -> Granted {
        let columns = grant.scope.visible_fields(&self.entry.dataset).into_iter().map(|f| f.name).collect();
        Granted { grant, columns, filter: None, rows: Arc::new(AtomicU64::new(0)) }
    }

    /// The answer's body, cut short if the dataset is withdrawn or the call's agreement ends
    /// while it streams.
    fn cuttable<T: Send + 'static>(&self, body: Pieces<T>, granted: &Granted) -> Pieces<T> {
        cuttable(body, self.state, self.entry.dataset.id.to_string(), granted.agreement().map(str::to_owned))
    }

    /// Charges an answer of `bytes`, whole in hand and not yet sent, to the day's byte quota:
    /// past the quota it is refused (and counted) and spends nothing.
    pub fn charge_whole(&self, budget: Option<&Budget>, bytes: usize) -> Result<(), Error> {
        let Some(budget) = budget else { return Ok(()) };
        budget.take_bytes(bytes as u64).map_err(|left| {
            self.quota_refusals("bytes_per_day").inc();
            quota_spent("bytes_per_day", left)
        })
    }

    /// Refuses the answer if its dataset was withdrawn or its agreement ended since the call
    /// began: for an answer sent whole, which has no stream to cut.
    pub fn cut_now(&self, granted: &Granted) -> Result<(), Error> {
        let cuts = self.state.cuts.borrow();
        match cut_by(&cuts, self.entry.dataset.id.as_str(), granted.agreement()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Notes the columns and filter of a planned query, and counts the rows it yields.
    fn planned(
        &self,
        granted: &mut Granted,
        columns: Vec<String>,
        filter: Option<String>,
        batches: BatchStream,
    ) -> BatchStream {
        granted.columns = columns;
        granted.filter = filter;
        let rows = granted.rows.clone();
        Box::pin(batches.map(move |batch| {
            if let Ok(b) = &batch {
                rows.fetch_add(b.num_rows() as u64, Ordering::Relaxed);
            }
            batch
        }))
    }

    /// Makes the intent record of this granted call durable, before any of its data is sent,
    /// and returns the guard that writes its completion. Fails (503, `Unavailable` on Flight)
    /// when the record cannot be written: the answer is then dropped unsent.
    async fn intent(
        &self,
        recorder: &Recorder<'_>,
        granted: Granted,
        version: Option<String>,
    ) -> Result<CallGuard, Error> {
        let (info, rows) = self.recorded(recorder, granted);
        self.state.audit.intent(info, version, rows).await
    }

    /// Records this granted call, whose answer of `bytes` bytes is whole in hand, as served:
    /// its intent and completion are durable before any of it is sent. Fails as
    /// [`Call::intent`] does; the answer is then dropped unsent.
    async fn served_whole(
        &self,
        recorder: &Recorder<'_>,
        granted: Granted,
        version: Option<String>,
        bytes: u64,
        status: u16,
    ) -> Result<(), Error> {
        let (info, rows) = self.recorded(recorder, granted);
        self.state.audit.served_whole(info, version, rows.load(Ordering::Relaxed), bytes, status).await
    }

    /// What the records of this granted call say, and the counter of its rows.
    fn recorded(&self, recorder: &Recorder<'_>, granted: Granted) -> (CallInfo, Arc<AtomicU64>) {
        let (key_id, principal) = key_and_principal(self.caller);
        let (read, rows) = self.read(granted, None);
        let info = CallInfo {
            request_id: recorder.request_id.clone(),
            key_id,
            principal,
            agreement: read.agreement,
            dataset: read.dataset,
            operation: recorder.operation.to_owned(),
            columns: read.columns,
            filter: read.filter,
            masks: read.masks,
            client: self.client.to_string(),
            user_agent: recorder.user_agent.clone(),
        };
        (info, rows)
    }

    /// What this granted call read of its dataset (`version`), as the records of a SQL statement
    /// it is a scan of name it, and the counter of its rows.
    fn read(&self, granted: Granted, version: Option<String>) -> (audit::Read, Arc<AtomicU64>) {
        let agreement = granted.agreement().unwrap_or_default().to_owned();
        let masks = granted
            .grant
            .scope
            .masks
            .iter()
            .filter(|(column, _)| granted.columns.contains(column))
            .map(|(column, mask)| (column.clone(), mask.to_string()))
            .collect();
        let read = audit::Read {
            dataset: self.entry.dataset.id.to_string(),
            agreement,
            dataset_version: version,
            columns: granted.columns,
            filter: granted.filter,
            masks,
        };
        (read, granted.rows)
    }
}

/// The key id and principal of `caller`, as records name them (empty for anonymous callers).
pub fn key_and_principal(caller: &Caller) -> (String, String) {
    match caller {
        Caller::Key { key_id, principal, .. } => (key_id.clone(), principal.clone()),
        Caller::Anonymous => (String::new(), String::new()),
    }
}

/// What the audit records of a call on conditional data need before the call is granted.
pub struct Recorder<'a> {
    pub state: &'a State,
    pub request_id: String,
    pub dataset: String,
    /// The operation as the audit log names it: `rows`, `preview`, `download`, `flight`.
    pub operation: &'static str,
    /// `http` or `flight`, for the metrics.
    protocol: &'static str,
    pub client: IpAddr,
    /// The client's User-Agent, bounded ([`audit::bounded_text`]).
    pub user_agent: Option<String>,
    /// The SQL statement the call is a scan of, bounded ([`audit::bounded_statement`]).
    pub statement: Option<String>,
}

impl<'a> Recorder<'a> {
    pub fn new(
        state: &'a State,
        request_id: &str,
        entry: &CatalogEntry,
        operation: &'static str,
        protocol: &'static str,
        client: IpAddr,
        user_agent: Option<&str>,
    ) -> Recorder<'a> {
        Recorder {
            state,
            request_id: request_id.to_owned(),
            dataset: entry.dataset.id.to_string(),
            operation,
            protocol,
            client,
            user_agent: user_agent.map(audit::bounded_text),
            statement: None,
        }
    }

    /// The recorder of a scan of `statement`, if it is one.
    pub fn of_statement(mut self, statement: Option<&audit::Statement>) -> Recorder<'a> {
        self.statement = statement.map(|s| s.text.clone());
        self
    }
}

impl Recorder<'_> {
    /// Records a call that ended in `error` before any data was served, and hands the error
    /// back. `status` is the error's status as the front end answers it (an HTTP status, or
    /// the HTTP status that a gRPC status stands for).
    ///
    /// Refusals are limited per client address before anything is written, at the address's
    /// anonymous rate: past it the call is answered 429 and only counted, in the metrics and in
    /// the address's next record (`unrecorded_refusals`). The regulation's record is of the
    /// access a user was given or refused; a flood of refusals from one address is one fact,
    /// kept as a count, and must not be able to fill the log (and so stop conditional data).
    pub async fn unserved(&self, caller: Option<&Caller>, error: Error, status: u16) -> Error {
        let client = self.client.to_string();
        if let Err(limited) =
            admit_under(self.state, &self.state.live().limits, &Limit::Anonymous, self.client, self.protocol).await
        {
            self.state.audit.unrecorded_refusal(&client);
            return limited;
        }
        let (key_id, principal) = match caller {
            Some(Caller::Key { key_id, principal, .. }) => (Some(key_id.clone()), Some(principal.clone())),
            _ => (None, None),
        };
        self.state
            .audit
            .unserved(Record::Unserved {
                request_id: self.request_id.clone(),
                time: Utc::now(),
                key_id,
                principal,
                dataset: self.dataset.clone(),
                operation: self.operation.to_owned(),
                unrecorded_refusals: self.state.audit.take_unrecorded(&client),
                client,
                user_agent: self.user_agent.clone(),
                statement: self.statement.clone(),
                status,
                reason: audit::bounded_text(&format!("{}: {}", error.code, error.message)),
                outcome: if status >= 500 { Outcome::Failed } else { Outcome::Refused },
            })
            .await;
        // A source error may quote the data it choked on, which for conditional data can be a
        // value outside the caller's scope or under a mask: the caller gets no details (the
        // audit record and the log keep them).
        if error.kind == Kind::SourceFailed {
            tracing::warn!(dataset = %self.dataset, error = %error, "conditional source failed");
            return Error::source("the dataset's source could not be read; the platform's operators have the details");
        }
        error
    }
}

/// Plans the query and opens the source, returning the first batch (if any) so that a source
/// that fails at once is answered with a proper error instead of a broken stream.
pub async fn start(call: &Call<'_>, operation: Operation, query: &Query) -> Result<Started, Error> {
    start_keeping(call, operation, query, None).await
}

/// [`start`], for a front end that keeps small encoded answers under `key` (the query and its
/// encoding, normalized): a call answered alike to every caller (no record, no quota) on data in
/// the decoded-data cache is answered from the answer kept for the same key on the same version
/// ([`Started::kept`]), or says where its own answer may be kept ([`Started::keep`]).
pub async fn start_keeping(
    call: &Call<'_>,
    operation: Operation,
    query: &Query,
    key: Option<AnswerKey>,
) -> Result<Started, Error> {
    let (mut granted, admission, budget) = call.grant(operation).await?;
    let grant = &granted.grant;
    let state = call.state;
    let live = call.live;
    let opening = Instant::now();
    let context = live.source_context(&state.config.data_dir, &state.upstream);
    // Alike for every caller: nothing recorded, nothing counted against a quota, the whole data.
    // Such a call's kept answer is looked up before planning: its key (the same query on the
    // same data, catalog and limits) stands for a plan already made and answered.
    let alike =
        budget.is_none() && !policy::recorded(&call.entry.dataset) && grant.scope.is_whole_dataset(&call.entry.dataset);
    let early = match (&key, alike) {
        (Some(_), true) => Some(state.decoded.get(call.entry, &context, &state.answers).await),
        _ => None,
    };
    if let (Some(Ok(Some(decoded))), Some(key)) = (&early, &key) {
        if let Some(answer) = state.decoded.recall(decoded, live.serial, key) {
            call.timing.add_source(opening.elapsed());
            return Ok(Started {
                schema: Arc::new(arrow::datatypes::Schema::empty()),
                version: Some(decoded.version().to_owned()),
                first: None,
                rest: Box::pin(futures_util::stream::empty()),
                admission,
                budget,
                in_memory: true,
                granted,
                kept: Some(answer),
                keep: None,
            });
        }
    }
    let plan = Plan::new(&call.entry.config, grant, query, live.limits.max_sort_rows, live.hash_key.clone())?;
    let decoded = match early {
        Some(decoded) => decoded,
        None => state.decoded.get(call.entry, &context, &state.answers).await,
    };
    let keep = match (&decoded, key, alike) {
        (Ok(Some(decoded)), Some(key), true) => Some(Keep { decoded: decoded.clone(), live: live.serial, key }),
        _ => None,
    };
    let in_memory = matches!(decoded, Ok(Some(_)));
    let batches = match decoded {
        Ok(Some(decoded)) => {
            let scope = grant.scope.row_filter.as_ref();
            decoded.read(&plan.read, scope, query.filter.as_ref(), &grant.scope.masks, context.batch_rows)
        }
        Ok(None) => source::open_batches(&call.entry.config, &context, plan.read.clone(), plan.pushdown()).await,
        Err(e) => Err(e),
    };
    call.timing.add_source(opening.elapsed());
    let batches = batches?;
    let source: BatchStream = Box::pin(timed(batches.stream, call.timing.clone(), Timing::add_source));
    let schema = plan.output_schema.clone();
    let columns = schema.fields().iter().map(|f| f.name().clone()).collect();
    let filter = query.filter.as_ref().map(|f| f.to_string());
    let rows = call.planned(&mut granted, columns, filter, execute(plan, source));
    // Fused: an empty result ends at this first poll, and must not be polled again after it.
    let mut rest = meter_rows(rows, budget.clone(), call.quota_refusals("rows_per_day")).fuse();
    let first = rest.next().await.transpose()?;
    let rest = Box::pin(rest);
    Ok(Started {
        schema,
        version: batches.version,
        first,
        rest,
        admission,
        budget,
        in_memory,
        granted,
        kept: None,
        keep,
    })
}

/// The number of rows `query`'s filter matches within the grant's scope (its columns, order,
/// offset and limit aside): counted in memory for data in the decoded-data cache, read from the
/// file's footer where nothing filters and the format records it (Parquet); otherwise refused
/// (400 `count_unavailable`), since it would take a whole read of the source.
pub async fn count(call: &Call<'_>, grant: &Grant, query: &Query) -> Result<u64, Error> {
    let state = call.state;
    let live = call.live;
    let whole = Query { filter: query.filter.clone(), ..Query::default() };
    let plan = Plan::new(&call.entry.config, grant, &whole, live.limits.max_sort_rows, live.hash_key.clone())?;
    let context = live.source_context(&state.config.data_dir, &state.upstream);
    let scope = grant.scope.row_filter.as_ref();
    if let Some(decoded) = state.decoded.get(call.entry, &context, &state.answers).await? {
        if scope.is_none() && query.filter.is_none() {
            return Ok(decoded.rows());
        }
        let batches = decoded.read(&plan.read, scope, query.filter.as_ref(), &grant.scope.masks, context.batch_rows)?;
        let mut rows = execute(plan, batches.stream);
        let mut counted = 0u64;
        while let Some(batch) = rows.next().await {
            counted += batch?.num_rows() as u64;
        }
        return Ok(counted);
    }
    let recorded = match &call.entry.config.source {
        crate::config::SourceConfig::File(path) if scope.is_none() && query.filter.is_none() => {
            source::file::recorded_rows(state.config.data_dir.join(path), call.entry.dataset.format).await
        }
        _ => None,
    };
    recorded.ok_or_else(|| {
        Error::bad_request(
            "count_unavailable",
            "an exact count of this query would take a whole read of the dataset's source; \
             page until a page comes back short instead",
        )
    })
}

/// A query whose source is open and whose first batch is in hand.
pub struct Started {
    /// Schema of the rows sent.
    pub schema: SchemaRef,
    /// The dataset's content version, where the source knows it.
    pub version: Option<String>,
    pub first: Option<RecordBatch>,
    pub rest: BatchStream,
    pub admission: Admission,
    pub budget: Option<Budget>,
    /// Read from the decoded-data cache: the whole answer can be had at once.
    pub in_memory: bool,
    pub granted: Granted,
    /// The whole encoded answer, kept from an earlier call with the same key on the same
    /// version; `first` and `rest` are then empty, and `schema` too (nothing is encoded).
    pub kept: Option<KeptAnswer>,
    /// Where this call's whole encoded answer may be kept, if it is small.
    pub keep: Option<Keep>,
}

/// Where an answer may be kept: the decoded version it was read from, and its key.
pub struct Keep {
    decoded: Arc<Decoded>,
    live: u64,
    key: AnswerKey,
}

impl Keep {
    /// Keeps `answer`, the whole encoded answer, for the next call with the same key.
    pub fn keep(self, state: &State, answer: KeptAnswer) {
        state.decoded.keep(&self.decoded, self.live, self.key, answer);
    }
}

/// Admits a call under `limit` or refuses it: 429 (`ResourceExhausted` on Flight) naming the
/// limit, with `Retry-After` and the `RateLimit` fields. In a cluster the limits are the ones
/// shared in Redis; when Redis cannot be reached, [`OnFailure`] says what happens. `limits` are
/// those of the live state the call started under.
pub async fn admit_under(
    state: &State,
    limits: &Limits,
    limit: &Limit,
    client: IpAddr,
    protocol: &'static str,
) -> Result<(Admission, Option<Budget>), Error> {
    let now = Utc::now();
    let decided = match (&state.shared, limit) {
        (None, _) => admit_locally(state, limit, client, now).await,
        (Some(shared), Limit::Agreement { id, rate, quota }) => {
            let day = state.limiter.day(now).to_string();
            match shared.admit_agreement(id, *rate, quota, &day).await {
                Ok(Ok(admitted)) => {
                    Ok((admitted.admission, Some(state.limiter.shared_budget(id, quota, admitted.used, now))))
                }
                Ok(Err(denied)) => Err(denied),
                Err(unreachable) => {
                    shared.fell_back();
                    match shared.on_failure {
                        OnFailure::FailClosed => {
                            return Err(Error::new(
                                Kind::Unavailable,
                                "limiter_unavailable",
                                format!(
                                    "the shared rate limiter cannot be reached ({}); conditional data is not served without it",
                                    unreachable.0
                                ),
                            ));
                        }
                        OnFailure::LocalShare => {
                            let share =
                                Limit::Agreement { id: id.clone(), rate: shared.local_share(*rate), quota: *quota };
                            admit_locally(state, &share, client, now).await
                        }
                    }
                }
            }
        }
        (Some(shared), _) => {
            let rate = if matches!(limit, Limit::Anonymous) { limits.anonymous_rate } else { limits.key_rate };
            match shared.admit_default(limit, client, rate).await {
                Ok(decided) => decided.map(|admission| (admission, None)),
                // Unconditional data keeps flowing on the local limits.
                Err(_) => {
                    shared.fell_back();
                    admit_locally(state, limit, client, now).await
                }
            }
        }
    };
    decided.map_err(|denied| refused(state, protocol, denied, now))
}

/// Admits a call on this instance's own limiter; today's usage of an agreement not yet counted
/// here is read from the store first, off the runtime.
async fn admit_locally(
    state: &State,
    limit: &Limit,
    client: IpAddr,
    now: chrono::DateTime<Utc>,
) -> Result<(Admission, Option<Budget>), Denied> {
    let mut usage = None;
    if let Limit::Agreement { id, .. } = limit {
        if !state.limiter.has_counter(id, now) {
            let (store, id, day) = (state.store.clone(), id.clone(), state.limiter.day(now).to_string());
            let read = tokio::task::spawn_blocking(move || store.usage(&id, &day)).await;
            usage = Some(match read {
                Ok(Ok(usage)) => usage,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "quota usage not readable; counting from zero");
                    Default::default()
                }
                Err(e) => {
                    tracing::warn!(error = %e, "quota usage task failed; counting from zero");
                    Default::default()
                }
            });
        }
    }
    state.limiter.admit(limit, client, now, |_, _| usage.unwrap_or_default())
}

/// The refusal of a call a limit did not admit, counted in the metrics.
fn refused(state: &State, protocol: &'static str, denied: Denied, now: chrono::DateTime<Utc>) -> Error {
    let limit = match &denied {
        Denied::Rate { policy: "anonymous", .. } => "anonymous_rate",
        Denied::Rate { policy: "key", .. } => "key_rate",
        Denied::Rate { .. } => "agreement_rate",
        Denied::Quota { quota, .. } => *quota,
    };
    state.metrics.limit_refusals.with_label_values(&[protocol, limit]).inc();
    let (mut error, retry_after) = match denied {
        Denied::Rate { policy, burst, retry_after } => {
            let mut e = Error::new(
                Kind::TooManyRequests,
                "rate_limited",
                format!("the {policy} rate limit is spent; retry in {:.1} s", retry_after.as_secs_f64()),
            );
            let t = retry_after.as_secs_f64().ceil().max(1.0) as u64;
            e.headers.extend([
                ("ratelimit-policy", format!("\"{policy}\";q={burst};w=1")),
                ("ratelimit", format!("\"{policy}\";r=0;t={t}")),
                ("ratelimit-limit", burst.to_string()),
                ("ratelimit-remaining", "0".into()),
                ("ratelimit-reset", t.to_string()),
            ]);
            (e, retry_after)
        }
        Denied::Quota { quota, limit, retry_after } => (
            Error::new(
                Kind::TooManyRequests,
                "quota_exhausted",
                format!("the daily quota `{quota}` ({limit}) of your agreement is spent; it renews at midnight"),
            ),
            if retry_after.is_zero() { state.limiter.until_next_day(now) } else { retry_after },
        ),
    };
    error.headers.push(("retry-after", retry_after.as_secs_f64().ceil().max(1.0).to_string()));
    error
}

fn quota_spent(which: &str, left: u64) -> Error {
    Error::new(
        Kind::TooManyRequests,
        "quota_exhausted",
        format!("the daily quota `{which}` of your agreement does not cover this result ({left} left today); narrow the query or wait for midnight"),
    )
}

/// Counts the rows of a result against the budget. A batch that would pass it is not sent:
/// before the first row that makes a clean refusal and spends nothing; after it the answer breaks
/// off (the client never takes a cut result for a complete one) and what was left of the day's
/// quota is spent.
pub fn meter_rows(batches: BatchStream, budget: Option<Budget>, refused: IntCounter) -> BatchStream {
    let Some(budget) = budget else { return batches };
    let mut sent = 0u64;
    let mut over = None;
    Box::pin(batches.map(move |batch| {
        if let Some(left) = over {
            return Err(quota_spent("rows_per_day", left));
        }
        let batch = batch?;
        let rows = batch.num_rows() as u64;
        if let Err(left) = budget.take_rows(rows) {
            refused.inc();
            over = Some(left);
            if sent > 0 {
                budget.exhaust_rows();
            }
            return Err(quota_spent("rows_per_day", left));
        }
        sent += rows;
        Ok(batch)
    }))
}

/// Counts the bytes of an answer against the budget; `size` gives the bytes a piece puts on the
/// wire. The answer has begun, so one that runs past the budget breaks off and spends what was
/// left of the day's quota.
pub fn meter_bytes<T: Send + 'static>(
    body: Pieces<T>,
    budget: Option<Budget>,
    size: fn(&T) -> usize,
    refused: IntCounter,
) -> Pieces<T> {
    let Some(budget) = budget else { return body };
    Box::pin(body.map(move |piece| {
        let piece = piece?;
        if let Err(left) = budget.take_bytes(size(&piece) as u64) {
            refused.inc();
            budget.exhaust_bytes();
            return Err(quota_spent("bytes_per_day", left));
        }
        Ok(piece)
    }))
}

/// The error that ends an answer on `dataset` under `agreement` (if any) now that `cuts` are
/// in force, if one does.
fn cut_by(cuts: &Cuts, dataset: &str, agreement: Option<&str>) -> Option<Error> {
    if cuts.withdrawn.contains(dataset) {
        return Some(Error::new(Kind::Gone, "dataset_withdrawn", "the dataset was withdrawn during the answer"));
    }
    let ended = agreement.filter(|a| cuts.ended_agreements.contains(*a))?;
    Some(Error::new(
        Kind::Forbidden,
        "agreement_ended",
        format!("agreement `{ended}` was suspended or revoked during the answer"),
    ))
}

/// Ends an answer within moments of its dataset being withdrawn or its agreement being
/// suspended or revoked. The stream waits on [`State::cuts`] beside its data, so a change is
/// seen at once even while the source sends nothing; the answer then breaks off with the error
/// (HTTP: the body is cut short; Flight: the stream ends with the status).
pub fn cuttable<T: Send + 'static>(
    body: Pieces<T>,
    state: &State,
    dataset: String,
    agreement: Option<String>,
) -> Pieces<T> {
    let cut = Arc::new(move |cuts: &Cuts| cut_by(cuts, &dataset, agreement.as_deref()));
    let cuts = state.cuts.subscribe();
    Box::pin(futures_util::stream::unfold(
        (body, cuts, true, false),
        move |(mut body, mut cuts, mut watching, done)| {
            let cut = cut.clone();
            async move {
                if done {
                    return None;
                }
                let now = cut(&cuts.borrow());
                if let Some(e) = now {
                    return Some((Err(e), (body, cuts, watching, true)));
                }
                loop {
                    tokio::select! {
                        biased;
                        changed = cuts.changed(), if watching => match changed {
                            Ok(()) => {
                                let now = cut(&cuts.borrow_and_update());
                                if let Some(e) = now {
                                    return Some((Err(e), (body, cuts, watching, true)));
                                }
                            }
                            Err(_) => watching = false,
                        },
                        item = body.next() => return item.map(|item| (item, (body, cuts, watching, false))),
                    }
                }
            }
        },
    ))
}

/// Accounts one data call in the metrics when its answer ends (sent, failed or dropped): its
/// duration, the gateway's and the source's shares of it, its rows, and the answers streaming
/// meanwhile.
pub struct Observer {
    started: Instant,
    timing: Timing,
    duration: Histogram,
    gateway: Histogram,
    source: Histogram,
    active: IntGauge,
    /// The call's row count as its query yields them, and the counter it is added to at the end.
    rows: Option<(Arc<AtomicU64>, IntCounter)>,
}

impl Observer {
    /// Starts watching a call that began at `started`; the time until now (the head: rules,
    /// opening the source, the first batch) counts as the call's own.
    pub fn new(metrics: &Metrics, protocol: &str, open_type: &str, started: Instant, timing: Timing) -> Observer {
        timing.add_busy(started.elapsed());
        let labels = [protocol, open_type];
        let active = metrics.active_streams.with_label_values(&[protocol]);
        active.inc();
        Observer {
            started,
            timing,
            duration: metrics.duration.with_label_values(&labels),
            gateway: metrics.gateway_seconds.with_label_values(&labels),
            source: metrics.source_seconds.with_label_values(&labels),
            active,
            rows: None,
        }
    }

    /// Adds `rows` (a granted call's count) to `counter` when the answer ends.
    fn rows(mut self, rows: Arc<AtomicU64>, counter: IntCounter) -> Observer {
        self.rows = Some((rows, counter));
        self
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.active.dec();
        self.duration.observe(self.started.elapsed().as_secs_f64());
        let (gateway, source) = self.timing.split();
        self.gateway.observe(gateway.as_secs_f64());
        self.source.observe(source.as_secs_f64());
        if let Some((rows, counter)) = &self.rows {
            counter.inc_by(rows.load(Ordering::Relaxed));
        }
    }
}

/// An answer whose polling time counts as the call's own, observed by `observer` when it ends.
pub fn observed<T: Send + 'static>(body: Pieces<T>, observer: Observer) -> Pieces<T> {
    let busy = timed(body, observer.timing.clone(), Timing::add_busy);
    Box::pin(busy.map(move |piece| {
        let _watching = &observer;
        piece
    }))
}
