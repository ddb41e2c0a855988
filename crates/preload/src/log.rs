//! Logging and the per-option counters behind the exit summary.
//!
//! Lines are formatted into a stack buffer with `core::fmt` (no allocation) and written with
//! one `write(2)` to a descriptor chosen at load: a `SOCKWRAP_LOG_FILE` opened O_APPEND |
//! O_CLOEXEC | O_NOFOLLOW (0600), or a close-on-exec duplicate of stderr. Before each write
//! the descriptor's device and inode are compared with those recorded at load, so a log line
//! never lands in a file the program opened on a number it had closed. Stderr that is a
//! socket (inetd style) or closed gets nothing.
//!
//! Programs that close every descriptor at start (OpenSSH's `closefrom(3)`, daemons) close
//! our copy too. Then the log goes on where it still can, and nowhere else: a log file is
//! opened again by its path (accepted only if it is the same file), and stderr is written
//! through the program's own descriptor 2 while that is still the stderr we were given (no
//! new copy is kept: a copy would hold a pipe or terminal open after the program let go of
//! it, and whoever waits for its end would wait for ours).

#[allow(unused_imports)]
use crate::prelude::*;
use crate::sys::{self, SetOnce};
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};
use sockwrap_policy::catalog::N_OPTS;
use sockwrap_policy::{LogLevel, Opt};

static LEVEL: AtomicU8 = AtomicU8::new(LogLevel::Warn as u8);
static FD: AtomicI32 = AtomicI32::new(-1);
static DEV: AtomicU64 = AtomicU64::new(0);
static INO: AtomicU64 = AtomicU64::new(0);
/// The log file's path, for opening it again after the program closed ours (unset: stderr).
static PATH: SetOnce<String> = SetOnce::new();

pub fn enabled(level: LogLevel) -> bool {
    level as u8 <= LEVEL.load(Relaxed) && FD.load(Relaxed) >= 0
}

/// Chooses where log lines go. Called once from the constructor.
pub fn init(level: LogLevel, file: Option<&str>) {
    LEVEL.store(level as u8, Relaxed);
    if level == LogLevel::Off {
        return;
    }
    let opened = match file {
        Some(path) => {
            let fd = open_log_file(path);
            let _ = PATH.set(path.to_string());
            sys::inode(fd).map(|(dev, ino)| (fd, dev, ino))
        }
        None => dup_stderr(),
    };
    if let Some((fd, dev, ino)) = opened {
        DEV.store(dev, Relaxed);
        INO.store(ino, Relaxed);
        FD.store(fd, Relaxed);
    }
}

pub(crate) fn open_log_file(path: &str) -> i32 {
    open_append(path, true)
}

/// Opens `path` for appending (O_CLOEXEC | O_NOFOLLOW, 0600 when created) on a high
/// descriptor. Allocation-free and async-signal-safe.
pub(crate) fn open_append(path: &str, create: bool) -> i32 {
    let flags = libc::O_WRONLY
        | libc::O_APPEND
        | libc::O_CLOEXEC
        | libc::O_NOFOLLOW
        | if create { libc::O_CREAT } else { 0 };
    match sys::open(path, flags) {
        Ok(fd) => move_high(fd),
        Err(_) => -1,
    }
}

/// Our own copy of stderr, taken at load (a daemon may later close fd 2 or reuse it), on a
/// high descriptor. Two system calls: the copy, then one fstat that both refuses a socket
/// (log text never goes into a connection) and gives the identity `init` records.
fn dup_stderr() -> Option<(i32, u64, u64)> {
    // 3 as the last floor: better a low copy than no log when descriptors are scarce.
    let fd = dup_high(2, &[900, 200, 30, 3]);
    if fd < 0 {
        return None;
    }
    match sys::stat_of(fd) {
        Some((fmt, dev, ino)) if fmt != libc::S_IFSOCK => Some((fd, dev, ino)),
        _ => {
            sys::close(fd); // our own copy, by system call (not through our close hook)
            None
        }
    }
}

/// Moves our descriptor out of the range programs use for themselves, so a program that
/// expects the next descriptor to be 3 still gets 3.
fn move_high(fd: i32) -> i32 {
    let high = dup_high(fd, &[900, 200, 30]);
    if high < 0 {
        return fd;
    }
    sys::close(fd); // ours, by system call
    high
}

/// A close-on-exec copy of `fd` at or above the first of `floors` that works; -1 if none
/// (or if `fd` is not open).
fn dup_high(fd: i32, floors: &[i32]) -> i32 {
    for &min in floors {
        match sys::fcntl(fd, libc::F_DUPFD_CLOEXEC, min) {
            Ok(high) => return high,
            Err(sys::Errno(libc::EBADF)) => return -1,
            Err(_) => {}
        }
    }
    -1
}

/// Whether `fd` is the file the log was opened on.
fn is_log(fd: i32) -> bool {
    sys::inode(fd) == Some((DEV.load(Relaxed), INO.load(Relaxed)))
}

/// Where the next line goes. Our descriptor, while it is still the log; after the program
/// closed it (and maybe reused the number): the log file opened again, or the program's
/// own descriptor 2 while that is still the stderr we were given. Otherwise nowhere, for
/// good (the file was replaced or removed, stderr was closed or pointed elsewhere).
fn out_fd() -> Option<i32> {
    let fd = FD.load(Relaxed);
    if fd < 0 {
        return None;
    }
    if is_log(fd) {
        return Some(fd);
    }
    let next = match PATH.get() {
        Some(path) => {
            let new = open_append(path, false);
            if new >= 0 && !is_log(new) {
                sys::close(new); // ours, by system call
                -1
            } else {
                new
            }
        }
        None if fd != 2 && is_log(2) => 2,
        None => -1,
    };
    match FD.compare_exchange(fd, next, Relaxed, Relaxed) {
        Ok(_) => (next >= 0).then_some(next),
        Err(other) => {
            // Another thread chose first.
            if next > 2 {
                sys::close(next);
            }
            (other >= 0).then_some(other)
        }
    }
}

/// A line buffer on the stack. Overlong lines are cut, never allocated.
pub struct Line {
    buf: [u8; 1024],
    len: usize,
}

impl Line {
    pub fn new() -> Line {
        Line {
            buf: [0; 1024],
            len: 0,
        }
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
    /// The text so far (a line cut in the middle of a character ends before it).
    pub fn as_str(&self) -> &str {
        let b = self.as_bytes();
        match core::str::from_utf8(b) {
            Ok(s) => s,
            Err(e) => core::str::from_utf8(&b[..e.valid_up_to()]).unwrap_or(""),
        }
    }
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.buf.len() - 1 - self.len; // keep one byte for the newline
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Writes one log line: `sockwrap[PID]: LEVEL: message`.
pub fn emit(level: LogLevel, args: fmt::Arguments<'_>) {
    let Some(fd) = out_fd() else {
        return;
    };
    let mut line = Line::new();
    let _ = write!(line, "sockwrap[{}]: {}: ", sys::getpid(), level.as_str());
    let _ = line.write_fmt(args);
    line.buf[line.len] = b'\n';
    line.len += 1;
    sys::write_all(fd, line.as_bytes());
}

#[macro_export]
macro_rules! log_at {
    ($lvl:expr, $($t:tt)*) => {
        if $crate::log::enabled($lvl) {
            $crate::log::emit($lvl, format_args!($($t)*))
        }
    };
}

// ---- counters for the exit summary and once-per-process warnings ----

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU32 = AtomicU32::new(0);
#[allow(clippy::declare_interior_mutable_const)]
const ZERO_I: AtomicI32 = AtomicI32::new(0);

static APPLIED: [AtomicU32; N_OPTS] = [ZERO; N_OPTS];
static FAILED: [AtomicU32; N_OPTS] = [ZERO; N_OPTS];
static OVERRIDDEN: [AtomicU32; N_OPTS] = [ZERO; N_OPTS];
static LAST_ERRNO: [AtomicI32; N_OPTS] = [ZERO_I; N_OPTS];
/// The process that warned about each option (0: none did): a forked child has its own
/// once-per-process warnings without a fork handler (see `hooks::sockwrap_init`).
static WARNED: [AtomicI32; N_OPTS] = [ZERO_I; N_OPTS];
static SOCKETS_SEEN: AtomicU32 = AtomicU32::new(0);

/// Counts an inet socket for the exit summary (an `info` line, as the counts above).
/// The panic handler's one line, to stderr (whatever the log level: the process is about
/// to end, and this says why).
#[cfg_attr(test, allow(dead_code))]
pub fn panicked(info: &core::panic::PanicInfo<'_>) {
    let mut line = Line::new();
    let _ = writeln!(
        line,
        "sockwrap: internal error ({info}); the process is aborted. Please report it."
    );
    sys::write_all(2, line.as_bytes());
}

pub fn socket_seen() {
    if enabled(LogLevel::Info) {
        SOCKETS_SEEN.fetch_add(1, Relaxed);
    }
}

/// Counts one application of each slot in `slots`. The counts only feed the exit summary,
/// an `info` line: below that level nothing is counted.
pub fn count_applied(mut slots: u32) {
    if !enabled(LogLevel::Info) {
        return;
    }
    while slots != 0 {
        if let Some(c) = APPLIED.get(slots.trailing_zeros() as usize) {
            c.fetch_add(1, Relaxed);
        }
        slots &= slots - 1;
    }
}

pub fn count_overridden(o: Opt) {
    OVERRIDDEN[o as usize].fetch_add(1, Relaxed);
}

/// Records a refused option; returns true the first time for this option in this process
/// (the caller then warns).
pub fn count_failed(o: Opt, errno: i32) -> bool {
    FAILED[o as usize].fetch_add(1, Relaxed);
    LAST_ERRNO[o as usize].store(errno, Relaxed);
    let pid = sys::getpid();
    WARNED[o as usize].swap(pid, Relaxed) != pid
}

/// A forked child starts its own counts (its warnings are its own already: [`WARNED`]).
pub fn reset_after_fork() {
    for i in 0..N_OPTS {
        APPLIED[i].store(0, Relaxed);
        FAILED[i].store(0, Relaxed);
        OVERRIDDEN[i].store(0, Relaxed);
    }
    SOCKETS_SEEN.store(0, Relaxed);
}

/// One line per option that sockwrap touched, at exit (info level).
pub fn summary() {
    if !enabled(LogLevel::Info) {
        return;
    }
    let mut any = false;
    for o in Opt::ALL {
        let i = o as usize;
        let (a, f, ov) = (
            APPLIED[i].load(Relaxed),
            FAILED[i].load(Relaxed),
            OVERRIDDEN[i].load(Relaxed),
        );
        if a == 0 && f == 0 && ov == 0 {
            continue;
        }
        any = true;
        if f > 0 {
            let e = LAST_ERRNO[i].load(Relaxed);
            log_at!(
                LogLevel::Info,
                "summary: {}: applied {} times, failed {} times ({}), program's own calls overridden {} times",
                o.name(),
                a,
                f,
                sys::errno_name(e),
                ov
            );
        } else {
            log_at!(
                LogLevel::Info,
                "summary: {}: applied {} times, failed 0 times, program's own calls overridden {} times",
                o.name(),
                a,
                ov
            );
        }
    }
    if !any {
        // Quiet for the many processes (shells, wrappers) that never open an inet socket.
        let level = if SOCKETS_SEEN.load(Relaxed) > 0 {
            LogLevel::Info
        } else {
            LogLevel::Debug
        };
        log_at!(
            level,
            "summary: no option applied ({} inet sockets seen)",
            SOCKETS_SEEN.load(Relaxed)
        );
    }
}
