//! Prometheus metrics, exposed on the admin listener at `/metrics`.
//!
//! Names follow the Prometheus conventions (`kaifang_` prefix, base units, `_total` counters,
//! `_seconds` histograms). Labels stay bounded: datasets by catalog id (calls on unknown ids are
//! not counted per dataset), open types, protocols, status classes and fixed enumerations;
//! never keys, principals, paths or client addresses. Unconditional traffic is counted here
//! rather than written to the audit log call by call.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use policy::UpdateFrequency;
use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// What a listener's connections count in [`Metrics`].
#[derive(Clone, Debug)]
pub struct ListenerMetrics {
    pub open: IntGauge,
    pub closed_before_first_request: IntCounter,
    pub closed_idle: IntCounter,
    /// Connections closed because their client took no bytes for `stalled_answer_seconds`.
    pub closed_stalled: IntCounter,
}

/// The limits a call can be refused by.
const LIMITS: [&str; 6] =
    ["anonymous_rate", "key_rate", "agreement_rate", "requests_per_day", "rows_per_day", "bytes_per_day"];

/// The listeners connections are counted by.
const LISTENERS: [&str; 3] = ["http", "admin", "flight"];

/// Buckets of request and stage durations, in seconds: 1 ms to 5 min.
const DURATION_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];
/// Buckets of audit commits (a write and an fsync), in seconds: 50 µs to 1 s.
const COMMIT_BUCKETS: &[f64] = &[0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0];

/// The audit log's own metrics, handed to its writer.
#[derive(Clone)]
pub struct AuditMetrics {
    /// Time to write and sync one group of records.
    pub commit_seconds: Histogram,
    /// Records waiting for the writer.
    pub queue_depth: IntGauge,
    /// Records made durable.
    pub records: IntCounter,
    /// Group commits that failed (every record in them was refused).
    pub failures: IntCounter,
}

impl AuditMetrics {
    /// Metrics registered nowhere, for an audit log opened outside a gateway (tools, tests).
    pub fn detached() -> AuditMetrics {
        Metrics::new().audit
    }
}

pub struct Metrics {
    registry: Registry,
    /// Data calls by protocol, dataset, open type and status class.
    pub requests: IntCounterVec,
    /// Body bytes sent for data calls by protocol, dataset and open type.
    pub response_bytes: IntCounterVec,
    /// Rows answered by data calls (rows a query yielded, or a kept answer holds), by protocol,
    /// dataset and open type.
    pub response_rows: IntCounterVec,
    /// Data calls from request to the end of the answer, by protocol and open type.
    pub duration: HistogramVec,
    /// The part of a data call spent waiting for its source (opening it and reading it).
    pub source_seconds: HistogramVec,
    /// The part of a data call spent in the gateway itself (rules, pipeline, encoding), without
    /// the source's time and without time spent waiting for the client to take data.
    pub gateway_seconds: HistogramVec,
    /// Calls refused by a rate limit or a daily quota, by protocol and the limit's name.
    pub limit_refusals: IntCounterVec,
    /// Data answers being streamed now, by protocol.
    pub active_streams: IntGaugeVec,
    /// Connections open now, by listener (`http`, `admin`, `flight`).
    pub connections: IntGaugeVec,
    /// Data answers in flight now, each holding its reservation in the answer memory budget.
    pub answers_in_flight: IntGauge,
    /// Bytes of the answer memory budget reserved now.
    pub answer_memory_reserved: IntGauge,
    /// Data calls refused for want of room, by protocol and reason (`memory_budget`: the
    /// gateway's budget stayed full; `client_answers`: the client has too many answers in flight).
    pub overload_refusals: IntCounterVec,
    /// Answers cut because their client took nothing for `stalled_answer_seconds`, by listener
    /// and where the stall was seen (`stream`: the answer was not asked for more, as with an
    /// HTTP/2 window left at zero; `connection`: the socket took no bytes).
    pub stalled_answers: IntCounterVec,
    /// Connections closed for sending no request in time, by listener and phase
    /// (`first_request`: none began after the connection was accepted; `idle`: none came after
    /// the last one ended).
    pub idle_closes: IntCounterVec,
    /// Failures talking to upstream origins, by kind.
    pub upstream_errors: IntCounterVec,
    /// Lookups in the key, agreement, decoded-data and kept-answer caches, by cache and result
    /// (`hit`, `miss`).
    pub cache_lookups: IntCounterVec,
    /// Bytes of decoded data (and indexes) the decoded-data cache holds.
    pub decoded_bytes: IntGauge,
    /// Decoded datasets evicted to make room.
    pub decoded_evictions: IntCounter,
    /// Range reads admitted as part of a range read admitted shortly before
    /// (`[limits] range_window_seconds`).
    pub range_reads_joined: IntCounter,
    /// Time to decode a dataset version into the cache.
    pub decode_seconds: Histogram,
    /// Blocks of cached rows a filtered read kept or skipped by their summaries.
    pub decoded_blocks: IntCounterVec,
    pub audit: AuditMetrics,
    /// Applications by state (`submitted`, `approved`, `rejected`), set at each scrape.
    pub applications: IntGaugeVec,
    /// Submitted applications past their due day, set at each scrape.
    pub applications_overdue: IntGauge,
    /// Submitted applications whose due day was counted on the statutory holidays of a year not
    /// yet in the calendar file, set at each scrape.
    pub applications_due_provisionally: IntGauge,
    /// Objections by state (`open`, `resolved`), set at each scrape.
    pub objections: IntGaugeVec,
    /// Webhook delivery attempts by result (`delivered`, `retried`, `abandoned`).
    pub webhook_deliveries: IntCounterVec,
    /// 1 while a backend (`store`, `audit`, `limiter`) answers, 0 after it failed.
    pub backend_up: IntGaugeVec,
    /// Calls the limiter fallback decided because Redis could not be reached.
    pub limiter_fallbacks: IntCounter,
    dataset_age: GaugeVec,
    dataset_interval: GaugeVec,
    dataset_stale: IntGaugeVec,
}

impl AuditMetrics {
    fn new(r: &Registry) -> AuditMetrics {
        AuditMetrics {
            commit_seconds: registered(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "kaifang_audit_commit_seconds",
                        "Time to write and sync one group of audit records.",
                    )
                    .buckets(COMMIT_BUCKETS.to_vec()),
                ),
            ),
            queue_depth: registered(
                r,
                IntGauge::new("kaifang_audit_queue_depth", "Audit records waiting for the writer."),
            ),
            records: registered(r, IntCounter::new("kaifang_audit_records_total", "Audit records made durable.")),
            failures: registered(
                r,
                IntCounter::new(
                    "kaifang_audit_write_failures_total",
                    "Group commits of the audit log that failed; every record in them was refused.",
                ),
            ),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// A metric of one series, registered.
fn registered<M: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: prometheus::Result<M>,
) -> M {
    let metric = metric.expect("valid metric");
    registry.register(Box::new(metric.clone())).expect("registered once");
    metric
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let metric = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry.register(Box::new(metric.clone())).expect("registered once");
    metric
}

fn histogram(registry: &Registry, name: &str, help: &str, labels: &[&str], buckets: &[f64]) -> HistogramVec {
    let metric =
        HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets.to_vec()), labels).expect("valid metric");
    registry.register(Box::new(metric.clone())).expect("registered once");
    metric
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let metric = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry.register(Box::new(metric.clone())).expect("registered once");
    metric
}

fn int_gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let metric = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry.register(Box::new(metric.clone())).expect("registered once");
    metric
}

impl Metrics {
    /// The connection counters of one listener (`http`, `admin` or `flight`).
    pub fn listener(&self, listener: &str) -> ListenerMetrics {
        ListenerMetrics {
            open: self.connections.with_label_values(&[listener]),
            closed_before_first_request: self.idle_closes.with_label_values(&[listener, "first_request"]),
            closed_idle: self.idle_closes.with_label_values(&[listener, "idle"]),
            closed_stalled: self.stalled_answers.with_label_values(&[listener, "connection"]),
        }
    }

    pub fn new() -> Metrics {
        let r = Registry::new();
        let stage = ["protocol", "open_type"];
        let metrics = Metrics {
            requests: counter(
                &r,
                "kaifang_requests_total",
                "Data calls answered, by protocol, dataset, open type and status class.",
                &["protocol", "dataset", "open_type", "status_class"],
            ),
            response_bytes: counter(
                &r,
                "kaifang_response_bytes_total",
                "Body bytes sent for data calls, by protocol, dataset and open type.",
                &["protocol", "dataset", "open_type"],
            ),
            response_rows: counter(
                &r,
                "kaifang_response_rows_total",
                "Rows answered by data calls (a query's rows, or those of an answer kept encoded), by protocol, dataset and open type.",
                &["protocol", "dataset", "open_type"],
            ),
            duration: histogram(
                &r,
                "kaifang_request_duration_seconds",
                "Data calls from request to the end of the answer.",
                &stage,
                DURATION_BUCKETS,
            ),
            source_seconds: histogram(
                &r,
                "kaifang_request_source_seconds",
                "Time a data call spent waiting for its source: opening it and reading it.",
                &stage,
                DURATION_BUCKETS,
            ),
            gateway_seconds: histogram(
                &r,
                "kaifang_request_gateway_seconds",
                "Time a data call spent in the gateway itself (rules, pipeline, encoding), without the source's time and without waiting for the client.",
                &stage,
                DURATION_BUCKETS,
            ),
            limit_refusals: counter(
                &r,
                "kaifang_limit_refusals_total",
                "Calls refused by a rate limit (anonymous_rate, key_rate, agreement_rate) or a daily quota (requests_per_day, rows_per_day, bytes_per_day).",
                &["protocol", "limit"],
            ),
            active_streams: int_gauge(&r, "kaifang_active_streams", "Data answers being streamed now, by protocol.", &["protocol"]),
            connections: int_gauge(&r, "kaifang_connections", "Connections open now, by listener.", &["listener"]),
            answers_in_flight: registered(
                &r,
                IntGauge::new(
                    "kaifang_answers_in_flight",
                    "Data answers in flight now, each holding its reservation in the answer memory budget.",
                ),
            ),
            answer_memory_reserved: registered(
                &r,
                IntGauge::new(
                    "kaifang_answer_memory_reserved_bytes",
                    "Bytes of the answer memory budget ([server] answer_memory_bytes) reserved now.",
                ),
            ),
            overload_refusals: counter(
                &r,
                "kaifang_overload_refusals_total",
                "Data calls refused for want of room: memory_budget (503, the memory budget stayed full; protocol cache: a dataset could not be decoded into the cache), client_answers (429, the client has too many answers in flight).",
                &["protocol", "reason"],
            ),
            stalled_answers: counter(
                &r,
                "kaifang_stalled_answers_cut_total",
                "Answers cut because the client took nothing for stalled_answer_seconds, by listener and where (stream: not asked for more; connection: the socket took no bytes).",
                &["listener", "where"],
            ),
            idle_closes: counter(
                &r,
                "kaifang_idle_connections_closed_total",
                "Connections closed for sending no request in time, by listener and phase (first_request, idle).",
                &["listener", "phase"],
            ),
            upstream_errors: counter(
                &r,
                "kaifang_upstream_errors_total",
                "Failures talking to upstream origins: connect, timeout, idle, broken, status.",
                &["kind"],
            ),
            cache_lookups: counter(
                &r,
                "kaifang_cache_lookups_total",
                "Lookups in the key, agreement, decoded-data, kept-answer and open-objection caches, by cache and result (hit, miss).",
                &["cache", "result"],
            ),
            decoded_bytes: registered(
                &r,
                IntGauge::new(
                    "kaifang_decoded_cache_bytes",
                    "Bytes of decoded data and indexes held by the decoded-data cache ([cache] max_bytes).",
                ),
            ),
            decoded_evictions: registered(
                &r,
                IntCounter::new("kaifang_decoded_cache_evictions_total", "Decoded datasets evicted from the cache to make room."),
            ),
            range_reads_joined: registered(
                &r,
                IntCounter::new(
                    "kaifang_range_reads_joined_total",
                    "Range reads counted as part of the caller's range read of the same dataset version admitted within [limits] range_window_seconds.",
                ),
            ),
            decode_seconds: registered(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new("kaifang_decoded_cache_decode_seconds", "Time to decode a dataset version into the cache.")
                        .buckets(DURATION_BUCKETS.to_vec()),
                ),
            ),
            decoded_blocks: counter(
                &r,
                "kaifang_decoded_cache_blocks_total",
                "Blocks of cached rows that filtered reads kept (read) or skipped by their value ranges and filters (skipped).",
                &["result"],
            ),
            audit: AuditMetrics::new(&r),
            applications: int_gauge(
                &r,
                "kaifang_applications",
                "Applications for conditional data by state (submitted, approved, rejected).",
                &["state"],
            ),
            applications_overdue: registered(
                &r,
                IntGauge::new(
                    "kaifang_applications_overdue",
                    format!(
                        "Submitted applications whose owner has not answered by the due day ({} working days).",
                        policy::workflow::ANSWER_WITHIN_WORKING_DAYS
                    ),
                ),
            ),
            applications_due_provisionally: registered(
                &r,
                IntGauge::new(
                    "kaifang_applications_due_provisionally",
                    "Submitted applications whose due day is provisional: counted on the statutory holidays of a year the \
                 calendar file does not have yet.",
                ),
            ),
            objections: int_gauge(&r, "kaifang_objections", "Objections to published data by state (open, resolved).", &["state"]),
            webhook_deliveries: counter(
                &r,
                "kaifang_webhook_deliveries_total",
                "Owner webhook delivery attempts by result (delivered, retried, abandoned).",
                &["result"],
            ),
            backend_up: int_gauge(
                &r,
                "kaifang_backend_up",
                "1 while the backend (store, audit, limiter) answers, 0 after it failed; set at each readiness check and limiter call.",
                &["backend"],
            ),
            limiter_fallbacks: registered(
                &r,
                IntCounter::new(
                    "kaifang_limiter_fallbacks_total",
                    "Calls decided by the local fallback because the shared limiter (Redis) could not be reached.",
                ),
            ),
            dataset_age: gauge(&r, "kaifang_dataset_age_seconds", "Time since the dataset was last updated, by dataset.", &["dataset"]),
            dataset_interval: gauge(
                &r,
                "kaifang_dataset_update_interval_seconds",
                "The dataset's declared update frequency as an interval, by dataset (absent for irregular datasets).",
                &["dataset"],
            ),
            dataset_stale: int_gauge(
                &r,
                "kaifang_dataset_stale",
                "1 when the dataset is older than its declared update interval allows, else 0.",
                &["dataset"],
            ),
            registry: r,
        };
        let build = int_gauge(
            &metrics.registry,
            "kaifang_build_info",
            "The running build: 1, labelled with its version.",
            &["version"],
        );
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        metrics.start_at_zero();
        metrics
    }

    /// Series with known label values start at zero, so that dashboards and alerts see them
    /// before the first event (rate() of a missing series is no data, not 0).
    fn start_at_zero(&self) {
        for protocol in ["http", "flight"] {
            self.active_streams.with_label_values(&[protocol]).set(0);
            for limit in LIMITS {
                self.limit_refusals.with_label_values(&[protocol, limit]);
            }
            for reason in ["memory_budget", "client_answers"] {
                self.overload_refusals.with_label_values(&[protocol, reason]);
            }
            for place in ["stream", "connection"] {
                self.stalled_answers.with_label_values(&[protocol, place]);
            }
        }
        self.overload_refusals.with_label_values(&["cache", "memory_budget"]);
        for result in ["read", "skipped"] {
            self.decoded_blocks.with_label_values(&[result]);
        }
        for listener in LISTENERS {
            self.connections.with_label_values(&[listener]).set(0);
            for phase in ["first_request", "idle"] {
                self.idle_closes.with_label_values(&[listener, phase]);
            }
        }
        for kind in ["connect", "timeout", "idle", "broken", "status"] {
            self.upstream_errors.with_label_values(&[kind]);
        }
        for cache in ["keys", "agreements", "decoded", "answers", "objections"] {
            for result in ["hit", "miss"] {
                self.cache_lookups.with_label_values(&[cache, result]);
            }
        }
        for state in policy::ApplicationStatus::ALL {
            self.applications.with_label_values(&[state.as_str()]).set(0);
        }
        for state in policy::ObjectionStatus::ALL {
            self.objections.with_label_values(&[state.as_str()]).set(0);
        }
        for result in ["delivered", "retried", "abandoned"] {
            self.webhook_deliveries.with_label_values(&[result]);
        }
        for backend in ["store", "audit", "limiter"] {
            self.backend_up.with_label_values(&[backend]).set(0);
        }
    }

    /// Counts a data call on `dataset` answered with (the HTTP form of) `status`, and returns the
    /// counters its body bytes and its rows go to.
    pub fn data_call(&self, protocol: &str, dataset: &policy::Dataset, status: u16) -> (IntCounter, IntCounter) {
        let (id, open_type) = (dataset.id.as_str(), dataset.open_type.as_str());
        self.requests.with_label_values(&[protocol, id, open_type, status_class(status)]).inc();
        let labels = [protocol, id, open_type];
        (self.response_bytes.with_label_values(&labels), self.response_rows.with_label_values(&labels))
    }

    /// Sets the freshness gauges of the listed datasets as of `now`.
    pub fn freshness<'a>(&self, datasets: impl IntoIterator<Item = &'a policy::Dataset>, now: DateTime<Utc>) {
        for d in datasets {
            let id = d.id.as_str();
            let age = (now - d.last_updated).num_milliseconds().max(0) as f64 / 1000.0;
            self.dataset_age.with_label_values(&[id]).set(age);
            match update_interval(d.update_frequency) {
                Some(interval) => {
                    let interval = interval.as_secs_f64();
                    self.dataset_interval.with_label_values(&[id]).set(interval);
                    self.dataset_stale.with_label_values(&[id]).set(i64::from(age > interval * STALE_AFTER));
                }
                None => self.dataset_stale.with_label_values(&[id]).set(0),
            }
        }
    }

    /// The text exposition format.
    /// Every metric's current values.
    pub fn gather(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.registry.gather()
    }

    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("text encoding cannot fail");
        String::from_utf8(out).expect("the exposition format is UTF-8")
    }
}

/// A dataset is stale once it is older than this many declared intervals: one missed update is
/// allowed for, since publishing takes time.
pub const STALE_AFTER: f64 = 2.0;

/// The declared update frequency as an interval; none for irregular datasets.
pub fn update_interval(frequency: UpdateFrequency) -> Option<Duration> {
    const HOUR: u64 = 3600;
    const DAY: u64 = 24 * HOUR;
    Some(Duration::from_secs(match frequency {
        // Real-time feeds are expected to change within minutes.
        UpdateFrequency::Realtime => 5 * 60,
        UpdateFrequency::Hourly => HOUR,
        UpdateFrequency::Daily => DAY,
        UpdateFrequency::Weekly => 7 * DAY,
        UpdateFrequency::Monthly => 31 * DAY,
        UpdateFrequency::Quarterly => 92 * DAY,
        UpdateFrequency::Yearly => 366 * DAY,
        UpdateFrequency::Irregular => return None,
    }))
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

/// Time accounting of one streamed answer: how long polling it took in all, and how much of that
/// was spent waiting for the source. Cloned into the source's stream and the answer's.
#[derive(Clone, Default)]
pub struct Timing {
    inner: Arc<std::sync::Mutex<TimingState>>,
}

#[derive(Default)]
struct TimingState {
    busy: Duration,
    source: Duration,
}

impl Timing {
    pub fn add_busy(&self, d: Duration) {
        self.inner.lock().expect("timing lock").busy += d;
    }

    pub fn add_source(&self, d: Duration) {
        self.inner.lock().expect("timing lock").source += d;
    }

    /// (time in the gateway, time in the source).
    pub fn split(&self) -> (Duration, Duration) {
        let state = self.inner.lock().expect("timing lock");
        (state.busy.saturating_sub(state.source), state.source)
    }
}

/// Wraps a stream so the time spent polling it is added by `add` to `timing`.
pub fn timed<S: futures_util::Stream + Send + Unpin>(
    stream: S,
    timing: Timing,
    add: fn(&Timing, Duration),
) -> impl futures_util::Stream<Item = S::Item> + Send {
    let mut stream = stream;
    futures_util::stream::poll_fn(move |cx| {
        let started = Instant::now();
        let polled = std::pin::Pin::new(&mut stream).poll_next(cx);
        add(&timing, started.elapsed());
        polled
    })
}
