//! Connect actions: `deny`, `redirect`, `delay` and `fail` (see the policy's
//! `rules::Actions`). The policy decides which apply; this module carries them out.
//!
//! * deny / fail: the connect returns -1 with the errno; no system call reaches the kernel,
//!   so no packet leaves.
//! * fail: whether a connect fails is the seeded choice of `seed`.
//! * redirect: the real connect gets the target's address; the socket's inode is
//!   remembered with what the program asked for, so that `getpeername` can answer it. The
//!   last [`REDIRECTS`] redirected sockets of a process are remembered.
//! * delay: a blocking connect sleeps first. A non-blocking one must not block the thread,
//!   and the socket must look "connecting" (not writable, no error) to poll, epoll and
//!   select until the delay is over. A socket in the LISTEN state is exactly that, on the
//!   same open file (so an epoll registration the program makes meanwhile stays valid). So
//!   the socket is *parked*: bound to the loopback address if it was unbound, given a
//!   socket filter that keeps no packet (a connect from this host to the parked port would
//!   otherwise be queued on it, a backlog of 0 takes one, and make the program's socket
//!   readable), put in LISTEN with a backlog of 0, and connect returns EINPROGRESS. A
//!   thread of ours sleeps out the delay, then turns the listener back into a plain socket
//!   (`shutdown(SHUT_RD)` on a listener disconnects it), undoes the filter and the loopback
//!   bind, and issues the real non-blocking connect on a duplicate of the descriptor; the
//!   program's poll then sees the connect complete as usual. Between the shutdown and the
//!   connect (a few microseconds) a poll can see the socket writable, with POLLHUP (an
//!   unconnected socket's state): a program that then
//!   asks `SO_ERROR` (what every correct program does) is held in our getsockopt hook until
//!   the connect is issued, and gets its real answer. A delayed `deny`/`fail` ends the same
//!   way and `SO_ERROR` answers the errno.

use crate::apply::{Global, Sock};
use crate::fdstate;
#[allow(unused_imports)]
use crate::prelude::*;
use crate::sys::{self, ActionNote, Errno, SockAddr, Spin};
use crate::{log, log_at, trace};
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use sockwrap_policy::catalog::Family;
use sockwrap_policy::rules::{errno_name, ConnectActions};
use sockwrap_policy::{LogLevel, Transport};

/// Carries out the actions of a connect of `s` to `remote`. `real` is the program's
/// connect, to the address given (None: the program's own).
pub fn connect(
    g: &Global,
    s: Sock,
    remote: &SocketAddr,
    ca: &ConnectActions,
    real: impl FnOnce(Option<&SockAddr>) -> i32,
) -> i32 {
    let a = &ca.actions;
    let failed = a
        .fail
        .filter(|f| g.chooser.fails(ca.fail_rule, f.ppm))
        .map(|f| f.errno);
    let errno = a.deny.or(failed);
    let target = match a.redirect.filter(|_| errno.is_none()) {
        None => None,
        Some(r) => match in_family(r.to, s.family) {
            Some(t) => Some((t, r.show_target)),
            None => {
                log_at!(
                    LogLevel::Warn,
                    "fd {}: cannot redirect an IPv4 socket to {}: the connect fails with EAFNOSUPPORT",
                    s.fd,
                    r.to
                );
                return fail(s.fd, remote, libc::EAFNOSUPPORT, note(0, 0, 0, None));
            }
        },
    };
    let delay = a
        .delay_ms
        .filter(|&d| d > 0 && s.transport == Transport::Tcp);
    let n = note(
        a.deny.unwrap_or(0),
        if a.deny.is_none() {
            failed.unwrap_or(0)
        } else {
            0
        },
        delay.unwrap_or(0),
        target.map(|(t, _)| t),
    );
    if log::enabled(LogLevel::Info) {
        match (a.deny, failed, target) {
            (Some(e), _, _) => log_at!(
                LogLevel::Info,
                "fd {}: connect to {} denied ({})",
                s.fd,
                remote,
                errno_name(e)
            ),
            (None, Some(e), _) => log_at!(
                LogLevel::Info,
                "fd {}: connect to {} failed by the policy ({})",
                s.fd,
                remote,
                errno_name(e)
            ),
            (None, None, Some((t, _))) => log_at!(
                LogLevel::Info,
                "fd {}: connect to {} redirected to {}",
                s.fd,
                remote,
                t
            ),
            _ => {}
        }
        if let Some(d) = delay {
            log_at!(
                LogLevel::Info,
                "fd {}: connect to {} delayed {} ms",
                s.fd,
                remote,
                d
            );
        }
    }
    let dest = target.map(|(t, _)| SockAddr::from(t));
    if let Some(ms) = delay {
        let nonblocking =
            sys::fcntl(s.fd, libc::F_GETFL, 0).is_ok_and(|f| f & libc::O_NONBLOCK != 0);
        if !nonblocking {
            sys::sleep_ms(ms);
        } else if !s.mptcp {
            let to = dest.unwrap_or_else(|| SockAddr::from(*remote));
            match park(s, ms, to, errno) {
                Ok(()) => {
                    if target.is_some_and(|(_, show)| !show) {
                        remember_redirect(s.fd, *remote);
                    }
                    noted(s.fd, remote, n);
                    sys::set_errno(libc::EINPROGRESS);
                    return -1;
                }
                Err(e) => warn_unparked(s.fd, e),
            }
        } else {
            warn_unparked(s.fd, Errno(libc::EOPNOTSUPP));
        }
    }
    if let Some(e) = errno {
        return fail(s.fd, remote, e, n);
    }
    let r = real(dest.as_ref());
    let e = sys::errno();
    if let Some((_, show)) = target {
        if !show && (r == 0 || e == libc::EINPROGRESS) {
            remember_redirect(s.fd, *remote);
        }
    }
    noted(s.fd, remote, n);
    sys::set_errno(e);
    r
}

fn note(denied: i32, failed: i32, delay_ms: u32, redirected: Option<SocketAddr>) -> ActionNote {
    ActionNote {
        denied,
        failed,
        delay_ms,
        redirected,
    }
}

/// Records what was done to the connect of `fd`: for its trace line, and as an event of
/// its own.
fn noted(fd: i32, asked: &SocketAddr, n: ActionNote) {
    if n.denied == 0 && n.failed == 0 && n.delay_ms == 0 && n.redirected.is_none() {
        return; // a `fail` rule that let this connect through did nothing to it
    }
    if trace::on() {
        trace::action_event(fd, asked, &n);
    }
    sys::thread().set_action(fd, n);
}

fn fail(fd: i32, asked: &SocketAddr, e: i32, n: ActionNote) -> i32 {
    noted(fd, asked, n);
    sys::set_errno(e);
    -1
}

static WARNED_PARK: AtomicBool = AtomicBool::new(false);

fn warn_unparked(fd: i32, e: Errno) {
    if !WARNED_PARK.swap(true, Ordering::Relaxed) {
        log_at!(
            LogLevel::Warn,
            "fd {}: cannot delay this non-blocking connect without blocking the program ({}); it goes ahead at once (said once)",
            fd,
            sys::errno_name(e.0)
        );
    }
}

/// `to` as the socket's family can reach it: an IPv4 target on an IPv6 socket is
/// v4-mapped; an IPv6 target on an IPv4 socket cannot be reached.
fn in_family(to: SocketAddr, family: Family) -> Option<SocketAddr> {
    match (to, family) {
        (SocketAddr::V4(v4), Family::V6) => Some(SocketAddr::V6(SocketAddrV6::new(
            v4.ip().to_ipv6_mapped(),
            v4.port(),
            0,
            0,
        ))),
        (SocketAddr::V6(v6), Family::V4) => v6
            .ip()
            .to_ipv4_mapped()
            .map(|ip| SocketAddr::new(IpAddr::V4(ip), v6.port())),
        (t, _) => Some(t),
    }
}

// ---- redirected sockets: what the program asked for, by socket inode ----

pub const REDIRECTS: usize = 1024;

#[derive(Clone, Copy)]
struct Redirected {
    ino: u64,
    dev: u64,
    asked: SocketAddr,
}

struct RedirectTable {
    entries: Vec<Redirected>,
    next: usize,
}

static REDIRECTED: Spin<RedirectTable> = Spin::new(RedirectTable {
    entries: Vec::new(),
    next: 0,
});

/// In a forked child: the tables' locks are free (the child has one thread). A parked
/// socket stays parked in the child's view: the parent's thread connects the shared socket.
pub fn after_fork_child() {
    REDIRECTED.unlock_after_fork();
    PARKED.unlock_after_fork();
}

fn remember_redirect(fd: i32, asked: SocketAddr) {
    let Some((dev, ino)) = sys::inode(fd) else {
        return;
    };
    let e = Redirected { ino, dev, asked };
    REDIRECTED.with(|t| {
        if t.entries.len() < REDIRECTS {
            t.entries.push(e);
        } else {
            let i = t.next;
            t.entries[i] = e;
            t.next = (i + 1) % REDIRECTS;
        }
    });
    fdstate::update(fd, |st| st.with_redirected(true));
}

/// What the program connected `fd` to, if sockwrap redirected it (and the rule keeps the
/// program's view).
pub fn asked_peer(fd: i32) -> Option<SocketAddr> {
    if !fdstate::get(fd).is_some_and(|s| s.redirected()) {
        return None;
    }
    let (dev, ino) = sys::inode(fd)?;
    REDIRECTED
        .with(|t| {
            t.entries
                .iter()
                .rev()
                .find(|e| e.ino == ino && e.dev == dev)
                .map(|e| e.asked)
        })
        .flatten()
}

// ---- parked (delayed non-blocking) connects ----

const PARKS: usize = 64;

#[derive(Clone, Copy, PartialEq, Eq)]
enum ParkState {
    /// Listening, waiting out the delay.
    Waiting,
    /// Between the listener's shutdown and the real connect.
    Transit,
    /// Done: the connect fails with this errno (told through SO_ERROR).
    Failed(i32),
}

#[derive(Clone, Copy)]
struct Park {
    ino: u64,
    dev: u64,
    state: ParkState,
}

static PARKED: Spin<[Option<Park>; PARKS]> = Spin::new([None; PARKS]);
/// How many entries `PARKED` holds: the getsockopt and connect hooks look only when some.
static N_PARKED: AtomicU32 = AtomicU32::new(0);

fn set_park(ino: u64, dev: u64, state: Option<ParkState>) -> bool {
    PARKED
        .with(|t| {
            let at = t
                .iter()
                .position(|p| p.is_some_and(|p| p.ino == ino && p.dev == dev));
            match (at, state) {
                (Some(i), Some(st)) => {
                    t[i] = Some(Park {
                        ino,
                        dev,
                        state: st,
                    })
                }
                (Some(i), None) => {
                    t[i] = None;
                    N_PARKED.fetch_sub(1, Ordering::Release);
                }
                (None, Some(st)) => match t.iter().position(Option::is_none) {
                    Some(i) => {
                        t[i] = Some(Park {
                            ino,
                            dev,
                            state: st,
                        });
                        N_PARKED.fetch_add(1, Ordering::Release);
                    }
                    None => return false,
                },
                (None, None) => {}
            }
            true
        })
        .unwrap_or(false)
}

fn park_state(fd: i32) -> Option<(u64, u64, ParkState)> {
    let (dev, ino) = sys::inode(fd)?;
    let st = PARKED
        .with(|t| {
            t.iter()
                .flatten()
                .find(|p| p.ino == ino && p.dev == dev)
                .map(|p| p.state)
        })
        .flatten()?;
    Some((ino, dev, st))
}

/// The loopback address a parked socket listens on. An IPv6 socket that may reach IPv4
/// (IPV6_V6ONLY off) takes the v4-mapped loopback: binding a dual-stack socket to ::1 would
/// make it IPv6-only for good (the kernel sets sk_ipv6only on a bind to a native address),
/// and its v4-mapped connect would then fail with ENETUNREACH.
fn loopback(fd: i32, family: Family) -> SockAddr {
    let v6only = family == Family::V6
        && sys::getsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY).is_ok_and(|v| v != 0);
    match family {
        Family::V4 => SockAddr::from(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0)),
        Family::V6 if v6only => SockAddr::from(SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 0)),
        Family::V6 => SockAddr::from(SocketAddr::new(
            IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped()),
            0,
        )),
    }
}

fn any(family: Family) -> SockAddr {
    match family {
        Family::V4 => SockAddr::from(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)),
        Family::V6 => SockAddr::from(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0)),
    }
}

/// What parking changed on a socket, for [`unpark`] to undo.
#[derive(Clone, Copy)]
struct Parking {
    family: Family,
    /// sockwrap bound it to the loopback address (it was unbound).
    loopback_bound: bool,
    /// sockwrap attached its keep-nothing filter.
    filtered: bool,
}

/// Parks `s` for `ms`, then connects it to `to` (or fails it with `errno`). See the module
/// note. On error nothing is left changed that matters: the socket is unbound or as bound
/// as the program left it, without sockwrap's filter.
fn park(s: Sock, ms: u32, to: SockAddr, errno: Option<i32>) -> Result<(), Errno> {
    let (dev, ino) = sys::inode(s.fd).ok_or(Errno(libc::EBADF))?;
    let unbound = sys::local_addr(s.fd).is_none_or(|a| a.port() == 0);
    if unbound {
        // Loopback only: the listener is not reachable from the network meanwhile.
        sys::bind(s.fd, &loopback(s.fd, s.family))?;
    }
    // Nor from this host: a connect to the parked port would be queued (a backlog of 0
    // still takes one) and make the program's socket readable before its own connect was
    // even made. A filter that keeps no packet drops such SYNs; after the delay they find
    // the port closed. Not over a filter of the program's own (then the hole stays open).
    let filtered = !sys::has_filter(s.fd) && sys::attach_drop_all(s.fd).is_ok();
    let undo = Parking {
        family: s.family,
        loopback_bound: unbound,
        filtered,
    };
    if let Err(e) = sys::listen(s.fd, 0) {
        unpark(s.fd, undo);
        return Err(e);
    }
    let dup = match sys::fcntl(s.fd, libc::F_DUPFD_CLOEXEC, 0) {
        Ok(d) => d,
        Err(e) => {
            unpark(s.fd, undo);
            return Err(e);
        }
    };
    if !set_park(ino, dev, Some(ParkState::Waiting)) {
        sys::close(dup);
        unpark(s.fd, undo);
        return Err(Errno(libc::ENOSPC));
    }
    let started = sys::spawn(Box::new(move || {
        sys::sleep_ms(ms);
        set_park(ino, dev, Some(ParkState::Transit));
        unpark(dup, undo);
        let outcome = match errno {
            Some(e) => Some(e),
            None => match sys::connect(dup, &to) {
                Ok(()) => None,
                Err(Errno(libc::EINPROGRESS)) => None,
                Err(Errno(e)) => Some(e),
            },
        };
        match outcome {
            Some(e) => set_park(ino, dev, Some(ParkState::Failed(e))),
            None => set_park(ino, dev, None),
        };
        sys::close(dup);
    }));
    if !started {
        set_park(ino, dev, None);
        sys::close(dup);
        unpark(s.fd, undo);
        return Err(Errno(libc::EAGAIN));
    }
    Ok(())
}

/// Turns a parked listener back into the unconnected socket it was: `shutdown(SHUT_RD)` on a
/// listener disconnects it (a no-op if it never listened), then sockwrap's filter and
/// loopback bind are undone.
/// Out of line: only delayed connects come here.
#[cold]
#[inline(never)]
fn unpark(fd: i32, undo: Parking) {
    let _ = sys::shutdown(fd, libc::SHUT_RD);
    if undo.filtered {
        let _ = sys::detach_filter(fd);
    }
    if undo.loopback_bound {
        undo_bind(fd, undo.family);
    }
}

/// Makes a socket that sockwrap bound to the loopback address unbound again (any address,
/// no port: the connect chooses both, as it would have).
fn undo_bind(fd: i32, family: Family) {
    let on = 1i32.to_ne_bytes();
    let off = 0i32.to_ne_bytes();
    let no_port = sys::setsockopt(fd, libc::SOL_IP, libc::IP_BIND_ADDRESS_NO_PORT, &on).is_ok();
    let _ = sys::bind(fd, &any(family));
    if no_port {
        let _ = sys::setsockopt(fd, libc::SOL_IP, libc::IP_BIND_ADDRESS_NO_PORT, &off);
    }
}

/// For the getsockopt hook: the SO_ERROR of a parked socket, if it is one (`None`: ask the
/// kernel). Waits out the few microseconds of a transit.
pub fn parked_so_error(fd: i32) -> Option<i32> {
    if N_PARKED.load(Ordering::Acquire) == 0 {
        return None;
    }
    for _ in 0..10_000 {
        match park_state(fd) {
            None => return None,
            Some((_, _, ParkState::Waiting)) => return Some(0),
            Some((_, _, ParkState::Transit)) => sys::sleep_ms(0),
            Some((ino, dev, ParkState::Failed(e))) => {
                set_park(ino, dev, None);
                return Some(e);
            }
        }
        core::hint::spin_loop();
    }
    None
}

/// For the connect hook: a second connect of a parked socket gets what the kernel gives
/// for a connect in progress (EALREADY), or the delayed failure.
pub fn parked_connect(fd: i32) -> Option<i32> {
    if N_PARKED.load(Ordering::Acquire) == 0 {
        return None;
    }
    match park_state(fd)? {
        (_, _, ParkState::Waiting | ParkState::Transit) => Some(libc::EALREADY),
        (ino, dev, ParkState::Failed(e)) => {
            set_park(ino, dev, None);
            Some(e)
        }
    }
}
