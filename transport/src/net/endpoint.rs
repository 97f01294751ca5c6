//! One shard's endpoint: it listens on the shard's peer port, keeps one
//! outgoing connection per destination (store, shard), and hands what
//! arrives to the shard through its [`Inbox`].
//!
//! The shard never waits on the network: [`Endpoint::send`] queues frames
//! and returns at once; a frame that cannot be queued (the destination's
//! queue is over its byte bound, its link is down and backing off, or its
//! address is unknown) is dropped, and its regions are collected for
//! [`Endpoint::take_unreachable`] so the shard can call raft's
//! `report_unreachable` (raft then probes and retransmits).
//!
//! All tasks of an endpoint run on the executor that started it and share
//! its state through `Rc<RefCell<…>>`; nothing here is `Send`.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Instant;

use glommio::channels::local_channel;

use crate::envelope::Envelope;
use crate::faults::{FaultStats, Faults};
use crate::net::config::{ConfigError, EndpointConfig};
use crate::net::inbox::{Inbox, InboxSender};
use crate::net::stats::TransportStats;
use crate::net::sync::{Event, Latch, Notify};
use crate::net::{accept, link, snapshot_recv, snapshot_send, socket};
use crate::outbox::{Destination, FlushedFrame};

/// Why an endpoint did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: io::Error },
    #[error("create snapshot directory {path}: {source}")]
    SnapshotDir { path: PathBuf, source: io::Error },
    #[error("remove partial snapshot files in {path}: {source}")]
    SweepSnapshotDir { path: PathBuf, source: io::Error },
}

/// How a snapshot send ended, for raft's `report_snapshot`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotReport {
    pub snapshot_id: u64,
    pub region_id: u64,
    pub to_peer: u64,
    pub to: Destination,
    /// `Ok`: stored and verified by the receiver. `Err`: why not.
    pub outcome: Result<(), String>,
}

/// Sending state of one destination.
pub(crate) struct Link {
    pub queue: VecDeque<FlushedFrame>,
    /// Bytes queued or being written: the bound is on this.
    pub queued_bytes: usize,
    /// Backing off after a failure: frames are dropped until then.
    pub down_until: Option<Instant>,
    pub notify: Rc<Notify>,
}

pub(crate) struct Inner {
    pub config: EndpointConfig,
    pub local_addr: SocketAddr,
    pub addresses: RefCell<HashMap<Destination, SocketAddr>>,
    pub links: RefCell<BTreeMap<Destination, Link>>,
    pub unreachable: RefCell<BTreeMap<Destination, BTreeSet<u64>>>,
    pub stats: RefCell<TransportStats>,
    pub inbox: InboxSender,
    pub shutdown: Latch,
    pub faults: Option<RefCell<Faults<FlushedFrame>>>,
    pub faults_notify: Notify,
    /// Notified whenever queued bytes are released (see `wait_queued_below`).
    pub drained: Event,
    /// Payload bytes in the inbox, and the event of their release.
    pub inbox_bytes: Cell<usize>,
    pub inbox_space: Event,
    /// Names received snapshot files uniquely: this process's start and a counter.
    pub snapshot_file_nonce: u64,
    pub snapshot_files: Cell<u64>,
    pub snapshot_reports: RefCell<Vec<SnapshotReport>>,
    pub next_snapshot_id: Cell<u64>,
    pub snapshots_sending: Cell<usize>,
    pub snapshots_receiving: Cell<usize>,
    pub connections: Cell<usize>,
    /// Buffers of frames written since the shard last took them (bounded).
    pub spent: RefCell<Vec<Vec<u8>>>,
}

impl Inner {
    /// Keeps a written frame's buffer for the shard to reuse.
    pub fn spend(&self, frame: FlushedFrame) {
        let mut spent = self.spent.borrow_mut();
        if spent.len() < crate::outbox::SPARE_BUFFERS_MAX
            && frame.bytes.capacity() <= crate::outbox::SPARE_BUFFER_BYTES_MAX
        {
            spent.push(frame.bytes);
        }
    }

    /// Drops a frame that will not be sent and remembers its regions.
    pub fn drop_frame(&self, frame: &FlushedFrame, why: &'static str) {
        let mut s = self.stats.borrow_mut();
        *s.frames_dropped.entry(why).or_default() += 1;
        s.messages_dropped += frame.messages as u64;
        self.unreachable.borrow_mut().entry(frame.to).or_default().extend(frame.regions.iter().copied());
    }

    /// Queues a frame on its destination's link, or drops it.
    pub fn enqueue(self: &Rc<Self>, frame: FlushedFrame) {
        if self.shutdown.is_set() {
            return self.drop_frame(&frame, "shutdown");
        }
        if !self.addresses.borrow().contains_key(&frame.to) {
            return self.drop_frame(&frame, "no_address");
        }
        if !self.links.borrow().contains_key(&frame.to) {
            let notify = Rc::new(Notify::default());
            let link = Link { queue: VecDeque::new(), queued_bytes: 0, down_until: None, notify: notify.clone() };
            self.links.borrow_mut().insert(frame.to, link);
            // glommio may run a new task right away, inside this call: no borrow may be held here
            glommio::spawn_local(link::run(self.clone(), frame.to, notify)).detach();
        }
        let mut links = self.links.borrow_mut();
        let link = links.get_mut(&frame.to).expect("inserted above");
        if link.down_until.is_some_and(|t| Instant::now() < t) {
            drop(links);
            return self.drop_frame(&frame, "link_down");
        }
        if link.queued_bytes + frame.bytes.len() > self.config.connection_queued_bytes_max {
            drop(links);
            return self.drop_frame(&frame, "queue_full");
        }
        link.queued_bytes += frame.bytes.len();
        link.queue.push_back(frame);
        link.notify.notify();
    }
}

/// A shard's transport endpoint. Dropping it does not stop its tasks; call
/// [`Endpoint::shutdown`].
pub struct Endpoint {
    pub(crate) inner: Rc<Inner>,
}

impl Endpoint {
    /// Binds the listener and starts accepting. Must run inside a glommio executor.
    pub fn start(config: EndpointConfig) -> Result<(Endpoint, Inbox), StartError> {
        config.validate()?;
        std::fs::create_dir_all(&config.snapshot_dir)
            .map_err(|source| StartError::SnapshotDir { path: config.snapshot_dir.clone(), source })?;
        snapshot_recv::sweep_partial_files(&config.snapshot_dir)
            .map_err(|source| StartError::SweepSnapshotDir { path: config.snapshot_dir.clone(), source })?;
        let listener =
            socket::listen(config.listen).map_err(|source| StartError::Listen { addr: config.listen, source })?;
        let nonce =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_micros() as u64);
        let local_addr =
            listener.local_addr().map_err(|e| StartError::Listen { addr: config.listen, source: e.into() })?;
        let (tx, rx) = local_channel::new_bounded(config.inbox_frames_max);
        let faults = config.faults.clone().map(|f| RefCell::new(Faults::new(f)));
        let inner = Rc::new(Inner {
            local_addr,
            addresses: RefCell::default(),
            links: RefCell::default(),
            unreachable: RefCell::default(),
            stats: RefCell::default(),
            inbox: tx,
            shutdown: Latch::default(),
            faults,
            faults_notify: Notify::default(),
            drained: Event::default(),
            inbox_bytes: Cell::new(0),
            inbox_space: Event::default(),
            snapshot_file_nonce: nonce,
            snapshot_files: Cell::new(0),
            snapshot_reports: RefCell::default(),
            // ids differ across restarts too, so a receiver never mistakes a new stream for an old one
            next_snapshot_id: Cell::new(nonce),
            snapshots_sending: Cell::new(0),
            snapshots_receiving: Cell::new(0),
            connections: Cell::new(0),
            spent: RefCell::default(),
            config,
        });
        glommio::spawn_local(accept::run(inner.clone(), listener)).detach();
        if inner.faults.is_some() {
            glommio::spawn_local(link::release_faulty(inner.clone())).detach();
        }
        Ok((Endpoint { inner: inner.clone() }, Inbox { rx, inner }))
    }

    /// The address it listens on (the real port when started with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// Where a destination listens (from the cluster spec or PD). A changed
    /// address makes the link reconnect before its next write.
    pub fn set_address(&self, to: Destination, addr: SocketAddr) {
        self.inner.addresses.borrow_mut().insert(to, addr);
    }

    /// Queues frames from `Outboxes::flush`; never waits. A frame that cannot
    /// be queued is dropped and its regions reported by `take_unreachable`.
    pub fn send(&self, mut frames: Vec<FlushedFrame>) {
        let before = frames.len();
        if crate::injected::any_cut() {
            let cut = crate::injected::cut_stores();
            frames.retain(|f| !cut.contains(&f.to.store_id));
        }
        if frames.len() < before {
            // (counted like any drop; the shard's raft retries once healed)
            *self.inner.stats.borrow_mut().frames_dropped.entry("injected_cut").or_default() +=
                (before - frames.len()) as u64;
        }
        match &self.inner.faults {
            None => frames.into_iter().for_each(|f| self.inner.enqueue(f)),
            Some(faults) => {
                // one clock reading per call: the seed alone decides the order within it
                let now = Instant::now();
                let mut faults = faults.borrow_mut();
                for frame in frames {
                    let to_store = frame.to.store_id;
                    faults.send(now, self.inner.config.store_id, to_store, frame);
                }
                self.inner.faults_notify.notify();
            }
        }
    }

    /// Buffers of frames written since the last call: the shard builds its
    /// next frames in them (`Outboxes::recycle`) instead of in fresh memory.
    pub fn take_spent_buffers(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut *self.inner.spent.borrow_mut())
    }

    /// Regions whose messages were dropped since the last call, by destination.
    pub fn take_unreachable(&self) -> BTreeMap<Destination, BTreeSet<u64>> {
        std::mem::take(&mut *self.inner.unreachable.borrow_mut())
    }

    /// Streams the snapshot file at `path` to `to` on its own connection;
    /// `envelope` carries the `MsgSnapshot`, which the receiver hands to its
    /// shard only after the file is durable and verified. The outcome comes
    /// back through `take_snapshot_reports`. Returns the snapshot's id.
    pub fn send_snapshot(&self, to: Destination, envelope: Envelope, path: PathBuf) -> u64 {
        let id = self.inner.next_snapshot_id.get();
        self.inner.next_snapshot_id.set(id + 1);
        glommio::spawn_local(snapshot_send::run(self.inner.clone(), id, to, envelope, path)).detach();
        id
    }

    /// Snapshot sends that ended since the last call.
    pub fn take_snapshot_reports(&self) -> Vec<SnapshotReport> {
        std::mem::take(&mut *self.inner.snapshot_reports.borrow_mut())
    }

    pub fn stats(&self) -> TransportStats {
        self.inner.stats.borrow().clone()
    }

    /// Bytes queued for a destination and not yet written.
    pub fn queued_bytes(&self, to: Destination) -> usize {
        self.inner.links.borrow().get(&to).map_or(0, |l| l.queued_bytes)
    }

    /// Waits until at most `bytes` are queued for `to`. For senders that may
    /// wait (benchmarks, bulk tools) — the shard loop never does; it relies on
    /// the bound and the unreachable reports instead.
    pub async fn wait_queued_below(&self, to: Destination, bytes: usize) {
        while self.queued_bytes(to) > bytes && !self.inner.shutdown.is_set() {
            let released = self.inner.drained.listen();
            futures_lite::future::or(released, self.inner.shutdown.wait()).await;
        }
    }

    /// Cuts (or heals) the link between this store and another, if the
    /// endpoint was started with faults. Returns false without faults.
    pub fn set_partitioned(&self, other_store: u64, cut: bool) -> bool {
        let Some(f) = &self.inner.faults else { return false };
        let me = self.inner.config.store_id;
        if cut {
            f.borrow_mut().partition(me, other_store);
        } else {
            f.borrow_mut().heal(me, other_store);
        }
        true
    }

    pub fn fault_stats(&self) -> Option<FaultStats> {
        self.inner.faults.as_ref().map(|f| f.borrow().stats().clone())
    }

    /// Stops listening, closes every connection and stops every task at its
    /// next step; queued frames are dropped.
    pub fn shutdown(&self) {
        self.inner.shutdown.set();
        let notifies: Vec<Rc<Notify>> = self.inner.links.borrow().values().map(|l| l.notify.clone()).collect();
        for n in notifies {
            n.notify();
        }
        self.inner.faults_notify.notify();
    }
}
