//! The mount's options: `-o` lists parsed into one typed value, every value checked (a number's
//! range, a size's unit, an enum's words) and a bad one refused with the option named, as
//! mount(8) refuses a bad option of a kernel filesystem. Options mount(8) and mount.fuse3 pass
//! along for every filesystem (`defaults`, `nofail`, `_netdev`, `x-*`, ...) are accepted and
//! change nothing; an unknown name one letter away from one of ours is accepted with a warning,
//! since a typo of `overrun=panic` must not pass unnoticed.

use crate::budget::FUSE_THREADS_MAX;
use crate::engine::EngineOptions;
use crate::fs::AtimePolicy;
use crate::image::parse_size;
use crate::mem::{MemRes, OverrunPolicy};
use crate::resv::TransKind;
use std::path::PathBuf;

/// One of ticketfs's `-o` options, as `--help` and ticketfs(8) list it.
#[derive(Debug, Clone, Copy)]
pub struct MountOption {
    pub name: &'static str,
    /// What follows `name=` (for the listing), or None for an option without a value.
    pub value: Option<&'static str>,
    pub help: &'static str,
}

/// ticketfs's options: what `apply` knows, what a near miss is compared with, and what the help
/// and the manual page list.
pub const MOUNT_OPTIONS: [MountOption; 30] = [
    MountOption {
        name: "ro",
        value: None,
        help: "Mount read-only.",
    },
    MountOption {
        name: "rw",
        value: None,
        help: "Mount read-write (the default).",
    },
    MountOption {
        name: "remount",
        value: None,
        help: "Change the live mount at MOUNTPOINT (ro or rw and the kernel's flags) instead of mounting; mount -o remount passes it.",
    },
    MountOption {
        name: "allow_other",
        value: None,
        help: "Let users other than the one who mounted use the mount; implies default_permissions, so the kernel checks permissions as for ext4.",
    },
    MountOption {
        name: "default_permissions",
        value: None,
        help: "The kernel checks permissions too, on every path walk and access, even of what it has cached (the daemon always checks them itself).",
    },
    MountOption {
        name: "writeback_cache",
        value: None,
        help: "The kernel's writeback cache: written pages are kept and sent in large writes; implies default_permissions.",
    },
    MountOption {
        name: "idmap",
        value: None,
        help: "Allow idmapped mounts of this mount (mount_setattr(2) with MOUNT_ATTR_IDMAP; Linux 6.12 and later): the kernel then checks every permission itself and passes the caller's ids only with requests that create; implies default_permissions.",
    },
    MountOption {
        name: "hostcache",
        value: Some("on|off"),
        help: "File data through the image's page cache (on, the default), or every data block with O_DIRECT so the budget bounds all the memory the mount uses (off).",
    },
    MountOption {
        name: "blkdev",
        value: Some("on|off"),
        help: "Mount as fuseblk through a loop device, so umount waits for the daemon to write everything home (on, the default); off, a plain fuse mount whose source is the image's path.",
    },
    MountOption {
        name: "uring",
        value: Some("on|off"),
        help: "Requests through FUSE over io_uring where the kernel offers it (on, the default), else through /dev/fuse.",
    },
    MountOption {
        name: "uring_idle",
        value: Some("on|off"),
        help: "The io_uring queue threads serve at SCHED_IDLE while CPUs are spare (on, the default).",
    },
    MountOption {
        name: "btime",
        value: Some("on|off"),
        help: "Report each file's birth time to statx(2) (on, the default). The kernel asks the daemon for it once per file, so a statx asking for it costs a round trip the first time; off answers statx from the kernel's cache, without a birth time.",
    },
    MountOption {
        name: "memres",
        value: Some("on|off"),
        help: "Memory reservations (on, the default); off turns the accounting off: nothing then bounds the dirty metadata.",
    },
    MountOption {
        name: "overrun",
        value: Some("warn|panic"),
        help: "What an overrun of a reservation does: report it with its call site (warn, the default) or stop the daemon (panic).",
    },
    MountOption {
        name: "verbose",
        value: None,
        help: "Print the memory budget's derivation at mount even when stderr is not a terminal.",
    },
    MountOption {
        name: "relatime",
        value: None,
        help: "Update a file's access time on a read when it is not newer than its modification or change time, or is a day old (the default).",
    },
    MountOption {
        name: "strictatime",
        value: None,
        help: "Update access times on every read.",
    },
    MountOption {
        name: "noatime",
        value: None,
        help: "Never update access times on reads.",
    },
    MountOption {
        name: "nosuid",
        value: None,
        help: "Ignore set-user-ID and set-group-ID bits (the kernel enforces it; suid undoes it).",
    },
    MountOption {
        name: "suid",
        value: None,
        help: "Honour set-user-ID and set-group-ID bits.",
    },
    MountOption {
        name: "nodev",
        value: None,
        help: "Refuse to open device files (dev undoes it).",
    },
    MountOption {
        name: "dev",
        value: None,
        help: "Allow device files.",
    },
    MountOption {
        name: "noexec",
        value: None,
        help: "Refuse to execute files (exec undoes it).",
    },
    MountOption {
        name: "exec",
        value: None,
        help: "Allow executing files.",
    },
    MountOption {
        name: "sync",
        value: None,
        help: "Synchronous writes (async undoes it).",
    },
    MountOption {
        name: "async",
        value: None,
        help: "Asynchronous writes (the default).",
    },
    MountOption {
        name: "dirsync",
        value: None,
        help: "Synchronous directory changes.",
    },
    MountOption {
        name: "mem",
        value: Some("SIZE"),
        help: "Cap the memory budget (K, M, G, T); by default the cgroup's memory limit less the daemon's fixed base, or 64M without a limit.",
    },
    MountOption {
        name: "max_threads",
        value: Some("N"),
        help: "FUSE request threads, 1 to 256 (default 4; 2 under a memory limit below 64 MiB).",
    },
    MountOption {
        name: "debug_resv",
        value: Some("KIND:BYTES"),
        help: "Testing knob: replace the memory of one reservation table entry, to see its overruns reported.",
    },
];

/// The option named `name`, if it is one of ours.
fn ours(name: &str) -> Option<&'static MountOption> {
    MOUNT_OPTIONS.iter().find(|o| o.name == name)
}

/// What the listing says of the options that are not ticketfs's.
pub const OTHER_OPTIONS: &str = "Other options mount(8) passes along (defaults, nofail, _netdev, x-*, ...) are accepted and change nothing; an unknown name one letter from one of ticketfs's gets a warning, and a bad value of one of ticketfs's is refused with the option named.";

/// The listing of the options for `--help`: a line per option, its help indented below it.
pub fn options_help() -> String {
    let mut s = String::from(
        "Mount options (-o, comma-separated; a later one overrides an earlier one):\n",
    );
    for o in MOUNT_OPTIONS {
        s.push_str(&format!("  {}\n          {}\n", spelled(&o), o.help));
    }
    s.push('\n');
    s.push_str(OTHER_OPTIONS);
    s
}

/// `name` or `name=VALUE`.
pub fn spelled(o: &MountOption) -> String {
    match o.value {
        Some(v) => format!("{}={v}", o.name),
        None => o.name.to_string(),
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub image: PathBuf,
    pub mountpoint: PathBuf,
    pub foreground: bool,
    pub read_only: bool,
    /// `-o remount`: change the live mount (mount(8) and mount.fuse3 pass a remount here).
    pub remount: bool,
    pub allow_other: bool,
    pub default_permissions: bool,
    /// `-o writeback_cache`: the kernel's writeback cache (implies default_permissions).
    pub(crate) writeback_cache: bool,
    /// `-o idmap`: FUSE_ALLOW_IDMAP asked at INIT, so the mount may be idmapped (implies
    /// default_permissions, which the kernel requires for it).
    pub(crate) idmap: bool,
    /// `-o uring=on|off`: FUSE over io_uring when the kernel offers it (on by default).
    pub(crate) uring: bool,
    /// `-o uring_idle=on|off`: the queue threads serve at SCHED_IDLE while CPUs are spare (on).
    pub(crate) uring_idle: bool,
    /// `-o btime=on|off`: FUSE_STATX answered, so statx(2) shows the birth time (on), or
    /// refused with ENOSYS, so the kernel stops asking (off).
    pub(crate) btime: bool,
    /// `-o hostcache=on|off`: file data read through the image's page cache (on by default).
    pub(crate) host_cache: bool,
    /// `-o blkdev=on|off`: mount as `fuseblk` (through a loop device for an image file), so
    /// umount waits for the daemon to write everything home (on by default).
    pub(crate) blkdev: bool,
    /// `blkdev=on` was given: say so when it cannot be had.
    pub(crate) blkdev_asked: bool,
    /// The mount's own flags (nosuid, nodev, noexec, sync, dirsync), kept by the kernel.
    pub flags: MountFlags,
    /// Which of read-only and the flags the options named (either way): a remount changes
    /// those and keeps the mount's others, as mount(8) does.
    pub named: Named,
    /// Print the budget's derivation even when stderr is not a terminal.
    pub verbose: bool,
    pub(crate) mem_option: Option<u64>,
    pub(crate) threads_option: Option<usize>,
    pub(crate) atime: AtimePolicy,
    pub(crate) engine: EngineOptions,
    /// The process's resident size before its arguments were parsed (None: measured when
    /// serving starts). The parser's code is touched once, at start, and is reclaimable file
    /// pages: counted in the base, it took 0.9 MiB from the budget, which under an 8 MiB limit
    /// fell below the reservations' minimum (docs/performance.md, "Resident size at start").
    pub start_rss: Option<u64>,
}

/// Mount flags the kernel enforces for the mount (as for any filesystem); the daemon only passes
/// them on, at mount and at remount. Unset, a mount by root allows devices, set-id and exec,
/// as mount(8) does for a kernel filesystem.
#[derive(Debug, Clone, Copy, Default)]
pub struct MountFlags {
    pub nosuid: bool,
    pub nodev: bool,
    pub(crate) noexec: bool,
    pub(crate) sync: bool,
    pub(crate) dirsync: bool,
}

/// Which options a `-o` list named: `flags` true for each flag named either way (nosuid or
/// suid, ...), `read_only` for ro or rw.
#[derive(Debug, Clone, Copy, Default)]
pub struct Named {
    pub read_only: bool,
    pub flags: MountFlags,
}

impl MountFlags {
    /// The flags a mount table's option lists show (`nosuid`, `nodev`, `noexec`, `sync`,
    /// `dirsync`; the per-mount list and the superblock's).
    pub fn from_listed(lists: &[&str]) -> MountFlags {
        let has = |o: &str| lists.iter().any(|l| l.split(',').any(|x| x == o));
        MountFlags {
            nosuid: has("nosuid"),
            nodev: has("nodev"),
            noexec: has("noexec"),
            sync: has("sync"),
            dirsync: has("dirsync"),
        }
    }

    /// `self` where `named` says a flag was named, `current` where not.
    pub fn over(self, current: MountFlags, named: MountFlags) -> MountFlags {
        let pick = |n: bool, mine: bool, theirs: bool| if n { mine } else { theirs };
        MountFlags {
            nosuid: pick(named.nosuid, self.nosuid, current.nosuid),
            nodev: pick(named.nodev, self.nodev, current.nodev),
            noexec: pick(named.noexec, self.noexec, current.noexec),
            sync: pick(named.sync, self.sync, current.sync),
            dirsync: pick(named.dirsync, self.dirsync, current.dirsync),
        }
    }

    pub fn ms_bits(self) -> libc::c_ulong {
        let mut f = 0;
        for (on, bit) in [
            (self.nosuid, libc::MS_NOSUID),
            (self.nodev, libc::MS_NODEV),
            (self.noexec, libc::MS_NOEXEC),
            (self.sync, libc::MS_SYNCHRONOUS),
            (self.dirsync, libc::MS_DIRSYNC),
        ] {
            if on {
                f |= bit;
            }
        }
        f
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            image: PathBuf::new(),
            mountpoint: PathBuf::new(),
            foreground: false,
            read_only: false,
            remount: false,
            allow_other: false,
            default_permissions: false,
            writeback_cache: false,
            idmap: false,
            host_cache: true,
            blkdev: true,
            blkdev_asked: false,
            uring: true,
            uring_idle: true,
            btime: true,
            flags: MountFlags::default(),
            named: Named::default(),
            verbose: false,
            mem_option: None,
            threads_option: None,
            atime: AtimePolicy::Relatime,
            engine: EngineOptions::default(),
            start_rss: None,
        }
    }
}

/// `on` or `off`.
fn on_off(name: &str, v: &str) -> Result<bool, String> {
    match v {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("{name}={v}: expected {name}=on or {name}=off")),
    }
}

/// This machine's memory in bytes (None when sysconf cannot tell).
fn physical_memory() -> Option<u64> {
    // SAFETY: sysconf only reads system parameters.
    let (pages, page) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    (pages > 0 && page > 0).then(|| (pages as u64).saturating_mul(page as u64))
}

/// Levenshtein distance, for the near-miss warning (names are short).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Options of mount(8), libfuse and other filesystems one edit from one of ours: passed along
/// by habit (an fstab line copied from another filesystem), not typos of ours.
const FOREIGN_NEAR: [&str; 3] = ["uid", "gid", "sw"];

/// The option of ours an unknown name is one edit from, if any.
pub(crate) fn near_miss(name: &str) -> Option<&'static str> {
    if FOREIGN_NEAR.contains(&name) {
        return None;
    }
    MOUNT_OPTIONS
        .iter()
        .map(|o| o.name)
        .find(|o| edit_distance(name, o) == 1)
}

impl Options {
    /// Applies one `-o` list (comma-separated; a later option overrides an earlier one, as in
    /// mount(8)). Returns the warnings to print; an option with a bad value is an error naming
    /// it, and nothing after it is applied.
    pub fn apply(&mut self, list: &str) -> Result<Vec<String>, String> {
        let mut warnings = Vec::new();
        for opt in list.split(',').filter(|s| !s.is_empty()) {
            let (name, value) = match opt.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (opt, None),
            };
            let known = ours(name);
            let takes_value = known.is_some_and(|o| o.value.is_some());
            let is_flag = known.is_some_and(|o| o.value.is_none());
            match (value, takes_value, is_flag) {
                (Some(_), false, true) => return Err(format!("{opt}: {name} takes no value")),
                (None, true, false) => return Err(format!("{name}: needs a value ({name}=...)")),
                (_, false, false) => {
                    // Not ours: passed along by mount(8) or mount.fuse3 for every filesystem.
                    if let Some(near) = near_miss(name) {
                        warnings.push(format!(
                            "unknown option {opt} ignored (did you mean {near}?)"
                        ));
                    }
                    continue;
                }
                _ => {}
            }
            let v = value.unwrap_or("");
            match name {
                "ro" | "rw" => {
                    self.read_only = name == "ro";
                    self.named.read_only = true;
                }
                "remount" => self.remount = true,
                "allow_other" => self.allow_other = true,
                "default_permissions" => self.default_permissions = true,
                // The kernel's writeback cache stamps truncates and flushes with times of its
                // own, which only its own permission check tells from a user's utimensat: so
                // it comes with default_permissions.
                "writeback_cache" => {
                    self.writeback_cache = true;
                    self.default_permissions = true;
                }
                // The kernel grants FUSE_ALLOW_IDMAP only to a connection with
                // default_permissions: it alone checks permissions on an idmapped mount.
                "idmap" => {
                    self.idmap = true;
                    self.default_permissions = true;
                }
                "hostcache" => self.host_cache = on_off(name, v)?,
                "blkdev" => {
                    self.blkdev = on_off(name, v)?;
                    self.blkdev_asked = self.blkdev;
                }
                "uring" => self.uring = on_off(name, v)?,
                "uring_idle" => self.uring_idle = on_off(name, v)?,
                "btime" => self.btime = on_off(name, v)?,
                "memres" => {
                    self.engine.memres = if on_off(name, v)? {
                        MemRes::On
                    } else {
                        MemRes::Off
                    }
                }
                "overrun" => {
                    self.engine.overrun = match v {
                        "warn" => OverrunPolicy::Warn,
                        "panic" => OverrunPolicy::Panic,
                        _ => return Err(format!("{opt}: expected overrun=warn or overrun=panic")),
                    }
                }
                "verbose" => self.verbose = true,
                "relatime" => self.atime = AtimePolicy::Relatime,
                "strictatime" => self.atime = AtimePolicy::Strict,
                "noatime" => self.atime = AtimePolicy::Never,
                "nosuid" | "suid" => {
                    self.flags.nosuid = name == "nosuid";
                    self.named.flags.nosuid = true;
                }
                "nodev" | "dev" => {
                    self.flags.nodev = name == "nodev";
                    self.named.flags.nodev = true;
                }
                "noexec" | "exec" => {
                    self.flags.noexec = name == "noexec";
                    self.named.flags.noexec = true;
                }
                "sync" | "async" => {
                    self.flags.sync = name == "sync";
                    self.named.flags.sync = true;
                }
                "dirsync" => {
                    self.flags.dirsync = true;
                    self.named.flags.dirsync = true;
                }
                "mem" => {
                    let bytes = parse_size(v).filter(|&b| b > 0).ok_or_else(|| {
                        format!(
                            "{opt}: expected a size above 0 (bytes, or a number with K, M, G or T)"
                        )
                    })?;
                    if let Some(ram) = physical_memory().filter(|&ram| bytes > ram) {
                        return Err(format!(
                            "{opt}: more than this machine's memory ({} MiB)",
                            ram >> 20
                        ));
                    }
                    self.mem_option = Some(bytes);
                }
                "max_threads" => {
                    let n = v
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=FUSE_THREADS_MAX).contains(n))
                        .ok_or_else(|| {
                            format!(
                                "{opt}: expected a number of threads from 1 to {FUSE_THREADS_MAX}"
                            )
                        })?;
                    self.threads_option = Some(n);
                }
                "debug_resv" => self.engine.mem_override.push(debug_resv(v)?),
                _ => unreachable!("{name} is in MOUNT_OPTIONS but not handled"),
            }
        }
        Ok(warnings)
    }
}

/// `KIND:BYTES`: a testing knob that replaces the memory of one reservation table entry, to see
/// an undersized entry reported (the operation still completes from the emergency reserve).
fn debug_resv(s: &str) -> Result<(TransKind, u64), String> {
    let (kind, bytes) = s
        .split_once(':')
        .ok_or_else(|| format!("debug_resv={s}: expected debug_resv=KIND:BYTES"))?;
    let kind = TransKind::ALL
        .iter()
        .copied()
        .find(|k| k.name() == kind)
        .ok_or_else(|| {
            let names: Vec<&str> = TransKind::ALL.iter().map(|k| k.name()).collect();
            format!(
                "debug_resv={s}: no transaction kind {kind:?} (kinds: {})",
                names.join(", ")
            )
        })?;
    let bytes =
        parse_size(bytes).ok_or_else(|| format!("debug_resv={s}: {bytes:?} is not a size"))?;
    Ok((kind, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(list: &str) -> Result<(Options, Vec<String>), String> {
        let mut o = Options::default();
        let w = o.apply(list)?;
        Ok((o, w))
    }

    #[test]
    fn bad_values_are_refused_naming_the_option() {
        for (list, names) in [
            ("overrun=foo", "overrun=foo"),
            ("memres=maybe", "memres=maybe"),
            ("uring=1", "uring=1"),
            ("blkdev=", "blkdev="),
            ("max_threads=0", "max_threads=0"),
            ("max_threads=100000", "max_threads=100000"),
            ("max_threads=-1", "max_threads=-1"),
            ("mem=18446744073709551615", "mem=18446744073709551615"),
            ("mem=16E", "mem=16E"),
            ("mem=0", "mem=0"),
            ("mem=lots", "mem=lots"),
            ("mem", "mem"),
            ("verbose=yes", "verbose=yes"),
            ("ro=1", "ro=1"),
            ("debug_resv=create", "debug_resv=create"),
            ("debug_resv=nosuch:4K", "debug_resv=nosuch:4K"),
            ("rw,uring=off,overrun=maybe", "overrun=maybe"),
        ] {
            let e = apply(list).expect_err(list);
            assert!(e.starts_with(names), "{list}: {e}");
            assert!(!e.contains('\n'), "{list}: one line: {e}");
        }
    }

    #[test]
    fn good_values_set_the_typed_options() {
        let (o, w) = apply("ro,overrun=panic,memres=off,mem=16M,max_threads=8,uring=off,noatime,nosuid,debug_resv=create:4K").unwrap();
        assert!(w.is_empty(), "{w:?}");
        assert!(o.read_only && !o.uring && o.flags.nosuid);
        assert_eq!(o.engine.overrun, OverrunPolicy::Panic);
        assert_eq!(o.engine.memres, MemRes::Off);
        assert_eq!(o.mem_option, Some(16 << 20));
        assert_eq!(o.threads_option, Some(8));
        assert_eq!(o.atime, AtimePolicy::Never);
        assert_eq!(o.engine.mem_override, vec![(TransKind::Create, 4096)]);
        // A later option overrides an earlier one, as in mount(8).
        let (o, _) = apply("uring=off,uring=on,ro,rw").unwrap();
        assert!(o.uring && !o.read_only);
    }

    #[test]
    fn options_mount_passes_along_are_accepted_and_near_misses_warned() {
        let (_, w) = apply("uid=1000,gid=1000,sw,defaults,nofail,_netdev,x-systemd.automount,auto,noauto,user,users,max_read=131072,fsname=img,subtype=ticketfs,lazytime,nodiratime").unwrap();
        assert!(w.is_empty(), "{w:?}");
        let (o, w) = apply("overun=panic,urng=off,readonly").unwrap();
        assert_eq!(
            w,
            [
                "unknown option overun=panic ignored (did you mean overrun?)",
                "unknown option urng=off ignored (did you mean uring?)"
            ]
        );
        assert_eq!(o.engine.overrun, OverrunPolicy::Warn);
    }

    proptest::proptest! {
        /// Any list: applied or refused, never a panic; a refusal is one line.
        #[test]
        fn any_list_is_applied_or_refused(list in "[a-z_=,:0-9A-Z.-]{0,40}") {
            if let Err(e) = apply(&list) {
                proptest::prop_assert!(!e.contains('\n'));
            }
        }
    }
}
