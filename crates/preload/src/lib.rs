//! libsockwrap.so: gives socket options to programs that never asked for them.
//!
//! Loaded with `LD_PRELOAD` (usually by `sockwrap run`). The constructor reads the policy
//! once (environment and policy file), resolves the real socket functions, and publishes an
//! immutable [`apply::Global`]. After that the hooks ([`hooks`]) only read: no allocation,
//! no locks, no lazy initialisation. Anything that goes wrong while loading leaves the
//! program untouched (fail-open) with one error line.
//!
//! Module map: `hooks` (exported C functions, all FFI, and their slots), `real` (dlsym
//! table), `sys` (raw system calls), `apply` (safe decision → setsockopt), `fdtable` (locks
//! per descriptor), `mptcp` (protocol swaps), `trace` (JSON lines), `log` (lines, counters,
//! exit summary), `arena` (the library's allocator).

#![deny(
    unsafe_op_in_unsafe_fn,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

pub mod apply;
pub mod arena;
pub mod fdtable;
pub mod hooks;
pub mod log;
pub mod mptcp;
pub mod real;
pub mod sys;
pub mod trace;

use core::ffi::{c_char, c_int};
use core::sync::atomic::{AtomicPtr, Ordering};
use sockwrap_policy::LogLevel;
use std::borrow::Cow;
use std::ffi::CStr;

/// Everything the library allocates comes from its own arena first (see `arena`).
#[global_allocator]
static ALLOC: arena::Arena = arena::Arena;

/// The published policy: null until the constructor has run (hooks then pass through).
///
/// Placed in `.data` rather than `.bss`, like the other flags every exec reads: `.data`
/// pages are written by the loader anyway (relocations), while a lone `.bss` page costs
/// each process one or two page faults (read: the zero page; write: a copy).
#[link_section = ".data"]
pub static GLOBAL: AtomicPtr<apply::Global> = AtomicPtr::new(core::ptr::null_mut());

#[used]
#[link_section = ".init_array"]
static INIT: unsafe extern "C" fn(c_int, *const *const c_char, *const *const c_char) =
    sockwrap_init;

#[used]
#[link_section = ".fini_array"]
static FINI: extern "C" fn() = sockwrap_fini;

/// Constructor. glibc passes argc/argv/envp to `.init_array` functions.
unsafe extern "C" fn sockwrap_init(
    argc: c_int,
    argv: *const *const c_char,
    _envp: *const *const c_char,
) {
    let argv0: Option<&CStr> = if argc > 0 && !argv.is_null() {
        // SAFETY: glibc passes the process's argv; argv[0] is a NUL-terminated string
        // that lives as long as the process.
        unsafe { (*argv).as_ref().map(|p| CStr::from_ptr(p)) }
    } else {
        None
    };
    // A panic here must not reach the program: catch it and stay pass-through.
    let _ = std::panic::catch_unwind(|| init(argv0));
    // Point every hook at its final target: the policy/trace work, or libc itself.
    hooks::route(!GLOBAL.load(Ordering::Acquire).is_null(), trace::on());
}

/// Whether the loader runs this process in secure mode (setuid, setcap): then, as the loader
/// itself does with LD_LIBRARY_PATH, sockwrap ignores what the environment says.
fn secure_mode() -> bool {
    // SAFETY: getauxval has no preconditions.
    unsafe { libc::getauxval(libc::AT_SECURE) != 0 }
}

fn init(argv0: Option<&CStr>) {
    real::resolve_close();
    if secure_mode() {
        return;
    }
    let vars = sockwrap_vars();
    if vars.is_empty() {
        // Nothing asked of us: stay a pass-through at the lowest start-up cost (nothing
        // allocated, nothing else resolved).
        return;
    }
    // argv[0] as text only where it is used (the trace's program name, program rules).
    let argv0 = || argv0.map(|a| a.to_string_lossy().into_owned());
    let loaded =
        sockwrap_policy::load(vars.iter().map(|(k, v)| (k.as_ref(), v.as_ref())), |path| {
            std::fs::read_to_string(path).map_err(|e| format!("cannot read the policy file: {e}"))
        });
    log::init(loaded.env.log_level, loaded.env.log_file.as_deref());
    real::resolve_all();
    if let Some(path) = loaded.env.trace.as_deref() {
        let argv0 = argv0();
        let prog = argv0
            .as_deref()
            .and_then(|a| a.rsplit('/').next())
            .unwrap_or("?");
        trace::init(path, prog);
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
        return;
    }
    let by_program = loaded
        .policy
        .rules()
        .iter()
        .any(|r| !r.matcher.program.is_empty());
    let all_rules = loaded.policy.rules().len();
    let policy = if by_program {
        let mut names: Vec<String> = Vec::new();
        if let Some(base) = argv0().as_deref().and_then(|a| a.rsplit('/').next()) {
            names.push(base.to_string());
        }
        if let Ok(exe) = std::fs::read_link("/proc/self/exe") {
            if let Some(base) = exe.file_name().and_then(|b| b.to_str()) {
                names.push(base.to_string());
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
        return; // no rule for this program: hooks stay pass-through
    }
    let g = Box::new(apply::Global::new(policy));
    GLOBAL.store(Box::into_raw(g), Ordering::Release);
    // SAFETY: registering a plain function with no arguments.
    unsafe { libc::pthread_atfork(None, None, Some(after_fork_child)) };
}

/// The `SOCKWRAP_*` variables, read straight from `environ` so that the rest of a large
/// environment is never copied (std::env::vars_os copies every variable). Valid UTF-8 (all
/// that sockwrap sets) is borrowed, not copied: the compiled policy can be kilobytes.
fn sockwrap_vars() -> Vec<(Cow<'static, str>, Cow<'static, str>)> {
    extern "C" {
        static environ: *const *const c_char;
    }
    fn text(b: &'static [u8]) -> Cow<'static, str> {
        match core::str::from_utf8(b) {
            Ok(s) => Cow::Borrowed(s),
            Err(_) => Cow::Owned(String::from_utf8_lossy(b).into_owned()),
        }
    }
    let mut out = Vec::new();
    // SAFETY: environ is the process's NULL-terminated array of NUL-terminated strings;
    // nothing else runs while the constructor does, and the strings are only read during
    // it (the borrows do not outlive `init`, whatever 'static says).
    unsafe {
        let mut p = environ;
        if p.is_null() {
            return out;
        }
        while !(*p).is_null() {
            let bytes: &'static [u8] = CStr::from_ptr(*p).to_bytes();
            if bytes.starts_with(b"SOCKWRAP_") {
                if let Some(eq) = bytes.iter().position(|&b| b == b'=') {
                    out.push((text(&bytes[..eq]), text(&bytes[eq + 1..])));
                }
            }
            p = p.add(1);
        }
    }
    out
}

extern "C" fn after_fork_child() {
    log::reset_after_fork();
}

extern "C" fn sockwrap_fini() {
    log::summary();
}
