//! The audit log of conditional data: a durable, tamper-evident record of every call.
//!
//! Every call on a conditionally open dataset leaves records: a refused call one `refusal`
//! record; a served call an `intent` record, durable (fsync'd) before the first byte of data
//! is sent, and a `completion` record (rows, bytes, outcome) that is durable before the client
//! sees the end of the response, so a response received in full always has both. Records are
//! chained: each carries the SHA-256 of the one before, so an edited, deleted, inserted or
//! reordered record breaks the chain where it happened ([`segments::verify`]).
//!
//! A SQL statement is one call however many tables it reads: one `statement_intent` naming every
//! conditional dataset its scans read (each with the agreement, columns, filter and masks it was
//! read under), durable before the first row of its answer, and one `statement_completion`
//! with the rows and bytes of the answer sent and the rows each read handed the statement.
//!
//! The embedded store is append-only segment files in `<data-dir>/audit` ([`segments`]); the
//! gateway talks to it through the [`AuditSink`] trait, which a networked store can implement.
//! Unconditional traffic is not recorded call by call.

pub mod postgres;
pub mod segments;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Kind};
use crate::source::Pieces;

/// One audit record, as stored (without its chain fields `seq`, `prev`, `hash`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    /// A call is about to be served.
    Intent {
        request_id: String,
        time: DateTime<Utc>,
        key_id: String,
        principal: String,
        agreement: String,
        dataset: String,
        dataset_version: Option<String>,
        operation: String,
        columns: Vec<String>,
        filter: Option<String>,
        masks: BTreeMap<String, String>,
        client: String,
        user_agent: Option<String>,
        /// Kept to read logs of earlier versions, which recorded each table scan of a SQL
        /// statement as a call of its own naming the statement; statements are now recorded
        /// as [`Record::StatementIntent`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        statement: Option<String>,
    },
    /// A SQL statement reading conditional data is about to be answered: every conditional
    /// dataset its scans read, durable before the first row of its answer.
    StatementIntent {
        request_id: String,
        time: DateTime<Utc>,
        key_id: String,
        principal: String,
        statement: String,
        /// One per table scan on conditional data, in the order they were opened.
        reads: Vec<Read>,
        client: String,
        user_agent: Option<String>,
    },
    /// A SQL statement's answer ended.
    StatementCompletion {
        request_id: String,
        /// The seq of the statement's intent record.
        intent_seq: u64,
        time: DateTime<Utc>,
        principal: String,
        status: u16,
        /// Rows and bytes of the answer sent to the caller.
        rows: u64,
        bytes: u64,
        duration_ms: u64,
        outcome: Outcome,
        /// The rows each read handed the statement, in the order of the intent's reads.
        reads: Vec<ReadRows>,
    },
    /// A served call ended.
    Completion {
        request_id: String,
        /// The seq of the call's intent record: request ids come from clients and may repeat.
        intent_seq: u64,
        time: DateTime<Utc>,
        principal: String,
        agreement: String,
        dataset: String,
        status: u16,
        rows: u64,
        bytes: u64,
        duration_ms: u64,
        outcome: Outcome,
    },
    /// A call that ended before any data was served: refused (by the rules, the limits or a
    /// bad query) or failed (the source could not be read).
    Unserved {
        request_id: String,
        time: DateTime<Utc>,
        key_id: Option<String>,
        principal: Option<String>,
        dataset: String,
        operation: String,
        client: String,
        user_agent: Option<String>,
        /// For a table scan of a SQL statement: the statement.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        statement: Option<String>,
        status: u16,
        reason: String,
        outcome: Outcome,
        /// Refused calls from the same client address left without a record of their own since
        /// its previous record: past the address's rate, refusals are answered 429 and only
        /// counted here, so that nobody can fill the log with refusals.
        #[serde(default, skip_serializing_if = "is_zero")]
        unrecorded_refusals: u64,
    },
    /// Written when the log recovers from a write failure, so that recovery is on record too.
    Checkpoint { time: DateTime<Utc>, note: String },
}

/// A table scan of conditional data by a SQL statement, as the statement's intent names it: the
/// scope it read under.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Read {
    pub dataset: String,
    pub agreement: String,
    pub dataset_version: Option<String>,
    pub columns: Vec<String>,
    pub filter: Option<String>,
    pub masks: BTreeMap<String, String>,
}

/// The rows one read of a statement handed the statement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadRows {
    pub dataset: String,
    pub agreement: String,
    pub rows: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Most bytes of text a client chose (User-Agent, a refusal's message quoting its query) that a
/// record keeps; the rest is cut, and the cut says how much was left out.
pub const MAX_CLIENT_TEXT_BYTES: usize = 256;

/// `text` bounded to [`MAX_CLIENT_TEXT_BYTES`], cut at a character boundary with a marker.
pub fn bounded_text(text: &str) -> String {
    bounded(text, MAX_CLIENT_TEXT_BYTES)
}

fn bounded(text: &str, most: usize) -> String {
    if text.len() <= most {
        return text.to_owned();
    }
    let mut end = most;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…[cut: {} more bytes]", &text[..end], text.len() - end)
}

/// Most bytes of a SQL statement a record keeps; the rest is cut as [`bounded_text`] cuts.
pub const MAX_STATEMENT_BYTES: usize = 4096;

/// A SQL statement bounded to [`MAX_STATEMENT_BYTES`].
pub fn bounded_statement(text: &str) -> String {
    bounded(text, MAX_STATEMENT_BYTES)
}

/// How a served call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Complete,
    /// The client went away before the end.
    Aborted,
    /// The gateway or the source failed.
    Failed,
    /// Refused before any data was served.
    Refused,
}

impl Record {
    pub fn time(&self) -> DateTime<Utc> {
        match self {
            Record::Intent { time, .. }
            | Record::Completion { time, .. }
            | Record::StatementIntent { time, .. }
            | Record::StatementCompletion { time, .. }
            | Record::Unserved { time, .. }
            | Record::Checkpoint { time, .. } => *time,
        }
    }

    /// The datasets the record concerns, each with the agreement it was read under (empty
    /// where there is none), once each.
    pub fn datasets(&self) -> Vec<(&str, &str)> {
        let mut datasets: Vec<(&str, &str)> = match self {
            Record::Intent { dataset, agreement, .. } | Record::Completion { dataset, agreement, .. } => {
                vec![(dataset, agreement)]
            }
            Record::StatementIntent { reads, .. } => reads.iter().map(|r| (&*r.dataset, &*r.agreement)).collect(),
            Record::StatementCompletion { reads, .. } => reads.iter().map(|r| (&*r.dataset, &*r.agreement)).collect(),
            Record::Unserved { dataset, .. } => vec![(dataset, "")],
            Record::Checkpoint { .. } => Vec::new(),
        };
        datasets.sort_unstable();
        datasets.dedup();
        datasets
    }

    /// The principal the record concerns, if any.
    pub fn principal(&self) -> Option<&str> {
        match self {
            Record::Intent { principal, .. }
            | Record::Completion { principal, .. }
            | Record::StatementIntent { principal, .. }
            | Record::StatementCompletion { principal, .. } => Some(principal),
            Record::Unserved { principal, .. } => principal.as_deref(),
            Record::Checkpoint { .. } => None,
        }
    }
}

/// Why the audit store did not take a record.
#[derive(Clone, Debug, thiserror::Error)]
#[error("the audit log cannot take records: {0}")]
pub struct AuditError(pub String);

/// Where audit records go. `append` resolves once the record is durable.
pub trait AuditSink: Send + Sync {
    fn append(&self, record: Record) -> Pin<Box<dyn Future<Output = Result<u64, AuditError>> + Send>>;
    /// Appends the intent and the completion of a call answered whole, one right after the
    /// other in the chain, the completion naming the intent's seq; resolves with the intent's
    /// seq once both are durable.
    fn append_served(
        &self,
        intent: Record,
        completion: Record,
    ) -> Pin<Box<dyn Future<Output = Result<u64, AuditError>> + Send>>;
    /// Whether the last write succeeded; `Err` names the failure.
    fn health(&self) -> Result<(), String>;
}

/// The audit facade the front ends use.
#[derive(Clone)]
pub struct Audit {
    sink: Arc<dyn AuditSink>,
    /// Refusals per client address answered without a record since its last one.
    unrecorded: Arc<dashmap::DashMap<String, u64>>,
}

/// What is known of a call when its intent is recorded.
#[derive(Clone, Debug)]
pub struct CallInfo {
    pub request_id: String,
    pub key_id: String,
    pub principal: String,
    pub agreement: String,
    pub dataset: String,
    pub operation: String,
    pub columns: Vec<String>,
    pub filter: Option<String>,
    pub masks: BTreeMap<String, String>,
    pub client: String,
    pub user_agent: Option<String>,
}

/// What is known of a SQL statement's caller when its intent is recorded.
#[derive(Clone, Debug)]
pub struct StatementInfo {
    pub request_id: String,
    pub key_id: String,
    pub principal: String,
    pub client: String,
    pub user_agent: Option<String>,
}

/// A SQL statement and the reads of its table scans on conditional data, gathered as the scans
/// open: its intent names them, its completion counts the rows each handed the statement.
pub struct Statement {
    /// The statement as its records keep it ([`bounded_statement`]).
    pub text: String,
    reads: std::sync::Mutex<StatementReads>,
}

#[derive(Default)]
struct StatementReads {
    /// Each read, with the counters of the scans that read it.
    reads: Vec<(Read, Vec<Arc<AtomicU64>>)>,
    /// Whether the intent naming them is written.
    recorded: bool,
}

impl Statement {
    pub fn new(sql: &str) -> Statement {
        Statement { text: bounded_statement(sql), reads: Default::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StatementReads> {
        self.reads.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds a scan's read, with the counter of the rows it hands the statement. A read like
    /// one already named (a scan the engine runs again) counts into it; once the intent is
    /// written, a read it does not name is refused, since nothing may be served unrecorded.
    pub fn add(&self, read: Read, rows: Arc<AtomicU64>) -> Result<(), Error> {
        let mut reads = self.lock();
        if let Some((_, counters)) = reads.reads.iter_mut().find(|(named, _)| *named == read) {
            counters.push(rows);
            return Ok(());
        }
        if reads.recorded {
            return Err(Error::new(
                Kind::Unavailable,
                "audit_unavailable",
                format!("a scan of `{}` that the statement's record does not name", read.dataset),
            ));
        }
        reads.reads.push((read, vec![rows]));
        Ok(())
    }

    /// Whether any scan read conditional data.
    pub fn is_recorded(&self) -> bool {
        !self.lock().reads.is_empty()
    }

    /// The reads the intent names; from now on no other is taken.
    fn seal(&self) -> Vec<Read> {
        let mut reads = self.lock();
        reads.recorded = true;
        reads.reads.iter().map(|(read, _)| read.clone()).collect()
    }

    fn rows(&self) -> Vec<ReadRows> {
        self.lock()
            .reads
            .iter()
            .map(|(read, counters)| ReadRows {
                dataset: read.dataset.clone(),
                agreement: read.agreement.clone(),
                rows: counters.iter().map(|c| c.load(Ordering::Relaxed)).sum(),
            })
            .collect()
    }
}

fn unavailable(e: AuditError) -> Error {
    Error::new(
        Kind::Unavailable,
        "audit_unavailable",
        format!("{e}; conditional data is not served without its record"),
    )
}

impl Audit {
    pub fn new(sink: Arc<dyn AuditSink>) -> Audit {
        Audit { sink, unrecorded: Arc::default() }
    }

    /// Notes a refusal from `client` answered without a record of its own; the client's next
    /// record counts it.
    pub fn unrecorded_refusal(&self, client: &str) {
        // Bounded like everything clients can grow: past this many addresses, the refusals of
        // new ones are only in the metrics.
        const MOST_ADDRESSES: usize = 100_000;
        if let Some(mut n) = self.unrecorded.get_mut(client) {
            *n += 1;
        } else if self.unrecorded.len() < MOST_ADDRESSES {
            self.unrecorded.insert(client.to_owned(), 1);
        }
    }

    /// Takes the count of `client`'s refusals answered without a record since its last one.
    pub fn take_unrecorded(&self, client: &str) -> u64 {
        self.unrecorded.remove(client).map_or(0, |(_, n)| n)
    }

    pub fn health(&self) -> Result<(), String> {
        self.sink.health()
    }

    /// Records a call that ended before any data was served.
    pub async fn unserved(&self, record: Record) {
        if let Err(e) = self.sink.append(record).await {
            tracing::error!(error = %e, "unserved call not recorded");
        }
    }

    /// Appends a checkpoint; used to find out whether a failed log can write again.
    pub async fn checkpoint(&self, note: String) -> Result<u64, AuditError> {
        self.sink.append(Record::Checkpoint { time: Utc::now(), note }).await
    }

    /// Records the intent of a call and returns the guard that records its completion. Fails
    /// (503) when the record cannot be made durable: the call must then not be served.
    /// `rows` is the counter the call's rows are counted into as they are produced.
    pub async fn intent(
        &self,
        call: CallInfo,
        dataset_version: Option<String>,
        rows: Arc<AtomicU64>,
    ) -> Result<CallGuard, Error> {
        let record = intent_record(&call, dataset_version);
        self.guarded(record, Subject::Call(call), rows).await
    }

    /// Records the intent of `statement`, naming every read its scans have added, and returns
    /// the guard that records its completion; `rows` counts the rows of its answer. Fails (503)
    /// as [`Audit::intent`] does.
    pub async fn statement_intent(
        &self,
        info: StatementInfo,
        statement: Arc<Statement>,
        rows: Arc<AtomicU64>,
    ) -> Result<CallGuard, Error> {
        let record = Record::StatementIntent {
            request_id: info.request_id.clone(),
            time: Utc::now(),
            key_id: info.key_id.clone(),
            principal: info.principal.clone(),
            statement: statement.text.clone(),
            reads: statement.seal(),
            client: info.client.clone(),
            user_agent: info.user_agent.clone(),
        };
        self.guarded(record, Subject::Statement(info, statement), rows).await
    }

    async fn guarded(&self, intent: Record, subject: Subject, rows: Arc<AtomicU64>) -> Result<CallGuard, Error> {
        let intent_seq = self.sink.append(intent).await.map_err(unavailable)?;
        Ok(CallGuard {
            audit: self.clone(),
            subject,
            intent_seq,
            started: Instant::now(),
            rows,
            bytes: Arc::new(AtomicU64::new(0)),
            done: false,
        })
    }

    /// Records a call whose answer is whole in hand (`rows` rows in `bytes` bytes, sent with
    /// `status`): its intent and its completion, committed together before any of it is sent.
    /// Fails (503) when they cannot be made durable: the answer must then not be sent.
    pub async fn served_whole(
        &self,
        call: CallInfo,
        dataset_version: Option<String>,
        rows: u64,
        bytes: u64,
        status: u16,
    ) -> Result<(), Error> {
        let intent = intent_record(&call, dataset_version);
        // Its `intent_seq` is the intent's, set as the two are chained.
        let completion = completion_record(&call, 0, 0, rows, bytes, status, Outcome::Complete);
        self.sink.append_served(intent, completion).await.map(|_| ()).map_err(unavailable)
    }
}

fn completion_record(
    call: &CallInfo,
    intent_seq: u64,
    duration_ms: u64,
    rows: u64,
    bytes: u64,
    status: u16,
    outcome: Outcome,
) -> Record {
    Record::Completion {
        request_id: call.request_id.clone(),
        intent_seq,
        time: Utc::now(),
        principal: call.principal.clone(),
        agreement: call.agreement.clone(),
        dataset: call.dataset.clone(),
        status,
        rows,
        bytes,
        duration_ms,
        outcome,
    }
}

fn intent_record(call: &CallInfo, dataset_version: Option<String>) -> Record {
    Record::Intent {
        request_id: call.request_id.clone(),
        time: Utc::now(),
        key_id: call.key_id.clone(),
        principal: call.principal.clone(),
        agreement: call.agreement.clone(),
        dataset: call.dataset.clone(),
        dataset_version,
        operation: call.operation.clone(),
        columns: call.columns.clone(),
        filter: call.filter.clone(),
        masks: call.masks.clone(),
        client: call.client.clone(),
        user_agent: call.user_agent.clone(),
        statement: None,
    }
}

/// What a guard's completion record is of.
enum Subject {
    Call(CallInfo),
    Statement(StatementInfo, Arc<Statement>),
}

/// Records the completion of a call exactly once: explicitly with [`CallGuard::complete`], or,
/// if dropped first (the client went away), as aborted.
pub struct CallGuard {
    audit: Audit,
    subject: Subject,
    intent_seq: u64,
    started: Instant,
    rows: Arc<AtomicU64>,
    /// Bytes handed to the client so far, so an aborted call records what did leave.
    bytes: Arc<AtomicU64>,
    done: bool,
}

impl CallGuard {
    fn record(&self, status: u16, outcome: Outcome) -> Record {
        let (rows, bytes) = (self.rows.load(Ordering::Relaxed), self.bytes.load(Ordering::Relaxed));
        let duration_ms = self.started.elapsed().as_millis() as u64;
        match &self.subject {
            Subject::Call(call) => completion_record(call, self.intent_seq, duration_ms, rows, bytes, status, outcome),
            Subject::Statement(info, statement) => Record::StatementCompletion {
                request_id: info.request_id.clone(),
                intent_seq: self.intent_seq,
                time: Utc::now(),
                principal: info.principal.clone(),
                status,
                rows,
                bytes,
                duration_ms,
                outcome,
                reads: statement.rows(),
            },
        }
    }

    /// Records that the call failed with `status` before its answer began, and waits until the
    /// record is durable.
    pub async fn failed(self, status: u16) {
        if let Err(e) = self.complete(status, Outcome::Failed).await {
            tracing::error!(error = %e, "completion of a failed call not recorded");
        }
    }

    /// Records the end of the call and waits until the record is durable.
    pub async fn complete(mut self, status: u16, outcome: Outcome) -> Result<(), AuditError> {
        self.done = true;
        let record = self.record(status, outcome);
        self.audit.sink.append(record).await.map(|_| ())
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let record = self.record(499, Outcome::Aborted);
        let sink = self.audit.sink.clone();
        // The client is gone; nothing waits for this record, but it is written all the same.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                if let Err(e) = sink.append(record).await {
                    tracing::error!(error = %e, "completion of an aborted call not recorded");
                }
            });
        }
    }
}

/// Wraps an answer (an HTTP body's chunks, a Flight stream's messages) so that the call's
/// completion record is durable before the client can see its end: the last piece is held back
/// until the record is written. `size` gives the bytes a piece puts on the wire. An answer that
/// fails records `failed`; one dropped early (client gone) records `aborted`.
pub fn audited<T: Send + 'static>(body: Pieces<T>, guard: CallGuard, status: u16, size: fn(&T) -> usize) -> Pieces<T> {
    struct State<T> {
        body: Pieces<T>,
        guard: Option<CallGuard>,
        held: Option<T>,
        sent: Arc<AtomicU64>,
        status: u16,
        size: fn(&T) -> usize,
    }
    let sent = guard.bytes.clone();
    let state = State { body, guard: Some(guard), held: None, sent, status, size };
    Box::pin(futures_util::stream::unfold(state, |mut s| async move {
        loop {
            s.guard.as_ref()?;
            match s.body.next().await {
                Some(Ok(piece)) => {
                    if let Some(previous) = s.held.replace(piece) {
                        s.sent.fetch_add((s.size)(&previous) as u64, Ordering::Relaxed);
                        return Some((Ok(previous), s));
                    }
                }
                Some(Err(e)) => {
                    let guard = s.guard.take().expect("checked above");
                    if let Err(audit) = guard.complete(s.status, Outcome::Failed).await {
                        tracing::error!(error = %audit, "completion of a failed call not recorded");
                    }
                    return Some((Err(e), s));
                }
                None => {
                    let guard = s.guard.take().expect("checked above");
                    let last = s.held.take();
                    if let Some(b) = &last {
                        s.sent.fetch_add((s.size)(b) as u64, Ordering::Relaxed);
                    }
                    return match guard.complete(s.status, Outcome::Complete).await {
                        // With the record durable, the last piece (and so the end) may go.
                        Ok(()) => last.map(|b| (Ok(b), s)),
                        Err(e) => Some((Err(unavailable(e)), s)),
                    };
                }
            }
        }
    }))
}

/// One recipient of a dataset in a trace: who received it, under which agreement, how much.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Recipient {
    pub principal: String,
    pub agreement: String,
    /// Served calls with a completion record.
    pub calls: u64,
    /// Calls with an intent record but no completion: the gateway stopped (a crash) while
    /// serving them, so they may have received data; counted apart, with no rows or bytes.
    pub unfinished_calls: u64,
    pub rows: u64,
    pub bytes: u64,
    pub first_access: DateTime<Utc>,
    pub last_access: DateTime<Utc>,
}

/// Who received `dataset` between `since` and `until`, grouped by principal and agreement:
/// every served call that completed or sent any rows or bytes before it was cut off, and every
/// call whose intent was recorded but whose completion never was. A SQL statement that read the
/// dataset counts once per agreement it read it under, with the rows its reads of the dataset
/// handed the statement and the bytes of the answer they went into.
pub fn trace<'a>(
    records: impl IntoIterator<Item = &'a Record>,
    dataset: &str,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
) -> Vec<Recipient> {
    let records: Vec<&Record> = records.into_iter().collect();
    // By request and dataset: request ids come from clients, and one may read several datasets.
    let completed: std::collections::HashSet<(&str, &str)> = records
        .iter()
        .filter(|r| matches!(r, Record::Completion { .. } | Record::StatementCompletion { .. }))
        .flat_map(|r| {
            let request_id = match r {
                Record::Completion { request_id, .. } | Record::StatementCompletion { request_id, .. } => request_id,
                _ => unreachable!("filtered above"),
            };
            r.datasets().into_iter().map(move |(d, _)| (request_id.as_str(), d))
        })
        .collect();
    let mut by: BTreeMap<(String, String), Recipient> = BTreeMap::new();
    fn count<'m>(
        by: &'m mut BTreeMap<(String, String), Recipient>,
        principal: &str,
        agreement: &str,
        time: DateTime<Utc>,
    ) -> &'m mut Recipient {
        let entry = by.entry((principal.to_owned(), agreement.to_owned())).or_insert_with(|| Recipient {
            principal: principal.to_owned(),
            agreement: agreement.to_owned(),
            calls: 0,
            unfinished_calls: 0,
            rows: 0,
            bytes: 0,
            first_access: time,
            last_access: time,
        });
        entry.first_access = entry.first_access.min(time);
        entry.last_access = entry.last_access.max(time);
        entry
    }
    for record in records {
        let time = record.time();
        if since.is_some_and(|s| time < s) || until.is_some_and(|u| time >= u) {
            continue;
        }
        let agreements = record.datasets().into_iter().filter(|(d, _)| *d == dataset).map(|(_, a)| a);
        let (principal, request_id) = match record {
            Record::Completion { principal, request_id, .. }
            | Record::StatementCompletion { principal, request_id, .. }
            | Record::Intent { principal, request_id, .. }
            | Record::StatementIntent { principal, request_id, .. } => (principal, request_id),
            _ => continue,
        };
        for agreement in agreements {
            let (rows, bytes, outcome) = match record {
                Record::Completion { rows, bytes, outcome, .. } => (*rows, *bytes, *outcome),
                Record::StatementCompletion { reads, bytes, outcome, .. } => {
                    let of = |r: &&ReadRows| r.dataset == dataset && r.agreement == agreement;
                    (reads.iter().filter(of).map(|r| r.rows).sum(), *bytes, *outcome)
                }
                _ => {
                    if !completed.contains(&(request_id.as_str(), dataset)) {
                        count(&mut by, principal, agreement, time).unfinished_calls += 1;
                    }
                    continue;
                }
            };
            if outcome != Outcome::Complete && bytes == 0 && rows == 0 {
                continue;
            }
            let entry = count(&mut by, principal, agreement, time);
            entry.calls += 1;
            entry.rows += rows;
            entry.bytes += bytes;
        }
    }
    by.into_values().collect()
}

/// Whether `record` matches an export query: a record of a statement matches a dataset or an
/// agreement any of its reads names.
pub fn matches(
    record: &Record,
    dataset: Option<&str>,
    principal: Option<&str>,
    agreement: Option<&str>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
) -> bool {
    let datasets = record.datasets();
    let time = record.time();
    dataset.is_none_or(|x| datasets.iter().any(|(d, _)| *d == x))
        && principal.is_none_or(|x| record.principal() == Some(x))
        && agreement.is_none_or(|x| datasets.iter().any(|(_, a)| *a == x))
        && since.is_none_or(|s| time >= s)
        && until.is_none_or(|u| time < u)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intent(request_id: &str, time: &str) -> Record {
        Record::Intent {
            request_id: request_id.into(),
            time: time.parse().unwrap(),
            key_id: "k".into(),
            principal: "acme".into(),
            agreement: "ag".into(),
            dataset: "enterprises".into(),
            dataset_version: None,
            operation: "rows".into(),
            columns: vec![],
            filter: None,
            masks: BTreeMap::new(),
            client: "127.0.0.1".into(),
            user_agent: None,
            statement: None,
        }
    }

    fn completion(request_id: &str, time: &str, rows: u64, bytes: u64, outcome: Outcome) -> Record {
        Record::Completion {
            request_id: request_id.into(),
            intent_seq: 0,
            time: time.parse().unwrap(),
            principal: "acme".into(),
            agreement: "ag".into(),
            dataset: "enterprises".into(),
            status: 200,
            rows,
            bytes,
            duration_ms: 1,
            outcome,
        }
    }

    #[test]
    fn trace_counts_served_partial_and_unfinished_calls() {
        let records = vec![
            intent("a", "2026-01-01T00:00:00Z"),
            completion("a", "2026-01-01T00:00:01Z", 10, 100, Outcome::Complete),
            intent("b", "2026-01-02T00:00:00Z"),
            completion("b", "2026-01-02T00:00:01Z", 3, 30, Outcome::Aborted),
            intent("c", "2026-01-03T00:00:00Z"),
            completion("c", "2026-01-03T00:00:01Z", 0, 0, Outcome::Failed),
            // The gateway died while serving this one.
            intent("d", "2026-01-04T00:00:00Z"),
        ];
        let trace = trace(&records, "enterprises", None, None);
        assert_eq!(trace.len(), 1);
        let r = &trace[0];
        assert_eq!((r.calls, r.unfinished_calls, r.rows, r.bytes), (2, 1, 13, 130));
        assert_eq!(r.last_access, "2026-01-04T00:00:00Z".parse::<DateTime<Utc>>().unwrap());
        let early = super::trace(&records, "enterprises", None, Some("2026-01-02T00:00:00Z".parse().unwrap()));
        assert_eq!((early[0].calls, early[0].unfinished_calls), (1, 0));
    }

    fn read(dataset: &str, agreement: &str) -> Read {
        Read {
            dataset: dataset.into(),
            agreement: agreement.into(),
            dataset_version: None,
            columns: vec!["uscc".into()],
            filter: None,
            masks: BTreeMap::new(),
        }
    }

    fn statement_intent(request_id: &str, time: &str, reads: Vec<Read>) -> Record {
        Record::StatementIntent {
            request_id: request_id.into(),
            time: time.parse().unwrap(),
            key_id: "k".into(),
            principal: "acme".into(),
            statement: "SELECT ...".into(),
            reads,
            client: "127.0.0.1".into(),
            user_agent: None,
        }
    }

    fn statement_completion(request_id: &str, time: &str, reads: Vec<(&str, &str, u64)>, bytes: u64) -> Record {
        Record::StatementCompletion {
            request_id: request_id.into(),
            intent_seq: 0,
            time: time.parse().unwrap(),
            principal: "acme".into(),
            status: 200,
            rows: 1,
            bytes,
            duration_ms: 1,
            outcome: Outcome::Complete,
            reads: reads
                .into_iter()
                .map(|(d, a, rows)| ReadRows { dataset: d.into(), agreement: a.into(), rows })
                .collect(),
        }
    }

    #[test]
    fn a_statement_counts_once_per_agreement_it_read_a_dataset_under() {
        let records = vec![
            // A self-join of one dataset and a read of another: one call on each.
            statement_intent("s", "2026-01-01T00:00:00Z", vec![read("e", "ag"), read("e", "ag"), read("f", "ag2")]),
            statement_completion(
                "s",
                "2026-01-01T00:00:01Z",
                vec![("e", "ag", 5), ("e", "ag", 7), ("f", "ag2", 2)],
                90,
            ),
            // The gateway died while answering this one.
            statement_intent("t", "2026-01-02T00:00:00Z", vec![read("e", "ag")]),
        ];
        let e = trace(&records, "e", None, None);
        assert_eq!(e.len(), 1);
        assert_eq!((e[0].calls, e[0].unfinished_calls, e[0].rows, e[0].bytes), (1, 1, 12, 90));
        let f = trace(&records, "f", None, None);
        assert_eq!((f[0].agreement.as_str(), f[0].calls, f[0].unfinished_calls, f[0].rows), ("ag2", 1, 0, 2));
        assert!(trace(&records, "g", None, None).is_empty());
        // Found by either dataset or agreement; a dataset it did not read does not find it.
        assert!(matches(&records[1], Some("f"), Some("acme"), Some("ag"), None, None));
        assert!(matches(&records[0], Some("e"), None, Some("ag2"), None, None));
        assert!(!matches(&records[0], Some("g"), None, None, None, None));
        assert!(!matches(&records[0], None, Some("other"), None, None, None));
    }

    #[test]
    fn a_statement_takes_no_read_its_intent_does_not_name() {
        let statement = Statement::new("SELECT 1");
        statement.add(read("e", "ag"), Arc::new(AtomicU64::new(3))).unwrap();
        assert_eq!(statement.seal(), vec![read("e", "ag")]);
        // The same read again (a scan run again) counts into the named one.
        statement.add(read("e", "ag"), Arc::new(AtomicU64::new(4))).unwrap();
        assert_eq!(statement.rows(), vec![ReadRows { dataset: "e".into(), agreement: "ag".into(), rows: 7 }]);
        let unnamed = statement.add(read("f", "ag"), Arc::new(AtomicU64::new(1))).unwrap_err();
        assert_eq!(unnamed.code, "audit_unavailable");
    }
}
