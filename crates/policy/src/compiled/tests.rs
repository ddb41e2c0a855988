use super::*;

#[test]
fn round_trip_of_a_rich_policy() {
    let text = r#"
on_error = "fail"
[[rule]]
name = "ssh %x y"
match = { remote = ["10.0.0.0/8", "fd00::/8", "192.0.2.1"], port = [22, "8000-8100"], role = "client", transport = "tcp", program = ["ssh", "we ird"] }
dscp = "AF41"
keepalive = "30,10,3"
congestion = "cubic"
linger = 0
bind-address = "192.0.2.7,2001:db8::7"
soft = ["dscp"]
[[rule]]
match = { local-port = 443, role = "server", transport = "udp" }
mark = 0x10
linger = "off"
"#;
    let cfg = crate::parse_config(text, "t.toml").expect("valid");
    let fp = fingerprint([("SOCKWRAP_CONFIG", "t.toml"), ("SOCKWRAP_LOG", "info")]);
    let blob = encode(&cfg.rules, OnError::Fail, fp);
    assert!(!blob.contains('\n') && !blob.contains('\0'));
    let (rules, oe) = decode(&blob, fp).expect("decodes");
    assert_eq!(rules, cfg.rules);
    assert_eq!(oe, OnError::Fail);
    // Another fingerprint, a cut or a changed token: refused, never half-read.
    assert!(decode(&blob, fp ^ 1).is_none());
    assert!(decode(&blob[..blob.len() - 3], fp).is_none());
    assert!(decode(&format!("{blob} x"), fp).is_none());
    assert!(decode(&blob.replace(" AF41", " XX"), fp).is_none() || !blob.contains(" AF41"));
}

#[test]
fn round_trip_of_actions_hosts_and_exceptions() {
    let text = "[[rule]]\nmatch = { host = [\"db.test\", \"*.internal.example\"], except = { remote = \"10.9.0.0/16\", program = \"x y\" } }\ndscp = \"AF21\"\n[[rule]]\nmatch = { port = 5432 }\nfail = { rate = 0.2, errno = \"ECONNREFUSED\" }\ndelay = \"250ms\"\n[[rule]]\nredirect = { to = \"[::1]:8443\", peername = \"target\" }\ndeny = \"EACCES\"\n";
    let cfg = crate::parse_config(text, "p.toml").expect("valid");
    let blob = encode(&cfg.rules, OnError::Warn, 7);
    let (rules, _) = decode(&blob, 7).expect("decodes");
    assert_eq!(rules, cfg.rules);
    assert_eq!(
        rules[1].actions.fail.map(|f| (f.ppm, f.errno)),
        Some((200_000, 111))
    );
    assert!(rules[2].actions.redirect.is_some_and(|r| r.show_target));
    // Every cut of the blob is refused, never misread.
    for cut in 1..blob.len() {
        if let Some((r, _)) = decode(&blob[..cut], 7) {
            assert_ne!(r, cfg.rules, "cut at {cut}");
        }
    }
}

#[test]
fn find_byte_agrees_with_position() {
    let text = b"ab c/de  fghijklmnop/qrstuvwxyz 0123456789abcdef/ x";
    for start in 0..text.len() {
        for needle in [b' ', b'/', b'x', b'#'] {
            let s = &text[start..];
            let want = s.iter().position(|&b| b == needle).unwrap_or(s.len());
            assert_eq!(super::find_byte(s, needle), want, "{start} {needle}");
        }
    }
}

#[test]
fn fingerprint_ignores_order_and_the_blob_itself() {
    let a = fingerprint([
        ("SOCKWRAP_DSCP", "EF"),
        ("SOCKWRAP_LOG", "info"),
        ("HOME", "/"),
    ]);
    let b = fingerprint([
        ("SOCKWRAP_LOG", "info"),
        (VAR, "swp1 x"),
        ("SOCKWRAP_DSCP", "EF"),
    ]);
    assert_eq!(a, b);
    assert_ne!(
        a,
        fingerprint([("SOCKWRAP_DSCP", "CS1"), ("SOCKWRAP_LOG", "info")])
    );
    // Name/value boundaries count: A=BC is not AB=C.
    assert_ne!(
        fingerprint([("SOCKWRAP_A", "BC")]),
        fingerprint([("SOCKWRAP_AB", "C")])
    );
}

#[test]
fn host_form_round_trip_and_prefilter() {
    let text = r#"
[[rule]]
match = { program = ["ssh", "we ird"] }
dscp = "AF41"
[[rule]]
match = { program = ["psql"], port = 5432 }
keepalive = "30,10,3"
"#;
    let cfg = crate::parse_config(text, "h.toml").expect("valid");
    let file = encode_host(&cfg.rules, OnError::Warn, crate::LogLevel::Off);
    let head = host_head(file.as_bytes()).expect("head");
    assert!(!head.all);
    assert_eq!(head.log, crate::LogLevel::Off);
    assert!(head.may_apply(&[b"curl", b"ssh"]));
    assert!(head.may_apply(&[b"we ird"]));
    assert!(head.may_apply(&[b"psql"]));
    assert!(!head.may_apply(&[b"curl", b"python3"]));
    assert!(!head.may_apply(&[b"ss"]), "no prefix match");
    assert!(!head.may_apply(&[b"sh"]), "no suffix match");
    assert!(!head.may_apply(&[b"sshd"]), "no longer name");
    assert!(!head.may_apply(&[b"we"]), "no part of an escaped name");
    assert!(!head.may_apply(&[b""]));
    let (rules, oe, _) = decode_host(&file).expect("decodes");
    assert_eq!(rules, cfg.rules);
    assert_eq!(oe, OnError::Warn);
    // A rule for every program: every process decodes.
    let all = crate::parse_config("[[rule]]\ndscp = \"EF\"\n", "a.toml").expect("valid");
    let file2 = encode_host(&all.rules, OnError::Fail, crate::LogLevel::Warn);
    assert!(host_head(file2.as_bytes())
        .expect("head")
        .may_apply(&[b"x"]));
    // Damage: cut, edited, another catalog.
    assert_eq!(
        decode_host(&file[..file.len() - 1]),
        Err(HostError::Damaged)
    );
    assert_eq!(
        host_head(b"swh1 0000000000000000 off 0 0 0\n"),
        Err(HostError::OtherVersion)
    );
    assert_eq!(host_head(b"garbage"), Err(HostError::Damaged));
    assert_eq!(host_head(b""), Err(HostError::Damaged));
    let edited = file.replacen(" 2 ", " 3 ", 1);
    assert!(decode_host(&edited).is_err());
}

#[test]
fn a_host_head_too_long_for_one_read_falls_back_to_all() {
    let mut rules = Vec::new();
    for i in 0..200 {
        let mut r = Rule::new(format!("r{i}"));
        r.matcher.program = vec![format!("program-number-{i}")];
        r.settings.set(
            Opt::NoDelay,
            Setting {
                value: crate::Value::Bool(true),
                soft: false,
            },
        );
        rules.push(r);
    }
    let file = encode_host(&rules, OnError::Warn, crate::LogLevel::Off);
    let head = host_head(file.as_bytes()).expect("head");
    assert!(head.all && head.head_len <= HOST_HEAD_MAX);
    assert_eq!(decode_host(&file).expect("decodes").0, rules);
}
