//! The C boundary: the exported functions that stand in for libc's, and the constructor.
//!
//! Every hook is one row of the `hooks!` table at the end of this file: its C signature,
//! whether its trace line carries a duration, whether debug logging resolves it at load,
//! what its slot holds when there is nothing to do (libc's function, or with `pass shell`
//! a shell around it) and what to do when libc has no such function. From that row the
//! macro writes
//! * the real function's slot and caller (`real::NAME`, resolved with
//!   `dlsym(RTLD_NEXT)`);
//! * the exported symbol: one jump through its own slot, which the constructor points at
//!   libc itself (no policy, no trace: `pass::NAME`), at the policy work (`work::NAME`), or
//!   at the traced call (one generic wrapper, [`traced`], around `work::NAME` and
//!   `describe::NAME`).
//!
//! The hand-written parts, one file each: `work` (each hook's work), `describe` (each
//! hook's trace line), `args` (raw pointers to safe values), `real` (why resolving at the
//! first call is safe). `work`, `describe` and `args` are the only code that reads the
//! program's raw pointers: each turns them into safe values once ([`SockAddr`], byte
//! slices) and hands them, with the real call as a closure, to [`crate::calls`], where the
//! decisions are.

use crate::apply::Global;
use crate::calls;
#[allow(unused_imports)]
use crate::prelude::*;
use crate::sys::{self, SockAddr};
use crate::trace::{self, Ev};
use core::ffi::{c_char, c_int, c_void, CStr};
use core::net::SocketAddr;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use libc::{sockaddr, socklen_t};

/// The published policy: null until the constructor has run (hooks then pass through).
///
/// Placed in `.data` rather than `.bss`, like the other flags every exec reads: `.data`
/// pages are written by the loader anyway (relocations), while a lone `.bss` page costs
/// each process one or two page faults (read: the zero page; write: a copy).
#[link_section = ".data"]
static GLOBAL: AtomicPtr<Global> = AtomicPtr::new(core::ptr::null_mut());

fn global() -> Option<&'static Global> {
    let p = GLOBAL.load(Ordering::Acquire);
    // SAFETY: GLOBAL is either null or a leaked Box that lives for the whole process (see
    // `publish`).
    unsafe { p.as_ref() }
}

/// Makes the policy visible to every hook, for the rest of the process's life.
fn publish(g: Box<Global>) {
    GLOBAL.store(Box::into_raw(g), Ordering::Release);
}

/// In the parent, before a fork: the `fail` choices count the fork (the child's ordinal).
extern "C" fn before_fork() {
    if let Some(g) = global() {
        g.chooser.before_fork();
    }
}

extern "C" fn after_fork_child() {
    crate::log::reset_after_fork();
    trace::after_fork_child();
    calls::after_fork_child();
    if let Some(g) = global() {
        g.chooser.after_fork_child();
    }
}

// ---- the constructor ----

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
    envp: *const *const c_char,
) {
    let argv0: Option<&CStr> = if argc > 0 && !argv.is_null() {
        // SAFETY: glibc passes the process's argv; argv[0] is a NUL-terminated string
        // that lives as long as the process.
        unsafe { (*argv).as_ref().map(|p| CStr::from_ptr(p)) }
    } else {
        None
    };
    real::resolve_close();
    // SAFETY: envp is the environment glibc passes to constructors (`environ` as it is
    // now); the constructor runs before any other code of the program reads or changes it.
    let vars = unsafe { sockwrap_vars(envp) };
    if let Some(g) = crate::init::init(argv0, &vars, real_fns::resolve_all) {
        publish(g);
    }
    // A forked child starts its own trace pid, exit-summary counts (info level), name and
    // action tables (their locks) and `fail` choices (a stream of its own, see `seed`).
    // Only then are fork handlers registered: glibc's __register_atfork is a symbol
    // binding and two page faults in every exec.
    let needs_fork_handler = trace::on()
        || global().is_some_and(|g| {
            crate::log::enabled(sockwrap_policy::LogLevel::Info)
                || g.policy.any_host()
                || g.policy.any_actions()
        });
    if needs_fork_handler {
        // SAFETY: registering plain functions with no arguments.
        unsafe { libc::pthread_atfork(Some(before_fork), None, Some(after_fork_child)) };
    }
    // Point every hook at its final target: the policy/trace work, or libc itself.
    route(global().is_some(), trace::on());
}

extern "C" fn sockwrap_fini() {
    // The sockets still open at exit end with the process: their counters now.
    if trace::on() {
        trace::ending_range("exit", 0, u32::MAX);
    }
    crate::log::summary();
}

/// The `SOCKWRAP_*` variables of `envp`, read in place so that the rest of a large
/// environment is never copied (std::env::vars_os copies every variable). The strings are
/// borrowed: the compiled policy can be kilobytes. `envp` is the constructor's argument,
/// not libc's `environ`: a data symbol is bound by a look-up at every exec.
///
/// # Safety
/// `envp` is null or a NULL-terminated array of NUL-terminated strings, and nothing may
/// change the environment while the returned borrows are used (the constructor uses them
/// and drops them before the program's own code runs).
unsafe fn sockwrap_vars(envp: *const *const c_char) -> Vec<(&'static [u8], &'static [u8])> {
    let mut out = Vec::new();
    // SAFETY: as the caller promises.
    unsafe {
        let mut p = envp;
        if p.is_null() {
            return out;
        }
        while !(*p).is_null() {
            // The prefix first, byte by byte: only our variables are measured (strlen),
            // not the whole environment.
            let prefix = b"SOCKWRAP_";
            let mut i = 0;
            while i < prefix.len() && *(*p).add(i) as u8 == prefix[i] {
                i += 1;
            }
            if i == prefix.len() {
                let bytes: &'static [u8] = CStr::from_ptr(*p).to_bytes();
                if let Some(eq) = bytes.iter().position(|&b| b == b'=') {
                    out.push((&bytes[..eq], &bytes[eq + 1..]));
                }
            }
            p = p.add(1);
        }
    }
    out
}

// One file per job; the macro-made modules (`real_fns`, `target`, `first`, `work_c`,
// `full`, `pass`) are written by `hooks!` below from the table.
mod args;
#[allow(clippy::too_many_arguments)]
mod describe;
pub mod real;
mod work;

use args::*;

/// The one traced-call wrapper: runs the call (timed when its trace line carries a
/// duration), then writes its line with the call's result and errno, and leaves errno as
/// the call left it.
#[inline]
fn traced<R: Copy>(
    timed: bool,
    call: impl FnOnce() -> R,
    line: impl FnOnce(R, i32, Option<u64>),
) -> R {
    let t0 = if timed { trace::now_mono() } else { 0 };
    let r = call();
    if trace::on() {
        let errno = sys::errno();
        let dur = timed.then(|| trace::now_mono().saturating_sub(t0));
        line(r, errno, dur);
        sys::set_errno(errno);
    }
    r
}

/// Set by the constructor once it has decided (policy or not, trace or not).
/// In `.data`, not `.bss`: with the other statics every exec touches (see `GLOBAL`).
#[link_section = ".data"]
static DECIDED: AtomicBool = AtomicBool::new(false);

/// Writes everything a hook is from its row: see the module note.
macro_rules! hooks {
    ($( $name:ident ( $($arg:ident : $ty:ty),* ) -> $ret:ty, $timing:ident, $resolve:ident, $(pass $pass:ident,)? missing $missing:block ; )*) => {
        /// The real functions' addresses (0 = not yet resolved) and callers.
        #[allow(non_upper_case_globals)]
        mod real_fns {
            use super::*;

            pub mod slots {
                use super::*;
                // In `.data`, not `.bss`: the constructor writes them in every exec, and
                // .data's page is written anyway (relocations), a .bss page would be one
                // more page fault.
                $( #[link_section = ".data"] pub static $name: AtomicUsize = AtomicUsize::new(0); )*
            }

            $(
                /// Calls the real function (what the row says when there is none).
                ///
                /// # Safety
                /// C's contract for the function of this name.
                #[allow(clippy::missing_safety_doc, unused_variables)]
                #[inline(always)]
                pub unsafe fn $name($($arg: $ty),*) -> $ret {
                    let mut p = slots::$name.load(Ordering::Acquire);
                    if p == 0 {
                        p = super::real::resolve_slow(&slots::$name, concat!(stringify!($name), "\0"));
                    }
                    if p == 0 {
                        return $missing;
                    }
                    // SAFETY: p is the address dlsym gave for this symbol, whose C type is
                    // the one declared in the row.
                    let f: unsafe extern "C" fn($($ty),*) -> $ret = unsafe { core::mem::transmute(p) };
                    // SAFETY: the caller's arguments are passed through unchanged.
                    unsafe { f($($arg),*) }
                }
            )*

            /// At debug level, resolves every real function of an `eager` row now and logs
            /// each (`Loading socket => 0x7f…`). Otherwise nothing: each real function is
            /// resolved at its first call (see [`super::real`] for why that is safe), so a
            /// program that never calls one never pays its dlsym (~800 instructions each).
            pub fn resolve_all() {
                if !crate::log::enabled(sockwrap_policy::LogLevel::Debug) {
                    return;
                }
                $(
                    if hooks!(@eager $resolve) {
                        let p = super::real::resolve(concat!(stringify!($name), "\0"));
                        slots::$name.store(p, Ordering::Release);
                        crate::log_at!(sockwrap_policy::LogLevel::Debug, "Loading {} => {:#x}", stringify!($name), p);
                    }
                )*
            }

        }

        /// Where each exported hook jumps.
        #[allow(non_upper_case_globals)]
        mod target {
            use super::*;
            $( pub static $name: AtomicPtr<()> = AtomicPtr::new(first::$name as *mut ()); )*
        }

        /// The slots' first occupants: decide on every call until the constructor has.
        mod first {
            use super::*;
            $(
                /// # Safety
                /// C's contract for the function of this name.
                pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
                    if GLOBAL.load(Ordering::Acquire).is_null() && !trace::on() {
                        // SAFETY: arguments passed through.
                        let r = unsafe { real::$name($($arg),*) };
                        if DECIDED.load(Ordering::Acquire) {
                            // Nothing to do in this process: from now on, libc directly.
                            let p = real_fns::slots::$name.load(Ordering::Acquire);
                            if p != 0 {
                                target::$name.store(p as *mut (), Ordering::Release);
                            }
                        }
                        return r;
                    }
                    // SAFETY: arguments passed through.
                    unsafe { full::$name($($arg),*) }
                }
            )*
        }

        /// The policy work alone, for the slots when the trace is off.
        mod work_c {
            use super::*;
            $(
                /// # Safety
                /// C's contract for the function of this name.
                pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
                    // SAFETY: arguments passed through.
                    unsafe { work::$name($($arg),*) }
                }
            )*
        }

        /// The work and its trace line.
        mod full {
            use super::*;
            $(
                /// # Safety
                /// C's contract for the function of this name.
                #[allow(clippy::unused_unit)]
                pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
                    traced(
                        hooks!(@timed $timing),
                        // SAFETY: arguments passed through.
                        || unsafe { work::$name($($arg),*) },
                        // SAFETY: the same arguments, after the call.
                        |r, errno, dur| {
                            #[allow(unused_unsafe)]
                            // SAFETY: the same arguments, after the call.
                            unsafe { describe::$name($($arg,)* r, errno, dur) }
                        },
                    )
                }
            )*
        }

        $(
            /// Exported hook: one jump through its slot (see the module note).
            ///
            /// # Safety
            /// C's contract for the function of this name.
            #[no_mangle]
            pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
                let p = target::$name.load(Ordering::Acquire);
                // SAFETY: every slot holds a function of exactly this C type: `first::NAME`,
                // `work_c::NAME`, `full::NAME`, or the address dlsym gave for the real NAME.
                let f: unsafe extern "C" fn($($ty),*) -> $ret = unsafe { core::mem::transmute(p) };
                // SAFETY: arguments passed through.
                unsafe { f($($arg),*) }
            }
        )*

        /// What a slot holds when there is nothing to do: libc's function (0 while it is
        /// not resolved: the slot keeps `first::NAME`), or for a row marked `pass shell` a
        /// shell around `real::NAME`, so that the row's `missing` fallback still runs where
        /// libc has no such function (`closefrom` before glibc 2.34).
        mod pass {
            use super::*;
            $(
                pub fn $name() -> usize {
                    hooks!(@pass [$($pass)?] $name($($arg: $ty),*) -> $ret)
                }
            )*
        }

        /// Called once by the constructor: `policy` = a policy was published, `tracing` =
        /// the trace is on. With neither, each slot takes libc's own function.
        fn route(policy: bool, tracing: bool) {
            $(
                if tracing {
                    target::$name.store(full::$name as *mut (), Ordering::Release);
                } else if policy {
                    target::$name.store(work_c::$name as *mut (), Ordering::Release);
                } else {
                    let p = pass::$name();
                    if p != 0 {
                        target::$name.store(p as *mut (), Ordering::Release);
                    }
                }
            )*
            DECIDED.store(true, Ordering::Release);
        }
    };
    (@timed timed) => { true };
    (@timed untimed) => { false };
    (@eager eager) => { true };
    (@eager lazy) => { false };
    (@pass [] $name:ident($($arg:ident : $ty:ty),*) -> $ret:ty) => {
        real_fns::slots::$name.load(Ordering::Acquire)
    };
    (@pass [shell] $name:ident($($arg:ident : $ty:ty),*) -> $ret:ty) => {{
        /// # Safety
        /// C's contract for the function of this name.
        unsafe extern "C" fn shell($($arg: $ty),*) -> $ret {
            // SAFETY: arguments passed through.
            unsafe { real::$name($($arg),*) }
        }
        shell as *const () as usize
    }};
}

hooks! {
    socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int, untimed, eager, missing { enosys() };
    connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int, timed, eager, missing { enosys() };
    bind(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int, untimed, eager, missing { enosys() };
    listen(fd: c_int, backlog: c_int) -> c_int, untimed, eager, missing { enosys() };
    accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int, timed, eager, missing { enosys() };
    accept4(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> c_int, timed, eager, missing { enosys() };
    setsockopt(fd: c_int, level: c_int, name: c_int, val: *const c_void, len: socklen_t) -> c_int, untimed, eager, missing { enosys() };
    getsockopt(fd: c_int, level: c_int, name: c_int, val: *mut c_void, len: *mut socklen_t) -> c_int, untimed, eager, missing { enosys() };
    close(fd: c_int) -> c_int, untimed, eager, missing { enosys() };
    close_range(first: libc::c_uint, last: libc::c_uint, flags: c_int) -> c_int, untimed, eager, missing { enosys() };
    closefrom(first: c_int) -> (), untimed, eager, pass shell, missing { sys::close_from(first.max(0) as u32) };
    dup(old: c_int) -> c_int, untimed, eager, missing { enosys() };
    dup2(old: c_int, new: c_int) -> c_int, untimed, eager, missing { enosys() };
    dup3(old: c_int, new: c_int, flags: c_int) -> c_int, untimed, eager, missing { enosys() };
    getpeername(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int, untimed, lazy, missing { enosys() };
    getaddrinfo(node: *const c_char, service: *const c_char, hints: *const libc::addrinfo, res: *mut *mut libc::addrinfo) -> c_int, timed, lazy, missing { libc::EAI_FAIL };
    gethostbyname(name: *const c_char) -> *mut libc::hostent, timed, lazy, missing { core::ptr::null_mut() };
    gethostbyname2(name: *const c_char, af: c_int) -> *mut libc::hostent, timed, lazy, missing { core::ptr::null_mut() };
    gethostbyname_r(name: *const c_char, ret: *mut libc::hostent, buf: *mut c_char, buflen: libc::size_t, result: *mut *mut libc::hostent, h_errnop: *mut c_int) -> c_int, timed, lazy, missing { libc::ENOSYS };
    gethostbyname2_r(name: *const c_char, af: c_int, ret: *mut libc::hostent, buf: *mut c_char, buflen: libc::size_t, result: *mut *mut libc::hostent, h_errnop: *mut c_int) -> c_int, timed, lazy, missing { libc::ENOSYS };
}

/// A real function libc does not have: fail as the kernel does for an unknown call.
fn enosys() -> c_int {
    sys::set_errno(libc::ENOSYS);
    -1
}
