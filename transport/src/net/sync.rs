//! Small single-threaded synchronisation primitives for the tasks of one
//! executor (no atomics; the engine's shard loop uses `Notify` too): a wake-one [`Notify`]
//! ("your queue has work"), a wake-all [`Event`] ("bytes were released"),
//! and a [`Latch`] ("shut down").
//!
//! A waiter that is dropped before it is woken (the usual fate of the losing
//! side of a `future::or`) removes its waker at once: a stored waker keeps
//! its task's allocation alive, and endpoints race a shutdown wait against
//! every connection they serve.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// Wakes one waiting task; a notification with no waiter is kept as a
/// permit, so none is lost between a check and a wait.
#[derive(Default)]
pub struct Notify {
    permit: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Notify {
    pub fn notify(&self) {
        self.permit.set(true);
        let waker = self.waker.borrow_mut().take();
        if let Some(w) = waker {
            w.wake();
        }
    }

    pub async fn wait(&self) {
        std::future::poll_fn(|cx| {
            if self.permit.replace(false) {
                Poll::Ready(())
            } else {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

/// Wakes every task waiting at the time of `notify_all`.
#[derive(Default)]
pub(crate) struct Event {
    /// Waiters by slot; a slot is freed when its waiter is woken or dropped.
    slots: RefCell<Vec<Option<Waker>>>,
    free: RefCell<Vec<usize>>,
    /// Bumped by every `notify_all`: a waiter that saw an older value proceeds.
    generation: Cell<u64>,
}

impl Event {
    pub fn notify_all(&self) {
        self.generation.set(self.generation.get() + 1);
        let wakers: Vec<Waker> = self.slots.borrow_mut().iter_mut().filter_map(Option::take).collect();
        for w in wakers {
            w.wake();
        }
    }

    /// Completes at the next `notify_all` after this call.
    pub fn listen(&self) -> Listen<'_> {
        Listen { event: self, seen: self.generation.get(), slot: None }
    }

    fn release(&self, slot: usize) {
        self.slots.borrow_mut()[slot] = None;
        self.free.borrow_mut().push(slot);
    }
}

pub(crate) struct Listen<'a> {
    event: &'a Event,
    seen: u64,
    slot: Option<usize>,
}

impl Future for Listen<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let event = self.event;
        if event.generation.get() != self.seen {
            if let Some(slot) = self.slot.take() {
                event.release(slot);
            }
            return Poll::Ready(());
        }
        match self.slot {
            Some(slot) => event.slots.borrow_mut()[slot] = Some(cx.waker().clone()),
            None => {
                let free = event.free.borrow_mut().pop();
                let mut slots = event.slots.borrow_mut();
                let slot = match free {
                    Some(s) => s,
                    None => {
                        slots.push(None);
                        slots.len() - 1
                    }
                };
                slots[slot] = Some(cx.waker().clone());
                self.slot = Some(slot);
            }
        }
        Poll::Pending
    }
}

impl Drop for Listen<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.event.release(slot);
        }
    }
}

/// Once set, every waiter, present and future, proceeds.
#[derive(Default)]
pub(crate) struct Latch {
    set: Cell<bool>,
    event: Event,
}

impl Latch {
    pub fn set(&self) {
        self.set.set(true);
        self.event.notify_all();
    }

    pub fn is_set(&self) -> bool {
        self.set.get()
    }

    pub async fn wait(&self) {
        while !self.set.get() {
            self.event.listen().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future;

    #[test]
    fn a_dropped_listener_gives_its_slot_back() {
        future::block_on(async {
            let e = Event::default();
            for _ in 0..1000 {
                // the losing side of a race: polled once, then dropped
                assert!(future::poll_once(e.listen()).await.is_none());
            }
            assert!(e.slots.borrow().len() <= 1, "{} slots kept", e.slots.borrow().len());
            let l = e.listen();
            e.notify_all();
            l.await; // notified after listen(): completes
        });
    }

    #[test]
    fn a_latch_releases_waiters_before_and_after_it_is_set() {
        future::block_on(async {
            let l = Latch::default();
            assert!(future::poll_once(l.wait()).await.is_none());
            l.set();
            l.wait().await;
            assert!(l.is_set());
        });
    }
}
