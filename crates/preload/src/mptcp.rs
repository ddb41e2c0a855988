//! Multipath TCP for programs that only know TCP.
//!
//! The protocol of a socket is chosen when it is created: the socket hook asks the policy
//! whether a TCP socket of this program could be MPTCP (the remote address and the role are
//! not known yet), and creates it with `IPPROTO_MPTCP` if so. When the kernel refuses
//! (MPTCP not built in, `net.mptcp.enabled=0`, an old kernel), the socket is made as plain
//! TCP and the process says so once; in strict mode `socket()` fails instead.
//!
//! Before `connect`/`listen` a socket can still change protocol: [`swap`] makes a new socket
//! with the other protocol, copies over the options the program already set (read back
//! from the kernel, so nothing needs recording on the hot path), and puts it on the same
//! descriptor number with `dup3`. That serves two cases: the full decision at connect time
//! differs from the guess made at creation (a rule that names a destination or a role), and
//! the program sets an option that MPTCP on this kernel rejects (TCP_USER_TIMEOUT,
//! IPV6_TCLASS...): the socket becomes plain TCP and the program's call succeeds, as it
//! would have without sockwrap.

use crate::sys::{self, Errno};
use crate::{fdtable, log_at};
use core::sync::atomic::{AtomicBool, Ordering::Relaxed};
use sockwrap_policy::catalog::Family;
use sockwrap_policy::{Ctx, LogLevel, Opt, Policy, Role, Transport, Value};

pub const IPPROTO_MPTCP: i32 = 262;
const SOL_MPTCP_TCP_IS_MPTCP: i32 = 43;

static WARNED_REFUSED: AtomicBool = AtomicBool::new(false);

/// Whether a fresh TCP socket of this process should be created as MPTCP: some rule that
/// can decide without a remote address says so, for either role.
pub fn wanted_at_creation(policy: &Policy) -> bool {
    if !policy.manages(Opt::Mptcp) {
        return false;
    }
    [None, Some(Role::Client), Some(Role::Server)]
        .into_iter()
        .any(|role| {
            let ctx = Ctx {
                transport: Transport::Tcp,
                role,
                remote: None,
                local_port: None,
            };
            policy.decide(&ctx).get(Opt::Mptcp).map(|s| s.value) == Some(Value::Bool(true))
        })
}

/// The errors with which a kernel says "no MPTCP here".
pub fn is_refusal(e: i32) -> bool {
    matches!(
        e,
        libc::ENOPROTOOPT
            | libc::EPROTONOSUPPORT
            | libc::EINVAL
            | libc::EAFNOSUPPORT
            | libc::ESOCKTNOSUPPORT
    )
}

pub fn warn_refused(e: i32, strict: bool) {
    if strict {
        log_at!(
            LogLevel::Error,
            "mptcp: the kernel refuses MPTCP sockets: {}; failing socket() (strict)",
            sys::errno_name(e)
        );
    } else if !WARNED_REFUSED.swap(true, Relaxed) {
        let hint = if e == libc::ENOPROTOOPT {
            " (is net.mptcp.enabled=0? see `sockwrap doctor`)"
        } else {
            ""
        };
        log_at!(
            LogLevel::Warn,
            "mptcp: the kernel refuses MPTCP sockets: {}{}; falling back to plain TCP (warned once per process)",
            sys::errno_name(e),
            hint
        );
    }
}

/// After a successful blocking connect: did the connection stay MPTCP, or fall back to TCP
/// in the handshake (the peer does not speak MPTCP)? The kernel tells through TCP_IS_MPTCP.
pub fn still_mptcp(fd: i32) -> Option<bool> {
    sys::getsockopt_int(fd, libc::IPPROTO_TCP, SOL_MPTCP_TCP_IS_MPTCP)
        .ok()
        .map(|v| v != 0)
}

/// Options read back from the old socket and given to the new one when they differ from a
/// fresh socket's. Kind: 0 = int, 1 = bytes (names, linger), 2 = buffer size (the kernel
/// reports double what was set).
const REPLAY: &[(i32, i32, u8)] = &[
    (libc::SOL_SOCKET, libc::SO_REUSEADDR, 0),
    (libc::SOL_SOCKET, libc::SO_REUSEPORT, 0),
    (libc::SOL_SOCKET, libc::SO_KEEPALIVE, 0),
    (libc::SOL_SOCKET, libc::SO_SNDBUF, 2),
    (libc::SOL_SOCKET, libc::SO_RCVBUF, 2),
    (libc::SOL_SOCKET, libc::SO_LINGER, 1),
    (libc::SOL_SOCKET, libc::SO_MARK, 0),
    (libc::SOL_SOCKET, libc::SO_BINDTODEVICE, 1),
    (libc::SOL_SOCKET, libc::SO_RCVLOWAT, 0),
    (libc::SOL_SOCKET, libc::SO_OOBINLINE, 0),
    (libc::IPPROTO_IP, libc::IP_TOS, 0),
    (libc::IPPROTO_IP, libc::IP_TTL, 0),
    (libc::IPPROTO_IP, libc::IP_FREEBIND, 0),
    (libc::IPPROTO_IP, libc::IP_TRANSPARENT, 0),
    (libc::IPPROTO_IP, libc::IP_BIND_ADDRESS_NO_PORT, 0),
    (libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 0),
    (libc::IPPROTO_IPV6, libc::IPV6_TCLASS, 0),
    (libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, 0),
    (libc::IPPROTO_TCP, libc::TCP_NODELAY, 0),
    (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 0),
    (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 0),
    (libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 0),
    (libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, 0),
    (libc::IPPROTO_TCP, libc::TCP_CONGESTION, 1),
    (libc::IPPROTO_TCP, libc::TCP_MAXSEG, 0),
    (libc::IPPROTO_TCP, libc::TCP_NOTSENT_LOWAT, 0),
    (libc::IPPROTO_TCP, libc::TCP_FASTOPEN_CONNECT, 0),
    (libc::IPPROTO_TCP, libc::TCP_DEFER_ACCEPT, 0),
    (libc::IPPROTO_TCP, libc::TCP_CORK, 0),
    // SO_PRIORITY last: on IPv4 setting IP_TOS overwrites it.
    (libc::SOL_SOCKET, libc::SO_PRIORITY, 0),
];

/// Replaces the socket on `fd` (not yet connected or listening) by a new one of the other
/// protocol, with the same options, flags and local address. On error nothing changed.
pub fn swap(fd: i32, family: Family, to_mptcp: bool) -> Result<(), Errno> {
    let domain = if family == Family::V4 {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    let fl = sys::fcntl(fd, libc::F_GETFL)?;
    let fdfl = sys::fcntl(fd, libc::F_GETFD)?;
    let mut ty = libc::SOCK_STREAM;
    if fl & libc::O_NONBLOCK != 0 {
        ty |= libc::SOCK_NONBLOCK;
    }
    let cloexec = fdfl & libc::FD_CLOEXEC != 0;
    let proto = if to_mptcp {
        IPPROTO_MPTCP
    } else {
        libc::IPPROTO_TCP
    };
    let new = sys::socket(domain, ty | libc::SOCK_CLOEXEC, proto)?;
    for &(level, name, kind) in REPLAY {
        let (mut old_v, mut new_v) = ([0u8; 16], [0u8; 16]);
        let Ok(ol) = sys::getsockopt_bytes(fd, level, name, &mut old_v) else {
            continue;
        };
        let nl = sys::getsockopt_bytes(new, level, name, &mut new_v).unwrap_or(usize::MAX);
        if nl == ol && old_v[..ol] == new_v[..ol] {
            continue;
        }
        let r = if kind == 2 && ol == 4 {
            let v = i32::from_ne_bytes([old_v[0], old_v[1], old_v[2], old_v[3]]) / 2;
            sys::setsockopt(new, level, name, &v.to_ne_bytes())
        } else if kind == 1
            && matches!(
                (level, name),
                (libc::SOL_SOCKET, libc::SO_BINDTODEVICE)
                    | (libc::IPPROTO_TCP, libc::TCP_CONGESTION)
            )
        {
            let end = old_v[..ol].iter().position(|&b| b == 0).unwrap_or(ol);
            sys::setsockopt(new, level, name, &old_v[..end])
        } else {
            sys::setsockopt(new, level, name, &old_v[..ol])
        };
        if let Err(e) = r {
            if to_mptcp {
                // The program set something MPTCP cannot take: stay TCP rather than drop it.
                sys::close(new);
                return Err(e);
            }
        }
    }
    let bound = sys::getsockname(fd).ok().and_then(|l| {
        let a = crate::hooks::sockaddr_from_storage(&l.storage, l.len)?;
        (a.port() != 0 || !a.ip().is_unspecified()).then_some(l)
    });
    let flags = if cloexec { libc::O_CLOEXEC } else { 0 };
    if let Err(e) = sys::dup3(new, fd, flags) {
        sys::close(new);
        return Err(e);
    }
    sys::close(new);
    if let Some(l) = bound {
        if let Err(e) = sys::bind(fd, &l.storage, l.len) {
            log_at!(
                LogLevel::Warn,
                "fd {}: could not re-bind the local address after changing protocol: {}",
                fd,
                sys::errno_name(e.0)
            );
        }
    }
    let made = if to_mptcp {
        fdtable::MADE_MPTCP
    } else {
        fdtable::PINNED_TCP
    };
    fdtable::set(fd, made | fdtable::CHECKED);
    Ok(())
}

pub fn pinned_tcp(fd: i32) -> bool {
    fdtable::get(fd).is_some_and(|info| info & fdtable::PINNED_TCP != 0)
}

pub fn made_by_us(fd: i32) -> bool {
    fdtable::get(fd).is_some_and(|info| info & fdtable::MADE_MPTCP != 0)
}

/// Whether a fresh plain TCP socket of `family` accepts this option: if TCP refuses it too,
/// the program's error is the program's own and MPTCP is kept.
pub fn tcp_accepts(family: Family, level: i32, name: i32, val: &[u8]) -> bool {
    let domain = if family == Family::V4 {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    let Ok(probe) = sys::socket(
        domain,
        libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
        libc::IPPROTO_TCP,
    ) else {
        return false;
    };
    let ok = sys::setsockopt(probe, level, name, val).is_ok();
    sys::close(probe);
    ok
}
