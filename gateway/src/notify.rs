//! Owners' notifications by webhook: new applications, new objections and application
//! deadlines coming close, POSTed as JSON to the URL configured for the owning department.
//!
//! A notification is written to the store before anything is sent (the outbox), so a restart
//! or an owner's server being down loses none: the sender retries with exponential backoff (1 s,
//! 2 s, 4 s ... at most an hour apart) until a 2xx answer, or gives up after
//! `webhooks.max_attempts` and marks it abandoned. Deliveries are at least once; each body
//! carries the notification's `id` for the receiver to drop repeats.
//!
//! Every delivery is signed, so a receiver can tell it from anyone else's POST: headers
//! `X-Kaifang-Timestamp` (Unix seconds of this attempt) and `X-Kaifang-Signature`
//! (`sha256=` and the hex HMAC-SHA256 of `<timestamp>.<body>`), under the department's own key:
//! the HMAC-SHA256 of the department's name under the platform's signing secret, which
//! `kaifang webhooks key --department NAME` prints for the operator to hand over. Each
//! department's key checks its own notifications only, and a receiver refuses old timestamps to
//! stop replays.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::config::Config;
use crate::state::State;
use crate::store::Notification;

/// How long one delivery attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest wait between two attempts.
const MAX_BACKOFF_SECONDS: i64 = 3600;
/// How often the outbox and the deadlines are looked at when nothing wakes the sender.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
const DEADLINE_CHECK_INTERVAL: Duration = Duration::from_secs(60);

/// Writes a notification for `department` to the outbox, if it has a webhook, and wakes the
/// sender. `event` names what happened; `details` say what it happened to. Blocking (store).
pub fn enqueue(state: &State, department: &str, event: &str, details: Value) -> Result<(), crate::store::StoreError> {
    let Some(url) = state.config.webhooks.owners.get(department) else { return Ok(()) };
    let id = uuid::Uuid::new_v4().to_string();
    let now = Utc::now();
    let notification = Notification {
        payload: json!({ "id": id, "event": event, "department": department, "at": now, "details": details }),
        id,
        url: url.clone(),
        attempts: 0,
        next_attempt_at: now,
        delivered_at: None,
        abandoned: false,
        last_error: None,
    };
    state.store.put_notification(&notification)?;
    state.notifications_waiting.notify_one();
    Ok(())
}

/// The platform's webhook signing secret: configured, or kept in the data directory (made there
/// on first use).
pub fn signing_secret(config: &Config) -> Result<String, String> {
    match &config.webhooks.signing_secret {
        Some(secret) => Ok(secret.clone()),
        None => crate::state::secret_file(&secret_path(config)),
    }
}

/// The signing secret a gateway with this configuration uses, without making one: the key
/// printed from a secret the gateway never sees would check nothing.
pub fn existing_signing_secret(config: &Config) -> Result<String, String> {
    if let Some(secret) = &config.webhooks.signing_secret {
        return Ok(secret.clone());
    }
    let path = secret_path(config);
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => Ok(text.trim().to_owned()),
        Ok(_) => Err(format!("{} is empty", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(format!(
            "no webhook signing secret in {} yet: start the gateway once with this data directory, \
             or set [webhooks] signing_secret",
            path.display()
        )),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

fn secret_path(config: &Config) -> std::path::PathBuf {
    config.data_dir.join("webhook-signing.key")
}

/// HMAC-SHA256 of `parts` in order under `key`, in hex.
pub(crate) fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    for part in parts {
        mac.update(part);
    }
    hex::encode(mac.finalize().into_bytes())
}

/// The key `department`'s receiver checks signatures with (hex).
pub fn department_key(secret: &str, department: &str) -> String {
    hmac_sha256(secret.as_bytes(), &[department.as_bytes()])
}

/// The `X-Kaifang-Signature` of `body` sent at `timestamp` (Unix seconds), under a department's
/// key.
pub fn signature(department_key: &str, timestamp: i64, body: &[u8]) -> String {
    format!("sha256={}", hmac_sha256(department_key.as_bytes(), &[timestamp.to_string().as_bytes(), b".", body]))
}

/// When the attempt after `attempts` failed ones is due.
fn backoff(attempts: u32, now: DateTime<Utc>) -> DateTime<Utc> {
    let seconds = 1i64.checked_shl(attempts.saturating_sub(1)).unwrap_or(i64::MAX).min(MAX_BACKOFF_SECONDS);
    now + chrono::Duration::seconds(seconds)
}

/// Sends what is due until `shutdown`; reminds owners of deadlines once a minute.
pub async fn run(state: Arc<State>, shutdown: impl std::future::Future<Output = ()>) {
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut deadlines = tokio::time::interval(DEADLINE_CHECK_INTERVAL);
    loop {
        // Deadlines are looked at once a minute, and whenever something was written (a new
        // application may already be close to its deadline in a calendar full of holidays).
        tokio::select! {
            () = &mut shutdown => return,
            _ = deadlines.tick() => remind(&state).await,
            () = state.notifications_waiting.notified() => remind(&state).await,
            () = tokio::time::sleep(POLL_INTERVAL) => {}
        }
        let store = state.store.clone();
        let due = match tokio::task::spawn_blocking(move || store.due_notifications(Utc::now())).await {
            Ok(Ok(due)) => due,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read the notification outbox");
                continue;
            }
            Err(_) => continue,
        };
        for notification in due {
            deliver(&state, &client, notification).await;
        }
    }
}

async fn deliver(state: &Arc<State>, client: &Client<HttpConnector, Full<Bytes>>, mut n: Notification) {
    let body = Bytes::from(n.payload.to_string());
    let department = n.payload["department"].as_str().unwrap_or_default();
    let timestamp = Utc::now().timestamp();
    let key = department_key(&state.webhook_secret, department);
    let request = hyper::Request::post(&n.url)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::USER_AGENT, concat!("kaifang/", env!("CARGO_PKG_VERSION")))
        .header("x-kaifang-timestamp", timestamp)
        .header("x-kaifang-signature", signature(&key, timestamp, &body))
        .body(Full::new(body));
    let outcome = match request {
        Err(e) => Err(e.to_string()),
        Ok(request) => match tokio::time::timeout(ATTEMPT_TIMEOUT, client.request(request)).await {
            Err(_) => Err(format!("no answer within {} s", ATTEMPT_TIMEOUT.as_secs())),
            Ok(Err(e)) => Err(e.to_string()),
            Ok(Ok(response)) if response.status().is_success() => Ok(()),
            Ok(Ok(response)) => Err(format!("answered {}", response.status())),
        },
    };
    let now = Utc::now();
    n.attempts += 1;
    let result = match outcome {
        Ok(()) => {
            n.delivered_at = Some(now);
            n.last_error = None;
            "delivered"
        }
        Err(e) => {
            tracing::warn!(url = %n.url, attempts = n.attempts, error = %e, "webhook not delivered");
            n.last_error = Some(e);
            if n.attempts >= state.config.webhooks.max_attempts {
                n.abandoned = true;
                "abandoned"
            } else {
                n.next_attempt_at = backoff(n.attempts, now);
                "retried"
            }
        }
    };
    state.metrics.webhook_deliveries.with_label_values(&[result]).inc();
    let store = state.store.clone();
    match tokio::task::spawn_blocking(move || store.put_notification(&n)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot record a webhook attempt"),
        Err(e) => tracing::warn!(error = %e, "webhook bookkeeping task failed"),
    }
}

/// Tells owners of applications whose deadline is within `remind_within_working_days`, once per
/// application.
async fn remind(state: &Arc<State>) {
    let state = state.clone();
    let reminded = tokio::task::spawn_blocking(move || -> Result<usize, String> {
        let today = state.today();
        let within = i64::from(state.config.webhooks.remind_within_working_days);
        let live = state.live();
        let mut count = 0;
        for application in state.store.applications().map_err(|e| e.to_string())? {
            if application.reminded || application.status != policy::ApplicationStatus::Submitted {
                continue;
            }
            let Ok(left) = live.calendar.working_days_between(today, application.due_by) else { continue };
            if left > within {
                continue;
            }
            let Some(entry) = live.catalog.get(&application.dataset) else { continue };
            // Of several instances looking at once, the one that marks it reminded sends it.
            let mut marked = application.clone();
            marked.reminded = true;
            if !state.store.replace_application(&application, &marked).map_err(|e| e.to_string())? {
                continue;
            }
            enqueue(
                &state,
                &entry.dataset.owner,
                "deadline_approaching",
                json!({ "application": application.id, "dataset": application.dataset, "due_by": application.due_by,
                        "due_by_provisional": application.due_by_provisional, "working_days_left": left.max(0) }),
            )
            .map_err(|e| e.to_string())?;
            count += 1;
        }
        Ok(count)
    })
    .await;
    match reminded {
        Ok(Ok(0)) => {}
        Ok(Ok(n)) => tracing::info!(applications = n, "owners reminded of approaching deadlines"),
        Ok(Err(e)) => tracing::warn!(error = %e, "deadline reminders failed"),
        Err(e) => tracing::warn!(error = %e, "deadline reminder task failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_up_to_an_hour() {
        let now = Utc::now();
        let waits: Vec<i64> =
            [1, 2, 3, 4, 12, 13, 40, 200].iter().map(|&a| (backoff(a, now) - now).num_seconds()).collect();
        assert_eq!(waits, vec![1, 2, 4, 8, 2048, 3600, 3600, 3600]);
    }
}
