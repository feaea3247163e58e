//! File data against a model: random writes, reads, truncates, hole punches and preallocations on
//! one file (512-byte blocks, so the extent map becomes a tree), one operation at a time; the file
//! must always read back as the model. At the end, and after a crash and recovery, every block of
//! the device is exactly one of: free, free list, free-space or inode tree node, inode chunk,
//! file data, extent-map node. A byte at 1 TiB in a sparse file on a 4 GiB image is found by
//! SEEK_DATA.

mod common;

use common::*;
use proptest::prelude::*;
use std::collections::BTreeSet;
use std::sync::Arc;
use ticketfs::alloc::{format_all, Allocator};
use ticketfs::btree::{Btree, Root};
use ticketfs::device::{Device, MemDevice};
use ticketfs::file::readahead::{READAHEAD_SLOTS, READAHEAD_WORKERS};
use ticketfs::file::{admit_all, extmap, Allocate, FileIo, ReadAhead};
use ticketfs::format::ag::AG_RESERVED_BLOCKS;
use ticketfs::format::inode::{DataFormat, Inode, Time};
use ticketfs::format::BlockType;
use ticketfs::mem::OverrunPolicy;
use ticketfs::{inode, Engine, EngineOptions, TransKind};

const NOW: Time = Time {
    sec: 1_700_000_000,
    nsec: 5,
};

/// A new regular file inode (what the filesystem layer's create will do).
fn new_file(eng: &Engine, alloc: &Allocator) -> u64 {
    let mut tx = eng.begin(TransKind::Create).unwrap();
    let ino = alloc.alloc_inode(&mut tx, 0).unwrap().unwrap();
    let r = inode::join_new(&mut tx, ino).unwrap();
    let i = Inode {
        mode: 0o100644,
        nlink: 1,
        format: DataFormat::Extents,
        ..Default::default()
    };
    inode::write(&mut tx, &r, &i);
    tx.commit().unwrap();
    ino
}

#[derive(Debug, Clone)]
enum Op {
    Write(u64, usize, u8),
    Truncate(u64),
    Punch(u64, u64),
    Prealloc(u64, u64, bool),
    Read(u64, usize),
}

const SPAN: u64 = 300 * 1024;

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..SPAN, 1usize..6000, 1u8..255).prop_map(|(o, l, b)| Op::Write(o, l, b)),
        1 => (0..SPAN).prop_map(Op::Truncate),
        1 => (0..SPAN, 1..40_000u64).prop_map(|(o, l)| Op::Punch(o, l)),
        1 => (0..SPAN, 1..40_000u64, any::<bool>()).prop_map(|(o, l, k)| Op::Prealloc(o, l, k)),
        2 => (0..SPAN, 1usize..9000).prop_map(|(o, l)| Op::Read(o, l)),
    ]
}

/// Every block of every AG's space is accounted for exactly once (the files are `inos`).
fn check_blocks(eng: &Engine, alloc: &Allocator, inos: &[u64]) -> Result<(), TestCaseError> {
    let mut tx = eng.begin(TransKind::Read).unwrap();
    let mut used = BTreeSet::new();
    let mut claim = |b: u64, what: &str| -> Result<(), TestCaseError> {
        prop_assert!(used.insert(b), "block {} counted twice ({})", b, what);
        Ok(())
    };
    for &ino in inos {
        let (_, file) = inode::read(&mut tx, ino).unwrap();
        let mut file_blocks = 0;
        for e in extmap::all(&mut tx, ino, &file).unwrap() {
            for b in e.start..e.start + e.len as u64 {
                claim(b, "file data")?;
            }
            file_blocks += e.len as u64;
        }
        if file.format == DataFormat::Btree {
            let t = Btree::open(
                BlockType::BtreeExtent,
                ino,
                Root {
                    blkno: file.root,
                    level: file.root_level,
                },
            );
            for b in t.blocks(&mut tx).unwrap() {
                claim(b, "extent-map node")?;
                file_blocks += 1;
            }
        }
        prop_assert_eq!(file.blocks, file_blocks, "inode {} block count", ino);
    }
    let mut expect = 0;
    for agno in 0..eng.geometry().ag_count {
        let sp = alloc.free_space(&mut tx, agno).unwrap();
        let start = alloc.ag_start(agno);
        let (first, end) = alloc.initial_free(agno);
        expect += end - first;
        for &(s, l) in &sp.by_bno {
            for b in s..s + l {
                claim(b, "free")?;
            }
        }
        for &r in &sp.hdr.agfl {
            claim(start + r as u64, "free list")?;
        }
        for &(c, _) in &sp.chunks {
            claim(c, "inode chunk")?;
        }
        let mut nodes = sp.ino_nodes.clone();
        for (bt, root, level) in [
            (BlockType::BtreeBno, sp.hdr.bno_root, sp.hdr.bno_level),
            (BlockType::BtreeCnt, sp.hdr.cnt_root, sp.hdr.cnt_level),
        ] {
            nodes.extend(
                Btree::open(bt, agno as u64, Root { blkno: root, level })
                    .blocks(&mut tx)
                    .unwrap(),
            );
        }
        for n in nodes
            .into_iter()
            .filter(|&n| n >= start + AG_RESERVED_BLOCKS)
        {
            claim(n, "tree node")?;
        }
    }
    prop_assert_eq!(used.len() as u64, expect, "blocks leaked");
    tx.cancel().unwrap();
    Ok(())
}

fn read_all(io: &FileIo<'_>, ino: u64, size: usize) -> Vec<u8> {
    io.read(ino, 0, size + 100).unwrap()
}

/// Equal bytes, or a failure naming the length or the first difference (not both buffers).
fn same(got: &[u8], want: &[u8], what: &str) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.len(), want.len(), "{}: length", what);
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        prop_assert!(
            false,
            "{}: first difference at byte {}: {} instead of {}",
            what,
            i,
            got[i],
            want[i]
        );
    }
    Ok(())
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let g = geometry(512, 16384, 0);
    let dev = Arc::new(MemDevice::from_bytes(512, formatted_image(g)));
    let opts = EngineOptions {
        overrun: OverrunPolicy::Panic,
        ..Default::default()
    };
    let eng = Engine::mount(dev.clone(), opts).unwrap();
    format_all(&eng).unwrap();
    let alloc = Allocator::open(&eng).unwrap();
    let ino = new_file(&eng, &alloc);
    let io = FileIo {
        eng: &eng,
        alloc: &alloc,
        seqs: None,
        ra: None,
    };
    let mut model: Vec<u8> = Vec::new();
    for op in ops {
        match op {
            Op::Read(o, l) => {
                let got = io.read(ino, o, l).unwrap();
                let a = (o as usize).min(model.len());
                let b = (o as usize + l).min(model.len());
                same(&got, &model[a..b], &format!("read {o}+{l}"))?;
            }
            change => apply(&io, ino, &mut model, &change),
        }
    }
    same(&read_all(&io, ino, model.len()), &model, "whole file")?;
    check_blocks(&eng, &alloc, &[ino])?;
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
    let io = FileIo {
        eng: &eng,
        alloc: &alloc,
        seqs: None,
        ra: None,
    };
    same(
        &read_all(&io, ino, model.len()),
        &model,
        "whole file after recovery",
    )?;
    check_blocks(&eng, &alloc, &[ino])?;
    io.truncate(ino, 0, NOW).unwrap();
    check_blocks(&eng, &alloc, &[ino])?;
    eng.unmount().unwrap();
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn file_matches_model(ops in prop::collection::vec(op(), 1..120)) {
        run(ops)?;
    }
}

#[test]
fn many_small_extents_make_a_tree() {
    // Every other block written: hundreds of extents, a multi-level extent tree.
    let ops = (0..600u64).map(|i| Op::Write(i * 1024, 512, 7)).collect();
    run(ops).unwrap();
}

#[test]
fn byte_at_one_tebibyte_in_a_sparse_file() {
    let g = geometry(4096, 1 << 20, 0);
    let dev = Arc::new(MemDevice::new(4096, g.block_count));
    ticketfs::engine::format(&*dev, g, UUID, "sparse").unwrap();
    let eng = Engine::mount(dev, EngineOptions::default()).unwrap();
    format_all(&eng).unwrap();
    let alloc = Allocator::open(&eng).unwrap();
    let ino = new_file(&eng, &alloc);
    let io = FileIo {
        eng: &eng,
        alloc: &alloc,
        seqs: None,
        ra: None,
    };
    let tib = 1u64 << 40;
    io.write(ino, tib, b"x", NOW, false, admit_all).unwrap();
    assert_eq!(io.read(ino, tib, 10).unwrap(), b"x");
    assert_eq!(io.read(ino, tib - 3, 3).unwrap(), vec![0; 3]);
    assert_eq!(io.seek(ino, 0, true).unwrap(), Some(tib - tib % 4096));
    assert_eq!(io.seek(ino, 0, false).unwrap(), Some(0));
    assert_eq!(io.seek(ino, tib, false).unwrap(), Some(tib + 1));
    let mut tx = eng.begin(TransKind::Read).unwrap();
    let (_, i) = inode::read(&mut tx, ino).unwrap();
    assert_eq!((i.size, i.blocks), (tib + 1, 1));
    tx.cancel().unwrap();
    eng.unmount().unwrap();
}

/// Read-ahead (`file::readahead`) racing the changes it must never hide: two files, sequential
/// reads of one in pieces (which queue pieces ahead for the two worker threads) between writes,
/// truncates, punched holes and preallocations of both (so blocks freed by one are taken by the
/// other). Every read must equal the model, whatever the workers read meanwhile.
#[derive(Debug, Clone)]
enum RaOp {
    /// On file 0 or 1.
    Change(usize, Op),
    /// `n` reads of one piece each, in sequence from piece `p` of file 0.
    Stream(u64, u64),
}

/// The reads of a stream: as long as read-ahead's shortest followed read.
const RA_PIECE: usize = ticketfs::file::readahead::READAHEAD_MIN_BYTES;
const RA_SPAN: u64 = 8 * RA_PIECE as u64;

fn ra_op() -> impl Strategy<Value = RaOp> {
    let change = prop_oneof![
        4 => (0..RA_SPAN, 1usize..200_000, 1u8..255).prop_map(|(o, l, b)| Op::Write(o, l, b)),
        1 => (0..RA_SPAN).prop_map(Op::Truncate),
        1 => (0..RA_SPAN, 1..300_000u64).prop_map(|(o, l)| Op::Punch(o, l)),
        1 => (0..RA_SPAN, 1..300_000u64, any::<bool>()).prop_map(|(o, l, k)| Op::Prealloc(o, l, k)),
    ];
    prop_oneof![
        3 => (0..2usize, change).prop_map(|(f, c)| RaOp::Change(f, c)),
        2 => (0..8u64, 1..8u64).prop_map(|(p, n)| RaOp::Stream(p, n)),
    ]
}

fn apply(io: &FileIo<'_>, ino: u64, model: &mut Vec<u8>, op: &Op) {
    match *op {
        Op::Write(o, l, b) => {
            let data: Vec<u8> = (0..l).map(|i| b.wrapping_add(i as u8)).collect();
            io.write(ino, o, &data, NOW, false, admit_all).unwrap();
            let end = o as usize + l;
            if model.len() < end {
                model.resize(end, 0);
            }
            model[o as usize..end].copy_from_slice(&data);
        }
        Op::Truncate(s) => {
            io.truncate(ino, s, NOW).unwrap();
            model.resize(s as usize, 0);
        }
        Op::Punch(o, l) => {
            io.punch_hole(ino, o, l, NOW).unwrap();
            let a = (o as usize).min(model.len());
            let b = ((o + l) as usize).min(model.len());
            model[a..b].fill(0);
        }
        Op::Prealloc(o, l, keep) => {
            let req = Allocate {
                off: o,
                len: l,
                keep_size: keep,
                zero: false,
            };
            io.allocate(ino, req, NOW).unwrap();
            if !keep && model.len() < (o + l) as usize {
                model.resize((o + l) as usize, 0);
            }
        }
        Op::Read(..) => unreachable!("a read changes nothing"),
    }
}

/// Runs `f` on two fresh files of a fresh filesystem with read-ahead on and its worker threads
/// running; then checks both files' blocks and unmounts.
fn with_readahead<R>(
    f: impl FnOnce(&FileIo<'_>, &ReadAhead, [u64; 2]) -> Result<R, TestCaseError>,
) -> Result<R, TestCaseError> {
    let g = geometry(512, 16384, 0);
    let dev = Arc::new(MemDevice::from_bytes(512, formatted_image(g)));
    let opts = EngineOptions {
        overrun: OverrunPolicy::Panic,
        ..Default::default()
    };
    let eng = Engine::mount(dev, opts).unwrap();
    format_all(&eng).unwrap();
    let alloc = Allocator::open(&eng).unwrap();
    let inos = [new_file(&eng, &alloc), new_file(&eng, &alloc)];
    let ra = ReadAhead::new(512, RA_PIECE);
    let io = FileIo {
        eng: &eng,
        alloc: &alloc,
        seqs: None,
        ra: Some(&ra),
    };
    let out = std::thread::scope(|s| {
        for _ in 0..READAHEAD_WORKERS {
            s.spawn(|| io.read_ahead(&ra));
        }
        let out = f(&io, &ra, inos);
        ra.stop();
        out
    })?;
    check_blocks(&eng, &alloc, &inos)?;
    eng.unmount().unwrap();
    Ok(out)
}

/// Reads piece `k` of file `ino` and compares it with the model.
fn read_piece(io: &FileIo<'_>, ino: u64, model: &[u8], k: u64) -> Result<(), TestCaseError> {
    let o = k * RA_PIECE as u64;
    let got = io.read(ino, o, RA_PIECE).unwrap();
    let a = (o as usize).min(model.len());
    let b = (o as usize + RA_PIECE).min(model.len());
    same(&got, &model[a..b], &format!("read of piece {k}"))
}

fn run_with_readahead(ops: Vec<RaOp>) -> Result<(), TestCaseError> {
    with_readahead(|io, _, inos| {
        let mut models: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
        for op in &ops {
            match op {
                RaOp::Change(f, c) => apply(io, inos[*f], &mut models[*f], c),
                RaOp::Stream(p, n) => {
                    for k in *p..p + n {
                        read_piece(io, inos[0], &models[0], k)?;
                    }
                }
            }
        }
        for (f, m) in models.iter().enumerate() {
            same(
                &read_all(io, inos[f], m.len()),
                m,
                &format!("whole file {f}"),
            )?;
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn reads_match_the_model_with_readahead_racing_changes(
        ops in prop::collection::vec(ra_op(), 1..60)
    ) {
        run_with_readahead(ops)?;
    }
}

/// Waits (10 s at most) until the workers have read `n` pieces in all.
fn wait_read(ra: &ReadAhead, n: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while ra.stats().read < n {
        assert!(
            std::time::Instant::now() < deadline,
            "read ahead: {:?}",
            ra.stats()
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

#[test]
fn a_piece_read_ahead_is_used_and_one_a_write_came_after_is_dropped() {
    with_readahead(|io, ra, [ino, other]| {
        let mut model = Vec::new();
        apply(io, ino, &mut model, &Op::Write(0, RA_SPAN as usize, 9));
        // Two reads in sequence: the pieces after them are queued, one per slot.
        read_piece(io, ino, &model, 0)?;
        read_piece(io, ino, &model, 1)?;
        wait_read(ra, READAHEAD_SLOTS as u64);
        // An overwrite inside piece 2, and a write to the other file (which must not matter).
        apply(
            io,
            ino,
            &mut model,
            &Op::Write(2 * RA_PIECE as u64 + 7, 100, 200),
        );
        apply(io, other, &mut Vec::new(), &Op::Write(0, 4096, 1));
        // Piece 2's read is dropped, and so are 3 to 5 (read before the write to their file),
        // which are queued anew.
        read_piece(io, ino, &model, 2)?;
        let st = ra.stats();
        prop_assert_eq!((st.hits, st.stale), (0, 4), "{:?}", st);
        wait_read(ra, 8);
        read_piece(io, ino, &model, 3)?;
        prop_assert_eq!(ra.stats().hits, 1, "{:?}", ra.stats());
        // Piece 7 is queued, the last of the file.
        wait_read(ra, 9);
        read_piece(io, ino, &model, 4)?;
        prop_assert_eq!(ra.stats().hits, 2, "{:?}", ra.stats());
        // A truncate (block-aligned: no write) and regrowth under pieces 5 to 7 read ahead,
        // their blocks taken and written by the other file meanwhile: the request's walk of
        // the map finds holes, so zeros, never the old bytes nor the other file's.
        apply(io, ino, &mut model, &Op::Truncate(5 * RA_PIECE as u64));
        apply(io, other, &mut Vec::new(), &Op::Write(0, 3 * RA_PIECE, 3));
        apply(io, ino, &mut model, &Op::Truncate(RA_SPAN));
        for k in 5..8 {
            read_piece(io, ino, &model, k)?;
        }
        let st = ra.stats();
        prop_assert_eq!((st.hits, st.stale), (2, 7), "{:?}", st);
        Ok(())
    })
    .unwrap();
}
