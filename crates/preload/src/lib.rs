//! libsockwrap.so: gives socket options to programs that never asked for them.
//!
//! Loaded with `LD_PRELOAD` (usually by `sockwrap run`). The constructor reads the policy
//! once and publishes an immutable [`apply::Global`]. After that the hooks only read: no
//! allocation, no locks, no lazy initialisation, with one measured exception: each real
//! function but `close` is resolved (dlsym) at its first call, see `hooks::real`. Anything that goes wrong while loading leaves the program untouched
//! (fail-open) with one error line.
//!
//! Modules, and who calls whom (no cycles: `scripts/module-graph.sh` checks):
//! * `hooks`: the C boundary. The exported functions, one table row each; the real
//!   functions (dlsym); the constructor. Raw pointers become safe values here, once.
//! * `calls`: what each hooked call does, in safe Rust, around the real call.
//! * `apply`: decisions and the execution of the policy's [`sockwrap_policy::Plan`].
//! * `mptcp`: protocol changes (MPTCP ↔ TCP) and their fallbacks.
//! * `actions`: connect actions (deny, redirect, delay, fail); `seed`: the seeded `fail`
//!   choices; `names`: the host names a program resolved, by address.
//! * `fdstate`: what is known per descriptor (locks, kind), a typed value per fd.
//! * `trace`, `log`: JSON lines and log lines, one `write(2)` each; `outcome`: a TCP
//!   connection's counters (`TCP_INFO`) for the trace's close events.
//! * `init`: the constructor's work, in safe Rust.
//! * `sys`: raw system calls and the socket-address type; `arena`: the allocator.
//!
//! `unsafe` is denied here and allowed only in the modules on the allow-list below
//! (`hooks`, `sys`, `arena`) and in `trace::placed` (a `#[link_section]`, a placement
//! only). Every unsafe block says why it is sound (`// SAFETY:`; clippy's
//! `undocumented_unsafe_blocks` is denied).
//!
//! core + alloc only, no std: every process the library is preloaded into pays at exec for
//! what the library brings (relocations, symbol imports, pages touched), and std brings its
//! panic, backtrace and I/O machinery. The per-thread state std's `thread_local!` gave is
//! in `thread.c` (see `sys::thread::Thread`). A panic, which the code is written never to reach
//! (clippy denies unwrap, expect and panic here), ends the process with one line saying
//! where: there is no unwinding without std.

#![deny(
    unsafe_code,
    clippy::undocumented_unsafe_blocks,
    unsafe_op_in_unsafe_fn,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]
#![cfg_attr(not(test), no_std)]

extern crate alloc;

/// What std's prelude would give; each module takes it with `use crate::prelude::*`.
#[allow(unused_imports)]
mod prelude {
    pub use alloc::borrow::ToOwned;
    pub use alloc::boxed::Box;
    pub use alloc::format;
    pub use alloc::string::{String, ToString};
    pub use alloc::vec;
    pub use alloc::vec::Vec;
}

mod actions;
mod apply;
mod calls;
mod fdstate;
mod init;
mod log;
mod mptcp;
mod names;
mod outcome;
mod seed;
mod trace;

// The allow-list of `unsafe`: the C boundary, the raw system calls, the allocator.
/// The allocator.
#[allow(unsafe_code)]
mod arena;
/// The exported hooks, the real functions (dlsym), the constructor.
#[allow(unsafe_code)]
mod hooks;
/// The raw system calls, the socket-address type, the no_std primitives.
#[allow(unsafe_code)]
mod sys;

/// Everything the library allocates comes from its own arena first (see `arena`).
#[global_allocator]
static ALLOC: arena::Arena = arena::Arena;

#[cfg(not(test))]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    log::panicked(info);
    sys::abort()
}
