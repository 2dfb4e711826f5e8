//! Agreements: the operators make them directly, an approval makes them from an application;
//! holders read theirs and report how they used the data; owners and operators suspend, resume
//! and revoke them.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use policy::{
    Action, Actor, Agreement, AgreementAction, AgreementStatus, Caller, DatasetId, DatasetTerms, Mask, Quota, Rate,
    Resource,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::reports::{Receipt, MAX_REPORT_CHARS};
use super::request;
use super::response::{json, Body};
use super::workflow::{allows, checked_terms, new_id, not_found, owner_of, permitted, transition};
use crate::error::{Error, Kind};
use crate::state::State;
use crate::store::{Feedback, Usage};

#[derive(Serialize, ToSchema)]
pub struct AgreementList {
    pub agreements: Vec<AgreementView>,
}

/// An agreement with what has been used of its daily quotas today.
#[derive(Serialize, ToSchema)]
pub struct AgreementView {
    #[serde(flatten)]
    pub agreement: Agreement,
    /// The quota day, in the platform's time zone (`[limits] quota_utc_offset_hours`).
    #[schema(value_type = String, format = Date)]
    pub quota_day: chrono::NaiveDate,
    /// Requests, rows and bytes used today, against `quota`.
    pub used_today: Usage,
}

#[derive(Serialize, ToSchema)]
pub struct FeedbackList {
    pub feedback: Vec<Feedback>,
}

/// `GET /v1/agreements` and `GET /v1/agreements/{id}`: a user's own agreements, with their terms
/// and their status now (an active agreement past its end reads `expired`). Another principal's
/// agreement is not found, exactly like one that does not exist.
pub(super) async fn agreements(
    state: &Arc<State>,
    headers: &hyper::HeaderMap,
    id: Option<String>,
) -> Result<Response<Body>, Error> {
    let (principal, _) = holder(state, headers).await?;
    let principal = state
        .store_call(move |s| s.principal(&principal))
        .await?
        .ok_or_else(|| Error::new(Kind::Unauthenticated, "unknown_key", "the key's principal is gone"))?;
    // Users read their own; owners those on their datasets (policy::authorize).
    let held = readable_agreements(state, &Actor::Principal(principal)).await?;
    match id {
        None => Ok(json(StatusCode::OK, &AgreementList { agreements: shown(state, held).await? })),
        Some(id) => {
            let agreement = held.into_iter().find(|a| a.id == id).ok_or_else(no_agreement)?;
            let shown = shown(state, vec![agreement]).await?.pop().expect("one agreement in, one out");
            Ok(json(StatusCode::OK, &shown))
        }
    }
}

/// `agreements` as the API shows them: each with its status now (an active agreement past its
/// end reads `expired`) and what it has used today.
pub async fn shown(state: &Arc<State>, agreements: Vec<Agreement>) -> Result<Vec<AgreementView>, Error> {
    let now = Utc::now();
    let quota_day = state.limiter.day(now);
    futures_util::future::try_join_all(agreements.into_iter().map(|mut agreement| async move {
        agreement.status = agreement.status_at(now);
        let used_today = usage_today(state, &agreement.id, now).await?;
        Ok::<_, Error>(AgreementView { agreement, quota_day, used_today })
    }))
    .await
}

/// What agreement `id` has used today: across every instance in a cluster (the shared
/// limiter's count, with the rows and bytes this instance has not pushed to it yet); otherwise
/// as counted here, or as the store saved it when this instance has not counted it today.
async fn usage_today(state: &Arc<State>, id: &str, now: DateTime<Utc>) -> Result<Usage, Error> {
    let day = state.limiter.day(now).to_string();
    let here = state.limiter.usage_here(id, now);
    if let Some(shared) = &state.shared {
        // Unreachable, it says so in the metrics and the log; this instance's count is shown.
        if let Ok(used) = shared.usage(id, &day).await {
            let unpushed = here.map(|(_, unpushed)| unpushed).unwrap_or_default();
            return Ok(Usage {
                requests: used.requests,
                rows: used.rows + unpushed.rows,
                bytes: used.bytes + unpushed.bytes,
            });
        }
    }
    if let Some((usage, _)) = here {
        return Ok(usage);
    }
    let id = id.to_owned();
    state.store_call(move |s| s.usage(&id, &day)).await
}

/// The principal a key names and its agreements, as the key check loaded them (the cache is
/// dropped on every change to keys or agreements); 401 without a key.
async fn holder(state: &Arc<State>, headers: &hyper::HeaderMap) -> Result<(String, Arc<[Agreement]>), Error> {
    match state.keys.caller(headers).await? {
        Caller::Key { principal, agreements, .. } => Ok((principal, agreements)),
        Caller::Anonymous => {
            Err(Error::new(Kind::Unauthenticated, "key_required", "agreements are their holder's: send your API key"))
        }
    }
}

/// Another principal's agreement reads exactly like one that does not exist.
fn no_agreement() -> Error {
    Error::new(Kind::NotFound, "not_found", "no agreement with this id")
}

/// `POST /v1/agreements/{id}/feedback`: the holder's account of how it used the data
/// (`{"usage": "..."}`), kept with the agreement for its owner and the operators.
pub(super) async fn feedback(state: &Arc<State>, req: Request<Incoming>, id: String) -> Result<Response<Body>, Error> {
    let (principal, held) = holder(state, req.headers()).await?;
    if !held.iter().any(|a| a.id == id) {
        return Err(no_agreement());
    }
    let body: FeedbackRequest = request::read_json(req).await?;
    let usage = body.usage.trim().to_owned();
    if usage.is_empty() || usage.chars().count() > MAX_REPORT_CHARS {
        return Err(Error::bad_request(
            "bad_body",
            format!("usage: say how the data was used, in 1 to {MAX_REPORT_CHARS} characters"),
        ));
    }
    let feedback =
        Feedback { id: uuid::Uuid::new_v4().to_string(), agreement: id, principal, received_at: Utc::now(), usage };
    let stored = feedback.clone();
    state.store_call(move |s| s.insert_feedback(&stored)).await?;
    Ok(json(StatusCode::CREATED, &Receipt { id: feedback.id, received_at: feedback.received_at }))
}

/// A holder's account of its use of the data.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeedbackRequest {
    /// How the data was used.
    #[schema(min_length = 1, max_length = 10000)]
    usage: String,
}

/// Agreement terms as posted: one dataset's scope inline (`dataset`, `columns`, `row_filter`,
/// `masks`), or several under `datasets`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgreementRequest {
    principal: String,
    #[serde(default)]
    purpose: String,
    dataset: Option<DatasetId>,
    columns: Option<Vec<String>>,
    row_filter: Option<String>,
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, String>)]
    masks: BTreeMap<String, Mask>,
    datasets: Option<Vec<DatasetTerms>>,
    valid_from: Option<DateTime<Utc>>,
    valid_until: DateTime<Utc>,
    rate: Rate,
    quota: Quota,
}

pub(super) async fn create_agreement(state: &Arc<State>, body: AgreementRequest) -> Result<Response<Body>, Error> {
    let datasets = match (body.datasets, body.dataset) {
        (Some(datasets), None) if body.columns.is_none() && body.row_filter.is_none() && body.masks.is_empty() => {
            datasets
        }
        (None, Some(dataset)) => vec![DatasetTerms {
            dataset,
            columns: body.columns.ok_or_else(|| Error::bad_request("bad_body", "columns: required with `dataset`"))?,
            row_filter: body.row_filter,
            masks: body.masks,
        }],
        _ => {
            return Err(Error::bad_request(
                "bad_body",
                "give one dataset's terms (`dataset`, `columns`, `row_filter`, `masks`) or a `datasets` list, not both",
            ))
        }
    };
    let agreement = Agreement {
        id: new_id("ag"),
        principal: body.principal,
        purpose: body.purpose,
        datasets,
        valid_from: body.valid_from.unwrap_or_else(Utc::now),
        valid_until: body.valid_until,
        status: AgreementStatus::Active,
        rate: body.rate,
        quota: body.quota,
    };
    checked_terms(state, &agreement)?;
    let stored = agreement.clone();
    state.store_call(move |s| s.put_agreement(&stored, false)).await?;
    state.keys.invalidate();
    Ok(json(StatusCode::CREATED, &agreement))
}

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
        state.store_call(move |s| s.agreement(&wanted)).await?.ok_or_else(|| not_found("no agreement with this id"))?;
    let owners = owners_of(state, &agreement);
    let owners: Vec<Option<&str>> = owners.iter().map(Option::as_deref).collect();
    let resource = Resource::Agreement { holder: &agreement.principal, owners: &owners };
    permitted(&actor, Action::ChangeAgreement, resource, "no agreement with this id")?;
    let status = action.after(agreement.status).map_err(transition)?;
    let id = id.to_owned();
    let changed = state
        .store_call(move |s| {
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
    let all = state.store_call(|s| s.agreements()).await?;
    Ok(all
        .into_iter()
        .filter(|a| {
            let owners = owners_of(state, a);
            let owners: Vec<Option<&str>> = owners.iter().map(Option::as_deref).collect();
            allows(actor, Action::ReadAgreement, Resource::Agreement { holder: &a.principal, owners: &owners })
        })
        .collect())
}
