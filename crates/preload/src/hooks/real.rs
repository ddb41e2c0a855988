//! The real functions: the next definitions after ours.
//!
//! Each is resolved with `dlsym(RTLD_NEXT)` at its first call, not at load (a program that
//! never makes a socket call pays for none of them), except `close`, which is resolved at
//! load in every process: it is the hook that signal handlers call.
//!
//! Why a first-call dlsym is safe where it can happen (checked in glibc 2.36's source):
//! * in a forked child of a threaded program: `dlsym` takes only the loader's lock
//!   `GL(dl_load_lock)` (dlfcn/dlsym.c), and `fork` re-initialises that lock in the child,
//!   threaded or not (posix/fork.c: `__rtld_lock_initialize (GL(dl_load_lock))`, after
//!   `__malloc_fork_unlock_child`), so the child cannot inherit it held by a thread that
//!   no longer exists;
//! * concurrently in several threads: the slot is written with the same address by
//!   whichever thread gets there; the loader's lock is recursive and taken briefly;
//! * a successful `RTLD_NEXT` look-up allocates nothing (elf/dl-sym.c `do_sym`,
//!   dlfcn/dlerror.c `_dlerror_run` frees only an error left pending by an earlier failed
//!   dl call of the same thread).
//!
//! What stays: a signal handler that makes the first call of a hooked function in its
//! process while its own thread is inside malloc (with such a pending dl error) or inside
//! the loader (`dlopen`) is no longer async-signal-safe for that one call. `close`, the
//! call handlers make, is therefore resolved at load.

use super::real_fns::slots;
use core::ffi::c_char;
use core::sync::atomic::{AtomicUsize, Ordering};

/// Resolves `name_nul` (NUL-terminated) with `dlsym(RTLD_NEXT)`; 0 if there is none.
pub(super) fn resolve(name_nul: &str) -> usize {
    // SAFETY: name_nul is NUL-terminated; RTLD_NEXT asks for the next definition after
    // ours.
    unsafe { libc::dlsym(libc::RTLD_NEXT, name_nul.as_ptr() as *const c_char) as usize }
}

/// Resolves a function first called before our constructor ran (kept out of line: the
/// hooks' fast path is a load, a test and an indirect call).
#[cold]
#[inline(never)]
pub(super) fn resolve_slow(slot: &AtomicUsize, name_nul: &str) -> usize {
    let p = resolve(name_nul);
    slot.store(p, Ordering::Release);
    p
}

/// Resolves `close` at load, whatever the environment says: the `close` hook runs in
/// every program (also from signal handlers) and must never resolve lazily.
pub fn resolve_close() {
    slots::close.store(resolve("close\0"), Ordering::Release);
}

pub use super::real_fns::*;
