//! `GroupCommit::append_when_room`: an appender that finds the staged bytes
//! at their limit waits for the flush that takes them — woken by that flush,
//! not by a timer — and is staged before that flush's fdatasync completes.
//! The in-memory disk holds fdatasyncs; the futures are polled by hand, so
//! nothing here depends on timing.

mod common;

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Wake, Waker};

use bytes::Bytes;
use common::*;
use wal::disk::MemDisk;
use wal::{AppendError, Entry, GroupCommit, HardState, RegionWrite, WalOptions};

/// A waker that remembers it was woken.
#[derive(Default)]
struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// One entry of `bytes` bytes at `index`, with a HardState committing it.
fn write(index: u64, bytes: usize) -> RegionWrite {
    RegionWrite {
        entries: vec![Entry { index, term: 1, entry_type: 0, data: Bytes::from(vec![7u8; bytes]) }],
        hard_state: Some(HardState { term: 1, vote: 1, commit: index }),
        ..Default::default()
    }
}

#[test]
fn an_appender_refused_for_room_is_staged_as_soon_as_a_flush_takes_the_staged_bytes() {
    // room for one 9 KiB write at a time
    let opts = WalOptions { staged_bytes_max: 16 << 10, ..small_options() };
    let disk = MemDisk::new();
    let (wal, _) = open(&disk, opts);
    let gc = GroupCommit::new(wal);
    let mut run = pin!(gc.run());
    assert!(poll_up_to(run.as_mut(), POLLS).is_none(), "the writer waits for work once its spare is ready");

    let first = gc.append(1, write(1, 9 << 10)).expect("room for the first write");
    assert!(
        matches!(gc.append(2, write(1, 9 << 10)), Err(AppendError::Busy { .. })),
        "a second write does not fit beside the first"
    );

    disk.hold_syncs();
    let mut waiting = pin!(gc.append_when_room(2, write(1, 9 << 10)));
    let woken = Arc::new(Flag::default());
    let waker = Waker::from(woken.clone());
    let pending = waiting.as_mut().poll(&mut Context::from_waker(&waker));
    assert!(pending.is_pending(), "no room until a flush takes the staged bytes");
    // the writer takes the first write into a flush; its fdatasync is held
    assert!(poll_up_to(run.as_mut(), POLLS).is_none());
    assert!(gc.wal().durable_ticket() < first, "the first flush is still waiting for its fdatasync");
    assert!(woken.0.load(Ordering::SeqCst), "the flush that took the staged bytes wakes the waiting appender");
    let second = poll_up_to(waiting.as_mut(), POLLS)
        .expect("staged once the flush took the bytes, before that flush is durable")
        .expect("staged");
    assert!(second > first);

    disk.release_syncs();
    assert!(poll_up_to(run.as_mut(), POLLS).is_none(), "the writer goes on until stopped");
    assert!(gc.wal().durable_ticket() >= second, "both writes are durable once the disk answers");
    gc.stop();
    poll_up_to(run.as_mut(), POLLS).expect("run returns after stop").expect("a clean stop");
}

#[test]
fn an_appender_waiting_for_room_learns_of_a_failed_log_instead_of_waiting_forever() {
    let opts = WalOptions { staged_bytes_max: 16 << 10, ..small_options() };
    let disk = MemDisk::new();
    let (wal, _) = open(&disk, opts);
    let gc = GroupCommit::new(wal);
    let mut run = pin!(gc.run());
    assert!(poll_up_to(run.as_mut(), POLLS).is_none());
    gc.append(1, write(1, 9 << 10)).expect("room for the first write");
    disk.fail_syncs();
    let mut waiting = pin!(gc.append_when_room(2, write(1, 9 << 10)));
    assert!(poll_up_to(waiting.as_mut(), POLLS).is_none());
    let failed = poll_up_to(run.as_mut(), POLLS).expect("run returns the fatal error");
    assert!(failed.is_err(), "an fdatasync failure is fatal");
    let out = poll_up_to(waiting.as_mut(), POLLS).expect("the waiting appender is answered");
    assert!(matches!(out, Err(AppendError::Fatal(_))), "{out:?}");
}
