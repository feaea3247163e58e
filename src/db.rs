//! `ticketfs db IMAGE COMMAND`: prints on-disk structures, in the spirit of xfs_db and
//! xfs_logprint. It never writes: the image is read through a copy-on-write overlay (a dirty log
//! is replayed into the overlay before inodes and directories are shown; `log` and `block` show
//! the bytes as they are on the device).
//!
//! Queries (`Query`, parsed by the `ticketfs` command line): `sb`, `ag N`, `inode INO`,
//! `dir INO`, `block N`, `log`.

use crate::alloc::Allocator;
use crate::btree::Node;
use crate::device::{AlignedBuf, Device, OverlayDevice};
use crate::dir;
use crate::engine::{read_superblock, Engine, EngineOptions};
use crate::error::EngineError;
use crate::file::extmap;
use crate::format::ag::{AgHeader, AG_HEADER_OFFSET};
use crate::format::attrtree as at;
use crate::format::inode::Inode;
use crate::format::inode::{S_IFDIR, S_IFMT, S_IFREG};
use crate::format::log::{LogItem, RecordHeader, LOG_RECORD_HEADER_BYTES, LOG_RECORD_MAGIC};
use crate::format::{BlockHeader, BlockType, Superblock};
use crate::inode;
use crate::mem::MemRes;
use crate::trans::{Trans, TransKind};
use crate::verify;
use std::fmt::Write;
use std::sync::Arc;

/// What `ticketfs db IMAGE` prints: one structure, named on the command line.
#[derive(clap::Subcommand, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Query {
    /// Both superblock copies (good, bad, or differing from the one in use) and the geometry
    Sb,
    /// An allocation group's header, free extents, inode chunks and unlinked inodes
    Ag {
        /// Allocation group number (from 0)
        #[arg(value_name = "AGNO")]
        agno: u64,
    },
    /// An inode: its fields, extents or parent, extended attributes and the checker's verdict
    Inode {
        /// Inode number
        #[arg(value_name = "INO")]
        ino: u64,
    },
    /// A directory's entries
    Dir {
        /// The directory's inode number
        #[arg(value_name = "INO")]
        ino: u64,
    },
    /// One block as it is on the device
    Block {
        /// Block number
        #[arg(value_name = "BLOCKNO")]
        blkno: u64,
    },
    /// Every record of the log, in log order, with the items of each whole checkpoint
    Log,
}

/// Runs one query against `dev`; returns what to print.
pub fn run(dev: Arc<dyn Device>, q: Query) -> Result<String, String> {
    match q {
        Query::Sb => superblocks(&*dev),
        Query::Block { blkno } => block(&*dev, blkno),
        Query::Log => log(&*dev),
        Query::Ag { agno } => with_engine(dev, |eng| ag(eng, agno)),
        Query::Inode { ino } => with_engine(dev, |eng| show_inode(eng, ino)),
        Query::Dir { ino } => with_engine(dev, |eng| show_dir(eng, ino)),
    }
}

fn with_engine(
    dev: Arc<dyn Device>,
    f: impl FnOnce(&Engine) -> Result<String, String>,
) -> Result<String, String> {
    let overlay: Arc<dyn Device> = Arc::new(OverlayDevice::new(dev));
    let eng = Engine::mount(
        overlay,
        EngineOptions {
            memres: MemRes::Off,
            mem_budget_bytes: 16 << 20,
            ..Default::default()
        },
    )
    .map_err(|e| e.to_string())?;
    let r = f(&eng);
    eng.crash();
    r
}

fn superblocks(dev: &dyn Device) -> Result<String, String> {
    let mut out = String::new();
    let sb = match read_superblock(dev) {
        Ok(sb) => sb,
        // A device shorter than its filesystem (a truncated image) is when the superblock is
        // wanted most: the primary as it is, with what is wrong.
        Err(e) => {
            let mut buf = AlignedBuf::new(dev.block_size() as usize);
            let primary = dev
                .read(0, &mut buf)
                .ok()
                .and_then(|()| Superblock::decode(&buf, 0).ok());
            let Some(sb) = primary else {
                return Err(e.to_string());
            };
            let _ = writeln!(out, "warning: {e}");
            sb
        }
    };
    let g = sb.geometry;
    let mut buf = AlignedBuf::new(g.block_size as usize);
    for blkno in [0, g.backup_sb_blkno()] {
        let state = match dev.read(blkno, &mut buf) {
            Err(e) => format!("unreadable: {e}"),
            Ok(()) => match Superblock::decode(&buf, blkno) {
                Ok(s) if s == sb => "good".to_string(),
                Ok(_) => "good, but differs from the one in use".to_string(),
                Err(e) => format!("bad: {e}"),
            },
        };
        let _ = writeln!(out, "superblock copy at block {blkno}: {state}");
    }
    let _ = writeln!(
        out,
        "uuid {}\nlabel {:?}\nstate {}\nroot inode {}\nblock size {}\nblocks {}\nAGs {} of {} blocks\nlog blocks {}..{} ({} blocks)",
        sb.uuid.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        sb.label_str(),
        if sb.state == crate::format::superblock::SB_STATE_CLEAN { "clean" } else { "dirty (mounted or crashed)" },
        sb.root_ino,
        g.block_size,
        g.block_count,
        g.ag_count,
        g.ag_blocks,
        g.log_start,
        g.log_end(),
        g.log_blocks
    );
    Ok(out)
}

fn block(dev: &dyn Device, blkno: u64) -> Result<String, String> {
    let sb = read_superblock(dev).map_err(|e| e.to_string())?;
    let g = sb.geometry;
    if blkno >= g.block_count {
        return Err(format!(
            "block {blkno} is beyond the filesystem's {} blocks",
            g.block_count
        ));
    }
    let mut buf = AlignedBuf::new(g.block_size as usize);
    dev.read(blkno, &mut buf).map_err(|e| e.to_string())?;
    let mut out = String::new();
    if blkno == 0 || blkno == g.backup_sb_blkno() {
        return superblocks(dev);
    }
    if (g.log_start..g.log_end()).contains(&blkno) {
        let _ = writeln!(out, "block {blkno} is log block {}", blkno - g.log_start);
        match RecordHeader::decode(
            &buf,
            blkno,
            (blkno - g.log_start) as u32,
            None,
            &sb.uuid,
            g.log_blocks,
        ) {
            Ok(h) => out.push_str(&record_line(blkno, &h)),
            Err(e) => {
                let _ = writeln!(out, "no record starts here ({e})");
            }
        }
        return Ok(out);
    }
    let Some(t) = BlockHeader::peek_type(&buf) else {
        let _ = writeln!(
            out,
            "block {blkno}: no metadata magic (file data or free space); first bytes {}",
            hex(&buf[..32])
        );
        return Ok(out);
    };
    let _ = writeln!(out, "block {blkno}: magic says {}", t.name());
    match BlockHeader::verify(&buf, blkno, None, &sb.uuid) {
        Err(e) => {
            let _ = writeln!(out, "header check failed: {e}");
        }
        Ok(h) => {
            let _ = writeln!(
                out,
                "header: crc {:#010x} (good), blkno {}, owner {}, lsn {:#x} (cycle {}, block {})",
                h.crc,
                h.blkno,
                h.owner,
                h.lsn,
                h.lsn >> 32,
                h.lsn & 0xffff_ffff
            );
        }
    }
    match t {
        BlockType::BtreeBno
        | BlockType::BtreeCnt
        | BlockType::BtreeIno
        | BlockType::BtreeExtent
        | BlockType::BtreeDir
        | BlockType::BtreeAttr => {
            match Node::check_structure(&buf, blkno).and_then(|()| Node::new(&buf, blkno)) {
                Ok(n) => {
                    let _ = writeln!(
                        out,
                        "B+tree node: level {}, {} entries",
                        n.level(),
                        n.nrecs()
                    );
                    for i in 0..n.nrecs() {
                        if n.level() == 0 {
                            let _ = writeln!(out, "  {:?} -> {:?}", n.key(i), n.val(i));
                        } else {
                            let _ = writeln!(out, "  {:?} -> child {}", n.key(i), n.child(i));
                        }
                    }
                }
                Err(e) => {
                    let _ = writeln!(out, "node: {e}");
                }
            }
        }
        BlockType::AgHeader => {
            let agno = (blkno / g.ag_blocks) as u32;
            let a = Allocator::new(g);
            match AgHeader::decode(&buf, blkno, agno, a.ag_start(agno), a.ag_len(agno)) {
                Ok(h) => {
                    let _ = writeln!(out, "{h:#?}");
                }
                Err(e) => {
                    let _ = writeln!(out, "AG header: {e}");
                }
            }
        }
        BlockType::AttrEntries => attr_entries(&mut out, &buf, blkno),
        BlockType::AttrRemote => {
            let d = |o: usize| u32::from_le_bytes([buf[o], buf[o + 1], buf[o + 2], buf[o + 3]]);
            let mut next = [0u8; 8];
            next.copy_from_slice(&buf[at::REMOTE_NEXT_OFF..at::REMOTE_NEXT_OFF + 8]);
            let _ = writeln!(
                out,
                "remote value block: bytes {}..{} of its value; next {}; first bytes {}",
                d(at::REMOTE_VALUE_OFF),
                d(at::REMOTE_VALUE_OFF) as u64 + d(at::REMOTE_BYTES_OFF) as u64,
                match u64::from_le_bytes(next) {
                    0 => "0 (the following block, or none)".to_string(),
                    at::NEXT_UNWRITTEN => "unwritten (an incomplete value)".to_string(),
                    n => n.to_string(),
                },
                hex(&buf[at::REMOTE_DATA_OFF..at::REMOTE_DATA_OFF + 32])
            );
        }
        _ => {
            let _ = writeln!(out, "first bytes after the header: {}", hex(&buf[48..112]));
        }
    }
    Ok(out)
}

/// Value bytes `ticketfs db` shows of each attribute.
const DB_VALUE_SHOWN_BYTES: usize = 32;

/// An attribute entry block's header and every record in it, live or dead (the block alone
/// cannot tell which: the tree says).
fn attr_entries(out: &mut String, buf: &[u8], blkno: u64) {
    let live = u32::from_le_bytes([
        buf[at::LIVE_OFF],
        buf[at::LIVE_OFF + 1],
        buf[at::LIVE_OFF + 2],
        buf[at::LIVE_OFF + 3],
    ]);
    let end = match at::free_off(buf, blkno) {
        Ok(e) => e,
        Err(e) => {
            let _ = writeln!(out, "entry block: {e}");
            return;
        }
    };
    let _ = writeln!(out, "entry block: live {live}, free_off {end}");
    let mut off = at::RECORDS_OFF;
    while off < end {
        match at::record(buf, blkno, off) {
            Ok(r) => {
                let _ = writeln!(
                    out,
                    "  at {off}: {:?}, {} bytes {}{}",
                    String::from_utf8_lossy(r.name),
                    r.value_len,
                    match r.value {
                        at::Stored::Local(_) => "local".to_string(),
                        at::Stored::Remote(b) => format!("in remote blocks from {b}"),
                    },
                    if r.complete { "" } else { ", incomplete" }
                );
                off += r.bytes();
            }
            Err(e) => {
                let _ = writeln!(out, "  at {off}: {e}");
                return;
            }
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn record_line(blkno: u64, h: &RecordHeader) -> String {
    format!(
        "block {blkno}: lsn {}/{} tail {}/{} checkpoint {} record {} flags {}{} payload {} bytes in {} blocks\n",
        h.lsn.cycle(),
        h.lsn.block(),
        h.tail_lsn.cycle(),
        h.tail_lsn.block(),
        h.seq,
        h.index,
        if h.flags & crate::format::log::FLAG_COMMIT != 0 { "commit" } else { "data" },
        if h.flags & crate::format::log::FLAG_UNMOUNT != 0 { ",unmount" } else { "" },
        h.payload_len,
        h.blocks
    )
}

/// Every record in the log, in log order, with the items of each checkpoint whose records are
/// all there and intact.
fn log(dev: &dyn Device) -> Result<String, String> {
    let sb = read_superblock(dev).map_err(|e| e.to_string())?;
    let g = sb.geometry;
    let bs = g.block_size as usize;
    let mut out = String::new();
    let mut buf = AlignedBuf::new(bs);
    let mut idx = 0;
    let mut stream: Vec<u8> = Vec::new();
    let mut stream_seq = None;
    while idx < g.log_blocks {
        let blkno = g.log_start + idx;
        dev.read(blkno, &mut buf).map_err(|e| e.to_string())?;
        if buf[..4] != LOG_RECORD_MAGIC.to_le_bytes() {
            idx += 1;
            continue;
        }
        let h = match RecordHeader::decode(&buf, blkno, idx as u32, None, &sb.uuid, g.log_blocks) {
            Ok(h) => h,
            Err(e) => {
                let _ = writeln!(out, "block {blkno}: damaged record header: {e}");
                idx += 1;
                continue;
            }
        };
        out.push_str(&record_line(blkno, &h));
        let n = (h.blocks as u64).clamp(1, g.log_blocks - idx);
        let mut rec = AlignedBuf::new(n as usize * bs);
        dev.read(blkno, &mut rec).map_err(|e| e.to_string())?;
        if h.blocks as u64 > n {
            let _ = writeln!(out, "  record runs past the end of the log (wraps)");
        } else if let Err(e) = h.verify_payload(&rec, blkno) {
            let _ = writeln!(out, "  damaged payload: {e}");
            stream.clear();
            stream_seq = None;
        } else if h.flags & crate::format::log::FLAG_COMMIT == 0 {
            if stream_seq != Some(h.seq) {
                stream.clear();
                stream_seq = Some(h.seq);
            }
            stream.extend_from_slice(
                &rec[LOG_RECORD_HEADER_BYTES..LOG_RECORD_HEADER_BYTES + h.payload_len as usize],
            );
            let mut at = 0;
            while let Ok(Some((item, used))) =
                LogItem::decode_one(&stream[at..], blkno, g.block_size, g.block_count)
            {
                let bytes: usize = item.regions.iter().map(|r| r.1.len()).sum();
                let _ = writeln!(
                    out,
                    "  item: block {} ({}) {} regions, {bytes} bytes{}",
                    item.blkno,
                    item.btype.name(),
                    item.regions.len(),
                    if item.regions.is_empty() {
                        " (freed: cancels earlier items)"
                    } else {
                        ""
                    }
                );
                at += used;
            }
            stream.drain(..at);
        }
        idx += n;
    }
    if out.is_empty() {
        out.push_str("no records in the log\n");
    }
    Ok(out)
}

fn ag(eng: &Engine, agno: u64) -> Result<String, String> {
    let g = *eng.geometry();
    if agno >= g.ag_count as u64 {
        return Err(format!(
            "no AG {agno}: the filesystem's AGs are 0 to {} ({} in all)",
            g.ag_count - 1,
            g.ag_count
        ));
    }
    let a = Allocator::new(g);
    let mut tx = eng.begin(TransKind::Read).map_err(|e| e.to_string())?;
    let sp = a
        .free_space(&mut tx, agno as u32)
        .map_err(|e| e.to_string())?;
    let _ = tx.cancel();
    let mut out = format!(
        "AG {agno}: header at block {}\n{:#?}\n",
        a.ag_start(agno as u32) + AG_HEADER_OFFSET,
        sp.hdr
    );
    let _ = writeln!(out, "free extents (start+length): {:?}", sp.by_bno);
    let _ = writeln!(out, "inode chunks (block, free mask): {:?}", sp.chunks);
    let _ = writeln!(out, "unlinked inodes: {:?}", sp.unlinked);
    Ok(out)
}

fn show_inode(eng: &Engine, ino: u64) -> Result<String, String> {
    let mut tx = eng.begin(TransKind::Read).map_err(|e| e.to_string())?;
    let i = read_named_inode(eng, &mut tx, ino)?;
    let mut out = format!(
        "inode {ino}: mode {:o} uid {} gid {} nlink {} size {} blocks {} generation {}\n  atime {:?}\n  mtime {:?}\n  ctime {:?}\n  crtime {:?}\n  format {:?} nextents {} root {} level {} xattr block {} ({:?} form, level {}) rdev {}\n  flags {:#x} ({}) project {}\n",
        i.mode, i.uid, i.gid, i.nlink, i.size, i.blocks, i.generation, i.atime, i.mtime, i.ctime,
        i.crtime, i.format, i.nextents, i.root, i.root_level, i.xattr_blk, i.xattr_form,
        i.xattr_level, i.rdev, i.flags, crate::format::inode::flag_names(i.flags), i.projid
    );
    match i.mode & S_IFMT {
        S_IFREG => match extmap::all(&mut tx, ino, &i) {
            Ok(list) => {
                for e in list {
                    let _ = writeln!(
                        out,
                        "  extent: file block {} -> blocks {}+{}{}",
                        e.file_block,
                        e.start,
                        e.len,
                        if e.flags & 1 != 0 { " (unwritten)" } else { "" }
                    );
                }
            }
            Err(e) => {
                let _ = writeln!(out, "  extent map: {e}");
            }
        },
        S_IFDIR => {
            let _ = writeln!(out, "  parent {}", dir::parent(&i));
        }
        _ => {}
    }
    if i.xattr_blk != 0 {
        match crate::xattr::load(&mut tx, ino, &i) {
            Ok(a) => {
                // A value is shown up to its first bytes: one may be 64 KiB.
                for (n, v) in a {
                    let _ = writeln!(
                        out,
                        "  xattr {:?}: {} bytes {:?}{}",
                        String::from_utf8_lossy(&n),
                        v.len(),
                        String::from_utf8_lossy(&v[..v.len().min(DB_VALUE_SHOWN_BYTES)]),
                        if v.len() > DB_VALUE_SHOWN_BYTES {
                            ".."
                        } else {
                            ""
                        }
                    );
                }
                if let Ok(runs) = crate::xattr::blocks(&mut tx, ino, &i) {
                    let _ = writeln!(out, "  xattr blocks (start+length): {runs:?}");
                }
            }
            Err(e) => {
                let _ = writeln!(out, "  xattrs: {e}");
            }
        }
    }
    // The verdict fsck's checker and repairer act on, so a damaged inode can be examined
    // before it is repaired; what needs every inode (shared blocks, links) is fsck's alone.
    let v = match verify::read(&mut tx, eng.geometry(), ino) {
        Ok((_, v)) => v,
        Err(e) => return Err(format!("{out}  verdict: unreadable: {e}")),
    };
    if v.faults.is_empty() {
        let _ = writeln!(out, "  verdict: clean");
    }
    for f in &v.faults {
        let _ = writeln!(out, "  verdict: {}", f.describe());
    }
    let _ = tx.cancel();
    Ok(out)
}

/// The inode a number from the command line names: "no such inode" unless a chunk holds its
/// slot and the slot is in use; corruption only when what should be an inode is not.
fn read_named_inode(eng: &Engine, tx: &mut Trans<'_>, ino: u64) -> Result<Inode, String> {
    if !Allocator::new(*eng.geometry())
        .is_inode_number(tx, ino)
        .map_err(|e| e.to_string())?
    {
        return Err(format!(
            "no such inode {ino}: no inode chunk holds that number"
        ));
    }
    // As fsck reads it: attribute fields it refuses leave the rest to be shown (the verdict
    // names them).
    match inode::read_salvaging_xattrs(tx, ino) {
        Ok((_, i, _)) => Ok(i),
        Err(EngineError::Stale(_)) => Err(format!("no such inode {ino}: its slot is free")),
        Err(e) => Err(e.to_string()),
    }
}

fn show_dir(eng: &Engine, ino: u64) -> Result<String, String> {
    let mut tx = eng.begin(TransKind::Read).map_err(|e| e.to_string())?;
    let i = read_named_inode(eng, &mut tx, ino)?;
    if i.mode & S_IFMT != S_IFDIR {
        return Err(format!(
            "inode {ino} is not a directory (mode {:o})",
            i.mode
        ));
    }
    let mut out = format!(
        "directory {ino}: {} entries, {}\n",
        i.nextents,
        if i.format == crate::format::inode::DataFormat::Local {
            "inline".to_string()
        } else {
            format!("hash tree at block {} (level {})", i.root, i.root_level)
        }
    );
    let mut cookie = 0;
    loop {
        let batch = dir::read(&mut tx, ino, &i, cookie, 1024).map_err(|e| e.to_string())?;
        let Some(last) = batch.last() else { break };
        if last.cookie <= cookie {
            return Err(format!(
                "{out}readdir does not advance past cookie {cookie}"
            ));
        }
        cookie = last.cookie;
        for e in batch {
            let _ = writeln!(
                out,
                "  {:>12} type {:>2} {}",
                e.ino,
                e.ftype,
                String::from_utf8_lossy(&e.name)
            );
        }
    }
    let _ = tx.cancel();
    Ok(out)
}
