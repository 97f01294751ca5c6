//! The cluster spec: which stores exist, where each listens, and the
//! initial regions with their peers. Until the placement driver exists it is
//! how a store learns its id, its peers' addresses and (at its first start
//! only) its regions; tests and simulations keep using it.
//!
//! JSON, for example:
//! ```json
//! { "cluster_id": 1,
//!   "stores": [ { "id": 1, "peer_addr": "127.0.0.1:20160", "client_addr": "127.0.0.1:20170", "shards": 1 } ],
//!   "regions": [ { "id": 1, "start_key": "", "end_key": "", "peers": [ { "peer_id": 101, "store_id": 1, "shard": 0 } ] } ] }
//! ```
//! Keys are UTF-8 strings in the file. Shard `i` of a store listens on the
//! store's base ports + `i`.

use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::region::meta::{PeerMeta, RegionMeta};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreSpec {
    pub id: u64,
    /// Base peer port: shard i listens on port + i.
    pub peer_addr: SocketAddr,
    /// Base client port: shard i listens on port + i.
    pub client_addr: SocketAddr,
    pub shards: u16,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerSpec {
    pub peer_id: u64,
    pub store_id: u64,
    pub shard: u16,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionSpec {
    pub id: u64,
    pub start_key: String,
    pub end_key: String,
    pub peers: Vec<PeerSpec>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSpec {
    pub cluster_id: u64,
    pub stores: Vec<StoreSpec>,
    pub regions: Vec<RegionSpec>,
    /// The regions exactly as PD had them — binary keys, epochs after
    /// splits and membership changes — in a spec made from PD's view
    /// (`from_pd`): `region_metas` gives these. Never read from or written
    /// to a file (a spec file describes a cluster's first start).
    #[serde(skip)]
    pub pd_regions: Option<Vec<RegionMeta>>,
    /// The PD that view came from: a tool routing by it asks PD again for
    /// a key no region it knows holds (after splits it has not all seen).
    #[serde(skip)]
    pub pd_addr: Option<SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: not a cluster spec: {source}")]
    Parse { path: String, source: serde_json::Error },
    #[error("cluster spec: {0}")]
    Invalid(String),
}

impl StoreSpec {
    pub fn peer_addr_of(&self, shard: u16) -> SocketAddr {
        pd::meta::shard_addr(self.peer_addr, shard)
    }

    pub fn client_addr_of(&self, shard: u16) -> SocketAddr {
        pd::meta::shard_addr(self.client_addr, shard)
    }
}

impl ClusterSpec {
    pub fn load(path: &Path) -> Result<ClusterSpec, SpecError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read { path: shown.clone(), source })?;
        let spec: ClusterSpec =
            serde_json::from_str(&text).map_err(|source| SpecError::Parse { path: shown, source })?;
        spec.validate()?;
        Ok(spec)
    }

    pub fn store(&self, id: u64) -> Option<&StoreSpec> {
        self.stores.iter().find(|s| s.id == id)
    }

    /// Every region as meta: as PD had it (`pd_regions`), or as a spec file
    /// describes a first start (epoch 1/1).
    pub fn region_metas(&self) -> Vec<RegionMeta> {
        if let Some(exact) = &self.pd_regions {
            return exact.clone();
        }
        self.regions
            .iter()
            .map(|r| RegionMeta {
                id: r.id,
                start_key: r.start_key.as_bytes().to_vec(),
                end_key: r.end_key.as_bytes().to_vec(),
                conf_ver: 1,
                version: 1,
                peers: r.peers.iter().map(|p| PeerMeta::voter(p.peer_id, p.store_id, p.shard)).collect(),
                max_peer_id: r.peers.iter().map(|p| p.peer_id).max().unwrap_or(0),
            })
            .collect()
    }

    /// The cluster as PD at `pd_addr` sees it now, as a spec: for tools
    /// that route by a fixed layout (the bench's pipelined driver) in a
    /// cluster whose regions do not move while they run.
    pub fn from_pd(pd_addr: SocketAddr) -> Result<ClusterSpec, String> {
        let mut pd = pd::PdClient::new(pd_addr, 0);
        let (stores, _) = pd.stores().map_err(|e| e.to_string())?;
        let regions = pd.all_regions().map_err(|e| e.to_string())?;
        // (the spec's text keys are for display; routing uses `pd_regions`)
        let key = |k: &[u8]| Ok::<_, String>(k.escape_ascii().to_string());
        let spec = ClusterSpec {
            cluster_id: pd.cluster_id(),
            stores: stores
                .iter()
                .map(|v| StoreSpec {
                    id: v.store.id,
                    peer_addr: v.store.peer_addr,
                    client_addr: v.store.client_addr,
                    shards: v.store.shards,
                })
                .collect(),
            regions: regions
                .iter()
                .map(|v| {
                    Ok(RegionSpec {
                        id: v.region.id,
                        start_key: key(&v.region.start_key)?,
                        end_key: key(&v.region.end_key)?,
                        peers: v
                            .region
                            .peers
                            .iter()
                            .map(|p| PeerSpec { peer_id: p.peer_id, store_id: p.store_id, shard: p.shard })
                            .collect(),
                    })
                })
                .collect::<Result<_, String>>()?,
            pd_regions: Some(regions.iter().map(|v| RegionMeta::from(&v.region)).collect()),
            pd_addr: Some(pd_addr),
        };
        spec.validate().map_err(|e| format!("PD's view: {e}"))?;
        Ok(spec)
    }

    /// Checks ids, shards and that the regions tile the key space.
    pub fn validate(&self) -> Result<(), SpecError> {
        let bad = |s: String| Err(SpecError::Invalid(s));
        let mut store_ids: Vec<u64> = self.stores.iter().map(|s| s.id).collect();
        store_ids.sort_unstable();
        if store_ids.windows(2).any(|w| w[0] == w[1]) || store_ids.contains(&0) {
            return bad("store ids must be distinct and non-zero".into());
        }
        let mut ports = std::collections::BTreeSet::new();
        for s in &self.stores {
            if s.shards == 0 || s.shards > 256 {
                return bad(format!("store {}: shards {} not in 1..=256", s.id, s.shards));
            }
            for (what, base) in [("peer", s.peer_addr), ("client", s.client_addr)] {
                if base.port() == 0 || u32::from(base.port()) + u32::from(s.shards) > 65_536 {
                    return bad(format!(
                        "store {}: {what} ports {}..+{} do not fit 1..=65535",
                        s.id,
                        base.port(),
                        s.shards
                    ));
                }
                for i in 0..s.shards {
                    if !ports.insert((base.ip(), base.port() + i)) {
                        return bad(format!(
                            "store {}: {what} port {} is used twice in the spec",
                            s.id,
                            base.port() + i
                        ));
                    }
                }
            }
        }
        let mut metas = self.region_metas();
        metas.sort_by(|a, b| a.start_key.cmp(&b.start_key));
        if metas.is_empty() {
            return bad("no regions".into());
        }
        if !metas[0].start_key.is_empty() || !metas.last().unwrap().end_key.is_empty() {
            return bad("the regions must cover the whole key space (first start and last end empty)".into());
        }
        for w in metas.windows(2) {
            if w[0].end_key != w[1].start_key {
                return bad(format!("regions {} and {} do not meet", w[0].id, w[1].id));
            }
        }
        let mut region_ids = std::collections::BTreeSet::new();
        let mut peer_ids = std::collections::BTreeSet::new();
        for m in &metas {
            if m.id == 0 || !region_ids.insert(m.id) {
                return bad(format!("region id {} is zero or used twice", m.id));
            }
            if m.peers.is_empty() || m.peers.len() > crate::region::meta::PEERS_MAX {
                return bad(format!(
                    "region {}: {} peers (1..={} allowed)",
                    m.id,
                    m.peers.len(),
                    crate::region::meta::PEERS_MAX
                ));
            }
            let mut stores = std::collections::BTreeSet::new();
            for p in &m.peers {
                if p.peer_id == 0 || !peer_ids.insert(p.peer_id) {
                    return bad(format!("region {}: peer id {} is zero or used twice", m.id, p.peer_id));
                }
                if !stores.insert(p.store_id) {
                    return bad(format!("region {}: two peers on store {}", m.id, p.store_id));
                }
            }
            for p in &m.peers {
                let Some(store) = self.store(p.store_id) else {
                    return bad(format!("region {}: peer {} on unknown store {}", m.id, p.peer_id, p.store_id));
                };
                if p.shard >= store.shards {
                    return bad(format!("region {}: shard {} of store {} does not exist", m.id, p.shard, p.store_id));
                }
            }
        }
        Ok(())
    }

    /// A spec of `stores` stores on loopback (ports from `base_port`, 10 apart
    /// per store for peers and clients) with `regions` regions splitting the
    /// key space by the keys' first bytes, every region on every store.
    /// (Validate the result: a base port too high for the range is refused there.)
    pub fn local(cluster_id: u64, stores: u64, shards: u16, regions: u64, base_port: u16) -> ClusterSpec {
        let store_specs = (1..=stores)
            .map(|id| {
                let port = u32::from(base_port) + (id as u32 - 1) * 2 * 64;
                let clamp = |p: u32| p.min(u32::from(u16::MAX)) as u16;
                StoreSpec {
                    id,
                    peer_addr: SocketAddr::from(([127, 0, 0, 1], clamp(port))),
                    client_addr: SocketAddr::from(([127, 0, 0, 1], clamp(port + 64))),
                    shards,
                }
            })
            .collect();
        let key = |i: u64| if i == 0 { String::new() } else { format!("{:04}", i * 10_000 / regions) };
        let region_specs = (0..regions)
            .map(|i| RegionSpec {
                id: i + 1,
                start_key: key(i),
                end_key: if i + 1 == regions { String::new() } else { key(i + 1) },
                peers: (1..=stores)
                    .map(|s| PeerSpec {
                        peer_id: (i + 1) * 1000 + s,
                        store_id: s,
                        shard: (i % u64::from(shards)) as u16,
                    })
                    .collect(),
            })
            .collect();
        ClusterSpec { cluster_id, stores: store_specs, regions: region_specs, pd_regions: None, pd_addr: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_spec_is_valid_and_a_gap_between_regions_is_refused() {
        let spec = ClusterSpec::local(7, 3, 2, 64, 30000);
        spec.validate().unwrap();
        let text = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<ClusterSpec>(&text).unwrap(), spec);
        let mut broken = spec.clone();
        broken.regions[3].start_key = "x".into();
        assert!(matches!(broken.validate(), Err(SpecError::Invalid(_))));
        let mut bad_shard = spec.clone();
        bad_shard.regions[0].peers[0].shard = 9;
        assert!(bad_shard.validate().is_err());
        let mut dup = spec.clone();
        dup.regions[1].id = dup.regions[0].id;
        assert!(dup.validate().is_err());
        let mut same_store = spec.clone();
        same_store.regions[0].peers[1].store_id = same_store.regions[0].peers[0].store_id;
        assert!(same_store.validate().is_err());
        assert!(ClusterSpec::local(1, 3, 1, 4, 65_400).validate().is_err(), "ports past 65535");
        assert!(ClusterSpec::local(1, 3, 65, 4, 20_000).validate().is_err(), "peer and client ports overlap");
        assert!(ClusterSpec::local(1, 0, 1, 4, 20_000).validate().is_err(), "regions without peers");
    }
}
