//! The tables against the policy itself, on random policies: for every socket the programs
//! could see, the plan the tables hold for its key ([`Tables::key`], [`Tables::plan`]: the
//! lookup the programs do) is exactly the plan [`Policy::decide`] gives that socket in the
//! library, and the connect action ([`Tables::action`]) is exactly
//! [`Policy::connect_actions`]'s.
//!
//! The reference is written from the library's hooks (`crates/preload/src/apply.rs`: which
//! [`Ctx`] each socket call decides on, which options an accepted socket skips), not from
//! the tables' own enumeration, so that a wrong class or a wrong shape of a stage shows.
//!
//! Seeded: `SOCKWRAP_TABLES_SEED` picks another seed (the failure message names the one
//! that failed), `SOCKWRAP_TABLES_ROUNDS` runs more policies.

use super::*;
use crate::abi::{STAGE_ACCEPT, STAGE_BIND, STAGE_CONNECT, STAGE_LISTEN, STAGE_UDP_CREATE};
use sockwrap_policy::catalog::{parse_value, Family, Kind, Opt, Raw};
use sockwrap_policy::plan::{PlanOp, PlanRecord};
use sockwrap_policy::rng::Rng;
use sockwrap_policy::rules::{ip_key, Cidr, Match, Ports, Redirect, Rule};
use sockwrap_policy::Value;
use sockwrap_policy::{Ctx, Role};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

const DEFAULT_SEED: u64 = 0x5eed_7ab1_e500_0001;
const DEFAULT_ROUNDS: usize = 500;

const CIDRS: &[&str] = &[
    "0.0.0.0/0",
    "10.0.0.0/8",
    "10.1.0.0/16",
    "10.1.2.0/24",
    "10.1.2.3/32",
    "192.0.2.0/25",
    "127.0.0.0/8",
    "::/0",
    "2001:db8::/32",
    "2001:db8:1::/48",
    "::1/128",
    "::ffff:10.0.0.0/104",
];
const PORTS: &[u16] = &[0, 1, 22, 80, 443, 1024, 5432, 8080, 40000, 65534, 65535];
/// Distinct in their first 15 bytes: the kernel tells programs apart by `comm` only.
const PROGRAMS: &[&str] = &["curl", "sshd", "a-very-long-program-name", "go-client"];
const INTERFACES: &[(&str, u32)] = &[("lo", 1), ("eth0", 7)];

fn ifindex(name: &str) -> Option<u32> {
    INTERFACES.iter().find(|(n, _)| *n == name).map(|(_, i)| *i)
}

/// `name` from the environment, read by `parse`; `default` when it is not set. A value that
/// does not parse stops the test (a typo must not run the default silently).
fn from_env<T>(name: &str, parse: impl Fn(&str) -> Option<T>, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => parse(v.trim()).unwrap_or_else(|| panic!("{name}={v}: not a number")),
        Err(_) => default,
    }
}

fn seed() -> u64 {
    let parse = |v: &str| match v.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => v.parse().ok(),
    };
    from_env("SOCKWRAP_TABLES_SEED", parse, DEFAULT_SEED)
}

/// The generator's state for one round (splitmix64 of the seed and the round: nearby seeds
/// give unrelated rounds; never 0, which xorshift would keep).
fn round_seed(seed: u64, round: usize) -> u64 {
    let mut z = seed.wrapping_add((round as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) | 1
}

fn rounds() -> usize {
    from_env("SOCKWRAP_TABLES_ROUNDS", |v| v.parse().ok(), DEFAULT_ROUNDS)
}

fn ports(rng: &mut Rng) -> Vec<Ports> {
    (0..rng.below(3))
        .map(|_| {
            let lo = *rng.pick(PORTS);
            let hi = lo.saturating_add(*rng.pick(&[0u16, 0, 1, 100, 30000]));
            Ports { lo, hi }
        })
        .collect()
}

fn matcher(rng: &mut Rng, depth: usize) -> Match {
    let mut m = Match::default();
    if rng.below(2) == 0 {
        m.remote = (0..1 + rng.below(2))
            .map(|_| Cidr::parse(rng.pick::<&str>(CIDRS)).expect("cidr"))
            .collect();
    }
    if rng.below(3) == 0 {
        m.port = ports(rng);
    }
    if rng.below(4) == 0 {
        m.local_port = ports(rng);
    }
    m.role = *rng.pick(&[None, None, Some(Role::Client), Some(Role::Server)]);
    m.transport = *rng.pick(&[None, None, Some(Transport::Tcp), Some(Transport::Udp)]);
    if rng.below(4) == 0 {
        m.program = vec![rng.pick(PROGRAMS).to_string()];
    }
    if depth == 0 && rng.below(5) == 0 {
        m.except = Some(Box::new(matcher(rng, 1)));
    }
    m
}

/// A value `o` accepts, through the same parser as the policy file.
fn value(rng: &mut Rng, o: Opt) -> Option<Value> {
    let spec = o.spec();
    let raw = match spec.kind {
        Kind::Dscp => Raw::Int(rng.below(64) as i64),
        Kind::Bool => Raw::Bool(rng.below(2) == 0),
        Kind::Int { min, max, .. } => Raw::Int(match rng.below(3) {
            0 => min,
            1 => max,
            _ => min + (rng.next_u64() % (max - min + 1).clamp(1, 1 << 20) as u64) as i64,
        }),
        Kind::Name if o == Opt::BindInterface => Raw::Str(rng.pick(INTERFACES).0),
        Kind::Name => Raw::Str(rng.pick::<&str>(&["reno", "cubic"])),
        Kind::Addrs => Raw::Str(rng.pick::<&str>(&["127.0.0.2", "::1", "127.0.0.2,::1"])),
        Kind::Linger => return None,
    };
    parse_value(o, spec.name, raw).ok()
}

fn rule(rng: &mut Rng, i: usize) -> Rule {
    let mut r = Rule::new(format!("r{i}"));
    r.matcher = matcher(rng, 0);
    // Only what the kernel backend carries out (the rest is refused by name, `refusals`).
    let usable: Vec<Opt> = Opt::ALL
        .into_iter()
        .filter(|&o| refused_opt(o).is_none())
        .collect();
    for _ in 0..rng.below(4) {
        let o = *rng.pick(&usable);
        if let Some(v) = value(rng, o) {
            r.set(o, v, rng.below(3) == 0);
        }
    }
    match rng.below(8) {
        0 => r.actions.deny = Some(*rng.pick(&[101, 111, 113])),
        1 | 2 => {
            r.actions.redirect = Some(Redirect {
                to: *rng.pick(&[
                    "127.0.0.1:8443".parse().expect("address"),
                    "[::1]:9000".parse().expect("address"),
                ]),
                show_target: rng.below(2) == 0,
            })
        }
        _ => {}
    }
    r
}

/// An address near one of the pool's networks (its first, last, one past, one before, or
/// one inside), as a socket of `v6` family would see it.
fn remote(rng: &mut Rng, v6: bool) -> SocketAddr {
    let (net, mask) = Cidr::parse(rng.pick::<&str>(CIDRS)).expect("cidr").parts();
    let ip = match rng.below(5) {
        0 => net,
        1 => net | !mask,
        2 => (net | !mask).wrapping_add(1),
        3 => net.wrapping_sub(1),
        _ => net | (u128::from(rng.next_u64()) & !mask),
    };
    let v6addr = Ipv6Addr::from(ip);
    let port = rng
        .pick(PORTS)
        .wrapping_add(*rng.pick(&[0u16, 0, 1, u16::MAX]));
    let addr = match (v6, v6addr.to_ipv4_mapped()) {
        (false, Some(v4)) => IpAddr::V4(v4),
        // An AF_INET socket cannot reach an IPv6 address: the IPv4 form of its low bits.
        (false, None) => IpAddr::V4(Ipv4Addr::from(ip as u32)),
        (true, _) => IpAddr::V6(v6addr),
    };
    SocketAddr::new(addr, port)
}

/// A plan as the library would carry it out, in the programs' form: the interface of
/// `bind-interface` by index.
fn reference(rec: &PlanRecord) -> Option<(Vec<PlanOp>, u32, u32)> {
    if rec.len == 0 && rec.lock == 0 {
        return None;
    }
    let ops = rec
        .ops()
        .iter()
        .map(|op| {
            let mut op = *op;
            if op.level == libc::SOL_SOCKET && op.name == libc::SO_BINDTODEVICE {
                let name = String::from_utf8_lossy(op.bytes());
                let i = ifindex(name.trim_end_matches('\0')).expect("known interface");
                op.name = libc::SO_BINDTOIFINDEX;
                op.val = [0; 16];
                op.val[..4].copy_from_slice(&(i as i32).to_ne_bytes());
                op.len = 4;
            }
            op
        })
        .collect();
    Some((ops, rec.lock, rec.slots))
}

/// One socket call of a [`Socket`]: the stage, the key's stage, the context the library
/// decides on and the options it skips, and what the program's key holds.
struct Case<'a> {
    stage: Stage,
    key_stage: u8,
    ctx: Ctx<'a>,
    skip: u32,
    remote: Option<(u128, u16)>,
    lport: Option<u16>,
}

#[derive(Default)]
struct Seen {
    plans: usize,
    empty: usize,
    denied: usize,
    redirected: usize,
    skipped_inherited: usize,
}

/// A socket of a random context.
struct Socket<'a> {
    /// `None`: a program no rule names.
    program: Option<&'a str>,
    tr: Transport,
    v6: bool,
    /// Its peer (connect, accept).
    peer: SocketAddr,
    /// Its local port (bind, listen, accept).
    lport: u16,
}

/// `s` checked at every stage its transport has, against `pol` (the policy as its program
/// sees it).
fn check_socket(t: &Tables, pol: &Policy, s: &Socket, seen: &mut Seen) -> Result<(), String> {
    let Socket {
        program,
        tr,
        v6,
        peer,
        lport,
    } = *s;
    let family = if v6 { Family::V6 } else { Family::V4 };
    let peer_mapped = match peer.ip() {
        IpAddr::V4(_) => true,
        IpAddr::V6(a) => a.to_ipv4_mapped().is_some(),
    };
    let remote = Some((ip_key(peer.ip()), peer.port()));
    let listener = Ctx::server(tr, lport, None);
    let accepted = Ctx::server(tr, lport, Some(&peer));
    let case = |stage, key_stage, ctx, skip, peer_known: bool, local: bool| Case {
        stage,
        key_stage,
        ctx,
        skip,
        remote: remote.filter(|_| peer_known),
        lport: local.then_some(lport),
    };
    let mut cases = vec![
        case(Stage::Bind, STAGE_BIND, listener, 0, false, true),
        case(
            Stage::Connect,
            STAGE_CONNECT,
            Ctx::client(tr, Some(&peer), None),
            0,
            true,
            false,
        ),
    ];
    match tr {
        Transport::Udp => cases.push(case(
            Stage::UdpCreate,
            STAGE_UDP_CREATE,
            Ctx::new(tr),
            0,
            false,
            false,
        )),
        Transport::Tcp => {
            let skip = pol.decide(&accepted).inherited_from(&pol.decide(&listener));
            seen.skipped_inherited += usize::from(skip != 0);
            cases.push(case(Stage::Listen, STAGE_LISTEN, listener, 0, false, true));
            // The listener got its listen plan: what it passed on is not set again.
            cases.push(case(
                Stage::Accept,
                STAGE_ACCEPT,
                accepted,
                skip,
                true,
                true,
            ));
            // It got none here (made outside the cgroup): the whole accept plan.
            cases.push(case(
                Stage::Accept,
                STAGE_ACCEPT_FULL,
                accepted,
                0,
                true,
                true,
            ));
        }
    }
    if tr == Transport::Tcp && t.flags & CFG_SOCKET_LOCKS != 0 {
        // TCP sockets have no storage: sw_setsockopt takes a connected socket's locks from
        // the connect plan of its peer. For an accepted socket the library has locked what
        // its listener locked and what the accept plan locks: they must be the same.
        let v = Variant::of(family, Stage::Accept, Some(peer_mapped));
        let v_listener = Variant::of(family, Stage::Listen, None);
        let d = pol.decide(&accepted);
        let listen = pol
            .decide(&listener)
            .plan(Stage::Listen, tr, v_listener, 0)
            .lock;
        let skip = d.inherited_from(&pol.decide(&listener));
        let library = listen | d.plan(Stage::Accept, tr, v, skip).lock;
        let key = t.key(program, tr, Stage::Connect, v, remote, None);
        let kernel = t.plan(&key).map_or(0, |p| p.lock);
        if library != kernel {
            return Err(format!(
                "CFG_SOCKET_LOCKS: an accepted {v:?} socket from {peer} on port {lport} is locked for {library:#x} in the library, {kernel:#x} by its peer's connect plan"
            ));
        }
    }
    for Case {
        stage,
        key_stage,
        ctx,
        skip,
        remote,
        lport,
    } in cases
    {
        let peer_known = remote.is_some().then_some(peer_mapped);
        let variant = Variant::of(family, stage, peer_known);
        let key = DKey {
            stage: key_stage,
            ..t.key(program, tr, stage, variant, remote, lport)
        };
        let want = reference(&pol.decide(&ctx).plan(stage, tr, variant, skip).record());
        let got = t.plan(&key).map(|k| (k.ops().to_vec(), k.lock, k.slots));
        if got != want {
            return Err(format!(
                "{stage:?} (key stage {key_stage}) {tr:?} {variant:?} {program:?} peer {peer} local port {lport:?}: key {key:?}\n  tables: {got:?}\n  decide: {want:?}"
            ));
        }
        match want {
            Some(_) => seen.plans += 1,
            None => seen.empty += 1,
        }
        if stage == Stage::Connect {
            let want = pol.connect_actions(&ctx).actions;
            let got = t.action(&key);
            let deny = got.map(|a| a.deny).filter(|&e| e != 0);
            let want_deny = want.deny.map(|e| e as u32);
            // A denied connect is not redirected (nothing leaves).
            let want_redirect = want.redirect.filter(|_| want.deny.is_none());
            let redirect = got.and_then(|a| {
                a.target().map(|to| {
                    (
                        to,
                        a.flags & ACT_SHOW_TARGET != 0,
                        a.flags & ACT_TARGET_V4 != 0,
                    )
                })
            });
            let want_r = want_redirect.map(|r| (r.to, r.show_target, r.to.is_ipv4()));
            if deny != want_deny || redirect != want_r {
                return Err(format!(
                    "connect action {tr:?} {program:?} to {peer}: key {key:?}\n  tables: {got:?}\n  policy: {want:?}"
                ));
            }
            seen.denied += usize::from(deny.is_some());
            seen.redirected += usize::from(redirect.is_some());
        }
    }
    Ok(())
}

#[test]
fn the_tables_give_every_socket_the_plan_decide_gives_it() {
    let seed = seed();
    let mut seen = Seen::default();
    let mut built = 0;
    for round in 0..rounds() {
        let mut rng = Rng(round_seed(seed, round));
        let rules: Vec<Rule> = (0..1 + rng.below(4)).map(|i| rule(&mut rng, i)).collect();
        let on_error = *rng.pick(&[OnError::Warn, OnError::Fail]);
        let policy = Policy::new(rules, on_error);
        let fail = |what: String| -> ! {
            panic!(
                "seed {seed:#x} round {round} (SOCKWRAP_TABLES_SEED={seed:#x} to run it again): {what}\npolicy: {:#?}",
                policy.rules()
            )
        };
        if !refusals(&policy).is_empty() {
            fail(format!("refused: {:?}", refusals(&policy)));
        }
        let t = match Tables::build_with(&policy, &ifindex) {
            Ok(t) => t,
            Err(e) => fail(format!("build: {e}")),
        };
        built += 1;
        for _ in 0..24 {
            let program = *rng.pick(&[None, Some("other"), Some(PROGRAMS[0]), Some(PROGRAMS[2])]);
            let program = program.or_else(|| (rng.below(2) == 0).then(|| *rng.pick(PROGRAMS)));
            // The policy as that program sees it (argv[0]'s name in the library).
            let pol = policy.for_program(program.as_slice());
            let tr = *rng.pick(&[Transport::Tcp, Transport::Udp]);
            let v6 = rng.below(2) == 0;
            let peer = remote(&mut rng, v6);
            let lport = rng
                .pick(PORTS)
                .wrapping_add(*rng.pick(&[0u16, 1, u16::MAX]));
            let s = Socket {
                program,
                tr,
                v6,
                peer,
                lport,
            };
            if let Err(e) = check_socket(&t, &pol, &s, &mut seen) {
                fail(e);
            }
        }
    }
    eprintln!(
        "seed {seed:#x}, {built} policies: {} keys with a plan and {} without agreed with decide; {} denied, {} redirected, {} accepted sockets skipped what the listener passed on",
        seen.plans, seen.empty, seen.denied, seen.redirected, seen.skipped_inherited
    );
    // Each kind of outcome happened, or the test proves less than it says (with the
    // default count; a shorter run may see fewer kinds).
    assert!(seen.plans > 0 && seen.empty > 0);
    if built >= DEFAULT_ROUNDS {
        assert!(seen.denied > 0 && seen.redirected > 0 && seen.skipped_inherited > 0);
    }
}
