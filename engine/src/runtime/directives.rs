//! Carrying out PD's directives. A directive names the region epoch it was
//! computed for; the store checks it against the meta its leader reported
//! in the same heartbeat and ignores it if the region has moved past it.
//! What remains enters the shard hosting that leader as the input an
//! operator's admin request would become (`Input::TransferLeader`, or
//! `Input::ChangePeer` with the directive's epoch, which the shard checks
//! again when it proposes; a split the leader asked for comes back the same
//! way, as `Input::Split`), through that shard's bounded directive channel
//! (`runtime::control`) and with an internal request id: the shard task
//! logs the outcome (`log_outcome`). Handing a directive over never waits,
//! so a heartbeat never waits for a change to be applied; a directive that
//! does not fit is dropped (logged): PD hands each out once, and a
//! scheduler issues again what did not happen.

use crossbeam_channel::TrySendError;
use pd::protocol::{Directive, DirectiveAction};

use crate::error::RegionError;
use crate::region::meta::{PeerChange, PeerMeta, RegionMeta};
use crate::runtime::control::{DirectiveSender, DIRECTIVES_QUEUED_MAX, INTERNAL_REQUEST_MIN};
use crate::shard::{Input, Response, SplitRequest};

/// What a directive asks of a region's leader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DirectiveOp {
    TransferLeader {
        to_peer: u64,
    },
    ChangePeer(PeerChange),
    /// A split the leader asked for, with the ids PD allocated.
    Split(SplitRequest),
    /// PD's answer to a silent follower's ask: the region as PD has it.
    MembershipChecked {
        peer_id: u64,
        current: Option<Box<RegionMeta>>,
        reported: bool,
    },
}

impl DirectiveOp {
    /// The shard input carrying it out on `region` at `epoch`, as request `request`.
    pub fn into_input(self, request: u64, region: u64, epoch: transport::Epoch) -> Input {
        match self {
            DirectiveOp::TransferLeader { to_peer } => Input::TransferLeader { request, region, to_peer },
            DirectiveOp::ChangePeer(change) => Input::ChangePeer { request, region, epoch, change },
            DirectiveOp::Split(split) => Input::Split { request, region, epoch, split },
            DirectiveOp::MembershipChecked { peer_id, current, reported } => {
                Input::MembershipChecked { region, peer_id, current, reported }
            }
        }
    }
}

/// What `d` asks of `meta`'s leader (`meta` as the leader reported it), or
/// why the directive is ignored.
pub fn directive_op(d: &Directive, meta: &RegionMeta) -> Result<DirectiveOp, String> {
    if meta.id != d.region_id {
        return Err(format!("a directive for region {} checked against region {}", d.region_id, meta.id));
    }
    let now = meta.epoch();
    if now.conf_ver != d.epoch.conf_ver || now.version != d.epoch.version {
        return Err(format!(
            "region {}: the directive is for epoch {}/{}, the region is at {}/{}",
            meta.id, d.epoch.conf_ver, d.epoch.version, now.conf_ver, now.version
        ));
    }
    Ok(match &d.action {
        DirectiveAction::TransferLeader { to_store } => {
            let to = meta
                .peer_on(*to_store)
                .ok_or_else(|| format!("region {}: no peer on store {to_store} to hand leadership to", meta.id))?;
            DirectiveOp::TransferLeader { to_peer: to.peer_id }
        }
        DirectiveAction::AddPeer(p) => DirectiveOp::ChangePeer(PeerChange::AddVoter(PeerMeta::from(*p))),
        DirectiveAction::RemovePeer(p) => DirectiveOp::ChangePeer(PeerChange::RemovePeer(PeerMeta::from(*p))),
        DirectiveAction::AddLearner(p) => DirectiveOp::ChangePeer(PeerChange::AddLearner(PeerMeta::from(*p))),
        DirectiveAction::PromoteLearner(p) => DirectiveOp::ChangePeer(PeerChange::PromoteLearner(PeerMeta::from(*p))),
        DirectiveAction::EnterJoint { promote, demote } => DirectiveOp::ChangePeer(PeerChange::EnterJoint {
            promote: PeerMeta::from(*promote),
            demote: PeerMeta::from(*demote),
        }),
        DirectiveAction::LeaveJoint => DirectiveOp::ChangePeer(PeerChange::LeaveJoint),
    })
}

/// Hands directives to this store's shards.
pub struct DirectiveRunner {
    /// By shard index.
    shards: Vec<DirectiveSender>,
    /// The number of the next directive (its request id is `INTERNAL_REQUEST_MIN` + it).
    next: u64,
}

impl DirectiveRunner {
    pub fn new(shards: Vec<DirectiveSender>) -> DirectiveRunner {
        DirectiveRunner { shards, next: 1 }
    }

    /// Hands over `work`: each directive with its region's reported meta and
    /// the shard of the leader that reported it. Returns how many were handed over.
    pub fn run(&mut self, work: Vec<(Directive, RegionMeta, u16)>) -> usize {
        let mut handed = 0;
        for (d, meta, shard) in work {
            let op = match directive_op(&d, &meta) {
                Ok(op) => op,
                Err(why) => {
                    tracing::info!("PD directive ignored: {why}");
                    continue;
                }
            };
            handed += usize::from(self.hand(op, meta.id, meta.epoch(), shard));
        }
        handed
    }

    /// Hands `op` on `region` (at `epoch`) to shard `shard`; whether it went.
    pub fn hand(&mut self, op: DirectiveOp, region: u64, epoch: transport::Epoch, shard: u16) -> bool {
        let Some(queue) = self.shards.get(usize::from(shard)) else {
            tracing::warn!(region, shard, "PD directive dropped: the leader's shard is not on this store");
            return false;
        };
        let directive = self.next;
        self.next += 1;
        let described = format!("{op:?}");
        match queue.try_send(op.into_input(INTERNAL_REQUEST_MIN + directive, region, epoch)) {
            Ok(()) => {
                tracing::info!(region, shard, directive, op = described, "PD directive handed to the leader's shard");
                true
            }
            Err(TrySendError::Full(_)) => {
                tracing::warn!(
                    region,
                    shard,
                    "PD directive dropped: {DIRECTIVES_QUEUED_MAX} already wait for the shard"
                );
                false
            }
            Err(TrySendError::Disconnected(_)) => {
                tracing::warn!(region, shard, "PD directive dropped: the shard has stopped");
                false
            }
        }
    }
}

/// Logs how a directive ended; `request`: its internal request id. The
/// shard task calls it for each reply to an internal request.
pub fn log_outcome(shard: u16, request: u64, result: &Result<Response, RegionError>) {
    let directive = request - INTERNAL_REQUEST_MIN;
    match result {
        Ok(_) => tracing::info!(shard, directive, "PD directive carried out"),
        Err(e) => tracing::warn!(shard, directive, "PD directive refused: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::control::{channels, is_internal};

    fn meta() -> RegionMeta {
        RegionMeta {
            id: 7,
            start_key: vec![],
            end_key: vec![],
            conf_ver: 3,
            version: 2,
            peers: vec![PeerMeta::voter(10, 1, 0), PeerMeta::voter(11, 2, 0)],
            max_peer_id: 11,
        }
    }

    fn directive(conf_ver: u64, version: u64, action: DirectiveAction) -> Directive {
        Directive { region_id: 7, epoch: pd::Epoch { conf_ver, version }, action }
    }

    #[test]
    fn a_directive_for_the_current_epoch_becomes_the_admin_op_and_a_stale_one_is_ignored() {
        let m = meta();
        let to2 = DirectiveAction::TransferLeader { to_store: 2 };
        assert_eq!(directive_op(&directive(3, 2, to2.clone()), &m), Ok(DirectiveOp::TransferLeader { to_peer: 11 }));
        assert!(directive_op(&directive(2, 2, to2.clone()), &m).unwrap_err().contains("epoch 2/2"));
        assert!(directive_op(&directive(3, 1, to2), &m).is_err(), "an older version: before a split");
        let nowhere = DirectiveAction::TransferLeader { to_store: 9 };
        assert!(directive_op(&directive(3, 2, nowhere), &m).unwrap_err().contains("no peer on store 9"));
        let p = pd::PeerInfo::voter(12, 3, 1);
        assert_eq!(
            directive_op(&directive(3, 2, DirectiveAction::AddPeer(p)), &m),
            Ok(DirectiveOp::ChangePeer(PeerChange::AddVoter(PeerMeta::voter(12, 3, 1))))
        );
    }

    #[test]
    fn a_directive_enters_the_leaders_shard_as_an_internal_input_and_a_full_queue_drops_without_waiting() {
        let (pd, shards) = channels(2);
        let mut runner = DirectiveRunner::new(pd.directives);
        let p = pd::PeerInfo::voter(12, 3, 1);
        let work = vec![
            (directive(3, 2, DirectiveAction::TransferLeader { to_store: 2 }), meta(), 1),
            (directive(3, 2, DirectiveAction::AddPeer(p)), meta(), 1),
            (directive(2, 2, DirectiveAction::TransferLeader { to_store: 2 }), meta(), 1), // stale
            (directive(3, 2, DirectiveAction::TransferLeader { to_store: 2 }), meta(), 5), // no such shard
        ];
        assert_eq!(runner.run(work), 2);
        assert!(shards[0].directives.is_empty());
        let got: Vec<Input> = shards[1].directives.try_iter().collect();
        match &got[..] {
            [Input::TransferLeader { request: a, region: 7, to_peer: 11 }, Input::ChangePeer { request: b, region: 7, epoch, change: PeerChange::AddVoter(added) }] =>
            {
                assert!(is_internal(*a) && is_internal(*b) && a != b);
                assert_eq!((epoch.conf_ver, epoch.version, added.peer_id), (3, 2, 12));
            }
            _ => panic!("{} inputs, not the two directives", got.len()),
        }
        let fill = (0..DIRECTIVES_QUEUED_MAX + 5)
            .map(|_| (directive(3, 2, DirectiveAction::TransferLeader { to_store: 2 }), meta(), 0))
            .collect();
        assert_eq!(runner.run(fill), DIRECTIVES_QUEUED_MAX, "the rest dropped, not waited for");
    }
}
