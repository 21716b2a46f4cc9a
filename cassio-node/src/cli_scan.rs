//! `cassio scan PREFIX [--limit N]` (part of the binary): lists the keys
//! of the default keyspace that start with `PREFIX`, and their values, in
//! token (hash) order, one `key<TAB>value` line each, through the native
//! client's paged scan.

use crate::{connect, consistency, Failure, Target};
use anyhow::Context;
use clap::Args;
use futures_util::StreamExt;
use std::io::Write;
use std::process::ExitCode;

/// Entries asked for per page.
const PAGE: u32 = 500;

/// `cassio scan` arguments.
#[derive(Args, Debug)]
pub(crate) struct ScanArgs {
    /// Only keys that start with this (empty: every key).
    #[arg(default_value = "")]
    prefix: String,
    /// Stop after this many keys [default: all].
    #[arg(long)]
    limit: Option<usize>,
    /// Print keys only.
    #[arg(long)]
    keys_only: bool,
    /// Consistency level each token range is read at: one, two, three, quorum, all.
    #[arg(long)]
    consistency: Option<String>,
    #[command(flatten)]
    target: Target,
}

/// Runs `cassio scan`.
pub(crate) async fn run(a: ScanArgs) -> Result<ExitCode, Failure> {
    let level = consistency(a.consistency.as_deref())?;
    let client = connect(&a.target).await?;
    let page = match a.limit {
        Some(n) => u32::try_from(n).unwrap_or(PAGE).clamp(1, PAGE),
        None => PAGE,
    };
    let stream = client.scan(a.prefix.into_bytes(), page, level);
    futures_util::pin_mut!(stream);
    let mut out = std::io::stdout().lock();
    let mut n = 0usize;
    while a.limit.is_none_or(|l| n < l) {
        let Some(item) = stream.next().await else {
            break;
        };
        let (k, v) = item.context("scan failed")?;
        let mut line = Vec::with_capacity(k.len() + v.len() + 2);
        line.extend_from_slice(&k);
        if !a.keys_only {
            line.push(b'\t');
            line.extend_from_slice(&v);
        }
        line.push(b'\n');
        if out.write_all(&line).is_err() {
            // stdout closed (e.g. piped into `head`): stop quietly.
            return Ok(ExitCode::SUCCESS);
        }
        n += 1;
    }
    Ok(ExitCode::SUCCESS)
}
