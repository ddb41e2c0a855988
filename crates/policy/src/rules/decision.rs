//! [`Decision`]: the options one socket gets, as the rule that won each slot.

use super::{Policy, Setting};
use crate::catalog::{Opt, N_OPTS};
use crate::plan::VariantOps;
#[allow(unused_imports)]
use crate::prelude::*;

/// The options one socket gets: for each slot, the rule that won it. Small (no copies of
/// values) so deciding and passing it around costs next to nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision<'p> {
    /// 1 + index of the winning rule per slot; 0 = not set.
    pub(super) from: Froms<'p>,
    pub(super) mask: u32,
    /// The set slots whose winning setting is soft.
    pub(super) soft: u32,
    /// 1 + the index of the precomputed decision this is (see [`Policy::fixed_decision`]),
    /// 0 if it was taken by matching rules.
    pub(super) fixed: u8,
    pub(super) policy: &'p Policy,
}

/// A decision's winning rules per slot: a precomputed decision's are borrowed from the
/// policy, so that taking one copies a pointer, not the table (88 bytes: ~20 instructions
/// in each connect and each accept, measured with callgrind on bench/build/connbench).
#[derive(Clone, Copy, Debug)]
pub(super) enum Froms<'p> {
    Fixed(&'p [u32; N_OPTS]),
    Own([u32; N_OPTS]),
}

impl Froms<'_> {
    pub(super) fn get(&self) -> &[u32; N_OPTS] {
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

    pub(super) fn setting(&self, slot: usize) -> Option<&'p Setting> {
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
    pub(super) fn take(&mut self, idx: usize, rule_mask: u32, rule_soft: u32) {
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
