//! `DoGet` on the wire without copying the data.
//!
//! Through arrow-flight's encoder and tonic's codec, every byte of an answer is copied twice
//! before the socket: once into the IPC body of a `FlightData`, and again into the gRPC frame
//! tonic encodes it into. Here a batch is encoded by arrow's [`StreamEncoder`], whose body
//! buffers are the batch's own Arrow buffers, and each message is framed by hand — the gRPC
//! length prefix and the protobuf keys of `FlightData` are a few bytes written ahead of those
//! buffers — so the data reaches HTTP/2 as it sits in memory. [`Routes`] serves `DoGet` this way
//! and hands every other RPC to the generated service.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use arrow::buffer::Buffer;
use arrow::datatypes::Schema;
use arrow::error::ArrowError;
use arrow::ipc::writer::StreamEncoder;
use arrow::ipc::MessageHeader;
use arrow::record_batch::RecordBatch;
use arrow_flight::flight_service_server::FlightServiceServer;
use arrow_flight::{FlightData, Ticket};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use http_body_util::BodyExt;
use hyper::body::Frame;
use tonic::server::NamedService;
use tonic::Status;

use super::{message_slices, Service, MAX_MESSAGE_BYTES};
use crate::error::Error;
use crate::source::{BatchStream, Pieces};

/// The path of `DoGet`.
const DO_GET: &str = "/arrow.flight.protocol.FlightService/DoGet";
/// A `DoGet` request is one ticket; a body past this is refused unread.
const MAX_TICKET_BYTES: usize = 64 << 10;
/// The protobuf key of `FlightData.data_header` (field 2, length-delimited).
const HEADER_KEY: u8 = (2 << 3) | 2;
/// The protobuf key of `FlightData.data_body` (field 1000, length-delimited), as a varint.
const BODY_KEY: [u8; 2] = [0xC2, 0x3E];

/// One Flight message: its IPC header (a flatbuffer) and its body, as the buffers it is made of.
pub struct Message {
    header: Bytes,
    body: Vec<Bytes>,
    body_len: usize,
}

impl Message {
    /// Bytes the message puts on the wire (its IPC header and body), as [`FlightData`] counts.
    pub fn wire_size(&self) -> usize {
        self.header.len() + self.body_len
    }

    /// The message as a [`FlightData`], its body gathered into one buffer.
    pub fn into_flight_data(self) -> FlightData {
        let mut body = BytesMut::with_capacity(self.body_len);
        for piece in &self.body {
            body.extend_from_slice(piece);
        }
        FlightData { data_header: self.header, data_body: body.freeze(), ..Default::default() }
    }

    /// The message as one gRPC frame of a protobuf `FlightData`: the length prefix and keys in
    /// one small piece, then the header and the body's buffers as they are.
    fn frame(self) -> impl Iterator<Item = Bytes> {
        let mut head = BytesMut::with_capacity(32);
        let mut proto_len = 0;
        if !self.header.is_empty() {
            proto_len += 1 + varint_len(self.header.len()) + self.header.len();
        }
        if self.body_len > 0 {
            proto_len += BODY_KEY.len() + varint_len(self.body_len) + self.body_len;
        }
        head.put_u8(0); // not compressed
        head.put_u32(u32::try_from(proto_len).expect("messages are cut far below 4 GiB"));
        if !self.header.is_empty() {
            head.put_u8(HEADER_KEY);
            put_varint(&mut head, self.header.len());
        }
        let header = (!self.header.is_empty()).then_some(self.header);
        let body_head = (self.body_len > 0).then(|| {
            let mut key = BytesMut::with_capacity(12);
            key.put_slice(&BODY_KEY);
            put_varint(&mut key, self.body_len);
            key.freeze()
        });
        std::iter::once(head.freeze()).chain(header).chain(body_head).chain(self.body)
    }
}

fn varint_len(mut n: usize) -> usize {
    let mut len = 1;
    while n >= 0x80 {
        n >>= 7;
        len += 1;
    }
    len
}

fn put_varint(buf: &mut BytesMut, mut n: usize) {
    while n >= 0x80 {
        buf.put_u8((n as u8 & 0x7F) | 0x80);
        n >>= 7;
    }
    buf.put_u8(n as u8);
}

/// The Flight messages of a stream of batches: the schema with the first batch (or alone, for
/// an answer of no rows), then each batch cut to messages of at most [`MAX_MESSAGE_BYTES`] of
/// data. A failed batch ends the stream with its error.
pub fn messages(schema: &Schema, batches: BatchStream) -> Result<Pieces<Message>, Error> {
    let encoder = Encoder::new(schema).map_err(encoding)?;
    let messages = futures_util::stream::unfold(Some((batches, encoder)), |state| async move {
        let (mut batches, mut encoder) = state?;
        let (messages, state) = match batches.next().await {
            Some(Ok(batch)) => match encoder.batch(&batch) {
                Ok(messages) => (messages.into_iter().map(Ok).collect(), Some((batches, encoder))),
                Err(e) => (vec![Err(encoding(e))], None),
            },
            Some(Err(e)) => (vec![Err(e)], None),
            None => match encoder.finish() {
                Ok(messages) => (messages.into_iter().map(Ok).collect(), None),
                Err(e) => (vec![Err(encoding(e))], None),
            },
        };
        Some((futures_util::stream::iter(messages), state))
    });
    Ok(Box::pin(messages.flatten()))
}

fn encoding(e: ArrowError) -> Error {
    Error::internal(format!("flight encoding: {e}"))
}

/// Encodes batches into Flight messages.
struct Encoder {
    inner: StreamEncoder,
    sent: bool,
}

impl Encoder {
    fn new(schema: &Schema) -> Result<Encoder, ArrowError> {
        Ok(Encoder { inner: StreamEncoder::try_new(schema)?, sent: false })
    }

    /// The messages of one batch, cut by [`message_slices`] (with the schema ahead of the
    /// first).
    fn batch(&mut self, batch: &RecordBatch) -> Result<Vec<Message>, ArrowError> {
        self.sent = true;
        let mut encoded = Vec::new();
        for slice in message_slices(batch, MAX_MESSAGE_BYTES) {
            encoded.extend(messages_of(self.inner.encode(&slice)?)?);
        }
        Ok(encoded)
    }

    /// The schema message, if no batch was encoded.
    fn finish(self) -> Result<Vec<Message>, ArrowError> {
        if self.sent {
            return Ok(Vec::new());
        }
        messages_of(self.inner.finish()?)
    }
}

/// Cuts an IPC stream, given as the buffers it is made of, into its messages; the end-of-stream
/// marker is dropped (Flight ends a stream with the RPC).
fn messages_of(buffers: Vec<Buffer>) -> Result<Vec<Message>, ArrowError> {
    let mut rope = Rope { buffers, at: 0, offset: 0 };
    let mut messages = Vec::new();
    while rope.remaining() > 0 {
        let mut len = rope.take_u32()?;
        if len == 0xFFFF_FFFF {
            len = rope.take_u32()?;
        }
        if len == 0 {
            break;
        }
        let header = Bytes::from(rope.take_copied(len as usize)?);
        let message = arrow::ipc::root_as_message(&header)
            .map_err(|e| ArrowError::IpcError(format!("an encoded message does not read back: {e}")))?;
        let body_len = usize::try_from(message.bodyLength())
            .map_err(|_| ArrowError::IpcError("an encoded message has a negative body length".into()))?;
        if message.header_type() == MessageHeader::NONE {
            return Err(ArrowError::IpcError("an encoded message has no header".into()));
        }
        let body = rope.take_pieces(body_len)?;
        messages.push(Message { header, body, body_len });
    }
    Ok(messages)
}

/// A run of buffers read front to back.
struct Rope {
    buffers: Vec<Buffer>,
    at: usize,
    offset: usize,
}

/// A buffer handed to `Bytes` as its owner: shared, not copied.
struct Shared(Buffer);

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        self.0.as_slice()
    }
}

impl Rope {
    fn remaining(&self) -> usize {
        self.buffers[self.at.min(self.buffers.len())..].iter().map(Buffer::len).sum::<usize>() - self.offset
    }

    fn short() -> ArrowError {
        ArrowError::IpcError("an encoded message runs past its stream".into())
    }

    /// The next `n` bytes as pieces of the buffers they are in, shared, not copied.
    fn take_pieces(&mut self, mut n: usize) -> Result<Vec<Bytes>, ArrowError> {
        let mut pieces = Vec::new();
        while n > 0 {
            let buffer = self.buffers.get(self.at).ok_or_else(Rope::short)?;
            let take = (buffer.len() - self.offset).min(n);
            if take > 0 {
                pieces.push(Bytes::from_owner(Shared(buffer.clone())).slice(self.offset..self.offset + take));
            }
            n -= take;
            self.offset += take;
            if self.offset == buffer.len() {
                self.at += 1;
                self.offset = 0;
            }
        }
        Ok(pieces)
    }

    fn take_copied(&mut self, n: usize) -> Result<Vec<u8>, ArrowError> {
        let mut bytes = Vec::with_capacity(n);
        for piece in self.take_pieces(n)? {
            bytes.extend_from_slice(&piece);
        }
        Ok(bytes)
    }

    fn take_u32(&mut self) -> Result<u32, ArrowError> {
        let bytes = self.take_copied(4)?;
        Ok(u32::from_le_bytes(bytes.try_into().expect("four bytes")))
    }
}

/// The Flight service with `DoGet` framed here; every other RPC goes to the generated server.
#[derive(Clone)]
pub struct Routes {
    service: Arc<Service>,
    generated: FlightServiceServer<Service>,
}

impl Routes {
    pub fn new(service: Service) -> Routes {
        let service = Arc::new(service);
        Routes { generated: FlightServiceServer::from_arc(service.clone()), service }
    }
}

impl NamedService for Routes {
    const NAME: &'static str = <FlightServiceServer<Service> as NamedService>::NAME;
}

type Answer = http::Response<tonic::body::Body>;

impl tower::Service<http::Request<tonic::body::Body>> for Routes {
    type Response = Answer;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Answer, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        if request.uri().path() != DO_GET {
            return Box::pin(self.generated.call(request));
        }
        let service = self.service.clone();
        Box::pin(async move { Ok(do_get(&service, request).await.unwrap_or_else(Status::into_http)) })
    }
}

/// Reads the ticket of a `DoGet`, and answers it with framed messages.
async fn do_get(service: &Service, request: http::Request<tonic::body::Body>) -> Result<Answer, Status> {
    let (parts, body) = request.into_parts();
    let body = http_body_util::Limited::new(body, MAX_TICKET_BYTES)
        .collect()
        .await
        .map_err(|e| Status::invalid_argument(format!("the request could not be read: {e}")))?
        .to_bytes();
    let ticket = match body.as_ref() {
        [0, len @ ..]
            if len.len() >= 4 && len.len() - 4 == u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize =>
        {
            <Ticket as prost::Message>::decode(&len[4..])
                .map_err(|e| Status::invalid_argument(format!("the ticket is not a Flight ticket: {e}")))?
        }
        [1, ..] => return Err(Status::unimplemented("compressed requests are not taken")),
        _ => return Err(Status::invalid_argument("the request is not one gRPC message")),
    };
    let response = service.get_messages(tonic::Request::from_http(http::Request::from_parts(parts, ticket))).await?;
    let (metadata, messages, _) = response.into_parts();
    let mut answer = http::Response::new(tonic::body::Body::new(http_body_util::StreamBody::new(framed(messages))));
    *answer.headers_mut() = metadata.into_headers();
    answer.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/grpc"));
    Ok(answer)
}

/// The HTTP/2 frames of a `DoGet` answer: each message's pieces as data, then the status as
/// trailers (`0` at the end, the error's status where the stream breaks off).
fn framed(
    messages: BoxStream<'static, Result<Message, Status>>,
) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send {
    futures_util::stream::unfold(Some(messages), |messages| async move {
        let mut messages = messages?;
        let (frames, rest): (Vec<Frame<Bytes>>, _) = match messages.next().await {
            Some(Ok(message)) => (message.frame().map(Frame::data).collect(), Some(messages)),
            Some(Err(status)) => (vec![Frame::trailers(trailers(&status))], None),
            None => (vec![Frame::trailers(trailers(&Status::ok("")))], None),
        };
        Some((futures_util::stream::iter(frames.into_iter().map(Ok)), rest))
    })
    .flatten()
}

fn trailers(status: &Status) -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    if status.add_header(&mut headers).is_err() {
        headers.insert("grpc-status", http::HeaderValue::from(tonic::Code::Internal as i32));
    }
    headers
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Int64Array, StringArray};

    use super::*;

    fn batch(rows: i64) -> RecordBatch {
        let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(0..rows));
        let names: ArrayRef = Arc::new(StringArray::from_iter_values((0..rows).map(|i| format!("name {i}"))));
        RecordBatch::try_from_iter([("id", ids), ("name", names)]).unwrap()
    }

    /// The messages, decoded by arrow's own Flight decoding, give back the batches, slices
    /// included; a batch of no rows sends nothing.
    #[test]
    fn messages_read_back_as_the_batches_they_encode() {
        let whole = batch(1000);
        let mut encoder = Encoder::new(&whole.schema()).unwrap();
        let mut messages = Vec::new();
        for slice in [whole.slice(0, 10), whole.slice(10, 990), whole.slice(500, 0)] {
            messages.extend(encoder.batch(&slice).unwrap());
        }
        assert_eq!(messages.len(), 3, "the schema, then one message per batch with rows");
        let data: Vec<FlightData> = messages.into_iter().map(Message::into_flight_data).collect();
        let schema = Arc::new(Schema::try_from(&data[0]).unwrap());
        let dictionaries = std::collections::HashMap::new();
        let read: Vec<RecordBatch> = data[1..]
            .iter()
            .map(|d| arrow_flight::utils::flight_data_to_arrow_batch(d, schema.clone(), &dictionaries).unwrap())
            .collect();
        assert_eq!(read, vec![whole.slice(0, 10), whole.slice(10, 990)]);
    }

    /// A failed batch ends the messages with its error; nothing after it is sent.
    #[test]
    fn a_failed_batch_ends_the_messages() {
        let whole = batch(5);
        let batches: BatchStream = Box::pin(futures_util::stream::iter(vec![
            Ok(whole.clone()),
            Err(Error::source("the file ended early")),
            Ok(whole.clone()),
        ]));
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let sent: Vec<Result<Message, Error>> =
            runtime.block_on(messages(&whole.schema(), batches).unwrap().collect::<Vec<_>>());
        let kinds: Vec<&str> = sent.iter().map(|m| if m.is_ok() { "message" } else { "error" }).collect();
        assert_eq!(kinds, ["message", "message", "error"], "the schema, the first batch, then the error");
    }

    /// An answer of no rows is its schema alone.
    #[test]
    fn an_answer_of_no_rows_is_its_schema() {
        let messages = Encoder::new(&batch(1).schema()).unwrap().finish().unwrap();
        assert_eq!(messages.len(), 1);
        let data = messages.into_iter().next().unwrap().into_flight_data();
        assert_eq!(Schema::try_from(&data).unwrap(), *batch(1).schema());
    }

    /// The frames are a gRPC message (length prefix) holding a protobuf `FlightData` that
    /// prost reads as the message.
    #[test]
    fn a_frame_is_one_grpc_message_of_the_flight_data() {
        let whole = batch(300);
        let mut encoder = Encoder::new(&whole.schema()).unwrap();
        for message in encoder.batch(&whole).unwrap() {
            let expected =
                Message { header: message.header.clone(), body: message.body.clone(), body_len: message.body_len }
                    .into_flight_data();
            let wire: Vec<u8> = message.frame().flat_map(|b| b.to_vec()).collect();
            assert_eq!(wire[0], 0);
            let len = u32::from_be_bytes(wire[1..5].try_into().unwrap()) as usize;
            assert_eq!(len, wire.len() - 5);
            let decoded = <FlightData as prost::Message>::decode(&wire[5..]).unwrap();
            assert_eq!(decoded, expected);
        }
    }
}
