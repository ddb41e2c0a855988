//! `attach`'s table and `--json` document (docs/json.md).

use super::{Opts, Outcome, Report, Row};
use crate::json::{obj, object, option_value, Json, JsonExt as _};
use sockwrap_policy::catalog::{Opt, Shown};
use sockwrap_policy::Value;
use std::fmt::Write as _;

fn shown(opt: Option<Opt>, v: Option<Value>) -> String {
    match (opt, v) {
        (Some(o), Some(v)) => Shown(o, v).to_string(),
        (None, Some(v)) => v.to_string(),
        (_, None) => "-".into(),
    }
}

/// The `after` cell: the value now, or what happened instead.
fn after_cell(r: &Row) -> String {
    match &r.outcome {
        Outcome::Set => shown(r.opt, r.after),
        Outcome::Already => format!("{} (already)", shown(r.opt, r.after)),
        Outcome::WouldSet => format!("would be {} (dry run)", shown(r.opt, r.wanted)),
        Outcome::Refused(e, _) => format!("REFUSED: {e}"),
        Outcome::Skipped(why) => format!("skipped: {why}"),
        Outcome::Listed => shown(r.opt, r.after),
    }
}

pub(super) fn table(o: &Opts, reports: &[Report]) -> String {
    let mut lines: Vec<[String; 6]> = Vec::new();
    let head = if o.list {
        ["pid:fd", "endpoints", "state", "option", "value", ""]
    } else {
        ["pid:fd", "endpoints", "state", "option", "before", "after"]
    };
    let (mut changed, mut unchanged, mut skipped, mut refused, mut socks) = (0, 0, 0, 0, 0);
    for r in reports {
        let id = format!("{}:{}", r.pid, r.fd);
        let Some(s) = &r.sock else {
            skipped += 1;
            lines.push([
                id,
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                r.gone.unwrap_or("").into(),
            ]);
            continue;
        };
        socks += 1;
        let state = format!("{} {}", s.state, s.role_name());
        if r.no_rule {
            unchanged += 1;
            lines.push([
                id,
                s.endpoints(),
                state,
                "-".into(),
                "-".into(),
                "no rule applies: unchanged".into(),
            ]);
            continue;
        }
        let mut any_set = false;
        for row in &r.rows {
            match row.outcome {
                Outcome::Set | Outcome::WouldSet => any_set = true,
                Outcome::Refused(..) => refused += 1,
                _ => {}
            }
            let opt = format!("{} ({})", row.option, row.kernel);
            let (before, after) = if o.list {
                (shown(row.opt, row.after), String::new())
            } else {
                (shown(row.opt, row.before), after_cell(row))
            };
            lines.push([id.clone(), s.endpoints(), state.clone(), opt, before, after]);
        }
        if any_set {
            changed += 1;
        } else {
            unchanged += 1;
        }
    }
    let ncol = if o.list { 5 } else { 6 };
    let mut w = [0usize; 6];
    for l in std::iter::once(&head.map(String::from)).chain(lines.iter()) {
        for (i, c) in l.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let fmt_line = |out: &mut String, cells: &[String]| {
        out.push('|');
        for (i, c) in cells.iter().take(ncol).enumerate() {
            let _ = write!(out, " {c:<width$} |", width = w[i]);
        }
        out.push('\n');
    };
    fmt_line(&mut out, &head.map(String::from));
    out.push('|');
    for wi in w.iter().take(ncol) {
        let _ = write!(out, "{}|", "-".repeat(wi + 2));
    }
    out.push('\n');
    for l in &lines {
        fmt_line(&mut out, l);
    }
    if o.list {
        let _ = writeln!(out, "{socks} TCP/UDP sockets");
    } else {
        let _ = writeln!(
            out,
            "{socks} TCP/UDP sockets: {changed} {}, {unchanged} unchanged, {skipped} closed during the run, {refused} options refused{}",
            if o.dry_run { "would change" } else { "changed" },
            if o.dry_run { " (dry run: nothing was set)" } else { "" }
        );
        if !o.dry_run && changed > 0 && o.follow {
            out.push_str(
                "set once on the open sockets, not locked: the program may set its own values again on them; the sockets it opens from now on get the policy and its locks (--follow)\n",
            );
        } else if !o.dry_run && changed > 0 {
            out.push_str(
                "set once: the program may set its own values again; attach cannot lock them\n",
            );
        }
    }
    out
}

/// `--json`: the same facts as the table, one document (docs/json.md).
pub(super) fn json(target: i32, o: &Opts, reports: &[Report], exited: &[i32]) -> String {
    let mode = if o.list {
        "list"
    } else if o.dry_run {
        "dry-run"
    } else {
        "apply"
    };
    let sockets: Vec<Json> = reports.iter().map(socket_json).collect();
    let doc = object([
        ("pid", target.into()),
        ("mode", mode.into()),
        ("locked", false.into()),
        ("sockets", sockets.into()),
        ("exited", exited.to_vec().into()),
    ]);
    doc.to_json() + "\n"
}

fn socket_json(r: &Report) -> Json {
    let mut fields: Vec<(String, Json)> =
        vec![("pid".into(), r.pid.into()), ("fd".into(), r.fd.into())];
    match &r.sock {
        None => fields.push(("skipped".into(), r.gone.unwrap_or("").into())),
        Some(s) => fields.extend([
            ("transport".into(), s.transport_name().into()),
            ("mptcp".into(), s.mptcp.into()),
            ("family".into(), s.family_name().into()),
            ("local".into(), s.local.to_string().into()),
            ("remote".into(), s.remote.map(|r| r.to_string()).into()),
            ("state".into(), s.state.into()),
            ("listening".into(), s.listening.into()),
            ("role".into(), s.role.map(|_| s.role_name()).into()),
        ]),
    }
    let options: Vec<Json> = r.rows.iter().map(row_json).collect();
    fields.push(("options".into(), options.into()));
    obj(fields)
}

fn row_json(row: &Row) -> Json {
    let (result, why) = match &row.outcome {
        Outcome::Set => ("set", String::new()),
        Outcome::Already => ("unchanged", String::new()),
        Outcome::WouldSet => ("would-set", String::new()),
        Outcome::Refused(e, "") => ("refused", e.to_string()),
        Outcome::Refused(e, h) => ("refused", format!("{e}: {h}")),
        Outcome::Skipped(w) => ("skipped", w.clone()),
        Outcome::Listed => ("current", String::new()),
    };
    let value = |v: Option<Value>| v.map_or(Json::Null, option_value);
    let mut fields: Vec<(String, Json)> = vec![
        ("option".into(), row.option.as_str().into()),
        ("kernel".into(), row.kernel.into()),
        ("before".into(), value(row.before)),
        ("wanted".into(), value(row.wanted)),
        ("after".into(), value(row.after)),
        ("shown".into(), shown(row.opt, row.after).into()),
        ("result".into(), result.into()),
    ];
    if !why.is_empty() {
        fields.push(("reason".into(), why.into()));
    }
    obj(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_rows_keep_their_documented_shape() {
        let row = Row {
            option: "tos".into(),
            kernel: "IP_TOS",
            before: Some(Value::Int(0)),
            wanted: Some(Value::Int(0xb8)),
            after: None,
            outcome: Outcome::Skipped("a \"quoted\" reason\n".into()),
            opt: Some(Opt::Tos),
        };
        assert_eq!(
            row_json(&row).to_json(),
            r#"{"option":"tos","kernel":"IP_TOS","before":0,"wanted":184,"after":null,"shown":"-","result":"skipped","reason":"a \"quoted\" reason\n"}"#
        );
    }
}
