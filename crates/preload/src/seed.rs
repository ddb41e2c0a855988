//! The seeded choices of `fail` rules: whether the n-th matching connect of rule r fails
//! is a pure function of (key, r, n), with one counter per rule, so that the same program
//! run twice with the same seed fails at the same connects, in every process.
//!
//! Per process: a process started by exec keys its choices with the seed itself and counts
//! from zero. A forked child gets a stream of its own, keyed with its parent's key and the
//! fork's ordinal among its parent's forks (counted by the fork handlers of `hooks`), and
//! counts from zero; the parent goes on as if it had not forked. Were the child to go on
//! from its parent's counts, parent and child would make the same choices from the fork
//! on: a pool of forked workers would all fail the same connects together. A program that
//! forks in the same order makes the same choices in every run.

use crate::log_at;
#[allow(unused_imports)]
use crate::prelude::*;
use crate::sys;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use sockwrap_policy::LogLevel;

/// The seeded `fail` choices of one process.
pub struct Chooser {
    /// The run's seed (SOCKWRAP_SEED, or drawn): what the log says.
    seed: u64,
    /// What this process's draws are keyed with: the seed, or in a forked child a key of
    /// its own (see the module note). Written only in a child's fork handler, when the
    /// child has one thread.
    key: AtomicU64,
    /// How many times this process forked (the next child's ordinal).
    forks: AtomicU64,
    /// The seed was drawn here (no SOCKWRAP_SEED): it is logged at the first choice, so
    /// that the run can be repeated (and processes that never choose say nothing).
    drawn: bool,
    told: AtomicBool,
    /// Per rule of the policy: how many of its `fail` choices were made.
    counts: Vec<AtomicU64>,
}

impl Chooser {
    /// For a policy of `rules` rules; `seed` from SOCKWRAP_SEED, else a random one that is
    /// logged (so that the run can be repeated).
    pub fn new(rules: usize, any_fail: bool, seed: Option<u64>) -> Chooser {
        let drawn = seed.is_none() && any_fail;
        let seed = match seed {
            Some(s) => s,
            None if any_fail => sys::random_u64(),
            None => 0,
        };
        Chooser {
            seed,
            key: AtomicU64::new(seed),
            forks: AtomicU64::new(0),
            drawn,
            told: AtomicBool::new(false),
            counts: (0..if any_fail { rules } else { 0 })
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }

    /// Whether this connect, the next `fail` choice of `rule`, fails (`ppm` in a million).
    pub fn fails(&self, rule: u32, ppm: u32) -> bool {
        let Some(c) = self.counts.get(rule as usize) else {
            return false;
        };
        if self.drawn && !self.told.swap(true, Ordering::Relaxed) {
            log_at!(
                LogLevel::Warn,
                "fail rules choose with seed {}: SOCKWRAP_SEED={} repeats this process's choices",
                self.seed,
                self.seed
            );
        }
        let n = c.fetch_add(1, Ordering::Relaxed);
        draw(self.key.load(Ordering::Relaxed), rule, n) < ppm
    }

    /// In the parent, before a fork: the child to be is the next of its forks.
    pub fn before_fork(&self) {
        if !self.counts.is_empty() {
            self.forks.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// In a forked child: a stream of its own (see the module note), from zero.
    pub fn after_fork_child(&self) {
        if self.counts.is_empty() {
            return;
        }
        let parent = self.key.load(Ordering::Relaxed);
        let ordinal = self.forks.load(Ordering::Relaxed);
        self.key
            .store(child_key(parent, ordinal), Ordering::Relaxed);
        self.forks.store(0, Ordering::Relaxed);
        for c in &self.counts {
            c.store(0, Ordering::Relaxed);
        }
    }
}

/// The key of the `ordinal`-th forked child of a process keyed `parent`.
fn child_key(parent: u64, ordinal: u64) -> u64 {
    mix(parent ^ ordinal.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ 0x6a09_e667_f3bc_c909)
}

/// The n-th draw of `rule` under `seed`, uniform in 0..1,000,000: SplitMix64's finaliser
/// over the three (a dozen lines; no crate needed for a keyed hash this small).
pub fn draw(seed: u64, rule: u32, n: u64) -> u32 {
    let x = mix(seed
        ^ (rule as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ n.wrapping_mul(0xd1b5_4a32_d192_ed03));
    (x % 1_000_000) as u32
}

/// SplitMix64's finaliser.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_are_seeded_per_rule_and_near_the_rate() {
        let run = |seed, rule| {
            (0..100)
                .map(|n| draw(seed, rule, n) < 300_000)
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7, 0), run(7, 0));
        assert_ne!(run(7, 0), run(8, 0));
        assert_ne!(run(7, 0), run(7, 1));
        let hits = (0..100_000).filter(|&n| draw(7, 0, n) < 300_000).count();
        assert!((29_000..31_000).contains(&hits), "{hits}");
    }

    #[test]
    fn a_forked_child_has_a_stream_of_its_own_and_the_parent_keeps_its_own() {
        let choices = |c: &Chooser| (0..64).map(|_| c.fails(0, 500_000)).collect::<Vec<_>>();
        let alone = Chooser::new(1, true, Some(7));
        let before = choices(&alone);
        let after = choices(&alone);
        // A parent: 64 choices, a fork, 64 more: the fork changes nothing for it.
        let parent = Chooser::new(1, true, Some(7));
        assert_eq!(choices(&parent), before);
        parent.before_fork();
        // The child is a copy of the parent's state taken at the fork.
        let child = Chooser::new(1, true, Some(7));
        child
            .key
            .store(parent.key.load(Ordering::Relaxed), Ordering::Relaxed);
        child
            .forks
            .store(parent.forks.load(Ordering::Relaxed), Ordering::Relaxed);
        child.after_fork_child();
        assert_eq!(choices(&parent), after);
        let first = choices(&child);
        assert_ne!(first, after, "the child replays its parent");
        assert_ne!(first, before, "the child starts over from the seed");
        // Repeatable, and the next child (and a grandchild) differ again.
        assert_eq!(child_key(7, 1), child.key.load(Ordering::Relaxed));
        assert_ne!(child_key(7, 2), child_key(7, 1));
        assert_ne!(child_key(child_key(7, 1), 1), child_key(7, 1));
    }
}
