//! sockwrap's kernel backend: the policy's Plans carried out by cgroup BPF programs, for
//! every socket made in a cgroup — static binaries, Go programs, io_uring, and the sockets
//! libc opens inside itself, which `libsockwrap.so` cannot reach.
//!
//! Called by the CLI (`sockwrap run --kernel`, `attach --follow`, `enable UNIT --kernel`,
//! `doctor`, `explain --kernel`), never by the library: libsockwrap.so does not link this
//! crate.
//!
//! - [`abi`]: the structs and constants shared with the programs (`src/bpf/abi.h`), checked
//!   against the header by a test;
//! - [`tables`]: the policy enumerated into map contents (pure, testable without a kernel:
//!   the one lookup of the system it needs, an interface's index, is passed in);
//! - [`programs`]: loading the compiled programs (`src/bpf/sockwrap.bpf.c`), filling the
//!   maps, attaching to a cgroup or pinning in a BPF filesystem (for systemd's
//!   `BPFProgram=`), reading the counters;
//! - [`probe`]: what the running kernel can do for the backend, found by loading small
//!   programs (never by its version number): the refusals by name, and `sockwrap doctor`;
//! - [`links`]: BPF links pinned in a BPF filesystem, for a policy attached to a cgroup
//!   sockwrap did not make (a container's, a pod's: `attach --cgroup/--container/--pod`);
//! - [`mptcp`]: MPTCP for the cgroup's TCP sockets (fmod_ret on update_socket_protocol);
//! - [`trace`]: `trace --kernel`'s own programs (`src/bpf/trace.bpf.c`, loaded only for
//!   it) and their ring buffer, read back as the trace's JSON lines;
//! - [`sys`]: the few system calls made outside aya, each behind a safe function;
//! - [`cgroup`]: the cgroup v2 child a command runs in, and the leftovers of a sockwrap
//!   that was killed.
//!
//! BPF programs are not subject to the capability checks a program's own `setsockopt` is:
//! `--kernel` can give SO_MARK, or a priority above 6, to an unprivileged program. That is a
//! feature, and the reason only root may attach.

// unsafe is denied but in the modules on this allow-list (and abi's `Pod` marks), each
// block with a `// SAFETY:` note: the system calls (sys), and the bpf(2) attributes that
// carry addresses (links, mptcp).
#![deny(unsafe_code, clippy::undocumented_unsafe_blocks)]

pub mod abi;
pub mod cgroup;
#[allow(unsafe_code)]
pub mod links;
#[allow(unsafe_code)]
pub mod mptcp;
pub mod probe;
pub mod programs;
#[allow(unsafe_code)]
pub mod sys;
pub mod tables;
pub mod trace;

pub use tables::{refusals, Tables};

/// What of `policy` this backend refuses before anything is loaded: [`refusals`] (what the
/// tables cannot carry), and the MPTCP rules that select by what socket() does not know
/// ([`mptcp::refusals`]). Whether this kernel converts at all is found by loading the
/// conversion itself ([`mptcp::probe`]).
pub fn refusals_here(policy: &sockwrap_policy::Policy) -> Vec<String> {
    let mut out = refusals(policy);
    out.extend(mptcp::refusals(policy));
    out
}

/// A failure, as one line for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(pub String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}
