//! The gateway's own counters, kept by hour in the store so that the operation report can tell
//! the use of every dataset (unconditional data included), the availability, the latency and the
//! failures over any period: every minute, and when the gateway stops, what each kept counter
//! grew by since the last time is added to the hour it is written in. Nothing is added to the
//! path of a call: the counters are the metrics every call already counts in.

use std::collections::BTreeMap;

use prometheus::proto::{MetricFamily, MetricType};

use crate::store::TrafficFigure;

/// The metrics kept, and the series they are kept as.
const KEPT: [(&str, &str); 8] = [
    ("kaifang_requests_total", "calls"),
    ("kaifang_response_bytes_total", "bytes"),
    ("kaifang_response_rows_total", "rows"),
    ("kaifang_request_duration_seconds", "duration"),
    ("kaifang_limit_refusals_total", "limit_refusals"),
    ("kaifang_overload_refusals_total", "overload_refusals"),
    ("kaifang_audit_write_failures_total", "audit_write_failures"),
    ("kaifang_limiter_fallbacks_total", "limiter_fallbacks"),
];

/// Counter values by series and labels (a JSON object, keys in order).
pub type Values = BTreeMap<(String, String), f64>;

fn labels(pairs: impl IntoIterator<Item = (String, String)>) -> String {
    let map: BTreeMap<String, String> = pairs.into_iter().collect();
    serde_json::to_string(&map).expect("labels serialize")
}

/// The kept counters' values now. A histogram is kept as its buckets (`<series>_bucket`, with
/// `le`), its count and its sum.
pub fn values(families: &[MetricFamily]) -> Values {
    let mut out = Values::new();
    for family in families {
        let Some((_, series)) = KEPT.iter().find(|(name, _)| *name == family.name()) else { continue };
        for metric in family.get_metric() {
            let pairs = || metric.get_label().iter().map(|l| (l.name().to_owned(), l.value().to_owned()));
            match family.get_field_type() {
                MetricType::COUNTER => {
                    out.insert((series.to_string(), labels(pairs())), metric.get_counter().get_value());
                }
                MetricType::HISTOGRAM => {
                    let h = metric.get_histogram();
                    for bucket in h.get_bucket() {
                        let le = ("le".to_owned(), bucket.upper_bound().to_string());
                        let key = (format!("{series}_bucket"), labels(pairs().chain([le])));
                        out.insert(key, bucket.cumulative_count() as f64);
                    }
                    out.insert((format!("{series}_count"), labels(pairs())), h.get_sample_count() as f64);
                    out.insert((format!("{series}_sum"), labels(pairs())), h.get_sample_sum());
                }
                _ => {}
            }
        }
    }
    out
}

/// What each counter grew by from `before` to `now` (a counter not seen before grew by all it
/// holds); counters that did not grow are left out.
pub fn growth(now: &Values, before: &Values) -> Vec<TrafficFigure> {
    now.iter()
        .filter_map(|((series, labels), value)| {
            let grew = value - before.get(&(series.clone(), labels.clone())).copied().unwrap_or(0.0);
            (grew > 0.0).then(|| TrafficFigure { series: series.clone(), labels: labels.clone(), value: grew })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_histograms_are_kept_by_their_growth() {
        let registry = prometheus::Registry::new();
        let calls = prometheus::IntCounterVec::new(
            prometheus::Opts::new("kaifang_requests_total", "calls"),
            &["dataset", "status_class"],
        )
        .unwrap();
        let duration = prometheus::HistogramVec::new(
            prometheus::HistogramOpts::new("kaifang_request_duration_seconds", "d").buckets(vec![0.01, 0.1]),
            &["open_type"],
        )
        .unwrap();
        let other = prometheus::IntCounter::new("kaifang_not_kept_total", "x").unwrap();
        registry.register(Box::new(calls.clone())).unwrap();
        registry.register(Box::new(duration.clone())).unwrap();
        registry.register(Box::new(other.clone())).unwrap();
        calls.with_label_values(&["air", "2xx"]).inc_by(3);
        other.inc();
        let first = values(&registry.gather());
        calls.with_label_values(&["air", "2xx"]).inc_by(2);
        calls.with_label_values(&["air", "5xx"]).inc();
        duration.with_label_values(&["unconditional"]).observe(0.05);
        let grown = growth(&values(&registry.gather()), &first);
        let find = |series: &str, labels: &str| {
            grown.iter().find(|f| f.series == series && f.labels == labels).map(|f| f.value)
        };
        assert_eq!(find("calls", r#"{"dataset":"air","status_class":"2xx"}"#), Some(2.0));
        assert_eq!(find("calls", r#"{"dataset":"air","status_class":"5xx"}"#), Some(1.0));
        assert_eq!(find("duration_bucket", r#"{"le":"0.01","open_type":"unconditional"}"#), None, "did not grow");
        assert_eq!(find("duration_bucket", r#"{"le":"0.1","open_type":"unconditional"}"#), Some(1.0));
        assert_eq!(find("duration_count", r#"{"open_type":"unconditional"}"#), Some(1.0));
        assert!(grown.iter().all(|f| !f.series.contains("not_kept")));
    }
}
