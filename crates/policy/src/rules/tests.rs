use super::*;
use crate::catalog::N_OPTS;

fn ctx(remote: &str, port: u16) -> Ctx<'static> {
    let remote = core::net::SocketAddr::new(remote.parse().expect("ip"), port);
    Ctx::client(Transport::Tcp, Some(&remote), None)
}

#[test]
fn cidr_parsing_and_matching() {
    let c = Cidr::parse("10.0.0.0/8").expect("valid");
    assert!(c.contains(ip_key("10.1.2.3".parse().expect("ip"))));
    assert!(c.contains(ip_key(
        "::ffff:10.1.2.3"
            .parse::<core::net::Ipv6Addr>()
            .expect("ip")
            .into()
    )));
    assert!(!c.contains(ip_key("11.0.0.1".parse().expect("ip"))));
    assert!(Cidr::parse("10.0.0.0/33").is_err());
    assert!(Cidr::parse("10.0.0.0/8x").is_err());
    assert!(Cidr::parse("10.0.0.1/8").is_err());
    assert!(Cidr::parse("0.0.0.0/0")
        .expect("valid")
        .contains(ip_key("1.2.3.4".parse().expect("ip"))));
    assert!(!Cidr::parse("0.0.0.0/0")
        .expect("valid")
        .contains(ip_key("::1".parse().expect("ip"))));
    assert!(Cidr::parse("::/0")
        .expect("valid")
        .contains(ip_key("::1".parse().expect("ip"))));
    assert!(Cidr::parse("fd00::/8")
        .expect("valid")
        .contains(ip_key("fd12::1".parse().expect("ip"))));
}

#[test]
fn later_rules_override_per_option() {
    let mut a = Rule::new("a");
    a.set(Opt::Tos, Value::Int(0xb8), false);
    a.set(Opt::NoDelay, Value::Bool(true), false);
    let mut b = Rule::new("b");
    b.matcher.port = vec![Ports::parse("22").expect("valid")];
    b.set(Opt::Tos, Value::Int(0x20), true);
    let p = Policy::new(vec![a, b], OnError::Warn);
    let d = p.decide(&ctx("127.0.0.1", 22));
    assert_eq!(
        d.get(Opt::Tos),
        Some(Setting {
            value: Value::Int(0x20),
            soft: true
        })
    );
    assert_eq!(
        d.get(Opt::NoDelay),
        Some(Setting {
            value: Value::Bool(true),
            soft: false
        })
    );
    let d = p.decide(&ctx("127.0.0.1", 80));
    assert_eq!(d.get(Opt::Tos).map(|s| s.value), Some(Value::Int(0xb8)));
    assert_eq!(d.locked_mask(), Opt::Tos.bit() | Opt::NoDelay.bit());
}

/// The issue's case: a port-22 EF rule, then a 10.0.0.0/8 AF21 rule. For 10.1.2.3:22
/// both match, in order, and the first one's dscp is overridden by the second.
#[test]
fn matched_rules_say_which_options_a_later_rule_overrode() {
    let mut ssh = Rule::new("ssh");
    ssh.matcher.port = vec![Ports::parse("22").expect("valid")];
    ssh.set(Opt::Tos, Value::Int(0xb8), false);
    ssh.set(Opt::NoDelay, Value::Bool(true), false);
    ssh.actions.delay_ms = Some(5);
    let mut lan = Rule::new("lan");
    lan.matcher.remote = vec![Cidr::parse("10.0.0.0/8").expect("valid")];
    lan.set(Opt::Tos, Value::Int(0x48), false);
    let p = Policy::new(vec![ssh, lan], OnError::Warn);
    let m = p.matched_rules(&ctx("10.1.2.3", 22));
    assert_eq!(m.len(), 2);
    assert_eq!((m[0].index, m[0].rule.name.as_str()), (0, "ssh"));
    assert_eq!(m[0].options[0].0, Opt::Tos);
    assert_eq!(m[0].options[0].2, Some("lan"));
    assert_eq!(m[0].options[1].2, None, "nodelay stands");
    assert_eq!(m[0].actions, vec![("delay", "5ms".to_string(), None)]);
    assert_eq!(m[1].options[0].2, None);
    let m = p.matched_rules(&ctx("192.0.2.1", 22));
    assert_eq!(m.len(), 1);
    assert!(m[0].options.iter().all(|o| o.2.is_none()));
}

#[test]
fn rules_that_later_rules_override_entirely() {
    let rule = |name: &str, remote: &str, port: &str, opts: &[Opt]| {
        let mut r = Rule::new(name);
        if !remote.is_empty() {
            r.matcher.remote = vec![Cidr::parse(remote).expect("valid")];
        }
        if !port.is_empty() {
            r.matcher.port = vec![Ports::parse(port).expect("valid")];
        }
        for &o in opts {
            r.set(o, Value::Bool(true), false);
        }
        r
    };
    let rules = vec![
        rule(
            "narrow",
            "10.1.0.0/16",
            "22",
            &[Opt::NoDelay, Opt::KeepAlive],
        ),
        rule("wide-1", "10.0.0.0/8", "", &[Opt::NoDelay]),
        rule("other-port", "", "80", &[Opt::KeepAlive]),
        rule("wide-2", "", "20-30", &[Opt::KeepAlive]),
        rule("last", "", "", &[Opt::ReuseAddr]),
    ];
    // narrow: nodelay by wide-1 (10/8 covers 10.1/16), keepalive by wide-2 (20-30
    // covers 22); other-port is not a cover (port 80 only).
    assert_eq!(overridden_entirely(&rules), vec![(0, vec![1, 3])]);
    let mut except = rules[1].clone();
    except.matcher.except = Some(Box::new(rule("x", "10.1.2.0/24", "", &[]).matcher));
    let rules = vec![rules[0].clone(), except, rules[3].clone()];
    assert!(
        overridden_entirely(&rules).is_empty(),
        "an exception makes a rule no cover"
    );
}

#[test]
fn unknown_remote_does_not_match_remote_rules() {
    let mut r = Rule::new("r");
    r.matcher.remote = vec![Cidr::parse("127.0.0.0/8").expect("valid")];
    r.set(Opt::Tos, Value::Int(0xb8), false);
    let p = Policy::new(vec![r], OnError::Warn);
    let c = Ctx::new(Transport::Udp);
    assert!(p.decide(&c).is_empty());
    assert!(p.any_needs_remote());
}

/// The indexed decision agrees with a plain scan of the rules, for many rules and
/// addresses (with overlapping prefixes and rules without remote conditions).
#[test]
fn index_agrees_with_scan() {
    let mut rules = Vec::new();
    for i in 0..200u32 {
        let mut r = Rule::new(format!("r{i}"));
        match i % 4 {
            0 => {
                r.matcher.remote =
                    vec![Cidr::parse(&format!("10.{}.0.0/16", i % 7)).expect("valid")]
            }
            1 => {
                r.matcher.remote =
                    vec![Cidr::parse(&format!("10.{}.{}.0/24", i % 7, i % 5)).expect("valid")]
            }
            2 => {
                r.matcher.port = vec![Ports {
                    lo: (i % 3) as u16 + 80,
                    hi: (i % 3) as u16 + 80,
                }]
            }
            _ => {}
        }
        r.set(Opt::ALL[(i as usize) % 5], Value::Int(i as i64), i % 3 == 0);
        rules.push(r);
    }
    let p = Policy::new(rules.clone(), OnError::Warn);
    assert!(!p.index.by_prefix.is_empty(), "the index must be in use");
    for a in 0..7 {
        for b in 0..6 {
            for port in [80u16, 81, 82, 443] {
                let c = ctx(&format!("10.{a}.{b}.9"), port);
                let d = p.decide(&c);
                let mut want: [Option<Setting>; N_OPTS] = [None; N_OPTS];
                for r in &rules {
                    if r.matcher.matches(&c) {
                        for (o, s) in r.settings.iter() {
                            want[o as usize] = Some(*s);
                        }
                    }
                }
                for o in Opt::ALL {
                    assert_eq!(d.get(o), want[o as usize], "{o:?} for 10.{a}.{b}.9:{port}");
                }
            }
        }
    }
}

#[test]
fn host_patterns() {
    let h = HostPat::parse("*.Example.com.").expect("valid");
    assert_eq!(h.to_string(), "*.example.com");
    assert!(h.matches("a.example.com"));
    assert!(h.matches("A.B.EXAMPLE.COM."));
    assert!(!h.matches("example.com"));
    assert!(!h.matches("badexample.com"));
    let e = HostPat::parse("db.test").expect("valid");
    assert!(e.matches("DB.test") && !e.matches("x.db.test"));
    for bad in ["", "*.", "a..b", "a*b.c", "*.*.c", "a b", &"x".repeat(64)] {
        assert!(HostPat::parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn except_and_host_in_matching() {
    let mut r = Rule::new("r");
    r.matcher.host = vec![HostPat::parse("*.internal.example").expect("valid")];
    r.matcher.except = Some(Box::new(Match {
        remote: vec![Cidr::parse("10.9.0.0/16").expect("valid")],
        ..Match::default()
    }));
    r.set(Opt::Tos, Value::Int(0x48), false);
    let p = Policy::new(vec![r], OnError::Warn);
    assert!(p.any_needs_remote() && p.any_host());
    let with = |ip: &str, host: Option<&'static str>| {
        let mut c = ctx(ip, 80);
        c.host = host;
        !p.decide(&c).is_empty()
    };
    assert!(with("10.1.0.1", Some("db.internal.example")));
    assert!(!with("10.9.0.1", Some("db.internal.example")), "excepted");
    assert!(!with("10.1.0.1", None), "an address not from a name");
    assert!(!with("10.1.0.1", Some("db.example")));
    // Before connect nothing is known: neither the host rule nor an exception on the
    // remote can decide, so nothing applies yet.
    let mut a = Rule::new("a");
    a.matcher.except = Some(Box::new(Match {
        remote: vec![Cidr::parse("10.0.0.0/8").expect("valid")],
        ..Match::default()
    }));
    a.set(Opt::NoDelay, Value::Bool(true), false);
    let p = Policy::new(vec![a], OnError::Warn);
    let mut c = ctx("10.1.1.1", 80);
    assert!(p.decide(&c).is_empty());
    c.remote = None;
    assert!(p.decide(&c).is_empty(), "must wait for the remote");
    assert!(!p.decide(&ctx("192.0.2.1", 80)).is_empty());
}

#[test]
fn connect_actions_last_rule_wins_per_kind() {
    let mut a = Rule::new("a");
    a.actions.deny = Some(111);
    a.actions.delay_ms = Some(100);
    let mut b = Rule::new("b");
    b.matcher.port = vec![Ports::parse("5432").expect("valid")];
    b.actions.fail = Some(Fail {
        ppm: 200_000,
        errno: 104,
    });
    b.actions.delay_ms = Some(250);
    let mut c = Rule::new("c");
    c.set(Opt::Tos, Value::Int(0xb8), false);
    let p = Policy::new(vec![c, a, b], OnError::Warn);
    assert!(p.any_actions() && !p.any_redirect());
    let x = p.connect_actions(&ctx("127.0.0.1", 5432));
    assert_eq!(x.actions.deny, Some(111));
    assert_eq!(x.actions.delay_ms, Some(250));
    assert_eq!(x.actions.fail.map(|f| f.ppm), Some(200_000));
    assert_eq!(x.fail_rule, 2);
    let x = p.connect_actions(&ctx("127.0.0.1", 80));
    assert_eq!(x.actions.delay_ms, Some(100));
    assert!(x.actions.fail.is_none());
    let names: Vec<&str> = p
        .explain_actions(&ctx("127.0.0.1", 5432))
        .iter()
        .map(|(k, _, n)| if *k == "delay" { *n } else { "" })
        .filter(|n| !n.is_empty())
        .collect();
    assert_eq!(names, ["b"]);
    // An action-only rule is kept (it sets no option).
    let mut d = Rule::new("d");
    d.actions.deny = Some(13);
    assert!(!Policy::new(vec![d], OnError::Warn).is_empty());
    assert!(!Policy::new(Vec::new(), OnError::Warn).any_actions());
}

#[test]
fn action_value_parsers() {
    assert_eq!(parse_errno("econnrefused"), Ok(111));
    assert!(parse_errno("EBOGUS").unwrap_err().contains("ECONNREFUSED"));
    assert_eq!(parse_delay("250ms"), Ok(250));
    assert_eq!(parse_delay("1.5s"), Ok(1500));
    assert_eq!(parse_delay("40"), Ok(40));
    assert!(parse_delay("2h").is_err() && parse_delay("-1s").is_err());
    assert!(parse_redirect("127.0.0.1:8443").is_ok());
    assert!(parse_redirect("[::1]:8443").is_ok());
    assert!(parse_redirect("127.0.0.1").is_err());
    assert_eq!(rate_ppm("0.3"), Ok(300_000));
    assert_eq!(rate_ppm("1"), Ok(1_000_000));
    assert_eq!(rate_ppm(".000001"), Ok(1));
    assert!(rate_ppm("1.5").is_err() && rate_ppm("-0.1").is_err() && rate_ppm("1e-1").is_err());
    assert_eq!(rate_text(200_000), "0.2");
    assert_eq!(rate_text(1_000_000), "1");
    assert!(parse_delay("0.25ms")
        .unwrap_err()
        .contains("whole number of milliseconds"));
    assert_eq!(parse_delay("2m"), Ok(120_000));
    assert_eq!(parse_delay("1min"), Ok(60_000));
    assert_eq!(parse_delay("1h"), Ok(3_600_000));
}

#[test]
fn program_exceptions_are_settled_per_program() {
    let mut r = Rule::new("r");
    r.matcher.except = Some(Box::new(Match {
        program: vec!["curl".into()],
        ..Match::default()
    }));
    r.set(Opt::Tos, Value::Int(0xb8), false);
    let p = Policy::new(vec![r], OnError::Warn);
    assert!(p.for_program(&["curl"]).is_empty());
    assert!(!p
        .for_program(&["wget"])
        .decide(&ctx("1.2.3.4", 80))
        .is_empty());
}

#[test]
fn program_specialisation() {
    let mut r = Rule::new("ssh");
    r.matcher.program = vec!["ssh".into()];
    r.set(Opt::Tos, Value::Int(0xb8), false);
    let p = Policy::new(vec![r], OnError::Warn);
    assert!(p.for_program(&["curl"]).is_empty());
    assert!(!p
        .for_program(&["ssh"])
        .decide(&ctx("1.2.3.4", 22))
        .is_empty());
}
