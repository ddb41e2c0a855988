//! `sockwrap enable --system`, `disable --system`, `status --system`: the policy for every
//! dynamically linked program of a host, through `/etc/ld.so.preload`.
//!
//! Every process of the host loads the library, so none of them may parse TOML: `enable`
//! compiles the policy once into `/etc/sockwrap/host.policy` (the host form of
//! [`sockwrap_policy::compiled`]), whose first line tells a process from its first read
//! whether any rule can be for it. What `enable` writes, in this order, so that the
//! library never finds a preload line without a policy:
//! 1. `/etc/sockwrap/host.toml`: a copy of `-c FILE` (edit it, then run `enable --system`
//!    again, with no `-c`, to recompile);
//! 2. `/etc/sockwrap/host.policy`: the compiled form, read back and checked;
//! 3. `/etc/sockwrap/host.state`: what `enable` did (the library line, the flags), so that
//!    `disable` undoes exactly that and a recompile keeps the flags;
//! 4. the library's line in `/etc/ld.so.preload`, through a temporary file and a rename.
//!
//! `disable` goes the other way round: first the line (and the file, if `enable` created
//! it and nothing else is in it), then the files in `/etc/sockwrap`.

use crate::error::{Error, Result};
use crate::files::{io_err, root_dir, write_atomic};
use crate::launch::{absolute, find_library, flag_vars, log_vars};
use clap::ArgMatches;
use sockwrap_policy::compiled::{self, HOST_FILE, HOST_SOURCE};
use sockwrap_policy::LogLevel;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const PRELOAD: &str = "/etc/ld.so.preload";
const STATE: &str = "/etc/sockwrap/host.state";
const STATE_HEAD: &str =
    "# sockwrap enable --system: what it did. Do not edit; `sockwrap disable --system` undoes it.";

struct Root(PathBuf);

impl Root {
    fn from(m: &ArgMatches) -> Result<Root> {
        root_dir(m).map(Root)
    }

    fn at(&self, path: &str) -> PathBuf {
        self.0.join(path.trim_start_matches('/'))
    }

    fn is_live(&self) -> bool {
        self.0 == Path::new("/")
    }
}

/// What `host.state` records.
#[derive(Default, Debug)]
struct State {
    library: String,
    created_preload: bool,
    log: Option<String>,
    vars: Vec<(String, String)>,
    source: Option<String>,
}

impl State {
    fn render(&self) -> String {
        let mut s = format!(
            "{STATE_HEAD}\nlibrary={}\ncreated-preload={}\n",
            self.library, self.created_preload as u8
        );
        if let Some(l) = &self.log {
            s.push_str(&format!("log={l}\n"));
        }
        if let Some(src) = &self.source {
            s.push_str(&format!("source={src}\n"));
        }
        for (k, v) in &self.vars {
            s.push_str(&format!("var={k}={v}\n"));
        }
        s
    }

    fn parse(text: &str) -> Option<State> {
        if !text.starts_with(STATE_HEAD) {
            return None;
        }
        let mut st = State::default();
        for line in text.lines().skip(1) {
            let (k, v) = line.split_once('=')?;
            match k {
                "library" => st.library = v.to_string(),
                "created-preload" => st.created_preload = v == "1",
                "log" => st.log = Some(v.to_string()),
                "source" => st.source = Some(v.to_string()),
                "var" => {
                    let (n, val) = v.split_once('=')?;
                    st.vars.push((n.to_string(), val.to_string()));
                }
                _ => return None,
            }
        }
        (!st.library.is_empty()).then_some(st)
    }
}

/// The entries of an ld.so.preload text (the loader splits on white space and colons).
fn entries(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| c.is_whitespace() || c == ':')
        .filter(|e| !e.is_empty())
}

/// `text` with every line that is exactly `lib` removed; `None` if there was none.
fn without_line(text: &str, lib: &str) -> Option<String> {
    let mut found = false;
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        if line.trim() == lib {
            found = true;
        } else {
            out.push_str(line);
        }
    }
    found.then_some(out)
}

/// Refuses a library that would endanger the host: missing, writable by others (a
/// preloaded library runs in every root process), or one that does not load cleanly.
fn check_library(root: &Root, lib: &Path) -> Result<()> {
    let shown = lib.display();
    let on_target = root.at(&lib.to_string_lossy());
    let meta = std::fs::metadata(&on_target).map_err(|e| {
        Error::setup(format_args!(
            "{}: {e}: the library must exist before /etc/ld.so.preload names it",
            on_target.display()
        ))
    })?;
    if meta.permissions().mode() & 0o022 != 0 {
        return Err(Error::setup(format_args!(
            "{shown}: writable by group or others (mode {:o}): every process of the host would \
             run code anyone can change; refused (chmod go-w, or install with make install / the .deb)",
            meta.permissions().mode() & 0o7777
        )));
    }
    if !root.is_live() {
        return Ok(());
    }
    let out = std::process::Command::new("/bin/true")
        .env_clear()
        .env("LD_PRELOAD", lib)
        .output()
        .map_err(|e| Error::setup(format_args!("/bin/true with {shown} preloaded: {e}")))?;
    if !out.status.success() || !out.stderr.is_empty() {
        return Err(Error::setup(format_args!(
            "{shown} does not load cleanly (/bin/true preloaded with it: {}, {:?}): not preloading it host-wide",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// The policy `vars` give, compiled for the host: the file's text, and the rule count.
/// `SOCKWRAP_CONFIG` in `vars` is [`HOST_SOURCE`] (the name the rules carry, as the copy's);
/// its text is read from `file`.
fn compile(vars: &[(String, String)], file: &Path, log: LogLevel) -> Result<(String, usize)> {
    let policy = crate::load::policy_or_refuse(
        load_from(vars, file),
        "enable --system: the policy has errors; nothing changed on the host",
    )?;
    let rules = policy.rules();
    if rules.is_empty() {
        return Err(Error::usage(
            "enable --system: the policy has no rules; nothing changed on the host",
        ));
    }
    Ok((
        compiled::encode_host(rules, policy.on_error, log),
        rules.len(),
    ))
}

pub fn enable(m: &ArgMatches) -> Result<ExitCode> {
    let root = Root::from(m)?;
    let dry = m.get_flag("dry-run");
    if m.get_one::<String>("log-file").is_some() {
        return Err(Error::usage(
            "--log-file: not with --system (every process of the host would append to it); \
             set SOCKWRAP_LOG_FILE for the one program you look at",
        ));
    }
    let log = match log_vars(m)?.into_iter().find(|(k, _)| k == "SOCKWRAP_LOG") {
        Some((_, l)) => LogLevel::parse(&l).unwrap_or(LogLevel::Off),
        None => LogLevel::Off,
    };
    let old = std::fs::read_to_string(root.at(STATE))
        .ok()
        .and_then(|t| State::parse(&t));

    // The policy: flags and -c FILE, or (neither given) a recompile of what is enabled.
    let mut vars = flag_vars(m)?;
    let source = m.get_one::<String>("config").map(|c| absolute(c));
    let recompile = vars.is_empty() && source.is_none();
    if recompile {
        let Some(old) = &old else {
            return Err(Error::usage(
                "enable --system: no policy given: -c FILE (and/or option flags such as --dscp EF)",
            ));
        };
        vars = old.vars.clone();
    } else if let Some(src) = &source {
        std::fs::metadata(src)
            .map_err(|e| Error::usage(format_args!("--config: {}: {e}", src.display())))?;
    }
    for v in vars.iter_mut() {
        if v.0 == "SOCKWRAP_CONFIG" {
            v.1 = HOST_SOURCE.to_string();
        }
    }
    let file = source.clone().unwrap_or_else(|| root.at(HOST_SOURCE));
    let log = if recompile && log_vars(m)?.is_empty() {
        old.as_ref()
            .and_then(|o| o.log.as_deref())
            .and_then(LogLevel::parse)
            .unwrap_or(log)
    } else {
        log
    };
    let (compiled_text, nrules) = compile(&vars, &file, log)?;
    let lib = find_library()?;
    let lib = std::fs::canonicalize(&lib).unwrap_or(lib);
    let lib_s = lib.display().to_string();
    if lib_s.contains(char::is_whitespace) || lib_s.contains(':') {
        return Err(Error::setup(format_args!(
            "{lib_s}: a path with white space or `:` cannot be named in /etc/ld.so.preload"
        )));
    }
    check_library(&root, &lib)?;
    if lib_s.contains("/target/") {
        eprintln!(
            "sockwrap: note: /etc/ld.so.preload will name {lib_s} in a build tree; `make install` \
             or the .deb give a path that stays (/usr/lib/sockwrap/libsockwrap.so)"
        );
    }

    let preload_path = root.at(PRELOAD);
    let preload = match std::fs::read_to_string(&preload_path) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_err(&preload_path, e)),
    };
    // A line of an earlier enable that named another library path goes; others' lines stay.
    let mut new_preload = preload.clone().unwrap_or_default();
    if let Some(o) = &old {
        if o.library != lib_s {
            if let Some(t) = without_line(&new_preload, &o.library) {
                new_preload = t;
            }
        }
    }
    let has_line = new_preload.lines().any(|l| l.trim() == lib_s);
    if !has_line {
        if !new_preload.is_empty() && !new_preload.ends_with('\n') {
            new_preload.push('\n');
        }
        new_preload.push_str(&lib_s);
        new_preload.push('\n');
    }
    for e in entries(&new_preload) {
        if e != lib_s && e.ends_with("/libsockwrap.so") {
            eprintln!(
                "sockwrap: warning: {PRELOAD} also names {e}: two copies of sockwrap in every process"
            );
        }
    }
    let state = State {
        library: lib_s.clone(),
        created_preload: old
            .as_ref()
            .map(|o| o.created_preload)
            .unwrap_or(preload.is_none()),
        log: Some(log.as_str().to_string()),
        vars: vars.clone(),
        source: source
            .as_ref()
            .map(|s| s.display().to_string())
            .or_else(|| old.as_ref().and_then(|o| o.source.clone())),
    };

    if dry {
        println!("# would write {}:", root.at(HOST_FILE).display());
        print!("{compiled_text}");
        println!();
        if let Some(src) = &source {
            println!(
                "# would copy {} to {}",
                src.display(),
                root.at(HOST_SOURCE).display()
            );
        }
        println!("# would write {}:", root.at(STATE).display());
        print!("{}", state.render());
        println!("# {} would read:", preload_path.display());
        print!("{new_preload}");
        return Ok(ExitCode::SUCCESS);
    }

    if let Some(src) = &source {
        let body = std::fs::read(src).map_err(|e| io_err(src, e))?;
        write_atomic(&root.at(HOST_SOURCE), &body, Some(0o644))?;
    }
    let host_file = root.at(HOST_FILE);
    write_atomic(&host_file, compiled_text.as_bytes(), Some(0o644))?;
    // Read back what every process will read.
    let back = std::fs::read_to_string(&host_file).map_err(|e| io_err(&host_file, e))?;
    compiled::decode_host(&back).map_err(|e| {
        Error::setup(format_args!(
            "{}: {} right after writing it",
            host_file.display(),
            e.describe()
        ))
    })?;
    write_atomic(&root.at(STATE), state.render().as_bytes(), Some(0o644))?;
    if Some(&new_preload) != preload.as_ref() {
        write_atomic(&preload_path, new_preload.as_bytes(), Some(0o644))?;
        println!("{}: added {lib_s}", preload_path.display());
    } else {
        println!("{}: already names {lib_s}", preload_path.display());
    }
    println!(
        "{}: {nrules} rule(s){}, log level {} (programs started from now on get it)",
        host_file.display(),
        if recompile { ", recompiled" } else { "" },
        log.as_str()
    );
    if let Some(src) = &source {
        println!(
            "copied {} to {}: edit that copy, then run `sockwrap enable --system` to recompile",
            src.display(),
            root.at(HOST_SOURCE).display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn disable(m: &ArgMatches) -> Result<ExitCode> {
    let root = Root::from(m)?;
    let state_path = root.at(STATE);
    let state = match std::fs::read_to_string(&state_path) {
        Ok(t) => Some(State::parse(&t).ok_or_else(|| {
            Error::setup(format_args!(
                "{}: not as `sockwrap enable --system` writes it; nothing changed",
                state_path.display()
            ))
        })?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_err(&state_path, e)),
    };
    let Some(state) = state else {
        println!("host-wide: not enabled (no {})", state_path.display());
        return Ok(ExitCode::SUCCESS);
    };
    // First the line, so that no process starts with the library and no policy.
    let preload_path = root.at(PRELOAD);
    match std::fs::read_to_string(&preload_path) {
        Ok(text) => match without_line(&text, &state.library) {
            Some(rest) if state.created_preload && rest.trim().is_empty() => {
                std::fs::remove_file(&preload_path).map_err(|e| io_err(&preload_path, e))?;
                println!(
                    "{}: removed (enable had created it; nothing else was in it)",
                    preload_path.display()
                );
            }
            Some(rest) => {
                write_atomic(&preload_path, rest.as_bytes(), Some(0o644))?;
                println!("{}: removed {}", preload_path.display(), state.library);
            }
            None => println!(
                "{}: does not name {} (any more); left as it is",
                preload_path.display(),
                state.library
            ),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(&preload_path, e)),
    }
    for f in [HOST_FILE, HOST_SOURCE, STATE] {
        let p = root.at(f);
        match std::fs::remove_file(&p) {
            Ok(()) => println!("removed {}", p.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&p, e)),
        }
    }
    let _ = std::fs::remove_dir(root.at("/etc/sockwrap"));
    println!(
        "programs started from now on run without sockwrap; running ones keep it until they exit"
    );
    Ok(ExitCode::SUCCESS)
}

/// What is in force host-wide, each problem with what to do. Shared with `doctor`.
pub fn report(root_dir: &Path) -> bool {
    let root = Root(root_dir.to_path_buf());
    let mut ok = true;
    let state = std::fs::read_to_string(root.at(STATE))
        .ok()
        .and_then(|t| State::parse(&t));
    let preload = std::fs::read_to_string(root.at(PRELOAD)).unwrap_or_default();
    let Some(state) = state else {
        if entries(&preload).any(|e| e.ends_with("/libsockwrap.so")) {
            ok = false;
            println!(
                "host-wide: {PRELOAD} names libsockwrap.so but {STATE} is missing: this was not set \
                 up by `sockwrap enable --system`; remove the line by hand, or enable again"
            );
        } else {
            println!("host-wide: not enabled (`sockwrap enable --system -c FILE` enables it)");
        }
        return ok;
    };
    if preload.lines().any(|l| l.trim() == state.library) {
        println!("host-wide: {PRELOAD} preloads {}", state.library);
    } else {
        ok = false;
        println!(
            "host-wide: {PRELOAD} no longer names {}: run `sockwrap enable --system` again, or `sockwrap disable --system`",
            state.library
        );
    }
    if !root.at(&state.library).is_file() {
        ok = false;
        println!(
            "host-wide: the library {} is MISSING: every program started prints a loader error; \
             reinstall sockwrap, or `sockwrap disable --system`",
            state.library
        );
    }
    let host_file = root.at(HOST_FILE);
    match std::fs::read_to_string(&host_file) {
        Ok(text) => match compiled::decode_host(&text) {
            Ok((rules, _, log)) => {
                let head = compiled::host_head(text.as_bytes()).ok();
                println!(
                    "host-wide: {} holds {} rule(s), log level {}{}",
                    host_file.display(),
                    rules.len(),
                    log.as_str(),
                    match head {
                        Some(h) if !h.all => {
                            let mut names: Vec<&str> = rules
                                .iter()
                                .flat_map(|r| r.matcher.program.iter().map(String::as_str))
                                .collect();
                            names.sort_unstable();
                            names.dedup();
                            format!("; only for the programs {}", names.join(", "))
                        }
                        _ => "; for every program".into(),
                    }
                );
                // The copy edited since it was compiled?
                if state.vars.iter().any(|(k, _)| k == "SOCKWRAP_CONFIG") {
                    let log = LogLevel::parse(state.log.as_deref().unwrap_or("off"))
                        .unwrap_or(LogLevel::Off);
                    let src = root.at(HOST_SOURCE);
                    match compile_quiet(&state.vars, &src, log) {
                        Some(fresh) if fresh == text => {
                            println!("host-wide: compiled from {} (up to date)", src.display())
                        }
                        Some(_) => {
                            ok = false;
                            println!(
                                "host-wide: {} has changed since it was compiled: run `sockwrap enable --system` to recompile",
                                src.display()
                            );
                        }
                        None => {
                            ok = false;
                            println!(
                                "host-wide: {} is missing or has errors (`sockwrap check {}`); the compiled policy stays in force",
                                src.display(),
                                src.display()
                            );
                        }
                    }
                }
            }
            Err(e) => {
                ok = false;
                println!(
                    "host-wide: {} is {}: no program gets the policy; run `sockwrap enable --system` again",
                    host_file.display(),
                    e.describe()
                );
            }
        },
        Err(e) => {
            ok = false;
            println!(
                "host-wide: {} cannot be read ({e}): no program gets the policy; run `sockwrap enable --system` again",
                host_file.display()
            );
        }
    }
    ok
}

/// The policy `vars` give, the policy file's text read from `file` (see [`compile`]).
fn load_from(vars: &[(String, String)], file: &Path) -> sockwrap_policy::Loaded {
    sockwrap_policy::load(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())), |_| {
        std::fs::read_to_string(file)
            .map_err(|e| format!("{}: cannot read the policy file: {e}", file.display()))
    })
}

fn compile_quiet(vars: &[(String, String)], file: &Path, log: LogLevel) -> Option<String> {
    let loaded = load_from(vars, file);
    (loaded.errors.is_empty() && !loaded.policy.rules().is_empty())
        .then(|| compiled::encode_host(loaded.policy.rules(), loaded.policy.on_error, log))
}

pub fn status(m: &ArgMatches) -> Result<ExitCode> {
    let root = Root::from(m)?;
    if report(&root.0) {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(Error::Findings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_line_goes() {
        let t = "/lib/other.so\n/usr/lib/sockwrap/libsockwrap.so\n/opt/x/libsockwrap.so\n";
        assert_eq!(
            without_line(t, "/usr/lib/sockwrap/libsockwrap.so").as_deref(),
            Some("/lib/other.so\n/opt/x/libsockwrap.so\n")
        );
        assert_eq!(without_line(t, "/nope.so"), None);
        assert_eq!(
            without_line("/a.so", "/a.so").as_deref(),
            Some(""),
            "no trailing newline"
        );
    }

    #[test]
    fn state_round_trip() {
        let s = State {
            library: "/usr/lib/sockwrap/libsockwrap.so".into(),
            created_preload: true,
            log: Some("off".into()),
            vars: vec![
                ("SOCKWRAP_DSCP".into(), "EF".into()),
                ("SOCKWRAP_CONFIG".into(), HOST_SOURCE.into()),
            ],
            source: Some("/root/p.toml".into()),
        };
        let back = State::parse(&s.render()).expect("parses");
        assert_eq!(back.render(), s.render());
        assert!(State::parse("library=/x\n").is_none());
    }
}
