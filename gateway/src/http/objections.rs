//! Objections: anyone flags an error or omission in a published dataset; its owner answers.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::Utc;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use policy::{Action, Actor, Objection, ObjectionStatus, Resource};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::request;
use super::response::{json, Body};
use super::workflow::{allows, contact, new_id, not_found, owner_of, permitted, text, transition, MAX_TEXT_CHARS};
use crate::call;
use crate::error::Error;
use crate::notify;
use crate::shared_read::SharedRead;
use crate::state::State;
use crate::store::{Store, StoreError};

#[derive(Serialize, ToSchema)]
pub struct ObjectionList {
    pub objections: Vec<Objection>,
}

/// Open objections by dataset.
pub type Counts = Arc<HashMap<String, u64>>;

/// Open objections by dataset, for the catalog's metadata.
pub async fn open_objections(state: &Arc<State>) -> Result<Counts, Error> {
    Ok(state.open_objections.counts(state.store.clone()).await?)
}

/// The open objections by dataset that the catalog shows, held in memory: read from the store
/// once after each change to objections (filed or resolved through this instance, or announced
/// by another one), not on every catalog call, and by one read however many calls want it at
/// once. A call that comes after a change has been committed sees it.
pub struct OpenObjections {
    /// Moved after every change to objections, once it is committed.
    changes: AtomicU64,
    /// The counts last read, with the value `changes` had before that read began.
    held: Mutex<Option<(u64, Counts)>>,
    reads: SharedRead<Counts>,
    /// `kaifang_cache_lookups_total`, by cache and result.
    lookups: prometheus::IntCounterVec,
}

impl OpenObjections {
    pub fn new(lookups: prometheus::IntCounterVec) -> OpenObjections {
        OpenObjections { changes: AtomicU64::new(0), held: Mutex::new(None), reads: SharedRead::default(), lookups }
    }

    /// An objection was filed or resolved (and committed): the next call reads the store.
    pub fn changed(&self) {
        self.changes.fetch_add(1, Ordering::AcqRel);
    }

    /// The counts, read from `store` when they may have changed since they were last read.
    pub async fn counts(&self, store: Arc<dyn Store>) -> Result<Counts, StoreError> {
        let seen = self.changes.load(Ordering::Acquire);
        if let Some((at, counts)) = self.held.lock().expect("never poisoned").as_ref() {
            if *at == seen {
                self.lookups.with_label_values(&["objections", "hit"]).inc();
                return Ok(counts.clone());
            }
        }
        self.lookups.with_label_values(&["objections", "miss"]).inc();
        // Started after this call came, so the read sees every change committed before `seen`.
        let counts = self.reads.read(move || open_counts(store.as_ref())).await?;
        let mut held = self.held.lock().expect("never poisoned");
        if held.as_ref().is_none_or(|(at, _)| *at <= seen) {
            *held = Some((seen, counts.clone()));
        }
        Ok(counts)
    }
}

fn open_counts(store: &dyn Store) -> Result<Counts, StoreError> {
    let mut counts = HashMap::new();
    for o in store.objections()?.into_iter().filter(|o| o.status == ObjectionStatus::Open) {
        *counts.entry(o.dataset.to_string()).or_insert(0) += 1;
    }
    Ok(Arc::new(counts))
}

#[derive(Deserialize, ToSchema)]
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
    client: IpAddr,
    dataset: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, Error> {
    let filer = request::principal(state, req.headers()).await?;
    // Rate limited like data calls, by key or address.
    let limit = match &filer {
        None => policy::Limit::Anonymous,
        Some(p) => policy::Limit::Key(p.id.clone()),
    };
    call::admit_under(state, &state.live().limits, &limit, client, "http").await?;
    let live = state.live();
    let entry = call::lookup(&live, dataset)?;
    let body: ObjectionRequest = request::read_json(req).await?;
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
    state
        .store_call(move |s| {
            // Told here, on the thread that writes, even if this call's client goes away.
            let put = s.put_objection(&stored);
            st.open_objections.changed();
            put?;
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

async fn load_objection(state: &Arc<State>, id: &str) -> Result<Objection, Error> {
    let id = id.to_owned();
    state.store_call(move |s| s.objection(&id)).await?.ok_or_else(|| not_found("no objection with this id"))
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
    let all = state.store_call(|s| s.objections()).await?;
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
    Ok(json(StatusCode::OK, &ObjectionList { objections }))
}

#[derive(Deserialize, ToSchema)]
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
    let body: ResolveRequest = request::read_json(req).await?;
    if body.response.chars().count() > MAX_TEXT_CHARS {
        return Err(Error::bad_request("bad_body", format!("response: at most {MAX_TEXT_CHARS} characters")));
    }
    o.resolve(actor.id(), Utc::now(), &body.response).map_err(transition)?;
    let stored = o.clone();
    let st = state.clone();
    state
        .store_call(move |s| {
            let put = s.put_objection(&stored);
            st.open_objections.changed();
            put
        })
        .await?;
    Ok(json(StatusCode::OK, &objection_view(state, Some(&actor), &o)))
}
