/* The libc functions libsockwrap.so calls rarely, called through the PLT so that the
 * loader binds each one at its first call, not at load.
 *
 * Rust calls an external function through its GOT entry (rustc's default on x86_64), and
 * the loader fills every GOT entry when the library is loaded: one symbol look-up, ~580
 * instructions, in every exec of every program under sockwrap, for each function imported
 * that way, whether it is ever called or not. A call from C goes through the PLT, which
 * `-z lazy` (build.rs) binds on first use. These shells are hidden: the Rust side calls
 * them directly, and the link leaves no dynamic relocation for them.
 *
 * Here: the allocator's fallback once the arena is full (arena.rs), abort (the panic
 * handler), the trace's clock, and the thread a delayed connect runs on. The functions the
 * constructor calls in every exec (getauxval, dlsym, open) or that the hooks call on their
 * fast path (syscall, __errno_location) stay bound at load: binding them lazily would cost
 * more where they are called. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <time.h>

#define HIDDEN __attribute__((visibility("hidden")))

HIDDEN void *sockwrap_malloc(size_t n) { return malloc(n); }
HIDDEN void *sockwrap_realloc(void *p, size_t n) { return realloc(p, n); }
HIDDEN void sockwrap_free(void *p) { free(p); }
HIDDEN int sockwrap_posix_memalign(void **out, size_t align, size_t n) {
    return posix_memalign(out, align, n);
}
HIDDEN void sockwrap_abort(void) { abort(); }
HIDDEN int sockwrap_clock_gettime(clockid_t clock, struct timespec *ts) {
    return clock_gettime(clock, ts);
}

/* Runs start(arg) on a new detached thread with a 64 KiB stack and every signal blocked
 * (so that none of the program's handlers ever runs on it); the caller's mask is restored.
 * pthread_create's result: 0 when the thread was made. */
HIDDEN int sockwrap_spawn_blocked(void *(*start)(void *), void *arg) {
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_t tid;
    int r = pthread_create(&tid, &attr, start, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    return r;
}
