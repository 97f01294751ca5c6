//! Receiving one snapshot on its own connection: chunks are checked in
//! order (`snapshot::Assembly`) and written to `<snapshot_dir>/*.part`; at
//! the end the file is fdatasynced, read back and checked against the
//! sender's CRC32C, renamed to `*.snap` and the directory fsynced — only
//! then does the `MsgSnapshot` go to the shard and the sender get its ack.
//! Anything wrong removes the partial file and refuses the snapshot; raft's
//! leader then reports the failure and retries later. Files are named by the
//! receiver (its start time and a counter), never by what a sender claims,
//! and created exclusively: two streams can never write one file.

use std::path::{Path, PathBuf};

use glommio::io::OpenOptions;

use glommio::io::{BufferedFile, Directory};
use glommio::net::TcpStream;

use crate::frame::FrameKind;
use crate::net::accept::Closed;
use crate::net::config::SNAPSHOTS_IN_FLIGHT_MAX;
use crate::net::endpoint::Inner;
use crate::net::inbox::Incoming;
use crate::net::io::FrameReader;
use crate::snapshot::{decode_chunk, Assembly, SnapshotAck, SnapshotEnd, SnapshotHeader};

/// Bytes read back per request when verifying a received file.
const VERIFY_READ_BYTES: usize = 1 << 20;

/// Removes `*.part` files left by a crash or a shutdown mid-stream (run at
/// start, before anything is received).
pub(crate) fn sweep_partial_files(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "part") {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// A file that is removed unless disarmed: the partial file of a stream that
/// failed or was cancelled (shutdown drops the task mid-await), or a `.snap`
/// whose directory entry could not be made durable.
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            // a blocking unlink, on an error path only
            let _ = std::fs::remove_file(&p);
        }
    }
}

/// Counts a receive in flight for as long as it lives.
struct Slot<'a>(&'a Inner);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.snapshots_receiving.set(self.0.snapshots_receiving.get() - 1);
    }
}

fn refused(kind: &'static str, detail: impl Into<String>) -> Closed {
    Closed { kind, detail: detail.into() }
}

pub(crate) async fn serve(inner: &Inner, mut conn: FrameReader<TcpStream>, from_store: u64) -> Result<(), Closed> {
    if inner.snapshots_receiving.get() >= SNAPSHOTS_IN_FLIGHT_MAX {
        let reason = format!("{SNAPSHOTS_IN_FLIGHT_MAX} snapshots already being received");
        let _ =
            conn.write_frame(FrameKind::SnapshotAck, &[&SnapshotAck { refused: Some(reason.clone()) }.encode()]).await;
        inner.stats.borrow_mut().snapshots_refused += 1;
        return Err(refused("snapshot_busy", reason));
    }
    inner.snapshots_receiving.set(inner.snapshots_receiving.get() + 1);
    let _slot = Slot(inner);
    match receive(inner, &mut conn, from_store).await {
        Ok(()) => Ok(()),
        Err(why) => {
            inner.stats.borrow_mut().snapshots_refused += 1;
            let ack = SnapshotAck::refused(&why.detail);
            let _ = conn.write_frame(FrameKind::SnapshotAck, &[&ack.encode()]).await;
            Err(why)
        }
    }
}

async fn receive(inner: &Inner, conn: &mut FrameReader<TcpStream>, from_store: u64) -> Result<(), Closed> {
    let stall = inner.config.snapshot_ack_timeout;
    let first =
        conn.next_within(stall).await?.ok_or_else(|| refused("snapshot_truncated", "closed before the header"))?;
    if first.kind != FrameKind::SnapshotHeader {
        return Err(refused("unexpected_kind", format!("{:?} frame instead of a snapshot header", first.kind)));
    }
    let header = SnapshotHeader::decode(&first.payload).map_err(|e| refused("malformed_snapshot", e.to_string()))?;
    let (store, shard) = (inner.config.store_id, inner.config.shard);
    let to = header.envelope.to;
    if (to.store_id, to.shard) != (store, shard) {
        return Err(refused("misrouted", format!("snapshot for store {} shard {}", to.store_id, to.shard)));
    }
    let mut asm = Assembly::start(header).map_err(|e| refused("malformed_snapshot", e.to_string()))?;
    let n = inner.snapshot_files.get();
    inner.snapshot_files.set(n + 1);
    let name = format!(
        "r{}-s{from_store}-{}-{:x}-{n}",
        asm.header.envelope.region_id, asm.header.snapshot_id, inner.snapshot_file_nonce
    );
    let part_path = inner.config.snapshot_dir.join(format!("{name}.part"));
    let io = |op: &str, path: &Path, e: glommio::GlommioError<()>| {
        refused("snapshot_io", format!("{op} {}: {e}", path.display()))
    };
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .buffered_open(&part_path)
        .await
        .map_err(|e| io("create", &part_path, e))?;
    let mut guard = RemoveOnDrop(Some(part_path.clone()));
    let end = loop {
        let frame = conn.next_within(stall).await?.ok_or_else(|| {
            refused(
                "snapshot_truncated",
                format!("closed after {} of {} bytes", asm.received(), asm.header.total_bytes),
            )
        })?;
        match frame.kind {
            FrameKind::SnapshotChunk => {
                let (offset, data) =
                    decode_chunk(&frame.payload).map_err(|e| refused("malformed_snapshot", e.to_string()))?;
                asm.chunk(offset, &data).map_err(|e| refused("malformed_snapshot", e.to_string()))?;
                let mut at = 0;
                while at < data.len() {
                    let n = file
                        .write_at(data[at..].to_vec(), offset + at as u64)
                        .await
                        .map_err(|e| io("write", &part_path, e))?;
                    assert!(n > 0, "a buffered write of {} bytes wrote nothing", data.len() - at);
                    at += n;
                }
            }
            FrameKind::SnapshotEnd => {
                break SnapshotEnd::decode(&frame.payload).map_err(|e| refused("malformed_snapshot", e.to_string()))?
            }
            other => return Err(refused("unexpected_kind", format!("{other:?} frame inside a snapshot stream"))),
        }
    };
    let crc = asm.finish(&end).map_err(|e| refused("malformed_snapshot", e.to_string()))?;
    file.fdatasync().await.map_err(|e| io("fdatasync", &part_path, e))?;
    // read back what is on disk: the frame checksums guarded the wire, this guards the write path
    file.close().await.map_err(|e| io("close", &part_path, e))?;
    let reread = BufferedFile::open(&part_path).await.map_err(|e| io("open to read back", &part_path, e))?;
    let mut on_disk = 0u32;
    let mut pos = 0u64;
    while pos < end.total_bytes {
        let want = VERIFY_READ_BYTES.min((end.total_bytes - pos) as usize);
        let got = reread.read_at(pos, want).await.map_err(|e| io("read back", &part_path, e))?;
        if got.is_empty() {
            return Err(refused(
                "snapshot_io",
                format!("{} is {pos} bytes after fsync, {} written", part_path.display(), end.total_bytes),
            ));
        }
        on_disk = crc32c::crc32c_append(on_disk, &got);
        pos += got.len() as u64;
    }
    if on_disk != crc {
        return Err(refused(
            "snapshot_io",
            format!("{} reads back with checksum {on_disk:08x}, {crc:08x} was written", part_path.display()),
        ));
    }
    let _ = reread.close().await;
    let final_path = inner.config.snapshot_dir.join(format!("{name}.snap"));
    glommio::io::rename(&part_path, &final_path).await.map_err(|e| io("rename", &part_path, e))?;
    guard.0 = Some(final_path.clone()); // until its directory entry is durable
    let dir =
        Directory::open(&inner.config.snapshot_dir).await.map_err(|e| io("open dir", &inner.config.snapshot_dir, e))?;
    dir.sync().await.map_err(|e| io("fsync dir", &inner.config.snapshot_dir, e))?;
    let _ = dir.close().await;
    guard.0 = None;
    let bytes = end.total_bytes;
    let envelope = asm.header.envelope;
    inner.stats.borrow_mut().snapshots_received += 1;
    if inner.inbox.send(Incoming::Snapshot { from_store, envelope, path: final_path, bytes }).await.is_err() {
        return Ok(()); // the shard is gone; the file stays for a restart to find
    }
    conn.write_frame(FrameKind::SnapshotAck, &[&SnapshotAck::accepted().encode()])
        .await
        .map_err(|e| refused("io_error", format!("write snapshot ack: {e}")))?;
    Ok(())
}
