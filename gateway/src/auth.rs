//! API keys: issuing, and turning a presented key into a [`policy::Caller`].
//!
//! A key reads `kf_<id>_<secret>`: the id (64 random bits, hex) names the stored record, the
//! secret (256 random bits, hex) is shown once and stored only as its SHA-256. Since secrets
//! are random and long, a fast hash is enough; comparison is constant-time.
//!
//! Lookups go through two caches (moka): key records by id and agreements by principal. Changes
//! made through this process drop them at once ([`Keys::invalidate`]); changes committed by
//! another process (`kaifang keys revoke` on the same data directory) are noticed through the
//! store's change counter, checked on every keyed request. Either way a revoked key is refused
//! on its very next request. Where reading the counter takes a round trip (PostgreSQL), the
//! requests that ask at the same moment share one read that started after each of them came.

use std::borrow::Cow;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use chrono::Utc;
use policy::{Agreement, Caller};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{Error, Kind};
use crate::shared_read::SharedRead;
use crate::store::{KeyRecord, Store, StoreError};

/// Cached key lookups, including "no such key", so unknown keys cost no store read either.
const CACHE_ENTRIES: u64 = 100_000;
const CACHE_TTL: Duration = Duration::from_secs(300);

/// Key issuing and verification.
pub struct Keys {
    store: Arc<dyn Store>,
    records: moka::sync::Cache<String, Option<Arc<KeyRecord>>>,
    agreements: moka::sync::Cache<String, Arc<[Agreement]>>,
    seen_changes: AtomicI64,
    /// The store's change count for keyed requests when it cannot be read at once: one read
    /// in flight at a time, shared by every request waiting for it.
    counts: SharedRead<i64>,
    /// Bumped by every [`Keys::invalidate`], so a lookup that raced with one knows its entries
    /// may be stale.
    generation: AtomicU64,
    /// `kaifang_cache_lookups_total`, by cache and result.
    lookups: prometheus::IntCounterVec,
}

/// A newly issued key: the record and the secret text, shown once.
pub struct IssuedKey {
    pub record: KeyRecord,
    pub key: String,
}

/// Makes and stores a new key for `principal`.
pub fn issue(store: &dyn Store, principal: &str) -> Result<IssuedKey, StoreError> {
    let mut id = [0u8; 8];
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut id);
    rand::rng().fill_bytes(&mut secret);
    let secret = hex::encode(secret);
    let record = KeyRecord {
        id: hex::encode(id),
        principal: principal.to_owned(),
        secret_sha256: Sha256::digest(secret.as_bytes()).into(),
        created_at: Utc::now(),
        revoked_at: None,
    };
    store.insert_key(&record)?;
    Ok(IssuedKey { key: format!("kf_{}_{secret}", record.id), record })
}

/// The key a request presents: `Authorization: Bearer <key>`, the password of
/// `Authorization: Basic` (as Flight's handshake takes it, and as `curl -u` sends it), or
/// `X-API-Key`.
pub fn presented_key(headers: &hyper::HeaderMap) -> Option<Cow<'_, str>> {
    if let Some(auth) = headers.get(hyper::header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let (scheme, token) = auth.split_once(' ').unwrap_or((auth, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD.decode(token.trim()).ok()?;
            let (_user, password) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
            return Some(Cow::Owned(password.to_owned()));
        }
        return scheme.eq_ignore_ascii_case("bearer").then_some(Cow::Borrowed(token.trim()));
    }
    headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(|k| Cow::Borrowed(k.trim()))
}

fn unknown_key() -> Error {
    Error::new(Kind::Unauthenticated, "unknown_key", "the API key is not known or has been revoked")
}

impl Keys {
    pub fn new(store: Arc<dyn Store>, lookups: prometheus::IntCounterVec) -> Keys {
        let seen = store.change_counter().unwrap_or(0);
        Keys {
            store,
            records: moka::sync::Cache::builder().max_capacity(CACHE_ENTRIES).time_to_live(CACHE_TTL).build(),
            agreements: moka::sync::Cache::builder().max_capacity(CACHE_ENTRIES).time_to_live(CACHE_TTL).build(),
            seen_changes: AtomicI64::new(seen),
            counts: SharedRead::default(),
            generation: AtomicU64::new(0),
            lookups,
        }
    }

    /// Drops every cached lookup; the next request reads the store.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.drop_cached();
    }

    /// Drops the cached lookups without telling lookups in flight (which would make each of
    /// them drop the caches again, on and on under load).
    fn drop_cached(&self) {
        self.records.invalidate_all();
        self.agreements.invalidate_all();
    }

    /// The caller a request's headers make: anonymous without a key, the key's principal with
    /// a valid one, 401 with an unknown, malformed or revoked one.
    pub async fn caller(self: &Arc<Self>, headers: &hyper::HeaderMap) -> Result<Caller, Error> {
        let Some(presented) = presented_key(headers) else {
            if headers.contains_key(hyper::header::AUTHORIZATION) {
                return Err(Error::new(
                    Kind::Unauthenticated,
                    "unknown_key",
                    "use `Authorization: Bearer <key>` (or Basic, with the key as the password)",
                ));
            }
            return Ok(Caller::Anonymous);
        };
        let (id, secret) =
            presented.strip_prefix("kf_").and_then(|rest| rest.split_once('_')).ok_or_else(unknown_key)?;
        let changes = match self.store.change_counter_now() {
            Some(Ok(changes)) => Some(changes),
            Some(Err(_)) => None,
            None => {
                let store = self.store.clone();
                self.counts.read(move || store.change_counter()).await.ok()
            }
        };
        if let Some(known) = changes.and_then(|changes| self.resolve_cached(changes, id, secret)) {
            return known;
        }
        let (id, secret) = (id.to_owned(), secret.to_owned());
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.resolve(&id, &secret))
            .await
            .map_err(|e| Error::internal(format!("key lookup task failed: {e}")))?
    }

    /// The caller a key makes when everything needed is cached and the store has not changed
    /// since (`changes`, its change count read after the request came): no blocking thread, no
    /// store read. `None` sends the lookup the slow way ([`Keys::resolve`]), which reads what
    /// is missing.
    fn resolve_cached(&self, changes: i64, id: &str, secret: &str) -> Option<Result<Caller, Error>> {
        if self.seen_changes.load(Ordering::Acquire) != changes {
            return None;
        }
        let record = self.records.get(id)?;
        let Some(record) = record.filter(|r| r.revoked_at.is_none()) else {
            self.lookups.with_label_values(&["keys", "hit"]).inc();
            return Some(Err(unknown_key()));
        };
        if !secret_matches(&record, secret) {
            self.lookups.with_label_values(&["keys", "hit"]).inc();
            return Some(Err(unknown_key()));
        }
        let agreements = self.agreements.get(&record.principal)?;
        self.lookups.with_label_values(&["keys", "hit"]).inc();
        self.lookups.with_label_values(&["agreements", "hit"]).inc();
        Some(Ok(key_caller(&record, agreements)))
    }

    fn resolve(&self, id: &str, secret: &str) -> Result<Caller, Error> {
        let store_error = Error::from;
        let generation = self.generation.load(Ordering::Acquire);
        let changes = self.store.change_counter().map_err(store_error)?;
        if self.seen_changes.swap(changes, Ordering::AcqRel) != changes {
            self.drop_cached();
        }
        let record = match self.records.get(id) {
            Some(cached) => {
                self.lookups.with_label_values(&["keys", "hit"]).inc();
                cached
            }
            None => {
                self.lookups.with_label_values(&["keys", "miss"]).inc();
                let record = self.store.key(id).map_err(store_error)?.map(Arc::new);
                self.records.insert(id.to_owned(), record.clone());
                record
            }
        };
        let record = record.filter(|r| r.revoked_at.is_none()).ok_or_else(unknown_key)?;
        if !secret_matches(&record, secret) {
            return Err(unknown_key());
        }
        let agreements = match self.agreements.get(&record.principal) {
            Some(a) => {
                self.lookups.with_label_values(&["agreements", "hit"]).inc();
                a
            }
            None => {
                self.lookups.with_label_values(&["agreements", "miss"]).inc();
                let a: Arc<[Agreement]> = self.store.agreements_of(&record.principal).map_err(store_error)?.into();
                self.agreements.insert(record.principal.clone(), a.clone());
                a
            }
        };
        // A change committed (here or by another process) while this lookup read the store
        // may be missing from the entries just cached: drop them so the next request reads
        // again.
        let after = self.store.change_counter().map_err(store_error)?;
        if after != changes || self.generation.load(Ordering::Acquire) != generation {
            self.seen_changes.store(after, Ordering::Release);
            self.drop_cached();
        }
        Ok(key_caller(&record, agreements))
    }
}

/// Whether `secret` is the one `record` was issued with, compared in constant time.
fn secret_matches(record: &KeyRecord, secret: &str) -> bool {
    let presented: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
    bool::from(presented.ct_eq(&record.secret_sha256))
}

fn key_caller(record: &KeyRecord, agreements: Arc<[Agreement]>) -> Caller {
    Caller::Key { key_id: record.id.clone(), principal: record.principal.clone(), agreements }
}
