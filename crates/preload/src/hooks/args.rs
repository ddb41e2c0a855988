//! From the program's raw arguments to safe values: each pointer is read here, once.

use super::*;

/// The program's address argument.
///
/// # Safety
/// `addr` must be null or valid for `len` bytes (the program's promise to the kernel).
pub(super) unsafe fn ip_arg(addr: *const sockaddr, len: socklen_t) -> Option<SocketAddr> {
    // SAFETY: forwarded.
    unsafe { SockAddr::ip_at(addr, len) }
}

/// The program's option value, at most 256 bytes of it.
///
/// # Safety
/// `val` must be null or valid for `len` bytes.
pub(super) unsafe fn opt_bytes<'a>(val: *const c_void, len: usize) -> Option<&'a [u8]> {
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
pub(super) unsafe fn written_addr(
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
pub(super) const MAX_IPS: usize = 32;

/// The program's name argument, without its NUL.
///
/// # Safety
/// `p` null or NUL-terminated.
pub(super) unsafe fn c_name<'a>(p: *const c_char) -> Option<&'a [u8]> {
    // SAFETY: the caller's promise.
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_bytes())
}

/// The IPv4 and IPv6 addresses of a getaddrinfo answer (each once), in key form.
///
/// # Safety
/// `ai` null or a list getaddrinfo returned and not yet freed.
pub(super) unsafe fn addrinfo_ips(
    mut ai: *const libc::addrinfo,
    out: &mut [u128; MAX_IPS],
) -> usize {
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
pub(super) unsafe fn hostent_ips(h: *const libc::hostent, out: &mut [u128; MAX_IPS]) -> usize {
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
