//! Tests of `agent`.

use super::*;

fn c(name: &str, image: &str, labels: &[(&str, &str)]) -> Container {
    Container {
        id: "a".repeat(64),
        name: name.into(),
        image: image.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

#[test]
fn the_label_wins_then_the_first_matching_rule() {
    let rules = parse_config(
        "[[assign]]\nimage = \"docker.io/library/postgres:*\"\npolicy = \"db\"\n\n[[assign]]\nname = \"media-*\"\npolicy = \"media\"\n",
        "agent.toml",
    )
    .expect("config");
    assert_eq!(
        choose(
            &c("x", "docker.io/library/postgres:16", &[(LABEL, "ef")]),
            &rules
        ),
        Choice::Label("ef".into())
    );
    assert_eq!(
        choose(&c("x", "docker.io/library/postgres:16", &[]), &rules),
        Choice::Rule(1, "db".into())
    );
    assert_eq!(
        choose(&c("media-1", "busybox", &[]), &rules),
        Choice::Rule(2, "media".into())
    );
    assert_eq!(
        choose(&c("web", "nginx", &[("other", "x")]), &rules),
        Choice::None
    );
}

#[test]
fn config_errors_name_where() {
    for (text, want) in [
        ("[[assign]]\nimage = \"x\"\n", "#1: no `policy`"),
        ("[[assign]]\npolicy = \"p\"\n", "give `image` or `name`"),
        (
            "[[assign]]\npolicy = \"p\"\nimage = 3\n",
            "`image` must be a string",
        ),
        (
            "[[assign]]\npolicy = \"p\"\nimgae = \"x\"\n",
            "unknown key `imgae`",
        ),
        ("[assign]\npolicy = \"p\"\n", "array of tables"),
        ("rules = 1\n", "unknown key `rules`"),
        ("[[assign\n", "invalid TOML"),
    ] {
        let e = parse_config(text, "a.toml").expect_err(text);
        assert!(e.contains(want) && e.starts_with("a.toml"), "{text}: {e}");
    }
}

#[test]
fn ready_pods_and_their_annotation_from_crictl() {
    let v: serde_json::Value = serde_json::from_str(
        r#"{"items":[
          {"id":"s1","metadata":{"name":"db-0","uid":"u-1","namespace":"prod","attempt":0},"state":"SANDBOX_READY","annotations":{"sockwrap.io/policy":"db","kubernetes.io/config.source":"api"}},
          {"id":"s2","metadata":{"name":"web","uid":"u-2","namespace":"prod"},"state":"SANDBOX_READY","annotations":{}},
          {"id":"s3","metadata":{"name":"old","uid":"u-3","namespace":"prod"},"state":"SANDBOX_NOTREADY","annotations":{"sockwrap.io/policy":"db"}}
        ]}"#,
    )
    .expect("json");
    assert_eq!(
        pods_from_crictl(&v),
        vec![
            Pod {
                uid: "u-1".into(),
                name: "prod/db-0".into(),
                policy: Some("db".into())
            },
            Pod {
                uid: "u-2".into(),
                name: "prod/web".into(),
                policy: None
            },
        ]
    );
}

#[test]
fn globs() {
    assert!(glob("db-*", "db-1"));
    assert!(glob("*postgres*", "docker.io/library/postgres:16"));
    assert!(glob("a?c", "abc"));
    assert!(!glob("a?c", "abbc"));
    assert!(!glob("db-*", "web"));
    assert!(glob("*", ""));
}

#[test]
fn containers_from_each_runtimes_json() {
    // podman inspect
    let v: serde_json::Value = serde_json::from_str(
        r#"{"Id":"abc","Name":"web","Config":{"Image":"busybox","Labels":{"sockwrap.policy":"ef"}}}"#,
    )
    .expect("json");
    let got = container_from_json(&v).expect("container");
    assert_eq!((got.name.as_str(), got.image.as_str()), ("web", "busybox"));
    assert_eq!(
        got.labels,
        vec![("sockwrap.policy".to_string(), "ef".to_string())]
    );
    // docker inspect: Name with a leading slash
    let v: serde_json::Value = serde_json::from_str(
        r#"{"Id":"abc","Name":"/web","Config":{"Image":"nginx","Labels":{}}}"#,
    )
    .expect("json");
    assert_eq!(container_from_json(&v).expect("c").name, "web");
    // podman event
    let v: serde_json::Value = serde_json::from_str(
        r#"{"ID":"abc","Image":"busybox","Name":"web","Status":"start","Attributes":{"sockwrap.policy":"ef"}}"#,
    )
    .expect("json");
    let got = container_from_json(&v).expect("c");
    assert_eq!(got.id, "abc");
    assert!(got
        .labels
        .contains(&("sockwrap.policy".into(), "ef".into())));
    // docker event
    let v: serde_json::Value = serde_json::from_str(
        r#"{"id":"abc","Action":"start","Actor":{"Attributes":{"name":"web","sockwrap.policy":"ef"}}}"#,
    )
    .expect("json");
    let got = container_from_json(&v).expect("c");
    assert_eq!(got.name, "web");
    assert!(got
        .labels
        .contains(&("sockwrap.policy".into(), "ef".into())));
}
