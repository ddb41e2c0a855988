//! `sockwrap check FILE...`: parse policy files and print each rule, or each error as
//! `FILE:LINE:COL: error: ...`, and warn of what parses but does nothing: an empty policy, a
//! rule that sets nothing, a rule that later rules override entirely (the last match wins).
//! Exit 1 when any file has errors; warnings do not change the exit status.

use crate::error::{Error, Result};
use clap::ArgMatches;
use sockwrap_policy::catalog::Shown;
use sockwrap_policy::rules::{errno_name, overridden_entirely, Rule};
use sockwrap_policy::{parse_config, Config};
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

pub fn check(m: &ArgMatches) -> Result<ExitCode> {
    let mut bad = false;
    let files = m.get_many::<String>("config").into_iter().flatten();
    for f in files.chain(m.get_many::<String>("files").into_iter().flatten()) {
        let text = match std::fs::read_to_string(f) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("{f}: error: cannot read the policy file: {e}");
                bad = true;
                continue;
            }
        };
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
    if bad {
        Err(Error::Findings)
    } else {
        Ok(ExitCode::SUCCESS)
    }
}
