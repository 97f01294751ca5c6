//! The regions PD knows, by id and by key range. The ranges never overlap
//! (asserted on every insert): a report that overlaps older regions
//! replaces them as a whole.

use std::collections::BTreeMap;
use std::ops::Bound::{Excluded, Included, Unbounded};

use crate::meta::RegionInfo;

#[derive(Default)]
pub struct RegionIndex {
    by_id: BTreeMap<u64, RegionInfo>,
    /// start key → region id.
    by_start: BTreeMap<Vec<u8>, u64>,
}

impl RegionIndex {
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn get(&self, id: u64) -> Option<&RegionInfo> {
        self.by_id.get(&id)
    }

    /// Regions in key order.
    pub fn iter(&self) -> impl Iterator<Item = &RegionInfo> {
        self.by_start.values().map(|id| &self.by_id[id])
    }

    /// The region whose range holds `key`.
    pub fn by_key(&self, key: &[u8]) -> Option<&RegionInfo> {
        let (_, id) = self.by_start.range::<[u8], _>((Unbounded, Included(key))).next_back()?;
        Some(&self.by_id[id]).filter(|r| r.contains(key))
    }

    /// Ids of the regions other than `r.id` whose ranges share a key with `r`.
    pub fn overlapping(&self, r: &RegionInfo) -> Vec<u64> {
        // the one starting at or before r's start, then every one starting inside r
        let before = self
            .by_start
            .range::<[u8], _>((Unbounded, Included(r.start_key.as_slice())))
            .next_back()
            .map(|(_, id)| *id);
        let inside = self
            .by_start
            .range::<[u8], _>((Excluded(r.start_key.as_slice()), Unbounded))
            .take_while(|(start, _)| r.end_key.is_empty() || start.as_slice() < r.end_key.as_slice())
            .map(|(_, id)| *id);
        before.into_iter().chain(inside).filter(|id| *id != r.id && self.by_id[id].overlaps(r)).collect()
    }

    /// Regions in key order from the one holding `start` (or the first after it).
    pub fn scan(&self, start: &[u8], limit: usize) -> Vec<&RegionInfo> {
        let first = self.by_key(start).map(|r| r.start_key.clone()).unwrap_or_else(|| start.to_vec());
        self.by_start.range(first..).take(limit).map(|(_, id)| &self.by_id[id]).collect()
    }

    pub fn remove(&mut self, id: u64) -> Option<RegionInfo> {
        let r = self.by_id.remove(&id)?;
        let at = self.by_start.remove(&r.start_key);
        assert_eq!(at, Some(id), "the index names each region at its start key");
        Some(r)
    }

    /// Inserts or replaces region `r.id`; nothing else may overlap it.
    pub fn put(&mut self, r: RegionInfo) {
        self.remove(r.id);
        assert!(self.overlapping(&r).is_empty(), "region {} overlaps another: remove those first", r.id);
        self.by_start.insert(r.start_key.clone(), r.id);
        self.by_id.insert(r.id, r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::{Epoch, PeerInfo};

    fn region(id: u64, start: &str, end: &str) -> RegionInfo {
        RegionInfo {
            id,
            start_key: start.into(),
            end_key: end.into(),
            epoch: Epoch { conf_ver: 1, version: 1 },
            peers: vec![PeerInfo::voter(100 + id, 1, 0)],
            max_peer_id: 100 + id,
        }
    }

    #[test]
    fn lookups_by_key_find_the_range_and_overlaps_are_exact() {
        let mut ix = RegionIndex::default();
        ix.put(region(1, "", "b"));
        ix.put(region(2, "b", "d"));
        ix.put(region(3, "f", ""));
        assert_eq!(ix.by_key(b"a").unwrap().id, 1);
        assert_eq!(ix.by_key(b"b").unwrap().id, 2);
        assert!(ix.by_key(b"e").is_none(), "a gap");
        assert_eq!(ix.by_key(b"zzz").unwrap().id, 3);
        let mut ids = ix.overlapping(&region(9, "a", "g"));
        ids.sort_unstable();
        assert_eq!(ids, vec![1, 2, 3]);
        assert!(ix.overlapping(&region(9, "d", "f")).is_empty());
        assert_eq!(ix.scan(b"c", 2).iter().map(|r| r.id).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(ix.scan(b"e", 5).iter().map(|r| r.id).collect::<Vec<_>>(), vec![3]);
        ix.remove(2);
        assert!(ix.by_key(b"c").is_none());
        ix.put(region(3, "b", "")); // moved start
        assert_eq!(ix.by_key(b"c").unwrap().id, 3);
        assert_eq!(ix.len(), 2);
    }

    #[test]
    #[should_panic(expected = "overlaps")]
    fn an_overlapping_insert_is_a_bug() {
        let mut ix = RegionIndex::default();
        ix.put(region(1, "", "m"));
        ix.put(region(2, "c", "z"));
    }
}
