//! Hostile input, bounded: a deterministic fuzzer for the policy file parser, the option
//! value parsers (what CLI flags and SOCKWRAP_* variables go through), targets and CIDRs.
//!
//! cargo-fuzz needs a nightly toolchain, which these machines do not have; this is the
//! equivalent that runs on stable in every `cargo test`: seeded mutations of valid inputs
//! (byte flips, insertions of TOML-significant characters, truncations, splices), a fixed
//! number of rounds, no panics allowed, and every error must carry a source and a message.
//! `SOCKWRAP_FUZZ_ROUNDS` raises the count for a longer local run.

use sockwrap_policy::catalog::{self, parse_keepalive, parse_value, Opt, Raw, Value};
use sockwrap_policy::env::parse_target;
use sockwrap_policy::plan::{PlanRecord, Stage, Variant, LEVEL_BIND};
use sockwrap_policy::rng::Rng;
use sockwrap_policy::rules::Cidr;
use sockwrap_policy::{compiled, parse_config, Ctx, OnError, Policy, Role, Setting, Transport};

const SEEDS: &[&str] = &[
    include_str!("../../../docs/example-policy.toml"),
    "[[rule]]\ndscp = \"EF\"\nmatch = { remote = [\"10.0.0.0/8\", \"::1\"], port = [22, \"8000-8100\"] }\n",
    "on_error = \"fail\"\n[[rule]]\nkeepalive = \"30,10,3\"\nsoft = [\"keepalive\"]\nmark = 0x10\n",
    "[[rule]]\nbind-address = \"127.0.0.2,::1\"\nlinger = 0\nmax-pacing-rate = \"8mbit\"\nuser-timeout = \"30s\"\n",
    "[[rule]]\nmatch = { host = [\"db.test\", \"*.internal.example\"], except = { remote = \"10.9.0.0/16\", port = 22 } }\ndscp = \"AF21\"\n[[rule]]\nmatch = { port = 5432 }\nfail = { rate = 0.2, errno = \"ECONNRESET\" }\ndelay = \"250ms\"\n[[rule]]\nmatch = { remote = \"192.0.2.10\", port = 443 }\nredirect = { to = \"[::1]:8443\", peername = \"target\" }\n[[rule]]\ndeny = \"ENETUNREACH\"\n",
    "[[rule]]\ndscp = \"AF21\"\nttl = 9\nreuseport = true\n[[rule]]\nmatch = { role = \"server\" }\npriority = 3\nsoft = true\ncongestion = \"reno\"\n[[rule]]\nmatch = { transport = \"udp\" }\ndscp = \"EF\"\nbind-interface = \"lo\"\n",
];

const SPICE: &[&str] = &[
    "[",
    "]",
    "[[",
    "]]",
    "{",
    "}",
    "=",
    "\"",
    "'",
    ",",
    "\n",
    "#",
    "/",
    ":",
    "-",
    ".",
    "0x",
    "99999999999999999999",
    "-1",
    "\u{0}",
    "é",
    "\\u",
    "\"\"\"",
    "true",
    "nan",
    "inf",
    "1979-05-27",
    "[[rule]]",
    "match",
    "soft",
    "::",
];

fn mutate(rng: &mut Rng, input: &str) -> String {
    let mut b: Vec<u8> = input.as_bytes().to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(5) {
            0 if !b.is_empty() => {
                let i = rng.below(b.len());
                b[i] = rng.next_u64() as u8;
            }
            1 => {
                let i = rng.below(b.len() + 1);
                let s = SPICE[rng.below(SPICE.len())].as_bytes();
                b.splice(i..i, s.iter().copied());
            }
            2 if !b.is_empty() => {
                let i = rng.below(b.len());
                b.truncate(i);
            }
            3 if !b.is_empty() => {
                let i = rng.below(b.len());
                let j = (i + rng.below(16)).min(b.len());
                b.drain(i..j);
            }
            _ => {
                let other = SEEDS[rng.below(SEEDS.len())].as_bytes();
                let i = rng.below(b.len() + 1);
                let j = rng.below(other.len() + 1);
                b.splice(i..i, other[j..].iter().copied().take(40));
            }
        }
    }
    String::from_utf8_lossy(&b).into_owned()
}

fn rounds() -> usize {
    std::env::var("SOCKWRAP_FUZZ_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

#[test]
fn policy_file_parser_never_panics_and_errors_say_where() {
    let mut rng = Rng(0x5eed_0001);
    let mut errors = 0;
    let mut decoded = 0;
    let mut fixed_seen = 0;
    for _ in 0..rounds() {
        let seed = SEEDS[rng.below(SEEDS.len())];
        let text = mutate(&mut rng, seed);
        match parse_config(&text, "fuzz.toml") {
            Ok(cfg) => {
                // Every policy that parses survives the launcher's compiled form unchanged,
                // and a damaged form is refused, never half-read.
                let fp = rng.next_u64();
                let blob = compiled::encode(&cfg.rules, OnError::Warn, fp);
                let back = compiled::decode(&blob, fp).map(|(r, _)| r);
                assert_eq!(back.as_ref(), Some(&cfg.rules), "round trip of {text:?}");
                decoded += 1;
                // decide (remote index, or the precomputed fixed decisions) agrees with
                // explain, which matches every rule one by one.
                let pol = Policy::new(cfg.rules.clone(), OnError::Warn);
                for _ in 0..4 {
                    let ctx = Ctx {
                        transport: if rng.below(2) == 0 {
                            Transport::Tcp
                        } else {
                            Transport::Udp
                        },
                        role: [None, Some(Role::Client), Some(Role::Server)][rng.below(3)],
                        remote: if rng.below(3) == 0 {
                            None
                        } else {
                            let ip = [
                                0x0a00_0001u128 | 0xffff_0000_0000,
                                0x7f00_0001 | 0xffff_0000_0000,
                                0xfd00 << 112 | 1,
                            ][rng.below(3)];
                            Some((ip, [22u16, 80, 443, 5432][rng.below(4)]))
                        },
                        local_port: [None, Some(443u16), Some(5432)][rng.below(3)],
                        host: None,
                    };
                    let got: Vec<(Opt, Setting)> = pol.decide(&ctx).iter().collect();
                    let want: Vec<(Opt, Setting)> = pol
                        .explain(&ctx)
                        .into_iter()
                        .map(|(o, s, _)| (o, s))
                        .collect();
                    assert_eq!(got, want, "decide vs explain for {ctx:?} in {text:?}");
                    // The plans agree too: the fast path (precomputed decisions, index) and
                    // the general one (every candidate rule matched), and both with plans
                    // built the long way, from explain and the catalog.
                    let fast = pol.decide(&ctx);
                    let general = pol.decide_by_scan(&ctx);
                    fixed_seen += usize::from(fast.fixed_index().is_some());
                    for stage in Stage::ALL {
                        for variant in Variant::ALL {
                            let a = fast.plan(stage, ctx.transport, variant, 0).record();
                            let b = general.plan(stage, ctx.transport, variant, 0).record();
                            assert_eq!(a, b, "{stage:?} {variant:?} {ctx:?} in {text:?}");
                            let r = reference_plan(&want, stage, ctx.transport, variant);
                            assert_eq!(entries(&a), r, "{stage:?} {variant:?} {ctx:?} in {text:?}");
                        }
                    }
                }
                if blob.len() > 8 {
                    let cut = rng.below(blob.len() - 1) + 1;
                    if let Some(head) = blob.get(..cut) {
                        assert_ne!(compiled::decode(head, fp).map(|(r, _)| r), Some(cfg.rules));
                    }
                }
            }
            Err(errs) => {
                errors += 1;
                assert!(!errs.is_empty());
                for e in errs {
                    assert_eq!(e.source, "fuzz.toml");
                    assert!(!e.msg.is_empty());
                    let (line, col) = e.pos.expect("file errors carry a position");
                    assert!(line >= 1 && col >= 1);
                    assert!(
                        line <= text.lines().count().max(1) + 1,
                        "line {line} beyond the text"
                    );
                }
            }
        }
    }
    assert!(
        errors > 0,
        "the mutations must produce invalid files, or this test proves nothing"
    );
    assert!(
        decoded > 0,
        "some mutations must parse, or the round trip is never checked"
    );
    assert!(
        fixed_seen > 0,
        "some policies must have precomputed decisions, or the fast path is never checked"
    );
}

/// A plan's entries as (level, name, bytes, extra), and its lock mask.
type Entries = (Vec<(i32, i32, Vec<u8>, bool)>, u32);

fn entries(p: &PlanRecord) -> Entries {
    (
        p.ops()
            .iter()
            .map(|o| (o.level, o.name, o.bytes().to_vec(), o.is_extra()))
            .collect(),
        p.lock,
    )
}

/// A plan built without the plan module: the settings `explain` found, the stage's slots
/// written out from the catalog's rules for stages, and `catalog::kernel_ops`.
fn reference_plan(settings: &[(Opt, Setting)], stage: Stage, t: Transport, v: Variant) -> Entries {
    let udp = t == Transport::Udp;
    let mut out = Vec::new();
    let mut lock = 0;
    for &(o, st) in settings {
        let spec = o.spec();
        let before_bind = spec.when == catalog::When::BeforeBind;
        let bind_address = o == Opt::BindAddress;
        let wanted = o != Opt::Mptcp
            && !(udp && spec.applies == catalog::Applies::Tcp)
            && match stage {
                Stage::UdpCreate | Stage::Listen | Stage::Accept => !bind_address && !before_bind,
                Stage::Bind => before_bind || (udp && !bind_address),
                Stage::Connect => !before_bind,
            };
        if !wanted {
            continue;
        }
        if !st.soft {
            lock |= o.bit();
        }
        if let (true, Value::Addrs(a)) = (bind_address, st.value) {
            let addr = match v {
                Variant::V4 => a.v4.map(|x| (2, x.to_vec())),
                Variant::V6 => a.v6.map(|x| (10, x.to_vec())),
                Variant::V6Dual => a.v4.map(|x| {
                    let m = std::net::Ipv4Addr::from(x).to_ipv6_mapped();
                    (10, m.octets().to_vec())
                }),
            };
            if let Some((fam, bytes)) = addr {
                out.push((LEVEL_BIND, fam, bytes, false));
            }
            continue;
        }
        for op in catalog::kernel_ops(o, st.value, v.family(), v != Variant::V6).iter() {
            out.push((op.level, op.name, op.bytes().to_vec(), op.extra));
        }
    }
    (out, lock)
}

#[test]
fn value_parsers_never_panic() {
    let mut rng = Rng(0x5eed_0002);
    let samples = [
        "EF",
        "AF41",
        "46",
        "0xb8",
        "30,10,3",
        "64K",
        "8mbit",
        "30s",
        "lo",
        "127.0.0.1,::1",
        "off",
        "on",
    ];
    for _ in 0..rounds() {
        let seed = samples[rng.below(samples.len())];
        let s = mutate(&mut rng, seed);
        for o in Opt::ALL {
            let _ = parse_value(o, o.name(), Raw::Str(&s));
            let _ = parse_value(o, "tos", Raw::Int(rng.next_u64() as i64));
        }
        let _ = parse_keepalive(&s);
    }
}

#[test]
fn targets_and_cidrs_never_panic_and_agree_with_contains() {
    let mut rng = Rng(0x5eed_0003);
    let samples = [
        "10.0.0.0/8:22",
        "[::1]:443",
        ":5432",
        "fd00::/8",
        "192.0.2.0/24",
        "0.0.0.0/0",
    ];
    for _ in 0..rounds() {
        let seed = samples[rng.below(samples.len())];
        let s = mutate(&mut rng, seed);
        let _ = parse_target(&s);
        if let Ok(c) = Cidr::parse(&s) {
            // A network contains its own base address.
            let (net, mask) = c.parts();
            assert!(c.contains(net));
            assert_eq!(net & !mask, 0);
        }
    }
}
