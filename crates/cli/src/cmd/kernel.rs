//! `sockwrap run --kernel [OPTIONS] [--user USER] -- COMMAND...`: the policy carried out by
//! cgroup BPF programs (crates/kernel) for every socket the command's process tree makes.
//!
//! sockwrap stays as the parent: it makes a fresh cgroup v2 child, attaches the programs,
//! forks, moves the child into the cgroup (between fork and exec), drops to `--user`, execs
//! the command, forwards signals, waits until no process is left in the cgroup, then
//! detaches the programs, removes the cgroup and exits with the command's status. A
//! sockwrap that was killed leaves only an empty cgroup (BPF links die with their process):
//! the next `run --kernel`, and `doctor`, remove it.
//!
//! `attach --follow` uses the same pieces on a running process: [`tables_for`] (the
//! refusals), [`remove_cgroup`], [`wait_events`] and [`report`].

use crate::error::{Error, Result};
use clap::ArgMatches;
use sockwrap_kernel::cgroup::{self, Cgroup};
use sockwrap_kernel::mptcp::{self, Conversion, LoadError, Selection};
use sockwrap_kernel::programs::{Attached, Failed};
use sockwrap_kernel::tables::{C_APPLIED_BASE, C_DENIED, C_LOCKED, C_REDIRECTED};
use sockwrap_kernel::Tables;
use sockwrap_policy::catalog::Opt;
use sockwrap_policy::{OnError, Policy, Stage};
use std::ffi::OsString;
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::ExitCode;

/// Why only root may attach, said wherever it is refused.
pub const ROOT_ONLY: &str = "--kernel: only root may attach BPF programs to a cgroup (BPF skips the capability checks a program's own setsockopt meets: it can give SO_MARK or a priority above 6 to an unprivileged program, so attaching is root's decision); run it with sudo";

fn quiet(m: &ArgMatches) -> bool {
    matches!(
        m.get_one::<String>("log").map(String::as_str),
        Some("off") | Some("error")
    )
}

/// `--log debug`, or `SOCKWRAP_LOG=debug` (attach and enable have no `--log`): the
/// verifier's log of a program the kernel would not load is printed.
pub fn debug(m: &ArgMatches) -> bool {
    match m.try_get_one::<String>("log").ok().flatten() {
        Some(l) => l == "debug",
        None => std::env::var("SOCKWRAP_LOG").is_ok_and(|l| l == "debug"),
    }
}

fn verbose(m: &ArgMatches) -> bool {
    matches!(
        m.get_one::<String>("log").map(String::as_str),
        Some("info") | Some("debug")
    )
}

pub fn run(m: &ArgMatches) -> Result<ExitCode> {
    run_with(m, None)
}

/// `run --kernel`, and with `trace` `trace --kernel`: its programs are attached after the
/// policy's, and their events read while the command runs.
pub fn run_with(
    m: &ArgMatches,
    trace: Option<&mut crate::cmd::trace::KernelTrace>,
) -> Result<ExitCode> {
    let argv = crate::launch::command(m, "sockwrap run --kernel [OPTIONS] -- COMMAND...")?;
    let (prog, rest) = (&argv[0], &argv[1..]);
    if !rustix::process::geteuid().is_root() {
        return Err(Error::setup(ROOT_ONLY));
    }
    crate::launch::log_vars(m)?;
    let loaded = crate::launch::load_policy(m)?;
    let user = m
        .get_one::<String>("user")
        .map(|u| crate::child::lookup_user(u))
        .transpose()?;
    if !loaded.errors.is_empty() {
        // As the library does: one line per problem, then the program runs untouched
        // (no cgroup, no programs: nothing half-applied), unless the policy says errors
        // must stop it (--strict, on_error = "fail").
        crate::load::print_errors(&loaded);
        if loaded.policy.on_error == OnError::Fail {
            return Err(Error::usage(
                "--kernel: refusing to start the program: the policy has errors (--strict or on_error = \"fail\")",
            ));
        }
        if trace.is_some() {
            return Err(Error::usage(
                "trace --kernel: the policy has errors; refusing to start the program",
            ));
        }
        eprintln!("sockwrap: --kernel: the policy has errors; running the program untouched");
        return exec_untouched(prog, rest, user.as_ref());
    }
    let tables = tables_for(
        &loaded.policy,
        "--kernel",
        "refusing to start the program",
        quiet(m),
    )?;

    let mptcp = mptcp_for(
        &loaded.policy,
        "--kernel",
        "refusing to start the program",
        quiet(m),
        debug(m),
    )?;

    let mount = cgroup::mount_point().map_err(|e| Error::setup(format_args!("--kernel: {e}")))?;
    for l in cgroup::sweep(&mount, true) {
        eprintln!("sockwrap: {l}");
    }
    let cg = Cgroup::create(&mount).map_err(|e| Error::setup(format_args!("--kernel: {e}")))?;
    let result = run_in(
        m,
        &cg,
        Programs {
            tables: &tables,
            mptcp,
        },
        &argv,
        user.as_ref(),
        loaded.policy.on_error,
        trace,
    );
    // Whatever happened, the cgroup goes (the programs went with `Attached`). A process
    // that outlived a failed start keeps it busy: say so rather than wait.
    if let Err(e) = remove_cgroup(&cg) {
        eprintln!("sockwrap: --kernel: {e}");
    }
    result
}

/// Execs the command as it would run without sockwrap (as `--user`, if given): nothing
/// stays in between, and its exit status is its own.
fn exec_untouched(
    prog: &OsString,
    rest: &[OsString],
    user: Option<&crate::child::User>,
) -> Result<ExitCode> {
    let mut cmd = std::process::Command::new(prog);
    cmd.args(rest);
    crate::child::set_up(&mut cmd, None, user);
    let err = cmd.exec();
    Err(Error::Exec {
        program: prog.to_string_lossy().into_owned(),
        err,
    })
}

/// What `run --kernel` attaches: the policy's map contents for the cgroup programs, and the
/// MPTCP conversion if the policy converts.
struct Programs<'a> {
    tables: &'a Tables,
    mptcp: Option<Conversion>,
}

fn run_in(
    m: &ArgMatches,
    cg: &Cgroup,
    programs: Programs,
    argv: &[OsString],
    user: Option<&crate::child::User>,
    on_error: OnError,
    mut trace: Option<&mut crate::cmd::trace::KernelTrace>,
) -> Result<ExitCode> {
    let (prog, rest) = (&argv[0], &argv[1..]);
    let dir = cg
        .open()
        .map_err(|e| Error::setup(format_args!("--kernel: {e}")))?;
    let attached = Attached::load(programs.tables, &dir)
        .map_err(|e| attach_failure("--kernel", "refusing to start the program", e, debug(m)))?;
    let mptcp = programs
        .mptcp
        .map(|c| {
            aim_mptcp(
                c,
                &dir,
                "--kernel",
                "refusing to start the program",
                debug(m),
            )
        })
        .transpose()?;
    if let Some(t) = trace.as_deref_mut() {
        t.attach(&dir, debug(m))?;
    }
    let procs = cg
        .procs_file()
        .map_err(|e| Error::setup(format_args!("--kernel: {e}")))?;
    let procs_fd = procs.as_raw_fd();

    let mut cmd = std::process::Command::new(prog);
    cmd.args(rest);
    crate::child::set_up(&mut cmd, Some(procs_fd), user);
    let mut child = cmd.spawn().map_err(|err| Error::Exec {
        program: prog.to_string_lossy().into_owned(),
        err,
    })?;
    drop(procs);
    crate::signals::forward_to(child.id());
    let status = match trace.as_deref_mut() {
        None => child.wait(),
        // The ring buffer is read while the command runs.
        Some(t) => loop {
            match child.try_wait() {
                Ok(Some(s)) => break Ok(s),
                Ok(None) => t.pump(100),
                Err(e) => break Err(e),
            }
        },
    };
    crate::signals::child_ended();
    // The command's whole tree: what it started in the background is in the cgroup too,
    // and keeps the programs until it ends. A signal sent to sockwrap meanwhile goes to
    // each of those processes.
    while cg.populated() {
        if let Some(sig) = crate::signals::take() {
            for pid in cgroup::procs(&cg.path) {
                crate::signals::send(pid, sig);
            }
        }
        match trace.as_deref_mut() {
            Some(t) => t.pump(50),
            None => wait_events(&[&cg.path]),
        }
    }
    if let Some(t) = trace {
        t.finish();
    }
    report(
        "--kernel",
        &attached.counters(),
        on_error,
        quiet(m),
        verbose(m),
    );
    if let (Some(c), true) = (&mptcp, verbose(m)) {
        eprintln!(
            "sockwrap: --kernel: sockets made MPTCP at socket(): {}",
            c.converted()
        );
    }
    drop(mptcp);
    drop(attached);
    let s =
        status.map_err(|e| Error::setup(format_args!("--kernel: waiting for the program: {e}")))?;
    if let Some(c) = s.code() {
        return Ok(ExitCode::from(c as u8));
    }
    let sig = s.signal().unwrap_or(libc::SIGTERM);
    Ok(ExitCode::from((128 + sig) as u8))
}

/// The policy's map contents for the BPF programs, or `Err` (exit 2) after one line per
/// option the kernel backend cannot set: never dropped silently, and refused before
/// anything is changed. `what` starts each line (`--kernel`, `attach --follow`); `refusing`
/// says what is not done.
pub fn tables_for(policy: &Policy, what: &str, refusing: &str, quiet: bool) -> Result<Tables> {
    let refused = sockwrap_kernel::refusals_here(policy);
    if !refused.is_empty() {
        for r in &refused {
            eprintln!("sockwrap: {what} cannot set {r}");
        }
        return Err(Error::usage(format_args!(
            "{what}: {refusing}: {} option{} the kernel backend cannot set (never dropped silently)",
            refused.len(),
            if refused.len() == 1 { "" } else { "s" }
        )));
    }
    let tables = Tables::build(policy).map_err(|e| Error::usage(format_args!("{what}: {e}")))?;
    if !quiet {
        for (name, seen) in &tables.truncated_programs {
            eprintln!(
                "sockwrap: {what}: program `{name}` is matched as `{seen}`: the kernel keeps only the first 15 bytes of a program's name"
            );
        }
    }
    Ok(tables)
}

/// The MPTCP conversion the policy asks for ([`sockwrap_kernel::mptcp`]), loaded once: this
/// is the probe. `None` when no rule converts, or when this network namespace makes no
/// MPTCP sockets (`net.mptcp.enabled=0`, no MPTCP in the kernel): then, as the library
/// does, it says so and the program runs on TCP (under `--strict` it does not start). Where
/// the kernel cannot convert: one line with the kernel's reason and what to use instead,
/// exit 2, before anything is changed.
pub fn mptcp_for(
    policy: &Policy,
    what: &str,
    refusing: &str,
    quiet: bool,
    debug: bool,
) -> Result<Option<Conversion>> {
    let Some(sel) = Selection::of(policy) else {
        return Ok(None);
    };
    let rules: Vec<String> = policy
        .rules()
        .iter()
        .filter(|r| r.settings.get(Opt::Mptcp).is_some())
        .map(|r| format!("`{}`", r.name))
        .collect();
    let rules = format!(
        "rule{} {}",
        if rules.len() == 1 { "" } else { "s" },
        rules.join(", ")
    );
    if let Err(e) = mptcp::sockets_here() {
        let hint = if e == libc::ENOPROTOOPT {
            " (is net.mptcp.enabled=0? see `sockwrap doctor`)"
        } else {
            ""
        };
        if policy.on_error == OnError::Fail {
            return Err(Error::usage(format_args!(
                "{what}: mptcp ({rules}): the kernel refuses MPTCP sockets here: {}{hint}; {refusing} (strict)",
                sockwrap_kernel::probe::errno_text(e)
            )));
        }
        if !quiet {
            eprintln!(
                "sockwrap: {what}: mptcp ({rules}): the kernel refuses MPTCP sockets here: {}{hint}; the program runs on plain TCP",
                sockwrap_kernel::probe::errno_text(e)
            );
        }
        return Ok(None);
    }
    match Conversion::load(&sel) {
        Ok(c) => {
            if !quiet {
                mptcp_warnings(policy, what);
            }
            Ok(Some(c))
        }
        Err(e) => Err(mptcp_refusal(e, what, &rules, refusing, debug)),
    }
}

fn mptcp_refusal(e: LoadError, what: &str, rules: &str, refusing: &str, debug: bool) -> Error {
    match e {
        LoadError::Kernel(k, log) => {
            if debug && !log.is_empty() {
                eprintln!("sockwrap: {what}: the kernel's answer to the MPTCP program:\n{log}");
            }
            if k == sockwrap_kernel::probe::MptcpConversion::NotProbed {
                return Error::setup(ROOT_ONLY);
            }
            let rules = if rules.is_empty() {
                String::new()
            } else {
                format!(" ({rules})")
            };
            Error::usage(format_args!(
                "{what} cannot set mptcp{rules}: {}; {refusing}",
                mptcp::refusal(k)
            ))
        }
        LoadError::Other(e) => Error::setup(format_args!("{what}: {e}; {refusing}")),
    }
}

/// Aims the conversion at the cgroup `dir` and attaches it.
pub fn aim_mptcp(
    c: Conversion,
    dir: &std::fs::File,
    what: &str,
    refusing: &str,
    debug: bool,
) -> Result<Conversion> {
    c.target(dir)
        .map_err(|e| Error::setup(format_args!("{what}: {e}; {refusing}")))?;
    attach_mptcp(c, what, refusing, debug)
}

/// Attaches the conversion (to update_socket_protocol: it converts in the cgroup its map
/// holds, none until one is put there).
pub fn attach_mptcp(
    mut c: Conversion,
    what: &str,
    refusing: &str,
    debug: bool,
) -> Result<Conversion> {
    c.attach()
        .map_err(|e| mptcp_refusal(e, what, "", refusing, debug))?;
    Ok(c)
}

/// The options of the policy that MPTCP sockets refuse (DESIGN.md), said as the library
/// says them: the converted sockets go without them.
fn mptcp_warnings(policy: &Policy, what: &str) {
    for o in Opt::ALL {
        if o == Opt::Mptcp || o.mptcp_ok() || !policy.manages(o) {
            continue;
        }
        if sockwrap_kernel::tables::refused_opt(o).is_some() {
            continue; // refused by name already
        }
        let refused: Vec<&str> = o
            .spec()
            .ops
            .iter()
            .filter(|k| !k.mptcp)
            .map(|k| k.cname)
            .collect();
        eprintln!(
            "sockwrap: {what}: {}: MPTCP sockets cannot carry {}; MPTCP connections go without it",
            o.name(),
            refused.join(" / ")
        );
    }
}

/// The one line for programs that did not load or attach. A program the kernel would not
/// load is probed ([`sockwrap_kernel::probe`]): what this kernel lacks is refused by name,
/// with the kernel's release and what to use instead, with the exit code of options the
/// backend cannot set (2); when nothing is missing, the verifier refused our own code, a
/// bug (exit 3). The verifier's log goes to stderr only under `--log debug`.
pub fn attach_failure(what: &str, refusing: &str, f: Failed, debug: bool) -> Error {
    match f {
        Failed::Load(l) => {
            if debug {
                eprintln!(
                    "sockwrap: {what}: the kernel's answer to loading {}:\n{}",
                    l.program, l.log
                );
            }
            match sockwrap_kernel::probe::refusal(what, l.program) {
                Some(line) => Error::usage(format_args!("{line}; {refusing}")),
                None => Error::setup(format_args!(
                    "{what}: this kernel ({}) refused to load sockwrap's {} program ({}) though every feature it needs is here: a sockwrap bug, please report it with what --log debug prints; {refusing}",
                    sockwrap_kernel::probe::kernel_release(),
                    sockwrap_kernel::programs::attach_type(l.program).unwrap_or(l.program),
                    l.errno
                        .map(sockwrap_kernel::probe::errno_text)
                        .unwrap_or_else(|| "no errno".into()),
                )),
            }
        }
        Failed::Other(e) => Error::setup(format_args!(
            "{what}: cannot attach the BPF programs: {e}; {refusing}"
        )),
    }
}

/// Removes a cgroup of ours once its last process has gone: a process that just exited
/// leaves it populated for a moment, so it is tried for up to a second. Gone already (a
/// `systemctl stop` of the unit it was in removes it) counts as removed.
pub fn remove_cgroup(cg: &Cgroup) -> std::result::Result<(), String> {
    let mut last = String::new();
    for _ in 0..50 {
        if !cg.path.exists() {
            return Ok(());
        }
        match cg.remove() {
            Ok(()) => return Ok(()),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Err(last)
}

/// Waits for a change of any of the cgroups' `cgroup.events` (the kernel signals POLLPRI),
/// at most 200 ms. A signal ends the wait early (EINTR), as it should.
pub fn wait_events(cgroups: &[&Path]) {
    let files: Vec<std::fs::File> = cgroups
        .iter()
        .filter_map(|p| std::fs::File::open(p.join("cgroup.events")).ok())
        .collect();
    if files.is_empty() {
        std::thread::sleep(std::time::Duration::from_millis(50));
        return;
    }
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let mut pfds: Vec<PollFd> = files
        .iter()
        .map(|f| PollFd::new(f, PollFlags::PRI))
        .collect();
    let _ = poll(
        &mut pfds,
        Some(&Timespec {
            tv_sec: 0,
            tv_nsec: 200_000_000,
        }),
    );
}

/// What the programs counted: options the kernel refused (warned unless `quiet`), and when
/// `verbose` the plans applied per stage and the setsockopt calls locks skipped. Returns
/// whether the kernel refused any option.
pub fn report(what: &str, counters: &[u64], on_error: OnError, quiet: bool, verbose: bool) -> bool {
    if counters.is_empty() {
        return false;
    }
    let mut refused = false;
    for o in Opt::ALL {
        let n = counters.get(o as usize).copied().unwrap_or(0);
        if n > 0 {
            refused = true;
            if !quiet {
                eprintln!(
                    "sockwrap: {what}: {} ({}) was refused by the kernel {n} time{}{}",
                    o.name(),
                    o.spec().kernel,
                    if n == 1 { "" } else { "s" },
                    if on_error == OnError::Fail {
                        " (the calls failed: strict)"
                    } else {
                        ""
                    }
                );
            }
        }
    }
    if verbose {
        let applied: Vec<String> = Stage::ALL
            .iter()
            .map(|s| {
                let n = counters
                    .get((C_APPLIED_BASE + *s as u32) as usize)
                    .copied()
                    .unwrap_or(0);
                format!("{} {n}", s.call())
            })
            .collect();
        let n = |i: u32| counters.get(i as usize).copied().unwrap_or(0);
        eprintln!(
            "sockwrap: {what}: plans applied: {}; setsockopt calls kept from changing a locked option: {}; connects and datagrams denied: {}, redirected: {}",
            applied.join(", "),
            n(C_LOCKED),
            n(C_DENIED),
            n(C_REDIRECTED)
        );
    }
    refused
}
