//! `sockwrap attach PID`: give the open sockets of a running program the policy's options,
//! once, without restarting it and without anything of sockwrap inside it.
//!
//! The sockets are found in `/proc` ([`crate::procnet`]); each is duplicated into this
//! process with `pidfd_getfd` ([`crate::pidfd`]), which shares the program's own socket:
//! options set on the duplicate are set on the program's socket. Which options a socket
//! gets is decided as the library decides (the same rules, the same [`Plan`] entries);
//! options that no longer mean anything on an open socket are named and skipped
//! ([`plan::fixed_once_open`]). Every value is read back with `getsockopt` before and
//! after. Nothing is locked: the program may set its own values again later.
//!
//! Each duplicate is held only while its socket's rows are made (a program's `close()` of
//! a socket we still hold would not release it), and nothing but the options asked for is
//! changed (IP_TOS also rewrites SO_PRIORITY on IPv4, so the priority is put back).
//!
//! `--follow` ([`follow`]) adds the kernel backend: the processes are moved into a sockwrap
//! cgroup (a child of the cgroup each is in) carrying the BPF programs of the same policy,
//! before the one-shot part, so that the sockets they open from then on get the policy and
//! its locks; sockwrap stays until they exit or a signal moves them back.

use crate::error::{Error, Result};
use crate::json::{obj, object, option_value, Json, JsonExt as _};
use crate::launch::flag_vars;
use crate::pidfd;
use crate::procnet::{self, Entry, Tables, TCP_LISTEN};
use clap::ArgMatches;
use sockwrap_policy::catalog::{self, k, Applies, Enc, Family, Name16, OpFamily, Opt, Shown};
use sockwrap_policy::plan::{self, Stage, Variant};
use sockwrap_policy::rules::remote_key;
use sockwrap_policy::{Ctx, Policy, Role, Transport, Value};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::process::ExitCode;

const IPPROTO_MPTCP: i32 = 262;

/// One socket of the target, as found.
struct Sock {
    pid: i32,
    fd: i32,
    transport: Transport,
    family: Family,
    mptcp: bool,
    local: SocketAddr,
    remote: Option<SocketAddr>,
    state: &'static str,
    listening: bool,
    role: Option<Role>,
}

impl Sock {
    fn endpoints(&self) -> String {
        let proto = match (self.transport, self.mptcp) {
            (Transport::Udp, _) => "udp",
            (Transport::Tcp, true) => "mptcp",
            (Transport::Tcp, false) => "tcp",
        };
        match self.remote {
            Some(r) => format!("{proto} {} -> {r}", self.local),
            None => format!("{proto} {}", self.local),
        }
    }

    fn role_name(&self) -> &'static str {
        match self.role {
            Some(Role::Client) => "client",
            Some(Role::Server) => "server",
            None => "-",
        }
    }

    /// Whether the socket may carry IPv4 (an AF_INET6 socket with a v4-mapped peer, or no
    /// peer yet: a dual-stack listener).
    fn variant(&self) -> Variant {
        let mapped = self.remote.map(|r| match r {
            SocketAddr::V6(a) => a.ip().to_ipv4_mapped().is_some(),
            SocketAddr::V4(_) => true,
        });
        Variant::of(self.family, Stage::Connect, mapped)
    }
}

/// What happened to one option of one socket.
enum Outcome {
    /// Set; `after` is what the kernel reports now.
    Set,
    /// The socket already had the value: nothing was called.
    Already,
    /// `--dry-run`: it would be set.
    WouldSet,
    /// The kernel said no.
    Refused(io::Error, &'static str),
    /// Not attempted, and why.
    Skipped(String),
    /// `--list`: the current value.
    Listed,
}

struct Row {
    option: String,
    kernel: &'static str,
    before: Option<Value>,
    wanted: Option<Value>,
    after: Option<Value>,
    outcome: Outcome,
    opt: Option<Opt>,
}

/// One socket and its rows; `gone` when it closed during the run.
struct Report {
    sock: Option<Sock>,
    pid: i32,
    fd: i32,
    gone: Option<&'static str>,
    rows: Vec<Row>,
    /// No rule chose an option for this socket.
    no_rule: bool,
}

struct Opts {
    list: bool,
    dry_run: bool,
    json: bool,
    role: Option<Role>,
    follow: bool,
}

pub fn attach(m: &ArgMatches) -> Result<ExitCode> {
    let pid = *m.get_one::<i32>("pid").unwrap_or(&0);
    let o = Opts {
        list: m.get_flag("list"),
        dry_run: m.get_flag("dry-run"),
        json: m.get_flag("json"),
        role: match m.get_one::<String>("role").map(String::as_str) {
            Some("client") => Some(Role::Client),
            Some("server") => Some(Role::Server),
            _ => None,
        },
        follow: m.get_flag("follow"),
    };
    let follow = o.follow;
    let vars = flag_vars(m)?;
    if o.list && !vars.is_empty() {
        return Err(Error::usage(
            "attach: --list shows the sockets as they are; to see what options would change, use --dry-run",
        ));
    }
    if !o.list && vars.is_empty() {
        return Err(Error::usage(
            "attach: nothing to set: give options (--dscp EF, --keepalive 30,10,3, ...) or a policy (-c FILE); --list shows the sockets",
        ));
    }
    let on_cgroup = super::containers::asked(m).is_some();
    if (follow || on_cgroup) && o.role.is_some() && !o.list {
        return Err(Error::usage(
            "attach: --role chooses among the open sockets; with --follow the policy also decides for the sockets opened later: put the role in a rule (match = { role = \"server\" }, -c FILE)",
        ));
    }
    crate::load::config_exists(m)?;
    let policy = if o.list {
        Policy::default()
    } else {
        crate::load::policy_or_refuse(
            crate::load::load_vars(&vars),
            "attach: the policy has errors; no process was touched",
        )?
    };
    // Connection actions act on connects, and host names are learnt from resolutions:
    // neither reaches sockets that are already open. Said, not silently dropped.
    if !o.list && !follow && !on_cgroup {
        let acting: Vec<&str> = policy
            .rules()
            .iter()
            .filter(|r| !r.actions.is_empty() || r.matcher.uses_host())
            .map(|r| r.name.as_str())
            .collect();
        if !acting.is_empty() {
            eprintln!(
                "sockwrap: attach: rule{} {}: connection actions (deny, redirect, delay, fail) and host names act on new connects only, not on open sockets: not applied here (--follow carries deny and redirect to the new connects)",
                if acting.len() > 1 { "s" } else { "" },
                acting.join(", ")
            );
        }
    }
    // Options the kernel backend cannot set are refused before anything is done, the
    // one-shot part included: never half of the policy.
    // The protocol of the sockets a followed process makes is chosen by run --kernel's and
    // enable --kernel's conversion program (a cgroup of their own from the start).
    if (follow || on_cgroup) && policy.manages(Opt::Mptcp) {
        let what = if on_cgroup {
            "attach --cgroup/--container/--pod"
        } else {
            "attach --follow"
        };
        return Err(Error::usage(format_args!(
            "{what} cannot set mptcp: the protocol is chosen at socket(), and the MPTCP conversion is made for a cgroup sockwrap starts (sudo sockwrap run --kernel --mptcp, enable UNIT --kernel --mptcp); nothing attached; no process was touched",
        )));
    }
    let tables = if follow && !on_cgroup {
        Some(super::kernel::tables_for(
            &policy,
            "attach --follow",
            "refusing to follow; no process was touched",
            false,
        )?)
    } else {
        None
    };
    if let Some((kind, value)) = super::containers::asked(m) {
        return super::containers::attach(m, kind, &value, &policy, |pids| {
            one_shot(pids.first().copied().unwrap_or(0), pids, &o, &policy)
        });
    }
    if pid <= 0 {
        return Err(no_such_pid(pid));
    }
    let target = match procnet::tgid(pid) {
        Some(t) => t,
        None => return Err(no_such_pid(pid)),
    };
    if target != pid {
        eprintln!(
            "sockwrap: attach: {pid} is a thread of process {target}; its threads share one descriptor table: attaching to {target}"
        );
    }
    let tree = m.get_flag("tree");
    let pids = if tree {
        procnet::tree(target)
    } else {
        vec![target]
    };
    let Some(tables) = tables else {
        return one_shot(target, &pids, &o, &policy);
    };
    let mut f = follow::Follow::plan(target, &pids, tree)?;
    if o.dry_run {
        f.say_dry_run();
        return one_shot(target, &pids, &o, &policy);
    }
    f.start(&tables)?;
    // After the move: a socket opened from now on is the programs', one opened before is
    // in the table below; none falls between.
    let pids = if tree { procnet::tree(target) } else { pids };
    let done = one_shot(target, &pids, &o, &policy);
    let refused = match done {
        Ok(_) => false,
        Err(Error::Findings) => true,
        Err(e) => {
            f.abandon();
            return Err(e);
        }
    };
    f.wait(policy.on_error, refused)
}

/// The one-shot part: every open TCP/UDP socket of `pids` gets what the policy chooses for
/// it (or, with --list, is shown), and the table or JSON is printed.
fn one_shot(target: i32, pids: &[i32], o: &Opts, policy: &Policy) -> Result<ExitCode> {
    let mut w = Walk {
        target,
        o,
        policy,
        by_program: policy.rules().iter().any(|r| r.matcher.uses_program()),
        tables: HashMap::new(),
        reports: Vec::new(),
        exited: Vec::new(),
    };
    // A failure in a later process of the tree still shows what was done before it.
    let fatal = pids.iter().find_map(|&p| w.process(p).err());
    let (reports, exited) = (w.reports, w.exited);
    if fatal.is_some() && reports.is_empty() {
        return Err(fatal.unwrap_or(Error::Findings));
    }
    if o.json {
        print!("{}", json(target, o, &reports, &exited));
    } else {
        print!("{}", table(o, &reports));
        for p in &exited {
            println!("process {p} exited during the run");
        }
    }
    let refused: Vec<&Row> = reports
        .iter()
        .flat_map(|r| &r.rows)
        .filter(|r| matches!(r.outcome, Outcome::Refused(..)))
        .collect();
    if let Some(first) = refused.first() {
        let (err, hint) = match &first.outcome {
            Outcome::Refused(e, h) => (e.to_string(), *h),
            _ => (String::new(), ""),
        };
        eprintln!(
            "sockwrap: attach: the kernel refused {} option{}: first {} ({}): {err}{}{hint}",
            refused.len(),
            if refused.len() == 1 { "" } else { "s" },
            first.option,
            first.kernel,
            if hint.is_empty() { "" } else { ": " },
        );
        return Err(fatal.unwrap_or(Error::Findings));
    }
    match fatal {
        Some(e) => Err(e),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// The walk over the processes: what it needs and what it found.
struct Walk<'a> {
    target: i32,
    o: &'a Opts,
    policy: &'a Policy,
    by_program: bool,
    /// The socket tables, once per network namespace.
    tables: HashMap<String, Tables>,
    reports: Vec<Report>,
    exited: Vec<i32>,
}

impl Walk<'_> {
    /// Every TCP/UDP socket of process `p`, one report each.
    fn process(&mut self, p: i32) -> Result<()> {
        let first = p == self.target;
        let o = self.o;
        let tables = &mut self.tables;
        let reports = &mut self.reports;
        let exited = &mut self.exited;
        let by_program = self.by_program;
        let policy = self.policy;
        let pidfd = match pidfd::pidfd_open(p) {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) && !first => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Err(no_such_pid(p)),
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                return Err(old_kernel("pidfd_open"))
            }
            Err(e) => return Err(Error::setup(format_args!("attach: pidfd_open({p}): {e}"))),
        };
        let fds = match procnet::socket_fds(p) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => return Err(no_permission(p)),
            Err(e) if e.kind() == io::ErrorKind::NotFound && !first => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(no_such_pid(p)),
            Err(e) => {
                return Err(Error::setup(format_args!(
                    "attach: cannot read /proc/{p}/fd: {e}"
                )))
            }
        };
        let ns = procnet::netns(p).unwrap_or_default();
        if !tables.contains_key(&ns) {
            let t = Tables::read(p).map_err(|e| {
                if e.kind() == io::ErrorKind::PermissionDenied {
                    no_permission(p)
                } else {
                    Error::setup(format_args!(
                        "attach: cannot read the socket tables /proc/{p}/net/: {e}"
                    ))
                }
            })?;
            tables.insert(ns.clone(), t);
        }
        let Some(t) = tables.get(&ns) else {
            return Ok(());
        };
        let pol = if by_program {
            let names = procnet::program_names(p);
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            policy.for_program(&refs)
        } else {
            policy.clone()
        };
        for (fd, ino) in fds {
            let dup = match pidfd::pidfd_getfd(&pidfd, fd) {
                Ok(d) => d,
                Err(e) => match e.raw_os_error() {
                    Some(libc::EBADF) => {
                        reports.push(gone(p, fd, "closed during the run: skipped"));
                        continue;
                    }
                    Some(libc::ESRCH) => {
                        exited.push(p);
                        return Ok(());
                    }
                    Some(libc::EPERM) | Some(libc::EACCES) => return Err(no_permission(p)),
                    Some(libc::ENOSYS) => return Err(old_kernel("pidfd_getfd")),
                    _ => {
                        return Err(Error::setup(format_args!(
                            "attach: pidfd_getfd({p}, {fd}): {e}"
                        )))
                    }
                },
            };
            // The descriptor may have been closed and its number reused since /proc was read.
            if pidfd::inode(&dup).ok() != Some(ino) {
                reports.push(gone(
                    p,
                    fd,
                    "closed during the run (the descriptor is now another file): skipped",
                ));
                continue;
            }
            let Some(sock) = describe(p, fd, &dup, t.by_inode.get(&ino), t) else {
                continue; // not a TCP or UDP socket: Unix, netlink, raw...
            };
            if o.role.is_some() && sock.role != o.role {
                continue;
            }
            let r = if o.list {
                list_socket(sock, &dup)
            } else {
                apply_socket(sock, &dup, &pol, o.dry_run)
            };
            reports.push(r);
            drop(dup); // hold the program's socket no longer than its rows take
        }

        Ok(())
    }
}

fn gone(pid: i32, fd: i32, why: &'static str) -> Report {
    Report {
        sock: None,
        pid,
        fd,
        gone: Some(why),
        rows: Vec::new(),
        no_rule: false,
    }
}

fn no_such_pid(pid: i32) -> Error {
    Error::usage(format_args!(
        "attach: no process {pid} (check the PID with `ps -p {pid}` or `pgrep NAME`)"
    ))
}

fn old_kernel(call: &str) -> Error {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    // Exit 2, as `--kernel` for what this kernel cannot do.
    Error::usage(format_args!(
        "attach: this kernel ({release}) has no {call}(): attach needs Linux 5.6 or later; on older kernels restart the program under `sockwrap run`"
    ))
}

fn no_permission(pid: i32) -> Error {
    let yama = match std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope") {
        Ok(v) => format!("kernel.yama.ptrace_scope is {} here", v.trim()),
        Err(_) => "Yama is not active here (no kernel.yama.ptrace_scope)".into(),
    };
    Error::setup(format_args!(
        "attach: not allowed to take the sockets of process {pid}: pidfd_getfd needs ptrace access to it: run as root (CAP_SYS_PTRACE), or as the process's own user with kernel.yama.ptrace_scope = 0 ({yama})"
    ))
}

/// The socket's facts: from the namespace's table when it is listed there, otherwise
/// (MPTCP sockets, sockets made after the table was read, unbound sockets) from the
/// duplicate itself. `None` for sockets that are not TCP or UDP over IP.
fn describe(pid: i32, fd: i32, dup: &OwnedFd, e: Option<&Entry>, t: &Tables) -> Option<Sock> {
    let int = |level, name| pidfd::getsockopt_int(dup, level, name).ok();
    let domain = int(libc::SOL_SOCKET, libc::SO_DOMAIN)?;
    let family = match domain {
        libc::AF_INET => Family::V4,
        libc::AF_INET6 => Family::V6,
        _ => return None,
    };
    let proto = int(libc::SOL_SOCKET, libc::SO_PROTOCOL).unwrap_or(0);
    let (transport, mptcp) = match (int(libc::SOL_SOCKET, libc::SO_TYPE)?, proto) {
        (libc::SOCK_STREAM, libc::IPPROTO_TCP) => (Transport::Tcp, false),
        (libc::SOCK_STREAM, IPPROTO_MPTCP) => (Transport::Tcp, true),
        (libc::SOCK_DGRAM, libc::IPPROTO_UDP) => (Transport::Udp, false),
        _ => return None,
    };
    let (local, remote, state, listening) = match e {
        Some(e) => (
            e.local,
            e.remote,
            e.state_name(),
            e.transport == Transport::Tcp && e.state == TCP_LISTEN,
        ),
        None => {
            let local = pidfd::local_addr(dup)?;
            let remote = pidfd::peer_addr(dup);
            let listening = int(libc::SOL_SOCKET, libc::SO_ACCEPTCONN).unwrap_or(0) != 0;
            let state = match (listening, remote.is_some(), transport) {
                (true, _, _) => "LISTEN",
                (_, true, _) => "ESTAB",
                (_, false, Transport::Udp) => "UNCONN",
                (_, false, Transport::Tcp) => "CLOSE",
            };
            (local, remote, state, listening)
        }
    };
    let role = match transport {
        Transport::Tcp if listening || t.is_accepted(local) => Some(Role::Server),
        Transport::Tcp => Some(Role::Client),
        Transport::Udp if remote.is_some() => Some(Role::Client),
        // An unconnected UDP socket on a port below the ephemeral range was bound by the
        // program: a server. On an ephemeral port it may be either (the library too leaves
        // the role of a fresh UDP socket open).
        Transport::Udp if local.port() != 0 && local.port() < ephemeral_low() => Some(Role::Server),
        Transport::Udp => None,
    };
    Some(Sock {
        pid,
        fd,
        transport,
        family,
        mptcp,
        local,
        remote,
        state,
        listening,
        role,
    })
}

fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(32768)
}

/// The value a kernel option reports, as the catalog's value type.
fn decode(enc: Enc, b: &[u8]) -> Option<Value> {
    let int = || Some(i32::from_ne_bytes(b.get(..4)?.try_into().ok()?));
    Some(match enc {
        Enc::Int | Enc::BufSize => Value::Int(int()? as i64),
        Enc::U32 => Value::Int(int()? as u32 as i64),
        Enc::Bool => Value::Bool(int()? != 0),
        Enc::Str | Enc::StrNul => {
            let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
            Value::Name(Name16::new(std::str::from_utf8(&b[..end]).ok()?)?)
        }
        Enc::Linger => {
            let on = int()?;
            let secs = i32::from_ne_bytes(b.get(4..8)?.try_into().ok()?);
            Value::Linger((on != 0).then_some(secs.clamp(0, u16::MAX as i32) as u16))
        }
    })
}

/// `getsockopt` with a buffer as wide as the encoding the catalog sets: the kernel answers
/// some options in the width it is asked (SO_MAX_PACING_RATE is a u64 when the buffer has
/// room for one, and a u32 clamped to u32::MAX when it has four bytes), so a wider buffer
/// would get bytes the encoding does not read (a 5 GB/s rate read as its low 32 bits).
fn read(dup: &OwnedFd, level: i32, name: i32, enc: Enc) -> Option<Value> {
    let mut buf = [0u8; 16];
    let width = match enc {
        Enc::Int | Enc::U32 | Enc::Bool | Enc::BufSize => 4,
        Enc::Linger => 8,
        Enc::Str | Enc::StrNul => buf.len(),
    };
    let n = pidfd::getsockopt(dup, level, name, &mut buf[..width]).ok()?;
    decode(enc, &buf[..n])
}

/// Whether the socket already has `want` (the kernel keeps a TCP socket's ECN bits in its
/// ToS and reports buffer sizes doubled).
fn same(enc: Enc, opt: Opt, tcp: bool, have: Option<Value>, want: Option<Value>) -> bool {
    match (have, want) {
        (Some(Value::Int(h)), Some(Value::Int(w))) if opt == Opt::Tos && tcp => h & !3 == w & !3,
        (Some(Value::Int(h)), Some(Value::Int(w))) if enc == Enc::BufSize => h == w * 2,
        (h, w) => h.is_some() && h == w,
    }
}

/// What to say when the kernel refuses an option, for the options where the reason is
/// known.
fn refusal_hint(level: i32, name: i32, err: &io::Error) -> &'static str {
    match (level, name, err.raw_os_error()) {
        (k::SOL_SOCKET, k::SO_MARK, Some(libc::EPERM)) => "SO_MARK needs CAP_NET_ADMIN (run attach as root)",
        (k::SOL_SOCKET, k::SO_PRIORITY, Some(libc::EPERM)) => {
            "a priority above 6 needs CAP_NET_ADMIN (run attach as root)"
        }
        (k::IPPROTO_TCP, k::TCP_CONGESTION, Some(libc::EPERM)) => {
            "the algorithm is not in net.ipv4.tcp_allowed_congestion_control (root may use any loaded one)"
        }
        (k::IPPROTO_TCP, k::TCP_CONGESTION, Some(libc::ENOENT)) => {
            "no such algorithm is loaded (see net.ipv4.tcp_available_congestion_control)"
        }
        _ => "",
    }
}

fn apply_socket(sock: Sock, dup: &OwnedFd, policy: &Policy, dry_run: bool) -> Report {
    // As in the library: rules by local port are about servers.
    let ctx = match sock.role {
        Some(Role::Server) => Ctx::server(sock.transport, sock.local.port(), sock.remote.as_ref()),
        Some(Role::Client) => Ctx::client(sock.transport, sock.remote.as_ref(), None),
        None => Ctx {
            remote: sock.remote.as_ref().map(remote_key),
            ..Ctx::new(sock.transport)
        },
    };
    let d = policy.decide(&ctx);
    let tcp = sock.transport == Transport::Tcp;
    let relevant: u32 = d.mask()
        & Opt::ALL
            .into_iter()
            .filter(|o| tcp || o.spec().applies != Applies::Tcp)
            .fold(0, |m, o| m | o.bit());
    let fixed = plan::fixed_once_open_mask();
    let mut rows = Vec::new();
    for (opt, s) in d.iter_mask(relevant & fixed) {
        let why = plan::fixed_once_open(opt).unwrap_or("");
        rows.push(Row {
            option: opt.name().to_string(),
            kernel: opt.spec().kernel,
            before: None,
            wanted: Some(s.value),
            after: None,
            outcome: Outcome::Skipped(format!("cannot change on an open socket: {why}")),
            opt: Some(opt),
        });
    }
    let plan = d.plan(Stage::Connect, sock.transport, sock.variant(), fixed);
    let sets_priority = d.mask() & Opt::Priority.bit() != 0;
    for op in plan.ops() {
        let Some(opt) = op.option() else { continue };
        let Some(ko) = catalog::kernel_opt(op.level, op.name) else {
            continue;
        };
        let before = read(dup, op.level, op.name, ko.enc);
        let wanted = decode(ko.enc, op.bytes());
        let mut row = Row {
            option: opt.name().to_string(),
            kernel: ko.cname,
            before,
            wanted,
            after: before,
            outcome: Outcome::Already,
            opt: Some(opt),
        };
        if sock.mptcp && !ko.mptcp {
            row.outcome = Outcome::Skipped(format!("MPTCP sockets refuse {}", ko.cname));
        } else if same(ko.enc, opt, tcp, before, wanted) {
            row.outcome = Outcome::Already;
        } else if dry_run {
            row.outcome = Outcome::WouldSet;
        } else {
            // IP_TOS also rewrites SO_PRIORITY: keep the program's priority unless the
            // policy sets one itself (after ToS, in apply order).
            let guard = op.level == k::IPPROTO_IP && op.name == k::IP_TOS && !sets_priority;
            let prio = guard
                .then(|| pidfd::getsockopt_int(dup, k::SOL_SOCKET, k::SO_PRIORITY).ok())
                .flatten();
            match pidfd::setsockopt(dup, op.level, op.name, op.bytes()) {
                Ok(()) => row.outcome = Outcome::Set,
                Err(e) if op.is_extra() => {
                    row.outcome = Outcome::Skipped(format!(
                        "IPv4 header option on an IPv6 socket, refused ({e}): not needed"
                    ))
                }
                Err(e) => {
                    let hint = refusal_hint(op.level, op.name, &e);
                    row.outcome = Outcome::Refused(e, hint);
                }
            }
            if let Some(p) = prio {
                if pidfd::getsockopt_int(dup, k::SOL_SOCKET, k::SO_PRIORITY).ok() != Some(p) {
                    let restored =
                        pidfd::setsockopt(dup, k::SOL_SOCKET, k::SO_PRIORITY, &p.to_ne_bytes());
                    if let Err(e) = restored {
                        rows.push(Row {
                            option: "priority".into(),
                            kernel: "SO_PRIORITY",
                            before: Some(Value::Int(p as i64)),
                            wanted: Some(Value::Int(p as i64)),
                            after: read(dup, k::SOL_SOCKET, k::SO_PRIORITY, Enc::Int),
                            outcome: Outcome::Refused(
                                e,
                                "setting IP_TOS changed SO_PRIORITY and it could not be put back",
                            ),
                            opt: Some(Opt::Priority),
                        });
                    }
                }
            }
            row.after = read(dup, op.level, op.name, ko.enc);
        }
        rows.push(row);
    }
    let no_rule = rows.is_empty();
    Report {
        pid: sock.pid,
        fd: sock.fd,
        sock: Some(sock),
        gone: None,
        rows,
        no_rule,
    }
}

/// `--list`: every option attach could change, as the socket has it now.
fn list_socket(sock: Sock, dup: &OwnedFd) -> Report {
    let tcp = sock.transport == Transport::Tcp;
    let v = sock.variant();
    let mut rows = Vec::new();
    for opt in Opt::ALL {
        let spec = opt.spec();
        if plan::fixed_once_open(opt).is_some() || (!tcp && spec.applies == Applies::Tcp) {
            continue;
        }
        for ko in spec.ops {
            let wanted = match ko.family {
                OpFamily::Any => true,
                OpFamily::V6 => v.family() == Family::V6,
                OpFamily::V4Header => v.maybe_v4(),
            };
            if !wanted {
                continue;
            }
            let now = read(dup, ko.level, ko.name, ko.enc);
            rows.push(Row {
                option: opt.name().to_string(),
                kernel: ko.cname,
                before: now,
                wanted: None,
                after: now,
                outcome: Outcome::Listed,
                opt: Some(opt),
            });
        }
    }
    Report {
        pid: sock.pid,
        fd: sock.fd,
        sock: Some(sock),
        gone: None,
        rows,
        no_rule: false,
    }
}

fn shown(opt: Option<Opt>, v: Option<Value>) -> String {
    match (opt, v) {
        (Some(o), Some(v)) => Shown(o, v).to_string(),
        (None, Some(v)) => v.to_string(),
        (_, None) => "-".into(),
    }
}

/// The `after` cell: the value now, or what happened instead.
fn after_cell(r: &Row) -> String {
    match &r.outcome {
        Outcome::Set => shown(r.opt, r.after),
        Outcome::Already => format!("{} (already)", shown(r.opt, r.after)),
        Outcome::WouldSet => format!("would be {} (dry run)", shown(r.opt, r.wanted)),
        Outcome::Refused(e, _) => format!("REFUSED: {e}"),
        Outcome::Skipped(why) => format!("skipped: {why}"),
        Outcome::Listed => shown(r.opt, r.after),
    }
}

fn table(o: &Opts, reports: &[Report]) -> String {
    let mut lines: Vec<[String; 6]> = Vec::new();
    let head = if o.list {
        ["pid:fd", "endpoints", "state", "option", "value", ""]
    } else {
        ["pid:fd", "endpoints", "state", "option", "before", "after"]
    };
    let (mut changed, mut unchanged, mut skipped, mut refused, mut socks) = (0, 0, 0, 0, 0);
    for r in reports {
        let id = format!("{}:{}", r.pid, r.fd);
        let Some(s) = &r.sock else {
            skipped += 1;
            lines.push([
                id,
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                r.gone.unwrap_or("").into(),
            ]);
            continue;
        };
        socks += 1;
        let state = format!("{} {}", s.state, s.role_name());
        if r.no_rule {
            unchanged += 1;
            lines.push([
                id,
                s.endpoints(),
                state,
                "-".into(),
                "-".into(),
                "no rule applies: unchanged".into(),
            ]);
            continue;
        }
        let mut any_set = false;
        for row in &r.rows {
            match row.outcome {
                Outcome::Set | Outcome::WouldSet => any_set = true,
                Outcome::Refused(..) => refused += 1,
                _ => {}
            }
            let opt = format!("{} ({})", row.option, row.kernel);
            let (before, after) = if o.list {
                (shown(row.opt, row.after), String::new())
            } else {
                (shown(row.opt, row.before), after_cell(row))
            };
            lines.push([id.clone(), s.endpoints(), state.clone(), opt, before, after]);
        }
        if any_set {
            changed += 1;
        } else {
            unchanged += 1;
        }
    }
    let ncol = if o.list { 5 } else { 6 };
    let mut w = [0usize; 6];
    for l in std::iter::once(&head.map(String::from)).chain(lines.iter()) {
        for (i, c) in l.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let fmt_line = |out: &mut String, cells: &[String]| {
        out.push('|');
        for (i, c) in cells.iter().take(ncol).enumerate() {
            let _ = write!(out, " {c:<width$} |", width = w[i]);
        }
        out.push('\n');
    };
    fmt_line(&mut out, &head.map(String::from));
    out.push('|');
    for wi in w.iter().take(ncol) {
        let _ = write!(out, "{}|", "-".repeat(wi + 2));
    }
    out.push('\n');
    for l in &lines {
        fmt_line(&mut out, l);
    }
    if o.list {
        let _ = writeln!(out, "{socks} TCP/UDP sockets");
    } else {
        let _ = writeln!(
            out,
            "{socks} TCP/UDP sockets: {changed} {}, {unchanged} unchanged, {skipped} closed during the run, {refused} options refused{}",
            if o.dry_run { "would change" } else { "changed" },
            if o.dry_run { " (dry run: nothing was set)" } else { "" }
        );
        if !o.dry_run && changed > 0 && o.follow {
            out.push_str(
                "set once on the open sockets, not locked: the program may set its own values again on them; the sockets it opens from now on get the policy and its locks (--follow)\n",
            );
        } else if !o.dry_run && changed > 0 {
            out.push_str(
                "set once: the program may set its own values again; attach cannot lock them\n",
            );
        }
    }
    out
}

/// `--json`: the same facts as the table, one document (docs/json.md).
fn json(target: i32, o: &Opts, reports: &[Report], exited: &[i32]) -> String {
    let mode = if o.list {
        "list"
    } else if o.dry_run {
        "dry-run"
    } else {
        "apply"
    };
    let sockets: Vec<Json> = reports.iter().map(socket_json).collect();
    let doc = object([
        ("pid", target.into()),
        ("mode", mode.into()),
        ("locked", false.into()),
        ("sockets", sockets.into()),
        ("exited", exited.to_vec().into()),
    ]);
    doc.to_json() + "\n"
}

fn socket_json(r: &Report) -> Json {
    let mut fields: Vec<(String, Json)> =
        vec![("pid".into(), r.pid.into()), ("fd".into(), r.fd.into())];
    match &r.sock {
        None => fields.push(("skipped".into(), r.gone.unwrap_or("").into())),
        Some(s) => fields.extend([
            (
                "transport".into(),
                (if s.transport == Transport::Tcp {
                    "tcp"
                } else {
                    "udp"
                })
                .into(),
            ),
            ("mptcp".into(), s.mptcp.into()),
            (
                "family".into(),
                (if s.family == Family::V4 {
                    "ipv4"
                } else {
                    "ipv6"
                })
                .into(),
            ),
            ("local".into(), s.local.to_string().into()),
            ("remote".into(), s.remote.map(|r| r.to_string()).into()),
            ("state".into(), s.state.into()),
            ("listening".into(), s.listening.into()),
            ("role".into(), s.role.map(|_| s.role_name()).into()),
        ]),
    }
    let options: Vec<Json> = r.rows.iter().map(row_json).collect();
    fields.push(("options".into(), options.into()));
    obj(fields)
}

fn row_json(row: &Row) -> Json {
    let (result, why) = match &row.outcome {
        Outcome::Set => ("set", String::new()),
        Outcome::Already => ("unchanged", String::new()),
        Outcome::WouldSet => ("would-set", String::new()),
        Outcome::Refused(e, "") => ("refused", e.to_string()),
        Outcome::Refused(e, h) => ("refused", format!("{e}: {h}")),
        Outcome::Skipped(w) => ("skipped", w.clone()),
        Outcome::Listed => ("current", String::new()),
    };
    let value = |v: Option<Value>| v.map_or(Json::Null, option_value);
    let mut fields: Vec<(String, Json)> = vec![
        ("option".into(), row.option.as_str().into()),
        ("kernel".into(), row.kernel.into()),
        ("before".into(), value(row.before)),
        ("wanted".into(), value(row.wanted)),
        ("after".into(), value(row.after)),
        ("shown".into(), shown(row.opt, row.after).into()),
        ("result".into(), result.into()),
    ];
    if !why.is_empty() {
        fields.push(("reason".into(), why.into()));
    }
    obj(fields)
}

/// `--follow`: the processes moved into a sockwrap cgroup carrying the kernel backend's
/// programs, built from the same policy, until they end or sockwrap is told to stop; then
/// whatever is left is moved back and the cgroup and its programs removed.
///
/// One sockwrap cgroup per cgroup the processes come from (`--tree` may span several: sshd's
/// sessions live in their own scopes), made as a child of that cgroup: the processes stay
/// inside their unit for cgroup v2's hierarchical accounting and limits, and for a
/// `systemctl stop` that kills by cgroup. The moves happen only after every check has
/// passed and every program is attached; a move that fails puts back what was moved.
mod follow {
    use super::super::kernel::{remove_cgroup, report, wait_events, ROOT_ONLY};
    use crate::error::{Error, Result};
    use crate::procnet;
    use sockwrap_kernel::cgroup::{self, Cgroup, Kind};
    use sockwrap_kernel::programs::{Attached, Failed};
    use sockwrap_kernel::Tables;
    use sockwrap_policy::OnError;
    use std::path::{Path, PathBuf};
    use std::process::ExitCode;

    const WHAT: &str = "attach --follow";

    /// PF_KTHREAD in /proc/PID/stat's flags.
    const PF_KTHREAD: u64 = 0x0020_0000;

    /// The processes of one origin cgroup, and the sockwrap cgroup they go into.
    struct Group {
        /// The origin as /proc/PID/cgroup shows it (`/system.slice/nginx.service`).
        origin: String,
        /// The origin's directory.
        dir: PathBuf,
        /// The processes moved (or to move) in, with their start times.
        pids: Vec<(i32, u64)>,
        cg: Option<Cgroup>,
        attached: Option<Attached>,
    }

    pub struct Follow {
        target: i32,
        tree: bool,
        /// SOCKWRAP_LOG=debug: a verifier log is printed.
        debug: bool,
        mount: PathBuf,
        groups: Vec<Group>,
    }

    fn comm(pid: i32) -> String {
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "?".into())
    }

    fn who(pid: i32) -> String {
        format!("process {pid} ({})", comm(pid))
    }

    /// `process 42 (nginx)`, `processes 42 (nginx), 43 (nginx)`.
    fn procs_named(pids: &[i32]) -> String {
        let each: Vec<String> = pids.iter().map(|&p| format!("{p} ({})", comm(p))).collect();
        format!(
            "{} {}",
            if pids.len() == 1 {
                "process"
            } else {
                "processes"
            },
            each.join(", ")
        )
    }

    fn setup(msg: impl std::fmt::Display) -> Error {
        Error::setup(format_args!("{WHAT}: {msg}"))
    }

    /// Whether the process that had `start` still runs: not exited, not a zombie (a
    /// process that exited leaves its cgroup at once, before its parent reaps it).
    fn running(pid: i32, start: u64) -> bool {
        let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        let state = s
            .rfind(')')
            .and_then(|i| s[i + 1..].split_whitespace().next());
        cgroup::start_time(pid as u32) == Some(start) && !matches!(state, Some("Z") | Some("X"))
    }

    fn is_kernel_thread(pid: i32) -> bool {
        let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        let Some(rest) = s.rfind(')').map(|i| &s[i + 1..]) else {
            return false;
        };
        rest.split_whitespace()
            .nth(6)
            .and_then(|f| f.parse::<u64>().ok())
            .is_some_and(|f| f & PF_KTHREAD != 0)
    }

    /// Why process `pid` cannot be followed where it is, if it cannot: checked before
    /// anything is changed. `Ok(None)`: it has exited meanwhile.
    fn origin_of(mount: &Path, pid: i32) -> Result<Option<(String, PathBuf)>> {
        if pid == std::process::id() as i32 {
            return Err(Error::usage(format_args!(
                "{WHAT}: {pid} is this sockwrap itself"
            )));
        }
        if is_kernel_thread(pid) {
            return Err(setup(format_args!(
                "{} is a kernel thread: kernel threads stay in the root cgroup and have no sockets of their own; nothing was changed",
                who(pid)
            )));
        }
        let rel = match cgroup::path_of(pid) {
            Ok(r) => r,
            Err(_) if !Path::new(&format!("/proc/{pid}")).exists() => return Ok(None),
            Err(e) => return Err(setup(e)),
        };
        if rel.starts_with("/..") {
            return Err(setup(format_args!(
                "{} is in the cgroup {rel}, outside this sockwrap's cgroup namespace: run sockwrap in the namespace the process is in; nothing was changed",
                who(pid)
            )));
        }
        let dir = under(mount, &rel);
        let leaf = dir.file_name().map(|n| n.to_string_lossy().into_owned());
        if leaf.as_deref().and_then(cgroup::parse_name).is_some() {
            return Err(setup(format_args!(
                "{} is already in sockwrap's cgroup {}: another `run --kernel` or `attach --follow` gives it its programs; nothing was changed",
                who(pid),
                dir.display()
            )));
        }
        let ty = cgroup::type_of(&dir);
        if ty != "domain" {
            return Err(setup(format_args!(
                "{} is in the cgroup {} whose cgroup.type is `{ty}`: cgroup v2 moves whole processes only between domain cgroups, so it cannot be moved into a cgroup of sockwrap's; nothing was changed",
                who(pid),
                dir.display()
            )));
        }
        Ok(Some((rel, dir)))
    }

    /// The directory of the cgroup /proc shows as `rel`.
    fn under(mount: &Path, rel: &str) -> PathBuf {
        match rel.trim_matches('/') {
            "" => mount.to_path_buf(),
            r => mount.join(r),
        }
    }

    /// A cgroup of ours as /proc/PID/cgroup shows it.
    fn rel_of(g: &Group, cg: &Cgroup) -> String {
        let name = cg
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        format!("{}/{name}", g.origin.trim_end_matches('/'))
    }

    fn errno_hint(e: &std::io::Error) -> &'static str {
        match e.raw_os_error() {
            Some(libc::EBUSY) => " (cgroup v2's no-internal-processes rule: the cgroup has controllers enabled for its children)",
            Some(libc::EOPNOTSUPP) => " (a threaded cgroup: only whole processes of domain cgroups can move)",
            Some(libc::EINVAL) => " (a kernel thread, or a process that is exiting)",
            Some(libc::EACCES) | Some(libc::EPERM) => " (not allowed: a delegated or read-only cgroup tree)",
            _ => "",
        }
    }

    impl Follow {
        /// Every check that can be made without changing anything: root, the cgroup v2
        /// mount, and for each process whether it can be moved from where it is.
        pub fn plan(target: i32, pids: &[i32], tree: bool) -> Result<Follow> {
            // SAFETY: geteuid cannot fail.
            if unsafe { libc::geteuid() } != 0 {
                return Err(setup(ROOT_ONLY.trim_start_matches("--kernel: ")));
            }
            let mount = cgroup::mount_point().map_err(setup)?;
            let mut f = Follow {
                target,
                tree,
                debug: std::env::var("SOCKWRAP_LOG").is_ok_and(|l| l == "debug"),
                mount,
                groups: Vec::new(),
            };
            for &pid in pids {
                f.add(pid)?;
            }
            if f.groups.is_empty() {
                return Err(super::no_such_pid(target));
            }
            Ok(f)
        }

        /// Files `pid` under the group of its cgroup; false when it has exited.
        fn add(&mut self, pid: i32) -> Result<bool> {
            let Some((rel, dir)) = origin_of(&self.mount, pid)? else {
                return Ok(false);
            };
            let start = cgroup::start_time(pid as u32).unwrap_or(0);
            match self.groups.iter_mut().find(|g| g.dir == dir) {
                Some(g) => g.pids.push((pid, start)),
                None => self.groups.push(Group {
                    origin: rel,
                    dir,
                    pids: vec![(pid, start)],
                    cg: None,
                    attached: None,
                }),
            }
            Ok(true)
        }

        pub fn say_dry_run(&self) {
            for g in &self.groups {
                let pids: Vec<i32> = g.pids.iter().map(|p| p.0).collect();
                eprintln!(
                    "sockwrap: {WHAT}: dry run: would make a cgroup sockwrap-follow-PID-START under {} (cgroup v2 at {}), attach the kernel backend's programs to it, and move {} (all threads) from {} into it; then follow until {} and remove it. Nothing was changed",
                    g.origin,
                    self.mount.display(),
                    procs_named(&pids),
                    g.origin,
                    if pids.len() == 1 { "it exits" } else { "they exit" },
                );
            }
        }

        /// Makes the cgroups, attaches the programs, then moves the processes in. On any
        /// failure, everything done is undone and the processes are where they were.
        pub fn start(&mut self, tables: &Tables) -> Result<()> {
            // From here a Ctrl-C or TERM ends the follow (after the setup, which undoes
            // itself on failure), instead of killing sockwrap between two moves.
            crate::signals::catch();
            for l in cgroup::sweep(&self.mount, true) {
                eprintln!("sockwrap: {l}");
            }
            if let Err(e) = self.prepare(tables) {
                self.abandon();
                return Err(e);
            }
            let mut moved = 0;
            for gi in 0..self.groups.len() {
                let pids: Vec<(i32, u64)> = self.groups[gi].pids.clone();
                for (pid, _) in pids {
                    match self.move_in(gi, pid) {
                        Ok(true) => moved += 1,
                        Ok(false) => {}
                        Err(e) => {
                            self.abandon();
                            return Err(e);
                        }
                    }
                }
            }
            // Processes the tree forked between the listing and the moves.
            if self.tree {
                for _ in 0..5 {
                    let mut new = 0;
                    for pid in procnet::tree(self.target) {
                        if self.is_followed(pid) || self.in_ours(pid) {
                            continue;
                        }
                        let placed = self.add(pid).and_then(|added| {
                            if !added {
                                return Ok(false);
                            }
                            self.prepare(tables)?;
                            let gi = self
                                .groups
                                .iter()
                                .position(|g| g.pids.iter().any(|p| p.0 == pid))
                                .unwrap_or(0);
                            self.move_in(gi, pid)
                        });
                        match placed {
                            Ok(true) => new += 1,
                            Ok(false) => {}
                            Err(e) => {
                                self.abandon();
                                return Err(e);
                            }
                        }
                    }
                    if new == 0 {
                        break;
                    }
                    moved += new;
                }
            }
            if moved == 0 {
                self.abandon();
                return Err(super::no_such_pid(self.target));
            }
            for g in &self.groups {
                let Some(cg) = &g.cg else { continue };
                let pids: Vec<i32> = g.pids.iter().map(|p| p.0).collect();
                eprintln!(
                    "sockwrap: {WHAT}: moved {} from {} into {}, which carries the kernel backend's programs: the sockets {} from now on get the policy and its locks",
                    procs_named(&pids),
                    g.origin,
                    rel_of(g, cg),
                    if pids.len() == 1 { "it opens" } else { "they open" },
                );
            }
            eprintln!(
                "sockwrap: {WHAT}: following until {} (Ctrl-C or TERM moves {} back and ends the follow)",
                if moved == 1 { "it exits" } else { "they exit" },
                if moved == 1 { "it" } else { "them" },
            );
            Ok(())
        }

        fn is_followed(&self, pid: i32) -> bool {
            self.groups
                .iter()
                .any(|g| g.pids.iter().any(|p| p.0 == pid))
        }

        fn in_ours(&self, pid: i32) -> bool {
            let Ok(rel) = cgroup::path_of(pid) else {
                return true; // gone
            };
            let dir = under(&self.mount, &rel);
            self.groups
                .iter()
                .any(|g| g.cg.as_ref().is_some_and(|c| c.path == dir))
        }

        /// The cgroup and programs of every group that has none yet.
        fn prepare(&mut self, tables: &Tables) -> Result<()> {
            for g in &mut self.groups {
                if g.cg.is_some() {
                    continue;
                }
                let cg = Cgroup::create_under(&g.dir, Kind::Follow).map_err(setup)?;
                let dir = cg.open();
                let rel = rel_of(g, &cg);
                g.cg = Some(cg);
                let dir = dir.map_err(setup)?;
                let attached = Attached::load(tables, &dir).map_err(|e| match e {
                    Failed::Load(_) => {
                        crate::cmd::kernel::attach_failure(WHAT, "nothing was moved", e, self.debug)
                    }
                    Failed::Other(e) => setup(format_args!(
                        "cannot attach the BPF programs to {rel}: {e}; nothing was moved"
                    )),
                })?;
                g.attached = Some(attached);
            }
            Ok(())
        }

        /// Moves `pid` into its group's cgroup; false when it has exited.
        fn move_in(&mut self, gi: usize, pid: i32) -> Result<bool> {
            let g = &mut self.groups[gi];
            let Some(cg) = &g.cg else { return Ok(false) };
            match cgroup::move_pid(&cg.path, pid) {
                Ok(()) => Ok(true),
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                    g.pids.retain(|p| p.0 != pid);
                    Ok(false)
                }
                Err(e) => {
                    let msg = format!(
                        "cannot move {} from {} into {}: {e}{}; what was moved is back where it was",
                        who(pid),
                        g.origin,
                        rel_of(g, cg),
                        errno_hint(&e)
                    );
                    g.pids.retain(|p| p.0 != pid);
                    Err(setup(msg))
                }
            }
        }

        /// Moves every process in our cgroups back to where it came from. Returns the pids
        /// moved and the failures, one line each.
        fn move_back(&self) -> (Vec<i32>, Vec<String>) {
            let (mut moved, mut failed) = (Vec::new(), Vec::new());
            for g in &self.groups {
                let Some(cg) = &g.cg else { continue };
                // A process may fork while it is moved: its child is born in our cgroup.
                for _ in 0..20 {
                    let now = cgroup::procs(&cg.path);
                    if now.is_empty() {
                        break;
                    }
                    let mut stuck = false;
                    for pid in now {
                        match cgroup::move_pid(&g.dir, pid) {
                            Ok(()) => moved.push(pid),
                            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                            Err(e) => {
                                stuck = true;
                                failed.push(format!(
                                    "cannot move {} back to {}: {e}{}; it stays in {}, without the programs (`sockwrap doctor` as root tries again)",
                                    who(pid),
                                    g.origin,
                                    errno_hint(&e),
                                    rel_of(g, cg)
                                ));
                            }
                        }
                    }
                    if stuck {
                        break;
                    }
                }
            }
            moved.sort_unstable();
            moved.dedup();
            (moved, failed)
        }

        /// Detaches the programs and removes the cgroups; the failures, one line each.
        fn remove(&mut self) -> Vec<String> {
            let mut failed = Vec::new();
            for g in &mut self.groups {
                drop(g.attached.take());
                if let Some(cg) = g.cg.take() {
                    if let Err(e) = remove_cgroup(&cg) {
                        failed.push(e);
                    }
                }
            }
            failed
        }

        /// Undoes a start that failed (or a one-shot part that could not run): everything
        /// moved goes back, the cgroups and programs go.
        pub fn abandon(&mut self) {
            let (_, mut failed) = self.move_back();
            failed.extend(self.remove());
            for l in failed {
                eprintln!("sockwrap: {WHAT}: {l}");
            }
        }

        /// Follows until no process is left in our cgroups, or a signal; then moves back
        /// what is left and removes the cgroups. `refused`: the one-shot part had an option
        /// refused (the exit status says so at the end).
        pub fn wait(mut self, on_error: OnError, refused: bool) -> Result<ExitCode> {
            let stopped = loop {
                if let Some(sig) = crate::signals::take() {
                    break Some(sig);
                }
                let live: Vec<&Path> = self
                    .groups
                    .iter()
                    .filter_map(|g| g.cg.as_ref())
                    .filter(|c| c.populated())
                    .map(|c| c.path.as_path())
                    .collect();
                if live.is_empty() {
                    break None;
                }
                wait_events(&live);
            };
            let (moved, mut failed) = self.move_back();
            let mut refused = refused;
            for g in &self.groups {
                if let Some(a) = &g.attached {
                    refused |= report(WHAT, &a.counters(), on_error, false, true);
                }
            }
            let paths: Vec<String> = self
                .groups
                .iter()
                .filter_map(|g| g.cg.as_ref().map(|c| rel_of(g, c)))
                .collect();
            // Processes that left our cgroup while followed, moved by someone else.
            let mut strayed = Vec::new();
            if stopped.is_none() {
                for g in &self.groups {
                    for &(pid, start) in &g.pids {
                        if running(pid, start) && !moved.contains(&pid) {
                            let now = cgroup::path_of(pid).unwrap_or_default();
                            strayed.push(format!(
                                "{} left the sockwrap cgroup while it was followed (moved by someone else; it is now in {now}): it runs on without the programs",
                                who(pid)
                            ));
                        }
                    }
                }
            }
            failed.extend(self.remove());
            let cgroups = paths.join(", ");
            let its = if paths.len() == 1 { "its" } else { "their" };
            match stopped {
                Some(sig) => eprintln!(
                    "sockwrap: {WHAT}: stopped by {}: moved {} back to where {} came from; removed {cgroups} and {its} programs. Sockets opened while followed keep their options, without locks from now on",
                    signal_name(sig),
                    if moved.is_empty() { "no process".to_string() } else { procs_named(&moved) },
                    if moved.len() == 1 { "it" } else { "they" },
                ),
                None => eprintln!(
                    "sockwrap: {WHAT}: the followed processes have exited; removed {cgroups} and {its} programs"
                ),
            }
            for l in &strayed {
                eprintln!("sockwrap: {WHAT}: {l}");
            }
            if !failed.is_empty() {
                for l in &failed[1..] {
                    eprintln!("sockwrap: {WHAT}: {l}");
                }
                return Err(setup(&failed[0]));
            }
            if let Some(sig) = stopped {
                return Ok(ExitCode::from((128 + sig) as u8));
            }
            if refused || !strayed.is_empty() {
                return Err(Error::Findings);
            }
            Ok(ExitCode::SUCCESS)
        }
    }

    fn signal_name(sig: libc::c_int) -> String {
        match sig {
            libc::SIGINT => "SIGINT".into(),
            libc::SIGTERM => "SIGTERM".into(),
            libc::SIGHUP => "SIGHUP".into(),
            libc::SIGQUIT => "SIGQUIT".into(),
            n => format!("signal {n}"),
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn cgroup_paths_join_the_mount_without_a_trailing_slash() {
            let m = Path::new("/sys/fs/cgroup/unified");
            assert_eq!(under(m, "/"), m);
            assert_eq!(
                under(m, "/system.slice/a.service"),
                m.join("system.slice/a.service")
            );
        }

        #[test]
        fn this_process_runs_and_is_no_kernel_thread() {
            let me = std::process::id() as i32;
            let start = cgroup::start_time(me as u32).unwrap_or(0);
            assert!(running(me, start));
            assert!(!running(me, start + 1));
            assert!(!is_kernel_thread(me));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_decode_as_the_kernel_writes_them() {
        assert_eq!(
            decode(Enc::Int, &0xb8i32.to_ne_bytes()),
            Some(Value::Int(0xb8))
        );
        assert_eq!(
            decode(Enc::Bool, &1i32.to_ne_bytes()),
            Some(Value::Bool(true))
        );
        assert_eq!(
            decode(Enc::U32, &(-1i32).to_ne_bytes()),
            Some(Value::Int(u32::MAX as i64))
        );
        let mut cc = [0u8; 16];
        cc[..5].copy_from_slice(b"cubic");
        assert_eq!(
            decode(Enc::Str, &cc).map(|v| v.to_string()),
            Some("cubic".into())
        );
        let mut l = [0u8; 8];
        l[..4].copy_from_slice(&1i32.to_ne_bytes());
        l[4..].copy_from_slice(&5i32.to_ne_bytes());
        assert_eq!(decode(Enc::Linger, &l), Some(Value::Linger(Some(5))));
        assert_eq!(decode(Enc::Int, &[1, 2]), None);
    }

    #[test]
    fn a_pacing_rate_above_u32_is_read_clamped_not_cut_to_its_low_bits() {
        // The program set its rate as a u64 (5 GB/s: 0x1_2A05_F200); read as the catalog
        // sets it, a u32, the kernel clamps it. Its low 32 bits (705032704) would make a
        // request for 705032704 look already set.
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("a UDP socket on loopback");
        let fd = OwnedFd::from(udp);
        let (l, n) = (k::SOL_SOCKET, k::SO_MAX_PACING_RATE);
        let rate = |v: u64| pidfd::setsockopt(&fd, l, n, &v.to_ne_bytes()).is_ok();
        assert!(rate(5_000_000_000));
        assert_eq!(read(&fd, l, n, Enc::U32), Some(Value::Int(u32::MAX as i64)));
        assert!(rate(1_048_576));
        assert_eq!(read(&fd, l, n, Enc::U32), Some(Value::Int(1_048_576)));
    }

    #[test]
    fn already_set_ignores_ecn_bits_and_doubled_buffers() {
        let i = |v| Some(Value::Int(v));
        assert!(same(Enc::Int, Opt::Tos, true, i(0xba), i(0xb8)));
        assert!(!same(Enc::Int, Opt::Tos, false, i(0xba), i(0xb8)));
        assert!(same(Enc::BufSize, Opt::SndBuf, true, i(2048), i(1024)));
        assert!(!same(Enc::Int, Opt::Priority, true, None, i(0)));
    }

    #[test]
    fn json_rows_keep_their_documented_shape() {
        let row = Row {
            option: "tos".into(),
            kernel: "IP_TOS",
            before: Some(Value::Int(0)),
            wanted: Some(Value::Int(0xb8)),
            after: None,
            outcome: Outcome::Skipped("a \"quoted\" reason\n".into()),
            opt: Some(Opt::Tos),
        };
        assert_eq!(
            row_json(&row).to_json(),
            r#"{"option":"tos","kernel":"IP_TOS","before":0,"wanted":184,"after":null,"shown":"-","result":"skipped","reason":"a \"quoted\" reason\n"}"#
        );
    }
}
