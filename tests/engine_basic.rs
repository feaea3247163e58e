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
