//! A write is acknowledged only once a record follows its own: the group
//! commit tells a waiter when its write is on disk (`wait_written`) and when
//! it is acknowledged (`wait`), writes a one-block seal when nothing else
//! follows, and writes none when the next batch arrives first — it lets the
//! woken tasks run a few turns before it settles for a seal. The futures are
//! polled by hand on the in-memory disk, so nothing depends on timing.

mod common;

use std::future::Future;
use std::pin::{pin, Pin};
use std::task::{Context, Waker};

use common::*;
use wal::disk::MemDisk;
use wal::GroupCommit;

/// Polls `fut` once; whether it finished.
fn ready<F: Future>(fut: Pin<&mut F>) -> bool {
    fut.poll(&mut Context::from_waker(Waker::noop())).is_ready()
}

#[test]
fn a_write_is_on_disk_first_and_acknowledged_by_the_seal_after_it() {
    let disk = MemDisk::new();
    let (wal, _) = open(&disk, small_options());
    let gc = GroupCommit::new(wal);
    let ticket = append_entries(&mut gc.wal(), 1, 3, 100, 1);
    let mut run = pin!(gc.run());
    let mut written = pin!(gc.wait_written(ticket));
    let mut durable = pin!(gc.wait(ticket));
    let (mut written_at, mut durable_at) = (None, None);
    for _ in 0..POLLS {
        assert!(!ready(run.as_mut()), "the writer runs until stopped");
        let flushes = gc.wal().stats().flushes;
        if written_at.is_none() && ready(written.as_mut()) {
            written_at = Some(flushes);
        }
        if durable_at.is_none() && ready(durable.as_mut()) {
            durable_at = Some(flushes);
            break;
        }
    }
    assert_eq!(written_at, Some(1), "on disk after its own flush");
    assert_eq!(durable_at, Some(2), "acknowledged after the flush that follows it");
    assert_eq!(gc.wal().stats().seals, 1, "with nothing else staged, that flush is a seal");
}

#[test]
fn a_batch_appended_once_the_last_is_written_acknowledges_it_without_a_seal() {
    let disk = MemDisk::new();
    let (wal, _) = open(&disk, small_options());
    let gc = GroupCommit::new(wal);
    let first = append_entries(&mut gc.wal(), 1, 3, 100, 1);
    let mut run = pin!(gc.run());
    let mut written = pin!(gc.wait_written(first));
    let mut durable = pin!(gc.wait(first));
    let mut polls = 0;
    while !ready(written.as_mut()) {
        assert!(!ready(run.as_mut()));
        polls += 1;
        assert!(polls < POLLS, "the first batch reaches the disk");
    }
    // what a shard does once its batch is written: append the next one
    let second = append_entries(&mut gc.wal(), 2, 3, 100, 2);
    while !ready(durable.as_mut()) {
        assert!(!ready(run.as_mut()));
        polls += 1;
        assert!(polls < 2 * POLLS, "the first batch is acknowledged");
    }
    let stats = gc.wal().stats().clone();
    assert_eq!((stats.flushes, stats.seals), (2, 0), "the second batch acknowledged the first: no seal");
    assert!(gc.wal().durable_ticket() < second, "the second waits for its own follower");

    gc.stop();
    poll_up_to(run.as_mut(), POLLS).expect("a stop seals what is written").expect("a clean stop");
    assert!(gc.wal().durable_ticket() >= second);
    assert_eq!(gc.wal().stats().seals, 1);
}
