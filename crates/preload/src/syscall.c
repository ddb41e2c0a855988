/* The library's own system calls (sys/mod.rs, syscall!): compiled into every build of the
 * crate, the unit tests' included. */
#define HIDDEN __attribute__((visibility("hidden")))

/* One system call by its instruction, with the kernel's answer as it is: a value, or
 * -errno (-4095..-1); errno is not touched. Instead of libc's syscall(), which a Rust call
 * reaches through a GOT entry (a symbol look-up at every exec) and which writes errno.
 *
 * One function per number of arguments, out of line: the callers pass no more than they
 * mean (a seventh argument would go on the stack), and the Rust code around them keeps
 * its registers (the instruction inlined there, with its six fixed registers, made the
 * compiler spill the option loop's values around the hot setsockopt: +13 instructions
 * per connection, measured). That is also why not rustix: its raw system calls are
 * inline assembly in the caller, and it would be one more crate in every process for
 * seven short functions. */
#if defined(__x86_64__)
#define SYSCALL(...)                                                                       \
    long r;                                                                                \
    __asm__ volatile("syscall" : "=a"(r) : "a"(nr), ##__VA_ARGS__ : "rcx", "r11", "memory"); \
    return r
HIDDEN long sockwrap_syscall0(long nr) { SYSCALL(); }
HIDDEN long sockwrap_syscall1(long nr, long a) { SYSCALL("D"(a)); }
HIDDEN long sockwrap_syscall2(long nr, long a, long b) { SYSCALL("D"(a), "S"(b)); }
HIDDEN long sockwrap_syscall3(long nr, long a, long b, long c) {
    SYSCALL("D"(a), "S"(b), "d"(c));
}
HIDDEN long sockwrap_syscall4(long nr, long a, long b, long c, long d) {
    register long r10 __asm__("r10") = d;
    SYSCALL("D"(a), "S"(b), "d"(c), "r"(r10));
}
HIDDEN long sockwrap_syscall5(long nr, long a, long b, long c, long d, long e) {
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    SYSCALL("D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8));
}
HIDDEN long sockwrap_syscall6(long nr, long a, long b, long c, long d, long e, long f) {
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    SYSCALL("D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9));
}
#else
#if defined(__aarch64__)
static long any(long nr, long a, long b, long c, long d, long e, long f) {
    register long x8 __asm__("x8") = nr;
    register long x0 __asm__("x0") = a;
    register long x1 __asm__("x1") = b;
    register long x2 __asm__("x2") = c;
    register long x3 __asm__("x3") = d;
    register long x4 __asm__("x4") = e;
    register long x5 __asm__("x5") = f;
    __asm__ volatile("svc 0"
                     : "+r"(x0)
                     : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4), "r"(x5)
                     : "memory");
    return x0;
}
#else
#include <errno.h>
#include <unistd.h>
static long any(long nr, long a, long b, long c, long d, long e, long f) {
    int saved = errno;
    long r = syscall(nr, a, b, c, d, e, f);
    if (r == -1) r = -errno;
    errno = saved;
    return r;
}
#endif
HIDDEN long sockwrap_syscall0(long nr) { return any(nr, 0, 0, 0, 0, 0, 0); }
HIDDEN long sockwrap_syscall1(long nr, long a) { return any(nr, a, 0, 0, 0, 0, 0); }
HIDDEN long sockwrap_syscall2(long nr, long a, long b) { return any(nr, a, b, 0, 0, 0, 0); }
HIDDEN long sockwrap_syscall3(long nr, long a, long b, long c) {
    return any(nr, a, b, c, 0, 0, 0);
}
HIDDEN long sockwrap_syscall4(long nr, long a, long b, long c, long d) {
    return any(nr, a, b, c, d, 0, 0);
}
HIDDEN long sockwrap_syscall5(long nr, long a, long b, long c, long d, long e) {
    return any(nr, a, b, c, d, e, 0);
}
HIDDEN long sockwrap_syscall6(long nr, long a, long b, long c, long d, long e, long f) {
    return any(nr, a, b, c, d, e, f);
}
#endif
