//! The `sockwrap` command: flag definitions (generated from the option catalog, so `--help`,
//! the policy file and the environment always agree), and the subcommands.
//!
//! Every user-facing error goes through [`fail`], which prints one line
//! `sockwrap: WHAT: WHY` and exits with status 2.

use clap::{Arg, ArgAction, ArgMatches, Command};
use sockwrap_policy::catalog::{self, Kind, Opt, Raw, Shown};
use sockwrap_policy::env::{parse_target, var_for};
use sockwrap_policy::rules::ip_key;
use sockwrap_policy::{compiled, parse_config, Ctx, LogLevel, Role, Transport};
use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

/// Prints `sockwrap: msg` and exits 2 (bad input).
pub fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("sockwrap: {msg}");
    std::process::exit(2)
}

/// The CLI flag for an option: `keepalive.idle` becomes `--keepalive-idle`.
fn flag_name(o: Opt) -> String {
    o.name().replace('.', "-")
}

fn option_args() -> Vec<Arg> {
    let mut args = Vec::new();
    for o in Opt::ALL {
        let spec = o.spec();
        let name = flag_name(o);
        let mut a = Arg::new(name.clone())
            .long(name)
            .help(format!("{} [{}]", spec.help, spec.kernel));
        a = match (o, spec.kind) {
            (Opt::KeepAlive, _) => a
                .num_args(0..=1)
                .default_missing_value("on")
                .value_name("IDLE,INTVL,CNT"),
            (_, Kind::Bool) => a
                .num_args(0..=1)
                .default_missing_value("on")
                .value_name("on|off"),
            (_, Kind::Dscp) => a.value_name("CLASS"),
            (_, Kind::Name) => a.value_name("NAME"),
            (_, Kind::Addrs) => a.value_name("IP[,IP6]"),
            (_, Kind::Linger) => a.value_name("SECS|off"),
            _ => a.value_name("N").allow_negative_numbers(true),
        };
        args.push(a.help_heading("Socket options"));
    }
    args.push(
        Arg::new("tos")
            .long("tos")
            .value_name("BYTE")
            .help(
                "the whole ToS/traffic class byte 0..255 (instead of --dscp) [IP_TOS, IPV6_TCLASS]",
            )
            .conflicts_with("dscp")
            .help_heading("Socket options"),
    );
    args.push(
        Arg::new("hop-limit")
            .long("hop-limit")
            .value_name("N")
            .help("same as --ttl")
            .conflicts_with("ttl")
            .help_heading("Socket options"),
    );
    args
}

fn policy_args() -> Vec<Arg> {
    vec![
        Arg::new("config").short('c').long("config").value_name("FILE").help("policy file (TOML); see `sockwrap help-config`"),
        Arg::new("to")
            .long("to")
            .value_name("CIDR[:PORT]")
            .action(ArgAction::Append)
            .help("apply the flag options only to these destinations (10.0.0.0/8, 127.0.0.1:8080, [::1]:443, :5432)"),
        Arg::new("soft")
            .long("soft")
            .num_args(0..=1)
            .default_missing_value("1")
            .value_name("OPT,...")
            .help("flag options are defaults the program may change (all, or the listed ones)"),
        Arg::new("strict")
            .long("strict")
            .action(ArgAction::SetTrue)
            .help("a refused option fails the program's call; a broken policy refuses to start"),
    ]
}

pub fn command() -> Command {
    Command::new("sockwrap")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Run unmodified programs with the socket options you choose (DSCP, keepalive, nodelay, mark, ...)")
        .subcommand_required(true)
        .arg_required_else_help(true)
        .subcommand(
            Command::new("run")
                .about("Run a program with the policy applied to its sockets")
                .args(policy_args())
                .args(option_args())
                .arg(Arg::new("log").long("log").value_name("LEVEL").help("off, error, warn (default), info, debug"))
                .arg(Arg::new("log-file").long("log-file").value_name("PATH").help("write sockwrap's log here instead of stderr"))
                .arg(Arg::new("trace").long("trace").value_name("FILE").help("append a JSON-lines trace of every socket call to FILE (docs/trace-schema.md)"))
                .arg(Arg::new("command").num_args(1..).required(true).trailing_var_arg(true).value_name("COMMAND").last(true)),
        )
        .subcommand(
            Command::new("trace")
                .about("Run a program, record every socket call it makes, and print one row per connection")
                .args(policy_args())
                .args(option_args())
                .arg(Arg::new("log").long("log").value_name("LEVEL").help("off, error, warn (default), info, debug"))
                .arg(Arg::new("log-file").long("log-file").value_name("PATH").help("write sockwrap's log here instead of stderr"))
                .arg(Arg::new("output").short('o').long("output").value_name("FILE").help("keep the full record (JSON lines) in FILE (replaced); default: a temporary file, removed"))
                .arg(Arg::new("json").long("json").action(ArgAction::SetTrue).help("print the summary as JSON"))
                .arg(Arg::new("command").num_args(1..).required(true).trailing_var_arg(true).value_name("COMMAND").last(true)),
        )
        .subcommand(
            Command::new("report")
                .about("Summarise a trace file (from `sockwrap trace -o` or `run --trace`): one row per connection")
                .arg(Arg::new("file").required(true).value_name("FILE"))
                .arg(Arg::new("json").long("json").action(ArgAction::SetTrue).help("print the summary as JSON")),
        )
        .subcommand(
            Command::new("check")
                .about("Validate policy files; print each error with line and column")
                .arg(Arg::new("files").num_args(1..).required(true).value_name("FILE")),
        )
        .subcommand(
            Command::new("explain")
                .about("Show which options a destination would get, and from which rule")
                .args(policy_args())
                .args(option_args())
                .arg(Arg::new("dest").long("dest").value_name("IP:PORT").required(true).help("remote address and port"))
                .arg(Arg::new("transport").long("transport").value_name("tcp|udp").default_value("tcp"))
                .arg(Arg::new("role").long("role").value_name("client|server").default_value("client"))
                .arg(Arg::new("program").long("program").value_name("NAME").help("program name to match rules against")),
        )
        .subcommand(
            Command::new("doctor")
                .about("Can sockwrap reach PROGRAM (static? Go? setuid?), and is MPTCP usable here?")
                .arg(Arg::new("program").value_name("PROGRAM")),
        )
        .subcommand(Command::new("options").about("List every option with its kernel option and accepted values"))
        .subcommand(Command::new("help-config").about("Print a commented example policy file"))
}

/// Turns flags into `SOCKWRAP_*` variables, validating each value (bad ones exit here).
fn flag_vars(m: &ArgMatches) -> Vec<(String, String)> {
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
                fail(format_args!("--{name}: {e}"));
            }
            vars.push((var_for(o), v.clone()));
        }
    }
    if let Some(v) = m.get_one::<String>("tos") {
        if let Err(e) = catalog::parse_value(Opt::Tos, "tos", Raw::Str(v)) {
            fail(format_args!("--tos: {e}"));
        }
        vars.push(("SOCKWRAP_TOS".into(), v.clone()));
    }
    if let Some(v) = m.get_one::<String>("hop-limit") {
        if let Err(e) = catalog::parse_value(Opt::Ttl, "ttl", Raw::Str(v)) {
            fail(format_args!("--hop-limit: {e}"));
        }
        vars.push((var_for(Opt::Ttl), v.clone()));
    }
    let targets: Vec<String> = m
        .get_many::<String>("to")
        .map(|v| v.cloned().collect())
        .unwrap_or_default();
    for t in &targets {
        if let Err(e) = parse_target(t) {
            fail(format_args!("--to: {e}"));
        }
    }
    if !targets.is_empty() {
        vars.push(("SOCKWRAP_TO".into(), targets.join(" ")));
    }
    if let Some(s) = m.get_one::<String>("soft") {
        if s != "1" {
            for n in s.split(',') {
                if Opt::from_name(n.trim()).is_none() {
                    fail(format_args!("--soft: unknown option `{n}`"));
                }
            }
        }
        vars.push(("SOCKWRAP_SOFT".into(), s.clone()));
    }
    if m.get_flag("strict") {
        vars.push(("SOCKWRAP_STRICT".into(), "1".into()));
    }
    if let Some(c) = m.get_one::<String>("config") {
        let abs = std::path::absolute(c).unwrap_or_else(|_| PathBuf::from(c));
        vars.push(("SOCKWRAP_CONFIG".into(), abs.display().to_string()));
    }
    vars
}

/// Finds libsockwrap.so: `SOCKWRAP_LIB`, next to this binary, or in `../lib/sockwrap/`.
fn find_library() -> PathBuf {
    if let Some(p) = std::env::var_os("SOCKWRAP_LIB") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return std::path::absolute(&p).unwrap_or(p);
        }
        fail(format_args!("SOCKWRAP_LIB: {} is not a file", p.display()));
    }
    let exe = std::env::current_exe()
        .unwrap_or_else(|e| fail(format_args!("cannot find my own path: {e}")));
    let dir = exe.parent().unwrap_or(Path::new("/"));
    let candidates = [
        dir.join("libsockwrap.so"),
        dir.join("../lib/sockwrap/libsockwrap.so"),
        dir.join("../lib/libsockwrap.so"),
    ];
    for c in &candidates {
        if c.is_file() {
            return c.canonicalize().unwrap_or_else(|_| c.clone());
        }
    }
    fail(format_args!(
        "libsockwrap.so not found next to {} nor in ../lib/sockwrap/; set SOCKWRAP_LIB",
        exe.display()
    ))
}

fn read_policy_file(path: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read the policy file: {e}"))
}

pub fn run(m: &ArgMatches) -> ! {
    let mut extra = Vec::new();
    if let Some(f) = m.get_one::<String>("trace") {
        let abs = std::path::absolute(f).unwrap_or_else(|_| PathBuf::from(f));
        extra.push(("SOCKWRAP_TRACE".to_string(), abs.display().to_string()));
    }
    let (mut cmd, prog) = prepare(m, extra);
    let err = cmd.exec();
    eprintln!("sockwrap: cannot run `{}`: {err}", prog.to_string_lossy());
    std::process::exit(if err.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    })
}

/// The program's command with the library and the `SOCKWRAP_*` variables set; `extra`
/// variables (the trace) are set even when the policy has errors.
pub(crate) fn prepare(
    m: &ArgMatches,
    extra: Vec<(String, String)>,
) -> (std::process::Command, OsString) {
    let tracing = !extra.is_empty();
    let mut vars = flag_vars(m);
    if let Some(l) = m.get_one::<String>("log") {
        if LogLevel::parse(l).is_none() {
            fail(format_args!(
                "--log: `{l}` is not a log level: expected off, error, warn, info or debug"
            ));
        }
        vars.push(("SOCKWRAP_LOG".into(), l.clone()));
    }
    if let Some(f) = m.get_one::<String>("log-file") {
        let abs = std::path::absolute(f).unwrap_or_else(|_| PathBuf::from(f));
        vars.push(("SOCKWRAP_LOG_FILE".into(), abs.display().to_string()));
    }
    let argv: Vec<OsString> = m
        .get_many::<String>("command")
        .map(|v| v.map(OsString::from).collect())
        .unwrap_or_default();
    let Some((prog, rest)) = argv.split_first() else {
        fail("run: no command given (sockwrap run [OPTIONS] -- COMMAND...)")
    };

    // Validate the whole policy as the library will see it: inherited SOCKWRAP_* variables,
    // then our flags on top.
    if let Some(c) = m.get_one::<String>("config") {
        if let Err(e) = std::fs::metadata(c) {
            fail(format_args!("--config: {c}: {e}"));
        }
    }
    let mut seen: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("SOCKWRAP_"))
        .collect();
    seen.retain(|(k, _)| !vars.iter().any(|(f, _)| f == k));
    seen.extend(vars.iter().cloned());
    let loaded = sockwrap_policy::load(
        seen.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        read_policy_file,
    );
    let mut cmd = std::process::Command::new(prog);
    cmd.args(rest);
    if !loaded.errors.is_empty() && !tracing {
        for e in &loaded.errors {
            eprintln!("sockwrap: {e}");
        }
        if loaded.policy.on_error == sockwrap_policy::OnError::Fail {
            fail("refusing to start the program: the policy has errors (--strict or on_error = \"fail\")");
        }
        eprintln!("sockwrap: the policy has errors; running the program untouched");
    } else {
        if !loaded.errors.is_empty() {
            for e in &loaded.errors {
                eprintln!("sockwrap: {e}");
            }
            if loaded.policy.on_error == sockwrap_policy::OnError::Fail {
                fail("refusing to start the program: the policy has errors (--strict or on_error = \"fail\")");
            }
            eprintln!("sockwrap: the policy has errors; tracing the program without applying it");
        }
        let lib = find_library();
        let preload = match std::env::var("LD_PRELOAD") {
            Ok(existing) if existing.split([':', ' ']).any(|e| Path::new(e) == lib) => existing,
            Ok(existing) if !existing.trim().is_empty() => {
                format!("{}:{}", lib.display(), existing)
            }
            _ => lib.display().to_string(),
        };
        cmd.env("LD_PRELOAD", preload);
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
        if loaded.errors.is_empty() && !loaded.policy.is_empty() && blob.len() <= compiled::MAX_LEN
        {
            cmd.env(compiled::VAR, blob);
        } else {
            cmd.env_remove(compiled::VAR);
        }
    }
    (cmd, prog.clone())
}

pub fn check(m: &ArgMatches) -> ! {
    let mut bad = false;
    for f in m.get_many::<String>("files").into_iter().flatten() {
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
    std::process::exit(if bad { 1 } else { 0 })
}

pub fn explain(m: &ArgMatches) -> ! {
    let vars = flag_vars(m);
    let loaded = sockwrap_policy::load(
        vars.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        read_policy_file,
    );
    if !loaded.errors.is_empty() {
        for e in &loaded.errors {
            eprintln!("{e}");
        }
        std::process::exit(1);
    }
    let dest = m
        .get_one::<String>("dest")
        .map(String::as_str)
        .unwrap_or("");
    let addr: SocketAddr = dest.parse().unwrap_or_else(|_| {
        fail(format_args!(
            "--dest: `{dest}` is not IP:PORT (use [v6]:port for IPv6)"
        ))
    });
    let transport = match m.get_one::<String>("transport").map(String::as_str) {
        Some("udp") => Transport::Udp,
        Some("tcp") | None => Transport::Tcp,
        Some(o) => fail(format_args!("--transport: `{o}`: expected tcp or udp")),
    };
    let role = match m.get_one::<String>("role").map(String::as_str) {
        Some("server") => Role::Server,
        Some("client") | None => Role::Client,
        Some(o) => fail(format_args!("--role: `{o}`: expected client or server")),
    };
    let policy = match m.get_one::<String>("program") {
        Some(p) => loaded.policy.for_program(&[p.as_str()]),
        None => loaded.policy.clone(),
    };
    let ctx = Ctx {
        transport,
        role: Some(role),
        remote: Some((ip_key(addr.ip()), addr.port())),
        local_port: None,
    };
    let rows = policy.explain(&ctx);
    if rows.is_empty() {
        println!("{dest} ({transport:?} {role:?}): no option applies");
    } else {
        println!("{dest} ({transport:?} {role:?}):");
        for (o, s, rule) in rows {
            let tcp_only = o.spec().applies == catalog::Applies::Tcp && transport == Transport::Udp;
            println!(
                "  {:<18} {:<14} {:<6} from {}{}",
                o.name(),
                Shown(o, s.value).to_string(),
                if s.soft { "soft" } else { "locked" },
                rule,
                if tcp_only {
                    "  (TCP only: not applied to UDP)"
                } else {
                    ""
                }
            );
        }
    }
    std::process::exit(0)
}

pub fn options() {
    println!("{:<20} {:<44} {:<14} VALUES", "OPTION", "KERNEL", "WHEN");
    for o in Opt::ALL {
        let s = o.spec();
        let when = match s.when {
            catalog::When::Any => "any time",
            catalog::When::BeforeConnect => "before connect",
            catalog::When::BeforeBind => "before bind",
            catalog::When::Create => "at socket()",
        };
        let tcp = if s.applies == catalog::Applies::Tcp {
            " (TCP only)"
        } else {
            ""
        };
        println!(
            "{:<20} {:<44} {:<14} {}{}",
            s.name, s.kernel, when, s.help, tcp
        );
    }
}

pub const EXAMPLE_CONFIG: &str = include_str!("../../../docs/example-policy.toml");

/// The child's pid, for the signal handler that forwards SIGINT/SIGTERM/SIGHUP.
static CHILD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // A terminal's ^C already reached the whole process group, child included (si_code > 0,
    // SI_KERNEL): forwarding it would deliver it twice. kill(1) and friends (si_code <= 0)
    // reached only us: pass them on.
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let code = if info.is_null() {
        0
    } else {
        unsafe { (*info).si_code }
    };
    let pid = CHILD.load(std::sync::atomic::Ordering::Relaxed);
    if code <= 0 && pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

/// `sockwrap trace [run options] [-o FILE] [--json] -- COMMAND...`: stays as the parent,
/// waits, prints the summary, and exits with the program's status.
pub fn trace(m: &ArgMatches) -> ! {
    use std::os::unix::fs::OpenOptionsExt;
    let (path, keep) = match m.get_one::<String>("output") {
        Some(f) => (
            std::path::absolute(f).unwrap_or_else(|_| PathBuf::from(f)),
            true,
        ),
        None => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            (
                std::env::temp_dir().join(format!(
                    "sockwrap-trace-{}-{nanos}.jsonl",
                    std::process::id()
                )),
                false,
            )
        }
    };
    // A fresh record: created (or emptied) here, 0600, never through a symlink.
    let mut oo = std::fs::OpenOptions::new();
    oo.write(true).mode(0o600).custom_flags(libc::O_NOFOLLOW);
    if keep {
        oo.create(true).truncate(true);
    } else {
        oo.create_new(true);
    }
    if let Err(e) = oo.open(&path) {
        fail(format_args!("trace: {}: {e}", path.display()));
    }
    let extra = vec![("SOCKWRAP_TRACE".to_string(), path.display().to_string())];
    let (mut cmd, prog) = prepare(m, extra);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            if !keep {
                let _ = std::fs::remove_file(&path);
            }
            eprintln!("sockwrap: cannot run `{}`: {e}", prog.to_string_lossy());
            std::process::exit(if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            })
        }
    };
    CHILD.store(child.id() as i32, std::sync::atomic::Ordering::Relaxed);
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
        // SAFETY: installing a handler that only calls kill(2).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = forward as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
    let status = child.wait();
    let text = std::fs::read(&path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    if !keep {
        let _ = std::fs::remove_file(&path);
    }
    // The program owns stdout: the summary goes to stderr.
    crate::trace::print_summary(&text, m.get_flag("json"), true);
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => {
            if let Some(c) = s.code() {
                std::process::exit(c);
            }
            let sig = s.signal().unwrap_or(libc::SIGTERM);
            if matches!(
                sig,
                libc::SIGINT | libc::SIGTERM | libc::SIGHUP | libc::SIGPIPE | libc::SIGKILL
            ) {
                // Die of the same signal, so the shell sees what the program did.
                // SAFETY: restoring the default action and raising a signal at ourselves.
                unsafe {
                    libc::signal(sig, libc::SIG_DFL);
                    libc::raise(sig);
                }
            }
            std::process::exit(128 + sig)
        }
        Err(e) => fail(format_args!("trace: waiting for the program: {e}")),
    }
}

/// `sockwrap report FILE [--json]`.
pub fn report(m: &ArgMatches) -> ! {
    let f = m
        .get_one::<String>("file")
        .map(String::as_str)
        .unwrap_or("");
    let text = match std::fs::read(f) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => fail(format_args!("report: {f}: {e}")),
    };
    crate::trace::print_summary(&text, m.get_flag("json"), false);
    std::process::exit(0)
}
