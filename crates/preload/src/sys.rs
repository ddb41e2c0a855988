//! Raw system calls used by the library for its own work, and the socket-address type.
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

#![allow(unsafe_code)]

#[allow(unused_imports)]
use crate::prelude::*;
use core::mem::{size_of, MaybeUninit};
use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

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

/// A socket address as the kernel reads and writes it: storage big enough for any family,
/// and the length in use.
#[derive(Clone, Copy)]
pub struct SockAddr {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
}

impl SockAddr {
    fn empty() -> SockAddr {
        SockAddr {
            // SAFETY: all-zero is a valid sockaddr_storage.
            storage: unsafe { core::mem::zeroed() },
            len: size_of::<libc::sockaddr_storage>() as libc::socklen_t,
        }
    }

    /// Copies `len` bytes of a C address (at most a `sockaddr_storage`).
    ///
    /// # Safety
    /// `p` must be null or valid for reading `len` bytes.
    pub unsafe fn from_raw(p: *const libc::sockaddr, len: libc::socklen_t) -> Option<SockAddr> {
        if p.is_null() {
            return None;
        }
        let mut a = SockAddr::empty();
        let n = (len as usize).min(size_of::<libc::sockaddr_storage>());
        // SAFETY: the caller promises p is valid for len bytes; the storage holds n.
        unsafe {
            core::ptr::copy_nonoverlapping(p as *const u8, &mut a.storage as *mut _ as *mut u8, n)
        };
        a.len = n as libc::socklen_t;
        Some(a)
    }

    /// The IPv4 or IPv6 address at `p`, read in place (no copy of the whole storage): what
    /// the hooks do with every address a program passes.
    ///
    /// # Safety
    /// `p` must be null or valid for reading `len` bytes.
    pub unsafe fn ip_at(p: *const libc::sockaddr, len: libc::socklen_t) -> Option<SocketAddr> {
        if p.is_null() || (len as usize) < size_of::<libc::sa_family_t>() {
            return None;
        }
        // SAFETY: p is valid for at least the family field.
        let fam = unsafe { (*p).sa_family } as i32;
        match fam {
            libc::AF_INET if len as usize >= size_of::<libc::sockaddr_in>() => {
                // SAFETY: len covers a sockaddr_in; read_unaligned as the program's buffer
                // may not be aligned.
                let a = unsafe { (p as *const libc::sockaddr_in).read_unaligned() };
                Some(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                    u16::from_be(a.sin_port),
                )))
            }
            libc::AF_INET6 if len as usize >= size_of::<libc::sockaddr_in6>() => {
                // SAFETY: as above, for sockaddr_in6.
                let a = unsafe { (p as *const libc::sockaddr_in6).read_unaligned() };
                Some(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(a.sin6_addr.s6_addr),
                    u16::from_be(a.sin6_port),
                    a.sin6_flowinfo,
                    a.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }

    /// The address family (AF_INET, AF_UNIX...), if the length covers it.
    pub fn family(&self) -> Option<i32> {
        (self.len as usize >= size_of::<libc::sa_family_t>())
            .then_some(self.storage.ss_family as i32)
    }

    /// The IPv4 or IPv6 address, if this is one.
    pub fn as_socket(&self) -> Option<SocketAddr> {
        // SAFETY: the storage is valid for its len bytes (at most its size).
        unsafe { SockAddr::ip_at(self.as_ptr(), self.len) }
    }

    /// The path of an AF_UNIX address (`@name` for the abstract namespace), as bytes.
    pub fn unix_path(&self) -> Option<([u8; 109], usize)> {
        if self.family()? != libc::AF_UNIX {
            return None;
        }
        // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_un.
        let un = unsafe { &*(&self.storage as *const _ as *const libc::sockaddr_un) };
        let n = (self.len as usize).saturating_sub(2).min(108);
        let path: &[u8] = &(un.sun_path.map(|c| c as u8))[..n];
        let mut out = [0u8; 109];
        let used = match path.split_first() {
            Some((&0, rest)) => {
                out[0] = b'@';
                out[1..1 + rest.len()].copy_from_slice(rest);
                1 + rest.len()
            }
            _ => {
                let end = path.iter().position(|&c| c == 0).unwrap_or(path.len());
                out[..end].copy_from_slice(&path[..end]);
                end
            }
        };
        Some((out, used))
    }

    pub fn as_ptr(&self) -> *const libc::sockaddr {
        &self.storage as *const _ as *const libc::sockaddr
    }

    /// The length in use.
    pub fn len(&self) -> libc::socklen_t {
        self.len
    }
}

impl From<SocketAddr> for SockAddr {
    fn from(a: SocketAddr) -> SockAddr {
        let mut s = SockAddr::empty();
        let p = &mut s.storage as *mut libc::sockaddr_storage;
        match a {
            SocketAddr::V4(v4) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: v4.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from(*v4.ip()).to_be(),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
                unsafe { (p as *mut libc::sockaddr_in).write(sin) };
                s.len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            }
            SocketAddr::V6(v6) => {
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: v6.port().to_be(),
                    sin6_flowinfo: 0,
                    sin6_addr: libc::in6_addr {
                        s6_addr: v6.ip().octets(),
                    },
                    sin6_scope_id: v6.scope_id(),
                };
                // SAFETY: as above, for sockaddr_in6.
                unsafe { (p as *mut libc::sockaddr_in6).write(sin6) };
                s.len = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
            }
        }
        s
    }
}

/// `setsockopt(fd, level, name, buf)` as a raw system call.
pub fn setsockopt(fd: i32, level: i32, name: i32, buf: &[u8]) -> Result<(), Errno> {
    #[cfg(target_arch = "x86_64")]
    {
        // The `syscall` instruction itself: this is the call sockwrap makes for every option
        // of every connection, and libc's variadic `syscall()` plus its errno store cost
        // more than the rest of the work. The kernel returns -errno; errno is not touched.
        let r: isize;
        // SAFETY: setsockopt(2) reads buf.len() bytes at buf, which is valid for them; the
        // syscall instruction clobbers rcx and r11 only, as declared.
        unsafe {
            core::arch::asm!(
                "syscall",
                inlateout("rax") libc::SYS_setsockopt as isize => r,
                in("rdi") fd as isize,
                in("rsi") level as isize,
                in("rdx") name as isize,
                in("r10") buf.as_ptr(),
                in("r8") buf.len(),
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack, readonly),
            );
        }
        if (-4095..0).contains(&r) {
            return Err(Errno(-r as i32));
        }
        Ok(())
    }
    #[cfg(not(target_arch = "x86_64"))]
    // SAFETY: buf is valid for buf.len() bytes; the kernel only reads it.
    unsafe {
        setsockopt_user(
            fd,
            level,
            name,
            buf.as_ptr().cast(),
            buf.len() as libc::socklen_t,
        )
    }
}

/// `setsockopt` with the program's own value pointer, which the kernel checks (a bad
/// pointer gives EFAULT, as it would have without sockwrap).
///
/// # Safety
/// `val`/`len` are the program's setsockopt arguments: the kernel validates them.
pub unsafe fn setsockopt_user(
    fd: i32,
    level: i32,
    name: i32,
    val: *const core::ffi::c_void,
    len: libc::socklen_t,
) -> Result<(), Errno> {
    // SAFETY: the kernel checks the program's pointer and length.
    let r = unsafe {
        syscall!(
            libc::SYS_setsockopt,
            fd as libc::c_long,
            level as libc::c_long,
            name as libc::c_long,
            val,
            len as libc::c_long,
        )
    };
    check(r).map(|_| ())
}

/// `getsockopt(fd, level, name)` for an int-valued option.
pub fn getsockopt_int(fd: i32, level: i32, name: i32) -> Result<i32, Errno> {
    let mut b = [0u8; 16];
    let n = getsockopt_bytes(fd, level, name, &mut b)?;
    Ok(match n {
        1 => b[0] as i32,
        _ => i32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
    })
}

/// `getsockopt(fd, level, name)` into a small buffer; returns the length the kernel wrote.
pub fn getsockopt_bytes(
    fd: i32,
    level: i32,
    name: i32,
    buf: &mut [u8; 16],
) -> Result<usize, Errno> {
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: buf and len are valid for writing; len is buf's size.
    let r = unsafe {
        syscall!(
            libc::SYS_getsockopt,
            fd as libc::c_long,
            level as libc::c_long,
            name as libc::c_long,
            buf.as_mut_ptr(),
            &mut len as *mut libc::socklen_t,
        )
    };
    check(r).map(|_| len as usize)
}

/// `getsockopt(fd, IPPROTO_TCP, TCP_INFO)`: the kernel's `struct tcp_info` and the number
/// of its bytes the kernel filled (an older kernel fills a shorter prefix; the rest stays
/// zero).
pub fn tcp_info(fd: i32) -> Result<(libc::tcp_info, usize), Errno> {
    // SAFETY: tcp_info is integers only: all-zero is a valid value.
    let mut info: libc::tcp_info = unsafe { core::mem::zeroed() };
    let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: info and len are valid for writing; len is info's size.
    let r = unsafe {
        syscall!(
            libc::SYS_getsockopt,
            fd as libc::c_long,
            libc::IPPROTO_TCP as libc::c_long,
            libc::TCP_INFO as libc::c_long,
            &mut info as *mut libc::tcp_info,
            &mut len as *mut libc::socklen_t,
        )
    };
    check(r).map(|_| (info, len as usize))
}

fn name_call(nr: libc::c_long, fd: i32) -> Result<SockAddr, Errno> {
    let mut a = SockAddr::empty();
    // SAFETY: storage and len are valid for writing; len is storage's size.
    let r = unsafe {
        syscall!(
            nr,
            fd as libc::c_long,
            &mut a.storage as *mut libc::sockaddr_storage,
            &mut a.len as *mut libc::socklen_t,
        )
    };
    check(r)?;
    Ok(a)
}

pub fn getsockname(fd: i32) -> Result<SockAddr, Errno> {
    name_call(libc::SYS_getsockname, fd)
}

pub fn getpeername(fd: i32) -> Result<SockAddr, Errno> {
    name_call(libc::SYS_getpeername, fd)
}

/// The local address as an IP socket address.
pub fn local_addr(fd: i32) -> Option<SocketAddr> {
    getsockname(fd).ok()?.as_socket()
}

/// The peer's address as an IP socket address.
pub fn peer_addr(fd: i32) -> Option<SocketAddr> {
    getpeername(fd).ok()?.as_socket()
}

/// `bind(fd, addr)` as a raw system call (never our own hook).
pub fn bind(fd: i32, addr: &SockAddr) -> Result<(), Errno> {
    // SAFETY: addr is valid for its len bytes (at most a sockaddr_storage).
    let r = unsafe {
        syscall!(
            libc::SYS_bind,
            fd as libc::c_long,
            addr.as_ptr(),
            addr.len as libc::c_long,
        )
    };
    check(r).map(|_| ())
}

/// `connect(fd, addr)` as a raw system call (never our own hook).
pub fn connect(fd: i32, addr: &SockAddr) -> Result<(), Errno> {
    // SAFETY: addr is valid for its len bytes (at most a sockaddr_storage).
    let r = unsafe {
        syscall!(
            libc::SYS_connect,
            fd as libc::c_long,
            addr.as_ptr(),
            addr.len as libc::c_long,
        )
    };
    check(r).map(|_| ())
}

/// `connect(fd, AF_UNSPEC)`: dissolves the socket's association (a TCP socket goes back
/// to CLOSE, unconnected), as a raw system call.
pub fn disconnect(fd: i32) -> Result<(), Errno> {
    // All zero: the family is AF_UNSPEC.
    connect(fd, &SockAddr::empty())
}

/// `listen(fd, backlog)` as a raw system call.
pub fn listen(fd: i32, backlog: i32) -> Result<(), Errno> {
    // SAFETY: no pointers involved.
    let r = unsafe {
        syscall!(
            libc::SYS_listen,
            fd as libc::c_long,
            backlog as libc::c_long,
        )
    };
    check(r).map(|_| ())
}

/// Attaches a classic BPF socket filter of one instruction that keeps no packet: nothing
/// reaches `fd` any more (a parked connect's hole drops every SYN with it).
pub fn attach_drop_all(fd: i32) -> Result<(), Errno> {
    let mut keep_nothing = [libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k: 0,
    }];
    let prog = libc::sock_fprog {
        len: 1,
        filter: keep_nothing.as_mut_ptr(),
    };
    // SAFETY: prog and the instruction it points to outlive the call; the kernel copies
    // both and writes neither.
    unsafe {
        setsockopt_user(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&prog as *const libc::sock_fprog).cast(),
            size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    }
}

/// Sleeps `ms` milliseconds, the whole time even if signals interrupt the sleep.
pub fn sleep_ms(ms: u32) {
    let mut ts = libc::timespec {
        tv_sec: (ms / 1000) as libc::time_t,
        tv_nsec: ((ms % 1000) * 1_000_000) as libc::c_long,
    };
    loop {
        let mut rem = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: both timespecs are valid for the call.
        let r = unsafe {
            syscall!(
                libc::SYS_nanosleep,
                &ts as *const libc::timespec,
                &mut rem as *mut libc::timespec,
            )
        };
        if r != -(libc::EINTR as libc::c_long) {
            return;
        }
        ts = rem;
    }
}

/// 64 random bits from the kernel (`getrandom`), or from the clock if that fails.
pub fn random_u64() -> u64 {
    let mut v = 0u64;
    // SAFETY: v is valid for writing 8 bytes.
    let r = unsafe {
        syscall!(
            libc::SYS_getrandom,
            &mut v as *mut u64,
            8 as libc::c_long,
            libc::GRND_NONBLOCK as libc::c_long,
        )
    };
    if r == 8 {
        v
    } else {
        clock_ns(libc::CLOCK_REALTIME) ^ ((getpid() as u64) << 32)
    }
}

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

/// `fd`'s file type bits (`st_mode & S_IFMT`), device and inode, from one fstat.
pub fn stat_of(fd: i32) -> Option<(u32, u64, u64)> {
    let mut st = MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: st is valid for writing a struct stat.
    let r = unsafe { syscall!(libc::SYS_fstat, fd as libc::c_long, st.as_mut_ptr()) };
    if r < 0 {
        return None;
    }
    // SAFETY: zero-initialised and filled by the kernel.
    let st = unsafe { st.assume_init() };
    Some((st.st_mode & libc::S_IFMT, st.st_dev, st.st_ino))
}

/// The device and inode of what `fd` refers to, to tell one file from a later one on the
/// same number.
pub fn inode(fd: i32) -> Option<(u64, u64)> {
    stat_of(fd).map(|(_, dev, ino)| (dev, ino))
}

pub fn write_all(fd: i32, buf: &[u8]) {
    // One write(2) for the whole line: lines from several threads and processes never
    // interleave on an O_APPEND file or a pipe (up to PIPE_BUF).
    // SAFETY: buf is valid for buf.len() bytes.
    let _ = unsafe { syscall!(libc::SYS_write, fd as libc::c_long, buf.as_ptr(), buf.len()) };
}

pub fn getpid() -> i32 {
    // SAFETY: getpid has no arguments and cannot fail.
    unsafe { syscall!(libc::SYS_getpid) as i32 }
}

pub fn gettid() -> i32 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { syscall!(libc::SYS_gettid) as i32 }
}

/// Nanoseconds of `clock` (the vDSO answers: no system call).
pub fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is valid for writing; clock_gettime is async-signal-safe.
    unsafe { lazy::sockwrap_clock_gettime(clock, &mut ts) };
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

/// A word on a page of its own that the kernel gives a forked child zeroed
/// (`MADV_WIPEONFORK`, Linux 4.14): for caches that must not survive a fork, whichever way
/// the child was made (fork, `_Fork`, a raw clone without CLONE_VM). One mmap and one
/// madvise, once; the page lives as long as the process.
pub fn wiped_on_fork_word() -> Option<&'static core::sync::atomic::AtomicI32> {
    const PAGE: usize = 4096;
    // SAFETY: a fresh private anonymous mapping; nothing else refers to it.
    let p = unsafe {
        syscall!(
            libc::SYS_mmap,
            core::ptr::null_mut::<libc::c_void>(),
            PAGE,
            (libc::PROT_READ | libc::PROT_WRITE) as libc::c_long,
            (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as libc::c_long,
            -1 as libc::c_long,
            0 as libc::c_long,
        )
    };
    if p < 0 && p > -4096 {
        return None;
    }
    let p = p as *mut libc::c_void;
    // SAFETY: p is the page just mapped.
    if unsafe {
        syscall!(
            libc::SYS_madvise,
            p,
            PAGE,
            libc::MADV_WIPEONFORK as libc::c_long,
        )
    } != 0
    {
        // SAFETY: unmapping our own page, which nothing refers to.
        unsafe { syscall!(libc::SYS_munmap, p, PAGE) };
        return None;
    }
    // SAFETY: the page is zeroed, aligned, never unmapped, and only ever used as this one
    // atomic (zero is a valid AtomicI32).
    Some(unsafe { &*(p as *const core::sync::atomic::AtomicI32) })
}

/// `socket(2)` as a raw system call (never our own hook).
pub fn socket(domain: i32, ty: i32, protocol: i32) -> Result<i32, Errno> {
    // SAFETY: no pointers involved.
    let r = unsafe {
        syscall!(
            libc::SYS_socket,
            domain as libc::c_long,
            ty as libc::c_long,
            protocol as libc::c_long,
        )
    };
    check(r).map(|fd| fd as i32)
}

/// Closes a descriptor of ours (or one the program has not seen yet) by system call, never
/// through our own close hook.
pub fn close(fd: i32) {
    // SAFETY: no pointers involved.
    unsafe { syscall!(libc::SYS_close, fd as libc::c_long) };
}

/// `dup3(old, new, flags)`: atomically replaces `new` by `old`'s socket.
pub fn dup3(old: i32, new: i32, flags: i32) -> Result<(), Errno> {
    // SAFETY: no pointers involved.
    let r = unsafe {
        syscall!(
            libc::SYS_dup3,
            old as libc::c_long,
            new as libc::c_long,
            flags as libc::c_long,
        )
    };
    check(r).map(|_| ())
}

/// `fcntl(fd, cmd, arg)` for commands that take an integer (F_GETFL, F_GETFD,
/// F_DUPFD_CLOEXEC).
pub fn fcntl(fd: i32, cmd: i32, arg: i32) -> Result<i32, Errno> {
    // SAFETY: these commands take no pointer.
    let r = unsafe {
        syscall!(
            libc::SYS_fcntl,
            fd as libc::c_long,
            cmd as libc::c_long,
            arg as libc::c_long,
        )
    };
    check(r).map(|v| v as i32)
}

/// `close_range(first, ~0, 0)`.
pub fn close_from(first: u32) {
    // SAFETY: no pointers involved.
    unsafe {
        syscall!(
            libc::SYS_close_range,
            first as libc::c_long,
            !0u32 as libc::c_long,
            0 as libc::c_long,
        )
    };
}

/// Opens `path` (shorter than 4 KiB, no NUL) with `flags`, mode 0600 when created.
/// Allocation-free and async-signal-safe.
///
/// The C string is made in a small buffer when the path fits: every exec opens the
/// host-wide policy file, and a zeroed 4 KiB buffer on the constructor's stack cost ~4,000
/// instructions and a page fault of its own there.
pub fn open(path: &str, flags: i32) -> Result<i32, Errno> {
    if path.len() < 256 {
        open_in(&mut [0u8; 256], path, flags)
    } else {
        open_long(path, flags)
    }
}

#[cold]
#[inline(never)]
fn open_long(path: &str, flags: i32) -> Result<i32, Errno> {
    open_in(&mut [0u8; 4096], path, flags)
}

/// [`open`] with `c` (zeroed) to make the C string in.
fn open_in(c: &mut [u8], path: &str, flags: i32) -> Result<i32, Errno> {
    if path.len() >= c.len() || path.as_bytes().contains(&0) {
        return Err(Errno(libc::ENAMETOOLONG));
    }
    c[..path.len()].copy_from_slice(path.as_bytes());
    // SAFETY: c is NUL-terminated. open() is not one of our hooks.
    let fd = unsafe { syscall!(libc::SYS_openat, libc::AT_FDCWD, c.as_ptr(), flags, 0o600) };
    check(fd).map(|fd| fd as i32)
}

/// `read(2)` as a raw system call: the bytes read, or -errno.
fn read(fd: i32, buf: &mut [u8]) -> isize {
    // SAFETY: buf is valid for writes of its length.
    unsafe {
        syscall!(
            libc::SYS_read,
            fd as libc::c_long,
            buf.as_mut_ptr(),
            buf.len(),
        ) as isize
    }
}

/// Reads into `buf` until it is full or the file ends (or fails): the bytes read.
pub fn read_full(fd: i32, buf: &mut [u8]) -> usize {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        let n = read(fd, rest);
        if n > 0 {
            done += n as usize;
        } else if n != -(libc::EINTR as isize) {
            break;
        }
    }
    done
}

/// Whether the loader runs this process in secure mode (setuid, setcap).
pub fn secure_mode() -> bool {
    // SAFETY: getauxval has no preconditions.
    unsafe { libc::getauxval(libc::AT_SECURE) != 0 }
}

/// The target of a symbolic link such as `/proc/self/exe`, into `buf`.
pub fn readlink<'a>(path: &core::ffi::CStr, buf: &'a mut [u8]) -> Option<&'a [u8]> {
    // SAFETY: path is NUL-terminated, buf is valid for its length.
    let n = unsafe {
        syscall!(
            libc::SYS_readlink,
            path.as_ptr(),
            buf.as_mut_ptr(),
            buf.len(),
        )
    };
    usize::try_from(n).ok().map(|n| &buf[..n])
}

/// The basename of the path this program was executed by (`AT_EXECFN`: the path given to
/// execve, symlinks not resolved). Free: the kernel put it on the stack; reading
/// `/proc/self/exe` costs a fresh process ~20 µs (procfs builds the process's entries).
pub fn exec_fn_basename() -> Option<&'static [u8]> {
    // SAFETY: getauxval has no preconditions; AT_EXECFN, when present, points to a
    // NUL-terminated string on the process's initial stack, alive for the whole process.
    let path = unsafe {
        let p = libc::getauxval(libc::AT_EXECFN) as *const libc::c_char;
        if p.is_null() {
            return None;
        }
        core::ffi::CStr::from_ptr(p).to_bytes()
    };
    Some(path.rsplit(|&c| c == b'/').next().unwrap_or(path))
}

/// The basename of this process's executable, into `out`. A short buffer first: a 4 KiB
/// one on the constructor's stack is a page fault of its own in every exec.
pub fn exe_basename(out: &mut [u8; 256]) -> Option<&[u8]> {
    let n = readlink(c"/proc/self/exe", out)?.len();
    if n < out.len() {
        let start = out[..n]
            .iter()
            .rposition(|&c| c == b'/')
            .map_or(0, |i| i + 1);
        return Some(&out[start..n]);
    }
    long_exe_basename(out)
}

#[cold]
#[inline(never)]
fn long_exe_basename(out: &mut [u8; 256]) -> Option<&[u8]> {
    let mut buf = [0u8; 4096];
    let path = readlink(c"/proc/self/exe", &mut buf)?;
    let base = path.rsplit(|&c| c == b'/').next()?;
    let n = base.len().min(out.len());
    out[..n].copy_from_slice(&base[..n]);
    Some(&out[..n])
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

/// Ends the process at once (a panic: there is no unwinding without std).
#[cfg_attr(test, allow(dead_code))]
pub fn abort() -> ! {
    // SAFETY: abort has no preconditions and does not return.
    unsafe { lazy::sockwrap_abort() }
}

/// A value behind a spin lock that gives up: [`Spin::with`] returns `None` rather than wait
/// without bound (a signal handler on the thread that holds the lock must not deadlock).
/// For the rare paths only (names resolved, redirected and delayed connects); never held
/// across a system call.
pub struct Spin<T> {
    locked: core::sync::atomic::AtomicBool,
    value: core::cell::UnsafeCell<T>,
}

// SAFETY: the value is reached only by the one caller that holds `locked`.
unsafe impl<T: Send> Sync for Spin<T> {}

impl<T> Spin<T> {
    pub const fn new(v: T) -> Spin<T> {
        Spin {
            locked: core::sync::atomic::AtomicBool::new(false),
            value: core::cell::UnsafeCell::new(v),
        }
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        use core::sync::atomic::Ordering;
        let mut spins = 0u32;
        while self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            spins += 1;
            if spins > 1 << 22 {
                return None;
            }
            core::hint::spin_loop();
        }
        // SAFETY: `locked` is held: no other reference to the value exists until it is
        // released below.
        let r = f(unsafe { &mut *self.value.get() });
        self.locked.store(false, Ordering::Release);
        Some(r)
    }

    /// In a forked child (one thread): a lock another thread of the parent held at the fork
    /// would stay taken for ever, and every use would spin out its bound first.
    pub fn unlock_after_fork(&self) {
        self.locked
            .store(false, core::sync::atomic::Ordering::Release);
    }
}

/// A value set once, in the constructor, then read by any thread: std's `OnceLock`
/// without std (and without blocking: a second `set` fails instead of waiting).
pub struct SetOnce<T> {
    claimed: core::sync::atomic::AtomicBool,
    ready: core::sync::atomic::AtomicBool,
    value: core::cell::UnsafeCell<MaybeUninit<T>>,
}

// SAFETY: the value is written once, by the one caller that claimed it, before `ready` is
// released; readers see it only after acquiring `ready`, and only share it (&T).
unsafe impl<T: Send + Sync> Sync for SetOnce<T> {}

impl<T> SetOnce<T> {
    pub const fn new() -> SetOnce<T> {
        SetOnce {
            claimed: core::sync::atomic::AtomicBool::new(false),
            ready: core::sync::atomic::AtomicBool::new(false),
            value: core::cell::UnsafeCell::new(MaybeUninit::uninit()),
        }
    }

    pub fn set(&self, v: T) -> Result<(), T> {
        use core::sync::atomic::Ordering::{AcqRel, Release};
        if self.claimed.swap(true, AcqRel) {
            return Err(v);
        }
        // SAFETY: only the one caller that claimed the cell writes, and no reader looks
        // before `ready`.
        unsafe { (*self.value.get()).write(v) };
        self.ready.store(true, Release);
        Ok(())
    }

    pub fn get(&self) -> Option<&T> {
        if self.ready.load(core::sync::atomic::Ordering::Acquire) {
            // SAFETY: ready is set only after the value was written, and it is never
            // written again.
            Some(unsafe { (*self.value.get()).assume_init_ref() })
        } else {
            None
        }
    }
}

/// This thread's own state (`thread.c`: zeroed when the thread starts; every field means
/// "nothing known" at zero). Cells, so `&Thread` never leaves its thread.
#[repr(C)]
pub struct Thread {
    /// (pid, tid) as last asked of the kernel (the trace).
    pid: core::cell::Cell<i32>,
    tid: core::cell::Cell<i32>,
    /// fd + 1 of the last accepted socket whose peer is in `accepted` (0: none).
    accepted_fd1: core::cell::Cell<i32>,
    accepted: core::cell::Cell<MaybeUninit<SocketAddr>>,
    /// fd + 1 of the connect whose action is in `action` (0: none).
    action_fd1: core::cell::Cell<i32>,
    action: core::cell::Cell<MaybeUninit<ActionNote>>,
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
        self.accepted.set(MaybeUninit::new(peer));
        self.accepted_fd1.set(fd.wrapping_add(1));
    }

    /// The peer recorded for `fd` by the accept that just returned it; clears the record.
    pub fn take_accepted(&self, fd: i32) -> Option<SocketAddr> {
        let was = self.accepted_fd1.replace(0);
        if was != 0 && was == fd.wrapping_add(1) {
            // SAFETY: accepted_fd1 is non-zero only after set_accepted wrote `accepted`.
            Some(unsafe { self.accepted.get().assume_init() })
        } else {
            None
        }
    }

    pub fn set_action(&self, fd: i32, note: ActionNote) {
        self.action.set(MaybeUninit::new(note));
        self.action_fd1.set(fd.wrapping_add(1));
    }

    /// The action recorded for `fd` by the connect that just returned; clears the record.
    pub fn take_action(&self, fd: i32) -> Option<ActionNote> {
        let was = self.action_fd1.replace(0);
        if was != 0 && was == fd.wrapping_add(1) {
            // SAFETY: action_fd1 is non-zero only after set_action wrote `action`.
            Some(unsafe { self.action.get().assume_init() })
        } else {
            None
        }
    }
}

/// The whole content of a small file (the policy file), read without std.
// Out of line: its 8 KiB buffer would otherwise sit in the constructor's frame and be
// probed (a page fault) in every exec, not only in those that read a policy file.
#[inline(never)]
pub fn read_file(path: &str) -> Result<alloc::vec::Vec<u8>, Errno> {
    let fd = open(path, libc::O_RDONLY | libc::O_CLOEXEC)?;
    let mut out = alloc::vec::Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = read(fd, &mut chunk);
        if n > 0 {
            out.extend_from_slice(&chunk[..n as usize]);
        } else if n == 0 {
            break;
        } else if n != -(libc::EINTR as isize) {
            close(fd);
            return Err(Errno(-n as i32));
        }
    }
    close(fd);
    Ok(out)
}
