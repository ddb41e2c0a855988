//! Each event's fields: a call's arguments, addresses, the transport, options set and
//! overridden, names resolved, connect actions.

use super::*;

pub(super) fn name_or_num(e: &mut Ev, n: Option<&str>, v: i32) {
    match n {
        Some(s) => e.str(s),
        None => e.int(v as i64),
    }
}

/// `"family":..,"type":..,"protocol":..` (inside args).
pub fn socket_args(e: &mut Ev, domain: i32, ty: i32, protocol: i32) {
    e.open_obj("args");
    e.first("family");
    name_or_num(e, family_name(domain), domain);
    e.key("type");
    name_or_num(e, type_name(ty & 0xf), ty & 0xf);
    if ty & (libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) != 0 {
        e.key("flags").str(
            match (ty & libc::SOCK_NONBLOCK != 0, ty & libc::SOCK_CLOEXEC != 0) {
                (true, true) => "SOCK_NONBLOCK|SOCK_CLOEXEC",
                (true, false) => "SOCK_NONBLOCK",
                _ => "SOCK_CLOEXEC",
            },
        );
    }
    e.key("protocol");
    name_or_num(e, proto_name(protocol), protocol);
    e.close_obj();
}

/// Writes an address as a JSON string ("127.0.0.1:80", "[::1]:22", "/run/x.sock",
/// "@abstract", or the family's name) or null.
pub fn addr(e: &mut Ev, a: Option<&SockAddr>) {
    let Some(a) = a else {
        e.raw("null");
        return;
    };
    if let Some(ip) = a.as_socket() {
        e.disp(ip);
    } else if let Some((path, n)) = a.unix_path() {
        e.bytes_str(&path[..n]);
    } else {
        match a.family() {
            Some(f) => name_or_num(e, family_name(f), f),
            None => e.raw("null"),
        }
    }
}

/// `,"local":"..."` from getsockname.
pub fn local(e: &mut Ev, fd: i32) {
    if let Some(l) = sys::local_addr(fd) {
        e.key("local").disp(l);
    }
}

/// `,"peer":"..."`.
pub fn peer(e: &mut Ev, p: Option<SocketAddr>) {
    if let Some(p) = p {
        e.key("peer").disp(p);
    }
}

/// What `fd` is, for the trace: as this library's hooks recorded it (the policy's fd
/// table, or the trace's own record when this process made it), else as the kernel says.
/// `None`: not an inet socket; `Some(None)`: an inet socket other than TCP/UDP/MPTCP.
pub fn kind_of(fd: i32) -> Option<Option<Kind>> {
    if let Some(k) = crate::fdstate::get(fd).and_then(crate::fdstate::FdState::kind) {
        return Some(Some(k));
    }
    let v = slot(fd).map(|t| t.load(Relaxed)).unwrap_or(0);
    if v & INET != 0 && v as u32 as i32 == pid() {
        let c = (v >> 33) & 7;
        if (1..=4).contains(&c) {
            return Some(decode(c));
        }
    }
    kernel_kind(fd)
}

/// `,"transport":"tcp|udp|mptcp|other","mptcp":bool` for an inet socket of `kind`
/// (`None`: another transport).
pub fn transport(e: &mut Ev, kind: Option<Kind>) {
    let t = match kind {
        None => "other",
        Some(k) if k.mptcp => "mptcp",
        Some(k) if k.transport == Transport::Tcp => "tcp",
        Some(_) => "udp",
    };
    e.key("transport").str(t);
    e.key("mptcp").raw(if kind.is_some_and(|k| k.mptcp) {
        "true"
    } else {
        "false"
    });
}

/// The kind behind a transport code (the family is not kept: the trace does not need it).
pub(super) fn decode(c: u64) -> Option<Kind> {
    let (transport, mptcp) = match c {
        1 => (Transport::Tcp, false),
        2 => (Transport::Udp, false),
        3 => (Transport::Tcp, true),
        _ => return None,
    };
    Some(Kind {
        transport,
        mptcp,
        family: Family::V4,
    })
}

/// What the kernel says `fd` is: `None` if not an inet socket, `Some(None)` if an inet
/// socket other than TCP/UDP/MPTCP.
pub fn kernel_kind(fd: i32) -> Option<Option<Kind>> {
    let family = match sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_DOMAIN) {
        Ok(libc::AF_INET) => Family::V4,
        Ok(libc::AF_INET6) => Family::V6,
        _ => return None,
    };
    Some(
        crate::fdstate::kernel_kind(fd).map(|(transport, mptcp)| Kind {
            transport,
            mptcp,
            family,
        }),
    )
}

/// The kind of socket `socket(domain, ty, protocol)` makes, as far as its arguments say:
/// `None` for a non-inet one, `Some(None)` for an inet socket other than TCP/UDP/MPTCP.
pub fn kind_from_args(domain: i32, ty: i32, protocol: i32) -> Option<Option<Kind>> {
    let family = match domain {
        libc::AF_INET => Family::V4,
        libc::AF_INET6 => Family::V6,
        _ => return None,
    };
    Some(
        crate::fdstate::transport_of(ty & 0xf, protocol).map(|(transport, mptcp)| Kind {
            transport,
            mptcp,
            family,
        }),
    )
}

/// One `"ev":"apply"` line: what sockwrap set on a socket (`kernel`: the C names, joined
/// with `+`), and how it went.
pub fn apply(fd: i32, call: &str, opt: Opt, value: Value, kernel: &Line, failed: Option<i32>) {
    let saved = sys::errno();
    let mut e = Ev::begin("apply", call, fd);
    e.key("option").str(opt.name());
    e.key("kernel").str(kernel.as_str());
    match (opt, value) {
        (Opt::Tos, Value::Int(tos)) => {
            e.key("value");
            tos_value(&mut e, tos);
        }
        _ => e.key("value").disp(Shown(opt, value)),
    }
    match failed {
        None => e.key("result").str("ok"),
        Some(errno) => {
            e.key("result").str("failed");
            e.key("errno").str(errno_short(errno));
        }
    }
    e.finish();
    sys::set_errno(saved);
}

/// `"0xb8 (DSCP EF)"`.
pub(super) fn tos_value(e: &mut Ev, tos: i64) {
    let dscp = ((tos >> 2) & 0x3f) as u8;
    match sockwrap_policy::catalog::dscp_name(dscp) {
        Some(n) => e.disp(format_args!("0x{:02x} (DSCP {})", tos, n)),
        None => e.disp(format_args!("0x{:02x} (DSCP {})", tos, dscp)),
    }
}

/// One `"ev":"override"` line: the program's own setsockopt of a locked option.
pub fn overridden(fd: i32, opt: Opt, level: i32, name: i32, val: Option<&[u8]>) {
    let mut e = Ev::begin("override", "setsockopt", fd);
    e.key("option").str(opt.name());
    e.key("kernel");
    name_or_num(&mut e, opt_name(level, name), name);
    e.open_obj("program");
    opt_args(&mut e, level, name, val);
    e.close_obj();
    e.key("result").str("kept sockwrap's value (locked)");
    e.finish();
}

/// `"level":..,"name":..,"value":..` (inside args), the value decoded by option. `val` is
/// the value's bytes (at most 256 of them), `None` for a null pointer.
pub fn opt_args(e: &mut Ev, level: i32, name: i32, val: Option<&[u8]>) {
    e.first("level");
    name_or_num(e, level_name(level), level);
    e.key("name");
    name_or_num(e, opt_name(level, name), name);
    e.key("value");
    let Some(b) = val else {
        e.raw("null");
        return;
    };
    let len = b.len();
    let int = match len {
        1 => Some(b[0] as i64),
        4 => Some(i32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as i64),
        _ => None,
    };
    match (level, name, int) {
        (libc::IPPROTO_IP, libc::IP_TOS, Some(tos))
        | (libc::IPPROTO_IPV6, libc::IPV6_TCLASS, Some(tos)) => {
            if tos < 0 {
                e.int(tos);
            } else {
                tos_value(e, tos);
            }
        }
        (libc::SOL_SOCKET, libc::SO_ERROR, Some(v)) => e.str(errno_short(v as i32)),
        (libc::IPPROTO_TCP, libc::TCP_CONGESTION | 31, _)
        | (libc::SOL_SOCKET, libc::SO_BINDTODEVICE, _) => {
            let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
            e.bytes_str(&b[..end.min(32)]);
        }
        (libc::SOL_SOCKET, libc::SO_LINGER, _) if len >= 8 => {
            let on = i32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
            let secs = i32::from_ne_bytes([b[4], b[5], b[6], b[7]]);
            let _ = write!(e, "{{\"onoff\":{},\"linger\":{}}}", on, secs);
        }
        (_, _, Some(v)) => e.int(v),
        _ => {
            let _ = write!(e, "\"<{} bytes>\"", len);
        }
    }
}

/// An address in the policy's key form ([`sockwrap_policy::rules::ip_key`]) as an IP.
pub(super) fn ip_of_key(k: u128) -> core::net::IpAddr {
    let v6 = core::net::Ipv6Addr::from(k);
    match v6.to_ipv4_mapped() {
        Some(v4) => core::net::IpAddr::V4(v4),
        None => core::net::IpAddr::V6(v6),
    }
}

/// `"ev":"resolve"`: a name the program resolved through libc, what it gave and how long
/// it took (docs/trace-schema.md).
pub fn resolved(call: &str, name: &[u8], ips: &[u128], result: &str, dur: Option<u64>) {
    let mut e = Ev::begin("resolve", call, -1);
    e.key("name").bytes_str(name);
    e.key("addrs").raw("[");
    for (i, &ip) in ips.iter().enumerate() {
        if i > 0 {
            e.raw(",");
        }
        e.disp(ip_of_key(ip));
    }
    e.raw("]");
    e.key("result").str(result);
    if let Some(d) = dur {
        e.key("dur_ns").int(d as i64);
    }
    e.finish();
}

/// `,"host":"NAME"` on a connect line, when the address came from a name the program
/// resolved.
pub fn host(e: &mut Ev, remote: &SocketAddr) {
    let mut buf = crate::names::NameBuf::new();
    if let Some(n) = crate::names::lookup(sockwrap_policy::rules::ip_key(remote.ip()), &mut buf) {
        e.key("host").str(n);
    }
}

/// `"ev":"action"`: sockwrap's own event for what it did to a connect to `asked` (the
/// address the program gave), written when it acts, before the connect's own line.
pub fn action_event(fd: i32, asked: &SocketAddr, n: &crate::sys::ActionNote) {
    let mut e = Ev::begin("action", "connect", fd);
    e.key("addr").disp(asked);
    action(&mut e, n);
    e.finish();
}

/// `,"action":{...}`: what sockwrap did to this connect (deny, fail, delay, redirect).
pub fn action(e: &mut Ev, n: &crate::sys::ActionNote) {
    e.open_obj("action");
    let mut sep = "";
    if n.denied != 0 {
        e.raw(sep);
        e.first("deny").str(errno_short(n.denied));
        sep = ",";
    }
    if n.failed != 0 {
        e.raw(sep);
        e.first("fail").str(errno_short(n.failed));
        sep = ",";
    }
    if n.delay_ms != 0 {
        e.raw(sep);
        e.first("delay_ms").int(n.delay_ms as i64);
        sep = ",";
    }
    if let Some(to) = n.redirected {
        e.raw(sep);
        e.first("redirect").disp(to);
    }
    e.close_obj();
}
