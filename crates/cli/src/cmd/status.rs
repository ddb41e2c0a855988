//! `sockwrap status --json`: the status report of a unit (or of the host, `--system`) as one
//! JSON document (docs/json.md). The report is made where the text one is, by
//! `systemd::status` and `host::status`, with stdout captured: one place decides what is
//! checked and what it says, and the JSON carries its verdict and its lines.

use crate::error::{Error, Result};
use crate::json::{Json, JsonExt as _};
use clap::ArgMatches;
use std::io::{Read, Seek, SeekFrom, Write};
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
    let fail = |what: &str, e: rustix::io::Errno| {
        Error::Setup(format!(
            "status --json: {what}: {}",
            std::io::Error::from(e)
        ))
    };
    use rustix::fs::{memfd_create, MemfdFlags};
    use rustix::stdio::dup2_stdout;
    let _ = std::io::stdout().flush();
    let memfd = memfd_create("sockwrap-status", MemfdFlags::CLOEXEC)
        .map_err(|e| fail("memfd_create", e))?;
    let saved =
        rustix::io::fcntl_dupfd_cloexec(std::io::stdout(), 3).map_err(|e| fail("dup", e))?;
    dup2_stdout(&memfd).map_err(|e| fail("dup2", e))?;
    let out = f();
    let _ = std::io::stdout().flush();
    // The original descriptor 1 back; our copy of it closes when `saved` drops.
    let _ = dup2_stdout(&saved);
    let mut file = std::fs::File::from(memfd);
    let mut text = String::new();
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.read_to_string(&mut text))
        .map_err(|e| Error::Setup(format!("status --json: reading the report: {e}")))?;
    Ok((out, text))
}
