//! sockwrap's policy: what to do with a socket, decided without touching one.
//!
//! Config text (TOML file, `SOCKWRAP_*` variables, CLI flags) becomes a [`Policy`], compiled
//! once and immutable after that; the preload library asks it "which options for this
//! socket?" ([`Policy::decide`]) and the CLI uses it for `check` and `explain`. Nothing here
//! touches a socket or calls libc: it is testable as plain Rust.

// Denied everywhere but in `once` (lock-free fill-once storage), on the allow-list below;
// every unsafe block says why it is sound (`// SAFETY:`).
#![deny(unsafe_code, clippy::undocumented_unsafe_blocks)]
// core + alloc only: the library (libsockwrap.so) links this crate into every process it is
// preloaded into, and std's panic, backtrace and I/O machinery would come with it.
#![no_std]

extern crate alloc;
#[cfg(test)]
extern crate std;

/// What std's prelude would give; each module takes it with `use crate::prelude::*`.
#[allow(unused_imports)]
pub(crate) mod prelude {
    pub use alloc::borrow::ToOwned;
    pub use alloc::boxed::Box;
    pub use alloc::format;
    pub use alloc::string::{String, ToString};
    pub use alloc::vec;
    pub use alloc::vec::Vec;
}
use prelude::*;

pub mod catalog;
pub mod compiled;
pub mod config;
pub mod env;
pub mod names;
// The allow-list of `unsafe`: the one module the compiler cannot check.
#[allow(unsafe_code)]
mod once;
pub mod plan;
pub mod rng;
pub mod rules;

pub use catalog::{Opt, Value};
pub use config::{parse_config, Config, ConfigError};
pub use env::{EnvSettings, LogLevel};
pub use plan::{Plan, PlanOp, PlanRecord, Stage, Variant};
pub use rules::{Ctx, Decision, OnError, Policy, Role, Rule, Setting, Transport};

/// The whole policy as a process sees it, with everything that went wrong on the way.
#[derive(Debug, Default)]
pub struct Loaded {
    pub policy: Policy,
    pub env: EnvSettings,
    /// Errors in the environment or the policy file. When there is any, `policy` is empty:
    /// a half-understood policy is never applied.
    pub errors: Vec<ConfigError>,
}

/// Builds the policy from an environment. `read_file` reads the policy file (the library
/// passes one that does not allocate more than it must; tests pass a map).
pub fn load<'a>(
    vars: impl IntoIterator<Item = (&'a str, &'a str)>,
    read_file: impl FnOnce(&str) -> Result<String, String>,
) -> Loaded {
    let vars: Vec<(&str, &str)> = vars.into_iter().collect();
    let env = env::from_vars(vars.iter().copied());
    // The launcher's compiled form, when it was made from exactly these variables: no file
    // to read, no TOML to parse (see `compiled`).
    if env.errors.is_empty() {
        if let Some((_, blob)) = vars.iter().find(|(k, _)| *k == compiled::VAR) {
            if let Some((rules, on_error)) =
                compiled::decode(blob, compiled::fingerprint(vars.iter().copied()))
            {
                return Loaded {
                    policy: Policy::new(rules, on_error),
                    env,
                    errors: Vec::new(),
                };
            }
        }
    }
    let mut errors = env.errors.clone();
    let mut rules = Vec::new();
    let mut on_error = if env.strict {
        OnError::Fail
    } else {
        OnError::Warn
    };
    if let Some(path) = &env.config_path {
        match read_file(path) {
            Ok(text) => match parse_config(&text, path) {
                Ok(cfg) => {
                    if let Some(oe) = cfg.on_error {
                        if !env.strict {
                            on_error = oe;
                        }
                    }
                    rules = cfg.rules;
                }
                Err(mut e) => {
                    if config::declared_on_error(&text) == Some(OnError::Fail) {
                        on_error = OnError::Fail;
                    }
                    errors.append(&mut e)
                }
            },
            Err(e) => errors.push(ConfigError {
                source: path.clone(),
                pos: None,
                msg: e,
            }),
        }
    }
    // Exactly: a Vec of rules grows by four at first, ~1 KiB for the one rule of the flags.
    rules.reserve_exact(env.flag_rules.len());
    rules.extend(env.flag_rules.iter().cloned());
    let policy = if errors.is_empty() {
        Policy::new(rules, on_error)
    } else {
        // Nothing is applied, but the wish for strictness is kept for the launcher.
        Policy::new(Vec::new(), on_error)
    };
    Loaded {
        policy,
        env,
        errors,
    }
}

/// The policy of a process that has no policy variables, from the host-wide file
/// ([`compiled::HOST_FILE`], read by the caller). The variables still say where to log and
/// trace; the log level defaults to the one `sockwrap enable --system` wrote in the file.
/// `text` is `None` when the file could not be read whole.
pub fn load_host<'a>(
    vars: impl IntoIterator<Item = (&'a str, &'a str)>,
    text: Result<&str, compiled::HostError>,
) -> Loaded {
    let vars: Vec<(&str, &str)> = vars.into_iter().collect();
    let mut env = env::from_vars(vars.iter().copied());
    let log_set = vars.iter().any(|(k, _)| *k == "SOCKWRAP_LOG");
    if !log_set {
        env.log_level = LogLevel::Off;
    }
    let mut errors = core::mem::take(&mut env.errors);
    let mut policy = Policy::default();
    match text.and_then(compiled::decode_host) {
        Ok((rules, on_error, log)) => {
            if !log_set {
                env.log_level = log;
            }
            if errors.is_empty() {
                policy = Policy::new(rules, on_error);
            }
        }
        Err(e) => errors.push(ConfigError {
            source: compiled::HOST_FILE.into(),
            pos: None,
            msg: format!("{}: run `sockwrap enable --system` again", e.describe()),
        }),
    }
    Loaded {
        policy,
        env,
        errors,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file() {
        let l = load(
            [("SOCKWRAP_CONFIG", "p.toml"), ("SOCKWRAP_DSCP", "EF")],
            |_| Ok("on_error = \"fail\"\n[[rule]]\ndscp = \"CS1\"\nnodelay = true\n".into()),
        );
        assert!(l.errors.is_empty());
        let ctx = Ctx::client(Transport::Tcp, None, None);
        let d = l.policy.decide(&ctx);
        assert_eq!(d.get(Opt::Tos).map(|s| s.value), Some(Value::Int(0xb8)));
        assert_eq!(
            d.get(Opt::NoDelay).map(|s| s.value),
            Some(Value::Bool(true))
        );
        assert_eq!(l.policy.on_error, OnError::Fail);
    }

    #[test]
    fn the_compiled_form_is_used_only_for_the_variables_it_was_made_from() {
        let file = "[[rule]]\ndscp = \"CS1\"\n";
        let vars = [("SOCKWRAP_CONFIG", "p.toml"), ("SOCKWRAP_NODELAY", "1")];
        let full = load(vars, |_| Ok(file.into()));
        let blob = compiled::encode(
            full.policy.rules(),
            full.policy.on_error,
            compiled::fingerprint(vars),
        );
        let with = [vars[0], vars[1], (compiled::VAR, blob.as_str())];
        let l = load(with, |_| {
            panic!("the compiled form must spare reading the file")
        });
        assert!(l.errors.is_empty());
        assert_eq!(l.policy, full.policy);
        // A child that changed a variable: the form is stale, the file is read again.
        let changed = [
            vars[0],
            ("SOCKWRAP_NODELAY", "0"),
            (compiled::VAR, blob.as_str()),
        ];
        let mut read = false;
        let l = load(changed, |_| {
            read = true;
            Ok(file.into())
        });
        assert!(read);
        assert_eq!(
            l.policy
                .decide(&Ctx::client(Transport::Tcp, None, None))
                .get(Opt::NoDelay)
                .map(|s| s.value),
            Some(Value::Bool(false))
        );
    }

    #[test]
    fn the_host_policy_takes_the_log_settings_of_the_variables() {
        let cfg = parse_config("[[rule]]\ndscp = \"EF\"\n", "h.toml").expect("valid");
        let file = compiled::encode_host(&cfg.rules, OnError::Warn, LogLevel::Error);
        let l = load_host([], Ok(&file));
        assert!(l.errors.is_empty());
        assert_eq!(l.env.log_level, LogLevel::Error);
        assert_eq!(l.policy.rules(), &cfg.rules[..]);
        let l = load_host([("SOCKWRAP_LOG", "debug")], Ok(&file));
        assert_eq!(l.env.log_level, LogLevel::Debug);
        let l = load_host([], Ok(&file[..10]));
        assert_eq!(l.errors.len(), 1);
        assert!(l.policy.is_empty());
        assert_eq!(l.env.log_level, LogLevel::Off, "quiet by default on a host");
        assert!(env::is_policy_var("SOCKWRAP_DSCP"));
        assert!(env::is_policy_var("SOCKWRAP_POLICY"));
        assert!(!env::is_policy_var("SOCKWRAP_LOG"));
        assert!(!env::is_policy_var("SOCKWRAP_TRACE"));
        assert!(!env::is_policy_var("SOCKWRAP_LIB"));
    }

    #[test]
    fn a_broken_file_gives_an_empty_policy() {
        let l = load(
            [("SOCKWRAP_CONFIG", "p.toml"), ("SOCKWRAP_DSCP", "EF")],
            |_| Ok("[[rule]]\nbogus = 1\n".into()),
        );
        assert_eq!(l.errors.len(), 1);
        assert!(l.policy.is_empty());
        let l = load([("SOCKWRAP_CONFIG", "/nope.toml")], |p| {
            Err(format!("cannot read {p}: No such file"))
        });
        assert_eq!(
            l.errors[0].to_string(),
            "/nope.toml: error: cannot read /nope.toml: No such file"
        );
    }
}
