//! Fault injection for tests: drop, delay, duplicate, reorder, and partition
//! between chosen stores, every decision drawn from one seed so a failing run
//! replays exactly. Sans-IO and generic over what travels (a frame in the
//! TCP endpoint, a message in the engine's simulator): items go in with the
//! time they were sent and come out when they are due.
//!
//! Order: with no delay or reorder configured, items to one destination come
//! out in the order they went in (TCP's promise); a delayed item keeps its
//! place among items with the same due time; a reordered one is held back
//! past the delay window so later items overtake it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::seeded::SeededRng;

/// Most items held back at once; past it, new items are dropped (counted).
pub const FAULT_QUEUE_ITEMS_MAX: usize = 1 << 20;

/// What to inject, as probabilities per million items.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultConfig {
    pub seed: u64,
    pub drop_per_million: u32,
    pub duplicate_per_million: u32,
    pub reorder_per_million: u32,
    /// Every item is delayed by a uniform time in this range (zero: none).
    pub delay_min: Duration,
    pub delay_max: Duration,
}

/// What was injected so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultStats {
    pub passed: u64,
    pub dropped: u64,
    pub partitioned: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub overflowed: u64,
}

/// Seeded faults between stores.
pub struct Faults<T> {
    config: FaultConfig,
    rng: SeededRng,
    /// Cut links, each stored as (smaller, larger) store id: both directions.
    cut: BTreeSet<(u64, u64)>,
    /// Cut directions, as (from, to): the other direction still passes.
    cut_one_way: BTreeSet<(u64, u64)>,
    /// Items held until due, by (due, arrival number).
    held: BTreeMap<(Instant, u64), T>,
    arrivals: u64,
    stats: FaultStats,
}

fn link(a: u64, b: u64) -> (u64, u64) {
    (a.min(b), a.max(b))
}

impl<T: Clone> Faults<T> {
    pub fn new(config: FaultConfig) -> Self {
        assert!(config.delay_min <= config.delay_max, "delay range {:?}..{:?}", config.delay_min, config.delay_max);
        let rng = SeededRng::new(config.seed);
        Faults {
            config,
            rng,
            cut: BTreeSet::new(),
            cut_one_way: BTreeSet::new(),
            held: BTreeMap::new(),
            arrivals: 0,
            stats: FaultStats::default(),
        }
    }

    /// New rates from now on (the seed and what is held back stay).
    pub fn set_rates(&mut self, config: FaultConfig) {
        assert!(config.delay_min <= config.delay_max, "delay range {:?}..{:?}", config.delay_min, config.delay_max);
        self.config = FaultConfig { seed: self.config.seed, ..config };
    }

    /// Cuts the link between two stores (both directions) until healed.
    pub fn partition(&mut self, a: u64, b: u64) {
        self.cut.insert(link(a, b));
    }

    pub fn heal(&mut self, a: u64, b: u64) {
        self.cut.remove(&link(a, b));
    }

    /// Cuts what `from` sends to `to` only (a one-way partition: `to` still
    /// reaches `from`).
    pub fn partition_one_way(&mut self, from: u64, to: u64) {
        self.cut_one_way.insert((from, to));
    }

    pub fn heal_all(&mut self) {
        self.cut.clear();
        self.cut_one_way.clear();
    }

    /// Whether what `a` sends to `b` is cut.
    pub fn is_partitioned(&self, a: u64, b: u64) -> bool {
        self.cut.contains(&link(a, b)) || self.cut_one_way.contains(&(a, b))
    }

    pub fn stats(&self) -> &FaultStats {
        &self.stats
    }

    /// An item sent at `now` from one store to another.
    pub fn send(&mut self, now: Instant, from_store: u64, to_store: u64, item: T) {
        if self.is_partitioned(from_store, to_store) {
            self.stats.partitioned += 1;
            return;
        }
        if self.rng.chance(self.config.drop_per_million) {
            self.stats.dropped += 1;
            return;
        }
        let copies = if self.rng.chance(self.config.duplicate_per_million) {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            if self.held.len() >= FAULT_QUEUE_ITEMS_MAX {
                self.stats.overflowed += 1;
                return;
            }
            let mut due = now + self.delay();
            if self.rng.chance(self.config.reorder_per_million) {
                // held past the whole delay window: whatever is sent next overtakes it
                self.stats.reordered += 1;
                due += self.config.delay_max + Duration::from_millis(1) + self.delay();
            }
            self.arrivals += 1;
            self.held.insert((due, self.arrivals), item.clone());
        }
    }

    fn delay(&mut self) -> Duration {
        if self.config.delay_max.is_zero() {
            return Duration::ZERO;
        }
        let ns = self.rng.between(self.config.delay_min.as_nanos() as u64, self.config.delay_max.as_nanos() as u64);
        Duration::from_nanos(ns)
    }

    /// When the next held item is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.held.keys().next().map(|&(due, _)| due)
    }

    /// Items due at `now`, in delivery order.
    pub fn due(&mut self, now: Instant) -> Vec<T> {
        let mut out = vec![];
        while let Some(entry) = self.held.first_entry() {
            if entry.key().0 > now {
                break;
            }
            out.push(entry.remove());
            self.stats.passed += 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(config: FaultConfig) -> (Vec<u32>, FaultStats) {
        let t0 = Instant::now();
        let mut f = Faults::new(config);
        let mut out = vec![];
        for i in 0..10_000u32 {
            let now = t0 + Duration::from_micros(u64::from(i) * 10);
            f.send(now, 1, 2, i);
            out.extend(f.due(now));
        }
        out.extend(f.due(t0 + Duration::from_secs(3600)));
        (out, f.stats().clone())
    }

    #[test]
    fn without_faults_everything_passes_in_order() {
        let (out, stats) = run(FaultConfig::default());
        assert_eq!(out, (0..10_000).collect::<Vec<_>>());
        assert_eq!(stats.passed, 10_000);
    }

    #[test]
    fn the_same_seed_makes_the_same_decisions_and_another_seed_does_not() {
        let c = |seed| FaultConfig {
            seed,
            drop_per_million: 100_000,
            duplicate_per_million: 50_000,
            reorder_per_million: 50_000,
            delay_min: Duration::from_micros(0),
            delay_max: Duration::from_micros(500),
        };
        let (a, sa) = run(c(7));
        let (b, sb) = run(c(7));
        assert_eq!((a.clone(), sa.clone()), (b, sb));
        let (other, _) = run(c(8));
        assert_ne!(a, other);
        // the rates are what was asked for, within sampling noise
        assert!((800..1_200).contains(&sa.dropped), "{sa:?}");
        assert!((300..700).contains(&sa.duplicated), "{sa:?}");
        assert!(sa.reordered > 300, "{sa:?}");
        assert_eq!(a.len() as u64, 10_000 - sa.dropped + sa.duplicated);
        assert!(a.windows(2).any(|w| w[0] > w[1]), "something was reordered");
    }

    #[test]
    fn a_partition_drops_exactly_the_items_between_the_cut_stores_both_ways() {
        let t0 = Instant::now();
        let mut f = Faults::new(FaultConfig::default());
        f.partition(2, 1);
        for (from, to, item) in [(1, 2, "a"), (2, 1, "b"), (1, 3, "c"), (3, 2, "d")] {
            f.send(t0, from, to, item);
        }
        assert_eq!(f.due(t0), vec!["c", "d"]);
        assert_eq!(f.stats().partitioned, 2);
        f.heal(1, 2);
        f.send(t0, 1, 2, "e");
        assert_eq!(f.due(t0), vec!["e"]);
    }

    #[test]
    fn a_one_way_partition_drops_one_direction_until_healed() {
        let t0 = Instant::now();
        let mut f = Faults::new(FaultConfig::default());
        f.partition_one_way(1, 2);
        for (from, to, item) in [(1, 2, "a"), (2, 1, "b"), (1, 3, "c")] {
            f.send(t0, from, to, item);
        }
        assert_eq!(f.due(t0), vec!["b", "c"]);
        assert!(f.is_partitioned(1, 2) && !f.is_partitioned(2, 1));
        f.heal_all();
        f.send(t0, 1, 2, "d");
        assert_eq!(f.due(t0), vec!["d"]);
    }

    #[test]
    fn delayed_items_wait_until_due() {
        let t0 = Instant::now();
        let d = Duration::from_millis(5);
        let mut f = Faults::new(FaultConfig { delay_min: d, delay_max: d, ..Default::default() });
        f.send(t0, 1, 2, 1);
        assert_eq!(f.due(t0), Vec::<i32>::new());
        assert_eq!(f.next_due(), Some(t0 + d));
        assert_eq!(f.due(t0 + d), vec![1]);
    }
}
