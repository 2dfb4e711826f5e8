//! The store contract: the same cases run against every implementation of
//! [`kaifang::store::Store`], the embedded SQLite store and the PostgreSQL store, each case on a
//! fresh, empty store of its own.
//!
//! A case expects what the trait's documentation promises; where it promises nothing, a case
//! expects only what the implementations do alike. A failure names the case and the store it
//! failed on.
//!
//! The PostgreSQL cases run on the server `KAIFANG_TEST_POSTGRES` names (default
//! `postgres://postgres@127.0.0.1:5432/test`), each in a database of its own, dropped afterwards
//! (also when the case fails). Without the server they say SKIPPED loudly and pass, unless
//! `KAIFANG_REQUIRE_SERVICES=1`, where they fail.

#[path = "../common/services.rs"]
mod services;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::Deref;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use chrono::{DateTime, NaiveDate, Utc};
use kaifang::config::{CachePolicy, DatasetConfig, SourceConfig};
use kaifang::store::postgres::PgStore;
use kaifang::store::sqlite::SqliteStore;
use kaifang::store::{
    EntryRecord, Feedback, KeyRecord, Notification, Report, Store, StoreError, StoreResult, Usage, Withdrawal,
};
use policy::{
    Agreement, AgreementStatus, Application, ApplicationStatus, DatasetId, DatasetTerms, Field, FieldType, Format,
    Mask, Objection, ObjectionStatus, OpenType, Principal, Quota, Rate, Role, Sensitivity, UpdateFrequency,
};

/// What a case runs against: a fresh, empty store, and a way to open another handle on the same
/// state, as another process would (the change counter is about changes made elsewhere).
struct Subject<'a> {
    store: Box<dyn Store>,
    another: &'a dyn Fn() -> Box<dyn Store>,
}

impl Deref for Subject<'_> {
    type Target = dyn Store;

    fn deref(&self) -> &(dyn Store + 'static) {
        self.store.as_ref()
    }
}

type Case = fn(&Subject);

/// Lists cases by their function's name.
macro_rules! cases {
    ($($case:ident),* $(,)?) => {
        vec![$((stringify!($case), $case as Case)),*]
    };
}

/// Every case of the contract, once.
fn cases() -> Vec<(&'static str, Case)> {
    cases![
        a_fresh_store_is_empty,
        principals_are_put_replaced_and_read_back,
        keys_belong_to_existing_principals,
        keys_are_inserted_listed_and_revoked_once,
        agreements_belong_to_existing_principals,
        agreements_are_put_replaced_and_listed,
        agreement_status_changes_and_unknown_agreements_are_not_found,
        usage_is_kept_per_agreement_and_day,
        reports_are_listed_newest_first,
        feedback_is_listed_per_agreement_oldest_first,
        drafts_take_a_new_revision_on_every_write,
        publishing_takes_the_reviewed_revision_only,
        a_draft_written_after_publication_starts_again_at_revision_one,
        withdrawals_hold_until_reopened,
        applications_are_put_replaced_and_listed_oldest_first,
        an_approval_writes_the_decided_application_and_its_agreement,
        a_rejection_writes_the_decided_application_alone,
        a_decision_from_a_stale_application_is_refused_and_writes_nothing,
        applications_are_replaced_only_from_what_is_stored,
        objections_are_put_updated_and_listed_oldest_first,
        notifications_are_listed_oldest_first_and_updated_in_place,
        due_notifications_are_the_undelivered_unabandoned_ones_due_by_now,
        the_change_counter_moves_when_another_handle_changes_keys_or_agreements,
        the_change_counter_moves_on_every_change_to_keys_and_agreements,
        the_store_is_writable,
    ]
}

// ---------------------------------------------------------------------------------------------
// The two stores.

#[test]
fn sqlite_store_meets_the_contract() {
    contract("sqlite", |case| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().to_owned();
        let open = move || -> Box<dyn Store> { Box::new(SqliteStore::open(&path).expect("an SQLite store")) };
        case(&Subject { store: open(), another: &open });
    });
}

#[test]
fn postgres_store_meets_the_contract() {
    let Some(server) = postgres_server("postgres_store_meets_the_contract") else { return };
    contract("postgres", |case| {
        // Dropped last, after every handle on it: the database goes when the case ends.
        let database = services::Database::create(&server);
        let url = database.url.clone();
        let open = move || -> Box<dyn Store> { Box::new(PgStore::open(&url).expect("a PostgreSQL store")) };
        case(&Subject { store: open(), another: &open });
    });
}

/// Runs every case through `on_fresh_store` (which gives each one a fresh, empty store), all
/// of them even when some fail, and fails naming each failed case and `backend`.
fn contract(backend: &str, on_fresh_store: impl Fn(Case)) {
    let all = cases();
    let mut failures = Vec::new();
    for (name, case) in &all {
        let started = Instant::now();
        match catch_unwind(AssertUnwindSafe(|| on_fresh_store(*case))) {
            Ok(()) => eprintln!("[{backend}] {name}: ok in {:.2?}", started.elapsed()),
            Err(payload) => {
                let failure = format!("[{backend}] {name}: {}", panic_message(payload.as_ref()));
                eprintln!("{failure}");
                failures.push(failure);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} store contract cases failed on {backend}:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    match (payload.downcast_ref::<String>(), payload.downcast_ref::<&str>()) {
        (Some(message), _) => message.clone(),
        (None, Some(message)) => (*message).to_owned(),
        (None, None) => "(a panic without a message)".to_owned(),
    }
}

/// The test server's URL, or `None` (after a loud SKIPPED line) when it cannot be reached;
/// with `KAIFANG_REQUIRE_SERVICES=1`, an unreachable server fails `test`.
fn postgres_server(test: &str) -> Option<String> {
    let url = services::postgres_url();
    if services::reachable(&url, 5432) {
        return Some(url);
    }
    services::skip_or_fail(test, &format!("the PostgreSQL store cases need PostgreSQL (at {url}: not reachable)"));
    None
}

// ---------------------------------------------------------------------------------------------
// Records and checks.

/// An instant `seconds` after 2026-01-01T00:00:00Z, in whole seconds, which every store keeps
/// exactly.
fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_225_600 + seconds, 0).expect("a representable instant")
}

fn dataset_id(id: &str) -> DatasetId {
    id.parse().expect("a valid dataset id")
}

fn principal(id: &str, role: Role) -> Principal {
    let department = (role == Role::Owner).then(|| "Transport Bureau".to_owned());
    Principal { id: id.into(), name: format!("{id} Ltd."), role, department }
}

fn key(id: &str, principal: &str, created: i64) -> KeyRecord {
    KeyRecord {
        id: id.into(),
        principal: principal.into(),
        secret_sha256: std::array::from_fn(|i| id.as_bytes()[i % id.len()]),
        created_at: at(created),
        revoked_at: None,
    }
}

fn agreement(id: &str, principal: &str) -> Agreement {
    Agreement {
        id: id.into(),
        principal: principal.into(),
        purpose: "credit checks".into(),
        datasets: vec![DatasetTerms {
            dataset: dataset_id("enterprises"),
            columns: vec!["name".into(), "legal_rep_mobile".into()],
            row_filter: Some("district = 'Haidian'".into()),
            masks: BTreeMap::from([("legal_rep_mobile".to_owned(), Mask::CnMobile)]),
        }],
        valid_from: at(0),
        valid_until: at(365 * 86_400),
        status: AgreementStatus::Active,
        rate: Rate { per_second: 5, burst: 10 },
        quota: Quota { requests_per_day: 1_000, rows_per_day: 100_000, bytes_per_day: 1 << 30 },
    }
}

fn report(id: &str, received: i64) -> Report {
    Report {
        id: id.into(),
        received_at: at(received),
        dataset: Some("enterprises".into()),
        description: format!("misuse {id}"),
        contact: Some("reporter@example.org".into()),
        principal: None,
    }
}

fn feedback(id: &str, agreement: &str, received: i64) -> Feedback {
    Feedback {
        id: id.into(),
        agreement: agreement.into(),
        principal: "acme".into(),
        received_at: at(received),
        usage: format!("used for {id}"),
    }
}

fn entry(id: &str, title: &str) -> EntryRecord {
    EntryRecord {
        entry: DatasetConfig {
            id: dataset_id(id),
            title: title.into(),
            description: "Arrivals at every stop".into(),
            owner: "Transport Bureau".into(),
            open_type: OpenType::Unconditional,
            format: Format::Csv,
            update_frequency: UpdateFrequency::Daily,
            last_updated: at(0),
            license: "CC-BY-4.0".into(),
            keywords: vec!["bus".into()],
            source: SourceConfig::File("transport/arrivals.csv".into()),
            fields: vec![Field {
                name: "stop".into(),
                field_type: FieldType::String,
                description: "The stop's name".into(),
                sensitivity: Sensitivity::Public,
            }],
            cache: CachePolicy::Auto,
            index: vec![],
        },
        by: "transport".into(),
        at: at(10),
        version: 0,
    }
}

fn withdrawal(dataset: &str, reason: &str) -> Withdrawal {
    Withdrawal {
        dataset: dataset.into(),
        withdrawn_at: at(100),
        withdrawn_by: "operator".into(),
        reason: reason.into(),
        reopened_at: None,
        reopened_by: None,
    }
}

fn application(id: &str, submitted: i64) -> Application {
    Application {
        id: id.into(),
        applicant: "acme".into(),
        dataset: dataset_id("enterprises"),
        purpose: "credit checks".into(),
        scenario: "loan approvals".into(),
        security_measures: "encrypted at rest".into(),
        columns: vec!["name".into()],
        status: ApplicationStatus::Submitted,
        submitted_at: at(submitted),
        due_by: NaiveDate::from_ymd_opt(2026, 1, 16).expect("a date"),
        due_by_provisional: false,
        due_by_provisional_years: vec![],
        decided_at: None,
        decided_by: None,
        reason: None,
        agreement: None,
        reminded: false,
    }
}

fn approved(before: &Application, agreement: &str) -> Application {
    let mut after = before.clone();
    after.approve("transport", at(1_000), agreement.into()).expect("an undecided application");
    after
}

fn rejected(before: &Application, reason: &str) -> Application {
    let mut after = before.clone();
    after.reject("transport", at(1_000), reason).expect("an undecided application");
    after
}

fn objection(id: &str, filed: i64) -> Objection {
    Objection {
        id: id.into(),
        dataset: dataset_id("bus-arrivals"),
        filed_at: at(filed),
        description: format!("stop {id} is missing"),
        contact: Some("filer@example.org".into()),
        principal: None,
        status: ObjectionStatus::Open,
        response: None,
        resolved_at: None,
        resolved_by: None,
    }
}

fn notification(id: &str, due: i64) -> Notification {
    Notification {
        id: id.into(),
        url: format!("http://127.0.0.1:9/hooks/{id}"),
        payload: serde_json::json!({"event": "application_submitted", "department": "Transport Bureau", "id": id}),
        attempts: 0,
        next_attempt_at: at(due),
        delivered_at: None,
        abandoned: false,
        last_error: None,
    }
}

/// A record as JSON, for records without `PartialEq`.
fn json(value: &impl serde::Serialize) -> serde_json::Value {
    serde_json::to_value(value).expect("a serializable record")
}

fn ids<T>(records: &[T], id: impl Fn(&T) -> &str) -> Vec<String> {
    records.iter().map(|r| id(r).to_owned()).collect()
}

/// The name of what a store call returned: `Ok` or the kind of error.
fn kind<T>(result: &StoreResult<T>) -> &'static str {
    match result {
        Ok(_) => "Ok",
        Err(StoreError::NotFound(_)) => "NotFound",
        Err(StoreError::Conflict(_)) => "Conflict",
        Err(StoreError::Backend(_)) => "Backend",
    }
}

/// Checks that `result` is the error `expected` (`NotFound`, `Conflict`).
fn refused<T: Debug>(what: &str, result: StoreResult<T>, expected: &str) {
    assert_eq!(kind(&result), expected, "{what}: {result:?}");
}

/// A principal `acme` and its agreement `ag-1`, which feedback and decisions refer to.
fn with_holder(s: &Subject) -> Agreement {
    s.put_principal(&principal("acme", Role::User), false).unwrap();
    let ag = agreement("ag-1", "acme");
    s.put_agreement(&ag, false).unwrap();
    ag
}

// ---------------------------------------------------------------------------------------------
// The cases.

fn a_fresh_store_is_empty(s: &Subject) {
    assert_eq!(s.principal("acme").unwrap(), None);
    assert_eq!(s.key("k1").unwrap(), None);
    assert!(s.keys().unwrap().is_empty());
    assert_eq!(s.agreement("ag-1").unwrap(), None);
    assert!(s.agreements().unwrap().is_empty());
    assert!(s.agreements_of("acme").unwrap().is_empty());
    assert_eq!(s.usage("ag-1", "2026-01-01").unwrap(), Usage::default());
    assert!(s.reports().unwrap().is_empty());
    assert!(s.feedback("ag-1").unwrap().is_empty());
    assert!(s.draft("bus-arrivals").unwrap().is_none());
    assert!(s.drafts().unwrap().is_empty());
    assert!(s.published().unwrap().is_empty());
    assert!(s.withdrawals().unwrap().is_empty());
    assert!(s.withdrawal_history().unwrap().is_empty());
    assert_eq!(s.application("ap-1").unwrap(), None);
    assert!(s.applications().unwrap().is_empty());
    assert_eq!(s.objection("ob-1").unwrap(), None);
    assert!(s.objections().unwrap().is_empty());
    assert!(s.notifications().unwrap().is_empty());
    assert!(s.due_notifications(at(1_000_000)).unwrap().is_empty());
}

fn principals_are_put_replaced_and_read_back(s: &Subject) {
    let acme = principal("acme", Role::User);
    let transport = principal("transport", Role::Owner);
    s.put_principal(&acme, false).unwrap();
    s.put_principal(&transport, true).unwrap();
    assert_eq!(s.principal("acme").unwrap(), Some(acme.clone()));
    assert_eq!(s.principal("transport").unwrap(), Some(transport), "the department is kept");
    assert_eq!(s.principal("nobody").unwrap(), None);

    let renamed = Principal { name: "Acme Holdings".into(), role: Role::Operator, ..acme };
    s.put_principal(&renamed, true).unwrap();
    assert_eq!(s.principal("acme").unwrap(), Some(renamed), "a second put replaces the principal");
}

fn keys_belong_to_existing_principals(s: &Subject) {
    refused("a key of an unknown principal", s.insert_key(&key("k1", "ghost", 0)), "NotFound");
    assert_eq!(s.key("k1").unwrap(), None, "the refused key is not stored");
}

fn keys_are_inserted_listed_and_revoked_once(s: &Subject) {
    s.put_principal(&principal("acme", Role::User), false).unwrap();
    let (k1, k2) = (key("k1", "acme", 10), key("k2", "acme", 5));
    s.insert_key(&k1).unwrap();
    s.insert_key(&k2).unwrap();
    assert_eq!(s.key("k1").unwrap(), Some(k1.clone()), "the key reads back whole, its hash included");
    assert_eq!(s.key("k3").unwrap(), None);
    let mut keys = s.keys().unwrap();
    keys.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(keys, vec![k1.clone(), k2.clone()]);

    assert!(s.revoke_key("k1", at(100)).unwrap(), "the first revocation revokes");
    assert!(!s.revoke_key("k1", at(200)).unwrap(), "a revoked key is already revoked");
    assert_eq!(s.key("k1").unwrap().unwrap().revoked_at, Some(at(100)), "revoked when first revoked");
    assert_eq!(s.key("k2").unwrap(), Some(k2), "other keys stay as they were");
    refused("revoking an unknown key", s.revoke_key("k3", at(300)), "NotFound");
}

fn agreements_belong_to_existing_principals(s: &Subject) {
    refused("an agreement of an unknown principal", s.put_agreement(&agreement("ag-1", "ghost"), false), "NotFound");
    assert_eq!(s.agreement("ag-1").unwrap(), None, "the refused agreement is not stored");
}

fn agreements_are_put_replaced_and_listed(s: &Subject) {
    s.put_principal(&principal("acme", Role::User), false).unwrap();
    s.put_principal(&principal("beta", Role::User), false).unwrap();
    let (ag1, ag2, ag3) = (agreement("ag-1", "acme"), agreement("ag-2", "beta"), agreement("ag-3", "acme"));
    for ag in [&ag3, &ag1, &ag2] {
        s.put_agreement(ag, false).unwrap();
    }
    assert_eq!(s.agreement("ag-1").unwrap(), Some(ag1.clone()), "the agreement reads back whole");
    assert_eq!(s.agreement("ag-9").unwrap(), None);

    let mut of_acme = s.agreements_of("acme").unwrap();
    of_acme.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(of_acme, vec![ag1.clone(), ag3.clone()]);
    assert!(s.agreements_of("nobody").unwrap().is_empty());
    let mut all = s.agreements().unwrap();
    all.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(all, vec![ag1.clone(), ag2, ag3]);

    let replaced =
        Agreement { purpose: "fraud checks".into(), quota: Quota { requests_per_day: 5, ..ag1.quota }, ..ag1 };
    s.put_agreement(&replaced, true).unwrap();
    assert_eq!(s.agreement("ag-1").unwrap(), Some(replaced), "a second put replaces the agreement");
    assert_eq!(s.agreements().unwrap().len(), 3);
}

fn agreement_status_changes_and_unknown_agreements_are_not_found(s: &Subject) {
    let ag = with_holder(s);
    s.set_agreement_status("ag-1", AgreementStatus::Suspended).unwrap();
    let suspended = Agreement { status: AgreementStatus::Suspended, ..ag.clone() };
    assert_eq!(s.agreement("ag-1").unwrap(), Some(suspended.clone()), "only the status changed");
    assert_eq!(s.agreements_of("acme").unwrap(), vec![suspended]);
    s.set_agreement_status("ag-1", AgreementStatus::Revoked).unwrap();
    assert_eq!(s.agreement("ag-1").unwrap().unwrap().status, AgreementStatus::Revoked);
    refused(
        "changing the status of an unknown agreement",
        s.set_agreement_status("ag-9", AgreementStatus::Suspended),
        "NotFound",
    );
    assert_eq!(s.agreement("ag-9").unwrap(), None);
}

fn usage_is_kept_per_agreement_and_day(s: &Subject) {
    assert_eq!(s.usage("ag-1", "2026-01-01").unwrap(), Usage::default(), "nothing used reads as zero");
    let first = Usage { requests: 3, rows: 120, bytes: 4_096 };
    s.save_usage("ag-1", "2026-01-01", first).unwrap();
    assert_eq!(s.usage("ag-1", "2026-01-01").unwrap(), first);
    assert_eq!(s.usage("ag-1", "2026-01-02").unwrap(), Usage::default(), "another day counts apart");
    assert_eq!(s.usage("ag-2", "2026-01-01").unwrap(), Usage::default(), "another agreement counts apart");

    let later = Usage { requests: 7, rows: 9_000, bytes: 5_000_000_000 };
    s.save_usage("ag-1", "2026-01-01", later).unwrap();
    assert_eq!(s.usage("ag-1", "2026-01-01").unwrap(), later, "a later save of the same day replaces it");
    let other = Usage { requests: 1, rows: 1, bytes: 1 };
    s.save_usage("ag-1", "2026-01-02", other).unwrap();
    assert_eq!(s.usage("ag-1", "2026-01-02").unwrap(), other);
    assert_eq!(s.usage("ag-1", "2026-01-01").unwrap(), later);
}

fn reports_are_listed_newest_first(s: &Subject) {
    let (r1, r2, r3) = (report("r1", 100), report("r2", 300), report("r3", 200));
    let anonymous_and_unspecific = Report { dataset: None, principal: None, ..report("r4", 50) };
    let keyed = Report { contact: None, principal: Some("acme".into()), ..report("r5", 400) };
    for r in [&r1, &r2, &r3, &anonymous_and_unspecific, &keyed] {
        s.insert_report(r).unwrap();
    }
    assert_eq!(s.reports().unwrap(), vec![keyed, r2, r3, r1, anonymous_and_unspecific]);
}

fn feedback_is_listed_per_agreement_oldest_first(s: &Subject) {
    with_holder(s);
    s.put_agreement(&agreement("ag-2", "acme"), false).unwrap();
    let (f1, f2, f3) = (feedback("f1", "ag-1", 300), feedback("f2", "ag-1", 100), feedback("f3", "ag-2", 200));
    for f in [&f1, &f2, &f3] {
        s.insert_feedback(f).unwrap();
    }
    assert_eq!(s.feedback("ag-1").unwrap(), vec![f2, f1]);
    assert_eq!(s.feedback("ag-2").unwrap(), vec![f3]);
    assert!(s.feedback("ag-9").unwrap().is_empty());
}

fn drafts_take_a_new_revision_on_every_write(s: &Subject) {
    let first = EntryRecord { version: 99, ..entry("bus-arrivals", "Bus arrivals") };
    assert_eq!(s.put_draft(&first).unwrap(), 1, "a new draft is revision 1, whatever its version says");
    let stored = s.draft("bus-arrivals").unwrap().expect("the draft");
    assert_eq!(json(&stored), json(&EntryRecord { version: 1, ..first }));

    let second = entry("bus-arrivals", "Bus arrivals, corrected");
    assert_eq!(s.put_draft(&second).unwrap(), 2, "a rewrite is the next revision");
    let stored = s.draft("bus-arrivals").unwrap().expect("the draft");
    assert_eq!(json(&stored), json(&EntryRecord { version: 2, ..second.clone() }), "the rewrite replaced it");

    assert_eq!(s.put_draft(&entry("metro-lines", "Metro lines")).unwrap(), 1, "each id has its revisions");
    assert!(s.draft("tram-stops").unwrap().is_none());
    let mut drafts = s.drafts().unwrap();
    drafts.sort_by(|a, b| a.entry.id.as_str().cmp(b.entry.id.as_str()));
    assert_eq!(ids(&drafts, |d| d.entry.id.as_str()), ["bus-arrivals", "metro-lines"]);
    assert_eq!(drafts.iter().map(|d| d.version).collect::<Vec<_>>(), [2, 1]);
    assert!(s.published().unwrap().is_empty(), "drafts are not published");
}

fn publishing_takes_the_reviewed_revision_only(s: &Subject) {
    s.put_draft(&entry("bus-arrivals", "Bus arrivals")).unwrap();
    let revision = s.put_draft(&entry("bus-arrivals", "Bus arrivals, corrected")).unwrap();

    refused("publishing a stale revision", s.publish("bus-arrivals", "operator", at(500), 7, revision - 1), "Conflict");
    assert_eq!(s.draft("bus-arrivals").unwrap().expect("the draft kept").version, revision);
    assert!(s.published().unwrap().is_empty(), "a refused publication publishes nothing");

    let published = s.publish("bus-arrivals", "operator", at(500), 7, revision).unwrap();
    assert_eq!(published.version, 7, "published as the catalog version given");
    assert_eq!((published.by.as_str(), published.at), ("operator", at(500)));
    assert_eq!(published.entry.title, "Bus arrivals, corrected", "the reviewed revision is what is published");
    assert_eq!(published.entry.last_updated, at(500));
    assert!(s.draft("bus-arrivals").unwrap().is_none(), "the draft is removed on publication");
    assert!(s.drafts().unwrap().is_empty());
    let listed = s.published().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(json(&listed[0]), json(&published));

    refused(
        "publishing again without a draft",
        s.publish("bus-arrivals", "operator", at(600), 8, revision),
        "NotFound",
    );
    refused("publishing what was never drafted", s.publish("tram-stops", "operator", at(600), 8, 1), "NotFound");
    assert_eq!(s.published().unwrap().len(), 1);
}

fn a_draft_written_after_publication_starts_again_at_revision_one(s: &Subject) {
    s.put_draft(&entry("bus-arrivals", "Bus arrivals")).unwrap();
    s.publish("bus-arrivals", "operator", at(500), 1, 1).unwrap();
    assert_eq!(s.put_draft(&entry("bus-arrivals", "Bus arrivals, v2")).unwrap(), 1, "a new draft of that id");
    let republished = s.publish("bus-arrivals", "operator", at(900), 2, 1).unwrap();
    let listed = s.published().unwrap();
    assert_eq!(listed.len(), 1, "a publication replaces the entry of that id");
    assert_eq!(json(&listed[0]), json(&republished));
    assert_eq!((listed[0].version, listed[0].entry.title.as_str()), (2, "Bus arrivals, v2"));
}

fn withdrawals_hold_until_reopened(s: &Subject) {
    let w = withdrawal("bus-arrivals", "wrong coordinates");
    s.withdraw(&w).unwrap();
    s.withdraw(&withdrawal("metro-lines", "under review")).unwrap();
    let mut now = s.withdrawals().unwrap();
    now.sort_by(|a, b| a.dataset.cmp(&b.dataset));
    assert_eq!(now, vec![w.clone(), withdrawal("metro-lines", "under review")]);

    refused("withdrawing a withdrawn dataset", s.withdraw(&withdrawal("bus-arrivals", "again")), "Conflict");
    let kept: Vec<_> = s.withdrawals().unwrap().into_iter().filter(|x| x.dataset == "bus-arrivals").collect();
    assert_eq!(kept, vec![w.clone()], "the withdrawal in force stays as it was");

    let reopened = s.reopen("bus-arrivals", "transport", at(200)).unwrap();
    let expected = Withdrawal { reopened_at: Some(at(200)), reopened_by: Some("transport".into()), ..w };
    assert_eq!(reopened, expected.clone(), "reopening answers the withdrawal it ended");
    assert_eq!(ids(&s.withdrawals().unwrap(), |x| x.dataset.as_str()), ["metro-lines"], "no longer in force");

    refused("reopening a reopened dataset", s.reopen("bus-arrivals", "transport", at(300)), "NotFound");
    refused("reopening a dataset never withdrawn", s.reopen("tram-stops", "transport", at(300)), "NotFound");

    let again = withdrawal("bus-arrivals", "wrong again");
    s.withdraw(&again).unwrap();
    let in_force: Vec<_> = s.withdrawals().unwrap().into_iter().filter(|x| x.dataset == "bus-arrivals").collect();
    assert_eq!(in_force, vec![again.clone()], "a reopened dataset may be withdrawn again");
    // The history keeps every withdrawal, reopened ones included, oldest first.
    assert_eq!(
        s.withdrawal_history().unwrap(),
        vec![expected, withdrawal("metro-lines", "under review"), again],
        "every withdrawal, in the order they were made"
    );
}

fn applications_are_put_replaced_and_listed_oldest_first(s: &Subject) {
    let (a1, a2, a3) = (application("ap-1", 200), application("ap-2", 100), application("ap-3", 300));
    for a in [&a1, &a2, &a3] {
        s.put_application(a).unwrap();
    }
    assert_eq!(s.application("ap-1").unwrap(), Some(a1.clone()), "the application reads back whole");
    assert_eq!(s.application("ap-9").unwrap(), None);
    assert_eq!(s.applications().unwrap(), vec![a2.clone(), a1.clone(), a3.clone()], "oldest submission first");

    let reminded = Application { reminded: true, ..a1 };
    s.put_application(&reminded).unwrap();
    assert_eq!(s.application("ap-1").unwrap(), Some(reminded.clone()), "a second put replaces the application");
    assert_eq!(s.applications().unwrap(), vec![a2, reminded, a3]);
}

fn an_approval_writes_the_decided_application_and_its_agreement(s: &Subject) {
    s.put_principal(&principal("acme", Role::User), false).unwrap();
    let before = application("ap-1", 100);
    s.put_application(&before).unwrap();
    let after = approved(&before, "ag-1");
    let ag = agreement("ag-1", "acme");
    s.decide_application(&before, &after, Some(&ag)).unwrap();
    assert_eq!(s.application("ap-1").unwrap(), Some(after));
    assert_eq!(s.agreement("ag-1").unwrap(), Some(ag.clone()), "the approval's agreement is written");
    assert_eq!(s.agreements_of("acme").unwrap(), vec![ag]);
}

fn a_rejection_writes_the_decided_application_alone(s: &Subject) {
    let before = application("ap-1", 100);
    s.put_application(&before).unwrap();
    let after = rejected(&before, "out of scope");
    s.decide_application(&before, &after, None).unwrap();
    assert_eq!(s.application("ap-1").unwrap(), Some(after.clone()));
    assert_eq!(s.applications().unwrap(), vec![after]);
    assert!(s.agreements().unwrap().is_empty(), "a rejection makes no agreement");
}

fn a_decision_from_a_stale_application_is_refused_and_writes_nothing(s: &Subject) {
    s.put_principal(&principal("acme", Role::User), false).unwrap();
    let before = application("ap-1", 100);
    s.put_application(&before).unwrap();
    let first = approved(&before, "ag-1");
    s.decide_application(&before, &first, Some(&agreement("ag-1", "acme"))).unwrap();

    // A second decider, who read the application before the first decision was stored.
    let second = approved(&before, "ag-2");
    refused(
        "deciding from an application decided meanwhile",
        s.decide_application(&before, &second, Some(&agreement("ag-2", "acme"))),
        "Conflict",
    );
    assert_eq!(s.application("ap-1").unwrap(), Some(first.clone()), "the decision made first wins");
    assert_eq!(s.agreement("ag-2").unwrap(), None, "the refused decision's agreement is not written");
    refused(
        "rejecting from an application decided meanwhile",
        s.decide_application(&before, &rejected(&before, "late"), None),
        "Conflict",
    );
    assert_eq!(s.application("ap-1").unwrap(), Some(first));

    // An application that changed otherwise (a reminder was recorded) is not `before` either.
    let other = application("ap-2", 200);
    s.put_application(&other).unwrap();
    let reminded = Application { reminded: true, ..other.clone() };
    assert!(s.replace_application(&other, &reminded).unwrap());
    refused(
        "deciding from an application changed meanwhile",
        s.decide_application(&other, &rejected(&other, "out of scope"), None),
        "Conflict",
    );
    assert_eq!(s.application("ap-2").unwrap(), Some(reminded));

    let never = application("ap-3", 300);
    refused(
        "deciding an application never stored",
        s.decide_application(&never, &rejected(&never, "unknown"), None),
        "Conflict",
    );
    assert_eq!(s.application("ap-3").unwrap(), None, "nothing is written for it");
}

fn applications_are_replaced_only_from_what_is_stored(s: &Subject) {
    let old = application("ap-1", 100);
    s.put_application(&old).unwrap();
    let new = Application { reminded: true, ..old.clone() };
    assert!(s.replace_application(&old, &new).unwrap(), "replaced: it was stored as `old`");
    assert_eq!(s.application("ap-1").unwrap(), Some(new.clone()));

    let other = Application { purpose: "another purpose".into(), ..old.clone() };
    assert!(!s.replace_application(&old, &other).unwrap(), "not replaced: it is no longer `old`");
    assert_eq!(s.application("ap-1").unwrap(), Some(new), "the losing replacement writes nothing");

    let never = application("ap-2", 200);
    let never_new = Application { reminded: true, ..never.clone() };
    assert!(!s.replace_application(&never, &never_new).unwrap(), "nothing stored to replace");
    assert_eq!(s.application("ap-2").unwrap(), None);
}

fn objections_are_put_updated_and_listed_oldest_first(s: &Subject) {
    let (o1, o2) = (objection("ob-1", 300), objection("ob-2", 100));
    let keyed = Objection { contact: None, principal: Some("acme".into()), ..objection("ob-3", 200) };
    for o in [&o1, &o2, &keyed] {
        s.put_objection(o).unwrap();
    }
    assert_eq!(s.objection("ob-1").unwrap(), Some(o1.clone()), "the objection reads back whole");
    assert_eq!(s.objection("ob-9").unwrap(), None);
    assert_eq!(s.objections().unwrap(), vec![o2.clone(), keyed.clone(), o1.clone()], "oldest filing first");

    let mut resolved = o1;
    resolved.resolve("transport", at(900), "added in today's release").unwrap();
    s.put_objection(&resolved).unwrap();
    assert_eq!(s.objection("ob-1").unwrap(), Some(resolved.clone()), "a second put updates the objection");
    assert_eq!(s.objections().unwrap(), vec![o2, keyed, resolved]);
}

fn notifications_are_listed_oldest_first_and_updated_in_place(s: &Subject) {
    let (n1, n2) = (notification("n1", 100), notification("n2", 200));
    s.put_notification(&n1).unwrap();
    s.put_notification(&n2).unwrap();
    assert_eq!(s.notifications().unwrap(), vec![n1.clone(), n2.clone()]);

    // A failed attempt, to be retried after the other one is due.
    let retried = Notification {
        attempts: 1,
        next_attempt_at: at(300),
        last_error: Some("answered 503 Service Unavailable".into()),
        ..n1
    };
    s.put_notification(&retried).unwrap();
    assert_eq!(s.notifications().unwrap(), vec![retried.clone(), n2.clone()], "an update keeps its place");
    assert_eq!(s.due_notifications(at(400)).unwrap(), vec![retried, n2], "oldest first");
}

fn due_notifications_are_the_undelivered_unabandoned_ones_due_by_now(s: &Subject) {
    let n1 = notification("n1", 100);
    let n2 = notification("n2", 700);
    let delivered = Notification { attempts: 1, delivered_at: Some(at(40)), ..notification("n3", 50) };
    let abandoned =
        Notification { attempts: 8, abandoned: true, last_error: Some("refused".into()), ..notification("n4", 50) };
    let n5 = notification("n5", 10_000);
    for n in [&n1, &n2, &delivered, &abandoned, &n5] {
        s.put_notification(n).unwrap();
    }

    // Each call below is at least a minute after the one before: a store that hands a due
    // notification to one caller for a while hands it out again once that while is over.
    assert!(s.due_notifications(at(99)).unwrap().is_empty(), "nothing is due yet");
    assert_eq!(s.due_notifications(at(100)).unwrap(), vec![n1.clone()], "due at its next attempt's instant");
    assert_eq!(s.due_notifications(at(1_000)).unwrap(), vec![n1.clone(), n2.clone()]);
    assert_eq!(
        s.notifications().unwrap(),
        vec![n1.clone(), n2.clone(), delivered.clone(), abandoned.clone(), n5.clone()],
        "handing notifications out leaves them as they were put"
    );

    let n1_delivered = Notification { attempts: 1, delivered_at: Some(at(1_001)), ..n1 };
    s.put_notification(&n1_delivered).unwrap();
    assert_eq!(s.due_notifications(at(2_000)).unwrap(), vec![n2.clone()], "a delivered notification is done");

    let n2_retried =
        Notification { attempts: 1, next_attempt_at: at(5_000), last_error: Some("timed out".into()), ..n2 };
    s.put_notification(&n2_retried).unwrap();
    assert!(s.due_notifications(at(3_000)).unwrap().is_empty(), "a retry waits for its next attempt");
    assert_eq!(s.due_notifications(at(20_000)).unwrap(), vec![n2_retried, n5]);
}

fn the_change_counter_moves_when_another_handle_changes_keys_or_agreements(s: &Subject) {
    let ag = with_holder(s);
    s.insert_key(&key("k1", "acme", 0)).unwrap();
    let other = (s.another)();

    let before = s.change_counter().unwrap();
    assert!(other.revoke_key("k1", at(100)).unwrap());
    let after_revocation = s.change_counter().unwrap();
    assert_ne!(after_revocation, before, "a key revoked elsewhere changes the counter");

    other.set_agreement_status(&ag.id, AgreementStatus::Suspended).unwrap();
    let after_suspension = s.change_counter().unwrap();
    assert_ne!(after_suspension, after_revocation, "an agreement suspended elsewhere changes the counter");

    if let Some(now) = s.change_counter_now() {
        assert_eq!(now.unwrap(), s.change_counter().unwrap(), "read at once, the counter is the same");
    }
}

fn the_change_counter_moves_on_every_change_to_keys_and_agreements(s: &Subject) {
    let other = (s.another)();
    let other: &dyn Store = other.as_ref();
    let mut unnoticed = Vec::new();
    let mut change = |what: &'static str, write: &dyn Fn(&dyn Store)| {
        let before = s.change_counter().unwrap();
        write(other);
        if s.change_counter().unwrap() == before {
            unnoticed.push(what);
        }
    };

    change("put_principal", &|o| o.put_principal(&principal("acme", Role::User), false).unwrap());
    change("insert_key", &|o| o.insert_key(&key("k1", "acme", 0)).unwrap());
    change("revoke_key", &|o| assert!(o.revoke_key("k1", at(10)).unwrap()));
    change("put_agreement", &|o| o.put_agreement(&agreement("ag-1", "acme"), false).unwrap());
    change("set_agreement_status", &|o| o.set_agreement_status("ag-1", AgreementStatus::Suspended).unwrap());
    other.put_application(&application("ap-1", 10)).unwrap();
    change("decide_application, approved", &|o| {
        let before = application("ap-1", 10);
        o.decide_application(&before, &approved(&before, "ag-2"), Some(&agreement("ag-2", "acme"))).unwrap();
    });

    assert!(
        unnoticed.is_empty(),
        "the change counter promises to change whenever another process commits a change to the keys, \
         principals or agreements a key lookup caches, but these changes committed through another handle \
         left it as it was: {unnoticed:?}"
    );
}

fn the_store_is_writable(s: &Subject) {
    s.writable().unwrap();
    s.put_principal(&principal("acme", Role::User), false).unwrap();
    s.writable().unwrap();
    assert!(s.principal("acme").unwrap().is_some(), "checking writability changes nothing");
}
