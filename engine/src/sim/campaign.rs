//! The chaos run, and a campaign of them: simulated clients work on a small
//! key space (every operation recorded) while stores crash — tearing the
//! write in flight — links break (both ways or one), frames are lost,
//! duplicated, reordered and delayed, PD crashes, regions split and
//! replicas move; then everything is healed and restarted, each key is read
//! once more, and the run is checked: the history linearizable (so no
//! acknowledged write was lost), every region's replicas converged, no work
//! left hanging, no two regions of a store overlapping, every region whole.
//!
//! `Profile::chaos` is the fixed profile the tests run; `Profile::draw` is
//! a campaign's (TigerBeetle's VOPR): each seed draws its own fault rates
//! from ranges, so many seeds cover calm networks and terrible ones, one
//! store down or two. `run_seed` runs and checks one seed of a campaign;
//! the same seed replays the same run exactly.

use std::time::Duration;

use history::{Outcome, Verdict};
use transport::{FaultConfig, SeededRng};

use crate::region::meta::{PeerChange, PeerMeta, PeerRole};
use crate::shard::{Input, SplitRequest};

use super::workload::Workload;
use super::{region_start_key, Sim, SimOptions};

/// Simulated time between two rounds of fault decisions.
const SLOT_US: u64 = 100_000;
/// Regions, keys per region and clients of every run.
const REGIONS: u64 = 4;
const KEYS_PER_REGION: u64 = 3;
const CLIENTS: usize = 8;
/// How long the healed cluster has to elect every leader, and to go quiet.
const LEADERS_WITHIN: Duration = Duration::from_secs(10);
const QUIET_WITHIN: Duration = Duration::from_secs(5);

/// What a run does to the cluster, as rates per million per 100 ms slot
/// (frame faults: per million frames).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    /// One persist per region ready and one frame per message when `false`.
    pub batching: bool,
    /// Frame faults while the run lasts (the network is calm afterwards).
    pub network: FaultConfig,
    pub crash_per_million: u32,
    /// Stores down at once, at most (1 or 2).
    pub down_max: usize,
    /// How long a crashed store stays down, in ms.
    pub down_ms: (u64, u64),
    pub partition_per_million: u32,
    /// Of the partitions, the share that cuts one direction only.
    pub one_way_per_million: u32,
    pub heal_per_million: u32,
    /// Peers removed and added back (new peer ids) through the leaders.
    pub membership: bool,
    /// Regions split at random keys of the workload through their leaders.
    pub splits: bool,
    /// PD's real `Cluster` in the simulation, crashed and restarted.
    pub pd: bool,
    /// Four stores, and PD asked at random to move a replica (with `pd`;
    /// instead of `membership`: PD's checkers repair the rest).
    pub moves: bool,
    /// Of the crashes, the share that are an fdatasync failing instead: the
    /// store's WAL fails at its next persist, and the store stops then with
    /// that write torn anywhere (`Sim::fail_syncs`).
    pub sync_failure_per_million: u32,
    /// Of the restarts, the share that find a byte of a WAL record flipped
    /// (bit rot, a bad sector): the store restarts in tolerant recovery, as
    /// an operator would after it refused to start, and its regions catch
    /// up from their leaders. One store per run at most: two rotten disks
    /// holding the same entry are past what three replicas survive. Only in
    /// runs where every region keeps three voters and no record creates a
    /// region (no membership changes, splits or moves): a region of two
    /// voters whose replica is catching up elects no one, and a lost record
    /// that created a region leaves a log without a meta, which a store
    /// refuses to start on (docs/reliability.md, "Open findings").
    pub bit_rot_per_million: u32,
    pub duration: Duration,
}

impl Profile {
    /// The tests' profile: 2% of frames lost, 1% duplicated, 1% reordered,
    /// up to 3 ms of delay, one store down at a time, symmetric partitions.
    pub fn chaos(batching: bool, splits: bool, pd: bool, moves: bool) -> Profile {
        Profile {
            batching,
            network: FaultConfig {
                drop_per_million: 20_000,
                duplicate_per_million: 10_000,
                reorder_per_million: 10_000,
                delay_min: Duration::ZERO,
                delay_max: Duration::from_millis(3),
                ..Default::default()
            },
            crash_per_million: 150_000,
            down_max: 1,
            down_ms: (200, 800),
            partition_per_million: 100_000,
            one_way_per_million: 0,
            heal_per_million: 300_000,
            membership: !moves,
            splits,
            pd: pd || moves,
            moves,
            sync_failure_per_million: 0,
            bit_rot_per_million: 0,
            duration: Duration::from_secs(6),
        }
    }

    /// A campaign seed's profile, drawn from ranges: 0–30% of frames lost,
    /// 0–5% duplicated and reordered, delays up to twice the simulator's
    /// election timeout (100 ms), crashes from rare to every other slot, one
    /// or two stores down at once, partitions one way or both; PD, splits
    /// and moves on or off.
    pub fn draw(seed: u64) -> Profile {
        let mut rng = SeededRng::new(seed ^ 0x7a11_0ffa_17ed);
        // (disk faults from their own sequence: what the rest of a seed draws
        // stays as it was before they existed: a seed that draws none replays as before)
        let mut disk = SeededRng::new(seed ^ 0xd15c_fa17);
        let some = |rng: &mut SeededRng| if rng.chance(500_000) { rng.between(50_000, 500_000) as u32 } else { 0 };
        let sync_failure_per_million = some(&mut disk);
        let bit_rot_per_million = some(&mut disk);
        // (bit rot needs regions that keep three voters: half its seeds change no membership)
        let rot_without_membership = bit_rot_per_million > 0 && disk.chance(500_000);
        let election_timeout = Duration::from_millis(100);
        let delay_max_us = rng.between(0, 2 * election_timeout.as_micros() as u64);
        let pd = rng.chance(500_000);
        let moves = pd && rng.chance(500_000);
        Profile {
            batching: rng.chance(900_000),
            network: FaultConfig {
                drop_per_million: rng.between(0, 300_000) as u32,
                duplicate_per_million: rng.between(0, 50_000) as u32,
                reorder_per_million: rng.between(0, 50_000) as u32,
                delay_min: Duration::ZERO,
                delay_max: Duration::from_micros(delay_max_us),
                ..Default::default()
            },
            crash_per_million: rng.between(20_000, 500_000) as u32,
            down_max: if rng.chance(250_000) { 2 } else { 1 },
            down_ms: (100, rng.between(200, 2_000)),
            partition_per_million: rng.between(0, 250_000) as u32,
            one_way_per_million: rng.between(0, 500_000) as u32,
            heal_per_million: rng.between(100_000, 500_000) as u32,
            membership: !moves && !rot_without_membership,
            splits: rng.chance(500_000),
            pd,
            moves,
            sync_failure_per_million,
            bit_rot_per_million,
            duration: Duration::from_secs(6),
        }
    }

    /// One line naming the profile (a campaign's failing seed prints it).
    pub fn describe(&self) -> String {
        let n = &self.network;
        format!(
            "loss {:.1}% dup {:.1}% reorder {:.1}% delay ≤{} ms, crashes {:.0}%/slot (≤{} down, {}–{} ms; {:.0}% failed fdatasyncs, {:.0}% of restarts on bit rot), partitions {:.0}%/slot ({:.0}% one-way), heal {:.0}%/slot{}{}{}{}",
            f64::from(n.drop_per_million) / 1e4,
            f64::from(n.duplicate_per_million) / 1e4,
            f64::from(n.reorder_per_million) / 1e4,
            n.delay_max.as_millis(),
            f64::from(self.crash_per_million) / 1e4,
            self.down_max,
            self.down_ms.0,
            self.down_ms.1,
            f64::from(self.sync_failure_per_million) / 1e4,
            f64::from(self.bit_rot_per_million) / 1e4,
            f64::from(self.partition_per_million) / 1e4,
            f64::from(self.one_way_per_million) / 1e4,
            f64::from(self.heal_per_million) / 1e4,
            if self.membership { ", membership changes" } else { "" },
            if self.splits { ", splits" } else { "" },
            if self.moves { ", PD moves" } else if self.pd { ", PD" } else { "" },
            if self.batching { "" } else { ", no batching" },
        )
    }
}

/// What one run did.
pub struct Run {
    pub sim: Sim,
    pub work: Workload,
    pub crashes: u32,
    pub partitions: u32,
    pub membership_changes: u32,
    pub splits: u32,
    /// Moves PD finished (its operators by hand), across its restarts.
    pub moves: u64,
    /// Crashes that were a failed fdatasync, and restarts on a rotten byte.
    pub sync_failures: u32,
    pub bit_rots: u32,
}

/// A key of the workload: `n` of region `region_index`'s keys.
pub fn workload_key(region_index: u64, n: u64) -> Vec<u8> {
    let mut k = region_start_key(region_index);
    if k.is_empty() {
        k = b"a".to_vec();
    }
    k.extend_from_slice(format!("-{n:05}").as_bytes());
    k
}

/// Runs `profile` with `seed`: the faults while the clients work, then
/// every store restarted, PD back, the network healed and calm,
/// outstanding operations finished, and every key read once more through
/// its leader. Panics if the healed cluster elects no leader everywhere.
pub fn run(seed: u64, profile: &Profile) -> Run {
    let mut opts = SimOptions::new(seed);
    opts.regions = REGIONS;
    opts.batching = profile.batching;
    opts.pd = profile.pd;
    if profile.moves {
        opts.stores = 4;
    }
    // snapshots every few dozen writes: crashes land mid-snapshot, restarts
    // load snapshots, and lagging replicas are sent them
    opts.snapshot_log_bytes_min = 1 << 10;
    opts.faults = profile.network.clone();
    let mut sim = Sim::new(opts);
    let keys: Vec<Vec<u8>> = (0..REGIONS).flat_map(|r| (0..KEYS_PER_REGION).map(move |n| workload_key(r, n))).collect();
    let mut chaos = SeededRng::new(seed ^ 0x5eed_c4a0);
    // (disk faults from their own sequence, as in `Profile::draw`)
    let mut disk_faults = SeededRng::new(seed ^ 0xd15c_c4a0);
    let mut rotten: Option<u64> = None;
    let (mut sync_failures, mut bit_rots) = (0, 0);
    let split_keys = keys.clone();
    let mut work = Workload::new(seed ^ 0xc11e_4750, keys, CLIENTS);
    let mut down: Vec<(u64, u64)> = vec![];
    let (mut crashes, mut partitions, mut membership_changes) = (0, 0, 0);
    let mut next_peer_id = 10_000;
    let mut change_requests = vec![];
    let (mut split_requests, mut splits_done) = (vec![], 0);
    let mut moves_done = 0;
    let stores = sim.options.stores;
    let duration_us = profile.duration.as_micros() as u64;
    while sim.elapsed_us() < duration_us {
        let now = sim.elapsed_us();
        if now.is_multiple_of(SLOT_US) {
            let back: Vec<u64> = down.iter().filter(|(_, at)| now >= *at).map(|(s, _)| *s).collect();
            for s in &back {
                restart(&mut sim, *s, profile, &mut disk_faults, &mut rotten, &mut bit_rots);
            }
            down.retain(|(s, _)| !back.contains(s));
            // (at least one crash per run, by 1 s at the latest)
            let owed = crashes == 0 && now >= 1_000_000;
            if back.is_empty() && down.len() < profile.down_max && (chaos.chance(profile.crash_per_million) || owed) {
                let first = chaos.between(1, stores);
                let s = (0..stores).map(|k| (first - 1 + k) % stores + 1).find(|s| down.iter().all(|(d, _)| d != s));
                let s = s.expect("a store is up");
                if disk_faults.chance(profile.sync_failure_per_million) {
                    // it stops at its next persist (or when it is due back, if it wrote nothing)
                    sim.fail_syncs(s);
                    sync_failures += 1;
                } else {
                    sim.crash(s);
                }
                crashes += 1;
                down.push((s, now + chaos.between(1000 * profile.down_ms.0, 1000 * profile.down_ms.1)));
            }
            if profile.moves && chaos.chance(200_000) {
                // PD moves one replica of a region to the store that has none
                let m = sim.metas[chaos.between(0, sim.metas.len() as u64 - 1) as usize].clone();
                let to = (1..=stores).find(|s| m.peer_on(*s).is_none());
                let from = m.peers[chaos.between(0, m.peers.len() as u64 - 1) as usize].store_id;
                if let (Some(to), Some(pd)) = (to, sim.pd.as_mut().filter(|pd| pd.is_up())) {
                    // (refused when the region is busy or PD has not heard of its leader)
                    let _ = pd.move_region(m.id, from, to, now / 1000);
                }
            }
            // (and from 3 s on, until one has succeeded: every run changes membership)
            let owed = membership_changes == 0 && change_requests.is_empty() && now >= 3_000_000;
            if profile.membership && (chaos.chance(150_000) || owed) {
                if let Some(r) = change_membership(&mut sim, &mut chaos, &mut next_peer_id) {
                    change_requests.push(r);
                }
            }
            let split_owed = splits_done == 0 && split_requests.is_empty() && now >= 2_500_000;
            if profile.splits && (chaos.chance(200_000) || split_owed) {
                // a split at one of the workload's keys, through its region's leader
                let at = split_keys[chaos.between(0, split_keys.len() as u64 - 1) as usize].clone();
                if let Some(r) = split_at(&mut sim, at) {
                    split_requests.push(r);
                }
            }
            if let Some(pd) = sim.pd.as_mut() {
                // (PD down for a while, then back from what it saved)
                if pd.is_up() && (chaos.chance(50_000) || (pd.restarts == 0 && now == 3_000_000)) {
                    moves_done += pd.operator_counts("admin-move").finished;
                    pd.crash();
                } else if !pd.is_up() && chaos.chance(300_000) {
                    pd.restart();
                }
            }
            if chaos.chance(profile.partition_per_million) || (partitions == 0 && now == 2_000_000) {
                // isolate one store from both others (a leader there goes stale), or cut one link
                let a = chaos.between(1, 3);
                let one_way = profile.one_way_per_million > 0 && chaos.chance(profile.one_way_per_million);
                if one_way {
                    // (what `a` sends is lost, what it is sent arrives: it hears a
                    // leader it cannot answer, or leads on unheard)
                    sim.partition_one_way(a, a % 3 + 1);
                } else {
                    sim.partition(a, a % 3 + 1);
                }
                if chaos.chance(600_000) {
                    match one_way {
                        true => sim.partition_one_way(a, (a + 1) % 3 + 1),
                        false => sim.partition(a, (a + 1) % 3 + 1),
                    }
                }
                partitions += 1;
            } else if chaos.chance(profile.heal_per_million) {
                sim.heal_all();
            }
        }
        work.step(&mut sim, true);
        sim.step();
        split_requests.retain(|r| match sim.take_reply(*r) {
            Some(Ok(_)) => {
                splits_done += 1;
                false
            }
            Some(Err(_)) => false, // refused (a change pending, the region moved on): fine
            None => true,
        });
        change_requests.retain(|r| match sim.take_reply(*r) {
            Some(Ok(_)) => {
                membership_changes += 1;
                false
            }
            Some(Err(_)) => false, // refused (no healthy quorum after it, one pending): fine
            None => true,
        });
        sim.refresh_metas();
    }
    for (s, _) in down {
        restart(&mut sim, s, profile, &mut disk_faults, &mut rotten, &mut bit_rots);
    }
    if let Some(pd) = sim.pd.as_mut().filter(|pd| !pd.is_up()) {
        pd.restart();
    }
    sim.heal_all();
    sim.set_network_faults(FaultConfig::default());
    while !work.idle() {
        work.step(&mut sim, false);
        sim.step();
        sim.refresh_metas();
    }
    let led = sim.run_until(LEADERS_WITHIN, |s| s.all_led());
    assert!(led, "seed {seed}: no leaders after healing: {}", describe(&sim));
    sim.refresh_metas();
    work.read_every_key(&mut sim);
    moves_done += sim.pd.as_ref().map_or(0, |pd| pd.operator_counts("admin-move").finished);
    let splits = splits_done;
    Run { sim, work, crashes, partitions, membership_changes, splits, moves: moves_done, sync_failures, bit_rots }
}

/// Brings a crashed store back — one whose disk failed its fdatasyncs
/// stops first if it has not yet — after, now and then, a byte of a WAL
/// record of one store (`rotten`, the first so chosen) rots while it is down.
fn restart(
    sim: &mut Sim,
    s: u64,
    profile: &Profile,
    disk_faults: &mut SeededRng,
    rotten: &mut Option<u64>,
    bit_rots: &mut u32,
) {
    if sim.stores[&s].node.is_some() {
        sim.crash(s); // (its failing disk kept nothing of the write in flight)
    }
    let survivable = !profile.membership && !profile.splits && !profile.moves;
    if survivable
        && rotten.is_none_or(|r| r == s)
        && disk_faults.chance(profile.bit_rot_per_million)
        && sim.rot_wal_byte(s, disk_faults)
    {
        *rotten = Some(s);
        *bit_rots += 1;
    }
    sim.restart(s);
}

/// A membership change of one region through its leader: a follower
/// removed, or the missing store added back under a new peer id. The
/// request, if one went.
fn change_membership(sim: &mut Sim, chaos: &mut SeededRng, next_peer_id: &mut u64) -> Option<u64> {
    let region = sim.metas[chaos.between(0, sim.metas.len() as u64 - 1) as usize].id;
    let leader = sim.leader_of(region)?;
    let meta = sim.stores[&leader].node.as_ref().unwrap().shard.region(region).unwrap().meta.clone();
    let change = if meta.peers.len() == 3 {
        let others: Vec<_> = meta.peers.iter().filter(|p| p.store_id != leader).collect();
        PeerChange::RemovePeer(*others[chaos.between(0, 1) as usize])
    } else {
        let store = (1..=3).find(|s| meta.peer_on(*s).is_none()).unwrap();
        // (with PD in the simulation, its allocator's — PD refuses ids it
        // never handed out — and none while it is down)
        let peer_id = match sim.pd.is_some() {
            true => sim.alloc_ids(1)?,
            false => *next_peer_id + 1,
        };
        *next_peer_id = peer_id;
        PeerChange::AddVoter(PeerMeta::voter(peer_id, store, 0))
    };
    let epoch = meta.epoch();
    Some(sim.submit(leader, |request| Input::ChangePeer { request, region, epoch, change }))
}

/// A split of the region holding `at`, at `at`, through its leader (none
/// when it has no leader, `at` starts it, or no ids can be had).
fn split_at(sim: &mut Sim, at: Vec<u8>) -> Option<u64> {
    let meta = sim.region_of(&at).clone();
    let leader = sim.leader_of(meta.id)?;
    let current = sim.stores[&leader].node.as_ref().unwrap().shard.region(meta.id).map(|r| r.meta.clone())?;
    if !current.contains(&at) || current.start_key == at {
        return None;
    }
    let first = sim.alloc_ids(u64::from(SplitRequest::ids_needed(current.peers.len())))?;
    let split = SplitRequest::with_ids(at, first, current.peers.len());
    let (region, epoch) = (current.id, current.epoch());
    Some(sim.submit(leader, |request| Input::Split { request, region, epoch, split }))
}

/// Lets the cluster settle — every replica applies what is committed, and
/// PD, when it runs, finishes what its checkers started — then checks that
/// every region's replicas hold the same keys and values.
pub fn settle_and_check_converged(sim: &mut Sim) -> Result<(), String> {
    let mut last = None;
    for _ in 0..40 {
        sim.run_for(Duration::from_millis(200));
        if sim.pd.is_some() {
            // (between two of its patrols PD may have no operator while a
            // region still has a learner or a joint state left to settle)
            sim.refresh_metas();
            let settled = sim.metas.iter().all(|m| m.peers.iter().all(|p| p.role == PeerRole::Voter));
            if !sim.pd.as_mut().expect("checked").operators().is_empty() || !settled {
                continue;
            }
        }
        let applied: Vec<u64> = sim
            .stores
            .values()
            .filter_map(|s| s.node.as_ref())
            .flat_map(|n| n.shard.regions().map(|r| r.applied).collect::<Vec<_>>())
            .collect();
        if last.as_ref() == Some(&applied) {
            break;
        }
        last = Some(applied);
    }
    if sim.pd.is_some() {
        // (its checkers may have changed members since the caller looked)
        sim.refresh_metas();
    }
    check_converged(sim)
}

/// Every region's replicas (the members its meta names; a peer removed
/// while it was down may linger, stale, until it learns of it) hold the
/// same keys and values.
pub fn check_converged(sim: &Sim) -> Result<(), String> {
    for m in &sim.metas {
        let mut first = None;
        for p in &m.peers {
            let Some(n) = sim.stores[&p.store_id].node.as_ref() else { continue };
            let here = n.shard.region(m.id);
            let Some(r) = here.filter(|r| r.peer_id == p.peer_id) else {
                let overlapping: Vec<_> = n
                    .shard
                    .regions()
                    .filter(|r| r.meta.conf_ver > 0 && r.meta.overlaps(&m.start_key, &m.end_key))
                    .map(|r| (r.peer_id, &r.meta, r.is_leader(), r.raw.raft.leader_id))
                    .collect();
                return Err(format!(
                    "region {} member {p:?} is not hosted there (the store has {:?}; tombstone: {}; overlapping: {overlapping:?})",
                    m.id,
                    here.map(|r| (r.peer_id, &r.meta)),
                    n.shard.is_tombstone(m.id)
                ));
            };
            let rows = r.rows();
            match &first {
                None => first = Some((p.store_id, rows)),
                Some((store, want)) if *want != rows => {
                    return Err(format!("region {} diverged: store {} and store {store} differ", m.id, p.store_id))
                }
                Some(_) => {}
            }
        }
    }
    Ok(())
}

/// Liveness once settled: no request, proposal or persist is left hanging.
pub fn check_quiet(sim: &mut Sim) -> Result<(), String> {
    if sim.run_until(QUIET_WITHIN, |s| s.all_quiet()) {
        return Ok(());
    }
    let busy: Vec<String> = sim
        .stores
        .values()
        .filter_map(|s| s.node.as_ref().map(|n| format!("store {}: {}", s.id, n.shard.busy())))
        .collect();
    Err(format!("work left in flight after the run settled: {busy:?}"))
}

/// No shard holds two initialized regions whose ranges overlap.
pub fn check_no_overlap(sim: &Sim) -> Result<(), String> {
    for s in sim.stores.values() {
        let Some(n) = s.node.as_ref() else { continue };
        let metas: Vec<_> = n.shard.regions().map(|r| &r.meta).filter(|m| m.conf_ver > 0).collect();
        for (i, a) in metas.iter().enumerate() {
            if let Some(b) = metas[i + 1..].iter().find(|b| a.overlaps(&b.start_key, &b.end_key)) {
                return Err(format!("store {}: regions overlap: {a:?} and {b:?}", s.id));
            }
        }
    }
    Ok(())
}

/// Every region ends with `replicas` voters and nothing else (no learner,
/// no joint state): what PD's checkers repair.
pub fn check_whole(sim: &Sim) -> Result<(), String> {
    let want = sim.options.replicas as usize;
    match sim.metas.iter().find(|m| m.peers.len() != want || m.peers.iter().any(|p| p.role != PeerRole::Voter)) {
        Some(m) => Err(format!("region {} ends as {m:?}", m.id)),
        None => Ok(()),
    }
}

/// Every replica's view of its region (for a failure's message).
pub fn describe(sim: &Sim) -> String {
    let mut out = String::new();
    for s in sim.stores.values() {
        let Some(n) = s.node.as_ref() else {
            out += &format!("\nstore {} down", s.id);
            continue;
        };
        for r in n.shard.regions() {
            let peers: Vec<u64> = r.meta.peers.iter().map(|p| p.peer_id).collect();
            let voters = r.raw.raft.prs().conf().to_conf_state().voters;
            out += &format!(
                "\nstore {} region {} peer {} epoch {}/{} peers {peers:?} voters {voters:?} term {} leader {} applied {} commit {} snapshot {:?}{}{}",
                s.id,
                r.id(),
                r.peer_id,
                r.meta.conf_ver,
                r.meta.version,
                r.term(),
                r.raw.raft.leader_id,
                r.applied,
                r.raw.raft.raft_log.committed,
                r.snapshot.map(|s| s.index),
                if r.catching_up.is_some() { " catching up" } else { "" },
                if r.fenced.is_some() { " fenced" } else { "" },
            );
        }
    }
    out
}

/// What one seed of a campaign did, and whether it passed.
#[derive(Clone, Debug)]
pub struct SeedReport {
    pub seed: u64,
    pub profile: Profile,
    pub ops: usize,
    /// Operations whose outcome the client knows (not failed, not unknown).
    pub answered: usize,
    pub crashes: u32,
    pub partitions: u32,
    pub membership_changes: u32,
    pub splits: u32,
    pub moves: u64,
    /// Crashes that were a failed fdatasync, and restarts on a rotten byte.
    pub sync_failures: u32,
    pub bit_rots: u32,
    /// Why the seed failed (a check, or a panic's message).
    pub failure: Option<String>,
    /// The key whose history the checker could not decide within its step
    /// budget (`history::CHECK_STEPS_MAX`: many unknown outcomes on one key);
    /// every other check still ran.
    pub undecided: Option<Vec<u8>>,
}

impl SeedReport {
    /// A seed whose run panicked (`why`: where, and the message).
    pub fn panicked(seed: u64, why: String) -> SeedReport {
        SeedReport {
            seed,
            profile: Profile::draw(seed),
            ops: 0,
            answered: 0,
            crashes: 0,
            partitions: 0,
            membership_changes: 0,
            splits: 0,
            moves: 0,
            sync_failures: 0,
            bit_rots: 0,
            failure: Some(format!("panicked: {why}")),
            undecided: None,
        }
    }
}

/// Runs one seed of a campaign with the profile it draws and checks it.
/// The caller catches panics (a broken invariant inside the engine).
pub fn run_seed(seed: u64) -> SeedReport {
    let profile = Profile::draw(seed);
    let mut run = run(seed, &profile);
    let history = &run.work.history;
    let answered = history.iter().filter(|e| !matches!(e.outcome, Outcome::Failed | Outcome::Ambiguous)).count();
    let mut report = SeedReport {
        seed,
        profile: profile.clone(),
        ops: history.len(),
        answered,
        crashes: run.crashes,
        partitions: run.partitions,
        membership_changes: run.membership_changes,
        splits: run.splits,
        moves: run.moves,
        sync_failures: run.sync_failures,
        bit_rots: run.bit_rots,
        failure: None,
        undecided: None,
    };
    match check_run(&mut run, &profile) {
        Ok(undecided) => report.undecided = undecided,
        Err(why) => report.failure = Some(why),
    }
    report
}

/// Every check of a finished run; `Ok(Some(key))` when the history of
/// `key` could not be decided (the rest passed).
pub fn check_run(run: &mut Run, profile: &Profile) -> Result<Option<Vec<u8>>, String> {
    let undecided = match history::check(&run.work.history) {
        Verdict::Linearizable => None,
        Verdict::Unknown { key } => Some(key),
        broken @ Verdict::NotLinearizable { .. } => return Err(format!("history not linearizable: {broken:?}")),
    };
    settle_and_check_converged(&mut run.sim)?;
    check_quiet(&mut run.sim)?;
    check_no_overlap(&run.sim)?;
    if profile.moves {
        check_whole(&run.sim)?;
    }
    Ok(undecided)
}
