/* Per-thread state of libsockwrap.so.
 *
 * Written in C because Rust has no thread-local storage without std on stable
 * (`#[thread_local]` is unstable), and the library is core + alloc only (see lib.rs).
 * initial-exec: the library is preloaded, so its TLS lives in the static block and an
 * access is one %fs-relative load, with no __tls_get_addr call and no import. The memory
 * starts zeroed; the Rust side (sys::thread::Thread) gives every field a meaning in which zero is
 * "nothing known". */
struct sockwrap_thread {
    long words[16];
};

static __thread struct sockwrap_thread state __attribute__((tls_model("initial-exec")));

__attribute__((visibility("hidden"))) struct sockwrap_thread *sockwrap_thread(void) {
    return &state;
}

/* The prebuilt liballoc (built for unwinding) names Rust's personality routine in its
 * unwind tables. The library is built with panic=abort, so nothing ever unwinds and the
 * routine is never called; this definition only satisfies the link, hidden so that no
 * other object of the program can bind to it, and weak so that std's own wins in the unit
 * tests (which link std). */
__attribute__((weak, visibility("hidden"))) void rust_eh_personality(void) {
    __builtin_trap();
}
