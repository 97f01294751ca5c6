//! The state machine a region applies its committed writes to. The default
//! is an in-memory ordered map; every region owns the keys of its range.

use std::collections::BTreeMap;

use crate::kv::command::Command;

/// What applying one command did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    Done,
    /// A compare-and-swap: whether it matched (and so wrote).
    Cas(bool),
}

pub trait StateMachine {
    fn apply(&mut self, command: &Command) -> Applied;
    fn get(&self, key: &[u8]) -> Option<&[u8]>;
    /// Keys and values in [start, end) (end empty: to the end), at most `limit`.
    fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Vec<(Vec<u8>, Vec<u8>)>;
    fn len(&self) -> usize;
    /// Memory it holds, roughly (keys, values and per-entry overhead).
    fn bytes(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The default state machine: an ordered map in memory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemKv {
    map: BTreeMap<Vec<u8>, Vec<u8>>,
    bytes: usize,
}

/// Bytes a map entry costs beyond its key and value (node share, two Vec headers).
const ENTRY_OVERHEAD_BYTES: usize = 64;

impl MemKv {
    fn set(&mut self, key: &[u8], value: Vec<u8>) {
        let add = value.len();
        match self.map.insert(key.to_vec(), value) {
            Some(old) => self.bytes = self.bytes - old.len() + add,
            None => self.bytes += key.len() + add + ENTRY_OVERHEAD_BYTES,
        }
    }

    fn remove(&mut self, key: &[u8]) {
        if let Some(old) = self.map.remove(key) {
            self.bytes -= key.len() + old.len() + ENTRY_OVERHEAD_BYTES;
        }
    }
}

impl StateMachine for MemKv {
    fn apply(&mut self, command: &Command) -> Applied {
        match command {
            Command::Put { key, value } => {
                self.set(key, value.clone());
                Applied::Done
            }
            Command::Delete { key } => {
                self.remove(key);
                Applied::Done
            }
            Command::Cas { key, expect, new } => {
                if self.map.get(key) != expect.as_ref() {
                    return Applied::Cas(false);
                }
                match new {
                    Some(v) => self.set(key, v.clone()),
                    None => self.remove(key),
                }
                Applied::Cas(true)
            }
        }
    }

    fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.map.get(key).map(Vec::as_slice)
    }

    fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.map
            .range(start.to_vec()..)
            .take_while(|(k, _)| end.is_empty() || k.as_slice() < end)
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
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

    #[test]
    fn cas_writes_only_when_the_expected_value_is_there() {
        let mut kv = MemKv::default();
        let cas = |expect: Option<&[u8]>, new: Option<&[u8]>| Command::Cas {
            key: b"k".to_vec(),
            expect: expect.map(<[u8]>::to_vec),
            new: new.map(<[u8]>::to_vec),
        };
        assert_eq!(kv.apply(&cas(Some(b"x"), Some(b"1"))), Applied::Cas(false));
        assert_eq!(kv.apply(&cas(None, Some(b"1"))), Applied::Cas(true));
        assert_eq!(kv.get(b"k"), Some(&b"1"[..]));
        assert_eq!(kv.apply(&cas(Some(b"1"), None)), Applied::Cas(true));
        assert_eq!(kv.get(b"k"), None);
        kv.apply(&Command::Put { key: b"a".to_vec(), value: b"v".to_vec() });
        kv.apply(&Command::Put { key: b"b".to_vec(), value: b"w".to_vec() });
        assert_eq!(kv.scan(b"a", b"b", 10), vec![(b"a".to_vec(), b"v".to_vec())]);
        assert_eq!(kv.bytes(), 2 * (2 + ENTRY_OVERHEAD_BYTES));
        kv.apply(&Command::Put { key: b"a".to_vec(), value: b"longer".to_vec() });
        kv.apply(&Command::Delete { key: b"b".to_vec() });
        assert_eq!(kv.bytes(), 1 + 6 + ENTRY_OVERHEAD_BYTES);
    }
}
