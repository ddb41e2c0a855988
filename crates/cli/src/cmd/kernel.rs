//! `sockwrap run --kernel [OPTIONS] [--user USER] -- COMMAND...`: the policy carried out by
//! cgroup BPF programs (crates/kernel) for every socket the command's process tree makes.
//!
//! sockwrap stays as the parent: it makes a fresh cgroup v2 child, attaches the programs,
//! forks, moves the child into the cgroup (between fork and exec), drops to `--user`, execs
//! the command, forwards signals, waits until no process is left in the cgroup, then
//! detaches the programs, removes the cgroup and exits with the command's status. A
//! sockwrap that was killed leaves only an empty cgroup (BPF links die with their process):
//! the next `run --kernel`, and `doctor`, remove it.

use crate::error::{Error, Result};
use clap::ArgMatches;
use sockwrap_kernel::cgroup::{self, Cgroup};
use sockwrap_kernel::programs::Attached;
use sockwrap_kernel::tables::{C_APPLIED_BASE, C_DENIED, C_LOCKED, C_REDIRECTED};
use sockwrap_kernel::Tables;
use sockwrap_policy::catalog::Opt;
use sockwrap_policy::{OnError, Stage};
use std::ffi::{CString, OsString};
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::ExitCode;
use std::sync::atomic::{AtomicI32, Ordering};

/// Why only root may attach, said wherever it is refused.
pub const ROOT_ONLY: &str = "--kernel: only root may attach BPF programs to a cgroup (BPF skips the capability checks a program's own setsockopt meets: it can give SO_MARK or a priority above 6 to an unprivileged program, so attaching is root's decision); run it with sudo";

static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // As in `trace`: a terminal's ^C already reached the child (si_code > 0); a kill(1)
    // reached only us (si_code <= 0) and is passed on.
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let code = if info.is_null() {
        0
    } else {
        unsafe { (*info).si_code }
    };
    let pid = CHILD.load(Ordering::Relaxed);
    if code <= 0 && pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    } else if code <= 0 {
        // The command has ended and its background processes are being waited for: the
        // waiting loop passes the signal on to every process left in the cgroup.
        PENDING.store(sig, Ordering::Relaxed);
    }
}

/// A signal for the processes left in the cgroup after the command ended.
static PENDING: AtomicI32 = AtomicI32::new(0);

/// The user `--user` names: (uid, gid, supplementary groups, name, home).
struct User {
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: Vec<libc::gid_t>,
    name: String,
    home: String,
}

fn lookup_user(spec: &str) -> Result<User> {
    let c = CString::new(spec).map_err(|_| Error::usage("--user: the name holds a NUL byte"))?;
    // SAFETY: getpwnam/getpwuid return a pointer to static storage or null; it is read
    // at once, before any other call that could overwrite it (one thread runs here).
    let pw = unsafe {
        let p = libc::getpwnam(c.as_ptr());
        if p.is_null() {
            match spec.parse::<libc::uid_t>() {
                Ok(uid) => libc::getpwuid(uid),
                Err(_) => p,
            }
        } else {
            p
        }
    };
    if pw.is_null() {
        return Err(Error::usage(format_args!("--user: no user `{spec}`")));
    }
    // SAFETY: pw is a valid passwd record (checked non-null above).
    let (uid, gid, name, home) = unsafe {
        let p = &*pw;
        (
            p.pw_uid,
            p.pw_gid,
            std::ffi::CStr::from_ptr(p.pw_name)
                .to_string_lossy()
                .into_owned(),
            std::ffi::CStr::from_ptr(p.pw_dir)
                .to_string_lossy()
                .into_owned(),
        )
    };
    let cname = CString::new(name.clone()).unwrap_or_default();
    let mut n: libc::c_int = 64;
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    for _ in 0..4 {
        groups.resize(n as usize, 0);
        // SAFETY: groups has room for n entries; getgrouplist writes at most n and sets n.
        let r = unsafe { libc::getgrouplist(cname.as_ptr(), gid, groups.as_mut_ptr(), &mut n) };
        if r >= 0 {
            groups.truncate(n as usize);
            break;
        }
    }
    Ok(User {
        uid,
        gid,
        groups,
        name,
        home,
    })
}

fn quiet(m: &ArgMatches) -> bool {
    matches!(
        m.get_one::<String>("log").map(String::as_str),
        Some("off") | Some("error")
    )
}

fn verbose(m: &ArgMatches) -> bool {
    matches!(
        m.get_one::<String>("log").map(String::as_str),
        Some("info") | Some("debug")
    )
}

pub fn run(m: &ArgMatches) -> Result<ExitCode> {
    let argv: Vec<OsString> = m
        .get_many::<String>("command")
        .map(|v| v.map(OsString::from).collect())
        .unwrap_or_default();
    let Some((prog, rest)) = argv.split_first() else {
        return Err(Error::usage(
            "run: no command given (sockwrap run --kernel [OPTIONS] -- COMMAND...)",
        ));
    };
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(Error::setup(ROOT_ONLY));
    }
    crate::launch::log_vars(m)?;
    let loaded = crate::launch::load_policy(m)?;
    let user = m
        .get_one::<String>("user")
        .map(|u| lookup_user(u))
        .transpose()?;
    if !loaded.errors.is_empty() {
        for e in &loaded.errors {
            eprintln!("sockwrap: {e}");
        }
        return Err(Error::usage(
            "--kernel: refusing to start the program: the policy has errors",
        ));
    }
    let refused = sockwrap_kernel::refusals(&loaded.policy);
    if !refused.is_empty() {
        for r in &refused {
            eprintln!("sockwrap: --kernel cannot set {r}");
        }
        return Err(Error::usage(format_args!(
            "--kernel: refusing to start the program: {} option{} the kernel backend cannot set (never dropped silently)",
            refused.len(),
            if refused.len() == 1 { "" } else { "s" }
        )));
    }
    let tables =
        Tables::build(&loaded.policy).map_err(|e| Error::usage(format_args!("--kernel: {e}")))?;
    if !quiet(m) {
        for (name, seen) in &tables.truncated_programs {
            eprintln!(
                "sockwrap: --kernel: program `{name}` is matched as `{seen}`: the kernel keeps only the first 15 bytes of a program's name"
            );
        }
    }

    let mount = cgroup::mount_point().map_err(|e| Error::setup(format_args!("--kernel: {e}")))?;
    for l in cgroup::sweep(&mount, true) {
        eprintln!("sockwrap: {l}");
    }
    let cg = Cgroup::create(&mount).map_err(|e| Error::setup(format_args!("--kernel: {e}")))?;
    let result = run_in(
        m,
        &cg,
        &tables,
        prog,
        rest,
        user.as_ref(),
        loaded.policy.on_error,
    );
    // Whatever happened, the cgroup goes (the programs went with `Attached`). A process
    // that outlived a failed start keeps it busy: say so rather than wait.
    if cg.path.exists() {
        let mut removed = cg.remove();
        for _ in 0..50 {
            if removed.is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
            removed = cg.remove();
        }
        if let Err(e) = removed {
            eprintln!("sockwrap: --kernel: {e}");
        }
    }
    result
}

fn run_in(
    m: &ArgMatches,
    cg: &Cgroup,
    tables: &Tables,
    prog: &OsString,
    rest: &[OsString],
    user: Option<&User>,
    on_error: OnError,
) -> Result<ExitCode> {
    let dir = cg
        .open()
        .map_err(|e| Error::setup(format_args!("--kernel: {e}")))?;
    let attached = Attached::load(tables, &dir).map_err(|e| {
        Error::setup(format_args!(
            "--kernel: cannot attach the BPF programs: {e}"
        ))
    })?;
    let procs = cg
        .procs_file()
        .map_err(|e| Error::setup(format_args!("--kernel: {e}")))?;
    let procs_fd = procs.as_raw_fd();

    let mut cmd = std::process::Command::new(prog);
    cmd.args(rest);
    let ids = user.map(|u| (u.uid, u.gid, u.groups.clone()));
    if let Some(u) = user {
        cmd.env("HOME", &u.home)
            .env("USER", &u.name)
            .env("LOGNAME", &u.name);
    }
    // SAFETY: the closure runs in the child between fork and exec and makes only
    // async-signal-safe system calls (write, setgroups, setgid, setuid) on data prepared
    // before the fork.
    unsafe {
        cmd.pre_exec(move || {
            cgroup::join_raw(procs_fd)?;
            if let Some((uid, gid, groups)) = &ids {
                if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                    || libc::setgid(*gid) != 0
                    || libc::setuid(*uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|err| Error::Exec {
        program: prog.to_string_lossy().into_owned(),
        err,
    })?;
    drop(procs);
    CHILD.store(child.id() as i32, Ordering::Relaxed);
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
    CHILD.store(0, Ordering::Relaxed);
    // The command's whole tree: what it started in the background is in the cgroup too,
    // and keeps the programs until it ends. A signal sent to sockwrap meanwhile goes to
    // each of those processes.
    while cg.populated() {
        let sig = PENDING.swap(0, Ordering::Relaxed);
        if sig != 0 {
            for pid in cgroup::procs(&cg.path) {
                // SAFETY: kill(2) on a pid read from our own cgroup.
                unsafe { libc::kill(pid, sig) };
            }
        }
        wait_events(cg);
    }
    report(m, &attached.counters(), on_error);
    drop(attached);
    let s =
        status.map_err(|e| Error::setup(format_args!("--kernel: waiting for the program: {e}")))?;
    if let Some(c) = s.code() {
        return Ok(ExitCode::from(c as u8));
    }
    let sig = s.signal().unwrap_or(libc::SIGTERM);
    Ok(ExitCode::from((128 + sig) as u8))
}

/// Waits for a change of `cgroup.events` (the kernel signals POLLPRI), at most a second.
fn wait_events(cg: &Cgroup) {
    let Ok(f) = std::fs::File::open(cg.path.join("cgroup.events")) else {
        std::thread::sleep(std::time::Duration::from_millis(50));
        return;
    };
    let mut pfd = libc::pollfd {
        fd: f.as_raw_fd(),
        events: libc::POLLPRI,
        revents: 0,
    };
    // SAFETY: one valid pollfd. A signal ends the wait early (EINTR), as it should.
    unsafe { libc::poll(&mut pfd, 1, 200) };
}

/// What the programs counted: options the kernel refused (warned unless --log off/error),
/// and with --log info the plans applied per stage and the setsockopt calls locks skipped.
fn report(m: &ArgMatches, counters: &[u64], on_error: OnError) {
    if counters.is_empty() {
        return;
    }
    if !quiet(m) {
        for o in Opt::ALL {
            let n = counters.get(o as usize).copied().unwrap_or(0);
            if n > 0 {
                eprintln!(
                    "sockwrap: --kernel: {} ({}) was refused by the kernel {n} time{}{}",
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
    if verbose(m) {
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
            "sockwrap: --kernel: plans applied: {}; setsockopt calls kept from changing a locked option: {}; connects and datagrams denied: {}, redirected: {}",
            applied.join(", "),
            n(C_LOCKED),
            n(C_DENIED),
            n(C_REDIRECTED)
        );
    }
}
