//! The walk over the processes of `attach`: each one's TCP and UDP sockets, found in
//! `/proc` and duplicated with `pidfd_getfd`, described, and handed to [`super::set`].

use super::set::{apply_socket, list_socket};
use super::{no_permission, no_such_pid, old_kernel, Opts, Report, Sock};
use crate::error::{Error, Result};
use crate::pidfd;
use crate::procnet::{self, Entry, Tables, TCP_LISTEN};
use sockwrap_policy::catalog::Family;
use sockwrap_policy::{Policy, Role, Transport};
use std::collections::HashMap;
use std::io;
use std::os::fd::OwnedFd;

const IPPROTO_MPTCP: i32 = 262;

/// The walk over the processes: what it needs and what it found.
pub(super) struct Walk<'a> {
    pub(super) target: i32,
    pub(super) o: &'a Opts,
    pub(super) policy: &'a Policy,
    pub(super) by_program: bool,
    /// The socket tables, once per network namespace.
    pub(super) tables: HashMap<String, Tables>,
    pub(super) reports: Vec<Report>,
    pub(super) exited: Vec<i32>,
}

impl Walk<'_> {
    /// Every TCP/UDP socket of process `p`, one report each.
    pub(super) fn process(&mut self, p: i32) -> Result<()> {
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
