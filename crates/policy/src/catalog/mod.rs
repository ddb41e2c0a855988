//! The catalog of socket options sockwrap knows, and every kernel fact about them.
//!
//! Each [`Opt`] is one *slot*: a thing a user can ask for by name (`dscp`, `keepalive.idle`,
//! `congestion`...). Its [`OptSpec`] holds, as data, the kernel options it becomes
//! ([`KernelOpt`]: level, option name, C name, the address family it applies to, how the
//! value is encoded, whether MPTCP sockets accept it), the socket kinds it means something
//! for, when it must be set, whether accepted sockets inherit it, and how its value is
//! spelled. Everything else is derived from that one table:
//! * [`kernel_ops`]: the exact `setsockopt` calls for a value (the [`crate::plan`] is built
//!   from them);
//! * [`slot_for_kernel_option`]: from a program's own `setsockopt(level, name)` back to the
//!   slot it touches (how locks work), a table computed at compile time;
//! * [`kernel_name`]: the C names in logs and traces;
//! * [`carried_options`]: what the library reads back and sets again when it changes a
//!   socket's protocol (MPTCP ↔ TCP).
//!
//! The enum and the table are written by one macro ([`catalog!`]), so they cannot drift
//! apart.
//!
//! This file is longer than the others (~700 lines) because it is the table: ~280 of its
//! lines are the one `catalog!` invocation, one row per option, and splitting the table
//! would split the one place where an option is described. The values and their parsing
//! are in `values`, the `setsockopt` calls a value becomes in `ops`. Linux constants are written here by hand, each next to its C name: this crate is
//! pure Rust and must not depend on libc's headers (the CLI and the kernel backend use it
//! too).

#[allow(unused_imports)]
use crate::prelude::*;
use core::fmt;

/// Linux socket-level constants used by the catalog (values from `<asm-generic/socket.h>`,
/// `<linux/in.h>`, `<linux/in6.h>`, `<linux/tcp.h>`; the same on every Linux architecture we
/// build for: x86_64 and aarch64).
pub mod k {
    pub const SOL_SOCKET: i32 = 1;
    pub const IPPROTO_IP: i32 = 0;
    pub const IPPROTO_IPV6: i32 = 41;
    pub const IPPROTO_TCP: i32 = 6;

    pub const SO_REUSEADDR: i32 = 2;
    pub const SO_SNDBUF: i32 = 7;
    pub const SO_RCVBUF: i32 = 8;
    pub const SO_KEEPALIVE: i32 = 9;
    pub const SO_OOBINLINE: i32 = 10;
    pub const SO_PRIORITY: i32 = 12;
    pub const SO_LINGER: i32 = 13;
    pub const SO_REUSEPORT: i32 = 15;
    pub const SO_RCVLOWAT: i32 = 18;
    pub const SO_BINDTODEVICE: i32 = 25;
    pub const SO_SNDBUFFORCE: i32 = 32;
    pub const SO_RCVBUFFORCE: i32 = 33;
    pub const SO_MARK: i32 = 36;
    pub const SO_MAX_PACING_RATE: i32 = 47;

    pub const IP_TOS: i32 = 1;
    pub const IP_TTL: i32 = 2;
    pub const IP_FREEBIND: i32 = 15;
    pub const IP_TRANSPARENT: i32 = 19;
    pub const IP_BIND_ADDRESS_NO_PORT: i32 = 24;

    pub const IPV6_UNICAST_HOPS: i32 = 16;
    pub const IPV6_V6ONLY: i32 = 26;
    pub const IPV6_TCLASS: i32 = 67;

    pub const TCP_NODELAY: i32 = 1;
    pub const TCP_MAXSEG: i32 = 2;
    pub const TCP_CORK: i32 = 3;
    pub const TCP_KEEPIDLE: i32 = 4;
    pub const TCP_KEEPINTVL: i32 = 5;
    pub const TCP_KEEPCNT: i32 = 6;
    pub const TCP_DEFER_ACCEPT: i32 = 9;
    pub const TCP_CONGESTION: i32 = 13;
    pub const TCP_USER_TIMEOUT: i32 = 18;
    pub const TCP_NOTSENT_LOWAT: i32 = 25;
    pub const TCP_FASTOPEN_CONNECT: i32 = 30;
}

/// Which sockets a kernel option is set on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpFamily {
    /// Every IP socket (SOL_SOCKET and TCP options).
    Any,
    /// An IPv4 header field: AF_INET sockets, and AF_INET6 sockets that carry or may carry
    /// IPv4 (v4-mapped peers, dual-stack listeners), where it is an extra whose refusal
    /// is not a failure.
    V4Header,
    /// AF_INET6 sockets only.
    V6,
}

/// How an option's value becomes `setsockopt`'s bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enc {
    /// A C `int`.
    Int,
    /// A `u32` (same four bytes as an int holding its bit pattern).
    U32,
    /// An `int` 0/1.
    Bool,
    /// A buffer size in an `int`; the kernel reports back twice what was set.
    BufSize,
    /// Text without a terminating NUL (TCP_CONGESTION).
    Str,
    /// Text with its terminating NUL counted in the length (SO_BINDTODEVICE).
    StrNul,
    /// `struct linger { int l_onoff; int l_linger; }`.
    Linger,
}

/// One kernel option: `setsockopt(fd, level, name, ...)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelOpt {
    pub level: i32,
    pub name: i32,
    /// C name, for logs and traces.
    pub cname: &'static str,
    pub family: OpFamily,
    pub enc: Enc,
    /// Whether an MPTCP socket accepts it (measured on 6.18: SO_MAX_PACING_RATE, IP_TTL,
    /// IPV6_TCLASS, IPV6_UNICAST_HOPS → EOPNOTSUPP; TCP_USER_TIMEOUT → ENOPROTOOPT).
    pub mptcp: bool,
}

const fn kopt(level: i32, name: i32, cname: &'static str, family: OpFamily, enc: Enc) -> KernelOpt {
    KernelOpt {
        level,
        name,
        cname,
        family,
        enc,
        mptcp: true,
    }
}

/// A kernel option that MPTCP sockets refuse on this kernel.
const fn not_mptcp(o: KernelOpt) -> KernelOpt {
    KernelOpt { mptcp: false, ..o }
}

const fn sol(name: i32, cname: &'static str, enc: Enc) -> KernelOpt {
    kopt(k::SOL_SOCKET, name, cname, OpFamily::Any, enc)
}

const fn tcp(name: i32, cname: &'static str, enc: Enc) -> KernelOpt {
    kopt(k::IPPROTO_TCP, name, cname, OpFamily::Any, enc)
}

/// Which transports an option means something for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applies {
    /// Any IP socket (TCP or UDP).
    Ip,
    /// TCP only: never set on a UDP or Unix socket.
    Tcp,
}

/// When an option has to be set to have its effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    /// Any time; applied at connect/listen (TCP) or creation (UDP).
    Any,
    /// Must be in place before the SYN leaves (or before listen): applied in connect/listen
    /// hooks ahead of the real call.
    BeforeConnect,
    /// Decided when the socket is created (the protocol itself): the socket hook creates it,
    /// and connect/listen swap it if the full decision differs.
    Create,
    /// Only meaningful before `bind()`: applied in the bind hook (and at listen for sockets
    /// the program never bound explicitly).
    BeforeBind,
}

/// The shape of an option's value, which decides how it is parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// DSCP name or 0..63, stored as the ToS byte.
    Dscp,
    Bool,
    /// Integer within `min..=max`; `unit` is a suffix family.
    Int {
        min: i64,
        max: i64,
        unit: Unit,
    },
    /// A short kernel name (congestion algorithm, interface): at most 15 bytes.
    Name,
    /// One or two IP addresses (at most one per family).
    Addrs,
    /// Seconds, or `off`.
    Linger,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    None,
    /// Bytes, with optional K/M/G (powers of 1024) suffix.
    Bytes,
    /// Milliseconds, with optional ms/s/m suffix.
    Millis,
    /// Seconds, with optional s/m/h suffix.
    Seconds,
    /// Bytes per second, with K/M/G suffixes (bytes) or kbit/mbit/gbit (bits, as in tc).
    Rate,
}

/// Everything sockwrap knows about one option slot.
pub struct OptSpec {
    /// Canonical user-facing name (CLI flag `--NAME`, TOML key, `SOCKWRAP_NAME`).
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    /// The kernel option(s), for docs and messages (every [`OptSpec::ops`] C name appears
    /// in it: checked by a test).
    pub kernel: &'static str,
    /// The `setsockopt` calls this option becomes, in the order they are made. Empty for the
    /// two options that are not socket options: the source address (a `bind`) and MPTCP
    /// (the protocol given to `socket`).
    pub ops: &'static [KernelOpt],
    /// Other kernel options that change the same thing (SO_SNDBUFFORCE for SO_SNDBUF): a
    /// lock on this option holds against them too.
    pub same_as: &'static [(i32, i32)],
    pub kind: Kind,
    pub applies: Applies,
    pub when: When,
    /// Whether an accepted socket inherits the value from its listener (measured on 6.18).
    /// Options that are not inherited are set again on each accepted socket.
    pub inherited_by_accept: bool,
    /// One line of help.
    pub help: &'static str,
}

const fn int(min: i64, max: i64, unit: Unit) -> Kind {
    Kind::Int { min, max, unit }
}

/// Writes the option enum and its table from one list: `Variant = "name" { fields }`.
/// The declaration order is the order in which options are applied.
macro_rules! catalog {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal { $($field:ident : $val:expr),* $(,)? } )*) => {
        /// One option slot, in apply order.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[repr(u8)]
        pub enum Opt {
            $( $(#[$doc])* $variant, )*
        }

        impl Opt {
            /// Every slot, in apply order (`Opt::ALL[o as usize] == o`).
            pub const ALL: [Opt; N_OPTS] = [$(Opt::$variant),*];
        }

        /// Number of option slots.
        pub const N_OPTS: usize = [$(Opt::$variant),*].len();

        /// The catalog, indexed by `Opt as usize` (a `const` so that the reverse look-up
        /// table below can be computed from it at compile time).
        pub(crate) const TABLE: [OptSpec; N_OPTS] = [$(OptSpec { name: $name, $($field: $val),* }),*];
    };
}

// The order matters: ToS comes before priority because on IPv4 setting `IP_TOS` also
// overwrites `SO_PRIORITY`; the device and source address come before anything that could
// make the kernel pick a route.
catalog! {
    /// DSCP / ToS byte.
    Tos = "dscp" {
        aliases: &["tos"],
        kernel: "IP_TOS, IPV6_TCLASS",
        ops: &[
            not_mptcp(kopt(k::IPPROTO_IPV6, k::IPV6_TCLASS, "IPV6_TCLASS", OpFamily::V6, Enc::Int)),
            kopt(k::IPPROTO_IP, k::IP_TOS, "IP_TOS", OpFamily::V4Header, Enc::Int),
        ],
        same_as: &[],
        kind: Kind::Dscp,
        applies: Applies::Ip,
        when: When::BeforeConnect,
        inherited_by_accept: true,
        help: "DSCP class: EF, AF11..AF43, CS0..CS7, LE, VA or 0..63 (`tos` takes the whole byte 0..255)",
    }
    Priority = "priority" {
        aliases: &[],
        kernel: "SO_PRIORITY",
        ops: &[sol(k::SO_PRIORITY, "SO_PRIORITY", Enc::Int)],
        same_as: &[],
        kind: int(0, i32::MAX as i64, Unit::None),
        applies: Applies::Ip,
        when: When::Any,
        inherited_by_accept: false,
        help: "queueing priority for the qdisc (0..6 without CAP_NET_ADMIN)",
    }
    Ttl = "ttl" {
        aliases: &["hop-limit"],
        kernel: "IP_TTL, IPV6_UNICAST_HOPS",
        ops: &[
            not_mptcp(kopt(k::IPPROTO_IPV6, k::IPV6_UNICAST_HOPS, "IPV6_UNICAST_HOPS", OpFamily::V6, Enc::Int)),
            not_mptcp(kopt(k::IPPROTO_IP, k::IP_TTL, "IP_TTL", OpFamily::V4Header, Enc::Int)),
        ],
        same_as: &[],
        kind: int(1, 255, Unit::None),
        applies: Applies::Ip,
        when: When::BeforeConnect,
        inherited_by_accept: true,
        help: "IPv4 TTL / IPv6 hop limit of outgoing packets (1..255)",
    }
    Mark = "mark" {
        aliases: &["fwmark"],
        kernel: "SO_MARK",
        ops: &[sol(k::SO_MARK, "SO_MARK", Enc::U32)],
        same_as: &[],
        kind: int(0, u32::MAX as i64, Unit::None),
        applies: Applies::Ip,
        when: When::BeforeConnect,
        inherited_by_accept: true,
        help: "firewall mark for policy routing and nftables (needs CAP_NET_ADMIN)",
    }
    BindInterface = "bind-interface" {
        aliases: &["interface", "device"],
        kernel: "SO_BINDTODEVICE",
        ops: &[sol(k::SO_BINDTODEVICE, "SO_BINDTODEVICE", Enc::StrNul)],
        same_as: &[],
        kind: Kind::Name,
        applies: Applies::Ip,
        when: When::BeforeConnect,
        inherited_by_accept: true,
        help: "send and receive only through this network interface",
    }
    /// Not a socket option: `bind(addr:0)` after IP_BIND_ADDRESS_NO_PORT.
    BindAddress = "bind-address" {
        aliases: &["source", "source-address"],
        kernel: "bind() with IP_BIND_ADDRESS_NO_PORT",
        ops: &[],
        same_as: &[],
        kind: Kind::Addrs,
        applies: Applies::Ip,
        when: When::BeforeConnect,
        inherited_by_accept: true,
        help: "source address for outgoing connections (one per family, comma-separated)",
    }
    ReuseAddr = "reuseaddr" {
        aliases: &[],
        kernel: "SO_REUSEADDR",
        ops: &[sol(k::SO_REUSEADDR, "SO_REUSEADDR", Enc::Bool)],
        same_as: &[],
        kind: Kind::Bool,
        applies: Applies::Ip,
        when: When::BeforeBind,
        inherited_by_accept: true,
        help: "servers: allow bind() to a port with connections in TIME_WAIT",
    }
    ReusePort = "reuseport" {
        aliases: &[],
        kernel: "SO_REUSEPORT",
        ops: &[sol(k::SO_REUSEPORT, "SO_REUSEPORT", Enc::Bool)],
        same_as: &[],
        kind: Kind::Bool,
        applies: Applies::Ip,
        when: When::BeforeBind,
        inherited_by_accept: true,
        help: "servers: let several sockets bind the same port (load balancing)",
    }
    SndBuf = "sndbuf" {
        aliases: &[],
        kernel: "SO_SNDBUF",
        ops: &[sol(k::SO_SNDBUF, "SO_SNDBUF", Enc::BufSize)],
        same_as: &[(k::SOL_SOCKET, k::SO_SNDBUFFORCE)],
        kind: int(1024, (i32::MAX / 2) as i64, Unit::Bytes),
        applies: Applies::Ip,
        when: When::Any,
        inherited_by_accept: true,
        help: "send buffer size in bytes (K/M suffixes; the kernel doubles it)",
    }
    RcvBuf = "rcvbuf" {
        aliases: &[],
        kernel: "SO_RCVBUF",
        ops: &[sol(k::SO_RCVBUF, "SO_RCVBUF", Enc::BufSize)],
        same_as: &[(k::SOL_SOCKET, k::SO_RCVBUFFORCE)],
        kind: int(1024, (i32::MAX / 2) as i64, Unit::Bytes),
        applies: Applies::Ip,
        when: When::BeforeConnect,
        inherited_by_accept: true,
        help: "receive buffer size in bytes (before connect: it decides the window scale)",
    }
    MaxPacingRate = "max-pacing-rate" {
        aliases: &["pacing-rate"],
        kernel: "SO_MAX_PACING_RATE",
        // The kernel reads a u32 when optlen is 4 (and a u64 when it is 8); our range fits.
        ops: &[not_mptcp(sol(k::SO_MAX_PACING_RATE, "SO_MAX_PACING_RATE", Enc::U32))],
        same_as: &[],
        kind: int(1, u32::MAX as i64 - 1, Unit::Rate),
        applies: Applies::Ip,
        when: When::Any,
        inherited_by_accept: false,
        help: "per-socket rate limit in bytes/s (K/M/G) or bits/s (kbit/mbit/gbit)",
    }
    Linger = "linger" {
        aliases: &[],
        kernel: "SO_LINGER",
        ops: &[sol(k::SO_LINGER, "SO_LINGER", Enc::Linger)],
        same_as: &[],
        kind: Kind::Linger,
        applies: Applies::Ip,
        when: When::Any,
        inherited_by_accept: true,
        help: "seconds close() waits for unsent data (0 = reset at close), or `off`",
    }
    KeepAlive = "keepalive" {
        aliases: &["keepalive.enabled"],
        kernel: "SO_KEEPALIVE (+ TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT)",
        ops: &[sol(k::SO_KEEPALIVE, "SO_KEEPALIVE", Enc::Bool)],
        same_as: &[],
        kind: Kind::Bool,
        applies: Applies::Tcp,
        when: When::Any,
        inherited_by_accept: true,
        help: "TCP keepalive: `on`, or IDLE,INTERVAL,COUNT (seconds, seconds, probes)",
    }
    KeepIdle = "keepalive.idle" {
        aliases: &["keepidle", "keepalive-idle"],
        kernel: "TCP_KEEPIDLE",
        ops: &[tcp(k::TCP_KEEPIDLE, "TCP_KEEPIDLE", Enc::Int)],
        same_as: &[],
        kind: int(1, 32767, Unit::Seconds),
        applies: Applies::Tcp,
        when: When::Any,
        inherited_by_accept: true,
        help: "seconds of idleness before the first keepalive probe",
    }
    KeepIntvl = "keepalive.interval" {
        aliases: &["keepintvl", "keepalive-interval"],
        kernel: "TCP_KEEPINTVL",
        ops: &[tcp(k::TCP_KEEPINTVL, "TCP_KEEPINTVL", Enc::Int)],
        same_as: &[],
        kind: int(1, 32767, Unit::Seconds),
        applies: Applies::Tcp,
        when: When::Any,
        inherited_by_accept: true,
        help: "seconds between keepalive probes",
    }
    KeepCnt = "keepalive.count" {
        aliases: &["keepcnt", "keepalive-count"],
        kernel: "TCP_KEEPCNT",
        ops: &[tcp(k::TCP_KEEPCNT, "TCP_KEEPCNT", Enc::Int)],
        same_as: &[],
        kind: int(1, 127, Unit::None),
        applies: Applies::Tcp,
        when: When::Any,
        inherited_by_accept: true,
        help: "unanswered probes before the connection is dropped",
    }
    NoDelay = "nodelay" {
        aliases: &["tcp-nodelay"],
        kernel: "TCP_NODELAY",
        ops: &[tcp(k::TCP_NODELAY, "TCP_NODELAY", Enc::Bool)],
        same_as: &[],
        kind: Kind::Bool,
        applies: Applies::Tcp,
        when: When::Any,
        inherited_by_accept: true,
        help: "disable Nagle's algorithm (send small writes at once)",
    }
    UserTimeout = "user-timeout" {
        aliases: &[],
        kernel: "TCP_USER_TIMEOUT",
        ops: &[not_mptcp(tcp(k::TCP_USER_TIMEOUT, "TCP_USER_TIMEOUT", Enc::Int))],
        same_as: &[],
        kind: int(0, i32::MAX as i64, Unit::Millis),
        applies: Applies::Tcp,
        when: When::Any,
        inherited_by_accept: true,
        help: "drop the connection when sent data stays unacknowledged this long (ms; s/m suffixes)",
    }
    Congestion = "congestion" {
        aliases: &["cc", "congestion-control"],
        kernel: "TCP_CONGESTION",
        ops: &[tcp(k::TCP_CONGESTION, "TCP_CONGESTION", Enc::Str)],
        same_as: &[],
        kind: Kind::Name,
        applies: Applies::Tcp,
        when: When::BeforeConnect,
        inherited_by_accept: true,
        help: "congestion control algorithm (see net.ipv4.tcp_available_congestion_control)",
    }
    MaxSeg = "maxseg" {
        aliases: &["mss"],
        kernel: "TCP_MAXSEG",
        ops: &[tcp(k::TCP_MAXSEG, "TCP_MAXSEG", Enc::Int)],
        same_as: &[],
        kind: int(88, 65535, Unit::None),
        applies: Applies::Tcp,
        when: When::BeforeConnect,
        inherited_by_accept: true,
        help: "clamp the MSS announced in the SYN (88..65535)",
    }
    NotsentLowat = "notsent-lowat" {
        aliases: &[],
        kernel: "TCP_NOTSENT_LOWAT",
        ops: &[tcp(k::TCP_NOTSENT_LOWAT, "TCP_NOTSENT_LOWAT", Enc::Int)],
        same_as: &[],
        kind: int(1, i32::MAX as i64, Unit::Bytes),
        applies: Applies::Tcp,
        when: When::Any,
        inherited_by_accept: false,
        help: "limit unsent bytes queued in the kernel (lower latency for interactive streams)",
    }
    /// Not a socket option: the protocol given to `socket()`.
    Mptcp = "mptcp" {
        aliases: &["multipath"],
        kernel: "socket(..., IPPROTO_MPTCP)",
        ops: &[],
        same_as: &[],
        kind: Kind::Bool,
        applies: Applies::Tcp,
        when: When::Create,
        inherited_by_accept: true,
        help: "make TCP sockets Multipath TCP (falls back to TCP when the kernel or peer says no)",
    }
}

/// The catalog, indexed by `Opt as usize`.
pub static SPECS: [OptSpec; N_OPTS] = TABLE;

impl Opt {
    pub fn spec(self) -> &'static OptSpec {
        &SPECS[self as usize]
    }

    pub fn name(self) -> &'static str {
        self.spec().name
    }

    pub fn bit(self) -> u32 {
        1 << (self as u32)
    }

    /// The slot with this index, if there is one.
    pub fn from_index(i: usize) -> Option<Opt> {
        Opt::ALL.get(i).copied()
    }

    /// Finds a slot by any of its user-facing names (`hop-limit` finds [`Opt::Ttl`]).
    /// Underscores and hyphens are interchangeable.
    pub fn from_name(name: &str) -> Option<Opt> {
        // Compared byte by byte, normalised on the fly: the environment's names pass here
        // in every exec, and two normalised copies per look-up cost more than the search.
        let same = |canon: &str| {
            canon.len() == name.len()
                && canon.bytes().zip(name.bytes()).all(|(c, n)| {
                    let n = if n == b'_' {
                        b'-'
                    } else {
                        n.to_ascii_lowercase()
                    };
                    c == n
                })
        };
        Opt::ALL
            .into_iter()
            .find(|o| same(o.spec().name) || o.spec().aliases.iter().any(|a| same(a)))
    }

    /// Whether MPTCP sockets accept every kernel option of this slot.
    pub fn mptcp_ok(self) -> bool {
        let ops = self.spec().ops;
        let mut i = 0;
        while i < ops.len() {
            if !ops[i].mptcp {
                return false;
            }
            i += 1;
        }
        true
    }
}

// ---- derived: from a kernel option back to its slot ----

/// The levels the catalog uses, as a small index for [`REVERSE`].
const fn level_index(level: i32) -> Option<usize> {
    match level {
        k::IPPROTO_IP => Some(0),
        k::SOL_SOCKET => Some(1),
        k::IPPROTO_TCP => Some(2),
        k::IPPROTO_IPV6 => Some(3),
        _ => None,
    }
}

/// Option names below this are looked up in [`REVERSE`] (every catalog name is).
const MAX_NAME: usize = 128;

/// 1 + slot for every (level, name) of the catalog's kernel options and their `same_as`
/// aliases; 0 = not managed. Computed at compile time from [`TABLE`]: one array index per
/// look-up in the setsockopt hook.
static REVERSE: [[u8; MAX_NAME]; 4] = {
    let mut t = [[0u8; MAX_NAME]; 4];
    let mut slot = 0;
    while slot < N_OPTS {
        let spec = &TABLE[slot];
        let mut i = 0;
        while i < spec.ops.len() {
            let op = &spec.ops[i];
            let Some(l) = level_index(op.level) else {
                panic!("catalog: kernel option at a level without an index")
            };
            assert!(
                (op.name as usize) < MAX_NAME,
                "catalog: option name too large"
            );
            assert!(
                t[l][op.name as usize] == 0,
                "catalog: kernel option listed twice"
            );
            t[l][op.name as usize] = slot as u8 + 1;
            i += 1;
        }
        let mut i = 0;
        while i < spec.same_as.len() {
            let (level, name) = spec.same_as[i];
            let Some(l) = level_index(level) else {
                panic!("catalog: alias at a level without an index")
            };
            assert!((name as usize) < MAX_NAME, "catalog: option name too large");
            t[l][name as usize] = slot as u8 + 1;
            i += 1;
        }
        slot += 1;
    }
    t
};

/// Which slot a program's own `setsockopt(level, name)` touches, if sockwrap manages it.
#[inline]
pub fn slot_for_kernel_option(level: i32, name: i32) -> Option<Opt> {
    let l = level_index(level)?;
    let n = usize::try_from(name).ok().filter(|&n| n < MAX_NAME)?;
    let tag = REVERSE[l][n];
    Opt::from_index((tag as usize).checked_sub(1)?)
}

/// The catalog's description of a kernel option (`None` for options it does not manage,
/// and for `same_as` aliases, which have no entry of their own).
pub fn kernel_opt(level: i32, name: i32) -> Option<&'static KernelOpt> {
    let opt = slot_for_kernel_option(level, name)?;
    opt.spec()
        .ops
        .iter()
        .find(|o| o.level == level && o.name == name)
}

/// The C name of a kernel option the catalog knows (managed options, their aliases and the
/// options carried over a protocol change), for logs and traces.
pub fn kernel_name(level: i32, name: i32) -> Option<&'static str> {
    if let Some(o) = kernel_opt(level, name) {
        return Some(o.cname);
    }
    let alias = match (level, name) {
        (k::SOL_SOCKET, k::SO_SNDBUFFORCE) => Some("SO_SNDBUFFORCE"),
        (k::SOL_SOCKET, k::SO_RCVBUFFORCE) => Some("SO_RCVBUFFORCE"),
        _ => None,
    };
    alias.or_else(|| {
        CARRIED
            .iter()
            .find(|o| o.level == level && o.name == name)
            .map(|o| o.cname)
    })
}

/// Options sockwrap does not manage but carries over when it changes a socket's protocol
/// before connect (MPTCP ↔ TCP): the program may have set them.
static CARRIED: [KernelOpt; 9] = [
    sol(k::SO_RCVLOWAT, "SO_RCVLOWAT", Enc::Int),
    sol(k::SO_OOBINLINE, "SO_OOBINLINE", Enc::Bool),
    kopt(
        k::IPPROTO_IP,
        k::IP_FREEBIND,
        "IP_FREEBIND",
        OpFamily::Any,
        Enc::Bool,
    ),
    kopt(
        k::IPPROTO_IP,
        k::IP_TRANSPARENT,
        "IP_TRANSPARENT",
        OpFamily::Any,
        Enc::Bool,
    ),
    kopt(
        k::IPPROTO_IP,
        k::IP_BIND_ADDRESS_NO_PORT,
        "IP_BIND_ADDRESS_NO_PORT",
        OpFamily::Any,
        Enc::Bool,
    ),
    kopt(
        k::IPPROTO_IPV6,
        k::IPV6_V6ONLY,
        "IPV6_V6ONLY",
        OpFamily::V6,
        Enc::Bool,
    ),
    tcp(k::TCP_FASTOPEN_CONNECT, "TCP_FASTOPEN_CONNECT", Enc::Bool),
    tcp(k::TCP_DEFER_ACCEPT, "TCP_DEFER_ACCEPT", Enc::Int),
    tcp(k::TCP_CORK, "TCP_CORK", Enc::Bool),
];

/// What the library reads back from a socket and sets on its replacement when it changes
/// the protocol: every kernel option of the catalog, in apply order, then [`CARRIED`]; with
/// SO_PRIORITY moved last, because on IPv4 setting IP_TOS overwrites it.
pub fn carried_options() -> impl Iterator<Item = &'static KernelOpt> {
    let priority = |o: &&KernelOpt| o.level == k::SOL_SOCKET && o.name == k::SO_PRIORITY;
    let all = || {
        SPECS
            .iter()
            .flat_map(|s| s.ops.iter())
            .chain(CARRIED.iter())
    };
    all()
        .filter(move |o| !priority(o))
        .chain(all().filter(priority))
}

mod ops;
mod values;

pub use ops::*;
pub use values::*;

#[cfg(test)]
mod tests;
