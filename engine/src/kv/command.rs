//! What a client write becomes in the log: all writes of one region in one
//! loop iteration travel as **one** raft entry (a `WriteBatch`), stamped
//! with the region epoch they were proposed under, so the batch is checked
//! again when it is applied (a write proposed before a split and applied
//! after it must not land in the wrong region).

use bincode::{BorrowDecode, Decode, Encode};

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

/// A command read in place from its entry: what a replica applies, without
/// copying keys and values out of the entry first (every replica applies
/// every write, so those copies were a cost paid three times).
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorrowDecode)]
pub enum CommandRef<'a> {
    Put { key: &'a [u8], value: &'a [u8] },
    Delete { key: &'a [u8] },
    Cas { key: &'a [u8], expect: Option<&'a [u8]>, new: Option<&'a [u8]> },
}

impl<'a> CommandRef<'a> {
    pub fn key(&self) -> &'a [u8] {
        match *self {
            CommandRef::Put { key, .. } | CommandRef::Delete { key } | CommandRef::Cas { key, .. } => key,
        }
    }
}

/// A write batch read in place (see `CommandRef`); same bytes as `WriteBatch`.
#[derive(Debug, PartialEq, Eq, BorrowDecode)]
pub struct WriteBatchRef<'a> {
    pub conf_ver: u64,
    pub version: u64,
    pub commands: Vec<CommandRef<'a>>,
}

impl<'a> WriteBatchRef<'a> {
    pub fn decode(bytes: &'a [u8]) -> Result<WriteBatchRef<'a>, String> {
        if bytes.len() > ENTRY_BYTES_MAX {
            return Err(format!("{} bytes, over ENTRY_BYTES_MAX ({ENTRY_BYTES_MAX})", bytes.len()));
        }
        let (b, used): (WriteBatchRef<'a>, usize) =
            bincode::borrow_decode_from_slice(bytes, config()).map_err(|e| e.to_string())?;
        if used != bytes.len() {
            return Err(format!("{} trailing bytes", bytes.len() - used));
        }
        Ok(b)
    }
}

impl Command {
    /// The command as a replica applies it.
    pub fn as_ref(&self) -> CommandRef<'_> {
        match self {
            Command::Put { key, value } => CommandRef::Put { key, value },
            Command::Delete { key } => CommandRef::Delete { key },
            Command::Cas { key, expect, new } => {
                CommandRef::Cas { key, expect: expect.as_deref(), new: new.as_deref() }
            }
        }
    }

    pub fn key(&self) -> &[u8] {
        match self {
            Command::Put { key, .. } | Command::Delete { key } | Command::Cas { key, .. } => key,
        }
    }

    /// An upper bound of the bytes it adds to an encoded batch: a variant
    /// tag, up to three length prefixes and two option tags (varints of at
    /// most 9 bytes each), and the bytes.
    pub fn size(&self) -> usize {
        COMMAND_OVERHEAD_BYTES_MAX
            + match self {
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

/// Largest entry payload: an entry plus its envelope always fits a
/// transport frame, and one entry always fits one WAL record (the shard
/// lowers this further to its WAL's record limit).
pub const ENTRY_BYTES_MAX: usize = 4 << 20;
/// Bytes a command adds to a batch beyond its keys and values, at most.
pub const COMMAND_OVERHEAD_BYTES_MAX: usize = 1 + 3 * 9 + 2;
/// Bytes of a batch beyond its commands, at most (epoch and count varints).
pub const BATCH_OVERHEAD_BYTES_MAX: usize = 3 * 9;

const _: () = assert!(ENTRY_BYTES_MAX + 4096 <= transport::envelope::MESSAGE_BYTES_MAX);
const _: () = assert!(ENTRY_BYTES_MAX + (1 << 20) <= wal::options::BATCH_BYTES_DEFAULT);

/// Memory one command takes once decoded (owned or read in place).
const COMMAND_IN_MEMORY_BYTES: usize = {
    let (owned, borrowed) = (std::mem::size_of::<Command>(), std::mem::size_of::<CommandRef<'static>>());
    if owned > borrowed {
        owned
    } else {
        borrowed
    }
};
/// What decoding one entry may claim in memory, at most. bincode's limit
/// counts the in-memory size of every container a decode is told to fill
/// (a command per 2 or more encoded bytes, and each key or value byte once),
/// so a valid entry — `decode` refuses one over `ENTRY_BYTES_MAX` — never
/// claims more than this; bytes whose lengths claim more (a damaged entry)
/// are an error before anything is allocated, never an allocation of 2^64
/// bytes that panics or aborts the store on every restart.
const DECODE_CLAIM_BYTES_MAX: usize = ENTRY_BYTES_MAX * (COMMAND_IN_MEMORY_BYTES / 2 + 2);

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_little_endian().with_variable_int_encoding().with_limit::<DECODE_CLAIM_BYTES_MAX>()
}

impl WriteBatch {
    pub fn epoch(&self) -> Epoch {
        Epoch { conf_ver: self.conf_ver, version: self.version }
    }

    pub fn encode(&self) -> Vec<u8> {
        let out = bincode::encode_to_vec(self, config()).expect("a write batch always encodes");
        debug_assert!(out.len() <= Self::size_bound(&self.commands), "size_bound is an upper bound");
        out
    }

    /// An upper bound of its encoded size.
    pub fn size_bound(commands: &[Command]) -> usize {
        BATCH_OVERHEAD_BYTES_MAX + commands.iter().map(Command::size).sum::<usize>()
    }

    pub fn decode(bytes: &[u8]) -> Result<WriteBatch, String> {
        if bytes.len() > ENTRY_BYTES_MAX {
            return Err(format!("{} bytes, over ENTRY_BYTES_MAX ({ENTRY_BYTES_MAX})", bytes.len()));
        }
        let (b, used): (WriteBatch, usize) = bincode::decode_from_slice(bytes, config()).map_err(|e| e.to_string())?;
        if used != bytes.len() {
            return Err(format!("{} trailing bytes", bytes.len() - used));
        }
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: bounding a batch by a rough size let 4,096 puts through
    /// whose encoding then failed to decode on every replica (bincode's
    /// decode limit counts memory, not bytes) — a panic on apply, forever.
    #[test]
    fn the_largest_batch_the_bound_admits_encodes_under_it_and_decodes() {
        let value = vec![7u8; 1000];
        let mut commands = vec![];
        while WriteBatch::size_bound(&commands) + 1100 <= ENTRY_BYTES_MAX {
            commands.push(Command::Put { key: format!("{:06}", commands.len()).into_bytes(), value: value.clone() });
        }
        let b = WriteBatch { conf_ver: u64::MAX, version: u64::MAX, commands };
        let bytes = b.encode();
        assert!(bytes.len() <= WriteBatch::size_bound(&b.commands) && bytes.len() <= ENTRY_BYTES_MAX);
        assert_eq!(WriteBatch::decode(&bytes), Ok(b.clone()));
        // the in-place reading sees the same commands
        let read = WriteBatchRef::decode(&bytes).unwrap();
        assert_eq!((read.conf_ver, read.version), (b.conf_ver, b.version));
        assert!(
            read.commands.iter().zip(&b.commands).all(|(r, c)| *r == c.as_ref())
                && read.commands.len() == b.commands.len()
        );
        let cas = Command::Cas { key: vec![1; 300], expect: Some(vec![2; 200]), new: Some(vec![3; 70_000]) };
        let one = WriteBatch { conf_ver: 1, version: 1, commands: vec![cas, Command::Delete { key: vec![9] }] };
        assert!(one.encode().len() <= WriteBatch::size_bound(&one.commands));
        let bytes = one.encode();
        let read = WriteBatchRef::decode(&bytes).unwrap();
        assert_eq!(read.commands, one.commands.iter().map(Command::as_ref).collect::<Vec<_>>());
        assert!(WriteBatchRef::decode(&bytes[..bytes.len() - 1]).is_err());
    }
}
