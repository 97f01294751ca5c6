//! The one boot path of a shard, for both drivers (the glommio runtime and
//! the simulator): the bootstrap decision, recovery from the WAL, and the
//! snapshot sweep, in one function over the recovered `Wal` and the
//! driver's `SnapshotStore`. Everything a restart depends on is decided
//! here, so the simulator's crashes and restarts exercise the code a real
//! store runs.
//!
//! - A WAL that holds no region is a first start: the store's initial
//!   regions that have a peer on this shard are created, each from the
//!   empty snapshot at `RAFT_INIT_INDEX`, whose file is durable before the
//!   shard's first persist batch names it. (Leftover files of an earlier,
//!   interrupted first start are swept first.)
//! - Otherwise the WAL is authoritative and the initial regions are never
//!   looked at again (a restart must not resurrect a removed peer): every
//!   live region is loaded with the snapshot its record names, and starts
//!   from that snapshot's meta and membership (its log replays every change
//!   since); every tombstone is kept; a split child whose initial state was
//!   not durable is kept aside for its parent's replay to create again; and
//!   snapshot files the WAL does not name — partial writes, replaced
//!   snapshots, received files never installed — go.
//! - Either way the shard's vote table (`crate::votes`) is read: a region
//!   whose WAL lost a vote (a damaged last record, cut at recovery) gets it
//!   back from the table, and later tables count on from its generation.
//! - A WAL that lost records (a tolerant recovery, now or before: its
//!   needs-catch-up flag) makes every region suspect (`catch_up.rs`).

use std::collections::BTreeSet;

use wal::disk::Disk;
use wal::Wal;

use crate::region::meta::RegionMeta;
use crate::snapshot::files::SnapshotFileError;
use crate::snapshot::SnapshotStore;
use crate::votes::{newer, VoteStore};

use super::recover::{load_regions, load_tombstones, LoadError};
use super::{RegionInit, Shard, ShardLimits};

/// Who the shard is and what it starts with.
pub struct BootOptions<'a> {
    pub store_id: u64,
    pub shard: u16,
    /// Seeds the shard's random choices (election timeouts).
    pub seed: u64,
    pub limits: ShardLimits,
    /// The regions the store was given at its first start (from PD or a
    /// spec); used only when the WAL is empty.
    pub initial_regions: &'a [RegionMeta],
}

/// How a shard started, for its log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootReport {
    /// An empty WAL: `regions` initial regions created.
    FirstStart { regions: usize },
    /// Regions and tombstones recovered from the WAL; `swept` snapshot files removed.
    Recovered { regions: usize, tombstones: usize, swept: usize },
}

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("load regions: {0}")]
    Load(#[from] LoadError),
    #[error("region {region}: loading its snapshot: {source}")]
    LoadSnapshot { region: u64, source: SnapshotFileError },
    #[error("region {region}: writing its initial snapshot: {source}")]
    WriteSnapshot { region: u64, source: SnapshotFileError },
    #[error("snapshot directory: {0}")]
    Sweep(SnapshotFileError),
    #[error("the vote table: {0} (the votes it held are lost: this replica must not start; see docs/quickstart.md, \"When a store refuses to start\")")]
    Votes(String),
    #[error("region {region}: {what}")]
    VoteConflict { region: u64, what: String },
}

/// Builds the shard from its recovered WAL, or from its initial regions
/// when the WAL holds none.
pub async fn boot<D: Disk, S: SnapshotStore + VoteStore>(
    wal: &Wal<D>,
    files: &S,
    opts: BootOptions<'_>,
) -> Result<(Shard, BootReport), BootError> {
    let mut shard = Shard::new(opts.store_id, opts.shard, opts.seed, opts.limits);
    // (read at a first start too: later tables must count on from its generation)
    let table = files.read_votes().await.map_err(BootError::Votes)?.unwrap_or_default();
    if wal.regions().next().is_none() && wal.needs_catch_up() {
        // every record was dropped: never a first start (it would forget
        // every vote); regions come back from their leaders, suspect
        tracing::warn!(shard = opts.shard, "the WAL lost every record: no region until leaders recreate them");
        shard.init_votes(&table);
        shard.start_catch_up();
        return Ok((shard, BootReport::Recovered { regions: 0, tombstones: 0, swept: 0 }));
    }
    if wal.regions().next().is_none() {
        files.sweep(BTreeSet::new()).await.map_err(BootError::Sweep)?;
        let mine =
            opts.initial_regions.iter().filter(|m| m.peer_on(opts.store_id).is_some_and(|p| p.shard == opts.shard));
        let mut regions = 0;
        for m in mine {
            let region = m.id;
            let (init, snap) = RegionInit::bootstrap(m.clone());
            files.write(snap).await.map_err(|source| BootError::WriteSnapshot { region, source })?;
            shard.create_region(init);
            regions += 1;
        }
        shard.init_votes(&table);
        return Ok((shard, BootReport::FirstStart { regions }));
    }
    let (mut pending, mut loaded): (Vec<_>, Vec<_>) =
        load_regions(wal, opts.store_id, wal.needs_catch_up()).await?.into_iter().partition(|r| r.pending_child);
    // a vote the WAL lost (its record damaged and cut) is restored from the table
    for r in loaded.iter_mut().chain(pending.iter_mut()) {
        let region = r.meta.id;
        let Some(&(term, vote)) = table.votes.get(&region) else { continue };
        let mut hs = r.storage.hard_state().clone();
        if newer((term, vote), (hs.term, hs.vote)).map_err(|what| BootError::VoteConflict { region, what })? {
            tracing::warn!(
                region,
                term,
                vote,
                wal_term = hs.term,
                wal_vote = hs.vote,
                "vote restored from the vote table"
            );
            (hs.term, hs.vote) = (term, vote);
            r.storage.set_hard_state(hs);
        }
    }
    // (a pending child whose log cannot be trusted is not kept: with nothing
    // pending for it, its parent's replayed split creates it afresh; nor is
    // one under a region with no log past its snapshot — dropped now or at
    // an earlier boot —, which has no split to replay)
    let restarted_without_log: BTreeSet<u64> = loaded
        .iter()
        .filter(|r| raft::Storage::last_index(&r.storage).ok() == Some(r.snapshot.map_or(0, |s| s.index)))
        .map(|r| r.meta.id)
        .collect();
    let (untrusted, kept): (Vec<_>, Vec<_>) = pending.into_iter().partition(|r| r.log_lost);
    pending = kept;
    for r in untrusted {
        shard.reset_pending_child_log(r.meta.id, r.storage.hard_state());
    }
    let tombstones = load_tombstones(wal)?;
    let report_tombstones = tombstones.len();
    for (region, removed_peer, meta, member_at_conf_ver) in tombstones {
        shard.add_tombstone(region, removed_peer, &meta, member_at_conf_ver);
    }
    let named: BTreeSet<_> = loaded.iter().filter_map(|r| r.snapshot).collect();
    let swept = files.sweep(named).await.map_err(BootError::Sweep)?;
    let regions = loaded.len();
    for r in loaded {
        let snapshot = match r.snapshot {
            None => None,
            Some(id) => {
                Some(files.read(id).await.map_err(|source| BootError::LoadSnapshot { region: id.region, source })?)
            }
        };
        let (mut meta, mut storage) = (r.meta, r.storage);
        if let Some(s) = &snapshot {
            // The region restarts as of its snapshot, with the meta and
            // membership it had then; replaying the log after it re-applies
            // every split and membership change since, as they first applied
            // (the WAL's newest meta would refuse replayed writes proposed
            // under an older version, and a conf change replayed onto the
            // newest ConfState would give another configuration).
            meta = s.meta.clone();
            storage.set_conf_state(s.conf_state.to_raft());
        }
        // (a log lost back to its snapshot is reset to it in the WAL, as a fresh region's is)
        let member_at_conf_ver = r.member_at_conf_ver;
        shard.create_region(RegionInit { meta, storage, snapshot, fresh: r.log_lost, member_at_conf_ver });
    }
    // (a split child whose initial state was not durable: its parent's replay creates it)
    shard.add_pending_children(pending.into_iter().map(|r| (r.meta, r.storage)).collect(), &restarted_without_log);
    shard.init_votes(&table);
    if wal.needs_catch_up() {
        shard.start_catch_up();
    }
    Ok((shard, BootReport::Recovered { regions, tombstones: report_tombstones, swept }))
}
