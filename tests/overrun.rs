//! An undersized reservation table entry: the overrun is served, reported once per call site
//! with the kind, reserved, used and the site, and under overrun=panic it panics.

mod common;

use common::*;
use std::sync::Arc;
use ticketfs::device::MemDevice;
use ticketfs::format::BLOCK_HEADER_BYTES;
use ticketfs::fs::{Ctx, Fs, S_IFREG};
use ticketfs::mem::OverrunPolicy;
use ticketfs::mkfs::{make_filesystem, MkfsOptions};
use ticketfs::trans::Resv;
use ticketfs::{Engine, EngineOptions, TransKind};

/// An engine whose setattr entry has the memory of one buffer (`small_log`: the log of one
/// buffer, with memory for many); the tests log three.
fn engine_with(policy: OverrunPolicy, small_log: bool) -> (Engine, u64) {
    let g = geometry(4096, 4096, 0);
    let dev = Arc::new(MemDevice::from_bytes(4096, formatted_image(g)));
    let probe = ticketfs::trans::ResvTable::new(&g);
    let (one, many) = (probe.sized(1, 1), probe.sized(8, 1));
    let entry = if small_log {
        Resv {
            log_unit_bytes: one.log_unit_bytes,
            ..many
        }
    } else {
        Resv {
            mem_bytes: one.mem_bytes,
            ..many
        }
    };
    let opts = EngineOptions {
        overrun: policy,
        resv_override: vec![(TransKind::Setattr, entry)],
        ..Default::default()
    };
    (Engine::mount(dev, opts).expect("mount"), data_blocks(&g).0)
}

fn engine(policy: OverrunPolicy) -> (Engine, u64) {
    engine_with(policy, false)
}

fn three_buffers(eng: &Engine, first: u64) -> u32 {
    let mut t = eng.begin(TransKind::Setattr).unwrap();
    let mut line = 0;
    for i in 0..3u64 {
        let b = t.get_buf(first + i, btype_for(i), 1).unwrap();
        t.data_mut(b)[BLOCK_HEADER_BYTES] = 1;
        line = line!() + 1;
        t.log_range(b, BLOCK_HEADER_BYTES..BLOCK_HEADER_BYTES + 1);
    }
    t.commit().unwrap();
    let _ = line;
    line!() - 8
}

#[test]
fn undersized_entry_is_reported_once_with_its_call_site() {
    let (eng, first) = engine(OverrunPolicy::Warn);
    three_buffers(&eng, first);
    three_buffers(&eng, first + 10);
    let reports = eng.overrun_reports();
    assert_eq!(reports.len(), 1, "one report per call site: {reports:#?}");
    let r = &reports[0];
    assert_eq!(r.kind, "setattr");
    assert_eq!(r.resource, "memory");
    assert!(r.used_bytes > r.reserved_bytes);
    // get_buf pins the new block; that is the call site named.
    assert!(
        r.site.file().ends_with("tests/overrun.rs"),
        "site {}",
        r.site
    );
    let src = std::fs::read_to_string(r.site.file()).unwrap();
    let line = src.lines().nth(r.site.line() as usize - 1).unwrap();
    assert!(line.contains("get_buf"), "site line is `{line}`");
    // Both transactions overran (at two buffers each); counted, and every change committed.
    assert_eq!(r.count, 4);
    assert_eq!(eng.stats().overruns, 4);
    eng.force_all().unwrap();
    eng.unmount().unwrap();
}

#[test]
fn overrun_panic_policy_panics_with_the_site() {
    let (eng, first) = engine(OverrunPolicy::Panic);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        three_buffers(&eng, first);
    }));
    let msg = r.expect_err("overrun=panic must panic");
    let text = msg.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        text.contains("reservation overrun") && text.contains("tests/overrun.rs"),
        "panic message: {text}"
    );
    assert!(text.contains("setattr"));
}

#[test]
fn undersized_log_entry_is_reported_at_commit() {
    let (eng, first) = engine_with(OverrunPolicy::Warn, true);
    three_buffers(&eng, first);
    let reports = eng.overrun_reports();
    assert_eq!(reports.len(), 1, "{reports:#?}");
    let r = &reports[0];
    assert_eq!((r.kind, r.resource), ("setattr", "log"));
    assert!(r.used_bytes > r.reserved_bytes);
    let src = std::fs::read_to_string(r.site.file()).unwrap();
    let line = src.lines().nth(r.site.line() as usize - 1).unwrap();
    assert!(line.contains("commit()"), "site line is `{line}`");
    // The log space it took past its ticket came from the kept-back blocks; the engine goes on.
    eng.force_all().unwrap();
    eng.unmount().unwrap();
}

/// A 64 MiB filesystem of `block_size` blocks made by mkfs in `dir`, mounted with `opts`.
fn fs_in(dir: &std::path::Path, block_size: u32, opts: EngineOptions) -> Fs {
    let p = dir.join("image");
    make_filesystem(
        &p,
        &MkfsOptions {
            size: Some(64 << 20),
            block_size,
            ..Default::default()
        },
    )
    .unwrap();
    let dev = Arc::new(ticketfs::device::FileDevice::open(&p, block_size, false).unwrap());
    Fs::new(Engine::mount(dev, opts).unwrap(), false).unwrap()
}

/// The largest attribute changes, each reserved for its own measure (within the xattr entry's
/// worst case), under overrun=panic with 512-byte blocks (a 64 KiB value is 147
/// remote blocks, the attribute tree several levels deep): 64 KiB values replacing 64 KiB values
/// in a tree of 3,000 attributes with long names, their removal, the file unlinked with its tree.
/// Nothing overruns; the reservation's margin stays positive.
#[test]
fn the_largest_attribute_replacing_the_largest_does_not_overrun() {
    let dir = tempfile::tempdir().unwrap();
    let opts = EngineOptions {
        overrun: OverrunPolicy::Panic,
        ..Default::default()
    };
    let fs = fs_in(dir.path(), 512, opts);
    let c = Ctx::ROOT;
    let a = fs
        .make(&c, fs.root(), b"f", S_IFREG | 0o644, 0, None)
        .unwrap();
    let name = |i: usize| format!("user.{i:06}-{}", "n".repeat(200)).into_bytes();
    for i in 0..3000 {
        fs.setxattr(&c, a.ino, &name(i), &pattern(i as u64, i % 9), false, false)
            .unwrap();
    }
    for round in 0..4u64 {
        for i in [0, 1500, 2999] {
            fs.setxattr(&c, a.ino, &name(i), &pattern(round, 65536), false, false)
                .unwrap();
        }
    }
    assert_eq!(
        fs.getxattr(&c, a.ino, &name(1500)).unwrap(),
        pattern(3, 65536)
    );
    fs.removexattr(&c, a.ino, &name(0)).unwrap();
    fs.remove(&c, fs.root(), b"f", false).unwrap();
    assert!(fs.engine().overrun_reports().is_empty());
    assert_eq!(fs.engine().stats().overruns, 0);
    fs.unmount().unwrap();
}

/// A set is reserved for its own measure, never more than the xattr entry: with that entry
/// undersized, a small setxattr overruns and is reported like any other: kind xattr, at the site
/// that logged the buffer past the reservation.
#[test]
fn a_measured_attribute_set_still_reports_its_overrun() {
    let dir = tempfile::tempdir().unwrap();
    let one = ticketfs::trans::ResvTable::new(&geometry(4096, 16384, 0)).sized(1, 1);
    let opts = EngineOptions {
        overrun: OverrunPolicy::Warn,
        resv_override: vec![(TransKind::Xattr, one)],
        ..Default::default()
    };
    let fs = fs_in(dir.path(), 4096, opts);
    let c = Ctx::ROOT;
    let a = fs
        .make(&c, fs.root(), b"f", S_IFREG | 0o644, 0, None)
        .unwrap();
    fs.setxattr(&c, a.ino, b"user.label", &pattern(1, 20), false, false)
        .unwrap();
    assert_eq!(
        fs.getxattr(&c, a.ino, b"user.label").unwrap(),
        pattern(1, 20)
    );
    let reports = fs.engine().overrun_reports();
    assert!(
        !reports.is_empty(),
        "an undersized xattr set must be reported"
    );
    for r in &reports {
        assert_eq!(r.kind, "xattr");
        assert!(r.used_bytes > r.reserved_bytes);
        // Where the buffer that overran was logged, not the reservation's own code.
        let site = r.site.file();
        assert!(
            site.starts_with("src/") && !site.contains("trans/") && !site.ends_with("resv.rs"),
            "site {}",
            r.site
        );
    }
    fs.unmount().unwrap();
}
