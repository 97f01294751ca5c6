//! Region split under the deterministic simulator: real shards, real WAL on
//! the in-memory disk, real frames. A failing seed is printed;
//! `RINGRAFT_SEED=N` replays it, `RINGRAFT_SEEDS=N` runs more.

use std::collections::BTreeMap;
use std::time::Duration;

use engine::kv::Command;
use engine::region::meta::RegionMeta;
use engine::shard::{Input, Response, SplitRequest};
use engine::sim::{Sim, SimOptions};
use engine::RegionError;

mod seeds;
use seeds::for_seeds;

fn key(n: u64) -> Vec<u8> {
    format!("k{n:04}").into_bytes()
}

/// A simulation of one region on three stores (`tune` adjusts its
/// options), once that region has a leader.
fn one_region(seed: u64, tune: impl FnOnce(&mut SimOptions)) -> Sim {
    let mut opts = SimOptions::new(seed);
    opts.regions = 1;
    tune(&mut opts);
    let mut sim = Sim::new(opts);
    assert!(sim.run_until(Duration::from_secs(10), |s| s.all_led()), "seed {seed}: no leader");
    sim
}

/// The region holding `key` as the leaders see it now (what PD would say).
fn route(sim: &Sim, key: &[u8]) -> Option<(u64, RegionMeta)> {
    let mut best: Option<(u64, u64, RegionMeta)> = None;
    for s in sim.stores.values() {
        let Some(n) = s.node.as_ref() else { continue };
        for r in n.shard.regions().filter(|r| r.is_leader() && r.meta.contains(key)) {
            if best.as_ref().is_none_or(|(_, term, m)| (r.meta.version, r.term()) > (m.version, *term)) {
                best = Some((s.id, r.term(), r.meta.clone()));
            }
        }
    }
    best.map(|(store, _, meta)| (store, meta))
}

/// Puts `value` at every key of `keys` at once (few entries, few WAL
/// records), following epoch and leader changes until each is applied.
fn put_all(sim: &mut Sim, seed: u64, keys: &[Vec<u8>], value: &[u8]) {
    let mut left: Vec<Vec<u8>> = keys.to_vec();
    for _ in 0..200 {
        if left.is_empty() {
            return;
        }
        let mut requests = vec![];
        for k in std::mem::take(&mut left) {
            let Some((leader, meta)) = route(sim, &k) else {
                left.push(k);
                continue;
            };
            let command = Command::Put { key: k.clone(), value: value.to_vec() };
            let r =
                sim.submit(leader, |request| Input::Write { request, region: meta.id, epoch: meta.epoch(), command });
            requests.push((r, k));
        }
        assert!(
            sim.run_until(Duration::from_secs(10), |s| requests.iter().all(|(r, _)| s.has_reply(*r))),
            "seed {seed}"
        );
        for (r, k) in requests {
            match sim.take_reply(r).unwrap() {
                Ok(Response::Done) => {}
                Err(e) if e.is_definite() => left.push(k),
                other => panic!("seed {seed}: put of {k:?}: {other:?}"),
            }
        }
        if !left.is_empty() {
            sim.run_for(Duration::from_millis(20));
        }
    }
    panic!("seed {seed}: puts never applied: {left:?}");
}

/// Asks the leader of `region` to split it at `at`; the reply.
fn split(sim: &mut Sim, region: u64, at: &[u8], new_region_id: u64) -> Result<Response, RegionError> {
    let leader = sim.leader_of(region).expect("led");
    let meta = sim.stores[&leader].node.as_ref().unwrap().shard.region(region).unwrap().meta.clone();
    let new_peer_ids = meta.peers.iter().map(|p| new_region_id * 100 + p.store_id).collect();
    let split = SplitRequest { split_key: at.to_vec(), new_region_id, new_peer_ids };
    let r = sim.submit(leader, |request| Input::Split { request, region, epoch: meta.epoch(), split });
    assert!(sim.run_until(Duration::from_secs(10), |s| s.has_reply(r)), "split not answered");
    sim.take_reply(r).unwrap()
}

/// No two initialized regions of one shard overlap, and every store that
/// is up holds `expected` exactly, each key in the region that owns it.
fn assert_store_states(sim: &Sim, seed: u64, expected: &BTreeMap<Vec<u8>, Vec<u8>>) {
    for s in sim.stores.values() {
        let n = s.node.as_ref().expect("up");
        let metas: Vec<&RegionMeta> = n.shard.regions().map(|r| &r.meta).filter(|m| m.conf_ver > 0).collect();
        for (i, a) in metas.iter().enumerate() {
            for b in &metas[i + 1..] {
                assert!(!a.overlaps(&b.start_key, &b.end_key), "seed {seed}: store {} has {a:?} and {b:?}", s.id);
            }
        }
        let mut got = BTreeMap::new();
        for r in n.shard.regions() {
            // (a settled split half, replayed or not, has dropped the other half's keys)
            assert_eq!(r.kv.keys(), r.rows().len(), "seed {seed}: store {} region {} is not trimmed", s.id, r.id());
            got.extend(r.rows());
        }
        assert!(got == *expected, "seed {seed}: store {} holds {} keys, {} expected", s.id, got.len(), expected.len());
    }
}

/// Every store's replica of every region has the same meta and state.
fn settle_and_assert_converged(sim: &mut Sim, seed: u64) {
    let mut last = None;
    for _ in 0..30 {
        sim.run_for(Duration::from_millis(200));
        let applied: Vec<(u64, u64, u64)> = sim
            .stores
            .values()
            .filter_map(|s| s.node.as_ref().map(|n| (s.id, n)))
            .flat_map(|(id, n)| n.shard.regions().map(move |r| (id, r.id(), r.applied)).collect::<Vec<_>>())
            .collect();
        if last.as_ref() == Some(&applied) {
            break;
        }
        last = Some(applied);
    }
    type Replica = (u64, RegionMeta, Vec<(Vec<u8>, Vec<u8>)>);
    let mut by_region: BTreeMap<u64, Vec<Replica>> = BTreeMap::new();
    for s in sim.stores.values() {
        let n = s.node.as_ref().expect("up");
        for r in n.shard.regions() {
            by_region.entry(r.id()).or_default().push((s.id, r.meta.clone(), r.rows()));
        }
    }
    for (id, replicas) in by_region {
        assert_eq!(
            replicas.len(),
            3,
            "seed {seed}: region {id} on stores {:?}",
            replicas.iter().map(|r| r.0).collect::<Vec<_>>()
        );
        for (store, meta, rows) in &replicas[1..] {
            assert_eq!(meta, &replicas[0].1, "seed {seed}: region {id}'s meta on store {store}");
            assert!(rows == &replicas[0].2, "seed {seed}: region {id} diverged on store {store}");
        }
    }
}

fn snapshots_sent(sim: &Sim) -> u64 {
    sim.stores.values().filter_map(|s| s.node.as_ref()).map(|n| n.shard.stats().snapshots_sent).sum()
}

/// A region splits while it serves: both halves have the new ranges and
/// epochs on every replica, the child's first leader is the parent's
/// leader's store (it campaigns at once), no snapshot is sent for it, a
/// write proposed before the split and applied after it is refused, and
/// everything survives a restart of every store (the parent replays its
/// writes under the version they were proposed with, then the split).
#[test]
fn a_region_splits_online_and_both_halves_serve_across_a_restart() {
    for_seeds(4, |seed| {
        let mut sim = one_region(seed, |opts| {
            // (no snapshot of the parent after the split: the restart replays it)
            opts.snapshot_log_bytes_min = 64 << 20;
        });
        let keys: Vec<Vec<u8>> = (0..60).map(key).collect();
        put_all(&mut sim, seed, &keys, b"one");
        let mut expected: BTreeMap<_, _> = keys.iter().map(|k| (k.clone(), b"one".to_vec())).collect();
        let sent_before = snapshots_sent(&sim);
        let leader = sim.leader_of(1).unwrap();
        let meta = sim.stores[&leader].node.as_ref().unwrap().shard.region(1).unwrap().meta.clone();

        assert!(matches!(split(&mut sim, 1, b"", 2), Err(RegionError::Refused { .. })), "at the region's start");
        // a write proposed right behind the split, under the old epoch: refused at apply
        let new_peer_ids = meta.peers.iter().map(|p| 200 + p.store_id).collect();
        let req = SplitRequest { split_key: key(30), new_region_id: 2, new_peer_ids };
        let s = sim.submit(leader, |request| Input::Split { request, region: 1, epoch: meta.epoch(), split: req });
        let command = Command::Put { key: key(10), value: b"late".to_vec() };
        let w = sim.submit(leader, |request| Input::Write { request, region: 1, epoch: meta.epoch(), command });
        assert!(sim.run_until(Duration::from_secs(10), |s2| s2.has_reply(s) && s2.has_reply(w)), "seed {seed}");
        let Some(Ok(Response::Split(halves))) = sim.take_reply(s) else { panic!("seed {seed}: split refused") };
        let (left, right) = *halves;
        assert_eq!((left.id, left.end_key.clone(), left.version), (1, key(30), meta.version + 1));
        assert_eq!(
            (right.id, right.start_key.clone(), right.end_key.clone(), right.version),
            (2, key(30), vec![], meta.version + 1)
        );
        assert!(
            matches!(sim.take_reply(w), Some(Err(RegionError::EpochNotMatch { .. }))),
            "seed {seed}: a write proposed under the old version must not apply"
        );
        let child_led = |s: &Sim| {
            s.leader_of(2).is_some() && s.stores.values().all(|st| st.node.as_ref().unwrap().shard.region(2).is_some())
        };
        assert!(sim.run_until(Duration::from_secs(10), child_led), "seed {seed}: the child was not led everywhere");
        assert_eq!(sim.leader_of(2), Some(leader), "seed {seed}: the child's first leader campaigned at once");
        assert!(matches!(split(&mut sim, 1, &key(40), 3), Err(RegionError::Refused { .. })), "outside the region now");

        // (half the keys keep the values written before the split: a restart
        // must replay those writes under the version they were proposed with)
        let evens: Vec<Vec<u8>> = keys.iter().step_by(2).cloned().collect();
        put_all(&mut sim, seed, &evens, b"two");
        expected.extend(evens.iter().map(|k| (k.clone(), b"two".to_vec())));
        assert_eq!(snapshots_sent(&sim), sent_before, "seed {seed}: a split must not cost a snapshot");
        settle_and_assert_converged(&mut sim, seed);
        assert_store_states(&sim, seed, &expected);
        for st in sim.stores.values() {
            let parent = st.node.as_ref().unwrap().shard.region(1).unwrap();
            // (else the restart below would not replay the split)
            assert_eq!(
                parent.snapshot.map(|s| s.index),
                Some(5),
                "seed {seed}: the parent snapshotted since its start"
            );
        }

        for id in 1..=3 {
            sim.crash(id);
        }
        for id in 1..=3 {
            sim.restart(id);
        }
        assert!(
            sim.run_until(Duration::from_secs(10), |s| s.leader_of(1).is_some() && s.leader_of(2).is_some()),
            "seed {seed}"
        );
        settle_and_assert_converged(&mut sim, seed);
        assert_store_states(&sim, seed, &expected);
        let now = |id| sim.stores[&1].node.as_ref().unwrap().shard.region(id).unwrap().meta.clone();
        assert_eq!((now(1), now(2)), (left, right), "seed {seed}: the restart replays into the same two regions");
        put_all(&mut sim, seed, &keys, b"three");
        expected.extend(keys.iter().map(|k| (k.clone(), b"three".to_vec())));
        settle_and_assert_converged(&mut sim, seed);
        assert_store_states(&sim, seed, &expected);
    });
}

/// A store crashes at some point of a split — before the entry commits,
/// after it is durable, after it applied, before or after the child's
/// state is durable — and restarts: the split happened on every replica or
/// on none, nothing written is lost, no shard holds overlapping regions.
#[test]
fn a_crash_at_any_point_of_a_split_replays_into_the_same_regions() {
    for_seeds(12, |seed| {
        let mut sim = one_region(seed, |_| {});
        let mut expected = BTreeMap::new();
        for n in 0..40 {
            put_all(&mut sim, seed, &[key(n)], b"one");
            expected.insert(key(n), b"one".to_vec());
        }
        let leader = sim.leader_of(1).unwrap();
        let meta = sim.stores[&leader].node.as_ref().unwrap().shard.region(1).unwrap().meta.clone();
        let new_peer_ids = meta.peers.iter().map(|p| 200 + p.store_id).collect();
        let req = SplitRequest { split_key: key(20), new_region_id: 2, new_peer_ids };
        sim.submit(leader, |request| Input::Split { request, region: 1, epoch: meta.epoch(), split: req });
        // somewhere in the split's life, a store (the leader's, half the time) crashes
        let victim = if seed % 2 == 0 { leader } else { 1 + (leader % 3) };
        sim.run_for(Duration::from_millis(seed % 13 * 2));
        sim.crash(victim);
        sim.run_for(Duration::from_millis(50));
        sim.restart(victim);
        let split_everywhere_or_nowhere = |s: &Sim| {
            let hosts: Vec<bool> =
                s.stores.values().map(|st| st.node.as_ref().unwrap().shard.region(2).is_some()).collect();
            hosts.iter().all(|h| *h) || hosts.iter().all(|h| !*h)
        };
        assert!(
            sim.run_until(Duration::from_secs(20), |s| s.leader_of(1).is_some() && split_everywhere_or_nowhere(s)),
            "seed {seed}"
        );
        for n in 0..40 {
            put_all(&mut sim, seed, &[key(n)], b"two");
            expected.insert(key(n), b"two".to_vec());
        }
        settle_and_assert_converged(&mut sim, seed);
        assert_store_states(&sim, seed, &expected);
        // and once more, every store at once
        for id in 1..=3 {
            sim.crash(id);
            sim.restart(id);
        }
        assert!(sim.run_until(Duration::from_secs(10), |s| s.leader_of(1).is_some()), "seed {seed}");
        settle_and_assert_converged(&mut sim, seed);
        assert_store_states(&sim, seed, &expected);
    });
}

/// Regions split by size, on their own: a leader whose region passed the
/// split size finds the middle key off the loop, gets ids (the
/// simulation's allocator stands in for PD) and splits; the halves split
/// again as they grow. No snapshot is sent for any of it, every write is
/// kept, across a restart of every store.
#[test]
fn regions_past_the_split_size_split_on_their_own_and_keep_every_write() {
    for_seeds(3, |seed| {
        let mut sim = one_region(seed, |opts| {
            opts.region_split_bytes = 8 << 10;
        });
        let sent_before = snapshots_sent(&sim);
        let mut expected = BTreeMap::new();
        for round in 0..8u64 {
            let keys: Vec<Vec<u8>> = (0..50).map(|n| key(round * 50 + n)).collect();
            let value = vec![b'v'; 100];
            put_all(&mut sim, seed, &keys, &value);
            expected.extend(keys.into_iter().map(|k| (k, value.clone())));
            sim.run_for(Duration::from_millis(100));
        }
        settle_and_assert_converged(&mut sim, seed);
        let regions = sim.stores[&1].node.as_ref().unwrap().shard.regions().count();
        // ≈ 400 × 170 bytes = 68 KiB in regions split at 8 KiB
        assert!(regions >= 4, "seed {seed}: {regions} regions");
        assert_store_states(&sim, seed, &expected);
        assert_eq!(snapshots_sent(&sim), sent_before, "seed {seed}: splits must not cost snapshots");
        for id in 1..=3 {
            sim.crash(id);
            sim.restart(id);
        }
        sim.run_for(Duration::from_millis(500));
        settle_and_assert_converged(&mut sim, seed);
        assert_store_states(&sim, seed, &expected);
    });
}

/// A split is refused at propose while a membership change is pending
/// (and checked again at apply against the epoch it was made for).
#[test]
fn a_split_is_refused_while_a_membership_change_is_pending() {
    use engine::region::meta::PeerChange;
    for_seeds(2, |seed| {
        let mut sim = one_region(seed, |_| {});
        put_all(&mut sim, seed, &[key(1), key(2)], b"v");
        // (a removal is refused while a follower is not known to keep up: let them settle)
        sim.run_for(Duration::from_secs(1));
        put_all(&mut sim, seed, &[key(1), key(2)], b"w");
        let leader = sim.leader_of(1).unwrap();
        let meta = sim.stores[&leader].node.as_ref().unwrap().shard.region(1).unwrap().meta.clone();
        let follower = *meta.peers.iter().find(|p| p.store_id != leader).unwrap();
        let (epoch, change) = (meta.epoch(), PeerChange::RemovePeer(follower));
        let c = sim.submit(leader, |request| Input::ChangePeer { request, region: 1, epoch, change });
        let split = SplitRequest { split_key: key(2), new_region_id: 2, new_peer_ids: vec![201, 202, 203] };
        let s = sim.submit(leader, |request| Input::Split { request, region: 1, epoch, split });
        assert!(sim.run_until(Duration::from_secs(10), |s2| s2.has_reply(c) && s2.has_reply(s)), "seed {seed}");
        match sim.take_reply(s) {
            Some(Err(RegionError::Refused { reason, .. })) => assert!(reason.contains("membership"), "{reason}"),
            other => panic!("seed {seed}: a split behind a pending membership change: {other:?}"),
        }
        assert_eq!(sim.take_reply(c), Some(Ok(Response::Done)), "seed {seed}");
    });
}

/// A region that cannot split (its leader's asks for ids are never
/// answered: PD unreachable) and grows past twice the split size slows
/// its writers (`ServerIsBusy`) instead of growing without bound.
#[test]
fn a_region_that_cannot_split_refuses_writes_past_twice_the_split_size() {
    for_seeds(2, |seed| {
        let mut sim = one_region(seed, |opts| {
            opts.region_split_bytes = 8 << 10;
            opts.split_ids = false;
        });
        let mut busy = 0;
        for n in 0..200 {
            let (leader, meta) = route(&sim, &key(n)).expect("led");
            let command = Command::Put { key: key(n), value: vec![b'v'; 200] };
            let r =
                sim.submit(leader, |request| Input::Write { request, region: meta.id, epoch: meta.epoch(), command });
            assert!(sim.run_until(Duration::from_secs(10), |s| s.has_reply(r)), "seed {seed}");
            match sim.take_reply(r).unwrap() {
                Ok(_) => {}
                Err(RegionError::ServerIsBusy { .. }) => busy += 1,
                other => panic!("seed {seed}: {other:?}"),
            }
        }
        let leader = sim.leader_of(1).unwrap();
        let r = sim.stores[&leader].node.as_ref().unwrap().shard.region(1).unwrap();
        use engine::kv::StateMachine as _;
        // (200 puts of ≈ 270 bytes would make 54 KiB)
        assert!(busy > 100, "seed {seed}: only {busy} puts refused");
        assert!(r.kv.bytes() < 3 * (8 << 10), "seed {seed}: the region grew to {} bytes", r.kv.bytes());
        assert_eq!(sim.stores[&leader].node.as_ref().unwrap().shard.regions().count(), 1, "seed {seed}: it split");
    });
}

/// A replica that was away while a region split, and while the new region
/// then removed its peer there, applies the split when it comes back — and
/// the child it creates is removed again (a member's removal notice), not
/// resurrected for good.
#[test]
fn a_child_removed_elsewhere_before_this_replica_split_is_not_resurrected() {
    use engine::region::meta::PeerChange;
    for_seeds(3, |seed| {
        let mut sim = one_region(seed, |_| {});
        put_all(&mut sim, seed, &[key(1), key(30)], b"v");
        let leader = sim.leader_of(1).unwrap();
        let away = leader % 3 + 1;
        for s in 1..=3 {
            if s != away {
                sim.partition(away, s);
            }
        }
        assert!(matches!(split(&mut sim, 1, &key(20), 2), Ok(Response::Split(_))), "seed {seed}");
        assert!(sim.run_until(Duration::from_secs(10), |s| s.leader_of(2).is_some()), "seed {seed}: child not led");
        let removed = loop {
            let l = sim.leader_of(2).unwrap();
            let meta = sim.stores[&l].node.as_ref().unwrap().shard.region(2).unwrap().meta.clone();
            let peer = *meta.peer_on(away).unwrap();
            let (epoch, change) = (meta.epoch(), PeerChange::RemovePeer(peer));
            let r = sim.submit(l, |request| Input::ChangePeer { request, region: 2, epoch, change });
            assert!(sim.run_until(Duration::from_secs(10), |s| s.has_reply(r)), "seed {seed}");
            match sim.take_reply(r).unwrap() {
                Ok(_) => break peer,
                Err(e) if e.is_definite() => sim.run_for(Duration::from_millis(100)),
                Err(e) => panic!("seed {seed}: {e:?}"),
            }
        };
        sim.heal_all();
        let gone = |s: &Sim| {
            let shard = &s.stores[&away].node.as_ref().unwrap().shard;
            shard.region(1).is_some_and(|r| r.meta.version == 2) && shard.region(2).is_none() && shard.is_tombstone(2)
        };
        assert!(
            sim.run_until(Duration::from_secs(20), gone),
            "seed {seed}: store {away} split late and kept the child's removed peer {}",
            removed.peer_id
        );
        sim.run_for(Duration::from_secs(2));
        assert!(gone(&sim), "seed {seed}: the removed child came back");
    });
}

/// The region of `id` on `store`, if it hosts one.
fn region_on(sim: &Sim, store: u64, id: u64) -> Option<&engine::region::Region> {
    sim.stores[&store].node.as_ref().expect("up").shard.region(id)
}

/// A read and a write waiting on the parent when the split applies — the
/// read's ReadIndex sent, the write queued behind the split's entry — are
/// answered at once, `EpochNotMatch` naming the new region, when their
/// key left: the read is checked again when served (the halves share one
/// map until trimmed, so it would find the value); a key that stayed is
/// served.
#[test]
fn reads_and_writes_waiting_on_the_parent_when_it_splits_are_answered_at_once() {
    for_seeds(4, |seed| {
        let mut sim = one_region(seed, |_| {});
        let keys: Vec<Vec<u8>> = (0..40).map(key).collect();
        put_all(&mut sim, seed, &keys, b"v");
        let leader = sim.leader_of(1).unwrap();
        let meta = region_on(&sim, leader, 1).unwrap().meta.clone();
        // the followers' answers wait: the split's entry stays out, uncommitted
        sim.hold(leader, 1);
        let new_peer_ids = meta.peers.iter().map(|p| 200 + p.store_id).collect();
        let req = SplitRequest { split_key: key(20), new_region_id: 2, new_peer_ids };
        let s = sim.submit(leader, |request| Input::Split { request, region: 1, epoch: meta.epoch(), split: req });
        sim.run_for(Duration::from_millis(3));
        let moved = sim.submit(leader, |request| Input::Read { request, region: 1, key: key(30) });
        let stayed = sim.submit(leader, |request| Input::Read { request, region: 1, key: key(5) });
        let command = Command::Put { key: key(31), value: b"w".to_vec() };
        let write = sim.submit(leader, |request| Input::Write { request, region: 1, epoch: meta.epoch(), command });
        // (the leader and a follower have the split's entry on disk, the
        // follower's answer held: what commits it — and lets the leader apply
        // it — arrives with what confirms the reads)
        let split_index = region_on(&sim, leader, 1).unwrap().raw.raft.raft_log.last_index();
        let persisted = |s: &Sim| {
            let has_it = |st: u64| region_on(s, st, 1).unwrap().raw.raft.raft_log.persisted >= split_index;
            has_it(leader) && (1..=3).any(|st| st != leader && has_it(st))
        };
        assert!(sim.run_until(Duration::from_millis(100), persisted), "seed {seed}: the split's entry is not on disk");
        sim.run_for(Duration::from_millis(2));
        let parent = region_on(&sim, leader, 1).unwrap();
        assert_eq!(parent.meta.version, meta.version, "seed {seed}: the split applied while its answers were held");
        assert!(!parent.read_batches.is_empty(), "seed {seed}: the reads' ReadIndex was not sent");
        assert!(sim.held() > 0, "seed {seed}: nothing held");
        for r in [s, moved, stayed, write] {
            assert!(!sim.has_reply(r), "seed {seed}: answered before the split committed");
        }
        sim.release();
        // (no timeout: answered within a few steps of the commit)
        let answered = |s2: &Sim| [s, moved, stayed, write].iter().all(|r| s2.has_reply(*r));
        assert!(sim.run_until(Duration::from_millis(50), answered), "seed {seed}: left waiting");
        assert!(matches!(sim.take_reply(s), Some(Ok(Response::Split(_)))), "seed {seed}");
        for (r, what) in [(moved, "the read"), (write, "the write")] {
            match sim.take_reply(r) {
                Some(Err(RegionError::EpochNotMatch { current, split_off })) => {
                    assert_eq!(current.end_key, key(20), "seed {seed}: {what}");
                    assert!(split_off.iter().any(|m| m.id == 2), "seed {seed}: {what} does not name the new region");
                }
                other => panic!("seed {seed}: {what} of a key that left: {other:?}"),
            }
        }
        assert_eq!(sim.take_reply(stayed), Some(Ok(Response::Value(Some(b"v".to_vec())))), "seed {seed}");
    });
}

/// The child's vote requests that reach a replica before it applied the
/// split are kept, not dropped (only initialized regions own key ranges, so
/// they create no peer), and stepped once the split creates the child
/// there: that replica's child votes as it would have on time.
#[test]
fn vote_requests_arriving_before_the_split_are_stepped_once_it_applies() {
    for_seeds(4, |seed| {
        let mut sim = one_region(seed, |_| {});
        put_all(&mut sim, seed, &[key(1), key(30)], b"v");
        let leader = sim.leader_of(1).unwrap();
        let late = leader % 3 + 1;
        sim.hold(late, 1);
        assert!(matches!(split(&mut sim, 1, &key(20), 2), Ok(Response::Split(_))), "seed {seed}");
        assert!(sim.run_until(Duration::from_secs(5), |s| s.leader_of(2).is_some()), "seed {seed}: child not led");
        let kept = sim.stores[&late].node.as_ref().unwrap().shard.stats().early_votes_kept;
        assert!(kept >= 1, "seed {seed}: store {late} kept no vote request");
        assert!(region_on(&sim, late, 2).is_none(), "seed {seed}: a vote request created a peer");
        sim.release();
        assert!(
            sim.run_until(Duration::from_secs(5), |s| region_on(s, late, 2).is_some()),
            "seed {seed}: store {late} never split"
        );
        let child_leader = sim.leader_of(2).unwrap();
        let elected = &region_on(&sim, child_leader, 2).unwrap().raw.raft;
        let here = &region_on(&sim, late, 2).unwrap().raw.raft;
        assert_eq!(
            (here.term, here.vote),
            (elected.term, elected.vote),
            "seed {seed}: the late replica's child did not vote on the requests it kept"
        );
    });
}

/// A replica added to a region whose parent state has not reached it yet
/// gets an uninitialized peer of the child from the child's leader, and
/// that peer votes. The parent's snapshot is not blocked by it, and the
/// split replayed after it fills the peer in place with its term and vote
/// (forgetting the vote would allow two leaders in one term).
#[test]
fn a_split_fills_an_uninitialized_child_in_place_keeping_its_vote() {
    use engine::region::meta::{PeerChange, PeerMeta};
    for_seeds(4, |seed| {
        let mut sim = one_region(seed, |opts| {
            // (the parent's snapshot stays the one before the split: the new replica replays it)
            opts.snapshot_log_bytes_min = 64 << 20;
        });
        put_all(&mut sim, seed, &[key(1), key(30)], b"v");
        sim.run_for(Duration::from_secs(1));
        let leader = sim.leader_of(1).unwrap();
        let meta = region_on(&sim, leader, 1).unwrap().meta.clone();
        let away = leader % 3 + 1;
        let old = *meta.peer_on(away).unwrap();
        let change = |sim: &mut Sim, change| loop {
            let l = sim.leader_of(1).unwrap();
            let epoch = region_on(sim, l, 1).unwrap().meta.epoch();
            let r = sim.submit(l, |request| Input::ChangePeer { request, region: 1, epoch, change });
            assert!(sim.run_until(Duration::from_secs(10), |s| s.has_reply(r)), "seed {seed}");
            match sim.take_reply(r).unwrap() {
                Ok(_) => break,
                Err(e) if e.is_definite() => sim.run_for(Duration::from_millis(100)),
                Err(e) => panic!("seed {seed}: {e:?}"),
            }
        };
        change(&mut sim, PeerChange::RemovePeer(old));
        assert!(sim.run_until(Duration::from_secs(10), |s| region_on(s, away, 1).is_none()), "seed {seed}");
        // back as a new peer: the leader snapshots the parent for it, but
        // that snapshot is slow to arrive — after the split
        sim.hold_snapshots(away, 1);
        change(&mut sim, PeerChange::AddVoter(PeerMeta { peer_id: 1000 + away, ..old }));
        assert!(sim.run_until(Duration::from_secs(5), |s| s.held() > 0), "seed {seed}: no snapshot sent");
        assert!(matches!(split(&mut sim, 1, &key(20), 2), Ok(Response::Split(_))), "seed {seed}");
        let child = |s: &Sim| region_on(s, away, 2).map(|r| (r.meta.conf_ver, r.raw.raft.term, r.raw.raft.vote));
        assert!(
            sim.run_until(Duration::from_secs(5), |s| child(s).is_some()),
            "seed {seed}: the child's leader did not create its peer on store {away}"
        );
        // leadership moves: the uninitialized peer votes in that election
        let first = sim.leader_of(2).unwrap();
        let next = (1..=3).find(|s| *s != first && *s != away).unwrap();
        let to_peer = region_on(&sim, next, 2).unwrap().peer_id;
        let r = sim.submit(first, |request| Input::TransferLeader { request, region: 2, to_peer });
        assert!(sim.run_until(Duration::from_secs(5), |s| s.leader_of(2) == Some(next)), "seed {seed}");
        assert!(sim.run_until(Duration::from_secs(1), |s| s.has_reply(r)), "seed {seed}");
        let term = region_on(&sim, next, 2).unwrap().term();
        assert_eq!(child(&sim), Some((0, term, to_peer)), "seed {seed}: the uninitialized peer did not vote");

        let installed = sim.stores[&away].node.as_ref().unwrap().shard.stats().snapshots_installed;
        sim.release();
        let initialized = |s: &Sim| child(s).is_some_and(|(conf_ver, _, _)| conf_ver > 0);
        assert!(sim.run_until(Duration::from_secs(10), initialized), "seed {seed}: never filled");
        let stats = sim.stores[&away].node.as_ref().unwrap().shard.stats().clone();
        assert_eq!(stats.snapshots_installed, installed + 1, "seed {seed}: the parent's snapshot only");
        assert_eq!(region_on(&sim, next, 2).unwrap().term(), term, "seed {seed}: another election");
        assert_eq!(child(&sim).map(|(_, t, v)| (t, v)), Some((term, to_peer)), "seed {seed}: the vote was forgotten");
        settle_and_assert_converged(&mut sim, seed);
    });
}

/// PD's view of the regions, as epochs by region id, checked to tile the
/// key space and never to go back from what `seen` recorded (`None`: PD is
/// down).
fn check_pd_view(sim: &mut Sim, seed: u64, seen: &mut BTreeMap<u64, (u64, u64)>) -> Option<Vec<RegionMeta>> {
    let views = sim.pd.as_mut().expect("the simulation runs PD").regions()?;
    let metas: Vec<RegionMeta> = views.iter().map(|v| RegionMeta::from(&v.region)).collect();
    assert!(
        metas.first().is_some_and(|m| m.start_key.is_empty())
            && metas.last().is_some_and(|m| m.end_key.is_empty())
            && metas.windows(2).all(|w| w[0].end_key == w[1].start_key),
        "seed {seed}: PD's regions do not tile the key space: {metas:?}"
    );
    for m in &metas {
        let epoch = (m.version, m.conf_ver);
        if let Some(before) = seen.insert(m.id, epoch) {
            assert!(before <= epoch, "seed {seed}: region {} went back in PD from {before:?} to {epoch:?}", m.id);
        }
    }
    Some(metas)
}

/// With PD's real `Cluster` in the simulation: the one region it laid out
/// splits by size as writes come, with ids from PD's allocator, while PD is
/// crashed and restarted from its saved state and a store crashes and
/// restarts. PD's view always tiles the key space and no epoch in it goes
/// back; at the end it is every leader's view, and every write is kept.
#[test]
fn splits_with_pd_in_the_simulation_keep_its_view_the_leaders() {
    for_seeds(3, |seed| {
        let mut sim = one_region(seed, |opts| {
            opts.pd = true;
            opts.region_split_bytes = 8 << 10;
        });
        let mut seen = BTreeMap::new();
        let mut expected = BTreeMap::new();
        for round in 0..10u64 {
            match round {
                3 => sim.pd.as_mut().unwrap().crash(),
                5 => sim.pd.as_mut().unwrap().restart(),
                6 => sim.crash(1 + seed % 3),
                7 => sim.restart(1 + seed % 3),
                _ => {}
            }
            let keys: Vec<Vec<u8>> = (0..40).map(|n| key(round * 40 + n)).collect();
            let value = vec![b'v'; 100];
            put_all(&mut sim, seed, &keys, &value);
            expected.extend(keys.into_iter().map(|k| (k, value.clone())));
            sim.run_for(Duration::from_millis(100));
            check_pd_view(&mut sim, seed, &mut seen);
        }
        assert_eq!(sim.pd.as_ref().unwrap().restarts, 1);
        settle_and_assert_converged(&mut sim, seed);
        assert_store_states(&sim, seed, &expected);
        let mut matched = false;
        for _ in 0..100 {
            sim.run_for(Duration::from_millis(100));
            let pd_view = check_pd_view(&mut sim, seed, &mut seen).expect("PD is up");
            let leaders: Vec<Option<RegionMeta>> = pd_view
                .iter()
                .map(|m| {
                    let l = sim.leader_of(m.id)?;
                    sim.stores[&l].node.as_ref()?.shard.region(m.id).map(|r| r.meta.clone())
                })
                .collect();
            let hosted = sim.stores[&1].node.as_ref().unwrap().shard.regions().count();
            if pd_view.len() == hosted && pd_view.iter().zip(&leaders).all(|(p, l)| l.as_ref() == Some(p)) {
                matched = true;
                break;
            }
        }
        assert!(matched, "seed {seed}: PD's view never became the leaders'");
        assert!(seen.len() >= 4, "seed {seed}: only {} regions ever in PD's view", seen.len());
    });
}
