//! Makes a tree of empty files for the fsck benchmark: DIRS directories d0000.. under DIR, each
//! with FILES empty files f000000.., by THREADS threads. The same program builds the ticketfs
//! tree (through its mount) and the source tree of the ext4 image, so both hold the same names.
//!
//! Usage: cargo run --release --example tree -- DIR DIRS FILES [THREADS=4]

use std::fs;
use std::path::Path;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(root), Some(dirs), Some(files)) = (
        args.first().map(Path::new),
        args.get(1).and_then(|s| s.parse::<usize>().ok()),
        args.get(2).and_then(|s| s.parse::<usize>().ok()),
    ) else {
        eprintln!("usage: tree DIR DIRS FILES [THREADS]");
        std::process::exit(2)
    };
    let threads: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(4).max(1);
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                for d in (t..dirs).step_by(threads) {
                    let dir = root.join(format!("d{d:04}"));
                    if let Err(e) = fs::create_dir(&dir) {
                        eprintln!("{}: {e}", dir.display());
                        std::process::exit(1)
                    }
                    for f in 0..files {
                        let p = dir.join(format!("f{f:06}"));
                        if let Err(e) = fs::File::create(&p) {
                            eprintln!("{}: {e}", p.display());
                            std::process::exit(1)
                        }
                    }
                }
            });
        }
    });
    println!(
        "files={} dirs={dirs} seconds={:.1}",
        dirs * files,
        started.elapsed().as_secs_f64()
    );
}
