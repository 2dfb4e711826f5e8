//! Response building: bodies, JSON, and the one mapping of [`Error`] to HTTP.

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{Error, Kind};

/// Every response body: whole, or streamed.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, Error>;

/// The content version of the data a response serves, for its audit record (the header a
/// caller of conditional data sees is a digest of it).
#[derive(Clone)]
pub struct DatasetVersion(pub String);

/// A whole body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

/// A streamed body. An `Err` item aborts the response: HTTP/1.1 closes the connection before the
/// final chunk, HTTP/2 resets the stream, so the client sees a failed transfer.
pub fn streamed(stream: impl Stream<Item = Result<Bytes, Error>> + Send + 'static) -> Body {
    BodyExt::boxed_unsync(StreamBody::new(stream.map(|r| r.map(Frame::data))))
}

/// A body polled inside `span`, so that what is logged while it streams (a source failing
/// midway, say) carries the request's id. Every response passes here once, so this is where an
/// answer breaking off is logged.
pub fn in_span(body: Body, span: tracing::Span) -> Body {
    struct InSpan {
        body: Body,
        span: tracing::Span,
    }
    impl hyper::body::Body for InSpan {
        type Data = Bytes;
        type Error = Error;

        fn poll_frame(
            self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<Frame<Bytes>, Error>>> {
            let this = self.get_mut();
            let _entered = this.span.enter();
            let frame = std::pin::Pin::new(&mut this.body).poll_frame(cx);
            if let std::task::Poll::Ready(Some(Err(e))) = &frame {
                tracing::warn!(error = %e, "response aborted mid-stream");
            }
            frame
        }

        fn is_end_stream(&self) -> bool {
            self.body.is_end_stream()
        }

        fn size_hint(&self) -> hyper::body::SizeHint {
            self.body.size_hint()
        }
    }
    InSpan { body, span }.boxed_unsync()
}

/// A JSON response.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    json_encoded(status, json_bytes(value))
}

/// The body [`json`] sends for `value`.
pub fn json_bytes<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec_pretty(value).expect("response types serialize")
}

/// A JSON response of a body encoded by [`json_bytes`].
fn json_encoded(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The HTTP status of each kind of error.
pub fn status(kind: Kind) -> StatusCode {
    StatusCode::from_u16(kind.status()).expect("every kind's status is a valid status code")
}

/// `{"error": {"code": ..., "message": ...}}` with the kind's status.
pub fn error(e: &Error) -> Response<Body> {
    let mut response = json(status(e.kind), &ErrorBody::of(e));
    for (name, value) in &e.headers {
        if let Ok(value) = HeaderValue::from_str(value) {
            response.headers_mut().insert(*name, value);
        }
    }
    if e.kind == Kind::MethodNotAllowed && !response.headers().contains_key(ALLOW) {
        response.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
    }
    if e.kind == Kind::Unauthenticated {
        response.headers_mut().insert("www-authenticate", HeaderValue::from_static("Bearer realm=\"kaifang\""));
    }
    response
}

/// Every refusal: `{"error": {"code", "message"}}`, with the 1-based position of a bad filter.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

impl ErrorBody {
    /// The body every refusal is answered with.
    pub fn of(e: &crate::error::Error) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: e.code.to_owned(),
                message: e.message.clone(),
                position: e.position,
                errors: None,
            },
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `not_found`, `rate_limited`, `dataset_withdrawn` ...
    pub code: String,
    /// For people.
    pub message: String,
    /// Where in a filter expression the problem is (1-based).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<usize>,
    /// Every problem of a configuration a reload refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<String>>,
}
