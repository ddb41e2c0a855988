//! The policy as a subcommand's command line gives it, and the one way a subcommand that
//! must not go on refuses a policy with errors: each error on its own line
//! (`sockwrap: ERROR`), then one line saying what was not done (exit 2).
//!
//! Used by `run`/`trace` and `run --kernel` ([`crate::launch`]), `attach`, `enable` (units and
//! `--system`), `repin`, `explain`, `doctor` and the agent.

use crate::error::{Error, Result};
use clap::ArgMatches;
use sockwrap_policy::{Loaded, Policy};
use std::fmt::Display;

fn read_policy_file(path: &str) -> std::result::Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read the policy file: {e}"))
}

/// The policy `vars` (SOCKWRAP_* name, value) give, with the file a `SOCKWRAP_CONFIG` names
/// read from disk: what every subcommand that takes run's flags loads.
pub fn load_vars(vars: &[(String, String)]) -> Loaded {
    sockwrap_policy::load(
        vars.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        read_policy_file,
    )
}

/// `-c FILE` must name something that exists: a usage error (exit 2) otherwise, before
/// the policy is read.
pub fn config_exists(m: &ArgMatches) -> Result<()> {
    if let Some(c) = m.get_one::<String>("config") {
        if let Err(e) = std::fs::metadata(c) {
            return Err(Error::usage(format_args!("--config: {c}: {e}")));
        }
    }
    Ok(())
}

/// The inherited `SOCKWRAP_*` variables (except those in `skip`) with `vars` (the flags)
/// on top: the policy as the library of a program started now would see it.
pub fn with_inherited(vars: &[(String, String)], skip: &[&str]) -> Vec<(String, String)> {
    let mut seen: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("SOCKWRAP_") && !skip.contains(&k.as_str()))
        .collect();
    seen.retain(|(k, _)| !vars.iter().any(|(f, _)| f == k));
    seen.extend(vars.iter().cloned());
    seen
}

/// Each error of the policy on its own line, `sockwrap: ERROR`.
pub fn print_errors(loaded: &Loaded) {
    for e in &loaded.errors {
        eprintln!("sockwrap: {e}");
    }
}

/// The policy, or, when it has errors, each error on its own line and a usage error (exit
/// 2) whose line is `refusal` (what was not done: "enable: the policy has errors; nothing
/// written for nginx.service").
pub fn policy_or_refuse(loaded: Loaded, refusal: impl Display) -> Result<Policy> {
    if loaded.errors.is_empty() {
        return Ok(loaded.policy);
    }
    print_errors(&loaded);
    Err(Error::usage(refusal))
}
