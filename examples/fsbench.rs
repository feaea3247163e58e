//! The small-operation workloads of benches/compare.sh, run the same way on every filesystem
//! it compares (one process, plain system calls, so the cost measured is the filesystem's).
//! Prints `key=value` figures on one line.
//!
//! ```text
//! fsbench meta DIR N          create, stat, unlink N empty files in one directory (ops/s each)
//! fsbench fsync DIR N         N times: write 4 KiB at the end of a file, fsync (median, p99 µs);
//!                             then N overwrites in place of 4 KiB, each with fdatasync (same)
//! fsbench tree DIR FILES      FILES files of 1-16 KiB in 20 directories: create, walk (stat and
//!                             read every file), remove (seconds each)
//! fsbench mix DIR N           N rounds of create, write 16 KiB, close, unlink (ops/s)
//! fsbench mixpair A B N       the mix, N rounds in A and N in B, interleaved in chunks of
//!                             MIX_CHUNK rounds (A B, then B A): rounds/s in each, and the
//!                             median over chunk pairs of A's time over B's, less 1 (percent),
//!                             which a slow spell of the host moves for both alike
//! fsbench pingpong - N         N round trips of one byte between two threads over a socket
//!                             pair (median µs): what waking a sleeping thread and being woken
//!                             back costs on this machine, the floor under every FUSE request
//! ```

use std::fs;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

fn die(msg: &str) -> ! {
    eprintln!("fsbench: {msg}");
    std::process::exit(2)
}

fn ok<T>(r: std::io::Result<T>, what: &str) -> T {
    r.unwrap_or_else(|e| die(&format!("{what}: {e}")))
}

fn rate(n: usize, t: Instant) -> f64 {
    n as f64 / t.elapsed().as_secs_f64().max(1e-9)
}

fn meta(dir: &Path, n: usize) {
    let d = dir.join("meta");
    ok(fs::create_dir_all(&d), "mkdir");
    let names: Vec<_> = (0..n).map(|i| d.join(format!("file{i:06}"))).collect();
    let t = Instant::now();
    for p in &names {
        ok(fs::File::create(p), "create");
    }
    let create = rate(n, t);
    let t = Instant::now();
    for p in &names {
        ok(fs::metadata(p), "stat");
    }
    let stat = rate(n, t);
    let t = Instant::now();
    for p in &names {
        ok(fs::remove_file(p), "unlink");
    }
    let unlink = rate(n, t);
    println!("create_per_s={create:.0} stat_per_s={stat:.0} unlink_per_s={unlink:.0}");
}

fn fsync_latency(dir: &Path, n: usize) {
    let p = dir.join("fsync-latency");
    let f = ok(fs::File::create(&p), "create");
    let block = vec![0x5au8; 4096];
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        ok(f.write_all_at(&block, (i * 4096) as u64), "write");
        ok(f.sync_all(), "fsync");
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    // Then overwrites in place of the blocks just written, each followed by fdatasync: nothing
    // but the data (and the times) changes, so no journal needs to be written.
    let mut dlat = Vec::with_capacity(n);
    let block = vec![0xa5u8; 4096];
    for i in 0..n {
        let t = Instant::now();
        ok(
            f.write_all_at(&block, ((i * 7919) % n * 4096) as u64),
            "write",
        );
        ok(f.sync_data(), "fdatasync");
        dlat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let q = |lat: &mut Vec<f64>, x: f64| {
        lat.sort_by(f64::total_cmp);
        lat[((lat.len() - 1) as f64 * x) as usize]
    };
    println!(
        "fsync_median_us={:.0} fsync_p99_us={:.0} fdatasync_overwrite_median_us={:.0} \
         fdatasync_overwrite_p99_us={:.0}",
        q(&mut lat, 0.5),
        q(&mut lat, 0.99),
        q(&mut dlat, 0.5),
        q(&mut dlat, 0.99)
    );
}

fn tree(dir: &Path, files: usize) {
    let root = dir.join("tree");
    let data: Vec<u8> = (0..16384u32).map(|i| (i * 31 % 253) as u8).collect();
    let size = |i: usize| 1024 + (i * 7919) % (16384 - 1024);
    let t = Instant::now();
    for i in 0..files {
        let d = root.join(format!("d{:02}", i % 20));
        if i < 20 {
            ok(fs::create_dir_all(&d), "mkdir");
        }
        let mut f = ok(fs::File::create(d.join(format!("f{i:05}"))), "create");
        ok(f.write_all(&data[..size(i)]), "write");
    }
    let create = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut bytes = 0usize;
    for d in ok(fs::read_dir(&root), "readdir") {
        let d = ok(d, "readdir entry");
        for e in ok(fs::read_dir(d.path()), "readdir") {
            let e = ok(e, "readdir entry");
            ok(fs::metadata(e.path()), "stat");
            bytes += ok(fs::read(e.path()), "read").len();
        }
    }
    let walk = t.elapsed().as_secs_f64();
    let expect: usize = (0..files).map(size).sum();
    if bytes != expect {
        die(&format!("walk read {bytes} bytes, expected {expect}"));
    }
    let t = Instant::now();
    ok(fs::remove_dir_all(&root), "remove");
    let remove = t.elapsed().as_secs_f64();
    println!("tree_create_s={create:.3} tree_walk_s={walk:.3} tree_remove_s={remove:.3}");
}

/// Rounds of the mix in one chunk of `mixpair`: about 0.1 s here, short beside the host's slow
/// spells (seconds), long beside a timer tick.
const MIX_CHUNK: usize = 500;

/// Rounds `from..to` of the mix in DIR/mix: create, write 16 KiB, close, unlink.
fn mix_rounds(d: &Path, from: usize, to: usize) {
    let data = [0xa5u8; 16384];
    for i in from..to {
        let p = d.join(format!("m{}", i % 64));
        let mut f = ok(fs::File::create(&p), "create");
        ok(f.write_all(&data), "write");
        drop(f);
        ok(fs::remove_file(&p), "unlink");
    }
}

fn mix_dir(dir: &Path) -> std::path::PathBuf {
    let d = dir.join("mix");
    ok(fs::create_dir_all(&d), "mkdir");
    d
}

fn mix(dir: &Path, n: usize) {
    let d = mix_dir(dir);
    let t = Instant::now();
    mix_rounds(&d, 0, n);
    println!("mix_rounds_per_s={:.0}", rate(n, t));
}

fn mixpair(a: &Path, b: &Path, n: usize) {
    let (da, db) = (mix_dir(a), mix_dir(b));
    let timed = |d: &Path, from: usize, to: usize| {
        let t = Instant::now();
        mix_rounds(d, from, to);
        t.elapsed().as_secs_f64()
    };
    let (mut ta, mut tb) = (0.0, 0.0);
    let mut ratios = Vec::with_capacity(n / MIX_CHUNK + 1);
    for (k, from) in (0..n).step_by(MIX_CHUNK).enumerate() {
        let to = (from + MIX_CHUNK).min(n);
        let (x, y) = if k % 2 == 0 {
            let x = timed(&da, from, to);
            (x, timed(&db, from, to))
        } else {
            let y = timed(&db, from, to);
            (timed(&da, from, to), y)
        };
        ta += x;
        tb += y;
        ratios.push(x / y - 1.0);
    }
    ratios.sort_by(f64::total_cmp);
    let median = ratios.get(ratios.len() / 2).copied().unwrap_or(0.0);
    println!(
        "mixpair_a_rounds_per_s={:.0} mixpair_b_rounds_per_s={:.0} mixpair_a_over_b_percent={:.2}",
        n as f64 / ta,
        n as f64 / tb,
        100.0 * median
    );
}

/// A synchronous FUSE request is the same exchange: the caller wakes a daemon thread and sleeps
/// until that thread wakes it with the reply. Run as it is, the two threads land on different
/// CPUs whenever one is idle; under `taskset -c 0` they share one.
fn pingpong(n: usize) {
    use std::io::Read;
    use std::os::unix::net::UnixStream;
    let (mut a, mut b) = ok(UnixStream::pair(), "socketpair");
    let echo = std::thread::spawn(move || {
        let mut byte = [0u8];
        for _ in 0..n {
            ok(b.read_exact(&mut byte), "read");
            ok(b.write_all(&byte), "write");
        }
    });
    let mut lat = Vec::with_capacity(n);
    let mut byte = [7u8];
    for _ in 0..n {
        let t = Instant::now();
        ok(a.write_all(&byte), "write");
        ok(a.read_exact(&mut byte), "read");
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    if echo.join().is_err() {
        die("the echo thread failed");
    }
    lat.sort_by(f64::total_cmp);
    println!("round_trip_us={:.1}", lat[lat.len() / 2]);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(cmd), Some(dir), Some(n)) = (args.get(1), args.get(2), args.get(3)) else {
        die("usage: fsbench meta|fsync|tree|mix|pingpong DIR N, or fsbench mixpair A B N")
    };
    if cmd == "mixpair" {
        let Some(count) = args.get(4) else {
            die("usage: fsbench mixpair A B N")
        };
        let count: usize = count.parse().unwrap_or_else(|_| die("N must be a number"));
        // Here the third argument is the second directory.
        return mixpair(Path::new(dir), Path::new(n), count);
    }
    let n: usize = n.parse().unwrap_or_else(|_| die("N must be a number"));
    let dir = Path::new(dir);
    match cmd.as_str() {
        "meta" => meta(dir, n),
        "fsync" => fsync_latency(dir, n),
        "tree" => tree(dir, n),
        "mix" => mix(dir, n),
        "pingpong" => pingpong(n),
        _ => die("usage: fsbench meta|fsync|tree|mix|pingpong DIR N, or fsbench mixpair A B N"),
    }
}
