//! The platform's operation report (regulation art. 37 and 39): the catalog, data quality,
//! applications and their deadlines, the use of conditional data, misuse reports and the audit
//! log's integrity over a period, for the whole platform or one owner.
//!
//! [`build`] puts together what the gateway already keeps: the catalog with its declared update
//! frequencies, the store's workflow records (publications, withdrawals, applications with
//! their due dates, objections, feedback, misuse reports, daily quota usage) and the audit log,
//! read once from beginning to end as a stream (the log of a year does not have to fit in
//! memory). [`render`] turns the report into HTML with SVG charts, or PDF through Chromium.
//!
//! Unconditionally open data is not recorded call by call: its use, like the availability,
//! the latency and the failures of the gateway, comes from the gateway's own counters, which
//! each instance keeps by hour in the store ([`traffic`]).

pub mod render;
pub mod traffic;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use chrono::{DateTime, FixedOffset, NaiveDate, TimeZone, Utc};
use policy::{ApplicationStatus, Calendar, ObjectionStatus, OpenType};
use serde::Serialize;
use utoipa::ToSchema;

use crate::audit::{self, Recipient, Record};
use crate::state::Catalog;
use crate::store::{Store, Usage};

/// The days a report covers, first and last included, in the platform's time zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Period {
    #[schema(value_type = String, format = Date)]
    pub from: NaiveDate,
    #[schema(value_type = String, format = Date)]
    pub to: NaiveDate,
}

/// Longest period a report covers.
pub const MAX_DAYS: i64 = 3 * 366;

impl Period {
    pub fn new(from: NaiveDate, to: NaiveDate) -> Result<Period, String> {
        if to < from {
            return Err(format!("the period ends ({to}) before it starts ({from})"));
        }
        if (to - from).num_days() >= MAX_DAYS {
            return Err(format!("a report covers at most {MAX_DAYS} days"));
        }
        Ok(Period { from, to })
    }

    /// The first instant of the period and the first instant after it.
    fn bounds(&self, offset: FixedOffset) -> (DateTime<Utc>, DateTime<Utc>) {
        let start = |day: NaiveDate| {
            offset.from_local_datetime(&day.and_hms_opt(0, 0, 0).expect("midnight")).single().expect("fixed offset")
        };
        let after = self.to.succ_opt().unwrap_or(self.to);
        (start(self.from).with_timezone(&Utc), start(after).with_timezone(&Utc))
    }

    fn days(&self) -> impl Iterator<Item = NaiveDate> {
        let to = self.to;
        self.from.iter_days().take_while(move |d| *d <= to)
    }
}

/// Where the audit log is.
pub enum AuditSource {
    /// The embedded log's segment files.
    Segments(PathBuf),
    /// Every instance's log in PostgreSQL.
    Postgres(String),
}

impl AuditSource {
    /// The audit log `config` keeps: PostgreSQL in a cluster, else the data directory's.
    pub fn of(config: &crate::config::Config) -> AuditSource {
        match &config.cluster {
            Some(cluster) => AuditSource::Postgres(cluster.store.clone()),
            None => AuditSource::Segments(crate::state::audit_dir(&config.data_dir)),
        }
    }
}

/// A report's format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Json,
    Html,
    Pdf,
}

impl Format {
    pub fn parse(text: &str) -> Option<Format> {
        match text {
            "json" => Some(Format::Json),
            "html" => Some(Format::Html),
            "pdf" => Some(Format::Pdf),
            _ => None,
        }
    }

    pub fn media_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Html => "text/html; charset=utf-8",
            Format::Pdf => "application/pdf",
        }
    }

    /// The report in this format.
    pub fn encode(self, report: &OperationReport) -> Result<Vec<u8>, String> {
        match self {
            Format::Json => serde_json::to_vec_pretty(report).map_err(|e| e.to_string()),
            Format::Html => render::html(report).map(String::into_bytes),
            Format::Pdf => render::pdf(&render::html(report)?),
        }
    }
}

/// What a report is built from.
pub struct Inputs<'a> {
    pub catalog: &'a Catalog,
    pub store: &'a dyn Store,
    pub calendar: &'a Calendar,
    /// The platform's time zone.
    pub offset: FixedOffset,
    /// Now, on the workflows' clock.
    pub now: DateTime<Utc>,
    pub audit: AuditSource,
    /// Told the bytes (segment files) or records (PostgreSQL) of the audit log read so far, and
    /// the total when known: a terminal's progress bar.
    pub progress: &'a (dyn Fn(u64, Option<u64>) + Sync),
}

/// The operation report.
#[derive(Debug, Serialize, ToSchema)]
pub struct OperationReport {
    pub period: Period,
    /// The platform's time zone, as an offset from UTC (`+08:00`).
    pub time_zone: String,
    /// The owning department the report is restricted to; none for the whole platform.
    pub owner: Option<String>,
    pub generated_at: DateTime<Utc>,
    pub catalog: CatalogSection,
    pub quality: QualitySection,
    pub applications: ApplicationsSection,
    /// Every data call, unconditional ones included, from the gateway's own counters.
    pub traffic: TrafficSection,
    pub conditional_use: UseSection,
    pub misuse_reports: Vec<MisuseReport>,
    pub platform: PlatformSection,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CatalogSection {
    /// The catalog now, by owner: datasets by open type, and those withdrawn now.
    pub by_owner: Vec<OwnerCatalog>,
    /// Entries published through the platform in the period (new ones and changes).
    pub published: Vec<Publication>,
    /// How many of those changed an entry already published (version 2 and on).
    pub changed: usize,
    /// Datasets withdrawn in the period.
    pub withdrawn: usize,
    /// Drafts waiting for review now.
    pub drafts_pending: Vec<PendingDraft>,
}

#[derive(Debug, Default, Serialize, ToSchema)]
pub struct OwnerCatalog {
    pub owner: String,
    pub unconditional: usize,
    pub conditional: usize,
    pub non_open: usize,
    pub withdrawn_now: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Publication {
    pub dataset: String,
    pub owner: String,
    pub version: u64,
    pub published_at: DateTime<Utc>,
    pub written_by: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PendingDraft {
    pub dataset: String,
    pub owner: String,
    pub written_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QualitySection {
    /// Open datasets updated within their declared frequency at the end of the period, by
    /// owner (datasets updated irregularly are not counted either way).
    pub freshness: Vec<OwnerFreshness>,
    /// Those not updated within it, most overdue first.
    pub late: Vec<LateDataset>,
    pub objections: ObjectionStats,
    /// Withdrawals in the period, with who had received the dataset before.
    pub withdrawals: Vec<WithdrawalItem>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OwnerFreshness {
    pub owner: String,
    /// Datasets with a declared regular frequency.
    pub datasets: usize,
    pub up_to_date: usize,
    /// `up_to_date` of `datasets`, in percent (100 when there are none).
    pub percent: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LateDataset {
    pub dataset: String,
    pub owner: String,
    pub update_frequency: String,
    pub last_updated: DateTime<Utc>,
    /// Days past the declared frequency at the end of the period.
    pub days_late: f64,
}

#[derive(Debug, Default, Serialize, ToSchema)]
pub struct ObjectionStats {
    /// Filed in the period.
    pub filed: usize,
    /// Resolved in the period (whenever filed).
    pub resolved: usize,
    /// Open at the end of the period.
    pub open: usize,
    /// Median hours from filing to resolution, of those resolved in the period.
    pub median_hours_to_resolve: Option<f64>,
    pub items: Vec<ObjectionItem>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ObjectionItem {
    pub id: String,
    pub dataset: String,
    pub owner: String,
    pub filed_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub hours_to_resolve: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WithdrawalItem {
    pub dataset: String,
    pub owner: String,
    pub withdrawn_at: DateTime<Utc>,
    pub withdrawn_by: String,
    pub reason: String,
    pub reopened_at: Option<DateTime<Utc>>,
    /// Who had received the dataset (conditional data, from the audit log) before it was
    /// withdrawn.
    pub recipients: Vec<Recipient>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApplicationsSection {
    pub by_owner: Vec<OwnerApplications>,
    /// Rejections in the period, with their reasons.
    pub rejections: Vec<Rejection>,
    /// Applications answered after their due day (of those received in the period).
    pub answered_late: Vec<LateApplication>,
    /// Applications still unanswered past their due day at the end of the period.
    pub overdue: Vec<LateApplication>,
    /// Art. 39: the owners that did not answer every application in time.
    pub owners_not_in_time: Vec<String>,
}

#[derive(Debug, Default, Serialize, ToSchema)]
pub struct OwnerApplications {
    pub owner: String,
    /// Received in the period.
    pub received: usize,
    pub approved: usize,
    pub rejected: usize,
    /// Decided on or before the due day.
    pub decided_in_time: usize,
    pub decided_late: usize,
    /// Not decided at the end of the period.
    pub pending: usize,
    /// Of those, past their due day.
    pub overdue: usize,
    /// Median working days from submission to decision.
    pub median_working_days_to_decision: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Rejection {
    pub application: String,
    pub dataset: String,
    pub owner: String,
    pub applicant: String,
    pub reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LateApplication {
    pub application: String,
    pub dataset: String,
    pub owner: String,
    pub applicant: String,
    #[schema(value_type = String, format = Date)]
    pub submitted_on: NaiveDate,
    #[schema(value_type = String, format = Date)]
    pub due_by: NaiveDate,
    /// When answered, for one answered late.
    pub decided_at: Option<DateTime<Utc>>,
    /// Working days past the due day (answered, or at the end of the period).
    pub working_days_late: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UseSection {
    /// Calls on conditional datasets in the period, by dataset.
    pub by_dataset: Vec<DatasetUse>,
    /// Calls by agreement, with the most of each quota used on one day.
    pub by_agreement: Vec<AgreementUse>,
    /// Refused calls by reason (the error code).
    pub refusals: BTreeMap<String, u64>,
    /// Served calls by hour of the day (platform time), 0 to 23.
    pub by_hour: Vec<u64>,
    /// Distinct principals that received conditional data.
    pub consumers: usize,
    /// Holders' reports of how they used the data, received in the period.
    pub feedback: Vec<FeedbackItem>,
}

#[derive(Debug, Default, Serialize, ToSchema)]
pub struct DatasetUse {
    pub dataset: String,
    pub owner: String,
    /// Served calls (SQL statements count once for each dataset they read).
    pub calls: u64,
    pub refused: u64,
    pub rows: u64,
    pub bytes: u64,
    /// Distinct principals served.
    pub consumers: usize,
}

#[derive(Debug, Default, Serialize, ToSchema)]
pub struct AgreementUse {
    pub agreement: String,
    pub principal: String,
    pub calls: u64,
    /// Refused calls by reason: a refusal names its principal and dataset, and is counted on
    /// the agreement of that principal covering that dataset (when it holds exactly one).
    pub refused: BTreeMap<String, u64>,
    pub rows: u64,
    pub bytes: u64,
    /// The most used on one day of the period, of each quota, in percent of the quota.
    pub peak_quota_percent: QuotaPercent,
}

#[derive(Debug, Default, Serialize, ToSchema)]
pub struct QuotaPercent {
    pub requests: f64,
    pub rows: f64,
    pub bytes: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FeedbackItem {
    pub agreement: String,
    pub principal: String,
    pub received_at: DateTime<Utc>,
    pub usage: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MisuseReport {
    pub id: String,
    pub received_at: DateTime<Utc>,
    pub dataset: Option<String>,
    pub description: String,
}

#[derive(Debug, Default, Serialize, ToSchema)]
pub struct TrafficSection {
    /// Calls answered, by dataset, most called first.
    pub by_dataset: Vec<DatasetTraffic>,
    /// Calls answered, by open type.
    pub by_open_type: Vec<OpenTypeTraffic>,
    /// Calls answered by hour of the day (platform time), 0 to 23.
    pub by_hour: Vec<u64>,
}

#[derive(Debug, Default, Serialize, ToSchema)]
pub struct DatasetTraffic {
    pub dataset: String,
    pub owner: String,
    pub open_type: String,
    pub calls: u64,
    /// Answered 4xx (refused) and 5xx (failed).
    pub refused: u64,
    pub failed: u64,
    /// Rows answered (for a SQL statement, the rows each table scan read).
    pub rows: u64,
    pub bytes: u64,
}

#[derive(Debug, Default, Serialize, ToSchema)]
pub struct OpenTypeTraffic {
    pub open_type: String,
    pub calls: u64,
    pub rows: u64,
    pub bytes: u64,
    /// Latency of the calls, from request to the end of the answer, in milliseconds
    /// (interpolated within the buckets of the gateway's histogram).
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PlatformSection {
    /// Data calls answered in the period, every dataset's, and how many failed (5xx).
    pub calls: u64,
    pub failed: u64,
    /// Calls not failed, in percent (none without calls).
    pub availability_percent: Option<f64>,
    /// Calls refused by a rate limit or a quota, by limit.
    pub limit_refusals: BTreeMap<String, u64>,
    /// Calls refused because the gateway was at its limits (connections, memory for answers).
    pub overload_refusals: u64,
    /// Group commits of the audit log that failed (every record in them refused).
    pub audit_write_failures: u64,
    /// Calls decided by the local fallback while the shared limiter (Redis) could not be reached.
    pub limiter_fallbacks: u64,
    /// Each audit chain (one per instance in a cluster) and whether it verified.
    pub audit_chains: Vec<AuditChain>,
    /// Audit records read, in all.
    pub audit_records_read: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditChain {
    pub instance: String,
    pub verified: bool,
    pub records: u64,
    /// Where and how it broke, when it did.
    pub problem: Option<String>,
}

/// The median of `values`, if any.
fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len().is_multiple_of(2) { (values[mid - 1] + values[mid]) / 2.0 } else { values[mid] })
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        (part as f64 * 1000.0 / whole as f64).round() / 10.0
    }
}

fn store_error(e: crate::store::StoreError) -> String {
    format!("the store: {e}")
}

/// [`build`] from a configuration and its store, as `kaifang report` has them: the catalog as
/// declared with the platform's publications and withdrawals, the configured calendar.
pub fn build_for(
    config: &crate::config::Config,
    store: &dyn Store,
    now: DateTime<Utc>,
    period: Period,
    owner: Option<&str>,
    progress: &(dyn Fn(u64, Option<u64>) + Sync),
) -> Result<OperationReport, String> {
    let overlay = crate::state::Overlay::load(store).map_err(store_error)?;
    let catalog = Catalog::new(&config.datasets, &overlay);
    let inputs = Inputs {
        catalog: &catalog,
        store,
        calendar: &config.calendar,
        offset: crate::state::platform_offset(config),
        now,
        audit: AuditSource::of(config),
        progress,
    };
    build(&inputs, period, owner)
}

/// Builds the report over `period`, for `owner`'s datasets only when one is given. Blocking:
/// reads the store and the whole audit log.
pub fn build(inputs: &Inputs<'_>, period: Period, owner: Option<&str>) -> Result<OperationReport, String> {
    let (start, end) = period.bounds(inputs.offset);
    let in_period = |t: DateTime<Utc>| t >= start && t < end;
    // The owner of every dataset the platform knows, declared or published.
    let owners: HashMap<String, String> =
        inputs.catalog.entries().map(|e| (e.dataset.id.to_string(), e.dataset.owner.clone())).collect();
    let owner_of = |dataset: &str| owners.get(dataset).cloned().unwrap_or_default();
    let ours = |dataset: &str| owner.is_none_or(|o| owners.get(dataset).is_some_and(|d| d == o));
    let store = inputs.store;

    // The catalog.
    let withdrawn_now: BTreeSet<String> =
        store.withdrawals().map_err(store_error)?.into_iter().map(|w| w.dataset).collect();
    let mut by_owner: BTreeMap<String, OwnerCatalog> = BTreeMap::new();
    for entry in inputs.catalog.entries().filter(|e| ours(e.dataset.id.as_str())) {
        let d = &entry.dataset;
        let row = by_owner
            .entry(d.owner.clone())
            .or_insert_with(|| OwnerCatalog { owner: d.owner.clone(), ..Default::default() });
        match d.open_type {
            OpenType::Unconditional => row.unconditional += 1,
            OpenType::Conditional => row.conditional += 1,
            OpenType::NonOpen => row.non_open += 1,
        }
        if withdrawn_now.contains(d.id.as_str()) {
            row.withdrawn_now += 1;
        }
    }
    let published: Vec<Publication> = store
        .published()
        .map_err(store_error)?
        .into_iter()
        .filter(|p| ours(p.entry.id.as_str()) && in_period(p.at))
        .map(|p| Publication {
            dataset: p.entry.id.to_string(),
            owner: p.entry.owner.clone(),
            version: p.version,
            published_at: p.at,
            written_by: p.by,
        })
        .collect();
    let drafts_pending = store
        .drafts()
        .map_err(store_error)?
        .into_iter()
        .filter(|d| owner.is_none_or(|o| d.entry.owner == o))
        .map(|d| PendingDraft { dataset: d.entry.id.to_string(), owner: d.entry.owner, written_at: d.at })
        .collect();
    let history: Vec<crate::store::Withdrawal> = store
        .withdrawal_history()
        .map_err(store_error)?
        .into_iter()
        .filter(|w| ours(&w.dataset) && in_period(w.withdrawn_at))
        .collect();

    // Data quality: freshness at the end of the period, objections.
    let at_end = end.min(inputs.now);
    let mut freshness: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut late = Vec::new();
    for entry in inputs.catalog.entries().filter(|e| ours(e.dataset.id.as_str())) {
        let d = &entry.dataset;
        let Some(every) = d.update_frequency.period() else { continue };
        if d.open_type == OpenType::NonOpen {
            continue;
        }
        let counts = freshness.entry(d.owner.clone()).or_default();
        counts.0 += 1;
        if d.stale(at_end) {
            let days = (at_end - d.last_updated - every).num_seconds() as f64 / 86_400.0;
            late.push(LateDataset {
                dataset: d.id.to_string(),
                owner: d.owner.clone(),
                update_frequency: serde_json::to_value(d.update_frequency)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                last_updated: d.last_updated,
                days_late: (days * 10.0).round() / 10.0,
            });
        } else {
            counts.1 += 1;
        }
    }
    late.sort_by(|a, b| b.days_late.total_cmp(&a.days_late));
    let freshness = freshness
        .into_iter()
        .map(|(owner, (datasets, up_to_date))| OwnerFreshness {
            owner,
            datasets,
            up_to_date,
            percent: if datasets == 0 { 100.0 } else { percent(up_to_date as u64, datasets as u64) },
        })
        .collect();
    let mut objections = ObjectionStats::default();
    let mut hours = Vec::new();
    for o in store.objections().map_err(store_error)?.into_iter().filter(|o| ours(o.dataset.as_str())) {
        if o.filed_at >= end {
            continue;
        }
        let resolved_in = o.resolved_at.filter(|t| in_period(*t));
        let open_at_end = o.status == ObjectionStatus::Open || o.resolved_at.is_some_and(|t| t >= end);
        objections.open += usize::from(open_at_end);
        if !in_period(o.filed_at) && resolved_in.is_none() {
            continue;
        }
        objections.filed += usize::from(in_period(o.filed_at));
        let to_resolve = resolved_in.map(|t| ((t - o.filed_at).num_minutes() as f64 / 6.0).round() / 10.0);
        if let Some(h) = to_resolve {
            objections.resolved += 1;
            hours.push(h);
        }
        objections.items.push(ObjectionItem {
            id: o.id.clone(),
            dataset: o.dataset.to_string(),
            owner: owner_of(o.dataset.as_str()),
            filed_at: o.filed_at,
            resolved_at: resolved_in,
            hours_to_resolve: to_resolve,
        });
    }
    objections.median_hours_to_resolve = median(hours);

    // Applications.
    let local = |t: DateTime<Utc>| t.with_timezone(&inputs.offset).date_naive();
    let last_day = period.to.min(local(inputs.now));
    let working_days = |from: NaiveDate, to: NaiveDate| inputs.calendar.working_days_between(from, to).unwrap_or(0);
    let mut by_owner_apps: BTreeMap<String, (OwnerApplications, Vec<f64>)> = BTreeMap::new();
    let (mut rejections, mut answered_late, mut overdue) = (Vec::new(), Vec::new(), Vec::new());
    for a in store.applications().map_err(store_error)?.into_iter().filter(|a| ours(a.dataset.as_str())) {
        let dataset_owner = owner_of(a.dataset.as_str());
        let received = in_period(a.submitted_at);
        let decided = a.decided_at.filter(|t| *t < end);
        // Received in the period, or earlier and still undecided when it began.
        let open_in_period = a.submitted_at < end && decided.is_none_or(|t| t >= start);
        if !(received || open_in_period) {
            continue;
        }
        let (row, times) = by_owner_apps
            .entry(dataset_owner.clone())
            .or_insert_with(|| (OwnerApplications { owner: dataset_owner.clone(), ..Default::default() }, Vec::new()));
        let late_item = |decided_at: Option<DateTime<Utc>>, days: i64| LateApplication {
            application: a.id.clone(),
            dataset: a.dataset.to_string(),
            owner: dataset_owner.clone(),
            applicant: a.applicant.clone(),
            submitted_on: local(a.submitted_at),
            due_by: a.due_by,
            decided_at,
            working_days_late: days,
        };
        row.received += usize::from(received);
        match decided {
            Some(at) if in_period(at) || received => {
                match a.status {
                    ApplicationStatus::Approved => row.approved += 1,
                    ApplicationStatus::Rejected => {
                        row.rejected += 1;
                        rejections.push(Rejection {
                            application: a.id.clone(),
                            dataset: a.dataset.to_string(),
                            owner: dataset_owner.clone(),
                            applicant: a.applicant.clone(),
                            reason: a.reason.clone().unwrap_or_default(),
                        });
                    }
                    ApplicationStatus::Submitted => {}
                }
                times.push(working_days(local(a.submitted_at), local(at)) as f64);
                if !a.past_due(local(at)) {
                    row.decided_in_time += 1;
                } else {
                    row.decided_late += 1;
                    answered_late.push(late_item(Some(at), working_days(a.due_by, local(at))));
                }
            }
            Some(_) => {}
            None => {
                row.pending += 1;
                // Pending at the end of the period, whatever it became since.
                if a.past_due(last_day) {
                    row.overdue += 1;
                    overdue.push(late_item(None, working_days(a.due_by, last_day)));
                }
            }
        }
    }
    let mut owners_not_in_time = Vec::new();
    let by_owner_apps = by_owner_apps
        .into_values()
        .map(|(mut row, times)| {
            row.median_working_days_to_decision = median(times);
            if row.decided_late > 0 || row.overdue > 0 {
                owners_not_in_time.push(row.owner.clone());
            }
            row
        })
        .collect();
    overdue.sort_by_key(|a| std::cmp::Reverse(a.working_days_late));

    // The audit log, read once: the period's conditional use, and the records of the datasets
    // withdrawn in the period up to their withdrawal, for their traces.
    let withdrawn_in_period: HashMap<String, DateTime<Utc>> =
        history.iter().map(|w| (w.dataset.clone(), w.withdrawn_at)).collect();
    let agreements = store.agreements().map_err(store_error)?;
    let mut use_ = UseTally::default();
    for a in &agreements {
        for terms in &a.datasets {
            use_.covering.entry((a.principal.clone(), terms.dataset.to_string())).or_default().push(a.id.clone());
        }
    }
    let mut traced: HashMap<String, Vec<Record>> = HashMap::new();
    let mut read = 0u64;
    let mut each = |record: Record| {
        read += 1;
        let time = record.time();
        let datasets: Vec<String> = record.datasets().into_iter().map(|(d, _)| d.to_owned()).collect();
        for dataset in &datasets {
            if withdrawn_in_period.get(dataset).is_some_and(|at| time < *at) {
                traced.entry(dataset.clone()).or_default().push(record.clone());
            }
        }
        if in_period(time) {
            use_.add(&record, &ours, inputs.offset);
        }
    };
    let chains = read_audit(&inputs.audit, inputs.progress, &mut each)?;
    let traffic_rows = store.traffic(start, end).map_err(store_error)?;
    let (traffic, platform_counts) = tally_traffic(&traffic_rows, &owners, &ours, inputs.offset);
    let withdrawals = history
        .into_iter()
        .map(|w| WithdrawalItem {
            owner: owner_of(&w.dataset),
            recipients: traced
                .get(&w.dataset)
                .map(|r| audit::trace(r, &w.dataset, None, Some(w.withdrawn_at)))
                .unwrap_or_default(),
            dataset: w.dataset,
            withdrawn_at: w.withdrawn_at,
            withdrawn_by: w.withdrawn_by,
            reason: w.reason,
            reopened_at: w.reopened_at,
        })
        .collect::<Vec<_>>();

    // Quotas: the most of each used on one day of the period.
    let mut by_agreement = use_.by_agreement;
    for agreement in &agreements {
        if !agreement.datasets.iter().any(|t| ours(t.dataset.as_str())) {
            continue;
        }
        let mut peak = Usage::default();
        for day in period.days() {
            let used = store.usage(&agreement.id, &day.to_string()).map_err(store_error)?;
            peak = Usage {
                requests: peak.requests.max(used.requests),
                rows: peak.rows.max(used.rows),
                bytes: peak.bytes.max(used.bytes),
            };
        }
        if peak == Usage::default() && !by_agreement.contains_key(&agreement.id) {
            continue;
        }
        let row = by_agreement.entry(agreement.id.clone()).or_insert_with(|| AgreementUse {
            agreement: agreement.id.clone(),
            principal: agreement.principal.clone(),
            ..Default::default()
        });
        let q = &agreement.quota;
        row.peak_quota_percent = QuotaPercent {
            requests: percent(peak.requests, q.requests_per_day),
            rows: percent(peak.rows, q.rows_per_day),
            bytes: percent(peak.bytes, q.bytes_per_day),
        };
    }
    let mut feedback = Vec::new();
    for agreement in agreements.iter().filter(|a| a.datasets.iter().any(|t| ours(t.dataset.as_str()))) {
        for f in store.feedback(&agreement.id).map_err(store_error)?.into_iter().filter(|f| in_period(f.received_at)) {
            feedback.push(FeedbackItem {
                agreement: f.agreement,
                principal: f.principal,
                received_at: f.received_at,
                usage: f.usage,
            });
        }
    }
    feedback.sort_by_key(|f| f.received_at);
    let mut by_dataset: Vec<DatasetUse> = use_
        .by_dataset
        .into_iter()
        .map(|(dataset, (mut row, consumers))| {
            row.owner = owner_of(&dataset);
            row.dataset = dataset;
            row.consumers = consumers.len();
            row
        })
        .collect();
    by_dataset.sort_by(|a, b| b.calls.cmp(&a.calls).then_with(|| a.dataset.cmp(&b.dataset)));
    let misuse_reports = store
        .reports()
        .map_err(store_error)?
        .into_iter()
        .filter(|r| in_period(r.received_at) && r.dataset.as_deref().is_none_or(&ours))
        .filter(|r| owner.is_none() || r.dataset.is_some())
        .map(|r| MisuseReport { id: r.id, received_at: r.received_at, dataset: r.dataset, description: r.description })
        .collect();

    Ok(OperationReport {
        period,
        time_zone: inputs.offset.to_string(),
        owner: owner.map(str::to_owned),
        generated_at: inputs.now,
        catalog: CatalogSection {
            by_owner: by_owner.into_values().collect(),
            changed: published.iter().filter(|p| p.version > 1).count(),
            withdrawn: withdrawals.len(),
            published,
            drafts_pending,
        },
        quality: QualitySection { freshness, late, objections, withdrawals },
        applications: ApplicationsSection {
            by_owner: by_owner_apps,
            rejections,
            answered_late,
            overdue,
            owners_not_in_time,
        },
        conditional_use: UseSection {
            by_dataset,
            by_agreement: by_agreement.into_values().collect(),
            refusals: use_.refusals,
            by_hour: use_.by_hour.to_vec(),
            consumers: use_.consumers.len(),
            feedback,
        },
        misuse_reports,
        traffic,
        platform: PlatformSection { audit_chains: chains, audit_records_read: read, ..platform_counts },
    })
}

/// The traffic section and the platform's counts from the hours' counters: use by dataset
/// (`ours` only), by open type and hour, latency by open type; availability and failures of
/// the whole platform.
fn tally_traffic(
    rows: &[crate::store::TrafficRow],
    owners: &HashMap<String, String>,
    ours: &dyn Fn(&str) -> bool,
    offset: FixedOffset,
) -> (TrafficSection, PlatformSection) {
    use chrono::Timelike;
    let mut platform = PlatformSection {
        calls: 0,
        failed: 0,
        availability_percent: None,
        limit_refusals: BTreeMap::new(),
        overload_refusals: 0,
        audit_write_failures: 0,
        limiter_fallbacks: 0,
        audit_chains: Vec::new(),
        audit_records_read: 0,
    };
    let mut by_dataset: BTreeMap<String, DatasetTraffic> = BTreeMap::new();
    let mut by_type: BTreeMap<String, (OpenTypeTraffic, BTreeMap<u64, f64>)> = BTreeMap::new();
    let mut by_hour = [0u64; 24];
    for row in rows {
        let f = &row.figure;
        let labels: BTreeMap<String, String> = serde_json::from_str(&f.labels).unwrap_or_default();
        let label = |name: &str| labels.get(name).cloned().unwrap_or_default();
        let n = f.value.round() as u64;
        // The row of the figure's dataset, if it is one of the report's.
        fn row_of<'m>(
            by_dataset: &'m mut BTreeMap<String, DatasetTraffic>,
            owners: &HashMap<String, String>,
            dataset: String,
            open_type: String,
        ) -> &'m mut DatasetTraffic {
            by_dataset.entry(dataset.clone()).or_insert_with(|| DatasetTraffic {
                owner: owners.get(&dataset).cloned().unwrap_or_default(),
                dataset,
                open_type,
                ..Default::default()
            })
        }
        let dataset = label("dataset");
        let ours_here = ours(&dataset);
        match f.series.as_str() {
            "calls" => {
                let class = label("status_class");
                platform.calls += n;
                platform.failed += if class == "5xx" { n } else { 0 };
                by_type.entry(label("open_type")).or_default().0.calls += n;
                if !ours_here {
                    continue;
                }
                let entry = row_of(&mut by_dataset, owners, dataset, label("open_type"));
                by_hour[row.hour.with_timezone(&offset).hour() as usize] += n;
                entry.calls += n;
                match class.as_str() {
                    "4xx" => entry.refused += n,
                    "5xx" => entry.failed += n,
                    _ => {}
                }
            }
            "bytes" => {
                by_type.entry(label("open_type")).or_default().0.bytes += n;
                if ours_here {
                    row_of(&mut by_dataset, owners, dataset, label("open_type")).bytes += n;
                }
            }
            "rows" => {
                by_type.entry(label("open_type")).or_default().0.rows += n;
                if ours_here {
                    row_of(&mut by_dataset, owners, dataset, label("open_type")).rows += n;
                }
            }
            "duration_bucket" => {
                // The bound in microseconds, as a key that sorts (+Inf last).
                let le = label("le").parse::<f64>().unwrap_or(f64::INFINITY);
                let bound = if le.is_finite() { (le * 1e6).round() as u64 } else { u64::MAX };
                *by_type.entry(label("open_type")).or_default().1.entry(bound).or_default() += f.value;
            }
            "limit_refusals" => *platform.limit_refusals.entry(label("limit")).or_default() += n,
            "overload_refusals" => platform.overload_refusals += n,
            "audit_write_failures" => platform.audit_write_failures += n,
            "limiter_fallbacks" => platform.limiter_fallbacks += n,
            _ => {}
        }
    }
    if platform.calls > 0 {
        platform.availability_percent = Some(100.0 - percent(platform.failed, platform.calls));
    }
    let by_open_type = by_type
        .into_iter()
        .filter(|(open_type, _)| !open_type.is_empty())
        .map(|(open_type, (mut row, buckets))| {
            row.open_type = open_type;
            row.p50_ms = quantile(&buckets, 0.50);
            row.p95_ms = quantile(&buckets, 0.95);
            row.p99_ms = quantile(&buckets, 0.99);
            row
        })
        .collect();
    let mut by_dataset: Vec<DatasetTraffic> = by_dataset.into_values().collect();
    by_dataset.sort_by(|a, b| b.calls.cmp(&a.calls).then_with(|| a.dataset.cmp(&b.dataset)));
    (TrafficSection { by_dataset, by_open_type, by_hour: by_hour.to_vec() }, platform)
}

/// The `q` quantile of a histogram given as cumulative counts by upper bound (microseconds,
/// `u64::MAX` for +Inf), in milliseconds: interpolated within the bucket it falls in, as
/// Prometheus' `histogram_quantile` does; the highest finite bound when it falls past it.
fn quantile(buckets: &BTreeMap<u64, f64>, q: f64) -> Option<f64> {
    let total = *buckets.get(&u64::MAX).or_else(|| buckets.values().last())?;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0u64, 0.0);
    for (&bound, &count) in buckets {
        if count >= rank {
            if bound == u64::MAX {
                return Some(lower as f64 / 1000.0);
            }
            let share = if count > below { (rank - below) / (count - below) } else { 1.0 };
            let micros = lower as f64 + (bound - lower) as f64 * share;
            return Some((micros / 100.0).round() / 10.0);
        }
        (lower, below) = (bound, count);
    }
    None
}

/// The period's conditional calls, as the audit log's records are read.
#[derive(Default)]
struct UseTally {
    /// By dataset: the counts, and the principals served.
    by_dataset: BTreeMap<String, (DatasetUse, BTreeSet<String>)>,
    by_agreement: BTreeMap<String, AgreementUse>,
    refusals: BTreeMap<String, u64>,
    by_hour: [u64; 24],
    consumers: BTreeSet<String>,
    /// The agreements each principal holds on each dataset.
    covering: HashMap<(String, String), Vec<String>>,
}

impl UseTally {
    fn add(&mut self, record: &Record, ours: &dyn Fn(&str) -> bool, offset: FixedOffset) {
        use chrono::Timelike;
        match record {
            Record::Completion { principal, agreement, dataset, rows, bytes, .. } if ours(dataset) => {
                self.served(dataset, agreement, principal, *rows, *bytes);
                self.by_hour[record.time().with_timezone(&offset).hour() as usize] += 1;
            }
            Record::StatementCompletion { principal, reads, bytes, .. } => {
                let mut counted = false;
                for (dataset, agreement) in record.datasets() {
                    if !ours(dataset) {
                        continue;
                    }
                    let rows =
                        reads.iter().filter(|r| r.dataset == dataset && r.agreement == agreement).map(|r| r.rows).sum();
                    self.served(dataset, agreement, principal, rows, *bytes);
                    counted = true;
                }
                if counted {
                    self.by_hour[record.time().with_timezone(&offset).hour() as usize] += 1;
                }
            }
            // A refusal names its dataset and principal, not an agreement: it is counted by
            // dataset and by reason.
            Record::Unserved { dataset, principal, reason, unrecorded_refusals, .. } if ours(dataset) => {
                let code = reason.split(':').next().unwrap_or("").trim().to_owned();
                let n = 1 + *unrecorded_refusals;
                *self.refusals.entry(code.clone()).or_default() += n;
                self.by_dataset.entry(dataset.clone()).or_default().0.refused += n;
                let held = principal.as_ref().and_then(|p| self.covering.get(&(p.clone(), dataset.clone())));
                if let (Some(principal), Some([agreement])) = (principal, held.map(Vec::as_slice)) {
                    let row = self.by_agreement.entry(agreement.clone()).or_insert_with(|| AgreementUse {
                        agreement: agreement.clone(),
                        principal: principal.clone(),
                        ..Default::default()
                    });
                    *row.refused.entry(code).or_default() += n;
                }
            }
            _ => {}
        }
    }

    fn served(&mut self, dataset: &str, agreement: &str, principal: &str, rows: u64, bytes: u64) {
        let (row, consumers) = self.by_dataset.entry(dataset.to_owned()).or_default();
        row.calls += 1;
        row.rows += rows;
        row.bytes += bytes;
        consumers.insert(principal.to_owned());
        self.consumers.insert(principal.to_owned());
        let row = self.by_agreement.entry(agreement.to_owned()).or_insert_with(|| AgreementUse {
            agreement: agreement.to_owned(),
            principal: principal.to_owned(),
            ..Default::default()
        });
        row.calls += 1;
        row.rows += rows;
        row.bytes += bytes;
    }
}

/// Reads every record of the audit log in order, handing each to `each`, and verifies each
/// chain; returns the chains' verdicts.
fn read_audit(
    source: &AuditSource,
    progress: &(dyn Fn(u64, Option<u64>) + Sync),
    each: &mut dyn FnMut(Record),
) -> Result<Vec<AuditChain>, String> {
    match source {
        AuditSource::Segments(dir) => {
            audit::segments::for_each_record(dir, progress, each)?;
            let chain = match audit::segments::verify(dir).map_err(|e| format!("the audit log: {e}"))? {
                audit::segments::Verdict::Intact { records, .. } => {
                    AuditChain { instance: "embedded".into(), verified: true, records, problem: None }
                }
                audit::segments::Verdict::Broken { segment, line, problem, .. } => AuditChain {
                    instance: "embedded".into(),
                    verified: false,
                    records: 0,
                    problem: Some(format!(
                        "{} line {line}: {problem}",
                        segment.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
                    )),
                },
            };
            Ok(vec![chain])
        }
        AuditSource::Postgres(url) => {
            audit::postgres::for_each_record(url, progress, each)?;
            Ok(audit::postgres::verify(url)?
                .into_iter()
                .map(|v| AuditChain {
                    verified: v.broken.is_none(),
                    records: v.records,
                    problem: v.broken.map(|(seq, problem)| format!("seq {seq}: {problem}")),
                    instance: v.instance,
                })
                .collect())
        }
    }
}
