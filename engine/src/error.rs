//! Region errors: data a client acts on (docs/design.md, "Clients, errors and outcomes"), not strings.

use bincode::{Decode, Encode};

use crate::region::meta::{PeerMeta, RegionMeta};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Encode, Decode)]
pub enum RegionError {
    /// This peer does not lead the region; `leader` is the one it knows of.
    #[error("region {region}: not the leader (leader: {leader:?})")]
    NotLeader { region: u64, leader: Option<PeerMeta> },
    /// The request was meant for another store than the one it reached.
    #[error("request for store {request_store} reached store {actual_store}")]
    StoreNotMatch { request_store: u64, actual_store: u64 },
    #[error("region {region} is not on this shard")]
    RegionNotFound { region: u64 },
    #[error("key {key:?} is not in region {region} [{start:?}, {end:?})")]
    KeyNotInRegion { key: Vec<u8>, region: u64, start: Vec<u8>, end: Vec<u8> },
    /// The request's epoch is not the region's; `current` is what the
    /// region is now, `split_off` the regions split off it lately as this
    /// store has them (a client learns where its keys went without asking PD).
    #[error("region {}: epoch changed (now conf_ver {} version {})", .current.id, .current.conf_ver, .current.version)]
    EpochNotMatch { current: Box<RegionMeta>, split_off: Vec<RegionMeta> },
    /// One command larger than an entry may be: it can never be written.
    #[error("region {region}: a command of {bytes} bytes is over the entry limit of {max}")]
    TooLarge { region: u64, bytes: usize, max: usize },
    /// The shard holds as much as its memory limit allows (every region's log
    /// and state live in memory): writes are refused before memory runs out.
    #[error("shard memory limit reached: {used_bytes} of {limit_bytes} bytes in use; writes are refused (raise --memory-limit or add stores)")]
    MemoryFull { used_bytes: usize, limit_bytes: usize },
    /// Too many writes waiting in this region; retry after `backoff_ms`.
    #[error("region {region}: busy, retry in {backoff_ms} ms")]
    ServerIsBusy { region: u64, backoff_ms: u64 },
    /// The write was proposed, and then the leader lost track of it (lost
    /// leadership, timed out): it may or may not be applied. Never retried blindly.
    #[error("region {region}: the write's outcome is unknown")]
    Ambiguous { region: u64 },
    /// An admin command the region cannot carry out as asked (a membership
    /// change that makes no sense, or while another is in progress).
    #[error("region {region}: {reason}")]
    Refused { region: u64, reason: String },
    /// The request was meant for another cluster than the store's (a
    /// client whose PD or spec is another cluster's).
    #[error("a request for cluster {request_cluster} reached a store of cluster {actual_cluster}")]
    ClusterNotMatch { request_cluster: u64, actual_cluster: u64 },
    /// The store's disk is full: its log cannot grow, so writes other than
    /// deletes are refused until space is freed (nothing was written).
    #[error("the store's disk is full: writes other than deletes are refused until space is freed")]
    DiskFull,
}

impl RegionError {
    /// `EpochNotMatch` naming the region as it is now (the shard adds the
    /// regions split off it when it answers: `Shard::reply`).
    pub fn epoch_not_match(current: &RegionMeta) -> RegionError {
        RegionError::EpochNotMatch { current: Box::new(current.clone()), split_off: vec![] }
    }

    /// Whether the request certainly had no effect (so it is safe to retry).
    pub fn is_definite(&self) -> bool {
        !matches!(self, RegionError::Ambiguous { .. })
    }
}
