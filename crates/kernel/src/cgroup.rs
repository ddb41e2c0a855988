//! The cgroup v2 child a command runs in under `sockwrap run --kernel`, the one a running
//! process is moved into by `sockwrap attach --follow`, and the leftovers of a sockwrap that
//! was killed before it could remove its own.
//!
//! `run --kernel` makes its child under sockwrap's own cgroup and names it
//! `sockwrap-PID-START` (sockwrap's pid and its start time in clock ticks, from
//! /proc/PID/stat): the name says whose it is, and whether that sockwrap still runs.
//! `attach --follow` makes `sockwrap-follow-PID-START` under the cgroup the followed process
//! was in, so that the process stays inside its service's cgroup (its accounting, limits and
//! `systemctl stop`). Nothing else in the tree is ever written to or removed: [`sweep`] only
//! touches directories of those exact forms whose sockwrap is gone, removes the empty ones,
//! and moves the processes of a follow leftover back to its parent (where they came from).

use crate::Error;
use std::io::Write;
use std::path::{Path, PathBuf};

const PREFIX: &str = "sockwrap-";
const FOLLOW: &str = "follow-";

/// Which command made a cgroup of ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `run --kernel`: `sockwrap-PID-START`, under sockwrap's own cgroup; the command was
    /// started in it.
    Run,
    /// `attach --follow`: `sockwrap-follow-PID-START`, under the cgroup the followed
    /// processes came from.
    Follow,
}

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup` on most hosts,
/// `/sys/fs/cgroup/unified` on hybrid ones), from /proc/mounts.
pub fn mount_point() -> Result<PathBuf, Error> {
    let mounts = std::fs::read_to_string("/proc/mounts")
        .map_err(|e| Error(format!("cannot read /proc/mounts: {e}")))?;
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, dir, fstype) = (f.next()?, f.next()?, f.next()?);
            (fstype == "cgroup2").then(|| PathBuf::from(unescape(dir)))
        })
        .next()
        .ok_or_else(|| Error("no cgroup v2 hierarchy is mounted (no cgroup2 line in /proc/mounts); the kernel backend needs one".into()))
}

/// /proc/mounts writes spaces and such as octal escapes (`\040`).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// This process's cgroup v2 path relative to the mount (`/user.slice/...`), from the `0::`
/// line of /proc/self/cgroup.
pub fn own_path() -> Result<String, Error> {
    path_in("/proc/self/cgroup", "this process")
}

/// The cgroup v2 path of process `pid` relative to the mount, from /proc/PID/cgroup. A path
/// starting with `/..` is outside this process's cgroup namespace.
pub fn path_of(pid: i32) -> Result<String, Error> {
    path_in(&format!("/proc/{pid}/cgroup"), &format!("process {pid}"))
}

fn path_in(file: &str, who: &str) -> Result<String, Error> {
    let s = std::fs::read_to_string(file).map_err(|e| Error(format!("cannot read {file}: {e}")))?;
    s.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim().to_string())
        .ok_or_else(|| Error(format!("{who} is in no cgroup v2 (no 0:: line in {file})")))
}

/// `cgroup.type` of a cgroup directory: `domain`, `domain threaded`, `domain invalid` or
/// `threaded`. The root has no such file and is a domain.
pub fn type_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("cgroup.type"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "domain".into())
}

/// Moves process `pid`, all its threads, into the cgroup directory `dir` (one write of
/// its pid to `cgroup.procs`).
pub fn move_pid(dir: &Path, pid: i32) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.procs"))?;
    f.write_all(format!("{pid}\n").as_bytes())
}

/// The start time of process `pid` in clock ticks since boot (field 22 of /proc/PID/stat).
pub fn start_time(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields follow the last ')'.
    let rest = &s[s.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The owner a directory name says, if it is one of ours: (pid, start time).
pub fn owner_of(name: &str) -> Option<(u32, u64)> {
    parse_name(name).map(|(_, pid, start)| (pid, start))
}

/// What a directory name says, if it is one of ours: (kind, pid, start time).
pub fn parse_name(name: &str) -> Option<(Kind, u32, u64)> {
    let rest = name.strip_prefix(PREFIX)?;
    let (kind, rest) = match rest.strip_prefix(FOLLOW) {
        Some(r) => (Kind::Follow, r),
        None => (Kind::Run, rest),
    };
    let (pid, start) = rest.split_once('-')?;
    if pid.is_empty()
        || start.is_empty()
        || !pid.bytes().chain(start.bytes()).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    Some((kind, pid.parse().ok()?, start.parse().ok()?))
}

fn owner_alive(pid: u32, start: u64) -> bool {
    start_time(pid) == Some(start)
}

/// The pids in a cgroup directory.
pub fn procs(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// This sockwrap's cgroup name of `kind`.
pub fn name(kind: Kind) -> String {
    let pid = std::process::id();
    let start = start_time(pid).unwrap_or(0);
    match kind {
        Kind::Run => format!("{PREFIX}{pid}-{start}"),
        Kind::Follow => format!("{PREFIX}{FOLLOW}{pid}-{start}"),
    }
}

/// A cgroup of ours: made by [`Cgroup::create`], removed by [`Cgroup::remove`].
#[derive(Debug)]
pub struct Cgroup {
    pub path: PathBuf,
}

impl Cgroup {
    /// Makes `sockwrap-PID-START` under this process's own cgroup (`run --kernel`).
    pub fn create(mount: &Path) -> Result<Cgroup, Error> {
        let own = own_path()?;
        Cgroup::create_under(&mount.join(own.trim_start_matches('/')), Kind::Run)
    }

    /// Makes this sockwrap's cgroup of `kind` under the cgroup directory `parent`.
    pub fn create_under(parent: &Path, kind: Kind) -> Result<Cgroup, Error> {
        let path = parent.join(name(kind));
        std::fs::create_dir(&path)
            .map_err(|e| Error(format!("cannot create the cgroup {}: {e}", path.display())))?;
        Ok(Cgroup { path })
    }

    /// The cgroup it was made under.
    pub fn parent(&self) -> &Path {
        self.path.parent().unwrap_or(&self.path)
    }

    /// The directory, opened for attaching programs.
    pub fn open(&self) -> Result<std::fs::File, Error> {
        std::fs::File::open(&self.path)
            .map_err(|e| Error(format!("cannot open {}: {e}", self.path.display())))
    }

    /// `cgroup.procs`, opened for writing: a process writes `0` to it to move itself in (the
    /// child does so between fork and exec).
    pub fn procs_file(&self) -> Result<std::fs::File, Error> {
        std::fs::OpenOptions::new()
            .write(true)
            .open(self.path.join("cgroup.procs"))
            .map_err(|e| {
                Error(format!(
                    "cannot open {}/cgroup.procs: {e}",
                    self.path.display()
                ))
            })
    }

    /// Whether a process is still in it (the command's tree has not ended).
    pub fn populated(&self) -> bool {
        match std::fs::read_to_string(self.path.join("cgroup.events")) {
            Ok(s) => s.lines().any(|l| l.trim() == "populated 1"),
            Err(_) => !procs(&self.path).is_empty(),
        }
    }

    /// Removes the directory (it must be empty of processes).
    pub fn remove(&self) -> Result<(), Error> {
        std::fs::remove_dir(&self.path).map_err(|e| {
            Error(format!(
                "cannot remove the cgroup {}: {e}",
                self.path.display()
            ))
        })
    }
}

/// What [`sweep`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leftover {
    /// An empty cgroup of a sockwrap that is gone: removed.
    Removed(PathBuf),
    /// A cgroup of a sockwrap that is gone, with processes still in it (the command outlived
    /// sockwrap; its programs went with sockwrap): left alone.
    Busy(PathBuf, Vec<i32>),
    /// Could not be removed.
    Failed(PathBuf, String),
    /// An empty cgroup of a sockwrap that is gone, reported only (not root).
    Stale(PathBuf),
    /// The cgroup of an `attach --follow` that is gone: its processes were moved back to
    /// the parent, where they came from, and it was removed.
    Restored(PathBuf, Vec<i32>),
    /// The cgroup of an `attach --follow` that is gone, with processes in it, reported only
    /// (not root).
    Strayed(PathBuf, Vec<i32>),
}

impl std::fmt::Display for Leftover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Leftover::Removed(p) => write!(f, "removed the leftover cgroup {} (its sockwrap is gone)", p.display()),
            Leftover::Busy(p, pids) => write!(
                f,
                "leftover cgroup {}: its sockwrap is gone (and with it the BPF programs), but processes {:?} still run in it; not removed",
                p.display(),
                pids
            ),
            Leftover::Failed(p, e) => write!(f, "cannot remove the leftover cgroup {}: {e}", p.display()),
            Leftover::Stale(p) => write!(
                f,
                "leftover cgroup {} (its sockwrap is gone); as root, `sockwrap doctor` or the next `sockwrap run --kernel` removes it",
                p.display()
            ),
            Leftover::Restored(p, pids) => write!(
                f,
                "moved processes {:?} back to {} and removed the leftover cgroup {} (its `sockwrap attach --follow` is gone)",
                pids,
                p.parent().unwrap_or(p).display(),
                p.display()
            ),
            Leftover::Strayed(p, pids) => write!(
                f,
                "leftover cgroup {}: its `sockwrap attach --follow` is gone (and with it the BPF programs), processes {:?} are still in it; as root, `sockwrap doctor` or the next `run --kernel` or `attach --follow` moves them back to {} and removes it",
                p.display(),
                pids,
                p.parent().unwrap_or(p).display()
            ),
        }
    }
}

/// Finds the cgroups of sockwraps that are gone, anywhere under `mount`, and removes those
/// with no process left; the processes of an `attach --follow` leftover are first moved
/// back to its parent, the cgroup they were moved out of. With `remove` false, only reports
/// (`doctor` without root).
pub fn sweep(mount: &Path, remove: bool) -> Vec<Leftover> {
    let mut found = Vec::new();
    let mut stack = vec![(mount.to_path_buf(), 0u32)];
    while let Some((dir, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if !ft.is_dir() {
                continue;
            }
            let path = e.path();
            let name = e.file_name();
            let name = name.to_string_lossy();
            match parse_name(&name) {
                Some((kind, pid, start)) if !owner_alive(pid, start) => {
                    // Its own children first (a nested run under a killed one).
                    for l in sweep(&path, remove) {
                        found.push(l);
                    }
                    let pids = procs(&path);
                    if kind == Kind::Follow && !pids.is_empty() {
                        found.push(restore(path, pids, remove));
                    } else if !pids.is_empty() {
                        found.push(Leftover::Busy(path, pids));
                    } else if !remove {
                        found.push(Leftover::Stale(path));
                    } else {
                        match std::fs::remove_dir(&path) {
                            Ok(()) => found.push(Leftover::Removed(path)),
                            Err(e) => found.push(Leftover::Failed(path, e.to_string())),
                        }
                    }
                }
                _ if depth < 32 => stack.push((path, depth + 1)),
                _ => {}
            }
        }
    }
    found
}

/// An `attach --follow` leftover with processes: moved back to the parent, then removed.
fn restore(path: PathBuf, pids: Vec<i32>, remove: bool) -> Leftover {
    if !remove {
        return Leftover::Strayed(path, pids);
    }
    let parent = path.parent().unwrap_or(&path).to_path_buf();
    let mut moved = Vec::new();
    // A process may fork while it is moved: its child is born here; go round until empty.
    for _ in 0..20 {
        let now = procs(&path);
        if now.is_empty() {
            break;
        }
        for pid in now {
            match move_pid(&parent, pid) {
                Ok(()) => moved.push(pid),
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                Err(e) => {
                    return Leftover::Failed(
                        path,
                        format!(
                            "cannot move process {pid} back to {}: {e}",
                            parent.display()
                        ),
                    )
                }
            }
        }
    }
    for _ in 0..50 {
        match std::fs::remove_dir(&path) {
            Ok(()) => return Leftover::Restored(path, moved),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            Err(e) => return Leftover::Failed(path, e.to_string()),
        }
    }
    Leftover::Failed(path, "still busy after its processes were moved out".into())
}

/// Moves the calling process into the cgroup whose `cgroup.procs` is open as `fd`. Used
/// between fork and exec: one write(2), nothing else.
pub fn join_raw(fd: i32) -> std::io::Result<()> {
    crate::sys::write_raw(fd, b"0\n")
}

/// For tests and `doctor`: writes a pid into a cgroup.
pub fn add_pid(cg: &Cgroup, pid: i32) -> Result<(), Error> {
    let mut f = cg.procs_file()?;
    writeln!(f, "{pid}")
        .map_err(|e| Error(format!("cannot move {pid} into {}: {e}", cg.path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_names_are_ours() {
        assert_eq!(owner_of("sockwrap-123-456"), Some((123, 456)));
        assert_eq!(owner_of("sockwrap-123"), None);
        assert_eq!(owner_of("sockwrap-12a-456"), None);
        assert_eq!(owner_of("sockwrap--456"), None);
        assert_eq!(owner_of("user.slice"), None);
        assert_eq!(owner_of("sockwrap.service"), None);
        assert_eq!(parse_name("sockwrap-1-2"), Some((Kind::Run, 1, 2)));
        assert_eq!(
            parse_name("sockwrap-follow-1-2"),
            Some((Kind::Follow, 1, 2))
        );
        assert_eq!(parse_name("sockwrap-follow-1"), None);
        assert_eq!(parse_name("sockwrap-follower-1-2"), None);
    }

    #[test]
    fn our_names_say_our_pid_and_kind() {
        let me = std::process::id();
        assert_eq!(
            parse_name(&name(Kind::Run)).map(|n| (n.0, n.1)),
            Some((Kind::Run, me))
        );
        assert_eq!(
            parse_name(&name(Kind::Follow)).map(|n| (n.0, n.1)),
            Some((Kind::Follow, me))
        );
    }

    #[test]
    fn mount_points_are_unescaped() {
        assert_eq!(unescape("/sys/fs/cgroup"), "/sys/fs/cgroup");
        assert_eq!(unescape("/a\\040b"), "/a b");
    }

    #[test]
    fn our_own_start_time_is_readable() {
        assert!(start_time(std::process::id()).is_some());
        assert!(owner_alive(
            std::process::id(),
            start_time(std::process::id()).unwrap_or(0)
        ));
    }
}
