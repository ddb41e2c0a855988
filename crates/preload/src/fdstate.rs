//! Per-descriptor state: what sockwrap knows about the socket behind a descriptor.
//!
//! A fixed table indexed by fd (no allocation, no locks: one atomic word per entry) of
//! [`FdState`] values. `socket` and `accept` reset an entry when they hand out a number,
//! `close`, `close_range` and `closefrom` clear entries, and `dup*` copy them, so a reused
//! number never inherits a lock. (An fstat-per-connection inode check did the same job at
//! twice the cost; the remaining gap is a socket closed by a raw system call and its number
//! reused by a non-socket, documented in the README.) Descriptors above the table (65536)
//! get no locks: sockwrap's options are still applied, but the program can change them.

#[allow(unused_imports)]
use crate::prelude::*;
use crate::sys;
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};
use sockwrap_policy::catalog::Family;
use sockwrap_policy::Transport;

const SIZE: usize = 65536;

/// What a socket is, recorded by the hook that made it (socket, accept) so connect and
/// accept need not ask the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kind {
    pub transport: Transport,
    /// Protocol 262.
    pub mptcp: bool,
    pub family: Family,
}

/// One descriptor's state. Packed into a `u64`: bits 0..31 the locked option slots, the
/// flags above them. All-zero means "nothing known".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FdState(u64);

const LISTEN_APPLIED: u64 = 1 << 32;
const FAMILY_V6: u64 = 1 << 33;
const CHECKED: u64 = 1 << 34;
const MADE_MPTCP: u64 = 1 << 35;
const PINNED_TCP: u64 = 1 << 36;
const MPTCP_PENDING: u64 = 1 << 37;
const KIND_TCP: u64 = 1 << 38;
const KIND_UDP: u64 = 1 << 39;
const KIND_MPTCP: u64 = 1 << 40;
const REDIRECTED: u64 = 1 << 41;
const KIND_BITS: u64 = KIND_TCP | KIND_UDP | KIND_MPTCP | FAMILY_V6;

impl FdState {
    /// A socket sockwrap has looked at (so it is not adopted again), of this kind if known.
    pub fn seen(kind: Option<Kind>) -> FdState {
        FdState(CHECKED).with_kind(kind)
    }

    /// Marks the socket as looked at.
    pub fn checked(self) -> FdState {
        FdState(self.0 | CHECKED)
    }

    fn flag(self, bit: u64) -> bool {
        self.0 & bit != 0
    }

    fn set_flag(self, bit: u64, on: bool) -> FdState {
        FdState(if on { self.0 | bit } else { self.0 & !bit })
    }

    /// The option slots locked on this socket.
    pub fn locked(self) -> u32 {
        self.0 as u32
    }

    pub fn with_locked(self, slots: u32) -> FdState {
        FdState((self.0 & !0xffff_ffff) | slots as u64)
    }

    pub fn kind(self) -> Option<Kind> {
        let transport = if self.flag(KIND_TCP) {
            Transport::Tcp
        } else if self.flag(KIND_UDP) {
            Transport::Udp
        } else {
            return None;
        };
        Some(Kind {
            transport,
            mptcp: self.flag(KIND_MPTCP),
            family: if self.flag(FAMILY_V6) {
                Family::V6
            } else {
                Family::V4
            },
        })
    }

    pub fn with_kind(self, kind: Option<Kind>) -> FdState {
        let mut bits = self.0 & !KIND_BITS;
        if let Some(k) = kind {
            bits |= match k.transport {
                Transport::Tcp => KIND_TCP,
                Transport::Udp => KIND_UDP,
            };
            if k.mptcp {
                bits |= KIND_MPTCP;
            }
            if k.family == Family::V6 {
                bits |= FAMILY_V6;
            }
        }
        FdState(bits)
    }

    /// The listener's options were applied at listen(): accepted sockets inherit them.
    pub fn listen_applied(self) -> bool {
        self.flag(LISTEN_APPLIED)
    }

    pub fn with_listen_applied(self, on: bool) -> FdState {
        self.set_flag(LISTEN_APPLIED, on)
    }

    /// sockwrap made this socket MPTCP (so it may make it TCP again).
    pub fn made_mptcp(self) -> bool {
        self.flag(MADE_MPTCP)
    }

    pub fn with_made_mptcp(self, on: bool) -> FdState {
        self.set_flag(MADE_MPTCP, on)
    }

    /// Made plain TCP because the program set an option MPTCP rejects: stays TCP.
    pub fn pinned_tcp(self) -> bool {
        self.flag(PINNED_TCP)
    }

    pub fn with_pinned_tcp(self, on: bool) -> FdState {
        self.set_flag(PINNED_TCP, on)
    }

    /// An MPTCP non-blocking connect whose outcome (MPTCP or fallback) is still to be
    /// logged, when the program asks for SO_ERROR.
    pub fn mptcp_pending(self) -> bool {
        self.flag(MPTCP_PENDING)
    }

    pub fn with_mptcp_pending(self, on: bool) -> FdState {
        self.set_flag(MPTCP_PENDING, on)
    }

    /// sockwrap redirected this socket's connect (`getpeername` may answer for it).
    pub fn redirected(self) -> bool {
        self.flag(REDIRECTED)
    }

    pub fn with_redirected(self, on: bool) -> FdState {
        self.set_flag(REDIRECTED, on)
    }

    /// What survives a new decision on the same socket: how it was made.
    pub fn origin(self) -> FdState {
        FdState(self.0 & (MADE_MPTCP | PINNED_TCP | KIND_BITS))
    }
}

/// TCP (MPTCP counted as TCP, with `true`) or UDP, from a socket's type (without the
/// SOCK_NONBLOCK/SOCK_CLOEXEC flags) and protocol as `socket()` takes them (0: the type's
/// default) or the kernel reports them. Anything else: None.
pub fn transport_of(ty: i32, protocol: i32) -> Option<(Transport, bool)> {
    match (ty, protocol) {
        (libc::SOCK_STREAM, 0 | libc::IPPROTO_TCP) => Some((Transport::Tcp, false)),
        (libc::SOCK_STREAM, sys::IPPROTO_MPTCP) => Some((Transport::Tcp, true)),
        (libc::SOCK_DGRAM, 0 | libc::IPPROTO_UDP) => Some((Transport::Udp, false)),
        _ => None,
    }
}

/// TCP or UDP, asked of the kernel (the descriptor may come from anywhere: inherited,
/// received, made with a raw system call), and whether it is MPTCP. Anything else: None.
pub fn kernel_kind(fd: i32) -> Option<(Transport, bool)> {
    let ty = sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE).ok()?;
    let proto = sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PROTOCOL).ok()?;
    transport_of(ty, proto)
}

struct Entry(AtomicU64);

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Entry = Entry(AtomicU64::new(0));
static TABLE: [Entry; SIZE] = [EMPTY; SIZE];

fn entry(fd: i32) -> Option<&'static Entry> {
    usize::try_from(fd).ok().and_then(|i| TABLE.get(i))
}

/// The recorded state, if any.
pub fn get(fd: i32) -> Option<FdState> {
    let v = entry(fd)?.0.load(Relaxed);
    (v != 0).then_some(FdState(v))
}

pub fn set(fd: i32, s: FdState) {
    if let Some(e) = entry(fd) {
        e.0.store(s.0, Relaxed);
    }
}

pub fn reset(fd: i32) {
    set(fd, FdState::default());
}

/// Changes an entry (an empty one if nothing is recorded).
pub fn update(fd: i32, f: impl FnOnce(FdState) -> FdState) {
    if let Some(e) = entry(fd) {
        e.0.store(f(FdState(e.0.load(Relaxed))).0, Relaxed);
    }
}

/// `new` now refers to the same socket as `old`.
pub fn copy(old: i32, new: i32) {
    set(new, get(old).unwrap_or_default());
}

/// Clears the entries of a closed range of descriptors.
pub fn reset_range(first: u32, last: u32) {
    let last = (last as usize).min(SIZE - 1);
    for e in TABLE.iter().take(last + 1).skip(first as usize) {
        if e.0.load(Relaxed) != 0 {
            e.0.store(0, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_independent() {
        let k = Kind {
            transport: Transport::Tcp,
            mptcp: true,
            family: Family::V6,
        };
        let s = FdState::seen(Some(k))
            .with_locked(0x8000_0001)
            .with_listen_applied(true)
            .with_made_mptcp(true);
        assert_eq!(s.kind(), Some(k));
        assert_eq!(s.locked(), 0x8000_0001);
        assert!(s.listen_applied() && s.made_mptcp() && !s.pinned_tcp());
        let s = s.with_locked(0).with_kind(None).with_mptcp_pending(true);
        assert_eq!(s.kind(), None);
        assert!(s.listen_applied() && s.mptcp_pending());
        assert_eq!(s.origin(), FdState(MADE_MPTCP));
        assert_ne!(FdState::seen(None), FdState::default());
    }
}
