//! What a rule applies to: [`Match`], and the networks, port ranges and host patterns it
//! is made of.

use super::{Ctx, Role, Transport};
#[allow(unused_imports)]
use crate::prelude::*;
use core::net::IpAddr;

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
