//! Sources: where a dataset's bytes come from, and how they become record batches.
//!
//! A source is a local file (CSV, NDJSON, Parquet, Arrow IPC) or an upstream HTTP origin.
//! Each gives two things: the original bytes, untouched, for raw download
//! ([`file::open_bytes`], [`upstream::Upstream::get`]), and a bounded stream of record batches in
//! the catalog's declared schema for queries ([`open_batches`]).
//!
//! File work is pulled ([`pulled`]): one step of reading (a chunk of a file, a Parquet batch)
//! runs on a blocking thread when the consumer asks for more, and one step is read ahead. A slow
//! or stalled client therefore holds no thread and no more than one step's data: the reader's
//! state waits in the stream, and a client that goes away drops it. Steps are bounded in bytes
//! ([`MAX_STEP_BYTES`]), whatever the width of a row. A failure midway reaches the consumer as
//! an `Err` item, never as a silent end.
//!
//! A query's [`Pushdown`] lets a file source read less than the whole file: Parquet row groups
//! and pages whose statistics prove that no row can pass are skipped ([`parquet`]), and every
//! file format stops reading once the rows an answer can use are read. What a source yields is
//! still filtered in full by the pipeline: pushdown only ever leaves out rows no answer holds.

pub mod decode;
pub mod file;
pub mod parquet;
pub mod upstream;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field as ArrowField, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use futures_util::Stream;
use policy::{Field, FieldType};

use crate::config::{DatasetConfig, SourceConfig};
use crate::error::Error;

/// Pieces of an answer on their way to a caller, any of which may be an error.
pub type Pieces<T> = Pin<Box<dyn Stream<Item = Result<T, Error>> + Send>>;
/// Record batches on their way from a source.
pub type BatchStream = Pieces<RecordBatch>;
/// Raw bytes on their way from a source.
pub type ByteStream = Pieces<Bytes>;

/// Bytes one reading step yields at most (input read for CSV and NDJSON, decoded batch for
/// Parquet and Arrow): with one step read ahead and one being encoded, what an answer holds is
/// a few times this, whatever its client does.
pub const MAX_STEP_BYTES: usize = 1 << 20;

/// The Arrow schema of a declared field list: how every source's data is typed on the way out.
pub fn arrow_schema(fields: &[Field]) -> SchemaRef {
    Arc::new(Schema::new(
        fields.iter().map(|f| ArrowField::new(&f.name, arrow_type(f.field_type), true)).collect::<Vec<_>>(),
    ))
}

/// The Arrow type a declared field type is served as.
pub fn arrow_type(t: FieldType) -> DataType {
    match t {
        FieldType::String => DataType::Utf8,
        FieldType::Int64 => DataType::Int64,
        FieldType::Float64 => DataType::Float64,
        FieldType::Boolean => DataType::Boolean,
        FieldType::Date => DataType::Date32,
        FieldType::Timestamp => DataType::Timestamp(TimeUnit::Millisecond, Some("+00:00".into())),
    }
}

/// An open batch stream and what is known of the data behind it.
pub struct Batches {
    /// The content version of the data being read, when the source tells.
    pub version: Option<String>,
    /// Batches in the projected declared schema.
    pub stream: BatchStream,
}

/// What a query lets a source leave unread; [`Pushdown::default`] reads everything.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pushdown {
    /// Conditions every row of the answer meets, on the source's raw values: the agreement's
    /// row filter, and those parts of the caller's filter that read no masked column. A source
    /// may skip data that statistics prove fails one of them, and nothing else.
    pub filters: Vec<policy::Expr>,
    /// Rows, counted from the start of the data in source order, past which no row is used:
    /// `offset + limit` of a query without filter or order.
    pub rows: Option<usize>,
}

/// What reading a source needs besides the dataset itself.
pub struct SourceContext<'a> {
    pub data_dir: &'a std::path::Path,
    pub upstream: &'a upstream::Upstream,
    pub batch_rows: usize,
}

/// Opens the dataset for reading the declared columns at `projection` (indices into the
/// declared fields, in the order wanted), leaving unread what `pushdown` allows.
pub async fn open_batches(
    dataset: &DatasetConfig,
    ctx: &SourceContext<'_>,
    projection: Vec<usize>,
    pushdown: Pushdown,
) -> Result<Batches, Error> {
    let declared = arrow_schema(&dataset.fields);
    let schema = Arc::new(declared.project(&projection)?);
    match &dataset.source {
        SourceConfig::File(path) => {
            let path = ctx.data_dir.join(path);
            let read = file::Reading { declared, projection, schema, batch_rows: ctx.batch_rows, pushdown };
            file::open_batches(path, dataset.format, read).await
        }
        SourceConfig::Url(url) => {
            let response = ctx.upstream.request(&hyper::Method::GET, url, &hyper::HeaderMap::new()).await?;
            if !response.status.is_success() {
                ctx.upstream.error("status");
                return Err(Error::source(format!("the origin answered {}", response.status)));
            }
            let version = response.etag();
            let decoder = decode::Decoder::new(dataset.format, declared, projection, ctx.batch_rows)?;
            Ok(Batches { version, stream: decode::decode_stream(response.body, decoder) })
        }
    }
}

/// Makes a batch conform to `schema`: columns picked by name, in schema order, cast to the
/// declared types. Parquet and Arrow files carry their own schema, which may order or type
/// columns differently from the catalog.
pub fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, Error> {
    let columns = schema
        .fields()
        .iter()
        .map(|field| {
            let column = batch.column_by_name(field.name()).ok_or_else(|| {
                Error::source(format!("the source has no column `{}` although the catalog declares it", field.name()))
            })?;
            if column.data_type() == field.data_type() {
                Ok(column.clone())
            } else {
                arrow::compute::cast(column, field.data_type()).map_err(|e| {
                    Error::source(format!("column `{}` cannot be read as {}: {e}", field.name(), field.data_type()))
                })
            }
        })
        .collect::<Result<Vec<_>, Error>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// A stream whose items are read by `step`, one step at a time on a blocking thread, only as the
/// consumer asks for them (with one step read ahead). `step` pushes the items it read into its
/// argument and says whether there is more to read. A consumer that stops asking leaves the
/// reader parked in the stream, holding no thread; dropping the stream drops the reader once any
/// step under way ends.
pub fn pulled<T, S>(step: S) -> Pieces<T>
where
    T: Send + 'static,
    S: FnMut(&mut Vec<T>) -> Result<bool, Error> + Send + 'static,
{
    Box::pin(Pulled { step: Some(step), ready: std::collections::VecDeque::new(), running: None, failed: None })
}

/// The result of one step: the reader back, what it read, and whether there is more.
type Stepped<T, S> = (S, Vec<T>, Result<bool, Error>);

struct Pulled<T, S> {
    /// The reader, while it is not running a step and has more to read.
    step: Option<S>,
    ready: std::collections::VecDeque<T>,
    running: Option<tokio::task::JoinHandle<Result<Stepped<T, S>, Error>>>,
    /// The error that ends the stream, once the items read before it are taken.
    failed: Option<Error>,
}

/// Reading steps running at once, over every answer: a few per core keep the disks and cores
/// busy, and the threads (and the allocator's per-thread caches) few.
fn reading_steps() -> &'static tokio::sync::Semaphore {
    static STEPS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    STEPS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        tokio::sync::Semaphore::new(2 * cores)
    })
}

impl<T: Send + 'static, S: FnMut(&mut Vec<T>) -> Result<bool, Error> + Send + 'static> Pulled<T, S> {
    fn run_step(&mut self) {
        let Some(mut step) = self.step.take() else { return };
        self.running = Some(tokio::spawn(async move {
            let _step = reading_steps().acquire().await.expect("the semaphore is never closed");
            let read = tokio::task::spawn_blocking(move || {
                let mut items = Vec::new();
                // A reader that panics (a library meeting a malformed file) ends the stream with
                // an error: a reader that simply stopped would look like the clean end of the data.
                let more =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| step(&mut items))).unwrap_or_else(|_| {
                        Err(Error::source("reading the dataset failed unexpectedly (the reader panicked)"))
                    });
                (step, items, more)
            });
            read.await.map_err(|e| Error::internal(format!("reader task failed: {e}")))
        }));
    }
}

impl<T, S> Unpin for Pulled<T, S> {}

impl<T: Send + 'static, S: FnMut(&mut Vec<T>) -> Result<bool, Error> + Send + 'static> Stream for Pulled<T, S> {
    type Item = Result<T, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        let this = self.get_mut();
        loop {
            if let Some(item) = this.ready.pop_front() {
                if this.ready.is_empty() {
                    // Read ahead while this item is sent.
                    this.run_step();
                }
                return Poll::Ready(Some(Ok(item)));
            }
            if let Some(running) = this.running.as_mut() {
                let stepped = std::task::ready!(Pin::new(running).poll(cx));
                this.running = None;
                match stepped.map_err(|e| Error::internal(format!("reader task failed: {e}"))).and_then(|s| s) {
                    Ok((step, items, more)) => {
                        this.ready.extend(items);
                        match more {
                            Ok(true) => this.step = Some(step),
                            Ok(false) => {}
                            Err(e) => this.failed = Some(e),
                        }
                    }
                    Err(e) => this.failed = Some(e),
                }
                continue;
            }
            if let Some(e) = this.failed.take() {
                return Poll::Ready(Some(Err(e)));
            }
            if this.step.is_none() {
                return Poll::Ready(None);
            }
            this.run_step();
        }
    }
}

/// Cuts a batch into slices of at most about [`MAX_STEP_BYTES`], so what is encoded and sent
/// at once is bounded in bytes whatever the width of a row.
pub fn bounded_slices(batch: RecordBatch, out: &mut Vec<RecordBatch>) {
    let rows = batch.num_rows();
    let bytes = slice_bytes(&batch);
    if bytes <= MAX_STEP_BYTES || rows <= 1 {
        out.push(batch);
        return;
    }
    let per_slice = (rows * MAX_STEP_BYTES / bytes).max(1);
    let mut offset = 0;
    while offset < rows {
        let len = per_slice.min(rows - offset);
        out.push(batch.slice(offset, len));
        offset += len;
    }
}

/// The bytes of a batch's own rows. `get_array_memory_size` counts the whole allocation a sliced
/// array points into, and the columns of a batch read from an Arrow IPC file all point into one
/// allocation: counted that way, each slice of a batch would weigh as much as the batch.
pub fn slice_bytes(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|c| c.to_data().get_slice_memory_size().unwrap_or_else(|_| c.get_buffer_memory_size()))
        .sum()
}
