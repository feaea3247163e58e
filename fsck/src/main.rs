//! fsck.ticketfs: checks a ticketfs image (the checker is `ticketfs::check`).
//!
//! `fsck.ticketfs [-n] [-y] [-f] [-v] [--json] IMAGE`. A dirty log is replayed first — with `-n`
//! into a copy-on-write overlay in memory, so `-n` never writes; the check itself always runs on
//! such an overlay. A mounted image (locked by its daemon) is refused. Exit codes follow fsck(8):
//! 0 clean, 1 errors corrected, 4 errors left uncorrected, 8 operational error, 16 usage error.
//! Repair (`-y`) is not there yet: errors are reported and left (exit 4).

use std::fs::OpenOptions;
use std::io::IsTerminal;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::exit;
use std::sync::Arc;
use ticketfs::check::{check, CheckReport};
use ticketfs::device::{AlignedBuf, Device, OverlayDevice};
use ticketfs::engine::read_superblock;
use ticketfs::format::Superblock;
use ticketfs::image::open_image;
use ticketfs::log::recover;
use ticketfs::mem::MemRes;
use ticketfs::{Engine, EngineOptions};

const USAGE: &str = "usage: fsck.ticketfs [-n] [-y] [-f] [-v] [--json] IMAGE";
/// Memory for the checker's metadata cache (it holds nothing locked: old blocks are evicted).
const CHECK_CACHE_BYTES: u64 = 64 << 20;
/// Problems printed without -v.
const PRINT_MAX: usize = 50;

const EXIT_CLEAN: i32 = 0;
const EXIT_UNCORRECTED: i32 = 4;
const EXIT_OPERATIONAL: i32 = 8;
const EXIT_USAGE: i32 = 16;

fn fail(code: i32, msg: &str) -> ! {
    eprintln!("fsck.ticketfs: {msg}");
    exit(code)
}

fn main() {
    let (mut no_write, mut verbose, mut json, mut image) = (false, false, false, None);
    for a in std::env::args().skip(1) {
        match a.as_str() {
            "-n" => no_write = true,
            // -y and -f: check everything (always done); -a and -p as fsck(8) passes them.
            "-y" | "-f" | "-a" | "-p" => {}
            "-v" => verbose = true,
            "--json" => json = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                exit(0)
            }
            _ if a.starts_with('-') => fail(EXIT_USAGE, &format!("unknown option {a}\n{USAGE}")),
            _ if image.is_some() => fail(EXIT_USAGE, USAGE),
            _ => image = Some(PathBuf::from(a)),
        }
    }
    let Some(path) = image else {
        fail(EXIT_USAGE, USAGE)
    };
    // A mounted image is locked by its daemon.
    let lockf = OpenOptions::new()
        .read(true)
        .open(&path)
        .unwrap_or_else(|e| fail(EXIT_OPERATIONAL, &format!("{}: {e}", path.display())));
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(lockf.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        fail(
            EXIT_OPERATIONAL,
            &format!(
                "{}: mounted (locked by a ticketfs daemon); unmount it first",
                path.display()
            ),
        );
    }
    let dev: Arc<dyn Device> = match open_image(&path) {
        Ok(d) => Arc::new(d),
        Err(e) => fail(EXIT_OPERATIONAL, &format!("{}: {e}", path.display())),
    };
    let sb = match read_superblock(&*dev) {
        Ok(sb) => sb,
        Err(e) => fail(
            EXIT_UNCORRECTED,
            &format!("{}: superblock: {e}", path.display()),
        ),
    };
    let mut sb_problems = Vec::new();
    let mut buf = AlignedBuf::new(sb.geometry.block_size as usize);
    for blkno in [0, sb.geometry.backup_sb_blkno()] {
        let ok = dev.read(blkno, &mut buf).is_ok()
            && Superblock::decode(&buf, blkno)
                .is_ok_and(|s| s.geometry == sb.geometry && s.uuid == sb.uuid);
        if !ok {
            sb_problems.push(format!(
                "superblock copy at block {blkno} is bad or differs"
            ));
        }
    }
    // The log: replayed for real, or with -n into the overlay.
    let overlay = Arc::new(OverlayDevice::new(dev.clone()));
    let target: Arc<dyn Device> = if no_write {
        overlay.clone()
    } else {
        dev.clone()
    };
    let rec = match recover(&*target, &sb) {
        Ok(r) => r,
        Err(e) => fail(EXIT_UNCORRECTED, &format!("{}: log: {e}", path.display())),
    };
    let log_line = if rec.clean {
        "log clean".to_string()
    } else {
        format!(
            "log replayed{}: {} checkpoints, {} blocks",
            if no_write { " in memory (-n)" } else { "" },
            rec.checkpoints_replayed,
            rec.items_replayed
        )
    };
    let eng = match Engine::mount(
        overlay.clone(),
        EngineOptions {
            memres: MemRes::Off,
            mem_budget_bytes: CHECK_CACHE_BYTES,
            ..Default::default()
        },
    ) {
        Ok(e) => e,
        Err(e) => fail(EXIT_UNCORRECTED, &format!("{}: {e}", path.display())),
    };
    let tty = std::io::stderr().is_terminal() && !json;
    let mut progress = |phase: &str, done: u64, total: u64| {
        if tty {
            eprint!("\r\x1b[K{phase}: {done}/{total}");
        }
    };
    let report = match check(&eng, &mut progress) {
        Ok(r) => r,
        Err(e) => fail(EXIT_OPERATIONAL, &format!("{}: {e}", path.display())),
    };
    if tty {
        eprint!("\r\x1b[K");
    }
    eng.crash();
    drop(lockf);
    let errors = sb_problems.len() as u64 + report.problem_count();
    if json {
        let v = serde_json::json!({
            "image": path.display().to_string(),
            "log": log_line,
            "superblock_problems": sb_problems,
            "report": report,
            "exit": if errors > 0 { EXIT_UNCORRECTED } else { EXIT_CLEAN },
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        print_text(&path, &log_line, &sb_problems, &report, verbose);
    }
    exit(if errors > 0 {
        EXIT_UNCORRECTED
    } else {
        EXIT_CLEAN
    })
}

fn print_text(
    path: &std::path::Path,
    log_line: &str,
    sb_problems: &[String],
    r: &CheckReport,
    verbose: bool,
) {
    for p in sb_problems {
        println!("superblock: {p}");
    }
    for p in r
        .problems
        .iter()
        .take(if verbose { usize::MAX } else { PRINT_MAX })
    {
        println!("{}: {}", p.phase, p.what);
    }
    if !verbose && r.problems.len() > PRINT_MAX {
        println!(
            "... and {} more (-v shows all)",
            r.problems.len() - PRINT_MAX
        );
    }
    let errors = sb_problems.len() as u64 + r.problem_count();
    println!(
        "{}: {log_line}; {} inodes ({} directories, {} other), {} blocks used, {} free, {} orphans pending; {}",
        path.display(),
        r.inodes,
        r.directories,
        r.files,
        r.blocks_used,
        r.blocks_free,
        r.pending_orphans,
        if errors == 0 {
            "clean".to_string()
        } else {
            format!("{errors} problems left uncorrected (repair is not implemented yet)")
        }
    );
}
