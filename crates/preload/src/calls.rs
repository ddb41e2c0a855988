//! What each hooked call does, in safe Rust.
//!
//! [`crate::hooks`] is the C boundary: it turns the program's raw arguments into safe
//! values once and hands the real libc call over as a closure. The functions here decide
//! (is this a socket sockwrap cares about? which stage?), call [`crate::apply`] around the
//! real call, and keep `errno` exactly as the real call left it: our own system calls run
//! under an [`ErrnoGuard`]; a strict-mode failure sets the errno it reports.

use crate::apply::{self, family_of, Global, Sock};
use crate::fdstate::{self, FdState, Kind};
#[allow(unused_imports)]
use crate::prelude::*;
use crate::sys::{self, Errno, ErrnoGuard, SockAddr};
use crate::{actions, log, log_at, mptcp, names, trace};
use core::net::SocketAddr;
use core::sync::atomic::{AtomicBool, Ordering::Relaxed};
use sockwrap_policy::catalog::{self, Family};
use sockwrap_policy::{rules, LogLevel, Opt, Transport};

/// Fails the hooked call with `e` (strict mode).
fn fail(e: Errno) -> i32 {
    sys::set_errno(e.0);
    -1
}

/// The socket behind `fd`: from the fd table when our socket/accept hook made it (no system
/// call), else asked of the kernel. `family` is the family of the address the program
/// passed; when the socket is of the other family the call is left to the kernel (which
/// answers EAFNOSUPPORT) and no option is touched.
// The table look-up inline, the kernel's answer out of line: called, the look-up cost ~12
// instructions per connect in saved registers (callgrind on bench/build/connbench).
#[inline(always)]
fn sock(fd: i32, family: Family) -> Option<Sock> {
    if let Some(k) = fdstate::get(fd).and_then(FdState::kind) {
        if k.family != family {
            return None;
        }
        return Some(Sock {
            fd,
            family,
            transport: k.transport,
            mptcp: k.mptcp,
        });
    }
    sock_of_kernel(fd, family)
}

#[inline(never)]
fn sock_of_kernel(fd: i32, family: Family) -> Option<Sock> {
    let (transport, mptcp) = fdstate::kernel_kind(fd)?;
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

/// `socket()`: TCP sockets become MPTCP when the policy says so at creation; UDP sockets
/// get the rules that need no destination.
pub fn socket(g: &Global, domain: i32, ty: i32, protocol: i32, real: impl Fn(i32) -> i32) -> i32 {
    let family = match domain {
        libc::AF_INET => Family::V4,
        libc::AF_INET6 => Family::V6,
        _ => {
            let fd = real(protocol);
            fdstate::reset(fd); // a new socket on this number: nothing known
            return fd;
        }
    };
    let base = ty & 0xf;
    let plain_tcp = base == libc::SOCK_STREAM && (protocol == 0 || protocol == libc::IPPROTO_TCP);
    if plain_tcp && g.mptcp_at_creation {
        let fd = real(mptcp::IPPROTO_MPTCP);
        if fd >= 0 {
            let kind = Kind {
                transport: Transport::Tcp,
                mptcp: true,
                family,
            };
            fdstate::set(fd, FdState::seen(Some(kind)).with_made_mptcp(true));
            if trace::on() {
                mptcp::trace_created(fd);
            }
            log::socket_seen();
            log_at!(LogLevel::Debug, "fd {}: TCP socket created as MPTCP", fd);
            return fd;
        }
        let e = sys::errno();
        if !mptcp::is_refusal(e) {
            return fd; // EMFILE and the like: the program sees what TCP would have given
        }
        mptcp::warn_refused(e, g.strict());
        if g.strict() {
            sys::set_errno(e);
            return -1;
        }
    }
    let fd = real(protocol);
    if fd < 0 {
        return fd;
    }
    log::socket_seen();
    let kind = fdstate::transport_of(base, protocol).map(|(transport, mptcp)| Kind {
        transport,
        mptcp,
        family,
    });
    let Some(kind) = kind else {
        fdstate::reset(fd);
        return fd;
    };
    fdstate::set(fd, FdState::seen(Some(kind)));
    if kind.transport == Transport::Udp {
        let guard = ErrnoGuard::new();
        let s = Sock {
            fd,
            family,
            transport: Transport::Udp,
            mptcp: false,
        };
        if let Err(e) = apply::on_udp_socket(g, s) {
            sys::close(fd); // the program never saw it
            drop(guard);
            return fail(e);
        }
    }
    fd
}

/// `connect()`: the options for this destination go on before the SYN (a policy with
/// connection actions or host rules goes through [`connect_acting`] instead).
pub fn connect(g: &Global, fd: i32, remote: Option<SocketAddr>, real: impl FnOnce() -> i32) -> i32 {
    let Some(remote) = remote else {
        return real();
    };
    match options_for_connect(g, fd, &remote, None) {
        Ok(Some(s)) => {
            let r = real();
            connected(fd, s, r)
        }
        Ok(None) => real(),
        Err(e) => fail(e),
    }
}

/// [`connect`] for a policy with connection actions or host-name rules (`connect_extras`):
/// the destination's name, then the options, then the actions. `real` is the program's
/// connect, to the address given (None: the program's own). (Only such a policy can have
/// parked sockets.)
pub fn connect_acting(
    g: &Global,
    fd: i32,
    remote: Option<SocketAddr>,
    real: impl FnOnce(Option<&SockAddr>) -> i32,
) -> i32 {
    let Some(remote) = remote else {
        return real(None);
    };
    if let Some(e) = actions::parked_connect(fd) {
        return fail(Errno(e));
    }
    // The name buffer is made only for a policy with host rules (it is 253 bytes). The
    // look-up makes no system call, so errno is untouched.
    let mut name: names::NameBuf;
    let host = if g.policy.any_host() {
        name = names::NameBuf::new();
        names::lookup(rules::ip_key(remote.ip()), &mut name)
    } else {
        None
    };
    let s = match options_for_connect(g, fd, &remote, host) {
        Ok(Some(s)) => s,
        Ok(None) => return real(None),
        Err(e) => return fail(e),
    };
    // Matching rules makes no system call: errno is untouched.
    let acts = if g.policy.any_actions() {
        Some(
            g.policy
                .connect_actions(&apply::connect_ctx(s, &remote, host)),
        )
        .filter(|a| !a.actions.is_empty())
    } else {
        None
    };
    let r = match acts {
        Some(a) => actions::connect(g, s, &remote, &a, real),
        None => real(None),
    };
    connected(fd, s, r)
}

/// The options of a connect of `fd` to `remote` (which came from the name `host`), with
/// errno kept as it was: `Ok(None)` for a socket sockwrap leaves to the kernel, `Err` for
/// a strict-mode refusal. Shared by both connect paths, inlined into each.
#[inline(always)]
fn options_for_connect(
    g: &Global,
    fd: i32,
    remote: &SocketAddr,
    host: Option<&str>,
) -> Result<Option<apply::Sock>, Errno> {
    let _guard = ErrnoGuard::new();
    match sock(fd, family_of(remote)) {
        Some(s) => apply::on_connect(g, s, remote, host).map(Some),
        None => Ok(None),
    }
}

/// After the real connect of `s` returned `r`: the MPTCP outcome, logged at info.
#[inline(always)]
fn connected(fd: i32, s: apply::Sock, r: i32) -> i32 {
    if s.mptcp && log::enabled(LogLevel::Info) {
        let guard = ErrnoGuard::new();
        match (r, mptcp::still_mptcp(fd)) {
            (0, Some(true)) => log_at!(LogLevel::Info, "fd {}: connected with MPTCP", fd),
            (0, Some(false)) => log_at!(
                LogLevel::Info,
                "fd {}: MPTCP fell back to TCP in the handshake (the peer does not speak MPTCP)",
                fd
            ),
            // Non-blocking: the outcome is logged when the program asks for SO_ERROR.
            _ => fdstate::update(fd, |s| s.checked().with_mptcp_pending(true)),
        }
        drop(guard);
    }
    r
}

/// In a forked child: the locks of the rare paths (names, redirects, parked sockets) are
/// free again.
pub fn after_fork_child() {
    names::after_fork_child();
    actions::after_fork_child();
}

/// The names a program resolves matter: a rule looks at host names, or the trace shows
/// them.
pub fn wants_names(g: Option<&Global>) -> bool {
    trace::on() || g.is_some_and(|g| g.policy.any_host())
}

/// A resolution through libc gave `ips` for `name`.
pub fn resolved(name: &[u8], ips: &[u128]) {
    names::record(name, ips);
}

/// `getpeername` succeeded on `fd`: what it should answer instead, if sockwrap redirected
/// the connect (the program's view: the address it asked for).
pub fn peer_shown(g: &Global, fd: i32) -> Option<SocketAddr> {
    if !g.policy.any_redirect() {
        return None;
    }
    let _guard = ErrnoGuard::new();
    actions::asked_peer(fd)
}

/// `bind()`: options that must be in place before bind, and UDP servers' rules.
pub fn bind(g: &Global, fd: i32, local: Option<SocketAddr>, real: impl FnOnce() -> i32) -> i32 {
    if let Some(local) = local {
        let guard = ErrnoGuard::new();
        if let Some(s) = sock(fd, family_of(&local)) {
            if let Err(e) = apply::on_bind(g, s, &local) {
                drop(guard);
                return fail(e);
            }
        }
    }
    real()
}

/// `listen()`: the server's options, once, on the listening socket.
pub fn listen(g: &Global, fd: i32, real: impl FnOnce() -> i32) -> i32 {
    let guard = ErrnoGuard::new();
    let kind = fdstate::get(fd)
        .and_then(FdState::kind)
        .map(|k| (k.transport, k.mptcp))
        .or_else(|| fdstate::kernel_kind(fd));
    if let Some((Transport::Tcp, is_mptcp)) = kind {
        if let Some(local) = sys::local_addr(fd) {
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
    drop(guard);
    real()
}

/// Whether accepting on `listen_fd` needs the peer's address: a rule that looks at
/// addresses, an info line, MPTCP, or a listener we never saw (its family unknown).
pub fn accept_wants_peer(g: &Global, listen_fd: i32) -> bool {
    let known_tcp = fdstate::get(listen_fd)
        .and_then(FdState::kind)
        .is_some_and(|k| k.transport == Transport::Tcp && !k.mptcp);
    g.policy.any_needs_remote()
        || !known_tcp
        || log::enabled(LogLevel::Info)
        || g.policy.manages(Opt::Mptcp)
}

/// After a successful accept of `fd` on `listen_fd`: apply the rules that match the peer
/// (`peer`: the address the kernel gave accept, asked for when [`accept_wants_peer`] said
/// so, as `wants_peer` repeats).
pub fn accepted(
    g: &Global,
    listen_fd: i32,
    fd: i32,
    wants_peer: bool,
    peer: Option<SocketAddr>,
) -> i32 {
    fdstate::reset(fd);
    let guard = ErrnoGuard::new();
    let listener = fdstate::get(listen_fd).unwrap_or_default();
    let listener_kind = listener.kind();
    let known_tcp = listener_kind.is_some_and(|k| k.transport == Transport::Tcp && !k.mptcp);
    // The peer's address only when something needs it (the hook usually has it already:
    // it gives accept a buffer of its own when the program passes none).
    let peer = match peer {
        None if wants_peer => match sys::peer_addr(fd) {
            Some(p) => Some(p),
            None => return fd,
        },
        p => p,
    };
    // The local port only matters to rules that match on it.
    let local_port = if g.policy.any_local_port() {
        match sys::local_addr(fd) {
            Some(l) => l.port(),
            None => return fd,
        }
    } else {
        0
    };
    let family = match (&peer, listener_kind) {
        (Some(p), _) => family_of(p),
        (None, Some(k)) => k.family,
        (None, None) => Family::V4,
    };
    // An accepted socket is what its listener is (TCP, or MPTCP/TCP when the listener is
    // MPTCP: then the kernel says which); a listener we never saw is asked about.
    let mptcp = if known_tcp {
        false
    } else {
        match fdstate::kernel_kind(fd) {
            Some((Transport::Tcp, mptcp)) => mptcp,
            _ => return fd,
        }
    };
    let s = Sock {
        fd,
        family,
        transport: Transport::Tcp,
        mptcp,
    };
    fdstate::set(fd, FdState::seen(Some(s.kind())));
    log::socket_seen();
    if let (true, Some(peer)) = (g.policy.manages(Opt::Mptcp), &peer) {
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
    if let Err(e) = apply::on_accept(g, listener, s, local_port, peer.as_ref()) {
        // Strict: the connection is refused by closing it; the program sees the errno.
        sys::close(fd);
        drop(guard);
        return fail(e);
    }
    fd
}

/// Whether `level`/`name` is an option the policy manages (and so may have locked).
#[inline(always)]
pub fn may_lock(g: &Global, level: i32, name: i32) -> bool {
    catalog::slot_for_kernel_option(level, name).is_some_and(|o| g.policy.manages(o))
}

/// What the program's own `setsockopt` of `(level, name)` on `fd` meets: `Some(opt)` when
/// sockwrap locked that option on this socket (the call then reports success and changes
/// nothing), `None` when it passes through.
pub fn locked_option(g: &Global, fd: i32, level: i32, name: i32) -> Option<Opt> {
    let opt = catalog::slot_for_kernel_option(level, name)?;
    if !g.policy.manages(opt) {
        return None;
    }
    let _guard = ErrnoGuard::new();
    if fdstate::get(fd).is_none() {
        apply::adopt(g, fd);
    }
    let state = fdstate::get(fd)?;
    (state.locked() & opt.bit() != 0).then_some(opt)
}

/// The program's setsockopt of a locked option was answered with success: count, log,
/// trace. `val` is the program's value, which the kernel has read (a probe took it).
pub fn overridden(fd: i32, level: i32, name: i32, opt: Opt, val: Option<&[u8]>) {
    let _guard = ErrnoGuard::new();
    log::count_overridden(opt);
    if trace::on() {
        trace::overridden(fd, opt, level, name, val);
    }
    let shown: i64 = match val {
        Some(b) if b.len() >= 4 => i32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as i64,
        _ => -1,
    };
    log_at!(
        LogLevel::Info,
        "fd {}: program's setsockopt({}, {:#x}) overridden: {} is locked by sockwrap",
        fd,
        catalog::kernel_name(level, name).unwrap_or("option"),
        shown,
        opt.name()
    );
}

/// The kind of socket a locked option's probe must be made of: (domain, type, protocol).
pub fn probe_kind(fd: i32) -> Result<(i32, i32, i32), i32> {
    let kind = fdstate::get(fd).and_then(FdState::kind);
    let domain = match kind {
        Some(k) if k.family == Family::V6 => libc::AF_INET6,
        Some(_) => libc::AF_INET,
        None => sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_DOMAIN).map_err(|e| e.0)?,
    };
    Ok(match kind {
        Some(k) if k.transport == Transport::Udp => (domain, libc::SOCK_DGRAM, libc::IPPROTO_UDP),
        Some(k) if k.mptcp => (domain, libc::SOCK_STREAM, mptcp::IPPROTO_MPTCP),
        _ => (domain, libc::SOCK_STREAM, libc::IPPROTO_TCP),
    })
}

static WARNED_MPTCP_OPTION: AtomicBool = AtomicBool::new(false);

/// The program's setsockopt failed with `e`. On a socket sockwrap made MPTCP, an option
/// MPTCP on this kernel rejects is the program's wish all the same: before connect/listen
/// the socket becomes plain TCP and `retry` sets the option there; after, the program
/// would have succeeded over TCP, so the call reports success (warned once). Returns the
/// call's result, or `None` to keep the failure as it is.
pub fn setsockopt_failed(
    fd: i32,
    level: i32,
    name: i32,
    e: i32,
    val: &[u8],
    retry: impl FnOnce() -> i32,
) -> Option<i32> {
    if !matches!(e, libc::ENOPROTOOPT | libc::EOPNOTSUPP) || !mptcp::made_by_us(fd) {
        return None;
    }
    let connected = sys::getpeername(fd).is_ok();
    let listening =
        sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_ACCEPTCONN).unwrap_or(0) != 0;
    let family = match sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_DOMAIN) {
        Ok(libc::AF_INET) => Family::V4,
        _ => Family::V6,
    };
    let cname = catalog::kernel_name(level, name).unwrap_or("option");
    if !mptcp::tcp_accepts(family, level, name, val) {
        // Plain TCP refuses it too (e.g. IPV6_V6ONLY on an IPv4 socket): the program's own
        // error; keep MPTCP.
        sys::set_errno(e);
        return Some(-1);
    }
    if !connected && !listening && mptcp::swap(fd, family, false).is_ok() {
        log_at!(
            LogLevel::Info,
            "fd {}: MPTCP on this kernel rejects {} ({}); the socket was switched to plain TCP before connecting",
            fd,
            cname,
            sys::errno_name(e)
        );
        return Some(retry());
    }
    if !WARNED_MPTCP_OPTION.swap(true, Relaxed) {
        log_at!(
            LogLevel::Warn,
            "fd {}: MPTCP on this kernel rejects {} ({}) on a connected socket; reported as success so the program goes on without it (warned once)",
            fd,
            cname,
            sys::errno_name(e)
        );
    }
    sys::set_errno(0);
    Some(0)
}

/// The program read SO_ERROR (`so_error`) on `fd`: the moment a non-blocking MPTCP connect
/// is known to have succeeded, and whether it stayed MPTCP.
/// What `getsockopt(SO_ERROR)` answers for a socket whose connect sockwrap delayed (see
/// `actions`), if it is one: then the kernel is not asked.
pub fn parked_so_error(fd: i32) -> Option<i32> {
    actions::parked_so_error(fd)
}

pub fn so_error_read(fd: i32, so_error: i32) {
    let Some(state) = fdstate::get(fd) else {
        return;
    };
    if !state.mptcp_pending() || so_error != 0 {
        return;
    }
    let _guard = ErrnoGuard::new();
    fdstate::update(fd, |s| s.with_mptcp_pending(false));
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

/// `close(fd)` is about to run: forget the descriptor's locks, and note it if it was the
/// trace's.
pub fn closing(policy: bool, fd: i32) {
    if policy {
        fdstate::reset(fd);
    }
    trace::note_closed(fd);
}

/// `close_range`/`closefrom` closed `first..=last`.
pub fn closed_range(policy: bool, first: u32, last: u32) {
    if policy {
        fdstate::reset_range(first, last);
    }
    trace::note_closed_range(first, last);
    if trace::on() {
        trace::untrack_range(first, last);
    }
}

/// `dup`, `dup2`, `dup3` made `new` refer to `old`'s socket.
pub fn duplicated(old: i32, new: i32) {
    fdstate::copy(old, new);
    trace::note_closed(new);
}
