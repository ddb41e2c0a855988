//! A small seedable generator for the workspace's seeded tests: the policy file fuzzer
//! (`tests/fuzz.rs`) and the kernel tables' agreement test (`sockwrap-kernel`, `tables`).
//! One copy, so that a seed means the same sequence in each. Not for anything that needs
//! real randomness.

/// xorshift64*: small, seedable, good enough to drive mutations and random policies.
#[derive(Clone, Debug)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// One of `items` (which must not be empty).
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}
