//! `--follow`: the processes moved into a sockwrap cgroup carrying the kernel backend's
//! programs, built from the same policy, until they end or sockwrap is told to stop; then
//! whatever is left is moved back and the cgroup and its programs removed.
//!
//! One sockwrap cgroup per cgroup the processes come from (`--tree` may span several: sshd's
//! sessions live in their own scopes), made as a child of that cgroup: the processes stay
//! inside their unit for cgroup v2's hierarchical accounting and limits, and for a
//! `systemctl stop` that kills by cgroup. The moves happen only after every check has
//! passed and every program is attached; a move that fails puts back what was moved.

use crate::cmd::kernel::{remove_cgroup, report, wait_events, ROOT_ONLY};
use crate::error::{Error, Result};
use crate::procnet;
use sockwrap_kernel::cgroup::{self, Cgroup, Kind};
use sockwrap_kernel::programs::{Attached, Failed};
use sockwrap_kernel::Tables;
use sockwrap_policy::OnError;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const WHAT: &str = "attach --follow";

/// PF_KTHREAD in /proc/PID/stat's flags.
const PF_KTHREAD: u64 = 0x0020_0000;

/// The processes of one origin cgroup, and the sockwrap cgroup they go into.
struct Group {
    /// The origin as /proc/PID/cgroup shows it (`/system.slice/nginx.service`).
    origin: String,
    /// The origin's directory.
    dir: PathBuf,
    /// The processes moved (or to move) in, with their start times.
    pids: Vec<(i32, u64)>,
    cg: Option<Cgroup>,
    attached: Option<Attached>,
}

pub struct Follow {
    target: i32,
    tree: bool,
    /// SOCKWRAP_LOG=debug: a verifier log is printed.
    debug: bool,
    mount: PathBuf,
    groups: Vec<Group>,
}

fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

fn who(pid: i32) -> String {
    format!("process {pid} ({})", comm(pid))
}

/// `process 42 (nginx)`, `processes 42 (nginx), 43 (nginx)`.
fn procs_named(pids: &[i32]) -> String {
    let each: Vec<String> = pids.iter().map(|&p| format!("{p} ({})", comm(p))).collect();
    format!(
        "{} {}",
        if pids.len() == 1 {
            "process"
        } else {
            "processes"
        },
        each.join(", ")
    )
}

fn setup(msg: impl std::fmt::Display) -> Error {
    Error::setup(format_args!("{WHAT}: {msg}"))
}

/// Whether the process that had `start` still runs: not exited, not a zombie (a
/// process that exited leaves its cgroup at once, before its parent reaps it).
fn running(pid: i32, start: u64) -> bool {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = s
        .rfind(')')
        .and_then(|i| s[i + 1..].split_whitespace().next());
    cgroup::start_time(pid as u32) == Some(start) && !matches!(state, Some("Z") | Some("X"))
}

fn is_kernel_thread(pid: i32) -> bool {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some(rest) = s.rfind(')').map(|i| &s[i + 1..]) else {
        return false;
    };
    rest.split_whitespace()
        .nth(6)
        .and_then(|f| f.parse::<u64>().ok())
        .is_some_and(|f| f & PF_KTHREAD != 0)
}

/// Why process `pid` cannot be followed where it is, if it cannot: checked before
/// anything is changed. `Ok(None)`: it has exited meanwhile.
fn origin_of(mount: &Path, pid: i32) -> Result<Option<(String, PathBuf)>> {
    if pid == std::process::id() as i32 {
        return Err(Error::usage(format_args!(
            "{WHAT}: {pid} is this sockwrap itself"
        )));
    }
    if is_kernel_thread(pid) {
        return Err(setup(format_args!(
            "{} is a kernel thread: kernel threads stay in the root cgroup and have no sockets of their own; nothing was changed",
            who(pid)
        )));
    }
    let rel = match cgroup::path_of(pid) {
        Ok(r) => r,
        Err(_) if !Path::new(&format!("/proc/{pid}")).exists() => return Ok(None),
        Err(e) => return Err(setup(e)),
    };
    if rel.starts_with("/..") {
        return Err(setup(format_args!(
            "{} is in the cgroup {rel}, outside this sockwrap's cgroup namespace: run sockwrap in the namespace the process is in; nothing was changed",
            who(pid)
        )));
    }
    let dir = under(mount, &rel);
    let leaf = dir.file_name().map(|n| n.to_string_lossy().into_owned());
    if leaf.as_deref().and_then(cgroup::parse_name).is_some() {
        return Err(setup(format_args!(
            "{} is already in sockwrap's cgroup {}: another `run --kernel` or `attach --follow` gives it its programs; nothing was changed",
            who(pid),
            dir.display()
        )));
    }
    let ty = cgroup::type_of(&dir);
    if ty != "domain" {
        return Err(setup(format_args!(
            "{} is in the cgroup {} whose cgroup.type is `{ty}`: cgroup v2 moves whole processes only between domain cgroups, so it cannot be moved into a cgroup of sockwrap's; nothing was changed",
            who(pid),
            dir.display()
        )));
    }
    Ok(Some((rel, dir)))
}

/// The directory of the cgroup /proc shows as `rel`.
fn under(mount: &Path, rel: &str) -> PathBuf {
    match rel.trim_matches('/') {
        "" => mount.to_path_buf(),
        r => mount.join(r),
    }
}

/// A cgroup of ours as /proc/PID/cgroup shows it.
fn rel_of(g: &Group, cg: &Cgroup) -> String {
    let name = cg
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("{}/{name}", g.origin.trim_end_matches('/'))
}

fn errno_hint(e: &std::io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EBUSY) => " (cgroup v2's no-internal-processes rule: the cgroup has controllers enabled for its children)",
        Some(libc::EOPNOTSUPP) => " (a threaded cgroup: only whole processes of domain cgroups can move)",
        Some(libc::EINVAL) => " (a kernel thread, or a process that is exiting)",
        Some(libc::EACCES) | Some(libc::EPERM) => " (not allowed: a delegated or read-only cgroup tree)",
        _ => "",
    }
}

impl Follow {
    /// Every check that can be made without changing anything: root, the cgroup v2
    /// mount, and for each process whether it can be moved from where it is.
    pub fn plan(target: i32, pids: &[i32], tree: bool) -> Result<Follow> {
        if !rustix::process::geteuid().is_root() {
            return Err(setup(ROOT_ONLY.trim_start_matches("--kernel: ")));
        }
        let mount = cgroup::mount_point().map_err(setup)?;
        let mut f = Follow {
            target,
            tree,
            debug: std::env::var("SOCKWRAP_LOG").is_ok_and(|l| l == "debug"),
            mount,
            groups: Vec::new(),
        };
        for &pid in pids {
            f.add(pid)?;
        }
        if f.groups.is_empty() {
            return Err(super::no_such_pid(target));
        }
        Ok(f)
    }

    /// Files `pid` under the group of its cgroup; false when it has exited.
    fn add(&mut self, pid: i32) -> Result<bool> {
        let Some((rel, dir)) = origin_of(&self.mount, pid)? else {
            return Ok(false);
        };
        let start = cgroup::start_time(pid as u32).unwrap_or(0);
        match self.groups.iter_mut().find(|g| g.dir == dir) {
            Some(g) => g.pids.push((pid, start)),
            None => self.groups.push(Group {
                origin: rel,
                dir,
                pids: vec![(pid, start)],
                cg: None,
                attached: None,
            }),
        }
        Ok(true)
    }

    pub fn say_dry_run(&self) {
        for g in &self.groups {
            let pids: Vec<i32> = g.pids.iter().map(|p| p.0).collect();
            eprintln!(
                "sockwrap: {WHAT}: dry run: would make a cgroup sockwrap-follow-PID-START under {} (cgroup v2 at {}), attach the kernel backend's programs to it, and move {} (all threads) from {} into it; then follow until {} and remove it. Nothing was changed",
                g.origin,
                self.mount.display(),
                procs_named(&pids),
                g.origin,
                if pids.len() == 1 { "it exits" } else { "they exit" },
            );
        }
    }

    /// Makes the cgroups, attaches the programs, then moves the processes in. On any
    /// failure, everything done is undone and the processes are where they were.
    pub fn start(&mut self, tables: &Tables) -> Result<()> {
        // From here a Ctrl-C or TERM ends the follow (after the setup, which undoes
        // itself on failure), instead of killing sockwrap between two moves.
        crate::signals::catch();
        for l in cgroup::sweep(&self.mount, true) {
            eprintln!("sockwrap: {l}");
        }
        if let Err(e) = self.prepare(tables) {
            self.abandon();
            return Err(e);
        }
        let mut moved = 0;
        for gi in 0..self.groups.len() {
            let pids: Vec<(i32, u64)> = self.groups[gi].pids.clone();
            for (pid, _) in pids {
                match self.move_in(gi, pid) {
                    Ok(true) => moved += 1,
                    Ok(false) => {}
                    Err(e) => {
                        self.abandon();
                        return Err(e);
                    }
                }
            }
        }
        // Processes the tree forked between the listing and the moves.
        if self.tree {
            for _ in 0..5 {
                let mut new = 0;
                for pid in procnet::tree(self.target) {
                    if self.is_followed(pid) || self.in_ours(pid) {
                        continue;
                    }
                    let placed = self.add(pid).and_then(|added| {
                        if !added {
                            return Ok(false);
                        }
                        self.prepare(tables)?;
                        let gi = self
                            .groups
                            .iter()
                            .position(|g| g.pids.iter().any(|p| p.0 == pid))
                            .unwrap_or(0);
                        self.move_in(gi, pid)
                    });
                    match placed {
                        Ok(true) => new += 1,
                        Ok(false) => {}
                        Err(e) => {
                            self.abandon();
                            return Err(e);
                        }
                    }
                }
                if new == 0 {
                    break;
                }
                moved += new;
            }
        }
        if moved == 0 {
            self.abandon();
            return Err(super::no_such_pid(self.target));
        }
        for g in &self.groups {
            let Some(cg) = &g.cg else { continue };
            let pids: Vec<i32> = g.pids.iter().map(|p| p.0).collect();
            eprintln!(
                "sockwrap: {WHAT}: moved {} from {} into {}, which carries the kernel backend's programs: the sockets {} from now on get the policy and its locks",
                procs_named(&pids),
                g.origin,
                rel_of(g, cg),
                if pids.len() == 1 { "it opens" } else { "they open" },
            );
        }
        eprintln!(
            "sockwrap: {WHAT}: following until {} (Ctrl-C or TERM moves {} back and ends the follow)",
            if moved == 1 { "it exits" } else { "they exit" },
            if moved == 1 { "it" } else { "them" },
        );
        Ok(())
    }

    fn is_followed(&self, pid: i32) -> bool {
        self.groups
            .iter()
            .any(|g| g.pids.iter().any(|p| p.0 == pid))
    }

    fn in_ours(&self, pid: i32) -> bool {
        let Ok(rel) = cgroup::path_of(pid) else {
            return true; // gone
        };
        let dir = under(&self.mount, &rel);
        self.groups
            .iter()
            .any(|g| g.cg.as_ref().is_some_and(|c| c.path == dir))
    }

    /// The cgroup and programs of every group that has none yet.
    fn prepare(&mut self, tables: &Tables) -> Result<()> {
        for g in &mut self.groups {
            if g.cg.is_some() {
                continue;
            }
            let cg = Cgroup::create_under(&g.dir, Kind::Follow).map_err(setup)?;
            let dir = cg.open();
            let rel = rel_of(g, &cg);
            g.cg = Some(cg);
            let dir = dir.map_err(setup)?;
            let attached = Attached::load(tables, &dir).map_err(|e| match e {
                Failed::Load(_) => {
                    crate::cmd::kernel::attach_failure(WHAT, "nothing was moved", e, self.debug)
                }
                Failed::Other(e) => setup(format_args!(
                    "cannot attach the BPF programs to {rel}: {e}; nothing was moved"
                )),
            })?;
            g.attached = Some(attached);
        }
        Ok(())
    }

    /// Moves `pid` into its group's cgroup; false when it has exited.
    fn move_in(&mut self, gi: usize, pid: i32) -> Result<bool> {
        let g = &mut self.groups[gi];
        let Some(cg) = &g.cg else { return Ok(false) };
        match cgroup::move_pid(&cg.path, pid) {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                g.pids.retain(|p| p.0 != pid);
                Ok(false)
            }
            Err(e) => {
                let msg = format!(
                    "cannot move {} from {} into {}: {e}{}; what was moved is back where it was",
                    who(pid),
                    g.origin,
                    rel_of(g, cg),
                    errno_hint(&e)
                );
                g.pids.retain(|p| p.0 != pid);
                Err(setup(msg))
            }
        }
    }

    /// Moves every process in our cgroups back to where it came from. Returns the pids
    /// moved and the failures, one line each.
    fn move_back(&self) -> (Vec<i32>, Vec<String>) {
        let (mut moved, mut failed) = (Vec::new(), Vec::new());
        for g in &self.groups {
            let Some(cg) = &g.cg else { continue };
            // A process may fork while it is moved: its child is born in our cgroup.
            for _ in 0..20 {
                let now = cgroup::procs(&cg.path);
                if now.is_empty() {
                    break;
                }
                let mut stuck = false;
                for pid in now {
                    match cgroup::move_pid(&g.dir, pid) {
                        Ok(()) => moved.push(pid),
                        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                        Err(e) => {
                            stuck = true;
                            failed.push(format!(
                                "cannot move {} back to {}: {e}{}; it stays in {}, without the programs (`sockwrap doctor` as root tries again)",
                                who(pid),
                                g.origin,
                                errno_hint(&e),
                                rel_of(g, cg)
                            ));
                        }
                    }
                }
                if stuck {
                    break;
                }
            }
        }
        moved.sort_unstable();
        moved.dedup();
        (moved, failed)
    }

    /// Detaches the programs and removes the cgroups; the failures, one line each.
    fn remove(&mut self) -> Vec<String> {
        let mut failed = Vec::new();
        for g in &mut self.groups {
            drop(g.attached.take());
            if let Some(cg) = g.cg.take() {
                if let Err(e) = remove_cgroup(&cg) {
                    failed.push(e);
                }
            }
        }
        failed
    }

    /// Undoes a start that failed (or a one-shot part that could not run): everything
    /// moved goes back, the cgroups and programs go.
    pub fn abandon(&mut self) {
        let (_, mut failed) = self.move_back();
        failed.extend(self.remove());
        for l in failed {
            eprintln!("sockwrap: {WHAT}: {l}");
        }
    }

    /// Follows until no process is left in our cgroups, or a signal; then moves back
    /// what is left and removes the cgroups. `refused`: the one-shot part had an option
    /// refused (the exit status says so at the end).
    pub fn wait(mut self, on_error: OnError, refused: bool) -> Result<ExitCode> {
        let stopped = loop {
            if let Some(sig) = crate::signals::take() {
                break Some(sig);
            }
            let live: Vec<&Path> = self
                .groups
                .iter()
                .filter_map(|g| g.cg.as_ref())
                .filter(|c| c.populated())
                .map(|c| c.path.as_path())
                .collect();
            if live.is_empty() {
                break None;
            }
            wait_events(&live);
        };
        let (moved, mut failed) = self.move_back();
        let mut refused = refused;
        for g in &self.groups {
            if let Some(a) = &g.attached {
                refused |= report(WHAT, &a.counters(), on_error, false, true);
            }
        }
        let paths: Vec<String> = self
            .groups
            .iter()
            .filter_map(|g| g.cg.as_ref().map(|c| rel_of(g, c)))
            .collect();
        // Processes that left our cgroup while followed, moved by someone else.
        let mut strayed = Vec::new();
        if stopped.is_none() {
            for g in &self.groups {
                for &(pid, start) in &g.pids {
                    if running(pid, start) && !moved.contains(&pid) {
                        let now = cgroup::path_of(pid).unwrap_or_default();
                        strayed.push(format!(
                            "{} left the sockwrap cgroup while it was followed (moved by someone else; it is now in {now}): it runs on without the programs",
                            who(pid)
                        ));
                    }
                }
            }
        }
        failed.extend(self.remove());
        let cgroups = paths.join(", ");
        let its = if paths.len() == 1 { "its" } else { "their" };
        match stopped {
            Some(sig) => eprintln!(
                "sockwrap: {WHAT}: stopped by {}: moved {} back to where {} came from; removed {cgroups} and {its} programs. Sockets opened while followed keep their options, without locks from now on",
                signal_name(sig),
                if moved.is_empty() { "no process".to_string() } else { procs_named(&moved) },
                if moved.len() == 1 { "it" } else { "they" },
            ),
            None => eprintln!(
                "sockwrap: {WHAT}: the followed processes have exited; removed {cgroups} and {its} programs"
            ),
        }
        for l in &strayed {
            eprintln!("sockwrap: {WHAT}: {l}");
        }
        if !failed.is_empty() {
            for l in &failed[1..] {
                eprintln!("sockwrap: {WHAT}: {l}");
            }
            return Err(setup(&failed[0]));
        }
        if let Some(sig) = stopped {
            return Ok(ExitCode::from((128 + sig) as u8));
        }
        if refused || !strayed.is_empty() {
            return Err(Error::Findings);
        }
        Ok(ExitCode::SUCCESS)
    }
}

fn signal_name(sig: libc::c_int) -> String {
    match sig {
        libc::SIGINT => "SIGINT".into(),
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGHUP => "SIGHUP".into(),
        libc::SIGQUIT => "SIGQUIT".into(),
        n => format!("signal {n}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_paths_join_the_mount_without_a_trailing_slash() {
        let m = Path::new("/sys/fs/cgroup/unified");
        assert_eq!(under(m, "/"), m);
        assert_eq!(
            under(m, "/system.slice/a.service"),
            m.join("system.slice/a.service")
        );
    }

    #[test]
    fn this_process_runs_and_is_no_kernel_thread() {
        let me = std::process::id() as i32;
        let start = cgroup::start_time(me as u32).unwrap_or(0);
        assert!(running(me, start));
        assert!(!running(me, start + 1));
        assert!(!is_kernel_thread(me));
    }
}
