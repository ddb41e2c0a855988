//! The remote-address index of a large policy: which rules can match a remote network,
//! found by hashing instead of a scan of every rule.

use super::Rule;
#[allow(unused_imports)]
use crate::prelude::*;

/// A hash map for keys that come from the policy. Those are trusted, so there is no
/// flooding to defend against, and the map is built in every exec under sockwrap: std's
/// SipHash with random keys would cost a `getrandom` system call and ~100 instructions per
/// key. Written here because it is a dozen lines (the multiply-rotate step of rustc's
/// FxHasher, plus a final mix so that keys differing only in high bits, like /24 networks,
/// still spread over the low bits that pick the bucket).
pub(super) type FixedMap<K, V> =
    hashbrown::HashMap<K, V, core::hash::BuildHasherDefault<FastHasher>>;

#[derive(Default, Clone, Copy)]
pub(super) struct FastHasher(u64);

impl FastHasher {
    pub(super) fn add(&mut self, x: u64) {
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
pub(super) struct RemoteIndex {
    /// Rules without a remote condition, or all rules when the index is off.
    pub(super) always: Vec<u32>,
    /// (mask, network → rules), one per prefix length in use.
    pub(super) by_prefix: Vec<(u128, FixedMap<u128, Vec<u32>>)>,
}

/// Below this many rules with remote networks a plain scan is cheaper than hashing.
pub(super) const INDEX_THRESHOLD: usize = 32;

impl RemoteIndex {
    pub(super) fn build(rules: &[Rule]) -> RemoteIndex {
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
