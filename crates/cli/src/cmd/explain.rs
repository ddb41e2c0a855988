//! `sockwrap explain [policy] --dest IP:PORT`: which options a destination would get, and
//! from which rule, without running anything.

use super::check::option_json;
use crate::error::{Error, Result};
use crate::json::{Json, JsonExt as _};
use crate::launch::flag_vars;
use clap::ArgMatches;
use sockwrap_policy::catalog::{self, Opt, Shown};
use sockwrap_policy::rules::{ip_key, MatchedRule};
use sockwrap_policy::{Ctx, Role, Transport};
use std::net::SocketAddr;
use std::process::ExitCode;

pub fn explain(m: &ArgMatches) -> Result<ExitCode> {
    if m.get_one::<String>("dest").is_none() && m.get_one::<String>("DEST").is_none() {
        return Err(missing_dest(m));
    }
    let vars = flag_vars(m)?;
    let loaded = crate::load::load_vars(&vars);
    if !loaded.errors.is_empty() {
        for e in &loaded.errors {
            eprintln!("{e}");
        }
        return Err(Error::Findings);
    }
    // DEST as the positional argument or as --dest (the older spelling, kept).
    let (dest, what) = match m.get_one::<String>("dest") {
        Some(d) => (d.as_str(), "--dest"),
        None => (
            m.get_one::<String>("DEST")
                .map(String::as_str)
                .unwrap_or(""),
            "DEST",
        ),
    };
    let addr: SocketAddr = dest.parse().map_err(|_| {
        Error::usage(format_args!(
            "{what}: `{dest}` is not IP:PORT (use [v6]:port for IPv6)"
        ))
    })?;
    let transport = match m.get_one::<String>("transport").map(String::as_str) {
        Some("udp") => Transport::Udp,
        _ => Transport::Tcp,
    };
    let role = match m.get_one::<String>("role").map(String::as_str) {
        Some("server") => Role::Server,
        _ => Role::Client,
    };
    // `origins`: each rule's place in the whole policy, so that #N is the file's numbering.
    // Without --program the program is unknown: as in the library, rules that name
    // programs do not apply (they are counted, and the output says so).
    let program = m.get_one::<String>("program").map(String::as_str);
    let (policy, origins) = loaded.policy.for_program_with_origins(program.as_slice());
    let left_out = match program {
        Some(_) => 0,
        None => loaded.policy.rules().len() - policy.rules().len(),
    };
    let host = m.get_one::<String>("host").map(String::as_str);
    // A server's socket knows its local port: --local-port, or else DEST's port (`explain
    // --role server X:443` is a server on 443, as a `local-port = 443` rule means).
    let local_port = m
        .get_one::<u16>("local-port")
        .copied()
        .or((role == Role::Server).then_some(addr.port()));
    // A client given --local-port keeps it, and a server keeps --host: what the user
    // asked about is explained as asked.
    let ctx = match (role, local_port) {
        (Role::Server, Some(port)) => Ctx {
            host,
            ..Ctx::server(transport, port, Some(&addr))
        },
        _ => Ctx {
            local_port,
            ..Ctx::client(transport, Some(&addr), host)
        },
    };
    let rows = policy.explain(&ctx);
    // Actions are done to connects: a server's sockets get none.
    let matched: Vec<MatchedRule> = policy
        .matched_rules(&ctx)
        .into_iter()
        .map(|mut r| {
            if role == Role::Server {
                r.actions.clear();
            }
            r.index = origins.get(r.index).copied().unwrap_or(r.index);
            r
        })
        .filter(|r| !r.options.is_empty() || !r.actions.is_empty())
        .collect();
    let actions = if role == Role::Client {
        policy.explain_actions(&ctx)
    } else {
        Vec::new()
    };
    if m.get_flag("json") {
        let d = Decided {
            dest,
            host,
            transport,
            role,
            local_port,
            program,
            left_out,
        };
        println!("{}", json_doc(&d, &rows, &actions, &matched).to_json());
        return Ok(ExitCode::SUCCESS);
    }
    let mut shown = match host {
        Some(h) => format!("{dest} from {h}"),
        None => dest.to_string(),
    };
    let context = match local_port {
        Some(p) => format!("{transport:?} {role:?}, local port {p}"),
        None => format!("{transport:?} {role:?}"),
    };
    shown = format!("{shown} ({context})");
    let dest = shown.as_str();
    if rows.is_empty() && actions.is_empty() {
        println!("{dest}: no option applies");
    } else {
        println!("{dest}:");
        for (o, s, rule) in rows {
            let tcp_only = o.spec().applies == catalog::Applies::Tcp && transport == Transport::Udp;
            println!(
                "  {:<18} {:<14} {:<6} from {}{}",
                o.name(),
                Shown(o, s.value).to_string(),
                if s.soft { "soft" } else { "locked" },
                rule,
                if tcp_only {
                    "  (TCP only: not applied to UDP)"
                } else {
                    ""
                }
            );
        }
        for (kind, what, rule) in actions {
            let note = if kind == "delay" && transport == Transport::Udp {
                "  (TCP only: UDP connects are not delayed)"
            } else {
                ""
            };
            println!("  {kind:<18} {what:<21} from {rule}{note}");
        }
        print_matched(&matched);
    }
    if left_out > 0 {
        println!("({left_out} rule(s) for named programs left out: give --program NAME)");
    }
    if m.get_flag("kernel") {
        kernel(
            &loaded.policy,
            m.get_one::<String>("program").map(String::as_str),
            addr,
            transport,
            role,
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// No DEST: most often an on/off flag took it as its value (`--nodelay 10.1.2.3:22`).
fn missing_dest(m: &ArgMatches) -> Error {
    let took = Opt::ALL.into_iter().find_map(|o| {
        let flag = crate::cli::flag_name(o);
        let v = m.get_one::<String>(&flag)?;
        v.parse::<SocketAddr>().is_ok().then(|| (flag, v.clone()))
    });
    match took {
        Some((flag, v)) => Error::usage(format_args!(
            "--{flag} took `{v}` as its value: put DEST first (sockwrap explain {v} --{flag} ...) or write --{flag}=on"
        )),
        None => Error::usage(format_args!(
            "DEST is missing: the remote IP:PORT, as in `sockwrap explain -c policy.toml 10.1.2.3:22`"
        )),
    }
}

/// What explain was asked and found, for [`json_doc`].
struct Decided<'a> {
    dest: &'a str,
    host: Option<&'a str>,
    transport: Transport,
    role: Role,
    local_port: Option<u16>,
    program: Option<&'a str>,
    /// Rules naming programs, left out because no --program was given.
    left_out: usize,
}

/// `explain --json`: the decision, the actions and every matching rule (docs/json.md).
fn json_doc(
    d: &Decided,
    rows: &[(Opt, sockwrap_policy::Setting, &str)],
    actions: &[(&str, String, &str)],
    matched: &[MatchedRule],
) -> Json {
    crate::json::object([
        ("dest", d.dest.into()),
        ("host", d.host.into()),
        ("transport", lower(d.transport)),
        ("role", lower(d.role)),
        ("local_port", d.local_port.map(|p| p as i64).into()),
        ("program", d.program.into()),
        (
            "options",
            Json::Array(
                rows.iter()
                    .map(|(o, s, rule)| {
                        let mut f = option_json(*o, s);
                        f.push(("rule", (*rule).into()));
                        let tcp_only = o.spec().applies == catalog::Applies::Tcp
                            && d.transport == Transport::Udp;
                        f.push((
                            "note",
                            tcp_only.then_some("TCP only: not applied to UDP").into(),
                        ));
                        obj(f)
                    })
                    .collect(),
            ),
        ),
        (
            "actions",
            Json::Array(
                actions
                    .iter()
                    .map(|(kind, what, rule)| {
                        let udp_delay = *kind == "delay" && d.transport == Transport::Udp;
                        crate::json::object([
                            ("action", (*kind).into()),
                            ("value", what.as_str().into()),
                            ("rule", (*rule).into()),
                            (
                                "note",
                                udp_delay
                                    .then_some("TCP only: UDP connects are not delayed")
                                    .into(),
                            ),
                        ])
                    })
                    .collect(),
            ),
        ),
        (
            "matched",
            Json::Array(
                matched
                    .iter()
                    .map(|r| {
                        crate::json::object([
                            ("index", (r.index + 1).into()),
                            ("name", r.rule.name.as_str().into()),
                            (
                                "options",
                                Json::Array(
                                    r.options
                                        .iter()
                                        .map(|(o, s, by)| {
                                            let mut f = option_json(*o, s);
                                            f.push(("overridden_by", (*by).into()));
                                            obj(f)
                                        })
                                        .collect(),
                                ),
                            ),
                            (
                                "actions",
                                Json::Array(
                                    r.actions
                                        .iter()
                                        .map(|(k, v, by)| {
                                            crate::json::object([
                                                ("action", (*k).into()),
                                                ("value", v.as_str().into()),
                                                ("overridden_by", (*by).into()),
                                            ])
                                        })
                                        .collect(),
                                ),
                            ),
                        ])
                    })
                    .collect(),
            ),
        ),
        ("program_rules_left_out", d.left_out.into()),
    ])
}

/// `Tcp` as "tcp", `Server` as "server": the words the flags take.
fn lower(v: impl std::fmt::Debug) -> Json {
    format!("{v:?}").to_ascii_lowercase().into()
}

fn obj(fields: Vec<(&str, Json)>) -> Json {
    crate::json::obj(
        fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

/// Every rule that matched, in order, and what of it a later rule overrode.
fn print_matched(matched: &[MatchedRule]) {
    println!("rules that matched, in order (the last match wins):");
    for r in matched {
        let mut parts: Vec<String> = r
            .options
            .iter()
            .map(|(o, s, by)| {
                format!(
                    "{}={}{}{}",
                    o.name(),
                    Shown(*o, s.value),
                    if s.soft { "(soft)" } else { "" },
                    by.map(|b| format!(" (overridden by {b})"))
                        .unwrap_or_default()
                )
            })
            .collect();
        parts.extend(r.actions.iter().map(|(k, v, by)| {
            format!(
                "{k}={v}{}",
                by.map(|b| format!(" (overridden by {b})"))
                    .unwrap_or_default()
            )
        }));
        let all =
            r.options.iter().all(|o| o.2.is_some()) && r.actions.iter().all(|a| a.2.is_some());
        println!(
            "  #{} {}: {}{}",
            r.index + 1,
            r.rule.name,
            parts.join(", "),
            if all { "  -- all overridden" } else { "" }
        );
    }
}

/// One plan entry as the BPF program makes it.
fn show_op(op: &sockwrap_policy::PlanOp) -> String {
    if op.is_bind() {
        let b = op.bytes();
        let ip = match b.len() {
            4 => std::net::IpAddr::from([b[0], b[1], b[2], b[3]]).to_string(),
            16 => {
                let mut a = [0u8; 16];
                a.copy_from_slice(b);
                std::net::IpAddr::from(a).to_string()
            }
            _ => "?".into(),
        };
        return format!("bpf_bind({ip}, port 0)");
    }
    let name = if op.level == 1 && op.name == 62 {
        "SO_BINDTOIFINDEX"
    } else {
        op.cname()
    };
    let b = op.bytes();
    let val = if b.len() == 4 {
        let v = i32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
        format!("{v} ({v:#x})")
    } else {
        format!("\"{}\"", String::from_utf8_lossy(b).trim_end_matches('\0'))
    };
    format!(
        "bpf_setsockopt({name}, {val}){}",
        if op.is_extra() {
            " (extra: a refusal is not a failure)"
        } else {
            ""
        }
    )
}

/// What connect4/6 and sendmsg4/6 do with `deny` or `redirect` for a connect (or an
/// unconnected sendto) to `addr`.
fn action_lines(
    a: &sockwrap_kernel::tables::KAction,
    addr: SocketAddr,
    transport: Transport,
) -> Vec<String> {
    let mut out = Vec::new();
    let udp = transport == Transport::Udp;
    let also = if udp {
        format!(", and so is an unconnected sendto()'s to {addr} (cgroup/sendmsg)")
    } else {
        String::new()
    };
    if a.deny != 0 {
        let e = a.deny as i32;
        out.push(format!(
            "deny: the connect fails with {} ({e}), set by bpf_set_retval; nothing is sent{}",
            sockwrap_policy::rules::errno_name(e),
            if udp {
                format!("; so does an unconnected sendto() to {addr} (cgroup/sendmsg)")
            } else {
                String::new()
            }
        ));
        return out;
    }
    let Some(to) = a.target() else {
        return out;
    };
    let mapped = matches!(addr.ip(), std::net::IpAddr::V6(v) if v.to_ipv4_mapped().is_some());
    if addr.is_ipv4() && to.is_ipv6() {
        out.push(format!("redirect to {to}: the connect fails with EAFNOSUPPORT (97): an IPv4 address cannot be rewritten to an IPv6 target"));
        return out;
    }
    let form = if addr.is_ipv6() && to.is_ipv4() {
        format!(" (as ::ffff:{})", to.ip())
    } else {
        String::new()
    };
    if udp && addr.is_ipv6() && !mapped && to.is_ipv4() {
        out.push(format!("redirect: the address is rewritten to {to}{form}; an unconnected sendto() to {addr} fails with EAFNOSUPPORT (97) instead: udpv6_sendmsg does not take a v4-mapped rewrite of a native IPv6 destination"));
    } else {
        out.push(format!(
            "redirect: the address is rewritten to {to}{form}{also}"
        ));
    }
    if a.flags & sockwrap_kernel::tables::ACT_SHOW_TARGET != 0 {
        out.push(format!("getpeername answers {to} (peername = \"target\")"));
    } else if udp {
        out.push(format!("getpeername, and recvfrom() of the target's datagrams, answer {addr}: what the program asked for (cgroup/getpeername, cgroup/recvmsg)"));
    } else {
        out.push(format!(
            "getpeername answers {addr}: what the program asked for (cgroup/getpeername)"
        ));
    }
    out
}

/// `explain --kernel`: the hook that would run for this destination and what it would do.
fn kernel(
    policy: &sockwrap_policy::Policy,
    program: Option<&str>,
    addr: SocketAddr,
    transport: Transport,
    role: Role,
) -> Result<()> {
    use sockwrap_policy::{Stage, Variant};
    println!("--kernel:");
    let refused = sockwrap_kernel::refusals_here(policy);
    if !refused.is_empty() {
        for r in refused {
            println!("  refuses {r}");
        }
        println!("  (sockwrap run --kernel does not start with this policy)");
        return Ok(());
    }
    let tables = sockwrap_kernel::Tables::build(policy)
        .map_err(|e| Error::usage(format_args!("--kernel: {e}")))?;
    if transport == Transport::Tcp {
        if let Some(sel) = sockwrap_kernel::mptcp::Selection::of(policy) {
            let key = sockwrap_kernel::tables::comm_key(program.unwrap_or(""));
            let mptcp = match sel
                .comms
                .iter()
                .find(|(k, _)| program.is_some() && *k == key)
            {
                Some((_, w)) => *w,
                None => sel.others,
            };
            println!(
                "  fmod_ret/update_socket_protocol (socket()): {}",
                if mptcp {
                    "MPTCP instead of TCP (Linux 6.6+, where the kernel takes it: docs/mptcp-kernel.md)"
                } else {
                    "TCP stays TCP"
                }
            );
        }
    }
    if let Some(p) = program {
        let seen =
            String::from_utf8_lossy(&sockwrap_kernel::tables::comm_key(p)[..p.len().min(15)])
                .into_owned();
        println!("  program `{p}` is matched by its kernel name (comm) `{seen}`: the first 15 bytes of the executable's name");
    }
    let v6 = addr.is_ipv6();
    let mapped = matches!(addr.ip(), std::net::IpAddr::V6(a) if a.to_ipv4_mapped().is_some());
    let variant = match (v6, mapped) {
        (false, _) => Variant::V4,
        (true, true) => Variant::V6Dual,
        (true, false) => Variant::V6,
    };
    let remote = Some((ip_key(addr.ip()), addr.port()));
    let fam = if v6 { "6" } else { "4" };
    // (hook, stage, remote, variant)
    type Case = (String, Stage, Option<(u128, u16)>, Variant);
    let mut cases: Vec<Case> = Vec::new();
    match (role, transport) {
        (Role::Client, _) => {
            cases.push((
                format!("cgroup/connect{fam} (connect to {addr})"),
                Stage::Connect,
                remote,
                variant,
            ));
            if transport == Transport::Udp {
                cases.push((
                    "cgroup/sock_create, then cgroup/sendmsg at the first sendto() of an unconnected socket (any destination)".into(),
                    Stage::UdpCreate,
                    None,
                    if v6 { Variant::V6Dual } else { Variant::V4 },
                ));
            }
        }
        (Role::Server, Transport::Tcp) => {
            cases.push((
                format!("sockops PASSIVE_ESTABLISHED (a connection accepted from {addr}, on a local port no rule names)"),
                Stage::Accept,
                remote,
                variant,
            ));
        }
        (Role::Server, Transport::Udp) => {
            cases.push((
                format!("cgroup/bind{fam} (a UDP server's bind, on a local port no rule names)"),
                Stage::Bind,
                None,
                if v6 { Variant::V6Dual } else { Variant::V4 },
            ));
        }
    }
    for (hook, stage, remote, variant) in cases {
        let key = tables.key(program, transport, stage, variant, remote, None);
        let action = (stage == Stage::Connect)
            .then(|| tables.action(&key))
            .flatten();
        if let Some(a) = action {
            println!("  {hook}:");
            for line in action_lines(a, addr, transport) {
                println!("    {line}");
            }
            if a.deny != 0 {
                continue; // nothing else happens to a denied connect
            }
        }
        match tables.plan(&key) {
            None if action.is_some() => {}
            None => println!("  {hook}: nothing"),
            Some(p) => {
                if action.is_none() {
                    println!("  {hook}:");
                }
                for op in p.ops() {
                    if stage == Stage::UdpCreate
                        && !op.is_bind()
                        && op.level == 1
                        && matches!(op.name, 36 | 12 | 62)
                    {
                        println!(
                            "    sock_create writes {}",
                            show_op(op).replace("bpf_setsockopt", "the socket's field for")
                        );
                    } else {
                        println!("    {}", show_op(op));
                    }
                }
                let locked: Vec<&str> = Opt::ALL
                    .iter()
                    .filter(|o| p.lock & o.bit() != 0)
                    .map(|o| o.name())
                    .collect();
                if !locked.is_empty() {
                    println!("    locked (cgroup/setsockopt skips the program's own setsockopt, which reports success): {}", locked.join(", "));
                }
            }
        }
    }
    Ok(())
}
