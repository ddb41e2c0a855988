//! `sockwrap doctor [OPTIONS] [PROGRAM [ARGS...]]`: can sockwrap reach this program, can the
//! asked-for options be set here, and is MPTCP usable? Every finding says what to do.
//!
//! For a program: a wrapper that drops the environment (sudo, env -i), file capabilities
//! and setuid (the loader ignores LD_PRELOAD), musl (the library is built for glibc). For
//! the machine: the congestion algorithms available and allowed, the capabilities the
//! options need, the host-wide preload file (/etc/ld.so.preload).
//!
//! With no program: what the running kernel supports for each backend and feature, from
//! probes ([`super::support`]).
//!
//! For a program: LD_PRELOAD only works on dynamically linked programs that call libc's
//! socket functions and are not setuid/setcap; Go programs make raw system calls. For
//! MPTCP: whether it is enabled, the path manager, and the limits and endpoints that decide
//! whether a connection can use more than one path (the usual "MPTCP works but uses one
//! path" cause), with the command that fixes each.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn program(prog: &str) -> bool {
    let Some(path) = resolve_program(std::ffi::OsStr::new(prog)) else {
        println!("program: `{prog}` not found in PATH");
        return false;
    };
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) => {
            println!("program: cannot read {}: {e}", path.display());
            return false;
        }
    };
    println!("program: {}", path.display());
    let mut ok = true;
    // Nothing that rides on LD_PRELOAD reaches it; the cgroup BPF programs do.
    let mut kernel_only = false;
    match is_dynamic(&bytes) {
        None if bytes.starts_with(b"#!") => {
            println!("  script: sockwrap applies to the interpreter it runs (fine)")
        }
        None => println!("  not an ELF64 executable: cannot tell"),
        Some(false) => {
            ok = false;
            kernel_only = true;
            println!("  STATIC binary: LD_PRELOAD cannot reach it.");
        }
        Some(true) => println!("  dynamically linked: LD_PRELOAD reaches it"),
    }
    if contains(&bytes, b"\xff Go buildinf:") {
        ok = false;
        kernel_only = true;
        println!(
            "  GO program: it makes raw system calls and never calls libc's socket functions;"
        );
        println!("    for MPTCP `sockwrap run --mptcp` sets GODEBUG=multipathtcp=1 (Go 1.21+).");
    } else if is_dynamic(&bytes) == Some(true) {
        if contains(&bytes, b"\0connect\0") || contains(&bytes, b"\0socket\0") {
            println!("  imports libc socket functions: sockwrap's hooks will see its sockets");
        } else {
            println!(
                "  imports no socket/connect from libc itself (its libraries may: e.g. libcurl)"
            );
        }
    }
    match interpreter(&bytes) {
        Some(i) if i.contains("musl") => {
            ok = false;
            kernel_only = true;
            println!("  MUSL program (loader {i}): libsockwrap.so is built for glibc; preloaded, it stops the program from starting (the musl loader cannot relocate it). Do not run it under the library");
        }
        Some(i) => println!("  glibc program (loader {i})"),
        None => {}
    }
    if file_capabilities(&path) {
        ok = false;
        kernel_only = true;
        println!("  FILE CAPABILITIES (setcap): the loader runs it in secure mode and ignores LD_PRELOAD; use --kernel, or drop the capabilities and grant them another way (systemd AmbientCapabilities=)");
    }
    if let Ok(meta) = std::fs::metadata(&path) {
        if meta.permissions().mode() & 0o6000 != 0 {
            ok = false;
            kernel_only = true;
            println!("  SETUID/SETGID: the loader ignores LD_PRELOAD for it (secure mode).");
        }
    }
    if kernel_only {
        println!("  backend: only the kernel backend reaches it: sudo sockwrap run --kernel [OPTIONS] -- {prog}");
    } else {
        println!("  backend: the library (sockwrap run) reaches the sockets it makes through libc; --kernel (root) reaches those and the ones glibc makes inside itself (its DNS resolver)");
    }
    ok
}

fn read_trim(p: &str) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

fn mptcp() -> bool {
    println!("MPTCP:");
    let Some(enabled) = read_trim("/proc/sys/net/mptcp/enabled") else {
        println!(
            "  not available in this kernel (no /proc/sys/net/mptcp): --mptcp falls back to TCP"
        );
        return false;
    };
    let mut ok = true;
    if enabled == "1" {
        println!("  enabled (net.mptcp.enabled=1)");
    } else {
        ok = false;
        println!("  DISABLED (net.mptcp.enabled={enabled}): fix: sysctl -w net.mptcp.enabled=1");
    }
    let pm = read_trim("/proc/sys/net/mptcp/path_manager")
        .or_else(|| {
            read_trim("/proc/sys/net/mptcp/pm_type").map(|t| {
                if t == "0" {
                    "kernel".into()
                } else {
                    "userspace".into()
                }
            })
        })
        .unwrap_or_else(|| "unknown".into());
    println!("  path manager: {pm}");
    let ip = |args: &[&str]| {
        Command::new("ip")
            .args(args)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match ip(&["mptcp", "limits", "show"]) {
        Some(l) => {
            println!("  limits: {l}");
            let subflows = l
                .split_whitespace()
                .skip_while(|w| *w != "subflows")
                .nth(1)
                .and_then(|v| v.parse::<u32>().ok());
            if subflows == Some(0) {
                ok = false;
                println!("  only ONE path can be used (subflows 0): fix: ip mptcp limits set subflow 2 add_addr_accepted 2 (on both ends)");
            }
        }
        None => println!("  limits: `ip mptcp` not available (install iproute2)"),
    }
    match ip(&["mptcp", "endpoint", "show"]) {
        Some(e) if e.is_empty() => {
            println!(
                "  endpoints: none: a client opens extra subflows only from configured endpoints;"
            );
            println!(
                "    fix: ip mptcp endpoint add ADDR dev DEV subflow (client) / signal (server)"
            );
        }
        Some(e) => {
            for line in e.lines() {
                println!("  endpoint: {line}");
            }
        }
        None => {}
    }
    ok
}

use crate::elf::{interpreter, is_dynamic, resolve_program};
use crate::reach::file_capabilities;

/// Commands that start the program with an environment of their own making.
fn wrapper(prog: &str, args: &[String]) -> bool {
    let base = Path::new(prog)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(prog);
    let how = match base {
        "sudo" | "doas" | "su" | "pkexec" | "runuser" => Some(format!(
            "`{base}` resets the environment (and is setuid): LD_PRELOAD and SOCKWRAP_* do not reach \
             the program. Put sockwrap inside: {base} sockwrap run [OPTIONS] -- PROGRAM"
        )),
        "env" if args.iter().any(|a| a == "-i" || a == "--ignore-environment" || a == "-") => Some(
            "`env -i` starts the program with an empty environment: LD_PRELOAD and SOCKWRAP_* are \
             dropped. Put sockwrap after it: env -i ... sockwrap run [OPTIONS] -- PROGRAM"
                .to_string(),
        ),
        _ => None,
    };
    match how {
        Some(h) => {
            println!("command: {h}");
            false
        }
        None => true,
    }
}

/// CAP_NET_ADMIN in our effective set (the program runs as we do).
fn have_net_admin() -> bool {
    read_trim("/proc/self/status")
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << 12) != 0)
}

/// What the asked-for options need from this machine: capabilities, allowed congestion
/// algorithms, interfaces.
fn options_here(m: &clap::ArgMatches) -> crate::error::Result<bool> {
    use sockwrap_policy::catalog::Opt;
    use sockwrap_policy::Value;
    let vars = crate::launch::flag_vars(m)?;
    let available =
        read_trim("/proc/sys/net/ipv4/tcp_available_congestion_control").unwrap_or_default();
    let allowed =
        read_trim("/proc/sys/net/ipv4/tcp_allowed_congestion_control").unwrap_or_default();
    println!(
        "congestion control: available: {available}; allowed without CAP_NET_ADMIN: {allowed}"
    );
    if vars.is_empty() {
        return Ok(true);
    }
    let loaded = crate::load::load_vars(&vars);
    if !loaded.errors.is_empty() {
        for e in &loaded.errors {
            println!("policy: {e}");
        }
        return Ok(false);
    }
    let admin = have_net_admin();
    let uid = rustix::process::geteuid().as_raw();
    println!(
        "options: checked as uid {uid}, {} CAP_NET_ADMIN",
        if admin { "with" } else { "without" }
    );
    let mut ok = true;
    let mut need_admin = |what: String| {
        if !admin {
            ok = false;
            println!(
                "  {what} needs CAP_NET_ADMIN: the kernel answers EPERM. Run the program as root, \
                      or give it the capability (systemd: AmbientCapabilities=CAP_NET_ADMIN)"
            );
        }
    };
    let mut notes = Vec::new();
    for r in loaded.policy.rules() {
        for (opt, s) in r.settings.iter() {
            match (opt, s.value) {
                (Opt::Mark, _) => need_admin(format!("mark (rule {})", r.name)),
                (Opt::Priority, Value::Int(p)) if p > 6 => {
                    need_admin(format!("priority {p} (above 6, rule {})", r.name))
                }
                (Opt::Congestion, Value::Name(n)) => {
                    let n = n.as_str();
                    if !available.split_whitespace().any(|a| a == n) {
                        notes.push(format!(
                            "congestion `{n}` (rule {}) is not available: modprobe tcp_{n} (as root), \
                             or the kernel answers ENOENT",
                            r.name
                        ));
                    } else if !allowed.split_whitespace().any(|a| a == n) {
                        need_admin(format!(
                            "congestion `{n}` (rule {}; not in net.ipv4.tcp_allowed_congestion_control, \
                             or add it there with sysctl)",
                            r.name
                        ));
                    }
                }
                (Opt::BindInterface, Value::Name(n))
                    if !Path::new("/sys/class/net").join(n.as_str()).exists() =>
                {
                    notes.push(format!(
                        "bind-interface `{}` (rule {}): no such interface here (ip link)",
                        n.as_str(),
                        r.name
                    ));
                }
                _ => {}
            }
        }
    }
    for n in notes {
        ok = false;
        println!("  {n}");
    }
    if ok {
        println!("  every option can be set here");
    }
    Ok(ok)
}

/// The kernel backend here: the cgroup v2 mount, whether we may attach, what `--kernel`
/// would refuse of the asked-for options, and the leftovers of a sockwrap that was killed
/// (removed when root; a leftover that still holds processes is a finding).
fn kernel_backend(m: &clap::ArgMatches) -> crate::error::Result<bool> {
    use sockwrap_kernel::cgroup;
    let mut ok = true;
    let root = rustix::process::geteuid().is_root();
    match cgroup::mount_point() {
        Err(e) => println!("kernel backend: unavailable: {e}"),
        Ok(mount) => {
            println!(
                "kernel backend (--kernel): cgroup v2 at {}; {}",
                mount.display(),
                if root {
                    "root: may attach"
                } else {
                    "not root: only root may attach (BPF skips capability checks)"
                }
            );
            for l in cgroup::sweep(&mount, root) {
                if matches!(
                    l,
                    cgroup::Leftover::Busy(..)
                        | cgroup::Leftover::Failed(..)
                        | cgroup::Leftover::Strayed(..)
                ) {
                    ok = false;
                }
                println!("  {l}");
            }
            // Policies attached to cgroups that are gone (attach --cgroup/--container/--pod).
            for rel in super::containers::sweep(root) {
                if !root {
                    println!(
                        "  the pins of cgroup {rel}, which is gone, are left: root removes them"
                    );
                }
            }
        }
    }
    let vars = crate::launch::flag_vars(m)?;
    if !vars.is_empty() {
        let loaded = crate::launch::load_policy(m)?;
        for r in sockwrap_kernel::refusals_here(&loaded.policy) {
            println!("  --kernel cannot set {r}");
        }
    }
    Ok(ok)
}

/// /etc/ld.so.preload: the loader prints an error on every exec for a file it names that
/// is missing.
fn host_wide() -> bool {
    let Ok(text) = std::fs::read_to_string("/etc/ld.so.preload") else {
        println!("host-wide: no /etc/ld.so.preload (sockwrap is not preloaded into every program)");
        if Path::new("/etc/sockwrap/host.state").exists() {
            return super::host::report(Path::new("/"));
        }
        return true;
    };
    let mut ok = true;
    let entries: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || c == ':')
        .filter(|e| !e.is_empty() && !e.starts_with('#'))
        .collect();
    for e in &entries {
        if !Path::new(e).exists() {
            ok = false;
            println!(
                "host-wide: /etc/ld.so.preload names {e}, which is MISSING: every program started \
                 prints a loader error. Remove the line (or reinstall the file)"
            );
        } else if e.contains("libsockwrap") {
            println!(
                "host-wide: /etc/ld.so.preload preloads {e} into every dynamically linked program"
            );
        }
    }
    if ok && !entries.iter().any(|e| e.contains("libsockwrap")) {
        println!("host-wide: /etc/ld.so.preload does not name libsockwrap.so");
    }
    if entries.iter().any(|e| e.contains("libsockwrap"))
        || Path::new("/etc/sockwrap/host.state").exists()
    {
        ok &= super::host::report(Path::new("/"));
    }
    ok
}

pub fn doctor(m: &clap::ArgMatches) -> crate::error::Result<std::process::ExitCode> {
    let argv: Vec<String> = m
        .get_many::<String>("program")
        .map(|v| v.cloned().collect())
        .unwrap_or_default();
    let mut ok = true;
    if let Some((p, rest)) = argv.split_first() {
        ok &= wrapper(p, rest);
        ok &= program(p);
    } else {
        // The machine: what this kernel supports, probed (informational: a feature this
        // kernel lacks is no problem to fix, and `--kernel` refuses what needs it by name).
        let support = super::support::Support::probe();
        if m.get_flag("json") {
            println!("{}", support.json());
            return Ok(std::process::ExitCode::SUCCESS);
        }
        print!("{}", support.text());
    }
    ok &= options_here(m)?;
    ok &= host_wide();
    ok &= kernel_backend(m)?;
    ok &= mptcp();
    if ok {
        Ok(std::process::ExitCode::SUCCESS)
    } else {
        Err(crate::error::Error::Findings)
    }
}
