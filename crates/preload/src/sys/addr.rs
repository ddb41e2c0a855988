//! [`SockAddr`]: the one owner of every conversion between C socket addresses and Rust's.

use core::mem::size_of;
use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// A socket address as the kernel reads and writes it: storage big enough for any family,
/// and the length in use.
#[derive(Clone, Copy)]
pub struct SockAddr {
    pub(super) storage: libc::sockaddr_storage,
    pub(super) len: libc::socklen_t,
}

impl SockAddr {
    pub(super) fn empty() -> SockAddr {
        SockAddr {
            // SAFETY: all-zero is a valid sockaddr_storage.
            storage: unsafe { core::mem::zeroed() },
            len: size_of::<libc::sockaddr_storage>() as libc::socklen_t,
        }
    }

    /// Copies `len` bytes of a C address (at most a `sockaddr_storage`).
    ///
    /// # Safety
    /// `p` must be null or valid for reading `len` bytes.
    pub unsafe fn from_raw(p: *const libc::sockaddr, len: libc::socklen_t) -> Option<SockAddr> {
        if p.is_null() {
            return None;
        }
        let mut a = SockAddr::empty();
        let n = (len as usize).min(size_of::<libc::sockaddr_storage>());
        // SAFETY: the caller promises p is valid for len bytes; the storage holds n.
        unsafe {
            core::ptr::copy_nonoverlapping(p as *const u8, &mut a.storage as *mut _ as *mut u8, n)
        };
        a.len = n as libc::socklen_t;
        Some(a)
    }

    /// The IPv4 or IPv6 address at `p`, read in place (no copy of the whole storage): what
    /// the hooks do with every address a program passes.
    ///
    /// # Safety
    /// `p` must be null or valid for reading `len` bytes.
    pub unsafe fn ip_at(p: *const libc::sockaddr, len: libc::socklen_t) -> Option<SocketAddr> {
        if p.is_null() || (len as usize) < size_of::<libc::sa_family_t>() {
            return None;
        }
        // SAFETY: p is valid for at least the family field.
        let fam = unsafe { (*p).sa_family } as i32;
        match fam {
            libc::AF_INET if len as usize >= size_of::<libc::sockaddr_in>() => {
                // SAFETY: len covers a sockaddr_in; read_unaligned as the program's buffer
                // may not be aligned.
                let a = unsafe { (p as *const libc::sockaddr_in).read_unaligned() };
                Some(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                    u16::from_be(a.sin_port),
                )))
            }
            libc::AF_INET6 if len as usize >= size_of::<libc::sockaddr_in6>() => {
                // SAFETY: as above, for sockaddr_in6.
                let a = unsafe { (p as *const libc::sockaddr_in6).read_unaligned() };
                Some(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(a.sin6_addr.s6_addr),
                    u16::from_be(a.sin6_port),
                    a.sin6_flowinfo,
                    a.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }

    /// The address family (AF_INET, AF_UNIX...), if the length covers it.
    pub fn family(&self) -> Option<i32> {
        (self.len as usize >= size_of::<libc::sa_family_t>())
            .then_some(self.storage.ss_family as i32)
    }

    /// The IPv4 or IPv6 address, if this is one.
    pub fn as_socket(&self) -> Option<SocketAddr> {
        // SAFETY: the storage is valid for its len bytes (at most its size).
        unsafe { SockAddr::ip_at(self.as_ptr(), self.len) }
    }

    /// The path of an AF_UNIX address (`@name` for the abstract namespace), as bytes.
    pub fn unix_path(&self) -> Option<([u8; 109], usize)> {
        if self.family()? != libc::AF_UNIX {
            return None;
        }
        // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_un.
        let un = unsafe { &*(&self.storage as *const _ as *const libc::sockaddr_un) };
        let n = (self.len as usize).saturating_sub(2).min(108);
        let path: &[u8] = &(un.sun_path.map(|c| c as u8))[..n];
        let mut out = [0u8; 109];
        let used = match path.split_first() {
            Some((&0, rest)) => {
                out[0] = b'@';
                out[1..1 + rest.len()].copy_from_slice(rest);
                1 + rest.len()
            }
            _ => {
                let end = path.iter().position(|&c| c == 0).unwrap_or(path.len());
                out[..end].copy_from_slice(&path[..end]);
                end
            }
        };
        Some((out, used))
    }

    pub fn as_ptr(&self) -> *const libc::sockaddr {
        &self.storage as *const _ as *const libc::sockaddr
    }

    /// The length in use.
    pub fn len(&self) -> libc::socklen_t {
        self.len
    }
}

impl From<SocketAddr> for SockAddr {
    fn from(a: SocketAddr) -> SockAddr {
        let mut s = SockAddr::empty();
        let p = &mut s.storage as *mut libc::sockaddr_storage;
        match a {
            SocketAddr::V4(v4) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: v4.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from(*v4.ip()).to_be(),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
                unsafe { (p as *mut libc::sockaddr_in).write(sin) };
                s.len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            }
            SocketAddr::V6(v6) => {
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: v6.port().to_be(),
                    sin6_flowinfo: 0,
                    sin6_addr: libc::in6_addr {
                        s6_addr: v6.ip().octets(),
                    },
                    sin6_scope_id: v6.scope_id(),
                };
                // SAFETY: as above, for sockaddr_in6.
                unsafe { (p as *mut libc::sockaddr_in6).write(sin6) };
                s.len = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
            }
        }
        s
    }
}
