//! The access decision: who may receive which part of a dataset.
//!
//! [`decide`] is asked once per call; its [`Grant`] is the only thing the gateway's pipeline,
//! limiter and encoders act on, on every protocol. Nothing downstream looks at the open type
//! again.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::agreement::{Agreement, AgreementStatus, Quota, Rate};
use crate::catalog::{Dataset, DatasetId, Field, FieldType, OpenType, Withdrawn};
use crate::filter::Expr;
use crate::mask::Mask;

/// Who is calling, as far as the rules care.
#[derive(Clone, Debug, PartialEq)]
pub enum Caller {
    /// No API key was presented.
    Anonymous,
    /// A valid, unrevoked API key, with the agreements its principal holds.
    Key { key_id: String, principal: String, agreements: Arc<[Agreement]> },
}

/// What the caller wants to do with the dataset's data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    /// A query through the scoped pipeline (`rows`).
    Rows,
    /// The first rows, scoped as for `rows`.
    Preview,
    /// The original file, byte for byte.
    Download,
}

impl Operation {
    /// The name used in logs and audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Rows => "rows",
            Operation::Preview => "preview",
            Operation::Download => "download",
        }
    }
}

/// What part of a dataset a grant covers.
#[derive(Clone, Debug, PartialEq)]
pub struct Scope {
    /// Columns the caller may receive; `None` means every column.
    pub columns: Option<Vec<String>>,
    /// Rows the caller may receive, judged on the raw values; `None` means every row. Always
    /// ANDed with the caller's own filter.
    pub row_filter: Option<Expr>,
    /// Masks applied to every value of these columns before anything else sees them.
    pub masks: BTreeMap<String, Mask>,
}

impl Scope {
    /// The whole dataset, every row and column, unmasked.
    pub fn whole() -> Scope {
        Scope { columns: None, row_filter: None, masks: BTreeMap::new() }
    }

    /// Whether this scope is the whole of `dataset`, unmasked and unfiltered: what a raw
    /// download needs.
    pub fn is_whole_dataset(&self, dataset: &Dataset) -> bool {
        self.row_filter.is_none() && self.masks.is_empty() && dataset.fields.iter().all(|f| self.allows_column(&f.name))
    }

    /// Whether the caller may receive column `name`.
    pub fn allows_column(&self, name: &str) -> bool {
        self.columns.as_ref().is_none_or(|cols| cols.iter().any(|c| c == name))
    }

    /// The fields the caller sees, in the dataset's order, typed as they arrive once masked.
    pub fn visible_fields(&self, dataset: &Dataset) -> Vec<Field> {
        dataset
            .fields
            .iter()
            .filter(|f| self.allows_column(&f.name))
            .map(|f| Field { field_type: self.shown_type(&f.name, f.field_type), ..f.clone() })
            .collect()
    }

    /// The type column `name`, declared as `declared`, arrives as: its mask's output type when
    /// masked.
    pub fn shown_type(&self, name: &str, declared: FieldType) -> FieldType {
        self.masks.get(name).map_or(declared, |mask| mask.output_type(declared).unwrap_or(declared))
    }
}

/// Which limiter and quota a call counts against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Limit {
    /// No key: limited per client address.
    Anonymous,
    /// A key calling outside any agreement (unconditional data): limited per key.
    Key(String),
    /// Under an agreement: its rate and daily quota.
    Agreement { id: String, rate: Rate, quota: Quota },
}

/// Permission to receive a scoped part of one dataset.
#[derive(Clone, Debug, PartialEq)]
pub struct Grant {
    pub dataset: DatasetId,
    pub operation: Operation,
    pub scope: Scope,
    pub limit: Limit,
}

/// Why a call is refused. Each maps to one status on every protocol.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Unknown or non-open: the same answer for both, so non-open ids cannot be probed.
    #[error("no dataset with this id")]
    NotFound,
    /// Conditional data needs an API key bound to an agreement.
    #[error("dataset `{0}` is conditionally open: apply for an agreement and call with its API key")]
    KeyRequired(DatasetId),
    /// The key's principal holds no agreement in force for the dataset.
    #[error("{reason}")]
    NoAgreement { dataset: DatasetId, reason: String },
    /// The whole dataset was asked for, but the scope is narrower.
    #[error("the original file of `{0}` is not within your agreement's scope; query it through /v1/datasets/{0}/rows")]
    DownloadOutsideScope(DatasetId),
    /// The dataset is withdrawn: not served, whoever asks, until it is reopened.
    #[error("the dataset was withdrawn at {}: {}", .withdrawn.at.to_rfc3339(), .withdrawn.reason)]
    Withdrawn { dataset: DatasetId, withdrawn: Withdrawn },
}

/// Whether calls on a dataset must leave audit records: every data call on conditionally open
/// data, refused ones included. Unconditional data is counted, not recorded call by call.
pub fn recorded(dataset: &Dataset) -> bool {
    dataset.open_type == OpenType::Conditional
}

/// Whether a dataset is known to the public at all: every dataset but the non-open ones. A
/// withdrawn dataset is known (its page answers that it was withdrawn, and its owner reopens it)
/// but not [`listed`].
pub fn known(dataset: &Dataset) -> bool {
    dataset.open_type != OpenType::NonOpen
}

/// Whether a dataset is in the public catalog and served, or why not: the one rule for the
/// catalog's listing and for every data call ([`decide`] asks it first). Non-open datasets are
/// not found; withdrawn ones are refused with their withdrawal.
pub fn available(dataset: &Dataset) -> Result<(), Refusal> {
    if !known(dataset) {
        return Err(Refusal::NotFound);
    }
    match &dataset.withdrawn {
        Some(withdrawn) => Err(Refusal::Withdrawn { dataset: dataset.id.clone(), withdrawn: withdrawn.clone() }),
        None => Ok(()),
    }
}

/// Whether a dataset appears in the catalog ([`available`]).
pub fn listed(dataset: &Dataset) -> bool {
    available(dataset).is_ok()
}

/// Decides whether `caller` may perform `operation` on `dataset` at `now`.
pub fn decide(caller: &Caller, dataset: &Dataset, operation: Operation, now: DateTime<Utc>) -> Result<Grant, Refusal> {
    available(dataset)?;
    let (scope, limit) = match (dataset.open_type, caller) {
        (OpenType::NonOpen, _) => return Err(Refusal::NotFound),
        (OpenType::Unconditional, Caller::Anonymous) => (Scope::whole(), Limit::Anonymous),
        (OpenType::Unconditional, Caller::Key { key_id, .. }) => (Scope::whole(), Limit::Key(key_id.clone())),
        (OpenType::Conditional, Caller::Anonymous) => return Err(Refusal::KeyRequired(dataset.id.clone())),
        (OpenType::Conditional, Caller::Key { agreements, .. }) => agreement_scope(agreements, dataset, now)?,
    };
    if operation == Operation::Download && !scope.is_whole_dataset(dataset) {
        return Err(Refusal::DownloadOutsideScope(dataset.id.clone()));
    }
    Ok(Grant { dataset: dataset.id.clone(), operation, scope, limit })
}

/// The scope of the agreement in force that covers `dataset`, or why there is none.
fn agreement_scope(agreements: &[Agreement], dataset: &Dataset, now: DateTime<Utc>) -> Result<(Scope, Limit), Refusal> {
    let covering: Vec<&Agreement> = agreements.iter().filter(|a| a.terms(&dataset.id).is_some()).collect();
    let refuse = |reason: String| Refusal::NoAgreement { dataset: dataset.id.clone(), reason };
    let Some(agreement) = covering.iter().find(|a| a.status_at(now) == AgreementStatus::Active) else {
        return Err(refuse(match covering.first() {
            None => format!("you hold no agreement for dataset `{}`; apply for one", dataset.id),
            Some(a) => format!(
                "your agreement `{}` for dataset `{}` is {}",
                a.id,
                dataset.id,
                match a.status_at(now) {
                    AgreementStatus::Suspended if a.status == AgreementStatus::Active => "not yet in force",
                    AgreementStatus::Suspended => "suspended",
                    AgreementStatus::Revoked => "revoked",
                    AgreementStatus::Expired => "expired",
                    AgreementStatus::Active => unreachable!("active agreements were found above"),
                }
            ),
        }));
    };
    let terms = agreement.terms(&dataset.id).expect("covering agreements have terms for the dataset");
    let row_filter = match &terms.row_filter {
        Some(text) => Some(
            Expr::parse(text)
                .map_err(|e| refuse(format!("agreement `{}` has a broken row filter: {e}", agreement.id)))?,
        ),
        None => None,
    };
    // Columns keep the dataset's order, whatever order the agreement lists them in.
    let columns = dataset.fields.iter().filter(|f| terms.columns.contains(&f.name)).map(|f| f.name.clone()).collect();
    let scope = Scope { columns: Some(columns), row_filter, masks: terms.masks.clone() };
    let limit = Limit::Agreement { id: agreement.id.clone(), rate: agreement.rate, quota: agreement.quota };
    Ok((scope, limit))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agreement::DatasetTerms;
    use crate::catalog::{FieldType, Format, Sensitivity, UpdateFrequency};

    fn dataset(open_type: OpenType) -> Dataset {
        let field = |name: &str| Field {
            name: name.into(),
            field_type: FieldType::String,
            description: String::new(),
            sensitivity: Sensitivity::Public,
        };
        Dataset {
            id: "d".parse().unwrap(),
            title: "D".into(),
            description: String::new(),
            owner: "Bureau".into(),
            open_type,
            fields: vec![field("a"), field("b"), field("c")],
            format: Format::Csv,
            update_frequency: UpdateFrequency::Daily,
            last_updated: DateTime::UNIX_EPOCH,
            license: "CC-BY-4.0".into(),
            keywords: vec![],
            withdrawn: None,
        }
    }

    fn key(agreements: Vec<Agreement>) -> Caller {
        Caller::Key { key_id: "k1".into(), principal: "acme".into(), agreements: agreements.into() }
    }

    fn agreement(columns: &[&str], masks: &[(&str, Mask)], status: AgreementStatus) -> Agreement {
        Agreement {
            id: "ag1".into(),
            principal: "acme".into(),
            purpose: String::new(),
            datasets: vec![DatasetTerms {
                dataset: "d".parse().unwrap(),
                columns: columns.iter().map(|c| c.to_string()).collect(),
                row_filter: Some("a = 'x'".into()),
                masks: masks.iter().map(|(c, m)| (c.to_string(), *m)).collect(),
            }],
            valid_from: DateTime::UNIX_EPOCH,
            valid_until: "2100-01-01T00:00:00Z".parse().unwrap(),
            status,
            rate: Rate { per_second: 5, burst: 10 },
            quota: Quota { requests_per_day: 100, rows_per_day: 1000, bytes_per_day: 10_000 },
        }
    }

    fn now() -> DateTime<Utc> {
        "2026-01-01T00:00:00Z".parse().unwrap()
    }

    const OPERATIONS: [Operation; 3] = [Operation::Rows, Operation::Preview, Operation::Download];

    #[test]
    fn unconditional_data_is_granted_whole_to_anyone() {
        for op in OPERATIONS {
            let grant = decide(&Caller::Anonymous, &dataset(OpenType::Unconditional), op, now()).unwrap();
            assert!(grant.scope.is_whole_dataset(&dataset(OpenType::Unconditional)));
            assert_eq!((grant.operation, grant.limit), (op, Limit::Anonymous));
            let grant = decide(&key(vec![]), &dataset(OpenType::Unconditional), op, now()).unwrap();
            assert_eq!(grant.limit, Limit::Key("k1".into()));
        }
    }

    #[test]
    fn non_open_data_is_never_granted_and_looks_unknown() {
        let holder = key(vec![agreement(&["a"], &[], AgreementStatus::Active)]);
        for op in OPERATIONS {
            for caller in [&Caller::Anonymous, &holder] {
                assert_eq!(decide(caller, &dataset(OpenType::NonOpen), op, now()), Err(Refusal::NotFound));
            }
        }
        assert!(!listed(&dataset(OpenType::NonOpen)));
    }

    #[test]
    fn conditional_data_needs_a_key_and_an_agreement_in_force() {
        let d = dataset(OpenType::Conditional);
        assert!(matches!(decide(&Caller::Anonymous, &d, Operation::Rows, now()), Err(Refusal::KeyRequired(_))));
        assert!(listed(&d));
        assert!(recorded(&d) && !recorded(&dataset(OpenType::Unconditional)));
        let Err(Refusal::NoAgreement { reason, .. }) = decide(&key(vec![]), &d, Operation::Rows, now()) else {
            panic!()
        };
        assert!(reason.contains("no agreement"), "{reason}");
        for (status, word) in [
            (AgreementStatus::Suspended, "suspended"),
            (AgreementStatus::Revoked, "revoked"),
            (AgreementStatus::Expired, "expired"),
        ] {
            let caller = key(vec![agreement(&["a"], &[], status)]);
            let Err(Refusal::NoAgreement { reason, .. }) = decide(&caller, &d, Operation::Rows, now()) else {
                panic!()
            };
            assert!(reason.contains(word), "{reason}");
        }
    }

    #[test]
    fn an_agreement_grants_its_scope_and_its_limits() {
        let d = dataset(OpenType::Conditional);
        let caller = key(vec![agreement(&["c", "a"], &[("c", Mask::Redact)], AgreementStatus::Active)]);
        let grant = decide(&caller, &d, Operation::Rows, now()).unwrap();
        assert_eq!(grant.scope.columns, Some(vec!["a".to_string(), "c".to_string()]));
        assert_eq!(grant.scope.row_filter, Some(Expr::parse("a = 'x'").unwrap()));
        assert_eq!(grant.scope.masks.get("c"), Some(&Mask::Redact));
        assert!(matches!(grant.limit, Limit::Agreement { ref id, .. } if id == "ag1"));
        assert_eq!(
            decide(&caller, &d, Operation::Download, now()),
            Err(Refusal::DownloadOutsideScope(d.id.clone())),
            "a narrowed scope never downloads the original file"
        );
    }
}
