//! Device faults: EIO during a checkpoint, during write-back, a short log write, a failed flush.
//! Each must shut the engine down cleanly (later transactions and forces fail, nothing panics),
//! and the image must still recover with every transaction whose force had succeeded.

mod common;

use common::*;
use std::sync::Arc;
use std::time::{Duration, Instant};
use ticketfs::device::{Device, FaultDevice, FaultKind, FaultOp, FaultRule, MemDevice};
use ticketfs::format::BLOCK_HEADER_BYTES;
use ticketfs::{Engine, EngineOptions, TransKind};

const BLOCKS: u64 = 16;

fn value_range() -> std::ops::Range<usize> {
    BLOCK_HEADER_BYTES..BLOCK_HEADER_BYTES + 8
}

/// Runs transactions (each writes its number into block n % BLOCKS) until the engine shuts down
/// after `rule` is armed; then checks the recovered image.
fn fault_case(rule: FaultRule, push_ail: bool) {
    let g = geometry(4096, 4096, 0);
    let mem = Arc::new(MemDevice::from_bytes(4096, formatted_image(g)));
    let fault = Arc::new(FaultDevice::new(mem.clone()));
    let eng = Engine::mount(fault.clone(), EngineOptions::default()).expect("mount");
    let (first, _) = data_blocks(&g);
    let mut written: Vec<Vec<u64>> = vec![vec![0]; BLOCKS as usize];
    let mut forced = vec![0u64; BLOCKS as usize];
    let mut pending = vec![0u64; BLOCKS as usize];
    let mut run = |n: u64, eng: &Engine| -> Result<(), ticketfs::EngineError> {
        let i = n % BLOCKS;
        let mut t = eng.begin(TransKind::Write)?;
        let b = if n < BLOCKS {
            t.get_buf(first + i, btype_for(i), 1)?
        } else {
            t.read_buf(first + i, btype_for(i))?
        };
        t.data_mut(b)[value_range()].copy_from_slice(&n.to_le_bytes());
        t.log_range(b, value_range());
        let seq = t.commit()?;
        written[i as usize].push(n);
        pending[i as usize] = n;
        if n % 5 == 4 {
            eng.force(seq)?;
            forced.copy_from_slice(&pending);
        }
        Ok(())
    };
    for n in 0..100 {
        run(n, &eng).expect("healthy device");
    }
    fault.add_rule(rule);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut n = 100;
    while !eng.is_shut_down() {
        assert!(
            Instant::now() < deadline,
            "engine did not shut down after the fault"
        );
        if run(n, &eng).is_err() {
            break;
        }
        n += 1;
        if push_ail {
            eng.log().make_room();
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    assert!(fault.injected() > 0, "the fault never fired");
    // Shut down: everything fails cleanly from now on.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !eng.is_shut_down() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(eng.begin(TransKind::Setattr).is_err());
    assert!(eng.force_all().is_err());
    eng.crash();

    // The image recovers, with every forced value (or a later one that was written).
    let image: Arc<dyn Device> = Arc::new(MemDevice::from_bytes(4096, mem.snapshot()));
    let eng = Engine::mount(image, EngineOptions::default()).expect("mount after the fault");
    let mut t = eng.begin(TransKind::Setattr).unwrap();
    for i in 0..BLOCKS {
        let b = t
            .read_buf(first + i, btype_for(i))
            .expect("block readable after recovery");
        let v = u64::from_le_bytes(t.data(b)[value_range()].try_into().unwrap());
        assert!(
            v >= forced[i as usize],
            "block {i}: {v} is older than the forced {}",
            forced[i as usize]
        );
        assert!(
            written[i as usize].contains(&v),
            "block {i}: {v} was never written"
        );
    }
    t.cancel().unwrap();
    eng.unmount().unwrap();
}

fn log_range() -> std::ops::Range<u64> {
    let g = geometry(4096, 4096, 0);
    g.log_start..g.log_end()
}

#[test]
fn eio_during_checkpoint() {
    fault_case(
        FaultRule {
            op: FaultOp::Write,
            blocks: log_range(),
            skip: 3,
            kind: FaultKind::Eio,
            sticky: true,
        },
        false,
    );
}

#[test]
fn short_write_during_checkpoint() {
    fault_case(
        FaultRule {
            op: FaultOp::Write,
            blocks: log_range(),
            skip: 2,
            kind: FaultKind::Short,
            sticky: false,
        },
        false,
    );
}

#[test]
fn eio_during_write_back() {
    let g = geometry(4096, 4096, 0);
    let (first, _) = data_blocks(&g);
    fault_case(
        FaultRule {
            op: FaultOp::Write,
            blocks: first..first + BLOCKS,
            skip: 0,
            kind: FaultKind::Eio,
            sticky: true,
        },
        true,
    );
}

#[test]
fn failed_flush() {
    fault_case(
        FaultRule {
            op: FaultOp::Flush,
            blocks: 0..0,
            skip: 1,
            kind: FaultKind::Eio,
            sticky: true,
        },
        false,
    );
}
