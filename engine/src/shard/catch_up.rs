//! Needs-catch-up: a replica that may have forgotten what it acknowledged
//! takes no part in elections until a leader has made its log whole again.
//!
//! The WAL sets its needs-catch-up flag when a recovery dropped records —
//! only a tolerant open does (`ringraft server --wal-recovery tolerant`):
//! a strict one refuses to open instead — and keeps it in every checkpoint
//! until the shard says its regions caught up. A dropped record cannot say
//! which regions it held, so every region of the shard is suspect. Such a
//! replica may lack entries it acknowledged: if it voted, a candidate
//! lacking a committed entry could win with its vote, and if it led, it
//! could overwrite one. And a log reaching back before a dropped record
//! may be stitched from two histories (the record overwrote entries the
//! records before it hold), which the log matching property below cannot
//! see through: such a region restarts from its snapshot, its log dropped
//! (`recover.rs`). Each suspect region here
//!
//! - neither votes (vote and pre-vote requests are dropped, as from a
//!   replica that is down) nor campaigns (it is not ticked, and a leader's
//!   `MsgTimeoutNow` is dropped);
//! - starts one term past every term it may have acknowledged or voted in
//!   (`bar`: its recovered term, its log's last term, the vote table's),
//!   with no vote: the leader of `bar`, if any, steps down on its first
//!   answer (it never sends this replica a commit index past its shortened
//!   log), so the next
//!   leader is elected without this replica — by a majority of the others,
//!   which holds every committed entry as long as no other replica lost
//!   one too;
//! - is caught up once an entry of a term above `bar` is durable in its log
//!   — it came from that term's leader, and the log matching property makes
//!   everything before it the leader's log, which holds every entry
//!   committed before that term (a replica whose lost vote was in a higher
//!   term than a leader's gets it back from the vote table, so a leader of a
//!   lower term can never pass for one).
//!
//! When the last suspect region is caught up the shard emits
//! `Output::CaughtUp` and the driver clears the WAL's flag (durable with the
//! next segment's checkpoint; a crash before that only repeats the catch-up).
//! A peer created on this shard (a leader's message names a peer here) is
//! suspect too while the shard is flagged, and always when the vote table
//! has its region although the WAL does not (the WAL lost it whole; boot
//! keeps such entries in the table) and that entry is past the region's
//! initial state — a term past it, or a vote (`table_says_active`) —, with
//! the table's term in `bar`. A
//! region with no other voter is never suspect: no one could catch it up.
//! A fenced region (`fence.rs`) never catches up: the flag stays until that
//! replica is replaced.

use super::{Output, Shard};

impl Shard {
    /// Marks every region suspect (`boot`, when the WAL says it needs
    /// catch-up), each moved one term past the one it recovered.
    pub(super) fn start_catch_up(&mut self) {
        self.needs_catch_up = true;
        let ids: Vec<u64> = self.regions.keys().copied().collect();
        for id in ids {
            self.suspect(id);
        }
        tracing::warn!(
            shard = self.shard,
            regions = self.regions.len(),
            "the WAL lost records: this shard's regions neither vote nor campaign until a leader has caught them up"
        );
    }

    /// Whether the vote table says region `id` did anything the WAL may have
    /// lost: a term past the initial one, or a vote. A replica whose entry
    /// is still its initial state (a split child's `RAFT_INIT_TERM`, no
    /// vote; a new peer's term 0) acknowledged nothing — every entry it
    /// could acknowledge is of a later term, which its HardState, and the
    /// table with it, would name — so a WAL that lost its records lost
    /// nothing it answered for, and it need not wait for a leader that may
    /// need its vote to exist (a region left with two voters, or two of
    /// three replicas back from crashes at once).
    pub(super) fn table_says_active(&self, id: u64) -> bool {
        self.votes.votes.get(&id).is_some_and(|&(term, vote)| term > super::RAFT_INIT_TERM || vote != 0)
    }

    /// Marks region `id` suspect: one term past every term it may have
    /// acknowledged or voted in (its recovered term, its log's last term,
    /// the vote table's), with no vote. A region with no other voter is
    /// left alone: no one could catch it up, and what it lost is lost.
    pub(super) fn suspect(&mut self, id: u64) {
        let table_term = self.votes.votes.get(&id).map_or(0, |&(term, _)| term);
        let Some(r) = self.regions.get_mut(&id) else { return };
        if !r.meta.has_voter_off(self.store_id) && r.meta.peer_on(self.store_id).is_some() {
            tracing::error!(region = id, "the WAL lost records of a region with no other replica: they are lost");
            return;
        }
        let bar = r.raw.raft.term.max(table_term).max(r.raw.raft.raft_log.last_term());
        r.raw.raft.become_follower(bar + 1, raft::INVALID_ID);
        r.catching_up = Some(bar);
        self.dirty.insert(id);
    }

    /// Region `id` after one of its readies became durable: caught up once
    /// its durable log ends in an entry of a term above its bar.
    pub(super) fn check_caught_up(&mut self, id: u64) {
        let Some(r) = self.regions.get_mut(&id) else { return };
        let Some(bar) = r.catching_up else { return };
        let log = &r.raw.raft.raft_log;
        if log.term(log.persisted).is_ok_and(|t| t > bar) {
            r.catching_up = None;
            tracing::info!(region = id, peer = r.peer_id, term = r.raw.raft.term, "region caught up: it votes again");
            self.end_catch_up_if_done();
        }
    }

    /// Once no region is suspect, the WAL's flag may go.
    pub(super) fn end_catch_up_if_done(&mut self) {
        if self.needs_catch_up && self.regions.values().all(|r| r.catching_up.is_none()) {
            self.needs_catch_up = false;
            tracing::info!(shard = self.shard, "every region caught up: the WAL's needs-catch-up flag is cleared");
            self.outputs.push(Output::CaughtUp);
        }
    }

    /// The regions of this shard that may not vote yet.
    pub fn catching_up_regions(&self) -> Vec<u64> {
        self.regions.values().filter(|r| r.catching_up.is_some()).map(|r| r.id()).collect()
    }
}
