//! What a rule does to a matching connect (deny, redirect, delay, fail), and the parsing
//! and naming of its values.

use crate::catalog::{decimal_scaled, parse_duration, DurationError};
#[allow(unused_imports)]
use crate::prelude::*;

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
    pub(super) fn overlay(&mut self, later: &Actions) {
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
