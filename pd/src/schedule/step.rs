//! One step of an operator: a single membership change or leadership
//! transfer, what the region's leader is asked to do for it, and how PD
//! sees from the leader's reports that it is done (TiKV PD's `OpStep`).

use crate::meta::{PeerInfo, PeerRole, RegionInfo};
use crate::protocol::DirectiveAction;

/// A step's time floor, when it is quick (a leadership transfer, a
/// promotion, a joint change: one raft round).
pub const STEP_FAST_MIN_MS: u64 = 10_000;
/// A step's time floor when it moves the region's data (a learner's snapshot).
pub const STEP_SLOW_MIN_MS: u64 = 60_000;
/// Time a quick step may take per MiB of the region (its log may be long).
pub const STEP_FAST_MS_PER_MIB: u64 = 600;
/// Time a data-moving step may take per MiB of the region (6 s/MiB, as
/// TiKV PD: a slow disk, many snapshots at once).
pub const STEP_SLOW_MS_PER_MIB: u64 = 6_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// A new replica joins as a learner, filled by a snapshot; done once it
    /// is no longer pending (the leader sees it keeping up).
    AddLearner(PeerInfo),
    /// A learner that caught up becomes a voter (one voter more).
    PromoteLearner(PeerInfo),
    /// One joint change: `promote` (a caught-up learner) in, `demote` out.
    EnterJoint {
        promote: PeerInfo,
        demote: PeerInfo,
    },
    TransferLeader {
        to_store: u64,
    },
    LeaveJoint,
    /// A peer goes (a learner by then, in a move).
    RemovePeer(PeerInfo),
}

/// What PD knows of a region at a report: its description, leader and the
/// peers its leader sees behind.
pub struct RegionState<'a> {
    pub region: &'a RegionInfo,
    pub leader: Option<PeerInfo>,
    pub pending_peers: &'a [u64],
}

impl Step {
    /// Whether the region as reported shows the step done.
    pub fn is_finished(&self, r: &RegionState) -> bool {
        let role = |p: &PeerInfo| r.region.peer(p.peer_id).map(|q| q.role);
        match self {
            Step::AddLearner(p) => role(p).is_some() && !r.pending_peers.contains(&p.peer_id),
            Step::PromoteLearner(p) => role(p) == Some(PeerRole::Voter),
            Step::EnterJoint { promote, demote } => {
                matches!(role(promote), Some(PeerRole::IncomingVoter | PeerRole::Voter))
                    && matches!(role(demote), Some(PeerRole::DemotingVoter | PeerRole::Learner) | None)
            }
            Step::TransferLeader { to_store } => r.leader.is_some_and(|l| l.store_id == *to_store),
            Step::LeaveJoint => !r.region.is_joint(),
            Step::RemovePeer(p) => role(p).is_none(),
        }
    }

    /// Whether the step changes the region's membership (its conf_ver).
    pub fn changes_membership(&self) -> bool {
        !matches!(self, Step::TransferLeader { .. })
    }

    /// Whether the step's change is made and only waits (a learner
    /// catching up): nothing to ask the leader again.
    pub fn is_waiting(&self, r: &RegionState) -> bool {
        matches!(self, Step::AddLearner(p) if r.region.peer(p.peer_id).is_some())
    }

    /// What the leader is asked to do.
    pub fn action(&self) -> DirectiveAction {
        match *self {
            Step::AddLearner(p) => DirectiveAction::AddLearner(p),
            Step::PromoteLearner(p) => DirectiveAction::PromoteLearner(p),
            Step::EnterJoint { promote, demote } => DirectiveAction::EnterJoint { promote, demote },
            Step::TransferLeader { to_store } => DirectiveAction::TransferLeader { to_store },
            Step::LeaveJoint => DirectiveAction::LeaveJoint,
            Step::RemovePeer(p) => DirectiveAction::RemovePeer(p),
        }
    }

    /// How long the step may take for a region of `region_bytes`.
    pub fn timeout_ms(&self, region_bytes: u64) -> u64 {
        let mib = region_bytes >> 20;
        match self {
            Step::AddLearner(_) => STEP_SLOW_MIN_MS.max(mib.saturating_mul(STEP_SLOW_MS_PER_MIB)),
            _ => STEP_FAST_MIN_MS.max(mib.saturating_mul(STEP_FAST_MS_PER_MIB)),
        }
    }

    /// For `ctl operators`.
    pub fn describe(&self) -> String {
        match self {
            Step::AddLearner(p) => format!("add learner {} on store {}", p.peer_id, p.store_id),
            Step::PromoteLearner(p) => format!("promote learner {} on store {}", p.peer_id, p.store_id),
            Step::EnterJoint { promote, demote } => format!(
                "enter joint: promote {} (store {}), demote {} (store {})",
                promote.peer_id, promote.store_id, demote.peer_id, demote.store_id
            ),
            Step::TransferLeader { to_store } => format!("transfer leadership to store {to_store}"),
            Step::LeaveJoint => "leave joint".into(),
            Step::RemovePeer(p) => format!("remove peer {} on store {}", p.peer_id, p.store_id),
        }
    }
}
