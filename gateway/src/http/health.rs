//! Liveness and readiness, on the data port for load balancers and orchestrators.

use hyper::Response;
use hyper::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use super::response::{json, Body};
use crate::state::State;

/// Readiness: the data directory and the store take writes, and every file source is there.
pub(super) async fn readyz(state: &State) -> Response<Body> {
    let data_dir = state.config.data_dir.clone();
    let store = state.store.clone();
    let (writable, store_writable) = tokio::task::spawn_blocking(move || {
        let probe = data_dir.join(".readyz");
        let dir = std::fs::write(&probe, b"ok").and_then(|()| std::fs::remove_file(&probe));
        (dir.map_err(|e| e.to_string()), store.writable().map_err(|e| e.to_string()))
    })
    .await
    .unwrap_or_else(|e| (Err(e.to_string()), Err(e.to_string())));
    let missing: Vec<String> = state
        .live()
        .catalog
        .listed()
        .filter_map(|e| match &e.config.source {
            crate::config::SourceConfig::File(p) if !state.config.data_dir.join(p).is_file() => {
                Some(e.dataset.id.to_string())
            }
            _ => None,
        })
        .collect();
    let audit = state.audit.health();
    let limiter = match &state.shared {
        Some(shared) => shared.ping().await.map(|()| "reachable".to_owned()).map_err(|e| format!("unreachable: {e}")),
        None => Ok("local".to_owned()),
    };
    for (backend, up) in [("store", store_writable.is_ok()), ("audit", audit.is_ok()), ("limiter", limiter.is_ok())] {
        state.metrics.backend_up.with_label_values(&[backend]).set(i64::from(up));
    }
    // Without the shared limiter conditional data may still flow (the local share), so it
    // makes the instance unready only where conditional calls fail closed.
    let limiter_blocks = limiter.is_err()
        && state
            .config
            .cluster
            .as_ref()
            .is_some_and(|c| c.on_limiter_failure == crate::shared_limits::OnFailure::FailClosed);
    let ready = writable.is_ok() && store_writable.is_ok() && audit.is_ok() && missing.is_empty() && !limiter_blocks;
    let check = |r: &Result<(), String>| match r {
        Ok(()) => "writable".to_owned(),
        Err(e) => format!("not writable: {e}"),
    };
    let body = Readiness {
        status: if ready { "ready" } else { "not_ready" }.to_owned(),
        checks: ReadinessChecks {
            data_dir: check(&writable),
            store: check(&store_writable),
            audit: check(&audit),
            limiter: limiter.unwrap_or_else(|e| e),
            missing_sources: missing,
        },
    };
    json(if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, &body)
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
}

#[derive(Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    pub status: String,
    pub checks: ReadinessChecks,
}

#[derive(Serialize, ToSchema)]
pub struct ReadinessChecks {
    /// `writable`, or why not.
    pub data_dir: String,
    pub store: String,
    pub audit: String,
    /// `local` (one instance), `reachable`, or `unreachable: why` (the shared limiter).
    pub limiter: String,
    /// The listed datasets whose source files are missing.
    pub missing_sources: Vec<String>,
}
