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

use crate::fdstate::{self, FdState, Kind};
#[allow(unused_imports)]
use crate::prelude::*;
use crate::sys::{self, Errno};
use crate::{log_at, trace};
use core::sync::atomic::{AtomicBool, Ordering::Relaxed};
use sockwrap_policy::catalog::{self, Enc, Family};
use sockwrap_policy::{Ctx, LogLevel, Opt, Policy, Role, Transport, Value};

pub use crate::sys::IPPROTO_MPTCP;
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
                role,
                ..Ctx::new(Transport::Tcp)
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

/// Replaces the socket on `fd` (not yet connected or listening) by a new one of the other
/// protocol, with the same options, flags and local address. On error nothing changed.
pub fn swap(fd: i32, family: Family, to_mptcp: bool) -> Result<(), Errno> {
    let domain = if family == Family::V4 {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    let fl = sys::fcntl(fd, libc::F_GETFL, 0)?;
    let fdfl = sys::fcntl(fd, libc::F_GETFD, 0)?;
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
    // Every option the catalog knows, and those the program may have set itself, read
    // back from the old socket and given to the new one when they differ from a fresh
    // socket's.
    for ko in catalog::carried_options() {
        let (level, name) = (ko.level, ko.name);
        let (mut old_v, mut new_v) = ([0u8; 16], [0u8; 16]);
        let Ok(ol) = sys::getsockopt_bytes(fd, level, name, &mut old_v) else {
            continue;
        };
        let nl = sys::getsockopt_bytes(new, level, name, &mut new_v).unwrap_or(usize::MAX);
        if nl == ol && old_v[..ol] == new_v[..ol] {
            continue;
        }
        let r = match ko.enc {
            // The kernel reports twice the size that was set.
            Enc::BufSize if ol == 4 => {
                let v = i32::from_ne_bytes([old_v[0], old_v[1], old_v[2], old_v[3]]) / 2;
                sys::setsockopt(new, level, name, &v.to_ne_bytes())
            }
            Enc::Str | Enc::StrNul => {
                let end = old_v[..ol].iter().position(|&b| b == 0).unwrap_or(ol);
                sys::setsockopt(new, level, name, &old_v[..end])
            }
            _ => sys::setsockopt(new, level, name, &old_v[..ol]),
        };
        if let Err(e) = r {
            if to_mptcp {
                // The program set something MPTCP cannot take: stay TCP rather than drop it.
                sys::close(new);
                return Err(e);
            }
        }
    }
    let bound = sys::getsockname(fd).ok().filter(|l| {
        l.as_socket()
            .is_some_and(|a| a.port() != 0 || !a.ip().is_unspecified())
    });
    let flags = if cloexec { libc::O_CLOEXEC } else { 0 };
    if let Err(e) = sys::dup3(new, fd, flags) {
        sys::close(new);
        return Err(e);
    }
    sys::close(new);
    if let Some(l) = bound {
        if let Err(e) = sys::bind(fd, &l) {
            log_at!(
                LogLevel::Warn,
                "fd {}: could not re-bind the local address after changing protocol: {}",
                fd,
                sys::errno_name(e.0)
            );
        }
    }
    let kind = Kind {
        transport: sockwrap_policy::Transport::Tcp,
        mptcp: to_mptcp,
        family,
    };
    fdstate::set(
        fd,
        FdState::seen(Some(kind))
            .with_made_mptcp(to_mptcp)
            .with_pinned_tcp(!to_mptcp),
    );
    trace::retrack(fd, kind);
    Ok(())
}

pub fn made_by_us(fd: i32) -> bool {
    fdstate::get(fd).is_some_and(FdState::made_mptcp)
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

/// The trace line for a TCP socket the socket hook created as MPTCP.
pub fn trace_created(fd: i32) {
    let mut e = trace::Ev::begin("apply", "socket", fd);
    e.key("option").str("mptcp");
    e.key("kernel").str("IPPROTO_MPTCP");
    e.key("value").str("on");
    e.key("result").str("ok");
    e.finish();
}
