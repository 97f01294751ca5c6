//! The shard logic under the deterministic simulator: real shards, real WAL
//! on a fake disk, real frames on a fake network, one seed. A failing seed
//! is printed; `RINGRAFT_SEED=N` replays it.

use std::time::Duration;

use engine::kv::{Command, StateMachine};
use engine::shard::{Input, Response};
use engine::sim::{Sim, SimOptions};

mod seeds;
use seeds::for_seeds;

use engine::sim::campaign::{self, workload_key as key, Profile, Run};

/// Every region's replicas hold the same keys and values.
fn assert_converged(sim: &Sim, seed: u64) {
    if let Err(e) = campaign::check_converged(sim) {
        panic!("seed {seed}: {e}");
    }
}

#[test]
fn regions_elect_leaders_and_every_acknowledged_write_reaches_every_replica() {
    for_seeds(4, |seed| {
        let mut sim = Sim::new(SimOptions::new(seed));
        assert!(
            sim.run_until(Duration::from_secs(10), |s| s.all_led()),
            "seed {seed}: not every region elected a leader"
        );
        let mut requests = vec![];
        for n in 0..200u64 {
            let region_index = n % sim.options.regions;
            let k = key(region_index, n);
            let meta = sim.region_of(&k).clone();
            let leader = sim.leader_of(meta.id).expect("led");
            let command = Command::Put { key: k.clone(), value: n.to_le_bytes().to_vec() };
            let r =
                sim.submit(leader, |request| Input::Write { request, region: meta.id, epoch: meta.epoch(), command });
            requests.push((r, k, n));
        }
        let mut acked = vec![];
        assert!(
            sim.run_until(Duration::from_secs(10), |s| requests.iter().all(|(r, _, _)| s.has_reply(*r))),
            "seed {seed}: writes not answered"
        );
        for (r, k, n) in requests {
            assert_eq!(sim.take_reply(r), Some(Ok(Response::Done)), "seed {seed}: write {n}");
            acked.push((k, n));
        }
        sim.run_for(Duration::from_secs(1));
        assert_converged(&sim, seed);
        for (k, n) in acked {
            let m = sim.region_of(&k).clone();
            for s in sim.stores.values() {
                let v = s.node.as_ref().unwrap().shard.region(m.id).unwrap().kv.get(&k).map(<[u8]>::to_vec);
                assert_eq!(v, Some(n.to_le_bytes().to_vec()), "seed {seed}: store {} lost write {n}", s.id);
            }
        }
        let st = sim.stores[&1].node.as_ref().unwrap().shard.stats().clone();
        eprintln!("seed {seed}: store 1 {st:?}");
    });
}

/// Every region's replicas that are up hold the same state after the run settles.
fn settle_and_assert_converged(sim: &mut Sim, seed: u64) {
    if let Err(e) = campaign::settle_and_check_converged(sim) {
        panic!("seed {seed}: {e}{}", campaign::describe(sim));
    }
}

/// 6 s of simulated time: 8 clients on 12 keys of 4 regions over 3 stores,
/// 2% of frames lost, 1% duplicated, 1% reordered, up to 3 ms of delay,
/// stores crashed and restarted, stores isolated and links cut, healed at
/// random, peers removed and added back (under new peer ids) at random; then
/// everything healed and restarted, outstanding operations finished, and
/// every key read once more through its leader (`engine::sim::campaign`).
fn chaos_run(seed: u64) -> Run {
    chaos_run_with(seed, true, false, false, false)
}

/// `splits`: regions also split at random keys of the workload while it
/// runs (through their leaders). `with_pd`: PD's real `Cluster` runs in the
/// simulation (the layout, the leaders' reports, the split ids) and is
/// crashed and restarted at random too. `moves` (with PD): four stores,
/// and PD asked at random to move a replica to the store without one,
/// instead of membership changes by hand (PD's checkers repair the rest).
fn chaos_run_with(seed: u64, batching: bool, splits: bool, with_pd: bool, moves: bool) -> Run {
    campaign::run(seed, &Profile::chaos(batching, splits, with_pd, moves))
}

/// Under loss, delay, duplication, reordering, partitions and crashes, every
/// client history is linearizable per key — with acknowledged writes read
/// back at the end, so none was lost — and every region's replicas converge.
/// (The checker is not vacuous: serving reads from any replica without
/// ReadIndex fails seed 0.)
#[test]
fn under_loss_delay_reordering_partitions_and_crashes_every_history_is_linearizable() {
    use history::{check, Outcome, Verdict};

    for_seeds(6, |seed| {
        let mut run = chaos_run(seed);
        let ops = run.work.history.len();
        let answered =
            run.work.history.iter().filter(|e| !matches!(e.outcome, Outcome::Failed | Outcome::Ambiguous)).count();
        match check(&run.work.history) {
            Verdict::Linearizable => {}
            other => panic!("seed {seed}: {other:?}"),
        }
        assert!(answered * 8 > ops, "seed {seed}: only {answered} of {ops} operations answered");
        assert!(
            run.crashes > 0 && run.partitions > 0 && run.membership_changes > 0,
            "seed {seed}: no chaos happened ({} crashes, {} partitions, {} membership changes)",
            run.crashes,
            run.partitions,
            run.membership_changes
        );
        settle_and_assert_converged(&mut run.sim, seed);
        if let Err(e) = campaign::check_quiet(&mut run.sim) {
            panic!("seed {seed}: {e}");
        }
        let (taken, installed) = run.sim.stores.values().filter_map(|s| s.node.as_ref()).fold((0, 0), |acc, n| {
            (acc.0 + n.shard.stats().snapshots_taken, acc.1 + n.shard.stats().snapshots_installed)
        });
        assert!(taken > 0, "seed {seed}: no snapshot was taken");
        eprintln!(
            "seed {seed}: {ops} operations ({answered} answered), {} crashes, {} partitions, {} membership changes, {taken} snapshots taken, {installed} installed: linearizable",
            run.crashes, run.partitions, run.membership_changes
        );
    });
}

/// PD moves replicas by hand (a learner, a joint change, leave, removal) on
/// four stores while the chaos run's clients work, stores crash, links
/// break and PD itself crashes and restarts (forgetting its operators: its
/// checkers finish or undo what they left): every history is linearizable,
/// replicas converge, and every region ends with three voters, none joint.
#[test]
fn moves_under_the_chaos_workload_keep_every_history_linearizable() {
    use history::{check, Verdict};
    let moved = std::cell::Cell::new(0);
    for_seeds(4, |seed| {
        let mut run = chaos_run_with(seed, true, false, true, true);
        match check(&run.work.history) {
            Verdict::Linearizable => {}
            other => panic!("seed {seed}: {other:?}"),
        }
        settle_and_assert_converged(&mut run.sim, seed);
        if let Err(e) = campaign::check_whole(&run.sim) {
            panic!("seed {seed}: {e}");
        }
        moved.set(moved.get() + run.moves);
    });
    assert!(moved.get() > 0, "no move finished in any seed");
}

/// Regions split at random keys while the chaos run's clients work and
/// stores crash, links break and membership changes: every history is
/// still linearizable (writes proposed before a split and applied after it
/// refused, never misapplied), replicas converge, and no shard ever holds
/// two initialized regions that overlap.
#[test]
fn splits_under_the_chaos_workload_keep_every_history_linearizable() {
    use history::{check, Verdict};
    for_seeds(4, |seed| {
        // (half the seeds with PD's real Cluster in the simulation, crashed and restarted)
        let with_pd = seed % 2 == 1;
        let mut run = chaos_run_with(seed, true, true, with_pd, false);
        match check(&run.work.history) {
            Verdict::Linearizable => {}
            other => panic!("seed {seed}: {other:?}"),
        }
        assert!(run.splits > 0 && run.crashes > 0, "seed {seed}: {} splits, {} crashes", run.splits, run.crashes);
        run.sim.refresh_metas();
        settle_and_assert_converged(&mut run.sim, seed);
        if let Err(e) = campaign::check_no_overlap(&run.sim) {
            panic!("seed {seed}: {e}");
        }
        assert!(run.sim.run_until(Duration::from_secs(5), |s| s.all_quiet()), "seed {seed}: work left in flight");
        if let Some(pd) = run.sim.pd.as_mut() {
            // PD's view tiles the key space (the leaders' reports of both halves came together)
            let views = pd.regions().expect("up");
            let tiles = views.first().is_some_and(|v| v.region.start_key.is_empty())
                && views.last().is_some_and(|v| v.region.end_key.is_empty())
                && views.windows(2).all(|w| w[0].region.end_key == w[1].region.start_key);
            assert!(tiles && pd.restarts > 0, "seed {seed}: PD's regions after {} restarts: {views:?}", pd.restarts);
        }
        eprintln!(
            "seed {seed}: {} splits, {} crashes, {} membership changes: linearizable",
            run.splits, run.crashes, run.membership_changes
        );
    });
}

/// `--no-batching` (one persist per region ready, one frame per message)
/// exists to measure what batching buys; it must be just as correct.
#[test]
fn without_batching_every_history_is_still_linearizable() {
    use history::{check, Verdict};
    for_seeds(2, |seed| {
        let mut run = chaos_run_with(seed, false, false, false, false);
        match check(&run.work.history) {
            Verdict::Linearizable => {}
            other => panic!("seed {seed}: {other:?}"),
        }
        settle_and_assert_converged(&mut run.sim, seed);
        assert!(run.sim.run_until(Duration::from_secs(5), |s| s.all_quiet()), "seed {seed}: work left in flight");
        let st = run.sim.stores[&1].node.as_ref().unwrap().shard.stats().clone();
        // one region per persist (its writes: more than one when a ready was split or several queued)
        assert_eq!(st.regions_persisted, st.persist_batches, "seed {seed}: one region per persist: {st:?}");
    });
}

#[test]
fn the_same_seed_replays_the_same_run() {
    for seed in [3, 19, 40] {
        let a = chaos_run(seed);
        let b = chaos_run(seed);
        assert_eq!(a.work.history, b.work.history, "seed {seed} ran differently twice");
        let terms = |r: &Run| -> Vec<(u64, u64, usize)> {
            r.sim
                .stores
                .values()
                .filter_map(|s| s.node.as_ref())
                .flat_map(|n| {
                    n.shard.regions().map(|g| (g.term(), g.applied, g.raw.raft.randomized_election_timeout()))
                })
                .collect()
        };
        assert_eq!(terms(&a), terms(&b), "seed {seed}: raft state differs between two runs");
    }
    assert_ne!(chaos_run(4).work.history, chaos_run(3).work.history);
}

/// Regression: a batch of writes bounded by a rough size could encode past
/// what one WAL record or the decoder takes, and panic every replica on
/// persist or apply. Writes over an entry are refused (TooLarge) or deferred
/// (ServerIsBusy), and what is accepted commits everywhere.
#[test]
fn writes_that_would_overflow_an_entry_are_refused_or_deferred_never_fatal() {
    let mut sim = Sim::new(SimOptions::new(7));
    assert!(sim.run_until(Duration::from_secs(10), |s| s.all_led()));
    let meta = sim.metas[1].clone();
    let leader = sim.leader_of(meta.id).unwrap();
    let mut requests = vec![];
    for n in 0..40u64 {
        let command = Command::Put { key: key(1, n), value: vec![n as u8; 10 << 10] };
        requests.push(sim.submit(leader, |request| Input::Write {
            request,
            region: meta.id,
            epoch: meta.epoch(),
            command,
        }));
    }
    let huge = Command::Put { key: key(1, 99), value: vec![0; 1 << 20] };
    let too_large =
        sim.submit(leader, |request| Input::Write { request, region: meta.id, epoch: meta.epoch(), command: huge });
    assert!(
        sim.run_until(Duration::from_secs(10), |s| requests.iter().all(|r| s.has_reply(*r)) && s.has_reply(too_large))
    );
    assert!(matches!(sim.take_reply(too_large), Some(Err(engine::RegionError::TooLarge { .. }))));
    let (mut done, mut busy) = (0, 0);
    for r in requests {
        match sim.take_reply(r) {
            Some(Ok(Response::Done)) => done += 1,
            Some(Err(engine::RegionError::ServerIsBusy { .. })) => busy += 1,
            other => panic!("unexpected reply {other:?}"),
        }
    }
    assert!(done > 0 && busy > 0, "{done} done, {busy} busy: the entry bound was not reached");
    sim.run_for(Duration::from_secs(1));
    assert_converged(&sim, 7);
}

/// Past the shard's memory limit writes are refused with a clear error
/// (every region's log and state live in memory), reads and deletes go on.
#[test]
fn past_the_memory_limit_writes_are_refused_with_a_clear_error() {
    let mut sim = Sim::new(SimOptions::new(11));
    for s in sim.stores.values_mut() {
        s.node.as_mut().unwrap().shard.set_memory_limit(64 << 10);
    }
    assert!(sim.run_until(Duration::from_secs(10), |s| s.all_led()));
    let meta = sim.metas[0].clone();
    let (mut full, mut done) = (None, 0);
    for n in 0..200u64 {
        let leader = sim.leader_of(meta.id).unwrap();
        let command = Command::Put { key: key(0, n), value: vec![1; 1024] };
        let r = sim.submit(leader, |request| Input::Write { request, region: meta.id, epoch: meta.epoch(), command });
        assert!(sim.run_until(Duration::from_secs(5), |s| s.has_reply(r)));
        match sim.take_reply(r).unwrap() {
            Ok(Response::Done) => done += 1,
            Err(e @ engine::RegionError::MemoryFull { .. }) => {
                full = Some(e.to_string());
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let full = full.expect("the limit was reached");
    assert!(done > 10 && full.contains("memory limit"), "{done} writes, then: {full}");
    let leader = sim.leader_of(meta.id).unwrap();
    let k = key(0, 0);
    let r = sim.submit(leader, |request| Input::Read { request, region: meta.id, key: k });
    assert!(sim.run_until(Duration::from_secs(5), |s| s.has_reply(r)));
    assert_eq!(sim.take_reply(r), Some(Ok(Response::Value(Some(vec![1; 1024])))), "reads still work");
}

/// A full disk: once the leader's WAL cannot make its next segment, its
/// writes other than deletes are refused with a clear, definite error
/// while reads and deletes go on; once space is freed the WAL makes its
/// segment (on the shard's ticks) and writes are taken again, nothing
/// acknowledged lost.
#[test]
fn on_a_full_disk_writes_are_refused_definitely_and_taken_again_once_space_is_freed() {
    let mut sim = Sim::new(SimOptions::new(12));
    assert!(sim.run_until(Duration::from_secs(10), |s| s.all_led()));
    let meta = sim.metas[0].clone();
    let leader = sim.leader_of(meta.id).unwrap();
    let disk = sim.stores[&leader].disk.clone();
    disk.set_space_limit(Some(disk.used_bytes()));
    let put = |sim: &mut Sim, n: u64| {
        let leader = sim.leader_of(meta.id).unwrap();
        let command = Command::Put { key: key(0, n), value: vec![n as u8; 1024] };
        let r = sim.submit(leader, |request| Input::Write { request, region: meta.id, epoch: meta.epoch(), command });
        assert!(sim.run_until(Duration::from_secs(5), |s| s.has_reply(r)));
        sim.take_reply(r).unwrap()
    };
    let (mut acked, mut full) = (vec![], None);
    for n in 0..2_000u64 {
        match put(&mut sim, n) {
            Ok(Response::Done) => acked.push(n),
            Err(e @ engine::RegionError::DiskFull) => {
                full = Some(e.to_string());
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let full = full.expect("the disk filled up");
    assert!(!acked.is_empty() && full.contains("disk is full"), "{} writes, then: {full}", acked.len());
    assert_eq!(sim.leader_of(meta.id), Some(leader), "a full disk is no reason to lose the lead");
    // a delete and a read still go through
    let r = sim.submit(leader, |request| Input::Write {
        request,
        region: meta.id,
        epoch: meta.epoch(),
        command: Command::Delete { key: key(0, acked[0]) },
    });
    assert!(sim.run_until(Duration::from_secs(5), |s| s.has_reply(r)));
    assert_eq!(sim.take_reply(r), Some(Ok(Response::Done)));
    let last = *acked.last().unwrap();
    let r = sim.submit(leader, |request| Input::Read { request, region: meta.id, key: key(0, last) });
    assert!(sim.run_until(Duration::from_secs(5), |s| s.has_reply(r)));
    assert_eq!(sim.take_reply(r), Some(Ok(Response::Value(Some(vec![last as u8; 1024])))));
    // space freed: within the WAL's backoff (at most 5 s of ticks) writes are taken again
    disk.set_space_limit(None);
    let taken = (0..60u64).any(|attempt| {
        sim.run_for(Duration::from_millis(500));
        matches!(put(&mut sim, 10_000 + attempt), Ok(Response::Done))
    });
    assert!(taken, "writes were not taken again once space was freed");
    for &n in &acked[1..] {
        let leader = sim.leader_of(meta.id).unwrap();
        let r = sim.submit(leader, |request| Input::Read { request, region: meta.id, key: key(0, n) });
        assert!(sim.run_until(Duration::from_secs(5), |s| s.has_reply(r)));
        assert_eq!(sim.take_reply(r), Some(Ok(Response::Value(Some(vec![n as u8; 1024])))), "put {n}");
    }
}

#[test]
fn a_leader_hands_its_region_to_the_peer_it_is_asked_to() {
    for_seeds(3, |seed| {
        let mut sim = Sim::new(SimOptions::new(seed));
        assert!(sim.run_until(Duration::from_secs(10), |s| s.all_led()));
        let region = sim.metas[2].id;
        let from = sim.leader_of(region).unwrap();
        let to = from % sim.options.stores + 1;
        let to_peer = sim.metas[2].peer_on(to).unwrap().peer_id;
        let r = sim.submit(from, |request| Input::TransferLeader { request, region, to_peer });
        assert!(sim.run_until(Duration::from_secs(5), |s| s.has_reply(r)));
        assert_eq!(sim.take_reply(r), Some(Ok(Response::Done)));
        assert!(
            sim.run_until(Duration::from_secs(5), |s| s.leader_of(region) == Some(to)),
            "seed {seed}: leadership stayed on store {from}"
        );
        // asking a follower is a NotLeader naming the leader
        let r = sim.submit(from, |request| Input::TransferLeader { request, region, to_peer });
        assert!(sim.run_until(Duration::from_secs(5), |s| s.has_reply(r)));
        match sim.take_reply(r) {
            Some(Err(engine::RegionError::NotLeader { leader, .. })) => {
                assert!(leader.is_none_or(|l| l.store_id == to), "seed {seed}: names {leader:?}")
            }
            other => panic!("seed {seed}: the old leader answered {other:?}"),
        }
    });
}

/// Writes `count` puts of `value_bytes` each to every region through its
/// leader and waits for all of them; returns what was written.
fn write_all(sim: &mut Sim, seed: u64, count: u64, value_bytes: usize, tag: u8) -> Vec<(Vec<u8>, Vec<u8>)> {
    let all: Vec<u64> = (0..sim.options.regions).collect();
    write_into(sim, seed, &all, count, value_bytes, tag)
}

/// `count` puts of `value_bytes` into each region at `region_indexes` (by
/// position in the spec), through their leaders; every one must be applied.
fn write_into(
    sim: &mut Sim,
    seed: u64,
    region_indexes: &[u64],
    count: u64,
    value_bytes: usize,
    tag: u8,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut requests = vec![];
    for n in 0..count {
        for &region_index in region_indexes {
            let k = key(region_index, n);
            let meta = sim.region_of(&k).clone();
            let leader = sim.leader_of(meta.id).expect("led");
            let value = vec![tag; value_bytes];
            let command = Command::Put { key: k.clone(), value: value.clone() };
            let r =
                sim.submit(leader, |request| Input::Write { request, region: meta.id, epoch: meta.epoch(), command });
            requests.push((r, k, value));
        }
        // a few iterations per round, so the log grows entry by entry
        sim.run_for(Duration::from_millis(2));
    }
    assert!(
        sim.run_until(Duration::from_secs(20), |s| requests.iter().all(|(r, _, _)| s.has_reply(*r))),
        "seed {seed}: writes not answered"
    );
    requests
        .into_iter()
        .map(|(r, k, v)| {
            assert_eq!(sim.take_reply(r), Some(Ok(Response::Done)), "seed {seed}: write of {k:?}");
            (k, v)
        })
        .collect()
}

/// Every replica that is up holds exactly `expected` (no write lost, none
/// resurrected, none applied twice on top of a snapshot).
fn assert_state(sim: &Sim, seed: u64, expected: &std::collections::BTreeMap<Vec<u8>, Vec<u8>>) {
    for s in sim.stores.values() {
        let n = s.node.as_ref().expect("up");
        let mut got = std::collections::BTreeMap::new();
        for r in n.shard.regions() {
            got.extend(r.rows());
        }
        assert!(got == *expected, "seed {seed}: store {} holds {} keys, {} expected", s.id, got.len(), expected.len());
    }
}

/// A follower that was down while its leaders compacted their logs past what
/// it has catches up by snapshot; then every store restarts from snapshot +
/// compacted, purged WAL and nothing is lost or applied twice.
#[test]
fn a_follower_down_while_the_log_was_compacted_catches_up_by_snapshot() {
    for_seeds(3, |seed| {
        let mut opts = SimOptions::new(seed);
        opts.regions = 4;
        let mut sim = Sim::new(opts);
        assert!(sim.run_until(Duration::from_secs(10), |s| s.all_led()), "seed {seed}: no leaders");
        let mut expected: std::collections::BTreeMap<_, _> =
            write_all(&mut sim, seed, 20, 100, 1).into_iter().collect();
        let down = 3;
        sim.crash(down);
        assert!(sim.run_until(Duration::from_secs(10), |s| s.all_led()), "seed {seed}: no leaders without store 3");
        // ~120 KiB per region while store 3 is down: several snapshots each
        expected.extend(write_all(&mut sim, seed, 300, 400, 2));
        let compacted = |sim: &Sim| {
            sim.stores.values().filter_map(|s| s.node.as_ref()).all(|n| {
                n.shard.regions().all(|r| r.raw.store().first() > 50 && r.snapshot.is_some_and(|s| s.index > 50))
            })
        };
        // (a region snapshots once its log since the last snapshot outgrows half
        // its state: a seed whose batches leave one just short gets more writes)
        let mut extra_rounds = 0;
        while !sim.run_until(Duration::from_secs(10), compacted) {
            assert!(extra_rounds < 4, "seed {seed}: the live stores did not snapshot and compact");
            expected.extend(write_all(&mut sim, seed, 100, 400, 4 + extra_rounds));
            extra_rounds += 1;
        }
        let purged = |sim: &Sim, id: u64| {
            let w = sim.stores[&id].node.as_ref().unwrap().gc.wal().stats().clone();
            w.segments_recycled + w.segments_removed
        };
        assert!(purged(&sim, 1) > 0, "seed {seed}: the WAL of store 1 was never purged");

        sim.restart(down);
        let caught_up = |sim: &Sim| {
            let n3 = sim.stores[&down].node.as_ref().unwrap();
            sim.metas.iter().all(|m| {
                let leader = sim.leader_of(m.id).and_then(|l| sim.stores[&l].node.as_ref());
                let target = leader.map_or(u64::MAX, |n| n.shard.region(m.id).unwrap().applied);
                n3.shard.region(m.id).unwrap().applied >= target
            })
        };
        assert!(sim.run_until(Duration::from_secs(20), caught_up), "seed {seed}: store 3 did not catch up");
        let installed = sim.stores[&down].node.as_ref().unwrap().shard.stats().snapshots_installed;
        assert!(installed >= sim.options.regions, "seed {seed}: {installed} snapshots installed on store 3");
        assert_state(&sim, seed, &expected);

        // restart everything from its snapshots and compacted logs
        expected.extend(write_all(&mut sim, seed, 10, 100, 3));
        for id in 1..=sim.options.stores {
            sim.crash(id);
        }
        for id in 1..=sim.options.stores {
            sim.restart(id);
        }
        assert!(sim.run_until(Duration::from_secs(10), |s| s.all_led()), "seed {seed}: no leaders after restart");
        settle_and_assert_converged(&mut sim, seed);
        assert_state(&sim, seed, &expected);
        let restored = sim
            .stores
            .values()
            .filter_map(|s| s.node.as_ref())
            .all(|n| n.shard.regions().all(|r| r.snapshot.is_some()));
        assert!(restored, "seed {seed}: some region restarted without its snapshot");
    });
}

/// The region as its leader's store holds it now.
fn leader_meta(sim: &Sim, region: u64) -> (u64, engine::region::meta::RegionMeta) {
    let leader = sim.leader_of(region).expect("led");
    (leader, sim.stores[&leader].node.as_ref().unwrap().shard.region(region).unwrap().meta.clone())
}

/// A membership change through the region's leader; one refused because
/// some voter is not keeping up right now is tried again a little later.
fn change(
    sim: &mut Sim,
    region: u64,
    change: engine::region::meta::PeerChange,
) -> Result<Response, engine::RegionError> {
    for _ in 0..50 {
        let (leader, meta) = leader_meta(sim, region);
        let r = sim.submit(leader, |request| Input::ChangePeer { request, region, epoch: meta.epoch(), change });
        assert!(sim.run_until(Duration::from_secs(10), |s| s.has_reply(r)), "membership change not answered");
        match sim.take_reply(r).unwrap() {
            Err(engine::RegionError::Refused { reason, .. }) if reason.contains("quorum") => {
                sim.run_for(Duration::from_millis(100))
            }
            other => return other,
        }
    }
    panic!("region {region}: the change was refused for want of a healthy quorum for 5 s");
}

/// A removed peer leaves a tombstone: its log is gone, a late message of the
/// old epoch does not bring it back (not even after a restart), and the
/// region goes on with the others. Added back under a new peer id, the store
/// gets a fresh peer that the leader fills with a snapshot.
#[test]
fn a_removed_peer_stays_removed_and_a_re_added_one_catches_up_by_snapshot() {
    use engine::region::meta::{PeerChange, PeerMeta};
    for_seeds(3, |seed| {
        let mut opts = SimOptions::new(seed);
        opts.regions = 2;
        let mut sim = Sim::new(opts);
        assert!(sim.run_until(Duration::from_secs(10), |s| s.all_led()), "seed {seed}: no leaders");
        let mut expected: std::collections::BTreeMap<_, _> = write_all(&mut sim, seed, 20, 50, 1).into_iter().collect();
        let region = sim.metas[0].id;
        let (leader, meta) = leader_meta(&sim, region);
        let victim = meta.peers.iter().map(|p| p.store_id).find(|s| *s != leader).unwrap();
        let old_peer = *meta.peer_on(victim).unwrap();

        // refusals: the leader itself, a member twice
        let me = *meta.peer_on(leader).unwrap();
        assert!(matches!(
            change(&mut sim, region, PeerChange::RemovePeer(me)),
            Err(engine::RegionError::Refused { .. })
        ));
        assert!(matches!(
            change(&mut sim, region, PeerChange::AddVoter(old_peer)),
            Err(engine::RegionError::Refused { .. })
        ));

        assert_eq!(change(&mut sim, region, PeerChange::RemovePeer(old_peer)), Ok(Response::Done), "seed {seed}");
        let gone = |s: &Sim| s.stores[&victim].node.as_ref().unwrap().shard.is_tombstone(region);
        assert!(sim.run_until(Duration::from_secs(10), gone), "seed {seed}: store {victim} kept its removed peer");
        let (_, now) = leader_meta(&sim, region);
        assert_eq!((now.conf_ver, now.peers.len()), (meta.conf_ver + 1, 2));

        // a late heartbeat of the old epoch, to the removed peer
        let late = || {
            let mut hb = raft::eraftpb::Message::default();
            hb.set_msg_type(raft::eraftpb::MessageType::MsgHeartbeat);
            hb.to = old_peer.peer_id;
            hb.from = me.peer_id;
            hb.term = 100;
            transport::Envelope {
                region_id: region,
                start_key: meta.start_key.clone().into(),
                end_key: meta.end_key.clone().into(),
                epoch: meta.epoch(),
                from: transport::Peer { peer_id: me.peer_id, store_id: me.store_id, shard: 0 },
                to: transport::Target { peer_id: old_peer.peer_id, store_id: victim, shard: 0 },
                message: protobuf::Message::write_to_bytes(&hb).unwrap().into(),
            }
        };
        sim.stores.get_mut(&victim).unwrap().node.as_mut().unwrap().inputs.push(Input::Raft(late()));
        sim.run_for(Duration::from_millis(100));
        let hosts = |s: &Sim| s.stores[&victim].node.as_ref().unwrap().shard.region(region).is_some();
        assert!(!hosts(&sim), "seed {seed}: a late message recreated the removed peer");
        sim.crash(victim);
        sim.restart(victim);
        sim.stores.get_mut(&victim).unwrap().node.as_mut().unwrap().inputs.push(Input::Raft(late()));
        sim.run_for(Duration::from_millis(100));
        assert!(!hosts(&sim) && gone(&sim), "seed {seed}: the tombstone did not survive a restart");

        // the region goes on with two replicas
        let (leader, now) = leader_meta(&sim, region);
        let k = key(0, 999);
        let command = Command::Put { key: k.clone(), value: b"two".to_vec() };
        let r = sim.submit(leader, |request| Input::Write { request, region, epoch: now.epoch(), command });
        assert!(sim.run_until(Duration::from_secs(10), |s| s.has_reply(r)));
        assert_eq!(sim.take_reply(r), Some(Ok(Response::Done)));
        expected.insert(k, b"two".to_vec());

        // back under a new peer id: created by the leader's first message, filled by a snapshot
        let new_peer = PeerMeta::voter(old_peer.peer_id + 1000, victim, 0);
        assert_eq!(change(&mut sim, region, PeerChange::AddVoter(new_peer)), Ok(Response::Done), "seed {seed}");
        let caught_up = |s: &Sim| {
            let (l, _) = leader_meta(s, region);
            let target = s.stores[&l].node.as_ref().unwrap().shard.region(region).unwrap().applied;
            s.stores[&victim].node.as_ref().unwrap().shard.region(region).is_some_and(|r| r.applied >= target)
        };
        let ok = sim.run_until(Duration::from_secs(20), caught_up);
        assert!(ok, "seed {seed}: the re-added peer did not catch up");
        let st = sim.stores[&victim].node.as_ref().unwrap().shard.stats().clone();
        assert!(st.regions_created == 1 && st.snapshots_installed >= 1, "seed {seed}: {st:?}");
        let r3 = sim.stores[&victim].node.as_ref().unwrap().shard.region(region).unwrap();
        assert_eq!((r3.peer_id, r3.meta.peers.len()), (new_peer.peer_id, 3));
        sim.refresh_metas();
        settle_and_assert_converged(&mut sim, seed);
        assert_state(&sim, seed, &expected);
    });
}

/// A leader with an entry of its term out holds new writes until it
/// commits: what arrives meanwhile goes into one next entry. And held
/// writes of a leader cut off from its followers are answered definitely
/// (never proposed: NotLeader once it steps down), never left hanging.
#[test]
fn writes_arriving_while_an_entry_is_out_go_together_and_a_cut_off_leader_answers_its_held_ones() {
    for_seeds(3, |seed| {
        let mut opts = SimOptions::new(seed);
        opts.regions = 1;
        let mut sim = Sim::new(opts);
        assert!(sim.run_until(Duration::from_secs(10), |s| s.all_led()), "seed {seed}: no leaders");
        let (leader, meta) = leader_meta(&sim, meta_id(&sim));
        let region = meta.id;
        let stats = |s: &Sim| s.stores[&leader].node.as_ref().unwrap().shard.stats().clone();
        let put = |sim: &mut Sim, n: u64| {
            let command = Command::Put { key: key(0, n), value: b"v".to_vec() };
            sim.submit(leader, |request| Input::Write { request, region, epoch: meta.epoch(), command })
        };

        // one write goes out as an entry; fifty arrive before it commits
        let before = stats(&sim);
        let first = put(&mut sim, 0);
        assert!(sim.run_until(Duration::from_secs(1), |s| stats(s).proposals > before.proposals), "seed {seed}");
        assert!(!sim.has_reply(first), "seed {seed}: committed within one step");
        let rest: Vec<u64> = (1..=50).map(|n| put(&mut sim, n)).collect();
        assert!(sim.run_until(Duration::from_secs(10), |s| rest.iter().all(|r| s.has_reply(*r))), "seed {seed}");
        for r in std::iter::once(first).chain(rest) {
            assert_eq!(sim.take_reply(r), Some(Ok(Response::Done)), "seed {seed}");
        }
        let after = stats(&sim);
        assert_eq!(after.writes_proposed - before.writes_proposed, 51, "seed {seed}");
        assert_eq!(after.proposals - before.proposals, 2, "seed {seed}: the fifty went into one entry");

        // cut off: the entry out cannot commit, the writes behind it are held,
        // and once the leader steps down they are refused, never lost
        let first = put(&mut sim, 100);
        let proposed = stats(&sim).proposals;
        assert!(sim.run_until(Duration::from_secs(1), |s| stats(s).proposals > proposed), "seed {seed}");
        for other in meta.peers.iter().map(|p| p.store_id).filter(|s| *s != leader) {
            sim.partition(leader, other);
        }
        let held: Vec<u64> = (101..=110).map(|n| put(&mut sim, n)).collect();
        let answered = |s: &Sim| held.iter().all(|r| s.has_reply(*r));
        assert!(sim.run_until(Duration::from_secs(20), answered), "seed {seed}: held writes never answered");
        for r in held {
            assert!(
                matches!(sim.take_reply(r), Some(Err(engine::RegionError::NotLeader { .. }))),
                "seed {seed}: a held write must be refused definitely"
            );
        }
        // (the entry that was out learns its fate once the leader hears from the others again)
        sim.heal_all();
        assert!(sim.run_until(Duration::from_secs(20), |s| s.has_reply(first)), "seed {seed}: the entry out");
    });
}

fn meta_id(sim: &Sim) -> u64 {
    sim.metas[0].id
}

/// Puts into the regions at `region_indexes` once each is led again.
fn write_regions(sim: &mut Sim, seed: u64, region_indexes: &[u64], count: u64, tag: u8) {
    let ids: Vec<u64> = region_indexes.iter().map(|&i| sim.metas[i as usize].id).collect();
    assert!(
        sim.run_until(Duration::from_secs(10), |s| ids.iter().all(|id| s.leader_of(*id).is_some())),
        "seed {seed}: regions {ids:?} not all led"
    );
    write_into(sim, seed, region_indexes, count, 32, tag);
}

/// A committed entry that does not decode fences its region on every
/// replica that applies it (a quorum at least) — the stores stay up, every other region keeps
/// serving — and a restart replays the entry and fences the region again
/// instead of panicking (it used to abort the store at every start).
#[test]
fn a_committed_entry_that_does_not_decode_fences_its_region_and_the_others_serve_on() {
    for_seeds(2, |seed| {
        let mut opts = SimOptions::new(seed);
        opts.regions = 4;
        let mut sim = Sim::new(opts);
        assert!(sim.run_until(Duration::from_secs(10), |s| s.all_led()), "seed {seed}: no leaders");
        write_regions(&mut sim, seed, &[0, 1, 2, 3], 5, 1);
        let bad = sim.metas[0].id;
        let leader = sim.leader_of(bad).expect("led");
        let shard = &mut sim.stores.get_mut(&leader).unwrap().node.as_mut().unwrap().shard;
        assert!(shard.propose_raw_for_tests(bad, vec![0xff; 24]), "seed {seed}: the leader proposes");
        // (every replica that applies the entry: a quorum at least — one that
        // lagged may never get it, its leader fenced and silent — and no
        // leader left: one that had not applied it yet fences when it does)
        let fenced_everywhere = |s: &Sim| {
            let fenced: Vec<Vec<u64>> =
                s.stores.values().filter_map(|st| st.node.as_ref()).map(|n| n.shard.fenced_regions()).collect();
            fenced.iter().all(|f| f.is_empty() || *f == vec![bad])
                && fenced.iter().filter(|f| !f.is_empty()).count() >= 2
                && s.leader_of(bad).is_none()
        };
        assert!(sim.run_until(Duration::from_secs(10), fenced_everywhere), "seed {seed}: region {bad} not fenced");
        assert!(sim.leader_of(bad).is_none(), "seed {seed}: a fenced region has no leader");
        write_regions(&mut sim, seed, &[1, 2, 3], 20, 2);

        // a restart replays the entry: fenced again, the store up
        sim.crash(2);
        sim.restart(2);
        assert!(sim.run_until(Duration::from_secs(10), fenced_everywhere), "seed {seed}: not fenced after a restart");
        write_regions(&mut sim, seed, &[1, 2, 3], 20, 3);
        assert!(sim.leader_of(bad).is_none(), "seed {seed}: a fenced replica never campaigns");
    });
}

/// The records of a WAL that hold region writes and have a record after
/// them — acknowledged, then — oldest first: (segment, offset, holds entries).
fn acknowledged_batches(disk: &wal::disk::MemDisk) -> Vec<(u64, usize, bool)> {
    let mut segments: Vec<u64> = disk
        .file_names()
        .iter()
        .filter_map(|n| match wal::layout::parse_name(n) {
            Some(wal::layout::FileKind::Segment(seq)) => Some(seq),
            _ => None,
        })
        .collect();
    segments.sort_unstable();
    let mut records = vec![];
    for seq in segments {
        let bytes = disk.contents(&wal::layout::segment_name(seq)).unwrap();
        for off in wal::format::record_offsets(&bytes, seq) {
            let rec = wal::format::decode_record(&bytes, off, seq).expect("a valid record");
            let count = rec.header.section_count;
            let entries = rec.header.kind == wal::format::RecordKind::Batch
                && wal::format::decode_batch(rec.payload, count).unwrap().iter().any(|s| !s.entries.is_empty());
            records.push((count > 0).then_some((seq, off, entries)));
        }
    }
    records.pop(); // nothing follows the last record
    records.into_iter().flatten().collect()
}

/// Every (region, term) has at most one leader, over all the checks made.
#[derive(Default)]
struct OneLeaderPerTerm(std::cell::RefCell<std::collections::BTreeMap<(u64, u64), u64>>);

impl OneLeaderPerTerm {
    fn check(&self, sim: &Sim, seed: u64) {
        for st in sim.stores.values() {
            let Some(n) = st.node.as_ref() else { continue };
            for r in n.shard.regions().filter(|r| r.is_leader()) {
                let first = *self.0.borrow_mut().entry((r.id(), r.term())).or_insert(st.id);
                assert_eq!(first, st.id, "seed {seed}: region {} has two leaders in term {}", r.id(), r.term());
            }
        }
    }
}

/// A replica loses an acknowledged WAL record, damaged on disk: the last
/// batch it wrote before a crash that followed the first elections (votes),
/// the last batch holding entries after acknowledged writes, or one holding
/// entries in the middle of its log (seeds take turns). A record follows
/// it, so strict recovery refuses to open the WAL. Opened tolerant, the
/// record is dropped (a log cut back to its snapshot, a commit index past
/// what is left lowered): the votes come back from the vote table, and every
/// region of the replica starts one term past its recorded one and neither
/// votes nor campaigns. With a second store isolated meanwhile, the
/// remaining two elect no one (the amnesiac replica's vote would be the
/// deciding one, for a candidate that may lack what it lost). Healed, a
/// leader is elected without it and catches it up; only then does it vote
/// again. No term has two leaders and nothing acknowledged is lost.
#[test]
fn a_replica_whose_wal_lost_an_acknowledged_record_votes_again_only_once_caught_up() {
    for_seeds(9, |seed| {
        let mut opts = SimOptions::new(seed);
        opts.regions = 4;
        let mut sim = Sim::new(opts);
        let leaders = OneLeaderPerTerm::default();
        let (victim, isolated, other) = (2, 1 + (seed % 2) * 2, 3 - (seed % 2) * 2);
        let mut acked = std::collections::BTreeMap::new();
        let generation = |s: &Sim| s.stores[&victim].files.0.borrow().votes.as_ref().map_or(0, |t| t.generation);
        if seed % 3 == 0 {
            let before = generation(&sim);
            assert!(sim.run_until(Duration::from_secs(10), |s| generation(s) > before), "seed {seed}: no vote cast");
        } else {
            assert!(sim.run_until(Duration::from_secs(10), |s| s.all_led()), "seed {seed}: no leaders");
            acked.extend(write_all(&mut sim, seed, 10, 64, 1));
        }
        sim.crash(victim);
        let store = sim.stores.get_mut(&victim).unwrap();
        let batches = acknowledged_batches(&store.disk);
        let with_entries: Vec<_> = batches.iter().filter(|b| b.2).collect();
        let (seq, offset, _) = match seed % 3 {
            0 => *batches.last().expect("the votes were written"),
            1 => **with_entries.last().expect("entries were written"),
            _ => *with_entries[with_entries.len() / 2],
        };
        store.disk.flip_byte(&wal::layout::segment_name(seq), (offset + 40) as u64, 0x55);
        let strict =
            futures_lite::future::block_on(wal::Wal::open(store.disk.clone(), engine::sim::store::sim_wal_options()));
        assert!(
            matches!(strict, Err(wal::OpenError::Recovery(wal::RecoveryError::Corruption { .. }))),
            "seed {seed}: strict recovery must refuse a damaged record its seal follows"
        );
        let table = store.files.0.borrow().votes.clone().expect("votes were cast and recorded");
        store.recovery_mode = wal::RecoveryMode::Tolerant;
        sim.partition(isolated, victim);
        sim.partition(isolated, other);
        sim.restart(victim);

        let node = sim.stores[&victim].node.as_ref().unwrap();
        for r in node.shard.regions() {
            let hs = r.raw.store().hard_state();
            let recorded = table.votes.get(&r.id()).copied().expect("every region's vote is in the table");
            assert_eq!((hs.term, hs.vote), recorded, "seed {seed}: region {} came back with another vote", r.id());
            assert!(r.catching_up.is_some(), "seed {seed}: region {} may vote", r.id());
            assert_eq!(r.raw.raft.term, recorded.0 + 1, "seed {seed}: one term past the recorded one");
        }
        // The victim grants no vote, and the victim and the other store elect
        // no leader in a term above every term any store had at the restart
        // (one elected since needs the victim's vote; one in a term already
        // reached may have had the isolated store's before the partition).
        let terms_at_restart: std::collections::BTreeMap<u64, u64> = sim
            .stores
            .values()
            .filter_map(|st| st.node.as_ref())
            .flat_map(|n| n.shard.regions().map(|r| (r.id(), r.raw.raft.term)).collect::<Vec<_>>())
            .fold(Default::default(), |mut m, (id, t)| {
                let e = m.entry(id).or_insert(0);
                *e = (*e).max(t);
                m
            });
        let new_leader = |s: &Sim| {
            let n = s.stores[&victim].node.as_ref().unwrap();
            for r in n.shard.regions().filter(|r| r.catching_up.is_some()) {
                assert_eq!(r.raw.raft.vote, 0, "seed {seed}: region {} voted while catching up", r.id());
            }
            [victim, other].iter().filter_map(|id| s.stores[id].node.as_ref()).any(|n| {
                n.shard
                    .regions()
                    .any(|r| r.is_leader() && r.term() > terms_at_restart.get(&r.id()).copied().unwrap_or(0))
            }) || n.shard.regions().any(|r| r.is_leader())
        };
        let elected = sim.run_until(Duration::from_secs(5), |s| {
            leaders.check(s, seed);
            new_leader(s)
        });
        assert!(!elected, "seed {seed}: a leader was elected with the vote of a replica that lost records");

        sim.heal_all();
        let caught_up = |s: &Sim| {
            s.stores[&victim].node.as_ref().is_some_and(|n| n.shard.catching_up_regions().is_empty()) && s.all_led()
        };
        let done = sim.run_until(Duration::from_secs(30), |s| {
            leaders.check(s, seed);
            caught_up(s)
        });
        assert!(done, "seed {seed}: the victim did not catch up\n{}", campaign::describe(&sim));
        // (a leader the partition left stale steps down once it hears of a later term)
        sim.run_for(Duration::from_secs(1));
        assert!(sim.run_until(Duration::from_secs(10), |s| s.all_led()), "seed {seed}: no leaders after healing");
        acked.extend(write_all(&mut sim, seed, 5, 64, 2));
        // caught up, the victim's vote counts again: with the other store down it elects leaders
        sim.crash(other);
        let led = sim.run_until(Duration::from_secs(20), |s| {
            leaders.check(s, seed);
            s.all_led()
        });
        assert!(led, "seed {seed}: a caught-up replica votes again");
        sim.run_for(Duration::from_secs(1));
        assert!(sim.run_until(Duration::from_secs(10), |s| s.all_led()), "seed {seed}: leaders lost");
        acked.extend(write_all(&mut sim, seed, 5, 64, 3));
        sim.restart(other);
        settle_and_assert_converged(&mut sim, seed);
        assert_state(&sim, seed, &acked);
    });
}

/// Every replica crashing at once, with writes in flight (each store keeps a
/// random prefix of the batch it was persisting), must still elect leaders
/// — a torn, unacknowledged tail costs no availability — and lose nothing
/// acknowledged; the replicas agree on every write whose fate was unknown.
#[test]
fn all_replicas_crashing_at_once_with_writes_in_flight_still_elect_and_lose_nothing() {
    for_seeds(4, |seed| {
        let mut opts = SimOptions::new(seed);
        opts.regions = 4;
        let mut sim = Sim::new(opts);
        assert!(sim.run_until(Duration::from_secs(10), |s| s.all_led()), "seed {seed}: no leaders");
        let mut acked: std::collections::BTreeMap<_, _> = write_all(&mut sim, seed, 10, 64, 1).into_iter().collect();
        let mut in_flight = vec![];
        for n in 100..120 {
            for i in 0..sim.options.regions {
                let k = key(i, n);
                let meta = sim.region_of(&k).clone();
                let leader = sim.leader_of(meta.id).expect("led");
                let command = Command::Put { key: k.clone(), value: vec![2; 64] };
                let r = sim.submit(leader, |request| Input::Write {
                    request,
                    region: meta.id,
                    epoch: meta.epoch(),
                    command,
                });
                in_flight.push((r, k));
            }
            sim.run_for(Duration::from_millis(1));
        }
        for id in 1..=sim.options.stores {
            sim.crash(id);
        }
        let mut maybe = vec![];
        for (r, k) in in_flight {
            match sim.take_reply(r) {
                Some(Ok(Response::Done)) => {
                    acked.insert(k, vec![2; 64]);
                }
                _ => maybe.push(k),
            }
        }
        for id in 1..=sim.options.stores {
            sim.restart(id);
        }
        assert!(sim.run_until(Duration::from_secs(20), |s| s.all_led()), "seed {seed}: no leaders after all crashed");
        acked.extend(write_all(&mut sim, seed, 5, 64, 3));
        assert!(sim.run_until(Duration::from_secs(20), |s| s.all_quiet()), "seed {seed}: not quiet");
        // every replica has applied what its region's leader has (the commit
        // index reaches followers with the next heartbeat)
        let converged = |s: &Sim| {
            s.metas.iter().all(|m| {
                let applied =
                    |id: u64| s.stores[&id].node.as_ref().and_then(|n| n.shard.region(m.id)).map(|r| r.applied);
                let led = s.leader_of(m.id).and_then(applied);
                led.is_some() && (1..=s.options.stores).all(|id| applied(id) == led)
            })
        };
        assert!(sim.run_until(Duration::from_secs(20), converged), "seed {seed}: the replicas did not converge");
        let state = |id: u64| {
            let n = sim.stores[&id].node.as_ref().expect("up");
            n.shard.regions().flat_map(|r| r.rows()).collect::<std::collections::BTreeMap<_, _>>()
        };
        let first = state(1);
        for (k, v) in &acked {
            assert_eq!(first.get(k), Some(v), "seed {seed}: acknowledged {k:?} lost");
        }
        for k in &maybe {
            assert!(first.get(k).is_none_or(|v| v == &vec![2u8; 64]), "seed {seed}: {k:?} holds a value nobody wrote");
        }
        for id in 2..=sim.options.stores {
            assert!(state(id) == first, "seed {seed}: store {id} disagrees with store 1");
        }
    });
}

/// A campaign's seeds (`ringraft sim`): each draws its own faults — loss up
/// to 30%, delays up to twice the election timeout, one-way partitions, two
/// stores down at once, PD crashing, splits and moves — and every run must
/// pass every check (linearizable, converged, quiet, no overlap, whole).
#[test]
fn a_campaign_of_seeds_drawing_their_own_faults_passes_every_check() {
    let kinds = std::cell::RefCell::new(std::collections::BTreeSet::new());
    for_seeds(24, |seed| {
        let report = campaign::run_seed(seed);
        if let Some(key) = &report.undecided {
            eprintln!("seed {seed}: the history of {key:?} is undecided (the other checks passed)");
        }
        if let Some(why) = &report.failure {
            panic!("seed {seed}: {why} (faults: {})", report.profile.describe());
        }
        let p = &report.profile;
        kinds.borrow_mut().extend(
            [
                (p.down_max == 2).then_some("two down"),
                (p.one_way_per_million > 0 && report.partitions > 0).then_some("one-way"),
                p.moves.then_some("moves"),
                (report.splits > 0).then_some("splits"),
                (p.network.drop_per_million > 150_000).then_some("heavy loss"),
                (report.sync_failures > 0).then_some("failed fdatasync"),
            ]
            .into_iter()
            .flatten(),
        );
    });
    // (over the default seeds or more, every kind of fault was drawn at least once)
    if seeds::seeds(24).len() >= 24 {
        let kinds = kinds.into_inner();
        assert_eq!(kinds.len(), 6, "kinds drawn: {kinds:?}");
    }
}

/// A campaign seed whose store restarted with a split child and its own
/// split child both pending: recovery kept the grandchild under the region
/// holding its range — its grandparent — which waited for it even after
/// the child's replayed split recorded it, so never snapshotted again, and
/// a learner PD added later never got a snapshot (its operator hung on, the
/// learner left when the checks ran). Fails without the fix in
/// `Shard::children_recorded`.
#[test]
fn a_grandchild_recovered_pending_does_not_hold_its_grandparents_snapshots_for_good() {
    let report = campaign::run_seed(16531);
    if let Some(why) = &report.failure {
        panic!("seed 16531: {}", why.lines().next().unwrap_or_default());
    }
}

/// Campaign seeds whose stores restart on bit rot — a byte of a WAL record
/// flipped while the store was down, the store restarted in tolerant
/// recovery, its regions catching up before they vote — pass every check
/// (bit rot is drawn only where every region keeps three voters, so the
/// 24 seeds above rarely have it).
#[test]
fn campaign_seeds_restarting_stores_on_bit_rot_pass_every_check() {
    for seed in [77, 145, 150, 44739] {
        let report = campaign::run_seed(seed);
        if let Some(why) = &report.failure {
            panic!("seed {seed}: {}", why.lines().next().unwrap_or_default());
        }
        assert!(report.bit_rots > 0, "seed {seed} no longer rots a byte: {}", report.profile.describe());
    }
}

/// Campaign seeds in which a split child's only replica needed peers that
/// no leader's message would create (the parent's followers caught up by a
/// snapshot past the split): its vote requests, vouched for by PD (or the
/// simulation standing in for it), create them and it is elected. (Both
/// seeds end with a region that elects no leader when vote requests do not
/// ask PD: found by a campaign with the asks turned off.)
#[test]
fn a_split_child_left_alone_is_elected_through_peers_pd_vouches_for() {
    for seed in [1790, 3986] {
        let report = campaign::run_seed(seed);
        if let Some(why) = &report.failure {
            panic!("seed {seed}: {}", why.lines().next().unwrap_or_default());
        }
    }
}

/// One write at a time: a follower writes each entry once, its commit
/// index riding along, and no batch of its own for the commit index the
/// leader then sends (`engine/src/shard/persist.rs`, `stage_hard_state`):
/// raft needs no fdatasync for a commit index moving alone. Before, each
/// write cost every follower a second batch (write, fdatasync, seal). The
/// replicas still converge, and a restart of every store loses nothing.
#[test]
fn a_commit_index_moving_alone_costs_a_follower_no_batch_of_its_own() {
    const WRITES: u64 = 40;
    for_seeds(3, |seed| {
        let mut opts = SimOptions::new(seed);
        opts.regions = 1;
        let mut sim = Sim::new(opts);
        assert!(sim.run_until(Duration::from_secs(10), |s| s.all_led()), "seed {seed}: no leader");
        let id = meta_id(&sim);
        let leader = sim.leader_of(id).unwrap();
        let followers: Vec<u64> = sim.stores.keys().copied().filter(|s| *s != leader).collect();
        let batches = |sim: &Sim, s: u64| sim.stores[&s].node.as_ref().unwrap().shard.stats().persist_batches;
        let before: Vec<u64> = followers.iter().map(|s| batches(&sim, *s)).collect();
        let mut expected = std::collections::BTreeMap::new();
        for n in 0..WRITES {
            let written = write_into(&mut sim, seed, &[0], 1, 16, n as u8);
            // (the leader's commit reaches the followers before the next write)
            sim.run_for(Duration::from_millis(20));
            expected.extend(written.into_iter().map(|(k, v)| (k, v)));
            assert_eq!(sim.leader_of(id), Some(leader), "seed {seed}: leadership moved");
        }
        for (s, b) in followers.iter().zip(before) {
            let used = batches(&sim, *s) - b;
            assert!(used <= WRITES + WRITES / 4, "seed {seed}: store {s} used {used} batches for {WRITES} writes");
        }
        settle_and_assert_converged(&mut sim, seed);
        assert_state(&sim, seed, &expected);
        for s in sim.stores.keys().copied().collect::<Vec<_>>() {
            sim.crash(s);
            sim.restart(s);
        }
        assert!(sim.run_until(Duration::from_secs(10), |s| s.all_led()), "seed {seed}: no leader after restarts");
        settle_and_assert_converged(&mut sim, seed);
        assert_state(&sim, seed, &expected);
    });
}
