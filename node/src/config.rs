//! Node configuration, parsed in two stages.
//!
//! Stage one gathers raw values from three sources — a TOML file, `STARLING_*`
//! environment variables and command-line flags, in rising precedence — into
//! [`RawConfig`], where every field is optional. Stage two, [`Config::from_raw`],
//! fills defaults and validates, producing a [`Config`] whose invalid states
//! cannot be represented: the rest of the node never re-checks a setting.
//!
//! This module does not open files other than the config file itself, bind
//! sockets or create directories.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use storage::{Limits, SyncPolicy};

use crate::aae::AaeConfig;
use crate::coordinator::ReplicationConfig;
use crate::handoff::HandoffConfig;
use crate::reaper::{DeleteMode, ReaperConfig};

/// Default HTTP port, Riak's.
pub const DEFAULT_HTTP_PORT: u16 = 8098;
/// Default cluster (QUIC) port.
pub const DEFAULT_CLUSTER_PORT: u16 = 7946;

/// Raw settings from one source; `None` means "not given here".
///
/// The same struct is filled from the TOML file (field names as below), from
/// the environment (`STARLING_` + the upper-cased field name) and from flags
/// (`--` + the field name with dashes), then layered.
#[derive(Debug, Default, Clone, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Name of this node, shown in logs, `/stats` and membership.
    #[arg(long, env = "STARLING_NODE_NAME")]
    pub node_name: Option<String>,
    /// Directory for this node's data; created if missing.
    #[arg(long, env = "STARLING_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address the HTTP API listens on.
    #[arg(long, env = "STARLING_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,
    /// Shared secret of the cluster. Seals causal contexts so a context handed
    /// out by one node is accepted by every other and forged ones are refused.
    /// Without it, the node creates a secret of its own in the data directory.
    #[arg(long, env = "STARLING_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
    /// Name of the cluster. Nodes only talk to nodes of the same name (it is
    /// part of the TLS handshake).
    #[arg(long, env = "STARLING_CLUSTER_NAME")]
    pub cluster_name: Option<String>,
    /// UDP address of the cluster (QUIC) endpoint. Default: the HTTP
    /// address's IP, port 7946.
    #[arg(long, env = "STARLING_CLUSTER_LISTEN")]
    pub cluster_listen: Option<SocketAddr>,
    /// Address other nodes reach the cluster endpoint at, as `host:port`
    /// (resolved at start). Default: `cluster_listen`, which then must not
    /// be a wildcard address.
    #[arg(long, env = "STARLING_CLUSTER_ADVERTISE")]
    pub cluster_advertise: Option<String>,
    /// HTTP address clients should use for this node, shown to other nodes
    /// and operators. Default: `http_listen` (must then not be a wildcard).
    #[arg(long, env = "STARLING_HTTP_ADVERTISE")]
    pub http_advertise: Option<String>,
    /// Seeds to join, `host:port` (DNS names allowed), comma-separated.
    #[arg(long, env = "STARLING_JOIN", value_delimiter = ',')]
    pub join: Option<Vec<String>>,
    /// Failure zone of this node (rack, availability zone); replicas of a
    /// key are spread over distinct zones when there are enough.
    #[arg(long, env = "STARLING_ZONE")]
    pub zone: Option<String>,
    /// When writes reach the disk: `always` (fsync before every
    /// acknowledgement, shared by concurrent writes), `interval` or `never`.
    #[arg(long, env = "STARLING_SYNC")]
    pub sync: Option<String>,
    /// With `sync = "interval"`: milliseconds between fsyncs.
    #[arg(long, env = "STARLING_SYNC_INTERVAL_MS")]
    pub sync_interval_ms: Option<u64>,
    /// With `sync = "always"`: the most time kept between the starts of
    /// two fsyncs under load, in microseconds (default 1000). Below it the
    /// spacing is four times the previous fsync's duration, so a fast disk
    /// is not held back; writes that arrive in between share the next
    /// fsync. Spares a disk that throttles flushes; 0 starts each fsync as
    /// soon as the previous one ended.
    #[arg(long, env = "STARLING_FSYNC_SPACING_US")]
    pub fsync_spacing_us: Option<u64>,
    /// Largest object accepted, in bytes (Riak's default: 50 MiB).
    #[arg(long, env = "STARLING_OBJECT_SIZE_BYTES_MAX")]
    pub object_size_bytes_max: Option<u64>,
    /// Free space kept on the data directory's filesystem, in bytes
    /// (default 512 MiB): below it the node refuses writes with `503`
    /// ("disk full") and serves reads, and takes writes again once an
    /// eighth more is free. It is room for the storage engine's flushes and
    /// compactions. 0 turns it off: a disk that fills up then stops writes
    /// until the node restarts.
    #[arg(long, env = "STARLING_DISK_RESERVE_BYTES")]
    pub disk_reserve_bytes: Option<u64>,
    /// Heap touched at start, before the node takes requests, in bytes
    /// (default 192 MiB; at most half the available memory): the memory
    /// its memtables and caches grow into, faulted in once so that the
    /// write path does not wait for the kernel to zero fresh pages in the
    /// node's first minutes. 0 turns it off.
    #[arg(long, env = "STARLING_MEMORY_PREFAULT_BYTES")]
    pub memory_prefault_bytes: Option<u64>,
    /// How long shutdown waits for in-flight requests, in milliseconds.
    #[arg(long, env = "STARLING_SHUTDOWN_DRAIN_MS")]
    pub shutdown_drain_ms: Option<u64>,
    /// Log format: `text` or `json`.
    #[arg(long, env = "STARLING_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Ring partitions (a power of two, 1 to 65536); must be the same on
    /// every node and never change for the life of the cluster.
    #[arg(long, env = "STARLING_RING_SIZE")]
    pub ring_size: Option<u32>,
    /// Repair stale replicas from reads (`true` by default; tests turn it
    /// off to see one mechanism at a time).
    #[arg(long, env = "STARLING_READ_REPAIR")]
    pub read_repair: Option<bool>,
    /// Deliver hints to their owners (`true` by default; tests turn it off).
    #[arg(long, env = "STARLING_HINTED_HANDOFF")]
    pub hinted_handoff: Option<bool>,
    /// Default deadline of a client request, in milliseconds.
    #[arg(long, env = "STARLING_REQUEST_TIMEOUT_MS")]
    pub request_timeout_ms: Option<u64>,
    /// Compare Merkle trees with the other replicas and repair differences
    /// (`true` by default; tests turn it off to see one mechanism at a
    /// time). Ownership transfer on join and leave runs regardless.
    #[arg(long, env = "STARLING_ANTI_ENTROPY")]
    pub anti_entropy: Option<bool>,
    /// Milliseconds between two anti-entropy rounds (each compares every
    /// tree's root with every peer; only differing trees are descended).
    #[arg(long, env = "STARLING_AAE_INTERVAL_MS")]
    pub aae_interval_ms: Option<u64>,
    /// When tombstones are reaped: `keep` (never), or a grace period in
    /// milliseconds after every replica holds the tombstone. At least the
    /// request timeout plus 1000 ms.
    #[arg(long, env = "STARLING_DELETE_MODE")]
    pub delete_mode: Option<String>,
    /// PEM file with the HTTP API's certificate chain (leaf first). With
    /// `http_tls_key`, the API serves HTTPS only.
    #[arg(long, env = "STARLING_HTTP_TLS_CERT")]
    pub http_tls_cert: Option<PathBuf>,
    /// PEM file with the private key of `http_tls_cert` (PKCS#8, PKCS#1 or
    /// SEC1).
    #[arg(long, env = "STARLING_HTTP_TLS_KEY")]
    pub http_tls_key: Option<PathBuf>,
    /// TOML file of users (`[[user]]` with `name`, `password_hash` from
    /// `starling hash-password`, and `grants`: `read`, `write`, `admin`).
    /// Setting it turns authentication on for the HTTP API.
    #[arg(long, env = "STARLING_AUTH_USERS_FILE")]
    pub auth_users_file: Option<PathBuf>,
    /// Accept credentials over plain HTTP. Only for a node behind a
    /// TLS-terminating proxy; otherwise passwords travel in clear text.
    #[arg(long, env = "STARLING_AUTH_ALLOW_PLAIN_HTTP")]
    pub auth_allow_plain_http: Option<bool>,
    /// HTTP connections served at once; more are answered 503 and closed.
    #[arg(long, env = "STARLING_HTTP_CONNECTIONS_MAX")]
    pub http_connections_max: Option<usize>,
    /// HTTP requests handled at once; more are answered 503 at once.
    #[arg(long, env = "STARLING_HTTP_REQUESTS_IN_FLIGHT_MAX")]
    pub http_requests_in_flight_max: Option<usize>,
    /// Largest HTTP request head (request line and headers), in bytes.
    #[arg(long, env = "STARLING_HTTP_HEADER_SIZE_BYTES_MAX")]
    pub http_header_size_bytes_max: Option<usize>,
    /// Bytes of request bodies held in memory at once; a body that does not
    /// fit is answered 503.
    #[arg(long, env = "STARLING_HTTP_BODY_BUFFER_BYTES_MAX")]
    pub http_body_buffer_bytes_max: Option<u64>,
    /// Milliseconds a client may take to send a request head; also how long
    /// an idle keep-alive connection stays open.
    #[arg(long, env = "STARLING_HTTP_HEADER_READ_TIMEOUT_MS")]
    pub http_header_read_timeout_ms: Option<u64>,
    /// Milliseconds a client may take to send a request body (408 after).
    #[arg(long, env = "STARLING_HTTP_BODY_READ_TIMEOUT_MS")]
    pub http_body_read_timeout_ms: Option<u64>,
    /// Milliseconds a response write may make no progress before the
    /// connection is closed (a client that stopped reading).
    #[arg(long, env = "STARLING_HTTP_WRITE_TIMEOUT_MS")]
    pub http_write_timeout_ms: Option<u64>,
}

impl RawConfig {
    /// Reads a TOML config file.
    pub fn from_file(path: &Path) -> anyhow::Result<RawConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
    }

    /// Layers `over` on top of `self`: a value given in `over` wins.
    pub fn layered(self, over: RawConfig) -> RawConfig {
        RawConfig {
            node_name: over.node_name.or(self.node_name),
            data_dir: over.data_dir.or(self.data_dir),
            http_listen: over.http_listen.or(self.http_listen),
            cluster_secret: over.cluster_secret.or(self.cluster_secret),
            cluster_name: over.cluster_name.or(self.cluster_name),
            cluster_listen: over.cluster_listen.or(self.cluster_listen),
            cluster_advertise: over.cluster_advertise.or(self.cluster_advertise),
            http_advertise: over.http_advertise.or(self.http_advertise),
            join: over.join.or(self.join),
            zone: over.zone.or(self.zone),
            sync: over.sync.or(self.sync),
            sync_interval_ms: over.sync_interval_ms.or(self.sync_interval_ms),
            fsync_spacing_us: over.fsync_spacing_us.or(self.fsync_spacing_us),
            disk_reserve_bytes: over.disk_reserve_bytes.or(self.disk_reserve_bytes),
            object_size_bytes_max: over.object_size_bytes_max.or(self.object_size_bytes_max),
            memory_prefault_bytes: over.memory_prefault_bytes.or(self.memory_prefault_bytes),
            shutdown_drain_ms: over.shutdown_drain_ms.or(self.shutdown_drain_ms),
            log_format: over.log_format.or(self.log_format),
            ring_size: over.ring_size.or(self.ring_size),
            read_repair: over.read_repair.or(self.read_repair),
            hinted_handoff: over.hinted_handoff.or(self.hinted_handoff),
            request_timeout_ms: over.request_timeout_ms.or(self.request_timeout_ms),
            anti_entropy: over.anti_entropy.or(self.anti_entropy),
            aae_interval_ms: over.aae_interval_ms.or(self.aae_interval_ms),
            delete_mode: over.delete_mode.or(self.delete_mode),
            http_tls_cert: over.http_tls_cert.or(self.http_tls_cert),
            http_tls_key: over.http_tls_key.or(self.http_tls_key),
            auth_users_file: over.auth_users_file.or(self.auth_users_file),
            auth_allow_plain_http: over.auth_allow_plain_http.or(self.auth_allow_plain_http),
            http_connections_max: over.http_connections_max.or(self.http_connections_max),
            http_requests_in_flight_max: over
                .http_requests_in_flight_max
                .or(self.http_requests_in_flight_max),
            http_header_size_bytes_max: over
                .http_header_size_bytes_max
                .or(self.http_header_size_bytes_max),
            http_body_buffer_bytes_max: over
                .http_body_buffer_bytes_max
                .or(self.http_body_buffer_bytes_max),
            http_header_read_timeout_ms: over
                .http_header_read_timeout_ms
                .or(self.http_header_read_timeout_ms),
            http_body_read_timeout_ms: over
                .http_body_read_timeout_ms
                .or(self.http_body_read_timeout_ms),
            http_write_timeout_ms: over.http_write_timeout_ms.or(self.http_write_timeout_ms),
        }
    }
}

/// How logs are written to standard error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// The HTTP API's certificate and key files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// Authentication of HTTP clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// The users file.
    pub users_file: PathBuf,
    /// Whether credentials are accepted without TLS.
    pub allow_plain_http: bool,
}

/// HTTP API settings: security and limits.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Serve HTTPS with these files; `None` serves plain HTTP.
    pub tls: Option<TlsFiles>,
    /// Require credentials; `None` serves everyone.
    pub auth: Option<AuthConfig>,
    /// Connections served at once.
    pub connections_max: usize,
    /// Requests handled at once.
    pub requests_in_flight_max: usize,
    /// Largest request head.
    pub header_size_bytes_max: usize,
    /// Largest request body (the object size limit).
    pub body_size_bytes_max: usize,
    /// Bytes of request bodies held in memory at once.
    pub body_buffer_bytes_max: usize,
    /// Time to send a request head; idle keep-alive time.
    pub header_read_timeout: Duration,
    /// Time to send a request body.
    pub body_read_timeout: Duration,
    /// Time a response write may stall.
    pub write_timeout: Duration,
}

/// A validated node configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Name of this node.
    pub node_name: String,
    /// Data directory.
    pub data_dir: PathBuf,
    /// HTTP listen address.
    pub http_listen: SocketAddr,
    /// Cluster secret, if configured.
    pub cluster_secret: Option<String>,
    /// Cluster name.
    pub cluster_name: String,
    /// QUIC listen address.
    pub cluster_listen: SocketAddr,
    /// Address peers reach the QUIC endpoint at (`host:port`).
    pub cluster_advertise: String,
    /// HTTP address shown to peers and operators.
    pub http_advertise: String,
    /// Seeds.
    pub join: Vec<String>,
    /// Failure zone.
    pub zone: String,
    /// Storage durability policy.
    pub sync: SyncPolicy,
    /// With `SyncPolicy::Always`: the cap of the spacing between two
    /// fsyncs' starts.
    pub fsync_spacing: Duration,
    /// Storage limits.
    pub limits: Limits,
    /// Free space below which the store refuses writes (0: no check).
    pub disk_reserve_bytes: u64,
    /// Heap touched at start (see [`crate::memory`]).
    pub memory_prefault_bytes: u64,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_drain: Duration,
    /// Log format.
    pub log_format: LogFormat,
    /// Replication settings.
    pub replication: ReplicationConfig,
    /// Hinted hand-off settings.
    pub handoff: HandoffConfig,
    /// Anti-entropy and ownership transfer settings.
    pub aae: AaeConfig,
    /// Tombstone reaping settings.
    pub reaper: ReaperConfig,
    /// HTTP API security and limits.
    pub http: HttpConfig,
}

/// Shortest cluster secret accepted: a guessable secret lets an outsider
/// forge causal contexts (and later, join the cluster).
const CLUSTER_SECRET_LEN_MIN: usize = 16;

/// Largest disk reserve or heap prefault accepted: more is surely a unit
/// mistake (and the node prefaults at most half the available memory
/// whatever is set).
const BYTES_SETTING_MAX: u64 = 1 << 40;

impl Config {
    /// Fills defaults and validates.
    pub fn from_raw(raw: RawConfig) -> anyhow::Result<Config> {
        let http_raw = raw.clone();
        let http_listen = raw
            .http_listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], DEFAULT_HTTP_PORT)));
        let node_name = raw
            .node_name
            .unwrap_or_else(|| format!("starling@{}", http_listen.ip()));
        if node_name.is_empty() || node_name.len() > 255 {
            bail!("node_name must be 1 to 255 bytes long");
        }
        let sync = match (
            raw.sync.as_deref().unwrap_or("always"),
            raw.sync_interval_ms,
        ) {
            ("always", None) => SyncPolicy::Always,
            ("never", None) => SyncPolicy::Never,
            ("interval", interval_ms) => {
                let interval_ms = interval_ms.unwrap_or(100);
                if interval_ms == 0 || interval_ms > 60_000 {
                    bail!("sync_interval_ms must be between 1 and 60000, got {interval_ms}");
                }
                SyncPolicy::Interval { interval_ms }
            }
            ("always" | "never", Some(_)) => {
                bail!("sync_interval_ms only applies with sync = \"interval\"")
            }
            (other, _) => bail!("sync must be always, interval or never, got {other:?}"),
        };
        let fsync_spacing = match (sync, raw.fsync_spacing_us) {
            (_, None) => storage::DEFAULT_FSYNC_SPACING,
            (SyncPolicy::Always, Some(us)) if us <= 100_000 => Duration::from_micros(us),
            (SyncPolicy::Always, Some(us)) => {
                bail!("fsync_spacing_us must be between 0 and 100000, got {us}")
            }
            (_, Some(_)) => bail!("fsync_spacing_us only applies with sync = \"always\""),
        };
        if let Some(secret) = &raw.cluster_secret
            && secret.len() < CLUSTER_SECRET_LEN_MIN
        {
            bail!("cluster_secret must be at least {CLUSTER_SECRET_LEN_MIN} bytes long");
        }
        let mut limits = Limits::default();
        if let Some(max) = raw.object_size_bytes_max {
            if !(1024..=1 << 30).contains(&max) {
                bail!("object_size_bytes_max must be between 1 KiB and 1 GiB, got {max}");
            }
            limits.object_size_bytes_max = max;
            limits.object_size_bytes_warn = limits.object_size_bytes_warn.min(max);
        }
        let http = http_config(&http_raw, &limits)?;
        let disk_reserve_bytes = raw
            .disk_reserve_bytes
            .unwrap_or(storage::DEFAULT_DISK_RESERVE_BYTES);
        if disk_reserve_bytes > BYTES_SETTING_MAX {
            bail!("disk_reserve_bytes must be at most 1 TiB, got {disk_reserve_bytes}");
        }
        let memory_prefault_bytes = raw
            .memory_prefault_bytes
            .unwrap_or(crate::memory::DEFAULT_PREFAULT_BYTES);
        if memory_prefault_bytes > BYTES_SETTING_MAX {
            bail!("memory_prefault_bytes must be at most 1 TiB, got {memory_prefault_bytes}");
        }
        let log_format = match raw.log_format.as_deref().unwrap_or("text") {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => bail!("log_format must be text or json, got {other:?}"),
        };
        let shutdown_drain_ms = raw.shutdown_drain_ms.unwrap_or(10_000);
        if shutdown_drain_ms > 600_000 {
            bail!("shutdown_drain_ms must be at most 600000, got {shutdown_drain_ms}");
        }
        let cluster_name = raw.cluster_name.unwrap_or_else(|| "starling".to_owned());
        if cluster_name.is_empty()
            || cluster_name.len() > 64
            || !cluster_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            bail!("cluster_name must be 1 to 64 characters of letters, digits, '-', '_' or '.'");
        }
        let cluster_listen = raw
            .cluster_listen
            .unwrap_or_else(|| SocketAddr::new(http_listen.ip(), DEFAULT_CLUSTER_PORT));
        let cluster_advertise = match raw.cluster_advertise {
            Some(addr) => addr,
            None if cluster_listen.ip().is_unspecified() => {
                bail!(
                    "cluster_listen {cluster_listen} is a wildcard: set cluster_advertise to the address peers should use"
                )
            }
            None => cluster_listen.to_string(),
        };
        let http_advertise = match raw.http_advertise {
            Some(addr) => addr,
            None => http_listen.to_string(),
        };
        let join = raw
            .join
            .unwrap_or_default()
            .into_iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>();
        for seed in &join {
            if !seed.contains(':') {
                bail!("seed {seed:?} must be host:port");
            }
        }
        let zone = raw.zone.unwrap_or_default();
        if zone.len() > 64 {
            bail!("zone must be at most 64 bytes");
        }
        let ring_size = raw
            .ring_size
            .unwrap_or(crate::ring::DEFAULT_PARTITION_COUNT);
        if !ring_size.is_power_of_two() || ring_size > 65536 {
            bail!("ring_size must be a power of two between 1 and 65536, got {ring_size}");
        }
        let request_timeout_ms = raw.request_timeout_ms.unwrap_or(10_000);
        if !(10..=600_000).contains(&request_timeout_ms) {
            bail!("request_timeout_ms must be between 10 and 600000, got {request_timeout_ms}");
        }
        let replication = ReplicationConfig {
            partition_count: ring_size,
            request_timeout: Duration::from_millis(request_timeout_ms),
            read_repair: raw.read_repair.unwrap_or(true),
            ..ReplicationConfig::default()
        };
        let handoff = HandoffConfig {
            enabled: raw.hinted_handoff.unwrap_or(true),
            ..HandoffConfig::default()
        };
        let aae_interval_ms = raw.aae_interval_ms.unwrap_or(5_000);
        if !(100..=3_600_000).contains(&aae_interval_ms) {
            bail!("aae_interval_ms must be between 100 and 3600000, got {aae_interval_ms}");
        }
        let aae = AaeConfig {
            enabled: raw.anti_entropy.unwrap_or(true),
            interval: Duration::from_millis(aae_interval_ms),
            ..AaeConfig::default()
        };
        // Copies in flight when the reaper checked (a slow write, a read
        // repair) arrive within a request deadline plus the repair window;
        // a shorter grace could let one bring a reaped key back.
        let grace_ms_min = request_timeout_ms + replication.read_repair_window.as_millis() as u64;
        let delete_mode = match raw.delete_mode.as_deref().map(str::trim) {
            None => DeleteMode::After(
                crate::reaper::DEFAULT_GRACE.max(Duration::from_millis(grace_ms_min)),
            ),
            Some("keep") => DeleteMode::Keep,
            Some(ms) => {
                let ms: u64 = ms.parse().map_err(|_| {
                    anyhow::anyhow!(
                        "delete_mode must be \"keep\" or a number of milliseconds, got {ms:?}"
                    )
                })?;
                if ms < grace_ms_min {
                    bail!(
                        "delete_mode {ms} ms is shorter than request_timeout_ms plus the read repair \
                         window ({grace_ms_min} ms): a copy still in flight could bring a reaped key back"
                    );
                }
                DeleteMode::After(Duration::from_millis(ms))
            }
        };
        let reaper = ReaperConfig {
            delete_mode,
            ..ReaperConfig::default()
        };
        Ok(Config {
            http,
            replication,
            handoff,
            aae,
            reaper,
            cluster_name,
            cluster_listen,
            cluster_advertise,
            http_advertise,
            join,
            zone,
            node_name,
            data_dir: raw.data_dir.unwrap_or_else(|| PathBuf::from("data")),
            http_listen,
            cluster_secret: raw.cluster_secret,
            sync,
            fsync_spacing,
            limits,
            disk_reserve_bytes,
            memory_prefault_bytes,
            shutdown_drain: Duration::from_millis(shutdown_drain_ms),
            log_format,
        })
    }
}

/// Validates the HTTP API settings. Security: TLS needs both files;
/// authentication needs TLS unless plain HTTP is explicitly allowed (the
/// node would otherwise refuse every authenticated request).
fn http_config(raw: &RawConfig, limits: &Limits) -> anyhow::Result<HttpConfig> {
    let defaults = http_api::ServeConfig::default();
    let tls = match (&raw.http_tls_cert, &raw.http_tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        }),
        (None, None) => None,
        _ => bail!("http_tls_cert and http_tls_key must be given together"),
    };
    let allow_plain_http = raw.auth_allow_plain_http.unwrap_or(false);
    let auth = match &raw.auth_users_file {
        Some(users_file) => {
            if tls.is_none() && !allow_plain_http {
                bail!(
                    "auth_users_file is set but the HTTP API has no TLS: set http_tls_cert and \
                     http_tls_key, or auth_allow_plain_http = true if a TLS-terminating proxy \
                     stands in front of the node (credentials are refused over plain HTTP \
                     otherwise)"
                );
            }
            Some(AuthConfig {
                users_file: users_file.clone(),
                allow_plain_http,
            })
        }
        None if raw.auth_allow_plain_http.is_some() => {
            bail!("auth_allow_plain_http only applies with auth_users_file")
        }
        None => None,
    };
    let in_range = |name: &str, value: usize, min: usize, max: usize| {
        if (min..=max).contains(&value) {
            Ok(value)
        } else {
            Err(anyhow::anyhow!(
                "{name} must be between {min} and {max}, got {value}"
            ))
        }
    };
    let millis = |name: &str, value: Option<u64>, default: Duration| -> anyhow::Result<Duration> {
        match value {
            None => Ok(default),
            Some(ms) if (100..=3_600_000).contains(&ms) => Ok(Duration::from_millis(ms)),
            Some(ms) => bail!("{name} must be between 100 and 3600000, got {ms}"),
        }
    };
    let body_size_bytes_max = usize::try_from(limits.object_size_bytes_max)
        .context("object_size_bytes_max does not fit in memory")?;
    let body_buffer_bytes_max = match raw.http_body_buffer_bytes_max {
        None => defaults.body_buffer_bytes_max.max(body_size_bytes_max),
        Some(bytes) => {
            let bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
            if bytes < body_size_bytes_max {
                bail!(
                    "http_body_buffer_bytes_max ({bytes}) must be at least object_size_bytes_max \
                     ({body_size_bytes_max}), or the largest objects could never be written"
                );
            }
            in_range("http_body_buffer_bytes_max", bytes, 1024, 1 << 40)?
        }
    };
    Ok(HttpConfig {
        tls,
        auth,
        connections_max: in_range(
            "http_connections_max",
            raw.http_connections_max.unwrap_or(defaults.connections_max),
            1,
            1_000_000,
        )?,
        requests_in_flight_max: in_range(
            "http_requests_in_flight_max",
            raw.http_requests_in_flight_max
                .unwrap_or(defaults.requests_in_flight_max),
            1,
            1_000_000,
        )?,
        header_size_bytes_max: in_range(
            "http_header_size_bytes_max",
            raw.http_header_size_bytes_max
                .unwrap_or(defaults.header_size_bytes_max),
            8192,
            16 << 20,
        )?,
        body_size_bytes_max,
        body_buffer_bytes_max,
        header_read_timeout: millis(
            "http_header_read_timeout_ms",
            raw.http_header_read_timeout_ms,
            defaults.header_read_timeout,
        )?,
        body_read_timeout: millis(
            "http_body_read_timeout_ms",
            raw.http_body_read_timeout_ms,
            defaults.body_read_timeout,
        )?,
        write_timeout: millis(
            "http_write_timeout_ms",
            raw.http_write_timeout_ms,
            defaults.write_timeout,
        )?,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn defaults_are_riak_like_and_durable() {
        let c = Config::from_raw(RawConfig::default()).unwrap();
        assert_eq!(c.http_listen.port(), 8098);
        assert!(matches!(c.sync, SyncPolicy::Always));
        assert_eq!(c.fsync_spacing, Duration::from_millis(1));
        assert_eq!(c.disk_reserve_bytes, 512 << 20);
        let unspaced: RawConfig = toml::from_str("fsync_spacing_us = 0").unwrap();
        assert_eq!(
            Config::from_raw(unspaced).unwrap().fsync_spacing,
            Duration::ZERO
        );
        let off: RawConfig = toml::from_str("disk_reserve_bytes = 0").unwrap();
        assert_eq!(Config::from_raw(off).unwrap().disk_reserve_bytes, 0);
        assert_eq!(c.memory_prefault_bytes, 192 << 20);
        let none: RawConfig = toml::from_str("memory_prefault_bytes = 0").unwrap();
        assert_eq!(Config::from_raw(none).unwrap().memory_prefault_bytes, 0);
    }

    #[test]
    fn flags_override_file() {
        let file: RawConfig = toml::from_str("data_dir = \"/a\"\nsync = \"never\"").unwrap();
        let flags = RawConfig {
            data_dir: Some("/b".into()),
            ..RawConfig::default()
        };
        let c = Config::from_raw(file.layered(flags)).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/b"));
        assert!(matches!(c.sync, SyncPolicy::Never));
    }

    #[test]
    fn http_defaults_are_bounded_and_secure_settings_validated() {
        let c = Config::from_raw(RawConfig::default()).unwrap();
        assert_eq!(c.http.connections_max, 4096);
        assert_eq!(c.http.body_size_bytes_max, 50 * 1024 * 1024);
        assert!(c.http.body_buffer_bytes_max >= c.http.body_size_bytes_max);
        assert!(c.http.tls.is_none() && c.http.auth.is_none());
        let tls_auth: RawConfig = toml::from_str(
            "http_tls_cert = \"c.pem\"\nhttp_tls_key = \"k.pem\"\nauth_users_file = \"u.toml\"",
        )
        .unwrap();
        let c = Config::from_raw(tls_auth).unwrap();
        assert_eq!(
            c.http.auth,
            Some(AuthConfig {
                users_file: "u.toml".into(),
                allow_plain_http: false
            })
        );
        let proxied: RawConfig =
            toml::from_str("auth_users_file = \"u.toml\"\nauth_allow_plain_http = true").unwrap();
        assert!(
            Config::from_raw(proxied)
                .unwrap()
                .http
                .auth
                .unwrap()
                .allow_plain_http
        );
    }

    #[test]
    fn invalid_settings_are_refused() {
        for toml_text in [
            "http_tls_cert = \"c.pem\"",
            "auth_users_file = \"u.toml\"",
            "auth_allow_plain_http = true",
            "http_connections_max = 0",
            "http_header_size_bytes_max = 100",
            "http_body_buffer_bytes_max = 2048",
            "http_header_read_timeout_ms = 5",
            "sync = \"sometimes\"",
            "sync = \"always\"\nsync_interval_ms = 5",
            "sync = \"interval\"\nsync_interval_ms = 0",
            "sync = \"never\"\nfsync_spacing_us = 500",
            "fsync_spacing_us = 100001",
            "cluster_secret = \"short\"",
            "log_format = \"xml\"",
            "unknown_field = 1",
            "delete_mode = \"soon\"",
            "delete_mode = \"500\"",
            "aae_interval_ms = 5",
            "disk_reserve_bytes = 2000000000000",
            "memory_prefault_bytes = 2000000000000",
        ] {
            let parsed = toml::from_str::<RawConfig>(toml_text)
                .map_err(anyhow::Error::from)
                .and_then(Config::from_raw);
            assert!(parsed.is_err(), "{toml_text} should be refused");
        }
    }
}
