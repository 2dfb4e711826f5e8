//! Push decoders: bytes in as they arrive, record batches out. Used for upstream origins,
//! whose bodies arrive in pieces, and for CSV and NDJSON files, read in chunks.

use arrow::buffer::Buffer;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use std::collections::VecDeque;

use futures_util::StreamExt;
use policy::Format;

use super::{conform, BatchStream, ByteStream};
use crate::error::Error;

/// A decoder for one of the streamable formats.
pub enum Decoder {
    Csv(Box<arrow::csv::reader::Decoder>),
    Ndjson { decoder: arrow::json::reader::Decoder, projection: Vec<usize> },
    ArrowStream { decoder: arrow::ipc::reader::StreamDecoder, schema: SchemaRef },
}

impl Decoder {
    /// A decoder reading `format` in the `declared` schema, keeping the columns at `projection`.
    pub fn new(
        format: Format,
        declared: SchemaRef,
        projection: Vec<usize>,
        batch_rows: usize,
    ) -> Result<Decoder, Error> {
        Ok(match format {
            Format::Csv => Decoder::Csv(Box::new(
                arrow::csv::ReaderBuilder::new(declared)
                    .with_header(true)
                    .with_batch_size(batch_rows)
                    .with_projection(projection)
                    .build_decoder(),
            )),
            Format::Ndjson => Decoder::Ndjson {
                decoder: arrow::json::ReaderBuilder::new(declared).with_batch_size(batch_rows).build_decoder()?,
                projection,
            },
            Format::ArrowIpc => Decoder::ArrowStream {
                decoder: arrow::ipc::reader::StreamDecoder::new(),
                schema: std::sync::Arc::new(declared.project(&projection)?),
            },
            Format::Parquet => return Err(Error::source("parquet cannot be decoded as a stream")),
        })
    }

    /// Feeds one piece of input, handing every completed batch to `emit`.
    pub fn feed(&mut self, mut input: &[u8], emit: &mut dyn FnMut(RecordBatch) -> bool) -> Result<bool, Error> {
        match self {
            Decoder::ArrowStream { decoder, schema } => {
                let mut buffer = Buffer::from(input);
                while !buffer.is_empty() {
                    if let Some(batch) = decoder.decode(&mut buffer)? {
                        if !emit(conform(&batch, schema)?) {
                            return Ok(false);
                        }
                    }
                }
                Ok(true)
            }
            _ => {
                while !input.is_empty() {
                    let consumed = self.decode(input)?;
                    input = &input[consumed..];
                    // A decoder stops short of the input when its batch is full.
                    if !input.is_empty() {
                        if let Some(batch) = self.flush()? {
                            if !emit(batch) {
                                return Ok(false);
                            }
                        }
                    }
                }
                Ok(true)
            }
        }
    }

    /// Ends the input: a record cut off midway is an error, not a short last batch.
    pub fn finish(&mut self, emit: &mut dyn FnMut(RecordBatch) -> bool) -> Result<(), Error> {
        match self {
            Decoder::ArrowStream { decoder, .. } => {
                decoder.finish().map_err(|e| Error::source(format!("the Arrow stream is truncated: {e}")))
            }
            _ => {
                self.decode(&[])?;
                if let Some(batch) = self.flush()? {
                    emit(batch);
                }
                Ok(())
            }
        }
    }

    fn decode(&mut self, input: &[u8]) -> Result<usize, Error> {
        Ok(match self {
            Decoder::Csv(d) => d.decode(input)?,
            Decoder::Ndjson { decoder, .. } => decoder.decode(input)?,
            Decoder::ArrowStream { .. } => unreachable!("arrow streams are fed whole"),
        })
    }

    fn flush(&mut self) -> Result<Option<RecordBatch>, Error> {
        Ok(match self {
            Decoder::Csv(d) => d.flush()?,
            Decoder::Ndjson { decoder, projection } => match decoder.flush()? {
                Some(batch) => Some(batch.project(projection)?),
                None => None,
            },
            Decoder::ArrowStream { .. } => None,
        })
    }
}

/// Decodes a byte stream into batches as the bytes arrive.
pub fn decode_stream(bytes: ByteStream, decoder: Decoder) -> BatchStream {
    struct State {
        bytes: ByteStream,
        decoder: Decoder,
        ready: VecDeque<RecordBatch>,
        failed: Option<Error>,
        done: bool,
    }
    let state = State { bytes, decoder, ready: VecDeque::new(), failed: None, done: false };
    Box::pin(futures_util::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(batch) = s.ready.pop_front() {
                return Some((Ok(batch), s));
            }
            if let Some(e) = s.failed.take() {
                s.done = true;
                return Some((Err(e), s));
            }
            if s.done {
                return None;
            }
            let ready = &mut s.ready;
            let mut emit = |b: RecordBatch| {
                ready.push_back(b);
                true
            };
            let result = match s.bytes.next().await {
                Some(Ok(chunk)) => s.decoder.feed(&chunk, &mut emit).map(|_| ()),
                Some(Err(e)) => Err(e),
                None => {
                    s.done = true;
                    s.decoder.finish(&mut emit)
                }
            };
            s.failed = result.err();
        }
    }))
}
