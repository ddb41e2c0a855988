//! The summary as people read it: an aligned table (coloured on a terminal), byte counts
//! and times in their units; and [`print_summary`], which chooses the table or the JSON.

use super::{summarise, to_json, totals, Summary};
use crate::json::{Json, JsonExt as _};
use std::fmt::Write as _;
use std::io::IsTerminal;

/// A byte count as people read it: `812B`, `97.7kB`, `1.2MB` (powers of 1000).
pub fn bytes(n: i64) -> String {
    let f = n as f64;
    if n < 1000 {
        format!("{n}B")
    } else if n < 1_000_000 {
        format!("{:.1}kB", f / 1e3)
    } else if n < 1_000_000_000 {
        format!("{:.1}MB", f / 1e6)
    } else {
        format!("{:.1}GB", f / 1e9)
    }
}

/// An RTT in microseconds: `16µs`, `1.25ms`.
fn rtt(us: i64) -> String {
    if us < 1000 {
        format!("{us}µs")
    } else {
        format!("{:.2}ms", us as f64 / 1e3)
    }
}

fn latency(ns: Option<i64>) -> String {
    match ns {
        None => "-".into(),
        Some(n) if n < 1_000_000 => format!("{:.0}µs", n as f64 / 1e3),
        Some(n) if n < 10_000_000_000 => format!("{:.1}ms", n as f64 / 1e6),
        Some(n) => format!("{:.1}s", n as f64 / 1e9),
    }
}

/// The aligned table. `colour`: ANSI colours (only when writing to a terminal).
pub fn table(sum: &Summary, colour: bool) -> String {
    const HEAD: [&str; 15] = [
        "PID",
        "PROG",
        "ROLE",
        "PROTO",
        "LOCAL",
        "REMOTE",
        "LATENCY",
        "RESULT",
        "DURATION",
        "SENT",
        "RECEIVED",
        "RTT",
        "RETRANS",
        "PROGRAM SET",
        "SOCKWRAP",
    ];
    const RESULT: usize = 7;
    const LAST: usize = HEAD.len() - 1;
    let dash = || "-".to_string();
    let mut rows: Vec<[String; HEAD.len()]> = Vec::new();
    for c in &sum.conns {
        let stat = |k: &str, f: fn(i64) -> String| c.stat(k).map(f).unwrap_or_else(dash);
        rows.push([
            c.pid.to_string(),
            c.prog.clone(),
            c.role.clone(),
            c.transport.clone(),
            c.local.clone().unwrap_or_else(dash),
            match (&c.remote, &c.host) {
                (Some(r), Some(h)) => format!("{r} ({h})"),
                (Some(r), None) => r.clone(),
                (None, _) => dash(),
            },
            latency(c.latency_ns),
            c.result.clone(),
            stat("duration_ns", |n| latency(Some(n))),
            stat("bytes_acked", bytes),
            stat("bytes_received", bytes),
            stat("srtt_us", rtt),
            stat("total_retrans", |n| n.to_string()),
            if c.own.is_empty() {
                dash()
            } else {
                c.own.join(", ")
            },
            if c.sockwrap.is_empty() {
                dash()
            } else {
                c.sockwrap.join(", ")
            },
        ]);
    }
    let mut w = HEAD.map(|h| h.chars().count());
    for r in &rows {
        for (wi, cell) in w.iter_mut().zip(r.iter()) {
            *wi = (*wi).max(cell.chars().count());
        }
    }
    let paint = |s: &str, code: &str| {
        if colour {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    };
    let pad = |s: &str, i: usize| {
        let n = s.chars().count();
        if i == LAST {
            s.to_string()
        } else {
            format!("{s}{}", " ".repeat(w[i] - n + 2))
        }
    };
    let mut out = String::new();
    if !rows.is_empty() {
        let mut line = String::new();
        for (i, h) in HEAD.iter().enumerate() {
            line.push_str(&pad(h, i));
        }
        out.push_str(&paint(line.trim_end(), "1"));
        out.push('\n');
    }
    for r in &rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            let padded = pad(cell, i);
            let code = match i {
                RESULT if matches!(cell.as_str(), "ok" | "listening") => "32",
                RESULT if cell.starts_with('E') => "31",
                LAST if cell.contains("FAILED") => "31",
                LAST if cell != "-" => "36",
                _ => "",
            };
            if code.is_empty() {
                line.push_str(&padded);
            } else {
                let trimmed = padded.trim_end();
                line.push_str(&paint(trimmed, code));
                line.push_str(&" ".repeat(padded.len() - trimmed.len()));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    for t in totals(sum) {
        let _ = writeln!(
            out,
            "{} {}: {} TCP connection(s), sent {}, received {}, {} retransmit(s)",
            t.pid,
            t.prog,
            t.connections,
            bytes(t.bytes_acked),
            bytes(t.bytes_received),
            t.total_retrans
        );
    }
    if let Some(n) = sum.lost_events.filter(|&n| n > 0) {
        let _ = writeln!(
            out,
            "{n} event(s) lost: the kernel's ring buffer was full (trace --kernel --ring-kb makes it larger)"
        );
    }
    let _ = writeln!(
        out,
        "{} connection(s)/listener(s), {} process(es), {} trace line(s){}",
        sum.conns.len(),
        sum.pids.len(),
        sum.lines,
        if sum.bad_lines > 0 {
            format!(", {} unreadable", sum.bad_lines)
        } else {
            String::new()
        }
    );
    out
}

/// Prints the summary of `text` to stdout or stderr. `why_empty`: what to say first when
/// the record has no line at all (the program was out of the library's reach, or made no
/// socket call through libc).
pub fn print_summary(text: &str, json: bool, to_stderr: bool, why_empty: Option<&str>) {
    let sum = summarise(text);
    let why = why_empty.filter(|_| sum.lines == 0);
    let out = if json {
        let mut j = to_json(&sum);
        if let Some(w) = why {
            // `{...}` → `{...,"why_empty":"..."}`
            j.pop();
            j.push_str(",\"why_empty\":");
            j.push_str(&Json::from(w).to_json());
            j.push('}');
        }
        j + "\n"
    } else {
        let tty = if to_stderr {
            std::io::stderr().is_terminal()
        } else {
            std::io::stdout().is_terminal()
        };
        let head = why
            .map(|w| format!("no trace lines: {w}\n"))
            .unwrap_or_default();
        head + &table(&sum, tty && std::env::var_os("NO_COLOR").is_none())
    };
    if to_stderr {
        eprint!("{out}");
    } else {
        print!("{out}");
    }
}
