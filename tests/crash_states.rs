//! Crash-state enumeration: a randomized transactional workload runs on the recording device;
//! then, for every flush point and for random subsets and reorderings of the writes issued after
//! it (up to the next flush), the image a crash could leave is rebuilt and recovered, and checked:
//!  - it equals the model after a prefix of the committed transactions that ends on a checkpoint
//!    boundary (nothing of a torn or unconfirmed checkpoint is half-visible);
//!  - that prefix includes every transaction whose log force had returned (durability);
//!  - every metadata block present verifies (CRC, block number, UUID) with an LSN no later than
//!    the log head;
//!  - some of the recovered images also mount, unmount cleanly and mount again clean.
//!
//! Prints `crash states: N checked, M inconsistent`.

mod common;

use common::*;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use ticketfs::device::{DevEvent, Device, MemDevice, RecordingDevice};
use ticketfs::engine::read_superblock;
use ticketfs::format::{BlockHeader, BLOCK_HEADER_BYTES};
use ticketfs::log::{recover, LogConfig, LogPos};
use ticketfs::{Engine, EngineOptions, TransKind};

const BS: u32 = 512;
const TEST_BLOCKS: u64 = 40;
const TRANSACTIONS: usize = 4000;
const MIN_STATES: usize = 6000;

/// The model: payload bytes of each test block, or None before the block is created.
type State = Vec<Option<Vec<u8>>>;

struct Run {
    base: Vec<u8>,
    events: Vec<DevEvent>,
    /// (commit sequence, model state after every transaction with that sequence or lower).
    states: Vec<(u64, State)>,
    /// (event count when a force returned, the sequence it forced).
    forces: Vec<(usize, u64)>,
    first: u64,
}

fn run_workload(seed: u64) -> Run {
    let probe = geometry(BS, 4096, 0);
    let g = ticketfs::format::Geometry::new(
        BS,
        (probe.log_end() * 2 + 256).max(2048),
        probe.log_blocks,
        1,
    )
    .unwrap();
    let base = formatted_image(g);
    let rec = Arc::new(RecordingDevice::new(BS, base.clone()));
    let opts = EngineOptions {
        log: LogConfig {
            cil_timer: Duration::from_millis(2),
            ail_interval: Duration::from_millis(1),
        },
        ..Default::default()
    };
    let eng = Engine::mount(rec.clone(), opts).expect("mount");
    let (first, _) = data_blocks(&g);
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut model: State = vec![None; TEST_BLOCKS as usize];
    let mut states: BTreeMap<u64, State> = BTreeMap::new();
    let mut forces = Vec::new();
    let kinds = [
        TransKind::Create,
        TransKind::Remove,
        TransKind::Rename,
        TransKind::Write,
        TransKind::Setattr,
    ];
    for n in 0..TRANSACTIONS {
        let kind = kinds[rng.gen_range(0..kinds.len())];
        let most = eng.table().get(kind).buffers.min(4) as usize;
        let count = rng.gen_range(1..=most);
        let mut picks: Vec<u64> = (0..TEST_BLOCKS)
            .collect::<Vec<_>>()
            .choose_multiple(&mut rng, count)
            .cloned()
            .collect();
        picks.sort_unstable();
        let mut t = eng.begin(kind).expect("begin");
        for &i in &picks {
            let blk = first + i;
            let id = match model[i as usize] {
                None => t.get_buf(blk, btype_for(i), i).expect("get_buf"),
                Some(_) => t.read_buf(blk, btype_for(i)).expect("read_buf"),
            };
            let len = rng.gen_range(1..=64usize);
            let off = rng.gen_range(BLOCK_HEADER_BYTES..BS as usize - len);
            let fill: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            t.data_mut(id)[off..off + len].copy_from_slice(&fill);
            t.log_range(id, off..off + len);
            let m = model[i as usize]
                .get_or_insert_with(|| vec![0u8; BS as usize - BLOCK_HEADER_BYTES]);
            m[off - BLOCK_HEADER_BYTES..off - BLOCK_HEADER_BYTES + len].copy_from_slice(&fill);
        }
        let seq = t.commit().expect("commit");
        states.insert(seq, model.clone());
        if rng.gen_ratio(1, 12) {
            eng.force(seq).expect("force");
            forces.push((rec.event_count(), seq));
        }
        if rng.gen_ratio(1, 40) {
            eng.log().make_room();
        }
        if n % 64 == 0 {
            std::thread::sleep(Duration::from_millis(3));
        }
    }
    let stats = eng.stats();
    eprintln!(
        "workload: {} checkpoints, {} log bytes, {} wraps, {} home writes, {} forces",
        stats.checkpoints,
        stats.log_bytes_written,
        stats.log_wraps,
        stats.home_writes,
        forces.len()
    );
    assert!(stats.log_wraps >= 2, "the workload should wrap the log");
    eng.crash();
    Run {
        base,
        events: rec.events(),
        states: states.into_iter().collect(),
        forces,
        first,
    }
}

/// Checks one crash image; returns a description of what is wrong, if anything.
fn check_image(
    run: &Run,
    image: Vec<u8>,
    crash_after: usize,
    mount_too: bool,
) -> Result<(), String> {
    let dev = MemDevice::from_bytes(BS, image);
    let sb = read_superblock(&dev).map_err(|e| format!("superblock: {e}"))?;
    let r = recover(&dev, &sb, ticketfs::log::Damage::Refuse)
        .map_err(|e| format!("recovery failed: {e}"))?;
    let head_lsn = LogPos::lsn(r.head, BS);
    let mut got: State = Vec::with_capacity(TEST_BLOCKS as usize);
    let mut buf = vec![0u8; BS as usize];
    for i in 0..TEST_BLOCKS {
        let blk = run.first + i;
        dev.read(blk, &mut buf).map_err(|e| e.to_string())?;
        if buf.iter().all(|&b| b == 0) {
            got.push(None);
            continue;
        }
        let h = BlockHeader::verify(&buf, blk, Some(btype_for(i)), &sb.uuid)
            .map_err(|e| format!("after recovery: {e}"))?;
        if h.lsn > head_lsn.0 {
            return Err(format!(
                "block {blk} has LSN {} beyond the log head {}",
                h.lsn, head_lsn
            ));
        }
        got.push(Some(buf[BLOCK_HEADER_BYTES..].to_vec()));
    }
    let confirmed = run
        .forces
        .iter()
        .filter(|(e, _)| *e <= crash_after + 1)
        .map(|(_, s)| *s)
        .max()
        .unwrap_or(0);
    let empty: State = vec![None; TEST_BLOCKS as usize];
    let matched = if got == empty {
        Some(0)
    } else {
        run.states
            .iter()
            .rev()
            .find(|(_, st)| *st == got)
            .map(|(s, _)| *s)
    };
    match matched {
        None => return Err("state matches no prefix of committed transactions".into()),
        Some(s) if s < confirmed => {
            return Err(format!(
                "state is the prefix up to sequence {s}, but sequence {confirmed} was forced"
            ))
        }
        Some(_) => {}
    }
    if mount_too {
        let dev: Arc<dyn Device> = Arc::new(dev);
        let eng = Engine::mount(dev.clone(), EngineOptions::default())
            .map_err(|e| format!("mount after recovery: {e}"))?;
        eng.unmount().map_err(|e| format!("unmount: {e}"))?;
        let eng = Engine::mount(dev, EngineOptions::default())
            .map_err(|e| format!("second mount: {e}"))?;
        if !eng.recovered().clean {
            return Err("not clean after a clean unmount".into());
        }
        eng.unmount().map_err(|e| format!("second unmount: {e}"))?;
    }
    Ok(())
}

fn apply(image: &mut [u8], blkno: u64, data: &[u8]) {
    let off = (blkno * BS as u64) as usize;
    image[off..off + data.len()].copy_from_slice(data);
}

#[test]
fn crash_states() {
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x7469_636b);
    let run = run_workload(seed);
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x5eed);
    // Flush points: the start (index None) and every Flush event.
    let mut windows: Vec<(Option<usize>, Vec<usize>)> = vec![(None, Vec::new())];
    for (i, ev) in run.events.iter().enumerate() {
        match ev {
            DevEvent::Flush => windows.push((Some(i), Vec::new())),
            DevEvent::Write { .. } => windows.last_mut().unwrap().1.push(i),
        }
    }
    let per_window = MIN_STATES.div_ceil(windows.len()).max(2);
    let mut durable = run.base.clone();
    let (mut checked, mut bad) = (0usize, 0usize);
    let mut failures = Vec::new();
    for (w, (flush_at, writes)) in windows.iter().enumerate() {
        for k in 0..per_window {
            // Crash after the first `p` writes of the window, of which a random subset landed, in a random order.
            let p = match k {
                0 => 0,
                1 => writes.len(),
                _ => rng.gen_range(0..=writes.len()),
            };
            let mut landed: Vec<usize> = writes[..p]
                .iter()
                .copied()
                .filter(|_| k == 1 || rng.gen_bool(0.5))
                .collect();
            if k > 1 {
                landed.shuffle(&mut rng);
            }
            let mut image = durable.clone();
            for &e in &landed {
                if let DevEvent::Write { blkno, data } = &run.events[e] {
                    apply(&mut image, *blkno, data);
                }
            }
            let crash_after = if p == 0 {
                flush_at.unwrap_or(0)
            } else {
                writes[p - 1]
            };
            let mount_too = checked % 97 == 0;
            checked += 1;
            if let Err(e) = check_image(&run, image, crash_after, mount_too) {
                bad += 1;
                if failures.len() < 10 {
                    failures.push(format!(
                        "window {w} (flush at {flush_at:?}), {p} of {} writes, {} landed: {e}",
                        writes.len(),
                        landed.len()
                    ));
                }
            }
        }
        for &e in writes {
            if let DevEvent::Write { blkno, data } = &run.events[e] {
                apply(&mut durable, *blkno, data);
            }
        }
    }
    println!("crash states: {checked} checked, {bad} inconsistent");
    for f in &failures {
        println!("  {f}");
    }
    assert!(checked >= 5000, "only {checked} crash states");
    assert_eq!(bad, 0, "inconsistent crash states");
}
