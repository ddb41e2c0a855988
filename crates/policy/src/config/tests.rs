use super::*;
use crate::rules::Policy;

#[test]
fn full_example_parses() {
    let text = r#"
on_error = "fail"

[[rule]]
dscp = "AF21"

[[rule]]
name = "ssh"
match = { remote = ["10.0.0.0/8", "::1"], port = [22, "8000-8100"], role = "client", transport = "tcp", program = ["ssh"] }
dscp = "EF"
keepalive = { idle = 30, interval = 10, count = 3 }
nodelay = true
soft = ["nodelay"]
"#;
    let cfg = parse_config(text, "p.toml").expect("valid");
    assert_eq!(cfg.on_error, Some(OnError::Fail));
    assert_eq!(cfg.rules.len(), 2);
    assert_eq!(cfg.rules[0].name, "p.toml:4");
    let r = &cfg.rules[1];
    assert_eq!(r.name, "ssh");
    assert_eq!(
        r.settings.get(Opt::KeepIdle).map(|s| s.value),
        Some(Value::Int(30))
    );
    assert_eq!(
        r.settings.get(Opt::KeepAlive).map(|s| s.value),
        Some(Value::Bool(true))
    );
    assert!(r.settings.get(Opt::NoDelay).is_some_and(|s| s.soft));
    assert!(r.settings.get(Opt::Tos).is_some_and(|s| !s.soft));
    assert_eq!(r.matcher.port.len(), 2);
    let _ = Policy::new(cfg.rules, OnError::Warn);
}

#[test]
fn errors_have_positions_and_say_what_was_expected() {
    let text = "[[rule]]\ndscp = \"XX\"\nmatch = { remote = \"10.0.0.0/33x\" }\nnodelai = true\n";
    let errs = parse_config(text, "bad.toml").expect_err("invalid");
    let shown: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert!(
        shown
            .iter()
            .any(|s| s.starts_with("bad.toml:2:8: error: dscp: `XX` is not a DSCP")),
        "{shown:?}"
    );
    assert!(
        shown
            .iter()
            .any(|s| s.starts_with("bad.toml:3:20: error: match.remote:")),
        "{shown:?}"
    );
    assert!(
        shown.iter().any(|s| s
            .contains("bad.toml:4:1: error: unknown option `nodelai` (did you mean `nodelay`?)")),
        "{shown:?}"
    );
}

#[test]
fn actions_and_their_errors() {
    let ok = "[[rule]]\nmatch = { host = \"license.example.com\" }\ndeny = \"ECONNREFUSED\"\n[[rule]]\nmatch = { remote = \"192.0.2.10\", port = 443 }\nredirect = \"127.0.0.1:8443\"\n[[rule]]\ndeny = true\ndelay = 100\n";
    let cfg = parse_config(ok, "a.toml").expect("valid");
    assert_eq!(cfg.rules[0].actions.deny, Some(111));
    assert_eq!(
        cfg.rules[1].actions.redirect.map(|r| r.to.port()),
        Some(8443)
    );
    assert_eq!(cfg.rules[2].actions.delay_ms, Some(100));
    let bad = "[[rule]]\ndeny = \"EBOGUS\"\nfail = { rate = 1.5 }\nredirect = \"localhost\"\ndelay = \"soon\"\nmatch = { host = \"a*b\", except = { except = { port = 1 } } }\n[[rule]]\nfail = { errno = \"ECONNRESET\" }\nmatch = { except = {} }\n";
    let errs: Vec<String> = parse_config(bad, "b.toml")
        .expect_err("invalid")
        .iter()
        .map(|e| e.to_string())
        .collect();
    for want in [
        "b.toml:2:8: error: deny: `EBOGUS` is not an errno",
        "b.toml:3:17: error: fail.rate: rate 1.5 is outside 0..1",
        "b.toml:4:12: error: redirect: `localhost` is not an address:port",
        "b.toml:5:9: error: delay: `soon` is not a delay",
        "b.toml:6:18: error: match.host: `a*b` is not a host name",
        "error: match.except: an exception cannot have an exception of its own",
        "b.toml:8:8: error: fail: missing `rate = 0..1`",
        "b.toml:9:20: error: match.except: empty",
    ] {
        assert!(errs.iter().any(|e| e.contains(want)), "{want}\n{errs:#?}");
    }
    // A rate given but refused is one error, not also "missing".
    assert!(
        !errs
            .iter()
            .any(|e| e.starts_with("b.toml:3:") && e.contains("missing")),
        "{errs:#?}"
    );
}

#[test]
fn broken_files_still_declare_strictness() {
    assert_eq!(
        declared_on_error("on_error = \"fail\"\n[[rule]]\nbogus = 1\n"),
        Some(OnError::Fail)
    );
    assert_eq!(declared_on_error("[[rule]]\n"), None);
}

#[test]
fn toml_syntax_error_has_position() {
    let errs = parse_config("[[rule]]\ndscp = \n", "x.toml").expect_err("invalid");
    assert_eq!(errs.len(), 1);
    assert!(errs[0].to_string().starts_with("x.toml:2:"), "{}", errs[0]);
}

#[test]
fn a_repeated_rule_table_says_to_use_double_brackets() {
    for text in [
        "[rule]\ndscp = \"EF\"\n[rule]\ndscp = \"AF21\"\n",
        "[[rule]]\ndscp = \"EF\"\n[rule]\ndscp = \"AF21\"\n",
    ] {
        let errs = parse_config(text, "d.toml").expect_err("invalid");
        let e = errs[0].to_string();
        assert!(
            e.starts_with(
                "d.toml:3:2: error: `[rule]` appears twice: write each rule as a [[rule]] table"
            ),
            "{e}"
        );
    }
    let errs = parse_config("[[rule]]\ndscp = 1\ndscp = 2\n", "d.toml").expect_err("invalid");
    assert!(
        errs[0].to_string().contains("invalid TOML: duplicate key"),
        "{}",
        errs[0]
    );
}
