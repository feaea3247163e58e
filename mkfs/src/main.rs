//! mkfs.ticketfs: writes a new, empty ticketfs filesystem: superblocks, an empty log, and every
//! allocation group (header, free-space and inode-chunk trees, free list).

use std::path::PathBuf;
use std::process::exit;
use ticketfs::format::{BLOCK_SIZE_DEFAULT, FORMAT_VERSION};
use ticketfs::image::parse_size;
use ticketfs::mkfs::{make_filesystem, MkfsOptions};

const USAGE: &str = "usage: mkfs.ticketfs [-V] [-f] [-s SIZE] [-b BLOCKSIZE] [-l LOGSIZE] [-a AGCOUNT] [-L LABEL] TARGET";

/// Every failure, usage or not, exits 1, as mkfs.xfs and mke2fs do.
fn die(msg: &str) -> ! {
    eprintln!("mkfs.ticketfs: {msg}");
    exit(1)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut force, mut size, mut bs, mut log, mut ags, mut label, mut target) = (
        false,
        None,
        BLOCK_SIZE_DEFAULT,
        None,
        None,
        String::new(),
        None,
    );
    while let Some(a) = args.next() {
        let mut val = |name: &str| {
            args.next()
                .unwrap_or_else(|| die(&format!("{name} needs a value (see --help)")))
        };
        match a.as_str() {
            "-f" => force = true,
            "-s" => size = Some(parse_size(&val("-s")).unwrap_or_else(|| die("bad size"))),
            "-b" => {
                bs = parse_size(&val("-b"))
                    .and_then(|v| u32::try_from(v).ok())
                    .unwrap_or_else(|| die("bad block size"))
            }
            "-l" => log = Some(parse_size(&val("-l")).unwrap_or_else(|| die("bad log size"))),
            "-a" => {
                ags = Some(
                    val("-a")
                        .parse::<u32>()
                        .unwrap_or_else(|_| die("bad AG count")),
                )
            }
            "-L" => label = val("-L"),
            "-h" | "--help" => {
                println!("{USAGE}");
                return;
            }
            "-V" | "--version" => {
                println!(
                    "mkfs.ticketfs {} (on-disk format {FORMAT_VERSION})",
                    env!("CARGO_PKG_VERSION")
                );
                return;
            }
            _ if a.starts_with('-') => die(&format!("unknown option {a} (see --help)")),
            _ => target = Some(PathBuf::from(a)),
        }
    }
    let target = target.unwrap_or_else(|| die(USAGE));
    let opts = MkfsOptions {
        size,
        block_size: bs,
        log_bytes: log,
        ag_count: ags,
        label,
        force,
    };
    let made = make_filesystem(&target, &opts).unwrap_or_else(|e| die(&e));
    let (sb, min_log) = (made.sb, made.min_log_blocks);
    let g = sb.geometry;
    let u = sb.uuid;
    println!(
        "meta-data={} isize=- agcount={} agsize={} blks",
        target.display(),
        g.ag_count,
        g.ag_blocks
    );
    println!(
        "data     =bsize={} blocks={} ({} bytes)",
        g.block_size,
        g.block_count,
        g.block_count * g.block_size as u64
    );
    println!(
        "log      =internal start={} blocks={} (minimum {})",
        g.log_start, g.log_blocks, min_log
    );
    println!(
        "uuid     ={:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x} label={}",
        u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15], sb.label_str()
    );
}
