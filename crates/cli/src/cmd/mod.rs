//! One module per subcommand. Each takes its matches and returns the exit status, or an
//! [`Error`](crate::error::Error) that `main` prints and turns into one.

pub mod agent;
pub mod attach;
pub mod check;
pub mod containers;
pub mod doctor;
pub mod explain;
pub mod gen;
pub mod host;
pub mod kernel;
pub mod options;
pub mod report;
pub mod run;
pub mod support;
pub mod systemd;
pub mod trace;

/// `status --json`, around `systemd::status` and `host::status`.
pub mod status;

use crate::error::Result;
use clap::ArgMatches;
use std::process::ExitCode;

pub fn dispatch(m: &ArgMatches) -> Result<ExitCode> {
    match m.subcommand() {
        Some(("run", s)) => run::run(s),
        Some(("trace", s)) => trace::trace(s),
        Some(("report", s)) => report::report(s),
        Some(("attach", s)) => attach::attach(s),
        Some(("detach", s)) => containers::detach(s),
        Some(("agent", s)) => agent::agent(s),
        Some(("check", s)) => check::check(s),
        Some(("explain", s)) => explain::explain(s),
        Some(("options", s)) if s.get_flag("json") => Ok(options::options_json()),
        Some(("options", _)) => Ok(options::options()),
        Some(("help-config", _)) => Ok(options::help_config()),
        Some(("doctor", s)) => doctor::doctor(s),
        Some(("enable", s)) if s.get_flag("system") => host::enable(s),
        Some(("disable", s)) if s.get_flag("system") => host::disable(s),
        Some(("status", s)) if s.get_flag("containers") => containers::status(s),
        Some(("status", s)) if s.get_flag("json") => status::status_json(s),
        Some(("status", s)) if s.get_flag("system") => host::status(s),
        Some(("enable", s)) => systemd::enable(s),
        Some(("disable", s)) => systemd::disable(s),
        Some(("status", s)) => systemd::status(s),
        Some(("repin", s)) => systemd::repin(s),
        Some(("gen-man", s)) => gen::man(s),
        Some(("gen-completions", s)) => gen::completions(s),
        // clap requires a subcommand, and every one defined in cli.rs is listed above.
        _ => Ok(ExitCode::from(crate::error::USAGE)),
    }
}
