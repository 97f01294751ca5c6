//! What an endpoint hands to its shard: raft messages as they arrived (one
//! item per frame, so the shard sees the sender's batching) and snapshots
//! whose data is already durable on this store's disk.

use std::path::PathBuf;

use glommio::channels::local_channel::{LocalReceiver, LocalSender};

use crate::envelope::{Envelope, RaftBatch};

#[derive(Debug)]
pub enum Incoming {
    /// Every message of one raft frame (checked; read in place).
    Raft { from_store: u64, batch: RaftBatch },
    /// A `MsgSnapshot` whose data was received, fsynced and verified at `path`.
    Snapshot { from_store: u64, envelope: Envelope, path: PathBuf, bytes: u64 },
}

/// The shard's end: bounded, so a shard that falls behind slows its senders
/// through TCP instead of growing memory.
pub struct Inbox {
    pub(crate) rx: LocalReceiver<Incoming>,
}

pub(crate) type InboxSender = LocalSender<Incoming>;

impl Inbox {
    /// Waits for the next item; `None` once the endpoint is shut down.
    pub async fn recv(&self) -> Option<Incoming> {
        self.rx.recv().await
    }

    /// Everything that has arrived, without waiting (the shard loop drains
    /// this once per iteration).
    pub async fn drain(&self) -> Vec<Incoming> {
        let mut out = vec![];
        while let Some(Some(item)) = futures_lite::future::poll_once(self.rx.recv()).await {
            out.push(item);
        }
        out
    }
}
