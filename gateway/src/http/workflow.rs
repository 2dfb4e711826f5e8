//! The platform's workflows, on the data port for owners and users (by their keys' principals)
//! and on the admin port for the operators (by the operator token): catalog drafts and
//! publication, withdrawal and reopening, applications and their decisions, agreements'
//! suspension and revocation, objections.
//!
//! Each action asks the rules ([`policy::authorize`]) whether the actor may do it, before it reads
//! the body or changes the store, so a call by the wrong role is a 403 that changes nothing, and a
//! record the actor may not know of answers exactly as a missing one.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use policy::{
    authorize, Action, Actor, Agreement, AgreementAction, AgreementStatus, Application, ApplicationStatus, DatasetId,
    DatasetTerms, Denial, Field, Format, Mask, Objection, ObjectionStatus, OpenType, Principal, Quota, Rate, Resource,
    TransitionError, UpdateFrequency,
};
use serde::Deserialize;
use serde_json::json;

use super::admin::{blocking, read_json};
use super::api;
use super::response::{json, Body};
use crate::call;
use crate::config::{DatasetConfig, SourceConfig};
use crate::error::{Error, Kind};
use crate::notify;
use crate::state::State;
use crate::store::{EntryRecord, StoreError, Withdrawal};

/// Longest free text (purpose, reasons, descriptions) the workflows take.
const MAX_TEXT_CHARS: usize = 4000;

fn wrong_role(message: impl Into<String>) -> Error {
    Error::new(Kind::Forbidden, "wrong_role", message)
}

/// Asks the rules whether `actor` may do `action` on `resource`; a record the actor may not know
/// of is answered as `missing`.
fn permitted(actor: &Actor, action: Action, resource: Resource<'_>, missing: &str) -> Result<(), Error> {
    match authorize(actor, action, resource) {
        Ok(_) => Ok(()),
        Err(Denial::Hidden) => Err(not_found(missing)),
        Err(Denial::WrongRole(reason)) => Err(wrong_role(reason)),
    }
}

/// Whether the rules let `actor` do `action` on `resource`.
fn allows(actor: &Actor, action: Action, resource: Resource<'_>) -> bool {
    authorize(actor, action, resource).is_ok()
}

/// The department owning `dataset`, withdrawn or not; `None` once it is not in the catalog.
fn owner_of(state: &State, dataset: &DatasetId) -> Option<String> {
    state.live().catalog.get(dataset).map(|e| e.dataset.owner.clone())
}

fn key_required() -> Error {
    Error::new(Kind::Unauthenticated, "key_required", "this workflow needs your API key")
}

/// The principal behind the key a data-port request presents; `None` without a key.
pub async fn principal(state: &Arc<State>, headers: &hyper::HeaderMap) -> Result<Option<Principal>, Error> {
    match state.keys.caller(headers).await? {
        policy::Caller::Anonymous => Ok(None),
        policy::Caller::Key { principal, .. } => {
            let found = blocking(state, move |s| s.principal(&principal)).await?;
            found
                .map(Some)
                .ok_or_else(|| Error::new(Kind::Unauthenticated, "unknown_key", "the key's principal is gone"))
        }
    }
}

/// The actor behind a data-port request; 401 without a key.
pub async fn actor(state: &Arc<State>, headers: &hyper::HeaderMap) -> Result<Actor, Error> {
    principal(state, headers).await?.map(Actor::Principal).ok_or_else(key_required)
}

/// Today on the workflows' clock, in the platform's time zone (the one daily quotas count in).
pub fn today(state: &State) -> NaiveDate {
    local_date(state, state.clock.now())
}

fn local_date(state: &State, at: DateTime<Utc>) -> NaiveDate {
    at.with_timezone(&crate::state::platform_offset(&state.config)).date_naive()
}

fn text(field: &str, value: &str) -> Result<String, Error> {
    let value = value.trim();
    if value.is_empty() || value.chars().count() > MAX_TEXT_CHARS {
        return Err(Error::bad_request("bad_body", format!("{field}: 1 to {MAX_TEXT_CHARS} characters")));
    }
    Ok(value.to_owned())
}

fn transition(e: TransitionError) -> Error {
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

/// A catalog entry as an owner writes it; the id is the URL's and `last_updated` is set on
/// publication.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DraftRequest {
    title: String,
    #[serde(default)]
    description: String,
    /// The owning department; an owner's is its own and may be left out.
    owner: Option<String>,
    open_type: OpenType,
    format: Format,
    update_frequency: UpdateFrequency,
    license: String,
    #[serde(default)]
    keywords: Vec<String>,
    source: SourceConfig,
    fields: Vec<Field>,
}

/// `PUT /v1/datasets/{id}/draft`: writes the owner's draft of an entry (new, or a change to a
/// published one); it is served only once the operators publish it.
pub async fn put_draft(
    state: &Arc<State>,
    actor: Actor,
    id: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, Error> {
    let id: DatasetId =
        id.parse().map_err(|e: policy::catalog::InvalidDatasetId| Error::bad_request("bad_id", e.to_string()))?;
    permitted(&actor, Action::WriteDraft, Resource::Workflow, "")?;
    let department = actor.department().map(str::to_owned);
    // A dataset the caller may not see (non-open, another department's) and a draft of another
    // department answer exactly as an unknown id would, so ids and owners cannot be probed. The
    // owner of a catalog entry may always draft its change; a stranger's draft of the same id
    // gives way to it.
    let live = state.live();
    let existing = live.catalog.get(&id).map(|e| &e.dataset);
    let writes = |owner: &str| allows(&actor, Action::WriteDraft, Resource::Dataset { owner: Some(owner) });
    let owns_entry = existing.is_some_and(|d| writes(&d.owner));
    if let Some(dataset) = existing.filter(|d| policy::known(d)) {
        permitted(&actor, Action::WriteDraft, Resource::Dataset { owner: Some(&dataset.owner) }, "")?;
    }
    let draft_id = id.to_string();
    if let Some(draft) = blocking(state, move |s| s.draft(&draft_id)).await? {
        if !writes(&draft.entry.owner) && !owns_entry {
            return Err(Error::new(
                Kind::Conflict,
                "id_taken",
                format!("`{id}` cannot be drafted now; choose another id or ask the operators"),
            ));
        }
    }
    let body: DraftRequest = read_json(req).await?;
    let owner = match (department, body.owner) {
        (Some(own), Some(given)) if own != given => {
            return Err(wrong_role(format!("you act for {own}, not {given}")));
        }
        (Some(own), _) => own,
        (None, Some(given)) if !given.trim().is_empty() => given,
        (None, _) => return Err(Error::bad_request("bad_body", "owner: name the owning department")),
    };
    let entry = DatasetConfig {
        id: id.clone(),
        title: text("title", &body.title)?,
        description: body.description,
        owner,
        open_type: body.open_type,
        format: body.format,
        update_frequency: body.update_frequency,
        last_updated: Utc::now(),
        license: text("license", &body.license)?,
        keywords: body.keywords,
        source: body.source,
        fields: body.fields,
        cache: Default::default(),
        index: Vec::new(),
    };
    let problems = crate::config::entry_problems(&entry);
    if !problems.is_empty() {
        return Err(Error::bad_request("bad_entry", problems.join("; ")));
    }
    draft_source(state, &entry, Kind::BadRequest)?;
    let mut record = EntryRecord { entry, by: actor.id().to_owned(), at: Utc::now(), version: 0 };
    let stored = record.clone();
    record.version = blocking(state, move |s| s.put_draft(&stored)).await?;
    Ok(json(StatusCode::OK, &draft_view(&record)))
}

/// Whether a draft's source is one drafts may have ([`crate::config::SourcesConfig`]): a file
/// inside its department's folder, links followed (a file not there yet passes until the
/// draft is published), or a URL on an allowed origin. Refused with `kind`: 400 when the draft
/// is written, 409 when it is published.
fn draft_source(state: &State, entry: &DatasetConfig, kind: Kind) -> Result<(), Error> {
    let refused = |message: String| Error::new(kind, "source_not_allowed", message);
    let sources = &state.config.sources;
    match &entry.source {
        SourceConfig::File(path) => {
            let Some(folder) = sources.departments.get(&entry.owner) else {
                return Err(refused(format!(
                    "source.file: {} has no folder for the files of its drafts ([sources] departments); ask the operators",
                    entry.owner
                )));
            };
            if !path.starts_with(folder) {
                return Err(refused(format!(
                    "source.file: `{}` is not in {}'s folder `{}`",
                    path.display(),
                    entry.owner,
                    folder.display()
                )));
            }
            let data_dir = &state.config.data_dir;
            let file = match std::fs::canonicalize(data_dir.join(path)) {
                Ok(file) => file,
                Err(_) if kind == Kind::BadRequest => return Ok(()),
                Err(_) => {
                    return Err(Error::new(
                        Kind::Conflict,
                        "source_missing",
                        format!("the draft's file `{}` is not in the data directory", path.display()),
                    ))
                }
            };
            let root = std::fs::canonicalize(data_dir.join(folder)).ok();
            if !root.is_some_and(|root| file.starts_with(root)) || !file.is_file() {
                return Err(refused(format!(
                    "source.file: `{}` leads outside {}'s folder `{}` (links are followed), or is not a file",
                    path.display(),
                    entry.owner,
                    folder.display()
                )));
            }
            Ok(())
        }
        SourceConfig::Url(url) => {
            let uri: hyper::Uri = url.parse().map_err(|_| refused(format!("source.url: `{url}` is not a URL")))?;
            let host = uri.host().unwrap_or("").trim_start_matches('[').trim_end_matches(']');
            let port = uri.port_u16().unwrap_or(if uri.scheme_str() == Some("https") { 443 } else { 80 });
            let allowed = sources.allowed_origins.iter().any(|o| {
                let o = o.to_ascii_lowercase();
                o == host.to_ascii_lowercase() || o == format!("{}:{port}", host.to_ascii_lowercase())
            });
            if allowed {
                Ok(())
            } else {
                Err(refused(format!(
                    "source.url: `{host}:{port}` is not an origin drafts may name ([sources] allowed_origins)"
                )))
            }
        }
    }
}

fn draft_view(record: &EntryRecord) -> api::DraftView {
    api::DraftView {
        status: "draft".into(),
        draft_version: record.version,
        entry: record.entry.clone(),
        written_by: record.by.clone(),
        written_at: record.at,
    }
}

/// `GET /v1/datasets/{id}/draft`.
pub async fn get_draft(state: &Arc<State>, actor: Actor, id: &str) -> Result<Response<Body>, Error> {
    let wanted = id.to_owned();
    // Another department's draft reads exactly like none.
    let draft = blocking(state, move |s| s.draft(&wanted))
        .await?
        .filter(|d| allows(&actor, Action::ReadDraft, Resource::Dataset { owner: Some(&d.entry.owner) }))
        .ok_or_else(|| not_found("no draft of this dataset"))?;
    Ok(json(StatusCode::OK, &draft_view(&draft)))
}

/// `GET /admin/drafts`: every draft waiting for review.
pub async fn drafts(state: &Arc<State>, actor: &Actor) -> Result<Response<Body>, Error> {
    permitted(actor, Action::ReadDraft, Resource::Workflow, "")?;
    let drafts = blocking(state, |s| s.drafts()).await?;
    Ok(json(StatusCode::OK, &api::DraftList { drafts: drafts.iter().map(draft_view).collect() }))
}

/// `POST /admin/datasets/{id}/publish`: the operators' review passed; the draft is served from
/// the next request, with its version one more and `last_updated` now.
pub async fn publish(
    state: &Arc<State>,
    actor: &Actor,
    id: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, Error> {
    permitted(actor, Action::Publish, Resource::Workflow, "")?;
    let wanted = id.to_owned();
    let draft =
        blocking(state, move |s| s.draft(&wanted)).await?.ok_or_else(|| not_found("no draft of this dataset"))?;
    let body: PublishRequest = read_json(req).await?;
    if draft.version != body.draft_version {
        return Err(draft_changed(id, draft.version, body.draft_version));
    }
    if let Some(existing) = state.live().catalog.get(&draft.entry.id) {
        if existing.dataset.owner != draft.entry.owner {
            return Err(Error::new(
                Kind::Conflict,
                "id_taken",
                format!(
                    "`{id}` is a dataset of {}; the draft of {} cannot replace it",
                    existing.dataset.owner, draft.entry.owner
                ),
            ));
        }
    }
    draft_source(state, &draft.entry, Kind::Conflict)?;
    let version = state.live().catalog.get(&draft.entry.id).map_or(0, |e| e.version) + 1;
    let id = id.to_owned();
    let reviewed = body.draft_version;
    let published = blocking(state, move |s| s.publish(&id, "operator", Utc::now(), version, reviewed)).await?;
    state.refresh_catalog().await?;
    tracing::info!(dataset = %published.entry.id, version, "catalog entry published");
    Ok(json(
        StatusCode::OK,
        &api::Published {
            id: published.entry.id.clone(),
            status: "published".into(),
            version: published.version,
            last_updated: published.entry.last_updated,
            entry: published.entry,
        },
    ))
}

/// The review a publication rests on.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    /// The revision of the draft that was reviewed (`draft_version` in the draft): publication
    /// fails with 409 if the draft changed since.
    draft_version: u64,
}

fn draft_changed(id: &str, now: u64, reviewed: u64) -> Error {
    Error::new(
        Kind::Conflict,
        "draft_changed",
        format!("the draft of `{id}` is at revision {now}, not {reviewed}: it changed after it was reviewed; review it again"),
    )
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonRequest {
    /// Required.
    #[serde(default)]
    #[schema(required = true, min_length = 1, max_length = 4000)]
    reason: String,
}

/// `POST .../datasets/{id}/withdraw`: stops serving the dataset at once, in-flight answers
/// included; its recipients are in the trace report.
pub async fn withdraw(
    state: &Arc<State>,
    actor: Actor,
    id: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, Error> {
    let owner = call::lookup_any(&state.live(), id)?.dataset.owner.clone();
    permitted(&actor, Action::Withdraw, Resource::Dataset { owner: Some(&owner) }, "")?;
    let body: ReasonRequest = read_json(req).await?;
    let reason = text("reason", &body.reason).map_err(|_| {
        Error::bad_request(
            "reason_required",
            format!("reason: say why it is withdrawn, in 1 to {MAX_TEXT_CHARS} characters"),
        )
    })?;
    let withdrawal = Withdrawal {
        dataset: id.to_owned(),
        withdrawn_at: Utc::now(),
        withdrawn_by: actor.id().to_owned(),
        reason,
        reopened_at: None,
        reopened_by: None,
    };
    let stored = withdrawal.clone();
    blocking(state, move |s| s.withdraw(&stored)).await?;
    state.refresh_catalog().await?;
    tracing::warn!(dataset = id, by = %withdrawal.withdrawn_by, reason = %withdrawal.reason, "dataset withdrawn");
    Ok(json(StatusCode::OK, &api::WithdrawalView { withdrawal, trace: format!("/admin/datasets/{id}/trace") }))
}

/// `POST .../datasets/{id}/reopen`: serves a withdrawn dataset again.
pub async fn reopen(state: &Arc<State>, actor: Actor, id: &str) -> Result<Response<Body>, Error> {
    let owner = call::lookup_any(&state.live(), id)?.dataset.owner.clone();
    permitted(&actor, Action::Reopen, Resource::Dataset { owner: Some(&owner) }, "")?;
    let (dataset, by) = (id.to_owned(), actor.id().to_owned());
    let reopened = blocking(state, move |s| s.reopen(&dataset, &by, Utc::now())).await?;
    state.refresh_catalog().await?;
    tracing::info!(dataset = id, "dataset reopened");
    Ok(json(StatusCode::OK, &reopened))
}

/// Open objections by dataset, for the catalog's metadata.
pub async fn open_objections(state: &Arc<State>) -> Result<HashMap<String, u64>, Error> {
    let objections = blocking(state, |s| s.objections()).await?;
    let mut counts = HashMap::new();
    for o in objections.iter().filter(|o| o.status == ObjectionStatus::Open) {
        *counts.entry(o.dataset.to_string()).or_insert(0) += 1;
    }
    Ok(counts)
}

// ---- Applications --------------------------------------------------------------------------

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplicationRequest {
    /// A conditionally open dataset.
    #[schema(example = "enterprises")]
    dataset: String,
    /// What the data is for.
    #[schema(min_length = 1, max_length = 4000)]
    purpose: String,
    /// Where and how it will be used.
    #[schema(min_length = 1, max_length = 4000)]
    scenario: String,
    /// How it will be kept safe.
    #[schema(min_length = 1, max_length = 4000)]
    security_measures: String,
    /// The fields wanted.
    #[schema(min_items = 1, example = json!(["name", "district"]))]
    columns: Vec<String>,
}

/// An application as the API shows it: the record, and whether it is overdue today.
fn application_view(state: &State, a: &Application) -> api::ApplicationView {
    api::ApplicationView { application: a.clone(), overdue: a.overdue(today(state)) }
}

/// `POST /v1/applications`: a user applies for a conditionally open dataset.
pub async fn apply(state: &Arc<State>, actor: Actor, req: Request<Incoming>) -> Result<Response<Body>, Error> {
    permitted(&actor, Action::Apply, Resource::Workflow, "")?;
    let Actor::Principal(applicant) = actor else { unreachable!("the rules let only users apply") };
    let body: ApplicationRequest = read_json(req).await?;
    let live = state.live();
    let entry = call::lookup(&live, &body.dataset)?;
    if entry.dataset.open_type != OpenType::Conditional {
        return Err(Error::bad_request(
            "not_conditional",
            format!("`{}` is open to everyone without an application", entry.dataset.id),
        ));
    }
    if body.columns.is_empty() {
        return Err(Error::bad_request("bad_body", "columns: name the columns you need"));
    }
    if let Some(unknown) = body.columns.iter().find(|c| entry.dataset.field(c).is_none()) {
        return Err(Error::bad_request("bad_body", format!("columns: `{unknown}` is not a field of this dataset")));
    }
    let submitted_at = state.clock.now();
    let due = Application::due_date(&live.calendar, local_date(state, submitted_at)).map_err(|e| {
        Error::new(
            Kind::Unavailable,
            "calendar_not_covered",
            format!("the working-day calendar cannot set a due date ({e}); the operators must add the year's schedule"),
        )
    })?;
    let application = Application {
        id: new_id("ap"),
        applicant: applicant.id.clone(),
        dataset: entry.dataset.id.clone(),
        purpose: text("purpose", &body.purpose)?,
        scenario: text("scenario", &body.scenario)?,
        security_measures: text("security_measures", &body.security_measures)?,
        columns: body.columns,
        status: ApplicationStatus::Submitted,
        submitted_at,
        due_by: due.date,
        due_by_provisional: due.is_provisional(),
        due_by_provisional_years: due.provisional_years,
        decided_at: None,
        decided_by: None,
        reason: None,
        agreement: None,
        reminded: false,
    };
    let (stored, owner, st) = (application.clone(), entry.dataset.owner.clone(), state.clone());
    blocking(state, move |s| {
        s.put_application(&stored)?;
        notify::enqueue(
            &st,
            &owner,
            "application_submitted",
            json!({ "application": stored.id, "dataset": stored.dataset, "applicant": stored.applicant,
                    "due_by": stored.due_by, "due_by_provisional": stored.due_by_provisional }),
        )
    })
    .await?;
    Ok(json(StatusCode::CREATED, &application_view(state, &application)))
}

/// An application as the rules see it: its applicant and its dataset's owner.
fn as_resource<'a>(a: &'a Application, owner: &'a Option<String>) -> Resource<'a> {
    Resource::Application { applicant: &a.applicant, owner: owner.as_deref() }
}

/// Whether the actor may see an application: its applicant, its dataset's owner, the operators.
fn sees_application(state: &State, actor: &Actor, a: &Application) -> bool {
    allows(actor, Action::ReadApplication, as_resource(a, &owner_of(state, &a.dataset)))
}

async fn load_objection(state: &Arc<State>, id: &str) -> Result<Objection, Error> {
    let id = id.to_owned();
    blocking(state, move |s| s.objection(&id)).await?.ok_or_else(|| not_found("no objection with this id"))
}

async fn load_application(state: &Arc<State>, id: &str) -> Result<Application, Error> {
    let id = id.to_owned();
    blocking(state, move |s| s.application(&id)).await?.ok_or_else(|| not_found("no application with this id"))
}

/// `GET /v1/applications/{id}`: to anyone but its applicant and its dataset's owner, an
/// application reads exactly like one that does not exist.
pub async fn application(state: &Arc<State>, actor: Actor, id: &str) -> Result<Response<Body>, Error> {
    let a = load_application(state, id).await?;
    if !sees_application(state, &actor, &a) {
        return Err(not_found("no application with this id"));
    }
    Ok(json(StatusCode::OK, &application_view(state, &a)))
}

/// `GET /v1/applications?status=`: a user's own, an owner's datasets', or (operators) all.
pub async fn applications(state: &Arc<State>, actor: Actor, status: Option<&str>) -> Result<Response<Body>, Error> {
    let status = match status {
        None | Some("") => None,
        Some(s) => Some(ApplicationStatus::ALL.into_iter().find(|a| a.as_str() == s).ok_or_else(|| {
            Error::bad_request("bad_parameter", format!("`status` is submitted, approved or rejected, not `{s}`"))
        })?),
    };
    let all = blocking(state, |s| s.applications()).await?;
    let applications = all
        .iter()
        .filter(|a| status.is_none_or(|s| a.status == s))
        .filter(|a| sees_application(state, &actor, a))
        .map(|a| application_view(state, a))
        .collect();
    Ok(json(StatusCode::OK, &api::ApplicationList { applications }))
}

/// The terms an owner approves an application with; the columns default to those applied for.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproveRequest {
    columns: Option<Vec<String>>,
    row_filter: Option<String>,
    #[serde(default)]
    #[schema(value_type = std::collections::BTreeMap<String, String>)]
    masks: std::collections::BTreeMap<String, Mask>,
    valid_from: Option<DateTime<Utc>>,
    valid_until: DateTime<Utc>,
    rate: Rate,
    quota: Quota,
}

/// The application an owner (or the operators) decides. Users never decide, whatever the id; to
/// another department's owner, an application reads exactly like one that does not exist.
async fn decider(state: &Arc<State>, actor: &Actor, id: &str) -> Result<Application, Error> {
    permitted(actor, Action::Decide, Resource::Workflow, "")?;
    let a = load_application(state, id).await?;
    permitted(actor, Action::Decide, as_resource(&a, &owner_of(state, &a.dataset)), "no application with this id")?;
    Ok(a)
}

/// `POST /v1/applications/{id}/approve`: makes the agreement, which the applicant's key uses
/// from its next request.
pub async fn approve(
    state: &Arc<State>,
    actor: Actor,
    id: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, Error> {
    let mut application = decider(state, &actor, id).await?;
    application.pending().map_err(transition)?;
    let before = application.clone();
    let terms: ApproveRequest = read_json(req).await?;
    let now = Utc::now();
    let agreement = Agreement {
        id: new_id("ag"),
        principal: application.applicant.clone(),
        purpose: application.purpose.clone(),
        datasets: vec![DatasetTerms {
            dataset: application.dataset.clone(),
            columns: terms.columns.unwrap_or_else(|| application.columns.clone()),
            row_filter: terms.row_filter,
            masks: terms.masks,
        }],
        valid_from: terms.valid_from.unwrap_or(now),
        valid_until: terms.valid_until,
        status: AgreementStatus::Active,
        rate: terms.rate,
        quota: terms.quota,
    };
    checked_terms(state, &agreement)?;
    application.approve(actor.id(), state.clock.now(), agreement.id.clone()).map_err(transition)?;
    let (after, ag) = (application.clone(), agreement.clone());
    blocking(state, move |s| s.decide_application(&before, &after, Some(&ag))).await?;
    state.keys.invalidate();
    tracing::info!(application = %application.id, agreement = %agreement.id, "application approved");
    Ok(json(StatusCode::OK, &api::Approval { application: application_view(state, &application), agreement }))
}

/// `POST /v1/applications/{id}/reject`: a reason is required.
pub async fn reject(
    state: &Arc<State>,
    actor: Actor,
    id: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, Error> {
    let mut application = decider(state, &actor, id).await?;
    application.pending().map_err(transition)?;
    let body: ReasonRequest = read_json(req).await?;
    if body.reason.chars().count() > MAX_TEXT_CHARS {
        return Err(Error::bad_request("bad_body", format!("reason: at most {MAX_TEXT_CHARS} characters")));
    }
    let before = application.clone();
    application.reject(actor.id(), state.clock.now(), &body.reason).map_err(transition)?;
    let after = application.clone();
    blocking(state, move |s| s.decide_application(&before, &after, None)).await?;
    Ok(json(StatusCode::OK, &application_view(state, &application)))
}

// ---- Agreements ----------------------------------------------------------------------------

/// `POST .../agreements/{id}/{suspend|resume|revoke}`: effective on the holder's next request
/// and on its answers in flight. Users never change agreements, whatever the id; an owner that
/// answers for none of an agreement's datasets finds it exactly as missing as an unknown id (as
/// `GET /v1/agreements/{id}` does).
pub async fn change_agreement(
    state: &Arc<State>,
    actor: Actor,
    id: &str,
    action: AgreementAction,
) -> Result<Response<Body>, Error> {
    permitted(&actor, Action::ChangeAgreement, Resource::Workflow, "")?;
    let wanted = id.to_owned();
    let agreement =
        blocking(state, move |s| s.agreement(&wanted)).await?.ok_or_else(|| not_found("no agreement with this id"))?;
    let owners = owners_of(state, &agreement);
    let owners: Vec<Option<&str>> = owners.iter().map(Option::as_deref).collect();
    let resource = Resource::Agreement { holder: &agreement.principal, owners: &owners };
    permitted(&actor, Action::ChangeAgreement, resource, "no agreement with this id")?;
    let status = action.after(agreement.status).map_err(transition)?;
    let id = id.to_owned();
    let changed = blocking(state, move |s| {
        s.set_agreement_status(&id, status)?;
        s.agreement(&id)
    })
    .await?
    .ok_or_else(|| not_found("no agreement with this id"))?;
    state.keys.invalidate();
    state.agreement_changed(&changed.id, status == AgreementStatus::Active);
    tracing::info!(agreement = %changed.id, status = ?status, by = %actor.id(), "agreement changed");
    Ok(json(StatusCode::OK, &changed))
}

/// The owning departments of the datasets an agreement covers.
fn owners_of(state: &State, agreement: &Agreement) -> Vec<Option<String>> {
    agreement.datasets.iter().map(|t| owner_of(state, &t.dataset)).collect()
}

/// The agreements the actor may read: a user's own, those on the datasets an owner acts for, all
/// of them for the operators.
pub async fn readable_agreements(state: &Arc<State>, actor: &Actor) -> Result<Vec<Agreement>, Error> {
    let all = blocking(state, |s| s.agreements()).await?;
    Ok(all
        .into_iter()
        .filter(|a| {
            let owners = owners_of(state, a);
            let owners: Vec<Option<&str>> = owners.iter().map(Option::as_deref).collect();
            allows(actor, Action::ReadAgreement, Resource::Agreement { holder: &a.principal, owners: &owners })
        })
        .collect())
}

// ---- Objections ----------------------------------------------------------------------------

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ObjectionRequest {
    /// What is wrong or missing.
    #[schema(min_length = 1, max_length = 4000)]
    description: String,
    /// How to reach the filer; required without a key.
    #[schema(max_length = 200)]
    contact: Option<String>,
}

/// `POST /v1/datasets/{id}/objections`: anyone flags an error or omission in a published
/// dataset; anonymous filers leave a contact.
pub async fn object(
    state: &Arc<State>,
    filer: Option<Principal>,
    dataset: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, Error> {
    let live = state.live();
    let entry = call::lookup(&live, dataset)?;
    let body: ObjectionRequest = read_json(req).await?;
    let description = text("description", &body.description)?;
    let contact = contact(body.contact.as_deref(), filer.is_none())?;
    let objection = Objection {
        id: new_id("ob"),
        dataset: entry.dataset.id.clone(),
        filed_at: Utc::now(),
        description,
        contact,
        principal: filer.map(|p| p.id),
        status: ObjectionStatus::Open,
        response: None,
        resolved_at: None,
        resolved_by: None,
    };
    let (stored, owner, st) = (objection.clone(), entry.dataset.owner.clone(), state.clone());
    blocking(state, move |s| {
        s.put_objection(&stored)?;
        notify::enqueue(
            &st,
            &owner,
            "objection_filed",
            json!({ "objection": stored.id, "dataset": stored.dataset, "description": stored.description }),
        )
    })
    .await?;
    Ok(json(StatusCode::CREATED, &objection))
}

/// An objection as `viewer` may see it ([`Objection::seen_by`]).
fn objection_view(state: &State, viewer: Option<&Actor>, o: &Objection) -> Objection {
    let owner = owner_of(state, &o.dataset);
    let filer_seen =
        viewer.is_some_and(|v| allows(v, Action::SeeObjectionFiler, Resource::Dataset { owner: owner.as_deref() }));
    o.seen_by(filer_seen, viewer.and_then(Actor::principal_id))
}

/// `GET /v1/objections/{id}`: anyone may follow an objection.
pub async fn objection(state: &Arc<State>, viewer: Option<Actor>, id: &str) -> Result<Response<Body>, Error> {
    let o = load_objection(state, id).await?;
    Ok(json(StatusCode::OK, &objection_view(state, viewer.as_ref(), &o)))
}

/// `GET /v1/objections?status=&dataset=`: the objections on an owner's datasets (all for
/// operators).
pub async fn objections(
    state: &Arc<State>,
    actor: Actor,
    status: Option<&str>,
    dataset: Option<&str>,
) -> Result<Response<Body>, Error> {
    permitted(&actor, Action::ListObjections, Resource::Workflow, "")?;
    let status =
        match status {
            None | Some("") => None,
            Some(s) => Some(ObjectionStatus::ALL.into_iter().find(|o| o.as_str() == s).ok_or_else(|| {
                Error::bad_request("bad_parameter", format!("`status` is open or resolved, not `{s}`"))
            })?),
        };
    let all = blocking(state, |s| s.objections()).await?;
    let objections = all
        .iter()
        .filter(|o| status.is_none_or(|s| o.status == s))
        .filter(|o| dataset.is_none_or(|d| d.is_empty() || o.dataset.as_str() == d))
        .filter(|o| {
            let owner = owner_of(state, &o.dataset);
            allows(&actor, Action::ListObjections, Resource::Dataset { owner: owner.as_deref() })
        })
        .map(|o| objection_view(state, Some(&actor), o))
        .collect();
    Ok(json(StatusCode::OK, &api::ObjectionList { objections }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveRequest {
    /// The owner's answer; required.
    #[serde(default)]
    #[schema(required = true, min_length = 1, max_length = 4000)]
    response: String,
}

/// `POST /v1/objections/{id}/resolve`: the owner answers and closes it.
pub async fn resolve(
    state: &Arc<State>,
    actor: Actor,
    id: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, Error> {
    let mut o = load_objection(state, id).await?;
    let owner = owner_of(state, &o.dataset);
    permitted(&actor, Action::Resolve, Resource::Dataset { owner: owner.as_deref() }, "no objection with this id")?;
    let body: ResolveRequest = read_json(req).await?;
    if body.response.chars().count() > MAX_TEXT_CHARS {
        return Err(Error::bad_request("bad_body", format!("response: at most {MAX_TEXT_CHARS} characters")));
    }
    o.resolve(actor.id(), Utc::now(), &body.response).map_err(transition)?;
    let stored = o.clone();
    blocking(state, move |s| s.put_objection(&stored)).await?;
    Ok(json(StatusCode::OK, &objection_view(state, Some(&actor), &o)))
}

/// Sets the workflow gauges from the store, at each scrape.
pub fn count_for_metrics(state: &State) -> Result<(), StoreError> {
    let applications = state.store.applications()?;
    let today = today(state);
    for status in ApplicationStatus::ALL {
        let n = applications.iter().filter(|a| a.status == status).count();
        state.metrics.applications.with_label_values(&[status.as_str()]).set(n as i64);
    }
    state.metrics.applications_overdue.set(applications.iter().filter(|a| a.overdue(today)).count() as i64);
    let provisional = applications.iter().filter(|a| a.status == ApplicationStatus::Submitted && a.due_by_provisional);
    state.metrics.applications_due_provisionally.set(provisional.count() as i64);
    let objections = state.store.objections()?;
    for status in ObjectionStatus::ALL {
        let n = objections.iter().filter(|o| o.status == status).count();
        state.metrics.objections.with_label_values(&[status.as_str()]).set(n as i64);
    }
    Ok(())
}

fn not_found(message: &str) -> Error {
    Error::new(Kind::NotFound, "not_found", message)
}
