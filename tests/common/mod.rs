//! Helpers shared by the engine's integration tests.
#![allow(dead_code)]

pub mod mount;

use std::sync::Arc;
use ticketfs::device::{Device, MemDevice};
use ticketfs::format::{BlockType, Geometry, Uuid};
use ticketfs::trans::ResvTable;
use ticketfs::{Engine, EngineOptions};

pub const UUID: Uuid = [7, 1, 2, 3, 4, 5, 0x46, 7, 0x88, 9, 10, 11, 12, 13, 14, 15];

/// Geometry with the smallest log the table allows for it (plus `extra_log` blocks).
pub fn geometry(block_size: u32, block_count: u64, extra_log: u64) -> Geometry {
    let probe = Geometry::new(block_size, block_count, 16, 1).expect("probe geometry");
    let log = ResvTable::new(&probe).min_log_blocks() + extra_log;
    // As many AGs (up to 4) as leave AG 0 room for the log.
    let ags = (1..=4u32)
        .rev()
        .find(|&n| block_count / n as u64 > probe.log_start + log + 64)
        .unwrap_or(1);
    Geometry::new(block_size, block_count, log, ags).expect("geometry")
}

/// A formatted image in memory.
pub fn formatted_image(g: Geometry) -> Vec<u8> {
    let dev = MemDevice::new(g.block_size, g.block_count);
    ticketfs::engine::format(&dev, g, UUID, "test").expect("format");
    dev.snapshot()
}

/// First block the tests may use as metadata, and how many there are.
pub fn data_blocks(g: &Geometry) -> (u64, u64) {
    let first = g.first_free_block();
    (first, g.backup_sb_blkno() - first)
}

pub fn mount(dev: Arc<dyn Device>, opts: EngineOptions) -> Engine {
    Engine::mount(dev, opts).expect("mount")
}

/// A block type for test block `i`, so every type is exercised.
pub fn btype_for(i: u64) -> BlockType {
    BlockType::ALL[(i % BlockType::ALL.len() as u64) as usize]
}
