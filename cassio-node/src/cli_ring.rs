//! `cassio remove --dead` and `cassio decommission` (part of the binary):
//! ask a node over its HTTP admin API to change the ring, then follow its
//! `/status` until the change is done, printing each step.
//!
//! - `remove`: `POST /admin/remove?node=ID` on a live node; done once that
//!   node's members no longer list the dead one (every range it held was
//!   synced among the others first, so nothing is dropped silently).
//! - `decommission`: `POST /admin/decommission` on the leaving node; done
//!   once it shows `Left` or stops answering (its process exits after it
//!   announced `Left`).

use crate::cli_repair::{base_url, error_text, status};
use crate::{Failure, Usage};
use anyhow::{anyhow, Context};
use cassio_node::config::{parse_node_id, show_duration, ConfigError, DEFAULT_HTTP_ADDR};
use cassio_node::{ClusterStatus, DecommissionStarted, RemoveStarted};
use clap::Args;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// How often the node's status is read.
const POLL: Duration = Duration::from_millis(500);
/// The node may miss polls for this long (a busy moment) before the CLI
/// gives up on it.
const UNREACHABLE_FOR: Duration = Duration::from_secs(10);

/// `cassio remove` arguments.
#[derive(Args, Debug)]
pub(crate) struct RemoveArgs {
    /// The dead node's id (the Node ID column of `cassio status`).
    #[arg(long, value_name = "NODE_ID")]
    dead: String,
    /// HTTP address of a live node that asks the cluster (its `--http-addr`).
    #[arg(long, default_value = DEFAULT_HTTP_ADDR)]
    node: String,
    #[command(flatten)]
    follow: FollowArgs,
}

/// How a ring command follows the change it asked for.
#[derive(Args, Debug)]
pub(crate) struct FollowArgs {
    /// Only ask; do not follow the change.
    #[arg(long)]
    no_wait: bool,
    /// Give up waiting after this long (the change goes on in the cluster).
    #[arg(long, default_value = "10m")]
    timeout: String,
}

/// `cassio decommission` arguments.
#[derive(Args, Debug)]
pub(crate) struct DecommissionArgs {
    /// HTTP address of the node that leaves (its `--http-addr`).
    #[arg(long, default_value = DEFAULT_HTTP_ADDR)]
    node: String,
    #[command(flatten)]
    follow: FollowArgs,
}

fn timeout(text: &str) -> Result<Duration, Failure> {
    let t = cassio_node::config::duration("timeout", text)?;
    if t.is_zero() {
        return Err(Failure::Usage(Usage(ConfigError::new(
            "timeout",
            text,
            "must be more than 0",
        ))));
    }
    Ok(t)
}

fn http_client() -> Result<reqwest::Client, Failure> {
    Ok(crate::cli_repair::http_client_builder()?
        .build()
        .context("cannot build the HTTP client")?)
}

/// One line describing where a removal stands, as `node`'s status shows it.
pub(crate) fn removal_progress(dead: u64, st: &ClusterStatus) -> String {
    let normal = st
        .members
        .iter()
        .filter(|m| m.id != dead && m.state == "Normal" && m.up)
        .count();
    let mut line =
        format!("node {dead} still listed; {normal} live Normal member(s) syncing its ranges",);
    if st.ring_change.removing.contains(&dead) {
        line.push_str(" (removal requested)");
    }
    if let Some(p) = st.repair.round {
        line.push_str(&format!(
            "; anti-entropy round {}/{} pairs",
            p.pairs_done, p.pairs_total
        ));
    }
    line
}

/// `cassio remove --dead NODE_ID`.
pub(crate) async fn remove(a: RemoveArgs) -> Result<ExitCode, Failure> {
    let dead = parse_node_id(&a.dead).map_err(|e| ConfigError::new("dead", &a.dead, e.reason))?;
    let limit = timeout(&a.follow.timeout)?;
    let base = base_url(&a.node);
    let client = http_client()?;
    let started_at = Instant::now();
    let started: RemoveStarted = post_accepted(
        &client,
        &format!("{base}/admin/remove"),
        &[("node", dead.to_string())],
        &format!("the node refused to remove node {dead}"),
    )
    .await?;
    println!(
        "node {} asked the cluster to remove dead node {}: its ranges are re-replicated among the other nodes, then every node forgets it",
        started.requested_by, started.node_id
    );
    if a.follow.no_wait {
        println!("not waiting (--no-wait); `cassio status` lists node {dead} until it is removed");
        return Ok(ExitCode::SUCCESS);
    }
    let status_url = format!("{base}/status");
    let deadline = started_at + limit;
    let mut last_ok = Instant::now();
    let mut last_line = String::new();
    loop {
        let st = match status(&client, &status_url).await {
            Ok(st) => {
                last_ok = Instant::now();
                Some(st)
            }
            Err(e) => {
                if last_ok.elapsed() >= UNREACHABLE_FOR {
                    return Err(anyhow!(
                        "node at {} stopped answering ({e:#}); the removal goes on in the cluster",
                        a.node
                    )
                    .into());
                }
                None
            }
        };
        if let Some(st) = st {
            if !st.members.iter().any(|m| m.id == dead) {
                println!(
                    "node {dead} removed: the members no longer list it ({:.1}s)",
                    started_at.elapsed().as_secs_f64()
                );
                return Ok(ExitCode::SUCCESS);
            }
            let line = removal_progress(dead, &st);
            if line != last_line {
                println!("{line}");
                last_line = line;
            }
        }
        if Instant::now() >= deadline {
            return Err(anyhow!(
                "node {dead} was still listed after {} (the removal goes on; `cassio status` shows when it is gone)",
                show_duration(limit)
            )
            .into());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The state `st` shows for its own node, and its ring change.
pub(crate) fn leave_progress(st: &ClusterStatus) -> String {
    let mut line = format!("node {}: {}", st.local_id, st.state);
    if let Some(p) = st.repair.round {
        line.push_str(&format!(
            "; anti-entropy round {}/{} pairs",
            p.pairs_done, p.pairs_total
        ));
    }
    let gaining: Vec<String> = st
        .members
        .iter()
        .filter(|m| m.id != st.local_id && m.up && m.state == "Normal")
        .map(|m| m.id.to_string())
        .collect();
    if st.state == "Leaving" {
        line.push_str(&format!(
            "; waiting for the remaining nodes ({}) to sync its ranges",
            gaining.join(", ")
        ));
    }
    line
}

/// POSTs to admin route `url` and parses its 202 answer; any other status
/// is a refusal, reported as `refused: <the node's error text>`.
async fn post_accepted<T: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    url: &str,
    query: &[(&str, String)],
    refused: &str,
) -> Result<T, Failure> {
    let resp = client
        .post(url)
        .query(query)
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    if resp.status() != reqwest::StatusCode::ACCEPTED {
        return Err(anyhow!("{refused}: {}", error_text(resp).await).into());
    }
    Ok(resp
        .json()
        .await
        .with_context(|| format!("the node's answer to {url} is not valid"))?)
}

/// `cassio decommission`.
pub(crate) async fn decommission(a: DecommissionArgs) -> Result<ExitCode, Failure> {
    let limit = timeout(&a.follow.timeout)?;
    let base = base_url(&a.node);
    let client = http_client()?;
    let started_at = Instant::now();
    let status_url = format!("{base}/status");
    // The node's generation now, to notice a restart (which would not be
    // a completed decommission).
    let before = status(&client, &status_url)
        .await
        .with_context(|| format!("cannot read {status_url}"))?;
    let generation_of = |st: &ClusterStatus| {
        st.members
            .iter()
            .find(|m| m.id == st.local_id)
            .map(|m| m.generation)
    };
    let generation = generation_of(&before);
    let started: DecommissionStarted = post_accepted(
        &client,
        &format!("{base}/admin/decommission"),
        &[],
        &format!("node {} refused to leave", before.local_id),
    )
    .await?;
    println!(
        "node {} is leaving{}: it hands its ranges over to the nodes that gain them, announces Left, then stops",
        started.node_id,
        if started.already_leaving {
            " (it was leaving already)"
        } else {
            ""
        }
    );
    if a.follow.no_wait {
        println!("not waiting (--no-wait); `cassio status` on another node shows when it is gone");
        return Ok(ExitCode::SUCCESS);
    }
    let deadline = started_at + limit;
    let mut last_ok = Instant::now();
    let mut last_line = String::new();
    loop {
        match status(&client, &status_url).await {
            Ok(st) => {
                last_ok = Instant::now();
                if generation_of(&st) != generation {
                    return Err(anyhow!(
                        "node {} restarted during the decommission; run it again",
                        started.node_id
                    )
                    .into());
                }
                if st.state == "Left" {
                    println!(
                        "node {} has left the cluster ({:.1}s); its process stops",
                        started.node_id,
                        started_at.elapsed().as_secs_f64()
                    );
                    return Ok(ExitCode::SUCCESS);
                }
                let line = leave_progress(&st);
                if line != last_line {
                    println!("{line}");
                    last_line = line;
                }
            }
            Err(e) => {
                // The process exits right after it announced Left: a
                // refused connection is the end of a decommission.
                let refused = e
                    .downcast_ref::<reqwest::Error>()
                    .is_some_and(reqwest::Error::is_connect);
                if refused {
                    println!(
                        "node {} stopped answering after it was Leaving: it has left the cluster and stopped ({:.1}s)",
                        started.node_id,
                        started_at.elapsed().as_secs_f64()
                    );
                    return Ok(ExitCode::SUCCESS);
                }
                if last_ok.elapsed() >= UNREACHABLE_FOR {
                    return Err(anyhow!("the node stopped answering ({e:#})").into());
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(anyhow!(
                "node {} had not left after {} (it goes on leaving; `cassio status` shows when it is gone)",
                started.node_id,
                show_duration(limit)
            )
            .into());
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cassio_node::MemberStatus;

    fn member(id: u64, state: &str, up: bool) -> MemberStatus {
        MemberStatus {
            id,
            state: state.into(),
            up,
            ..MemberStatus::default()
        }
    }

    #[test]
    fn progress_lines_name_the_nodes_that_sync() {
        let mut st = ClusterStatus {
            local_id: 1,
            state: "Leaving".into(),
            members: vec![
                member(1, "Leaving", true),
                member(2, "Normal", true),
                member(3, "Normal", false),
                member(4, "Normal", true),
            ],
            ..ClusterStatus::default()
        };
        let line = leave_progress(&st);
        assert!(line.starts_with("node 1: Leaving"), "{line}");
        assert!(line.contains("remaining nodes (2, 4)"), "{line}");
        st.ring_change.removing = vec![3];
        let line = removal_progress(3, &st);
        assert!(line.contains("2 live Normal member(s)"), "{line}");
        assert!(line.contains("(removal requested)"), "{line}");
    }
}
