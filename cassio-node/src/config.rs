//! The `cassio` binary's configuration: flags and a TOML file (flags win),
//! parsed into [`Settings`], plus what the node keeps in its data directory
//! (its id, its last generation, its storage engine).
//!
//! Every setting has one name: the TOML key (`replication_factor`) and the
//! flag (`--replication-factor`) are the same words. Every bad value is
//! reported as one [`ConfigError`] naming the setting and the value.

use cassio_core::Consistency;
use cassio_transport_tcp::TlsConfig;
use core::net::SocketAddr;
use std::collections::BTreeMap;
use std::net::ToSocketAddrs;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A bad setting: which one, its value, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} = {value:?}: {reason}")]
pub struct ConfigError {
    /// The setting (TOML key; the flag is the same with dashes).
    pub field: String,
    /// The value given.
    pub value: String,
    /// What is wrong.
    pub reason: String,
}

impl ConfigError {
    /// An error about `field` having `value`.
    pub fn new(field: &str, value: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            field: field.to_owned(),
            value: value.into(),
            reason: reason.into(),
        }
    }
}

/// Every setting's name, as TOML key.
pub const FIELDS: &[&str] = &[
    "node_id",
    "cluster",
    "listen",
    "advertise",
    "seeds",
    "data_dir",
    "store",
    "sync",
    "truncate_corrupt_log",
    "start_without_quorum",
    "transport",
    "tls_ca",
    "tls_cert",
    "tls_key",
    "insecure_plaintext",
    "replication_factor",
    "consistency",
    "vnodes",
    // Racks and datacenters (see docs/operations.md).
    "datacenter",
    "rack",
    "client_addr",
    "resp_addr",
    "http_addr",
    "gossip_interval_ms",
    "phi_threshold",
    "request_timeout_ms",
    "storage_threads",
    "leave_on_exit",
    // A new node that takes a dead member's place (see operations.md,
    // "Replacing a dead node").
    "replace",
    "log_format",
    "log_level",
    // Overload caps (see docs/operations.md, "Limits").
    "max_connections",
    "max_query_buffer_bytes",
    "max_total_query_buffer_bytes",
    "max_keys_per_command",
    "storage_max_in_flight",
    "storage_max_in_flight_bytes",
    // Repair, hints and tombstones (see docs/operations.md).
    "tombstone_grace",
    "repair_interval",
    "repair_bytes_per_sec",
    "hint_window",
    "max_hint_bytes_per_node",
    "max_hint_bytes",
    "no_hints",
    // Client ports: users, TLS, idle connections (see docs/operations.md,
    // "Users, TLS and limits on client ports").
    "users",
    "users_file",
    "client_tls_cert",
    "client_tls_key",
    "insecure_no_auth",
    "idle_timeout",
];

/// Settings as given (strings), before parsing; later layers override.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawSettings(pub BTreeMap<String, String>);

impl RawSettings {
    /// Sets `field` (must be one of [`FIELDS`]).
    pub fn set(&mut self, field: &str, value: impl Into<String>) {
        self.0.insert(field.to_owned(), value.into());
    }

    /// Overrides these settings with those of `top`.
    pub fn overlay(&mut self, top: &RawSettings) {
        for (k, v) in &top.0 {
            self.0.insert(k.clone(), v.clone());
        }
    }

    fn get(&self, field: &str) -> Option<&str> {
        self.0.get(field).map(String::as_str)
    }

    /// Reads a TOML config file.
    pub fn from_toml_file(path: &Path) -> Result<RawSettings, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new("config", &shown, format!("cannot read: {e}")))?;
        Self::from_toml_str(&text).map_err(|mut e| {
            if e.field == "config" {
                e.value = shown;
            }
            e
        })
    }

    /// Parses TOML text.
    pub fn from_toml_str(text: &str) -> Result<RawSettings, ConfigError> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let msg = e.message().replace('\n', " ");
            let at = e
                .span()
                .map(|s| {
                    let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                    format!(" (line {line})")
                })
                .unwrap_or_default();
            ConfigError::new("config", "", format!("not valid TOML{at}: {msg}"))
        })?;
        let mut raw = RawSettings::default();
        for (key, value) in table {
            if !FIELDS.contains(&key.as_str()) {
                return Err(ConfigError::new(
                    &key,
                    value.to_string(),
                    "unknown setting (see `cassio start --help`)",
                ));
            }
            if key == "users" {
                // An array of tables: kept as TOML text, parsed (and
                // validated) by `Settings::from_raw`.
                let mut doc = toml::Table::new();
                doc.insert(key.clone(), value);
                raw.set(&key, doc.to_string());
                continue;
            }
            let s = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Array(items) => {
                    let mut parts = Vec::new();
                    for item in items {
                        match item {
                            toml::Value::String(s) => parts.push(s),
                            other => {
                                return Err(ConfigError::new(
                                    &key,
                                    other.to_string(),
                                    "expected a list of strings",
                                ))
                            }
                        }
                    }
                    parts.join(",")
                }
                other => {
                    return Err(ConfigError::new(
                        &key,
                        other.to_string(),
                        "expected a string, number or boolean",
                    ))
                }
            };
            raw.set(&key, s);
        }
        Ok(raw)
    }
}

/// Which storage engine holds the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreEngine {
    /// Cassio's own LSM (`cassio-store-native`).
    Native,
    /// RocksDB (cargo feature `rocksdb`).
    Rocksdb,
    /// sled (cargo feature `sled`).
    Sled,
}

impl StoreEngine {
    /// Its name in settings and in the data directory's `engine` file.
    pub fn name(self) -> &'static str {
        match self {
            StoreEngine::Native => "native",
            StoreEngine::Rocksdb => "rocksdb",
            StoreEngine::Sled => "sled",
        }
    }
}

/// When the store forces writes to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncSetting {
    /// Before every write is acknowledged.
    Always,
    /// Every period, in the background.
    Periodic(Duration),
    /// Only on flush and shutdown.
    Never,
}

/// Which peer-to-peer transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// TCP, with mutual TLS when certificates are configured.
    Tcp,
    /// QUIC (always mutual TLS).
    Quic,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// A node's complete, validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The node id; `None`: the one in the data dir, or a new random one.
    pub node_id: Option<u64>,
    /// Cluster name.
    pub cluster: String,
    /// Peer-to-peer listen address.
    pub listen: SocketAddr,
    /// Peer address gossiped to others (default: the bound listen address).
    pub advertise: Option<SocketAddr>,
    /// Seeds' peer addresses.
    pub seeds: Vec<SocketAddr>,
    /// Where the node keeps its data.
    pub data_dir: PathBuf,
    /// Storage engine.
    pub store: StoreEngine,
    /// Sync policy.
    pub sync: SyncSetting,
    /// Native store: cut the commit log at damage that valid records follow
    /// instead of refusing to start (loses those records; see operations.md).
    pub truncate_corrupt_log: bool,
    /// Coordinate at once after a restart instead of waiting to hear from a
    /// majority of the persisted view (see operations.md for the risk).
    pub start_without_quorum: bool,
    /// Transport.
    pub transport: TransportKind,
    /// Mutual TLS certificates, if configured.
    pub tls: Option<TlsConfig>,
    /// Plaintext TCP was asked for explicitly.
    pub insecure_plaintext: bool,
    /// Replication factor of the default keyspace.
    pub replication_factor: usize,
    /// Default consistency level.
    pub consistency: Consistency,
    /// Virtual nodes on the ring.
    pub vnodes: u16,
    /// This node's datacenter.
    pub datacenter: String,
    /// This node's rack within its datacenter.
    pub rack: String,
    /// Native client protocol address (`None`: off).
    pub client_addr: Option<SocketAddr>,
    /// RESP gateway address (`None`: off).
    pub resp_addr: Option<SocketAddr>,
    /// HTTP gateway address (`None`: off).
    pub http_addr: Option<SocketAddr>,
    /// Gossip round interval.
    pub gossip_interval: Duration,
    /// Failure detector threshold.
    pub phi_threshold: f64,
    /// Coordinator request timeout.
    pub request_timeout: Duration,
    /// Storage worker threads.
    pub storage_threads: usize,
    /// Leave the ring (gossip `Left`) when stopped by a signal.
    pub leave_on_exit: bool,
    /// The dead member this new node replaces (`--replace NODE_ID`): it
    /// joins with an empty data dir and asks the cluster to take the dead
    /// one off the ring once it has synced.
    pub replace: Option<u64>,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter (tracing-subscriber `EnvFilter` syntax).
    pub log_level: String,
    /// Caps on every client port (connections, buffered input, keys per
    /// command).
    pub gateway_limits: crate::gateway::GatewayLimits,
    /// Bounds on storage work in flight.
    pub storage_limits: crate::driver::StorageLimits,
    /// How long a tombstone is kept at least (and how long a node may be
    /// down and still rejoin with its data); the store and the core get
    /// the same value.
    pub tombstone_grace: Duration,
    /// Anti-entropy: the core's defaults with the interval and byte rate
    /// from the settings.
    pub repair: cassio_core::anti_entropy::RepairConfig,
    /// Hinted handoff: the core's defaults with the window and caps from
    /// the settings.
    pub hints: cassio_core::hints::HintConfig,
    /// Users of the client ports (`[[users]]`); empty: no authentication.
    pub users: Vec<crate::auth::User>,
    /// TLS certificate and key (PEM) of the client ports; `None`: plaintext.
    pub client_tls: Option<ClientTlsFiles>,
    /// Client ports off loopback without users were asked for explicitly.
    pub insecure_no_auth: bool,
}

/// The certificate and key every client port (RESP, HTTP, native) serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTlsFiles {
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
}

/// One `[[users]]` table as written in the file.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    name: String,
    password_hash: Option<String>,
    token_hash: Option<String>,
    access: Option<String>,
    #[serde(default)]
    keyspaces: BTreeMap<String, String>,
    #[serde(default)]
    admin: bool,
}

/// The `users` setting: `[[users]]` tables, as TOML text.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersDoc {
    users: Vec<UserEntry>,
}

/// Parses and validates the `[[users]]` tables (names, hashes, access).
fn users_setting(text: &str) -> Result<Vec<crate::auth::User>, ConfigError> {
    use crate::auth::{check_hash, Access, User};
    let doc: UsersDoc = toml::from_str(text).map_err(|e| {
        ConfigError::new(
            "users",
            "",
            format!(
                "expected [[users]] tables with name, password_hash, token_hash, access, keyspaces, admin: {}",
                e.message().replace('\n', " ")
            ),
        )
    })?;
    let mut users: Vec<User> = Vec::with_capacity(doc.users.len());
    for (i, e) in doc.users.into_iter().enumerate() {
        let field = |f: &str| format!("users[{i}].{f}");
        if e.name.is_empty()
            || e.name.len() > 64
            || e.name.contains(':')
            || e.name.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(ConfigError::new(
                &field("name"),
                &e.name,
                "must be 1 to 64 bytes without ':', spaces or control characters",
            ));
        }
        if users.iter().any(|u| u.name == e.name) {
            return Err(ConfigError::new(&field("name"), &e.name, "listed twice"));
        }
        if e.password_hash.is_none() && e.token_hash.is_none() {
            return Err(ConfigError::new(
                &field("password_hash"),
                "",
                "a user needs a password_hash or a token_hash (`cassio hash-password` makes them)",
            ));
        }
        for (f, h) in [
            ("password_hash", &e.password_hash),
            ("token_hash", &e.token_hash),
        ] {
            if let Some(h) = h {
                check_hash(h).map_err(|reason| ConfigError::new(&field(f), h, reason))?;
            }
        }
        let level = |f: &str, v: &str| {
            Access::parse(v)
                .ok_or_else(|| ConfigError::new(f, v, "expected read-write, read-only or none"))
        };
        let access = match &e.access {
            Some(v) => level(&field("access"), v)?,
            None => Access::ReadOnly,
        };
        let mut keyspaces = BTreeMap::new();
        for (ks, v) in &e.keyspaces {
            if ks.is_empty() {
                return Err(ConfigError::new(
                    &field("keyspaces"),
                    v,
                    "a keyspace name must not be empty",
                ));
            }
            keyspaces.insert(ks.clone(), level(&field(&format!("keyspaces.{ks}")), v)?);
        }
        users.push(User {
            name: e.name,
            password_hash: e.password_hash,
            token_hash: e.token_hash,
            access,
            keyspaces,
            admin: e.admin,
        });
    }
    Ok(users)
}

/// Default peer port.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7000";
/// Default native client port (Redis' 6379 plus 1000).
pub const DEFAULT_CLIENT_ADDR: &str = "127.0.0.1:7379";
/// Default RESP port: next to a real Redis' 6379, not on it.
pub const DEFAULT_RESP_ADDR: &str = "127.0.0.1:6380";
/// Default HTTP port.
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8080";

fn addr(field: &str, v: &str) -> Result<SocketAddr, ConfigError> {
    if let Ok(a) = v.parse::<SocketAddr>() {
        return Ok(a);
    }
    match v.to_socket_addrs() {
        Ok(mut it) => it
            .next()
            .ok_or_else(|| ConfigError::new(field, v, "resolves to no address")),
        Err(e) => Err(ConfigError::new(
            field,
            v,
            format!("expected HOST:PORT ({e})"),
        )),
    }
}

fn optional_addr(field: &str, v: &str) -> Result<Option<SocketAddr>, ConfigError> {
    match v {
        "off" | "none" | "" => Ok(None),
        _ => addr(field, v).map(Some),
    }
}

fn boolean(field: &str, v: &str) -> Result<bool, ConfigError> {
    match v {
        "true" | "yes" | "1" | "on" => Ok(true),
        "false" | "no" | "0" | "off" => Ok(false),
        _ => Err(ConfigError::new(field, v, "expected true or false")),
    }
}

/// Parses a node id as `cassio status` prints it (the Node ID column: a
/// decimal integer from 1), or as logs and error messages print it (the
/// same with an `n` in front).
pub fn parse_node_id(text: &str) -> Result<u64, ConfigError> {
    let t = text.trim();
    let t = t.strip_prefix('n').unwrap_or(t);
    // `u64::from_str` takes a leading `+`; an id never has one.
    if t.starts_with('+') {
        return Err(ConfigError::new(
            "node_id",
            text,
            "expected a node id: a decimal integer as the Node ID column of `cassio status` shows it",
        ));
    }
    match t.parse::<u64>() {
        Ok(0) => Err(ConfigError::new("node_id", text, "node ids start at 1")),
        Ok(id) => Ok(id),
        Err(_) => Err(ConfigError::new(
            "node_id",
            text,
            "expected a node id: a decimal integer as the Node ID column of `cassio status` shows it",
        )),
    }
}

fn number<T: std::str::FromStr>(field: &str, v: &str, what: &str) -> Result<T, ConfigError> {
    v.trim()
        .parse()
        .map_err(|_| ConfigError::new(field, v, format!("expected {what}")))
}

/// A byte count: an integer with an optional binary suffix (`64MiB`,
/// `1GiB`, `512k`).
fn byte_size(field: &str, v: &str) -> Result<usize, ConfigError> {
    let t = v.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => {
            return Err(ConfigError::new(
                field,
                v,
                "expected a byte count such as 67108864, 64MiB or 1GiB",
            ))
        }
    };
    digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(1usize << shift))
        .ok_or_else(|| {
            ConfigError::new(
                field,
                v,
                "expected a byte count such as 67108864, 64MiB or 1GiB",
            )
        })
}

/// The default `tombstone_grace` (the core's default, 10 days).
pub const DEFAULT_TOMBSTONE_GRACE: Duration = Duration::from_secs(10 * 24 * 3600);

/// The smallest `tombstone_grace`: the node records that it is alive once
/// an hour, so a restart measures its downtime up to an hour long; a grace
/// of a few hours keeps a short outage from being refused.
pub const MIN_TOMBSTONE_GRACE: Duration = Duration::from_secs(3 * 3600);

/// The smallest non-zero `repair_bytes_per_sec`: below it a single large
/// item would hold an exchange for minutes.
pub const MIN_REPAIR_BYTES_PER_SEC: u64 = 64 * 1024;

/// The smallest hint caps: room for a batch of ordinary writes.
pub const MIN_HINT_BYTES: u64 = 1024 * 1024;

/// A duration: one or more `<integer><unit>` parts with units `ms`, `s`,
/// `m`, `h` and `d` (`10d`, `3h`, `1h30m`, `500ms`).
pub fn duration(field: &str, v: &str) -> Result<Duration, ConfigError> {
    let bad = || {
        ConfigError::new(
            field,
            v,
            "expected a duration such as 500ms, 30s, 10m, 3h or 10d",
        )
    };
    let mut rest = v.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let per_unit_ms: u64 = match rest[..unit_len].trim() {
            "ms" => 1,
            "s" => 1_000,
            "m" | "min" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        let ms = n.checked_mul(per_unit_ms).ok_or_else(bad)?;
        total = total
            .checked_add(Duration::from_millis(ms))
            .ok_or_else(bad)?;
    }
    Ok(total)
}

/// A duration setting with its default.
fn duration_setting(
    raw: &RawSettings,
    field: &str,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match raw.get(field) {
        Some(v) => duration(field, v),
        None => Ok(default),
    }
}

/// A byte-size setting with its default.
fn bytes_setting(raw: &RawSettings, field: &str, default: u64) -> Result<u64, ConfigError> {
    match raw.get(field) {
        Some(v) => Ok(byte_size(field, v)? as u64),
        None => Ok(default),
    }
}

/// The repair, hint and tombstone settings, checked against each other.
fn repair_settings(
    raw: &RawSettings,
) -> Result<
    (
        Duration,
        cassio_core::anti_entropy::RepairConfig,
        cassio_core::hints::HintConfig,
    ),
    ConfigError,
> {
    use cassio_core::anti_entropy::RepairConfig;
    use cassio_core::hints::HintConfig;
    let shown = |field: &str| raw.get(field).unwrap_or_default().to_owned();
    let grace = duration_setting(raw, "tombstone_grace", DEFAULT_TOMBSTONE_GRACE)?;
    if grace < MIN_TOMBSTONE_GRACE {
        return Err(ConfigError::new(
            "tombstone_grace",
            shown("tombstone_grace"),
            "must be at least 3h (a node records that it is alive hourly, so a shorter grace would refuse restarts after short outages)",
        ));
    }
    let mut repair = RepairConfig::default();
    repair.interval = duration_setting(raw, "repair_interval", repair.interval)?;
    if repair.interval < Duration::from_secs(1) {
        return Err(ConfigError::new(
            "repair_interval",
            shown("repair_interval"),
            "must be at least 1s (anti-entropy cannot be turned off: it is what lets tombstones be purged)",
        ));
    }
    if repair.interval >= grace {
        return Err(ConfigError::new(
            "repair_interval",
            shown("repair_interval"),
            format!(
                "must be shorter than tombstone_grace ({}): tombstones are purged only once every member completed a round after them",
                show_duration(grace)
            ),
        ));
    }
    repair.bytes_per_sec = bytes_setting(raw, "repair_bytes_per_sec", repair.bytes_per_sec)?;
    if repair.bytes_per_sec != 0 && repair.bytes_per_sec < MIN_REPAIR_BYTES_PER_SEC {
        return Err(ConfigError::new(
            "repair_bytes_per_sec",
            shown("repair_bytes_per_sec"),
            "must be 0 (unlimited) or at least 64KiB",
        ));
    }
    let mut hints = HintConfig::default();
    hints.enabled = !boolean("no_hints", raw.get("no_hints").unwrap_or("false"))?;
    hints.window = duration_setting(raw, "hint_window", hints.window)?;
    if hints.window.is_zero() {
        return Err(ConfigError::new(
            "hint_window",
            shown("hint_window"),
            "must be more than 0 (no_hints turns hints off)",
        ));
    }
    if hints.window > grace {
        return Err(ConfigError::new(
            "hint_window",
            shown("hint_window"),
            format!(
                "must not exceed tombstone_grace ({}): older hints are dropped anyway",
                show_duration(grace)
            ),
        ));
    }
    hints.max_bytes_per_target =
        bytes_setting(raw, "max_hint_bytes_per_node", hints.max_bytes_per_target)?;
    hints.max_bytes_total = bytes_setting(raw, "max_hint_bytes", hints.max_bytes_total)?;
    for (field, n) in [
        ("max_hint_bytes_per_node", hints.max_bytes_per_target),
        ("max_hint_bytes", hints.max_bytes_total),
    ] {
        if n < MIN_HINT_BYTES {
            return Err(ConfigError::new(
                field,
                shown(field),
                "must be at least 1MiB",
            ));
        }
    }
    Ok((grace, repair, hints))
}

/// A duration as the settings write it (`10d`, `3h`, `90s`).
pub fn show_duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, per) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms >= per && ms % per == 0 {
            return format!("{}{unit}", ms / per);
        }
    }
    format!("{ms}ms")
}

/// A count or byte size that must be at least `min`.
fn at_least(
    raw: &RawSettings,
    field: &str,
    default: usize,
    min: usize,
    bytes: bool,
) -> Result<usize, ConfigError> {
    let Some(v) = raw.get(field) else {
        return Ok(default);
    };
    let n = if bytes {
        byte_size(field, v)?
    } else {
        number(field, v, "a positive integer")?
    };
    if n < min {
        return Err(ConfigError::new(
            field,
            v,
            format!("must be at least {min}"),
        ));
    }
    Ok(n)
}

fn sync_setting(v: &str) -> Result<SyncSetting, ConfigError> {
    let lower = v.to_ascii_lowercase();
    match lower.as_str() {
        "always" => return Ok(SyncSetting::Always),
        "never" => return Ok(SyncSetting::Never),
        "periodic" => return Ok(SyncSetting::Periodic(Duration::from_millis(100))),
        _ => {}
    }
    let bad = || {
        ConfigError::new(
            "sync",
            v,
            "expected always, never, periodic or periodic:MILLISECONDS",
        )
    };
    let ms = lower.strip_prefix("periodic:").ok_or_else(bad)?;
    let ms = ms.strip_suffix("ms").unwrap_or(ms);
    let ms: u64 = ms.parse().map_err(|_| bad())?;
    if ms == 0 {
        return Err(ConfigError::new(
            "sync",
            v,
            "the period must be at least 1 ms",
        ));
    }
    Ok(SyncSetting::Periodic(Duration::from_millis(ms)))
}

impl Settings {
    /// Parses and validates `raw`, filling in defaults.
    pub fn from_raw(raw: &RawSettings) -> Result<Settings, ConfigError> {
        let get = |f: &str, default: &str| raw.get(f).unwrap_or(default).to_owned();
        let node_id = match raw.get("node_id") {
            Some(v) => {
                let id: u64 = number("node_id", v, "a positive integer")?;
                if id == 0 {
                    return Err(ConfigError::new("node_id", v, "must not be 0"));
                }
                Some(id)
            }
            None => None,
        };
        let cluster = get("cluster", "cassio");
        if cluster.is_empty() || cluster.len() > 255 {
            return Err(ConfigError::new(
                "cluster",
                &cluster,
                "must be 1 to 255 bytes",
            ));
        }
        let listen = addr("listen", &get("listen", DEFAULT_LISTEN))?;
        let advertise = match raw.get("advertise") {
            Some(v) => Some(addr("advertise", v)?),
            None => None,
        };
        let mut seeds = Vec::new();
        for s in get("seeds", "")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            seeds.push(addr("seeds", s)?);
        }
        let data_dir = PathBuf::from(get("data_dir", "./cassio-data"));
        if data_dir.as_os_str().is_empty() {
            return Err(ConfigError::new("data_dir", "", "must not be empty"));
        }
        let store_name = get("store", "native");
        let store = match store_name.to_ascii_lowercase().as_str() {
            "native" => StoreEngine::Native,
            "rocksdb" => StoreEngine::Rocksdb,
            "sled" => StoreEngine::Sled,
            _ => {
                return Err(ConfigError::new(
                    "store",
                    &store_name,
                    "expected native, rocksdb or sled",
                ))
            }
        };
        if store == StoreEngine::Rocksdb && !cfg!(feature = "rocksdb") {
            return Err(ConfigError::new(
                "store",
                &store_name,
                "this binary was built without the `rocksdb` cargo feature (rebuild with `--features rocksdb`)",
            ));
        }
        if store == StoreEngine::Sled && !cfg!(feature = "sled") {
            return Err(ConfigError::new(
                "store",
                &store_name,
                "this binary was built without the `sled` cargo feature (rebuild with `--features sled`)",
            ));
        }
        let sync = sync_setting(&get("sync", "periodic"))?;
        let truncate_corrupt_log = boolean(
            "truncate_corrupt_log",
            &get("truncate_corrupt_log", "false"),
        )?;
        let start_without_quorum = boolean(
            "start_without_quorum",
            &get("start_without_quorum", "false"),
        )?;
        let transport_name = get("transport", "tcp");
        let transport = match transport_name.to_ascii_lowercase().as_str() {
            "tcp" => TransportKind::Tcp,
            "quic" => TransportKind::Quic,
            _ => {
                return Err(ConfigError::new(
                    "transport",
                    &transport_name,
                    "expected tcp or quic",
                ))
            }
        };
        let tls_files = [
            ("tls_ca", raw.get("tls_ca")),
            ("tls_cert", raw.get("tls_cert")),
            ("tls_key", raw.get("tls_key")),
        ];
        let given = tls_files.iter().filter(|(_, v)| v.is_some()).count();
        let tls = match tls_files {
            [(_, Some(ca)), (_, Some(cert)), (_, Some(key))] => {
                for (field, v) in [("tls_ca", ca), ("tls_cert", cert), ("tls_key", key)] {
                    if !Path::new(v).is_file() {
                        return Err(ConfigError::new(field, v, "no such file"));
                    }
                }
                Some(TlsConfig::new(ca, cert, key))
            }
            _ if given > 0 => {
                let (missing, _) = tls_files
                    .iter()
                    .find(|(_, v)| v.is_none())
                    .copied()
                    .unwrap_or(("tls_ca", None));
                return Err(ConfigError::new(
                    missing,
                    "",
                    "tls_ca, tls_cert and tls_key must be given together",
                ));
            }
            _ => None,
        };
        let insecure_plaintext =
            boolean("insecure_plaintext", &get("insecure_plaintext", "false"))?;
        if transport == TransportKind::Quic && tls.is_none() {
            return Err(ConfigError::new(
                "transport",
                &transport_name,
                "QUIC always uses TLS: give tls_ca, tls_cert and tls_key (`cassio gen-certs` makes development ones)",
            ));
        }
        if transport == TransportKind::Tcp
            && tls.is_none()
            && !insecure_plaintext
            && !listen.ip().is_loopback()
        {
            return Err(ConfigError::new(
                "listen",
                listen.to_string(),
                "peer traffic off loopback needs TLS (tls_ca, tls_cert, tls_key) or an explicit insecure_plaintext = true",
            ));
        }
        let rf_text = get("replication_factor", "1");
        let replication_factor: usize =
            number("replication_factor", &rf_text, "a positive integer")?;
        if replication_factor == 0 {
            return Err(ConfigError::new(
                "replication_factor",
                rf_text,
                "must be at least 1",
            ));
        }
        let level_text = get("consistency", "quorum");
        let consistency: Consistency = level_text
            .parse()
            .map_err(|e: String| ConfigError::new("consistency", &level_text, e))?;
        if consistency.required(replication_factor) > replication_factor {
            return Err(ConfigError::new(
                "consistency",
                &level_text,
                format!("needs more replicas than replication_factor = {replication_factor}"),
            ));
        }
        let vnodes_text = get("vnodes", "256");
        let vnodes: u16 = number("vnodes", &vnodes_text, "an integer from 1 to 65535")?;
        if vnodes == 0 {
            return Err(ConfigError::new(
                "vnodes",
                vnodes_text,
                "must be at least 1",
            ));
        }
        let datacenter = get("datacenter", cassio_core::topology::DEFAULT_DATACENTER);
        cassio_core::topology::check_location_name("datacenter", &datacenter)
            .map_err(|e| ConfigError::new("datacenter", &datacenter, e.to_string()))?;
        let rack = get("rack", cassio_core::topology::DEFAULT_RACK);
        cassio_core::topology::check_location_name("rack", &rack)
            .map_err(|e| ConfigError::new("rack", &rack, e.to_string()))?;
        let client_addr = optional_addr("client_addr", &get("client_addr", DEFAULT_CLIENT_ADDR))?;
        let resp_addr = optional_addr("resp_addr", &get("resp_addr", DEFAULT_RESP_ADDR))?;
        let http_addr = optional_addr("http_addr", &get("http_addr", DEFAULT_HTTP_ADDR))?;
        let gi_text = get("gossip_interval_ms", "1000");
        let gi: u64 = number("gossip_interval_ms", &gi_text, "milliseconds")?;
        if !(10..=60_000).contains(&gi) {
            return Err(ConfigError::new(
                "gossip_interval_ms",
                gi_text,
                "must be between 10 and 60000",
            ));
        }
        let phi_text = get("phi_threshold", "8");
        let phi_threshold: f64 = number("phi_threshold", &phi_text, "a number")?;
        if !(phi_threshold.is_finite() && phi_threshold > 0.0) {
            return Err(ConfigError::new(
                "phi_threshold",
                phi_text,
                "must be a positive number",
            ));
        }
        let rt_text = get("request_timeout_ms", "2000");
        let rt: u64 = number("request_timeout_ms", &rt_text, "milliseconds")?;
        if rt == 0 {
            return Err(ConfigError::new(
                "request_timeout_ms",
                rt_text,
                "must be at least 1",
            ));
        }
        let st_text = get("storage_threads", "2");
        let storage_threads: usize = number("storage_threads", &st_text, "a positive integer")?;
        if !(1..=256).contains(&storage_threads) {
            return Err(ConfigError::new(
                "storage_threads",
                st_text,
                "must be between 1 and 256",
            ));
        }
        let leave_on_exit = boolean("leave_on_exit", &get("leave_on_exit", "false"))?;
        let replace = match raw.get("replace") {
            None => None,
            Some(v) => {
                let id = parse_node_id(v).map_err(|e| ConfigError::new("replace", v, e.reason))?;
                if seeds.is_empty() {
                    return Err(ConfigError::new(
                        "replace",
                        v,
                        "a replacement joins an existing cluster: give seeds too",
                    ));
                }
                if node_id == Some(id) {
                    return Err(ConfigError::new(
                        "replace",
                        v,
                        "is this node's own node_id; a replacement runs under a new id",
                    ));
                }
                Some(id)
            }
        };
        let lf_text = get("log_format", "human");
        let log_format = match lf_text.to_ascii_lowercase().as_str() {
            "human" | "text" => LogFormat::Human,
            "json" => LogFormat::Json,
            _ => {
                return Err(ConfigError::new(
                    "log_format",
                    lf_text,
                    "expected human or json",
                ))
            }
        };
        let log_level = get("log_level", "info");
        let gateway_limits = {
            use crate::gateway::limits::*;
            GatewayLimits {
                max_connections: at_least(
                    raw,
                    "max_connections",
                    DEFAULT_MAX_CONNECTIONS,
                    1,
                    false,
                )?,
                // A command needs room for its framing besides its bytes.
                max_query_buffer_bytes: at_least(
                    raw,
                    "max_query_buffer_bytes",
                    DEFAULT_MAX_QUERY_BUFFER_BYTES,
                    1024,
                    true,
                )?,
                max_total_query_buffer_bytes: at_least(
                    raw,
                    "max_total_query_buffer_bytes",
                    DEFAULT_MAX_TOTAL_QUERY_BUFFER_BYTES,
                    1024,
                    true,
                )?,
                max_keys_per_command: at_least(
                    raw,
                    "max_keys_per_command",
                    DEFAULT_MAX_KEYS_PER_COMMAND,
                    1,
                    false,
                )?,
                idle_timeout: match raw.get("idle_timeout") {
                    None => DEFAULT_IDLE_TIMEOUT,
                    Some("0" | "off" | "none") => None,
                    Some(v) => Some(duration("idle_timeout", v)?).filter(|d| !d.is_zero()),
                },
            }
        };
        let users =
            match (raw.get("users"), raw.get("users_file")) {
                (Some(_), Some(path)) => return Err(ConfigError::new(
                    "users_file",
                    path,
                    "give users either as [[users]] in the config file or in users_file, not both",
                )),
                (Some(text), None) => users_setting(text)?,
                (None, Some(path)) => {
                    let text = std::fs::read_to_string(path).map_err(|e| {
                        ConfigError::new("users_file", path, format!("cannot read: {e}"))
                    })?;
                    users_setting(&text).map_err(|mut e| {
                        e.field = format!("users_file {path}: {}", e.field);
                        e
                    })?
                }
                (None, None) => Vec::new(),
            };
        let client_tls = match (raw.get("client_tls_cert"), raw.get("client_tls_key")) {
            (Some(cert), Some(key)) => {
                for (field, v) in [("client_tls_cert", cert), ("client_tls_key", key)] {
                    if !Path::new(v).is_file() {
                        return Err(ConfigError::new(field, v, "no such file"));
                    }
                }
                Some(ClientTlsFiles {
                    cert: PathBuf::from(cert),
                    key: PathBuf::from(key),
                })
            }
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "client_tls_key",
                    "",
                    "client_tls_cert and client_tls_key must be given together",
                ))
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "client_tls_cert",
                    "",
                    "client_tls_cert and client_tls_key must be given together",
                ))
            }
        };
        let insecure_no_auth = boolean("insecure_no_auth", &get("insecure_no_auth", "false"))?;
        if users.is_empty() && !insecure_no_auth {
            for (field, a) in [
                ("client_addr", client_addr),
                ("resp_addr", resp_addr),
                ("http_addr", http_addr),
            ] {
                if let Some(a) = a.filter(|a| !a.ip().is_loopback()) {
                    return Err(ConfigError::new(
                        field,
                        a.to_string(),
                        "a client port off loopback needs users ([[users]] in the config file, or users_file) or an explicit insecure_no_auth = true (--insecure-no-auth)",
                    ));
                }
            }
        }
        let storage_limits = crate::driver::StorageLimits {
            max_in_flight: at_least(
                raw,
                "storage_max_in_flight",
                crate::driver::DEFAULT_STORAGE_MAX_IN_FLIGHT,
                1,
                false,
            )?,
            max_in_flight_bytes: at_least(
                raw,
                "storage_max_in_flight_bytes",
                crate::driver::DEFAULT_STORAGE_MAX_IN_FLIGHT_BYTES,
                1024,
                true,
            )?,
        };
        let (tombstone_grace, repair, hints) = repair_settings(raw)?;
        Ok(Settings {
            node_id,
            cluster,
            listen,
            advertise,
            seeds,
            data_dir,
            store,
            sync,
            truncate_corrupt_log,
            start_without_quorum,
            transport,
            tls,
            insecure_plaintext,
            replication_factor,
            consistency,
            vnodes,
            datacenter,
            rack,
            client_addr,
            resp_addr,
            http_addr,
            gossip_interval: Duration::from_millis(gi),
            phi_threshold,
            request_timeout: Duration::from_millis(rt),
            storage_threads,
            leave_on_exit,
            replace,
            log_format,
            log_level,
            gateway_limits,
            storage_limits,
            tombstone_grace,
            repair,
            hints,
            users,
            client_tls,
            insecure_no_auth,
        })
    }
}

/// Why the data directory could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The directory's contents contradict the settings.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DataDirError + '_ {
    move |source| DataDirError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes `text` to `path` atomically (temp file, fsync, rename).
fn write_atomic(path: &Path, text: &str) -> Result<(), DataDirError> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(text.as_bytes()).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    Ok(())
}

fn read_small(path: &Path) -> Result<Option<String>, DataDirError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s.trim().to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// What the node keeps in its data directory, read (and updated) at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    /// The node's id (kept across restarts).
    pub node_id: u64,
    /// This run's generation (greater than every earlier run's).
    pub generation: u64,
    /// Where the storage engine keeps its files.
    pub store_dir: PathBuf,
    /// True when the directory had no node id yet: this node has never
    /// been a member (it bootstraps, rather than restarts).
    pub fresh: bool,
}

/// Prepares `dir`: creates it, checks or records the node id and the
/// engine, and records a new generation `max(now_secs, last + 1)`, so two
/// restarts within one second still get distinct generations.
pub fn prepare_data_dir(
    dir: &Path,
    configured_id: Option<u64>,
    engine: StoreEngine,
    now_secs: u64,
) -> Result<DataDir, DataDirError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let id_path = dir.join("node-id");
    let stored_id = read_small(&id_path)?;
    let fresh = stored_id.is_none();
    let node_id = match stored_id {
        Some(text) => {
            let stored: u64 = text.parse().map_err(|_| {
                ConfigError::new(
                    "data_dir",
                    dir.display().to_string(),
                    format!("{} holds {text:?}, not a node id", id_path.display()),
                )
            })?;
            if let Some(want) = configured_id {
                if want != stored {
                    return Err(ConfigError::new(
                        "node_id",
                        want.to_string(),
                        format!(
                            "data_dir {} belongs to node {stored}; use another data_dir",
                            dir.display()
                        ),
                    )
                    .into());
                }
            }
            stored
        }
        None => {
            // Random ids spread evenly over the ring's token derivation.
            let id = configured_id.unwrap_or_else(|| rand::random::<u64>().max(1));
            write_atomic(&id_path, &id.to_string())?;
            id
        }
    };
    let engine_path = dir.join("engine");
    match read_small(&engine_path)? {
        Some(stored) if stored != engine.name() => {
            return Err(ConfigError::new(
                "store",
                engine.name(),
                format!(
                    "data_dir {} was created with the {stored} engine",
                    dir.display()
                ),
            )
            .into())
        }
        Some(_) => {}
        None => write_atomic(&engine_path, engine.name())?,
    }
    let gen_path = dir.join("generation");
    let last: u64 = read_small(&gen_path)?
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let generation = now_secs.max(last.saturating_add(1));
    write_atomic(&gen_path, &generation.to_string())?;
    let store_dir = dir.join("store");
    std::fs::create_dir_all(&store_dir).map_err(io_err(&store_dir))?;
    Ok(DataDir {
        node_id,
        generation,
        store_dir,
        fresh,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(pairs: &[(&str, &str)]) -> RawSettings {
        let mut r = RawSettings::default();
        for (k, v) in pairs {
            r.set(k, *v);
        }
        r
    }

    #[test]
    fn defaults_are_a_usable_single_node() {
        let s = Settings::from_raw(&RawSettings::default()).unwrap();
        assert_eq!(s.replication_factor, 1);
        assert_eq!(s.store, StoreEngine::Native);
        assert_eq!(s.transport, TransportKind::Tcp);
        assert!(s.tls.is_none());
        assert_eq!(s.resp_addr, Some("127.0.0.1:6380".parse().unwrap()));
        assert_eq!(s.data_dir, PathBuf::from("./cassio-data"));
    }

    #[test]
    fn truncate_corrupt_log_is_off_unless_asked_for() {
        let s = Settings::from_raw(&RawSettings::default()).unwrap();
        assert!(!s.truncate_corrupt_log);
        let s = Settings::from_raw(&raw(&[("truncate_corrupt_log", "true")])).unwrap();
        assert!(s.truncate_corrupt_log);
        let toml = RawSettings::from_toml_str("truncate_corrupt_log = true\n").unwrap();
        assert!(Settings::from_raw(&toml).unwrap().truncate_corrupt_log);
        let e = Settings::from_raw(&raw(&[("truncate_corrupt_log", "maybe")])).unwrap_err();
        assert_eq!(e.field, "truncate_corrupt_log");
    }

    #[test]
    fn datacenter_and_rack_default_parse_and_are_checked() {
        let s = Settings::from_raw(&RawSettings::default()).unwrap();
        assert_eq!((s.datacenter.as_str(), s.rack.as_str()), ("dc1", "rack1"));
        let toml =
            RawSettings::from_toml_str("datacenter = \"eu-west.1\"\nrack = \"r_2\"\n").unwrap();
        let s = Settings::from_raw(&toml).unwrap();
        assert_eq!(
            (s.datacenter.as_str(), s.rack.as_str()),
            ("eu-west.1", "r_2")
        );
        let long = "x".repeat(65);
        for (field, bad) in [
            ("datacenter", ""),
            ("datacenter", "eu west"),
            ("rack", "r/1"),
            ("rack", long.as_str()),
        ] {
            let e = Settings::from_raw(&raw(&[(field, bad)])).unwrap_err();
            assert_eq!((e.field.as_str(), e.value.as_str()), (field, bad));
        }
        let s = Settings::from_raw(&raw(&[("consistency", "local_quorum")])).unwrap();
        assert_eq!(s.consistency, Consistency::LocalQuorum);
    }

    #[test]
    fn errors_name_the_field_and_value() {
        let e = Settings::from_raw(&raw(&[("replication_factor", "0")])).unwrap_err();
        assert_eq!(e.field, "replication_factor");
        assert_eq!(e.value, "0");
        let e = Settings::from_raw(&raw(&[("consistency", "most")])).unwrap_err();
        assert_eq!(e.field, "consistency");
        let e = Settings::from_raw(&raw(&[("replication_factor", "1"), ("consistency", "all")]));
        assert!(e.is_ok());
        let e = Settings::from_raw(&raw(&[("consistency", "two")])).unwrap_err();
        assert!(e.to_string().starts_with("consistency = \"two\""), "{e}");
        let e = Settings::from_raw(&raw(&[("listen", "nowhere")])).unwrap_err();
        assert_eq!(e.field, "listen");
        let e = Settings::from_raw(&raw(&[("sync", "sometimes")])).unwrap_err();
        assert_eq!(e.field, "sync");
        assert!(!e.to_string().contains('\n'));
    }

    #[test]
    fn plaintext_off_loopback_needs_an_explicit_choice() {
        let e = Settings::from_raw(&raw(&[("listen", "0.0.0.0:7000")])).unwrap_err();
        assert_eq!(e.field, "listen");
        let s = Settings::from_raw(&raw(&[
            ("listen", "0.0.0.0:7000"),
            ("insecure_plaintext", "true"),
        ]))
        .unwrap();
        assert!(s.insecure_plaintext);
        let e = Settings::from_raw(&raw(&[("transport", "quic")])).unwrap_err();
        assert_eq!(e.field, "transport");
        let e = Settings::from_raw(&raw(&[("tls_ca", "/nonexistent")])).unwrap_err();
        assert_eq!(e.field, "tls_cert");
    }

    /// A `[[users]]` file with one user (and `extra` lines in its table).
    fn users_file(extra: &str) -> String {
        let h = crate::auth::hash_secret("pw").unwrap_or_default();
        format!("[[users]]\nname = \"alice\"\npassword_hash = \"{h}\"\n{extra}\n")
    }

    #[test]
    fn users_parse_with_access_and_keyspaces() {
        use crate::auth::Access;
        let text = users_file(
            "access = \"read-write\"\nadmin = true\nkeyspaces = { default = \"read-only\", logs = \"none\" }",
        );
        let s = Settings::from_raw(&RawSettings::from_toml_str(&text).unwrap()).unwrap();
        assert_eq!(s.users.len(), 1);
        let u = &s.users[0];
        assert_eq!(
            (u.name.as_str(), u.access, u.admin),
            ("alice", Access::ReadWrite, true)
        );
        assert_eq!(u.access_to("default"), Access::ReadOnly);
        assert_eq!(u.access_to("logs"), Access::None);
        assert_eq!(u.access_to("other"), Access::ReadWrite);
        // Access defaults to read-only.
        let s = Settings::from_raw(&RawSettings::from_toml_str(&users_file("")).unwrap()).unwrap();
        assert_eq!(s.users[0].access, Access::ReadOnly);
    }

    #[test]
    fn users_file_is_read_and_not_mixed_with_users_in_the_config() {
        let dir = std::env::temp_dir().join(format!("cassio-users-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("users.toml");
        std::fs::write(&path, users_file("access = \"read-write\"")).unwrap();
        let shown = path.display().to_string();
        let mut raw = RawSettings::default();
        raw.set("users_file", shown.clone());
        raw.set("resp_addr", "0.0.0.0:6380");
        let s = Settings::from_raw(&raw).unwrap();
        assert_eq!(s.users.len(), 1);
        assert_eq!(s.users[0].name, "alice");
        // Both places at once: refused, naming users_file.
        let mut both = RawSettings::from_toml_str(&users_file("")).unwrap();
        both.set("users_file", shown.clone());
        let e = Settings::from_raw(&both).unwrap_err();
        assert_eq!(e.field, "users_file");
        // A missing file and a file that is not [[users]]: typed errors.
        raw.set("users_file", dir.join("absent.toml").display().to_string());
        assert_eq!(Settings::from_raw(&raw).unwrap_err().field, "users_file");
        std::fs::write(&path, "users = 3\n").unwrap();
        raw.set("users_file", shown);
        let e = Settings::from_raw(&raw).unwrap_err();
        assert!(e.field.starts_with("users_file"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn bad_users_are_refused_naming_the_field() {
        let cases = [
            (users_file("access = \"sometimes\""), "users[0].access"),
            (
                users_file("keyspaces = { default = \"all\" }"),
                "users[0].keyspaces.default",
            ),
            (users_file("colour = \"blue\""), "users"),
            (
                "[[users]]\nname = \"a:b\"\npassword_hash = \"x\"\n".to_string(),
                "users[0].name",
            ),
            (
                "[[users]]\nname = \"bob\"\n".to_string(),
                "users[0].password_hash",
            ),
            (
                "[[users]]\nname = \"bob\"\npassword_hash = \"plain\"\n".to_string(),
                "users[0].password_hash",
            ),
            (
                format!("{}{}", users_file(""), users_file("")),
                "users[1].name",
            ),
        ];
        for (text, field) in cases {
            let raw = RawSettings::from_toml_str(&text).unwrap();
            let e = Settings::from_raw(&raw).unwrap_err();
            assert_eq!(e.field, field, "{text}: {e}");
        }
        let e = Settings::from_raw(&raw(&[("client_tls_cert", "/nonexistent")])).unwrap_err();
        assert_eq!(e.field, "client_tls_key");
        let e = Settings::from_raw(&raw(&[
            ("client_tls_cert", "/nonexistent"),
            ("client_tls_key", "/nonexistent"),
        ]))
        .unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.reason.as_str()),
            ("client_tls_cert", "no such file")
        );
    }

    #[test]
    fn client_ports_off_loopback_need_users_or_an_explicit_choice() {
        for field in ["client_addr", "resp_addr", "http_addr"] {
            let e = Settings::from_raw(&raw(&[(field, "0.0.0.0:1234")])).unwrap_err();
            assert_eq!(e.field, field);
            assert!(e.reason.contains("insecure_no_auth"), "{e}");
            let s = Settings::from_raw(&raw(&[
                (field, "0.0.0.0:1234"),
                ("insecure_no_auth", "true"),
            ]));
            assert!(s.is_ok_and(|s| s.insecure_no_auth));
        }
        let mut with_users = RawSettings::from_toml_str(&users_file("")).unwrap();
        with_users.set("resp_addr", "0.0.0.0:1234");
        assert!(Settings::from_raw(&with_users).is_ok());
    }

    #[test]
    fn idle_timeout_parses_and_zero_turns_it_off() {
        let d = crate::gateway::limits::DEFAULT_IDLE_TIMEOUT;
        assert_eq!(
            Settings::from_raw(&raw(&[]))
                .unwrap()
                .gateway_limits
                .idle_timeout,
            d
        );
        let s = Settings::from_raw(&raw(&[("idle_timeout", "90s")])).unwrap();
        assert_eq!(s.gateway_limits.idle_timeout, Some(Duration::from_secs(90)));
        let s = Settings::from_raw(&raw(&[("idle_timeout", "0")])).unwrap();
        assert_eq!(s.gateway_limits.idle_timeout, None);
        let e = Settings::from_raw(&raw(&[("idle_timeout", "soon")])).unwrap_err();
        assert_eq!(e.field, "idle_timeout");
    }

    #[test]
    fn overload_caps_parse_with_units_and_refuse_zero() {
        let s = Settings::from_raw(&RawSettings::default()).unwrap();
        assert_eq!(s.gateway_limits, crate::gateway::GatewayLimits::default());
        assert_eq!(s.storage_limits, crate::driver::StorageLimits::default());
        let s = Settings::from_raw(&raw(&[
            ("max_connections", "7"),
            ("max_query_buffer_bytes", "64MiB"),
            ("max_total_query_buffer_bytes", "2g"),
            ("max_keys_per_command", "100"),
            ("storage_max_in_flight", "16"),
            ("storage_max_in_flight_bytes", "4096"),
        ]))
        .unwrap();
        assert_eq!(s.gateway_limits.max_connections, 7);
        assert_eq!(s.gateway_limits.max_query_buffer_bytes, 64 << 20);
        assert_eq!(s.gateway_limits.max_total_query_buffer_bytes, 2 << 30);
        assert_eq!(s.gateway_limits.max_keys_per_command, 100);
        assert_eq!(s.storage_limits.max_in_flight, 16);
        assert_eq!(s.storage_limits.max_in_flight_bytes, 4096);
        for (field, bad) in [
            ("max_connections", "0"),
            ("storage_max_in_flight", "0"),
            ("max_keys_per_command", "-1"),
            ("max_query_buffer_bytes", "12 parsecs"),
            ("storage_max_in_flight_bytes", "99999999999999999999G"),
        ] {
            let e = Settings::from_raw(&raw(&[(field, bad)])).unwrap_err();
            assert_eq!(e.field, field, "{e}");
            assert_eq!(e.value, bad);
        }
        let r =
            RawSettings::from_toml_str("max_connections = 50\nmax_query_buffer_bytes = \"1MiB\"\n")
                .unwrap();
        let s = Settings::from_raw(&r).unwrap();
        assert_eq!(s.gateway_limits.max_connections, 50);
        assert_eq!(s.gateway_limits.max_query_buffer_bytes, 1 << 20);
    }

    #[test]
    fn repair_and_hint_settings_default_to_the_cores_and_parse_units() {
        let s = Settings::from_raw(&RawSettings::default()).unwrap();
        let core = cassio_core::Config::new("c", "127.0.0.1:1".parse().unwrap());
        assert_eq!(s.tombstone_grace, core.tombstone_grace);
        assert_eq!(s.tombstone_grace, DEFAULT_TOMBSTONE_GRACE);
        assert_eq!(s.repair, core.repair);
        assert_eq!(s.hints, core.hints);
        assert_eq!(s.repair.interval, Duration::from_secs(600));
        assert_eq!(s.repair.bytes_per_sec, 16 << 20);
        assert_eq!(s.hints.window, Duration::from_secs(3 * 3600));
        assert!(s.hints.enabled);
        let s = Settings::from_raw(&raw(&[
            ("tombstone_grace", "2d"),
            ("repair_interval", "1h30m"),
            ("repair_bytes_per_sec", "4MiB"),
            ("hint_window", "90m"),
            ("max_hint_bytes_per_node", "8MiB"),
            ("max_hint_bytes", "64MiB"),
            ("no_hints", "true"),
        ]))
        .unwrap();
        assert_eq!(s.tombstone_grace, Duration::from_secs(2 * 86_400));
        assert_eq!(s.repair.interval, Duration::from_secs(5400));
        assert_eq!(s.repair.bytes_per_sec, 4 << 20);
        assert_eq!(s.hints.window, Duration::from_secs(5400));
        assert_eq!(s.hints.max_bytes_per_target, 8 << 20);
        assert_eq!(s.hints.max_bytes_total, 64 << 20);
        assert!(!s.hints.enabled);
        // Untouched knobs keep the core's defaults.
        assert_eq!(s.repair.max_exchanges, core.repair.max_exchanges);
        assert_eq!(s.hints.batch_bytes, core.hints.batch_bytes);
        let s = Settings::from_raw(&raw(&[("repair_bytes_per_sec", "0")])).unwrap();
        assert_eq!(s.repair.bytes_per_sec, 0, "0 is unlimited");
        let toml =
            RawSettings::from_toml_str("repair_interval = \"30s\"\nno_hints = true\n").unwrap();
        let s = Settings::from_raw(&toml).unwrap();
        assert_eq!(s.repair.interval, Duration::from_secs(30));
        assert!(!s.hints.enabled);
    }

    #[test]
    fn bad_repair_and_hint_settings_are_refused_with_a_reason() {
        for (pairs, field, why) in [
            (
                vec![("repair_interval", "0s")],
                "repair_interval",
                "at least 1s",
            ),
            (
                vec![("repair_interval", "0")],
                "repair_interval",
                "duration",
            ),
            (
                vec![("repair_interval", "10 minutes")],
                "repair_interval",
                "duration",
            ),
            (
                vec![("repair_interval", "11d")],
                "repair_interval",
                "shorter than tombstone_grace (10d)",
            ),
            (
                vec![("tombstone_grace", "1h")],
                "tombstone_grace",
                "at least 3h",
            ),
            (
                vec![("tombstone_grace", "-1d")],
                "tombstone_grace",
                "duration",
            ),
            (
                vec![("tombstone_grace", "4h"), ("hint_window", "5h")],
                "hint_window",
                "tombstone_grace",
            ),
            (vec![("hint_window", "0s")], "hint_window", "no_hints"),
            (
                vec![("repair_bytes_per_sec", "1000")],
                "repair_bytes_per_sec",
                "0 (unlimited)",
            ),
            (
                vec![("repair_bytes_per_sec", "fast")],
                "repair_bytes_per_sec",
                "byte count",
            ),
            (vec![("max_hint_bytes", "1KiB")], "max_hint_bytes", "1MiB"),
            (
                vec![("max_hint_bytes_per_node", "0")],
                "max_hint_bytes_per_node",
                "1MiB",
            ),
            (vec![("no_hints", "perhaps")], "no_hints", "true or false"),
        ] {
            let e = Settings::from_raw(&raw(&pairs)).unwrap_err();
            assert_eq!(e.field, field, "{pairs:?}: {e}");
            assert!(e.reason.contains(why), "{pairs:?}: {e}");
            assert!(!e.to_string().contains('\n'));
        }
    }

    #[test]
    fn durations_parse_and_show() {
        assert_eq!(duration("f", "500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(duration("f", "10d").unwrap(), Duration::from_secs(864_000));
        assert_eq!(duration("f", " 1h30m ").unwrap(), Duration::from_secs(5400));
        assert_eq!(duration("f", "2min").unwrap(), Duration::from_secs(120));
        for bad in [
            "",
            "10",
            "m",
            "1x",
            "1.5h",
            "99999999999999999999d",
            "1h 30",
        ] {
            assert!(duration("f", bad).is_err(), "{bad}");
        }
        assert_eq!(show_duration(Duration::from_secs(864_000)), "10d");
        assert_eq!(show_duration(Duration::from_secs(5400)), "90m");
        assert_eq!(show_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn engines_missing_from_the_build_are_named() {
        let r = Settings::from_raw(&raw(&[("store", "rocksdb")]));
        if cfg!(feature = "rocksdb") {
            assert!(r.is_ok());
        } else {
            let e = r.unwrap_err();
            assert!(e.reason.contains("`rocksdb` cargo feature"), "{e}");
        }
    }

    #[test]
    fn toml_file_values_and_unknown_keys() {
        let r = RawSettings::from_toml_str(
            "replication_factor = 3\nseeds = [\"127.0.0.1:7000\", \"127.0.0.1:7001\"]\nleave_on_exit = true\n",
        )
        .unwrap();
        let s = Settings::from_raw(&r).unwrap();
        assert_eq!(s.replication_factor, 3);
        assert_eq!(s.seeds.len(), 2);
        assert!(s.leave_on_exit);
        let e = RawSettings::from_toml_str("replicas = 3\n").unwrap_err();
        assert_eq!(e.field, "replicas");
        let e = RawSettings::from_toml_str("rf = = 3\n").unwrap_err();
        assert_eq!(e.field, "config");
        assert!(!e.to_string().contains('\n'), "{e}");
    }

    #[test]
    fn flags_override_the_file() {
        let mut r = RawSettings::from_toml_str("vnodes = 16\ncluster = \"a\"\n").unwrap();
        r.overlay(&raw(&[("vnodes", "32")]));
        let s = Settings::from_raw(&r).unwrap();
        assert_eq!(s.vnodes, 32);
        assert_eq!(s.cluster, "a");
    }

    #[test]
    fn data_dir_keeps_the_id_and_grows_the_generation() {
        let dir = tempfile::tempdir().unwrap();
        let a = prepare_data_dir(dir.path(), None, StoreEngine::Native, 100).unwrap();
        let b = prepare_data_dir(dir.path(), None, StoreEngine::Native, 100).unwrap();
        assert_eq!(a.node_id, b.node_id);
        assert!(a.fresh && !b.fresh);
        assert_eq!(a.generation, 100);
        assert_eq!(b.generation, 101, "a restart within the same second");
        let c = prepare_data_dir(dir.path(), Some(a.node_id), StoreEngine::Native, 500).unwrap();
        assert_eq!(c.generation, 500);
        let e = prepare_data_dir(dir.path(), Some(a.node_id ^ 1), StoreEngine::Native, 0);
        assert!(matches!(e, Err(DataDirError::Config(c)) if c.field == "node_id"));
        let e = prepare_data_dir(dir.path(), None, StoreEngine::Sled, 0);
        assert!(matches!(e, Err(DataDirError::Config(c)) if c.field == "store"));
    }

    #[test]
    fn node_ids_parse_as_status_and_logs_print_them() {
        assert_eq!(
            parse_node_id("2124426997781095336").unwrap(),
            2124426997781095336
        );
        assert_eq!(parse_node_id(" n42 ").unwrap(), 42);
        for bad in [
            "0",
            "n0",
            "",
            "x1",
            "+5",
            "-5",
            "1.5",
            "18446744073709551616",
        ] {
            let e = parse_node_id(bad).unwrap_err();
            assert_eq!(e.field, "node_id", "{bad}");
        }
    }

    #[test]
    fn replace_needs_seeds_and_another_id() {
        let s = Settings::from_raw(&raw(&[("replace", "7"), ("seeds", "127.0.0.1:7000")])).unwrap();
        assert_eq!(s.replace, Some(7));
        assert_eq!(Settings::from_raw(&raw(&[])).unwrap().replace, None);
        let e = Settings::from_raw(&raw(&[("replace", "7")])).unwrap_err();
        assert_eq!(e.field, "replace");
        assert!(e.reason.contains("seeds"), "{e}");
        let e = Settings::from_raw(&raw(&[
            ("replace", "7"),
            ("node_id", "7"),
            ("seeds", "127.0.0.1:7000"),
        ]))
        .unwrap_err();
        assert!(e.reason.contains("own node_id"), "{e}");
        let e = Settings::from_raw(&raw(&[("replace", "seven"), ("seeds", "127.0.0.1:7000")]))
            .unwrap_err();
        assert_eq!((e.field.as_str(), e.value.as_str()), ("replace", "seven"));
    }
}
