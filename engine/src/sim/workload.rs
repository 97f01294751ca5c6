//! Simulated clients: each runs one operation at a time against the
//! simulated cluster (get, put, compare-and-swap on a small set of keys, so
//! operations collide), follows `NotLeader` hints, gives up on a request
//! after a deadline, and records every operation with its call and return
//! times for the linearizability checker (the `history` crate). Outcomes
//! are recorded as a client would know them: a definite error means the
//! write did not happen, a timeout or a crashed store means it may or may
//! not have.

use std::collections::BTreeMap;
use std::time::Duration;

use history::{Event, Op, Outcome};
use transport::SeededRng;

use crate::error::RegionError;
use crate::kv::Command;
use crate::shard::{Input, Response};
use crate::sim::Sim;

/// How long a client waits for a reply before it calls the outcome unknown.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(1);

struct InFlight {
    request: u64,
    key: Vec<u8>,
    op: Op,
    call_us: u64,
    deadline_us: u64,
}

pub struct Workload {
    rng: SeededRng,
    keys: Vec<Vec<u8>>,
    clients: Vec<Option<InFlight>>,
    /// Which store each region's leader is believed to be on.
    hints: BTreeMap<u64, u64>,
    next_value: u64,
    pub history: Vec<Event>,
    /// Percent chance per step that an idle client starts an operation.
    pub busy_percent: u64,
}

impl Workload {
    pub fn new(seed: u64, keys: Vec<Vec<u8>>, clients: usize) -> Workload {
        Workload {
            rng: SeededRng::new(seed),
            keys,
            clients: (0..clients).map(|_| None).collect(),
            hints: BTreeMap::new(),
            next_value: 1,
            history: vec![],
            busy_percent: 30,
        }
    }

    /// Whether every client is idle.
    pub fn idle(&self) -> bool {
        self.clients.iter().all(Option::is_none)
    }

    fn record(&mut self, client: usize, f: InFlight, ret_us: u64, outcome: Outcome) {
        self.history.push(Event { client: client as u64, key: f.key, op: f.op, call: f.call_us, ret: ret_us, outcome });
    }

    /// Collects replies, then (if `start_new`) lets idle clients start operations.
    pub fn step(&mut self, sim: &mut Sim, start_new: bool) {
        let now = sim.elapsed_us();
        let lost = sim.take_lost();
        for c in 0..self.clients.len() {
            let Some(f) = self.clients[c].take() else { continue };
            let outcome = if lost.contains(&f.request) {
                Some(Outcome::Ambiguous)
            } else if let Some(reply) = sim.take_reply(f.request) {
                Some(self.outcome(sim, &f, reply))
            } else if now >= f.deadline_us {
                Some(Outcome::Ambiguous)
            } else {
                None
            };
            match outcome {
                Some(o) => self.record(c, f, now, o),
                None => self.clients[c] = Some(f),
            }
        }
        if start_new {
            for c in 0..self.clients.len() {
                if self.clients[c].is_none() && self.rng.chance(self.busy_percent as u32 * 10_000) {
                    self.start(sim, c);
                }
            }
        }
    }

    fn outcome(&mut self, sim: &Sim, f: &InFlight, reply: Result<Response, RegionError>) -> Outcome {
        match reply {
            Ok(Response::Done) => match f.op {
                Op::Put(_) => Outcome::Put,
                Op::Delete => Outcome::Delete,
                _ => panic!("a {:?} answered Done", f.op),
            },
            Ok(Response::Cas(ok)) => Outcome::Cas(ok),
            Ok(Response::Value(v)) => Outcome::Get(v),
            Ok(Response::Rows(_) | Response::Region(_) | Response::Split(_)) => {
                panic!("the workload neither scans, describes nor splits")
            }
            Err(RegionError::Ambiguous { .. }) => Outcome::Ambiguous,
            Err(e) => {
                if let RegionError::NotLeader { region, leader: Some(l) } = &e {
                    self.hints.insert(*region, l.store_id);
                } else if let RegionError::NotLeader { region, leader: None } | RegionError::RegionNotFound { region } =
                    &e
                {
                    // no leader known there (or no such region): try another store next time
                    let stores = sim.options.stores;
                    let next = self.hints.get(region).map_or(1, |s| s % stores + 1);
                    self.hints.insert(*region, next);
                }
                Outcome::Failed
            }
        }
    }

    fn start(&mut self, sim: &mut Sim, client: usize) {
        let key = self.keys[self.rng.between(0, self.keys.len() as u64 - 1) as usize].clone();
        let meta = sim.region_of(&key).clone();
        let store = *self.hints.entry(meta.id).or_insert(1);
        let choice = self.rng.between(0, 99);
        let value = format!("v{}", self.next_value).into_bytes();
        self.next_value += 1;
        let (op, command) = match choice {
            0..=39 => (Op::Get, None),
            40..=79 => (Op::Put(value.clone()), Some(Command::Put { key: key.clone(), value })),
            80..=84 => (Op::Delete, Some(Command::Delete { key: key.clone() })),
            _ => {
                // compare against what this client last saw, or absence
                let expect = self.last_value(&key);
                let new = Some(value);
                (
                    Op::Cas { expect: expect.clone(), new: new.clone() },
                    Some(Command::Cas { key: key.clone(), expect, new }),
                )
            }
        };
        let epoch = meta.epoch();
        let region = meta.id;
        let request = match command {
            None => {
                let k = key.clone();
                sim.submit(store, |request| Input::Read { request, region, key: k })
            }
            Some(command) => sim.submit(store, |request| Input::Write { request, region, epoch, command }),
        };
        let call_us = sim.elapsed_us();
        let deadline_us = call_us + REQUEST_DEADLINE.as_micros() as u64;
        self.clients[client] = Some(InFlight { request, key, op, call_us, deadline_us });
    }

    /// The value of the key's latest completed read or write in the history, if any.
    fn last_value(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.history.iter().rev().filter(|e| e.key == key).find_map(|e| match (&e.op, &e.outcome) {
            (_, Outcome::Get(v)) => Some(v.clone()),
            (Op::Put(v), Outcome::Put) => Some(Some(v.clone())),
            _ => None,
        })?
    }
}

impl Workload {
    /// Reads every key once more through its region's leader after the run
    /// settled, and records the reads: the checker then proves that every
    /// acknowledged write is still there (or legitimately overwritten).
    pub fn read_every_key(&mut self, sim: &mut Sim) {
        const ATTEMPTS_MAX: usize = 50;
        let client = self.clients.len() as u64;
        for key in self.keys.clone() {
            let mut attempts = 0;
            loop {
                attempts += 1;
                assert!(attempts <= ATTEMPTS_MAX, "no read of {key:?} succeeded after {ATTEMPTS_MAX} attempts");
                // (a split may have moved the key since the last attempt)
                sim.refresh_metas();
                let region = sim.region_of(&key).id;
                let Some(store) = sim.leader_of(region) else {
                    sim.run_for(Duration::from_millis(50));
                    continue;
                };
                let call = sim.elapsed_us();
                let k = key.clone();
                let request = sim.submit(store, |request| Input::Read { request, region, key: k });
                sim.run_until(REQUEST_DEADLINE, |s| s.has_reply(request));
                if let Some(Ok(Response::Value(v))) = sim.take_reply(request) {
                    let ret = sim.elapsed_us();
                    self.history.push(Event { client, key, op: Op::Get, call, ret, outcome: Outcome::Get(v) });
                    break;
                }
            }
        }
    }
}
