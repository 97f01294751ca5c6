//! The same promises on real files through glommio: O_DIRECT writes, DMA
//! reads, group commit across concurrent appenders, restart and purge; and
//! the buffered fallback on a file system without O_DIRECT.

mod common;

use std::path::Path;
use std::rc::Rc;

use bytes::Bytes;
use common::small_options;
use glommio::{LocalExecutorBuilder, Placement};
use wal::disk::{GlommioDisk, WriteMode};
use wal::{Entry, GroupCommit, HardState, RegionWrite, Wal};

const REGIONS: u64 = 8;
const ENTRIES_PER_REGION: u64 = 60;

fn on_executor<T: Send + 'static>(f: impl AsyncFnOnce() -> T + Send + 'static) -> T {
    LocalExecutorBuilder::new(Placement::Unbound).spawn(move || async move { f().await }).unwrap().join().unwrap()
}

fn payload(region: u64, index: u64) -> Bytes {
    Bytes::from(format!("region {region} entry {index} ").repeat(1 + (index % 7) as usize))
}

/// REGIONS tasks append concurrently, each waiting for durability before the
/// next append; every region compacts behind itself so purge has work.
async fn write_concurrently(dir: &Path) -> wal::WalStats {
    let disk = GlommioDisk::open(dir).await.unwrap();
    let (wal, _) = Wal::open(disk, small_options()).await.unwrap();
    let gc = GroupCommit::new(wal);
    let writer = glommio::spawn_local({
        let gc = gc.clone();
        async move { gc.run().await }
    });
    let mut tasks = vec![];
    for region in 0..REGIONS {
        let gc = gc.clone();
        tasks.push(glommio::spawn_local(async move {
            for index in 1..=ENTRIES_PER_REGION {
                let entry = Entry { index, term: 2, entry_type: 0, data: payload(region, index) };
                let hs = HardState { term: 2, vote: region, commit: index };
                let w = RegionWrite { entries: vec![entry], hard_state: Some(hs), ..Default::default() };
                let t = gc.append(region, w).unwrap();
                gc.wait(t).await.unwrap();
                gc.wal().release_cache(region, index);
                if index % 20 == 0 && (region % 2 == 0 || index == ENTRIES_PER_REGION) {
                    // even regions keep only their last 10 entries as they go,
                    // odd ones compact once at the end
                    gc.wal().compact_to(region, index - 10).unwrap();
                    gc.request_purge();
                }
            }
        }));
    }
    for t in tasks {
        t.await;
    }
    gc.stop();
    writer.await.unwrap();
    let stats = gc.wal().stats().clone();
    stats
}

#[test]
fn concurrent_appends_survive_restart_and_purge_on_real_files() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().to_path_buf();
    let stats = on_executor({
        let path = path.clone();
        async move || write_concurrently(&path).await
    });
    assert_eq!(stats.writes_flushed, REGIONS * ENTRIES_PER_REGION + REGIONS / 2 * 3 + REGIONS / 2);
    assert!(stats.segment_rolls >= 2, "small segments roll: {stats:?}");
    assert!(stats.segments_recycled + stats.segments_removed > 0, "purge recycled segments: {stats:?}");

    let reopened = on_executor(async move || {
        let disk = GlommioDisk::open(&path).await.unwrap();
        assert_eq!(disk.mode(), WriteMode::Direct, "the test directory supports O_DIRECT");
        let (wal, report) = Wal::open(disk, small_options()).await.unwrap();
        assert_eq!(report.torn_tail, None);
        let mut seen = vec![];
        for region in 0..REGIONS {
            let first = wal.first_index(region).unwrap();
            let last = wal.last_index(region).unwrap();
            assert_eq!(last, ENTRIES_PER_REGION);
            assert_eq!(first, ENTRIES_PER_REGION - 10);
            assert_eq!(wal.hard_state(region), Some(HardState { term: 2, vote: region, commit: last }));
            // DMA reads: these fail with EOPNOTSUPP if glommio's probe bug bites
            let mut got = vec![];
            while got.len() < (last - first + 1) as usize {
                let from = first + got.len() as u64;
                let job = wal.fetch(region, from, last + 1, 4096).unwrap();
                got.extend(job.run().await.unwrap());
            }
            for e in &got {
                assert_eq!(e.data, payload(region, e.index), "region {region} entry {}", e.index);
            }
            seen.push(got.len());
        }
        seen
    });
    assert_eq!(reopened.iter().sum::<usize>() as u64, REGIONS * 11);
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().to_path_buf();
    let err = on_executor(async move || {
        let _first = GlommioDisk::open(&path).await.unwrap();
        GlommioDisk::open(&path).await.err().map(|e| e.to_string())
    });
    let err = err.expect("second open fails");
    assert!(err.contains("locked by another process"), "{err}");
}

#[test]
fn buffered_writes_with_fdatasync_work_where_o_direct_is_missing() {
    // tmpfs gained O_DIRECT in Linux 6.6, so the fallback is forced here;
    // `GlommioDisk::open` picks it by itself when O_DIRECT gives EINVAL.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().to_path_buf();
    let (mode, last) = on_executor(async move || {
        let disk = GlommioDisk::open_with_mode(&path, WriteMode::Buffered).await.unwrap();
        let mode = disk.mode();
        let (wal, _) = Wal::open(disk, small_options()).await.unwrap();
        let gc = Rc::new(GroupCommit::new(wal));
        let writer = glommio::spawn_local({
            let gc = gc.clone();
            async move { gc.run().await }
        });
        for index in 1..=40 {
            let e = Entry { index, term: 1, entry_type: 0, data: Bytes::from(vec![7u8; 3000]) };
            let t = gc.append(5, RegionWrite { entries: vec![e], ..Default::default() }).unwrap();
            gc.wait(t).await.unwrap();
        }
        gc.stop();
        writer.await.unwrap();
        drop(gc);
        let disk = GlommioDisk::open_with_mode(&path, WriteMode::Buffered).await.unwrap();
        let (wal, _) = Wal::open(disk, small_options()).await.unwrap();
        let job = wal.fetch(5, 1, 41, u64::MAX).unwrap();
        assert!(job.run().await.unwrap().iter().all(|e| e.data.len() == 3000));
        (mode, wal.last_index(5))
    });
    assert_eq!(mode, WriteMode::Buffered);
    assert_eq!(last, Some(40));
}

/// Regression: every wake of the writer also polled the idle maintainer (they
/// share one task), and each poll registered one more clone of the task's
/// waker; glommio counts a task's wakers in an i16 and panicked ("Waker
/// invariant broken") after ~32k flushes without a segment roll. A waiter
/// now registers once. 20,000 one-append flushes, one at a time, each with
/// its seal: 40,000 flushes.
#[test]
fn many_flushes_without_a_roll_do_not_pile_up_wakers() {
    const APPENDS: u64 = 20_000;
    let durable = on_executor(async move || {
        let disk = wal::disk::MemDisk::new();
        // one segment holds every flush: no roll resets anything
        let opts = wal::WalOptions { segment_bytes: 256 << 20, ..small_options() };
        let (wal, _) = Wal::open(disk, opts).await.unwrap();
        let gc = GroupCommit::new(wal);
        let writer = glommio::spawn_local({
            let gc = gc.clone();
            async move { gc.run().await }
        });
        for index in 1..=APPENDS {
            let e = Entry { index, term: 1, entry_type: 0, data: Bytes::from_static(b"x") };
            let t = gc.append(1, RegionWrite { entries: vec![e], ..Default::default() }).unwrap();
            gc.wait(t).await.unwrap();
            gc.wal().release_cache(1, index);
        }
        gc.stop();
        writer.await.unwrap();
        let w = gc.wal();
        (w.durable_ticket(), w.stats().flushes)
    });
    assert_eq!(durable, (wal::RECOVERED_TICKET + APPENDS, 2 * APPENDS));
}
