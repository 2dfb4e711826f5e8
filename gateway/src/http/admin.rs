//! The admin API, on its own listener: principals, keys and agreements for operators.
//!
//! Every endpoint asks for `Authorization: Bearer <operator token>` (from
//! `KAIFANG_ADMIN_TOKEN`, or generated into `<data-dir>/admin.token`). Changes take effect on
//! the next data request: the key and agreement caches are dropped after each one.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use policy::{Agreement, AgreementStatus, DatasetId, DatasetTerms, Mask, Principal, Quota, Rate, Role};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use subtle::ConstantTimeEq;

use super::api;
use super::response::{json, Body};
use super::workflow;
use crate::audit;
use crate::auth;
use crate::error::{Error, Kind};
use crate::state::State;
use crate::store::{Store, StoreError};
use policy::Actor;
use policy::AgreementAction;

/// Largest request body the admin API reads.
const MAX_BODY_BYTES: usize = 1 << 20;

pub async fn route(state: &Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, Error> {
    // Metrics need no token: the admin listener is the operators' network only.
    if req.method() == Method::GET && req.uri().path() == "/metrics" {
        let live = state.live();
        let listed = live.catalog.listed().map(|e| &e.dataset);
        state.metrics.freshness(listed, chrono::Utc::now());
        let counting = state.clone();
        match tokio::task::spawn_blocking(move || workflow::count_for_metrics(&counting)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "workflow gauges not updated"),
            Err(e) => tracing::warn!(error = %e, "workflow gauge task failed"),
        }
        let mut response = Response::new(super::response::full(state.metrics.render()));
        response.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        return Ok(response);
    }
    authorize(state, &req)?;
    let path: Vec<String> = req.uri().path().trim_start_matches('/').split('/').map(str::to_owned).collect();
    let path: Vec<&str> = path.iter().map(String::as_str).collect();
    let method = req.method().clone();
    match (&method, path.as_slice()) {
        (&Method::POST, ["admin", "reload"]) => match state.reload().await {
            Ok(reloaded) => Ok(json(StatusCode::OK, &reloaded)),
            Err(errors) => Ok(json(
                StatusCode::UNPROCESSABLE_ENTITY,
                &api::ErrorBody {
                    error: api::ErrorDetail {
                        code: "invalid_config".into(),
                        message: "the configuration has errors; nothing was changed and the running one goes on".into(),
                        position: None,
                        errors: Some(errors),
                    },
                },
            )),
        },
        (&Method::GET, ["admin", "agreements", id, "feedback"]) => {
            let id = id.to_string();
            let feedback = blocking(state, move |s| s.feedback(&id)).await?;
            Ok(json(StatusCode::OK, &api::FeedbackList { feedback }))
        }
        (&Method::GET, ["admin", "reports"]) => {
            let reports = blocking(state, |s| s.reports()).await?;
            Ok(json(StatusCode::OK, &api::ReportList { reports }))
        }
        (&Method::POST, ["admin", "principals"]) => {
            let body: PrincipalRequest = read_json(req).await?;
            create_principal(state, body).await
        }
        (&Method::POST, ["admin", "keys"]) => {
            let body: KeyRequest = read_json(req).await?;
            issue_key(state, body.principal).await
        }
        (&Method::GET, ["admin", "keys"]) => {
            let keys = blocking(state, |s| s.keys()).await?;
            Ok(json(StatusCode::OK, &api::KeyList { keys }))
        }
        (&Method::DELETE, ["admin", "keys", id]) => {
            let id = id.to_string();
            let at = Utc::now();
            blocking(state, move |s| s.revoke_key(&id, at)).await?;
            state.keys.invalidate();
            Ok(json(StatusCode::OK, &api::KeyRevoked { id: path[2].to_owned(), revoked_at: at }))
        }
        (&Method::POST, ["admin", "agreements"]) => {
            let body: AgreementRequest = read_json(req).await?;
            create_agreement(state, body).await
        }
        (&Method::GET, ["admin", "agreements"]) => {
            let agreements = blocking(state, |s| s.agreements()).await?;
            Ok(json(StatusCode::OK, &api::AgreementList { agreements }))
        }
        (&Method::GET, ["admin", "agreements", id]) => {
            let id = id.to_string();
            let agreement = blocking(state, move |s| s.agreement(&id)).await?;
            agreement.map(|a| json(StatusCode::OK, &a)).ok_or_else(|| not_found(&format!("no agreement `{}`", path[2])))
        }
        (&Method::POST, ["admin", "agreements", id, action]) if AgreementAction::parse(action).is_some() => {
            let action = AgreementAction::parse(action).expect("checked by the guard");
            workflow::change_agreement(state, Actor::Operator, id, action).await
        }
        (&Method::GET, ["admin", "drafts"]) => workflow::drafts(state, &Actor::Operator).await,
        (&Method::GET, ["admin", "openapi.json"]) => {
            let mut r = Response::new(super::response::full(api::admin_document()));
            r.headers_mut()
                .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
            Ok(r)
        }
        (&Method::POST, ["admin", "datasets", id, "publish"]) => {
            workflow::publish(state, &Actor::Operator, id, req).await
        }
        (&Method::POST, ["admin", "datasets", id, "withdraw"]) => {
            let id = id.to_string();
            workflow::withdraw(state, Actor::Operator, &id, req).await
        }
        (&Method::POST, ["admin", "datasets", id, "reopen"]) => workflow::reopen(state, Actor::Operator, id).await,
        (&Method::GET, ["admin", "applications"]) => {
            let status = query_value(req.uri().query(), "status");
            workflow::applications(state, Actor::Operator, status.as_deref()).await
        }
        (&Method::GET, ["admin", "objections"]) => {
            let (status, dataset) =
                (query_value(req.uri().query(), "status"), query_value(req.uri().query(), "dataset"));
            workflow::objections(state, Actor::Operator, status.as_deref(), dataset.as_deref()).await
        }
        (&Method::GET, ["admin", "notifications"]) => {
            let notifications = blocking(state, |s| s.notifications()).await?;
            Ok(json(StatusCode::OK, &api::NotificationList { notifications }))
        }
        (&Method::GET, ["admin", "datasets", id, "trace"]) => {
            let query = AuditQuery::parse(req.uri().query())?;
            let dataset = id.to_string();
            let (since, until) = (query.since, query.until);
            let records = read_audit(state).await?;
            let recipients = audit::trace(records.iter().map(|(_, r)| r), &dataset, since, until);
            Ok(json(StatusCode::OK, &api::Trace { dataset, since, until, recipients }))
        }
        (&Method::GET, ["admin", "audit"]) => {
            let q = AuditQuery::parse(req.uri().query())?;
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
        _ => Err(Error::new(Kind::NotFound, "not_found", "no such admin endpoint")),
    }
}

/// The filters of the audit export and trace.
#[derive(Default)]
struct AuditQuery {
    dataset: Option<String>,
    principal: Option<String>,
    agreement: Option<String>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
}

impl AuditQuery {
    fn parse(query: Option<&str>) -> Result<AuditQuery, Error> {
        let mut q = AuditQuery::default();
        for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let time = |v: &str| {
                v.parse::<DateTime<Utc>>().map_err(|_| {
                    Error::bad_request("bad_parameter", format!("`{k}` takes an RFC 3339 time, not `{v}`"))
                })
            };
            match k.as_ref() {
                "dataset" => q.dataset = Some(v.into_owned()),
                "principal" => q.principal = Some(v.into_owned()),
                "agreement" => q.agreement = Some(v.into_owned()),
                "since" => q.since = Some(time(&v)?),
                "until" => q.until = Some(time(&v)?),
                other => {
                    return Err(Error::bad_request(
                        "unknown_parameter",
                        format!(
                        "unknown parameter `{other}`; this endpoint takes dataset, principal, agreement, since, until"
                    ),
                    ))
                }
            }
        }
        Ok(q)
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

fn authorize<B>(state: &State, req: &Request<B>) -> Result<(), Error> {
    let presented = auth::presented_key(req.headers()).unwrap_or("");
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

/// One query parameter's value, percent-decoded.
fn query_value(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

fn not_found(message: &str) -> Error {
    Error::new(Kind::NotFound, "not_found", message)
}

/// Runs a store call off the runtime, mapping store errors to API errors.
pub(super) async fn blocking<T: Send + 'static>(
    state: &Arc<State>,
    f: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Error> {
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || f(store.as_ref()))
        .await
        .map_err(|e| Error::internal(format!("store task failed: {e}")))?
        .map_err(|e| match e {
            StoreError::NotFound(m) => not_found(&m),
            StoreError::Conflict(m) => Error::new(Kind::Conflict, "conflict", m),
            StoreError::Backend(m) => Error::new(Kind::Unavailable, "store_unavailable", m),
        })
}

/// Reads a JSON body of at most [`MAX_BODY_BYTES`], naming the field of any error.
pub(super) async fn read_json<T: DeserializeOwned>(req: Request<Incoming>) -> Result<T, Error> {
    let bytes = Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|e| Error::bad_request("bad_body", format!("cannot read the body: {e}")))?
        .to_bytes();
    let mut de = serde_json::Deserializer::from_slice(&bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." { String::new() } else { format!("{path}: ") };
        Error::bad_request("bad_body", format!("{at}{}", e.inner()))
    })
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PrincipalRequest {
    id: String,
    name: String,
    role: Role,
    department: Option<String>,
}

async fn create_principal(state: &Arc<State>, body: PrincipalRequest) -> Result<Response<Body>, Error> {
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
    blocking(state, move |s| {
        if s.principal(&stored.id)?.is_some() {
            return Err(StoreError::Conflict(format!("principal `{}` already exists", stored.id)));
        }
        s.put_principal(&stored, false)
    })
    .await?;
    Ok(json(StatusCode::CREATED, &principal))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct KeyRequest {
    principal: String,
}

async fn issue_key(state: &Arc<State>, principal: String) -> Result<Response<Body>, Error> {
    let issued = blocking(state, move |s| auth::issue(s, &principal)).await?;
    Ok(json(
        StatusCode::CREATED,
        &api::IssuedKey {
            id: issued.record.id,
            principal: issued.record.principal,
            created_at: issued.record.created_at,
            key: issued.key,
        },
    ))
}

/// Agreement terms as posted: one dataset's scope inline (`dataset`, `columns`, `row_filter`,
/// `masks`), or several under `datasets`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AgreementRequest {
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

async fn create_agreement(state: &Arc<State>, body: AgreementRequest) -> Result<Response<Body>, Error> {
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
        id: workflow::new_id("ag"),
        principal: body.principal,
        purpose: body.purpose,
        datasets,
        valid_from: body.valid_from.unwrap_or_else(Utc::now),
        valid_until: body.valid_until,
        status: AgreementStatus::Active,
        rate: body.rate,
        quota: body.quota,
    };
    workflow::checked_terms(state, &agreement)?;
    let stored = agreement.clone();
    blocking(state, move |s| s.put_agreement(&stored, false)).await?;
    state.keys.invalidate();
    Ok(json(StatusCode::CREATED, &agreement))
}
