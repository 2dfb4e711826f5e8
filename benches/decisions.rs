//! Decisions and limiter checks per second (criterion), with 1 and with 100,000 keys.
//!
//!     cargo bench -p kaifang --bench decisions
//!
//! `decide` is the per-call rule check; `admit` is the limiter: per key for keyed calls on
//! unconditional data, per agreement (with its quota counter) for conditional data. The 100,000
//! case cycles through that many distinct keys or agreements, so every check finds a populated
//! map and a cold-ish entry.

use std::hint::black_box;
use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, FixedOffset, Utc};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kaifang::ratelimit::{DefaultRates, Limiter};
use kaifang::store::Usage;
use policy::{
    decide, Agreement, AgreementStatus, Caller, Dataset, DatasetTerms, Field, FieldType, Format, Limit, OpenType,
    Operation, Quota, Rate, Sensitivity, UpdateFrequency,
};

fn dataset(open_type: OpenType) -> Dataset {
    Dataset {
        id: "enterprises".parse().unwrap(),
        title: "Enterprises".into(),
        description: String::new(),
        owner: "Market".into(),
        open_type,
        fields: ["uscc", "name", "district", "legal_rep_mobile"]
            .iter()
            .map(|n| Field {
                name: n.to_string(),
                field_type: FieldType::String,
                description: String::new(),
                sensitivity: Sensitivity::Public,
            })
            .collect(),
        format: Format::ArrowIpc,
        update_frequency: UpdateFrequency::Daily,
        last_updated: DateTime::UNIX_EPOCH,
        license: "x".into(),
        keywords: vec![],
        withdrawn: None,
    }
}

fn agreement(id: usize) -> Agreement {
    Agreement {
        id: format!("ag-{id}"),
        principal: "acme".into(),
        purpose: String::new(),
        datasets: vec![DatasetTerms {
            dataset: "enterprises".parse().unwrap(),
            columns: vec!["uscc".into(), "name".into(), "legal_rep_mobile".into()],
            row_filter: Some("district = 'Haizhou'".into()),
            masks: [("legal_rep_mobile".to_string(), "cn_mobile".parse().unwrap())].into(),
        }],
        valid_from: DateTime::UNIX_EPOCH,
        valid_until: "2100-01-01T00:00:00Z".parse().unwrap(),
        status: AgreementStatus::Active,
        rate: Rate { per_second: 1_000_000, burst: 1_000_000 },
        quota: Quota { requests_per_day: u64::MAX, rows_per_day: u64::MAX, bytes_per_day: u64::MAX },
    }
}

fn decisions(c: &mut Criterion) {
    let now = Utc::now();
    let mut group = c.benchmark_group("decide");
    group.throughput(Throughput::Elements(1));
    let open = dataset(OpenType::Unconditional);
    group.bench_function("unconditional, anonymous", |b| {
        b.iter(|| decide(black_box(&Caller::Anonymous), &open, Operation::Rows, now))
    });
    let conditional = dataset(OpenType::Conditional);
    let holder =
        Caller::Key { key_id: "k".into(), principal: "acme".into(), agreements: Arc::from(vec![agreement(0)]) };
    group.bench_function("conditional, agreement with filter and mask", |b| {
        b.iter(|| decide(black_box(&holder), &conditional, Operation::Rows, now))
    });
    group.finish();
}

fn limiter(c: &mut Criterion) {
    let rates = Rate { per_second: 1_000_000, burst: 1_000_000 };
    let local = IpAddr::from([127, 0, 0, 1]);
    let now = Utc::now();
    let mut group = c.benchmark_group("admit");
    group.throughput(Throughput::Elements(1));
    for keys in [1usize, 100_000] {
        let limiter =
            Limiter::new(DefaultRates { anonymous: rates, key: rates }, FixedOffset::east_opt(8 * 3600).unwrap());
        let key_limits: Vec<Limit> = (0..keys).map(|i| Limit::Key(format!("key-{i}"))).collect();
        let agreement_limits: Vec<Limit> = (0..keys)
            .map(|i| {
                let a = agreement(i);
                Limit::Agreement { id: a.id, rate: a.rate, quota: a.quota }
            })
            .collect();
        for limit in key_limits.iter().chain(&agreement_limits) {
            limiter.admit(limit, local, now, |_, _| Usage::default()).unwrap();
        }
        let mut i = 0;
        group.bench_with_input(BenchmarkId::new("per key", keys), &keys, |b, _| {
            b.iter(|| {
                i = (i + 1) % keys;
                limiter.admit(black_box(&key_limits[i]), local, now, |_, _| Usage::default()).is_ok()
            })
        });
        let mut i = 0;
        group.bench_with_input(BenchmarkId::new("per agreement, with quota", keys), &keys, |b, _| {
            b.iter(|| {
                i = (i + 1) % keys;
                limiter.admit(black_box(&agreement_limits[i]), local, now, |_, _| Usage::default()).is_ok()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, decisions, limiter);
criterion_main!(benches);
