//! Each hook's trace line: its arguments decoded, its result, and what the kernel says the
//! socket is now.

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
unsafe fn with_addr(call: &str, fd: c_int, addr: *const sockaddr, len: socklen_t) -> (Ev, bool) {
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

fn accepted(call: &str, fd: c_int, flags: Option<c_int>, r: c_int, errno: i32, dur: Option<u64>) {
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
pub fn close_range(_: libc::c_uint, _: libc::c_uint, _: c_int, _: c_int, _: i32, _: Option<u64>) {}
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
pub unsafe fn gethostbyname(name: *const c_char, h: *mut libc::hostent, _: i32, dur: Option<u64>) {
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
    let n = if h.is_null() {
        0
    } else {
        // SAFETY: h is a hostent libc filled and returned (the caller's promise).
        unsafe { hostent_ips(h, &mut ips) }
    };
    trace::resolved(call, name, &ips[..n], result, dur);
}
