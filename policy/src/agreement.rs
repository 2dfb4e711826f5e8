//! Principals and agreements: who holds which conditionally open data, on what terms.
//!
//! An approved application becomes an [`Agreement`]: for one principal, one or more datasets,
//! each with a [`DatasetTerms`] scope (columns, row filter, masks), a validity window, a status,
//! a request rate and daily quotas. [`Agreement::check`] refuses terms that do not fit the
//! catalog, so an agreement that exists can always be enforced.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::catalog::{Dataset, DatasetId, OpenType};
use crate::filter::Expr;
use crate::mask::Mask;

/// Who a principal is to the platform.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// An organisation using data under agreements.
    User,
    /// A department owning datasets.
    Owner,
    /// The platform's operators.
    Operator,
}

/// A user organisation, data owner or operator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Principal {
    pub id: String,
    pub name: String,
    pub role: Role,
    /// For owners: the department, matching datasets' `owner`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
}

/// The state an agreement is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AgreementStatus {
    Active,
    /// Paused by the owner or operator; may become active again.
    Suspended,
    /// Ended for good.
    Revoked,
    /// Past its `valid_until`.
    Expired,
}

/// Requests per second, with a burst allowance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    pub per_second: u32,
    pub burst: u32,
}

/// What may be consumed per day.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    pub requests_per_day: u64,
    pub rows_per_day: u64,
    pub bytes_per_day: u64,
}

/// The scope an agreement gives on one dataset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DatasetTerms {
    pub dataset: DatasetId,
    /// Columns the holder may receive.
    pub columns: Vec<String>,
    /// Rows the holder may receive, in the filter language; none means every row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_filter: Option<String>,
    /// Masks by column.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(value_type = BTreeMap<String, String>, example = json!({"legal_rep_mobile": "cn_mobile"}))]
    pub masks: BTreeMap<String, Mask>,
}

/// A signed agreement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Agreement {
    pub id: String,
    pub principal: String,
    #[serde(default)]
    pub purpose: String,
    pub datasets: Vec<DatasetTerms>,
    pub valid_from: DateTime<Utc>,
    pub valid_until: DateTime<Utc>,
    pub status: AgreementStatus,
    pub rate: Rate,
    pub quota: Quota,
}

/// Why terms cannot become an agreement.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct TermsError {
    /// The field the problem is in, e.g. `datasets[0].masks.mobile`.
    pub field: String,
    pub message: String,
}

impl Agreement {
    /// The status that holds at `now`: an active agreement outside its window is expired (or
    /// not yet in force, which is reported as suspended).
    pub fn status_at(&self, now: DateTime<Utc>) -> AgreementStatus {
        match self.status {
            AgreementStatus::Active if now >= self.valid_until => AgreementStatus::Expired,
            AgreementStatus::Active if now < self.valid_from => AgreementStatus::Suspended,
            other => other,
        }
    }

    /// The terms for `dataset`, if the agreement covers it.
    pub fn terms(&self, dataset: &DatasetId) -> Option<&DatasetTerms> {
        self.datasets.iter().find(|t| &t.dataset == dataset)
    }

    /// Checks the terms against the catalog: every dataset exists and is conditionally open,
    /// every column, filter and mask fits its fields, the window and limits make sense.
    pub fn check<'a>(&self, lookup: impl Fn(&DatasetId) -> Option<&'a Dataset>) -> Result<(), TermsError> {
        let err = |field: String, message: String| Err(TermsError { field, message });
        if self.datasets.is_empty() {
            return err("datasets".into(), "an agreement covers at least one dataset".into());
        }
        if self.valid_until <= self.valid_from {
            return err("valid_until".into(), "must be later than valid_from".into());
        }
        if self.rate.per_second == 0 || self.rate.burst == 0 {
            return err("rate".into(), "per_second and burst must be at least 1".into());
        }
        for (i, terms) in self.datasets.iter().enumerate() {
            let at = |f: &str| format!("datasets[{i}].{f}");
            let Some(dataset) = lookup(&terms.dataset).filter(|d| d.open_type == OpenType::Conditional) else {
                return err(at("dataset"), format!("`{}` is not a conditionally open dataset", terms.dataset));
            };
            if self.datasets[..i].iter().any(|t| t.dataset == terms.dataset) {
                return err(at("dataset"), format!("`{}` is listed twice", terms.dataset));
            }
            if terms.columns.is_empty() {
                return err(at("columns"), "at least one column".into());
            }
            for c in &terms.columns {
                if dataset.field(c).is_none() {
                    return err(at("columns"), format!("dataset `{}` has no column `{c}`", dataset.id));
                }
            }
            for (column, mask) in &terms.masks {
                let Some(field) = dataset.field(column).filter(|_| terms.columns.contains(column)) else {
                    return err(
                        at(&format!("masks.{column}")),
                        format!("`{column}` is not among the agreement's columns"),
                    );
                };
                if let Err(e) = mask.output_type(field.field_type) {
                    return err(at(&format!("masks.{column}")), e.to_string());
                }
            }
            if let Some(filter) = &terms.row_filter {
                let parsed = Expr::parse(filter).and_then(|e| e.check(&dataset.fields).map(|()| e));
                if let Err(e) = parsed {
                    return err(at("row_filter"), e.to_string());
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{Field, FieldType, Format, Sensitivity, UpdateFrequency};

    fn enterprises() -> Dataset {
        let field = |name: &str, field_type| Field {
            name: name.into(),
            field_type,
            description: String::new(),
            sensitivity: Sensitivity::Public,
        };
        Dataset {
            id: "enterprises".parse().unwrap(),
            title: "E".into(),
            description: String::new(),
            owner: "Market".into(),
            open_type: OpenType::Conditional,
            fields: vec![
                field("name", FieldType::String),
                field("district", FieldType::String),
                field("established_on", FieldType::Date),
            ],
            format: Format::Csv,
            update_frequency: UpdateFrequency::Daily,
            last_updated: DateTime::UNIX_EPOCH,
            license: "x".into(),
            keywords: vec![],
            withdrawn: None,
        }
    }

    fn agreement(terms: DatasetTerms) -> Agreement {
        Agreement {
            id: "a1".into(),
            principal: "acme".into(),
            purpose: String::new(),
            datasets: vec![terms],
            valid_from: DateTime::UNIX_EPOCH,
            valid_until: "2100-01-01T00:00:00Z".parse().unwrap(),
            status: AgreementStatus::Active,
            rate: Rate { per_second: 1, burst: 1 },
            quota: Quota { requests_per_day: 1, rows_per_day: 1, bytes_per_day: 1 },
        }
    }

    fn terms(columns: &[&str], row_filter: Option<&str>, masks: &[(&str, &str)]) -> DatasetTerms {
        DatasetTerms {
            dataset: "enterprises".parse().unwrap(),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            row_filter: row_filter.map(str::to_owned),
            masks: masks.iter().map(|(c, m)| (c.to_string(), m.parse().unwrap())).collect(),
        }
    }

    #[test]
    fn terms_that_fit_the_catalog_are_accepted() {
        let d = enterprises();
        let a = agreement(terms(
            &["name", "established_on"],
            Some("district = 'Haizhou'"),
            &[("name", "keep_first(1)"), ("established_on", "year_only")],
        ));
        assert_eq!(a.check(|_| Some(&d)), Ok(()));
    }

    #[test]
    fn terms_that_do_not_fit_are_refused_naming_the_field() {
        let d = enterprises();
        let cases = [
            (terms(&["nope"], None, &[]), "datasets[0].columns"),
            (terms(&["name"], Some("nope = 1"), &[]), "datasets[0].row_filter"),
            (terms(&["name"], None, &[("district", "redact")]), "datasets[0].masks.district"),
            (terms(&["established_on"], None, &[("established_on", "cn_mobile")]), "datasets[0].masks.established_on"),
            (terms(&[], None, &[]), "datasets[0].columns"),
        ];
        for (t, field) in cases {
            assert_eq!(agreement(t).check(|_| Some(&d)).unwrap_err().field, field);
        }
        let mut open = enterprises();
        open.open_type = OpenType::Unconditional;
        assert_eq!(
            agreement(terms(&["name"], None, &[])).check(|_| Some(&open)).unwrap_err().field,
            "datasets[0].dataset"
        );
    }

    #[test]
    fn an_active_agreement_outside_its_window_is_not_active() {
        let mut a = agreement(terms(&["name"], None, &[]));
        a.valid_from = "2025-01-01T00:00:00Z".parse().unwrap();
        a.valid_until = "2026-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(a.status_at("2024-12-31T23:59:59Z".parse().unwrap()), AgreementStatus::Suspended);
        assert_eq!(a.status_at("2025-06-01T00:00:00Z".parse().unwrap()), AgreementStatus::Active);
        assert_eq!(a.status_at("2026-01-01T00:00:00Z".parse().unwrap()), AgreementStatus::Expired);
        a.status = AgreementStatus::Revoked;
        assert_eq!(a.status_at("2025-06-01T00:00:00Z".parse().unwrap()), AgreementStatus::Revoked);
    }
}
