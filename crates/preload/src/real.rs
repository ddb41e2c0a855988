//! The real socket functions: the next definitions after ours, from `dlsym(RTLD_NEXT, ...)`.
//!
//! Resolved once in the constructor. A hook can run before our constructor (another
//! library's constructor opens a socket); it then resolves its own function on the spot,
//! which is allowed to allocate: the process is still loading.

use core::ffi::{c_char, c_int, c_void};
use core::sync::atomic::{AtomicUsize, Ordering};
use libc::{sockaddr, socklen_t};

macro_rules! real_fns {
    ($( $name:ident : fn($($arg:ident : $ty:ty),*) -> $ret:ty ; )*) => {
        /// The resolved addresses (0 = not yet).
        #[allow(non_upper_case_globals)]
        pub(crate) mod slots {
            use super::*;
            $( pub static $name: AtomicUsize = AtomicUsize::new(0); )*
        }

        $(
            /// Calls the real function; -1 with ENOSYS if there is none.
            #[allow(non_snake_case, clippy::missing_safety_doc)]
            #[inline(always)]
            pub unsafe fn $name($($arg: $ty),*) -> $ret {
                /// First call before the constructor: resolve, then call. Out of line so
                /// the fast path below needs no saved registers and ends in a tail jump.
                #[cold]
                #[inline(never)]
                unsafe fn cold($($arg: $ty),*) -> $ret {
                    let p = resolve_slow(&slots::$name, concat!(stringify!($name), "\0"));
                    if p == 0 {
                        crate::sys::set_errno(libc::ENOSYS);
                        return -1;
                    }
                    // SAFETY: p is the address dlsym gave for this symbol, of this C type.
                    let f: unsafe extern "C" fn($($ty),*) -> $ret = unsafe { core::mem::transmute(p) };
                    // SAFETY: the caller's arguments are passed through unchanged.
                    unsafe { f($($arg),*) }
                }
                let p = slots::$name.load(Ordering::Acquire);
                if p == 0 {
                    // SAFETY: arguments passed through.
                    return unsafe { cold($($arg),*) };
                }
                // SAFETY: p is the address dlsym gave for this symbol, whose C type is
                // the one declared here.
                let f: unsafe extern "C" fn($($ty),*) -> $ret = unsafe { core::mem::transmute(p) };
                // SAFETY: the caller's arguments are passed through unchanged.
                unsafe { f($($arg),*) }
            }
        )*

        /// Resolves every real function; logs each at debug level.
        pub fn resolve_all() {
            $(
                let p = resolve(concat!(stringify!($name), "\0"));
                slots::$name.store(p, Ordering::Release);
                crate::log_at!(sockwrap_policy::LogLevel::Debug, "Loading {} => {:#x}", stringify!($name), p);
            )*
        }
    };
}

/// The address in a slot (0 = not resolved yet).
pub(crate) fn addr(slot: &AtomicUsize) -> usize {
    slot.load(Ordering::Acquire)
}

/// Resolves a function first called before our constructor ran (kept out of line: the
/// hooks' fast path is a load, a test and an indirect call).
#[cold]
#[inline(never)]
fn resolve_slow(slot: &AtomicUsize, name_nul: &str) -> usize {
    let p = resolve(name_nul);
    slot.store(p, Ordering::Release);
    p
}

fn resolve(name_nul: &str) -> usize {
    // SAFETY: name_nul is NUL-terminated; RTLD_NEXT asks for the next definition after ours.
    unsafe { libc::dlsym(libc::RTLD_NEXT, name_nul.as_ptr() as *const c_char) as usize }
}

real_fns! {
    socket: fn(domain: c_int, ty: c_int, protocol: c_int) -> c_int;
    connect: fn(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int;
    bind: fn(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int;
    listen: fn(fd: c_int, backlog: c_int) -> c_int;
    accept: fn(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int;
    accept4: fn(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> c_int;
    setsockopt: fn(fd: c_int, level: c_int, name: c_int, val: *const c_void, len: socklen_t) -> c_int;
    getsockopt: fn(fd: c_int, level: c_int, name: c_int, val: *mut c_void, len: *mut socklen_t) -> c_int;
    dup: fn(fd: c_int) -> c_int;
    close: fn(fd: c_int) -> c_int;
    close_range: fn(first: libc::c_uint, last: libc::c_uint, flags: c_int) -> c_int;
    dup2: fn(old: c_int, new: c_int) -> c_int;
    dup3: fn(old: c_int, new: c_int, flags: c_int) -> c_int;
}

/// Resolves `close` at load, whatever the environment says: the `close` hook runs in every
/// program (also from signal handlers) and must never resolve lazily.
pub fn resolve_close() {
    slots::close.store(resolve("close\0"), Ordering::Release);
}

static CLOSEFROM: AtomicUsize = AtomicUsize::new(0);

/// The real `closefrom` (returns nothing, so it is outside the table above). Without one,
/// the close_range system call does the same job.
///
/// # Safety
/// C's contract for `closefrom(3)`.
pub unsafe fn closefrom(first: c_int) {
    let mut p = CLOSEFROM.load(Ordering::Acquire);
    if p == 0 {
        p = resolve("closefrom\0");
        CLOSEFROM.store(p, Ordering::Release);
    }
    if p == 0 {
        // SAFETY: no pointers involved.
        unsafe {
            libc::syscall(
                libc::SYS_close_range,
                first as libc::c_long,
                !0u32 as libc::c_long,
                0 as libc::c_long,
            )
        };
        return;
    }
    // SAFETY: p is glibc's closefrom, of this C type.
    let f: unsafe extern "C" fn(c_int) = unsafe { core::mem::transmute(p) };
    // SAFETY: argument passed through.
    unsafe { f(first) }
}
