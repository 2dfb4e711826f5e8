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

/// The items of a header that lists them with qualities (`Accept`, `Accept-Encoding`): each
/// name, lowercased, with its `q` (1 when absent, 0 when unreadable).
pub fn weighted(list: &str) -> impl Iterator<Item = (String, f32)> + '_ {
    list.split(',').map(|item| {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let quality = parts
            .filter_map(|p| p.trim().strip_prefix("q=").map(str::trim))
            .next()
            .map_or(Some(1.0), |q| q.parse::<f32>().ok())
            .unwrap_or(0.0);
        (name, quality)
    })
}

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

    /// The format an `Accept` field asks for: of the media types it accepts (`q` above 0), the
    /// one of highest quality that is produced here, an exact type before a wildcard of the same
    /// quality (`*/*` and `application/*` are answered in JSON, `text/*` in CSV). `None` when it
    /// accepts none of them.
    pub fn from_accept(accept: &str) -> Option<OutputFormat> {
        let mut best: Option<(f32, bool, OutputFormat)> = None;
        for (media, quality) in weighted(accept) {
            let format = match media.as_str() {
                "text/csv" => OutputFormat::Csv,
                "application/x-ndjson" | "application/jsonl" | "application/x-jsonlines" => OutputFormat::Ndjson,
                "application/json" => OutputFormat::Json,
                "application/vnd.apache.arrow.stream" => OutputFormat::Arrow,
                "*/*" | "application/*" => OutputFormat::Json,
                "text/*" => OutputFormat::Csv,
                _ => continue,
            };
            let exact = !media.contains('*');
            if quality > 0.0 && best.is_none_or(|(q, e, _)| (quality, exact) > (q, e)) {
                best = Some((quality, exact, format));
            }
        }
        best.map(|(_, _, format)| format)
    }

    /// The format's file suffix, as `rows.{suffix}` names it.
    pub fn suffix(self) -> &'static str {
        match self {
            OutputFormat::Csv => "csv",
            OutputFormat::Ndjson => "ndjson",
            OutputFormat::Json => "json",
            OutputFormat::Arrow => "arrow",
        }
    }

    /// Whether an answer in this format is a file to save (`Content-Disposition: attachment`)
    /// rather than a document to show.
    pub fn is_file(self) -> bool {
        !matches!(self, OutputFormat::Json)
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

    #[test]
    fn accept_is_read_by_quality_exact_types_first() {
        let f = OutputFormat::from_accept;
        assert_eq!(f("text/csv"), Some(OutputFormat::Csv));
        assert_eq!(f("application/json;q=0.5, text/csv"), Some(OutputFormat::Csv));
        assert_eq!(f("text/csv;q=0.2, application/vnd.apache.arrow.stream;q=0.9"), Some(OutputFormat::Arrow));
        assert_eq!(f("*/*, application/x-ndjson"), Some(OutputFormat::Ndjson));
        assert_eq!(f("text/html, */*;q=0.8"), Some(OutputFormat::Json));
        assert_eq!(f("text/*"), Some(OutputFormat::Csv));
        assert_eq!(f("text/html"), None);
        assert_eq!(f("application/xml, text/csv;q=0"), None);
        assert_eq!(f("TEXT/CSV; charset=utf-8"), Some(OutputFormat::Csv));
    }

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
