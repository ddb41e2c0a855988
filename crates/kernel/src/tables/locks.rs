//! Locks: which kernel options the setsockopt program guards ([`lockable`]), and whether
//! a TCP socket's locks can be found again from its own addresses ([`socket_locks`]).

use super::{DKey, KPlan, STAGE_ACCEPT_FULL};
use crate::abi::T_TCP;
use sockwrap_policy::catalog::Opt;
use sockwrap_policy::{Stage, Variant};
use std::collections::HashMap;

/// The slot each kernel option a program may set belongs to: every catalog option's
/// kernel options and their `same_as` aliases.
pub(super) fn lockable() -> Vec<((i32, i32), u32)> {
    let mut v = Vec::new();
    for o in Opt::ALL {
        let spec = o.spec();
        for ko in spec.ops {
            v.push(((ko.level, ko.name), o as u32));
        }
        for &(l, n) in spec.same_as {
            v.push(((l, n), o as u32));
        }
    }
    v.sort();
    v.dedup_by_key(|(k, _)| *k);
    v
}

/// The entries of [`lockable`] whose slot some plan locks: the setsockopt program passes
/// every other option on after one map lookup.
pub(super) fn lockable_in(plans: &[KPlan]) -> Vec<((i32, i32), u32)> {
    let locked = plans.iter().fold(0, |m, p| m | p.lock);
    lockable()
        .into_iter()
        .filter(|(_, slot)| locked & (1u32 << (slot & 31)) != 0)
        .collect()
}

/// Whether every TCP socket's locks follow from its own addresses, so that TCP sockets need
/// no storage (`CFG_SOCKET_LOCKS`, sockwrap.bpf.c `locks_from_socket`): a listener's locks
/// are those of its listen plan, and for every peer and local port class, what an accepted
/// socket is locked for (the listen plan's locks, which the listener passes on, and the
/// accept plan's) equals what a client connected to that peer is locked for (the connect
/// plan's), so that the setsockopt program need not know which of the two a socket is.
/// Only for policies without program rules and actions (the caller checks), where the
/// decision depends on nothing else. True for role-blind policies, such as flags.
/// `ipcs` are the network classes that have an address; `n_rpc`, `n_lpc` the numbers of
/// remote and local port classes.
pub(super) fn socket_locks(
    plans: &[KPlan],
    decisions: &[(DKey, u32)],
    ipcs: &[u32],
    n_rpc: usize,
    n_lpc: usize,
) -> bool {
    let tcp = T_TCP;
    let locks: HashMap<DKey, u32> = decisions
        .iter()
        .filter(|(k, _)| k.transport == tcp)
        .map(|(k, i)| (*k, plans.get(*i as usize).map_or(0, |p| p.lock)))
        .collect();
    let lock = |k: DKey| locks.get(&k).copied().unwrap_or(0);
    let key = |stage: u8, variant: Variant, ipc, rpc, lpc| DKey {
        ipc,
        prog: 0,
        rpc,
        lpc,
        transport: tcp,
        stage,
        variant: variant as u8,
        pad: 0,
    };
    for v in [Variant::V4, Variant::V6, Variant::V6Dual] {
        let listener = if v == Variant::V4 {
            Variant::V4
        } else {
            Variant::V6Dual
        };
        for &ipc in ipcs {
            for rpc in 0..n_rpc as u16 {
                let client = lock(key(Stage::Connect as u8, v, ipc, rpc, 0));
                for lpc in 0..n_lpc as u16 {
                    let listen = lock(key(Stage::Listen as u8, listener, 0, 0, lpc));
                    // Both accept stages carry the decision's whole lock.
                    let accept = lock(key(Stage::Accept as u8, v, ipc, rpc, lpc))
                        | lock(key(STAGE_ACCEPT_FULL, v, ipc, rpc, lpc));
                    if listen | accept != client {
                        return false;
                    }
                }
            }
        }
    }
    true
}
