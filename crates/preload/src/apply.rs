//! Applying a decision to a socket: the safe middle between the hooks and the kernel.
//!
//! The hooks translate C arguments into a [`Sock`] and a [`Ctx`]; this module asks the policy,
//! turns each chosen option into its `setsockopt` calls, handles refusals according to the
//! failure policy, records locks in the fd table and writes the `info` line for the socket.

use crate::log::{self, Line};
use crate::sys::{self, Errno};
use crate::{fdtable, log_at};
use core::fmt::Write;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use sockwrap_policy::catalog::{self, k, Applies, Family, Shown, When, N_OPTS};
use sockwrap_policy::{Ctx, Decision, LogLevel, OnError, Opt, Policy, Role, Transport, Value};

/// What the process-wide state holds: built once in the constructor, then read-only.
pub struct Global {
    pub policy: Policy,
    /// Per stage and transport (0 = TCP, 1 = UDP): the slots that stage applies.
    stage_masks: [[u32; 2]; 5],
    /// The slots an accepted socket inherits from its listener.
    inherited_mask: u32,
    /// For policies whose decisions are precomputed (no rule looks at addresses or ports):
    /// per decision and stage, what to apply, so applying is one loop of `setsockopt`
    /// calls. Index: decision × 5 + stage.
    programs: Vec<Program>,
}

/// What one precomputed decision applies at one stage: the ids of the options' precomputed
/// kernel operations, in slot order. Fixed size: building all 30 costs no allocation.
#[derive(Clone, Copy)]
struct Program {
    ids: [u32; N_OPTS],
    n: u8,
    /// The slots these calls apply.
    mask: u32,
    /// False when a slot needs more than `setsockopt` (the source address): then the
    /// general loop runs.
    plain: bool,
}

const STAGES: [Stage; 5] = [
    Stage::UdpCreate,
    Stage::Bind,
    Stage::Connect,
    Stage::Listen,
    Stage::Accept,
];

impl Global {
    pub fn new(policy: Policy) -> Global {
        let mut stage_masks = [[0u32; 2]; 5];
        for st in STAGES {
            for t in [Transport::Tcp, Transport::Udp] {
                stage_masks[st as usize][transport_index(t)] = Opt::ALL
                    .iter()
                    .filter(|&&o| {
                        o != Opt::Mptcp // the protocol: the socket hook and `mptcp::swap`
                            && st.wants(o, t)
                            && !(o.spec().applies == Applies::Tcp && t != Transport::Tcp)
                    })
                    .fold(0, |m, o| m | o.bit());
            }
        }
        let inherited_mask = Opt::ALL
            .iter()
            .filter(|o| o.spec().inherited_by_accept)
            .fold(0, |m, o| m | o.bit());
        let mut programs = Vec::with_capacity(if policy.fixed_decision(0).is_some() {
            6 * STAGES.len()
        } else {
            0
        });
        for fi in 0..6 {
            let Some((d, t)) = policy.fixed_decision(fi) else {
                break;
            };
            for st in STAGES {
                let mask = d.mask() & stage_masks[st as usize][transport_index(t)];
                let mut p = Program {
                    ids: [0; N_OPTS],
                    n: 0,
                    mask,
                    plain: mask & Opt::BindAddress.bit() == 0,
                };
                for (opt, _) in d.iter_mask(mask) {
                    match (d.plan_id(opt), p.ids.get_mut(p.n as usize)) {
                        (Some(id), Some(slot)) => {
                            *slot = id;
                            p.n += 1;
                        }
                        _ => p.plain = false,
                    }
                }
                programs.push(p);
            }
        }
        Global {
            policy,
            stage_masks,
            inherited_mask,
            programs,
        }
    }

    fn stage_mask(&self, stage: Stage, transport: Transport) -> u32 {
        self.stage_masks[stage as usize][transport_index(transport)]
    }
}

/// The second index of [`Global::stage_masks`].
fn transport_index(t: Transport) -> usize {
    match t {
        Transport::Tcp => 0,
        Transport::Udp => 1,
    }
}

/// A socket as the hooks see it.
#[derive(Clone, Copy)]
pub struct Sock {
    pub fd: i32,
    pub family: Family,
    pub transport: Transport,
    /// The socket is MPTCP (protocol 262).
    pub mptcp: bool,
}

/// Which options a stage applies.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Stage {
    /// UDP at socket(): everything but the source address (binding it now would pick a port
    /// before the program can bind its own) and bind-time options.
    UdpCreate,
    /// bind(): the options that only matter before bind (and, for UDP servers, the rest).
    Bind,
    /// connect(): everything but bind-time options.
    Connect,
    /// listen(): everything but the source address and bind-time options.
    Listen,
    /// accept(): what the listener did not pass on to the new socket.
    Accept,
}

impl Stage {
    fn call(self) -> &'static str {
        match self {
            Stage::UdpCreate => "socket",
            Stage::Bind => "bind",
            Stage::Connect => "connect",
            Stage::Listen => "listen",
            Stage::Accept => "accept",
        }
    }
    fn wants(self, opt: Opt, transport: Transport) -> bool {
        let when = opt.spec().when;
        match self {
            Stage::UdpCreate => opt != Opt::BindAddress && when != When::BeforeBind,
            Stage::Bind => {
                when == When::BeforeBind || (transport == Transport::Udp && opt != Opt::BindAddress)
            }
            Stage::Connect => when != When::BeforeBind,
            Stage::Listen | Stage::Accept => opt != Opt::BindAddress && when != When::BeforeBind,
        }
    }
}

pub fn ip_key_of(addr: &SocketAddr) -> (u128, u16) {
    (sockwrap_policy::rules::ip_key(addr.ip()), addr.port())
}

fn is_v4_mapped(ip: &IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some())
}

/// Applies `d` to `s` for `stage`. `skip` says which options need no setting (inherited from
/// the listener). Returns the locks to record, or the errno to fail the hooked call with,
/// when strict. `peer` is the remote (connect/accept) or local (bind/listen) address.
///
/// The loop is the per-connection cost of sockwrap: per option one look-up of its
/// precomputed kernel operations and the `setsockopt` calls; the info line, the trace and
/// the refusal handling are out of line and only reached when wanted.
pub fn apply(
    g: &Global,
    s: Sock,
    stage: Stage,
    d: &Decision,
    peer: Option<&SocketAddr>,
    skip: Option<&dyn Fn(Opt) -> bool>,
) -> Result<u32, Errno> {
    let maybe_v4 = match (s.family, peer) {
        (Family::V6, Some(p)) if stage == Stage::Connect || stage == Stage::Accept => {
            is_v4_mapped(&p.ip())
        }
        (Family::V6, _) => true,
        _ => false,
    };
    // A precomputed decision: one flat list of calls. Any refusal sends the socket through
    // the general loop below, which sets the options again one by one (setting an option
    // twice to one value changes nothing) and handles the refusal as it should.
    if let (Some(fi), None) = (d.fixed_index(), skip) {
        let i = fi * STAGES.len() + stage as usize;
        if let Some(p) = g.programs.get(i).filter(|p| p.plain) {
            let ids = p.ids.get(..p.n as usize).unwrap_or(&[]);
            if ids.iter().all(|&id| {
                g.policy
                    .plan_ops(id, s.family, maybe_v4)
                    .iter()
                    .all(|op| sys::setsockopt(s.fd, op.level, op.name, op.bytes()).is_ok())
            }) {
                let mut m = p.mask;
                while m != 0 {
                    if let Some(&opt) = Opt::ALL.get(m.trailing_zeros() as usize) {
                        log::count_applied(opt);
                    }
                    m &= m - 1;
                }
                if p.mask != 0 && (log::enabled(LogLevel::Info) || crate::trace::on()) {
                    noted(s, stage, d, peer, p.mask, maybe_v4);
                }
                return Ok(p.mask & !d.soft_mask());
            }
        }
    }
    let wanted = d.mask() & g.stage_mask(stage, s.transport);
    let mut locked = wanted & !d.soft_mask();
    let noted = log::enabled(LogLevel::Info) || crate::trace::on();
    let mut done: u32 = 0; // applied (for the info line)
    let mut failed: u32 = 0;
    let mut m = wanted;
    while m != 0 {
        let slot = m.trailing_zeros();
        let bit = 1u32 << slot;
        m &= m - 1;
        let Some(&opt) = Opt::ALL.get(slot as usize) else {
            continue;
        };
        if skip.is_some_and(|f| f(opt)) {
            continue;
        }
        let result = if opt == Opt::BindAddress {
            match d.get(opt) {
                Some(st) => apply_bind_address(s, st.value, peer),
                None => Ok(false),
            }
        } else {
            let mut r = Ok(true);
            for op in d.ops(opt, s.family, maybe_v4).iter() {
                if let Err(e) = sys::setsockopt(s.fd, op.level, op.name, op.bytes()) {
                    // An IPv6 socket that may carry IPv4 gets IP_TOS/IP_TTL as an extra; it is
                    // not a failure if only that extra is refused.
                    if !(s.family == Family::V6 && op.level == k::IPPROTO_IP) {
                        r = Err((e, op.cname));
                        break;
                    }
                }
            }
            r
        };
        match result {
            Ok(true) => {
                log::count_applied(opt);
                done |= bit;
                if noted && crate::trace::on() {
                    if let Some(st) = d.get(opt) {
                        trace_apply(s, stage, opt, st.value, maybe_v4, None);
                    }
                }
            }
            Ok(false) => {}
            Err((e, cname)) => {
                locked &= !bit;
                failed |= bit;
                refused(g, s, stage, d, opt, e, cname, maybe_v4)?;
            }
        }
    }
    if noted && (done | failed) != 0 && log::enabled(LogLevel::Info) {
        info_line(s, stage, d, peer, done, failed);
    }
    Ok(locked)
}

/// The trace and info line for options the fast path applied.
#[cold]
#[inline(never)]
fn noted(
    s: Sock,
    stage: Stage,
    d: &Decision,
    peer: Option<&SocketAddr>,
    done: u32,
    maybe_v4: bool,
) {
    if crate::trace::on() {
        for (opt, st) in d.iter_mask(done) {
            trace_apply(s, stage, opt, st.value, maybe_v4, None);
        }
    }
    if log::enabled(LogLevel::Info) {
        info_line(s, stage, d, peer, done, 0);
    }
}

/// An option the kernel refused: count it, trace it, warn once, or fail the call (strict).
#[cold]
#[inline(never)]
#[allow(clippy::too_many_arguments)]
fn refused(
    g: &Global,
    s: Sock,
    stage: Stage,
    d: &Decision,
    opt: Opt,
    e: Errno,
    cname: &'static str,
    maybe_v4: bool,
) -> Result<(), Errno> {
    let Some(setting) = d.get(opt) else {
        return Ok(());
    };
    if crate::trace::on() {
        trace_apply(s, stage, opt, setting.value, maybe_v4, Some((e.0, cname)));
    }
    let first = log::count_failed(opt, e.0);
    if g.policy.on_error == OnError::Fail {
        log_at!(
            LogLevel::Error,
            "{}: {}({}) refused on fd {}: {}; failing {}() (strict)",
            opt.name(),
            cname,
            Shown(opt, setting.value),
            s.fd,
            sys::errno_name(e.0),
            stage.call()
        );
        return Err(e);
    }
    if first && s.mptcp && matches!(e.0, libc::EOPNOTSUPP | libc::ENOPROTOOPT) {
        log_at!(
            LogLevel::Warn,
            "{}: MPTCP sockets on this kernel cannot carry {} ({}); MPTCP connections go without it (warned once per process)",
            opt.name(),
            cname,
            sys::errno_name(e.0)
        );
    } else if first {
        log_at!(
            LogLevel::Warn,
            "{}: {}({}) refused: {}; the program goes on without it (warned once per process)",
            opt.name(),
            cname,
            Shown(opt, setting.value),
            sys::errno_name(e.0)
        );
    }
    Ok(())
}

/// The info line for one socket: `fd 5 tcp connect 10.0.0.1:22: dscp=EF(0xb8) nodelay=on`.
#[cold]
#[inline(never)]
fn info_line(
    s: Sock,
    stage: Stage,
    d: &Decision,
    peer: Option<&SocketAddr>,
    done: u32,
    failed: u32,
) {
    let t = match (s.mptcp, s.transport) {
        (true, _) => "mptcp",
        (false, Transport::Tcp) => "tcp",
        (false, Transport::Udp) => "udp",
    };
    let mut line = Line::new();
    let _ = write!(line, "fd {} {} {}", s.fd, t, stage.call());
    if let Some(p) = peer {
        let _ = write!(line, " {}", p);
    }
    let _ = write!(line, ":");
    for (opt, setting) in d.iter_mask(done | failed) {
        if failed & opt.bit() != 0 {
            let _ = write!(line, " {}=FAILED", opt.name());
        } else {
            let _ = write!(line, " {}={}", opt.name(), Shown(opt, setting.value));
            if setting.soft {
                let _ = write!(line, "(soft)");
            }
        }
    }
    emit_line(&line);
}

fn emit_line(line: &Line) {
    let b = line.as_bytes();
    let s = match core::str::from_utf8(b) {
        Ok(s) => s,
        Err(e) => core::str::from_utf8(&b[..e.valid_up_to()]).unwrap_or(""),
    };
    log::emit(LogLevel::Info, format_args!("{s}"));
}

/// Binds the source address before connect, unless the program bound the socket itself.
/// `IP_BIND_ADDRESS_NO_PORT` defers the port choice to connect(), so a busy client does not
/// reserve one port per connection for all destinations and run out.
/// Returns Ok(false) when there is nothing to do for this socket (family mismatch, bound).
fn apply_bind_address(
    s: Sock,
    v: Value,
    remote: Option<&SocketAddr>,
) -> Result<bool, (Errno, &'static str)> {
    let Value::Addrs(a) = v else { return Ok(false) };
    let remote_is_v4 = match remote {
        Some(r) => r.is_ipv4() || is_v4_mapped(&r.ip()),
        None => s.family == Family::V4,
    };
    let ip: IpAddr = match (s.family, remote_is_v4) {
        (Family::V4, _) => match a.v4 {
            Some(v4) => IpAddr::V4(Ipv4Addr::from(v4)),
            None => return Ok(false),
        },
        (Family::V6, true) => match a.v4 {
            Some(v4) => IpAddr::V6(Ipv4Addr::from(v4).to_ipv6_mapped()),
            None => return Ok(false),
        },
        (Family::V6, false) => match a.v6 {
            Some(v6) => IpAddr::V6(Ipv6Addr::from(v6)),
            None => return Ok(false),
        },
    };
    // Leave a socket the program bound itself alone.
    if let Ok(local) = sys::getsockname(s.fd) {
        if let Some(l) = crate::hooks::sockaddr_from_storage(&local.storage, local.len) {
            if l.port() != 0 || !l.ip().is_unspecified() {
                return Ok(false);
            }
        }
    }
    if s.transport == Transport::Tcp {
        // IP_BIND_ADDRESS_NO_PORT lives at IPPROTO_IP for both families.
        let _ = sys::setsockopt(
            s.fd,
            k::IPPROTO_IP,
            k::IP_BIND_ADDRESS_NO_PORT,
            &1i32.to_ne_bytes(),
        );
    }
    let (storage, len) = crate::hooks::storage_from_sockaddr(&SocketAddr::new(ip, 0));
    sys::bind(s.fd, &storage, len)
        .map(|_| true)
        .map_err(|e| (e, "bind"))
}

/// Records the locks of a socket (and whether a listener's options are inherited).
pub fn record(fd: i32, locked: u32, listen_applied: bool) {
    let made = fdtable::get(fd)
        .map(|i| i & (fdtable::MADE_MPTCP | fdtable::PINNED_TCP | fdtable::KIND_MASK))
        .unwrap_or(0);
    let mut info = locked as u64 | fdtable::CHECKED | made;
    if listen_applied {
        info |= fdtable::LISTEN_APPLIED;
    }
    fdtable::set(fd, info);
}

/// connect(): decide with the remote address and apply everything before the SYN.
pub fn on_connect(g: &Global, s: Sock, remote: &SocketAddr) -> Result<Sock, Errno> {
    let (ip, port) = ip_key_of(remote);
    let ctx = Ctx {
        transport: s.transport,
        role: Some(Role::Client),
        remote: Some((ip, port)),
        local_port: None,
    };
    let d = g.policy.decide(&ctx);
    let s = settle_protocol(g, s, &d)?;
    if d.is_empty() {
        return Ok(s);
    }
    let locked = apply(g, s, Stage::Connect, &d, Some(remote), None)?;
    record(s.fd, locked, false);
    Ok(s)
}

/// Before connect/listen: make the socket MPTCP or TCP as the full decision says, if that
/// differs from what it is. A socket the program made MPTCP itself is left alone unless a
/// rule says `mptcp = false`.
fn settle_protocol(g: &Global, mut s: Sock, d: &Decision) -> Result<Sock, Errno> {
    if s.transport != Transport::Tcp || !g.policy.manages(Opt::Mptcp) {
        return Ok(s);
    }
    if crate::mptcp::pinned_tcp(s.fd) {
        return Ok(s);
    }
    let made = crate::mptcp::made_by_us(s.fd);
    let want = match d.get(Opt::Mptcp) {
        Some(st) => st.value == Value::Bool(true),
        None => s.mptcp && !made,
    };
    if want == s.mptcp {
        return Ok(s);
    }
    match crate::mptcp::swap(s.fd, s.family, want) {
        Ok(()) => {
            log_at!(
                LogLevel::Debug,
                "fd {}: made {} before the handshake",
                s.fd,
                if want { "MPTCP" } else { "plain TCP" }
            );
            s.mptcp = want;
        }
        Err(e) if want && crate::mptcp::is_refusal(e.0) => {
            crate::mptcp::warn_refused(e.0, g.policy.on_error == OnError::Fail);
            if g.policy.on_error == OnError::Fail {
                return Err(e);
            }
        }
        Err(e) => {
            log_at!(
                LogLevel::Info,
                "fd {}: stays {}: {}",
                s.fd,
                if s.mptcp { "MPTCP" } else { "TCP" },
                sys::errno_name(e.0)
            );
        }
    }
    Ok(s)
}

fn server_ctx(s: Sock, local_port: u16, remote: Option<&SocketAddr>) -> Ctx {
    Ctx {
        transport: s.transport,
        role: Some(Role::Server),
        remote: remote.map(ip_key_of),
        local_port: Some(local_port),
    }
}

pub fn on_listen(g: &Global, s: Sock, local: &SocketAddr) -> Result<(), Errno> {
    let d = g.policy.decide(&server_ctx(s, local.port(), None));
    let s = settle_protocol(g, s, &d)?;
    if d.is_empty() {
        return Ok(());
    }
    let locked = apply(g, s, Stage::Listen, &d, Some(local), None)?;
    record(s.fd, locked, true);
    Ok(())
}

/// accept(): options that match the peer, plus those an accepted socket does not inherit.
pub fn on_accept(
    g: &Global,
    listen_fd: i32,
    s: Sock,
    local_port: u16,
    peer: Option<&SocketAddr>,
) -> Result<(), Errno> {
    let d = g.policy.decide(&server_ctx(s, local_port, peer));
    if d.is_empty() {
        return Ok(());
    }
    let listener_applied =
        fdtable::get(listen_fd).is_some_and(|info| info & fdtable::LISTEN_APPLIED != 0);
    if listener_applied && !g.policy.any_needs_remote() && d.mask() & !g.inherited_mask == 0 {
        // No rule looks at the peer, so this socket's decision is the listener's, and every
        // option in it came with the socket: nothing to set, only the locks to record.
        record(s.fd, d.locked_mask(), false);
        return Ok(());
    }
    let inherited = if listener_applied {
        Some(g.policy.decide(&server_ctx(s, local_port, None)))
    } else {
        None
    };
    let skip = |o: Opt| match &inherited {
        Some(l) => {
            o.spec().inherited_by_accept && l.get(o).map(|x| x.value) == d.get(o).map(|x| x.value)
        }
        None => false,
    };
    let locked = apply(g, s, Stage::Accept, &d, peer, Some(&skip))?;
    record(s.fd, locked, false);
    Ok(())
}

pub fn on_bind(g: &Global, s: Sock, local: &SocketAddr) -> Result<(), Errno> {
    let d = g.policy.decide(&server_ctx(s, local.port(), None));
    if d.is_empty() {
        return Ok(());
    }
    let locked = apply(g, s, Stage::Bind, &d, Some(local), None)?;
    if s.transport == Transport::Udp {
        record(s.fd, locked, false);
    }
    Ok(())
}

static SAID_UDP_LIMIT: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

pub fn on_udp_socket(g: &Global, s: Sock) -> Result<(), Errno> {
    if g.policy.udp_dest_rules()
        && !SAID_UDP_LIMIT.swap(true, core::sync::atomic::Ordering::Relaxed)
    {
        log_at!(
            LogLevel::Info,
            "rules that name a destination reach UDP sockets at connect() only; datagrams sent with sendto() on an unconnected UDP socket get only the rules without a destination"
        );
    }
    let ctx = Ctx {
        transport: Transport::Udp,
        role: None,
        remote: None,
        local_port: None,
    };
    let d = g.policy.decide(&ctx);
    if d.is_empty() {
        return Ok(());
    }
    let locked = apply(g, s, Stage::UdpCreate, &d, None, None)?;
    record(s.fd, locked, false);
    Ok(())
}

/// A socket sockwrap has not seen being made (inherited across exec, as by OpenSSH's sshd,
/// which re-executes itself for each connection; or received over a Unix socket) and whose
/// program now sets an option the policy manages: decide for it as it stands, apply, lock.
/// Sockets not yet connected or listening are left to the connect/listen hooks.
pub fn adopt(g: &Global, s: Sock, local: &SocketAddr, peer: Option<&SocketAddr>, listening: bool) {
    if peer.is_none() && !listening {
        return;
    }
    let ctx = Ctx {
        transport: s.transport,
        role: if listening { Some(Role::Server) } else { None },
        remote: peer.map(ip_key_of),
        local_port: Some(local.port()),
    };
    let d = g.policy.decide(&ctx);
    let locked = if d.is_empty() {
        0
    } else {
        log_at!(
            LogLevel::Info,
            "fd {}: adopting a socket made before this process or outside sockwrap",
            s.fd
        );
        // Strict failures cannot fail a call the program did not make: warn instead.
        apply(g, s, Stage::Accept, &d, peer.or(Some(local)), None).unwrap_or(0)
    };
    record(s.fd, locked, listening);
}

/// One `"ev":"apply"` trace line: what sockwrap set on the socket, and how it went.
fn trace_apply(
    s: Sock,
    stage: Stage,
    opt: Opt,
    value: Value,
    maybe_v4: bool,
    failed: Option<(i32, &str)>,
) {
    let saved = sys::errno();
    let mut e = crate::trace::Ev::begin("apply", stage.call(), s.fd);
    e.key("option").str(opt.name());
    e.key("kernel");
    match failed {
        Some((_, cname)) => e.str(cname),
        None if opt == Opt::BindAddress => e.str("bind"),
        None => {
            e.raw("\"");
            let mut first = true;
            for op in catalog::kernel_ops(opt, value, s.family, maybe_v4).iter() {
                if !first {
                    e.raw("+");
                }
                first = false;
                e.raw(op.cname);
            }
            e.raw("\"");
        }
    }
    match (opt, value) {
        (Opt::Tos, Value::Int(tos)) => {
            let dscp = ((tos >> 2) & 0x3f) as u8;
            match catalog::dscp_name(dscp) {
                Some(n) => e
                    .key("value")
                    .disp(format_args!("0x{:02x} (DSCP {})", tos, n)),
                None => e
                    .key("value")
                    .disp(format_args!("0x{:02x} (DSCP {})", tos, dscp)),
            }
        }
        _ => e.key("value").disp(Shown(opt, value)),
    }
    match failed {
        None => e.key("result").str("ok"),
        Some((errno, _)) => {
            e.key("result").str("failed");
            e.key("errno").str(crate::trace::errno_short(errno));
        }
    }
    e.finish();
    sys::set_errno(saved);
}
