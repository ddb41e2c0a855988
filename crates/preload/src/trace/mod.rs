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
//!
//! Here: the trace's state (on or off, the descriptor, the pid) and what is known per
//! descriptor (tracked, started, ended). The rest, one file each: `line` (one line, [`Ev`],
//! and the descriptor it is written to), `names` (the names of the kernel's constants),
//! `fields` (each event's fields: arguments, addresses, options, names resolved).

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

mod fields;
mod line;
mod names;

pub use fields::*;
pub use line::*;
pub use names::*;

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
