//! The ticketfs daemon under test: started in the foreground inside the cgroup, waited for until
//! its mount is live, unmounted cleanly or killed (SIGKILL, then a lazy unmount) for a crash round.

use crate::cgroup::Cgroup;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a mount may take to appear.
const MOUNT_WAIT: Duration = Duration::from_secs(20);
/// How long a clean unmount may take to end the daemon.
const EXIT_WAIT: Duration = Duration::from_secs(120);

pub struct Daemon {
    child: Child,
    pub mnt: PathBuf,
}

pub fn is_mounted(mnt: &Path) -> bool {
    let Ok(want) = std::fs::canonicalize(mnt) else {
        return false;
    };
    ticketfs::mountinfo::read().is_ok_and(|table| {
        table
            .iter()
            .any(|m| m.point == want && m.fstype.starts_with("fuse"))
    })
}

impl Daemon {
    pub fn start(
        bin: &Path,
        image: &Path,
        mnt: &Path,
        opts: &str,
        cg: &Cgroup,
        log: &Path,
    ) -> Result<Daemon, String> {
        let procs = cg.procs_path().clone();
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let mut cmd = Command::new(bin);
        cmd.arg(image).arg(mnt).arg("-f").arg("-o").arg(opts);
        cmd.stdin(Stdio::null())
            .stdout(logf.try_clone().map_err(|e| e.to_string())?)
            .stderr(logf);
        // SAFETY: between fork and exec only async-signal-safe calls: open, write, close.
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let n = libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
                if n != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| format!("{}: {e}", bin.display()))?;
        let start = Instant::now();
        while !is_mounted(mnt) {
            if let Ok(Some(st)) = child.try_wait() {
                return Err(format!("the daemon exited before mounting: {st}"));
            }
            if start.elapsed() > MOUNT_WAIT {
                let _ = child.kill();
                let _ = child.wait();
                return Err("the mount did not appear".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Daemon {
            child,
            mnt: mnt.to_path_buf(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Unmounts and waits for the daemon to finish writing everything home.
    pub fn stop(mut self) -> Result<(), String> {
        let st = Command::new("umount")
            .arg(&self.mnt)
            .status()
            .map_err(|e| e.to_string())?;
        if !st.success() {
            let _ = self.child.kill();
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
            let _ = self.child.wait();
            return Err(format!("umount {} failed: {st}", self.mnt.display()));
        }
        let start = Instant::now();
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return if st.success() {
                    Ok(())
                } else {
                    Err(format!("the daemon ended with {st}"))
                };
            }
            if start.elapsed() > EXIT_WAIT {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err("the daemon did not end after umount".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A crash: SIGKILL, then a lazy unmount of the dead mount.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
    }
}
