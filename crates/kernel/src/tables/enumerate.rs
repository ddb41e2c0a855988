//! The enumeration: for every class of socket the programs can meet, the policy's own
//! decision ([`Policy::decide`], [`Policy::connect_actions`]) on a representative socket
//! of the class, on the [`Ctx`] the library's hooks decide on, stored under the key the
//! programs compute.

use super::classes::Classes;
use super::{action_key, transport_code, DKey, KAction, KPlan, MAX_OPS, STAGE_ACCEPT_FULL};
use crate::abi::{ACT_REDIRECT, ACT_SHOW_TARGET, ACT_TARGET_V4, SOL_SOCKET, SO_BINDTOIFINDEX};
use crate::Error;
use sockwrap_policy::plan::{PlanOp, PlanRecord};
use sockwrap_policy::{Ctx, Policy, Role, Stage, Transport, Variant};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

const SO_BINDTODEVICE: i32 = libc::SO_BINDTODEVICE;

/// Where a socket is when a stage is planned: the role it has and what is known.
pub(super) struct StageShape {
    role: Option<Role>,
    remote: bool,
    local: bool,
    variants: &'static [Variant],
}

/// The shape of a socket of transport `t` at `stage`; `None` where the stage has no such
/// socket (listen and accept for UDP, the socket() stage for TCP).
pub(super) fn shape(stage: Stage, t: Transport) -> Option<StageShape> {
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

impl StageShape {
    /// One representative socket per class this stage tells apart: network × remote port
    /// class where the peer is known, local port class where the local port is.
    fn sockets(&self, c: &Classes) -> Vec<ClassSocket> {
        let nets: Vec<(u32, Option<u128>)> = if self.remote {
            let with_address = c.network_reps.iter().enumerate();
            with_address
                .filter_map(|(class, r)| r.map(|ip| (class as u32, Some(ip))))
                .collect()
        } else {
            vec![(0, None)]
        };
        let rports: Vec<(u16, u16)> = if self.remote {
            c.rports
                .reps
                .iter()
                .enumerate()
                .map(|(k, &p)| (k as u16, p))
                .collect()
        } else {
            vec![(0, 0)]
        };
        let lports: Vec<(u16, Option<u16>)> = if self.local {
            let reps = c.lports.reps.iter().enumerate();
            reps.map(|(k, &p)| (k as u16, Some(p))).collect()
        } else {
            vec![(0, None)]
        };
        let mut out = Vec::with_capacity(nets.len() * rports.len() * lports.len());
        for &(ipc, ip) in &nets {
            for &(rpc, rport) in &rports {
                for &(lpc, lport) in &lports {
                    out.push(ClassSocket {
                        ipc,
                        rpc,
                        lpc,
                        remote: ip.map(|ip| SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), rport)),
                        lport,
                    });
                }
            }
        }
        out
    }

    /// The context the library decides a socket of this shape on (`crates/preload/src/
    /// apply.rs`: socket, bind, connect, listen, accept).
    fn ctx(&self, t: Transport, s: &ClassSocket) -> Ctx<'static> {
        match (self.role, s.lport) {
            (Some(Role::Client), _) => Ctx::client(t, s.remote.as_ref(), None),
            (Some(Role::Server), Some(lport)) => Ctx::server(t, lport, s.remote.as_ref()),
            _ => Ctx::new(t),
        }
    }
}

/// A representative socket of one class: its classes, and the peer (an IPv4 peer in its
/// v4-mapped form: the policy matches it the same) and local port the policy decides on.
struct ClassSocket {
    ipc: u32,
    rpc: u16,
    lpc: u16,
    remote: Option<SocketAddr>,
    lport: Option<u16>,
}

/// The decisions and actions found so far, each distinct plan stored once.
pub(super) struct Enumeration<'a> {
    ifindex: &'a dyn Fn(&str) -> Option<u32>,
    pub plans: Vec<KPlan>,
    plan_index: HashMap<KPlan, u32>,
    pub decisions: Vec<(DKey, u32)>,
    pub actions: Vec<(DKey, KAction)>,
}

impl<'a> Enumeration<'a> {
    pub fn new(ifindex: &'a dyn Fn(&str) -> Option<u32>) -> Enumeration<'a> {
        Enumeration {
            ifindex,
            plans: Vec::new(),
            plan_index: HashMap::new(),
            decisions: Vec::new(),
            actions: Vec::new(),
        }
    }

    /// Every decision and action of program class `prog`, whose policy is `pol`.
    pub fn program(&mut self, prog: u32, pol: &Policy, c: &Classes) -> Result<(), Error> {
        for t in [Transport::Tcp, Transport::Udp] {
            for stage in Stage::ALL {
                let Some(sh) = shape(stage, t) else {
                    continue;
                };
                for s in sh.sockets(c) {
                    let ctx = sh.ctx(t, &s);
                    if stage == Stage::Connect && pol.any_actions() {
                        self.action(pol, &ctx, prog, &s);
                    }
                    self.decision(pol, &ctx, prog, stage, &sh, &s)?;
                }
            }
        }
        Ok(())
    }

    /// The `deny` or `redirect` a connect of `ctx` gets, if any.
    fn action(&mut self, pol: &Policy, ctx: &Ctx, prog: u32, s: &ClassSocket) {
        if let Some(a) = KAction::of(&pol.connect_actions(ctx).actions) {
            let key = action_key(prog, transport_code(ctx.transport), s.ipc, s.rpc);
            self.actions.push((key, a));
        }
    }

    /// The plans of `ctx` at `stage`, per IP variant (and for accept, with and without what
    /// the listener passed on).
    fn decision(
        &mut self,
        pol: &Policy,
        ctx: &Ctx,
        prog: u32,
        stage: Stage,
        sh: &StageShape,
        s: &ClassSocket,
    ) -> Result<(), Error> {
        let d = pol.decide(ctx);
        if d.is_empty() {
            return Ok(());
        }
        // An accepted socket has what its listener passed on, as in the library: those
        // slots are not set again, unless the listener got no listen plan here
        // (STAGE_ACCEPT_FULL).
        let runs: &[(u8, bool)] = if stage == Stage::Accept {
            &[(Stage::Accept as u8, true), (STAGE_ACCEPT_FULL, false)]
        } else {
            &[(stage as u8, false)]
        };
        let inherited = match (stage, s.lport) {
            (Stage::Accept, Some(lport)) => {
                d.inherited_from(&pol.decide(&Ctx::server(ctx.transport, lport, None)))
            }
            _ => 0,
        };
        for &v in sh.variants {
            for &(stage_code, listened) in runs {
                let skip = if listened { inherited } else { 0 };
                let rec = d.plan(stage, ctx.transport, v, skip).record();
                if rec.len == 0 && rec.lock == 0 {
                    continue;
                }
                let index = self.intern(kernel_plan(&rec, self.ifindex)?);
                let key = DKey {
                    ipc: s.ipc,
                    prog,
                    rpc: s.rpc,
                    lpc: s.lpc,
                    transport: transport_code(ctx.transport),
                    stage: stage_code,
                    variant: v as u8,
                    pad: 0,
                };
                self.decisions.push((key, index));
            }
        }
        Ok(())
    }

    /// The index of `kp` in `plans`, stored there if it is new.
    fn intern(&mut self, kp: KPlan) -> u32 {
        if let Some(&i) = self.plan_index.get(&kp) {
            return i;
        }
        self.plans.push(kp);
        let i = self.plans.len() as u32 - 1;
        self.plan_index.insert(kp, i);
        i
    }
}

/// `rec` in the programs' form: the device of `bind-interface` by index (`ifindex`).
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

impl KAction {
    /// What the programs carry out of `a`: the deny, else the redirect.
    pub(super) fn of(a: &sockwrap_policy::rules::Actions) -> Option<KAction> {
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
}
