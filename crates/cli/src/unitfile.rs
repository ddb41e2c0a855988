//! Just enough of systemd's unit-file syntax for `sockwrap enable` and `status`: find a
//! unit and its drop-ins in the search path the way systemd does, and compute the
//! environment that `Environment=` lines give the service (systemd.exec(5)). Used to keep
//! the unit's own `LD_PRELOAD`, and to tell when a later drop-in overrides ours.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The system unit search path, highest priority first (systemd.unit(5); `/lib` for
/// Debian systems without merged /usr).
pub const UNIT_DIRS: [&str; 7] = [
    "etc/systemd/system.control",
    "run/systemd/system.control",
    "etc/systemd/system",
    "run/systemd/system",
    "usr/local/lib/systemd/system",
    "usr/lib/systemd/system",
    "lib/systemd/system",
];

/// `nginx` → `nginx.service`; refuses names that could escape the unit directory.
pub fn unit_name(s: &str) -> Result<String, String> {
    if s.is_empty()
        || s.contains('/')
        || s.starts_with('.')
        || s.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!("`{s}` is not a systemd unit name"));
    }
    Ok(if s.contains('.') {
        s.to_string()
    } else {
        format!("{s}.service")
    })
}

/// `foo@bar.service` → `foo@.service` (the template an instance is made from).
fn template_of(unit: &str) -> Option<String> {
    let (head, rest) = unit.split_once('@')?;
    let (_, suffix) = rest.rsplit_once('.')?;
    Some(format!("{head}@.{suffix}"))
}

/// Where the unit file is (the first one in [`UNIT_DIRS`], the instance before its template).
pub fn find_unit(root: &Path, unit: &str) -> Option<PathBuf> {
    let names: Vec<String> = std::iter::once(unit.to_string())
        .chain(template_of(unit))
        .collect();
    for name in &names {
        for d in UNIT_DIRS {
            let p = root.join(d).join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// The drop-ins that apply to `unit`, in the order systemd reads them: by file name, a name
/// in a higher-priority directory masking the same name lower down. Includes the template's
/// drop-ins and the `service.d`-style ones for the unit type.
pub fn drop_ins(root: &Path, unit: &str) -> Vec<PathBuf> {
    let mut dirs: Vec<String> = Vec::new();
    if let Some((_, suffix)) = unit.rsplit_once('.') {
        dirs.push(format!("{suffix}.d"));
    }
    if let Some(t) = template_of(unit) {
        dirs.push(format!("{t}.d"));
    }
    dirs.push(format!("{unit}.d"));
    let mut by_name: BTreeMap<String, PathBuf> = BTreeMap::new();
    for d in UNIT_DIRS.iter().rev() {
        for sub in &dirs {
            let Ok(rd) = std::fs::read_dir(root.join(d).join(sub)) else {
                continue;
            };
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.ends_with(".conf") {
                    // Higher-priority directories come later here and replace lower ones.
                    by_name.insert(name, e.path());
                }
            }
        }
    }
    by_name.into_values().collect()
}

/// The `[Service]` assignments of one file, continuation lines joined.
pub fn service_assignments(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut in_service = false;
    let mut pending = String::new();
    for raw in text.lines() {
        let line = if pending.is_empty() {
            raw.trim_start()
        } else {
            raw
        };
        if pending.is_empty() && (line.starts_with('#') || line.starts_with(';')) {
            continue;
        }
        if let Some(cont) = line.strip_suffix('\\') {
            pending.push_str(cont);
            pending.push(' ');
            continue;
        }
        pending.push_str(line);
        let full = std::mem::take(&mut pending);
        let full = full.trim();
        if full.starts_with('[') {
            in_service = full == "[Service]";
            continue;
        }
        if !in_service {
            continue;
        }
        if let Some((k, v)) = full.split_once('=') {
            out.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    out
}

/// Splits an `Environment=` value into `KEY=VALUE` words: whitespace-separated, with
/// double or single quotes, C escapes inside double quotes, and `%%` for `%`.
pub fn environment_words(value: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut have = false;
    let mut quote: Option<char> = None;
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, c) if c.is_whitespace() => {
                if have {
                    words.push(std::mem::take(&mut cur));
                    have = false;
                }
            }
            (None, '"' | '\'') => {
                quote = Some(c);
                have = true;
            }
            (Some(q), c) if c == q => quote = None,
            (_, '\\') => {
                have = true;
                match chars.next() {
                    Some('n') => cur.push('\n'),
                    Some('t') => cur.push('\t'),
                    Some(o) => cur.push(o),
                    None => {}
                }
            }
            (_, '%') if chars.peek() == Some(&'%') => {
                chars.next();
                cur.push('%');
                have = true;
            }
            (_, c) => {
                cur.push(c);
                have = true;
            }
        }
    }
    if have {
        words.push(cur);
    }
    words
}

/// Quotes one `KEY=VALUE` for an `Environment=` line.
pub fn quote_assignment(key: &str, value: &str) -> String {
    let v = value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('%', "%%");
    format!("\"{key}={v}\"")
}

/// What the `Environment=` and `EnvironmentFile=` lines of these files (in order) give.
#[derive(Debug, Default)]
pub struct Composed {
    /// Each variable with its value and the file that set it last.
    pub vars: BTreeMap<String, (String, PathBuf)>,
    /// `EnvironmentFile=` entries (a leading `-` means "ignore when missing").
    pub env_files: Vec<(String, PathBuf)>,
}

pub fn compose(files: &[PathBuf]) -> Composed {
    let mut c = Composed::default();
    for f in files {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        for (k, v) in service_assignments(&text) {
            match k.as_str() {
                // An empty assignment resets the list built so far.
                "Environment" if v.is_empty() => c.vars.clear(),
                "Environment" => {
                    for w in environment_words(&v) {
                        if let Some((name, val)) = w.split_once('=') {
                            c.vars
                                .insert(name.to_string(), (val.to_string(), f.clone()));
                        }
                    }
                }
                "EnvironmentFile" if v.is_empty() => c.env_files.clear(),
                "EnvironmentFile" => c.env_files.push((v, f.clone())),
                _ => {}
            }
        }
    }
    c
}

/// The value an environment file gives `key`, if any (`KEY=VALUE` lines, `#` comments,
/// optional quotes, an optional `export`).
pub fn env_file_value(path: &Path, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut found = None;
    for line in text.lines() {
        let line = line.trim();
        let line = line.strip_prefix("export ").unwrap_or(line);
        if let Some((k, v)) = line.split_once('=') {
            if k.trim() == key {
                let v = v.trim();
                let v = v
                    .strip_prefix('"')
                    .and_then(|s| s.strip_suffix('"'))
                    .or_else(|| v.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')))
                    .unwrap_or(v);
                found = Some(v.to_string());
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_follow_systemd_quoting() {
        assert_eq!(
            environment_words(r#"FOO=bar "A=1 2" 'B=x"y' C=50%% D="q\"uote""#),
            vec!["FOO=bar", "A=1 2", "B=x\"y", "C=50%", "D=q\"uote"]
        );
        assert_eq!(
            environment_words("\"LD_PRELOAD=/a.so /b.so\""),
            vec!["LD_PRELOAD=/a.so /b.so"]
        );
    }

    #[test]
    fn quoting_round_trips() {
        for v in [
            "/usr/lib/sockwrap/libsockwrap.so:/opt/x.so",
            "10.0.0.0/8 [::1]:443",
            "50%",
            r#"a"b\c"#,
        ] {
            let q = quote_assignment("K", v);
            assert_eq!(environment_words(&q), vec![format!("K={v}")], "{q}");
        }
    }

    #[test]
    fn assignments_only_from_service_with_continuations() {
        let text = "[Unit]\nEnvironment=NO=1\n[Service]\n# Environment=NO=2\nEnvironment=A=1 \\\n  B=2\nExecStart=/bin/true\n";
        let a = service_assignments(text);
        assert_eq!(a.len(), 2, "{a:?}");
        assert_eq!(a[0].0, "Environment");
        assert_eq!(environment_words(&a[0].1), vec!["A=1", "B=2"]);
        assert_eq!(a[1], ("ExecStart".to_string(), "/bin/true".to_string()));
    }

    fn scratch(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("sockwrap-unitfile-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn put(root: &Path, path: &str, text: &str) {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap_or(root)).ok();
        std::fs::write(p, text).ok();
    }

    #[test]
    fn drop_ins_sort_by_name_and_etc_masks_lib() {
        let root = scratch("order");
        put(
            &root,
            "lib/systemd/system/a.service",
            "[Service]\nEnvironment=X=unit\n",
        );
        put(
            &root,
            "lib/systemd/system/a.service.d/10-x.conf",
            "[Service]\nEnvironment=X=lib10\n",
        );
        put(
            &root,
            "etc/systemd/system/a.service.d/10-x.conf",
            "[Service]\nEnvironment=X=etc10\n",
        );
        put(
            &root,
            "lib/systemd/system/a.service.d/20-y.conf",
            "[Service]\nEnvironment=Y=lib20\n",
        );
        put(
            &root,
            "etc/systemd/system/service.d/05-all.conf",
            "[Service]\nEnvironment=Z=all\n",
        );
        let unit = find_unit(&root, "a.service");
        assert_eq!(unit, Some(root.join("lib/systemd/system/a.service")));
        let d = drop_ins(&root, "a.service");
        let names: Vec<String> = d
            .iter()
            .map(|p| {
                p.strip_prefix(&root)
                    .map(|r| r.display().to_string())
                    .unwrap_or_default()
            })
            .collect();
        assert_eq!(
            names,
            [
                "etc/systemd/system/service.d/05-all.conf",
                "etc/systemd/system/a.service.d/10-x.conf",
                "lib/systemd/system/a.service.d/20-y.conf"
            ]
        );
        let mut files = vec![root.join("lib/systemd/system/a.service")];
        files.extend(d);
        let c = compose(&files);
        let get = |k: &str| c.vars.get(k).map(|(v, _)| v.as_str());
        assert_eq!(
            (get("X"), get("Y"), get("Z")),
            (Some("etc10"), Some("lib20"), Some("all"))
        );
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn empty_environment_resets_and_templates_are_found() {
        let root = scratch("reset");
        put(
            &root,
            "lib/systemd/system/p@.service",
            "[Service]\nEnvironment=A=1 B=2\n",
        );
        put(
            &root,
            "etc/systemd/system/p@.service.d/x.conf",
            "[Service]\nEnvironment=\nEnvironment=C=3\n",
        );
        let unit = find_unit(&root, "p@main.service");
        assert_eq!(unit, Some(root.join("lib/systemd/system/p@.service")));
        let mut files: Vec<PathBuf> = unit.into_iter().collect();
        files.extend(drop_ins(&root, "p@main.service"));
        let c = compose(&files);
        assert_eq!(c.vars.keys().collect::<Vec<_>>(), ["C"]);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn unit_names() {
        assert_eq!(unit_name("nginx").as_deref(), Ok("nginx.service"));
        assert_eq!(unit_name("a@b.service").as_deref(), Ok("a@b.service"));
        assert!(unit_name("../x").is_err());
        assert!(unit_name("a b").is_err());
        assert_eq!(
            template_of("postgresql@15-main.service").as_deref(),
            Some("postgresql@.service")
        );
    }
}
