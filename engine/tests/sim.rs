//! The shard logic under the deterministic simulator: real shards, real WAL
//! on a fake disk, real frames on a fake network, one seed. A failing seed
//! is printed; `RINGRAFT_SEED=N` replays it.

use std::time::Duration;

use engine::kv::{Command, StateMachine};
use engine::shard::{Input, Response};
use engine::sim::{Sim, SimOptions};

fn seeds(default_count: u64) -> Vec<u64> {
    match std::env::var("RINGRAFT_SEED") {
        Ok(s) => vec![s.parse().expect("RINGRAFT_SEED is a number")],
        Err(_) => {
            let count = std::env::var("RINGRAFT_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(default_count);
            (0..count).collect()
        }
    }
}

/// Runs `f` for every seed, naming the seed that failed.
fn for_seeds(default_count: u64, f: impl Fn(u64)) {
    for seed in seeds(default_count) {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(seed)));
        if let Err(e) = result {
            eprintln!("failed with seed {seed}: replay with RINGRAFT_SEED={seed}");
            std::panic::resume_unwind(e);
        }
    }
}

fn key(region_index: u64, n: u64) -> Vec<u8> {
    let mut k = engine::sim::region_start_key(region_index);
    if k.is_empty() {
        k = b"a".to_vec();
    }
    k.extend_from_slice(format!("-{n:05}").as_bytes());
    k
}

/// Every region's replicas hold the same keys and values.
fn assert_converged(sim: &Sim) {
    for m in &sim.metas {
        let mut states = sim
            .stores
            .values()
            .filter_map(|s| s.node.as_ref())
            .map(|n| n.shard.region(m.id).expect("every store hosts every region").kv.scan(b"", b"", usize::MAX));
        let first = states.next().unwrap();
        for other in states {
            assert_eq!(other, first, "region {} diverged", m.id);
        }
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
        assert_converged(&sim);
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
