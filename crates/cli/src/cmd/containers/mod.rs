//! `sockwrap attach --cgroup PATH | --container ID|NAME | --pod UID`, `sockwrap detach` with
//! the same targets, and `sockwrap status --containers`: a policy given by the kernel
//! backend to a cgroup sockwrap did not make, where a container runtime or the kubelet put
//! the processes.
//!
//! The programs are attached to that cgroup itself (not to a child: the processes stay where
//! their runtime put them) through BPF links pinned in `/sys/fs/bpf/sockwrap/cgroups/`, one
//! directory per cgroup, so that they outlive the command ([`sockwrap_kernel::links`]).
//! Links are always "multi": the programs others attached (systemd's device and firewall
//! programs, a CNI's) keep running. The sockets already open in the cgroup get the options
//! that can still change, as `attach PID` gives them.
//!
//! When the cgroup goes (the container stopped), the kernel detaches the links by itself;
//! their pins are then leftovers, which the next `attach`, `detach`, `status --containers`
//! or `doctor` removes ([`sweep`]).
//!
//! Finding a container: through its runtime's CLI where there is one (`podman`, `docker`:
//! `inspect` gives the pid, whose /proc/PID/cgroup gives the path), else by its ID in the
//! cgroup tree, in the paths runtimes and the kubelet use ([`find_container`]). A pod: by its
//! UID in the kubelet's paths, for both cgroup drivers and the three QoS classes
//! ([`find_pod`]).

use crate::error::{Error, Result};
use crate::json::JsonExt as _;
use clap::ArgMatches;
use sockwrap_kernel::{cgroup, links, programs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Where the pins of each attached cgroup live.
pub const PINS: &str = "/sys/fs/bpf/sockwrap/cgroups";

/// What a command acts on: a cgroup, found from a path, a container or a pod.
#[derive(Debug, Clone)]
pub struct Target {
    /// The path relative to the cgroup v2 mount, without a leading `/`.
    pub rel: String,
    /// How the user named it, for messages: `container 3f2a… (podman)`, `pod UID`, `cgroup P`.
    pub what: String,
}

impl Target {
    /// The pin directory of this cgroup: the path with `%`, `/` and `.` written as `%25`,
    /// `%2f` and `%2e`, so that one directory name holds it and it reads back exactly (a
    /// BPF filesystem refuses names with a `.`: systemd's `x.slice`, `y.scope`).
    pub fn pin_dir(&self) -> PathBuf {
        Path::new(PINS).join(encode(&self.rel))
    }
}

pub fn encode(rel: &str) -> String {
    rel.replace('%', "%25")
        .replace('/', "%2f")
        .replace('.', "%2e")
}

pub fn decode(name: &str) -> String {
    name.replace("%2e", ".")
        .replace("%2f", "/")
        .replace("%25", "%")
}

/// Which of `--cgroup`, `--container`, `--pod` the matches hold, if any.
pub fn asked(m: &ArgMatches) -> Option<(&'static str, String)> {
    ["cgroup", "container", "pod"]
        .into_iter()
        .find_map(|k| m.get_one::<String>(k).map(|v| (k, v.clone())))
}

/// Resolves the target the user named. `live` says whether the cgroup must exist now
/// (attach) or may be gone (detach of a stopped container).
pub fn resolve(kind: &str, value: &str, mount: &Path, live: bool) -> Result<Target> {
    match kind {
        "cgroup" => {
            let rel = cgroup_rel(value, mount);
            if rel.is_empty() {
                return Err(Error::usage(format_args!(
                    "--cgroup {value}: that is the root cgroup, every process of the machine; for a whole host use `sockwrap enable --system`"
                )));
            }
            if live && !mount.join(&rel).join("cgroup.procs").is_file() {
                return Err(Error::usage(format_args!(
                    "--cgroup {value}: no such cgroup under {} (give the path as /proc/PID/cgroup shows it, or under the mount)",
                    mount.display()
                )));
            }
            Ok(Target {
                what: format!("cgroup {rel}"),
                rel,
            })
        }
        "container" => container(value, mount, live),
        _ => {
            let dirs = cgroup_dirs(mount);
            match find_pod(&dirs, value).as_slice() {
                [one] => Ok(Target {
                    rel: one.clone(),
                    what: format!("pod {value}"),
                }),
                [] if !live => Ok(Target {
                    rel: String::new(),
                    what: format!("pod {value}"),
                }),
                [] => Err(Error::usage(format_args!(
                    "--pod {value}: no kubelet cgroup for this pod UID under {} (kubepods…-pod{}.slice or kubepods/…/pod{value})",
                    mount.display(),
                    value.replace('-', "_")
                ))),
                many => Err(Error::usage(format_args!(
                    "--pod {value}: {} cgroups match: {}",
                    many.len(),
                    many.join(", ")
                ))),
            }
        }
    }
}

/// A path as the user gave it (absolute under the mount, `/a/b` as /proc/PID/cgroup shows
/// it, or `a/b`), relative to the mount.
fn cgroup_rel(value: &str, mount: &Path) -> String {
    let p = Path::new(value);
    let rel = p.strip_prefix(mount).unwrap_or(p);
    rel.to_string_lossy().trim_matches('/').to_string()
}

/// Every directory of the cgroup tree below `mount` (the mount, or any cgroup in it),
/// relative to it, to a bounded depth (the kubelet's deepest is five levels).
pub fn cgroup_dirs(mount: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![(mount.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        if depth >= 8 || out.len() > 100_000 {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                let p = e.path();
                if let Ok(r) = p.strip_prefix(mount) {
                    out.push(r.to_string_lossy().into_owned());
                }
                stack.push((p, depth + 1));
            }
        }
    }
    out
}

/// The cgroups named after container `id` (a full ID or a prefix of at least 12 hex
/// digits), in the forms runtimes use on cgroup v2: `docker-ID.scope`, `libpod-ID.scope`,
/// `libpod-ID` (podman with cgroupfs), `cri-containerd-ID.scope`, `crio-ID.scope`, and
/// the kubelet's cgroupfs driver's plain `ID` under `kubepods`. The outermost of nested
/// matches (a container's own `init.scope` children are its own).
pub fn find_container(dirs: &[String], id: &str) -> Vec<String> {
    let id = id.to_ascii_lowercase();
    if id.len() < 12 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Vec::new();
    }
    let named = |leaf: &str| {
        let bare = leaf.strip_suffix(".scope").unwrap_or(leaf);
        ["docker-", "libpod-", "cri-containerd-", "crio-", ""]
            .iter()
            .any(|p| {
                bare.strip_prefix(p).is_some_and(|rest| {
                    rest.starts_with(&id)
                        && rest.len() == 64
                        && rest.bytes().all(|b| b.is_ascii_hexdigit())
                })
            })
    };
    let mut hits: Vec<String> = dirs
        .iter()
        .filter(|d| named(d.rsplit('/').next().unwrap_or(d)))
        .cloned()
        .collect();
    hits.sort();
    let outer: Vec<String> = hits
        .iter()
        .filter(|h| {
            !hits
                .iter()
                .any(|o| o != *h && h.starts_with(&format!("{o}/")))
        })
        .cloned()
        .collect();
    outer
}

/// The cgroup of pod `uid` under the kubelet's two drivers: systemd
/// (`kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<UID with _>.slice`, a
/// Guaranteed pod directly under `kubepods.slice` as `kubepods-pod<UID>.slice`) and cgroupfs
/// (`kubepods/<qos>/pod<UID>`, Guaranteed: `kubepods/pod<UID>`).
pub fn find_pod(dirs: &[String], uid: &str) -> Vec<String> {
    let uid = uid.to_ascii_lowercase();
    if uid.is_empty() {
        return Vec::new();
    }
    let systemd = format!("-pod{}.slice", uid.replace('-', "_"));
    let cgroupfs = format!("pod{uid}");
    let mut hits: Vec<String> = dirs
        .iter()
        .filter(|d| {
            let leaf = d.rsplit('/').next().unwrap_or(d);
            let in_kubepods = d
                .split('/')
                .any(|c| c == "kubepods" || c == "kubepods.slice");
            in_kubepods
                && ((leaf.starts_with("kubepods") && leaf.ends_with(&systemd)) || leaf == cgroupfs)
        })
        .cloned()
        .collect();
    hits.sort();
    hits
}

/// A container by ID or name: its runtime's CLI first, then the cgroup tree.
fn container(value: &str, mount: &Path, live: bool) -> Result<Target> {
    let mut tried = Vec::new();
    for rt in ["podman", "docker"] {
        match inspect(rt, value) {
            Inspected::Found { id, pid } => {
                let rel = cgroup::path_of(pid)
                    .map_err(|e| Error::usage(format_args!("--container {value}: {e}")))?;
                let rel = rel.trim_start_matches('/').to_string();
                // The runtime's own cgroup for the container (a process may sit in a child
                // the container made, e.g. its init.scope).
                let dirs: Vec<String> = ancestors(&rel);
                let rel = find_container(&dirs, &id).into_iter().next().unwrap_or(rel);
                return Ok(Target {
                    what: format!("container {} ({rt})", short(&id)),
                    rel,
                });
            }
            Inspected::NotRunning { id } if live => {
                return Err(Error::usage(format_args!(
                    "--container {value}: {rt} knows container {} but it is not running (no process, no cgroup yet): start it first",
                    short(&id)
                )))
            }
            Inspected::NotRunning { id } => {
                let dirs = cgroup_dirs(mount);
                let rel = find_container(&dirs, &id).into_iter().next().unwrap_or_default();
                return Ok(Target {
                    what: format!("container {} ({rt})", short(&id)),
                    rel,
                });
            }
            Inspected::Unknown(why) => tried.push(format!("{rt}: {why}")),
        }
    }
    let dirs = cgroup_dirs(mount);
    match find_container(&dirs, value).as_slice() {
        [one] => Ok(Target {
            rel: one.clone(),
            what: format!("container {}", short(value)),
        }),
        [] if !live => Ok(Target {
            rel: String::new(),
            what: format!("container {}", short(value)),
        }),
        [] => Err(Error::usage(format_args!(
            "--container {value}: not found ({}; and no cgroup named after it under {}: a name needs the runtime's CLI, an ID at least 12 hex digits)",
            tried.join("; "),
            mount.display()
        ))),
        many => Err(Error::usage(format_args!(
            "--container {value}: {} cgroups match: {}; give more of the ID",
            many.len(),
            many.join(", ")
        ))),
    }
}

fn ancestors(rel: &str) -> Vec<String> {
    let parts: Vec<&str> = rel.split('/').collect();
    (1..=parts.len()).map(|n| parts[..n].join("/")).collect()
}

fn short(id: &str) -> String {
    id.chars().take(12).collect()
}

enum Inspected {
    Found { id: String, pid: i32 },
    NotRunning { id: String },
    Unknown(String),
}

/// `RUNTIME inspect --format '{{.Id}} {{.State.Pid}}' NAME`, bounded to 10 seconds.
fn inspect(runtime: &str, name: &str) -> Inspected {
    let Some(exe) = crate::elf::resolve_program(runtime.as_ref()).filter(|p| p.is_file()) else {
        return Inspected::Unknown("not installed".into());
    };
    let out = match run_bounded(
        std::process::Command::new(exe).args([
            "inspect",
            "--type",
            "container",
            "--format",
            "{{.Id}} {{.State.Pid}}",
            name,
        ]),
        10,
    ) {
        Ok(out) => out,
        Err(e) => return Inspected::Unknown(format!("inspect: {e}")),
    };
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let first = err.lines().next().unwrap_or("").trim();
        return Inspected::Unknown(if first.is_empty() {
            format!("inspect failed ({})", out.status)
        } else {
            first.chars().take(160).collect()
        });
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut f = text.split_whitespace();
    match (f.next(), f.next().and_then(|p| p.parse::<i32>().ok())) {
        (Some(id), Some(pid)) if pid > 0 => Inspected::Found {
            id: id.to_string(),
            pid,
        },
        (Some(id), Some(_)) => Inspected::NotRunning { id: id.to_string() },
        _ => Inspected::Unknown(format!("an answer it did not expect: {}", text.trim())),
    }
}

/// Runs `cmd` (no stdin, stdout and stderr captured) to its end within `secs` seconds, or
/// kills it: the runtime CLIs sockwrap asks (podman, docker, crictl) can hang on a busy or
/// broken daemon, and nothing here may wait unbounded.
pub fn run_bounded(
    cmd: &mut std::process::Command,
    secs: u64,
) -> std::result::Result<std::process::Output, String> {
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run it: {e}"))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no answer within {secs} s"));
            }
        }
    }
    child
        .wait_with_output()
        .map_err(|e| format!("cannot read its answer: {e}"))
}

/// The processes of the cgroup at `dir` and of every cgroup below it.
pub fn procs_below(dir: &Path) -> Vec<i32> {
    let mut pids = cgroup::procs(dir);
    for d in cgroup_dirs(dir) {
        pids.extend(cgroup::procs(&dir.join(d)));
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// One attached cgroup as its pins show it.
pub struct Attachment {
    pub rel: String,
    pub dir: PathBuf,
    /// (attach type, the link's cgroup id while attached).
    pub links: Vec<(String, Option<u64>)>,
    /// The id of the cgroup now at that path, if there is one.
    pub cgroup_id: Option<u64>,
}

impl Attachment {
    /// Attached while a link holds the cgroup that is at the path now. The kernel detaches
    /// the links of a removed cgroup a moment after its rmdir (its release is deferred);
    /// the path tells at once, and a new cgroup of the same name is not the old one.
    pub fn live(&self) -> bool {
        self.cgroup_id
            .is_some_and(|now| self.links.iter().any(|(_, id)| *id == Some(now)))
    }
}

/// The cgroups that have a policy attached, from their pins.
pub fn attachments() -> Vec<Attachment> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(PINS) else {
        return out;
    };
    let mount = cgroup::mount_point().ok();
    for e in entries.flatten() {
        let dir = e.path();
        let mut links = Vec::new();
        if let Ok(ls) = std::fs::read_dir(dir.join(programs::LINKS_DIR)) {
            for l in ls.flatten() {
                let id = links::cgroup_of(&l.path()).ok().flatten();
                links.push((l.file_name().to_string_lossy().into_owned(), id));
            }
        }
        links.sort();
        let rel = decode(&e.file_name().to_string_lossy());
        let cgroup_id = mount
            .as_ref()
            .and_then(|m| links::cgroup_id(&m.join(&rel)).ok());
        out.push(Attachment {
            rel,
            dir,
            links,
            cgroup_id,
        });
    }
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    out
}

/// Removes the pins of cgroups that are gone (their links defunct), saying so for each.
/// `remove` false only lists them. Returns what was (or would be) removed.
pub fn sweep(remove: bool) -> Vec<String> {
    let mut gone = Vec::new();
    for a in attachments() {
        if a.live() {
            continue;
        }
        if remove {
            match programs::unpin(&a.dir) {
                Ok(_) => eprintln!(
                    "sockwrap: removed the pins of cgroup {}, which is gone (its programs went with it)",
                    a.rel
                ),
                Err(e) => eprintln!("sockwrap: cannot remove {}: {e}", a.dir.display()),
            }
        }
        gone.push(a.rel);
    }
    gone
}

/// `sockwrap attach --cgroup/--container/--pod`: the programs attached and pinned, then the
/// open sockets of the cgroup's processes given what can still change (`one_shot`).
pub fn attach(
    m: &ArgMatches,
    kind: &str,
    value: &str,
    policy: &sockwrap_policy::Policy,
    one_shot: impl FnOnce(&[i32]) -> Result<ExitCode>,
) -> Result<ExitCode> {
    let what = format!("attach --{kind}");
    let refusing = "nothing attached";
    let mount = cgroup::mount_point().map_err(|e| Error::setup(format_args!("{what}: {e}")))?;
    let t = resolve(kind, value, &mount, true)?;
    let dir = mount.join(&t.rel);
    let list = m.get_flag("list");
    let dry = m.get_flag("dry-run");
    if list {
        return one_shot(&procs_below(&dir));
    }
    let tables = super::kernel::tables_for(policy, &what, refusing, false)?;
    let needed = programs::needed(&tables);
    let pin_dir = t.pin_dir();
    if dry {
        println!(
            "would attach {} program{} ({}) to {} ({}), pinned in {}",
            needed.len(),
            if needed.len() == 1 { "" } else { "s" },
            needed.iter().map(|(_, k)| *k).collect::<Vec<_>>().join(" "),
            t.what,
            dir.display(),
            pin_dir.display()
        );
        return one_shot(&procs_below(&dir));
    }
    super::systemd::root_and_bpffs(&what, refusing)?;
    sweep(true);
    let replaced = pin_dir.exists();
    if replaced {
        programs::unpin(&pin_dir).map_err(|e| Error::setup(format_args!("{what}: {e}")))?;
    }
    let cg = std::fs::File::open(&dir)
        .map_err(|e| Error::setup(format_args!("{what}: {}: {e}", dir.display())))?;
    let debug = super::kernel::debug(m);
    let pinned = programs::pin(&tables, &pin_dir)
        .map_err(|f| super::kernel::attach_failure(&what, refusing, f, debug))?;
    // The open sockets first, then the links: once the programs run, the locks they keep
    // would also stop sockwrap's own setsockopt on the cgroup's sockets (cgroup/setsockopt
    // runs for the socket's cgroup, whoever calls). A socket opened and connected in the
    // moment between the two gets neither (said in the guide).
    let pids = procs_below(&dir);
    let done = if pids.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        one_shot(&pids)
    };
    if let Err(e) = &done {
        if !matches!(e, Error::Findings) {
            let _ = programs::unpin(&pin_dir);
            return done;
        }
    }
    let links = programs::attach_pinned(&pinned, &pin_dir, &cg)
        .map_err(|e| Error::setup(format_args!("{what}: {e}; {refusing}")))?;
    println!(
        "{} {} program{} ({}) to {} ({}); pinned in {}: they stay after this command, until `sockwrap detach --{kind} {value}` or the cgroup's end",
        if replaced { "replaced the policy: attached" } else { "attached" },
        links.len(),
        if links.len() == 1 { "" } else { "s" },
        links.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(" "),
        t.what,
        dir.display(),
        pin_dir.display()
    );
    if pids.is_empty() {
        println!(
            "no process in {} yet: the sockets its processes open get the policy",
            t.what
        );
    }
    done
}

/// `sockwrap detach --cgroup/--container/--pod`.
pub fn detach(m: &ArgMatches) -> Result<ExitCode> {
    let Some((kind, value)) = asked(m) else {
        return Err(Error::usage(
            "detach: name a target: --cgroup PATH, --container ID|NAME or --pod UID",
        ));
    };
    let what = format!("detach --{kind}");
    let mount = cgroup::mount_point().map_err(|e| Error::setup(format_args!("{what}: {e}")))?;
    super::systemd::root_and_bpffs(&what, "nothing detached")?;
    let t = resolve(kind, &value, &mount, false)?;
    // A target that is gone resolves to no path: find its pins by the name it was given.
    let dirs: Vec<Attachment> = attachments()
        .into_iter()
        .filter(|a| {
            if t.rel.is_empty() {
                let needle = match kind {
                    "pod" => format!("pod{}", value.replace('-', "_")),
                    _ => value.clone(),
                };
                a.rel.replace('-', "_").contains(&needle.replace('-', "_"))
            } else {
                a.rel == t.rel
            }
        })
        .collect();
    if dirs.is_empty() {
        let gone = sweep(true);
        eprintln!(
            "sockwrap: {what}: nothing is attached to {}{}",
            t.what,
            if gone.is_empty() {
                ""
            } else {
                " (the pins of cgroups that are gone were removed)"
            }
        );
        return Err(Error::Findings);
    }
    for a in &dirs {
        let n = a.links.len();
        programs::unpin(&a.dir).map_err(|e| Error::setup(format_args!("{what}: {e}")))?;
        println!(
            "detached {} from cgroup {}: {n} link{} and the pins in {} removed; new sockets there get nothing from sockwrap",
            t.what,
            a.rel,
            if n == 1 { "" } else { "s" },
            a.dir.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// (plans applied, setsockopt calls kept from changing a locked option) from the counters.
fn plans_and_locks(c: &[u64]) -> (u64, u64) {
    use sockwrap_kernel::tables::{C_APPLIED_BASE, C_LOCKED};
    let at = |i: u32| c.get(i as usize).copied().unwrap_or(0);
    ((C_APPLIED_BASE..C_LOCKED).map(at).sum(), at(C_LOCKED))
}

/// `sockwrap status --containers`: what is attached where, and what it did.
pub fn status(m: &ArgMatches) -> Result<ExitCode> {
    let json = m.get_flag("json");
    let all = attachments();
    if json {
        let rows: Vec<crate::json::Json> = all
            .iter()
            .map(|a| {
                let counters = programs::pinned_counters(&a.dir).unwrap_or_default();
                let (applied, locked) = plans_and_locks(&counters);
                crate::json::object([
                    ("cgroup", a.rel.as_str().into()),
                    ("attached", a.live().into()),
                    ("pins", a.dir.display().to_string().into()),
                    (
                        "programs",
                        crate::json::Json::Array(
                            a.links.iter().map(|(k, _)| k.as_str().into()).collect(),
                        ),
                    ),
                    ("plans_applied", (applied as i64).into()),
                    ("locked", (locked as i64).into()),
                ])
            })
            .collect();
        println!(
            "{}",
            crate::json::object([("containers", crate::json::Json::Array(rows))]).to_json()
        );
        return Ok(ExitCode::SUCCESS);
    }
    if all.is_empty() {
        println!("no cgroup has a sockwrap policy attached (pins in {PINS})");
        return Ok(ExitCode::SUCCESS);
    }
    let mut stale = false;
    for a in &all {
        let state = if a.live() {
            "attached"
        } else {
            stale = true;
            "GONE (the cgroup was removed; `sockwrap doctor` removes these pins)"
        };
        println!(
            "{}: {state}: {}",
            a.rel,
            a.links
                .iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        );
        let (applied, locked) =
            plans_and_locks(&programs::pinned_counters(&a.dir).unwrap_or_default());
        println!(
            "    pins: {}; plans applied: {applied}; setsockopt calls kept from changing a locked option: {locked}",
            a.dir.display()
        );
    }
    if stale {
        Err(Error::Findings)
    } else {
        Ok(ExitCode::SUCCESS)
    }
}

#[cfg(test)]
mod tests;
