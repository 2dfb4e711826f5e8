//! kaifang: the data gateway of a city's public-data open platform.
//!
//! The `kaifang` binary (`src/main.rs`) is a thin command line over this library. The modules,
//! one per concern:
//! - [`config`]: TOML configuration and catalog, checked with file/line/field errors;
//! - [`state`]: the catalog and shared clients every request reads;
//! - [`source`]: files and upstream origins, as raw bytes and as record batches;
//! - [`pipeline`]: the scoped stream (filter, order, window, projection) driven by a grant;
//! - [`encode`]: CSV, NDJSON, JSON and Arrow IPC output, batch by batch;
//! - [`http`]: the HTTP/1.1 and HTTP/2 data API;
//! - [`demo`]: the deterministic demo datasets.
//!
//! The rules themselves live in the `policy` crate; this crate asks it once per request.
#![forbid(unsafe_code)]

pub mod config;
pub mod demo;
pub mod encode;
pub mod error;
pub mod http;
pub mod pipeline;
pub mod source;
pub mod state;
