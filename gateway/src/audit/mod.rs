//! The audit log of conditional data: a durable, tamper-evident record of every call.
//!
//! Every call on a conditionally open dataset leaves records: a refused call one `refusal`
//! record; a served call an `intent` record, durable (fsync'd) before the first byte of data
//! is sent, and a `completion` record (rows, bytes, outcome) that is durable before the client
//! sees the end of the response, so a response received in full always has both. Records are
//! chained: each carries the SHA-256 of the one before, so an edited, deleted, inserted or
//! reordered record breaks the chain where it happened ([`segments::verify`]).
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
        /// For a table scan of a SQL statement: the statement.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        statement: Option<String>,
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
            | Record::Unserved { time, .. }
            | Record::Checkpoint { time, .. } => *time,
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
    pub statement: Option<String>,
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
        let intent_seq = self.sink.append(record).await.map_err(unavailable)?;
        Ok(CallGuard {
            audit: self.clone(),
            call,
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
        statement: call.statement.clone(),
    }
}

/// Records the completion of a call exactly once: explicitly with [`CallGuard::complete`], or,
/// if dropped first (the client went away), as aborted.
pub struct CallGuard {
    audit: Audit,
    call: CallInfo,
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
        completion_record(&self.call, self.intent_seq, duration_ms, rows, bytes, status, outcome)
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
/// call whose intent was recorded but whose completion never was.
pub fn trace<'a>(
    records: impl IntoIterator<Item = &'a Record>,
    dataset: &str,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
) -> Vec<Recipient> {
    let records: Vec<&Record> = records.into_iter().collect();
    // By request and dataset: the scans of one SQL statement share its request id.
    let completed: std::collections::HashSet<(&str, &str)> = records
        .iter()
        .filter_map(|r| match r {
            Record::Completion { request_id, dataset, .. } => Some((request_id.as_str(), dataset.as_str())),
            _ => None,
        })
        .collect();
    let in_window = |d: &str, time: &DateTime<Utc>| {
        d == dataset && since.is_none_or(|s| *time >= s) && until.is_none_or(|u| *time < u)
    };
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
        match record {
            Record::Completion { time, principal, agreement, dataset: d, rows, bytes, outcome, .. } => {
                if !in_window(d, time) || (*outcome != Outcome::Complete && *bytes == 0 && *rows == 0) {
                    continue;
                }
                let entry = count(&mut by, principal, agreement, *time);
                entry.calls += 1;
                entry.rows += rows;
                entry.bytes += bytes;
            }
            Record::Intent { time, principal, agreement, dataset: d, request_id, .. }
                if in_window(d, time) && !completed.contains(&(request_id.as_str(), d.as_str())) =>
            {
                count(&mut by, principal, agreement, *time).unfinished_calls += 1;
            }
            _ => {}
        }
    }
    by.into_values().collect()
}

/// Whether `record` matches an export query.
pub fn matches(
    record: &Record,
    dataset: Option<&str>,
    principal: Option<&str>,
    agreement: Option<&str>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
) -> bool {
    let (d, p, a) = match record {
        Record::Intent { dataset, principal, agreement, .. }
        | Record::Completion { dataset, principal, agreement, .. } => {
            (Some(dataset.as_str()), Some(principal.as_str()), Some(agreement.as_str()))
        }
        Record::Unserved { dataset, principal, .. } => (Some(dataset.as_str()), principal.as_deref(), None),
        Record::Checkpoint { .. } => (None, None, None),
    };
    let time = record.time();
    dataset.is_none_or(|x| d == Some(x))
        && principal.is_none_or(|x| p == Some(x))
        && agreement.is_none_or(|x| a == Some(x))
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
}
