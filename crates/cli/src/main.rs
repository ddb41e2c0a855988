//! `sockwrap`: parse the command line, run the subcommand, and own the exit status.
//! The command line is in `cli`, each subcommand in `cmd`, the exit codes in `error`.
//!
//! `unsafe` is denied here and allowed only in the modules that make system calls rustix
//! has no safe form for: `pidfd` (getsockopt/setsockopt by level and number), `signals`
//! (the handler, SIGPIPE, raising and sending a signal) and `child` (the user database, the
//! child's setup between fork and exec). Each block says why it is sound (`// SAFETY:`).
#![deny(unsafe_code, clippy::undocumented_unsafe_blocks)]
#[allow(unsafe_code)]
mod child;
mod cli;
mod cmd;
mod elf;
mod error;
mod files;
mod json;
mod launch;
mod load;
#[allow(unsafe_code)]
mod pidfd;
mod procnet;
mod reach;
#[allow(unsafe_code)]
mod signals;
mod summary;
mod timeline;
mod unitfile;

use std::process::ExitCode;

fn main() -> ExitCode {
    // `sockwrap check big.toml | head` must end quietly, not panic on a closed pipe.
    signals::default_sigpipe();
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let m = cli::command()
        .try_get_matches_from(&argv)
        .unwrap_or_else(|e| cli::with_dash_dash_tip(e, &argv).exit());
    cmd::dispatch(&m).unwrap_or_else(error::Error::report)
}
