//! Sources: where a dataset's bytes come from, and how they become record batches.
//!
//! A source is a local file (CSV, NDJSON, Parquet, Arrow IPC) or an upstream HTTP origin.
//! Each gives two things: the original bytes, untouched, for raw download
//! ([`file::open_bytes`], [`upstream::Upstream::get`]), and a bounded stream of record batches in
//! the catalog's declared schema for queries ([`open_batches`]).
//!
//! File work happens on a blocking thread that hands batches over a channel of
//! [`CHANNEL_BATCHES`] places: a slow client stops the reader instead of growing memory, and a
//! client that goes away drops the receiver, which ends the thread at its next send. A failure
//! midway reaches the consumer as an `Err` item, never as a silent end.

pub mod decode;
pub mod file;
pub mod upstream;

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

/// Batches a reader thread may run ahead of its consumer.
pub const CHANNEL_BATCHES: usize = 2;

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

/// What reading a source needs besides the dataset itself.
pub struct SourceContext<'a> {
    pub data_dir: &'a std::path::Path,
    pub upstream: &'a upstream::Upstream,
    pub batch_rows: usize,
}

/// Opens the dataset for reading the declared columns at `projection` (indices into the
/// declared fields, in the order wanted).
pub async fn open_batches(
    dataset: &DatasetConfig,
    ctx: &SourceContext<'_>,
    projection: Vec<usize>,
) -> Result<Batches, Error> {
    let declared = arrow_schema(&dataset.fields);
    let schema = Arc::new(declared.project(&projection)?);
    match &dataset.source {
        SourceConfig::File(path) => {
            let path = ctx.data_dir.join(path);
            file::open_batches(path, dataset.format, declared, projection, schema, ctx.batch_rows).await
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

/// Runs `read` on a blocking thread, which hands items to the returned stream through a
/// bounded channel. `read` gets a `send` function that returns false once the consumer is gone.
pub fn spawn_reader<T, F>(capacity: usize, read: F) -> Pin<Box<dyn Stream<Item = Result<T, Error>> + Send>>
where
    T: Send + 'static,
    F: FnOnce(&mut dyn FnMut(T) -> bool) -> Result<(), Error> + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<T, Error>>(capacity);
    tokio::task::spawn_blocking(move || {
        let mut send = |item: T| tx.blocking_send(Ok(item)).is_ok();
        // A reader that panics (a library meeting a malformed file) must end the stream with
        // an error: a dropped sender alone would look like the clean end of the data.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read(&mut send)))
            .unwrap_or_else(|_| Err(Error::source("reading the dataset failed unexpectedly (the reader panicked)")));
        if let Err(e) = outcome {
            let _ = tx.blocking_send(Err(e));
        }
    });
    Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}
