//! What an endpoint hands to its shard: raft messages as they arrived (one
//! item per frame, so the shard sees the sender's batching) and snapshots
//! whose data is already durable on this store's disk.

use std::path::PathBuf;
use std::rc::Rc;

use glommio::channels::local_channel::{LocalReceiver, LocalSender};

use crate::envelope::{Envelope, RaftBatch};
use crate::net::endpoint::Inner;

#[derive(Debug)]
pub enum Incoming {
    /// Every message of one raft frame (checked; read in place).
    Raft { from_store: u64, batch: RaftBatch },
    /// A `MsgSnapshot` whose data was received, fsynced and verified at `path`.
    Snapshot { from_store: u64, envelope: Envelope, path: PathBuf, bytes: u64 },
}

impl Incoming {
    /// Memory it holds (a raft frame's payload; a snapshot is on disk).
    pub fn bytes(&self) -> usize {
        match self {
            Incoming::Raft { batch, .. } => batch.payload_bytes(),
            Incoming::Snapshot { .. } => 0,
        }
    }
}

/// The shard's end: bounded in frames and bytes, so a shard that falls
/// behind slows its senders through TCP instead of growing memory.
pub struct Inbox {
    pub(crate) rx: LocalReceiver<Incoming>,
    pub(crate) inner: Rc<Inner>,
}

pub(crate) type InboxSender = LocalSender<Incoming>;

impl Inbox {
    fn taken(&self, item: Incoming) -> Incoming {
        let inner = &self.inner;
        inner.inbox_bytes.set(inner.inbox_bytes.get() - item.bytes());
        inner.inbox_space.notify_all();
        item
    }

    /// Waits for the next item; `None` once the endpoint is shut down.
    pub async fn recv(&self) -> Option<Incoming> {
        let item = futures_lite::future::or(self.rx.recv(), async {
            self.inner.shutdown.wait().await;
            None
        })
        .await?;
        Some(self.taken(item))
    }

    /// Everything that has arrived, without waiting (the shard loop drains
    /// this once per iteration).
    pub async fn drain(&self) -> Vec<Incoming> {
        let mut out = vec![];
        while let Some(Some(item)) = futures_lite::future::poll_once(self.rx.recv()).await {
            out.push(self.taken(item));
        }
        out
    }
}
