//! The seeded choices of `fail` rules: whether the n-th matching connect of rule r fails
//! is a pure function of (seed, r, n), with one counter per rule, so that the same program
//! run twice with the same seed fails at the same connects, in every process (each counts
//! from zero; a forked child goes on from its parent's counts).

use crate::log_at;
#[allow(unused_imports)]
use crate::prelude::*;
use crate::sys;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use sockwrap_policy::LogLevel;

/// The seeded `fail` choices of one process.
pub struct Chooser {
    seed: u64,
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
        draw(self.seed, rule, n) < ppm
    }
}

/// The n-th draw of `rule` under `seed`, uniform in 0..1,000,000: SplitMix64's finaliser
/// over the three (a dozen lines; no crate needed for a keyed hash this small).
pub fn draw(seed: u64, rule: u32, n: u64) -> u32 {
    let mut x = seed
        ^ (rule as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ n.wrapping_mul(0xd1b5_4a32_d192_ed03);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    (x % 1_000_000) as u32
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
}
