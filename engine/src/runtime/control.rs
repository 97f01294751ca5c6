//! The store's control plane inside its process: what passes between the
//! PD worker thread (`runtime::pd_worker`) and the shards' executors, on
//! bounded channels — no lock shared with a shard loop, no connection from
//! the store to itself.
//!
//! - **Leader reports**, shard → PD worker: every region heartbeat interval
//!   a shard publishes the reports of the regions it leads. Each is the
//!   shard's whole set, so only the newest matters: the channel holds
//!   `LEADER_REPORTS_QUEUED_MAX`, and a shard that finds it full (the
//!   worker is slow, or PD is down) drops the older, unread report for the
//!   new one. The shard never waits.
//! - **Directives**, PD worker → shard: a directive whose epoch matches
//!   what the region's leader reported (`runtime::directives`) enters the
//!   shard hosting that leader as an `Input::TransferLeader` or
//!   `Input::ChangePeer`, with a request id at or above
//!   `INTERNAL_REQUEST_MIN`: the shard task logs its reply instead of
//!   routing it to a client connection. A full channel drops the directive
//!   (logged); PD hands each out once, and its scheduler issues again what
//!   did not happen. The shard takes them at its next loop iteration — at
//!   the latest its next raft tick (nothing wakes its executor from this
//!   thread; a directive is not in a hurry).
//! - **Asks**, shard → PD worker (`PdAsk`): a leader whose region passed the
//!   split size asks for the new region's ids; the worker gets them from
//!   PD's allocator and hands the split back as a directive
//!   (`Input::Split`). A follower that heard from no leader for a while asks
//!   whether it is still a member; the worker asks PD for the region and
//!   hands the answer back the same way (`Input::MembershipChecked`). A full
//!   channel drops the ask: the region asks again later.

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};

use crate::shard::{Input, LeaderReport};

/// Leader reports one shard has published and the PD worker not yet read.
pub const LEADER_REPORTS_QUEUED_MAX: usize = 1;
/// Directives waiting for one shard.
pub const DIRECTIVES_QUEUED_MAX: usize = 1024;
/// Asks waiting for the PD worker, from all shards.
pub const PD_ASKS_QUEUED_MAX: usize = 256;
/// Request ids from here up are the store's own (directives), never a
/// client's: the shard task numbers client requests from 1.
pub const INTERNAL_REQUEST_MIN: u64 = 1 << 63;

// PD answers a batch of region reports with at most one directive per region
const _: () = assert!(DIRECTIVES_QUEUED_MAX >= pd::protocol::REGION_REPORTS_MAX, "one answer fits an idle shard");

/// Whether a shard's request id is the store's own rather than a client's.
pub fn is_internal(request: u64) -> bool {
    request >= INTERNAL_REQUEST_MIN
}

/// Where a shard takes PD's directives from, as inputs.
pub type DirectiveReceiver = Receiver<Input>;
/// Where the PD worker puts directives for one shard.
pub type DirectiveSender = Sender<Input>;

/// A shard's end of its leader reports.
pub struct LeaderReportSender {
    tx: Sender<Vec<LeaderReport>>,
    /// The same channel's receiving side: to drop the older report when full.
    older: Receiver<Vec<LeaderReport>>,
}

impl LeaderReportSender {
    /// Publishes the shard's current reports; never waits. A report the PD
    /// worker has not read yet is dropped for this newer one.
    pub fn publish(&self, reports: Vec<LeaderReport>) {
        match self.tx.try_send(reports) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(reports)) => {
                let _ = self.older.try_recv();
                // (this shard is the only sender: there is room now, unless the worker is gone)
                let _ = self.tx.try_send(reports);
            }
        }
    }
}

/// The PD worker's end of one shard's leader reports.
pub struct LeaderReportReceiver(Receiver<Vec<LeaderReport>>);

impl LeaderReportReceiver {
    /// The newest reports the shard published since the last call, if any.
    pub fn take_newest(&self) -> Option<Vec<LeaderReport>> {
        self.0.try_iter().last()
    }
}

/// What a shard asks of PD through its store's PD worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PdAsk {
    /// A leader's ask for the ids of a split (`Output::AskSplit`).
    Split {
        shard: u16,
        region: u64,
        epoch: transport::Epoch,
        split_key: Vec<u8>,
        /// Peer ids wanted (one per peer of the region).
        peers: usize,
    },
    /// A silent follower's ask whether it is still a member
    /// (`Output::CheckMembership`).
    Membership { shard: u16, region: u64, peer_id: u64 },
}

/// One shard's ends of the control plane.
pub struct ShardEnds {
    pub leader_reports: LeaderReportSender,
    pub directives: DirectiveReceiver,
    pub pd_asks: Sender<PdAsk>,
}

/// The PD worker's ends, by shard index.
pub struct PdEnds {
    pub leader_reports: Vec<LeaderReportReceiver>,
    pub directives: Vec<DirectiveSender>,
    pub pd_asks: Receiver<PdAsk>,
}

/// The channels between a PD worker and `shards` shards.
pub fn channels(shards: u16) -> (PdEnds, Vec<ShardEnds>) {
    let (asks_tx, asks_rx) = bounded(PD_ASKS_QUEUED_MAX);
    let mut pd = PdEnds { leader_reports: vec![], directives: vec![], pd_asks: asks_rx };
    let mut ends = vec![];
    for _ in 0..shards {
        let (reports_tx, reports_rx) = bounded(LEADER_REPORTS_QUEUED_MAX);
        let (directives_tx, directives_rx) = bounded(DIRECTIVES_QUEUED_MAX);
        let leader_reports = LeaderReportSender { tx: reports_tx, older: reports_rx.clone() };
        ends.push(ShardEnds { leader_reports, directives: directives_rx, pd_asks: asks_tx.clone() });
        pd.leader_reports.push(LeaderReportReceiver(reports_rx));
        pd.directives.push(directives_tx);
    }
    (pd, ends)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::region::meta::{PeerMeta, RegionMeta};

    fn report(region: u64) -> LeaderReport {
        let leader = PeerMeta::voter(region + 100, 1, 0);
        LeaderReport {
            meta: RegionMeta {
                id: region,
                start_key: vec![],
                end_key: vec![],
                conf_ver: 1,
                version: 1,
                peers: vec![leader],
                max_peer_id: leader.peer_id,
            },
            leader,
            term: 1,
            approximate_bytes: 0,
            approximate_keys: 0,
            applied_bytes_total: 0,
            pending_peers: vec![],
        }
    }

    fn ids(reports: Option<Vec<LeaderReport>>) -> Option<Vec<u64>> {
        reports.map(|rs| rs.iter().map(|r| r.meta.id).collect())
    }

    #[test]
    fn a_shard_publishing_faster_than_the_worker_reads_drops_the_older_report_and_never_waits() {
        let (pd, mut shards) = channels(2);
        let shard1 = shards.pop().unwrap();
        assert_eq!(ids(pd.leader_reports[1].take_newest()), None);
        for n in 1..=5 {
            shard1.leader_reports.publish(vec![report(n), report(n + 10)]);
        }
        assert_eq!(ids(pd.leader_reports[1].take_newest()), Some(vec![5, 15]), "the newest, whole");
        assert_eq!(ids(pd.leader_reports[1].take_newest()), None, "taken once");
        assert_eq!(ids(pd.leader_reports[0].take_newest()), None, "another shard's channel");
        drop(pd);
        shard1.leader_reports.publish(vec![report(6)]); // the worker is gone: no panic, no wait
    }

    #[test]
    fn internal_request_ids_are_apart_from_a_shards_client_ids() {
        assert!(!is_internal(1) && !is_internal(INTERNAL_REQUEST_MIN - 1));
        assert!(is_internal(INTERNAL_REQUEST_MIN) && is_internal(u64::MAX));
    }
}
