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
use std::sync::atomic::{AtomicI32, Ordering};

/// The child's pid, for the signal handler that forwards SIGINT/SIGTERM/SIGHUP/SIGQUIT.
static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // A terminal's ^C already reached the whole process group, child included (si_code > 0,
    // SI_KERNEL): forwarding it would deliver it twice. kill(1) and friends (si_code <= 0)
    // reached only us: pass them on.
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let code = if info.is_null() {
        0
    } else {
        unsafe { (*info).si_code }
    };
    let pid = CHILD.load(Ordering::Relaxed);
    if code <= 0 && pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

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
    CHILD.store(child.id() as i32, Ordering::Relaxed);
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
        // SAFETY: installing a handler that only calls kill(2).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = forward as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
    let status = child.wait();
    let text = std::fs::read(&path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    remove();
    crate::summary::print_summary(&text, m.get_flag("json"), true);
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
