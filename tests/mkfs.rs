//! mkfs.ticketfs's command line against bad input (issue 21): no argument makes it panic, a
//! size too small names the smallest that works, a label longer than the field is refused, and
//! a failed mkfs leaves no file behind.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn mkfs_bin() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_ticketfs")).with_file_name("mkfs-ticketfs")
}

fn mkfs(args: &[&str], target: &Path) -> Output {
    Command::new(mkfs_bin())
        .args(args)
        .arg(target)
        .output()
        .expect("run mkfs.ticketfs")
}

/// A failure: not a panic (exit 101) nor a signal, one line naming mkfs, no file left.
fn assert_refused(args: &[&str], target: &Path, want: &str) {
    let out = mkfs(args, target);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?}: succeeded");
    assert_ne!(out.status.code(), Some(101), "{args:?}: panicked: {err}");
    assert!(out.status.code().is_some(), "{args:?}: killed by a signal");
    assert_eq!(err.lines().count(), 1, "{args:?}: one line: {err}");
    assert!(err.starts_with("mkfs.ticketfs: "), "{args:?}: {err}");
    assert!(err.contains(want), "{args:?}: {err} (wanted {want:?})");
    assert!(
        !target.exists(),
        "{args:?}: the failed mkfs left {target:?}"
    );
}

#[test]
fn bad_arguments_are_refused_in_one_line_and_leave_nothing() {
    let work = tempfile::tempdir().unwrap();
    let img = work.path().join("img");
    let long = "x".repeat(300);
    for (args, want) in [
        // Before: "attempt to divide by zero", exit 101.
        (vec!["-s", "64M", "-b", "0"], "block size 0"),
        (vec!["-s", "64M", "-b", "3000"], "block size 3000"),
        // Before: "out of range integral type conversion attempted".
        (
            vec!["-s", "18446744073709551615"],
            "larger than a file can be",
        ),
        // Before: "log end 1154 leaves less than half of 2048 blocks", no smallest size.
        (
            vec!["-s", "8M"],
            "the smallest filesystem with 4096-byte blocks is 9388032 bytes",
        ),
        (vec!["-s", "1M"], "the smallest filesystem"),
        (
            vec!["-s", "64M", "-b", "65536"],
            "the smallest filesystem with 65536-byte blocks",
        ),
        // Before: silently cut to 32 bytes.
        (
            vec!["-s", "64M", "-L", long.as_str()],
            "label of 300 bytes: at most 32",
        ),
        (vec!["-s", "64M", "-l", "1"], "below the"),
        (vec!["-s", "64M", "-a", "0"], "AG count 0"),
        (vec!["-s", "lots"], "bad size"),
    ] {
        assert_refused(&args, &img, want);
    }
    // The smallest size named is one that works.
    let out = mkfs(&["-s", "9388032"], &img);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An existing file that mkfs refuses to format stays as it was.
#[test]
fn a_file_that_was_there_is_left() {
    let work = tempfile::tempdir().unwrap();
    let img = work.path().join("img");
    std::fs::write(&img, b"not a filesystem").unwrap();
    let out = mkfs(&["-b", "0"], &img);
    assert!(!out.status.success());
    assert_eq!(std::fs::read(&img).unwrap(), b"not a filesystem");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48),
        rng_seed: proptest::test_runner::RngSeed::Fixed(20261207),
        ..proptest::prelude::ProptestConfig::default()
    })]

    /// Random argument vectors of mkfs's options and odd values: never a panic or a signal, and
    /// a failure leaves no file.
    #[test]
    fn no_argument_vector_makes_mkfs_panic(
        args in proptest::collection::vec(
            proptest::sample::select(vec![
                "-s", "-b", "-l", "-a", "-L", "-f", "0", "1", "512", "4096", "65536", "3000",
                "1M", "9M", "16M", "64M", "1G", "-1", "18446744073709551615", "9999999999T",
                "x", "",
            ]),
            0..7,
        ),
    ) {
        let work = tempfile::tempdir().unwrap();
        let img = work.path().join("img");
        let out = mkfs(&args, &img);
        let err = String::from_utf8_lossy(&out.stderr);
        proptest::prop_assert_ne!(out.status.code(), Some(101), "{:?}: panicked: {}", args, err);
        proptest::prop_assert!(out.status.code().is_some(), "{:?}: killed by a signal", args);
        if !out.status.success() {
            proptest::prop_assert!(!img.exists(), "{:?}: failed and left the image", args);
        }
    }
}

/// Messages of the other commands name the thing and the reason once (issue 21): fsck of a
/// file that is not ticketfs printed its path twice; `ticketfs db IMG inode N` of a number no
/// chunk holds said "corrupt metadata"; `ticketfs`'s usage did not mention db or stats.
#[test]
fn fsck_db_and_usage_messages_say_it_once() {
    let work = tempfile::tempdir().unwrap();
    let not = work.path().join("zeros");
    std::fs::write(&not, vec![0u8; 1 << 20]).unwrap();
    let fsck = mkfs_bin().with_file_name("fsck-ticketfs");
    let out = Command::new(&fsck).arg("-n").arg(&not).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches(not.to_str().unwrap()).count(), 1, "{err}");
    assert!(err.contains("no ticketfs superblock"), "{err}");

    let img = work.path().join("img");
    assert!(mkfs(&["-s", "64M"], &img).status.success());
    let tkfs = env!("CARGO_BIN_EXE_ticketfs");
    for n in ["18446744073709551615", "99999", "65"] {
        let out = Command::new(tkfs)
            .arg("db")
            .arg(&img)
            .args(["inode", n])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "db inode {n}");
        assert!(
            err.contains(&format!("no such inode {n}")),
            "db inode {n}: {err}"
        );
        assert!(!err.contains("corrupt"), "db inode {n}: {err}");
    }
    let out = Command::new(tkfs).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ticketfs stats") && err.contains("ticketfs db"),
        "{err}"
    );
}

/// Every command says its version and the on-disk format's with -V/--version (exit 0), and
/// exits by its convention (issue 21): mkfs 1 for any failure (as mkfs.xfs, mke2fs; it was 16
/// or 8), fsck 16 for a usage error (fsck(8)), the mount 1 for a usage error and 32 for a
/// mount that failed (mount(8); it was 1); an unknown option is one line.
#[test]
fn versions_and_exit_codes_follow_each_commands_convention() {
    let tkfs = PathBuf::from(env!("CARGO_BIN_EXE_ticketfs"));
    let fsck = mkfs_bin().with_file_name("fsck-ticketfs");
    let stress = mkfs_bin().with_file_name("ticketfs-stress");
    let format = format!("(on-disk format {})", ticketfs::format::FORMAT_VERSION);
    for (bin, name) in [
        (&tkfs, "ticketfs"),
        (&mkfs_bin(), "mkfs.ticketfs"),
        (&fsck, "fsck.ticketfs"),
        (&stress, "ticketfs-stress"),
    ] {
        for flag in ["-V", "--version"] {
            let out = Command::new(bin).arg(flag).output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{name} {flag}");
            assert!(
                text.starts_with(name) && text.contains(&format),
                "{name} {flag}: {text}"
            );
        }
    }
    let work = tempfile::tempdir().unwrap();
    let img = work.path().join("img");
    let img = img.to_str().unwrap();
    for (bin, args, code) in [
        (&mkfs_bin(), vec!["-q", img], 1),
        (&mkfs_bin(), vec!["-s", "1M", img], 1),
        (&fsck, vec!["-q", img], 16),
        (&tkfs, vec!["-q", img, "/"], 1),
        (&tkfs, vec!["/nonexistent", "/"], 32),
    ] {
        let out = Command::new(bin).args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{} {args:?}: {err}",
            bin.display()
        );
        assert_eq!(err.lines().count(), 1, "{} {args:?}: {err}", bin.display());
    }
}

/// The manual pages come from the definitions the command lines are parsed with (issue 21):
/// each renders with `man -l`, and names exactly the options `--help` lists.
#[test]
fn manual_pages_render_and_match_help() {
    if Command::new("man").arg("--version").output().is_err() {
        common::skip("man is not installed (Debian package man-db)");
        return;
    }
    let fsck = mkfs_bin().with_file_name("fsck-ticketfs");
    let tkfs = PathBuf::from(env!("CARGO_BIN_EXE_ticketfs"));
    // (binary, its arguments before --help or after --man, the page's name)
    let pages: [(&PathBuf, &[&str], &str); 5] = [
        (&mkfs_bin(), &[], "mkfs.ticketfs"),
        (&fsck, &[], "fsck.ticketfs"),
        (&tkfs, &[], "ticketfs"),
        (&tkfs, &["stats"], "ticketfs-stats"),
        (&tkfs, &["db"], "ticketfs-db"),
    ];
    for (bin, sub, name) in pages {
        let page = Command::new(bin).arg("--man").args(sub).output().unwrap();
        assert!(page.status.success(), "{name} --man");
        let work = tempfile::tempdir().unwrap();
        let file = work.path().join(format!("{name}.8"));
        std::fs::write(&file, &page.stdout).unwrap();
        let shown = Command::new("man")
            .env("MANWIDTH", "200")
            .arg("-l")
            .arg(&file)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&shown.stdout);
        assert!(
            shown.status.success() && text.contains(&format!("{name}(8)")),
            "{name}: {text}"
        );
        let help = Command::new(bin).args(sub).arg("--help").output().unwrap();
        let help = String::from_utf8_lossy(&help.stdout);
        let options = |t: &str| -> std::collections::BTreeSet<String> {
            t.split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']' || c == '|')
                .filter(|w| w.starts_with('-') && w.len() > 1 && !w.starts_with("---"))
                .map(|w| {
                    w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
                        .to_string()
                })
                .filter(|w| {
                    w.len() > 1
                        && w.chars()
                            .nth(1)
                            .is_some_and(|c| c.is_ascii_alphabetic() || c == '-')
                })
                .collect()
        };
        let (in_help, in_page) = (options(&help), options(&text));
        let least = if sub.is_empty() { 4 } else { 2 };
        assert!(
            in_help.len() >= least,
            "{name}: options found in --help: {in_help:?}"
        );
        let missing: Vec<_> = in_help.difference(&in_page).collect();
        assert!(
            missing.is_empty(),
            "{name}: in --help, not in the page: {missing:?}"
        );
        assert!(
            !in_page.contains("--man"),
            "{name}: the page shows the hidden --man"
        );
        // Every word of the help's lists (mount options, queries, subcommands) has its entry
        // in the page.
        for entry in help_entries(&help) {
            assert!(
                text.lines()
                    .any(|l| l.trim_start().starts_with(&entry)
                        || l.contains(&format!("-{entry}(8)"))),
                "{name}: {entry:?} is in --help, not in the page"
            );
        }
    }
    // The mount's page lists every -o option with its value.
    let page = Command::new(&tkfs).arg("--man").output().unwrap();
    let page = String::from_utf8_lossy(&page.stdout).replace("\\-", "-");
    for o in ticketfs::daemon::MOUNT_OPTIONS {
        let term = ticketfs::daemon::spelled(&o);
        assert!(
            page.contains(&format!("\\fB{term}\\fR")),
            "{term} not in ticketfs(8)"
        );
    }
    let out = Command::new(&tkfs)
        .args(["--man", "nosuch"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
}

/// The first words of the indented entries of --help's lists: "  sb     Both ..." and the
/// mount options ("  mem=SIZE" with its help on the next line).
fn help_entries(help: &str) -> Vec<String> {
    let mut in_list = false;
    let mut out = Vec::new();
    for line in help.lines() {
        if !line.starts_with(' ') {
            in_list = line.starts_with("Commands:")
                || line.starts_with("Queries:")
                || line.starts_with("Mount options");
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        if in_list && indent == 2 {
            if let Some(w) = line.split_whitespace().next() {
                if w.chars().next().is_some_and(|c| c.is_ascii_alphabetic()) {
                    out.push(w.to_string());
                }
            }
        }
    }
    out
}

/// Bad input to every command: an exit status by its convention and one line on stderr, never
/// a panic or a backtrace (issue 21). Before, `ticketfs stats`, `ticketfs IMAGE` and `-o`
/// without its list printed the three-line usage, and `db IMG block` two lines.
#[test]
fn bad_input_to_every_command_is_one_line() {
    let work = tempfile::tempdir().unwrap();
    let img = work.path().join("img");
    assert!(mkfs(&["-s", "64M"], &img).status.success());
    let img = img.to_str().unwrap();
    let zeros = work.path().join("zeros");
    std::fs::write(&zeros, vec![0u8; 1 << 20]).unwrap();
    let zeros = zeros.to_str().unwrap();
    let tkfs = PathBuf::from(env!("CARGO_BIN_EXE_ticketfs"));
    let fsck = mkfs_bin().with_file_name("fsck-ticketfs");
    let stress = mkfs_bin().with_file_name("ticketfs-stress");
    let out = work.path().join("out");
    let out = out.to_str().unwrap();
    let run = ["--limit", "8M", "--workload", "fsx", "--out", out];
    let cases: Vec<(&PathBuf, Vec<&str>, i32)> = vec![
        (&tkfs, vec![], 1),
        (&tkfs, vec![img], 1),
        (&tkfs, vec![img, "/", "-o"], 1),
        (&tkfs, vec![img, "/", "-x"], 1),
        (&tkfs, vec![img, "/nonexistent"], 32),
        (&tkfs, vec![zeros, "/"], 32),
        (&tkfs, vec!["stats"], 1),
        (&tkfs, vec!["stats", "/"], 1),
        (&tkfs, vec!["db"], 1),
        (&tkfs, vec!["db", img], 1),
        (&tkfs, vec!["db", img, "nosuch"], 1),
        (&tkfs, vec!["db", img, "block"], 1),
        (&tkfs, vec!["db", img, "block", "-1"], 1),
        (&tkfs, vec!["db", img, "block", "18446744073709551615"], 1),
        (&tkfs, vec!["db", img, "ag", "99"], 1),
        (&tkfs, vec!["db", img, "inode", "5"], 1),
        (&tkfs, vec!["db", img, "dir", "18446744073709551615"], 1),
        (&tkfs, vec!["db", zeros, "sb"], 1),
        (&tkfs, vec!["db", img, "inode"], 1),
        (&tkfs, vec!["db", img, "inode", "5", "6"], 1),
        (&tkfs, vec!["stats", "--json"], 1),
        (&tkfs, vec!["--man", "nosuch"], 1),
        (&tkfs, vec![img, "/", "-o", "overrun=foo"], 1),
        (&tkfs, vec![img, "/", "-o", "max_threads=0"], 1),
        (&fsck, vec![], 16),
        (&fsck, vec!["-n", "-y", img], 16),
        (&fsck, vec!["-b", "abc", img], 16),
        (&fsck, vec!["-n", "/nonexistent"], 8),
        (&fsck, vec!["-n", zeros], 8),
        (&fsck, vec!["-n", "-b", "999999999999", img], 16),
        (&fsck, vec!["-n", "-b", "5", img], 16),
        (&stress, vec![], 2),
        (
            &stress,
            vec!["--limit", "8M", "--workload", "nope", "--out", out],
            2,
        ),
        (
            &stress,
            vec!["--limit", "8Q", "--workload", "fsx", "--out", out],
            2,
        ),
        (&stress, [&run[..], &["--memres", "maybe"]].concat(), 2),
        (&stress, [&run[..], &["--seconds", "-3"]].concat(), 2),
        (
            &stress,
            [&run[..], &["--seconds", "18446744073709551615"]].concat(),
            2,
        ),
        (
            &stress,
            [&run[..], &["--crash-rounds", "18446744073709551615"]].concat(),
            2,
        ),
        (
            &stress,
            vec!["--limit", "0", "--workload", "fsx", "--out", out],
            2,
        ),
        (&stress, vec!["report"], 2),
        (&stress, vec!["report", "/nonexistent", "doc", "svg"], 2),
    ];
    for (bin, args, code) in cases {
        let out = Command::new(bin).args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        let name = bin.file_name().unwrap().to_string_lossy();
        assert_eq!(out.status.code(), Some(code), "{name} {args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{name} {args:?}: {err}");
        assert!(!err.contains("panicked"), "{name} {args:?}: {err}");
    }
}

/// Progress (issue 21): off a terminal nothing unless --progress, then one line per phase as it
/// ends; on a terminal (script(1) makes one) a bar redrawn in place and cleared before the
/// report.
#[test]
fn progress_is_shown_when_asked_and_on_a_terminal() {
    let work = tempfile::tempdir().unwrap();
    let img = work.path().join("img");
    let out = mkfs(&["--progress", "-s", "4G", "-a", "4", "-l", "8M"], &img);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err, "log: 2048/2048\nallocation groups: 4/4\nwriting home: 1/1\n",
        "mkfs --progress"
    );
    let quiet = mkfs(&["-s", "4G"], &work.path().join("img2"));
    assert!(
        quiet.status.success() && quiet.stderr.is_empty(),
        "mkfs off a terminal"
    );

    let fsck = mkfs_bin().with_file_name("fsck-ticketfs");
    let out = Command::new(&fsck)
        .args(["-n", "--progress"])
        .arg(&img)
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let phases: Vec<&str> = err
        .lines()
        .map(|l| l.split(':').next().unwrap_or(""))
        .collect();
    assert_eq!(
        phases,
        [
            "allocation groups",
            "inodes",
            "space",
            "log sequence numbers",
            "directories",
            "links",
            "done"
        ],
        "fsck --progress: {err}"
    );
    assert!(err.starts_with("allocation groups: 4/4\n"), "{err}");
    let quiet = Command::new(&fsck).arg("-n").arg(&img).output().unwrap();
    assert!(
        quiet.status.success() && quiet.stderr.is_empty(),
        "fsck off a terminal"
    );

    if Command::new("script").arg("--version").output().is_err() {
        common::skip("script(1) is not installed (Debian package bsdutils): no terminal test");
        return;
    }
    let cmd = format!(
        "{} --progress -s 4G -a 4 {}",
        mkfs_bin().display(),
        work.path().join("img3").display()
    );
    let out = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("\r\x1b[Kallocation groups") && text.contains("\r\x1b[Kmeta-data="),
        "the bar is drawn and cleared before the report: {text:?}"
    );
    assert!(
        !text.contains("allocation groups: 4/4"),
        "no phase lines on a terminal: {text:?}"
    );
}

/// A path need not be UTF-8 (before, every command panicked on one: the manual-page check read
/// its arguments as strings), and a stdout that cannot be written is one line and the
/// command's failure status (fsck's: the image's), not print!'s panic.
#[test]
fn non_utf8_paths_work_and_a_full_stdout_is_one_line() {
    use std::os::unix::ffi::OsStrExt;
    let work = tempfile::tempdir().unwrap();
    let img = work.path().join(std::ffi::OsStr::from_bytes(b"img-\xff"));
    let out = mkfs(&["-s", "64M"], &img);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fsck = mkfs_bin().with_file_name("fsck-ticketfs");
    let tkfs = PathBuf::from(env!("CARGO_BIN_EXE_ticketfs"));
    let stress = mkfs_bin().with_file_name("ticketfs-stress");
    let ok = Command::new(&fsck).arg("-n").arg(&img).output().unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let ok = Command::new(&tkfs)
        .arg("db")
        .arg(&img)
        .arg("sb")
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let bad = std::ffi::OsStr::from_bytes(b"\xff");
    let label = work.path().join("labelled");
    for (bin, args, code) in [
        (mkfs_bin(), vec![bad], 1),
        (
            mkfs_bin(),
            vec![
                "-s".as_ref(),
                "64M".as_ref(),
                "-L".as_ref(),
                bad,
                label.as_os_str(),
            ],
            1,
        ),
        (stress.clone(), vec![bad], 2),
        (fsck.clone(), vec!["-n".as_ref(), bad], 8),
    ] {
        let out = Command::new(&bin).args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{bin:?} {args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{bin:?} {args:?}: {err}");
    }
    assert!(!label.exists(), "a refused mkfs left its file");
    let full = || {
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap()
    };
    let made = work.path().join("made");
    for (bin, args, code) in [
        (
            mkfs_bin(),
            vec!["-s".as_ref(), "64M".as_ref(), made.as_os_str()],
            1,
        ),
        // fsck's status is the image's (clean), as e2fsck's; fsck.rs checks it further.
        (fsck, vec!["-n".as_ref(), img.as_os_str()], 0),
        (tkfs, vec!["db".as_ref(), img.as_os_str(), "sb".as_ref()], 1),
    ] {
        let out = Command::new(&bin)
            .args(&args)
            .stdout(full())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{bin:?} {args:?}: {err}");
        assert!(
            err.contains("writing the output"),
            "{bin:?} {args:?}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{bin:?} {args:?}: {err}");
    }
}

/// `db sb` of a truncated image shows the superblock with what is wrong (it refused before,
/// with "16384 blocks on a device of 1"): that is when an administrator needs to see it.
#[test]
fn db_shows_the_superblock_of_a_truncated_image() {
    let work = tempfile::tempdir().unwrap();
    let img = work.path().join("img");
    assert!(mkfs(&["-s", "64M"], &img).status.success());
    std::fs::OpenOptions::new()
        .write(true)
        .open(&img)
        .unwrap()
        .set_len(4096)
        .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ticketfs"))
        .arg("db")
        .arg(&img)
        .arg("sb")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("warning: the filesystem has 16384 blocks but the device only 1")
            && text.contains("superblock copy at block 0: good")
            && text.contains("uuid "),
        "{text}"
    );
}

/// The mode, owner and group of `p`.
fn owner_of(p: &Path) -> (u32, u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p).unwrap();
    (m.mode() & 0o7777, m.uid(), m.gid())
}

/// --root-owner=UID:GID makes the root directory that user's (mke2fs -E root_owner); without
/// it the root is root's, 0:0 mode 0755. A malformed value is a usage error naming the option.
#[test]
fn root_owner_sets_the_root_directory_s_owner() {
    let work = tempfile::tempdir().unwrap();
    for bad in [
        "=abc",
        "=1000",
        "=1000:",
        "=:1000",
        "=1:+2",
        "=-1:0",
        "=4294967295:0",
        "=0:4294967296",
        "=1:2:3",
        "=",
    ] {
        let img = work.path().join("refused");
        let opt = format!("--root-owner{bad}");
        assert_refused(&["-s", "64M", &opt], &img, "--root-owner");
        assert_eq!(mkfs(&["-s", "64M", &opt], &img).status.code(), Some(1));
    }
    for (args, want) in [
        (&[][..], (0o755, 0, 0)),
        (&["--root-owner=1000:1001"][..], (0o755, 1000, 1001)),
        (&["--root-owner=0:0"][..], (0o755, 0, 0)),
        // Without a value: who runs mkfs, root here.
        (&["--root-owner"][..], (0o755, 0, 0)),
    ] {
        let img = work.path().join("img");
        let _ = std::fs::remove_file(&img);
        let out = mkfs(&[&["-s", "64M"][..], args].concat(), &img);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let m = common::mount::Mount::new(&img, "");
        assert_eq!(owner_of(m.path()), want, "{args:?}");
        m.unmount();
        common::mount::assert_fsck_clean(&img, &format!("{args:?}"));
    }
}

/// A user other than root makes an image with --root-owner (no value: their own ids), mounts it
/// through fusermount3 and creates a file in its root; without the option the root is root's and
/// the same user cannot (EACCES), which is what the option is for.
#[test]
fn a_user_creates_files_in_the_root_of_an_image_made_with_root_owner() {
    if let Some(why) = common::user_fuse_missing() {
        common::skip(&why);
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let user = common::NOBODY;
    std::os::unix::fs::chown(work.path(), Some(user), Some(user)).unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_ticketfs"));
    let fsck = bin.with_file_name("fsck-ticketfs");
    // Mounts IMG on M as the user, runs CHECK in it, unmounts with fusermount3 and waits for
    // the daemon to let go of the image (fsck -n succeeds once it has).
    let script = |opt: &str, check: &str| {
        format!(
            "set -e; cd {w}; {mkfs} -s 64M {opt} img >/dev/null; mkdir m; {tk} img m; \
             {check}; fusermount3 -u m; \
             for i in $(seq 100); do {fsck} -n img >/dev/null 2>&1 && exit 0; sleep 0.05; done; \
             {fsck} -n img",
            w = work.path().display(),
            mkfs = mkfs_bin().display(),
            tk = bin.display(),
            fsck = fsck.display(),
        )
    };
    for (opt, check) in [
        (
            "--root-owner",
            format!(
                "test \"$(stat -c %a:%u:%g m)\" = 755:{user}:{user}; echo made > m/f; \
                 mkdir m/d; test \"$(cat m/f)\" = made; test \"$(stat -c %u:%g m/f)\" = {user}:{user}"
            ),
        ),
        (
            "",
            "test \"$(stat -c %a:%u:%g m)\" = 755:0:0; \
             test \"$(touch m/f 2>&1)\" = \"touch: cannot touch 'm/f': Permission denied\""
                .to_string(),
        ),
    ] {
        let out = Command::new("setpriv")
            .args([
                &format!("--reuid={user}"),
                &format!("--regid={user}"),
                "--clear-groups",
                "env",
                "-u",
                "XDG_RUNTIME_DIR",
                "LC_ALL=C",
            ])
            .arg(format!("HOME={}", work.path().display()))
            .args(["sh", "-c", &script(opt, &check)])
            .output()
            .expect("setpriv");
        // Whatever happened, leave no mount behind.
        let m = work.path().join("m");
        if std::fs::read_to_string("/proc/self/mounts")
            .unwrap_or_default()
            .contains(&format!(" {} ", m.display()))
        {
            let _ = Command::new("umount").arg("-l").arg(&m).status();
        }
        assert!(
            out.status.success(),
            "{opt:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = std::fs::remove_dir(&m);
        let _ = std::fs::remove_file(work.path().join("img"));
    }
}
