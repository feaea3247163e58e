//! mkfs.ticketfs: writes a new, empty ticketfs filesystem: superblocks, an empty log, and every
//! allocation group (header, free-space and inode-chunk trees, free list).

use clap::{CommandFactory, FromArgMatches, Parser};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::exit;
use ticketfs::format::BLOCK_SIZE_DEFAULT;
use ticketfs::image::parse_size;
use ticketfs::mkfs::{make_filesystem_with, MkfsOptions};
use ticketfs::progress::{Bar, Show};

/// Every failure, usage or not, exits 1, as mkfs.xfs and mke2fs do.
fn die(msg: &str) -> ! {
    eprintln!("mkfs.ticketfs: {msg}");
    exit(1)
}

/// A size: bytes, or a number with K, M, G or T (powers of 1024).
fn size(s: &str) -> Result<u64, String> {
    parse_size(s).ok_or_else(|| format!("bad size {s:?} (bytes, or a number with K, M, G or T)"))
}

/// The id that chown(2) and setresuid(2) take as "leave unchanged" ((uid_t)-1): no file's owner.
const ID_UNSET: u32 = u32::MAX;

/// An owner `UID:GID`: two decimal ids, neither `ID_UNSET`.
fn owner(s: &str) -> Result<(u32, u32), String> {
    let bad = || format!("bad owner {s:?} (UID:GID, two numbers below {ID_UNSET})");
    let (u, g) = s.split_once(':').ok_or_else(bad)?;
    let id = |t: &str| {
        // u32's parser takes a leading '+': an id is digits only.
        t.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| t.parse::<u32>().ok())
            .flatten()
            .filter(|&n| n != ID_UNSET)
    };
    Ok((id(u).ok_or_else(bad)?, id(g).ok_or_else(bad)?))
}

/// Makes a ticketfs filesystem
///
/// Writes a new, empty ticketfs filesystem (superblocks, an empty log, every allocation group
/// and the root directory) on an image file, created sparse at SIZE when it does not exist, or
/// on a block device. A device holding a filesystem is refused without -f, a mounted image even
/// with it. Sizes take K, M, G and T (powers of 1024). Exit status: 0 made, 1 not made (and no
/// file left that mkfs created).
#[derive(Parser, Debug)]
#[command(
    name = "mkfs.ticketfs",
    bin_name = "mkfs.ticketfs",
    override_usage = "mkfs.ticketfs [-f] [-s SIZE] [-b BLOCKSIZE] [-l LOGSIZE] [-a AGCOUNT] [-L LABEL] [--root-owner[=UID:GID]] [--progress] TARGET"
)]
struct Cli {
    /// Overwrite a filesystem TARGET holds (ticketfs, ext2/3/4, xfs, btrfs); a mounted image is
    /// refused even so.
    #[arg(short = 'f', long)]
    force: bool,
    /// Size of the filesystem; an image file is created (or grown) to it.
    #[arg(short = 's', long, value_name = "SIZE", value_parser = size)]
    size: Option<u64>,
    /// Block size: a power of two from 512 to 65536.
    #[arg(short = 'b', long, value_name = "BLOCKSIZE", value_parser = size, default_value_t = BLOCK_SIZE_DEFAULT as u64)]
    block_size: u64,
    /// Log size (default: 1/64 of the filesystem, at least what the reservations need, at most
    /// 64 MiB).
    #[arg(short = 'l', long, value_name = "LOGSIZE", value_parser = size)]
    log_size: Option<u64>,
    /// Allocation groups, 1 to 1024 (default: one per GiB, from 1 to 64).
    #[arg(short = 'a', long, value_name = "AGCOUNT")]
    ag_count: Option<u32>,
    /// Show progress on stderr even when it is not a terminal (a line per phase), and from the
    /// start (on a terminal it appears once mkfs has taken a second).
    #[arg(long)]
    progress: bool,
    /// Label, at most 32 bytes.
    #[arg(short = 'L', long, value_name = "LABEL")]
    label: Option<String>,
    /// Make the root directory owned by UID:GID, or without a value by the user running mkfs
    /// (as mke2fs -E root_owner), so that user may create files in a filesystem they mount
    /// themselves; without the option it is root's (0:0). Its mode is 0755 either way.
    #[arg(long, value_name = "UID:GID", num_args = 0..=1, require_equals = true, value_parser = owner)]
    root_owner: Option<Option<(u32, u32)>>,
    /// Image file or block device.
    #[arg(value_name = "TARGET")]
    target: PathBuf,
}

fn command() -> clap::Command {
    ticketfs::cli::with_version(Cli::command())
}

fn main() {
    ticketfs::cli::manual_page_if_asked(command(), &[], 1);
    let m = ticketfs::cli::matches(command(), "mkfs.ticketfs", 1);
    let cli = Cli::from_arg_matches(&m).unwrap_or_else(|e| die(&e.to_string()));
    let block_size = u32::try_from(cli.block_size).unwrap_or_else(|_| {
        die(&format!(
            "block size {} is not a power of two from 512 to 65536",
            cli.block_size
        ))
    });
    let opts = MkfsOptions {
        size: cli.size,
        block_size,
        log_bytes: cli.log_size,
        ag_count: cli.ag_count,
        label: cli.label.unwrap_or_default(),
        force: cli.force,
        root_owner: match cli.root_owner {
            None => (0, 0),
            // The real ids, as mke2fs takes them: who ran mkfs, even through a set-user-ID
            // wrapper.
            // SAFETY: getuid and getgid only read the process's ids.
            Some(None) => unsafe { (libc::getuid(), libc::getgid()) },
            Some(Some(o)) => o,
        },
    };
    let mut bar = Bar::new(if cli.progress {
        Show::Always
    } else {
        Show::Auto
    });
    let made = make_filesystem_with(&cli.target, &opts, &mut |p, d, t| bar.update(p, d, t));
    // The bar's line is cleared before anything else is printed, an error too.
    let made = match made {
        Ok(m) => {
            bar.finish();
            m
        }
        Err(e) => {
            drop(bar);
            die(&e)
        }
    };
    let (sb, min_log) = (made.sb, made.min_log_blocks);
    let g = sb.geometry;
    let u = sb.uuid;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "meta-data={} isize=- agcount={} agsize={} blks",
        cli.target.display(),
        g.ag_count,
        g.ag_blocks
    );
    let _ = writeln!(
        out,
        "data     =bsize={} blocks={} ({} bytes)",
        g.block_size,
        g.block_count,
        g.block_count * g.block_size as u64
    );
    let _ = writeln!(
        out,
        "log      =internal start={} blocks={} (minimum {})",
        g.log_start, g.log_blocks, min_log
    );
    let _ = writeln!(
        out,
        "uuid     ={:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x} label={}",
        u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15], sb.label_str()
    );
    // The filesystem is made; a report that cannot be written still fails the command.
    ticketfs::cli::print_or_exit("mkfs.ticketfs", &out, 1);
}
