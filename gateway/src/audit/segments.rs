//! The embedded audit store: append-only NDJSON segment files in `<data-dir>/audit`.
//!
//! Why files and not a database: the log is written once and read rarely; an append and one
//! `fdatasync` per group of records is the cheapest durable write there is, a torn last line
//! after a crash is easy to see and cut off, the chain hashes cover the very bytes on disk, and
//! export is a copy of lines. It also keeps the audit trail apart from the state store, so a
//! failing disk for one is visible as such.
//!
//! Each line is one record: `{"seq":N,"prev":"<hex>",<record fields>,"hash":"<hex>"}` where
//! `hash` is SHA-256 of `prev` followed by the line up to (not including) `,"hash"` and a closing
//! `}`. Segments are `segment-<first seq>.ndjson`, rotated at `segment_bytes`. Retention removes
//! whole segments past the retention period and records the last removed record's seq and hash
//! in `anchor.json`, from which verification starts.
//!
//! Group commit: appends go through a bounded channel to one writer thread, which takes
//! everything waiting, writes it with one `write` and makes it durable with one `fdatasync`,
//! then answers every caller. A failed write is cut back off the file, the callers get an error
//! (their calls are refused), and the next batch tries again: the log recovers on its own.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{AuditError, AuditSink, Record};
use crate::metrics::AuditMetrics;

/// Records waiting for the writer at most; further appends wait for room. The channel
/// allocates all its places up front, so this is also a fixed memory cost of that many records.
pub(crate) const QUEUE: usize = 4096;
/// Records written and synced together at most.
pub(crate) const BATCH: usize = 4096;
pub(crate) const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The last record removed by retention: verification starts from it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Anchor {
    pub seq: u64,
    pub hash: String,
}

/// A record waiting for a writer thread, and where its seq (or the failure) goes. A record may
/// bring the completion of the call it starts: the two are committed together, one after the
/// other, the completion naming the record's seq as its `intent_seq`.
pub(crate) struct Job {
    pub record: Record,
    pub completion: Option<Record>,
    pub done: tokio::sync::oneshot::Sender<Result<u64, AuditError>>,
}

/// A batch's records as stored: their lines in order, with the seq and time of each, the seq of
/// each job's first record, and where the chain stands after them.
pub(crate) struct Chained {
    pub lines: Vec<(u64, DateTime<Utc>, Vec<u8>)>,
    pub firsts: Vec<u64>,
    pub seq: u64,
    pub prev: String,
}

/// Numbers and links the records of `batch` after `seq` and `prev`.
pub(crate) fn chain(batch: &mut [Job], mut seq: u64, mut prev: String) -> Chained {
    let mut lines = Vec::with_capacity(batch.len());
    let mut firsts = Vec::with_capacity(batch.len());
    for job in batch.iter_mut() {
        let first = seq + 1;
        firsts.push(first);
        if let Some(Record::Completion { intent_seq, .. }) = job.completion.as_mut() {
            *intent_seq = first;
        }
        for record in std::iter::once(&job.record).chain(job.completion.as_ref()) {
            seq += 1;
            let (line, hash) = encode(seq, &prev, record);
            lines.push((seq, record.time(), line));
            prev = hash;
        }
    }
    Chained { lines, firsts, seq, prev }
}

/// The callers' side of an audit log whose records one writer thread commits in groups: the
/// segment files ([`open`]) and PostgreSQL ([`super::postgres::open`]) alike.
pub struct GroupCommit {
    queue: std::sync::mpsc::SyncSender<Job>,
    health: Arc<Mutex<Result<(), String>>>,
    metrics: AuditMetrics,
}

impl GroupCommit {
    /// Starts the writer thread, which takes the waiting records in batches of at most
    /// [`BATCH`] and hands each batch to `commit`; `commit` reports the log's state in `health`.
    /// The writer outlives any one batch: a panic while committing answers that batch's callers
    /// with an error (their senders drop), marks the log unhealthy, and the next batch goes on.
    pub(crate) fn start(
        health: Arc<Mutex<Result<(), String>>>,
        metrics: AuditMetrics,
        mut commit: impl FnMut(Vec<Job>) + Send + 'static,
    ) -> Result<GroupCommit, String> {
        let (queue, jobs) = std::sync::mpsc::sync_channel::<Job>(QUEUE);
        let (waiting, failed) = (metrics.queue_depth.clone(), health.clone());
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || {
                while let Ok(first) = jobs.recv() {
                    let mut batch = vec![first];
                    gather(&jobs, &mut batch);
                    waiting.sub(batch.len() as i64);
                    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| commit(batch))).is_err() {
                        *failed.lock().unwrap_or_else(|p| p.into_inner()) =
                            Err("the audit writer failed while committing".into());
                    }
                }
            })
            .map_err(|e| format!("cannot start the audit writer: {e}"))?;
        Ok(GroupCommit { queue, health, metrics })
    }
}

/// Takes the records waiting behind the first of a batch. Between takes the writer yields its
/// core once: where the callers' threads share it (a gateway on one core), they get to hand
/// over the records of the calls they have in hand, and the batch grows instead of being
/// committed with the first record alone; where a core is free, the yield returns at once.
/// Stops when a yield brought nothing new or the batch is full.
fn gather(jobs: &std::sync::mpsc::Receiver<Job>, batch: &mut Vec<Job>) {
    batch.extend(jobs.try_iter().take(BATCH - batch.len()));
    while batch.len() < BATCH {
        std::thread::yield_now();
        let before = batch.len();
        batch.extend(jobs.try_iter().take(BATCH - batch.len()));
        if batch.len() == before {
            return;
        }
    }
}

impl AuditSink for GroupCommit {
    fn append(&self, record: Record) -> Pin<Box<dyn std::future::Future<Output = Result<u64, AuditError>> + Send>> {
        self.queued(record, None)
    }

    fn append_served(
        &self,
        intent: Record,
        completion: Record,
    ) -> Pin<Box<dyn std::future::Future<Output = Result<u64, AuditError>> + Send>> {
        self.queued(intent, Some(completion))
    }

    fn health(&self) -> Result<(), String> {
        self.health.lock().expect("health lock").clone()
    }
}

impl GroupCommit {
    /// Hands `record` (and the completion it brings) to the writer thread and resolves once it
    /// is durable. A full queue (the writer is behind) is waited on off the runtime's threads.
    fn queued(
        &self,
        record: Record,
        completion: Option<Record>,
    ) -> Pin<Box<dyn std::future::Future<Output = Result<u64, AuditError>> + Send>> {
        let (done, answer) = tokio::sync::oneshot::channel();
        let queue = self.queue.clone();
        let waiting = self.metrics.queue_depth.clone();
        Box::pin(async move {
            let job = Job { record, completion, done };
            waiting.inc();
            let sent = match queue.try_send(job) {
                Ok(()) => Ok(()),
                Err(std::sync::mpsc::TrySendError::Full(job)) => {
                    tokio::task::spawn_blocking(move || queue.send(job).map_err(|_| ())).await.unwrap_or(Err(()))
                }
                Err(std::sync::mpsc::TrySendError::Disconnected(_)) => Err(()),
            };
            if sent.is_err() {
                waiting.dec();
            }
            sent.map_err(|()| AuditError("the audit writer has stopped".into()))?;
            answer.await.map_err(|_| AuditError("the audit writer has stopped".into()))?
        })
    }
}

/// Where the writer stands.
struct Writer {
    dir: PathBuf,
    file: File,
    len: u64,
    seq: u64,
    prev: String,
    segment_bytes: u64,
    health: Arc<Mutex<Result<(), String>>>,
    metrics: AuditMetrics,
}

fn segment_name(first_seq: u64) -> String {
    format!("segment-{first_seq:012}.ndjson")
}

/// The segment files of `dir`, in order.
pub fn segments(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("segment-") && n.ends_with(".ndjson"))
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    files.sort();
    Ok(files)
}

pub fn read_anchor(dir: &Path) -> std::io::Result<Option<Anchor>> {
    match fs::read(dir.join("anchor.json")) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(std::io::Error::other),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The parts of a stored line.
pub struct Line {
    pub seq: u64,
    pub prev: String,
    pub hash: String,
    /// Whether `hash` is the hash of `prev` and the line's content.
    pub intact: bool,
    pub record: Option<Record>,
}

/// Parses one stored line (without its newline).
pub fn parse_line(line: &str) -> Option<Line> {
    const HASH_FIELD: &str = ",\"hash\":\"";
    let at = line.rfind(HASH_FIELD)?;
    let hash = line[at + HASH_FIELD.len()..].strip_suffix("\"}")?.to_owned();
    let body = format!("{}}}", &line[..at]);
    #[derive(Deserialize)]
    struct Chain {
        seq: u64,
        prev: String,
    }
    let chain: Chain = serde_json::from_str(&body).ok()?;
    let intact =
        hex::encode(Sha256::new().chain_update(chain.prev.as_bytes()).chain_update(body.as_bytes()).finalize()) == hash;
    let record = serde_json::from_str(&body).ok();
    Some(Line { seq: chain.seq, prev: chain.prev, hash, intact, record })
}

/// The stored form of `record` as number `seq` after `prev`, and its hash.
pub(crate) fn encode(seq: u64, prev: &str, record: &Record) -> (Vec<u8>, String) {
    let fields = serde_json::to_string(record).expect("records serialize");
    // `fields` is `{"kind":...}`: splice the chain fields in front.
    let body = format!("{{\"seq\":{seq},\"prev\":\"{prev}\",{}", &fields[1..]);
    let hash = hex::encode(Sha256::new().chain_update(prev.as_bytes()).chain_update(body.as_bytes()).finalize());
    let mut line = body.into_bytes();
    line.pop();
    line.extend_from_slice(format!(",\"hash\":\"{hash}\"}}\n").as_bytes());
    (line, hash)
}

/// Opens the segment-file log in `dir`, cutting off a torn last line left by a crash, and
/// starts its writer thread.
pub fn open(dir: &Path, segment_bytes: u64, metrics: AuditMetrics) -> Result<GroupCommit, String> {
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let health = Arc::new(Mutex::new(Ok(())));
    let mut writer = Writer::open(dir, segment_bytes, health.clone(), metrics.clone())?;
    GroupCommit::start(health, metrics, move |batch| writer.commit(batch))
}

impl Writer {
    fn open(
        dir: &Path,
        segment_bytes: u64,
        health: Arc<Mutex<Result<(), String>>>,
        metrics: AuditMetrics,
    ) -> Result<Writer, String> {
        let files = segments(dir).map_err(|e| e.to_string())?;
        let anchor = read_anchor(dir).map_err(|e| e.to_string())?.unwrap_or(Anchor { seq: 0, hash: GENESIS.into() });
        let (mut seq, mut prev) = (anchor.seq, anchor.hash);
        // The chain goes on from the last record on disk: in the last segment, or, when that
        // one is empty (a rotation just before a stop), in the one before it.
        for (i, path) in files.iter().enumerate().rev() {
            let last_segment = i + 1 == files.len();
            if let Some((last_seq, last_hash)) = Writer::last_record(path, last_segment)? {
                (seq, prev) = (last_seq, last_hash);
                break;
            }
        }
        let path = files.last().cloned().unwrap_or_else(|| dir.join(segment_name(seq + 1)));
        let file =
            OpenOptions::new().create(true).append(true).open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let len = file.metadata().map_err(|e| e.to_string())?.len();
        sync_dir(dir);
        Ok(Writer { dir: dir.to_owned(), file, len, seq, prev, segment_bytes, health, metrics })
    }

    /// The seq and hash of the last record of a segment. For the segment being written
    /// (`repair`), bytes after the last complete, parseable line are a write torn by a crash
    /// and are cut off; a bad line followed by good ones is left alone for `verify` to report,
    /// never truncated away.
    fn last_record(path: &Path, repair: bool) -> Result<Option<(u64, String)>, String> {
        let bytes = fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut last = None;
        let mut good_len = 0usize;
        let mut offset = 0usize;
        for line in bytes.split_inclusive(|b| *b == b'\n') {
            offset += line.len();
            let Some(text) = line.strip_suffix(b"\n").and_then(|l| std::str::from_utf8(l).ok()) else { continue };
            if let Some(parsed) = parse_line(text) {
                last = Some((parsed.seq, parsed.hash));
                good_len = offset;
            }
        }
        if repair && bytes.len() > good_len {
            tracing::warn!(segment = %path.display(), cut_bytes = bytes.len() - good_len, "cutting off a torn audit record left by a crash");
            let file = OpenOptions::new().write(true).open(path).map_err(|e| e.to_string())?;
            file.set_len(good_len as u64).map_err(|e| e.to_string())?;
            file.sync_all().map_err(|e| e.to_string())?;
        }
        Ok(last)
    }

    /// Writes and syncs a batch, then answers its callers.
    fn commit(&mut self, mut batch: Vec<Job>) {
        let Chained { lines, firsts, seq, prev } = chain(&mut batch, self.seq, self.prev.clone());
        let mut bytes = Vec::with_capacity(lines.iter().map(|(_, _, line)| line.len()).sum());
        for (_, _, line) in &lines {
            bytes.extend_from_slice(line);
        }
        let started = std::time::Instant::now();
        let written = self.file.write_all(&bytes).and_then(|()| self.file.sync_data());
        self.metrics.commit_seconds.observe(started.elapsed().as_secs_f64());
        match written {
            Ok(()) => {
                self.metrics.records.inc_by(lines.len() as u64);
                self.seq = seq;
                self.prev = prev;
                self.len += bytes.len() as u64;
                *self.health.lock().expect("health lock") = Ok(());
                for (job, seq) in batch.into_iter().zip(firsts) {
                    let _ = job.done.send(Ok(seq));
                }
                if self.len >= self.segment_bytes {
                    self.rotate();
                }
            }
            Err(e) => {
                // Cut off whatever part of the batch reached the file: those records were
                // refused, so they must not appear.
                let _ = self.file.set_len(self.len);
                let message = e.to_string();
                self.metrics.failures.inc();
                *self.health.lock().expect("health lock") = Err(message.clone());
                tracing::error!(error = %message, records = batch.len(), "audit write failed; conditional calls are refused until it recovers");
                for job in batch {
                    let _ = job.done.send(Err(AuditError(message.clone())));
                }
            }
        }
    }

    fn rotate(&mut self) {
        let path = self.dir.join(segment_name(self.seq + 1));
        match OpenOptions::new().create(true).append(true).open(&path) {
            Ok(file) => {
                self.file = file;
                self.len = 0;
                sync_dir(&self.dir);
            }
            Err(e) => tracing::warn!(error = %e, "cannot start a new audit segment; the current one grows on"),
        }
    }
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// The stored lines of the log, in order, with their parsed records.
pub fn read_lines(dir: &Path) -> Result<Vec<(String, Record)>, String> {
    let mut out = Vec::new();
    for path in segments(dir).map_err(|e| e.to_string())? {
        let file = File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        for line in BufReader::new(file).lines() {
            let line = line.map_err(|e| format!("{}: {e}", path.display()))?;
            if let Some(Line { record: Some(record), .. }) = parse_line(&line) {
                out.push((line, record));
            }
        }
    }
    Ok(out)
}

/// Hands every record of the log to `each`, in order, reading the segments line by line (the
/// log need not fit in memory); `progress` is told the bytes read so far and the total.
pub fn for_each_record(
    dir: &Path,
    progress: &(dyn Fn(u64, Option<u64>) + Sync),
    each: &mut dyn FnMut(Record),
) -> Result<(), String> {
    let files = segments(dir).map_err(|e| e.to_string())?;
    let total: u64 = files.iter().filter_map(|p| fs::metadata(p).ok()).map(|m| m.len()).sum();
    let mut done = 0u64;
    for path in files {
        let file = File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        for line in BufReader::new(file).lines() {
            let line = line.map_err(|e| format!("{}: {e}", path.display()))?;
            done += line.len() as u64 + 1;
            if let Some(Line { record: Some(record), .. }) = parse_line(&line) {
                each(record);
            }
            progress(done, Some(total));
        }
    }
    Ok(())
}

/// The result of verifying the chain.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every record present checks out. `removed` records (seq 1 to `removed`) are no longer
    /// present, removed by retention: they cannot be checked, and the chain is verified from its
    /// anchor, which is taken as given.
    Intact { records: u64, last_seq: u64, removed: u64 },
    /// The first record that breaks the chain, and how.
    Broken { segment: PathBuf, line: usize, seq: Option<u64>, problem: String },
}

/// Walks a chain's records in order and checks each, whatever the anchor says: its seq follows
/// the one before, its link is the previous record's hash, its content matches its own hash. The
/// first record present links to the anchor when it follows it (or to the start of the log);
/// records at or below the anchor's seq that are still present (retention stopped between
/// writing the anchor and removing their segment, or a forged anchor) are checked like any
/// other, and the one at the anchor's seq must have the anchor's hash. An anchor beyond the last
/// record present is a break in itself: retention never removes the records being written.
/// Shared by the segment files' [`verify`] and PostgreSQL's.
pub(crate) struct ChainWalk {
    anchor: Anchor,
    /// The seq and hash of the last record checked.
    last: Option<(u64, String)>,
    first_seq: Option<u64>,
    records: u64,
}

/// What a [`ChainWalk`] checked.
pub(crate) struct Walked {
    pub records: u64,
    pub last_seq: u64,
    /// Records before the first one present (seq 1 to `removed`), which cannot be checked.
    pub removed: u64,
}

impl ChainWalk {
    pub(crate) fn new(anchor: Option<Anchor>) -> ChainWalk {
        let anchor = anchor.unwrap_or(Anchor { seq: 0, hash: GENESIS.into() });
        ChainWalk { anchor, last: None, first_seq: None, records: 0 }
    }

    /// Checks the next record present; the problem, when it breaks the chain.
    pub(crate) fn check(&mut self, line: &Line) -> Result<(), String> {
        let anchored = self.anchor.seq > 0;
        let (expected, prev) = match &self.last {
            Some((seq, hash)) => (seq + 1, Some(hash.as_str())),
            // A record the anchor says was removed: its link to the records before it, which
            // are gone, cannot be checked (but for the very first).
            None if anchored && line.seq <= self.anchor.seq => (line.seq, (line.seq == 1).then_some(GENESIS)),
            None => (self.anchor.seq + 1, Some(self.anchor.hash.as_str())),
        };
        if line.seq != expected {
            return Err(if line.seq > expected {
                format!("record {expected} is missing (deleted, or records reordered)")
            } else {
                format!("seq {} comes after {} (inserted, or records reordered)", line.seq, expected - 1)
            });
        }
        if prev.is_some_and(|prev| prev != line.prev) {
            return Err(if self.last.is_none() && anchored {
                format!(
                    "its link to the anchor (the last record removed by retention, seq {}) does not match \
                     (the anchor was changed, or records before it)",
                    self.anchor.seq
                )
            } else {
                "its link to the previous record does not match (a record before it was changed, removed or inserted)"
                    .to_owned()
            });
        }
        if !line.intact {
            return Err("its content does not match its hash (edited)".to_owned());
        }
        if anchored && line.seq == self.anchor.seq && line.hash != self.anchor.hash {
            return Err(format!(
                "the anchor names seq {} with another hash than this record's (the anchor or the record was changed)",
                self.anchor.seq
            ));
        }
        self.first_seq.get_or_insert(line.seq);
        self.last = Some((line.seq, line.hash.clone()));
        self.records += 1;
        Ok(())
    }

    /// What was checked, once every record present has been; the problem when the anchor claims
    /// records that are not there.
    pub(crate) fn finish(self) -> Result<Walked, String> {
        let Some((last_seq, _)) = self.last else {
            return Ok(Walked { records: 0, last_seq: self.anchor.seq, removed: self.anchor.seq });
        };
        if last_seq < self.anchor.seq {
            return Err(format!(
                "the anchor says records up to seq {} were removed by retention, but the records present end at \
                 seq {last_seq}: retention never removes the newest records (a forged anchor?)",
                self.anchor.seq
            ));
        }
        let removed = self.first_seq.map_or(0, |first| first - 1);
        Ok(Walked { records: self.records, last_seq, removed })
    }
}

/// Walks the whole chain from the first record present and names the first bad record; see
/// [`ChainWalk`] for what is checked, and [`Verdict::Intact`] for what cannot be.
pub fn verify(dir: &Path) -> Result<Verdict, String> {
    let mut walk = ChainWalk::new(read_anchor(dir).map_err(|e| e.to_string())?);
    for path in segments(dir).map_err(|e| e.to_string())? {
        let text = fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        for (i, line) in text.split_inclusive('\n').enumerate() {
            let broken = |seq: Option<u64>, problem: String| Verdict::Broken {
                segment: path.clone(),
                line: i + 1,
                seq,
                problem,
            };
            if !line.ends_with('\n') {
                return Ok(broken(None, "the record is torn (no end of line)".to_owned()));
            }
            let Some(parsed) = parse_line(line.trim_end_matches('\n')) else {
                return Ok(broken(None, "the line is not an audit record".to_owned()));
            };
            if let Err(problem) = walk.check(&parsed) {
                return Ok(broken(Some(parsed.seq), problem));
            }
        }
    }
    let anchor_seq = walk.anchor.seq;
    Ok(match walk.finish() {
        Ok(Walked { records, last_seq, removed }) => Verdict::Intact { records, last_seq, removed },
        Err(problem) => Verdict::Broken { segment: dir.join("anchor.json"), line: 1, seq: Some(anchor_seq), problem },
    })
}

/// Removes the segments whose every record is older than `cutoff`, recording the last removed
/// record as the new anchor first, so the remaining chain still verifies. The segment being
/// written is never removed.
pub fn prune(dir: &Path, cutoff: DateTime<Utc>) -> Result<usize, String> {
    let files = segments(dir).map_err(|e| e.to_string())?;
    let mut removed = 0;
    for path in files.iter().take(files.len().saturating_sub(1)) {
        let text = fs::read_to_string(path).map_err(|e| e.to_string())?;
        let lines: Vec<Line> = text.lines().filter_map(parse_line).collect();
        let newest = lines.iter().filter_map(|l| l.record.as_ref().map(Record::time)).max();
        if newest.is_some_and(|t| t >= cutoff) {
            break;
        }
        if let Some(last) = lines.last() {
            let anchor = Anchor { seq: last.seq, hash: last.hash.clone() };
            crate::state::write_private(
                &dir.join("anchor.json"),
                &serde_json::to_string(&anchor).expect("anchors serialize"),
            )
            .map_err(|e| e.to_string())?;
        }
        fs::remove_file(path).map_err(|e| e.to_string())?;
        removed += 1;
    }
    sync_dir(dir);
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditSink;

    fn checkpoint(time: &str) -> Record {
        Record::Checkpoint { time: time.parse().unwrap(), note: "x".repeat(100) }
    }

    #[tokio::test]
    async fn retention_removes_old_segments_and_the_rest_still_verifies() {
        let dir = tempfile::tempdir().unwrap();
        // Small segments: a few records each.
        let log = open(dir.path(), 600, AuditMetrics::detached()).unwrap();
        for _ in 0..10 {
            log.append(checkpoint("2020-01-01T00:00:00Z")).await.unwrap();
        }
        for _ in 0..10 {
            log.append(checkpoint("2026-01-01T00:00:00Z")).await.unwrap();
        }
        let before = segments(dir.path()).unwrap().len();
        assert!(before > 3, "{before} segments");
        let removed = prune(dir.path(), "2025-01-01T00:00:00Z".parse().unwrap()).unwrap();
        assert!(removed >= 2, "removed {removed}");
        let anchor = read_anchor(dir.path()).unwrap().unwrap();
        assert!(anchor.seq >= 4 && anchor.seq <= 10, "{anchor:?}");
        let remaining = read_lines(dir.path()).unwrap();
        assert!(remaining.iter().all(|(line, _)| parse_line(line).unwrap().seq > anchor.seq));
        assert!(remaining.iter().filter(|(_, r)| r.time().to_rfc3339().starts_with("2026")).count() == 10);
        assert_eq!(
            verify(dir.path()).unwrap(),
            Verdict::Intact { records: 20 - anchor.seq, last_seq: 20, removed: anchor.seq }
        );
        // The log goes on after pruning, from where it was.
        assert_eq!(log.append(checkpoint("2026-02-01T00:00:00Z")).await.unwrap(), 21);
    }

    #[tokio::test]
    async fn a_restart_right_after_a_rotation_continues_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        {
            // Every record fills a segment, so each commit rotates to a new, empty one.
            let log = open(dir.path(), 1, AuditMetrics::detached()).unwrap();
            log.append(checkpoint("2026-01-01T00:00:00Z")).await.unwrap();
            log.append(checkpoint("2026-01-01T00:00:00Z")).await.unwrap();
        }
        let log = open(dir.path(), 1, AuditMetrics::detached()).unwrap();
        assert_eq!(log.append(checkpoint("2026-01-01T00:00:00Z")).await.unwrap(), 3);
        assert_eq!(verify(dir.path()).unwrap(), Verdict::Intact { records: 3, last_seq: 3, removed: 0 });
    }

    #[tokio::test]
    async fn a_write_torn_inside_a_character_is_cut_off_on_start() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = open(dir.path(), 1 << 20, AuditMetrics::detached()).unwrap();
            log.append(checkpoint("2026-01-01T00:00:00Z")).await.unwrap();
        }
        let segment = segments(dir.path()).unwrap().pop().unwrap();
        let mut bytes = fs::read(&segment).unwrap();
        let torn = "{\"seq\":2,\"note\":\"海州".as_bytes();
        bytes.extend_from_slice(&torn[..torn.len() - 1]);
        fs::write(&segment, bytes).unwrap();
        let log = open(dir.path(), 1 << 20, AuditMetrics::detached()).unwrap();
        assert_eq!(log.append(checkpoint("2026-01-01T00:00:00Z")).await.unwrap(), 2);
        assert_eq!(verify(dir.path()).unwrap(), Verdict::Intact { records: 2, last_seq: 2, removed: 0 });
    }

    #[tokio::test]
    async fn a_bad_line_in_the_middle_is_never_truncated_away() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = open(dir.path(), 1 << 20, AuditMetrics::detached()).unwrap();
            for _ in 0..3 {
                log.append(checkpoint("2026-01-01T00:00:00Z")).await.unwrap();
            }
        }
        let segment = segments(dir.path()).unwrap().pop().unwrap();
        let text = fs::read_to_string(&segment).unwrap();
        let edited = text.replacen("\"seq\":2,", "\"seq\":two,", 1);
        fs::write(&segment, &edited).unwrap();
        drop(open(dir.path(), 1 << 20, AuditMetrics::detached()).unwrap());
        assert_eq!(fs::read_to_string(&segment).unwrap(), edited, "the evidence stays");
        assert!(matches!(verify(dir.path()).unwrap(), Verdict::Broken { line: 2, .. }));
    }

    #[tokio::test]
    async fn records_are_numbered_and_chained_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = open(dir.path(), 1 << 20, AuditMetrics::detached()).unwrap();
            assert_eq!(log.append(checkpoint("2026-01-01T00:00:00Z")).await.unwrap(), 1);
            assert_eq!(log.append(checkpoint("2026-01-01T00:00:00Z")).await.unwrap(), 2);
        }
        let log = open(dir.path(), 1 << 20, AuditMetrics::detached()).unwrap();
        assert_eq!(log.append(checkpoint("2026-01-01T00:00:00Z")).await.unwrap(), 3);
        assert_eq!(verify(dir.path()).unwrap(), Verdict::Intact { records: 3, last_seq: 3, removed: 0 });
    }
}
