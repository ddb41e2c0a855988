//! `sockwrap agent`: gives containers their policy when they start, by following a container
//! runtime (podman or docker): the containers already running when it starts, then each
//! `start` event of the runtime's JSON event stream.
//!
//! Which policy: the container's label `sockwrap.policy=NAME` (a file `NAME.toml` in the
//! policy directory), or else the first `[[assign]]` rule of the agent's config whose
//! `image` and `name` patterns match. A container with neither gets nothing. Each decision is
//! logged, one line.
//!
//! The policy is attached as `sockwrap attach --container ID -c FILE` attaches it (that
//! command, run as a child, bounded in time): pinned BPF links on the container's cgroup,
//! which outlive the agent. The agent never detaches: stopping or restarting it leaves every
//! container as it is, and a container already attached is left alone when it starts again.
//! A container's pins go with it (the next attach or `sockwrap doctor` removes them).

use crate::error::{Error, Result};
use clap::ArgMatches;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

/// The label a container names its policy by.
pub const LABEL: &str = "sockwrap.policy";

/// One `[[assign]]` rule of the agent's config.
#[derive(Debug, Clone, PartialEq)]
pub struct Assign {
    pub image: Option<String>,
    pub name: Option<String>,
    pub policy: String,
}

/// What the agent knows of a container.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Container {
    pub id: String,
    pub name: String,
    pub image: String,
    pub labels: Vec<(String, String)>,
}

/// Why a container gets a policy, or none.
#[derive(Debug, Clone, PartialEq)]
pub enum Choice {
    Label(String),
    Rule(usize, String),
    None,
}

/// The policy for container `c`: its label first, then the first matching rule.
pub fn choose(c: &Container, rules: &[Assign]) -> Choice {
    if let Some((_, v)) = c.labels.iter().find(|(k, _)| k == LABEL) {
        return Choice::Label(v.clone());
    }
    for (i, r) in rules.iter().enumerate() {
        let image_ok = r.image.as_deref().is_none_or(|p| glob(p, &c.image));
        let name_ok = r.name.as_deref().is_none_or(|p| glob(p, &c.name));
        if image_ok && name_ok {
            return Choice::Rule(i + 1, r.policy.clone());
        }
    }
    Choice::None
}

/// `*` for any run of characters, `?` for one; everything else literal. (A dozen lines;
/// the glob crates match paths, with `/` rules a container name or image does not want.)
pub fn glob(pat: &str, s: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pat.chars().collect(), s.chars().collect());
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < t.len() {
        if i < p.len() && (p[i] == '?' || p[i] == t[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == '*')
}

/// The agent's config: `[[assign]]` tables with `policy` and at least one of `image`,
/// `name`.
pub fn parse_config(text: &str, file: &str) -> std::result::Result<Vec<Assign>, String> {
    use toml::de::{DeTable, DeValue};
    let t = DeTable::parse(text).map_err(|e| format!("{file}: invalid TOML: {}", e.message()))?;
    let mut out = Vec::new();
    for (k, v) in t.get_ref() {
        let k = k.get_ref();
        if k != "assign" {
            return Err(format!(
                "{file}: unknown key `{k}` (the agent's config has [[assign]] tables)"
            ));
        }
        let DeValue::Array(arr) = v.get_ref() else {
            return Err(format!(
                "{file}: `assign` must be an array of tables ([[assign]])"
            ));
        };
        for (n, a) in arr.iter().enumerate() {
            let at = format!("{file}: [[assign]] #{}", n + 1);
            let DeValue::Table(a) = a.get_ref() else {
                return Err(format!("{at}: not a table"));
            };
            let mut r = Assign {
                image: None,
                name: None,
                policy: String::new(),
            };
            for (k, v) in a {
                let k = k.get_ref();
                let DeValue::String(s) = v.get_ref() else {
                    return Err(format!("{at}: `{k}` must be a string"));
                };
                let s = s.to_string();
                match k.as_ref() {
                    "image" => r.image = Some(s),
                    "name" => r.name = Some(s),
                    "policy" => r.policy = s,
                    _ => return Err(format!("{at}: unknown key `{k}` (image, name, policy)")),
                }
            }
            if r.policy.is_empty() {
                return Err(format!("{at}: no `policy`"));
            }
            if r.image.is_none() && r.name.is_none() {
                return Err(format!("{at}: give `image` or `name` (a rule for every container is a host policy: sockwrap enable --system)"));
            }
            out.push(r);
        }
    }
    Ok(out)
}

/// A container from one entry of `podman ps --format json`, `podman inspect`, or a podman
/// or docker event (JSON), whichever fields it has.
pub fn container_from_json(v: &serde_json::Value) -> Option<Container> {
    let s = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| v.get(*k).and_then(|x| x.as_str()))
            .map(str::to_string)
    };
    let id = s(&["Id", "ID", "id"])?;
    let name = s(&["Name", "name"])
        .or_else(|| {
            v.get("Names").and_then(|n| match n {
                serde_json::Value::Array(a) => {
                    a.first().and_then(|x| x.as_str()).map(str::to_string)
                }
                serde_json::Value::String(x) => Some(x.clone()),
                _ => None,
            })
        })
        .or_else(|| {
            v.pointer("/Actor/Attributes/name")
                .and_then(|x| x.as_str())
                .map(str::to_string)
        })
        .unwrap_or_default();
    let image = s(&["Image", "image"])
        .or_else(|| {
            v.pointer("/Config/Image")
                .and_then(|x| x.as_str())
                .map(str::to_string)
        })
        .unwrap_or_default();
    let mut labels = Vec::new();
    for path in [
        "/Labels",
        "/Config/Labels",
        "/Attributes",
        "/Actor/Attributes",
    ] {
        match v.pointer(path) {
            Some(serde_json::Value::Object(m)) => labels.extend(
                m.iter()
                    .filter_map(|(k, x)| x.as_str().map(|x| (k.clone(), x.to_string()))),
            ),
            // docker ps --format '{{json .}}': "a=b,c=d"
            Some(serde_json::Value::String(t)) => labels.extend(
                t.split(',')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string())),
            ),
            _ => {}
        }
    }
    Some(Container {
        id,
        name: name.trim_start_matches('/').to_string(),
        image,
        labels,
    })
}

/// The annotation a Kubernetes pod names its policy by.
pub const POD_ANNOTATION: &str = "sockwrap.io/policy";

/// A pod as the CRI shows it (`crictl pods -o json`): its UID, where it is, its policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Pod {
    pub uid: String,
    pub name: String,
    pub policy: Option<String>,
}

/// The ready pods of `crictl pods -o json` (`{"items": [{"metadata": {"uid", "name",
/// "namespace"}, "state": "SANDBOX_READY", "annotations": {...}}]}`).
pub fn pods_from_crictl(v: &serde_json::Value) -> Vec<Pod> {
    let Some(items) = v.get("items").and_then(|i| i.as_array()) else {
        return Vec::new();
    };
    items
        .iter()
        .filter(|p| p.get("state").and_then(|s| s.as_str()) == Some("SANDBOX_READY"))
        .filter_map(|p| {
            let md = p.get("metadata")?;
            let uid = md.get("uid")?.as_str()?.to_string();
            let name = format!(
                "{}/{}",
                md.get("namespace").and_then(|x| x.as_str()).unwrap_or("?"),
                md.get("name").and_then(|x| x.as_str()).unwrap_or("?")
            );
            let policy = p
                .pointer("/annotations")
                .and_then(|a| a.get(POD_ANNOTATION))
                .and_then(|x| x.as_str())
                .map(str::to_string);
            Some(Pod { uid, name, policy })
        })
        .collect()
}

/// Runs `cmd` to its end within `secs`, returning its stdout, or why not (its last line of
/// stderr and its status when it failed).
fn output_within(cmd: &mut Command, secs: u64) -> std::result::Result<String, String> {
    let out = super::containers::run_bounded(cmd, secs)?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(text)
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(format!(
            "{} ({})",
            err.lines().last().unwrap_or("").trim(),
            out.status
        ))
    }
}

struct Agent {
    runtime: String,
    dir: PathBuf,
    rules: Vec<Assign>,
}

impl Agent {
    fn log(&self, msg: impl std::fmt::Display) {
        // One line per decision, on stdout (the journal under systemd).
        println!("sockwrap agent: {msg}");
    }

    /// The containers running now, each inspected for its labels.
    fn running(&self) -> Vec<Container> {
        let ids = match output_within(
            Command::new(&self.runtime).args(["ps", "-q", "--no-trunc"]),
            30,
        ) {
            Ok(t) => t.split_whitespace().map(str::to_string).collect::<Vec<_>>(),
            Err(e) => {
                self.log(format_args!("{} ps failed: {e}", self.runtime));
                return Vec::new();
            }
        };
        ids.iter().filter_map(|id| self.inspect(id)).collect()
    }

    fn inspect(&self, id: &str) -> Option<Container> {
        match output_within(
            Command::new(&self.runtime).args(["inspect", "--type", "container", id]),
            30,
        ) {
            Ok(t) => {
                let v: serde_json::Value = serde_json::from_str(&t).ok()?;
                let first = v.as_array().and_then(|a| a.first()).unwrap_or(&v);
                container_from_json(first)
            }
            Err(e) => {
                self.log(format_args!(
                    "container {}: {} inspect failed: {e}",
                    short(id),
                    self.runtime
                ));
                None
            }
        }
    }

    /// Decides and attaches for one container.
    fn handle(&self, c: &Container) {
        let who = format!("container {} ({}, image {})", c.name, short(&c.id), c.image);
        let (policy, why) = match choose(c, &self.rules) {
            Choice::None => {
                self.log(format_args!(
                    "{who}: no policy (no {LABEL} label, no [[assign]] rule matches)"
                ));
                return;
            }
            Choice::Label(p) => (p, format!("label {LABEL}")),
            Choice::Rule(n, p) => (p, format!("[[assign]] rule #{n}")),
        };
        self.give(&who, &policy, &why, "--container", &c.id);
    }

    /// Checks the policy's name and file, skips a target attached already, and attaches.
    fn give(&self, who: &str, policy: &str, why: &str, flag: &str, id: &str) {
        if policy.contains('/') || policy.starts_with('.') || policy.is_empty() {
            self.log(format_args!(
                "{who}: policy `{policy}` ({why}) is not a policy name; nothing attached"
            ));
            return;
        }
        let file = self.dir.join(format!("{policy}.toml"));
        if !file.is_file() {
            self.log(format_args!(
                "{who}: policy `{policy}` ({why}): no {}; nothing attached",
                file.display()
            ));
            return;
        }
        if already_attached(id) {
            self.log(format_args!(
                "{who}: policy `{policy}` ({why}) is attached already; left as it is"
            ));
            return;
        }
        self.attach(who, policy, why, flag, id, &file);
    }

    /// Runs `sockwrap attach --container ID` or `--pod UID` with the policy file, bounded.
    fn attach(
        &self,
        who: &str,
        policy: &str,
        why: &str,
        flag: &str,
        id: &str,
        file: &std::path::Path,
    ) {
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("sockwrap"));
        let r = output_within(
            Command::new(exe).args(["attach", flag, id, "-c"]).arg(file),
            60,
        );
        match r {
            Ok(_) => self.log(format_args!("{who}: policy `{policy}` ({why}) attached")),
            Err(e) => self.log(format_args!(
                "{who}: policy `{policy}` ({why}) NOT attached: {e}"
            )),
        }
    }

    /// Decides and attaches for one pod (its annotation only).
    fn handle_pod(&self, p: &Pod) {
        let who = format!("pod {} ({})", p.name, p.uid);
        let Some(policy) = &p.policy else {
            self.log(format_args!(
                "{who}: no policy (no {POD_ANNOTATION} annotation)"
            ));
            return;
        };
        let why = format!("annotation {POD_ANNOTATION}");
        self.give(&who, policy, &why, "--pod", &p.uid);
    }

    /// Kubernetes through the CRI: `crictl pods -o json` every `every`, each ready pod
    /// handled once (a pod is new when its UID is).
    fn follow_cri(&self, once: bool, every: Duration) -> Result<ExitCode> {
        let mut seen = std::collections::HashSet::new();
        let mut ready_said = false;
        loop {
            match output_within(Command::new(&self.runtime).args(["pods", "-o", "json"]), 30) {
                Ok(t) => match serde_json::from_str::<serde_json::Value>(&t) {
                    Ok(v) => {
                        for p in pods_from_crictl(&v) {
                            if seen.insert(p.uid.clone()) {
                                self.handle_pod(&p);
                            }
                        }
                    }
                    Err(e) => self.log(format_args!("{} pods: not JSON: {e}", self.runtime)),
                },
                Err(e) => self.log(format_args!("{} pods failed: {e}", self.runtime)),
            }
            if once {
                return Ok(ExitCode::SUCCESS);
            }
            if !ready_said {
                self.log("ready: waiting for pods to start");
                ready_said = true;
            }
            std::thread::sleep(every);
        }
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// Whether a live pin directory names this container ID or pod UID (the kubelet's systemd
/// driver writes a pod UID with `_` for `-`).
fn already_attached(id: &str) -> bool {
    let alt = id.replace('-', "_");
    super::containers::attachments()
        .iter()
        .any(|a| a.live() && (a.rel.contains(id) || a.rel.contains(&alt)))
}

pub fn agent(m: &ArgMatches) -> Result<ExitCode> {
    let dir = PathBuf::from(
        m.get_one::<String>("policies")
            .map_or("/etc/sockwrap/containers", String::as_str),
    );
    if !dir.is_dir() {
        return Err(Error::usage(format_args!(
            "agent: --policies {}: no such directory",
            dir.display()
        )));
    }
    // Every policy is checked at start: a broken one is named now, not when a container
    // needs it.
    let mut bad = 0;
    let mut names = Vec::new();
    for e in std::fs::read_dir(&dir)
        .map_err(|e| Error::usage(format_args!("agent: {}: {e}", dir.display())))?
        .flatten()
    {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "toml") {
            let vars = vec![("SOCKWRAP_CONFIG".to_string(), p.display().to_string())];
            let loaded = crate::load::load_vars(&vars);
            for err in &loaded.errors {
                eprintln!("sockwrap: agent: {err}");
                bad += 1;
            }
            names.push(
                p.file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            );
        }
    }
    if bad > 0 {
        return Err(Error::usage(format_args!(
            "agent: {bad} error(s) in the policies of {}; not started",
            dir.display()
        )));
    }
    // The service passes no --config: the host's file, when there is one.
    let host_config = "/etc/sockwrap/agent.toml";
    let config = m.get_one::<String>("config").cloned().or_else(|| {
        std::path::Path::new(host_config)
            .is_file()
            .then(|| host_config.to_string())
    });
    let rules = match config.as_ref() {
        Some(f) => {
            let text = std::fs::read_to_string(f)
                .map_err(|e| Error::usage(format_args!("agent: --config {f}: {e}")))?;
            parse_config(&text, f).map_err(|e| Error::usage(format_args!("agent: {e}")))?
        }
        None => Vec::new(),
    };
    for r in &rules {
        if !names.contains(&r.policy) {
            return Err(Error::usage(format_args!(
                "agent: an [[assign]] rule names policy `{}`, which is not in {} ({}.toml)",
                r.policy,
                dir.display(),
                r.policy
            )));
        }
    }
    let runtime = match m.get_one::<String>("runtime").map(String::as_str) {
        Some("cri") => "crictl".to_string(),
        Some("auto") | None => ["podman", "docker"]
            .into_iter()
            .find(|r| crate::elf::resolve_program(r.as_ref()).is_some_and(|p| p.is_file()))
            .ok_or_else(|| {
                Error::setup("agent: neither podman nor docker is installed (--runtime)")
            })?
            .to_string(),
        Some(r) => r.to_string(),
    };
    let a = Agent {
        runtime,
        dir,
        rules,
    };
    a.log(format_args!(
        "following {} with {} polic{} from {} and {} [[assign]] rule(s)",
        a.runtime,
        names.len(),
        if names.len() == 1 { "y" } else { "ies" },
        a.dir.display(),
        a.rules.len()
    ));
    super::containers::sweep(true);
    if a.runtime == "crictl" {
        return a.follow_cri(m.get_flag("once"), Duration::from_secs(2));
    }
    // Events first, then the containers running now: one that starts in between is seen
    // twice (the second time it is attached already), never missed.
    let mut events = Command::new(&a.runtime)
        .args([
            "events",
            "--format",
            "{{json .}}",
            "--filter",
            "event=start",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| Error::setup(format_args!("agent: {} events: {e}", a.runtime)))?;
    for c in a.running() {
        a.handle(&c);
    }
    let once = m.get_flag("once");
    if once {
        let _ = events.kill();
        let _ = events.wait();
        return Ok(ExitCode::SUCCESS);
    }
    a.log("ready: waiting for containers to start");
    let Some(out) = events.stdout.take() else {
        return Err(Error::setup("agent: no event stream"));
    };
    for line in std::io::BufReader::new(out).lines() {
        let Ok(line) = line else { break };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let status = ["Status", "status", "Action"]
            .iter()
            .find_map(|k| v.get(*k).and_then(|x| x.as_str()))
            .unwrap_or("");
        if status != "start" {
            continue;
        }
        let Some(ev) = container_from_json(&v) else {
            continue;
        };
        // The event's labels may be partial: the container itself says.
        if let Some(c) = a.inspect(&ev.id) {
            a.handle(&c);
        }
    }
    let status = events
        .wait()
        .map_err(|e| Error::setup(format_args!("agent: {e}")))?;
    Err(Error::setup(format_args!(
        "agent: {} events ended ({status}); containers keep what was attached (systemd restarts the agent)",
        a.runtime
    )))
}

#[cfg(test)]
mod tests;
