//! Raw system calls used by the library for its own work, the socket-address type, and
//! the few primitives no_std lacks (locks, per-thread state).
//!
//! Nothing here calls libc's socket functions by name: those symbols resolve to our own hooks.
//! The library's own system calls are the `syscall` instruction itself ([`syscall!`]): they
//! cannot recurse into a hook, never touch `errno` (the kernel's -errno comes back as the
//! value), and bind no libc symbol at load. The real functions the hooks call do set
//! `errno`, so every hook saves it on entry and restores it ([`ErrnoGuard`]) before it hands
//! control back or calls the real function: the program only ever sees the errno of its own
//! call.
//!
//! [`SockAddr`] owns every conversion between C socket addresses and Rust's: the rest of
//! the library asks it (socket2's `SockAddr` is the model).
//!
//! One file per seam, each re-exported here so that callers write `sys::X`:
//! * this file: the system-call entry ([`raw`], [`syscall!`]), [`Errno`] and the errno
//!   slot ([`ErrnoGuard`]), the rarely bound libc functions ([`lazy`]);
//! * `addr`: [`SockAddr`];
//! * `socket`: the socket system calls (setsockopt, getsockopt, bind, connect, ...);
//! * `process`: files, clocks, randomness, the process itself;
//! * `sync`: [`Spin`] and [`SetOnce`];
//! * `thread`: the per-thread block (`thread::Thread`) and [`spawn`].

// `syscall!` is defined before the submodules so that they can use it.
/// The library's own system calls (src/syscall.c), one per number of arguments: the
/// kernel's answer as it is, a value or -errno (-4095..-1), with errno left alone. Not
/// libc's `syscall()`: a Rust call to it goes through a GOT entry, which the loader binds
/// with a symbol look-up (~600 instructions) in every exec of every program under sockwrap.
pub mod raw {
    use libc::c_long as L;
    extern "C" {
        pub fn sockwrap_syscall0(nr: L) -> L;
        pub fn sockwrap_syscall1(nr: L, a: L) -> L;
        pub fn sockwrap_syscall2(nr: L, a: L, b: L) -> L;
        pub fn sockwrap_syscall3(nr: L, a: L, b: L, c: L) -> L;
        pub fn sockwrap_syscall4(nr: L, a: L, b: L, c: L, d: L) -> L;
        pub fn sockwrap_syscall5(nr: L, a: L, b: L, c: L, d: L, e: L) -> L;
        pub fn sockwrap_syscall6(nr: L, a: L, b: L, c: L, d: L, e: L, f: L) -> L;
    }
}

/// `syscall!(nr, args...)`: the system call `nr` with up to six arguments, each cast to a
/// long, by [`raw`]: the kernel's answer, a value or -errno.
macro_rules! syscall {
    (@call $f:ident, $nr:expr $(, $a:expr)*) => {
        $crate::sys::raw::$f($nr as libc::c_long $(, ($a) as libc::c_long)*)
    };
    ($nr:expr $(,)?) => { syscall!(@call sockwrap_syscall0, $nr) };
    ($nr:expr, $a:expr $(,)?) => { syscall!(@call sockwrap_syscall1, $nr, $a) };
    ($nr:expr, $a:expr, $b:expr $(,)?) => { syscall!(@call sockwrap_syscall2, $nr, $a, $b) };
    ($nr:expr, $a:expr, $b:expr, $c:expr $(,)?) => {
        syscall!(@call sockwrap_syscall3, $nr, $a, $b, $c)
    };
    ($nr:expr, $a:expr, $b:expr, $c:expr, $d:expr $(,)?) => {
        syscall!(@call sockwrap_syscall4, $nr, $a, $b, $c, $d)
    };
    ($nr:expr, $a:expr, $b:expr, $c:expr, $d:expr, $e:expr $(,)?) => {
        syscall!(@call sockwrap_syscall5, $nr, $a, $b, $c, $d, $e)
    };
    ($nr:expr, $a:expr, $b:expr, $c:expr, $d:expr, $e:expr, $f:expr $(,)?) => {
        syscall!(@call sockwrap_syscall6, $nr, $a, $b, $c, $d, $e, $f)
    };
}

/// The protocol number of Multipath TCP (`<linux/in.h>`).
pub const IPPROTO_MPTCP: i32 = 262;

/// An errno value. `Copy`, no allocation on the error path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub i32);

pub fn errno() -> i32 {
    // SAFETY: __errno_location returns the calling thread's errno slot, valid for the
    // thread's lifetime.
    unsafe { *libc::__errno_location() }
}

/// The shells of `lazy.c`: libc functions the library calls rarely, through the PLT, so
/// that the loader binds them at their first call instead of at every exec.
pub mod lazy {
    extern "C" {
        pub fn sockwrap_malloc(n: usize) -> *mut libc::c_void;
        pub fn sockwrap_realloc(p: *mut libc::c_void, n: usize) -> *mut libc::c_void;
        pub fn sockwrap_free(p: *mut libc::c_void);
        pub fn sockwrap_posix_memalign(
            out: *mut *mut libc::c_void,
            align: usize,
            n: usize,
        ) -> libc::c_int;
        pub fn sockwrap_abort() -> !;
        pub fn sockwrap_clock_gettime(
            clock: libc::clockid_t,
            ts: *mut libc::timespec,
        ) -> libc::c_int;
        pub fn sockwrap_spawn_blocked(
            start: extern "C" fn(*mut libc::c_void) -> *mut libc::c_void,
            arg: *mut libc::c_void,
        ) -> libc::c_int;
    }
}

pub fn set_errno(e: i32) {
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = e }
}

/// Restores the errno seen at construction when dropped. Holds the thread's errno slot,
/// asked of libc once: every connect and accept makes one.
pub struct ErrnoGuard {
    slot: *mut i32,
    saved: i32,
}

impl ErrnoGuard {
    pub fn new() -> ErrnoGuard {
        // SAFETY: __errno_location returns the calling thread's errno slot, valid for the
        // thread's lifetime; a guard lives inside one hook call, on one thread (it is not
        // Send: a raw pointer).
        unsafe {
            let slot = libc::__errno_location();
            ErrnoGuard { slot, saved: *slot }
        }
    }
}

impl Drop for ErrnoGuard {
    fn drop(&mut self) {
        // SAFETY: see `new`.
        unsafe { *self.slot = self.saved }
    }
}

fn check(r: libc::c_long) -> Result<libc::c_long, Errno> {
    if r < 0 {
        Err(Errno(-r as i32))
    } else {
        Ok(r)
    }
}

/// Short names for the errnos a socket option can fail with.
pub fn errno_name(e: i32) -> &'static str {
    match e {
        libc::EPERM => "EPERM (operation not permitted)",
        libc::ENOENT => "ENOENT (no such algorithm or file)",
        libc::EACCES => "EACCES (permission denied)",
        libc::EINVAL => "EINVAL (invalid argument)",
        libc::ENODEV => "ENODEV (no such device)",
        libc::ENOPROTOOPT => "ENOPROTOOPT (option not supported by protocol)",
        libc::EOPNOTSUPP => "EOPNOTSUPP (operation not supported)",
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL (address not available)",
        libc::EADDRINUSE => "EADDRINUSE (address in use)",
        libc::ENOBUFS => "ENOBUFS (no buffer space)",
        libc::EBADF => "EBADF (bad file descriptor)",
        libc::ENOTSOCK => "ENOTSOCK (not a socket)",
        libc::EISCONN => "EISCONN (already connected)",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT (address family not supported)",
        libc::EPROTONOSUPPORT => "EPROTONOSUPPORT (protocol not supported)",
        libc::EBUSY => "EBUSY (busy)",
        _ => "error",
    }
}

mod addr;
mod process;
mod socket;
mod sync;
mod thread;

pub use addr::SockAddr;
pub use process::*;
pub use socket::*;
pub use sync::{SetOnce, Spin};
pub use thread::{spawn, thread, ActionNote};
