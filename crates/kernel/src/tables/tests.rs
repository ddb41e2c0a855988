//! The tables on hand-picked policies (`agreement.rs` checks random ones).

use super::classes::network_representatives;
use super::locks::lockable;
use super::*;
use sockwrap_policy::catalog::Opt;
use sockwrap_policy::rules::Cidr;
use sockwrap_policy::rules::{ip_key, Ports, Rule};
use sockwrap_policy::Value;
use sockwrap_policy::{Ctx, Role};

fn ip(s: &str) -> u128 {
    ip_key(s.parse().expect("address"))
}

fn addr(ip: &str, port: u16) -> std::net::SocketAddr {
    std::net::SocketAddr::new(ip.parse().expect("address"), port)
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
        let want = p.decide(&Ctx::client(Transport::Tcp, Some(&addr(dest, port)), None));
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
                .connect_actions(&Ctx::client(tr, Some(&addr(dest, port)), None))
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
