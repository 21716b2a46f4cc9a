//! `cassio repair` (part of the binary): asks a node over HTTP to start an
//! anti-entropy round (`POST /admin/repair`), then polls its `/status`
//! every 200 ms and draws a progress bar until that round has ended.
//!
//! The node numbers the rounds that end on it (`rounds_ended`) and answers
//! the request with the number its round will have (one more when a round
//! was already running: the requested one follows it), so the CLI follows
//! exactly its round, even when another starts right after it.

use crate::{Failure, Usage};
use anyhow::{anyhow, Context};
use cassio_node::config::ConfigError;
use cassio_node::handle::RoundOutcome;
use cassio_node::{ClusterStatus, RepairInfo, RepairStarted};
use indicatif::{ProgressBar, ProgressStyle};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// How often the node's status is read.
const POLL: Duration = Duration::from_millis(200);
/// One HTTP call, at most.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The node may miss polls for this long (a busy moment) before the CLI
/// gives up on it.
const UNREACHABLE_FOR: Duration = Duration::from_secs(10);

/// Where the followed round is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Phase {
    /// An earlier round is still running; ours starts after it.
    Behind,
    /// Ours has not started yet (trees still building, quorum not heard).
    Starting,
    /// Ours runs: pairs done of pairs in the round.
    Running { done: u64, total: u64 },
    /// Ours ended (`None`: it ended, but so many others ended since that
    /// its outcome is no longer listed).
    Ended(Option<RoundOutcome>),
}

/// Where round `round` (as numbered by the node) is, given a status.
pub(crate) fn phase(round: u64, r: &RepairInfo) -> Phase {
    if r.rounds_ended >= round {
        return Phase::Ended(r.recent_rounds.iter().find(|o| o.number == round).copied());
    }
    if r.rounds_ended + 1 < round {
        return Phase::Behind;
    }
    match r.round {
        Some(p) => Phase::Running {
            done: p.pairs_done,
            total: p.pairs_total,
        },
        None => Phase::Starting,
    }
}

/// The figures that grew since the request, for the bar and the summary.
fn work_since(base: &RepairInfo, now: &RepairInfo) -> String {
    format!(
        "{} keys compared, {} items pushed, {} pulled",
        now.keys_compared.saturating_sub(base.keys_compared),
        now.items_pushed.saturating_sub(base.items_pushed),
        now.items_pulled.saturating_sub(base.items_pulled),
    )
}

/// The one-line summary of an ended round, or the error for a failed one.
pub(crate) fn summary(
    outcome: Option<RoundOutcome>,
    base: &RepairInfo,
    now: &RepairInfo,
    scope: &str,
    took: Duration,
) -> Result<String, String> {
    let work = work_since(base, now);
    let segments = now.segments_repaired.saturating_sub(base.segments_repaired);
    let took = format!("{:.1}s", took.as_secs_f64());
    let Some(o) = outcome else {
        return Ok(format!(
            "repair of {scope} ended in {took}: {work}, {segments} segments differed"
        ));
    };
    if o.failed > 0 {
        return Err(format!(
            "repair of {scope} ended in {took} with {} of {} exchanges failed ({work}); the node retries on its own, run `cassio repair` again to follow a complete round",
            o.failed, o.pairs
        ));
    }
    let skipped = if o.skipped_down > 0 {
        format!(
            ", {} pair(s) skipped because the peer is down",
            o.skipped_down
        )
    } else {
        String::new()
    };
    Ok(format!(
        "repair of {scope} completed in {took}: {} pair(s) synced{skipped}, {work}, {segments} segments differed",
        o.pairs
    ))
}

pub(crate) fn base_url(http: &str) -> String {
    let t = http.trim().trim_end_matches('/');
    if t.starts_with("http://") || t.starts_with("https://") {
        t.to_string()
    } else {
        format!("http://{t}")
    }
}

/// The answer's `message` if it is one of the node's JSON errors.
/// The admin commands' HTTP client: calls bounded by [`CALL_TIMEOUT`], and
/// on a node with users, Basic credentials from `CASSIO_USER` and
/// `CASSIO_PASSWORD` (the admin routes need a user with `admin = true`).
pub(crate) fn http_client_builder() -> anyhow::Result<reqwest::ClientBuilder> {
    use base64::Engine;
    let builder = reqwest::Client::builder().timeout(CALL_TIMEOUT);
    let (Ok(user), Ok(password)) = (
        std::env::var("CASSIO_USER"),
        std::env::var("CASSIO_PASSWORD"),
    ) else {
        return Ok(builder);
    };
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let mut value = reqwest::header::HeaderValue::from_str(&format!("Basic {token}"))
        .context("CASSIO_USER or CASSIO_PASSWORD cannot be sent in an HTTP header")?;
    value.set_sensitive(true);
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::AUTHORIZATION, value);
    Ok(builder.default_headers(headers))
}

pub(crate) async fn error_text(resp: reqwest::Response) -> String {
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    let message = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_owned))
        .unwrap_or(body);
    format!("{status}: {message}")
}

pub(crate) async fn status(client: &reqwest::Client, url: &str) -> anyhow::Result<ClusterStatus> {
    let resp = client.get(url).send().await?;
    if !resp.status().is_success() {
        return Err(anyhow!("{}", error_text(resp).await));
    }
    Ok(resp.json().await?)
}

fn bar() -> ProgressBar {
    let bar = ProgressBar::new(0);
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} pairs  {msg}",
    ) {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

/// `cassio repair`.
pub(crate) async fn run(a: super::RepairArgs) -> Result<ExitCode, Failure> {
    let timeout = cassio_node::config::duration("timeout", &a.timeout)?;
    if timeout.is_zero() {
        return Err(Failure::Usage(Usage(ConfigError::new(
            "timeout",
            &a.timeout,
            "must be more than 0",
        ))));
    }
    if let Some(n) = &a.node {
        if n.parse::<core::net::SocketAddr>().is_err() {
            return Err(ConfigError::new(
                "node",
                n,
                "expected a peer's listen address, IP:PORT (the Address column of `cassio status`)",
            )
            .into());
        }
    }
    let base = base_url(&a.http);
    let client = http_client_builder()?
        .build()
        .context("cannot build the HTTP client")?;
    let started_at = Instant::now();
    let deadline = started_at + timeout;
    let status_url = format!("{base}/status");
    // The node's generation now, to notice a restart (its round numbers
    // start again from 0).
    let before = status(&client, &status_url)
        .await
        .with_context(|| format!("cannot read {status_url}"))?;
    let generation = before
        .members
        .iter()
        .find(|m| m.id == before.local_id)
        .map(|m| m.generation);

    let mut query: Vec<(&str, &str)> = Vec::new();
    if let Some(k) = &a.keyspace {
        query.push(("keyspace", k));
    }
    if let Some(n) = &a.node {
        query.push(("node", n));
    }
    let repair_url = format!("{base}/admin/repair");
    let resp = client
        .post(&repair_url)
        .query(&query)
        .send()
        .await
        .with_context(|| format!("cannot reach {repair_url}"))?;
    if resp.status() != reqwest::StatusCode::ACCEPTED {
        return Err(anyhow!("the node refused the repair: {}", error_text(resp).await).into());
    }
    let started: RepairStarted = resp
        .json()
        .await
        .context("the node's answer to the repair request is not valid")?;
    let scope = match (&started.keyspace, &started.node) {
        (None, None) => "every keyspace with every peer".to_string(),
        (Some(k), None) => format!("keyspace {k} with every peer"),
        (None, Some(n)) => format!("every keyspace with {n}"),
        (Some(k), Some(n)) => format!("keyspace {k} with {n}"),
    };
    let bar = bar();
    bar.set_message(if started.queued {
        "waiting for the running round to end".to_string()
    } else {
        "starting".to_string()
    });
    let mut last_ok = Instant::now();
    loop {
        if Instant::now() >= deadline {
            bar.abandon();
            return Err(anyhow!(
                "the repair of {scope} did not end within {} (the round goes on on the node; `cassio status` shows when it completes)",
                cassio_node::config::show_duration(timeout)
            )
            .into());
        }
        tokio::time::sleep(POLL).await;
        let st = match status(&client, &status_url).await {
            Ok(st) => {
                last_ok = Instant::now();
                st
            }
            Err(e) => {
                if last_ok.elapsed() >= UNREACHABLE_FOR {
                    bar.abandon();
                    return Err(anyhow!("the node stopped answering ({e:#})").into());
                }
                continue;
            }
        };
        let now_generation = st
            .members
            .iter()
            .find(|m| m.id == st.local_id)
            .map(|m| m.generation);
        if now_generation != generation {
            bar.abandon();
            return Err(anyhow!("the node restarted during the repair; run it again").into());
        }
        match phase(started.round, &st.repair) {
            Phase::Behind => bar.set_message("waiting for the running round to end"),
            Phase::Starting => bar.set_message("starting"),
            Phase::Running { done, total } => {
                bar.set_length(total);
                bar.set_position(done);
                bar.set_message(work_since(&started.repair, &st.repair));
            }
            Phase::Ended(outcome) => {
                if let Some(o) = outcome {
                    bar.set_length(o.pairs);
                    bar.set_position(o.pairs);
                }
                bar.finish_and_clear();
                return match summary(
                    outcome,
                    &started.repair,
                    &st.repair,
                    &scope,
                    started_at.elapsed(),
                ) {
                    Ok(line) => {
                        println!("{line}");
                        Ok(ExitCode::SUCCESS)
                    }
                    Err(e) => Err(anyhow!(e).into()),
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cassio_node::handle::RoundProgress;

    fn info(ended: u64, round: Option<(u64, u64)>, recent: &[RoundOutcome]) -> RepairInfo {
        RepairInfo {
            rounds_ended: ended,
            round: round.map(|(d, t)| RoundProgress {
                pairs_done: d,
                pairs_total: t,
            }),
            recent_rounds: recent.to_vec(),
            ..RepairInfo::default()
        }
    }

    #[test]
    fn the_followed_round_is_found_by_its_number() {
        let ours = RoundOutcome {
            number: 5,
            pairs: 4,
            ..RoundOutcome::default()
        };
        let next = RoundOutcome {
            number: 6,
            pairs: 4,
            failed: 2,
            ..RoundOutcome::default()
        };
        // Queued behind round 4, which runs.
        assert_eq!(phase(5, &info(3, Some((1, 4)), &[])), Phase::Behind);
        // Round 4 ended; ours has not started yet, then runs.
        assert_eq!(phase(5, &info(4, None, &[])), Phase::Starting);
        assert_eq!(
            phase(5, &info(4, Some((2, 4)), &[])),
            Phase::Running { done: 2, total: 4 }
        );
        // Ours ended and another (failed) after it: ours is reported.
        assert_eq!(
            phase(5, &info(6, None, &[ours, next])),
            Phase::Ended(Some(ours))
        );
        assert_eq!(phase(5, &info(40, None, &[next])), Phase::Ended(None));
    }

    #[test]
    fn the_summary_counts_work_since_the_request_and_fails_on_failed_exchanges() {
        let base = RepairInfo {
            keys_compared: 100,
            items_pushed: 1,
            ..RepairInfo::default()
        };
        let now = RepairInfo {
            keys_compared: 400,
            items_pushed: 4,
            items_pulled: 2,
            segments_repaired: 3,
            ..RepairInfo::default()
        };
        let ok = RoundOutcome {
            number: 1,
            pairs: 2,
            skipped_down: 1,
            ..RoundOutcome::default()
        };
        let line = summary(Some(ok), &base, &now, "x", Duration::from_millis(1500)).unwrap();
        assert!(line.starts_with("repair of x completed in 1.5s"), "{line}");
        assert!(line.contains("2 pair(s) synced"), "{line}");
        assert!(line.contains("1 pair(s) skipped"), "{line}");
        assert!(
            line.contains("300 keys compared, 3 items pushed, 2 pulled"),
            "{line}"
        );
        assert!(line.contains("3 segments differed"), "{line}");
        let failed = RoundOutcome { failed: 1, ..ok };
        let err = summary(Some(failed), &base, &now, "x", Duration::ZERO).unwrap_err();
        assert!(err.contains("1 of 2 exchanges failed"), "{err}");
    }

    #[test]
    fn http_addresses_become_base_urls() {
        assert_eq!(base_url("127.0.0.1:8080"), "http://127.0.0.1:8080");
        assert_eq!(base_url("http://h:1/"), "http://h:1");
    }
}
