//! The names a program resolved through libc, and the addresses they gave: so that a rule
//! on `match.host` can know that 10.1.2.3 is `db.internal.example`, and so that the trace
//! can say so.
//!
//! Bounded, per process: [`NAMES`] names and [`ADDRS`] addresses, each a ring (the oldest
//! is forgotten first). An address that several names gave belongs to the name that gave
//! it last. The table is allocated by the first resolution recorded, so a program that
//! resolves nothing (or a policy without host rules and no trace) pays nothing for it.
//!
//! One lock, taken only by a resolution (after libc's answer) and by a connect that needs
//! a name; it is a spin lock that gives up after a bounded wait (a signal handler that
//! connects while its own thread records a name must not deadlock: it then sees no name).

#[allow(unused_imports)]
use crate::prelude::*;
use crate::sys::Spin;
use core::sync::atomic::{AtomicBool, Ordering};

/// Names remembered (the last ones resolved).
pub const NAMES: usize = 64;
/// Addresses remembered (the last ones given).
pub const ADDRS: usize = 512;
/// A DNS name is at most 253 bytes.
pub const NAME_MAX: usize = 253;

struct Name {
    len: u8,
    /// Bumped when the slot gets another name: addresses of the old one stop pointing here.
    generation: u32,
    bytes: [u8; NAME_MAX],
}

#[derive(Clone, Copy)]
struct Addr {
    ip: u128,
    slot: u16,
    generation: u32,
}

struct Table {
    names: [Name; NAMES],
    next_name: usize,
    addrs: [Addr; ADDRS],
    used_addrs: usize,
    next_addr: usize,
}

/// A name copied out of the table, for the caller to borrow as `&str`.
pub struct NameBuf {
    len: usize,
    bytes: [u8; NAME_MAX],
}

impl NameBuf {
    pub fn new() -> NameBuf {
        NameBuf {
            len: 0,
            bytes: [0; NAME_MAX],
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        core::str::from_utf8(&self.bytes[..self.len]).ok()
    }
}

static TABLE: Spin<Option<Box<Table>>> = Spin::new(None);
/// Set once a name was recorded: a connect in a process that resolved nothing looks no
/// further.
static ANY: AtomicBool = AtomicBool::new(false);

/// In a forked child: the table's lock is free (the child has one thread).
pub fn after_fork_child() {
    TABLE.unlock_after_fork();
}

/// Remembers that `name` gave `ips` ([`sockwrap_policy::rules::ip_key`] form).
pub fn record(name: &[u8], ips: &[u128]) {
    if name.is_empty() || name.len() > NAME_MAX || ips.is_empty() {
        return;
    }
    // A numeric name ("10.0.0.1") is not a host name.
    if core::str::from_utf8(name).is_ok_and(|s| s.parse::<core::net::IpAddr>().is_ok()) {
        return;
    }
    TABLE.with(|t| {
        let t = t.get_or_insert_with(|| {
            Box::new(Table {
                names: core::array::from_fn(|_| Name {
                    len: 0,
                    generation: 0,
                    bytes: [0; NAME_MAX],
                }),
                next_name: 0,
                addrs: [Addr {
                    ip: 0,
                    slot: 0,
                    generation: 0,
                }; ADDRS],
                used_addrs: 0,
                next_addr: 0,
            })
        });
        let slot = match t.names.iter().position(|n| {
            n.len as usize == name.len() && n.bytes[..name.len()].eq_ignore_ascii_case(name)
        }) {
            Some(s) => s,
            None => {
                let s = t.next_name;
                t.next_name = (s + 1) % NAMES;
                let n = &mut t.names[s];
                n.generation = n.generation.wrapping_add(1);
                n.len = name.len() as u8;
                n.bytes[..name.len()].copy_from_slice(name);
                s
            }
        };
        let generation = t.names[slot].generation;
        for &ip in ips {
            let entry = Addr {
                ip,
                slot: slot as u16,
                generation,
            };
            match t.addrs[..t.used_addrs].iter().position(|a| a.ip == ip) {
                Some(i) => t.addrs[i] = entry,
                None => {
                    let i = t.next_addr;
                    t.addrs[i] = entry;
                    t.next_addr = (i + 1) % ADDRS;
                    t.used_addrs = (t.used_addrs + 1).min(ADDRS);
                }
            }
        }
    });
    ANY.store(true, Ordering::Release);
}

/// The name `ip` came from, copied into `buf`.
pub fn lookup(ip: u128, buf: &mut NameBuf) -> Option<&str> {
    if !ANY.load(Ordering::Acquire) {
        return None;
    }
    let len = TABLE.with(|t| {
        let t = t.as_ref()?;
        let a = t.addrs[..t.used_addrs].iter().find(|a| a.ip == ip)?;
        let n = &t.names[a.slot as usize];
        if n.generation != a.generation {
            return None; // the name was forgotten
        }
        let len = n.len as usize;
        buf.bytes[..len].copy_from_slice(&n.bytes[..len]);
        Some(len)
    })??;
    buf.len = len;
    buf.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_by_address_bounded_and_last_wins() {
        let mut b = NameBuf::new();
        record(b"db.test", &[1, 2]);
        assert_eq!(lookup(1, &mut b), Some("db.test"));
        record(b"cdn.test", &[2]);
        assert_eq!(lookup(2, &mut b), Some("cdn.test"));
        assert_eq!(lookup(1, &mut b), Some("db.test"));
        record(b"10.0.0.1", &[3]);
        assert_eq!(lookup(3, &mut b), None, "numeric names are not names");
        // More names than the table holds: the oldest are forgotten, never misnamed.
        for i in 0..(NAMES as u128 + 5) {
            let n = format!("n{i}.test");
            record(n.as_bytes(), &[1000 + i]);
        }
        assert_eq!(lookup(1, &mut b), None);
        assert_eq!(lookup(1000, &mut b), None);
        let last = NAMES as u128 + 4;
        assert_eq!(
            lookup(1000 + last, &mut b),
            Some(format!("n{last}.test").as_str())
        );
        for i in 0..(ADDRS as u128 * 2) {
            record(b"many.test", &[5000 + i]);
        }
        assert_eq!(lookup(5000, &mut b), None);
        assert_eq!(
            lookup(5000 + 2 * ADDRS as u128 - 1, &mut b),
            Some("many.test")
        );
    }
}
