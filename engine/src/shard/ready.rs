//! Raft's Readies: a leader's messages go to the outboxes at once (it may
//! replicate before its own fsync), a received snapshot is installed,
//! ReadIndex answers are matched to their reads, entries and HardState
//! become region writes for the persist batch (`persist.rs`), persisted
//! messages wait for that batch, and committed entries are applied
//! (`apply.rs`). Messages are enveloped per peer and batched per
//! destination (store, shard); a `MsgSnapshot` leaves on the snapshot
//! stream with its file instead.

use protobuf::Message as _;
use raft::eraftpb::{self, MessageType};
use transport::{Destination, Envelope, Peer, Target};

use crate::error::RegionError;
use crate::region::wal_convert::entry_to_wal;
use crate::snapshot::SnapshotId;

use super::{redraw_election_timeout, Output, Shard, ENTRY_OVERHEAD_BYTES};

impl Shard {
    pub(super) fn handle_readies(&mut self, walk: &[u64]) {
        for &id in walk {
            if self.regions.contains_key(&id) {
                self.handle_ready(id);
            }
        }
    }

    fn handle_ready(&mut self, id: u64) {
        let r = self.regions.get_mut(&id).expect("listed");
        if !r.raw.has_ready() {
            return;
        }
        let mut rd = r.raw.ready();
        self.send(id, rd.take_messages());
        let mut writes = vec![wal::RegionWrite::default()];
        if !rd.snapshot().is_empty() {
            let (write, replies) = self.install_snapshot(id, rd.snapshot());
            writes[0] = write;
            for (q, res) in replies {
                self.reply(q, res);
            }
        }
        let r = self.regions.get_mut(&id).expect("listed");
        for rs in rd.take_read_states() {
            match <[u8; 8]>::try_from(rs.request_ctx.as_slice()) {
                Ok(ctx) if r.read_batches.contains_key(&u64::from_le_bytes(ctx)) => {
                    r.ready_reads.push((u64::from_le_bytes(ctx), rs.index))
                }
                _ => tracing::debug!(region = id, "a ReadIndex answer for no pending read"),
            }
        }
        let committed = rd.take_committed_entries();
        // a follower catching up can get many appends in one Ready: split its
        // entries over region writes that each fit a WAL record; the HardState
        // rides on the last (a durable prefix without it is harmless)
        if !rd.entries().is_empty() {
            r.raw.mut_store().append(rd.entries());
            let mut bytes = 0;
            for e in rd.entries() {
                let size = e.data.len() + ENTRY_OVERHEAD_BYTES;
                let last = writes.last_mut().unwrap();
                if !last.entries.is_empty() && bytes + size > self.limits.write_bytes_max {
                    writes.push(wal::RegionWrite::default());
                    bytes = 0;
                }
                bytes += size;
                writes.last_mut().unwrap().entries.push(entry_to_wal(e));
            }
        }
        if let Some(hs) = rd.hs() {
            r.raw.mut_store().set_hard_state(hs.clone());
            r.hard_state_unstaged = true;
        }
        if rd.must_sync() {
            // (a commit index that moved alone waits: `stage_hard_state`)
            super::persist::stage_hard_state(r, writes.last_mut().unwrap());
        }
        let messages = rd.take_persisted_messages();
        let role_changed = rd.ss().is_some() || rd.hs().is_some_and(|hs| hs.term != r.timeout_term);
        let number = rd.number();
        r.raw.advance_append_async(rd);
        if role_changed {
            redraw_election_timeout(&mut self.rng, r);
        }
        if r.term() != r.timeout_term {
            r.timeout_term = r.term();
        }
        // raft forgets pending ReadIndex requests when the term or the role
        // changes: answer those it had not confirmed (confirmed ones are safe to serve)
        if role_changed && !r.read_batches.is_empty() {
            let err = RegionError::NotLeader { region: id, leader: r.leader() };
            let confirmed: Vec<u64> = r.ready_reads.iter().map(|(c, _)| *c).collect();
            let unconfirmed: Vec<u64> = r.read_batches.keys().filter(|c| !confirmed.contains(c)).copied().collect();
            for ctx in unconfirmed {
                for (q, _) in r.read_batches.remove(&ctx).unwrap().reads {
                    self.outputs.push(Output::Reply { request: q, result: Err(err.clone()) });
                }
            }
        }
        self.persist_ready(id, writes, number, messages);
        self.apply(id, committed);
    }

    /// Queues a region's raft messages for their peers' stores and shards;
    /// a `MsgSnapshot` instead goes out with its file on the snapshot stream
    /// (and the file is kept while that send runs).
    pub(super) fn send(&mut self, id: u64, messages: Vec<eraftpb::Message>) {
        let Some(r) = self.regions.get(&id) else { return };
        for m in messages {
            let Some(to) = r.meta.peer(m.to).or_else(|| r.learned_peers.get(&m.to)).copied() else {
                tracing::warn!(region = id, to = m.to, "message to a peer not in the region's meta");
                continue;
            };
            let envelope = Envelope {
                region_id: id,
                start_key: r.key_range.0.clone(),
                end_key: r.key_range.1.clone(),
                epoch: r.meta.epoch(),
                // (every region of this shard has its own peer here)
                from: Peer { peer_id: r.peer_id, store_id: self.store_id, shard: self.shard },
                to: Target { peer_id: to.peer_id, store_id: to.store_id, shard: to.shard },
                message: m.write_to_bytes().expect("a raft message encodes").into(),
            };
            let dest = Destination { store_id: to.store_id, shard: to.shard };
            if m.get_msg_type() == MessageType::MsgSnapshot {
                // raft asked storage for it: a durable snapshot whose file is kept
                // until a newer one's record is durable and this send has ended
                let meta = m.get_snapshot().get_metadata();
                let snap = SnapshotId { region: id, index: meta.index, term: meta.term };
                self.stats.snapshots_sent += 1;
                self.snapshot_files.send_started(to.peer_id, snap);
                self.outputs.push(Output::SendSnapshot { to: dest, envelope, id: snap });
                continue;
            }
            if let Err(e) = self.outboxes.push(dest, &envelope) {
                tracing::warn!(region = id, "message dropped: {e}");
            }
            if !self.limits.batching {
                // measuring what batching buys: this message is a frame of its own
                self.outputs.push(Output::Frames(self.outboxes.flush()));
            }
        }
    }

    pub(super) fn flush_outboxes(&mut self) {
        let frames = self.outboxes.flush();
        if !frames.is_empty() {
            self.outputs.push(Output::Frames(frames));
        }
    }
}
