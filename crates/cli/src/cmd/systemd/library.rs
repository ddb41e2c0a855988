//! `enable UNIT` with the library: the drop-in that preloads libsockwrap.so (ahead of what
//! the unit preloads already) and sets the `SOCKWRAP_*` variables, in named steps.

use super::{
    copy_policy, finish_enable, pins_of, remove_boot_unit, remove_pins, say_would_copy,
    source_note, Given, Target, DROP_IN, MARKER,
};
use crate::error::{Error, Result};
use crate::files::write_atomic;
use crate::launch::{compose_preload, find_library};
use crate::unitfile::{self, quote_assignment, Composed};
use std::path::Path;
use std::process::ExitCode;

pub(super) fn enable_library(
    t: &Target,
    unit_file: &Path,
    g: &Given,
    dry: bool,
) -> Result<ExitCode> {
    let ours = t.at(&t.drop_in_name());
    let have = what_the_unit_has(t, unit_file, &ours)?;
    let lib = find_library()?;
    let text = drop_in_text(t, &lib, &have, g);
    warn_later_drop_ins(t, &lib);
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
        say_would_copy(t, g.source.as_deref());
        return Ok(ExitCode::SUCCESS);
    }
    copy_policy(t, g.policy_text.as_deref())?;
    let earlier = std::fs::read_to_string(&ours).ok();
    write_atomic(&ours, text.as_bytes(), None)?;
    println!("wrote {}", ours.display());
    // Enabled before with --kernel: its pins would only hold kernel memory now.
    if let Some(dir) = earlier.as_deref().and_then(pins_of) {
        remove_pins(t, &dir)?;
        remove_boot_unit(t)?;
    }
    finish_enable(t, g.source.as_deref())
}

/// The unit's environment as systemd composes it from the unit file and its other
/// drop-ins (not `ours`): its own LD_PRELOAD (and GODEBUG) are kept after ours. An
/// `EnvironmentFile=` that sets LD_PRELOAD would override the drop-in: refused.
fn what_the_unit_has(t: &Target, unit_file: &Path, ours: &Path) -> Result<Composed> {
    let mut files = vec![unit_file.to_path_buf()];
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
    Ok(have)
}

/// The `Environment=` pairs of the drop-in: LD_PRELOAD (ours first), GODEBUG when the
/// policy asks for MPTCP (Go programs make raw system calls), then the policy's variables.
fn environment(lib: &Path, have: &Composed, vars: &[(String, String)]) -> Vec<(String, String)> {
    let existing = have.vars.get("LD_PRELOAD");
    let mut lines = vec![(
        "LD_PRELOAD".to_string(),
        compose_preload(lib, existing.map(|(v, _)| v.as_str())),
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
    lines
}

/// The drop-in's text: the marker, what it keeps of the unit, the policy file it copied,
/// and the `[Service]` lines.
fn drop_in_text(t: &Target, lib: &Path, have: &Composed, g: &Given) -> String {
    let mut text = format!(
        "{MARKER} the sockwrap policy for {unit} (sockwrap {ver}).\n\
         # Do not edit: run `sockwrap enable {unit} ...` again, or `sockwrap disable {unit}`.\n\
         # The unit's own Environment= settings stay in force; LD_PRELOAD keeps what the unit had",
        unit = t.unit,
        ver = env!("CARGO_PKG_VERSION")
    );
    match have.vars.get("LD_PRELOAD") {
        Some((v, from)) => text.push_str(&format!("\n# ({v}, from {}).\n", t.shown(from))),
        None => text.push_str(".\n"),
    }
    if let Some(src) = &g.source {
        text.push_str(&source_note(src));
    }
    text.push_str("[Service]\n");
    for (k, v) in &environment(lib, have, &g.vars) {
        text.push_str(&format!("Environment={}\n", quote_assignment(k, v)));
    }
    text
}

/// Drop-ins that sort after ours and set LD_PRELOAD win over it: said, not changed.
fn warn_later_drop_ins(t: &Target, lib: &Path) {
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
}
