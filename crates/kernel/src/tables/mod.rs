//! The policy as BPF map contents: every decision it can take, enumerated once when
//! `sockwrap run --kernel` starts, so that the programs only look up.
//!
//! A rule matches on the remote network, the remote and local port ranges, the role, the
//! transport and the program name. Each of those is turned into a small class number that
//! the programs compute from the socket:
//! - remote network: one class per distinct CIDR of the rules, found by longest-prefix match
//!   (an LPM trie). The CIDRs containing an address are exactly those containing its longest
//!   matching CIDR, so the class decides every rule's remote condition; class 0 is "in none";
//! - ports: the rules' ranges cut 0..=65535 into intervals, one class per interval (an array
//!   indexed by port);
//! - program: one class per distinct name (first 15 bytes: all the kernel keeps of a task's
//!   name, `comm`), class 0 for any other program;
//! - role and transport follow from the hook and the socket.
//!
//! For every combination the policy itself decides ([`Policy::decide`] on a representative
//! socket of the class), and the decision's [`Plan`](sockwrap_policy::Plan) per stage and
//! IP variant is stored: the programs apply the very entries the library would. Connect
//! actions are enumerated the same way ([`Policy::connect_actions`] per class): the `deny`
//! and `redirect` a connect, or an unconnected sendto, to a destination of the class gets.
//!
//! [`Tables::build_with`] in steps: the classes (`classes.rs`), the enumeration of every
//! class's decisions (`enumerate.rs`), the flags the programs read, the lockable options
//! (`locks.rs`). What `--kernel` cannot carry out the caller refuses before ([`refusals()`]).
//! Pure: the one lookup of the system (an interface's index) is passed in.

mod classes;
mod enumerate;
mod locks;
mod refusals;

use crate::abi::{T_TCP, T_UDP};
use crate::Error;
use classes::Classes;
use enumerate::Enumeration;
use sockwrap_policy::{OnError, Policy, Stage, Transport, Variant};

// The structs and constants shared with the programs (abi.h), here as well for callers
// that know them from this module.
pub use crate::abi::{
    DKey, KAction, KPlan, ACT_REDIRECT, ACT_SHOW_TARGET, ACT_TARGET_V4, CFG_ACTIONS, CFG_PROGRAMS,
    CFG_SOCKET_LOCKS, CFG_STRICT, C_APPLIED_BASE, C_DENIED, C_LOCKED, C_REDIRECTED, MAX_OPS,
    N_COUNTERS, STAGE_ACCEPT_FULL,
};
pub use classes::comm_key;
pub use refusals::{refusals, refused_opt};

/// The most decision keys a policy may need (the product of its classes): beyond this the
/// kernel backend refuses it rather than use much kernel memory.
pub const MAX_DECISIONS: usize = 1 << 18;

/// One remote-network class: the CIDR (v4-mapped form for IPv4) as an LPM key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Network {
    pub prefix_len: u32,
    pub addr: [u8; 16],
    pub class: u32,
}

/// Everything the maps hold.
#[derive(Clone, Debug)]
pub struct Tables {
    pub flags: u32,
    pub plans: Vec<KPlan>,
    pub decisions: Vec<(DKey, u32)>,
    /// Connect actions per (program, transport, network, remote port) class, stage connect.
    pub actions: Vec<(DKey, KAction)>,
    /// Some action redirects: the getpeername and recvmsg programs are attached.
    pub redirects: bool,
    pub networks: Vec<Network>,
    /// Port → class, for remote and local ports (all 0 when no rule names a port).
    pub rport_class: Vec<u16>,
    pub lport_class: Vec<u16>,
    pub programs: Vec<([u8; 16], u32)>,
    /// (level, name) → the slot a program's own setsockopt of it touches.
    pub lockable: Vec<((i32, i32), u32)>,
    /// Program names longer than the kernel's 15 bytes, as (name, what the kernel sees).
    pub truncated_programs: Vec<(String, String)>,
}

fn transport_code(t: Transport) -> u8 {
    match t {
        Transport::Tcp => T_TCP,
        Transport::Udp => T_UDP,
    }
}

/// The key of an action entry (`action_for` in sockwrap.bpf.c): the classes of the
/// destination and program, stage connect, no variant or local port.
fn action_key(prog: u32, transport: u8, ipc: u32, rpc: u16) -> DKey {
    DKey {
        ipc,
        prog,
        rpc,
        lpc: 0,
        transport,
        stage: Stage::Connect as u8,
        variant: 0,
        pad: 0,
    }
}

impl Tables {
    /// Every decision of `policy`, as map contents; interface names are resolved in
    /// sockwrap's network namespace ([`crate::sys::ifindex`]).
    pub fn build(policy: &Policy) -> Result<Tables, Error> {
        Tables::build_with(policy, &crate::sys::ifindex)
    }

    /// Every decision of `policy`, as map contents, with `ifindex` giving the index of an
    /// interface name (`bind-interface`: the programs bind by index). Pure: the same
    /// policy and lookup give the same tables.
    pub fn build_with(
        policy: &Policy,
        ifindex: &dyn Fn(&str) -> Option<u32>,
    ) -> Result<Tables, Error> {
        let classes = Classes::of(policy)?;
        let mut e = Enumeration::new(ifindex);
        for (prog, pol) in classes.programs.iter().enumerate() {
            e.program(prog as u32, pol, &classes)?;
        }
        if e.decisions.len() + e.actions.len() > MAX_DECISIONS {
            return Err(Error(format!(
                "the policy needs {} decisions in the kernel, more than {MAX_DECISIONS}; use the library, or fewer overlapping rules",
                e.decisions.len() + e.actions.len()
            )));
        }
        let flags = flags(policy, &classes, &e);
        Ok(Tables {
            flags,
            redirects: e.actions.iter().any(|(_, a)| a.flags & ACT_REDIRECT != 0),
            lockable: locks::lockable_in(&e.plans),
            plans: e.plans,
            decisions: e.decisions,
            actions: e.actions,
            networks: classes.networks,
            rport_class: classes.rports.class,
            lport_class: classes.lports.class,
            programs: classes.comms,
            truncated_programs: classes.truncated,
        })
    }

    /// The plan the programs would apply for `key`, if any (for `explain --kernel` and tests).
    pub fn plan(&self, key: &DKey) -> Option<&KPlan> {
        let (_, i) = self.decisions.iter().find(|(k, _)| k == key)?;
        self.plans.get(*i as usize)
    }

    /// The `deny` or `redirect` a connect (or unconnected sendto) with `key` gets, if any:
    /// the programs look it up by the key's classes at stage connect.
    pub fn action(&self, key: &DKey) -> Option<&KAction> {
        let k = action_key(key.prog, key.transport, key.ipc, key.rpc);
        self.actions.iter().find(|(x, _)| *x == k).map(|(_, a)| a)
    }

    /// The key the programs compute for a socket of `transport` at `stage`, as `connect`,
    /// `sendmsg`, `bind`, `listen` or `accept` would see it.
    pub fn key(
        &self,
        program: Option<&str>,
        transport: Transport,
        stage: Stage,
        variant: Variant,
        remote: Option<(u128, u16)>,
        local_port: Option<u16>,
    ) -> DKey {
        let prog = program
            .and_then(|p| {
                let k = comm_key(p);
                self.programs.iter().find(|(n, _)| *n == k).map(|(_, c)| *c)
            })
            .unwrap_or(0);
        let ipc = remote
            .and_then(|(ip, _)| {
                self.networks
                    .iter()
                    .filter(|n| {
                        let mask = if n.prefix_len == 0 {
                            0
                        } else {
                            u128::MAX << (128 - n.prefix_len)
                        };
                        ip & mask == u128::from_be_bytes(n.addr)
                    })
                    .max_by_key(|n| n.prefix_len)
                    .map(|n| n.class)
            })
            .unwrap_or(0);
        DKey {
            ipc,
            prog,
            rpc: remote
                .map(|(_, p)| self.rport_class[p as usize])
                .unwrap_or(0),
            lpc: local_port
                .map(|p| self.lport_class[p as usize])
                .unwrap_or(0),
            transport: transport_code(transport),
            stage: stage as u8,
            variant: variant as u8,
            pad: 0,
        }
    }
}

/// `config.flags`: what the programs must look up beyond the plan.
fn flags(policy: &Policy, classes: &Classes, e: &Enumeration) -> u32 {
    let mut flags = 0;
    if !classes.comms.is_empty() {
        flags |= CFG_PROGRAMS;
    }
    if policy.on_error == OnError::Fail {
        flags |= CFG_STRICT;
    }
    if !e.actions.is_empty() {
        flags |= CFG_ACTIONS;
    }
    if classes.comms.is_empty()
        && e.actions.is_empty()
        && locks::socket_locks(
            &e.plans,
            &e.decisions,
            &classes.network_classes_with_address(),
            classes.rports.reps.len(),
            classes.lports.reps.len(),
        )
    {
        flags |= CFG_SOCKET_LOCKS;
    }
    flags
}

#[cfg(test)]
mod agreement;
#[cfg(test)]
mod tests;
