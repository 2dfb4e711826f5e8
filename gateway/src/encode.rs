//! Encoders: record batches to response bytes, one batch at a time.
//!
//! Each encoder writes a prefix (header row, `[`, Arrow schema), one piece per batch, and a
//! suffix, so a response can start before the result is complete and never holds more than one
//! encoded batch. The output formats are `csv`, `ndjson`, `json` (one array of objects) and
//! `arrow` (the Arrow IPC stream format).

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use futures_util::StreamExt;

use crate::error::Error;
use crate::source::{BatchStream, ByteStream};

/// An output format of the `rows` endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    Csv,
    Ndjson,
    Json,
    Arrow,
}

impl OutputFormat {
    /// The format named by `format=`.
    pub fn from_name(name: &str) -> Option<OutputFormat> {
        match name {
            "csv" => Some(OutputFormat::Csv),
            "ndjson" | "jsonl" => Some(OutputFormat::Ndjson),
            "json" => Some(OutputFormat::Json),
            "arrow" => Some(OutputFormat::Arrow),
            _ => None,
        }
    }

    /// The format an `Accept` header prefers, if it names one we produce.
    pub fn from_accept(accept: &str) -> Option<OutputFormat> {
        accept.split(',').map(|m| m.split(';').next().unwrap_or("").trim()).find_map(|media| match media {
            "text/csv" => Some(OutputFormat::Csv),
            "application/x-ndjson" | "application/jsonl" => Some(OutputFormat::Ndjson),
            "application/json" => Some(OutputFormat::Json),
            "application/vnd.apache.arrow.stream" => Some(OutputFormat::Arrow),
            _ => None,
        })
    }

    pub fn content_type(self) -> &'static str {
        match self {
            OutputFormat::Csv => "text/csv; charset=utf-8",
            OutputFormat::Ndjson => "application/x-ndjson",
            OutputFormat::Json => "application/json",
            OutputFormat::Arrow => "application/vnd.apache.arrow.stream",
        }
    }

    pub fn encoder(self, schema: &SchemaRef) -> Result<Encoder, Error> {
        Ok(match self {
            OutputFormat::Csv => Encoder::Csv { schema: schema.clone() },
            OutputFormat::Ndjson => Encoder::Ndjson,
            OutputFormat::Json => Encoder::Json { first: true },
            OutputFormat::Arrow => Encoder::Arrow(Box::new(
                arrow::ipc::writer::StreamWriter::try_new(Vec::new(), schema).map_err(encoding)?,
            )),
        })
    }
}

/// A running encoder.
pub enum Encoder {
    Csv { schema: SchemaRef },
    Ndjson,
    Json { first: bool },
    Arrow(Box<arrow::ipc::writer::StreamWriter<Vec<u8>>>),
}

impl Encoder {
    /// What comes before the first row: the CSV header, `[`, the Arrow schema message.
    pub fn begin(&mut self) -> Result<Bytes, Error> {
        Ok(match self {
            Encoder::Csv { schema } => {
                let empty = RecordBatch::new_empty(schema.clone());
                csv_bytes(&empty, true)?
            }
            Encoder::Ndjson => Bytes::new(),
            Encoder::Json { .. } => Bytes::from_static(b"["),
            Encoder::Arrow(w) => Bytes::from(std::mem::take(w.get_mut())),
        })
    }

    /// One batch's rows.
    pub fn batch(&mut self, batch: &RecordBatch) -> Result<Bytes, Error> {
        Ok(match self {
            Encoder::Csv { .. } => csv_bytes(batch, false)?,
            Encoder::Ndjson => Bytes::from(ndjson(batch)?),
            Encoder::Json { first } => {
                let mut lines = ndjson(batch)?;
                // One JSON object per line, with no raw newline inside any: turning the line
                // breaks into commas gives the array's elements.
                if lines.last() == Some(&b'\n') {
                    lines.pop();
                }
                for b in lines.iter_mut() {
                    if *b == b'\n' {
                        *b = b',';
                    }
                }
                if !*first && !lines.is_empty() {
                    lines.insert(0, b',');
                }
                *first &= lines.is_empty();
                Bytes::from(lines)
            }
            Encoder::Arrow(w) => {
                w.write(batch).map_err(encoding)?;
                Bytes::from(std::mem::take(w.get_mut()))
            }
        })
    }

    /// What comes after the last row.
    pub fn finish(&mut self) -> Result<Bytes, Error> {
        Ok(match self {
            Encoder::Csv { .. } | Encoder::Ndjson => Bytes::new(),
            Encoder::Json { .. } => Bytes::from_static(b"]"),
            Encoder::Arrow(w) => {
                w.finish().map_err(encoding)?;
                Bytes::from(std::mem::take(w.get_mut()))
            }
        })
    }
}

/// Encodes a query's result as a byte stream: the prefix with the first batch (already read,
/// so failures before any row were answered as errors), then one piece per batch, then the
/// suffix. The first error ends the stream, and nothing follows it: no suffix makes a broken
/// result look complete.
pub fn encode_stream(encoder: Encoder, first: Option<RecordBatch>, rest: BatchStream) -> ByteStream {
    enum Phase {
        Begin(Option<RecordBatch>),
        Rows,
        Done,
    }
    let state = (encoder, rest, Phase::Begin(first));
    Box::pin(futures_util::stream::unfold(state, |(mut encoder, mut rest, phase)| async move {
        let mut phase = phase;
        loop {
            let (piece, next) = match phase {
                Phase::Done => return None,
                Phase::Begin(first) => {
                    let piece = encoder.begin().and_then(|head| match &first {
                        Some(batch) => Ok([head, encoder.batch(batch)?].concat().into()),
                        None => Ok(head),
                    });
                    (piece, Phase::Rows)
                }
                Phase::Rows => match rest.next().await {
                    Some(Ok(batch)) => (encoder.batch(&batch), Phase::Rows),
                    Some(Err(e)) => (Err(e), Phase::Done),
                    None => (encoder.finish(), Phase::Done),
                },
            };
            phase = if piece.is_err() { Phase::Done } else { next };
            match piece {
                // An empty piece carries nothing; wait for the next.
                Ok(bytes) if bytes.is_empty() => continue,
                piece => return Some((piece, (encoder, rest, phase))),
            }
        }
    }))
}

/// A failure to encode an answer: the gateway's own (500), not the source's.
fn encoding(e: arrow::error::ArrowError) -> Error {
    Error::internal(format!("encoding the answer failed: {e}"))
}

fn csv_bytes(batch: &RecordBatch, header: bool) -> Result<Bytes, Error> {
    let mut out = Vec::with_capacity(crate::source::slice_bytes(batch));
    {
        let mut writer = arrow::csv::WriterBuilder::new().with_header(header).build(&mut out);
        writer.write(batch).map_err(encoding)?;
    }
    Ok(Bytes::from(out))
}

fn ndjson(batch: &RecordBatch) -> Result<Vec<u8>, Error> {
    let mut writer = arrow::json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, arrow::json::writer::LineDelimited>(Vec::with_capacity(crate::source::slice_bytes(batch)));
    writer.write(batch).map_err(encoding)?;
    writer.finish().map_err(encoding)?;
    Ok(writer.into_inner())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, ListArray};
    use arrow::datatypes::Int32Type;

    use super::*;
    use crate::error::Kind;

    /// A batch an encoder cannot write is the gateway's failure, not the source's.
    #[test]
    fn an_encoding_failure_is_internal_not_a_source_failure() {
        let lists: ArrayRef = Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(vec![Some(vec![Some(1)])]));
        let batch = RecordBatch::try_from_iter([("l", lists)]).unwrap();
        let mut encoder = OutputFormat::Csv.encoder(&batch.schema()).unwrap();
        let e = encoder.batch(&batch).expect_err("CSV has no lists");
        assert_eq!((e.kind, e.code), (Kind::Internal, "internal"), "{e}");
    }
}
