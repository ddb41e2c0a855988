//! The compiled programs, loaded, filled with a policy's [`Tables`] and attached to one
//! cgroup. Dropping [`Attached`] detaches them: they are attached through BPF links, which
//! the kernel also releases when sockwrap dies, so a killed sockwrap leaves no program
//! behind (only its empty cgroup, which [`crate::cgroup::sweep`] removes).
//!
//! [`pin`] instead leaves the loaded programs and their maps in a BPF filesystem, attached
//! to nothing, for whoever attaches them (systemd's `BPFProgram=`: `sockwrap enable UNIT
//! --kernel`); they stay until [`unpin`] removes the files.

use crate::abi::{
    Config, DKey, KAction, KPlan, LpmKey, OptKey, PortClasses, CFG_ACTIONS, CFG_PROGRAMS,
    N_COUNTERS, PORT_ENTRIES, STAGE_ACCEPT_FULL,
};
use crate::tables::Tables;
use crate::Error;
use aya::maps::{Array, HashMap, LpmTrie, Map, MapData};
use aya::programs::{
    CgroupAttachMode, CgroupSock, CgroupSockAddr, CgroupSockopt, Program, SockOps,
};
use aya::{Ebpf, EbpfLoader};
use sockwrap_policy::Stage;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

/// The object clang built from `src/bpf/sockwrap.bpf.c` (see build.rs).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sockwrap.bpf.o"));

/// The programs, in the order they are attached.
pub const PROGRAMS: [&str; 9] = [
    "sw_setsockopt",
    "sw_sock_create",
    "sw_bind4",
    "sw_bind6",
    "sw_connect4",
    "sw_connect6",
    "sw_sendmsg4",
    "sw_sendmsg6",
    "sw_sockops",
];

/// Attached as well when some rule redirects: they answer getpeername and recvmsg with the
/// address the program asked for.
pub const REDIRECT_PROGRAMS: [&str; 4] = [
    "sw_getpeername4",
    "sw_getpeername6",
    "sw_recvmsg4",
    "sw_recvmsg6",
];

fn err(what: &str, e: impl std::fmt::Display) -> Error {
    Error(format!("{what}: {e}"))
}

/// A program the kernel would not load: which, the errno, and the verifier's log (for
/// `--log debug`, never for the user's error line: [`crate::probe::refusal`] says what the
/// kernel lacks).
#[derive(Debug)]
pub struct LoadFailure {
    pub program: &'static str,
    pub errno: Option<i32>,
    /// The error and the verifier's whole log.
    pub log: String,
}

/// Why [`Attached::load`] or [`pin`] failed.
#[derive(Debug)]
pub enum Failed {
    /// The kernel refused to load one of the programs.
    Load(LoadFailure),
    /// Anything else: the object, a map, an attach.
    Other(Error),
}

impl From<Error> for Failed {
    fn from(e: Error) -> Failed {
        Failed::Other(e)
    }
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failed::Load(l) => write!(
                f,
                "program {}: the kernel refused to load it ({})",
                l.program,
                l.errno
                    .map(crate::sys::errno_text)
                    .unwrap_or_else(|| "no errno".into())
            ),
            Failed::Other(e) => e.fmt(f),
        }
    }
}

fn load_failure(program: &'static str, e: &aya::programs::ProgramError) -> Failed {
    let errno = match e {
        aya::programs::ProgramError::LoadError { io_error, .. } => io_error.raw_os_error(),
        _ => None,
    };
    Failed::Load(LoadFailure {
        program,
        errno,
        log: error_text(e),
    })
}

/// A program error with all it carries (the verifier's log included), as text.
pub(crate) fn error_text(e: &aya::programs::ProgramError) -> String {
    format!("{e:#}")
}

/// The programs loaded and attached to one cgroup.
pub struct Attached {
    ebpf: Ebpf,
}

fn map<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Map, Error> {
    ebpf.map_mut(name)
        .ok_or_else(|| Error(format!("the BPF object has no map `{name}`")))
}

/// Writes port classes into a BPF_F_MMAPABLE array of `struct port_classes` (four ports each).
fn fill_ports(ebpf: &mut Ebpf, name: &str, class: &[u16]) -> Result<(), Error> {
    if class.iter().all(|&c| c == 0) {
        return Ok(()); // the map starts zeroed
    }
    let Map::Array(data) = map(ebpf, name)? else {
        return Err(Error(format!("map `{name}` is not an array")));
    };
    let data: &MapData = data;
    let len = PORT_ENTRIES * std::mem::size_of::<PortClasses>();
    // Entry port / 4 holds port's class at index port % 4 (struct port_classes): port p's
    // class is the u16 at byte 2p.
    crate::sys::with_mapped_map(data.fd().as_fd(), len, |mem| {
        for (slot, &c) in mem.chunks_exact_mut(2).zip(class) {
            slot.copy_from_slice(&c.to_ne_bytes());
        }
    })
    .map_err(|e| err(&format!("mmap of map `{name}`"), e))
}

/// The attach type of each program by the name systemd's `BPFProgram=` and bpftool give it.
pub fn attach_type(program: &str) -> Option<&'static str> {
    Some(match program {
        "sw_setsockopt" => "setsockopt",
        "sw_sock_create" => "sock_create",
        "sw_bind4" => "bind4",
        "sw_bind6" => "bind6",
        "sw_connect4" => "connect4",
        "sw_connect6" => "connect6",
        "sw_sendmsg4" => "sendmsg4",
        "sw_sendmsg6" => "sendmsg6",
        "sw_sockops" => "sock_ops",
        "sw_getpeername4" => "getpeername4",
        "sw_getpeername6" => "getpeername6",
        "sw_recvmsg4" => "recvmsg4",
        "sw_recvmsg6" => "recvmsg6",
        _ => return None,
    })
}

/// The programs a policy needs, as (program name, attach type), in [`PROGRAMS`] order: each
/// program only where the tables give it something to do. An attached program runs on
/// every call of its kind in the cgroup (cgroup/setsockopt on every setsockopt of the
/// program, sock_ops on about nine events of every TCP connection), whether it finds a plan
/// or not.
pub fn needed(tables: &Tables) -> Vec<(&'static str, &'static str)> {
    let stage = |codes: &[u8]| {
        tables
            .decisions
            .iter()
            .any(|(k, _)| codes.contains(&k.stage))
    };
    let udp_create = stage(&[Stage::UdpCreate as u8]);
    let programs = tables.flags & CFG_PROGRAMS != 0;
    let actions = tables.flags & CFG_ACTIONS != 0;
    let wanted = |name: &str| match name {
        // Locks: the program's own setsockopt of a locked option.
        "sw_setsockopt" => tables.plans.iter().any(|p| p.lock != 0),
        // UDP's mark, priority and device; the program class of every socket.
        "sw_sock_create" => udp_create || programs,
        "sw_bind4" | "sw_bind6" => stage(&[Stage::Bind as u8]),
        "sw_connect4" | "sw_connect6" => stage(&[Stage::Connect as u8]) || actions,
        // Unconnected UDP: what sock_create cannot set, and deny/redirect per datagram.
        "sw_sendmsg4" | "sw_sendmsg6" => udp_create || actions,
        "sw_sockops" => stage(&[Stage::Listen as u8, Stage::Accept as u8, STAGE_ACCEPT_FULL]),
        _ => tables.redirects,
    };
    PROGRAMS
        .iter()
        .chain(&REDIRECT_PROGRAMS)
        .filter(|n| wanted(n))
        .filter_map(|&n| attach_type(n).map(|t| (n, t)))
        .collect()
}

/// The magic number of a BPF filesystem (`statfs` f_type; linux/magic.h BPF_FS_MAGIC).
const BPF_FS_MAGIC: i64 = 0xcafe4a11;

/// Whether `path` is on a BPF filesystem (bpffs), where programs and maps can be pinned.
pub fn is_bpffs(path: &Path) -> bool {
    crate::sys::fs_type(path) == Some(BPF_FS_MAGIC)
}

/// What [`pin`] left in the BPF filesystem.
pub struct Pinned {
    /// (attach type, path) of each program, in attach order.
    pub programs: Vec<(&'static str, PathBuf)>,
    pub maps: Vec<PathBuf>,
}

/// The subdirectory of a pin directory that holds the maps.
pub const MAPS_DIR: &str = "maps";
/// The file the MPTCP conversion's link is pinned as in a unit's pin directory
/// (`enable --kernel --mptcp`, [`crate::mptcp`]).
pub const MPTCP_LINK_PIN: &str = "mptcp";

/// Loads the programs with `tables` in their maps and pins them, and the maps, under `dir`
/// (on a bpffs; made if missing): one file per program named by its attach type, the maps
/// under `dir/maps/`. Nothing is attached: whoever attaches the pinned programs to a cgroup
/// (systemd's `BPFProgram=`, `bpftool cgroup attach`) gets the policy. On failure, what was
/// pinned is removed again.
pub fn pin(tables: &Tables, dir: &Path) -> Result<Pinned, Failed> {
    let io = |what: &Path, e: std::io::Error| Error(format!("{}: {e}", what.display()));
    std::fs::create_dir_all(dir.join(MAPS_DIR)).map_err(|e| io(dir, e))?;
    let result = pin_into(tables, dir);
    if result.is_err() {
        let _ = unpin(dir);
    }
    result
}

fn pin_into(tables: &Tables, dir: &Path) -> Result<Pinned, Failed> {
    let mut ebpf = load_filled(tables)?;
    let mut pinned = Pinned {
        programs: Vec::new(),
        maps: Vec::new(),
    };
    for (name, kind) in needed(tables) {
        let prog = ebpf
            .program_mut(name)
            .ok_or_else(|| Error(format!("the BPF object has no program `{name}`")))?;
        let what = format!("program {name}");
        let r = match prog {
            Program::CgroupSock(p) => p.load(),
            Program::CgroupSockAddr(p) => p.load(),
            Program::CgroupSockopt(p) => p.load(),
            Program::SockOps(p) => p.load(),
            _ => return Err(Error(format!("{what}: unexpected program type")).into()),
        };
        r.map_err(|e| load_failure(name, &e))?;
        let path = dir.join(kind);
        prog.pin(&path)
            .map_err(|e| err(&format!("pinning {what} at {}", path.display()), e))?;
        pinned.programs.push((kind, path));
    }
    for (name, map) in ebpf.maps() {
        // The compiler's own sections (.rodata): bpffs refuses a `.` in a name, and the
        // programs hold them anyway.
        if name.starts_with('.') {
            continue;
        }
        let path = dir.join(MAPS_DIR).join(name);
        map.pin(&path)
            .map_err(|e| err(&format!("pinning map {name} at {}", path.display()), e))?;
        pinned.maps.push(path);
    }
    Ok(pinned)
}

/// The subdirectory of a pin directory that holds the links of [`attach_pinned`].
pub const LINKS_DIR: &str = "links";

/// Attaches each program [`pin`] pinned under `dir` to the cgroup directory `cgroup`
/// through a BPF link pinned under `dir/links/` (see [`crate::links`]): the policy stays on
/// the cgroup after the command ends, until [`unpin`] removes the pins or the cgroup goes.
/// Returns (attach type, link path) in attach order. On failure nothing stays attached or
/// pinned. (Separate from [`pin`] so that a caller can do what must come before the
/// programs run, such as setting the cgroup's open sockets, after the slow part, loading.)
pub fn attach_pinned(
    pinned: &Pinned,
    dir: &Path,
    cgroup: &std::fs::File,
) -> Result<Vec<(&'static str, PathBuf)>, Error> {
    let links_dir = dir.join(LINKS_DIR);
    let attach = || -> Result<Vec<(&'static str, PathBuf)>, Error> {
        std::fs::create_dir_all(&links_dir)
            .map_err(|e| err(&links_dir.display().to_string(), e))?;
        let mut links = Vec::new();
        for (kind, path) in &pinned.programs {
            let prog = crate::links::get(path)
                .map_err(|e| err(&format!("opening {}", path.display()), e))?;
            let link = crate::links::create(prog.as_fd(), cgroup.as_fd(), kind)
                .map_err(|e| err(&format!("attaching {kind}"), e))?;
            let at = links_dir.join(kind);
            crate::links::pin(link.as_fd(), &at)
                .map_err(|e| err(&format!("pinning the {kind} link at {}", at.display()), e))?;
            links.push((*kind, at));
        }
        Ok(links)
    };
    attach().inspect_err(|_| {
        let _ = unpin(dir);
    })
}

/// Removes what [`pin`] and [`attach_pinned`] made under `dir` (the links, which detaches
/// them; the programs by their attach-type names; the maps) and the directory, if nothing
/// else is in it. Returns the files removed.
pub fn unpin(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let io = |what: &Path, e: std::io::Error| Error(format!("{}: {e}", what.display()));
    let mut removed = Vec::new();
    for sub in [LINKS_DIR, MAPS_DIR] {
        let sub = dir.join(sub);
        if let Ok(entries) = std::fs::read_dir(&sub) {
            for e in entries.flatten() {
                std::fs::remove_file(e.path()).map_err(|x| io(&e.path(), x))?;
                removed.push(e.path());
            }
        }
        let _ = std::fs::remove_dir(&sub);
    }
    // The MPTCP conversion's link (crate::mptcp): removing it detaches it.
    let link = dir.join(MPTCP_LINK_PIN);
    match std::fs::remove_file(&link) {
        Ok(()) => removed.push(link),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(&link, e)),
    }
    for name in PROGRAMS.iter().chain(&REDIRECT_PROGRAMS) {
        let Some(kind) = attach_type(name) else {
            continue;
        };
        let path = dir.join(kind);
        match std::fs::remove_file(&path) {
            Ok(()) => removed.push(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&path, e)),
        }
    }
    let _ = std::fs::remove_dir(dir);
    Ok(removed)
}

/// The counters of programs pinned under `dir` (see [`Attached::counters`]), if the map is
/// there.
pub fn pinned_counters(dir: &Path) -> Option<Vec<u64>> {
    let data = MapData::from_pin(dir.join(MAPS_DIR).join("counters")).ok()?;
    let a = Array::<_, u64>::try_from(Map::Array(data)).ok()?;
    Some((0..N_COUNTERS).map(|i| a.get(&i, 0).unwrap_or(0)).collect())
}

/// The object loaded with `tables` in its maps; no program loaded yet.
pub(crate) fn load_filled(tables: &Tables) -> Result<Ebpf, Error> {
    let mut loader = EbpfLoader::new();
    loader
        .map_max_entries("plans", tables.plans.len().max(1) as u32)
        .map_max_entries("decisions", tables.decisions.len().max(1) as u32)
        .map_max_entries("actions", tables.actions.len().max(1) as u32)
        .map_max_entries("networks", tables.networks.len().max(1) as u32)
        .map_max_entries("programs", tables.programs.len().max(1) as u32);
    let mut ebpf = loader
        .load(OBJECT)
        .map_err(|e| err("loading the BPF object", e))?;

    {
        let mut m: Array<_, Config> =
            Array::try_from(map(&mut ebpf, "config")?).map_err(|e| err("map config", e))?;
        m.set(
            0,
            Config {
                flags: tables.flags,
                pad: 0,
            },
            0,
        )
        .map_err(|e| err("map config", e))?;
    }
    {
        let mut m: Array<_, KPlan> =
            Array::try_from(map(&mut ebpf, "plans")?).map_err(|e| err("map plans", e))?;
        for (i, p) in tables.plans.iter().enumerate() {
            m.set(i as u32, p, 0).map_err(|e| err("map plans", e))?;
        }
    }
    {
        let mut m: HashMap<_, DKey, u32> =
            HashMap::try_from(map(&mut ebpf, "decisions")?).map_err(|e| err("map decisions", e))?;
        for (k, v) in &tables.decisions {
            m.insert(k, v, 0).map_err(|e| err("map decisions", e))?;
        }
    }
    {
        let mut m: HashMap<_, DKey, KAction> =
            HashMap::try_from(map(&mut ebpf, "actions")?).map_err(|e| err("map actions", e))?;
        for (k, v) in &tables.actions {
            m.insert(k, v, 0).map_err(|e| err("map actions", e))?;
        }
    }
    {
        let mut m: LpmTrie<_, [u8; 16], u32> =
            LpmTrie::try_from(map(&mut ebpf, "networks")?).map_err(|e| err("map networks", e))?;
        for n in &tables.networks {
            let key = LpmKey::new(n.prefix_len, n.addr);
            m.insert(&key, n.class, 0)
                .map_err(|e| err("map networks", e))?;
        }
    }
    {
        let mut m: HashMap<_, [u8; 16], u32> =
            HashMap::try_from(map(&mut ebpf, "programs")?).map_err(|e| err("map programs", e))?;
        for (k, v) in &tables.programs {
            m.insert(k, v, 0).map_err(|e| err("map programs", e))?;
        }
    }
    {
        let mut m: HashMap<_, OptKey, u32> =
            HashMap::try_from(map(&mut ebpf, "lockable")?).map_err(|e| err("map lockable", e))?;
        for ((level, name), slot) in &tables.lockable {
            let k = OptKey {
                level: *level,
                name: *name,
            };
            m.insert(k, slot, 0).map_err(|e| err("map lockable", e))?;
        }
    }
    fill_ports(&mut ebpf, "rports", &tables.rport_class)?;
    fill_ports(&mut ebpf, "lports", &tables.lport_class)?;
    Ok(ebpf)
}

impl Attached {
    /// Loads the programs with `tables` in their maps, and attaches them to the cgroup
    /// directory `cgroup`.
    pub fn load(tables: &Tables, cgroup: &std::fs::File) -> Result<Attached, Failed> {
        let mut ebpf = load_filled(tables)?;
        for (name, _) in needed(tables) {
            let prog = ebpf
                .program_mut(name)
                .ok_or_else(|| Error(format!("the BPF object has no program `{name}`")))?;
            let what = format!("program {name}");
            // Through a BPF link (aya uses one on 5.7+), which is always "multi" and takes no flags.
            let mode = CgroupAttachMode::Single;
            match prog {
                Program::CgroupSock(p) => load_attach(name, p, cgroup, mode),
                Program::CgroupSockAddr(p) => load_attach(name, p, cgroup, mode),
                Program::CgroupSockopt(p) => load_attach(name, p, cgroup, mode),
                Program::SockOps(p) => load_attach(name, p, cgroup, mode),
                _ => Err(Error(format!("{what}: unexpected program type")).into()),
            }?;
        }
        Ok(Attached { ebpf })
    }

    /// The programs' counters: failures per option slot, plans applied per stage, locks.
    pub fn counters(&self) -> Vec<u64> {
        let Some(m) = self.ebpf.map("counters") else {
            return Vec::new();
        };
        let Ok(a) = Array::<_, u64>::try_from(m) else {
            return Vec::new();
        };
        (0..N_COUNTERS).map(|i| a.get(&i, 0).unwrap_or(0)).collect()
    }
}

/// One program type's load-then-attach.
trait CgroupProgram {
    fn load_it(&mut self) -> Result<(), aya::programs::ProgramError>;
    fn attach_it(&mut self, cgroup: &std::fs::File, mode: CgroupAttachMode) -> Result<(), String>;
}

macro_rules! cgroup_program {
    ($t:ty) => {
        impl CgroupProgram for $t {
            fn load_it(&mut self) -> Result<(), aya::programs::ProgramError> {
                self.load()
            }
            fn attach_it(
                &mut self,
                cgroup: &std::fs::File,
                mode: CgroupAttachMode,
            ) -> Result<(), String> {
                self.attach(cgroup, mode)
                    .map(|_| ())
                    .map_err(|e| format!("attach: {}", with_sources(&e)))
            }
        }
    };
}
cgroup_program!(CgroupSock);
cgroup_program!(CgroupSockAddr);
cgroup_program!(CgroupSockopt);
cgroup_program!(SockOps);

/// An error and its causes, on one line.
pub(crate) fn with_sources(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn load_attach(
    name: &'static str,
    p: &mut impl CgroupProgram,
    cgroup: &std::fs::File,
    mode: CgroupAttachMode,
) -> Result<(), Failed> {
    p.load_it().map_err(|e| load_failure(name, &e))?;
    p.attach_it(cgroup, mode)
        .map_err(|e| Failed::Other(Error(format!("program {name}: {e}"))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sockwrap_policy::catalog::Opt;
    use sockwrap_policy::rules::{Ports, Rule};
    use sockwrap_policy::{OnError, Policy, Role, Transport, Value};

    fn names(rules: Vec<Rule>) -> Vec<&'static str> {
        let t = Tables::build(&Policy::new(rules, OnError::Warn)).expect("tables");
        needed(&t).into_iter().map(|(n, _)| n).collect()
    }

    #[test]
    fn only_the_programs_the_tables_need_are_attached() {
        // A flag policy reaches every stage of TCP and UDP, locked: all nine.
        let mut flags = Rule::new("flags");
        flags.set(Opt::Tos, Value::Int(0xb8), false);
        assert_eq!(names(vec![flags.clone()]), PROGRAMS.to_vec());
        // Soft: nothing to lock, no setsockopt program (every setsockopt call pays for it).
        let mut soft = Rule::new("soft");
        soft.set(Opt::Tos, Value::Int(0xb8), true);
        let got = names(vec![soft]);
        assert!(!got.contains(&"sw_setsockopt"), "{got:?}");
        assert_eq!(got.len(), PROGRAMS.len() - 1, "{got:?}");
        // TCP clients only: connect, and the locks; no UDP, bind or sock_ops programs.
        let mut client = Rule::new("client");
        client.matcher.role = Some(Role::Client);
        client.matcher.transport = Some(Transport::Tcp);
        client.set(Opt::Tos, Value::Int(0xb8), false);
        assert_eq!(
            names(vec![client]),
            vec!["sw_setsockopt", "sw_connect4", "sw_connect6"]
        );
        // A TCP server on a port: listen and accept (sock_ops) only.
        let mut server = Rule::new("server");
        server.matcher.role = Some(Role::Server);
        server.matcher.transport = Some(Transport::Tcp);
        server.matcher.local_port = vec![Ports { lo: 80, hi: 80 }];
        server.set(Opt::Tos, Value::Int(0xb8), true);
        assert_eq!(names(vec![server]), vec!["sw_sockops"]);
        // A program rule: sock_create records the program's class on every socket.
        let mut prog = Rule::new("prog");
        prog.matcher.program = vec!["curl".into()];
        prog.matcher.transport = Some(Transport::Tcp);
        prog.matcher.role = Some(Role::Client);
        prog.set(Opt::Tos, Value::Int(0xb8), true);
        assert_eq!(
            names(vec![prog]),
            vec!["sw_sock_create", "sw_connect4", "sw_connect6"]
        );
    }
}
