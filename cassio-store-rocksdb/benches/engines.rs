//! Side-by-side storage engine benchmark: the same workloads on the native
//! LSM, RocksDB and sled, one table at the end.
//!
//! ```text
//! cargo bench -p cassio-store-rocksdb --bench engines -- [--keys 1000000] [--value-bytes 100] ...
//! ```
//!
//! Each engine runs in its own child process (this binary re-executed with
//! `--child ENGINE`), so its peak RSS (`VmHWM` from `/proc/self/status`) is
//! its own and one engine's caches cannot warm or crowd another's. Every
//! engine gets `SyncPolicy::Never`: the runs compare the engines, not the
//! disk's fsync latency. All workloads are single-threaded.
//!
//! Run without `--bench` (as `cargo test --benches` does) it does a tiny
//! smoke run so the harness itself stays tested.

use cassio_core::{NodeId, Store, Timestamp, Versioned};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Zipf};
use std::ops::Bound;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

const ENGINES: [&str; 3] = ["native", "rocksdb", "sled"];
const WORKLOADS: [&str; 5] = [
    "random fill",
    "random read (present)",
    "random read (missing)",
    "50/50 read/update, zipfian",
    "range scan",
];

#[derive(Parser, Debug, Clone)]
#[command(about = "Cassio storage engines side by side")]
struct Args {
    /// Keys loaded by the fill.
    #[arg(long, default_value_t = 1_000_000)]
    keys: u64,
    /// Key length in bytes (at least 8).
    #[arg(long, default_value_t = 16)]
    key_bytes: usize,
    /// Value length in bytes.
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
    /// Operations in each read and mixed workload.
    #[arg(long, default_value_t = 200_000)]
    ops: u64,
    /// Number of range scans.
    #[arg(long, default_value_t = 2_000)]
    scans: u64,
    /// Keys per range scan.
    #[arg(long, default_value_t = 1_000)]
    scan_len: usize,
    /// Zipf exponent of the mixed workload (YCSB uses 0.99).
    #[arg(long, default_value_t = 0.99)]
    zipf: f64,
    /// Comma-separated engines to run, in order.
    #[arg(long, default_value = "native,rocksdb,sled")]
    engines: String,
    /// Directory under which each engine gets a fresh temporary directory.
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Internal: run one engine and print its figures.
    #[arg(long, hide = true)]
    child: Option<String>,
    /// Passed by `cargo bench`; without it a tiny smoke run is done.
    #[arg(long, hide = true)]
    bench: bool,
}

/// What one child measured.
#[derive(Debug, Clone, Default)]
struct Figures {
    ops_per_sec: [f64; 5],
    disk_bytes: u64,
    peak_rss_bytes: u64,
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if let Some(engine) = args.child.clone() {
        let f = run_child(&engine, &args)?;
        let ops: Vec<String> = f.ops_per_sec.iter().map(|x| format!("{x:.1}")).collect();
        println!(
            "RESULT {} {} {}",
            ops.join(" "),
            f.disk_bytes,
            f.peak_rss_bytes
        );
        return Ok(());
    }
    if !args.bench {
        args.keys = args.keys.min(2_000);
        args.ops = args.ops.min(2_000);
        args.scans = args.scans.min(20);
        args.scan_len = args.scan_len.min(100);
    }
    anyhow::ensure!(args.key_bytes >= 8, "--key-bytes must be at least 8");
    let engines: Vec<String> = args
        .engines
        .split(',')
        .map(|s| s.trim().to_string())
        .collect();
    for e in &engines {
        anyhow::ensure!(ENGINES.contains(&e.as_str()), "unknown engine {e}");
    }
    eprintln!(
        "{} keys of {} B, values of {} B; {} ops per point workload, {} scans of {} keys; zipf s={}; engines {}",
        args.keys, args.key_bytes, args.value_bytes, args.ops, args.scans, args.scan_len, args.zipf,
        engines.join(", ")
    );
    let exe = std::env::current_exe()?;
    let mut results = Vec::new();
    for engine in &engines {
        let mut cmd = Command::new(&exe);
        cmd.args([
            "--child",
            engine,
            "--keys",
            &args.keys.to_string(),
            "--key-bytes",
            &args.key_bytes.to_string(),
            "--value-bytes",
            &args.value_bytes.to_string(),
            "--ops",
            &args.ops.to_string(),
            "--scans",
            &args.scans.to_string(),
            "--scan-len",
            &args.scan_len.to_string(),
            "--zipf",
            &args.zipf.to_string(),
            "--seed",
            &args.seed.to_string(),
        ]);
        if let Some(d) = &args.dir {
            cmd.arg("--dir").arg(d);
        }
        let out = cmd.stderr(Stdio::inherit()).output()?;
        anyhow::ensure!(out.status.success(), "{engine} run failed: {}", out.status);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout
            .lines()
            .find_map(|l| l.strip_prefix("RESULT "))
            .ok_or_else(|| anyhow::anyhow!("{engine} printed no RESULT line"))?;
        results.push((engine.clone(), parse_figures(line)?));
    }
    print_table(&results);
    Ok(())
}

fn parse_figures(line: &str) -> anyhow::Result<Figures> {
    let nums: Vec<&str> = line.split_whitespace().collect();
    anyhow::ensure!(nums.len() == 7, "malformed RESULT line: {line}");
    let mut f = Figures::default();
    for (i, n) in nums[..5].iter().enumerate() {
        f.ops_per_sec[i] = n.parse()?;
    }
    f.disk_bytes = nums[5].parse()?;
    f.peak_rss_bytes = nums[6].parse()?;
    Ok(f)
}

fn print_table(results: &[(String, Figures)]) {
    let base = results
        .iter()
        .find(|(e, _)| e == "rocksdb")
        .map(|(_, f)| f.clone());
    let ratio = |x: f64, b: Option<f64>| match b {
        Some(b) if b > 0.0 => format!(" ({:.2}x)", x / b),
        _ => String::new(),
    };
    let mut header = String::from("| workload |");
    let mut rule = String::from("|---|");
    for (e, _) in results {
        header.push_str(&format!(" {e} |"));
        rule.push_str("---:|");
    }
    println!("\nops/s per workload (ratio to RocksDB in parentheses)\n");
    println!("{header}\n{rule}");
    for (w, name) in WORKLOADS.iter().enumerate() {
        let mut row = format!("| {name} |");
        for (_, f) in results {
            let b = base.as_ref().map(|b| b.ops_per_sec[w]);
            row.push_str(&format!(
                " {}{} |",
                thousands(f.ops_per_sec[w]),
                ratio(f.ops_per_sec[w], b)
            ));
        }
        println!("{row}");
    }
    let mut disk = String::from("| bytes on disk after load |");
    let mut rss = String::from("| peak RSS |");
    for (_, f) in results {
        let b = base.as_ref().map(|b| b.disk_bytes as f64);
        disk.push_str(&format!(
            " {}{} |",
            mib(f.disk_bytes),
            ratio(f.disk_bytes as f64, b)
        ));
        let b = base.as_ref().map(|b| b.peak_rss_bytes as f64);
        rss.push_str(&format!(
            " {}{} |",
            mib(f.peak_rss_bytes),
            ratio(f.peak_rss_bytes as f64, b)
        ));
    }
    println!("{disk}\n{rss}");
}

fn thousands(x: f64) -> String {
    let n = x.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

/// A bijection on u64 (the splitmix64 finaliser): distinct indexes give
/// distinct, randomly ordered keys.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The key of index `i`; indexes `0..keys` are loaded, `keys..2*keys` never are.
fn key(i: u64, len: usize, buf: &mut Vec<u8>) {
    buf.clear();
    let mut x = mix(i);
    buf.extend_from_slice(&x.to_be_bytes());
    while buf.len() < len {
        x = mix(x);
        buf.extend_from_slice(&x.to_be_bytes());
    }
    buf.truncate(len);
}

fn open(engine: &str, dir: &Path) -> anyhow::Result<Box<dyn Store>> {
    Ok(match engine {
        "rocksdb" => Box::new(cassio_store_rocksdb::RocksStore::open(
            dir,
            cassio_store_rocksdb::RocksOptions {
                sync: cassio_store_rocksdb::SyncPolicy::Never,
                ..Default::default()
            },
        )?),
        "sled" => Box::new(cassio_store_rocksdb::SledStore::open(
            dir,
            cassio_store_rocksdb::SledOptions {
                sync: cassio_store_rocksdb::SyncPolicy::Never,
                ..Default::default()
            },
        )?),
        "native" => Box::new(cassio_store_native::NativeStore::open(
            dir,
            cassio_store_native::NativeOptions {
                sync: cassio_store_native::SyncPolicy::Never,
                ..Default::default()
            },
        )?),
        other => anyhow::bail!("unknown engine {other}"),
    })
}

fn dir_bytes(p: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(p)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_bytes(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn rate(ops: u64, started: Instant) -> f64 {
    ops as f64 / started.elapsed().as_secs_f64().max(1e-9)
}

fn run_child(engine: &str, args: &Args) -> anyhow::Result<Figures> {
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&base)?;
    let tmp = tempfile::Builder::new()
        .prefix(&format!("cassio-bench-{engine}-"))
        .tempdir_in(&base)?;
    let store = open(engine, tmp.path())?;
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let t0 = SystemTime::now().duration_since(UNIX_EPOCH)?.as_micros() as u64;
    let node = NodeId(1);
    let mut f = Figures::default();
    let mut k = Vec::with_capacity(args.key_bytes);
    let mut value = vec![0u8; args.value_bytes];

    // 1. Random fill, with a progress bar.
    let bar = ProgressBar::new(args.keys).with_message(format!("{engine}: loading"));
    bar.set_style(
        ProgressStyle::with_template("{msg} {wide_bar} {pos}/{len} keys ({per_sec}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    for i in 0..args.keys {
        key(i, args.key_bytes, &mut k);
        rng.fill_bytes(&mut value);
        store.apply(
            &k,
            &Versioned::value(Timestamp::new(t0 + i, 0, node), value.clone()),
        )?;
        if i % 4096 == 0 {
            bar.set_position(i);
        }
    }
    f.ops_per_sec[0] = rate(args.keys, started);
    bar.finish_and_clear();
    store.flush()?;
    store.sync()?;
    f.disk_bytes = dir_bytes(tmp.path())?;
    eprintln!(
        "{engine}: loaded at {} ops/s, {} on disk",
        thousands(f.ops_per_sec[0]),
        mib(f.disk_bytes)
    );

    // 2. Point reads of keys that are there.
    let started = Instant::now();
    let mut found = 0u64;
    for _ in 0..args.ops {
        key(rng.random_range(0..args.keys), args.key_bytes, &mut k);
        found += u64::from(store.get(&k)?.is_some());
    }
    f.ops_per_sec[1] = rate(args.ops, started);
    anyhow::ensure!(
        found == args.ops,
        "{engine}: {} present keys not found",
        args.ops - found
    );

    // 3. Point reads of keys that never were (bloom filters earn their keep here).
    let started = Instant::now();
    for _ in 0..args.ops {
        key(
            args.keys + rng.random_range(0..args.keys),
            args.key_bytes,
            &mut k,
        );
        anyhow::ensure!(
            store.get(&k)?.is_none(),
            "{engine}: a missing key was found"
        );
    }
    f.ops_per_sec[2] = rate(args.ops, started);

    // 4. 50/50 read/update; the key's zipf rank is scattered over the key
    // space so the hot keys are not neighbours.
    let zipf = Zipf::new(args.keys as f64, args.zipf)?;
    let started = Instant::now();
    for op in 0..args.ops {
        let rank = zipf.sample(&mut rng) as u64;
        key(mix(rank) % args.keys, args.key_bytes, &mut k);
        if rng.random::<bool>() {
            store.get(&k)?;
        } else {
            rng.fill_bytes(&mut value);
            let ts = Timestamp::new(t0 + args.keys + op, 0, node);
            store.apply(&k, &Versioned::value(ts, value.clone()))?;
        }
    }
    f.ops_per_sec[3] = rate(args.ops, started);

    // 5. Range scans from a random present key.
    let started = Instant::now();
    let mut scanned = 0usize;
    for _ in 0..args.scans {
        key(rng.random_range(0..args.keys), args.key_bytes, &mut k);
        scanned += store
            .range(Bound::Included(&k), Bound::Unbounded, args.scan_len)?
            .len();
    }
    f.ops_per_sec[4] = rate(args.scans, started);
    anyhow::ensure!(
        args.scans == 0 || scanned > 0,
        "{engine}: scans returned nothing"
    );

    drop(store);
    f.peak_rss_bytes = peak_rss_bytes();
    Ok(f)
}
