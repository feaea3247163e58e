//! The allocator against a model: random allocations near random targets and random frees (whole
//! extents or their first part), one transaction each, over four AGs with 512-byte blocks so the
//! free-space trees grow. After every operation the extent handed out lies in free space and
//! overlaps nothing allocated; at the end, and again after a crash and recovery, every block of
//! every AG's space is exactly one of: free (in both trees alike), on the free list, a tree node,
//! or allocated — none twice, none leaked — and freeing everything merges back.

mod common;

use common::*;
use proptest::prelude::*;
use std::collections::BTreeSet;
use std::sync::Arc;
use ticketfs::alloc::{format_all, Allocator};
use ticketfs::btree::{Btree, Root};
use ticketfs::device::{Device, MemDevice};
use ticketfs::format::ag::AG_RESERVED_BLOCKS;
use ticketfs::format::inode::{ino_of, inodes_per_block};
use ticketfs::format::BlockType;
use ticketfs::mem::OverrunPolicy;
use ticketfs::{Engine, EngineOptions, TransKind};

#[derive(Debug, Clone)]
enum Op {
    Alloc { target: u64, min: u64, max: u64 },
    Free { pick: usize, part: bool },
    AllocInode { near: usize },
    FreeInode { pick: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u64..1 << 20, 1u64..24, 0u64..40).prop_map(|(target, min, extra)| Op::Alloc { target, min, max: min + extra }),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(pick, part)| Op::Free { pick, part }),
        2 => any::<usize>().prop_map(|near| Op::AllocInode { near }),
        1 => any::<usize>().prop_map(|pick| Op::FreeInode { pick }),
    ]
}

/// Checks that every block of every AG's space is accounted for exactly once, and that the
/// inode chunks' free masks match the inodes in use.
fn check_space(
    eng: &Engine,
    alloc: &Allocator,
    allocated: &[(u64, u64)],
    inodes: &BTreeSet<u64>,
) -> Result<(), TestCaseError> {
    let mut tx = eng.begin(TransKind::Write).unwrap();
    for agno in 0..eng.geometry().ag_count {
        let space = alloc.free_space(&mut tx, agno).unwrap();
        let (by_bno, by_cnt, hdr) = (
            space.by_bno.clone(),
            space.by_cnt.clone(),
            space.hdr.clone(),
        );
        let mut a = by_bno.clone();
        let mut b = by_cnt;
        a.sort_unstable();
        b.sort_unstable();
        prop_assert_eq!(&a, &b, "AG {}: the two free-space trees disagree", agno);
        prop_assert_eq!(hdr.free_blocks, a.iter().map(|e| e.1).sum::<u64>());
        prop_assert_eq!(hdr.longest, a.iter().map(|e| e.1).max().unwrap_or(0));
        let (first, end) = alloc.initial_free(agno);
        let start = alloc.ag_start(agno);
        let mut seen = BTreeSet::new();
        let mut claim = |b: u64, what: &str| -> Result<(), TestCaseError> {
            prop_assert!(
                b >= first && b < end,
                "AG {}: {} block {} outside {}..{}",
                agno,
                what,
                b,
                first,
                end
            );
            prop_assert!(
                seen.insert(b),
                "AG {}: block {} counted twice ({})",
                agno,
                b,
                what
            );
            Ok(())
        };
        for &(s, l) in &a {
            for x in s..s + l {
                claim(x, "free")?;
            }
        }
        for &r in &hdr.agfl {
            claim(start + r as u64, "free-list")?;
        }
        for (bt, root, level) in [
            (BlockType::BtreeBno, hdr.bno_root, hdr.bno_level),
            (BlockType::BtreeCnt, hdr.cnt_root, hdr.cnt_level),
        ] {
            let t = Btree::open(bt, agno as u64, Root { blkno: root, level });
            for n in t.blocks(&mut tx).unwrap() {
                if n >= start + AG_RESERVED_BLOCKS {
                    claim(n, "tree node")?;
                }
            }
        }
        for &(s, l) in allocated.iter().filter(|e| alloc.agno_of(e.0) == agno) {
            for x in s..s + l {
                claim(x, "allocated")?;
            }
        }
        for &n in &space.ino_nodes {
            if n >= start + AG_RESERVED_BLOCKS {
                claim(n, "inode-tree node")?;
            }
        }
        let ipb = inodes_per_block(eng.geometry().block_size);
        let mut free_inodes = 0;
        for &(chunk, mask) in &space.chunks {
            claim(chunk, "inode chunk")?;
            for slot in 0..ipb {
                let used = inodes.contains(&ino_of(chunk, slot));
                prop_assert_eq!(
                    mask & (1 << slot) == 0,
                    used,
                    "chunk {} slot {}",
                    chunk,
                    slot
                );
                free_inodes += !used as u64;
            }
        }
        prop_assert_eq!(hdr.free_inodes, free_inodes);
        prop_assert_eq!(hdr.inodes, space.chunks.len() as u64 * ipb as u64);
        prop_assert_eq!(seen.len() as u64, end - first, "AG {}: blocks leaked", agno);
    }
    tx.cancel().unwrap();
    Ok(())
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let g = geometry(512, 16384, 0);
    prop_assert!(g.ag_count > 1);
    let dev = Arc::new(MemDevice::from_bytes(512, formatted_image(g)));
    let opts = EngineOptions {
        overrun: OverrunPolicy::Panic,
        ..Default::default()
    };
    let eng = Engine::mount(dev.clone(), opts).unwrap();
    format_all(&eng).unwrap();
    let alloc = Allocator::open(&eng).unwrap();
    let mut allocated: Vec<(u64, u64)> = Vec::new();
    let mut inodes: BTreeSet<u64> = BTreeSet::new();
    for op in ops {
        let mut tx = eng.begin(TransKind::Write).unwrap();
        match op {
            Op::Alloc { target, min, max } => {
                let target = target % g.block_count;
                if let Some((s, l)) = alloc.alloc(&mut tx, target, min, max).unwrap() {
                    prop_assert!(
                        l >= min && l <= max,
                        "got {} blocks for {}..={}",
                        l,
                        min,
                        max
                    );
                    let agno = alloc.agno_of(s);
                    let (first, end) = alloc.initial_free(agno);
                    prop_assert!(s >= first && s + l <= end);
                    for &(a, b) in &allocated {
                        prop_assert!(
                            s + l <= a || a + b <= s,
                            "{}+{} overlaps allocated {}+{}",
                            s,
                            l,
                            a,
                            b
                        );
                    }
                    allocated.push((s, l));
                }
            }
            Op::AllocInode { near } => {
                let near = if inodes.is_empty() {
                    0
                } else {
                    *inodes.iter().nth(near % inodes.len()).unwrap()
                };
                let ino = alloc
                    .alloc_inode(&mut tx, near)
                    .unwrap()
                    .expect("room for an inode");
                prop_assert!(inodes.insert(ino), "inode {} handed out twice", ino);
            }
            Op::FreeInode { pick } => {
                if !inodes.is_empty() {
                    let ino = *inodes.iter().nth(pick % inodes.len()).unwrap();
                    alloc.free_inode(&mut tx, ino).unwrap();
                    inodes.remove(&ino);
                }
            }
            Op::Free { pick, part } => {
                if !allocated.is_empty() {
                    let i = pick % allocated.len();
                    let (s, l) = allocated[i];
                    if part && l > 1 {
                        alloc.free(&mut tx, s, l / 2).unwrap();
                        allocated[i] = (s + l / 2, l - l / 2);
                    } else {
                        alloc.free(&mut tx, s, l).unwrap();
                        allocated.swap_remove(i);
                    }
                }
            }
        }
        tx.commit().unwrap();
    }
    check_space(&eng, &alloc, &allocated, &inodes)?;
    // Freeing a free extent again is refused as corruption, and changes nothing.
    if let Some(&(s, l)) = allocated.first() {
        let mut tx = eng.begin(TransKind::Write).unwrap();
        alloc.free(&mut tx, s, l).unwrap();
        tx.commit().unwrap();
        let mut tx = eng.begin(TransKind::Write).unwrap();
        prop_assert!(alloc.free(&mut tx, s, l).is_err());
        tx.cancel().unwrap();
        allocated.remove(0);
    }
    eng.force_all().unwrap();
    eng.crash();

    let image: Arc<dyn Device> = Arc::new(MemDevice::from_bytes(512, dev.snapshot()));
    let eng = Engine::mount(
        image,
        EngineOptions {
            overrun: OverrunPolicy::Panic,
            ..Default::default()
        },
    )
    .unwrap();
    let alloc = Allocator::open(&eng).unwrap();
    check_space(&eng, &alloc, &allocated, &inodes)?;
    for (s, l) in allocated.drain(..) {
        let mut tx = eng.begin(TransKind::Write).unwrap();
        alloc.free(&mut tx, s, l).unwrap();
        tx.commit().unwrap();
    }
    check_space(&eng, &alloc, &[], &inodes)?;
    eng.unmount().unwrap();
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn allocator_matches_model(ops in prop::collection::vec(op(), 1..700)) {
        run(ops)?;
    }
}

#[test]
fn fragmenting_and_merging_grow_and_shrink_the_trees() {
    // Single blocks at every other address fragment the free space into many extents (deep
    // trees); freeing them all must merge back.
    let mut ops = Vec::new();
    for i in 0..900u64 {
        ops.push(Op::Alloc {
            target: 1400 + 2 * i,
            min: 1,
            max: 1,
        });
    }
    // 512-byte blocks hold one inode per chunk: 300 inodes grow the inode-chunk tree too.
    for i in 0..300usize {
        ops.push(Op::AllocInode { near: i });
        if i % 3 == 0 {
            ops.push(Op::FreeInode { pick: i * 7 });
        }
    }
    run(ops).unwrap();
}

/// An engine on a fresh 512-byte-block image whose CIL is only checkpointed when forced, so
/// blocks freed by a commit stay busy for as long as a test looks.
fn engine_without_timer() -> (Engine, Allocator) {
    let g = geometry(512, 16384, 0);
    let dev = Arc::new(MemDevice::from_bytes(512, formatted_image(g)));
    let opts = EngineOptions {
        overrun: OverrunPolicy::Panic,
        log: ticketfs::log::LogConfig {
            cil_timer: std::time::Duration::from_secs(3600),
            ..Default::default()
        },
        ..Default::default()
    };
    let eng = Engine::mount(dev, opts).unwrap();
    format_all(&eng).unwrap();
    let alloc = Allocator::open(&eng).unwrap();
    (eng, alloc)
}

fn alloc_one(
    eng: &Engine,
    alloc: &Allocator,
    target: u64,
    min: u64,
    max: u64,
) -> Option<(u64, u64)> {
    let mut tx = eng.begin(TransKind::Write).unwrap();
    let got = alloc.alloc(&mut tx, target, min, max).unwrap();
    tx.commit().unwrap();
    got
}

fn free_one(eng: &Engine, alloc: &Allocator, (s, l): (u64, u64)) {
    let mut tx = eng.begin(TransKind::Write).unwrap();
    alloc.free(&mut tx, s, l).unwrap();
    tx.commit().unwrap();
}

#[test]
fn blocks_freed_by_a_commit_not_yet_durable_are_passed_over_without_forcing_the_log() {
    let (eng, alloc) = engine_without_timer();
    let (s, l) = alloc_one(&eng, &alloc, 3000, 8, 8).expect("room");
    eng.force_all().unwrap();
    free_one(&eng, &alloc, (s, l));
    let (forces, busy_forces) = (eng.stats().forces, eng.stats().busy_forces);
    // The same request again, aimed at the blocks just freed, many times over: each round's
    // blocks are busy for the next.
    let mut last = (s, l);
    for _ in 0..50 {
        let (s2, l2) = alloc_one(&eng, &alloc, s, 8, 8).expect("room");
        assert_eq!(l2, 8);
        assert!(
            s2 + l2 <= last.0 || last.0 + last.1 <= s2,
            "{s2}+{l2} reuses the busy {}+{}",
            last.0,
            last.1
        );
        assert!(s2.abs_diff(s) < 2048, "{s2} went far from {s}");
        free_one(&eng, &alloc, (s2, l2));
        last = (s2, l2);
    }
    assert_eq!(eng.stats().busy_forces, busy_forces);
    assert_eq!(eng.stats().forces, forces);
    eng.unmount().unwrap();
}

#[test]
fn when_only_busy_blocks_fit_the_log_is_forced_and_they_are_handed_out() {
    let (eng, alloc) = engine_without_timer();
    let mut all = Vec::new();
    while let Some(e) = alloc_one(&eng, &alloc, 0, 1, 1 << 20) {
        all.push(e);
    }
    let (s, l) = *all.iter().max_by_key(|e| e.1).expect("something allocated");
    free_one(&eng, &alloc, (s, l));
    let busy_forces = eng.stats().busy_forces;
    // Only the freed extent is that long (what else is free is each AG's reserve).
    let (s2, l2) = alloc_one(&eng, &alloc, s, l, l).expect("the freed extent");
    assert!(
        s2 >= s && s2 + l2 <= s + l,
        "{s2}+{l2} is not in the freed {s}+{l}"
    );
    assert_eq!(eng.stats().busy_forces, busy_forces + 1);
    eng.unmount().unwrap();
}
