//! What goes into a shard's loop iteration and what comes out of it. The
//! runtime (glommio, or the simulator) turns `Output`s into I/O and I/O
//! completions into `Input`s; the shard itself does no I/O.

use std::path::PathBuf;

use transport::{Destination, Envelope, FlushedFrame};

use crate::client::protocol::ClientRequest;
use crate::error::RegionError;
use crate::kv::Command;
use crate::region::meta::{Epoch, PeerChange, RegionMeta};
use crate::snapshot::{RegionSnapshot, SnapshotId};

pub enum Input {
    /// One raft tick for every region.
    Tick,
    /// The WAL cannot move to a new segment for lack of disk space (`full`),
    /// or can again: while full, client writes other than deletes are
    /// refused (`RegionError::DiskFull`), keeping what room the active
    /// segment has left for raft's own records, deletes and admin commands
    /// (PD moving replicas off the store); once it is full those wait too.
    /// The drivers tell the shard when it changes (`driver::disk_full_change`).
    DiskFull { full: bool },
    /// A request from a client connection, as it came off the wire: admission
    /// (`admission.rs`) checks that it is meant for this store and turns it
    /// into one of the requests below. `request` is the shard's own id for it.
    Client { request: u64, req: ClientRequest },
    /// A client write, to be proposed with the region's other writes of this iteration.
    Write { request: u64, region: u64, epoch: Epoch, command: Command },
    /// A linearizable read (served after a ReadIndex round).
    Read { request: u64, region: u64, key: Vec<u8> },
    /// A linearizable scan of [start, end) within the region (end empty: to
    /// the region's end), at most `limit` rows.
    Scan { request: u64, region: u64, start: Vec<u8>, end: Vec<u8>, limit: usize },
    /// Asks the region's leader to hand leadership to `to_peer` (best effort:
    /// answered at once; the client watches for the new leader).
    TransferLeader { request: u64, region: u64, to_peer: u64 },
    /// The region's meta, answered by its leader.
    DescribeRegion { request: u64, region: u64 },
    /// A membership change, proposed by the region's leader, answered once applied.
    ChangePeer { request: u64, region: u64, epoch: Epoch, change: PeerChange },
    /// A split of the region at `split_key` with ids PD allocated: proposed
    /// by the region's leader, answered once applied (`split.rs`).
    Split { request: u64, region: u64, epoch: Epoch, split: SplitRequest },
    /// A `FindSplitKey` job's answer: the region's bytes and the key that
    /// halves them (`None`: it cannot split).
    SplitKeyFound { region: u64, epoch: Epoch, bytes: u64, key: Option<Vec<u8>> },
    /// A raft message from a peer shard.
    Raft(Envelope),
    /// PD's answer to `Output::CheckMembership`: the region as PD has it
    /// (`None`: PD does not know it), and whether a leader of it reported
    /// since PD started (else PD's meta is what it saved, maybe older than
    /// what a peer knows).
    MembershipChecked { region: u64, peer_id: u64, current: Option<Box<RegionMeta>>, reported: bool },
    /// The persist batch `batch`'s writes are on disk (the WAL acknowledges
    /// them once a record follows: `Persisted`); the next batch may go.
    Written { batch: u64 },
    /// The persist batch `batch` is durable (acknowledged by the WAL), and
    /// so is every batch before it.
    Persisted { batch: u64 },
    /// Messages to these regions were dropped by the transport.
    Unreachable { regions: Vec<u64>, store_id: u64 },
    /// A `WriteSnapshot` finished: the file is durable (Ok, its size) or not.
    SnapshotWritten { id: SnapshotId, result: Result<u64, String> },
    /// A snapshot from a leader: `envelope` carries its `MsgSnapshot`,
    /// `snapshot` what the durable, verified `file` holds.
    Snapshot { envelope: Envelope, snapshot: Box<RegionSnapshot>, file: PathBuf },
    /// How sending a snapshot to `to_peer` ended (raft's `report_snapshot`).
    SnapshotSent { region: u64, to_peer: u64, ok: bool },
    /// The WAL's purge found these regions pinning old segments: compact them.
    CompactRequested { regions: Vec<u64> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// A put or delete was applied.
    Done,
    /// A compare-and-swap was applied: whether it matched.
    Cas(bool),
    /// A read's value.
    Value(Option<Vec<u8>>),
    /// A scan's rows, in key order.
    Rows(Vec<(Vec<u8>, Vec<u8>)>),
    /// A region's meta.
    Region(Box<crate::region::meta::RegionMeta>),
    /// A split applied: the region as it is now, and the new one.
    Split(Box<(RegionMeta, RegionMeta)>),
}

/// What a split asks for: the key the new region starts at, and its ids
/// (from PD's allocator: one region id, one peer id per peer of the region).
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct SplitRequest {
    pub split_key: Vec<u8>,
    pub new_region_id: u64,
    pub new_peer_ids: Vec<u64>,
}

impl SplitRequest {
    /// How many ids a split of a region of `peers` peers takes from PD's
    /// allocator: the new region's, then one per peer.
    pub fn ids_needed(peers: usize) -> u32 {
        1 + peers as u32
    }

    /// The split at `split_key` with the ids PD handed out from `first`
    /// (`ids_needed` of them, in that order).
    pub fn with_ids(split_key: Vec<u8>, first: u64, peers: usize) -> SplitRequest {
        SplitRequest { split_key, new_region_id: first, new_peer_ids: (first + 1..=first + peers as u64).collect() }
    }
}

/// What a read asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    Get(Vec<u8>),
    Scan { start: Vec<u8>, end: Vec<u8>, limit: usize },
}

pub enum Output {
    /// Make these region writes durable through the WAL: report
    /// `Input::Written { batch }` once they are on disk, then
    /// `Input::Persisted { batch }` once the WAL acknowledges them (a record
    /// after theirs is on disk too). At most one batch is issued and not yet
    /// written; the next one's writes are what acknowledges it.
    /// `installs`: received snapshot files to move into their place (and
    /// the directory fsynced) before the writes, which record them.
    /// `votes`: when a write of the batch changes a region's (term, vote),
    /// the shard's whole vote table, to be made durable too before the batch
    /// counts as durable (`crate::votes`).
    Persist {
        batch: u64,
        writes: Vec<(u64, wal::RegionWrite)>,
        installs: Vec<(PathBuf, SnapshotId)>,
        votes: Option<crate::votes::VoteTable>,
    },
    /// One frame per destination (store, shard).
    Frames(Vec<FlushedFrame>),
    Reply {
        request: u64,
        result: Result<Response, RegionError>,
    },
    /// Write this snapshot durably (off the loop), then report `SnapshotWritten`.
    WriteSnapshot(Box<RegionSnapshot>),
    /// Stream snapshot `id`'s file to a follower; report `SnapshotSent`.
    SendSnapshot {
        to: Destination,
        envelope: Envelope,
        id: SnapshotId,
    },
    /// A snapshot file no longer needed (a newer one is recorded durably).
    RemoveSnapshot(SnapshotId),
    /// A received snapshot file that will not be installed.
    DiscardIncoming(PathBuf),
    /// Every region that needed catch-up has caught up: clear the WAL's
    /// needs-catch-up flag (`Wal::clear_needs_catch_up`).
    CaughtUp,
    /// Find where to split a region past the split size, off the loop
    /// (`SplitKeyJob::run` on its O(1) clone of the state); report
    /// `Input::SplitKeyFound`.
    FindSplitKey(Box<SplitKeyJob>),
    /// Ask PD for a new region id and `peers` peer ids, then hand the split
    /// back as `Input::Split` (with a request id of the driver's own).
    AskSplit {
        region: u64,
        epoch: Epoch,
        split_key: Vec<u8>,
        peers: usize,
    },
    /// A follower that heard from no leader for a while (`shard::stale`), a
    /// tombstone old enough to go (`shard::tombstone`), or a vote request for
    /// a peer not here (`shard::vouched`): ask PD for the region and answer
    /// `Input::MembershipChecked`.
    CheckMembership {
        region: u64,
        peer_id: u64,
    },
}

/// A region's state to find a split key in, off the shard loop.
pub struct SplitKeyJob {
    pub region: u64,
    pub epoch: Epoch,
    pub start: Vec<u8>,
    pub end: Vec<u8>,
    pub kv: crate::kv::MemKv,
}

impl SplitKeyJob {
    /// The answer to hand back as an input (O(keys of the region)).
    pub fn run(self) -> Input {
        let (bytes, key) = self.kv.middle_key(&self.start, &self.end);
        Input::SplitKeyFound { region: self.region, epoch: self.epoch, bytes, key }
    }
}
