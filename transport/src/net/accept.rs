//! The receiving side: accept connections on the shard's peer port, check
//! each caller's handshake, then read raft frames into the inbox (or hand a
//! snapshot connection to `snapshot_recv`). Bad input of any kind closes
//! that one connection, is logged and counted by reason, and never reaches
//! the shard; other connections are unaffected.

use std::rc::Rc;

use glommio::net::{TcpListener, TcpStream};

use crate::envelope::RaftBatch;
use crate::frame::FrameKind;
use crate::frame::FRAME_BYTES_MAX;
use crate::handshake::{Handshake, HandshakeReply, Purpose, HANDSHAKE_BYTES_MAX};
use crate::net::config::CONNECTIONS_MAX;
use crate::net::endpoint::Inner;
use crate::net::inbox::Incoming;
use crate::net::io::{FrameReader, ReadError};
use crate::net::{snapshot_recv, socket};

pub(crate) async fn run(inner: Rc<Inner>, listener: TcpListener) {
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            inner.shutdown.wait().await;
            None
        })
        .await;
        let stream = match accepted {
            None => return,
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                tracing::warn!(addr = %inner.local_addr, "accept: {e}");
                glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        if inner.connections.get() >= CONNECTIONS_MAX {
            inner.stats.borrow_mut().refused("too_many_connections");
            continue;
        }
        inner.stats.borrow_mut().connections_accepted += 1;
        inner.connections.set(inner.connections.get() + 1);
        let inner2 = inner.clone();
        glommio::spawn_local(async move {
            let peer = stream.peer_addr().ok();
            let done = futures_lite::future::or(async { Some(serve(&inner2, stream).await) }, async {
                inner2.shutdown.wait().await;
                None
            })
            .await;
            if let Some(Err(why)) = done {
                inner2.stats.borrow_mut().refused(why.kind);
                tracing::warn!(?peer, "closed inbound connection: {}", why.detail);
            }
            inner2.connections.set(inner2.connections.get() - 1);
        })
        .detach();
    }
}

/// Why an inbound connection was closed: a counter name and a log line.
pub(crate) struct Closed {
    pub kind: &'static str,
    pub detail: String,
}

impl From<ReadError> for Closed {
    fn from(e: ReadError) -> Self {
        Closed { kind: e.kind(), detail: e.to_string() }
    }
}

fn closed(kind: &'static str, detail: impl Into<String>) -> Closed {
    Closed { kind, detail: detail.into() }
}

async fn serve(inner: &Inner, stream: TcpStream) -> Result<(), Closed> {
    stream.set_nodelay(true).ok();
    if let Err(e) = socket::tune(&stream) {
        tracing::warn!("socket options on an inbound connection: {e}");
    }
    // nothing but a handshake-sized frame until the caller is known
    let mut conn = FrameReader::with_limit(stream, HANDSHAKE_BYTES_MAX);
    let first = conn
        .next_within(inner.config.handshake_timeout)
        .await
        .map_err(|e| {
            if matches!(e, ReadError::TimedOut(_)) {
                closed("handshake_timeout", e.to_string())
            } else {
                e.into()
            }
        })?
        .ok_or_else(|| closed("closed_before_handshake", "peer closed before its handshake"))?;
    if first.kind != FrameKind::Handshake {
        return Err(closed("unexpected_kind", format!("{:?} frame before the handshake", first.kind)));
    }
    let c = &inner.config;
    let hs = match Handshake::accept(&first.payload, c.cluster_id, c.store_id, c.shard) {
        Ok(hs) => hs,
        Err(e) => {
            // best effort: tell the caller why, then close
            let _ =
                conn.write_frame(FrameKind::HandshakeReply, &[&HandshakeReply::refused(&e.to_string()).encode()]).await;
            return Err(closed(e.kind(), e.to_string()));
        }
    };
    conn.write_frame(FrameKind::HandshakeReply, &[&HandshakeReply::accepted().encode()])
        .await
        .map_err(|e| closed("io_error", format!("write handshake reply: {e}")))?;
    conn.set_limit(FRAME_BYTES_MAX);
    match hs.purpose {
        Purpose::Raft => serve_raft(inner, conn, hs.from_store).await,
        Purpose::Snapshot => snapshot_recv::serve(inner, conn, hs.from_store).await,
    }
}

async fn serve_raft(inner: &Inner, mut conn: FrameReader<TcpStream>, from_store: u64) -> Result<(), Closed> {
    let (store, shard) = (inner.config.store_id, inner.config.shard);
    loop {
        let frame = match conn.next_within(inner.config.idle_timeout).await {
            Ok(Some(frame)) => frame,
            Ok(None) => return Ok(()),
            Err(ReadError::TimedOut(_)) => {
                // idle: free the slot; the sender reconnects when it next has something to say.
                // The FIN goes out now (not whenever the dropped socket is closed), so a
                // sender that checks for it before writing sees it and does not write
                // into a connection about to be reset
                let _ = conn.stream().shutdown(std::net::Shutdown::Both).await;
                inner.stats.borrow_mut().idle_connections_closed += 1;
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        if frame.kind != FrameKind::Raft {
            return Err(closed("unexpected_kind", format!("{:?} frame on a raft connection", frame.kind)));
        }
        let batch = RaftBatch::decode(frame.payload).map_err(|e| closed("malformed_batch", e.to_string()))?;
        if let Some(e) = batch.iter().find(|e| (e.to().store_id, e.to().shard) != (store, shard)) {
            let (region, to) = (e.region_id(), e.to());
            return Err(closed(
                "misrouted",
                format!(
                    "region {region} message for store {} shard {} arrived at store {store} shard {shard}",
                    to.store_id, to.shard
                ),
            ));
        }
        {
            let mut s = inner.stats.borrow_mut();
            s.frames_received += 1;
            s.messages_received += batch.len() as u64;
            s.bytes_received += (batch.payload_bytes() + crate::frame::FRAME_HEADER_BYTES) as u64;
        }
        // the inbox is bounded in bytes too: wait (and stop reading) while it is full
        let bytes = batch.payload_bytes();
        while inner.inbox_bytes.get() > 0 && inner.inbox_bytes.get() + bytes > inner.config.inbox_bytes_max {
            inner.inbox_space.listen().await;
        }
        inner.inbox_bytes.set(inner.inbox_bytes.get() + bytes);
        if inner.inbox.send(Incoming::Raft { from_store, batch }).await.is_err() {
            return Ok(()); // the shard is gone
        }
        // a socket with data never makes a read wait: let the shard take this frame
        // before the next, or the inbox fills to its bound first and every frame waits behind it
        futures_lite::future::yield_now().await;
    }
}
