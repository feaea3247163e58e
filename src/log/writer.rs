//! The checkpoint writer: turns a CIL context into log records on disk.
//!
//! One checkpoint at a time: [flush, if the AIL wrote buffers home since the last flush, so the
//! tail this checkpoint records is durable] → data records → commit record → flush. Only then
//! are its buffers unpinned into the AIL and its forcers woken. Since nothing else is in flight
//! while a checkpoint is written, a crash can tear at most the checkpoint being written.

use super::{Cil, CilItem, Log, LogError, LogPos};
use crate::format::log::{
    record_blocks, CommitRecord, RecordHeader, COMMIT_RECORD_BYTES, FLAG_COMMIT, FLAG_UNMOUNT,
    LOG_RECORD_HEADER_BYTES, LOG_RECORD_PAYLOAD_MAX,
};
use crate::format::Lsn;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// A CIL context taken for writing.
struct Context {
    seq: u64,
    items: Vec<CilItem>,
    held_bytes: u64,
    copies_bytes: u64,
}

impl Log {
    pub(super) fn writer_main(self: Arc<Self>) {
        loop {
            let tail_update = {
                let mut ws = self.ws.lock();
                loop {
                    if ws.stop {
                        return;
                    }
                    let (seq, empty, bytes, age) = {
                        let c = self.cil.lock();
                        (
                            c.seq,
                            c.items.is_empty(),
                            c.items_bytes,
                            c.first_commit.map(|t| t.elapsed()),
                        )
                    };
                    let push = !empty
                        && (ws.push_seq >= seq
                            || bytes >= self.cil_push_bytes
                            || age.is_some_and(|a| a >= self.config.cil_timer));
                    if push || ws.tail_update {
                        break;
                    }
                    self.ws_cv.wait_for(&mut ws, self.config.cil_timer / 2);
                }
                std::mem::take(&mut ws.tail_update)
            };
            let empty_checkpoint = tail_update && self.tail_would_move();
            let ctx = self.take_context(empty_checkpoint);
            if ctx.items.is_empty() && !empty_checkpoint {
                continue;
            }
            if let Err(e) = self.write_checkpoint(ctx, 0) {
                self.fail(format!("checkpoint write failed: {e}"));
                return;
            }
        }
    }

    /// Swaps the CIL for an empty one with the next sequence number. An empty context keeps its
    /// number for the next one unless `even_empty` (an empty checkpoint will be written).
    fn take_context(&self, even_empty: bool) -> Context {
        let mut cil = self.cil.lock();
        let Cil {
            seq,
            items,
            held_bytes,
            copies_bytes,
            ..
        } = &mut *cil;
        let ctx = Context {
            seq: *seq,
            items: std::mem::take(items).into_values().collect(),
            held_bytes: *held_bytes,
            copies_bytes: *copies_bytes,
        };
        if !ctx.items.is_empty() || even_empty {
            cil.seq += 1;
        }
        cil.items = HashMap::new();
        cil.items_bytes = 0;
        cil.held_bytes = 0;
        cil.copies_bytes = 0;
        cil.first_commit = None;
        ctx
    }

    /// The tail the next record would carry: the oldest LSN in the AIL, or the head when empty.
    fn current_tail(&self, head: LogPos) -> LogPos {
        match self.ail.lock().items.keys().next() {
            Some(&(lsn, _)) => LogPos::from_lsn(lsn, self.bs).min(head),
            None => head,
        }
    }

    /// Would an empty checkpoint move the durable tail by more than the block it costs?
    fn tail_would_move(&self) -> bool {
        let ws = self.ws.lock();
        let (head, tail) = (ws.phys_head, ws.durable_tail);
        drop(ws);
        self.current_tail(head).since(tail, self.size_bytes) > 2 * self.bs as u64
    }

    /// Writes one checkpoint (an empty one carries only the new tail). `flags` adds FLAG_UNMOUNT.
    fn write_checkpoint(&self, mut ctx: Context, flags: u16) -> Result<(), LogError> {
        let bs = self.bs as usize;
        ctx.items.sort_by_key(|i| i.head.blkno);
        let (start, seq) = (self.ws.lock().phys_head, ctx.seq);
        // The tail first, then the flush: every buffer that left the AIL before the tail was read
        // raised the flag after its write completed, so this flush makes those writes durable
        // before any record claims the tail past them.
        let tail = if flags & FLAG_UNMOUNT != 0 {
            start
        } else {
            self.current_tail(start)
        };
        if self.home_writes_unflushed.swap(false, Ordering::SeqCst) {
            self.dev.flush().map_err(LogError::Io)?;
            self.counters.flushes.fetch_add(1, Ordering::Relaxed);
        }
        let ckpt_lsn = start.lsn(self.bs);
        let mut pos = start;
        let mut rec = self.record_buf.lock();
        let mut stream_crc = crc32fast::Hasher::new();
        let mut stream_bytes = 0u64;
        let mut records = 0u32;
        // Data records: the items' bytes back to back, split at LOG_RECORD_PAYLOAD_MAX.
        let mut fill = 0usize;
        let total: usize = ctx.items.iter().map(|i| i.formatted.len()).sum();
        let mut written = 0usize;
        let mut chunks = ctx.items.iter().map(|i| i.formatted.as_slice()).peekable();
        let mut cur: &[u8] = &[];
        while written < total {
            while fill < LOG_RECORD_PAYLOAD_MAX && written + fill < total {
                if cur.is_empty() {
                    cur = chunks.next().unwrap_or(&[]);
                    continue;
                }
                let n = cur.len().min(LOG_RECORD_PAYLOAD_MAX - fill);
                let at = LOG_RECORD_HEADER_BYTES + fill;
                rec[at..at + n].copy_from_slice(&cur[..n]);
                cur = &cur[n..];
                fill += n;
            }
            stream_crc.update(&rec[LOG_RECORD_HEADER_BYTES..LOG_RECORD_HEADER_BYTES + fill]);
            stream_bytes += fill as u64;
            pos = self.write_record(&mut rec, pos, tail, seq, 0, records, fill)?;
            written += fill;
            fill = 0;
            records += 1;
        }
        let commit = CommitRecord {
            seq,
            records,
            items: ctx.items.len() as u32,
            stream_bytes,
            stream_crc: stream_crc.finalize(),
        };
        commit.encode(
            &mut rec[LOG_RECORD_HEADER_BYTES..LOG_RECORD_HEADER_BYTES + COMMIT_RECORD_BYTES],
        );
        pos = self.write_record(
            &mut rec,
            pos,
            tail,
            seq,
            FLAG_COMMIT | flags,
            records,
            COMMIT_RECORD_BYTES,
        )?;
        drop(rec);
        self.dev.flush().map_err(LogError::Io)?;
        self.counters.flushes.fetch_add(1, Ordering::Relaxed);
        let phys = pos.since(start, self.size_bytes);
        debug_assert_eq!(phys % bs as u64, 0);
        self.finish_checkpoint(ctx, seq, ckpt_lsn, start, pos, tail, phys);
        Ok(())
    }

    // The checkpoint's positions, each needed once; a struct would only rename them.
    #[allow(clippy::too_many_arguments)]
    fn finish_checkpoint(
        &self,
        ctx: Context,
        seq: u64,
        ckpt_lsn: Lsn,
        start: LogPos,
        end: LogPos,
        tail: LogPos,
        phys: u64,
    ) {
        debug_assert!(tail <= start);
        self.space.update(|s| {
            s.move_tail(tail);
            if ctx.held_bytes >= phys {
                s.ungrant(ctx.held_bytes - phys, ctx.held_bytes - phys);
            } else {
                s.force_grant(phys - ctx.held_bytes);
            }
            s.mem.unpin_log(ctx.copies_bytes);
        });
        self.copies_outside
            .fetch_sub(ctx.copies_bytes, Ordering::Relaxed);
        for item in &ctx.items {
            // The buffer's log state and its AIL entry change together, under the buffer's log
            // lock (then the AIL's, the order write-back uses), so the AIL never keeps an entry
            // for a buffer already written home.
            let mut ls = item.head.log.lock();
            let idx = ls.cil_seqs.iter().position(|&s| s == seq);
            debug_assert!(
                idx.is_some(),
                "block {} not pinned by checkpoint {seq}",
                item.head.blkno
            );
            if let Some(i) = idx {
                ls.cil_seqs.remove(i);
            }
            let old = ls.ail_lsn.replace(ckpt_lsn);
            let mut ail = self.ail.lock();
            if let Some(o) = old {
                ail.items.remove(&(o, item.head.blkno));
            }
            ail.items
                .insert((ckpt_lsn, item.head.blkno), item.head.clone());
            drop(ail);
            drop(ls);
        }
        {
            let mut ws = self.ws.lock();
            ws.phys_head = end;
            ws.durable_seq = ws.durable_seq.max(seq);
            ws.durable_tail = tail;
        }
        self.counters.checkpoints.fetch_add(1, Ordering::Relaxed);
        if ctx.items.is_empty() {
            self.counters.tail_updates.fetch_add(1, Ordering::Relaxed);
        }
        self.counters
            .bytes_written
            .fetch_add(phys, Ordering::Relaxed);
        self.done_cv.notify_all();
    }

    /// Encodes the header of the record whose payload (`payload_len` bytes) is already in `rec`
    /// and writes it at `pos`, split where it wraps past the end of the log. Returns the next position.
    // The record header's fields, passed straight through to it.
    #[allow(clippy::too_many_arguments)]
    fn write_record(
        &self,
        rec: &mut [u8],
        pos: LogPos,
        tail: LogPos,
        seq: u64,
        flags: u16,
        index: u32,
        payload_len: usize,
    ) -> Result<LogPos, LogError> {
        let bs = self.bs as usize;
        let blocks = record_blocks(payload_len, self.bs) as usize;
        let len = blocks * bs;
        rec[LOG_RECORD_HEADER_BYTES + payload_len..len].fill(0);
        let hdr = RecordHeader {
            flags,
            lsn: pos.lsn(self.bs),
            tail_lsn: tail.lsn(self.bs),
            seq,
            payload_len: payload_len as u32,
            blocks: blocks as u32,
            uuid: self.uuid,
            index,
        };
        hdr.encode(&mut rec[..len]);
        let first = (pos.bytes / bs as u64) as usize;
        let log_blocks = self.geo.log_blocks as usize;
        let head_part = blocks.min(log_blocks - first);
        self.dev
            .write(self.geo.log_start + first as u64, &rec[..head_part * bs])
            .map_err(LogError::Io)?;
        if head_part < blocks {
            self.dev
                .write(self.geo.log_start, &rec[head_part * bs..len])
                .map_err(LogError::Io)?;
        }
        self.counters.records.fetch_add(1, Ordering::Relaxed);
        Ok(pos.add(len as u64, self.size_bytes))
    }

    /// Writes the unmount record: an empty checkpoint whose tail is itself. Called with the AIL
    /// empty and the background threads stopped.
    pub(super) fn write_unmount_record(&self) -> Result<(), LogError> {
        debug_assert_eq!(self.ail_len(), 0);
        let ctx = self.take_context(true);
        debug_assert!(ctx.items.is_empty());
        let started = Instant::now();
        self.write_checkpoint(ctx, FLAG_UNMOUNT)?;
        debug_assert!(started.elapsed().as_secs() < 60);
        Ok(())
    }
}
