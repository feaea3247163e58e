//! The one reader of `/proc/self/mountinfo` (proc(5)): ticketfs's mount discovery, the memory
//! cgroup's location and the stress harness all read the mount table through it.
//!
//! A line: `id parent major:minor root mount_point mount_options [optional fields...] -
//! fstype source super_options`. Paths are escaped (space, tab, newline and backslash as a
//! backslash and three octal digits) and may hold any bytes but NUL, so they are returned as
//! paths built from bytes, not as UTF-8.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

/// Where the kernel lists this process's mounts.
pub(crate) const PATH: &str = "/proc/self/mountinfo";

/// One mount of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The device number, `major:minor`.
    pub dev: String,
    /// The directory of the filesystem this mount shows (`/` unless a bind mount of a subtree).
    pub(crate) root: PathBuf,
    pub point: PathBuf,
    /// This mount's options (ro, nosuid, ...).
    pub(crate) options: String,
    /// The filesystem type, with its subtype (`fuse.ticketfs`).
    pub fstype: String,
    /// The source as the mount named it (a path, or any name for a FUSE mount).
    pub(crate) source: PathBuf,
    /// The superblock's options (shared by every mount of the filesystem).
    pub(crate) super_options: String,
}

impl Mount {
    /// One of the superblock's comma-separated options is exactly `opt`.
    pub fn has_super_option(&self, opt: &str) -> bool {
        self.super_options.split(',').any(|o| o == opt)
    }
}

/// The mounts of `text`, in its order (the most recent last); a line that does not parse is
/// skipped, not fatal: the table is the kernel's, and the lines that matter are whole.
pub(crate) fn parse(text: &str) -> Vec<Mount> {
    text.lines().filter_map(parse_line).collect()
}

/// The current mount table of this process.
pub fn read() -> Result<Vec<Mount>, String> {
    std::fs::read_to_string(PATH)
        .map(|t| parse(&t))
        .map_err(|e| format!("{PATH}: {e}"))
}

fn parse_line(line: &str) -> Option<Mount> {
    let (left, right) = line.split_once(" - ")?;
    let l: Vec<&str> = left.split(' ').collect();
    let r: Vec<&str> = right.split(' ').collect();
    if l.len() < 6 || r.len() < 2 {
        return None;
    }
    Some(Mount {
        dev: l[2].to_string(),
        root: unescape(l[3]),
        point: unescape(l[4]),
        options: l[5].to_string(),
        fstype: r[0].to_string(),
        source: unescape(r[1]),
        super_options: r.get(2).copied().unwrap_or("").to_string(),
    })
}

/// A field with its octal escapes (`\040` for a space) turned back into bytes.
pub(crate) fn unescape(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        // Three octal digits, the first at most 3: one byte.
        let octal = b.get(i + 1..i + 4).is_some_and(|d| {
            (b'0'..=b'3').contains(&d[0]) && d.iter().all(|c| (b'0'..=b'7').contains(c))
        });
        if b[i] == b'\\' && octal {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    PathBuf::from(OsString::from_vec(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_with_optional_fields_and_escapes() {
        let t = "36 35 98:0 /mnt1 /mnt/a\\040b rw,noatime master:1 shared:2 - fuse.ticketfs \
                 /img/x\\134y rw,user_id=0\n\
                 garbage\n\
                 40 35 0:33 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        let m = parse(t);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].dev, "98:0");
        assert_eq!(m[0].root, PathBuf::from("/mnt1"));
        assert_eq!(m[0].point, PathBuf::from("/mnt/a b"));
        assert_eq!(m[0].options, "rw,noatime");
        assert_eq!(m[0].fstype, "fuse.ticketfs");
        assert_eq!(m[0].source, PathBuf::from("/img/x\\y"));
        assert!(m[0].has_super_option("user_id=0"));
        assert!(!m[0].has_super_option("user_id"));
        assert_eq!(m[1].fstype, "cgroup");
        assert!(m[1].has_super_option("memory"));
    }

    #[test]
    fn bytes_that_are_not_utf8_survive() {
        use std::os::unix::ffi::OsStrExt;
        let p = unescape("/a\\377b\\");
        assert_eq!(p.as_os_str().as_bytes(), b"/a\xffb\\");
    }
}
