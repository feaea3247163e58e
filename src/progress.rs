//! Progress of long work (mkfs of a large device, fsck's phases, repair), as e2fsck `-C` and
//! xfs_repair report it: the work calls a `Progress` callback with its phase and how far it
//! is; `Bar` draws that on stderr. On a terminal the bar appears only once the work has taken
//! `SHOW_AFTER`, so a quick run prints nothing; off a terminal nothing is printed unless asked
//! for (`--progress`), and then a line per phase, since a log file has no use for redraws.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Progress callback: (phase, done, total). Called often; cheap when nothing is shown.
pub type Progress<'a> = &'a mut dyn FnMut(&str, u64, u64);

/// Work that ends sooner shows no bar on a terminal: a bar flashed for a moment is noise.
pub(crate) const SHOW_AFTER: Duration = Duration::from_secs(1);
/// Longest a terminal's bar goes without a redraw while the count moves (a redraw per call
/// would cost more than the work on a slow terminal).
const REDRAW_EVERY: Duration = Duration::from_millis(100);
/// Width of the bar in characters.
const WIDTH: u64 = 30;

/// When progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Show {
    /// On a terminal, once the work has taken `SHOW_AFTER`; never elsewhere.
    Auto,
    /// From the start: redrawn on a terminal, a line per phase elsewhere.
    Always,
    Never,
}

/// Draws progress on stderr.
pub struct Bar {
    show: Show,
    tty: bool,
    started: Instant,
    last_draw: Option<Instant>,
    /// The phase of the last call, and its last (done, total) (for the line written when it
    /// ends).
    phase: String,
    last: (u64, u64),
    /// A terminal line is drawn and not yet cleared.
    drawn: bool,
}

impl Bar {
    pub fn new(show: Show) -> Bar {
        Bar {
            show,
            tty: std::io::stderr().is_terminal(),
            started: Instant::now(),
            last_draw: None,
            phase: String::new(),
            last: (0, 0),
            drawn: false,
        }
    }

    /// Reports `done` of `total` in `phase`.
    pub fn update(&mut self, phase: &str, done: u64, total: u64) {
        let new_phase = phase != self.phase;
        match (self.show, self.tty) {
            (Show::Never, _) | (Show::Auto, false) => {}
            (Show::Always, false) => {
                if new_phase {
                    self.end_line();
                }
            }
            (_, true) => {
                let now = Instant::now();
                let due = match self.last_draw {
                    None => true,
                    Some(t) => now.duration_since(t) >= REDRAW_EVERY,
                };
                let late_enough =
                    self.show == Show::Always || now.duration_since(self.started) >= SHOW_AFTER;
                if late_enough && (due || new_phase) {
                    self.draw(phase, done, total);
                    self.last_draw = Some(now);
                }
            }
        }
        if new_phase {
            self.phase = phase.to_string();
        }
        self.last = (done, total);
    }

    /// The work is over: a terminal's line is cleared; off a terminal the last phase's line is
    /// written.
    pub fn finish(&mut self) {
        if self.drawn {
            eprint!("\r\x1b[K");
            self.drawn = false;
        }
        if self.show == Show::Always && !self.tty {
            self.end_line();
            self.phase.clear();
        }
    }

    /// Off a terminal: the line of the phase that just ended. Work reports an item as it starts
    /// it, so a phase's last count is one short; a phase that ended did all of its total.
    fn end_line(&mut self) {
        if !self.phase.is_empty() {
            let total = self.last.1;
            let _ = writeln!(std::io::stderr(), "{}: {total}/{total}", self.phase);
        }
    }

    fn draw(&mut self, phase: &str, done: u64, total: u64) {
        let filled = (done.min(total) * WIDTH)
            .checked_div(total)
            .unwrap_or(WIDTH);
        eprint!(
            "\r\x1b[K{phase:<22} [{}{}] {done}/{total}",
            "#".repeat(filled as usize),
            " ".repeat((WIDTH - filled) as usize)
        );
        self.drawn = true;
    }
}

impl Drop for Bar {
    /// A terminal's line is cleared even when the work ended in an error (no phase line then:
    /// it did not complete).
    fn drop(&mut self) {
        if self.drawn {
            eprint!("\r\x1b[K");
        }
    }
}
