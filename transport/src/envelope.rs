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
//! u64 to_peer | u64 to_store | u16 from_shard | u16 to_shard | u32 start_key_len |
//! start_key | u32 end_key_len | end_key | u32 message_len | message`.

use bytes::Bytes;

/// Largest key of a region range in an envelope.
pub const KEY_BYTES_MAX: usize = 64 << 10;
/// Fixed bytes of one envelope, keys and message excluded.
pub const ENVELOPE_FIXED_BYTES: usize = 8 * 7 + 2 * 2 + 4 * 3;
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

/// The sending peer, with the shard of its store that owns it (where a
/// peer that does not know the region yet sends its answers).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Peer {
    pub peer_id: u64,
    pub store_id: u64,
    pub shard: u16,
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

    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
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
        out.extend_from_slice(&self.from.shard.to_le_bytes());
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

/// Where one message's fields sit in a raft frame's payload.
#[derive(Clone, Copy, Debug)]
struct Fields {
    /// Offset of the fixed part (region … to_shard).
    fixed: u32,
    start_key: (u32, u32),
    end_key: (u32, u32),
    message: (u32, u32),
}

/// A decoded raft frame: its payload and where each message's fields are.
/// Decoding checks every length once and copies nothing; reading a message
/// touches no reference count (the per-message `Bytes` clones of an eager
/// decode cost more than the parsing). [`EnvelopeRef::message_bytes`] or
/// [`EnvelopeRef::to_envelope`] make owned values when the shard keeps one.
#[derive(Clone, Debug)]
pub struct RaftBatch {
    payload: Bytes,
    fields: Vec<Fields>,
}

/// One message of a [`RaftBatch`].
#[derive(Clone, Copy)]
pub struct EnvelopeRef<'a> {
    batch: &'a RaftBatch,
    fields: Fields,
}

impl RaftBatch {
    /// Checks a raft frame's payload and indexes its messages.
    pub fn decode(payload: Bytes) -> Result<RaftBatch, EnvelopeError> {
        let p: &[u8] = &payload;
        let malformed = |at: usize, what| EnvelopeError::Malformed { at, what };
        let u32_at = |at: usize, what| -> Result<usize, EnvelopeError> {
            p.get(at..at + 4).map(|b| u32::from_le_bytes(b.try_into().unwrap()) as usize).ok_or(malformed(at, what))
        };
        let count = u32_at(0, "message count")?;
        // every envelope takes at least ENVELOPE_FIXED_BYTES: bound the allocation by what is there
        if count > (p.len() - 4) / ENVELOPE_FIXED_BYTES {
            return Err(malformed(0, "more messages announced than the frame holds"));
        }
        let mut fields = Vec::with_capacity(count);
        let mut at = 4;
        for _ in 0..count {
            let fixed = at;
            at += ENVELOPE_FIXED_BYTES - 12;
            if at > p.len() {
                return Err(malformed(fixed, "envelope"));
            }
            let mut field = |max: usize, what: &'static str| -> Result<(u32, u32), EnvelopeError> {
                let n = u32_at(at, what)?;
                if n > max {
                    return Err(malformed(at, what));
                }
                let start = at + 4;
                if n > p.len() - start {
                    return Err(malformed(start, what));
                }
                at = start + n;
                Ok((start as u32, n as u32))
            };
            let start_key = field(KEY_BYTES_MAX, "start key")?;
            let end_key = field(KEY_BYTES_MAX, "end key")?;
            let message = field(MESSAGE_BYTES_MAX, "message")?;
            fields.push(Fields { fixed: fixed as u32, start_key, end_key, message });
        }
        if at != p.len() {
            return Err(malformed(at, "bytes after the last message"));
        }
        Ok(RaftBatch { payload, fields })
    }

    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The frame payload's size.
    pub fn payload_bytes(&self) -> usize {
        self.payload.len()
    }

    pub fn get(&self, i: usize) -> EnvelopeRef<'_> {
        EnvelopeRef { batch: self, fields: self.fields[i] }
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = EnvelopeRef<'_>> + '_ {
        self.fields.iter().map(move |&fields| EnvelopeRef { batch: self, fields })
    }

    /// Every message as an owned envelope (keys and messages still share the frame's memory).
    pub fn to_envelopes(&self) -> Vec<Envelope> {
        self.iter().map(|e| e.to_envelope()).collect()
    }
}

impl<'a> EnvelopeRef<'a> {
    fn u64_at(&self, i: usize) -> u64 {
        let at = self.fields.fixed as usize + 8 * i;
        u64::from_le_bytes(self.batch.payload[at..at + 8].try_into().unwrap())
    }

    fn slice(&self, (start, len): (u32, u32)) -> &'a [u8] {
        &self.batch.payload[start as usize..(start + len) as usize]
    }

    pub fn region_id(&self) -> u64 {
        self.u64_at(0)
    }

    pub fn epoch(&self) -> Epoch {
        Epoch { conf_ver: self.u64_at(1), version: self.u64_at(2) }
    }

    fn shard_at(&self, i: usize) -> u16 {
        let at = self.fields.fixed as usize + 8 * 7 + 2 * i;
        u16::from_le_bytes(self.batch.payload[at..at + 2].try_into().unwrap())
    }

    pub fn from(&self) -> Peer {
        Peer { peer_id: self.u64_at(3), store_id: self.u64_at(4), shard: self.shard_at(0) }
    }

    pub fn to(&self) -> Target {
        Target { peer_id: self.u64_at(5), store_id: self.u64_at(6), shard: self.shard_at(1) }
    }

    pub fn start_key(&self) -> &'a [u8] {
        self.slice(self.fields.start_key)
    }

    pub fn end_key(&self) -> &'a [u8] {
        self.slice(self.fields.end_key)
    }

    /// The raft message (eraftpb bytes).
    pub fn message(&self) -> &'a [u8] {
        self.slice(self.fields.message)
    }

    /// The raft message as shared bytes (one reference count, no copy).
    pub fn message_bytes(&self) -> Bytes {
        let (start, len) = self.fields.message;
        self.batch.payload.slice(start as usize..(start + len) as usize)
    }

    /// Bytes this message took in the frame.
    pub fn encoded_bytes(&self) -> usize {
        ENVELOPE_FIXED_BYTES + (self.fields.start_key.1 + self.fields.end_key.1 + self.fields.message.1) as usize
    }

    pub fn to_envelope(&self) -> Envelope {
        let slice = |(start, len): (u32, u32)| self.batch.payload.slice(start as usize..(start + len) as usize);
        Envelope {
            region_id: self.region_id(),
            start_key: slice(self.fields.start_key),
            end_key: slice(self.fields.end_key),
            epoch: self.epoch(),
            from: self.from(),
            to: self.to(),
            message: slice(self.fields.message),
        }
    }
}

/// Decodes a raft frame's payload into owned envelopes (keys and messages
/// share its memory). The receive path uses [`RaftBatch`] instead.
pub fn decode_raft_batch(payload: &Bytes) -> Result<Vec<Envelope>, EnvelopeError> {
    Ok(RaftBatch::decode(payload.clone())?.to_envelopes())
}
