//! A raft message with its routing envelope, and the payload of a raft
//! frame: every message one shard has for one destination shard.
//!
//! The raft message itself travels as opaque bytes (the engine's eraftpb
//! encoding); the envelope says which region it is for, from and to which
//! peer, with the sender's view of the region (key range and epoch) so the
//! receiver can create a peer for a region it does not host yet, or tell a
//! removed peer to check its membership. Decoding is zero-copy: keys and
//! message bytes are slices of the frame.
//!
//! Layout (little-endian): `u32 count`, then per message:
//! `u64 region | u64 conf_ver | u64 version | u64 from_peer | u64 from_store |
//! u64 to_peer | u64 to_store | u16 to_shard | u32 start_key_len | start_key |
//! u32 end_key_len | end_key | u32 message_len | message`.

use bytes::{Buf, Bytes};

/// Largest key of a region range in an envelope.
pub const KEY_BYTES_MAX: usize = 64 << 10;
/// Fixed bytes of one envelope, keys and message excluded.
pub const ENVELOPE_FIXED_BYTES: usize = 8 * 7 + 2 + 4 * 3;
/// Largest envelope without its message: fixed fields and two maximal keys.
pub const ENVELOPE_OVERHEAD_MAX: usize = ENVELOPE_FIXED_BYTES + 2 * KEY_BYTES_MAX;
/// Largest raft message that always fits a frame with its envelope (the
/// engine caps entries below this).
pub const MESSAGE_BYTES_MAX: usize = crate::frame::FRAME_BYTES_MAX - 4 - ENVELOPE_OVERHEAD_MAX;

const _: () = assert!(MESSAGE_BYTES_MAX >= 8 << 20, "an 8 MiB entry must fit a frame");

/// A region's epoch: +1 `conf_ver` per membership change, +1 `version` per split.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Epoch {
    pub conf_ver: u64,
    pub version: u64,
}

/// The sending peer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Peer {
    pub peer_id: u64,
    pub store_id: u64,
}

/// The receiving peer, with the shard of its store that owns it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Target {
    pub peer_id: u64,
    pub store_id: u64,
    pub shard: u16,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Envelope {
    pub region_id: u64,
    pub start_key: Bytes,
    pub end_key: Bytes,
    pub epoch: Epoch,
    pub from: Peer,
    pub to: Target,
    /// The raft message (eraftpb bytes), opaque here.
    pub message: Bytes,
}

impl Envelope {
    /// Bytes it takes in a raft frame.
    pub fn encoded_bytes(&self) -> usize {
        ENVELOPE_FIXED_BYTES + self.start_key.len() + self.end_key.len() + self.message.len()
    }

    /// Whether it can travel at all (the sender refuses rather than truncates).
    pub fn check_size(&self) -> Result<(), EnvelopeError> {
        if self.start_key.len() > KEY_BYTES_MAX || self.end_key.len() > KEY_BYTES_MAX {
            return Err(EnvelopeError::KeyTooLarge { region: self.region_id });
        }
        if self.message.len() > MESSAGE_BYTES_MAX {
            return Err(EnvelopeError::MessageTooLarge { region: self.region_id, bytes: self.message.len() });
        }
        Ok(())
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        for v in [
            self.region_id,
            self.epoch.conf_ver,
            self.epoch.version,
            self.from.peer_id,
            self.from.store_id,
            self.to.peer_id,
            self.to.store_id,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&self.to.shard.to_le_bytes());
        for b in [&self.start_key, &self.end_key, &self.message] {
            out.extend_from_slice(&(b.len() as u32).to_le_bytes());
            out.extend_from_slice(b);
        }
    }
}

/// A message or a frame payload that cannot be what it claims.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("region {region}: a range key is over KEY_BYTES_MAX ({KEY_BYTES_MAX})")]
    KeyTooLarge { region: u64 },
    #[error("region {region}: message of {bytes} bytes is over MESSAGE_BYTES_MAX ({MESSAGE_BYTES_MAX})")]
    MessageTooLarge { region: u64, bytes: usize },
    #[error("raft frame malformed at byte {at}: {what}")]
    Malformed { at: usize, what: &'static str },
}

/// The payload of a raft frame holding `envelopes` (each already checked).
pub fn encode_raft_batch<'a>(out: &mut Vec<u8>, envelopes: impl ExactSizeIterator<Item = &'a Envelope>) {
    out.extend_from_slice(&(envelopes.len() as u32).to_le_bytes());
    for e in envelopes {
        e.encode_into(out);
    }
}

/// Decodes a raft frame's payload; keys and messages share its memory.
pub fn decode_raft_batch(payload: &Bytes) -> Result<Vec<Envelope>, EnvelopeError> {
    let mut b = payload.clone();
    let at = |b: &Bytes| payload.len() - b.len();
    let need = |b: &Bytes, n: usize, what| {
        if b.remaining() < n {
            Err(EnvelopeError::Malformed { at: payload.len() - b.len(), what })
        } else {
            Ok(())
        }
    };
    need(&b, 4, "message count")?;
    let count = b.get_u32_le() as usize;
    // every envelope takes at least ENVELOPE_FIXED_BYTES: bound the allocation by what is there
    if count > b.remaining() / ENVELOPE_FIXED_BYTES {
        return Err(EnvelopeError::Malformed { at: 0, what: "more messages announced than the frame holds" });
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        need(&b, ENVELOPE_FIXED_BYTES - 12, "envelope")?;
        let region_id = b.get_u64_le();
        let epoch = Epoch { conf_ver: b.get_u64_le(), version: b.get_u64_le() };
        let from = Peer { peer_id: b.get_u64_le(), store_id: b.get_u64_le() };
        let to = Target { peer_id: b.get_u64_le(), store_id: b.get_u64_le(), shard: b.get_u16_le() };
        let mut field = |max: usize, what: &'static str| -> Result<Bytes, EnvelopeError> {
            need(&b, 4, what)?;
            let n = b.get_u32_le() as usize;
            if n > max {
                return Err(EnvelopeError::Malformed { at: at(&b) - 4, what });
            }
            need(&b, n, what)?;
            Ok(b.split_to(n))
        };
        let start_key = field(KEY_BYTES_MAX, "start key")?;
        let end_key = field(KEY_BYTES_MAX, "end key")?;
        let message = field(MESSAGE_BYTES_MAX, "message")?;
        out.push(Envelope { region_id, start_key, end_key, epoch, from, to, message });
    }
    if b.has_remaining() {
        return Err(EnvelopeError::Malformed { at: at(&b), what: "bytes after the last message" });
    }
    Ok(out)
}
