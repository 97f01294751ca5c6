//! Votes kept in a second place. Raft is safe only if a replica never
//! forgets whom it voted for in a term: a vote forgotten lets it vote again,
//! and two leaders can be elected in one term. A vote is durable in the WAL
//! record that carries the region's HardState — but a damaged *last* record
//! is cut at recovery as if it were a torn tail, and the vote in it would go.
//! So every shard also keeps its regions' (term, vote) in a small vote table
//! of its own, written durably in the same persist batch as the WAL record
//! and before the batch counts as durable (before any vote answer leaves):
//! a damaged record can lose entries, never a vote. At boot the newer of the
//! two places wins, per region.
//!
//! The table is double-buffered over two files, `VOTES.0` and `VOTES.1`: a
//! write rewrites the older one in full (generation + 1) and fdatasyncs it,
//! so a write torn by a crash leaves the other, complete, file — whose votes
//! the WAL still holds too. Each file: magic `RRVOTES1`, generation (u64),
//! count (u32), then `count` × (region, term, vote) (u64 each, by region),
//! then a CRC32C of all the bytes before it; little-endian.

use std::collections::BTreeMap;

/// A shard's regions' latest (term, vote), and how many times it was written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VoteTable {
    pub generation: u64,
    pub votes: BTreeMap<u64, (u64, u64)>,
}

const MAGIC: &[u8; 8] = b"RRVOTES1";
const HEADER_BYTES: usize = 8 + 8 + 4;
const ENTRY_BYTES: usize = 24;
/// Regions one table holds: one per region a shard's WAL can hold.
pub const VOTE_ENTRIES_MAX: usize = wal::options::REGIONS_MAX;

/// The file a table of `generation` is written to.
pub fn slot_of(generation: u64) -> usize {
    (generation % 2) as usize
}

/// Why a vote file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VoteFileError {
    #[error("{len} bytes: shorter than a vote table's header")]
    Short { len: usize },
    #[error("not a vote table (bad magic)")]
    Magic,
    #[error("claims {count} regions, over VOTE_ENTRIES_MAX ({VOTE_ENTRIES_MAX}), or more than its {len} bytes hold")]
    Count { count: usize, len: usize },
    #[error("checksum mismatch (stored {stored:08x}, computed {computed:08x}): damaged or torn")]
    Checksum { stored: u32, computed: u32 },
    #[error("region {region} twice, or out of order")]
    Order { region: u64 },
}

impl VoteTable {
    pub fn encode(&self) -> Vec<u8> {
        assert!(self.votes.len() <= VOTE_ENTRIES_MAX, "a vote table over VOTE_ENTRIES_MAX");
        let mut out = Vec::with_capacity(HEADER_BYTES + self.votes.len() * ENTRY_BYTES + 4);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.generation.to_le_bytes());
        out.extend_from_slice(&(self.votes.len() as u32).to_le_bytes());
        for (region, (term, vote)) in &self.votes {
            out.extend_from_slice(&region.to_le_bytes());
            out.extend_from_slice(&term.to_le_bytes());
            out.extend_from_slice(&vote.to_le_bytes());
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<VoteTable, VoteFileError> {
        if bytes.len() < HEADER_BYTES + 4 {
            return Err(VoteFileError::Short { len: bytes.len() });
        }
        if &bytes[..8] != MAGIC {
            return Err(VoteFileError::Magic);
        }
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let count = u32::from_le_bytes(bytes[16..20].try_into().expect("4 bytes")) as usize;
        let body = HEADER_BYTES + count.saturating_mul(ENTRY_BYTES);
        if count > VOTE_ENTRIES_MAX || bytes.len() != body + 4 {
            return Err(VoteFileError::Count { count, len: bytes.len() });
        }
        let stored = u32::from_le_bytes(bytes[body..].try_into().expect("4 bytes"));
        let computed = crc32c::crc32c(&bytes[..body]);
        if stored != computed {
            return Err(VoteFileError::Checksum { stored, computed });
        }
        let mut votes = BTreeMap::new();
        let mut last = None;
        for i in 0..count {
            let at = HEADER_BYTES + i * ENTRY_BYTES;
            let region = u64_at(at);
            if last.is_some_and(|l| l >= region) {
                return Err(VoteFileError::Order { region });
            }
            last = Some(region);
            votes.insert(region, (u64_at(at + 8), u64_at(at + 16)));
        }
        Ok(VoteTable { generation: u64_at(8), votes })
    }
}

/// The table to use from the two files' bytes (`None`: no such file): the
/// valid one of the higher generation. One damaged and the other valid is
/// the torn write of a crash, and the valid one serves. Only one file, and
/// damaged, is the very first table's write torn by a crash: no batch that
/// carried a table ever completed, so every vote sent is still in the WAL
/// (no table). Both present and neither valid is an error: two faults, and
/// the votes may be lost — the shard must not start.
pub fn pick(files: [Option<&[u8]>; 2]) -> Result<Option<VoteTable>, VoteFileError> {
    let decoded: Vec<Result<VoteTable, VoteFileError>> = files.iter().flatten().map(|b| VoteTable::decode(b)).collect();
    let newest = decoded.iter().filter_map(|d| d.as_ref().ok()).max_by_key(|t| t.generation).cloned();
    match (newest, decoded.len(), decoded.into_iter().find_map(Result::err)) {
        (Some(t), _, _) => Ok(Some(t)),
        (None, 2, Some(e)) => Err(e),
        (None, _, _) => Ok(None),
    }
}

/// Whether the vote table's (term, vote) for a region is newer than what the
/// WAL recovered: a later term, or the same term with a vote the WAL lost.
/// `Err`: the same term with two different votes, which no replica casts.
pub fn newer(table: (u64, u64), wal: (u64, u64)) -> Result<bool, String> {
    let ((t_term, t_vote), (w_term, w_vote)) = (table, wal);
    if t_term != w_term {
        return Ok(t_term > w_term);
    }
    if t_vote != 0 && w_vote != 0 && t_vote != w_vote {
        return Err(format!("term {t_term}: the WAL records a vote for {w_vote}, the vote table for {t_vote}"));
    }
    Ok(w_vote == 0 && t_vote != 0)
}

/// Where a driver keeps a shard's vote table (durable when `write` returns).
// (`async fn` in a public trait: both drivers are single-threaded)
#[allow(async_fn_in_trait)]
pub trait VoteStore {
    async fn write_votes(&self, table: VoteTable) -> Result<(), String>;
    async fn read_votes(&self) -> Result<Option<VoteTable>, String>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(generation: u64) -> VoteTable {
        VoteTable { generation, votes: BTreeMap::from([(1, (6, 101)), (7, (9, 0)), (u64::MAX, (5, 3))]) }
    }

    #[test]
    fn a_table_round_trips_and_every_damage_is_refused() {
        let t = table(4);
        let bytes = t.encode();
        assert_eq!(VoteTable::decode(&bytes), Ok(t));
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(VoteTable::decode(&bad).is_err(), "a flipped byte at {i} was accepted");
        }
        for len in 0..bytes.len() {
            assert!(VoteTable::decode(&bytes[..len]).is_err(), "a table torn at {len} was accepted");
        }
        assert_eq!(VoteTable::decode(&VoteTable::default().encode()), Ok(VoteTable::default()));
    }

    #[test]
    fn the_newer_valid_file_wins_and_a_torn_one_falls_back_to_the_other() {
        let (old, new) = (table(4).encode(), table(5).encode());
        assert_eq!(pick([Some(&old), Some(&new)]).unwrap().unwrap().generation, 5);
        assert_eq!(pick([Some(&new), Some(&old)]).unwrap().unwrap().generation, 5);
        let torn = &new[..new.len() / 2];
        assert_eq!(pick([Some(&old), Some(torn)]).unwrap().unwrap().generation, 4, "the crash tore the newer");
        assert_eq!(pick([None, None]), Ok(None));
        assert_eq!(pick([None, Some(torn)]), Ok(None), "the first table's write torn: no table yet");
        assert!(pick([Some(torn), Some(b"garbage".as_slice())]).is_err(), "both damaged: the votes are lost");
    }

    #[test]
    fn the_table_wins_only_with_a_later_term_or_a_vote_the_wal_lost() {
        assert_eq!(newer((7, 2), (6, 1)), Ok(true));
        assert_eq!(newer((6, 1), (7, 0)), Ok(false));
        assert_eq!(newer((6, 1), (6, 0)), Ok(true), "the WAL's record of the vote was cut");
        assert_eq!(newer((6, 1), (6, 1)), Ok(false));
        assert_eq!(newer((6, 0), (6, 1)), Ok(false));
        assert!(newer((6, 1), (6, 2)).is_err(), "one vote per term");
    }
}
