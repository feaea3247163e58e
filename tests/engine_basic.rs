//! Basic engine behaviour: commit, force, clean unmount, crash and recovery, cancel.

mod common;

use common::*;
use std::sync::Arc;
use ticketfs::device::{Device, MemDevice};
use ticketfs::format::BLOCK_HEADER_BYTES;
use ticketfs::{EngineOptions, TransKind};

#[test]
fn commit_force_crash_recover() {
    let g = geometry(4096, 4096, 0);
    let dev = Arc::new(MemDevice::from_bytes(4096, formatted_image(g)));
    let (first, _) = data_blocks(&g);
    let eng = mount(dev.clone(), EngineOptions::default());
    let mut seq = 0;
    for i in 0..20u64 {
        let mut t = eng.begin(TransKind::Create).unwrap();
        let b = t.get_buf(first + i, btype_for(i), 42).unwrap();
        t.data_mut(b)[BLOCK_HEADER_BYTES..BLOCK_HEADER_BYTES + 8].copy_from_slice(&i.to_le_bytes());
        t.log_range(b, BLOCK_HEADER_BYTES..BLOCK_HEADER_BYTES + 8);
        seq = t.commit().unwrap();
    }
    eng.force(seq).unwrap();
    eng.crash();
    let snapshot = dev.snapshot();
    let dev2: Arc<dyn Device> = Arc::new(MemDevice::from_bytes(4096, snapshot));
    let eng = mount(dev2.clone(), EngineOptions::default());
    assert!(!eng.recovered().clean);
    assert!(eng.recovered().checkpoints_replayed > 0);
    for i in 0..20u64 {
        let mut t = eng.begin(TransKind::Setattr).unwrap();
        let b = t.read_buf(first + i, btype_for(i)).unwrap();
        assert_eq!(
            &t.data(b)[BLOCK_HEADER_BYTES..BLOCK_HEADER_BYTES + 8],
            &i.to_le_bytes()
        );
        t.cancel().unwrap();
    }
    eng.unmount().unwrap();
    let eng = mount(dev2, EngineOptions::default());
    assert!(eng.recovered().clean);
    eng.unmount().unwrap();
}

#[test]
fn cancel_of_dirty_transaction_shuts_down() {
    let g = geometry(4096, 4096, 0);
    let dev = Arc::new(MemDevice::from_bytes(4096, formatted_image(g)));
    let (first, _) = data_blocks(&g);
    let eng = mount(dev, EngineOptions::default());
    let mut t = eng.begin(TransKind::Create).unwrap();
    t.get_buf(first, btype_for(0), 1).unwrap();
    assert!(t.cancel().is_err());
    assert!(eng.is_shut_down());
    assert!(eng.begin(TransKind::Create).is_err());
}

/// Mounts `g`'s image on a device whose log writes take 150 ms each, with a 10 ms group-commit
/// timer, commits one change to block `blk`, and returns once the checkpoint writer is in the
/// middle of writing it.
fn commit_then_catch_checkpoint_in_flight(
    g: ticketfs::format::Geometry,
    blk: u64,
) -> (Arc<MemDevice>, ticketfs::Engine) {
    let mem = Arc::new(MemDevice::from_bytes(4096, formatted_image(g)));
    let slow = Arc::new(SlowDevice::new(
        mem.clone(),
        g.log_start..g.log_end(),
        std::time::Duration::from_millis(150),
    ));
    let mut opts = EngineOptions::default();
    opts.log.cil_timer = std::time::Duration::from_millis(10);
    let eng = mount(slow.clone(), opts);
    let mut t = eng.begin(TransKind::Create).unwrap();
    let b = t.get_buf(blk, btype_for(0), 42).unwrap();
    t.data_mut(b)[BLOCK_HEADER_BYTES..BLOCK_HEADER_BYTES + 8]
        .copy_from_slice(&0xfeedu64.to_le_bytes());
    t.log_range(b, BLOCK_HEADER_BYTES..BLOCK_HEADER_BYTES + 8);
    t.commit().unwrap();
    // The timer fires after 10 ms; the writer's first record write then sleeps 150 ms.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while slow.started.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(std::time::Instant::now() < until, "no checkpoint started");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    (mem, eng)
}

fn block_holds_change(image: Vec<u8>, blk: u64) -> bool {
    let dev: Arc<dyn Device> = Arc::new(MemDevice::from_bytes(4096, image));
    let eng = mount(dev, EngineOptions::default());
    let mut t = eng.begin(TransKind::Setattr).unwrap();
    let found = match t.read_buf(blk, btype_for(0)) {
        Ok(b) => t.data(b)[BLOCK_HEADER_BYTES..BLOCK_HEADER_BYTES + 8] == 0xfeedu64.to_le_bytes(),
        Err(_) => false,
    };
    t.cancel().unwrap();
    eng.unmount().unwrap();
    found
}

/// Issue 17's loss: an unmount that began while the group-commit timer's checkpoint was being
/// written found the CIL empty (taken by the writer) and the AIL empty (not yet filled), wrote
/// the unmount record and marked the image clean without writing that checkpoint's buffers
/// home: the next mount saw a clean log and lost the whole checkpoint.
#[test]
fn unmount_during_a_checkpoint_keeps_it() {
    let g = geometry(4096, 4096, 0);
    let (first, _) = data_blocks(&g);
    let (mem, eng) = commit_then_catch_checkpoint_in_flight(g, first);
    eng.unmount().unwrap();
    assert!(
        block_holds_change(mem.snapshot(), first),
        "a change committed before the unmount is missing after it"
    );
}

/// syncfs (force_all) must not return while an earlier checkpoint is still being written: a
/// crash right after it returns must keep every change committed before it.
#[test]
fn force_all_waits_for_the_checkpoint_in_flight() {
    let g = geometry(4096, 4096, 0);
    let (first, _) = data_blocks(&g);
    let (mem, eng) = commit_then_catch_checkpoint_in_flight(g, first);
    eng.force_all().unwrap();
    // The device as it stands when force_all returns, as a power cut would leave it.
    let image = mem.snapshot();
    eng.crash();
    assert!(
        block_holds_change(image, first),
        "a change committed before syncfs is missing after a crash that followed it"
    );
}

/// A rolling transaction lets go of the buffers of each step it has committed: its list of
/// joined buffers stays as short as what it holds, however many steps it takes. (It kept every
/// buffer it had ever joined, so each lookup walked them all: removing a file of 25,600 extents,
/// one step each, took 387 s in fstests' generic/611.)
#[test]
fn a_rolling_transaction_forgets_the_buffers_of_its_committed_steps() {
    let g = geometry(4096, 4096, 0);
    let dev = Arc::new(MemDevice::from_bytes(4096, formatted_image(g)));
    let (first, _) = data_blocks(&g);
    let eng = mount(dev, EngineOptions::default());
    let mut t = eng.begin(TransKind::Truncate).unwrap();
    let held = t.get_buf(first, btype_for(0), 1).unwrap();
    t.log_range(held, BLOCK_HEADER_BYTES..BLOCK_HEADER_BYTES + 8);
    t.hold(held);
    for i in 1..200u64 {
        let b = t.get_buf(first + i, btype_for(i), 1).unwrap();
        t.log_range(b, BLOCK_HEADER_BYTES..BLOCK_HEADER_BYTES + 8);
        t.roll().unwrap();
        assert!(
            t.joined_len() <= 2,
            "step {i}: {} buffers still listed",
            t.joined_len()
        );
        // The held buffer is still there, under its id.
        t.data_mut(held)[BLOCK_HEADER_BYTES] = i as u8;
        t.log_range(held, BLOCK_HEADER_BYTES..BLOCK_HEADER_BYTES + 1);
    }
    t.commit().unwrap();
    eng.unmount().unwrap();
}
