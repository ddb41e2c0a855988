//! This thread's own state ([`Thread`], in `thread.c`) and new threads ([`spawn`]).

use super::lazy;
#[allow(unused_imports)]
use crate::prelude::*;
use core::mem::{size_of, MaybeUninit};
use core::net::SocketAddr;

/// Runs `f` on a new detached thread with the program's signals blocked (so that none of
/// its handlers ever runs on it). False if the thread could not be made. pthread_create
/// is bound at its first call (lazy.c), not at load. glibc's sigfillset and pthread_sigmask
/// leave its internal SIGCANCEL and SIGSETXID open (glibc's setuid signals every thread
/// with SIGSETXID and waits for each: tests/test_actions.py::
/// test_setuid_while_a_connect_is_delayed_does_not_hang).
pub fn spawn(f: Box<dyn FnOnce() + Send>) -> bool {
    extern "C" fn start(arg: *mut core::ffi::c_void) -> *mut core::ffi::c_void {
        // SAFETY: arg is the Box<Box<dyn FnOnce>> leaked by `spawn` for this thread alone.
        let f = unsafe { Box::from_raw(arg as *mut Box<dyn FnOnce() + Send>) };
        f();
        core::ptr::null_mut()
    }
    let arg = Box::into_raw(Box::new(f)) as *mut core::ffi::c_void;
    // SAFETY: `start` has the C signature pthread_create wants; `arg` is reclaimed if the
    // thread is not created (lazy.c: the attribute and signal-mask dance, in C).
    unsafe {
        if lazy::sockwrap_spawn_blocked(start, arg) != 0 {
            drop(Box::from_raw(arg as *mut Box<dyn FnOnce() + Send>));
            return false;
        }
    }
    true
}

/// This thread's own state (`thread.c`: zeroed when the thread starts; every field means
/// "nothing known" at zero). Cells, so `&Thread` never leaves its thread.
#[repr(C)]
pub struct Thread {
    /// (pid, tid) as last asked of the kernel (the trace).
    pid: core::cell::Cell<i32>,
    tid: core::cell::Cell<i32>,
    /// The peer of the last accepted socket.
    accepted: FdNote<SocketAddr>,
    /// What sockwrap did to the last connect.
    action: FdNote<ActionNote>,
}

/// A value recorded for one descriptor, taken once by the trace line that follows.
#[repr(C)]
struct FdNote<T> {
    /// fd + 1 of the descriptor whose value is in `value` (0: none).
    fd1: core::cell::Cell<i32>,
    value: core::cell::Cell<MaybeUninit<T>>,
}

impl<T: Copy> FdNote<T> {
    fn set(&self, fd: i32, v: T) {
        self.value.set(MaybeUninit::new(v));
        self.fd1.set(fd.wrapping_add(1));
    }

    /// The value recorded for `fd`, if that is the descriptor; clears the record.
    fn take(&self, fd: i32) -> Option<T> {
        let was = self.fd1.replace(0);
        if was != 0 && was == fd.wrapping_add(1) {
            // SAFETY: fd1 is non-zero only after `set` wrote `value`.
            Some(unsafe { self.value.get().assume_init() })
        } else {
            None
        }
    }
}

/// What sockwrap did to a connect, for its trace line (written right after, on the same
/// thread).
#[derive(Clone, Copy, Debug)]
pub struct ActionNote {
    /// The connect failed with this errno by a `deny` (or 0).
    pub denied: i32,
    /// The connect failed with this errno by a `fail` choice (or 0).
    pub failed: i32,
    pub delay_ms: u32,
    /// Where a `redirect` sent it.
    pub redirected: Option<SocketAddr>,
}

/// The C block is 128 bytes with 8-byte alignment.
const _: () = assert!(size_of::<Thread>() <= 128 && core::mem::align_of::<Thread>() <= 8);

// The pointer is opaque to C: thread.c only hands out its block.
#[allow(improper_ctypes)]
extern "C" {
    fn sockwrap_thread() -> *mut Thread;
}

/// The calling thread's [`Thread`].
pub fn thread() -> &'static Thread {
    // SAFETY: thread.c returns this thread's block: zeroed at thread start (a valid Thread:
    // integers and a MaybeUninit), large and aligned enough (checked above), and alive
    // until the thread exits. Thread is not Sync, so the reference cannot reach another
    // thread or a static, and so cannot outlive the thread.
    unsafe { &*sockwrap_thread() }
}

impl Thread {
    /// (pid, tid) as last recorded.
    pub fn ids(&self) -> (i32, i32) {
        (self.pid.get(), self.tid.get())
    }

    pub fn set_ids(&self, pid: i32, tid: i32) {
        self.pid.set(pid);
        self.tid.set(tid);
    }

    pub fn set_accepted(&self, fd: i32, peer: SocketAddr) {
        self.accepted.set(fd, peer);
    }

    /// The peer recorded for `fd` by the accept that just returned it; clears the record.
    pub fn take_accepted(&self, fd: i32) -> Option<SocketAddr> {
        self.accepted.take(fd)
    }

    pub fn set_action(&self, fd: i32, note: ActionNote) {
        self.action.set(fd, note);
    }

    /// The action recorded for `fd` by the connect that just returned; clears the record.
    pub fn take_action(&self, fd: i32) -> Option<ActionNote> {
        self.action.take(fd)
    }
}
