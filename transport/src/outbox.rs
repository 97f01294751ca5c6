//! Per-destination batching: during a loop iteration the shard pushes every
//! outgoing raft message into the outbox of its destination (store, shard);
//! `flush` then makes one frame per destination — one write, whatever the
//! number of regions. Bounded: a destination whose outbox is full, or whose
//! connection has too many bytes in flight, loses the message and is
//! reported unreachable (raft retransmits); the shard loop never waits.

use std::collections::BTreeMap;

use crate::envelope::{Envelope, EnvelopeError};
use crate::frame::{begin_frame, finish_frame, FrameKind, FRAME_BYTES_MAX, FRAME_HEADER_BYTES};

/// Most messages one outbox holds before it drops.
pub const OUTBOX_MESSAGES_MAX: usize = 64 << 10;
/// Most payload bytes one outbox holds (count and messages): one frame's worth.
pub const OUTBOX_BYTES_MAX: usize = FRAME_BYTES_MAX;
/// Written frames' buffers kept for the next frames, and the largest kept:
/// a fresh buffer for every frame costs page faults on first touch (≈10% of
/// a shard's CPU with 1,024 active regions, whose frames are megabytes).
pub const SPARE_BUFFERS_MAX: usize = 8;
pub const SPARE_BUFFER_BYTES_MAX: usize = 8 << 20;
const _: () = assert!(SPARE_BUFFER_BYTES_MAX <= FRAME_BYTES_MAX);

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

/// One destination's frame being built: the header's space, the message
/// count, then each message encoded as it is pushed.
#[derive(Default)]
struct Outbox {
    frame: Vec<u8>,
    messages: usize,
    regions: Vec<u64>,
    /// Size of the last frame: the next one reserves it up front.
    last_bytes: usize,
}

/// Offset of the message count in a frame being built.
const COUNT_AT: usize = FRAME_HEADER_BYTES;

/// Every destination's outbox of one shard. Ordered by destination so a
/// flush is deterministic (simulations replay exactly).
#[derive(Default)]
pub struct Outboxes {
    boxes: BTreeMap<Destination, Outbox>,
    stats: OutboxStats,
    /// Buffers of frames already written, for the next frames.
    spare: Vec<Vec<u8>>,
}

impl Outboxes {
    pub fn new() -> Self {
        Self::default()
    }

    /// Encodes a message into its destination's frame for the next flush.
    pub fn push(&mut self, to: Destination, env: &Envelope) -> Result<(), PushError> {
        env.check_size()?;
        let b = self.boxes.entry(to).or_default();
        let bytes = env.encoded_bytes();
        let payload = b.frame.len().saturating_sub(FRAME_HEADER_BYTES);
        if b.messages >= OUTBOX_MESSAGES_MAX || payload.max(4) + bytes > OUTBOX_BYTES_MAX {
            self.stats.dropped += 1;
            return Err(PushError::Full(to));
        }
        if b.messages == 0 {
            if b.frame.capacity() == 0 {
                // (a spare goes to a destination with something to send; an
                // idle outbox holds no memory)
                b.frame = self.spare.pop().unwrap_or_default();
            }
            b.frame.clear();
            b.frame.reserve(b.last_bytes);
            let at = begin_frame(&mut b.frame);
            debug_assert_eq!(at, 0);
            b.frame.extend_from_slice(&0u32.to_le_bytes());
        }
        env.encode_into(&mut b.frame);
        b.messages += 1;
        if b.regions.last() != Some(&env.region_id) {
            b.regions.push(env.region_id);
        }
        Ok(())
    }

    /// Takes back the buffer of a frame that was written (or dropped), to
    /// build a later frame in (at most `SPARE_BUFFERS_MAX` are kept).
    pub fn recycle(&mut self, mut buffer: Vec<u8>) {
        if self.spare.len() < SPARE_BUFFERS_MAX && buffer.capacity() <= SPARE_BUFFER_BYTES_MAX {
            buffer.clear();
            self.spare.push(buffer);
        }
    }

    /// One frame per destination with messages, in destination order.
    pub fn flush(&mut self) -> Vec<FlushedFrame> {
        let mut out = vec![];
        for (&to, b) in self.boxes.iter_mut().filter(|(_, b)| b.messages > 0) {
            let mut bytes = std::mem::take(&mut b.frame);
            bytes[COUNT_AT..COUNT_AT + 4].copy_from_slice(&(b.messages as u32).to_le_bytes());
            finish_frame(&mut bytes, 0, FrameKind::Raft);
            let mut regions = std::mem::take(&mut b.regions);
            regions.sort_unstable();
            regions.dedup();
            self.stats.frames += 1;
            self.stats.messages += b.messages as u64;
            self.stats.bytes += bytes.len() as u64;
            b.last_bytes = bytes.len();
            out.push(FlushedFrame { to, regions, messages: b.messages, bytes });
            b.messages = 0;
        }
        out
    }

    pub fn stats(&self) -> &OutboxStats {
        &self.stats
    }
}
