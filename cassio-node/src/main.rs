//! The `cassio` binary: run a node, a local cluster, or talk to one.

use anyhow::Context;

// mimalloc (feature `mimalloc`, on by default): against the system's malloc
// it took a quarter off the CPU per pipelined request and a third off the
// memory a loaded node keeps (docs/benchmarks.md, "Choosing an allocator").
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use cassio_core::Consistency;
use cassio_node::client::{Client, ClientConfig};
use cassio_node::config::{ConfigError, LogFormat, RawSettings, Settings};
use cassio_node::launch::{launch, LaunchError, Launched};
use cassio_node::ClusterStatus;
use clap::{Args, Parser, Subcommand};
use core::net::SocketAddr;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

mod cli_hash;
mod cli_keyspace;
mod cli_repair;
mod cli_ring;
mod cli_scan;
mod cli_ttl;

/// Cassio: a peer-to-peer distributed key-value store.
#[derive(Parser, Debug)]
#[command(name = "cassio", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run one node (defaults: a single node on loopback, data in ./cassio-data).
    Start(Box<StartArgs>),
    /// Run N nodes on loopback in this process (development and demos).
    LocalCluster(LocalClusterArgs),
    /// Write a development CA and node certificates naming node ids (for TLS and QUIC),
    /// and with --client a certificate for the client ports (RESP, HTTP, native).
    GenCerts(GenCertsArgs),
    /// Read a password (or bearer token) from stdin and print its argon2
    /// hash, for `password_hash` / `token_hash` in a `[[users]]` table.
    HashPassword,
    /// Write a value.
    Set(SetArgs),
    /// Read a value (prints `(nil)` when absent).
    Get(KeyArgs),
    /// Delete a key.
    Del(KeyArgs),
    /// List the keys (and values) that start with a prefix, in token order.
    Scan(cli_scan::ScanArgs),
    /// Write one column of a row (a Redis hash field).
    Hset(cli_hash::HSetArgs),
    /// Read one column of a row (prints `(nil)` when absent).
    Hget(cli_hash::CellArgs),
    /// Print a row's columns, `column<TAB>value` per line, in column order.
    Hgetall(cli_hash::RowArgs),
    /// Delete one column of a row.
    Hdel(cli_hash::CellArgs),
    /// Show every node as the contacted node sees it (like `nodetool status`).
    Status(StatusArgs),
    /// Start an anti-entropy round on a node now and follow it to its end.
    Repair(RepairArgs),
    /// Take a dead node off the ring (its ranges re-replicated among the
    /// rest) and follow it until the members no longer list it.
    Remove(cli_ring::RemoveArgs),
    /// Run a new node in a dead node's place: it joins, syncs the dead
    /// node's ranges from the survivors, then the dead node leaves the
    /// ring (the same as `start --replace NODE_ID`).
    Replace(Box<ReplaceArgs>),
    /// Make a node leave the cluster (its ranges handed over first) and
    /// follow it until it has left and stopped.
    Decommission(cli_ring::DecommissionArgs),
    /// List, create, alter or drop the cluster's keyspaces.
    Keyspace(cli_keyspace::KeyspaceArgs),
}

/// `cassio replace --dead NODE_ID` and every flag of `cassio start`.
#[derive(Args, Debug)]
struct ReplaceArgs {
    /// The dead node's id, as the Node ID column of `cassio status` shows
    /// it. The new node needs an empty data directory and seeds.
    #[arg(long, value_name = "NODE_ID", conflicts_with = "replace")]
    dead: String,
    #[command(flatten)]
    start: StartArgs,
}

/// Node settings. Each flag is also a key of the `--config` TOML file
/// (with `_` for `-`) and an environment variable (`CASSIO_` and the key in
/// capitals: `CASSIO_CONFIG`, `CASSIO_LISTEN`, `CASSIO_LEAVE_ON_EXIT=true`),
/// for containers; flags and variables override the file, and every value
/// goes through the same validation.
#[derive(Args, Debug, Default)]
struct StartArgs {
    /// TOML file with settings (keys as the flags, with underscores).
    #[arg(long, env = "CASSIO_CONFIG")]
    config: Option<PathBuf>,
    /// Node id (default: under TLS, the id the certificate names; otherwise
    /// generated once; either way kept in the data dir).
    #[arg(long, env = "CASSIO_NODE_ID")]
    node_id: Option<String>,
    /// Cluster name [default: cassio].
    #[arg(long, env = "CASSIO_CLUSTER")]
    cluster: Option<String>,
    /// Peer-to-peer listen address [default: 127.0.0.1:7000].
    #[arg(long, env = "CASSIO_LISTEN")]
    listen: Option<String>,
    /// Peer address announced to others [default: the listen address].
    #[arg(long, env = "CASSIO_ADVERTISE")]
    advertise: Option<String>,
    /// Seed nodes' peer addresses, comma-separated.
    #[arg(long, env = "CASSIO_SEEDS")]
    seeds: Option<String>,
    /// Data directory [default: ./cassio-data].
    #[arg(long, env = "CASSIO_DATA_DIR")]
    data_dir: Option<String>,
    /// Storage engine: native, rocksdb or sled [default: native].
    #[arg(long, env = "CASSIO_STORE")]
    store: Option<String>,
    /// Sync policy: always, never, periodic, periodic:MS [default: periodic (100 ms)].
    #[arg(long, env = "CASSIO_SYNC")]
    sync: Option<String>,
    /// Peer transport: tcp or quic [default: tcp].
    #[arg(long, env = "CASSIO_TRANSPORT")]
    transport: Option<String>,
    /// Cluster CA certificate (PEM) for mutual TLS.
    #[arg(long, env = "CASSIO_TLS_CA")]
    tls_ca: Option<String>,
    /// This node's certificate (PEM).
    #[arg(long, env = "CASSIO_TLS_CERT")]
    tls_cert: Option<String>,
    /// This node's private key (PEM).
    #[arg(long, env = "CASSIO_TLS_KEY")]
    tls_key: Option<String>,
    /// Allow plaintext TCP between peers off loopback (trusted networks only).
    #[arg(long, env = "CASSIO_INSECURE_PLAINTEXT")]
    insecure_plaintext: bool,
    /// Replication factor of the default keyspace [default: 1].
    #[arg(long, env = "CASSIO_REPLICATION_FACTOR", alias = "rf")]
    replication_factor: Option<String>,
    /// Default consistency: one, two, three, quorum, all, local_quorum,
    /// each_quorum [default: quorum].
    #[arg(long, env = "CASSIO_CONSISTENCY")]
    consistency: Option<String>,
    /// Virtual nodes on the ring [default: 256].
    #[arg(long, env = "CASSIO_VNODES")]
    vnodes: Option<String>,
    /// This node's datacenter: 1 to 64 of [A-Za-z0-9_.-] [default: dc1].
    #[arg(long, env = "CASSIO_DATACENTER")]
    datacenter: Option<String>,
    /// This node's rack within its datacenter [default: rack1].
    #[arg(long, env = "CASSIO_RACK")]
    rack: Option<String>,
    /// Native client protocol address, or `off` [default: 127.0.0.1:7379].
    #[arg(long, env = "CASSIO_CLIENT_ADDR")]
    client_addr: Option<String>,
    /// RESP (Redis protocol) address, or `off` [default: 127.0.0.1:6380].
    #[arg(long, env = "CASSIO_RESP_ADDR")]
    resp_addr: Option<String>,
    /// HTTP address, or `off` [default: 127.0.0.1:8080].
    #[arg(long, env = "CASSIO_HTTP_ADDR")]
    http_addr: Option<String>,
    /// Gossip interval; failure detection scales with it [default: 1000].
    #[arg(long, env = "CASSIO_GOSSIP_INTERVAL_MS")]
    gossip_interval_ms: Option<String>,
    /// Failure detector threshold [default: 8].
    #[arg(long, env = "CASSIO_PHI_THRESHOLD")]
    phi_threshold: Option<String>,
    /// How long a coordinator waits for replicas [default: 2000].
    #[arg(long, env = "CASSIO_REQUEST_TIMEOUT_MS")]
    request_timeout_ms: Option<String>,
    /// Threads running storage operations (sync policies other than always) [default: 2].
    #[arg(long, env = "CASSIO_STORAGE_THREADS")]
    storage_threads: Option<String>,
    /// Leave the ring (gossip `Left`) when stopped by SIGTERM or Ctrl-C.
    #[arg(long, env = "CASSIO_LEAVE_ON_EXIT")]
    leave_on_exit: bool,
    /// Take the place of this dead node (its id as `cassio status` shows
    /// it): start with an empty data dir and seeds; the dead node is taken
    /// off the ring once this one has synced. Only for the first start.
    #[arg(long, env = "CASSIO_REPLACE", value_name = "NODE_ID")]
    replace: Option<String>,
    /// Native store: if the commit log is damaged in the middle (valid records
    /// after the damage), cut it there and start, instead of refusing. RISK:
    /// every write after the damage is lost on this node, acknowledged ones
    /// included; repair it from replicas. Use once, after reading the error.
    #[arg(long, env = "CASSIO_TRUNCATE_CORRUPT_LOG")]
    truncate_corrupt_log: bool,
    /// After a restart, coordinate at once instead of waiting to hear from a
    /// majority of the cluster this node last knew. RISK: with most of the
    /// ring unheard from, this node may acknowledge writes that later reads
    /// miss. Only when the other members are gone for good.
    #[arg(long, env = "CASSIO_START_WITHOUT_QUORUM")]
    start_without_quorum: bool,
    /// Log format: human or json [default: human].
    #[arg(long, env = "CASSIO_LOG_FORMAT")]
    log_format: Option<String>,
    /// Log filter, e.g. `info` or `cassio_node=debug` [default: info].
    #[arg(long, env = "CASSIO_LOG_LEVEL")]
    log_level: Option<String>,
    /// Open connections per client port (RESP, HTTP, native) [default: 10000].
    #[arg(long, env = "CASSIO_MAX_CONNECTIONS")]
    max_connections: Option<String>,
    /// Unanswered input one client connection may hold, e.g. 64MiB [default: 64MiB].
    #[arg(long, env = "CASSIO_MAX_QUERY_BUFFER_BYTES")]
    max_query_buffer_bytes: Option<String>,
    /// Unanswered input all connections of a port may hold [default: 1GiB].
    #[arg(long, env = "CASSIO_MAX_TOTAL_QUERY_BUFFER_BYTES")]
    max_total_query_buffer_bytes: Option<String>,
    /// Keys one MGET/MSET/DEL/EXISTS may name [default: 10000].
    #[arg(long, env = "CASSIO_MAX_KEYS_PER_COMMAND")]
    max_keys_per_command: Option<String>,
    /// Storage operations running at once; as many more may wait, then the
    /// node pushes back (answers Overloaded) [default: 1024].
    #[arg(long, env = "CASSIO_STORAGE_MAX_IN_FLIGHT")]
    storage_max_in_flight: Option<String>,
    /// Bytes of storage operations running at once [default: 256MiB].
    #[arg(long, env = "CASSIO_STORAGE_MAX_IN_FLIGHT_BYTES")]
    storage_max_in_flight_bytes: Option<String>,
    /// How long a delete's tombstone is kept at least, and how long a node
    /// may be down and still restart on its data; the same on every node
    /// [default: 10d].
    #[arg(long, env = "CASSIO_TOMBSTONE_GRACE")]
    tombstone_grace: Option<String>,
    /// Time between anti-entropy rounds [default: 10m].
    #[arg(long, env = "CASSIO_REPAIR_INTERVAL")]
    repair_interval: Option<String>,
    /// Bytes per second anti-entropy and hint delivery may send; 0 is
    /// unlimited [default: 16MiB].
    #[arg(long, env = "CASSIO_REPAIR_BYTES_PER_SEC")]
    repair_bytes_per_sec: Option<String>,
    /// No new hints for a replica down longer than this [default: 3h].
    #[arg(long, env = "CASSIO_HINT_WINDOW")]
    hint_window: Option<String>,
    /// Hint bytes kept for one down replica [default: 256MiB].
    #[arg(long, env = "CASSIO_MAX_HINT_BYTES_PER_NODE")]
    max_hint_bytes_per_node: Option<String>,
    /// Hint bytes kept for all down replicas together [default: 1GiB].
    #[arg(long, env = "CASSIO_MAX_HINT_BYTES")]
    max_hint_bytes: Option<String>,
    /// Keep no hints for down replicas (anti-entropy alone repairs them).
    #[arg(long, env = "CASSIO_NO_HINTS")]
    no_hints: bool,
    /// Certificate (PEM) the client ports (RESP, HTTP, native) serve TLS
    /// with; `cassio gen-certs --client` makes a development one.
    #[arg(long, env = "CASSIO_CLIENT_TLS_CERT")]
    client_tls_cert: Option<String>,
    /// Private key (PEM) of --client-tls-cert.
    #[arg(long, env = "CASSIO_CLIENT_TLS_KEY")]
    client_tls_key: Option<String>,
    /// Allow client ports off loopback without users (anyone who can reach
    /// them can read and write; trusted networks only).
    #[arg(long, env = "CASSIO_INSECURE_NO_AUTH")]
    insecure_no_auth: bool,
    /// A TOML file of `[[users]]` tables (kept apart from the config file,
    /// e.g. a mounted secret); not together with `[[users]]` in the config.
    #[arg(long, env = "CASSIO_USERS_FILE")]
    users_file: Option<String>,
    /// Close client connections silent this long, e.g. 5m; 0 never [default: 5m].
    #[arg(long, env = "CASSIO_IDLE_TIMEOUT")]
    idle_timeout: Option<String>,
}

impl StartArgs {
    fn raw(&self) -> RawSettings {
        let mut r = RawSettings::default();
        let opts: [(&str, &Option<String>); 27] = [
            ("node_id", &self.node_id),
            ("cluster", &self.cluster),
            ("listen", &self.listen),
            ("advertise", &self.advertise),
            ("seeds", &self.seeds),
            ("data_dir", &self.data_dir),
            ("store", &self.store),
            ("sync", &self.sync),
            ("transport", &self.transport),
            ("tls_ca", &self.tls_ca),
            ("tls_cert", &self.tls_cert),
            ("tls_key", &self.tls_key),
            ("replication_factor", &self.replication_factor),
            ("consistency", &self.consistency),
            ("vnodes", &self.vnodes),
            ("datacenter", &self.datacenter),
            ("rack", &self.rack),
            ("client_addr", &self.client_addr),
            ("resp_addr", &self.resp_addr),
            ("http_addr", &self.http_addr),
            ("gossip_interval_ms", &self.gossip_interval_ms),
            ("phi_threshold", &self.phi_threshold),
            ("request_timeout_ms", &self.request_timeout_ms),
            ("storage_threads", &self.storage_threads),
            ("log_format", &self.log_format),
            ("log_level", &self.log_level),
            ("replace", &self.replace),
        ];
        let repair: [(&str, &Option<String>); 6] = [
            ("tombstone_grace", &self.tombstone_grace),
            ("repair_interval", &self.repair_interval),
            ("repair_bytes_per_sec", &self.repair_bytes_per_sec),
            ("hint_window", &self.hint_window),
            ("max_hint_bytes_per_node", &self.max_hint_bytes_per_node),
            ("max_hint_bytes", &self.max_hint_bytes),
        ];
        let limits: [(&str, &Option<String>); 10] = [
            ("users_file", &self.users_file),
            ("client_tls_cert", &self.client_tls_cert),
            ("client_tls_key", &self.client_tls_key),
            ("idle_timeout", &self.idle_timeout),
            ("max_connections", &self.max_connections),
            ("max_query_buffer_bytes", &self.max_query_buffer_bytes),
            (
                "max_total_query_buffer_bytes",
                &self.max_total_query_buffer_bytes,
            ),
            ("max_keys_per_command", &self.max_keys_per_command),
            ("storage_max_in_flight", &self.storage_max_in_flight),
            (
                "storage_max_in_flight_bytes",
                &self.storage_max_in_flight_bytes,
            ),
        ];
        for (k, v) in opts.into_iter().chain(limits).chain(repair) {
            if let Some(v) = v {
                r.set(k, v.clone());
            }
        }
        if self.insecure_plaintext {
            r.set("insecure_plaintext", "true");
        }
        if self.leave_on_exit {
            r.set("leave_on_exit", "true");
        }
        if self.truncate_corrupt_log {
            r.set("truncate_corrupt_log", "true");
        }
        if self.start_without_quorum {
            r.set("start_without_quorum", "true");
        }
        if self.no_hints {
            r.set("no_hints", "true");
        }
        if self.insecure_no_auth {
            r.set("insecure_no_auth", "true");
        }
        r
    }

    fn settings(&self) -> Result<Settings, ConfigError> {
        let mut raw = match &self.config {
            Some(path) => RawSettings::from_toml_file(path)?,
            None => RawSettings::default(),
        };
        raw.overlay(&self.raw());
        Settings::from_raw(&raw)
    }
}

#[derive(Args, Debug)]
struct LocalClusterArgs {
    /// How many nodes.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Base data directory; node i uses BASE/node<i>.
    #[arg(long, default_value = "./cassio-local")]
    data_dir: PathBuf,
    /// Replication factor [default: min(3, nodes)].
    #[arg(long, alias = "rf")]
    replication_factor: Option<usize>,
    /// Storage engine: native, rocksdb or sled.
    #[arg(long, default_value = "native")]
    store: String,
    /// Peer transport: tcp or quic (quic generates dev certificates in BASE/certs).
    #[arg(long, default_value = "tcp")]
    transport: String,
    /// Log format: human or json.
    #[arg(long, default_value = "human")]
    log_format: String,
    /// Log filter.
    #[arg(long, default_value = "info")]
    log_level: String,
}

/// Issues one certificate per node id; each names its node
/// (`cassio://node/<id>`), and a node started with it runs as that id.
/// A CA already in `--dir` is reused, so more nodes can be added later.
#[derive(Args, Debug)]
struct GenCertsArgs {
    /// Directory to write ca.pem, ca.key and node<id>.pem / node<id>.key into.
    #[arg(long)]
    dir: PathBuf,
    /// Issue certificates for nodes 1..=N [default: 3 unless --node-ids is given].
    #[arg(long, conflicts_with = "node_ids")]
    nodes: Option<u64>,
    /// Issue certificates for these node ids, comma-separated (e.g. 4,5).
    #[arg(long, value_delimiter = ',')]
    node_ids: Vec<String>,
    /// Cluster name (shown in the CA's name).
    #[arg(long, default_value = "cassio")]
    cluster: String,
    /// Also issue client.pem / client.key for the client ports (names
    /// localhost, 127.0.0.1 and --client-names); use them as
    /// client_tls_cert / client_tls_key, and ca.pem in clients.
    #[arg(long)]
    client: bool,
    /// More DNS names or IP addresses for the client-port certificate,
    /// comma-separated.
    #[arg(long, value_delimiter = ',', requires = "client")]
    client_names: Vec<String>,
}

impl GenCertsArgs {
    /// The node ids to issue certificates for.
    fn ids(&self) -> Result<Vec<u64>, ConfigError> {
        if self.node_ids.is_empty() {
            let n = self.nodes.unwrap_or(3);
            if n == 0 {
                return Err(ConfigError::new("nodes", "0", "must be at least 1"));
            }
            return Ok((1..=n).collect());
        }
        let mut ids = Vec::with_capacity(self.node_ids.len());
        for text in &self.node_ids {
            let id = text
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|&id| id != 0)
                .ok_or_else(|| ConfigError::new("node_ids", text, "expected node ids from 1"))?;
            if ids.contains(&id) {
                return Err(ConfigError::new("node_ids", text, "listed twice"));
            }
            ids.push(id);
        }
        Ok(ids)
    }
}

#[derive(Args, Debug)]
struct Target {
    /// Node client addresses, comma-separated (the client fails over in order).
    #[arg(long, default_value = cassio_node::config::DEFAULT_CLIENT_ADDR, value_delimiter = ',')]
    node: Vec<String>,
    /// Per-attempt timeout in milliseconds.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
    /// User to log in as (nodes with users); the password is read from
    /// the CASSIO_PASSWORD environment variable.
    #[arg(long, env = "CASSIO_USER")]
    user: Option<String>,
    /// Speak TLS to the client port, trusting this CA certificate (PEM).
    #[arg(long, env = "CASSIO_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// Name expected in the node's certificate (with --tls-ca).
    #[arg(long, default_value = "localhost")]
    tls_server_name: String,
}

#[derive(Args, Debug)]
struct SetArgs {
    /// The key.
    key: String,
    /// The value.
    value: String,
    /// Expire the value this long after the write (`10s`, `500ms`, `2h`,
    /// `1d`; a bare number is seconds). Without it the value never expires.
    #[arg(long, value_parser = cli_ttl::parse_ttl)]
    ttl: Option<Duration>,
    /// Consistency level: one, two, three, quorum, all.
    #[arg(long)]
    consistency: Option<String>,
    #[command(flatten)]
    target: Target,
}

#[derive(Args, Debug)]
struct KeyArgs {
    /// The key.
    key: String,
    /// Consistency level: one, two, three, quorum, all.
    #[arg(long)]
    consistency: Option<String>,
    #[command(flatten)]
    target: Target,
}

#[derive(Args, Debug)]
struct StatusArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    target: Target,
}

#[derive(Args, Debug)]
struct RepairArgs {
    /// Only this keyspace [default: every keyspace].
    #[arg(long)]
    keyspace: Option<String>,
    /// Only exchanges with this peer: its peer address (IP:PORT, the
    /// Address column of `cassio status`) [default: every peer].
    #[arg(long)]
    node: Option<String>,
    /// HTTP address of the node that runs the round (its `--http-addr`).
    #[arg(long, default_value = cassio_node::config::DEFAULT_HTTP_ADDR)]
    http: String,
    /// Give up waiting after this long (the round goes on on the node).
    #[arg(long, default_value = "10m")]
    timeout: String,
}

/// A usage error: one line, exit code 2.
struct Usage(ConfigError);

fn main() -> ExitCode {
    // Test builds only: reads FAILPOINTS (e.g. `storage-apply-drop=50%return`)
    // and arms those failpoints for the life of the process.
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cassio: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(run(cli));
    // Storage threads and blocking tasks have finished by now; anything
    // left (a stuck gateway connection) must not hold the process open.
    rt.shutdown_timeout(Duration::from_secs(2));
    match result {
        Ok(code) => code,
        Err(Failure::Usage(Usage(e))) => {
            eprintln!("cassio: invalid configuration: {e}");
            ExitCode::from(2)
        }
        Err(Failure::Other(e)) => {
            eprintln!("cassio: {e:#}");
            ExitCode::from(1)
        }
    }
}

enum Failure {
    Usage(Usage),
    Other(anyhow::Error),
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Failure::Usage(Usage(e))
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Other(e)
    }
}

impl From<LaunchError> for Failure {
    fn from(e: LaunchError) -> Self {
        match e {
            LaunchError::Config(c) => Failure::Usage(Usage(c)),
            LaunchError::DataDir(cassio_node::config::DataDirError::Config(c)) => {
                Failure::Usage(Usage(c))
            }
            other => Failure::Other(other.into()),
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode, Failure> {
    match cli.command {
        Command::Start(args) => start(*args).await,
        Command::Replace(args) => {
            let ReplaceArgs {
                dead,
                start: mut start_args,
            } = *args;
            start_args.replace = Some(dead);
            start(start_args).await
        }
        Command::LocalCluster(args) => local_cluster(args).await,
        Command::GenCerts(args) => gen_certs(args),
        Command::HashPassword => hash_password(),
        Command::Set(a) => {
            let level = consistency(a.consistency.as_deref())?;
            let client = connect(&a.target).await?;
            let (key, value) = (a.key.into_bytes(), a.value.into_bytes());
            let ts = match a.ttl {
                None => client.set(key, value, level).await,
                Some(ttl) => client.set_with_ttl(key, value, ttl, level).await,
            }
            .context("set failed")?;
            println!("OK {ts}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Get(a) => {
            let level = consistency(a.consistency.as_deref())?;
            let client = connect(&a.target).await?;
            let v = client
                .get(a.key.into_bytes(), level)
                .await
                .context("get failed")?;
            let mut out = std::io::stdout().lock();
            match v {
                Some(v) => {
                    let _ = out.write_all(&v);
                    let _ = out.write_all(b"\n");
                }
                None => {
                    let _ = writeln!(out, "(nil)");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Del(a) => {
            let level = consistency(a.consistency.as_deref())?;
            let client = connect(&a.target).await?;
            let ts = client
                .del(a.key.into_bytes(), level)
                .await
                .context("del failed")?;
            println!("OK {ts}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Status(a) => {
            let client = connect(&a.target).await?;
            let status = client.status().await.context("status failed")?;
            if a.json {
                let text = serde_json::to_string_pretty(&status)
                    .context("cannot encode the status as JSON")?;
                println!("{text}");
            } else {
                print!("{}", render_status(&status));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Repair(a) => cli_repair::run(a).await,
        Command::Remove(a) => cli_ring::remove(a).await,
        Command::Decommission(a) => cli_ring::decommission(a).await,
        Command::Keyspace(a) => cli_keyspace::run(a).await,
        Command::Scan(a) => cli_scan::run(a).await,
        Command::Hset(a) => cli_hash::hset(a).await,
        Command::Hget(a) => cli_hash::hget(a).await,
        Command::Hgetall(a) => cli_hash::hgetall(a).await,
        Command::Hdel(a) => cli_hash::hdel(a).await,
    }
}

fn consistency(v: Option<&str>) -> Result<Option<Consistency>, ConfigError> {
    v.map(|s| {
        s.parse()
            .map_err(|e: String| ConfigError::new("consistency", s, e))
    })
    .transpose()
}

async fn connect(t: &Target) -> Result<Client, Failure> {
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for n in &t.node {
        let a: SocketAddr = n
            .parse()
            .map_err(|_| ConfigError::new("node", n, "expected IP:PORT"))?;
        addrs.push(a);
    }
    let credentials = match &t.user {
        None => None,
        Some(user) => Some(cassio_node::client::Credentials {
            user: user.clone(),
            password: std::env::var("CASSIO_PASSWORD").map_err(|_| {
                ConfigError::new(
                    "user",
                    user,
                    "set the password in the CASSIO_PASSWORD environment variable",
                )
            })?,
        }),
    };
    let tls = match &t.tls_ca {
        None => None,
        Some(ca) => Some(
            cassio_node::client::ClientTls::from_ca_file(ca, &t.tls_server_name)
                .map_err(|e| Failure::Other(anyhow::anyhow!("{e}")))?,
        ),
    };
    let config = ClientConfig {
        request_timeout: Duration::from_millis(t.timeout_ms.max(1)),
        credentials,
        tls,
        ..ClientConfig::default()
    };
    Client::connect_with(&addrs, config)
        .await
        .map_err(|e| Failure::Other(anyhow::anyhow!("cannot reach a node: {e}")))
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// How long before `now` the wall-clock micros `at` were, as "3m ago"
/// ("never" for 0).
fn ago(at: u64, now: u64) -> String {
    if at == 0 {
        return "never".to_string();
    }
    let secs = now.saturating_sub(at) / 1_000_000;
    match secs {
        0..=59 => format!("{secs}s ago"),
        60..=3599 => format!("{}m ago", secs / 60),
        3600..=172_799 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

fn render_status(s: &ClusterStatus) -> String {
    let now = if s.now_micros > 0 {
        s.now_micros
    } else {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    };
    let mut out = format!(
        "Cluster: {} (as seen by node {}{}; layout version {})\nStatus=Up/Down State=Normal/Joining/Leaving/Syncing/Left\n",
        s.cluster,
        s.local_id,
        if s.state.is_empty() {
            String::new()
        } else {
            format!(", {}", s.state)
        },
        s.schema_version
    );
    out.push_str(&format!(
        "{:<3} {:<22} {:<8} {:>10} {:>7} {:>12}  {:<10}  {:<16}  {}\n",
        "--", "Address", "State", "Load", "Owns", "Generation", "Repaired", "DC/Rack", "Node ID"
    ));
    for m in &s.members {
        let code = format!(
            "{}{}",
            if m.up { 'U' } else { 'D' },
            m.state.chars().next().unwrap_or('?')
        );
        out.push_str(&format!(
            "{:<3} {:<22} {:<8} {:>10} {:>6.1}% {:>12}  {:<10}  {:<16}  {}\n",
            code,
            m.addr,
            m.state,
            human_bytes(m.load),
            m.ownership * 100.0,
            m.generation,
            ago(m.repaired_through, now),
            format!("{}/{}", m.datacenter, m.rack),
            m.id
        ));
    }
    let r = &s.repair;
    let mut line = format!(
        "This node: last repair round completed {}",
        ago(r.last_round_completed, now)
    );
    if let Some(p) = r.round {
        line.push_str(&format!(
            "; round in progress: {}/{} pairs",
            p.pairs_done, p.pairs_total
        ));
    }
    let pending: u64 = s.hints.pending.iter().map(|p| p.bytes).sum();
    if pending > 0 {
        line.push_str(&format!(
            "; hints pending: {} for {} node(s)",
            human_bytes(pending),
            s.hints.pending.len()
        ));
    } else if !s.hints.enabled && s.now_micros > 0 {
        line.push_str("; hints off");
    }
    out.push_str(&line);
    out.push('\n');
    if let Some(line) = ring_change_line(&s.ring_change) {
        out.push_str(&line);
        out.push('\n');
    }
    if let Some(p) = &s.join_progress {
        out.push_str(&format!(
            "This node is joining for {:.1}s: {} items received ({} bytes exchanged), {} held\n",
            p.elapsed_secs, r.items_pulled, r.bytes_sent, r.tree_items
        ));
    }
    out
}

/// `Ring change in progress: joining [..] leaving [..] removing [..]`, or
/// `None` when nothing moves.
fn ring_change_line(r: &cassio_node::RingChange) -> Option<String> {
    if r.is_empty() {
        return None;
    }
    let ids = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
    let mut parts = Vec::new();
    for (what, v) in [
        ("joining", &r.joining),
        ("leaving", &r.leaving),
        ("removing", &r.removing),
    ] {
        if !v.is_empty() {
            parts.push(format!("{what} [{}]", ids(v)));
        }
    }
    Some(format!("Ring change in progress: {}", parts.join(" ")))
}

fn init_logs(format: LogFormat, filter: &str) -> Result<(), ConfigError> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .map_err(|e| ConfigError::new("log_level", filter, e.to_string()))?;
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    // Only fails if a subscriber is already set, which keeps the first.
    let _ = result;
    Ok(())
}

fn install_metrics() {
    if let Err(e) = cassio_node::gateway::install_metrics() {
        tracing::warn!(error = %e, "metrics are not recorded");
    }
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM. The handlers are installed when
/// this is called, not when the future is first polled: a signal that
/// arrives between the ready line and the wait (a supervisor stopping a
/// node it just saw start) must stop the node cleanly, not kill it with the
/// signal's default action. A signal delivered before the wait is kept and
/// ends it at once.
fn stop_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn start(args: StartArgs) -> Result<ExitCode, Failure> {
    let settings = args.settings()?;
    init_logs(settings.log_format, &settings.log_level)?;
    install_metrics();
    let stop = stop_signal();
    let launched = launch(&settings).await?;
    println!("{}", launched.ready_line());
    let _ = std::io::stdout().flush();
    let mut left = launched.node.left_signal();
    tokio::select! {
        () = stop => tracing::info!("stopping (signal received)"),
        // `cassio decommission` ran: the node left the cluster, so the
        // process ends (with success) like a shutdown that left.
        true = async { left.wait_for(|&done| done).await.is_ok() } => {
            tracing::info!("stopping (decommissioned)")
        }
    }
    launched
        .shutdown(settings.leave_on_exit)
        .await
        .context("shutdown was not clean")?;
    Ok(ExitCode::SUCCESS)
}

fn gen_certs(args: GenCertsArgs) -> Result<ExitCode, Failure> {
    use cassio_transport_tcp::tls::{generate_dev_ca, generate_node_cert, DevCa};
    let ids = args.ids()?;
    let ca = match DevCa::existing(&args.dir) {
        Some(ca) => {
            println!("CA: {} (existing, reused)", ca.cert.display());
            ca
        }
        None => {
            let ca = generate_dev_ca(&args.dir, &args.cluster)
                .with_context(|| format!("cannot create a CA in {}", args.dir.display()))?;
            println!("CA: {}", ca.cert.display());
            ca
        }
    };
    for id in ids {
        let tls = generate_node_cert(
            &ca,
            &args.dir,
            cassio_core::NodeId(id),
            &["localhost".to_string(), "127.0.0.1".to_string()],
        )
        .with_context(|| format!("cannot issue the certificate of node {id}"))?;
        println!(
            "node {id}: --tls-ca {} --tls-cert {} --tls-key {}",
            tls.ca_cert.display(),
            tls.cert.display(),
            tls.key.display()
        );
    }
    if args.client {
        use cassio_transport_tcp::tls::generate_cert_without_node_id;
        let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        names.extend(args.client_names.iter().cloned());
        let tls = generate_cert_without_node_id(&ca, &args.dir, "client", &names)
            .context("cannot issue the client-port certificate")?;
        println!(
            "client ports: --client-tls-cert {} --client-tls-key {} (clients trust {})",
            tls.cert.display(),
            tls.key.display(),
            tls.ca_cert.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `cassio hash-password`: the first line of stdin (without its line end)
/// hashed with argon2id, printed for the config file.
fn hash_password() -> Result<ExitCode, Failure> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("cannot read the password from stdin")?;
    let secret = line.trim_end_matches(['\n', '\r']);
    if secret.is_empty() {
        return Err(ConfigError::new("password", "", "empty: write it on stdin").into());
    }
    let hash = cassio_node::auth::hash_secret(secret)
        .map_err(|e| Failure::Other(anyhow::anyhow!("cannot hash the password: {e}")))?;
    println!("{hash}");
    Ok(ExitCode::SUCCESS)
}

async fn local_cluster(args: LocalClusterArgs) -> Result<ExitCode, Failure> {
    if args.nodes == 0 {
        return Err(ConfigError::new("nodes", "0", "must be at least 1").into());
    }
    let rf = args.replication_factor.unwrap_or(args.nodes.min(3));
    let lf = match args.log_format.as_str() {
        "json" => LogFormat::Json,
        "human" => LogFormat::Human,
        other => {
            return Err(ConfigError::new("log_format", other, "expected human or json").into())
        }
    };
    init_logs(lf, &args.log_level)?;
    install_metrics();
    let stop = stop_signal();
    let quic = args.transport.eq_ignore_ascii_case("quic");
    let certs = args.data_dir.join("certs");
    // Node i runs as node id i: the id its certificate names.
    let missing: Vec<String> = (1..=args.nodes)
        .filter(|i| !certs.join(format!("node{i}.pem")).exists())
        .map(|i| i.to_string())
        .collect();
    if quic && !missing.is_empty() {
        gen_certs(GenCertsArgs {
            dir: certs.clone(),
            nodes: None,
            node_ids: missing,
            cluster: "cassio-local".into(),
            client: false,
            client_names: Vec::new(),
        })?;
    }
    let mut nodes: Vec<Launched> = Vec::new();
    let mut seed: Option<SocketAddr> = None;
    for i in 1..=args.nodes {
        let mut raw = RawSettings::default();
        raw.set("cluster", "cassio-local");
        raw.set("listen", "127.0.0.1:0");
        raw.set("client_addr", "127.0.0.1:0");
        raw.set("resp_addr", "127.0.0.1:0");
        raw.set("http_addr", "127.0.0.1:0");
        raw.set(
            "data_dir",
            args.data_dir.join(format!("node{i}")).display().to_string(),
        );
        raw.set("replication_factor", rf.to_string());
        raw.set("store", args.store.clone());
        raw.set("transport", args.transport.clone());
        if quic {
            raw.set("tls_ca", certs.join("ca.pem").display().to_string());
            raw.set(
                "tls_cert",
                certs.join(format!("node{i}.pem")).display().to_string(),
            );
            raw.set(
                "tls_key",
                certs.join(format!("node{i}.key")).display().to_string(),
            );
        }
        if let Some(s) = seed {
            raw.set("seeds", s.to_string());
        }
        let settings = Settings::from_raw(&raw)?;
        let launched = match launch(&settings).await {
            Ok(l) => l,
            Err(e) => {
                for n in nodes {
                    let _ = n.shutdown(false).await;
                }
                return Err(e.into());
            }
        };
        seed.get_or_insert(launched.peer_addr);
        nodes.push(launched);
    }
    // Nodes that joined answer `Joining` until their view of the ring has
    // settled (a few gossip rounds); print the table once all of them serve.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for n in &nodes {
        let handle = n.node.handle();
        loop {
            let probe = cassio_core::ClientRequest::get("local-cluster-probe")
                .with_consistency(Consistency::One);
            match handle.execute(probe).await {
                Err(cassio_node::RequestError::Client(cassio_core::ClientError::Joining))
                    if tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                _ => break,
            }
        }
    }
    println!(
        "local cluster of {} nodes (replication factor {rf}); Ctrl-C stops it",
        nodes.len()
    );
    println!(
        "{:<6} {:<22} {:<22} {:<22} {:<22}",
        "node", "peer", "client", "resp", "http"
    );
    let show = |a: Option<SocketAddr>| a.map_or_else(|| "off".to_string(), |a| a.to_string());
    for (i, n) in nodes.iter().enumerate() {
        println!(
            "{:<6} {:<22} {:<22} {:<22} {:<22}",
            format!("node{}", i + 1),
            n.peer_addr.to_string(),
            show(n.client_addr),
            show(n.resp_addr),
            show(n.http_addr)
        );
    }
    let _ = std::io::stdout().flush();
    stop.await;
    tracing::info!("stopping the local cluster");
    let mut clean = true;
    for n in nodes {
        if let Err(e) = n.shutdown(false).await {
            tracing::error!(error = %e, "node did not stop cleanly");
            clean = false;
        }
    }
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_table_has_one_row_per_member() {
        let s = ClusterStatus {
            local_id: 1,
            cluster: "c".into(),
            members: vec![
                cassio_node::MemberStatus {
                    id: 1,
                    addr: "127.0.0.1:7000".into(),
                    state: "Normal".into(),
                    up: true,
                    load: 2048,
                    ownership: 0.5,
                    generation: 10,
                    repaired_through: NOW - 180_000_000,
                    datacenter: "dc1".into(),
                    rack: "rack1".into(),
                },
                cassio_node::MemberStatus {
                    id: 2,
                    addr: "127.0.0.1:7001".into(),
                    state: "Syncing".into(),
                    up: false,
                    load: 0,
                    ownership: 0.5,
                    generation: 11,
                    repaired_through: 0,
                    datacenter: "dc1".into(),
                    rack: "rack1".into(),
                },
            ],
            state: "Normal".into(),
            now_micros: NOW,
            repair: cassio_node::RepairInfo {
                last_round_completed: NOW - 7_200_000_000,
                round: Some(cassio_node::handle::RoundProgress {
                    pairs_done: 1,
                    pairs_total: 4,
                }),
                ..Default::default()
            },
            hints: cassio_node::HintInfo {
                enabled: true,
                pending: vec![cassio_node::handle::PendingHints {
                    node_id: 2,
                    bytes: 3 << 20,
                }],
                ..Default::default()
            },
            schema_version: 7,
            ..Default::default()
        };
        let t = render_status(&s);
        assert!(t.contains("UN  127.0.0.1:7000"), "{t}");
        assert!(t.contains("DS  127.0.0.1:7001"), "{t}");
        assert!(t.contains("Syncing"), "{t}");
        assert!(t.contains("2.0 KiB"), "{t}");
        assert!(t.contains("50.0%"), "{t}");
        assert!(t.contains("dc1/rack1"), "{t}");
        assert!(
            t.contains("as seen by node 1, Normal; layout version 7)"),
            "{t}"
        );
        // Member 1 repaired 3 minutes before the node's clock; 2 never did.
        let row = |addr: &str| t.lines().find(|l| l.contains(addr)).unwrap_or_default();
        assert!(row("127.0.0.1:7000").contains("3m ago"), "{t}");
        assert!(row("127.0.0.1:7001").contains("never"), "{t}");
        assert!(t.contains("last repair round completed 2h ago"), "{t}");
        assert!(t.contains("round in progress: 1/4 pairs"), "{t}");
        assert!(t.contains("hints pending: 3.0 MiB for 1 node(s)"), "{t}");
        assert!(!t.contains("Ring change"), "{t}");
        let moving = ClusterStatus {
            ring_change: cassio_node::RingChange {
                joining: vec![4],
                leaving: vec![],
                removing: vec![2, 9],
            },
            ..s
        };
        let t = render_status(&moving);
        assert!(
            t.contains("Ring change in progress: joining [4] removing [2, 9]\n"),
            "{t}"
        );
        assert!(!t.contains("This node is joining"), "{t}");
        let joining = ClusterStatus {
            join_progress: Some(cassio_node::JoinProgress {
                elapsed_secs: 12.34,
            }),
            repair: cassio_node::RepairInfo {
                items_pulled: 4567,
                bytes_sent: 890_000,
                tree_items: 5000,
                ..moving.repair.clone()
            },
            ..moving
        };
        let t = render_status(&joining);
        assert!(
            t.contains(
                "This node is joining for 12.3s: 4567 items received (890000 bytes exchanged), 5000 held\n"
            ),
            "{t}"
        );
    }

    const NOW: u64 = 1_800_000_000_000_000;

    #[test]
    fn ages_read_in_the_largest_whole_unit() {
        assert_eq!(ago(0, NOW), "never");
        assert_eq!(ago(NOW - 5_000_000, NOW), "5s ago");
        assert_eq!(ago(NOW - 59_000_000, NOW), "59s ago");
        assert_eq!(ago(NOW - 61_000_000, NOW), "1m ago");
        assert_eq!(ago(NOW - 3 * 3_600_000_000, NOW), "3h ago");
        assert_eq!(ago(NOW - 3 * 86_400_000_000, NOW), "3d ago");
        // A clock behind the member's: not in the future.
        assert_eq!(ago(NOW + 5_000_000, NOW), "0s ago");
    }
}
