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
