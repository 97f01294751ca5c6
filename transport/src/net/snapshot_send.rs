//! Sending one snapshot: its own connection (so heartbeats and appends never
//! queue behind it), the file read in chunks, each chunk paced by a token
//! bucket (`snapshot_bytes_per_sec`) and framed with its own CRC32C, then the
//! whole file's length and CRC32C, then the wait for the receiver's ack (it
//! acks only once the file is durable and verified on its side).

use std::path::PathBuf;
use std::rc::Rc;
use std::time::Instant;

use glommio::io::BufferedFile;

use crate::envelope::Envelope;
use crate::frame::FrameKind;
use crate::handshake::Purpose;
use crate::net::config::SNAPSHOTS_IN_FLIGHT_MAX;
use crate::net::endpoint::{Inner, SnapshotReport};
use crate::net::link::connect;
use crate::outbox::Destination;
use crate::rate_limit::RateLimiter;
use crate::snapshot::{encode_chunk_header, SnapshotAck, SnapshotEnd, SnapshotHeader};

pub(crate) async fn run(inner: Rc<Inner>, snapshot_id: u64, to: Destination, envelope: Envelope, path: PathBuf) {
    let (region_id, to_peer) = (envelope.region_id, envelope.to.peer_id);
    let outcome = if inner.snapshots_sending.get() >= SNAPSHOTS_IN_FLIGHT_MAX {
        Err(format!("{SNAPSHOTS_IN_FLIGHT_MAX} snapshots already being sent"))
    } else {
        inner.snapshots_sending.set(inner.snapshots_sending.get() + 1);
        let r = futures_lite::future::or(send(&inner, snapshot_id, to, envelope, &path), async {
            inner.shutdown.wait().await;
            Err("endpoint shut down".to_string())
        })
        .await;
        inner.snapshots_sending.set(inner.snapshots_sending.get() - 1);
        r
    };
    {
        let mut s = inner.stats.borrow_mut();
        match &outcome {
            Ok(()) => s.snapshots_sent += 1,
            Err(e) => {
                s.snapshots_send_failed += 1;
                tracing::warn!(
                    region = region_id,
                    store = to.store_id,
                    shard = to.shard,
                    "snapshot {snapshot_id}: {e}"
                );
            }
        }
    }
    inner.snapshot_reports.borrow_mut().push(SnapshotReport { snapshot_id, region_id, to_peer, to, outcome });
}

async fn send(
    inner: &Inner,
    snapshot_id: u64,
    to: Destination,
    envelope: Envelope,
    path: &PathBuf,
) -> Result<(), String> {
    let shown = path.display();
    let file = BufferedFile::open(path).await.map_err(|e| format!("open {shown}: {e}"))?;
    let total_bytes = file.file_size().await.map_err(|e| format!("stat {shown}: {e}"))?;
    let mut conn = connect(inner, to, Purpose::Snapshot).await.map_err(|e| e.to_string())?;
    let header = SnapshotHeader { snapshot_id, total_bytes, envelope };
    conn.write_frame(FrameKind::SnapshotHeader, &[&header.encode()]).await.map_err(|e| format!("write header: {e}"))?;
    let chunk = inner.config.snapshot_chunk_bytes;
    let mut limiter = RateLimiter::new(inner.config.snapshot_bytes_per_sec, 2 * chunk as u64, Instant::now());
    let (mut offset, mut crc) = (0u64, 0u32);
    while offset < total_bytes {
        let want = chunk.min((total_bytes - offset) as usize);
        let data = file.read_at(offset, want).await.map_err(|e| format!("read {shown} at {offset}: {e}"))?;
        if data.is_empty() {
            return Err(format!("{shown} shrank to {offset} bytes while being sent ({total_bytes} announced)"));
        }
        let wait = limiter.take(data.len() as u64, Instant::now());
        if !wait.is_zero() {
            glommio::timer::sleep(wait).await;
        }
        conn.write_frame(FrameKind::SnapshotChunk, &[&encode_chunk_header(offset), &data])
            .await
            .map_err(|e| format!("write chunk at {offset}: {e}"))?;
        crc = crc32c::crc32c_append(crc, &data);
        offset += data.len() as u64;
        inner.stats.borrow_mut().snapshot_bytes_sent += data.len() as u64;
    }
    let _ = file.close().await;
    conn.write_frame(FrameKind::SnapshotEnd, &[&SnapshotEnd { total_bytes, crc32c: crc }.encode()])
        .await
        .map_err(|e| format!("write end: {e}"))?;
    let reply = conn
        .next_within(inner.config.snapshot_ack_timeout)
        .await
        .map_err(|e| format!("waiting for the ack: {e}"))?
        .ok_or("closed before acknowledging")?;
    if reply.kind != FrameKind::SnapshotAck {
        return Err(format!("{:?} frame instead of an ack", reply.kind));
    }
    match SnapshotAck::decode(&reply.payload).map_err(|e| e.to_string())?.refused {
        None => Ok(()),
        Some(reason) => Err(format!("receiver refused it: {reason}")),
    }
}
