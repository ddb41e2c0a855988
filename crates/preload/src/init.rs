//! The constructor's work, in safe Rust: read the policy once (the launcher's compiled
//! form, or the environment and the policy file), open the log and the trace, resolve the
//! real functions, and publish an immutable [`Global`]. Anything that goes wrong leaves
//! the program untouched (fail-open) with one error line.

use crate::apply::Global;
use crate::{log, log_at, sys, trace};
use core::ffi::CStr;
use sockwrap_policy::LogLevel;
use std::borrow::Cow;

/// `vars`: the process's `SOCKWRAP_*` variables (name, value), borrowed from `environ`.
/// `resolve` resolves the real functions (after the log is open, so it can say where).
pub fn init(
    argv0: Option<&CStr>,
    vars: &[(&[u8], &[u8])],
    resolve: impl FnOnce(),
) -> Option<Box<Global>> {
    // Secure mode (setuid, setcap): as the loader itself does with LD_LIBRARY_PATH,
    // sockwrap ignores what the environment says.
    if sys::secure_mode() || vars.is_empty() {
        // Nothing asked of us: stay a pass-through at the lowest start-up cost (nothing
        // allocated, nothing else resolved).
        return None;
    }
    fn text(b: &[u8]) -> Cow<'_, str> {
        String::from_utf8_lossy(b)
    }
    let vars: Vec<(Cow<str>, Cow<str>)> = vars.iter().map(|(k, v)| (text(k), text(v))).collect();
    // argv[0]'s basename, only where it is used (the trace's program name, program rules).
    let base = || {
        argv0.map(|a| {
            let s = a.to_string_lossy();
            s.rsplit('/').next().unwrap_or("").to_string()
        })
    };
    let loaded =
        sockwrap_policy::load(vars.iter().map(|(k, v)| (k.as_ref(), v.as_ref())), |path| {
            std::fs::read_to_string(path).map_err(|e| format!("cannot read the policy file: {e}"))
        });
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
        .any(|r| !r.matcher.program.is_empty());
    let all_rules = loaded.policy.rules().len();
    let policy = if by_program {
        let mut names: Vec<String> = Vec::new();
        if let Some(b) = base() {
            names.push(b);
        }
        let mut buf = [0u8; 4096];
        if let Some(exe) = sys::readlink(c"/proc/self/exe", &mut buf) {
            if let Some(b) = exe.rsplit(|&c| c == b'/').next() {
                names.push(String::from_utf8_lossy(b).into_owned());
            }
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
    Some(Box::new(Global::new(policy)))
}
