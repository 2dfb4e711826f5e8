//! Catalog drafts: an owner writes its entry's draft, the operators review and publish it.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use policy::{Action, Actor, DatasetId, Field, Format, OpenType, Resource, UpdateFrequency};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::request;
use super::response::{json, Body};
use super::workflow::{allows, not_found, permitted, text, wrong_role};
use crate::config::{DatasetConfig, SourceConfig};
use crate::error::{Error, Kind};
use crate::state::State;
use crate::store::EntryRecord;

/// A draft catalog entry waiting for review.
#[derive(Serialize, ToSchema)]
pub struct DraftView {
    /// `draft`.
    pub status: String,
    /// The draft's revision, one more on every write; publication names the one reviewed.
    pub draft_version: u64,
    pub entry: DatasetConfig,
    pub written_by: String,
    pub written_at: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
pub struct DraftList {
    pub drafts: Vec<DraftView>,
}

/// A publication: the entry as now served.
#[derive(Serialize, ToSchema)]
pub struct Published {
    pub id: DatasetId,
    /// `published`.
    pub status: String,
    pub version: u64,
    pub last_updated: DateTime<Utc>,
    pub entry: DatasetConfig,
}

/// A catalog entry as an owner writes it; the id is the URL's and `last_updated` is set on
/// publication.
#[derive(Deserialize, ToSchema)]
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
    if let Some(draft) = state.store_call(move |s| s.draft(&draft_id)).await? {
        if !writes(&draft.entry.owner) && !owns_entry {
            return Err(Error::new(
                Kind::Conflict,
                "id_taken",
                format!("`{id}` cannot be drafted now; choose another id or ask the operators"),
            ));
        }
    }
    let body: DraftRequest = request::read_json(req).await?;
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
    record.version = state.store_call(move |s| s.put_draft(&stored)).await?;
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

fn draft_view(record: &EntryRecord) -> DraftView {
    DraftView {
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
    let draft = state
        .store_call(move |s| s.draft(&wanted))
        .await?
        .filter(|d| allows(&actor, Action::ReadDraft, Resource::Dataset { owner: Some(&d.entry.owner) }))
        .ok_or_else(|| not_found("no draft of this dataset"))?;
    Ok(json(StatusCode::OK, &draft_view(&draft)))
}

/// `GET /admin/drafts` and `GET /v1/drafts`: the drafts waiting for review that the caller
/// may read (an owner's department's; every one for the operators).
pub async fn drafts(state: &Arc<State>, actor: &Actor) -> Result<Response<Body>, Error> {
    permitted(actor, Action::ReadDraft, Resource::Workflow, "")?;
    let drafts = state.store_call(|s| s.drafts()).await?;
    let readable =
        |d: &&EntryRecord| allows(actor, Action::ReadDraft, Resource::Dataset { owner: Some(&d.entry.owner) });
    Ok(json(StatusCode::OK, &DraftList { drafts: drafts.iter().filter(readable).map(draft_view).collect() }))
}

/// `POST /admin/datasets/{id}/publish` (the operator token) and `POST /v1/datasets/{id}/publish`
/// (an operator's key): the operators' review passed; the draft is served from the next
/// request, with its version one more and `last_updated` now.
pub async fn publish(
    state: &Arc<State>,
    actor: &Actor,
    id: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, Error> {
    permitted(actor, Action::Publish, Resource::Workflow, "")?;
    let wanted = id.to_owned();
    let draft =
        state.store_call(move |s| s.draft(&wanted)).await?.ok_or_else(|| not_found("no draft of this dataset"))?;
    let body: PublishRequest = request::read_json(req).await?;
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
    let (id, by) = (id.to_owned(), actor.id().to_owned());
    let reviewed = body.draft_version;
    let published = state.store_call(move |s| s.publish(&id, &by, Utc::now(), version, reviewed)).await?;
    state.refresh_catalog().await?;
    tracing::info!(dataset = %published.entry.id, version, "catalog entry published");
    Ok(json(
        StatusCode::OK,
        &Published {
            id: published.entry.id.clone(),
            status: "published".into(),
            version: published.version,
            last_updated: published.entry.last_updated,
            entry: published.entry,
        },
    ))
}

/// The review a publication rests on.
#[derive(Deserialize, ToSchema)]
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
