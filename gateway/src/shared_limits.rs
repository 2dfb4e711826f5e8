//! Rate limits and daily quotas shared by every instance, in Redis.
//!
//! Each limit is a GCRA in one Lua script, run atomically by Redis on Redis's own clock, so N
//! instances together admit what one instance alone would. An agreement's daily request quota is
//! counted in the same script (exactly); its row and byte quotas are counted locally as data is
//! sent and pushed to Redis every second ([`SharedLimits::sync`]), each instance taking the
//! others' consumption in as it pushes: together the instances can pass a row or byte quota by
//! what the others sent within the last second, no more.
//!
//! When Redis cannot be reached (or answers slower than [`CALL_TIMEOUT`]), calls under an
//! agreement either fail closed (503) or fall back to a local limit of 1/N of the agreement's
//! rate, as `[cluster] on_limiter_failure` says; anonymous and per-key limits fall back to the
//! local limiter, so unconditional data keeps flowing.

use std::net::IpAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use policy::{Limit, Quota, Rate};
use redis::aio::ConnectionManager;

use crate::ratelimit::{Admission, Denied, Limiter};
use crate::store::Usage;

/// The longest a limiter call may take before the fallback applies.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(250);

/// What conditional calls do when Redis cannot be reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Refuse them (503 `limiter_unavailable`).
    FailClosed,
    /// Limit each instance locally to 1/N of the agreement's rate and burst.
    LocalShare,
}

/// The GCRA step both scripts take: KEYS[1] holds the theoretical arrival time (µs, on Redis's
/// clock); ARGV[1] is the emission interval (µs), ARGV[2] the burst. Leaves `allowed`,
/// `remaining` and `wait` (µs to retry when denied, to a full burst when allowed), storing the
/// new arrival time only when allowed.
macro_rules! gcra_step {
    () => {
        r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local horizon = burst * interval
local allowed, remaining, wait = 0, 0, new_tat - horizon - now
if new_tat - now <= horizon then
  redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000) + 1000)
  allowed, remaining, wait = 1, math.floor((horizon - (new_tat - now)) / interval), new_tat - now
end
"#
    };
}

/// A call outside any agreement. Returns {allowed, remaining, µs}.
const GCRA: &str = concat!(gcra_step!(), "return {allowed, remaining, wait}\n");

/// An agreement's call: KEYS[2] the day's usage hash; ARGV[3..5] requests/rows/bytes per day,
/// ARGV[6] the hash's lifetime (s). Quotas first (a spent quota does not use up the rate), then
/// the rate, then the request is counted. Returns {code, remaining, µs, requests, rows, bytes};
/// code 1 admitted, 0 rate, 2/3/4 requests/rows/bytes quota spent.
const AGREEMENT: &str = concat!(
    r#"
local used = redis.call('HMGET', KEYS[2], 'requests', 'rows', 'bytes')
local requests = tonumber(used[1] or 0)
local rows = tonumber(used[2] or 0)
local bytes = tonumber(used[3] or 0)
if requests >= tonumber(ARGV[3]) then return {2, 0, 0, requests, rows, bytes} end
if rows >= tonumber(ARGV[4]) then return {3, 0, 0, requests, rows, bytes} end
if bytes >= tonumber(ARGV[5]) then return {4, 0, 0, requests, rows, bytes} end
"#,
    gcra_step!(),
    r#"
if allowed == 1 then
  requests = redis.call('HINCRBY', KEYS[2], 'requests', 1)
  redis.call('EXPIRE', KEYS[2], tonumber(ARGV[6]))
end
return {allowed, remaining, wait, requests, rows, bytes}
"#
);

/// The shared limiter.
pub struct SharedLimits {
    client: redis::Client,
    connection: tokio::sync::OnceCell<ConnectionManager>,
    prefix: String,
    /// Instances sharing the limits, for the local share.
    pub instances: u32,
    pub on_failure: OnFailure,
    gcra: redis::Script,
    agreement: redis::Script,
    /// 1 while Redis answers, 0 after a failure.
    up: prometheus::IntGauge,
    /// Calls decided by the fallback.
    fallbacks: prometheus::IntCounter,
}

/// Why the shared limiter gave no answer.
#[derive(Debug)]
pub struct Unreachable(pub String);

fn interval_us(rate: Rate) -> u64 {
    1_000_000 / u64::from(rate.per_second.max(1))
}

impl SharedLimits {
    pub fn new(
        url: &str,
        prefix: &str,
        instances: u32,
        on_failure: OnFailure,
        up: prometheus::IntGauge,
        fallbacks: prometheus::IntCounter,
    ) -> Result<SharedLimits, String> {
        let client = redis::Client::open(url).map_err(|e| format!("`{url}`: {e}"))?;
        Ok(SharedLimits {
            client,
            connection: tokio::sync::OnceCell::new(),
            prefix: prefix.to_owned(),
            instances: instances.max(1),
            on_failure,
            gcra: redis::Script::new(GCRA),
            agreement: redis::Script::new(AGREEMENT),
            up,
            fallbacks,
        })
    }

    /// The connection, made on first use (and retried on the next call if that fails); it
    /// reconnects by itself afterwards.
    async fn connection(&self) -> Result<ConnectionManager, Unreachable> {
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CALL_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT))
            .set_number_of_retries(1);
        let connection = tokio::time::timeout(
            CALL_TIMEOUT * 2,
            self.connection.get_or_try_init(|| self.client.get_connection_manager_with_config(config)),
        )
        .await
        .map_err(|_| Unreachable("no connection to Redis in time".into()))?
        .map_err(|e| Unreachable(e.to_string()))?;
        Ok(connection.clone())
    }

    fn failed(&self, e: impl std::fmt::Display) -> Unreachable {
        self.up.set(0);
        Unreachable(e.to_string())
    }

    /// Whether Redis answers now (for readiness).
    pub async fn ping(&self) -> Result<(), String> {
        let mut connection = self.connection().await.map_err(|e| e.0)?;
        let pong: Result<String, _> =
            tokio::time::timeout(CALL_TIMEOUT, redis::cmd("PING").query_async(&mut connection))
                .await
                .map_err(|_| "timeout".to_owned())?;
        pong.map(|_| ()).map_err(|e| e.to_string())
    }

    /// Admits a call under agreement `id`, or says why not, or that Redis could not be asked.
    /// `day` names the quota day (in the configured time zone).
    pub async fn admit_agreement(
        &self,
        id: &str,
        rate: Rate,
        quota: &Quota,
        day: &str,
    ) -> Result<Result<SharedAdmission, Denied>, Unreachable> {
        let mut connection = self.connection().await.map_err(|e| self.failed(e.0))?;
        let mut call = self.agreement.key(format!("{}:rate:agreement:{id}", self.prefix));
        call.key(format!("{}:quota:{id}:{day}", self.prefix))
            .arg(interval_us(rate))
            .arg(rate.burst.max(1))
            .arg(quota.requests_per_day)
            .arg(quota.rows_per_day)
            .arg(quota.bytes_per_day)
            .arg(2 * 86_400);
        let answer = tokio::time::timeout(CALL_TIMEOUT, call.invoke_async::<Vec<i64>>(&mut connection))
            .await
            .map_err(|_| self.failed("Redis did not answer in time"))?
            .map_err(|e| self.failed(e))?;
        self.up.set(1);
        let [code, remaining, micros, requests, rows, bytes] = answer[..] else {
            return Err(self.failed("unexpected answer from the limiter script"));
        };
        let wait = Duration::from_micros(micros.max(0) as u64);
        let used = Usage { requests: requests as u64, rows: rows as u64, bytes: bytes as u64 };
        let spent = |quota: &'static str, limit: u64| Denied::Quota { quota, limit, retry_after: Duration::ZERO };
        Ok(match code {
            1 => Ok(SharedAdmission {
                admission: Admission {
                    policy: "agreement",
                    burst: rate.burst,
                    remaining: remaining.max(0) as u32,
                    reset_seconds: wait.as_secs_f64().ceil() as u64,
                },
                used,
            }),
            0 => Err(Denied::Rate { policy: "agreement", burst: rate.burst, retry_after: wait }),
            2 => Err(spent("requests_per_day", quota.requests_per_day)),
            3 => Err(spent("rows_per_day", quota.rows_per_day)),
            _ => Err(spent("bytes_per_day", quota.bytes_per_day)),
        })
    }

    /// The usage of agreement `id` on `day` across all instances, as last pushed.
    pub async fn usage(&self, id: &str, day: &str) -> Result<Usage, Unreachable> {
        let mut connection = self.connection().await.map_err(|e| self.failed(e.0))?;
        let key = format!("{}:quota:{id}:{day}", self.prefix);
        let mut read = redis::cmd("HMGET");
        read.arg(&key).arg("requests").arg("rows").arg("bytes");
        let answer = tokio::time::timeout(CALL_TIMEOUT, read.query_async::<[Option<u64>; 3]>(&mut connection))
            .await
            .map_err(|_| self.failed("Redis did not answer in time"))?
            .map_err(|e| self.failed(e))?;
        let [requests, rows, bytes] = answer.map(Option::unwrap_or_default);
        Ok(Usage { requests, rows, bytes })
    }

    /// Admits a call outside any agreement (anonymous or keyed) under `rate`.
    pub async fn admit_default(
        &self,
        limit: &Limit,
        client: IpAddr,
        rate: Rate,
    ) -> Result<Result<Admission, Denied>, Unreachable> {
        let (key, policy) = match limit {
            Limit::Anonymous => (format!("{}:rate:addr:{client}", self.prefix), "anonymous"),
            Limit::Key(id) => (format!("{}:rate:key:{id}", self.prefix), "key"),
            Limit::Agreement { .. } => return Err(Unreachable("agreements go through `admit`".into())),
        };
        let mut connection = self.connection().await.map_err(|e| self.failed(e.0))?;
        let mut call = self.gcra.key(&key);
        call.arg(interval_us(rate)).arg(rate.burst.max(1));
        let answer = tokio::time::timeout(CALL_TIMEOUT, call.invoke_async::<Vec<i64>>(&mut connection))
            .await
            .map_err(|_| self.failed("Redis did not answer in time"))?
            .map_err(|e| self.failed(e))?;
        self.up.set(1);
        let [allowed, remaining, micros] = answer[..] else {
            return Err(self.failed("unexpected answer from the limiter script"));
        };
        let wait = Duration::from_micros(micros.max(0) as u64);
        Ok(if allowed == 1 {
            Ok(Admission {
                policy,
                burst: rate.burst,
                remaining: remaining.max(0) as u32,
                reset_seconds: wait.as_secs_f64().ceil() as u64,
            })
        } else {
            Err(Denied::Rate { policy, burst: rate.burst, retry_after: wait })
        })
    }

    /// Counts a call decided by the fallback.
    pub fn fell_back(&self) {
        self.fallbacks.inc();
    }

    /// The agreement's rate for this instance's local share: 1/N of rate and burst, at least 1.
    pub fn local_share(&self, rate: Rate) -> Rate {
        Rate { per_second: (rate.per_second / self.instances).max(1), burst: (rate.burst / self.instances).max(1) }
    }

    /// Pushes the rows and bytes this instance sent since the last push, and takes in what the
    /// others sent. Runs every second.
    pub async fn sync(&self, limiter: &Limiter, now: DateTime<Utc>) -> Result<(), Unreachable> {
        let mut connection = self.connection().await.map_err(|e| self.failed(e.0))?;
        let day = limiter.day(now).to_string();
        for (agreement, rows, bytes) in limiter.take_unpushed() {
            let key = format!("{}:quota:{agreement}:{day}", self.prefix);
            let mut pipe = redis::pipe();
            pipe.atomic().hincr(&key, "rows", rows).hincr(&key, "bytes", bytes).expire(&key, 2 * 86_400).ignore();
            let pushed = tokio::time::timeout(CALL_TIMEOUT, pipe.query_async::<(u64, u64)>(&mut connection)).await;
            match pushed {
                Ok(Ok((rows_total, bytes_total))) => limiter.take_in(&agreement, rows_total, bytes_total),
                Ok(Err(e)) => {
                    limiter.give_back(&agreement, rows, bytes);
                    return Err(self.failed(e));
                }
                Err(_) => {
                    // The push may or may not have landed; counting it again would double it,
                    // losing it only lets a second's worth through: keep it local.
                    return Err(self.failed("Redis did not answer in time"));
                }
            }
        }
        self.up.set(1);
        Ok(())
    }
}

/// An admission under an agreement, with the day's usage across all instances.
pub struct SharedAdmission {
    pub admission: Admission,
    pub used: Usage,
}
