//! The data port's router: each path to its domain's handler, after the method and the query
//! parameters it takes are checked.

use std::net::IpAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use policy::{Actor, AgreementAction};

use super::request::{self, allow, no_route, Params};
use super::response::{self, json, Body};
use super::{admin, agreements, applications, catalog, cors, data, drafts, health, objections, portal, reports};
use crate::error::{Error, Kind};
use crate::state::State;

const GET: &str = "GET, HEAD";

/// The last segment of a data call's path: its operation, or `rows` with a format's suffix.
const DATA_CALLS: [&str; 7] = ["rows", "preview", "download", "rows.csv", "rows.json", "rows.ndjson", "rows.arrow"];
const POST: &str = "POST";

/// Whether `path` is a data call's (rows, preview, download of one dataset).
pub fn is_data_call(path: &str) -> bool {
    let segments = request::segments(path);
    matches!(segments.as_slice(), [v1, datasets, _, operation] if v1 == "v1" && datasets == "datasets" && DATA_CALLS.contains(&operation.as_str()))
}

/// Matches a data-port request to its handler.
pub async fn data(
    state: &Arc<State>,
    req: Request<Incoming>,
    client: IpAddr,
    request_id: &str,
) -> Result<Response<Body>, Error> {
    let path = request::segments(req.uri().path());
    let path: Vec<&str> = path.iter().map(String::as_str).collect();
    // A data call checks its method and parameters inside the call lifecycle, so that a refusal
    // of a call on conditional data is recorded too.
    if let ["v1", "datasets", id, operation] = path.as_slice() {
        if DATA_CALLS.contains(operation) {
            return data::call(state, req, client, request_id, id, operation).await;
        }
    }
    // The portal's pages read their query strings in the browser.
    if portal::is_page(&path) {
        allow(req.method(), GET)?;
        return portal::page(state, &path, req.headers());
    }
    let params = Params::parse(req.uri().query())?;
    let method = req.method().clone();
    let actor = || request::actor(state, req.headers());
    match path.as_slice() {
        ["healthz"] => {
            allow(&method, GET)?;
            Ok(json(StatusCode::OK, &health::Health { status: "ok".into() }))
        }
        ["readyz"] => {
            allow(&method, GET)?;
            Ok(health::readyz(state).await)
        }
        ["openapi.json"] => {
            allow(&method, GET)?;
            let mut r = Response::new(response::full(super::api::data_document()));
            r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            Ok(r)
        }
        ["v1", "catalog"] => {
            allow(&method, GET)?;
            catalog::catalog(state, &params).await
        }
        ["v1", "datasets", id] => {
            allow(&method, GET)?;
            params.only(&[])?;
            catalog::dataset(state, req.headers(), id).await
        }
        ["v1", "datasets", id, "draft"] => {
            allow(&method, "GET, HEAD, PUT")?;
            params.only(&[])?;
            let actor = actor().await?;
            match method {
                Method::PUT => drafts::put_draft(state, actor, id, req).await,
                _ => drafts::get_draft(state, actor, id).await,
            }
        }
        ["v1", "datasets", id, "objections"] => {
            allow(&method, POST)?;
            params.only(&[])?;
            objections::object(state, client, id, req).await
        }
        ["v1", "datasets", id, "withdraw"] => {
            allow(&method, POST)?;
            params.only(&[])?;
            catalog::withdraw(state, actor().await?, id, req).await
        }
        ["v1", "datasets", id, "reopen"] => {
            allow(&method, POST)?;
            params.only(&[])?;
            catalog::reopen(state, actor().await?, id).await
        }
        ["v1", "datasets", id, "publish"] => {
            allow(&method, POST)?;
            params.only(&[])?;
            drafts::publish(state, &actor().await?, id, req).await
        }
        ["v1", "drafts"] => {
            allow(&method, GET)?;
            params.only(&[])?;
            drafts::drafts(state, &actor().await?).await
        }
        ["v1", "withdrawals"] => {
            allow(&method, GET)?;
            params.only(&[])?;
            catalog::withdrawals(state, actor().await?).await
        }
        ["v1", "me"] => {
            allow(&method, GET)?;
            params.only(&[])?;
            match actor().await? {
                policy::Actor::Principal(principal) => Ok(json(StatusCode::OK, &principal)),
                policy::Actor::Operator => Err(super::request::no_route()),
            }
        }
        ["v1", "applications"] => {
            allow(&method, "GET, HEAD, POST")?;
            let actor = actor().await?;
            if method == Method::POST {
                params.only(&[])?;
                applications::apply(state, actor, req).await
            } else {
                let status = params.only(&["status"])?.given("status");
                applications::applications(state, actor, status).await
            }
        }
        ["v1", "applications", id] => {
            allow(&method, GET)?;
            params.only(&[])?;
            applications::application(state, actor().await?, id).await
        }
        ["v1", "applications", id, "approve"] => {
            allow(&method, POST)?;
            params.only(&[])?;
            applications::approve(state, actor().await?, id, req).await
        }
        ["v1", "applications", id, "reject"] => {
            allow(&method, POST)?;
            params.only(&[])?;
            applications::reject(state, actor().await?, id, req).await
        }
        ["v1", "objections"] => {
            allow(&method, GET)?;
            params.only(&["status", "dataset"])?;
            objections::objections(state, actor().await?, params.given("status"), params.given("dataset")).await
        }
        ["v1", "objections", id] => {
            allow(&method, GET)?;
            params.only(&[])?;
            let viewer = request::principal(state, req.headers()).await?.map(policy::Actor::Principal);
            objections::objection(state, viewer, id).await
        }
        ["v1", "objections", id, "resolve"] => {
            allow(&method, POST)?;
            params.only(&[])?;
            objections::resolve(state, actor().await?, id, req).await
        }
        ["v1", "agreements"] => {
            allow(&method, GET)?;
            params.only(&[])?;
            agreements::agreements(state, req.headers(), None).await
        }
        ["v1", "agreements", id] => {
            allow(&method, GET)?;
            params.only(&[])?;
            agreements::agreements(state, req.headers(), Some(id.to_string())).await
        }
        ["v1", "agreements", id, "feedback"] => {
            allow(&method, POST)?;
            params.only(&[])?;
            agreements::feedback(state, req, id.to_string()).await
        }
        ["v1", "agreements", id, action] if AgreementAction::parse(action).is_some() => {
            allow(&method, POST)?;
            params.only(&[])?;
            let action = AgreementAction::parse(action).expect("checked by the guard");
            agreements::change_agreement(state, actor().await?, id, action).await
        }
        ["v1", "reports"] => {
            allow(&method, POST)?;
            params.only(&[])?;
            reports::report(state, req, client).await
        }
        _ => Err(no_route()),
    }
}

/// Answers `OPTIONS` on the data port: a CORS preflight ([`cors::preflight`]) or a plain
/// `OPTIONS`, 204 with `Allow`, for the methods the path takes. Every route refuses `OPTIONS`
/// with its `Allow` before it does anything else, so the router itself says which methods a path
/// takes; a data call's are known without starting it (which would record a refusal).
pub async fn options(
    state: &Arc<State>,
    req: Request<Incoming>,
    client: IpAddr,
    request_id: &str,
) -> Result<Response<Body>, Error> {
    let preflight = cors::is_preflight(req.method(), req.headers());
    let origin = cors::origin(req.headers());
    let path = request::segments(req.uri().path());
    let methods = match path.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["v1", "datasets", _, operation] if DATA_CALLS.contains(operation) => GET.to_owned(),
        _ => match data(state, req, client, request_id).await {
            Err(e) if e.kind == Kind::MethodNotAllowed => {
                e.headers.iter().find(|(name, _)| *name == "allow").map_or_else(|| GET.to_owned(), |(_, v)| v.clone())
            }
            Err(e) => return Err(e),
            Ok(_) => return Err(Error::internal("a route answered OPTIONS")),
        },
    };
    if preflight {
        return Ok(cors::preflight(&state.config.http.cors, origin.as_ref(), &methods));
    }
    let mut answer = Response::new(response::full(bytes::Bytes::new()));
    *answer.status_mut() = StatusCode::NO_CONTENT;
    let allow = HeaderValue::from_str(&format!("{methods}, OPTIONS")).expect("methods are ASCII");
    answer.headers_mut().insert(hyper::header::ALLOW, allow);
    Ok(answer)
}

/// Matches an admin-port request to its handler; every endpoint but `/metrics` takes the
/// operator token.
pub async fn admin(state: &Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, Error> {
    let path = request::segments(req.uri().path());
    let path: Vec<&str> = path.iter().map(String::as_str).collect();
    let method = req.method().clone();
    // Metrics need no token: the admin listener is the operators' network only.
    if path == ["metrics"] {
        allow(&method, GET)?;
        return Ok(admin::metrics(state).await);
    }
    admin::authorize(state, &req)?;
    let params = Params::parse(req.uri().query())?;
    let operator = Actor::Operator;
    match path.as_slice() {
        ["admin", "reload"] => {
            allow(&method, POST)?;
            params.only(&[])?;
            admin::reload(state).await
        }
        ["admin", "openapi.json"] => {
            allow(&method, GET)?;
            params.only(&[])?;
            let mut r = Response::new(response::full(super::api::admin_document()));
            r.headers_mut()
                .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
            Ok(r)
        }
        ["admin", "principals"] => {
            allow(&method, POST)?;
            params.only(&[])?;
            admin::create_principal(state, request::read_json(req).await?).await
        }
        ["admin", "keys"] => {
            allow(&method, "GET, HEAD, POST")?;
            params.only(&[])?;
            if method == Method::POST {
                admin::issue_key(state, request::read_json(req).await?).await
            } else {
                admin::keys(state).await
            }
        }
        ["admin", "keys", id] => {
            allow(&method, "DELETE")?;
            params.only(&[])?;
            admin::revoke_key(state, id).await
        }
        ["admin", "agreements"] => {
            allow(&method, "GET, HEAD, POST")?;
            params.only(&[])?;
            if method == Method::POST {
                agreements::create_agreement(state, request::read_json(req).await?).await
            } else {
                let all = state.store_call(|s| s.agreements()).await?;
                Ok(json(
                    StatusCode::OK,
                    &agreements::AgreementList { agreements: agreements::shown(state, all).await? },
                ))
            }
        }
        ["admin", "agreements", id] => {
            allow(&method, GET)?;
            params.only(&[])?;
            let wanted = id.to_string();
            let agreement = state.store_call(move |s| s.agreement(&wanted)).await?;
            agreement
                .map(|a| json(StatusCode::OK, &a))
                .ok_or_else(|| Error::new(Kind::NotFound, "not_found", format!("no agreement `{id}`")))
        }
        ["admin", "agreements", id, "feedback"] => {
            allow(&method, GET)?;
            params.only(&[])?;
            let id = id.to_string();
            let feedback = state.store_call(move |s| s.feedback(&id)).await?;
            Ok(json(StatusCode::OK, &agreements::FeedbackList { feedback }))
        }
        ["admin", "agreements", id, action] if AgreementAction::parse(action).is_some() => {
            allow(&method, POST)?;
            params.only(&[])?;
            let action = AgreementAction::parse(action).expect("checked by the guard");
            agreements::change_agreement(state, operator, id, action).await
        }
        ["admin", "drafts"] => {
            allow(&method, GET)?;
            params.only(&[])?;
            drafts::drafts(state, &operator).await
        }
        ["admin", "datasets", id, "publish"] => {
            allow(&method, POST)?;
            params.only(&[])?;
            drafts::publish(state, &operator, id, req).await
        }
        ["admin", "datasets", id, "withdraw"] => {
            allow(&method, POST)?;
            params.only(&[])?;
            catalog::withdraw(state, operator, id, req).await
        }
        ["admin", "datasets", id, "reopen"] => {
            allow(&method, POST)?;
            params.only(&[])?;
            catalog::reopen(state, operator, id).await
        }
        ["admin", "datasets", id, "trace"] => {
            allow(&method, GET)?;
            admin::trace(state, id, &admin::AuditQuery::parse(params.only(&["since", "until"])?)?).await
        }
        ["admin", "report"] => {
            allow(&method, GET)?;
            admin::operation_report(state, params.only(&["from", "to", "format", "owner"])?).await
        }
        ["admin", "audit"] => {
            allow(&method, GET)?;
            let q = admin::AuditQuery::parse(params.only(&["dataset", "principal", "agreement", "since", "until"])?)?;
            admin::audit_export(state, &q).await
        }
        ["admin", "applications"] => {
            allow(&method, GET)?;
            let status = params.only(&["status"])?.given("status");
            applications::applications(state, operator, status).await
        }
        ["admin", "objections"] => {
            allow(&method, GET)?;
            params.only(&["status", "dataset"])?;
            objections::objections(state, operator, params.given("status"), params.given("dataset")).await
        }
        ["admin", "notifications"] => {
            allow(&method, GET)?;
            params.only(&[])?;
            let notifications = state.store_call(|s| s.notifications()).await?;
            Ok(json(StatusCode::OK, &admin::NotificationList { notifications }))
        }
        ["admin", "reports"] => {
            allow(&method, GET)?;
            params.only(&[])?;
            let reports = state.store_call(|s| s.reports()).await?;
            Ok(json(StatusCode::OK, &reports::ReportList { reports }))
        }
        _ => Err(Error::new(Kind::NotFound, "not_found", "no such admin endpoint")),
    }
}
