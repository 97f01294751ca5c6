//! The log's central promise, checked against a model: after a crash at any
//! point (unsynced writes lost, the last write torn at any byte), every
//! acknowledged write is there byte for byte and nothing unacknowledged is
//! half there — over random batches, overwrites, compactions, snapshots,
//! tombstones, segment rolls and purges.
//!
//! Replay a failing case with `RINGRAFT_SEED=<seed> cargo test -p wal --test crash_recovery`.

mod common;

use common::*;
use futures_lite::future::block_on;
use proptest::prelude::*;
use wal::disk::MemDisk;
use wal::{AppendError, RegionId, Ticket};

const REGIONS: u64 = 6;
const OPS_PER_LIFE: usize = 160;
const LIVES: usize = 3;

/// One life of the log: random work, then a crash. Returns the disk the
/// next life starts from and the model states it may legally recover to.
fn run_seed(seed: u64) {
    let mut rng = Rng(seed);
    let mut disk = MemDisk::new();
    // the model as of the last acknowledged write; the log must recover to it
    let mut durable: Model = Model::new();
    let mut max_term = 1;
    for life in 0..LIVES {
        let (mut wal, report) = open(&disk, small_options());
        let recovered = observe_all(&wal);
        assert!(report.dropped.is_empty(), "seed {seed} life {life}: strict recovery dropped nothing");
        assert_eq!(
            recovered,
            normalized(&durable),
            "seed {seed} life {life}: recovered state differs from the acknowledged one"
        );

        // `model` follows every staged write; `by_ticket` remembers the model
        // after each ticket so that an in-flight batch can be judged.
        let mut model = durable.clone();
        let mut by_ticket: Vec<(Ticket, Model)> = vec![(wal.last_ticket(), model.clone())];
        let mut in_flight: Option<wal::Flush<MemDisk>> = None;
        for _ in 0..OPS_PER_LIFE {
            match rng.below(100) {
                0..=59 => {
                    let region: RegionId = rng.below(REGIONS);
                    let m = model.entry(region).or_default();
                    let w = random_write(&mut rng, m, &mut max_term);
                    match wal.append(region, w.clone()) {
                        Ok(t) => {
                            m.apply(&w);
                            by_ticket.push((t, model.clone()));
                        }
                        Err(AppendError::Busy { .. }) => {}
                        Err(e) => panic!("seed {seed}: append {w:?} to region {region}: {e}"),
                    }
                }
                60..=79 => match in_flight.take() {
                    None => in_flight = start_flush(&mut wal),
                    Some(f) => {
                        let t = f.written_ticket;
                        let acknowledged = wal.written_ticket();
                        let r = block_on(f.execute());
                        assert_eq!(wal.finish_flush(r).unwrap(), acknowledged, "a record is acknowledged by the next");
                        assert_eq!(wal.written_ticket(), t);
                    }
                },
                80..=84 if in_flight.is_none() => {
                    let live_before = wal.segment_seqs();
                    let (purged, blocking) = purge(&mut wal);
                    for seq in &purged {
                        assert!(live_before.contains(seq));
                        assert!(blocking.iter().all(|&(_, pin)| pin > *seq), "a purged segment was pinned");
                    }
                }
                85..=89 => {
                    let region = rng.below(REGIONS);
                    if let Some(last) = wal.last_index(region) {
                        wal.release_cache(region, rng.below(last + 1));
                    }
                }
                _ => {
                    // live reads agree with the model, from memory or disk
                    let region = rng.below(REGIONS);
                    let want = model.get(&region).cloned().unwrap_or_default();
                    if wal.first_index(region).is_some() {
                        assert_eq!(observe(&wal, region), want, "seed {seed}: live read of region {region}");
                    }
                }
            }
        }

        // Crash. A flush in flight may have reached the disk in part; what
        // was written before it is there whole, acknowledged or not yet.
        let durable_ticket = wal.durable_ticket();
        let mut allowed = vec![model_at(&by_ticket, wal.written_ticket())];
        if let Some(f) = in_flight.take() {
            allowed.push(model_at(&by_ticket, f.written_ticket));
            if rng.chance(50) {
                // the write is issued, then the sync fails: fatal, nothing more is acknowledged
                disk.fail_syncs();
                let r = block_on(f.execute());
                assert!(wal.finish_flush(r).is_err());
                assert!(matches!(wal.append(0, Default::default()), Err(AppendError::Fatal(_))));
                assert_eq!(wal.durable_ticket(), durable_ticket);
            }
        }
        let tear_seed = rng.next();
        disk = if rng.chance(50) {
            // a prefix of the last write reached the disk
            disk.crash(|len| (tear_seed % (len as u64 + 1)) as usize)
        } else {
            // its blocks landed in no particular order
            disk.crash_scattered(|block| (tear_seed >> (block % 64)) & 1 == 1)
        };
        let (wal, _) = open(&disk, small_options());
        let got = observe_all(&wal);
        let which = allowed.iter().position(|m| normalized(m) == got);
        assert!(
            which.is_some(),
            "seed {seed} life {life}: state after crash is neither the acknowledged one nor the in-flight batch applied whole\n got {got:#?}\n acknowledged {:#?}",
            allowed[0]
        );
        durable = allowed[which.unwrap()].clone();
        drop(wal);
    }
}

fn model_at(by_ticket: &[(Ticket, Model)], ticket: Ticket) -> Model {
    by_ticket.iter().rev().find(|(t, _)| *t <= ticket).map(|(_, m)| m.clone()).expect("a model for every ticket")
}

#[test]
fn replay_seed_from_env() {
    if let Ok(s) = std::env::var("RINGRAFT_SEED") {
        run_seed(s.parse().expect("RINGRAFT_SEED is a u64"));
    }
}

proptest! {
    // 256 cases by default (about two seconds); PROPTEST_CASES=20000 for a soak.
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn acknowledged_writes_survive_any_crash_and_nothing_half_written_appears(seed in any::<u64>()) {
        run_seed(seed);
    }
}
