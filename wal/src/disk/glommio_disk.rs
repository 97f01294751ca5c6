//! The real disk: glommio DMA files (O_DIRECT through io_uring), or buffered
//! files with fdatasync where the file system refuses O_DIRECT (tmpfs).

use std::cell::Cell;
use std::io;
use std::ops::{Deref, DerefMut};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::{BufferedFile, DmaBuffer, DmaFile, OpenOptions, ReadResult};

use super::{Disk, DiskFile};
use crate::format::BLOCK_BYTES;
use crate::layout::{LOCK_FILE, PROBE_FILE};

/// How writes reach the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteMode {
    /// O_DIRECT DMA writes through io_uring.
    Direct,
    /// The file system has no O_DIRECT: page-cache writes + fdatasync.
    Buffered,
}

struct Inner {
    dir: PathBuf,
    mode: WriteMode,
    /// Held for the life of the disk: flock on LOCK keeps a second process out.
    _lock: std::fs::File,
    /// The first DMA file this thread opened on the device (see `open`).
    _probe: Option<DmaFile>,
    dir_syncs: Cell<u64>,
}

/// A WAL directory on a real file system. Must be used inside a glommio
/// executor; clones share the directory.
#[derive(Clone)]
pub struct GlommioDisk(Rc<Inner>);

/// A file of a [`GlommioDisk`].
pub enum GlommioFile {
    Dma(DmaFile),
    Buffered(BufferedFile),
}

/// A write buffer: DMA memory for O_DIRECT files, a Vec otherwise.
pub enum GlommioBuf {
    Dma(DmaBuffer),
    Vec(Vec<u8>),
}

impl Deref for GlommioBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            GlommioBuf::Dma(b) => b.as_bytes(),
            GlommioBuf::Vec(v) => v,
        }
    }
}
impl DerefMut for GlommioBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        match self {
            GlommioBuf::Dma(b) => b.as_bytes_mut(),
            GlommioBuf::Vec(v) => v,
        }
    }
}

fn io_err(op: &str, path: &Path, e: impl Into<io::Error>) -> io::Error {
    let e: io::Error = e.into();
    io::Error::new(e.kind(), format!("{op} {}: {e}", path.display()))
}

impl GlommioDisk {
    /// Opens (creating if needed) a WAL directory.
    ///
    /// Call it before this thread opens any other DMA file on the same device:
    /// glommio probes the first DMA file of a thread for polled I/O and, if
    /// that file is empty, wrongly enables polling, after which every DMA read
    /// fails with EOPNOTSUPP and each sync takes ~4 ms. We open a non-empty
    /// PROBE file first so the probe reads real bytes.
    pub async fn open(dir: &Path) -> io::Result<GlommioDisk> {
        Self::open_with_mode(dir, WriteMode::Direct).await
    }

    /// Like `open`, but `WriteMode::Buffered` forces page-cache writes +
    /// fdatasync even where O_DIRECT works (for comparison and tests).
    pub async fn open_with_mode(dir: &Path, want: WriteMode) -> io::Result<GlommioDisk> {
        std::fs::create_dir_all(dir).map_err(|e| io_err("create directory", dir, e))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io_err("open", &lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!("{} is locked by another process (is a server already running on it?)", dir.display()),
                ))
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io_err("lock", &lock_path, e)),
        }
        let probe_path = dir.join(PROBE_FILE);
        let probe_ok = std::fs::metadata(&probe_path).map(|m| m.len() >= BLOCK_BYTES as u64).unwrap_or(false);
        if !probe_ok {
            std::fs::write(&probe_path, vec![0x5au8; BLOCK_BYTES]).map_err(|e| io_err("write", &probe_path, e))?;
            std::fs::File::open(&probe_path).and_then(|f| f.sync_all()).map_err(|e| io_err("fsync", &probe_path, e))?;
        }
        let direct = want == WriteMode::Direct
            && match std::fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(&probe_path) {
                Ok(_) => true,
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => false,
                Err(e) => return Err(io_err("open O_DIRECT", &probe_path, e)),
            };
        if !direct && want == WriteMode::Direct {
            tracing::warn!(
                dir = %dir.display(),
                "file system does not support O_DIRECT: using buffered writes + fdatasync"
            );
        }
        let (mode, probe) = if direct {
            let f = OpenOptions::new()
                .read(true)
                .dma_open(&probe_path)
                .await
                .map_err(|e| io_err("dma open", &probe_path, e))?;
            (WriteMode::Direct, Some(f))
        } else {
            (WriteMode::Buffered, None)
        };
        let inner = Inner { dir: dir.to_path_buf(), mode, _lock: lock, _probe: probe, dir_syncs: Cell::new(0) };
        Ok(GlommioDisk(Rc::new(inner)))
    }

    pub fn mode(&self) -> WriteMode {
        self.0.mode
    }

    pub fn dir(&self) -> &Path {
        &self.0.dir
    }

    pub fn dir_sync_count(&self) -> u64 {
        self.0.dir_syncs.get()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.dir.join(name)
    }

    async fn open_with(&self, name: &str, create: bool) -> io::Result<GlommioFile> {
        let path = self.path(name);
        let mut o = OpenOptions::new();
        o.read(true).write(true).create_new(create);
        let op = if create { "create" } else { "open" };
        match self.0.mode {
            WriteMode::Direct => o.dma_open(&path).await.map(GlommioFile::Dma).map_err(|e| io_err(op, &path, e)),
            WriteMode::Buffered => {
                o.buffered_open(&path).await.map(GlommioFile::Buffered).map_err(|e| io_err(op, &path, e))
            }
        }
    }

    /// Runs a blocking file-system call off the shard thread.
    async fn blocking<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> R {
        glommio::executor().spawn_blocking(f).await
    }
}

impl Disk for GlommioDisk {
    type File = GlommioFile;
    type Buf = GlommioBuf;

    fn alloc_buf(&self, len: usize) -> GlommioBuf {
        debug_assert_eq!(len % BLOCK_BYTES, 0);
        match self.0.mode {
            WriteMode::Direct => GlommioBuf::Dma(glommio::allocate_dma_buffer(len)),
            WriteMode::Buffered => GlommioBuf::Vec(vec![0; len]),
        }
    }

    async fn list(&self) -> io::Result<Vec<String>> {
        let dir = self.0.dir.clone();
        self.blocking(move || -> io::Result<Vec<String>> {
            let mut out = vec![];
            for e in std::fs::read_dir(&dir).map_err(|e| io_err("list", &dir, e))? {
                let e = e.map_err(|e| io_err("list", &dir, e))?;
                if let Some(n) = e.file_name().to_str() {
                    out.push(n.to_string());
                }
            }
            Ok(out)
        })
        .await
    }

    async fn open(&self, name: &str) -> io::Result<GlommioFile> {
        self.open_with(name, false).await
    }

    async fn create(&self, name: &str) -> io::Result<GlommioFile> {
        self.open_with(name, true).await
    }

    async fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let (a, b) = (self.path(from), self.path(to));
        self.blocking(move || std::fs::rename(&a, &b).map_err(|e| io_err("rename", &a, e))).await
    }

    async fn remove(&self, name: &str) -> io::Result<()> {
        let p = self.path(name);
        self.blocking(move || std::fs::remove_file(&p).map_err(|e| io_err("remove", &p, e))).await
    }

    async fn sync_dir(&self) -> io::Result<()> {
        let dir = self.0.dir.clone();
        self.0.dir_syncs.set(self.0.dir_syncs.get() + 1);
        self.blocking(move || {
            std::fs::File::open(&dir).and_then(|d| d.sync_all()).map_err(|e| io_err("fsync directory", &dir, e))
        })
        .await
    }

    fn describe(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    fn nonce(&self) -> u64 {
        let mut b = [0u8; 8];
        // SAFETY: getrandom writes at most `b.len()` bytes into `b`.
        let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
        if n == b.len() as isize {
            u64::from_le_bytes(b)
        } else {
            // no entropy source: still distinct per segment and per process
            let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            (t.as_nanos() as u64) ^ ((std::process::id() as u64) << 32)
        }
    }
}

impl DiskFile for GlommioFile {
    type Buf = GlommioBuf;
    type ReadBuf = GlommioRead;

    async fn write_at(&self, buf: GlommioBuf, pos: u64) -> io::Result<()> {
        let len = buf.len();
        let written = match (self, buf) {
            (GlommioFile::Dma(f), GlommioBuf::Dma(b)) => f.write_at(b, pos).await?,
            (GlommioFile::Dma(f), GlommioBuf::Vec(v)) => {
                let mut b = f.alloc_dma_buffer(v.len());
                b.as_bytes_mut().copy_from_slice(&v);
                f.write_at(b, pos).await?
            }
            (GlommioFile::Buffered(f), GlommioBuf::Vec(v)) => f.write_at(v, pos).await?,
            (GlommioFile::Buffered(f), GlommioBuf::Dma(b)) => f.write_at(b.as_bytes().to_vec(), pos).await?,
        };
        if written != len {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short write: {written} of {len} bytes at {pos}"),
            ));
        }
        Ok(())
    }

    async fn sync_data(&self) -> io::Result<()> {
        let delay = super::injected::sync_delay();
        if !delay.is_zero() {
            glommio::timer::sleep(delay).await;
        }
        match self {
            GlommioFile::Dma(f) => f.fdatasync().await?,
            GlommioFile::Buffered(f) => f.fdatasync().await?,
        }
        Ok(())
    }

    async fn read_at(&self, pos: u64, len: usize) -> io::Result<GlommioRead> {
        Ok(GlommioRead(match self {
            GlommioFile::Dma(f) => f.read_at(pos, len).await?,
            GlommioFile::Buffered(f) => f.read_at(pos, len).await?,
        }))
    }

    async fn size(&self) -> io::Result<u64> {
        Ok(match self {
            GlommioFile::Dma(f) => f.file_size().await?,
            GlommioFile::Buffered(f) => f.file_size().await?,
        })
    }

    /// Reads on glommio's blocking pool with plain `read`s (kernel
    /// read-ahead, one copy into `buf`), so the executor keeps replaying the
    /// previous segment meanwhile; the pages are dropped from the page cache
    /// afterwards, as the log's own I/O bypasses it.
    async fn read_whole(&self, len: usize, mut buf: Vec<u8>) -> io::Result<Vec<u8>> {
        let path = match self {
            GlommioFile::Dma(f) => f.path().map(|p| p.to_path_buf()),
            GlommioFile::Buffered(f) => f.path().map(|p| p.to_path_buf()),
        }
        .ok_or_else(|| io::Error::other("file has no path"))?;
        glommio::executor()
            .spawn_blocking(move || -> io::Result<Vec<u8>> {
                use std::io::Read;
                use std::os::fd::AsRawFd;
                let file = std::fs::File::open(&path).map_err(|e| io_err("open", &path, e))?;
                // SAFETY: plain advisory calls on a valid descriptor.
                unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, len as i64, libc::POSIX_FADV_SEQUENTIAL) };
                buf.clear();
                buf.reserve(len);
                (&file).take(len as u64).read_to_end(&mut buf).map_err(|e| io_err("read", &path, e))?;
                // SAFETY: as above.
                unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, len as i64, libc::POSIX_FADV_DONTNEED) };
                Ok(buf)
            })
            .await
    }
}

/// Bytes read from a [`GlommioFile`].
pub struct GlommioRead(ReadResult);

impl Deref for GlommioRead {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}
