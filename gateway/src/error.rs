//! The gateway's one error type: what went wrong, in words a caller can act on, which kind of
//! failure it is, whose fault it is (the client's, an upstream source's or the gateway's own),
//! and the error underneath, for the logs. Each front end maps the kind to its wire status in
//! one place (`http::response` for HTTP, `flight::status` for Flight); each source of errors
//! converts to it in one place (the `From` implementations below).
//!
//! [`StartupError`] is why the gateway could not start, by the part that failed.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// The kind of failure; each has one HTTP status and one stable `code` string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The request itself is malformed (bad filter, bad parameter, key in the query string).
    BadRequest,
    /// No key where one is required, or an unknown key.
    Unauthenticated,
    /// Outside the caller's grant.
    Forbidden,
    /// Unknown or non-open dataset, or no such endpoint.
    NotFound,
    /// The dataset has been withdrawn (HTTP 410, Flight `FailedPrecondition`).
    Gone,
    /// The method is not served on this path.
    MethodNotAllowed,
    /// No format the request accepts can be produced (HTTP 406).
    NotAcceptable,
    /// The requested byte range lies outside the file.
    RangeNotSatisfiable,
    /// The request conflicts with existing state (an id already taken).
    Conflict,
    /// A rate limit or daily quota is spent.
    TooManyRequests,
    /// The gateway cannot serve this now (its store is unavailable).
    Unavailable,
    /// The dataset's source could not be read (missing file, origin down, corrupt data).
    SourceFailed,
    /// The upstream origin did not answer in time.
    SourceTimeout,
    /// A bug or an unexpected condition inside the gateway.
    Internal,
}

impl Kind {
    /// The kind's HTTP status: the answer's on HTTP, and the status a call is counted under in
    /// the metrics on every protocol.
    pub fn status(self) -> u16 {
        match self {
            Kind::BadRequest => 400,
            Kind::Unauthenticated => 401,
            Kind::Forbidden => 403,
            Kind::NotFound => 404,
            Kind::Gone => 410,
            Kind::MethodNotAllowed => 405,
            Kind::NotAcceptable => 406,
            Kind::RangeNotSatisfiable => 416,
            Kind::Conflict => 409,
            Kind::TooManyRequests => 429,
            Kind::Unavailable => 503,
            Kind::SourceFailed => 502,
            Kind::SourceTimeout => 504,
            Kind::Internal => 500,
        }
    }
}

/// Whose fault a failure is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The request: it is malformed, unauthorized, outside its grant, or over its limits.
    Client,
    /// A dataset's source: a file that cannot be read, an origin that fails or does not answer.
    Upstream,
    /// The gateway itself: its store, its audit log, its memory budget, or a bug.
    Gateway,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Upstream => "upstream",
            Side::Gateway => "gateway",
        }
    }
}

impl Kind {
    /// Whose fault a failure of this kind is.
    pub fn side(self) -> Side {
        match self {
            Kind::SourceFailed | Kind::SourceTimeout => Side::Upstream,
            Kind::Unavailable | Kind::Internal => Side::Gateway,
            Kind::BadRequest
            | Kind::Unauthenticated
            | Kind::Forbidden
            | Kind::NotFound
            | Kind::Gone
            | Kind::MethodNotAllowed
            | Kind::NotAcceptable
            | Kind::RangeNotSatisfiable
            | Kind::Conflict
            | Kind::TooManyRequests => Side::Client,
        }
    }
}

/// The error underneath a gateway error (a store's, an I/O error, an Arrow error), kept for the
/// logs; callers are told the message, not the cause.
#[derive(Clone, Debug)]
pub struct Cause(Arc<dyn std::error::Error + Send + Sync>);

impl PartialEq for Cause {
    fn eq(&self, other: &Cause) -> bool {
        self.0.to_string() == other.0.to_string()
    }
}

impl Eq for Cause {}

/// An error with its kind, a stable machine-readable code, a message for people and, where it
/// came from another error, that error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    pub kind: Kind,
    pub code: &'static str,
    pub message: String,
    /// For filter errors: the 1-based character position in the filter expression.
    pub position: Option<usize>,
    /// Response fields that go with the error (`Retry-After`, `RateLimit`).
    pub headers: Vec<(&'static str, String)>,
    /// The error underneath, if any.
    pub cause: Option<Cause>,
}

impl Error {
    pub fn new(kind: Kind, code: &'static str, message: impl Into<String>) -> Error {
        Error { kind, code, message: message.into(), position: None, headers: Vec::new(), cause: None }
    }

    /// The same error, with the error underneath it kept for the logs.
    pub fn caused_by(mut self, cause: impl std::error::Error + Send + Sync + 'static) -> Error {
        self.cause = Some(Cause(Arc::new(cause)));
        self
    }

    /// Whose fault it is.
    pub fn side(&self) -> Side {
        self.kind.side()
    }

    /// Logs the error once, at the level its side calls for: the gateway's own failures are
    /// errors, an upstream source's are warnings, a client's are debug lines (its status is in
    /// the request's log line already).
    pub fn log(&self) {
        let cause = self.cause.as_ref().map(|c| c.0.to_string());
        let (code, side) = (self.code, self.side().as_str());
        match self.side() {
            Side::Gateway => tracing::error!(code, side, cause, "{}", self.message),
            Side::Upstream => tracing::warn!(code, side, cause, "{}", self.message),
            Side::Client => tracing::debug!(code, side, cause, "{}", self.message),
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Error {
        Error::new(Kind::BadRequest, code, message)
    }

    /// The one answer for unknown and non-open datasets, so non-open ids cannot be probed.
    pub fn dataset_not_found() -> Error {
        Error::new(Kind::NotFound, "not_found", "no dataset with this id")
    }

    pub fn source(message: impl Into<String>) -> Error {
        Error::new(Kind::SourceFailed, "source_failed", message)
    }

    pub fn internal(message: impl Into<String>) -> Error {
        Error::new(Kind::Internal, "internal", message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause.as_ref().map(|c| &*c.0 as &(dyn std::error::Error + 'static))
    }
}

impl From<policy::Refusal> for Error {
    fn from(refusal: policy::Refusal) -> Error {
        use policy::Refusal;
        match refusal {
            Refusal::NotFound => Error::dataset_not_found(),
            Refusal::KeyRequired(_) => Error::new(Kind::Unauthenticated, "key_required", refusal.to_string()),
            Refusal::NoAgreement { .. } => Error::new(Kind::Forbidden, "no_agreement", refusal.to_string()),
            Refusal::DownloadOutsideScope(_) => {
                Error::new(Kind::Forbidden, "download_outside_scope", refusal.to_string())
            }
            Refusal::Withdrawn { .. } => Error::new(Kind::Gone, "dataset_withdrawn", refusal.to_string()),
        }
    }
}

/// The one mapping of store errors, the same on every router: a missing record is 404, a
/// conflicting one 409, a store that cannot answer 503.
impl From<crate::store::StoreError> for Error {
    fn from(e: crate::store::StoreError) -> Error {
        use crate::store::StoreError;
        match e {
            StoreError::NotFound(m) => Error::new(Kind::NotFound, "not_found", m),
            StoreError::Conflict(m) => Error::new(Kind::Conflict, "conflict", m),
            StoreError::Backend(ref m) => Error::new(Kind::Unavailable, "store_unavailable", m.clone()).caused_by(e),
        }
    }
}

impl From<policy::FilterError> for Error {
    fn from(e: policy::FilterError) -> Error {
        {
            let mut error = Error::bad_request("bad_filter", format!("filter: {e}"));
            error.position = Some(e.position);
            error
        }
    }
}

/// Arrow errors come from reading a dataset (the encoders' own failures are the gateway's, and
/// are converted where the encoders are).
impl From<arrow::error::ArrowError> for Error {
    fn from(e: arrow::error::ArrowError) -> Error {
        Error::source(format!("reading the dataset failed: {e}")).caused_by(e)
    }
}

/// Why the gateway could not start, by the part of it that failed; the message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The configuration (file, command line or environment) is invalid.
    #[error("{0}")]
    Config(String),
    /// A directory of the data directory cannot be made.
    #[error("cannot create {}: {source}", path.display())]
    Directory {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The state store cannot be opened, or what the configuration declares cannot be put in it.
    #[error("{0}")]
    Store(String),
    /// The audit log cannot be opened.
    #[error("{0}")]
    Audit(String),
    /// A secret (the operator token, the webhook signing secret) cannot be read or made.
    #[error("{0}")]
    Secret(String),
    /// A listener's certificates or keys.
    #[error("{0}")]
    Tls(String),
    /// The shared limiter of a cluster.
    #[error("{0}")]
    Limiter(String),
    /// The embedded demo's data or key cannot be written.
    #[error("{0}")]
    Demo(String),
    /// A listener's address cannot be taken.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The runtime cannot be started.
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;
    use std::error::Error as _;

    #[test]
    fn each_kind_has_its_side() {
        assert_eq!(Error::source("x").side(), Side::Upstream);
        assert_eq!(Error::new(Kind::SourceTimeout, "source_timeout", "x").side(), Side::Upstream);
        assert_eq!(Error::internal("x").side(), Side::Gateway);
        assert_eq!(Error::new(Kind::Unavailable, "overloaded", "x").side(), Side::Gateway);
        assert_eq!(Error::bad_request("bad_filter", "x").side(), Side::Client);
        assert_eq!(Error::dataset_not_found().side(), Side::Client);
    }

    /// One conversion per source of errors, each keeping the error underneath for the logs
    /// where there is one, and answering as the same kind on every router.
    #[test]
    fn conversions_keep_the_cause_and_map_one_way() {
        let store = Error::from(StoreError::Backend("disk I/O error".into()));
        assert_eq!((store.kind, store.code, store.side()), (Kind::Unavailable, "store_unavailable", Side::Gateway));
        assert_eq!(store.source().map(|c| c.to_string()), Some("store failure: disk I/O error".to_owned()));
        assert_eq!(Error::from(StoreError::NotFound("no agreement".into())).kind, Kind::NotFound);
        assert_eq!(Error::from(StoreError::Conflict("taken".into())).kind, Kind::Conflict);
        let arrow = Error::from(arrow::error::ArrowError::ParseError("bad row 3".into()));
        assert_eq!((arrow.kind, arrow.side()), (Kind::SourceFailed, Side::Upstream));
        assert!(arrow.source().is_some_and(|c| c.to_string().contains("bad row 3")));
        assert!(Error::bad_request("bad_filter", "x").source().is_none());
    }

    #[test]
    fn every_kind_has_an_http_status_of_its_class() {
        for (kind, class) in [
            (Kind::BadRequest, 4),
            (Kind::Gone, 4),
            (Kind::TooManyRequests, 4),
            (Kind::SourceFailed, 5),
            (Kind::Unavailable, 5),
            (Kind::Internal, 5),
        ] {
            assert_eq!(kind.status() / 100, class, "{kind:?}");
            assert_eq!(kind.side() == Side::Client, class == 4, "{kind:?}");
        }
    }
}
