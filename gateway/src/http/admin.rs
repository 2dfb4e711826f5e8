//! The operators' own domain on the admin port: principals, keys, the audit export and trace,
//! notifications, configuration reload and the metrics page.
//!
//! Every endpoint asks for `Authorization: Bearer <operator token>` (from
//! `KAIFANG_ADMIN_TOKEN`, or generated into `<data-dir>/admin.token`). Changes take effect on
//! the next data request: the key and agreement caches are dropped after each one.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use policy::{ApplicationStatus, DatasetId, ObjectionStatus, Principal, Role};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

use super::request::Params;
use super::response::{self, json, Body, ErrorBody, ErrorDetail};
use crate::audit::{self, Recipient};
use crate::auth;
use crate::error::{Error, Kind};
use crate::state::State;
use crate::store::{KeyRecord, Notification, StoreError};

/// `GET /metrics`: the gauges of the catalog's freshness and the workflows are set first.
pub(super) async fn metrics(state: &Arc<State>) -> Response<Body> {
    let live = state.live();
    let listed = live.catalog.listed().map(|e| &e.dataset);
    state.metrics.freshness(listed, chrono::Utc::now());
    let counting = state.clone();
    match tokio::task::spawn_blocking(move || count_for_metrics(&counting)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "workflow gauges not updated"),
        Err(e) => tracing::warn!(error = %e, "workflow gauge task failed"),
    }
    let mut response = Response::new(super::response::full(state.metrics.render()));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// `POST /admin/reload`: the configuration is read again; with an error in it, nothing changes.
pub(super) async fn reload(state: &Arc<State>) -> Result<Response<Body>, Error> {
    match state.reload().await {
        Ok(reloaded) => Ok(json(StatusCode::OK, &reloaded)),
        Err(errors) => Ok(json(
            StatusCode::UNPROCESSABLE_ENTITY,
            &ErrorBody {
                error: ErrorDetail {
                    code: "invalid_config".into(),
                    message: "the configuration has errors; nothing was changed and the running one goes on".into(),
                    position: None,
                    errors: Some(errors),
                },
            },
        )),
    }
}

/// `GET /admin/audit`: the audit records that match, as stored (NDJSON).
pub(super) async fn audit_export(state: &Arc<State>, q: &AuditQuery) -> Result<Response<Body>, Error> {
    let mut body = Vec::new();
    for (line, record) in read_audit(state).await? {
        if audit::matches(
            &record,
            q.dataset.as_deref(),
            q.principal.as_deref(),
            q.agreement.as_deref(),
            q.since,
            q.until,
        ) {
            body.extend_from_slice(line.as_bytes());
            body.push(b'\n');
        }
    }
    let mut response = Response::new(super::response::full(body));
    response
        .headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/x-ndjson"));
    Ok(response)
}

/// The filters of the audit export and trace.
pub(super) struct AuditQuery {
    dataset: Option<String>,
    principal: Option<String>,
    agreement: Option<String>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
}

impl AuditQuery {
    pub(super) fn parse(params: &Params) -> Result<AuditQuery, Error> {
        Ok(AuditQuery {
            dataset: params.given("dataset").map(str::to_owned),
            principal: params.given("principal").map(str::to_owned),
            agreement: params.given("agreement").map(str::to_owned),
            since: params.time("since")?,
            until: params.time("until")?,
        })
    }
}

/// Every audit record with its stored line, read off the runtime.
/// Every audit record, of every instance in a cluster.
async fn read_audit(state: &State) -> Result<Vec<(String, audit::Record)>, Error> {
    let dir = crate::state::audit_dir(&state.config.data_dir);
    let cluster = state.config.cluster.as_ref().map(|c| c.store.clone());
    tokio::task::spawn_blocking(move || match cluster {
        Some(url) => audit::postgres::read_lines(&url),
        None => audit::segments::read_lines(&dir),
    })
    .await
    .map_err(|e| Error::internal(format!("audit read task failed: {e}")))?
    .map_err(|e| Error::new(Kind::Unavailable, "audit_unavailable", e))
}

/// `GET /admin/report?from=&to=&format=&owner=`: the operation report over the days `from` to
/// `to` (the platform's time zone), as JSON (the default), HTML or PDF.
pub(super) async fn operation_report(state: &Arc<State>, params: &Params) -> Result<Response<Body>, Error> {
    use crate::operation::{self, AuditSource, Format, Inputs, Period};
    let day = |name: &str| -> Result<chrono::NaiveDate, Error> {
        let text = params
            .given(name)
            .ok_or_else(|| Error::bad_request("bad_parameter", format!("`{name}` is required: a day, YYYY-MM-DD")))?;
        text.parse()
            .map_err(|_| Error::bad_request("bad_parameter", format!("`{name}`: `{text}` is not a day, YYYY-MM-DD")))
    };
    let period = Period::new(day("from")?, day("to")?).map_err(|e| Error::bad_request("bad_parameter", e))?;
    let format = match params.given("format") {
        None => Format::Json,
        Some(text) => Format::parse(text).ok_or_else(|| {
            Error::bad_request("bad_parameter", format!("`format`: `{text}` is not json, html or pdf"))
        })?,
    };
    let owner = params.given("owner").map(str::to_owned);
    let state = state.clone();
    let built = tokio::task::spawn_blocking(move || {
        let live = state.live();
        let inputs = Inputs {
            catalog: &live.catalog,
            store: state.store.as_ref(),
            calendar: &live.calendar,
            offset: crate::state::platform_offset(&state.config),
            now: state.clock.now(),
            audit: AuditSource::of(&state.config),
            progress: &|_, _| {},
        };
        let report = operation::build(&inputs, period, owner.as_deref())?;
        format.encode(&report)
    })
    .await
    .map_err(|e| Error::internal(format!("report task failed: {e}")))?;
    let body = built.map_err(|e| Error::new(Kind::Unavailable, "report_failed", e))?;
    let mut answer = Response::new(response::full(Bytes::from(body)));
    answer.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(format.media_type()));
    Ok(answer)
}

pub(super) fn authorize<B>(state: &State, req: &Request<B>) -> Result<(), Error> {
    let presented = auth::presented_key(req.headers()).unwrap_or_default();
    if bool::from(presented.as_bytes().ct_eq(state.admin_token.as_bytes())) {
        Ok(())
    } else {
        Err(Error::new(
            Kind::Unauthenticated,
            "operator_token_required",
            "the admin API needs `Authorization: Bearer <operator token>`",
        ))
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PrincipalRequest {
    id: String,
    name: String,
    role: Role,
    department: Option<String>,
}

pub(super) async fn create_principal(state: &Arc<State>, body: PrincipalRequest) -> Result<Response<Body>, Error> {
    if body.id.parse::<DatasetId>().is_err() {
        return Err(Error::bad_request(
            "bad_body",
            "id: 1 to 64 characters of a-z, 0-9, '-' or '_', starting with a letter or digit",
        ));
    }
    if body.role == Role::Owner && body.department.as_deref().is_none_or(str::is_empty) {
        return Err(Error::bad_request("bad_body", "department: an owner names the department it acts for"));
    }
    let principal = Principal { id: body.id, name: body.name, role: body.role, department: body.department };
    let stored = principal.clone();
    state
        .store_call(move |s| {
            if s.principal(&stored.id)?.is_some() {
                return Err(StoreError::Conflict(format!("principal `{}` already exists", stored.id)));
            }
            s.put_principal(&stored, false)
        })
        .await?;
    Ok(json(StatusCode::CREATED, &principal))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyRequest {
    principal: String,
}

pub(super) async fn issue_key(state: &Arc<State>, body: KeyRequest) -> Result<Response<Body>, Error> {
    let principal = body.principal;
    let issued = state.store_call(move |s| auth::issue(s, &principal)).await?;
    Ok(json(
        StatusCode::CREATED,
        &IssuedKey {
            id: issued.record.id,
            principal: issued.record.principal,
            created_at: issued.record.created_at,
            key: issued.key,
        },
    ))
}

/// `GET /admin/keys`: every key's record (never the key itself).
pub(super) async fn keys(state: &Arc<State>) -> Result<Response<Body>, Error> {
    let keys = state.store_call(|s| s.keys()).await?;
    Ok(json(StatusCode::OK, &KeyList { keys }))
}

/// `DELETE /admin/keys/{id}`: refused from the next request on.
pub(super) async fn revoke_key(state: &Arc<State>, id: &str) -> Result<Response<Body>, Error> {
    let (id, at) = (id.to_owned(), Utc::now());
    let revoked = id.clone();
    state.store_call(move |s| s.revoke_key(&revoked, at)).await?;
    state.keys.invalidate();
    Ok(json(StatusCode::OK, &KeyRevoked { id, revoked_at: at }))
}

/// `GET /admin/datasets/{id}/trace`: who received the dataset in the period.
pub(super) async fn trace(state: &Arc<State>, id: &str, query: &AuditQuery) -> Result<Response<Body>, Error> {
    let dataset = id.to_owned();
    let (since, until) = (query.since, query.until);
    let records = read_audit(state).await?;
    let recipients = audit::trace(records.iter().map(|(_, r)| r), &dataset, since, until);
    Ok(json(StatusCode::OK, &Trace { dataset, since, until, recipients }))
}

#[derive(Serialize, ToSchema)]
pub struct IssuedKey {
    pub id: String,
    pub principal: String,
    pub created_at: DateTime<Utc>,
    /// The key itself: shown this once, stored only as its hash.
    pub key: String,
}

#[derive(Serialize, ToSchema)]
pub struct KeyList {
    pub keys: Vec<KeyRecord>,
}

#[derive(Serialize, ToSchema)]
pub struct KeyRevoked {
    pub id: String,
    pub revoked_at: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
pub struct NotificationList {
    pub notifications: Vec<Notification>,
}

/// Who received a dataset in a period.
#[derive(Serialize, ToSchema)]
pub struct Trace {
    pub dataset: String,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub recipients: Vec<Recipient>,
}

/// Sets the workflow gauges from the store, at each scrape.
pub fn count_for_metrics(state: &State) -> Result<(), StoreError> {
    let applications = state.store.applications()?;
    let today = state.today();
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
