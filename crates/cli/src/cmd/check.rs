//! `sockwrap check FILE...`: parse policy files and print each rule, or each error as
//! `FILE:LINE:COL: error: ...`, and warn of what parses but does nothing: an empty policy, a
//! rule that sets nothing, a rule that later rules override entirely (the last match wins).
//! Exit 1 when any file has errors; warnings do not change the exit status.

use crate::error::{Error, Result};
use crate::json::{Json, JsonExt as _};
use clap::ArgMatches;
use sockwrap_policy::catalog::Shown;
use sockwrap_policy::rules::{errno_name, overridden_entirely, Rule, ACTION_KINDS};
use sockwrap_policy::{parse_config, Config, OnError};
use std::process::ExitCode;

/// A rule's options and actions as `KEY=VALUE` words, as `check` prints them.
pub fn rule_words(r: &Rule) -> Vec<String> {
    let mut opts: Vec<String> = r
        .settings
        .iter()
        .map(|(o, s)| {
            format!(
                "{}={}{}",
                o.name(),
                Shown(o, s.value),
                if s.soft { "(soft)" } else { "" }
            )
        })
        .collect();
    let a = &r.actions;
    if let Some(e) = a.deny {
        opts.push(format!("deny={}", errno_name(e)));
    }
    if let Some(rd) = a.redirect {
        opts.push(format!(
            "redirect={}{}",
            rd.to,
            if rd.show_target {
                "(peername: target)"
            } else {
                ""
            }
        ));
    }
    if let Some(d) = a.delay_ms {
        opts.push(format!("delay={d}ms"));
    }
    if let Some(f) = a.fail {
        opts.push(format!(
            "fail={}/{}",
            sockwrap_policy::rules::rate_text(f.ppm),
            errno_name(f.errno)
        ));
    }
    opts
}

/// What parses but does nothing, as (line of the rule, if about one; message).
pub fn warnings(cfg: &Config) -> Vec<(Option<usize>, String)> {
    let mut out = Vec::new();
    let line = |i: usize| cfg.rule_lines.get(i).copied();
    if cfg.rules.iter().all(Rule::is_empty) {
        out.push((
            None,
            if cfg.rules.is_empty() {
                "the policy has no [[rule]]: it changes nothing".to_string()
            } else {
                "no rule sets an option or an action: the policy changes nothing".to_string()
            },
        ));
        return out;
    }
    for (i, r) in cfg.rules.iter().enumerate() {
        if r.is_empty() {
            out.push((
                line(i),
                format!("rule `{}` sets no option and no action", r.name),
            ));
        }
    }
    for (i, by) in overridden_entirely(&cfg.rules) {
        let names: Vec<String> = by
            .iter()
            .map(|&j| format!("`{}`", cfg.rules[j].name))
            .collect();
        out.push((
            line(i),
            format!(
                "rule `{}` never decides anything: later rules override every option it sets ({}), and the last match wins; move it after them, or narrow them",
                cfg.rules[i].name,
                names.join(", ")
            ),
        ));
    }
    out
}

/// A rule's options as JSON objects (check and explain share the shape, docs/json.md).
pub fn option_json(
    o: sockwrap_policy::Opt,
    s: &sockwrap_policy::Setting,
) -> Vec<(&'static str, Json)> {
    vec![
        ("option", o.name().into()),
        ("value", crate::json::option_value(s.value)),
        ("shown", Shown(o, s.value).to_string().into()),
        ("soft", s.soft.into()),
    ]
}

fn rule_json(index: usize, line: Option<usize>, r: &Rule) -> Json {
    let options: Vec<Json> = r
        .settings
        .iter()
        .map(|(o, s)| {
            crate::json::obj(
                option_json(o, s)
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
            )
        })
        .collect();
    let actions: Vec<Json> = ACTION_KINDS
        .into_iter()
        .zip(r.actions.texts())
        .filter_map(|(k, t)| {
            t.map(|t| crate::json::object([("action", k.into()), ("value", t.into())]))
        })
        .collect();
    crate::json::object([
        ("index", (index + 1).into()),
        ("name", r.name.as_str().into()),
        ("line", line.into()),
        ("options", Json::Array(options)),
        ("actions", Json::Array(actions)),
    ])
}

/// `check --json`: one document for all files (docs/json.md).
fn file_json(
    f: &str,
    parsed: std::result::Result<Config, Vec<sockwrap_policy::ConfigError>>,
) -> (bool, Json) {
    let error = |line: Option<usize>, column: Option<usize>, msg: String| {
        crate::json::object([
            ("line", line.into()),
            ("column", column.into()),
            ("message", msg.into()),
        ])
    };
    match parsed {
        Ok(cfg) => {
            let rules: Vec<Json> = cfg
                .rules
                .iter()
                .enumerate()
                .map(|(i, r)| rule_json(i, cfg.rule_lines.get(i).copied(), r))
                .collect();
            let warns: Vec<Json> = warnings(&cfg)
                .into_iter()
                .map(|(line, msg)| {
                    crate::json::object([("line", line.into()), ("message", msg.into())])
                })
                .collect();
            let on_error = cfg.on_error.map(|o| match o {
                OnError::Warn => "warn",
                OnError::Fail => "fail",
            });
            (
                true,
                crate::json::object([
                    ("file", f.into()),
                    ("ok", true.into()),
                    ("on_error", on_error.into()),
                    ("rules", Json::Array(rules)),
                    ("warnings", Json::Array(warns)),
                    ("errors", Json::Array(Vec::new())),
                ]),
            )
        }
        Err(errs) => {
            let errs: Vec<Json> = errs
                .into_iter()
                .map(|e| error(e.pos.map(|p| p.0), e.pos.map(|p| p.1), e.msg))
                .collect();
            (
                false,
                crate::json::object([
                    ("file", f.into()),
                    ("ok", false.into()),
                    ("on_error", Json::Null),
                    ("rules", Json::Array(Vec::new())),
                    ("warnings", Json::Array(Vec::new())),
                    ("errors", Json::Array(errs)),
                ]),
            )
        }
    }
}

pub fn check(m: &ArgMatches) -> Result<ExitCode> {
    let mut bad = false;
    let json = m.get_flag("json");
    let mut docs = Vec::new();
    let files = m.get_many::<String>("config").into_iter().flatten();
    for f in files.chain(m.get_many::<String>("files").into_iter().flatten()) {
        let text = match std::fs::read_to_string(f) {
            Ok(t) => t,
            Err(e) => {
                let msg = format!("cannot read the policy file: {e}");
                if json {
                    docs.push(
                        file_json(
                            f,
                            Err(vec![sockwrap_policy::ConfigError {
                                source: f.clone(),
                                pos: None,
                                msg,
                            }]),
                        )
                        .1,
                    );
                } else {
                    eprintln!("{f}: error: {msg}");
                }
                bad = true;
                continue;
            }
        };
        if json {
            let (ok, doc) = file_json(f, parse_config(&text, f));
            bad |= !ok;
            docs.push(doc);
            continue;
        }
        match parse_config(&text, f) {
            Ok(cfg) => {
                println!("{f}: ok, {} rule(s)", cfg.rules.len());
                for r in &cfg.rules {
                    println!("  {}: {}", r.name, rule_words(r).join(" "));
                }
                for (line, msg) in warnings(&cfg) {
                    match line {
                        Some(l) => eprintln!("{f}:{l}: warning: {msg}"),
                        None => eprintln!("{f}: warning: {msg}"),
                    }
                }
            }
            Err(errs) => {
                bad = true;
                for e in errs {
                    eprintln!("{e}");
                }
            }
        }
    }
    if json {
        let doc = crate::json::object([("ok", (!bad).into()), ("files", Json::Array(docs))]);
        println!("{}", doc.to_json());
    }
    if bad {
        Err(Error::Findings)
    } else {
        Ok(ExitCode::SUCCESS)
    }
}
