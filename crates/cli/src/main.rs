//! `sockwrap`: parse the command line, run the subcommand, and own the exit status.
//! The command line is in `cli`, each subcommand in `cmd`, the exit codes in `error`.
mod cli;
mod cmd;
mod elf;
mod error;
mod files;
mod json;
mod launch;
mod load;
mod pidfd;
mod procnet;
mod reach;
mod signals;
mod summary;
mod timeline;
mod unitfile;

use std::process::ExitCode;

fn main() -> ExitCode {
    // `sockwrap check big.toml | head` must end quietly, not panic on a closed pipe.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let m = cli::command()
        .try_get_matches_from(&argv)
        .unwrap_or_else(|e| cli::with_dash_dash_tip(e, &argv).exit());
    cmd::dispatch(&m).unwrap_or_else(error::Error::report)
}
