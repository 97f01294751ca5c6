//! Proposing: all client writes a region queued this iteration become
//! **one** raft entry (one proposal carrying the whole batch costs a
//! fraction of one proposal per write), and all its queued reads one
//! ReadIndex. Proposals are tracked by the index raft gave them and the
//! term they were proposed in: another leader may put its own entry at
//! that index.

use crate::error::RegionError;
use crate::kv::{Command, WriteBatch};
use crate::region::peer::{Proposal, ReadBatch, Region};

use super::{Shard, BUSY_BACKOFF_MS};

impl Shard {
    /// All client writes of a region that arrived this iteration → one entry;
    /// its reads → one ReadIndex.
    pub(super) fn propose(&mut self, walk: &[u64]) {
        let mut replies = vec![];
        for id in walk {
            let Some(r) = self.regions.get_mut(id) else { continue };
            // A leader with a proposal of its term still uncommitted holds new
            // writes until it commits: what arrives meanwhile goes into the
            // next entry together. Below load nothing waits (no proposal is
            // out); under load a region proposes about one entry per commit
            // round trip, and entries carry many writes instead of one each
            // (the per-entry cost — readies, messages, acks — is what grows
            // with the number of active regions).
            let holding = self.limits.batching
                && r.is_leader()
                && r.proposals
                    .last_key_value()
                    .is_some_and(|(index, p)| *index > r.raw.raft.raft_log.committed && p.term == r.raw.raft.term);
            if !r.pending_writes.is_empty() && !holding {
                let writes = std::mem::take(&mut r.pending_writes);
                r.pending_write_bytes = 0;
                let (requests, commands): (Vec<u64>, Vec<Command>) = writes.into_iter().unzip();
                let batch = WriteBatch { conf_ver: r.meta.conf_ver, version: r.meta.version, commands };
                let last_before = r.raw.raft.raft_log.last_index();
                // raft-rs would forward a follower's proposal to the leader, where we could not track it
                let proposed = if r.is_leader() {
                    r.raw.propose(vec![], batch.encode())
                } else {
                    Err(raft::Error::ProposalDropped)
                };
                match proposed {
                    Ok(()) => {
                        let index = r.raw.raft.raft_log.last_index();
                        assert_eq!(index, last_before + 1, "region {}: one proposal, one entry", r.id());
                        self.stats.proposals += 1;
                        self.stats.writes_proposed += requests.len() as u64;
                        if let Some(old) = r.proposals.insert(index, Proposal { term: r.term(), requests }) {
                            // an earlier term's proposal at this index can no longer commit
                            let err = RegionError::NotLeader { region: r.id(), leader: r.leader() };
                            replies.extend(old.requests.into_iter().map(|q| (q, Err(err.clone()))));
                        }
                    }
                    Err(e) => {
                        // dropped before it reached the log: definitely not applied
                        tracing::debug!(region = r.id(), "proposal dropped: {e}");
                        let err = if r.is_leader() {
                            // the leader's own bound (uncommitted bytes, a transfer in progress)
                            RegionError::ServerIsBusy { region: r.id(), backoff_ms: BUSY_BACKOFF_MS }
                        } else {
                            RegionError::NotLeader { region: r.id(), leader: r.leader() }
                        };
                        replies.extend(requests.into_iter().map(|q| (q, Err(err.clone()))));
                    }
                }
            }
            if !r.pending_reads.is_empty() && !r.is_leader() {
                let err = RegionError::NotLeader { region: r.id(), leader: r.leader() };
                replies.extend(std::mem::take(&mut r.pending_reads).into_iter().map(|(q, _)| (q, Err(err.clone()))));
            }
            // raft-rs drops a ReadIndex silently until the leader has committed in
            // its term: hold the reads until then
            if !r.pending_reads.is_empty() && r.raw.raft.commit_to_current_term() {
                let reads = std::mem::take(&mut r.pending_reads);
                let ctx = self.next_read_ctx;
                self.next_read_ctx += 1;
                r.raw.read_index(ctx.to_le_bytes().to_vec());
                r.read_batches.insert(ctx, ReadBatch { term: r.term(), issued_tick: self.ticks, reads });
            }
        }
        for (q, res) in replies {
            self.reply(q, res);
        }
    }
}

/// The region an admin request (a membership change, a split) is for, if
/// this peer leads it at the epoch the request was made for.
pub(super) fn admin_region(
    regions: &mut std::collections::BTreeMap<u64, Region>,
    region: u64,
    epoch: transport::Epoch,
) -> Result<&mut Region, RegionError> {
    let r = regions.get_mut(&region).ok_or(RegionError::RegionNotFound { region })?;
    if !r.is_leader() || r.fenced.is_some() {
        return Err(RegionError::NotLeader { region, leader: r.leader() });
    }
    if epoch != r.meta.epoch() {
        return Err(RegionError::epoch_not_match(&r.meta));
    }
    Ok(r)
}

/// Proposes one admin entry (`propose` appends it) and tracks it as
/// request `request`'s, answered when that entry applies; its index.
pub(super) fn propose_admin(
    r: &mut Region,
    request: u64,
    propose: impl FnOnce(&mut raft::RawNode<crate::region::RegionStorage>) -> raft::Result<()>,
) -> raft::Result<u64> {
    let last_before = r.raw.raft.raft_log.last_index();
    propose(&mut r.raw)?;
    let index = r.raw.raft.raft_log.last_index();
    assert_eq!(index, last_before + 1, "region {}: one proposal, one entry", r.id());
    let stale = r.proposals.insert(index, Proposal { term: r.term(), requests: vec![request] });
    assert!(stale.is_none(), "region {}: a leader's new entry at {index} had a proposal of its own", r.id());
    Ok(index)
}
