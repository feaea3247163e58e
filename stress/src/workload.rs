//! The workloads, each real tools nobody here wrote where one exists: stress-ng's filesystem
//! stressors, 8 fsx (crate) instances on separate files, fsstress from an xfstests build, and a
//! metadata storm (16 processes creating, stat-ing and unlinking files, half in one shared
//! directory). Each runs as child processes of the harness, outside the cgroup; their errors are
//! counted by errno from what they print.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    StressNg,
    Fsx,
    Storm,
    Fsstress,
}

impl Kind {
    pub fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "stress-ng" => Kind::StressNg,
            "fsx" => Kind::Fsx,
            "storm" => Kind::Storm,
            "fsstress" => Kind::Fsstress,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            Kind::StressNg => "stress-ng",
            Kind::Fsx => "fsx",
            Kind::Storm => "storm",
            Kind::Fsstress => "fsstress",
        }
    }
}

/// What a workload segment is asked to do.
#[derive(Debug, Clone)]
pub struct Params {
    pub seconds: u64,
    pub seed: u64,
    pub fsx_ops: u64,
    pub storm_files: u64,
    pub fsstress_ops: u64,
    pub fsx_config: PathBuf,
    pub fsstress: Option<PathBuf>,
}

/// Processes of one workload segment, with their output files.
pub struct Running {
    kind: Kind,
    children: Vec<(Child, PathBuf)>,
}

/// How a segment ended.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    /// errno name → occurrences reported by the tools.
    pub errors: BTreeMap<String, u64>,
    /// Processes that exited unsuccessfully, with the end of their output.
    pub failed: Vec<String>,
}

/// Names of the errnos the acceptance cares about and others the tools print.
pub fn errno_name(n: i32) -> String {
    match n {
        libc::EIO => "EIO".into(),
        libc::ENOMEM => "ENOMEM".into(),
        libc::ENOSPC => "ENOSPC".into(),
        libc::ENOTCONN => "ENOTCONN".into(),
        libc::ENOENT => "ENOENT".into(),
        libc::EEXIST => "EEXIST".into(),
        libc::ENOTEMPTY => "ENOTEMPTY".into(),
        libc::EINVAL => "EINVAL".into(),
        libc::EMFILE => "EMFILE".into(),
        libc::EPERM => "EPERM".into(),
        libc::EACCES => "EACCES".into(),
        libc::ENODATA => "ENODATA".into(),
        // What a FUSE request in flight gets when the daemon dies (a crash, an OOM kill).
        libc::ECONNABORTED => "ECONNABORTED".into(),
        // One word: the storm workers print "NAME=N" pairs separated by spaces.
        n => format!("errno_{n}"),
    }
}

/// Every "errno=N", "errno = N", "os error N" or "code: N" in `text`.
fn errnos_in(text: &str, out: &mut BTreeMap<String, u64>) {
    for pat in ["errno=", "errno = ", "os error ", "code: "] {
        for (i, _) in text.match_indices(pat) {
            let rest = &text[i + pat.len()..];
            let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
            if let Ok(n) = digits.parse::<i32>() {
                *out.entry(errno_name(n)).or_insert(0) += 1;
            }
        }
    }
}

fn spawn(cmd: &mut Command, log: &Path) -> Result<Child, String> {
    let f = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(f.try_clone().map_err(|e| e.to_string())?)
        .stderr(f)
        .spawn()
        .map_err(|e| format!("{:?}: {e}", cmd.get_program()))
}

impl Running {
    pub fn start(
        kind: Kind,
        p: &Params,
        mnt: &Path,
        logs: &Path,
        segment: usize,
    ) -> Result<Running, String> {
        let mut children = Vec::new();
        let log = |name: &str| logs.join(format!("{}-{segment}-{name}.log", kind.name()));
        match kind {
            Kind::StressNg => {
                let dir = mnt.join(format!("stress-ng-{segment}"));
                std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
                let l = log("all");
                let mut c = Command::new("stress-ng");
                c.arg("--temp-path").arg(&dir);
                for s in [
                    "dir",
                    "dentry",
                    "filename",
                    "rename",
                    "link",
                    "symlink",
                    "hdd",
                    "iomix",
                    "fallocate",
                    "xattr",
                    "seek",
                    "sync-file",
                    "chmod",
                    "utime",
                ] {
                    c.arg(format!("--{s}")).arg("2");
                }
                // Sizes that keep the image far from full: ENOSPC is not what is tested.
                c.args([
                    "--hdd-bytes",
                    "32M",
                    "--iomix-bytes",
                    "16M",
                    "--fallocate-bytes",
                    "32M",
                    "--sync-file-bytes",
                    "16M",
                    "--seek-size",
                    "32M",
                    "--seed",
                    &p.seed.to_string(),
                ]);
                c.arg("-t").arg(format!("{}s", p.seconds));
                c.arg("--metrics-brief");
                children.push((spawn(&mut c, &l)?, l));
            }
            Kind::Fsx => {
                for i in 0..8u64 {
                    let l = log(&format!("fsx{i}"));
                    let dir = logs.join(format!("fsx-{segment}-{i}"));
                    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
                    let mut c = Command::new("fsx");
                    c.arg("-f")
                        .arg(&p.fsx_config)
                        .arg("-N")
                        .arg(p.fsx_ops.to_string())
                        .arg("-S")
                        .arg((p.seed + i).to_string())
                        .arg("-P")
                        .arg(&dir)
                        .arg(mnt.join(format!("fsx-{segment}-{i}")));
                    children.push((spawn(&mut c, &l)?, l));
                }
            }
            Kind::Storm => {
                let me = std::env::current_exe().map_err(|e| e.to_string())?;
                let root = mnt.join(format!("storm-{segment}"));
                std::fs::create_dir_all(root.join("shared")).map_err(|e| e.to_string())?;
                for i in 0..16u64 {
                    let l = log(&format!("w{i}"));
                    let mut c = Command::new(&me);
                    c.arg("storm-worker")
                        .arg(&root)
                        .arg(i.to_string())
                        .arg(p.storm_files.to_string())
                        .arg(p.seconds.to_string());
                    children.push((spawn(&mut c, &l)?, l));
                }
            }
            Kind::Fsstress => {
                let bin = p
                    .fsstress
                    .clone()
                    .ok_or("fsstress: set FSSTRESS= or XFSTESTS_DIR= (an xfstests build)")?;
                let dir = mnt.join(format!("fsstress-{segment}"));
                std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
                let l = log("all");
                let mut c = Command::new(bin);
                c.arg("-d")
                    .arg(&dir)
                    .arg("-p")
                    .arg("16")
                    .arg("-n")
                    .arg(p.fsstress_ops.to_string())
                    .arg("-s")
                    .arg(p.seed.to_string());
                children.push((spawn(&mut c, &l)?, l));
            }
        }
        Ok(Running { kind, children })
    }

    /// Whether every process has ended.
    pub fn done(&mut self) -> bool {
        self.children
            .iter_mut()
            .all(|(c, _)| matches!(c.try_wait(), Ok(Some(_))))
    }

    /// Kills the processes this segment started (a crash round, or a hang).
    pub fn kill(&mut self) {
        for (c, _) in &mut self.children {
            let _ = c.kill();
        }
    }

    /// Waits for every process (at most `limit`, then kills them) and reads their outcomes.
    pub fn finish(mut self, limit: Duration) -> Outcome {
        let start = Instant::now();
        while !self.done() && start.elapsed() < limit {
            std::thread::sleep(Duration::from_millis(100));
        }
        self.kill();
        let mut out = Outcome::default();
        for (c, log) in &mut self.children {
            let st = c.wait();
            let text = std::fs::read_to_string(&*log).unwrap_or_default();
            match self.kind {
                // The storm worker prints its own counts: "errors NAME=N ...".
                Kind::Storm => {
                    for w in text
                        .lines()
                        .filter_map(|l| l.strip_prefix("errors"))
                        .flat_map(|l| l.split_whitespace())
                    {
                        if let Some((k, v)) = w.split_once('=') {
                            *out.errors.entry(k.to_string()).or_insert(0) +=
                                v.parse::<u64>().unwrap_or(0);
                        }
                    }
                }
                _ => errnos_in(&text, &mut out.errors),
            }
            if !st.is_ok_and(|s| s.success()) {
                let tail: String = text.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
                out.failed.push(format!("{}: {tail}", log.display()));
            }
        }
        out
    }
}

impl Drop for Running {
    /// A run that ends early (an error, a signal) leaves none of its processes behind.
    fn drop(&mut self) {
        for (c, _) in &mut self.children {
            if let Ok(None) = c.try_wait() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// One storm process: creates, stats and unlinks `files` files, half in `root/shared` and half
/// in its own directory, for at most `seconds`; prints "errors NAME=N ..." at the end.
pub fn storm_worker(root: &Path, id: u64, files: u64, seconds: u64) -> i32 {
    let own = root.join(format!("w{id}"));
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut note = |e: std::io::Error| {
        *errors
            .entry(errno_name(e.raw_os_error().unwrap_or(0)))
            .or_insert(0) += 1;
    };
    if let Err(e) = std::fs::create_dir_all(&own) {
        note(e);
    }
    let start = Instant::now();
    let deadline = Duration::from_secs(seconds.max(1));
    const BATCH: u64 = 500;
    let mut done = 0;
    while done < files && start.elapsed() < deadline {
        let n = BATCH.min(files - done);
        let path = |k: u64| {
            let f = done + k;
            if f.is_multiple_of(2) {
                root.join("shared").join(format!("{id}-{f}"))
            } else {
                own.join(format!("{f}"))
            }
        };
        for k in 0..n {
            if let Err(e) = std::fs::File::create(path(k)) {
                note(e);
            }
        }
        for k in 0..n {
            if let Err(e) = std::fs::metadata(path(k)) {
                note(e);
            }
        }
        for k in 0..n {
            if let Err(e) = std::fs::remove_file(path(k)) {
                note(e);
            }
        }
        done += n;
    }
    let line: Vec<String> = errors.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("files {done}");
    println!("errors {}", line.join(" "));
    0
}
