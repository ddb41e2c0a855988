//! The constructor's work, in safe Rust: read the policy once (the launcher's compiled
//! form, or the environment and the policy file), open the log and the trace, and publish
//! an immutable [`Global`]. Anything that goes wrong leaves the program untouched
//! (fail-open) with one error line.

use crate::apply::Global;
#[allow(unused_imports)]
use crate::prelude::*;
use crate::{log, log_at, sys, trace};
use alloc::borrow::Cow;
use core::ffi::CStr;
use sockwrap_policy::compiled::{self, HostError};
use sockwrap_policy::LogLevel;

/// `vars`: the process's `SOCKWRAP_*` variables (name, value), borrowed from `environ`.
/// `resolve` lists the real functions at debug level (after the log is open, so it can say
/// where); otherwise each is resolved at its first call.
pub fn init(
    argv0: Option<&CStr>,
    vars: &[(&[u8], &[u8])],
    resolve: impl FnOnce(),
) -> Option<Box<Global>> {
    // Secure mode (setuid, setcap): as the loader itself does with LD_LIBRARY_PATH,
    // sockwrap ignores what the environment says; only the host-wide policy (a root-owned
    // file) applies there.
    let vars: &[(&[u8], &[u8])] = if sys::secure_mode() { &[] } else { vars };
    fn text(b: &[u8]) -> Cow<'_, str> {
        // The same as from_utf8_lossy, which walks byte by byte (~7 instructions a byte:
        // 35,000 for a 50-rule SOCKWRAP_POLICY); from_utf8 checks ASCII a word at a time.
        match core::str::from_utf8(b) {
            Ok(s) => Cow::Borrowed(s),
            Err(_) => String::from_utf8_lossy(b),
        }
    }
    let from_env = vars
        .iter()
        .any(|(k, _)| core::str::from_utf8(k).is_ok_and(sockwrap_policy::env::is_policy_var));
    // No policy variables: the host-wide policy, if `sockwrap enable --system` wrote one
    // and anything in it can be for this program. Otherwise nothing was asked of us: stay
    // a pass-through at the lowest start-up cost (nothing allocated, nothing resolved).
    let host = if from_env {
        None
    } else {
        host_text(argv0.map(|a| basename(a.to_bytes())))
    };
    if host.is_none() && vars.is_empty() {
        return None;
    }
    // The published value's block first, the policy's after it: the policy's last block is
    // the room reserved for its plans (allocated, not written: see sockwrap_policy's
    // `once`), which then ends the arena's used part instead of pushing the Global onto a
    // page of its own (one more page fault per exec).
    let mut global = Box::new(Global::new(sockwrap_policy::Policy::default(), None));
    let vars: Vec<(Cow<str>, Cow<str>)> = vars.iter().map(|(k, v)| (text(k), text(v))).collect();
    // argv[0]'s basename, only where it is used (the trace's program name, program rules).
    let base = || {
        argv0.map(|a| {
            let s = a.to_string_lossy();
            s.rsplit('/').next().unwrap_or("").to_string()
        })
    };
    let pairs = vars.iter().map(|(k, v)| (k.as_ref(), v.as_ref()));
    let loaded = match &host {
        Some(text) => sockwrap_policy::load_host(pairs, text.as_deref().map_err(|e| *e)),
        None => sockwrap_policy::load(pairs, |path| {
            let bytes = sys::read_file(path)
                .map_err(|e| format!("cannot read the policy file: {}", sys::errno_name(e.0)))?;
            String::from_utf8(bytes).map_err(|_| "the policy file is not UTF-8 text".to_string())
        }),
    };
    log::init(loaded.env.log_level, loaded.env.log_file.as_deref());
    resolve();
    if let Some(path) = loaded.env.trace.as_deref() {
        let prog = base();
        trace::init(path, prog.as_deref().unwrap_or("?"));
    }
    for var in &loaded.env.unknown {
        log_at!(
            LogLevel::Warn,
            "{var}: unknown variable, ignored (see `sockwrap run --help` for the options)"
        );
    }
    if let Some(first) = loaded.errors.first() {
        let more = loaded.errors.len() - 1;
        if more > 0 {
            log_at!(
                LogLevel::Error,
                "{first} (and {more} more; `sockwrap check` lists them); no policy applied, the program runs untouched"
            );
        } else {
            log_at!(
                LogLevel::Error,
                "{first}; no policy applied, the program runs untouched"
            );
        }
        return None;
    }
    let by_program = loaded
        .policy
        .rules()
        .iter()
        .any(|r| r.matcher.uses_program());
    let all_rules = loaded.policy.rules().len();
    let policy = if by_program {
        let mut names: Vec<String> = Vec::new();
        if let Some(b) = base() {
            names.push(b);
        }
        let mut buf = [0u8; 256];
        if let Some(b) = sys::exe_basename(&mut buf) {
            names.push(String::from_utf8_lossy(b).into_owned());
        }
        let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let p = loaded.policy.for_program(&name_refs);
        log_at!(LogLevel::Debug, "program {:?}", names);
        p
    } else {
        loaded.policy // no rule names a program: no second build of the policy
    };
    log_at!(
        LogLevel::Debug,
        "{} of {} rules apply, on_error={:?}",
        policy.rules().len(),
        all_rules,
        policy.on_error
    );
    if policy.is_empty() {
        return None; // no rule for this program: hooks stay pass-through
    }
    *global = Global::new(policy, loaded.env.seed);
    Some(global)
}

fn basename(path: &[u8]) -> &[u8] {
    path.rsplit(|&c| c == b'/').next().unwrap_or(path)
}

/// The host-wide policy file, whole, when it may hold a rule for this program: `None` when
/// there is no such file (the usual case: one failed `open`) or when its first line shows
/// that no rule names this program (one `open`, one `read`, one `close`).
fn host_text(argv0: Option<&[u8]>) -> Option<Result<String, HostError>> {
    let fd = sys::open(compiled::HOST_FILE, libc::O_RDONLY | libc::O_CLOEXEC).ok()?;
    let r = read_host(fd, argv0);
    sys::close(fd);
    r
}

// Out of line: its 5 KiB of buffers would otherwise sit in the constructor's frame and
// reach a stack page of their own in every exec, including those with no host file.
#[inline(never)]
fn read_host(fd: i32, argv0: Option<&[u8]>) -> Option<Result<String, HostError>> {
    let mut first = [0u8; compiled::HOST_HEAD_MAX];
    let n = sys::read_full(fd, &mut first);
    let head = match compiled::host_head(&first[..n]) {
        Ok(h) => h,
        Err(e) => return Some(Err(e)),
    };
    // The names a program is started by: argv[0] and the path exec'd. Not the resolved
    // /proc/self/exe (~20 µs per exec, paid by every program of the host): a host-wide rule
    // for the target of a symlink does not see a program started through the link.
    if !head.all
        && !argv0.is_some_and(|a| head.names(a))
        && !sys::exec_fn_basename().is_some_and(|e| head.names(e))
    {
        return None;
    }
    let total = head.head_len + head.body_len;
    let mut text = Vec::with_capacity(total + 1);
    text.extend_from_slice(&first[..n]);
    if n == first.len() {
        // The rest, and one byte more to see that the file ends where the head says.
        let mut chunk = [0u8; 4096];
        while text.len() <= total {
            let got = sys::read_full(fd, &mut chunk);
            text.extend_from_slice(&chunk[..got]);
            if got < chunk.len() {
                break;
            }
        }
    }
    if text.len() != total {
        return Some(Err(HostError::Damaged));
    }
    Some(String::from_utf8(text).map_err(|_| HostError::Damaged))
}
