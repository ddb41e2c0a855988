//! The Rust mirror of `src/bpf/abi.h`: every constant and struct that the loader and the
//! programs of `sockwrap.bpf.c` share, written here once for the Rust side.
//!
//! `abi.h` is the definition (libbpf-bootstrap's pairing of `X.bpf.c` with `X.h`). The test
//! in `tests.rs` reads it (with `header.rs`) and compares every constant's value and every
//! struct's size and field offsets with this module, so a change on one side alone fails
//! `cargo test`; `abi.h` holds `_Static_assert`s for what C can check itself.
//!
//! Used by [`crate::tables`] (which fills these structs) and [`crate::programs`] (which
//! writes them into the maps). Values that are the policy's (stages, variants, the bind
//! entry's pseudo level) are taken from the policy crate, so the test compares the header
//! with the policy itself.

use sockwrap_policy::catalog::N_OPTS as CATALOG_OPTS;
use sockwrap_policy::plan::{PlanOp, MAX_PLAN_OPS};
use sockwrap_policy::{Stage, Variant};

#[cfg(test)]
pub(crate) mod header;
#[cfg(test)]
mod tests;
pub mod trace;

/// Each constant once, and (for the test) the list of them with the name `abi.h` gives it.
macro_rules! constants {
    ($( $(#[$doc:meta])* $c:literal => $name:ident: $t:ty = $v:expr; )*) => {
        $( $(#[$doc])* pub const $name: $t = $v; )*
        /// (name in abi.h, value) of every constant of this module.
        #[cfg(test)]
        pub(crate) const CONSTANTS: &[(&str, i128)] = &[$( ($c, $name as i128) ),*];
    };
}

constants! {
    /// Entries per kernel plan (a power of two, so that the programs bound an index with a
    /// mask).
    "MAX_OPS" => MAX_OPS: usize = 32;
    "N_COUNTERS" => N_COUNTERS: u32 = 32;
    /// The catalog's option slots: counters 0..N_OPTS count failures per slot.
    "N_OPTS" => N_OPTS: usize = CATALOG_OPTS;
    "LEVEL_BIND" => LEVEL_BIND: i32 = sockwrap_policy::plan::LEVEL_BIND;
    "OP_EXTRA" => OP_EXTRA: u8 = sockwrap_policy::plan::OP_EXTRA;
    "AF_INET" => AF_INET: i32 = sockwrap_policy::plan::AF_INET;
    "AF_INET6" => AF_INET6: i32 = sockwrap_policy::plan::AF_INET6;
    "SOL_SOCKET_" => SOL_SOCKET: i32 = libc::SOL_SOCKET;
    "SO_PRIORITY_" => SO_PRIORITY: i32 = libc::SO_PRIORITY;
    "SO_MARK_" => SO_MARK: i32 = libc::SO_MARK;
    "SO_BINDTOIFINDEX_" => SO_BINDTOIFINDEX: i32 = libc::SO_BINDTOIFINDEX;
    "STAGE_UDP_CREATE" => STAGE_UDP_CREATE: u8 = Stage::UdpCreate as u8;
    "STAGE_BIND" => STAGE_BIND: u8 = Stage::Bind as u8;
    "STAGE_CONNECT" => STAGE_CONNECT: u8 = Stage::Connect as u8;
    "STAGE_LISTEN" => STAGE_LISTEN: u8 = Stage::Listen as u8;
    "STAGE_ACCEPT" => STAGE_ACCEPT: u8 = Stage::Accept as u8;
    /// The key stage of an accepted socket whose listener got no listen plan: the whole
    /// accept plan, nothing assumed inherited. `Stage::Accept` keys hold the plan without
    /// the options the listener passed on.
    "STAGE_ACCEPT_FULL" => STAGE_ACCEPT_FULL: u8 = 5;
    "VAR_V4" => VAR_V4: u8 = Variant::V4 as u8;
    "VAR_V6" => VAR_V6: u8 = Variant::V6 as u8;
    "VAR_V6DUAL" => VAR_V6DUAL: u8 = Variant::V6Dual as u8;
    /// `dkey.transport`.
    "T_TCP" => T_TCP: u8 = 0;
    "T_UDP" => T_UDP: u8 = 1;
    /// `config.flags`: some rule names a program (look the comm up).
    "CFG_PROGRAMS" => CFG_PROGRAMS: u32 = 1;
    /// `on_error = fail`: a failed option fails the call.
    "CFG_STRICT" => CFG_STRICT: u32 = 2;
    /// Some rule denies or redirects: the connect and sendmsg programs look up `actions`.
    "CFG_ACTIONS" => CFG_ACTIONS: u32 = 4;
    /// TCP sockets get no storage: their locks follow from their own addresses
    /// (`crate::tables`' `socket_locks`).
    "CFG_SOCKET_LOCKS" => CFG_SOCKET_LOCKS: u32 = 8;
    /// Counters (the `counters` map): 0..N_OPTS failures per option slot, then plans
    /// applied per stage, then setsockopt calls a lock skipped.
    "C_APPLIED_BASE" => C_APPLIED_BASE: u32 = 24;
    "C_LOCKED" => C_LOCKED: u32 = 29;
    /// Connects and datagrams denied, and redirected.
    "C_DENIED" => C_DENIED: u32 = 30;
    "C_REDIRECTED" => C_REDIRECTED: u32 = 31;
    /// `kaction.flags`.
    "ACT_REDIRECT" => ACT_REDIRECT: u32 = 1;
    "ACT_SHOW_TARGET" => ACT_SHOW_TARGET: u32 = 2;
    "ACT_TARGET_V4" => ACT_TARGET_V4: u32 = 4;
    /// Entries of the port class arrays (`rports`, `lports`), four ports each.
    "PORT_ENTRIES" => PORT_ENTRIES: usize = 16384;
}

// `count(op->opt & 31)` in the programs: a slot past C_APPLIED_BASE would count its failures
// as plans applied (abi.h asserts the same with the header's N_OPTS).
const _: () = assert!(N_OPTS <= C_APPLIED_BASE as usize);
const _: () = assert!(C_APPLIED_BASE + (STAGE_ACCEPT as u32) < C_LOCKED);
const _: () = assert!(C_REDIRECTED < N_COUNTERS);
const _: () = assert!(MAX_PLAN_OPS <= MAX_OPS && MAX_OPS.is_power_of_two());
const _: () = assert!(PORT_ENTRIES * 4 == 65536);

/// A plan as the programs read it (`struct kplan`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct KPlan {
    /// Slots to lock once set.
    pub lock: u32,
    /// Slots that have entries.
    pub slots: u32,
    pub len: u32,
    pub pad: u32,
    /// `struct kop` is the policy's [`PlanOp`], byte for byte.
    pub ops: [PlanOp; MAX_OPS],
}

impl KPlan {
    pub fn ops(&self) -> &[PlanOp] {
        &self.ops[..(self.len as usize).min(MAX_OPS)]
    }
}

/// A decision key (`struct dkey`): which socket, at which stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[repr(C)]
pub struct DKey {
    /// Remote network class (0: no rule network contains it, or no remote).
    pub ipc: u32,
    /// Program class (0: no rule names it).
    pub prog: u32,
    /// Remote and local port classes.
    pub rpc: u16,
    pub lpc: u16,
    pub transport: u8,
    pub stage: u8,
    pub variant: u8,
    pub pad: u8,
}

/// What a connect (or unconnected sendto) to a destination class gets besides options
/// (`struct kaction`): the winning `deny`, else the winning `redirect`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(C)]
pub struct KAction {
    /// The errno the call fails with (0: not denied).
    pub deny: u32,
    pub flags: u32,
    /// The redirect target, network order, v4-mapped for IPv4.
    pub ip6: [u8; 16],
    /// The redirect target's port, host order.
    pub port: u32,
    pub pad: u32,
}

impl KAction {
    /// The redirect target, if this action redirects.
    pub fn target(&self) -> Option<std::net::SocketAddr> {
        if self.flags & ACT_REDIRECT == 0 {
            return None;
        }
        let v6 = std::net::Ipv6Addr::from(self.ip6);
        let ip = match (self.flags & ACT_TARGET_V4 != 0, v6.to_ipv4_mapped()) {
            (true, Some(v4)) => std::net::IpAddr::V4(v4),
            _ => std::net::IpAddr::V6(v6),
        };
        Some(std::net::SocketAddr::new(ip, self.port as u16))
    }
}

/// `struct config`: the one entry of the `config` map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(C)]
pub struct Config {
    pub flags: u32,
    pub pad: u32,
}

/// `struct optkey`: a key of `lockable`, the (level, name) a program's setsockopt names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(C)]
pub struct OptKey {
    pub level: i32,
    pub name: i32,
}

/// `struct port_classes`: an entry of `rports` and `lports`, the classes of four ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(C)]
pub struct PortClasses {
    pub cls: [u16; 4],
}

/// `struct lpm_key`, the key of `networks`, is aya's `lpm_trie::Key<[u8; 16]>`: a prefix
/// length and the address.
pub type LpmKey = aya::maps::lpm_trie::Key<[u8; 16]>;

pub use pod::from_bytes;

// SAFETY (for each): plain #[repr(C)] integers and arrays of them, no padding bytes that
// the kernel could read as uninitialised (abi.h's _Static_asserts and tests.rs check the
// sizes), no pointers: any byte pattern is a valid value.
#[allow(unsafe_code)]
mod pod {
    use super::trace::Event;
    use super::*;

    /// A `T` read from the start of `b` (a ring buffer record, a map value), if `b` is
    /// long enough.
    pub fn from_bytes<T: aya::Pod>(b: &[u8]) -> Option<T> {
        if b.len() < std::mem::size_of::<T>() {
            return None;
        }
        // SAFETY: T is Pod (every bit pattern is a valid T) and `b` holds at least
        // size_of::<T>() bytes; read_unaligned needs no alignment.
        Some(unsafe { std::ptr::read_unaligned(b.as_ptr().cast::<T>()) })
    }

    // SAFETY: see above (struct event of trace.h, checked by trace.rs's test).
    unsafe impl aya::Pod for Event {}
    // SAFETY: see above.
    unsafe impl aya::Pod for KPlan {}
    // SAFETY: see above.
    unsafe impl aya::Pod for DKey {}
    // SAFETY: see above.
    unsafe impl aya::Pod for KAction {}
    // SAFETY: see above.
    unsafe impl aya::Pod for Config {}
    // SAFETY: see above.
    unsafe impl aya::Pod for OptKey {}
}
