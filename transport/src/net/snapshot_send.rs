//! Sending one snapshot: its own connection (so heartbeats and appends never
//! queue behind it), the file read in chunks, each chunk paced by a token
//! bucket (`snapshot_bytes_per_sec`) and framed with its own CRC32C, then the
//! whole file's length and CRC32C, then the wait for the receiver's ack (it
//! acks only once the file is durable and verified on its side).

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::io::BufferedFile;
use glommio::net::TcpStream;

use crate::envelope::Envelope;
use crate::frame::FrameKind;
use crate::handshake::Purpose;
use crate::net::config::SNAPSHOTS_IN_FLIGHT_MAX;
use crate::net::endpoint::{Inner, SnapshotReport};
use crate::net::io::FrameReader;
use crate::net::link::connect;
use crate::outbox::Destination;
use crate::rate_limit::RateLimiter;
use crate::snapshot::{encode_chunk_header, SnapshotAck, SnapshotEnd, SnapshotHeader};

pub(crate) async fn run(inner: Rc<Inner>, snapshot_id: u64, to: Destination, envelope: Envelope, path: PathBuf) {
    let (region_id, to_peer) = (envelope.region_id, envelope.to.peer_id);
    let outcome = if crate::injected::is_cut(to.store_id) {
        Err(format!("the link to store {} is cut (fault injection)", to.store_id))
    } else if inner.snapshots_sending.get() >= SNAPSHOTS_IN_FLIGHT_MAX {
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

async fn send(inner: &Inner, snapshot_id: u64, to: Destination, envelope: Envelope, path: &Path) -> Result<(), String> {
    let shown = path.display();
    let file = BufferedFile::open(path).await.map_err(|e| format!("open {shown}: {e}"))?;
    let total_bytes = file.file_size().await.map_err(|e| format!("stat {shown}: {e}"))?;
    let (mut conn, _) = connect(inner, to, Purpose::Snapshot).await.map_err(|e| e.to_string())?;
    let streamed = stream(inner, &mut conn, &file, snapshot_id, total_bytes, envelope).await;
    let _ = file.close().await;
    // a receiver that refuses mid-stream writes its ack and closes: our write then
    // fails, but the ack says why
    let wait = if streamed.is_ok() { inner.config.snapshot_ack_timeout } else { REFUSAL_READ_TIMEOUT };
    let ack = match conn.next_within(wait).await {
        Ok(Some(f)) if f.kind == FrameKind::SnapshotAck => SnapshotAck::decode(&f.payload).map_err(|e| e.to_string()),
        Ok(Some(f)) => Err(format!("{:?} frame instead of an ack", f.kind)),
        Ok(None) => Err("closed before acknowledging".to_string()),
        Err(e) => Err(format!("waiting for the ack: {e}")),
    };
    match (streamed, ack) {
        (_, Ok(SnapshotAck { refused: Some(reason) })) => Err(format!("receiver refused it: {reason}")),
        (Err(e), _) => Err(format!("{shown}: {e}")),
        (Ok(()), Ok(SnapshotAck { refused: None })) => Ok(()),
        (Ok(()), Err(e)) => Err(e),
    }
}

/// How long a sender whose write failed looks for the receiver's reason.
const REFUSAL_READ_TIMEOUT: Duration = Duration::from_secs(1);

/// Writes one frame, failing if it is not written within `write_timeout`.
async fn write(
    inner: &Inner,
    conn: &mut FrameReader<TcpStream>,
    kind: FrameKind,
    parts: &[&[u8]],
) -> Result<(), String> {
    let limit = inner.config.write_timeout;
    futures_lite::future::or(async { conn.write_frame(kind, parts).await.map_err(|e| e.to_string()) }, async {
        glommio::timer::sleep(limit).await;
        Err(format!("not written within {limit:?}"))
    })
    .await
}

async fn stream(
    inner: &Inner,
    conn: &mut FrameReader<TcpStream>,
    file: &BufferedFile,
    snapshot_id: u64,
    total_bytes: u64,
    envelope: Envelope,
) -> Result<(), String> {
    let header = SnapshotHeader { snapshot_id, total_bytes, envelope };
    write(inner, conn, FrameKind::SnapshotHeader, &[&header.encode()])
        .await
        .map_err(|e| format!("write header: {e}"))?;
    let chunk = inner.config.snapshot_chunk_bytes;
    let mut limiter = RateLimiter::new(inner.config.snapshot_bytes_per_sec, 2 * chunk as u64, Instant::now());
    let (mut offset, mut crc) = (0u64, 0u32);
    while offset < total_bytes {
        let want = chunk.min((total_bytes - offset) as usize);
        let data = file.read_at(offset, want).await.map_err(|e| format!("read at {offset}: {e}"))?;
        if data.is_empty() {
            return Err(format!("the file shrank to {offset} bytes while being sent ({total_bytes} announced)"));
        }
        let wait = limiter.take(data.len() as u64, Instant::now());
        if !wait.is_zero() {
            glommio::timer::sleep(wait).await;
        }
        let data: &[u8] = &data;
        write(inner, conn, FrameKind::SnapshotChunk, &[&encode_chunk_header(offset), data])
            .await
            .map_err(|e| format!("write chunk at {offset}: {e}"))?;
        crc = crc32c::crc32c_append(crc, data);
        offset += data.len() as u64;
        inner.stats.borrow_mut().snapshot_bytes_sent += data.len() as u64;
    }
    let end = SnapshotEnd { total_bytes, crc32c: crc };
    write(inner, conn, FrameKind::SnapshotEnd, &[&end.encode()]).await.map_err(|e| format!("write end: {e}"))
}
