//! kaifang: the data gateway of a city's public-data open platform.
//!
//! The `kaifang` binary (`src/main.rs`) is a thin command line over this library. The modules,
//! one per concern:
//! - [`config`]: TOML configuration and catalog, checked with file/line/field errors;
//! - [`state`]: the catalog, store, caches and limiters every request reads;
//! - [`clock`]: the workflows' clock (settable in test builds);
//! - [`store`]: principals, keys, agreements and quota usage (SQLite by default);
//! - [`auth`]: API keys, issued and verified through caches;
//! - [`ratelimit`]: rate limits and daily quotas;
//! - [`audit`]: the durable, hash-chained record of every call on conditional data;
//! - [`source`]: files and upstream origins, as raw bytes and as record batches;
//! - [`call`]: one call on one dataset, whatever the front end: grant, limits, plan, audit;
//! - [`pipeline`]: the scoped stream (filter, order, window, projection) driven by a grant;
//! - [`encode`]: CSV, NDJSON, JSON and Arrow IPC output, batch by batch;
//! - [`connection`]: accepted connections, plain or TLS, closed when idle;
//! - [`http`]: the HTTP/1.1 and HTTP/2 data API, and the admin API;
//! - [`flight`]: the Arrow Flight service;
//! - [`metrics`]: Prometheus metrics;
//! - [`demo`]: the deterministic demo datasets.
//!
//! The rules themselves live in the `policy` crate; this crate asks it once per request.
#![forbid(unsafe_code)]

pub mod answers;
pub mod audit;
pub mod auth;
pub mod background;
pub mod cache;
pub mod call;
pub mod clock;
pub mod config;
pub mod connection;
pub mod demo;
pub mod encode;
pub mod error;
pub mod flight;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod metrics;
pub mod notify;
pub mod operation;
pub mod pipeline;
pub mod ratelimit;
pub mod server;
pub mod shared_limits;
pub mod shared_read;
pub mod source;
pub mod sql;
pub mod state;
pub mod store;
pub mod tls;
