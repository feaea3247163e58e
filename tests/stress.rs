//! The cgroup stress harness (`ticketfs-stress`) in CI's short configuration: the daemon in an
//! 8 MiB memory cgroup (v2 where the memory controller is enabled, else v1), memres=on, against
//! stress-ng's filesystem stressors for 75 s with 2 crash rounds (SIGKILL at a random moment,
//! lazy unmount, fsck -n, remount), then 8 fsx instances. Fails on an OOM kill, ENOMEM or EIO
//! seen by a workload, a hang, a cgroup peak above the limit, an overrun or an unclean fsck.

use std::path::{Path, PathBuf};
use std::process::Command;

fn harness() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_ticketfs")).with_file_name("ticketfs-stress");
    assert!(
        bin.exists(),
        "{} missing: cargo build --release --workspace first",
        bin.display()
    );
    bin
}

fn run(out: &Path, args: &[&str]) {
    let st = Command::new(harness())
        .args(["--limit", "8M", "--memres", "on", "--require", "--out"])
        .arg(out)
        .args(args)
        .output()
        .expect("run ticketfs-stress");
    let text =
        String::from_utf8_lossy(&st.stdout).to_string() + &String::from_utf8_lossy(&st.stderr);
    eprintln!("{text}");
    let result = std::fs::read_to_string(out.join("result.json")).unwrap_or_default();
    // The daemon's own words, should it have failed to mount.
    let daemon = std::fs::read_to_string(out.join("daemon.log")).unwrap_or_default();
    let daemon_tail: String = daemon.lines().rev().take(5).collect::<Vec<_>>().join("\n");
    assert!(
        st.status.success(),
        "ticketfs-stress {args:?}: {}\n{text}\n{result}\ndaemon (last lines, newest first):\n{daemon_tail}",
        st.status
    );
    let v: serde_json::Value = serde_json::from_str(&result).expect("result.json");
    assert_eq!(v["acceptance"], true, "{result}");
    assert_eq!(v["oom_kills"], 0, "{result}");
    assert_eq!(v["overruns"], 0, "{result}");
    assert!(v["ops_completed"].as_u64().unwrap_or(0) > 1000, "{result}");
}

#[test]
fn stress_ng_and_fsx_in_an_8_mib_cgroup() {
    let work = tempfile::tempdir().unwrap();
    run(
        &work.path().join("stress-ng"),
        &[
            "--workload",
            "stress-ng",
            "--seconds",
            "75",
            "--crash-rounds",
            "2",
        ],
    );
    run(
        &work.path().join("fsx"),
        &["--workload", "fsx", "--fsx-ops", "15000"],
    );
}
