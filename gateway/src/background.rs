//! Background work: limiter housekeeping and writing quota usage to the store. Runs until
//! shutdown, then writes the usage one last time.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::ratelimit::HOUSEKEEPING_INTERVAL;
use crate::state::State;

/// How often quota usage is written to the store.
const USAGE_SAVE_INTERVAL: Duration = Duration::from_secs(1);
/// How often audit retention runs.
const RETENTION_INTERVAL: Duration = Duration::from_secs(3600);

pub async fn run(state: Arc<State>, shutdown: impl Future<Output = ()>) {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut save = tokio::time::interval(USAGE_SAVE_INTERVAL);
    let mut housekeeping = tokio::time::interval(HOUSEKEEPING_INTERVAL);
    let mut retention = tokio::time::interval(RETENTION_INTERVAL);
    let mut traffic = tokio::time::interval(TRAFFIC_INTERVAL);
    let mut kept = crate::operation::traffic::Values::new();
    loop {
        tokio::select! {
            _ = save.tick() => {
                save_usage(&state).await;
                retry_audit(&state).await;
                if let Some(shared) = &state.shared {
                    if let Err(e) = shared.sync(&state.limiter, chrono::Utc::now()).await {
                        tracing::debug!(error = %e.0, "quota usage not pushed to the shared limiter; kept for the next try");
                    }
                }
            }
            _ = housekeeping.tick() => state.limiter.housekeep(chrono::Utc::now()),
            _ = retention.tick() => prune_audit(&state).await,
            _ = traffic.tick() => keep_traffic(&state, &mut kept).await,
            () = &mut shutdown => break,
        }
    }
    save_usage(&state).await;
    keep_traffic(&state, &mut kept).await;
}

/// How often the growth of the gateway's counters is added to the store's hours (a gateway
/// killed loses at most this much of them; one stopped keeps all).
const TRAFFIC_INTERVAL: Duration = Duration::from_secs(60);

/// Adds what the kept counters grew by since `kept` to the store's current hour, for the
/// operation report; on failure the growth is added on the next try.
async fn keep_traffic(state: &Arc<State>, kept: &mut crate::operation::traffic::Values) {
    use crate::operation::traffic;
    use chrono::DurationRound;
    let now = traffic::values(&state.metrics.gather());
    let figures = traffic::growth(&now, kept);
    if figures.is_empty() {
        return;
    }
    let hour = chrono::Utc::now().duration_trunc(chrono::TimeDelta::hours(1)).expect("an hour divides time");
    let instance = state.config.cluster.as_ref().map_or_else(|| "embedded".to_owned(), |c| c.instance.clone());
    let writer = state.clone();
    match tokio::task::spawn_blocking(move || writer.store.add_traffic(hour, &instance, &figures)).await {
        Ok(Ok(())) => *kept = now,
        Ok(Err(e)) => tracing::warn!(error = %e, "traffic counts not kept; added on the next try"),
        Err(e) => tracing::warn!(error = %e, "traffic task failed"),
    }
}

/// A failed audit log is tried again every second with a checkpoint record, so it recovers
/// (and `readyz` says so) even when no conditional call comes to try it.
async fn retry_audit(state: &Arc<State>) {
    if let Err(failure) = state.audit.health() {
        match state.audit.checkpoint(format!("writing again after: {failure}")).await {
            Ok(_) => tracing::info!("the audit log takes records again"),
            Err(e) => tracing::debug!(error = %e, "the audit log still cannot write"),
        }
    }
}

/// Removes audit segments past the retention period.
async fn prune_audit(state: &Arc<State>) {
    let dir = crate::state::audit_dir(&state.config.data_dir);
    let cutoff = chrono::Utc::now() - chrono::Duration::days(i64::from(state.live().retention_days));
    let cluster = state.config.cluster.as_ref().map(|c| c.store.clone());
    let pruned = tokio::task::spawn_blocking(move || match cluster {
        Some(url) => crate::audit::postgres::prune(&url, cutoff),
        None => crate::audit::segments::prune(&dir, cutoff),
    });
    match pruned.await {
        Ok(Ok(0)) => {}
        Ok(Ok(n)) => tracing::info!(removed = n, "audit records past retention removed"),
        Ok(Err(e)) => tracing::warn!(error = %e, "audit retention failed"),
        Err(e) => tracing::warn!(error = %e, "audit retention task failed"),
    }
}

async fn save_usage(state: &Arc<State>) {
    let state = state.clone();
    let _ = tokio::task::spawn_blocking(move || state.limiter.save_usage(state.store.as_ref())).await;
}
