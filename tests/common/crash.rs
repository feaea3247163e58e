//! Crash-state enumeration shared by the crash tests: a workload's device events cut into flush
//! windows, and in each window the writes that land in one crash state.
#![allow(dead_code)]

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::Rng;
use std::sync::Arc;
use std::time::Duration;
use ticketfs::device::{DevEvent, Device};
use ticketfs::fs::Fs;
use ticketfs::log::LogConfig;
use ticketfs::mem::OverrunPolicy;
use ticketfs::mkfs::{make_filesystem, MkfsOptions};
use ticketfs::{Engine, EngineOptions};

/// The bytes of a fresh image of `size` bytes and `block_size` blocks, made by mkfs.
pub fn image_bytes(size: u64, block_size: u32) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("image");
    make_filesystem(
        &p,
        &MkfsOptions {
            size: Some(size),
            block_size,
            ..Default::default()
        },
    )
    .unwrap();
    std::fs::read(&p).unwrap()
}

/// Mount options of a crash workload: overruns panic, and the CIL and AIL run often so that
/// checkpoints and write-back interleave with the operations.
pub fn crash_opts() -> EngineOptions {
    EngineOptions {
        overrun: OverrunPolicy::Panic,
        log: LogConfig {
            cil_timer: Duration::from_millis(2),
            ail_interval: Duration::from_millis(1),
        },
        ..Default::default()
    }
}

/// The events cut at every flush: (the flush's event, None before the first; the writes after
/// it up to the next).
pub fn flush_windows(events: &[DevEvent]) -> Vec<(Option<usize>, Vec<usize>)> {
    let mut windows: Vec<(Option<usize>, Vec<usize>)> = vec![(None, Vec::new())];
    for (i, ev) in events.iter().enumerate() {
        match ev {
            DevEvent::Flush => windows.push((Some(i), Vec::new())),
            DevEvent::Write { .. } => windows.last_mut().unwrap().1.push(i),
        }
    }
    windows
}

/// Puts the write `events[e]` on `img`, of blocks of `block_size` bytes.
pub fn apply_write(events: &[DevEvent], img: &mut [u8], e: usize, block_size: u32) {
    if let DevEvent::Write { blkno, data } = &events[e] {
        let off = (*blkno * block_size as u64) as usize;
        img[off..off + data.len()].copy_from_slice(data);
    }
}

/// The `k`-th crash state of the window after `flush_at` with `writes`: state 0 has every write
/// landed in order; the others a random prefix of them, of which a random half landed, in random
/// order. Returns (the writes landed, the length of the prefix, the event the crash follows).
pub fn landed(
    rng: &mut SmallRng,
    flush_at: Option<usize>,
    writes: &[usize],
    k: usize,
) -> (Vec<usize>, usize, usize) {
    let p = if k == 0 {
        writes.len()
    } else {
        rng.gen_range(0..=writes.len())
    };
    let mut landed: Vec<usize> = writes[..p]
        .iter()
        .copied()
        .filter(|_| k == 0 || rng.gen_bool(0.5))
        .collect();
    if k > 0 {
        landed.shuffle(rng);
    }
    let crash_after = if p == 0 {
        flush_at.unwrap_or(0)
    } else {
        writes[p - 1]
    };
    (landed, p, crash_after)
}

/// The steps an fsync had confirmed when the crash came after event `crash_after`: `syncs` holds
/// (the event count when an fsync returned, the steps done by then).
pub fn confirmed(syncs: &[(usize, usize)], crash_after: usize) -> usize {
    syncs
        .iter()
        .filter(|(e, _)| *e <= crash_after + 1)
        .map(|(_, s)| *s)
        .max()
        .unwrap_or(0)
}

/// Unmounts the recovered `fs` and mounts `dev` again: what `walk` shows must still be `got`
/// (`what` names it in the error).
pub fn same_after_remount<M: PartialEq>(
    fs: Fs,
    dev: Arc<dyn Device>,
    walk: impl Fn(&Fs) -> M,
    got: &M,
    what: &str,
) -> Result<(), String> {
    fs.unmount().map_err(|e| format!("unmount: {e}"))?;
    let fs = Fs::new(
        Engine::mount(dev, crash_opts()).map_err(|e| format!("second mount: {e}"))?,
        false,
    )
    .map_err(|e| format!("second fs: {e}"))?;
    if walk(&fs) != *got {
        return Err(format!("{what} changed across a clean unmount"));
    }
    fs.unmount().map_err(|e| format!("second unmount: {e}"))
}
