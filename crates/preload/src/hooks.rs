//! The C boundary: the exported functions that stand in for libc's, and the constructor.
//!
//! Every hook is one row of the `hooks!` table at the end of this file: its C signature,
//! what to do when libc has no such function, and whether its trace line carries a
//! duration. From that row the macro writes
//! * the real function's slot and caller (`real::NAME`, resolved with
//!   `dlsym(RTLD_NEXT)`);
//! * the exported symbol: one jump through its own slot, which the constructor points at
//!   libc itself (no policy, no trace), at the policy work (`work::NAME`), or at the traced
//!   call (one generic wrapper, [`traced`], around `work::NAME` and `describe::NAME`).
//!
//! `work::NAME` and `describe::NAME` are the only code that reads the program's raw
//! pointers: each turns them into safe values once ([`SockAddr`], byte slices) and hands
//! them, with the real call as a closure, to [`crate::calls`], where the decisions are.

#![allow(unsafe_code)]

use crate::apply::Global;
use crate::calls;
#[allow(unused_imports)]
use crate::prelude::*;
use crate::sys::{self, SockAddr};
use crate::trace::{self, Ev};
use core::ffi::{c_char, c_int, c_void, CStr};
use core::net::SocketAddr;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use libc::{sockaddr, socklen_t};

/// The published policy: null until the constructor has run (hooks then pass through).
///
/// Placed in `.data` rather than `.bss`, like the other flags every exec reads: `.data`
/// pages are written by the loader anyway (relocations), while a lone `.bss` page costs
/// each process one or two page faults (read: the zero page; write: a copy).
#[link_section = ".data"]
static GLOBAL: AtomicPtr<Global> = AtomicPtr::new(core::ptr::null_mut());

fn global() -> Option<&'static Global> {
    let p = GLOBAL.load(Ordering::Acquire);
    // SAFETY: GLOBAL is either null or a leaked Box that lives for the whole process (see
    // `publish`).
    unsafe { p.as_ref() }
}

/// Makes the policy visible to every hook, for the rest of the process's life.
fn publish(g: Box<Global>) {
    GLOBAL.store(Box::into_raw(g), Ordering::Release);
}

/// In the parent, before a fork: the `fail` choices count the fork (the child's ordinal).
extern "C" fn before_fork() {
    if let Some(g) = global() {
        g.chooser.before_fork();
    }
}

extern "C" fn after_fork_child() {
    crate::log::reset_after_fork();
    trace::after_fork_child();
    calls::after_fork_child();
    if let Some(g) = global() {
        g.chooser.after_fork_child();
    }
}

// ---- the constructor ----

#[used]
#[link_section = ".init_array"]
static INIT: unsafe extern "C" fn(c_int, *const *const c_char, *const *const c_char) =
    sockwrap_init;

#[used]
#[link_section = ".fini_array"]
static FINI: extern "C" fn() = sockwrap_fini;

/// Constructor. glibc passes argc/argv/envp to `.init_array` functions.
unsafe extern "C" fn sockwrap_init(
    argc: c_int,
    argv: *const *const c_char,
    envp: *const *const c_char,
) {
    let argv0: Option<&CStr> = if argc > 0 && !argv.is_null() {
        // SAFETY: glibc passes the process's argv; argv[0] is a NUL-terminated string
        // that lives as long as the process.
        unsafe { (*argv).as_ref().map(|p| CStr::from_ptr(p)) }
    } else {
        None
    };
    real::resolve_close();
    // SAFETY: envp is the environment glibc passes to constructors (`environ` as it is
    // now); the constructor runs before any other code of the program reads or changes it.
    let vars = unsafe { sockwrap_vars(envp) };
    if let Some(g) = crate::init::init(argv0, &vars, real_fns::resolve_all) {
        publish(g);
    }
    // A forked child starts its own trace pid, exit-summary counts (info level), name and
    // action tables (their locks) and `fail` choices (a stream of its own, see `seed`).
    // Only then are fork handlers registered: glibc's __register_atfork is a symbol
    // binding and two page faults in every exec.
    let needs_fork_handler = trace::on()
        || global().is_some_and(|g| {
            crate::log::enabled(sockwrap_policy::LogLevel::Info)
                || g.policy.any_host()
                || g.policy.any_actions()
        });
    if needs_fork_handler {
        // SAFETY: registering plain functions with no arguments.
        unsafe { libc::pthread_atfork(Some(before_fork), None, Some(after_fork_child)) };
    }
    // Point every hook at its final target: the policy/trace work, or libc itself.
    route(global().is_some(), trace::on());
}

extern "C" fn sockwrap_fini() {
    // The sockets still open at exit end with the process: their counters now.
    if trace::on() {
        trace::ending_range("exit", 0, u32::MAX);
    }
    crate::log::summary();
}

/// The `SOCKWRAP_*` variables of `envp`, read in place so that the rest of a large
/// environment is never copied (std::env::vars_os copies every variable). The strings are
/// borrowed: the compiled policy can be kilobytes. `envp` is the constructor's argument,
/// not libc's `environ`: a data symbol is bound by a look-up at every exec.
///
/// # Safety
/// `envp` is null or a NULL-terminated array of NUL-terminated strings, and nothing may
/// change the environment while the returned borrows are used (the constructor uses them
/// and drops them before the program's own code runs).
unsafe fn sockwrap_vars(envp: *const *const c_char) -> Vec<(&'static [u8], &'static [u8])> {
    let mut out = Vec::new();
    // SAFETY: as the caller promises.
    unsafe {
        let mut p = envp;
        if p.is_null() {
            return out;
        }
        while !(*p).is_null() {
            // The prefix first, byte by byte: only our variables are measured (strlen),
            // not the whole environment.
            let prefix = b"SOCKWRAP_";
            let mut i = 0;
            while i < prefix.len() && *(*p).add(i) as u8 == prefix[i] {
                i += 1;
            }
            if i == prefix.len() {
                let bytes: &'static [u8] = CStr::from_ptr(*p).to_bytes();
                if let Some(eq) = bytes.iter().position(|&b| b == b'=') {
                    out.push((&bytes[..eq], &bytes[eq + 1..]));
                }
            }
            p = p.add(1);
        }
    }
    out
}

// ---- from raw arguments to safe values ----

/// The program's address argument.
///
/// # Safety
/// `addr` must be null or valid for `len` bytes (the program's promise to the kernel).
unsafe fn ip_arg(addr: *const sockaddr, len: socklen_t) -> Option<SocketAddr> {
    // SAFETY: forwarded.
    unsafe { SockAddr::ip_at(addr, len) }
}

/// The program's option value, at most 256 bytes of it.
///
/// # Safety
/// `val` must be null or valid for `len` bytes.
unsafe fn opt_bytes<'a>(val: *const c_void, len: usize) -> Option<&'a [u8]> {
    if val.is_null() {
        return None;
    }
    // SAFETY: the caller promises val is valid for len bytes.
    Some(unsafe { core::slice::from_raw_parts(val as *const u8, len.min(256)) })
}

/// An address the kernel wrote for accept: `*len` may exceed the buffer given (`given`).
///
/// # Safety
/// `addr`/`len` null or as the program passed them to a successful accept.
unsafe fn written_addr(
    addr: *const sockaddr,
    len: *const socklen_t,
    given: socklen_t,
) -> Option<SocketAddr> {
    if addr.is_null() || len.is_null() {
        return None;
    }
    // SAFETY: after a successful accept the kernel wrote min(given, *len) bytes at addr.
    unsafe { ip_arg(addr, (*len).min(given)) }
}

/// At most this many addresses of one answer are recorded and traced.
const MAX_IPS: usize = 32;

/// The program's name argument, without its NUL.
///
/// # Safety
/// `p` null or NUL-terminated.
unsafe fn c_name<'a>(p: *const c_char) -> Option<&'a [u8]> {
    // SAFETY: the caller's promise.
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_bytes())
}

/// The IPv4 and IPv6 addresses of a getaddrinfo answer (each once), in key form.
///
/// # Safety
/// `ai` null or a list getaddrinfo returned and not yet freed.
unsafe fn addrinfo_ips(mut ai: *const libc::addrinfo, out: &mut [u128; MAX_IPS]) -> usize {
    let mut n = 0;
    let mut hops = 0;
    while !ai.is_null() && n < out.len() && hops < 1024 {
        // SAFETY: ai is an entry of the list; its ai_addr is valid for ai_addrlen bytes.
        let (addr, len, next) = unsafe { ((*ai).ai_addr, (*ai).ai_addrlen, (*ai).ai_next) };
        // SAFETY: as above.
        if let Some(a) = unsafe { ip_arg(addr, len) } {
            let k = sockwrap_policy::rules::ip_key(a.ip());
            if !out[..n].contains(&k) {
                out[n] = k;
                n += 1;
            }
        }
        ai = next;
        hops += 1;
    }
    n
}

/// The addresses of a hostent, in key form.
///
/// # Safety
/// `h` a hostent libc filled (its address list NULL-terminated).
unsafe fn hostent_ips(h: *const libc::hostent, out: &mut [u128; MAX_IPS]) -> usize {
    // SAFETY: the caller's promise.
    let (ty, len, list) = unsafe { ((*h).h_addrtype, (*h).h_length, (*h).h_addr_list) };
    if list.is_null() {
        return 0;
    }
    let mut n = 0;
    while n < out.len() {
        // SAFETY: the list is NULL-terminated; each entry holds h_length bytes.
        let p = unsafe { *list.add(n) };
        if p.is_null() {
            break;
        }
        let ip = match (ty, len) {
            (libc::AF_INET, 4) => {
                let mut b = [0u8; 4];
                // SAFETY: the entry holds 4 bytes.
                unsafe { core::ptr::copy_nonoverlapping(p as *const u8, b.as_mut_ptr(), 4) };
                core::net::IpAddr::from(b)
            }
            (libc::AF_INET6, 16) => {
                let mut b = [0u8; 16];
                // SAFETY: the entry holds 16 bytes.
                unsafe { core::ptr::copy_nonoverlapping(p as *const u8, b.as_mut_ptr(), 16) };
                core::net::IpAddr::from(b)
            }
            _ => break,
        };
        out[n] = sockwrap_policy::rules::ip_key(ip);
        n += 1;
    }
    n
}

// Per thread (sys::Thread): the last accepted descriptor and its peer, so the trace line
// needs no getpeername (the work and the trace line of one accept run back to back).

/// What every hook's work is: the policy part when a policy is published, with the
/// bookkeeping that also holds without one (trace tracking, the trace descriptor).
mod work {
    use super::*;

    /// # Safety
    /// C's contract for `socket(2)`.
    #[inline(never)]
    pub unsafe fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int {
        // SAFETY: the program's arguments, with the protocol the policy chose.
        let real = |proto| unsafe { real::socket(domain, ty, proto) };
        match global() {
            Some(g) => calls::socket(g, domain, ty, protocol, real),
            None => real(protocol),
        }
    }

    /// # Safety
    /// C's contract for `connect(2)`.
    #[inline(never)]
    pub unsafe fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
        // SAFETY: arguments passed through.
        let plain = move || unsafe { real::connect(fd, addr, len) };
        match global() {
            // A policy with connection actions or host rules: the longer way, where the
            // connect may go elsewhere. Its own arm, so that the common path does not build
            // the redirecting closure.
            Some(g) if g.connect_extras => {
                // SAFETY: the program's arguments, or its descriptor and the address the
                // policy redirects it to (valid for its own length).
                let real = move |to: Option<&SockAddr>| unsafe {
                    match to {
                        Some(a) => real::connect(fd, a.as_ptr(), a.len()),
                        None => real::connect(fd, addr, len),
                    }
                };
                // SAFETY: the program promises addr is valid for len bytes.
                calls::connect_acting(g, fd, unsafe { ip_arg(addr, len) }, real)
            }
            // SAFETY: as above.
            Some(g) => calls::connect(g, fd, unsafe { ip_arg(addr, len) }, plain),
            None => plain(),
        }
    }

    /// # Safety
    /// C's contract for `bind(2)`.
    #[inline(never)]
    pub unsafe fn bind(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
        // SAFETY: arguments passed through.
        let real = || unsafe { real::bind(fd, addr, len) };
        match global() {
            // SAFETY: the program promises addr is valid for len bytes.
            Some(g) => calls::bind(g, fd, unsafe { ip_arg(addr, len) }, real),
            None => real(),
        }
    }

    /// # Safety
    /// C's contract for `listen(2)`.
    #[inline(never)]
    pub unsafe fn listen(fd: c_int, backlog: c_int) -> c_int {
        // SAFETY: arguments passed through.
        let real = || unsafe { real::listen(fd, backlog) };
        match global() {
            Some(g) => calls::listen(g, fd, real),
            None => real(),
        }
    }

    /// accept and accept4: when the program asks for no address, the kernel writes the
    /// peer's into a buffer of ours, so that neither the policy nor the trace needs a
    /// getpeername; the program sees nothing of it.
    ///
    /// # Safety
    /// C's contract for `accept4(2)`; `flags` None for `accept`.
    unsafe fn accept_any(
        fd: c_int,
        addr: *mut sockaddr,
        len: *mut socklen_t,
        flags: Option<c_int>,
    ) -> c_int {
        let policy_wants = global().is_some_and(|g| calls::accept_wants_peer(g, fd));
        let wanted = trace::on() || policy_wants;
        // Written by the kernel before it is read (only the length it reports is read).
        let mut own = core::mem::MaybeUninit::<libc::sockaddr_storage>::uninit();
        let mut own_len = core::mem::size_of::<libc::sockaddr_storage>() as socklen_t;
        let (a, l) = if wanted && addr.is_null() {
            (
                own.as_mut_ptr() as *mut sockaddr,
                &mut own_len as *mut socklen_t,
            )
        } else {
            (addr, len)
        };
        let given = if l.is_null() {
            0
        } else {
            // SAFETY: the program promises len is valid when non-null.
            unsafe { *l }
        };
        // SAFETY: the program's arguments, or our own buffer in place of a null address.
        let r = unsafe {
            match flags {
                None => real::accept(fd, a, l),
                Some(f) => real::accept4(fd, a, l, f),
            }
        };
        if r < 0 {
            return r;
        }
        let peer = if wanted {
            // SAFETY: after a successful accept the kernel wrote the peer's address there.
            unsafe { written_addr(a, l, given) }
        } else {
            None
        };
        if trace::on() {
            if let Some(p) = peer {
                sys::thread().set_accepted(r, p);
            }
        }
        match global() {
            Some(g) => calls::accepted(g, fd, r, policy_wants, peer),
            None => r,
        }
    }

    /// # Safety
    /// C's contract for `accept(2)`.
    #[inline(never)]
    pub unsafe fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
        // SAFETY: forwarded.
        unsafe { accept_any(fd, addr, len, None) }
    }

    /// # Safety
    /// C's contract for `accept4(2)`.
    #[inline(never)]
    pub unsafe fn accept4(
        fd: c_int,
        addr: *mut sockaddr,
        len: *mut socklen_t,
        flags: c_int,
    ) -> c_int {
        // SAFETY: forwarded.
        unsafe { accept_any(fd, addr, len, Some(flags)) }
    }

    /// The program's own setsockopt. Options sockwrap does not manage, or manages softly,
    /// pass through untouched. A locked option reports success and keeps sockwrap's value;
    /// the program's arguments are first given to a probe socket of the same kind, so a
    /// bad one fails exactly as the kernel would fail it (EFAULT, EINVAL...).
    ///
    /// # Safety
    /// C's contract for `setsockopt(2)`.
    #[inline(never)]
    pub unsafe fn setsockopt(
        fd: c_int,
        level: c_int,
        name: c_int,
        val: *const c_void,
        len: socklen_t,
    ) -> c_int {
        match global() {
            // An option the policy may have locked, or a socket it may have made MPTCP
            // (whose refusals are handled): the longer way, out of line, so that any other
            // option is one test and a jump to libc (~25 instructions less per call than
            // with the longer way's frame, callgrind on bench/build/connbench).
            Some(g)
                if calls::may_lock(g, level, name)
                    || g.policy.manages(sockwrap_policy::Opt::Mptcp) =>
            {
                // SAFETY: the program's arguments, passed on.
                unsafe { setsockopt_managed(g, fd, level, name, val, len) }
            }
            // SAFETY: arguments passed through.
            _ => unsafe { real::setsockopt(fd, level, name, val, len) },
        }
    }

    /// [`setsockopt`] for an option the policy manages, or under a policy that manages
    /// MPTCP.
    ///
    /// # Safety
    /// C's contract for `setsockopt(2)`.
    #[inline(never)]
    unsafe fn setsockopt_managed(
        g: &Global,
        fd: c_int,
        level: c_int,
        name: c_int,
        val: *const c_void,
        len: socklen_t,
    ) -> c_int {
        if let Some(opt) = calls::locked_option(g, fd, level, name) {
            let guard = sys::ErrnoGuard::new();
            // SAFETY: the program's pointer goes only to the kernel, which checks it.
            if let Err(e) = unsafe { probe(fd, level, name, val, len) } {
                drop(guard);
                sys::set_errno(e);
                return -1;
            }
            // SAFETY: the kernel has just read len bytes at val without a fault.
            calls::overridden(fd, level, name, opt, unsafe {
                opt_bytes(val, len as usize)
            });
            drop(guard);
            return 0;
        }
        // SAFETY: arguments passed through.
        let r = unsafe { real::setsockopt(fd, level, name, val, len) };
        if r == 0 {
            return r;
        }
        let e = sys::errno();
        // SAFETY: the program promises val is valid for len bytes; it is only handed to
        // the kernel (a probe socket) and copied, never interpreted.
        let bytes = unsafe { opt_bytes(val, len as usize) }.unwrap_or(&[]);
        // SAFETY: arguments passed through, on the socket as it is now.
        let retry = || unsafe { real::setsockopt(fd, level, name, val, len) };
        calls::setsockopt_failed(fd, level, name, e, bytes, retry).unwrap_or(r)
    }

    /// Whether the kernel would accept the program's setsockopt on a socket of this kind,
    /// asked of a fresh probe socket.
    ///
    /// # Safety
    /// The program's setsockopt arguments.
    unsafe fn probe(
        fd: c_int,
        level: c_int,
        name: c_int,
        val: *const c_void,
        len: socklen_t,
    ) -> Result<(), i32> {
        let (domain, ty, proto) = calls::probe_kind(fd)?;
        let p = sys::socket(domain, ty | libc::SOCK_CLOEXEC, proto).map_err(|e| e.0)?;
        // SAFETY: the program's pointer and length, checked by the kernel.
        let r = unsafe { sys::setsockopt_user(p, level, name, val, len) };
        sys::close(p);
        r.map_err(|e| e.0)
    }

    /// Watches for the outcome of a non-blocking MPTCP connect: programs ask for SO_ERROR
    /// once the socket is writable.
    ///
    /// # Safety
    /// C's contract for `getsockopt(2)`.
    #[inline(never)]
    pub unsafe fn getsockopt(
        fd: c_int,
        level: c_int,
        name: c_int,
        val: *mut c_void,
        len: *mut socklen_t,
    ) -> c_int {
        let so_error = level == libc::SOL_SOCKET && name == libc::SO_ERROR;
        let parked = if so_error && global().is_some() {
            calls::parked_so_error(fd)
        } else {
            None
        };
        // SAFETY: arguments passed through.
        let r = unsafe { real::getsockopt(fd, level, name, val, len) };
        // SAFETY (both): the kernel just wrote an int at val, *len bytes of it.
        if r == 0 && so_error && !val.is_null() && !len.is_null() && unsafe { *len } as usize >= 4 {
            if let Some(e) = parked {
                // SAFETY: see above; val holds an int.
                unsafe { (val as *mut i32).write_unaligned(e) };
            }
            // SAFETY: see above.
            let so_error = unsafe { (val as *const i32).read_unaligned() };
            calls::so_error_read(fd, so_error);
        }
        r
    }

    /// The peer's address; for a connect sockwrap redirected, the address the program
    /// asked for (unless the rule says otherwise).
    ///
    /// # Safety
    /// C's contract for `getpeername(2)`.
    #[inline(never)]
    pub unsafe fn getpeername(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
        // SAFETY: arguments passed through.
        let r = unsafe { real::getpeername(fd, addr, len) };
        if r != 0 || addr.is_null() || len.is_null() {
            return r;
        }
        if let Some(asked) = global().and_then(|g| calls::peer_shown(g, fd)) {
            let a = SockAddr::from(asked);
            // SAFETY: the call succeeded, so addr is valid for the *len bytes the program
            // gave (the kernel wrote there); at most that many are written, and *len says
            // the full length, as the kernel does.
            unsafe {
                let room = (*len as usize).min(a.len() as usize);
                core::ptr::copy_nonoverlapping(a.as_ptr() as *const u8, addr as *mut u8, room);
                *len = a.len();
            }
        }
        r
    }

    /// # Safety
    /// C's contract for `getaddrinfo(3)`.
    #[inline(never)]
    pub unsafe fn getaddrinfo(
        node: *const c_char,
        service: *const c_char,
        hints: *const libc::addrinfo,
        res: *mut *mut libc::addrinfo,
    ) -> c_int {
        // SAFETY: arguments passed through.
        let r = unsafe { real::getaddrinfo(node, service, hints, res) };
        if r == 0 && calls::wants_names(global()) {
            let mut ips = [0u128; MAX_IPS];
            // SAFETY: node is the program's name (NUL-terminated or null); after success
            // *res is libc's answer list.
            unsafe {
                let n = addrinfo_ips(*res, &mut ips);
                if let Some(name) = c_name(node) {
                    calls::resolved(name, &ips[..n]);
                }
            }
        }
        r
    }

    /// # Safety
    /// C's contract for `gethostbyname(3)`.
    #[inline(never)]
    pub unsafe fn gethostbyname(name: *const c_char) -> *mut libc::hostent {
        // SAFETY: arguments passed through.
        let h = unsafe { real::gethostbyname(name) };
        // SAFETY: name as the program gave it; h is null or libc's answer.
        unsafe { record_hostent(name, h) };
        h
    }

    /// # Safety
    /// C's contract for `gethostbyname2(3)`.
    #[inline(never)]
    pub unsafe fn gethostbyname2(name: *const c_char, af: c_int) -> *mut libc::hostent {
        // SAFETY: arguments passed through.
        let h = unsafe { real::gethostbyname2(name, af) };
        // SAFETY: as for gethostbyname.
        unsafe { record_hostent(name, h) };
        h
    }

    /// # Safety
    /// C's contract for `gethostbyname_r(3)`.
    #[inline(never)]
    pub unsafe fn gethostbyname_r(
        name: *const c_char,
        ret: *mut libc::hostent,
        buf: *mut c_char,
        buflen: libc::size_t,
        result: *mut *mut libc::hostent,
        h_errnop: *mut c_int,
    ) -> c_int {
        // SAFETY: arguments passed through.
        let r = unsafe { real::gethostbyname_r(name, ret, buf, buflen, result, h_errnop) };
        if r == 0 && !result.is_null() {
            // SAFETY: after success *result is null or ret, filled by libc.
            unsafe { record_hostent(name, *result) };
        }
        r
    }

    /// # Safety
    /// C's contract for `gethostbyname2_r(3)`.
    #[inline(never)]
    pub unsafe fn gethostbyname2_r(
        name: *const c_char,
        af: c_int,
        ret: *mut libc::hostent,
        buf: *mut c_char,
        buflen: libc::size_t,
        result: *mut *mut libc::hostent,
        h_errnop: *mut c_int,
    ) -> c_int {
        // SAFETY: arguments passed through.
        let r = unsafe { real::gethostbyname2_r(name, af, ret, buf, buflen, result, h_errnop) };
        if r == 0 && !result.is_null() {
            // SAFETY: as for gethostbyname_r.
            unsafe { record_hostent(name, *result) };
        }
        r
    }

    /// # Safety
    /// `name` null or NUL-terminated; `h` null or a hostent libc filled.
    unsafe fn record_hostent(name: *const c_char, h: *const libc::hostent) {
        if h.is_null() || !calls::wants_names(global()) {
            return;
        }
        let mut ips = [0u128; MAX_IPS];
        // SAFETY: forwarded.
        unsafe {
            let n = hostent_ips(h, &mut ips);
            if let Some(name) = c_name(name) {
                calls::resolved(name, &ips[..n]);
            }
        }
    }

    /// # Safety
    /// C's contract for `close(2)`.
    #[inline(never)]
    pub unsafe fn close(fd: c_int) -> c_int {
        if trace::on() {
            return close_traced(fd);
        }
        calls::closing(global().is_some(), fd);
        // SAFETY: arguments passed through.
        unsafe { real::close(fd) }
    }

    /// The traced close, with its own line (`describe::close` writes none): a TCP
    /// connection's counters must be read before the descriptor goes. Out of line, so that
    /// an untraced close saves no registers (ten instructions in each close, measured with
    /// callgrind on bench/build/connbench).
    #[cold]
    #[inline(never)]
    fn close_traced(fd: c_int) -> c_int {
        let end = trace::ending(fd);
        if end.is_some() {
            trace::untrack(fd);
        }
        calls::closing(global().is_some(), fd);
        // SAFETY: arguments passed through.
        let r = unsafe { real::close(fd) };
        if let Some(end) = end {
            let errno = sys::errno();
            trace::ended("close", fd, Some((r, errno)), &end);
            sys::set_errno(errno);
        }
        r
    }

    /// # Safety
    /// C's contract for `close_range(2)`.
    #[inline(never)]
    pub unsafe fn close_range(first: libc::c_uint, last: libc::c_uint, flags: c_int) -> c_int {
        // CLOSE_RANGE_CLOEXEC (4) only marks descriptors; nothing is closed then. The
        // traced sockets' ends are written first: their counters go with them.
        if trace::on() && flags & 4 == 0 && first <= last {
            trace::ending_range("close_range", first, last);
        }
        // SAFETY: arguments passed through.
        let r = unsafe { real::close_range(first, last, flags) };
        if r == 0 && flags & 4 == 0 {
            calls::closed_range(global().is_some(), first, last);
        }
        r
    }

    /// # Safety
    /// C's contract for `closefrom(3)`.
    #[inline(never)]
    pub unsafe fn closefrom(first: c_int) {
        if let Ok(f) = u32::try_from(first) {
            if trace::on() {
                trace::ending_range("closefrom", f, u32::MAX);
            }
            calls::closed_range(global().is_some(), f, u32::MAX);
        }
        // SAFETY: arguments passed through.
        unsafe { real::closefrom(first) }
    }

    /// # Safety
    /// C's contract for `dup(2)`.
    #[inline(never)]
    pub unsafe fn dup(old: c_int) -> c_int {
        // SAFETY: arguments passed through.
        let r = unsafe { real::dup(old) };
        if r >= 0 {
            calls::duplicated(old, r);
        }
        r
    }

    /// # Safety
    /// C's contract for `dup2(2)`.
    #[inline(never)]
    pub unsafe fn dup2(old: c_int, new: c_int) -> c_int {
        // A traced socket on `new` is closed by the call: its end is read before.
        let end = if trace::on() && new != old {
            trace::ending(new)
        } else {
            None
        };
        // SAFETY: arguments passed through.
        let r = unsafe { real::dup2(old, new) };
        if r >= 0 {
            calls::duplicated(old, r);
            if let Some(end) = end {
                trace::untrack(new);
                let errno = sys::errno();
                trace::ended("dup2", new, None, &end);
                sys::set_errno(errno);
            }
        }
        r
    }

    /// # Safety
    /// C's contract for `dup3(2)`.
    #[inline(never)]
    pub unsafe fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int {
        // A traced socket on `new` is closed by the call: its end is read before.
        let end = if trace::on() && new != old {
            trace::ending(new)
        } else {
            None
        };
        // SAFETY: arguments passed through.
        let r = unsafe { real::dup3(old, new, flags) };
        if r >= 0 {
            calls::duplicated(old, r);
            if let Some(end) = end {
                trace::untrack(new);
                let errno = sys::errno();
                trace::ended("dup3", new, None, &end);
                sys::set_errno(errno);
            }
        }
        r
    }
}

/// The one traced-call wrapper: runs the call (timed when its trace line carries a
/// duration), then writes its line with the call's result and errno, and leaves errno as
/// the call left it.
#[inline]
fn traced<R: Copy>(
    timed: bool,
    call: impl FnOnce() -> R,
    line: impl FnOnce(R, i32, Option<u64>),
) -> R {
    let t0 = if timed { trace::now_mono() } else { 0 };
    let r = call();
    if trace::on() {
        let errno = sys::errno();
        let dur = timed.then(|| trace::now_mono().saturating_sub(t0));
        line(r, errno, dur);
        sys::set_errno(errno);
    }
    r
}

/// Each hook's trace line: its arguments decoded, its result, and what the kernel says the
/// socket is now.
#[allow(clippy::too_many_arguments)]
mod describe {
    use super::*;

    /// `"ret":R` (and errno when it failed), and the duration when timed.
    fn result(e: &mut Ev, ret: i64, errno: i32, dur: Option<u64>) {
        e.result(ret, errno);
        if let Some(d) = dur {
            e.key("dur_ns").int(d as i64);
        }
    }

    #[inline(never)]
    pub fn socket(domain: c_int, ty: c_int, protocol: c_int, r: c_int, errno: i32, _: Option<u64>) {
        let mut e = Ev::begin("call", "socket", r);
        trace::socket_args(&mut e, domain, ty, protocol);
        e.result(r as i64, errno);
        if r >= 0 {
            // What the socket hook made (MPTCP perhaps), else what the arguments say.
            let made = crate::fdstate::get(r)
                .and_then(crate::fdstate::FdState::kind)
                .map(Some);
            let kind = made.or_else(|| trace::kind_from_args(domain, ty, protocol));
            if let Some(k) = kind {
                trace::transport(&mut e, k);
            }
            trace::track(r, kind);
        }
        e.finish();
    }

    /// The line of a call whose argument is an address, up to its result: `args.addr`.
    ///
    /// # Safety
    /// `addr` null or valid for `len` bytes.
    unsafe fn with_addr(
        call: &str,
        fd: c_int,
        addr: *const sockaddr,
        len: socklen_t,
    ) -> (Ev, bool) {
        let mut e = Ev::begin("call", call, fd);
        // SAFETY: the program promises addr is valid for len bytes.
        let a = unsafe { SockAddr::from_raw(addr, len) };
        e.open_obj("args");
        e.first("addr");
        trace::addr(&mut e, a.as_ref());
        e.close_obj();
        (e, a.is_some_and(|a| a.as_socket().is_some()))
    }

    /// # Safety
    /// `addr` null or valid for `len` bytes.
    #[inline(never)]
    pub unsafe fn connect(
        fd: c_int,
        addr: *const sockaddr,
        len: socklen_t,
        r: c_int,
        errno: i32,
        dur: Option<u64>,
    ) {
        // SAFETY: forwarded.
        let (mut e, inet) = unsafe { with_addr("connect", fd, addr, len) };
        result(&mut e, r as i64, errno, dur);
        // SAFETY: forwarded.
        if let Some(remote) = unsafe { ip_arg(addr, len) } {
            trace::host(&mut e, &remote);
        }
        if let Some(n) = sys::thread().take_action(fd) {
            trace::action(&mut e, &n);
        }
        if inet {
            if let Some(kind) = trace::kind_of(fd) {
                trace::transport(&mut e, kind);
                trace::local(&mut e, fd);
                let start = trace::now_mono().saturating_sub(dur.unwrap_or(0));
                trace::connected(fd, kind, start);
            }
        }
        e.finish();
    }

    /// # Safety
    /// `addr` null or valid for `len` bytes.
    #[inline(never)]
    pub unsafe fn bind(
        fd: c_int,
        addr: *const sockaddr,
        len: socklen_t,
        r: c_int,
        errno: i32,
        _: Option<u64>,
    ) {
        // SAFETY: forwarded.
        let (mut e, inet) = unsafe { with_addr("bind", fd, addr, len) };
        e.result(r as i64, errno);
        if r == 0 && inet {
            trace::local(&mut e, fd);
        }
        e.finish();
    }

    #[inline(never)]
    pub fn listen(fd: c_int, backlog: c_int, r: c_int, errno: i32, _: Option<u64>) {
        let mut e = Ev::begin("call", "listen", fd);
        e.open_obj("args");
        e.first("backlog").int(backlog as i64);
        e.close_obj();
        e.result(r as i64, errno);
        if let Some(kind) = trace::kind_of(fd) {
            trace::transport(&mut e, kind);
            trace::local(&mut e, fd);
            trace::track(fd, Some(kind));
        }
        e.finish();
    }

    fn accepted(
        call: &str,
        fd: c_int,
        flags: Option<c_int>,
        r: c_int,
        errno: i32,
        dur: Option<u64>,
    ) {
        let mut e = Ev::begin("call", call, fd);
        if let Some(f) = flags {
            e.open_obj("args");
            e.first("flags").int(f as i64);
            e.close_obj();
        }
        result(&mut e, r as i64, errno, dur);
        if r >= 0 {
            // An accepted socket is what its listener is, unless the listener is MPTCP
            // (the peer may have fallen back to TCP): then the kernel says.
            let kind = match trace::kind_of(fd) {
                Some(Some(l)) if !l.mptcp && crate::fdstate::get(r).is_none() => Some(Some(l)),
                _ => trace::kind_of(r),
            };
            if let Some(k) = kind {
                trace::transport(&mut e, k);
                trace::local(&mut e, r);
                let peer = sys::thread().take_accepted(r).or_else(|| sys::peer_addr(r));
                trace::peer(&mut e, peer);
            }
            match kind {
                Some(k) => trace::accepted(r, k, trace::now_mono()),
                None => trace::track(r, None),
            }
        }
        e.finish();
    }

    #[inline(never)]
    pub fn accept(
        fd: c_int,
        _: *mut sockaddr,
        _: *mut socklen_t,
        r: c_int,
        errno: i32,
        dur: Option<u64>,
    ) {
        accepted("accept", fd, None, r, errno, dur)
    }

    #[inline(never)]
    pub fn accept4(
        fd: c_int,
        _: *mut sockaddr,
        _: *mut socklen_t,
        flags: c_int,
        r: c_int,
        errno: i32,
        dur: Option<u64>,
    ) {
        accepted("accept4", fd, Some(flags), r, errno, dur)
    }

    /// # Safety
    /// `val` null or valid for `len` bytes.
    #[inline(never)]
    pub unsafe fn setsockopt(
        fd: c_int,
        level: c_int,
        name: c_int,
        val: *const c_void,
        len: socklen_t,
        r: c_int,
        errno: i32,
        _: Option<u64>,
    ) {
        let mut e = Ev::begin("call", "setsockopt", fd);
        e.open_obj("args");
        // SAFETY: the program promises val is valid for len bytes.
        trace::opt_args(&mut e, level, name, unsafe { opt_bytes(val, len as usize) });
        e.close_obj();
        e.result(r as i64, errno);
        e.finish();
    }

    /// # Safety
    /// `val`/`len` as the program passed them to getsockopt.
    #[inline(never)]
    pub unsafe fn getsockopt(
        fd: c_int,
        level: c_int,
        name: c_int,
        val: *mut c_void,
        len: *mut socklen_t,
        r: c_int,
        errno: i32,
        _: Option<u64>,
    ) {
        let mut e = Ev::begin("call", "getsockopt", fd);
        e.open_obj("args");
        let shown = if r == 0 && !len.is_null() {
            // SAFETY: after success the kernel wrote the length, and that many bytes at val.
            unsafe { opt_bytes(val, *len as usize) }
        } else {
            None
        };
        trace::opt_args(&mut e, level, name, shown);
        e.close_obj();
        e.result(r as i64, errno);
        e.finish();
    }

    /// The traced close writes its own line (`work::close`).
    #[inline(never)]
    pub fn close(_: c_int, _: c_int, _: i32, _: Option<u64>) {}

    #[inline(never)]
    pub fn close_range(
        _: libc::c_uint,
        _: libc::c_uint,
        _: c_int,
        _: c_int,
        _: i32,
        _: Option<u64>,
    ) {
    }
    #[inline(never)]
    pub fn closefrom(_: c_int, _: (), _: i32, _: Option<u64>) {}
    #[inline(never)]
    pub fn dup(_: c_int, _: c_int, _: i32, _: Option<u64>) {}
    #[inline(never)]
    pub fn dup2(_: c_int, _: c_int, _: c_int, _: i32, _: Option<u64>) {}
    #[inline(never)]
    pub fn dup3(_: c_int, _: c_int, _: c_int, _: c_int, _: i32, _: Option<u64>) {}

    pub fn getpeername(
        _: c_int,
        _: *mut sockaddr,
        _: *mut socklen_t,
        _: c_int,
        _: i32,
        _: Option<u64>,
    ) {
    }

    /// # Safety
    /// getaddrinfo's arguments after the call returned `r`.
    pub unsafe fn getaddrinfo(
        node: *const c_char,
        _: *const c_char,
        _: *const libc::addrinfo,
        res: *mut *mut libc::addrinfo,
        r: c_int,
        _: i32,
        dur: Option<u64>,
    ) {
        // SAFETY: as the program passed them; *res is the answer after success.
        let Some(name) = (unsafe { c_name(node) }) else {
            return;
        };
        let mut ips = [0u128; MAX_IPS];
        let n = if r == 0 && !res.is_null() {
            // SAFETY: see above.
            unsafe { addrinfo_ips(*res, &mut ips) }
        } else {
            0
        };
        trace::resolved("getaddrinfo", name, &ips[..n], trace::eai_name(r), dur);
    }

    /// # Safety
    /// As for [`hostent_line`].
    pub unsafe fn gethostbyname(
        name: *const c_char,
        h: *mut libc::hostent,
        _: i32,
        dur: Option<u64>,
    ) {
        // SAFETY: forwarded.
        unsafe {
            hostent_line(
                "gethostbyname",
                name,
                h,
                if h.is_null() { "error" } else { "ok" },
                dur,
            )
        }
    }

    /// # Safety
    /// As for [`hostent_line`].
    pub unsafe fn gethostbyname2(
        name: *const c_char,
        _: c_int,
        h: *mut libc::hostent,
        _: i32,
        dur: Option<u64>,
    ) {
        // SAFETY: forwarded.
        unsafe {
            hostent_line(
                "gethostbyname2",
                name,
                h,
                if h.is_null() { "error" } else { "ok" },
                dur,
            )
        }
    }

    /// # Safety
    /// gethostbyname_r's arguments after the call returned `r`.
    pub unsafe fn gethostbyname_r(
        name: *const c_char,
        _: *mut libc::hostent,
        _: *mut c_char,
        _: libc::size_t,
        result: *mut *mut libc::hostent,
        h_errnop: *mut c_int,
        r: c_int,
        _: i32,
        dur: Option<u64>,
    ) {
        // SAFETY: forwarded.
        unsafe { hostent_r_line("gethostbyname_r", name, result, h_errnop, r, dur) }
    }

    /// # Safety
    /// gethostbyname2_r's arguments after the call returned `r`.
    pub unsafe fn gethostbyname2_r(
        name: *const c_char,
        _: c_int,
        _: *mut libc::hostent,
        _: *mut c_char,
        _: libc::size_t,
        result: *mut *mut libc::hostent,
        h_errnop: *mut c_int,
        r: c_int,
        _: i32,
        dur: Option<u64>,
    ) {
        // SAFETY: forwarded.
        unsafe { hostent_r_line("gethostbyname2_r", name, result, h_errnop, r, dur) }
    }

    /// # Safety
    /// `result`/`h_errnop` as the program passed them to a call that returned `r`.
    unsafe fn hostent_r_line(
        call: &str,
        name: *const c_char,
        result: *mut *mut libc::hostent,
        h_errnop: *mut c_int,
        r: c_int,
        dur: Option<u64>,
    ) {
        // SAFETY: after the call, *result is null or the filled hostent, *h_errnop set.
        unsafe {
            let h = if r == 0 && !result.is_null() {
                *result
            } else {
                core::ptr::null_mut()
            };
            let why = if !h.is_null() {
                "ok"
            } else if r != 0 {
                sys::errno_name(r)
            } else if !h_errnop.is_null() {
                trace::h_errno_name(*h_errnop)
            } else {
                "error"
            };
            hostent_line(call, name, h, why, dur)
        }
    }

    /// # Safety
    /// `name` null or NUL-terminated; `h` null or a hostent libc filled.
    unsafe fn hostent_line(
        call: &str,
        name: *const c_char,
        h: *const libc::hostent,
        result: &str,
        dur: Option<u64>,
    ) {
        // SAFETY: the caller's promise.
        let Some(name) = (unsafe { c_name(name) }) else {
            return;
        };
        let mut ips = [0u128; MAX_IPS];
        // SAFETY: as above.
        let n = if h.is_null() {
            0
        } else {
            unsafe { hostent_ips(h, &mut ips) }
        };
        trace::resolved(call, name, &ips[..n], result, dur);
    }
}

/// The real functions: the next definitions after ours.
///
/// Each is resolved with `dlsym(RTLD_NEXT)` at its first call, not at load (a program that
/// never makes a socket call pays for none of them), except `close`, which is resolved at
/// load in every process: it is the hook that signal handlers call.
///
/// Why a first-call dlsym is safe where it can happen (checked in glibc 2.36's source):
/// * in a forked child of a threaded program: `dlsym` takes only the loader's lock
///   `GL(dl_load_lock)` (dlfcn/dlsym.c), and `fork` re-initialises that lock in the child,
///   threaded or not (posix/fork.c: `__rtld_lock_initialize (GL(dl_load_lock))`, after
///   `__malloc_fork_unlock_child`), so the child cannot inherit it held by a thread that
///   no longer exists;
/// * concurrently in several threads: the slot is written with the same address by
///   whichever thread gets there; the loader's lock is recursive and taken briefly;
/// * a successful `RTLD_NEXT` look-up allocates nothing (elf/dl-sym.c `do_sym`,
///   dlfcn/dlerror.c `_dlerror_run` frees only an error left pending by an earlier failed
///   dl call of the same thread).
///
/// What stays: a signal handler that makes the first call of a hooked function in its
/// process while its own thread is inside malloc (with such a pending dl error) or inside
/// the loader (`dlopen`) is no longer async-signal-safe for that one call. `close`, the
/// call handlers make, is therefore resolved at load.
pub mod real {
    use super::real_fns::slots;
    use core::ffi::c_char;
    use core::sync::atomic::{AtomicUsize, Ordering};

    /// Resolves `name_nul` (NUL-terminated) with `dlsym(RTLD_NEXT)`; 0 if there is none.
    pub(super) fn resolve(name_nul: &str) -> usize {
        // SAFETY: name_nul is NUL-terminated; RTLD_NEXT asks for the next definition after
        // ours.
        unsafe { libc::dlsym(libc::RTLD_NEXT, name_nul.as_ptr() as *const c_char) as usize }
    }

    /// Resolves a function first called before our constructor ran (kept out of line: the
    /// hooks' fast path is a load, a test and an indirect call).
    #[cold]
    #[inline(never)]
    pub(super) fn resolve_slow(slot: &AtomicUsize, name_nul: &str) -> usize {
        let p = resolve(name_nul);
        slot.store(p, Ordering::Release);
        p
    }

    /// Resolves `close` at load, whatever the environment says: the `close` hook runs in
    /// every program (also from signal handlers) and must never resolve lazily.
    pub fn resolve_close() {
        slots::close.store(resolve("close\0"), Ordering::Release);
    }

    pub use super::real_fns::*;
}

/// Set by the constructor once it has decided (policy or not, trace or not).
/// In `.data`, not `.bss`: with the other statics every exec touches (see `GLOBAL`).
#[link_section = ".data"]
static DECIDED: AtomicBool = AtomicBool::new(false);

/// Writes everything a hook is from its row: see the module note.
macro_rules! hooks {
    ($( $name:ident ( $($arg:ident : $ty:ty),* ) -> $ret:ty, $timing:ident, $resolve:ident, missing $missing:block ; )*) => {
        /// The real functions' addresses (0 = not yet resolved) and callers.
        #[allow(non_upper_case_globals)]
        mod real_fns {
            use super::*;

            pub mod slots {
                use super::*;
                // In `.data`, not `.bss`: the constructor writes them in every exec, and
                // .data's page is written anyway (relocations), a .bss page would be one
                // more page fault.
                $( #[link_section = ".data"] pub static $name: AtomicUsize = AtomicUsize::new(0); )*
            }

            $(
                /// Calls the real function (what the row says when there is none).
                ///
                /// # Safety
                /// C's contract for the function of this name.
                #[allow(clippy::missing_safety_doc, unused_variables)]
                #[inline(always)]
                pub unsafe fn $name($($arg: $ty),*) -> $ret {
                    let mut p = slots::$name.load(Ordering::Acquire);
                    if p == 0 {
                        p = super::real::resolve_slow(&slots::$name, concat!(stringify!($name), "\0"));
                    }
                    if p == 0 {
                        return $missing;
                    }
                    // SAFETY: p is the address dlsym gave for this symbol, whose C type is
                    // the one declared in the row.
                    let f: unsafe extern "C" fn($($ty),*) -> $ret = unsafe { core::mem::transmute(p) };
                    // SAFETY: the caller's arguments are passed through unchanged.
                    unsafe { f($($arg),*) }
                }
            )*

            /// At debug level, resolves every real function of an `eager` row now and logs
            /// each (`Loading socket => 0x7f…`). Otherwise nothing: each real function is
            /// resolved at its first call (see [`super::real`] for why that is safe), so a
            /// program that never calls one never pays its dlsym (~800 instructions each).
            pub fn resolve_all() {
                if !crate::log::enabled(sockwrap_policy::LogLevel::Debug) {
                    return;
                }
                $(
                    if hooks!(@eager $resolve) {
                        let p = super::real::resolve(concat!(stringify!($name), "\0"));
                        slots::$name.store(p, Ordering::Release);
                        crate::log_at!(sockwrap_policy::LogLevel::Debug, "Loading {} => {:#x}", stringify!($name), p);
                    }
                )*
            }

        }

        /// Where each exported hook jumps.
        #[allow(non_upper_case_globals)]
        mod target {
            use super::*;
            $( pub static $name: AtomicPtr<()> = AtomicPtr::new(first::$name as *mut ()); )*
        }

        /// The slots' first occupants: decide on every call until the constructor has.
        mod first {
            use super::*;
            $(
                /// # Safety
                /// C's contract for the function of this name.
                pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
                    if GLOBAL.load(Ordering::Acquire).is_null() && !trace::on() {
                        // SAFETY: arguments passed through.
                        let r = unsafe { real::$name($($arg),*) };
                        if DECIDED.load(Ordering::Acquire) {
                            // Nothing to do in this process: from now on, libc directly.
                            let p = real_fns::slots::$name.load(Ordering::Acquire);
                            if p != 0 {
                                target::$name.store(p as *mut (), Ordering::Release);
                            }
                        }
                        return r;
                    }
                    // SAFETY: arguments passed through.
                    unsafe { full::$name($($arg),*) }
                }
            )*
        }

        /// The policy work alone, for the slots when the trace is off.
        mod work_c {
            use super::*;
            $(
                /// # Safety
                /// C's contract for the function of this name.
                pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
                    // SAFETY: arguments passed through.
                    unsafe { work::$name($($arg),*) }
                }
            )*
        }

        /// The work and its trace line.
        mod full {
            use super::*;
            $(
                /// # Safety
                /// C's contract for the function of this name.
                #[allow(clippy::unused_unit)]
                pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
                    traced(
                        hooks!(@timed $timing),
                        // SAFETY: arguments passed through.
                        || unsafe { work::$name($($arg),*) },
                        // SAFETY: the same arguments, after the call.
                        |r, errno, dur| {
                            #[allow(unused_unsafe)]
                            unsafe { describe::$name($($arg,)* r, errno, dur) }
                        },
                    )
                }
            )*
        }

        $(
            /// Exported hook: one jump through its slot (see the module note).
            ///
            /// # Safety
            /// C's contract for the function of this name.
            #[no_mangle]
            pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
                let p = target::$name.load(Ordering::Acquire);
                // SAFETY: every slot holds a function of exactly this C type: `first::NAME`,
                // `work_c::NAME`, `full::NAME`, or the address dlsym gave for the real NAME.
                let f: unsafe extern "C" fn($($ty),*) -> $ret = unsafe { core::mem::transmute(p) };
                // SAFETY: arguments passed through.
                unsafe { f($($arg),*) }
            }
        )*

        /// Called once by the constructor: `policy` = a policy was published, `tracing` =
        /// the trace is on. With neither, each slot takes libc's own function.
        fn route(policy: bool, tracing: bool) {
            $(
                if tracing {
                    target::$name.store(full::$name as *mut (), Ordering::Release);
                } else if policy {
                    target::$name.store(work_c::$name as *mut (), Ordering::Release);
                } else {
                    let p = pass::$name();
                    if p != 0 {
                        target::$name.store(p as *mut (), Ordering::Release);
                    }
                }
            )*
            DECIDED.store(true, Ordering::Release);
        }
    };
    (@timed timed) => { true };
    (@timed untimed) => { false };
    (@eager eager) => { true };
    (@eager lazy) => { false };
}

/// What a slot holds when there is nothing to do: libc's function, or for `closefrom`
/// (which may be missing) a shell that falls back to close_range.
mod pass {
    use super::*;
    macro_rules! plain {
        ($($name:ident),*) => { $( pub fn $name() -> usize { real_fns::slots::$name.load(Ordering::Acquire) } )* };
    }
    plain!(
        socket,
        connect,
        bind,
        listen,
        accept,
        accept4,
        setsockopt,
        getsockopt,
        close,
        close_range,
        dup,
        dup2,
        dup3,
        getpeername,
        getaddrinfo,
        gethostbyname,
        gethostbyname2,
        gethostbyname_r,
        gethostbyname2_r
    );

    unsafe extern "C" fn closefrom_pass(first: c_int) {
        // SAFETY: arguments passed through.
        unsafe { real::closefrom(first) }
    }

    pub fn closefrom() -> usize {
        closefrom_pass as *const () as usize
    }
}

hooks! {
    socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int, untimed, eager, missing { enosys() };
    connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int, timed, eager, missing { enosys() };
    bind(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int, untimed, eager, missing { enosys() };
    listen(fd: c_int, backlog: c_int) -> c_int, untimed, eager, missing { enosys() };
    accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int, timed, eager, missing { enosys() };
    accept4(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> c_int, timed, eager, missing { enosys() };
    setsockopt(fd: c_int, level: c_int, name: c_int, val: *const c_void, len: socklen_t) -> c_int, untimed, eager, missing { enosys() };
    getsockopt(fd: c_int, level: c_int, name: c_int, val: *mut c_void, len: *mut socklen_t) -> c_int, untimed, eager, missing { enosys() };
    close(fd: c_int) -> c_int, untimed, eager, missing { enosys() };
    close_range(first: libc::c_uint, last: libc::c_uint, flags: c_int) -> c_int, untimed, eager, missing { enosys() };
    closefrom(first: c_int) -> (), untimed, eager, missing { sys::close_from(first.max(0) as u32) };
    dup(old: c_int) -> c_int, untimed, eager, missing { enosys() };
    dup2(old: c_int, new: c_int) -> c_int, untimed, eager, missing { enosys() };
    dup3(old: c_int, new: c_int, flags: c_int) -> c_int, untimed, eager, missing { enosys() };
    getpeername(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int, untimed, lazy, missing { enosys() };
    getaddrinfo(node: *const c_char, service: *const c_char, hints: *const libc::addrinfo, res: *mut *mut libc::addrinfo) -> c_int, timed, lazy, missing { libc::EAI_FAIL };
    gethostbyname(name: *const c_char) -> *mut libc::hostent, timed, lazy, missing { core::ptr::null_mut() };
    gethostbyname2(name: *const c_char, af: c_int) -> *mut libc::hostent, timed, lazy, missing { core::ptr::null_mut() };
    gethostbyname_r(name: *const c_char, ret: *mut libc::hostent, buf: *mut c_char, buflen: libc::size_t, result: *mut *mut libc::hostent, h_errnop: *mut c_int) -> c_int, timed, lazy, missing { libc::ENOSYS };
    gethostbyname2_r(name: *const c_char, af: c_int, ret: *mut libc::hostent, buf: *mut c_char, buflen: libc::size_t, result: *mut *mut libc::hostent, h_errnop: *mut c_int) -> c_int, timed, lazy, missing { libc::ENOSYS };
}

/// A real function libc does not have: fail as the kernel does for an unknown call.
fn enosys() -> c_int {
    sys::set_errno(libc::ENOSYS);
    -1
}
