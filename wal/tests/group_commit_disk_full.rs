//! A full disk: the group commit cannot prepare its next segment. It says
//! so (`disk_full`), tries again after a backoff counted in its owner's
//! ticks (never in a loop), removes what a failed try left, and writes
//! that fit the active segment go on while later ones wait — none refused
//! as failed, none lost. Once space is freed the next try succeeds, the
//! waiting writes go out, and a restart reads every one of them back.
//! Driven by hand on the in-memory disk with a space limit: no timing.

mod common;

use std::pin::pin;

use common::*;
use wal::disk::MemDisk;
use wal::GroupCommit;

#[test]
fn a_full_disk_stalls_the_roll_with_backoff_and_space_freed_lets_every_write_through() {
    let opts = small_options(); // 64 KiB segments
    let disk = MemDisk::new();
    let (wal, _) = open(&disk, opts.clone());
    let gc = GroupCommit::new(wal);
    let mut run = pin!(gc.run());
    assert!(poll_up_to(run.as_mut(), POLLS).is_none(), "the first segment and a spare are ready");
    // room for what is there and nothing more: the spare after the next cannot be made
    disk.set_space_limit(Some(disk.used_bytes()));

    // write until the log has rolled onto its spare and wants another
    let mut tickets = vec![];
    let mut index = 1;
    while !gc.disk_full() {
        assert!(index < 200, "the log never needed a new segment");
        tickets.push((index, gc.append(1, entry_write(index, 2 << 10)).expect("room to stage")));
        index += 1;
        assert!(poll_up_to(run.as_mut(), POLLS).is_none(), "a full disk is not fatal");
    }
    let failure = gc.wal().spare_failure().cloned().expect("the failed try is kept");
    assert!(failure.disk_full && failure.attempts == 1, "{failure:?}");
    assert!(failure.error.contains("no space"), "{failure:?}");
    assert!(
        !disk.file_names().iter().any(|n| n.ends_with(".tmp")),
        "a failed try removes its half-made segment: {:?}",
        disk.file_names()
    );
    // the active segment still has room: writes go on until it fills, then wait
    // (staged, not refused), and nothing is tried again before its backoff
    let before = gc.wal().stats().spare_failures;
    let last = loop {
        assert!(index < 400, "the active segment never filled");
        let t = gc.append(1, entry_write(index, 2 << 10)).expect("staged while the disk is full");
        tickets.push((index, t));
        index += 1;
        assert!(poll_up_to(run.as_mut(), POLLS).is_none());
        if gc.wal().written_ticket() < t {
            break t;
        }
    };
    assert!(gc.wal().durable_ticket() < last, "the writes past the segment wait for space");
    assert_eq!(gc.wal().stats().spare_failures, before, "no retry without a tick");

    // ticks pass: each try fails again, each backoff twice the last
    let mut tries = vec![];
    for tick in 1..=8u64 {
        gc.tick();
        assert!(poll_up_to(run.as_mut(), POLLS).is_none());
        if gc.wal().stats().spare_failures > before + tries.len() as u64 {
            tries.push(tick);
        }
    }
    assert_eq!(tries, vec![1, 3, 7], "backoff of 1, 2, 4 ticks");
    assert!(gc.disk_full());

    // space is freed: the next try makes the segment and the waiting writes go out
    disk.set_space_limit(None);
    for _ in 0..8 {
        gc.tick();
        assert!(poll_up_to(run.as_mut(), POLLS).is_none());
    }
    assert!(!gc.disk_full() && gc.wal().spare_failure().is_none());
    gc.append(2, entry_write(1, 16)).expect("room again");
    assert!(poll_up_to(run.as_mut(), POLLS).is_none());
    let durable = gc.wal().durable_ticket();
    assert!(durable >= last, "the writes that waited are durable");
    gc.stop();
    poll_up_to(run.as_mut(), POLLS).expect("run returns after stop").expect("a clean stop");

    // every write is there after a restart
    let (wal, _) = open(&disk, opts);
    let read = read_all(&wal, 1, 1, index);
    assert_eq!(read.len() as u64, index - 1, "every write survives");
}

/// One entry of `bytes` bytes at `index`, with a HardState committing it.
fn entry_write(index: u64, bytes: usize) -> wal::RegionWrite {
    wal::RegionWrite {
        entries: vec![wal::Entry { index, term: 1, entry_type: 0, data: bytes::Bytes::from(vec![3u8; bytes]) }],
        hard_state: Some(wal::HardState { term: 1, vote: 1, commit: index }),
        ..Default::default()
    }
}

/// A stop while the log waits for space ends at once (no tick needed: the
/// owner's loop that ticks is gone), with what could not be written
/// unacknowledged — instead of holding the stop forever.
#[test]
fn a_stop_on_a_full_disk_ends_at_once_and_acknowledges_nothing_unwritten() {
    let disk = MemDisk::new();
    let (wal, _) = open(&disk, small_options());
    let gc = GroupCommit::new(wal);
    let mut run = pin!(gc.run());
    assert!(poll_up_to(run.as_mut(), POLLS).is_none());
    disk.set_space_limit(Some(disk.used_bytes()));
    let mut index = 1;
    let last = loop {
        assert!(index < 400, "the log never stalled for want of a segment");
        let t = gc.append(1, entry_write(index, 2 << 10)).expect("staged");
        index += 1;
        assert!(poll_up_to(run.as_mut(), POLLS).is_none());
        if gc.disk_full() && gc.wal().written_ticket() < t {
            break t;
        }
    };
    gc.stop();
    let stopped = poll_up_to(run.as_mut(), POLLS).expect("run returns on stop, the disk still full");
    assert!(stopped.is_ok(), "a full disk is not fatal: {stopped:?}");
    let durable = gc.wal().durable_ticket();
    assert!(durable < last, "what no segment took is not acknowledged");
}
