//! Applying committed entries: each is checked against the region's epoch
//! *at apply time* (a write proposed before a split or a membership change
//! and applied after it must not land in the wrong region), applied to the
//! state machine, and answered to its clients if this peer proposed it in
//! that term. Reads whose ReadIndex is now applied are served here too.
//!
//! Entry dispatch: a normal entry is a client write batch (or a new
//! leader's empty entry); a conf change goes to `membership.rs`. An entry
//! that does not decode fences the region on this replica (`fence.rs`). An
//! admin command (a normal entry tagged as one: `kv::admin`) goes to the file
//! of its own, `split.rs`.

use raft::eraftpb::{self, EntryType};

use crate::error::RegionError;
use crate::kv::admin::is_admin;
use crate::kv::StateMachine as _;
use crate::kv::{Applied, WriteBatchRef};
use crate::region::peer::Region;

use super::{Query, Response, Shard};

impl Shard {
    /// Applies committed entries, answers their clients, serves reads whose
    /// ReadIndex is now applied.
    pub(super) fn apply(&mut self, id: u64, committed: Vec<eraftpb::Entry>) {
        let mut replies = vec![];
        let mut splits = vec![];
        let mut removed = false;
        let mut gone = vec![];
        let mut undecodable = None;
        let r = self.regions.get_mut(&id).expect("listed");
        if r.fenced.is_some() || r.destroy_deferred || r.removal_applied {
            // it applies nothing more (fence.rs; a removed peer waiting for its
            // split children, or to be told it may go: removal.rs)
            return;
        }
        for e in committed {
            assert_eq!(e.index, r.applied + 1, "region {id}: applying {} after {}", e.index, r.applied);
            let applied = match e.get_entry_type() {
                EntryType::EntryNormal if e.data.is_empty() => Ok(vec![]), // a new leader's empty entry
                EntryType::EntryNormal if is_admin(&e.data) => {
                    super::split::apply_admin(r, &e.data).map(|(result, applied)| {
                        if let Some((mut write, split)) = applied {
                            // (with the commit index that makes a restart replay it)
                            super::persist::stage_hard_state(r, &mut write);
                            self.staged.push(id, write);
                            splits.push(split);
                        }
                        vec![result]
                    })
                }
                EntryType::EntryNormal => apply_batch(r, &e.data).inspect(|_| {
                    r.applied_bytes_since_snapshot += e.data.len();
                    r.applied_bytes_total += e.data.len() as u64;
                }),
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                    let before = r.meta.peers.clone();
                    super::membership::apply_conf_change(r, &e).map(|(result, write)| {
                        removed = r.meta.peer(r.peer_id).is_none();
                        if r.is_leader() {
                            // (a removed learner never campaigns: it would not hear of its removal)
                            gone.extend(before.into_iter().filter(|p| r.meta.peer(p.peer_id).is_none()));
                        }
                        // (its own removal is recorded with its tombstone, in one write;
                        // until then, the commit index that makes a restart apply it again)
                        let mut w = write.filter(|_| !removed).unwrap_or_default();
                        super::persist::stage_hard_state(r, &mut w);
                        if !w.is_empty() {
                            self.staged.push(id, w);
                        }
                        vec![result]
                    })
                }
            };
            let results = match applied {
                Ok(results) => results,
                Err(why) => {
                    undecodable = Some((e.index, why));
                    break;
                }
            };
            // proposals of earlier terms beyond this entry can never commit now
            // (log terms only grow): they were not applied
            let stale: Vec<u64> =
                r.proposals.iter().filter(|(i, p)| **i > e.index && p.term < e.term).map(|(i, _)| *i).collect();
            for i in stale {
                let err = RegionError::NotLeader { region: id, leader: r.leader() };
                replies.extend(r.proposals.remove(&i).unwrap().requests.into_iter().map(|q| (q, Err(err.clone()))));
            }
            if let Some(p) = r.proposals.remove(&e.index) {
                if p.term == e.term && results.is_empty() {
                    // raft turned our membership change into an empty entry (one was pending)
                    let reason = "another membership change was in progress".to_string();
                    replies.extend(
                        p.requests
                            .into_iter()
                            .map(|q| (q, Err(RegionError::Refused { region: id, reason: reason.clone() }))),
                    );
                } else if p.term == e.term {
                    assert_eq!(results.len(), p.requests.len(), "region {id}: entry {} is our batch", e.index);
                    replies.extend(p.requests.into_iter().zip(results));
                } else {
                    // another leader's entry took our index: ours was never applied
                    let err = RegionError::NotLeader { region: id, leader: r.leader() };
                    replies.extend(p.requests.into_iter().map(|q| (q, Err(err.clone()))));
                }
            }
            r.applied = e.index;
            if r.split_proposed.is_some_and(|i| i <= e.index) {
                r.split_proposed = None; // (applied, refused, or replaced by another leader's entry)
            }
            self.stats.entries_applied += 1;
            if removed {
                break; // nothing after its own removal concerns this peer
            }
        }
        for peer in gone {
            self.send_removal_notice(id, peer);
        }
        // (the children first: a parent removed or fenced by a later entry
        // still had them, and its removal waits until they are recorded)
        for split in splits {
            self.finish_split(id, split);
        }
        if removed || undecodable.is_some() {
            for (q, res) in replies {
                self.reply(q, res);
            }
            match undecodable {
                Some((index, why)) => self.fence(id, index, why),
                // (the region may need its vote again: removal.rs)
                None => self.await_removal_word(id),
            }
            return;
        }
        let r = self.regions.get_mut(&id).expect("listed");
        advance_raft_applied(r);
        serve_reads(r, &mut replies);
        for (q, res) in replies {
            self.reply(q, res);
        }
    }
}

/// Serves the reads whose ReadIndex the state machine has now applied.
fn serve_reads(r: &mut Region, replies: &mut Vec<(u64, Result<Response, RegionError>)>) {
    let applied = r.applied;
    let mut still = vec![];
    for (ctx, index) in std::mem::take(&mut r.ready_reads) {
        if index > applied {
            still.push((ctx, index));
            continue;
        }
        for (q, query) in r.read_batches.remove(&ctx).map(|b| b.reads).unwrap_or_default() {
            if !r.meta.contains(super::split::query_key(&query)) {
                // a split applied since it arrived took its key
                replies.push((q, Err(RegionError::epoch_not_match(&r.meta))));
                continue;
            }
            let response = match query {
                Query::Get(key) => Response::Value(r.kv.get(&key).map(<[u8]>::to_vec)),
                Query::Scan { start, end, limit } => {
                    // within the region: a client scanning further moves on to the next region
                    let end = match (end.is_empty(), r.meta.end_key.is_empty()) {
                        (true, _) => r.meta.end_key.clone(),
                        (false, true) => end,
                        (false, false) => end.min(r.meta.end_key.clone()),
                    };
                    Response::Rows(r.kv.scan(&start, &end, limit))
                }
            };
            replies.push((q, Ok(response)));
        }
    }
    r.ready_reads = still;
}

/// Tells raft how far the state machine has applied: an installed
/// snapshot's index only once raft has it persisted (raft checks that).
pub(super) fn advance_raft_applied(r: &mut Region) {
    let to = r.applied.min(r.raw.raft.raft_log.persisted);
    if to > r.raw.raft.raft_log.applied {
        r.raw.advance_apply_to(to);
    }
}

/// Applies one write batch, checking its epoch against the region's now;
/// `Err` (nothing applied) if the entry does not decode.
fn apply_batch(r: &mut Region, data: &[u8]) -> Result<Vec<Result<Response, RegionError>>, String> {
    let batch = WriteBatchRef::decode(data).map_err(|e| format!("not a write batch: {e}"))?;
    if batch.version != r.meta.version {
        // proposed before a split this entry now follows: refuse every command
        let err = RegionError::epoch_not_match(&r.meta);
        return Ok(batch.commands.iter().map(|_| Err(err.clone())).collect());
    }
    Ok(batch
        .commands
        .iter()
        .map(|c| {
            if !r.meta.contains(c.key()) {
                return Err(RegionError::KeyNotInRegion {
                    key: c.key().to_vec(),
                    region: r.id(),
                    start: r.meta.start_key.clone(),
                    end: r.meta.end_key.clone(),
                });
            }
            Ok(match r.kv.apply(*c) {
                Applied::Done => Response::Done,
                Applied::Cas(ok) => Response::Cas(ok),
            })
        })
        .collect())
}
