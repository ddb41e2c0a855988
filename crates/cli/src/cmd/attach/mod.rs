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
//! The parts: [`procs`] walks the processes and finds their sockets, [`probe`] reads an
//! option back, [`set`] decides and sets (or lists), [`output`] prints the table or the
//! JSON, and [`follow`] is `--follow`.
//!
//! `--follow` ([`follow`]) adds the kernel backend: the processes are moved into a sockwrap
//! cgroup (a child of the cgroup each is in) carrying the BPF programs of the same policy,
//! before the one-shot part, so that the sockets they open from then on get the policy and
//! its locks; sockwrap stays until they exit or a signal moves them back.

use crate::error::{Error, Result};
use crate::launch::flag_vars;
use crate::procnet;
use clap::ArgMatches;
use output::{json, table};
use procs::Walk;
use sockwrap_policy::catalog::{Family, Opt};
use sockwrap_policy::plan::{Stage, Variant};
use sockwrap_policy::{Policy, Role, Transport, Value};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;

mod follow;
mod output;
mod probe;
mod procs;
mod set;

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

    fn transport_name(&self) -> &'static str {
        match self.transport {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        }
    }

    fn family_name(&self) -> &'static str {
        match self.family {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
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

impl Report {
    fn of(sock: Sock, rows: Vec<Row>, no_rule: bool) -> Report {
        Report {
            pid: sock.pid,
            fd: sock.fd,
            sock: Some(sock),
            gone: None,
            rows,
            no_rule,
        }
    }
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
