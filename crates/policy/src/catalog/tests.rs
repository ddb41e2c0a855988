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
