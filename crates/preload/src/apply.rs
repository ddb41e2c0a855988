//! Deciding for a socket and carrying out the [`Plan`]: the safe middle between the hooks
//! and the kernel.
//!
//! The policy crate says what a socket gets ([`Decision`], then [`Plan`]: the exact
//! `setsockopt` calls and what to lock). This module only executes a plan: one system call
//! per entry, refusals handled as the failure policy says, locks recorded in the fd table,
//! and the `info` line and trace for what happened.

use crate::fdstate::{self, FdState, Kind};
use crate::log::{self, Line};
#[allow(unused_imports)]
use crate::prelude::*;
use crate::sys::{self, Errno, SockAddr};
use crate::{log_at, mptcp, trace};
use core::fmt::Write;
use core::net::SocketAddr;
use sockwrap_policy::catalog::{Family, Shown};
use sockwrap_policy::plan::{PlanOp, AF_INET6};
use sockwrap_policy::{
    Ctx, Decision, LogLevel, OnError, Opt, Plan, Policy, Stage, Transport, Value, Variant,
};

/// What the process-wide state holds: built once in the constructor, then read-only.
pub struct Global {
    pub policy: Policy,
    /// Whether a fresh TCP socket of this process is created as MPTCP.
    pub mptcp_at_creation: bool,
    /// The seeded choices of `fail` rules.
    pub chooser: crate::seed::Chooser,
    /// Some rule has connection actions or looks at host names: connect takes the longer
    /// way (`calls::connect_acting`).
    pub connect_extras: bool,
}

impl Global {
    pub fn new(policy: Policy, seed: Option<u64>) -> Global {
        let any_fail = policy.rules().iter().any(|r| r.actions.fail.is_some());
        Global {
            mptcp_at_creation: mptcp::wanted_at_creation(&policy),
            connect_extras: policy.any_actions() || policy.any_host(),
            chooser: crate::seed::Chooser::new(policy.rules().len(), any_fail, seed),
            policy,
        }
    }

    pub fn strict(&self) -> bool {
        self.policy.on_error == OnError::Fail
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

impl Sock {
    pub fn kind(self) -> Kind {
        Kind {
            transport: self.transport,
            mptcp: self.mptcp,
            family: self.family,
        }
    }
}

fn is_v4_mapped(a: &SocketAddr) -> bool {
    matches!(a, SocketAddr::V6(v6) if v6.ip().to_ipv4_mapped().is_some())
}

/// Carries out `plan` on `s` (the plan of `d` at `stage`). Returns the locks to record, or
/// the errno to fail the hooked call with, when strict. `peer` is the remote (connect,
/// accept) or local (bind, listen) address, for the info line.
///
/// The loop is the per-connection cost of sockwrap: one system call per entry; the info
/// line, the trace and the refusal handling are out of line and only reached when wanted.
pub fn execute(
    g: &Global,
    s: Sock,
    stage: Stage,
    d: &Decision,
    plan: &Plan,
    peer: Option<&SocketAddr>,
) -> Result<u32, Errno> {
    // A slice of ready-made entries (the common case) or the general walk: the same loop,
    // made twice, because over a plain slice its state stays in registers around the
    // system call (the walk's spills cost ~4 instructions an entry, measured with
    // callgrind on bench/build/connbench).
    let (done, failed) = match plan.ready_only() {
        Some(ops) => set_each(g, s, stage, d, ops.iter())?,
        None => set_each(g, s, stage, d, plan.ops())?,
    };
    let done = done & !failed;
    // The log level is read once here: this runs in every connect.
    if log::enabled(LogLevel::Info) {
        log::count_applied(done);
        if done | failed != 0 {
            noted(s, stage, d, plan, peer, done, failed);
        }
    } else if done | failed != 0 && trace::on() {
        noted(s, stage, d, plan, peer, done, failed);
    }
    Ok(plan.lock & !failed)
}

/// One system call per entry of `ops`: the slots set, and those refused.
#[inline(always)]
fn set_each<'a>(
    g: &Global,
    s: Sock,
    stage: Stage,
    d: &Decision,
    ops: impl Iterator<Item = &'a PlanOp>,
) -> Result<(u32, u32), Errno> {
    let mut done = 0u32;
    let mut failed = 0u32;
    for op in ops {
        let bit = 1u32 << op.opt;
        if failed & bit != 0 {
            continue; // the slot's first kernel option was refused: the rest is moot
        }
        let r = if op.is_bind() {
            match bind_source(s, op) {
                Ok(true) => Ok(()),
                Ok(false) => continue, // the program bound the socket itself
                Err(e) => Err(e),
            }
        } else {
            sys::setsockopt(s.fd, op.level, op.name, op.bytes())
        };
        match r {
            Ok(()) => done |= bit,
            Err(_) if op.is_extra() => {} // IP_TOS/IP_TTL as an extra on an IPv6 socket
            Err(e) => {
                failed |= bit;
                refused(g, s, stage, d, op, e)?;
            }
        }
    }
    Ok((done, failed))
}

/// The trace lines and the info line for what [`execute`] did.
#[cold]
#[inline(never)]
fn noted(
    s: Sock,
    stage: Stage,
    d: &Decision,
    plan: &Plan,
    peer: Option<&SocketAddr>,
    done: u32,
    failed: u32,
) {
    if trace::on() {
        for (opt, st) in d.iter_mask(done) {
            trace::apply(
                s.fd,
                stage.call(),
                opt,
                st.value,
                &kernel_names(plan, opt),
                None,
            );
        }
    }
    if log::enabled(LogLevel::Info) {
        info_line(s, stage, d, peer, done, failed);
    }
}

/// `IPV6_TCLASS+IP_TOS`: the C names of the kernel options a plan sets for `opt`.
fn kernel_names(plan: &Plan, opt: Opt) -> Line {
    let mut l = Line::new();
    let mut first = true;
    for op in plan.ops().filter(|o| o.opt == opt as u8) {
        let _ = write!(l, "{}{}", if first { "" } else { "+" }, op.cname());
        first = false;
    }
    l
}

/// An option the kernel refused: count it, trace it, warn once, or fail the call (strict).
#[cold]
#[inline(never)]
fn refused(
    g: &Global,
    s: Sock,
    stage: Stage,
    d: &Decision,
    op: &PlanOp,
    e: Errno,
) -> Result<(), Errno> {
    let Some(opt) = op.option() else {
        return Ok(());
    };
    let Some(setting) = d.get(opt) else {
        return Ok(());
    };
    let cname = op.cname();
    if trace::on() {
        let mut names = Line::new();
        let _ = names.write_str(cname);
        trace::apply(s.fd, stage.call(), opt, setting.value, &names, Some(e.0));
    }
    let first = log::count_failed(opt, e.0);
    if g.strict() {
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
    log::emit(LogLevel::Info, format_args!("{}", line.as_str()));
}

/// Binds the source address of a [`sockwrap_policy::plan::LEVEL_BIND`] entry before
/// connect, unless the program bound the socket itself. `IP_BIND_ADDRESS_NO_PORT` defers
/// the port choice to connect(), so a busy client does not reserve one port per
/// connection for all destinations and run out. Ok(false): nothing to do (bound already).
fn bind_source(s: Sock, op: &PlanOp) -> Result<bool, Errno> {
    if let Some(l) = sys::local_addr(s.fd) {
        if l.port() != 0 || !l.ip().is_unspecified() {
            return Ok(false);
        }
    }
    let ip: core::net::IpAddr = if op.name == AF_INET6 {
        let mut b = [0u8; 16];
        b.copy_from_slice(&op.val);
        core::net::Ipv6Addr::from(b).into()
    } else {
        core::net::Ipv4Addr::new(op.val[0], op.val[1], op.val[2], op.val[3]).into()
    };
    if s.transport == Transport::Tcp {
        // IP_BIND_ADDRESS_NO_PORT lives at IPPROTO_IP for both families.
        let _ = sys::setsockopt(
            s.fd,
            sockwrap_policy::catalog::k::IPPROTO_IP,
            sockwrap_policy::catalog::k::IP_BIND_ADDRESS_NO_PORT,
            &1i32.to_ne_bytes(),
        );
    }
    sys::bind(s.fd, &SockAddr::from(SocketAddr::new(ip, 0))).map(|_| true)
}

/// Records the locks of a socket (and whether a listener's options are inherited).
#[inline(always)]
pub fn record(s: Sock, locked: u32, listen_applied: bool) {
    let origin = fdstate::get(s.fd).map(FdState::origin).unwrap_or_default();
    fdstate::set(
        s.fd,
        origin
            .checked()
            .with_kind(Some(s.kind()))
            .with_locked(locked)
            .with_listen_applied(listen_applied),
    );
}

/// Decides, plans and executes for `s` at `stage`.
fn run(
    g: &Global,
    s: Sock,
    stage: Stage,
    d: &Decision,
    peer: Option<&SocketAddr>,
    skip: u32,
) -> Result<u32, Errno> {
    let variant = Variant::of(s.family, stage, peer.map(is_v4_mapped));
    let plan = d.plan(stage, s.transport, variant, skip);
    execute(g, s, stage, d, &plan, peer)
}

/// connect(): decide with the remote address and apply everything before the SYN.
// Inlined into both connect paths: called, it cost ~50 instructions more per connect (the
// decision's copies), measured with callgrind on bench/build/connbench.
#[inline(always)]
pub fn on_connect(
    g: &Global,
    s: Sock,
    remote: &SocketAddr,
    host: Option<&str>,
) -> Result<Sock, Errno> {
    let ctx = connect_ctx(s, remote, host);
    let d = g.policy.decide(&ctx);
    let s = settle_protocol(g, s, &d)?;
    if d.is_empty() {
        return Ok(s);
    }
    let locked = run(g, s, Stage::Connect, &d, Some(remote), 0)?;
    record(s, locked, false);
    Ok(s)
}

/// What a connect of `s` to `remote` (which came from the name `host`) is decided on.
pub fn connect_ctx<'a>(s: Sock, remote: &SocketAddr, host: Option<&'a str>) -> Ctx<'a> {
    Ctx::client(s.transport, Some(remote), host)
}

/// Before connect/listen: make the socket MPTCP or TCP as the full decision says, if that
/// differs from what it is. A socket the program made MPTCP itself is left alone unless a
/// rule says `mptcp = false`.
// The test inline, the work out of line: called, the test alone cost ~30 instructions per
// connect (callgrind on bench/build/connbench), for policies that do not manage MPTCP.
#[inline(always)]
fn settle_protocol(g: &Global, s: Sock, d: &Decision) -> Result<Sock, Errno> {
    if s.transport != Transport::Tcp || !g.policy.manages(Opt::Mptcp) {
        return Ok(s);
    }
    settle_mptcp(g, s, d)
}

#[inline(never)]
fn settle_mptcp(g: &Global, mut s: Sock, d: &Decision) -> Result<Sock, Errno> {
    let state = fdstate::get(s.fd).unwrap_or_default();
    if state.pinned_tcp() {
        return Ok(s);
    }
    let want = match d.get(Opt::Mptcp) {
        Some(st) => st.value == Value::Bool(true),
        None => s.mptcp && !state.made_mptcp(),
    };
    if want == s.mptcp {
        return Ok(s);
    }
    match mptcp::swap(s.fd, s.family, want) {
        Ok(()) => {
            log_at!(
                LogLevel::Debug,
                "fd {}: made {} before the handshake",
                s.fd,
                if want { "MPTCP" } else { "plain TCP" }
            );
            s.mptcp = want;
        }
        Err(e) if want && mptcp::is_refusal(e.0) => {
            mptcp::warn_refused(e.0, g.strict());
            if g.strict() {
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

pub fn on_listen(g: &Global, s: Sock, local: &SocketAddr) -> Result<(), Errno> {
    let d = g
        .policy
        .decide(&Ctx::server(s.transport, local.port(), None));
    let s = settle_protocol(g, s, &d)?;
    if d.is_empty() {
        return Ok(());
    }
    let locked = run(g, s, Stage::Listen, &d, Some(local), 0)?;
    record(s, locked, true);
    Ok(())
}

/// accept(): options that match the peer, plus those an accepted socket does not inherit.
pub fn on_accept(
    g: &Global,
    listener: FdState,
    s: Sock,
    local_port: u16,
    peer: Option<&SocketAddr>,
) -> Result<(), Errno> {
    let d = g.policy.decide(&Ctx::server(s.transport, local_port, peer));
    if d.is_empty() {
        return Ok(());
    }
    let inherited = sockwrap_policy::plan::INHERITED;
    if listener.listen_applied() && !g.policy.any_needs_remote() && d.mask() & !inherited == 0 {
        // No rule looks at the peer, so this socket's decision is the listener's, and every
        // option in it came with the socket: nothing to set, only the locks to record.
        record(s, d.locked_mask(), false);
        return Ok(());
    }
    let skip = if listener.listen_applied() {
        d.inherited_from(&g.policy.decide(&Ctx::server(s.transport, local_port, None)))
    } else {
        0
    };
    let locked = run(g, s, Stage::Accept, &d, peer, skip)?;
    record(s, locked, false);
    Ok(())
}

pub fn on_bind(g: &Global, s: Sock, local: &SocketAddr) -> Result<(), Errno> {
    let d = g
        .policy
        .decide(&Ctx::server(s.transport, local.port(), None));
    if d.is_empty() {
        return Ok(());
    }
    let locked = run(g, s, Stage::Bind, &d, Some(local), 0)?;
    if s.transport == Transport::Udp {
        record(s, locked, false);
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
    let ctx = Ctx::new(Transport::Udp);
    let d = g.policy.decide(&ctx);
    if d.is_empty() {
        return Ok(());
    }
    let locked = run(g, s, Stage::UdpCreate, &d, None, 0)?;
    record(s, locked, false);
    Ok(())
}

/// A socket sockwrap has not seen being made (inherited across exec, as by OpenSSH's sshd,
/// which re-executes itself for each connection; or received over a Unix socket) and whose
/// program now sets an option the policy manages: decide for it as it stands, apply, lock.
/// Sockets not yet connected or listening are left to the connect/listen hooks.
pub fn adopt(g: &Global, fd: i32) {
    let Some((transport, mptcp)) = fdstate::kernel_kind(fd) else {
        return;
    };
    let Some(local) = sys::local_addr(fd) else {
        return;
    };
    let peer = sys::peer_addr(fd);
    let listening = transport == Transport::Tcp
        && sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_ACCEPTCONN).unwrap_or(0) != 0;
    let s = Sock {
        fd,
        family: family_of(&local),
        transport,
        mptcp,
    };
    if peer.is_none() && !listening {
        return;
    }
    let ctx = if listening {
        Ctx::server(transport, local.port(), peer.as_ref())
    } else {
        Ctx::inherited(transport, local.port(), peer.as_ref())
    };
    let d = g.policy.decide(&ctx);
    let locked = if d.is_empty() {
        0
    } else {
        log_at!(
            LogLevel::Info,
            "fd {}: adopting a socket made before this process or outside sockwrap",
            fd
        );
        // Strict failures cannot fail a call the program did not make: warn instead.
        run(g, s, Stage::Accept, &d, peer.as_ref().or(Some(&local)), 0).unwrap_or(0)
    };
    record(s, locked, listening);
}

pub fn family_of(a: &SocketAddr) -> Family {
    match a {
        SocketAddr::V4(_) => Family::V4,
        SocketAddr::V6(_) => Family::V6,
    }
}
