//! Where every store's shards listen. Filled from the cluster spec or from
//! PD (and refreshed from PD when its store set changes); read by each
//! shard's transport and by clients. A shard checks the version once per
//! loop iteration (one atomic load) and takes the addresses only when it moved.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use crate::spec::ClusterSpec;

/// A store's base addresses: shard i listens on port + i.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoreAddrs {
    pub peer_addr: SocketAddr,
    pub client_addr: SocketAddr,
    pub shards: u16,
}

impl StoreAddrs {
    pub fn peer_addr_of(&self, shard: u16) -> SocketAddr {
        pd::meta::shard_addr(self.peer_addr, shard)
    }

    pub fn client_addr_of(&self, shard: u16) -> SocketAddr {
        pd::meta::shard_addr(self.client_addr, shard)
    }
}

impl From<&pd::StoreInfo> for StoreAddrs {
    fn from(s: &pd::StoreInfo) -> StoreAddrs {
        StoreAddrs { peer_addr: s.peer_addr, client_addr: s.client_addr, shards: s.shards }
    }
}

#[derive(Default)]
pub struct Directory {
    version: AtomicU64,
    stores: RwLock<BTreeMap<u64, StoreAddrs>>,
}

impl Directory {
    pub fn new(stores: BTreeMap<u64, StoreAddrs>) -> Directory {
        Directory { version: AtomicU64::new(1), stores: RwLock::new(stores) }
    }

    pub fn from_spec(spec: &ClusterSpec) -> Directory {
        Directory::new(
            spec.stores
                .iter()
                .map(|s| (s.id, StoreAddrs { peer_addr: s.peer_addr, client_addr: s.client_addr, shards: s.shards }))
                .collect(),
        )
    }

    /// Changes whenever the addresses do.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    pub fn get(&self, store_id: u64) -> Option<StoreAddrs> {
        self.stores.read().expect("not poisoned").get(&store_id).copied()
    }

    pub fn all(&self) -> BTreeMap<u64, StoreAddrs> {
        self.stores.read().expect("not poisoned").clone()
    }

    /// Replaces the whole set (bumping the version if anything changed).
    pub fn replace(&self, stores: BTreeMap<u64, StoreAddrs>) {
        let mut cur = self.stores.write().expect("not poisoned");
        if *cur != stores {
            *cur = stores;
            self.version.fetch_add(1, Ordering::AcqRel);
        }
    }
}
