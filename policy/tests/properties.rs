//! Properties of the access decision, over arbitrary catalogs, callers and agreements.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use policy::{
    decide, Agreement, AgreementStatus, Caller, Dataset, DatasetTerms, Field, FieldType, Format, Mask, OpenType,
    Operation, Quota, Rate, Refusal, Sensitivity, UpdateFrequency,
};
use proptest::prelude::*;

const COLUMNS: [&str; 6] = ["a", "b", "c", "d", "e", "f"];

fn dataset(open_type: OpenType) -> Dataset {
    Dataset {
        id: "d".parse().unwrap(),
        title: "D".into(),
        description: String::new(),
        owner: "Bureau".into(),
        open_type,
        fields: COLUMNS
            .iter()
            .map(|c| Field {
                name: c.to_string(),
                field_type: FieldType::String,
                description: String::new(),
                sensitivity: Sensitivity::Public,
            })
            .collect(),
        format: Format::Csv,
        update_frequency: UpdateFrequency::Daily,
        last_updated: DateTime::UNIX_EPOCH,
        license: "x".into(),
        keywords: vec![],
        withdrawn: None,
    }
}

fn status() -> impl Strategy<Value = AgreementStatus> {
    prop_oneof![
        Just(AgreementStatus::Active),
        Just(AgreementStatus::Suspended),
        Just(AgreementStatus::Revoked),
        Just(AgreementStatus::Expired)
    ]
}

fn operation() -> impl Strategy<Value = Operation> {
    prop_oneof![Just(Operation::Rows), Just(Operation::Preview), Just(Operation::Download)]
}

/// An agreement on dataset `d` (or on another one) with a random column subset, a mask on any
/// column or none, status and validity window around `now`. Agreements whose terms
/// [`Agreement::check`] refuses are generated too: the gateway never stores them, and the
/// properties say so.
fn agreement() -> impl Strategy<Value = Agreement> {
    (
        proptest::sample::subsequence(COLUMNS.to_vec(), 0..=COLUMNS.len()),
        any::<bool>(),
        status(),
        -3i64..3,
        -3i64..3,
        proptest::option::of(proptest::sample::select(COLUMNS.to_vec())),
    )
        .prop_map(|(columns, on_d, status, from_days, until_days, masked)| {
            let now = now();
            // A mask on any column of the dataset: among the agreement's columns or not.
            let masks: BTreeMap<String, Mask> = masked.map(|c| (c.to_string(), Mask::Redact)).into_iter().collect();
            Agreement {
                id: "ag".into(),
                principal: "p".into(),
                purpose: String::new(),
                datasets: vec![DatasetTerms {
                    dataset: if on_d { "d" } else { "other" }.parse().unwrap(),
                    columns: columns.into_iter().map(str::to_owned).collect(),
                    row_filter: None,
                    masks,
                }],
                valid_from: now + Duration::days(from_days),
                valid_until: now + Duration::days(until_days),
                status,
                rate: Rate { per_second: 1, burst: 1 },
                quota: Quota { requests_per_day: 1, rows_per_day: 1, bytes_per_day: 1 },
            }
        })
}

fn now() -> DateTime<Utc> {
    "2026-06-01T12:00:00Z".parse().unwrap()
}

fn caller() -> impl Strategy<Value = Caller> {
    prop_oneof![
        Just(Caller::Anonymous),
        proptest::collection::vec(agreement(), 0..4).prop_map(|a| Caller::Key {
            key_id: "k".into(),
            principal: "p".into(),
            agreements: a.into()
        }),
    ]
}

fn open_type() -> impl Strategy<Value = OpenType> {
    prop_oneof![Just(OpenType::Unconditional), Just(OpenType::Conditional), Just(OpenType::NonOpen)]
}

proptest! {
    /// Listing and serving are one rule: a dataset is granted to somebody only if it is listed,
    /// and a withdrawn one is neither, whoever asks.
    #[test]
    fn a_withdrawn_dataset_is_neither_listed_nor_granted(
        caller in caller(), op in operation(), open_type in open_type(), withdrawn in any::<bool>()
    ) {
        let mut d = dataset(open_type);
        if withdrawn {
            d.withdrawn = Some(policy::Withdrawn { at: now(), reason: "a privacy leak".into() });
        }
        let decided = decide(&caller, &d, op, now());
        if decided.is_ok() {
            prop_assert!(policy::listed(&d));
        }
        if withdrawn {
            prop_assert!(!policy::listed(&d));
            let refused_as_withdrawn = matches!(decided, Err(Refusal::Withdrawn { .. }));
            let expected = if open_type == OpenType::NonOpen { decided == Err(Refusal::NotFound) } else { refused_as_withdrawn };
            prop_assert!(expected, "{:?}", decided);
        }
    }

    #[test]
    fn a_non_open_dataset_is_never_granted(caller in caller(), op in operation()) {
        prop_assert_eq!(decide(&caller, &dataset(OpenType::NonOpen), op, now()), Err(Refusal::NotFound));
    }

    #[test]
    fn a_mask_outside_the_agreements_columns_is_refused_by_check(agreement in agreement()) {
        let d = dataset(OpenType::Conditional);
        let check = |a: &Agreement| a.check(|id| (id == &d.id).then_some(&d));
        let terms = &agreement.datasets[0];
        if terms.masks.keys().any(|m| !terms.columns.contains(m)) {
            let refusal = check(&agreement).expect_err("a mask outside the columns is refused");
            // Where the terms are otherwise sound, the mask is what is refused.
            let mut without = agreement.clone();
            without.datasets[0].masks.retain(|m, _| terms.columns.contains(m));
            if check(&without).is_ok() {
                prop_assert!(refusal.field.contains("masks."), "{}", refusal.field);
            }
        }
    }

    #[test]
    fn a_column_outside_the_agreement_never_appears_in_a_grant(caller in caller(), op in operation()) {
        let d = dataset(OpenType::Conditional);
        // Only terms that check out are ever stored, so only those are decided on.
        let caller = match caller {
            Caller::Key { key_id, principal, agreements } => {
                let checked = agreements.iter().filter(|a| a.check(|id| (id == &d.id).then_some(&d)).is_ok()).cloned();
                Caller::Key { key_id, principal, agreements: checked.collect::<Vec<_>>().into() }
            }
            anonymous => anonymous,
        };
        if let Ok(grant) = decide(&caller, &d, op, now()) {
            let Caller::Key { agreements, .. } = &caller else { panic!("anonymous callers get no conditional data") };
            let columns = grant.scope.columns.clone().expect("conditional grants name their columns");
            // Every granted column is in the terms of an agreement in force on `d`.
            let in_force: Vec<&DatasetTerms> = agreements
                .iter()
                .filter(|a| a.status_at(now()) == AgreementStatus::Active)
                .filter_map(|a| a.terms(&d.id))
                .collect();
            prop_assert!(columns.iter().all(|c| in_force.iter().any(|t| t.columns.contains(c))));
            for field in grant.scope.visible_fields(&d) {
                prop_assert!(columns.contains(&field.name));
            }
            for masked in grant.scope.masks.keys() {
                prop_assert!(columns.contains(masked));
            }
        }
    }

    #[test]
    fn expired_suspended_or_revoked_agreements_are_never_granted(agreements in proptest::collection::vec(agreement(), 0..4), op in operation()) {
        let d = dataset(OpenType::Conditional);
        let none_in_force = agreements
            .iter()
            .filter(|a| a.terms(&d.id).is_some())
            .all(|a| a.status != AgreementStatus::Active || now() < a.valid_from || now() >= a.valid_until);
        let caller = Caller::Key { key_id: "k".into(), principal: "p".into(), agreements: agreements.into() };
        if none_in_force {
            let refused = matches!(decide(&caller, &d, op, now()), Err(Refusal::NoAgreement { .. }));
            prop_assert!(refused);
        }
    }

    #[test]
    fn unconditional_data_is_always_granted_whole(caller in caller(), op in operation()) {
        let d = dataset(OpenType::Unconditional);
        let grant = decide(&caller, &d, op, now()).unwrap();
        prop_assert!(grant.scope.is_whole_dataset(&d));
    }
}
