//! fsck.ticketfs: checks a ticketfs image (the checker is `ticketfs::check`).
//!
//! `fsck.ticketfs [-n] [-y] [-f] [-v] [--json] [-b BLOCK] IMAGE`. A dirty log is replayed first — with `-n`
//! into a copy-on-write overlay in memory, so `-n` never writes; the check itself always runs on
//! such an overlay. A mounted image (locked by its daemon) is refused. Exit codes follow fsck(8):
//! 0 clean, 1 errors corrected, 4 errors left uncorrected, 8 operational error, 16 usage error.
//! `-y` (or -a, -p) repairs (`ticketfs::repair`), then checks again: exit 1 when that check is
//! clean. Without -y nothing is repaired; without -n a clean image's dirty log is replayed.
//! The status is the filesystem's even when the report cannot be written (stdout full or
//! closed): that failure is a line on stderr, as e2fsck's status ignores its stdout.
//! The superblock is the copy the rest of the filesystem agrees with (`ticketfs::sbselect`), or
//! with `-b BLOCK` the copy at that block (0, or the backup in the last block); `-y` rewrites the
//! other copy from it.

use clap::{CommandFactory, FromArgMatches, Parser};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::exit;
use std::sync::Arc;
use ticketfs::check::{check, CheckReport};
use ticketfs::device::{AlignedBuf, Device, OverlayDevice};
use ticketfs::format::Superblock;
use ticketfs::image::{open_image_buffered, open_image_read_only};
use ticketfs::log::{recover, Damage};
use ticketfs::mem::MemRes;
use ticketfs::progress::{Bar, Show};
use ticketfs::repair::RepairReport;
use ticketfs::sbselect::{candidate_blocks, choose, SbCopy};
use ticketfs::{Engine, EngineOptions};

/// Memory for the checker's metadata cache: it holds nothing locked, reads each block about once,
/// and the page cache (the image is opened buffered) serves what it evicts.
const CHECK_CACHE_BYTES: u64 = 8 << 20;
/// Problems printed without -v.
const PRINT_MAX: usize = 50;

const EXIT_CLEAN: i32 = 0;
const EXIT_CORRECTED: i32 = 1;
const EXIT_UNCORRECTED: i32 = 4;
const EXIT_OPERATIONAL: i32 = 8;
const EXIT_USAGE: i32 = 16;

fn fail(code: i32, msg: &str) -> ! {
    eprintln!("fsck.ticketfs: {msg}");
    exit(code)
}

/// Writes `sb` to both of its places on `dev`.
fn write_copies(dev: &dyn Device, sb: &Superblock) -> Result<(), String> {
    let mut buf = AlignedBuf::new(sb.geometry.block_size as usize);
    for blkno in [0, sb.geometry.backup_sb_blkno()] {
        sb.encode(&mut buf, blkno);
        dev.write(blkno, &buf)
            .map_err(|e| format!("superblock copy at block {blkno}: {e}"))?;
    }
    dev.flush().map_err(|e| format!("flush: {e}"))
}

/// The check of one state of the image, with superblock `sb`: replays the log into an overlay
/// of `dev` and checks what results. Nothing is written to `dev`.
fn check_overlay(
    dev: &Arc<dyn Device>,
    sb: &Superblock,
    path: &std::path::Path,
    show: Show,
) -> (CheckReport, Option<String>) {
    let overlay = Arc::new(OverlayDevice::new(dev.clone()));
    // Both copies as the chosen one, in the overlay only: the mount below reads them.
    if let Err(e) = write_copies(&*overlay, sb) {
        fail(EXIT_OPERATIONAL, &format!("{}: {e}", path.display()));
    }
    let sb = sb.clone();
    let damage = match recover(&*overlay, &sb, Damage::Accept) {
        Ok(r) => r.damaged.map(|e| e.to_string()),
        Err(e) => fail(EXIT_UNCORRECTED, &format!("{}: log: {e}", path.display())),
    };
    let eng = match Engine::mount(
        overlay,
        EngineOptions {
            memres: MemRes::Off,
            mem_budget_bytes: CHECK_CACHE_BYTES,
            ..Default::default()
        },
    ) {
        Ok(e) => e,
        Err(e) => fail(EXIT_UNCORRECTED, &format!("{}: {e}", path.display())),
    };
    let mut bar = Bar::new(show);
    let checked = check(&eng, &mut |p, d, t| bar.update(p, d, t));
    // The bar's line is cleared before anything else is printed, an error too.
    let report = match checked {
        Ok(r) => {
            bar.finish();
            r
        }
        Err(e) => {
            drop(bar);
            fail(EXIT_OPERATIONAL, &format!("{}: {e}", path.display()))
        }
    };
    eng.crash();
    (report, damage)
}

/// The superblock to use (`which`) and its copies that are bad or differ from it.
fn superblock(
    dev: &dyn Device,
    which: SbCopy,
    path: &std::path::Path,
) -> (Superblock, Vec<String>) {
    match choose(dev, which) {
        Ok(c) => {
            let problems = c
                .others
                .iter()
                .map(|(b, why)| {
                    format!(
                        "copy at block {b}: {why} (using the copy at block {})",
                        c.blkno
                    )
                })
                .collect();
            (c.sb, problems)
        }
        Err(e) => fail(
            EXIT_UNCORRECTED,
            &format!("{}: superblock: {e}", path.display()),
        ),
    }
}

/// Checks a ticketfs filesystem and, with -y, repairs it
///
/// A dirty log is replayed first (with -n into a copy in memory, so -n never writes); a mounted
/// image is refused. The superblock is the copy the rest of the filesystem agrees with, or the
/// one -b names. Exit status as fsck(8): 0 clean, 1 errors corrected, 4 errors left
/// uncorrected, 8 operational error, 16 usage error.
#[derive(Parser, Debug)]
#[command(
    name = "fsck.ticketfs",
    bin_name = "fsck.ticketfs",
    override_usage = "fsck.ticketfs [-n | -y] [-f] [-v] [--json] [--progress] [-b BLOCK] IMAGE"
)]
struct Cli {
    /// Check only; write nothing.
    #[arg(short = 'n', conflicts_with = "repair")]
    no_write: bool,
    /// Repair what the check finds, then check again (-a and -p, fsck(8)'s automatic repair,
    /// do the same).
    #[arg(short = 'y', short_aliases = ['a', 'p'])]
    repair: bool,
    /// Check even a clean filesystem (always done).
    #[arg(short = 'f')]
    force: bool,
    /// Print every problem (without it, the first 50).
    #[arg(short = 'v')]
    verbose: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Show the phases' progress on stderr even when it is not a terminal (a line per phase),
    /// and from the start (on a terminal it appears once the check has taken a second).
    #[arg(long)]
    progress: bool,
    /// Use the superblock copy at BLOCK (0, or the backup in the last block); -y rewrites the
    /// other copy from it.
    #[arg(short = 'b', value_name = "BLOCK")]
    superblock: Option<u64>,
    /// The image file or block device.
    #[arg(value_name = "IMAGE")]
    image: PathBuf,
}

fn command() -> clap::Command {
    ticketfs::cli::with_version(Cli::command())
}

fn main() {
    ticketfs::cli::manual_page_if_asked(command(), &[], EXIT_USAGE);
    let m = ticketfs::cli::matches(command(), "fsck.ticketfs", EXIT_USAGE);
    let cli = Cli::from_arg_matches(&m).unwrap_or_else(|e| fail(EXIT_USAGE, &e.to_string()));
    let (no_write, repair_on, verbose, json) = (cli.no_write, cli.repair, cli.verbose, cli.json);
    let which = cli.superblock.map_or(SbCopy::Auto, SbCopy::Block);
    let path = cli.image;
    // A mounted image is locked by its daemon (and one in the mount table is mounted, even if
    // its daemon died).
    if let Some(m) = ticketfs::stats::mounts_of(&path).first() {
        fail(
            EXIT_OPERATIONAL,
            &format!(
                "{}: mounted on {}; unmount it first",
                path.display(),
                m.point.display()
            ),
        );
    }
    // In use by anyone (`image::claim_exclusive`: a block device the kernel holds, an image
    // file another user's ticketfs serves or that a busy loop device maps) is refused whatever
    // names it, and claimed while fsck works.
    let _claim = match ticketfs::image::claim_exclusive(&path) {
        Ok(c) => c,
        Err(e) => fail(EXIT_OPERATIONAL, &format!("{}: {e}", path.display())),
    };
    let lockf = match ticketfs::rundir::try_lock(&path) {
        Ok(l) => l,
        Err(None) => fail(
            EXIT_OPERATIONAL,
            &format!(
                "{}: mounted (locked by a ticketfs daemon); unmount it first",
                path.display()
            ),
        ),
        // The image itself (it is missing), or the lock file, which the error names.
        Err(Some(e)) => fail(EXIT_OPERATIONAL, &format!("{}: {e}", path.display())),
    };
    // -n never writes: read-only, so a user who may only read the image can check it.
    let opened = if no_write {
        open_image_read_only(&path)
    } else {
        open_image_buffered(&path)
    };
    let dev: Arc<dyn Device> = match opened {
        Ok(d) => Arc::new(d),
        Err(e) => fail(EXIT_OPERATIONAL, &format!("{}: {e}", path.display())),
    };
    // -b names a copy: a block where none can be is a usage error, as e2fsck -b refuses it.
    if let SbCopy::Block(b) = which {
        let copies = candidate_blocks(&*dev);
        if !copies.contains(&b) {
            let list: Vec<String> = copies.iter().map(u64::to_string).collect();
            fail(
                EXIT_USAGE,
                &format!(
                    "-b {b}: no superblock copy can be there (the copies are at blocks {})",
                    list.join(" and ")
                ),
            );
        }
    }
    let (sb, sb_problems) = superblock(&*dev, which, &path);
    // On a terminal, progress unless the report is JSON (read by a program); --progress shows
    // it anywhere.
    let show = match (cli.progress, json) {
        (true, _) => Show::Always,
        (false, false) => Show::Auto,
        (false, true) => Show::Never,
    };

    // The check, always on an overlay: -n and the plain check never write.
    let (report, damage) = check_overlay(&dev, &sb, &path, show);
    let log_problems: Vec<String> = damage.iter().cloned().collect();
    let errors = sb_problems.len() as u64 + log_problems.len() as u64 + report.problem_count();
    let mut repaired: Option<(RepairReport, CheckReport)> = None;
    if repair_on && errors > 0 {
        // The superblock copies first (everything after reads them), then the log for real
        // (checkpoints up to any damage), then the repair, then a fresh check.
        let mut sb_fixed = Vec::new();
        if !sb_problems.is_empty() {
            if let Err(e) = write_copies(&*dev, &sb) {
                fail(EXIT_UNCORRECTED, &format!("{}: {e}", path.display()));
            }
            sb_fixed = sb_problems
                .iter()
                .map(|p| format!("superblock {p}: rewritten"))
                .collect();
        }
        if let Err(e) = recover(&*dev, &sb, Damage::Accept) {
            fail(EXIT_UNCORRECTED, &format!("{}: log: {e}", path.display()));
        }
        let mut bar = Bar::new(show);
        let repaired_now =
            ticketfs::repair::repair(dev.clone(), &mut |p, d, t| bar.update(p, d, t));
        if repaired_now.is_ok() {
            bar.finish();
        }
        drop(bar);
        let rep = match repaired_now {
            Ok(mut r) => {
                for (i, l) in sb_fixed.into_iter().enumerate() {
                    r.fixed.insert(i, l);
                }
                if let Some(d) = &damage {
                    r.fixed.insert(
                        0,
                        format!("log: replayed up to the damage, the rest discarded ({d})"),
                    );
                }
                r
            }
            Err(e) => fail(
                EXIT_UNCORRECTED,
                &format!("{}: repair: {e}", path.display()),
            ),
        };
        // The copies as the repair left them (it may have raised the format version).
        let (sb_after, _) = superblock(&*dev, which, &path);
        let (after, damage_after) = check_overlay(&dev, &sb_after, &path, show);
        if let Some(d) = damage_after {
            fail(
                EXIT_UNCORRECTED,
                &format!("{}: log still damaged after repair: {d}", path.display()),
            );
        }
        repaired = Some((rep, after));
    } else if !no_write && errors == 0 {
        // A clean check of a dirty log: replay it for real, as a mount would.
        if let Err(e) = recover(&*dev, &sb, Damage::Refuse) {
            fail(EXIT_UNCORRECTED, &format!("{}: log: {e}", path.display()));
        }
    }
    drop(lockf);
    let left = match &repaired {
        Some((_, after)) => after.problem_count() + superblock(&*dev, which, &path).1.len() as u64,
        None => errors,
    };
    let code = match (&repaired, left) {
        (_, n) if n > 0 => EXIT_UNCORRECTED,
        (Some(_), _) => EXIT_CORRECTED,
        (None, _) => EXIT_CLEAN,
    };
    let mut out = String::new();
    if json {
        let v = serde_json::json!({
            "image": path.display().to_string(),
            "superblock_problems": sb_problems,
            "log_problems": log_problems,
            "report": report,
            "repair": repaired.as_ref().map(|(r, _)| r),
            "after_repair": repaired.as_ref().map(|(_, a)| a),
            "exit": code,
        });
        out = serde_json::to_string_pretty(&v).unwrap_or_default() + "\n";
    } else {
        print_text(
            &mut out,
            &path,
            &sb_problems,
            &log_problems,
            &report,
            verbose,
        );
        if let Some((rep, after)) = &repaired {
            print_repair(&mut out, &path, rep, after, verbose);
        }
    }
    // The status is the filesystem's, as e2fsck's: a report nobody can read does not undo a
    // repair nor hide what is left, so its failure is only the line on stderr.
    ticketfs::cli::print_or_warn("fsck.ticketfs", &out);
    exit(code)
}

fn print_repair(
    out: &mut String,
    path: &std::path::Path,
    rep: &RepairReport,
    after: &CheckReport,
    verbose: bool,
) {
    let limit = if verbose { usize::MAX } else { PRINT_MAX };
    for l in rep.fixed.iter().take(limit) {
        let _ = writeln!(out, "fixed: {l}");
    }
    if rep.fixed.len() > limit {
        let _ = writeln!(
            out,
            "... and {} more fixes (-v shows all)",
            rep.fixed.len() - limit
        );
    }
    for l in &rep.failed {
        let _ = writeln!(out, "not fixed: {l}");
    }
    for p in after.problems.iter().take(limit) {
        let _ = writeln!(out, "still: {}: {}", p.phase, p.what);
    }
    let _ = writeln!(
        out,
        "{}: repaired: {} changes; afterwards {} inodes, {} blocks used, {} free; {}",
        path.display(),
        rep.fixed.len(),
        after.inodes,
        after.blocks_used,
        after.blocks_free,
        if after.problem_count() == 0 {
            "clean".to_string()
        } else {
            format!("{} problems left", after.problem_count())
        }
    );
}

fn print_text(
    out: &mut String,
    path: &std::path::Path,
    sb_problems: &[String],
    log_problems: &[String],
    r: &CheckReport,
    verbose: bool,
) {
    for p in sb_problems {
        let _ = writeln!(out, "superblock: {p}");
    }
    for p in log_problems {
        let _ = writeln!(out, "log: {p}");
    }
    for p in r
        .problems
        .iter()
        .take(if verbose { usize::MAX } else { PRINT_MAX })
    {
        let _ = writeln!(out, "{}: {}", p.phase, p.what);
    }
    if !verbose && r.problems.len() > PRINT_MAX {
        let _ = writeln!(
            out,
            "... and {} more (-v shows all)",
            r.problems.len() - PRINT_MAX
        );
    }
    let errors = (sb_problems.len() + log_problems.len()) as u64 + r.problem_count();
    if r.interrupted_xattrs > 0 {
        // Not a problem: each holds blocks its inode owns until the next change of its name.
        let _ = writeln!(
            out,
            "{} attribute changes cut short by a crash (their blocks are freed by the next \
             change of the attribute or the file's removal)",
            r.interrupted_xattrs
        );
    }
    let _ =
        writeln!(out,
        "{}: {} inodes ({} directories, {} other), {} blocks used, {} free, {} orphans pending; {}",
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
            format!("{errors} problems found")
        }
    );
}
