//! `sockwrap trace` and `sockwrap report`: run a program with `SOCKWRAP_TRACE` set and
//! summarise the JSON-lines record (docs/trace-schema.md) as one row per connection or
//! listener.
//!
//! This module reads the record into a [`Summary`] (and its JSON); [`table`] prints it.

use crate::json::{Json, JsonExt as _};
use std::collections::HashMap;
use std::fmt::Write as _;

mod table;
pub use table::print_summary;

// ---------------------------------------------------------------- the summary

#[derive(Clone, Debug, Default)]
pub struct Conn {
    pub pid: i64,
    pub prog: String,
    pub fd: i64,
    pub role: String,
    pub transport: String,
    pub mptcp: bool,
    pub local: Option<String>,
    pub remote: Option<String>,
    /// The host name the remote address came from (the program resolved it).
    pub host: Option<String>,
    pub own: Vec<String>,
    pub sockwrap: Vec<String>,
    pub latency_ns: Option<i64>,
    pub result: String,
    pub closed: bool,
    /// The call that ended the descriptor: `close`, `close_range`, `closefrom`, `dup2`,
    /// `dup3`, or `exit` (still open when the process exited).
    pub closed_by: Option<String>,
    /// What became of a TCP connection: the close event's `stats`, as the trace has it.
    pub stats: Option<Json>,
    /// The thread that connected, accepted or listened.
    pub tid: i64,
    /// `t_mono_ns` when the connection began (the start of its connect, its accept, its
    /// listen) and when its descriptor closed.
    pub start_ns: Option<i64>,
    pub end_ns: Option<i64>,
    pending_since: Option<i64>,
    /// `trace --kernel`: the socket's cookie, which names it where the library has `fd`
    /// (then -1).
    pub sock: Option<i64>,
}

impl Conn {
    /// A number from the connection's `stats`.
    pub fn stat(&self, k: &str) -> Option<i64> {
        self.stats.as_ref().and_then(|s| s.int(k))
    }
}

impl Conn {
    fn to_json(&self) -> Json {
        let s = |v: &Option<String>| v.clone().map(Json::String).unwrap_or(Json::Null);
        let list = |v: &Vec<String>| Json::Array(v.iter().cloned().map(Json::String).collect());
        let (fd, sock) = match self.sock {
            Some(c) => (Json::Null, vec![("sock".to_string(), Json::from(c))]),
            None => (Json::from(self.fd), Vec::new()),
        };
        let mut fields = vec![
            ("pid".into(), Json::from(self.pid)),
            ("prog".into(), Json::String(self.prog.clone())),
            ("fd".into(), fd),
            ("role".into(), Json::String(self.role.clone())),
            ("transport".into(), Json::String(self.transport.clone())),
            ("mptcp".into(), Json::Bool(self.mptcp)),
            ("local".into(), s(&self.local)),
            ("remote".into(), s(&self.remote)),
            ("host".into(), s(&self.host)),
            ("program_options".into(), list(&self.own)),
            ("sockwrap".into(), list(&self.sockwrap)),
            ("connect_latency_ns".into(), self.latency_ns.into()),
            ("result".into(), Json::String(self.result.clone())),
            ("closed".into(), Json::Bool(self.closed)),
            ("closed_by".into(), s(&self.closed_by)),
            ("stats".into(), self.stats.clone().unwrap_or(Json::Null)),
        ];
        fields.extend(sock);
        crate::json::obj(fields)
    }
}

/// One process's connections added up (TCP connections with `stats` only).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Totals {
    pub pid: i64,
    pub prog: String,
    pub connections: i64,
    pub bytes_acked: i64,
    pub bytes_received: i64,
    pub total_retrans: i64,
}

impl Totals {
    fn to_json(&self) -> Json {
        crate::json::obj(vec![
            ("pid".into(), Json::from(self.pid)),
            ("prog".into(), Json::String(self.prog.clone())),
            ("connections".into(), Json::from(self.connections)),
            ("bytes_acked".into(), Json::from(self.bytes_acked)),
            ("bytes_received".into(), Json::from(self.bytes_received)),
            ("total_retrans".into(), Json::from(self.total_retrans)),
        ])
    }
}

/// Per process, in the order processes first appear: the connections with outcomes.
pub fn totals(sum: &Summary) -> Vec<Totals> {
    let mut out: Vec<Totals> = Vec::new();
    for c in sum.conns.iter().filter(|c| c.stats.is_some()) {
        let i = match out.iter().position(|t| t.pid == c.pid) {
            Some(i) => i,
            None => {
                out.push(Totals {
                    pid: c.pid,
                    prog: c.prog.clone(),
                    ..Totals::default()
                });
                out.len() - 1
            }
        };
        let t = &mut out[i];
        t.connections += 1;
        t.bytes_acked += c.stat("bytes_acked").unwrap_or(0);
        t.bytes_received += c.stat("bytes_received").unwrap_or(0);
        t.total_retrans += c.stat("total_retrans").unwrap_or(0);
    }
    out
}

/// What a trace file holds, summarised.
#[derive(Debug, Default)]
pub struct Summary {
    pub conns: Vec<Conn>,
    pub lines: usize,
    pub bad_lines: usize,
    pub pids: Vec<i64>,
    /// `trace --kernel`'s count of events the ring buffer had no room for (its `lost`
    /// line); None for a record without one (the library's).
    pub lost_events: Option<i64>,
}

pub fn summarise(text: &str) -> Summary {
    let mut evs: Vec<Json> = Vec::new();
    let mut sum = Summary::default();
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        sum.lines += 1;
        match crate::json::parse(line) {
            Ok(v) => evs.push(v),
            Err(_) => sum.bad_lines += 1,
        }
    }
    // Threads and processes append in the order their writes land; order by the clock.
    evs.sort_by_key(|e| e.int("t_mono_ns").unwrap_or(0));
    let mut open: HashMap<(i64, i64), usize> = HashMap::new();
    let mut early: HashMap<(i64, i64), Vec<String>> = HashMap::new();
    let mut by_sock: HashMap<i64, usize> = HashMap::new();
    let conns = &mut sum.conns;
    for e in &evs {
        if e.str("ev") == Some("lost") {
            *sum.lost_events.get_or_insert(0) += e.int("events").unwrap_or(0);
            continue;
        }
        let pid = e.int("pid").unwrap_or(0);
        if e.get("pid").is_some() && !sum.pids.contains(&pid) {
            sum.pids.push(pid);
        }
        if let Some(sock) = e.int("sock") {
            kernel_line(e, sock, conns, &mut by_sock);
            continue;
        }
        let fd = e.int("fd").unwrap_or(-1);
        let ret = e.int("ret").unwrap_or(-1);
        let errno = e.str("errno").unwrap_or("").to_string();
        let t = e.int("t_mono_ns").unwrap_or(0);
        let prog = e.str("prog").unwrap_or("?").to_string();
        let args = e.get("args").cloned().unwrap_or(Json::Null);
        let new_conn = |conns: &mut Vec<Conn>,
                        open: &mut HashMap<(i64, i64), usize>,
                        early: &mut HashMap<(i64, i64), Vec<String>>,
                        fd: i64|
         -> usize {
            let c = Conn {
                pid,
                tid: e.int("tid").unwrap_or(pid),
                prog: prog.clone(),
                fd,
                role: "socket".into(),
                transport: e.str("transport").unwrap_or("?").to_string(),
                mptcp: e.get("mptcp") == Some(&Json::Bool(true)),
                sockwrap: early.remove(&(pid, fd)).unwrap_or_default(),
                result: "-".into(),
                ..Conn::default()
            };
            conns.push(c);
            open.insert((pid, fd), conns.len() - 1);
            conns.len() - 1
        };
        let ev = e.str("ev").unwrap_or("");
        let call = e.str("call").unwrap_or("");
        match (ev, call) {
            ("call", "socket") if ret >= 0 => {
                open.remove(&(pid, ret));
                if e.get("transport").is_some() {
                    new_conn(conns, &mut open, &mut early, ret);
                } else {
                    early.remove(&(pid, ret));
                }
            }
            ("call", "connect") | ("call", "listen") => {
                if e.get("transport").is_none() {
                    continue;
                }
                let i = match open.get(&(pid, fd)) {
                    Some(&i) => i,
                    None => new_conn(conns, &mut open, &mut early, fd),
                };
                let c = &mut conns[i];
                c.transport = e.str("transport").unwrap_or("?").to_string();
                c.mptcp = e.get("mptcp") == Some(&Json::Bool(true));
                c.tid = e.int("tid").unwrap_or(pid);
                if c.start_ns.is_none() {
                    c.start_ns = Some(t - e.int("dur_ns").unwrap_or(0));
                }
                if let Some(l) = e.str("local") {
                    c.local = Some(l.to_string());
                }
                if call == "connect" {
                    c.role = "client".into();
                    c.remote = args.str("addr").map(str::to_string);
                    c.host = e.str("host").map(str::to_string);
                    if let Some(a) = e.get("action") {
                        if let Some(x) = a.str("deny") {
                            c.sockwrap.push(format!("denied ({x})"));
                        }
                        if let Some(x) = a.str("fail") {
                            c.sockwrap.push(format!("failed ({x})"));
                        }
                        if let Some(x) = a.int("delay_ms") {
                            c.sockwrap.push(format!("delayed {x}ms"));
                        }
                        if let Some(x) = a.str("redirect") {
                            c.sockwrap.push(format!("redirected to {x}"));
                        }
                    }
                    if ret == 0 {
                        c.result = "ok".into();
                        c.latency_ns = e.int("dur_ns");
                    } else if errno == "EINPROGRESS" {
                        c.result = "in progress".into();
                        c.pending_since = Some(t - e.int("dur_ns").unwrap_or(0));
                    } else {
                        c.result = errno;
                        c.latency_ns = e.int("dur_ns");
                    }
                } else {
                    c.role = "listener".into();
                    c.result = if ret == 0 { "listening".into() } else { errno };
                }
            }
            ("call", "bind") => {
                if let (Some(&i), Some(l)) = (open.get(&(pid, fd)), e.str("local")) {
                    conns[i].local = Some(l.to_string());
                }
            }
            ("call", "accept") | ("call", "accept4") => {
                if ret < 0 || e.get("transport").is_none() {
                    continue;
                }
                open.remove(&(pid, ret));
                let i = new_conn(conns, &mut open, &mut early, ret);
                let c = &mut conns[i];
                c.role = "server".into();
                c.start_ns = Some(t);
                c.local = e.str("local").map(str::to_string);
                c.remote = e.str("peer").map(str::to_string);
                c.result = "ok".into();
            }
            ("call", "setsockopt") => {
                if let Some(&i) = open.get(&(pid, fd)) {
                    let name = args.get("name").map(Json::text).unwrap_or_default();
                    let val = args.get("value").map(Json::text).unwrap_or_default();
                    let mut s = format!("{name}={val}");
                    if ret < 0 {
                        let _ = write!(s, " ({errno})");
                    }
                    conns[i].own.push(s);
                }
            }
            ("call", "getsockopt") => {
                if args.str("name") != Some("SO_ERROR") || ret != 0 {
                    continue;
                }
                if let Some(&i) = open.get(&(pid, fd)) {
                    let c = &mut conns[i];
                    if let Some(since) = c.pending_since.take() {
                        let v = args.str("value").unwrap_or("0");
                        c.result = if v == "0" { "ok".into() } else { v.to_string() };
                        c.latency_ns = Some(t - since);
                    }
                }
            }
            // The program's close, or sockwrap's `closed` for the other ways a descriptor
            // ends (close_range, closefrom, dup2, dup3, exit).
            ("call", "close") | ("closed", _) => {
                if let Some(i) = open.remove(&(pid, fd)) {
                    let c = &mut conns[i];
                    c.closed = true;
                    c.closed_by = Some(call.to_string());
                    c.end_ns = Some(t);
                    c.stats = e.get("stats").cloned();
                }
            }
            ("apply", _) | ("override", _) => {
                let opt = e.str("option").unwrap_or("?");
                let s = if ev == "apply" {
                    let v = e.get("value").map(Json::text).unwrap_or_default();
                    match e.str("result") {
                        Some("ok") => format!("{opt}={v}"),
                        _ => format!("{opt}={v} FAILED ({})", e.str("errno").unwrap_or("?")),
                    }
                } else {
                    let k = e.str("kernel").unwrap_or("?");
                    let v = e
                        .get("program")
                        .and_then(|p| p.get("value"))
                        .map(Json::text)
                        .unwrap_or_default();
                    format!("overrode {k}={v}")
                };
                match open.get(&(pid, fd)) {
                    // At socket() and accept() sockwrap acts before the call's own line.
                    Some(&i) if !(ev == "apply" && matches!(call, "socket" | "accept")) => {
                        conns[i].sockwrap.push(s)
                    }
                    _ => early.entry((pid, fd)).or_default().push(s),
                }
            }
            _ => {}
        }
    }
    sum
}

/// One line of `trace --kernel` (docs/trace-schema.md, `"src":"kernel"`): its socket is
/// named by `sock` (the cookie), its fields are only those the kernel knew.
fn kernel_line(e: &Json, sock: i64, conns: &mut Vec<Conn>, by_sock: &mut HashMap<i64, usize>) {
    let t = e.int("t_mono_ns").unwrap_or(0);
    let ev = e.str("ev").unwrap_or("");
    let call = e.str("call").unwrap_or("");
    let owner = |c: &mut Conn| {
        if let Some(p) = e.int("pid") {
            c.pid = p;
            c.tid = e.int("tid").unwrap_or(p);
            c.prog = e.str("prog").unwrap_or("?").to_string();
        }
    };
    let fresh = |conns: &mut Vec<Conn>, by_sock: &mut HashMap<i64, usize>| {
        conns.push(Conn {
            fd: -1,
            sock: Some(sock),
            prog: "?".into(),
            role: "socket".into(),
            transport: e.str("transport").unwrap_or("?").to_string(),
            mptcp: e.get("mptcp") == Some(&Json::Bool(true)),
            result: "-".into(),
            ..Conn::default()
        });
        by_sock.insert(sock, conns.len() - 1);
        conns.len() - 1
    };
    let i = match (ev, call) {
        ("call", "socket") | ("call", "accept") => fresh(conns, by_sock),
        _ => match by_sock.get(&sock) {
            Some(&i) => i,
            None => fresh(conns, by_sock),
        },
    };
    let c = &mut conns[i];
    match (ev, call) {
        ("call", "socket") => owner(c),
        ("call", "connect") => {
            owner(c);
            c.role = "client".into();
            c.remote = e
                .get("args")
                .and_then(|a| a.str("addr"))
                .map(str::to_string);
            c.start_ns.get_or_insert(t);
        }
        ("connected", _) => {
            c.result = e.str("result").unwrap_or("-").to_string();
            c.latency_ns = c.start_ns.map(|s| t - s);
            c.local = e.str("local").map(str::to_string);
        }
        ("call", "listen") => {
            owner(c);
            c.role = "listener".into();
            c.start_ns.get_or_insert(t);
            c.local = e.str("local").map(str::to_string);
            c.result = "listening".into();
        }
        ("call", "accept") => {
            owner(c);
            c.role = "server".into();
            c.start_ns = Some(t);
            c.local = e.str("local").map(str::to_string);
            c.remote = e.str("peer").map(str::to_string);
            c.result = "ok".into();
        }
        ("call", "setsockopt") | ("override", _) => {
            let a = e.get(if ev == "override" { "program" } else { "args" });
            let name = a.and_then(|a| a.get("name")).map(Json::text);
            let val = a.and_then(|a| a.get("value")).map(Json::text);
            let s = format!("{}={}", name.unwrap_or_default(), val.unwrap_or_default());
            if ev == "override" {
                c.sockwrap.push(format!("overrode {s}"));
            } else {
                c.own.push(s);
            }
        }
        ("closed", _) => {
            c.closed = true;
            c.closed_by = Some(call.to_string());
            c.end_ns = Some(t);
            c.stats = e.get("stats").cloned();
            if c.local.is_none() {
                c.local = e.str("local").map(str::to_string);
            }
            if c.remote.is_none() {
                c.remote = e.str("peer").map(str::to_string);
            }
            by_sock.remove(&sock);
        }
        _ => {}
    }
}

pub fn to_json(sum: &Summary) -> String {
    let lost = sum
        .lost_events
        .map(|n| ("lost_events".to_string(), Json::from(n)));
    let mut fields = vec![
        ("v".into(), Json::from(1)),
        ("lines".into(), Json::from(sum.lines as i64)),
        ("bad_lines".into(), Json::from(sum.bad_lines as i64)),
        ("processes".into(), Json::from(sum.pids.len() as i64)),
        (
            "connections".into(),
            Json::Array(sum.conns.iter().map(Conn::to_json).collect()),
        ),
        (
            "totals".into(),
            Json::Array(totals(sum).iter().map(Totals::to_json).collect()),
        ),
    ];
    fields.extend(lost);
    crate::json::obj(fields).to_json()
}

#[cfg(test)]
mod tests {
    use super::table::table;
    use super::*;

    #[test]
    fn kernel_lines_are_keyed_by_their_socket() {
        let t = concat!(
            r#"{"v":1,"t_mono_ns":1,"pid":7,"tid":7,"prog":"c","ev":"call","call":"socket","src":"kernel","sock":40,"args":{},"transport":"tcp","mptcp":false}"#,
            "\n",
            r#"{"v":1,"t_mono_ns":2,"pid":7,"tid":8,"prog":"c","ev":"call","call":"connect","src":"kernel","sock":40,"args":{"addr":"127.0.0.1:80"},"transport":"tcp","mptcp":false}"#,
            "\n",
            r#"{"v":1,"t_mono_ns":5,"pid":7,"tid":8,"prog":"c","ev":"connected","call":"connect","src":"kernel","sock":40,"result":"ok","local":"127.0.0.1:5000","peer":"127.0.0.1:80"}"#,
            "\n",
            r#"{"v":1,"t_mono_ns":9,"pid":9,"tid":9,"prog":"s","ev":"call","call":"accept","src":"kernel","sock":41,"local":"127.0.0.1:80","peer":"127.0.0.1:5000","transport":"tcp","mptcp":false}"#,
            "\n",
            r#"{"v":1,"t_mono_ns":20,"pid":7,"tid":8,"prog":"c","ev":"closed","call":"tcp_close","src":"kernel","sock":40,"stats":{"bytes_acked":10,"bytes_received":3}}"#,
            "\n",
            r#"{"v":1,"t_mono_ns":30,"ev":"lost","call":"ring_buffer","src":"kernel","events":2,"open":1}"#,
            "\n",
        );
        let s = summarise(t);
        assert_eq!(s.conns.len(), 2);
        assert_eq!(s.pids, vec![7, 9]); // the lost line is no process
        assert_eq!(s.lost_events, Some(2));
        let c = &s.conns[0];
        assert_eq!((c.sock, c.fd, c.tid), (Some(40), -1, 8));
        assert_eq!((c.role.as_str(), c.result.as_str()), ("client", "ok"));
        assert_eq!(c.latency_ns, Some(3));
        assert_eq!(c.local.as_deref(), Some("127.0.0.1:5000"));
        assert_eq!(c.stat("bytes_acked"), Some(10));
        assert_eq!(c.closed_by.as_deref(), Some("tcp_close"));
        let a = &s.conns[1];
        assert_eq!((a.role.as_str(), a.pid, a.closed), ("server", 9, false));
        let j = crate::json::parse(&to_json(&s)).unwrap();
        assert_eq!(j.int("lost_events"), Some(2));
        assert!(table(&s, false).contains("2 event(s) lost"));
    }

    #[test]
    fn a_connection_with_override() {
        let t = concat!(
            r#"{"v":1,"t_mono_ns":1,"pid":7,"prog":"ssh","ev":"call","call":"socket","fd":3,"args":{},"ret":3,"transport":"tcp","mptcp":false}"#,
            "\n",
            r#"{"v":1,"t_mono_ns":2,"pid":7,"prog":"ssh","ev":"apply","call":"connect","fd":3,"option":"dscp","value":"0xb8 (DSCP EF)","result":"ok"}"#,
            "\n",
            r#"{"v":1,"t_mono_ns":3,"pid":7,"prog":"ssh","ev":"call","call":"connect","fd":3,"args":{"addr":"127.0.0.1:22"},"ret":-1,"errno":"EINPROGRESS","dur_ns":10,"transport":"tcp","mptcp":false,"local":"127.0.0.1:5000"}"#,
            "\n",
            r#"{"v":1,"t_mono_ns":50,"pid":7,"prog":"ssh","ev":"call","call":"getsockopt","fd":3,"args":{"level":"SOL_SOCKET","name":"SO_ERROR","value":"0"},"ret":0}"#,
            "\n",
            r#"{"v":1,"t_mono_ns":60,"pid":7,"prog":"ssh","ev":"override","call":"setsockopt","fd":3,"option":"dscp","kernel":"IP_TOS","program":{"value":"0x20 (DSCP CS1)"}}"#,
            "\n",
            r#"{"v":1,"t_mono_ns":61,"pid":7,"prog":"ssh","ev":"call","call":"setsockopt","fd":3,"args":{"name":"IP_TOS","value":"0x20 (DSCP CS1)"},"ret":0}"#,
            "\n",
            "broken\n"
        );
        let s = summarise(t);
        assert_eq!(s.bad_lines, 1);
        assert_eq!(s.conns.len(), 1);
        let c = &s.conns[0];
        assert_eq!(c.result, "ok");
        assert_eq!(c.latency_ns, Some(57)); // from the start of connect to the SO_ERROR check
        assert_eq!(c.remote.as_deref(), Some("127.0.0.1:22"));
        assert_eq!(c.own, vec!["IP_TOS=0x20 (DSCP CS1)".to_string()]);
        assert_eq!(c.sockwrap.len(), 2);
        let tab = table(&s, false);
        assert!(tab.contains("127.0.0.1:22"), "{tab}");
        let j = crate::json::parse(&to_json(&s)).unwrap();
        assert!(matches!(j.get("connections"), Some(Json::Array(a)) if a.len() == 1));
    }
}
