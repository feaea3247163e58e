//! The generic B+tree against a BTreeMap model: random inserts, deletes, updates and lookups,
//! one transaction each, on 512-byte blocks so trees grow several levels; then a crash, recovery,
//! and the recovered tree must equal the model with no node leaked.

mod common;

use common::*;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use ticketfs::btree::{Btree, Key, NodeAlloc, Root, Val};
use ticketfs::device::{Device, MemDevice};
use ticketfs::format::BlockType;
use ticketfs::mem::OverrunPolicy;
use ticketfs::trans::Trans;
use ticketfs::{Engine, EngineError, EngineOptions, TransKind};

/// Node blocks from a range, freed ones reused.
struct Pool {
    next: u64,
    end: u64,
    free: Vec<u64>,
    live: BTreeSet<u64>,
}

impl NodeAlloc for Pool {
    fn alloc_node(&mut self, _tx: &mut Trans<'_>) -> Result<u64, EngineError> {
        let b = match self.free.pop() {
            Some(b) => b,
            None if self.next < self.end => {
                self.next += 1;
                self.next - 1
            }
            None => return Err(EngineError::Invalid("test pool exhausted".into())),
        };
        assert!(self.live.insert(b));
        Ok(b)
    }
    fn free_node(&mut self, _tx: &mut Trans<'_>, blkno: u64) -> Result<(), EngineError> {
        assert!(self.live.remove(&blkno), "freeing block {blkno} twice");
        self.free.push(blkno);
        Ok(())
    }
}

#[derive(Debug, Clone)]
enum Op {
    Insert(u64, u64),
    Delete(u64),
    Update(u64, u64),
    Get(u64),
    Le(u64),
    Ge(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let k = 0u64..600;
    prop_oneof![
        4 => (k.clone(), any::<u64>()).prop_map(|(k, v)| Op::Insert(k, v)),
        2 => k.clone().prop_map(Op::Delete),
        1 => (k.clone(), any::<u64>()).prop_map(|(k, v)| Op::Update(k, v)),
        1 => k.clone().prop_map(Op::Get),
        1 => k.clone().prop_map(Op::Le),
        1 => k.prop_map(Op::Ge),
    ]
}

fn key(k: u64) -> Key {
    [k / 7, k % 7]
}

/// Runs `ops`; returns the most levels the tree had below its root.
fn run(ops: Vec<Op>) -> Result<u16, TestCaseError> {
    let g = geometry(512, 8192, 0);
    let dev = Arc::new(MemDevice::from_bytes(512, formatted_image(g)));
    let opts = EngineOptions {
        overrun: OverrunPolicy::Panic,
        ..Default::default()
    };
    let eng = Engine::mount(dev.clone(), opts).unwrap();
    let (first, _) = data_blocks(&g);
    // The first root comes from the pool too, so its freeing after a collapse is accounted.
    let mut pool = Pool {
        next: first + 1,
        end: first + 4000,
        free: Vec::new(),
        live: BTreeSet::from([first]),
    };
    let mut tx = eng.begin(TransKind::Write).unwrap();
    let mut tree = Btree::create(&mut tx, BlockType::BtreeBno, 5, first).unwrap();
    tx.commit().unwrap();
    let mut model: BTreeMap<Key, Val> = BTreeMap::new();
    let mut tallest = 0;
    for op in ops {
        let mut tx = eng.begin(TransKind::Write).unwrap();
        match op {
            Op::Insert(k, v) => {
                let r = tree.insert(&mut tx, &mut pool, key(k), [v, k]);
                match model.entry(key(k)) {
                    std::collections::btree_map::Entry::Occupied(_) => prop_assert!(r.is_err()),
                    std::collections::btree_map::Entry::Vacant(e) => {
                        r.unwrap();
                        e.insert([v, k]);
                    }
                }
            }
            Op::Delete(k) => prop_assert_eq!(
                tree.delete(&mut tx, &mut pool, &key(k)).unwrap(),
                model.remove(&key(k))
            ),
            Op::Update(k, v) => {
                let had = model.get_mut(&key(k)).map(|x| *x = [v, 1]).is_some();
                prop_assert_eq!(tree.update(&mut tx, &key(k), [v, 1]).unwrap(), had);
            }
            Op::Get(k) => prop_assert_eq!(
                tree.get(&mut tx, &key(k)).unwrap(),
                model.get(&key(k)).copied()
            ),
            Op::Le(k) => prop_assert_eq!(
                tree.le(&mut tx, &key(k)).unwrap(),
                model.range(..=key(k)).next_back().map(|(a, b)| (*a, *b))
            ),
            Op::Ge(k) => prop_assert_eq!(
                tree.ge(&mut tx, &key(k)).unwrap(),
                model.range(key(k)..).next().map(|(a, b)| (*a, *b))
            ),
        }
        tx.commit().unwrap();
        tallest = tallest.max(tree.root.level);
    }
    let root: Root = tree.root;
    eng.force_all().unwrap();
    eng.crash();

    let image: Arc<dyn Device> = Arc::new(MemDevice::from_bytes(512, dev.snapshot()));
    let eng = Engine::mount(image, EngineOptions::default()).unwrap();
    let tree = Btree::open(BlockType::BtreeBno, 5, root);
    let mut tx = eng.begin(TransKind::Write).unwrap();
    let got = tree.collect(&mut tx).unwrap();
    prop_assert_eq!(got, model.into_iter().collect::<Vec<_>>());
    // Every node block in the tree is one the pool handed out and did not take back.
    let mut blocks = tree.blocks(&mut tx).unwrap();
    blocks.sort_unstable();
    let expect: Vec<u64> = pool.live.iter().copied().collect();
    prop_assert_eq!(blocks, expect);
    tx.cancel().unwrap();
    eng.unmount().unwrap();
    Ok(tallest)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn btree_matches_model(ops in prop::collection::vec(op(), 1..1500)) {
        run(ops)?;
    }
}

#[test]
fn btree_grows_and_shrinks_through_many_levels() {
    // Ascending inserts then deletes of everything: the tree must end as an empty root leaf.
    let mut ops: Vec<Op> = (0..1800).map(|k| Op::Insert(k / 3, k)).collect();
    ops.extend((0..600).map(Op::Delete));
    let tallest = run(ops).unwrap();
    assert!(tallest >= 2, "the tree only reached level {tallest}");
}

/// A bulk-built tree (fsck's repair writes the AG trees so) reads back as exactly its records,
/// takes exactly the blocks `nodes_needed` says, and then takes inserts and deletes like any
/// other tree.
fn bulk(keys: BTreeSet<u64>, more: Vec<(u64, bool)>) -> Result<(), TestCaseError> {
    use ticketfs::btree::bulk;
    let g = geometry(512, 8192, 0);
    let dev = Arc::new(MemDevice::from_bytes(512, formatted_image(g)));
    let (first, _) = data_blocks(&g);
    let recs: Vec<(Key, Val)> = keys.iter().map(|&k| (key(k), [k * 7, 0])).collect();
    let need = bulk::nodes_needed(512, recs.len());
    let uuid = {
        let eng = Engine::mount(dev.clone(), EngineOptions::default()).unwrap();
        let u = eng.superblock().uuid;
        eng.unmount().unwrap();
        u
    };
    let stamp = bulk::Stamp {
        btype: BlockType::BtreeBno,
        owner: 5,
        uuid: &uuid,
        lsn: 0,
    };
    let mut nodes = first + 1..first + 4000;
    let (root, blocks) = bulk::build(512, &stamp, &recs, first, &mut nodes).unwrap();
    prop_assert_eq!(blocks.len() as u64, need);
    prop_assert_eq!(root.level, bulk::height(512, recs.len()));
    for (b, buf) in &blocks {
        dev.write(*b, buf).unwrap();
    }
    let eng = Engine::mount(dev.clone(), EngineOptions::default()).unwrap();
    let mut tree = Btree::open(BlockType::BtreeBno, 5, root);
    let mut tx = eng.begin(TransKind::Write).unwrap();
    prop_assert_eq!(tree.collect(&mut tx).unwrap(), recs.clone());
    let mut found = tree.blocks(&mut tx).unwrap();
    found.sort_unstable();
    let mut written: Vec<u64> = blocks.iter().map(|b| b.0).collect();
    written.sort_unstable();
    prop_assert_eq!(found, written);
    tx.cancel().unwrap();
    let mut model: BTreeMap<Key, Val> = recs.into_iter().collect();
    let mut pool = Pool {
        next: first + 4000,
        end: first + 8000,
        free: Vec::new(),
        live: BTreeSet::new(),
    };
    for (k, insert) in more {
        let mut tx = eng.begin(TransKind::Write).unwrap();
        if insert && !model.contains_key(&key(k)) {
            tree.insert(&mut tx, &mut pool, key(k), [k, 1]).unwrap();
            model.insert(key(k), [k, 1]);
        } else {
            let gone = tree.delete(&mut tx, &mut pool, &key(k)).unwrap();
            prop_assert_eq!(gone, model.remove(&key(k)));
        }
        tx.commit().unwrap();
    }
    let mut tx = eng.begin(TransKind::Write).unwrap();
    prop_assert_eq!(
        tree.collect(&mut tx).unwrap(),
        model.into_iter().collect::<Vec<_>>()
    );
    tx.cancel().unwrap();
    eng.unmount().unwrap();
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn bulk_built_tree_reads_back_and_grows(
        keys in prop::collection::btree_set(0u64..100_000, 0..3000),
        more in prop::collection::vec((0u64..100_000, any::<bool>()), 0..300),
    ) {
        bulk(keys, more)?;
    }
}
