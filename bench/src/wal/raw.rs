//! What the disk does without the WAL, measured in the same process and run
//! as the WAL figures they are printed beside:
//!
//! - `sequential_write`: 1 MiB O_DIRECT writes, one fdatasync per MiB, into
//!   an already written file (the WAL too overwrites zero-filled or recycled
//!   segments): the ceiling for `--baseline`.
//! - `probe`: single 4 KiB write+fdatasync latency into a written file. The
//!   disk here has slow spells (every flush ~4 ms for 20 s or more); a probe
//!   before and after a run tells a slow disk from a slow WAL.
//! - `sequential_read`: the segment files read whole with 1 MiB O_DIRECT reads,
//!   as many in flight as recovery uses, without parsing: the ceiling for
//!   `--recovery`.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::io::{DmaFile, OpenOptions};
use serde::Serialize;

use crate::latency::{Latency, LatencySummary};

/// Size of each baseline write and read (the WAL's own largest I/O).
pub const RAW_IO_BYTES: usize = wal::disk::IO_CHUNK_BYTES_MAX;
/// The baseline writes cycle through a file of this size, written once first.
pub const RAW_WRITE_FILE_BYTES: u64 = 64 << 20;
/// Most baseline writes in one call (a bound beside the clock).
const RAW_WRITE_OPS_MAX: u64 = 10_000_000;
/// Size of each probe write.
pub const PROBE_WRITE_BYTES: usize = 4096;
/// The probe writes cycle through a file of this size, written once first.
const PROBE_FILE_BYTES: u64 = 1 << 20;
/// Longest one probe series may take, however many ops were asked for.
pub const PROBE_TIME_MAX: Duration = Duration::from_secs(10);
/// Reads in flight in `sequential_read` (the WAL's recovery uses 4 too).
pub const RAW_READ_DEPTH: usize = 4;
/// Most files `sequential_read` reads (a bound on a directory listing).
const RAW_READ_FILES_MAX: usize = 1 << 16;

const _: () = assert!(RAW_WRITE_FILE_BYTES % RAW_IO_BYTES as u64 == 0);
const _: () = assert!(PROBE_FILE_BYTES % PROBE_WRITE_BYTES as u64 == 0);

fn err(op: &str, path: &Path, e: impl std::fmt::Display) -> String {
    format!("{op} {}: {e}", path.display())
}

async fn open_rw(path: &Path) -> Result<DmaFile, String> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .dma_open(path)
        .await
        .map_err(|e| err("open O_DIRECT", path, e))
}

/// Writes `bytes` of a fixed pattern from offset 0 and syncs once.
async fn fill(file: &DmaFile, path: &Path, bytes: u64, io_bytes: usize) -> Result<(), String> {
    let mut off = 0;
    while off < bytes {
        let mut buf = file.alloc_dma_buffer(io_bytes);
        buf.as_bytes_mut().fill(0xa5);
        file.write_at(buf, off).await.map_err(|e| err("write", path, e))?;
        off += io_bytes as u64;
    }
    file.fdatasync().await.map_err(|e| err("fdatasync", path, e))
}

/// A file the baseline writes into, written whole once (outside any timing).
pub struct RawWriteFile {
    file: DmaFile,
    path: PathBuf,
    next_offset: u64,
}

impl RawWriteFile {
    pub async fn create(dir: &Path) -> Result<RawWriteFile, String> {
        let path = dir.join("raw-sequential-write");
        let file = open_rw(&path).await?;
        fill(&file, &path, RAW_WRITE_FILE_BYTES, RAW_IO_BYTES).await?;
        Ok(RawWriteFile { file, path, next_offset: 0 })
    }

    /// Sequential 1 MiB writes, each followed by fdatasync, for `duration`.
    pub async fn sequential_write(&mut self, duration: Duration) -> Result<RawWrite, String> {
        let start = Instant::now();
        let mut bytes = 0u64;
        for _ in 0..RAW_WRITE_OPS_MAX {
            if start.elapsed() >= duration {
                break;
            }
            let mut buf = self.file.alloc_dma_buffer(RAW_IO_BYTES);
            buf.as_bytes_mut().fill(0x5a);
            self.file.write_at(buf, self.next_offset).await.map_err(|e| err("write", &self.path, e))?;
            self.file.fdatasync().await.map_err(|e| err("fdatasync", &self.path, e))?;
            bytes += RAW_IO_BYTES as u64;
            self.next_offset = (self.next_offset + RAW_IO_BYTES as u64) % RAW_WRITE_FILE_BYTES;
        }
        Ok(RawWrite { bytes, elapsed: start.elapsed() })
    }

    pub async fn remove(self) -> Result<(), String> {
        self.file.close().await.map_err(|e| err("close", &self.path, e))?;
        std::fs::remove_file(&self.path).map_err(|e| err("remove", &self.path, e))
    }
}

/// Bytes written by `sequential_write` and how long it took.
#[derive(Clone, Copy, Debug, Default)]
pub struct RawWrite {
    pub bytes: u64,
    pub elapsed: Duration,
}

impl RawWrite {
    pub fn add(self, o: RawWrite) -> RawWrite {
        RawWrite { bytes: self.bytes + o.bytes, elapsed: self.elapsed + o.elapsed }
    }
    pub fn mb_per_sec(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64().max(1e-9) / 1e6
    }
}

/// The probe's file, written whole once.
pub struct ProbeFile {
    file: DmaFile,
    path: PathBuf,
    next_offset: u64,
    /// Every probe of every series.
    all: Latency,
}

/// One series of probe writes.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct ProbeSeries {
    pub ops: u64,
    #[serde(flatten)]
    pub fsync_latency_us: LatencySummary,
}

impl ProbeFile {
    pub async fn create(dir: &Path) -> Result<ProbeFile, String> {
        let path = dir.join("probe-4k");
        let file = open_rw(&path).await?;
        fill(&file, &path, PROBE_FILE_BYTES, PROBE_FILE_BYTES as usize).await?;
        Ok(ProbeFile { file, path, next_offset: 0, all: Latency::default() })
    }

    /// `ops` single 4 KiB write+fdatasync, one at a time, each timed
    /// (at most `PROBE_TIME_MAX` in all). One more goes first, untimed: the
    /// first fdatasync after a run also commits the file system's journal
    /// for the segments just removed (~35 ms here), which is not the disk.
    pub async fn probe(&mut self, ops: usize) -> Result<ProbeSeries, String> {
        let mut latency = Latency::default();
        let start = Instant::now();
        for k in 0..=ops {
            if start.elapsed() >= PROBE_TIME_MAX {
                break;
            }
            let mut buf = self.file.alloc_dma_buffer(PROBE_WRITE_BYTES);
            buf.as_bytes_mut().fill(0x3c);
            let t = Instant::now();
            self.file.write_at(buf, self.next_offset).await.map_err(|e| err("write", &self.path, e))?;
            self.file.fdatasync().await.map_err(|e| err("fdatasync", &self.path, e))?;
            if k > 0 {
                latency.record(t.elapsed());
            }
            self.next_offset = (self.next_offset + PROBE_WRITE_BYTES as u64) % PROBE_FILE_BYTES;
        }
        self.all.add(&latency);
        Ok(ProbeSeries { ops: latency.count(), fsync_latency_us: latency.summary() })
    }

    /// All series together.
    pub fn overall(&self) -> ProbeSeries {
        ProbeSeries { ops: self.all.count(), fsync_latency_us: self.all.summary() }
    }

    pub async fn remove(self) -> Result<(), String> {
        self.file.close().await.map_err(|e| err("close", &self.path, e))?;
        std::fs::remove_file(&self.path).map_err(|e| err("remove", &self.path, e))
    }
}

/// Bytes read by `sequential_read` and how long it took.
#[derive(Clone, Copy, Debug, Default)]
pub struct RawRead {
    pub files: usize,
    pub bytes: u64,
    pub elapsed: Duration,
}

/// Reads every `*.wal` file in `dir` whole, in name (= sequence) order, with
/// `RAW_IO_BYTES` O_DIRECT reads, `RAW_READ_DEPTH` in flight, touching nothing.
pub async fn sequential_read(dir: &Path) -> Result<RawRead, String> {
    let start = Instant::now();
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| err("list", dir, e))?
        .take(RAW_READ_FILES_MAX)
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == wal::layout::SEGMENT_SUFFIX))
        .collect();
    names.sort();
    let mut bytes = 0u64;
    for path in &names {
        let file = Rc::new(DmaFile::open(path).await.map_err(|e| err("open O_DIRECT", path, e))?);
        let size = file.file_size().await.map_err(|e| err("stat", path, e))?;
        let chunks: Vec<u64> = (0..size).step_by(RAW_IO_BYTES).collect();
        for group in chunks.chunks(RAW_READ_DEPTH) {
            let reads: Vec<_> = group
                .iter()
                .map(|&off| {
                    let file = file.clone();
                    let len = RAW_IO_BYTES.min((size - off) as usize);
                    glommio::spawn_local(async move { file.read_at_aligned(off, len).await.map(|r| r.len()) })
                })
                .collect();
            for (r, &off) in reads.into_iter().zip(group) {
                let n = r.await.map_err(|e| err("read", path, format_args!("at {off}: {e}")))?;
                bytes += n as u64;
            }
        }
        drop(file);
    }
    Ok(RawRead { files: names.len(), bytes, elapsed: start.elapsed() })
}
