//! Raw system calls used by the library for its own work.
//!
//! Nothing here calls libc's socket functions by name: those symbols resolve to our own hooks.
//! `libc::syscall` is not a socket function and cannot recurse. It does set `errno` on
//! failure, so every hook saves `errno` on entry and restores it ([`ErrnoGuard`]) before it
//! hands control back or calls the real function: the program only ever sees the errno of
//! its own call.

use core::mem::{size_of, MaybeUninit};

/// An errno value. `Copy`, no allocation on the error path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub i32);

pub fn errno() -> i32 {
    // SAFETY: __errno_location returns the calling thread's errno slot, valid for the
    // thread's lifetime.
    unsafe { *libc::__errno_location() }
}

pub fn set_errno(e: i32) {
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = e }
}

/// Restores the errno seen at construction when dropped.
pub struct ErrnoGuard(i32);

impl Default for ErrnoGuard {
    fn default() -> ErrnoGuard {
        ErrnoGuard::new()
    }
}

impl ErrnoGuard {
    pub fn new() -> ErrnoGuard {
        ErrnoGuard(errno())
    }
}

impl Drop for ErrnoGuard {
    fn drop(&mut self) {
        set_errno(self.0)
    }
}

fn check(r: libc::c_long) -> Result<libc::c_long, Errno> {
    if r < 0 {
        Err(Errno(errno()))
    } else {
        Ok(r)
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
    {
        // SAFETY: buf is valid for buf.len() bytes; the kernel only reads it.
        let r = unsafe {
            libc::syscall(
                libc::SYS_setsockopt,
                fd as libc::c_long,
                level as libc::c_long,
                name as libc::c_long,
                buf.as_ptr() as *const core::ffi::c_void,
                buf.len() as libc::c_long,
            )
        };
        check(r).map(|_| ())
    }
}

/// `getsockopt(fd, level, name)` for an int-valued option.
pub fn getsockopt_int(fd: i32, level: i32, name: i32) -> Result<i32, Errno> {
    let mut v: i32 = 0;
    let mut len = size_of::<i32>() as libc::socklen_t;
    // SAFETY: v and len are valid for writing; len tells the kernel v's size.
    let r = unsafe {
        libc::syscall(
            libc::SYS_getsockopt,
            fd as libc::c_long,
            level as libc::c_long,
            name as libc::c_long,
            &mut v as *mut i32,
            &mut len as *mut libc::socklen_t,
        )
    };
    check(r).map(|_| v)
}

/// A socket address big enough for any family, as the kernel fills it.
pub struct SockAddr {
    pub storage: libc::sockaddr_storage,
    pub len: libc::socklen_t,
}

fn name_call(nr: libc::c_long, fd: i32) -> Result<SockAddr, Errno> {
    let mut storage = MaybeUninit::<libc::sockaddr_storage>::zeroed();
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: storage and len are valid for writing; len is storage's size.
    let r = unsafe {
        libc::syscall(
            nr,
            fd as libc::c_long,
            storage.as_mut_ptr(),
            &mut len as *mut libc::socklen_t,
        )
    };
    check(r)?;
    // SAFETY: zero-initialised, then (partly) written by the kernel; all-zero is valid.
    Ok(SockAddr {
        storage: unsafe { storage.assume_init() },
        len,
    })
}

pub fn getsockname(fd: i32) -> Result<SockAddr, Errno> {
    name_call(libc::SYS_getsockname, fd)
}

pub fn getpeername(fd: i32) -> Result<SockAddr, Errno> {
    name_call(libc::SYS_getpeername, fd)
}

/// `bind(fd, addr)` as a raw system call (never our own hook).
pub fn bind(fd: i32, addr: &libc::sockaddr_storage, len: libc::socklen_t) -> Result<(), Errno> {
    // SAFETY: addr is valid for len bytes (len <= size_of::<sockaddr_storage>()).
    let r = unsafe {
        libc::syscall(
            libc::SYS_bind,
            fd as libc::c_long,
            addr as *const _,
            len as libc::c_long,
        )
    };
    check(r).map(|_| ())
}

/// The inode of what `fd` refers to, to tell one socket from a later one on the same number.
pub fn inode(fd: i32) -> Option<(u64, u64)> {
    stat_of(fd).map(|(_, dev, ino)| (dev, ino))
}

/// `fd`'s file type bits (`st_mode & S_IFMT`), device and inode, from one fstat.
pub fn stat_of(fd: i32) -> Option<(u32, u64, u64)> {
    let mut st = MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: st is valid for writing a struct stat.
    let r = unsafe { libc::syscall(libc::SYS_fstat, fd as libc::c_long, st.as_mut_ptr()) };
    if r < 0 {
        return None;
    }
    // SAFETY: zero-initialised and filled by the kernel.
    let st = unsafe { st.assume_init() };
    Some((st.st_mode & libc::S_IFMT, st.st_dev, st.st_ino))
}

/// Whether `fd` is open and a socket.
pub fn is_socket(fd: i32) -> Option<bool> {
    stat_of(fd).map(|(fmt, _, _)| fmt == libc::S_IFSOCK)
}

pub fn write_all(fd: i32, buf: &[u8]) {
    // One write(2) for the whole line: lines from several threads and processes never
    // interleave on an O_APPEND file or a pipe (up to PIPE_BUF).
    // SAFETY: buf is valid for buf.len() bytes.
    let _ = unsafe { libc::syscall(libc::SYS_write, fd as libc::c_long, buf.as_ptr(), buf.len()) };
}

pub fn getpid() -> i32 {
    // SAFETY: getpid has no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_getpid) as i32 }
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
        libc::syscall(
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

/// `socket(2)` as a raw system call (never our own hook).
pub fn socket(domain: i32, ty: i32, protocol: i32) -> Result<i32, Errno> {
    // SAFETY: no pointers involved.
    let r = unsafe {
        libc::syscall(
            libc::SYS_socket,
            domain as libc::c_long,
            ty as libc::c_long,
            protocol as libc::c_long,
        )
    };
    check(r).map(|fd| fd as i32)
}

pub fn close(fd: i32) {
    // SAFETY: closing a descriptor we own.
    unsafe { libc::syscall(libc::SYS_close, fd as libc::c_long) };
}

/// `dup3(old, new, flags)`: atomically replaces `new` by `old`'s socket.
pub fn dup3(old: i32, new: i32, flags: i32) -> Result<(), Errno> {
    // SAFETY: no pointers involved.
    let r = unsafe {
        libc::syscall(
            libc::SYS_dup3,
            old as libc::c_long,
            new as libc::c_long,
            flags as libc::c_long,
        )
    };
    check(r).map(|_| ())
}

pub fn fcntl(fd: i32, cmd: i32) -> Result<i32, Errno> {
    // SAFETY: F_GETFL/F_GETFD take no pointer.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fcntl,
            fd as libc::c_long,
            cmd as libc::c_long,
            0 as libc::c_long,
        )
    };
    check(r).map(|v| v as i32)
}
