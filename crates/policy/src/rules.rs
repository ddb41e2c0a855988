//! Rules and the compiled [`Policy`]: "which options does this socket get?".
//!
//! A [`Rule`] is a [`Match`] plus option settings. Rules are ordered; for each option the
//! last matching rule that sets it wins. The policy is built once, then read by every thread
//! without locks; [`Policy::decide`] allocates nothing.
//!
//! A match field whose value is not known yet (the remote address at `socket()` time, the
//! role of a fresh UDP socket) does not match: a rule that names a remote network is only
//! applied once the remote is known.

use crate::catalog::{parse_duration, DurationError, Opt, Value, N_OPTS};
use crate::plan::VariantOps;
#[allow(unused_imports)]
use crate::prelude::*;
use core::net::IpAddr;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Client,
    Server,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Udp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OnError {
    /// Warn once per option and go on (default).
    #[default]
    Warn,
    /// Make the hooked call fail with the option's errno.
    Fail,
}

/// A network: IPv4 networks are stored as their IPv4-mapped IPv6 form, so that a v4-mapped
/// remote address on an AF_INET6 socket matches an IPv4 rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    net: u128,
    mask: u128,
}

impl Cidr {
    /// The network and mask, for the compiled policy form.
    pub fn raw(&self) -> (u128, u128) {
        (self.net, self.mask)
    }
    /// The inverse of [`Cidr::raw`]: `None` unless `mask` is a prefix mask covering `net`.
    pub fn from_raw(net: u128, mask: u128) -> Option<Cidr> {
        let prefix_mask = mask.leading_ones() + mask.trailing_zeros() == 128;
        (prefix_mask && net & !mask == 0).then_some(Cidr { net, mask })
    }
    /// Parses `10.0.0.0/8`, `fd00::/8`, or a bare address (a host route). The address must
    /// not have bits set beyond the prefix (`10.0.0.1/8` is refused, as it is usually a typo).
    /// Written by hand: the whole job is twenty lines over `core::net`, and ipnet's errors
    /// do not say which part is wrong.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let s = s.trim();
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let ip: IpAddr = addr.parse().map_err(|_| {
            format!("`{s}`: `{addr}` is not an IP address (expected e.g. 10.0.0.0/8 or fd00::/8)")
        })?;
        let (full, max) = match ip {
            IpAddr::V4(v4) => (u128::from(v4.to_ipv6_mapped()), 32u32),
            IpAddr::V6(v6) => (u128::from(v6), 128u32),
        };
        let len = match len {
            None => max,
            Some(l) => match l.parse::<u32>() {
                Ok(n) if n <= max && !l.starts_with('+') => n,
                _ => {
                    return Err(format!(
                        "`{s}`: prefix length `{l}` is not a number 0..{max}"
                    ))
                }
            },
        };
        let bits = len + (128 - max);
        let mask = if bits == 0 {
            0
        } else {
            u128::MAX << (128 - bits)
        };
        if full & !mask != 0 {
            return Err(format!(
                "`{s}`: address has bits set beyond the /{len} prefix"
            ));
        }
        Ok(Cidr {
            net: full & mask,
            mask,
        })
    }

    /// (network, mask), both in the IPv6 (v4-mapped) form.
    pub fn parts(&self) -> (u128, u128) {
        (self.net, self.mask)
    }

    pub fn contains(&self, ip: u128) -> bool {
        ip & self.mask == self.net
    }
}

/// Normalises an address for matching: IPv4 becomes IPv4-mapped IPv6.
pub fn ip_key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// An inclusive port range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ports {
    pub lo: u16,
    pub hi: u16,
}

impl Ports {
    /// Parses `22` or `8000-8100`.
    pub fn parse(s: &str) -> Result<Ports, String> {
        let p = |x: &str| {
            x.trim().parse::<u16>().map_err(|_| {
                format!("`{s}` is not a port or port range (expected 1..65535 or LO-HI)")
            })
        };
        let r = match s.split_once('-') {
            Some((a, b)) => Ports {
                lo: p(a)?,
                hi: p(b)?,
            },
            None => {
                let v = p(s)?;
                Ports { lo: v, hi: v }
            }
        };
        if r.lo > r.hi {
            return Err(format!(
                "`{s}`: the range is empty (low end above high end)"
            ));
        }
        Ok(r)
    }
    fn contains(&self, port: u16) -> bool {
        self.lo <= port && port <= self.hi
    }
}

/// What a rule applies to. Empty lists and `None` mean "any".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Match {
    pub remote: Vec<Cidr>,
    pub port: Vec<Ports>,
    pub local_port: Vec<Ports>,
    pub role: Option<Role>,
    pub transport: Option<Transport>,
    /// Program names (basename of argv[0] or of the executable). Resolved once per process by
    /// [`Policy::for_program`]; the hot path never compares strings.
    pub program: Vec<String>,
    /// Host names the destination address must have come from (see [`HostPat`]).
    pub host: Vec<HostPat>,
    /// The rule does not apply where this matches (`except = { ... }`).
    pub except: Option<Box<Match>>,
}

impl Match {
    /// Whether this rule can decide without a remote address (and so can be applied at
    /// socket creation or on a listener).
    pub fn needs_remote(&self) -> bool {
        !self.remote.is_empty()
            || !self.port.is_empty()
            || !self.host.is_empty()
            || self.except.as_ref().is_some_and(|e| e.needs_remote())
    }

    /// Whether this match (or its exception) looks at the local port.
    pub fn uses_local_port(&self) -> bool {
        !self.local_port.is_empty() || self.except.as_ref().is_some_and(|e| e.uses_local_port())
    }

    /// Whether this match (or its exception) names programs: then the policy must be
    /// specialised with [`Policy::for_program`] before it decides.
    pub fn uses_program(&self) -> bool {
        !self.program.is_empty() || self.except.as_ref().is_some_and(|e| e.uses_program())
    }

    /// Whether this match (or its exception) names host patterns.
    pub fn uses_host(&self) -> bool {
        !self.host.is_empty() || self.except.as_ref().is_some_and(|e| e.uses_host())
    }

    /// Matches everything (no field set).
    pub fn is_any(&self) -> bool {
        self.remote.is_empty()
            && self.port.is_empty()
            && self.local_port.is_empty()
            && self.role.is_none()
            && self.transport.is_none()
            && self.program.is_empty()
            && self.host.is_empty()
            && self.except.is_none()
    }

    /// Whether every socket `other` matches is matched by this too (a conservative answer:
    /// `false` when unsure, e.g. when this has an exception). `check` uses it to find rules
    /// that later rules override entirely.
    pub fn covers(&self, other: &Match) -> bool {
        fn each<T>(mine: &[T], theirs: &[T], inside: impl Fn(&T, &T) -> bool) -> bool {
            mine.is_empty()
                || (!theirs.is_empty() && theirs.iter().all(|t| mine.iter().any(|m| inside(t, m))))
        }
        let ports = |t: &Ports, m: &Ports| m.lo <= t.lo && t.hi <= m.hi;
        self.except.is_none()
            && (self.transport.is_none() || self.transport == other.transport)
            && (self.role.is_none() || self.role == other.role)
            && each(&self.remote, &other.remote, |t, m| {
                m.mask & !t.mask == 0 && m.contains(t.net)
            })
            && each(&self.port, &other.port, ports)
            && each(&self.local_port, &other.local_port, ports)
            && each(&self.program, &other.program, |t, m| t == m)
            && each(&self.host, &other.host, |t, m| {
                t == m || (m.suffix && t.name.ends_with(&format!(".{}", m.name)))
            })
    }

    pub(crate) fn matches(&self, ctx: &Ctx) -> bool {
        if !self.matches_fields(ctx) {
            return false;
        }
        match &self.except {
            None => true,
            // An exception that looks at something not known yet cannot be ruled out: the
            // rule waits until it is known (as a rule on the remote waits for connect).
            Some(e)
                if (ctx.remote.is_none() && e.needs_remote())
                    || (ctx.local_port.is_none() && !e.local_port.is_empty())
                    || (ctx.role.is_none() && e.role.is_some()) =>
            {
                false
            }
            Some(e) => !e.matches(ctx),
        }
    }

    fn matches_fields(&self, ctx: &Ctx) -> bool {
        if let Some(t) = self.transport {
            if t != ctx.transport {
                return false;
            }
        }
        if let Some(r) = self.role {
            if ctx.role != Some(r) {
                return false;
            }
        }
        if !self.remote.is_empty() {
            match ctx.remote {
                Some((ip, _)) if self.remote.iter().any(|c| c.contains(ip)) => {}
                _ => return false,
            }
        }
        if !self.port.is_empty() {
            match ctx.remote {
                Some((_, port)) if self.port.iter().any(|p| p.contains(port)) => {}
                _ => return false,
            }
        }
        if !self.local_port.is_empty() {
            match ctx.local_port {
                Some(port) if self.local_port.iter().any(|p| p.contains(port)) => {}
                _ => return false,
            }
        }
        if !self.host.is_empty() {
            match ctx.host {
                Some(name) if ctx.remote.is_some() && self.host.iter().any(|h| h.matches(name)) => {
                }
                _ => return false,
            }
        }
        true
    }
}

/// A host-name pattern of `match.host`: an exact name (`db.example.com`) or a suffix
/// (`*.example.com`: any name below example.com, not example.com itself). Compared without
/// regard to case or a trailing dot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPat {
    /// Lower case, without the `*.` and without a trailing dot.
    name: String,
    suffix: bool,
}

impl HostPat {
    pub fn parse(s: &str) -> Result<HostPat, String> {
        let t = s.trim();
        let (suffix, rest) = match t.strip_prefix("*.") {
            Some(r) => (true, r),
            None => (false, t),
        };
        let rest = rest.strip_suffix('.').unwrap_or(rest);
        let bad = |why: &str| Err(format!("`{s}` is not a host name or `*.` suffix: {why}"));
        if rest.is_empty() {
            return bad("it is empty");
        }
        if rest.len() > 253 {
            return bad("longer than 253 bytes");
        }
        for label in rest.split('.') {
            if label.is_empty() || label.len() > 63 {
                return bad("a label is empty or longer than 63 bytes");
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return bad("only letters, digits, `-` and `_` may appear in labels, and `*` only as a leading `*.`");
            }
        }
        Ok(HostPat {
            name: rest.to_ascii_lowercase(),
            suffix,
        })
    }

    pub fn matches(&self, name: &str) -> bool {
        let n = name.strip_suffix('.').unwrap_or(name);
        if !self.suffix {
            return n.eq_ignore_ascii_case(&self.name);
        }
        n.len() > self.name.len() + 1
            && n.as_bytes()[n.len() - self.name.len() - 1] == b'.'
            && n[n.len() - self.name.len()..].eq_ignore_ascii_case(&self.name)
    }
}

impl core::fmt::Display for HostPat {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.suffix {
            f.write_str("*.")?;
        }
        f.write_str(&self.name)
    }
}

/// The errno names a `deny` or `fail` action may give, with their values (the same on every
/// Linux architecture sockwrap builds for: the generic table).
pub const ERRNOS: &[(&str, i32)] = &[
    ("ECONNREFUSED", 111),
    ("ENETUNREACH", 101),
    ("EHOSTUNREACH", 113),
    ("ETIMEDOUT", 110),
    ("ECONNRESET", 104),
    ("ECONNABORTED", 103),
    ("EACCES", 13),
    ("EPERM", 1),
    ("ENETDOWN", 100),
    ("EHOSTDOWN", 112),
    ("EADDRNOTAVAIL", 99),
    ("EADDRINUSE", 98),
    ("ENOBUFS", 105),
    ("EAGAIN", 11),
    ("EINTR", 4),
    ("EPROTO", 71),
    ("ENOMEM", 12),
];

/// An errno by name (`ECONNREFUSED`, case-insensitive) or number.
pub fn parse_errno(s: &str) -> Result<i32, String> {
    let t = s.trim();
    if let Some((_, v)) = ERRNOS.iter().find(|(n, _)| n.eq_ignore_ascii_case(t)) {
        return Ok(*v);
    }
    let names: Vec<&str> = ERRNOS.iter().map(|(n, _)| *n).collect();
    Err(format!(
        "`{s}` is not an errno sockwrap can give a connect: expected one of {}",
        names.join(", ")
    ))
}

pub fn errno_name(e: i32) -> &'static str {
    ERRNOS
        .iter()
        .find(|(_, v)| *v == e)
        .map(|(n, _)| *n)
        .unwrap_or("EOTHER")
}

/// Where a `redirect` sends a connect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Redirect {
    pub to: core::net::SocketAddr,
    /// `getpeername` answers the address the connect really went to, not the one the
    /// program asked for (the default).
    pub show_target: bool,
}

/// A `fail` action: this fraction of matching connects fail with `errno`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fail {
    /// Parts per million, 0..=1,000,000.
    pub ppm: u32,
    pub errno: i32,
}

/// What a rule does to a matching connect, besides setting options. For each kind the last
/// matching rule that sets it wins, as for options.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Actions {
    /// The connect fails with this errno; nothing is sent.
    pub deny: Option<i32>,
    pub redirect: Option<Redirect>,
    /// The connect completes (or fails) this many milliseconds later.
    pub delay_ms: Option<u32>,
    pub fail: Option<Fail>,
}

/// The kinds of action, in the order [`Actions::texts`] gives them.
pub const ACTION_KINDS: [&str; 4] = ["deny", "redirect", "delay", "fail"];

impl Actions {
    pub fn is_empty(&self) -> bool {
        *self == Actions::default()
    }
    /// Each kind's value as `explain` shows it, in [`ACTION_KINDS`] order; `None` where
    /// this rule does not set that kind.
    pub fn texts(&self) -> [Option<String>; 4] {
        [
            self.deny.map(|e| errno_name(e).to_string()),
            self.redirect.map(|rd| {
                let shown = if rd.show_target {
                    ", getpeername shows the target"
                } else {
                    ""
                };
                format!("{}{shown}", rd.to)
            }),
            self.delay_ms.map(|d| format!("{d}ms")),
            self.fail
                .map(|f| format!("rate {} errno {}", rate_text(f.ppm), errno_name(f.errno))),
        ]
    }
    /// Takes what `later` sets.
    fn overlay(&mut self, later: &Actions) {
        self.deny = later.deny.or(self.deny);
        self.redirect = later.redirect.or(self.redirect);
        self.delay_ms = later.delay_ms.or(self.delay_ms);
        self.fail = later.fail.or(self.fail);
    }
}

/// The actions a connect gets, with the rule that set `fail` (each rule draws from its own
/// seeded sequence).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectActions {
    pub actions: Actions,
    /// Index of the rule whose `fail` won.
    pub fail_rule: u32,
}

/// A decimal number (`12`, `0.25`, `1.5`) times 10^`digits`, digits beyond that dropped.
/// Integer arithmetic on purpose: core's float parsing and printing are ~30 KiB of code
/// and tables, which every process the library loads into would carry.
pub(crate) fn decimal_scaled(s: &str, digits: u32) -> Option<u64> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
        || int.len() > 12
    {
        return None;
    }
    let mut v: u64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut f = frac.bytes();
    for _ in 0..digits {
        let d = f.next().map(|b| (b - b'0') as u64).unwrap_or(0);
        v = v.checked_mul(10)?.checked_add(d)?;
    }
    Some(v)
}

/// Parses a delay in the one duration grammar ([`parse_duration`]: `250ms`, `1.5s`,
/// `1min`; a bare number is milliseconds); at most one hour.
pub fn parse_delay(s: &str) -> Result<u32, String> {
    match parse_duration(s, 1) {
        Ok(ms) if ms <= 3_600_000 => Ok(ms as u32),
        Ok(_) => Err(format!("`{s}`: a delay must be between 0 and 1 hour")),
        Err(DurationError::NotWhole) => Err(format!("`{s}` is not a whole number of milliseconds")),
        Err(DurationError::NotADuration) => Err(format!(
            "`{s}` is not a delay (expected a duration such as 250ms, 1.5s, 1min)"
        )),
    }
}

/// Parses `127.0.0.1:8443` or `[::1]:8443`.
pub fn parse_redirect(s: &str) -> Result<core::net::SocketAddr, String> {
    s.trim().parse::<core::net::SocketAddr>().map_err(|_| {
        format!("`{s}` is not an address:port (expected e.g. 127.0.0.1:8443 or [::1]:8443)")
    })
}

/// A rate `0..1` (`0.3`, `1`, `0.000001`) as parts per million.
pub fn rate_ppm(s: &str) -> Result<u32, String> {
    match decimal_scaled(s.trim(), 6) {
        Some(ppm) if ppm <= 1_000_000 => Ok(ppm as u32),
        Some(_) => Err(format!("rate {} is outside 0..1", s.trim())),
        None => Err(format!(
            "`{s}` is not a rate (expected a number 0..1 such as 0.2)"
        )),
    }
}

/// A rate in parts per million as a decimal (`0.2`), for messages.
pub fn rate_text(ppm: u32) -> String {
    let frac = format!("{:06}", ppm % 1_000_000);
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        format!("{}", ppm / 1_000_000)
    } else {
        format!("{}.{frac}", ppm / 1_000_000)
    }
}

/// One option as a rule sets it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Setting {
    pub value: Value,
    /// A soft setting is a default: the program's own setsockopt may change it.
    pub soft: bool,
}

/// The options one rule sets, in slot order: only those it sets (a rule that sets one
/// option holds one entry, not a slot for every option).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings(Vec<(Opt, Setting)>);

impl Settings {
    pub fn get(&self, opt: Opt) -> Option<&Setting> {
        self.0.iter().find(|(o, _)| *o == opt).map(|(_, s)| s)
    }
    pub fn get_mut(&mut self, opt: Opt) -> Option<&mut Setting> {
        self.0.iter_mut().find(|(o, _)| *o == opt).map(|(_, s)| s)
    }
    /// Sets `opt` (replacing what the rule set for it before).
    pub fn set(&mut self, opt: Opt, s: Setting) {
        match self.0.binary_search_by(|(o, _)| o.cmp(&opt)) {
            Ok(i) => self.0[i].1 = s,
            Err(i) => self.0.insert(i, (opt, s)),
        }
    }
    /// The set options, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (Opt, &Setting)> + '_ {
        self.0.iter().map(|(o, s)| (*o, s))
    }
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (Opt, &mut Setting)> + '_ {
        self.0.iter_mut().map(|(o, s)| (*o, s))
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// The user's name for the rule, or where it came from (`policy.toml:12`, `flags`).
    pub name: String,
    pub matcher: Match,
    pub settings: Settings,
    /// What the rule does to a matching connect (deny, redirect, delay, fail).
    pub actions: Actions,
}

impl Rule {
    pub fn new(name: impl Into<String>) -> Rule {
        Rule {
            name: name.into(),
            matcher: Match::default(),
            settings: Settings::default(),
            actions: Actions::default(),
        }
    }
    pub fn set(&mut self, opt: Opt, value: Value, soft: bool) {
        self.settings.set(opt, Setting { value, soft });
    }
    pub fn is_empty(&self) -> bool {
        self.settings.is_empty() && self.actions.is_empty()
    }
}

/// One rule that matched a socket ([`Policy::matched_rules`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MatchedRule<'p> {
    /// Its place in the policy, from 0.
    pub index: usize,
    pub rule: &'p Rule,
    /// Each option it sets, and the name of the later matching rule that decides that
    /// option instead (`None`: this rule's value stands).
    pub options: Vec<(Opt, Setting, Option<&'p str>)>,
    /// Each action it sets ([`ACTION_KINDS`]), its value as text, and the later rule that
    /// overrides it.
    pub actions: Vec<(&'static str, String, Option<&'p str>)>,
}

/// Rules that later rules override entirely, wherever they match: for each, its index and
/// the later rules that cover its match ([`Match::covers`]) and, together, set every option
/// and action it sets. Such a rule never decides anything (`check` warns of it).
pub fn overridden_entirely(rules: &[Rule]) -> Vec<(usize, Vec<usize>)> {
    let mut out = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        if r.is_empty() {
            continue;
        }
        let later: Vec<usize> = (i + 1..rules.len())
            .filter(|&j| rules[j].matcher.covers(&r.matcher))
            .collect();
        let sets = |j: usize, o: Opt| rules[j].settings.get(o).is_some();
        let options_covered = r
            .settings
            .iter()
            .all(|(o, _)| later.iter().any(|&j| sets(j, o)));
        let actions_covered = r.actions.texts().iter().enumerate().all(|(k, t)| {
            t.is_none() || later.iter().any(|&j| rules[j].actions.texts()[k].is_some())
        });
        if options_covered && actions_covered {
            let by: Vec<usize> = later
                .into_iter()
                .filter(|&j| {
                    r.settings.iter().any(|(o, _)| sets(j, o))
                        || r.actions
                            .texts()
                            .iter()
                            .zip(rules[j].actions.texts())
                            .any(|(a, b)| a.is_some() && b.is_some())
                })
                .collect();
            out.push((i, by));
        }
    }
    out
}

/// What is known about a socket when a decision is taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ctx<'a> {
    pub transport: Transport,
    pub role: Option<Role>,
    /// Remote address ([`ip_key`] form) and port.
    pub remote: Option<(u128, u16)>,
    pub local_port: Option<u16>,
    /// The host name the remote address came from, when the program resolved one that gave
    /// it (the library's name table).
    pub host: Option<&'a str>,
}

/// The options one socket gets: for each slot, the rule that won it. Small (no copies of
/// values) so deciding and passing it around costs next to nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision<'p> {
    /// 1 + index of the winning rule per slot; 0 = not set.
    from: Froms<'p>,
    mask: u32,
    /// The set slots whose winning setting is soft.
    soft: u32,
    /// 1 + the index of the precomputed decision this is (see [`Policy::fixed_decision`]),
    /// 0 if it was taken by matching rules.
    fixed: u8,
    policy: &'p Policy,
}

/// A decision's winning rules per slot: a precomputed decision's are borrowed from the
/// policy, so that taking one copies a pointer, not the table (88 bytes: ~20 instructions
/// in each connect and each accept, measured with callgrind on bench/build/connbench).
#[derive(Clone, Copy, Debug)]
enum Froms<'p> {
    Fixed(&'p [u32; N_OPTS]),
    Own([u32; N_OPTS]),
}

impl Froms<'_> {
    fn get(&self) -> &[u32; N_OPTS] {
        match self {
            Froms::Fixed(f) => f,
            Froms::Own(f) => f,
        }
    }
}

/// Equal when the tables are, borrowed or not.
impl PartialEq for Froms<'_> {
    fn eq(&self, other: &Froms<'_>) -> bool {
        self.get() == other.get()
    }
}
impl Eq for Froms<'_> {}

impl<'p> Decision<'p> {
    pub fn empty(policy: &'p Policy) -> Decision<'p> {
        Decision {
            from: Froms::Own([0; N_OPTS]),
            mask: 0,
            soft: 0,
            fixed: 0,
            policy,
        }
    }

    pub fn get(&self, opt: Opt) -> Option<Setting> {
        self.setting(opt as usize).copied()
    }
    pub fn is_empty(&self) -> bool {
        self.mask == 0
    }
    /// Bit mask of the slots this decision sets.
    pub fn mask(&self) -> u32 {
        self.mask
    }
    /// Which precomputed decision this is, if it is one: the same index always means the
    /// same options, so callers may precompute their own work per index.
    pub fn fixed_index(&self) -> Option<usize> {
        (self.fixed > 0).then(|| self.fixed as usize - 1)
    }
    /// Bit mask of the set slots whose setting is soft.
    pub fn soft_mask(&self) -> u32 {
        self.soft
    }
    /// Bit mask of the slots this decision sets and locks (not soft).
    pub fn locked_mask(&self) -> u32 {
        self.mask & !self.soft
    }
    /// Iterates over the set options in apply order (slot order), visiting only set slots.
    pub fn iter(&self) -> impl Iterator<Item = (Opt, Setting)> + '_ {
        self.iter_mask(self.mask).map(|(o, s)| (o, *s))
    }
    /// Like [`Decision::iter`], restricted to the slots in `mask`, by reference.
    pub fn iter_mask(&self, mask: u32) -> impl Iterator<Item = (Opt, &Setting)> + '_ {
        let mut m = self.mask & mask;
        core::iter::from_fn(move || {
            while m != 0 {
                let slot = m.trailing_zeros() as usize;
                m &= m - 1;
                if let (Some(o), Some(s)) = (Opt::ALL.get(slot), self.setting(slot)) {
                    return Some((*o, s));
                }
            }
            None
        })
    }

    fn setting(&self, slot: usize) -> Option<&'p Setting> {
        let i = *self.from.get().get(slot)?;
        if i == 0 {
            return None;
        }
        self.policy
            .rules
            .get(i as usize - 1)
            .and_then(|r| r.settings.get(Opt::from_index(slot)?))
    }

    pub(crate) fn policy(&self) -> &'p Policy {
        self.policy
    }

    /// The precomputed plan entries of `opt` as decided (see [`crate::plan`]).
    pub(crate) fn variant_ops(&self, opt: Opt) -> Option<&'p VariantOps> {
        let tag = *self.from.get().get(opt as usize)?;
        if tag == 0 {
            return None;
        }
        let id = *self
            .policy
            .plan_of
            .get(tag as usize - 1)?
            .get(opt as usize)?;
        self.policy.plans.get(id as usize)
    }

    /// Takes rule `idx` into account; later rules win, whatever the order of the calls.
    fn take(&mut self, idx: usize, rule_mask: u32, rule_soft: u32) {
        let tag = idx as u32 + 1;
        let from = match &mut self.from {
            Froms::Own(f) => f,
            // A precomputed decision is never matched further (`decide_scan` starts empty).
            Froms::Fixed(f) => {
                self.from = Froms::Own(**f);
                let Froms::Own(f) = &mut self.from else {
                    return;
                };
                f
            }
        };
        let mut m = rule_mask;
        while m != 0 {
            let slot = m.trailing_zeros() as usize;
            let bit = m & m.wrapping_neg();
            m &= m - 1;
            if from[slot] < tag {
                from[slot] = tag;
                self.soft = (self.soft & !bit) | (rule_soft & bit);
            }
        }
        self.mask |= rule_mask;
    }
}

/// A hash map for keys that come from the policy. Those are trusted, so there is no
/// flooding to defend against, and the map is built in every exec under sockwrap: std's
/// SipHash with random keys would cost a `getrandom` system call and ~100 instructions per
/// key. Written here because it is a dozen lines (the multiply-rotate step of rustc's
/// FxHasher, plus a final mix so that keys differing only in high bits, like /24 networks,
/// still spread over the low bits that pick the bucket).
type FixedMap<K, V> = hashbrown::HashMap<K, V, core::hash::BuildHasherDefault<FastHasher>>;

#[derive(Default, Clone, Copy)]
struct FastHasher(u64);

impl FastHasher {
    fn add(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(5) ^ x).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl core::hash::Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        for c in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..c.len()].copy_from_slice(c);
            self.add(u64::from_le_bytes(b));
        }
    }
    fn write_u8(&mut self, x: u8) {
        self.add(x as u64)
    }
    fn write_u16(&mut self, x: u16) {
        self.add(x as u64)
    }
    fn write_u32(&mut self, x: u32) {
        self.add(x as u64)
    }
    fn write_u64(&mut self, x: u64) {
        self.add(x)
    }
    fn write_u128(&mut self, x: u128) {
        self.add(x as u64);
        self.add((x >> 64) as u64);
    }
    fn write_usize(&mut self, x: usize) {
        self.add(x as u64)
    }
    fn finish(&self) -> u64 {
        let mut x = self.0;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^ (x >> 33)
    }
}

/// Finds the rules that can match a remote address without looking at every rule: rules
/// that name remote networks are filed under each network (a hash table per prefix
/// length); the others are always candidates. Used when a policy has many such rules.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct RemoteIndex {
    /// Rules without a remote condition, or all rules when the index is off.
    always: Vec<u32>,
    /// (mask, network → rules), one per prefix length in use.
    by_prefix: Vec<(u128, FixedMap<u128, Vec<u32>>)>,
}

/// Below this many rules with remote networks a plain scan is cheaper than hashing.
const INDEX_THRESHOLD: usize = 32;

impl RemoteIndex {
    fn build(rules: &[Rule]) -> RemoteIndex {
        let remote_rules = rules
            .iter()
            .filter(|r| !r.matcher.remote.is_empty())
            .count();
        let mut ix = RemoteIndex::default();
        if remote_rules >= INDEX_THRESHOLD {
            // One table per prefix length, sized once for its networks: growing them one
            // rehash at a time cost more than the filing itself.
            let mut counts: Vec<(u128, usize)> = Vec::new();
            for c in rules.iter().flat_map(|r| &r.matcher.remote) {
                let mask = c.parts().1;
                match counts.iter_mut().find(|(m, _)| *m == mask) {
                    Some((_, n)) => *n += 1,
                    None => counts.push((mask, 1)),
                }
            }
            ix.by_prefix = counts
                .into_iter()
                .map(|(m, n)| (m, FixedMap::with_capacity_and_hasher(n, Default::default())))
                .collect();
        }
        for (i, r) in rules.iter().enumerate() {
            if remote_rules < INDEX_THRESHOLD || r.matcher.remote.is_empty() {
                ix.always.push(i as u32);
                continue;
            }
            for c in &r.matcher.remote {
                let (net, mask) = c.parts();
                let pos = match ix.by_prefix.iter().position(|(m, _)| *m == mask) {
                    Some(p) => p,
                    None => {
                        ix.by_prefix.push((mask, Default::default()));
                        ix.by_prefix.len() - 1
                    }
                };
                let list = ix.by_prefix[pos].1.entry(net).or_default();
                if list.last() != Some(&(i as u32)) {
                    list.push(i as u32);
                }
            }
        }
        ix
    }
}

/// The compiled policy. Immutable after construction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    rules: Vec<Rule>,
    pub on_error: OnError,
    /// Union of the slots any rule sets: a program's setsockopt for any other option is
    /// passed through without a look-up.
    managed: u32,
    /// Whether any rule needs a remote address; if none does, client decisions can be
    /// taken before connect without it.
    any_needs_remote: bool,
    /// Whether some rule that names a destination could apply to UDP: such rules reach only
    /// connected UDP sockets, which the library says once.
    udp_dest_rules: bool,
    /// Whether any rule matches on the local port (else accept() need not ask for it).
    any_local_port: bool,
    /// Per rule: the slots it sets.
    masks: Vec<u32>,
    /// Per rule: the slots it sets softly.
    soft_masks: Vec<u32>,
    index: RemoteIndex,
    /// The rules with connect actions (deny, redirect, delay, fail), in order: the only ones
    /// a connect looks at for them, and none in most policies.
    action_rules: Vec<u32>,
    /// Some rule (or exception) names host patterns: the library records resolved names.
    any_host: bool,
    /// The plan entries of every distinct (option, value) the rules set, for the three
    /// kinds of socket ([`crate::plan::Variant`]): computed once here, so a plan is a few
    /// copies and applying it the `setsockopt` calls, nothing else.
    plans: Vec<VariantOps>,
    /// Per rule and slot: the index in `plans` of what the rule sets there.
    plan_of: Vec<[u32; N_OPTS]>,
    /// When no rule looks at addresses or ports, a decision depends only on the transport
    /// and the role: all six are taken here, once, and `decide` is a copy.
    fixed: Option<Box<[Fixed; 6]>>,
    /// For the precomputed decisions: each one's plan per stage and variant, made at the
    /// first socket of that decision (see [`crate::plan::FixedPlans`]).
    pub(crate) fixed_plans: crate::plan::FixedPlans,
}

/// A decision without its policy reference, for [`Policy::fixed`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Fixed {
    from: [u32; N_OPTS],
    mask: u32,
    soft: u32,
}

/// The socket a precomputed decision is for: the inverse of [`fixed_index`].
pub(crate) fn fixed_slot(i: usize) -> (Transport, Option<Role>) {
    let t = if i < 3 {
        Transport::Tcp
    } else {
        Transport::Udp
    };
    (t, [None, Some(Role::Client), Some(Role::Server)][i % 3])
}

fn fixed_index(t: Transport, role: Option<Role>) -> usize {
    let t = match t {
        Transport::Tcp => 0,
        Transport::Udp => 3,
    };
    t + match role {
        None => 0,
        Some(Role::Client) => 1,
        Some(Role::Server) => 2,
    }
}

impl Policy {
    pub fn new(rules: Vec<Rule>, on_error: OnError) -> Policy {
        // Rules that set nothing are dropped.
        let rules: Vec<Rule> = if rules.iter().any(Rule::is_empty) {
            rules.into_iter().filter(|r| !r.is_empty()).collect()
        } else {
            rules
        };
        let any_needs_remote = rules.iter().any(|r| r.matcher.needs_remote());
        let udp_dest_rules = rules
            .iter()
            .any(|r| r.matcher.needs_remote() && r.matcher.transport != Some(Transport::Tcp));
        let any_local_port = rules.iter().any(|r| r.matcher.uses_local_port());
        let any_host = rules.iter().any(|r| r.matcher.uses_host());
        let action_rules = (0..rules.len() as u32)
            .filter(|&i| !rules[i as usize].actions.is_empty())
            .collect();
        let index = RemoteIndex::build(&rules);
        // One pass over every rule's slots: the masks, and the kernel operations of each
        // distinct (option, value), computed once.
        let mut managed = 0;
        let mut masks = Vec::with_capacity(rules.len());
        let mut soft_masks = Vec::with_capacity(rules.len());
        let settings: usize = rules.iter().map(|r| r.settings.len()).sum();
        let mut plans: Vec<VariantOps> = Vec::with_capacity(settings.min(64));
        let mut seen: FixedMap<(Opt, Value), u32> = Default::default();
        let mut plan_of = Vec::with_capacity(rules.len());
        for r in &rules {
            let (mut mask, mut soft) = (0u32, 0u32);
            let mut ids = [0u32; N_OPTS];
            for (o, st) in r.settings.iter() {
                let slot = o as usize;
                mask |= o.bit();
                if st.soft {
                    soft |= o.bit();
                }
                ids[slot] = *seen.entry((o, st.value)).or_insert_with(|| {
                    plans.push(VariantOps::new(o, st.value));
                    plans.len() as u32 - 1
                });
            }
            managed |= mask;
            masks.push(mask);
            soft_masks.push(soft);
            plan_of.push(ids);
        }
        let mut p = Policy {
            rules,
            on_error,
            managed,
            any_needs_remote,
            udp_dest_rules,
            any_local_port,
            masks,
            soft_masks,
            index,
            action_rules,
            any_host,
            plans,
            plan_of,
            fixed: None,
            fixed_plans: Default::default(),
        };
        if !p.any_needs_remote && !p.any_local_port {
            let mut fixed = Box::new([Fixed::default(); 6]);
            for t in [Transport::Tcp, Transport::Udp] {
                for role in [None, Some(Role::Client), Some(Role::Server)] {
                    let d = p.decide_scan(&Ctx {
                        transport: t,
                        role,
                        remote: None,
                        local_port: None,
                        host: None,
                    });
                    fixed[fixed_index(t, role)] = Fixed {
                        from: *d.from.get(),
                        mask: d.mask,
                        soft: d.soft,
                    };
                }
            }
            p.fixed = Some(fixed);
            p.fixed_plans = crate::plan::FixedPlans::reserve(&p);
        }
        p
    }

    /// Keeps only the rules that apply to a program called by one of `names` (argv[0]'s
    /// basename, the executable's basename...). Run once at load.
    pub fn for_program(&self, names: &[&str]) -> Policy {
        self.for_program_with_origins(names).0
    }

    /// [`Policy::for_program`], and for each rule kept, its index in this policy (so that
    /// `explain --program` numbers rules as the file does).
    pub fn for_program_with_origins(&self, names: &[&str]) -> (Policy, Vec<usize>) {
        let (origins, rules): (Vec<usize>, Vec<Rule>) = self
            .rules
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                r.matcher.program.is_empty()
                    || r.matcher
                        .program
                        .iter()
                        .any(|p| names.contains(&p.as_str()))
            })
            .filter_map(|(i, r)| {
                let mut r = r.clone();
                r.matcher.program.clear();
                // An exception by program is settled here too: for this program it is the
                // rest of the exception, for others it never holds.
                if let Some(e) = r.matcher.except.as_mut() {
                    if !e.program.is_empty() {
                        if e.program.iter().any(|p| names.contains(&p.as_str())) {
                            e.program.clear();
                            if e.is_any() {
                                return None; // excepted entirely
                            }
                        } else {
                            r.matcher.except = None;
                        }
                    }
                }
                Some((i, r))
            })
            .unzip();
        (Policy::new(rules, self.on_error), origins)
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
    pub fn manages(&self, opt: Opt) -> bool {
        self.managed & opt.bit() != 0
    }
    pub fn managed_mask(&self) -> u32 {
        self.managed
    }
    pub fn any_local_port(&self) -> bool {
        self.any_local_port
    }
    pub fn udp_dest_rules(&self) -> bool {
        self.udp_dest_rules
    }
    pub fn any_needs_remote(&self) -> bool {
        self.any_needs_remote
    }
    /// Whether some rule has connect actions (deny, redirect, delay, fail).
    pub fn any_actions(&self) -> bool {
        !self.action_rules.is_empty()
    }
    /// Whether some rule redirects (then `getpeername` may have to answer for it).
    pub fn any_redirect(&self) -> bool {
        self.action_rules
            .iter()
            .any(|&i| self.rules[i as usize].actions.redirect.is_some())
    }
    /// Whether some rule looks at host names (then the names a program resolves matter).
    pub fn any_host(&self) -> bool {
        self.any_host
    }

    /// The actions a connect in `ctx` gets: for each kind, the last matching rule's.
    pub fn connect_actions(&self, ctx: &Ctx) -> ConnectActions {
        let mut out = ConnectActions::default();
        for &i in &self.action_rules {
            let r = &self.rules[i as usize];
            if r.matcher.matches(ctx) {
                out.actions.overlay(&r.actions);
                if r.actions.fail.is_some() {
                    out.fail_rule = i;
                }
            }
        }
        out
    }

    /// Like [`Policy::connect_actions`], naming the rule of each action (for `explain`).
    pub fn explain_actions(&self, ctx: &Ctx) -> Vec<(&'static str, String, &str)> {
        let mut out: [Option<(String, &str)>; 4] = Default::default();
        for &i in &self.action_rules {
            let r = &self.rules[i as usize];
            if !r.matcher.matches(ctx) {
                continue;
            }
            for (slot, text) in out.iter_mut().zip(r.actions.texts()) {
                if let Some(t) = text {
                    *slot = Some((t, r.name.as_str()));
                }
            }
        }
        ACTION_KINDS
            .into_iter()
            .zip(out)
            .filter_map(|(k, v)| v.map(|(s, n)| (k, s, n)))
            .collect()
    }

    /// Every rule that matches `ctx`, in policy order, with what it sets and, for each
    /// option and action, the later matching rule that overrides it (the last match wins):
    /// the whole decision, for `explain`.
    pub fn matched_rules(&self, ctx: &Ctx) -> Vec<MatchedRule<'_>> {
        let matching: Vec<usize> = (0..self.rules.len())
            .filter(|&i| self.rules[i].matcher.matches(ctx))
            .collect();
        let mut opt_winner = [usize::MAX; N_OPTS];
        let mut act_winner = [usize::MAX; 4];
        for &i in &matching {
            let r = &self.rules[i];
            for (o, _) in r.settings.iter() {
                opt_winner[o as usize] = i;
            }
            for (w, t) in act_winner.iter_mut().zip(r.actions.texts()) {
                if t.is_some() {
                    *w = i;
                }
            }
        }
        let by = |w: usize, i: usize| (w != i).then(|| self.rules[w].name.as_str());
        matching
            .into_iter()
            .map(|i| {
                let rule = &self.rules[i];
                MatchedRule {
                    index: i,
                    rule,
                    options: rule
                        .settings
                        .iter()
                        .map(|(o, s)| (o, *s, by(opt_winner[o as usize], i)))
                        .collect(),
                    actions: ACTION_KINDS
                        .into_iter()
                        .zip(rule.actions.texts())
                        .zip(act_winner)
                        .filter_map(|((k, t), w)| t.map(|t| (k, t, by(w, i))))
                        .collect(),
                }
            })
            .collect()
    }

    /// The options a socket in `ctx` gets. Later rules override earlier ones per option.
    pub fn decide(&self, ctx: &Ctx) -> Decision<'_> {
        match self.fixed_decision(fixed_index(ctx.transport, ctx.role)) {
            Some((d, _)) => d,
            None => self.decide_scan(ctx),
        }
    }

    /// Precomputed decision `i` (0..6) and the transport it is for, when the policy has
    /// them (no rule looks at addresses or ports).
    pub fn fixed_decision(&self, i: usize) -> Option<(Decision<'_>, Transport)> {
        let x = self.fixed.as_deref()?.get(i)?;
        let (t, _) = fixed_slot(i);
        Some((
            Decision {
                from: Froms::Fixed(&x.from),
                mask: x.mask,
                soft: x.soft,
                fixed: i as u8 + 1,
                policy: self,
            },
            t,
        ))
    }

    /// [`Policy::decide`] without the precomputed decisions: every candidate rule is
    /// matched (for tests that compare the two paths).
    pub fn decide_by_scan(&self, ctx: &Ctx) -> Decision<'_> {
        self.decide_scan(ctx)
    }

    /// [`Policy::decide`] the long way: every candidate rule is matched.
    fn decide_scan(&self, ctx: &Ctx) -> Decision<'_> {
        let mut d = Decision::empty(self);
        let mut consider = |i: u32| {
            let i = i as usize;
            if let (Some(r), Some(m), Some(sm)) =
                (self.rules.get(i), self.masks.get(i), self.soft_masks.get(i))
            {
                if r.matcher.matches(ctx) {
                    d.take(i, *m, *sm);
                }
            }
        };
        for &i in &self.index.always {
            consider(i);
        }
        if let Some((ip, _)) = ctx.remote {
            for (mask, table) in &self.index.by_prefix {
                if let Some(list) = table.get(&(ip & mask)) {
                    for &i in list {
                        consider(i);
                    }
                }
            }
        }
        d
    }

    /// Like [`Policy::decide`], but also names the rule that set each option (for `explain`).
    pub fn explain(&self, ctx: &Ctx) -> Vec<(Opt, Setting, &str)> {
        let mut out: [Option<(Setting, &str)>; N_OPTS] = [None; N_OPTS];
        for r in &self.rules {
            if r.matcher.matches(ctx) {
                for (o, s) in r.settings.iter() {
                    out[o as usize] = Some((*s, r.name.as_str()));
                }
            }
        }
        Opt::ALL
            .into_iter()
            .filter_map(|o| out[o as usize].map(|(s, n)| (o, s, n)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(remote: &str, port: u16) -> Ctx<'static> {
        Ctx {
            transport: Transport::Tcp,
            role: Some(Role::Client),
            remote: Some((ip_key(remote.parse().expect("ip")), port)),
            local_port: None,
            host: None,
        }
    }

    #[test]
    fn cidr_parsing_and_matching() {
        let c = Cidr::parse("10.0.0.0/8").expect("valid");
        assert!(c.contains(ip_key("10.1.2.3".parse().expect("ip"))));
        assert!(c.contains(ip_key(
            "::ffff:10.1.2.3"
                .parse::<core::net::Ipv6Addr>()
                .expect("ip")
                .into()
        )));
        assert!(!c.contains(ip_key("11.0.0.1".parse().expect("ip"))));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("10.0.0.0/8x").is_err());
        assert!(Cidr::parse("10.0.0.1/8").is_err());
        assert!(Cidr::parse("0.0.0.0/0")
            .expect("valid")
            .contains(ip_key("1.2.3.4".parse().expect("ip"))));
        assert!(!Cidr::parse("0.0.0.0/0")
            .expect("valid")
            .contains(ip_key("::1".parse().expect("ip"))));
        assert!(Cidr::parse("::/0")
            .expect("valid")
            .contains(ip_key("::1".parse().expect("ip"))));
        assert!(Cidr::parse("fd00::/8")
            .expect("valid")
            .contains(ip_key("fd12::1".parse().expect("ip"))));
    }

    #[test]
    fn later_rules_override_per_option() {
        let mut a = Rule::new("a");
        a.set(Opt::Tos, Value::Int(0xb8), false);
        a.set(Opt::NoDelay, Value::Bool(true), false);
        let mut b = Rule::new("b");
        b.matcher.port = vec![Ports::parse("22").expect("valid")];
        b.set(Opt::Tos, Value::Int(0x20), true);
        let p = Policy::new(vec![a, b], OnError::Warn);
        let d = p.decide(&ctx("127.0.0.1", 22));
        assert_eq!(
            d.get(Opt::Tos),
            Some(Setting {
                value: Value::Int(0x20),
                soft: true
            })
        );
        assert_eq!(
            d.get(Opt::NoDelay),
            Some(Setting {
                value: Value::Bool(true),
                soft: false
            })
        );
        let d = p.decide(&ctx("127.0.0.1", 80));
        assert_eq!(d.get(Opt::Tos).map(|s| s.value), Some(Value::Int(0xb8)));
        assert_eq!(d.locked_mask(), Opt::Tos.bit() | Opt::NoDelay.bit());
    }

    /// The issue's case: a port-22 EF rule, then a 10.0.0.0/8 AF21 rule. For 10.1.2.3:22
    /// both match, in order, and the first one's dscp is overridden by the second.
    #[test]
    fn matched_rules_say_which_options_a_later_rule_overrode() {
        let mut ssh = Rule::new("ssh");
        ssh.matcher.port = vec![Ports::parse("22").expect("valid")];
        ssh.set(Opt::Tos, Value::Int(0xb8), false);
        ssh.set(Opt::NoDelay, Value::Bool(true), false);
        ssh.actions.delay_ms = Some(5);
        let mut lan = Rule::new("lan");
        lan.matcher.remote = vec![Cidr::parse("10.0.0.0/8").expect("valid")];
        lan.set(Opt::Tos, Value::Int(0x48), false);
        let p = Policy::new(vec![ssh, lan], OnError::Warn);
        let m = p.matched_rules(&ctx("10.1.2.3", 22));
        assert_eq!(m.len(), 2);
        assert_eq!((m[0].index, m[0].rule.name.as_str()), (0, "ssh"));
        assert_eq!(m[0].options[0].0, Opt::Tos);
        assert_eq!(m[0].options[0].2, Some("lan"));
        assert_eq!(m[0].options[1].2, None, "nodelay stands");
        assert_eq!(m[0].actions, vec![("delay", "5ms".to_string(), None)]);
        assert_eq!(m[1].options[0].2, None);
        let m = p.matched_rules(&ctx("192.0.2.1", 22));
        assert_eq!(m.len(), 1);
        assert!(m[0].options.iter().all(|o| o.2.is_none()));
    }

    #[test]
    fn rules_that_later_rules_override_entirely() {
        let rule = |name: &str, remote: &str, port: &str, opts: &[Opt]| {
            let mut r = Rule::new(name);
            if !remote.is_empty() {
                r.matcher.remote = vec![Cidr::parse(remote).expect("valid")];
            }
            if !port.is_empty() {
                r.matcher.port = vec![Ports::parse(port).expect("valid")];
            }
            for &o in opts {
                r.set(o, Value::Bool(true), false);
            }
            r
        };
        let rules = vec![
            rule(
                "narrow",
                "10.1.0.0/16",
                "22",
                &[Opt::NoDelay, Opt::KeepAlive],
            ),
            rule("wide-1", "10.0.0.0/8", "", &[Opt::NoDelay]),
            rule("other-port", "", "80", &[Opt::KeepAlive]),
            rule("wide-2", "", "20-30", &[Opt::KeepAlive]),
            rule("last", "", "", &[Opt::ReuseAddr]),
        ];
        // narrow: nodelay by wide-1 (10/8 covers 10.1/16), keepalive by wide-2 (20-30
        // covers 22); other-port is not a cover (port 80 only).
        assert_eq!(overridden_entirely(&rules), vec![(0, vec![1, 3])]);
        let mut except = rules[1].clone();
        except.matcher.except = Some(Box::new(rule("x", "10.1.2.0/24", "", &[]).matcher));
        let rules = vec![rules[0].clone(), except, rules[3].clone()];
        assert!(
            overridden_entirely(&rules).is_empty(),
            "an exception makes a rule no cover"
        );
    }

    #[test]
    fn unknown_remote_does_not_match_remote_rules() {
        let mut r = Rule::new("r");
        r.matcher.remote = vec![Cidr::parse("127.0.0.0/8").expect("valid")];
        r.set(Opt::Tos, Value::Int(0xb8), false);
        let p = Policy::new(vec![r], OnError::Warn);
        let c = Ctx {
            transport: Transport::Udp,
            role: None,
            remote: None,
            local_port: None,
            host: None,
        };
        assert!(p.decide(&c).is_empty());
        assert!(p.any_needs_remote());
    }

    /// The indexed decision agrees with a plain scan of the rules, for many rules and
    /// addresses (with overlapping prefixes and rules without remote conditions).
    #[test]
    fn index_agrees_with_scan() {
        let mut rules = Vec::new();
        for i in 0..200u32 {
            let mut r = Rule::new(format!("r{i}"));
            match i % 4 {
                0 => {
                    r.matcher.remote =
                        vec![Cidr::parse(&format!("10.{}.0.0/16", i % 7)).expect("valid")]
                }
                1 => {
                    r.matcher.remote =
                        vec![Cidr::parse(&format!("10.{}.{}.0/24", i % 7, i % 5)).expect("valid")]
                }
                2 => {
                    r.matcher.port = vec![Ports {
                        lo: (i % 3) as u16 + 80,
                        hi: (i % 3) as u16 + 80,
                    }]
                }
                _ => {}
            }
            r.set(Opt::ALL[(i as usize) % 5], Value::Int(i as i64), i % 3 == 0);
            rules.push(r);
        }
        let p = Policy::new(rules.clone(), OnError::Warn);
        assert!(!p.index.by_prefix.is_empty(), "the index must be in use");
        for a in 0..7 {
            for b in 0..6 {
                for port in [80u16, 81, 82, 443] {
                    let c = ctx(&format!("10.{a}.{b}.9"), port);
                    let d = p.decide(&c);
                    let mut want: [Option<Setting>; N_OPTS] = [None; N_OPTS];
                    for r in &rules {
                        if r.matcher.matches(&c) {
                            for (o, s) in r.settings.iter() {
                                want[o as usize] = Some(*s);
                            }
                        }
                    }
                    for o in Opt::ALL {
                        assert_eq!(d.get(o), want[o as usize], "{o:?} for 10.{a}.{b}.9:{port}");
                    }
                }
            }
        }
    }

    #[test]
    fn host_patterns() {
        let h = HostPat::parse("*.Example.com.").expect("valid");
        assert_eq!(h.to_string(), "*.example.com");
        assert!(h.matches("a.example.com"));
        assert!(h.matches("A.B.EXAMPLE.COM."));
        assert!(!h.matches("example.com"));
        assert!(!h.matches("badexample.com"));
        let e = HostPat::parse("db.test").expect("valid");
        assert!(e.matches("DB.test") && !e.matches("x.db.test"));
        for bad in ["", "*.", "a..b", "a*b.c", "*.*.c", "a b", &"x".repeat(64)] {
            assert!(HostPat::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn except_and_host_in_matching() {
        let mut r = Rule::new("r");
        r.matcher.host = vec![HostPat::parse("*.internal.example").expect("valid")];
        r.matcher.except = Some(Box::new(Match {
            remote: vec![Cidr::parse("10.9.0.0/16").expect("valid")],
            ..Match::default()
        }));
        r.set(Opt::Tos, Value::Int(0x48), false);
        let p = Policy::new(vec![r], OnError::Warn);
        assert!(p.any_needs_remote() && p.any_host());
        let with = |ip: &str, host: Option<&'static str>| {
            let mut c = ctx(ip, 80);
            c.host = host;
            !p.decide(&c).is_empty()
        };
        assert!(with("10.1.0.1", Some("db.internal.example")));
        assert!(!with("10.9.0.1", Some("db.internal.example")), "excepted");
        assert!(!with("10.1.0.1", None), "an address not from a name");
        assert!(!with("10.1.0.1", Some("db.example")));
        // Before connect nothing is known: neither the host rule nor an exception on the
        // remote can decide, so nothing applies yet.
        let mut a = Rule::new("a");
        a.matcher.except = Some(Box::new(Match {
            remote: vec![Cidr::parse("10.0.0.0/8").expect("valid")],
            ..Match::default()
        }));
        a.set(Opt::NoDelay, Value::Bool(true), false);
        let p = Policy::new(vec![a], OnError::Warn);
        let mut c = ctx("10.1.1.1", 80);
        assert!(p.decide(&c).is_empty());
        c.remote = None;
        assert!(p.decide(&c).is_empty(), "must wait for the remote");
        assert!(!p.decide(&ctx("192.0.2.1", 80)).is_empty());
    }

    #[test]
    fn connect_actions_last_rule_wins_per_kind() {
        let mut a = Rule::new("a");
        a.actions.deny = Some(111);
        a.actions.delay_ms = Some(100);
        let mut b = Rule::new("b");
        b.matcher.port = vec![Ports::parse("5432").expect("valid")];
        b.actions.fail = Some(Fail {
            ppm: 200_000,
            errno: 104,
        });
        b.actions.delay_ms = Some(250);
        let mut c = Rule::new("c");
        c.set(Opt::Tos, Value::Int(0xb8), false);
        let p = Policy::new(vec![c, a, b], OnError::Warn);
        assert!(p.any_actions() && !p.any_redirect());
        let x = p.connect_actions(&ctx("127.0.0.1", 5432));
        assert_eq!(x.actions.deny, Some(111));
        assert_eq!(x.actions.delay_ms, Some(250));
        assert_eq!(x.actions.fail.map(|f| f.ppm), Some(200_000));
        assert_eq!(x.fail_rule, 2);
        let x = p.connect_actions(&ctx("127.0.0.1", 80));
        assert_eq!(x.actions.delay_ms, Some(100));
        assert!(x.actions.fail.is_none());
        let names: Vec<&str> = p
            .explain_actions(&ctx("127.0.0.1", 5432))
            .iter()
            .map(|(k, _, n)| if *k == "delay" { *n } else { "" })
            .filter(|n| !n.is_empty())
            .collect();
        assert_eq!(names, ["b"]);
        // An action-only rule is kept (it sets no option).
        let mut d = Rule::new("d");
        d.actions.deny = Some(13);
        assert!(!Policy::new(vec![d], OnError::Warn).is_empty());
        assert!(!Policy::new(Vec::new(), OnError::Warn).any_actions());
    }

    #[test]
    fn action_value_parsers() {
        assert_eq!(parse_errno("econnrefused"), Ok(111));
        assert!(parse_errno("EBOGUS").unwrap_err().contains("ECONNREFUSED"));
        assert_eq!(parse_delay("250ms"), Ok(250));
        assert_eq!(parse_delay("1.5s"), Ok(1500));
        assert_eq!(parse_delay("40"), Ok(40));
        assert!(parse_delay("2h").is_err() && parse_delay("-1s").is_err());
        assert!(parse_redirect("127.0.0.1:8443").is_ok());
        assert!(parse_redirect("[::1]:8443").is_ok());
        assert!(parse_redirect("127.0.0.1").is_err());
        assert_eq!(rate_ppm("0.3"), Ok(300_000));
        assert_eq!(rate_ppm("1"), Ok(1_000_000));
        assert_eq!(rate_ppm(".000001"), Ok(1));
        assert!(rate_ppm("1.5").is_err() && rate_ppm("-0.1").is_err() && rate_ppm("1e-1").is_err());
        assert_eq!(rate_text(200_000), "0.2");
        assert_eq!(rate_text(1_000_000), "1");
        assert!(parse_delay("0.25ms")
            .unwrap_err()
            .contains("whole number of milliseconds"));
        assert_eq!(parse_delay("2m"), Ok(120_000));
        assert_eq!(parse_delay("1min"), Ok(60_000));
        assert_eq!(parse_delay("1h"), Ok(3_600_000));
    }

    #[test]
    fn program_exceptions_are_settled_per_program() {
        let mut r = Rule::new("r");
        r.matcher.except = Some(Box::new(Match {
            program: vec!["curl".into()],
            ..Match::default()
        }));
        r.set(Opt::Tos, Value::Int(0xb8), false);
        let p = Policy::new(vec![r], OnError::Warn);
        assert!(p.for_program(&["curl"]).is_empty());
        assert!(!p
            .for_program(&["wget"])
            .decide(&ctx("1.2.3.4", 80))
            .is_empty());
    }

    #[test]
    fn program_specialisation() {
        let mut r = Rule::new("ssh");
        r.matcher.program = vec!["ssh".into()];
        r.set(Opt::Tos, Value::Int(0xb8), false);
        let p = Policy::new(vec![r], OnError::Warn);
        assert!(p.for_program(&["curl"]).is_empty());
        assert!(!p
            .for_program(&["ssh"])
            .decide(&ctx("1.2.3.4", 22))
            .is_empty());
    }
}
