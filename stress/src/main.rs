//! ticketfs-stress: one stress run against a ticketfs daemon inside a memory cgroup.
//!
//! ```text
//! ticketfs-stress --limit SIZE --workload stress-ng|fsx|storm|fsstress --out DIR
//!                 [--memres on|off] [--seconds N] [--crash-rounds K] [--size SIZE] [--seed N]
//!                 [--fsx-ops N] [--storm-files N] [--fsstress-ops N] [--require]
//! ticketfs-stress report RUNS DOC SVGDIR [COMMAND]
//! ```
//!
//! Makes a fresh image, creates the cgroup with the limit, starts the daemon inside it (it
//! sizes itself from the limit), runs the workload from outside, samples memory every 100 ms
//! into DIR/samples.csv, and writes DIR/result.json and DIR/memory.svg. With `--crash-rounds K`
//! the run is cut into K+1 segments: each of the first K ends with SIGKILL of the daemon at a
//! random moment, a lazy unmount, fsck -n of the image (must be clean) and a remount (log
//! replay). At the end: unmount, fsck -n. `--require` exits 1 unless the acceptance holds: no
//! OOM kill, no ENOMEM or EIO seen by the workload, no hang, cgroup peak within the limit, no
//! overrun, every fsck clean. fsstress comes from `FSSTRESS=` or `XFSTESTS_DIR=` (a built
//! xfstests checkout).

mod cgroup;
mod daemon;
mod monitor;
mod report;
mod signals;
mod svg;
mod workload;

use cgroup::Cgroup;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use daemon::Daemon;
use monitor::Shared;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{exit, Command};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use workload::{Kind, Params, Running};

/// Longest a workload segment may run past its planned time before it is killed.
const SEGMENT_GRACE: Duration = Duration::from_secs(600);
/// A usage error or a run that could not be done (a failed acceptance is 1, with --require).
const EXIT_ERROR: i32 = 2;

fn die(msg: &str) -> ! {
    eprintln!("ticketfs-stress: {msg}");
    exit(EXIT_ERROR)
}

/// A size: bytes, or a number with K, M, G or T (powers of 1024).
fn size(s: &str) -> Result<u64, String> {
    ticketfs::image::parse_size(s)
        .ok_or_else(|| format!("bad size {s:?} (bytes, or a number with K, M, G or T)"))
}

/// Below this a cgroup cannot hold the daemon's base, let alone a budget.
const LIMIT_MIN: u64 = 1 << 20;
/// A run longer than a week is a typo; the segments' deadlines are computed in seconds from it.
const SECONDS_MAX: u64 = 7 * 24 * 3600;
/// Crash rounds: each is a segment of the run, a kill, fsck and a remount.
const CRASH_ROUNDS_MAX: u64 = 1000;

fn limit(s: &str) -> Result<u64, String> {
    let v = size(s)?;
    if v < LIMIT_MIN {
        return Err(format!("{s}: below the smallest limit, 1M"));
    }
    Ok(v)
}

fn workload(s: &str) -> Result<Kind, String> {
    Kind::parse(s).ok_or_else(|| format!("no workload {s:?} (stress-ng, fsx, storm or fsstress)"))
}

fn on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("{s:?}: expected on or off")),
    }
}

/// Runs one stress workload against a ticketfs daemon inside a memory cgroup
///
/// Makes a fresh image, creates a memory cgroup with the limit, starts the daemon inside it
/// (it sizes itself from the limit), runs the workload from outside, samples memory every
/// 100 ms into OUT/samples.csv, and writes OUT/result.json and OUT/memory.svg. With
/// --crash-rounds K the run is cut into K+1 segments, each of the first K ended by SIGKILL of
/// the daemon at a random moment, fsck -n (must be clean) and a remount (log replay). fsstress
/// comes from FSSTRESS= or XFSTESTS_DIR= (a built xfstests checkout); fsx's configuration from
/// FSX_CONFIG= (default tests/config/fsx.toml). Exit status: 0 done (and with --require the
/// acceptance held), 1 with --require when it did not, 2 usage or setup error.
#[derive(Parser, Debug)]
#[command(
    name = "ticketfs-stress",
    bin_name = "ticketfs-stress",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    disable_help_subcommand = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Sub>,
    /// The memory cgroup's limit (K, M, G, T), at least 1M.
    #[arg(long, value_name = "SIZE", value_parser = limit, required = true)]
    limit: Option<u64>,
    /// What to run: stress-ng, fsx, storm (16 processes creating, stating and unlinking files) or
    /// fsstress.
    #[arg(long, value_name = "WORKLOAD", value_parser = workload, required = true)]
    workload: Option<Kind>,
    /// Directory for samples.csv, result.json, memory.svg and the run's work files.
    #[arg(long, value_name = "DIR", required = true)]
    out: Option<PathBuf>,
    /// Memory reservations in the daemon (-o memres=).
    #[arg(long, value_name = "on|off", value_parser = on_off, default_value = "on", action = clap::ArgAction::Set)]
    memres: bool,
    /// How long the workload runs, in seconds (at most a week).
    #[arg(long, value_name = "N", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=SECONDS_MAX))]
    seconds: u64,
    /// Kill the daemon K times at random moments, check and remount after each (at most
    /// 1000).
    #[arg(long, value_name = "K", default_value_t = 0,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=CRASH_ROUNDS_MAX))]
    crash_rounds: usize,
    /// Size of the image.
    #[arg(long, value_name = "SIZE", value_parser = size, default_value = "8G")]
    size: u64,
    /// Seed of the crash moments and the workloads' random choices.
    #[arg(long, value_name = "N", default_value_t = 1)]
    seed: u64,
    /// Operations of fsx per segment.
    #[arg(long, value_name = "N", default_value_t = 3000)]
    fsx_ops: u64,
    /// Files each storm process creates, stats and unlinks.
    #[arg(long, value_name = "N", default_value_t = 50_000)]
    storm_files: u64,
    /// Operations of fsstress per segment.
    #[arg(long, value_name = "N", default_value_t = 20_000)]
    fsstress_ops: u64,
    /// Exit 1 unless the acceptance holds: no OOM kill, no ENOMEM or EIO seen by the workload,
    /// no hang, the cgroup's peak within the limit, no overrun, every fsck clean.
    #[arg(long)]
    require: bool,
}

#[derive(Subcommand, Debug)]
enum Sub {
    /// Write the table of a directory of runs into a document, with their memory graphs
    Report {
        /// Directory holding one directory per run (each with result.json and memory.svg).
        #[arg(value_name = "RUNS")]
        runs: PathBuf,
        /// Markdown document whose generated table is replaced.
        #[arg(value_name = "DOC")]
        doc: PathBuf,
        /// Directory the graphs are copied into.
        #[arg(value_name = "SVGDIR")]
        svgs: PathBuf,
        /// The command the document names as the one that made the table.
        #[arg(value_name = "COMMAND", default_value = "ticketfs-stress")]
        command: String,
    },
    /// One writer of the storm workload (started by the harness itself)
    #[command(hide = true)]
    StormWorker {
        root: PathBuf,
        id: u64,
        files: u64,
        seconds: u64,
    },
}

struct Opts {
    limit: u64,
    memres: bool,
    kind: Kind,
    out: PathBuf,
    size: u64,
    crash_rounds: usize,
    require: bool,
    p: Params,
}

fn parse() -> Opts {
    ticketfs::cli::manual_page_if_asked(command(), &[], EXIT_ERROR);
    let m = ticketfs::cli::matches(command(), "ticketfs-stress", EXIT_ERROR);
    let cli = Cli::from_arg_matches(&m).unwrap_or_else(|e| die(&e.to_string()));
    match cli.command {
        Some(Sub::StormWorker {
            root,
            id,
            files,
            seconds,
        }) => exit(workload::storm_worker(&root, id, files, seconds)),
        Some(Sub::Report {
            runs,
            doc,
            svgs,
            command,
        }) => match report::report(&runs, &doc, &svgs, &command) {
            Ok(()) => exit(0),
            Err(e) => die(&e),
        },
        None => {}
    }
    let (Some(limit), Some(kind), Some(out)) = (cli.limit, cli.workload, cli.out) else {
        die("--limit, --workload and --out are needed (see --help)")
    };
    let repo = bin_dir().join("../..");
    Opts {
        limit,
        memres: cli.memres,
        kind,
        out,
        size: cli.size,
        crash_rounds: cli.crash_rounds,
        require: cli.require,
        p: Params {
            seconds: cli.seconds,
            seed: cli.seed,
            fsx_ops: cli.fsx_ops,
            storm_files: cli.storm_files,
            fsstress_ops: cli.fsstress_ops,
            fsx_config: std::env::var_os("FSX_CONFIG")
                .map(PathBuf::from)
                .unwrap_or_else(|| repo.join("tests/config/fsx.toml")),
            fsstress: std::env::var_os("FSSTRESS").map(PathBuf::from).or_else(|| {
                std::env::var_os("XFSTESTS_DIR").map(|d| PathBuf::from(d).join("ltp/fsstress"))
            }),
        },
    }
}

fn command() -> clap::Command {
    ticketfs::cli::with_version(Cli::command())
}

fn bin_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_default()
}

/// How long fsck waits after a crash for the image to be let go: the workload's processes
/// (stress-ng's stressors outlive its killed parent) keep files open on the lazily unmounted
/// dead mount, so the kernel holds its loop device and fsck refuses the image as in use.
const CRASH_RELEASE_WAIT: Duration = Duration::from_secs(30);

/// fsck -n after a crash, once nothing holds the image any more (`CRASH_RELEASE_WAIT`).
fn fsck_after_crash(image: &Path) -> Option<String> {
    let start = Instant::now();
    loop {
        match fsck(image) {
            Some(bad) if bad.contains("in use") && start.elapsed() < CRASH_RELEASE_WAIT => {
                std::thread::sleep(Duration::from_millis(100));
            }
            r => return r,
        }
    }
}

/// fsck -n on the image: None if clean, else its output.
fn fsck(image: &Path) -> Option<String> {
    let out = Command::new(bin_dir().join("fsck-ticketfs"))
        .arg("-n")
        .arg(image)
        .output();
    match out {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "exit {}: {}",
            o.status,
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .chain(String::from_utf8_lossy(&o.stderr).lines())
                .take(10)
                .collect::<Vec<_>>()
                .join(" | ")
        )),
        Err(e) => Some(e.to_string()),
    }
}

/// A small xorshift for the crash moments (fixed by --seed).
fn next_rand(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn main() {
    let o = parse();
    if let Err(e) = signals::install() {
        die(&e);
    }
    let r = run(&o);
    if let Some(sig) = signals::caught() {
        // Everything that lived in `run` is gone by now: the mount too, so the image can go.
        let _ = std::fs::remove_dir_all(o.out.join("work"));
        eprintln!(
            "ticketfs-stress: ended by signal {sig}; daemon, mount, cgroup and image removed"
        );
        exit(128 + sig);
    }
    match r {
        Ok(ok) => exit(if ok || !o.require { 0 } else { 1 }),
        Err(e) => die(&e),
    }
}

fn run(o: &Opts) -> Result<bool, String> {
    std::fs::create_dir_all(&o.out).map_err(|e| format!("{}: {e}", o.out.display()))?;
    let work = o.out.join("work");
    let mnt = work.join("mnt");
    std::fs::create_dir_all(&mnt).map_err(|e| e.to_string())?;
    let image = work.join("image");
    let _ = std::fs::remove_file(&image);
    let st = Command::new(bin_dir().join("mkfs-ticketfs"))
        .arg("-s")
        .arg(o.size.to_string())
        .arg(&image)
        .output()
        .map_err(|e| format!("mkfs: {e}"))?;
    if !st.status.success() {
        return Err(String::from_utf8_lossy(&st.stderr).trim_end().to_string());
    }
    let name = format!("ticketfs-stress-{}", std::process::id());
    let cg = Arc::new(Cgroup::create(&name, o.limit)?);
    let opts = format!(
        "memres={},overrun=warn",
        if o.memres { "on" } else { "off" }
    );
    let daemon_log = o.out.join("daemon.log");
    let bin = bin_dir().join("ticketfs");
    let shared = Arc::new(Shared {
        samples: Mutex::new(Vec::new()),
        stop: false.into(),
        busy: false.into(),
        hang: false.into(),
        pid: 0.into(),
        ops_before: Mutex::new((0, 0)),
    });
    let mut d = Some(Daemon::start(&bin, &image, &mnt, &opts, &cg, &daemon_log)?);
    shared
        .pid
        .store(d.as_ref().map_or(0, Daemon::pid), Ordering::Relaxed);
    let mon = monitor::start(cg.clone(), image.clone(), o.out.clone(), shared.clone());
    // Declared after `cg` and `d`, dropped before them: the monitor stops (and lets go of its
    // handle on the cgroup) before the daemon is killed and the cgroup removed, on every return.
    let mon = monitor::Stopper::new(mon, shared.clone());
    let t0 = Instant::now();
    let mut rng = o.p.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut failed: Vec<String> = Vec::new();
    let mut fscks: Vec<String> = Vec::new();
    let mut crashes: Vec<f64> = Vec::new();
    let mut daemon_problems: Vec<String> = Vec::new();
    let segments = o.crash_rounds + 1;
    let seg_secs = (o.p.seconds / segments as u64).max(5);
    for seg in 0..segments {
        let crash = seg < o.crash_rounds;
        let p = Params {
            seconds: seg_secs,
            seed: o.p.seed + seg as u64,
            ..o.p.clone()
        };
        shared.busy.store(true, Ordering::Relaxed);
        let mut w = Running::start(o.kind, &p, &mnt, &o.out, seg)?;
        let interrupted = |sig: i32| Err(format!("ended by signal {sig}"));
        if crash {
            // A random moment within the segment, then SIGKILL.
            let at = Duration::from_millis(2000 + next_rand(&mut rng) % (seg_secs * 1000 - 2000));
            let start = Instant::now();
            while start.elapsed() < at
                && !w.done()
                && !shared.hang.load(Ordering::Relaxed)
                && signals::caught().is_none()
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            if let Some(sig) = signals::caught() {
                return interrupted(sig);
            }
            let before = shared
                .samples
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .last()
                .map_or((0, 0), |s| (s.ops, s.waits));
            *shared.ops_before.lock().unwrap_or_else(|e| e.into_inner()) = before;
            shared.pid.store(0, Ordering::Relaxed);
            crashes.push(t0.elapsed().as_secs_f64());
            if let Some(dm) = d.take() {
                dm.kill();
            }
            // The workload saw the mount die: what it reports now is not counted.
            w.kill();
            let _ = w.finish(Duration::from_secs(30));
            shared.busy.store(false, Ordering::Relaxed);
            if let Some(bad) = fsck_after_crash(&image) {
                fscks.push(format!("after crash {}: {bad}", seg + 1));
            }
            d = Some(Daemon::start(&bin, &image, &mnt, &opts, &cg, &daemon_log)?);
            shared
                .pid
                .store(d.as_ref().map_or(0, Daemon::pid), Ordering::Relaxed);
        } else {
            let limit = Duration::from_secs(seg_secs) + SEGMENT_GRACE;
            let start = Instant::now();
            while !w.done()
                && start.elapsed() < limit
                && !shared.hang.load(Ordering::Relaxed)
                && signals::caught().is_none()
            {
                std::thread::sleep(Duration::from_millis(100));
            }
            if let Some(sig) = signals::caught() {
                return interrupted(sig);
            }
            let out = w.finish(Duration::from_secs(1));
            shared.busy.store(false, Ordering::Relaxed);
            for (k, v) in out.errors {
                *errors.entry(k).or_insert(0) += v;
            }
            failed.extend(out.failed);
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    std::thread::sleep(monitor::SAMPLE_INTERVAL * 2);
    mon.stop();
    if let Some(dm) = d.take() {
        if let Err(e) = dm.stop() {
            daemon_problems.push(e);
        }
    }
    if let Some(bad) = fsck(&image) {
        fscks.push(format!("at the end: {bad}"));
    }
    let samples = shared
        .samples
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let peak = cg
        .peak()
        .max(samples.iter().map(|s| s.peak).max().unwrap_or(0));
    let no_cache_peak = samples.iter().map(|s| s.no_cache).max().unwrap_or(0);
    let oom = cg.oom_kills();
    let overruns = samples.iter().map(|s| s.overruns).max().unwrap_or(0);
    let waiters_max = samples.iter().map(|s| s.waiters).max().unwrap_or(0);
    let waits = samples.last().map_or(0, |s| s.waits);
    let ops = samples.last().map_or(0, |s| s.ops);
    let hang = shared.hang.load(Ordering::Relaxed);
    let budget = samples.iter().find(|s| s.up).map_or(0, |s| s.budget);
    let base = samples.iter().find(|s| s.up).map_or(0, |s| s.base);
    let bad_errnos: u64 = ["ENOMEM", "EIO"]
        .iter()
        .map(|k| errors.get(*k).copied().unwrap_or(0))
        .sum();
    let ok = oom == 0
        && bad_errnos == 0
        && !hang
        && peak <= o.limit
        && overruns == 0
        && fscks.is_empty()
        && daemon_problems.is_empty();
    let title = format!(
        "{} under {} MiB, memres={}{}",
        o.kind.name(),
        o.limit >> 20,
        if o.memres { "on" } else { "off" },
        if o.crash_rounds > 0 {
            format!(", {} crash rounds", o.crash_rounds)
        } else {
            String::new()
        }
    );
    let mut csv = String::from(monitor::CSV_HEADER);
    csv.push('\n');
    for s in &samples {
        csv.push_str(&s.csv());
        csv.push('\n');
    }
    let write = |name: &str, text: &str| {
        let p = o.out.join(name);
        std::fs::write(&p, text).map_err(|e| format!("{}: {e}", p.display()))
    };
    write("samples.csv", &csv)?;
    write(
        "memory.svg",
        &svg::render(&title, &samples, o.limit, &crashes),
    )?;
    let result = serde_json::json!({
        "workload": o.kind.name(),
        // Which build ran (set by scripts/stress-matrix.sh), so a table never mixes unnoticed.
        "commit": std::env::var("TICKETFS_COMMIT").unwrap_or_default(),
        "limit_bytes": o.limit,
        "memres": o.memres,
        "cgroup": format!("{:?}", cg.version),
        "seconds": elapsed,
        "ops_completed": ops,
        "ops_per_second": ops as f64 / elapsed.max(0.001),
        "oom_kills": oom,
        "errors_by_errno": errors,
        "failed_processes": failed,
        "hang": hang,
        "cgroup_peak_bytes": peak,
        "peak_without_page_cache_bytes": no_cache_peak,
        "budget_bytes": budget,
        "base_bytes": base,
        "max_waiters": waiters_max,
        "reservation_waits": waits,
        "overruns": overruns,
        "crash_rounds": o.crash_rounds,
        "fsck_problems": fscks,
        "daemon_problems": daemon_problems,
        "acceptance": ok,
    });
    write(
        "result.json",
        &serde_json::to_string_pretty(&result).unwrap_or_default(),
    )?;
    let summary = format!(
        "{title}: {} ops in {elapsed:.0} s ({:.0}/s), OOM kills {oom}, errors {errors:?}, hang {hang}, peak {:.2} MiB of {:.0} ({:.2} without page cache), overruns {overruns}, fsck {}, {}",
        ops,
        ops as f64 / elapsed.max(0.001),
        peak as f64 / (1u64 << 20) as f64,
        o.limit as f64 / (1u64 << 20) as f64,
        no_cache_peak as f64 / (1u64 << 20) as f64,
        if fscks.is_empty() { "clean".to_string() } else { fscks.join("; ") },
        if ok { "acceptance holds" } else { "ACCEPTANCE FAILS" }
    );
    ticketfs::cli::print_or_exit("ticketfs-stress", &(summary + "\n"), EXIT_ERROR);
    drop(cg);
    let _ = std::fs::remove_dir_all(&work);
    Ok(ok)
}
