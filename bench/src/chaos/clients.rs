//! The chaos run's clients: threads doing get / put / delete /
//! compare-and-swap on a small key space through the engine's KV client,
//! each operation recorded as a history event (client, op, key, value,
//! invoke and complete times from one clock, outcome) while the nemesis
//! works.
//!
//! Keys rotate so each stays cheap to check: a key serves
//! `KEY_OPS_MAX` operations, then its slot moves on to a fresh key (a new
//! generation). The checker's search grows with the operations of a key
//! and, above all, its writes of unknown outcome; a bounded key keeps
//! every verdict decidable. Slots spread over the whole key space (their
//! keys start with the 4-digit prefixes the initial regions are cut at),
//! so every region is written, split, moved and led.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::client::kv_client::{KvClient, KvError};
use history::{Event, Op, Outcome};
use transport::SeededRng;

/// Operations one key serves before its slot moves on to a new key.
pub const KEY_OPS_MAX: u64 = 256;
/// Most key slots (the key space's width).
pub const KEY_SLOTS_MAX: usize = 4096;
/// Most client threads.
pub const CLIENTS_MAX: u64 = 64;

/// The key space: slots, each at a generation.
pub struct Keys {
    generation: Vec<AtomicU64>,
    ops: Vec<AtomicU64>,
}

impl Keys {
    pub fn new(slots: usize) -> Keys {
        assert!(slots > 0 && slots <= KEY_SLOTS_MAX, "{slots} key slots");
        Keys {
            generation: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            ops: (0..slots).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub fn slots(&self) -> usize {
        self.generation.len()
    }

    /// The key of `slot` at `generation`: a 4-digit prefix placing it in the
    /// key space, then the slot and generation.
    pub fn key(&self, slot: usize, generation: u64) -> Vec<u8> {
        let prefix = slot as u64 * 10_000 / self.slots() as u64;
        format!("{prefix:04}/chaos/{slot}/{generation}").into_bytes()
    }

    /// The key an operation on `slot` goes to now (moving the slot on once
    /// its key has served `KEY_OPS_MAX`).
    pub fn next(&self, slot: usize) -> Vec<u8> {
        let n = self.ops[slot].fetch_add(1, Relaxed);
        let generation = n / KEY_OPS_MAX;
        self.generation[slot].fetch_max(generation, Relaxed);
        self.key(slot, generation)
    }

    /// The key `slot` is at now.
    pub fn current(&self, slot: usize) -> Vec<u8> {
        self.key(slot, self.generation[slot].load(Relaxed))
    }

    /// Every key any operation went to.
    pub fn used(&self) -> Vec<Vec<u8>> {
        let mut out = vec![];
        for slot in 0..self.slots() {
            if self.ops[slot].load(Relaxed) == 0 {
                continue;
            }
            for g in 0..=self.generation[slot].load(Relaxed) {
                out.push(self.key(slot, g));
            }
        }
        out
    }
}

/// Microseconds since `origin`: the one clock every event is stamped with.
pub fn micros_since(origin: Instant) -> u64 {
    origin.elapsed().as_micros() as u64
}

/// How an error ends an operation in the history.
pub fn outcome_of_error(e: &KvError, write: bool) -> Outcome {
    if write && e.may_have_applied() {
        Outcome::Ambiguous
    } else {
        Outcome::Failed
    }
}

/// What one client thread needs.
pub struct ClientConfig {
    pub id: u64,
    pub seed: u64,
    pub pd_addr: SocketAddr,
    pub keys: Arc<Keys>,
    pub origin: Instant,
    pub stop: Arc<AtomicBool>,
    pub events: std::sync::mpsc::Sender<Event>,
}

/// Runs one client until `stop`: draws an operation, sends it, records it.
pub fn run_client(cfg: ClientConfig) {
    let mut rng = SeededRng::new(cfg.seed);
    let mut client = None;
    // what this client last saw of each key: its compare-and-swaps expect it
    let mut last_seen: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
    let mut seq = 0u64;
    while !cfg.stop.load(Relaxed) {
        let Some(c) = connected(&mut client, cfg.pd_addr) else {
            // PD is down: routes come from it (no operation was sent)
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        let slot = rng.between(0, cfg.keys.slots() as u64 - 1) as usize;
        let key = cfg.keys.next(slot);
        seq += 1;
        let value = format!("c{}.{seq}", cfg.id).into_bytes();
        let op = match rng.between(0, 99) {
            0..=39 => Op::Get,
            40..=64 => Op::Put(value),
            65..=74 => Op::Delete,
            _ => Op::Cas {
                expect: last_seen.get(&key).cloned().flatten(),
                // (one in five a compare-and-delete)
                new: if rng.between(0, 4) == 0 { None } else { Some(value) },
            },
        };
        if last_seen.len() > 4 * KEY_SLOTS_MAX {
            last_seen.clear();
        }
        let call = micros_since(cfg.origin);
        let outcome = perform(c, &key, &op);
        let ret = micros_since(cfg.origin);
        match (&op, &outcome) {
            (_, Outcome::Get(v)) => {
                last_seen.insert(key.clone(), v.clone());
            }
            (Op::Put(v), Outcome::Put) => {
                last_seen.insert(key.clone(), Some(v.clone()));
            }
            (Op::Delete, Outcome::Delete) => {
                last_seen.insert(key.clone(), None);
            }
            (Op::Cas { new, .. }, Outcome::Cas(true)) => {
                last_seen.insert(key.clone(), new.clone());
            }
            _ => {}
        }
        let event = Event { client: cfg.id, key, op, call, ret, outcome };
        if cfg.events.send(event).is_err() {
            return;
        }
    }
}

/// The client, made (routes loaded from PD) if it was not yet.
fn connected(client: &mut Option<KvClient>, pd_addr: SocketAddr) -> Option<&mut KvClient> {
    if client.is_none() {
        *client = KvClient::with_pd(pd_addr).ok();
    }
    client.as_mut()
}

/// Sends `op` and says how it ended.
pub fn perform(client: &mut KvClient, key: &[u8], op: &Op) -> Outcome {
    let write = !matches!(op, Op::Get);
    let r = match op {
        Op::Get => client.get(key).map(Outcome::Get),
        Op::Put(v) => client.put(key, v).map(|()| Outcome::Put),
        Op::Delete => client.delete(key).map(|()| Outcome::Delete),
        Op::Cas { expect, new } => client.cas(key, expect.as_deref(), new.as_deref()).map(Outcome::Cas),
    };
    r.unwrap_or_else(|e| outcome_of_error(&e, write))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_moves_to_a_new_key_after_serving_its_share_and_every_key_used_is_listed() {
        let keys = Keys::new(4);
        assert_eq!(keys.key(2, 0), b"5000/chaos/2/0");
        for _ in 0..KEY_OPS_MAX {
            assert_eq!(keys.next(1), keys.key(1, 0));
        }
        assert_eq!(keys.next(1), keys.key(1, 1));
        assert_eq!(keys.next(3), keys.key(3, 0));
        assert_eq!(keys.used(), vec![keys.key(1, 0), keys.key(1, 1), keys.key(3, 0)]);
    }
}
