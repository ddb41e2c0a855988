//! `sockwrap doctor` with no program: what the running kernel supports, per backend and
//! feature, from probes ([`sockwrap_kernel::probe`]) rather than from its version number.
//! Printed as a short block of lines, or as one JSON object (`doctor --json`).
//!
//! Probing loads BPF programs (never attaching them, except the option probe, which
//! attaches the real programs to a cgroup of its own for one connect and removes it), so
//! most of it needs root; without root it says so.

use crate::json::{obj, object, Json, JsonExt as _};
use sockwrap_kernel::probe::{self, MptcpConversion, OptionOutcome};
use sockwrap_policy::catalog::Opt;
use std::fmt::Write as _;
use std::path::PathBuf;

/// Where cgroup v2 is, and what else is mounted beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// cgroup v2 alone at `/sys/fs/cgroup` (most distributions since 2021).
    Unified(PathBuf),
    /// cgroup v2 beside v1 hierarchies (systemd's hybrid mode): v2 at its own place.
    Hybrid(PathBuf),
    /// Only v1 hierarchies: no kernel backend.
    V1Only,
    /// No cgroup file system at all.
    None,
}

impl Layout {
    fn of(mounts: &str) -> Layout {
        let mut v2 = None;
        let mut v1 = false;
        for l in mounts.lines() {
            let mut f = l.split_whitespace();
            let (Some(_), Some(dir), Some(fstype)) = (f.next(), f.next(), f.next()) else {
                continue;
            };
            match fstype {
                "cgroup2" if v2.is_none() => v2 = Some(PathBuf::from(dir)),
                "cgroup" => v1 = true,
                _ => {}
            }
        }
        match (v2, v1) {
            (Some(p), false) => Layout::Unified(p),
            (Some(p), true) => Layout::Hybrid(p),
            (None, true) => Layout::V1Only,
            (None, false) => Layout::None,
        }
    }

    pub fn here() -> Layout {
        Layout::of(&std::fs::read_to_string("/proc/mounts").unwrap_or_default())
    }

    fn name(&self) -> &'static str {
        match self {
            Layout::Unified(_) => "unified",
            Layout::Hybrid(_) => "hybrid",
            Layout::V1Only => "v1",
            Layout::None => "none",
        }
    }

    fn v2(&self) -> Option<&PathBuf> {
        match self {
            Layout::Unified(p) | Layout::Hybrid(p) => Some(p),
            _ => None,
        }
    }

    fn describe(&self) -> String {
        match self {
            Layout::Unified(p) => format!("unified: cgroup v2 alone at {}", p.display()),
            Layout::Hybrid(p) => format!(
                "hybrid: cgroup v2 at {} beside cgroup v1 hierarchies",
                p.display()
            ),
            Layout::V1Only => "cgroup v1 only: no cgroup v2, which the kernel backend needs".into(),
            Layout::None => "no cgroup file system mounted".into(),
        }
    }
}

/// `socket(AF_INET, SOCK_STREAM, IPPROTO_MPTCP)`: `Ok` or the errno.
fn mptcp_socket() -> Result<(), i32> {
    use rustix::net::{ipproto, socket, AddressFamily, SocketType};
    // The descriptor is closed at once (dropped).
    socket(
        AddressFamily::INET,
        SocketType::STREAM,
        Some(ipproto::MPTCP),
    )
    .map(drop)
    .map_err(|e| e.raw_os_error())
}

fn mptcp_socket_text(r: Result<(), i32>) -> String {
    match r {
        Ok(()) => "yes".into(),
        Err(libc::ENOPROTOOPT) => {
            "no: disabled (net.mptcp.enabled=0; fix: sysctl -w net.mptcp.enabled=1)".into()
        }
        Err(libc::EPROTONOSUPPORT) => "no: this kernel is built without MPTCP".into(),
        Err(libc::EINVAL) => "no: this kernel predates MPTCP (Linux 5.6+)".into(),
        Err(e) => format!("no ({})", probe::errno_text(e)),
    }
}

/// `pidfd_getfd` on a descriptor of our own: `Ok` or the errno (ENOSYS before Linux 5.6).
fn pidfd_getfd_works() -> Result<(), i32> {
    let pidfd = crate::pidfd::pidfd_open(std::process::id() as i32)
        .map_err(|e| e.raw_os_error().unwrap_or(0))?;
    use std::os::fd::AsRawFd;
    crate::pidfd::pidfd_getfd(&pidfd, pidfd.as_raw_fd())
        .map(drop)
        .map_err(|e| e.raw_os_error().unwrap_or(0))
}

fn errno_text(e: i32) -> String {
    if e == libc::ENOSYS {
        "no: this kernel has no pidfd_getfd (ENOSYS; Linux 5.6+)".into()
    } else {
        format!("no ({})", probe::errno_text(e))
    }
}

/// Everything probed, once.
pub struct Support {
    pub release: String,
    pub layout: Layout,
    pub root: bool,
    /// Each sockwrap program: `Ok`, or the one line that says why not. `Err`: not probed.
    pub programs: Result<probe::Loads<&'static str>, String>,
    pub options: Result<Vec<(Opt, OptionOutcome)>, String>,
    pub pidfd_getfd: Result<(), i32>,
    pub mptcp_socket: Result<(), i32>,
    pub mptcp_bpf: MptcpConversion,
}

impl Support {
    pub fn probe() -> Support {
        let root = rustix::process::geteuid().is_root();
        let layout = Layout::here();
        let programs: Result<probe::Loads<&'static str>, String> = probe::load_each()
            .map(|each| {
                each.into_iter()
                    .map(|(name, r)| {
                        let r = r.map_err(|_| {
                            // The refusal's "--kernel: " is said by the line it goes in.
                            probe::refusal("--kernel", name)
                                .map(|l| l.trim_start_matches("--kernel: ").to_string())
                                .unwrap_or_else(|| {
                                    format!(
                                        "the verifier refused sockwrap's {} program though every feature it needs is here (a sockwrap bug)",
                                        sockwrap_kernel::programs::attach_type(name).unwrap_or(name)
                                    )
                                })
                        });
                        (name, r)
                    })
                    .collect()
            })
            .map_err(|e| e.to_string());
        let all_load = programs
            .as_ref()
            .is_ok_and(|v| v.iter().all(|(_, r)| r.is_ok()));
        let options = match (layout.v2(), all_load) {
            _ if !root => Err("only root can load BPF programs".into()),
            (Some(mount), true) => probe::options(mount).map_err(|e| e.to_string()),
            (None, _) => Err("no cgroup v2".into()),
            (_, false) => Err("the programs do not load".into()),
        };
        Support {
            release: probe::kernel_release(),
            layout,
            root,
            programs,
            options,
            pidfd_getfd: pidfd_getfd_works(),
            mptcp_socket: mptcp_socket(),
            mptcp_bpf: sockwrap_kernel::mptcp::probe(),
        }
    }

    /// Whether the kernel backend can run here: cgroup v2 and every program loads.
    fn backend(&self) -> Result<(), String> {
        if self.layout.v2().is_none() {
            return Err(self.layout.describe());
        }
        match &self.programs {
            Err(e) => Err(format!("not probed: {e}")),
            Ok(v) => match v.iter().find_map(|(_, r)| r.as_ref().err()) {
                Some(why) => Err(why.clone()),
                None => Ok(()),
            },
        }
    }

    fn program_loads(&self, name: &str) -> Option<bool> {
        self.programs
            .as_ref()
            .ok()?
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, r)| r.is_ok())
    }

    fn options_with(&self, want: OptionOutcome) -> Vec<&'static str> {
        match &self.options {
            Ok(v) => v
                .iter()
                .filter(|(_, o)| *o == want)
                .map(|(opt, _)| opt.name())
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    fn never_from_bpf() -> Vec<&'static str> {
        Opt::ALL
            .into_iter()
            // MPTCP is the conversion program's: `mptcp_bpf` says whether it runs here.
            .filter(|o| *o != Opt::Mptcp && sockwrap_kernel::tables::refused_opt(*o).is_some())
            .map(Opt::name)
            .collect()
    }

    fn yes_no(v: Option<bool>) -> &'static str {
        match v {
            Some(true) => "yes",
            Some(false) => "no",
            None => "not probed",
        }
    }

    /// The lines `doctor` prints.
    pub fn text(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "kernel: {} (each feature below is probed, not assumed from the version)",
            self.release
        );
        let _ = writeln!(o, "cgroups: {}", self.layout.describe());
        if !self.root {
            let _ = writeln!(
                o,
                "kernel backend (--kernel): not probed: only root can load BPF programs (sudo sockwrap doctor)"
            );
        }
        match self.backend() {
            _ if !self.root => {}
            Ok(()) => {
                let n = self.programs.as_ref().map(|v| v.len()).unwrap_or(0);
                let _ = writeln!(
                    o,
                    "kernel backend (--kernel): yes: all {n} BPF programs load"
                );
            }
            Err(why) => {
                let _ = writeln!(o, "kernel backend (--kernel): NO: {why}");
                if let Ok(v) = &self.programs {
                    for (name, r) in v {
                        if r.is_err() {
                            let _ = writeln!(
                                o,
                                "  program {} ({}): does not load",
                                name,
                                sockwrap_kernel::programs::attach_type(name).unwrap_or("?")
                            );
                        }
                    }
                }
            }
        }
        match &self.options {
            _ if !self.root => {}
            Ok(_) => {
                let set = self.options_with(OptionOutcome::Set);
                let refused = self.options_with(OptionOutcome::Refused);
                let _ = writeln!(
                    o,
                    "  options BPF sets here (tried on a connect): {}",
                    set.join(", ")
                );
                if !refused.is_empty() {
                    let _ = writeln!(
                        o,
                        "  options this kernel's bpf_setsockopt refuses: {} (--kernel warns when one is refused; the library sets them)",
                        refused.join(", ")
                    );
                }
            }
            Err(e) => {
                let _ = writeln!(o, "  options from BPF: not measured ({e})");
            }
        }
        let _ = writeln!(
            o,
            "  options no kernel takes from BPF: {} (refused by name; the library sets them)",
            Self::never_from_bpf().join(", ")
        );
        let locks = self.program_loads("sw_setsockopt");
        let deny = ["sw_connect4", "sw_connect6", "sw_sendmsg4", "sw_sendmsg6"]
            .iter()
            .map(|p| self.program_loads(p))
            .try_fold(true, |acc, v| v.map(|v| acc && v));
        let redirect = [
            "sw_getpeername4",
            "sw_getpeername6",
            "sw_recvmsg4",
            "sw_recvmsg6",
        ]
        .iter()
        .map(|p| self.program_loads(p))
        .try_fold(true, |acc, v| v.map(|v| acc && v))
        .map(|r| r && deny == Some(true));
        let _ = writeln!(
            o,
            "  locks: {}; deny: {}; redirect: {}; delay, fail and trace: library only",
            Self::yes_no(locks),
            Self::yes_no(deny),
            Self::yes_no(redirect)
        );
        let attach = match self.pidfd_getfd {
            Ok(()) => "yes (pidfd_getfd)".into(),
            Err(e) => errno_text(e),
        };
        let _ = writeln!(o, "attach: {attach}");
        let follow = match (&self.pidfd_getfd, self.backend()) {
            _ if !self.root => "not probed (root only, as the kernel backend)".to_string(),
            (Ok(()), Ok(())) => "yes".to_string(),
            (Err(_), _) => "no: attach is not available".into(),
            (_, Err(_)) => "no: the kernel backend is not available".into(),
        };
        let _ = writeln!(o, "attach --follow: {follow}");
        let _ = writeln!(
            o,
            "MPTCP sockets (the library's --mptcp): {}",
            mptcp_socket_text(self.mptcp_socket)
        );
        let bpf = match &self.mptcp_bpf {
            MptcpConversion::Works => format!(
                "yes: {} (run --kernel --mptcp and enable --kernel --mptcp convert with it)",
                self.mptcp_bpf.describe()
            ),
            MptcpConversion::NotProbed => self.mptcp_bpf.describe(),
            other => format!("no: {}", other.describe()),
        };
        let _ = writeln!(
            o,
            "MPTCP from BPF (fmod_ret on update_socket_protocol, Linux 6.6+): {bpf}"
        );
        o
    }

    /// One JSON object with the same facts.
    pub fn json(&self) -> String {
        // `true` where it works, else the text that says why not.
        let works = |r: std::result::Result<(), String>| match r {
            Ok(()) => Json::Bool(true),
            Err(why) => why.into(),
        };
        let backend = self.backend();
        let mut kernel_backend = vec![
            ("ok".to_string(), backend.is_ok().into()),
            ("why".to_string(), backend.err().into()),
            (
                "programs".to_string(),
                match &self.programs {
                    Ok(v) => obj(v
                        .iter()
                        .map(|(n, r)| (n.to_string(), works(r.clone())))
                        .collect()),
                    Err(e) => e.as_str().into(),
                },
            ),
        ];
        match &self.options {
            Ok(_) => kernel_backend.extend([
                (
                    "options_set".to_string(),
                    self.options_with(OptionOutcome::Set).into(),
                ),
                (
                    "options_refused".to_string(),
                    self.options_with(OptionOutcome::Refused).into(),
                ),
            ]),
            Err(e) => kernel_backend.extend([
                ("options_set".to_string(), Json::Null),
                ("options_error".to_string(), e.as_str().into()),
            ]),
        }
        kernel_backend.push(("options_never".to_string(), Self::never_from_bpf().into()));
        object([
            ("kernel", self.release.as_str().into()),
            (
                "cgroup",
                object([
                    ("layout", self.layout.name().into()),
                    (
                        "v2",
                        self.layout.v2().map(|p| p.display().to_string()).into(),
                    ),
                ]),
            ),
            ("root", self.root.into()),
            ("kernel_backend", obj(kernel_backend)),
            ("attach", works(self.pidfd_getfd.map_err(errno_text))),
            (
                "mptcp_socket",
                works(self.mptcp_socket.map_err(|e| mptcp_socket_text(Err(e)))),
            ),
            (
                "mptcp_bpf",
                match &self.mptcp_bpf {
                    MptcpConversion::Works => Json::Bool(true),
                    other => other.describe().into(),
                },
            ),
        ])
        .to_json()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_layouts_are_told_apart() {
        let pure = "cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid 0 0\n";
        assert_eq!(Layout::of(pure), Layout::Unified("/sys/fs/cgroup".into()));
        let hybrid = "tmpfs /sys/fs/cgroup tmpfs ro 0 0\n\
                      cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n\
                      cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n";
        assert_eq!(
            Layout::of(hybrid),
            Layout::Hybrid("/sys/fs/cgroup/unified".into())
        );
        assert_eq!(
            Layout::of("cgroup /sys/fs/cgroup/cpu cgroup rw 0 0\n"),
            Layout::V1Only
        );
        assert_eq!(Layout::of(""), Layout::None);
    }
}
