//! A wake-one notification with a permit (no wake-up lost between a check
//! and a wait), for the tasks of one shard's executor.

use std::cell::{Cell, RefCell};
use std::task::{Poll, Waker};

#[derive(Default)]
pub struct Wake {
    permit: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Wake {
    pub fn notify(&self) {
        self.permit.set(true);
        let w = self.waker.borrow_mut().take();
        if let Some(w) = w {
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
