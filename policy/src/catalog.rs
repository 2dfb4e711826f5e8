//! The open catalog (开放清单): datasets, their fields and their open type.
//!
//! These are the entries a data owner declares and the platform reviews; they carry no
//! information about where the bytes live (that is the gateway's source configuration).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A dataset identifier: lowercase ASCII letters, digits, `-` and `_`, starting with a letter
/// or digit, at most 64 characters. The charset is what keeps ids safe in URLs, file names and
/// log lines; anything else (`..`, slashes, percent escapes) is not an id at all.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(transparent)]
pub struct DatasetId(String);

/// Why a string is not a [`DatasetId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("dataset id must be 1 to 64 characters of a-z, 0-9, '-' or '_', starting with a letter or digit")]
pub struct InvalidDatasetId;

impl DatasetId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for DatasetId {
    type Err = InvalidDatasetId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = s.as_bytes();
        let valid = !bytes.is_empty()
            && bytes.len() <= 64
            && bytes[0].is_ascii_alphanumeric()
            && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'_');
        if valid {
            Ok(DatasetId(s.to_owned()))
        } else {
            Err(InvalidDatasetId)
        }
    }
}

impl<'de> Deserialize<'de> for DatasetId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for DatasetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The three open types of the regulation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OpenType {
    /// 无条件开放: anyone may obtain, use and spread it without applying.
    Unconditional,
    /// 有条件开放: served only under a signed agreement, within its scope.
    Conditional,
    /// 非开放: never listed, described or served.
    NonOpen,
}

impl OpenType {
    /// The name used in configuration, query strings and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            OpenType::Unconditional => "unconditional",
            OpenType::Conditional => "conditional",
            OpenType::NonOpen => "non_open",
        }
    }
}

impl FromStr for OpenType {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "unconditional" => Ok(OpenType::Unconditional),
            "conditional" => Ok(OpenType::Conditional),
            "non_open" => Ok(OpenType::NonOpen),
            _ => Err(()),
        }
    }
}

/// The value type of a field, as declared in the catalog.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    String,
    Int64,
    Float64,
    Boolean,
    /// A calendar date (`YYYY-MM-DD`).
    Date,
    /// An instant, UTC, millisecond precision.
    Timestamp,
}

impl FieldType {
    /// The name used in configuration.
    pub fn name(self) -> &'static str {
        match self {
            FieldType::String => "string",
            FieldType::Int64 => "int64",
            FieldType::Float64 => "float64",
            FieldType::Boolean => "boolean",
            FieldType::Date => "date",
            FieldType::Timestamp => "timestamp",
        }
    }
}

/// How sensitive a field's values are; it drives which masks an owner is expected to set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Sensitivity {
    /// Nothing personal or confidential.
    #[default]
    Public,
    /// Identifies an organisation or is commercially confidential.
    Internal,
    /// Personal information (names, ID-card numbers, mobile numbers, addresses).
    Personal,
}

/// One field (column) of a dataset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Field {
    /// Column name as it appears in the data and in queries.
    pub name: String,
    /// Value type.
    #[serde(rename = "type")]
    pub field_type: FieldType,
    /// What the field means, for people reading the catalog.
    #[serde(default)]
    pub description: String,
    /// How sensitive its values are.
    #[serde(default)]
    pub sensitivity: Sensitivity,
}

/// The format of a dataset's distribution (its original file).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Csv,
    Ndjson,
    Parquet,
    /// Arrow IPC, file or stream format.
    ArrowIpc,
}

impl Format {
    /// The media type of the original file.
    pub fn media_type(self) -> &'static str {
        match self {
            Format::Csv => "text/csv; charset=utf-8",
            Format::Ndjson => "application/x-ndjson",
            Format::Parquet => "application/vnd.apache.parquet",
            Format::ArrowIpc => "application/vnd.apache.arrow.file",
        }
    }

    /// The file extension for downloads.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Ndjson => "ndjson",
            Format::Parquet => "parquet",
            Format::ArrowIpc => "arrow",
        }
    }
}

/// How often the owner declares the dataset is updated (DCAT `accrualPeriodicity`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UpdateFrequency {
    Realtime,
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Quarterly,
    Yearly,
    Irregular,
}

impl UpdateFrequency {
    /// The longest a declared update may be awaited: past it, the data is not updated as
    /// declared. Real-time data is held to an hour; irregular updates have no such time.
    pub fn period(self) -> Option<chrono::TimeDelta> {
        let days = chrono::TimeDelta::days;
        Some(match self {
            UpdateFrequency::Realtime | UpdateFrequency::Hourly => chrono::TimeDelta::hours(1),
            UpdateFrequency::Daily => days(1),
            UpdateFrequency::Weekly => days(7),
            UpdateFrequency::Monthly => days(31),
            UpdateFrequency::Quarterly => days(92),
            UpdateFrequency::Yearly => days(366),
            UpdateFrequency::Irregular => return None,
        })
    }
}

/// A catalog entry.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Dataset {
    pub id: DatasetId,
    pub title: String,
    pub description: String,
    /// The owning department (DCAT publisher).
    pub owner: String,
    pub open_type: OpenType,
    pub fields: Vec<Field>,
    pub format: Format,
    pub update_frequency: UpdateFrequency,
    pub last_updated: DateTime<Utc>,
    pub license: String,
    pub keywords: Vec<String>,
    /// The withdrawal in force: a withdrawn dataset is neither listed nor served until it is
    /// reopened ([`crate::listed`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub withdrawn: Option<Withdrawn>,
}

/// Why and since when a dataset is withdrawn (a privacy leak found in it, say).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Withdrawn {
    pub at: DateTime<Utc>,
    pub reason: String,
}

impl Dataset {
    /// The field called `name`, if the dataset has one.
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Whether the last update is older than the declared update frequency allows at `now`.
    pub fn stale(&self, now: chrono::DateTime<chrono::Utc>) -> bool {
        self.update_frequency.period().is_some_and(|period| now - self.last_updated > period)
    }

    /// Whether a free-text catalog search term matches this entry (title, description,
    /// keywords, owner; case-insensitive).
    pub fn matches_text(&self, term: &str) -> bool {
        let term = term.to_lowercase();
        self.title.to_lowercase().contains(&term)
            || self.description.to_lowercase().contains(&term)
            || self.owner.to_lowercase().contains(&term)
            || self.keywords.iter().any(|k| k.to_lowercase().contains(&term))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_stale_once_its_declared_period_has_passed() {
        let updated: chrono::DateTime<chrono::Utc> = "2026-01-31T00:00:00Z".parse().unwrap();
        let at = |s: &str| s.parse::<chrono::DateTime<chrono::Utc>>().unwrap();
        let stale = |frequency, now: &str| {
            let d = Dataset {
                id: "d".parse().unwrap(),
                title: "D".into(),
                description: String::new(),
                owner: "Bureau".into(),
                open_type: OpenType::Unconditional,
                fields: vec![],
                format: Format::Csv,
                update_frequency: frequency,
                last_updated: updated,
                license: String::new(),
                keywords: vec![],
                withdrawn: None,
            };
            d.stale(at(now))
        };
        assert!(!stale(UpdateFrequency::Daily, "2026-02-01T00:00:00Z"));
        assert!(stale(UpdateFrequency::Daily, "2026-02-01T00:00:01Z"));
        assert!(!stale(UpdateFrequency::Monthly, "2026-03-03T00:00:00Z"));
        assert!(stale(UpdateFrequency::Monthly, "2026-03-03T00:00:01Z"));
        assert!(stale(UpdateFrequency::Realtime, "2026-01-31T01:00:01Z"));
        assert!(!stale(UpdateFrequency::Irregular, "2036-01-31T00:00:00Z"));
    }

    #[test]
    fn dataset_ids_admit_only_the_safe_charset() {
        for ok in ["bus-arrivals", "air_quality", "a", "2025-budget"] {
            assert!(ok.parse::<DatasetId>().is_ok(), "{ok}");
        }
        let long = "a".repeat(65);
        for bad in ["", "..", "a/b", "a%2fb", "Bus", "-x", "_x", "a b", "é", long.as_str()] {
            assert!(bad.parse::<DatasetId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn open_types_round_trip_their_names() {
        for t in [OpenType::Unconditional, OpenType::Conditional, OpenType::NonOpen] {
            assert_eq!(t.as_str().parse::<OpenType>(), Ok(t));
        }
        assert!("open".parse::<OpenType>().is_err());
    }
}
