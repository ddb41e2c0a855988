//! What can go wrong in `sockwrap` itself, and the exit code each failure gives.
//!
//! Subcommands return `Result<ExitCode, Error>`; only `main` prints an [`Error`] (one line,
//! `sockwrap: WHAT: WHY`) and turns it into the process's status. The codes are listed in
//! `sockwrap --help`, in sockwrap(1) (EXIT STATUS) and in the user guide
//! (docs/guide/src/exit-status.md, summed up in the README); keep them in step with
//! [`EXIT_CODES`].

use std::fmt;
use std::process::ExitCode;

/// Findings were printed (a policy with errors in `check`, a problem `doctor` found, a unit
/// `status` reports as not enabled).
pub const FINDINGS: u8 = 1;
/// A bad command line: an unknown flag value, a `--to` that is no CIDR, a missing `-c` file,
/// a policy refused under `--strict`.
pub const USAGE: u8 = 2;
/// The machine is not as sockwrap needs it: libsockwrap.so not found, a file that cannot be
/// read or written, `systemctl daemon-reload` failing.
pub const SETUP: u8 = 3;
/// The program was found but could not be executed (as a shell says it).
pub const CANNOT_EXEC: u8 = 126;
/// The program was not found (as a shell says it).
pub const NOT_FOUND: u8 = 127;

/// The exit-status table, as shown in `--help` and the man page.
pub const EXIT_CODES: &str = "\
Exit status:
  run, trace     the program's own status (or 128+N when it died of signal N);
                 before the program starts, sockwrap's own failures use the codes below
  0              success
  1              findings: `check` found errors, `doctor` found a problem,
                 `status` found no sockwrap drop-in
  2              bad command line or value, missing policy file, policy refused (--strict;
                 with --kernel also errors, options BPF cannot set, or a hook or helper
                 this kernel lacks, named by a probe)
  3              setup: libsockwrap.so not found, a file cannot be read or written,
                 systemctl failed, --kernel without root or its programs failed to attach
  attach         1: the kernel refused an option (the rest was set); 2: no such PID,
                 a policy with errors, a kernel older than 5.6; 3: no permission (ptrace)
  attach --follow  0: the followed processes ended; 1: they did, an option was refused;
                 128+N: stopped by signal N, the processes moved back; 2: options BPF
                 cannot set, a feature this kernel lacks; 3: not root, no cgroup v2, BPF,
                 a process that cannot move
  126            the program exists but cannot be executed
  127            the program was not found";

#[derive(Debug)]
pub enum Error {
    /// Exit [`USAGE`].
    Usage(String),
    /// Exit [`SETUP`].
    Setup(String),
    /// `exec`/`spawn` of the program failed: [`NOT_FOUND`] or [`CANNOT_EXEC`].
    Exec {
        program: String,
        err: std::io::Error,
    },
    /// Already reported line by line; exit [`FINDINGS`] without another message.
    Findings,
}

impl Error {
    pub fn usage(msg: impl fmt::Display) -> Error {
        Error::Usage(msg.to_string())
    }

    pub fn setup(msg: impl fmt::Display) -> Error {
        Error::Setup(msg.to_string())
    }

    pub fn code(&self) -> u8 {
        match self {
            Error::Usage(_) => USAGE,
            Error::Setup(_) => SETUP,
            Error::Exec { err, .. } if err.kind() == std::io::ErrorKind::NotFound => NOT_FOUND,
            Error::Exec { .. } => CANNOT_EXEC,
            Error::Findings => FINDINGS,
        }
    }

    /// Prints the one line (if any) and gives the exit status.
    pub fn report(self) -> ExitCode {
        match &self {
            Error::Findings => {}
            Error::Usage(m) | Error::Setup(m) => eprintln!("sockwrap: {m}"),
            Error::Exec { program, err } => eprintln!("sockwrap: cannot run `{program}`: {err}"),
        }
        ExitCode::from(self.code())
    }
}

pub type Result<T> = std::result::Result<T, Error>;
