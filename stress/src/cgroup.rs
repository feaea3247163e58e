//! A memory cgroup for the daemon: v2 where the memory controller is enabled, else v1. Created
//! with its limit, joined by the daemon between fork and exec (so it is inside before it
//! allocates anything), read while the workload runs, and removed when dropped — after killing
//! what is left in it, which is only the daemon this harness started.

use std::ffi::CString;
use std::fs;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

pub struct Cgroup {
    pub dir: PathBuf,
    pub version: Version,
    procs: CString,
}

/// The mount point of a hierarchy from /proc/self/mountinfo: cgroup2, or v1 with `memory`.
fn mount_of(v2: bool) -> Option<PathBuf> {
    ticketfs::mountinfo::read()
        .ok()?
        .into_iter()
        .find(|m| {
            if v2 {
                m.fstype == "cgroup2"
                    && fs::read_to_string(m.point.join("cgroup.controllers"))
                        .is_ok_and(|c| c.split_whitespace().any(|x| x == "memory"))
            } else {
                m.fstype == "cgroup" && m.has_super_option("memory")
            }
        })
        .map(|m| m.point)
}

fn write(p: &Path, v: &str) -> Result<(), String> {
    fs::write(p, v).map_err(|e| format!("{}: {e}", p.display()))
}

impl Cgroup {
    pub fn create(name: &str, limit: u64) -> Result<Cgroup, String> {
        let (root, version) = match mount_of(true) {
            Some(r) => (r, Version::V2),
            None => (
                mount_of(false).ok_or("no memory cgroup controller on this machine")?,
                Version::V1,
            ),
        };
        let dir = root.join(name);
        if version == Version::V2 {
            let sub = root.join("cgroup.subtree_control");
            if !fs::read_to_string(&sub).is_ok_and(|s| s.contains("memory")) {
                write(&sub, "+memory")?;
            }
        }
        fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        match version {
            Version::V2 => {
                write(&dir.join("memory.max"), &limit.to_string())?;
                let _ = write(&dir.join("memory.swap.max"), "0");
            }
            Version::V1 => {
                write(&dir.join("memory.limit_in_bytes"), &limit.to_string())?;
                let _ = write(&dir.join("memory.memsw.limit_in_bytes"), &limit.to_string());
            }
        }
        let procs = CString::new(dir.join("cgroup.procs").as_os_str().as_encoded_bytes())
            .map_err(|e| e.to_string())?;
        Ok(Cgroup {
            dir,
            version,
            procs,
        })
    }

    /// The path of `cgroup.procs`, for the child to join between fork and exec (writing "0"
    /// there moves the writer itself; no allocation after fork).
    pub fn procs_path(&self) -> &CString {
        &self.procs
    }

    fn read_u64(&self, file: &str) -> u64 {
        fs::read_to_string(self.dir.join(file))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    fn field(&self, file: &str, key: &str) -> u64 {
        fs::read_to_string(self.dir.join(file))
            .ok()
            .and_then(|s| {
                s.lines().find_map(|l| {
                    let (k, v) = l.split_once(' ')?;
                    (k == key).then(|| v.trim().parse().ok())?
                })
            })
            .unwrap_or(0)
    }

    pub fn usage(&self) -> u64 {
        match self.version {
            Version::V2 => self.read_u64("memory.current"),
            Version::V1 => self.read_u64("memory.usage_in_bytes"),
        }
    }

    /// Page cache charged to the cgroup (v2 `file`, v1 `cache` of memory.stat): what the
    /// kernel can reclaim at the limit, unlike the daemon's anonymous and kernel memory.
    pub fn page_cache(&self) -> u64 {
        match self.version {
            Version::V2 => self.field("memory.stat", "file"),
            Version::V1 => self.field("memory.stat", "cache"),
        }
    }

    pub fn peak(&self) -> u64 {
        match self.version {
            Version::V2 => self.read_u64("memory.peak"),
            Version::V1 => self.read_u64("memory.max_usage_in_bytes"),
        }
    }

    pub fn oom_kills(&self) -> u64 {
        match self.version {
            Version::V2 => self.field("memory.events", "oom_kill"),
            Version::V1 => self.field("memory.oom_control", "oom_kill"),
        }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let procs = fs::read_to_string(self.dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            // SAFETY: signalling a process of our own cgroup (the daemon we started).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        for _ in 0..50 {
            if fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        eprintln!("ticketfs-stress: could not remove {}", self.dir.display());
    }
}
