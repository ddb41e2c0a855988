//! MPTCP for every program of a cgroup: `src/bpf/mptcp.bpf.c`, an `fmod_ret` program on
//! `update_socket_protocol` (Linux 6.6+) that makes `socket(AF_INET/AF_INET6, SOCK_STREAM,
//! 0 or IPPROTO_TCP)` create an MPTCP socket when the caller is in the target cgroup and the
//! policy selects its program.
//!
//! - [`refusals`]: rules that set `mptcp` and select by what `socket()` does not know yet
//!   (destination, ports, role): the protocol is chosen there and the kernel backend cannot
//!   turn the socket back into TCP later as the library does, so they are refused by name.
//! - [`Selection`]: which programs' sockets are converted, from the policy.
//! - [`Conversion`]: the program loaded (which is the probe: [`Conversion::load`] fails with
//!   what the kernel said), aimed at a cgroup, attached through a BPF link, or pinned for a
//!   systemd unit ([`Conversion::pin`], [`target_pinned`]).
//!
//! aya 0.14 knows no fmod_ret program type (its `ProgramSection` lists `fmod_ret+` as not
//! supported), so the object is parsed and its maps made and relocated with aya's lower layer
//! (aya-obj, `MapData::create`), and the program is loaded and attached with the two
//! `bpf(2)` commands it needs, written here: BPF_PROG_LOAD with BPF_MODIFY_RETURN and
//! BPF_RAW_TRACEPOINT_OPEN (which attaches tracing programs and returns a link).
//!
//! Called by the CLI (`run --kernel`, `enable --kernel`, `doctor`) through [`crate::probe`]
//! and directly.

use crate::sys;
use crate::sys::errno_text;
use crate::tables::comm_key;
use crate::Error;
use sockwrap_policy::rules::Match;
use sockwrap_policy::{Ctx, Opt, Policy, Transport, Value};
use std::collections::HashSet;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The object clang built from `src/bpf/mptcp.bpf.c` (see build.rs).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/mptcp.bpf.o"));

/// The program's name in the object.
pub const PROGRAM: &str = "sw_mptcp";
/// The file the link is pinned as in a unit's pin directory (`enable --kernel`).
pub use crate::programs::MPTCP_LINK_PIN as LINK_PIN;
/// The map that holds the target cgroup, pinned under the pin directory's `maps/`.
pub const TARGET_MAP: &str = "mptcp_target";
/// What to use where the kernel cannot convert.
pub const INSTEAD: &str = "Go 1.21+ programs: GODEBUG=multipathtcp=1, dynamically linked ones: sockwrap run --mptcp without --kernel";

/// Whether a rule's match (or its exception) needs what socket() does not know.
fn decided_later(m: &Match) -> bool {
    m.needs_remote()
        || m.uses_local_port()
        || m.role.is_some()
        || m.except.as_deref().is_some_and(decided_later)
}

/// One line per rule that sets `mptcp` but selects by destination, port or role (or host):
/// the protocol is chosen at socket(), before any of them is known.
pub fn refusals(policy: &Policy) -> Vec<String> {
    policy
        .rules()
        .iter()
        .filter(|r| r.settings.get(Opt::Mptcp).is_some() && decided_later(&r.matcher))
        .map(|r| {
            format!(
                "rule `{}`: mptcp: the protocol is chosen at socket(), before the destination, the ports and the role are known, and the kernel backend cannot turn an MPTCP socket back into TCP later as the library does; select such a rule by program only (match.program), or use the library (sockwrap run --mptcp without --kernel)",
                r.name
            )
        })
        .collect()
}

/// Which sockets the conversion turns into MPTCP: TCP sockets (AF_INET, AF_INET6) of the
/// programs the policy gives `mptcp = true` when only the program is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// Programs that no rule names.
    pub others: bool,
    /// Programs by their kernel name (the first 15 bytes), where they differ from `others`.
    pub comms: Vec<([u8; 16], bool)>,
}

fn wants(policy: &Policy) -> bool {
    let ctx = Ctx {
        transport: Transport::Tcp,
        role: None,
        remote: None,
        local_port: None,
        host: None,
    };
    policy.decide(&ctx).get(Opt::Mptcp).map(|s| s.value) == Some(Value::Bool(true))
}

fn names(m: &Match, out: &mut Vec<String>) {
    out.extend(m.program.iter().cloned());
    if let Some(e) = m.except.as_deref() {
        names(e, out);
    }
}

impl Selection {
    /// The selection of a policy, or `None` when it converts no socket (no rule sets
    /// `mptcp = true` for any program). Rules [`refusals`] names are refused before this.
    pub fn of(policy: &Policy) -> Option<Selection> {
        if !policy.manages(Opt::Mptcp) {
            return None;
        }
        let others = wants(&policy.for_program(&[]));
        let mut all = Vec::new();
        for r in policy.rules() {
            names(&r.matcher, &mut all);
        }
        all.sort();
        all.dedup();
        // Names that share a kernel name are decided together, as the other programs do.
        let mut by_key: Vec<([u8; 16], Vec<&str>)> = Vec::new();
        for n in &all {
            let k = comm_key(n);
            match by_key.iter_mut().find(|(x, _)| *x == k) {
                Some((_, v)) => v.push(n),
                None => by_key.push((k, vec![n])),
            }
        }
        let comms: Vec<([u8; 16], bool)> = by_key
            .iter()
            .map(|(k, v)| (*k, wants(&policy.for_program(v))))
            .filter(|(_, w)| *w != others)
            .collect();
        if !others && comms.is_empty() {
            return None;
        }
        Some(Selection { others, comms })
    }
}

/// Why [`Conversion::load`] failed.
#[derive(Debug)]
pub enum LoadError {
    /// What the kernel said: no such function, no BTF, refused (errno); with the verifier's
    /// log where the kernel gave one (for `--log debug` only).
    Kernel(MptcpConversion, String),
    /// Anything else (the object, a map).
    Other(Error),
}

/// The conversion program, loaded; aimed and attached by the caller. Dropping it detaches
/// it (the link's descriptor is the attachment) unless it was pinned.
pub struct Conversion {
    prog: OwnedFd,
    maps: Vec<(String, aya::maps::MapData)>,
    link: Option<OwnedFd>,
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    prog_btf_fd: u32,
    func_info_rec_size: u32,
    func_info: u64,
    func_info_cnt: u32,
    line_info_rec_size: u32,
    line_info: u64,
    line_info_cnt: u32,
    attach_btf_id: u32,
    attach_btf_obj_fd: u32,
    pad: u32,
}

/// `union bpf_attr` for BPF_RAW_TRACEPOINT_OPEN (which also attaches tracing programs).
#[repr(C)]
#[derive(Default)]
struct RawTpAttr {
    name: u64,
    prog_fd: u32,
    pad: u32,
}

/// `struct mptcp_config` of mptcp.h, the one value of `mptcp_config` (a test checks the
/// layout against the header).
#[repr(C)]
struct MptcpConfig {
    others: u32,
    pad: u32,
}

impl MptcpConfig {
    fn to_bytes(&self) -> [u8; 8] {
        let mut b = [0; 8];
        b[..4].copy_from_slice(&self.others.to_ne_bytes());
        b[4..].copy_from_slice(&self.pad.to_ne_bytes());
        b
    }
}

/// `union bpf_attr` for BPF_MAP_LOOKUP_ELEM / BPF_MAP_UPDATE_ELEM.
#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;
const BPF_PROG_TYPE_TRACING: u32 = 26;
const BPF_MODIFY_RETURN: u32 = 26;

fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

fn update(fd: i32, key: &[u8], value: &[u8]) -> std::io::Result<()> {
    let mut a = MapElemAttr {
        map_fd: fd as u32,
        key: key.as_ptr() as u64,
        value: value.as_ptr() as u64,
        ..Default::default()
    };
    // SAFETY: a map update's attribute; key and value point at live slices of the map's
    // key and value sizes (the callers pass them), which the kernel only reads.
    unsafe { sys::bpf(BPF_MAP_UPDATE_ELEM, &mut a) }.map(|_| ())
}

fn pin_fd(fd: BorrowedFd, path: &Path) -> Result<(), Error> {
    crate::links::pin(fd, path).map_err(|e| Error(format!("pinning {}: {e}", path.display())))
}

/// The `update_socket_protocol` function's id in the kernel's BTF.
fn target_btf_id() -> Result<u32, MptcpConversion> {
    use aya_obj::btf::BtfKind;
    let btf = aya::Btf::from_sys_fs().map_err(|_| MptcpConversion::NoBtf)?;
    btf.id_by_type_name_kind("update_socket_protocol", BtfKind::Func)
        .map_err(|_| MptcpConversion::NoFunction)
}

impl Conversion {
    /// Loads the program with `sel` in its maps (the target cgroup not yet set: it converts
    /// nothing until [`Conversion::target`]). This is the probe: where the kernel cannot
    /// convert, the error is what it said.
    pub fn load(sel: &Selection) -> Result<Conversion, LoadError> {
        if !crate::sys::is_root() {
            return Err(LoadError::Kernel(MptcpConversion::NotProbed, String::new()));
        }
        let btf_id = target_btf_id().map_err(|c| LoadError::Kernel(c, String::new()))?;
        let other = |what: &str, e: &dyn std::fmt::Display| {
            LoadError::Other(Error(format!("the MPTCP program: {what}: {e}")))
        };
        let mut obj = aya_obj::Object::parse(OBJECT).map_err(|e| other("parsing", &e))?;
        let mut maps = Vec::new();
        for (name, m) in &obj.maps {
            // Without the object's BTF loaded in the kernel, the maps are made from their
            // sizes alone (the kernel would look the type ids up in a BTF we do not give).
            let mut m = m.clone();
            if let aya_obj::Map::Btf(b) = &mut m {
                b.def.btf_key_type_id = 0;
                b.def.btf_value_type_id = 0;
            }
            let data = aya::maps::MapData::create(m, name, None)
                .map_err(|e| other(&format!("map {name}"), &crate::programs::with_sources(&e)))?;
            maps.push((name.clone(), data));
        }
        {
            let fds: Vec<(&str, i32, &aya_obj::Map)> = maps
                .iter()
                .map(|(n, d)| {
                    let m = &obj.maps[n.as_str()];
                    (n.as_str(), d.fd().as_fd().as_raw_fd(), m)
                })
                .collect();
            let mut relocated = obj.clone();
            relocated
                .relocate_maps(fds.into_iter(), &HashSet::new())
                .map_err(|e| other("relocating maps", &e))?;
            relocated
                .relocate_calls(&HashSet::new())
                .map_err(|e| other("relocating calls", &e))?;
            obj = relocated;
        }
        let prog = obj
            .programs
            .get(PROGRAM)
            .ok_or_else(|| other("the object", &format!("no program `{PROGRAM}`")))?;
        let insns = &obj
            .functions
            .get(&prog.function_key())
            .ok_or_else(|| other("the object", &"no instructions"))?
            .instructions;
        let mut name = [0u8; 16];
        name[..PROGRAM.len()].copy_from_slice(PROGRAM.as_bytes());
        let load = |log: &mut Vec<u8>| {
            let mut attr = ProgLoadAttr {
                prog_type: BPF_PROG_TYPE_TRACING,
                insn_cnt: insns.len() as u32,
                insns: insns.as_ptr() as u64,
                license: obj.license.as_ptr() as u64,
                prog_name: name,
                expected_attach_type: BPF_MODIFY_RETURN,
                attach_btf_id: btf_id,
                ..Default::default()
            };
            if !log.is_empty() {
                attr.log_level = 1;
                attr.log_size = log.len() as u32;
                attr.log_buf = log.as_mut_ptr() as u64;
            }
            // SAFETY: a program load's attribute; insns, license and name point at the
            // parsed object, which outlives the call, and log_buf (when set) at `log`,
            // log_size bytes the kernel may write.
            let fd = unsafe { sys::bpf(BPF_PROG_LOAD, &mut attr) }?;
            // SAFETY: BPF_PROG_LOAD returned a new descriptor of our own.
            Ok(unsafe { sys::owned_fd(fd) })
        };
        let prog = match load(&mut Vec::new()) {
            Ok(fd) => fd,
            Err(e) => {
                // Once more with the verifier's log, for --log debug.
                let mut log = vec![0u8; 64 * 1024];
                let _ = load(&mut log);
                let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                let text = String::from_utf8_lossy(&log[..end]).into_owned();
                return Err(LoadError::Kernel(
                    MptcpConversion::Refused(errno(&e)),
                    format!("BPF_PROG_LOAD: {e}\n{text}"),
                ));
            }
        };
        let conv = Conversion {
            prog,
            maps,
            link: None,
        };
        let config = MptcpConfig {
            others: sel.others as u32,
            pad: 0,
        };
        conv.update("mptcp_config", &0u32.to_ne_bytes(), &config.to_bytes())?;
        for (k, w) in &sel.comms {
            conv.update("mptcp_comms", k, &(*w as u32).to_ne_bytes())?;
        }
        Ok(conv)
    }

    fn map_fd(&self, name: &str) -> Result<i32, Error> {
        self.maps
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, d)| d.fd().as_fd().as_raw_fd())
            .ok_or_else(|| Error(format!("the MPTCP program has no map `{name}`")))
    }

    fn update(&self, map: &str, key: &[u8], value: &[u8]) -> Result<(), LoadError> {
        let fd = self.map_fd(map).map_err(LoadError::Other)?;
        update(fd, key, value)
            .map_err(|e| LoadError::Other(Error(format!("the MPTCP program's map {map}: {e}"))))
    }

    /// Converts the sockets made in `cgroup` (an open cgroup v2 directory) and below it.
    pub fn target(&self, cgroup: &std::fs::File) -> Result<(), Error> {
        let fd = self.map_fd(TARGET_MAP)?;
        update(
            fd,
            &0u32.to_ne_bytes(),
            &(cgroup.as_raw_fd() as u32).to_ne_bytes(),
        )
        .map_err(|e| Error(format!("the MPTCP program's target cgroup: {e}")))
    }

    /// Attaches the program to update_socket_protocol (every socket() of the machine runs
    /// it; it converts only in the target cgroup).
    pub fn attach(&mut self) -> Result<(), LoadError> {
        let mut a = RawTpAttr {
            prog_fd: self.prog.as_raw_fd() as u32,
            ..Default::default()
        };
        // SAFETY: the attribute holds no address (name 0: the program's own target).
        match unsafe { sys::bpf(BPF_RAW_TRACEPOINT_OPEN, &mut a) } {
            Ok(fd) => {
                // SAFETY: the command returned a new descriptor of our own.
                self.link = Some(unsafe { sys::owned_fd(fd) });
                Ok(())
            }
            Err(e) => Err(LoadError::Kernel(
                MptcpConversion::Refused(errno(&e)),
                format!("BPF_RAW_TRACEPOINT_OPEN: {e}"),
            )),
        }
    }

    /// How many sockets it converted.
    pub fn converted(&self) -> u64 {
        let Ok(fd) = self.map_fd("mptcp_counters") else {
            return 0;
        };
        let key = 0u32;
        let mut value = 0u64;
        let mut a = MapElemAttr {
            map_fd: fd as u32,
            key: &key as *const u32 as u64,
            value: &mut value as *mut u64 as u64,
            ..Default::default()
        };
        // SAFETY: key and value point at the locals above, of the map's key and value sizes
        // (u32, u64), live across the call; the kernel writes only `value`.
        match unsafe { sys::bpf(BPF_MAP_LOOKUP_ELEM, &mut a) } {
            Ok(_) => value,
            Err(_) => 0,
        }
    }

    /// Pins the attached link as `dir/mptcp` (it stays attached while the file is there) and
    /// the maps under `dir/maps/`. Returns the files made.
    pub fn pin(&self, dir: &Path) -> Result<Vec<PathBuf>, Error> {
        let link = self
            .link
            .as_ref()
            .ok_or_else(|| Error("the MPTCP program is not attached".into()))?;
        let mut made = Vec::new();
        for (name, d) in &self.maps {
            let path = dir.join(crate::programs::MAPS_DIR).join(name);
            pin_fd(d.fd().as_fd(), &path)?;
            made.push(path);
        }
        let path = dir.join(LINK_PIN);
        pin_fd(link.as_fd(), &path)?;
        made.push(path);
        Ok(made)
    }
}

/// Aims the conversion pinned under `dir` ([`Conversion::pin`]) at `cgroup`: run by a
/// systemd unit's `ExecStartPre=` in the unit's fresh cgroup, each time it starts.
pub fn target_pinned(dir: &Path, cgroup: &std::fs::File) -> Result<(), Error> {
    let path = dir.join(crate::programs::MAPS_DIR).join(TARGET_MAP);
    let map = crate::links::get(&path).map_err(|e| Error(format!("{}: {e}", path.display())))?;
    update(
        map.as_raw_fd(),
        &0u32.to_ne_bytes(),
        &(cgroup.as_raw_fd() as u32).to_ne_bytes(),
    )
    .map_err(|e| Error(format!("{}: {e}", path.display())))
}

/// The probe for `doctor` and the refusals: the real program, loaded, attached (aimed at
/// no cgroup, so it converts nothing) and detached at once.
pub fn probe() -> MptcpConversion {
    let sel = Selection {
        others: false,
        comms: Vec::new(),
    };
    match Conversion::load(&sel).and_then(|mut c| c.attach()) {
        Ok(()) => MptcpConversion::Works,
        Err(LoadError::Kernel(c, _)) => c,
        Err(LoadError::Other(_)) => MptcpConversion::Refused(0),
    }
}

/// The one line for a kernel that cannot convert: the kernel's release, what it said and
/// what to use instead.
pub fn refusal(what: MptcpConversion) -> String {
    let release = crate::sys::kernel_release();
    let why = match what {
        MptcpConversion::NoFunction => {
            "there is no update_socket_protocol to attach to (ESRCH: the function came in Linux 6.6)"
                .to_string()
        }
        MptcpConversion::Refused(e) => format!(
            "fmod_ret programs are refused ({}: trampolines, lockdown or the kernel's configuration)",
            errno_text(e)
        ),
        other => other.describe(),
    };
    format!(
        "MPTCP: the protocol is chosen in socket(), and changing it from BPF takes an fmod_ret program on update_socket_protocol (Linux 6.6+): on this kernel ({release}), {why}; {INSTEAD}"
    )
}

/// Whether MPTCP sockets can be made in this network namespace: `Err` with the errno
/// socket(IPPROTO_MPTCP) gave (ENOPROTOOPT: net.mptcp.enabled=0).
pub fn sockets_here() -> Result<(), i32> {
    crate::sys::tcp_socket_with(libc::IPPROTO_MPTCP as u32)
}

/// Whether sockets can be made MPTCP from BPF here: an `fmod_ret` program on
/// `update_socket_protocol` (Linux 6.6+) that changes the protocol `socket()` asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MptcpConversion {
    /// The program loaded and attached (and was detached at once).
    Works,
    /// The kernel has no `update_socket_protocol` in its BTF (ESRCH, as libbpf says it).
    NoFunction,
    /// No BTF for the kernel (/sys/kernel/btf/vmlinux): fmod_ret cannot be attached.
    NoBtf,
    /// The kernel refused to load or attach it, with this errno.
    Refused(i32),
    /// Not root: not probed.
    NotProbed,
}

impl MptcpConversion {
    /// What it means, for a sentence about this kernel.
    pub fn describe(&self) -> String {
        match self {
            MptcpConversion::Works => {
                "an fmod_ret program on update_socket_protocol loads and attaches here".into()
            }
            MptcpConversion::NoFunction => {
                "there is no update_socket_protocol to attach to (ESRCH)".into()
            }
            MptcpConversion::NoBtf => {
                "there is no kernel BTF (/sys/kernel/btf/vmlinux), which fmod_ret needs".into()
            }
            MptcpConversion::Refused(e) => {
                format!("fmod_ret programs are refused ({})", errno_text(*e))
            }
            MptcpConversion::NotProbed => "not probed (only root can load BPF programs)".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn mptcp_h_and_its_rust_mirror_agree() {
        use crate::abi::header::{self, layout};
        let h = header::parse(include_str!("bpf/mptcp.h")).expect("mptcp.h");
        let comm = header::Layout {
            size: 16,
            align: 1,
            fields: vec![("name".into(), 0, 16)],
        };
        assert_eq!(
            comm.size,
            std::mem::size_of_val(&crate::tables::comm_key("x"))
        );
        let structs = [
            ("mptcp_config", layout!(MptcpConfig { others, pad })),
            ("comm", comm),
        ];
        assert!(h.structs.len() == 2 && h.defines.is_empty(), "{h:?}");
        let diff = header::differences(&h, &[], &structs);
        assert!(
            diff.is_empty(),
            "mptcp.h and mptcp.rs differ:\n  {}",
            diff.join("\n  ")
        );
    }

    use super::*;
    use sockwrap_policy::rules::{Cidr, Rule};
    use sockwrap_policy::{OnError, Role};

    fn policy(rules: Vec<Rule>) -> Policy {
        Policy::new(rules, OnError::Warn)
    }

    #[test]
    fn the_object_has_the_program_and_its_maps() {
        let obj = aya_obj::Object::parse(OBJECT).expect("mptcp.bpf.o parses");
        assert!(obj.programs.contains_key(PROGRAM));
        for m in [TARGET_MAP, "mptcp_config", "mptcp_comms", "mptcp_counters"] {
            assert!(obj.maps.contains_key(m), "{m}");
        }
    }

    #[test]
    fn selection_by_program_and_refusal_by_destination() {
        let mut all = Rule::new("all");
        all.set(Opt::Mptcp, Value::Bool(true), true);
        assert_eq!(
            Selection::of(&policy(vec![all.clone()])),
            Some(Selection {
                others: true,
                comms: vec![]
            })
        );
        let mut not_curl = Rule::new("not-curl");
        not_curl.matcher.program = vec!["curl".into()];
        not_curl.set(Opt::Mptcp, Value::Bool(false), true);
        let p = policy(vec![all.clone(), not_curl]);
        assert_eq!(
            Selection::of(&p),
            Some(Selection {
                others: true,
                comms: vec![(comm_key("curl"), false)]
            })
        );
        assert!(refusals(&p).is_empty());
        let mut only_ssh = Rule::new("ssh");
        only_ssh.matcher.program = vec!["ssh".into()];
        only_ssh.set(Opt::Mptcp, Value::Bool(true), true);
        assert_eq!(
            Selection::of(&policy(vec![only_ssh])),
            Some(Selection {
                others: false,
                comms: vec![(comm_key("ssh"), true)]
            })
        );
        let mut dscp = Rule::new("dscp");
        dscp.set(Opt::Tos, Value::Int(0xb8), true);
        assert_eq!(Selection::of(&policy(vec![dscp])), None);

        let mut remote = Rule::new("remote");
        remote.matcher.remote = vec![Cidr::parse("10.0.0.0/8").expect("cidr")];
        remote.set(Opt::Mptcp, Value::Bool(true), true);
        let mut role = Rule::new("role");
        role.matcher.role = Some(Role::Client);
        role.set(Opt::Mptcp, Value::Bool(true), true);
        let lines = refusals(&policy(vec![all, remote, role]));
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].starts_with("rule `remote`: mptcp: "), "{lines:?}");
        assert!(lines[1].starts_with("rule `role`: mptcp: "), "{lines:?}");
    }

    #[test]
    fn a_refusal_is_one_line_that_names_the_errno_and_what_instead() {
        let l = refusal(MptcpConversion::Refused(libc::EPERM));
        assert!(
            l.contains("fmod_ret programs are refused (EPERM: Operation not permitted"),
            "{l}"
        );
        assert!(
            l.contains("GODEBUG=multipathtcp=1") && !l.contains('\n'),
            "{l}"
        );
        let l = refusal(MptcpConversion::NoFunction);
        assert!(
            l.contains("there is no update_socket_protocol to attach to (ESRCH"),
            "{l}"
        );
    }
}
