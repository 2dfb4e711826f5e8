//! What every request reads: the configuration, the catalog, the store and its caches, the
//! limiters and the upstream client; and how they are opened on start.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use chrono::FixedOffset;
use policy::DatasetId;
use rand::RngCore;

use crate::audit::Audit;
use crate::auth::Keys;
use crate::clock::Clock;
use crate::config::{Config, DatasetConfig, Limits, TlsConfig};
use crate::error::StartupError;
use crate::metrics::Metrics;
use crate::ratelimit::{DefaultRates, Limiter};
use crate::shared_limits::SharedLimits;
use crate::source::upstream::Upstream;
use crate::source::SourceContext;
use crate::store::postgres::{Change, PgStore};
use crate::store::sqlite::SqliteStore;
use crate::store::{EntryRecord, Store, Withdrawal};
use crate::tls::Certs;

/// One catalog entry: the rules' view and the source configuration.
pub struct CatalogEntry {
    pub dataset: policy::Dataset,
    pub config: DatasetConfig,
    /// The catalog version: 1 for an entry as declared in the configuration, one more on every
    /// publication through the platform.
    pub version: u64,
}

/// What the platform's workflows add to the declared catalog: entries published through it
/// (which replace a declared entry of the same id) and the withdrawals in force.
#[derive(Default)]
pub struct Overlay {
    pub published: Vec<EntryRecord>,
    pub withdrawals: Vec<Withdrawal>,
}

impl Overlay {
    pub fn load(store: &dyn Store) -> Result<Overlay, crate::store::StoreError> {
        Ok(Overlay { published: store.published()?, withdrawals: store.withdrawals()? })
    }
}

/// The catalog, in declaration order (then publication order), with lookup by id.
pub struct Catalog {
    entries: Vec<CatalogEntry>,
    by_id: HashMap<DatasetId, usize>,
}

impl Catalog {
    pub fn new(datasets: &[DatasetConfig], overlay: &Overlay) -> Catalog {
        let mut entries: Vec<CatalogEntry> =
            datasets.iter().map(|d| CatalogEntry { dataset: d.to_dataset(), config: d.clone(), version: 1 }).collect();
        for record in &overlay.published {
            let entry = CatalogEntry {
                dataset: record.entry.to_dataset(),
                config: record.entry.clone(),
                version: record.version,
            };
            match entries.iter_mut().find(|e| e.dataset.id == record.entry.id) {
                Some(declared) => *declared = entry,
                None => entries.push(entry),
            }
        }
        for withdrawal in &overlay.withdrawals {
            if let Some(entry) = entries.iter_mut().find(|e| e.dataset.id.as_str() == withdrawal.dataset) {
                entry.dataset.withdrawn =
                    Some(policy::Withdrawn { at: withdrawal.withdrawn_at, reason: withdrawal.reason.clone() });
            }
        }
        let by_id = entries.iter().enumerate().map(|(i, e)| (e.dataset.id.clone(), i)).collect();
        Catalog { entries, by_id }
    }

    pub fn get(&self, id: &DatasetId) -> Option<&CatalogEntry> {
        self.by_id.get(id).map(|&i| &self.entries[i])
    }

    pub fn entries(&self) -> impl Iterator<Item = &CatalogEntry> {
        self.entries.iter()
    }

    /// The entries anyone may see and take: open (not `non_open`) and not withdrawn
    /// ([`policy::listed`]).
    pub fn listed(&self) -> impl Iterator<Item = &CatalogEntry> {
        self.entries.iter().filter(|e| policy::listed(&e.dataset))
    }
}

/// What streams in flight are cut for: withdrawn datasets and agreements no longer active.
/// Every change is sent on [`State::cuts`], and each stream checks itself against it.
#[derive(Clone, Debug, Default)]
pub struct Cuts {
    pub withdrawn: HashSet<String>,
    pub ended_agreements: HashSet<String>,
}

/// What a reload changes: the catalog, the limits, the masks' secret and the working-day
/// calendar. A request takes the current one when it starts and keeps it to its end, so a
/// reload never changes a call halfway.
pub struct Live {
    pub catalog: Catalog,
    /// The catalog as the configuration declares it, before the platform's publications.
    pub declared: Arc<[DatasetConfig]>,
    pub limits: Limits,
    /// The `hash` mask's secret.
    pub hash_key: Arc<[u8]>,
    /// How long audit records are kept.
    pub retention_days: u32,
    /// The working days applications' deadlines are counted in.
    pub calendar: Arc<policy::Calendar>,
    /// Tells this live state from every other one of the process (what was answered under one
    /// is not answered from memory under another).
    pub serial: u64,
}

/// Serial numbers of live states.
static LIVE_SERIALS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn next_live_serial() -> u64 {
    LIVE_SERIALS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl Live {
    fn new(config: &Config, overlay: &Overlay) -> Result<Live, String> {
        let hash_key: Arc<[u8]> = match &config.masks.hash_key {
            Some(key) => key.as_bytes().into(),
            None => secret_file(&config.data_dir.join("mask-hash.key"))?.into_bytes().into(),
        };
        Ok(Live {
            catalog: Catalog::new(&config.datasets, overlay),
            declared: config.datasets.clone().into(),
            limits: config.limits.clone(),
            hash_key,
            retention_days: config.audit.retention_days,
            calendar: Arc::new(config.calendar.clone()),
            serial: next_live_serial(),
        })
    }

    pub fn source_context<'a>(&self, data_dir: &'a Path, upstream: &'a Upstream) -> SourceContext<'a> {
        SourceContext { data_dir, upstream, batch_rows: self.limits.batch_rows }
    }
}

/// Where a reload reads the configuration from: the file (or the embedded demo) the gateway
/// started with, with the same command-line overrides.
pub type ConfigSource = Box<dyn Fn() -> Result<Config, Vec<String>> + Send + Sync>;

/// What a reload did.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Reloaded {
    pub datasets: usize,
    pub agreements: usize,
    /// Undecided applications whose provisional due day was counted again on the reloaded
    /// calendar (an official year added, say).
    pub applications_recounted: usize,
    /// Settings that changed but take effect only at the next start (listen addresses, the
    /// data directory, server limits, upstream client settings, audit segment size, the quota
    /// time zone).
    #[schema(value_type = Vec<String>)]
    pub restart_required: Vec<&'static str>,
}

/// The certificates of the listeners that have TLS.
#[derive(Default)]
pub struct ListenerCerts {
    pub http: Option<Arc<Certs>>,
    pub flight: Option<Arc<Certs>>,
    pub admin: Option<Arc<Certs>>,
}

impl ListenerCerts {
    fn load(config: &Config) -> Result<ListenerCerts, String> {
        let load = |name: &str, tls: &Option<TlsConfig>| {
            tls.as_ref().map(|t| Certs::load(t).map_err(|e| format!("{name}.tls: {e}"))).transpose()
        };
        Ok(ListenerCerts {
            http: load("http", &config.http.tls)?,
            flight: load("flight", &config.flight.tls)?,
            admin: load("admin", &config.admin.tls)?,
        })
    }
}

/// The gateway's shared state.
pub struct State {
    /// The configuration the gateway started with; what a reload can change is in [`Live`].
    pub config: Config,
    live: arc_swap::ArcSwap<Live>,
    source: Option<ConfigSource>,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
    pub upstream: Upstream,
    /// The listeners' certificates, which a reload replaces.
    pub certs: ListenerCerts,
    pub store: Arc<dyn Store>,
    pub keys: Arc<Keys>,
    pub limiter: Limiter,
    /// The data answers in flight and their memory budget.
    pub answers: crate::answers::Answers,
    /// Datasets decoded in memory, with their indexes.
    pub decoded: crate::cache::DecodedCache,
    /// The SQL engine of Flight SQL's statements.
    pub sql: crate::sql::Engine,
    /// The operator token the admin API asks for.
    pub admin_token: String,
    pub audit: Audit,
    pub metrics: Metrics,
    /// Tells streams in flight that a dataset was withdrawn or an agreement ended.
    pub cuts: tokio::sync::watch::Sender<Cuts>,
    /// Wakes the webhook sender when a notification is written.
    pub notifications_waiting: tokio::sync::Notify,
    /// The secret departments' webhook signing keys are derived from ([`crate::notify`]).
    pub webhook_secret: String,
    /// The rate limits and quotas shared with the other instances, in a cluster.
    pub shared: Option<Arc<SharedLimits>>,
    /// The workflows' clock.
    pub clock: Clock,
    /// The open objections by dataset the catalog shows.
    pub open_objections: crate::http::objections::OpenObjections,
    /// The port the Flight service listens on, once it does (the portal's code examples
    /// name it).
    pub flight_port: std::sync::OnceLock<u16>,
}

/// Where the audit log of a data directory lives.
pub fn audit_dir(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("audit")
}

/// Environment variable holding the operator token; when unset, one is generated into
/// `<data-dir>/admin.token`.
pub const ADMIN_TOKEN_ENV: &str = "KAIFANG_ADMIN_TOKEN";

impl State {
    /// Today on the workflows' clock, in the platform's time zone (the one daily quotas count in).
    pub fn today(&self) -> chrono::NaiveDate {
        self.local_date(self.clock.now())
    }

    /// The date of `at` in the platform's time zone.
    pub fn local_date(&self, at: chrono::DateTime<chrono::Utc>) -> chrono::NaiveDate {
        at.with_timezone(&platform_offset(&self.config)).date_naive()
    }

    /// Runs a store call off the runtime. A store error answers as its one conversion says, on
    /// every router ([`crate::error::Error`]'s `From<StoreError>`).
    pub async fn store_call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> Result<T, crate::store::StoreError> + Send + 'static,
    ) -> Result<T, crate::error::Error> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(store.as_ref()))
            .await
            .map_err(|e| crate::error::Error::internal(format!("store task failed: {e}")))?
            .map_err(crate::error::Error::from)
    }

    /// Opens the store in the data directory, brings the declared principals and agreements
    /// into it, and loads (or makes) the secrets.
    pub fn open(config: Config) -> Result<State, StartupError> {
        let directory = |path: &Path| {
            std::fs::create_dir_all(path).map_err(|source| StartupError::Directory { path: path.to_owned(), source })
        };
        directory(&config.data_dir)?;
        // Each department's folder for the files of its drafts is there for it to fill.
        for folder in config.sources.departments.values() {
            directory(&config.data_dir.join(folder))?;
        }
        let store: Arc<dyn Store> = match &config.cluster {
            None => Arc::new(SqliteStore::open(&config.data_dir).map_err(|e| {
                StartupError::Store(format!("cannot open the store in {}: {e}", config.data_dir.display()))
            })?),
            Some(cluster) => Arc::new(
                PgStore::open(&cluster.store)
                    .map_err(|e| StartupError::Store(format!("cannot open the store: {e}")))?,
            ),
        };
        store_declared(store.as_ref(), &config).map_err(StartupError::Store)?;
        let recounted = recount_due_days(store.as_ref(), &config.calendar, platform_offset(&config))
            .map_err(StartupError::Store)?;
        if recounted > 0 {
            tracing::info!(applications = recounted, "provisional due days counted again on the calendar");
        }
        let overlay = Overlay::load(store.as_ref())
            .map_err(|e| StartupError::Store(format!("cannot read the published catalog and withdrawals: {e}")))?;
        let live = Live::new(&config, &overlay).map_err(StartupError::Config)?;
        let (cuts, _) = tokio::sync::watch::channel(Cuts::default());
        let certs = ListenerCerts::load(&config).map_err(StartupError::Tls)?;
        let admin_token = match std::env::var(ADMIN_TOKEN_ENV) {
            Ok(token) if !token.is_empty() => token,
            _ => secret_file(&config.data_dir.join("admin.token")).map_err(StartupError::Secret)?,
        };
        let offset = platform_offset(&config);
        let limiter =
            Limiter::new(DefaultRates { anonymous: config.limits.anonymous_rate, key: config.limits.key_rate }, offset);
        let metrics = Metrics::new();
        let audit: Arc<dyn crate::audit::AuditSink> = match &config.cluster {
            None => Arc::new(
                crate::audit::segments::open(
                    &audit_dir(&config.data_dir),
                    config.audit.segment_bytes,
                    metrics.audit.clone(),
                )
                .map_err(StartupError::Audit)?,
            ),
            Some(cluster) => Arc::new(
                crate::audit::postgres::open(&cluster.store, &cluster.instance, metrics.audit.clone())
                    .map_err(StartupError::Audit)?,
            ),
        };
        let audit = Audit::new(audit);
        // Opened, so answering; the shared limiter says so once it has answered.
        for backend in ["store", "audit"] {
            metrics.backend_up.with_label_values(&[backend]).set(1);
        }
        if config.cluster.is_none() {
            metrics.backend_up.with_label_values(&["limiter"]).set(1);
        }
        let shared = match &config.cluster {
            None => None,
            Some(cluster) => Some(Arc::new(
                SharedLimits::new(
                    &cluster.limiter,
                    &cluster.limiter_prefix,
                    cluster.instances,
                    cluster.on_limiter_failure,
                    metrics.backend_up.with_label_values(&["limiter"]),
                    metrics.limiter_fallbacks.clone(),
                )
                .map_err(StartupError::Limiter)?,
            )),
        };
        let webhook_secret = crate::notify::signing_secret(&config).map_err(StartupError::Secret)?;
        let clock = Clock::from_env().map_err(StartupError::Config)?;
        let open_objections = crate::http::objections::OpenObjections::new(metrics.cache_lookups.clone());
        Ok(State {
            live: arc_swap::ArcSwap::from_pointee(live),
            source: None,
            reloading: tokio::sync::Mutex::new(()),
            upstream: Upstream::new(&config.upstream, metrics.upstream_errors.clone()),
            certs,
            keys: Arc::new(Keys::new(store.clone(), metrics.cache_lookups.clone())),
            answers: crate::answers::Answers::new(&config.server, &metrics),
            decoded: crate::cache::DecodedCache::new(&config.cache, &metrics),
            sql: crate::sql::Engine::new(config.server.sql_memory_bytes, config.limits.batch_rows),
            store,
            limiter,
            admin_token,
            audit,
            metrics,
            config,
            cuts,
            notifications_waiting: tokio::sync::Notify::new(),
            webhook_secret,
            shared,
            clock,
            open_objections,
            flight_port: std::sync::OnceLock::new(),
        })
    }

    /// Where [`State::reload`] reads the configuration from.
    pub fn with_source(mut self, source: ConfigSource) -> State {
        self.source = Some(source);
        self
    }

    /// The catalog and limits in force now.
    pub fn live(&self) -> Arc<Live> {
        self.live.load_full()
    }

    /// Reads the configuration again and applies it: catalog, declared principals and
    /// agreements, limits and the masks' secret. An invalid configuration changes nothing and
    /// comes back as its errors (file, line, field); calls in flight finish on what they started
    /// with.
    pub async fn reload(&self) -> Result<Reloaded, Vec<String>> {
        let _one_at_a_time = self.reloading.lock().await;
        let source =
            self.source.as_ref().ok_or_else(|| vec!["this gateway has no configuration to reload".to_owned()])?;
        let mut config = source()?;
        // What cannot change without a restart stays as it is, and is said so.
        let started = &self.config;
        let mut restart_required = Vec::new();
        let mut differs = |name: &'static str, changed: bool| {
            if changed {
                restart_required.push(name);
            }
        };
        differs("data_dir", config.data_dir != started.data_dir);
        differs("http.listen", config.http.listen != started.http.listen);
        differs("flight.listen", config.flight.listen != started.flight.listen);
        differs("admin.listen", config.admin.listen != started.admin.listen);
        differs("server", format!("{:?}", config.server) != format!("{:?}", started.server));
        differs("upstream", format!("{:?}", config.upstream) != format!("{:?}", started.upstream));
        differs("sources", format!("{:?}", config.sources) != format!("{:?}", started.sources));
        differs("audit.segment_bytes", config.audit.segment_bytes != started.audit.segment_bytes);
        differs("webhooks", format!("{:?}", config.webhooks) != format!("{:?}", started.webhooks));
        differs("cluster", format!("{:?}", config.cluster) != format!("{:?}", started.cluster));
        // A listener's TLS can change certificates, not turn on or off or change its client CA.
        let tls_shape = |t: &Option<TlsConfig>| t.as_ref().map(|t| t.client_ca.clone());
        differs("http.tls", tls_shape(&config.http.tls) != tls_shape(&started.http.tls));
        differs("flight.tls", tls_shape(&config.flight.tls) != tls_shape(&started.flight.tls));
        differs("admin.tls", tls_shape(&config.admin.tls) != tls_shape(&started.admin.tls));
        // New certificates are read in full before anything changes.
        let mut new_certs = Vec::new();
        for (name, certs, tls) in [
            ("http", &self.certs.http, &config.http.tls),
            ("flight", &self.certs.flight, &config.flight.tls),
            ("admin", &self.certs.admin, &config.admin.tls),
        ] {
            if let (Some(certs), Some(tls)) = (certs, tls) {
                new_certs.push((certs, crate::tls::certified_key(tls).map_err(|e| vec![format!("{name}.tls: {e}")])?));
            }
        }
        differs(
            "limits.quota_utc_offset_hours",
            config.limits.quota_utc_offset_hours != started.limits.quota_utc_offset_hours,
        );
        config.data_dir = started.data_dir.clone();
        let store = self.store.clone();
        let declared = config.clone();
        tokio::task::spawn_blocking(move || store_declared(store.as_ref(), &declared))
            .await
            .map_err(|e| vec![format!("reload task failed: {e}")])?
            .map_err(|e| vec![e])?;
        let store = self.store.clone();
        let overlay = tokio::task::spawn_blocking(move || Overlay::load(store.as_ref()))
            .await
            .map_err(|e| vec![format!("reload task failed: {e}")])?
            .map_err(|e| vec![format!("cannot read the published catalog and withdrawals: {e}")])?;
        let live = Live::new(&config, &overlay).map_err(|e| vec![e])?;
        // Applications counted provisionally are counted again on the new calendar before it
        // answers: an application seen after the reload has its final due day.
        let (store, calendar, offset) = (self.store.clone(), live.calendar.clone(), platform_offset(started));
        let applications_recounted =
            tokio::task::spawn_blocking(move || recount_due_days(store.as_ref(), &calendar, offset))
                .await
                .map_err(|e| vec![format!("reload task failed: {e}")])?
                .map_err(|e| vec![e])?;
        self.limiter
            .set_defaults(DefaultRates { anonymous: config.limits.anonymous_rate, key: config.limits.key_rate });
        let mut reloaded = Reloaded {
            datasets: live.catalog.entries().count(),
            agreements: config.agreements.len(),
            applications_recounted,
            restart_required,
        };
        let calendar = live.calendar.clone();
        self.live.store(Arc::new(live));
        // And those submitted on the old calendar while the first count ran.
        let (store, offset) = (self.store.clone(), platform_offset(started));
        match tokio::task::spawn_blocking(move || recount_due_days(store.as_ref(), &calendar, offset)).await {
            Ok(Ok(n)) => reloaded.applications_recounted += n,
            Ok(Err(e)) => tracing::warn!(error = %e, "due days not counted again after the reload"),
            Err(e) => tracing::warn!(error = %e, "due-day count task failed"),
        }
        for (certs, key) in new_certs {
            certs.install(key);
        }
        // Agreements and principals may have changed in the store: the next request reads them.
        self.keys.invalidate();
        tracing::info!(
            datasets = reloaded.datasets,
            applications_recounted = reloaded.applications_recounted,
            restart_required = ?reloaded.restart_required,
            "configuration reloaded"
        );
        Ok(reloaded)
    }
}

impl State {
    /// Rebuilds the catalog after a publication, withdrawal or reopening in the store, and
    /// tells streams in flight.
    pub async fn refresh_catalog(&self) -> Result<(), crate::error::Error> {
        let _one_at_a_time = self.reloading.lock().await;
        let store = self.store.clone();
        let overlay = tokio::task::spawn_blocking(move || Overlay::load(store.as_ref()))
            .await
            .map_err(|e| crate::error::Error::internal(format!("catalog task failed: {e}")))??;
        let current = self.live();
        let live = Live {
            catalog: Catalog::new(&current.declared, &overlay),
            declared: current.declared.clone(),
            limits: current.limits.clone(),
            hash_key: current.hash_key.clone(),
            retention_days: current.retention_days,
            calendar: current.calendar.clone(),
            serial: next_live_serial(),
        };
        let withdrawn: HashSet<String> = overlay.withdrawals.iter().map(|w| w.dataset.clone()).collect();
        self.live.store(Arc::new(live));
        self.cuts.send_modify(|cuts| cuts.withdrawn = withdrawn);
        Ok(())
    }

    /// In a cluster, starts listening for the changes other instances announce: each drops the
    /// caches (through the store's change count), reloads the catalog or cuts the answers in
    /// flight, as it says.
    pub fn follow_changes(self: &Arc<Self>) -> Result<(), StartupError> {
        let Some(cluster) = &self.config.cluster else { return Ok(()) };
        let state = Arc::downgrade(self);
        let runtime = tokio::runtime::Handle::current();
        crate::store::postgres::listen(&cluster.store, move |change| {
            let Some(state) = state.upgrade() else { return };
            match change {
                // The key cache sees these by the store's change count on the next request.
                Change::Keys | Change::Other => {}
                Change::Agreement { id, active } => state.agreement_changed(&id, active),
                Change::Objections => state.open_objections.changed(),
                Change::Catalog | Change::Resync => {
                    state.open_objections.changed();
                    runtime.spawn(async move {
                        if let Err(e) = state.refresh_catalog().await {
                            tracing::warn!(error = %e, "catalog not reloaded after a change elsewhere");
                        }
                    });
                }
            }
        })
        .map_err(StartupError::Store)
    }

    /// Marks an agreement ended (suspended or revoked) or active again for streams in flight.
    pub fn agreement_changed(&self, id: &str, active: bool) {
        self.cuts.send_modify(|cuts| {
            if active {
                cuts.ended_agreements.remove(id);
            } else {
                cuts.ended_agreements.insert(id.to_owned());
            }
        });
    }
}

/// The platform's time zone, in which application deadlines and daily quotas are counted.
pub fn platform_offset(config: &Config) -> FixedOffset {
    FixedOffset::east_opt(config.limits.quota_utc_offset_hours * 3600).expect("checked when loading")
}

/// Counts again, on `calendar`, the due day of every undecided application whose due day was
/// counted provisionally ([`policy::Application::recount`]); how many changed. Each is
/// replaced only if still stored as read, so a decision made meanwhile (here or on another
/// instance) wins. One the calendar cannot count (a year past its reach) keeps its day.
pub fn recount_due_days(store: &dyn Store, calendar: &policy::Calendar, offset: FixedOffset) -> Result<usize, String> {
    let applications = store.applications().map_err(|e| format!("cannot read the applications: {e}"))?;
    let mut recounted = 0;
    for application in applications {
        let mut counted = application.clone();
        let submitted = application.submitted_at.with_timezone(&offset).date_naive();
        match counted.recount(calendar, submitted) {
            Ok(false) => {}
            Ok(true) => {
                let replaced = store
                    .replace_application(&application, &counted)
                    .map_err(|e| format!("application `{}`: {e}", application.id))?;
                if replaced {
                    tracing::info!(application = %application.id, was = %application.due_by, due_by = %counted.due_by,
                        provisional = counted.due_by_provisional, "due day counted again");
                    recounted += 1;
                }
            }
            Err(e) => tracing::warn!(application = %application.id, error = %e, "due day not counted again"),
        }
    }
    Ok(recounted)
}

/// Writes the principals and agreements declared in the configuration to the store. The terms
/// come from the configuration; an agreement's status is the platform's to change, so a revoked
/// declared agreement stays revoked across restarts.
pub fn store_declared(store: &dyn Store, config: &Config) -> Result<(), String> {
    for principal in &config.principals {
        store.put_principal(principal, true).map_err(|e| format!("principal `{}`: {e}", principal.id))?;
    }
    for declared in &config.agreements {
        let mut agreement = declared.clone();
        if let Some(existing) = store.agreement(&agreement.id).map_err(|e| e.to_string())? {
            agreement.status = existing.status;
        }
        store.put_agreement(&agreement, true).map_err(|e| format!("agreement `{}`: {e}", agreement.id))?;
    }
    Ok(())
}

/// Reads a secret from `path`, or makes a random one and writes it there, readable by the owner
/// only. Processes starting together on one data directory (the instances of a cluster) all end
/// up with the same secret: the file is created once, whole, by whichever gets there first, and
/// the others read it.
pub fn secret_file(path: &Path) -> Result<String, String> {
    // `None`: no such file; `Some("")`: a file with no secret in it (emptied by hand).
    let read = || match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text.trim().to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    };
    let found = read()?;
    if let Some(secret) = found.as_ref().filter(|s| !s.is_empty()) {
        return Ok(secret.clone());
    }
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let secret = hex::encode(bytes);
    let written = match found {
        None => create_private(path, &secret),
        Some(_) => write_private(path, &secret),
    };
    match written {
        Ok(()) => Ok(secret),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read()?
            .filter(|s| !s.is_empty())
            .ok_or_else(|| format!("{} was emptied by another process", path.display())),
        Err(e) => Err(format!("cannot write {}: {e}", path.display())),
    }
}

/// Creates `path` holding `text` (mode 0600), whole or not at all, failing with `AlreadyExists`
/// if it is there: written under a name of this writer's own, then linked into place, which
/// never replaces a file another writer linked first.
fn create_private(path: &Path, text: &str) -> std::io::Result<()> {
    let partial = path.with_extension(format!("partial-{}-{:016x}", std::process::id(), rand::rng().next_u64()));
    let written = write_file(&partial, text).and_then(|()| std::fs::hard_link(&partial, path));
    let _ = std::fs::remove_file(&partial);
    written
}

/// Writes `text` to a new file readable and writable by its owner only (mode 0600), through a
/// temporary name so a crash never leaves a half-written secret.
pub fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    let partial = path.with_extension("partial");
    write_file(&partial, text)?;
    std::fs::rename(&partial, path)
}

/// Writes `text` and a newline to `path` (mode 0600) and makes it durable.
fn write_file(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::secret_file;

    /// Writers starting together on one path (the instances of a cluster on one data directory)
    /// all succeed and all get the secret the file holds.
    #[test]
    fn writers_racing_for_a_secret_file_all_get_the_one_written() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("webhook-signing.key");
            let start = std::sync::Arc::new(std::sync::Barrier::new(8));
            let writers: Vec<_> = (0..8)
                .map(|_| {
                    let (path, start) = (path.clone(), start.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        secret_file(&path)
                    })
                })
                .collect();
            let secrets: Vec<String> = writers.into_iter().map(|w| w.join().unwrap().unwrap()).collect();
            let stored = std::fs::read_to_string(&path).unwrap().trim().to_owned();
            assert!(secrets.iter().all(|s| *s == stored), "{secrets:?} against {stored}");
            let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
            assert_eq!(left.len(), 1, "no partial file is left: {left:?}");
        }
    }
}
