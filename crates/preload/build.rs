//! Link tweaks for libsockwrap.so.
//!
//! * `-z defs`: a .so with an undefined symbol links fine and then fails to load in every
//!   program; refuse it at link time instead.
//! * No unwinder: resolving one through `libgcc_s.so.1` costs ~110 µs per exec of every
//!   program under sockwrap (measured, DESIGN.md), and the static `libgcc_eh.a` linked
//!   before brought ~30 KiB of code and a symbol import bound at every exec. The library is
//!   no_std and built with panic=abort: the only reference left is `_Unwind_Resume`, from
//!   the landing pads of the prebuilt liballoc, which never run; `src/unwind_stub.c`
//!   satisfies it. Any other reference fails the link (`-z defs`).
//! * `src/thread.c`: the per-thread state (see `sys::thread::Thread`), and `src/lazy.c`: the rarely
//!   called libc functions, bound on first use (see there); compiled with the `cc` crate.
//! * `start.order`: the functions that run at every start, placed first in `.text` (lld's
//!   `--symbol-ordering-file`). The kernel maps a file's pages in 64 KiB windows, one page
//!   fault each; the constructor's code was spread over six of them, listed first it takes
//!   two. Written by `scripts/start-order.py`; names it no longer finds cost faults only.
//! * `plt.ld`: the PLT before `.text` instead of after it. crtbeginS.o's destructor calls
//!   `__cxa_finalize` through it at every exit, and `pthread_atfork` (libc_nonshared.a)
//!   `__register_atfork`: at the end of `.text` that was one more 64 KiB window, one more
//!   page fault, in every exec. `INSERT BEFORE` keeps lld's default layout for the rest.
//! * `-z separate-loadable-segments`: each segment starts on a page of its own. The
//!   relocated data (RELRO: the catalog's tables, the panic locations, the GOT; 11.8 KiB)
//!   started 3.6 KiB into a page and so spanned four, each written by the loader (one page
//!   fault each) in every exec; from a page's start it takes three. The file grows by the
//!   padding (~4 KiB), which is never read.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/thread.c");
    println!("cargo:rerun-if-changed=src/lazy.c");
    println!("cargo:rerun-if-changed=src/syscall.c");
    cc::Build::new()
        .file("src/thread.c")
        .file("src/lazy.c")
        .file("src/syscall.c")
        .opt_level(2)
        .pic(true)
        .warnings(true)
        .compile("sockwrap_thread");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,defs");
    println!("cargo:rerun-if-changed=start.order");
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    println!("cargo:rustc-cdylib-link-arg=-Wl,--symbol-ordering-file={dir}/start.order");
    // The names carry hashes: a debug build, or a list older than the code, has names the
    // linker does not find, which only leaves those functions where they were.
    println!("cargo:rustc-cdylib-link-arg=-Wl,--no-warn-symbol-ordering");
    println!("cargo:rerun-if-changed=plt.ld");
    // A script with INSERT adds to the default layout instead of replacing it.
    println!("cargo:rustc-cdylib-link-arg=-Wl,-T,{dir}/plt.ld");
    // The relocated data on as few pages as it fills (see the list above).
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,separate-loadable-segments");
    // Bind libc functions on first use, not all ~50 at load: rustc links with -z now by
    // default, which costs every exec under sockwrap a symbol look-up per import.
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,lazy");
    // The cdylib's stand-in for the unwinder (see src/unwind_stub.c); linked last, only
    // into the cdylib: the unit tests link std, which brings the real one.
    println!("cargo:rerun-if-changed=src/unwind_stub.c");
    cc::Build::new()
        .file("src/unwind_stub.c")
        .opt_level(2)
        .pic(true)
        .warnings(true)
        .cargo_metadata(false)
        .compile("sockwrap_unwind_stub");
    let out = std::env::var("OUT_DIR").unwrap_or_default();
    println!("cargo:rustc-cdylib-link-arg={out}/libsockwrap_unwind_stub.a");
    // No C start files (crti.o, crtbeginS.o, crtendS.o): the library has no .init/.fini
    // functions of theirs to run (its constructor is in .init_array), and crtbeginS.o's
    // transactional-memory and profiling hooks are four symbols the loader looks up in
    // every exec (__cxa_finalize, and three weak ones absent from every library, which are
    // the dearest look-ups: each searches all the objects loaded).
    println!("cargo:rustc-cdylib-link-arg=-nostartfiles");
    // The memory functions, inside the library and hidden (see src/mem.c). As objects, not
    // an archive: the linker takes an archive's member only for a symbol still undefined,
    // and libc.so, earlier on the line, defines these.
    println!("cargo:rerun-if-changed=src/mem.c");
    let objects = cc::Build::new()
        .file("src/mem.c")
        .opt_level(2)
        .pic(true)
        .warnings(true)
        .flag("-fno-builtin")
        .flag("-fno-tree-loop-distribute-patterns")
        .cargo_metadata(false)
        .compile_intermediates();
    for o in objects {
        println!("cargo:rustc-cdylib-link-arg={}", o.display());
    }
}
