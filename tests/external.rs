//! External suites nobody here wrote, against real mounts: pjdfstest (with and without
//! default_permissions), fsx with truncate, fallocate and hole punching, and the install step
//! that makes `mkfs -t ticketfs`, `fsck -t ticketfs` and `mount -t fuse.ticketfs` work.
//! scripts/install-test-deps.sh installs the suites; a missing one fails the test, never skips.

mod common;

use common::mount::{image, Mount};
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tool(name: &str) -> PathBuf {
    let cargo_bin = PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
        .join(".cargo/bin")
        .join(name);
    if cargo_bin.exists() {
        return cargo_bin;
    }
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .expect("sh");
    assert!(
        found.status.success(),
        "{name} is not installed: run scripts/install-test-deps.sh"
    );
    PathBuf::from(String::from_utf8_lossy(&found.stdout).trim())
}

/// (failed, skipped, passed) from pjdfstest's summary line.
fn pjdfstest(opts: &str) -> (u32, u32, u32, String) {
    let work = tempfile::tempdir().unwrap();
    let img = image(work.path(), 1 << 30);
    let m = Mount::new(&img, opts);
    // The suite switches to unprivileged users, who must be able to write at the top.
    let st = Command::new("chmod")
        .arg("777")
        .arg(m.path())
        .status()
        .unwrap();
    assert!(st.success());
    let out = Command::new(tool("pjdfstest"))
        .arg("-c")
        .arg(repo().join("tests/config/pjdfstest.toml"))
        .arg("-p")
        .arg(m.path())
        .current_dir(m.path())
        .output()
        .expect("run pjdfstest");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    m.unmount();
    let line = text
        .lines()
        .find(|l| l.starts_with("Summary:"))
        .unwrap_or_else(|| panic!("no summary from pjdfstest:\n{text}"))
        .to_string();
    let num = |word: &str| -> u32 {
        line.split(',')
            .find(|p| p.contains(word))
            .and_then(|p| p.split_whitespace().find_map(|w| w.parse().ok()))
            .unwrap_or(u32::MAX)
    };
    (num("failed"), num("skipped"), num("passed"), text)
}

/// glibc's pathconf(_PC_LINK_MAX) answers 127 for any FUSE filesystem, so pjdfstest skips
/// link::link_count_max there; kernel ext4 runs it (383 passed, 15 skipped on this machine).
const PJDFSTEST_PASSED_MIN: u32 = 382;

#[test]
fn pjdfstest_passes() {
    for opts in [
        "allow_other",
        "allow_other,default_permissions",
        "allow_other,writeback_cache",
    ] {
        let (failed, skipped, passed, text) = pjdfstest(opts);
        let failures: Vec<&str> = text.lines().filter(|l| l.contains("FAILED")).collect();
        println!("pjdfstest -o {opts}: {failed} failed, {skipped} skipped, {passed} passed");
        assert_eq!(
            failed,
            0,
            "pjdfstest failures with -o {opts}:\n{}",
            failures.join("\n")
        );
        assert!(
            passed >= PJDFSTEST_PASSED_MIN,
            "only {passed} passed with -o {opts}"
        );
    }
}

#[test]
fn fsx_hundred_thousand_operations() {
    fsx_on("", 100_000);
}

/// The kernel's writeback cache changes who sends what when (pages flushed later, in large
/// writes; sizes and times kept by the kernel meanwhile): fsx checks the data through it.
#[test]
fn fsx_with_the_kernels_writeback_cache() {
    fsx_on("writeback_cache", 30_000);
}

fn fsx_on(opts: &str, ops: u32) {
    let work = tempfile::tempdir().unwrap();
    let img = image(work.path(), 1 << 30);
    let m = Mount::new(&img, opts);
    let out = Command::new(tool("fsx"))
        .arg("-f")
        .arg(repo().join("tests/config/fsx.toml"))
        .arg("-N")
        .arg(ops.to_string())
        .arg("-S")
        .arg("20261122")
        .arg("-P")
        .arg(work.path())
        .arg(m.path().join("fsx-file"))
        .output()
        .expect("run fsx");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    m.unmount();
    assert!(
        out.status.success() && text.contains("All operations completed A-OK"),
        "fsx -o {opts} failed:\n{}",
        text.lines().rev().take(30).collect::<Vec<_>>().join("\n")
    );
    let fsck =
        Command::new(Path::new(env!("CARGO_BIN_EXE_ticketfs")).with_file_name("fsck-ticketfs"))
            .arg(&img)
            .status()
            .expect("fsck");
    assert!(fsck.success(), "fsck after fsx");
}

#[test]
fn installed_tools_work_with_mkfs_fsck_and_mount() {
    let st = Command::new("bash")
        .arg(repo().join("scripts/install.sh"))
        .env("NO_BUILD", "1")
        // The binaries of the build under test (target/ci in the suite, target/release else).
        .env(
            "BIN_DIR",
            Path::new(env!("CARGO_BIN_EXE_ticketfs")).parent().unwrap(),
        )
        .status()
        .expect("install.sh");
    assert!(st.success());
    // `man PAGE` finds every installed page (man-db searches /usr/local/share/man).
    if Command::new("man").arg("--version").output().is_ok() {
        for page in [
            "ticketfs",
            "ticketfs-stats",
            "ticketfs-db",
            "mkfs.ticketfs",
            "fsck.ticketfs",
        ] {
            let out = Command::new("man")
                .args(["-w", page])
                .output()
                .expect("man -w");
            assert!(
                out.status.success(),
                "man -w {page}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    } else {
        common::skip("man is not installed (Debian package man-db): pages not looked up");
    }
    let work = tempfile::tempdir().unwrap();
    let img = work.path().join("image");
    let dir = work.path().join("mnt");
    std::fs::create_dir(&dir).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(args[0])
            .args(&args[1..])
            .output()
            .expect(args[0]);
        assert!(
            out.status.success(),
            "{args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let img_s = img.to_str().unwrap();
    let dir_s = dir.to_str().unwrap();
    run(&["mkfs", "-t", "ticketfs", "-s", "64M", img_s]);
    run(&["fsck", "-t", "ticketfs", img_s]);
    run(&["mount", "-t", "fuse.ticketfs", img_s, dir_s]);
    // Unmounted whatever happens below (lazily if it is still mounted when the test fails).
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let mounted = std::fs::read_to_string("/proc/self/mountinfo")
                .is_ok_and(|m| m.contains(&*self.0.to_string_lossy()));
            if mounted {
                let _ = Command::new("umount").arg("-l").arg(&self.0).status();
            }
        }
    }
    let _guard = Unmount(dir.clone());
    // Mounted as fuseblk over a loop device whose backing file is the image.
    let found = run(&["findmnt", "-n", "-o", "SOURCE,FSTYPE", dir_s]);
    let ok = std::fs::write(dir.join("hello"), b"world").is_ok()
        && std::fs::read(dir.join("hello")).ok().as_deref() == Some(&b"world"[..]);
    let mut f = found.split_whitespace();
    let (source, fstype) = (f.next().unwrap_or(""), f.next().unwrap_or(""));
    let backing = run(&["losetup", "-n", "-O", "BACK-FILE", source]);
    // umount by the image's name, as for a loop-mounted image.
    if let Err(e) = common::mount::umount(&img) {
        panic!("umount by the image's name: {e}");
    }
    assert!(ok, "could not use the mount");
    assert_eq!(fstype, "fuseblk.ticketfs", "findmnt: {found}");
    assert_eq!(backing.trim(), img_s, "the loop device's backing file");
    // umount returned once the daemon had released the image: fsck runs at once.
    run(&["fsck", "-t", "ticketfs", img_s]);
}
