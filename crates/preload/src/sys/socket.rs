//! The socket system calls the library makes for its own work, by number (never through a
//! hook).

use super::{check, Errno, SockAddr};
use core::mem::size_of;
use core::net::SocketAddr;

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

/// A `struct tcp_info` of zeros: what an older kernel leaves of the fields it does not know.
pub fn zeroed_tcp_info() -> libc::tcp_info {
    // SAFETY: tcp_info is integers only: all-zero is a valid value.
    unsafe { core::mem::zeroed() }
}

/// `getsockopt(fd, IPPROTO_TCP, TCP_INFO)`: the kernel's `struct tcp_info` and the number
/// of its bytes the kernel filled (an older kernel fills a shorter prefix; the rest stays
/// zero).
pub fn tcp_info(fd: i32) -> Result<(libc::tcp_info, usize), Errno> {
    let mut info = zeroed_tcp_info();
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
    addr_call(libc::SYS_bind, fd, addr)
}

/// `connect(fd, addr)` as a raw system call (never our own hook).
pub fn connect(fd: i32, addr: &SockAddr) -> Result<(), Errno> {
    addr_call(libc::SYS_connect, fd, addr)
}

/// A system call of the form `nr(fd, addr, addrlen)` (bind, connect).
fn addr_call(nr: libc::c_long, fd: i32, addr: &SockAddr) -> Result<(), Errno> {
    // SAFETY: addr is valid for its len bytes (at most a sockaddr_storage).
    let r = unsafe {
        syscall!(
            nr,
            fd as libc::c_long,
            addr.as_ptr(),
            addr.len as libc::c_long
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
