//! The operators under way: at most one per region, advanced by each report
//! of its leader (TiKV PD's operator controller), with limits on how many
//! run at once and how many snapshots each store receives for them.

use std::collections::BTreeMap;

use crate::protocol::{DirectiveAction, OperatorView};

use super::operator::{Advance, Operator, OperatorKind};
use super::step::{RegionState, Step};

/// Most operators under way at once.
pub const OPERATORS_MAX: usize = 1024;
/// Most operators under way that add a replica to one store (each sends
/// it a snapshot): a new or recovering store is filled at a pace it can take.
pub const SNAPSHOTS_PER_STORE_MAX: usize = 4;

/// How operators ended, by kind (for the metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OperatorCounts {
    pub started: u64,
    pub finished: u64,
    pub abandoned: u64,
    pub replaced: u64,
}

#[derive(Default)]
pub struct Operators {
    by_region: BTreeMap<u64, Operator>,
    next_id: u64,
    pub counts: BTreeMap<&'static str, OperatorCounts>,
    /// Learners operators added that caught up: each was sent a snapshot.
    pub learners_caught_up: u64,
}

impl Operators {
    pub fn get(&self, region_id: u64) -> Option<&Operator> {
        self.by_region.get(&region_id)
    }

    pub fn len(&self) -> usize {
        self.by_region.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_region.is_empty()
    }

    /// Operators under way that add a replica to `store_id`.
    pub fn snapshots_to(&self, store_id: u64) -> usize {
        self.by_region.values().filter(|o| o.target_stores().any(|s| s == store_id)).count()
    }

    /// Starts `op`, unless its region has one already (an admin move
    /// replaces any other) or a limit says not now; its id, or why not.
    pub fn add(&mut self, mut op: Operator) -> Result<u64, String> {
        if let Some(cur) = self.by_region.get(&op.region_id) {
            if !op.kind.outranks(cur.kind) {
                return Err(format!("region {} has operator {} ({}) under way", op.region_id, cur.id, cur.kind.name()));
            }
        }
        if self.by_region.len() >= OPERATORS_MAX && !self.by_region.contains_key(&op.region_id) {
            return Err(format!("OPERATORS_MAX ({OPERATORS_MAX}) operators are under way"));
        }
        if let Some(store) = op.target_stores().find(|s| self.snapshots_to(*s) >= SNAPSHOTS_PER_STORE_MAX) {
            return Err(format!(
                "store {store} already receives SNAPSHOTS_PER_STORE_MAX ({SNAPSHOTS_PER_STORE_MAX}) replicas"
            ));
        }
        self.next_id += 1;
        op.id = self.next_id;
        tracing::info!(
            operator = op.id,
            region = op.region_id,
            kind = op.kind.name(),
            steps = ?op.steps.iter().map(|s| s.describe()).collect::<Vec<_>>(),
            "operator started"
        );
        self.count(op.kind).started += 1;
        if let Some(old) = self.by_region.insert(op.region_id, op) {
            tracing::info!(operator = old.id, region = old.region_id, "operator replaced by an admin move");
            self.count(old.kind).replaced += 1;
        }
        Ok(self.next_id)
    }

    /// A report of `region`'s leader: the operator moves on, and what its
    /// leader is asked to do now (if anything).
    pub fn on_report(&mut self, r: &RegionState, now_ms: u64) -> Option<DirectiveAction> {
        let op = self.by_region.get_mut(&r.region.id)?;
        let before = op.current;
        let advance = op.advance(r, now_ms);
        let caught_up = op.steps[before..op.current].iter().filter(|s| matches!(s, Step::AddLearner(_))).count();
        self.learners_caught_up += caught_up as u64;
        match advance {
            Advance::Send(action) => Some(action),
            Advance::Wait => None,
            Advance::Finished => {
                let op = self.by_region.remove(&r.region.id).expect("just advanced");
                tracing::info!(operator = op.id, region = op.region_id, kind = op.kind.name(), "operator finished");
                self.count(op.kind).finished += 1;
                None
            }
            Advance::Abandoned(why) => {
                let op = self.by_region.remove(&r.region.id).expect("just advanced");
                tracing::warn!(
                    operator = op.id,
                    region = op.region_id,
                    kind = op.kind.name(),
                    "operator abandoned: {why}"
                );
                self.count(op.kind).abandoned += 1;
                None
            }
        }
    }

    /// Drops the operator of a region PD no longer has (a newer report
    /// replaced it).
    pub fn forget(&mut self, region_id: u64) {
        if let Some(op) = self.by_region.remove(&region_id) {
            tracing::info!(operator = op.id, region = region_id, "operator dropped: its region was replaced");
            self.count(op.kind).abandoned += 1;
        }
    }

    /// Operators of `kind` under way.
    pub fn count_of(&self, kind: OperatorKind) -> usize {
        self.by_region.values().filter(|o| o.kind == kind).count()
    }

    /// What the operators under way will change in each store's replica
    /// count (+1 a learner to add, −1 a peer to remove) and leader count
    /// (a transfer's target +1, the region's current leader store −1).
    pub fn projected(&self, leaders: &BTreeMap<u64, u64>) -> (BTreeMap<u64, i64>, BTreeMap<u64, i64>) {
        let (mut replicas, mut led) = (BTreeMap::new(), BTreeMap::new());
        for o in self.by_region.values() {
            for step in &o.steps[o.current..] {
                match step {
                    Step::AddLearner(p) => *replicas.entry(p.store_id).or_default() += 1,
                    Step::RemovePeer(p) => *replicas.entry(p.store_id).or_default() -= 1,
                    Step::TransferLeader { to_store } => {
                        *led.entry(*to_store).or_default() += 1;
                        if let Some(from) = leaders.get(&o.region_id) {
                            *led.entry(*from).or_default() -= 1;
                        }
                    }
                    _ => {}
                }
            }
        }
        (replicas, led)
    }

    pub fn views(&self, now_ms: u64) -> Vec<OperatorView> {
        self.by_region
            .values()
            .map(|o| OperatorView {
                id: o.id,
                region_id: o.region_id,
                kind: o.kind.name().to_string(),
                steps: o.steps.iter().map(|s| s.describe()).collect(),
                current: o.current as u32,
                age_ms: now_ms.saturating_sub(o.created_ms),
                step_age_ms: now_ms.saturating_sub(o.step_started_ms),
            })
            .collect()
    }

    fn count(&mut self, kind: OperatorKind) -> &mut OperatorCounts {
        self.counts.entry(kind.name()).or_default()
    }
}
