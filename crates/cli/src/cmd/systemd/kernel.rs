//! `enable UNIT --kernel`: the drop-in that names the pinned programs (`BPFProgram=`), the
//! pins, the unit that pins them again at boot, and `repin` (what that unit runs), with the
//! MPTCP conversion where the policy asks for it.

use super::{
    copy_policy, finish_enable, ours_or_refuse, pins_of, say_would_copy, source_note, Given,
    Target, BPFFS, MARKER, PINS_TAG,
};
use crate::error::{Error, Result};
use crate::files::write_atomic;
use crate::unitfile::{self, quote_assignment};
use clap::ArgMatches;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub(super) fn enable_kernel(t: &Target, g: &Given, dry: bool) -> Result<ExitCode> {
    const WHAT: &str = "enable --kernel";
    let refusing = format!("nothing written for {}", t.unit);
    let policy = &g.policy;
    let tables = crate::cmd::kernel::tables_for(policy, WHAT, &refusing, false)?;
    refuse_redirects(policy, WHAT, &refusing)?;
    let dir = t.pin_dir();
    let pins = pins_for(&tables, &dir);
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
    let text = kernel_drop_in(t, &dir, &pins, g, mptcp)?;
    let boot_text = boot_unit_text(t, &dir, &g.vars)?;
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
        say_would_copy(t, g.source.as_deref());
        return Ok(ExitCode::SUCCESS);
    }
    if live {
        refuse_foreign_pins(WHAT, &refusing, &dir, &ours)?;
        pin_with_conversion(WHAT, &refusing, &tables, conversion, &dir)?;
    } else {
        println!(
            "not pinned: --root {}: programs are pinned in the running kernel's BPF filesystem, not in files; \
             on the machine that runs the unit, `sudo sockwrap enable {} --kernel ...` pins \
             (or {}, when the unit starts):",
            t.root.display(),
            t.unit,
            t.boot_unit_name()
        );
        for (kind, path) in &pins {
            println!("  {kind}: {}", path.display());
        }
    }
    let written = copy_policy(t, g.policy_text.as_deref())
        .and_then(|()| write_atomic(&boot_path, boot_text.as_bytes(), None))
        .and_then(|()| write_atomic(&ours, text.as_bytes(), None));
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
    finish_enable(t, g.source.as_deref())
}

/// systemd's BPFProgram= knows no getpeername4/6 attach type (252: ingress, egress,
/// sock_create, sock_ops, device, bind4/6, connect4/6, post_bind4/6, sendmsg4/6, sysctl,
/// recvmsg4/6, getsockopt, setsockopt), so a redirected program would see the target as its
/// peer: refused rather than changed.
fn refuse_redirects(policy: &sockwrap_policy::Policy, what: &str, refusing: &str) -> Result<()> {
    let redirects: Vec<&str> = policy
        .rules()
        .iter()
        .filter(|r| r.actions.redirect.is_some())
        .map(|r| r.name.as_str())
        .collect();
    if redirects.is_empty() {
        return Ok(());
    }
    for name in &redirects {
        eprintln!(
            "sockwrap: {what} cannot set rule `{name}`: redirect: systemd's BPFProgram= has no getpeername4/6 attach type, so the program's getpeername would answer the target, not the address it connected to; use sudo sockwrap run --kernel"
        );
    }
    Err(Error::usage(format_args!(
        "{what}: {refusing}: {} redirect rule{} systemd cannot attach in full",
        redirects.len(),
        if redirects.len() == 1 { "" } else { "s" }
    )))
}

/// The `--kernel` drop-in: the marker and the pin directory, the boot unit it wants, the
/// `BPFProgram=` lines (with `AssertPathExists=` under `strict`), and the MPTCP lines.
fn kernel_drop_in(
    t: &Target,
    dir: &Path,
    pins: &[(&'static str, PathBuf)],
    g: &Given,
    mptcp: bool,
) -> Result<String> {
    let boot = t.boot_unit_name();
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
    if let Some(src) = &g.source {
        text.push_str(&source_note(src));
    }
    text.push_str(&format!("[Unit]\nWants={boot}\nAfter={boot}\n"));
    if g.policy.on_error == sockwrap_policy::OnError::Fail {
        // As `run --strict` refuses to start a program it cannot give the policy: the unit
        // does not start without its programs.
        for (_, path) in pins {
            text.push_str(&format!("AssertPathExists={}\n", unit_escape(path)));
        }
    }
    text.push_str("[Service]\n");
    for (kind, path) in pins {
        text.push_str(&format!("BPFProgram={kind}:{}\n", unit_escape(path)));
    }
    if mptcp {
        text.push_str(&mptcp_lines(t, dir, &g.policy)?);
    }
    Ok(text)
}

/// Refuses to pin where another unit's pins are (a unit name that differs only in `.` and
/// `_` has the same pin directory): the directory is there, and our drop-in does not name it.
fn refuse_foreign_pins(what: &str, refusing: &str, dir: &Path, ours: &Path) -> Result<()> {
    let earlier = std::fs::read_to_string(ours).ok();
    if dir.exists() && earlier.as_deref().and_then(pins_of) != Some(dir.to_path_buf()) {
        root_and_bpffs(what, refusing)?;
        return Err(Error::setup(format_args!(
            "{what}: {} holds pins that {} does not name; {refusing}",
            dir.display(),
            ours.display()
        )));
    }
    Ok(())
}

/// Pins the programs in `dir`, then the MPTCP conversion; a conversion that fails takes
/// the programs' pins away again.
fn pin_with_conversion(
    what: &str,
    refusing: &str,
    tables: &sockwrap_kernel::Tables,
    conversion: Option<sockwrap_kernel::mptcp::Conversion>,
    dir: &Path,
) -> Result<()> {
    pin_now(what, refusing, tables, dir)?;
    if let Some(c) = conversion {
        if let Err(e) = pin_mptcp(what, refusing, c, dir) {
            let _ = sockwrap_kernel::programs::unpin(dir);
            return Err(e);
        }
    }
    Ok(())
}

/// Why systemd would not attach the programs on this machine, if it would not: systemd
/// attaches `BPFProgram=` programs only when it runs with the unified cgroup v2 hierarchy at
/// /sys/fs/cgroup (measured with systemd 252: in hybrid mode, cgroup v2 at
/// /sys/fs/cgroup/unified, the unit ran without them).
pub(super) fn not_unified() -> Option<String> {
    const CGROUP2_SUPER_MAGIC: i64 = 0x63677270;
    // f_type is an i64 here, narrower on some other architectures.
    #[allow(clippy::unnecessary_cast)]
    let f_type = rustix::fs::statfs("/sys/fs/cgroup").map(|st| st.f_type as i64);
    (f_type.ok() != Some(CGROUP2_SUPER_MAGIC)).then(|| {
        "/sys/fs/cgroup is not the unified cgroup v2 hierarchy (hybrid or v1): systemd attaches BPFProgram= programs only in unified mode (systemd.unified_cgroup_hierarchy=1), so the unit would run without them".to_string()
    })
}

/// `%` starts a specifier in unit files.
fn unit_escape(p: &Path) -> String {
    p.display().to_string().replace('%', "%%")
}

/// The drop-in tag of a unit whose sockets the pinned MPTCP conversion converts.
pub(super) const MPTCP_TAG: &str = "# sockwrap-kernel-mptcp:";

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
    if !rustix::process::geteuid().is_root() {
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
        sockwrap_kernel::programs::Failed::Load(_) => crate::cmd::kernel::attach_failure(
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
    pin_with_conversion(WHAT, &refusing, &tables, conversion, &dir)?;
    Ok(ExitCode::SUCCESS)
}

/// The `BPFProgram=` lines of a drop-in, as (attach type, path).
pub(super) fn bpf_programs(text: &str) -> Vec<(String, PathBuf)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("BPFProgram="))
        .filter_map(|v| v.split_once(':'))
        .map(|(k, p)| (k.to_string(), PathBuf::from(p.replace("%%", "%"))))
        .collect()
}
