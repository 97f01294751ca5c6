//! A shard's regions as its WAL recovered them: meta, membership, vote, and
//! every live entry (read back into memory: raft-rs reads its log
//! synchronously). The state machine is rebuilt by re-applying the committed
//! entries (`applied` starts at the log's base; snapshots come later).

use wal::disk::Disk;
use wal::{ReadError, Wal};

use crate::region::meta::{MetaDecodeError, RegionMeta};
use crate::region::wal_convert::{conf_state_from_wal, entry_from_wal, hard_state_from_wal};
use crate::region::RegionStorage;

/// Entries read per WAL request while loading.
const LOAD_READ_BYTES: u64 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("region {region}: {source}")]
    Meta { region: u64, source: MetaDecodeError },
    #[error("region {region} has a log but no meta (not written by this engine?)")]
    NoMeta { region: u64 },
    #[error("region {region}: reading entries [{lo}, {hi}): {source}")]
    Read { region: u64, lo: u64, hi: u64, source: ReadError },
}

/// One recovered region: its meta, its log view, and the index it applies from.
pub struct LoadedRegion {
    pub meta: RegionMeta,
    pub storage: RegionStorage,
    pub applied: u64,
}

/// Every live (non-tombstone) region of the WAL.
pub async fn load_regions<D: Disk>(wal: &Wal<D>) -> Result<Vec<LoadedRegion>, LoadError> {
    let mut out = vec![];
    let ids: Vec<u64> = wal.regions().collect();
    for region in ids {
        if wal.is_tombstone(region) {
            continue;
        }
        let meta_bytes = wal.meta(region).ok_or(LoadError::NoMeta { region })?;
        let meta = RegionMeta::decode(meta_bytes).map_err(|source| LoadError::Meta { region, source })?;
        let hs = wal.hard_state(region).map(|h| hard_state_from_wal(&h)).unwrap_or_default();
        let cs = wal.conf_state(region).map(conf_state_from_wal).unwrap_or_default();
        let base = wal.snapshot(region).map_or((0, 0), |s| (s.index, s.term));
        let mut entries = vec![];
        if let (Some(first), Some(last)) = (wal.first_index(region), wal.last_index(region)) {
            let (mut lo, hi) = (first, last + 1);
            while lo < hi {
                let got = match wal.entries(region, lo, hi, LOAD_READ_BYTES) {
                    Ok(es) => es,
                    Err(ReadError::NotCached { .. }) => {
                        let job = wal.fetch(region, lo, hi, LOAD_READ_BYTES).map_err(|source| LoadError::Read {
                            region,
                            lo,
                            hi,
                            source,
                        })?;
                        job.run().await.map_err(|source| LoadError::Read { region, lo, hi, source })?
                    }
                    Err(source) => return Err(LoadError::Read { region, lo, hi, source }),
                };
                assert!(!got.is_empty(), "region {region}: a WAL read returns at least one entry");
                lo += got.len() as u64;
                entries.extend(got.iter().map(entry_from_wal));
            }
        }
        let storage = RegionStorage::new(hs, cs, base, entries);
        out.push(LoadedRegion { meta, storage, applied: base.0 });
    }
    Ok(out)
}
