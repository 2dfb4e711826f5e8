//! The decoded-data cache: datasets held in memory as Arrow record batches, decoded once per
//! version and shared by every call on every protocol, with the indexes their entries declare.
//!
//! A call on a file dataset looks its data up by (dataset, catalog version, file version: length
//! and modification time, read with one `stat`): a changed file or a new publication is a new
//! key, so it is never answered from the old data once the change is seen, while a call that
//! started on the old data keeps it (the decoded data is shared by `Arc`). The entries are
//! bounded by `[cache] max_bytes`, weighed by their bytes, and the most used are kept (moka's
//! TinyLFU); a dataset whose entry says `cache = "never"`, an upstream origin, or a file larger
//! than the whole cache (under `cache = "auto"`) is read from its source on every call instead.
//! Concurrent first calls on a version decode it once.
//!
//! An index on a column is the column's non-null values sorted, with their row numbers: a
//! comparison (`=`, `in`, `<`, `<=`, `>`, `>=`, and `and`/`or` of them) becomes a binary search
//! and the rows found, in O(log n + k). Indexes only narrow the rows read: the pipeline still
//! applies the agreement's row filter, its masks and the caller's whole filter to exactly those
//! rows. A caller's comparison on a masked column is evaluated on masked values, so it never
//! uses the index, which holds raw values; the agreement's own row filter, on raw values, does.
//!
//! A comparison on a column without an index skips the blocks of rows whose summaries show
//! they cannot match ([`zones`]), under the same rule for masked columns.
//!
//! Small answers to calls that every caller is answered alike (unconditional data, no quota to
//! count) are kept too, encoded, by the decoded version they were read from and the normalized
//! query and format: the same call on the same version is then answered from them without
//! reading the data again. They are bounded by `[cache] answer_bytes`; a new version has new
//! decoded data, so an answer of the old one is never given for it. An answer is kept the second
//! time its query is asked lately, not the first: calls that are never repeated (a lookup by a
//! new key each time) then neither pay for keeping their answers nor push out the answers of
//! calls that are.

mod zones;

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{make_comparator, Array, ArrayRef, UInt32Array};
use arrow::buffer::BooleanBuffer;
use arrow::compute::{concat_batches, sort_to_indices, take, take_record_batch, SortOptions};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use dashmap::DashMap;
use futures_util::TryStreamExt;
use policy::filter::{CmpOp, Expr};
use policy::Mask;
use prometheus::{Histogram, IntCounter, IntGauge};

use crate::answers::{Answers, ANSWER_RESERVE_BYTES};
use crate::config::{CacheConfig, CachePolicy, SourceConfig};
use crate::error::{Error, Kind};
use crate::metrics::Metrics;
use crate::pipeline::literal_array;
use crate::source::{arrow_schema, file, slice_bytes, BatchStream, Batches, SourceContext};
use crate::state::CatalogEntry;
use zones::Zones;

/// The cache is weighed in KiB, so that any entry's weight fits moka's `u32`.
const UNIT: u64 = 1024;

/// Dataset id, catalog version, file version.
type Key = (String, u64, String);

/// Answers larger than this are not kept encoded.
pub const KEPT_ANSWER_MAX_BYTES: usize = 64 * 1024;

/// A kept answer's key: the decoded data it was read from and the live state (catalog, limits)
/// it was answered under, by their serial numbers, and what was asked ([`AnswerKey`]).
type KeptKey = (u64, u64, Arc<str>);

/// Serial numbers of decoded data, unique in the process.
static SERIALS: AtomicU64 = AtomicU64::new(0);

/// A kept answer: its bytes as sent, the rows they hold, and whether they are compressed (in the
/// coding its key names).
#[derive(Clone)]
pub struct KeptAnswer {
    pub body: Bytes,
    pub rows: u64,
    pub coded: bool,
}

/// What a call asked of decoded data, normalized (format, columns, filter, order, offset,
/// limit), as the key of its kept answer.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AnswerKey(pub Arc<str>);

/// One version of a dataset, decoded, with its indexes.
pub struct Decoded {
    /// Every declared field, in declared order and types.
    batch: RecordBatch,
    /// Indexes by the position of their field.
    indexes: HashMap<usize, Index>,
    bytes: u64,
    version: String,
    /// The declared fields' names, by position.
    names: Vec<String>,
    /// Summaries of blocks of rows, for the columns without an index.
    zones: Zones,
    blocks: BlockCounters,
    /// Tells this version's kept answers from every other version's.
    serial: u64,
}

/// Blocks kept and skipped by reads.
#[derive(Clone)]
struct BlockCounters {
    read: IntCounter,
    skipped: IntCounter,
}

/// A column's non-null values in order, and the row each came from.
struct Index {
    sorted: ArrayRef,
    rows: UInt32Array,
}

/// The decoded data of every cached dataset.
pub struct DecodedCache {
    entries: moka::future::Cache<Key, Arc<Decoded>>,
    max_bytes: u64,
    /// The key each dataset was last cached under, so a new version gives the old one's memory
    /// back at once.
    current: DashMap<String, Key>,
    /// Versions found too large to keep, or that failed to decode, so they are not decoded again
    /// on every call: they are read from the source as it streams.
    not_kept: DashMap<String, Key>,
    hits: IntCounter,
    misses: IntCounter,
    decode_seconds: Histogram,
    held: IntGauge,
    blocks: BlockCounters,
    /// Small encoded answers, by the decoded version and the query they answer.
    kept: moka::sync::Cache<KeptKey, KeptAnswer>,
    /// The queries asked once lately, for keeping an answer the second time it is given.
    seen: Doorkeeper,
    kept_hits: IntCounter,
    kept_misses: IntCounter,
}

impl DecodedCache {
    pub fn new(config: &CacheConfig, metrics: &Metrics) -> DecodedCache {
        let held = metrics.decoded_bytes.clone();
        let evictions = metrics.decoded_evictions.clone();
        let entries = moka::future::Cache::builder()
            .max_capacity(config.max_bytes / UNIT)
            .weigher(|_: &Key, d: &Arc<Decoded>| u32::try_from(d.bytes.div_ceil(UNIT)).unwrap_or(u32::MAX))
            .eviction_listener(move |_, d: Arc<Decoded>, cause| {
                held.sub(d.bytes as i64);
                if cause.was_evicted() {
                    evictions.inc();
                }
            })
            .build();
        let kept = moka::sync::Cache::builder()
            .max_capacity(config.answer_bytes)
            .weigher(|k: &KeptKey, v: &KeptAnswer| u32::try_from(k.2.len() + v.body.len() + 64).unwrap_or(u32::MAX))
            .build();
        DecodedCache {
            entries,
            kept,
            seen: Doorkeeper::new(),
            kept_hits: metrics.cache_lookups.with_label_values(&["answers", "hit"]),
            kept_misses: metrics.cache_lookups.with_label_values(&["answers", "miss"]),
            max_bytes: config.max_bytes,
            current: DashMap::new(),
            not_kept: DashMap::new(),
            hits: metrics.cache_lookups.with_label_values(&["decoded", "hit"]),
            misses: metrics.cache_lookups.with_label_values(&["decoded", "miss"]),
            decode_seconds: metrics.decode_seconds.clone(),
            held: metrics.decoded_bytes.clone(),
            blocks: BlockCounters {
                read: metrics.decoded_blocks.with_label_values(&["read"]),
                skipped: metrics.decoded_blocks.with_label_values(&["skipped"]),
            },
        }
    }

    /// The dataset's data as its file is now: from memory, or decoded now and kept. `None` when
    /// the dataset is read from its source instead.
    pub async fn get(
        &self,
        entry: &CatalogEntry,
        ctx: &SourceContext<'_>,
        answers: &Answers,
    ) -> Result<Option<Arc<Decoded>>, Error> {
        let config = &entry.config;
        let SourceConfig::File(path) = &config.source else { return Ok(None) };
        if config.cache == CachePolicy::Never {
            return Ok(None);
        }
        let path = ctx.data_dir.join(path);
        let info = file::FileInfo::of_path(&path)?;
        if config.cache == CachePolicy::Auto && info.len > self.max_bytes {
            return Ok(None);
        }
        let key: Key = (config.id.to_string(), entry.version, info.version);
        if let Some(decoded) = self.entries.get(&key).await {
            self.hits.inc();
            return Ok(Some(decoded));
        }
        if self.not_kept.get(&key.0).is_some_and(|k| *k == key) {
            return Ok(None);
        }
        self.misses.inc();
        let decoding = self.decode(entry, ctx, answers, path, key.2.clone());
        let decoded = match self.entries.try_get_with(key.clone(), decoding).await {
            Ok(decoded) => decoded,
            // No room to decode now: the call is refused, and a later one decodes.
            Err(e) if e.code == "overloaded" => return Err((*e).clone()),
            Err(e) => {
                // A file that cannot be decoded whole is served as it streams, so that what can
                // be read reaches the caller before the failure does, as for any source.
                tracing::warn!(dataset = %key.0, error = %e, "dataset not decoded into the cache; read from its source");
                self.not_kept.insert(key.0.clone(), key);
                return Ok(None);
            }
        };
        if decoded.bytes > self.max_bytes {
            // Served this once; the entry leaves at once, and the version is not decoded again.
            self.entries.invalidate(&key).await;
            self.not_kept.insert(key.0.clone(), key);
            return Ok(Some(decoded));
        }
        if let Some(old) = self.current.insert(key.0.clone(), key.clone()).filter(|old| *old != key) {
            self.entries.invalidate(&old).await;
        }
        // Evict now what the new entry pushed past the bound, rather than at some later call.
        self.entries.run_pending_tasks().await;
        Ok(Some(decoded))
    }

    async fn decode(
        &self,
        entry: &CatalogEntry,
        ctx: &SourceContext<'_>,
        answers: &Answers,
        path: std::path::PathBuf,
        version: String,
    ) -> Result<Arc<Decoded>, Error> {
        let started = Instant::now();
        let config = &entry.config;
        let schema = arrow_schema(&config.fields);
        let all = (0..config.fields.len()).collect();
        let whole = file::Reading {
            declared: schema.clone(),
            projection: all,
            schema: schema.clone(),
            batch_rows: ctx.batch_rows,
            pushdown: Default::default(),
        };
        let mut read = file::open_batches(path, config.format, whole).await?;
        // What is decoded is reserved in the memory budget of work in flight, twice (the batches,
        // then the one batch they are joined into), until the cache holds it. A dataset that
        // would take more than the whole budget (less the answer of the call decoding it) can
        // never be decoded: that is not a refusal to retry later but a dataset served from its
        // source (see `get`).
        let room = answers.budget_bytes().saturating_sub(ANSWER_RESERVE_BYTES);
        let mut batches: Vec<RecordBatch> = Vec::new();
        let mut reserved = Vec::new();
        let mut total = 0u64;
        while let Some(batch) = read.stream.try_next().await? {
            let bytes = 2 * slice_bytes(&batch) as u64;
            total += bytes;
            if total > room {
                return Err(Error::new(
                    Kind::Unavailable,
                    "exceeds_memory_budget",
                    format!(
                        "decoding it takes more than the whole memory budget for work in flight \
                         ([server] answer_memory_bytes = {})",
                        answers.budget_bytes()
                    ),
                ));
            }
            reserved.push(answers.reserve(bytes, "cache").await?);
            batches.push(batch);
        }
        let names: Vec<String> = config.fields.iter().map(|f| f.name.clone()).collect();
        let indexed: Vec<usize> =
            config.index.iter().filter_map(|name| config.fields.iter().position(|f| &f.name == name)).collect();
        let blocks = self.blocks.clone();
        let decoded = tokio::task::spawn_blocking(move || -> Result<Decoded, Error> {
            let batch = concat_batches(&schema, &batches)?;
            drop(batches);
            let mut indexes = HashMap::new();
            for i in indexed {
                let column = batch.column(i);
                // Nulls first, then skipped: a comparison with null is never true.
                let order = sort_to_indices(column, Some(SortOptions { descending: false, nulls_first: true }), None)?;
                let rows = order.slice(column.null_count(), order.len() - column.null_count());
                let sorted = take(column, &rows, None)?;
                indexes.insert(i, Index { sorted, rows });
            }
            let zones = Zones::build(&batch, zones::BLOCK_ROWS);
            let bytes = (batch.get_array_memory_size()
                + zones.bytes()
                + indexes
                    .values()
                    .map(|x| x.sorted.get_array_memory_size() + x.rows.get_array_memory_size())
                    .sum::<usize>()) as u64;
            let serial = SERIALS.fetch_add(1, Ordering::Relaxed);
            Ok(Decoded { batch, indexes, bytes, version, names, zones, blocks, serial })
        })
        .await
        .map_err(|e| Error::internal(format!("decoding task failed: {e}")))??;
        drop(reserved);
        self.decode_seconds.observe(started.elapsed().as_secs_f64());
        // What this returns is what the cache holds, until its eviction gives the bytes back.
        self.held.add(decoded.bytes as i64);
        tracing::info!(dataset = %config.id, rows = decoded.batch.num_rows(), bytes = decoded.bytes, "dataset decoded into the cache");
        let decoded = Arc::new(decoded);
        Ok(decoded)
    }

    /// The answer kept for `key` on `decoded` under live state `live`, if there is one.
    pub fn recall(&self, decoded: &Decoded, live: u64, key: &AnswerKey) -> Option<KeptAnswer> {
        let found = self.kept.get(&(decoded.serial, live, key.0.clone()));
        match found {
            Some(_) => self.kept_hits.inc(),
            None => self.kept_misses.inc(),
        }
        found
    }

    /// Keeps `answer`, the whole encoded answer to `key` on `decoded` under live state `live`,
    /// if it is small enough and the same answer was given once before lately.
    pub fn keep(&self, decoded: &Decoded, live: u64, key: AnswerKey, answer: KeptAnswer) {
        if answer.body.len() > KEPT_ANSWER_MAX_BYTES {
            return;
        }
        let kept_key = (decoded.serial, live, key.0);
        if self.seen.second_sight(&kept_key) {
            self.kept.insert(kept_key, answer);
        }
    }
}

/// The answers given once lately, as a table of their keys' hashes, one per slot: a key whose
/// hash is in its slot was seen (or, rarely, another key with the same hash), and a key seen
/// takes the slot of whatever was there. Lock-free, fixed in size, and forgetting on its own.
struct Doorkeeper {
    hasher: RandomState,
    slots: Box<[AtomicU64]>,
}

impl Doorkeeper {
    const SLOTS: usize = 1 << 16;

    fn new() -> Doorkeeper {
        Doorkeeper { hasher: RandomState::new(), slots: (0..Self::SLOTS).map(|_| AtomicU64::new(0)).collect() }
    }

    /// Whether `key` was seen lately; it is marked as seen either way.
    fn second_sight(&self, key: &KeptKey) -> bool {
        let hash = self.hasher.hash_one(key);
        let slot = &self.slots[(hash >> 32) as usize % Self::SLOTS];
        // Never 0, what an empty slot holds.
        let mark = hash | 1;
        slot.swap(mark, Ordering::Relaxed) == mark
    }
}

impl Decoded {
    /// The number of rows.
    pub fn rows(&self) -> u64 {
        self.batch.num_rows() as u64
    }

    /// The version of the data: the file's length and modification time.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The batches a call reads: the columns at `projection`, in slices of `batch_rows`, of the
    /// rows the indexes and block summaries leave for the grant's row filter (`scope`) and the
    /// caller's `filter` (on columns without a mask only), or of every row.
    pub fn read(
        self: &Arc<Self>,
        projection: &[usize],
        scope: Option<&Expr>,
        filter: Option<&Expr>,
        masks: &BTreeMap<String, Mask>,
        batch_rows: usize,
    ) -> Result<Batches, Error> {
        let index_of = |column: &str, raw: bool| {
            let i = self.names.iter().position(|n| n == column)?;
            (raw || !masks.contains_key(column)).then_some(i)
        };
        let scope_rows = scope.and_then(|e| self.candidates(e, &|c| index_of(c, true)));
        let filter_rows = filter.and_then(|e| self.candidates(e, &|c| index_of(c, false)));
        let block_rows = self.zones.block_rows();
        let selection = match (scope_rows, filter_rows) {
            (Some(a), Some(b)) => Some(a.and(b, block_rows)),
            (a, b) => a.or(b),
        };
        let projected = self.batch.project(projection)?;
        let step = batch_rows.max(1);
        // Row ranges of `batch` to answer, each cut in slices of `step` rows.
        let (batch, ranges): (RecordBatch, Vec<std::ops::Range<usize>>) = match selection {
            None => (projected, std::iter::once(0..self.batch.num_rows()).collect()),
            Some(Selection::Rows(rows)) => {
                let batch = take_record_batch(&projected, &UInt32Array::from(rows))?;
                let all = std::iter::once(0..batch.num_rows()).collect();
                (batch, all)
            }
            Some(Selection::Blocks(blocks)) => {
                let kept = blocks.count_set_bits();
                self.blocks.read.inc_by(kept as u64);
                self.blocks.skipped.inc_by((blocks.len() - kept) as u64);
                let total = projected.num_rows();
                // Runs of kept blocks, as row ranges.
                let ranges =
                    blocks.set_slices().map(|(start, end)| start * block_rows..(end * block_rows).min(total)).collect();
                (projected, ranges)
            }
        };
        let slices = ranges.into_iter().flat_map(move |range| {
            let batch = batch.clone();
            range.clone().step_by(step).map(move |offset| Ok(batch.slice(offset, step.min(range.end - offset))))
        });
        let stream: BatchStream = Box::pin(futures_util::stream::iter(slices));
        Ok(Batches { version: Some(self.version.clone()), stream })
    }

    /// The rows that may match `expr`, if the indexes or the block summaries can tell; `None`
    /// means every row must be read. `column` gives the field position of a column whose index
    /// or summaries may be used.
    fn candidates(&self, expr: &Expr, column: &dyn Fn(&str) -> Option<usize>) -> Option<Selection> {
        let indexed = |name: &str| column(name).and_then(|i| self.indexes.get(&i).map(|x| (i, x)));
        let zoned = || self.zones.select(expr, &self.batch.schema(), column).map(Selection::Blocks);
        let block_rows = self.zones.block_rows();
        let found = match expr {
            Expr::Compare { column: c, op, value } if *op != CmpOp::NotEq => {
                let Some((i, index)) = indexed(&c.name) else { return zoned() };
                let literal = literal_array(self.batch.schema().field(i).data_type(), value, c).ok()?;
                let mut rows = index.range(*op, &literal)?;
                rows.sort_unstable();
                Selection::Rows(rows)
            }
            Expr::In { column: c, values, negated: false } => {
                let Some((i, index)) = indexed(&c.name) else { return zoned() };
                let mut rows = Vec::new();
                for value in values {
                    let literal = literal_array(self.batch.schema().field(i).data_type(), value, c).ok()?;
                    rows.extend(index.range(CmpOp::Eq, &literal)?);
                }
                rows.sort_unstable();
                rows.dedup();
                Selection::Rows(rows)
            }
            Expr::And(a, b) => match (self.candidates(a, column), self.candidates(b, column)) {
                (Some(a), Some(b)) => a.and(b, block_rows),
                (a, b) => a.or(b)?,
            },
            Expr::Or(a, b) => self.candidates(a, column)?.or(self.candidates(b, column)?, block_rows),
            _ => return None,
        };
        // Past a quarter of the rows, reading them all is as quick as gathering them.
        match found {
            Selection::Rows(rows) if rows.len() > self.batch.num_rows() / 4 + 1 => None,
            found => Some(found),
        }
    }
}

/// The rows a read may be limited to.
enum Selection {
    /// These rows, ascending.
    Rows(Vec<u32>),
    /// The rows of the blocks set.
    Blocks(BooleanBuffer),
}

impl Selection {
    /// The rows in both.
    fn and(self, other: Selection, block_rows: usize) -> Selection {
        match (self, other) {
            (Selection::Rows(a), Selection::Rows(b)) => Selection::Rows(intersect(&a, &b)),
            (Selection::Rows(rows), Selection::Blocks(blocks)) | (Selection::Blocks(blocks), Selection::Rows(rows)) => {
                Selection::Rows(rows.into_iter().filter(|&r| blocks.value(r as usize / block_rows)).collect())
            }
            (Selection::Blocks(a), Selection::Blocks(b)) => Selection::Blocks(&a & &b),
        }
    }

    /// The rows in either.
    fn or(self, other: Selection, block_rows: usize) -> Selection {
        match (self, other) {
            (Selection::Rows(a), Selection::Rows(b)) => {
                let mut rows = [a, b].concat();
                rows.sort_unstable();
                rows.dedup();
                Selection::Rows(rows)
            }
            (Selection::Rows(rows), Selection::Blocks(blocks)) | (Selection::Blocks(blocks), Selection::Rows(rows)) => {
                let mut kept = arrow::array::BooleanBufferBuilder::new(blocks.len());
                kept.append_buffer(&blocks);
                for r in rows {
                    kept.set_bit(r as usize / block_rows, true);
                }
                Selection::Blocks(kept.finish())
            }
            (Selection::Blocks(a), Selection::Blocks(b)) => Selection::Blocks(&a | &b),
        }
    }
}

impl Index {
    /// The rows whose value stands in `op` to `literal` (a one-value array of the column's type).
    fn range(&self, op: CmpOp, literal: &ArrayRef) -> Option<Vec<u32>> {
        let compare = make_comparator(&self.sorted, literal, SortOptions::default()).ok()?;
        let n = self.sorted.len();
        let first_not_less = partition_point(n, |i| compare(i, 0).is_lt());
        let first_greater = partition_point(n, |i| compare(i, 0).is_le());
        let range = match op {
            CmpOp::Eq => first_not_less..first_greater,
            CmpOp::Lt => 0..first_not_less,
            CmpOp::LtEq => 0..first_greater,
            CmpOp::Gt => first_greater..n,
            CmpOp::GtEq => first_not_less..n,
            CmpOp::NotEq => return None,
        };
        Some(self.rows.values()[range].to_vec())
    }
}

/// The first position in `0..n` where `before` turns false (it is true, then false).
fn partition_point(n: usize, before: impl Fn(usize) -> bool) -> usize {
    let (mut low, mut high) = (0, n);
    while low < high {
        let mid = low + (high - low) / 2;
        if before(mid) {
            low = mid + 1;
        } else {
            high = mid;
        }
    }
    low
}

/// The rows in both ascending lists.
fn intersect(a: &[u32], b: &[u32]) -> Vec<u32> {
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out
}
