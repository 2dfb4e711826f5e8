//! Rate limits (governor, GCRA) and daily quotas.
//!
//! Which limit a call counts against comes from its grant ([`policy::Limit`]): anonymous calls
//! per client address, keyed calls on unconditional data per key, calls under an agreement per
//! agreement, with the agreement's own rate and burst. Agreements also carry daily quotas of
//! requests, rows and bytes, counted per calendar day in the configured time zone (the city's,
//! UTC+8 by default) and written to the store every second, so a restart loses at most one
//! second of counting.
//!
//! The per-address and per-key limiters are keyed maps whose memory would grow with every new
//! client; [`Limiter::housekeep`] (run every [`HOUSEKEEPING_INTERVAL`]) drops every entry whose
//! state is back to "never seen", so memory follows the clients active in the last moments,
//! not all clients ever seen.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, FixedOffset, NaiveDate, Utc};
use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::{StateInformationMiddleware, StateSnapshot};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{NotUntil, Quota, RateLimiter};
use policy::{Limit, Rate};

use crate::store::{Store, Usage};

pub const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(30);

type Keyed<K> = RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock, StateInformationMiddleware>;
type Direct = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

/// Limits applied where no agreement sets them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DefaultRates {
    /// Per client address, for anonymous calls.
    pub anonymous: Rate,
    /// Per key, for keyed calls outside any agreement.
    pub key: Rate,
}

/// The state of the limit a call was admitted under, for the `RateLimit` response fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admission {
    /// The policy's name: `anonymous`, `key` or `agreement`.
    pub policy: &'static str,
    pub burst: u32,
    pub remaining: u32,
    /// Seconds until the full burst is available again.
    pub reset_seconds: u64,
}

/// Why a call was not admitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denied {
    Rate {
        policy: &'static str,
        burst: u32,
        retry_after: Duration,
    },
    /// A daily quota is spent; `quota` names it (`requests_per_day`, `rows_per_day`,
    /// `bytes_per_day`).
    Quota {
        quota: &'static str,
        limit: u64,
        retry_after: Duration,
    },
}

/// An agreement's daily row and byte quotas, shared by all its calls in flight: rows and bytes
/// are taken from it as they are sent, so concurrent calls cannot together pass the quota.
#[derive(Clone, Debug)]
pub struct Budget {
    counter: Arc<QuotaCounter>,
    rows_per_day: u64,
    bytes_per_day: u64,
}

impl Budget {
    /// Takes `n` rows from today's quota, or says how many are left.
    pub fn take_rows(&self, n: u64) -> Result<(), u64> {
        take(&self.counter.rows, n, self.rows_per_day)?;
        self.counter.unpushed_rows.fetch_add(n, Ordering::AcqRel);
        Ok(())
    }

    /// Takes `n` bytes from today's quota, or says how many are left.
    pub fn take_bytes(&self, n: u64) -> Result<(), u64> {
        take(&self.counter.bytes, n, self.bytes_per_day)?;
        self.counter.unpushed_bytes.fetch_add(n, Ordering::AcqRel);
        Ok(())
    }

    /// Spends what is left of today's rows: a response cut off for passing the quota has used it.
    pub fn exhaust_rows(&self) {
        let before = self.counter.rows.fetch_max(self.rows_per_day, Ordering::AcqRel);
        self.counter.unpushed_rows.fetch_add(self.rows_per_day.saturating_sub(before), Ordering::AcqRel);
    }

    /// Spends what is left of today's bytes.
    pub fn exhaust_bytes(&self) {
        let before = self.counter.bytes.fetch_max(self.bytes_per_day, Ordering::AcqRel);
        self.counter.unpushed_bytes.fetch_add(self.bytes_per_day.saturating_sub(before), Ordering::AcqRel);
    }
}

/// Adds `n` to `used` unless that passes `limit`; atomically, so racing calls cannot both win.
fn take(used: &AtomicU64, n: u64, limit: u64) -> Result<(), u64> {
    let mut current = used.load(Ordering::Acquire);
    loop {
        let next = current.saturating_add(n);
        if next > limit {
            return Err(limit.saturating_sub(current));
        }
        match used.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return Ok(()),
            Err(actual) => current = actual,
        }
    }
}

/// One agreement's consumption on one day.
#[derive(Debug)]
struct QuotaCounter {
    day: NaiveDate,
    requests: AtomicU64,
    rows: AtomicU64,
    bytes: AtomicU64,
    /// Rows and bytes counted here and not yet pushed to the shared limiter (when there is one).
    unpushed_rows: AtomicU64,
    unpushed_bytes: AtomicU64,
}

impl QuotaCounter {
    fn usage(&self) -> Usage {
        Usage {
            requests: self.requests.load(Ordering::Relaxed),
            rows: self.rows.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }
}

/// All the gateway's limiters and quota counters.
pub struct Limiter {
    /// The per-address and per-key limiters, swapped whole when a reload changes their rates.
    defaults: arc_swap::ArcSwap<Defaults>,
    agreements: DashMap<String, (Rate, Arc<Direct>)>,
    quotas: DashMap<String, Arc<QuotaCounter>>,
    /// The last usage written to the store, per agreement and day, to write only what changed.
    saved: Mutex<std::collections::HashMap<(String, NaiveDate), Usage>>,
    day_offset: FixedOffset,
    clock: DefaultClock,
    /// Range reads admitted lately, by who read (under which limit), what and which version.
    ranges: moka::sync::Cache<RangeKey, RangeWindow>,
}

/// Who reads ranges of what: the limit's holder (`anonymous` address, key or agreement), the
/// dataset, and its version.
pub type RangeKey = (String, String, String);

/// A range read admitted under a limit, and when.
#[derive(Clone)]
struct RangeWindow {
    opened: std::time::Instant,
    admission: Admission,
    budget: Option<Budget>,
}

/// The longest window range reads can share (`[limits] range_window_seconds` is at most this).
pub const MAX_RANGE_WINDOW: Duration = Duration::from_secs(3600);

/// The limiters of calls outside any agreement, at their rates.
struct Defaults {
    rates: DefaultRates,
    anonymous: Keyed<IpAddr>,
    keys: Keyed<String>,
}

impl Defaults {
    fn new(rates: DefaultRates) -> Defaults {
        Defaults {
            rates,
            anonymous: RateLimiter::keyed(quota_of(rates.anonymous)).with_middleware(),
            keys: RateLimiter::keyed(quota_of(rates.key)).with_middleware(),
        }
    }
}

fn quota_of(rate: Rate) -> Quota {
    let per_second = NonZeroU32::new(rate.per_second.max(1)).expect("at least 1");
    let burst = NonZeroU32::new(rate.burst.max(1)).expect("at least 1");
    Quota::per_second(per_second).allow_burst(burst)
}

impl Limiter {
    pub fn new(defaults: DefaultRates, day_offset: FixedOffset) -> Limiter {
        Limiter {
            defaults: arc_swap::ArcSwap::from_pointee(Defaults::new(defaults)),
            agreements: DashMap::new(),
            quotas: DashMap::new(),
            saved: Mutex::new(Default::default()),
            day_offset,
            clock: DefaultClock::default(),
            ranges: moka::sync::Cache::builder().max_capacity(100_000).time_to_live(MAX_RANGE_WINDOW).build(),
        }
    }

    /// The admission of the range read `key` names, if one was admitted less than `window` ago:
    /// range reads of one version of one dataset by one caller within the window are one call
    /// against the request rate and the daily request quota, their bytes still counted against
    /// the same byte budget.
    pub fn range_window(&self, key: &RangeKey, window: Duration) -> Option<(Admission, Option<Budget>)> {
        self.ranges.get(key).filter(|w| w.opened.elapsed() < window).map(|w| (w.admission, w.budget))
    }

    /// Opens the window of range reads `key` names, from an admission just made.
    pub fn open_range_window(&self, key: RangeKey, admission: &Admission, budget: &Option<Budget>) {
        let window =
            RangeWindow { opened: std::time::Instant::now(), admission: admission.clone(), budget: budget.clone() };
        self.ranges.insert(key, window);
    }

    /// Applies new anonymous and per-key rates (a reload). Unchanged rates keep their limiters
    /// and what they have counted; changed ones start afresh.
    pub fn set_defaults(&self, rates: DefaultRates) {
        if self.defaults.load().rates != rates {
            self.defaults.store(Arc::new(Defaults::new(rates)));
        }
    }

    /// The quota day `now` falls in.
    pub fn day(&self, now: DateTime<Utc>) -> NaiveDate {
        now.with_timezone(&self.day_offset).date_naive()
    }

    /// Time until the quota day after `now` starts.
    pub fn until_next_day(&self, now: DateTime<Utc>) -> Duration {
        let local = now.with_timezone(&self.day_offset);
        let midnight = (local.date_naive() + chrono::Days::new(1)).and_hms_opt(0, 0, 0).expect("valid time");
        let next = midnight.and_local_timezone(self.day_offset).single().expect("fixed offsets are unambiguous");
        (next - local).to_std().unwrap_or_default()
    }

    /// Admits one call under `limit` or says why not. For agreements this also checks and counts
    /// the daily request quota and returns the row and byte budget left for the call;
    /// `load_usage` reads the day's usage from the store the first time an agreement is seen that
    /// day.
    pub fn admit(
        &self,
        limit: &Limit,
        client: IpAddr,
        now: DateTime<Utc>,
        load_usage: impl FnOnce(&str, &str) -> Usage,
    ) -> Result<(Admission, Option<Budget>), Denied> {
        match limit {
            Limit::Anonymous => {
                let defaults = self.defaults.load();
                let outcome = defaults.anonymous.check_key(&client);
                self.outcome("anonymous", defaults.rates.anonymous, outcome).map(|a| (a, None))
            }
            Limit::Key(key) => {
                let defaults = self.defaults.load();
                let outcome = defaults.keys.check_key(key);
                self.outcome("key", defaults.rates.key, outcome).map(|a| (a, None))
            }
            Limit::Agreement { id, rate, quota } => {
                let limiter = match self.agreements.get(id).filter(|entry| entry.0 == *rate) {
                    Some(entry) => entry.1.clone(),
                    // First call, or terms changed since the limiter was made: start afresh
                    // under the agreement's rate.
                    None => {
                        let fresh = Arc::new(RateLimiter::direct(quota_of(*rate)).with_middleware());
                        self.agreements.insert(id.clone(), (*rate, fresh.clone()));
                        fresh
                    }
                };
                let counter = self.counter(id, now, load_usage);
                let used = counter.usage();
                let retry_after = self.until_next_day(now);
                for (name, used, limit) in [
                    ("requests_per_day", used.requests, quota.requests_per_day),
                    ("rows_per_day", used.rows, quota.rows_per_day),
                    ("bytes_per_day", used.bytes, quota.bytes_per_day),
                ] {
                    if used >= limit {
                        return Err(Denied::Quota { quota: name, limit, retry_after });
                    }
                }
                let admission = self.outcome("agreement", *rate, limiter.check())?;
                if take(&counter.requests, 1, quota.requests_per_day).is_err() {
                    return Err(Denied::Quota {
                        quota: "requests_per_day",
                        limit: quota.requests_per_day,
                        retry_after,
                    });
                }
                let budget = Budget { counter, rows_per_day: quota.rows_per_day, bytes_per_day: quota.bytes_per_day };
                Ok((admission, Some(budget)))
            }
        }
    }

    fn counter(
        &self,
        agreement: &str,
        now: DateTime<Utc>,
        load_usage: impl FnOnce(&str, &str) -> Usage,
    ) -> Arc<QuotaCounter> {
        let day = self.day(now);
        if let Some(c) = self.quotas.get(agreement).filter(|c| c.day == day) {
            return c.clone();
        }
        let usage = load_usage(agreement, &day.to_string());
        self.saved.lock().expect("usage lock").insert((agreement.to_owned(), day), usage);
        let fresh = Arc::new(QuotaCounter {
            day,
            requests: AtomicU64::new(usage.requests),
            rows: AtomicU64::new(usage.rows),
            bytes: AtomicU64::new(usage.bytes),
            unpushed_rows: AtomicU64::new(0),
            unpushed_bytes: AtomicU64::new(0),
        });
        // Two first calls of the day may race here; the first one stored wins, and both count
        // into it.
        self.quotas
            .entry(agreement.to_owned())
            .and_modify(|c| {
                if c.day != fresh.day {
                    *c = fresh.clone();
                }
            })
            .or_insert_with(|| fresh.clone())
            .clone()
    }

    fn outcome(
        &self,
        policy: &'static str,
        rate: Rate,
        outcome: Result<StateSnapshot, NotUntil<<DefaultClock as Clock>::Instant>>,
    ) -> Result<Admission, Denied> {
        match outcome {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                let missing = u64::from(rate.burst.saturating_sub(remaining));
                Ok(Admission {
                    policy,
                    burst: rate.burst,
                    remaining,
                    reset_seconds: missing.div_ceil(u64::from(rate.per_second.max(1))),
                })
            }
            Err(not_until) => {
                Err(Denied::Rate { policy, burst: rate.burst, retry_after: not_until.wait_time_from(self.clock.now()) })
            }
        }
    }

    /// Today's usage of `agreement` as counted here, if it is counted here, and the rows and
    /// bytes of it not yet pushed to the shared limiter.
    pub fn usage_here(&self, agreement: &str, now: DateTime<Utc>) -> Option<(Usage, Usage)> {
        let day = self.day(now);
        let counter = self.quotas.get(agreement).filter(|c| c.day == day)?;
        let unpushed = Usage {
            requests: 0,
            rows: counter.unpushed_rows.load(Ordering::Acquire),
            bytes: counter.unpushed_bytes.load(Ordering::Acquire),
        };
        Some((counter.usage(), unpushed))
    }

    /// Whether today's usage of `agreement` is already counted here (so admitting it reads
    /// nothing from the store).
    pub fn has_counter(&self, agreement: &str, now: DateTime<Utc>) -> bool {
        let day = self.day(now);
        self.quotas.get(agreement).is_some_and(|c| c.day == day)
    }

    /// The row and byte budget of a call the shared limiter admitted: today's counter here,
    /// brought up to the usage across all instances.
    pub fn shared_budget(&self, agreement: &str, quota: &policy::Quota, used: Usage, now: DateTime<Utc>) -> Budget {
        let counter = self.counter(agreement, now, |_, _| used);
        counter.requests.fetch_max(used.requests, Ordering::AcqRel);
        counter.rows.fetch_max(used.rows + counter.unpushed_rows.load(Ordering::Acquire), Ordering::AcqRel);
        counter.bytes.fetch_max(used.bytes + counter.unpushed_bytes.load(Ordering::Acquire), Ordering::AcqRel);
        Budget { counter, rows_per_day: quota.rows_per_day, bytes_per_day: quota.bytes_per_day }
    }

    /// Today's rows and bytes not yet pushed to the shared limiter, per agreement, taken (the
    /// counts start again from zero).
    pub fn take_unpushed(&self) -> Vec<(String, u64, u64)> {
        self.quotas
            .iter()
            .filter_map(|c| {
                let rows = c.unpushed_rows.swap(0, Ordering::AcqRel);
                let bytes = c.unpushed_bytes.swap(0, Ordering::AcqRel);
                (rows > 0 || bytes > 0).then(|| (c.key().clone(), rows, bytes))
            })
            .collect()
    }

    /// Puts back counts a failed push did not deliver.
    pub fn give_back(&self, agreement: &str, rows: u64, bytes: u64) {
        if let Some(c) = self.quotas.get(agreement) {
            c.unpushed_rows.fetch_add(rows, Ordering::AcqRel);
            c.unpushed_bytes.fetch_add(bytes, Ordering::AcqRel);
        }
    }

    /// Takes in the totals across all instances after a push.
    pub fn take_in(&self, agreement: &str, rows: u64, bytes: u64) {
        if let Some(c) = self.quotas.get(agreement) {
            c.rows.fetch_max(rows + c.unpushed_rows.load(Ordering::Acquire), Ordering::AcqRel);
            c.bytes.fetch_max(bytes + c.unpushed_bytes.load(Ordering::Acquire), Ordering::AcqRel);
        }
    }

    /// Drops limiter entries that are back to their initial state and counters of past days.
    pub fn housekeep(&self, now: DateTime<Utc>) {
        let defaults = self.defaults.load();
        defaults.anonymous.retain_recent();
        defaults.anonymous.shrink_to_fit();
        defaults.keys.retain_recent();
        defaults.keys.shrink_to_fit();
        let today = self.day(now);
        self.quotas.retain(|_, c| c.day == today);
    }

    /// Entries held by the per-address limiter.
    pub fn tracked_addresses(&self) -> usize {
        self.defaults.load().anonymous.len()
    }

    /// Writes the quota usage that changed since the last call to the store.
    pub fn save_usage(&self, store: &dyn Store) {
        let mut saved = self.saved.lock().expect("usage lock");
        for entry in self.quotas.iter() {
            let key = (entry.key().clone(), entry.day);
            let usage = entry.usage();
            if saved.get(&key) != Some(&usage) {
                match store.save_usage(&key.0, &key.1.to_string(), usage) {
                    Ok(()) => {
                        saved.insert(key, usage);
                    }
                    Err(e) => tracing::warn!(agreement = %key.0, error = %e, "quota usage not saved; will retry"),
                }
            }
        }
        let today = self.day(Utc::now());
        saved.retain(|(_, day), _| *day == today);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use policy::Quota as DailyQuota;

    fn limiter() -> Limiter {
        let rate = Rate { per_second: 1000, burst: 1 };
        Limiter::new(DefaultRates { anonymous: rate, key: rate }, FixedOffset::east_opt(8 * 3600).unwrap())
    }

    #[test]
    fn a_million_distinct_addresses_leave_no_trace_once_idle() {
        let limiter = limiter();
        let now = Utc::now();
        for i in 0..1_000_000u32 {
            let address = IpAddr::from(std::net::Ipv6Addr::from(u128::from(i) + 1));
            limiter.admit(&Limit::Anonymous, address, now, |_, _| Usage::default()).unwrap();
        }
        assert_eq!(limiter.tracked_addresses(), 1_000_000);
        // At 1000 per second with a burst of 1, every address is back to "never seen" 1 ms
        // after its call.
        std::thread::sleep(Duration::from_millis(20));
        limiter.housekeep(now);
        assert_eq!(limiter.tracked_addresses(), 0);
    }

    #[test]
    fn agreements_admit_their_burst_then_refuse_with_a_wait() {
        let limiter = limiter();
        let limit = Limit::Agreement {
            id: "ag".into(),
            rate: Rate { per_second: 1, burst: 3 },
            quota: DailyQuota { requests_per_day: 100, rows_per_day: 100, bytes_per_day: 100 },
        };
        let now = Utc::now();
        let local = IpAddr::from([127, 0, 0, 1]);
        let remaining: Vec<u32> =
            (0..3).map(|_| limiter.admit(&limit, local, now, |_, _| Usage::default()).unwrap().0.remaining).collect();
        assert_eq!(remaining, vec![2, 1, 0]);
        let Err(Denied::Rate { retry_after, .. }) = limiter.admit(&limit, local, now, |_, _| Usage::default()) else {
            panic!("the fourth call in the same instant must be refused")
        };
        assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_secs(1));
    }

    #[test]
    fn quotas_count_per_day_from_the_stored_usage() {
        let limiter = limiter();
        let limit = Limit::Agreement {
            id: "ag".into(),
            rate: Rate { per_second: 1000, burst: 1000 },
            quota: DailyQuota { requests_per_day: 5, rows_per_day: 100, bytes_per_day: 1000 },
        };
        let now: DateTime<Utc> = "2026-01-01T15:59:00Z".parse().unwrap(); // 23:59 in UTC+8
        let local = IpAddr::from([127, 0, 0, 1]);
        let stored = Usage { requests: 3, rows: 0, bytes: 0 };
        for _ in 0..2 {
            limiter
                .admit(&limit, local, now, |_, day| {
                    assert_eq!(day, "2026-01-01");
                    stored
                })
                .unwrap();
        }
        let Err(Denied::Quota { quota, retry_after, .. }) = limiter.admit(&limit, local, now, |_, _| stored) else {
            panic!()
        };
        assert_eq!((quota, retry_after), ("requests_per_day", Duration::from_secs(60)));
        // A new day in UTC+8 starts afresh.
        let tomorrow: DateTime<Utc> = "2026-01-01T16:00:00Z".parse().unwrap();
        let (_, budget) = limiter.admit(&limit, local, tomorrow, |_, _| Usage::default()).unwrap();
        let budget = budget.unwrap();
        assert_eq!(budget.take_rows(101), Err(100));
        budget.take_rows(100).unwrap();
        assert_eq!(budget.take_rows(1), Err(0));
        let Err(Denied::Quota { quota, .. }) = limiter.admit(&limit, local, tomorrow, |_, _| Usage::default()) else {
            panic!()
        };
        assert_eq!(quota, "rows_per_day");
    }
}
