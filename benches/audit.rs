//! Audit records per second with group commit (criterion): many concurrent callers each
//! appending a typical intent record and waiting until it is durable, as conditional calls do.
//!
//!     cargo bench -p kaifang --bench audit
//!
//! Every append is fsync'd before it returns; concurrent appends share one sync. The
//! throughput criterion reports is records per second.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kaifang::audit::{AuditSink, Record};

fn intent(i: u64) -> Record {
    Record::Intent {
        request_id: format!("3f1c2a7e-0000-4000-8000-{i:012}"),
        time: Utc::now(),
        key_id: "9673c46092b34c3c".into(),
        principal: "demo-analytics".into(),
        agreement: "demo-enterprises".into(),
        dataset: "enterprises".into(),
        dataset_version: Some("18ebe834e76b2df7-c3dda".into()),
        operation: "rows".into(),
        columns: ["uscc", "name", "district", "legal_rep_name", "legal_rep_mobile"]
            .iter()
            .map(|c| c.to_string())
            .collect(),
        filter: Some("\"status\" = 'active'".into()),
        masks: BTreeMap::from([("legal_rep_mobile".to_string(), "cn_mobile".to_string())]),
        client: "10.1.2.3".into(),
        user_agent: Some("python-requests/2.32".into()),
        statement: None,
    }
}

fn group_commit(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn AuditSink> = Arc::new(
        kaifang::audit::segments::open(dir.path(), 256 << 20, kaifang::metrics::AuditMetrics::detached()).unwrap(),
    );
    let mut group = c.benchmark_group("audit append, durable");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(8));
    for callers in [1usize, 64, 1024] {
        group.bench_with_input(BenchmarkId::new("concurrent callers", callers), &callers, |b, &callers| {
            b.iter_custom(|records| {
                let log = log.clone();
                runtime.block_on(async move {
                    let started = Instant::now();
                    let per_caller = records.div_ceil(callers as u64);
                    let tasks: Vec<_> = (0..callers as u64)
                        .map(|c| {
                            let log = log.clone();
                            tokio::spawn(async move {
                                for i in 0..per_caller {
                                    log.append(intent(c * per_caller + i)).await.unwrap();
                                }
                            })
                        })
                        .collect();
                    for t in tasks {
                        t.await.unwrap();
                    }
                    // Normalise to the number of records criterion asked for.
                    started.elapsed().mul_f64(records as f64 / (per_caller * callers as u64) as f64)
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, group_commit);
criterion_main!(benches);
