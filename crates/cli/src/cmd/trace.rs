//! `sockwrap trace [run options] [-o FILE] [--json] -- COMMAND...`: stays as the parent,
//! waits, prints the summary (to stderr: the program owns stdout), and exits with the
//! program's status, or dies of the same signal.

use crate::error::{Error, Result};
use crate::launch::{absolute, prepare};
use clap::ArgMatches;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitCode;

fn temp_record() -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    std::env::temp_dir().join(format!(
        "sockwrap-trace-{}-{nanos}.jsonl",
        std::process::id()
    ))
}

pub fn trace(m: &ArgMatches) -> Result<ExitCode> {
    let (path, keep) = match m.get_one::<String>("output") {
        Some(f) => (absolute(f), true),
        None => (temp_record(), false),
    };
    // A fresh record: created (or emptied) here, 0600, never through a symlink.
    let mut oo = std::fs::OpenOptions::new();
    oo.write(true).mode(0o600).custom_flags(libc::O_NOFOLLOW);
    if keep {
        oo.create(true).truncate(true);
    } else {
        oo.create_new(true);
    }
    oo.open(&path)
        .map_err(|e| Error::setup(format_args!("trace: {}: {e}", path.display())))?;
    let remove = || {
        if !keep {
            let _ = std::fs::remove_file(&path);
        }
    };
    let extra = vec![("SOCKWRAP_TRACE".to_string(), path.display().to_string())];
    let (mut cmd, prog) = prepare(m, extra).inspect_err(|_| remove())?;
    let mut child = cmd.spawn().map_err(|err| {
        remove();
        Error::Exec {
            program: prog.to_string_lossy().into_owned(),
            err,
        }
    })?;
    crate::signals::forward_to(child.id());
    let status = child.wait();
    let text = std::fs::read(&path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    remove();
    let why = match crate::reach::unreachable(&prog) {
        Some(u) => u.line(),
        None => "the program made no socket call through libc (none at all, or only through \
                  its own system calls: `sockwrap doctor PROGRAM` says more)"
            .to_string(),
    };
    crate::summary::print_summary(&text, m.get_flag("json"), true, Some(&why));
    let s =
        status.map_err(|e| Error::setup(format_args!("trace: waiting for the program: {e}")))?;
    if let Some(c) = s.code() {
        // Exit statuses are 0..=255; the truncation is what the kernel does too.
        return Ok(ExitCode::from(c as u8));
    }
    let sig = s.signal().unwrap_or(libc::SIGTERM);
    if matches!(
        sig,
        libc::SIGINT | libc::SIGTERM | libc::SIGHUP | libc::SIGPIPE | libc::SIGKILL
    ) {
        // Die of the same signal, so the shell sees what the program did.
        // SAFETY: restoring the default action and raising a signal at ourselves.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
    }
    Ok(ExitCode::from((128 + sig) as u8))
}
