//! A deterministic simulator: several stores, each a real `Shard` over a
//! real `Wal` on an in-memory disk, connected by a fake network (the
//! transport's real frames, through `transport::Faults`: drop, delay,
//! duplicate, reorder, partition), driven by a fake clock in 1 ms steps.
//! Everything random comes from one seed (the network's faults, disk
//! latencies, raft's election timeouts), so a failing run replays exactly
//! with the same seed. Snapshots are written after a simulated delay and
//! travel between stores whole, after a delay, unless the stores are
//! partitioned or the destination is down (the sender then hears of the
//! failure, as from the transport's snapshot stream).

pub mod campaign;
pub mod pd;
pub mod store;
pub mod workload;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use transport::{
    Destination, Envelope, FaultConfig, Faults, FlushedFrame, FrameDecoder, FrameKind, RaftBatch, SeededRng,
};

use crate::error::RegionError;
use crate::region::meta::{PeerMeta, RegionMeta};
use crate::shard::{Input, Output, Response, ShardLimits};
use crate::snapshot::RegionSnapshot;
use store::{sim_wal_options, SimStore};

/// Request ids from here up are the simulation's own (splits a leader
/// asked for): no one waits for their replies.
const SIM_INTERNAL_REQUEST_MIN: u64 = 1 << 62;
/// Request ids of PD's directives start here (below the split asks', which
/// add ids from `SIM_FIRST_ALLOCATED_ID` or PD's allocator).
const SIM_DIRECTIVE_REQUEST_MIN: u64 = SIM_INTERNAL_REQUEST_MIN + (1 << 61);
/// Ids the simulation hands out for splits start here (above the spec's).
const SIM_FIRST_ALLOCATED_ID: u64 = 1 << 40;

/// How often the stores report their leaders' regions to PD (when the
/// simulation runs PD).
const PD_REPORT_INTERVAL: Duration = Duration::from_millis(100);

/// The simulation's time step.
pub const STEP: Duration = Duration::from_millis(1);

#[derive(Clone, Debug)]
pub struct SimOptions {
    pub seed: u64,
    pub stores: u64,
    /// Replicas of each initial region (on stores `i`, `i + 1`, … of region `i`).
    pub replicas: u64,
    pub regions: u64,
    /// Faults on every frame between stores (its seed is derived from `seed`).
    pub faults: FaultConfig,
    /// Time a persist batch takes to become durable.
    pub disk_latency: (Duration, Duration),
    /// Chance (per million persists) that a persist stalls for `disk_stall`
    /// instead (this class of disk has slow spells).
    pub disk_stall_per_million: u32,
    pub disk_stall: Duration,
    /// Time between raft ticks.
    pub tick: Duration,
    /// Applied log bytes past which a region snapshots (small, so the
    /// simulation compacts, sends and installs snapshots often).
    pub snapshot_log_bytes_min: usize,
    /// State bytes past which a region splits (large by default: tests
    /// that split set it).
    pub region_split_bytes: u64,
    /// Whether a leader's ask for split ids is answered (`false`: PD is
    /// unreachable, and regions cannot split by size).
    pub split_ids: bool,
    /// Run PD's real `Cluster` in the simulation (`pd::SimPd`): the initial
    /// layout comes from it, leaders report to it, split ids come from its
    /// allocator, and it can be crashed and restarted. Otherwise the layout
    /// is `bootstrap_spec` and the simulation hands out ids itself.
    pub pd: bool,
    /// Time writing a snapshot file takes; time one takes to reach a peer.
    pub snapshot_write: Duration,
    pub snapshot_transfer: Duration,
    /// `false`: one persist per region ready, one frame per message.
    pub batching: bool,
}

impl SimOptions {
    pub fn new(seed: u64) -> SimOptions {
        SimOptions {
            seed,
            stores: 3,
            replicas: 3,
            regions: 16,
            faults: FaultConfig::default(),
            disk_latency: (Duration::from_micros(200), Duration::from_millis(2)),
            disk_stall_per_million: 20_000,
            disk_stall: Duration::from_millis(30),
            tick: Duration::from_millis(10),
            snapshot_log_bytes_min: 16 << 10,
            region_split_bytes: u64::MAX,
            split_ids: true,
            pd: false,
            snapshot_write: Duration::from_millis(5),
            snapshot_transfer: Duration::from_millis(20),
            batching: true,
        }
    }

    /// The shard limits every store of the simulation runs with.
    pub fn limits(&self) -> ShardLimits {
        ShardLimits::for_wal(&sim_wal_options())
            .with_snapshot_log_min(self.snapshot_log_bytes_min)
            .with_region_split_bytes(self.region_split_bytes)
            .with_batching(self.batching)
    }
}

/// A snapshot on its way from one store to another.
struct SnapshotSend {
    arrives_at: Instant,
    from_store: u64,
    to: Destination,
    envelope: Envelope,
    snapshot: RegionSnapshot,
}

/// The first key of region `i` of the bootstrap spec (region 0 starts at the empty key).
pub fn region_start_key(i: u64) -> Vec<u8> {
    if i == 0 {
        vec![]
    } else {
        format!("r{i:04}").into_bytes()
    }
}

/// The bootstrap spec: `regions` regions splitting the key space, region
/// `i` with `replicas` peers on stores `i % stores + 1` onwards (shard 0),
/// peer ids `region * 100 + store`.
pub fn bootstrap_spec(stores: u64, replicas: u64, regions: u64) -> Vec<RegionMeta> {
    assert!((1..=stores).contains(&replicas), "{replicas} replicas on {stores} stores");
    (0..regions)
        .map(|i| {
            let mut on: Vec<u64> = (0..replicas).map(|r| (i + r) % stores + 1).collect();
            on.sort_unstable();
            RegionMeta {
                id: i + 1,
                start_key: region_start_key(i),
                end_key: if i + 1 == regions { vec![] } else { region_start_key(i + 1) },
                conf_ver: 1,
                version: 1,
                peers: on.iter().map(|&s| PeerMeta::voter((i + 1) * 100 + s, s, 0)).collect(),
                max_peer_id: (i + 1) * 100 + on.last().expect("replicas ≥ 1"),
            }
        })
        .collect()
}

pub struct Sim {
    pub options: SimOptions,
    pub now: Instant,
    start: Instant,
    rng: SeededRng,
    pub metas: Vec<RegionMeta>,
    pub stores: BTreeMap<u64, SimStore>,
    net: Faults<(u64, FlushedFrame)>,
    /// Each store ticks on its own phase (their clocks are not aligned).
    next_tick: BTreeMap<u64, Instant>,
    next_request: u64,
    /// Requests in flight: which store has them.
    in_flight: BTreeMap<u64, u64>,
    /// Finished requests, until taken.
    replies: BTreeMap<u64, Result<Response, RegionError>>,
    /// Requests lost with a crashed store (their outcome is unknown).
    lost: Vec<u64>,
    snapshot_sends: Vec<SnapshotSend>,
    /// The next id the simulation's allocator hands out (PD's role).
    next_id: u64,
    /// PD, when the simulation runs it (`SimOptions::pd`).
    pub pd: Option<pd::SimPd>,
    /// When the leaders next report to PD.
    next_pd_report: Instant,
    /// The last request id the simulation gave to work of its own (PD's
    /// directives; split asks use `SIM_INTERNAL_REQUEST_MIN` + the new id).
    next_internal_request: u64,
    /// (store, region) pairs whose arriving raft messages are held back (`hold`).
    held_routes: std::collections::BTreeSet<(u64, u64)>,
    /// Messages held back, in arrival order, with their destination store.
    held: Vec<(u64, Envelope)>,
    /// (store, region) pairs whose snapshots are held back (`hold_snapshots`).
    held_snapshot_routes: std::collections::BTreeSet<(u64, u64)>,
}

impl Sim {
    pub fn new(options: SimOptions) -> Sim {
        let start = Instant::now();
        let mut rng = SeededRng::new(options.seed);
        let (pd, metas) = if options.pd {
            let (pd, metas) = pd::SimPd::bootstrap(options.stores, options.replicas, options.regions);
            (Some(pd), metas)
        } else {
            (None, bootstrap_spec(options.stores, options.replicas, options.regions))
        };
        let limits = options.limits();
        let stores =
            (1..=options.stores).map(|id| (id, SimStore::bootstrap(id, &metas, rng.next_u64(), limits))).collect();
        let tick_ms = options.tick.as_millis().max(1) as u64;
        let next_tick =
            (1..=options.stores).map(|id| (id, start + Duration::from_millis(rng.between(1, tick_ms)))).collect();
        let faults = FaultConfig { seed: rng.next_u64(), ..options.faults.clone() };
        Sim {
            now: start,
            start,
            next_tick,
            options,
            rng,
            metas,
            stores,
            net: Faults::new(faults),
            next_request: 1,
            in_flight: BTreeMap::new(),
            replies: BTreeMap::new(),
            lost: vec![],
            snapshot_sends: vec![],
            next_id: SIM_FIRST_ALLOCATED_ID,
            pd,
            next_pd_report: start,
            next_internal_request: SIM_DIRECTIVE_REQUEST_MIN,
            held_routes: Default::default(),
            held: vec![],
            held_snapshot_routes: Default::default(),
        }
    }

    /// Simulated time since the start, in microseconds.
    pub fn elapsed_us(&self) -> u64 {
        (self.now - self.start).as_micros() as u64
    }

    /// The region holding `key` in the bootstrap spec.
    pub fn region_of(&self, key: &[u8]) -> &RegionMeta {
        self.metas.iter().find(|m| m.contains(key)).expect("the spec covers the key space")
    }

    /// Submits a request to a store's shard; returns its id. A request to a
    /// store that is down is lost at once.
    pub fn submit(&mut self, store: u64, make: impl FnOnce(u64) -> Input) -> u64 {
        let request = self.next_request;
        self.next_request += 1;
        match self.stores.get_mut(&store).and_then(|s| s.node.as_mut()) {
            Some(node) => {
                node.inputs.push(make(request));
                self.in_flight.insert(request, store);
            }
            None => self.lost.push(request),
        }
        request
    }

    pub fn has_reply(&self, request: u64) -> bool {
        self.replies.contains_key(&request)
    }

    /// The reply to a request, once it came.
    pub fn take_reply(&mut self, request: u64) -> Option<Result<Response, RegionError>> {
        self.replies.remove(&request)
    }

    /// Requests whose store crashed while they were in flight, since the last call.
    pub fn take_lost(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.lost)
    }

    /// Store `store` stops: some of the writes of its persist in flight
    /// reach the disk, the rest are lost.
    pub fn crash(&mut self, store: u64) {
        let rng = &mut self.rng;
        let s = self.stores.get_mut(&store).expect("a store of the sim");
        s.crash(|n| rng.between(0, n as u64) as usize, |len| len);
        self.requests_lost_with(store);
    }

    /// From now on store `store`'s disk fails every fdatasync: at its next
    /// persist the WAL fails, and the store stops as the runtime's does
    /// (what that write left on the disk torn anywhere).
    pub fn fail_syncs(&mut self, store: u64) {
        self.stores[&store].disk.fail_syncs();
    }

    /// Flips a bit of one byte of a WAL record of down store `store` (bit
    /// rot, a bad sector), and has it restart in tolerant recovery — as an
    /// operator does once a strict store refused to start on it
    /// (docs/quickstart.md, "A damaged WAL record"). Whether a record was
    /// there to rot. Only records of entries and hard states rot: a lost
    /// checkpoint, meta or snapshot record may leave a region with a log and
    /// no meta, or pointing at a snapshot file already replaced, and a store
    /// refuses to start on either (docs/reliability.md, "Open").
    pub fn rot_wal_byte(&mut self, store: u64, rng: &mut SeededRng) -> bool {
        let s = self.stores.get_mut(&store).expect("a store of the sim");
        assert!(s.node.is_none(), "store {store} rots only while it is down");
        let mut records = vec![];
        for name in s.disk.file_names() {
            let Some(wal::layout::FileKind::Segment(seq)) = wal::layout::parse_name(&name) else { continue };
            let bytes = s.disk.contents(&name).expect("listed");
            for at in wal::format::record_offsets(&bytes, seq) {
                let Ok(r) = wal::format::decode_record(&bytes, at, seq) else { continue };
                let log_only = r.header.kind == wal::format::RecordKind::Batch
                    && wal::format::decode_batch(r.payload, r.header.section_count).is_ok_and(|sections| {
                        !sections.is_empty()
                            && sections.iter().all(|s| {
                                let h = &s.head;
                                h.snapshot.is_none()
                                    && h.compact.is_none()
                                    && h.conf_state.is_none()
                                    && h.meta.is_none()
                                    && !h.tombstone
                                    && !h.forget
                            })
                    });
                if log_only {
                    // (its header and payload: the padding after it is no one's)
                    records.push((name.clone(), seq, at, r.payload_offset() + r.payload.len()));
                }
            }
        }
        if records.is_empty() {
            return false;
        }
        let (name, seq, start, end) = records[rng.between(0, records.len() as u64 - 1) as usize].clone();
        let at = rng.between(start as u64, end as u64 - 1);
        s.disk.flip_byte(&name, at, 1 << rng.between(0, 7));
        let bytes = s.disk.contents(&name).expect("flipped");
        if wal::format::decode_record(&bytes, start, seq).is_ok() {
            return false; // (a byte no check covers, and no reader uses: nothing rotted that matters)
        }
        s.recovery_mode = wal::RecoveryMode::Tolerant;
        tracing::info!(store, "bit rot: {name} byte {at} flipped; the store restarts in tolerant recovery");
        true
    }

    /// A store whose persist failed stops (the runtime aborts the process).
    fn crash_after_failed_sync(&mut self, store: u64) {
        let rng = &mut self.rng;
        let s = self.stores.get_mut(&store).expect("a store of the sim");
        s.crash(|n| n, |len| rng.between(0, len as u64) as usize);
        self.requests_lost_with(store);
    }

    fn requests_lost_with(&mut self, store: u64) {
        let lost: Vec<u64> = self.in_flight.iter().filter(|(_, s)| **s == store).map(|(r, _)| *r).collect();
        for r in lost {
            self.in_flight.remove(&r);
            self.lost.push(r);
        }
    }

    pub fn restart(&mut self, store: u64) {
        let seed = self.rng.next_u64();
        self.stores.get_mut(&store).expect("a store of the sim").restart(seed);
    }

    pub fn partition(&mut self, a: u64, b: u64) {
        self.net.partition(a, b);
    }

    /// Cuts what store `from` sends to store `to` only.
    pub fn partition_one_way(&mut self, from: u64, to: u64) {
        self.net.partition_one_way(from, to);
    }

    pub fn heal_all(&mut self) {
        self.net.heal_all();
    }

    /// New network fault rates from now on (a campaign calms the network
    /// before it checks that the cluster recovers).
    pub fn set_network_faults(&mut self, faults: FaultConfig) {
        self.net.set_rates(faults);
    }

    /// Holds back every raft message of `region` that arrives at `store`
    /// (after the network's own faults) until `release`: a test forces an
    /// ordering with it, as TiKV's tests do with region packet filters.
    pub fn hold(&mut self, store: u64, region: u64) {
        self.held_routes.insert((store, region));
    }

    /// Holds back every snapshot of `region` sent to `store` until
    /// `release` (its sender hears nothing meanwhile: a slow transfer).
    pub fn hold_snapshots(&mut self, store: u64, region: u64) {
        self.held_snapshot_routes.insert((store, region));
    }

    /// How many messages and snapshots are held back now.
    pub fn held(&self) -> usize {
        let snapshots = self.snapshot_sends.iter().filter(|t| self.snapshot_held(t)).count();
        self.held.len() + snapshots
    }

    fn snapshot_held(&self, t: &SnapshotSend) -> bool {
        t.arrives_at <= self.now && self.held_snapshot_routes.contains(&(t.to.store_id, t.envelope.region_id))
    }

    /// Hands every held message to its store at once (in arrival order;
    /// a store that is down loses them), lets held snapshots arrive, and
    /// holds no more.
    pub fn release(&mut self) {
        self.held_routes.clear();
        self.held_snapshot_routes.clear();
        for (store, env) in std::mem::take(&mut self.held) {
            if let Some(node) = self.stores.get_mut(&store).and_then(|s| s.node.as_mut()) {
                node.inputs.push(Input::Raft(env));
            }
        }
    }

    /// The store whose peer leads `region` (the one with the highest term, if several think so).
    pub fn leader_of(&self, region: u64) -> Option<u64> {
        self.stores
            .values()
            .filter_map(|s| s.node.as_ref().map(|n| (s.id, n)))
            .filter_map(|(id, n)| n.shard.region(region).filter(|r| r.is_leader()).map(|r| (r.term(), id)))
            .max()
            .map(|(_, id)| id)
    }

    /// Routes by the newest meta of each region any store holds now (what a
    /// placement driver would tell clients after membership changes and
    /// splits): per region its newest epoch, and over overlapping ranges the
    /// newest version — the layout keeps covering the key space.
    pub fn refresh_metas(&mut self) {
        let mut newest: BTreeMap<u64, RegionMeta> = self.metas.iter().map(|m| (m.id, m.clone())).collect();
        for n in self.stores.values().filter_map(|s| s.node.as_ref()) {
            for r in n.shard.regions().filter(|r| r.meta.conf_ver > 0) {
                let known = newest.get(&r.meta.id).map(|m| (m.version, m.conf_ver));
                if known.is_none_or(|k| (r.meta.version, r.meta.conf_ver) > k) {
                    newest.insert(r.meta.id, r.meta.clone());
                }
            }
        }
        let mut by_version: Vec<RegionMeta> = newest.into_values().collect();
        by_version.sort_by(|a, b| b.version.cmp(&a.version).then(a.id.cmp(&b.id)));
        let mut layout: Vec<RegionMeta> = vec![];
        for m in by_version {
            if !layout.iter().any(|l| l.overlaps(&m.start_key, &m.end_key)) {
                layout.push(m);
            }
        }
        layout.sort_by(|a, b| a.start_key.cmp(&b.start_key));
        self.metas = layout;
    }

    /// `count` ids no one had before: from PD's allocator when the
    /// simulation runs PD (`None` while it is down), else its own.
    pub fn alloc_ids(&mut self, count: u64) -> Option<u64> {
        if let Some(pd) = self.pd.as_mut() {
            return pd.alloc_ids(count);
        }
        let first = self.next_id;
        self.next_id += count;
        Some(first)
    }

    /// Runs one step of simulated time.
    pub fn step(&mut self) {
        self.now += STEP;
        let now = self.now;
        if now >= self.next_pd_report {
            // every store's PD worker reports its leaders' regions
            self.next_pd_report = now + PD_REPORT_INTERVAL;
            let now_ms = (now - self.start).as_millis() as u64;
            if let Some(pd) = self.pd.as_mut() {
                let next_request = &mut self.next_internal_request;
                for s in self.stores.values_mut() {
                    if let Some(n) = s.node.as_mut() {
                        let request = || {
                            *next_request += 1;
                            *next_request
                        };
                        let directives = pd.report(s.id, n.shard.leader_reports(), now_ms, request);
                        n.inputs.extend(directives);
                    }
                }
            }
        }
        for (id, s) in self.stores.iter_mut() {
            let next = self.next_tick.get_mut(id).expect("every store ticks");
            if now >= *next {
                *next += self.options.tick;
                if let Some(n) = s.node.as_mut() {
                    n.tick();
                }
            }
        }
        for (from, frame) in self.net.due(now) {
            let Some(node) = self.stores.get_mut(&frame.to.store_id).and_then(|s| s.node.as_mut()) else {
                continue; // the destination is down: the connection is refused
            };
            for env in decode_frame(&frame.bytes) {
                debug_assert_eq!(env.from.store_id, from);
                if self.held_routes.contains(&(frame.to.store_id, env.region_id)) {
                    self.held.push((frame.to.store_id, env));
                } else {
                    node.inputs.push(Input::Raft(env));
                }
            }
        }
        self.deliver_snapshots();
        let (lo, hi) = self.options.disk_latency;
        let mut split_asks = vec![];
        let mut failed_syncs = vec![];
        for s in self.stores.values_mut() {
            let Some(node) = s.node.as_mut() else { continue };
            if node.persist.as_ref().is_some_and(|p| p.durable_at <= now) {
                let p = node.persist.take().unwrap();
                // (the seal after it: one more write of the same disk)
                let seal = Duration::from_micros(self.rng.between(lo.as_micros() as u64, hi.as_micros() as u64));
                if let Err(e) = node.persist_now(&s.files, p.batch, p.writes, p.votes, now + seal) {
                    tracing::info!(store = s.id, "the WAL failed ({e}): the store stops");
                    failed_syncs.push(s.id);
                    continue;
                }
            }
            let (acknowledged, later): (Vec<_>, Vec<_>) = node.acknowledging.drain(..).partition(|(at, _)| *at <= now);
            node.acknowledging = later;
            node.inputs.extend(acknowledged.into_iter().map(|(_, batch)| Input::Persisted { batch }));
            let (due, later): (Vec<_>, Vec<_>) = node.snapshot_writes.drain(..).partition(|(at, _)| *at <= now);
            node.snapshot_writes = later;
            for (_, snap) in due {
                node.inputs.push(Input::SnapshotWritten { id: snap.id(), result: Ok(0) });
                s.files.0.borrow_mut().snapshots.insert(snap.id(), snap.as_filed());
            }
            node.inputs.extend(crate::driver::disk_full_change(&node.gc, &mut node.disk_full_told));
            if node.inputs.is_empty() && !node.shard.has_ready() {
                continue;
            }
            let inputs = std::mem::take(&mut node.inputs);
            for out in node.shard.step(inputs) {
                match out {
                    Output::Persist { batch, writes, installs, votes } => {
                        // the runtime's persist task moves received files into place first
                        node.install_now(&s.files, installs);
                        let latency = if self.rng.chance(self.options.disk_stall_per_million) {
                            self.options.disk_stall
                        } else {
                            Duration::from_micros(self.rng.between(lo.as_micros() as u64, hi.as_micros() as u64))
                        };
                        let durable_at = now + latency;
                        node.persist = Some(store::InFlightPersist { batch, writes, votes, durable_at });
                    }
                    Output::Frames(frames) => {
                        for f in frames {
                            let to = f.to.store_id;
                            self.net.send(now, s.id, to, (s.id, f));
                        }
                    }
                    Output::Reply { request, result } if request >= SIM_INTERNAL_REQUEST_MIN => {
                        // (a split ask's or a directive's: as the runtime, only logged)
                        if let Err(e) = result {
                            tracing::info!(store = s.id, "the simulation's own request {request} refused: {e}");
                        }
                    }
                    Output::Reply { request, result } => {
                        self.in_flight.remove(&request);
                        self.replies.insert(request, result);
                    }
                    Output::WriteSnapshot(snap) => node.snapshot_writes.push((now + self.options.snapshot_write, snap)),
                    Output::SendSnapshot { to, envelope, id } => match s.files.0.borrow().snapshots.get(&id) {
                        Some(snap) => self.snapshot_sends.push(SnapshotSend {
                            arrives_at: now + self.options.snapshot_transfer,
                            from_store: s.id,
                            to,
                            envelope,
                            snapshot: snap.clone(),
                        }),
                        None => panic!("store {}: sending snapshot {id:?}, which has no file", s.id),
                    },
                    Output::RemoveSnapshot(id) => {
                        s.files.0.borrow_mut().snapshots.remove(&id);
                    }
                    Output::DiscardIncoming(path) => {
                        s.files.0.borrow_mut().incoming.remove(&path);
                    }
                    Output::CaughtUp => node.gc.wal().clear_needs_catch_up(),
                    // (the runtime runs it on a blocking thread: here it is answered next step)
                    Output::FindSplitKey(job) => node.inputs.push(job.run()),
                    // (PD answers at once, if it is up: the region as it has it; without
                    // PD in the simulation, the simulation answers from the newest
                    // metas the replicas hold, never as a leader's report — so only
                    // a vote request's ask is carried out, as the runtime would have
                    // none carried out at all: splits here need no PD)
                    Output::CheckMembership { region, peer_id } => {
                        let answer = match self.pd.as_mut() {
                            Some(pd) => pd.membership_answer(region).filter(|_| pd.is_up()),
                            None => Some((self.metas.iter().find(|m| m.id == region).cloned(), false)),
                        };
                        if let Some((current, reported)) = answer {
                            let current = current.map(Box::new);
                            node.inputs.push(Input::MembershipChecked { region, peer_id, current, reported });
                        }
                    }
                    Output::AskSplit { .. } if !self.options.split_ids => {}
                    // (answered once every store has stepped: the allocator is the simulation's)
                    Output::AskSplit { region, epoch, split_key, peers } => {
                        split_asks.push((s.id, region, epoch, split_key, peers))
                    }
                }
            }
        }
        for store in failed_syncs {
            self.crash_after_failed_sync(store);
        }
        for (store, region, epoch, split_key, peers) in split_asks {
            // ids from PD's allocator (none while it is down: the leader asks again)
            let needed = crate::shard::SplitRequest::ids_needed(peers);
            let Some(first) = self.alloc_ids(u64::from(needed)) else { continue };
            let split = crate::shard::SplitRequest::with_ids(split_key, first, peers);
            let request = SIM_INTERNAL_REQUEST_MIN + first;
            if let Some(node) = self.stores.get_mut(&store).and_then(|s| s.node.as_mut()) {
                node.inputs.push(Input::Split { request, region, epoch, split });
            }
        }
    }

    /// Hands snapshots that arrived to their stores and tells their senders.
    fn deliver_snapshots(&mut self) {
        let now = self.now;
        let sends = std::mem::take(&mut self.snapshot_sends);
        let (due, later): (Vec<_>, Vec<_>) =
            sends.into_iter().partition(|t| t.arrives_at <= now && !self.snapshot_held(t));
        self.snapshot_sends = later;
        for t in due {
            let (region, to_peer) = (t.envelope.region_id, t.envelope.to.peer_id);
            let cut = self.net.is_partitioned(t.from_store, t.to.store_id);
            let dest = self.stores.get_mut(&t.to.store_id).expect("a store of the sim");
            let ok = !cut && dest.node.is_some();
            if ok {
                let file = std::path::PathBuf::from(format!("incoming/{}", dest.next_incoming));
                dest.next_incoming += 1;
                dest.files.0.borrow_mut().incoming.insert(file.clone(), t.snapshot.clone());
                let node = dest.node.as_mut().unwrap();
                node.inputs.push(Input::Snapshot { envelope: t.envelope, snapshot: Box::new(t.snapshot), file });
            }
            if let Some(n) = self.stores.get_mut(&t.from_store).and_then(|s| s.node.as_mut()) {
                n.inputs.push(Input::SnapshotSent { region, to_peer, ok });
            }
        }
    }

    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        while self.now < until {
            self.step();
        }
    }

    /// Steps until `done` holds, at most `limit` of simulated time; whether it held.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Sim) -> bool) -> bool {
        let until = self.now + limit;
        while self.now < until {
            if done(self) {
                return true;
            }
            self.step();
        }
        done(self)
    }

    /// Whether every running store has nothing in flight.
    pub fn all_quiet(&self) -> bool {
        self.snapshot_sends.is_empty()
            && self.stores.values().filter_map(|s| s.node.as_ref()).all(|n| {
                n.shard.is_quiet() && n.persist.is_none() && n.acknowledging.is_empty() && n.snapshot_writes.is_empty()
            })
    }

    /// Whether every region has a leader.
    pub fn all_led(&self) -> bool {
        self.metas.iter().all(|m| self.leader_of(m.id).is_some())
    }
}

/// The raft envelopes of one frame as the transport encoded it.
fn decode_frame(bytes: &[u8]) -> Vec<transport::Envelope> {
    let mut d = FrameDecoder::new();
    d.push(bytes);
    let f = d.next_frame().expect("the simulator's frames are well formed").expect("a whole frame");
    assert_eq!(f.kind, FrameKind::Raft);
    RaftBatch::decode(f.payload).expect("a valid raft batch").to_envelopes()
}
