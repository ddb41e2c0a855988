//! What `attach` does to one socket: the policy's decision for it set option by option (or
//! shown, `--dry-run`), or with `--list` every option it could change, as it is now.

use super::probe::{decode, read, same};
use super::{Outcome, Report, Row, Sock};
use crate::pidfd;
use sockwrap_policy::catalog::{self, k, Applies, Enc, Family, OpFamily, Opt};
use sockwrap_policy::plan::{self, Stage};
use sockwrap_policy::rules::remote_key;
use sockwrap_policy::{Ctx, Policy, Role, Transport, Value};
use std::io;
use std::os::fd::OwnedFd;

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

pub(super) fn apply_socket(sock: Sock, dup: &OwnedFd, policy: &Policy, dry_run: bool) -> Report {
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
    Report::of(sock, rows, no_rule)
}

/// `--list`: every option attach could change, as the socket has it now.
pub(super) fn list_socket(sock: Sock, dup: &OwnedFd) -> Report {
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
    Report::of(sock, rows, false)
}
