//! `cassio hset|hget|hgetall|hdel` (part of the binary): the cells of a
//! row over the native client protocol, like `cassio set|get|del` for keys.

use crate::{connect, consistency, Failure, Target};
use anyhow::Context;
use clap::Args;
use std::io::Write;
use std::process::ExitCode;

/// `cassio hset ROW COLUMN VALUE`.
#[derive(Args, Debug)]
pub(crate) struct HSetArgs {
    /// The row.
    row: String,
    /// The column.
    column: String,
    /// The value.
    value: String,
    /// Consistency level: one, two, three, quorum, all.
    #[arg(long)]
    consistency: Option<String>,
    #[command(flatten)]
    target: Target,
}

/// `cassio hget ROW COLUMN` and `cassio hdel ROW COLUMN`.
#[derive(Args, Debug)]
pub(crate) struct CellArgs {
    /// The row.
    row: String,
    /// The column.
    column: String,
    /// Consistency level: one, two, three, quorum, all.
    #[arg(long)]
    consistency: Option<String>,
    #[command(flatten)]
    target: Target,
}

/// `cassio hgetall ROW`.
#[derive(Args, Debug)]
pub(crate) struct RowArgs {
    /// The row.
    row: String,
    /// Consistency level: one, two, three, quorum, all.
    #[arg(long)]
    consistency: Option<String>,
    #[command(flatten)]
    target: Target,
}

/// Writes one cell and prints `OK <timestamp>`.
pub(crate) async fn hset(a: HSetArgs) -> Result<ExitCode, Failure> {
    let level = consistency(a.consistency.as_deref())?;
    let client = connect(&a.target).await?;
    let ts = client
        .hset(
            a.row.into_bytes(),
            a.column.into_bytes(),
            a.value.into_bytes(),
            level,
        )
        .await
        .context("hset failed")?;
    println!("OK {ts}");
    Ok(ExitCode::SUCCESS)
}

/// Prints one cell's value, or `(nil)`.
pub(crate) async fn hget(a: CellArgs) -> Result<ExitCode, Failure> {
    let level = consistency(a.consistency.as_deref())?;
    let client = connect(&a.target).await?;
    let v = client
        .hget(a.row.into_bytes(), a.column.into_bytes(), level)
        .await
        .context("hget failed")?;
    let mut out = std::io::stdout().lock();
    let _ = match v {
        Some(v) => out.write_all(&v).and_then(|()| out.write_all(b"\n")),
        None => writeln!(out, "(nil)"),
    };
    Ok(ExitCode::SUCCESS)
}

/// Deletes one cell and prints `OK <timestamp>`.
pub(crate) async fn hdel(a: CellArgs) -> Result<ExitCode, Failure> {
    let level = consistency(a.consistency.as_deref())?;
    let client = connect(&a.target).await?;
    let ts = client
        .hdel(a.row.into_bytes(), a.column.into_bytes(), level)
        .await
        .context("hdel failed")?;
    println!("OK {ts}");
    Ok(ExitCode::SUCCESS)
}

/// Prints a row's live cells, one `column<TAB>value` line each, in column
/// order (nothing for an empty row).
pub(crate) async fn hgetall(a: RowArgs) -> Result<ExitCode, Failure> {
    let level = consistency(a.consistency.as_deref())?;
    let client = connect(&a.target).await?;
    let cells = client
        .hgetall(a.row.into_bytes(), level)
        .await
        .context("hgetall failed")?;
    let mut out = std::io::stdout().lock();
    for (c, v) in cells {
        let _ = out
            .write_all(&c)
            .and_then(|()| out.write_all(b"\t"))
            .and_then(|()| out.write_all(&v))
            .and_then(|()| out.write_all(b"\n"));
    }
    Ok(ExitCode::SUCCESS)
}
