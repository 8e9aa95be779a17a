//! The generations that make cached reads unreachable: this process's own per family, and the
//! database's generation under which the shared tier stores values, with when it may be trusted.
//!
//! The local generation grows whenever a write commits here, another instance announces one,
//! the poll sees the database's counter move, or the announcements may have been missed (a
//! Redis reconnect). Local entries are keyed by it.
//!
//! Shared-tier entries are keyed by the *stored* generation (the database's counter, bumped by
//! triggers in the transaction of every catalog write), so an instance that missed an
//! announcement cannot read an entry filled before a write it knows of, and a write made
//! while Redis was down still moves every key on. An instance trusts the stored generation it
//! knows only while no write of its own is unobserved: after committing a write it reads the
//! database's counter again before using the shared tier (until then it reads the database),
//! so a staff member never reads back, from Redis, what they just replaced.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::Family;

/// The current generations of each family, shared by every cache of the process.
#[derive(Debug, Default)]
pub struct Generations {
    catalog: FamilyGenerations,
    accounts: FamilyGenerations,
    /// Woken when a generation needs observing (a local write, a flush).
    pending: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct FamilyGenerations {
    local: AtomicU64,
    shared: Mutex<SharedView>,
}

#[derive(Debug, Default, Clone, Copy)]
struct SharedView {
    /// The highest stored generation seen.
    known: u64,
    /// Whether `known` covers every write this process committed (and may key shared entries).
    trusted: bool,
    /// A local write not yet announced to the other instances.
    unannounced: bool,
}

/// What [`Generations::observe`] found to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observed {
    /// The stored generation is trusted from now on.
    pub trusted: bool,
    /// A local write was waiting to be announced; announce `known`.
    pub announce: bool,
    pub known: u64,
}

impl Generations {
    pub fn current(&self, family: Family) -> u64 {
        self.family(family).local.load(Ordering::Acquire)
    }

    /// A write to `family` committed in this process: every entry cached so far is
    /// unreachable, the stored generation is no longer trusted until observed again, and the
    /// other instances are to be told.
    pub fn bump(&self, family: Family) {
        let generations = self.family(family);
        {
            let mut shared = lock(&generations.shared);
            shared.trusted = false;
            shared.unannounced = true;
            generations.local.fetch_add(1, Ordering::AcqRel);
        }
        count(family, "write");
        self.pending.notify_one();
    }

    /// The stored generation to key shared entries of `family` with, when it is trusted.
    pub fn shared(&self, family: Family) -> Option<u64> {
        let shared = *lock(&self.family(family).shared);
        shared.trusted.then_some(shared.known)
    }

    /// `stored` was read from the database after `local_before` was read from
    /// [`Generations::current`]: when no write committed here since, `stored` covers every
    /// write this process made and the shared tier may be used again.
    pub fn observe(&self, family: Family, local_before: u64, stored: u64) -> Observed {
        let generations = self.family(family);
        let mut shared = lock(&generations.shared);
        shared.known = shared.known.max(stored);
        let mut announce = false;
        if generations.local.load(Ordering::Acquire) == local_before {
            shared.trusted = true;
            announce = std::mem::take(&mut shared.unannounced);
        }
        Observed { trusted: shared.trusted, announce, known: shared.known }
    }

    /// The poll read `stored` (after reading `local_before`) and it differs from what it saw
    /// before: someone wrote. Every entry of `family` becomes unreachable.
    pub fn advance(&self, family: Family, local_before: u64, stored: u64) {
        let generations = self.family(family);
        {
            let mut shared = lock(&generations.shared);
            let unchanged = generations.local.fetch_add(1, Ordering::AcqRel) == local_before;
            shared.known = shared.known.max(stored);
            shared.trusted = unchanged && !shared.unannounced;
        }
        count(family, "poll");
    }

    /// Another instance announced a write to `family`, read back as `stored` (none for
    /// families the database keeps no generation of). Every entry of `family` becomes
    /// unreachable; the shared tier stays usable when this process has no unobserved write.
    pub fn announced(&self, family: Family, stored: Option<u64>) {
        let generations = self.family(family);
        {
            let mut shared = lock(&generations.shared);
            generations.local.fetch_add(1, Ordering::AcqRel);
            if let Some(stored) = stored {
                shared.known = shared.known.max(stored);
            }
        }
        count(family, "announcement");
    }

    /// Announcements may have been lost (the subscription dropped, or came back): every entry
    /// of every family becomes unreachable and the stored generations must be read again.
    pub fn flush(&self) {
        for family in [Family::Catalog, Family::Accounts] {
            self.distrust(family);
        }
    }

    /// What `family`'s entries were filled under cannot be checked (the database's generation
    /// did not answer): every entry becomes unreachable and the stored generation must be read
    /// again before the shared tier is used.
    pub fn distrust(&self, family: Family) {
        let generations = self.family(family);
        {
            let mut shared = lock(&generations.shared);
            shared.trusted = false;
            generations.local.fetch_add(1, Ordering::AcqRel);
        }
        count(family, "flush");
        self.pending.notify_one();
    }

    /// Waits until a generation needs observing ([`Generations::bump`], [`Generations::flush`]).
    pub async fn wait_pending(&self) {
        self.pending.notified().await;
    }

    /// Whether a local write of `family` still waits to be announced.
    pub fn unannounced(&self, family: Family) -> bool {
        lock(&self.family(family).shared).unannounced
    }

    /// Marks the local writes of `family` announced (families without a stored generation).
    pub fn take_unannounced(&self, family: Family) -> bool {
        std::mem::take(&mut lock(&self.family(family).shared).unannounced)
    }

    fn family(&self, family: Family) -> &FamilyGenerations {
        match family {
            Family::Catalog => &self.catalog,
            Family::Accounts => &self.accounts,
        }
    }
}

fn count(family: Family, source: &'static str) {
    metrics::counter!("cache_invalidations_total", "family" => family.as_str(), "source" => source).increment(1);
}

/// The view is a few plain fields updated in one step each: a panic elsewhere cannot leave it
/// half-written, so a poisoned lock is still sound to use.
fn lock(view: &Mutex<SharedView>) -> std::sync::MutexGuard<'_, SharedView> {
    view.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_generation_is_trusted_only_after_an_observation_covers_every_local_write() {
        let generations = Generations::default();
        assert_eq!(generations.shared(Family::Catalog), None, "nothing observed yet");
        let before = generations.current(Family::Catalog);
        let observed = generations.observe(Family::Catalog, before, 7);
        assert_eq!(observed, Observed { trusted: true, announce: false, known: 7 });
        assert_eq!(generations.shared(Family::Catalog), Some(7));

        generations.bump(Family::Catalog);
        assert_eq!(generations.shared(Family::Catalog), None, "a local write is not covered by 7");
        // A read of the database that began before the write does not cover it.
        let observed = generations.observe(Family::Catalog, before, 8);
        assert!(!observed.trusted && !observed.announce);
        let after = generations.current(Family::Catalog);
        let observed = generations.observe(Family::Catalog, after, 8);
        assert_eq!(observed, Observed { trusted: true, announce: true, known: 8 });
        assert_eq!(generations.shared(Family::Catalog), Some(8));
        assert!(!generations.observe(Family::Catalog, after, 8).announce, "announced once");
    }

    #[test]
    fn an_announcement_or_a_poll_hides_local_entries_but_never_lowers_the_stored_generation() {
        let generations = Generations::default();
        let before = generations.current(Family::Catalog);
        generations.observe(Family::Catalog, before, 10);
        generations.announced(Family::Catalog, Some(12));
        assert_ne!(generations.current(Family::Catalog), before);
        assert_eq!(generations.shared(Family::Catalog), Some(12));
        generations.announced(Family::Catalog, Some(11));
        assert_eq!(generations.shared(Family::Catalog), Some(12), "late announcements do not go back");

        let seen = generations.current(Family::Catalog);
        generations.advance(Family::Catalog, seen, 13);
        assert_eq!(generations.shared(Family::Catalog), Some(13));
        // A local write between reading the local generation and the poll's answer.
        let seen = generations.current(Family::Catalog);
        generations.bump(Family::Catalog);
        generations.advance(Family::Catalog, seen, 14);
        assert_eq!(generations.shared(Family::Catalog), None);
    }

    #[test]
    fn a_flush_hides_everything_until_observed_again() {
        let generations = Generations::default();
        let catalog = generations.current(Family::Catalog);
        let accounts = generations.current(Family::Accounts);
        generations.observe(Family::Catalog, catalog, 3);
        generations.flush();
        assert_ne!(generations.current(Family::Catalog), catalog);
        assert_ne!(generations.current(Family::Accounts), accounts);
        assert_eq!(generations.shared(Family::Catalog), None);
        let now = generations.current(Family::Catalog);
        assert!(generations.observe(Family::Catalog, now, 3).trusted);
    }
}
