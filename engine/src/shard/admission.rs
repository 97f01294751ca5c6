//! Admission: every check a client request passes before it is queued for
//! its region's next proposal or ReadIndex — the store it was meant for, the
//! region, the key's range, leadership, the epoch it was routed by, and the
//! shard's limits (memory, entry size, staged bytes, queued writes). A
//! refusal here is definite: nothing was proposed.

use crate::client::protocol::{ClientOp, ClientRequest};
use crate::error::RegionError;
use crate::kv::StateMachine as _;
use crate::kv::{Command, WriteBatch};
use crate::region::peer::{Region, PENDING_WRITES_MAX, PROPOSALS_MAX};

use super::{
    Query, Response, Shard, BUSY_BACKOFF_MS, REGION_SPLIT_BACKPRESSURE_FACTOR, SCAN_ROWS_MAX, STAGED_BYTES_MAX,
};

impl Shard {
    /// A request off a client connection: refused unless it is meant for this
    /// store (a client with another cluster's spec, or a stale cache), then
    /// handled as the operation it carries.
    pub(super) fn on_client(&mut self, request: u64, req: ClientRequest) {
        if req.store_id != self.store_id {
            let err = RegionError::StoreNotMatch { request_store: req.store_id, actual_store: self.store_id };
            return self.reply(request, Err(err));
        }
        let (region, epoch) = (req.region, req.epoch());
        match req.op {
            ClientOp::Get { key } => self.on_read(request, region, Query::Get(key)),
            ClientOp::Scan { start, end, limit } => {
                let limit = (limit as usize).min(SCAN_ROWS_MAX);
                self.on_read(request, region, Query::Scan { start, end, limit })
            }
            ClientOp::TransferLeader { to_peer } => self.on_transfer_leader(request, region, to_peer),
            ClientOp::ChangePeer(change) => self.on_change_peer(request, region, epoch, change),
            ClientOp::DescribeRegion => self.on_describe_region(request, region),
            ClientOp::Split(split) => self.on_split(request, region, epoch, split),
            ClientOp::Write(command) => self.on_write(request, region, epoch, command),
        }
    }

    /// The region a request for `key` goes to, if this peer leads it and
    /// the key is in its range.
    fn check_request(&self, region: u64, key: &[u8]) -> Result<&Region, RegionError> {
        let r = self.regions.get(&region).ok_or(RegionError::RegionNotFound { region })?;
        if !r.meta.contains(key) {
            return Err(RegionError::KeyNotInRegion {
                key: key.to_vec(),
                region,
                start: r.meta.start_key.clone(),
                end: r.meta.end_key.clone(),
            });
        }
        if !r.is_leader() || r.fenced.is_some() {
            let leader = if r.fenced.is_some() { None } else { r.leader() };
            return Err(RegionError::NotLeader { region, leader });
        }
        Ok(r)
    }

    /// A write joins its region's queue for the next proposal, or is
    /// refused with the reason the client acts on.
    pub(super) fn on_write(&mut self, request: u64, region: u64, epoch: transport::Epoch, command: Command) {
        let (entry_max, staged_full) = (self.limits.entry_bytes_max, self.staged.bytes() > STAGED_BYTES_MAX);
        let (used_bytes, limit_bytes) = (self.memory_bytes, self.limits.memory_bytes_max);
        let disk_full = self.disk_full;
        let too_big = self.limits.region_split_bytes.saturating_mul(REGION_SPLIT_BACKPRESSURE_FACTOR);
        let checked = self.check_request(region, command.key()).and_then(|r| {
            if used_bytes >= limit_bytes && !matches!(command, Command::Delete { .. }) {
                return Err(RegionError::MemoryFull { used_bytes, limit_bytes });
            }
            if disk_full && !matches!(command, Command::Delete { .. }) {
                return Err(RegionError::DiskFull);
            }
            if epoch != r.meta.epoch() {
                return Err(RegionError::epoch_not_match(&r.meta));
            }
            let alone = WriteBatch::size_bound(std::slice::from_ref(&command));
            if alone > entry_max {
                return Err(RegionError::TooLarge { region, bytes: alone, max: entry_max });
            }
            if r.kv.bytes() as u64 > too_big && !r.untrimmed && r.split_proposed.is_none() {
                // it could not split (PD unreachable, the split refused): slow
                // its writers rather than grow without bound
                return Err(RegionError::ServerIsBusy { region, backoff_ms: BUSY_BACKOFF_MS });
            }
            let full = r.pending_write_bytes + command.size() > entry_max;
            if full || staged_full || r.pending_writes.len() >= PENDING_WRITES_MAX || r.proposals.len() >= PROPOSALS_MAX
            {
                return Err(RegionError::ServerIsBusy { region, backoff_ms: BUSY_BACKOFF_MS });
            }
            Ok(())
        });
        match checked {
            Err(e) => {
                if e == RegionError::DiskFull {
                    self.stats.writes_refused_disk_full += 1;
                }
                self.reply(request, Err(e))
            }
            Ok(()) => {
                let r = self.regions.get_mut(&region).expect("checked");
                if r.pending_writes.is_empty() {
                    r.pending_write_bytes = crate::kv::command::BATCH_OVERHEAD_BYTES_MAX;
                }
                r.pending_write_bytes += command.size();
                r.pending_writes.push((request, command));
            }
        }
    }

    /// A read or scan joins its region's queue for the next ReadIndex.
    pub(super) fn on_read(&mut self, request: u64, region: u64, query: Query) {
        let key = match &query {
            Query::Get(key) => key,
            Query::Scan { start, .. } => start,
        };
        match self.check_request(region, key) {
            Err(e) => self.reply(request, Err(e)),
            Ok(_) => self.regions.get_mut(&region).expect("checked").pending_reads.push((request, query)),
        }
    }

    /// Asks raft to hand leadership to `to_peer` (answered at once: the
    /// client watches for the new leader).
    pub(super) fn on_transfer_leader(&mut self, request: u64, region: u64, to_peer: u64) {
        let result = match self.regions.get_mut(&region) {
            None => Err(RegionError::RegionNotFound { region }),
            Some(r) if !r.is_leader() => Err(RegionError::NotLeader { region, leader: r.leader() }),
            Some(r) if r.meta.peer(to_peer).is_none() => Err(RegionError::epoch_not_match(&r.meta)),
            Some(r) if !r.meta.is_lasting_voter(to_peer) => Err(RegionError::Refused {
                region,
                reason: format!(
                    "peer {to_peer} is a {}: leadership goes only to a voter that stays one",
                    r.meta.peer(to_peer).expect("checked").role.name()
                ),
            }),
            Some(r) => {
                r.raw.transfer_leader(to_peer);
                Ok(Response::Done)
            }
        };
        self.reply(request, result);
    }

    /// The region's meta, as its leader has it.
    pub(super) fn on_describe_region(&mut self, request: u64, region: u64) {
        let result = match self.regions.get(&region) {
            None => Err(RegionError::RegionNotFound { region }),
            Some(r) if !r.is_leader() => Err(RegionError::NotLeader { region, leader: r.leader() }),
            Some(r) => Ok(Response::Region(Box::new(r.meta.clone()))),
        };
        self.reply(request, result);
    }
}
