//! Rules and the compiled [`Policy`]: "which options does this socket get?".
//!
//! A [`Rule`] is a [`Match`] plus option settings. Rules are ordered; for each option the
//! last matching rule that sets it wins. The policy is built once, then read by every thread
//! without locks; [`Policy::decide`] allocates nothing.
//!
//! A match field whose value is not known yet (the remote address at `socket()` time, the
//! role of a fresh UDP socket) does not match: a rule that names a remote network is only
//! applied once the remote is known.
//!
//! One file per part: `matchers` ([`Match`] and what it is made of: [`Cidr`], [`Ports`],
//! [`HostPat`]), `actions` (what a rule does to a connect: [`Actions`], errno names,
//! delays, rates), `decision` ([`Decision`]: the rule that won each option), `index` (the
//! remote-address index of a large policy), `policy` ([`Policy`]: deciding). This file
//! holds the rule itself and the match context [`Ctx`].

use crate::catalog::{Opt, Value};
#[allow(unused_imports)]
use crate::prelude::*;
use core::net::SocketAddr;

mod actions;
mod decision;
mod index;
mod matchers;
mod policy;
#[cfg(test)]
mod tests;

pub use actions::*;
pub use decision::Decision;
pub use matchers::{ip_key, Cidr, HostPat, Match, Ports};
pub(crate) use policy::fixed_slot;
pub use policy::Policy;

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

/// The one way to build a [`Ctx`]: the library, the kernel tables, `attach` and `explain`
/// all decide on the same facts. A rule on the local port is about servers: only
/// [`Ctx::server`] (and [`Ctx::inherited`], for a socket whose role is not known) give one.
impl<'a> Ctx<'a> {
    /// A socket of which nothing but the transport is known yet (a fresh socket, an
    /// unconnected UDP socket).
    pub fn new(transport: Transport) -> Ctx<'a> {
        Ctx {
            transport,
            role: None,
            remote: None,
            local_port: None,
            host: None,
        }
    }

    /// A client's socket, connecting to `remote` when it is known; `host` is the name the
    /// program resolved to that address, if any.
    pub fn client(
        transport: Transport,
        remote: Option<&SocketAddr>,
        host: Option<&'a str>,
    ) -> Ctx<'a> {
        Ctx {
            role: Some(Role::Client),
            remote: remote.map(remote_key),
            host,
            ..Ctx::new(transport)
        }
    }

    /// A server's socket on `local_port`: the listener (`remote` unknown) or a connection
    /// it accepted from `remote`.
    pub fn server(transport: Transport, local_port: u16, remote: Option<&SocketAddr>) -> Ctx<'a> {
        Ctx {
            role: Some(Role::Server),
            remote: remote.map(remote_key),
            local_port: Some(local_port),
            ..Ctx::new(transport)
        }
    }

    /// A connected socket the program got from elsewhere (across exec, over a Unix
    /// socket): its local port and peer are known, its role is not.
    pub fn inherited(
        transport: Transport,
        local_port: u16,
        remote: Option<&SocketAddr>,
    ) -> Ctx<'a> {
        Ctx {
            remote: remote.map(remote_key),
            local_port: Some(local_port),
            ..Ctx::new(transport)
        }
    }
}

/// A socket address as [`Ctx::remote`] holds it: the [`ip_key`] form and the port.
pub fn remote_key(a: &SocketAddr) -> (u128, u16) {
    (ip_key(a.ip()), a.port())
}
