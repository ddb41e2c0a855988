//! The system calls `sockwrap attach` makes, and the only `unsafe` it needs: taking a
//! duplicate of another process's descriptor (`pidfd_open` + `pidfd_getfd`, Linux 5.6+)
//! and reading and setting options on it. A duplicate shares the program's `struct sock`:
//! what is set on it is set on the program's own socket.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `pidfd_open(pid, 0)`: a handle on the process that cannot be confused with a later
/// process given the same PID.
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes two integers and returns a new descriptor or -1.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: r is a descriptor the kernel just gave us and nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

/// `pidfd_getfd(pidfd, fd, 0)`: a duplicate of the process's descriptor `fd` in this
/// process (close-on-exec). Needs ptrace access to the process (EPERM otherwise); EBADF
/// when the process has closed `fd`; ESRCH when it has exited.
pub fn pidfd_getfd(pidfd: &OwnedFd, fd: i32) -> io::Result<OwnedFd> {
    // SAFETY: three integers in, a new descriptor or -1 out.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above, a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
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
    // SAFETY: an all-zero stat is a valid value to be overwritten by fstat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: st is a valid, writable stat.
    let r = unsafe { libc::fstat(fd.as_raw_fd(), &mut st) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.st_ino)
}

fn sockaddr(st: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match st.ss_family as i32 {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let a: &libc::sockaddr_in = unsafe { &*(st as *const _ as *const libc::sockaddr_in) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(a.sin_addr.s_addr.to_ne_bytes()),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let a: &libc::sockaddr_in6 = unsafe { &*(st as *const _ as *const libc::sockaddr_in6) };
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

fn name_of(fd: &OwnedFd, peer: bool) -> Option<SocketAddr> {
    // SAFETY: an all-zero sockaddr_storage is valid.
    let mut st: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let p = &mut st as *mut libc::sockaddr_storage as *mut libc::sockaddr;
    // SAFETY: st is large enough for any address, len says how large.
    let r = unsafe {
        if peer {
            libc::getpeername(fd.as_raw_fd(), p, &mut len)
        } else {
            libc::getsockname(fd.as_raw_fd(), p, &mut len)
        }
    };
    if r < 0 {
        return None;
    }
    sockaddr(&st)
}

/// `getsockname` as an IP address, if it is one.
pub fn local_addr(fd: &OwnedFd) -> Option<SocketAddr> {
    name_of(fd, false)
}

/// `getpeername` as an IP address, if connected.
pub fn peer_addr(fd: &OwnedFd) -> Option<SocketAddr> {
    name_of(fd, true)
}
