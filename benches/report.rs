//! The operation report over a year of audit records: how long `kaifang report` takes to read
//! a year's log (and verify its chain) and put the report together, on this machine.
//!
//!     cargo bench -p kaifang --bench report
//!
//! A year (2025) of conditional calls is written through the audit log's own writer into a
//! fresh data directory: `KAIFANG_REPORT_CALLS_PER_DAY` calls a day (2,000 by default), spread
//! over the day (the platform's, UTC+8), each an intent and a completion, and one call in twenty refused instead (one
//! record). The report over the year is then built three times on the embedded demo's
//! configuration and store; the median is printed, with the records and bytes read per second.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::{Duration, NaiveDate, TimeZone, Utc};
use kaifang::audit::{AuditSink, Outcome, Record};
use kaifang::config::{self, Origin};
use kaifang::operation::{self, Period};
use kaifang::store::sqlite::SqliteStore;

const PRINCIPALS: [&str; 5] = ["acme", "beta", "gamma", "delta", "epsilon"];

/// Midnight of `day` in the platform's time zone (the demo's, UTC+8).
fn midnight(day: NaiveDate) -> chrono::DateTime<Utc> {
    Utc.from_utc_datetime(&day.and_hms_opt(0, 0, 0).unwrap()) - Duration::hours(8)
}

fn served(day: NaiveDate, i: u64, per_day: u64) -> (Record, Record) {
    let time = midnight(day) + Duration::milliseconds((i * 86_400_000 / per_day) as i64);
    let principal = PRINCIPALS[(i % 5) as usize].to_owned();
    let agreement = format!("ag-{principal}");
    let request_id = format!("{day}-{i:08}");
    let intent = Record::Intent {
        request_id: request_id.clone(),
        time,
        key_id: format!("key-{principal}"),
        principal: principal.clone(),
        agreement: agreement.clone(),
        dataset: "enterprises".into(),
        dataset_version: Some("18ebe834e76b2df7-c3dda".into()),
        operation: "rows".into(),
        columns: ["uscc", "name", "district", "legal_rep_mobile"].iter().map(|c| c.to_string()).collect(),
        filter: Some("\"status\" = 'active'".into()),
        masks: BTreeMap::from([("legal_rep_mobile".to_string(), "cn_mobile".to_string())]),
        client: "10.1.2.3".into(),
        user_agent: Some("python-requests/2.32".into()),
        statement: None,
    };
    let completion = Record::Completion {
        request_id,
        intent_seq: 0,
        time: time + Duration::milliseconds(40),
        principal,
        agreement,
        dataset: "enterprises".into(),
        status: 200,
        rows: 100,
        bytes: 24_000,
        duration_ms: 40,
        outcome: Outcome::Complete,
    };
    (intent, completion)
}

fn refused(day: NaiveDate, i: u64) -> Record {
    Record::Unserved {
        request_id: format!("{day}-{i:08}"),
        time: midnight(day) + Duration::hours(12),
        key_id: Some("key-acme".into()),
        principal: Some("acme".into()),
        dataset: "enterprises".into(),
        operation: "rows".into(),
        client: "10.1.2.3".into(),
        user_agent: None,
        statement: None,
        status: 429,
        reason: "rate_limited: the agreement's rate is spent".into(),
        outcome: Outcome::Refused,
        unrecorded_refusals: 0,
    }
}

fn main() {
    let per_day: u64 = std::env::var("KAIFANG_REPORT_CALLS_PER_DAY").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let dir = tempfile::tempdir().unwrap();
    let mut config = config::load(Origin::Embedded, std::path::Path::new("kaifang.toml")).unwrap();
    config.data_dir = dir.path().join("data");
    let audit_dir = kaifang::state::audit_dir(&config.data_dir);
    let year = NaiveDate::from_ymd_opt(2025, 1, 1).unwrap();

    let written = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let log: Arc<dyn AuditSink> = Arc::new(
        kaifang::audit::segments::open(&audit_dir, 256 << 20, kaifang::metrics::AuditMetrics::detached()).unwrap(),
    );
    runtime.block_on(async {
        for day in year.iter_days().take(365) {
            let appends: Vec<_> = (0..per_day)
                .map(|i| {
                    let log = log.clone();
                    async move {
                        if i % 20 == 19 {
                            log.append(refused(day, i)).await.map(|_| ())
                        } else {
                            let (intent, completion) = served(day, i, per_day);
                            log.append_served(intent, completion).await.map(|_| ())
                        }
                    }
                })
                .collect();
            for appended in futures_util::future::join_all(appends).await {
                appended.unwrap();
            }
        }
    });
    drop(log);
    let bytes: u64 = std::fs::read_dir(&audit_dir).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
    eprintln!(
        "wrote a year of audit records ({per_day} calls a day, {} MB) in {:.1} s",
        bytes >> 20,
        written.elapsed().as_secs_f64()
    );

    std::fs::create_dir_all(&config.data_dir).unwrap();
    let store = SqliteStore::open(&config.data_dir).unwrap();
    kaifang::state::store_declared(&store, &config).unwrap();
    let period = Period::new(year, NaiveDate::from_ymd_opt(2025, 12, 31).unwrap()).unwrap();
    let now = Utc.with_ymd_and_hms(2026, 1, 5, 2, 0, 0).unwrap();
    let mut times = Vec::new();
    let mut records = 0;
    for _ in 0..3 {
        let started = Instant::now();
        let report = operation::build_for(&config, &store, now, period, None, &|_, _| {}).unwrap();
        times.push(started.elapsed().as_secs_f64());
        records = report.platform.audit_records_read;
        assert!(report.platform.audit_chains.iter().all(|c| c.verified), "the generated log verifies");
        assert_eq!(report.conditional_use.by_dataset[0].calls, 365 * (per_day - per_day / 20));
    }
    times.sort_by(f64::total_cmp);
    let median = times[1];
    println!(
        "operation report over a year: {records} audit records ({} MB), median of 3 runs {median:.2} s \
         ({:.0} records/s, {:.0} MB/s), runs {times:.2?}",
        bytes >> 20,
        records as f64 / median,
        (bytes >> 20) as f64 / median
    );
}
