//! Per-destination batching: during a loop iteration the shard pushes every
//! outgoing raft message into the outbox of its destination (store, shard);
//! `flush` then makes one frame per destination — one write, whatever the
//! number of regions. Bounded: a destination whose outbox is full, or whose
//! connection has too many bytes in flight, loses the message and is
//! reported unreachable (raft retransmits); the shard loop never waits.

use std::collections::BTreeMap;

use crate::envelope::{encode_raft_batch, Envelope, EnvelopeError};
use crate::frame::{encode_frame, FrameKind, FRAME_BYTES_MAX, FRAME_HEADER_BYTES};

/// Most messages one outbox holds before it drops.
pub const OUTBOX_MESSAGES_MAX: usize = 64 << 10;
/// Most bytes one outbox holds: one frame's worth.
pub const OUTBOX_BYTES_MAX: usize = FRAME_BYTES_MAX - 4;

/// A shard of a store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Destination {
    pub store_id: u64,
    pub shard: u16,
}

/// Why a message was not queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    #[error("outbox of store {} shard {} is full: message dropped, destination unreachable", .0.store_id, .0.shard)]
    Full(Destination),
}

/// One frame ready to be written to a destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlushedFrame {
    pub to: Destination,
    /// Regions whose messages it carries (for `report_unreachable` if it is lost).
    pub regions: Vec<u64>,
    pub messages: usize,
    pub bytes: Vec<u8>,
}

/// Batching figures since creation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutboxStats {
    pub frames: u64,
    pub messages: u64,
    pub bytes: u64,
    pub dropped: u64,
}

impl OutboxStats {
    pub fn messages_per_frame(&self) -> f64 {
        if self.frames == 0 {
            0.0
        } else {
            self.messages as f64 / self.frames as f64
        }
    }
}

#[derive(Default)]
struct Outbox {
    messages: Vec<Envelope>,
    bytes: usize,
}

/// Every destination's outbox of one shard. Ordered by destination so a
/// flush is deterministic (simulations replay exactly).
#[derive(Default)]
pub struct Outboxes {
    boxes: BTreeMap<Destination, Outbox>,
    stats: OutboxStats,
}

impl Outboxes {
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues a message for the next flush.
    pub fn push(&mut self, to: Destination, env: Envelope) -> Result<(), PushError> {
        env.check_size()?;
        let b = self.boxes.entry(to).or_default();
        let bytes = env.encoded_bytes();
        if b.messages.len() >= OUTBOX_MESSAGES_MAX || b.bytes + bytes > OUTBOX_BYTES_MAX {
            self.stats.dropped += 1;
            return Err(PushError::Full(to));
        }
        b.bytes += bytes;
        b.messages.push(env);
        Ok(())
    }

    /// One frame per destination with messages, in destination order.
    pub fn flush(&mut self) -> Vec<FlushedFrame> {
        let mut out = vec![];
        for (&to, b) in self.boxes.iter_mut().filter(|(_, b)| !b.messages.is_empty()) {
            let mut payload = Vec::with_capacity(4 + b.bytes);
            encode_raft_batch(&mut payload, b.messages.iter());
            let mut bytes = Vec::with_capacity(FRAME_HEADER_BYTES + payload.len());
            encode_frame(&mut bytes, FrameKind::Raft, &[&payload]);
            let mut regions: Vec<u64> = b.messages.iter().map(|e| e.region_id).collect();
            regions.sort_unstable();
            regions.dedup();
            self.stats.frames += 1;
            self.stats.messages += b.messages.len() as u64;
            self.stats.bytes += bytes.len() as u64;
            out.push(FlushedFrame { to, regions, messages: b.messages.len(), bytes });
            b.messages.clear();
            b.bytes = 0;
        }
        out
    }

    pub fn stats(&self) -> &OutboxStats {
        &self.stats
    }
}
