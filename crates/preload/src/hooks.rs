//! The exported functions that stand in for libc's.
//!
//! Each hook is a thin shell: read the C arguments, skip everything when there is no policy
//! or the socket is not an IPv4/IPv6 TCP/UDP one, hand a safe description to [`crate::apply`],
//! then call the real function. Every hook keeps `errno` exactly as the real call leaves it
//! (our own system calls are wrapped in an [`ErrnoGuard`]), allocates nothing, takes no lock.

use crate::apply::{self, Global, Sock};
use crate::sys::{self, ErrnoGuard};
use crate::{fdtable, log_at, mptcp, real, trace};
use core::ffi::{c_int, c_void};
use core::mem::size_of;
use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use core::sync::atomic::Ordering;
use libc::{sockaddr, socklen_t};
use sockwrap_policy::catalog::{self, Family};
use sockwrap_policy::{LogLevel, Transport};

fn global() -> Option<&'static Global> {
    let p = crate::GLOBAL.load(Ordering::Acquire);
    // SAFETY: GLOBAL is either null or a leaked Box that lives for the whole process; it is
    // only published when the policy has rules for this program.
    unsafe { p.as_ref() }
}

/// Decodes a socket address the kernel or the program gave us.
pub fn sockaddr_from_storage(st: &libc::sockaddr_storage, len: socklen_t) -> Option<SocketAddr> {
    // SAFETY: sockaddr_storage is large and aligned enough for every family it may hold.
    unsafe { sockaddr_from_ptr(st as *const _ as *const sockaddr, len) }
}

/// # Safety
/// `p` must be null or valid for reading `len` bytes.
pub(crate) unsafe fn sockaddr_from_ptr(p: *const sockaddr, len: socklen_t) -> Option<SocketAddr> {
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
fn kind_of(fd: i32) -> Option<(Transport, bool)> {
    let ty = sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE).ok()?;
    let proto = sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PROTOCOL).ok()?;
    match (ty, proto) {
        (libc::SOCK_STREAM, libc::IPPROTO_TCP) => Some((Transport::Tcp, false)),
        (libc::SOCK_STREAM, mptcp::IPPROTO_MPTCP) => Some((Transport::Tcp, true)),
        (libc::SOCK_DGRAM, libc::IPPROTO_UDP) => Some((Transport::Udp, false)),
        _ => None,
    }
}

fn transport_of(fd: i32) -> Option<Transport> {
    kind_of(fd).map(|(t, _)| t)
}

/// Kind bits for the fd table.
fn kind_bits(transport: Transport, mptcp: bool, family: Family) -> u64 {
    let mut b = match transport {
        Transport::Tcp => fdtable::KIND_TCP,
        Transport::Udp => fdtable::KIND_UDP,
    };
    if mptcp {
        b |= fdtable::KIND_MPTCP;
    }
    if family == Family::V6 {
        b |= fdtable::FAMILY_V6;
    }
    b
}

/// The socket behind `fd`: from the fd table when our socket/accept hook made it (no system
/// call), else asked of the kernel. `family` is the family of the address the program
/// passed; when the socket is of the other family the call is left to the kernel (which
/// answers EAFNOSUPPORT) and no option is touched.
fn sock(fd: i32, family: Family) -> Option<Sock> {
    if let Some(info) = fdtable::get(fd) {
        let known = info & (fdtable::KIND_TCP | fdtable::KIND_UDP) != 0;
        let v6 = info & fdtable::FAMILY_V6 != 0;
        if known && v6 != (family == Family::V6) {
            return None;
        }
        let transport = if info & fdtable::KIND_TCP != 0 {
            Some(Transport::Tcp)
        } else if info & fdtable::KIND_UDP != 0 {
            Some(Transport::Udp)
        } else {
            None
        };
        if let Some(transport) = transport {
            let mptcp = info & fdtable::KIND_MPTCP != 0;
            return Some(Sock {
                fd,
                family,
                transport,
                mptcp,
            });
        }
    }
    let (transport, mptcp) = kind_of(fd)?;
    let domain = sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_DOMAIN).ok()?;
    if (domain == libc::AF_INET6) != (family == Family::V6) {
        return None;
    }
    Some(Sock {
        fd,
        family,
        transport,
        mptcp,
    })
}

/// Whether the kernel would accept the program's own `setsockopt` on a socket of this
/// kind: asked of a fresh probe socket, so a locked option answers exactly as the kernel
/// would (EFAULT, EINVAL...) without the program's value ever reaching the real socket.
///
/// # Safety
/// `val`/`len` are the program's setsockopt arguments (the kernel validates the pointer).
unsafe fn probe_setsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    val: *const c_void,
    len: socklen_t,
) -> Result<(), i32> {
    let info = fdtable::get(fd).unwrap_or(0);
    let domain = if info & fdtable::FAMILY_V6 != 0 {
        libc::AF_INET6
    } else if info & (fdtable::KIND_TCP | fdtable::KIND_UDP) != 0 {
        libc::AF_INET
    } else {
        sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_DOMAIN).map_err(|e| e.0)?
    };
    let (ty, proto) = if info & fdtable::KIND_UDP != 0 {
        (libc::SOCK_DGRAM, libc::IPPROTO_UDP)
    } else if info & fdtable::KIND_MPTCP != 0 {
        (libc::SOCK_STREAM, mptcp::IPPROTO_MPTCP)
    } else {
        (libc::SOCK_STREAM, libc::IPPROTO_TCP)
    };
    let probe = sys::socket(domain, ty | libc::SOCK_CLOEXEC, proto).map_err(|e| e.0)?;
    // SAFETY: the program's pointer and length, checked by the kernel.
    let r = unsafe {
        libc::syscall(
            libc::SYS_setsockopt,
            probe as libc::c_long,
            level as libc::c_long,
            name as libc::c_long,
            val,
            len as libc::c_long,
        )
    };
    let e = sys::errno();
    sys::close(probe);
    if r < 0 {
        Err(e)
    } else {
        Ok(())
    }
}

/// Fails the hooked call with `e` (strict mode).
fn fail(e: sys::Errno) -> c_int {
    sys::set_errno(e.0);
    -1
}

/// # Safety
/// Called by C code with C's contract for `socket(2)`.
#[inline(never)]
unsafe fn socket_impl(domain: c_int, ty: c_int, protocol: c_int) -> c_int {
    let g = global();
    let inet = domain == libc::AF_INET || domain == libc::AF_INET6;
    let base = ty & 0xf;
    if let Some(g) = g {
        if inet
            && base == libc::SOCK_STREAM
            && (protocol == 0 || protocol == libc::IPPROTO_TCP)
            && mptcp::wanted_at_creation(&g.policy)
        {
            // SAFETY: the program's arguments, with the protocol changed to MPTCP.
            let fd = unsafe { real::socket(domain, ty, mptcp::IPPROTO_MPTCP) };
            if fd >= 0 {
                let fam = if domain == libc::AF_INET6 {
                    Family::V6
                } else {
                    Family::V4
                };
                let kind = kind_bits(Transport::Tcp, true, fam);
                fdtable::set(fd, fdtable::MADE_MPTCP | fdtable::CHECKED | kind);
                if trace::on() {
                    let mut e = trace::Ev::begin("apply", "socket", fd);
                    e.key("option").str("mptcp");
                    e.key("kernel").str("IPPROTO_MPTCP");
                    e.key("value").str("on");
                    e.key("result").str("ok");
                    e.finish();
                }
                crate::log::SOCKETS_SEEN.fetch_add(1, Ordering::Relaxed);
                log_at!(LogLevel::Debug, "fd {}: TCP socket created as MPTCP", fd);
                return fd;
            }
            let e = sys::errno();
            if !mptcp::is_refusal(e) {
                return fd; // EMFILE and the like: the program sees what TCP would have given
            }
            let strict = g.policy.on_error == sockwrap_policy::OnError::Fail;
            mptcp::warn_refused(e, strict);
            if strict {
                sys::set_errno(e);
                return -1;
            }
        }
    }
    // SAFETY: arguments passed through.
    let fd = unsafe { real::socket(domain, ty, protocol) };
    if fd < 0 {
        return fd;
    }
    let Some(g) = g else { return fd };
    fdtable::reset(fd);
    let family = match domain {
        libc::AF_INET => Family::V4,
        libc::AF_INET6 => Family::V6,
        _ => return fd,
    };
    crate::log::SOCKETS_SEEN.fetch_add(1, Ordering::Relaxed);
    let is_udp = base == libc::SOCK_DGRAM && (protocol == 0 || protocol == libc::IPPROTO_UDP);
    let is_tcp = base == libc::SOCK_STREAM && (protocol == 0 || protocol == libc::IPPROTO_TCP);
    if is_tcp {
        fdtable::set(
            fd,
            kind_bits(Transport::Tcp, false, family) | fdtable::CHECKED,
        );
    } else if protocol == mptcp::IPPROTO_MPTCP && base == libc::SOCK_STREAM {
        fdtable::set(
            fd,
            kind_bits(Transport::Tcp, true, family) | fdtable::CHECKED,
        );
    }
    if is_udp {
        fdtable::set(
            fd,
            kind_bits(Transport::Udp, false, family) | fdtable::CHECKED,
        );
        let guard = ErrnoGuard::new();
        let s = Sock {
            fd,
            family,
            transport: Transport::Udp,
            mptcp: false,
        };
        if let Err(e) = apply::on_udp_socket(g, s) {
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
#[inline(never)]
unsafe fn connect_impl(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    let mut was_mptcp = false;
    if let Some(g) = global() {
        // SAFETY: the program promises addr is valid for len bytes.
        if let Some(remote) = unsafe { sockaddr_from_ptr(addr, len) } {
            let guard = ErrnoGuard::new();
            if let Some(s) = sock(fd, family_of(&remote)) {
                match apply::on_connect(g, s, &remote) {
                    Ok(s) => was_mptcp = s.mptcp,
                    Err(e) => {
                        drop(guard);
                        return fail(e);
                    }
                }
            }
        }
    }
    // SAFETY: arguments passed through.
    let r = unsafe { real::connect(fd, addr, len) };
    if was_mptcp && crate::log::enabled(LogLevel::Info) {
        let guard = ErrnoGuard::new();
        match (r, mptcp::still_mptcp(fd)) {
            (0, Some(true)) => log_at!(LogLevel::Info, "fd {}: connected with MPTCP", fd),
            (0, Some(false)) => log_at!(
                LogLevel::Info,
                "fd {}: MPTCP fell back to TCP in the handshake (the peer does not speak MPTCP)",
                fd
            ),
            // Non-blocking: the outcome is logged when the program asks for SO_ERROR.
            _ => fdtable::update_bits(fd, fdtable::MPTCP_PENDING | fdtable::CHECKED, 0),
        }
        drop(guard);
    }
    r
}

/// # Safety
/// C's contract for `bind(2)`.
#[inline(never)]
unsafe fn bind_impl(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    if let Some(g) = global() {
        // SAFETY: the program promises addr is valid for len bytes.
        if let Some(local) = unsafe { sockaddr_from_ptr(addr, len) } {
            let guard = ErrnoGuard::new();
            if let Some(s) = sock(fd, family_of(&local)) {
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
#[inline(never)]
unsafe fn listen_impl(fd: c_int, backlog: c_int) -> c_int {
    if let Some(g) = global() {
        let guard = ErrnoGuard::new();
        if let Some((Transport::Tcp, is_mptcp)) = kind_of(fd) {
            if let Some(local) = sys::getsockname(fd)
                .ok()
                .and_then(|l| sockaddr_from_storage(&l.storage, l.len))
            {
                let s = Sock {
                    fd,
                    family: family_of(&local),
                    transport: Transport::Tcp,
                    mptcp: is_mptcp,
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
    let Some(g) = global() else { return fd };
    fdtable::reset(fd);
    let guard = ErrnoGuard::new();
    // SAFETY: after a successful accept the kernel wrote *len bytes of the peer's address.
    let given = if addr.is_null() || len.is_null() {
        None
    } else {
        unsafe { sockaddr_from_ptr(addr, *len) }
    };
    let listener = fdtable::get(listen_fd).unwrap_or(0);
    let known_tcp = listener & fdtable::KIND_TCP != 0 && listener & fdtable::KIND_MPTCP == 0;
    // The peer's address is asked for only when something needs it: a rule that looks at
    // addresses, an info line, MPTCP, or a listener we never saw (its family unknown).
    let need_peer = given.is_none()
        && (g.policy.any_needs_remote()
            || !known_tcp
            || crate::log::enabled(LogLevel::Info)
            || g.policy.manages(sockwrap_policy::Opt::Mptcp));
    let peer = given.or_else(|| {
        if !need_peer {
            return None;
        }
        sys::getpeername(fd)
            .ok()
            .and_then(|p| sockaddr_from_storage(&p.storage, p.len))
    });
    if need_peer && peer.is_none() {
        return fd;
    }
    // The local port only matters to rules that match on it.
    let local_port = if g.policy.any_local_port() {
        match sys::getsockname(fd)
            .ok()
            .and_then(|l| sockaddr_from_storage(&l.storage, l.len))
        {
            Some(l) => l.port(),
            None => return fd,
        }
    } else {
        0
    };
    let family = match &peer {
        Some(p) => family_of(p),
        None if listener & fdtable::FAMILY_V6 != 0 => Family::V6,
        None => Family::V4,
    };
    // An accepted socket is what its listener is (TCP, or MPTCP/TCP when the listener is
    // MPTCP: then the kernel says which); a listener we never saw is asked about.
    let s = if known_tcp {
        Sock {
            fd,
            family,
            transport: Transport::Tcp,
            mptcp: false,
        }
    } else {
        match kind_of(fd) {
            Some((Transport::Tcp, mptcp)) => Sock {
                fd,
                family,
                transport: Transport::Tcp,
                mptcp,
            },
            _ => return fd,
        }
    };
    fdtable::set(
        fd,
        kind_bits(Transport::Tcp, s.mptcp, family) | fdtable::CHECKED,
    );
    crate::log::SOCKETS_SEEN.fetch_add(1, Ordering::Relaxed);
    if let (true, Some(peer)) = (g.policy.manages(sockwrap_policy::Opt::Mptcp), &peer) {
        if s.mptcp {
            log_at!(
                LogLevel::Info,
                "fd {}: accepted an MPTCP connection from {}",
                fd,
                peer
            );
        } else {
            log_at!(
                LogLevel::Info,
                "fd {}: accepted a plain TCP connection from {} (no MPTCP from the peer)",
                fd,
                peer
            );
        }
    }
    if let Err(e) = apply::on_accept(g, listen_fd, s, local_port, peer.as_ref()) {
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
#[inline(never)]
unsafe fn accept_impl(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
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
#[inline(never)]
unsafe fn accept4_impl(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> c_int {
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
#[inline(never)]
unsafe fn setsockopt_impl(
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
                if let Some(info) = fdtable::get(fd) {
                    if info & opt.bit() as u64 != 0 {
                        // SAFETY: the program's arguments.
                        if let Err(e) = unsafe { probe_setsockopt(fd, level, name, val, len) } {
                            drop(guard);
                            sys::set_errno(e);
                            return -1;
                        }
                        crate::log::count_overridden(opt);
                        if trace::on() {
                            let mut e = trace::Ev::begin("override", "setsockopt", fd);
                            e.key("option").str(opt.name());
                            e.key("kernel").str(kernel_name(level, name));
                            e.open_obj("program");
                            // SAFETY: the program promises val is valid for len bytes.
                            unsafe { trace::opt_args(&mut e, level, name, val, len as usize) };
                            e.close_obj();
                            e.key("result").str("kept sockwrap's value (locked)");
                            e.finish();
                        }
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
    let r = unsafe { real::setsockopt(fd, level, name, val, len) };
    if r == 0 {
        return r;
    }
    let e = sys::errno();
    if matches!(e, libc::ENOPROTOOPT | libc::EOPNOTSUPP) && mptcp::made_by_us(fd) {
        // SAFETY: the program's arguments, passed on unchanged.
        return unsafe { mptcp_refused_option(fd, level, name, val, len, e) };
    }
    r
}

static WARNED_MPTCP_OPTION: core::sync::atomic::AtomicBool =
    core::sync::atomic::AtomicBool::new(false);

/// The program set an option that MPTCP on this kernel rejects, on a socket sockwrap made
/// MPTCP. Before connect/listen: make it plain TCP and set the option there. After: the
/// program would have succeeded over TCP, so report success and warn once.
///
/// # Safety
/// The program's setsockopt arguments.
unsafe fn mptcp_refused_option(
    fd: c_int,
    level: c_int,
    name: c_int,
    val: *const c_void,
    len: socklen_t,
    e: i32,
) -> c_int {
    let connected = sys::getpeername(fd).is_ok();
    let listening =
        sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_ACCEPTCONN).unwrap_or(0) != 0;
    let family = sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_DOMAIN).ok();
    let family = match family {
        Some(libc::AF_INET) => Family::V4,
        _ => Family::V6,
    };
    let value: &[u8] = if val.is_null() {
        &[]
    } else {
        // SAFETY: the program promises val is valid for len bytes.
        unsafe { core::slice::from_raw_parts(val as *const u8, len as usize) }
    };
    if !mptcp::tcp_accepts(family, level, name, value) {
        // Plain TCP refuses it too (e.g. IPV6_V6ONLY on an IPv4 socket): the program's own
        // error; keep MPTCP.
        sys::set_errno(e);
        return -1;
    }
    if !connected && !listening && mptcp::swap(fd, family, false).is_ok() {
        log_at!(
            LogLevel::Info,
            "fd {}: MPTCP on this kernel rejects {} ({}); the socket was switched to plain TCP before connecting",
            fd,
            kernel_name(level, name),
            sys::errno_name(e)
        );
        // SAFETY: the program's arguments, now on the TCP socket.
        return unsafe { real::setsockopt(fd, level, name, val, len) };
    }
    if !WARNED_MPTCP_OPTION.swap(true, Ordering::Relaxed) {
        log_at!(
            LogLevel::Warn,
            "fd {}: MPTCP on this kernel rejects {} ({}) on a connected socket; reported as success so the program goes on without it (warned once)",
            fd,
            kernel_name(level, name),
            sys::errno_name(e)
        );
    }
    sys::set_errno(0);
    0
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
    let Some(s) = sock(fd, family_of(&local)) else {
        return;
    };
    apply::adopt(g, s, &local, peer.as_ref(), listening);
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
        (IPPROTO_TCP, 3) => "TCP_CORK",
        (IPPROTO_TCP, 12) => "TCP_QUICKACK",
        (IPPROTO_TCP, 10) => "TCP_WINDOW_CLAMP",
        (IPPROTO_TCP, 31) => "TCP_ULP",
        (IPPROTO_TCP, 30) => "TCP_FASTOPEN_CONNECT",
        _ => "option",
    }
}

/// Watches for the outcome of a non-blocking MPTCP connect: programs ask for SO_ERROR once
/// the socket is writable, and then the kernel can say whether MPTCP survived the handshake.
/// Every other call passes straight through.
///
/// # Safety
/// C's contract for `getsockopt(2)`.
#[inline(never)]
unsafe fn getsockopt_impl(
    fd: c_int,
    level: c_int,
    name: c_int,
    val: *mut c_void,
    len: *mut socklen_t,
) -> c_int {
    // SAFETY: arguments passed through.
    let r = unsafe { real::getsockopt(fd, level, name, val, len) };
    if level == libc::SOL_SOCKET && name == libc::SO_ERROR && r == 0 {
        if let Some(info) = fdtable::get(fd) {
            if info & fdtable::MPTCP_PENDING != 0 {
                let guard = ErrnoGuard::new();
                // SAFETY: the kernel just wrote an int there.
                let so_error = if val.is_null() {
                    -1
                } else {
                    unsafe { (val as *const i32).read_unaligned() }
                };
                if so_error == 0 {
                    fdtable::update_bits(fd, 0, fdtable::MPTCP_PENDING);
                    match mptcp::still_mptcp(fd) {
                        Some(true) => log_at!(LogLevel::Info, "fd {}: connected with MPTCP", fd),
                        Some(false) => log_at!(
                            LogLevel::Info,
                            "fd {}: MPTCP fell back to TCP in the handshake (the peer does not speak MPTCP)",
                            fd
                        ),
                        None => {}
                    }
                }
                drop(guard);
            }
        }
    }
    r
}

/// Forgets the closed descriptor's locks. Costs one atomic load when there is no policy.
///
/// # Safety
/// C's contract for `close(2)`.
#[inline(never)]
unsafe fn close_impl(fd: c_int) -> c_int {
    if global().is_some() {
        fdtable::reset(fd);
    }
    // SAFETY: arguments passed through.
    unsafe { real::close(fd) }
}

/// # Safety
/// C's contract for `close_range(2)`.
#[inline(never)]
unsafe fn close_range_full(first: libc::c_uint, last: libc::c_uint, flags: c_int) -> c_int {
    // SAFETY: arguments passed through.
    let r = unsafe { real::close_range(first, last, flags) };
    // CLOSE_RANGE_CLOEXEC (4) only marks descriptors; nothing is closed then.
    if r == 0 && flags & 4 == 0 && global().is_some() {
        fdtable::reset_range(first, last);
    }
    if r == 0 && flags & 4 == 0 && trace::on() {
        trace::untrack_range(first, last);
    }
    r
}

/// # Safety
/// C's contract for `closefrom(3)`.
#[inline(never)]
unsafe fn closefrom_full(first: c_int) {
    if global().is_some() && first >= 0 {
        fdtable::reset_range(first as u32, u32::MAX);
    }
    if trace::on() && first >= 0 {
        trace::untrack_range(first as u32, u32::MAX);
    }
    // SAFETY: arguments passed through.
    unsafe { real::closefrom(first) }
}

/// # Safety
/// C's contract for `dup(2)`.
#[inline(never)]
unsafe fn dup_full(old: c_int) -> c_int {
    // SAFETY: arguments passed through.
    let r = unsafe { real::dup(old) };
    if r >= 0 {
        fdtable::copy(old, r);
    }
    r
}

/// # Safety
/// C's contract for `dup2(2)`.
#[inline(never)]
unsafe fn dup2_full(old: c_int, new: c_int) -> c_int {
    // SAFETY: arguments passed through.
    let r = unsafe { real::dup2(old, new) };
    if r >= 0 {
        fdtable::copy(old, r);
    }
    r
}

/// # Safety
/// C's contract for `dup3(2)`.
#[inline(never)]
unsafe fn dup3_full(old: c_int, new: c_int, flags: c_int) -> c_int {
    // SAFETY: arguments passed through.
    let r = unsafe { real::dup3(old, new, flags) };
    if r >= 0 {
        fdtable::copy(old, r);
    }
    r
}

// ---------------------------------------------------------------------------------------
// The exported hooks: the policy work above, plus one trace line per call when
// SOCKWRAP_TRACE is set. With tracing off each costs one relaxed load and a branch.
// ---------------------------------------------------------------------------------------

/// Runs after a traced call: keeps the call's errno for the program.
struct Saved(c_int);

impl Saved {
    fn now() -> Saved {
        Saved(sys::errno())
    }
    fn restore(self) {
        sys::set_errno(self.0)
    }
}

/// # Safety
/// Called by C code with C's contract for `socket(2)`.
#[inline(never)]
unsafe fn socket_full(domain: c_int, ty: c_int, protocol: c_int) -> c_int {
    // SAFETY: arguments passed through.
    let r = unsafe { socket_impl(domain, ty, protocol) };
    if !trace::on() {
        return r;
    }
    let saved = Saved::now();
    let mut e = trace::Ev::begin("call", "socket", r);
    trace::socket_args(&mut e, domain, ty, protocol);
    e.result(r as i64, saved.0);
    if r >= 0 && (domain == libc::AF_INET || domain == libc::AF_INET6) {
        let inet = trace::transport(&mut e, r);
        trace::track(r, inet);
    } else if r >= 0 {
        trace::track(r, false);
    }
    e.finish();
    saved.restore();
    r
}

/// # Safety
/// C's contract for `connect(2)`.
#[inline(never)]
unsafe fn connect_full(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    if !trace::on() {
        // SAFETY: arguments passed through.
        return unsafe { connect_impl(fd, addr, len) };
    }
    let t0 = trace::now_mono();
    // SAFETY: arguments passed through.
    let r = unsafe { connect_impl(fd, addr, len) };
    let dur = trace::now_mono().saturating_sub(t0);
    let saved = Saved::now();
    let mut e = trace::Ev::begin("call", "connect", fd);
    e.open_obj("args");
    e.first("addr");
    // SAFETY: the program promises addr is valid for len bytes.
    unsafe { trace::addr(&mut e, addr, len) };
    e.close_obj();
    e.result(r as i64, saved.0);
    e.key("dur_ns").int(dur as i64);
    // SAFETY: as above.
    if unsafe { sockaddr_from_ptr(addr, len) }.is_some() && trace::transport(&mut e, fd) {
        trace::local(&mut e, fd);
        trace::track(fd, true);
    }
    e.finish();
    saved.restore();
    r
}

/// # Safety
/// C's contract for `bind(2)`.
#[inline(never)]
unsafe fn bind_full(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    // SAFETY: arguments passed through.
    let r = unsafe { bind_impl(fd, addr, len) };
    if !trace::on() {
        return r;
    }
    let saved = Saved::now();
    let mut e = trace::Ev::begin("call", "bind", fd);
    e.open_obj("args");
    e.first("addr");
    // SAFETY: the program promises addr is valid for len bytes.
    unsafe { trace::addr(&mut e, addr, len) };
    e.close_obj();
    e.result(r as i64, saved.0);
    // SAFETY: as above.
    if r == 0 && unsafe { sockaddr_from_ptr(addr, len) }.is_some() {
        trace::local(&mut e, fd);
    }
    e.finish();
    saved.restore();
    r
}

/// # Safety
/// C's contract for `listen(2)`.
#[inline(never)]
unsafe fn listen_full(fd: c_int, backlog: c_int) -> c_int {
    // SAFETY: arguments passed through.
    let r = unsafe { listen_impl(fd, backlog) };
    if !trace::on() {
        return r;
    }
    let saved = Saved::now();
    let mut e = trace::Ev::begin("call", "listen", fd);
    e.open_obj("args");
    e.first("backlog").int(backlog as i64);
    e.close_obj();
    e.result(r as i64, saved.0);
    if trace::transport(&mut e, fd) {
        trace::local(&mut e, fd);
        trace::track(fd, true);
    }
    e.finish();
    saved.restore();
    r
}

fn trace_accept(call: &str, fd: c_int, flags: Option<c_int>, r: c_int, t0: u64) {
    let dur = trace::now_mono().saturating_sub(t0);
    let saved = Saved::now();
    let mut e = trace::Ev::begin("call", call, fd);
    if let Some(f) = flags {
        e.open_obj("args");
        e.first("flags").int(f as i64);
        e.close_obj();
    }
    e.result(r as i64, saved.0);
    e.key("dur_ns").int(dur as i64);
    if r >= 0 {
        let inet = trace::transport(&mut e, r);
        if inet {
            trace::local(&mut e, r);
            trace::peer(&mut e, r);
        }
        trace::track(r, inet);
    }
    e.finish();
    saved.restore();
}

/// # Safety
/// C's contract for `accept(2)`.
#[inline(never)]
unsafe fn accept_full(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    if !trace::on() {
        // SAFETY: arguments passed through.
        return unsafe { accept_impl(fd, addr, len) };
    }
    let t0 = trace::now_mono();
    // SAFETY: arguments passed through.
    let r = unsafe { accept_impl(fd, addr, len) };
    trace_accept("accept", fd, None, r, t0);
    r
}

/// # Safety
/// C's contract for `accept4(2)`.
#[inline(never)]
unsafe fn accept4_full(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> c_int {
    if !trace::on() {
        // SAFETY: arguments passed through.
        return unsafe { accept4_impl(fd, addr, len, flags) };
    }
    let t0 = trace::now_mono();
    // SAFETY: arguments passed through.
    let r = unsafe { accept4_impl(fd, addr, len, flags) };
    trace_accept("accept4", fd, Some(flags), r, t0);
    r
}

/// # Safety
/// C's contract for `setsockopt(2)`.
#[inline(never)]
unsafe fn setsockopt_full(
    fd: c_int,
    level: c_int,
    name: c_int,
    val: *const c_void,
    len: socklen_t,
) -> c_int {
    // SAFETY: arguments passed through.
    let r = unsafe { setsockopt_impl(fd, level, name, val, len) };
    if !trace::on() {
        return r;
    }
    let saved = Saved::now();
    let mut e = trace::Ev::begin("call", "setsockopt", fd);
    e.open_obj("args");
    // SAFETY: the program promises val is valid for len bytes.
    unsafe { trace::opt_args(&mut e, level, name, val, len as usize) };
    e.close_obj();
    e.result(r as i64, saved.0);
    e.finish();
    saved.restore();
    r
}

/// # Safety
/// C's contract for `getsockopt(2)`.
#[inline(never)]
unsafe fn getsockopt_full(
    fd: c_int,
    level: c_int,
    name: c_int,
    val: *mut c_void,
    len: *mut socklen_t,
) -> c_int {
    // SAFETY: arguments passed through.
    let r = unsafe { getsockopt_impl(fd, level, name, val, len) };
    if !trace::on() {
        return r;
    }
    let saved = Saved::now();
    let mut e = trace::Ev::begin("call", "getsockopt", fd);
    e.open_obj("args");
    let n = if r == 0 && !len.is_null() {
        // SAFETY: after success the kernel wrote the length there.
        unsafe { *len as usize }
    } else {
        0
    };
    let shown = if r == 0 {
        val as *const c_void
    } else {
        core::ptr::null()
    };
    // SAFETY: after success the kernel wrote n bytes at val.
    unsafe { trace::opt_args(&mut e, level, name, shown, n) };
    e.close_obj();
    e.result(r as i64, saved.0);
    e.finish();
    saved.restore();
    r
}

/// `close`: forgets locks ([`close_impl`]) and, when tracing, records the end of an inet
/// socket. With tracing off the trace part is one relaxed load and a branch.
///
/// # Safety
/// C's contract for `close(2)`.
#[inline(never)]
unsafe fn close_full(fd: c_int) -> c_int {
    if !trace::on() || !trace::untrack(fd) {
        // SAFETY: arguments passed through.
        return unsafe { close_impl(fd) };
    }
    // SAFETY: arguments passed through.
    let r = unsafe { close_impl(fd) };
    let saved = Saved::now();
    let mut e = trace::Ev::begin("call", "close", fd);
    e.result(r as i64, saved.0);
    e.finish();
    saved.restore();
    r
}

// ---- exported entry points ----
//
// Every exported hook is one indirect jump through its own slot in `target`:
//
// * before the constructor has decided, the slot holds `first::NAME`, which looks at
//   GLOBAL and the trace flag on every call (a hook can run before our constructor, from
//   another library's constructor);
// * once the constructor has published a policy or turned tracing on, [`route`] points the
//   slot at `NAME_full` (policy and trace work);
// * with neither, the slot ends up holding libc's function itself, so the program pays one
//   load and one jump per call: the cost of the cheapest possible interposer.

/// Set by the constructor once it has decided (policy or not, trace or not).
/// In `.data`, not `.bss`: with the other statics every exec touches (see `GLOBAL`).
#[link_section = ".data"]
static DECIDED: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// `closefrom` as a C function for its slot (the real one may be missing: see
/// [`real::closefrom`]).
unsafe extern "C" fn closefrom_pass(first: c_int) {
    // SAFETY: arguments passed through.
    unsafe { real::closefrom(first) }
}

macro_rules! hooks {
    ($( $name:ident ( $($arg:ident : $ty:ty),* ) $(-> $ret:ty)? => $full:ident, $work:ident, pass $pass:expr ; )*) => {
        /// Where each exported hook jumps.
        #[allow(non_upper_case_globals)]
        mod target {
            use super::*;
            use core::sync::atomic::AtomicPtr;
            $( pub static $name: AtomicPtr<()> = AtomicPtr::new(first::$name as *mut ()); )*
        }

        /// The slots' first occupants: decide on every call until the constructor has.
        mod first {
            use super::*;
            $(
                /// # Safety
                /// C's contract for the function of this name.
                pub unsafe extern "C" fn $name($($arg: $ty),*) $(-> $ret)? {
                    if crate::GLOBAL.load(Ordering::Acquire).is_null() && !trace::on() {
                        // SAFETY: arguments passed through.
                        let r = unsafe { real::$name($($arg),*) };
                        if DECIDED.load(Ordering::Acquire) {
                            // Nothing to do in this process: from now on, libc directly.
                            let p: usize = $pass;
                            if p != 0 {
                                target::$name.store(p as *mut (), Ordering::Release);
                            }
                        }
                        return r;
                    }
                    // SAFETY: arguments passed through.
                    unsafe { $full($($arg),*) }
                }
            )*
        }

        $(
            /// Exported hook: one jump through its slot (see the module note above).
            ///
            /// # Safety
            /// C's contract for the function of this name.
            #[no_mangle]
            pub unsafe extern "C" fn $name($($arg: $ty),*) $(-> $ret)? {
                let p = target::$name.load(Ordering::Acquire);
                // SAFETY: every slot holds a function of exactly this C type: `first::NAME`,
                // `NAME_full`, or the address dlsym gave for the real NAME.
                let f: unsafe extern "C" fn($($ty),*) $(-> $ret)? = unsafe { core::mem::transmute(p) };
                // SAFETY: arguments passed through.
                unsafe { f($($arg),*) }
            }
        )*

        /// Called once by the constructor: `policy` = a policy was published, `tracing` = the
        /// trace is on. With the trace off, the slots skip the trace layer (`NAME_full`) and
        /// go straight to the policy work.
        pub fn route(policy: bool, tracing: bool) {
            $(
                if tracing {
                    target::$name.store(full::$name as *mut (), Ordering::Release);
                } else if policy {
                    target::$name.store(work::$name as *mut (), Ordering::Release);
                } else {
                    let p: usize = $pass;
                    if p != 0 {
                        target::$name.store(p as *mut (), Ordering::Release);
                    }
                }
            )*
            DECIDED.store(true, Ordering::Release);
        }

        /// C-ABI shells around the `_full` functions (policy and trace), for the slots.
        mod full {
            use super::*;
            $(
                /// # Safety
                /// C's contract for the function of this name.
                pub unsafe extern "C" fn $name($($arg: $ty),*) $(-> $ret)? {
                    // SAFETY: arguments passed through.
                    unsafe { $full($($arg),*) }
                }
            )*
        }

        /// C-ABI shells around the policy work alone (`_impl`, or `_full` where the two are
        /// one function), for the slots when the trace is off.
        mod work {
            use super::*;
            $(
                /// # Safety
                /// C's contract for the function of this name.
                pub unsafe extern "C" fn $name($($arg: $ty),*) $(-> $ret)? {
                    // SAFETY: arguments passed through.
                    unsafe { $work($($arg),*) }
                }
            )*
        }
    };
}

hooks! {
    socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int => socket_full, socket_impl, pass real::addr(&real::slots::socket);
    connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int => connect_full, connect_impl, pass real::addr(&real::slots::connect);
    bind(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int => bind_full, bind_impl, pass real::addr(&real::slots::bind);
    listen(fd: c_int, backlog: c_int) -> c_int => listen_full, listen_impl, pass real::addr(&real::slots::listen);
    accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int => accept_full, accept_impl, pass real::addr(&real::slots::accept);
    accept4(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> c_int => accept4_full, accept4_impl, pass real::addr(&real::slots::accept4);
    setsockopt(fd: c_int, level: c_int, name: c_int, val: *const c_void, len: socklen_t) -> c_int => setsockopt_full, setsockopt_impl, pass real::addr(&real::slots::setsockopt);
    getsockopt(fd: c_int, level: c_int, name: c_int, val: *mut c_void, len: *mut socklen_t) -> c_int => getsockopt_full, getsockopt_impl, pass real::addr(&real::slots::getsockopt);
    close(fd: c_int) -> c_int => close_full, close_impl, pass real::addr(&real::slots::close);
    close_range(first: libc::c_uint, last: libc::c_uint, flags: c_int) -> c_int => close_range_full, close_range_full, pass real::addr(&real::slots::close_range);
    closefrom(first: c_int) => closefrom_full, closefrom_full, pass closefrom_pass as *const () as usize;
    dup(old: c_int) -> c_int => dup_full, dup_full, pass real::addr(&real::slots::dup);
    dup2(old: c_int, new: c_int) -> c_int => dup2_full, dup2_full, pass real::addr(&real::slots::dup2);
    dup3(old: c_int, new: c_int, flags: c_int) -> c_int => dup3_full, dup3_full, pass real::addr(&real::slots::dup3);
}
