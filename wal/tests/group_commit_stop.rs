//! `GroupCommit::stop`: `run` returns once everything staged is durable —
//! even when that takes a new segment — but does not finish preparing a
//! spare segment nobody will write to (its zero-fill is an fdatasync per
//! MiB; on a disk in a slow spell it held a stopping store for tens of
//! seconds). The in-memory disk holds fdatasyncs to play that spell; the
//! futures are polled by hand, so nothing here depends on timing.

mod common;

use std::pin::pin;

use common::*;
use wal::disk::MemDisk;
use wal::GroupCommit;

#[test]
fn stop_abandons_a_spare_segment_being_prepared() {
    let disk = MemDisk::new();
    let (wal, _) = open(&disk, small_options());
    let gc = GroupCommit::new(wal);
    disk.hold_syncs();
    let mut run = pin!(gc.run());
    assert!(poll_up_to(run.as_mut(), POLLS).is_none(), "the maintainer prepares a spare and waits on its fdatasync");
    assert!(disk.file_names().iter().any(|n| n.ends_with(".tmp")), "{:?}", disk.file_names());

    gc.stop();
    let out = poll_up_to(run.as_mut(), POLLS).expect("run returns while the spare's fdatasync is still held");
    out.expect("a clean stop");

    // the half-filled spare is gone at the next open, and the log opens clean
    disk.release_syncs();
    let (wal, report) = open(&disk, small_options());
    assert!(!disk.file_names().iter().any(|n| n.ends_with(".tmp")), "{:?}", disk.file_names());
    assert!(report.dropped.is_empty());
    assert_eq!(wal.regions().count(), 0);
}

#[test]
fn stop_still_waits_for_what_was_staged_even_when_it_needs_a_new_segment() {
    let disk = MemDisk::new();
    let (mut wal, _) = open(&disk, small_options());
    let ticket = append_entries(&mut wal, 7, 3, 100, 0xab);
    let gc = GroupCommit::new(wal);
    disk.hold_syncs();
    gc.stop();
    {
        let mut run = pin!(gc.run());
        assert!(poll_up_to(run.as_mut(), POLLS).is_none(), "a staged write waits for its segment and its fdatasync");
        assert!(gc.wal().durable_ticket() < ticket);

        disk.release_syncs();
        poll_up_to(run.as_mut(), POLLS).expect("run returns once the staged write is durable").expect("a clean stop");
        assert!(gc.wal().durable_ticket() >= ticket);
    }
    drop(gc);
    let (wal, _) = open(&disk.crash(|_| 0), small_options());
    assert_eq!(wal.last_index(7), Some(3), "the staged write survives a crash after the stop");
}
