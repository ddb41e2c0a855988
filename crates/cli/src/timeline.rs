//! `sockwrap report --format perfetto FILE`: a trace as a timeline people can look at, in
//! the Chrome Trace Event format (JSON object form) that ui.perfetto.dev and
//! chrome://tracing open.
//!
//! * one track per process and thread: `process_name` and `thread_name` metadata events
//!   (`"ph":"M"`);
//! * one complete event (`"ph":"X"`, `ts` and `dur` in microseconds from the trace's first
//!   line) per connection and listener, from the start of its connect (its accept, its
//!   listen) to its close, on the thread that made it, with the addresses, the options,
//!   the result and the outcome (`stats`) in `args`. Complete events on one track must
//!   nest; connections of one thread that overlap without nesting go to extra tracks of
//!   that thread ("python3 1234 #2"), whose track ids are above any real tid;
//! * an instant event (`"ph":"i"`, thread scope) for each action, name resolution and
//!   override.
//!
//! A connection still open at the end of the record ends at its last line.

use crate::json::{Json, JsonExt as _};
use crate::summary::{summarise, Conn};
use std::collections::HashMap;

/// Track ids of the extra tracks start above the kernel's largest pid (`PID_MAX_LIMIT`,
/// 2^22), so they never meet a real tid.
const LANE_SHIFT: i64 = 22;

/// The timeline of the trace `text`, as one JSON document.
pub fn perfetto(text: &str) -> String {
    let sum = summarise(text);
    let evs: Vec<Json> = text
        .lines()
        .filter_map(|l| crate::json::parse(l).ok())
        .collect();
    // Time 0: the start of the first call (a connect's line is written when it returns).
    let t0 = evs
        .iter()
        .filter_map(|e| Some(e.int("t_mono_ns")? - e.int("dur_ns").unwrap_or(0)))
        .min()
        .unwrap_or(0);
    let t_end = evs
        .iter()
        .filter_map(|e| e.int("t_mono_ns"))
        .max()
        .unwrap_or(0);
    let ts = |ns: i64| micros(ns - t0);
    let mut out: Vec<Json> = Vec::new();

    // Names: the program each process and thread ran, as its lines say.
    let mut procs: Vec<(i64, String)> = Vec::new();
    let mut threads: Vec<(i64, i64, String)> = Vec::new();
    for e in &evs {
        let (Some(pid), Some(tid)) = (e.int("pid"), e.int("tid")) else {
            continue;
        };
        let prog = e.str("prog").unwrap_or("?").to_string();
        if !procs.iter().any(|(p, _)| *p == pid) {
            procs.push((pid, prog.clone()));
        }
        if !threads.iter().any(|(p, t, _)| *p == pid && *t == tid) {
            threads.push((pid, tid, format!("{prog} {tid}")));
        }
    }

    // Connections, laid on their thread's tracks.
    let mut lanes: HashMap<(i64, i64), Vec<Lane>> = HashMap::new();
    for c in &sum.conns {
        let Some(start) = c.start_ns else {
            continue; // a socket that never connected, listened or was accepted
        };
        let end = c.end_ns.unwrap_or(t_end).max(start);
        let track = lanes.entry((c.pid, c.tid)).or_default();
        let lane = match track.iter().position(|l| fits(l, start, end)) {
            Some(i) => i,
            None => {
                track.push(Vec::new());
                track.len() - 1
            }
        };
        track[lane].push((start, end));
        let tid = if lane == 0 {
            c.tid
        } else {
            let id = ((lane as i64) << LANE_SHIFT) | c.tid;
            if !threads.iter().any(|(p, t, _)| *p == c.pid && *t == id) {
                threads.push((c.pid, id, format!("{} {} #{}", c.prog, c.tid, lane + 1)));
            }
            id
        };
        out.push(crate::json::obj(vec![
            ("name".into(), Json::String(span_name(c))),
            (
                "cat".into(),
                Json::String(if c.role == "listener" {
                    "listener".into()
                } else {
                    "connection".into()
                }),
            ),
            ("ph".into(), Json::String("X".into())),
            ("ts".into(), ts(start)),
            ("dur".into(), micros(end - start)),
            ("pid".into(), Json::from(c.pid)),
            ("tid".into(), Json::from(tid)),
            ("args".into(), span_args(c)),
        ]));
    }

    // Instants: what sockwrap did and what the program resolved.
    for e in &evs {
        let (Some(pid), Some(tid), Some(t)) = (e.int("pid"), e.int("tid"), e.int("t_mono_ns"))
        else {
            continue;
        };
        let name = match e.str("ev") {
            Some("action") => format!(
                "action {}",
                e.get("action").map(Json::to_json).unwrap_or_default()
            ),
            Some("resolve") => format!("resolve {}", e.str("name").unwrap_or("?")),
            Some("override") => format!("override {}", e.str("kernel").unwrap_or("?")),
            _ => continue,
        };
        let mut args = e.clone();
        if let Json::Object(m) = &mut args {
            m.retain(|k, _| !matches!(k.as_str(), "v" | "t_mono_ns" | "t_wall_ns" | "pid" | "tid"));
        }
        out.push(crate::json::obj(vec![
            ("name".into(), Json::String(name)),
            (
                "cat".into(),
                Json::String(e.str("ev").unwrap_or("?").into()),
            ),
            ("ph".into(), Json::String("i".into())),
            ("s".into(), Json::String("t".into())),
            ("ts".into(), ts(t)),
            ("pid".into(), Json::from(pid)),
            ("tid".into(), Json::from(tid)),
            ("args".into(), args),
        ]));
    }

    let meta = |name: &str, pid: i64, tid: i64, label: &str| {
        crate::json::obj(vec![
            ("name".into(), Json::String(name.into())),
            ("ph".into(), Json::String("M".into())),
            ("ts".into(), Json::from(0)),
            ("pid".into(), Json::from(pid)),
            ("tid".into(), Json::from(tid)),
            (
                "args".into(),
                crate::json::obj(vec![("name".into(), Json::String(label.into()))]),
            ),
        ])
    };
    let mut all: Vec<Json> = procs
        .iter()
        .map(|(pid, prog)| meta("process_name", *pid, *pid, &format!("{prog} {pid}")))
        .chain(
            threads
                .iter()
                .map(|(pid, tid, label)| meta("thread_name", *pid, *tid, label)),
        )
        .collect();
    all.extend(out);
    crate::json::obj(vec![
        ("traceEvents".into(), Json::Array(all)),
        ("displayTimeUnit".into(), Json::String("ms".into())),
    ])
    .to_json()
        + "\n"
}

/// The spans (start, end) on one track, in start order.
type Lane = Vec<(i64, i64)>;

/// Nanoseconds as the format's microseconds (to the nanosecond).
fn micros(ns: i64) -> Json {
    // A whole number of microseconds as an integer (`1500`, not `1500.0`), as before
    // serde_json wrote it.
    if ns % 1000 == 0 {
        Json::from(ns / 1000)
    } else {
        Json::from(ns as f64 / 1e3)
    }
}

/// Whether the span `start..end` can go on a track that holds `spans` (kept in start
/// order): after every span there, or inside the last one that is still open.
fn fits(spans: &[(i64, i64)], start: i64, end: i64) -> bool {
    spans
        .iter()
        .all(|&(s, e)| e <= start || (s <= start && end <= e))
}

fn span_name(c: &Conn) -> String {
    let remote = match (&c.remote, &c.host) {
        (Some(r), Some(h)) => format!("{r} ({h})"),
        (Some(r), None) => r.clone(),
        (None, _) => "?".into(),
    };
    match c.role.as_str() {
        "client" => format!("{} → {remote}", c.transport),
        "server" => format!("{} ← {remote}", c.transport),
        "listener" => format!("listen {}", c.local.as_deref().unwrap_or("?")),
        other => format!("{other} {}", c.transport),
    }
}

fn span_args(c: &Conn) -> Json {
    let s = |v: &Option<String>| v.clone().map(Json::String).unwrap_or(Json::Null);
    let list = |v: &Vec<String>| Json::Array(v.iter().cloned().map(Json::String).collect());
    let mut m = vec![
        match c.sock {
            Some(sock) => ("sock".into(), Json::from(sock)),
            None => ("fd".into(), Json::from(c.fd)),
        },
        ("role".into(), Json::String(c.role.clone())),
        ("transport".into(), Json::String(c.transport.clone())),
        ("local".into(), s(&c.local)),
        ("remote".into(), s(&c.remote)),
        ("host".into(), s(&c.host)),
        ("result".into(), Json::String(c.result.clone())),
        ("program_options".into(), list(&c.own)),
        ("sockwrap".into(), list(&c.sockwrap)),
        ("closed_by".into(), s(&c.closed_by)),
    ];
    if let Some(Json::Object(st)) = &c.stats {
        m.extend(st.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    crate::json::obj(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(t: i64, tid: i64, rest: &str) -> String {
        format!(
            r#"{{"v":1,"t_mono_ns":{t},"t_wall_ns":0,"pid":7,"tid":{tid},"prog":"cli",{rest}}}"#
        )
    }

    #[test]
    fn overlapping_connections_get_their_own_track() {
        let t = [
            line(1000, 7, r#""ev":"call","call":"connect","fd":3,"args":{"addr":"127.0.0.1:80"},"ret":0,"dur_ns":500,"transport":"tcp","mptcp":false"#),
            line(2000, 7, r#""ev":"call","call":"connect","fd":4,"args":{"addr":"127.0.0.1:81"},"ret":0,"dur_ns":0,"transport":"tcp","mptcp":false"#),
            line(3000, 7, r#""ev":"call","call":"close","fd":3,"ret":0,"stats":{"bytes_acked":5,"srtt_us":20}"#),
            line(4000, 8, r#""ev":"resolve","call":"getaddrinfo","fd":-1,"name":"x","addrs":[],"result":"ok""#),
            line(5000, 7, r#""ev":"closed","call":"exit","fd":4"#),
        ]
        .join("\n");
        let doc = crate::json::parse(&perfetto(&t)).expect("valid JSON");
        let Some(Json::Array(evs)) = doc.get("traceEvents") else {
            panic!("no traceEvents");
        };
        let spans: Vec<&Json> = evs.iter().filter(|e| e.str("ph") == Some("X")).collect();
        assert_eq!(spans.len(), 2);
        // 3 overlaps 4 without nesting: its own track, named.
        assert_ne!(spans[0].int("tid"), spans[1].int("tid"));
        let num = |e: &Json, k: &str| e.get(k).and_then(Json::as_f64).unwrap_or(f64::NAN);
        assert_eq!((num(spans[0], "ts"), num(spans[0], "dur")), (0.0, 2.5));
        assert_eq!(
            spans[0].get("args").and_then(|a| a.int("bytes_acked")),
            Some(5)
        );
        let names = evs.iter().filter(|e| e.str("ph") == Some("M")).count();
        assert_eq!(names, 1 + 3); // the process; threads 7, 8 and 7's second track
        assert!(evs
            .iter()
            .any(|e| e.str("ph") == Some("i") && e.int("tid") == Some(8)));
    }
}
