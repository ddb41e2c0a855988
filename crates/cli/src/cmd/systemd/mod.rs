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

//!
//! The parts: this module holds the target, `enable`'s first steps (the unit file, the
//! policy given) and `disable`; [`library`] writes the library's drop-in, [`kernel`] the
//! `--kernel` drop-in, its pins and the boot unit (and `repin`), [`status`] is `status`.

use crate::error::{Error, Result};
use crate::files::{root_dir, write_atomic};
use crate::launch::{flag_vars, log_vars};
use crate::unitfile;
use clap::ArgMatches;
use sockwrap_policy::Policy;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod kernel;
mod library;
mod status;

pub use kernel::repin;
pub(crate) use kernel::root_and_bpffs;
pub use status::status;

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

/// What `enable` was given: the `SOCKWRAP_*` variables for the drop-in (`SOCKWRAP_CONFIG`
/// naming the copy), the policy they make, and the `-c` file with its text.
struct Given {
    vars: Vec<(String, String)>,
    policy: Policy,
    source: Option<PathBuf>,
    policy_text: Option<Vec<u8>>,
}

impl Given {
    /// The policy as the flags and the file give it; a broken one is refused before
    /// anything is written.
    fn from(m: &ArgMatches, t: &Target) -> Result<Given> {
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
                std::fs::read(src)
                    .map_err(|e| Error::setup(format_args!("{}: {e}", src.display())))?,
            ),
            None => None,
        };
        for v in vars.iter_mut() {
            if v.0 == "SOCKWRAP_CONFIG" {
                v.1 = t.policy_name();
            }
        }
        Ok(Given {
            vars,
            policy,
            source,
            policy_text,
        })
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
    let given = Given::from(m, &t)?;
    if m.get_flag("kernel") {
        return kernel::enable_kernel(&t, &given, dry);
    }
    library::enable_library(&t, &unit_file, &given, dry)
}

/// The drop-in lines that name the policy file a copy was taken of.
fn source_note(src: &Path) -> String {
    format!(
        "# The policy is a copy of {0}, taken at enable time: edits of {0} need another\n\
         # `sockwrap enable`.\n{SOURCE_TAG} {0}\n",
        src.display()
    )
}

/// `--dry-run`: where the policy file would be copied.
fn say_would_copy(t: &Target, source: Option<&Path>) {
    if let Some(src) = source {
        println!(
            "# would copy {} to {}",
            src.display(),
            t.at(&t.policy_name()).display()
        );
    }
}

/// Writes the copy of the policy file; without one, removes the copy of an earlier
/// `enable -c` (it would be stale).
fn copy_policy(t: &Target, policy_text: Option<&[u8]>) -> Result<()> {
    if let Some(p) = policy_text {
        write_atomic(&t.at(&t.policy_name()), p, None)?;
    } else if t.at(&t.policy_name()).exists() {
        let _ = std::fs::remove_file(t.at(&t.policy_name()));
    }
    Ok(())
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
