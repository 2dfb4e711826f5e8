//! Applications for conditionally open data: a user applies with purpose, scenario and security
//! measures; the dataset's owner approves (making the agreement) or rejects with a reason, by the
//! due date the working-day calendar sets.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use policy::{
    Action, Actor, Agreement, AgreementStatus, Application, ApplicationStatus, DatasetTerms, Mask, OpenType, Quota,
    Rate, Resource,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::request;
use super::response::{json, Body};
use super::workflow::{
    allows, checked_terms, new_id, not_found, owner_of, permitted, text, transition, ReasonRequest, MAX_TEXT_CHARS,
};
use crate::call;
use crate::error::{Error, Kind};
use crate::notify;
use crate::state::State;

/// An application, and whether its owner has let the due day pass.
#[derive(Serialize, ToSchema)]
pub struct ApplicationView {
    #[serde(flatten)]
    pub application: Application,
    pub overdue: bool,
}

#[derive(Serialize, ToSchema)]
pub struct ApplicationList {
    pub applications: Vec<ApplicationView>,
}

/// An approval: the application and the agreement made from it.
#[derive(Serialize, ToSchema)]
pub struct Approval {
    pub application: ApplicationView,
    pub agreement: Agreement,
}

#[derive(Deserialize, ToSchema)]
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
fn application_view(state: &State, a: &Application) -> ApplicationView {
    ApplicationView { application: a.clone(), overdue: a.overdue(state.today()) }
}

/// `POST /v1/applications`: a user applies for a conditionally open dataset.
pub async fn apply(state: &Arc<State>, actor: Actor, req: Request<Incoming>) -> Result<Response<Body>, Error> {
    permitted(&actor, Action::Apply, Resource::Workflow, "")?;
    let Actor::Principal(applicant) = actor else { unreachable!("the rules let only users apply") };
    let body: ApplicationRequest = request::read_json(req).await?;
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
    let due = Application::due_date(&live.calendar, state.local_date(submitted_at)).map_err(|e| {
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
    state
        .store_call(move |s| {
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

async fn load_application(state: &Arc<State>, id: &str) -> Result<Application, Error> {
    let id = id.to_owned();
    state.store_call(move |s| s.application(&id)).await?.ok_or_else(|| not_found("no application with this id"))
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
    let all = state.store_call(|s| s.applications()).await?;
    let applications = all
        .iter()
        .filter(|a| status.is_none_or(|s| a.status == s))
        .filter(|a| sees_application(state, &actor, a))
        .map(|a| application_view(state, a))
        .collect();
    Ok(json(StatusCode::OK, &ApplicationList { applications }))
}

/// The terms an owner approves an application with; the columns default to those applied for.
#[derive(Deserialize, ToSchema)]
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

/// The application an owner (or the operators) decides, still waiting for its decision. Users
/// never decide, whatever the id; to another department's owner, an application reads exactly
/// like one that does not exist.
async fn undecided(state: &Arc<State>, actor: &Actor, id: &str) -> Result<Application, Error> {
    permitted(actor, Action::Decide, Resource::Workflow, "")?;
    let a = load_application(state, id).await?;
    permitted(actor, Action::Decide, as_resource(&a, &owner_of(state, &a.dataset)), "no application with this id")?;
    a.pending().map_err(transition)?;
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
    let mut application = undecided(state, &actor, id).await?;
    let before = application.clone();
    let terms: ApproveRequest = request::read_json(req).await?;
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
    state.store_call(move |s| s.decide_application(&before, &after, Some(&ag))).await?;
    state.keys.invalidate();
    tracing::info!(application = %application.id, agreement = %agreement.id, "application approved");
    Ok(json(StatusCode::OK, &Approval { application: application_view(state, &application), agreement }))
}

/// `POST /v1/applications/{id}/reject`: a reason is required.
pub async fn reject(
    state: &Arc<State>,
    actor: Actor,
    id: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, Error> {
    let mut application = undecided(state, &actor, id).await?;
    let body: ReasonRequest = request::read_json(req).await?;
    if body.reason.chars().count() > MAX_TEXT_CHARS {
        return Err(Error::bad_request("bad_body", format!("reason: at most {MAX_TEXT_CHARS} characters")));
    }
    let before = application.clone();
    application.reject(actor.id(), state.clock.now(), &body.reason).map_err(transition)?;
    let after = application.clone();
    state.store_call(move |s| s.decide_application(&before, &after, None)).await?;
    Ok(json(StatusCode::OK, &application_view(state, &application)))
}
