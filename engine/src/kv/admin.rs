//! Admin commands in the log: commands that change a region itself (today:
//! split), proposed and applied through raft like writes, so every replica
//! applies them at the same index.
//!
//! An admin command travels in a normal entry whose data starts with
//! `ADMIN_TAG` (0xFF) followed by the command in bincode. A write batch's
//! data never starts with that byte: its first field is a bincode varint,
//! and 0xFF is no varint's first byte (0–250 are values, 251–254 announce a
//! wider integer, 255 is reserved). Conf changes keep raft's own entry type.

use bincode::{Decode, Encode};

use crate::region::meta::Epoch;

/// The first byte of an admin command's entry data.
pub const ADMIN_TAG: u8 = 0xFF;
/// Largest encoded admin command.
pub const ADMIN_BYTES_MAX: usize = 64 << 10;
// a split at the longest key with the most peers fits (varints: at most 9 bytes each)
const _: () = assert!(
    1 + 1 + 9 * 2 + 9 + crate::region::meta::SPLIT_KEY_BYTES_MAX + 9 + 9 + 9 * crate::region::meta::PEERS_MAX
        <= ADMIN_BYTES_MAX
);

/// A region splits at `split_key`: it keeps [start, split_key), and a new
/// region `new_region_id` with peers `new_peer_ids` (one per peer of the
/// region, in the order of its meta's peers) takes [split_key, end).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct SplitCommand {
    /// The epoch it was proposed under: a split applies only to exactly
    /// that region (another split or a membership change since refuses it).
    pub conf_ver: u64,
    pub version: u64,
    pub split_key: Vec<u8>,
    pub new_region_id: u64,
    pub new_peer_ids: Vec<u64>,
}

impl SplitCommand {
    pub fn epoch(&self) -> Epoch {
        Epoch { conf_ver: self.conf_ver, version: self.version }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum AdminCommand {
    Split(SplitCommand),
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_little_endian().with_variable_int_encoding().with_limit::<ADMIN_BYTES_MAX>()
}

/// Whether a normal entry's data is an admin command.
pub fn is_admin(data: &[u8]) -> bool {
    data.first() == Some(&ADMIN_TAG)
}

impl AdminCommand {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![ADMIN_TAG];
        bincode::encode_into_std_write(self, &mut out, config()).expect("an admin command encodes");
        assert!(out.len() <= ADMIN_BYTES_MAX, "an admin command of {} bytes", out.len());
        out
    }

    /// The command in an admin entry's data (tag included).
    pub fn decode(data: &[u8]) -> Result<AdminCommand, String> {
        let body = data.strip_prefix(&[ADMIN_TAG]).ok_or("not an admin command (no tag)")?;
        if data.len() > ADMIN_BYTES_MAX {
            return Err(format!("{} bytes, over ADMIN_BYTES_MAX ({ADMIN_BYTES_MAX})", data.len()));
        }
        let (cmd, used): (AdminCommand, usize) =
            bincode::decode_from_slice(body, config()).map_err(|e| e.to_string())?;
        if used != body.len() {
            return Err(format!("{} trailing bytes", body.len() - used));
        }
        Ok(cmd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{Command, WriteBatch, WriteBatchRef};

    #[test]
    fn an_admin_command_round_trips_and_is_never_taken_for_a_write_batch() {
        let cmd = AdminCommand::Split(SplitCommand {
            conf_ver: u64::MAX,
            version: 300,
            split_key: b"m\xff".to_vec(),
            new_region_id: 7,
            new_peer_ids: vec![71, 72, 73],
        });
        let data = cmd.encode();
        assert!(is_admin(&data));
        assert_eq!(AdminCommand::decode(&data), Ok(cmd));
        assert!(WriteBatchRef::decode(&data).is_err(), "a write batch reader refuses it");
        assert!(AdminCommand::decode(&data[..data.len() - 1]).is_err());
        assert!(AdminCommand::decode(&data[1..]).is_err(), "no tag");
        // every write batch's first byte is a varint's: never the tag
        for conf_ver in [0, 250, 251, 65_535, 1 << 40, u64::MAX] {
            let b = WriteBatch { conf_ver, version: 1, commands: vec![Command::Delete { key: vec![0xFF] }] };
            assert!(!is_admin(&b.encode()), "conf_ver {conf_ver}");
        }
    }
}
