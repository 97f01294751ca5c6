//! The log itself: staging, group-commit flushes, segment rolls, purge and
//! reads, for every region of one shard.
//!
//! `Wal` does no I/O of its own between awaits. Work that touches the disk is
//! handed out as a job value (`Flush`, `SpareJob`, `PurgeJob`, `ReadJob`)
//! that owns what it needs, so the caller can keep appending while the job
//! runs and report the result back. That is what makes group commit work:
//! appends that arrive while a flush is in flight wait in the stage and go out
//! together in the next one, and there is never more than one write+fdatasync
//! in flight (`start_flush` returns `Idle` until `finish_flush`).
//!
//! A write is acknowledged (its ticket becomes *durable*) only once the
//! record after its own is on disk too — the next batch, or a one-block
//! *seal* written at once when nothing else is staged. So a record no valid
//! record follows was never acknowledged, and recovery may cut it whatever
//! made it unreadable; a bad record with a valid one after it was written
//! whole, perhaps acknowledged, and is damage (docs/design.md, "Replica
//! amnesia"). The cost is a second, one-block flush on an idle log.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::rc::Rc;

use bytes::Bytes;

use crate::disk::{Disk, DiskFile};
use crate::error::{AppendError, FatalError, MaintenanceError, OpenError, ReadError};
use crate::format::{
    align_up, checkpoint_entry_bytes, encode_checkpoint, encode_record_header, encode_section, section_bytes,
    RecordHeader, RecordKind, RegionCheckpoint, SegmentHeader, BLOCK_BYTES, CHECKPOINT_HEAD_BYTES, CONF_PEERS_MAX,
    ENTRY_DATA_BYTES_MAX, META_BYTES_MAX, RECORD_HEADER_BYTES, SECTION_ENTRIES_MAX, SEGMENT_HEADER_BYTES,
};
use crate::layout::{free_name, parse_name, segment_name, tmp_name, FileKind};
use crate::options::{WalOptions, BLOCKING_REPORT_MAX, REGIONS_MAX};
use crate::recovery::{Recovery, RecoveryReport};
use crate::region::{apply_head, raises_floor, Head, IndexEntry, RegionLog, NOT_WRITTEN};
use crate::{ConfState, Entry, HardState, RegionId, RegionWrite, SnapshotMarker, Ticket, RECOVERED_TICKET};

/// Largest flush latency the histogram tells apart (longer ones count as it).
const FLUSH_LATENCY_US_MAX: u64 = 60_000_000;
/// Bytes zero-filled (and synced) at a time when a new segment is made.
const ZERO_FILL_CHUNK_BYTES: usize = 1 << 20;
const _: () = assert!(ZERO_FILL_CHUNK_BYTES <= crate::disk::IO_CHUNK_BYTES_MAX);

struct Staged {
    ticket: Ticket,
    region: RegionId,
    write: RegionWrite,
    compact_prev_term: u64,
    bytes: usize,
    /// The write drops entries that may be on disk (see `RegionLog::extra_pin`).
    unpins: bool,
    /// Upper bound of what encoding it adds to the region's checkpoint entry.
    growth: usize,
}

struct Active<F> {
    seq: u64,
    file: Rc<F>,
    /// Where the next record goes.
    write_offset: u64,
    /// The segment was used before: its old bytes lie past our records, so
    /// each write carries a zero block after its record (see `start_flush`).
    end_marker: bool,
    /// Mixed into every record checksum of this segment (see `SegmentHeader`).
    nonce: u64,
}

/// Counters since open.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WalStats {
    pub flushes: u64,
    pub bytes_written: u64,
    pub writes_flushed: u64,
    /// Sum over flushes of the distinct regions in each.
    pub regions_flushed: u64,
    pub segment_rolls: u64,
    /// Flushes that had to wait for a spare segment.
    pub roll_stalls: u64,
    /// Flushes that carried no write: they only acknowledged the record before.
    pub seals: u64,
    pub segments_recycled: u64,
    pub segments_removed: u64,
    pub spares_created: u64,
    pub spares_recycled: u64,
    /// Spare segments that could not be prepared (each retried later).
    pub spare_failures: u64,
}

/// Why the last spare segment could not be prepared, and how many tries
/// in a row failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpareFailure {
    /// ENOSPC or EDQUOT: the disk is full.
    pub disk_full: bool,
    pub attempts: u32,
    pub error: String,
}

/// What `start_flush` decided.
pub enum FlushStart<D: Disk> {
    /// Nothing staged, or a flush is already in flight.
    Idle,
    /// The batch needs a new segment and no spare is ready: run `spare_job`.
    NeedSpare,
    Flush(Flush<D>),
}

/// One write + one fdatasync. Owns everything it needs.
#[must_use]
pub struct Flush<D: Disk> {
    file: Rc<D::File>,
    buf: D::Buf,
    pub seq: u64,
    pub offset: u64,
    pub bytes: usize,
    pub writes: usize,
    pub regions: usize,
    /// Every ticket up to this one is on disk once the flush completes
    /// (durable once the next flush completes too).
    pub written_ticket: Ticket,
}

/// A completed flush.
#[derive(Debug)]
pub struct FlushDone {
    pub written_ticket: Ticket,
    pub bytes: usize,
    /// How long the write + fdatasync took.
    pub latency: std::time::Duration,
}

impl<D: Disk> Flush<D> {
    pub async fn execute(self) -> Result<FlushDone, FatalError> {
        let (seq, offset) = (self.seq, self.offset);
        let fatal = |op: &'static str, e: std::io::Error| FatalError { op, seq, offset, message: e.to_string() };
        fail::fail_point!("wal::flush::write", |_| Err(FatalError {
            op: "write",
            seq,
            offset,
            message: "failpoint".into()
        }));
        let start = std::time::Instant::now();
        self.file.write_at(self.buf, offset).await.map_err(|e| fatal("write", e))?;
        fail::fail_point!("wal::flush::sync", |_| Err(FatalError {
            op: "fdatasync",
            seq,
            offset,
            message: "failpoint".into()
        }));
        self.file.sync_data().await.map_err(|e| fatal("fdatasync", e))?;
        Ok(FlushDone { written_ticket: self.written_ticket, bytes: self.bytes, latency: start.elapsed() })
    }
}

/// A segment ready to be rolled into: header written and synced, named.
pub struct Spare<F> {
    seq: u64,
    file: Rc<F>,
    recycled: bool,
    nonce: u64,
}

/// Prepares the next segment off the write path: renames a recycled one, or
/// creates and zero-fills a new one.
#[must_use]
pub struct SpareJob<D: Disk> {
    disk: D,
    seq: u64,
    recycle: Option<u64>,
    segment_bytes: u64,
}

impl<D: Disk> SpareJob<D> {
    pub async fn run(self) -> Result<Spare<D::File>, MaintenanceError> {
        let d = &self.disk;
        let err = |op, name: &str, source| MaintenanceError { op, path: d.describe(name), source };
        let mut reuse = None;
        if let Some(old) = self.recycle {
            let name = free_name(old);
            let file = d.open(&name).await.map_err(|e| err("open", &name, e))?;
            if file.size().await.map_err(|e| err("stat", &name, e))? == self.segment_bytes {
                reuse = Some((file, name));
            } else {
                // cut for another segment size: not worth reusing
                drop(file);
                d.remove(&name).await.map_err(|e| err("remove", &name, e))?;
            }
        }
        let (file, from, recycled) = match reuse {
            Some((file, name)) => (file, name, true),
            None => {
                let name = tmp_name(self.seq);
                let f = d.create(&name).await.map_err(|e| err("create", &name, e))?;
                let filled = zero_fill(d, &f, self.segment_bytes).await;
                if let Err((op, e)) = filled {
                    // (a full disk gets its space back; what is not removed here the next open removes)
                    let _ = d.remove(&name).await;
                    return Err(err(op, &name, e));
                }
                (f, name, false)
            }
        };
        // The header, and a zero block where the first record will go: a
        // recycled segment's old first record must not pass for a torn write.
        let mut head = d.alloc_buf(SEGMENT_HEADER_BYTES + BLOCK_BYTES);
        head.fill(0);
        let nonce = d.nonce();
        SegmentHeader { seq: self.seq, segment_bytes: self.segment_bytes, nonce }.encode(&mut head);
        let to = segment_name(self.seq);
        let finished = async {
            file.write_at(head, 0).await.map_err(|e| err("write header", &from, e))?;
            file.sync_data().await.map_err(|e| err("fdatasync", &from, e))?;
            d.rename(&from, &to).await.map_err(|e| err("rename", &from, e))?;
            d.sync_dir().await.map_err(|e| err("fsync directory", &to, e))
        }
        .await;
        if let Err(e) = finished {
            if !recycled {
                // (a new segment's space goes back: on a full disk each try would keep one)
                let _ = d.remove(&from).await;
                let _ = d.remove(&to).await;
            }
            return Err(e);
        }
        Ok(Spare { seq: self.seq, file: Rc::new(file), recycled, nonce })
    }
}

/// Zero-fills a new segment so later writes overwrite written blocks (no
/// extent conversion on the commit path). Each chunk is synced on its own:
/// one fdatasync of a whole segment would make the device flush tens of MiB
/// at once, and every commit waiting behind that flush would see its
/// latency jump. On failure: the operation and its error.
async fn zero_fill<D: Disk>(d: &D, f: &D::File, segment_bytes: u64) -> Result<(), (&'static str, io::Error)> {
    let mut off = 0u64;
    while off < segment_bytes {
        let n = (segment_bytes - off).min(ZERO_FILL_CHUNK_BYTES as u64) as usize;
        let mut buf = d.alloc_buf(n);
        buf.fill(0);
        f.write_at(buf, off).await.map_err(|e| ("zero-fill", e))?;
        f.sync_data().await.map_err(|e| ("fdatasync", e))?;
        off += n as u64;
    }
    Ok(())
}

/// Segments no region needs any more, and who holds back the rest.
pub struct PurgePlan<D: Disk> {
    /// Segments to recycle or remove (already out of the live set).
    pub segments: Vec<u64>,
    /// Regions pinning old segments, oldest pin first: (region, segment).
    pub blocking: Vec<(RegionId, u64)>,
    job: Option<PurgeJob<D>>,
}

impl<D: Disk> PurgePlan<D> {
    pub fn take_job(&mut self) -> Option<PurgeJob<D>> {
        self.job.take()
    }
}

#[must_use]
pub struct PurgeJob<D: Disk> {
    disk: D,
    recycle: Vec<u64>,
    remove: Vec<u64>,
}

/// What a purge did.
#[derive(Debug, Default)]
pub struct PurgeDone {
    pub recycled: Vec<u64>,
    pub removed: Vec<u64>,
}

impl<D: Disk> PurgeJob<D> {
    pub async fn run(self) -> Result<PurgeDone, MaintenanceError> {
        let d = &self.disk;
        let err = |op, name: &str, source| MaintenanceError { op, path: d.describe(name), source };
        // Oldest first, each made durable before the next: after a crash the
        // log never has a hole in the middle.
        for &seq in &self.recycle {
            let name = segment_name(seq);
            d.rename(&name, &free_name(seq)).await.map_err(|e| err("rename", &name, e))?;
            d.sync_dir().await.map_err(|e| err("fsync directory", "", e))?;
        }
        for &seq in &self.remove {
            let name = segment_name(seq);
            d.remove(&name).await.map_err(|e| err("remove", &name, e))?;
            d.sync_dir().await.map_err(|e| err("fsync directory", "", e))?;
        }
        Ok(PurgeDone { recycled: self.recycle, removed: self.remove })
    }
}

/// One read: consecutive entries of a region that lie close together in a segment.
struct ReadSpan<F> {
    file: Rc<F>,
    path: String,
    /// Offset of the first entry's data.
    start: u64,
    /// (index, where it is)
    entries: Vec<(u64, IndexEntry)>,
}

/// Reads of entries that are no longer in memory.
#[must_use]
pub struct ReadJob<F> {
    spans: Vec<ReadSpan<F>>,
}

impl<F: DiskFile> ReadJob<F> {
    pub async fn run(self) -> Result<Vec<Entry>, ReadError> {
        let mut out = vec![];
        for ReadSpan { file, path, start, entries } in self.spans {
            let last = entries.last().expect("span has entries").1;
            let len = (last.offset as u64 + last.len as u64 - start) as usize;
            let buf = file.read_at(start, len).await.map_err(|e| ReadError::Io {
                path: path.clone(),
                offset: start,
                message: e.to_string(),
            })?;
            for (index, e) in entries {
                let from = (e.offset as u64 - start) as usize;
                let Some(data) = buf.get(from..from + e.len as usize) else {
                    return Err(ReadError::Changed { index });
                };
                // the checksum guards the bytes; a purge may have recycled the segment under us
                if crc32c::crc32c(data) != e.crc {
                    return Err(ReadError::Changed { index });
                }
                out.push(Entry { index, term: e.term, entry_type: e.entry_type, data: Bytes::copy_from_slice(data) });
            }
        }
        Ok(out)
    }
}

/// One shard's write-ahead log.
pub struct Wal<D: Disk> {
    disk: D,
    opts: WalOptions,
    regions: BTreeMap<RegionId, RegionLog>,
    staged: VecDeque<Staged>,
    staged_bytes: usize,
    next_ticket: Ticket,
    /// Every ticket up to this one is in a record on disk.
    written_ticket: Ticket,
    /// Every ticket up to this one is in a record that another record on
    /// disk follows: acknowledged.
    durable_ticket: Ticket,
    next_lsn: u64,
    /// Segments holding records, by sequence number (the active one included).
    segments: BTreeMap<u64, Rc<D::File>>,
    active: Option<Active<D::File>>,
    spare: Option<Spare<D::File>>,
    spare_job_out: bool,
    /// The last spare job's failure, until one succeeds.
    spare_failure: Option<SpareFailure>,
    /// A purge job is running: the next plan waits, so that segments are
    /// always removed oldest first (a hole in the middle would read as lost
    /// records after a crash).
    purge_job_out: bool,
    free: VecDeque<u64>,
    next_seq: u64,
    in_flight: Option<Ticket>,
    fatal: Option<FatalError>,
    /// Sum of every region's checkpoint entry as written: what the next
    /// segment's checkpoint would hold at most.
    written_checkpoint_bytes: usize,
    /// Regions whose last staged write forgets them (`RegionWrite::forget`).
    forgetting: std::collections::BTreeSet<RegionId>,
    /// Sum of the growth bounds of staged writes not yet encoded.
    pending_checkpoint_growth: usize,
    needs_catch_up: bool,
    /// The end of the last stretch this open dropped, as (segment, offset).
    lost_up_to: Option<(u64, u64)>,
    stats: WalStats,
    /// write + fdatasync time of every flush, in µs (reset by the caller).
    flush_latency_us: hdrhistogram::Histogram<u64>,
}

impl<D: Disk> Wal<D> {
    /// Opens the log in `disk`, recovering what is there.
    pub async fn open(disk: D, opts: WalOptions) -> Result<(Wal<D>, RecoveryReport), OpenError> {
        opts.validate().map_err(OpenError::Options)?;
        let io = |op, name: &str, source| OpenError::Io { op, path: disk.describe(name), source };
        let mut segs = vec![];
        let mut free = vec![];
        let mut max_seq = 0;
        let mut dir_dirty = false;
        for name in disk.list().await.map_err(|e| io("list", "", e))? {
            match parse_name(&name) {
                Some(FileKind::Segment(s)) => segs.push(s),
                Some(FileKind::Free(s)) => free.push(s),
                Some(FileKind::Tmp(s)) => {
                    // a segment whose zero-fill never finished
                    disk.remove(&name).await.map_err(|e| io("remove", &name, e))?;
                    dir_dirty = true;
                    max_seq = max_seq.max(s);
                }
                None => {}
            }
        }
        segs.sort_unstable();
        free.sort_unstable();
        max_seq = max_seq.max(segs.last().copied().unwrap_or(0)).max(free.last().copied().unwrap_or(0));

        let mut recovery = Recovery::new(opts.recovery_mode);
        let mut opened = Vec::with_capacity(segs.len());
        for &seq in &segs {
            let name = segment_name(seq);
            let file = disk.open(&name).await.map_err(|e| io("open", &name, e))?;
            let size = file.size().await.map_err(|e| io("stat", &name, e))?;
            opened.push((seq, Rc::new(file), size as usize));
        }
        // Read segment k+1 while segment k is replayed; two buffers, reused.
        let mut current = Vec::new();
        let mut spare_buf = Vec::new();
        if let Some((seq, file, size)) = opened.first() {
            current = file.read_whole(*size, current).await.map_err(|e| io("read", &segment_name(*seq), e))?;
        }
        for k in 0..opened.len() {
            let buf = std::mem::take(&mut spare_buf);
            let read_next = async {
                match opened.get(k + 1) {
                    Some((seq, file, size)) => {
                        file.read_whole(*size, buf).await.map_err(|e| io("read", &segment_name(*seq), e))
                    }
                    None => Ok(buf),
                }
            };
            let replay = async { recovery.add_segment(opened[k].0, &current) };
            let (read, replayed) = futures_lite::future::zip(read_next, replay).await;
            replayed?;
            spare_buf = std::mem::replace(&mut current, read?);
        }
        let mut files: BTreeMap<u64, Rc<D::File>> = opened.into_iter().map(|(seq, file, _)| (seq, file)).collect();
        let recovered = recovery.finish()?;
        let report = recovered.report.clone();
        // Before anything on disk changes: the recorded state must fit the
        // checkpoint that opens each segment, or no write could ever succeed.
        let recorded: usize = recovered.regions.values().map(|r| checkpoint_entry_bytes(&r.written)).sum();
        if recorded > opts.checkpoint_bytes_max() {
            return Err(OpenError::Options(format!(
                "the regions' recorded state ({recorded} bytes) does not fit the checkpoint that opens each segment \
                 ({} bytes with these options): use larger segments or a smaller batch limit",
                opts.checkpoint_bytes_max()
            )));
        }

        if let Some(t) = &report.torn_tail {
            // Cut the torn record off for good: zero its first block, so the
            // next recovery sees the clean end it is.
            let file = &files[&t.seq];
            let mut block = disk.alloc_buf(BLOCK_BYTES);
            block.fill(0);
            let name = segment_name(t.seq);
            file.write_at(block, t.offset).await.map_err(|e| io("cut torn tail of", &name, e))?;
            file.sync_data().await.map_err(|e| io("fdatasync", &name, e))?;
            tracing::warn!(segment = t.seq, offset = t.offset, reason = %t.reason, "cut torn tail of the WAL");
        }
        if !report.dropped.is_empty() {
            tracing::error!(report = %report, "WAL opened in tolerant mode with records dropped");
        }

        let live: std::collections::BTreeSet<u64> = recovered.segments.iter().map(|s| s.seq).collect();
        // Segments with no records (a spare that was never used, or one whose
        // first write tore) are recycled like purged ones: preparing a spare
        // rewrites the header with a fresh nonce.
        for &seq in recovered.empty_tail_segments.iter().chain(&recovered.empty_inner_segments) {
            files.remove(&seq);
            disk.rename(&segment_name(seq), &free_name(seq)).await.map_err(|e| io("rename", &segment_name(seq), e))?;
            free.push(seq);
            dir_dirty = true;
        }
        files.retain(|seq, _| live.contains(seq));
        free.sort_unstable();
        while free.len() > opts.free_segments_max {
            let seq = free.remove(0);
            disk.remove(&free_name(seq)).await.map_err(|e| io("remove", &free_name(seq), e))?;
            dir_dirty = true;
        }
        if dir_dirty {
            disk.sync_dir().await.map_err(|e| io("fsync directory", "", e))?;
        }

        let regions = recovered.regions;
        // What was recovered is ticket RECOVERED_TICKET: written, and durable
        // once a record follows it (the first flush, a seal if nothing else).
        let recovered_ticket = if report.records > 0 { RECOVERED_TICKET } else { 0 };
        let written_checkpoint_bytes: usize = regions.values().map(|r| checkpoint_entry_bytes(&r.written)).sum();
        let wal = Wal {
            disk,
            regions,
            staged: VecDeque::new(),
            staged_bytes: 0,
            next_ticket: RECOVERED_TICKET + 1,
            written_ticket: RECOVERED_TICKET,
            durable_ticket: RECOVERED_TICKET - recovered_ticket,
            next_lsn: recovered.next_lsn,
            segments: files,
            active: None,
            spare: None,
            spare_job_out: false,
            spare_failure: None,
            purge_job_out: false,
            free: free.into(),
            next_seq: max_seq + 1,
            in_flight: None,
            fatal: None,
            written_checkpoint_bytes,
            forgetting: Default::default(),
            pending_checkpoint_growth: 0,
            needs_catch_up: report.needs_catch_up,
            lost_up_to: report.dropped.iter().map(|d| (d.seq, d.offset + d.bytes)).max(),
            stats: WalStats::default(),
            flush_latency_us: hdrhistogram::Histogram::new_with_bounds(1, FLUSH_LATENCY_US_MAX, 2)
                .expect("valid bounds"),
            opts,
        };
        Ok((wal, report))
    }

    // ----- staging -------------------------------------------------------

    /// Stages a region's write for the next flush and returns its ticket.
    /// Its entries are readable at once (raft needs that before they are
    /// durable); the write is durable when `durable_ticket() >= ticket`.
    /// An empty write gets the ticket of the last staged write: it completes
    /// in order behind it without I/O.
    pub fn append(&mut self, region: RegionId, mut write: RegionWrite) -> Result<Ticket, AppendError> {
        if let Some(f) = &self.fatal {
            return Err(f.clone().into());
        }
        if write.is_empty() {
            return Ok(self.next_ticket - 1);
        }
        self.check_limits(region, &write)?;
        let is_new = !self.regions.contains_key(&region);
        // (a region whose forget write is staged counts as gone, as it does for the writer)
        if is_new && self.regions.len().saturating_sub(self.forgetting.len()) >= REGIONS_MAX {
            return Err(AppendError::Invalid {
                region,
                what: format!("log already holds REGIONS_MAX ({REGIONS_MAX}) regions"),
            });
        }
        let empty = RegionLog::new(region);
        let log = self.regions.get(&region).unwrap_or(&empty);
        log.check(region, &write)?;
        // The checkpoint that opens the next segment must fit its budget: it
        // holds the written state, which each staged write can grow by at
        // most `growth` once encoded (an upper bound, whatever the state).
        let base = if is_new { checkpoint_entry_bytes(&RegionCheckpoint::default()) } else { 0 };
        let growth = checkpoint_growth_max(&write);
        let budget = self.opts.checkpoint_bytes_max();
        if self.written_checkpoint_bytes + self.pending_checkpoint_growth + base + growth > budget {
            return Err(AppendError::CheckpointFull { max: budget });
        }

        let ticket = self.next_ticket;
        let log = self.regions.entry(region).or_insert_with(|| RegionLog::new(region));
        self.written_checkpoint_bytes += base;
        // A write that drops entries (snapshot, compaction, tombstone, or an
        // overwrite of the tail) must keep their segments pinned until it is
        // itself encoded: until then the records on disk still need them.
        let unpins = raises_floor(&write) || write.entries.first().is_some_and(|e| e.index <= log.last_index());
        if unpins {
            log.extra_pin = log.extra_pin.min(log.pin());
            log.pending_floor_writes += 1;
        }
        if let Some(s) = write.snapshot {
            log.reset_to_snapshot(s.index, s.term);
        }
        if let Some(first) = write.entries.first() {
            let entries = &write.entries;
            log.put_entries(first.index, entries.len(), |k| IndexEntry {
                term: entries[k].term,
                ticket,
                seq: NOT_WRITTEN,
                offset: 0,
                len: entries[k].data.len() as u32,
                crc: 0,
                entry_type: entries[k].entry_type,
            });
            for e in entries {
                log.cache_push(e.data.clone());
            }
        }
        let mut compact_prev_term = 0;
        if let Some(to) = write.compact_to {
            if to <= log.first_index() {
                write.compact_to = None; // already there; nothing to record
            } else {
                compact_prev_term = log.term(to - 1).expect("checked: compact_to is within the log");
                log.compact(to, compact_prev_term);
            }
        }
        if write.tombstone {
            log.drop_log();
        }
        let (first_index, prev_term) = (log.state.first_index, log.state.prev_term);
        apply_head(&mut log.state, Head::of_write(&write, compact_prev_term), !write.entries.is_empty());
        if !write.forget {
            (log.state.first_index, log.state.prev_term) = (first_index, prev_term);
        }

        if write.is_empty() {
            // only a compaction that was already done: nothing to write
            if unpins {
                log.pending_floor_writes -= 1;
                if log.pending_floor_writes == 0 {
                    log.extra_pin = NOT_WRITTEN;
                }
            }
            return Ok(self.next_ticket - 1);
        }
        let bytes = section_bytes(&write);
        if write.forget {
            self.forgetting.insert(region);
        } else if !self.forgetting.is_empty() {
            // (a write after a staged forget revives the region)
            self.forgetting.remove(&region);
        }
        self.next_ticket += 1;
        self.staged_bytes += bytes;
        self.pending_checkpoint_growth += growth;
        self.staged.push_back(Staged { ticket, region, write, compact_prev_term, bytes, unpins, growth });
        Ok(ticket)
    }

    /// Whether `write` fits beside what is already staged (else `append`
    /// answers `Busy` until a flush takes the staged bytes). With nothing
    /// staged there is always room: `append` then judges the write alone.
    pub fn has_room_for(&self, write: &RegionWrite) -> bool {
        self.staged_bytes == 0 || self.staged_bytes + section_bytes(write) <= self.opts.staged_bytes_max
    }

    fn check_limits(&self, region: RegionId, write: &RegionWrite) -> Result<(), AppendError> {
        let bytes = section_bytes(write);
        let max = self.opts.batch_bytes_max;
        if RECORD_HEADER_BYTES + bytes > max {
            return Err(AppendError::TooLarge { bytes, max });
        }
        if self.staged_bytes + bytes > self.opts.staged_bytes_max {
            return Err(AppendError::Busy { staged_bytes: self.staged_bytes, max: self.opts.staged_bytes_max });
        }
        if write.entries.len() > SECTION_ENTRIES_MAX {
            return Err(AppendError::Invalid {
                region,
                what: format!("more than SECTION_ENTRIES_MAX ({SECTION_ENTRIES_MAX}) entries"),
            });
        }
        if let Some(e) = write.entries.iter().find(|e| e.data.len() > ENTRY_DATA_BYTES_MAX) {
            return Err(AppendError::EntryTooLarge {
                region,
                index: e.index,
                bytes: e.data.len(),
                max: ENTRY_DATA_BYTES_MAX,
            });
        }
        if write.entries.first().is_some_and(|e| e.index == 0) {
            return Err(AppendError::Invalid { region, what: "entry index 0".into() });
        }
        if write.meta.as_ref().is_some_and(|m| m.len() > META_BYTES_MAX) {
            return Err(AppendError::Invalid { region, what: format!("meta over META_BYTES_MAX ({META_BYTES_MAX})") });
        }
        if write.conf_state.as_ref().is_some_and(|c| c.peer_count() > CONF_PEERS_MAX) {
            return Err(AppendError::Invalid {
                region,
                what: format!("conf state over CONF_PEERS_MAX ({CONF_PEERS_MAX})"),
            });
        }
        if write.snapshot.is_some_and(|s| s.index == 0) {
            return Err(AppendError::Invalid { region, what: "snapshot at index 0".into() });
        }
        if write.compact_to == Some(0) {
            return Err(AppendError::Invalid { region, what: "compact_to(0)".into() });
        }
        Ok(())
    }

    /// Drops entries below `index` of a region (durable with the next flush).
    pub fn compact_to(&mut self, region: RegionId, index: u64) -> Result<Ticket, AppendError> {
        self.append(region, RegionWrite { compact_to: Some(index), ..Default::default() })
    }

    // ----- flushing ------------------------------------------------------

    /// Takes the staged writes (up to the batch limit) as one record and
    /// returns the write+fdatasync to run — with nothing staged, a seal when
    /// the last record written is not yet acknowledged. `Idle` while one is
    /// in flight.
    pub fn start_flush(&mut self) -> FlushStart<D> {
        if self.in_flight.is_some() || !self.wants_flush() || self.fatal.is_some() {
            return FlushStart::Idle;
        }
        let payload_max = self.opts.batch_bytes_max - RECORD_HEADER_BYTES;
        let mut n = 0;
        let mut payload = 0;
        for s in &self.staged {
            if n > 0 && payload + s.bytes > payload_max {
                break;
            }
            payload += s.bytes;
            n += 1;
        }
        let roll = match &self.active {
            None => true,
            Some(a) => a.write_offset + align_up(RECORD_HEADER_BYTES + payload) as u64 > self.opts.segment_bytes,
        };
        if roll && self.spare.is_none() {
            self.stats.roll_stalls += 1;
            return FlushStart::NeedSpare;
        }
        // A rolling flush writes one checkpoint record: the state of every
        // region, then this batch. One write is always one record, so a torn
        // write is one torn record, whatever order its blocks reached the disk.
        let checkpoint_payload: usize = if roll {
            CHECKPOINT_HEAD_BYTES + checkpointed(&self.regions).map(checkpoint_entry_bytes).sum::<usize>()
        } else {
            0
        };
        let total = align_up(RECORD_HEADER_BYTES + checkpoint_payload + payload);

        if roll {
            let spare = self.spare.take().expect("checked above");
            assert!(
                SEGMENT_HEADER_BYTES + total <= self.opts.segment_bytes as usize,
                "checkpoint ({checkpoint_payload} bytes) + batch ({payload} bytes) overflow a segment: limits are wrong"
            );
            assert!(spare.seq > self.active.as_ref().map_or(0, |a| a.seq), "segments roll forward");
            self.segments.insert(spare.seq, spare.file.clone());
            self.active = Some(Active {
                seq: spare.seq,
                file: spare.file,
                write_offset: SEGMENT_HEADER_BYTES as u64,
                end_marker: spare.recycled,
                nonce: spare.nonce,
            });
            self.stats.segment_rolls += 1;
        }
        let active = self.active.as_mut().expect("active segment");
        let (seq, base, nonce) = (active.seq, active.write_offset, active.nonce);
        // In a reused segment, the block after the last record must read as
        // zeros: then a non-zero bad block at the end of the log is always a
        // torn or damaged record (reported), never the segment's old bytes.
        // The next write overwrites the marker; it was never acknowledged.
        let marker = active.end_marker && base + (total as u64) < self.opts.segment_bytes;
        let write_bytes = total + if marker { BLOCK_BYTES } else { 0 };
        let mut buf = self.disk.alloc_buf(write_bytes);
        buf[total..].fill(0);

        let rec = &mut buf[..total];
        let mut pos = RECORD_HEADER_BYTES;
        if roll {
            let count = checkpointed(&self.regions).count() as u32;
            pos += encode_checkpoint(&mut rec[pos..], self.needs_catch_up, count, checkpointed(&self.regions));
            debug_assert_eq!(pos, RECORD_HEADER_BYTES + checkpoint_payload);
        }
        let mut last_ticket = self.written_ticket;
        let mut regions_in_batch = Vec::with_capacity(n);
        let mut forgotten = vec![];
        for s in self.staged.drain(..n) {
            let log = self.regions.get_mut(&s.region).expect("staged region exists");
            let section_start = pos;
            let first_index = s.write.entries.first().map(|e| e.index);
            let written = encode_section(&mut rec[pos..], s.region, &s.write, s.compact_prev_term, |k, off| {
                let index = first_index.expect("entries") + k as u64;
                let e = &s.write.entries[k];
                let crc = crc32c::crc32c(&e.data);
                if let Some(ie) = log_entry_mut(log, index) {
                    if ie.ticket == s.ticket {
                        ie.seq = seq;
                        ie.offset = (base as usize + section_start + off) as u32;
                        ie.crc = crc;
                    }
                }
            });
            debug_assert_eq!(written, s.bytes);
            pos += written;
            let written_before = checkpoint_entry_bytes(&log.written);
            apply_head(&mut log.written, Head::of_write(&s.write, s.compact_prev_term), !s.write.entries.is_empty());
            let written_after = checkpoint_entry_bytes(&log.written);
            debug_assert!(written_after <= written_before + s.growth, "growth bound holds");
            self.written_checkpoint_bytes = self.written_checkpoint_bytes + written_after - written_before;
            self.pending_checkpoint_growth -= s.growth;
            if s.unpins {
                log.pending_floor_writes -= 1;
                if log.pending_floor_writes == 0 {
                    log.extra_pin = NOT_WRITTEN;
                }
            }
            self.staged_bytes -= s.bytes;
            last_ticket = s.ticket;
            regions_in_batch.push(s.region);
            if s.write.forget {
                forgotten.push(s.region);
            }
        }
        // a forgotten region leaves the map once nothing revived it since
        for region in forgotten {
            let log = &self.regions[&region];
            let revived = log.state != RegionLog::new(region).state
                || !log.entries.is_empty()
                || self.staged.iter().any(|s| s.region == region);
            if !revived {
                self.forgetting.remove(&region);
                let log = self.regions.remove(&region).expect("checked");
                self.written_checkpoint_bytes -= checkpoint_entry_bytes(&log.written);
            }
        }
        debug_assert_eq!(pos, RECORD_HEADER_BYTES + checkpoint_payload + payload);
        rec[pos..].fill(0);
        let header = RecordHeader {
            kind: if roll { RecordKind::Checkpoint } else { RecordKind::Batch },
            payload_bytes: (pos - RECORD_HEADER_BYTES) as u32,
            lsn: self.next_lsn,
            section_count: n as u32,
        };
        encode_record_header(rec, seq, nonce, &header);
        self.next_lsn += 1;
        active.write_offset += total as u64;
        regions_in_batch.sort_unstable();
        regions_in_batch.dedup();

        self.in_flight = Some(last_ticket);
        self.stats.flushes += 1;
        self.stats.seals += u64::from(n == 0);
        self.stats.bytes_written += write_bytes as u64;
        self.stats.writes_flushed += n as u64;
        self.stats.regions_flushed += regions_in_batch.len() as u64;
        FlushStart::Flush(Flush {
            file: active.file.clone(),
            buf,
            seq,
            offset: base,
            bytes: write_bytes,
            writes: n,
            regions: regions_in_batch.len(),
            written_ticket: last_ticket,
        })
    }

    /// Records the outcome of the flush in flight. An error stops the log
    /// for good (every later call fails with it).
    pub fn finish_flush(&mut self, result: Result<FlushDone, FatalError>) -> Result<Ticket, FatalError> {
        let expected = self.in_flight.take().expect("finish_flush without a flush in flight");
        match result {
            Ok(done) => {
                assert_eq!(done.written_ticket, expected, "flushes complete in order");
                assert!(done.written_ticket >= self.written_ticket);
                // this record follows the one written before: that one is acknowledged
                self.durable_ticket = self.written_ticket;
                self.written_ticket = done.written_ticket;
                assert!(self.durable_ticket <= self.written_ticket);
                self.flush_latency_us.saturating_record(done.latency.as_micros() as u64);
                Ok(self.durable_ticket)
            }
            Err(e) => {
                tracing::error!(error = %e, "WAL write failed: no further writes will be acknowledged");
                self.fatal = Some(e.clone());
                Err(e)
            }
        }
    }

    /// The next spare segment to prepare, if one is wanted and none is being
    /// prepared. Run it off the write path and hand the result to `add_spare`.
    pub fn spare_job(&mut self) -> Option<SpareJob<D>> {
        if self.spare.is_some() || self.spare_job_out || self.fatal.is_some() {
            return None;
        }
        self.spare_job_out = true;
        let seq = self.next_seq;
        self.next_seq += 1;
        let recycle = self.free.pop_front();
        Some(SpareJob { disk: self.disk.clone(), seq, recycle, segment_bytes: self.opts.segment_bytes })
    }

    pub fn add_spare(&mut self, result: Result<Spare<D::File>, MaintenanceError>) -> Result<(), MaintenanceError> {
        self.spare_job_out = false;
        let spare = match result {
            Ok(spare) => spare,
            Err(e) => {
                self.stats.spare_failures += 1;
                let attempts = self.spare_failure.as_ref().map_or(0, |f| f.attempts) + 1;
                self.spare_failure = Some(SpareFailure { disk_full: e.is_disk_full(), attempts, error: e.to_string() });
                return Err(e);
            }
        };
        self.spare_failure = None;
        if spare.recycled {
            self.stats.spares_recycled += 1;
        } else {
            self.stats.spares_created += 1;
        }
        self.spare = Some(spare);
        Ok(())
    }

    // ----- purge ---------------------------------------------------------

    /// Takes the segments that no region needs out of the live set. Must be
    /// called with no flush in flight, so the state it reads is the durable
    /// one. Returns the job that recycles them and the regions that block
    /// older segments. One job at a time: until its `purge_done`, plans are
    /// empty, so segments always go oldest first.
    pub fn purge(&mut self) -> PurgePlan<D> {
        assert!(self.in_flight.is_none(), "purge reads the durable state: call it between flushes");
        let Some(active_seq) = self.active.as_ref().map(|a| a.seq) else {
            return PurgePlan { segments: vec![], blocking: vec![], job: None };
        };
        let mut pins: Vec<(u64, RegionId)> =
            self.regions.iter().map(|(&id, r)| (r.pin(), id)).filter(|&(p, _)| p < active_seq).collect();
        pins.sort_unstable();
        if self.purge_job_out {
            let blocking = pins.iter().take(BLOCKING_REPORT_MAX).map(|&(p, id)| (id, p)).collect();
            return PurgePlan { segments: vec![], blocking, job: None };
        }
        let floor = pins.first().map_or(active_seq, |p| p.0);

        let segments: Vec<u64> = self.segments.range(..floor).map(|(&s, _)| s).collect();
        let mut recycle = vec![];
        let mut remove = vec![];
        for &seq in &segments {
            self.segments.remove(&seq);
            if self.free.len() + recycle.len() < self.opts.free_segments_max {
                recycle.push(seq);
            } else {
                remove.push(seq);
            }
        }
        let blocking = pins.iter().take(BLOCKING_REPORT_MAX).map(|&(p, id)| (id, p)).collect();
        let job = (!segments.is_empty()).then(|| PurgeJob { disk: self.disk.clone(), recycle, remove });
        self.purge_job_out = job.is_some();
        PurgePlan { segments, blocking, job }
    }

    pub fn purge_done(&mut self, result: Result<PurgeDone, MaintenanceError>) -> Result<(), MaintenanceError> {
        self.purge_job_out = false;
        let done = result?;
        self.stats.segments_recycled += done.recycled.len() as u64;
        self.stats.segments_removed += done.removed.len() as u64;
        self.free.extend(done.recycled);
        Ok(())
    }

    // ----- reads ---------------------------------------------------------

    fn region(&self, region: RegionId) -> Result<&RegionLog, ReadError> {
        self.regions.get(&region).ok_or(ReadError::UnknownRegion(region))
    }

    pub fn regions(&self) -> impl Iterator<Item = RegionId> + '_ {
        self.regions.keys().copied()
    }
    pub fn first_index(&self, region: RegionId) -> Option<u64> {
        self.regions.get(&region).map(|r| r.first_index())
    }
    pub fn last_index(&self, region: RegionId) -> Option<u64> {
        self.regions.get(&region).map(|r| r.last_index())
    }
    /// Term of entry `i` in `[first_index - 1, last_index]`; never needs I/O.
    pub fn term(&self, region: RegionId, i: u64) -> Option<u64> {
        self.regions.get(&region).and_then(|r| r.term(i))
    }
    pub fn hard_state(&self, region: RegionId) -> Option<HardState> {
        self.regions.get(&region).and_then(|r| r.state.hard_state)
    }
    pub fn conf_state(&self, region: RegionId) -> Option<&ConfState> {
        self.regions.get(&region).and_then(|r| r.state.conf_state.as_ref())
    }
    pub fn meta(&self, region: RegionId) -> Option<&Bytes> {
        self.regions.get(&region).and_then(|r| r.state.meta.as_ref())
    }
    pub fn snapshot(&self, region: RegionId) -> Option<SnapshotMarker> {
        self.regions.get(&region).and_then(|r| r.state.snapshot)
    }
    pub fn is_tombstone(&self, region: RegionId) -> bool {
        self.regions.get(&region).is_some_and(|r| r.state.tombstone)
    }
    /// The region's recorded state (what a checkpoint would hold).
    pub fn region_state(&self, region: RegionId) -> Option<&RegionCheckpoint> {
        self.regions.get(&region).map(|r| &r.state)
    }

    fn check_range(log: &RegionLog, lo: u64, hi: u64) -> Result<(), ReadError> {
        if lo < log.first_index() {
            return Err(ReadError::Compacted { first_index: log.first_index() });
        }
        if hi > log.last_index() + 1 || lo > hi {
            return Err(ReadError::Unavailable { hi, last_index: log.last_index() });
        }
        Ok(())
    }

    /// Entries `[lo, hi)` from memory, at most `max_bytes` of data (at least
    /// one entry). `NotCached` when some are only on disk: use `fetch`.
    pub fn entries(&self, region: RegionId, lo: u64, hi: u64, max_bytes: u64) -> Result<Vec<Entry>, ReadError> {
        let log = self.region(region)?;
        Self::check_range(log, lo, hi)?;
        let cache_first = log.cache_first();
        if lo < cache_first && lo < hi {
            return Err(ReadError::NotCached { from: lo });
        }
        let mut out = vec![];
        let mut size = 0u64;
        for i in lo..hi {
            let e = log.get(i).expect("in range");
            let data = &log.cache[(i - cache_first) as usize];
            size += data.len() as u64;
            if !out.is_empty() && size > max_bytes {
                break;
            }
            out.push(Entry { index: i, term: e.term, entry_type: e.entry_type, data: data.clone() });
        }
        Ok(out)
    }

    /// A job reading entries `[lo, hi)` (at most `max_bytes`, at least one)
    /// from disk with DMA reads; the shard keeps running meanwhile.
    pub fn fetch(&self, region: RegionId, lo: u64, hi: u64, max_bytes: u64) -> Result<ReadJob<D::File>, ReadError> {
        let log = self.region(region)?;
        Self::check_range(log, lo, hi)?;
        let mut spans: Vec<ReadSpan<D::File>> = vec![];
        let mut size = 0u64;
        for i in lo..hi {
            let e = *log.get(i).expect("in range");
            size += e.len as u64;
            // entries not yet durable are always in memory (and maybe not on disk yet)
            if (!spans.is_empty() && size > max_bytes) || e.seq == NOT_WRITTEN || e.ticket > self.written_ticket {
                break;
            }
            let extends = spans.last().is_some_and(|span| {
                let (start, last) = (span.start, span.entries.last().unwrap().1);
                last.seq == e.seq
                    && e.offset >= last.offset
                    && (e.offset as u64 + e.len as u64 - start) <= crate::disk::IO_CHUNK_BYTES_MAX as u64
                    && e.offset as u64 - (last.offset as u64 + last.len as u64) <= BLOCK_BYTES as u64 * 4
            });
            if extends {
                spans.last_mut().unwrap().entries.push((i, e));
            } else {
                let Some(file) = self.segments.get(&e.seq) else {
                    return Err(ReadError::Changed { index: i });
                };
                spans.push(ReadSpan {
                    file: file.clone(),
                    path: self.disk.describe(&segment_name(e.seq)),
                    start: e.offset as u64,
                    entries: vec![(i, e)],
                });
            }
        }
        if spans.is_empty() {
            // only staged entries: they are in memory
            return Err(ReadError::NotCached { from: lo });
        }
        Ok(ReadJob { spans })
    }

    /// Lets the log drop the in-memory copies of a region's entries up to
    /// `index` once they are durable; older entries are then served by `fetch`.
    pub fn release_cache(&mut self, region: RegionId, index: u64) {
        // on disk is enough to read it back (acknowledged or not)
        let durable = self.written_ticket;
        let Some(log) = self.regions.get_mut(&region) else { return };
        while !log.cache.is_empty() {
            let i = log.cache_first();
            let e = *log.get(i).expect("cached entry is indexed");
            if i > index || e.ticket > durable || e.seq == NOT_WRITTEN {
                break;
            }
            log.cache_pop_front();
        }
    }

    // ----- status --------------------------------------------------------

    /// Every write with a ticket at or below this is durable: on disk, with
    /// a record after it, so it may be acknowledged.
    pub fn durable_ticket(&self) -> Ticket {
        self.durable_ticket
    }
    /// Every write with a ticket at or below this is on disk (not yet
    /// acknowledged above `durable_ticket`).
    pub fn written_ticket(&self) -> Ticket {
        self.written_ticket
    }
    /// Something is staged, or the last record needs a seal.
    pub fn wants_flush(&self) -> bool {
        !self.staged.is_empty() || self.durable_ticket < self.written_ticket
    }
    /// The last ticket handed out.
    pub fn last_ticket(&self) -> Ticket {
        self.next_ticket - 1
    }
    pub fn has_staged(&self) -> bool {
        !self.staged.is_empty()
    }
    pub fn staged_bytes(&self) -> usize {
        self.staged_bytes
    }
    pub fn flush_in_flight(&self) -> bool {
        self.in_flight.is_some()
    }
    /// The last spare job's failure, while no spare has been prepared since.
    pub fn spare_failure(&self) -> Option<&SpareFailure> {
        self.spare_failure.as_ref()
    }

    /// Whether the log cannot move to a new segment because the disk is
    /// full: no spare is ready and the last try to prepare one found no
    /// space. Appends fit until the active segment fills, then wait.
    pub fn disk_full(&self) -> bool {
        self.spare.is_none() && self.spare_failure.as_ref().is_some_and(|f| f.disk_full)
    }

    pub fn has_spare(&self) -> bool {
        self.spare.is_some()
    }
    pub fn wants_spare(&self) -> bool {
        self.spare.is_none() && !self.spare_job_out && self.fatal.is_none()
    }
    pub fn fatal(&self) -> Option<&FatalError> {
        self.fatal.as_ref()
    }
    /// Where the last stretch of records this open dropped ends, as
    /// (segment, offset): a region whose live entries were all written after
    /// it replayed as it was written; one with an entry from before it may
    /// hold entries a dropped record had overwritten. `None`: nothing dropped.
    pub fn lost_up_to(&self) -> Option<(u64, u64)> {
        self.lost_up_to
    }

    /// Where the region's earliest written live entry lies, as (segment,
    /// offset of its data): its first entry (entries only ever overwrite a
    /// suffix, so later indexes were written no earlier).
    pub fn first_entry_position(&self, region: RegionId) -> Option<(u64, u64)> {
        let log = self.regions.get(&region)?;
        log.get(log.first_index()).map(|e| (e.seq, e.offset as u64))
    }

    /// Recovery (this time or an earlier one) dropped records: no region of
    /// this shard may vote or campaign until a leader has caught it up. The
    /// flag is kept in every segment's checkpoint, so it survives restarts and
    /// the purge of the damaged segment, until `clear_needs_catch_up`.
    pub fn needs_catch_up(&self) -> bool {
        self.needs_catch_up
    }
    /// Every region has been caught up by a leader since the damage. Recorded
    /// by the next segment's checkpoint; until then a restart sets the flag
    /// again (the safe side).
    pub fn clear_needs_catch_up(&mut self) {
        self.needs_catch_up = false;
    }
    /// Live segments (with records), oldest first.
    pub fn segment_seqs(&self) -> Vec<u64> {
        self.segments.keys().copied().collect()
    }
    /// The newest live segment's sequence (`segment_seqs().last()`, without the copy).
    pub fn newest_segment(&self) -> Option<u64> {
        self.segments.keys().next_back().copied()
    }
    pub fn free_segments(&self) -> usize {
        self.free.len()
    }
    /// Bytes of entry data held in memory, all regions together.
    pub fn cache_bytes(&self) -> usize {
        self.regions.values().map(|r| r.cache_bytes).sum()
    }
    pub fn stats(&self) -> &WalStats {
        &self.stats
    }
    /// write + fdatasync latency of the flushes since open (or the last
    /// reset), in µs: print its p99 beside any latency figure, so that a
    /// slow spell of the disk is seen for what it is.
    pub fn flush_latency_us(&self) -> &hdrhistogram::Histogram<u64> {
        &self.flush_latency_us
    }
    pub fn reset_flush_latency(&mut self) {
        self.flush_latency_us.reset();
    }
    pub fn options(&self) -> &WalOptions {
        &self.opts
    }
}

/// Regions whose written state says anything (a region that only ever
/// received entries is rebuilt from them; one never written is skipped).
fn checkpointed(regions: &BTreeMap<RegionId, RegionLog>) -> impl Iterator<Item = &RegionCheckpoint> {
    regions.values().map(|r| &r.written).filter(|c| {
        c.first_index > 1
            || c.hard_state.is_some()
            || c.conf_state.is_some()
            || c.meta.is_some()
            || c.snapshot.is_some()
            || c.tombstone
    })
}

/// How much one write can grow its region's checkpoint entry, from any state.
fn checkpoint_growth_max(write: &RegionWrite) -> usize {
    write.hard_state.map_or(0, |_| 24)
        + write.snapshot.map_or(0, |_| 16)
        + write.conf_state.as_ref().map_or(0, |c| 9 + 8 * c.peer_count())
        + write.meta.as_ref().map_or(0, |m| 4 + m.len())
}

fn log_entry_mut(log: &mut RegionLog, index: u64) -> Option<&mut IndexEntry> {
    let pos = index.checked_sub(log.first_index())?;
    log.entries.get_mut(pos as usize)
}
