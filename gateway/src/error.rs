//! The gateway's one error type: what went wrong, in words a caller can act on, and which kind
//! of failure it is. Each front end maps the kind to its wire status in one place
//! (`http::response` for HTTP).

use std::fmt;

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

/// An error with its kind, a stable machine-readable code and a message for people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    pub kind: Kind,
    pub code: &'static str,
    pub message: String,
    /// For filter errors: the 1-based character position in the filter expression.
    pub position: Option<usize>,
    /// Response fields that go with the error (`Retry-After`, `RateLimit`).
    pub headers: Vec<(&'static str, String)>,
}

impl Error {
    pub fn new(kind: Kind, code: &'static str, message: impl Into<String>) -> Error {
        Error { kind, code, message: message.into(), position: None, headers: Vec::new() }
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

impl std::error::Error for Error {}

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
            StoreError::Backend(m) => Error::new(Kind::Unavailable, "store_unavailable", m),
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

impl From<arrow::error::ArrowError> for Error {
    fn from(e: arrow::error::ArrowError) -> Error {
        Error::source(format!("reading the dataset failed: {e}"))
    }
}
