//! Property tests: encode/decode round trips of every on-disk structure; a flipped bit anywhere
//! in any metadata block type or log record is detected; grant-head arithmetic across log wraps
//! against a linear model; FIFO order and no starvation at the reservation gate.

use proptest::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use ticketfs::format::log::{
    record_blocks, CommitRecord, LogItem, RecordHeader, FLAG_COMMIT, LOG_RECORD_HEADER_BYTES,
};
use ticketfs::format::{BlockHeader, BlockType, Geometry, Lsn, Superblock, BLOCK_HEADER_BYTES};
use ticketfs::log::LogPos;
use ticketfs::mem::{Gate, GateState};

fn block_size() -> impl Strategy<Value = u32> {
    (9u32..=16).prop_map(|s| 1 << s)
}

fn uuid() -> impl Strategy<Value = [u8; 16]> {
    any::<[u8; 16]>().prop_filter("non-zero", |u| u.iter().any(|&b| b != 0))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn superblock_round_trip_and_bit_flips(bs in block_size(), blocks in 4096u64..1 << 30, ags in 1u32..64, u in uuid(), label in "[a-z]{0,32}", bit in any::<prop::sample::Index>(), backup in any::<bool>()) {
        let ags = ags.min((blocks / 256) as u32).max(1);
        let g = Geometry::new(bs, blocks, 64, ags).unwrap();
        let sb = Superblock::new(g, u, &label);
        let at = if backup { g.backup_sb_blkno() } else { 0 };
        let mut buf = vec![0u8; bs as usize];
        sb.encode(&mut buf, at);
        prop_assert_eq!(Superblock::decode(&buf, at).unwrap(), sb.clone());
        prop_assert_eq!(sb.label_str(), label);
        let b = bit.index(bs as usize * 8);
        buf[b / 8] ^= 1 << (b % 8);
        prop_assert!(Superblock::decode(&buf, at).is_err());
    }

    #[test]
    fn metadata_block_round_trip_and_bit_flips(bs in block_size(), t in 0usize..BlockType::ALL.len(), blkno in 1u64..1 << 40, owner in any::<u64>(), lsn in any::<u64>(), u in uuid(), fill in any::<u8>(), bit in any::<prop::sample::Index>()) {
        let btype = BlockType::ALL[t];
        let mut block = vec![fill; bs as usize];
        BlockHeader::init(&mut block, btype, blkno, owner, &u);
        BlockHeader::stamp(&mut block, lsn);
        let h = BlockHeader::verify(&block, blkno, Some(btype), &u).unwrap();
        prop_assert_eq!((h.btype, h.blkno, h.owner, h.lsn, h.uuid), (btype, blkno, owner, lsn, u));
        // Misdirected: the same bytes read from another address.
        prop_assert!(BlockHeader::verify(&block, blkno + 1, Some(btype), &u).is_err());
        // Another type expected.
        let other = BlockType::ALL[(t + 1) % BlockType::ALL.len()];
        prop_assert!(BlockHeader::verify(&block, blkno, Some(other), &u).is_err());
        let b = bit.index(bs as usize * 8);
        block[b / 8] ^= 1 << (b % 8);
        let e = BlockHeader::verify(&block, blkno, Some(btype), &u).unwrap_err();
        prop_assert_eq!(e.blkno, blkno);
    }

    #[test]
    fn log_record_round_trip_and_bit_flips(bs in block_size(), payload in prop::collection::vec(any::<u8>(), 0..3000), cycle in 1u32..1000, seq in 1u64..1 << 40, u in uuid(), bit in any::<prop::sample::Index>()) {
        let blocks = record_blocks(payload.len(), bs);
        let log_blocks = 1u64 << 20;
        let at = 17u32;
        let lsn = Lsn::new(cycle, at);
        let h = RecordHeader { flags: FLAG_COMMIT, lsn, tail_lsn: Lsn::new(cycle, 3), seq, payload_len: payload.len() as u32, blocks, uuid: u, index: 0 };
        let mut rec = vec![0u8; blocks as usize * bs as usize];
        rec[LOG_RECORD_HEADER_BYTES..LOG_RECORD_HEADER_BYTES + payload.len()].copy_from_slice(&payload);
        h.encode(&mut rec);
        let got = RecordHeader::decode(&rec[..bs as usize], 100, at, Some(lsn), &u, log_blocks).unwrap();
        prop_assert_eq!(got, h);
        got.verify_payload(&rec, 100).unwrap();
        // A flip anywhere in the header or the payload is caught by one of the two checks.
        let b = bit.index((LOG_RECORD_HEADER_BYTES + payload.len()) * 8);
        rec[b / 8] ^= 1 << (b % 8);
        let caught = match RecordHeader::decode(&rec[..bs as usize], 100, at, Some(lsn), &u, log_blocks) {
            Err(_) => true,
            Ok(h2) => h2.verify_payload(&rec, 100).is_err(),
        };
        prop_assert!(caught);
    }

    #[test]
    fn commit_record_and_items_round_trip(seq in any::<u64>(), records in any::<u32>(), crc in any::<u32>(), items in prop::collection::vec((1u64..1000, 0usize..BlockType::ALL.len(), prop::collection::vec((0u32..3900, prop::collection::vec(any::<u8>(), 1..100)), 1..5)), 0..10)) {
        let c = CommitRecord { seq, records, items: items.len() as u32, stream_bytes: 77, stream_crc: crc };
        let mut buf = [0u8; 32];
        c.encode(&mut buf);
        prop_assert_eq!(CommitRecord::decode(&buf, 5).unwrap(), c);
        let items: Vec<LogItem> = items.into_iter().map(|(b, t, regions)| LogItem { blkno: b, btype: BlockType::ALL[t], regions }).collect();
        let mut stream = Vec::new();
        for i in &items {
            i.encode_into(&mut stream);
        }
        prop_assert_eq!(stream.len(), items.iter().map(|i| i.encoded_len()).sum::<usize>());
        prop_assert_eq!(LogItem::decode_stream(&stream, 5, 4096, 1000).unwrap(), items);
        // A stream cut short is an error, never a panic.
        if !stream.is_empty() {
            prop_assert!(LogItem::decode_stream(&stream[..stream.len() - 1], 5, 4096, 1000).is_err());
        }
    }

    #[test]
    fn grant_head_arithmetic_across_wraps(size_blocks in 16u64..4096, start in 0u64..1 << 20, steps in prop::collection::vec((any::<bool>(), 0u64..1 << 16), 1..64)) {
        let size = size_blocks * 512;
        let start_cycle = 1 + (start / size) as u32;
        let mut pos = LogPos::new(start_cycle, start % size);
        let mut linear = start_cycle as u64 * size + start % size;
        let origin = pos;
        let origin_linear = linear;
        for (forward, n) in steps {
            if forward || n > linear - origin_linear {
                pos = pos.add(n, size);
                linear += n;
            } else {
                pos = pos.sub(n, size);
                linear -= n;
            }
            prop_assert_eq!(pos.cycle as u64 * size + pos.bytes, linear);
            prop_assert!(pos.bytes < size);
            prop_assert_eq!(pos.since(origin, size), linear - origin_linear);
        }
    }
}

/// A counter gate that records the order in which needs were granted.
struct Counter {
    free: u64,
    order: Vec<usize>,
}

impl GateState for Counter {
    type Need = (usize, u64);
    fn fits(&self, n: &(usize, u64)) -> bool {
        n.1 <= self.free
    }
    fn take(&mut self, n: &(usize, u64)) {
        self.free -= n.1;
        self.order.push(n.0);
    }
}

fn wait_for_waiters(gate: &Gate<Counter>, n: usize) {
    for _ in 0..2000 {
        if gate.waiters() == n {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("expected {n} waiters, have {}", gate.waiters());
}

#[test]
fn gate_grants_in_arrival_order() {
    let gate = Arc::new(Gate::new(Counter {
        free: 0,
        order: Vec::new(),
    }));
    let mut handles = Vec::new();
    for id in 0..16usize {
        let g = gate.clone();
        handles.push(std::thread::spawn(move || {
            g.acquire((id, 1 + (id as u64 % 3)), false, &|| {}).unwrap()
        }));
        wait_for_waiters(&gate, id + 1);
    }
    gate.update(|s| s.free = 1000);
    for h in handles {
        assert!(h.join().unwrap().waited);
    }
    assert_eq!(gate.with(|s| s.order.clone()), (0..16).collect::<Vec<_>>());
}

#[test]
fn large_request_is_not_starved_by_small_ones() {
    let gate = Arc::new(Gate::new(Counter {
        free: 5,
        order: Vec::new(),
    }));
    let g = gate.clone();
    let large = std::thread::spawn(move || g.acquire((0, 10), false, &|| {}).unwrap());
    wait_for_waiters(&gate, 1);
    // A small request that fits must still queue behind the large one.
    let granted = Arc::new(AtomicUsize::new(0));
    let (g, gr) = (gate.clone(), granted.clone());
    let small = std::thread::spawn(move || {
        g.acquire((1, 1), false, &|| {}).unwrap();
        gr.store(1, Ordering::SeqCst);
    });
    wait_for_waiters(&gate, 2);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        granted.load(Ordering::SeqCst),
        0,
        "small request overtook the large one"
    );
    gate.update(|s| s.free += 6);
    large.join().unwrap();
    small.join().unwrap();
    assert_eq!(gate.with(|s| s.order.clone()), vec![0, 1]);
}

#[test]
fn shut_down_gate_refuses_waiters() {
    let gate = Arc::new(Gate::new(Counter {
        free: 0,
        order: Vec::new(),
    }));
    let g = gate.clone();
    let w = std::thread::spawn(move || g.acquire((0, 1), false, &|| {}));
    wait_for_waiters(&gate, 1);
    gate.shut_down();
    assert!(w.join().unwrap().is_err());
    assert!(gate.acquire((1, 0), false, &|| {}).is_err());
}

#[test]
fn chunk_map_runs_cover_exactly_what_was_set() {
    let mut m = ticketfs::cache::ChunkMap::default();
    m.set_range(BLOCK_HEADER_BYTES + 200, 10);
    m.set_range(0, 1);
    m.set_range(4000, 96);
    // Bytes 248..258 touch chunks 1 and 2, which join chunk 0 into one run.
    assert_eq!(m.runs(4096), vec![(0, 384), (3968, 128)]);
}
