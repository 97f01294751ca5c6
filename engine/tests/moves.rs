//! Replica moves under the deterministic simulator: a new replica joins as
//! a learner, is promoted in a joint change that demotes the replica it
//! replaces, the region leaves the joint state, the demoted replica goes.
//! A failing seed is printed; `RINGRAFT_SEED=N` replays it,
//! `RINGRAFT_SEEDS=N` runs more.

use std::collections::BTreeMap;
use std::time::Duration;

use engine::kv::Command;
use engine::region::meta::{PeerChange, PeerMeta, PeerRole, RegionMeta};
use engine::shard::{Input, Response, SplitRequest};
use engine::sim::{Sim, SimOptions};
use engine::RegionError;

mod seeds;
use seeds::for_seeds;

/// The store the simulation starts with no replica on.
const NEW_STORE: u64 = 4;

/// A key of the first region (PD's layout starts its second at "5000").
fn key(n: u64) -> Vec<u8> {
    format!("0k{n:04}").into_bytes()
}

/// One region with replicas on stores 1–3 of four, once it has a leader.
fn region_on_three_of_four(seed: u64) -> Sim {
    let mut opts = SimOptions::new(seed);
    (opts.stores, opts.replicas, opts.regions) = (4, 3, 1);
    let mut sim = Sim::new(opts);
    assert!(sim.run_until(Duration::from_secs(10), |s| s.all_led()), "seed {seed}: no leader");
    sim
}

/// The region the tests move: the first of the initial layout (PD numbers
/// regions its own way).
fn region(sim: &Sim) -> u64 {
    sim.metas[0].id
}

/// The shard of `store` (up).
fn shard_on(sim: &Sim, store: u64) -> &engine::shard::Shard {
    &sim.stores[&store].node.as_ref().unwrap().shard
}

/// The region's leader and its meta.
fn leader_meta(sim: &Sim) -> (u64, RegionMeta) {
    let leader = sim.leader_of(region(sim)).expect("led");
    (leader, sim.stores[&leader].node.as_ref().unwrap().shard.region(region(sim)).unwrap().meta.clone())
}

/// A membership change through the leader, answered.
fn try_change(sim: &mut Sim, change: PeerChange) -> Result<Response, RegionError> {
    assert!(sim.run_until(Duration::from_secs(10), |s| s.leader_of(region(s)).is_some()), "no leader");
    let (leader, meta) = leader_meta(sim);
    let r = sim.submit(leader, |request| Input::ChangePeer { request, region: meta.id, epoch: meta.epoch(), change });
    assert!(sim.run_until(Duration::from_secs(10), |s| s.has_reply(r)), "membership change not answered");
    sim.take_reply(r).unwrap()
}

/// A membership change through the leader, tried again while the reason
/// it is refused may pass (a quorum or a learner not keeping up yet, a new
/// leader's entry not applied yet, a leader change).
fn change(sim: &mut Sim, seed: u64, change: PeerChange) {
    for _ in 0..100 {
        match try_change(sim, change) {
            Ok(Response::Done) => return,
            Err(RegionError::Refused { reason, .. })
                if ["caught up", "quorum", "not applied yet"].iter().any(|r| reason.contains(r)) => {}
            Err(e) if e.is_definite() && !matches!(e, RegionError::Refused { .. }) => {}
            other => panic!("seed {seed}: {change:?}: {other:?}"),
        }
        sim.run_for(Duration::from_millis(100));
    }
    panic!("seed {seed}: {change:?} refused for 10 s");
}

/// Takes the region out of its joint state as PD's operator does: a
/// leader being demoted hands leadership to a voter that stays one first.
fn leave_joint(sim: &mut Sim, seed: u64) {
    for _ in 0..50 {
        let (leader, meta) = leader_meta(sim);
        if !meta.is_lasting_voter(meta.peer_on(leader).unwrap().peer_id) {
            let to_peer = meta.peers.iter().find(|p| p.role == PeerRole::Voter).unwrap().peer_id;
            sim.submit(leader, |request| Input::TransferLeader { request, region: meta.id, to_peer });
            sim.run_for(Duration::from_millis(200));
            continue;
        }
        return change(sim, seed, PeerChange::LeaveJoint);
    }
    panic!("seed {seed}: leadership never left the demoted peer");
}

/// Puts every key through the leader until each is applied.
fn put_all(sim: &mut Sim, seed: u64, keys: &[Vec<u8>], value: &[u8]) {
    for k in keys {
        let mut last = None;
        for attempt in 0.. {
            assert!(attempt < 100, "seed {seed}: put of {k:?} never applied: {last:?}");
            assert!(sim.run_until(Duration::from_secs(10), |s| s.leader_of(region(s)).is_some()), "seed {seed}");
            let (leader, meta) = leader_meta(sim);
            let command = Command::Put { key: k.clone(), value: value.to_vec() };
            let r =
                sim.submit(leader, |request| Input::Write { request, region: meta.id, epoch: meta.epoch(), command });
            assert!(sim.run_until(Duration::from_secs(10), |s| s.has_reply(r)), "seed {seed}");
            match sim.take_reply(r).unwrap() {
                Ok(Response::Done) => break,
                Err(e) if e.is_definite() => {
                    last = Some(e);
                    sim.run_for(Duration::from_millis(20))
                }
                other => panic!("seed {seed}: put of {k:?}: {other:?}"),
            }
        }
    }
}

/// Every store that has a replica of the region agrees with the leader's
/// meta and holds `expected`; the stores in `without` hold none (a
/// tombstone, or one since collected).
fn settle_and_check(sim: &mut Sim, seed: u64, expected: &BTreeMap<Vec<u8>, Vec<u8>>, without: &[u64]) {
    let (_, meta) = leader_meta(sim);
    let settled = |s: &Sim| {
        let (l, _) = leader_meta(s);
        let target = s.stores[&l].node.as_ref().unwrap().shard.region(region(s)).unwrap().applied;
        meta.peers.iter().all(|p| {
            let r = s.stores[&p.store_id].node.as_ref().unwrap().shard.region(region(s));
            r.is_some_and(|r| r.applied >= target && r.meta == meta)
        })
    };
    assert!(sim.run_until(Duration::from_secs(20), settled), "seed {seed}: replicas of {meta:?} never settled");
    let id = meta.id;
    for p in &meta.peers {
        let r = sim.stores[&p.store_id].node.as_ref().unwrap().shard.region(id).unwrap();
        let rows: BTreeMap<_, _> = r.rows().into_iter().collect();
        assert!(rows == *expected, "seed {seed}: store {} holds {} keys of {}", p.store_id, rows.len(), expected.len());
    }
    // (a removed peer that had not applied its removal goes on the notice its leader sends)
    let gone = |s: &Sim| without.iter().all(|st| s.stores[st].node.as_ref().unwrap().shard.region(id).is_none());
    assert!(sim.run_until(Duration::from_secs(10), gone), "seed {seed}: a store in {without:?} kept a replica");
    for s in without {
        let shard = &sim.stores[s].node.as_ref().unwrap().shard;
        let collected = shard.stats().tombstones_collected > 0;
        assert!(shard.is_tombstone(id) || collected, "seed {seed}: store {s} left no tombstone");
    }
}

/// A follower's replica moves to a new store: a learner first (refused
/// promotion until it caught up by snapshot; it counts for no quorum, so
/// writes go on with its store down), then one joint change promotes it
/// and demotes the old one — the region serves in the joint state, refuses
/// other changes and splits there, and comes back from a restart of every
/// store still joint — then it leaves the joint state and the demoted
/// learner is removed (a tombstone on its store).
#[test]
fn a_follower_moves_through_a_learner_and_a_joint_change() {
    for_seeds(4, |seed| {
        let mut sim = region_on_three_of_four(seed);
        let keys: Vec<Vec<u8>> = (0..40).map(key).collect();
        put_all(&mut sim, seed, &keys, b"one");
        let mut expected: BTreeMap<_, _> = keys.iter().map(|k| (k.clone(), b"one".to_vec())).collect();
        let (leader, meta) = leader_meta(&sim);
        let old = *meta.peers.iter().find(|p| p.store_id != leader).unwrap();
        let new = PeerMeta::learner(meta.max_peer_id + 1, NEW_STORE, 0);

        assert_eq!(try_change(&mut sim, PeerChange::AddLearner(new)), Ok(Response::Done), "seed {seed}");
        match try_change(&mut sim, PeerChange::EnterJoint { promote: new, demote: old }) {
            Err(RegionError::Refused { reason, .. }) => assert!(reason.contains("caught up"), "seed {seed}: {reason}"),
            other => panic!("seed {seed}: a learner promoted before it caught up: {other:?}"),
        }
        // a learner counts for no quorum: writes commit with its store down
        sim.crash(NEW_STORE);
        put_all(&mut sim, seed, &keys[..10], b"two");
        expected.extend(keys[..10].iter().map(|k| (k.clone(), b"two".to_vec())));
        sim.restart(NEW_STORE);
        change(&mut sim, seed, PeerChange::EnterJoint { promote: new, demote: old });
        let (_, joint) = leader_meta(&sim);
        assert!(joint.is_joint(), "seed {seed}: {joint:?}");
        assert_eq!(joint.peer(new.peer_id).map(|p| p.role), Some(PeerRole::IncomingVoter));
        assert_eq!(joint.peer(old.peer_id).map(|p| p.role), Some(PeerRole::DemotingVoter));
        put_all(&mut sim, seed, &keys[10..20], b"three");
        expected.extend(keys[10..20].iter().map(|k| (k.clone(), b"three".to_vec())));
        match try_change(&mut sim, PeerChange::RemovePeer(old)) {
            Err(RegionError::Refused { reason, .. }) => assert!(reason.contains("joint"), "seed {seed}: {reason}"),
            other => panic!("seed {seed}: a simple change in the joint state: {other:?}"),
        }
        let (leader, _) = leader_meta(&sim);
        let split = SplitRequest { split_key: key(20), new_region_id: 9, new_peer_ids: vec![91, 92, 93, 94] };
        let r = sim.submit(leader, |request| Input::Split { request, region: joint.id, epoch: joint.epoch(), split });
        assert!(sim.run_until(Duration::from_secs(10), |s| s.has_reply(r)), "seed {seed}");
        assert!(matches!(sim.take_reply(r), Some(Err(RegionError::Refused { .. }))), "seed {seed}: split while joint");

        for s in 1..=4 {
            sim.crash(s);
        }
        for s in 1..=4 {
            sim.restart(s);
        }
        assert!(sim.run_until(Duration::from_secs(10), |s| s.leader_of(region(s)).is_some()), "seed {seed}");
        assert_eq!(leader_meta(&sim).1, joint, "seed {seed}: the restart left the joint state or went back");
        leave_joint(&mut sim, seed);
        let (_, left) = leader_meta(&sim);
        assert_eq!(left.peer(old.peer_id).map(|p| p.role), Some(PeerRole::Learner), "seed {seed}");
        change(&mut sim, seed, PeerChange::RemovePeer(old.with_role(PeerRole::Learner)));
        put_all(&mut sim, seed, &keys[20..30], b"four");
        expected.extend(keys[20..30].iter().map(|k| (k.clone(), b"four".to_vec())));
        let (_, done) = leader_meta(&sim);
        let mut stores: Vec<u64> = done.voters().map(|p| p.store_id).collect();
        stores.sort_unstable();
        let mut want: Vec<u64> = (1..=4).filter(|s| *s != old.store_id).collect();
        want.sort_unstable();
        assert_eq!((stores, done.peers.len()), (want, 3), "seed {seed}: {done:?}");
        settle_and_check(&mut sim, seed, &expected, &[old.store_id]);
    });
}

/// The leader's own replica moves: it may be demoted in the joint change
/// (it still counts in the outgoing half), but it may not take the region
/// out of the joint state while being demoted, and leadership goes only to
/// a voter that stays one (not a learner, not a demoting voter); once
/// handed over, the new leader leaves the joint state and removes it.
#[test]
fn a_leader_being_moved_hands_over_before_the_region_leaves_the_joint_state() {
    for_seeds(4, |seed| {
        let mut sim = region_on_three_of_four(seed);
        let keys: Vec<Vec<u8>> = (0..20).map(key).collect();
        put_all(&mut sim, seed, &keys, b"one");
        let expected: BTreeMap<_, _> = keys.iter().map(|k| (k.clone(), b"one".to_vec())).collect();
        let (leader, meta) = leader_meta(&sim);
        let old = *meta.peer_on(leader).unwrap();
        let new = PeerMeta::learner(meta.max_peer_id + 1, NEW_STORE, 0);
        change(&mut sim, seed, PeerChange::AddLearner(new));
        let transfer = |sim: &mut Sim, to_peer: u64| {
            let (leader, meta) = leader_meta(sim);
            let r = sim.submit(leader, |request| Input::TransferLeader { request, region: meta.id, to_peer });
            assert!(sim.run_until(Duration::from_secs(5), |s| s.has_reply(r)), "seed {seed}");
            sim.take_reply(r).unwrap()
        };
        match transfer(&mut sim, new.peer_id) {
            Err(RegionError::Refused { reason, .. }) => assert!(reason.contains("learner"), "seed {seed}: {reason}"),
            other => panic!("seed {seed}: leadership handed to a learner: {other:?}"),
        }
        change(&mut sim, seed, PeerChange::EnterJoint { promote: new, demote: old });
        assert_eq!(
            sim.leader_of(region(&sim)),
            Some(leader),
            "seed {seed}: the demoted leader leads on in the joint state"
        );
        match try_change(&mut sim, PeerChange::LeaveJoint) {
            Err(RegionError::Refused { reason, .. }) => {
                assert!(reason.contains("transfer leadership"), "seed {seed}: {reason}")
            }
            other => panic!("seed {seed}: a demoted leader left the joint state: {other:?}"),
        }
        match transfer(&mut sim, new.peer_id) {
            Err(RegionError::Refused { reason, .. }) => {
                assert!(reason.contains("incoming-voter"), "seed {seed}: {reason}")
            }
            other => panic!("seed {seed}: leadership handed to an incoming voter: {other:?}"),
        }
        let stays = *meta.peers.iter().find(|p| p.store_id != leader).unwrap();
        assert_eq!(transfer(&mut sim, stays.peer_id), Ok(Response::Done), "seed {seed}");
        assert!(
            sim.run_until(Duration::from_secs(5), |s| s.leader_of(region(s)) == Some(stays.store_id)),
            "seed {seed}: leadership stayed on the demoted peer"
        );
        change(&mut sim, seed, PeerChange::LeaveJoint);
        change(&mut sim, seed, PeerChange::RemovePeer(old.with_role(PeerRole::Learner)));
        settle_and_check(&mut sim, seed, &expected, &[old.store_id]);
    });
}

/// A simulation of PD and four stores, two regions of three replicas (on
/// stores 1–3 and 2–4), once every region is led and PD has heard of it.
fn with_pd(seed: u64) -> Sim {
    let mut opts = SimOptions::new(seed);
    (opts.stores, opts.replicas, opts.regions, opts.pd) = (4, 3, 2, true);
    let mut sim = Sim::new(opts);
    assert!(sim.run_until(Duration::from_secs(10), |s| s.all_led()), "seed {seed}: no leaders");
    sim.run_for(Duration::from_millis(500));
    sim
}

/// PD moves a replica by hand (`ctl move`): its operator walks learner →
/// joint → leave → removal through the leader's directives, writes go on
/// throughout, and the region ends on the new stores with every write.
/// Moving the leader's own replica hands leadership over first.
#[test]
fn pd_moves_a_replica_by_hand_through_its_operator() {
    for_seeds(4, |seed| {
        let mut sim = with_pd(seed);
        let keys: Vec<Vec<u8>> = (0..30).map(key).collect();
        put_all(&mut sim, seed, &keys[..10], b"one");
        let (leader, meta) = leader_meta(&sim);
        let from =
            if seed % 2 == 0 { leader } else { meta.peers.iter().find(|p| p.store_id != leader).unwrap().store_id };
        let now_ms = sim.elapsed_us() / 1000;
        sim.pd.as_mut().unwrap().move_region(meta.id, from, NEW_STORE, now_ms).expect("the move starts");
        put_all(&mut sim, seed, &keys[10..20], b"two");
        until_all_settled(&mut sim, seed, Duration::from_secs(30));
        put_all(&mut sim, seed, &keys[20..], b"three");
        let (_, done) = leader_meta(&sim);
        let mut on: Vec<u64> = done.voters().map(|p| p.store_id).collect();
        on.sort_unstable();
        let mut want: Vec<u64> =
            meta.peers.iter().map(|p| p.store_id).filter(|s| *s != from).chain([NEW_STORE]).collect();
        want.sort_unstable();
        assert_eq!((on, done.peers.len()), (want, 3), "seed {seed}: {done:?}");
        let expected: BTreeMap<_, _> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.clone(), [&b"one"[..], b"two", b"three"][i / 10].to_vec()))
            .collect();
        settle_and_check(&mut sim, seed, &expected, &[from]);
    });
}

/// A move interrupted before its joint change (its target store is down,
/// so the learner never catches up) is abandoned when its step times out,
/// and the replica checker removes the learner it left: the region keeps
/// its original replicas. One interrupted after its joint change (PD
/// crashes and restarts, forgetting it) is finished by the checker: the
/// region leaves the joint state and the demoted replica goes.
#[test]
fn an_interrupted_move_ends_with_the_old_or_the_new_replicas_never_joint() {
    for_seeds(3, |seed| {
        let mut sim = with_pd(seed);
        put_all(&mut sim, seed, &[key(1), key(2)], b"v");
        let (leader, meta) = leader_meta(&sim);
        let from = meta.peers.iter().find(|p| p.store_id != leader).unwrap().store_id;
        sim.crash(NEW_STORE);
        let now_ms = sim.elapsed_us() / 1000;
        sim.pd.as_mut().unwrap().move_region(meta.id, from, NEW_STORE, now_ms).expect("the move starts");
        // (the learner's step may take STEP_SLOW_MIN_MS)
        until_all_settled(&mut sim, seed, Duration::from_secs(90));
        let (_, after) = leader_meta(&sim);
        let on = |m: &RegionMeta| {
            let mut v: Vec<(u64, PeerRole)> = m.peers.iter().map(|p| (p.store_id, p.role)).collect();
            v.sort_unstable();
            v
        };
        assert_eq!(on(&after), on(&meta), "seed {seed}: the abandoned move left {after:?}");
        sim.restart(NEW_STORE);

        // again, PD forgetting it once the region is joint
        let now_ms = sim.elapsed_us() / 1000;
        sim.pd.as_mut().unwrap().move_region(meta.id, from, NEW_STORE, now_ms).expect("the move starts");
        let joint = |s: &Sim| s.leader_of(region(s)).is_some() && leader_meta(s).1.is_joint();
        assert!(sim.run_until(Duration::from_secs(30), joint), "seed {seed}: never joint");
        sim.pd.as_mut().unwrap().crash();
        sim.run_for(Duration::from_millis(300));
        sim.pd.as_mut().unwrap().restart();
        until_all_settled(&mut sim, seed, Duration::from_secs(30));
        let (_, done) = leader_meta(&sim);
        assert!(done.peer_on(NEW_STORE).is_some_and(|p| p.role == PeerRole::Voter), "seed {seed}: {done:?}");
        assert!(done.peer_on(from).is_none() && done.peers.len() == 3, "seed {seed}: {done:?}");
    });
}

/// Whether any region (as the leaders have it) keeps a replica on `store`.
fn holds_replicas(sim: &Sim, store: u64) -> bool {
    sim.stores
        .values()
        .filter_map(|s| s.node.as_ref().map(|n| (s.id, n)))
        .any(|(id, n)| id != store && n.shard.regions().any(|r| r.is_leader() && r.meta.peer_on(store).is_some()))
}

/// Runs until every region is led, not joint, without learners, and PD has
/// no operator under way.
fn until_all_settled(sim: &mut Sim, seed: u64, limit: Duration) {
    let done = |s: &mut Sim| {
        let idle = s.pd.as_mut().unwrap().operators().is_empty();
        let regions: Vec<u64> = s.metas.iter().map(|m| m.id).collect();
        idle && regions.iter().all(|id| {
            s.leader_of(*id).is_some_and(|l| {
                let r = s.stores[&l].node.as_ref().unwrap().shard.region(*id).unwrap();
                r.meta.peers.iter().all(|p| p.role == PeerRole::Voter) && r.meta.peers.len() == 3
            })
        })
    };
    let until = sim.elapsed_us() + limit.as_micros() as u64;
    while !done(sim) {
        assert!(sim.elapsed_us() < until, "seed {seed}: PD still busy: {:?}", sim.pd.as_mut().unwrap().operators());
        sim.run_for(Duration::from_millis(100));
    }
}

/// A store down past PD's down time has its replicas rebuilt on the
/// others (every region back to three voters, every write kept); back up,
/// its stale replicas are removed. A drained store is emptied the same way
/// and then removed from the cluster.
#[test]
fn a_down_store_is_rebuilt_elsewhere_and_a_drained_store_empties_and_is_removed() {
    for_seeds(3, |seed| {
        let mut sim = with_pd(seed);
        let keys: Vec<Vec<u8>> = (0..20).map(key).collect();
        put_all(&mut sim, seed, &keys, b"v");
        let expected: BTreeMap<_, _> = keys.iter().map(|k| (k.clone(), b"v".to_vec())).collect();
        let (leader, meta) = leader_meta(&sim);
        let down =
            if seed % 2 == 0 { leader } else { meta.peers.iter().find(|p| p.store_id != leader).unwrap().store_id };
        sim.crash(down);
        // (disconnected at first: nothing moves before the down time)
        sim.run_for(Duration::from_millis(engine::sim::pd::SIM_MAX_STORE_DOWN_MS / 2));
        assert!(holds_replicas(&sim, down), "seed {seed}: replicas moved off a store only disconnected");
        sim.run_for(Duration::from_millis(engine::sim::pd::SIM_MAX_STORE_DOWN_MS));
        until_all_settled(&mut sim, seed, Duration::from_secs(60));
        assert!(!holds_replicas(&sim, down), "seed {seed}: store {down} still holds replicas");
        settle_and_check(&mut sim, seed, &expected, &[]);
        sim.restart(down);
        let emptied = |s: &Sim| s.stores[&down].node.as_ref().unwrap().shard.regions().count() == 0;
        assert!(sim.run_until(Duration::from_secs(20), emptied), "seed {seed}: store {down} kept its stale replicas");

        let drained = (1..=4).find(|s| *s != down && holds_replicas(&sim, *s)).unwrap();
        let now_ms = sim.elapsed_us() / 1000;
        sim.pd.as_mut().unwrap().drain_store(drained, now_ms).expect("the drain starts");
        let emptied = |s: &Sim| !holds_replicas(s, drained);
        assert!(sim.run_until(Duration::from_secs(60), emptied), "seed {seed}: store {drained} still holds replicas");
        until_all_settled(&mut sim, seed, Duration::from_secs(60));
        let removed = |s: &mut Sim| {
            let now_ms = s.elapsed_us() / 1000;
            let stores = s.pd.as_mut().unwrap().stores(now_ms);
            stores.iter().any(|v| v.store.id == drained && v.store.state == pd::meta::StoreState::Removed)
        };
        for _ in 0..50 {
            if removed(&mut sim) {
                break;
            }
            sim.run_for(Duration::from_millis(100));
        }
        assert!(removed(&mut sim), "seed {seed}: the drained store {drained} was not removed");
        settle_and_check(&mut sim, seed, &expected, &[]);
    });
}

/// Leaders piled on one store (as splits leave them) are spread by PD's
/// balance-leader until every store leads within the tolerance, and then
/// stay put: no transfer undoes another.
#[test]
fn pd_spreads_leaders_piled_on_one_store_and_then_leaves_them_be() {
    for_seeds(3, |seed| {
        let mut opts = SimOptions::new(seed);
        (opts.stores, opts.replicas, opts.regions, opts.pd) = (3, 3, 9, true);
        let mut sim = Sim::new(opts);
        assert!(sim.run_until(Duration::from_secs(10), |s| s.all_led()), "seed {seed}: no leaders");
        let ids: Vec<u64> = sim.metas.iter().map(|m| m.id).collect();
        for id in &ids {
            let Some(l) = sim.leader_of(*id) else { continue };
            let to_peer =
                sim.stores[&l].node.as_ref().unwrap().shard.region(*id).unwrap().meta.peer_on(1).unwrap().peer_id;
            sim.submit(l, |request| Input::TransferLeader { request, region: *id, to_peer });
        }
        let counts = |s: &Sim| {
            let mut n = [0usize; 3];
            for id in &ids {
                if let Some(l) = s.leader_of(*id) {
                    n[l as usize - 1] += 1;
                }
            }
            n
        };
        let spread = |s: &Sim| {
            let n = counts(s);
            n.iter().sum::<usize>() == ids.len() && n.iter().max().unwrap() - n.iter().min().unwrap() <= 2
        };
        sim.run_for(Duration::from_millis(300));
        assert!(
            counts(&sim)[0] >= 6,
            "seed {seed}: the transfers by hand did not pile leaders on store 1: {:?}",
            counts(&sim)
        );
        assert!(
            sim.run_until(Duration::from_secs(30), spread),
            "seed {seed}: leaders stayed piled up: {:?}",
            counts(&sim)
        );
        until_all_settled(&mut sim, seed, Duration::from_secs(10));
        let started = sim.pd.as_mut().unwrap().operator_counts("balance-leader").started;
        assert!(started >= 3, "seed {seed}: {started} transfers");
        sim.run_for(Duration::from_secs(10));
        assert_eq!(
            sim.pd.as_mut().unwrap().operator_counts("balance-leader").started,
            started,
            "seed {seed}: flapping"
        );
        assert!(spread(&sim), "seed {seed}: {:?}", counts(&sim));
    });
}

/// A learner its region dropped while nothing reached it (its snapshot, and
/// then every message, held back: an abandoned move) hears from no leader
/// again; it asks PD whether it is still a member and, PD's newer meta not
/// naming it, removes itself (a tombstone) instead of lingering.
#[test]
fn a_learner_dropped_while_cut_off_asks_pd_and_removes_itself() {
    for_seeds(3, |seed| {
        let mut sim = with_pd(seed);
        put_all(&mut sim, seed, &[key(1)], b"v");
        let (leader, meta) = leader_meta(&sim);
        assert!(meta.peer_on(NEW_STORE).is_none(), "seed {seed}: {meta:?}");
        let from = meta.peers.iter().find(|p| p.store_id != leader).unwrap().store_id;
        sim.hold_snapshots(NEW_STORE, meta.id);
        let now_ms = sim.elapsed_us() / 1000;
        sim.pd.as_mut().unwrap().move_region(meta.id, from, NEW_STORE, now_ms).expect("the move starts");
        let hosts = |s: &Sim| s.stores[&NEW_STORE].node.as_ref().unwrap().shard.region(meta.id).is_some();
        assert!(sim.run_until(Duration::from_secs(10), hosts), "seed {seed}: the learner was never created");
        sim.hold(NEW_STORE, meta.id);
        // the move times out and the checker removes the learner; nothing reaches it
        until_all_settled(&mut sim, seed, Duration::from_secs(90));
        assert!(leader_meta(&sim).1.peer_on(NEW_STORE).is_none(), "seed {seed}");
        let gone = |s: &Sim| {
            let shard = &s.stores[&NEW_STORE].node.as_ref().unwrap().shard;
            shard.region(meta.id).is_none() && shard.is_tombstone(meta.id)
        };
        let limit = Duration::from_millis(30 * engine::shard::STALE_PEER_CHECK_TICKS * 10);
        assert!(sim.run_until(limit, gone), "seed {seed}: the dropped learner lingers");
        let stats = sim.stores[&NEW_STORE].node.as_ref().unwrap().shard.stats().clone();
        assert!(stats.stale_peers_removed >= 1, "seed {seed}: {stats:?}");
    });
}

/// The tombstone a move leaves on the store it moved off is collected once
/// it has aged and PD's meta, newer than it, does not name the removed
/// peer — not before, and not while PD cannot say. The WAL forgets the
/// region for good (a restart does not bring it back), and the region goes
/// on serving on its new replicas.
#[test]
fn a_moved_replicas_tombstone_is_collected_once_pd_says_no_member_sends_to_it() {
    for_seeds(3, |seed| {
        let mut sim = with_pd(seed);
        put_all(&mut sim, seed, &[key(1)], b"one");
        let (leader, meta) = leader_meta(&sim);
        let from = meta.peers.iter().find(|p| p.store_id != leader).unwrap().store_id;
        let now_ms = sim.elapsed_us() / 1000;
        sim.pd.as_mut().unwrap().move_region(meta.id, from, NEW_STORE, now_ms).expect("the move starts");
        until_all_settled(&mut sim, seed, Duration::from_secs(30));
        assert!(shard_on(&sim, from).is_tombstone(meta.id), "seed {seed}: no tombstone on store {from}");
        // (the simulator's tick is 10 ms)
        let gc_age = Duration::from_millis(engine::shard::TOMBSTONE_GC_TICKS * 10);

        // PD down: nobody can say, the tombstone stays however old it gets
        sim.pd.as_mut().unwrap().crash();
        sim.run_for(gc_age * 2);
        assert!(shard_on(&sim, from).is_tombstone(meta.id), "seed {seed}: collected without PD's word");
        assert_eq!(shard_on(&sim, from).stats().tombstones_collected, 0, "seed {seed}");

        sim.pd.as_mut().unwrap().restart();
        let collected = |s: &Sim| !shard_on(s, from).is_tombstone(meta.id);
        assert!(sim.run_until(gc_age, collected), "seed {seed}: the tombstone was never collected");
        assert_eq!(shard_on(&sim, from).stats().tombstones_collected, 1, "seed {seed}");
        assert!(shard_on(&sim, from).region(meta.id).is_none(), "seed {seed}");
        sim.run_for(Duration::from_millis(200));
        let in_wal = |s: &Sim| s.stores[&from].node.as_ref().unwrap().gc.wal().regions().any(|r| r == meta.id);
        assert!(!in_wal(&sim), "seed {seed}: the WAL still holds region {}", meta.id);
        sim.crash(from);
        sim.restart(from);
        assert!(!in_wal(&sim) && !shard_on(&sim, from).is_tombstone(meta.id), "seed {seed}: a restart brought it back");

        put_all(&mut sim, seed, &[key(2)], b"two");
        let expected = BTreeMap::from([(key(1), b"one".to_vec()), (key(2), b"two".to_vec())]);
        // (the restart's shard counts nothing collected: store `from` is checked above)
        settle_and_check(&mut sim, seed, &expected, &[]);
        assert!(shard_on(&sim, from).region(meta.id).is_none(), "seed {seed}");
    });
}

/// A parent replica that has not snapshotted since its split would replay
/// the split after a restart and create its child again: the child's
/// tombstone on that store is kept, however old, until the parent's next
/// snapshot starts past the split; then it is collected, and a restart
/// creates nothing.
#[test]
fn a_childs_tombstone_waits_for_its_parent_to_snapshot_past_the_split() {
    for_seeds(2, |seed| {
        let mut sim = with_pd(seed);
        put_all(&mut sim, seed, &[key(1), key(60)], b"v");
        let (leader, meta) = leader_meta(&sim);
        let first = sim.alloc_ids(u64::from(SplitRequest::ids_needed(meta.peers.len()))).expect("PD is up");
        let split = SplitRequest::with_ids(key(50), first, meta.peers.len());
        let r = sim.submit(leader, |request| Input::Split { request, region: meta.id, epoch: meta.epoch(), split });
        assert!(sim.run_until(Duration::from_secs(10), |s| s.has_reply(r)), "seed {seed}: split not answered");
        assert!(matches!(sim.take_reply(r), Some(Ok(Response::Split(_)))), "seed {seed}");
        sim.refresh_metas();
        until_all_settled(&mut sim, seed, Duration::from_secs(30));
        let child = sim.region_of(&key(60)).clone();
        assert_ne!(child.id, meta.id, "seed {seed}");
        let from = child.peers.iter().map(|p| p.store_id).find(|s| *s != leader).unwrap();
        let to = (1..=4).find(|s| child.peer_on(*s).is_none()).unwrap();
        let now_ms = sim.elapsed_us() / 1000;
        sim.pd.as_mut().unwrap().move_region(child.id, from, to, now_ms).expect("the move starts");
        until_all_settled(&mut sim, seed, Duration::from_secs(30));
        let gone = |s: &Sim| shard_on(s, from).region(child.id).is_none();
        assert!(sim.run_until(Duration::from_secs(10), gone), "seed {seed}: the moved replica lingers");
        assert!(shard_on(&sim, from).is_tombstone(child.id), "seed {seed}");

        // the parent on `from` restarts from its pre-split snapshot: the tombstone stays
        let gc_age = Duration::from_millis(engine::shard::TOMBSTONE_GC_TICKS * 10);
        sim.run_for(gc_age * 2);
        assert!(shard_on(&sim, from).is_tombstone(child.id), "seed {seed}: collected while a replay would recreate it");

        // writes to the parent's half make every replica snapshot past the split
        let filler: Vec<Vec<u8>> = (0..40).map(key).collect();
        put_all(&mut sim, seed, &filler, &[7u8; 1024]);
        let collected = |s: &Sim| !shard_on(s, from).is_tombstone(child.id);
        assert!(sim.run_until(gc_age * 2, collected), "seed {seed}: the tombstone stays after the parent's snapshot");
        sim.run_for(Duration::from_millis(200)); // (the forget record made durable)
        sim.crash(from);
        sim.restart(from);
        sim.run_for(Duration::from_secs(2));
        assert!(shard_on(&sim, from).region(child.id).is_none(), "seed {seed}: the restart created the child again");
        assert!(!shard_on(&sim, from).is_tombstone(child.id), "seed {seed}");
    });
}

/// A region of two voters removes one, and its leader crashes after
/// applying the change but before that is durable: it comes back in the
/// old configuration, the change in its log but not known committed, and
/// needs the removed voter's vote. The removed voter must still be there
/// to give it: it goes only once the leader, the change durable, tells it
/// (`engine/src/shard/removal.rs`). Without that, the region stalled for
/// good (campaign seed 678042002703).
#[test]
fn a_removed_voter_waits_until_the_leader_that_removed_it_has_the_change_on_disk() {
    let exercised = std::cell::Cell::new(0);
    for_seeds(12, |seed| {
        let mut opts = SimOptions::new(seed);
        (opts.stores, opts.replicas, opts.regions) = (2, 2, 1);
        // (slow disks: the leader applies the change long before it is durable)
        opts.disk_latency = (Duration::from_millis(20), Duration::from_millis(40));
        let mut sim = Sim::new(opts);
        assert!(sim.run_until(Duration::from_secs(10), |s| s.all_led()), "seed {seed}: no leader");
        put_all(&mut sim, seed, &[key(1)], b"before");
        let (leader, meta) = leader_meta(&sim);
        let removed = *meta.peers.iter().find(|p| p.store_id != leader).unwrap();
        let r = sim.submit(leader, |request| Input::ChangePeer {
            request,
            region: meta.id,
            epoch: meta.epoch(),
            change: PeerChange::RemovePeer(removed),
        });
        let applied =
            |s: &Sim| shard_on(s, leader).region(meta.id).is_some_and(|g| g.meta.peer(removed.peer_id).is_none());
        assert!(sim.run_until(Duration::from_secs(10), applied), "seed {seed}: the removal never applied");
        let g = shard_on(&sim, leader).region(meta.id).unwrap();
        assert!(g.conf_ver_durable < g.meta.conf_ver, "seed {seed}: applied and durable in one step");
        assert!(shard_on(&sim, leader).leader_reports().is_empty(), "seed {seed}: PD hears of a meta not durable");
        sim.crash(leader);
        let _ = (sim.take_reply(r), sim.take_lost());
        sim.restart(leader);
        let back = shard_on(&sim, leader).region(meta.id).unwrap().meta.clone();
        if back.peer(removed.peer_id).is_some() {
            exercised.set(exercised.get() + 1); // (else the crash kept the change: nothing to wait for)
        }
        // the region leads and writes again, and the removed voter goes in the end
        put_all(&mut sim, seed, &[key(2)], b"after");
        let gone = |s: &Sim| shard_on(s, removed.store_id).region(meta.id).is_none();
        assert!(sim.run_until(Duration::from_secs(30), gone), "seed {seed}: the removed voter lingers");
        let (_, now) = leader_meta(&sim);
        assert!(now.peer(removed.peer_id).is_none(), "seed {seed}: {now:?}");
        assert!(shard_on(&sim, removed.store_id).is_tombstone(meta.id), "seed {seed}: no tombstone");
    });
    assert!(exercised.get() > 0, "no seed crashed the leader with the change lost");
}
