//! `sockwrap status UNIT`: whether the drop-in is there and in force, the policy copy
//! against its original, the running service, and for `--kernel` the pins and what the
//! programs counted.

use super::kernel::{bpf_programs, not_unified, MPTCP_TAG};
use super::{ours_or_refuse, pins_of, Target, SOURCE_TAG};
use crate::error::{Error, Result};
use crate::unitfile;
use clap::ArgMatches;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

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
