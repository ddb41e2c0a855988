/* The one unwinder symbol the library refers to, for the cdylib only (build.rs).
 *
 * The prebuilt liballoc and libcore were compiled for unwinding, so their landing pads
 * end in calls to _Unwind_Resume. The library is built with panic=abort and contains no
 * unwinder: no unwinding can ever start, so no landing pad runs and this is never called.
 * Defining it here, hidden, replaces linking libgcc's static unwinder (~30 KiB of code,
 * its relocations and a symbol import bound at every exec) only to satisfy the link.
 * Any other reference to the unwinder still fails the link (-z defs). Not linked into the
 * unit tests, which use std's unwinder. */
__attribute__((visibility("hidden"), noreturn)) void _Unwind_Resume(void *exception) {
    (void)exception;
    __builtin_trap();
}
