//! The `SOCKWRAP_*` environment: how `sockwrap run` passes flags to the library, and how a
//! user can drive the library without the launcher (`LD_PRELOAD=libsockwrap.so
//! SOCKWRAP_DSCP=EF prog`).
//!
//! | variable | meaning |
//! |---|---|
//! | `SOCKWRAP_CONFIG` | policy file |
//! | `SOCKWRAP_<OPTION>` | one option for the flag rule, e.g. `SOCKWRAP_DSCP=EF`, `SOCKWRAP_KEEPALIVE=30,10,3`, `SOCKWRAP_USER_TIMEOUT=5s` |
//! | `SOCKWRAP_TO` | narrows the flag rule: `CIDR[:PORT]` items separated by spaces or commas |
//! | `SOCKWRAP_SOFT` | `1`: the flag rule's options are defaults; or a list of option names |
//! | `SOCKWRAP_STRICT` | `1`: a refused option fails the program's call |
//! | `SOCKWRAP_LOG`, `SOCKWRAP_LOG_FILE` | log level (off, error, warn, info, debug) and file |
//! | `SOCKWRAP_TRACE` | JSON-lines trace of every socket call, appended to this file (docs/trace-schema.md) |
//! | `SOCKWRAP_TRACE_IO` | `1`: byte counts per connection (not implemented yet: accepted and ignored) |
//! | `SOCKWRAP_DENY` | the flag rule's connects fail with this errno (`1` = ECONNREFUSED) |
//! | `SOCKWRAP_REDIRECT` | the flag rule's connects go to this `ADDRESS:PORT` |
//! | `SOCKWRAP_DELAY` | the flag rule's connects complete this much later (`250ms`) |
//! | `SOCKWRAP_FAIL` | `RATE[,ERRNO]`: this fraction of the flag rule's connects fail (ECONNRESET) |
//! | `SOCKWRAP_SEED` | the seed of the `fail` choices (a number); without it a random one is logged |

use crate::catalog::{parse_keepalive, parse_value, Opt, Raw};
use crate::config::ConfigError;
#[allow(unused_imports)]
use crate::prelude::*;
use crate::rules::{
    parse_delay, parse_errno, parse_redirect, rate_ppm, Cidr, Fail, Match, Ports, Redirect, Rule,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum LogLevel {
    Off = 0,
    Error = 1,
    #[default]
    Warn = 2,
    Info = 3,
    Debug = 4,
}

impl LogLevel {
    pub fn parse(s: &str) -> Option<LogLevel> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "off" | "none" | "0" => LogLevel::Off,
            "error" => LogLevel::Error,
            "warn" | "warning" => LogLevel::Warn,
            "info" => LogLevel::Info,
            "debug" | "trace" => LogLevel::Debug,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Off => "off",
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
        }
    }
}

/// What the environment says.
#[derive(Clone, Debug, Default)]
pub struct EnvSettings {
    pub config_path: Option<String>,
    /// The rules made of option variables: one per `SOCKWRAP_TO` target, or one catch-all.
    pub flag_rules: Vec<Rule>,
    pub strict: bool,
    pub log_level: LogLevel,
    pub log_file: Option<String>,
    /// `SOCKWRAP_TRACE`: the JSON-lines trace file.
    pub trace: Option<String>,
    /// `SOCKWRAP_TRACE_IO=1`: byte counts per connection were asked for.
    pub trace_io: bool,
    /// `SOCKWRAP_SEED`: the seed of the `fail` choices.
    pub seed: Option<u64>,
    pub errors: Vec<ConfigError>,
    /// Variables that look like ours but mean nothing (typos); reported as warnings.
    pub unknown: Vec<String>,
}

/// Variables starting with `SOCKWRAP_` that are not for the library (the launcher's and the
/// test suite's own).
const NOT_OURS: &[&str] = &[
    "SOCKWRAP_LIB",
    "SOCKWRAP_BIN",
    "SOCKWRAP_NO_SKIP",
    "SOCKWRAP_ACTIVE",
    // The test suite's own wait multiplier (tests/util.py; set in the kernel-matrix VMs).
    "SOCKWRAP_TIME_SCALE",
    // Set in the kernel-matrix VMs (scripts/vm-guest.sh), for the tests.
    "SOCKWRAP_VM",
    // The launcher's compiled policy: read by `load`, not a setting of its own.
    "SOCKWRAP_POLICY",
];

/// Whether a `SOCKWRAP_*` variable says something about the policy (an option, a target, a
/// policy file, strictness), as opposed to only where to log or trace. A process with none
/// of these takes the host-wide policy, if there is one (`sockwrap enable --system`).
pub fn is_policy_var(name: &str) -> bool {
    name.starts_with("SOCKWRAP_")
        && !matches!(
            name,
            "SOCKWRAP_LOG"
                | "SOCKWRAP_LOG_FILE"
                | "SOCKWRAP_TRACE"
                | "SOCKWRAP_TRACE_IO"
                | "SOCKWRAP_SEED"
        )
        && (name == "SOCKWRAP_POLICY" || !NOT_OURS.contains(&name))
}

/// The environment variable for an option: `SOCKWRAP_` + upper-snake name.
pub fn var_for(opt: Opt) -> String {
    format!(
        "SOCKWRAP_{}",
        opt.name().replace(['-', '.'], "_").to_ascii_uppercase()
    )
}

fn opt_for_var(var_suffix: &str) -> Option<Opt> {
    let name = var_suffix.to_ascii_lowercase().replace('_', "-");
    if name == "tos" {
        return Some(Opt::Tos);
    }
    Opt::from_name(&name).or_else(|| Opt::from_name(&name.replacen("keepalive-", "keepalive.", 1)))
}

/// Parses one `--to` / `SOCKWRAP_TO` target: `CIDR`, `CIDR:PORT`, `[V6CIDR]:PORT`, `:PORT`;
/// PORT may be a range `LO-HI`.
pub fn parse_target(s: &str) -> Result<Match, String> {
    let s = s.trim();
    let mut m = Match::default();
    let (net, port) = if let Some(rest) = s.strip_prefix('[') {
        match rest.split_once(']') {
            Some((net, "")) => (Some(net), None),
            Some((net, p)) => match p.strip_prefix(':') {
                Some(p) => (Some(net), Some(p)),
                None => return Err(format!("`{s}`: expected [IPV6]:PORT")),
            },
            None => return Err(format!("`{s}`: missing `]`")),
        }
    } else if let Some(p) = s.strip_prefix(':').filter(|_| !s.starts_with("::")) {
        (None, Some(p))
    } else if s.matches(':').count() == 1 {
        let (a, p) = s.split_once(':').unwrap_or((s, ""));
        (Some(a), Some(p))
    } else {
        (Some(s), None)
    };
    if let Some(net) = net {
        m.remote.push(Cidr::parse(net)?);
    }
    if let Some(p) = port {
        m.port.push(Ports::parse(p)?);
    }
    if net.is_none() && port.is_none() {
        return Err("empty target: expected CIDR[:PORT], [IPV6]:PORT or :PORT".into());
    }
    Ok(m)
}

/// A seed: a decimal number up to 2^64-1.
pub fn parse_seed(s: &str) -> Result<u64, String> {
    s.trim()
        .parse::<u64>()
        .map_err(|_| format!("`{s}` is not a seed (expected a number 0..18446744073709551615)"))
}

/// `RATE[,ERRNO]` (`0.2`, `0.2,ECONNREFUSED`): a `fail` action from a flag or variable.
pub fn parse_fail(s: &str) -> Result<Fail, String> {
    let (rate, errno) = match s.split_once([',', ':']) {
        Some((r, e)) => (r, parse_errno(e)?),
        None => (s, 104),
    };
    Ok(Fail {
        ppm: rate_ppm(rate).map_err(|e| format!("`{s}`: {e}"))?,
        errno,
    })
}

/// Reads the `SOCKWRAP_*` variables out of an environment.
pub fn from_vars<'a>(vars: impl IntoIterator<Item = (&'a str, &'a str)>) -> EnvSettings {
    let mut out = EnvSettings::default();
    let mut rule = Rule::new("flags");
    let mut targets: Vec<Match> = Vec::new();
    let mut soft: Option<String> = None;
    let err = |out: &mut EnvSettings, var: &str, msg: String| {
        out.errors.push(ConfigError {
            source: var.to_string(),
            pos: None,
            msg,
        });
    };
    for (k, v) in vars {
        let Some(suffix) = k.strip_prefix("SOCKWRAP_") else {
            continue;
        };
        match suffix {
            "CONFIG" => out.config_path = Some(v.to_string()).filter(|p| !p.is_empty()),
            "LOG" => match LogLevel::parse(v) {
                Some(l) => out.log_level = l,
                None => err(
                    &mut out,
                    k,
                    format!("`{v}` is not a log level: expected off, error, warn, info or debug"),
                ),
            },
            "LOG_FILE" => out.log_file = Some(v.to_string()).filter(|p| !p.is_empty()),
            "TRACE" => out.trace = Some(v.to_string()).filter(|p| !p.is_empty()),
            "TRACE_IO" => out.trace_io = matches!(v.trim(), "1" | "true" | "yes" | "on"),
            "STRICT" => out.strict = matches!(v.trim(), "1" | "true" | "yes" | "on"),
            "SOFT" => soft = Some(v.to_string()),
            "TO" => {
                for t in v.split([',', ' ']).filter(|t| !t.trim().is_empty()) {
                    match parse_target(t) {
                        Ok(m) => targets.push(m),
                        Err(e) => err(&mut out, k, e),
                    }
                }
            }
            _ if NOT_OURS.contains(&k) => {}
            "SEED" => match parse_seed(v) {
                Ok(n) => out.seed = Some(n),
                Err(e) => err(&mut out, k, e),
            },
            "DENY" => match v.trim() {
                "" | "0" | "off" | "no" | "false" => {}
                "1" | "on" | "yes" | "true" => rule.actions.deny = Some(111),
                name => match parse_errno(name) {
                    Ok(e) => rule.actions.deny = Some(e),
                    Err(e) => err(&mut out, k, e),
                },
            },
            "REDIRECT" => match parse_redirect(v) {
                Ok(to) => {
                    rule.actions.redirect = Some(Redirect {
                        to,
                        show_target: false,
                    })
                }
                Err(e) => err(&mut out, k, e),
            },
            "DELAY" => match parse_delay(v) {
                Ok(ms) => rule.actions.delay_ms = Some(ms),
                Err(e) => err(&mut out, k, e),
            },
            "FAIL" => match parse_fail(v) {
                Ok(f) => rule.actions.fail = Some(f),
                Err(e) => err(&mut out, k, e),
            },
            "KEEPALIVE" => match parse_keepalive(v) {
                Ok(vals) => {
                    for (o, val) in vals {
                        rule.set(o, val, false);
                    }
                }
                Err(e) => err(&mut out, k, e),
            },
            _ => match opt_for_var(suffix) {
                Some(opt) => match parse_value(opt, &suffix.to_ascii_lowercase(), Raw::Str(v)) {
                    Ok(val) => rule.set(opt, val, false),
                    Err(e) => err(&mut out, k, e),
                },
                None => out.unknown.push(k.to_string()),
            },
        }
    }
    if let Some(s) = soft {
        let s = s.trim();
        if matches!(s, "1" | "true" | "yes" | "on" | "all") {
            for (_, st) in rule.settings.iter_mut() {
                st.soft = true;
            }
        } else if !matches!(s, "" | "0" | "false" | "no" | "off") {
            for name in s.split([',', ' ']).filter(|n| !n.is_empty()) {
                match Opt::from_name(name) {
                    Some(o) => {
                        if let Some(st) = rule.settings.get_mut(o) {
                            st.soft = true;
                        }
                    }
                    None => err(
                        &mut out,
                        "SOCKWRAP_SOFT",
                        format!("unknown option `{name}`"),
                    ),
                }
            }
        }
    }
    if !rule.is_empty() {
        // Exactly as many as there will be (a Vec grows by four at first: ~1 KiB of rules).
        out.flag_rules.reserve_exact(targets.len().max(1));
        if targets.is_empty() {
            out.flag_rules.push(rule);
        } else {
            for m in targets {
                let mut r = rule.clone();
                r.matcher = m;
                out.flag_rules.push(r);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Value;

    #[test]
    fn option_variables_make_a_rule() {
        let e = from_vars([
            ("SOCKWRAP_DSCP", "EF"),
            ("SOCKWRAP_KEEPALIVE", "30,10,3"),
            ("SOCKWRAP_USER_TIMEOUT", "5s"),
            ("SOCKWRAP_SOFT", "dscp"),
            ("SOCKWRAP_TO", "127.0.0.1:80 [::1]:8000-8100"),
            ("SOCKWRAP_LOG", "info"),
            ("SOCKWRAP_BIN", "/x"),
            ("SOCKWRAP_TRACE", "/tmp/t.jsonl"),
            ("SOCKWRAP_TRACE_IO", "1"),
            ("PATH", "/bin"),
        ]);
        assert!(e.errors.is_empty(), "{:?}", e.errors);
        assert!(e.unknown.is_empty(), "{:?}", e.unknown);
        assert_eq!(e.trace.as_deref(), Some("/tmp/t.jsonl"));
        assert!(e.trace_io);
        assert_eq!(e.flag_rules.len(), 2);
        let r = &e.flag_rules[0];
        assert_eq!(
            r.settings.get(Opt::Tos).map(|s| (s.value, s.soft)),
            Some((Value::Int(0xb8), true))
        );
        assert_eq!(
            r.settings.get(Opt::UserTimeout).map(|s| s.value),
            Some(Value::Int(5000))
        );
        assert_eq!(
            r.settings.get(Opt::KeepCnt).map(|s| s.value),
            Some(Value::Int(3))
        );
        assert_eq!(e.log_level, LogLevel::Info);
        assert_eq!(var_for(Opt::KeepIdle), "SOCKWRAP_KEEPALIVE_IDLE");
        assert_eq!(opt_for_var("KEEPALIVE_IDLE"), Some(Opt::KeepIdle));
        assert_eq!(opt_for_var("BIND_ADDRESS"), Some(Opt::BindAddress));
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = from_vars([
            ("SOCKWRAP_DSCP", "XX"),
            ("SOCKWRAP_DSPC", "EF"),
            ("SOCKWRAP_TO", "10.0.0.0/33x"),
        ]);
        assert_eq!(e.errors.len(), 2);
        assert!(e.errors[0]
            .to_string()
            .starts_with("SOCKWRAP_DSCP: error: dscp:"));
        assert_eq!(e.unknown, vec!["SOCKWRAP_DSPC".to_string()]);
    }

    #[test]
    fn targets() {
        assert!(parse_target(":5432").is_ok());
        assert!(parse_target("::1").is_ok());
        assert!(parse_target("[fd00::/8]:443").is_ok());
        assert!(parse_target("10.0.0.0/8:22").is_ok());
        assert!(parse_target("10.0.0.0/33x").is_err());
        assert!(parse_target("1.2.3.4:99999").is_err());
    }
}
