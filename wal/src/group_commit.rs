//! A ready-made driver for a [`Wal`] shared by many tasks of one executor:
//! appenders call `append` then `wait`; `run` is the writer, issuing one
//! flush at a time and preparing spare segments and purging beside it.
//!
//! There is no timer: a flush starts as soon as the previous one completes
//! and takes whatever was staged meanwhile, so batches grow with the load;
//! with nothing staged, the next flush is the one-block seal that
//! acknowledges the record before it (see `Wal::durable_ticket`).
//! Nothing here polls on a period either: an appender waiting for room, a
//! waiter for durability, the writer for a spare segment are each woken by
//! the event they wait for.
//!
//! A spare segment that cannot be prepared (a full disk, most often) is
//! tried again after a backoff counted in the owner's ticks ([`GroupCommit::tick`]:
//! the shard's raft tick, so the simulator's clock drives it as the
//! runtime's does) — 1, 2, 4 … up to `SPARE_RETRY_TICKS_MAX` — never in a
//! loop. Meanwhile writes fit until the active segment fills, then wait;
//! [`GroupCommit::disk_full`] says so, and once space is freed the next
//! try succeeds and the waiting writes go out. Nothing written is lost.
//!
//! The engine's shards persist through it (under the glommio runtime and
//! under the simulator alike), as do the WAL benchmark and the tests.

use std::cell::{Cell, RefCell, RefMut};
use std::collections::{BTreeMap, VecDeque};
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

use crate::disk::Disk;
use crate::error::{AppendError, FatalError};
use crate::wal::{FlushStart, PurgeJob, Wal};
use crate::{RegionId, RegionWrite, Ticket};

/// The longest wait between two tries to prepare a spare segment, in the
/// owner's ticks (at the engine's 100 ms tick: 5 s).
pub const SPARE_RETRY_TICKS_MAX: u64 = 50;

/// Turns of the executor a writer with only a seal to write lets pass
/// first (`writer`): the woken persist task, the shard loop it wakes and
/// the persist task that appends the next batch.
const SEAL_YIELDS: usize = 4;

/// Wakes every task waiting on a condition when something changed.
#[derive(Default)]
struct Event {
    wakers: RefCell<Vec<Waker>>,
}

impl Event {
    fn notify(&self) {
        for w in self.wakers.borrow_mut().drain(..) {
            w.wake();
        }
    }

    async fn wait_until(&self, mut cond: impl FnMut() -> bool) {
        poll_fn(|cx| {
            if cond() {
                Poll::Ready(())
            } else {
                register(&mut self.wakers.borrow_mut(), cx.waker());
                Poll::Pending
            }
        })
        .await
    }
}

/// Adds a waker unless the same task is already registered: a task polled
/// again before the event fires must not pile up clones (the writer and the
/// maintainer share one task, so every wake polls both).
fn register(wakers: &mut Vec<Waker>, waker: &Waker) {
    if !wakers.iter().any(|w| w.will_wake(waker)) {
        wakers.push(waker.clone());
    }
}

struct Shared<D: Disk> {
    wal: RefCell<Wal<D>>,
    /// Something was staged, a spare arrived, or stop was asked.
    writer: Event,
    /// A flush took staged bytes (appenders refused as `Busy` may fit now),
    /// or the log failed.
    room: Event,
    /// Appenders waiting for their ticket, by ticket: a flush wakes only the
    /// ones it made durable.
    /// Keyed by (ticket, waiter): one entry per waiting call, replaced when
    /// it is polled again.
    durable_waiters: RefCell<BTreeMap<(Ticket, u64), Waker>>,
    /// Likewise, appenders waiting for their ticket to be on disk.
    written_waiters: RefCell<BTreeMap<(Ticket, u64), Waker>>,
    next_waiter: Cell<u64>,
    /// The writer wants a spare segment or a purge.
    maintainer: Event,
    stopping: Cell<bool>,
    /// The writer returned: the maintainer finishes its queue and returns too.
    writer_done: Cell<bool>,
    purge_wanted: Cell<bool>,
    /// Purges planned by the writer, run by the maintainer.
    purge_jobs: RefCell<VecDeque<PurgeJob<D>>>,
    /// The last purge plan's regions pinning old segments, with the segment
    /// each pins and the segment being written then (for `take_blocking`).
    blocking: RefCell<(Vec<(RegionId, u64)>, u64)>,
    /// The owner's ticks so far, and the tick from which a failed spare
    /// segment may be tried again.
    ticks: Cell<u64>,
    spare_retry_tick: Cell<u64>,
}

/// A cloneable handle to a group-committing log.
pub struct GroupCommit<D: Disk>(Rc<Shared<D>>);

impl<D: Disk> Clone for GroupCommit<D> {
    fn clone(&self) -> Self {
        GroupCommit(self.0.clone())
    }
}

impl<D: Disk> GroupCommit<D> {
    pub fn new(wal: Wal<D>) -> Self {
        GroupCommit(Rc::new(Shared {
            wal: RefCell::new(wal),
            writer: Event::default(),
            room: Event::default(),
            durable_waiters: RefCell::new(BTreeMap::new()),
            written_waiters: RefCell::new(BTreeMap::new()),
            next_waiter: Cell::new(0),
            maintainer: Event::default(),
            stopping: Cell::new(false),
            writer_done: Cell::new(false),
            purge_wanted: Cell::new(false),
            purge_jobs: RefCell::new(VecDeque::new()),
            blocking: RefCell::new((vec![], 0)),
            ticks: Cell::new(0),
            spare_retry_tick: Cell::new(0),
        }))
    }

    /// One of the owner's ticks passed: a spare segment that failed is
    /// tried again once its backoff is over.
    pub fn tick(&self) {
        let s = &self.0;
        s.ticks.set(s.ticks.get() + 1);
        if s.ticks.get() == s.spare_retry_tick.get() {
            s.maintainer.notify();
        }
    }

    /// Whether the log waits for disk space to move to a new segment
    /// (`Wal::disk_full`).
    pub fn disk_full(&self) -> bool {
        self.0.wal.borrow().disk_full()
    }

    /// The regions the last purge found pinning old segments, as (region,
    /// segment it pins), and the segment being written then; taken once.
    /// The owner of the regions asks them to compact (docs/design.md, "The write-ahead log").
    pub fn take_blocking(&self) -> (Vec<(RegionId, u64)>, u64) {
        std::mem::take(&mut *self.0.blocking.borrow_mut())
    }

    /// Stages a write; it goes out with the next flush.
    pub fn append(&self, region: RegionId, write: RegionWrite) -> Result<Ticket, AppendError> {
        let t = self.0.wal.borrow_mut().append(region, write)?;
        self.0.writer.notify();
        Ok(t)
    }

    /// Stages a write as `append` does, first waiting — without a timer —
    /// until the bytes already staged leave it room (a flush took them).
    /// Any other refusal is returned at once.
    pub async fn append_when_room(&self, region: RegionId, write: RegionWrite) -> Result<Ticket, AppendError> {
        let s = &self.0;
        s.room
            .wait_until(|| {
                let w = s.wal.borrow();
                w.has_room_for(&write) || w.fatal().is_some()
            })
            .await;
        self.append(region, write)
    }

    /// Waits until `ticket` is durable: acknowledged (a record after its
    /// own is on disk).
    pub async fn wait(&self, ticket: Ticket) -> Result<(), FatalError> {
        self.wait_for(ticket, Wal::durable_ticket, &self.0.durable_waiters).await
    }

    /// Waits until `ticket` is on disk, not yet acknowledged: what a
    /// caller that orders its own writes (the shard's persist batches)
    /// waits for before it appends the next, which acknowledges it.
    pub async fn wait_written(&self, ticket: Ticket) -> Result<(), FatalError> {
        self.wait_for(ticket, Wal::written_ticket, &self.0.written_waiters).await
    }

    async fn wait_for(
        &self,
        ticket: Ticket,
        reached: fn(&Wal<D>) -> Ticket,
        waiters: &RefCell<BTreeMap<(Ticket, u64), Waker>>,
    ) -> Result<(), FatalError> {
        let s = &self.0;
        let waiter = s.next_waiter.replace(s.next_waiter.get() + 1);
        poll_fn(|cx| {
            let w = s.wal.borrow();
            if reached(&w) >= ticket {
                Poll::Ready(Ok(()))
            } else if let Some(f) = w.fatal() {
                Poll::Ready(Err(f.clone()))
            } else {
                waiters.borrow_mut().insert((ticket, waiter), cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }

    /// Wakes the appenders whose tickets are now on disk or durable (all,
    /// on failure).
    fn wake_durable(&self) {
        let s = &self.0;
        let (written, durable, failed) = {
            let w = s.wal.borrow();
            (w.written_ticket(), w.durable_ticket(), w.fatal().is_some())
        };
        for (waiters, upto) in [(&s.written_waiters, written), (&s.durable_waiters, durable)] {
            let ready = {
                let mut waiters = waiters.borrow_mut();
                if failed {
                    std::mem::take(&mut *waiters)
                } else {
                    let later = waiters.split_off(&(upto + 1, 0));
                    std::mem::replace(&mut *waiters, later)
                }
            };
            for w in ready.into_values() {
                w.wake();
            }
        }
    }

    /// Direct access for reads and state queries. Do not hold it across an await.
    pub fn wal(&self) -> RefMut<'_, Wal<D>> {
        self.0.wal.borrow_mut()
    }

    /// Asks `run` to return once everything staged is durable — or at once
    /// when the log waits for a segment a full disk could not give: what
    /// is staged then was never acknowledged, and stays unwritten.
    pub fn stop(&self) {
        self.0.stopping.set(true);
        self.0.writer.notify();
        self.0.maintainer.notify();
    }

    /// Asks for a purge after the next flush.
    pub fn request_purge(&self) {
        self.0.purge_wanted.set(true);
        self.0.writer.notify();
    }

    /// The writer and the segment maintainer; returns after `stop` (Ok) or
    /// a failed write or fdatasync (the error, which is fatal).
    pub async fn run(&self) -> Result<(), FatalError> {
        let (w, _) = futures_lite::future::zip(self.writer(), self.maintainer()).await;
        w
    }

    async fn writer(&self) -> Result<(), FatalError> {
        let s = &self.0;
        // A purge planned after a flush runs only once the next flush is on
        // disk too: the plan reads the state after the last record written,
        // which is acknowledged — and safe to rely on — only then (a last
        // record may be cut at recovery, and with it what let segments go).
        let mut planned: Option<PurgeJob<D>> = None;
        let result = loop {
            s.writer
                .wait_until(|| {
                    let w = s.wal.borrow();
                    w.wants_flush() || s.stopping.get() || (s.purge_wanted.get() && planned.is_none())
                })
                .await;
            if !s.wal.borrow().has_staged() && !s.stopping.get() {
                // Only a seal is due. Let the tasks the last flush woke run
                // first: one that orders its writes (the shard's persist
                // batches) appends its next batch once the last is written,
                // and that batch is then the record that acknowledges it — no
                // seal. A few turns of the executor, no timer.
                for _ in 0..SEAL_YIELDS {
                    futures_lite::future::yield_now().await;
                    if s.wal.borrow().has_staged() {
                        break;
                    }
                }
            }
            let start = s.wal.borrow_mut().start_flush();
            match start {
                FlushStart::Idle => {
                    // stopping waits for the seal too: what it acknowledges is answered
                    if s.stopping.get() && !s.wal.borrow().wants_flush() && !s.purge_wanted.get() {
                        break Ok(());
                    }
                }
                FlushStart::NeedSpare => {
                    s.maintainer.notify();
                    let gave_up = || s.stopping.get() && s.wal.borrow().spare_failure().is_some();
                    s.writer
                        .wait_until(|| s.wal.borrow().has_spare() || s.wal.borrow().fatal().is_some() || gave_up())
                        .await;
                    if gave_up() && !s.wal.borrow().has_spare() {
                        // a stop on a full disk: what is staged was never
                        // acknowledged, and stays unwritten
                        tracing::warn!("stopping with writes staged that no segment could take (the disk is full)");
                        break Ok(());
                    }
                }
                FlushStart::Flush(f) => {
                    s.room.notify(); // the flush took what was staged
                    let rolled = f.offset == crate::format::SEGMENT_HEADER_BYTES as u64;
                    let r = f.execute().await;
                    let r = s.wal.borrow_mut().finish_flush(r);
                    self.wake_durable();
                    if let Err(e) = r {
                        s.room.notify(); // appenders waiting for room learn of the failure

                        break Err(e);
                    }
                    if rolled {
                        s.maintainer.notify(); // the spare was used: prepare the next one
                        s.purge_wanted.set(true);
                    }
                    if let Some(job) = planned.take() {
                        s.purge_jobs.borrow_mut().push_back(job);
                        s.maintainer.notify();
                    }
                }
            }
            // Between flushes the log's state is the written one: plan the
            // purge here, run its renames once the next flush is done.
            if s.purge_wanted.get() && planned.is_none() && !s.wal.borrow().flush_in_flight() {
                s.purge_wanted.set(false);
                let (job, blocking) = {
                    let mut wal = s.wal.borrow_mut();
                    let mut plan = wal.purge();
                    let active = wal.segment_seqs().last().copied().unwrap_or(0);
                    (plan.take_job(), (std::mem::take(&mut plan.blocking), active))
                };
                *s.blocking.borrow_mut() = blocking;
                let sealed = {
                    let w = s.wal.borrow();
                    w.durable_ticket() == w.written_ticket()
                };
                match job {
                    // (held, a next flush is sure to come: the seal at least)
                    Some(job) if !sealed => planned = Some(job),
                    Some(job) => {
                        s.purge_jobs.borrow_mut().push_back(job);
                        s.maintainer.notify();
                    }
                    None => {}
                }
            }
        };
        s.stopping.set(true);
        s.writer_done.set(true);
        s.maintainer.notify();
        self.wake_durable();
        result
    }

    async fn maintainer(&self) {
        let s = &self.0;
        loop {
            s.maintainer
                .wait_until(|| {
                    let spare_due = s.wal.borrow().wants_spare() && s.ticks.get() >= s.spare_retry_tick.get();
                    spare_due || !s.purge_jobs.borrow().is_empty() || s.writer_done.get()
                })
                .await;
            let purge = s.purge_jobs.borrow_mut().pop_front();
            if let Some(job) = purge {
                let r = job.run().await;
                if let Err(e) = s.wal.borrow_mut().purge_done(r) {
                    tracing::warn!(error = %e, "WAL purge failed; the segments are purged again at the next open");
                }
                continue;
            }
            if s.writer_done.get() {
                return;
            }
            if s.ticks.get() < s.spare_retry_tick.get() {
                continue; // (woken for a purge; the spare's backoff is not over)
            }
            let job = s.wal.borrow_mut().spare_job();
            if let Some(job) = job {
                // Once the writer has returned nobody will write to this spare:
                // its zero-fill (a write and an fdatasync per MiB of segment) is
                // abandoned rather than finished — on a disk in a slow spell it
                // held a stopping store for tens of seconds. What it leaves — a
                // half-filled `.tmp`, a recycled `.free` with a new header, or a
                // header-only segment if its rename was already running — is
                // what a crash at that point leaves, and the next open deals
                // with each. (Purges already planned still run: a few renames.)
                let finished = futures_lite::future::or(async { Some(job.run().await) }, async {
                    s.maintainer.wait_until(|| s.writer_done.get()).await;
                    None
                })
                .await;
                let Some(r) = finished else { continue };
                let failed = s.wal.borrow_mut().add_spare(r).err();
                if let Some(e) = failed {
                    let attempts = s.wal.borrow().spare_failure().map_or(1, |f| f.attempts);
                    let wait = (1u64 << (attempts - 1).min(16)).min(SPARE_RETRY_TICKS_MAX);
                    s.spare_retry_tick.set(s.ticks.get() + wait);
                    let full = if e.is_disk_full() {
                        " (the disk is full: writes wait once the active segment fills)"
                    } else {
                        ""
                    };
                    tracing::warn!(error = %e, attempts, "preparing a WAL segment failed{full}; trying again in {wait} ticks");
                }
                s.writer.notify();
            }
        }
    }
}
