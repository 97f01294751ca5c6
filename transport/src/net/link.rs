//! The sending side of one destination: a task that connects lazily, says
//! who it is (handshake), writes whatever frames are queued (several at once
//! when they piled up during a write), and on any failure drops what it
//! held, reports those regions unreachable and backs off before the next
//! attempt. While it backs off, `Endpoint::send` drops new frames for that
//! destination at once rather than queueing them into a dead link. A
//! destination that is down is logged when it goes down and comes back,
//! and in between at most every `DOWN_LOG_INTERVAL` (`crate::down_log`),
//! not at every attempt.

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::AsyncWriteExt;
use glommio::net::TcpStream;

use crate::backoff::Backoff;
use crate::down_log::{DownLog, DownNote, PeerEvent, DOWN_LOG_INTERVAL};
use crate::frame::FrameKind;
use crate::handshake::{Handshake, HandshakeReply, Purpose};
use crate::net::config::WRITE_BATCH_BYTES_MAX;
use crate::net::endpoint::Inner;
use crate::net::io::FrameReader;
use crate::net::socket;
use crate::net::sync::Notify;
use crate::outbox::{Destination, FlushedFrame};

/// Why a connection to a destination could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("no address known for store {} shard {}", .0.store_id, .0.shard)]
    NoAddress(Destination),
    #[error("connect to {addr}: {source}")]
    Connect { addr: SocketAddr, source: io::Error },
    #[error("handshake with {addr}: {what}")]
    Handshake { addr: SocketAddr, what: String },
    #[error("{addr} refused the handshake: {reason}")]
    Refused { addr: SocketAddr, reason: String },
}

/// Connects to `to` and completes the handshake for `purpose`.
pub(crate) async fn connect(
    inner: &Inner,
    to: Destination,
    purpose: Purpose,
) -> Result<(FrameReader<TcpStream>, SocketAddr), ConnectError> {
    let addr = *inner.addresses.borrow().get(&to).ok_or(ConnectError::NoAddress(to))?;
    let stream = TcpStream::connect_timeout(addr, inner.config.connect_timeout)
        .await
        .map_err(|e| ConnectError::Connect { addr, source: e.into() })?;
    stream.set_nodelay(true).map_err(|e| ConnectError::Connect { addr, source: e.into() })?;
    socket::tune(&stream).map_err(|source| ConnectError::Connect { addr, source })?;
    let mut conn = FrameReader::new(stream);
    let hs = Handshake::new(inner.config.cluster_id, inner.config.store_id, to.store_id, to.shard, purpose);
    conn.write_frame(FrameKind::Handshake, &[&hs.encode()])
        .await
        .map_err(|e| ConnectError::Handshake { addr, what: format!("write: {e}") })?;
    let reply = conn
        .next_within(inner.config.handshake_timeout)
        .await
        .map_err(|e| ConnectError::Handshake { addr, what: format!("read reply: {e}") })?
        .ok_or_else(|| ConnectError::Handshake { addr, what: "closed before replying".into() })?;
    if reply.kind != FrameKind::HandshakeReply {
        return Err(ConnectError::Handshake { addr, what: format!("{:?} frame instead of a reply", reply.kind) });
    }
    let reply =
        HandshakeReply::decode(&reply.payload).map_err(|e| ConnectError::Handshake { addr, what: e.to_string() })?;
    match reply.refused {
        None => Ok((conn, addr)),
        Some(reason) => Err(ConnectError::Refused { addr, reason }),
    }
}

/// Takes the frames to write next: everything queued, up to one write's worth.
fn take_batch(inner: &Inner, to: Destination) -> Vec<FlushedFrame> {
    let mut links = inner.links.borrow_mut();
    let link = links.get_mut(&to).expect("a link task's link exists");
    let mut batch = vec![];
    let mut bytes = 0;
    while let Some(f) = link.queue.front() {
        if !batch.is_empty() && bytes + f.bytes.len() > WRITE_BATCH_BYTES_MAX {
            break;
        }
        bytes += f.bytes.len();
        batch.push(link.queue.pop_front().unwrap());
    }
    batch
}

/// The frames are no longer queued (written or dropped).
fn release(inner: &Inner, to: Destination, frames: &[FlushedFrame]) {
    let bytes: usize = frames.iter().map(|f| f.bytes.len()).sum();
    let mut links = inner.links.borrow_mut();
    let link = links.get_mut(&to).expect("a link task's link exists");
    link.queued_bytes = link.queued_bytes.checked_sub(bytes).expect("queued bytes released twice");
    drop(links);
    inner.drained.notify_all();
}

/// Frames taken off the queue that will not be sent: released and reported.
fn drop_frames(inner: &Inner, to: Destination, frames: Vec<FlushedFrame>, why: &'static str) {
    release(inner, to, &frames);
    for f in &frames {
        inner.drop_frame(f, why);
    }
}

/// Drops everything still queued for `to`.
fn drop_queued(inner: &Inner, to: Destination, why: &'static str) {
    let queued: Vec<FlushedFrame> =
        inner.links.borrow_mut().get_mut(&to).map(|l| l.queue.drain(..).collect()).unwrap_or_default();
    drop_frames(inner, to, queued, why);
}

/// After a failure: everything held is dropped and reported, and the link
/// refuses frames until the backoff has passed.
async fn fail(inner: &Inner, to: Destination, held: Vec<FlushedFrame>, why: &'static str, wait: Duration) {
    drop_frames(inner, to, held, why);
    if let Some(link) = inner.links.borrow_mut().get_mut(&to) {
        link.down_until = Some(Instant::now() + wait);
    }
    drop_queued(inner, to, "link_down");
    futures_lite::future::or(glommio::timer::sleep(wait), inner.shutdown.wait()).await;
    if let Some(link) = inner.links.borrow_mut().get_mut(&to) {
        link.down_until = None;
    }
}

/// The task of one destination; ends at shutdown.
pub(crate) async fn run(inner: Rc<Inner>, to: Destination, notify: Rc<Notify>) {
    let salt = to.store_id.rotate_left(16) ^ u64::from(to.shard) ^ inner.config.store_id.rotate_left(40);
    let mut backoff = Backoff::new(inner.config.backoff_min, inner.config.backoff_max, salt);
    let mut down_log = DownLog::default();
    let mut conn: Option<(FrameReader<TcpStream>, SocketAddr)> = None;
    let mut buf = Vec::new();
    // set when the link waited for work: only then can the peer have closed an idle connection
    let mut was_idle = false;
    loop {
        if inner.shutdown.is_set() {
            drop_queued(&inner, to, "shutdown");
            return;
        }
        let batch = take_batch(&inner, to);
        if batch.is_empty() {
            notify.wait().await;
            was_idle = true;
            continue;
        }
        if let Some((c, addr)) = &mut conn {
            // the destination moved (a new address from PD), or the peer closed
            // (it restarted, or dropped an idle connection): reconnect rather
            // than write into a connection whose data would be lost unreported
            let moved = inner.addresses.borrow().get(&to) != Some(addr);
            if moved || (was_idle && peer_closed(c.stream()).await) {
                conn = None;
            }
        }
        was_idle = false;
        if conn.is_none() {
            match futures_lite::future::or(async { Some(connect(&inner, to, Purpose::Raft).await) }, async {
                inner.shutdown.wait().await;
                None
            })
            .await
            {
                None => {
                    put_back(&inner, to, batch);
                    continue;
                }
                Some(Ok(c)) => {
                    if let Some(DownNote::CameBack { failures, down_for }) =
                        down_log.on(Instant::now(), PeerEvent::Connected)
                    {
                        tracing::info!(
                            store = to.store_id,
                            shard = to.shard,
                            failures,
                            ?down_for,
                            "peer reachable again"
                        );
                    }
                    backoff.succeeded();
                    inner.stats.borrow_mut().connects += 1;
                    conn = Some(c);
                }
                Some(Err(e)) => {
                    inner.stats.borrow_mut().connect_failures += 1;
                    let wait = backoff.failed();
                    log_failure(to, down_log.on(Instant::now(), PeerEvent::Failed), &e);
                    fail(&inner, to, batch, "link_down", wait).await;
                    continue;
                }
            }
        }
        let stream = conn.as_mut().unwrap().0.stream();
        let bytes: &[u8] = if batch.len() == 1 {
            &batch[0].bytes
        } else {
            buf.clear();
            for f in &batch {
                buf.extend_from_slice(&f.bytes);
            }
            &buf
        };
        // a peer that stops reading holds the task neither past shutdown nor for ever
        let limit = inner.config.write_timeout;
        let written = futures_lite::future::or(
            futures_lite::future::or(stream.write_all(bytes), async {
                glommio::timer::sleep(limit).await;
                Err(io::Error::new(io::ErrorKind::TimedOut, format!("not written within {limit:?}")))
            }),
            async {
                inner.shutdown.wait().await;
                Err(io::Error::other("endpoint shut down"))
            },
        )
        .await;
        match written {
            Ok(()) => {
                release(&inner, to, &batch);
                let mut s = inner.stats.borrow_mut();
                s.writes += 1;
                for f in &batch {
                    s.frames_sent += 1;
                    s.messages_sent += f.messages as u64;
                    s.bytes_sent += f.bytes.len() as u64;
                }
                drop(s);
                batch.into_iter().for_each(|f| inner.spend(f));
            }
            Err(e) => {
                conn = None;
                let wait = backoff.failed();
                log_failure(to, down_log.on(Instant::now(), PeerEvent::Failed), &format_args!("write failed: {e}"));
                fail(&inner, to, batch, "write_failed", wait).await;
            }
        }
        if buf.capacity() > WRITE_BATCH_BYTES_MAX * 2 {
            buf = Vec::new();
        }
    }
}

/// Logs a failure if `DownLog` found it worth a line; `what`: the failure.
fn log_failure(to: Destination, note: Option<DownNote>, what: &dyn std::fmt::Display) {
    let (store, shard) = (to.store_id, to.shard);
    match note {
        Some(DownNote::WentDown) => tracing::warn!(
            store,
            shard,
            "peer down: {what} (retrying with backoff; logged again every {DOWN_LOG_INTERVAL:?} while it stays down)"
        ),
        Some(DownNote::StillDown { failures, down_for }) => {
            tracing::warn!(store, shard, failures, ?down_for, "peer still down: {what}")
        }
        // (a failure never brings a peer back)
        Some(DownNote::CameBack { .. }) | None => {}
    }
}

/// Whether the peer has closed its end (or broken the connection). A raft
/// connection's receiver never writes after its handshake reply, so
/// anything readable is the end of the connection.
async fn peer_closed(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    futures_lite::future::poll_once(stream.peek(&mut byte)).await.is_some()
}

/// Puts a batch back at the head of the queue (shutdown raced a connect).
fn put_back(inner: &Inner, to: Destination, batch: Vec<FlushedFrame>) {
    let mut links = inner.links.borrow_mut();
    let link = links.get_mut(&to).expect("a link task's link exists");
    for f in batch.into_iter().rev() {
        link.queue.push_front(f);
    }
}

/// With faults on, frames wait in the fault queue and this task hands each
/// to its link when it is due.
pub(crate) async fn release_faulty(inner: Rc<Inner>) {
    let faults = inner.faults.as_ref().expect("started only with faults");
    while !inner.shutdown.is_set() {
        let due = faults.borrow_mut().due(Instant::now());
        for frame in due {
            inner.enqueue(frame);
        }
        let next = faults.borrow().next_due();
        match next {
            Some(t) => {
                let wait = t.saturating_duration_since(Instant::now());
                futures_lite::future::or(glommio::timer::sleep(wait), inner.faults_notify.wait()).await;
            }
            None => inner.faults_notify.wait().await,
        }
    }
}
