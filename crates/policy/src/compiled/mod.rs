//! The policy as the launcher compiled it, handed to the library in one variable.
//!
//! `sockwrap run` has already read and checked the policy file and the flags; parsing the
//! TOML again in every process it starts would cost each exec ~30,000 instructions per rule.
//! So the launcher also sets `SOCKWRAP_POLICY`: the rules in a flat token form that the
//! library decodes with no TOML and no option-value parsing.
//!
//! The form carries a fingerprint of every other `SOCKWRAP_*` variable it was compiled from.
//! A process whose variables differ (a child that sets `SOCKWRAP_DSCP` itself, or a shell
//! that unsets `SOCKWRAP_CONFIG`) gets a mismatch and the library builds the policy from the
//! variables and the file as usual. So the compiled form is only ever a cache of what the
//! variables say. The policy file is read once, by the launcher: edits to it reach the
//! programs a new `sockwrap run` starts.
//!
//! The encoder and the decoder of each part stand side by side in this one file (~700
//! lines, tests in `tests`), so that the format cannot change on one side only.
//!
//! Format (version 1): space-separated tokens; strings escaped as `%XX` for `%`, space and
//! every byte outside printable ASCII.
//!
//! ```text
//! swp2 <fingerprint hex> <on_error w|f> <rule count> RULE*
//! RULE = <name> <n> (<net hex>/<prefix length>)*n <n> (<lo> <hi>)*n <n> (<lo> <hi>)*n
//!        <role - c s> <transport - t u> <n> <program>*n <n> <host pattern>*n (- | E MATCH)
//!        <n> (<slot> <soft 0 1> <value>)*n ACTIONS
//! MATCH = the match fields of RULE, from the remote networks to the exception (which has none)
//! ACTIONS = - | A <deny errno or -> <redirect P|T address:port or -> <delay ms or -> <fail ppm,errno or ->
//! value = b0 | b1 | i<decimal> | n<escaped name> | a<v4 hex or ->,<v6 hex or -> | l- | l<secs>
//! ```

use crate::catalog::{BindAddrs, Name16, Opt, Value, N_OPTS};
#[allow(unused_imports)]
use crate::prelude::*;
use crate::rules::{
    Actions, Cidr, Fail, HostPat, Match, OnError, Ports, Redirect, Role, Rule, Setting, Transport,
};
use core::fmt::Write;

/// The variable that carries the compiled policy.
pub const VAR: &str = "SOCKWRAP_POLICY";
/// The form's version: bumped whenever the token grammar changes (version 2 added host
/// patterns, exceptions and connect actions). Also part of [`CATALOG_ID`].
const MAGIC: &str = "swp2";
/// Larger forms are not passed (one environment string may hold at most 128 KiB); the
/// library then reads the policy file itself.
pub const MAX_LEN: usize = 96 * 1024;

/// FNV-1a over the `SOCKWRAP_*` variables other than [`VAR`], sorted by name. Chosen for
/// being a dozen lines with no dependency: it detects change, it is not a security check
/// (whoever can set these variables can set the policy anyway).
pub fn fingerprint<'a>(vars: impl IntoIterator<Item = (&'a str, &'a str)>) -> u64 {
    let mut v: Vec<(&str, &str)> = vars
        .into_iter()
        .filter(|(k, _)| k.starts_with("SOCKWRAP_") && *k != VAR)
        .collect();
    v.sort_unstable();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (k, val) in v {
        for b in k.bytes().chain([b'=']).chain(val.bytes()).chain([0]) {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

fn esc(out: &mut String, s: &str) {
    if s.is_empty() {
        out.push_str("%00"); // an empty token would vanish between two spaces
        return;
    }
    for b in s.bytes() {
        if b.is_ascii_graphic() && b != b'%' {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

fn unesc(t: &str) -> Option<String> {
    if t == "%00" {
        return Some(String::new());
    }
    let b = t.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = t.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Space-separated tokens. By hand rather than `str::split(' ')`: the generic pattern
/// search costs several times more per byte, and this runs in every exec under sockwrap.
struct Tokens<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Tokens<'a> {
    fn next(&mut self) -> Option<&'a str> {
        let rest = self.s.as_bytes().get(self.pos..)?;
        let len = find_byte(rest, b' ');
        let tok = self.s.get(self.pos..self.pos + len)?;
        self.pos += len + 1; // past the space (or past the end: then the next call is None)
        Some(tok)
    }
}

/// Index of the first `needle` in `b` (or `b.len()`), eight bytes per step: a byte equal to
/// `needle` becomes zero under the XOR, and the lowest set bit of the classic "has a zero
/// byte" expression marks the first one (higher bits may be false positives; only the
/// lowest is used).
fn find_byte(b: &[u8], needle: u8) -> usize {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let pattern = LO * needle as u64;
    let mut chunks = b.chunks_exact(8);
    let mut i = 0;
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let x = u64::from_le_bytes(w) ^ pattern;
        let t = x.wrapping_sub(LO) & !x & HI;
        if t != 0 {
            return i + (t.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    i + chunks
        .remainder()
        .iter()
        .position(|&x| x == needle)
        .unwrap_or(chunks.remainder().len())
}

/// Lower-case hex, at most 32 digits (u128::from_str_radix checks more than this needs).
fn hex_u128(t: &str) -> Option<u128> {
    if t.is_empty() || t.len() > 32 {
        return None;
    }
    // Two 64-bit halves: a shift of a u128 per digit costs about twice as much, and every
    // remote network of a policy passes here in every exec.
    let b = t.as_bytes();
    let split = b.len().saturating_sub(16);
    Some((hex_u64(&b[..split])? as u128) << 64 | hex_u64(&b[split..])? as u128)
}

/// At most 16 lower-case hex digits (none gives 0).
fn hex_u64(b: &[u8]) -> Option<u64> {
    let mut v: u64 = 0;
    for &c in b {
        let d = HEX_DIGIT[c as usize];
        if d > 15 {
            return None;
        }
        v = v << 4 | d as u64;
    }
    Some(v)
}

/// The value of each lower-case hex digit; 0xff for every other byte.
const HEX_DIGIT: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 16 {
        t[b"0123456789abcdef"[i] as usize] = i as u8;
        i += 1;
    }
    t
};

fn hex_opt(out: &mut String, bytes: Option<&[u8]>) {
    match bytes {
        None => out.push('-'),
        Some(b) => {
            for x in b {
                let _ = write!(out, "{x:02x}");
            }
        }
    }
}

fn unhex<const N: usize>(t: &str) -> Option<Option<[u8; N]>> {
    if t == "-" {
        return Some(None);
    }
    if t.len() != 2 * N {
        return None;
    }
    let mut a = [0u8; N];
    for (i, x) in a.iter_mut().enumerate() {
        *x = u8::from_str_radix(t.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(Some(a))
}

fn enc_value(out: &mut String, v: &Value) {
    match v {
        Value::Bool(b) => out.push_str(if *b { "b1" } else { "b0" }),
        Value::Int(i) => {
            let _ = write!(out, "i{i}");
        }
        Value::Name(n) => {
            out.push('n');
            esc(out, n.as_str());
        }
        Value::Addrs(a) => {
            out.push('a');
            hex_opt(out, a.v4.as_ref().map(|x| &x[..]));
            out.push(',');
            hex_opt(out, a.v6.as_ref().map(|x| &x[..]));
        }
        Value::Linger(None) => out.push_str("l-"),
        Value::Linger(Some(s)) => {
            let _ = write!(out, "l{s}");
        }
    }
}

fn dec_value(t: &str) -> Option<Value> {
    let (kind, rest) = (t.get(..1)?, t.get(1..)?);
    Some(match kind {
        "b" => Value::Bool(match rest {
            "0" => false,
            "1" => true,
            _ => return None,
        }),
        "i" => Value::Int(rest.parse().ok()?),
        "n" => Value::Name(Name16::new(&unesc(rest)?)?),
        "a" => {
            let (v4, v6) = rest.split_once(',')?;
            Value::Addrs(BindAddrs {
                v4: unhex::<4>(v4)?,
                v6: unhex::<16>(v6)?,
            })
        }
        "l" if rest == "-" => Value::Linger(None),
        "l" => Value::Linger(Some(rest.parse().ok()?)),
        _ => return None,
    })
}

fn enc_match(o: &mut String, m: &Match) {
    let _ = write!(o, " {}", m.remote.len());
    for c in &m.remote {
        let (net, mask) = c.raw();
        let _ = write!(o, " {net:x}/{}", mask.leading_ones());
    }
    for list in [&m.port, &m.local_port] {
        let _ = write!(o, " {}", list.len());
        for p in list.iter() {
            let _ = write!(o, " {} {}", p.lo, p.hi);
        }
    }
    o.push_str(match m.role {
        None => " -",
        Some(Role::Client) => " c",
        Some(Role::Server) => " s",
    });
    o.push_str(match m.transport {
        None => " -",
        Some(Transport::Tcp) => " t",
        Some(Transport::Udp) => " u",
    });
    let _ = write!(o, " {}", m.program.len());
    for p in &m.program {
        o.push(' ');
        esc(o, p);
    }
    let _ = write!(o, " {}", m.host.len());
    for h in &m.host {
        let _ = write!(o, " {h}");
    }
    match &m.except {
        None => o.push_str(" -"),
        Some(e) => {
            o.push_str(" E");
            enc_match(o, e);
        }
    }
}

fn enc_actions(o: &mut String, a: &Actions) {
    if a.is_empty() {
        o.push_str(" -");
        return;
    }
    o.push_str(" A ");
    match a.deny {
        Some(e) => {
            let _ = write!(o, "{e}");
        }
        None => o.push('-'),
    }
    match a.redirect {
        Some(r) => {
            let _ = write!(o, " {}{}", if r.show_target { "T" } else { "P" }, r.to);
        }
        None => o.push_str(" -"),
    }
    match a.delay_ms {
        Some(d) => {
            let _ = write!(o, " {d}");
        }
        None => o.push_str(" -"),
    }
    match a.fail {
        Some(f) => {
            let _ = write!(o, " {},{}", f.ppm, f.errno);
        }
        None => o.push_str(" -"),
    }
}

fn dec_match<'t>(
    next: &mut impl FnMut() -> Option<&'t str>,
    count: &impl Fn(Option<&str>) -> Option<usize>,
    depth: u8,
) -> Option<Match> {
    let mut m = Match::default();
    let n = count(next())?;
    m.remote.reserve_exact(n);
    for _ in 0..n {
        let tok = next()?;
        let slash = find_byte(tok.as_bytes(), b'/');
        let (net, len) = (tok.get(..slash)?, tok.get(slash + 1..)?);
        let len: u32 = len.parse().ok()?;
        let mask = match len {
            0 => 0,
            1..=128 => !0u128 << (128 - len),
            _ => return None,
        };
        m.remote.push(Cidr::from_raw(hex_u128(net)?, mask)?);
    }
    for which in 0..2 {
        let n = count(next())?;
        if which == 0 {
            m.port.reserve_exact(n);
        } else {
            m.local_port.reserve_exact(n);
        }
        for _ in 0..n {
            let lo = next()?.parse().ok()?;
            let hi = next()?.parse().ok()?;
            let p = Ports { lo, hi };
            if which == 0 {
                m.port.push(p);
            } else {
                m.local_port.push(p);
            }
        }
    }
    m.role = match next()? {
        "-" => None,
        "c" => Some(Role::Client),
        "s" => Some(Role::Server),
        _ => return None,
    };
    m.transport = match next()? {
        "-" => None,
        "t" => Some(Transport::Tcp),
        "u" => Some(Transport::Udp),
        _ => return None,
    };
    for _ in 0..count(next())? {
        m.program.push(unesc(next()?)?);
    }
    for _ in 0..count(next())? {
        m.host.push(HostPat::parse(next()?).ok()?);
    }
    m.except = match next()? {
        "-" => None,
        "E" if depth == 0 => Some(Box::new(dec_match(next, count, 1)?)),
        _ => return None,
    };
    Some(m)
}

fn dec_actions<'t>(next: &mut impl FnMut() -> Option<&'t str>) -> Option<Actions> {
    match next()? {
        "-" => return Some(Actions::default()),
        "A" => {}
        _ => return None,
    }
    let mut a = Actions::default();
    let t = next()?;
    if t != "-" {
        a.deny = Some(t.parse().ok()?);
    }
    let t = next()?;
    if t != "-" {
        let show_target = match t.get(..1)? {
            "T" => true,
            "P" => false,
            _ => return None,
        };
        a.redirect = Some(Redirect {
            to: t.get(1..)?.parse().ok()?,
            show_target,
        });
    }
    let t = next()?;
    if t != "-" {
        a.delay_ms = Some(t.parse().ok()?);
    }
    let t = next()?;
    if t != "-" {
        let (ppm, errno) = t.split_once(',')?;
        let ppm: u32 = ppm.parse().ok()?;
        if ppm > 1_000_000 {
            return None;
        }
        a.fail = Some(Fail {
            ppm,
            errno: errno.parse().ok()?,
        });
    }
    Some(a)
}

/// The compiled form of `rules` (as [`crate::Policy::rules`] gives them) for a process whose
/// other `SOCKWRAP_*` variables have fingerprint `fp`.
pub fn encode(rules: &[Rule], on_error: OnError, fp: u64) -> String {
    let mut o = String::with_capacity(64 + rules.len() * 48);
    let _ = write!(
        o,
        "{MAGIC} {fp:016x} {} {}",
        match on_error {
            OnError::Warn => "w",
            OnError::Fail => "f",
        },
        rules.len()
    );
    for r in rules {
        o.push(' ');
        esc(&mut o, &r.name);
        enc_match(&mut o, &r.matcher);
        let _ = write!(o, " {}", r.settings.len());
        for (opt, s) in r.settings.iter() {
            let _ = write!(o, " {} {} ", opt as usize, s.soft as u8);
            enc_value(&mut o, &s.value);
        }
        enc_actions(&mut o, &r.actions);
    }
    o
}

/// The rules and failure policy in `text`, if it is a well-formed compiled policy made for
/// variables with fingerprint `fp`; `None` otherwise (the caller then parses as usual).
pub fn decode(text: &str, fp: u64) -> Option<(Vec<Rule>, OnError)> {
    let mut t = Tokens { s: text, pos: 0 };
    let mut next = || t.next();
    if next()? != MAGIC || hex_u128(next()?)? != fp as u128 {
        return None;
    }
    let on_error = match next()? {
        "w" => OnError::Warn,
        "f" => OnError::Fail,
        _ => return None,
    };
    // Counts are bounded by what the text can hold, so a corrupt count cannot make us
    // reserve a huge vector.
    let count = |s: Option<&str>| -> Option<usize> {
        let n: usize = s?.parse().ok()?;
        (n <= text.len()).then_some(n)
    };
    let nrules = count(next())?;
    let mut rules = Vec::with_capacity(nrules);
    for _ in 0..nrules {
        let mut r = Rule::new(unesc(next()?)?);
        let m = dec_match(&mut next, &count, 0)?;
        r.matcher = m;
        for _ in 0..count(next())? {
            let slot: usize = next()?.parse().ok()?;
            let soft = match next()? {
                "0" => false,
                "1" => true,
                _ => return None,
            };
            let value = dec_value(next()?)?;
            if slot >= N_OPTS {
                return None;
            }
            // The value must be of the kind the option takes.
            let opt = *Opt::ALL.get(slot)?;
            if !opt.accepts(&value) {
                return None;
            }
            r.settings.set(opt, Setting { value, soft });
        }
        r.actions = dec_actions(&mut next)?;
        rules.push(r);
    }
    if next().is_some() {
        return None;
    }
    Some((rules, on_error))
}

// ---- the host-wide form: `sockwrap enable --system` ----
//
// Every dynamically linked program of a host loads the library through /etc/ld.so.preload,
// and most of them match no rule. So the file starts with one line that lets a process
// decide, from its first read, whether anything in the file can be for it:
//
// ```text
// swh1 <catalog id hex> <log level> <all 0|1> <body length> <n> <program>*n\n
// <the swp2 form, for no variables>
// ```
//
// `all` is 1 when some rule names no program (then every process decodes the body); the
// names are every program any rule names. The catalog id changes whenever the catalog's
// options change (their slots are in the body): a file written by another version of
// sockwrap is refused as a whole, never misread.

/// Where `sockwrap enable --system` writes the compiled host policy, and the library reads it.
pub const HOST_FILE: &str = "/etc/sockwrap/host.policy";
/// The policy file it was compiled from (a copy, as for units).
pub const HOST_SOURCE: &str = "/etc/sockwrap/host.toml";
const HOST_MAGIC: &str = "swh1";
/// The first line must fit in the library's first read of the file (a buffer on the
/// constructor's stack in every process: small, so that it needs no new stack page).
pub const HOST_HEAD_MAX: usize = 1024;
/// A host policy larger than this is refused (the library reads it whole).
pub const HOST_MAX: usize = 16 << 20;

/// FNV-1a over the catalog's option names in slot order: what the slots in a compiled body
/// mean. Computed at compile time.
pub const CATALOG_ID: u64 = {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    // The body's grammar version first: a file in another grammar is another version.
    let magic = MAGIC.as_bytes();
    let mut k = 0;
    while k < magic.len() {
        h ^= magic[k] as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        k += 1;
    }
    let mut i = 0;
    while i < N_OPTS {
        let name = crate::catalog::TABLE[i].name.as_bytes();
        let mut j = 0;
        while j < name.len() {
            h ^= name[j] as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
            j += 1;
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    h
};

/// The host form of `rules`: the head line, then the body.
pub fn encode_host(rules: &[Rule], on_error: OnError, log: crate::LogLevel) -> String {
    let body = encode(rules, on_error, fingerprint([]));
    let all = rules.iter().any(|r| r.matcher.program.is_empty());
    let mut names: Vec<&str> = rules
        .iter()
        .flat_map(|r| r.matcher.program.iter().map(String::as_str))
        .collect();
    names.sort_unstable();
    names.dedup();
    let line = |all: bool, names: &[&str]| {
        let mut head = String::new();
        let _ = write!(
            head,
            "{HOST_MAGIC} {CATALOG_ID:016x} {} {} {} {}",
            log.as_str(),
            all as u8,
            body.len(),
            names.len()
        );
        for n in names {
            head.push(' ');
            esc(&mut head, n);
        }
        head.push('\n');
        head
    };
    let mut head = line(all || names.is_empty(), if all { &[] } else { &names });
    if head.len() > HOST_HEAD_MAX {
        // Too many names for the first read: every process decodes the body instead.
        head = line(true, &[]);
    }
    head + &body
}

/// What the head line of a host policy says.
#[derive(Debug, PartialEq, Eq)]
pub struct HostHead<'a> {
    pub log: crate::LogLevel,
    /// Some rule applies to every program.
    pub all: bool,
    /// Bytes of the head line, newline included.
    pub head_len: usize,
    pub body_len: usize,
    names: &'a str,
    /// Some name in `names` carries `%` escapes.
    escaped: bool,
}

/// Why a host policy cannot be used.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum HostError {
    /// Not a host policy, or cut short, or changed by hand.
    Damaged,
    /// Written by a sockwrap whose option catalog differs from this library's.
    OtherVersion,
}

impl HostError {
    pub fn describe(self) -> &'static str {
        match self {
            HostError::Damaged => "damaged (not a compiled host policy, or cut short)",
            HostError::OtherVersion => "compiled by another version of sockwrap",
        }
    }
}

/// Reads the head line from the first bytes of the file (at least the whole line, or all
/// of a file shorter than [`HOST_HEAD_MAX`]).
pub fn host_head(first: &[u8]) -> Result<HostHead<'_>, HostError> {
    let nl = find_byte(first, b'\n');
    let line = first
        .get(..nl)
        .filter(|_| nl < first.len())
        .and_then(|l| core::str::from_utf8(l).ok())
        .ok_or(HostError::Damaged)?;
    let mut t = Tokens { s: line, pos: 0 };
    if t.next() != Some(HOST_MAGIC) {
        return Err(HostError::Damaged);
    }
    if hex_u128(t.next().ok_or(HostError::Damaged)?) != Some(CATALOG_ID as u128) {
        return Err(HostError::OtherVersion);
    }
    let mut field = || t.next().ok_or(HostError::Damaged);
    let log = crate::LogLevel::parse(field()?).ok_or(HostError::Damaged)?;
    let all = match field()? {
        "0" => false,
        "1" => true,
        _ => return Err(HostError::Damaged),
    };
    let body_len: usize = field()?.parse().map_err(|_| HostError::Damaged)?;
    let n: usize = field()?.parse().map_err(|_| HostError::Damaged)?;
    let names = line.get(t.pos.min(line.len())..).unwrap_or("");
    // Every process of the host reads this line: bytes, not the generic `str` pattern
    // search (which cost ~400 instructions per name here).
    let count = if names.is_empty() {
        0
    } else {
        names.bytes().filter(|&b| b == b' ').count() + 1
    };
    if count != n || body_len > HOST_MAX {
        return Err(HostError::Damaged);
    }
    Ok(HostHead {
        log,
        all,
        head_len: nl + 1,
        body_len,
        names,
        escaped: names.as_bytes().contains(&b'%'),
    })
}

impl HostHead<'_> {
    /// Whether some rule names `program` (as [`crate::Policy::for_program`] compares).
    pub fn names(&self, program: &[u8]) -> bool {
        // Every process of the host asks this: jump from one occurrence of the name's first
        // byte to the next with the word-at-a-time search, and compare only there (a
        // token-by-token scan cost ~70 instructions per name).
        let all = self.names.as_bytes();
        if let Some(&first) = program.first() {
            let mut pos = 0;
            while pos < all.len() {
                let i = pos + find_byte(&all[pos..], first);
                if i >= all.len() {
                    break;
                }
                let end = i + program.len();
                if (i == 0 || all[i - 1] == b' ')
                    && all.get(i..end) == Some(program)
                    && (end == all.len() || all[end] == b' ')
                {
                    return true;
                }
                pos = i + 1;
            }
        }
        // Names with escapes (spaces, `%`, bytes outside printable ASCII): rare; compared
        // decoded.
        self.escaped
            && self
                .names
                .split(' ')
                .any(|n| n.contains('%') && unesc(n).is_some_and(|u| u.as_bytes() == program))
    }

    /// Whether anything in the file can apply to a program called by one of `names`.
    pub fn may_apply(&self, names: &[&[u8]]) -> bool {
        self.all || names.iter().any(|n| self.names(n))
    }
}

/// The rules of a whole host policy file.
pub fn decode_host(text: &str) -> Result<(Vec<Rule>, OnError, crate::LogLevel), HostError> {
    let head = host_head(text.as_bytes())?;
    let body = text
        .get(head.head_len..)
        .filter(|b| b.len() == head.body_len)
        .ok_or(HostError::Damaged)?;
    let (rules, on_error) = decode(body, fingerprint([])).ok_or(HostError::Damaged)?;
    Ok((rules, on_error, head.log))
}

#[cfg(test)]
mod tests;
