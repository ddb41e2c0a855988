//! The [`Plan`]: exactly what a backend does to one socket at one stage.
//!
//! A [`Decision`] says which rule won each option; a Plan says what that means for one
//! socket: the `(level, name, value bytes)` of every `setsockopt` in order, the source
//! address to bind, and which options to lock afterwards. The library executes a Plan in
//! the program's socket calls; the kernel backend copies the same records into BPF maps,
//! so both are fixed-size, `#[repr(C)]` and free of pointers.
//!
//! What each stage sets (a pure function of the catalog: [`Stage::mask`]) and which kind of
//! socket needs which kernel options ([`Variant`]) are decided here, so that every backend
//! makes the same calls.
//!
//! The one module cycle left in the crates (`scripts/module-graph.sh crates/policy/src`):
//! this module plans a `rules::Decision`, and a `rules::Policy` keeps the plans of its
//! precomputed decisions (`FixedPlans`) and each setting's `VariantOps`, so that the
//! library's per-connection path reads a plan without a lookup or an allocation. Breaking
//! it would put an indirection on that path; the cycle is the cache, kept on purpose.

use crate::catalog::{Applies, Family, Opt, When, N_OPTS};
use crate::once::{FillOnce, Filler};
#[allow(unused_imports)]
use crate::prelude::*;
use crate::rules::{Decision, Role, Transport};

/// The moment a plan is for: which socket call the options are set in.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
#[repr(u8)]
pub enum Stage {
    /// UDP at socket(): everything but the source address (binding it now would pick a port
    /// before the program can bind its own) and bind-time options.
    UdpCreate = 0,
    /// bind(): the options that only matter before bind (and, for UDP servers, the rest).
    Bind,
    /// connect(): everything but bind-time options.
    Connect,
    /// listen(): everything but the source address and bind-time options.
    Listen,
    /// accept() (and sockets adopted from elsewhere): what the listener did not pass on.
    Accept,
}

impl Stage {
    pub const ALL: [Stage; 5] = [
        Stage::UdpCreate,
        Stage::Bind,
        Stage::Connect,
        Stage::Listen,
        Stage::Accept,
    ];

    /// The socket call this stage runs in, for logs and traces.
    pub fn call(self) -> &'static str {
        match self {
            Stage::UdpCreate => "socket",
            Stage::Bind => "bind",
            Stage::Connect => "connect",
            Stage::Listen => "listen",
            Stage::Accept => "accept",
        }
    }

    const fn wants(self, slot: usize, udp: bool) -> bool {
        let spec = &SPECS_CONST[slot];
        let bind_address = slot == Opt::BindAddress as usize;
        let before_bind = matches!(spec.when, When::BeforeBind);
        if slot == Opt::Mptcp as usize {
            return false; // the protocol: chosen at socket(), changed before connect/listen
        }
        if udp && matches!(spec.applies, Applies::Tcp) {
            return false;
        }
        match self {
            Stage::UdpCreate => !bind_address && !before_bind,
            Stage::Bind => before_bind || (udp && !bind_address),
            Stage::Connect => !before_bind,
            Stage::Listen | Stage::Accept => !bind_address && !before_bind,
        }
    }

    /// The slots this stage sets on a socket of `transport`.
    pub fn mask(self, transport: Transport) -> u32 {
        STAGE_MASKS[self as usize][(transport == Transport::Udp) as usize]
    }
}

use crate::catalog::TABLE as SPECS_CONST;

/// Per stage and transport (TCP, UDP): the slots set. Computed at compile time.
const STAGE_MASKS: [[u32; 2]; 5] = {
    let mut m = [[0u32; 2]; 5];
    let mut st = 0;
    while st < 5 {
        let stage = Stage::ALL[st];
        let mut t = 0;
        while t < 2 {
            let mut slot = 0;
            while slot < N_OPTS {
                if stage.wants(slot, t == 1) {
                    m[st][t] |= 1 << slot;
                }
                slot += 1;
            }
            t += 1;
        }
        st += 1;
    }
    m
};

/// The slots an accepted socket inherits from its listener (measured on 6.18).
pub const INHERITED: u32 = {
    let mut m = 0u32;
    let mut slot = 0;
    while slot < N_OPTS {
        if SPECS_CONST[slot].inherited_by_accept {
            m |= 1 << slot;
        }
        slot += 1;
    }
    m
};

/// Which kernel options a socket needs, by the IP versions it carries.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
#[repr(u8)]
pub enum Variant {
    /// AF_INET.
    V4 = 0,
    /// AF_INET6 that carries IPv6 only (its peer is a native IPv6 address).
    V6 = 1,
    /// AF_INET6 that carries or may carry IPv4: a v4-mapped peer, or one not known yet (a
    /// dual-stack listener). IPv4 header options are set too, as extras.
    V6Dual = 2,
}

impl Variant {
    pub const ALL: [Variant; 3] = [Variant::V4, Variant::V6, Variant::V6Dual];

    /// The variant of a socket of `family` at `stage`. `peer_v4_mapped` says whether the
    /// peer (connect, accept) is a v4-mapped address, `None` when there is no peer.
    pub fn of(family: Family, stage: Stage, peer_v4_mapped: Option<bool>) -> Variant {
        match (family, stage, peer_v4_mapped) {
            (Family::V4, _, _) => Variant::V4,
            (Family::V6, Stage::Connect | Stage::Accept, Some(false)) => Variant::V6,
            (Family::V6, _, _) => Variant::V6Dual,
        }
    }

    pub fn family(self) -> Family {
        match self {
            Variant::V4 => Family::V4,
            Variant::V6 | Variant::V6Dual => Family::V6,
        }
    }

    /// Whether the socket may carry IPv4 ([`crate::catalog::kernel_ops`]'s `maybe_v4`).
    pub fn maybe_v4(self) -> bool {
        self != Variant::V6
    }
}

/// The pseudo level of a plan entry that binds the source address rather than setting an
/// option: `name` is the address family (AF_INET 2 or AF_INET6 10) and `val` the address
/// (4 or 16 bytes; an IPv4 address is v4-mapped on an AF_INET6 socket). The port is left
/// to connect (IP_BIND_ADDRESS_NO_PORT on TCP), and a socket the program bound itself is
/// left alone.
pub const LEVEL_BIND: i32 = -1;
pub const AF_INET: i32 = 2;
pub const AF_INET6: i32 = 10;

/// [`PlanOp::flags`]: an IPv4 header option on an AF_INET6 socket, whose refusal is not a
/// failure.
pub const OP_EXTRA: u8 = 1;

/// One entry of a plan: `setsockopt(fd, level, name, val[..len])`, or a bind when
/// `level` is [`LEVEL_BIND`]. 28 bytes, no pointers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct PlanOp {
    pub level: i32,
    pub name: i32,
    /// The catalog slot this entry belongs to (`Opt as u8`).
    pub opt: u8,
    pub len: u8,
    pub flags: u8,
    pub pad: u8,
    pub val: [u8; 16],
}

impl PlanOp {
    pub const EMPTY: PlanOp = PlanOp {
        level: 0,
        name: 0,
        opt: 0,
        len: 0,
        flags: 0,
        pad: 0,
        val: [0; 16],
    };

    pub fn bytes(&self) -> &[u8] {
        &self.val[..(self.len as usize).min(16)]
    }

    pub fn option(&self) -> Option<Opt> {
        Opt::from_index(self.opt as usize)
    }

    pub fn is_bind(&self) -> bool {
        self.level == LEVEL_BIND
    }

    pub fn is_extra(&self) -> bool {
        self.flags & OP_EXTRA != 0
    }

    /// The C name of the kernel option, for logs and traces (`bind` for a bind).
    pub fn cname(&self) -> &'static str {
        if self.is_bind() {
            return "bind";
        }
        crate::catalog::kernel_name(self.level, self.name).unwrap_or("option")
    }
}

/// The most entries a plan can hold: one per slot, plus the second kernel option of the
/// two slots that have two (ToS, TTL).
pub const MAX_PLAN_OPS: usize = N_OPTS + 2;

/// What one socket gets at one stage: the entries of every option the stage sets, in apply
/// order, and which options to lock afterwards.
///
/// A view over the entries the policy computed when it was built: making one and walking
/// it copies nothing, which is what the library does in every connect. A backend that
/// needs the whole plan as one value (the kernel backend copies it into a BPF map) takes
/// [`Plan::record`].
#[derive(Clone, Copy)]
pub struct Plan<'d, 'p> {
    /// Ready-made entries (a precomputed decision), walked first.
    ready: &'p [PlanOp],
    /// The decision whose slots in `set` give the rest of the entries.
    decision: &'d Decision<'p>,
    /// The slots whose entries are still to be looked up (the stage's, less those skipped;
    /// none when `ready` holds them all).
    set: u32,
    variant: Variant,
    /// The slots to lock once set: those of the stage that are not soft (including those
    /// the socket already has from its listener, which are not set again).
    pub lock: u32,
}

impl<'d, 'p> Plan<'d, 'p> {
    /// The entries, in apply order.
    pub fn ops(&self) -> PlanOps<'d, 'p> {
        PlanOps {
            cur: self.ready.iter(),
            decision: self.decision,
            set: self.set,
            variant: self.variant,
        }
    }

    /// All the entries as one slice, when they are all ready-made (a precomputed decision):
    /// walking a slice keeps the executing loop's state in registers.
    pub fn ready_only(&self) -> Option<&'p [PlanOp]> {
        (self.set == 0).then_some(self.ready)
    }

    /// The same plan as one fixed-size value.
    pub fn record(&self) -> PlanRecord {
        let mut r = PlanRecord {
            lock: self.lock,
            ..PlanRecord::EMPTY
        };
        for op in self.ops() {
            r.push(*op);
        }
        r
    }
}

/// The entries of a [`Plan`], in apply order.
pub struct PlanOps<'d, 'p> {
    cur: core::slice::Iter<'p, PlanOp>,
    decision: &'d Decision<'p>,
    set: u32,
    variant: Variant,
}

impl<'p> Iterator for PlanOps<'_, 'p> {
    type Item = &'p PlanOp;

    #[inline]
    fn next(&mut self) -> Option<&'p PlanOp> {
        loop {
            if let Some(op) = self.cur.next() {
                return Some(op);
            }
            if self.set == 0 {
                return None;
            }
            let slot = self.set.trailing_zeros() as usize;
            self.set &= self.set - 1;
            if let Some(v) = Opt::from_index(slot).and_then(|o| self.decision.variant_ops(o)) {
                self.cur = v.get(self.variant).iter();
            }
        }
    }
}

/// Every precomputed decision's plan per stage and variant (only policies whose rules look
/// at no address or port have precomputed decisions): a plan for such a socket is then one
/// slice of ready entries.
///
/// Built by the first socket that needs one of them, not with the policy (see
/// [`crate::once`]): a program that never opens a socket pays nothing for them. Room for
/// them is reserved when the policy is built.
#[derive(Clone, Debug)]
pub(crate) struct FixedPlans {
    /// (start in the entries, length), indexed by `(decision × 5 + stage) × 3 + variant`,
    /// [`NOT_PRECOMPUTED`] where the plan is not precomputed (it is then walked); and the
    /// entries. Never filled when the policy has no precomputed decisions.
    plans: FillOnce<Ranges, PlanOp>,
}

impl Default for FixedPlans {
    fn default() -> FixedPlans {
        FixedPlans {
            plans: FillOnce::never(),
        }
    }
}

/// Where each precomputed plan's entries are (see [`FixedPlans`]).
#[derive(Clone, Copy)]
struct Ranges([(u16, u8); 6 * 5 * 3]);

/// A start no entry has (there is room for far fewer, see [`FixedPlans::reserve`]): the
/// plans not precomputed, whose look-up then fails the bounds check.
const NOT_PRECOMPUTED: (u16, u8) = (u16::MAX, 0);

impl Default for Ranges {
    fn default() -> Ranges {
        Ranges([NOT_PRECOMPUTED; 6 * 5 * 3])
    }
}

/// A cache of what the rest of the policy says: two policies with the same rules are equal
/// whatever each has filled in so far.
impl PartialEq for FixedPlans {
    fn eq(&self, _: &FixedPlans) -> bool {
        true
    }
}
impl Eq for FixedPlans {}

/// The stages at which a socket of a precomputed decision's role is planned (a client
/// connects; a server binds, listens and accepts; a fresh UDP socket is made): the others,
/// which only adopted sockets meet, walk.
fn planned_at(stage: Stage, t: Transport, role: Option<Role>) -> bool {
    match stage {
        Stage::Connect => role == Some(Role::Client),
        Stage::Bind | Stage::Listen | Stage::Accept => role == Some(Role::Server),
        Stage::UdpCreate => role.is_none() && t == Transport::Udp,
    }
}

impl FixedPlans {
    /// Room for the plans of `p`'s precomputed decisions, none of them built yet.
    pub(crate) fn reserve(p: &crate::rules::Policy) -> FixedPlans {
        let mut room = 0;
        for i in 0..6 {
            let Some((d, t)) = p.fixed_decision(i) else {
                return FixedPlans::default();
            };
            let role = crate::rules::fixed_slot(i).1;
            // At most one entry per slot on AF_INET and on IPv6-only sockets, two on dual
            // ones (see `VariantOps`): four per slot and stage, over the three variants.
            for stage in Stage::ALL {
                if planned_at(stage, t, role) {
                    room += 4 * (d.mask() & stage.mask(t)).count_ones() as usize;
                }
            }
        }
        FixedPlans {
            plans: FillOnce::with_capacity(room),
        }
    }

    #[inline]
    fn get<'p>(
        &'p self,
        p: &'p crate::rules::Policy,
        decision: usize,
        stage: Stage,
        variant: Variant,
    ) -> Option<&'p [PlanOp]> {
        let (ranges, ops) = self.plans.get_or_fill(|f| fill(p, f))?;
        let &(start, len) = ranges
            .0
            .get((decision * 5 + stage as usize) * 3 + variant as usize)?;
        ops.get(start as usize..start as usize + len as usize)
    }
}

/// Builds every precomputed decision's plans: every stage its role is planned at, every
/// variant.
fn fill(p: &crate::rules::Policy, f: &mut Filler<'_, Ranges, PlanOp>) -> bool {
    for i in 0..6 {
        let Some((d, t)) = p.fixed_decision(i) else {
            return false;
        };
        let role = crate::rules::fixed_slot(i).1;
        for stage in Stage::ALL {
            if !planned_at(stage, t, role) {
                continue;
            }
            for variant in Variant::ALL {
                let start = f.len();
                for op in d.walk(stage, t, variant, 0).ops() {
                    if !f.push(*op) {
                        return false;
                    }
                }
                let (Ok(start16), Ok(len)) = (u16::try_from(start), u8::try_from(f.len() - start))
                else {
                    return false;
                };
                if let Some(r) = f
                    .head
                    .0
                    .get_mut((i * 5 + stage as usize) * 3 + variant as usize)
                {
                    *r = (start16, len);
                }
            }
        }
    }
    true
}

/// A [`Plan`] as one fixed-size, pointer-free value that a backend can copy into a map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct PlanRecord {
    /// The slots that have entries in `ops`.
    pub slots: u32,
    /// The slots to lock once set (see [`Plan::lock`]).
    pub lock: u32,
    pub len: u8,
    pub pad: [u8; 3],
    pub ops: [PlanOp; MAX_PLAN_OPS],
}

impl PlanRecord {
    pub const EMPTY: PlanRecord = PlanRecord {
        slots: 0,
        lock: 0,
        len: 0,
        pad: [0; 3],
        ops: [PlanOp::EMPTY; MAX_PLAN_OPS],
    };

    pub fn ops(&self) -> &[PlanOp] {
        &self.ops[..(self.len as usize).min(MAX_PLAN_OPS)]
    }

    fn push(&mut self, op: PlanOp) {
        if let Some(slot) = self.ops.get_mut(self.len as usize) {
            *slot = op;
            self.len += 1;
            self.slots |= 1 << op.opt;
        }
    }
}

/// The entries of one (option, value) for each [`Variant`], computed once per distinct
/// setting when the policy is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct VariantOps {
    pub ops: [[PlanOp; 2]; 3],
    pub n: [u8; 3],
}

impl VariantOps {
    pub(crate) fn new(opt: Opt, value: crate::Value) -> VariantOps {
        let mut v = VariantOps {
            ops: [[PlanOp::EMPTY; 2]; 3],
            n: [0; 3],
        };
        for variant in Variant::ALL {
            let i = variant as usize;
            let mut push = |op: PlanOp| {
                if let Some(slot) = v.ops[i].get_mut(v.n[i] as usize) {
                    *slot = op;
                    v.n[i] += 1;
                }
            };
            if opt == Opt::BindAddress {
                if let Some(op) = bind_op(value, variant) {
                    push(op);
                }
                continue;
            }
            let ops = crate::catalog::kernel_ops(opt, value, variant.family(), variant.maybe_v4());
            for ko in ops.iter() {
                push(PlanOp {
                    level: ko.level,
                    name: ko.name,
                    opt: opt as u8,
                    len: ko.len,
                    flags: if ko.extra { OP_EXTRA } else { 0 },
                    pad: 0,
                    val: ko.buf,
                });
            }
        }
        v
    }

    pub(crate) fn get(&self, variant: Variant) -> &[PlanOp] {
        let i = variant as usize;
        &self.ops[i][..self.n[i] as usize]
    }
}

/// The bind entry for a source address on a socket of `variant`, if the setting has an
/// address of the family that socket talks.
fn bind_op(value: crate::Value, variant: Variant) -> Option<PlanOp> {
    let crate::Value::Addrs(a) = value else {
        return None;
    };
    let mut op = PlanOp {
        level: LEVEL_BIND,
        opt: Opt::BindAddress as u8,
        ..PlanOp::EMPTY
    };
    match variant {
        Variant::V4 => {
            op.name = AF_INET;
            op.val[..4].copy_from_slice(&a.v4?);
            op.len = 4;
        }
        Variant::V6Dual => {
            op.name = AF_INET6;
            let mapped = core::net::Ipv4Addr::from(a.v4?).to_ipv6_mapped();
            op.val = mapped.octets();
            op.len = 16;
        }
        Variant::V6 => {
            op.name = AF_INET6;
            op.val = a.v6?;
            op.len = 16;
        }
    }
    Some(op)
}

impl<'p> Decision<'p> {
    /// The inherited slots whose value this decision shares with `listener`'s: an
    /// accepted socket already has them.
    pub fn inherited_from(&self, listener: &Decision) -> u32 {
        let mut same = 0;
        for (opt, st) in self.iter_mask(INHERITED) {
            if listener.get(opt).map(|l| l.value) == Some(st.value) {
                same |= opt.bit();
            }
        }
        same
    }

    /// The plan for a socket of `transport` and `variant` at `stage`: the entries of every
    /// option the stage sets, in apply order, except the slots in `skip` (already on the
    /// socket), which are still locked.
    pub fn plan(
        &self,
        stage: Stage,
        transport: Transport,
        variant: Variant,
        skip: u32,
    ) -> Plan<'_, 'p> {
        let mut plan = self.walk(stage, transport, variant, skip);
        if skip == 0 {
            if let Some(ready) = self.fixed_plan(stage, transport, variant) {
                plan.ready = ready;
                plan.set = 0;
            }
        }
        plan
    }

    /// The ready-made entries of a precomputed decision, if this is one.
    fn fixed_plan(
        &self,
        stage: Stage,
        transport: Transport,
        variant: Variant,
    ) -> Option<&'p [PlanOp]> {
        let i = self.fixed_index()?;
        if crate::rules::fixed_slot(i).0 != transport {
            return None;
        }
        let p = self.policy();
        p.fixed_plans.get(p, i, stage, variant)
    }

    /// [`Decision::plan`] by looking up each slot's entries (no ready-made ones).
    fn walk(
        &self,
        stage: Stage,
        transport: Transport,
        variant: Variant,
        skip: u32,
    ) -> Plan<'_, 'p> {
        let wanted = self.mask() & stage.mask(transport);
        Plan {
            ready: &[],
            decision: self,
            set: wanted & !skip,
            variant,
            lock: wanted & !self.soft_mask(),
        }
    }
}

/// Why `opt` can no longer be changed on a socket that is already connected or listening
/// (`sockwrap attach` names and skips these), or `None` when setting it still has its
/// effect. Derived from the catalog where it can be: the protocol ([`When::Create`]),
/// bind-time options ([`When::BeforeBind`]) and what is not a socket option at all (the
/// source address: no kernel options). Two before-connect options need saying by hand:
/// the MSS is announced in the SYN, and moving an open connection to another device
/// changes its route under it. The other before-connect options (ToS, TTL, mark, rcvbuf,
/// congestion) act on the packets that follow.
pub fn fixed_once_open(opt: Opt) -> Option<&'static str> {
    let spec = opt.spec();
    match spec.when {
        When::Create => return Some("the protocol is chosen at socket()"),
        When::BeforeBind => return Some("only means something before bind()"),
        When::Any | When::BeforeConnect => {}
    }
    if spec.ops.is_empty() {
        return Some("the source address is chosen at bind()/connect()");
    }
    match opt {
        Opt::MaxSeg => Some("the MSS is announced in the SYN"),
        Opt::BindInterface => Some("the device of an open connection is fixed by its route"),
        _ => None,
    }
}

/// The slots [`fixed_once_open`] names: what `attach` skips.
pub fn fixed_once_open_mask() -> u32 {
    Opt::ALL
        .into_iter()
        .filter(|o| fixed_once_open(*o).is_some())
        .fold(0, |m, o| m | o.bit())
}

#[cfg(test)]
mod tests;
