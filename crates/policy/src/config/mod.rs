//! The policy file (TOML) and its validation.
//!
//! ```toml
//! on_error = "warn"            # or "fail": a refused option fails the program's call
//!
//! [[rule]]
//! name = "ssh"                 # optional, shown in logs and `explain`
//! match = { remote = ["10.0.0.0/8"], port = [22], role = "client", transport = "tcp", program = ["ssh"] }
//! dscp = "EF"
//! keepalive = { idle = 30, interval = 10, count = 3 }
//! soft = ["dscp"]              # or true: the program may change these
//! ```
//!
//! Every error carries the file name, line and column, and says what was expected. All
//! errors of a file are collected, so `sockwrap check` can print them in one go.

use crate::catalog::{parse_keepalive, parse_value, Opt, Raw, Value};
#[allow(unused_imports)]
use crate::prelude::*;
use crate::rules::{
    parse_delay, parse_errno, parse_redirect, rate_ppm, Cidr, Fail, HostPat, Match, OnError, Ports,
    Redirect, Role, Rule, Transport,
};
use core::fmt;
use core::ops::Range;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// One problem in a policy source, with where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// File path, environment variable or flag.
    pub source: String,
    /// 1-based line and column, for files.
    pub pos: Option<(usize, usize)>,
    pub msg: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pos {
            Some((l, c)) => write!(f, "{}:{}:{}: error: {}", self.source, l, c, self.msg),
            None => write!(f, "{}: error: {}", self.source, self.msg),
        }
    }
}

/// A parsed policy file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    pub on_error: Option<OnError>,
    pub rules: Vec<Rule>,
    /// The 1-based line of each rule's `[[rule]]` table, in the order of `rules`.
    pub rule_lines: Vec<usize>,
}

struct Ctx<'a> {
    source: &'a str,
    text: &'a str,
    /// Byte offset of each line start: positions by binary search, not by rescanning the
    /// text (which made 10,000-rule files quadratic to load).
    line_starts: Vec<usize>,
    errors: Vec<ConfigError>,
}

impl Ctx<'_> {
    fn pos(&self, offset: usize) -> (usize, usize) {
        let line = self.line_starts.partition_point(|&s| s <= offset).max(1);
        let start = self.line_starts[line - 1];
        let col = self
            .text
            .get(start..offset.min(self.text.len()))
            .map(|t| t.chars().count())
            .unwrap_or(0)
            + 1;
        (line, col)
    }

    fn err(&mut self, span: Range<usize>, msg: impl Into<String>) {
        let pos = self.pos(span.start);
        self.errors.push(ConfigError {
            source: self.source.to_string(),
            pos: Some(pos),
            msg: msg.into(),
        });
    }
}

fn kind_name(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a datetime",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

fn as_int(v: &DeValue<'_>) -> Option<i64> {
    match v {
        DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix()).ok(),
        _ => None,
    }
}

/// A scalar TOML value as a [`Raw`] for the catalog's parsers.
fn raw<'a>(v: &'a DeValue<'_>) -> Option<Raw<'a>> {
    match v {
        DeValue::String(s) => Some(Raw::Str(s.as_ref())),
        DeValue::Integer(_) => as_int(v).map(Raw::Int),
        DeValue::Boolean(b) => Some(Raw::Bool(*b)),
        _ => None,
    }
}

/// Yields each element of a value that may be one item or an array of items.
fn one_or_many<'a, 'i>(v: &'a Spanned<DeValue<'i>>) -> Vec<&'a Spanned<DeValue<'i>>> {
    match v.get_ref() {
        DeValue::Array(a) => a.iter().collect(),
        _ => vec![v],
    }
}

/// Parses a policy file's text. `source` names it in errors (usually the path).
pub fn parse_config(text: &str, source: &str) -> Result<Config, Vec<ConfigError>> {
    let line_starts = core::iter::once(0)
        .chain(text.match_indices('\n').map(|(i, _)| i + 1))
        .collect();
    let mut cx = Ctx {
        source,
        text,
        line_starts,
        errors: Vec::new(),
    };
    let doc = match DeTable::parse(text) {
        Ok(d) => d,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            let msg = e
                .message()
                .lines()
                .next()
                .unwrap_or("invalid TOML")
                .to_string();
            // `[rule]` twice is the likeliest way to get here: say what to write instead.
            let key = text
                .get(span.clone())
                .unwrap_or("")
                .trim_matches(['"', '\'', ' ']);
            if msg.starts_with("duplicate key") && matches!(key, "rule" | "rules") {
                cx.err(
                    span,
                    format!("`[{key}]` appears twice: write each rule as a [[{key}]] table (two brackets); [{key}] is a single table and cannot repeat"),
                );
            } else {
                cx.err(span, format!("invalid TOML: {msg}"));
            }
            return Err(cx.errors);
        }
    };
    let mut cfg = Config::default();
    for (key, val) in doc.get_ref().iter() {
        match key.get_ref().as_ref() {
            "on_error" | "on-error" => match val.get_ref() {
                DeValue::String(s) if s == "warn" => cfg.on_error = Some(OnError::Warn),
                DeValue::String(s) if s == "fail" => cfg.on_error = Some(OnError::Fail),
                other => cx.err(val.span(), format!("on_error: expected \"warn\" or \"fail\", got {}", show(other))),
            },
            "rule" | "rules" => match val.get_ref() {
                DeValue::Array(items) => {
                    for item in items.iter() {
                        match item.get_ref() {
                            DeValue::Table(t) => {
                                let (line, _) = cx.pos(item.span().start);
                                if let Some(r) = parse_rule(&mut cx, t, format!("{source}:{line}")) {
                                    cfg.rules.push(r);
                                    cfg.rule_lines.push(line);
                                }
                            }
                            other => cx.err(item.span(), format!("rule: expected a table, got {}", kind_name(other))),
                        }
                    }
                }
                other => cx.err(
                    val.span(),
                    format!("`{}`: expected [[rule]] tables, got {}", key.get_ref(), kind_name(other)),
                ),
            },
            k => cx.err(
                key.span(),
                format!("unknown top-level key `{k}`: expected `on_error` or [[rule]] (options go inside a [[rule]])"),
            ),
        }
    }
    if cx.errors.is_empty() {
        Ok(cfg)
    } else {
        Err(cx.errors)
    }
}

/// What a file says about `on_error`, even when the rest of it is broken: a file that asks
/// for strict mode is obeyed (the program is refused) rather than run half-configured.
pub fn declared_on_error(text: &str) -> Option<OnError> {
    let doc = DeTable::parse_recoverable(text).0;
    let v = doc
        .get_ref()
        .iter()
        .find(|(k, _)| matches!(k.get_ref().as_ref(), "on_error" | "on-error"))?
        .1;
    match v.get_ref() {
        DeValue::String(s) if s == "fail" => Some(OnError::Fail),
        DeValue::String(s) if s == "warn" => Some(OnError::Warn),
        _ => None,
    }
}

fn show(v: &DeValue<'_>) -> String {
    match v {
        DeValue::String(s) => format!("\"{s}\""),
        other => kind_name(other).to_string(),
    }
}

fn parse_rule(cx: &mut Ctx<'_>, t: &DeTable<'_>, default_name: String) -> Option<Rule> {
    let before = cx.errors.len();
    let mut rule = Rule::new(default_name);
    let mut soft_all = false;
    let mut soft_list: Vec<(Opt, Range<usize>)> = Vec::new();
    for (key, val) in t.iter() {
        let k = key.get_ref().as_ref();
        match k {
            "name" => match val.get_ref() {
                DeValue::String(s) => rule.name = s.to_string(),
                other => cx.err(
                    val.span(),
                    format!("name: expected a string, got {}", kind_name(other)),
                ),
            },
            "deny" => match val.get_ref() {
                DeValue::Boolean(true) => rule.actions.deny = Some(111),
                DeValue::Boolean(false) => {}
                DeValue::String(s) => match parse_errno(s) {
                    Ok(e) => rule.actions.deny = Some(e),
                    Err(e) => cx.err(val.span(), format!("deny: {e}")),
                },
                other => cx.err(
                    val.span(),
                    format!("deny: expected true or an errno name such as \"ECONNREFUSED\", got {}", show(other)),
                ),
            },
            "redirect" => {
                let (to, show_target, span) = match val.get_ref() {
                    DeValue::String(s) => (Some(s.as_ref()), false, val.span()),
                    DeValue::Table(rt) => {
                        let mut to = None;
                        let mut show_target = false;
                        for (rk, rv) in rt.iter() {
                            match (rk.get_ref().as_ref(), rv.get_ref()) {
                                ("to", DeValue::String(s)) => to = Some(s.as_ref()),
                                ("peername", DeValue::String(s)) if s == "program" || s == "target" => {
                                    show_target = s == "target"
                                }
                                ("peername", other) => cx.err(
                                    rv.span(),
                                    format!("redirect.peername: expected \"program\" (what the program asked for) or \"target\", got {}", show(other)),
                                ),
                                (k, _) => cx.err(rk.span(), format!("redirect: unknown key `{k}`: expected to or peername")),
                            }
                        }
                        if to.is_none() {
                            cx.err(val.span(), "redirect: missing `to = \"ADDRESS:PORT\"`");
                        }
                        (to, show_target, val.span())
                    }
                    other => {
                        cx.err(val.span(), format!("redirect: expected \"ADDRESS:PORT\" or a table, got {}", kind_name(other)));
                        (None, false, val.span())
                    }
                };
                if let Some(t) = to {
                    match parse_redirect(t) {
                        Ok(to) => rule.actions.redirect = Some(Redirect { to, show_target }),
                        Err(e) => cx.err(span, format!("redirect: {e}")),
                    }
                }
            }
            "delay" => match val.get_ref() {
                DeValue::String(s) => match parse_delay(s) {
                    Ok(ms) => rule.actions.delay_ms = Some(ms),
                    Err(e) => cx.err(val.span(), format!("delay: {e}")),
                },
                DeValue::Integer(_) => match as_int(val.get_ref()).map(|n| parse_delay(&n.to_string())) {
                    Some(Ok(ms)) => rule.actions.delay_ms = Some(ms),
                    Some(Err(e)) => cx.err(val.span(), format!("delay: {e}")),
                    None => cx.err(val.span(), "delay: not a number"),
                },
                other => cx.err(val.span(), format!("delay: expected a duration such as \"250ms\", got {}", show(other))),
            },
            "fail" => match val.get_ref() {
                DeValue::Table(ft) => {
                    let mut rate = None;
                    let mut rate_given = false;
                    let mut errno = 104; // ECONNRESET
                    for (fk, fv) in ft.iter() {
                        match fk.get_ref().as_ref() {
                            "rate" => {
                                rate_given = true;
                                let text = match fv.get_ref() {
                                    DeValue::Float(f) => Some(f.as_str().to_string()),
                                    DeValue::Integer(_) => as_int(fv.get_ref()).map(|i| i.to_string()),
                                    _ => None,
                                };
                                match text.map(|t| rate_ppm(&t)) {
                                    Some(Ok(ppm)) => rate = Some(ppm),
                                    Some(Err(e)) => cx.err(fv.span(), format!("fail.rate: {e}")),
                                    None => cx.err(fv.span(), format!("fail.rate: expected a number 0..1, got {}", show(fv.get_ref()))),
                                }
                            }
                            "errno" => match fv.get_ref() {
                                DeValue::String(s) => match parse_errno(s) {
                                    Ok(e) => errno = e,
                                    Err(e) => cx.err(fv.span(), format!("fail.errno: {e}")),
                                },
                                other => cx.err(fv.span(), format!("fail.errno: expected an errno name, got {}", show(other))),
                            },
                            k => cx.err(fk.span(), format!("fail: unknown key `{k}`: expected rate or errno")),
                        }
                    }
                    match rate {
                        Some(ppm) => rule.actions.fail = Some(Fail { ppm, errno }),
                        // A rate given but refused has its own error above.
                        None if rate_given => {}
                        None => cx.err(val.span(), "fail: missing `rate = 0..1`"),
                    }
                }
                other => cx.err(val.span(), format!("fail: expected a table such as {{ rate = 0.2, errno = \"ECONNRESET\" }}, got {}", kind_name(other))),
            },
            "match" => match val.get_ref() {
                DeValue::Table(m) => rule.matcher = parse_match(cx, m, false),
                other => cx.err(
                    val.span(),
                    format!("match: expected a table, got {}", kind_name(other)),
                ),
            },
            "soft" => match val.get_ref() {
                DeValue::Boolean(b) => soft_all = *b,
                DeValue::Array(a) => {
                    for item in a.iter() {
                        match item.get_ref() {
                            DeValue::String(s) => match Opt::from_name(s) {
                                Some(o) => soft_list.push((o, item.span())),
                                None => cx.err(item.span(), format!("soft: unknown option `{s}`")),
                            },
                            other => cx.err(
                                item.span(),
                                format!("soft: expected option names, got {}", kind_name(other)),
                            ),
                        }
                    }
                }
                other => cx.err(
                    val.span(),
                    format!(
                        "soft: expected true/false or a list of option names, got {}",
                        kind_name(other)
                    ),
                ),
            },
            "keepalive" => match val.get_ref() {
                DeValue::Table(kt) => {
                    let mut enabled = true;
                    for (kk, kv) in kt.iter() {
                        let sub = kk.get_ref().as_ref();
                        if sub == "enabled" {
                            match kv.get_ref() {
                                DeValue::Boolean(b) => enabled = *b,
                                other => cx.err(
                                    kv.span(),
                                    format!(
                                        "keepalive.enabled: expected a boolean, got {}",
                                        kind_name(other)
                                    ),
                                ),
                            }
                            continue;
                        }
                        let opt = match sub {
                            "idle" => Opt::KeepIdle,
                            "interval" | "intvl" => Opt::KeepIntvl,
                            "count" | "cnt" => Opt::KeepCnt,
                            _ => {
                                cx.err(kk.span(), format!("keepalive: unknown key `{sub}`: expected idle, interval, count or enabled"));
                                continue;
                            }
                        };
                        set_scalar(cx, &mut rule, opt, opt.name(), kv);
                    }
                    rule.set(Opt::KeepAlive, Value::Bool(enabled), false);
                }
                DeValue::String(s) => match parse_keepalive(s) {
                    Ok(vals) => {
                        for (o, v) in vals {
                            rule.set(o, v, false);
                        }
                    }
                    Err(e) => cx.err(val.span(), e),
                },
                _ => set_scalar(cx, &mut rule, Opt::KeepAlive, "keepalive", val),
            },
            _ => match Opt::from_name(k) {
                Some(opt) => set_scalar(cx, &mut rule, opt, k, val),
                None => cx.err(key.span(), unknown_key_msg(k)),
            },
        }
    }
    for (o, span) in soft_list {
        match rule.settings.get_mut(o) {
            Some(s) => s.soft = true,
            None => cx.err(
                span,
                format!("soft: `{}` is not set by this rule", o.name()),
            ),
        }
    }
    if soft_all {
        for (_, s) in rule.settings.iter_mut() {
            s.soft = true;
        }
    }
    if cx.errors.len() > before {
        return None;
    }
    Some(rule)
}

/// The message for an unknown key in a rule, with a suggestion when one is close.
pub fn unknown_key_msg(k: &str) -> String {
    let known: Vec<&str> = Opt::ALL.iter().map(|o| o.name()).collect();
    let close = known.iter().copied().find(|n| edit_distance(n, k) <= 2);
    match close {
        Some(n) => format!("unknown option `{k}` (did you mean `{n}`?)"),
        None => format!(
            "unknown option `{k}`: expected one of name, match, soft, deny, redirect, delay, fail, {}",
            known.join(", ")
        ),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

fn set_scalar(
    cx: &mut Ctx<'_>,
    rule: &mut Rule,
    opt: Opt,
    name_used: &str,
    val: &Spanned<DeValue<'_>>,
) {
    match raw(val.get_ref()) {
        Some(r) => match parse_value(opt, name_used, r) {
            Ok(v) => rule.set(opt, v, false),
            Err(e) => cx.err(val.span(), e),
        },
        None => cx.err(
            val.span(),
            format!(
                "{name_used}: expected a value, got {}",
                kind_name(val.get_ref())
            ),
        ),
    }
}

fn parse_match(cx: &mut Ctx<'_>, t: &DeTable<'_>, nested: bool) -> Match {
    let mut m = Match::default();
    for (key, val) in t.iter() {
        let k = key.get_ref().replace('_', "-");
        match k.as_str() {
            "remote" | "to" | "dest" => {
                for item in one_or_many(val) {
                    match item.get_ref() {
                        DeValue::String(s) => match Cidr::parse(s) {
                            Ok(c) => m.remote.push(c),
                            Err(e) => cx.err(item.span(), format!("match.remote: {e}")),
                        },
                        other => cx.err(item.span(), format!("match.remote: expected a CIDR string, got {}", kind_name(other))),
                    }
                }
            }
            "port" | "remote-port" | "local-port" => {
                let mut out = Vec::new();
                for item in one_or_many(val) {
                    let parsed = match item.get_ref() {
                        DeValue::String(s) => Ports::parse(s),
                        DeValue::Integer(_) => match as_int(item.get_ref()) {
                            Some(n) if (1..=65535).contains(&n) => Ok(Ports { lo: n as u16, hi: n as u16 }),
                            _ => Err("expected a port 1..65535".to_string()),
                        },
                        other => Err(format!("expected a port or \"LO-HI\", got {}", kind_name(other))),
                    };
                    match parsed {
                        Ok(p) => out.push(p),
                        Err(e) => cx.err(item.span(), format!("match.{k}: {e}")),
                    }
                }
                if k == "local-port" {
                    m.local_port = out;
                } else {
                    m.port = out;
                }
            }
            "role" => match val.get_ref() {
                DeValue::String(s) if s == "client" => m.role = Some(Role::Client),
                DeValue::String(s) if s == "server" => m.role = Some(Role::Server),
                other => cx.err(val.span(), format!("match.role: expected \"client\" or \"server\", got {}", show(other))),
            },
            "transport" | "proto" | "protocol" => match val.get_ref() {
                DeValue::String(s) if s == "tcp" => m.transport = Some(Transport::Tcp),
                DeValue::String(s) if s == "udp" => m.transport = Some(Transport::Udp),
                other => cx.err(val.span(), format!("match.transport: expected \"tcp\" or \"udp\", got {}", show(other))),
            },
            "program" => {
                for item in one_or_many(val) {
                    match item.get_ref() {
                        DeValue::String(s) if !s.is_empty() && !s.contains('/') => m.program.push(s.to_string()),
                        other => cx.err(
                            item.span(),
                            format!("match.program: expected a program name without `/` (e.g. \"ssh\"), got {}", show(other)),
                        ),
                    }
                }
            }
            "host" => {
                for item in one_or_many(val) {
                    match item.get_ref() {
                        DeValue::String(s) => match HostPat::parse(s) {
                            Ok(h) => m.host.push(h),
                            Err(e) => cx.err(item.span(), format!("match.host: {e}")),
                        },
                        other => cx.err(item.span(), format!("match.host: expected a host name or \"*.suffix\", got {}", kind_name(other))),
                    }
                }
            }
            "except" if nested => cx.err(key.span(), "match.except: an exception cannot have an exception of its own"),
            "except" => match val.get_ref() {
                DeValue::Table(e) => {
                    let e = parse_match(cx, e, true);
                    if e.is_any() {
                        cx.err(val.span(), "match.except: empty (it would exclude everything)");
                    } else {
                        m.except = Some(Box::new(e));
                    }
                }
                other => cx.err(val.span(), format!("match.except: expected a table of match keys, got {}", kind_name(other))),
            },
            _ => cx.err(
                key.span(),
                format!(
                    "match: unknown key `{}`: expected remote, port, local-port, role, transport, program, host or except",
                    key.get_ref()
                ),
            ),
        }
    }
    m
}

#[cfg(test)]
mod tests;
