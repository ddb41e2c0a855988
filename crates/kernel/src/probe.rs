//! What the running kernel can do for the kernel backend, found by trying it, never by
//! reading the version number (a distribution's 6.1 may carry later features, and a
//! hardened 6.18 may refuse some).
//!
//! - [`FEATURES`]: each hook, helper and context access the programs rely on, probed by a
//!   tiny program of its own (`src/bpf/probes.bpf.c`) that uses only that one thing;
//!   [`missing_for`] names what a sockwrap program needs and this kernel lacks, so that a
//!   refusal says that, in one line, instead of a verifier log.
//! - [`load_each`]: every sockwrap program loaded (not attached), as `run --kernel` would.
//! - [`crate::mptcp::probe`]: whether an `fmod_ret` program on `update_socket_protocol` (the
//!   only way to turn a program's TCP sockets into MPTCP from BPF) loads and attaches here.
//! - [`options`]: which options `bpf_setsockopt` and `bpf_bind` take here, measured by the
//!   real programs on a real connect in a cgroup of the probe's own.
//!
//! Called by the CLI when loading fails (`run --kernel`, `attach --follow`, `enable
//! --kernel`) and by `sockwrap doctor`. Loading BPF programs needs root (CAP_BPF and
//! CAP_NET_ADMIN); the probes say so instead of guessing.

pub use crate::mptcp::MptcpConversion;
use crate::programs::{self, PROGRAMS, REDIRECT_PROGRAMS};
use crate::sys;
pub use crate::sys::{errno_text, kernel_release};
use crate::tables::{Tables, C_APPLIED_BASE};
use crate::Error;
use aya::programs::Program;
use aya::EbpfLoader;
use sockwrap_policy::catalog::{self, Opt, Raw};
use sockwrap_policy::{OnError, Policy, Rule, Stage};
use std::path::Path;

/// The probe programs (see build.rs).
static PROBES: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/probes.bpf.o"));

/// One thing the kernel backend's programs need from the kernel.
pub struct Feature {
    /// The probe program in `probes.bpf.c` that uses it and nothing else.
    pub probe: &'static str,
    /// What it is, for a sentence: "the bpf_loop helper".
    pub what: &'static str,
    /// The first mainline release that has it, where known for certain.
    pub since: Option<&'static str>,
    /// The sockwrap programs that need it.
    pub needed_by: &'static [&'static str],
}

const ADDR: &[&str] = &[
    "sw_bind4",
    "sw_bind6",
    "sw_connect4",
    "sw_connect6",
    "sw_sendmsg4",
    "sw_sendmsg6",
];
const APPLY: &[&str] = &[
    "sw_bind4",
    "sw_bind6",
    "sw_connect4",
    "sw_connect6",
    "sw_sendmsg4",
    "sw_sendmsg6",
    "sw_sockops",
];
const BIND: &[&str] = &["sw_bind4", "sw_bind6"];
const CONNECT: &[&str] = &["sw_connect4", "sw_connect6"];
const SENDMSG: &[&str] = &["sw_sendmsg4", "sw_sendmsg6"];
const DENY: &[&str] = &["sw_connect4", "sw_connect6", "sw_sendmsg4", "sw_sendmsg6"];
const STORAGE_ADDR: &[&str] = &[
    "sw_bind4",
    "sw_bind6",
    "sw_connect4",
    "sw_connect6",
    "sw_sendmsg4",
    "sw_sendmsg6",
    "sw_getpeername4",
    "sw_getpeername6",
    "sw_recvmsg4",
    "sw_recvmsg6",
];

/// Every feature probed, in the order a refusal lists them.
pub const FEATURES: &[Feature] = &[
    Feature {
        probe: "hook_sock_create",
        what: "the cgroup/sock_create hook",
        since: Some("4.10"),
        needed_by: &["sw_sock_create"],
    },
    Feature {
        probe: "hook_bind4",
        what: "the cgroup/bind4 and bind6 hooks",
        since: Some("4.17"),
        needed_by: BIND,
    },
    Feature {
        probe: "hook_connect4",
        what: "the cgroup/connect4 and connect6 hooks",
        since: Some("4.17"),
        needed_by: CONNECT,
    },
    Feature {
        probe: "hook_sendmsg4",
        what: "the cgroup/sendmsg4 and sendmsg6 hooks",
        since: Some("4.18"),
        needed_by: SENDMSG,
    },
    Feature {
        probe: "hook_recvmsg4",
        what: "the cgroup/recvmsg4 and recvmsg6 hooks",
        since: Some("5.2"),
        needed_by: &["sw_recvmsg4", "sw_recvmsg6"],
    },
    Feature {
        probe: "hook_getpeername4",
        what: "the cgroup/getpeername4 and getpeername6 hooks",
        since: Some("5.8"),
        needed_by: &["sw_getpeername4", "sw_getpeername6"],
    },
    Feature {
        probe: "hook_sockops",
        what: "sock_ops programs",
        since: Some("4.13"),
        needed_by: &["sw_sockops"],
    },
    Feature {
        probe: "hook_setsockopt",
        what: "the cgroup/setsockopt hook",
        since: Some("5.3"),
        needed_by: &["sw_setsockopt"],
    },
    Feature {
        probe: "helper_loop",
        what: "the bpf_loop helper",
        since: Some("5.17"),
        needed_by: APPLY,
    },
    Feature {
        probe: "helper_set_retval",
        what: "the bpf_set_retval helper",
        since: Some("5.18"),
        needed_by: DENY,
    },
    Feature {
        probe: "helper_bind",
        what: "the bpf_bind helper in cgroup/connect",
        since: Some("4.17"),
        needed_by: CONNECT,
    },
    Feature {
        probe: "helper_setsockopt_connect",
        what: "bpf_setsockopt in cgroup/connect",
        since: None,
        needed_by: CONNECT,
    },
    Feature {
        probe: "helper_setsockopt_bind",
        what: "bpf_setsockopt in cgroup/bind",
        since: None,
        needed_by: BIND,
    },
    Feature {
        probe: "helper_setsockopt_sendmsg",
        what: "bpf_setsockopt in cgroup/sendmsg",
        since: None,
        needed_by: SENDMSG,
    },
    Feature {
        probe: "helper_setsockopt_sockops",
        what: "bpf_setsockopt in sock_ops",
        since: Some("4.13"),
        needed_by: &["sw_sockops"],
    },
    Feature {
        probe: "helper_storage_sock_addr",
        what: "socket storage (bpf_sk_storage_get) in cgroup/connect, bind, sendmsg, recvmsg and getpeername",
        since: None,
        needed_by: STORAGE_ADDR,
    },
    Feature {
        probe: "helper_storage_sock_create",
        what: "socket storage (bpf_sk_storage_get) in cgroup/sock_create",
        since: None,
        needed_by: &["sw_sock_create"],
    },
    Feature {
        probe: "helper_storage_sockops",
        what: "socket storage (bpf_sk_storage_get) in sock_ops",
        since: None,
        needed_by: &["sw_sockops"],
    },
    Feature {
        probe: "helper_storage_sockopt",
        what: "socket storage (bpf_sk_storage_get) in cgroup/setsockopt",
        since: None,
        needed_by: &["sw_setsockopt"],
    },
    Feature {
        probe: "helper_comm_sock_create",
        what: "bpf_get_current_comm in cgroup/sock_create",
        since: None,
        needed_by: &["sw_sock_create"],
    },
    Feature {
        probe: "helper_comm_sock_addr",
        what: "bpf_get_current_comm in cgroup/connect, bind and sendmsg",
        since: None,
        needed_by: ADDR,
    },
    Feature {
        probe: "ctx_sock_create_fields",
        what: "writing a socket's mark, priority and bound device in cgroup/sock_create",
        since: None,
        needed_by: &["sw_sock_create"],
    },
    Feature {
        probe: "ctx_sockopt_bypass",
        what: "skipping the kernel's setsockopt from cgroup/setsockopt (optlen = -1)",
        since: None,
        needed_by: &["sw_setsockopt"],
    },
    Feature {
        probe: "ctx_sock_addresses",
        what: "a socket's ports, addresses and state in cgroup/setsockopt",
        since: None,
        needed_by: &["sw_setsockopt"],
    },
];

/// What the user can do instead when `program` cannot run here: said after the missing
/// feature, in the same line.
pub fn instead(program: &str) -> &'static str {
    match program {
        "sw_setsockopt" => "locks need it: make the options soft (the program may then change them), or use the library (sockwrap run without --kernel) for dynamically linked programs",
        "sw_getpeername4" | "sw_getpeername6" | "sw_recvmsg4" | "sw_recvmsg6" => "redirect needs it to show the program the address it asked for: use deny or the library's redirect (sockwrap run without --kernel)",
        "sw_sendmsg4" | "sw_sendmsg6" => "unconnected UDP (sendto) needs it: use the library (sockwrap run without --kernel), or rules for TCP and connected UDP only",
        "sw_sockops" => "server-side options (listen, accept) need it: use the library (sockwrap run without --kernel), or client rules only",
        _ => "use the library instead (sockwrap run without --kernel), which reaches dynamically linked programs",
    }
}

/// Each probe or program by name: `Ok` when the kernel loaded it, `Err` with the kernel's
/// error and verifier log when it did not.
pub type Loads<T> = Vec<(T, Result<(), String>)>;

/// Whether this process may load BPF programs at all: the probes need it to mean anything.
fn may_load() -> Result<(), Error> {
    if !sys::is_root() {
        return Err(Error(
            "only root can load BPF programs: run it as root to probe this kernel".into(),
        ));
    }
    Ok(())
}

/// The outcome of each probe program, in [`FEATURES`] order: `Ok` when the kernel loaded
/// it, `Err` with the kernel's errno and verifier log when it did not. `Err` as a whole when
/// nothing could be probed (not root, or the probe object itself did not load).
pub fn features() -> Result<Loads<&'static Feature>, Error> {
    may_load()?;
    let mut ebpf = EbpfLoader::new().load(PROBES).map_err(|e| {
        Error(format!(
            "the feature probes did not load (this kernel may lack BPF socket storage, Linux 5.2): {e}"
        ))
    })?;
    let mut out = Vec::new();
    for f in FEATURES {
        let r = match ebpf.program_mut(f.probe) {
            None => Err(format!("no probe program `{}`", f.probe)),
            Some(p) => load_program(p).map_err(|e| programs::error_text(&e)),
        };
        out.push((f, r));
    }
    Ok(out)
}

fn load_program(p: &mut Program) -> Result<(), aya::programs::ProgramError> {
    match p {
        Program::CgroupSock(p) => p.load(),
        Program::CgroupSockAddr(p) => p.load(),
        Program::CgroupSockopt(p) => p.load(),
        Program::SockOps(p) => p.load(),
        _ => Err(aya::programs::ProgramError::UnexpectedProgramType),
    }
}

/// The features `program` needs that this kernel lacks (their probes did not load). Empty
/// when nothing is missing, or when nothing could be probed.
pub fn missing_for(program: &str) -> Vec<&'static Feature> {
    let Ok(all) = features() else {
        return Vec::new();
    };
    all.into_iter()
        .filter(|(f, r)| r.is_err() && f.needed_by.contains(&program))
        .map(|(f, _)| f)
        .collect()
}

/// The one line that says why `program` cannot run on this kernel: what it lacks (from
/// the probes), the kernel's release, and what to use instead. `None` when every feature it
/// needs is here: then the verifier refused sockwrap's own code, which is a bug to report,
/// not a limit of the kernel.
pub fn refusal(what: &str, program: &str) -> Option<String> {
    let missing = missing_for(program);
    if missing.is_empty() {
        return None;
    }
    Some(refusal_line(what, &kernel_release(), program, &missing))
}

fn refusal_line(what: &str, release: &str, program: &str, missing: &[&Feature]) -> String {
    let lacks: Vec<String> = missing
        .iter()
        .map(|f| match f.since {
            Some(v) => format!("{} (Linux {v}+)", f.what),
            None => f.what.to_string(),
        })
        .collect();
    format!(
        "{what}: this kernel ({release}) lacks {}, which sockwrap's {} program needs; {}",
        lacks.join(" and "),
        programs::attach_type(program).unwrap_or(program),
        instead(program)
    )
}

/// Each sockwrap program loaded here, not attached, with the maps of an empty policy:
/// `Ok` or the kernel's error (verifier log included, for `--log debug`).
pub fn load_each() -> Result<Loads<&'static str>, Error> {
    may_load()?;
    let tables = Tables::build(&Policy::new(Vec::new(), OnError::Warn))?;
    let mut ebpf = programs::load_filled(&tables)?;
    let mut out = Vec::new();
    for name in PROGRAMS.iter().chain(&REDIRECT_PROGRAMS) {
        let r = match ebpf.program_mut(name) {
            None => Err(format!("the BPF object has no program `{name}`")),
            Some(p) => load_program(p).map_err(|e| programs::error_text(&e)),
        };
        out.push((*name, r));
    }
    Ok(out)
}

/// What one option did in [`options`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionOutcome {
    /// Set without an error.
    Set,
    /// The kernel refused it (bpf_setsockopt or bpf_bind returned an error).
    Refused,
    /// Not among the options the probe could try (see [`probe_value`]).
    NotTried,
}

/// A value for `o` that any kernel would take from a program's own setsockopt (so that a
/// refusal is the BPF side's), or `None` for options the kernel backend refuses by name.
pub fn probe_value(o: Opt) -> Option<String> {
    if crate::tables::refused_opt(o).is_some() {
        return None;
    }
    Some(match o {
        Opt::Tos => "EF".into(),
        Opt::Priority => "1".into(),
        Opt::Mark => "1".into(),
        Opt::BindInterface => "lo".into(),
        Opt::BindAddress => "127.0.0.1".into(),
        Opt::ReuseAddr | Opt::ReusePort | Opt::KeepAlive | Opt::NoDelay => "on".into(),
        Opt::SndBuf | Opt::RcvBuf => "65536".into(),
        Opt::MaxPacingRate => "1000000".into(),
        Opt::KeepIdle => "30".into(),
        Opt::KeepIntvl => "10".into(),
        Opt::KeepCnt => "3".into(),
        Opt::UserTimeout => "10000".into(),
        // The default algorithm: available wherever TCP is.
        Opt::Congestion => std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "cubic".into()),
        Opt::MaxSeg => "1400".into(),
        Opt::NotsentLowat => "16384".into(),
        _ => return None,
    })
}

/// Which options the kernel backend can set here, measured: the real programs (bind4,
/// connect4) with a policy that sets every option [`probe_value`] has a value for, attached
/// to a cgroup of the probe's own under `mount`; a child process joins it, binds one TCP
/// socket and connects another to a listener of ours on 127.0.0.1; the programs count each
/// option the kernel refused. The cgroup is removed again. Needs root.
pub fn options(mount: &Path) -> Result<Vec<(Opt, OptionOutcome)>, Error> {
    may_load()?;
    let mut rule = Rule::new("probe");
    let mut tried = Vec::new();
    for o in Opt::ALL {
        let Some(v) = probe_value(o) else { continue };
        let value = catalog::parse_value(o, o.name(), Raw::Str(&v))
            .map_err(|e| Error(format!("probe value for {}: {e}", o.name())))?;
        rule.set(o, value, true);
        tried.push(o);
    }
    let tables = Tables::build(&Policy::new(vec![rule], OnError::Warn))?;
    let cg = crate::cgroup::Cgroup::create(mount)?;
    let counters = run_probe_child(&cg, &tables);
    // The child has exited: the cgroup empties within moments.
    let mut removed = cg.remove();
    for _ in 0..50 {
        if removed.is_ok() || !cg.path.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        removed = cg.remove();
    }
    let counters = counters?;
    let ran = |s: Stage| {
        counters
            .get((C_APPLIED_BASE + s as u32) as usize)
            .copied()
            .unwrap_or(0)
            > 0
    };
    if !ran(Stage::Connect) {
        return Err(Error(
            "the probe's connect ran no plan (the connect program did not run)".into(),
        ));
    }
    Ok(Opt::ALL
        .iter()
        .map(|&o| {
            let outcome = if !tried.contains(&o) {
                OptionOutcome::NotTried
            } else if counters.get(o as usize).copied().unwrap_or(0) > 0 {
                OptionOutcome::Refused
            } else {
                OptionOutcome::Set
            };
            (o, outcome)
        })
        .collect())
}

fn run_probe_child(cg: &crate::cgroup::Cgroup, tables: &Tables) -> Result<Vec<u64>, Error> {
    use std::os::fd::AsRawFd;
    let dir = cg.open()?;
    let attached = programs::Attached::load(tables, &dir).map_err(|e| Error(e.to_string()))?;
    let procs = cg.procs_file()?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Error(format!("probe listener: {e}")))?;
    let port = listener
        .local_addr()
        .map_err(|e| Error(format!("probe listener: {e}")))?
        .port();
    let procs_fd = procs.as_raw_fd();
    // At most 5 s: a connect to our own listener completes at once. The child joins the
    // cgroup (one write) and makes its two sockets with raw system calls only.
    let end = sys::run_in_child(
        || match crate::cgroup::join_raw(procs_fd) {
            Ok(()) => sys::bind_then_connect_loopback(port),
            Err(_) => 1,
        },
        std::time::Duration::from_secs(5),
    )
    .map_err(|e| Error(format!("fork: {e}")))?;
    drop(listener);
    let counters = attached.counters();
    drop(attached);
    match end {
        sys::ChildEnd::Exited(0) => Ok(counters),
        sys::ChildEnd::TimedOut => Err(Error("the probe's child did not finish within 5 s".into())),
        sys::ChildEnd::Exited(code) => Err(Error(format!(
            "the probe's child could not bind or connect (exit {code})"
        ))),
        sys::ChildEnd::Other(status) => Err(Error(format!(
            "the probe's child could not bind or connect (status {status:#x})"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_program_has_its_features_and_every_feature_a_program() {
        for name in PROGRAMS.iter().chain(&REDIRECT_PROGRAMS) {
            assert!(
                FEATURES.iter().any(|f| f.needed_by.contains(name)),
                "{name} needs no probed feature"
            );
        }
        for f in FEATURES {
            for n in f.needed_by {
                assert!(
                    PROGRAMS.contains(n) || REDIRECT_PROGRAMS.contains(n),
                    "{}: {n} is no program",
                    f.probe
                );
            }
        }
    }

    #[test]
    fn every_probe_program_is_in_the_probe_object() {
        let obj = aya_obj::Object::parse(PROBES).expect("probes.bpf.o parses");
        for f in FEATURES {
            assert!(obj.programs.contains_key(f.probe), "{}", f.probe);
        }
    }

    #[test]
    fn errnos_are_named() {
        assert_eq!(errno_text(libc::EPERM), "EPERM: Operation not permitted");
        assert_eq!(errno_text(libc::EACCES), "EACCES: Permission denied");
    }

    #[test]
    fn a_refusal_is_one_line_with_the_kernel_the_feature_and_what_instead() {
        let loop_ = FEATURES
            .iter()
            .find(|f| f.probe == "helper_loop")
            .expect("helper_loop");
        let line = refusal_line("--kernel", "5.15.0-91-generic", "sw_connect4", &[loop_]);
        assert_eq!(
            line,
            "--kernel: this kernel (5.15.0-91-generic) lacks the bpf_loop helper (Linux 5.17+), \
             which sockwrap's connect4 program needs; use the library instead (sockwrap run \
             without --kernel), which reaches dynamically linked programs"
        );
        assert!(!line.contains('\n'));
    }

    #[test]
    fn every_option_the_backend_can_set_has_a_probe_value_that_parses() {
        for o in Opt::ALL {
            match probe_value(o) {
                Some(v) => {
                    catalog::parse_value(o, o.name(), Raw::Str(&v)).expect("parses");
                }
                None => assert!(
                    crate::tables::refused_opt(o).is_some(),
                    "{} has no probe value",
                    o.name()
                ),
            }
        }
    }
}
