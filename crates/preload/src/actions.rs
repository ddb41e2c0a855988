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
//!   select until the delay is over, on the same open file (so an epoll registration the
//!   program makes meanwhile stays valid). A socket whose connect is in SYN_SENT is exactly
//!   that. So the socket is *parked*: connected to a *hole*, a loopback listener of ours
//!   whose socket filter keeps no packet, so its SYNs are dropped and it stays in SYN_SENT
//!   (with the most SYN retries the kernel allows, and no user timeout, for the wait), and
//!   connect returns EINPROGRESS. A thread of ours sleeps out the delay, takes the socket
//!   out of SYN_SENT with `connect(AF_UNSPEC)` (unconnected again, the address and port
//!   the park gave it released), puts its options back, and issues the real non-blocking
//!   connect on a duplicate of the descriptor; the program's poll then sees the connect
//!   complete as usual.
//!
//!   Why SYN_SENT, not LISTEN (parked until 2026-12): a listener with a backlog of 0 also
//!   looks "connecting", and `shutdown(SHUT_RD)` turned it back, but some kernel builds
//!   (6.18.44 here, December 2026) never let a socket that has listened connect again
//!   (EINVAL). A socket taken out of SYN_SENT by `connect(AF_UNSPEC)` (the disconnect that
//!   `connect(2)` documents) connects again on every kernel we run (the matrix). The first park asks
//!   the kernel once, on sockets of our own; where it refuses, delayed non-blocking
//!   connects go ahead at once, said once (never an error the real connect would not give).
//!
//!   Between the disconnect and the real connect (a few microseconds) a poll can see the
//!   socket writable, with POLLHUP (an unconnected socket's state) and POLLERR (the
//!   disconnect's ECONNRESET, pending until our thread reads it): a program that then
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
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};
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
        } else if s.mptcp {
            warn_unparked(s.fd, Errno(libc::EOPNOTSUPP), "on an MPTCP socket");
        } else if let Err(e) = parking_works() {
            let why = match e.0 {
                libc::EINVAL => {
                    "on this kernel: a socket taken out of a parked connect cannot connect again"
                }
                _ => "here: no loopback hole to park it on",
            };
            warn_unparked(s.fd, e, why);
        } else {
            let to = target.map_or(*remote, |(t, _)| t);
            match park(s, ms, to, errno) {
                Ok(()) => {
                    if target.is_some_and(|(_, show)| !show) {
                        remember_redirect(s.fd, *remote);
                    }
                    noted(s.fd, remote, n);
                    sys::set_errno(libc::EINPROGRESS);
                    return -1;
                }
                Err(e) => warn_unparked(s.fd, e, "without blocking the program"),
            }
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

fn warn_unparked(fd: i32, e: Errno, why: &str) {
    if !WARNED_PARK.swap(true, Ordering::Relaxed) {
        log_at!(
            LogLevel::Warn,
            "fd {}: cannot delay this non-blocking connect {} ({}); it goes ahead at once (said once)",
            fd,
            why,
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
    /// In SYN_SENT on its hole, waiting out the delay.
    Waiting,
    /// Between the disconnect from the hole and the real connect.
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

/// The socket a parked connect waits on: a listener of ours on a loopback port, whose
/// socket filter keeps no packet. A SYN to it is dropped, so a connect to it stays in
/// SYN_SENT, retried, for as long as we let it. One per parked socket, closed when the delay
/// ends: no state outlives a park, so neither a fork nor the program's `closefrom` can leave
/// a later park without one.
struct Hole {
    fd: i32,
    /// Its address as the parked socket connects to it.
    addr: SockAddr,
}

impl Hole {
    /// A hole that a socket of `family` reaches the way it will reach `to`: over IPv4 (an
    /// IPv6 socket through the v4-mapped loopback) when `to` is IPv4 or v4-mapped, over IPv6
    /// (`::1`) otherwise. The road matters: a v4-mapped connect switches an IPv6 socket to
    /// IPv4 handling inside the kernel, and a later native connect does not switch it back.
    fn open(family: Family, to: SocketAddr) -> Result<Hole, Errno> {
        let over_v4 = match to {
            SocketAddr::V4(_) => true,
            SocketAddr::V6(a) => a.ip().to_ipv4_mapped().is_some(),
        };
        let (domain, at) = if over_v4 {
            (
                libc::AF_INET,
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            )
        } else {
            (
                libc::AF_INET6,
                SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 0),
            )
        };
        let fd = sys::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0)?;
        let ready = sys::attach_drop_all(fd)
            .and_then(|()| sys::bind(fd, &SockAddr::from(at)))
            .and_then(|()| sys::listen(fd, 1))
            .and_then(|()| sys::local_addr(fd).ok_or(Errno(libc::EADDRNOTAVAIL)));
        match ready.map(|a| in_family(a, family)) {
            Ok(Some(addr)) => Ok(Hole {
                fd,
                addr: SockAddr::from(addr),
            }),
            Ok(None) => {
                sys::close(fd);
                Err(Errno(libc::EAFNOSUPPORT))
            }
            Err(e) => {
                sys::close(fd);
                Err(e)
            }
        }
    }
}

/// What parking changed on a socket, for [`unpark`] to put back.
#[derive(Clone, Copy)]
struct Parking {
    /// The hole's listener, closed by [`unpark`].
    hole: i32,
    /// TCP_SYNCNT before the park: the wait runs with the most SYN retries the kernel
    /// allows, or an hour's delay would time out (6 retries, the default, give up after
    /// about 2 minutes).
    syn_count: Option<i32>,
    /// TCP_USER_TIMEOUT before the park, when one was set: it ends a SYN_SENT wait too.
    user_timeout: Option<i32>,
}

/// The most SYN retries `TCP_SYNCNT` takes (the kernel's MAX_TCP_SYNCNT): with the
/// retransmission timer's backoff capped at 2 minutes, about 4 hours of waiting.
const MAX_SYN_COUNT: i32 = 127;

impl Parking {
    /// Sets the options that would cut a long wait short, remembering their values.
    fn hold(fd: i32, hole: i32) -> Parking {
        let tcp = |name| sys::getsockopt_int(fd, libc::IPPROTO_TCP, name).ok();
        let set =
            |name, v: i32| sys::setsockopt(fd, libc::IPPROTO_TCP, name, &v.to_ne_bytes()).is_ok();
        let syn_count = tcp(libc::TCP_SYNCNT).filter(|_| set(libc::TCP_SYNCNT, MAX_SYN_COUNT));
        let user_timeout = tcp(libc::TCP_USER_TIMEOUT)
            .filter(|&t| t != 0)
            .filter(|_| set(libc::TCP_USER_TIMEOUT, 0));
        Parking {
            hole,
            syn_count,
            user_timeout,
        }
    }
}

/// Whether this kernel lets a socket connect again after `connect(AF_UNSPEC)` took it out
/// of SYN_SENT (what parking needs; every kernel we know does): 0 not asked yet, -1 yes,
/// else the errno of the step that failed. Asked once, on sockets of our own, by the first
/// park.
static PARKING_WORKS: AtomicI32 = AtomicI32::new(0);

fn parking_works() -> Result<(), Errno> {
    match PARKING_WORKS.load(Ordering::Relaxed) {
        -1 => return Ok(()),
        0 => {}
        e => return Err(Errno(e)),
    }
    let r = probe_parking();
    PARKING_WORKS.store(r.err().map_or(-1, |e| e.0), Ordering::Relaxed);
    r
}

/// Parks a socket of our own on a hole, takes it out, and parks it again.
#[cold]
fn probe_parking() -> Result<(), Errno> {
    let to = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
    let hole = Hole::open(Family::V4, to)?;
    let kind = libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    let r = sys::socket(libc::AF_INET, kind, 0).and_then(|fd| {
        let r = waits_on(fd, &hole)
            .and_then(|()| sys::disconnect(fd))
            .and_then(|()| waits_on(fd, &hole));
        sys::close(fd);
        r
    });
    sys::close(hole.fd);
    r
}

/// Connects the non-blocking `fd` to `hole`: Ok when it now waits there (EINPROGRESS).
fn waits_on(fd: i32, hole: &Hole) -> Result<(), Errno> {
    match sys::connect(fd, &hole.addr) {
        Err(Errno(libc::EINPROGRESS)) => Ok(()),
        Ok(()) => Err(Errno(libc::EISCONN)),
        Err(e) => Err(e),
    }
}

/// Parks `s` for `ms`, then connects it to `to` (or fails it with `errno`). See the module
/// note. On error nothing is left changed: the socket is unconnected, as bound as the
/// program left it, with its own options.
fn park(s: Sock, ms: u32, to: SocketAddr, errno: Option<i32>) -> Result<(), Errno> {
    let (dev, ino) = sys::inode(s.fd).ok_or(Errno(libc::EBADF))?;
    let hole = Hole::open(s.family, to)?;
    let undo = Parking::hold(s.fd, hole.fd);
    if let Err(e) = waits_on(s.fd, &hole) {
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
    let to = SockAddr::from(to);
    let started = sys::spawn(Box::new(move || {
        sys::sleep_ms(ms);
        set_park(ino, dev, Some(ParkState::Transit));
        leave_hole(dup);
        let outcome = match errno {
            Some(e) => Some(e),
            None => match sys::connect(dup, &to) {
                Ok(()) => None,
                Err(Errno(libc::EINPROGRESS)) => None,
                Err(Errno(e)) => Some(e),
            },
        };
        put_back(dup, undo);
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

/// Takes a parked socket out of SYN_SENT and puts back what [`Parking::hold`] changed.
/// Out of line: only delayed connects come here.
#[cold]
#[inline(never)]
fn unpark(fd: i32, undo: Parking) {
    leave_hole(fd);
    put_back(fd, undo);
}

/// `connect(AF_UNSPEC)`: the socket is unconnected again, and the address and port the park
/// gave it are released, unless the program bound them.
fn leave_hole(fd: i32) {
    let _ = sys::disconnect(fd);
    // A SYN_SENT socket taken back reports ECONNRESET once: that error is ours, not the
    // program's, and reading SO_ERROR clears it (until then a poll sees POLLERR).
    let _ = sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_ERROR);
}

/// Closes the hole and puts back the options [`Parking::hold`] changed. After the real
/// connect is fine: the kernel reads both when a SYN retransmission is due (a second at the
/// earliest), and the unpark window stays as short as two system calls.
fn put_back(fd: i32, undo: Parking) {
    sys::close(undo.hole);
    let tcp = |name, v: i32| sys::setsockopt(fd, libc::IPPROTO_TCP, name, &v.to_ne_bytes());
    if let Some(n) = undo.syn_count {
        let _ = tcp(libc::TCP_SYNCNT, n);
    }
    if let Some(t) = undo.user_timeout {
        let _ = tcp(libc::TCP_USER_TIMEOUT, t);
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
