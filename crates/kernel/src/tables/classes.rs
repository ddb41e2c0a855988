//! The classes a socket is sorted into (see the module doc of [`super`]): program names,
//! remote networks, remote and local port ranges, each with one representative socket per
//! class for [`Policy::decide`] to decide on.

use super::{Network, MAX_DECISIONS};
use crate::Error;
use sockwrap_policy::rules::{Cidr, Match, Ports};
use sockwrap_policy::Policy;

/// The classes of one policy.
pub(super) struct Classes {
    /// Class k's policy (as [`Policy::for_program`] gives it): class 0 for a program no rule
    /// names, then one per distinct `comm`.
    pub programs: Vec<Policy>,
    /// (comm, class) of each named program.
    pub comms: Vec<([u8; 16], u32)>,
    /// Program names longer than the kernel's 15 bytes, as (name, what the kernel sees).
    pub truncated: Vec<(String, String)>,
    /// The LPM entries, class k ≥ 1 each.
    pub networks: Vec<Network>,
    /// An address of each network class (index = class), `None` where a class has none.
    pub network_reps: Vec<Option<u128>>,
    pub rports: PortClassMap,
    pub lports: PortClassMap,
}

/// Port → class, and a port of each class.
pub(super) struct PortClassMap {
    pub class: Vec<u16>,
    pub reps: Vec<u16>,
}

impl Classes {
    pub fn of(policy: &Policy) -> Result<Classes, Error> {
        let (programs, comms, truncated) = program_classes(policy);
        let (networks, network_reps) = network_classes(policy);
        let c = Classes {
            programs,
            comms,
            truncated,
            networks,
            network_reps,
            rports: PortClassMap::of(policy, |m| &m.port),
            lports: PortClassMap::of(policy, |m| &m.local_port),
        };
        c.check_count()?;
        Ok(c)
    }

    /// Refuses a policy whose classes multiply past what the kernel should hold (before
    /// enumerating them: the count bounds the work too).
    fn check_count(&self) -> Result<(), Error> {
        let (p, n, r, l) = (
            self.programs.len(),
            self.network_reps.len(),
            self.rports.reps.len(),
            self.lports.reps.len(),
        );
        // Per class: two transports, five stages, three variants.
        if p * n * r * l * 2 * 5 * 3 > MAX_DECISIONS * 4 {
            return Err(Error(format!(
                "the policy has too many combinations for the kernel backend ({p} programs × {n} networks × {r} remote port ranges × {l} local port ranges); use the library, or fewer overlapping rules"
            )));
        }
        Ok(())
    }

    /// The network classes that have an address.
    pub fn network_classes_with_address(&self) -> Vec<u32> {
        (0..self.network_reps.len() as u32)
            .filter(|&c| self.network_reps[c as usize].is_some())
            .collect()
    }
}

/// A rule's match and its exception: the fields of both cut the classes (so that `decide`
/// on one representative per class sees every exception as the library does).
fn matches(r: &sockwrap_policy::Rule) -> impl Iterator<Item = &sockwrap_policy::rules::Match> {
    core::iter::once(&r.matcher).chain(r.matcher.except.as_deref())
}

/// Every match of `policy`'s rules, exceptions included.
fn all_matches(policy: &Policy) -> impl Iterator<Item = &Match> {
    policy.rules().iter().flat_map(matches)
}

/// One class per distinct `comm` of the rules' program names: the policy each sees, the
/// map entries, and the names the kernel sees cut short.
#[allow(clippy::type_complexity)]
fn program_classes(policy: &Policy) -> (Vec<Policy>, Vec<([u8; 16], u32)>, Vec<(String, String)>) {
    let mut names: Vec<String> = all_matches(policy)
        .flat_map(|m| m.program.iter().cloned())
        .collect();
    names.sort();
    names.dedup();
    let mut by_key: Vec<([u8; 16], Vec<String>)> = Vec::new();
    let mut truncated = Vec::new();
    for n in names {
        let key = comm_key(&n);
        if n.len() > 15 {
            let seen = String::from_utf8_lossy(&key[..15]).into_owned();
            truncated.push((n.clone(), seen));
        }
        match by_key.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(n),
            None => by_key.push((key, vec![n])),
        }
    }
    let mut policies = vec![policy.for_program(&[])];
    let mut comms = Vec::new();
    for (i, (key, names)) in by_key.iter().enumerate() {
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        policies.push(policy.for_program(&refs));
        comms.push((*key, i as u32 + 1));
    }
    (policies, comms, truncated)
}

/// One class per distinct CIDR of the rules, shortest first: the LPM entries, and an
/// address of each class.
fn network_classes(policy: &Policy) -> (Vec<Network>, Vec<Option<u128>>) {
    let mut cidrs: Vec<(u128, u128)> = all_matches(policy)
        .flat_map(|m| m.remote.iter().map(Cidr::parts))
        .collect();
    cidrs.sort_by_key(|&(net, mask)| (mask.count_ones(), net));
    cidrs.dedup();
    let reps = network_representatives(&cidrs);
    let networks = cidrs
        .iter()
        .enumerate()
        .map(|(i, &(net, mask))| Network {
            prefix_len: mask.count_ones(),
            addr: net.to_be_bytes(),
            class: i as u32 + 1,
        })
        .collect();
    (networks, reps)
}

impl PortClassMap {
    /// The classes of the ranges `field` gives of every match of `policy`.
    fn of(policy: &Policy, field: impl Fn(&Match) -> &Vec<Ports>) -> PortClassMap {
        let ranges: Vec<Ports> = all_matches(policy)
            .flat_map(|m| field(m).iter().copied())
            .collect();
        let (class, reps) = port_classes(&ranges);
        PortClassMap { class, reps }
    }
}

/// Cuts 0..=65535 at the start and one past the end of every range: ports between two cuts
/// are in the same ranges. Returns the class of every port and one representative per class.
fn port_classes(ranges: &[Ports]) -> (Vec<u16>, Vec<u16>) {
    let mut cuts: Vec<u32> = vec![0];
    for r in ranges {
        cuts.push(r.lo as u32);
        cuts.push(r.hi as u32 + 1);
    }
    cuts.retain(|&c| c <= 65535);
    cuts.sort_unstable();
    cuts.dedup();
    let mut class = vec![0u16; 65536];
    for (i, w) in cuts.iter().enumerate() {
        let end = cuts.get(i + 1).copied().unwrap_or(65536);
        for p in *w..end {
            class[p as usize] = i as u16;
        }
    }
    let reps = cuts.iter().map(|&c| c as u16).collect();
    (class, reps)
}

/// An address of each network class, or `None` where the class has none (its network is
/// covered by longer ones): for class k ≥ 1 an address in CIDR k and in no longer CIDR of
/// the set, for class 0 an address in none. Any maximal interval of such addresses starts at
/// the network's first address or just past a longer CIDR's end, so those are the candidates.
pub(super) fn network_representatives(cidrs: &[(u128, u128)]) -> Vec<Option<u128>> {
    let end = |(net, mask): (u128, u128)| net | !mask;
    let longest = |ip: u128| -> Option<usize> {
        cidrs
            .iter()
            .enumerate()
            .filter(|(_, (net, mask))| ip & mask == *net)
            .max_by_key(|(_, (_, mask))| mask.count_ones())
            .map(|(i, _)| i)
    };
    let mut reps = Vec::with_capacity(cidrs.len() + 1);
    // Class 0: an address in no CIDR.
    let mut cands = vec![0u128];
    cands.extend(cidrs.iter().filter_map(|&c| end(c).checked_add(1)));
    reps.push(cands.into_iter().find(|&ip| longest(ip).is_none()));
    for (k, &(net, mask)) in cidrs.iter().enumerate() {
        let mut cands = vec![net];
        cands.extend(
            cidrs
                .iter()
                .filter(|&&(n2, m2)| m2.count_ones() > mask.count_ones() && n2 & mask == net)
                .filter_map(|&c| end(c).checked_add(1))
                .filter(|ip| ip & mask == net),
        );
        reps.push(cands.into_iter().find(|&ip| longest(ip) == Some(k)));
    }
    reps
}

/// The name the kernel keeps for a task (`comm`): the first 15 bytes, NUL-padded.
pub fn comm_key(name: &str) -> [u8; 16] {
    let mut k = [0u8; 16];
    let b = name.as_bytes();
    let n = b.len().min(15);
    k[..n].copy_from_slice(&b[..n]);
    k
}
