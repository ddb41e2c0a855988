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

use crate::Error;
use sockwrap_policy::catalog::Opt;
use sockwrap_policy::plan::{PlanOp, PlanRecord};
use sockwrap_policy::rules::Cidr;
use sockwrap_policy::{Ctx, OnError, Policy, Role, Stage, Transport, Variant};
use std::collections::HashMap;

// The structs and constants shared with the programs (abi.h), here as well for callers
// that know them from this module.
pub use crate::abi::{
    DKey, KAction, KPlan, ACT_REDIRECT, ACT_SHOW_TARGET, ACT_TARGET_V4, CFG_ACTIONS, CFG_PROGRAMS,
    CFG_SOCKET_LOCKS, CFG_STRICT, C_APPLIED_BASE, C_DENIED, C_LOCKED, C_REDIRECTED, MAX_OPS,
    N_COUNTERS, STAGE_ACCEPT_FULL,
};
use crate::abi::{SOL_SOCKET, SO_BINDTOIFINDEX};

/// The most decision keys a policy may need (the product of its classes): beyond this the
/// kernel backend refuses it rather than use much kernel memory.
pub const MAX_DECISIONS: usize = 1 << 18;

const SO_BINDTODEVICE: i32 = libc::SO_BINDTODEVICE;

impl KAction {
    fn of(a: &sockwrap_policy::rules::Actions) -> Option<KAction> {
        if let Some(e) = a.deny {
            // A denied connect is never redirected: nothing leaves.
            return Some(KAction {
                deny: e as u32,
                ..KAction::default()
            });
        }
        let r = a.redirect?;
        let mut flags = ACT_REDIRECT;
        if r.show_target {
            flags |= ACT_SHOW_TARGET;
        }
        if r.to.is_ipv4() {
            flags |= ACT_TARGET_V4;
        }
        Some(KAction {
            deny: 0,
            flags,
            ip6: sockwrap_policy::rules::ip_key(r.to.ip()).to_be_bytes(),
            port: r.to.port() as u32,
            pad: 0,
        })
    }

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
        Transport::Tcp => 0,
        Transport::Udp => 1,
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

/// Where a socket is when a stage is planned: the role it has and what is known.
struct StageShape {
    role: Option<Role>,
    remote: bool,
    local: bool,
    variants: &'static [Variant],
}

fn shape(stage: Stage, t: Transport) -> Option<StageShape> {
    const ALL: &[Variant] = &[Variant::V4, Variant::V6, Variant::V6Dual];
    const NO_PEER: &[Variant] = &[Variant::V4, Variant::V6Dual];
    let s = |role, remote, local, variants| {
        Some(StageShape {
            role,
            remote,
            local,
            variants,
        })
    };
    match (stage, t) {
        (Stage::UdpCreate, Transport::Udp) => s(None, false, false, NO_PEER),
        (Stage::UdpCreate, Transport::Tcp) => None,
        (Stage::Bind, _) => s(Some(Role::Server), false, true, NO_PEER),
        // connect(), and sendto() on an unconnected UDP socket (a datagram is a connection
        // to its destination).
        (Stage::Connect, _) => s(Some(Role::Client), true, false, ALL),
        (Stage::Listen, Transport::Tcp) => s(Some(Role::Server), false, true, NO_PEER),
        (Stage::Accept, Transport::Tcp) => s(Some(Role::Server), true, true, ALL),
        (Stage::Listen | Stage::Accept, Transport::Udp) => None,
    }
}

/// Why the kernel backend cannot carry out option `o`, and what to use instead; `None` for
/// the options it carries out.
pub fn refused_opt(o: Opt) -> Option<&'static str> {
    Some(match o {
        Opt::Linger => {
            "SO_LINGER: bpf_setsockopt does not support it (kernel 6.18 net/core/filter.c); use the library (sockwrap run without --kernel)"
        }
        Opt::Ttl => {
            "IP_TTL / IPV6_UNICAST_HOPS: bpf_setsockopt does not support them (kernel 6.18 net/core/filter.c); use the library (sockwrap run without --kernel)"
        }
        Opt::Mptcp => {
            "MPTCP: the protocol is chosen in socket(), so bpf_setsockopt cannot set it; run --kernel and enable --kernel convert with a program of their own (crate::mptcp) where the kernel takes it (Linux 6.6+); elsewhere: Go 1.21+ programs: GODEBUG=multipathtcp=1, dynamically linked ones: sockwrap run --mptcp without --kernel"
        }
        _ => return None,
    })
}

/// The options and actions `--kernel` cannot carry out, one line each: why, and what to use
/// instead. A policy with any of them is refused, never applied in part. (`deny` and
/// `redirect` are carried out: connect4/6 and sendmsg4/6 refuse or rewrite the address.)
pub fn refusals(policy: &Policy) -> Vec<String> {
    let mut out = Vec::new();
    for rule in policy.rules() {
        for (opt, _) in rule.settings.iter() {
            // MPTCP is not set by bpf_setsockopt but by the conversion program, where the
            // kernel takes it (crate::mptcp: loaded, or refused by name, by the caller).
            if opt == Opt::Mptcp {
                continue;
            }
            if let Some(why) = refused_opt(opt) {
                out.push(format!("rule `{}`: {}: {why}", rule.name, opt.name()));
            }
        }
        let name = &rule.name;
        if rule.matcher.uses_host() {
            out.push(format!("rule `{name}`: match.host: host names are known only to the library, which sees the program's getaddrinfo; the kernel sees addresses (use match.remote, or sockwrap run without --kernel)"));
        }
        let a = &rule.actions;
        if a.delay_ms.is_some() {
            out.push(format!("rule `{name}`: delay: a BPF program cannot hold a connect back and let it go later; use sockwrap run without --kernel"));
        }
        if a.fail.is_some() {
            out.push(format!("rule `{name}`: fail: the seeded per-rule choices live in the library; use sockwrap run without --kernel"));
        }
    }
    out
}

/// A rule's match and its exception: the fields of both cut the classes (so that `decide`
/// on one representative per class sees every exception as the library does).
fn matches(r: &sockwrap_policy::Rule) -> impl Iterator<Item = &sockwrap_policy::rules::Match> {
    core::iter::once(&r.matcher).chain(r.matcher.except.as_deref())
}

/// The slot each kernel option a program may set belongs to: every catalog option's
/// kernel options and their `same_as` aliases.
fn lockable() -> Vec<((i32, i32), u32)> {
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

/// Cuts 0..=65535 at the start and one past the end of every range: ports between two cuts
/// are in the same ranges. Returns the class of every port and one representative per class.
fn port_classes(ranges: &[sockwrap_policy::rules::Ports]) -> (Vec<u16>, Vec<u16>) {
    let mut cuts: Vec<u32> = vec![0];
    for r in ranges {
        cuts.push(r.lo as u32);
        cuts.push(r.hi as u32 + 1);
    }
    cuts.retain(|&c| c <= 65535);
    cuts.sort_unstable();
    cuts.dedup();
    let mut class = vec![0u16; 65536];
    for (i, w) in cuts.iter().enumerate() {
        let end = cuts.get(i + 1).copied().unwrap_or(65536);
        for p in *w..end {
            class[p as usize] = i as u16;
        }
    }
    let reps = cuts.iter().map(|&c| c as u16).collect();
    (class, reps)
}

/// An address of each network class, or `None` where the class has none (its network is
/// covered by longer ones): for class k ≥ 1 an address in CIDR k and in no longer CIDR of
/// the set, for class 0 an address in none. Any maximal interval of such addresses starts at
/// the network's first address or just past a longer CIDR's end, so those are the candidates.
fn network_representatives(cidrs: &[(u128, u128)]) -> Vec<Option<u128>> {
    let end = |(net, mask): (u128, u128)| net | !mask;
    let longest = |ip: u128| -> Option<usize> {
        cidrs
            .iter()
            .enumerate()
            .filter(|(_, (net, mask))| ip & mask == *net)
            .max_by_key(|(_, (_, mask))| mask.count_ones())
            .map(|(i, _)| i)
    };
    let mut reps = Vec::with_capacity(cidrs.len() + 1);
    // Class 0: an address in no CIDR.
    let mut cands = vec![0u128];
    cands.extend(cidrs.iter().filter_map(|&c| end(c).checked_add(1)));
    reps.push(cands.into_iter().find(|&ip| longest(ip).is_none()));
    for (k, &(net, mask)) in cidrs.iter().enumerate() {
        let mut cands = vec![net];
        cands.extend(
            cidrs
                .iter()
                .filter(|&&(n2, m2)| m2.count_ones() > mask.count_ones() && n2 & mask == net)
                .filter_map(|&c| end(c).checked_add(1))
                .filter(|ip| ip & mask == net),
        );
        reps.push(cands.into_iter().find(|&ip| longest(ip) == Some(k)));
    }
    reps
}

/// The name the kernel keeps for a task (`comm`): the first 15 bytes, NUL-padded.
pub fn comm_key(name: &str) -> [u8; 16] {
    let mut k = [0u8; 16];
    let b = name.as_bytes();
    let n = b.len().min(15);
    k[..n].copy_from_slice(&b[..n]);
    k
}

/// The interface index of `name`, in sockwrap's network namespace.
pub fn system_ifindex(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: if_nametoindex reads a NUL-terminated string and nothing else.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

fn kernel_plan(rec: &PlanRecord, ifindex: &dyn Fn(&str) -> Option<u32>) -> Result<KPlan, Error> {
    let mut k = KPlan {
        lock: rec.lock,
        slots: rec.slots,
        len: 0,
        pad: 0,
        ops: [PlanOp::EMPTY; MAX_OPS],
    };
    for (i, op) in rec.ops().iter().enumerate() {
        let mut op = *op;
        // The device by index: sock_create can only write an index (bound_dev_if), and one
        // form for every program keeps the plans identical.
        if op.level == SOL_SOCKET && op.name == SO_BINDTODEVICE {
            let name = String::from_utf8_lossy(op.bytes())
                .trim_end_matches('\0')
                .to_string();
            let idx = ifindex(&name).ok_or_else(|| {
                Error(format!(
                    "bind-interface: no interface `{name}` here (the kernel backend binds by index, resolved when sockwrap starts)"
                ))
            })?;
            op.name = SO_BINDTOIFINDEX;
            op.val = [0; 16];
            op.val[..4].copy_from_slice(&(idx as i32).to_ne_bytes());
            op.len = 4;
        }
        if let Some(slot) = k.ops.get_mut(i) {
            *slot = op;
            k.len += 1;
        }
    }
    Ok(k)
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
fn socket_locks(
    plans: &[KPlan],
    decisions: &[(DKey, u32)],
    ipcs: &[u32],
    n_rpc: usize,
    n_lpc: usize,
) -> bool {
    let tcp = transport_code(Transport::Tcp);
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

impl Tables {
    /// Every decision of `policy`, as map contents; interface names are resolved in
    /// sockwrap's network namespace ([`system_ifindex`]).
    pub fn build(policy: &Policy) -> Result<Tables, Error> {
        Tables::build_with(policy, &system_ifindex)
    }

    /// Every decision of `policy`, as map contents, with `ifindex` giving the index of an
    /// interface name (`bind-interface`: the programs bind by index). Pure: the same
    /// policy and lookup give the same tables.
    pub fn build_with(
        policy: &Policy,
        ifindex: &dyn Fn(&str) -> Option<u32>,
    ) -> Result<Tables, Error> {
        // Program classes.
        let mut names: Vec<String> = policy
            .rules()
            .iter()
            .flat_map(matches)
            .flat_map(|m| m.program.iter().cloned())
            .collect();
        names.sort();
        names.dedup();
        let mut by_key: Vec<([u8; 16], Vec<String>)> = Vec::new();
        let mut truncated = Vec::new();
        for n in names {
            let key = comm_key(&n);
            if n.len() > 15 {
                let seen = String::from_utf8_lossy(&key[..15]).into_owned();
                truncated.push((n.clone(), seen));
            }
            match by_key.iter_mut().find(|(k, _)| *k == key) {
                Some((_, v)) => v.push(n),
                None => by_key.push((key, vec![n])),
            }
        }
        let mut prog_policies = vec![policy.for_program(&[])];
        let mut programs = Vec::new();
        for (i, (key, names)) in by_key.iter().enumerate() {
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            prog_policies.push(policy.for_program(&refs));
            programs.push((*key, i as u32 + 1));
        }

        // Network classes.
        let mut cidrs: Vec<(u128, u128)> = policy
            .rules()
            .iter()
            .flat_map(matches)
            .flat_map(|m| m.remote.iter().map(Cidr::parts))
            .collect();
        cidrs.sort_by_key(|&(net, mask)| (mask.count_ones(), net));
        cidrs.dedup();
        let net_reps = network_representatives(&cidrs);
        let networks = cidrs
            .iter()
            .enumerate()
            .map(|(i, &(net, mask))| Network {
                prefix_len: mask.count_ones(),
                addr: net.to_be_bytes(),
                class: i as u32 + 1,
            })
            .collect();

        // Port classes.
        let rranges: Vec<_> = policy
            .rules()
            .iter()
            .flat_map(matches)
            .flat_map(|m| m.port.iter().copied())
            .collect();
        let lranges: Vec<_> = policy
            .rules()
            .iter()
            .flat_map(matches)
            .flat_map(|m| m.local_port.iter().copied())
            .collect();
        let (rport_class, rreps) = port_classes(&rranges);
        let (lport_class, lreps) = port_classes(&lranges);

        let n_keys = prog_policies.len() * net_reps.len() * rreps.len() * lreps.len() * 2 * 5 * 3;
        if n_keys > MAX_DECISIONS * 4 {
            return Err(Error(format!(
                "the policy has too many combinations for the kernel backend ({} programs × {} networks × {} remote port ranges × {} local port ranges); use the library, or fewer overlapping rules",
                prog_policies.len(),
                net_reps.len(),
                rreps.len(),
                lreps.len()
            )));
        }

        let mut plans: Vec<KPlan> = Vec::new();
        let mut plan_index: HashMap<KPlan, u32> = HashMap::new();
        let mut decisions = Vec::new();
        let mut actions = Vec::new();
        for (pc, pol) in prog_policies.iter().enumerate() {
            for t in [Transport::Tcp, Transport::Udp] {
                for stage in Stage::ALL {
                    let Some(sh) = shape(stage, t) else {
                        continue;
                    };
                    let nets: Vec<(u32, Option<u128>)> = if sh.remote {
                        net_reps
                            .iter()
                            .enumerate()
                            .filter_map(|(c, r)| r.map(|ip| (c as u32, Some(ip))))
                            .collect()
                    } else {
                        vec![(0, None)]
                    };
                    let rps: Vec<(u16, u16)> = if sh.remote {
                        rreps
                            .iter()
                            .enumerate()
                            .map(|(c, &p)| (c as u16, p))
                            .collect()
                    } else {
                        vec![(0, 0)]
                    };
                    let lps: Vec<(u16, Option<u16>)> = if sh.local {
                        lreps
                            .iter()
                            .enumerate()
                            .map(|(c, &p)| (c as u16, Some(p)))
                            .collect()
                    } else {
                        vec![(0, None)]
                    };
                    for &(ipc, ip) in &nets {
                        for &(rpc, rport) in &rps {
                            for &(lpc, lport) in &lps {
                                let ctx = Ctx {
                                    transport: t,
                                    role: sh.role,
                                    remote: ip.map(|ip| (ip, rport)),
                                    local_port: lport,
                                    host: None,
                                };
                                if stage == Stage::Connect && pol.any_actions() {
                                    if let Some(a) = KAction::of(&pol.connect_actions(&ctx).actions)
                                    {
                                        actions.push((
                                            action_key(pc as u32, transport_code(t), ipc, rpc),
                                            a,
                                        ));
                                    }
                                }
                                let d = pol.decide(&ctx);
                                if d.is_empty() {
                                    continue;
                                }
                                // An accepted socket has what its listener passed on, as in
                                // the library: those slots are not set again, unless the
                                // listener got no listen plan here (ACCEPT_FULL).
                                let inherited = if stage == Stage::Accept {
                                    let listener = pol.decide(&Ctx {
                                        remote: None,
                                        ..ctx
                                    });
                                    d.inherited_from(&listener)
                                } else {
                                    0
                                };
                                let runs: &[(u8, u32)] = if stage == Stage::Accept {
                                    &[(Stage::Accept as u8, 1), (STAGE_ACCEPT_FULL, 0)]
                                } else {
                                    &[(stage as u8, 0)]
                                };
                                for &v in sh.variants {
                                    for &(stage_code, use_skip) in runs {
                                        let skip = if use_skip == 1 { inherited } else { 0 };
                                        let rec = d.plan(stage, t, v, skip).record();
                                        if rec.len == 0 && rec.lock == 0 {
                                            continue;
                                        }
                                        let kp = kernel_plan(&rec, ifindex)?;
                                        let idx = match plan_index.get(&kp) {
                                            Some(&i) => i,
                                            None => {
                                                plans.push(kp);
                                                let i = plans.len() as u32 - 1;
                                                plan_index.insert(kp, i);
                                                i
                                            }
                                        };
                                        decisions.push((
                                            DKey {
                                                ipc,
                                                prog: pc as u32,
                                                rpc,
                                                lpc,
                                                transport: transport_code(t),
                                                stage: stage_code,
                                                variant: v as u8,
                                                pad: 0,
                                            },
                                            idx,
                                        ));
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        if decisions.len() + actions.len() > MAX_DECISIONS {
            return Err(Error(format!(
                "the policy needs {} decisions in the kernel, more than {MAX_DECISIONS}; use the library, or fewer overlapping rules",
                decisions.len() + actions.len()
            )));
        }
        let mut flags = 0;
        if !programs.is_empty() {
            flags |= CFG_PROGRAMS;
        }
        if policy.on_error == OnError::Fail {
            flags |= CFG_STRICT;
        }
        if !actions.is_empty() {
            flags |= CFG_ACTIONS;
        }
        let ipcs: Vec<u32> = (0..net_reps.len() as u32)
            .filter(|&c| net_reps[c as usize].is_some())
            .collect();
        if programs.is_empty()
            && actions.is_empty()
            && socket_locks(&plans, &decisions, &ipcs, rreps.len(), lreps.len())
        {
            flags |= CFG_SOCKET_LOCKS;
        }
        let redirects = actions.iter().any(|(_, a)| a.flags & ACT_REDIRECT != 0);
        // Only options some plan locks: the setsockopt program passes every other option
        // on after one map lookup.
        let locked = plans.iter().fold(0, |m, p| m | p.lock);
        let lockable = lockable()
            .into_iter()
            .filter(|(_, slot)| locked & (1u32 << (slot & 31)) != 0)
            .collect();
        Ok(Tables {
            flags,
            plans,
            decisions,
            actions,
            redirects,
            networks,
            rport_class,
            lport_class,
            programs,
            lockable,
            truncated_programs: truncated,
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

#[cfg(test)]
mod agreement;

#[cfg(test)]
mod tests {
    use super::*;
    use sockwrap_policy::rules::{ip_key, Ports, Rule};
    use sockwrap_policy::Value;

    fn ip(s: &str) -> u128 {
        ip_key(s.parse().expect("address"))
    }

    fn names(p: &KPlan) -> Vec<&'static str> {
        p.ops().iter().map(|o| o.cname()).collect()
    }

    #[test]
    fn a_flag_policy_reaches_every_stage() {
        let mut r = Rule::new("flags");
        r.set(Opt::Tos, Value::Int(0xb8), false);
        let p = Policy::new(vec![r], OnError::Warn);
        let t = Tables::build(&p).expect("tables");
        for (tr, st) in [
            (Transport::Tcp, Stage::Connect),
            (Transport::Tcp, Stage::Listen),
            (Transport::Tcp, Stage::Accept),
            (Transport::Udp, Stage::Connect),
            (Transport::Udp, Stage::UdpCreate),
        ] {
            let k = t.key(
                None,
                tr,
                st,
                Variant::V4,
                Some((ip("10.0.0.1"), 80)),
                Some(80),
            );
            let k = DKey {
                ipc: 0,
                rpc: 0,
                lpc: 0,
                // What an accepted socket gets when its listener passed nothing on.
                stage: if st == Stage::Accept {
                    STAGE_ACCEPT_FULL
                } else {
                    st as u8
                },
                ..k
            };
            let plan = t.plan(&k).unwrap_or_else(|| panic!("{tr:?} {st:?}"));
            assert_eq!(names(plan), vec!["IP_TOS"], "{tr:?} {st:?}");
            assert_eq!(plan.lock, Opt::Tos.bit());
        }
        // TCP bind sets only bind-time options: none here.
        let k = t.key(
            None,
            Transport::Tcp,
            Stage::Bind,
            Variant::V4,
            None,
            Some(80),
        );
        assert!(t.plan(&k).is_none());
        // No program rules, strict or actions; TCP locks follow from the socket.
        assert_eq!(t.flags, CFG_SOCKET_LOCKS);
    }

    #[test]
    fn accepted_sockets_get_only_what_the_listener_did_not_pass_on() {
        let mut r = Rule::new("server");
        r.matcher.role = Some(Role::Server);
        r.set(Opt::Tos, Value::Int(0xb8), false);
        r.set(Opt::Priority, Value::Int(5), false);
        let p = Policy::new(vec![r], OnError::Warn);
        let t = Tables::build(&p).expect("tables");
        let remote = Some((ip("127.0.0.1"), 40000));
        let k = t.key(
            None,
            Transport::Tcp,
            Stage::Accept,
            Variant::V4,
            remote,
            Some(80),
        );
        let inherited = t.plan(&k).expect("accept plan");
        assert_eq!(names(inherited), vec!["SO_PRIORITY"]); // not inherited (6.18)
        assert_eq!(inherited.lock, Opt::Tos.bit() | Opt::Priority.bit());
        let full = t
            .plan(&DKey {
                stage: STAGE_ACCEPT_FULL,
                ..k
            })
            .expect("full accept plan");
        assert_eq!(names(full), vec!["IP_TOS", "SO_PRIORITY"]);
    }

    #[test]
    fn networks_and_ports_match_as_the_library_does() {
        let mut wide = Rule::new("wide");
        wide.matcher.remote = vec![Cidr::parse("10.0.0.0/8").expect("cidr")];
        wide.set(Opt::Tos, Value::Int(0x28), false);
        let mut narrow = Rule::new("narrow");
        narrow.matcher.remote = vec![Cidr::parse("10.1.0.0/16").expect("cidr")];
        narrow.matcher.port = vec![Ports { lo: 443, hi: 443 }];
        narrow.set(Opt::Tos, Value::Int(0xb8), false);
        let p = Policy::new(vec![wide, narrow], OnError::Warn);
        let t = Tables::build(&p).expect("tables");
        for (dest, port) in [
            ("10.1.2.3", 443),
            ("10.1.2.3", 80),
            ("10.2.0.1", 443),
            ("192.0.2.1", 443),
            ("10.0.0.0", 443),
            ("10.1.0.0", 443),
        ] {
            let remote = (ip(dest), port);
            let want = p.decide(&Ctx {
                transport: Transport::Tcp,
                role: Some(Role::Client),
                remote: Some(remote),
                local_port: None,
                host: None,
            });
            let want = want
                .plan(Stage::Connect, Transport::Tcp, Variant::V4, 0)
                .record();
            let k = t.key(
                None,
                Transport::Tcp,
                Stage::Connect,
                Variant::V4,
                Some(remote),
                None,
            );
            let got = t.plan(&k).map(|k| k.ops().to_vec()).unwrap_or_default();
            assert_eq!(got, want.ops().to_vec(), "{dest}:{port}");
        }
    }

    #[test]
    fn representatives_avoid_longer_networks() {
        let c = |s| Cidr::parse(s).expect("cidr").parts();
        // 10.0.0.0/8 with its first /16 taken by a longer rule: 10.1.0.0 stands for it.
        let set = vec![c("10.0.0.0/8"), c("10.0.0.0/16")];
        let reps = network_representatives(&set);
        assert_eq!(reps[1], Some(ip("10.1.0.0")));
        assert_eq!(reps[2], Some(ip("10.0.0.0")));
        assert_eq!(reps[0], Some(0));
        // A network covered entirely by longer ones has no class of its own.
        let set = vec![c("10.0.0.0/31"), c("10.0.0.0/32"), c("10.0.0.1/32")];
        assert_eq!(network_representatives(&set)[1], None);
    }

    #[test]
    fn programs_are_matched_by_comm() {
        let mut r = Rule::new("go");
        r.matcher.program = vec!["a-very-long-program-name".into()];
        r.set(Opt::Mark, Value::Int(7), false);
        let p = Policy::new(vec![r], OnError::Fail);
        let t = Tables::build(&p).expect("tables");
        assert_eq!(t.flags, CFG_PROGRAMS | CFG_STRICT);
        assert_eq!(
            t.truncated_programs,
            vec![("a-very-long-program-name".into(), "a-very-long-pro".into())]
        );
        let k = t.key(
            Some("a-very-long-pro"),
            Transport::Tcp,
            Stage::Connect,
            Variant::V4,
            Some((ip("127.0.0.1"), 1)),
            None,
        );
        assert_eq!(t.plan(&k).map(names), Some(vec!["SO_MARK"]));
        let other = t.key(
            Some("curl"),
            Transport::Tcp,
            Stage::Connect,
            Variant::V4,
            Some((ip("127.0.0.1"), 1)),
            None,
        );
        assert!(t.plan(&other).is_none());
    }

    #[test]
    fn what_bpf_cannot_set_is_refused_by_name() {
        let mut r = Rule::new("flags");
        r.set(Opt::Linger, Value::Int(5), false);
        r.set(Opt::Ttl, Value::Int(9), false);
        r.set(Opt::Mptcp, Value::Bool(true), false);
        r.set(Opt::Tos, Value::Int(0xb8), false);
        let p = Policy::new(vec![r], OnError::Warn);
        let lines = refusals(&p);
        // MPTCP is the conversion program's (crate::mptcp), refused there where it cannot be.
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines.iter().any(|l| l.contains("SO_LINGER")));
        assert!(lines.iter().any(|l| l.contains("IP_TTL")));
    }

    fn connect_key(t: &Tables, tr: Transport, dest: &str, port: u16) -> DKey {
        t.key(
            None,
            tr,
            Stage::Connect,
            Variant::V4,
            Some((ip(dest), port)),
            None,
        )
    }

    #[test]
    fn deny_and_redirect_last_rule_wins_per_kind_as_in_the_library() {
        let to = |s: &str| sockwrap_policy::rules::Redirect {
            to: s.parse().expect("address"),
            show_target: false,
        };
        let mut wide = Rule::new("wide");
        wide.matcher.remote = vec![Cidr::parse("10.0.0.0/8").expect("cidr")];
        wide.actions.redirect = Some(to("127.0.0.1:8443"));
        let mut db = Rule::new("db");
        db.matcher.port = vec![Ports { lo: 5432, hi: 5432 }];
        db.matcher.transport = Some(Transport::Tcp);
        db.actions.deny = Some(101);
        let mut v6 = Rule::new("v6");
        v6.matcher.remote = vec![Cidr::parse("10.1.0.0/16").expect("cidr")];
        v6.actions.redirect = Some(sockwrap_policy::rules::Redirect {
            to: "[::1]:9000".parse().expect("address"),
            show_target: true,
        });
        let mut marked = Rule::new("options only");
        marked.set(Opt::Tos, Value::Int(0xb8), false);
        let p = Policy::new(vec![wide, db, v6, marked], OnError::Warn);
        let t = Tables::build(&p).expect("tables");
        assert_eq!(t.flags & CFG_ACTIONS, CFG_ACTIONS);
        assert!(t.redirects);
        for tr in [Transport::Tcp, Transport::Udp] {
            for (dest, port) in [
                ("10.2.0.1", 80),
                ("10.1.0.1", 80),
                ("10.1.0.1", 5432),
                ("192.0.2.1", 5432),
                ("192.0.2.1", 80),
            ] {
                let want = p
                    .connect_actions(&Ctx {
                        transport: tr,
                        role: Some(Role::Client),
                        remote: Some((ip(dest), port)),
                        local_port: None,
                        host: None,
                    })
                    .actions;
                let got = t.action(&connect_key(&t, tr, dest, port));
                let deny = got.map(|a| a.deny).filter(|&e| e != 0);
                assert_eq!(deny, want.deny.map(|e| e as u32), "{tr:?} {dest}:{port}");
                // A denied connect is not redirected (nothing leaves).
                let redirect = got.and_then(KAction::target);
                let want_redirect = want.redirect.filter(|_| want.deny.is_none());
                assert_eq!(
                    redirect,
                    want_redirect.map(|r| r.to),
                    "{tr:?} {dest}:{port}"
                );
                if let (Some(a), Some(r)) = (got, want_redirect) {
                    assert_eq!(a.flags & ACT_SHOW_TARGET != 0, r.show_target);
                    assert_eq!(a.flags & ACT_TARGET_V4 != 0, r.to.is_ipv4());
                }
            }
        }
        // The later rule's redirect, in the target's v4-mapped form for IPv4.
        let a = t
            .action(&connect_key(&t, Transport::Tcp, "10.2.0.1", 80))
            .expect("redirected");
        assert_eq!(a.ip6, ip("127.0.0.1").to_be_bytes());
        assert_eq!((a.port, a.flags), (8443, ACT_REDIRECT | ACT_TARGET_V4));
        // Without action rules the programs never look actions up.
        let mut r = Rule::new("flags");
        r.set(Opt::Tos, Value::Int(0xb8), false);
        let t = Tables::build(&Policy::new(vec![r], OnError::Warn)).expect("tables");
        assert!(t.actions.is_empty() && !t.redirects && t.flags & CFG_ACTIONS == 0);
    }

    /// `except` cuts the classes too: the excepted network gets no action in the kernel, the
    /// rest of the rule's network does.
    #[test]
    fn the_kernel_tables_honour_an_exception() {
        let mut r = Rule::new("no-https-but-the-lab");
        r.matcher.port = vec![Ports { lo: 443, hi: 443 }];
        r.matcher.except = Some(Box::new(sockwrap_policy::rules::Match {
            remote: vec![Cidr::parse("10.9.0.0/16").expect("cidr")],
            ..Default::default()
        }));
        r.actions.deny = Some(111);
        let p = Policy::new(vec![r], OnError::Warn);
        let t = Tables::build(&p).expect("tables");
        let denied = |dest: &str, port: u16| {
            t.action(&connect_key(&t, Transport::Tcp, dest, port))
                .is_some_and(|a| a.deny == 111)
        };
        assert!(denied("10.1.0.1", 443));
        assert!(denied("192.0.2.1", 443));
        assert!(!denied("10.9.0.1", 443), "excepted network");
        assert!(!denied("10.9.255.255", 443), "excepted network");
        assert!(denied("10.10.0.0", 443), "just past the exception");
        assert!(!denied("10.1.0.1", 80), "another port");
    }

    #[test]
    fn deny_and_redirect_are_carried_out_delay_fail_and_host_refused() {
        let mut a = Rule::new("a");
        a.actions.deny = Some(111);
        a.actions.redirect = Some(sockwrap_policy::rules::Redirect {
            to: "127.0.0.1:1".parse().expect("address"),
            show_target: false,
        });
        assert!(refusals(&Policy::new(vec![a.clone()], OnError::Warn)).is_empty());
        a.actions.delay_ms = Some(10);
        a.actions.fail = Some(sockwrap_policy::rules::Fail { ppm: 1, errno: 104 });
        a.matcher.host = vec![sockwrap_policy::rules::HostPat::parse("db.test").expect("host")];
        let lines = refusals(&Policy::new(vec![a], OnError::Warn));
        assert_eq!(lines.len(), 3, "{lines:?}");
        for what in ["delay:", "fail:", "match.host:"] {
            assert!(lines.iter().any(|l| l.contains(what)), "{what} {lines:?}");
        }
    }

    /// TCP sockets go without storage (their locks looked up again from their addresses)
    /// only where that gives every socket the locks the plans it got carry.
    #[test]
    fn tcp_locks_follow_from_the_socket_only_where_the_roles_agree() {
        let build = |rules| Tables::build(&Policy::new(rules, OnError::Warn)).expect("tables");
        let mut flags = Rule::new("flags");
        flags.set(Opt::Tos, Value::Int(0xb8), false);
        flags.set(Opt::Priority, Value::Int(5), false);
        let t = build(vec![flags.clone()]);
        assert_eq!(t.flags & CFG_SOCKET_LOCKS, CFG_SOCKET_LOCKS);
        // Only the locked options reach the setsockopt program's table.
        let slots: Vec<u32> = t.lockable.iter().map(|(_, s)| *s).collect();
        assert!(slots
            .iter()
            .all(|&s| s == Opt::Tos as u32 || s == Opt::Priority as u32));
        assert!(slots.contains(&(Opt::Tos as u32)));

        // A rule for one network, whatever the role: the peer decides, for both roles.
        let mut lab = Rule::new("lab");
        lab.matcher.remote = vec![Cidr::parse("10.0.0.0/8").expect("cidr")];
        lab.set(Opt::Tos, Value::Int(0x28), false);
        assert_eq!(build(vec![lab]).flags & CFG_SOCKET_LOCKS, CFG_SOCKET_LOCKS);

        // A server-role rule: an accepted socket is locked where a client to the same peer
        // is not.
        let mut server = Rule::new("server");
        server.matcher.role = Some(Role::Server);
        server.set(Opt::Tos, Value::Int(0xb8), false);
        assert_eq!(build(vec![server]).flags & CFG_SOCKET_LOCKS, 0);
        // A local port: the listener on it locks what a client does not.
        let mut port = Rule::new("port");
        port.matcher.local_port = vec![Ports { lo: 8080, hi: 8080 }];
        port.set(Opt::Tos, Value::Int(0xb8), false);
        assert_eq!(build(vec![port]).flags & CFG_SOCKET_LOCKS, 0);
        // Program rules: the class lives in the socket's storage.
        let mut go = flags;
        go.matcher.program = vec!["curl".into()];
        assert_eq!(build(vec![go]).flags & CFG_SOCKET_LOCKS, 0);
        // Soft options lock nothing: nothing for the setsockopt program to look up.
        let mut soft = Rule::new("soft");
        soft.set(Opt::Tos, Value::Int(0xb8), true);
        assert!(build(vec![soft]).lockable.is_empty());
    }

    #[test]
    fn locks_cover_every_kernel_option_and_alias() {
        let l = lockable();
        let find = |lv, n| l.iter().find(|(k, _)| *k == (lv, n)).map(|(_, s)| *s);
        assert_eq!(find(0, 1), Some(Opt::Tos as u32)); // IP_TOS
        assert_eq!(find(41, 67), Some(Opt::Tos as u32)); // IPV6_TCLASS
        assert_eq!(find(1, 32), Some(Opt::SndBuf as u32)); // SO_SNDBUFFORCE
        assert_eq!(find(6, 4), Some(Opt::KeepIdle as u32)); // TCP_KEEPIDLE
    }
}
