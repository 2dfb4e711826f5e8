//! Content codings negotiated by `Accept-Encoding`: zstd, br and gzip (async-compression's
//! encoders). A streamed answer is compressed piece by piece, each piece flushed as it is
//! compressed, so a client reads every batch as soon as it is sent and the stream keeps its
//! backpressure; a whole answer is compressed whole and sent with its compressed length. Raw
//! downloads are never compressed here (they are the file's bytes, see [`super::download`]).

use std::io;

use async_compression::tokio::write::{BrotliEncoder, GzipEncoder, ZstdEncoder};
use async_compression::Level;
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::BodyExt;
use hyper::header::{HeaderMap, HeaderValue, ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, VARY};
use hyper::Response;
use tokio::io::AsyncWriteExt;

use super::response::{self, Body};
use crate::error::Error;
use crate::source::ByteStream;

/// Bodies shorter than this are sent as they are: the coding's own framing would eat the gain.
pub const MIN_BYTES: usize = 512;

/// A content coding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coding {
    Zstd,
    Brotli,
    Gzip,
}

impl Coding {
    /// The coding `Accept-Encoding` prefers: the highest quality among those made here, zstd
    /// before br before gzip at equal quality; `None` for none (identity).
    pub fn negotiate(headers: &HeaderMap) -> Option<Coding> {
        Coding::accepted(headers).into_iter().next()
    }

    /// Every coding made here that `Accept-Encoding` takes, the preferred first.
    pub fn accepted(headers: &HeaderMap) -> Vec<Coding> {
        let mut taken: Vec<(f32, usize, Coding)> = Vec::new();
        for value in headers.get_all(ACCEPT_ENCODING).iter().filter_map(|v| v.to_str().ok()) {
            for (name, quality) in crate::encode::weighted(value) {
                let (rank, coding) = match name.as_str() {
                    "zstd" => (3, Coding::Zstd),
                    "br" => (2, Coding::Brotli),
                    "gzip" | "x-gzip" => (1, Coding::Gzip),
                    _ => continue,
                };
                if quality > 0.0 && !taken.iter().any(|(_, _, c)| *c == coding) {
                    taken.push((quality, rank, coding));
                }
            }
        }
        taken.sort_by(|a, b| (b.0, b.1).partial_cmp(&(a.0, a.1)).unwrap_or(std::cmp::Ordering::Equal));
        taken.into_iter().map(|(_, _, coding)| coding).collect()
    }

    /// The suffix of a file's copy compressed in this coding.
    pub fn file_suffix(self) -> &'static str {
        match self {
            Coding::Zstd => ".zst",
            Coding::Brotli => ".br",
            Coding::Gzip => ".gz",
        }
    }

    /// The coding's name in `Content-Encoding`.
    pub fn name(self) -> &'static str {
        match self {
            Coding::Zstd => "zstd",
            Coding::Brotli => "br",
            Coding::Gzip => "gzip",
        }
    }

    pub fn header(self) -> HeaderValue {
        HeaderValue::from_static(self.name())
    }

    fn encoder(self) -> Encoder {
        match self {
            // Levels for speed on the fly: brotli's default (11) is meant for static files.
            Coding::Zstd => Encoder::Zstd(ZstdEncoder::with_quality(Vec::new(), Level::Default)),
            Coding::Brotli => Encoder::Brotli(Box::new(BrotliEncoder::with_quality(Vec::new(), Level::Precise(4)))),
            Coding::Gzip => Encoder::Gzip(GzipEncoder::with_quality(Vec::new(), Level::Default)),
        }
    }
}

/// An encoder writing into memory, from which each flushed piece is taken. (Brotli's state is
/// kilobytes: boxed, so the others do not carry its size.)
enum Encoder {
    Zstd(ZstdEncoder<Vec<u8>>),
    Brotli(Box<BrotliEncoder<Vec<u8>>>),
    Gzip(GzipEncoder<Vec<u8>>),
}

impl Encoder {
    /// Compresses `data` and flushes it: what it returns decodes to everything written so far.
    async fn piece(&mut self, data: &[u8]) -> io::Result<Bytes> {
        match self {
            Encoder::Zstd(e) => {
                e.write_all(data).await?;
                e.flush().await?;
            }
            Encoder::Brotli(e) => {
                e.write_all(data).await?;
                e.flush().await?;
            }
            Encoder::Gzip(e) => {
                e.write_all(data).await?;
                e.flush().await?;
            }
        }
        Ok(self.take())
    }

    /// Ends the coded stream.
    async fn finish(&mut self) -> io::Result<Bytes> {
        match self {
            Encoder::Zstd(e) => e.shutdown().await?,
            Encoder::Brotli(e) => e.shutdown().await?,
            Encoder::Gzip(e) => e.shutdown().await?,
        }
        Ok(self.take())
    }

    fn take(&mut self) -> Bytes {
        let out = match self {
            Encoder::Zstd(e) => e.get_mut(),
            Encoder::Brotli(e) => e.get_mut(),
            Encoder::Gzip(e) => e.get_mut(),
        };
        Bytes::from(std::mem::take(out))
    }
}

fn failed(e: io::Error) -> Error {
    Error::internal(format!("compressing the answer: {e}"))
}

/// `body`, whole, in `coding`.
pub async fn whole(coding: Coding, body: &[u8]) -> Result<Bytes, Error> {
    let mut encoder = coding.encoder();
    let mut out = encoder.piece(body).await.map_err(failed)?.to_vec();
    out.extend_from_slice(&encoder.finish().await.map_err(failed)?);
    Ok(Bytes::from(out))
}

/// `body` in `coding`, piece by piece: each piece is compressed and flushed as it arrives.
pub fn streamed(coding: Coding, body: ByteStream) -> ByteStream {
    let state = (body, Some(coding.encoder()));
    Box::pin(futures_util::stream::unfold(state, |(mut body, encoder)| async move {
        let mut encoder = encoder?;
        loop {
            match body.next().await {
                Some(Ok(piece)) => match encoder.piece(&piece).await {
                    // A piece too small to fill a block can come out empty; wait for more.
                    Ok(out) if out.is_empty() => continue,
                    Ok(out) => return Some((Ok(out), (body, Some(encoder)))),
                    Err(e) => return Some((Err(failed(e)), (body, None))),
                },
                // The answer's own failure passes as it is; the coded stream is left unended,
                // so the client sees a broken transfer as it would uncompressed.
                Some(Err(e)) => return Some((Err(e), (body, None))),
                None => return Some((encoder.finish().await.map_err(failed), (body, None))),
            }
        }
    }))
}

/// Largest whole answer [`answer`] compresses (the catalog, metadata and workflow answers are far
/// smaller).
const MAX_WHOLE_BYTES: u64 = 16 << 20;

/// The media types of the whole answers [`answer`] compresses: JSON, and the portal's pages.
const COMPRESSIBLE: [&str; 5] = ["application/json", "text/html", "text/css", "text/javascript", "image/svg+xml"];

/// A whole JSON answer or portal asset of the data API, compressed in `coding` when there is one and the answer
/// is worth it; a data call compresses its own answer (or, for downloads, never), so that what
/// is counted and recorded is what is sent.
pub async fn answer(response: Response<Body>, coding: Option<Coding>) -> Response<Body> {
    let compressible = response
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|t| COMPRESSIBLE.iter().any(|media_type| t.as_bytes().starts_with(media_type.as_bytes())));
    if !compressible || response.headers().contains_key(CONTENT_ENCODING) {
        return response;
    }
    let (mut head, body) = response.into_parts();
    head.headers.append(VARY, HeaderValue::from_static("Accept-Encoding"));
    let size = hyper::body::Body::size_hint(&body).exact();
    let Some(coding) = coding.filter(|_| size.is_some_and(|n| (MIN_BYTES as u64..=MAX_WHOLE_BYTES).contains(&n)))
    else {
        return Response::from_parts(head, body);
    };
    let bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => return response::error(&e),
    };
    match whole(coding, &bytes).await {
        Ok(coded) => {
            head.headers.insert(CONTENT_ENCODING, coding.header());
            head.headers.remove(CONTENT_LENGTH);
            Response::from_parts(head, response::full(coded))
        }
        Err(_) => Response::from_parts(head, response::full(bytes)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(accept: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(ACCEPT_ENCODING, HeaderValue::from_str(accept).unwrap());
        h
    }

    #[test]
    fn accept_encoding_is_read_by_quality_then_our_preference() {
        let n = |a: &str| Coding::negotiate(&headers(a));
        assert_eq!(n("gzip, deflate, br, zstd"), Some(Coding::Zstd));
        assert_eq!(n("gzip, br"), Some(Coding::Brotli));
        assert_eq!(n("gzip;q=1, zstd;q=0.5"), Some(Coding::Gzip));
        assert_eq!(n("deflate, identity"), None);
        assert_eq!(n("gzip;q=0"), None);
        assert_eq!(Coding::negotiate(&HeaderMap::new()), None);
    }
}
