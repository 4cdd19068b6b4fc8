//! Every byte the `huddle` binary prints goes through here, so that a
//! reader that goes away (`huddle history X | head -1`) ends the output
//! quietly instead of panicking in `println!`.
//!
//! Invariant: nothing in the CLI writes to stdout or stderr except through
//! this module (`outln!`, `out!`, [`note`]); a failed write to stdout marks
//! it closed, after which nothing more is written to it, long-running
//! commands stop at their next line, and `main` exits quietly with 0 (as
//! ripgrep does) unless the command itself failed.

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes to stdout; after the first failure (the reader left, the disk is
/// full) nothing more is written.
pub fn write(args: fmt::Arguments<'_>) {
    if closed() {
        return;
    }
    let mut out = std::io::stdout().lock();
    // Flushed per call: a line is out before the command goes on, and a
    // reader that left is noticed at the line it missed.
    if out.write_fmt(args).and_then(|()| out.flush()).is_err() {
        STDOUT_CLOSED.store(true, Ordering::Relaxed);
    }
}

/// Writes one line to stdout.
pub fn line(args: fmt::Arguments<'_>) {
    write(format_args!("{args}\n"));
}

/// Writes bytes made elsewhere (shell completions) to stdout.
pub fn bytes(b: &[u8]) {
    if closed() {
        return;
    }
    let mut out = std::io::stdout().lock();
    if out.write_all(b).and_then(|()| out.flush()).is_err() {
        STDOUT_CLOSED.store(true, Ordering::Relaxed);
    }
}

/// Whether stdout failed: its reader is gone, so there is no one to answer.
pub fn closed() -> bool {
    STDOUT_CLOSED.load(Ordering::Relaxed)
}

/// One line on stderr. A failure to write it is ignored: there is nowhere
/// left to say anything.
pub fn note(args: fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr().lock(), "{args}");
}

/// `println!` through [`line`].
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::output::line(format_args!($($arg)*))
    };
}

/// `print!` through [`write`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::output::write(format_args!($($arg)*))
    };
}
