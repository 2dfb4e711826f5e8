//! The access decision: who may receive which part of a dataset.
//!
//! [`decide`] is asked once per call; its [`Grant`] is the only thing the gateway's pipeline,
//! limiter and encoders act on, on every protocol. Nothing downstream looks at the open type
//! again.

use crate::catalog::{Dataset, DatasetId, OpenType};
use crate::filter::Expr;

/// Who is calling, as far as the rules care.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// No API key was presented.
    Anonymous,
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
    /// Rows the caller may receive; `None` means every row. Always ANDed with the caller's own
    /// filter.
    pub row_filter: Option<Expr>,
}

impl Scope {
    /// The whole dataset, every row and column, unmasked.
    pub fn whole() -> Scope {
        Scope {
            columns: None,
            row_filter: None,
        }
    }

    /// Whether this scope is the whole dataset, which is what a raw download needs.
    pub fn is_whole_dataset(&self) -> bool {
        self.columns.is_none() && self.row_filter.is_none()
    }

    /// Whether the caller may receive column `name`.
    pub fn allows_column(&self, name: &str) -> bool {
        self.columns.as_ref().is_none_or(|cols| cols.iter().any(|c| c == name))
    }
}

/// Permission to receive a scoped part of one dataset.
#[derive(Clone, Debug, PartialEq)]
pub struct Grant {
    pub dataset: DatasetId,
    pub operation: Operation,
    pub scope: Scope,
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
    /// The whole dataset was asked for, but the scope is narrower.
    #[error("the original file of `{0}` is not within your agreement's scope; query it through /v1/datasets/{0}/rows")]
    DownloadOutsideScope(DatasetId),
}

/// Whether a dataset appears in the catalog and has a metadata page at all.
pub fn listed(dataset: &Dataset) -> bool {
    dataset.open_type != OpenType::NonOpen
}

/// Decides whether `caller` may perform `operation` on `dataset`.
pub fn decide(caller: &Caller, dataset: &Dataset, operation: Operation) -> Result<Grant, Refusal> {
    let scope = match (dataset.open_type, caller) {
        (OpenType::NonOpen, _) => return Err(Refusal::NotFound),
        (OpenType::Unconditional, _) => Scope::whole(),
        (OpenType::Conditional, Caller::Anonymous) => return Err(Refusal::KeyRequired(dataset.id.clone())),
    };
    if operation == Operation::Download && !scope.is_whole_dataset() {
        return Err(Refusal::DownloadOutsideScope(dataset.id.clone()));
    }
    Ok(Grant {
        dataset: dataset.id.clone(),
        operation,
        scope,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{Format, UpdateFrequency};

    fn dataset(open_type: OpenType) -> Dataset {
        Dataset {
            id: "d".parse().unwrap(),
            title: "D".into(),
            description: String::new(),
            owner: "Bureau".into(),
            open_type,
            fields: vec![],
            format: Format::Csv,
            update_frequency: UpdateFrequency::Daily,
            last_updated: chrono::DateTime::UNIX_EPOCH,
            license: "CC-BY-4.0".into(),
            keywords: vec![],
        }
    }

    const OPERATIONS: [Operation; 3] = [Operation::Rows, Operation::Preview, Operation::Download];

    #[test]
    fn unconditional_data_is_granted_whole_to_anyone() {
        for op in OPERATIONS {
            let grant = decide(&Caller::Anonymous, &dataset(OpenType::Unconditional), op).unwrap();
            assert!(grant.scope.is_whole_dataset());
            assert_eq!(grant.operation, op);
        }
    }

    #[test]
    fn non_open_data_is_never_granted_and_looks_unknown() {
        for op in OPERATIONS {
            assert_eq!(
                decide(&Caller::Anonymous, &dataset(OpenType::NonOpen), op),
                Err(Refusal::NotFound)
            );
        }
        assert!(!listed(&dataset(OpenType::NonOpen)));
    }

    #[test]
    fn conditional_data_needs_a_key_and_is_still_listed() {
        for op in OPERATIONS {
            assert!(matches!(
                decide(&Caller::Anonymous, &dataset(OpenType::Conditional), op),
                Err(Refusal::KeyRequired(_))
            ));
        }
        assert!(listed(&dataset(OpenType::Conditional)));
    }
}
