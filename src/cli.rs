//! What every command line of ticketfs shares (clap): `-V` with the on-disk format's version,
//! and a usage error in one line with the exit status the command's convention gives it
//! (fsck(8): 16; mkfs and mount(8) helpers: 1), instead of clap's several lines and status 2.

use crate::format::FORMAT_VERSION;
use clap::error::ErrorKind;
use clap::{ArgMatches, Command};

/// The version line: the program's version and the on-disk format's.
pub(crate) fn version() -> String {
    format!(
        "{} (on-disk format {FORMAT_VERSION})",
        env!("CARGO_PKG_VERSION")
    )
}

/// `cmd` with the shared version line.
pub fn with_version(cmd: Command) -> Command {
    cmd.version(version())
}

/// Parses the process's arguments with `cmd`: help and version print and exit 0; a usage error
/// prints "PROG: what is wrong (see --help)" on one line and exits `usage_status`.
pub fn matches(cmd: Command, prog: &str, usage_status: i32) -> ArgMatches {
    match cmd.try_get_matches() {
        Ok(m) => m,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            std::process::exit(0)
        }
        Err(e) => {
            eprintln!("{prog}: {} (see --help)", one_line(&e.render().to_string()));
            std::process::exit(usage_status)
        }
    }
}

/// Clap's message up to its usage block, on one line, without "error: ".
fn one_line(text: &str) -> String {
    let parts: Vec<&str> = text
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    parts.join(" ").trim_start_matches("error: ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_usage_error_is_one_line() {
        let cmd = || {
            with_version(
                Command::new("x").arg(clap::Arg::new("t").required(true).value_name("TARGET")),
            )
        };
        let e = cmd().try_get_matches_from(["x"]).unwrap_err();
        let line = one_line(&e.render().to_string());
        assert!(!line.contains('\n') && line.contains("<TARGET>"), "{line}");
        let e = cmd().try_get_matches_from(["x", "-q", "t"]).unwrap_err();
        let line = one_line(&e.render().to_string());
        assert!(line.starts_with("unexpected argument '-q'"), "{line}");
        let e = cmd().try_get_matches_from(["x", "-V"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::DisplayVersion);
        assert!(e.render().to_string().contains("(on-disk format 1)"));
    }
}
