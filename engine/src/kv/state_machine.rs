//! The state machine a region applies its committed writes to. The default
//! is an in-memory ordered map; every region owns the keys of its range.
//!
//! The map is persistent (`imbl::OrdMap`: a B-tree whose nodes are shared
//! between clones and copied on first write), so a snapshot is an O(1)
//! clone taken inside the loop and written out on a blocking thread while
//! the region keeps applying. Keys' tails and values are `Arc<[u8]>`, so copying
//! a shared node after a snapshot bumps reference counts instead of
//! allocating every key and value in it again.

use imbl::OrdMap;
use std::sync::Arc;

use crate::kv::command::CommandRef;

/// What applying one command did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    Done,
    /// A compare-and-swap: whether it matched (and so wrote).
    Cas(bool),
}

/// What a region applies its commands to. `Clone` must be cheap (O(1)):
/// it is how a snapshot is taken without stalling the shard loop.
pub trait StateMachine: Clone + Send + 'static {
    fn apply(&mut self, command: CommandRef<'_>) -> Applied;
    fn get(&self, key: &[u8]) -> Option<&[u8]>;
    /// Keys and values in [start, end) (end empty: to the end), at most `limit`.
    fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Vec<(Vec<u8>, Vec<u8>)>;
    fn len(&self) -> usize;
    /// Memory it holds, roughly (keys, values and per-entry overhead).
    fn bytes(&self) -> usize;
    /// Every key and value in key order (what a snapshot file holds).
    fn rows(&self) -> impl Iterator<Item = (Vec<u8>, &[u8])> + '_;
    /// Rebuilds the state from rows in strictly increasing key order (a
    /// snapshot being restored).
    fn from_rows(rows: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>) -> Self;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A key as the map orders it: its first 16 bytes as one big-endian
/// integer and its next 8 as another (most comparisons end there, without a
/// `memcmp` call — the map's key comparisons were the largest single CPU
/// cost of the write path — and a key of up to 24 bytes needs no
/// allocation of its own), then the rest of its bytes, then its length.
/// This is exactly the byte-wise order: keys of equal integers and equal
/// rest differ only by trailing zero padding, so the shorter is a prefix of
/// the longer and sorts first.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct MapKey {
    head: u128,
    mid: u64,
    /// The bytes after the first 24 (`None`: the key has no more). An entry
    /// of the map is 64 bytes: every insert moves fewer of them.
    rest: Option<Arc<[u8]>>,
    len: u32,
}

/// Bytes of a key held inline (`head` and `mid`).
const MAP_KEY_INLINE_BYTES: usize = 24;

// inserting moves entries within a node: keep them at one cache line
const _: () = assert!(std::mem::size_of::<(MapKey, Arc<[u8]>)>() <= 64);

impl MapKey {
    fn new(key: &[u8]) -> MapKey {
        let mut inline = [0u8; MAP_KEY_INLINE_BYTES];
        let n = key.len().min(MAP_KEY_INLINE_BYTES);
        inline[..n].copy_from_slice(&key[..n]);
        MapKey {
            head: u128::from_be_bytes(inline[..16].try_into().expect("16 bytes")),
            mid: u64::from_be_bytes(inline[16..].try_into().expect("8 bytes")),
            rest: (key.len() > MAP_KEY_INLINE_BYTES).then(|| Arc::from(&key[n..])),
            len: key.len() as u32,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut inline = [0u8; MAP_KEY_INLINE_BYTES];
        inline[..16].copy_from_slice(&self.head.to_be_bytes());
        inline[16..].copy_from_slice(&self.mid.to_be_bytes());
        let n = (self.len as usize).min(MAP_KEY_INLINE_BYTES);
        let mut out = Vec::with_capacity(self.len as usize);
        out.extend_from_slice(&inline[..n]);
        if let Some(rest) = &self.rest {
            out.extend_from_slice(rest);
        }
        out
    }
}

/// The default state machine: an ordered map in memory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemKv {
    map: OrdMap<MapKey, Arc<[u8]>>,
    bytes: usize,
}

/// Bytes a map entry costs beyond its key and value (node share, two Vec headers).
const ENTRY_OVERHEAD_BYTES: usize = 64;

impl MemKv {
    pub fn keys(&self) -> usize {
        self.map.len()
    }

    fn set(&mut self, key: &[u8], value: &[u8]) {
        let add = value.len();
        let value: Arc<[u8]> = Arc::from(value);
        match self.map.insert(MapKey::new(key), value) {
            Some(old) => self.bytes = self.bytes - old.len() + add,
            None => self.bytes += key.len() + add + ENTRY_OVERHEAD_BYTES,
        }
    }

    fn remove(&mut self, key: &[u8]) {
        if let Some(old) = self.map.remove(&MapKey::new(key)) {
            self.bytes -= key.len() + old.len() + ENTRY_OVERHEAD_BYTES;
        }
    }
}

/// A split leaves both halves holding the whole map (an O(1) clone); each
/// drops the other side's keys a bounded number at a time (`trim_to`), so
/// the split itself never stalls the shard loop. Until then every reader
/// asks by range (`scan`, `rows_in`), never for the whole map.
impl MemKv {
    /// Removes at most `budget` keys outside [start, end) (end empty: no
    /// end); returns whether none is left.
    pub fn trim_to(&mut self, start: &[u8], end: &[u8], budget: usize) -> bool {
        let (start, end) = (MapKey::new(start), (!end.is_empty()).then(|| MapKey::new(end)));
        for _ in 0..budget {
            let below = self.map.get_min().map(|(k, _)| k.clone()).filter(|k| *k < start);
            let above = || self.map.get_max().map(|(k, _)| k.clone()).filter(|k| end.as_ref().is_some_and(|e| k >= e));
            let Some(k) = below.or_else(above) else { return true };
            let old = self.map.remove(&k).expect("a key the map has");
            self.bytes -= k.len as usize + old.len() + ENTRY_OVERHEAD_BYTES;
        }
        let below = self.map.get_min().is_some_and(|(k, _)| *k < start);
        let above = self.map.get_max().is_some_and(|(k, _)| end.as_ref().is_some_and(|e| k >= e));
        !below && !above
    }

    /// The bytes of [start, end) (as `bytes` counts them) and the key that
    /// halves them: the first key at which the bytes before it reach half.
    /// `None` when no key past the range's first one would do (a region of
    /// one key cannot split). O(keys): run it on a clone, off the shard loop.
    pub fn middle_key(&self, start: &[u8], end: &[u8]) -> (u64, Option<Vec<u8>>) {
        let size = |k: &MapKey, v: &Arc<[u8]>| (k.len as usize + v.len() + ENTRY_OVERHEAD_BYTES) as u64;
        let end_key = (!end.is_empty()).then(|| MapKey::new(end));
        let in_range =
            || self.map.range(MapKey::new(start)..).take_while(|(k, _)| end_key.as_ref().is_none_or(|e| *k < e));
        let total: u64 = in_range().map(|(k, v)| size(k, v)).sum();
        let mut before = 0u64;
        for (i, (k, v)) in in_range().enumerate() {
            // (a region's bounds ride in every message: never split at an over-long key)
            if i > 0 && before * 2 >= total && (k.len as usize) <= crate::region::meta::SPLIT_KEY_BYTES_MAX {
                return (total, Some(k.bytes()));
            }
            before += size(k, v);
        }
        (total, None)
    }

    /// Keys and values in [start, end) in key order (end empty: to the end).
    pub fn rows_in<'a>(&'a self, start: &[u8], end: &[u8]) -> impl Iterator<Item = (Vec<u8>, &'a [u8])> + 'a {
        let end = (!end.is_empty()).then(|| MapKey::new(end));
        self.map
            .range(MapKey::new(start)..)
            .take_while(move |(k, _)| end.as_ref().is_none_or(|e| *k < e))
            .map(|(k, v)| (k.bytes(), &v[..]))
    }
}

impl StateMachine for MemKv {
    fn apply(&mut self, command: CommandRef<'_>) -> Applied {
        match command {
            CommandRef::Put { key, value } => {
                self.set(key, value);
                Applied::Done
            }
            CommandRef::Delete { key } => {
                self.remove(key);
                Applied::Done
            }
            CommandRef::Cas { key, expect, new } => {
                if self.map.get(&MapKey::new(key)).map(|v| &v[..]) != expect {
                    return Applied::Cas(false);
                }
                match new {
                    Some(v) => self.set(key, v),
                    None => self.remove(key),
                }
                Applied::Cas(true)
            }
        }
    }

    fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.map.get(&MapKey::new(key)).map(|v| &v[..])
    }

    fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        let end = (!end.is_empty()).then(|| MapKey::new(end));
        self.map
            .range(MapKey::new(start)..)
            .take_while(|(k, _)| end.as_ref().is_none_or(|e| *k < e))
            .take(limit)
            .map(|(k, v)| (k.bytes(), v.to_vec()))
            .collect()
    }

    fn rows(&self) -> impl Iterator<Item = (Vec<u8>, &[u8])> + '_ {
        self.map.iter().map(|(k, v)| (k.bytes(), &v[..]))
    }

    fn from_rows(rows: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>) -> Self {
        let mut kv = MemKv::default();
        for (k, v) in rows {
            kv.set(&k, &v);
        }
        kv
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The map's key order is the byte-wise order, and keys come back intact.
        #[test]
        fn map_keys_order_as_their_bytes_do(a in proptest::collection::vec(prop_oneof![Just(0u8), Just(1u8), any::<u8>()], 0..48),
                                            b in proptest::collection::vec(prop_oneof![Just(0u8), Just(1u8), any::<u8>()], 0..48)) {
            let (ka, kb) = (MapKey::new(&a), MapKey::new(&b));
            prop_assert_eq!(ka.cmp(&kb), a.cmp(&b));
            prop_assert_eq!(ka.bytes(), a);
        }
    }

    #[test]
    fn a_split_half_trims_the_other_side_a_budget_at_a_time() {
        let mut kv = MemKv::default();
        for i in 0..100u32 {
            kv.apply(CommandRef::Put { key: format!("k{i:03}").as_bytes(), value: b"v" });
        }
        let whole = kv.bytes();
        let mut left = kv.clone();
        let mut right = kv;
        let mut rounds = 0;
        while !left.trim_to(b"", b"k040", 7) {
            rounds += 1;
        }
        assert_eq!((left.len(), rounds), (40, 60 / 7), "60 keys at 7 a time");
        assert!(right.trim_to(b"k040", b"", 1000));
        assert_eq!(right.len(), 60);
        assert_eq!(left.bytes() + right.bytes(), whole, "bytes follow the keys");
        assert_eq!(
            right.rows_in(b"k050", b"k052").map(|(k, _)| k).collect::<Vec<_>>(),
            vec![b"k050".to_vec(), b"k051".to_vec()]
        );
        // the key that halves the bytes, never the range's first
        let (bytes, key) = right.middle_key(b"k040", b"");
        assert_eq!((bytes, key), (right.bytes() as u64, Some(b"k070".to_vec())));
        assert_eq!(right.middle_key(b"k099", b"").1, None, "one key cannot split");
        assert_eq!(right.middle_key(b"k098", b"").1, Some(b"k099".to_vec()));
        let mut mid = right.clone();
        assert!(mid.trim_to(b"k050", b"k060", 100) && mid.len() == 10);
        assert_eq!(mid.rows_in(b"", b"").count(), 10);
    }

    #[test]
    fn cas_writes_only_when_the_expected_value_is_there() {
        let mut kv = MemKv::default();
        let cas =
            |expect: Option<&'static [u8]>, new: Option<&'static [u8]>| CommandRef::Cas { key: b"k", expect, new };
        assert_eq!(kv.apply(cas(Some(b"x"), Some(b"1"))), Applied::Cas(false));
        assert_eq!(kv.apply(cas(None, Some(b"1"))), Applied::Cas(true));
        assert_eq!(kv.get(b"k"), Some(&b"1"[..]));
        assert_eq!(kv.apply(cas(Some(b"1"), None)), Applied::Cas(true));
        assert_eq!(kv.get(b"k"), None);
        kv.apply(CommandRef::Put { key: b"a", value: b"v" });
        kv.apply(CommandRef::Put { key: b"b", value: b"w" });
        assert_eq!(kv.scan(b"a", b"b", 10), vec![(b"a".to_vec(), b"v".to_vec())]);
        assert_eq!(kv.bytes(), 2 * (2 + ENTRY_OVERHEAD_BYTES));
        kv.apply(CommandRef::Put { key: b"a", value: b"longer" });
        kv.apply(CommandRef::Delete { key: b"b" });
        assert_eq!(kv.bytes(), 1 + 6 + ENTRY_OVERHEAD_BYTES);
    }
}
