//! Prometheus metrics, exposed on the admin listener at `/metrics`.
//!
//! Labels stay bounded: datasets by catalog id (calls on unknown ids are not counted per
//! dataset), open types, protocols and status classes; never keys, paths or client addresses.
//! Unconditional traffic is counted here rather than written to the audit log call by call.

use prometheus::{Encoder, IntCounterVec, Opts, Registry, TextEncoder};

pub struct Metrics {
    registry: Registry,
    /// Data calls by protocol, dataset, open type and status class.
    pub requests: IntCounterVec,
    /// Body bytes sent for data calls by protocol, dataset and open type.
    pub response_bytes: IntCounterVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "kaifang_requests_total",
                "Data calls answered, by protocol, dataset, open type and status class.",
            ),
            &["protocol", "dataset", "open_type", "status_class"],
        )
        .expect("valid metric");
        let response_bytes = IntCounterVec::new(
            Opts::new(
                "kaifang_response_bytes_total",
                "Body bytes sent for data calls, by protocol, dataset and open type.",
            ),
            &["protocol", "dataset", "open_type"],
        )
        .expect("valid metric");
        registry.register(Box::new(requests.clone())).expect("registered once");
        registry.register(Box::new(response_bytes.clone())).expect("registered once");
        Metrics { registry, requests, response_bytes }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("text encoding cannot fail");
        String::from_utf8(out).expect("the exposition format is UTF-8")
    }
}

/// `2xx`, `4xx` and so on.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}
