//! `SOCKWRAP_TRACE`: one JSON object per intercepted socket call (schema: docs/trace-schema.md).
//!
//! Same rules as [`crate::log`]: each line is formatted into a stack buffer with `core::fmt`
//! (no allocation, no lock) and written with ONE `write(2)` to a descriptor opened at load
//! with O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600. Lines stay under 4 KiB,
//! so every process of a traced tree appends whole lines to the one file. No payload byte is
//! ever recorded: addresses, option names and option values only.
//!
//! A traced connection costs its line writes, the `getsockname` that gives its local
//! address, and at its close one `getsockopt(TCP_INFO)` for the `stats` of a TCP
//! connection ([`crate::outcome`]): what does not change is cached.
//! * Every traced socket ends in one event: the `close` line, or a `closed` line for
//!   `close_range`, `closefrom`, `dup2`/`dup3` over it, and the process's exit
//!   ([`ending_range`] from the library's destructor). Its counters are read before the
//!   descriptor goes.
//! * The pid lives on a page the kernel wipes in a forked child (`MADV_WIPEONFORK`; and a
//!   `pthread_atfork` handler clears it too), so a child asks again; the tid is cached per
//!   thread beside the pid it belongs to. A vfork child (posix_spawn, Python's subprocess)
//!   shares the parent's memory: `close_range`/`closefrom`, which such children call, ask
//!   the kernel for the pid; a plain `close` of a traced socket in a vfork child is recorded
//!   under the parent's pid and tid (README).
//! * The transport of a socket is what the socket or accept hook saw it made, kept per
//!   descriptor.
//! * The trace descriptor is checked once, when it is opened; the close, close_range,
//!   closefrom and dup2/dup3 hooks see the program close or replace it, and the next line
//!   opens the file again (and checks it is the same file).
//!
//! When tracing is off the hooks pay one relaxed load of [`ON`].

use crate::fdstate::Kind;
use crate::log::Line;
use crate::outcome::Outcome;
#[allow(unused_imports)]
use crate::prelude::*;
use crate::sys::SetOnce;
use crate::sys::{self, SockAddr};
use core::fmt::{self, Write};
use core::net::SocketAddr;
use core::sync::atomic::{AtomicI32, AtomicU64, Ordering::Relaxed};
use sockwrap_policy::catalog::{Family, Shown};
use sockwrap_policy::{Opt, Transport, Value};

/// On the allow-list of `unsafe` (lib.rs): `#[link_section]` counts as unsafe code, and is
/// a placement, nothing else.
#[allow(unsafe_code)]
mod placed {
    use core::sync::atomic::AtomicBool;
    /// In `.data`, not `.bss`: with the other statics every exec touches (see `GLOBAL`).
    #[link_section = ".data"]
    pub static ON: AtomicBool = AtomicBool::new(false);
}
use placed::ON;
static FD: AtomicI32 = AtomicI32::new(-1);
static DEV: AtomicU64 = AtomicU64::new(0);
static INO: AtomicU64 = AtomicU64::new(0);
static PROG: SetOnce<([u8; 64], usize)> = SetOnce::new();
static PATH: SetOnce<String> = SetOnce::new();

/// Per descriptor the trace has seen: the pid that saw it (low 32 bits; only that pid
/// forgets it: a vfork child shares this memory, and its close_range before exec must not
/// make the parent's later close go unreported), whether it is an inet socket ([`INET`]),
/// its transport (bits 33..35, [`code`]), and whether it connected ([`CLIENT`]) or was
/// accepted ([`SERVER`]).
const TRACKED_N: usize = 65536;
#[allow(clippy::declare_interior_mutable_const)]
const UNTRACKED: AtomicU64 = AtomicU64::new(0);
static TRACKED: [AtomicU64; TRACKED_N] = [UNTRACKED; TRACKED_N];
const INET: u64 = 1 << 32;
const CLIENT: u64 = 1 << 36;
const SERVER: u64 = 1 << 37;
/// Per descriptor: when its connection began (`CLOCK_MONOTONIC` ns at the start of its
/// connect, or at its accept; 0: none), for the duration in the close event's `stats`.
static STARTED: [AtomicU64; TRACKED_N] = [UNTRACKED; TRACKED_N];
/// The highest descriptor ever tracked: the exit and close_range walks stop there.
static HIGHEST: AtomicI32 = AtomicI32::new(-1);

/// The cached pid, on a page a forked child gets zeroed (see `sys::wiped_on_fork_word`).
static PID: SetOnce<&'static AtomicI32> = SetOnce::new();
/// Used when no such page could be had: then the atfork handler alone resets it.
static PID_FALLBACK: AtomicI32 = AtomicI32::new(0);

/// Whether tracing is on: the only cost the hooks pay when it is not.
#[inline(always)]
pub fn on() -> bool {
    ON.load(Relaxed)
}

fn pid_slot() -> &'static AtomicI32 {
    PID.get().copied().unwrap_or(&PID_FALLBACK)
}

/// This process's pid, asked of the kernel once per process.
fn pid() -> i32 {
    let slot = pid_slot();
    match slot.load(Relaxed) {
        0 => {
            let p = sys::getpid();
            slot.store(p, Relaxed);
            p
        }
        p => p,
    }
}

fn tid() -> i32 {
    let pid = pid();
    let me = sys::thread();
    match me.ids() {
        (p, t) if p == pid && t != 0 => t,
        _ => {
            let t = sys::gettid();
            me.set_ids(pid, t);
            t
        }
    }
}

/// A forked child asks for its own pid (called from the pthread_atfork child handler).
pub fn after_fork_child() {
    pid_slot().store(0, Relaxed);
}

/// Opens the trace file. Called once from the constructor.
pub fn init(path: &str, prog: &str) {
    let mut p = [0u8; 64];
    let n = prog.len().min(p.len());
    p[..n].copy_from_slice(&prog.as_bytes()[..n]);
    let _ = PROG.set((p, n));
    let _ = PATH.set(path.to_string());
    if let Some(page) = sys::wiped_on_fork_word() {
        let _ = PID.set(page);
    }
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

/// The transport code kept per descriptor: 0 unknown, 1 tcp, 2 udp, 3 mptcp, 4 other.
fn code(kind: Option<Kind>) -> u64 {
    match kind {
        None => 4,
        Some(k) if k.mptcp => 3,
        Some(k) if k.transport == Transport::Tcp => 1,
        Some(_) => 2,
    }
}

fn slot(fd: i32) -> Option<&'static AtomicU64> {
    usize::try_from(fd).ok().and_then(|i| TRACKED.get(i))
}

fn word(kind: Option<Kind>) -> u64 {
    pid() as u32 as u64 | INET | code(kind) << 33
}

/// Remembers `fd` as seen by this process: an inet socket of `kind` (`Some(None)`: of
/// another transport), or not an inet socket (`None`).
pub fn track(fd: i32, kind: Option<Option<Kind>>) {
    if let Some(t) = slot(fd) {
        let v = match kind {
            Some(k) => word(k),
            None => 0,
        };
        t.store(v, Relaxed);
        STARTED[fd as usize].store(0, Relaxed);
        if v != 0 {
            HIGHEST.fetch_max(fd, Relaxed);
        }
    }
}

/// `fd`, an inet socket of `kind`, connected (or tried to), its connect having begun at
/// `start` (a second connect of the same socket, as non-blocking programs make, keeps
/// the first one's time).
pub fn connected(fd: i32, kind: Option<Kind>, start: u64) {
    let Some(t) = slot(fd) else {
        return;
    };
    let old = t.load(Relaxed);
    let again = old & CLIENT != 0 && old as u32 as i32 == pid();
    t.store(word(kind) | CLIENT, Relaxed);
    if !again {
        STARTED[fd as usize].store(start, Relaxed);
    }
    HIGHEST.fetch_max(fd, Relaxed);
}

/// `fd`, an inet socket of `kind`, was accepted at `when`.
pub fn accepted(fd: i32, kind: Option<Kind>, when: u64) {
    if let Some(t) = slot(fd) {
        t.store(word(kind) | SERVER, Relaxed);
        STARTED[fd as usize].store(when, Relaxed);
        HIGHEST.fetch_max(fd, Relaxed);
    }
}

/// What the trace knows of a socket whose descriptor is about to close: its counters (a
/// TCP connection's, read now, while the descriptor still refers to it) and when it began.
pub struct Ending {
    outcome: Option<Outcome>,
    started: u64,
}

/// The [`Ending`] of `fd` if the trace saw it as an inet socket (whichever process of the
/// traced tree did: a forked child closing an inherited socket reports it too).
pub fn ending(fd: i32) -> Option<Ending> {
    let v = slot(fd)?.load(Relaxed);
    (v & INET != 0).then(|| ending_of(fd, v))
}

/// One `getsockopt(TCP_INFO)` for a TCP or MPTCP socket that connected or was accepted;
/// nothing for the others (UDP, listeners, sockets that never connected). Out of line:
/// bench/ counts its instructions.
#[inline(never)]
fn ending_of(fd: i32, v: u64) -> Ending {
    let conn = v & (CLIENT | SERVER) != 0;
    let stream = matches!((v >> 33) & 7, 1 | 3);
    Ending {
        outcome: if conn && stream {
            Outcome::of(fd, v & CLIENT != 0)
        } else {
            None
        },
        started: if conn {
            STARTED[fd as usize].load(Relaxed)
        } else {
            0
        },
    }
}

/// The end of a traced socket's descriptor: the `close` call's own line (`ret`: its result
/// and errno), or sockwrap's `"ev":"closed"` for the calls that close descriptors without
/// naming each (`close_range`, `closefrom`, `dup2`, `dup3`, `exit`), with `stats` for a
/// TCP connection.
pub fn ended(call: &str, fd: i32, ret: Option<(i32, i32)>, end: &Ending) {
    let mut e = Ev::begin(if ret.is_some() { "call" } else { "closed" }, call, fd);
    if let Some((r, errno)) = ret {
        e.result(r as i64, errno);
    }
    if let Some(o) = &end.outcome {
        stats(&mut e, o, end.started);
    }
    e.finish();
}

/// `,"stats":{...}` (docs/trace-schema.md). Out of line: bench/ counts its instructions.
#[inline(never)]
fn stats(e: &mut Ev, o: &Outcome, started: u64) {
    // Literal keys and a plain decimal writer: through `write!` the object cost ~6,000
    // instructions per close (callgrind, bench/ section 2), most of it core::fmt.
    macro_rules! field {
        ($k:literal, $v:expr) => {{
            e.raw(concat!(",\"", $k, "\":"));
            e.uint($v as u64);
        }};
    }
    e.raw(",\"stats\":{\"state\":\"");
    e.raw(o.state_name());
    e.raw("\"");
    if started != 0 {
        field!("duration_ns", now_mono().saturating_sub(started));
    }
    field!("bytes_acked", o.bytes_acked);
    field!("bytes_received", o.bytes_received);
    if let Some(u) = o.bytes_unacked {
        field!("bytes_unacked", u);
    }
    field!("segs_out", o.segs_out);
    field!("segs_in", o.segs_in);
    field!("total_retrans", o.total_retrans);
    field!("srtt_us", o.srtt_us);
    if let Some(m) = o.min_rtt_us {
        field!("min_rtt_us", m);
    }
    field!("cwnd", o.cwnd);
    if let Some(r) = o.delivery_rate {
        field!("delivery_rate_bps", r.saturating_mul(8));
    }
    e.close_obj();
}

/// `close_range`/`closefrom` (`call`) are about to close `first..=last`, or the process
/// is exiting (`exit`): one `closed` line for each descriptor this process tracked there,
/// read before the descriptors go. Asks the kernel for the pid: vfork children, which
/// share this memory, call these, and their descriptors are their own copies.
pub fn ending_range(call: &str, first: u32, last: u32) {
    let Ok(highest) = usize::try_from(HIGHEST.load(Relaxed)) else {
        return;
    };
    let me = sys::getpid();
    let last = (last as usize).min(highest).min(TRACKED_N - 1);
    let first = first as usize;
    for (fd, t) in TRACKED.iter().enumerate().take(last + 1).skip(first) {
        let v = t.load(Relaxed);
        if v & INET != 0 && v as u32 as i32 == me {
            let fd = fd as i32;
            ended(call, fd, None, &ending_of(fd, v));
        }
    }
}

/// The socket on `fd` changed protocol (MPTCP ↔ TCP before connect).
pub fn retrack(fd: i32, kind: Kind) {
    if let Some(t) = slot(fd) {
        let v = t.load(Relaxed);
        if v & INET != 0 {
            t.store((v & !(7 << 33)) | code(Some(kind)) << 33, Relaxed);
        }
    }
}

/// Whether `fd` was tracked; forgets it if this process tracked it.
pub fn untrack(fd: i32) -> bool {
    let Some(t) = slot(fd) else {
        return false;
    };
    let v = t.load(Relaxed);
    if v & INET == 0 {
        return false;
    }
    if v as u32 as i32 == pid() {
        let _ = t.compare_exchange(v, 0, Relaxed, Relaxed);
    }
    true
}

/// `close_range`/`closefrom`: forgets this process's descriptors (no close line for them).
/// Asks the kernel for the pid: vfork children, which share this memory, call these.
pub fn untrack_range(first: u32, last: u32) {
    let me = sys::getpid();
    let last = (last as usize).min(TRACKED_N - 1);
    for t in TRACKED.iter().take(last + 1).skip(first as usize) {
        let v = t.load(Relaxed);
        if v & INET != 0 && v as u32 as i32 == me {
            let _ = t.compare_exchange(v, 0, Relaxed, Relaxed);
        }
    }
}

/// The program closed (or replaced, with dup2/dup3) descriptor `fd`: if it was the
/// trace's, the next line opens the file again.
pub fn note_closed(fd: i32) {
    if fd >= 0 && FD.load(Relaxed) == fd {
        FD.store(-1, Relaxed);
    }
}

/// The program closed descriptors `first..=last`.
pub fn note_closed_range(first: u32, last: u32) {
    let fd = FD.load(Relaxed);
    if fd >= 0 && (first..=last).contains(&(fd as u32)) {
        FD.store(-1, Relaxed);
    }
}

pub fn now_mono() -> u64 {
    sys::clock_ns(libc::CLOCK_MONOTONIC)
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
        let wall = sys::clock_ns(libc::CLOCK_REALTIME);
        let _ = write!(
            e,
            "{{\"v\":1,\"t_mono_ns\":{},\"t_wall_ns\":{},\"pid\":{},\"tid\":{},\"prog\":",
            mono,
            wall,
            pid(),
            tid()
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

    /// An unsigned integer in decimal, without core::fmt.
    pub fn uint(&mut self, mut v: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        // ASCII digits are UTF-8.
        let _ = self.write_str(core::str::from_utf8(&digits[i..]).unwrap_or("0"));
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

/// The trace descriptor. Programs that close every descriptor at start (OpenSSH's
/// `closefrom`, daemons) close ours too, and the number may then be reused by the program:
/// the close hooks say so ([`note_closed`]), and then the trace file is opened again
/// (open(2) and fcntl(2) are async-signal-safe) and accepted only if it is the same file
/// (device and inode).
fn out_fd() -> Option<i32> {
    let fd = FD.load(Relaxed);
    if fd >= 0 {
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
        sys::IPPROTO_MPTCP => "IPPROTO_MPTCP",
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

/// The C name of an option: the catalog's for those it knows (managed, or carried over a
/// protocol change), else from the trace's own list of common options.
fn opt_name(level: i32, name: i32) -> Option<&'static str> {
    sockwrap_policy::catalog::kernel_name(level, name).or_else(|| other_opt_name(level, name))
}

fn other_opt_name(level: i32, name: i32) -> Option<&'static str> {
    Some(match (level, name) {
        (libc::SOL_SOCKET, n) => match n {
            1 => "SO_DEBUG",
            3 => "SO_TYPE",
            4 => "SO_ERROR",
            5 => "SO_DONTROUTE",
            6 => "SO_BROADCAST",
            16 => "SO_PASSCRED",
            17 => "SO_PEERCRED",
            19 => "SO_SNDLOWAT",
            20 => "SO_RCVTIMEO_OLD",
            21 => "SO_SNDTIMEO_OLD",
            29 => "SO_TIMESTAMP_OLD",
            30 => "SO_ACCEPTCONN",
            38 => "SO_PROTOCOL",
            39 => "SO_DOMAIN",
            46 => "SO_BUSY_POLL",
            49 => "SO_INCOMING_CPU",
            60 => "SO_ZEROCOPY",
            66 => "SO_RCVTIMEO_NEW",
            67 => "SO_SNDTIMEO_NEW",
            _ => return None,
        },
        (libc::IPPROTO_IP, n) => match n {
            3 => "IP_HDRINCL",
            4 => "IP_OPTIONS",
            8 => "IP_PKTINFO",
            10 => "IP_MTU_DISCOVER",
            11 => "IP_RECVERR",
            12 => "IP_RECVTTL",
            13 => "IP_RECVTOS",
            14 => "IP_MTU",
            32 => "IP_MULTICAST_IF",
            33 => "IP_MULTICAST_TTL",
            34 => "IP_MULTICAST_LOOP",
            35 => "IP_ADD_MEMBERSHIP",
            36 => "IP_DROP_MEMBERSHIP",
            _ => return None,
        },
        (libc::IPPROTO_IPV6, n) => match n {
            17 => "IPV6_MULTICAST_IF",
            18 => "IPV6_MULTICAST_HOPS",
            19 => "IPV6_MULTICAST_LOOP",
            23 => "IPV6_MTU_DISCOVER",
            25 => "IPV6_RECVERR",
            49 => "IPV6_RECVPKTINFO",
            66 => "IPV6_RECVTCLASS",
            _ => return None,
        },
        (libc::IPPROTO_TCP, n) => match n {
            7 => "TCP_SYNCNT",
            8 => "TCP_LINGER2",
            10 => "TCP_WINDOW_CLAMP",
            11 => "TCP_INFO",
            12 => "TCP_QUICKACK",
            14 => "TCP_MD5SIG",
            23 => "TCP_FASTOPEN",
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
fn decode(c: u64) -> Option<Kind> {
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
fn tos_value(e: &mut Ev, tos: i64) {
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
fn ip_of_key(k: u128) -> core::net::IpAddr {
    let v6 = core::net::Ipv6Addr::from(k);
    match v6.to_ipv4_mapped() {
        Some(v4) => core::net::IpAddr::V4(v4),
        None => core::net::IpAddr::V6(v6),
    }
}

/// getaddrinfo's error codes by name.
pub fn eai_name(code: i32) -> &'static str {
    match code {
        0 => "ok",
        -1 => "EAI_BADFLAGS",
        -2 => "EAI_NONAME",
        -3 => "EAI_AGAIN",
        -4 => "EAI_FAIL",
        -5 => "EAI_NODATA",
        -6 => "EAI_FAMILY",
        -7 => "EAI_SOCKTYPE",
        -8 => "EAI_SERVICE",
        -9 => "EAI_ADDRFAMILY",
        -10 => "EAI_MEMORY",
        -11 => "EAI_SYSTEM",
        -12 => "EAI_OVERFLOW",
        _ => "EAI_OTHER",
    }
}

/// h_errno's values by name (gethostbyname*).
pub fn h_errno_name(code: i32) -> &'static str {
    match code {
        0 => "ok",
        1 => "HOST_NOT_FOUND",
        2 => "TRY_AGAIN",
        3 => "NO_RECOVERY",
        4 => "NO_DATA",
        _ => "H_OTHER",
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
