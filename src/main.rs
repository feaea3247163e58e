//! `ticketfs IMAGE MOUNTPOINT [-f] [-o OPTIONS]`: mounts a ticketfs image through FUSE.
//! `ticketfs stats MOUNTPOINT [--json]`: prints the live statistics of a mount.
//! `ticketfs db IMAGE QUERY`: prints on-disk structures.
//!
//! The argument convention is mount.fuse3's, so `mount -t fuse.ticketfs IMAGE DIR` and an fstab
//! line work. The command returns once the mount is live (the daemon goes to the background
//! unless `-f`); `umount DIR` or SIGTERM flushes everything and marks the image clean.

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::exit;
use std::sync::Arc;
use ticketfs::cli::ManSection;
use ticketfs::daemon::{
    options_help, serve, spelled, MountFlags, Options, MOUNT_OPTIONS, OTHER_OPTIONS,
};
use ticketfs::db::Query;
use ticketfs::stats;

/// What a bare `ticketfs` prints: the three forms on one line.
const SHORT_USAGE: &str = "usage: ticketfs IMAGE MOUNTPOINT [-f] [-o OPTIONS] | ticketfs stats MOUNTPOINT [--json] | ticketfs db IMAGE QUERY (see --help)";
/// mount(8)'s exit status for a usage error.
const USAGE_ERROR: i32 = 1;
/// mount(8)'s exit status for a mount that failed.
const MOUNT_FAILURE: i32 = 32;

/// A mount, remount or second mount that could not be done: one line, exit 32 as mount(8) and
/// its helpers report it.
fn mount_failed(msg: &str) -> ! {
    eprintln!("ticketfs: {msg}");
    exit(MOUNT_FAILURE)
}

fn die(msg: &str) -> ! {
    eprintln!("ticketfs: {msg}");
    exit(USAGE_ERROR)
}

/// Mounts a ticketfs filesystem through FUSE
///
/// Mounts the ticketfs filesystem on IMAGE (an image file or a block device) at MOUNTPOINT and
/// returns once the mount is live; the daemon serving it goes to the background unless -f.
/// umount MOUNTPOINT (or SIGTERM to the daemon) writes everything home, marks the image clean
/// and returns only then. The arguments follow mount.fuse3's convention, so
/// mount -t fuse.ticketfs IMAGE DIR and an fstab line work. A second mount of a mounted
/// image shares it, as two mounts of one block device do. Exit status as mount(8): 0 mounted,
/// 1 usage error, 32 mount failure.
#[derive(Parser, Debug)]
#[command(
    name = "ticketfs",
    bin_name = "ticketfs",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    disable_help_subcommand = true,
    override_usage = "ticketfs [-f] [-o OPTIONS] IMAGE MOUNTPOINT\n       ticketfs stats [--json] MOUNTPOINT\n       ticketfs db IMAGE QUERY [ARG]"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Stay in the foreground (the daemon's messages go to stderr).
    #[arg(short = 'f')]
    foreground: bool,
    /// Mount options, comma-separated (see "Mount options" below); may be repeated.
    #[arg(short = 'o', value_name = "OPTIONS")]
    options: Vec<String>,
    /// Image file or block device holding the filesystem.
    #[arg(value_name = "IMAGE", required = true)]
    image: Option<PathBuf>,
    /// Directory to mount it on.
    #[arg(value_name = "MOUNTPOINT", required = true)]
    mountpoint: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the live statistics of a mount
    ///
    /// The memory budget and how it was derived, the transport, read-ahead, what is reserved,
    /// pinned, free and cached, waiters, reservation overruns with their call sites, and per
    /// transaction kind the reservation against the peak really used. Only the user who mounted
    /// (root for a mount by root) can reach them.
    Stats {
        /// Print them as JSON.
        #[arg(long)]
        json: bool,
        /// Mount point of a ticketfs mount.
        #[arg(value_name = "MOUNTPOINT")]
        mountpoint: PathBuf,
    },
    /// Print on-disk structures of an image, never writing
    ///
    /// In the manner of xfs_db and xfs_logprint. The image is read through a copy-on-write
    /// overlay: a dirty log is replayed into the overlay before inodes and directories are
    /// shown; block and log show the bytes as they are on the device.
    #[command(
        arg_required_else_help = false,
        subcommand_value_name = "QUERY",
        subcommand_help_heading = "Queries"
    )]
    Db {
        /// Image file or block device.
        #[arg(value_name = "IMAGE")]
        image: PathBuf,
        #[command(subcommand)]
        query: Query,
    },
}

fn command() -> clap::Command {
    ticketfs::cli::with_version(Cli::command()).after_long_help(options_help())
}

/// ticketfs(8)'s list of the mount options.
fn mount_options_section() -> ManSection<'static> {
    ManSection {
        title: "Mount options",
        items: MOUNT_OPTIONS
            .iter()
            .map(|o| (spelled(o), o.help.to_string()))
            .collect(),
        after: OTHER_OPTIONS,
    }
}

fn parse() -> (Cli, Options) {
    // Before the parser runs: its code is touched once and is reclaimable (Options::start_rss).
    let start_rss = ticketfs::budget::resident_bytes();
    if std::env::args_os().len() == 1 {
        die(SHORT_USAGE);
    }
    ticketfs::cli::manual_page_if_asked(command(), &[mount_options_section()], USAGE_ERROR);
    let m = ticketfs::cli::matches(command(), "ticketfs", USAGE_ERROR);
    let cli = Cli::from_arg_matches(&m).unwrap_or_else(|e| die(&e.to_string()));
    let mut o = Options::default();
    o.foreground = cli.foreground;
    o.start_rss = Some(start_rss);
    for list in &cli.options {
        match o.apply(list) {
            Ok(warnings) => {
                for w in warnings {
                    eprintln!("ticketfs: {w}");
                }
            }
            Err(e) => die(&e),
        }
    }
    // Shared with every user, the mount lets the kernel check permissions on every path walk
    // and access, cached or not (docs/security.md): without it a name root looked up stays
    // cached for TTL and the kernel skips the daemon's search-permission check for anyone.
    if o.allow_other {
        o.default_permissions = true;
    }
    o.image = cli.image.clone().unwrap_or_default();
    o.mountpoint = cli.mountpoint.clone().unwrap_or_default();
    (cli, o)
}

/// `ticketfs stats MOUNTPOINT [--json]`.
fn stats_command(mountpoint: &Path, json: bool) -> ! {
    let image = stats::image_of_mount(mountpoint).unwrap_or_else(|e| die(&e));
    match stats::query(&image, if json { "json" } else { "text" }) {
        Ok(out) => {
            ticketfs::cli::print_or_exit("ticketfs", &out, USAGE_ERROR);
            exit(0)
        }
        Err(e) => die(&format!("statistics of {}: {e}", image.display())),
    }
}

/// `ticketfs db IMAGE QUERY`: prints on-disk structures; never writes.
fn db_command(image: &Path, query: Query) -> ! {
    let dev = ticketfs::image::open_image_read_only(image)
        .unwrap_or_else(|e| die(&format!("{}: {e}", image.display())));
    match ticketfs::db::run(Arc::new(dev), query) {
        Ok(out) => {
            ticketfs::cli::print_or_exit("ticketfs", &out, USAGE_ERROR);
            exit(0)
        }
        Err(e) => die(&e),
    }
}

/// `-o remount[,ro|rw][,FLAGS]`: the kernel's remount of the live ticketfs mount at
/// MOUNTPOINT; the daemon serving it goes on. Only a ticketfs mount this user made (of IMAGE,
/// when IMAGE can be looked at), and only when it is the topmost mount there, is remounted;
/// what the options do not name keeps its current value, as mount(8) keeps it (nosuid, nodev,
/// noexec, sync, dirsync, ro, and nosymfollow and lazytime, which are not ticketfs options):
/// the kernel's remount sets them all, so before, `-o remount,ro` took nosuid and nodev off any
/// mount point, whatever filesystem it was. The mount is named through a descriptor of the
/// directory checked, so a path changed meanwhile cannot redirect it.
fn remount(o: &Options) -> ! {
    let fail = |why: String| -> ! {
        mount_failed(&format!("remount of {}: {why}", o.mountpoint.display()))
    };
    let here = std::fs::canonicalize(&o.mountpoint).unwrap_or_else(|e| fail(e.to_string()));
    let dir = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&here)
        .unwrap_or_else(|e| fail(e.to_string()));
    let table = ticketfs::mountinfo::read().unwrap_or_else(|e| fail(e));
    let top = table.iter().rev().find(|m| m.point == here);
    let mounts = stats::ticketfs_mounts().unwrap_or_else(|e| fail(e));
    let current = top.and_then(|t| {
        mounts
            .iter()
            .rev()
            .find(|m| m.point == here && m.dev == t.dev)
    });
    let Some(current) = current else {
        fail("not a ticketfs mount (mount it first)".to_string())
    };
    use std::os::unix::fs::MetadataExt;
    let dev_of_dir = dir
        .metadata()
        .map(|m| m.dev())
        .unwrap_or_else(|e| fail(e.to_string()));
    let dev_of_dir = format!("{}:{}", libc::major(dev_of_dir), libc::minor(dev_of_dir));
    if dev_of_dir != current.dev {
        fail("the mount changed while it was looked at".to_string());
    }
    let same_image = stats::mounts_of(&o.image)
        .iter()
        .any(|m| m.point == current.point);
    if o.image.exists() && !same_image {
        fail(format!(
            "it is a mount of {}, not of {}",
            current.image.display(),
            o.image.display()
        ));
    }
    let listed = |opt: &str| current.options.split(',').any(|x| x == opt);
    let flags = o
        .flags
        .over(MountFlags::from_listed(&[&current.options]), o.named.flags);
    let read_only = if o.named.read_only {
        o.read_only
    } else {
        current.super_ro || current.options.split(',').next() == Some("ro")
    };
    let mut bits = libc::MS_REMOUNT | flags.ms_bits();
    for (on, bit) in [
        (read_only, libc::MS_RDONLY),
        (listed("nosymfollow"), libc::MS_NOSYMFOLLOW),
        (listed("lazytime"), libc::MS_LAZYTIME),
    ] {
        if on {
            bits |= bit;
        }
    }
    let Ok(target) = std::ffi::CString::new(format!("/proc/self/fd/{}", dir.as_raw_fd())) else {
        fail("bad descriptor path".to_string())
    };
    // SAFETY: a NUL-terminated path; source, type and data may be null for a remount.
    let rc = unsafe {
        libc::mount(
            std::ptr::null(),
            target.as_ptr(),
            std::ptr::null(),
            bits,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        fail(std::io::Error::last_os_error().to_string());
    }
    exit(0)
}

/// A mount point of `image` served by a daemon already (the whole filesystem rather than a
/// subtree) and whether its superblock is read-only. Found by the image's identity, so a hard
/// link, a symlink or another spelling of its path finds it too.
fn existing_mount(image: &Path) -> Option<(PathBuf, bool)> {
    stats::mounts_of(image)
        .into_iter()
        .find(|m| m.whole)
        .map(|m| (m.point, m.super_ro))
}

/// A second mount of an image already mounted shares the live filesystem, as the kernel shares
/// one superblock between two mounts of a block device: a bind mount of the first mount point
/// (its source stays the image), then the new mount's own flags. A read-write mount of an image
/// mounted read-only is refused, as the kernel refuses it (EBUSY).
fn mount_again(o: &Options, first: &Path, first_ro: bool) -> ! {
    if first_ro && !o.read_only {
        mount_failed(&format!(
            "{}: already mounted read-only on {}",
            o.image.display(),
            first.display()
        ));
    }
    let cpath = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_encoded_bytes())
            .unwrap_or_else(|_| mount_failed(&format!("{}: bad path", p.display())))
    };
    let (src, dst) = (cpath(first), cpath(&o.mountpoint));
    let mount = |src: *const libc::c_char, flags: libc::c_ulong| {
        // SAFETY: NUL-terminated paths that outlive the call; type and data may be null for
        // a bind mount and for its remount.
        let rc =
            unsafe { libc::mount(src, dst.as_ptr(), std::ptr::null(), flags, std::ptr::null()) };
        if rc != 0 {
            mount_failed(&format!(
                "mounting {} again on {}: {}",
                o.image.display(),
                o.mountpoint.display(),
                std::io::Error::last_os_error()
            ));
        }
    };
    mount(src.as_ptr(), libc::MS_BIND);
    let flags = o.flags.ms_bits() | if o.read_only { libc::MS_RDONLY } else { 0 };
    if flags != 0 {
        mount(std::ptr::null(), libc::MS_BIND | libc::MS_REMOUNT | flags);
    }
    exit(0)
}

/// An image file anyone else may write is refused: they could change the filesystem under the
/// mount (and craft what the daemon reads). One anyone else may read is mounted with a
/// warning: they can read every file's contents out of it. (A block device's access is the
/// system's business, as for a kernel filesystem.)
fn check_image_access(image: &Path, flags: MountFlags) {
    use std::os::unix::fs::MetadataExt;
    let Ok(m) = std::fs::metadata(image) else {
        return;
    };
    if !m.is_file() {
        return;
    }
    // An image another user owns is theirs to change at will: mounted by root with set-id
    // programs and devices honoured, it would be their way to root (a set-user-ID root shell
    // written into it). As the kernel's own mounts of user-owned images need nosuid and nodev
    // to be safe, so here.
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    if me == 0 && m.uid() != 0 && !(flags.nosuid && flags.nodev) {
        mount_failed(&format!(
            "{}: owned by uid {}, not root: mount it with -o nosuid,nodev (its owner can change \
             everything in it), or chown it to root",
            image.display(),
            m.uid()
        ));
    }
    let mode = m.mode() & 0o777;
    if mode & 0o022 != 0 {
        mount_failed(&format!(
            "{}: writable by users other than its owner (mode {mode:o}): any of them could change the filesystem under the mount; chmod go-w it first",
            image.display()
        ));
    }
    if mode & 0o044 != 0 {
        eprintln!(
            "ticketfs: warning: {} is readable by users other than its owner (mode {mode:o}): any of them can read every file's contents out of it; chmod 600 it",
            image.display()
        );
    }
}

/// How long a mount waits for the image's previous daemon to finish unmounting.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

fn main() {
    let (cli, o) = parse();
    match cli.command {
        Some(Command::Stats { json, mountpoint }) => stats_command(&mountpoint, json),
        Some(Command::Db { image, query }) => db_command(&image, query),
        None => {}
    }
    if o.remount {
        remount(&o);
    }
    match std::fs::metadata(&o.mountpoint) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => mount_failed(&format!("{}: not a directory", o.mountpoint.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => mount_failed(&format!(
            "{}: mount point does not exist",
            o.mountpoint.display()
        )),
        // A FUSE mount whose daemon died: not connected, its connection aborted, or (served
        // through io_uring queues) the request cancelled with the queues.
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOTCONN | libc::ECONNABORTED | libc::ECANCELED)
            ) =>
        {
            mount_failed(&format!(
                "{}: a mount whose daemon is gone (umount it first)",
                o.mountpoint.display()
            ))
        }
        Err(e) => mount_failed(&format!("{}: {e}", o.mountpoint.display())),
    }
    if let Some((first, first_ro)) = existing_mount(&o.image) {
        // Its daemon holds the image's lock for the life of the mount: a mount whose lock is
        // free has lost its daemon (killed), and sharing it would give a dead mount.
        if ticketfs::rundir::try_lock(&o.image).is_ok() {
            mount_failed(&format!(
                "{}: mounted on {} but its daemon is gone (umount {} first)",
                o.image.display(),
                first.display(),
                first.display()
            ));
        }
        let here = std::fs::canonicalize(&o.mountpoint).unwrap_or_else(|_| o.mountpoint.clone());
        if first == here {
            mount_failed(&format!(
                "{} is already mounted on {}",
                o.image.display(),
                first.display()
            ));
        }
        mount_again(&o, &first, first_ro);
    }
    // One daemon per image: an exclusive lock held for the life of the mount, in the runtime
    // directory only this user may enter (no other user can take it first).
    // A daemon that was just unmounted may still be writing everything home (a plain fuse
    // mount): wait for it a little (fstests unmounts and mounts again at once), then refuse.
    let waited = std::time::Instant::now();
    let lockf = loop {
        match ticketfs::rundir::try_lock(&o.image) {
            Ok(l) => break l,
            // The image itself (it is missing), or the lock file, which the error names.
            Err(Some(e)) => mount_failed(&format!("{}: {e}", o.image.display())),
            Err(None) if waited.elapsed() > LOCK_WAIT => mount_failed(&format!(
                "{}: already mounted (the image is locked by another ticketfs)",
                o.image.display()
            )),
            Err(None) => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    };
    // The primary superblock, or the backup when the primary is bad.
    if let Err(e) = ticketfs::image::open_image(Path::new(&o.image)) {
        mount_failed(&format!("{}: {e}", o.image.display()));
    }
    check_image_access(&o.image, o.flags);
    if o.foreground {
        let r = serve(&o, Some(lockf), &mut |_| {});
        if let Err(e) = r {
            mount_failed(&e);
        }
        return;
    }
    let mut fds = [0; 2];
    // SAFETY: pipe fills two descriptors we then own.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        mount_failed("pipe failed");
    }
    // SAFETY: no other thread exists yet, so fork is sound.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        mount_failed("fork failed");
    }
    if pid > 0 {
        // SAFETY: fds[0] is the read end we own; fds[1] belongs to the child.
        let mut rd = unsafe { std::fs::File::from_raw_fd(fds[0]) };
        unsafe { libc::close(fds[1]) };
        let mut msg = String::new();
        let _ = rd.read_to_string(&mut msg);
        if let Some(line) = msg.strip_prefix("ok ") {
            // SAFETY: isatty only looks at the descriptor number.
            if o.verbose || unsafe { libc::isatty(2) } == 1 {
                eprintln!("ticketfs: {line}");
            }
            exit(0);
        }
        mount_failed(msg.trim_start_matches("err ").trim());
    }
    // The daemon.
    // SAFETY: closing the read end we do not use; starting a new session.
    unsafe {
        libc::close(fds[0]);
        libc::setsid();
    }
    // SAFETY: fds[1] is the write end we own.
    let mut wr = Some(unsafe { std::fs::File::from_raw_fd(fds[1]) });
    let mut report = |r: Result<String, String>| {
        if let Some(mut w) = wr.take() {
            let _ = match r {
                Ok(line) => w.write_all(format!("ok {line}").as_bytes()),
                Err(e) => w.write_all(format!("err {e}").as_bytes()),
            };
            // Detach from the caller's terminal and pipes: a caller reading our stdout or stderr
            // (mount(8) run by a script) waits for them to close.
            if let Ok(null) = OpenOptions::new().read(true).write(true).open("/dev/null") {
                // SAFETY: dup2 onto the standard descriptors.
                unsafe {
                    libc::dup2(null.as_raw_fd(), 0);
                    libc::dup2(null.as_raw_fd(), 1);
                    libc::dup2(null.as_raw_fd(), 2);
                }
            }
        }
    };
    let r = serve(&o, Some(lockf), &mut report);
    if let Err(e) = r {
        report(Err(e.clone()));
        mount_failed(&e);
    }
}
