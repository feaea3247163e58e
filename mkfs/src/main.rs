//! mkfs.ticketfs: writes a new, empty ticketfs filesystem: superblocks, an empty log, and every
//! allocation group (header, free-space and inode-chunk trees, free list).

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::process::exit;
use ticketfs::device::{Device, FileDevice};
use ticketfs::format::{Geometry, BLOCK_SIZE_DEFAULT};
use ticketfs::image::{existing_signature, parse_size};
use ticketfs::trans::ResvTable;

const USAGE: &str = "usage: mkfs.ticketfs [-f] [-s SIZE] [-b BLOCKSIZE] [-l LOGSIZE] [-a AGCOUNT] [-L LABEL] TARGET";
/// Default log: 1/64 of the device, between the table's minimum and this many bytes.
const LOG_DEFAULT_MAX_BYTES: u64 = 64 << 20;
/// Default allocation group size, so large devices get more AGs (up to the format's limit).
const AG_DEFAULT_BYTES: u64 = 1 << 30;

fn die(msg: &str, code: i32) -> ! {
    eprintln!("mkfs.ticketfs: {msg}");
    exit(code)
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
                .unwrap_or_else(|| die(&format!("{name} needs a value\n{USAGE}"), 16))
        };
        match a.as_str() {
            "-f" => force = true,
            "-s" => size = Some(parse_size(&val("-s")).unwrap_or_else(|| die("bad size", 16))),
            "-b" => {
                bs = parse_size(&val("-b"))
                    .and_then(|v| u32::try_from(v).ok())
                    .unwrap_or_else(|| die("bad block size", 16))
            }
            "-l" => log = Some(parse_size(&val("-l")).unwrap_or_else(|| die("bad log size", 16))),
            "-a" => {
                ags = Some(
                    val("-a")
                        .parse::<u32>()
                        .unwrap_or_else(|_| die("bad AG count", 16)),
                )
            }
            "-L" => label = val("-L"),
            "-h" | "--help" => {
                println!("{USAGE}");
                return;
            }
            _ if a.starts_with('-') => die(&format!("unknown option {a}\n{USAGE}"), 16),
            _ => target = Some(PathBuf::from(a)),
        }
    }
    let target = target.unwrap_or_else(|| die(USAGE, 16));
    if !target.exists() {
        let Some(s) = size else {
            die(
                &format!(
                    "{} does not exist: give -s SIZE to create it",
                    target.display()
                ),
                16,
            )
        };
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&target)
            .unwrap_or_else(|e| die(&format!("{}: {e}", target.display()), 8));
        f.set_len(s)
            .unwrap_or_else(|e| die(&format!("{}: {e}", target.display()), 8));
    } else {
        match existing_signature(&target) {
            Ok(Some(fs)) if !force => die(
                &format!(
                    "{} holds a {fs} filesystem; use -f to overwrite it",
                    target.display()
                ),
                8,
            ),
            Err(e) => die(&format!("{}: {e}", target.display()), 8),
            _ => {}
        }
        if let Some(s) = size {
            let meta = std::fs::metadata(&target).unwrap_or_else(|e| die(&e.to_string(), 8));
            if meta.is_file() && meta.len() < s {
                OpenOptions::new()
                    .write(true)
                    .open(&target)
                    .and_then(|f| f.set_len(s))
                    .unwrap_or_else(|e| die(&e.to_string(), 8));
            }
        }
    }
    let dev = FileDevice::open(&target, bs, true)
        .unwrap_or_else(|e| die(&format!("{}: {e}", target.display()), 8));
    let mut blocks = dev.block_count();
    if let Some(s) = size {
        blocks = blocks.min(s / bs as u64);
    }
    let ag_count =
        ags.unwrap_or_else(|| ((blocks * bs as u64) / AG_DEFAULT_BYTES).clamp(1, 64) as u32);
    let probe = Geometry::new(bs, blocks, 16, ag_count).unwrap_or_else(|e| die(&e, 8));
    let min_log = ResvTable::new(&probe).min_log_blocks();
    let log_blocks = match log {
        Some(l) => l.div_ceil(bs as u64),
        None => (blocks / 64).clamp(min_log, (LOG_DEFAULT_MAX_BYTES / bs as u64).max(min_log)),
    };
    let g = Geometry::new(bs, blocks, log_blocks, ag_count).unwrap_or_else(|e| die(&e, 8));
    let sb = ticketfs::engine::format(&dev, g, ticketfs::engine::new_uuid(), &label)
        .unwrap_or_else(|e| die(&e.to_string(), 8));
    // The allocation groups are written through the engine, as transactions, then unmounted clean.
    let eng = ticketfs::Engine::mount(std::sync::Arc::new(dev), ticketfs::EngineOptions::default())
        .unwrap_or_else(|e| die(&e.to_string(), 8));
    let mut eng = eng;
    ticketfs::alloc::format_all(&eng)
        .unwrap_or_else(|e| die(&format!("formatting allocation groups: {e}"), 8));
    let root = ticketfs::fs::make_root(&eng)
        .unwrap_or_else(|e| die(&format!("creating the root directory: {e}"), 8));
    eng.set_root_ino(root);
    eng.unmount().unwrap_or_else(|e| die(&e.to_string(), 8));
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
