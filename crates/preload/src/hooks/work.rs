//! What every hook's work is: the policy part when a policy is published, with the
//! bookkeeping that also holds without one (trace tracking, the trace descriptor).
//!
//! Per thread (sys::thread::Thread): the last accepted descriptor and its peer, so the trace line
//! needs no getpeername (the work and the trace line of one accept run back to back).

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
pub unsafe fn accept4(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> c_int {
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
            if calls::may_lock(g, level, name) || g.policy.manages(sockwrap_policy::Opt::Mptcp) =>
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
    if r == 0
        && so_error
        && !val.is_null()
        && !len.is_null()
        // SAFETY: len is the program's, not null, and the kernel just wrote it.
        && unsafe { *len } as usize >= 4
    {
        if let Some(e) = parked {
            // SAFETY: val is the program's, not null, and the kernel just wrote an int
            // there (*len >= 4 bytes).
            unsafe { (val as *mut i32).write_unaligned(e) };
        }
        // SAFETY: as above.
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
    // SAFETY: arguments passed through.
    dup_over("dup2", old, new, || unsafe { real::dup2(old, new) })
}

/// # Safety
/// C's contract for `dup3(2)`.
#[inline(never)]
pub unsafe fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int {
    // SAFETY: arguments passed through.
    dup_over("dup3", old, new, || unsafe { real::dup3(old, new, flags) })
}

/// dup2 and dup3: `real` puts `old`'s file on `new`, closing what was there. A traced
/// socket on `new` is closed by the call: its end is read before.
#[inline(always)]
fn dup_over(call: &str, old: c_int, new: c_int, real: impl FnOnce() -> c_int) -> c_int {
    let end = if trace::on() && new != old {
        trace::ending(new)
    } else {
        None
    };
    let r = real();
    if r >= 0 {
        calls::duplicated(old, r);
        if let Some(end) = end {
            trace::untrack(new);
            let errno = sys::errno();
            trace::ended(call, new, None, &end);
            sys::set_errno(errno);
        }
    }
    r
}
