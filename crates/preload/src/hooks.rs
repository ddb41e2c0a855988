//! The exported functions that stand in for libc's.
//!
//! Each hook is a thin shell: read the C arguments, skip everything when there is no policy
//! or the socket is not an IPv4/IPv6 TCP/UDP one, hand a safe description to [`crate::apply`],
//! then call the real function. Every hook keeps `errno` exactly as the real call leaves it
//! (our own system calls are wrapped in an [`ErrnoGuard`]), allocates nothing, takes no lock.

use crate::apply::{self, Global, Sock};
use crate::sys::{self, ErrnoGuard};
use crate::{fdtable, log_at, real};
use core::ffi::{c_int, c_void};
use core::mem::size_of;
use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use core::sync::atomic::Ordering;
use libc::{sockaddr, socklen_t};
use sockwrap_policy::catalog::{self, Family};
use sockwrap_policy::{LogLevel, Transport};

fn global() -> Option<&'static Global> {
    let p = crate::GLOBAL.load(Ordering::Acquire);
    // SAFETY: GLOBAL is either null or a leaked Box that lives for the whole process.
    let g = unsafe { p.as_ref()? };
    if g.policy.is_empty() {
        None
    } else {
        Some(g)
    }
}

/// Decodes a socket address the kernel or the program gave us.
pub fn sockaddr_from_storage(st: &libc::sockaddr_storage, len: socklen_t) -> Option<SocketAddr> {
    // SAFETY: sockaddr_storage is large and aligned enough for every family it may hold.
    unsafe { sockaddr_from_ptr(st as *const _ as *const sockaddr, len) }
}

/// # Safety
/// `p` must be null or valid for reading `len` bytes.
unsafe fn sockaddr_from_ptr(p: *const sockaddr, len: socklen_t) -> Option<SocketAddr> {
    if p.is_null() || (len as usize) < size_of::<libc::sa_family_t>() {
        return None;
    }
    // SAFETY: p is valid for at least the family field.
    let fam = unsafe { (*p).sa_family } as c_int;
    match fam {
        libc::AF_INET if len as usize >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: len covers a sockaddr_in; read_unaligned as the program's buffer may
            // not be aligned.
            let a = unsafe { (p as *const libc::sockaddr_in).read_unaligned() };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 if len as usize >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe { (p as *const libc::sockaddr_in6).read_unaligned() };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Encodes an address for a raw bind.
pub fn storage_from_sockaddr(a: &SocketAddr) -> (libc::sockaddr_storage, socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut st: libc::sockaddr_storage = unsafe { core::mem::zeroed() };
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
            unsafe { (&mut st as *mut _ as *mut libc::sockaddr_in).write(sin) };
            (st, size_of::<libc::sockaddr_in>() as socklen_t)
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
            unsafe { (&mut st as *mut _ as *mut libc::sockaddr_in6).write(sin6) };
            (st, size_of::<libc::sockaddr_in6>() as socklen_t)
        }
    }
}

fn family_of(a: &SocketAddr) -> Family {
    match a {
        SocketAddr::V4(_) => Family::V4,
        SocketAddr::V6(_) => Family::V6,
    }
}

/// TCP or UDP, asked of the kernel (the descriptor may come from anywhere: inherited,
/// received, made with a raw system call). MPTCP counts as TCP. Anything else: None.
fn transport_of(fd: i32) -> Option<Transport> {
    let ty = sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE).ok()?;
    let proto = sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PROTOCOL).ok()?;
    match (ty, proto) {
        (libc::SOCK_STREAM, libc::IPPROTO_TCP | 262) => Some(Transport::Tcp),
        (libc::SOCK_DGRAM, libc::IPPROTO_UDP) => Some(Transport::Udp),
        _ => None,
    }
}

/// Fails the hooked call with `e` (strict mode).
fn fail(e: sys::Errno) -> c_int {
    sys::set_errno(e.0);
    -1
}

/// # Safety
/// Called by C code with C's contract for `socket(2)`.
#[no_mangle]
pub unsafe extern "C" fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int {
    // SAFETY: arguments passed through.
    let fd = unsafe { real::socket(domain, ty, protocol) };
    if fd < 0 {
        return fd;
    }
    fdtable::reset(fd);
    let Some(g) = global() else { return fd };
    let family = match domain {
        libc::AF_INET => Family::V4,
        libc::AF_INET6 => Family::V6,
        _ => return fd,
    };
    crate::log::SOCKETS_SEEN.fetch_add(1, Ordering::Relaxed);
    let base = ty & 0xf;
    if base == libc::SOCK_DGRAM && (protocol == 0 || protocol == libc::IPPROTO_UDP) {
        let guard = ErrnoGuard::new();
        if let Err(e) = apply::on_udp_socket(
            g,
            Sock {
                fd,
                family,
                transport: Transport::Udp,
            },
        ) {
            // SAFETY: fd is the socket we just made; the program never saw it.
            unsafe { libc::syscall(libc::SYS_close, fd as libc::c_long) };
            drop(guard);
            return fail(e);
        }
    }
    fd
}

/// # Safety
/// C's contract for `connect(2)`.
#[no_mangle]
pub unsafe extern "C" fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    if let Some(g) = global() {
        // SAFETY: the program promises addr is valid for len bytes.
        if let Some(remote) = unsafe { sockaddr_from_ptr(addr, len) } {
            let guard = ErrnoGuard::new();
            if let Some(transport) = transport_of(fd) {
                let s = Sock {
                    fd,
                    family: family_of(&remote),
                    transport,
                };
                if let Err(e) = apply::on_connect(g, s, &remote) {
                    drop(guard);
                    return fail(e);
                }
            }
        }
    }
    // SAFETY: arguments passed through.
    unsafe { real::connect(fd, addr, len) }
}

/// # Safety
/// C's contract for `bind(2)`.
#[no_mangle]
pub unsafe extern "C" fn bind(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    if let Some(g) = global() {
        // SAFETY: the program promises addr is valid for len bytes.
        if let Some(local) = unsafe { sockaddr_from_ptr(addr, len) } {
            let guard = ErrnoGuard::new();
            if let Some(transport) = transport_of(fd) {
                let s = Sock {
                    fd,
                    family: family_of(&local),
                    transport,
                };
                if let Err(e) = apply::on_bind(g, s, &local) {
                    drop(guard);
                    return fail(e);
                }
            }
        }
    }
    // SAFETY: arguments passed through.
    unsafe { real::bind(fd, addr, len) }
}

/// # Safety
/// C's contract for `listen(2)`.
#[no_mangle]
pub unsafe extern "C" fn listen(fd: c_int, backlog: c_int) -> c_int {
    if let Some(g) = global() {
        let guard = ErrnoGuard::new();
        if let Some(Transport::Tcp) = transport_of(fd) {
            if let Some(local) = sys::getsockname(fd)
                .ok()
                .and_then(|l| sockaddr_from_storage(&l.storage, l.len))
            {
                let s = Sock {
                    fd,
                    family: family_of(&local),
                    transport: Transport::Tcp,
                };
                if let Err(e) = apply::on_listen(g, s, &local) {
                    drop(guard);
                    return fail(e);
                }
            }
        }
    }
    // SAFETY: arguments passed through.
    unsafe { real::listen(fd, backlog) }
}

/// After a successful accept: apply the rules that match the peer.
///
/// # Safety
/// `addr`/`len` are what the program passed to accept (null or valid).
unsafe fn after_accept(
    listen_fd: c_int,
    fd: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
) -> c_int {
    fdtable::reset(fd);
    let Some(g) = global() else { return fd };
    let guard = ErrnoGuard::new();
    // SAFETY: after a successful accept the kernel wrote *len bytes of the peer's address.
    let given = if addr.is_null() || len.is_null() {
        None
    } else {
        unsafe { sockaddr_from_ptr(addr, *len) }
    };
    let peer = given.or_else(|| {
        sys::getpeername(fd)
            .ok()
            .and_then(|p| sockaddr_from_storage(&p.storage, p.len))
    });
    let Some(peer) = peer else { return fd };
    let Some(local) = sys::getsockname(fd)
        .ok()
        .and_then(|l| sockaddr_from_storage(&l.storage, l.len))
    else {
        return fd;
    };
    if transport_of(fd) != Some(Transport::Tcp) {
        return fd;
    }
    crate::log::SOCKETS_SEEN.fetch_add(1, Ordering::Relaxed);
    let s = Sock {
        fd,
        family: family_of(&local),
        transport: Transport::Tcp,
    };
    if let Err(e) = apply::on_accept(g, listen_fd, s, local.port(), &peer) {
        // Strict: the connection is refused by closing it; the program sees the errno.
        // SAFETY: fd is the accepted socket the program has not seen yet.
        unsafe { libc::syscall(libc::SYS_close, fd as libc::c_long) };
        drop(guard);
        return fail(e);
    }
    fd
}

/// # Safety
/// C's contract for `accept(2)`.
#[no_mangle]
pub unsafe extern "C" fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    // SAFETY: arguments passed through.
    let r = unsafe { real::accept(fd, addr, len) };
    if r < 0 {
        return r;
    }
    // SAFETY: same arguments, after success.
    unsafe { after_accept(fd, r, addr, len) }
}

/// # Safety
/// C's contract for `accept4(2)`.
#[no_mangle]
pub unsafe extern "C" fn accept4(
    fd: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
    flags: c_int,
) -> c_int {
    // SAFETY: arguments passed through.
    let r = unsafe { real::accept4(fd, addr, len, flags) };
    if r < 0 {
        return r;
    }
    // SAFETY: same arguments, after success.
    unsafe { after_accept(fd, r, addr, len) }
}

/// The program's own setsockopt. Options sockwrap does not manage, or manages softly, pass
/// through untouched. A locked option reports success and keeps sockwrap's value.
///
/// # Safety
/// C's contract for `setsockopt(2)`.
#[no_mangle]
pub unsafe extern "C" fn setsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    val: *const c_void,
    len: socklen_t,
) -> c_int {
    if let Some(g) = global() {
        if let Some(opt) = catalog::slot_for_kernel_option(level, name) {
            if g.policy.manages(opt) {
                let guard = ErrnoGuard::new();
                if fdtable::get(fd).is_none() {
                    adopt(g, fd);
                }
                if let Some((info, ino)) = fdtable::get(fd) {
                    if info & opt.bit() as u64 != 0 && sys::inode(fd).map(|(_, i)| i) == Some(ino) {
                        crate::log::count_overridden(opt);
                        let shown: i64 = if !val.is_null() && len as usize >= 4 {
                            // SAFETY: the program promises val is valid for len bytes.
                            unsafe { (val as *const i32).read_unaligned() as i64 }
                        } else {
                            -1
                        };
                        log_at!(
                            LogLevel::Info,
                            "fd {}: program's setsockopt({}, {:#x}) overridden: {} is locked by sockwrap",
                            fd,
                            kernel_name(level, name),
                            shown,
                            opt.name()
                        );
                        drop(guard);
                        return 0;
                    }
                }
                drop(guard);
            }
        }
    }
    // SAFETY: arguments passed through.
    unsafe { real::setsockopt(fd, level, name, val, len) }
}

/// See [`apply::adopt`].
fn adopt(g: &Global, fd: c_int) {
    let Some(transport) = transport_of(fd) else {
        return;
    };
    let Some(local) = sys::getsockname(fd)
        .ok()
        .and_then(|l| sockaddr_from_storage(&l.storage, l.len))
    else {
        return;
    };
    let peer = sys::getpeername(fd)
        .ok()
        .and_then(|p| sockaddr_from_storage(&p.storage, p.len));
    let listening = transport == Transport::Tcp
        && sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_ACCEPTCONN).unwrap_or(0) != 0;
    apply::adopt(
        g,
        Sock {
            fd,
            family: family_of(&local),
            transport,
        },
        &local,
        peer.as_ref(),
        listening,
    );
}

fn kernel_name(level: c_int, name: c_int) -> &'static str {
    use sockwrap_policy::catalog::k::*;
    match (level, name) {
        (IPPROTO_IP, IP_TOS) => "IP_TOS",
        (IPPROTO_IPV6, IPV6_TCLASS) => "IPV6_TCLASS",
        (IPPROTO_IP, IP_TTL) => "IP_TTL",
        (IPPROTO_IPV6, IPV6_UNICAST_HOPS) => "IPV6_UNICAST_HOPS",
        (SOL_SOCKET, SO_PRIORITY) => "SO_PRIORITY",
        (SOL_SOCKET, SO_MARK) => "SO_MARK",
        (SOL_SOCKET, SO_KEEPALIVE) => "SO_KEEPALIVE",
        (SOL_SOCKET, SO_SNDBUF) => "SO_SNDBUF",
        (SOL_SOCKET, SO_RCVBUF) => "SO_RCVBUF",
        (SOL_SOCKET, SO_LINGER) => "SO_LINGER",
        (IPPROTO_TCP, TCP_NODELAY) => "TCP_NODELAY",
        (IPPROTO_TCP, TCP_CONGESTION) => "TCP_CONGESTION",
        (IPPROTO_TCP, TCP_KEEPIDLE) => "TCP_KEEPIDLE",
        (IPPROTO_TCP, TCP_KEEPINTVL) => "TCP_KEEPINTVL",
        (IPPROTO_TCP, TCP_KEEPCNT) => "TCP_KEEPCNT",
        (IPPROTO_TCP, TCP_USER_TIMEOUT) => "TCP_USER_TIMEOUT",
        _ => "option",
    }
}

/// # Safety
/// C's contract for `dup(2)`.
#[no_mangle]
pub unsafe extern "C" fn dup(old: c_int) -> c_int {
    // SAFETY: arguments passed through.
    let r = unsafe { real::dup(old) };
    if r >= 0 {
        fdtable::copy(old, r);
    }
    r
}

/// # Safety
/// C's contract for `dup2(2)`.
#[no_mangle]
pub unsafe extern "C" fn dup2(old: c_int, new: c_int) -> c_int {
    // SAFETY: arguments passed through.
    let r = unsafe { real::dup2(old, new) };
    if r >= 0 {
        fdtable::copy(old, r);
    }
    r
}

/// # Safety
/// C's contract for `dup3(2)`.
#[no_mangle]
pub unsafe extern "C" fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int {
    // SAFETY: arguments passed through.
    let r = unsafe { real::dup3(old, new, flags) };
    if r >= 0 {
        fdtable::copy(old, r);
    }
    r
}
