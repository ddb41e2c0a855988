//! Per-descriptor state: which options sockwrap locked on the socket behind a descriptor.
//!
//! A fixed table indexed by fd (no allocation, no locks: atomics only). `socket` and
//! `accept` reset an entry when they hand out a number, `close`, `close_range` and
//! `closefrom` clear entries, and `dup*` copy them, so a reused number never inherits a
//! lock. (An fstat-per-connection inode check did the same job at twice the cost; the
//! remaining gap is a socket closed by a raw system call and its number reused by a
//! non-socket, documented in the README.) Descriptors above the table
//! (65536) get no locks: sockwrap's options are still applied, but the program can change them.

use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

pub const SIZE: usize = 65536;

/// Bits 0..31: locked option slots; the flags below above them. 0 = nothing known.
pub struct Entry {
    info: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Entry = Entry {
    info: AtomicU64::new(0),
};
static TABLE: [Entry; SIZE] = [EMPTY; SIZE];

pub const LISTEN_APPLIED: u64 = 1 << 32;
/// The socket was looked at and needs no locks (keeps `info` non-zero so it is not looked
/// at again).
pub const CHECKED: u64 = 1 << 34;
/// sockwrap made this socket MPTCP (so it may make it TCP again).
pub const MADE_MPTCP: u64 = 1 << 35;
/// Made plain TCP because the program set an option MPTCP rejects: stays TCP.
pub const PINNED_TCP: u64 = 1 << 36;
/// An MPTCP non-blocking connect whose outcome (MPTCP or fallback) is still to be logged,
/// when the program asks for SO_ERROR.
pub const MPTCP_PENDING: u64 = 1 << 37;
/// What the socket is, recorded by the hook that made it (socket, accept) so connect and
/// accept need not ask the kernel. Bit 33 (FAMILY_V6) goes with them.
pub const KIND_TCP: u64 = 1 << 38;
pub const KIND_UDP: u64 = 1 << 39;
pub const KIND_MPTCP: u64 = 1 << 40;
pub const FAMILY_V6: u64 = 1 << 33;
pub const KIND_MASK: u64 = KIND_TCP | KIND_UDP | KIND_MPTCP | FAMILY_V6;

fn entry(fd: i32) -> Option<&'static Entry> {
    usize::try_from(fd).ok().and_then(|i| TABLE.get(i))
}

pub fn reset(fd: i32) {
    if let Some(e) = entry(fd) {
        e.info.store(0, Relaxed);
    }
}

pub fn set(fd: i32, info: u64) {
    if let Some(e) = entry(fd) {
        e.info.store(info, Relaxed);
    }
}

/// The recorded info, if any.
pub fn get(fd: i32) -> Option<u64> {
    let info = entry(fd)?.info.load(Relaxed);
    (info != 0).then_some(info)
}

/// `new` now refers to the same socket as `old`.
pub fn copy(old: i32, new: i32) {
    match get(old) {
        Some(info) => set(new, info),
        None => reset(new),
    }
}

/// Sets or clears flag bits of an existing entry (creating one if needed).
pub fn update_bits(fd: i32, set_bits: u64, clear_bits: u64) {
    if let Some(e) = entry(fd) {
        let info = e.info.load(Relaxed);
        e.info.store((info | set_bits) & !clear_bits, Relaxed);
    }
}

/// Clears the entries of a closed range of descriptors.
pub fn reset_range(first: u32, last: u32) {
    let last = (last as usize).min(SIZE - 1);
    let mut i = first as usize;
    while i <= last {
        if TABLE[i].info.load(Relaxed) != 0 {
            TABLE[i].info.store(0, Relaxed);
        }
        i += 1;
    }
}
