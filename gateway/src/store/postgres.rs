//! The store on PostgreSQL, for several gateway instances sharing one state.
//!
//! The schema is the SQLite store's, version for version, in PostgreSQL's dialect, followed by
//! the audit log's tables (the embedded audit log is segment files, not SQLite). The applied
//! version is kept in `kaifang_schema`, and [`migrate`] applies the versions under an advisory
//! lock so instances starting together apply each one once: every table of the database, the
//! store's and the audit log's, is made there and nowhere else, because PostgreSQL's
//! `CREATE TABLE IF NOT EXISTS` run by several sessions at once can fail on its catalog's unique
//! indexes. Connections come from a pool (r2d2).
//!
//! Every change is announced with `NOTIFY kaifang_changes`, and a change to keys, principals or
//! agreements also counts itself in `kaifang_changes`, both in its own transaction. The key
//! cache reads the count for every keyed request (as it reads SQLite's `data_version`; the
//! requests that ask at once share a read), so a revoked key or a changed agreement holds on
//! every instance from its very next request; the notification ([`listen`]) reloads the
//! catalog and cuts answers in flight, within moments of the commit. (The count is the one
//! table this schema has beyond SQLite's, which keeps its own count in `data_version`.)

use std::time::Duration;

use chrono::{DateTime, Utc};
use policy::{Agreement, AgreementStatus, Application, Objection, Principal, Role};
use postgres::fallible_iterator::FallibleIterator;
use postgres::{GenericClient, NoTls};
use r2d2_postgres::PostgresConnectionManager;

use super::{
    EntryRecord, Feedback, KeyRecord, Notification, Report, Store, StoreError, StoreResult, TrafficFigure, TrafficRow,
    Usage, Withdrawal,
};

/// The notification channel changes are announced on.
pub const CHANNEL: &str = "kaifang_changes";

/// Schema versions, in order: 1 to 4 are the SQLite store's, 5 the audit log's. Never edit one
/// that has shipped; add the next.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE principals (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    department TEXT,
    declared BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    principal TEXT NOT NULL REFERENCES principals(id),
    secret_sha256 BYTEA NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    revoked_at TIMESTAMPTZ
);
CREATE TABLE agreements (
    id TEXT PRIMARY KEY,
    principal TEXT NOT NULL REFERENCES principals(id),
    status TEXT NOT NULL,
    terms TEXT NOT NULL,
    declared BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX agreements_by_principal ON agreements(principal);
CREATE TABLE quota_usage (
    agreement TEXT NOT NULL,
    day TEXT NOT NULL,
    requests BIGINT NOT NULL,
    rows BIGINT NOT NULL,
    bytes BIGINT NOT NULL,
    PRIMARY KEY (agreement, day)
);
"#,
    r#"
CREATE TABLE reports (
    id TEXT PRIMARY KEY,
    received_at TIMESTAMPTZ NOT NULL,
    dataset TEXT,
    description TEXT NOT NULL,
    contact TEXT,
    principal TEXT
);
CREATE INDEX reports_by_time ON reports(received_at);
"#,
    r#"
CREATE TABLE feedback (
    id TEXT PRIMARY KEY,
    agreement TEXT NOT NULL REFERENCES agreements(id),
    principal TEXT NOT NULL,
    received_at TIMESTAMPTZ NOT NULL,
    usage TEXT NOT NULL
);
CREATE INDEX feedback_by_agreement ON feedback(agreement, received_at);
"#,
    r#"
CREATE TABLE catalog_drafts (id TEXT PRIMARY KEY, record TEXT NOT NULL);
CREATE TABLE catalog_published (id TEXT PRIMARY KEY, record TEXT NOT NULL);
CREATE TABLE withdrawals (
    seq BIGSERIAL PRIMARY KEY,
    dataset TEXT NOT NULL,
    in_force BOOLEAN NOT NULL,
    record TEXT NOT NULL
);
CREATE UNIQUE INDEX withdrawals_in_force ON withdrawals(dataset) WHERE in_force;
CREATE TABLE applications (id TEXT PRIMARY KEY, submitted_at TIMESTAMPTZ NOT NULL, record TEXT NOT NULL);
CREATE TABLE objections (id TEXT PRIMARY KEY, filed_at TIMESTAMPTZ NOT NULL, record TEXT NOT NULL);
CREATE TABLE notifications (
    id TEXT PRIMARY KEY,
    seq BIGSERIAL,
    pending BOOLEAN NOT NULL,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX notifications_pending ON notifications(pending, next_attempt_at);
CREATE TABLE kaifang_changes (count BIGINT NOT NULL);
INSERT INTO kaifang_changes (count) VALUES (0);
"#,
    // The audit log (`crate::audit::postgres`): the records, and per instance the last record
    // removed by retention, which its chain's verification starts from. `IF NOT EXISTS` for
    // databases whose audit log made these tables itself, before they were a version here; under
    // the migration lock it is safe.
    r#"
CREATE TABLE IF NOT EXISTS audit_records (
    instance TEXT NOT NULL,
    seq BIGINT NOT NULL,
    time TIMESTAMPTZ NOT NULL,
    line TEXT NOT NULL,
    PRIMARY KEY (instance, seq)
);
CREATE TABLE IF NOT EXISTS audit_anchors (
    instance TEXT PRIMARY KEY,
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL
);
"#,
    // The gateway's own counters by hour and instance, for the operation report.
    r#"
CREATE TABLE traffic (
    hour TIMESTAMPTZ NOT NULL,
    instance TEXT NOT NULL,
    series TEXT NOT NULL,
    labels TEXT NOT NULL,
    value DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (hour, instance, series, labels)
);
"#,
];

type Pool = r2d2::Pool<PostgresConnectionManager<NoTls>>;

/// The PostgreSQL store.
pub struct PgStore {
    /// Always there but while the store is dropped ([`Drop`]).
    pool: Option<Pool>,
}

impl Drop for PgStore {
    /// A pooled connection closes with a blocking call, which panics (and, in a destructor,
    /// aborts the process) on a thread that runs async tasks, where the last reference to the
    /// store goes when the runtime shuts down: the pool is let go on a thread of its own.
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                let _ = std::thread::spawn(move || drop(pool)).join();
            }
        }
    }
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> StoreError {
        StoreError::Backend(described(&e))
    }
}

/// A PostgreSQL error with the server's own message, which `Display` leaves out ("db error").
pub fn described(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

fn json<T: serde::Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(backend)
}

fn parse<T: serde::de::DeserializeOwned>(text: &str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(backend)
}

fn name_of<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

fn parse_name<T: serde::de::DeserializeOwned>(text: &str) -> StoreResult<T> {
    serde_json::from_value(serde_json::Value::String(text.to_owned())).map_err(backend)
}

/// Announces a change to every instance; `what` says what changed (`keys`, `catalog`,
/// `agreement:<id>:<status>`, `objections`, `workflow`).
fn announce(c: &mut impl GenericClient, what: &str) -> StoreResult<()> {
    // The count is what the key cache checks ([`Store::change_counter`]): only what it holds
    // moves it.
    if what == "keys" || what.starts_with("agreement:") {
        c.execute("UPDATE kaifang_changes SET count = count + 1", &[])?;
    }
    c.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &what])?;
    Ok(())
}

impl PgStore {
    /// Connects to `url` (a `postgres://` URL) and brings the schema up to date.
    pub fn open(url: &str) -> StoreResult<PgStore> {
        let config: postgres::Config = url.parse().map_err(|e| backend(format!("`{url}`: {e}")))?;
        let manager = PostgresConnectionManager::new(config, NoTls);
        // Connections are opened as needed (one kept idle): several instances must stay well inside
        // the server's `max_connections`. While the server is away a call waits this long for a
        // connection, then fails (503 on conditional data): not much longer than the audit log's
        // own connection timeout.
        let pool = r2d2::Pool::builder()
            .max_size(8)
            .min_idle(Some(1))
            .connection_timeout(Duration::from_secs(2))
            .build(manager)
            .map_err(|e| backend(format!("cannot connect to PostgreSQL: {e}")))?;
        let store = PgStore { pool: Some(pool) };
        migrate(&mut *store.conn()?)?;
        Ok(store)
    }

    fn conn(&self) -> StoreResult<r2d2::PooledConnection<PostgresConnectionManager<NoTls>>> {
        let pool = self.pool.as_ref().expect("the pool is there until the store is dropped");
        pool.get().map_err(|e| backend(format!("no PostgreSQL connection: {e}")))
    }

    fn documents<T: serde::de::DeserializeOwned>(
        &self,
        sql: &str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> StoreResult<Vec<T>> {
        let rows = self.conn()?.query(sql, params)?;
        rows.iter().map(|row| parse(row.get::<_, &str>(0))).collect()
    }

    fn one<T: serde::de::DeserializeOwned>(
        &self,
        sql: &str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> StoreResult<Option<T>> {
        Ok(self.documents(sql, params)?.pop())
    }

    /// Runs `f` in a transaction that ends with announcing `what`.
    fn changing<T>(
        &self,
        what: &str,
        f: impl FnOnce(&mut postgres::Transaction<'_>) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        let out = f(&mut tx)?;
        announce(&mut tx, what)?;
        tx.commit()?;
        Ok(out)
    }
}

/// Brings the database's schema, the store's and the audit log's tables, up to this kaifang's
/// version, in one transaction under an advisory lock: instances starting together wait for one
/// another here, and each version is applied once. The store and the audit log both open through
/// it, whichever comes first.
pub fn migrate(client: &mut postgres::Client) -> StoreResult<()> {
    let mut tx = client.transaction()?;
    // One instance at a time; the lock ends with the transaction.
    tx.execute("SELECT pg_advisory_xact_lock(7201)", &[])?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS kaifang_schema (version INTEGER NOT NULL)")?;
    let current: i64 = match tx.query_opt("SELECT version FROM kaifang_schema", &[])? {
        Some(row) => i64::from(row.get::<_, i32>(0)),
        None => {
            tx.execute("INSERT INTO kaifang_schema (version) VALUES (0)", &[])?;
            0
        }
    };
    let current = usize::try_from(current).unwrap_or(usize::MAX);
    if current > MIGRATIONS.len() {
        return Err(backend(format!(
            "the store is at schema version {current}, newer than this kaifang ({}); upgrade kaifang",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        tx.batch_execute(sql)?;
        tx.execute("UPDATE kaifang_schema SET version = $1", &[&((i + 1) as i32)])?;
    }
    tx.commit()?;
    Ok(())
}

fn key_row(row: &postgres::Row) -> StoreResult<KeyRecord> {
    let hash: Vec<u8> = row.get(2);
    Ok(KeyRecord {
        id: row.get(0),
        principal: row.get(1),
        secret_sha256: hash.try_into().map_err(|_| backend("a key hash is 32 bytes"))?,
        created_at: row.get(3),
        revoked_at: row.get(4),
    })
}

fn agreement_row(row: &postgres::Row) -> StoreResult<Agreement> {
    let mut agreement: Agreement = parse(row.get::<_, &str>(1))?;
    agreement.status = parse_name(row.get::<_, &str>(0))?;
    Ok(agreement)
}

fn put_agreement_on(c: &mut impl GenericClient, a: &Agreement, declared: bool) -> StoreResult<()> {
    c.execute(
        "INSERT INTO agreements (id, principal, status, terms, declared) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (id) DO UPDATE SET principal = excluded.principal, status = excluded.status,
             terms = excluded.terms, declared = excluded.declared",
        &[&a.id, &a.principal, &name_of(&a.status), &json(a)?, &declared],
    )?;
    Ok(())
}

const KEY_COLUMNS: &str = "id, principal, secret_sha256, created_at, revoked_at";

impl Store for PgStore {
    fn change_counter(&self) -> StoreResult<i64> {
        Ok(self.conn()?.query_one("SELECT count FROM kaifang_changes", &[])?.get(0))
    }

    fn put_principal(&self, p: &Principal, declared: bool) -> StoreResult<()> {
        self.changing("keys", |tx| {
            tx.execute(
                "INSERT INTO principals (id, name, role, department, declared) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name, role = excluded.role,
                     department = excluded.department, declared = excluded.declared",
                &[&p.id, &p.name, &name_of(&p.role), &p.department, &declared],
            )?;
            Ok(())
        })
    }

    fn principal(&self, id: &str) -> StoreResult<Option<Principal>> {
        let row = self.conn()?.query_opt("SELECT id, name, role, department FROM principals WHERE id = $1", &[&id])?;
        row.map(|row| {
            Ok(Principal {
                id: row.get(0),
                name: row.get(1),
                role: parse_name::<Role>(row.get::<_, &str>(2))?,
                department: row.get(3),
            })
        })
        .transpose()
    }

    fn insert_key(&self, key: &KeyRecord) -> StoreResult<()> {
        if self.principal(&key.principal)?.is_none() {
            return Err(StoreError::NotFound(format!("no principal `{}`", key.principal)));
        }
        self.changing("keys", |tx| {
            tx.execute(
                "INSERT INTO api_keys (id, principal, secret_sha256, created_at) VALUES ($1, $2, $3, $4)",
                &[&key.id, &key.principal, &key.secret_sha256.as_slice(), &key.created_at],
            )?;
            Ok(())
        })
    }

    fn key(&self, id: &str) -> StoreResult<Option<KeyRecord>> {
        let row = self.conn()?.query_opt(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1"), &[&id])?;
        row.as_ref().map(key_row).transpose()
    }

    fn keys(&self) -> StoreResult<Vec<KeyRecord>> {
        let rows = self.conn()?.query(&format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at, id"), &[])?;
        rows.iter().map(key_row).collect()
    }

    fn revoke_key(&self, id: &str, at: DateTime<Utc>) -> StoreResult<bool> {
        let changed = self.changing("keys", |tx| {
            Ok(tx.execute("UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL", &[&id, &at])?)
        })?;
        if changed == 0 && self.key(id)?.is_none() {
            return Err(StoreError::NotFound(format!("no key `{id}`")));
        }
        Ok(changed == 1)
    }

    fn put_agreement(&self, a: &Agreement, declared: bool) -> StoreResult<()> {
        if self.principal(&a.principal)?.is_none() {
            return Err(StoreError::NotFound(format!("no principal `{}`", a.principal)));
        }
        let what = format!("agreement:{}:{}", a.id, name_of(&a.status));
        self.changing(&what, |tx| put_agreement_on(tx, a, declared))
    }

    fn agreement(&self, id: &str) -> StoreResult<Option<Agreement>> {
        let row = self.conn()?.query_opt("SELECT status, terms FROM agreements WHERE id = $1", &[&id])?;
        row.as_ref().map(agreement_row).transpose()
    }

    fn agreements_of(&self, principal: &str) -> StoreResult<Vec<Agreement>> {
        let rows = self
            .conn()?
            .query("SELECT status, terms FROM agreements WHERE principal = $1 ORDER BY id", &[&principal])?;
        rows.iter().map(agreement_row).collect()
    }

    fn agreements(&self) -> StoreResult<Vec<Agreement>> {
        let rows = self.conn()?.query("SELECT status, terms FROM agreements ORDER BY id", &[])?;
        rows.iter().map(agreement_row).collect()
    }

    fn set_agreement_status(&self, id: &str, status: AgreementStatus) -> StoreResult<()> {
        let what = format!("agreement:{id}:{}", name_of(&status));
        let changed = self.changing(&what, |tx| {
            Ok(tx.execute("UPDATE agreements SET status = $2 WHERE id = $1", &[&id, &name_of(&status)])?)
        })?;
        if changed == 0 {
            return Err(StoreError::NotFound(format!("no agreement `{id}`")));
        }
        Ok(())
    }

    fn usage(&self, agreement: &str, day: &str) -> StoreResult<Usage> {
        let row = self.conn()?.query_opt(
            "SELECT requests, rows, bytes FROM quota_usage WHERE agreement = $1 AND day = $2",
            &[&agreement, &day],
        )?;
        Ok(row
            .map(|r| Usage {
                requests: r.get::<_, i64>(0) as u64,
                rows: r.get::<_, i64>(1) as u64,
                bytes: r.get::<_, i64>(2) as u64,
            })
            .unwrap_or_default())
    }

    fn add_traffic(&self, hour: DateTime<Utc>, instance: &str, figures: &[TrafficFigure]) -> StoreResult<()> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        for f in figures {
            tx.execute(
                "INSERT INTO traffic (hour, instance, series, labels, value) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (hour, instance, series, labels) DO UPDATE SET value = traffic.value + excluded.value",
                &[&hour, &instance, &f.series, &f.labels, &f.value],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn traffic(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> StoreResult<Vec<TrafficRow>> {
        let rows = self.conn()?.query(
            "SELECT hour, instance, series, labels, value FROM traffic WHERE hour >= $1 AND hour < $2
             ORDER BY hour, instance, series, labels",
            &[&from, &to],
        )?;
        Ok(rows
            .iter()
            .map(|r| TrafficRow {
                hour: r.get(0),
                instance: r.get(1),
                figure: TrafficFigure { series: r.get(2), labels: r.get(3), value: r.get(4) },
            })
            .collect())
    }

    fn save_usage(&self, agreement: &str, day: &str, u: Usage) -> StoreResult<()> {
        // Several instances write the same day: the largest count each has seen wins, so a
        // restarted instance reads back at least what it had counted.
        self.conn()?.execute(
            "INSERT INTO quota_usage (agreement, day, requests, rows, bytes) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (agreement, day) DO UPDATE SET
                 requests = GREATEST(quota_usage.requests, excluded.requests),
                 rows = GREATEST(quota_usage.rows, excluded.rows),
                 bytes = GREATEST(quota_usage.bytes, excluded.bytes)",
            &[&agreement, &day, &(u.requests as i64), &(u.rows as i64), &(u.bytes as i64)],
        )?;
        Ok(())
    }

    fn writable(&self) -> StoreResult<()> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        tx.execute("SELECT pg_current_xact_id()", &[])?;
        tx.rollback()?;
        Ok(())
    }

    fn insert_report(&self, r: &Report) -> StoreResult<()> {
        self.conn()?.execute(
            "INSERT INTO reports (id, received_at, dataset, description, contact, principal) VALUES ($1, $2, $3, $4, $5, $6)",
            &[&r.id, &r.received_at, &r.dataset, &r.description, &r.contact, &r.principal],
        )?;
        Ok(())
    }

    fn reports(&self) -> StoreResult<Vec<Report>> {
        let rows = self.conn()?.query(
            "SELECT id, received_at, dataset, description, contact, principal FROM reports ORDER BY received_at DESC, id DESC",
            &[],
        )?;
        Ok(rows
            .iter()
            .map(|row| Report {
                id: row.get(0),
                received_at: row.get(1),
                dataset: row.get(2),
                description: row.get(3),
                contact: row.get(4),
                principal: row.get(5),
            })
            .collect())
    }

    fn insert_feedback(&self, f: &Feedback) -> StoreResult<()> {
        self.conn()?.execute(
            "INSERT INTO feedback (id, agreement, principal, received_at, usage) VALUES ($1, $2, $3, $4, $5)",
            &[&f.id, &f.agreement, &f.principal, &f.received_at, &f.usage],
        )?;
        Ok(())
    }

    fn feedback(&self, agreement: &str) -> StoreResult<Vec<Feedback>> {
        let rows = self.conn()?.query(
            "SELECT id, agreement, principal, received_at, usage FROM feedback WHERE agreement = $1 ORDER BY received_at, id",
            &[&agreement],
        )?;
        Ok(rows
            .iter()
            .map(|row| Feedback {
                id: row.get(0),
                agreement: row.get(1),
                principal: row.get(2),
                received_at: row.get(3),
                usage: row.get(4),
            })
            .collect())
    }

    fn put_draft(&self, draft: &EntryRecord) -> StoreResult<u64> {
        self.changing("catalog", |tx| {
            let id = draft.entry.id.as_str();
            // Two writers of one id take turns, so that each write is a revision of its own.
            tx.execute("SELECT pg_advisory_xact_lock(hashtext('catalog_drafts'), hashtext($1))", &[&id])?;
            let before = tx.query_opt("SELECT record FROM catalog_drafts WHERE id = $1", &[&id])?;
            let before = match before {
                Some(row) => parse::<EntryRecord>(row.get::<_, &str>(0))?.version,
                None => 0,
            };
            let mut record = draft.clone();
            record.version = before + 1;
            tx.execute(
                "INSERT INTO catalog_drafts (id, record) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET record = excluded.record",
                &[&id, &json(&record)?],
            )?;
            Ok(record.version)
        })
    }

    fn draft(&self, id: &str) -> StoreResult<Option<EntryRecord>> {
        self.one("SELECT record FROM catalog_drafts WHERE id = $1", &[&id])
    }

    fn drafts(&self) -> StoreResult<Vec<EntryRecord>> {
        self.documents("SELECT record FROM catalog_drafts ORDER BY id", &[])
    }

    fn publish(&self, id: &str, by: &str, at: DateTime<Utc>, version: u64, reviewed: u64) -> StoreResult<EntryRecord> {
        self.changing("catalog", |tx| {
            let row = tx.query_opt("SELECT record FROM catalog_drafts WHERE id = $1 FOR UPDATE", &[&id])?;
            let Some(row) = row else {
                return Err(StoreError::NotFound(format!("no draft of `{id}` to publish")));
            };
            let mut record: EntryRecord = parse(row.get::<_, &str>(0))?;
            if record.version != reviewed {
                return Err(StoreError::Conflict(format!(
                    "the draft of `{id}` is at revision {}, not {reviewed}: it changed after it was reviewed",
                    record.version
                )));
            }
            record.entry.last_updated = at;
            record.by = by.to_owned();
            record.at = at;
            record.version = version;
            tx.execute(
                "INSERT INTO catalog_published (id, record) VALUES ($1, $2)
                 ON CONFLICT (id) DO UPDATE SET record = excluded.record",
                &[&id, &json(&record)?],
            )?;
            tx.execute("DELETE FROM catalog_drafts WHERE id = $1", &[&id])?;
            Ok(record)
        })
    }

    fn published(&self) -> StoreResult<Vec<EntryRecord>> {
        self.documents("SELECT record FROM catalog_published ORDER BY id", &[])
    }

    fn withdraw(&self, w: &Withdrawal) -> StoreResult<()> {
        self.changing("catalog", |tx| {
            let inserted = tx.execute(
                "INSERT INTO withdrawals (dataset, in_force, record) VALUES ($1, TRUE, $2)
                 ON CONFLICT (dataset) WHERE in_force DO NOTHING",
                &[&w.dataset, &json(w)?],
            )?;
            if inserted == 0 {
                return Err(StoreError::Conflict(format!("`{}` is already withdrawn", w.dataset)));
            }
            Ok(())
        })
    }

    fn reopen(&self, dataset: &str, by: &str, at: DateTime<Utc>) -> StoreResult<Withdrawal> {
        self.changing("catalog", |tx| {
            let row =
                tx.query_opt("SELECT record FROM withdrawals WHERE dataset = $1 AND in_force FOR UPDATE", &[&dataset])?;
            let Some(row) = row else {
                return Err(StoreError::NotFound(format!("`{dataset}` is not withdrawn")));
            };
            let mut withdrawal: Withdrawal = parse(row.get::<_, &str>(0))?;
            withdrawal.reopened_at = Some(at);
            withdrawal.reopened_by = Some(by.to_owned());
            tx.execute(
                "UPDATE withdrawals SET in_force = FALSE, record = $2 WHERE dataset = $1 AND in_force",
                &[&dataset, &json(&withdrawal)?],
            )?;
            Ok(withdrawal)
        })
    }

    fn withdrawals(&self) -> StoreResult<Vec<Withdrawal>> {
        self.documents("SELECT record FROM withdrawals WHERE in_force ORDER BY seq", &[])
    }

    fn withdrawal_history(&self) -> StoreResult<Vec<Withdrawal>> {
        self.documents("SELECT record FROM withdrawals ORDER BY seq", &[])
    }

    fn put_application(&self, a: &Application) -> StoreResult<()> {
        self.conn()?.execute(
            "INSERT INTO applications (id, submitted_at, record) VALUES ($1, $2, $3)
             ON CONFLICT (id) DO UPDATE SET record = excluded.record",
            &[&a.id, &a.submitted_at, &json(a)?],
        )?;
        Ok(())
    }

    fn decide_application(
        &self,
        before: &Application,
        after: &Application,
        agreement: Option<&Agreement>,
    ) -> StoreResult<()> {
        let what = match agreement {
            Some(ag) => format!("agreement:{}:{}", ag.id, name_of(&ag.status)),
            None => "workflow".to_owned(),
        };
        self.changing(&what, |tx| {
            let changed = tx.execute(
                "UPDATE applications SET record = $3 WHERE id = $1 AND record = $2",
                &[&after.id, &json(before)?, &json(after)?],
            )?;
            if changed == 0 {
                return Err(StoreError::Conflict(format!("application `{}` was decided meanwhile", after.id)));
            }
            if let Some(agreement) = agreement {
                put_agreement_on(tx, agreement, false)?;
            }
            Ok(())
        })
    }

    fn replace_application(&self, old: &Application, new: &Application) -> StoreResult<bool> {
        let changed = self.conn()?.execute(
            "UPDATE applications SET record = $3 WHERE id = $1 AND record = $2",
            &[&new.id, &json(old)?, &json(new)?],
        )?;
        Ok(changed == 1)
    }

    fn application(&self, id: &str) -> StoreResult<Option<Application>> {
        self.one("SELECT record FROM applications WHERE id = $1", &[&id])
    }

    fn applications(&self) -> StoreResult<Vec<Application>> {
        self.documents("SELECT record FROM applications ORDER BY submitted_at, id", &[])
    }

    fn put_objection(&self, o: &Objection) -> StoreResult<()> {
        self.changing("objections", |tx| {
            tx.execute(
                "INSERT INTO objections (id, filed_at, record) VALUES ($1, $2, $3)
                 ON CONFLICT (id) DO UPDATE SET record = excluded.record",
                &[&o.id, &o.filed_at, &json(o)?],
            )?;
            Ok(())
        })
    }

    fn objection(&self, id: &str) -> StoreResult<Option<Objection>> {
        self.one("SELECT record FROM objections WHERE id = $1", &[&id])
    }

    fn objections(&self) -> StoreResult<Vec<Objection>> {
        self.documents("SELECT record FROM objections ORDER BY filed_at, id", &[])
    }

    fn put_notification(&self, n: &Notification) -> StoreResult<()> {
        let pending = n.delivered_at.is_none() && !n.abandoned;
        self.conn()?.execute(
            "INSERT INTO notifications (id, pending, next_attempt_at, record) VALUES ($1, $2, $3, $4)
             ON CONFLICT (id) DO UPDATE SET pending = excluded.pending, next_attempt_at = excluded.next_attempt_at,
                 record = excluded.record",
            &[&n.id, &pending, &n.next_attempt_at, &json(n)?],
        )?;
        Ok(())
    }

    /// Claims what is due for this instance: each due notification's next attempt moves a
    /// minute on, in the same statement, so the other instances' senders skip it (a sender that
    /// dies with it leaves it due again a minute later).
    fn due_notifications(&self, now: DateTime<Utc>) -> StoreResult<Vec<Notification>> {
        let lease = now + chrono::Duration::seconds(60);
        let rows = self.conn()?.query(
            "UPDATE notifications SET next_attempt_at = $2 WHERE id IN (
                 SELECT id FROM notifications WHERE pending AND next_attempt_at <= $1
                 ORDER BY seq LIMIT 100 FOR UPDATE SKIP LOCKED)
             RETURNING seq, record",
            &[&now, &lease],
        )?;
        let mut claimed: Vec<(i64, Notification)> =
            rows.iter().map(|row| Ok((row.get(0), parse(row.get::<_, &str>(1))?))).collect::<StoreResult<_>>()?;
        claimed.sort_by_key(|(seq, _)| *seq);
        Ok(claimed.into_iter().map(|(_, n)| n).collect())
    }

    fn notifications(&self) -> StoreResult<Vec<Notification>> {
        self.documents("SELECT record FROM notifications ORDER BY seq", &[])
    }
}

/// What a notification on [`CHANNEL`] says changed.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    /// Keys or principals.
    Keys,
    /// Publications, withdrawals, reopenings.
    Catalog,
    /// An objection filed or resolved.
    Objections,
    /// An agreement, now in this status.
    Agreement { id: String, active: bool },
    /// Anything else the caches do not hold.
    Other,
    /// The listener (re)connected: what happened meanwhile is unknown.
    Resync,
}

impl Change {
    fn parse(payload: &str) -> Change {
        match payload.split(':').collect::<Vec<_>>().as_slice() {
            ["keys"] => Change::Keys,
            ["catalog"] => Change::Catalog,
            ["objections"] => Change::Objections,
            ["agreement", id, status] => Change::Agreement { id: (*id).to_owned(), active: *status == "active" },
            _ => Change::Other,
        }
    }
}

/// Listens for changes announced by any instance, on a thread of its own with its own
/// connection, and hands each to `apply`. Reconnects with a pause after a failure, and then
/// reports [`Change::Resync`], since notifications sent meanwhile were lost.
pub fn listen(url: &str, apply: impl Fn(Change) + Send + 'static) -> Result<(), String> {
    let config: postgres::Config = url.parse().map_err(|e| format!("`{url}`: {e}"))?;
    std::thread::Builder::new()
        .name("store-listener".into())
        .spawn(move || {
            let mut first = true;
            loop {
                let result = (|| -> Result<(), postgres::Error> {
                    let mut client = config.connect(NoTls)?;
                    client.batch_execute(&format!("LISTEN {CHANNEL}"))?;
                    if !first {
                        apply(Change::Resync);
                    }
                    first = false;
                    let mut notifications = client.notifications();
                    let mut iter = notifications.blocking_iter();
                    while let Some(n) = iter.next()? {
                        apply(Change::parse(n.payload()));
                    }
                    Ok(())
                })();
                if let Err(e) = result {
                    tracing::warn!(error = %e, "store change listener lost its connection; reconnecting");
                }
                first = false;
                std::thread::sleep(Duration::from_millis(500));
            }
        })
        .map(|_| ())
        .map_err(|e| format!("cannot start the store listener: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_payloads_parse() {
        assert_eq!(Change::parse("keys"), Change::Keys);
        assert_eq!(Change::parse("catalog"), Change::Catalog);
        assert_eq!(Change::parse("objections"), Change::Objections);
        assert_eq!(Change::parse("agreement:ag-1:revoked"), Change::Agreement { id: "ag-1".into(), active: false });
        assert_eq!(Change::parse("agreement:ag-1:active"), Change::Agreement { id: "ag-1".into(), active: true });
        assert_eq!(Change::parse("nonsense:x"), Change::Other);
    }
}
