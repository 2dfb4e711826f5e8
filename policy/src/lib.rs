//! The rules of public-data opening, as plain data and pure functions.
//!
//! This crate knows the catalog (datasets, their fields and open types), the filter language
//! users and agreements write row filters in, and the access decision: for a caller, a dataset
//! and an operation, either a [`Grant`] that the gateway's pipeline applies as it is, or a
//! [`Refusal`] with its reason. It opens no socket and starts no runtime, so every rule can be
//! tested exhaustively without a server.
//!
//! ```
//! use policy::{decide, Caller, Dataset, Operation, OpenType};
//! # let dataset = policy::Dataset {
//! #     id: "bus-arrivals".parse().unwrap(), title: "Bus arrivals".into(), description: String::new(),
//! #     owner: "Transport Bureau".into(), open_type: OpenType::Unconditional, fields: vec![],
//! #     format: policy::Format::Csv, update_frequency: policy::UpdateFrequency::Realtime,
//! #     last_updated: chrono::DateTime::UNIX_EPOCH, license: "CC-BY-4.0".into(), keywords: vec![], withdrawn: None,
//! # };
//! let grant = decide(&Caller::Anonymous, &dataset, Operation::Rows, chrono::Utc::now()).unwrap();
//! assert!(grant.scope.is_whole_dataset(&dataset));
//! ```
#![forbid(unsafe_code)]

pub mod agreement;
pub mod calendar;
pub mod catalog;
pub mod decision;
pub mod filter;
pub mod mask;
pub mod permission;
pub mod statutory;
pub mod workflow;

pub use agreement::{Agreement, AgreementStatus, DatasetTerms, Principal, Quota, Rate, Role, TermsError};
pub use calendar::{Calendar, CalendarError, Counted, Year};
pub use catalog::{Dataset, DatasetId, Field, FieldType, Format, OpenType, Sensitivity, UpdateFrequency, Withdrawn};
pub use decision::{available, decide, known, listed, recorded, Caller, Grant, Limit, Operation, Refusal, Scope};
pub use filter::{Expr, FilterError};
pub use mask::{Mask, MaskError};
pub use permission::{authorize, Action, Actor, Denial, Permit, Resource};
pub use workflow::{
    AgreementAction, Application, ApplicationStatus, ContactError, Objection, ObjectionStatus, TransitionError,
};
