//! libsockwrap.so: gives socket options to programs that never asked for them.
//!
//! Loaded with `LD_PRELOAD` (usually by `sockwrap run`). The constructor reads the policy
//! once, resolves the real socket functions, and publishes an immutable
//! [`apply::Global`]. After that the hooks only read: no allocation, no locks, no lazy
//! initialisation. Anything that goes wrong while loading leaves the program untouched
//! (fail-open) with one error line.
//!
//! Modules, and who calls whom (no cycles: `scripts/module-graph.sh` checks):
//! * `hooks`: the C boundary. The exported functions, one table row each; the real
//!   functions (dlsym); the constructor. Raw pointers become safe values here, once.
//! * `calls`: what each hooked call does, in safe Rust, around the real call.
//! * `apply`: decisions and the execution of the policy's [`sockwrap_policy::Plan`].
//! * `mptcp`: protocol changes (MPTCP ↔ TCP) and their fallbacks.
//! * `fdstate`: what is known per descriptor (locks, kind), a typed value per fd.
//! * `trace`, `log`: JSON lines and log lines, one `write(2)` each.
//! * `init`: the constructor's work, in safe Rust.
//! * `sys`: raw system calls and the socket-address type; `arena`: the allocator.
//!
//! `unsafe` is denied here and allowed only in `hooks`, `sys` and `arena`.

#![deny(
    unsafe_code,
    unsafe_op_in_unsafe_fn,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

mod apply;
mod arena;
mod calls;
mod fdstate;
mod hooks;
mod init;
mod log;
mod mptcp;
mod sys;
mod trace;

/// Everything the library allocates comes from its own arena first (see `arena`).
#[global_allocator]
static ALLOC: arena::Arena = arena::Arena;
