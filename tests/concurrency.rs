//! 64 threads each run 1,000 transactions of mixed kinds (rolling ones included) against the
//! smallest allowed log and a 2 MiB memory budget. All must finish, with zero overruns, the log
//! wrapping many times and the waits counted; then a crash, and recovery must bring back exactly
//! the last value every thread wrote into every block.

mod common;

use common::*;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use ticketfs::device::{Device, MemDevice};
use ticketfs::format::BLOCK_HEADER_BYTES;
use ticketfs::mem::OverrunPolicy;
use ticketfs::{Engine, EngineOptions, TransKind};

const THREADS: usize = 64;
const PER_THREAD: usize = 1000;
const BLOCKS: u64 = 256;
const BUDGET: u64 = 2 << 20;
/// Each thread owns an 8-byte slot in every block's payload.
const SLOT: usize = 8;

fn slot_range(t: usize) -> std::ops::Range<usize> {
    BLOCK_HEADER_BYTES + t * SLOT..BLOCK_HEADER_BYTES + (t + 1) * SLOT
}

#[test]
fn sixty_four_threads_small_log_small_budget() {
    let g = geometry(4096, 8192, 0);
    let dev = Arc::new(MemDevice::from_bytes(4096, formatted_image(g)));
    let opts = EngineOptions {
        mem_budget_bytes: BUDGET,
        overrun: OverrunPolicy::Panic,
        ..Default::default()
    };
    let eng = Arc::new(Engine::mount(dev.clone(), opts).expect("mount"));
    let (first, _) = data_blocks(&g);
    // Create the blocks the threads share.
    for chunk in (0..BLOCKS).collect::<Vec<_>>().chunks(8) {
        let mut t = eng.begin(TransKind::Create).unwrap();
        for &i in chunk {
            t.get_buf(first + i, btype_for(i), i).unwrap();
        }
        t.commit().unwrap();
    }
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let handles: Vec<_> = (0..THREADS)
        .map(|tid| {
            let eng = eng.clone();
            let done = done.clone();
            std::thread::spawn(move || {
                let mut rng = SmallRng::seed_from_u64(tid as u64 + 1);
                let mut last = vec![0u64; BLOCKS as usize];
                let kinds = [
                    TransKind::Create,
                    TransKind::Remove,
                    TransKind::Rename,
                    TransKind::Write,
                    TransKind::Setattr,
                    TransKind::Truncate,
                ];
                for n in 1..=PER_THREAD as u64 {
                    let kind = kinds[rng.gen_range(0..kinds.len())];
                    let most = eng.table().get(kind).buffers.min(6) as usize;
                    let count = rng.gen_range(1..=most);
                    let mut picks: Vec<u64> = (0..BLOCKS)
                        .collect::<Vec<_>>()
                        .choose_multiple(&mut rng, count)
                        .cloned()
                        .collect();
                    picks.sort_unstable();
                    let steps = if kind == TransKind::Truncate {
                        rng.gen_range(1..=3)
                    } else {
                        1
                    };
                    let mut t = eng.begin(kind).unwrap();
                    for step in 0..steps {
                        for &i in &picks {
                            let id = t.read_buf(first + i, btype_for(i)).unwrap();
                            let v = n * 8 + step as u64;
                            t.data_mut(id)[slot_range(tid)].copy_from_slice(&v.to_le_bytes());
                            t.log_range(id, slot_range(tid));
                            last[i as usize] = v;
                        }
                        if step + 1 < steps {
                            t.roll().unwrap();
                        }
                    }
                    let seq = t.commit().unwrap();
                    if rng.gen_ratio(1, 50) {
                        eng.force(seq).unwrap();
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
                last
            })
        })
        .collect();
    // Watchdog: no progress for 60 s is a deadlock.
    let mut seen = 0;
    let mut since = Instant::now();
    while !handles.iter().all(|h| h.is_finished()) {
        std::thread::sleep(Duration::from_millis(200));
        let now = done.load(Ordering::Relaxed);
        if now != seen {
            seen = now;
            since = Instant::now();
        }
        assert!(
            since.elapsed() < Duration::from_secs(60),
            "no transaction finished for 60 s: deadlock ({now} done)\n{:#?}",
            eng.stats()
        );
    }
    let lasts: Vec<Vec<u64>> = handles
        .into_iter()
        .map(|h| h.join().expect("worker panicked"))
        .collect();
    let elapsed = started.elapsed();
    eng.force_all().unwrap();
    let st = eng.stats();
    let waits: u64 = st.kinds.iter().map(|k| k.waits).sum();
    println!(
        "{} transactions in {:.2?}: {} checkpoints, {} log wraps, {} waits, {} overruns, peak charged {} of {} bytes, {} rolls borrowed {} bytes from the emergency reserve, {} home writes",
        THREADS * PER_THREAD,
        elapsed,
        st.checkpoints,
        st.log_wraps,
        waits,
        st.overruns,
        st.mem.peak_charged_bytes,
        BUDGET,
        st.mem.roll_borrows,
        st.mem.roll_borrowed_bytes,
        st.home_writes
    );
    assert_eq!(done.load(Ordering::Relaxed), (THREADS * PER_THREAD) as u64);
    assert_eq!(st.overruns, 0);
    assert!(
        st.log_wraps >= 10,
        "log wrapped only {} times",
        st.log_wraps
    );
    assert!(waits > 0, "no reservation ever waited");
    // Nothing is ever charged past the budget: a roll borrows only from the emergency reserve,
    // which is part of the budget, and waits when that is in use.
    assert!(
        st.mem.peak_charged_bytes <= BUDGET,
        "charged {} past the budget {BUDGET}",
        st.mem.peak_charged_bytes
    );
    let eng = Arc::try_unwrap(eng).ok().expect("engine still shared");
    eng.crash();

    // Recovery replays cleanly and brings back every thread's last value in every block.
    let image: Arc<dyn Device> = Arc::new(MemDevice::from_bytes(4096, dev.snapshot()));
    let eng = Engine::mount(image, EngineOptions::default()).expect("remount after crash");
    assert!(!eng.recovered().clean);
    let mut t = eng.begin(TransKind::Setattr).unwrap();
    for i in 0..BLOCKS {
        let id = t.read_buf(first + i, btype_for(i)).unwrap();
        for (tid, last) in lasts.iter().enumerate() {
            let got = u64::from_le_bytes(t.data(id)[slot_range(tid)].try_into().unwrap());
            assert_eq!(got, last[i as usize], "block {i}, thread {tid}");
        }
        // Reading only: nothing pinned, so the transaction stays within its one-buffer entry.
    }
    t.cancel().unwrap();
    eng.unmount().unwrap();
}
