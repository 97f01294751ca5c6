//! The first frame of every connection: who is calling, and whom it expects
//! to reach. A store can be replaced at an address, or a spec can point at
//! the wrong port: the handshake is what catches a frame at the wrong door.
//! Any mismatch closes the connection; nothing reaches the engine.

use bincode::{Decode, Encode};

/// Identifies a ringraft peer connection.
pub const HANDSHAKE_MAGIC: [u8; 8] = *b"RINGRAFT";
/// Bumped on any incompatible change of the wire format.
pub const PROTOCOL_VERSION: u16 = 1;
/// Largest handshake payload accepted (it is a few dozen bytes).
pub const HANDSHAKE_BYTES_MAX: usize = 256;

/// What a connection is for: raft frames, or one snapshot stream (its own
/// connection, so hundreds of MiB never queue ahead of heartbeats).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Purpose {
    Raft,
    Snapshot,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Handshake {
    pub magic: [u8; 8],
    pub version: u16,
    pub cluster_id: u64,
    /// The calling store.
    pub from_store: u64,
    /// The store and shard the caller means to reach.
    pub to_store: u64,
    pub to_shard: u16,
    pub purpose: Purpose,
}

/// The receiver's answer, so a caller at the wrong door learns why instead
/// of seeing a bare close.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct HandshakeReply {
    /// `None`: accepted. `Some(reason)`: refused, and the connection closes.
    pub refused: Option<String>,
}

/// Longest refusal reason sent back.
pub const REFUSAL_BYTES_MAX: usize = 200;
const _: () = assert!(REFUSAL_BYTES_MAX + 16 <= HANDSHAKE_BYTES_MAX);

/// Why a connection was refused; logged and counted by the receiver.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("not a ringraft peer (bad magic)")]
    BadMagic,
    #[error("protocol version {theirs}, this store speaks {ours}")]
    Version { theirs: u16, ours: u16 },
    #[error("peer belongs to cluster {theirs}, this store to cluster {ours}")]
    Cluster { theirs: u64, ours: u64 },
    #[error("peer wants store {want_store} shard {want_shard}, this is store {store} shard {shard}")]
    WrongDoor { want_store: u64, want_shard: u16, store: u64, shard: u16 },
    #[error("malformed handshake: {0}")]
    Malformed(String),
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_little_endian().with_fixed_int_encoding().with_limit::<HANDSHAKE_BYTES_MAX>()
}

impl Handshake {
    pub fn new(cluster_id: u64, from_store: u64, to_store: u64, to_shard: u16, purpose: Purpose) -> Self {
        Handshake {
            magic: HANDSHAKE_MAGIC,
            version: PROTOCOL_VERSION,
            cluster_id,
            from_store,
            to_store,
            to_shard,
            purpose,
        }
    }

    /// The frame payload.
    pub fn encode(&self) -> Vec<u8> {
        bincode::encode_to_vec(self, config()).expect("a handshake always encodes")
    }

    /// Decodes a payload and checks it against the receiver's identity.
    pub fn accept(payload: &[u8], cluster_id: u64, store: u64, shard: u16) -> Result<Handshake, HandshakeError> {
        if payload.len() > HANDSHAKE_BYTES_MAX {
            return Err(HandshakeError::Malformed(format!("{} bytes", payload.len())));
        }
        let (h, used): (Handshake, usize) =
            bincode::decode_from_slice(payload, config()).map_err(|e| HandshakeError::Malformed(e.to_string()))?;
        if used != payload.len() {
            return Err(HandshakeError::Malformed("trailing bytes".into()));
        }
        if h.magic != HANDSHAKE_MAGIC {
            return Err(HandshakeError::BadMagic);
        }
        if h.version != PROTOCOL_VERSION {
            return Err(HandshakeError::Version { theirs: h.version, ours: PROTOCOL_VERSION });
        }
        if h.cluster_id != cluster_id {
            return Err(HandshakeError::Cluster { theirs: h.cluster_id, ours: cluster_id });
        }
        if (h.to_store, h.to_shard) != (store, shard) {
            return Err(HandshakeError::WrongDoor { want_store: h.to_store, want_shard: h.to_shard, store, shard });
        }
        Ok(h)
    }
}

impl HandshakeError {
    /// A short stable name, for counters.
    pub fn kind(&self) -> &'static str {
        match self {
            HandshakeError::BadMagic => "bad_magic",
            HandshakeError::Version { .. } => "version",
            HandshakeError::Cluster { .. } => "cluster",
            HandshakeError::WrongDoor { .. } => "wrong_door",
            HandshakeError::Malformed(_) => "malformed_handshake",
        }
    }
}

/// A refusal reason cut to `REFUSAL_BYTES_MAX` bytes on a char boundary.
pub(crate) fn cap_reason(reason: &str) -> String {
    let mut end = reason.len().min(REFUSAL_BYTES_MAX);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_string()
}

impl HandshakeReply {
    pub fn accepted() -> Self {
        HandshakeReply { refused: None }
    }

    pub fn refused(reason: &str) -> Self {
        HandshakeReply { refused: Some(cap_reason(reason)) }
    }

    pub fn encode(&self) -> Vec<u8> {
        bincode::encode_to_vec(self, config()).expect("a handshake reply always encodes")
    }

    pub fn decode(payload: &[u8]) -> Result<HandshakeReply, HandshakeError> {
        let (r, used): (HandshakeReply, usize) =
            bincode::decode_from_slice(payload, config()).map_err(|e| HandshakeError::Malformed(e.to_string()))?;
        if used != payload.len() {
            return Err(HandshakeError::Malformed("trailing bytes in reply".into()));
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handshake_is_accepted_only_by_the_store_and_shard_it_names() {
        let h = Handshake::new(7, 1, 2, 3, Purpose::Raft);
        let p = h.encode();
        assert_eq!(Handshake::accept(&p, 7, 2, 3), Ok(h));
        assert_eq!(Handshake::accept(&p, 8, 2, 3), Err(HandshakeError::Cluster { theirs: 7, ours: 8 }));
        assert!(matches!(Handshake::accept(&p, 7, 2, 4), Err(HandshakeError::WrongDoor { .. })));
        assert!(matches!(Handshake::accept(&p, 7, 5, 3), Err(HandshakeError::WrongDoor { .. })));
        let mut bad = h;
        bad.magic[0] = b'X';
        assert_eq!(Handshake::accept(&bad.encode(), 7, 2, 3), Err(HandshakeError::BadMagic));
        let mut old = h;
        old.version = 0;
        assert!(matches!(Handshake::accept(&old.encode(), 7, 2, 3), Err(HandshakeError::Version { theirs: 0, .. })));
        assert!(matches!(Handshake::accept(&p[..p.len() - 1], 7, 2, 3), Err(HandshakeError::Malformed(_))));
        assert!(matches!(Handshake::accept(&[0xff; 300], 7, 2, 3), Err(HandshakeError::Malformed(_))));
    }

    #[test]
    fn a_refusal_reason_round_trips_and_is_cut_on_a_char_boundary() {
        let long = "é".repeat(500);
        let r = HandshakeReply::refused(&long);
        assert!(r.refused.as_ref().unwrap().len() <= REFUSAL_BYTES_MAX);
        assert_eq!(HandshakeReply::decode(&r.encode()), Ok(r));
        let ok = HandshakeReply::accepted();
        assert_eq!(HandshakeReply::decode(&ok.encode()), Ok(ok));
    }
}
