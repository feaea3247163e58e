//! Engine micro-benchmarks: begin+commit of a 4-buffer transaction without a log force, with
//! reservations on and off (the cost of the accounting), and the latency of a log force on a
//! file device (one checkpoint and a device flush).

use criterion::{criterion_group, criterion_main, Criterion};
use std::sync::Arc;
use ticketfs::device::{Device, FileDevice, MemDevice};
use ticketfs::format::{BlockType, Geometry, BLOCK_HEADER_BYTES};
use ticketfs::mem::MemRes;
use ticketfs::trans::ResvTable;
use ticketfs::{Engine, EngineOptions, TransKind};

const UUID: [u8; 16] = [9, 8, 7, 6, 5, 4, 0x43, 2, 0x81, 0, 1, 2, 3, 4, 5, 6];

fn geometry() -> Geometry {
    let probe = Geometry::new(4096, 16384, 16, 1).unwrap();
    Geometry::new(4096, 16384, ResvTable::new(&probe).min_log_blocks() * 4, 1).unwrap()
}

fn mem_engine(memres: MemRes) -> (Engine, u64) {
    let g = geometry();
    let dev = MemDevice::new(4096, g.block_count);
    ticketfs::engine::format(&dev, g, UUID, "bench").unwrap();
    let opts = EngineOptions {
        memres,
        mem_budget_bytes: 64 << 20,
        ..Default::default()
    };
    (
        Engine::mount(Arc::new(dev), opts).unwrap(),
        g.first_free_block(),
    )
}

fn four_buffers(eng: &Engine, first: u64, n: u64) {
    let mut t = eng.begin(TransKind::Create).unwrap();
    for i in 0..4 {
        let b = t.read_buf(first + i, BlockType::InodeChunk).unwrap();
        t.data_mut(b)[BLOCK_HEADER_BYTES..BLOCK_HEADER_BYTES + 8].copy_from_slice(&n.to_le_bytes());
        t.log_range(b, BLOCK_HEADER_BYTES..BLOCK_HEADER_BYTES + 8);
    }
    t.commit().unwrap();
}

fn setup(eng: &Engine, first: u64) {
    let mut t = eng.begin(TransKind::Create).unwrap();
    for i in 0..4 {
        t.get_buf(first + i, BlockType::InodeChunk, 1).unwrap();
    }
    t.commit().unwrap();
}

fn begin_commit(c: &mut Criterion) {
    for (name, memres) in [
        ("begin_commit_4buf_memres_on", MemRes::On),
        ("begin_commit_4buf_memres_off", MemRes::Off),
    ] {
        let (eng, first) = mem_engine(memres);
        setup(&eng, first);
        let mut n = 0u64;
        c.bench_function(name, |b| {
            b.iter(|| {
                n += 1;
                four_buffers(&eng, first, n);
            })
        });
        eng.unmount().unwrap();
    }
}

fn log_force(c: &mut Criterion) {
    let dir =
        tempfile::tempdir_in(std::env::var("BENCH_DIR").unwrap_or_else(|_| ".".into())).unwrap();
    let path = dir.path().join("image");
    let g = geometry();
    std::fs::File::create(&path)
        .unwrap()
        .set_len(g.block_count * 4096)
        .unwrap();
    let dev: Arc<dyn Device> = Arc::new(FileDevice::open(&path, 4096, true).unwrap());
    ticketfs::engine::format(&*dev, g, UUID, "bench").unwrap();
    let eng = Engine::mount(dev, EngineOptions::default()).unwrap();
    let first = g.first_free_block();
    setup(&eng, first);
    let mut n = 0u64;
    c.bench_function("commit_and_force_file_device", |b| {
        b.iter(|| {
            n += 1;
            four_buffers(&eng, first, n);
            eng.force_all().unwrap();
        })
    });
    eng.unmount().unwrap();
}

criterion_group!(benches, begin_commit, log_force);
criterion_main!(benches);
