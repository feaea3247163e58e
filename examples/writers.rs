//! The writers workload of the memory benchmarks: N threads, each a fixed number of
//! create / write / rename / read back / (one in four) unlink, half in its own directory and half
//! in a shared one. Prints one line of `key=value` figures: operations done, errors by errno,
//! elapsed time, operation latency (median, p99, max).
//!
//! Usage: cargo run --release --example writers -- DIR [WRITERS=64] [OPS_PER_WRITER=400]

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

fn one(dir: &Path, id: usize, n: usize, data: &[u8]) -> Result<(), std::io::Error> {
    let a = dir.join(format!("f{id}-{n}"));
    let len = 1 + (n * 4099 + id * 131) % data.len();
    fs::write(&a, &data[..len])?;
    let b = dir.join(format!("g{id}-{n}"));
    fs::rename(&a, &b)?;
    let back = fs::read(&b)?;
    if back != data[..len] {
        return Err(std::io::Error::other("content differs"));
    }
    if n % 4 == 3 {
        fs::remove_file(&b)?;
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(root) = args.first().map(Path::new) else {
        eprintln!("usage: writers DIR [WRITERS] [OPS_PER_WRITER]");
        std::process::exit(2)
    };
    let writers: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(64);
    let ops: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(400);
    let shared = root.join("shared");
    let _ = fs::create_dir(&shared);
    let started = Instant::now();
    let results: Vec<(Vec<Duration>, BTreeMap<String, u64>)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..writers)
            .map(|id| {
                let shared = shared.clone();
                s.spawn(move || {
                    let mine = root.join(format!("w{id}"));
                    let mut errs = BTreeMap::new();
                    if let Err(e) = fs::create_dir(&mine) {
                        *errs.entry(format!("mkdir:{e}")).or_insert(0) += 1;
                    }
                    let data: Vec<u8> = (0..64 * 1024).map(|i| (i * 7 + id) as u8).collect();
                    let mut lat = Vec::with_capacity(ops);
                    for n in 0..ops {
                        let dir = if n % 2 == 0 { &mine } else { &shared };
                        let t = Instant::now();
                        if let Err(e) = one(dir, id, n, &data) {
                            *errs.entry(e.to_string()).or_insert(0) += 1;
                        }
                        lat.push(t.elapsed());
                    }
                    (lat, errs)
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let elapsed = started.elapsed();
    let mut lat: Vec<Duration> = results.iter().flat_map(|r| r.0.clone()).collect();
    lat.sort_unstable();
    let mut errs: BTreeMap<String, u64> = BTreeMap::new();
    for (_, e) in &results {
        for (k, v) in e {
            *errs.entry(k.clone()).or_insert(0) += v;
        }
    }
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .map(|d| d.as_secs_f64() * 1e3)
            .unwrap_or(0.0)
    };
    let failed: u64 = errs.values().sum();
    println!(
        "ops={} failed={} elapsed_s={:.2} ops_per_s={:.0} median_ms={:.2} p99_ms={:.2} max_ms={:.1} errors={:?}",
        lat.len(),
        failed,
        elapsed.as_secs_f64(),
        lat.len() as f64 / elapsed.as_secs_f64(),
        pct(0.5),
        pct(0.99),
        lat.last().map(|d| d.as_secs_f64() * 1e3).unwrap_or(0.0),
        errs
    );
}
