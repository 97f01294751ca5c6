//! An operator: the steps that take one region from its replicas to the
//! ones PD wants (TiKV PD's operators), built here, advanced by the
//! region leader's reports (`controller.rs`).
//!
//! A move is add learner → (leadership away from the moved peer, when it
//! leads) → enter joint (promote the learner, demote the old voter) →
//! leave joint → remove the old peer, now a learner. The voter count never
//! drops below what it was, and in the joint state both the old and the new
//! voters must each have a quorum.
//!
//! Abandoning: until the joint change is made, an operator that times out
//! or finds its region changed under it is dropped, and the learner it left
//! behind is removed by the replica checker (the region keeps its original
//! replicas). Once the joint change is made, it has no timeout: it always
//! completes leave-joint (the checker takes over a joint region without
//! an operator, after a PD restart).

use crate::meta::{Epoch, PeerInfo, PeerRole, RegionInfo};
use crate::protocol::DirectiveAction;

use super::step::{RegionState, Step};

/// A step's directive is sent again at most this often while it is not
/// done (it may have been lost, or refused for a reason that passes).
pub const STEP_RESEND_MS: u64 = 2_000;

/// Why an operator exists (counted per kind in the metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum OperatorKind {
    /// By hand (`ctl move`, `ctl drain-store`).
    AdminMove,
    /// A replica on a down or draining store goes elsewhere.
    ReplaceReplica,
    /// A region with fewer voters than `--replicas` gets one.
    AddReplica,
    /// A region with more voters than `--replicas` loses one.
    RemoveReplica,
    /// A learner no operator drives goes.
    RemoveOrphanLearner,
    /// A joint region no operator drives leaves the joint state.
    LeaveJoint,
    BalanceRegion,
    BalanceLeader,
}

impl OperatorKind {
    pub const ALL: [OperatorKind; 8] = [
        OperatorKind::AdminMove,
        OperatorKind::ReplaceReplica,
        OperatorKind::AddReplica,
        OperatorKind::RemoveReplica,
        OperatorKind::RemoveOrphanLearner,
        OperatorKind::LeaveJoint,
        OperatorKind::BalanceRegion,
        OperatorKind::BalanceLeader,
    ];

    pub fn name(self) -> &'static str {
        match self {
            OperatorKind::AdminMove => "admin-move",
            OperatorKind::ReplaceReplica => "replace-replica",
            OperatorKind::AddReplica => "add-replica",
            OperatorKind::RemoveReplica => "remove-replica",
            OperatorKind::RemoveOrphanLearner => "remove-orphan-learner",
            OperatorKind::LeaveJoint => "leave-joint",
            OperatorKind::BalanceRegion => "balance-region",
            OperatorKind::BalanceLeader => "balance-leader",
        }
    }

    /// Whether it outranks (and may replace) an operator of kind `other`.
    pub fn outranks(self, other: OperatorKind) -> bool {
        self == OperatorKind::AdminMove && other != OperatorKind::AdminMove
    }
}

/// What an operator wants after a report of its region.
#[derive(Debug, PartialEq, Eq)]
pub enum Advance {
    /// Ask the leader for this.
    Send(DirectiveAction),
    /// Its current step is under way.
    Wait,
    Finished,
    /// Dropped, for this reason.
    Abandoned(String),
}

#[derive(Clone, Debug)]
pub struct Operator {
    pub id: u64,
    pub region_id: u64,
    pub kind: OperatorKind,
    /// The region's epoch when the operator was made.
    pub epoch: Epoch,
    pub steps: Vec<Step>,
    pub current: usize,
    pub created_ms: u64,
    pub step_started_ms: u64,
    /// When the current step's directive last went out.
    last_sent_ms: Option<u64>,
    /// The region's size when made (the steps' timeouts scale with it).
    pub region_bytes: u64,
}

impl Operator {
    pub fn new(kind: OperatorKind, region: &RegionInfo, region_bytes: u64, steps: Vec<Step>, now_ms: u64) -> Operator {
        assert!(!steps.is_empty(), "an operator has steps");
        Operator {
            id: 0,
            region_id: region.id,
            kind,
            epoch: region.epoch,
            steps,
            current: 0,
            created_ms: now_ms,
            step_started_ms: now_ms,
            last_sent_ms: None,
            region_bytes,
        }
    }

    /// The stores the operator adds a replica to (each receives a snapshot).
    pub fn target_stores(&self) -> impl Iterator<Item = u64> + '_ {
        self.steps[self.current..].iter().filter_map(|s| match s {
            Step::AddLearner(p) => Some(p.store_id),
            _ => None,
        })
    }

    /// Whether its joint change is made: from then on it must finish.
    fn joint_entered(&self) -> bool {
        self.steps[..self.current].iter().any(|s| matches!(s, Step::EnterJoint { .. }))
    }

    /// Moves past every step the report shows done, then says what to do.
    pub fn advance(&mut self, r: &RegionState, now_ms: u64) -> Advance {
        while self.current < self.steps.len() && self.steps[self.current].is_finished(r) {
            self.current += 1;
            self.step_started_ms = now_ms;
            self.last_sent_ms = None;
        }
        if self.current == self.steps.len() {
            return Advance::Finished;
        }
        let step = self.steps[self.current];
        // (membership steps done each moved conf_ver by one; a learner added
        // and catching up: its change is made, not finished)
        let waiting = step.is_waiting(r);
        let done = self.steps[..self.current].iter().filter(|s| s.changes_membership()).count();
        let made = done as u64 + u64::from(waiting);
        if r.region.epoch.conf_ver > self.epoch.conf_ver + made && !self.joint_entered() {
            return Advance::Abandoned(format!(
                "the region's membership changed under it (conf_ver {} → {})",
                self.epoch.conf_ver, r.region.epoch.conf_ver
            ));
        }
        let limit = step.timeout_ms(self.region_bytes);
        if now_ms.saturating_sub(self.step_started_ms) > limit && !self.joint_entered() {
            return Advance::Abandoned(format!("\"{}\" took over {} s", step.describe(), limit / 1000));
        }
        if waiting || self.last_sent_ms.is_some_and(|at| now_ms.saturating_sub(at) < STEP_RESEND_MS) {
            return Advance::Wait;
        }
        self.last_sent_ms = Some(now_ms);
        match leader_in_the_way(&step, r) {
            // (leadership came to the peer the step takes out of the voters
            // since the operator was made: the leader would refuse; it hands
            // over first, then the step goes on)
            Some(to_store) => Advance::Send(DirectiveAction::TransferLeader { to_store }),
            None => Advance::Send(step.action()),
        }
    }
}

/// Where leadership must go before `step` can be made, if its leader is
/// the peer the step takes out of the voters (a leader never does that to
/// itself): a voter that stays, on another store.
fn leader_in_the_way(step: &Step, r: &RegionState) -> Option<u64> {
    let leader = r.leader.and_then(|l| r.region.peer(l.peer_id))?;
    let in_the_way = match step {
        Step::LeaveJoint => leader.role == PeerRole::DemotingVoter,
        Step::RemovePeer(p) => p.peer_id == leader.peer_id,
        _ => false,
    };
    in_the_way.then(|| lasting_voter_off(r.region, leader.store_id)).flatten().map(|p| p.store_id)
}

/// A voter of `region` that stays one and is not on `avoid`: where
/// leadership goes when its leader's peer is moved or demoted.
fn lasting_voter_off(region: &RegionInfo, avoid: u64) -> Option<&PeerInfo> {
    region.peers.iter().find(|p| p.role == PeerRole::Voter && p.store_id != avoid)
}

/// The steps that move the voter on `from` to a new learner `to` (shard
/// and id chosen by the caller): learner, leadership away if `from`
/// leads, joint change, leave, removal. `None` if `from` holds no voter.
pub fn move_steps(region: &RegionInfo, leader: Option<PeerInfo>, from: u64, to: PeerInfo) -> Option<Vec<Step>> {
    let old = *region.peer_on(from).filter(|p| p.role == PeerRole::Voter)?;
    let learner = PeerInfo { role: PeerRole::Learner, ..to };
    let mut steps = vec![Step::AddLearner(learner)];
    if leader.is_some_and(|l| l.store_id == from) {
        // (to an old voter, before the joint change, as TiKV PD does: the
        // new peer may not be ready to lead)
        let stays = lasting_voter_off(region, from)?;
        steps.push(Step::TransferLeader { to_store: stays.store_id });
    }
    steps.push(Step::EnterJoint { promote: learner, demote: old });
    steps.push(Step::LeaveJoint);
    steps.push(Step::RemovePeer(PeerInfo { role: PeerRole::Learner, ..old }));
    Some(steps)
}

/// The steps that add a voter: a learner first, promoted once caught up.
pub fn add_voter_steps(to: PeerInfo) -> Vec<Step> {
    let learner = PeerInfo { role: PeerRole::Learner, ..to };
    vec![Step::AddLearner(learner), Step::PromoteLearner(learner)]
}

/// The steps that remove `peer` (leadership away first if it leads).
pub fn remove_steps(region: &RegionInfo, leader: Option<PeerInfo>, peer: PeerInfo) -> Option<Vec<Step>> {
    let mut steps = vec![];
    if leader.is_some_and(|l| l.peer_id == peer.peer_id) {
        steps.push(Step::TransferLeader { to_store: lasting_voter_off(region, peer.store_id)?.store_id });
    }
    steps.push(Step::RemovePeer(peer));
    Some(steps)
}

/// The steps that take a joint region out of it (leadership away from a
/// demoted leader first).
pub fn leave_joint_steps(region: &RegionInfo, leader: Option<PeerInfo>) -> Option<Vec<Step>> {
    let mut steps = vec![];
    if let Some(l) = leader.and_then(|l| region.peer(l.peer_id).copied()) {
        if l.role == PeerRole::DemotingVoter {
            steps.push(Step::TransferLeader { to_store: lasting_voter_off(region, l.store_id)?.store_id });
        }
    }
    steps.push(Step::LeaveJoint);
    Some(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(peers: Vec<PeerInfo>, conf_ver: u64) -> RegionInfo {
        RegionInfo {
            id: 7,
            start_key: vec![],
            end_key: vec![],
            epoch: Epoch { conf_ver, version: 1 },
            max_peer_id: peers.iter().map(|p| p.peer_id).max().unwrap(),
            peers,
        }
    }

    fn state<'a>(r: &'a RegionInfo, leader: u64, pending: &'a [u64]) -> RegionState<'a> {
        RegionState { region: r, leader: r.peer_on(leader).copied(), pending_peers: pending }
    }

    fn with(p: PeerInfo, role: PeerRole) -> PeerInfo {
        PeerInfo { role, ..p }
    }

    /// A move of the leader's replica walks its steps as the reports show
    /// each done; re-sends are spaced; the learner waits while pending.
    #[test]
    fn a_move_of_the_leaders_replica_advances_step_by_step_with_the_reports() {
        let (a, b, c) = (PeerInfo::voter(1, 1, 0), PeerInfo::voter(2, 2, 0), PeerInfo::voter(3, 3, 0));
        let d = PeerInfo::voter(4, 4, 0);
        let r1 = region(vec![a, b, c], 1);
        let steps = move_steps(&r1, Some(a), 1, d).unwrap();
        assert_eq!(steps[1], Step::TransferLeader { to_store: 2 }, "leadership leaves first: {steps:?}");
        let mut op = Operator::new(OperatorKind::AdminMove, &r1, 0, steps, 0);
        let learner = with(d, PeerRole::Learner);
        assert_eq!(op.advance(&state(&r1, 1, &[]), 0), Advance::Send(DirectiveAction::AddLearner(learner)));
        assert_eq!(op.advance(&state(&r1, 1, &[]), 100), Advance::Wait, "spaced re-sends");
        let r2 = region(vec![a, b, c, learner], 2);
        assert_eq!(op.advance(&state(&r2, 1, &[4]), 5_000), Advance::Wait, "a pending learner is waited for");
        assert!(matches!(
            op.advance(&state(&r2, 1, &[]), 6_000),
            Advance::Send(DirectiveAction::TransferLeader { .. })
        ));
        let sent = op.advance(&state(&r2, 2, &[]), 7_000);
        assert!(matches!(sent, Advance::Send(DirectiveAction::EnterJoint { .. })), "{sent:?}");
        let r3 = region(vec![with(a, PeerRole::DemotingVoter), b, c, with(d, PeerRole::IncomingVoter)], 3);
        assert_eq!(op.advance(&state(&r3, 2, &[]), 8_000), Advance::Send(DirectiveAction::LeaveJoint));
        let r4 = region(vec![with(a, PeerRole::Learner), b, c, d], 4);
        let sent = op.advance(&state(&r4, 2, &[]), 9_000);
        assert_eq!(sent, Advance::Send(DirectiveAction::RemovePeer(with(a, PeerRole::Learner))));
        let r5 = region(vec![b, c, d], 5);
        assert_eq!(op.advance(&state(&r5, 2, &[]), 10_000), Advance::Finished);
    }

    /// Before its joint change an operator is dropped when it times out or
    /// another change lands; after it, it always goes on.
    #[test]
    fn an_operator_is_abandoned_only_before_its_joint_change() {
        let (a, b, c) = (PeerInfo::voter(1, 1, 0), PeerInfo::voter(2, 2, 0), PeerInfo::voter(3, 3, 0));
        let d = PeerInfo::voter(4, 4, 0);
        let r1 = region(vec![a, b, c], 1);
        let mut op = Operator::new(OperatorKind::AdminMove, &r1, 0, move_steps(&r1, Some(a), 2, d).unwrap(), 0);
        assert!(matches!(op.advance(&state(&r1, 1, &[]), 0), Advance::Send(_)));
        let late = op.advance(&state(&r1, 1, &[]), 61_000);
        assert!(matches!(late, Advance::Abandoned(ref why) if why.contains("took over 60 s")), "{late:?}");

        let mut op = Operator::new(OperatorKind::AdminMove, &r1, 0, move_steps(&r1, Some(a), 2, d).unwrap(), 0);
        let someone_else = region(vec![a, b], 2);
        assert!(matches!(op.advance(&state(&someone_else, 1, &[]), 10), Advance::Abandoned(_)));

        let mut op = Operator::new(OperatorKind::AdminMove, &r1, 0, move_steps(&r1, Some(a), 2, d).unwrap(), 0);
        let joint = region(vec![a, with(b, PeerRole::DemotingVoter), c, with(d, PeerRole::IncomingVoter)], 3);
        assert_eq!(op.advance(&state(&joint, 1, &[]), 10), Advance::Send(DirectiveAction::LeaveJoint));
        assert_eq!(op.advance(&state(&joint, 1, &[]), 1_000_000), Advance::Send(DirectiveAction::LeaveJoint));
    }

    /// Leadership that came to the demoted peer after the operator was made
    /// is handed over before the leave, and the operator goes on.
    #[test]
    fn a_leave_whose_leader_is_now_the_demoted_peer_hands_leadership_over_first() {
        let (a, b, c, d) =
            (PeerInfo::voter(1, 1, 0), PeerInfo::voter(2, 2, 0), PeerInfo::voter(3, 3, 0), PeerInfo::voter(4, 4, 0));
        let r1 = region(vec![a, b, c], 1);
        let mut op = Operator::new(OperatorKind::AdminMove, &r1, 0, move_steps(&r1, Some(a), 2, d).unwrap(), 0);
        let joint = region(vec![a, with(b, PeerRole::DemotingVoter), c, with(d, PeerRole::IncomingVoter)], 3);
        let sent = op.advance(&state(&joint, 2, &[]), 10);
        assert_eq!(sent, Advance::Send(DirectiveAction::TransferLeader { to_store: 1 }));
        assert_eq!(op.advance(&state(&joint, 1, &[]), 3_000), Advance::Send(DirectiveAction::LeaveJoint));
    }

    #[test]
    fn leaving_a_joint_state_moves_leadership_off_a_demoted_leader_first() {
        let (a, b, c, d) =
            (PeerInfo::voter(1, 1, 0), PeerInfo::voter(2, 2, 0), PeerInfo::voter(3, 3, 0), PeerInfo::voter(4, 4, 0));
        let joint = region(vec![with(a, PeerRole::DemotingVoter), b, c, with(d, PeerRole::IncomingVoter)], 3);
        let steps = leave_joint_steps(&joint, Some(with(a, PeerRole::DemotingVoter))).unwrap();
        assert_eq!(steps, vec![Step::TransferLeader { to_store: 2 }, Step::LeaveJoint]);
        assert_eq!(leave_joint_steps(&joint, Some(b)).unwrap(), vec![Step::LeaveJoint]);
    }
}
