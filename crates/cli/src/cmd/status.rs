//! `sockwrap status --json`: the status report of a unit (or of the host, `--system`) as one
//! JSON document (docs/json.md). The report is made where the text one is, by
//! `systemd::status` and `host::status`, with stdout captured: one place decides what is
//! checked and what it says, and the JSON carries its verdict and its lines.

use crate::error::{Error, Result};
use crate::json::{Json, JsonExt as _};
use clap::ArgMatches;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::FromRawFd;
use std::process::ExitCode;

pub fn status_json(m: &ArgMatches) -> Result<ExitCode> {
    let system = m.get_flag("system");
    let (result, text) = capture_stdout(|| {
        if system {
            super::host::status(m)
        } else {
            super::systemd::status(m)
        }
    })?;
    let ok = match result {
        Ok(_) => true,
        Err(Error::Findings) => false,
        Err(e) => return Err(e),
    };
    let lines: Vec<Json> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(Json::from)
        .collect();
    let unit = m.get_one::<String>("unit").map(String::as_str);
    let root = m.get_one::<String>("root").map_or("/", String::as_str);
    let doc = crate::json::object([
        ("unit", unit.into()),
        ("system", system.into()),
        ("root", root.into()),
        ("ok", ok.into()),
        ("lines", Json::Array(lines)),
    ]);
    println!("{}", doc.to_json());
    if ok {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(Error::Findings)
    }
}

/// Runs `f` with file descriptor 1 pointing into a memory file, and returns what it (and any
/// process it started) wrote there.
fn capture_stdout<T>(f: impl FnOnce() -> T) -> Result<(T, String)> {
    let fail = |what: &str| {
        Error::Setup(format!(
            "status --json: {what}: {}",
            std::io::Error::last_os_error()
        ))
    };
    let _ = std::io::stdout().flush();
    // SAFETY: plain descriptor calls on descriptors this function owns (memfd, saved) or
    // on 1, which is restored before returning; the name is a NUL-terminated literal.
    let memfd = unsafe { libc::memfd_create(c"sockwrap-status".as_ptr(), libc::MFD_CLOEXEC) };
    if memfd < 0 {
        return Err(fail("memfd_create"));
    }
    // SAFETY: memfd is ours and open; File closes it.
    let mut file = unsafe { std::fs::File::from_raw_fd(memfd) };
    // SAFETY: see above.
    let saved = unsafe { libc::fcntl(1, libc::F_DUPFD_CLOEXEC, 3) };
    if saved < 0 {
        return Err(fail("dup"));
    }
    // SAFETY: see above.
    if unsafe { libc::dup2(memfd, 1) } < 0 {
        // SAFETY: saved is ours.
        unsafe { libc::close(saved) };
        return Err(fail("dup2"));
    }
    let out = f();
    let _ = std::io::stdout().flush();
    // SAFETY: puts the original descriptor 1 back and closes our copy of it.
    unsafe {
        libc::dup2(saved, 1);
        libc::close(saved);
    }
    let mut text = String::new();
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.read_to_string(&mut text))
        .map_err(|e| Error::Setup(format!("status --json: reading the report: {e}")))?;
    Ok((out, text))
}
