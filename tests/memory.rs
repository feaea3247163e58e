//! Memory reservations on a real mount: 64 concurrent writers under `mem=8M`, an undersized
//! table entry, and `ticketfs stats` read from a live daemon.

mod common;

use common::mount::{stats_json, stats_text, Mount};
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use ticketfs::mkfs::{make_filesystem, MkfsOptions};

/// Writers and operations each: create, write, rename, delete.
const WRITERS: usize = 64;
const OPS_PER_WRITER: usize = 400;

/// A 1 GiB image with a 64 MiB log: log space is then plentiful, so memory is what binds.
fn image(dir: &Path) -> PathBuf {
    let img = dir.join("image");
    make_filesystem(
        &img,
        &MkfsOptions {
            size: Some(1 << 30),
            log_bytes: Some(64 << 20),
            ..Default::default()
        },
    )
    .expect("mkfs");
    img
}

fn u(v: &Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("stats field {k} missing in {v}"))
}

fn fsck(img: &Path) {
    // Built beside the mount binary by `cargo build --workspace` (scripts/test.sh does).
    let bin = Path::new(env!("CARGO_BIN_EXE_ticketfs")).with_file_name("fsck-ticketfs");
    assert!(
        bin.exists(),
        "{} missing: cargo build --workspace first",
        bin.display()
    );
    let out = Command::new(&bin)
        .arg("-n")
        .arg(img)
        .output()
        .expect("fsck");
    assert!(out.status.success(), "fsck: {out:?}");
}

/// One writer: its own directory and a shared one; every operation must succeed.
fn writer(root: &Path, id: usize, done: &AtomicU64) -> Result<(), String> {
    let mine = root.join(format!("w{id}"));
    fs::create_dir(&mine).map_err(|e| format!("mkdir {}: {e}", mine.display()))?;
    let shared = root.join("shared");
    let data: Vec<u8> = (0..64 * 1024).map(|i| (i * 7 + id) as u8).collect();
    for n in 0..OPS_PER_WRITER {
        let dir = if n % 2 == 0 { &mine } else { &shared };
        let a = dir.join(format!("f{id}-{n}"));
        let len = 1 + (n * 4099 + id * 131) % data.len();
        fs::write(&a, &data[..len]).map_err(|e| format!("write {}: {e}", a.display()))?;
        let b = dir.join(format!("g{id}-{n}"));
        fs::rename(&a, &b).map_err(|e| format!("rename {}: {e}", a.display()))?;
        let back = fs::read(&b).map_err(|e| format!("read {}: {e}", b.display()))?;
        if back != data[..len] {
            return Err(format!("{}: content differs", b.display()));
        }
        // Delete one in four; keep the rest, so the metadata written outgrows the budget.
        if n % 4 == 3 {
            fs::remove_file(&b).map_err(|e| format!("unlink {}: {e}", b.display()))?;
        }
        done.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

#[test]
fn sixty_four_writers_under_an_8_mib_budget() {
    let work = tempfile::tempdir().unwrap();
    let img = image(work.path());
    // A request thread per writer: more transactions at once than 8 MiB of reservations admit.
    // (With 16 threads the gate was reached only now and then: 0 to 4 waits a run.)
    let m = Mount::new(&img, "mem=8M,max_threads=64,overrun=panic");
    let root = m.path().to_path_buf();
    fs::create_dir(root.join("shared")).unwrap();
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let handles: Vec<_> = (0..WRITERS)
        .map(|id| {
            let (root, done) = (root.clone(), done.clone());
            std::thread::spawn(move || writer(&root, id, &done))
        })
        .collect();
    // Watchdog: no operation finished for 60 s is a deadlock.
    let (mut seen, mut since) = (0, Instant::now());
    let mut peak_waiters = 0;
    while !handles.iter().all(|h| h.is_finished()) {
        std::thread::sleep(Duration::from_millis(200));
        let now = done.load(Ordering::Relaxed);
        if now != seen {
            (seen, since) = (now, Instant::now());
        }
        peak_waiters = peak_waiters.max(u(&stats_json(&root), "waiters"));
        assert!(
            since.elapsed() < Duration::from_secs(60),
            "no operation finished for 60 s ({now} done): deadlock\n{}",
            stats_text(&root)
        );
    }
    let errors: Vec<String> = handles
        .into_iter()
        .filter_map(|h| h.join().expect("writer panicked").err())
        .collect();
    let elapsed = started.elapsed();
    let st = stats_json(&root);
    let waits: u64 = st["kinds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["waits"].as_u64().unwrap())
        .sum();
    println!(
        "{} operations by {WRITERS} writers in {elapsed:.2?}: {} errors, {} waits (peak {} waiting), \
         {} overruns, peak charged {} of budget {}, resident peak {} (budget + base {})",
        done.load(Ordering::Relaxed),
        errors.len(),
        waits,
        peak_waiters,
        u(&st, "overruns"),
        u(&st, "peak_charged_bytes"),
        u(&st, "budget_bytes"),
        u(&st, "peak_resident_bytes"),
        u(&st, "budget_bytes") + u(&st, "base_bytes"),
    );
    assert!(errors.is_empty(), "operations failed: {errors:?}");
    assert_eq!(
        done.load(Ordering::Relaxed),
        (WRITERS * OPS_PER_WRITER) as u64
    );
    assert_eq!(u(&st, "budget_bytes"), 8 << 20);
    assert_eq!(u(&st, "overruns"), 0);
    assert!(waits > 0, "no reservation waited under an 8 MiB budget");
    assert!(
        u(&st, "peak_charged_bytes") <= u(&st, "budget_bytes"),
        "charged past the budget"
    );
    assert!(
        u(&st, "peak_resident_bytes") <= u(&st, "budget_bytes") + u(&st, "base_bytes"),
        "resident size past budget + base"
    );
    m.unmount();
    fsck(&img);
}

#[test]
fn undersized_table_entry_is_reported_and_the_operation_completes() {
    let work = tempfile::tempdir().unwrap();
    let img = image(work.path());
    // One page for a create: far less than it pins.
    let m = Mount::new(&img, "debug_resv=create:4096");
    let f = m.path().join("file");
    fs::write(&f, b"still created").unwrap();
    assert_eq!(fs::read(&f).unwrap(), b"still created");
    let st = stats_json(m.path());
    assert!(u(&st, "overruns") >= 1, "no overrun counted: {st}");
    let sites: Vec<&str> = st["overrun_sites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(
        sites.iter().any(
            |s| s.contains("transaction kind create reserved memory 4096") && s.contains("src/")
        ),
        "no report naming the create's call site: {sites:?}"
    );
    let create = st["kinds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kind"] == "create")
        .unwrap()
        .clone();
    assert!(create["overruns"].as_u64().unwrap() >= 1);
    assert!(stats_text(m.path()).contains("transaction kind create reserved memory 4096"));
    m.unmount();
    fsck(&img);
}
