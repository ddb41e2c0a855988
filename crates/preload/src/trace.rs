//! `SOCKWRAP_TRACE`: one JSON object per intercepted socket call (schema: docs/trace-schema.md).
//!
//! Same rules as [`crate::log`]: each line is formatted into a stack buffer with `core::fmt`
//! (no allocation, no lock) and written with ONE `write(2)` to a descriptor opened at load
//! with O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600. Lines stay under 4 KiB,
//! so every process of a traced tree appends whole lines to the one file. The descriptor's
//! inode is checked before each write. No payload byte is ever recorded: addresses, option
//! names and option values only.
//!
//! When tracing is off the hooks pay one relaxed load of [`ON`].

use crate::sys;
use core::ffi::c_void;
use core::fmt::{self, Write};
use core::net::SocketAddr;
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering::Relaxed};
use libc::{sockaddr, socklen_t};
use std::sync::OnceLock;

/// In `.data`, not `.bss`: with the other statics every exec touches (see `GLOBAL`).
#[link_section = ".data"]
static ON: AtomicBool = AtomicBool::new(false);
static FD: AtomicI32 = AtomicI32::new(-1);
static DEV: AtomicU64 = AtomicU64::new(0);
static INO: AtomicU64 = AtomicU64::new(0);
static PROG: OnceLock<([u8; 64], usize)> = OnceLock::new();
static PATH: OnceLock<String> = OnceLock::new();

/// Descriptors the trace has seen as inet sockets, so that `close` reports only those: the
/// pid that saw them. Only that pid forgets them: a vfork child (Python's subprocess,
/// posix_spawn) shares this memory, and its close/close_range before exec must not make the
/// parent's later close go unreported.
const TRACKED_N: usize = 65536;
#[allow(clippy::declare_interior_mutable_const)]
const UNTRACKED: AtomicI32 = AtomicI32::new(0);
static TRACKED: [AtomicI32; TRACKED_N] = [UNTRACKED; TRACKED_N];

/// Whether tracing is on: the only cost the hooks pay when it is not.
#[inline(always)]
pub fn on() -> bool {
    ON.load(Relaxed)
}

/// Opens the trace file. Called once from the constructor.
pub fn init(path: &str, prog: &str) {
    let mut p = [0u8; 64];
    let n = prog.len().min(p.len());
    p[..n].copy_from_slice(&prog.as_bytes()[..n]);
    let _ = PROG.set((p, n));
    let _ = PATH.set(path.to_string());
    let fd = crate::log::open_log_file(path);
    if fd < 0 {
        crate::log_at!(
            sockwrap_policy::LogLevel::Warn,
            "SOCKWRAP_TRACE: cannot open {} for appending; no trace",
            path
        );
        return;
    }
    if let Some((dev, ino)) = sys::inode(fd) {
        DEV.store(dev, Relaxed);
        INO.store(ino, Relaxed);
        FD.store(fd, Relaxed);
        ON.store(true, Relaxed);
    }
}

pub fn track(fd: i32, yes: bool) {
    if let Some(t) = usize::try_from(fd).ok().and_then(|i| TRACKED.get(i)) {
        t.store(if yes { sys::getpid() } else { 0 }, Relaxed);
    }
}

/// Whether `fd` was tracked; forgets it if this process tracked it.
pub fn untrack(fd: i32) -> bool {
    let Some(t) = usize::try_from(fd).ok().and_then(|i| TRACKED.get(i)) else {
        return false;
    };
    let v = t.load(Relaxed);
    if v == 0 {
        return false;
    }
    let _ = t.compare_exchange(sys::getpid(), 0, Relaxed, Relaxed);
    true
}

/// `close_range`/`closefrom`: forgets this process's descriptors (no close line for them).
pub fn untrack_range(first: u32, last: u32) {
    let me = sys::getpid();
    let last = (last as usize).min(TRACKED_N - 1);
    for t in TRACKED.iter().take(last + 1).skip(first as usize) {
        let _ = t.compare_exchange(me, 0, Relaxed, Relaxed);
    }
}

pub fn now_mono() -> u64 {
    clock(libc::CLOCK_MONOTONIC)
}

fn clock(id: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is valid for writing; clock_gettime is async-signal-safe.
    unsafe { libc::clock_gettime(id, &mut ts) };
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

const CAP: usize = 3800;

/// One trace line on the stack. If it would overflow, [`Ev::finish`] writes a short valid
/// line marked `"truncated":true` instead of a broken one.
pub struct Ev {
    buf: [u8; CAP + 64],
    len: usize,
    head: usize,
    overflow: bool,
}

impl Write for Ev {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.len + s.len() > CAP {
            self.overflow = true;
            return Ok(());
        }
        self.buf[self.len..self.len + s.len()].copy_from_slice(s.as_bytes());
        self.len += s.len();
        Ok(())
    }
}

impl Ev {
    /// `{"v":1,...,"ev":KIND,"call":CALL,"fd":FD`
    pub fn begin(kind: &str, call: &str, fd: i32) -> Ev {
        let mut e = Ev {
            buf: [0; CAP + 64],
            len: 0,
            head: 0,
            overflow: false,
        };
        let mono = now_mono();
        let wall = clock(libc::CLOCK_REALTIME);
        // SAFETY: gettid has no arguments and cannot fail.
        let tid = unsafe { libc::syscall(libc::SYS_gettid) };
        let _ = write!(
            e,
            "{{\"v\":1,\"t_mono_ns\":{},\"t_wall_ns\":{},\"pid\":{},\"tid\":{},\"prog\":",
            mono,
            wall,
            sys::getpid(),
            tid
        );
        let prog = PROG.get().map(|(p, n)| &p[..*n]).unwrap_or(b"?");
        e.bytes_str(prog);
        let _ = write!(
            e,
            ",\"ev\":\"{}\",\"call\":\"{}\",\"fd\":{}",
            kind, call, fd
        );
        e.head = e.len;
        e
    }

    /// `,"k":`
    pub fn key(&mut self, k: &str) -> &mut Ev {
        let _ = write!(self, ",\"{}\":", k);
        self
    }

    /// Opens `,"args":{` (close with [`Ev::close_obj`]); the first key inside goes without comma.
    pub fn open_obj(&mut self, k: &str) {
        let _ = write!(self, ",\"{}\":{{", k);
    }

    pub fn close_obj(&mut self) {
        let _ = self.write_str("}");
    }

    /// A key as the first member of an object.
    pub fn first(&mut self, k: &str) -> &mut Ev {
        let _ = write!(self, "\"{}\":", k);
        self
    }

    pub fn int(&mut self, v: i64) {
        let _ = write!(self, "{}", v);
    }

    pub fn raw(&mut self, s: &str) {
        let _ = self.write_str(s);
    }

    /// A JSON string of a `Display` value (escaped).
    pub fn disp(&mut self, v: impl fmt::Display) {
        let mut s = Esc(self);
        let _ = s.0.write_str("\"");
        let _ = write!(s, "{}", v);
        let _ = s.0.write_str("\"");
    }

    pub fn str(&mut self, s: &str) {
        self.bytes_str(s.as_bytes())
    }

    /// A JSON string of bytes: printable ASCII as is, everything else `\u00XX`.
    pub fn bytes_str(&mut self, b: &[u8]) {
        let _ = self.write_str("\"");
        for &c in b {
            match c {
                b'"' => {
                    let _ = self.write_str("\\\"");
                }
                b'\\' => {
                    let _ = self.write_str("\\\\");
                }
                0x20..=0x7e => {
                    let ch = [c];
                    // Printable ASCII is UTF-8.
                    let _ = self.write_str(core::str::from_utf8(&ch).unwrap_or("?"));
                }
                _ => {
                    let _ = write!(self, "\\u{:04x}", c);
                }
            }
        }
        let _ = self.write_str("\"");
    }

    /// `,"ret":R` and `,"errno":"E..."` when the call failed.
    pub fn result(&mut self, ret: i64, errno: i32) {
        self.key("ret").int(ret);
        if ret < 0 {
            self.key("errno").str(errno_short(errno));
        }
    }

    /// Closes the object and writes the line with one write(2).
    pub fn finish(mut self) {
        if self.overflow {
            self.len = self.head;
            self.overflow = false;
            let _ = self.write_str(",\"truncated\":true");
        }
        self.buf[self.len] = b'}';
        self.buf[self.len + 1] = b'\n';
        self.len += 2;
        if let Some(fd) = out_fd() {
            sys::write_all(fd, &self.buf[..self.len]);
        }
    }
}

fn ours(fd: i32) -> bool {
    fd >= 0 && sys::inode(fd) == Some((DEV.load(Relaxed), INO.load(Relaxed)))
}

/// The trace descriptor, checked. Programs that close every descriptor at start (OpenSSH's
/// `closefrom`, daemons) close ours too, and the number may then be reused by the program:
/// never write there; open the trace file again (open(2) and fcntl(2) are
/// async-signal-safe) and accept it only if it is the same file (device and inode).
fn out_fd() -> Option<i32> {
    let fd = FD.load(Relaxed);
    if ours(fd) {
        return Some(fd);
    }
    let path = PATH.get()?;
    let new = crate::log::open_append(path, false);
    if new < 0 {
        ON.store(false, Relaxed); // removed: the trace is over
        return None;
    }
    if !ours(new) {
        // Replaced or removed and re-created: not the trace we started; stop.
        sys::close(new);
        ON.store(false, Relaxed);
        return None;
    }
    match FD.compare_exchange(fd, new, Relaxed, Relaxed) {
        Ok(_) => Some(new),
        Err(other) => {
            // Another thread reopened it first.
            sys::close(new);
            Some(other)
        }
    }
}

/// Escapes what `Display` writes into a JSON string.
struct Esc<'a>(&'a mut Ev);

impl Write for Esc<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            match c {
                '"' => self.0.write_str("\\\"")?,
                '\\' => self.0.write_str("\\\\")?,
                c if (c as u32) < 0x20 => write!(self.0, "\\u{:04x}", c as u32)?,
                c => self.0.write_char(c)?,
            }
        }
        Ok(())
    }
}

// ---------- names ----------

pub fn family_name(f: i32) -> Option<&'static str> {
    Some(match f {
        libc::AF_UNSPEC => "AF_UNSPEC",
        libc::AF_UNIX => "AF_UNIX",
        libc::AF_INET => "AF_INET",
        libc::AF_INET6 => "AF_INET6",
        libc::AF_NETLINK => "AF_NETLINK",
        libc::AF_PACKET => "AF_PACKET",
        _ => return None,
    })
}

fn type_name(t: i32) -> Option<&'static str> {
    Some(match t {
        libc::SOCK_STREAM => "SOCK_STREAM",
        libc::SOCK_DGRAM => "SOCK_DGRAM",
        libc::SOCK_RAW => "SOCK_RAW",
        libc::SOCK_SEQPACKET => "SOCK_SEQPACKET",
        _ => return None,
    })
}

fn proto_name(p: i32) -> Option<&'static str> {
    Some(match p {
        0 => "0",
        libc::IPPROTO_TCP => "IPPROTO_TCP",
        libc::IPPROTO_UDP => "IPPROTO_UDP",
        libc::IPPROTO_ICMP => "IPPROTO_ICMP",
        libc::IPPROTO_ICMPV6 => "IPPROTO_ICMPV6",
        crate::mptcp::IPPROTO_MPTCP => "IPPROTO_MPTCP",
        _ => return None,
    })
}

pub fn errno_short(e: i32) -> &'static str {
    match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EINTR => "EINTR",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::ENODEV => "ENODEV",
        libc::EPIPE => "EPIPE",
        libc::ENOSYS => "ENOSYS",
        libc::ENOTSOCK => "ENOTSOCK",
        libc::EDESTADDRREQ => "EDESTADDRREQ",
        libc::EMSGSIZE => "EMSGSIZE",
        libc::EPROTOTYPE => "EPROTOTYPE",
        libc::ENOPROTOOPT => "ENOPROTOOPT",
        libc::EPROTONOSUPPORT => "EPROTONOSUPPORT",
        libc::ESOCKTNOSUPPORT => "ESOCKTNOSUPPORT",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EPFNOSUPPORT => "EPFNOSUPPORT",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::EADDRINUSE => "EADDRINUSE",
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        libc::ENETDOWN => "ENETDOWN",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::ENETRESET => "ENETRESET",
        libc::ECONNABORTED => "ECONNABORTED",
        libc::ECONNRESET => "ECONNRESET",
        libc::ENOBUFS => "ENOBUFS",
        libc::EISCONN => "EISCONN",
        libc::ENOTCONN => "ENOTCONN",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::EHOSTDOWN => "EHOSTDOWN",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::EALREADY => "EALREADY",
        libc::EINPROGRESS => "EINPROGRESS",
        0 => "0",
        _ => "EOTHER",
    }
}

fn level_name(level: i32) -> Option<&'static str> {
    Some(match level {
        libc::SOL_SOCKET => "SOL_SOCKET",
        libc::IPPROTO_IP => "IPPROTO_IP",
        libc::IPPROTO_IPV6 => "IPPROTO_IPV6",
        libc::IPPROTO_TCP => "IPPROTO_TCP",
        libc::IPPROTO_UDP => "IPPROTO_UDP",
        284 => "SOL_MPTCP",
        _ => return None,
    })
}

fn opt_name(level: i32, name: i32) -> Option<&'static str> {
    Some(match (level, name) {
        (libc::SOL_SOCKET, n) => match n {
            1 => "SO_DEBUG",
            2 => "SO_REUSEADDR",
            3 => "SO_TYPE",
            4 => "SO_ERROR",
            5 => "SO_DONTROUTE",
            6 => "SO_BROADCAST",
            7 => "SO_SNDBUF",
            8 => "SO_RCVBUF",
            9 => "SO_KEEPALIVE",
            10 => "SO_OOBINLINE",
            12 => "SO_PRIORITY",
            13 => "SO_LINGER",
            15 => "SO_REUSEPORT",
            16 => "SO_PASSCRED",
            17 => "SO_PEERCRED",
            18 => "SO_RCVLOWAT",
            19 => "SO_SNDLOWAT",
            20 => "SO_RCVTIMEO_OLD",
            21 => "SO_SNDTIMEO_OLD",
            25 => "SO_BINDTODEVICE",
            29 => "SO_TIMESTAMP_OLD",
            30 => "SO_ACCEPTCONN",
            32 => "SO_SNDBUFFORCE",
            33 => "SO_RCVBUFFORCE",
            36 => "SO_MARK",
            38 => "SO_PROTOCOL",
            39 => "SO_DOMAIN",
            46 => "SO_BUSY_POLL",
            47 => "SO_MAX_PACING_RATE",
            49 => "SO_INCOMING_CPU",
            60 => "SO_ZEROCOPY",
            66 => "SO_RCVTIMEO_NEW",
            67 => "SO_SNDTIMEO_NEW",
            _ => return None,
        },
        (libc::IPPROTO_IP, n) => match n {
            1 => "IP_TOS",
            2 => "IP_TTL",
            3 => "IP_HDRINCL",
            4 => "IP_OPTIONS",
            8 => "IP_PKTINFO",
            10 => "IP_MTU_DISCOVER",
            11 => "IP_RECVERR",
            12 => "IP_RECVTTL",
            13 => "IP_RECVTOS",
            14 => "IP_MTU",
            15 => "IP_FREEBIND",
            19 => "IP_TRANSPARENT",
            24 => "IP_BIND_ADDRESS_NO_PORT",
            32 => "IP_MULTICAST_IF",
            33 => "IP_MULTICAST_TTL",
            34 => "IP_MULTICAST_LOOP",
            35 => "IP_ADD_MEMBERSHIP",
            36 => "IP_DROP_MEMBERSHIP",
            _ => return None,
        },
        (libc::IPPROTO_IPV6, n) => match n {
            16 => "IPV6_UNICAST_HOPS",
            17 => "IPV6_MULTICAST_IF",
            18 => "IPV6_MULTICAST_HOPS",
            19 => "IPV6_MULTICAST_LOOP",
            23 => "IPV6_MTU_DISCOVER",
            25 => "IPV6_RECVERR",
            26 => "IPV6_V6ONLY",
            49 => "IPV6_RECVPKTINFO",
            66 => "IPV6_RECVTCLASS",
            67 => "IPV6_TCLASS",
            _ => return None,
        },
        (libc::IPPROTO_TCP, n) => match n {
            1 => "TCP_NODELAY",
            2 => "TCP_MAXSEG",
            3 => "TCP_CORK",
            4 => "TCP_KEEPIDLE",
            5 => "TCP_KEEPINTVL",
            6 => "TCP_KEEPCNT",
            7 => "TCP_SYNCNT",
            8 => "TCP_LINGER2",
            9 => "TCP_DEFER_ACCEPT",
            10 => "TCP_WINDOW_CLAMP",
            11 => "TCP_INFO",
            12 => "TCP_QUICKACK",
            13 => "TCP_CONGESTION",
            14 => "TCP_MD5SIG",
            18 => "TCP_USER_TIMEOUT",
            23 => "TCP_FASTOPEN",
            25 => "TCP_NOTSENT_LOWAT",
            30 => "TCP_FASTOPEN_CONNECT",
            31 => "TCP_ULP",
            _ => return None,
        },
        (libc::IPPROTO_UDP, n) => match n {
            1 => "UDP_CORK",
            103 => "UDP_SEGMENT",
            104 => "UDP_GRO",
            _ => return None,
        },
        _ => return None,
    })
}

fn name_or_num(e: &mut Ev, n: Option<&str>, v: i32) {
    match n {
        Some(s) => e.str(s),
        None => e.int(v as i64),
    }
}

/// Writes an address as a JSON string ("127.0.0.1:80", "[::1]:22", "/run/x.sock",
/// "@abstract") or null.
///
/// # Safety
/// `p` must be null or valid for `len` bytes.
pub unsafe fn addr(e: &mut Ev, p: *const sockaddr, len: socklen_t) {
    // SAFETY: forwarded.
    if let Some(a) = unsafe { crate::hooks::sockaddr_from_ptr(p, len) } {
        e.disp(a);
        return;
    }
    if p.is_null() || (len as usize) < 2 {
        e.raw("null");
        return;
    }
    // SAFETY: at least the family field is readable.
    let fam = unsafe { (*p).sa_family } as i32;
    if fam == libc::AF_UNIX {
        let n = (len as usize).saturating_sub(2).min(108);
        // SAFETY: the caller's buffer is valid for len bytes; the path starts at offset 2.
        let path = unsafe { core::slice::from_raw_parts((p as *const u8).add(2), n) };
        if let Some((&0, rest)) = path.split_first() {
            let mut b = [0u8; 109];
            b[0] = b'@';
            let rest = &rest[..rest.len().min(108)];
            b[1..1 + rest.len()].copy_from_slice(rest);
            e.bytes_str(&b[..1 + rest.len()]);
        } else {
            let end = path.iter().position(|&c| c == 0).unwrap_or(path.len());
            e.bytes_str(&path[..end]);
        }
        return;
    }
    match family_name(fam) {
        Some(f) => e.str(f),
        None => e.int(fam as i64),
    }
}

pub fn sockaddr_json(e: &mut Ev, a: Option<SocketAddr>) {
    match a {
        Some(a) => e.disp(a),
        None => e.raw("null"),
    }
}

/// `,"local":"..."` from getsockname.
pub fn local(e: &mut Ev, fd: i32) {
    let l = sys::getsockname(fd)
        .ok()
        .and_then(|l| crate::hooks::sockaddr_from_storage(&l.storage, l.len));
    if let Some(l) = l {
        e.key("local").disp(l);
    }
}

/// `,"peer":"..."` from getpeername.
pub fn peer(e: &mut Ev, fd: i32) {
    let l = sys::getpeername(fd)
        .ok()
        .and_then(|l| crate::hooks::sockaddr_from_storage(&l.storage, l.len));
    if let Some(l) = l {
        e.key("peer").disp(l);
    }
}

/// `,"transport":"tcp|udp|mptcp|other","mptcp":bool` as the kernel says. Returns whether
/// the socket is an inet TCP/UDP/MPTCP one.
pub fn transport(e: &mut Ev, fd: i32) -> bool {
    let dom = sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_DOMAIN).unwrap_or(-1);
    if dom != libc::AF_INET && dom != libc::AF_INET6 {
        return false;
    }
    let ty = sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE).unwrap_or(-1);
    let proto = sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PROTOCOL).unwrap_or(-1);
    let t = match (ty, proto) {
        (libc::SOCK_STREAM, libc::IPPROTO_TCP) => "tcp",
        (libc::SOCK_STREAM, crate::mptcp::IPPROTO_MPTCP) => "mptcp",
        (libc::SOCK_DGRAM, libc::IPPROTO_UDP) => "udp",
        _ => "other",
    };
    e.key("transport").str(t);
    e.key("mptcp").raw(if proto == crate::mptcp::IPPROTO_MPTCP {
        "true"
    } else {
        "false"
    });
    t != "other"
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

/// `"level":..,"name":..,"value":..` (inside args), the value decoded by option.
///
/// # Safety
/// `val` must be null or valid for `len` bytes.
pub unsafe fn opt_args(e: &mut Ev, level: i32, name: i32, val: *const c_void, len: usize) {
    e.first("level");
    name_or_num(e, level_name(level), level);
    e.key("name");
    name_or_num(e, opt_name(level, name), name);
    e.key("value");
    if val.is_null() {
        e.raw("null");
        return;
    }
    let len = len.min(256);
    // SAFETY: the caller promises val is valid for len bytes.
    let b = unsafe { core::slice::from_raw_parts(val as *const u8, len) };
    let int = match len {
        1 => Some(b[0] as i64),
        4 => Some(i32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as i64),
        _ => None,
    };
    match (level, name) {
        (libc::IPPROTO_IP, libc::IP_TOS) | (libc::IPPROTO_IPV6, libc::IPV6_TCLASS)
            if int.is_some() =>
        {
            let tos = int.unwrap_or(0);
            if tos < 0 {
                e.int(tos);
                return;
            }
            let dscp = ((tos >> 2) & 0x3f) as u8;
            match sockwrap_policy::catalog::dscp_name(dscp) {
                Some(n) => e.disp(format_args!("0x{:02x} (DSCP {})", tos, n)),
                None => e.disp(format_args!("0x{:02x} (DSCP {})", tos, dscp)),
            }
        }
        (libc::SOL_SOCKET, libc::SO_ERROR) if int.is_some() => {
            e.str(errno_short(int.unwrap_or(0) as i32));
        }
        (libc::IPPROTO_TCP, libc::TCP_CONGESTION | 31)
        | (libc::SOL_SOCKET, libc::SO_BINDTODEVICE) => {
            let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
            e.bytes_str(&b[..end.min(32)]);
        }
        (libc::SOL_SOCKET, libc::SO_LINGER) if len >= 8 => {
            let on = i32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
            let secs = i32::from_ne_bytes([b[4], b[5], b[6], b[7]]);
            let _ = write!(e, "{{\"onoff\":{},\"linger\":{}}}", on, secs);
        }
        _ => match int {
            Some(v) => e.int(v),
            None => {
                let _ = write!(e, "\"<{} bytes>\"", len);
            }
        },
    }
}
