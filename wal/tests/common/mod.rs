//! Shared test machinery: a seeded RNG, a sans-IO driver for `Wal` over the
//! in-memory disk, and a model of what every region's log must contain.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use futures_lite::future::block_on;
use wal::disk::{Disk, MemDisk};
use wal::{ConfState, Entry, FlushStart, HardState, ReadError, RegionId, RegionWrite, SnapshotMarker, Wal, WalOptions};

/// splitmix64: small, seedable, and the same on every machine.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    pub fn bytes(&mut self, max: usize) -> Bytes {
        let n = self.below(max as u64 + 1) as usize;
        let b: Vec<u8> = (0..n).map(|_| self.next() as u8).collect();
        Bytes::from(b)
    }
}

/// Small segments so tests roll, checkpoint and purge often.
pub fn small_options() -> WalOptions {
    WalOptions { segment_bytes: 64 << 10, batch_bytes_max: 16 << 10, staged_bytes_max: 1 << 20, ..Default::default() }
}

pub fn open(disk: &MemDisk, opts: WalOptions) -> (Wal<MemDisk>, wal::RecoveryReport) {
    block_on(Wal::open(disk.clone(), opts)).expect("open")
}

/// Starts a flush, preparing a spare segment inline if the batch needs one.
pub fn start_flush<D: Disk>(wal: &mut Wal<D>) -> Option<wal::Flush<D>> {
    loop {
        match wal.start_flush() {
            FlushStart::Idle => return None,
            FlushStart::Flush(f) => return Some(f),
            FlushStart::NeedSpare => {
                let job = wal.spare_job().expect("no spare job is out");
                let spare = block_on(job.run());
                wal.add_spare(spare).expect("spare");
            }
        }
    }
}

/// Flushes until nothing is staged.
pub fn flush_all<D: Disk>(wal: &mut Wal<D>) {
    while let Some(f) = start_flush(wal) {
        let r = block_on(f.execute());
        wal.finish_flush(r).expect("flush");
    }
}

/// Runs a purge to completion and returns the plan's blocking regions.
pub fn purge<D: Disk>(wal: &mut Wal<D>) -> (Vec<u64>, Vec<(RegionId, u64)>) {
    let mut plan = wal.purge();
    if let Some(job) = plan.take_job() {
        let r = block_on(job.run());
        wal.purge_done(r).expect("purge");
    }
    (plan.segments, plan.blocking)
}

/// All entries `[lo, hi)` of a region, from memory or disk.
pub fn read_all<D: Disk>(wal: &Wal<D>, region: RegionId, lo: u64, hi: u64) -> Vec<Entry> {
    let mut out = vec![];
    let mut next = lo;
    while next < hi {
        let got = match wal.entries(region, next, hi, 64 << 10) {
            Ok(es) => es,
            Err(ReadError::NotCached { .. }) => {
                let job = wal.fetch(region, next, hi, 64 << 10).expect("fetch");
                block_on(job.run()).expect("read from disk")
            }
            Err(e) => panic!("region {region}: read [{next}, {hi}): {e}"),
        };
        assert!(!got.is_empty(), "a read returns at least one entry");
        next += got.len() as u64;
        out.extend(got);
    }
    out
}

/// What one region's log must hold, kept the simplest possible way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelRegion {
    pub first: u64,
    pub prev_term: u64,
    pub entries: Vec<(u64, u8, Bytes)>,
    pub hs: Option<HardState>,
    pub cs: Option<ConfState>,
    pub meta: Option<Bytes>,
    pub snap: Option<SnapshotMarker>,
    pub tomb: bool,
}

impl Default for ModelRegion {
    fn default() -> Self {
        ModelRegion { first: 1, prev_term: 0, entries: vec![], hs: None, cs: None, meta: None, snap: None, tomb: false }
    }
}

impl ModelRegion {
    pub fn last(&self) -> u64 {
        self.first + self.entries.len() as u64 - 1
    }
    pub fn term(&self, i: u64) -> u64 {
        if i + 1 == self.first {
            self.prev_term
        } else {
            self.entries[(i - self.first) as usize].0
        }
    }
    pub fn apply(&mut self, w: &RegionWrite) {
        if let Some(s) = w.snapshot {
            self.entries.clear();
            self.first = s.index + 1;
            self.prev_term = s.term;
            self.snap = Some(s);
        }
        if let Some(e0) = w.entries.first() {
            self.entries.truncate((e0.index - self.first) as usize);
            self.entries.extend(w.entries.iter().map(|e| (e.term, e.entry_type, e.data.clone())));
        }
        if let Some(to) = w.compact_to {
            if to > self.first {
                self.prev_term = self.term(to - 1);
                self.entries.drain(..(to - self.first) as usize);
                self.first = to;
            }
        }
        if w.tombstone {
            self.entries.clear();
        }
        if let Some(hs) = w.hard_state {
            self.hs = Some(hs);
        }
        if let Some(cs) = &w.conf_state {
            self.cs = Some(cs.clone());
        }
        if let Some(m) = &w.meta {
            self.meta = Some(m.clone());
        }
        if w.snapshot.is_some() || !w.entries.is_empty() || w.hard_state.is_some() {
            self.tomb = false;
        }
        if w.tombstone {
            self.tomb = true;
        }
    }
}

pub type Model = BTreeMap<RegionId, ModelRegion>;

/// Reads a region back from the log into the model's shape.
pub fn observe<D: Disk>(wal: &Wal<D>, region: RegionId) -> ModelRegion {
    let Some(first) = wal.first_index(region) else { return ModelRegion::default() };
    let last = wal.last_index(region).unwrap();
    let entries = read_all(wal, region, first, last + 1);
    for (k, e) in entries.iter().enumerate() {
        assert_eq!(e.index, first + k as u64);
        assert_eq!(Some(e.term), wal.term(region, e.index), "term() agrees with the entry");
    }
    ModelRegion {
        first,
        prev_term: wal.term(region, first - 1).expect("term of first_index - 1 is kept"),
        entries: entries.into_iter().map(|e| (e.term, e.entry_type, e.data)).collect(),
        hs: wal.hard_state(region),
        cs: wal.conf_state(region).cloned(),
        meta: wal.meta(region).cloned(),
        snap: wal.snapshot(region),
        tomb: wal.is_tombstone(region),
    }
}

/// The whole log in the model's shape; regions with nothing recorded are left out.
pub fn observe_all<D: Disk>(wal: &Wal<D>) -> Model {
    let ids: Vec<_> = wal.regions().collect();
    ids.into_iter().map(|r| (r, observe(wal, r))).filter(|(_, m)| *m != ModelRegion::default()).collect()
}

pub fn normalized(model: &Model) -> Model {
    model.iter().filter(|(_, m)| **m != ModelRegion::default()).map(|(k, v)| (*k, v.clone())).collect()
}

/// A random write that is valid for `m`.
pub fn random_write(rng: &mut Rng, m: &ModelRegion, max_term: &mut u64) -> RegionWrite {
    let mut w = RegionWrite::default();
    let roll = rng.below(100);
    let entries = |rng: &mut Rng, from: u64, term: u64| -> Vec<Entry> {
        let n = 1 + rng.below(4);
        (0..n).map(|k| Entry { index: from + k, term, entry_type: rng.below(3) as u8, data: rng.bytes(300) }).collect()
    };
    if roll < 55 {
        w.entries = entries(rng, m.last() + 1, *max_term);
    } else if roll < 65 && !m.entries.is_empty() {
        // a new leader overwrites the tail
        *max_term += 1;
        let from = m.first + rng.below(m.entries.len() as u64);
        w.entries = entries(rng, from, *max_term);
    } else if roll < 75 && !m.entries.is_empty() {
        w.compact_to = Some(m.first + 1 + rng.below(m.entries.len() as u64));
    } else if roll < 80 {
        let index = (m.last() + rng.below(5)).max(1);
        w.snapshot = Some(SnapshotMarker { index, term: *max_term });
    } else if roll < 87 {
        w.conf_state = Some(ConfState {
            voters: (0..1 + rng.below(4)).collect(),
            auto_leave: rng.chance(50),
            ..Default::default()
        });
        w.meta = Some(rng.bytes(64));
    } else if roll < 90 {
        w.tombstone = true;
        w.meta = Some(rng.bytes(16));
        return w;
    }
    if w.tombstone || rng.chance(60) || roll >= 90 {
        let last = m.last().max(w.entries.last().map_or(0, |e| e.index));
        w.hard_state = Some(HardState { term: *max_term, vote: rng.below(5), commit: rng.below(last + 1) });
    }
    w
}

/// Appends `n` entries of `bytes` bytes each to a region, with a HardState
/// committing them, and returns the ticket.
pub fn append_entries<D: Disk>(wal: &mut Wal<D>, region: RegionId, n: u64, bytes: usize, fill: u8) -> wal::Ticket {
    let first = wal.last_index(region).map_or(1, |l| l + 1);
    let entries: Vec<Entry> = (first..first + n)
        .map(|i| Entry { index: i, term: 1, entry_type: 0, data: Bytes::from(vec![fill; bytes]) })
        .collect();
    let last = first + n - 1;
    let w =
        RegionWrite { entries, hard_state: Some(HardState { term: 1, vote: 1, commit: last }), ..Default::default() };
    wal.append(region, w).expect("append")
}

/// Byte offset of every record in a segment file (for aiming corruption).
pub fn record_offsets(disk: &MemDisk, seq: u64) -> Vec<usize> {
    let bytes = disk.contents(&wal::layout::segment_name(seq)).expect("segment exists");
    wal::format::record_offsets(&bytes, seq)
}

/// Polls `fut` at most `polls` times with a waker that does nothing; its
/// output if it finished. The in-memory disk completes everything not held
/// at once, so a future that waits for nothing held finishes within a few
/// polls: tests of the group commit drive it by hand, without timing.
pub fn poll_up_to<F: Future>(mut fut: Pin<&mut F>, polls: usize) -> Option<F::Output> {
    let mut cx = Context::from_waker(Waker::noop());
    (0..polls).find_map(|_| match fut.as_mut().poll(&mut cx) {
        Poll::Ready(out) => Some(out),
        Poll::Pending => None,
    })
}

/// Polls enough for anything not held to finish (`poll_up_to`).
pub const POLLS: usize = 1_000;
