//! Configuration: listeners, data directory, limits, upstream client settings and the catalog.
//!
//! A configuration is one TOML file, which may `include` further catalog files (one per owner
//! department is the usual layout). Loading reads every file, deserializes each section and
//! each dataset on its own and then checks the whole, so that one run reports every error,
//! each with its file, line and field ([`ConfigError`]). `kaifang check-config` prints them;
//! `kaifang serve` prints the same and refuses to start.
//!
//! Relative source paths are resolved against the data directory; relative `include` paths
//! against the directory of the file that names them.

mod locate;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use policy::{
    Agreement, AgreementStatus, DatasetId, DatasetTerms, Field, Format, OpenType, Principal, Quota, Rate,
    UpdateFrequency,
};
use serde::Deserialize;

use locate::{Document, PathSegment};

/// The demo configuration and catalog compiled into the binary, used when `serve` runs with
/// no `--config`.
pub const EMBEDDED: &[(&str, &str)] = &[
    ("kaifang.toml", include_str!("../../../config/kaifang.toml")),
    ("catalog/transport.toml", include_str!("../../../config/catalog/transport.toml")),
    ("catalog/ecology.toml", include_str!("../../../config/catalog/ecology.toml")),
    ("catalog/market.toml", include_str!("../../../config/catalog/market.toml")),
    ("catalog/civil-affairs.toml", include_str!("../../../config/catalog/civil-affairs.toml")),
    ("calendar/cn.toml", include_str!("../../../config/calendar/cn.toml")),
];

/// Where configuration text comes from: the file system, or the files compiled into the binary.
#[derive(Clone, Copy, Debug)]
pub enum Origin {
    Files,
    Embedded,
}

impl Origin {
    fn read(self, path: &Path) -> std::io::Result<String> {
        match self {
            Origin::Files => std::fs::read_to_string(path),
            Origin::Embedded => EMBEDDED
                .iter()
                .find(|(name, _)| Path::new(name) == path)
                .map(|(_, text)| (*text).to_owned())
                .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "not an embedded file")),
        }
    }
}

/// The whole configuration, checked.
#[derive(Clone, Debug)]
pub struct Config {
    pub data_dir: PathBuf,
    pub http: HttpConfig,
    pub flight: FlightConfig,
    pub admin: AdminConfig,
    pub server: ServerConfig,
    pub limits: Limits,
    pub upstream: UpstreamConfig,
    pub masks: MasksConfig,
    pub audit: AuditConfig,
    pub datasets: Vec<DatasetConfig>,
    /// Principals declared here are created (or updated) in the store on start.
    pub principals: Vec<Principal>,
    /// Agreements declared here are created (or replaced) in the store on start.
    pub agreements: Vec<Agreement>,
    /// Working days (public holidays and make-up days), from the file `calendar` names.
    pub calendar: policy::Calendar,
    pub webhooks: WebhooksConfig,
    pub sources: SourcesConfig,
    pub cache: CacheConfig,
    /// Several instances sharing one state; none for the embedded default.
    pub cluster: Option<ClusterConfig>,
}

/// Several gateway instances acting as one: the store and the audit log on PostgreSQL, rate
/// limits and quotas in Redis.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// This instance's name, unique among the instances (`--instance` overrides); it names the
    /// instance's audit chain.
    pub instance: String,
    /// `postgres://` URL of the shared store and audit log.
    pub store: String,
    /// `redis://` URL of the shared rate limits and quotas.
    pub limiter: String,
    /// How many instances share the limits: the local share is 1/N of an agreement's rate.
    #[serde(default = "ClusterConfig::one")]
    pub instances: u32,
    /// Conditional calls while Redis cannot be reached: `fail_closed` (503) or `local_share`.
    #[serde(default = "ClusterConfig::fail_closed")]
    pub on_limiter_failure: crate::shared_limits::OnFailure,
    /// Prefix of the limiter's Redis keys, so several platforms can share one Redis.
    #[serde(default = "ClusterConfig::prefix")]
    pub limiter_prefix: String,
}

impl ClusterConfig {
    fn one() -> u32 {
        1
    }

    fn fail_closed() -> crate::shared_limits::OnFailure {
        crate::shared_limits::OnFailure::FailClosed
    }

    fn prefix() -> String {
        "kaifang".into()
    }
}

/// Where the sources of catalog drafts may be. Owners write drafts through the API, so a
/// draft's source is checked against this before it is stored and again when it is published:
/// a file must lie (links followed) inside its department's folder, and a URL must name an
/// origin on the allow-list. Entries declared in the configuration files are the operators' own
/// and are not bound by this.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourcesConfig {
    /// Department (as in datasets' `owner`) to its folder inside the data directory, where the
    /// files of its drafts must lie; a department without one can draft URL sources only.
    #[serde(default)]
    pub departments: std::collections::BTreeMap<String, PathBuf>,
    /// Origins (`host` or `host:port`) a draft's URL source may name. Nothing else is fetched
    /// for a draft: not loopback, link-local or private addresses, nor the gateway itself,
    /// unless listed here.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
}

/// Owners' notifications: where each department wants to hear of new applications, new
/// objections and application deadlines coming close.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Department (as in datasets' `owner`) to the http:// URL its notifications are POSTed to.
    #[serde(default)]
    pub owners: std::collections::BTreeMap<String, String>,
    /// Remind the owner when this many working days or fewer are left to answer.
    #[serde(default = "WebhooksConfig::default_remind")]
    pub remind_within_working_days: u32,
    /// Give up on a notification after this many failed attempts (retried with exponential
    /// backoff from one second, at most an hour apart).
    #[serde(default = "WebhooksConfig::default_attempts")]
    pub max_attempts: u32,
    /// The secret each department's signing key is derived from. When absent, a random one is
    /// made on first start and kept in `<data-dir>/webhook-signing.key`; the instances of a
    /// cluster need the same one here.
    #[serde(default)]
    pub signing_secret: Option<String>,
}

impl WebhooksConfig {
    fn default_remind() -> u32 {
        2
    }

    fn default_attempts() -> u32 {
        12
    }
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            owners: Default::default(),
            remind_within_working_days: Self::default_remind(),
            max_attempts: Self::default_attempts(),
            signing_secret: None,
        }
    }
}

/// The admin listener.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the admin API (operator token required) and `/metrics`.
    #[serde(default = "default_admin_listen")]
    pub listen: SocketAddr,
    /// TLS, and optionally client certificates (`client_ca`).
    pub tls: Option<TlsConfig>,
}

/// A listener's TLS: PEM files, relative paths from the configuration file's folder.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// Admin listener only: CA certificates; when set, clients must present a certificate one
    /// of them signed.
    pub client_ca: Option<PathBuf>,
}

fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9090))
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig { listen: default_admin_listen(), tls: None }
    }
}

/// The audit log of conditional data.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// How long records are kept; whole segments older than this are removed (and the chain
    /// anchored past them).
    pub retention_days: u32,
    /// Size at which a segment file is closed and the next one started.
    pub segment_bytes: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig { retention_days: 1095, segment_bytes: 64 << 20 }
    }
}

/// Settings of the masks agreements apply.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MasksConfig {
    /// Secret key of the `hash` mask (HMAC-SHA256). When absent, a random key is made on first
    /// start and kept in `<data-dir>/mask-hash.key`, so hashes stay stable across restarts.
    pub hash_key: Option<String>,
}

/// An agreement as declared in configuration: the demo's, or terms kept in files.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgreementConfig {
    id: String,
    principal: String,
    #[serde(default)]
    purpose: String,
    datasets: Vec<DatasetTerms>,
    /// Start of validity; the Unix epoch when absent.
    valid_from: Option<DateTime<Utc>>,
    valid_until: DateTime<Utc>,
    #[serde(default = "active")]
    status: AgreementStatus,
    rate: Rate,
    quota: Quota,
}

fn active() -> AgreementStatus {
    AgreementStatus::Active
}

impl AgreementConfig {
    fn into_agreement(self) -> Agreement {
        Agreement {
            id: self.id,
            principal: self.principal,
            purpose: self.purpose,
            datasets: self.datasets,
            valid_from: self.valid_from.unwrap_or(DateTime::UNIX_EPOCH),
            valid_until: self.valid_until,
            status: self.status,
            rate: self.rate,
            quota: self.quota,
        }
    }
}

/// The HTTP data listener.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address the HTTP/1.1 and HTTP/2 (h2c) data API listens on.
    #[serde(default = "default_http_listen")]
    pub listen: SocketAddr,
    /// TLS (HTTP/2 by ALPN); plain HTTP when absent.
    pub tls: Option<TlsConfig>,
    /// Which web pages' scripts may call the data API.
    #[serde(default)]
    pub cors: CorsConfig,
}

fn default_http_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig { listen: default_http_listen(), tls: None, cors: CorsConfig::default() }
    }
}

/// Cross-origin calls to the data API (never the admin API). No cookies are used, so a key sent
/// in a header by a page of another origin is as safe as one sent by any other client.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorsConfig {
    /// Origins whose pages may call: `"*"` for any, or origins as browsers send them
    /// (`https://data.example.gov`, `http://localhost:3000`); empty for none.
    pub allowed_origins: Vec<String>,
    /// How long a browser may keep a preflight's answer.
    pub max_age_seconds: u64,
}

impl Default for CorsConfig {
    fn default() -> Self {
        CorsConfig { allowed_origins: vec!["*".into()], max_age_seconds: 600 }
    }
}

impl CorsConfig {
    /// Whether pages of `origin` may call.
    pub fn allows(&self, origin: &str) -> bool {
        self.allowed_origins.iter().any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
    }

    /// Whether any origin may call.
    pub fn allows_any(&self) -> bool {
        self.allowed_origins.iter().any(|o| o == "*")
    }
}

/// An origin as browsers send it: `http://` or `https://`, a host (a name, an IPv4 address or a
/// bracketed IPv6 one) and an optional port, nothing after.
fn is_origin(origin: &str) -> bool {
    let Some(rest) = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://")) else {
        return false;
    };
    let (host, port) = match rest.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((address, after)) => (address.parse::<std::net::Ipv6Addr>().is_ok(), after),
            None => return false,
        },
        None => {
            let end = rest.find(':').unwrap_or(rest.len());
            let name = &rest[..end];
            let named = !name.is_empty()
                && name.split('.').all(|label| {
                    !label.is_empty()
                        && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                        && !label.starts_with('-')
                        && !label.ends_with('-')
                });
            (named, &rest[end..])
        }
    };
    let port_ok = match port.strip_prefix(':') {
        None => port.is_empty(),
        Some(p) => !p.is_empty() && p.len() <= 5 && p.chars().all(|c| c.is_ascii_digit()) && p.parse::<u16>().is_ok(),
    };
    host && port_ok
}

fn resolve_tls(tls: &mut TlsConfig, base: &Path) {
    for path in [Some(&mut tls.cert), Some(&mut tls.key), tls.client_ca.as_mut()].into_iter().flatten() {
        if path.is_relative() {
            *path = base.join(&*path);
        }
    }
}

/// Protection of every listener (HTTP, Flight, admin) against too many or too slow clients.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Connections open at once, per listener; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// Largest request head (HTTP/1.1) or header list (HTTP/2), in bytes.
    pub max_header_bytes: usize,
    /// Time a client has to send a request head (and, on a new connection, to start its first
    /// request: TLS handshake, HTTP/2 preface and all); it also closes HTTP/1.1 keep-alive
    /// connections left idle that long.
    pub header_read_timeout_seconds: u64,
    /// A connection with no request in flight for this long after its last one is closed
    /// (HTTP/1.1 keep-alive connections after this or `header_read_timeout_seconds`, whichever
    /// is shorter).
    pub idle_timeout_seconds: u64,
    /// Requests (HTTP/2 streams) in flight on one connection at most.
    pub http2_max_concurrent_streams: u32,
    /// Interval of HTTP/2 keep-alive pings; a peer that does not answer one within 20 s is
    /// dropped.
    pub http2_keep_alive_seconds: u64,
    /// On shutdown, how long responses and streams in flight may take to finish.
    pub drain_seconds: u64,
    /// Memory the data answers in flight may hold, in bytes. Each answer reserves what its
    /// buffers can hold at most (8 MiB: a read step ahead, one being decoded, its encoded piece,
    /// the connection's send buffer) before its source is opened, so the default admits 256
    /// answers at once; when the budget is full a call waits up to `answer_wait_ms`, then gets
    /// 503 `overloaded`.
    pub answer_memory_bytes: u64,
    /// How long a data call waits for room in the answer memory budget, in milliseconds.
    pub answer_wait_ms: u64,
    /// Data answers one client address may have in flight at once; past it, 429
    /// `too_many_answers`.
    pub max_answers_per_client: usize,
    /// An answer whose client takes nothing for this long is cut: its source, buffers and
    /// budget are released (and a connection whose socket takes no bytes is closed).
    pub stalled_answer_seconds: u64,
    /// Working memory (sorts, joins, aggregates) all SQL statements together may hold, in
    /// bytes; a statement past it fails with `sql_memory_exhausted` (gRPC `ResourceExhausted`).
    pub sql_memory_bytes: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_connections: 10_000,
            max_header_bytes: 64 << 10,
            header_read_timeout_seconds: 10,
            idle_timeout_seconds: 300,
            http2_max_concurrent_streams: 256,
            http2_keep_alive_seconds: 30,
            drain_seconds: 30,
            answer_memory_bytes: 2 << 30,
            answer_wait_ms: 500,
            max_answers_per_client: 32,
            stalled_answer_seconds: 30,
            sql_memory_bytes: 512 << 20,
        }
    }
}

/// The Arrow Flight listener.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlightConfig {
    /// Address the Arrow Flight (gRPC) service listens on.
    #[serde(default = "default_flight_listen")]
    pub listen: SocketAddr,
    /// TLS; plain gRPC (h2c) when absent.
    pub tls: Option<TlsConfig>,
}

fn default_flight_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8815))
}

impl Default for FlightConfig {
    fn default() -> Self {
        FlightConfig { listen: default_flight_listen(), tls: None }
    }
}

/// Bounds on what one request may cost the gateway.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Rows per record batch read from a source; also the unit in which responses are encoded.
    pub batch_rows: usize,
    /// Most rows an ordered query may sort in memory; a larger result answers 400 and asks for
    /// a narrower filter. Unordered queries stream and have no such bound.
    pub max_sort_rows: usize,
    /// Largest `per_page` in the catalog listing.
    pub max_per_page: usize,
    /// Bytes read from a file per chunk of a raw download, at most 1 MiB (an answer's memory
    /// reservation counts on it).
    pub download_chunk_bytes: usize,
    /// Rate per client address for calls without a key (unconditional data only).
    pub anonymous_rate: Rate,
    /// Rate per key for keyed calls outside any agreement (unconditional data).
    pub key_rate: Rate,
    /// Offset from UTC, in hours, of the time zone whose calendar days the daily quotas count.
    pub quota_utc_offset_hours: i32,
    /// Range reads (`Range` downloads) by one caller of one version of one dataset within this
    /// many seconds of the first one admitted count as that one call against the request rate
    /// and the daily request quota (bytes still count); 0 counts every request. At most 3600.
    pub range_window_seconds: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            batch_rows: 8192,
            max_sort_rows: 1_000_000,
            max_per_page: 100,
            download_chunk_bytes: 256 * 1024,
            anonymous_rate: Rate { per_second: 20, burst: 40 },
            key_rate: Rate { per_second: 50, burst: 100 },
            quota_utc_offset_hours: 8,
            range_window_seconds: 10,
        }
    }
}

/// The client that fetches from upstream HTTP origins.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// Most connections open to all origins at once; further requests wait for one.
    pub max_connections: usize,
    /// Idle connections kept per origin for reuse.
    pub max_idle_per_host: usize,
    /// Time allowed to establish a TCP connection.
    pub connect_timeout_seconds: u64,
    /// Time allowed from sending the request to receiving the response head.
    pub response_timeout_seconds: u64,
    /// Longest silence allowed between two pieces of a response body.
    pub idle_timeout_seconds: u64,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            max_connections: 64,
            max_idle_per_host: 16,
            connect_timeout_seconds: 5,
            response_timeout_seconds: 30,
            idle_timeout_seconds: 30,
        }
    }
}

/// One catalog entry and where its bytes come from.
#[derive(Clone, Debug, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DatasetConfig {
    /// Stable identifier, used in URLs: lowercase letters, digits, `-`, `_`.
    pub id: DatasetId,
    /// Human title.
    pub title: String,
    /// What the data is, how it is collected, known gaps.
    #[serde(default)]
    pub description: String,
    /// The department that owns and answers for the data.
    pub owner: String,
    /// `unconditional`, `conditional` or `non_open`.
    pub open_type: OpenType,
    /// The format of the source: `csv` (with a header row), `ndjson`, `parquet`, `arrow_ipc`.
    pub format: Format,
    /// Declared update frequency.
    pub update_frequency: UpdateFrequency,
    /// When the data was last updated (RFC 3339).
    pub last_updated: DateTime<Utc>,
    /// Licence the data is opened under.
    pub license: String,
    /// Catalog search keywords.
    #[serde(default)]
    pub keywords: Vec<String>,
    /// Where the bytes come from.
    pub source: SourceConfig,
    /// The fields, in the order they appear in the data.
    pub fields: Vec<Field>,
    /// Whether the decoded data is kept in memory: `auto` (when it fits in `[cache] max_bytes`,
    /// the most used first), `always` or `never`.
    #[serde(default)]
    pub cache: CachePolicy,
    /// Columns to index in the decoded data: `=`, `in`, `<`, `<=`, `>`, `>=` on them (and `and`
    /// of those) find their rows without a scan.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub index: Vec<String>,
}

/// Whether a dataset's decoded data is kept in memory ([`crate::cache`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CachePolicy {
    /// When it fits, the most used first.
    #[default]
    Auto,
    /// Always, evicting others if need be.
    Always,
    /// Never: every call reads the source.
    Never,
}

/// The decoded-data cache.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Memory the decoded data of all datasets may take, in bytes.
    pub max_bytes: u64,
    /// Memory the small encoded answers kept for calls answered alike to every caller may take,
    /// in bytes (0 keeps none).
    pub answer_bytes: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig { max_bytes: 1 << 30, answer_bytes: 32 << 20 }
    }
}

/// Where a dataset's bytes come from.
#[derive(Clone, Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum SourceConfig {
    /// A local file; relative paths are under the data directory.
    File(PathBuf),
    /// An upstream HTTP origin whose body the gateway streams through.
    Url(String),
}

/// `{"file": "path"}` or `{"url": "http://..."}`, as serde writes the enum.
impl utoipa::PartialSchema for SourceConfig {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        let one = |name: &str, description: &str| {
            ObjectBuilder::new()
                .property(name, ObjectBuilder::new().schema_type(Type::String).description(Some(description)))
                .required(name)
                .additional_properties(Some(utoipa::openapi::schema::AdditionalProperties::FreeForm(false)))
        };
        OneOfBuilder::new()
            .item(one("file", "A file; a relative path is under the data directory"))
            .item(one("url", "An upstream http:// origin streamed through"))
            .into()
    }
}

impl utoipa::ToSchema for SourceConfig {}

impl DatasetConfig {
    /// The policy crate's view of this entry.
    pub fn to_dataset(&self) -> policy::Dataset {
        policy::Dataset {
            id: self.id.clone(),
            title: self.title.clone(),
            description: self.description.clone(),
            owner: self.owner.clone(),
            open_type: self.open_type,
            fields: self.fields.clone(),
            format: self.format,
            update_frequency: self.update_frequency,
            last_updated: self.last_updated,
            license: self.license.clone(),
            keywords: self.keywords.clone(),
            withdrawn: None,
        }
    }
}

/// One problem in a configuration, located.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based line; 0 when the file could not be read at all.
    pub line: usize,
    /// Dotted path of the field, e.g. `datasets[2].fields[0].type`; empty for syntax errors.
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.file.display(), self.line)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in a configuration.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "error: {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// The keys the main file may have at its top level.
const TOP_LEVEL_KEYS: [&str; 18] = [
    "data_dir",
    "sources",
    "cache",
    "cluster",
    "webhooks",
    "calendar",
    "http",
    "flight",
    "server",
    "admin",
    "limits",
    "upstream",
    "masks",
    "audit",
    "include",
    "datasets",
    "principals",
    "agreements",
];

/// A parsed configuration file.
struct LoadedFile {
    path: PathBuf,
    document: Document,
}

impl LoadedFile {
    /// An error about the field at `path`, on its line (or its nearest parent's).
    fn error_at(&self, path: &[PathSegment], message: String) -> ConfigError {
        let line = (1..=path.len()).rev().find_map(|n| self.document.line_of(&path[..n])).unwrap_or(1);
        ConfigError { file: self.path.clone(), line, field: locate::render(path), message }
    }
}

/// Loads and checks the configuration at `path`: every problem is reported, each located by file,
/// line and field, in reading order.
pub fn load(origin: Origin, path: &Path) -> Result<Config, ConfigErrors> {
    let mut errors = Vec::new();
    let main = match read_file(origin, path) {
        Ok(f) => f,
        Err(e) => return Err(ConfigErrors(vec![e])),
    };
    // Each top-level section is read on its own, so one bad section does not hide the others.
    let sections = read_sections(&main, &mut errors);
    let base = path.parent().unwrap_or(Path::new("")).to_path_buf();
    let include: Vec<PathBuf> = main.document.deserialize_key(&main.path, "include", &mut errors).unwrap_or_default();
    let calendar_file: Option<PathBuf> = main.document.deserialize_key(&main.path, "calendar", &mut errors);
    let mut files = vec![main];
    read_includes(origin, &base, &include, &mut files, &mut errors);
    let calendar = read_calendar(origin, &base, calendar_file.as_deref(), &files[0], &mut errors);
    let datasets = read_datasets(&files, &mut errors);
    let principals = read_principals(&files[0], &mut errors);
    let agreements = read_agreements(&files[0], &datasets, &principals, &mut errors);

    // Report in reading order: file by file, line by line.
    let file_order: Vec<PathBuf> = files.iter().map(|f| f.path.clone()).collect();
    errors.sort_by_key(|e| (file_order.iter().position(|p| *p == e.file), e.line));
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    Ok(Config { principals, agreements, datasets, calendar, ..sections })
}

/// Reads and checks the main file's sections, each on its own: the configuration but for its
/// catalog, principals, agreements and calendar.
fn read_sections(main: &LoadedFile, errors: &mut Vec<ConfigError>) -> Config {
    check_top_level_keys(main, errors);
    let data_dir: Option<PathBuf> = main.document.deserialize_key(&main.path, "data_dir", errors);
    let mut http: HttpConfig = main.document.deserialize_key(&main.path, "http", errors).unwrap_or_default();
    let mut flight: FlightConfig = main.document.deserialize_key(&main.path, "flight", errors).unwrap_or_default();
    let mut admin: AdminConfig = main.document.deserialize_key(&main.path, "admin", errors).unwrap_or_default();
    check_tls(main, &mut http, &mut flight, &mut admin, errors);
    check_cors(main, &http.cors, errors);
    let server: ServerConfig = main.document.deserialize_key(&main.path, "server", errors).unwrap_or_default();
    check_server(main, &server, errors);
    let masks: MasksConfig = main.document.deserialize_key(&main.path, "masks", errors).unwrap_or_default();
    let audit: AuditConfig = main.document.deserialize_key(&main.path, "audit", errors).unwrap_or_default();
    let limits: Limits = main.document.deserialize_key(&main.path, "limits", errors).unwrap_or_default();
    check_limits(main, &limits, errors);
    let upstream: UpstreamConfig = main.document.deserialize_key(&main.path, "upstream", errors).unwrap_or_default();
    let webhooks: WebhooksConfig = main.document.deserialize_key(&main.path, "webhooks", errors).unwrap_or_default();
    check_webhooks(main, &webhooks, errors);
    let sources: SourcesConfig = main.document.deserialize_key(&main.path, "sources", errors).unwrap_or_default();
    check_sources(main, &sources, errors);
    let cache: CacheConfig = main.document.deserialize_key(&main.path, "cache", errors).unwrap_or_default();
    let cluster: Option<ClusterConfig> = main.document.deserialize_key(&main.path, "cluster", errors);
    if let Some(cluster) = &cluster {
        check_cluster(main, cluster, &webhooks, errors);
    }
    Config {
        data_dir: data_dir.unwrap_or_else(|| PathBuf::from("kaifang-data")),
        http,
        flight,
        admin,
        server,
        limits,
        upstream,
        masks,
        audit,
        webhooks,
        sources,
        cache,
        cluster,
        principals: Vec::new(),
        agreements: Vec::new(),
        datasets: Vec::new(),
        calendar: policy::Calendar::default(),
    }
}

fn check_top_level_keys(main: &LoadedFile, errors: &mut Vec<ConfigError>) {
    for key in main.document.top_level_keys() {
        if !TOP_LEVEL_KEYS.contains(&key.as_str()) {
            errors.push(ConfigError {
                file: main.path.clone(),
                line: main.document.line_of(&[PathSegment::Key(key.clone())]).unwrap_or(1),
                message: format!("unknown field `{key}`, expected one of {}", TOP_LEVEL_KEYS.join(", ")),
                field: key,
            });
        }
    }
}

/// TLS files are named relative to the configuration file; client certificates are the admin
/// listener's alone.
fn check_tls(
    main: &LoadedFile,
    http: &mut HttpConfig,
    flight: &mut FlightConfig,
    admin: &mut AdminConfig,
    errors: &mut Vec<ConfigError>,
) {
    let base = main.path.parent().map(Path::to_path_buf).unwrap_or_default();
    for (section, tls) in [("http", &mut http.tls), ("flight", &mut flight.tls)] {
        if let Some(tls) = tls {
            resolve_tls(tls, &base);
            if tls.client_ca.is_some() {
                errors.push(ConfigError {
                    file: main.path.clone(),
                    line: main
                        .document
                        .line_of(&[PathSegment::Key(section.into()), PathSegment::Key("tls".into())])
                        .unwrap_or(1),
                    field: format!("{section}.tls.client_ca"),
                    message: "client certificates are for the admin listener only".into(),
                });
            }
        }
    }
    if let Some(tls) = &mut admin.tls {
        resolve_tls(tls, &base);
    }
}

/// Every allowed origin is `*` or an origin as browsers send it.
fn check_cors(main: &LoadedFile, cors: &CorsConfig, errors: &mut Vec<ConfigError>) {
    for origin in &cors.allowed_origins {
        if origin != "*" && !is_origin(origin) {
            let path = [
                PathSegment::Key("http".into()),
                PathSegment::Key("cors".into()),
                PathSegment::Key("allowed_origins".into()),
            ];
            errors.push(main.error_at(
                &path,
                format!(
                    "`{origin}` is not an origin: `*`, or `http://` or `https://`, a host and an optional port, nothing after"
                ),
            ));
        }
    }
}

/// Each department's folder for its drafts' files lies inside the data directory.
fn check_sources(main: &LoadedFile, sources: &SourcesConfig, errors: &mut Vec<ConfigError>) {
    for (department, folder) in &sources.departments {
        let inside = !folder.as_os_str().is_empty()
            && folder.components().all(|c| matches!(c, std::path::Component::Normal(_)))
            && !folder.starts_with("audit");
        if !inside {
            let path = [PathSegment::Key("sources".into()), PathSegment::Key("departments".into())];
            let mut e = main.error_at(
                &path,
                "a folder inside the data directory (relative, without `..`, not the data directory itself nor its audit log)"
                    .into(),
            );
            e.field = format!("sources.departments.{department}");
            errors.push(e);
        }
    }
}

fn check_cluster(main: &LoadedFile, cluster: &ClusterConfig, webhooks: &WebhooksConfig, errors: &mut Vec<ConfigError>) {
    let key = |name: &str| [PathSegment::Key("cluster".into()), PathSegment::Key(name.into())];
    let schemes: [(&str, &str, &[&str]); 2] =
        [("store", &cluster.store, &["postgres://", "postgresql://"]), ("limiter", &cluster.limiter, &["redis://"])];
    for (name, url, prefixes) in schemes {
        if !prefixes.iter().any(|p| url.starts_with(p)) {
            errors.push(main.error_at(&key(name), format!("`{url}` is not a {} URL", prefixes[0])));
        }
    }
    if cluster.instance.trim().is_empty() {
        errors.push(main.error_at(&key("instance"), "name this instance".into()));
    }
    if cluster.instances == 0 {
        errors.push(main.error_at(&key("instances"), "must be at least 1".into()));
    }
    // Each instance would make its own secret in its data directory, and receivers could
    // not check what the others sign.
    if !webhooks.owners.is_empty() && webhooks.signing_secret.is_none() {
        let path = [PathSegment::Key("webhooks".into())];
        errors.push(main.error_at(&path, "set `signing_secret` (the same on every instance) with [cluster]".into()));
    }
}

fn check_webhooks(main: &LoadedFile, webhooks: &WebhooksConfig, errors: &mut Vec<ConfigError>) {
    if webhooks.signing_secret.as_deref().is_some_and(|s| s.len() < 16) {
        let path = [PathSegment::Key("webhooks".into()), PathSegment::Key("signing_secret".into())];
        errors.push(main.error_at(&path, "must be at least 16 characters".into()));
    }
    for (department, url) in &webhooks.owners {
        let valid = url.parse::<hyper::Uri>().is_ok_and(|u| u.scheme_str() == Some("http") && u.host().is_some());
        if !valid {
            let path = [PathSegment::Key("webhooks".into()), PathSegment::Key("owners".into())];
            errors.push(ConfigError {
                file: main.path.clone(),
                line: main.document.line_of(&path).unwrap_or(0),
                field: format!("webhooks.owners.{department}"),
                message: format!("`{url}` is not an absolute http:// URL"),
            });
        }
    }
    if webhooks.max_attempts == 0 {
        let path = [PathSegment::Key("webhooks".into()), PathSegment::Key("max_attempts".into())];
        errors.push(main.error_at(&path, "must be at least 1".into()));
    }
}

/// Connection limits and times, each within its range.
fn check_server(main: &LoadedFile, server: &ServerConfig, errors: &mut Vec<ConfigError>) {
    if let Some(server_line) = main.document.line_of(&[PathSegment::Key("server".into())]) {
        // Times are at most a day: deadlines are computed as instants, which far beyond that
        // could overflow.
        const DAY: u64 = 86_400;
        for (name, value, least, most) in [
            ("max_connections", server.max_connections as u64, 1, u64::MAX),
            // hyper reads request heads into a buffer of at least 8 KiB.
            ("max_header_bytes", server.max_header_bytes as u64, 8192, u64::MAX),
            ("header_read_timeout_seconds", server.header_read_timeout_seconds, 1, DAY),
            ("idle_timeout_seconds", server.idle_timeout_seconds, 1, DAY),
            ("http2_max_concurrent_streams", u64::from(server.http2_max_concurrent_streams), 1, u64::MAX),
            ("http2_keep_alive_seconds", server.http2_keep_alive_seconds, 1, DAY),
            ("drain_seconds", server.drain_seconds, 0, DAY),
            ("answer_memory_bytes", server.answer_memory_bytes, crate::answers::MIN_ANSWER_MEMORY_BYTES, u64::MAX),
            ("answer_wait_ms", server.answer_wait_ms, 0, DAY * 1000),
            ("max_answers_per_client", server.max_answers_per_client as u64, 1, u64::MAX),
            ("stalled_answer_seconds", server.stalled_answer_seconds, 1, DAY),
            ("sql_memory_bytes", server.sql_memory_bytes, 1 << 20, u64::MAX),
        ] {
            if !(least..=most).contains(&value) {
                errors.push(ConfigError {
                    file: main.path.clone(),
                    line: main
                        .document
                        .line_of(&[PathSegment::Key("server".into()), PathSegment::Key(name.into())])
                        .unwrap_or(server_line),
                    field: format!("server.{name}"),
                    message: match most {
                        u64::MAX => format!("must be at least {least}"),
                        _ => format!("must be from {least} to {most}"),
                    },
                });
            }
        }
    }
}

fn check_limits(main: &LoadedFile, limits: &Limits, errors: &mut Vec<ConfigError>) {
    if let Some(limits_line) = main.document.line_of(&[PathSegment::Key("limits".into())]) {
        for (name, value) in [
            ("batch_rows", limits.batch_rows),
            ("max_sort_rows", limits.max_sort_rows),
            ("max_per_page", limits.max_per_page),
            ("download_chunk_bytes", limits.download_chunk_bytes),
            ("anonymous_rate", limits.anonymous_rate.per_second.min(limits.anonymous_rate.burst) as usize),
            ("key_rate", limits.key_rate.per_second.min(limits.key_rate.burst) as usize),
        ] {
            if value == 0 {
                errors.push(ConfigError {
                    file: main.path.clone(),
                    line: main
                        .document
                        .line_of(&[PathSegment::Key("limits".into()), PathSegment::Key(name.into())])
                        .unwrap_or(limits_line),
                    field: format!("limits.{name}"),
                    message: "must be greater than 0".into(),
                });
            }
        }
        if limits.download_chunk_bytes > crate::source::MAX_STEP_BYTES {
            let path = [PathSegment::Key("limits".into()), PathSegment::Key("download_chunk_bytes".into())];
            errors.push(main.error_at(&path, format!("must be at most {}", crate::source::MAX_STEP_BYTES)));
        }
        if limits.range_window_seconds > crate::ratelimit::MAX_RANGE_WINDOW.as_secs() {
            let path = [PathSegment::Key("limits".into()), PathSegment::Key("range_window_seconds".into())];
            errors.push(
                main.error_at(&path, format!("must be at most {}", crate::ratelimit::MAX_RANGE_WINDOW.as_secs())),
            );
        }
        if !(-12..=14).contains(&limits.quota_utc_offset_hours) {
            errors.push(ConfigError {
                file: main.path.clone(),
                line: limits_line,
                field: "limits.quota_utc_offset_hours".into(),
                message: "must be between -12 and 14".into(),
            });
        }
    }
}

/// Reads the included catalog files after the main one.
fn read_includes(
    origin: Origin,
    base: &Path,
    include: &[PathBuf],
    files: &mut Vec<LoadedFile>,
    errors: &mut Vec<ConfigError>,
) {
    for (i, include) in include.iter().enumerate() {
        match read_file(origin, &base.join(include)) {
            Ok(f) => files.push(f),
            Err(mut e) => {
                e.line = files[0]
                    .document
                    .line_of(&[PathSegment::Key("include".into()), PathSegment::Index(i)])
                    .unwrap_or(0);
                e.field = format!("include[{i}]");
                e.file = files[0].path.clone();
                errors.push(e);
            }
        }
    }
}

/// The working-day calendar the main file names, or the built-in one.
fn read_calendar(
    origin: Origin,
    base: &Path,
    calendar_file: Option<&Path>,
    main: &LoadedFile,
    errors: &mut Vec<ConfigError>,
) -> policy::Calendar {
    match calendar_file {
        None => policy::Calendar::default(),
        Some(file) => match read_file(origin, &base.join(file)) {
            // The statutory-day warnings are `kaifang calendar check`'s to show.
            Ok(file) => load_calendar(&file, errors, &mut Vec::new()),
            Err(mut e) => {
                e.line = main.document.line_of(&[PathSegment::Key("calendar".into())]).unwrap_or(0);
                e.field = "calendar".into();
                e.file = main.path.clone();
                errors.push(e);
                policy::Calendar::default()
            }
        },
    }
}

/// Every file's datasets, checked, each id declared once.
fn read_datasets(files: &[LoadedFile], errors: &mut Vec<ConfigError>) -> Vec<DatasetConfig> {
    let mut datasets = Vec::new();
    let mut seen: HashMap<DatasetId, (PathBuf, usize)> = HashMap::new();
    for (file_index, file) in files.iter().enumerate() {
        if file_index > 0 {
            for key in file.document.top_level_keys() {
                if key != "datasets" {
                    errors.push(ConfigError {
                        file: file.path.clone(),
                        line: file.document.line_of(&[PathSegment::Key(key.clone())]).unwrap_or(1),
                        field: key,
                        message: "an included catalog file may only declare [[datasets]]".into(),
                    });
                }
            }
        }
        for (i, dataset) in file.document.deserialize_array::<DatasetConfig>(&file.path, "datasets", errors) {
            let at = |field: &[PathSegment]| {
                let mut full = vec![PathSegment::Key("datasets".into()), PathSegment::Index(i)];
                full.extend_from_slice(field);
                let line = file.document.line_of(&full).or_else(|| file.document.line_of(&full[..2])).unwrap_or(1);
                (file.path.clone(), line, locate::render(&full))
            };
            let mut problem = |field: &[PathSegment], message: String| {
                let (file, line, field) = at(field);
                errors.push(ConfigError { file, line, field, message });
            };
            if let Some((other_file, other_line)) = seen.get(&dataset.id) {
                problem(
                    &[PathSegment::Key("id".into())],
                    format!(
                        "dataset id `{}` is already declared at {}:{}",
                        dataset.id,
                        other_file.display(),
                        other_line
                    ),
                );
            } else {
                seen.insert(dataset.id.clone(), (file.path.clone(), at(&[PathSegment::Key("id".into())]).1));
            }
            check_dataset(&dataset, &mut problem);
            datasets.push(dataset);
        }
    }
    datasets
}

/// The declared principals, each id once.
fn read_principals(main: &LoadedFile, errors: &mut Vec<ConfigError>) -> Vec<Principal> {
    let principals: Vec<Principal> = main
        .document
        .deserialize_array::<Principal>(&main.path, "principals", errors)
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    for (i, p) in principals.iter().enumerate() {
        if principals[..i].iter().any(|q| q.id == p.id) {
            let path = [PathSegment::Key("principals".into()), PathSegment::Index(i), PathSegment::Key("id".into())];
            errors.push(main.error_at(&path, format!("principal `{}` is declared twice", p.id)));
        }
    }
    principals
}

/// The declared agreements, each on declared principals and datasets, with terms that check out.
fn read_agreements(
    main: &LoadedFile,
    datasets: &[DatasetConfig],
    principals: &[Principal],
    errors: &mut Vec<ConfigError>,
) -> Vec<Agreement> {
    let catalog: Vec<policy::Dataset> = datasets.iter().map(DatasetConfig::to_dataset).collect();
    let mut agreements: Vec<Agreement> = Vec::new();
    for (i, declared) in main.document.deserialize_array::<AgreementConfig>(&main.path, "agreements", errors) {
        let agreement = declared.into_agreement();
        let at = |field: &str| {
            let mut path = vec![PathSegment::Key("agreements".into()), PathSegment::Index(i)];
            path.extend(locate::parse_path(field));
            path
        };
        if agreements.iter().any(|a| a.id == agreement.id) {
            errors.push(main.error_at(&at("id"), format!("agreement `{}` is declared twice", agreement.id)));
        }
        if !principals.iter().any(|p| p.id == agreement.principal) {
            errors.push(main.error_at(
                &at("principal"),
                format!("principal `{}` is not declared in [[principals]]", agreement.principal),
            ));
        }
        if let Err(e) = agreement.check(|id| catalog.iter().find(|d| &d.id == id)) {
            errors.push(main.error_at(&at(&e.field), e.message));
        }
        agreements.push(agreement);
    }
    agreements
}

/// The problems of a catalog entry written through the API, as `field: message` lines. A file
/// source must stay inside the data directory.
pub fn entry_problems(dataset: &DatasetConfig) -> Vec<String> {
    let mut problems = Vec::new();
    check_dataset(dataset, &mut |path, message| problems.push(format!("{}: {message}", locate::render(path))));
    if let SourceConfig::File(path) = &dataset.source {
        let inside = path.components().all(|c| matches!(c, std::path::Component::Normal(_)));
        if !inside {
            problems.push("source.file: a relative path inside the data directory, without `..`".into());
        }
    }
    problems
}

fn check_dataset(dataset: &DatasetConfig, problem: &mut impl FnMut(&[PathSegment], String)) {
    use PathSegment::{Index, Key};
    if dataset.fields.is_empty() {
        problem(&[Key("fields".into())], "a dataset needs at least one field".into());
    }
    for (i, field) in dataset.fields.iter().enumerate() {
        let valid_name = field.name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && field.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_name {
            problem(
                &[Key("fields".into()), Index(i), Key("name".into())],
                format!("field name `{}` must match [A-Za-z_][A-Za-z0-9_]*", field.name),
            );
        }
        if dataset.fields[..i].iter().any(|f| f.name == field.name) {
            problem(
                &[Key("fields".into()), Index(i), Key("name".into())],
                format!("field `{}` is declared twice", field.name),
            );
        }
    }
    for (i, column) in dataset.index.iter().enumerate() {
        if !dataset.fields.iter().any(|f| &f.name == column) {
            problem(&[Key("index".into()), Index(i)], format!("no field `{column}` to index"));
        } else if dataset.index[..i].contains(column) {
            problem(&[Key("index".into()), Index(i)], format!("`{column}` is indexed twice"));
        }
    }
    match &dataset.source {
        SourceConfig::File(path) if path.as_os_str().is_empty() => {
            problem(&[Key("source".into()), Key("file".into())], "file path is empty".into())
        }
        SourceConfig::File(_) => {}
        SourceConfig::Url(url) => match url.parse::<hyper::Uri>() {
            Ok(uri) if uri.scheme_str() == Some("http") && uri.host().is_some() => {
                if dataset.format == Format::Parquet {
                    problem(
                        &[Key("format".into())],
                        "parquet needs random access, which a streamed origin cannot give; serve it from a file".into(),
                    );
                }
            }
            Ok(uri) if uri.scheme_str() == Some("https") => problem(
                &[Key("source".into()), Key("url".into())],
                "https origins are not supported yet; use an http:// origin on a trusted network".into(),
            ),
            _ => problem(&[Key("source".into()), Key("url".into())], format!("`{url}` is not an absolute http:// URL")),
        },
    }
}

/// One year of a calendar file, as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct YearConfig {
    year: i32,
    /// Where the dates come from (the notice's number), for people.
    #[serde(default, rename = "source")]
    _source: String,
    /// Days off: `YYYY-MM-DD`, or `YYYY-MM-DD/YYYY-MM-DD` for a run of days.
    holidays: Vec<String>,
    /// Weekend days worked instead.
    #[serde(default)]
    make_up_workdays: Vec<String>,
}

/// The working-day calendar in `file`: `[[years]]` of holidays and make-up working days. Each
/// problem is reported on the line of the entry it is about. A statutory holiday that a year
/// makes a working day is a warning: published arrangements never do, so it is most likely a
/// date mistyped or left out.
fn load_calendar(
    file: &LoadedFile,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<ConfigError>,
) -> policy::Calendar {
    use PathSegment::{Index, Key};
    for key in file.document.top_level_keys() {
        if key != "years" {
            errors.push(ConfigError {
                file: file.path.clone(),
                line: file.document.line_of(&[Key(key.clone())]).unwrap_or(1),
                message: "a calendar file has only [[years]]".into(),
                field: key,
            });
        }
    }
    let mut years: Vec<policy::Year> = Vec::new();
    for (i, year) in file.document.deserialize_array::<YearConfig>(&file.path, "years", errors) {
        // Where each day was listed, to point at the entry a problem is about.
        let mut listed_at: HashMap<chrono::NaiveDate, Vec<PathSegment>> = HashMap::new();
        let mut days = |field: &str, items: &[String]| -> std::collections::BTreeSet<chrono::NaiveDate> {
            let mut out = std::collections::BTreeSet::new();
            for (j, item) in items.iter().enumerate() {
                let at = vec![Key("years".into()), Index(i), Key(field.into()), Index(j)];
                let (first, last) = item.split_once('/').unwrap_or((item, item));
                match (first.trim().parse::<chrono::NaiveDate>(), last.trim().parse::<chrono::NaiveDate>()) {
                    (Ok(first), Ok(last)) if first <= last => {
                        for day in first.iter_days().take_while(|d| *d <= last) {
                            listed_at.entry(day).or_insert_with(|| at.clone());
                            out.insert(day);
                        }
                    }
                    _ => errors.push(file.error_at(
                        &at,
                        format!("`{item}` is not a date (YYYY-MM-DD) or a run of dates (YYYY-MM-DD/YYYY-MM-DD)"),
                    )),
                }
            }
            out
        };
        let holidays = days("holidays", &year.holidays);
        let make_up_workdays = days("make_up_workdays", &year.make_up_workdays);
        let year = policy::Year { year: year.year, holidays, make_up_workdays };
        let year_at = [Key("years".into()), Index(i), Key("year".into())];
        if let Err(e) = year.check() {
            let at = e.date().and_then(|d| listed_at.get(&d)).map_or(&year_at[..], |at| &at[..]);
            errors.push(file.error_at(at, e.to_string()));
        } else if years.iter().any(|y| y.year == year.year) {
            errors.push(file.error_at(&year_at, policy::CalendarError::DuplicateYear(year.year).to_string()));
        } else {
            for worked in year.statutory_days_worked() {
                let message =
                    format!("{} ({}) is a statutory holiday but a working day here", worked.date, worked.festival);
                warnings.push(file.error_at(&year_at, message));
            }
            years.push(year);
        }
    }
    policy::Calendar::new(years).unwrap_or_else(|e| {
        errors.push(file.error_at(&[Key("years".into())], e.to_string()));
        policy::Calendar::default()
    })
}

/// The working-day calendar file at `path` on its own, as `kaifang calendar check` reads it,
/// with its warnings.
pub fn load_calendar_file(path: &Path) -> Result<(policy::Calendar, Vec<ConfigError>), ConfigErrors> {
    let file = read_file(Origin::Files, path).map_err(|e| ConfigErrors(vec![e]))?;
    let (mut errors, mut warnings) = (Vec::new(), Vec::new());
    let calendar = load_calendar(&file, &mut errors, &mut warnings);
    if errors.is_empty() {
        Ok((calendar, warnings))
    } else {
        errors.sort_by_key(|e| e.line);
        Err(ConfigErrors(errors))
    }
}

fn read_file(origin: Origin, path: &Path) -> Result<LoadedFile, ConfigError> {
    let shown = match origin {
        Origin::Files => path.to_path_buf(),
        Origin::Embedded => Path::new("<embedded>").join(path),
    };
    let text = origin.read(path).map_err(|e| ConfigError {
        file: shown.clone(),
        line: 0,
        field: String::new(),
        message: format!("cannot read: {e}"),
    })?;
    let document = Document::parse(text).map_err(|(line, message)| ConfigError {
        file: shown.clone(),
        line,
        field: String::new(),
        message,
    })?;
    Ok(LoadedFile { path: shown, document })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(main: &str) -> Result<Config, ConfigErrors> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.toml");
        std::fs::write(&path, main).unwrap();
        load(Origin::Files, &path)
    }

    #[test]
    fn cors_origins_are_checked_where_they_are_written() {
        let errors = load_text(
            "[http.cors]\nallowed_origins = [\"*\", \"https://data.example.gov\", \"http://localhost:3000\", \"http://[::1]:8000\", \"https://x.org/path\", \"data.example.gov\", \"http://a:99999\"]\n",
        )
        .unwrap_err()
        .0;
        let bad: Vec<&str> = errors.iter().map(|e| e.message.split('`').nth(1).unwrap()).collect();
        assert_eq!(bad, ["https://x.org/path", "data.example.gov", "http://a:99999"]);
        assert!(errors.iter().all(|e| e.field == "http.cors.allowed_origins" && e.line == 2), "{errors:?}");
        let config = load_text("[http.cors]\nallowed_origins = [\"https://data.example.gov\"]\n").unwrap();
        assert!(config.http.cors.allows("https://data.example.gov"));
        assert!(!config.http.cors.allows("https://evil.example"));
        assert!(load_text("").unwrap().http.cors.allows("https://anyone.example"));
    }

    #[test]
    fn the_shipped_calendar_counts_working_days_as_published() {
        let config = load(Origin::Embedded, Path::new("kaifang.toml")).unwrap();
        let c = &config.calendar;
        assert_eq!(c.official_years().collect::<Vec<_>>(), [2025, 2026]);
        let d = |s: &str| s.parse::<chrono::NaiveDate>().unwrap();
        // Counted by hand in policy::calendar's tests: across Spring Festival and National Day.
        assert_eq!(c.working_days_after(d("2025-01-24"), 10).unwrap().date, d("2025-02-13"));
        assert_eq!(c.working_days_after(d("2026-02-11"), 10).unwrap().date, d("2026-03-03"));
        assert_eq!(c.working_days_after(d("2026-09-18"), 10).unwrap().date, d("2026-10-09"));
    }

    #[test]
    fn every_statutory_day_is_a_holiday_in_the_shipped_calendar() {
        // The statutory rule (lunar dates and Qingming computed) gives the statutory days of the
        // published 2025 and 2026 arrangements, so counting a year on it never works a day the
        // law gives off.
        let config = load(Origin::Embedded, Path::new("kaifang.toml")).unwrap();
        for year in config.calendar.official() {
            assert_eq!(year.statutory_days_worked(), vec![], "{}", year.year);
            let statutory = policy::statutory::arrangement(year.year).unwrap().statutory;
            for holiday in statutory {
                assert!(year.holidays.contains(&holiday.date), "{holiday:?} is not a holiday in {}", year.year);
            }
        }
    }

    #[test]
    fn the_cluster_example_loads_and_bad_cluster_urls_are_named() {
        let example = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../config/cluster/kaifang.toml"));
        let config = load(Origin::Files, example).unwrap();
        let cluster = config.cluster.expect("the example is a cluster");
        assert_eq!((cluster.instance.as_str(), cluster.instances), ("gw-1", 3));
        assert_eq!(config.datasets.len(), 5);

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("k.toml");
        std::fs::write(&file, "[cluster]\ninstance = \"a\"\nstore = \"mysql://x\"\nlimiter = \"redis://r\"\n").unwrap();
        let errors = load(Origin::Files, &file).unwrap_err().to_string();
        assert!(errors.contains("k.toml:3: cluster.store: `mysql://x` is not a postgres:// URL"), "{errors}");

        // Owners' webhooks in a cluster need one signing secret for all instances.
        let cluster = "[cluster]\ninstance = \"a\"\nstore = \"postgres://db/k\"\nlimiter = \"redis://r\"\n";
        let hooks = "[webhooks]\nowners = { \"Bureau\" = \"http://hooks/b\" }\n";
        std::fs::write(&file, format!("{cluster}{hooks}")).unwrap();
        let errors = load(Origin::Files, &file).unwrap_err().to_string();
        assert!(errors.contains("k.toml:5: webhooks: set `signing_secret`"), "{errors}");
        std::fs::write(&file, format!("{cluster}{hooks}signing_secret = \"short\"\n")).unwrap();
        let errors = load(Origin::Files, &file).unwrap_err().to_string();
        assert!(errors.contains("k.toml:7: webhooks.signing_secret: must be at least 16 characters"), "{errors}");
        std::fs::write(&file, format!("{cluster}{hooks}signing_secret = \"one secret for every instance\"\n")).unwrap();
        assert!(load(Origin::Files, &file).is_ok());
    }

    #[test]
    fn a_bad_calendar_date_is_named_with_its_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("k.toml"), "calendar = \"cal.toml\"\n").unwrap();
        std::fs::write(
            dir.path().join("cal.toml"),
            "[[years]]\nyear = 2025\nholidays = [\n  \"2025-01-01\",\n  \"2025-02-30\",\n]\n",
        )
        .unwrap();
        let errors = load(Origin::Files, &dir.path().join("k.toml")).unwrap_err().0;
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].file.ends_with("cal.toml"));
        assert_eq!((errors[0].line, errors[0].field.as_str()), (5, "years[0].holidays[1]"));
        assert!(errors[0].message.contains("2025-02-30"));
    }

    #[test]
    fn the_embedded_demo_configuration_is_valid() {
        let config = load(Origin::Embedded, Path::new("kaifang.toml")).unwrap();
        let types: Vec<OpenType> = config.datasets.iter().map(|d| d.open_type).collect();
        for t in [OpenType::Unconditional, OpenType::Conditional, OpenType::NonOpen] {
            assert!(types.contains(&t), "demo lacks {t:?}");
        }
    }

    #[test]
    fn server_times_are_bounded_on_both_sides() {
        let errors = load_text("[server]\nidle_timeout_seconds = 100000000\nheader_read_timeout_seconds = 0\n")
            .unwrap_err()
            .to_string();
        assert!(errors.contains(":2: server.idle_timeout_seconds: must be from 1 to 86400"), "{errors}");
        assert!(errors.contains(":3: server.header_read_timeout_seconds: must be from 1 to 86400"), "{errors}");
        assert!(load_text("[server]\nidle_timeout_seconds = 86400\n").is_ok());
    }

    #[test]
    fn every_error_is_reported_with_its_line_and_field() {
        let text = r#"
[limits]
batch_rows = 0

[[datasets]]
id = "ok"
title = "T"
owner = "O"
open_type = "unconditional"
format = "csv"
update_frequency = "daily"
last_updated = "2025-01-01T00:00:00Z"
license = "CC-BY-4.0"
source = { file = "a.csv" }
fields = [{ name = "a", type = "int64" }, { name = "a", type = "string" }]

[[datasets]]
id = "Bad Id"
title = "T"
owner = "O"
open_type = "sometimes"
format = "csv"
update_frequency = "daily"
last_updated = "2025-01-01T00:00:00Z"
license = "CC-BY-4.0"
source = { file = "a.csv" }
fields = [{ name = "a", type = "int64" }]
"#;
        let errors = load_text(text).unwrap_err().0;
        let summary: Vec<(usize, &str)> = errors.iter().map(|e| (e.line, e.field.as_str())).collect();
        assert_eq!(summary, vec![(3, "limits.batch_rows"), (15, "datasets[0].fields[1].name"), (18, "datasets[1].id")]);
        assert!(errors[2].message.contains("dataset id must be"), "{}", errors[2].message);
    }

    #[test]
    fn an_index_on_an_unknown_or_repeated_column_is_refused_with_its_line() {
        let text = r#"
[[datasets]]
id = "ok"
title = "T"
owner = "O"
open_type = "unconditional"
format = "csv"
update_frequency = "daily"
last_updated = "2025-01-01T00:00:00Z"
license = "CC-BY-4.0"
source = { file = "a.csv" }
index = ["a", "nope", "a"]
fields = [{ name = "a", type = "int64" }]
"#;
        let errors = load_text(text).unwrap_err().0;
        let summary: Vec<(usize, &str, &str)> =
            errors.iter().map(|e| (e.line, e.field.as_str(), e.message.as_str())).collect();
        assert_eq!(
            summary,
            vec![
                (12, "datasets[0].index[1]", "no field `nope` to index"),
                (12, "datasets[0].index[2]", "`a` is indexed twice"),
            ]
        );
        assert!(load_text(&text.replace(r#"["a", "nope", "a"]"#, r#"["a"]"#)).is_ok());
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let errors = load_text("[http]\nlisten = \n").unwrap_err().0;
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].line, 2);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let errors = load_text("[http]\nlisen = \"127.0.0.1:1\"\n").unwrap_err().0;
        assert_eq!((errors[0].line, errors[0].field.as_str()), (2, "http.lisen"));
        assert!(errors[0].message.contains("unknown field"), "{}", errors[0].message);
    }
}
