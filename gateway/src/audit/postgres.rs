//! The audit log on PostgreSQL, for several instances writing one trail.
//!
//! Each instance keeps its own hash chain (`instance`, `seq`), written by one writer thread with
//! group commit: the records waiting when a commit starts go in one transaction, and a record
//! counts as durable once that transaction has committed. One chain per instance, not one for
//! all: a single chain would make every instance's commit wait on the others' for the chain's
//! head, giving up group commit across the cluster; separate chains verify independently and
//! still cannot be edited, reordered or cut in the middle without it showing. The stored line is
//! the segment log's, so one parser and one verifier serve both. Its tables are made by the
//! store's locked migrations ([`crate::store::postgres::migrate`]), never here, so instances
//! starting together on an empty database do not race to create them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use postgres::NoTls;

use super::segments::{chain, parse_line, Anchor, ChainWalk, Chained, GroupCommit, Job, Walked, GENESIS};
use super::{AuditError, Record};
use crate::metrics::AuditMetrics;
use crate::store::postgres::{described, migrate};

struct Writer {
    config: postgres::Config,
    client: Option<postgres::Client>,
    instance: String,
    seq: u64,
    prev: String,
    health: Arc<Mutex<Result<(), String>>>,
    metrics: AuditMetrics,
}

/// Opens the PostgreSQL audit log of one instance: connects, brings the schema up to date (the
/// audit tables are made by the store's migrations, see [`migrate`]), finds where this
/// instance's chain ends and starts the writer thread.
pub fn open(url: &str, instance: &str, metrics: AuditMetrics) -> Result<GroupCommit, String> {
    let config: postgres::Config = url.parse().map_err(|e| format!("`{url}`: {e}"))?;
    let mut client =
        config.connect(NoTls).map_err(|e| format!("audit log: cannot connect to PostgreSQL: {}", described(&e)))?;
    migrate(&mut client).map_err(|e| format!("audit log: {e}"))?;
    let last = client
        .query_opt("SELECT seq, line FROM audit_records WHERE instance = $1 ORDER BY seq DESC LIMIT 1", &[&instance])
        .map_err(|e| format!("audit log: {}", described(&e)))?;
    let (seq, prev) = match last {
        Some(row) => {
            let line: String = row.get(1);
            let parsed = parse_line(&line).ok_or("audit log: the last record does not parse")?;
            (row.get::<_, i64>(0) as u64, parsed.hash)
        }
        // Every record removed by retention: the chain goes on from its anchor.
        None => anchor(&mut client, instance)?,
    };
    let health = Arc::new(Mutex::new(Ok(())));
    let mut writer = Writer {
        config,
        client: Some(client),
        instance: instance.to_owned(),
        seq,
        prev,
        health: health.clone(),
        metrics: metrics.clone(),
    };
    GroupCommit::start(health, metrics, move |batch| writer.commit(batch))
}

impl Writer {
    fn commit(&mut self, mut batch: Vec<Job>) {
        let Chained { lines, firsts, seq, prev } = chain(&mut batch, self.seq, self.prev.clone());
        let rows: Vec<_> = lines
            .into_iter()
            .map(|(seq, time, line)| {
                let line = String::from_utf8(line).expect("records are UTF-8");
                (seq, time, line.trim_end().to_owned())
            })
            .collect();
        let started = std::time::Instant::now();
        let written = self.write(&rows);
        self.metrics.commit_seconds.observe(started.elapsed().as_secs_f64());
        match written {
            Ok(()) => {
                self.metrics.records.inc_by(rows.len() as u64);
                self.seq = seq;
                self.prev = prev;
                *self.health.lock().expect("health lock") = Ok(());
                for (job, seq) in batch.into_iter().zip(firsts) {
                    let _ = job.done.send(Ok(seq));
                }
            }
            Err(message) => {
                // Nothing of the batch committed: the chain goes on from where it was.
                self.client = None;
                self.metrics.failures.inc();
                *self.health.lock().expect("health lock") = Err(message.clone());
                tracing::error!(error = %message, records = batch.len(), "audit write failed; conditional calls are refused until it recovers");
                for job in batch {
                    let _ = job.done.send(Err(AuditError(message.clone())));
                }
            }
        }
    }

    /// One transaction for the batch; reconnects first if the last one failed.
    fn write(&mut self, rows: &[(u64, chrono::DateTime<chrono::Utc>, String)]) -> Result<(), String> {
        if self.client.is_none() {
            let mut config = self.config.clone();
            config.connect_timeout(Duration::from_secs(2));
            self.client =
                Some(config.connect(NoTls).map_err(|e| format!("cannot connect to PostgreSQL: {}", described(&e)))?);
        }
        let client = self.client.as_mut().expect("connected above");
        let mut tx = client.transaction().map_err(|e| described(&e))?;
        let statement = tx
            .prepare("INSERT INTO audit_records (instance, seq, time, line) VALUES ($1, $2, $3, $4)")
            .map_err(|e| described(&e))?;
        for (seq, time, line) in rows {
            tx.execute(&statement, &[&self.instance, &(*seq as i64), time, line]).map_err(|e| described(&e))?;
        }
        tx.commit().map_err(|e| described(&e))
    }
}

/// Every stored line of every instance, oldest first, with its parsed record.
pub fn read_lines(url: &str) -> Result<Vec<(String, Record)>, String> {
    let mut client = connect(url)?;
    let rows = client
        .query("SELECT line FROM audit_records ORDER BY time, instance, seq", &[])
        .map_err(|e| format!("audit log: {}", described(&e)))?;
    Ok(rows
        .iter()
        .filter_map(|row| {
            let line: String = row.get(0);
            let record = parse_line(&line)?.record?;
            Some((line, record))
        })
        .collect())
}

/// Hands every stored record of every instance to `each`, oldest first, as the rows arrive
/// (the log need not fit in memory); `progress` is told the records read so far.
pub fn for_each_record(
    url: &str,
    progress: &(dyn Fn(u64, Option<u64>) + Sync),
    each: &mut dyn FnMut(Record),
) -> Result<(), String> {
    use postgres::fallible_iterator::FallibleIterator;
    let mut client = connect(url)?;
    let failed = |e: postgres::Error| format!("audit log: {}", described(&e));
    let mut rows = client
        .query_raw("SELECT line FROM audit_records ORDER BY time, instance, seq", std::iter::empty::<&str>())
        .map_err(failed)?;
    let mut read = 0u64;
    while let Some(row) = rows.next().map_err(failed)? {
        let line: String = row.get(0);
        if let Some(record) = parse_line(&line).and_then(|l| l.record) {
            each(record);
        }
        read += 1;
        progress(read, None);
    }
    Ok(())
}

/// How one instance's chain checks out.
#[derive(Debug, PartialEq, Eq, serde::Serialize)]
pub struct ChainVerdict {
    pub instance: String,
    pub records: u64,
    pub last_seq: u64,
    /// Records before the first one present (seq 1 to `removed`), removed by retention: they
    /// cannot be checked, and the chain is verified from its anchor, which is taken as given.
    pub removed: u64,
    /// The first problem found, with the seq it is at.
    pub broken: Option<(u64, String)>,
}

/// Verifies every instance's chain (see [`ChainWalk`] for what is checked), those whose every
/// record was removed by retention included.
pub fn verify(url: &str) -> Result<Vec<ChainVerdict>, String> {
    let mut client = connect(url)?;
    let instances = client
        .query("SELECT instance FROM audit_records UNION SELECT instance FROM audit_anchors ORDER BY 1", &[])
        .map_err(|e| format!("audit log: {}", described(&e)))?;
    let mut verdicts = Vec::new();
    for row in instances {
        let instance: String = row.get(0);
        let lines = client
            .query("SELECT seq, line FROM audit_records WHERE instance = $1 ORDER BY seq", &[&instance])
            .map_err(|e| format!("audit log: {}", described(&e)))?;
        let (anchor_seq, hash) = anchor(&mut client, &instance)?;
        let mut walk = ChainWalk::new(Some(Anchor { seq: anchor_seq, hash }));
        let mut broken = None;
        for row in &lines {
            let stored_seq = row.get::<_, i64>(0) as u64;
            let line: String = row.get(1);
            let checked = match parse_line(&line) {
                None => Err("the line is not an audit record".to_owned()),
                Some(parsed) if parsed.seq != stored_seq => {
                    Err(format!("the record stored as seq {stored_seq} says it is seq {}", parsed.seq))
                }
                Some(parsed) => walk.check(&parsed),
            };
            if let Err(problem) = checked {
                broken = Some((stored_seq, problem));
                break;
            }
        }
        let walked = match broken {
            Some(broken) => Err(broken),
            None => walk.finish().map_err(|problem| (anchor_seq, problem)),
        };
        let verdict = match walked {
            Ok(Walked { records, last_seq, removed }) => {
                ChainVerdict { instance, records, last_seq, removed, broken: None }
            }
            Err(broken) => ChainVerdict { instance, records: 0, last_seq: 0, removed: 0, broken: Some(broken) },
        };
        verdicts.push(verdict);
    }
    Ok(verdicts)
}

/// Where an instance's remaining chain starts: after its anchor, or from the beginning.
fn anchor(client: &mut postgres::Client, instance: &str) -> Result<(u64, String), String> {
    let row = client
        .query_opt("SELECT seq, hash FROM audit_anchors WHERE instance = $1", &[&instance])
        .map_err(|e| format!("audit log: {}", described(&e)))?;
    Ok(row.map_or((0, GENESIS.to_owned()), |r| (r.get::<_, i64>(0) as u64, r.get(1))))
}

/// Removes every instance's records older than `cutoff`, keeping as each chain's anchor the
/// last record removed, so what remains still verifies. Records go in chain order: the cut is
/// after the newest record older than `cutoff`. Returns how many were removed.
pub fn prune(url: &str, cutoff: chrono::DateTime<chrono::Utc>) -> Result<usize, String> {
    let mut client = connect(url)?;
    let mut tx = client.transaction().map_err(|e| described(&e))?;
    let ends = tx
        .query(
            "SELECT DISTINCT ON (instance) instance, seq, line FROM audit_records WHERE time < $1
             ORDER BY instance, seq DESC",
            &[&cutoff],
        )
        .map_err(|e| described(&e))?;
    let mut removed = 0;
    for row in ends {
        let (instance, seq, line): (String, i64, String) = (row.get(0), row.get(1), row.get(2));
        let hash = parse_line(&line).ok_or("audit log: a record to prune does not parse")?.hash;
        tx.execute(
            "INSERT INTO audit_anchors (instance, seq, hash) VALUES ($1, $2, $3)
             ON CONFLICT (instance) DO UPDATE SET seq = excluded.seq, hash = excluded.hash
             WHERE audit_anchors.seq < excluded.seq",
            &[&instance, &seq, &hash],
        )
        .map_err(|e| described(&e))?;
        removed += tx
            .execute("DELETE FROM audit_records WHERE instance = $1 AND seq <= $2", &[&instance, &seq])
            .map_err(|e| described(&e))? as usize;
    }
    tx.commit().map_err(|e| described(&e))?;
    Ok(removed)
}

fn connect(url: &str) -> Result<postgres::Client, String> {
    let mut config: postgres::Config = url.parse().map_err(|e| format!("`{url}`: {e}"))?;
    config.connect_timeout(Duration::from_secs(5));
    let mut client =
        config.connect(NoTls).map_err(|e| format!("audit log: cannot connect to PostgreSQL: {}", described(&e)))?;
    migrate(&mut client).map_err(|e| format!("audit log: {e}"))?;
    Ok(client)
}
