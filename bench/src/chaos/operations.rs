//! The PD nemesis: forced splits, replica moves and leader transfers while
//! the process nemesis crashes, pauses and partitions — Jepsen's TiDB
//! nemesis shuffles regions the same way. Every `op_interval` (±50%) it
//! draws one: a split of the region holding a random slot's key at that
//! key (the ids from PD's allocator, as `ringraft ctl split` does), a move
//! of a random region's replica to a store without one (a PD operator: a
//! learner, then a joint change), or a transfer of a region's leadership
//! to a follower. What the cluster refuses (PD down, no leader, a region
//! changed meanwhile) is not a fault of the run; it is counted apart.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::client::kv_client::KvClient;
use engine::shard::SplitRequest;
use transport::SeededRng;

use super::clients::Keys;
use super::nemesis::{FaultKind, FaultRecord};

/// Regions past which the run stops splitting (each split doubles no work
/// the checker needs, only the cluster's).
pub const CHAOS_REGIONS_MAX: usize = 64;

/// What the PD nemesis did, and what the cluster refused it.
#[derive(Default)]
pub struct OperationsDone {
    pub records: Vec<FaultRecord>,
    pub refused: u64,
}

pub struct OperationsConfig {
    pub seed: u64,
    pub pd_addr: SocketAddr,
    pub interval: Duration,
    pub keys: Arc<Keys>,
    pub origin: Instant,
    pub stop: Arc<AtomicBool>,
}

/// Runs until `stop`.
pub fn run_operations(cfg: OperationsConfig) -> OperationsDone {
    let mut rng = SeededRng::new(cfg.seed ^ 0x6f70_6572_6174_6f72);
    let mut done = OperationsDone::default();
    let mut pd = pd::PdClient::new(cfg.pd_addr, 0);
    pd.set_timeout(Duration::from_secs(2));
    let mut client: Option<KvClient> = None;
    let ms = cfg.interval.as_millis() as u64;
    let mut next = Instant::now() + Duration::from_millis(rng.between(ms / 2, ms + ms / 2));
    while !cfg.stop.load(Relaxed) {
        if Instant::now() < next {
            std::thread::sleep((next - Instant::now()).min(Duration::from_millis(100)));
            continue;
        }
        next = Instant::now() + Duration::from_millis(rng.between(ms / 2, ms + ms / 2));
        if client.is_none() {
            client = KvClient::with_pd(cfg.pd_addr).ok();
        }
        let Some(c) = client.as_mut() else {
            done.refused += 1;
            continue;
        };
        let start_us = cfg.origin.elapsed().as_micros() as u64;
        let r = match rng.between(0, 9) {
            0..=3 => split(&mut rng, &cfg.keys, &mut pd, c),
            4..=6 => move_replica(&mut rng, &mut pd),
            _ => transfer_leader(&mut rng, &mut pd, c),
        };
        match r {
            Ok((kind, what)) => {
                tracing::info!("chaos: {what}");
                done.records.push(FaultRecord { kind, what, start_us, end_us: None });
            }
            Err(e) => {
                tracing::debug!("chaos: PD nemesis: {e}");
                done.refused += 1;
            }
        }
    }
    done
}

fn pick<T: Clone>(rng: &mut SeededRng, from: &[T]) -> Option<T> {
    (!from.is_empty()).then(|| from[rng.between(0, from.len() as u64 - 1) as usize].clone())
}

fn split(
    rng: &mut SeededRng,
    keys: &Keys,
    pd: &mut pd::PdClient,
    client: &mut KvClient,
) -> Result<(FaultKind, String), String> {
    let regions = pd.all_regions().map_err(|e| e.to_string())?;
    if regions.len() >= CHAOS_REGIONS_MAX {
        return Err(format!("{} regions: no more splits", regions.len()));
    }
    let key = keys.current(rng.between(0, keys.slots() as u64 - 1) as usize);
    let region = client.region_of(&key).map_err(|e| e.to_string())?;
    if key == region.start_key {
        return Err("the key starts its region already".into());
    }
    let first = pd.alloc_ids(SplitRequest::ids_needed(region.peers.len())).map_err(|e| e.to_string())?;
    let request = SplitRequest::with_ids(key.clone(), first, region.peers.len());
    let (left, right) = client.split(region.id, request).map_err(|e| e.to_string())?;
    Ok((
        FaultKind::Split,
        format!("split region {} at {:?}: new region {}", left.id, String::from_utf8_lossy(&key), right.id),
    ))
}

fn move_replica(rng: &mut SeededRng, pd: &mut pd::PdClient) -> Result<(FaultKind, String), String> {
    let regions = pd.all_regions().map_err(|e| e.to_string())?;
    let (stores, _) = pd.stores().map_err(|e| e.to_string())?;
    let region = pick(rng, &regions).ok_or("no regions")?;
    let holders: Vec<u64> = region.region.peers.iter().map(|p| p.store_id).collect();
    let free: Vec<u64> = stores.iter().map(|s| s.store.id).filter(|id| !holders.contains(id)).collect();
    let (Some(from), Some(to)) = (pick(rng, &holders), pick(rng, &free)) else {
        return Err(format!("region {}: no store to move to", region.region.id));
    };
    pd.move_region(region.region.id, from, to).map_err(|e| e.to_string())?;
    Ok((FaultKind::Move, format!("move region {}'s replica from store {from} to store {to}", region.region.id)))
}

fn transfer_leader(
    rng: &mut SeededRng,
    pd: &mut pd::PdClient,
    client: &mut KvClient,
) -> Result<(FaultKind, String), String> {
    let regions = pd.all_regions().map_err(|e| e.to_string())?;
    let region = pick(rng, &regions).ok_or("no regions")?;
    let leader = region.leader.as_ref().ok_or(format!("region {}: no leader known", region.region.id))?.store_id;
    let followers: Vec<u64> = region
        .region
        .peers
        .iter()
        .filter(|p| p.store_id != leader && p.role == pd::meta::PeerRole::Voter)
        .map(|p| p.store_id)
        .collect();
    let to = pick(rng, &followers).ok_or(format!("region {}: no follower", region.region.id))?;
    client.transfer_leader(region.region.id, to).map_err(|e| e.to_string())?;
    Ok((FaultKind::TransferLeader, format!("transfer region {}'s leadership to store {to}", region.region.id)))
}
