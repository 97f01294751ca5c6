//! The seam between the log and the file system.
//!
//! The log's logic never names glommio: it talks to a [`Disk`] (one
//! directory) and its [`DiskFile`]s. [`GlommioDisk`] is the real one
//! (O_DIRECT through io_uring, or buffered writes where the file system has
//! no O_DIRECT); [`MemDisk`] is an in-memory one for tests that can lose
//! unsynced writes, tear the last write at any byte and flip bytes.
//!
//! The traits use `async fn` without `Send` bounds on purpose: a WAL lives on
//! one shard thread and its futures never move.
#![allow(async_fn_in_trait)]

mod glommio_disk;
pub mod injected;
mod mem;

use std::io;
use std::ops::{Deref, DerefMut};

pub use glommio_disk::{GlommioDisk, GlommioFile, WriteMode};
pub use mem::{MemDisk, MemFile};

/// A write buffer: block-aligned, zeroed when allocated.
pub trait IoBuf: DerefMut<Target = [u8]> {}
impl<T: DerefMut<Target = [u8]>> IoBuf for T {}

/// One directory of log files.
pub trait Disk: Clone + 'static {
    type File: DiskFile<Buf = Self::Buf>;
    type Buf: IoBuf;

    /// A zeroed buffer of `len` bytes (a multiple of the block size) that
    /// `DiskFile::write_at` accepts without copying.
    fn alloc_buf(&self, len: usize) -> Self::Buf;
    /// Names of the files in the directory.
    async fn list(&self) -> io::Result<Vec<String>>;
    /// Opens an existing file for reading and writing.
    async fn open(&self, name: &str) -> io::Result<Self::File>;
    /// Creates a new file (fails if it exists).
    async fn create(&self, name: &str) -> io::Result<Self::File>;
    async fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    async fn remove(&self, name: &str) -> io::Result<()>;
    /// Makes creates, renames and removes durable.
    async fn sync_dir(&self) -> io::Result<()>;
    /// Where the files live, for error messages.
    fn describe(&self, name: &str) -> String;
    /// A fresh segment nonce: unpredictable on a real disk, so that no data
    /// written by a client can be crafted to pass for a record.
    fn nonce(&self) -> u64;
}

/// One open file.
pub trait DiskFile: 'static {
    type Buf: IoBuf;
    type ReadBuf: Deref<Target = [u8]>;

    /// Writes all of `buf` at `pos` (both block-aligned).
    async fn write_at(&self, buf: Self::Buf, pos: u64) -> io::Result<()>;
    /// fdatasync.
    async fn sync_data(&self) -> io::Result<()>;
    /// Reads up to `len` bytes at `pos` (no alignment needed); shorter at EOF.
    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Self::ReadBuf>;
    async fn size(&self) -> io::Result<u64>;
    /// Reads the first `len` bytes (fewer at end of file) into `buf`,
    /// reusing its memory, and hands it back. Used by recovery to read whole
    /// segments; an implementation may read on another thread so that the
    /// next segment arrives while the current one is replayed.
    async fn read_whole(&self, len: usize, mut buf: Vec<u8>) -> io::Result<Vec<u8>> {
        read_chunks_into(self, len, RECOVERY_READ_DEPTH, &mut buf).await?;
        Ok(buf)
    }
}

/// Chunked reads in flight at once when a whole file is read with `read_at`.
pub const RECOVERY_READ_DEPTH: usize = 8;

/// Largest single read or write the log issues; bigger transfers are split
/// (some kernels hang on DMA reads over max_sectors_kb, glommio #633).
pub const IO_CHUNK_BYTES_MAX: usize = 1 << 20;

/// Reads the first `len` bytes of `file` into `out` (replacing its contents,
/// reusing its memory), in chunks of `IO_CHUNK_BYTES_MAX` with up to `depth`
/// reads in flight. Stops early at end of file.
pub async fn read_chunks_into<F: DiskFile + ?Sized>(
    file: &F,
    len: usize,
    depth: usize,
    out: &mut Vec<u8>,
) -> io::Result<()> {
    out.clear();
    out.reserve(len);
    let chunks: Vec<(usize, usize)> =
        (0..len).step_by(IO_CHUNK_BYTES_MAX).map(|off| (off, IO_CHUNK_BYTES_MAX.min(len - off))).collect();
    for group in chunks.chunks(depth.max(1)) {
        let reads = group.iter().map(|&(off, n)| file.read_at(off as u64, n));
        for (&(_, n), r) in group.iter().zip(join_all(reads).await) {
            let r = r?;
            out.extend_from_slice(&r);
            if r.len() < n {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Polls all futures concurrently until each is ready (no extra dependency
/// for a join of a handful of reads).
async fn join_all<F: std::future::Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    use std::pin::Pin;
    use std::task::Poll;
    let mut futs: Vec<Pin<Box<F>>> = futs.map(Box::pin).collect();
    let mut outs: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, o) in futs.iter_mut().zip(outs.iter_mut()) {
            if o.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *o = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outs.into_iter().map(|o| o.unwrap()).collect()
}
