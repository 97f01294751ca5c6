//! The open-loop driver: appends arrive at a fixed rate whether or not the
//! log keeps up, as client requests do. A pacer stages every append that is
//! due (round-robin over the regions) and notes when it *should* have
//! started; a completer waits on the tickets in order (they become durable
//! in order) and records each latency from that intended start. A disk stall
//! therefore shows up in the percentiles instead of silently slowing the
//! sender down (coordinated omission).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use glommio::timer::sleep;
use glommio::Task;
use wal::Ticket;

use super::{region_id, stage_next, Phase, Shared};

/// How often the pacer wakes to stage what is due (measured here: a wake-up
/// every ~155 µs; what is due is staged as a burst at each one).
const PACER_TICK: Duration = Duration::from_micros(100);
/// Most appends staged and not yet durable: past it the rate is beyond what
/// the log sustains, and the run fails instead of queueing without bound.
const OUTSTANDING_MAX: usize = 1 << 20;

struct Pending {
    ticket: Ticket,
    slot: usize,
    index: u64,
    intended: Instant,
}

#[derive(Default)]
struct Queue {
    pending: RefCell<VecDeque<Pending>>,
    completer: RefCell<Option<Waker>>,
}

/// Starts the pacer and the completer; both end when the phase is `Stop`.
pub(super) fn spawn(s: Rc<Shared>, rate_per_sec: f64) -> Vec<Task<Result<(), String>>> {
    let q = Rc::new(Queue::default());
    vec![glommio::spawn_local(pacer(s.clone(), q.clone(), rate_per_sec)), glommio::spawn_local(completer(s, q))]
}

async fn pacer(s: Rc<Shared>, q: Rc<Queue>, rate_per_sec: f64) -> Result<(), String> {
    let start = Instant::now();
    let mut staged: u64 = 0;
    while s.phase.get() != Phase::Stop {
        let due = (start.elapsed().as_secs_f64() * rate_per_sec) as u64;
        while staged < due && s.phase.get() != Phase::Stop {
            if q.pending.borrow().len() >= OUTSTANDING_MAX {
                return Err(format!(
                    "{OUTSTANDING_MAX} appends wait for the disk: {rate_per_sec:.0}/s is more than the log sustains"
                ));
            }
            let slot = (staged % s.cfg.regions as u64) as usize;
            let intended = start + Duration::from_secs_f64(staged as f64 / rate_per_sec);
            let (ticket, index) = stage_next(&s, slot).await?;
            q.pending.borrow_mut().push_back(Pending { ticket, slot, index, intended });
            staged += 1;
        }
        if let Some(w) = q.completer.borrow_mut().take() {
            w.wake();
        }
        sleep(PACER_TICK).await;
    }
    if let Some(w) = q.completer.borrow_mut().take() {
        w.wake();
    }
    Ok(())
}

async fn completer(s: Rc<Shared>, q: Rc<Queue>) -> Result<(), String> {
    loop {
        // the oldest outstanding ticket, or wait for the pacer
        let next = poll_fn(|cx| match q.pending.borrow().front() {
            Some(p) => Poll::Ready(Some(p.ticket)),
            None if s.phase.get() == Phase::Stop => Poll::Ready(None),
            None => {
                *q.completer.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
        let Some(ticket) = next else { return Ok(()) };
        s.gc.wait(ticket).await.map_err(|e| e.to_string())?;
        let now = Instant::now();
        let durable = s.gc.wal().durable_ticket();
        loop {
            let p = {
                let mut pending = q.pending.borrow_mut();
                match pending.front() {
                    Some(p) if p.ticket <= durable => pending.pop_front().unwrap(),
                    _ => break,
                }
            };
            let counters = &s.regions[p.slot];
            counters.durable_index.set(counters.durable_index.get().max(p.index));
            s.gc.wal().release_cache(region_id(p.slot), p.index);
            if s.phase.get() == Phase::Measure {
                s.latency.borrow_mut().record(now.saturating_duration_since(p.intended));
                s.appends.set(s.appends.get() + 1);
            }
        }
    }
}
