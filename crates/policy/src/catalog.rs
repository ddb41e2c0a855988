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
//! apart. Linux constants are written here by hand, each next to its C name: this crate is
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

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Name16 {
    bytes: [u8; 16],
    len: u8,
}

impl Name16 {
    pub fn new(s: &str) -> Option<Name16> {
        if s.is_empty() || s.len() > 15 || s.bytes().any(|b| b == 0) {
            return None;
        }
        let mut bytes = [0u8; 16];
        bytes[..s.len()].copy_from_slice(s.as_bytes());
        Some(Name16 {
            bytes,
            len: s.len() as u8,
        })
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(self.as_bytes()).unwrap_or("?")
    }
}

impl fmt::Debug for Name16 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Source addresses: at most one per family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct BindAddrs {
    pub v4: Option<[u8; 4]>,
    pub v6: Option<[u8; 16]>,
}

/// A parsed option value. `Copy` and allocation-free so the hooks can pass it around.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Value {
    Bool(bool),
    Int(i64),
    Name(Name16),
    Addrs(BindAddrs),
    /// `None` = linger off.
    Linger(Option<u16>),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(b) => f.write_str(if *b { "on" } else { "off" }),
            Value::Int(i) => write!(f, "{i}"),
            Value::Name(n) => f.write_str(n.as_str()),
            Value::Addrs(a) => {
                let mut first = true;
                if let Some(v4) = a.v4 {
                    write!(f, "{}", core::net::Ipv4Addr::from(v4))?;
                    first = false;
                }
                if let Some(v6) = a.v6 {
                    if !first {
                        f.write_str(",")?;
                    }
                    write!(f, "{}", core::net::Ipv6Addr::from(v6))?;
                }
                Ok(())
            }
            Value::Linger(None) => f.write_str("off"),
            Value::Linger(Some(s)) => write!(f, "{s}s"),
        }
    }
}

/// Formats a value the way a user reads it for this slot (`0xb8 (DSCP EF)` for ToS).
pub struct Shown(pub Opt, pub Value);

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0, self.1) {
            (Opt::Tos, Value::Int(tos)) => {
                let dscp = (tos >> 2) as u8;
                match dscp_name(dscp) {
                    Some(n) => write!(f, "{n}(0x{tos:02x})"),
                    None => write!(f, "{dscp}(0x{tos:02x})"),
                }
            }
            (Opt::Mark, Value::Int(m)) => write!(f, "0x{m:x}"),
            (_, v) => write!(f, "{v}"),
        }
    }
}

const DSCP_NAMES: [(&str, u8); 23] = [
    ("CS0", 0),
    ("LE", 1),
    ("CS1", 8),
    ("AF11", 10),
    ("AF12", 12),
    ("AF13", 14),
    ("CS2", 16),
    ("AF21", 18),
    ("AF22", 20),
    ("AF23", 22),
    ("CS3", 24),
    ("AF31", 26),
    ("AF32", 28),
    ("AF33", 30),
    ("CS4", 32),
    ("AF41", 34),
    ("AF42", 36),
    ("AF43", 38),
    ("CS5", 40),
    ("VA", 44),
    ("EF", 46),
    ("CS6", 48),
    ("CS7", 56),
];

/// Every DSCP class name [`parse_dscp`] takes, in code point order (shell completion
/// offers them).
pub fn dscp_names() -> impl Iterator<Item = &'static str> {
    DSCP_NAMES.iter().map(|(n, _)| *n)
}

/// The usual name of a DSCP code point, if it has one.
pub fn dscp_name(dscp: u8) -> Option<&'static str> {
    DSCP_NAMES.iter().find(|(_, v)| *v == dscp).map(|(n, _)| *n)
}

/// A raw value as the user wrote it: TOML gives typed scalars, the CLI and the environment
/// give strings.
#[derive(Clone, Copy, Debug)]
pub enum Raw<'a> {
    Str(&'a str),
    Int(i64),
    Bool(bool),
}

fn parse_int_text(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        i64::from_str_radix(h, 16).ok()
    } else {
        s.parse().ok()
    }
}

fn parse_bool_text(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "on" | "true" | "yes" => Some(true),
        "0" | "off" | "false" | "no" => Some(false),
        _ => None,
    }
}

/// Splits `123kbit` into (`123`, `kbit`). Hex numbers (`0x..`) take no suffix.
fn split_suffix(s: &str) -> (&str, &str) {
    let s = s.trim();
    if s.starts_with("0x") || s.starts_with("0X") {
        return (s, "");
    }
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    (&s[..end], s[end..].trim())
}

fn scaled(s: &str, unit: Unit) -> Option<i64> {
    if unit == Unit::None {
        return parse_int_text(s);
    }
    let (num, suf) = split_suffix(s);
    let n = parse_int_text(num)?;
    // Lower-cased on the stack: no suffix is longer than four bytes, and a longer one
    // matches none of them.
    let mut low = [0u8; 4];
    let suf = match low.get_mut(..suf.len()) {
        Some(d) => {
            d.copy_from_slice(suf.as_bytes());
            d.make_ascii_lowercase();
            core::str::from_utf8(d).ok()?
        }
        None => return None,
    };
    let mult: i64 = match (unit, suf) {
        (_, "") => 1,
        (Unit::Bytes | Unit::Rate, "k" | "kb" | "kib") => 1 << 10,
        (Unit::Bytes | Unit::Rate, "m" | "mb" | "mib") => 1 << 20,
        (Unit::Bytes | Unit::Rate, "g" | "gb" | "gib") => 1 << 30,
        (Unit::Rate, "bit") => return Some(n / 8),
        (Unit::Rate, "kbit") => return Some(n * 1000 / 8),
        (Unit::Rate, "mbit") => return Some(n * 1_000_000 / 8),
        (Unit::Rate, "gbit") => return n.checked_mul(1_000_000_000).map(|v| v / 8),
        _ => return None,
    };
    n.checked_mul(mult)
}

/// Why a text is not a duration of some unit (see [`parse_duration`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DurationError {
    /// Not a number with one of the duration units.
    NotADuration,
    /// A duration, but not a whole number of the unit asked for (`1.5s` in seconds).
    NotWhole,
}

/// The one duration grammar, for every duration in the policy, the flags and the
/// environment (`delay`, `user-timeout`, `keepalive.idle`, `linger`, ...): a decimal
/// number, then an optional unit `ms`, `s`, `m` or `min`, `h` (any case), as in `250ms`,
/// `1.5s`, `2m`, `1min`, `1h`. A bare number counts in the caller's unit, `base_ms`
/// milliseconds long (1 for milliseconds, 1000 for seconds). Returns the duration in that
/// unit (saturating), or why not.
pub fn parse_duration(s: &str, base_ms: u64) -> Result<u64, DurationError> {
    let t = s.trim();
    let end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = (&t[..end], t[end..].trim());
    // Lower-cased on the stack (this runs in the library too): no unit is longer than 3.
    let mut low = [0u8; 3];
    let unit = match low.get_mut(..unit.len()) {
        Some(d) => {
            d.copy_from_slice(unit.as_bytes());
            d.make_ascii_lowercase();
            core::str::from_utf8(d).map_err(|_| DurationError::NotADuration)?
        }
        None => return Err(DurationError::NotADuration),
    };
    let unit_ms: u64 = match unit {
        "" => base_ms,
        "ms" => 1,
        "s" => 1000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        _ => return Err(DurationError::NotADuration),
    };
    // Thousandths of the unit given, so that `1.5s` and `0.25m` are exact. u64 on purpose
    // (128-bit division would bring its runtime routines into the library): a product too
    // large for it is far out of every option's range, and saturates.
    let milli = crate::rules::decimal_scaled(num, 3).ok_or(DurationError::NotADuration)?;
    let Some(thousandths_ms) = milli.checked_mul(unit_ms) else {
        return Ok(u64::MAX);
    };
    let per = base_ms.max(1).saturating_mul(1000);
    if !thousandths_ms.is_multiple_of(per) {
        return Err(DurationError::NotWhole);
    }
    Ok(thousandths_ms / per)
}

/// How long one unit of a duration-valued option is, in milliseconds.
fn duration_base_ms(unit: Unit) -> Option<u64> {
    match unit {
        Unit::Millis => Some(1),
        Unit::Seconds => Some(1000),
        _ => None,
    }
}

/// A user's text for an option of `unit`: a plain number (also hex or negative, which the
/// range check then refuses by value), or for time units any [`parse_duration`] duration.
fn number_in(s: &str, unit: Unit) -> Option<i64> {
    match duration_base_ms(unit) {
        Some(base) => parse_int_text(s).or_else(|| {
            parse_duration(s, base)
                .ok()
                .map(|v| i64::try_from(v).unwrap_or(i64::MAX))
        }),
        None => scaled(s, unit),
    }
}

/// The error for a text that [`number_in`] refused: "not a whole number of seconds" for a
/// duration finer than the unit, else `fallback`.
fn not_a_number(name: &str, s: &str, unit: Unit, fallback: String) -> String {
    match duration_base_ms(unit).map(|b| parse_duration(s, b)) {
        Some(Err(DurationError::NotWhole)) => format!(
            "{name}: `{}` is not a whole number of {}",
            s.trim(),
            if unit == Unit::Millis {
                "milliseconds"
            } else {
                "seconds"
            }
        ),
        _ => fallback,
    }
}

fn unit_hint(unit: Unit) -> &'static str {
    match unit {
        Unit::None => "",
        Unit::Bytes => " (bytes; K/M/G suffixes allowed)",
        Unit::Millis => " (milliseconds, or a duration: 250ms, 1.5s, 2m, 1h)",
        Unit::Seconds => " (seconds, or a duration: 30s, 1.5m, 2h)",
        Unit::Rate => " (bytes/s with K/M/G, or bits/s with kbit/mbit/gbit)",
    }
}

/// Parses a DSCP spelling: a name (EF, AF41, CS6, LE, VA, also DF/BE for 0) or 0..63
/// (decimal or 0x hex). Returns the DSCP code point, not the ToS byte.
pub fn parse_dscp(s: &str) -> Result<u8, String> {
    let t = s.trim();
    let up = t.to_ascii_uppercase();
    if let Some((_, v)) = DSCP_NAMES.iter().find(|(n, _)| *n == up) {
        return Ok(*v);
    }
    if up == "DF" || up == "BE" || up == "DEFAULT" {
        return Ok(0);
    }
    match parse_int_text(t) {
        Some(n) if (0..=63).contains(&n) => Ok(n as u8),
        Some(n) => Err(format!("DSCP {n} is out of range: expected 0..63 (the ToS byte is DSCP << 2; use `tos` for a raw byte)")),
        None => Err(format!(
            "`{t}` is not a DSCP: expected EF, AF11..AF43, CS0..CS7, LE, VA or a number 0..63"
        )),
    }
}

/// Parses a user's value for `opt`. `name_used` is how the user spelled the option (so `tos`
/// parses a raw byte while `dscp` parses a code point). Errors are one line, ready to print
/// after the source location.
pub fn parse_value(opt: Opt, name_used: &str, raw: Raw<'_>) -> Result<Value, String> {
    let spec = opt.spec();
    let name = spec.name;
    match spec.kind {
        Kind::Dscp => {
            let is_tos = name_used.eq_ignore_ascii_case("tos");
            if is_tos {
                let n = match raw {
                    Raw::Int(n) => Some(n),
                    Raw::Str(s) => parse_int_text(s),
                    Raw::Bool(_) => None,
                };
                match n {
                    Some(n) if (0..=255).contains(&n) => Ok(Value::Int(n)),
                    _ => Err(format!(
                        "tos: expected a ToS byte 0..255 (e.g. 0xb8), got {}",
                        show_raw(raw)
                    )),
                }
            } else {
                let d = match raw {
                    Raw::Int(n) if (0..=63).contains(&n) => n as u8,
                    Raw::Int(n) => {
                        return Err(format!(
                            "dscp: {n} is out of range: expected 0..63 or a name like EF"
                        ))
                    }
                    Raw::Str(s) => parse_dscp(s).map_err(|e| format!("dscp: {e}"))?,
                    Raw::Bool(_) => {
                        return Err("dscp: expected a DSCP name or number, got a boolean".into())
                    }
                };
                Ok(Value::Int((d as i64) << 2))
            }
        }
        Kind::Bool => {
            let b = match raw {
                Raw::Bool(b) => Some(b),
                Raw::Int(0) => Some(false),
                Raw::Int(1) => Some(true),
                Raw::Int(_) => None,
                Raw::Str(s) => parse_bool_text(s),
            };
            b.map(Value::Bool).ok_or_else(|| {
                format!(
                    "{name}: expected on/off (true/false, yes/no, 1/0), got {}",
                    show_raw(raw)
                )
            })
        }
        Kind::Int { min, max, unit } => {
            let n = match raw {
                Raw::Int(n) => Some(n),
                Raw::Str(s) => number_in(s, unit),
                Raw::Bool(_) => None,
            };
            match (n, raw) {
                (Some(n), _) if n >= min && n <= max => Ok(Value::Int(n)),
                (Some(n), _) => Err(format!(
                    "{name}: {n} is out of range: expected {min}..{max}{}",
                    unit_hint(unit)
                )),
                (None, Raw::Str(s)) => Err(not_a_number(
                    name,
                    s,
                    unit,
                    format!(
                        "{name}: expected a number{}, got {}",
                        unit_hint(unit),
                        show_raw(raw)
                    ),
                )),
                (None, _) => Err(format!(
                    "{name}: expected a number{}, got {}",
                    unit_hint(unit),
                    show_raw(raw)
                )),
            }
        }
        Kind::Name => {
            let s = match raw {
                Raw::Str(s) => s.trim(),
                _ => {
                    return Err(format!(
                        "{name}: expected a name (a string), got {}",
                        show_raw(raw)
                    ))
                }
            };
            let ok_chars = s
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':');
            match Name16::new(s) {
                Some(n) if ok_chars => Ok(Value::Name(n)),
                _ => Err(format!("{name}: `{s}` is not a valid name: expected 1..15 printable characters without `/`")),
            }
        }
        Kind::Addrs => {
            let s = match raw {
                Raw::Str(s) => s,
                _ => {
                    return Err(format!(
                        "{name}: expected an IP address, got {}",
                        show_raw(raw)
                    ))
                }
            };
            let mut a = BindAddrs::default();
            for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                match part.parse::<core::net::IpAddr>() {
                    Ok(core::net::IpAddr::V4(v4)) if a.v4.is_none() => a.v4 = Some(v4.octets()),
                    Ok(core::net::IpAddr::V6(v6)) if a.v6.is_none() => match v6.to_ipv4_mapped() {
                        Some(v4) if a.v4.is_none() => a.v4 = Some(v4.octets()),
                        Some(_) => {
                            return Err(format!("{name}: more than one IPv4 address in `{s}`"))
                        }
                        None => a.v6 = Some(v6.octets()),
                    },
                    Ok(_) => {
                        return Err(format!(
                            "{name}: more than one address of the same family in `{s}`"
                        ))
                    }
                    Err(_) => return Err(format!("{name}: `{part}` is not an IP address")),
                }
            }
            if a.v4.is_none() && a.v6.is_none() {
                return Err(format!(
                    "{name}: expected an IP address, got an empty value"
                ));
            }
            Ok(Value::Addrs(a))
        }
        Kind::Linger => {
            let n = match raw {
                Raw::Bool(false) => return Ok(Value::Linger(None)),
                Raw::Str(s) if parse_bool_text(s) == Some(false) && s.trim() != "0" => {
                    return Ok(Value::Linger(None))
                }
                Raw::Int(n) => Some(n),
                Raw::Str(s) => number_in(s, Unit::Seconds),
                Raw::Bool(true) => None,
            };
            let expected = format!(
                "linger: expected seconds 0..65535 (or a duration: 30s, 2m) or `off`, got {}",
                show_raw(raw)
            );
            match (n, raw) {
                (Some(n), _) if (0..=65535).contains(&n) => Ok(Value::Linger(Some(n as u16))),
                (None, Raw::Str(s)) => Err(not_a_number("linger", s, Unit::Seconds, expected)),
                _ => Err(expected),
            }
        }
    }
}

fn show_raw(raw: Raw<'_>) -> String {
    match raw {
        Raw::Str(s) => format!("`{s}`"),
        Raw::Int(n) => format!("{n}"),
        Raw::Bool(b) => format!("{b}"),
    }
}

/// Parses `--keepalive` / `keepalive = "..."`: `on`/`off`, or `IDLE,INTERVAL,COUNT` (any
/// trailing part may be omitted: `30` or `30,10`). Returns the values for the four slots.
pub fn parse_keepalive(s: &str) -> Result<Vec<(Opt, Value)>, String> {
    if let Some(b) = parse_bool_text(s) {
        if !s.trim().chars().all(|c| c.is_ascii_digit()) {
            return Ok(vec![(Opt::KeepAlive, Value::Bool(b))]);
        }
    }
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    if parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
        return Err(format!(
            "keepalive: expected `on`, `off` or IDLE,INTERVAL,COUNT (e.g. 30,10,3), got `{s}`"
        ));
    }
    let mut out = vec![(Opt::KeepAlive, Value::Bool(true))];
    for (slot, p) in [Opt::KeepIdle, Opt::KeepIntvl, Opt::KeepCnt]
        .into_iter()
        .zip(parts)
    {
        let v = parse_value(slot, slot.name(), Raw::Str(p))
            .map_err(|e| format!("keepalive: `{s}`: {e}"))?;
        out.push((slot, v));
    }
    Ok(out)
}

/// A kernel option to set: `setsockopt(fd, level, name, buf[..len])`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelOp {
    pub level: i32,
    pub name: i32,
    /// C name, for logs.
    pub cname: &'static str,
    pub buf: [u8; 16],
    pub len: u8,
    /// An IPv4 header option on an AF_INET6 socket: its refusal is not a failure.
    pub extra: bool,
}

impl KernelOp {
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }
}

/// The socket a decision is applied to, as far as the catalog cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// Up to two kernel operations (the most any option has), no allocation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ops {
    ops: [Option<KernelOp>; 2],
}

impl Opt {
    /// Whether `v` is of the kind this option takes (for values that did not come from
    /// [`parse_value`], such as the compiled policy form).
    pub fn accepts(self, v: &Value) -> bool {
        match (self.spec().kind, v) {
            (Kind::Dscp, Value::Int(t)) => (0..=255).contains(t),
            (Kind::Int { min, max, .. }, Value::Int(i)) => (min..=max).contains(i),
            (Kind::Bool, Value::Bool(_))
            | (Kind::Name, Value::Name(_))
            | (Kind::Addrs, Value::Addrs(_))
            | (Kind::Linger, Value::Linger(_)) => true,
            _ => false,
        }
    }
}

impl Ops {
    pub const EMPTY: Ops = Ops { ops: [None; 2] };
    fn push(&mut self, op: KernelOp) {
        if let Some(slot) = self.ops.iter_mut().find(|o| o.is_none()) {
            *slot = Some(op);
        }
    }
    pub fn iter(&self) -> impl Iterator<Item = &KernelOp> {
        self.ops.iter().flatten()
    }
}

/// The bytes `setsockopt` takes for `value` in encoding `enc`; `None` when the value is
/// not of a kind the encoding takes.
pub fn encode(enc: Enc, value: Value) -> Option<([u8; 16], u8)> {
    let mut buf = [0u8; 16];
    let int = |buf: &mut [u8; 16], v: i32| {
        buf[..4].copy_from_slice(&v.to_ne_bytes());
        4u8
    };
    let clamp = |v: i64| v.clamp(i32::MIN as i64, i32::MAX as i64) as i32;
    let len = match (enc, value) {
        (Enc::Int | Enc::BufSize, Value::Int(v)) => int(&mut buf, clamp(v)),
        // The bit pattern of the u32 in an int.
        (Enc::U32, Value::Int(v)) => int(&mut buf, v as u32 as i32),
        (Enc::Bool, Value::Bool(b)) => int(&mut buf, b as i32),
        (Enc::Str | Enc::StrNul, Value::Name(n)) => {
            let b = n.as_bytes();
            buf[..b.len()].copy_from_slice(b);
            b.len() as u8 + u8::from(enc == Enc::StrNul)
        }
        (Enc::Linger, Value::Linger(l)) => {
            let (on, secs) = match l {
                Some(s) => (1i32, s as i32),
                None => (0, 0),
            };
            buf[..4].copy_from_slice(&on.to_ne_bytes());
            buf[4..8].copy_from_slice(&secs.to_ne_bytes());
            8
        }
        _ => return None,
    };
    Some((buf, len))
}

/// The `setsockopt` calls that give `opt = value` to a socket of `family`, from the
/// catalog's [`OptSpec::ops`]. `maybe_v4` says an AF_INET6 socket may carry IPv4 (remote
/// is v4-mapped, or unknown as on a dual-stack listener): IPv4 header fields then need the
/// IPv4 option as well. [`Opt::BindAddress`] and [`Opt::Mptcp`] are not socket options and
/// yield nothing here.
pub fn kernel_ops(opt: Opt, value: Value, family: Family, maybe_v4: bool) -> Ops {
    let mut ops = Ops::default();
    for ko in opt.spec().ops {
        let wanted = match ko.family {
            OpFamily::Any => true,
            OpFamily::V6 => family == Family::V6,
            OpFamily::V4Header => family == Family::V4 || maybe_v4,
        };
        if !wanted {
            continue;
        }
        if let Some((buf, len)) = encode(ko.enc, value) {
            ops.push(KernelOp {
                level: ko.level,
                name: ko.name,
                cname: ko.cname,
                buf,
                len,
                extra: family == Family::V6 && ko.family == OpFamily::V4Header,
            });
        }
    }
    ops
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_is_indexed_by_slot() {
        for (i, o) in Opt::ALL.iter().enumerate() {
            assert_eq!(*o as usize, i);
            assert_eq!(Opt::from_name(o.name()), Some(*o));
        }
    }

    #[test]
    fn dscp_spellings() {
        for (s, tos) in [
            ("EF", 0xb8),
            ("ef", 0xb8),
            ("AF41", 0x88),
            ("CS6", 0xc0),
            ("LE", 0x04),
            ("VA", 0xb0),
            ("46", 0xb8),
            ("0x2e", 0xb8),
            ("0", 0),
        ] {
            assert_eq!(
                parse_value(Opt::Tos, "dscp", Raw::Str(s)),
                Ok(Value::Int(tos)),
                "{s}"
            );
        }
        assert!(parse_value(Opt::Tos, "dscp", Raw::Str("XX")).is_err());
        assert!(parse_value(Opt::Tos, "dscp", Raw::Str("64")).is_err());
        assert!(parse_value(Opt::Tos, "dscp", Raw::Int(64)).is_err());
        assert_eq!(
            parse_value(Opt::Tos, "tos", Raw::Str("0xb8")),
            Ok(Value::Int(0xb8))
        );
        assert!(parse_value(Opt::Tos, "tos", Raw::Int(256)).is_err());
    }

    /// Every duration in the policy reads the same texts: the same spelling gives the same
    /// length of time whatever the option's own unit, and a fraction finer than that unit
    /// is refused by name rather than rounded.
    #[test]
    fn one_duration_grammar_for_every_duration() {
        let durations: Vec<Opt> = Opt::ALL
            .into_iter()
            .filter(|o| {
                matches!(
                    o.spec().kind,
                    Kind::Int {
                        unit: Unit::Millis | Unit::Seconds,
                        ..
                    } | Kind::Linger
                )
            })
            .collect();
        assert!(durations.len() >= 4, "{durations:?}");
        for o in durations {
            let secs = !matches!(
                o.spec().kind,
                Kind::Int {
                    unit: Unit::Millis,
                    ..
                }
            );
            let want = |ms: i64| {
                let n = if secs { ms / 1000 } else { ms };
                match o.spec().kind {
                    Kind::Linger => Value::Linger(Some(n as u16)),
                    _ => Value::Int(n),
                }
            };
            for (text, ms) in [
                ("1min", 60_000),
                ("1m", 60_000),
                ("2s", 2000),
                ("1.5m", 90_000),
                ("3 S", 3000),
                ("0.5h", 1_800_000),
            ] {
                if o.spec().kind == Kind::Linger && ms > 65_535_000 {
                    continue;
                }
                let got = parse_value(o, o.name(), Raw::Str(text));
                if matches!(o.spec().kind, Kind::Int { max, .. } if (if secs { ms / 1000 } else { ms }) > max)
                {
                    continue;
                }
                assert_eq!(got, Ok(want(ms)), "{} = {text}", o.name());
            }
            let fine = if secs { "1.5s" } else { "1.5ms" };
            let e = parse_value(o, o.name(), Raw::Str(fine)).unwrap_err();
            assert!(e.contains("not a whole number of"), "{}: {e}", o.name());
            let e = parse_value(o, o.name(), Raw::Str("soon")).unwrap_err();
            assert!(e.contains("duration"), "{}: {e}", o.name());
        }
        assert_eq!(
            parse_value(Opt::UserTimeout, "user-timeout", Raw::Str("1.5s")),
            Ok(Value::Int(1500))
        );
        assert_eq!(crate::rules::parse_delay("1min"), Ok(60_000));
        assert_eq!(parse_duration("2H", 1000), Ok(7200));
        assert_eq!(parse_duration("-1s", 1), Err(DurationError::NotADuration));
        assert_eq!(parse_duration("1.5s", 1000), Err(DurationError::NotWhole));
        assert_eq!(parse_duration("1.5s", 1), Ok(1500));
    }

    #[test]
    fn units() {
        assert_eq!(
            parse_value(Opt::SndBuf, "sndbuf", Raw::Str("64K")),
            Ok(Value::Int(65536))
        );
        assert_eq!(
            parse_value(Opt::UserTimeout, "user-timeout", Raw::Str("30s")),
            Ok(Value::Int(30000))
        );
        assert_eq!(
            parse_value(Opt::UserTimeout, "user-timeout", Raw::Str("250")),
            Ok(Value::Int(250))
        );
        assert_eq!(
            parse_value(Opt::MaxPacingRate, "max-pacing-rate", Raw::Str("8mbit")),
            Ok(Value::Int(1_000_000))
        );
        assert_eq!(
            parse_value(Opt::KeepIdle, "keepalive.idle", Raw::Str("2m")),
            Ok(Value::Int(120))
        );
        assert_eq!(
            parse_value(Opt::Mark, "mark", Raw::Str("0x10")),
            Ok(Value::Int(16))
        );
        assert!(parse_value(Opt::Ttl, "ttl", Raw::Str("0")).is_err());
        assert!(parse_value(Opt::Ttl, "ttl", Raw::Str("7x")).is_err());
    }

    #[test]
    fn keepalive_triplet() {
        let v = parse_keepalive("30,10,3").expect("valid");
        assert_eq!(v.len(), 4);
        assert_eq!(v[1], (Opt::KeepIdle, Value::Int(30)));
        assert_eq!(
            parse_keepalive("on").expect("valid"),
            vec![(Opt::KeepAlive, Value::Bool(true))]
        );
        assert_eq!(parse_keepalive("30").expect("valid").len(), 2);
        assert!(parse_keepalive("30,,3").is_err());
        assert!(parse_keepalive("30,10,3,4").is_err());
    }

    /// Every slot (except the bind-address pseudo option) maps to at least one kernel option,
    /// and that kernel option maps back to the same slot: the lock table and the apply table
    /// cannot drift apart.
    #[test]
    fn kernel_mapping_round_trips() {
        let sample = |o: Opt| match o.spec().kind {
            Kind::Bool => Value::Bool(true),
            Kind::Name => Value::Name(Name16::new("lo").expect("valid")),
            Kind::Linger => Value::Linger(Some(1)),
            Kind::Addrs => Value::Addrs(BindAddrs::default()),
            _ => Value::Int(100),
        };
        for o in Opt::ALL {
            let ops = kernel_ops(o, sample(o), Family::V6, true);
            if o == Opt::BindAddress || o == Opt::Mptcp {
                assert_eq!(ops.iter().count(), 0);
                continue;
            }
            assert!(ops.iter().count() >= 1, "{o:?}");
            for op in ops.iter() {
                assert_eq!(
                    slot_for_kernel_option(op.level, op.name),
                    Some(o),
                    "{}",
                    op.cname
                );
            }
        }
    }

    /// The derived encodings are the bytes the kernel expects (golden values: what the
    /// hand-written table before the catalog owned the facts produced).
    #[test]
    fn encodings_are_the_kernels() {
        let ops = |o, v, f, m| {
            kernel_ops(o, v, f, m)
                .iter()
                .map(|op| (op.cname, op.bytes().to_vec(), op.extra))
                .collect::<Vec<_>>()
        };
        let i = |v: i32| v.to_ne_bytes().to_vec();
        assert_eq!(
            ops(Opt::Tos, Value::Int(0xb8), Family::V6, true),
            vec![("IPV6_TCLASS", i(0xb8), false), ("IP_TOS", i(0xb8), true)]
        );
        assert_eq!(
            ops(Opt::Tos, Value::Int(0xb8), Family::V6, false),
            vec![("IPV6_TCLASS", i(0xb8), false)]
        );
        assert_eq!(
            ops(Opt::Ttl, Value::Int(9), Family::V4, false),
            vec![("IP_TTL", i(9), false)]
        );
        assert_eq!(
            ops(Opt::Mark, Value::Int(u32::MAX as i64), Family::V4, false),
            vec![("SO_MARK", i(-1), false)]
        );
        let lo = Value::Name(Name16::new("lo").expect("valid"));
        assert_eq!(
            ops(Opt::BindInterface, lo, Family::V4, false),
            vec![("SO_BINDTODEVICE", b"lo\0".to_vec(), false)]
        );
        let reno = Value::Name(Name16::new("reno").expect("valid"));
        assert_eq!(
            ops(Opt::Congestion, reno, Family::V6, true),
            vec![("TCP_CONGESTION", b"reno".to_vec(), false)]
        );
        let mut linger = i(1);
        linger.extend(i(5));
        assert_eq!(
            ops(Opt::Linger, Value::Linger(Some(5)), Family::V4, false),
            vec![("SO_LINGER", linger, false)]
        );
        assert_eq!(
            ops(Opt::NoDelay, Value::Bool(true), Family::V4, false),
            vec![("TCP_NODELAY", i(1), false)]
        );
        assert!(kernel_ops(
            Opt::BindAddress,
            Value::Addrs(BindAddrs::default()),
            Family::V4,
            false
        )
        .iter()
        .next()
        .is_none());
    }

    /// The doc text of each option names every kernel option it sets; the C names come
    /// back from the reverse table; the carried list sets SO_PRIORITY last and names each
    /// option once.
    #[test]
    fn derived_tables_agree_with_the_catalog() {
        for o in Opt::ALL {
            for ko in o.spec().ops {
                assert!(o.spec().kernel.contains(ko.cname), "{o:?}: {}", ko.cname);
                assert_eq!(kernel_name(ko.level, ko.name), Some(ko.cname));
                assert_eq!(kernel_opt(ko.level, ko.name), Some(ko));
            }
            for &(level, name) in o.spec().same_as {
                assert_eq!(slot_for_kernel_option(level, name), Some(o));
            }
        }
        let carried: Vec<_> = carried_options().collect();
        let last = carried.last().expect("not empty");
        assert_eq!((last.level, last.name), (k::SOL_SOCKET, k::SO_PRIORITY));
        for (n, a) in carried.iter().enumerate() {
            assert!(
                carried[n + 1..]
                    .iter()
                    .all(|b| (a.level, a.name) != (b.level, b.name)),
                "{} twice",
                a.cname
            );
        }
        assert_eq!(slot_for_kernel_option(k::IPPROTO_TCP, k::TCP_CORK), None);
        assert_eq!(slot_for_kernel_option(k::IPPROTO_TCP, -1), None);
        assert_eq!(slot_for_kernel_option(999, 1), None);
        assert!(!Opt::UserTimeout.mptcp_ok() && Opt::NoDelay.mptcp_ok());
    }
}
