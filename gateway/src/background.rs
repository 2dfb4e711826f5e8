//! Background work: limiter housekeeping and writing quota usage to the store. Runs until
//! shutdown, then writes the usage one last time.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::ratelimit::HOUSEKEEPING_INTERVAL;
use crate::state::State;

/// How often quota usage is written to the store.
const USAGE_SAVE_INTERVAL: Duration = Duration::from_secs(1);

pub async fn run(state: Arc<State>, shutdown: impl Future<Output = ()>) {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut save = tokio::time::interval(USAGE_SAVE_INTERVAL);
    let mut housekeeping = tokio::time::interval(HOUSEKEEPING_INTERVAL);
    loop {
        tokio::select! {
            _ = save.tick() => save_usage(&state).await,
            _ = housekeeping.tick() => state.limiter.housekeep(chrono::Utc::now()),
            () = &mut shutdown => break,
        }
    }
    save_usage(&state).await;
}

async fn save_usage(state: &Arc<State>) {
    let state = state.clone();
    let _ = tokio::task::spawn_blocking(move || state.limiter.save_usage(state.store.as_ref())).await;
}
