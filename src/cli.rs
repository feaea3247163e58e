//! What every command line of ticketfs shares (clap): `-V` with the on-disk format's version,
//! a usage error in one line with the exit status the command's convention gives it
//! (fsck(8): 16; mkfs and mount(8) helpers: 1), instead of clap's several lines and status 2,
//! and the manual page, rendered from the same definition (`PROG --man [SUBCOMMAND]`).

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

/// A section of a manual page beyond what the command's definition gives: a title and a list of
/// items, each a term and what it means (the mount's options, for instance).
pub struct ManSection<'a> {
    pub title: &'a str,
    pub items: Vec<(String, String)>,
    /// A paragraph after the items.
    pub after: &'a str,
}

/// `PROG --man [SUBCOMMAND]` (for scripts/install.sh, so not in --help): prints the manual page
/// of `cmd` (section 8), or of its subcommand, PROG-SUBCOMMAND(8), and exits; returns when the
/// first argument is not `--man`. Checked before parsing, so the command's own arguments stay
/// required. `extra` goes after the options of the command's own page. An unknown page is a
/// usage error (exit `usage_status`).
pub fn manual_page_if_asked(cmd: Command, extra: &[ManSection<'_>], usage_status: i32) {
    // args_os: a path need not be UTF-8, and this runs before every parse.
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if args.first().map(|a| a != "--man").unwrap_or(true) {
        return;
    }
    let prog = cmd.get_name().to_string();
    let fail = |msg: String| -> ! {
        eprintln!("{prog}: {msg}");
        std::process::exit(usage_status)
    };
    let mut cmd = cmd;
    cmd.build();
    let mut out = Vec::new();
    let r = match args.get(1) {
        None => render_page(&cmd, extra, None, &mut out),
        Some(name) => match cmd
            .get_subcommands()
            .find(|s| !s.is_hide_set() && s.get_name() == name.as_os_str())
        {
            Some(sub) => render_page(sub, &[], Some(&cmd), &mut out),
            None => fail(format!(
                "--man {}: no such subcommand",
                name.to_string_lossy()
            )),
        },
    };
    if let Err(e) = r.and_then(|()| std::io::Write::write_all(&mut std::io::stdout(), &out)) {
        fail(format!("writing the manual page: {e}"));
    }
    std::process::exit(0)
}

/// The page: clap_mangen's sections (title, name, synopsis, description, options, subcommands,
/// version), with `extra` after the options in place of the after-help text. The subcommands
/// of a subcommand's page (one with a `parent`) are described in it, with their arguments,
/// since they have no pages of their own; its footer names the parent program and version.
fn render_page(
    cmd: &Command,
    extra: &[ManSection<'_>],
    parent: Option<&Command>,
    w: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    let nested = parent.is_some();
    let program = parent.unwrap_or(cmd);
    let source = format!(
        "{} {}",
        program.get_name(),
        program.get_version().unwrap_or_default()
    );
    let man = clap_mangen::Man::new(cmd.clone())
        .section("8")
        .source(source);
    man.render_title(w)?;
    man.render_name_section(w)?;
    man.render_synopsis_section(w)?;
    man.render_description_section(w)?;
    man.render_options_section(w)?;
    for s in extra {
        writeln!(w, ".SH \"{}\"", roff_text(&s.title.to_uppercase()))?;
        for (term, text) in &s.items {
            writeln!(w, ".TP\n\\fB{}\\fR\n{}", roff_text(term), roff_text(text))?;
        }
        if !s.after.is_empty() {
            writeln!(w, ".PP\n{}", roff_text(s.after))?;
        }
    }
    if nested && cmd.has_subcommands() {
        let title = cmd.get_subcommand_help_heading().unwrap_or("Commands");
        writeln!(w, ".SH \"{}\"", roff_text(&title.to_uppercase()))?;
        for sub in cmd.get_subcommands() {
            let mut term = sub.get_name().to_string();
            for a in sub.get_positionals() {
                let name = a.get_value_names().and_then(|v| v.first().cloned());
                term.push(' ');
                term.push_str(name.as_ref().map_or(a.get_id().as_str(), |n| n.as_str()));
            }
            let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
            writeln!(
                w,
                ".TP\n\\fB{}\\fR\n{}",
                roff_text(&term),
                roff_text(&about)
            )?;
        }
    } else if cmd.has_subcommands() {
        man.render_subcommands_section(w)?;
    }
    // A subcommand has no version of its own (clap_mangen would panic on it).
    if cmd.get_version().is_some() {
        man.render_version_section(w)?;
    }
    Ok(())
}

/// `s` as roff text: backslashes and hyphens escaped, a leading control character defused.
fn roff_text(s: &str) -> String {
    let e = s.replace('\\', "\\e").replace('-', "\\-");
    if e.starts_with('.') || e.starts_with('\'') {
        format!("\\&{e}")
    } else {
        e
    }
}

/// Writes `text` to stdout. A failed write (a full disk, a closed pipe) is one line on stderr
/// and exit `status`, instead of print!'s panic; a pipe closed by its reader (`| head`) ends
/// quietly, as a C tool ends on SIGPIPE.
pub fn print_or_exit(prog: &str, text: &str, status: i32) {
    if !print_or_warn(prog, text) {
        std::process::exit(status)
    }
}

/// Writes `text` to stdout; false when that failed, which is then one line on stderr (none for
/// a pipe closed by its reader). For a tool whose exit status says something other than whether
/// its report was read (fsck: what it found and repaired).
pub fn print_or_warn(prog: &str, text: &str) -> bool {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => true,
        Err(e) => {
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                eprintln!("{prog}: writing the output: {e}");
            }
            false
        }
    }
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
        let format = format!("(on-disk format {FORMAT_VERSION})");
        assert!(e.render().to_string().contains(&format));
    }
}
