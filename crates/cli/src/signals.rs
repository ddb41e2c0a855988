//! The termination signals (INT, TERM, HUP, QUIT) for the commands that stay in the
//! foreground: `trace` and `run --kernel` pass them on to their child, `attach --follow`
//! catches them to end the follow. One handler for all three, which only calls kill(2) or
//! stores the signal: both are async-signal-safe.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

/// The signals handled.
const SIGNALS: [libc::c_int; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

/// The child that signals are passed on to (0: none).
static CHILD: AtomicI32 = AtomicI32::new(0);
/// The last signal received and not passed on.
static PENDING: AtomicI32 = AtomicI32::new(0);
/// Store every signal, also a terminal's (set by [`catch`]).
static CATCH_ALL: AtomicBool = AtomicBool::new(false);

extern "C" fn handler(sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // A terminal's ^C already reached the whole process group, child included (si_code > 0,
    // SI_KERNEL): passing it on would deliver it twice. kill(1) and friends (si_code <= 0)
    // reached only us: pass them on.
    let code = if info.is_null() {
        0
    } else {
        // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
        unsafe { (*info).si_code }
    };
    let pid = CHILD.load(Ordering::Relaxed);
    if pid > 0 {
        if code <= 0 {
            // SAFETY: kill is async-signal-safe.
            unsafe { libc::kill(pid, sig) };
        }
    } else if code <= 0 || CATCH_ALL.load(Ordering::Relaxed) {
        PENDING.store(sig, Ordering::Relaxed);
    }
}

fn install() {
    for sig in SIGNALS {
        // SAFETY: installing a handler that only calls kill(2) or stores an integer.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = handler as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// From now on, a signal sent to sockwrap alone (kill, not a terminal's ^C, which reaches
/// the child itself) is passed on to `pid`.
pub fn forward_to(pid: u32) {
    CHILD.store(pid as i32, Ordering::Relaxed);
    install();
}

/// The child has ended: signals sent to sockwrap alone are kept for [`take`].
pub fn child_ended() {
    CHILD.store(0, Ordering::Relaxed);
}

/// No child: every termination signal, a terminal's ^C included, is kept for [`take`]
/// (and ends a blocking poll(2) with EINTR).
pub fn catch() {
    CATCH_ALL.store(true, Ordering::Relaxed);
    install();
}

/// The signal received since the last call, if any.
pub fn take() -> Option<libc::c_int> {
    match PENDING.swap(0, Ordering::Relaxed) {
        0 => None,
        s => Some(s),
    }
}

/// SIGPIPE back to its default action (Rust ignores it), so that a closed pipe ends
/// sockwrap quietly as it ends other commands. Called first in `main`, before any thread.
pub fn default_sigpipe() {
    // SAFETY: signal(2) with a constant signal and SIG_DFL; no handler of ours is replaced.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}

/// Dies of `sig` as the program did, so that the shell sees the same end: the default
/// action restored, then the signal raised at this process. Returns if `sig` does not end
/// a process.
pub fn die_of(sig: libc::c_int) {
    // SAFETY: restoring the default action of one signal and raising it at ourselves.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

/// Sends `sig` to `pid` (a process of our own cgroup); a process that has ended meanwhile
/// is no error.
pub fn send(pid: i32, sig: libc::c_int) {
    // SAFETY: kill(2) takes two integers.
    unsafe { libc::kill(pid, sig) };
}
