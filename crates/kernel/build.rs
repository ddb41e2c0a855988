//! Compiles the BPF programs (`src/bpf/sockwrap.bpf.c`), the feature probes
//! (`src/bpf/probes.bpf.c`), the MPTCP conversion (`src/bpf/mptcp.bpf.c`) and the tracing
//! programs of `trace --kernel` (`src/bpf/trace.bpf.c`) with clang into four objects that
//! the loader embeds. Needs clang
//! (`CLANG` names another), the kernel UAPI headers (linux-libc-dev) and libbpf's
//! `bpf_helpers.h` (libbpf-dev); `scripts/setup.sh build` installs them on Debian.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=CLANG");
    // The programs and the headers they include (abi.h, maps.h, ..., trace.h).
    println!("cargo:rerun-if-changed=src/bpf");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    for (src, obj) in [
        ("src/bpf/sockwrap.bpf.c", "sockwrap.bpf.o"),
        ("src/bpf/probes.bpf.c", "probes.bpf.o"),
        ("src/bpf/mptcp.bpf.c", "mptcp.bpf.o"),
        ("src/bpf/trace.bpf.c", "trace.bpf.o"),
    ] {
        compile(src, &out.join(obj));
    }
}

fn compile(src: &str, obj: &Path) {
    let candidates: Vec<String> = match std::env::var("CLANG") {
        Ok(c) => vec![c],
        Err(_) => ["clang", "clang-19", "clang-16", "clang-14"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
    };
    // asm/types.h lives under the multiarch include directory on Debian.
    let multiarch = match std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("aarch64") => "aarch64-linux-gnu",
        _ => "x86_64-linux-gnu",
    };
    let mut tried = Vec::new();
    for clang in &candidates {
        let status = Command::new(clang)
            .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
            .arg(format!("-I/usr/include/{multiarch}"))
            .args(["-c", src, "-o"])
            .arg(obj)
            .status();
        match status {
            Ok(s) if s.success() => return,
            Ok(s) => panic!("{clang} failed to compile {src} ({s})"),
            Err(e) => tried.push(format!("{clang}: {e}")),
        }
    }
    panic!(
        "sockwrap-kernel needs clang to compile its BPF programs (tried {}); on Debian: \
         apt-get install clang libbpf-dev linux-libc-dev (scripts/setup.sh build)",
        tried.join("; ")
    );
}
