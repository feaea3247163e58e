//! `ticketfs stats` reports what the daemon counts: the report read through the statistics
//! socket agrees with the engine's own counters, in JSON and in text.

use std::path::Path;
use std::sync::Arc;
use ticketfs::budget;
use ticketfs::fs::{Ctx, Fs, S_IFDIR, S_IFREG};
use ticketfs::image::open_image;
use ticketfs::mem::OverrunPolicy;
use ticketfs::mkfs::{make_filesystem, MkfsOptions};
use ticketfs::stats::{self, Report};
use ticketfs::trans::TransKind;
use ticketfs::{Engine, EngineOptions, EngineStats};

const BUDGET: u64 = 16 << 20;

fn mount(img: &Path) -> Fs {
    let eng = Engine::mount(
        Arc::new(open_image(img).expect("open image")),
        EngineOptions {
            mem_budget_bytes: BUDGET,
            overrun: OverrunPolicy::Warn,
            // One undersized entry, so the overrun counters are not all zero.
            mem_override: vec![(TransKind::Mkdir, 4096)],
            ..Default::default()
        },
    )
    .expect("mount");
    Fs::new(eng, false).expect("fs")
}

/// The figures both sides must agree on.
fn key(st: &EngineStats) -> Vec<u64> {
    let m = &st.mem;
    let mut v = vec![
        m.budget_bytes,
        m.reserved_bytes,
        m.log_pinned_bytes,
        m.free_bytes(),
        m.emergency_bytes,
        m.emergency_used_bytes,
        m.peak_charged_bytes,
        st.cache.buffers,
        st.waiters as u64,
        st.overruns,
        st.checkpoints,
        st.log_wraps as u64,
        st.home_writes,
    ];
    for k in &st.kinds {
        v.extend([k.count, k.waits, k.overruns]);
    }
    v
}

fn key_of(r: &Report) -> Vec<u64> {
    let mut v = vec![
        r.budget_bytes,
        r.reserved_bytes,
        r.pinned_log_bytes,
        r.free_bytes,
        r.emergency_bytes,
        r.emergency_used_bytes,
        r.peak_charged_bytes,
        r.cache_buffers,
        r.waiters as u64,
        r.overruns,
        r.checkpoints,
        r.log_wraps as u64,
        r.home_writes,
    ];
    for k in &r.kinds {
        v.extend([k.count, k.waits, k.overruns]);
    }
    v
}

#[test]
fn report_agrees_with_the_engine_counters() {
    let work = tempfile::tempdir().unwrap();
    let img = work.path().join("image");
    make_filesystem(
        &img,
        &MkfsOptions {
            size: Some(256 << 20),
            ..Default::default()
        },
    )
    .unwrap();
    let fs = Arc::new(mount(&img));
    let c = Ctx::ROOT;
    let root = fs.root();
    for i in 0..200u32 {
        let a = fs
            .make(
                &c,
                root,
                format!("f{i}").as_bytes(),
                S_IFREG | 0o644,
                0,
                None,
            )
            .unwrap();
        fs.write(&c, a.ino, 0, &vec![i as u8; 5000]).unwrap();
        if i % 3 == 0 {
            fs.remove(&c, root, format!("f{i}").as_bytes(), false)
                .unwrap();
        }
    }
    fs.make(&c, root, b"d", S_IFDIR | 0o755, 0, None).unwrap();
    fs.engine().force_all().unwrap();

    let b = budget::derive(None, 0, 0, Some(BUDGET), None, false).unwrap();
    let weak = Arc::downgrade(&fs);
    let bb = b.clone();
    let image = img.clone();
    stats::serve(&img, move || {
        let fs = weak.upgrade()?;
        let e = fs.engine();
        let sites = e.overrun_reports().iter().map(|r| r.to_string()).collect();
        Some(Report::new(
            &image,
            &e.stats(),
            &bb,
            e.trans_pinned_bytes(),
            fs.readahead_stats(),
            sites,
        ))
    })
    .expect("statistics socket");

    // Background threads may checkpoint meanwhile: agree on a quiet moment (same counters before
    // and after the query).
    let mut agreed = false;
    for _ in 0..50 {
        let before = fs.engine().stats();
        let json = stats::query(&img, "json").expect("query json");
        let text = stats::query(&img, "text").expect("query text");
        let after = fs.engine().stats();
        if key(&before) != key(&after) {
            std::thread::sleep(std::time::Duration::from_millis(20));
            continue;
        }
        let r: Report = serde_json::from_str(&json).expect("report JSON");
        assert_eq!(
            key_of(&r),
            key(&before),
            "JSON report differs from the engine"
        );
        assert_eq!(r.budget_bytes, BUDGET);
        assert!(r.overruns >= 1, "the undersized mkdir entry overran");
        assert_eq!(r.overrun_sites.len(), fs.engine().overrun_reports().len());
        let create = r.kinds.iter().find(|k| k.kind == "create").unwrap();
        assert_eq!(create.count, 200);
        let remove = r.kinds.iter().find(|k| k.kind == "remove").unwrap();
        assert_eq!(remove.count, 67);
        // The text report carries the same figures.
        assert!(
            text.contains(&format!("overruns         {}", r.overruns)),
            "{text}"
        );
        assert!(
            text.contains(&format!("waiters          {}", r.waiters)),
            "{text}"
        );
        let line = text
            .lines()
            .find(|l| l.starts_with("create "))
            .expect("create line");
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols[1], create.count.to_string(), "{line}");
        assert_eq!(cols[2], create.reserved_pages.to_string(), "{line}");
        assert_eq!(cols[3], create.peak_used_pages.to_string(), "{line}");
        assert!(text.contains(&b.derivation));
        agreed = true;
        break;
    }
    assert!(agreed, "counters never held still for a query");
    stats::stop(&img);
    let fs = Arc::try_unwrap(fs).ok().expect("filesystem still shared");
    fs.unmount().unwrap();
}
