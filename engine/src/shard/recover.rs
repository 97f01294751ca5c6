//! A shard's regions as its WAL recovered them: meta, membership, vote, the
//! snapshot their state restarts from, and every live entry (read back into
//! memory: raft-rs reads its log synchronously). The caller loads each
//! snapshot (an I/O of its own); the shard then re-applies the committed
//! entries after it.

use wal::disk::Disk;
use wal::{ReadError, Wal};

use crate::region::meta::{MetaDecodeError, RegionLocalState, RegionMeta};
use crate::region::wal_convert::{conf_state_from_wal, entry_from_wal, hard_state_from_wal};
use crate::region::RegionStorage;
use crate::snapshot::SnapshotId;

/// Entries read per WAL request while loading.
const LOAD_READ_BYTES: u64 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("region {region}: {source}")]
    Meta { region: u64, source: MetaDecodeError },
    #[error(
        "region {region} has a log but no meta: the WAL record holding it is missing (dropped as damaged by a \
         tolerant recovery, or never written by this engine); rebuild this store from its peers"
    )]
    NoMeta { region: u64 },
    #[error("region {region}: reading entries [{lo}, {hi}): {source}")]
    Read { region: u64, lo: u64, hi: u64, source: ReadError },

    #[error(
        "region {region}: its log starts at {first_index}, after its snapshot at {snapshot_index}: entries are lost"
    )]
    LogGap { region: u64, first_index: u64, snapshot_index: u64 },
}

/// One recovered region: its meta, its log view, and the snapshot to load.
pub struct LoadedRegion {
    pub meta: RegionMeta,
    /// A split child whose initial state was not durable yet (an
    /// initialized meta that names no snapshot): replaying its parent's
    /// split creates it again, with this log and vote (`shard::split`).
    pub pending_child: bool,
    pub storage: RegionStorage,
    pub snapshot: Option<SnapshotId>,
    /// Its log was lost back to its snapshot, or cannot be trusted (records
    /// dropped): the WAL's log must be reset to the snapshot before anything
    /// is appended. For a pending child: its log cannot be trusted, and its
    /// parent's replayed split creates it again from its initial state.
    pub log_lost: bool,
    /// The epoch a leader's message named an uninitialized peer a member at.
    pub member_at_conf_ver: u64,
}

/// The regions the WAL holds as removed from this shard: (region, the peer
/// that was removed — messages to it, or to an older peer id, are dropped —,
/// its last meta, the epoch it knew itself a member at).
pub fn load_tombstones<D: Disk>(wal: &Wal<D>) -> Result<Vec<(u64, u64, RegionMeta, u64)>, LoadError> {
    let mut out = vec![];
    for region in wal.regions().filter(|r| wal.is_tombstone(*r)) {
        let bytes = wal.meta(region).ok_or(LoadError::NoMeta { region })?;
        let state = RegionLocalState::decode(bytes).map_err(|source| LoadError::Meta { region, source })?;
        out.push((region, state.removed_peer.unwrap_or(0), state.meta, state.member_at_conf_ver));
    }
    Ok(out)
}

/// Every live (non-tombstone) region of the WAL, for the shard of store
/// `store_id`. When the WAL lost records (`lost_records`: its needs-catch-up
/// flag), a region whose log no longer reaches back to its snapshot
/// restarts from the snapshot with no log, and a commit index past what is
/// left is lowered to it: the region is suspect (`shard::catch_up`) and its
/// leader sends the rest again.
///
/// So does a region whose log reaches back before what this open dropped
/// (`Wal::lost_up_to`), if another voter can catch it up: a dropped record
/// may have overwritten entries — a new leader's, truncating an old one's
/// — that the records before it still hold, while the records after it
/// append onto those as if they matched. The log replayed is then one no
/// leader ever had: entries at or below the recovered commit index that
/// were never committed, and a leader's later append matching its last
/// entry would vouch for all of them (the log matching property no longer
/// holds). Only the snapshot is known good. A log written wholly after the
/// loss (reset and sent again since an earlier tolerant open, say) is kept,
/// and so is every log when this open dropped nothing (the flag is an
/// earlier open's, whose damage is purged or was dropped again now). A
/// pending split child whose log reaches back before the loss is dropped
/// too (`log_lost`: its parent's split creates it afresh), and so is one
/// whose parent restarts with no log (`Shard::add_pending_children`). (A
/// region with no other voter keeps what is left: no one could send it
/// more.)
pub async fn load_regions<D: Disk>(
    wal: &Wal<D>,
    store_id: u64,
    lost_records: bool,
) -> Result<Vec<LoadedRegion>, LoadError> {
    let mut out = vec![];
    let mut logs_dropped = 0;
    let ids: Vec<u64> = wal.regions().collect();
    for region in ids {
        if wal.is_tombstone(region) {
            continue;
        }
        let meta_bytes = wal.meta(region).ok_or(LoadError::NoMeta { region })?;
        let state = RegionLocalState::decode(meta_bytes).map_err(|source| LoadError::Meta { region, source })?;
        let mut hs = wal.hard_state(region).map(|h| hard_state_from_wal(&h)).unwrap_or_default();
        let cs = wal.conf_state(region).map(conf_state_from_wal).unwrap_or_default();
        // the log starts after its last compaction or installed snapshot
        let first_index = wal.first_index(region).unwrap_or(1);
        let has_entries = wal.last_index(region).is_some_and(|last| last >= first_index);
        let snapshot = state.snapshot.map(|(index, term)| SnapshotId { region, index, term });
        let snapshot_index = snapshot.map_or(0, |s| s.index);
        // (an uninitialized peer's meta has conf_ver 0; every other region's names a snapshot)
        let pending_child = snapshot.is_none() && state.meta.conf_ver > 0;
        let gap = has_entries && first_index > snapshot_index + 1 && !pending_child;
        // (a log that may be stitched from two histories, with someone to send it again)
        let before_loss =
            wal.lost_up_to().zip(wal.first_entry_position(region)).is_some_and(|(lost, first)| first <= lost);
        let untrusted = before_loss && state.meta.has_voter_off(store_id);
        // the records that held the entries between were dropped, or may
        // have been: keep the snapshot, let the leader send the log again
        let lost_back_to_snapshot = lost_records && !pending_child && (gap || (untrusted && snapshot.is_some()));
        let log_lost = lost_back_to_snapshot || (pending_child && untrusted);
        if log_lost {
            let last_index = wal.last_index(region).unwrap_or(0);
            tracing::debug!(region, first_index, last_index, snapshot_index, pending_child, "log dropped");
            logs_dropped += 1;
        }
        let base = if lost_back_to_snapshot {
            snapshot.map_or((0, 0), |s| (s.index, s.term))
        } else if snapshot.is_none() && !has_entries && !pending_child {
            // a peer created for a region it has no state of yet (its log
            // may still start where an earlier, removed peer's ended)
            (0, 0)
        } else if gap {
            return Err(LoadError::LogGap { region, first_index, snapshot_index });
        } else {
            let term = wal.term(region, first_index - 1).expect("the WAL keeps the term before its first entry");
            (first_index - 1, term)
        };
        // the snapshot is committed; its record carries a commit at least
        // this high, and raft refuses to start with applied > commit
        hs.commit = hs.commit.max(snapshot_index);
        let mut entries = vec![];
        if let (false, Some(first), Some(last)) =
            (lost_back_to_snapshot, wal.first_index(region), wal.last_index(region))
        {
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
        if lost_records {
            // a commit index recorded after records that were dropped may be
            // past the log that is left (raft refuses to start so)
            let last = entries.last().map_or(base.0, |e: &raft::eraftpb::Entry| e.index);
            hs.commit = hs.commit.min(last).max(snapshot_index);
        }
        let storage = RegionStorage::new(hs, cs, base, entries);
        out.push(LoadedRegion {
            meta: state.meta,
            pending_child,
            storage,
            snapshot,
            log_lost,
            member_at_conf_ver: state.member_at_conf_ver,
        });
    }
    if logs_dropped > 0 {
        tracing::warn!(
            regions = logs_dropped,
            "the WAL lost records: these regions restart from their snapshots (split children from their \
             parents' splits), their logs dropped for their leaders to send again"
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use futures_lite::future::block_on;
    use raft::Storage;
    use wal::disk::MemDisk;
    use wal::{Entry, FlushStart, HardState, RecoveryMode, RegionWrite, SnapshotMarker, WalOptions};

    use super::*;
    use crate::region::meta::PeerMeta;

    const REGION: u64 = 1;

    fn options(recovery_mode: RecoveryMode) -> WalOptions {
        WalOptions { recovery_mode, ..crate::sim::store::sim_wal_options() }
    }

    /// The shard store `store_id` boots from `wal` and `files` (the one boot path).
    fn boot_as(store_id: u64, wal: &Wal<MemDisk>, files: &crate::sim::store::SimFiles) -> crate::shard::Shard {
        let opts = crate::shard::boot::BootOptions {
            store_id,
            shard: 0,
            seed: 1,
            limits: crate::shard::ShardLimits::for_wal(&options(RecoveryMode::Strict)),
            initial_regions: &[],
        };
        block_on(crate::shard::boot::boot(wal, files, opts)).expect("boot").0
    }

    fn flush(wal: &mut Wal<MemDisk>) {
        loop {
            match wal.start_flush() {
                FlushStart::Idle => return,
                FlushStart::Flush(f) => {
                    let done = block_on(f.execute());
                    wal.finish_flush(done).expect("flush");
                }
                FlushStart::NeedSpare => {
                    let job = wal.spare_job().expect("no spare job is out");
                    wal.add_spare(block_on(job.run())).expect("spare");
                }
            }
        }
    }

    /// Every record on the disk: (segment file, offset).
    fn records(disk: &MemDisk) -> Vec<(String, usize)> {
        let mut out = vec![];
        for name in disk.file_names() {
            let Some(wal::layout::FileKind::Segment(seq)) = wal::layout::parse_name(&name) else { continue };
            let bytes = disk.contents(&name).expect("listed");
            out.extend(wal::format::record_offsets(&bytes, seq).into_iter().map(|at| (name.clone(), at)));
        }
        out
    }

    fn entries(indexes: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
        indexes.map(|index| Entry { index, term, entry_type: 0, data: Bytes::from(vec![term as u8; 64]) }).collect()
    }

    /// Region 1 (on `voters`' stores) from its snapshot at 5: an old
    /// leader's entries 6..=9 of term 1; a new leader's 7..=8 of term 2,
    /// overwriting them (the record that rots); its 9..=10 of term 2,
    /// committed. Returns the WAL reopened tolerant after the middle record
    /// rotted.
    fn stitched_wal(voters: &[u64]) -> (MemDisk, Wal<MemDisk>) {
        let disk = MemDisk::new();
        let (mut wal, _) = block_on(Wal::open(disk.clone(), options(RecoveryMode::Strict))).expect("open");
        let meta = RegionMeta {
            id: REGION,
            start_key: vec![],
            end_key: vec![],
            conf_ver: 1,
            version: 1,
            peers: voters.iter().map(|&s| PeerMeta::voter(s * 10, s, 0)).collect(),
            max_peer_id: 30,
        };
        let state = RegionLocalState { meta, snapshot: Some((5, 1)), removed_peer: None, member_at_conf_ver: 0 };
        let first = RegionWrite {
            snapshot: Some(SnapshotMarker { index: 5, term: 1 }),
            meta: Some(state.encode()),
            entries: entries(6..=9, 1),
            hard_state: Some(HardState { term: 1, vote: 10, commit: 5 }),
            ..Default::default()
        };
        wal.append(REGION, first).expect("append");
        flush(&mut wal);
        let before = records(&disk);
        let overwrite = RegionWrite {
            entries: entries(7..=8, 2),
            hard_state: Some(HardState { term: 2, vote: 20, commit: 6 }),
            ..Default::default()
        };
        wal.append(REGION, overwrite).expect("append");
        flush(&mut wal);
        let (segment, rot) = records(&disk).into_iter().find(|r| !before.contains(r)).expect("a new record");
        let last = RegionWrite {
            entries: entries(9..=10, 2),
            hard_state: Some(HardState { term: 2, vote: 20, commit: 10 }),
            ..Default::default()
        };
        wal.append(REGION, last).expect("append");
        flush(&mut wal);
        drop(wal);
        disk.flip_byte(&segment, rot as u64 + 40, 0x01);
        let (wal, report) = block_on(Wal::open(disk.clone(), options(RecoveryMode::Tolerant))).expect("tolerant open");
        assert_eq!(report.dropped.len(), 1, "the overwriting record is dropped: {report:?}");
        (disk, wal)
    }

    /// The hazard: the records left make a log no leader had — 7..=8 of
    /// the old term under 9..=10 of the new one, with a commit index of 10
    /// over them.
    #[test]
    fn a_dropped_overwrite_leaves_a_stitched_log_that_recovery_restarts_from_its_snapshot() {
        let (_, wal) = stitched_wal(&[1, 2, 3]);
        assert!(wal.needs_catch_up());
        assert_eq!((wal.term(REGION, 7), wal.term(REGION, 9)), (Some(1), Some(2)), "the log replayed is stitched");
        let loaded = block_on(load_regions(&wal, 1, true)).expect("load");
        let r = &loaded[0];
        assert!(r.log_lost, "the log is dropped for the leader to send again");
        assert_eq!(r.storage.last_index().unwrap(), 5, "nothing past the snapshot is kept");
        assert_eq!(r.storage.hard_state().commit, 5, "no commit index past the snapshot");
        assert_eq!(r.storage.hard_state().term, 2, "the term is kept");
    }

    /// A region no other voter could catch up keeps what is left.
    #[test]
    fn a_region_with_no_other_voter_keeps_the_log_that_is_left() {
        let (_, wal) = stitched_wal(&[1]);
        let loaded = block_on(load_regions(&wal, 1, true)).expect("load");
        assert!(!loaded[0].log_lost);
        assert_eq!(loaded[0].storage.last_index().unwrap(), 10);
    }

    /// A peer its leader's message created (at conf_ver 3), restarted
    /// before its snapshot came, keeps the epoch it was created at: neither
    /// PD's word about an older epoch nor a member's removal notice from one
    /// removes it (campaign seeds 51867, 64922, 72258; 82), a newer word
    /// does.
    #[test]
    fn a_new_peer_restarted_before_its_snapshot_keeps_its_creating_epoch() {
        let disk = MemDisk::new();
        let (mut wal, _) = block_on(Wal::open(disk, options(RecoveryMode::Strict))).expect("open");
        let meta = RegionMeta {
            id: REGION,
            start_key: vec![],
            end_key: vec![],
            conf_ver: 0,
            version: 0,
            peers: vec![PeerMeta::voter(31, 3, 0), PeerMeta::voter(11, 1, 0)],
            max_peer_id: 0,
        };
        // (as `Shard::create_uninitialized` writes it)
        let state = RegionLocalState { meta, snapshot: None, removed_peer: None, member_at_conf_ver: 3 };
        let created = RegionWrite {
            meta: Some(state.encode()),
            hard_state: Some(HardState::default()),
            conf_state: Some(wal::ConfState::default()),
            ..Default::default()
        };
        wal.append(REGION, created).expect("append");
        flush(&mut wal);
        let files = crate::sim::store::SimFiles::default();
        let mut shard = boot_as(3, &wal, &files);
        assert_eq!(shard.region(REGION).expect("restarted").member_at_conf_ver, 3);
        let pd_says = |conf_ver| RegionMeta {
            id: REGION,
            start_key: vec![],
            end_key: vec![],
            conf_ver,
            version: 1,
            peers: vec![PeerMeta::voter(11, 1, 0), PeerMeta::voter(21, 2, 0)],
            max_peer_id: 21,
        };
        shard.on_membership_checked(REGION, 31, Some(pd_says(2)), true);
        assert!(shard.region(REGION).is_some(), "removed on PD's word about an epoch older than its creation");
        // (a member that has not applied the change adding it knows no such peer, and says so)
        let notice = transport::Envelope {
            region_id: REGION,
            start_key: Bytes::new(),
            end_key: Bytes::new(),
            epoch: transport::Epoch { conf_ver: 2, version: 1 },
            from: transport::Peer { peer_id: 11, store_id: 1, shard: 0 },
            to: transport::Target { peer_id: 31, store_id: 3, shard: 0 },
            message: Bytes::new(),
        };
        shard.on_removal_notice(notice);
        assert!(shard.region(REGION).is_some(), "removed on the notice of a member behind its creation");
        shard.on_membership_checked(REGION, 31, Some(pd_says(4)), true);
        assert!(shard.region(REGION).is_none() && shard.is_tombstone(REGION), "a newer epoch without it removes it");
    }

    /// A log reset and sent again after the loss is kept at the next
    /// tolerant open, which drops the damaged record once more (it stays
    /// until its segment is purged): it was written wholly after it.
    #[test]
    fn a_log_written_after_the_loss_is_kept_when_the_damage_is_dropped_again() {
        let (disk, mut wal) = stitched_wal(&[1, 2, 3]);
        let resent = RegionWrite {
            snapshot: Some(SnapshotMarker { index: 5, term: 1 }),
            entries: entries(6..=10, 2),
            hard_state: Some(HardState { term: 3, vote: 0, commit: 10 }),
            ..Default::default()
        };
        wal.append(REGION, resent).expect("append");
        flush(&mut wal);
        drop(wal);
        let (wal, report) = block_on(Wal::open(disk, options(RecoveryMode::Tolerant))).expect("tolerant open");
        assert_eq!(report.dropped.len(), 1, "the damaged record is dropped again");
        let loaded = block_on(load_regions(&wal, 1, true)).expect("load");
        assert!(!loaded[0].log_lost, "a log written after the loss is kept");
        assert_eq!(loaded[0].storage.last_index().unwrap(), 10);
        assert_eq!(wal.term(REGION, 7), Some(2));
    }

    /// A pending split child — its own log written after the loss — under
    /// a parent that restarts from its snapshot with no log is not kept
    /// waiting for the parent's replay (the parent replays no split here,
    /// and would refuse every snapshot while it waited): its log is reset.
    #[test]
    fn a_pending_child_under_a_parent_restarted_without_its_log_is_reset_not_awaited() {
        const CHILD: u64 = 2;
        let (_, mut wal) = stitched_wal(&[1, 2, 3]);
        let child = RegionMeta {
            id: CHILD,
            start_key: b"m".to_vec(),
            end_key: vec![],
            conf_ver: 1,
            version: 2,
            peers: [1, 2, 3].iter().map(|&s| PeerMeta::voter(s * 10 + 1, s, 0)).collect(),
            max_peer_id: 31,
        };
        let state = RegionLocalState { meta: child, snapshot: None, removed_peer: None, member_at_conf_ver: 0 };
        let created = RegionWrite {
            snapshot: Some(SnapshotMarker { index: crate::shard::RAFT_INIT_INDEX, term: crate::shard::RAFT_INIT_TERM }),
            meta: Some(state.encode()),
            hard_state: Some(HardState { term: 6, vote: 11, commit: 5 }),
            entries: entries(6..=7, 6),
            ..Default::default()
        };
        wal.append(CHILD, created).expect("append");
        flush(&mut wal);
        let files = crate::sim::store::SimFiles::default();
        // (the parent's snapshot file, as its record names it)
        let parent = block_on(load_regions(&wal, 1, true)).expect("load").remove(0);
        let snapshot = crate::snapshot::RegionSnapshot {
            meta: parent.meta.clone(),
            index: 5,
            term: 1,
            conf_state: crate::snapshot::SnapshotConf::from_raft(&parent.meta.conf_state()),
            kv: crate::kv::MemKv::default(),
        };
        block_on(crate::snapshot::SnapshotStore::write(&files, snapshot)).expect("snapshot");
        let shard = boot_as(1, &wal, &files);
        let r = shard.region(REGION).expect("the parent");
        assert_eq!(r.raw.raft.raft_log.last_index(), 5, "the parent restarts from its snapshot");
        assert!(r.children_unrecorded.is_empty(), "the parent waits on no child");
        assert!(!shard.pending_children.contains_key(&CHILD), "the child is not kept pending");
        assert_eq!(shard.staged.len(), 2, "the parent's reset and the child's are staged");
    }
}
