//! What every request reads: the configuration, the catalog, the store and its caches, the
//! limiters and the upstream client; and how they are opened on start.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use chrono::FixedOffset;
use policy::DatasetId;
use rand::RngCore;

use crate::audit::segments::SegmentLog;
use crate::audit::Audit;
use crate::auth::Keys;
use crate::config::{Config, DatasetConfig};
use crate::metrics::Metrics;
use crate::ratelimit::{DefaultRates, Limiter};
use crate::source::upstream::Upstream;
use crate::source::SourceContext;
use crate::store::sqlite::SqliteStore;
use crate::store::Store;

/// One catalog entry: the rules' view and the source configuration.
pub struct CatalogEntry {
    pub dataset: policy::Dataset,
    pub config: DatasetConfig,
}

/// The catalog, in declaration order, with lookup by id.
pub struct Catalog {
    entries: Vec<CatalogEntry>,
    by_id: HashMap<DatasetId, usize>,
}

impl Catalog {
    pub fn new(datasets: &[DatasetConfig]) -> Catalog {
        let entries: Vec<CatalogEntry> =
            datasets.iter().map(|d| CatalogEntry { dataset: d.to_dataset(), config: d.clone() }).collect();
        let by_id = entries.iter().enumerate().map(|(i, e)| (e.dataset.id.clone(), i)).collect();
        Catalog { entries, by_id }
    }

    pub fn get(&self, id: &DatasetId) -> Option<&CatalogEntry> {
        self.by_id.get(id).map(|&i| &self.entries[i])
    }

    pub fn entries(&self) -> impl Iterator<Item = &CatalogEntry> {
        self.entries.iter()
    }
}

/// The gateway's shared state.
pub struct State {
    pub config: Config,
    pub catalog: Catalog,
    pub upstream: Upstream,
    pub store: Arc<dyn Store>,
    pub keys: Arc<Keys>,
    pub limiter: Limiter,
    /// The `hash` mask's secret.
    pub hash_key: Arc<[u8]>,
    /// The operator token the admin API asks for.
    pub admin_token: String,
    pub audit: Audit,
    pub metrics: Metrics,
}

/// Where the audit log of a data directory lives.
pub fn audit_dir(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("audit")
}

/// Environment variable holding the operator token; when unset, one is generated into
/// `<data-dir>/admin.token`.
pub const ADMIN_TOKEN_ENV: &str = "KAIFANG_ADMIN_TOKEN";

impl State {
    /// Opens the store in the data directory, brings the declared principals and agreements
    /// into it, and loads (or makes) the secrets.
    pub fn open(config: Config) -> Result<State, String> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| format!("cannot create data dir {}: {e}", config.data_dir.display()))?;
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(&config.data_dir)
                .map_err(|e| format!("cannot open the store in {}: {e}", config.data_dir.display()))?,
        );
        store_declared(store.as_ref(), &config)?;
        let hash_key: Arc<[u8]> = match &config.masks.hash_key {
            Some(key) => key.as_bytes().into(),
            None => secret_file(&config.data_dir.join("mask-hash.key"))?.into_bytes().into(),
        };
        let admin_token = match std::env::var(ADMIN_TOKEN_ENV) {
            Ok(token) if !token.is_empty() => token,
            _ => secret_file(&config.data_dir.join("admin.token"))?,
        };
        let offset = FixedOffset::east_opt(config.limits.quota_utc_offset_hours * 3600).expect("checked when loading");
        let limiter =
            Limiter::new(DefaultRates { anonymous: config.limits.anonymous_rate, key: config.limits.key_rate }, offset);
        let metrics = Metrics::new();
        let audit = Audit::new(Arc::new(SegmentLog::open(
            &audit_dir(&config.data_dir),
            config.audit.segment_bytes,
            metrics.audit.clone(),
        )?));
        Ok(State {
            catalog: Catalog::new(&config.datasets),
            upstream: Upstream::new(&config.upstream, metrics.upstream_errors.clone()),
            keys: Arc::new(Keys::new(store.clone(), metrics.cache_lookups.clone())),
            store,
            limiter,
            hash_key,
            admin_token,
            audit,
            metrics,
            config,
        })
    }

    pub fn source_context(&self) -> SourceContext<'_> {
        SourceContext {
            data_dir: &self.config.data_dir,
            upstream: &self.upstream,
            batch_rows: self.config.limits.batch_rows,
        }
    }
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
/// only.
fn secret_file(path: &Path) -> Result<String, String> {
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    }
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    write_private(path, &secret).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(secret)
}

/// Writes `text` to a new file readable and writable by its owner only (mode 0600), through a
/// temporary name so a crash never leaves a half-written secret.
pub fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let partial = path.with_extension("partial");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&partial)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    std::fs::rename(&partial, path)
}
