//! What the platform's workflows share (catalog drafts and publication, withdrawal and reopening,
//! applications and their decisions, agreements' suspension and revocation, objections), on the
//! data port for owners and users (by their keys' principals) and on the admin port for the
//! operators (by the operator token).
//!
//! Each action asks the rules ([`policy::authorize`]) whether the actor may do it, before it reads
//! the body or changes the store, so a call by the wrong role is a 403 that changes nothing, and a
//! record the actor may not know of answers exactly as a missing one.

use policy::{authorize, Action, Actor, Agreement, DatasetId, Denial, Resource, TransitionError};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::error::{Error, Kind};
use crate::state::State;

/// Longest free text (purpose, reasons, descriptions) the workflows take.
pub(super) const MAX_TEXT_CHARS: usize = 4000;

pub(super) fn wrong_role(message: impl Into<String>) -> Error {
    Error::new(Kind::Forbidden, "wrong_role", message)
}

/// Asks the rules whether `actor` may do `action` on `resource`; a record the actor may not know
/// of is answered as `missing`.
pub(super) fn permitted(actor: &Actor, action: Action, resource: Resource<'_>, missing: &str) -> Result<(), Error> {
    match authorize(actor, action, resource) {
        Ok(_) => Ok(()),
        Err(Denial::Hidden) => Err(not_found(missing)),
        Err(Denial::WrongRole(reason)) => Err(wrong_role(reason)),
    }
}

/// Whether the rules let `actor` do `action` on `resource`.
pub(super) fn allows(actor: &Actor, action: Action, resource: Resource<'_>) -> bool {
    authorize(actor, action, resource).is_ok()
}

/// The department owning `dataset`, withdrawn or not; `None` once it is not in the catalog.
pub(super) fn owner_of(state: &State, dataset: &DatasetId) -> Option<String> {
    state.live().catalog.get(dataset).map(|e| e.dataset.owner.clone())
}

pub(super) fn text(field: &str, value: &str) -> Result<String, Error> {
    let value = value.trim();
    if value.is_empty() || value.chars().count() > MAX_TEXT_CHARS {
        return Err(Error::bad_request("bad_body", format!("{field}: 1 to {MAX_TEXT_CHARS} characters")));
    }
    Ok(value.to_owned())
}

pub(super) fn transition(e: TransitionError) -> Error {
    match e {
        TransitionError::AlreadyDecided(_) => Error::new(Kind::Conflict, "already_decided", e.to_string()),
        TransitionError::ReasonRequired => Error::bad_request("reason_required", "reason: a rejection needs a reason"),
        TransitionError::ResponseRequired => {
            Error::bad_request("response_required", "response: resolving an objection needs a response")
        }
        TransitionError::Revoked => Error::new(Kind::Conflict, "already_revoked", e.to_string()),
        TransitionError::NotSuspended => Error::new(Kind::Conflict, "not_suspended", e.to_string()),
    }
}

/// A report's or objection's contact, as the rules take it (see [`policy::workflow::contact`]).
pub(super) fn contact(given: Option<&str>, anonymous: bool) -> Result<Option<String>, Error> {
    policy::workflow::contact(given, anonymous).map_err(|e| Error::bad_request("bad_body", format!("contact: {e}")))
}

/// Checks an agreement's terms against the catalog in force (400 `bad_terms`).
pub(super) fn checked_terms(state: &State, agreement: &Agreement) -> Result<(), Error> {
    let live = state.live();
    agreement
        .check(|id| live.catalog.get(id).map(|e| &e.dataset))
        .map_err(|e| Error::bad_request("bad_terms", e.to_string()))
}

/// A new record id: the prefix and 16 hex digits of a random UUID.
pub(super) fn new_id(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..16])
}

// ---- Catalog: drafts, publication, withdrawal --------------------------------------------

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonRequest {
    /// Required.
    #[serde(default)]
    #[schema(required = true, min_length = 1, max_length = 4000)]
    pub reason: String,
}

// ---- Applications --------------------------------------------------------------------------

// ---- Agreements ----------------------------------------------------------------------------

// ---- Objections ----------------------------------------------------------------------------

pub(super) fn not_found(message: &str) -> Error {
    Error::new(Kind::NotFound, "not_found", message)
}
