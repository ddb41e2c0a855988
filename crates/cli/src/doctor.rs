//! `sockwrap doctor [PROGRAM]`: can sockwrap reach this program, and is MPTCP usable here?
//!
//! For a program: LD_PRELOAD only works on dynamically linked programs that call libc's
//! socket functions and are not setuid/setcap; Go programs make raw system calls. For
//! MPTCP: whether it is enabled, the path manager, and the limits and endpoints that decide
//! whether a connection can use more than one path (the usual "MPTCP works but uses one
//! path" cause), with the command that fixes each.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn find_in_path(prog: &str) -> Option<PathBuf> {
    if prog.contains('/') {
        return Some(PathBuf::from(prog));
    }
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(prog))
        .find(|p| p.is_file())
}

fn has_pt_interp(bytes: &[u8]) -> Option<bool> {
    // ELF64 little-endian only (the machines we build for); None for anything else.
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 || bytes[5] != 1 {
        return None;
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(bytes[32..40].try_into().ok()?) as usize;
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    for i in 0..phnum {
        let off = phoff + i * phentsize;
        let ty = u32::from_le_bytes(bytes.get(off..off + 4)?.try_into().ok()?);
        if ty == 3 {
            return Some(true); // PT_INTERP
        }
    }
    Some(false)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn program(prog: &str) -> bool {
    let Some(path) = find_in_path(prog) else {
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
    match has_pt_interp(&bytes) {
        None if bytes.starts_with(b"#!") => {
            println!("  script: sockwrap applies to the interpreter it runs (fine)")
        }
        None => println!("  not an ELF64 executable: cannot tell"),
        Some(false) => {
            ok = false;
            println!("  STATIC binary: LD_PRELOAD cannot reach it. Use cgroup BPF (sock_create/sock_ops) or nftables marking instead.");
        }
        Some(true) => println!("  dynamically linked: LD_PRELOAD reaches it"),
    }
    if contains(&bytes, b"\xff Go buildinf:") {
        ok = false;
        println!(
            "  GO program: it makes raw system calls and never calls libc's socket functions;"
        );
        println!("    for MPTCP `sockwrap run --mptcp` sets GODEBUG=multipathtcp=1 (Go 1.21+); for other options use cgroup BPF or nftables.");
    } else if has_pt_interp(&bytes) == Some(true) {
        if contains(&bytes, b"\0connect\0") || contains(&bytes, b"\0socket\0") {
            println!("  imports libc socket functions: sockwrap's hooks will see its sockets");
        } else {
            println!(
                "  imports no socket/connect from libc itself (its libraries may: e.g. libcurl)"
            );
        }
    }
    if let Ok(meta) = std::fs::metadata(&path) {
        if meta.permissions().mode() & 0o6000 != 0 {
            ok = false;
            println!("  SETUID/SETGID: the loader ignores LD_PRELOAD for it (secure mode).");
        }
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

pub fn doctor(prog: Option<&str>) -> ! {
    let mut ok = true;
    if let Some(p) = prog {
        ok &= program(p);
    }
    ok &= mptcp();
    std::process::exit(if ok { 0 } else { 1 })
}
