//! Link tweaks for libsockwrap.so.
//!
//! * `-z defs`: a .so with an undefined symbol links fine and then fails to load in every
//!   program; refuse it at link time instead.
//! * Static `libgcc_eh.a`: std refers to the unwinder even with nothing to unwind, and
//!   resolving that through `libgcc_s.so.1` costs ~110 µs per exec of every program under
//!   sockwrap (measured, DESIGN.md). Linking the static unwinder ahead of it removes the load.
//!   (The library is no_std and built with panic=abort now, so nothing should refer to the
//!   unwinder; the static copy stays as a guard should a dependency bring a reference.)
//! * `src/thread.c`: the per-thread state (see `sys::Thread`), and `src/lazy.c`: the rarely
//!   called libc functions, bound on first use (see there); compiled with the `cc` crate.
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/thread.c");
    println!("cargo:rerun-if-changed=src/lazy.c");
    cc::Build::new()
        .file("src/thread.c")
        .file("src/lazy.c")
        .opt_level(2)
        .pic(true)
        .warnings(true)
        .compile("sockwrap_thread");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,defs");
    // Bind libc functions on first use, not all ~50 at load: rustc links with -z now by
    // default, which costs every exec under sockwrap a symbol look-up per import.
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,lazy");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    if let Ok(out) = Command::new(cc)
        .arg("-print-file-name=libgcc_eh.a")
        .output()
    {
        let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let p = std::path::Path::new(&path);
        if p.is_absolute() && p.exists() {
            if let Some(dir) = p.parent() {
                println!("cargo:rustc-link-search=native={}", dir.display());
                println!("cargo:rustc-cdylib-link-arg=-Wl,--exclude-libs,libgcc_eh.a");
                println!("cargo:rustc-link-lib=static:-bundle,+verbatim=libgcc_eh.a");
            }
        }
    }
}
