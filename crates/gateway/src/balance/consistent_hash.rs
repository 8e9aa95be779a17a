//! Consistent hashing (ketama): each backend owns 160 points per unit of weight on a ring of
//! 32-bit hashes; a request goes to the owner of the first point at or after its key's hash,
//! skipping backends that are not candidates now. Adding or removing a backend moves only the
//! keys of its own arcs, about 1/n of them.

use std::io::Cursor;
use std::sync::{Arc, Mutex};

use crate::backend::Backend;
use crate::balance::PickContext;

/// Points per unit of weight, and the weight beyond which a backend gets no more points.
const POINTS_PER_WEIGHT: u32 = 160;
const MAX_RING_WEIGHT: u32 = 100;

#[derive(Debug, Default)]
pub struct ConsistentHash {
    ring: Mutex<Option<Ring>>,
}

/// The ring for one membership: which backends with which weights.
#[derive(Debug)]
struct Ring {
    members: Vec<(Arc<str>, u32)>,
    /// Sorted by hash; each point names its owner by index in `members`.
    points: Vec<(u32, usize)>,
}

/// murmur3 (x86, 32 bits, seed 0): stable across versions and machines, so two gateways map a
/// key alike.
pub fn hash(bytes: &[u8]) -> u32 {
    murmur3::murmur3_32(&mut Cursor::new(bytes), 0).unwrap_or(0)
}

impl Ring {
    fn build(members: Vec<(Arc<str>, u32)>) -> Self {
        let mut points = Vec::new();
        for (owner, (name, weight)) in members.iter().enumerate() {
            for point in 0..POINTS_PER_WEIGHT * (*weight).min(MAX_RING_WEIGHT) {
                points.push((hash(format!("{name}-{point}").as_bytes()), owner));
            }
        }
        points.sort_unstable();
        Self { members, points }
    }

    /// Owners in ring order from the key's position: the first one that is a candidate wins.
    fn owners_from(&self, key_hash: u32) -> impl Iterator<Item = &Arc<str>> {
        let start = self.points.partition_point(|(point, _)| *point < key_hash);
        let (after, before) = (&self.points[start..], &self.points[..start]);
        after.iter().chain(before).map(|(_, owner)| &self.members[*owner].0)
    }
}

impl ConsistentHash {
    pub fn pick(&self, candidates: &[Arc<Backend>], context: PickContext<'_>) -> Option<usize> {
        let key_hash = hash(context.key.unwrap_or_default());
        let members: Vec<(Arc<str>, u32)> = context
            .members
            .iter()
            .filter(|backend| backend.target_weight() > 0)
            .map(|backend| (Arc::clone(backend.shared_name()), backend.target_weight()))
            .collect();
        let mut ring = self.ring.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if ring.as_ref().is_none_or(|ring| ring.members != members) {
            *ring = Some(Ring::build(members));
        }
        let ring = ring.as_ref()?;
        for owner in ring.owners_from(key_hash) {
            if let Some(index) = candidates.iter().position(|backend| backend.shared_name() == owner) {
                return Some(index);
            }
        }
        // Candidates outside the ring (weight 0 in panic routing): the first one.
        if candidates.is_empty() { None } else { Some((key_hash as usize) % candidates.len()) }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::balance::test_support::backends;

    fn owner(balancer: &ConsistentHash, candidates: &[Arc<Backend>], members: &[Arc<Backend>], key: &str) -> String {
        let context = PickContext {
            now: Instant::now(),
            key: Some(key.as_bytes()),
            members,
            ewma_decay: Duration::from_secs(10),
        };
        candidates[balancer.pick(candidates, context).unwrap()].name().to_owned()
    }

    fn keys() -> Vec<String> {
        (0..10_000).map(|n| format!("10.0.{}.{}", n / 256, n % 256)).collect()
    }

    #[test]
    fn the_same_key_always_reaches_the_same_backend_and_keys_spread() {
        let all = backends(&[1, 1, 1, 1], Instant::now());
        let balancer = ConsistentHash::default();
        let mut counts = std::collections::HashMap::new();
        for key in keys() {
            let first = owner(&balancer, &all, &all, &key);
            assert_eq!(owner(&balancer, &all, &all, &key), first);
            *counts.entry(first).or_insert(0) += 1;
        }
        for (name, count) in counts {
            assert!((1_800..=3_200).contains(&count), "{name} got {count} of 10000 keys");
        }
    }

    #[test]
    fn adding_a_backend_moves_only_about_its_share_of_keys() {
        let now = Instant::now();
        let eleven = backends(&[1; 11], now);
        let ten = &eleven[..10];
        let balancer = ConsistentHash::default();
        let before: Vec<String> = keys().iter().map(|key| owner(&balancer, ten, ten, key)).collect();
        let after: Vec<String> = keys().iter().map(|key| owner(&balancer, &eleven, &eleven, key)).collect();
        let moved = before.iter().zip(&after).filter(|(before, after)| before != after).count();
        // The ideal is 1/11 (909 keys); every key that moved went to the new backend.
        assert!(moved < 1_500, "{moved} of 10000 keys moved");
        assert!(before.iter().zip(&after).all(|(before, after)| before == after || after == "b10"));
    }

    #[test]
    fn a_backend_that_is_not_a_candidate_gives_its_keys_away_and_no_others_move() {
        let all = backends(&[1, 1, 1, 1], Instant::now());
        let balancer = ConsistentHash::default();
        let without_b2: Vec<Arc<Backend>> = all.iter().filter(|backend| backend.name() != "b2").cloned().collect();
        for key in keys() {
            let before = owner(&balancer, &all, &all, &key);
            let after = owner(&balancer, &without_b2, &all, &key);
            assert_ne!(after, "b2");
            if before != "b2" {
                assert_eq!(before, after, "key {key} moved though its backend stayed");
            }
        }
    }

    #[test]
    fn the_hash_is_murmur3() {
        // Reference value of murmur3_x86_32("hello", seed 0).
        assert_eq!(hash(b"hello"), 0x248b_fa47);
    }
}
