//! `check-history FILE`: judges a history recorded against a real cluster
//! (JSON lines, one operation each; see `conformance::real_history`) and
//! prints operation counts and every violation. Exit code 0 when none, 1
//! when some, 2 when the file cannot be read.

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(path), None) = (args.next(), args.next()) else {
        eprintln!("usage: check-history HISTORY.jsonl");
        return ExitCode::from(2);
    };
    let report = match conformance::real_history::check_history_file(path.as_ref()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("check-history: {e}");
            return ExitCode::from(2);
        }
    };
    println!("{} operations", report.operations);
    for (kind, (ok, failed)) in &report.by_kind {
        println!("  {kind}: {ok} ok, {failed} failed");
    }
    for v in &report.violations {
        println!("VIOLATION {v}");
    }
    println!(
        "{} violations {:?}",
        report.violations.len(),
        report.violation_counts()
    );
    if report.violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
