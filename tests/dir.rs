//! Directories against a model: random inserts, removes, replaces and lookups (names up to 255
//! bytes, 512-byte blocks so the hash tree and name blocks multiply; small directories stay
//! inline in the inode until an entry does not fit, then move to the tree keeping their keys); readdir returns exactly the
//! model; a readdir resumed from a cookie while other entries come and go returns every entry
//! that stayed, once; crash and recovery keep it all; removing everything frees every block.

mod common;

use common::*;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use ticketfs::alloc::{format_all, Allocator};
use ticketfs::device::{Device, MemDevice};
use ticketfs::dir;
use ticketfs::format::inode::{Inode, Time};
use ticketfs::mem::OverrunPolicy;
use ticketfs::{inode, Engine, EngineOptions, TransKind};

fn new_dir(eng: &Engine, alloc: &Allocator) -> u64 {
    let mut tx = eng.begin(TransKind::Mkdir).unwrap();
    let ino = alloc.alloc_inode(&mut tx, 0).unwrap().unwrap();
    let r = inode::join_new(&mut tx, ino).unwrap();
    let mut i = Inode {
        mode: 0o40755,
        nlink: 2,
        mtime: Time { sec: 1, nsec: 0 },
        ..Default::default()
    };
    dir::init(&mut tx, alloc, ino, &mut i, ino).unwrap();
    inode::write(&mut tx, &r, &i);
    tx.commit().unwrap();
    ino
}

#[derive(Debug, Clone)]
enum Op {
    Insert(Vec<u8>, u64),
    Remove(usize),
    Replace(usize, u64),
    Lookup(Vec<u8>),
}

fn name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => "[a-z]{1,6}".prop_map(|s| s.into_bytes()),
        1 => prop::collection::vec(1u8..=255, 1..=255)
            .prop_map(|v| v.into_iter().map(|b| if b == b'/' { b'_' } else { b }).collect())
            // "." and ".." are never stored (format::name): the request layer answers them.
            .prop_filter("a name a directory may store", |n: &Vec<u8>| {
                ticketfs::format::name::name_problem(n).is_none()
            }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (name(), 1u64..1 << 40).prop_map(|(n, i)| Op::Insert(n, i)),
        2 => any::<usize>().prop_map(Op::Remove),
        1 => (any::<usize>(), 1u64..1 << 40).prop_map(|(p, i)| Op::Replace(p, i)),
        1 => name().prop_map(Op::Lookup),
    ]
}

fn listing(eng: &Engine, d: u64) -> BTreeMap<Vec<u8>, u64> {
    let mut tx = eng.begin(TransKind::Read).unwrap();
    let (_, i) = inode::read(&mut tx, d).unwrap();
    let mut out = BTreeMap::new();
    let mut cookie = 0;
    loop {
        let batch = dir::read(&mut tx, d, &i, cookie, 7).unwrap();
        if batch.is_empty() {
            break;
        }
        for e in batch {
            cookie = e.cookie;
            if e.name != b"." && e.name != b".." {
                assert!(
                    out.insert(e.name.clone(), e.ino).is_none(),
                    "readdir returned {:?} twice",
                    e.name
                );
            }
        }
    }
    tx.cancel().unwrap();
    out
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let g = geometry(512, 16384, 0);
    let dev = Arc::new(MemDevice::from_bytes(512, formatted_image(g)));
    let opts = EngineOptions {
        overrun: OverrunPolicy::Panic,
        ..Default::default()
    };
    let eng = Engine::mount(dev.clone(), opts).unwrap();
    format_all(&eng).unwrap();
    let alloc = Allocator::open(&eng).unwrap();
    let d = new_dir(&eng, &alloc);
    {
        // A new directory is inline: no blocks until its entries outgrow the inode.
        let mut tx = eng.begin(TransKind::Read).unwrap();
        let (_, i) = inode::read(&mut tx, d).unwrap();
        prop_assert_eq!(
            (i.blocks, i.format),
            (0, ticketfs::format::inode::DataFormat::Local)
        );
        tx.cancel().unwrap();
    }
    let free_before: u64 = (0..g.ag_count).map(|a| alloc.summary(a).free_blocks).sum();
    let mut model: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
    // A readdir in progress: its cookie, what it returned, what was removed meanwhile, and
    // the names present when it started.
    type Cursor = (u64, BTreeSet<Vec<u8>>, BTreeSet<Vec<u8>>, BTreeSet<Vec<u8>>);
    let mut cursor: Option<Cursor> = None;
    for (n, op) in ops.into_iter().enumerate() {
        let mut tx = eng.begin(TransKind::Rename).unwrap();
        let (r, mut i) = inode::read(&mut tx, d).unwrap();
        match op {
            Op::Insert(name, ino) => {
                let had = dir::lookup(&mut tx, d, &i, &name).unwrap();
                prop_assert_eq!(had.map(|x| x.0), model.get(&name).copied());
                if had.is_none() {
                    dir::insert(&mut tx, &alloc, d, &mut i, &name, ino, 8).unwrap();
                    model.insert(name, ino);
                }
            }
            Op::Remove(p) => {
                if !model.is_empty() {
                    let name = model.keys().nth(p % model.len()).unwrap().clone();
                    let got = dir::remove(&mut tx, &alloc, d, &mut i, &name).unwrap();
                    prop_assert_eq!(got, model.remove(&name));
                    if let Some((_, _, gone, _)) = cursor.as_mut() {
                        gone.insert(name);
                    }
                }
            }
            Op::Replace(p, ino) => {
                if !model.is_empty() {
                    let name = model.keys().nth(p % model.len()).unwrap().clone();
                    let old = dir::replace(&mut tx, d, &mut i, &name, ino, 8).unwrap();
                    prop_assert_eq!(old, model.insert(name, ino));
                }
            }
            Op::Lookup(name) => {
                prop_assert_eq!(
                    dir::lookup(&mut tx, d, &i, &name).unwrap().map(|x| x.0),
                    model.get(&name).copied()
                );
            }
        }
        inode::write(&mut tx, &r, &i);
        tx.commit().unwrap();
        // Every few operations, advance a readdir that runs across the changes.
        if n % 5 == 0 {
            let (cookie, seen, _, _) = cursor.get_or_insert_with(|| {
                (
                    0,
                    BTreeSet::new(),
                    BTreeSet::new(),
                    model.keys().cloned().collect(),
                )
            });
            let mut tx = eng.begin(TransKind::Read).unwrap();
            let (_, i) = inode::read(&mut tx, d).unwrap();
            let batch = dir::read(&mut tx, d, &i, *cookie, 3).unwrap();
            tx.cancel().unwrap();
            if batch.is_empty() {
                // Finished: everything present at the start and never removed was returned once.
                let (_, seen, gone, initial) = cursor.take().unwrap();
                for name in initial.difference(&gone) {
                    prop_assert!(
                        seen.contains(name),
                        "resumed readdir missed {:?}, present throughout",
                        name
                    );
                }
            } else {
                for e in batch {
                    *cookie = e.cookie;
                    if !dir::is_made_up(&e) {
                        prop_assert!(
                            seen.insert(e.name.clone()),
                            "resumed readdir returned {:?} twice",
                            e.name
                        );
                    }
                }
            }
        }
    }
    prop_assert_eq!(listing(&eng, d), model.clone());
    eng.force_all().unwrap();
    eng.crash();

    let image: Arc<dyn Device> = Arc::new(MemDevice::from_bytes(512, dev.snapshot()));
    let eng = Engine::mount(
        image,
        EngineOptions {
            overrun: OverrunPolicy::Panic,
            ..Default::default()
        },
    )
    .unwrap();
    let alloc = Allocator::open(&eng).unwrap();
    prop_assert_eq!(listing(&eng, d), model.clone());
    for name in model.keys() {
        let mut tx = eng.begin(TransKind::Remove).unwrap();
        let (r, mut i) = inode::read(&mut tx, d).unwrap();
        prop_assert!(dir::remove(&mut tx, &alloc, d, &mut i, name)
            .unwrap()
            .is_some());
        inode::write(&mut tx, &r, &i);
        tx.commit().unwrap();
    }
    prop_assert_eq!(listing(&eng, d), BTreeMap::new());
    let mut tx = eng.begin(TransKind::Read).unwrap();
    let (_, i) = inode::read(&mut tx, d).unwrap();
    prop_assert_eq!(i.nextents, 0);
    prop_assert!(
        i.blocks <= 1,
        "an empty directory keeps at most its tree's root, has {}",
        i.blocks
    );
    tx.cancel().unwrap();
    // Everything but the root came back (the free list may hold some of it).
    let mut tx = eng.begin(TransKind::Read).unwrap();
    let free_after: u64 = (0..g.ag_count)
        .map(|a| {
            let s = alloc.free_space(&mut tx, a).unwrap();
            s.hdr.free_blocks + s.hdr.agfl.len() as u64
        })
        .sum();
    tx.cancel().unwrap();
    prop_assert!(
        free_after + 64 >= free_before,
        "blocks leaked: {} free before, {} after",
        free_before,
        free_after
    );
    eng.unmount().unwrap();
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn directory_matches_model(ops in prop::collection::vec(op(), 1..300)) {
        run(ops)?;
    }
}

#[test]
fn thousands_of_entries_and_colliding_hashes() {
    let mut ops: Vec<Op> = (0..3000u64)
        .map(|i| Op::Insert(format!("file-{i:05}").into_bytes(), i + 100))
        .collect();
    ops.extend((0..1500usize).map(|i| Op::Remove(i * 7)));
    run(ops).unwrap();
}
