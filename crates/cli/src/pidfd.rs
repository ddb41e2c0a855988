//! The system calls `sockwrap attach` makes: taking a duplicate of another process's
//! descriptor (`pidfd_open` + `pidfd_getfd`, Linux 5.6+) and reading and setting options on
//! it. A duplicate shares the program's `struct sock`: what is set on it is set on the
//! program's own socket.
//!
//! rustix makes every call here but `getsockopt`/`setsockopt` by level and number (rustix
//! has one typed function per option, not the raw call the catalog's table needs): those
//! two are the only `unsafe` of this module. The socket's addresses come from rustix too,
//! the CLI's one conversion from a `sockaddr`.

use rustix::process::{Pid, PidfdFlags, PidfdGetfdFlags};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};

/// `pidfd_open(pid, 0)`: a handle on the process that cannot be confused with a later
/// process given the same PID.
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // Pid holds positive numbers only; the kernel says EINVAL for the others.
    let pid =
        Pid::from_raw(pid.max(0)).ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    Ok(rustix::process::pidfd_open(pid, PidfdFlags::empty())?)
}

/// `pidfd_getfd(pidfd, fd, 0)`: a duplicate of the process's descriptor `fd` in this
/// process (close-on-exec). Needs ptrace access to the process (EPERM otherwise); EBADF
/// when the process has closed `fd`; ESRCH when it has exited.
pub fn pidfd_getfd(pidfd: &OwnedFd, fd: i32) -> io::Result<OwnedFd> {
    Ok(rustix::process::pidfd_getfd(
        pidfd,
        fd,
        PidfdGetfdFlags::empty(),
    )?)
}

/// `getsockopt(fd, level, name)` into `buf`; the length the kernel wrote.
pub fn getsockopt(fd: &OwnedFd, level: i32, name: i32, buf: &mut [u8]) -> io::Result<usize> {
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: buf is valid for len bytes and len is passed by pointer as the kernel wants.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((len as usize).min(buf.len()))
}

/// `setsockopt(fd, level, name, val)`.
pub fn setsockopt(fd: &OwnedFd, level: i32, name: i32, val: &[u8]) -> io::Result<()> {
    // SAFETY: val is valid for its length.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            val.as_ptr().cast(),
            val.len() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// An `int` socket option.
pub fn getsockopt_int(fd: &OwnedFd, level: i32, name: i32) -> io::Result<i32> {
    let mut b = [0u8; 4];
    getsockopt(fd, level, name, &mut b)?;
    Ok(i32::from_ne_bytes(b))
}

/// The inode of the socket behind `fd` (what `/proc/PID/fd` shows as `socket:[INODE]`).
pub fn inode(fd: &OwnedFd) -> io::Result<u64> {
    Ok(rustix::fs::fstat(fd)?.st_ino)
}

/// `getsockname` as an IP address, if it is one.
pub fn local_addr(fd: &OwnedFd) -> Option<SocketAddr> {
    SocketAddr::try_from(rustix::net::getsockname(fd).ok()?).ok()
}

/// `getpeername` as an IP address, if connected.
pub fn peer_addr(fd: &OwnedFd) -> Option<SocketAddr> {
    SocketAddr::try_from(rustix::net::getpeername(fd).ok()??).ok()
}
