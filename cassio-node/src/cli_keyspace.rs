//! `cassio keyspace list|create|alter|drop` (part of the binary): asks a
//! node over its HTTP admin API (`/admin/keyspaces`) and prints the answer.
//! `cassio keyspace create NAME --rf N --mode craq` makes a chain-replicated
//! (linearizable) keyspace; `--mode lww`, the default, a last-write-wins
//! one. `list` shows each keyspace's mode.
//! A change returns once the cluster agreed on it (the schema version that
//! holds it is printed).

use crate::cli_repair::{base_url, error_text, http_client_builder};
use crate::Failure;
use anyhow::{anyhow, Context};
use cassio_core::ReplicationStrategy;
use cassio_node::config::DEFAULT_HTTP_ADDR;
use cassio_node::KeyspaceStatus;
use clap::{Args, Subcommand};
use serde::Deserialize;
use serde_json::json;
use std::process::ExitCode;
use std::time::Duration;

/// A change waits for the cluster to agree (up to 20 s in the node), so
/// the call may take longer than a read.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// `cassio keyspace` arguments.
#[derive(Args, Debug)]
pub(crate) struct KeyspaceArgs {
    #[command(subcommand)]
    command: KeyspaceCommand,
    /// HTTP address of any node of the cluster (its `--http-addr`).
    #[arg(long, global = true, default_value = DEFAULT_HTTP_ADDR)]
    node: String,
}

#[derive(Subcommand, Debug)]
enum KeyspaceCommand {
    /// List the cluster's keyspaces.
    List,
    /// Create a keyspace.
    Create {
        /// Its name: 1 to 48 ASCII letters, digits, '_' or '-'.
        name: String,
        /// How many nodes hold each key: `N`, or a factor per datacenter
        /// (`dc1:3,dc2:2`, replicas spread over each datacenter's racks).
        #[arg(long)]
        rf: String,
        /// Place a single factor's replicas on distinct racks.
        #[arg(long)]
        spread_racks: bool,
        /// The level of requests that name none (one, two, three, quorum,
        /// all, local_quorum, each_quorum). A craq keyspace's is quorum.
        #[arg(long, default_value = "quorum")]
        consistency: String,
        /// How replicas are kept in step: `lww` (leaderless, last write
        /// wins) or `craq` (chain replication: linearizable, with atomic
        /// compare-and-set and increments; a single factor, no scans, cells
        /// or TTLs).
        #[arg(long, default_value = "lww")]
        mode: String,
    },
    /// Change a keyspace's replication factor (by one per step) or default level.
    Alter {
        /// The keyspace.
        name: String,
        /// The new replication factor (today's plus or minus one), or the
        /// new factors per datacenter (`dc1:3,dc2:3`: one datacenter by one).
        #[arg(long)]
        rf: Option<String>,
        /// With a single factor: the keyspace's rack spread as it is (an
        /// alter cannot turn it on or off).
        #[arg(long)]
        spread_racks: bool,
        /// The new default level.
        #[arg(long)]
        consistency: Option<String>,
    },
    /// Drop a keyspace (a keyspace created again under its name starts empty).
    Drop {
        /// The keyspace.
        name: String,
    },
}

#[derive(Deserialize)]
struct Listing {
    schema_version: u64,
    keyspaces: Vec<KeyspaceStatus>,
}

#[derive(Deserialize)]
struct Changed {
    schema_version: u64,
}

/// The JSON of `--rf N|DC:N,...` and `--spread-racks` for the admin API.
fn replication_body(rf: &str, spread_racks: bool) -> Result<serde_json::Value, Failure> {
    let r = cassio_core::topology::Replication::parse(rf)
        .map_err(|e| cassio_node::config::ConfigError::new("rf", rf, e.to_string()))?;
    Ok(if r.per_datacenter() {
        json!({ "datacenters": r.datacenters })
    } else if spread_racks {
        json!({ "replication_factor": r.factor, "spread_racks": true })
    } else {
        json!({ "replication_factor": r.factor })
    })
}

/// The JSON of a `--mode craq` create: a single factor only (a chain per
/// key, placed by the ring), at the default level.
fn craq_body(
    rf: &str,
    spread_racks: bool,
    consistency: &str,
) -> Result<serde_json::Value, Failure> {
    let refuse = |why: &str| -> Failure {
        cassio_node::config::ConfigError::new("mode", "craq", why.to_string()).into()
    };
    let factor: usize = rf.trim().parse().map_err(|_| {
        refuse("a craq keyspace takes a single replication factor (--rf N); datacenter factors (dc1:3,...) are not supported with --mode craq")
    })?;
    if spread_racks {
        return Err(refuse(
            "--spread-racks is not supported with --mode craq (its chains are placed by the ring)",
        ));
    }
    if !consistency.eq_ignore_ascii_case("quorum") {
        return Err(refuse(
            "a craq keyspace's default level is quorum (linearizable); leave --consistency out (ask for one per request for weak reads)",
        ));
    }
    Ok(json!({ "replication_factor": factor, "mode": "craq" }))
}

/// `cassio keyspace`.
pub(crate) async fn run(a: KeyspaceArgs) -> Result<ExitCode, Failure> {
    let base = format!("{}/admin/keyspaces", base_url(&a.node));
    let client = http_client_builder()?
        .timeout(CHANGE_TIMEOUT)
        .build()
        .context("cannot build the HTTP client")?;
    let (request, what) = match a.command {
        KeyspaceCommand::List => {
            let resp = client
                .get(&base)
                .send()
                .await
                .with_context(|| format!("cannot reach {base}"))?;
            if !resp.status().is_success() {
                return Err(anyhow!("{}", error_text(resp).await).into());
            }
            let l: Listing = resp
                .json()
                .await
                .context("the node's answer is not valid")?;
            println!("schema version {}", l.schema_version);
            println!(
                "{:<24} {:>5} {:>4} {:<12} {:<5} Replication",
                "Keyspace", "Id", "RF", "Level", "Mode"
            );
            for k in l.keyspaces {
                println!(
                    "{:<24} {:>5} {:>4} {:<12} {:<5} {}",
                    k.name,
                    k.id,
                    k.replication_factor,
                    k.default_consistency,
                    k.strategy,
                    k.replication
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
        KeyspaceCommand::Create {
            name,
            rf,
            spread_racks,
            consistency,
            mode,
        } => {
            let mode = ReplicationStrategy::parse(&mode).ok_or_else(|| {
                cassio_node::config::ConfigError::new("mode", mode.as_str(), "use lww or craq")
            })?;
            let mut body = match mode {
                ReplicationStrategy::Craq => craq_body(&rf, spread_racks, &consistency)?,
                _ => {
                    let mut body = replication_body(&rf, spread_racks)?;
                    body["consistency"] = json!(consistency);
                    body
                }
            };
            body["name"] = json!(name);
            (
                client.post(&base).json(&body),
                format!("created keyspace {name}"),
            )
        }
        KeyspaceCommand::Alter {
            name,
            rf,
            spread_racks,
            consistency,
        } => {
            let mut body = match rf {
                Some(rf) => replication_body(&rf, spread_racks)?,
                None => json!({}),
            };
            body["consistency"] = json!(consistency);
            (
                client.patch(format!("{base}/{name}")).json(&body),
                format!("altered keyspace {name}"),
            )
        }
        KeyspaceCommand::Drop { name } => (
            client.delete(format!("{base}/{name}")),
            format!("dropped keyspace {name}"),
        ),
    };
    let resp = request
        .send()
        .await
        .with_context(|| format!("cannot reach {base}"))?;
    if !resp.status().is_success() {
        return Err(anyhow!("refused: {}", error_text(resp).await).into());
    }
    let c: Changed = resp
        .json()
        .await
        .context("the node's answer is not valid")?;
    println!("{what} (schema version {})", c.schema_version);
    Ok(ExitCode::SUCCESS)
}
