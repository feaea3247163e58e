//! fsck.ticketfs: so far checks both superblocks and the log, and replays a dirty log. The checks
//! of allocation groups, trees, inodes and directories arrive with those structures.
//! Exit codes follow fsck(8): 0 clean, 1 errors corrected, 4 errors left, 8 operational error,
//! 16 usage error.

use std::path::PathBuf;
use std::process::exit;
use std::sync::Arc;
use ticketfs::device::{AlignedBuf, Device};
use ticketfs::engine::read_superblock;
use ticketfs::format::Superblock;
use ticketfs::image::open_image;
use ticketfs::log::recover;

const USAGE: &str = "usage: fsck.ticketfs [-n] [-y] [-f] [-v] IMAGE";

fn main() {
    let mut no_write = false;
    let mut verbose = false;
    let mut image = None;
    for a in std::env::args().skip(1) {
        match a.as_str() {
            "-n" => no_write = true,
            "-y" | "-f" | "-a" | "-p" => {}
            "-v" => verbose = true,
            _ if a.starts_with('-') => {
                eprintln!("fsck.ticketfs: unknown option {a}\n{USAGE}");
                exit(16)
            }
            _ => image = Some(PathBuf::from(a)),
        }
    }
    let Some(path) = image else {
        eprintln!("{USAGE}");
        exit(16)
    };
    let dev: Arc<dyn Device> = match open_image(&path) {
        Ok(d) => Arc::new(d),
        Err(e) => {
            eprintln!("fsck.ticketfs: {e}");
            exit(8)
        }
    };
    let sb = match read_superblock(&*dev) {
        Ok(sb) => sb,
        Err(e) => {
            eprintln!("fsck.ticketfs: superblock: {e}");
            exit(4)
        }
    };
    let mut errors = 0;
    let mut buf = AlignedBuf::new(sb.geometry.block_size as usize);
    for blkno in [0, sb.geometry.backup_sb_blkno()] {
        let ok = dev.read(blkno, &mut buf).is_ok()
            && Superblock::decode(&buf, blkno)
                .is_ok_and(|s| s.geometry == sb.geometry && s.uuid == sb.uuid);
        if !ok {
            eprintln!("fsck.ticketfs: superblock copy at block {blkno} is bad or differs");
            errors += 1;
        }
    }
    if no_write {
        println!(
            "{}: superblocks checked ({} bad); log not replayed (-n)",
            path.display(),
            errors
        );
        exit(if errors > 0 { 4 } else { 0 });
    }
    match recover(&*dev, &sb) {
        Ok(r) => {
            if verbose || !r.clean {
                println!(
                    "{}: log {}: {} checkpoints replayed, {} blocks written, {} already newer",
                    path.display(),
                    if r.clean { "clean" } else { "replayed" },
                    r.checkpoints_replayed,
                    r.items_replayed,
                    r.items_skipped
                );
            }
            println!(
                "{}: clean, {} blocks of {} bytes",
                path.display(),
                sb.geometry.block_count,
                sb.geometry.block_size
            );
            exit(if errors > 0 { 4 } else { 0 })
        }
        Err(e) => {
            eprintln!("fsck.ticketfs: log: {e}");
            exit(4)
        }
    }
}
