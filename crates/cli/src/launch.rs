//! What a program started under sockwrap gets: the library in `LD_PRELOAD` (kept ahead of
//! any entries already there), the `SOCKWRAP_*` variables from the flags, and the compiled
//! policy. Used by `run` and `trace` (which start the program) and by `enable` (which writes
//! the same variables into a systemd drop-in).

use crate::cli::flag_name;
use crate::elf;
use crate::error::{Error, Result};
use clap::ArgMatches;
use sockwrap_policy::catalog::{self, Opt, Raw};
use sockwrap_policy::env::{self, parse_target, var_for};
use sockwrap_policy::rules;
use sockwrap_policy::{compiled, LogLevel};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Turns the policy and option flags into `SOCKWRAP_*` variables, validating each value.
pub fn flag_vars(m: &ArgMatches) -> Result<Vec<(String, String)>> {
    let mut vars = Vec::new();
    for o in Opt::ALL {
        let name = flag_name(o);
        if let Some(v) = m.get_one::<String>(&name) {
            let check = if o == Opt::KeepAlive {
                catalog::parse_keepalive(v).map(|_| ())
            } else {
                catalog::parse_value(o, o.name(), Raw::Str(v)).map(|_| ())
            };
            if let Err(e) = check {
                let e = e.strip_prefix(&format!("{}: ", o.name())).unwrap_or(&e);
                return Err(Error::usage(format_args!("--{name}: {e}")));
            }
            vars.push((var_for(o), v.clone()));
        }
    }
    if let Some(v) = m.get_one::<String>("tos") {
        if let Err(e) = catalog::parse_value(Opt::Tos, "tos", Raw::Str(v)) {
            return Err(Error::usage(format_args!("--tos: {e}")));
        }
        vars.push(("SOCKWRAP_TOS".into(), v.clone()));
    }
    if let Some(v) = m.get_one::<String>("hop-limit") {
        if let Err(e) = catalog::parse_value(Opt::Ttl, "ttl", Raw::Str(v)) {
            return Err(Error::usage(format_args!("--hop-limit: {e}")));
        }
        vars.push((var_for(Opt::Ttl), v.clone()));
    }
    let targets: Vec<String> = m
        .get_many::<String>("to")
        .map(|v| v.cloned().collect())
        .unwrap_or_default();
    for t in &targets {
        if let Err(e) = parse_target(t) {
            return Err(Error::usage(format_args!("--to: {e}")));
        }
    }
    if !targets.is_empty() {
        vars.push(("SOCKWRAP_TO".into(), targets.join(" ")));
    }
    // Connection actions (not on `attach`, `doctor`: they have no connect to act on).
    type Check = fn(&str) -> std::result::Result<(), String>;
    let actions: [(&str, &str, Check); 5] = [
        ("deny", "SOCKWRAP_DENY", |v| rules::parse_errno(v).map(drop)),
        ("redirect", "SOCKWRAP_REDIRECT", |v| {
            rules::parse_redirect(v).map(drop)
        }),
        ("delay", "SOCKWRAP_DELAY", |v| {
            rules::parse_delay(v).map(drop)
        }),
        ("fail", "SOCKWRAP_FAIL", |v| env::parse_fail(v).map(drop)),
        ("seed", "SOCKWRAP_SEED", |v| env::parse_seed(v).map(drop)),
    ];
    for (id, var, check) in actions {
        if let Some(v) = m.try_get_one::<String>(id).ok().flatten() {
            check(v).map_err(|e| Error::usage(format_args!("--{id}: {e}")))?;
            vars.push((var.into(), v.clone()));
        }
    }
    // `attach` has no --soft or --strict (nothing it sets is locked, no call can fail).
    if let Some(s) = m.try_get_one::<String>("soft").ok().flatten() {
        if s != "1" {
            for n in s.split(',') {
                if Opt::from_name(n.trim()).is_none() {
                    return Err(Error::usage(format_args!("--soft: unknown option `{n}`")));
                }
            }
        }
        vars.push(("SOCKWRAP_SOFT".into(), s.clone()));
    }
    if m.try_get_one::<bool>("strict").ok().flatten() == Some(&true) {
        vars.push(("SOCKWRAP_STRICT".into(), "1".into()));
    }
    if let Some(c) = m.get_one::<String>("config") {
        vars.push(("SOCKWRAP_CONFIG".into(), absolute(c).display().to_string()));
    }
    Ok(vars)
}

/// `--log` and `--log-file` as variables.
pub fn log_vars(m: &ArgMatches) -> Result<Vec<(String, String)>> {
    let mut vars = Vec::new();
    if let Some(l) = m.get_one::<String>("log") {
        if LogLevel::parse(l).is_none() {
            return Err(Error::usage(format_args!(
                "--log: `{l}` is not a log level: expected off, error, warn, info or debug"
            )));
        }
        vars.push(("SOCKWRAP_LOG".into(), l.clone()));
    }
    if let Some(f) = m.get_one::<String>("log-file") {
        vars.push((
            "SOCKWRAP_LOG_FILE".into(),
            absolute(f).display().to_string(),
        ));
    }
    Ok(vars)
}

pub fn absolute(p: &str) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| PathBuf::from(p))
}

/// Where `sockwrap` looks for libsockwrap.so, in order, relative to its own executable
/// (symlinks resolved): the build tree (`target/release/`), then the installed layouts
/// (`make install`, the .deb: `PREFIX/bin/sockwrap` and `PREFIX/lib/sockwrap/`).
/// `SOCKWRAP_LIB`, when set, comes before all of them.
pub const LIBRARY_PLACES: [&str; 3] = [
    "libsockwrap.so",
    "../lib/sockwrap/libsockwrap.so",
    "../lib/libsockwrap.so",
];

/// Finds libsockwrap.so: `SOCKWRAP_LIB`, then [`LIBRARY_PLACES`] next to this binary.
pub fn find_library() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("SOCKWRAP_LIB") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(std::path::absolute(&p).unwrap_or(p));
        }
        return Err(Error::setup(format_args!(
            "SOCKWRAP_LIB: {} is not a file",
            p.display()
        )));
    }
    let exe = std::env::current_exe()
        .map_err(|e| Error::setup(format_args!("cannot find my own path: {e}")))?;
    let dir = exe.parent().unwrap_or(Path::new("/"));
    for place in LIBRARY_PLACES {
        let c = dir.join(place);
        if c.is_file() {
            // Canonical, so that the path written into LD_PRELOAD or a drop-in is the
            // unversioned file itself, without `..`.
            return Ok(c.canonicalize().unwrap_or(c));
        }
    }
    Err(Error::setup(format_args!(
        "libsockwrap.so not found next to {} nor in ../lib/sockwrap/; set SOCKWRAP_LIB",
        exe.display()
    )))
}

/// `LD_PRELOAD` with our library first and every existing entry kept (once).
pub fn compose_preload(lib: &Path, existing: Option<&str>) -> String {
    match existing {
        Some(e) if e.split([':', ' ']).any(|x| Path::new(x) == lib) => e.to_string(),
        Some(e) if !e.trim().is_empty() => format!("{}:{}", lib.display(), e),
        _ => lib.display().to_string(),
    }
}

/// Refuses a program the glibc-built library cannot load into: a musl program's loader
/// cannot relocate libsockwrap.so and the program would not start at all (exit 127), which
/// is worse than no policy. Only the program named is checked (not what it runs).
fn refuse_musl(prog: &std::ffi::OsStr) -> Result<()> {
    let Some(path) = elf::resolve_program(prog) else {
        return Ok(()); // exec reports a missing program itself
    };
    let Ok(head) = elf::head(&path) else {
        return Ok(());
    };
    match elf::interpreter(&head) {
        Some(i) if i.contains("musl") => Err(Error::setup(format_args!(
            "{}: a musl program (loader {i}); libsockwrap.so is built for glibc and would stop \
             it from starting, so it is not run. `sockwrap run --kernel` reaches it (cgroup \
             BPF, as root); `sockwrap doctor {}` says more",
            path.display(),
            path.display()
        ))),
        _ => Ok(()),
    }
}

/// The whole policy as the flags, `-c FILE` and the inherited `SOCKWRAP_*` variables give
/// it, for the backends that do not hand the program variables (`run --kernel`).
pub fn load_policy(m: &ArgMatches) -> Result<sockwrap_policy::Loaded> {
    let vars = flag_vars(m)?;
    crate::load::config_exists(m)?;
    Ok(crate::load::load_vars(&crate::load::with_inherited(
        &vars,
        &[compiled::VAR],
    )))
}

/// A seed for `fail` choices: from the kernel's random source, else the clock.
fn random_seed() -> u64 {
    use std::io::Read;
    let mut b = [0u8; 8];
    match std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)) {
        Ok(()) => u64::from_ne_bytes(b),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    }
}

/// The command after `--` (at least the program), or a usage error naming `synopsis`.
pub fn command(m: &ArgMatches, synopsis: &str) -> Result<Vec<OsString>> {
    let argv: Vec<OsString> = m
        .get_many::<String>("command")
        .map(|v| v.map(OsString::from).collect())
        .unwrap_or_default();
    if argv.is_empty() {
        return Err(Error::usage(format_args!(
            "run: no command given ({synopsis})"
        )));
    }
    Ok(argv)
}

/// The program's command with the library and the `SOCKWRAP_*` variables set; `extra`
/// variables (the trace) are set even when the policy has errors.
pub fn prepare(
    m: &ArgMatches,
    extra: Vec<(String, String)>,
) -> Result<(std::process::Command, OsString)> {
    let tracing = !extra.is_empty();
    let mut vars = flag_vars(m)?;
    vars.extend(log_vars(m)?);
    let argv = command(m, "sockwrap run [OPTIONS] -- COMMAND...")?;
    let (prog, rest) = (&argv[0], &argv[1..]);

    // Validate the whole policy as the library will see it: inherited SOCKWRAP_* variables,
    // then our flags on top.
    crate::load::config_exists(m)?;
    let mut seen = crate::load::with_inherited(&vars, &[]);
    let loaded = crate::load::load_vars(&seen);
    let refuse = || {
        Error::usage(
            "refusing to start the program: the policy has errors (--strict or on_error = \"fail\")",
        )
    };
    let mut cmd = std::process::Command::new(prog);
    cmd.args(rest);
    if !loaded.errors.is_empty() {
        crate::load::print_errors(&loaded);
        if loaded.policy.on_error == sockwrap_policy::OnError::Fail {
            return Err(refuse());
        }
        if !tracing {
            eprintln!("sockwrap: the policy has errors; running the program untouched");
            return Ok((cmd, prog.clone()));
        }
        eprintln!("sockwrap: the policy has errors; tracing the program without applying it");
    }
    // `fail` rules without a seed: one seed for the whole run (every process of it), said
    // once, so that the run can be repeated.
    if loaded.errors.is_empty()
        && loaded.env.seed.is_none()
        && loaded
            .policy
            .rules()
            .iter()
            .any(|r| r.actions.fail.is_some())
    {
        let seed = random_seed();
        eprintln!("sockwrap: fail rules choose with seed {seed} (--seed {seed} repeats this run)");
        vars.push(("SOCKWRAP_SEED".into(), seed.to_string()));
        seen.push(("SOCKWRAP_SEED".into(), seed.to_string()));
    }
    refuse_musl(prog)?;
    if let Some(u) = crate::reach::unreachable(prog) {
        if !crate::reach::quiet(m) {
            eprintln!("sockwrap: {}", u.line());
        }
    }
    let lib = find_library()?;
    let existing = std::env::var("LD_PRELOAD").ok();
    cmd.env("LD_PRELOAD", compose_preload(&lib, existing.as_deref()));
    // Go programs make raw system calls and never reach the library; Go 1.21+ makes
    // its TCP sockets MPTCP itself when asked through GODEBUG (as mptcpize does).
    if vars.iter().any(|(k, v)| {
        k == "SOCKWRAP_MPTCP"
            && catalog::parse_value(Opt::Mptcp, "mptcp", Raw::Str(v))
                == Ok(sockwrap_policy::Value::Bool(true))
    }) {
        let godebug = match std::env::var("GODEBUG") {
            Ok(g) if g.contains("multipathtcp=") => g,
            Ok(g) if !g.is_empty() => format!("{g},multipathtcp=1"),
            _ => "multipathtcp=1".to_string(),
        };
        cmd.env("GODEBUG", godebug);
    }
    for (k, v) in vars.iter().chain(extra.iter()) {
        cmd.env(k, v);
    }
    // The compiled policy, so that no process under us parses the TOML again. Its
    // fingerprint covers the SOCKWRAP_* variables the program will see.
    let mut child: Vec<(&str, &str)> = seen
        .iter()
        .filter(|(k, _)| !extra.iter().any(|(e, _)| e == k))
        .chain(extra.iter())
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    child.retain(|(k, _)| *k != compiled::VAR);
    let blob = compiled::encode(
        loaded.policy.rules(),
        loaded.policy.on_error,
        compiled::fingerprint(child.iter().copied()),
    );
    if loaded.errors.is_empty() && !loaded.policy.is_empty() && blob.len() <= compiled::MAX_LEN {
        cmd.env(compiled::VAR, blob);
    } else {
        cmd.env_remove(compiled::VAR);
    }
    Ok((cmd, prog.clone()))
}

#[cfg(test)]
mod tests {
    use super::compose_preload;
    use std::path::Path;

    #[test]
    fn preload_keeps_existing_entries_once() {
        let lib = Path::new("/usr/lib/sockwrap/libsockwrap.so");
        assert_eq!(
            compose_preload(lib, None),
            "/usr/lib/sockwrap/libsockwrap.so"
        );
        assert_eq!(
            compose_preload(lib, Some(" ")),
            "/usr/lib/sockwrap/libsockwrap.so"
        );
        assert_eq!(
            compose_preload(lib, Some("/opt/libother.so")),
            "/usr/lib/sockwrap/libsockwrap.so:/opt/libother.so"
        );
        assert_eq!(
            compose_preload(lib, Some("/opt/a.so /usr/lib/sockwrap/libsockwrap.so")),
            "/opt/a.so /usr/lib/sockwrap/libsockwrap.so"
        );
    }
}
