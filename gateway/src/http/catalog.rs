//! The public catalog: the listing, each dataset's page, and the withdrawal and reopening of a
//! dataset (which take it out of both at once, and put it back).

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use policy::{decide, Action, Actor, Caller, DatasetId, Field, Format, OpenType, Operation, Resource, UpdateFrequency};
use serde::Serialize;
use utoipa::ToSchema;

use super::objections;
use super::request::{self, Params};
use super::response::{json, Body};
use super::workflow::{permitted, text, ReasonRequest, MAX_TEXT_CHARS};
use crate::call;
use crate::error::Error;
use crate::source::arrow_schema;
use crate::state::{CatalogEntry, State};
use crate::store::Withdrawal;

/// Links from a catalog entry to its data.
#[derive(Serialize, ToSchema)]
pub struct DatasetLinks {
    #[serde(rename = "self")]
    pub this: String,
    pub rows: String,
    pub preview: String,
    pub download: String,
}

/// A catalog entry's metadata; the names follow DCAT where it has one (title, description,
/// publisher, keyword, modified, accrualPeriodicity, license).
#[derive(Serialize, ToSchema)]
pub struct DatasetSummary {
    pub id: DatasetId,
    pub title: String,
    pub description: String,
    /// The owning department.
    pub owner: String,
    pub open_type: OpenType,
    pub format: Format,
    pub update_frequency: UpdateFrequency,
    pub last_updated: DateTime<Utc>,
    /// Whether the last update is older than the declared frequency allows.
    pub stale: bool,
    /// The catalog version: one more on every publication.
    pub version: u64,
    /// Objections filed and not yet resolved.
    pub open_objections: u64,
    pub license: String,
    pub keywords: Vec<String>,
    pub links: DatasetLinks,
}

/// One column as Arrow types it.
#[derive(Serialize, ToSchema)]
pub struct SchemaField {
    pub name: String,
    pub arrow_type: String,
    pub nullable: bool,
}

/// One dataset: its metadata, and the fields and schema the caller would receive.
#[derive(Serialize, ToSchema)]
pub struct DatasetDescription {
    #[serde(flatten)]
    pub summary: DatasetSummary,
    pub fields: Vec<Field>,
    pub schema: Vec<SchemaField>,
    /// The media type of the original file.
    pub media_type: String,
}

#[derive(Serialize, ToSchema)]
pub struct CatalogPage {
    /// Matching entries on all pages.
    pub total: usize,
    pub page: usize,
    pub per_page: usize,
    /// For each filter, the values it can take and how many entries each would match with the
    /// other filters and the search as given.
    pub facets: Facets,
    pub datasets: Vec<DatasetSummary>,
}

/// A withdrawal, and where its trace report is.
/// The values of each catalog filter, with their counts.
#[derive(Serialize, ToSchema)]
pub struct Facets {
    pub owner: Vec<FacetValue>,
    pub open_type: Vec<FacetValue>,
    pub format: Vec<FacetValue>,
    pub update_frequency: Vec<FacetValue>,
}

#[derive(Serialize, ToSchema)]
pub struct FacetValue {
    /// The filter's value, as the parameter takes it.
    pub value: String,
    /// Entries it matches.
    pub count: usize,
}

/// The catalog listing's filters, as given.
struct Filters<'a> {
    owner: Option<&'a str>,
    open_type: Option<OpenType>,
    format: Option<Format>,
    update_frequency: Option<UpdateFrequency>,
    text: Option<&'a str>,
}

/// A filter of the listing, as a facet.
#[derive(Clone, Copy, PartialEq)]
enum Facet {
    Owner,
    OpenType,
    Format,
    UpdateFrequency,
}

impl Filters<'_> {
    /// Whether `entry` passes every filter but `except`'s.
    fn keep(&self, entry: &CatalogEntry, except: Option<Facet>) -> bool {
        let d = &entry.dataset;
        let given = |facet: Facet| except != Some(facet);
        (!given(Facet::Owner) || self.owner.is_none_or(|o| d.owner.eq_ignore_ascii_case(o)))
            && (!given(Facet::OpenType) || self.open_type.is_none_or(|t| d.open_type == t))
            && (!given(Facet::Format) || self.format.is_none_or(|f| d.format == f))
            && (!given(Facet::UpdateFrequency) || self.update_frequency.is_none_or(|f| d.update_frequency == f))
            && self.text.is_none_or(|q| d.matches_text(q))
    }

    /// Each facet's values over the entries the other filters keep, the commonest first.
    fn facets(&self, entries: &[&CatalogEntry]) -> Facets {
        let count = |facet: Facet, value: &dyn Fn(&policy::Dataset) -> String| {
            let mut counts: Vec<FacetValue> = Vec::new();
            for entry in entries.iter().filter(|e| self.keep(e, Some(facet))) {
                let value = value(&entry.dataset);
                match counts.iter_mut().find(|c| c.value == value) {
                    Some(c) => c.count += 1,
                    None => counts.push(FacetValue { value, count: 1 }),
                }
            }
            counts.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.value.cmp(&b.value)));
            counts
        };
        Facets {
            owner: count(Facet::Owner, &|d| d.owner.clone()),
            open_type: count(Facet::OpenType, &|d| name_of(&d.open_type)),
            format: count(Facet::Format, &|d| name_of(&d.format)),
            update_frequency: count(Facet::UpdateFrequency, &|d| name_of(&d.update_frequency)),
        }
    }
}

/// The name a unit enum variant has in JSON (and in the query parameters).
fn name_of(value: &impl Serialize) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// The query parameter `name` as one of an enum's names, if given.
fn enum_param<T: serde::de::DeserializeOwned>(params: &Params, name: &str, names: &str) -> Result<Option<T>, Error> {
    params
        .given(name)
        .map(|value| {
            serde_json::from_value(serde_json::Value::String(value.to_owned()))
                .map_err(|_| Error::bad_request("bad_parameter", format!("`{name}` is one of {names}, not `{value}`")))
        })
        .transpose()
}

#[derive(Serialize, ToSchema)]
pub struct WithdrawalView {
    #[serde(flatten)]
    pub withdrawal: Withdrawal,
    /// The admin API path of the report of who received the dataset.
    pub trace: String,
}

pub async fn catalog(state: &Arc<State>, params: &Params) -> Result<Response<Body>, Error> {
    params.only(&["owner", "open_type", "format", "update_frequency", "q", "page", "per_page"])?;
    let filters = Filters {
        owner: params.given("owner"),
        open_type: enum_param(params, "open_type", "unconditional, conditional")?,
        format: enum_param(params, "format", "csv, ndjson, parquet, arrow_ipc")?,
        update_frequency: enum_param(
            params,
            "update_frequency",
            "realtime, hourly, daily, weekly, monthly, quarterly, yearly, irregular",
        )?,
        text: params.get("q").map(str::trim).filter(|q| !q.is_empty()),
    };
    let page = params.positive("page", 1)?;
    let per_page = params.positive("per_page", 20)?;
    let live = state.live();
    if per_page > live.limits.max_per_page {
        return Err(Error::bad_request("bad_parameter", format!("`per_page` is at most {}", live.limits.max_per_page)));
    }
    let listed: Vec<&CatalogEntry> = live.catalog.listed().collect();
    let matching: Vec<&CatalogEntry> = listed.iter().copied().filter(|e| filters.keep(e, None)).collect();
    let facets = filters.facets(&listed);
    let open = objections::open_objections(state).await?;
    let now = Utc::now();
    let datasets = matching
        .iter()
        .skip((page - 1).saturating_mul(per_page))
        .take(per_page)
        .map(|e| summary(e, &open, now))
        .collect();
    Ok(json(StatusCode::OK, &CatalogPage { total: matching.len(), page, per_page, facets, datasets }))
}

/// A catalog entry's metadata as the API shows it; the names follow DCAT where it has one
/// (title, description, publisher, keyword, modified, accrualPeriodicity, license).
fn summary(entry: &CatalogEntry, open_objections: &HashMap<String, u64>, now: DateTime<Utc>) -> DatasetSummary {
    let d = &entry.dataset;
    let base = format!("/v1/datasets/{}", d.id);
    DatasetSummary {
        id: d.id.clone(),
        title: d.title.clone(),
        description: d.description.clone(),
        owner: d.owner.clone(),
        open_type: d.open_type,
        format: d.format,
        update_frequency: d.update_frequency,
        last_updated: d.last_updated,
        stale: d.stale(now),
        version: entry.version,
        open_objections: open_objections.get(d.id.as_str()).copied().unwrap_or(0),
        license: d.license.clone(),
        keywords: d.keywords.clone(),
        links: DatasetLinks {
            rows: format!("{base}/rows"),
            preview: format!("{base}/preview"),
            download: format!("{base}/download"),
            this: base,
        },
    }
}

/// A dataset's metadata. Fields and schema are those the caller would receive: under an
/// agreement, its columns with masked types; otherwise every field, so that users can see what
/// to apply for.
/// `GET /v1/datasets/{id}`.
pub async fn dataset(state: &Arc<State>, headers: &hyper::HeaderMap, id: &str) -> Result<Response<Body>, Error> {
    let live = state.live();
    let entry = call::lookup(&live, id)?;
    let caller = state.keys.caller(headers).await?;
    let open = objections::open_objections(state).await?;
    Ok(json(StatusCode::OK, &describe(entry, &caller, &open)))
}

fn describe(entry: &CatalogEntry, caller: &Caller, open_objections: &HashMap<String, u64>) -> DatasetDescription {
    let fields = match decide(caller, &entry.dataset, Operation::Rows, Utc::now()) {
        Ok(grant) => grant.scope.visible_fields(&entry.dataset),
        Err(_) => entry.dataset.fields.clone(),
    };
    let schema = arrow_schema(&fields)
        .fields()
        .iter()
        .map(|f| SchemaField {
            name: f.name().clone(),
            arrow_type: f.data_type().to_string(),
            nullable: f.is_nullable(),
        })
        .collect();
    DatasetDescription {
        summary: summary(entry, open_objections, Utc::now()),
        fields,
        schema,
        media_type: entry.dataset.format.media_type().to_owned(),
    }
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
    let body: ReasonRequest = request::read_json(req).await?;
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
    state.store_call(move |s| s.withdraw(&stored)).await?;
    state.refresh_catalog().await?;
    tracing::warn!(dataset = id, by = %withdrawal.withdrawn_by, reason = %withdrawal.reason, "dataset withdrawn");
    Ok(json(StatusCode::OK, &WithdrawalView { withdrawal, trace: format!("/admin/datasets/{id}/trace") }))
}

#[derive(Serialize, ToSchema)]
pub struct WithdrawalList {
    pub withdrawals: Vec<Withdrawal>,
}

/// `GET /v1/withdrawals`: the withdrawals of the datasets the caller answers for (an owner's
/// department's; every one for the operators) in force now, newest first.
pub async fn withdrawals(state: &Arc<State>, actor: Actor) -> Result<Response<Body>, Error> {
    permitted(&actor, Action::Withdraw, Resource::Workflow, "")?;
    let live = state.live();
    let mut withdrawals: Vec<Withdrawal> = state
        .store_call(|s| s.withdrawals())
        .await?
        .into_iter()
        .filter(|w| {
            let owner = call::lookup_any(&live, &w.dataset).ok().map(|e| e.dataset.owner.as_str());
            super::workflow::allows(&actor, Action::Withdraw, Resource::Dataset { owner })
        })
        .collect();
    withdrawals.sort_by_key(|w| std::cmp::Reverse(w.withdrawn_at));
    Ok(json(StatusCode::OK, &WithdrawalList { withdrawals }))
}

/// `POST .../datasets/{id}/reopen`: serves a withdrawn dataset again.
pub async fn reopen(state: &Arc<State>, actor: Actor, id: &str) -> Result<Response<Body>, Error> {
    let owner = call::lookup_any(&state.live(), id)?.dataset.owner.clone();
    permitted(&actor, Action::Reopen, Resource::Dataset { owner: Some(&owner) }, "")?;
    let (dataset, by) = (id.to_owned(), actor.id().to_owned());
    let reopened = state.store_call(move |s| s.reopen(&dataset, &by, Utc::now())).await?;
    state.refresh_catalog().await?;
    tracing::info!(dataset = id, "dataset reopened");
    Ok(json(StatusCode::OK, &reopened))
}
