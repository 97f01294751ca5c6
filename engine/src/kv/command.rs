//! What a client write becomes in the log: all writes of one region in one
//! loop iteration travel as **one** raft entry (a `WriteBatch`), stamped
//! with the region epoch they were proposed under, so the batch is checked
//! again when it is applied (a write proposed before a split and applied
//! after it must not land in the wrong region).

use bincode::{Decode, Encode};

use crate::region::meta::Epoch;

/// One write.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Command {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        key: Vec<u8>,
    },
    /// Sets `key` to `new` (None: deletes it) iff its value is `expect` (None: absent).
    Cas {
        key: Vec<u8>,
        expect: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    },
}

impl Command {
    pub fn key(&self) -> &[u8] {
        match self {
            Command::Put { key, .. } | Command::Delete { key } | Command::Cas { key, .. } => key,
        }
    }

    /// Bytes it adds to an entry, roughly (for the batch bound).
    pub fn size(&self) -> usize {
        16 + match self {
            Command::Put { key, value } => key.len() + value.len(),
            Command::Delete { key } => key.len(),
            Command::Cas { key, expect, new } => {
                key.len() + expect.as_ref().map_or(0, Vec::len) + new.as_ref().map_or(0, Vec::len)
            }
        }
    }
}

/// The payload of one normal raft entry.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct WriteBatch {
    pub conf_ver: u64,
    pub version: u64,
    pub commands: Vec<Command>,
}

/// Largest entry payload: an entry plus its envelope always fits a transport frame.
pub const ENTRY_BYTES_MAX: usize = 8 << 20;
const _: () = assert!(ENTRY_BYTES_MAX + 4096 <= transport::envelope::MESSAGE_BYTES_MAX);

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_little_endian().with_variable_int_encoding().with_limit::<ENTRY_BYTES_MAX>()
}

impl WriteBatch {
    pub fn epoch(&self) -> Epoch {
        Epoch { conf_ver: self.conf_ver, version: self.version }
    }

    pub fn encode(&self) -> Vec<u8> {
        bincode::encode_to_vec(self, config()).expect("a write batch always encodes")
    }

    pub fn decode(bytes: &[u8]) -> Result<WriteBatch, String> {
        let (b, used): (WriteBatch, usize) = bincode::decode_from_slice(bytes, config()).map_err(|e| e.to_string())?;
        if used != bytes.len() {
            return Err(format!("{} trailing bytes", bytes.len() - used));
        }
        Ok(b)
    }
}
