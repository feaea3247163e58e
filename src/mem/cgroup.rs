//! The memory limit of the cgroup this process runs in, cgroup v2 or v1.
//!
//! `/proc/self/cgroup` names the process's cgroup in each hierarchy (`0::/path` for v2,
//! `N:memory:/path` for v1's memory controller); `/proc/self/mountinfo` says where each hierarchy
//! is mounted and which part of it the mount shows (its root, under a cgroup namespace). The limit
//! that applies is the smallest of the cgroup's and its ancestors' (v2 `memory.max`, v1
//! `memory.limit_in_bytes`); "max" or v1's page-rounded `i64::MAX` mean no limit.

use std::fmt;
use std::path::{Path, PathBuf};

/// v1 reports "no limit" as the largest page-aligned `i64`; anything this large is no limit.
const V1_UNLIMITED_FLOOR: u64 = 1 << 62;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CgroupVersion {
    V1,
    V2,
}

impl fmt::Display for CgroupVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CgroupVersion::V1 => "v1",
            CgroupVersion::V2 => "v2",
        })
    }
}

/// The memory cgroup of the process and the limit that applies to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMemory {
    pub(crate) version: CgroupVersion,
    /// The cgroup's directory.
    pub(crate) dir: PathBuf,
    /// The smallest limit of the cgroup and its ancestors, None when there is none.
    pub(crate) limit_bytes: Option<u64>,
    /// The directory whose limit that is.
    pub(crate) limit_dir: Option<PathBuf>,
}

impl CgroupMemory {
    /// The memory cgroup of this process, v2 where its memory controller is enabled, else v1.
    pub(crate) fn of_self() -> Option<CgroupMemory> {
        let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let mountinfo = std::fs::read_to_string(crate::mountinfo::PATH).ok()?;
        Self::find(&cgroup, &mountinfo, &|p| std::fs::read_to_string(p).ok())
    }

    /// `find` over given file contents; `read` reads a control file (tests pass a fake).
    pub(crate) fn find(
        cgroup: &str,
        mountinfo: &str,
        read: &dyn Fn(&Path) -> Option<String>,
    ) -> Option<CgroupMemory> {
        let mut v2_path = None;
        let mut v1_path = None;
        for line in cgroup.lines() {
            let mut f = line.splitn(3, ':');
            let (Some(id), Some(ctrls), Some(path)) = (f.next(), f.next(), f.next()) else {
                continue;
            };
            if id == "0" && ctrls.is_empty() {
                v2_path = Some(path.to_string());
            } else if ctrls.split(',').any(|c| c == "memory") {
                v1_path = Some(path.to_string());
            }
        }
        let mut v2_mount = None;
        let mut v1_mount = None;
        for m in crate::mountinfo::parse(mountinfo) {
            match m.fstype.as_str() {
                "cgroup2" => v2_mount = Some((m.root, m.point)),
                "cgroup" if m.has_super_option("memory") => v1_mount = Some((m.root, m.point)),
                _ => {}
            }
        }
        let locate = |mount: &(PathBuf, PathBuf), path: &str| -> PathBuf {
            // The mount shows the hierarchy from `root` down; the path is from the top.
            let rel = Path::new(path)
                .strip_prefix(&mount.0)
                .unwrap_or(Path::new(path));
            mount.1.join(rel.strip_prefix("/").unwrap_or(rel))
        };
        if let (Some(m), Some(p)) = (&v2_mount, &v2_path) {
            let dir = locate(m, p);
            if read(&dir.join("memory.max")).is_some() {
                let (limit_bytes, limit_dir) = smallest(&dir, &m.1, "memory.max", read);
                return Some(CgroupMemory {
                    version: CgroupVersion::V2,
                    dir,
                    limit_bytes,
                    limit_dir,
                });
            }
        }
        if let (Some(m), Some(p)) = (&v1_mount, &v1_path) {
            let dir = locate(m, p);
            if read(&dir.join("memory.limit_in_bytes")).is_some() {
                let (limit_bytes, limit_dir) = smallest(&dir, &m.1, "memory.limit_in_bytes", read);
                return Some(CgroupMemory {
                    version: CgroupVersion::V1,
                    dir,
                    limit_bytes,
                    limit_dir,
                });
            }
        }
        None
    }
}

/// The smallest limit in `file` from `dir` up to the hierarchy's mount point `top`.
fn smallest(
    dir: &Path,
    top: &Path,
    file: &str,
    read: &dyn Fn(&Path) -> Option<String>,
) -> (Option<u64>, Option<PathBuf>) {
    let mut best: (Option<u64>, Option<PathBuf>) = (None, None);
    let mut d = Some(dir);
    while let Some(cur) = d {
        if let Some(v) = read(&cur.join(file)).and_then(|s| parse_limit(&s)) {
            if best.0.is_none_or(|b| v < b) {
                best = (Some(v), Some(cur.to_path_buf()));
            }
        }
        if cur == top {
            break;
        }
        d = cur.parent().filter(|p| p.starts_with(top));
    }
    best
}

/// A limit file's content: bytes, or None for no limit ("max", v1's huge value, unreadable).
pub(crate) fn parse_limit(s: &str) -> Option<u64> {
    let s = s.trim();
    if s == "max" {
        return None;
    }
    let v: u64 = s.parse().ok()?;
    (v < V1_UNLIMITED_FLOOR).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    fn files(list: &[(&str, &str)]) -> HashMap<PathBuf, String> {
        list.iter()
            .map(|(p, v)| (PathBuf::from(p), v.to_string()))
            .collect()
    }

    #[test]
    fn v1_limit_of_an_ancestor_applies() {
        let f = files(&[
            (
                "/sys/fs/cgroup/memory/a/b/memory.limit_in_bytes",
                "9223372036854771712\n",
            ),
            ("/sys/fs/cgroup/memory/a/memory.limit_in_bytes", "8388608\n"),
            (
                "/sys/fs/cgroup/memory/memory.limit_in_bytes",
                "9223372036854771712\n",
            ),
        ]);
        let cg = CgroupMemory::find("4:memory:/a/b\n0::/\n", MOUNTINFO, &|p| f.get(p).cloned())
            .expect("found");
        assert_eq!(cg.version, CgroupVersion::V1);
        assert_eq!(cg.dir, PathBuf::from("/sys/fs/cgroup/memory/a/b"));
        assert_eq!(cg.limit_bytes, Some(8 << 20));
        assert_eq!(cg.limit_dir, Some(PathBuf::from("/sys/fs/cgroup/memory/a")));
    }

    #[test]
    fn v2_preferred_when_its_memory_controller_is_enabled() {
        let f = files(&[
            ("/sys/fs/cgroup/unified/svc/memory.max", "33554432\n"),
            ("/sys/fs/cgroup/memory/x/memory.limit_in_bytes", "8388608\n"),
        ]);
        let cg = CgroupMemory::find("4:memory:/x\n0::/svc\n", MOUNTINFO, &|p| f.get(p).cloned())
            .expect("found");
        assert_eq!(cg.version, CgroupVersion::V2);
        assert_eq!(cg.limit_bytes, Some(32 << 20));
    }

    #[test]
    fn v2_without_memory_controller_falls_back_to_v1_and_max_is_no_limit() {
        let f = files(&[("/sys/fs/cgroup/memory/x/memory.limit_in_bytes", "max\n")]);
        let cg = CgroupMemory::find("4:memory:/x\n0::/svc\n", MOUNTINFO, &|p| f.get(p).cloned())
            .expect("found");
        assert_eq!(cg.version, CgroupVersion::V1);
        assert_eq!(cg.limit_bytes, None);
    }

    #[test]
    fn namespaced_root_is_stripped() {
        let mi = "41 31 0:38 /svc /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let f = files(&[("/sys/fs/cgroup/inner/memory.max", "16777216\n")]);
        let cg = CgroupMemory::find("0::/svc/inner\n", mi, &|p| f.get(p).cloned()).expect("found");
        assert_eq!(cg.dir, PathBuf::from("/sys/fs/cgroup/inner"));
        assert_eq!(cg.limit_bytes, Some(16 << 20));
    }
}
