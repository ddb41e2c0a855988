//! `sockwrap check FILE...`: parse policy files and print each rule, or each error as
//! `FILE:LINE:COL: error: ...`. Exit 1 when any file has errors.

use crate::error::{Error, Result};
use clap::ArgMatches;
use sockwrap_policy::catalog::Shown;
use sockwrap_policy::parse_config;
use sockwrap_policy::rules::errno_name;
use std::process::ExitCode;

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
                    let opts: Vec<String> = r
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
                    let mut opts = opts;
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
                    println!("  {}: {}", r.name, opts.join(" "));
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
