//! The embedded store on SQLite, in WAL mode so readers never wait for the writer.
//!
//! Migrations are numbered and recorded in `PRAGMA user_version`; each runs in its own
//! transaction on start, so a crash mid-migration leaves the previous version intact.

use std::path::Path;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use policy::{Agreement, AgreementStatus, Application, Objection, Principal, Role};
use rusqlite::{params, Connection, OptionalExtension};

use super::{
    EntryRecord, Feedback, KeyRecord, Notification, Report, Store, StoreError, StoreResult, TrafficFigure, TrafficRow,
    Usage, Withdrawal,
};

/// Schema versions, in order. Never edit one that has shipped; add the next.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE principals (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    department TEXT,
    declared INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    principal TEXT NOT NULL REFERENCES principals(id),
    secret_sha256 BLOB NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
CREATE TABLE agreements (
    id TEXT PRIMARY KEY,
    principal TEXT NOT NULL REFERENCES principals(id),
    status TEXT NOT NULL,
    terms TEXT NOT NULL,
    declared INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX agreements_by_principal ON agreements(principal);
CREATE TABLE quota_usage (
    agreement TEXT NOT NULL,
    day TEXT NOT NULL,
    requests INTEGER NOT NULL,
    rows INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    PRIMARY KEY (agreement, day)
);
"#,
    r#"
CREATE TABLE reports (
    id TEXT PRIMARY KEY,
    received_at TEXT NOT NULL,
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
    received_at TEXT NOT NULL,
    usage TEXT NOT NULL
);
CREATE INDEX feedback_by_agreement ON feedback(agreement, received_at);
"#,
    // Workflow records are kept whole as JSON documents, with the columns they are looked up
    // or ordered by beside them.
    r#"
CREATE TABLE catalog_drafts (
    id TEXT PRIMARY KEY,
    record TEXT NOT NULL
);
CREATE TABLE catalog_published (
    id TEXT PRIMARY KEY,
    record TEXT NOT NULL
);
CREATE TABLE withdrawals (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    dataset TEXT NOT NULL,
    in_force INTEGER NOT NULL,
    record TEXT NOT NULL
);
CREATE UNIQUE INDEX withdrawals_in_force ON withdrawals(dataset) WHERE in_force = 1;
CREATE TABLE applications (
    id TEXT PRIMARY KEY,
    submitted_at TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE TABLE objections (
    id TEXT PRIMARY KEY,
    filed_at TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE TABLE notifications (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    pending INTEGER NOT NULL,
    next_attempt_at TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX notifications_pending ON notifications(pending, next_attempt_at);
"#,
    // The gateway's own counters by hour, for the operation report.
    r#"
CREATE TABLE traffic (
    hour TEXT NOT NULL,
    instance TEXT NOT NULL,
    series TEXT NOT NULL,
    labels TEXT NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (hour, instance, series, labels)
);
"#,
];

/// The SQLite store.
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `data_dir` and brings its schema up to date.
    pub fn open(data_dir: &Path) -> StoreResult<SqliteStore> {
        let conn = Connection::open(data_dir.join("kaifang.db"))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&conn)?;
        Ok(SqliteStore { conn: Mutex::new(conn) })
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> StoreResult<T> {
        let conn = self.conn.lock().map_err(|_| StoreError::Backend("store lock poisoned".into()))?;
        Ok(f(&conn)?)
    }
}

fn migrate(conn: &Connection) -> StoreResult<()> {
    let current: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let current = usize::try_from(current).unwrap_or(usize::MAX);
    if current > MIGRATIONS.len() {
        return Err(StoreError::Backend(format!(
            "the store is at schema version {current}, newer than this kaifang ({}); upgrade kaifang",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

/// The connection's `PRAGMA data_version`: it changes when another connection commits. Every
/// keyed call reads it, so the statement is compiled once per connection, not on each read.
fn data_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached("PRAGMA data_version")?.query_row([], |r| r.get(0))
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::User => "user",
        Role::Owner => "owner",
        Role::Operator => "operator",
    }
}

fn status_name(status: AgreementStatus) -> &'static str {
    match status {
        AgreementStatus::Active => "active",
        AgreementStatus::Suspended => "suspended",
        AgreementStatus::Revoked => "revoked",
        AgreementStatus::Expired => "expired",
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(column: usize, text: &str) -> rusqlite::Result<T> {
    serde_json::from_str(text)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, Box::new(e)))
}

/// A unit enum stored by its serde name (`"active"`, `"user"`).
fn parse_name<T: serde::de::DeserializeOwned>(column: usize, text: &str) -> rusqlite::Result<T> {
    parse_json(column, &serde_json::Value::String(text.to_owned()).to_string())
}

fn parse_time(column: usize, text: &str) -> rusqlite::Result<DateTime<Utc>> {
    text.parse()
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, Box::new(e)))
}

fn put_agreement_on(c: &Connection, a: &Agreement, declared: bool) -> rusqlite::Result<()> {
    c.execute(
        "INSERT INTO agreements (id, principal, status, terms, declared) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (id) DO UPDATE SET principal = excluded.principal, status = excluded.status,
             terms = excluded.terms, declared = excluded.declared",
        params![a.id, a.principal, status_name(a.status), document(a)?, declared],
    )
    .map(|_| ())
}

/// A time as text that sorts as the time does (fixed width, UTC).
fn sortable(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Serializes a workflow record for its `record` column.
fn document<T: serde::Serialize>(value: &T) -> rusqlite::Result<String> {
    serde_json::to_string(value).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

/// Reads the JSON documents a query returns in its first column.
fn documents<T: serde::de::DeserializeOwned>(
    c: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> rusqlite::Result<Vec<T>> {
    let mut statement = c.prepare(sql)?;
    let rows = statement.query_map(params, |row| {
        let text: String = row.get(0)?;
        parse_json(0, &text)
    })?;
    rows.collect()
}

fn key_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<KeyRecord> {
    let hash: Vec<u8> = row.get(2)?;
    let created: String = row.get(3)?;
    let revoked: Option<String> = row.get(4)?;
    Ok(KeyRecord {
        id: row.get(0)?,
        principal: row.get(1)?,
        secret_sha256: hash.try_into().map_err(|_| {
            rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Blob, "a key hash is 32 bytes".into())
        })?,
        created_at: parse_time(3, &created)?,
        revoked_at: revoked.map(|r| parse_time(4, &r)).transpose()?,
    })
}

fn agreement_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Agreement> {
    let status: String = row.get(0)?;
    let terms: String = row.get(1)?;
    let mut agreement: Agreement = parse_json(1, &terms)?;
    agreement.status = parse_name(0, &status)?;
    Ok(agreement)
}

const KEY_COLUMNS: &str = "id, principal, secret_sha256, created_at, revoked_at";

impl Store for SqliteStore {
    fn change_counter(&self) -> StoreResult<i64> {
        self.with(data_version)
    }

    /// `PRAGMA data_version` reads the WAL index in shared memory: it takes no lock that
    /// another process holds for long. Only a connection busy on this process's behalf makes
    /// it wait, and then this answers `None`.
    fn change_counter_now(&self) -> Option<StoreResult<i64>> {
        let conn = self.conn.try_lock().ok()?;
        Some(data_version(&conn).map_err(StoreError::from))
    }

    fn put_principal(&self, p: &Principal, declared: bool) -> StoreResult<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO principals (id, name, role, department, declared) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name, role = excluded.role,
                     department = excluded.department, declared = excluded.declared",
                params![p.id, p.name, role_name(p.role), p.department, declared],
            )
            .map(|_| ())
        })
    }

    fn principal(&self, id: &str) -> StoreResult<Option<Principal>> {
        self.with(|c| {
            c.query_row("SELECT id, name, role, department FROM principals WHERE id = ?1", [id], |row| {
                let role: String = row.get(2)?;
                Ok(Principal {
                    id: row.get(0)?,
                    name: row.get(1)?,
                    role: parse_name(2, &role)?,
                    department: row.get(3)?,
                })
            })
            .optional()
        })
    }

    fn insert_key(&self, key: &KeyRecord) -> StoreResult<()> {
        if self.principal(&key.principal)?.is_none() {
            return Err(StoreError::NotFound(format!("no principal `{}`", key.principal)));
        }
        self.with(|c| {
            c.execute(
                "INSERT INTO api_keys (id, principal, secret_sha256, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![key.id, key.principal, key.secret_sha256.as_slice(), key.created_at.to_rfc3339()],
            )
            .map(|_| ())
        })
    }

    fn key(&self, id: &str) -> StoreResult<Option<KeyRecord>> {
        self.with(|c| {
            c.query_row(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?1"), [id], key_row).optional()
        })
    }

    fn insert_report(&self, report: &Report) -> StoreResult<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO reports (id, received_at, dataset, description, contact, principal) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    report.id,
                    report.received_at.to_rfc3339(),
                    report.dataset,
                    report.description,
                    report.contact,
                    report.principal
                ],
            )
            .map(|_| ())
        })
    }

    fn reports(&self) -> StoreResult<Vec<Report>> {
        self.with(|c| {
            c.prepare(
                "SELECT id, received_at, dataset, description, contact, principal FROM reports \
                 ORDER BY received_at DESC, id DESC",
            )?
            .query_map([], |row| {
                let received_at: String = row.get(1)?;
                Ok(Report {
                    id: row.get(0)?,
                    received_at: DateTime::parse_from_rfc3339(&received_at).map(|t| t.with_timezone(&Utc)).map_err(
                        |e| rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, Box::new(e)),
                    )?,
                    dataset: row.get(2)?,
                    description: row.get(3)?,
                    contact: row.get(4)?,
                    principal: row.get(5)?,
                })
            })?
            .collect()
        })
    }

    fn insert_feedback(&self, feedback: &Feedback) -> StoreResult<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO feedback (id, agreement, principal, received_at, usage) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    feedback.id,
                    feedback.agreement,
                    feedback.principal,
                    feedback.received_at.to_rfc3339(),
                    feedback.usage
                ],
            )
            .map(|_| ())
        })
    }

    fn feedback(&self, agreement: &str) -> StoreResult<Vec<Feedback>> {
        self.with(|c| {
            c.prepare(
                "SELECT id, agreement, principal, received_at, usage FROM feedback WHERE agreement = ?1 \
                 ORDER BY received_at, id",
            )?
            .query_map([agreement], |row| {
                let received_at: String = row.get(3)?;
                Ok(Feedback {
                    id: row.get(0)?,
                    agreement: row.get(1)?,
                    principal: row.get(2)?,
                    received_at: DateTime::parse_from_rfc3339(&received_at).map(|t| t.with_timezone(&Utc)).map_err(
                        |e| rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, Box::new(e)),
                    )?,
                    usage: row.get(4)?,
                })
            })?
            .collect()
        })
    }

    fn put_draft(&self, draft: &EntryRecord) -> StoreResult<u64> {
        let conn = self.conn.lock().map_err(|_| StoreError::Backend("store lock poisoned".into()))?;
        let tx = conn.unchecked_transaction()?;
        let id = draft.entry.id.as_str();
        let before: Vec<EntryRecord> = documents(&tx, "SELECT record FROM catalog_drafts WHERE id = ?1", [id])?;
        let mut record = draft.clone();
        record.version = before.first().map_or(0, |d| d.version) + 1;
        tx.execute(
            "INSERT OR REPLACE INTO catalog_drafts (id, record) VALUES (?1, ?2)",
            params![id, document(&record)?],
        )?;
        tx.commit()?;
        Ok(record.version)
    }

    fn draft(&self, id: &str) -> StoreResult<Option<EntryRecord>> {
        self.with(|c| documents(c, "SELECT record FROM catalog_drafts WHERE id = ?1", [id]).map(|mut v| v.pop()))
    }

    fn drafts(&self) -> StoreResult<Vec<EntryRecord>> {
        self.with(|c| documents(c, "SELECT record FROM catalog_drafts ORDER BY id", []))
    }

    fn publish(&self, id: &str, by: &str, at: DateTime<Utc>, version: u64, reviewed: u64) -> StoreResult<EntryRecord> {
        let conn = self.conn.lock().map_err(|_| StoreError::Backend("store lock poisoned".into()))?;
        let tx = conn.unchecked_transaction()?;
        let mut drafts: Vec<EntryRecord> = documents(&tx, "SELECT record FROM catalog_drafts WHERE id = ?1", [id])?;
        let Some(mut record) = drafts.pop() else {
            return Err(StoreError::NotFound(format!("no draft of `{id}` to publish")));
        };
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
            "INSERT OR REPLACE INTO catalog_published (id, record) VALUES (?1, ?2)",
            params![id, document(&record)?],
        )?;
        tx.execute("DELETE FROM catalog_drafts WHERE id = ?1", [id])?;
        tx.commit()?;
        Ok(record)
    }

    fn published(&self) -> StoreResult<Vec<EntryRecord>> {
        self.with(|c| documents(c, "SELECT record FROM catalog_published ORDER BY id", []))
    }

    fn withdraw(&self, w: &Withdrawal) -> StoreResult<()> {
        let inserted = self.with(|c| {
            c.execute(
                "INSERT OR IGNORE INTO withdrawals (dataset, in_force, record) VALUES (?1, 1, ?2)",
                params![w.dataset, document(w)?],
            )
        })?;
        if inserted == 0 {
            return Err(StoreError::Conflict(format!("`{}` is already withdrawn", w.dataset)));
        }
        Ok(())
    }

    fn reopen(&self, dataset: &str, by: &str, at: DateTime<Utc>) -> StoreResult<Withdrawal> {
        let conn = self.conn.lock().map_err(|_| StoreError::Backend("store lock poisoned".into()))?;
        let tx = conn.unchecked_transaction()?;
        let mut current: Vec<Withdrawal> =
            documents(&tx, "SELECT record FROM withdrawals WHERE dataset = ?1 AND in_force = 1", [dataset])?;
        let Some(mut withdrawal) = current.pop() else {
            return Err(StoreError::NotFound(format!("`{dataset}` is not withdrawn")));
        };
        withdrawal.reopened_at = Some(at);
        withdrawal.reopened_by = Some(by.to_owned());
        tx.execute(
            "UPDATE withdrawals SET in_force = 0, record = ?2 WHERE dataset = ?1 AND in_force = 1",
            params![dataset, document(&withdrawal)?],
        )?;
        tx.commit()?;
        Ok(withdrawal)
    }

    fn withdrawals(&self) -> StoreResult<Vec<Withdrawal>> {
        self.with(|c| documents(c, "SELECT record FROM withdrawals WHERE in_force = 1 ORDER BY seq", []))
    }

    fn withdrawal_history(&self) -> StoreResult<Vec<Withdrawal>> {
        self.with(|c| documents(c, "SELECT record FROM withdrawals ORDER BY seq", []))
    }

    fn put_application(&self, a: &Application) -> StoreResult<()> {
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO applications (id, submitted_at, record) VALUES (?1, ?2, ?3)",
                params![a.id, a.submitted_at.to_rfc3339(), document(a)?],
            )
            .map(|_| ())
        })
    }

    fn decide_application(
        &self,
        before: &Application,
        after: &Application,
        agreement: Option<&Agreement>,
    ) -> StoreResult<()> {
        let conn = self.conn.lock().map_err(|_| StoreError::Backend("store lock poisoned".into()))?;
        let tx = conn.unchecked_transaction()?;
        let changed = tx.execute(
            "UPDATE applications SET record = ?3 WHERE id = ?1 AND record = ?2",
            params![after.id, document(before)?, document(after)?],
        )?;
        if changed == 0 {
            return Err(StoreError::Conflict(format!("application `{}` was decided meanwhile", after.id)));
        }
        if let Some(agreement) = agreement {
            put_agreement_on(&tx, agreement, false)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn replace_application(&self, old: &Application, new: &Application) -> StoreResult<bool> {
        let changed = self.with(|c| {
            c.execute(
                "UPDATE applications SET record = ?3 WHERE id = ?1 AND record = ?2",
                params![new.id, document(old)?, document(new)?],
            )
        })?;
        Ok(changed == 1)
    }

    fn application(&self, id: &str) -> StoreResult<Option<Application>> {
        self.with(|c| documents(c, "SELECT record FROM applications WHERE id = ?1", [id]).map(|mut v| v.pop()))
    }

    fn applications(&self) -> StoreResult<Vec<Application>> {
        self.with(|c| documents(c, "SELECT record FROM applications ORDER BY submitted_at, id", []))
    }

    fn put_objection(&self, o: &Objection) -> StoreResult<()> {
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO objections (id, filed_at, record) VALUES (?1, ?2, ?3)",
                params![o.id, o.filed_at.to_rfc3339(), document(o)?],
            )
            .map(|_| ())
        })
    }

    fn objection(&self, id: &str) -> StoreResult<Option<Objection>> {
        self.with(|c| documents(c, "SELECT record FROM objections WHERE id = ?1", [id]).map(|mut v| v.pop()))
    }

    fn objections(&self) -> StoreResult<Vec<Objection>> {
        self.with(|c| documents(c, "SELECT record FROM objections ORDER BY filed_at, id", []))
    }

    fn put_notification(&self, n: &Notification) -> StoreResult<()> {
        let pending = n.delivered_at.is_none() && !n.abandoned;
        self.with(|c| {
            c.execute(
                "INSERT INTO notifications (id, seq, pending, next_attempt_at, record) \
                 VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM notifications), ?2, ?3, ?4) \
                 ON CONFLICT (id) DO UPDATE SET pending = ?2, next_attempt_at = ?3, record = ?4",
                params![n.id, pending, sortable(n.next_attempt_at), document(n)?],
            )
            .map(|_| ())
        })
    }

    fn due_notifications(&self, now: DateTime<Utc>) -> StoreResult<Vec<Notification>> {
        self.with(|c| {
            documents(
                c,
                "SELECT record FROM notifications WHERE pending = 1 AND next_attempt_at <= ?1 ORDER BY seq",
                [sortable(now)],
            )
        })
    }

    fn notifications(&self) -> StoreResult<Vec<Notification>> {
        self.with(|c| documents(c, "SELECT record FROM notifications ORDER BY seq", []))
    }

    fn keys(&self) -> StoreResult<Vec<KeyRecord>> {
        self.with(|c| {
            c.prepare(&format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at, id"))?
                .query_map([], key_row)?
                .collect()
        })
    }

    fn revoke_key(&self, id: &str, at: DateTime<Utc>) -> StoreResult<bool> {
        let changed = self.with(|c| {
            c.execute(
                "UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                params![id, at.to_rfc3339()],
            )
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
        self.with(|c| put_agreement_on(c, a, declared))
    }

    fn agreement(&self, id: &str) -> StoreResult<Option<Agreement>> {
        self.with(|c| c.query_row("SELECT status, terms FROM agreements WHERE id = ?1", [id], agreement_row).optional())
    }

    fn agreements_of(&self, principal: &str) -> StoreResult<Vec<Agreement>> {
        self.with(|c| {
            c.prepare("SELECT status, terms FROM agreements WHERE principal = ?1 ORDER BY id")?
                .query_map([principal], agreement_row)?
                .collect()
        })
    }

    fn agreements(&self) -> StoreResult<Vec<Agreement>> {
        self.with(|c| {
            c.prepare("SELECT status, terms FROM agreements ORDER BY id")?.query_map([], agreement_row)?.collect()
        })
    }

    fn set_agreement_status(&self, id: &str, status: AgreementStatus) -> StoreResult<()> {
        let changed = self
            .with(|c| c.execute("UPDATE agreements SET status = ?2 WHERE id = ?1", params![id, status_name(status)]))?;
        if changed == 0 {
            return Err(StoreError::NotFound(format!("no agreement `{id}`")));
        }
        Ok(())
    }

    fn usage(&self, agreement: &str, day: &str) -> StoreResult<Usage> {
        self.with(|c| {
            c.query_row(
                "SELECT requests, rows, bytes FROM quota_usage WHERE agreement = ?1 AND day = ?2",
                [agreement, day],
                |r| {
                    Ok(Usage {
                        requests: r.get::<_, i64>(0)? as u64,
                        rows: r.get::<_, i64>(1)? as u64,
                        bytes: r.get::<_, i64>(2)? as u64,
                    })
                },
            )
            .optional()
            .map(Option::unwrap_or_default)
        })
    }

    fn add_traffic(&self, hour: DateTime<Utc>, instance: &str, figures: &[TrafficFigure]) -> StoreResult<()> {
        let hour = sortable(hour);
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            for f in figures {
                tx.execute(
                    "INSERT INTO traffic (hour, instance, series, labels, value) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (hour, instance, series, labels) DO UPDATE SET value = value + excluded.value",
                    params![hour, instance, f.series, f.labels, f.value],
                )?;
            }
            tx.commit()
        })
    }

    fn traffic(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> StoreResult<Vec<TrafficRow>> {
        self.with(|c| {
            let mut statement = c.prepare(
                "SELECT hour, instance, series, labels, value FROM traffic WHERE hour >= ?1 AND hour < ?2
                 ORDER BY hour, instance, series, labels",
            )?;
            let rows = statement.query_map(params![sortable(from), sortable(to)], |r| {
                Ok(TrafficRow {
                    hour: parse_time(0, &r.get::<_, String>(0)?)?,
                    instance: r.get(1)?,
                    figure: TrafficFigure { series: r.get(2)?, labels: r.get(3)?, value: r.get(4)? },
                })
            })?;
            rows.collect()
        })
    }

    fn save_usage(&self, agreement: &str, day: &str, u: Usage) -> StoreResult<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO quota_usage (agreement, day, requests, rows, bytes) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (agreement, day) DO UPDATE SET requests = excluded.requests, rows = excluded.rows,
                     bytes = excluded.bytes",
                params![agreement, day, u.requests as i64, u.rows as i64, u.bytes as i64],
            )
            .map(|_| ())
        })
    }

    fn writable(&self) -> StoreResult<()> {
        self.with(|c| c.execute_batch("BEGIN IMMEDIATE; ROLLBACK;"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_apply_once_and_state_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SqliteStore::open(dir.path()).unwrap();
            store
                .put_principal(
                    &Principal { id: "acme".into(), name: "Acme".into(), role: Role::User, department: None },
                    false,
                )
                .unwrap();
        }
        let store = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(store.principal("acme").unwrap().unwrap().name, "Acme");
        let version: i64 = store.with(|c| c.pragma_query_value(None, "user_version", |r| r.get(0))).unwrap();
        assert_eq!(version as usize, MIGRATIONS.len());
    }

    #[test]
    fn keys_belong_to_existing_principals_and_revoke_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let key = KeyRecord {
            id: "k1".into(),
            principal: "ghost".into(),
            secret_sha256: [7; 32],
            created_at: Utc::now(),
            revoked_at: None,
        };
        assert!(matches!(store.insert_key(&key), Err(StoreError::NotFound(_))));
        store
            .put_principal(
                &Principal { id: "ghost".into(), name: "G".into(), role: Role::User, department: None },
                false,
            )
            .unwrap();
        store.insert_key(&key).unwrap();
        assert_eq!(store.key("k1").unwrap().unwrap().secret_sha256, [7; 32]);
        assert!(store.revoke_key("k1", Utc::now()).unwrap());
        assert!(!store.revoke_key("k1", Utc::now()).unwrap());
        assert!(store.key("k1").unwrap().unwrap().revoked_at.is_some());
        assert!(matches!(store.revoke_key("nope", Utc::now()), Err(StoreError::NotFound(_))));
    }
}
