//! The state store: principals, API keys, agreements and quota usage.
//!
//! [`Store`] is the interface the gateway uses; [`sqlite::SqliteStore`] is the embedded
//! default (one file, `<data-dir>/kaifang.db`). A networked store implements the same trait.
//! Every method is blocking: callers on the async runtime go through
//! `tokio::task::spawn_blocking`, or through the caches in `auth`, which hit the store only on
//! a miss.

pub mod postgres;
pub mod sqlite;

use chrono::{DateTime, Utc};
use policy::{Agreement, AgreementStatus, Application, Objection, Principal};
use serde::{Deserialize, Serialize};

use crate::config::DatasetConfig;

/// A stored API key: never the secret, only its SHA-256.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct KeyRecord {
    pub id: String,
    pub principal: String,
    #[serde(skip)]
    pub secret_sha256: [u8; 32],
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A report of misuse of public data, filed by anyone, kept for the platform's operators.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Report {
    pub id: String,
    pub received_at: DateTime<Utc>,
    /// The dataset concerned, when the report names one.
    pub dataset: Option<String>,
    pub description: String,
    /// How to reach the reporter; required of anonymous reporters.
    pub contact: Option<String>,
    /// The reporter's principal, when the report came with a key.
    pub principal: Option<String>,
}

/// A holder's account of how it used the data an agreement gave it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Feedback {
    pub id: String,
    pub agreement: String,
    pub principal: String,
    pub received_at: DateTime<Utc>,
    pub usage: String,
}

/// A catalog entry an owner wrote, as a draft waiting for review or as published.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EntryRecord {
    pub entry: DatasetConfig,
    /// The principal that wrote it.
    pub by: String,
    pub at: DateTime<Utc>,
    /// For published entries: the catalog version, one more on every publication; for drafts,
    /// the draft's revision, one more on every write.
    #[serde(default)]
    pub version: u64,
}

/// A dataset withdrawn from service, and when it was reopened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Withdrawal {
    pub dataset: String,
    pub withdrawn_at: DateTime<Utc>,
    pub withdrawn_by: String,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reopened_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reopened_by: Option<String>,
}

/// A webhook call waiting to be delivered, or delivered, or given up on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Notification {
    pub id: String,
    pub url: String,
    /// The JSON body sent.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    pub attempts: u32,
    pub next_attempt_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<DateTime<Utc>>,
    /// Set when retrying stopped without a delivery.
    #[serde(default)]
    pub abandoned: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// One of the gateway's own counters (a series and its labels, as JSON) grown by `value`.
#[derive(Clone, Debug, PartialEq)]
pub struct TrafficFigure {
    pub series: String,
    pub labels: String,
    pub value: f64,
}

/// A counter's growth over one hour on one instance.
#[derive(Clone, Debug, PartialEq)]
pub struct TrafficRow {
    pub hour: DateTime<Utc>,
    pub instance: String,
    pub figure: TrafficFigure,
}

/// Requests, rows and bytes consumed under one agreement on one day.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Usage {
    pub requests: u64,
    pub rows: u64,
    pub bytes: u64,
}

/// Why the store refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("store failure: {0}")]
    Backend(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        StoreError::Backend(e.to_string())
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Where the gateway keeps its state.
pub trait Store: Send + Sync {
    /// A number that changes whenever another process commits a change to what a key lookup
    /// caches (principals, keys, agreements and their status, approvals, which make
    /// agreements), so the key cache is dropped on the next request after a `kaifang keys
    /// revoke` run elsewhere. Other writes (the catalog, which reloads on its own notice;
    /// usage, reports, feedback, applications, objections, rejections, notifications) need
    /// not move it, and on a store where it is read over the network they do not: each move
    /// sends every keyed request of every instance to the store once.
    fn change_counter(&self) -> StoreResult<i64>;
    /// The change counter when it can be read at once, without waiting for a connection or
    /// the network; `None` when reading it might block (the caller then asks on a blocking
    /// thread).
    fn change_counter_now(&self) -> Option<StoreResult<i64>> {
        None
    }

    fn put_principal(&self, principal: &Principal, declared: bool) -> StoreResult<()>;
    fn principal(&self, id: &str) -> StoreResult<Option<Principal>>;

    fn insert_key(&self, key: &KeyRecord) -> StoreResult<()>;
    fn key(&self, id: &str) -> StoreResult<Option<KeyRecord>>;
    fn keys(&self) -> StoreResult<Vec<KeyRecord>>;
    /// Marks a key revoked; false if it was already.
    fn revoke_key(&self, id: &str, at: DateTime<Utc>) -> StoreResult<bool>;

    /// Inserts or replaces an agreement (declared ones are replaced on every start).
    fn put_agreement(&self, agreement: &Agreement, declared: bool) -> StoreResult<()>;
    fn agreement(&self, id: &str) -> StoreResult<Option<Agreement>>;
    fn agreements_of(&self, principal: &str) -> StoreResult<Vec<Agreement>>;
    fn agreements(&self) -> StoreResult<Vec<Agreement>>;
    fn set_agreement_status(&self, id: &str, status: AgreementStatus) -> StoreResult<()>;

    /// Adds `figures` to the traffic counts of `hour` (its first instant) kept for `instance`,
    /// in one transaction.
    fn add_traffic(&self, hour: DateTime<Utc>, instance: &str, figures: &[TrafficFigure]) -> StoreResult<()>;
    /// Every instance's traffic counts of the hours from `from` (included) to `to`.
    fn traffic(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> StoreResult<Vec<TrafficRow>>;

    fn usage(&self, agreement: &str, day: &str) -> StoreResult<Usage>;
    fn save_usage(&self, agreement: &str, day: &str, usage: Usage) -> StoreResult<()>;

    /// Whether the store can take a write now (for readiness).
    fn writable(&self) -> StoreResult<()>;

    fn insert_report(&self, report: &Report) -> StoreResult<()>;
    /// Every report, newest first.
    fn reports(&self) -> StoreResult<Vec<Report>>;

    fn insert_feedback(&self, feedback: &Feedback) -> StoreResult<()>;
    /// The feedback on one agreement, oldest first.
    fn feedback(&self, agreement: &str) -> StoreResult<Vec<Feedback>>;

    /// Writes (or replaces) an owner's draft of a catalog entry, as the next revision of the
    /// draft of that id (1 for a new one), which it returns; `draft.version` is ignored.
    fn put_draft(&self, draft: &EntryRecord) -> StoreResult<u64>;
    fn draft(&self, id: &str) -> StoreResult<Option<EntryRecord>>;
    fn drafts(&self) -> StoreResult<Vec<EntryRecord>>;
    /// Publishes the draft of `id` as `version`, in one transaction: the draft becomes the
    /// published entry and is removed. `NotFound` if there is no draft, `Conflict` if the draft
    /// is no longer at revision `reviewed` (it changed after it was reviewed).
    fn publish(&self, id: &str, by: &str, at: DateTime<Utc>, version: u64, reviewed: u64) -> StoreResult<EntryRecord>;
    /// The published entries written through the platform (declared ones are in the config).
    fn published(&self) -> StoreResult<Vec<EntryRecord>>;

    /// Withdraws a dataset; `Conflict` if it already is.
    fn withdraw(&self, withdrawal: &Withdrawal) -> StoreResult<()>;
    /// Ends the dataset's withdrawal; `NotFound` if it is not withdrawn.
    fn reopen(&self, dataset: &str, by: &str, at: DateTime<Utc>) -> StoreResult<Withdrawal>;
    /// The withdrawals in force now.
    fn withdrawals(&self) -> StoreResult<Vec<Withdrawal>>;
    /// Every withdrawal there has been, reopened ones included, oldest first.
    fn withdrawal_history(&self) -> StoreResult<Vec<Withdrawal>>;

    fn put_application(&self, application: &Application) -> StoreResult<()>;
    /// Replaces the undecided application `before` with the decided `after` and, for an
    /// approval, writes its agreement, in one transaction. `Conflict` (and nothing written) if
    /// the stored application is no longer `before`: a decision made meanwhile wins.
    fn decide_application(
        &self,
        before: &Application,
        after: &Application,
        agreement: Option<&Agreement>,
    ) -> StoreResult<()>;
    /// Replaces `old` with `new` only if it is still stored as `old`; whether it was. Lets one
    /// of several instances win a change they all race for (sending a reminder, say).
    fn replace_application(&self, old: &Application, new: &Application) -> StoreResult<bool>;
    fn application(&self, id: &str) -> StoreResult<Option<Application>>;
    /// Every application, oldest first.
    fn applications(&self) -> StoreResult<Vec<Application>>;

    fn put_objection(&self, objection: &Objection) -> StoreResult<()>;
    fn objection(&self, id: &str) -> StoreResult<Option<Objection>>;
    /// Every objection, oldest first.
    fn objections(&self) -> StoreResult<Vec<Objection>>;

    fn put_notification(&self, notification: &Notification) -> StoreResult<()>;
    /// Undelivered, unabandoned notifications due at `now`, oldest first. A store shared by
    /// several instances hands each due notification to one of them.
    fn due_notifications(&self, now: DateTime<Utc>) -> StoreResult<Vec<Notification>>;
    /// Every notification, oldest first.
    fn notifications(&self) -> StoreResult<Vec<Notification>>;
}
