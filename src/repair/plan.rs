//! Repair, phase 2: decide the namespace from what the scan kept, in memory. An entry stays if
//! its name is valid, it names a kept inode (not the root), no earlier entry of its directory has
//! the same name, and, for a directory, it is that directory's first name found walking from the
//! root. Directories the walk does not reach are attached to /lost+found (the tops of detached
//! subtrees first, then one member of each cycle); so are files with links and no name left.
//! Inodes with no links and no name are orphans, freed at the next mount.

use super::{Kept, Name};
use crate::format::inode::{dtype, S_IFDIR, S_IFMT};
use crate::format::name::name_problem;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

/// One change to a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Remove the entry (found by its cookie: its name may be damaged).
    Drop {
        dir: u64,
        name: Vec<u8>,
        key: [u64; 2],
        why: String,
    },
    /// Point it at the same inode with the right file type.
    Retype {
        dir: u64,
        name: Vec<u8>,
        key: [u64; 2],
        ino: u64,
        ftype: u8,
    },
    /// Put it back (a rebuilt directory's salvaged entry, or one whose key no longer matched
    /// its name, removed first).
    Add {
        dir: u64,
        name: Vec<u8>,
        ino: u64,
        ftype: u8,
    },
    /// Attach the inode in /lost+found as "#INO".
    Lost { ino: u64, ftype: u8 },
}

#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub(crate) actions: Vec<Action>,
    /// Kept inodes with no links and no name: put on the unlinked trees (freed at mount).
    pub(crate) orphans: BTreeSet<u64>,
    /// Kept inodes that end up with a name although their link count is 0.
    pub(crate) relinked: BTreeSet<u64>,
}

fn is_dir(k: &Kept) -> bool {
    k.mode & S_IFMT == S_IFDIR
}

/// The plan for `names` (as read, grouped by directory in reading order) over the `inodes` kept;
/// `rebuilt` are the directories that were emptied (their surviving entries are added back).
pub(crate) fn plan(
    root: u64,
    inodes: &BTreeMap<u64, Kept>,
    rebuilt: &BTreeSet<u64>,
    names: &[Name],
) -> Plan {
    let mut p = Plan::default();
    // Entries that survive the per-entry checks, by directory.
    let mut by_dir: HashMap<u64, Vec<usize>> = HashMap::new();
    let mut seen: HashSet<(u64, &[u8])> = HashSet::new();
    for (n, e) in names.iter().enumerate() {
        let why = if !inodes.contains_key(&e.dir) {
            continue;
        } else if let Some(p) = name_problem(&e.name) {
            Some(format!("its name {}", p.describe()))
        } else if e.ino == root {
            Some("names the root directory".to_string())
        } else if !inodes.contains_key(&e.ino) {
            Some(format!("points at inode {}, which is not in use", e.ino))
        } else if !seen.insert((e.dir, &e.name)) {
            Some("a second entry of the same name".to_string())
        } else {
            None
        };
        match why {
            Some(why) => drop_entry(&mut p, rebuilt, e, why),
            None => by_dir.entry(e.dir).or_default().push(n),
        }
    }
    // Walk from the root: a directory's first name found is its name; later ones go.
    let mut reached: HashSet<u64> = HashSet::from([root]);
    let mut keep: Vec<usize> = Vec::new();
    let walk = |p: &mut Plan, reached: &mut HashSet<u64>, keep: &mut Vec<usize>, top: u64| {
        let mut queue = VecDeque::from([top]);
        while let Some(d) = queue.pop_front() {
            for &n in by_dir.get(&d).map(Vec::as_slice).unwrap_or(&[]) {
                let e = &names[n];
                if is_dir(&inodes[&e.ino]) {
                    if !reached.insert(e.ino) {
                        drop_entry(p, rebuilt, e, "a second name of a directory".into());
                        continue;
                    }
                    queue.push_back(e.ino);
                }
                keep.push(n);
            }
        }
    };
    walk(&mut p, &mut reached, &mut keep, root);
    // Detached directories: those no detached directory names first, then cycles.
    let detached: Vec<u64> = inodes
        .iter()
        .filter(|(i, k)| is_dir(k) && !reached.contains(i))
        .map(|(&i, _)| i)
        .collect();
    let named_inside: HashSet<u64> = detached
        .iter()
        .flat_map(|d| by_dir.get(d).map(Vec::as_slice).unwrap_or(&[]))
        .map(|&n| names[n].ino)
        .collect();
    let tops = detached.iter().filter(|d| !named_inside.contains(d));
    let rest = detached.iter().filter(|d| named_inside.contains(d));
    for &d in tops.chain(rest) {
        if reached.contains(&d) {
            continue;
        }
        let k = &inodes[&d];
        if k.nlink == 0 && !by_dir.contains_key(&d) {
            p.orphans.insert(d);
            reached.insert(d);
            continue;
        }
        reached.insert(d);
        p.actions.push(Action::Lost {
            ino: d,
            ftype: dtype(k.mode),
        });
        walk(&mut p, &mut reached, &mut keep, d);
    }
    // Entries that stay: retyped or put back as needed.
    let mut named: HashSet<u64> = HashSet::new();
    for n in keep {
        let e = &names[n];
        let ftype = dtype(inodes[&e.ino].mode);
        named.insert(e.ino);
        let rehash = !rebuilt.contains(&e.dir) && e.key[0] != crate::dir::name_hash(&e.name);
        if rehash {
            drop_entry(&mut p, rebuilt, e, "its key does not match its name".into());
        }
        if rebuilt.contains(&e.dir) || rehash {
            p.actions.push(Action::Add {
                dir: e.dir,
                name: e.name.clone(),
                ino: e.ino,
                ftype,
            });
        } else if ftype != e.ftype {
            p.actions.push(Action::Retype {
                dir: e.dir,
                name: e.name.clone(),
                key: e.key,
                ino: e.ino,
                ftype,
            });
        }
    }
    // Files left without a name.
    for (&ino, k) in inodes {
        if ino == root || is_dir(k) {
            if is_dir(k) && k.nlink == 0 && ino != root && !p.orphans.contains(&ino) {
                p.relinked.insert(ino);
            }
            continue;
        }
        if named.contains(&ino) {
            if k.nlink == 0 {
                p.relinked.insert(ino);
            }
        } else if k.nlink == 0 {
            p.orphans.insert(ino);
        } else {
            p.actions.push(Action::Lost {
                ino,
                ftype: dtype(k.mode),
            });
        }
    }
    p
}

fn drop_entry(p: &mut Plan, rebuilt: &BTreeSet<u64>, e: &Name, why: String) {
    // A rebuilt directory starts empty: an entry left out needs no removal.
    if !rebuilt.contains(&e.dir) {
        p.actions.push(Action::Drop {
            dir: e.dir,
            name: e.name.clone(),
            key: e.key,
            why,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::inode::S_IFREG;

    fn dir(nlink: u32) -> Kept {
        Kept {
            mode: S_IFDIR | 0o755,
            nlink,
        }
    }
    fn file(nlink: u32) -> Kept {
        Kept {
            mode: S_IFREG | 0o644,
            nlink,
        }
    }
    fn name(d: u64, n: &str, ino: u64, ftype: u8) -> Name {
        let h = crate::dir::name_hash(n.as_bytes());
        Name {
            dir: d,
            name: n.as_bytes().to_vec(),
            ino,
            ftype,
            key: [h, 0],
        }
    }

    #[test]
    fn cycles_second_names_and_lost_files() {
        // 1 root; 2 and 3 name each other (a cycle cut off from the root); 4 is named twice;
        // 5 a file with a link and no name; 6 a file with no links and no name; 7 named by a
        // dangling entry's neighbour.
        let inodes = BTreeMap::from([
            (1, dir(3)),
            (2, dir(3)),
            (3, dir(3)),
            (4, dir(2)),
            (5, file(1)),
            (6, file(0)),
            (7, file(0)),
        ]);
        let names = vec![
            name(1, "four", 4, 4),
            name(1, "again", 4, 4),
            name(1, "gone", 99, 8),
            name(1, "seven", 7, 4),
            name(2, "three", 3, 4),
            name(3, "two", 2, 4),
        ];
        let p = plan(1, &inodes, &BTreeSet::new(), &names);
        let drops: Vec<&str> = p
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Drop { name, .. } => Some(std::str::from_utf8(name).unwrap()),
                _ => None,
            })
            .collect();
        assert_eq!(drops, ["gone", "again", "two"]);
        let lost: Vec<u64> = p
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Lost { ino, .. } => Some(*ino),
                _ => None,
            })
            .collect();
        assert_eq!(lost, [2, 5]);
        assert!(p.actions.contains(&Action::Retype {
            dir: 1,
            name: b"seven".to_vec(),
            key: [crate::dir::name_hash(b"seven"), 0],
            ino: 7,
            ftype: 8
        }));
        assert_eq!(p.orphans, BTreeSet::from([6]));
        assert_eq!(p.relinked, BTreeSet::from([7]));
    }
}
