//! Misuse reports: anyone reports misuse of public data; the operators read them.

use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use policy::Caller;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::request;
use super::response::{json, Body};
use super::workflow::contact;
use crate::call;
use crate::error::Error;
use crate::state::State;
use crate::store::Report;

/// What was filed, and when.
#[derive(Serialize, ToSchema)]
pub struct Receipt {
    pub id: String,
    pub received_at: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
pub struct ReportList {
    pub reports: Vec<Report>,
}

/// Longest misuse report taken, in characters.
pub(super) const MAX_REPORT_CHARS: usize = 10_000;

/// A misuse report as filed.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportRequest {
    /// The dataset concerned, if one.
    dataset: Option<String>,
    /// What was misused and how.
    #[schema(min_length = 1, max_length = 10000)]
    description: String,
    /// How to reach the reporter; required without a key.
    #[schema(max_length = 200)]
    contact: Option<String>,
}

/// `POST /v1/reports`: anyone reports misuse of public data; the operators read the reports
/// on the admin API. Anonymous reporters must say how to reach them. Rate limited like data
/// calls, by address or key.
pub(super) async fn report(
    state: &Arc<State>,
    req: Request<Incoming>,
    client: IpAddr,
) -> Result<Response<Body>, Error> {
    let caller = state.keys.caller(req.headers()).await?;
    let (limit, principal) = match &caller {
        Caller::Anonymous => (policy::Limit::Anonymous, None),
        Caller::Key { key_id, principal, .. } => (policy::Limit::Key(key_id.clone()), Some(principal.clone())),
    };
    call::admit_under(state, &state.live().limits, &limit, client, "http").await?;
    let body: ReportRequest = request::read_json(req).await?;
    let description = body.description.trim().to_owned();
    if description.is_empty() || description.chars().count() > MAX_REPORT_CHARS {
        return Err(Error::bad_request(
            "bad_body",
            format!("description: say what was misused and how, in 1 to {MAX_REPORT_CHARS} characters"),
        ));
    }
    let contact = contact(body.contact.as_deref(), principal.is_none())?;
    let dataset = match body.dataset {
        Some(id) => Some(call::lookup(&state.live(), &id)?.dataset.id.to_string()),
        None => None,
    };
    let report = Report {
        id: uuid::Uuid::new_v4().to_string(),
        received_at: Utc::now(),
        dataset,
        description,
        contact,
        principal,
    };
    let stored = report.clone();
    state.store_call(move |s| s.insert_report(&stored)).await?;
    Ok(json(StatusCode::CREATED, &Receipt { id: report.id, received_at: report.received_at }))
}
