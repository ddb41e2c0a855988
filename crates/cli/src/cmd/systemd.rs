//! `sockwrap enable UNIT`, `disable UNIT`, `status UNIT`: the policy for a systemd service,
//! as a drop-in `/etc/systemd/system/UNIT.d/sockwrap.conf`. The vendor unit is never
//! edited. The drop-in sets `LD_PRELOAD` to the unversioned library path followed by
//! whatever `LD_PRELOAD` the unit already had, and the `SOCKWRAP_*` variables; every other
//! `Environment=` of the unit stays in force because systemd merges drop-ins per variable.
//!
//! A policy file (`-c FILE`) is *copied* to `/etc/sockwrap/units/UNIT.toml`, and the
//! drop-in names the copy: the service keeps the policy it was enabled with, and a later
//! edit of FILE reaches it only through another `sockwrap enable` (which `status` points
//! out when the two differ).
//!
//! `enable UNIT --kernel` carries the policy out with the kernel backend instead: the
//! programs, loaded with the compiled policy in their maps, are pinned in the BPF filesystem
//! under `/sys/fs/bpf/sockwrap/UNIT/` (one file per program, named by its attach type; the
//! maps under `maps/`), and the drop-in names them in `BPFProgram=TYPE:PATH` lines, so that
//! systemd attaches them to the unit's cgroup when it starts the unit. `disable` removes the
//! pins with the drop-in; `status` shows them and what the programs counted.

use crate::error::{Error, Result};
use crate::files::{root_dir, write_atomic};
use crate::launch::{compose_preload, find_library, flag_vars, log_vars};
use crate::unitfile::{self, quote_assignment};
use clap::ArgMatches;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The first line of every drop-in sockwrap writes: `disable` removes only such files.
const MARKER: &str = "# sockwrap-enable:";
/// Where the drop-in records the file the policy was copied from.
const SOURCE_TAG: &str = "# sockwrap-policy-source:";
const DROP_IN: &str = "sockwrap.conf";
/// Where a `--kernel` drop-in records the directory its programs are pinned in.
const PINS_TAG: &str = "# sockwrap-kernel-pins:";
/// The BPF filesystem systemd mounts at boot.
const BPFFS: &str = "/sys/fs/bpf";

struct Target {
    root: PathBuf,
    unit: String,
}

impl Target {
    fn from(m: &ArgMatches) -> Result<Target> {
        let unit = m
            .get_one::<String>("unit")
            .map(String::as_str)
            .unwrap_or("");
        let unit = unitfile::unit_name(unit).map_err(Error::usage)?;
        let root = root_dir(m)?;
        Ok(Target { root, unit })
    }

    /// A path of the target system (as the service sees it) below the root we work on.
    fn at(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    /// A path below the root as the target system names it.
    fn shown(&self, p: &Path) -> String {
        match p.strip_prefix(&self.root) {
            Ok(rel) if self.root != Path::new("/") => format!("/{}", rel.display()),
            _ => p.display().to_string(),
        }
    }

    fn drop_in_name(&self) -> String {
        format!("/etc/systemd/system/{}.d/{DROP_IN}", self.unit)
    }

    fn policy_name(&self) -> String {
        format!("/etc/sockwrap/units/{}.toml", self.unit)
    }

    /// The unit `enable --kernel` writes to pin the programs again at boot (the unit's name
    /// as in [`Target::pin_dir`]).
    fn boot_unit_name(&self) -> String {
        format!("sockwrap-pins-{}.service", self.unit.replace('.', "_"))
    }

    fn boot_unit_path(&self) -> String {
        format!("/etc/systemd/system/{}", self.boot_unit_name())
    }

    /// Where `--kernel` pins the unit's programs (in the running kernel's bpffs, never
    /// under `--root`): the unit's name with `.` as `_`, since bpffs refuses a `.` in a
    /// name (mkdir gives EPERM: measured on 6.18, kernel/bpf/inode.c).
    fn pin_dir(&self) -> PathBuf {
        Path::new(BPFFS)
            .join("sockwrap")
            .join(self.unit.replace('.', "_"))
    }

    fn is_live_system(&self) -> bool {
        self.root == Path::new("/") && Path::new("/run/systemd/system").is_dir()
    }

    /// `systemctl daemon-reload` when we changed the real system and systemd runs it.
    fn reload(&self) -> Result<()> {
        if !self.is_live_system() {
            if self.root == Path::new("/") {
                println!(
                    "systemd is not running here: the change applies when it next starts {}",
                    self.unit
                );
            }
            return Ok(());
        }
        let st = std::process::Command::new("systemctl")
            .arg("daemon-reload")
            .status()
            .map_err(|e| Error::setup(format_args!("systemctl daemon-reload: {e}")))?;
        if !st.success() {
            return Err(Error::setup(format_args!(
                "systemctl daemon-reload failed ({st})"
            )));
        }
        Ok(())
    }
}

pub fn enable(m: &ArgMatches) -> Result<ExitCode> {
    let t = Target::from(m)?;
    let dry = m.get_flag("dry-run");
    let unit_file = unitfile::find_unit(&t.root, &t.unit).ok_or_else(|| {
        Error::setup(format_args!(
            "{}: no such unit file in {} (under {})",
            t.unit,
            unitfile::UNIT_DIRS.map(|d| format!("/{d}")).join(", "),
            t.root.display()
        ))
    })?;

    // The policy as the flags and the file give it; refuse to write a broken one.
    let mut vars = flag_vars(m)?;
    vars.extend(log_vars(m)?);
    let source = m
        .get_one::<String>("config")
        .map(|c| crate::launch::absolute(c));
    if let Some(src) = &source {
        std::fs::metadata(src)
            .map_err(|e| Error::usage(format_args!("--config: {}: {e}", src.display())))?;
    }
    if vars.iter().all(|(k, _)| k.starts_with("SOCKWRAP_LOG")) {
        return Err(Error::usage(
            "enable: no policy given: add option flags (--dscp EF ...) or -c FILE",
        ));
    }
    let policy = crate::load::policy_or_refuse(
        crate::load::load_vars(&vars),
        format_args!(
            "enable: the policy has errors; nothing written for {}",
            t.unit
        ),
    )?;
    let policy_text = match &source {
        Some(src) => Some(
            std::fs::read(src).map_err(|e| Error::setup(format_args!("{}: {e}", src.display())))?,
        ),
        None => None,
    };
    for v in vars.iter_mut() {
        if v.0 == "SOCKWRAP_CONFIG" {
            v.1 = t.policy_name();
        }
    }
    if m.get_flag("kernel") {
        return enable_kernel(
            &t,
            &policy,
            &vars,
            source.as_deref(),
            policy_text.as_deref(),
            dry,
        );
    }

    // What the unit already has: its own LD_PRELOAD (and GODEBUG) are kept after ours.
    let ours = t.at(&t.drop_in_name());
    let mut files = vec![unit_file.clone()];
    files.extend(
        unitfile::drop_ins(&t.root, &t.unit)
            .into_iter()
            .filter(|p| *p != ours),
    );
    let have = unitfile::compose(&files);
    for (ef, from) in &have.env_files {
        let path = t.at(ef.trim_start_matches('-'));
        if let Some(v) = unitfile::env_file_value(&path, "LD_PRELOAD") {
            return Err(Error::setup(format_args!(
                "{}: EnvironmentFile={ef} (from {}) sets LD_PRELOAD={v}, which would override the drop-in: \
                 add the library there instead",
                t.unit,
                from.display()
            )));
        }
    }
    let lib = find_library()?;
    let existing = have.vars.get("LD_PRELOAD");
    let mut lines = vec![(
        "LD_PRELOAD".to_string(),
        compose_preload(&lib, existing.map(|(v, _)| v.as_str())),
    )];
    if vars.iter().any(|(k, v)| {
        k == "SOCKWRAP_MPTCP"
            && sockwrap_policy::catalog::parse_value(
                sockwrap_policy::catalog::Opt::Mptcp,
                "mptcp",
                sockwrap_policy::catalog::Raw::Str(v),
            ) == Ok(sockwrap_policy::Value::Bool(true))
    }) {
        let godebug = match have.vars.get("GODEBUG") {
            Some((g, _)) if g.contains("multipathtcp=") => g.clone(),
            Some((g, _)) if !g.is_empty() => format!("{g},multipathtcp=1"),
            _ => "multipathtcp=1".to_string(),
        };
        lines.push(("GODEBUG".into(), godebug));
    }
    lines.extend(vars.iter().cloned());

    let mut text = format!(
        "{MARKER} the sockwrap policy for {unit} (sockwrap {ver}).\n\
         # Do not edit: run `sockwrap enable {unit} ...` again, or `sockwrap disable {unit}`.\n\
         # The unit's own Environment= settings stay in force; LD_PRELOAD keeps what the unit had",
        unit = t.unit,
        ver = env!("CARGO_PKG_VERSION")
    );
    match existing {
        Some((v, from)) => text.push_str(&format!("\n# ({v}, from {}).\n", t.shown(from))),
        None => text.push_str(".\n"),
    }
    if let Some(src) = &source {
        text.push_str(&format!(
            "# The policy is a copy of {0}, taken at enable time: edits of {0} need another\n\
             # `sockwrap enable`.\n{SOURCE_TAG} {0}\n",
            src.display()
        ));
    }
    text.push_str("[Service]\n");
    for (k, v) in &lines {
        text.push_str(&format!("Environment={}\n", quote_assignment(k, v)));
    }

    // Drop-ins that sort after ours and set LD_PRELOAD win over it.
    for later in unitfile::drop_ins(&t.root, &t.unit) {
        let name = later
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.as_str() > DROP_IN
            && unitfile::compose(std::slice::from_ref(&later))
                .vars
                .contains_key("LD_PRELOAD")
        {
            eprintln!(
                "sockwrap: warning: {} sets LD_PRELOAD and is read after {DROP_IN}: it overrides sockwrap's; \
                 add {} to it",
                later.display(),
                lib.display()
            );
        }
    }
    if lib.to_string_lossy().contains("/target/") {
        eprintln!(
            "sockwrap: note: the drop-in points at {} in a build tree; `make install` or the .deb \
             give a path that stays (/usr/lib/sockwrap/libsockwrap.so)",
            lib.display()
        );
    }

    if dry {
        println!("# would write {}:", ours.display());
        print!("{text}");
        if let Some(src) = &source {
            println!(
                "# would copy {} to {}",
                src.display(),
                t.at(&t.policy_name()).display()
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(p) = &policy_text {
        write_atomic(&t.at(&t.policy_name()), p, None)?;
    } else if t.at(&t.policy_name()).exists() {
        // Enabled before with -c, now without: the old copy would be stale.
        let _ = std::fs::remove_file(t.at(&t.policy_name()));
    }
    let earlier = std::fs::read_to_string(&ours).ok();
    write_atomic(&ours, text.as_bytes(), None)?;
    println!("wrote {}", ours.display());
    // Enabled before with --kernel: its pins would only hold kernel memory now.
    if let Some(dir) = earlier.as_deref().and_then(pins_of) {
        remove_pins(&t, &dir)?;
        remove_boot_unit(&t)?;
    }
    finish_enable(&t, source.as_deref())
}

fn ours_or_refuse(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) if text.starts_with(MARKER) => Ok(Some(text)),
        Ok(_) => Err(Error::setup(format_args!(
            "{}: not written by `sockwrap enable` (no `{MARKER}` first line); left alone",
            path.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::setup(format_args!("{}: {e}", path.display()))),
    }
}

pub fn disable(m: &ArgMatches) -> Result<ExitCode> {
    let t = Target::from(m)?;
    let path = t.at(&t.drop_in_name());
    if ours_or_refuse(&path)?.is_none() {
        println!("{}: not enabled (no {})", t.unit, path.display());
        return Ok(ExitCode::SUCCESS);
    }
    let text = ours_or_refuse(&path)?.unwrap_or_default();
    let io = |p: &Path, e: std::io::Error| Error::setup(format_args!("{}: {e}", p.display()));
    std::fs::remove_file(&path).map_err(|e| io(&path, e))?;
    println!("removed {}", path.display());
    // After the drop-in: a unit started in between never names missing pins. A running
    // unit keeps the programs systemd attached until it is restarted.
    if let Some(dir) = pins_of(&text) {
        remove_pins(&t, &dir)?;
        remove_boot_unit(&t)?;
    }
    let policy = t.at(&t.policy_name());
    match std::fs::remove_file(&policy) {
        Ok(()) => println!("removed {}", policy.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(&policy, e)),
    }
    // Directories we may have made, only when nothing else is in them.
    for d in [
        path.parent().map(Path::to_path_buf),
        policy.parent().map(Path::to_path_buf),
        policy
            .parent()
            .and_then(Path::parent)
            .map(Path::to_path_buf),
    ]
    .into_iter()
    .flatten()
    {
        let _ = std::fs::remove_dir(d);
    }
    t.reload()?;
    println!(
        "restart the service to apply it: systemctl restart {}",
        t.unit
    );
    Ok(ExitCode::SUCCESS)
}

pub fn status(m: &ArgMatches) -> Result<ExitCode> {
    let t = Target::from(m)?;
    let path = t.at(&t.drop_in_name());
    let mut ok = true;
    let unit_file = unitfile::find_unit(&t.root, &t.unit);
    match &unit_file {
        Some(u) => println!("{}: unit file {}", t.unit, u.display()),
        None => {
            ok = false;
            println!("{}: no unit file found", t.unit);
        }
    }
    let Some(text) = ours_or_refuse(&path)? else {
        println!(
            "  sockwrap: not enabled (no {}); enable it with: sockwrap enable {} ...",
            path.display(),
            t.unit
        );
        return Err(Error::Findings);
    };
    println!("  drop-in: {}", path.display());
    if let Some(dir) = pins_of(&text) {
        kernel_status(&t, &text, &dir, &mut ok);
        return if ok {
            Ok(ExitCode::SUCCESS)
        } else {
            Err(Error::Findings)
        };
    }
    let mine = unitfile::compose(std::slice::from_ref(&path));
    let lib = mine
        .vars
        .get("LD_PRELOAD")
        .and_then(|(v, _)| v.split([':', ' ']).next())
        .unwrap_or("")
        .to_string();
    if t.at(&lib).is_file() {
        println!("  library: {lib}");
    } else if t.root != Path::new("/") && Path::new(&lib).is_file() {
        println!(
            "  library: {lib} (on this machine; not under {})",
            t.root.display()
        );
    } else {
        ok = false;
        println!("  library: {lib} is MISSING: install sockwrap (make install, or the .deb), then enable again");
    }
    for (k, (v, _)) in &mine.vars {
        if k.starts_with("SOCKWRAP_") || k == "GODEBUG" {
            println!("  {k}={v}");
        }
    }
    // What the service gets with every file read: does a later file take LD_PRELOAD away?
    let mut files: Vec<PathBuf> = unit_file.into_iter().collect();
    files.extend(unitfile::drop_ins(&t.root, &t.unit));
    let all = unitfile::compose(&files);
    match all.vars.get("LD_PRELOAD") {
        Some((v, from)) if v.split([':', ' ']).any(|e| e == lib) => {
            println!("  LD_PRELOAD in force: {v}");
            if *from != path {
                println!("    (set last by {})", from.display());
            }
        }
        Some((v, from)) => {
            ok = false;
            println!(
                "  LD_PRELOAD is OVERRIDDEN by {} ({v}): add {lib} there",
                from.display()
            );
        }
        None => {
            ok = false;
            println!("  LD_PRELOAD is reset by a later Environment= line: sockwrap is not loaded");
        }
    }
    if let Some((cfg, _)) = mine.vars.get("SOCKWRAP_CONFIG") {
        policy_copy_status(&t, &t.at(cfg), &text, &mut ok);
    }
    if t.is_live_system() {
        running(&t.unit, &lib, &mut ok);
    }
    if ok {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(Error::Findings)
    }
}

/// The policy copy `enable -c` made, and whether the file it came from changed since.
fn policy_copy_status(t: &Target, copy: &Path, text: &str, ok: &mut bool) {
    {
        match std::fs::read_to_string(copy) {
            Ok(body) => {
                match sockwrap_policy::parse_config(&body, &copy.display().to_string()) {
                    Ok(c) => println!("  policy: {} ({} rule(s))", copy.display(), c.rules.len()),
                    Err(errs) => {
                        *ok = false;
                        println!("  policy: {} has errors:", copy.display());
                        for e in errs {
                            println!("    {e}");
                        }
                    }
                }
                let source = text
                    .lines()
                    .find_map(|l| l.strip_prefix(SOURCE_TAG))
                    .map(|s| s.trim().to_string());
                if let Some(src) = source {
                    match std::fs::read_to_string(&src) {
                        Ok(orig) if orig == body => println!("    same as {src}"),
                        Ok(_) => println!(
                            "    {src} has changed since: `sockwrap enable {} -c {src}` takes the new version",
                            t.unit
                        ),
                        Err(_) => println!("    copied from {src}, which is gone"),
                    }
                }
            }
            Err(e) => {
                *ok = false;
                println!(
                    "  policy: {} cannot be read ({e}): run sockwrap enable again",
                    copy.display()
                );
            }
        }
    }
}

/// On a live system: is the running main process of the unit using the library?
fn running(unit: &str, lib: &str, ok: &mut bool) {
    let out = std::process::Command::new("systemctl")
        .args(["show", "-p", "MainPID", "--value", unit])
        .output();
    let pid = out
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<u32>()
                .ok()
        })
        .unwrap_or(0);
    if pid == 0 {
        println!("  not running");
        return;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/maps")) {
        Ok(maps) if maps.contains(lib) => println!("  running: pid {pid} has {lib} loaded"),
        Ok(_) => {
            *ok = false;
            println!(
                "  running: pid {pid} does NOT have the library loaded: systemctl restart {unit}"
            );
        }
        Err(e) => println!("  running: pid {pid} ({e})"),
    }
}

/// The pin directory a `--kernel` drop-in names, if it is one.
fn pins_of(text: &str) -> Option<PathBuf> {
    text.lines()
        .find_map(|l| l.strip_prefix(PINS_TAG))
        .map(|d| PathBuf::from(d.trim()))
}

/// Removes the pins of an earlier `enable --kernel` (on the machine itself; under `--root`
/// nothing was pinned).
fn remove_pins(t: &Target, dir: &Path) -> Result<()> {
    if t.root != Path::new("/") {
        println!(
            "not unpinned: the pins live in the running kernel's BPF filesystem, not under --root; `sudo sockwrap disable {}` on the machine that runs the unit removes {}",
            t.unit,
            dir.display()
        );
        return Ok(());
    }
    if !dir.exists() {
        return Ok(());
    }
    let removed = sockwrap_kernel::programs::unpin(dir)
        .map_err(|e| Error::setup(format_args!("removing the pins: {e}")))?;
    println!("removed {} pins in {}", removed.len(), dir.display());
    Ok(())
}

/// Removes the unit that pins a `--kernel` unit's programs at boot, if `enable` wrote it.
fn remove_boot_unit(t: &Target) -> Result<()> {
    let path = t.at(&t.boot_unit_path());
    if ours_or_refuse(&path)?.is_some() {
        std::fs::remove_file(&path)
            .map_err(|e| Error::setup(format_args!("{}: {e}", path.display())))?;
        println!("removed {}", path.display());
    }
    Ok(())
}

/// Why systemd would not attach the programs on this machine, if it would not: systemd
/// attaches `BPFProgram=` programs only when it runs with the unified cgroup v2 hierarchy at
/// /sys/fs/cgroup (measured with systemd 252: in hybrid mode, cgroup v2 at
/// /sys/fs/cgroup/unified, the unit ran without them).
fn not_unified() -> Option<String> {
    const CGROUP2_SUPER_MAGIC: i64 = 0x63677270;
    let c = std::ffi::CString::new("/sys/fs/cgroup").ok()?;
    // SAFETY: statfs writes one struct statfs into `st`.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a NUL-terminated path, st a valid out pointer.
    let r = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    (r != 0 || st.f_type as i64 != CGROUP2_SUPER_MAGIC).then(|| {
        "/sys/fs/cgroup is not the unified cgroup v2 hierarchy (hybrid or v1): systemd attaches BPFProgram= programs only in unified mode (systemd.unified_cgroup_hierarchy=1), so the unit would run without them".to_string()
    })
}

/// `%` starts a specifier in unit files.
fn unit_escape(p: &Path) -> String {
    p.display().to_string().replace('%', "%%")
}

fn enable_kernel(
    t: &Target,
    policy: &sockwrap_policy::Policy,
    vars: &[(String, String)],
    source: Option<&Path>,
    policy_text: Option<&[u8]>,
    dry: bool,
) -> Result<ExitCode> {
    const WHAT: &str = "enable --kernel";
    let refusing = format!("nothing written for {}", t.unit);
    let tables = crate::cmd::kernel::tables_for(policy, WHAT, &refusing, false)?;
    // systemd's BPFProgram= knows no getpeername4/6 attach type (252: ingress, egress,
    // sock_create, sock_ops, device, bind4/6, connect4/6, post_bind4/6, sendmsg4/6,
    // sysctl, recvmsg4/6, getsockopt, setsockopt), so a redirected program would see the
    // target as its peer: refused rather than changed.
    let redirects: Vec<&str> = policy
        .rules()
        .iter()
        .filter(|r| r.actions.redirect.is_some())
        .map(|r| r.name.as_str())
        .collect();
    if !redirects.is_empty() {
        for name in &redirects {
            eprintln!(
                "sockwrap: {WHAT} cannot set rule `{name}`: redirect: systemd's BPFProgram= has no getpeername4/6 attach type, so the program's getpeername would answer the target, not the address it connected to; use sudo sockwrap run --kernel"
            );
        }
        return Err(Error::usage(format_args!(
            "{WHAT}: {refusing}: {} redirect rule{} systemd cannot attach in full",
            redirects.len(),
            if redirects.len() == 1 { "" } else { "s" }
        )));
    }
    let dir = t.pin_dir();
    let pins = pins_for(&tables, &dir);
    let boot = t.boot_unit_name();
    let live = t.root == Path::new("/");
    // MPTCP: the conversion program is loaded now (the probe: refused by name before
    // anything is written where the kernel cannot convert), pinned after the programs.
    let conversion = if live && !dry {
        crate::cmd::kernel::mptcp_for(policy, WHAT, &refusing, false, debug_env())?
    } else {
        None
    };
    let mptcp = conversion.is_some()
        || ((dry || !live) && sockwrap_kernel::mptcp::Selection::of(policy).is_some());

    let mut text = format!(
        "{MARKER} the sockwrap policy for {unit} (sockwrap {ver}), carried out by the kernel backend.\n\
         # Do not edit: run `sockwrap enable {unit} --kernel ...` again, or `sockwrap disable {unit}`.\n\
         # systemd attaches the BPF programs pinned in {dir} to the unit's cgroup when it starts\n\
         # the unit: every socket its processes make gets the policy, static and Go programs too.\n\
         # The pins live in memory: after a reboot, {boot}\n\
         # pins them again before the unit starts (it does nothing while they are there).\n\
         {PINS_TAG} {dir}\n",
        unit = t.unit,
        ver = env!("CARGO_PKG_VERSION"),
        dir = dir.display()
    );
    if let Some(src) = source {
        text.push_str(&format!(
            "# The policy is a copy of {0}, taken at enable time: edits of {0} need another\n\
             # `sockwrap enable`.\n{SOURCE_TAG} {0}\n",
            src.display()
        ));
    }
    text.push_str(&format!("[Unit]\nWants={boot}\nAfter={boot}\n"));
    if policy.on_error == sockwrap_policy::OnError::Fail {
        // As `run --strict` refuses to start a program it cannot give the policy: the unit
        // does not start without its programs.
        for (_, path) in &pins {
            text.push_str(&format!("AssertPathExists={}\n", unit_escape(path)));
        }
    }
    text.push_str("[Service]\n");
    for (kind, path) in &pins {
        text.push_str(&format!("BPFProgram={kind}:{}\n", unit_escape(path)));
    }
    if mptcp {
        text.push_str(&mptcp_lines(t, &dir, policy)?);
    }
    let boot_text = boot_unit_text(t, &dir, vars)?;

    let ours = t.at(&t.drop_in_name());
    let boot_path = t.at(&t.boot_unit_path());
    if dry {
        println!("# would write {}:", ours.display());
        print!("{text}");
        println!("# would write {}:", boot_path.display());
        print!("{boot_text}");
        println!(
            "# would pin {} programs and the maps they use in {}{}:",
            pins.len(),
            dir.display(),
            if live {
                ""
            } else {
                " (on the machine itself: not under --root)"
            }
        );
        for (kind, path) in &pins {
            println!("#   {kind}: {}", path.display());
        }
        if let Some(src) = source {
            println!(
                "# would copy {} to {}",
                src.display(),
                t.at(&t.policy_name()).display()
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    if live {
        let earlier = std::fs::read_to_string(&ours).ok();
        if dir.exists() && earlier.as_deref().and_then(pins_of).as_deref() != Some(dir.as_path()) {
            root_and_bpffs(WHAT, &refusing)?;
            // Another unit whose name differs only in `.` and `_` has pinned there.
            return Err(Error::setup(format_args!(
                "{WHAT}: {} holds pins that {} does not name; {refusing}",
                dir.display(),
                ours.display()
            )));
        }
        pin_now(WHAT, &refusing, &tables, &dir)?;
        if let Some(c) = conversion {
            if let Err(e) = pin_mptcp(WHAT, &refusing, c, &dir) {
                let _ = sockwrap_kernel::programs::unpin(&dir);
                return Err(e);
            }
        }
    } else {
        println!(
            "not pinned: --root {}: programs are pinned in the running kernel's BPF filesystem, not in files; \
             on the machine that runs the unit, `sudo sockwrap enable {} --kernel ...` pins \
             (or {boot}, when the unit starts):",
            t.root.display(),
            t.unit
        );
        for (kind, path) in &pins {
            println!("  {kind}: {}", path.display());
        }
    }
    let written = (|| -> Result<()> {
        if let Some(p) = policy_text {
            write_atomic(&t.at(&t.policy_name()), p, None)?;
        } else if t.at(&t.policy_name()).exists() {
            let _ = std::fs::remove_file(t.at(&t.policy_name()));
        }
        write_atomic(&boot_path, boot_text.as_bytes(), None)?;
        write_atomic(&ours, text.as_bytes(), None)
    })();
    if let Err(e) = written {
        if live {
            let _ = sockwrap_kernel::programs::unpin(&dir);
        }
        return Err(e);
    }
    println!("wrote {}", ours.display());
    println!(
        "wrote {} (pins the programs again before {} starts, after a reboot)",
        boot_path.display(),
        t.unit
    );
    finish_enable(t, source)
}

/// The drop-in tag of a unit whose sockets the pinned MPTCP conversion converts.
const MPTCP_TAG: &str = "# sockwrap-kernel-mptcp:";

fn debug_env() -> bool {
    std::env::var("SOCKWRAP_LOG").is_ok_and(|l| l == "debug")
}

/// The drop-in lines of the MPTCP conversion: the conversion is global (an fmod_ret program
/// on update_socket_protocol, pinned as a link in `dir`), and converts only in the cgroup its
/// map holds; systemd makes the unit's cgroup anew at each start, so the unit's first
/// ExecStartPre= (running in that cgroup, as root: `+`) puts it there. Under `strict` a
/// unit whose cgroup cannot be put there does not start (no `-`).
fn mptcp_lines(t: &Target, dir: &Path, policy: &sockwrap_policy::Policy) -> Result<String> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::setup(format_args!("enable --kernel: this program's path: {e}")))?;
    let strict = policy.on_error == sockwrap_policy::OnError::Fail;
    Ok(format!(
        "{MPTCP_TAG} {}\n\
         # MPTCP: the conversion pinned there converts the TCP sockets made in the unit's cgroup,\n\
         # which this command, run in it at each start, names to it.\n\
         ExecStartPre={}+{} repin {} --mptcp-target\n",
        dir.join(sockwrap_kernel::mptcp::LINK_PIN).display(),
        if strict { "" } else { "-" },
        unit_escape(&exe),
        t.unit.replace('%', "%%")
    ))
}

/// Attaches the loaded conversion and pins it (the link, and its maps) in `dir`.
fn pin_mptcp(
    what: &str,
    refusing: &str,
    c: sockwrap_kernel::mptcp::Conversion,
    dir: &Path,
) -> Result<()> {
    let c = crate::cmd::kernel::attach_mptcp(c, what, refusing, debug_env())?;
    let made = c
        .pin(dir)
        .map_err(|e| Error::setup(format_args!("{what}: {e}; {refusing}")))?;
    println!(
        "pinned the MPTCP conversion ({} files) in {}",
        made.len(),
        dir.display()
    );
    Ok(())
}

/// `repin UNIT --mptcp-target`, the unit's ExecStartPre=: aims UNIT's pinned MPTCP
/// conversion at this process's own cgroup (the unit's, made anew at each start).
fn mptcp_target(t: &Target) -> Result<ExitCode> {
    const WHAT: &str = "repin --mptcp-target";
    let drop_in = t.at(&t.drop_in_name());
    let dir = ours_or_refuse(&drop_in)?
        .as_deref()
        .and_then(pins_of)
        .ok_or_else(|| {
            Error::setup(format_args!(
                "{WHAT}: {}: not enabled with --kernel (no {})",
                t.unit,
                drop_in.display()
            ))
        })?;
    let own = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("0::").map(|p| p.to_string()))
        })
        .ok_or_else(|| Error::setup(format_args!("{WHAT}: this process is in no cgroup v2")))?;
    let mount = sockwrap_kernel::cgroup::mount_point()
        .map_err(|e| Error::setup(format_args!("{WHAT}: {e}")))?;
    let path = mount.join(own.trim_start_matches('/'));
    let cg = std::fs::File::open(&path)
        .map_err(|e| Error::setup(format_args!("{WHAT}: {}: {e}", path.display())))?;
    sockwrap_kernel::mptcp::target_pinned(&dir, &cg).map_err(|e| {
        Error::setup(format_args!(
            "{WHAT}: {e} (the pins are gone: systemctl start {})",
            t.boot_unit_name()
        ))
    })?;
    println!(
        "{}: sockets made in {} are made MPTCP",
        t.unit,
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// (attach type, pin path) of every program `tables` needs, pinned under `dir`.
fn pins_for(tables: &sockwrap_kernel::Tables, dir: &Path) -> Vec<(&'static str, PathBuf)> {
    sockwrap_kernel::programs::needed(tables)
        .into_iter()
        .map(|(_, kind)| (kind, dir.join(kind)))
        .collect()
}

/// The unit that pins a `--kernel` unit's programs again at boot: the pins live in memory,
/// and systemd attaches `BPFProgram=` programs when it makes the unit's cgroup, before the
/// unit's first `ExecStartPre=` (systemd 252 `cgroup_context_apply` → `bpf_foreign_install`,
/// from `unit_prepare_exec`), so a command of the unit itself would come too late. It holds
/// the policy as the `SOCKWRAP_*` variables `enable` was given (a `-c` file as the copy
/// enable keeps), and runs `sockwrap repin UNIT`, which loads them and pins only when a pin
/// is missing. The unit's drop-in pulls it in (`Wants=`, `After=`).
fn boot_unit_text(t: &Target, dir: &Path, vars: &[(String, String)]) -> Result<String> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::setup(format_args!("enable --kernel: this program's path: {e}")))?;
    if exe.to_string_lossy().contains("/target/") {
        eprintln!(
            "sockwrap: note: {} runs {} in a build tree at boot; `make install` or the .deb give a path that stays (/usr/bin/sockwrap)",
            t.boot_unit_name(),
            exe.display()
        );
    }
    let mut text = format!(
        "{MARKER} pins the BPF programs of {unit} again before it starts (sockwrap {ver}).\n\
         # Do not edit: run `sockwrap enable {unit} --kernel ...` again, or `sockwrap disable {unit}`.\n\
         # The pins in {dir} live in memory and are gone after a reboot;\n\
         # systemd attaches them (BPFProgram=) when it makes the cgroup of {unit}: after\n\
         # this unit, before any command of {unit}. `sockwrap repin` loads the policy below\n\
         # and pins the programs, only if a pin is missing.\n\
         [Unit]\n\
         Description=sockwrap: pin the BPF programs of {unit}\n\
         DefaultDependencies=no\n\
         Before={unit}\n\
         [Service]\n\
         Type=oneshot\n",
        unit = t.unit,
        ver = env!("CARGO_PKG_VERSION"),
        dir = dir.display()
    );
    for (k, v) in vars
        .iter()
        .filter(|(k, _)| sockwrap_policy::env::is_policy_var(k))
    {
        text.push_str(&format!("Environment={}\n", quote_assignment(k, v)));
    }
    text.push_str(&format!(
        "ExecStart={} repin {}\n",
        unit_escape(&exe),
        t.unit.replace('%', "%%")
    ));
    Ok(text)
}

/// Only root may pin, and only in a BPF filesystem at /sys/fs/bpf (also for `attach
/// --cgroup/--container/--pod`, which pins its links there).
pub(crate) fn root_and_bpffs(what: &str, refusing: &str) -> Result<()> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(Error::setup(format_args!(
            "{what}: only root may load and pin BPF programs; {refusing}"
        )));
    }
    if !sockwrap_kernel::programs::is_bpffs(Path::new(BPFFS)) {
        return Err(Error::setup(format_args!(
            "{what}: {BPFFS} is not a BPF filesystem (systemd mounts one there at boot; without systemd: mount -t bpf bpf {BPFFS}); {refusing}"
        )));
    }
    Ok(())
}

/// Loads the programs with `tables` and pins them in `dir`, replacing what is there.
fn pin_now(what: &str, refusing: &str, tables: &sockwrap_kernel::Tables, dir: &Path) -> Result<()> {
    root_and_bpffs(what, refusing)?;
    if dir.exists() {
        let removed = sockwrap_kernel::programs::unpin(dir)
            .map_err(|e| Error::setup(format_args!("{what}: removing the earlier pins: {e}")))?;
        println!(
            "removed {} earlier pins in {}",
            removed.len(),
            dir.display()
        );
    }
    if let Some(why) = not_unified() {
        eprintln!("sockwrap: warning: {what}: {why}");
    }
    let pinned = sockwrap_kernel::programs::pin(tables, dir).map_err(|e| match e {
        sockwrap_kernel::programs::Failed::Load(_) => super::kernel::attach_failure(
            what,
            refusing,
            e,
            std::env::var("SOCKWRAP_LOG").is_ok_and(|l| l == "debug"),
        ),
        sockwrap_kernel::programs::Failed::Other(e) => {
            Error::setup(format_args!("{what}: {e}; {refusing}"))
        }
    })?;
    println!(
        "pinned {} programs and {} maps in {}",
        pinned.programs.len(),
        pinned.maps.len(),
        dir.display()
    );
    Ok(())
}

/// `sockwrap repin UNIT`, run by the unit `enable --kernel` writes (see [`boot_unit_text`]):
/// pins UNIT's programs again from the policy in this process's `SOCKWRAP_*` variables,
/// unless every pin the drop-in names is there. Refuses when the policy needs other
/// programs than the drop-in names.
pub fn repin(m: &ArgMatches) -> Result<ExitCode> {
    const WHAT: &str = "repin";
    let unit = m
        .get_one::<String>("unit")
        .map(String::as_str)
        .unwrap_or("");
    let t = Target {
        root: PathBuf::from("/"),
        unit: unitfile::unit_name(unit).map_err(Error::usage)?,
    };
    if m.get_flag("mptcp-target") {
        return mptcp_target(&t);
    }
    let refusing = format!("nothing pinned for {}", t.unit);
    let drop_in = t.at(&t.drop_in_name());
    let text = ours_or_refuse(&drop_in)?.ok_or_else(|| {
        Error::setup(format_args!(
            "{WHAT}: {}: not enabled (no {}); {refusing}",
            t.unit,
            drop_in.display()
        ))
    })?;
    let dir = pins_of(&text).ok_or_else(|| {
        Error::setup(format_args!(
            "{WHAT}: {} is not an `enable --kernel` drop-in (no `{PINS_TAG}` line); {refusing}",
            drop_in.display()
        ))
    })?;
    let named = bpf_programs(&text);
    let mptcp_pin = text
        .lines()
        .find_map(|l| l.strip_prefix(MPTCP_TAG))
        .map(|p| PathBuf::from(p.trim()));
    if (!named.is_empty() || mptcp_pin.is_some())
        && named
            .iter()
            .all(|(_, p)| sockwrap_kernel::programs::is_bpffs(p))
        && mptcp_pin
            .as_deref()
            .is_none_or(sockwrap_kernel::programs::is_bpffs)
    {
        println!(
            "{}: the {} pins in {} are there",
            t.unit,
            named.len(),
            dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let vars: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| sockwrap_policy::env::is_policy_var(k))
        .collect();
    if vars.is_empty() {
        return Err(Error::usage(format_args!(
            "{WHAT}: no policy in the environment (SOCKWRAP_* variables): {} holds it, start that (systemctl start {}); {refusing}",
            t.boot_unit_path(),
            t.boot_unit_name()
        )));
    }
    let policy = crate::load::policy_or_refuse(
        crate::load::load_vars(&vars),
        format_args!("{WHAT}: the policy has errors; {refusing}"),
    )?;
    let tables = crate::cmd::kernel::tables_for(&policy, WHAT, &refusing, false)?;
    let want: Vec<(String, PathBuf)> = pins_for(&tables, &dir)
        .into_iter()
        .map(|(k, p)| (k.to_string(), p))
        .collect();
    if want != named {
        let kinds = |v: &[(String, PathBuf)]| {
            v.iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        };
        return Err(Error::setup(format_args!(
            "{WHAT}: {} names the programs {}, the policy needs {}: run `sockwrap enable {} --kernel ...` again; {refusing}",
            drop_in.display(),
            kinds(&named),
            kinds(&want),
            t.unit
        )));
    }
    let conversion = match mptcp_pin {
        Some(_) => crate::cmd::kernel::mptcp_for(&policy, WHAT, &refusing, false, debug_env())?,
        None => None,
    };
    pin_now(WHAT, &refusing, &tables, &dir)?;
    if let Some(c) = conversion {
        if let Err(e) = pin_mptcp(WHAT, &refusing, c, &dir) {
            let _ = sockwrap_kernel::programs::unpin(&dir);
            return Err(e);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The `BPFProgram=` lines of a drop-in, as (attach type, path).
fn bpf_programs(text: &str) -> Vec<(String, PathBuf)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("BPFProgram="))
        .filter_map(|v| v.split_once(':'))
        .map(|(k, p)| (k.to_string(), PathBuf::from(p.replace("%%", "%"))))
        .collect()
}

/// The end of both `enable` forms: say where the policy was copied, reload, and say how to
/// apply it.
fn finish_enable(t: &Target, source: Option<&Path>) -> Result<ExitCode> {
    if let Some(src) = source {
        println!(
            "copied {} to {} (edits of the original need `sockwrap enable` again)",
            src.display(),
            t.at(&t.policy_name()).display()
        );
    }
    t.reload()?;
    println!(
        "restart the service to apply it: systemctl restart {}",
        t.unit
    );
    Ok(ExitCode::SUCCESS)
}

/// `status` of a `--kernel` drop-in: its BPFProgram= lines, whether each pin is there, and
/// what the pinned programs counted.
fn kernel_status(t: &Target, text: &str, dir: &Path, ok: &mut bool) {
    println!(
        "  kernel backend: BPF programs pinned in {}, attached by systemd to the unit's cgroup (BPFProgram=)",
        dir.display()
    );
    let programs = bpf_programs(text);
    let live = t.root == Path::new("/");
    let boot = t.at(&t.boot_unit_path());
    if boot.is_file() {
        println!(
            "  at boot: {} pins them again before the unit starts",
            boot.display()
        );
    } else {
        *ok = false;
        println!(
            "  at boot: {} is MISSING: after a reboot the unit starts without its programs; run `sudo sockwrap enable {} --kernel ...` again",
            boot.display(),
            t.unit
        );
    }
    let mut missing = 0;
    for (kind, p) in &programs {
        if !live {
            println!("    {kind}: {}", p.display());
        } else if sockwrap_kernel::programs::is_bpffs(p) {
            println!("    {kind}: {} (pinned)", p.display());
        } else {
            missing += 1;
            println!("    {kind}: {} is MISSING", p.display());
        }
    }
    if let Some(p) = text
        .lines()
        .find_map(|l| l.strip_prefix(MPTCP_TAG))
        .map(|p| PathBuf::from(p.trim()))
    {
        if !live {
            println!("    MPTCP conversion: {}", p.display());
        } else if sockwrap_kernel::programs::is_bpffs(&p) {
            println!("    MPTCP conversion: {} (pinned)", p.display());
        } else {
            missing += 1;
            println!("    MPTCP conversion: {} is MISSING", p.display());
        }
    }
    let hybrid = if live { not_unified() } else { None };
    if !live {
        println!(
            "  pins: not checked under --root (they live in the running kernel's BPF filesystem)"
        );
    } else if missing > 0 {
        *ok = false;
        println!(
            "  {missing} pin(s) MISSING (pins do not survive a reboot; {} pins them again when {} next starts): systemctl start {}, or run `sudo sockwrap enable {} --kernel ...` again, then systemctl restart {}",
            t.boot_unit_name(),
            t.unit,
            t.boot_unit_name(),
            t.unit,
            t.unit
        );
    } else if let Some(c) = sockwrap_kernel::programs::pinned_counters(dir) {
        let n = |i: u32| c.get(i as usize).copied().unwrap_or(0);
        let applied: Vec<String> = sockwrap_policy::Stage::ALL
            .iter()
            .map(|s| {
                format!(
                    "{} {}",
                    s.call(),
                    n(sockwrap_kernel::tables::C_APPLIED_BASE + *s as u32)
                )
            })
            .collect();
        println!(
            "  counted since enable: plans applied: {}; setsockopt calls kept from changing a locked option: {}",
            applied.join(", "),
            n(sockwrap_kernel::tables::C_LOCKED)
        );
        for o in sockwrap_policy::catalog::Opt::ALL {
            let k = n(o as u32);
            if k > 0 {
                *ok = false;
                println!(
                    "  {} ({}) was refused by the kernel {k} time{}",
                    o.name(),
                    o.spec().kernel,
                    if k == 1 { "" } else { "s" }
                );
            }
        }
    }
    if let Some(why) = hybrid {
        *ok = false;
        println!("  NOT IN FORCE: {why}");
    }
    let copy = t.at(&t.policy_name());
    if copy.exists() {
        policy_copy_status(t, &copy, text, ok);
    }
}
