//! Per-descriptor state: which options sockwrap locked on the socket behind a descriptor.
//!
//! A fixed table indexed by fd (no allocation, no locks: two atomics per entry). Each entry
//! records the socket's inode when it was locked; a lock is honoured only if the descriptor
//! still refers to that inode, so a closed and reused number (through close, close_range,
//! a raw system call, anything we do not see) never inherits a lock. `socket`, `accept` and
//! `dup*` reset or copy entries as they create descriptors. Descriptors above the table
//! (65536) get no locks: sockwrap's options are still applied, but the program can change them.

use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

pub const SIZE: usize = 65536;

pub struct Entry {
    /// Bits 0..31: locked option slots. Bit 32: options were applied at listen (an accepted
    /// socket inherits them). Bit 33: family is IPv6.
    info: AtomicU64,
    ino: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Entry = Entry {
    info: AtomicU64::new(0),
    ino: AtomicU64::new(0),
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

fn entry(fd: i32) -> Option<&'static Entry> {
    usize::try_from(fd).ok().and_then(|i| TABLE.get(i))
}

pub fn reset(fd: i32) {
    if let Some(e) = entry(fd) {
        e.info.store(0, Relaxed);
        e.ino.store(0, Relaxed);
    }
}

pub fn set(fd: i32, info: u64, ino: u64) {
    if let Some(e) = entry(fd) {
        e.ino.store(ino, Relaxed);
        e.info.store(info, Relaxed);
    }
}

/// The recorded info and inode, if any.
pub fn get(fd: i32) -> Option<(u64, u64)> {
    let e = entry(fd)?;
    let info = e.info.load(Relaxed);
    if info == 0 {
        return None;
    }
    Some((info, e.ino.load(Relaxed)))
}

/// `new` now refers to the same socket as `old`.
pub fn copy(old: i32, new: i32) {
    match get(old) {
        Some((info, ino)) => set(new, info, ino),
        None => reset(new),
    }
}

/// Sets or clears flag bits of an existing entry (creating one with no inode if needed).
pub fn update_bits(fd: i32, set_bits: u64, clear_bits: u64) {
    if let Some(e) = entry(fd) {
        let info = e.info.load(Relaxed);
        e.info.store((info | set_bits) & !clear_bits, Relaxed);
    }
}
