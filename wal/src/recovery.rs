//! Recovery: rebuild every region's state and entry index from the segments.
//!
//! This module does no I/O. The caller hands it each segment's bytes in
//! sequence order (the live log reads the next one on a helper thread while
//! this one is replayed, `ringraft wal` maps them read-only) and gets back the regions, what was found, and where
//! the log may continue.
//!
//! With at most one write in flight, only the tail of the log can be torn: a
//! bad record with no valid record after it anywhere is a torn tail, cut off
//! and reported. A bad record followed by a valid one is corruption: open
//! fails naming the segment and offset, unless the caller chose
//! [`RecoveryMode::Tolerant`], which drops it, reports it, and marks the whole
//! shard as needing catch-up (a corrupt record cannot say which regions it held).

use std::collections::BTreeMap;

use crate::format::{
    decode_batch, decode_checkpoint, decode_record, Malformed, RecordError, RecordKind, RecordView, SegmentHeader,
    SegmentHeaderError, BLOCK_BYTES, SEGMENT_HEADER_BYTES,
};
use crate::region::{apply_head, Head, IndexEntry, LogError, RegionLog};
use crate::RegionId;

/// What to do with a bad record that has valid records after it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RecoveryMode {
    /// Refuse to open, naming segment and offset.
    #[default]
    Strict,
    /// Drop it, report it, and mark every region as needing catch-up.
    Tolerant,
}

/// Recovery refused to continue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecoveryError {
    #[error("segment {seq:016x}: bad record at offset {offset} ({reason}) followed by valid data at segment {next_seq:016x} offset {next_offset}: corruption, not a torn tail")]
    Corruption { seq: u64, offset: u64, reason: String, next_seq: u64, next_offset: u64 },
    #[error("segment {seq:016x}: bad segment header: {source}")]
    SegmentHeader { seq: u64, source: SegmentHeaderError },
    #[error("segment {seq:016x}: header says sequence {header_seq:016x}: file was renamed or copied by hand")]
    SeqMismatch { seq: u64, header_seq: u64 },
    #[error("segment {seq:016x}: record at offset {offset} passed its checksum but is malformed: {source}")]
    Malformed { seq: u64, offset: u64, source: Malformed },
    #[error("segment {seq:016x}: record at offset {offset}: {source}")]
    Log { seq: u64, offset: u64, source: LogError },
    #[error("segment {seq:016x}: file is {len} bytes but its header says {segment_bytes}: truncated (tolerant mode reads what is there)")]
    Truncated { seq: u64, len: u64, segment_bytes: u64 },
    #[error("region {region}: entries [{from}, {to}) are missing: a segment still needed was removed")]
    MissingEntries { region: RegionId, from: u64, to: u64 },
    #[error("segment {seq:016x}: record at offset {offset} has sequence number {lsn}, expected {expected}: records are missing")]
    LsnGap { seq: u64, offset: u64, lsn: u64, expected: u64 },
}

/// A bad record at the very end of the log: a write that never completed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    pub seq: u64,
    pub offset: u64,
    pub reason: String,
}

/// Bytes skipped in tolerant mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dropped {
    pub seq: u64,
    pub offset: u64,
    /// Bytes skipped up to the next valid record (or the segment's end).
    pub bytes: u64,
    pub reason: String,
}

/// What recovery found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub segments: usize,
    pub records: u64,
    pub entries_replayed: u64,
    pub bytes_replayed: u64,
    pub regions: usize,
    pub torn_tail: Option<TornTail>,
    /// Tolerant mode only: records that were dropped.
    pub dropped: Vec<Dropped>,
    /// Set when anything was dropped now, or when the latest checkpoint says
    /// an earlier recovery did and the engine has not cleared it since: no
    /// region of this shard may vote or campaign until a leader has caught
    /// it up.
    pub needs_catch_up: bool,
}

impl std::fmt::Display for RecoveryReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} segments, {} records, {} entries ({} bytes) replayed, {} regions",
            self.segments, self.records, self.entries_replayed, self.bytes_replayed, self.regions
        )?;
        if let Some(t) = &self.torn_tail {
            write!(f, "; torn tail cut at segment {:016x} offset {} ({})", t.seq, t.offset, t.reason)?;
        }
        for d in &self.dropped {
            write!(f, "; DROPPED {} bytes at segment {:016x} offset {} ({})", d.bytes, d.seq, d.offset, d.reason)?;
        }
        if self.needs_catch_up {
            write!(f, "; every region needs catch-up before it may vote")?;
        }
        Ok(())
    }
}

/// One segment as recovery saw it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SegmentInfo {
    pub seq: u64,
    pub file_bytes: u64,
    pub records: u64,
    /// End of the last valid record (where a writer would continue).
    pub used_bytes: u64,
    /// Bytes of entry data written into this segment (live or not).
    pub entry_bytes: u64,
}

/// Rebuilds the log's state from segments fed in sequence order.
pub struct Recovery {
    mode: RecoveryMode,
    pub(crate) regions: BTreeMap<RegionId, RegionLog>,
    segments: Vec<SegmentInfo>,
    report: RecoveryReport,
    /// A bad record with nothing valid after it (yet).
    pending_tear: Option<TornTail>,
    /// Sequence number the next record must carry (0: not known yet).
    next_lsn: u64,
    /// Highest sequence number seen.
    max_lsn: u64,
    /// Segments with a header and no records since the last one with records.
    empty_run: Vec<u64>,
    /// Empty segments followed by segments with records.
    empty_inner: Vec<u64>,
    /// Regions whose log replay has not seen from its first index yet.
    missing: BTreeMap<RegionId, (u64, u64)>,
    /// The shard flag of the latest checkpoint: an earlier recovery dropped
    /// records and the engine has not yet said every region caught up.
    catch_up_flag: bool,
}

/// Replays one region's log operations from records that may start in the
/// middle of its history.
///
/// Recovery begins at the oldest segment left after purges. Records there
/// may append to entries that lived in a purged segment: that is fine as long
/// as later records make those entries unnecessary (a tombstone, snapshot,
/// compaction or overwrite), which purge guarantees. So replay is lenient on
/// the way and strict at the end: the entries `[declared first index, first
/// index held)` are tracked as missing, and a region that still misses
/// entries when recovery finishes means purge lost data.
struct Replay<'a> {
    log: &'a mut RegionLog,
    /// (declared first index, term before it) while entries below the held
    /// ones are unknown.
    missing: Option<(u64, u64)>,
}

impl Replay<'_> {
    /// With no entries held, nothing can be missing.
    fn normalize(&mut self) {
        if let Some((first, prev_term)) = self.missing {
            if self.log.entries.is_empty() || self.log.state.first_index == first {
                self.log.drop_log_if(self.log.state.first_index != first);
                self.log.state.first_index = first;
                self.log.state.prev_term = prev_term;
                self.missing = None;
            }
        }
    }

    /// A checkpoint or compaction says the log starts at `to`.
    fn raise_floor(&mut self, to: u64, prev_term: u64) {
        let log = &mut *self.log;
        if log.entries.is_empty() && self.missing.is_none() {
            if to >= log.state.first_index {
                log.state.first_index = to;
                log.state.prev_term = prev_term;
            }
        } else if to >= log.state.first_index {
            if to > log.last_index() + 1 {
                log.drop_log();
                log.state.first_index = to;
            } else {
                log.compact(to, prev_term);
            }
            log.state.prev_term = prev_term;
            self.missing = None;
        } else if let Some((first, _)) = self.missing {
            if to > first {
                self.missing = Some((to, prev_term));
            }
        }
        self.normalize();
    }

    /// Prepares the log for entries starting at `first`.
    fn make_room(&mut self, region: RegionId, first: u64) -> Result<(), LogError> {
        let log = &mut *self.log;
        let last = log.last_index();
        if first >= log.state.first_index && first <= last + 1 {
            return Ok(());
        }
        let (declared, prev_term) = self.missing.unwrap_or((log.state.first_index, log.state.prev_term));
        if first < declared {
            return Err(LogError::BelowFirst { region, first, first_index: declared });
        }
        // Entries before `first` are in a purged segment (or overwritten):
        // hold from `first` and remember what is unknown.
        log.drop_log();
        log.state.first_index = first;
        log.state.prev_term = 0;
        self.missing = Some((declared, prev_term));
        if first == declared {
            log.state.prev_term = prev_term;
            self.missing = None;
        }
        Ok(())
    }
}

/// The result of a recovery.
pub struct Recovered {
    pub(crate) regions: BTreeMap<RegionId, RegionLog>,
    /// Segments that hold at least one valid record, in order.
    pub segments: Vec<SegmentInfo>,
    /// Segments with a valid header and no valid record after the last
    /// segment with records (prepared spares).
    pub empty_tail_segments: Vec<u64>,
    /// Empty segments between segments with records (safe to recycle).
    pub empty_inner_segments: Vec<u64>,
    /// Sequence number for the next record.
    pub next_lsn: u64,
    pub report: RecoveryReport,
}

/// Summary of one recovered region (for tools and reports).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionSummary {
    pub region: RegionId,
    pub first_index: u64,
    pub last_index: u64,
    pub entries: u64,
    pub live_bytes: u64,
    /// Oldest segment holding one of its live entries.
    pub oldest_segment: Option<u64>,
    pub hard_state: Option<crate::HardState>,
    pub tombstone: bool,
}

impl Recovered {
    pub fn regions(&self) -> impl Iterator<Item = RegionSummary> + '_ {
        self.regions.iter().map(|(&region, log)| RegionSummary {
            region,
            first_index: log.first_index(),
            last_index: log.last_index(),
            entries: log.entries.len() as u64,
            live_bytes: log.entries.iter().map(|e| e.len as u64).sum(),
            oldest_segment: log.entries.front().map(|e| e.seq),
            hard_state: log.state.hard_state,
            tombstone: log.state.tombstone,
        })
    }

    /// Live entry bytes per segment.
    pub fn live_bytes_by_segment(&self) -> BTreeMap<u64, u64> {
        let mut out = BTreeMap::new();
        for log in self.regions.values() {
            for e in &log.entries {
                *out.entry(e.seq).or_insert(0) += e.len as u64;
            }
        }
        out
    }

    /// Term and location of every live entry of a region, in index order.
    pub fn entry_locations(&self, region: RegionId) -> Vec<(u64, IndexEntry)> {
        self.regions
            .get(&region)
            .map(|log| log.entries.iter().enumerate().map(|(k, e)| (log.first_index() + k as u64, *e)).collect())
            .unwrap_or_default()
    }
}

/// Offset of the first record that validates at or after `from`, if any.
pub fn find_next_valid(segment: &[u8], from: usize, seq: u64) -> Option<usize> {
    let mut off = from.next_multiple_of(BLOCK_BYTES);
    while off + BLOCK_BYTES <= segment.len() {
        if decode_record(segment, off, seq).is_ok() {
            return Some(off);
        }
        off += BLOCK_BYTES;
    }
    None
}

impl Recovery {
    pub fn new(mode: RecoveryMode) -> Self {
        Recovery {
            mode,
            regions: BTreeMap::new(),
            segments: vec![],
            report: RecoveryReport::default(),
            pending_tear: None,
            next_lsn: 0,
            max_lsn: 0,
            empty_run: vec![],
            empty_inner: vec![],
            missing: BTreeMap::new(),
            catch_up_flag: false,
        }
    }

    /// Replays one segment. `seq` comes from the file name.
    pub fn add_segment(&mut self, seq: u64, bytes: &[u8]) -> Result<(), RecoveryError> {
        let header = match SegmentHeader::decode(bytes) {
            Ok(h) => h,
            Err(source) => {
                if self.mode == RecoveryMode::Tolerant {
                    self.drop_bytes(seq, 0, bytes.len(), source.to_string());
                    return Ok(());
                }
                return Err(RecoveryError::SegmentHeader { seq, source });
            }
        };
        if header.seq != seq {
            if self.mode == RecoveryMode::Tolerant {
                self.drop_bytes(seq, 0, bytes.len(), format!("header names segment {:016x}", header.seq));
                return Ok(());
            }
            return Err(RecoveryError::SeqMismatch { seq, header_seq: header.seq });
        }
        if (bytes.len() as u64) < header.segment_bytes && self.mode == RecoveryMode::Strict {
            return Err(RecoveryError::Truncated { seq, len: bytes.len() as u64, segment_bytes: header.segment_bytes });
        }
        self.report.segments += 1;
        let mut info = SegmentInfo {
            seq,
            file_bytes: bytes.len() as u64,
            used_bytes: SEGMENT_HEADER_BYTES as u64,
            ..Default::default()
        };
        let mut offset = SEGMENT_HEADER_BYTES;
        while offset + BLOCK_BYTES <= bytes.len() {
            match decode_record(bytes, offset, seq) {
                Ok(rec) => {
                    self.valid_record_seen(seq, offset)?;
                    self.apply_record(seq, &rec, &mut info)?;
                    offset = rec.next_offset();
                    info.used_bytes = offset as u64;
                }
                Err(e) => match find_next_valid(bytes, offset + BLOCK_BYTES, seq) {
                    // a bad block, then valid data: not the tail
                    Some(next) => {
                        self.bad_record(seq, offset, next, e)?;
                        offset = next;
                    }
                    None => {
                        // Past the last record: zeros (the end), or the record
                        // that was being written when the process stopped. (A
                        // reused segment's old bytes are never next to our last
                        // record: every write into one carries a zero block
                        // after its record.)
                        if e != RecordError::Zero {
                            if let Some(t) = self.pending_tear.take() {
                                self.corruption(t, seq, offset as u64)?;
                            }
                            self.pending_tear = Some(TornTail { seq, offset: offset as u64, reason: e.to_string() });
                        }
                        break;
                    }
                },
            }
        }
        if info.records > 0 {
            self.segments.push(info);
            self.empty_inner.append(&mut self.empty_run);
        } else {
            self.empty_run.push(seq);
        }
        Ok(())
    }

    /// A valid record at (seq, offset): an earlier bad record was not the tail.
    fn valid_record_seen(&mut self, seq: u64, offset: usize) -> Result<(), RecoveryError> {
        if let Some(t) = self.pending_tear.take() {
            self.corruption(t, seq, offset as u64)?;
        }
        Ok(())
    }

    fn corruption(&mut self, t: TornTail, next_seq: u64, next_offset: u64) -> Result<(), RecoveryError> {
        match self.mode {
            RecoveryMode::Strict => {
                Err(RecoveryError::Corruption { seq: t.seq, offset: t.offset, reason: t.reason, next_seq, next_offset })
            }
            RecoveryMode::Tolerant => {
                self.drop_bytes(t.seq, t.offset as usize, 0, t.reason);
                Ok(())
            }
        }
    }

    fn bad_record(
        &mut self,
        seq: u64,
        offset: usize,
        next: usize,
        e: crate::format::RecordError,
    ) -> Result<(), RecoveryError> {
        if let Some(t) = self.pending_tear.take() {
            self.corruption(t, seq, offset as u64)?;
        }
        match self.mode {
            RecoveryMode::Strict => Err(RecoveryError::Corruption {
                seq,
                offset: offset as u64,
                reason: e.to_string(),
                next_seq: seq,
                next_offset: next as u64,
            }),
            RecoveryMode::Tolerant => {
                self.drop_bytes(seq, offset, next - offset, e.to_string());
                Ok(())
            }
        }
    }

    fn drop_bytes(&mut self, seq: u64, offset: usize, bytes: usize, reason: String) {
        self.report.dropped.push(Dropped { seq, offset: offset as u64, bytes: bytes as u64, reason });
        self.report.needs_catch_up = true;
        // after a dropped record the sequence numbers cannot be checked
        self.next_lsn = 0;
    }

    fn apply_record(&mut self, seq: u64, rec: &RecordView<'_>, info: &mut SegmentInfo) -> Result<(), RecoveryError> {
        let offset = rec.offset as u64;
        if self.next_lsn != 0 && rec.header.lsn != self.next_lsn {
            if self.mode == RecoveryMode::Strict {
                return Err(RecoveryError::LsnGap { seq, offset, lsn: rec.header.lsn, expected: self.next_lsn });
            }
            self.drop_bytes(seq, rec.offset, 0, format!("records {}..{} missing", self.next_lsn, rec.header.lsn));
        }
        self.next_lsn = rec.header.lsn + 1;
        self.max_lsn = self.max_lsn.max(rec.header.lsn);
        self.report.records += 1;
        info.records += 1;
        let malformed = |source| RecoveryError::Malformed { seq, offset, source };
        // A checkpoint record is the checkpoint part, then batch sections.
        let mut sections_at = 0;
        if rec.header.kind == RecordKind::Checkpoint {
            let (checkpoint, used) = decode_checkpoint(rec.payload).map_err(malformed)?;
            sections_at = used;
            self.catch_up_flag = checkpoint.needs_catch_up;
            for cp in checkpoint.regions {
                self.apply_region_checkpoint(cp);
            }
        }
        let sections = &rec.payload[sections_at..];
        let sections_offset = rec.payload_offset() + sections_at;
        for s in decode_batch(sections, rec.header.section_count).map_err(malformed)? {
            self.apply_section(seq, offset, &s, sections, sections_offset, info)?;
        }
        Ok(())
    }

    /// A region's state as a checkpoint recorded it.
    fn apply_region_checkpoint(&mut self, cp: crate::format::RegionCheckpoint) {
        let region = cp.region;
        let log = self.regions.entry(region).or_insert_with(|| RegionLog::new(region));
        let missing = self.missing.remove(&region);
        let mut replay = Replay { log, missing };
        replay.raise_floor(cp.first_index, cp.prev_term);
        if cp.tombstone {
            replay.log.drop_log();
        }
        replay.normalize();
        let (first_index, prev_term) = (replay.log.state.first_index, replay.log.state.prev_term);
        replay.log.state = crate::format::RegionCheckpoint { first_index, prev_term, ..cp };
        if let Some(m) = replay.missing {
            self.missing.insert(region, m);
        }
    }

    /// One region write; `sections` holds its entry data, at `sections_offset` in the segment.
    fn apply_section(
        &mut self,
        seq: u64,
        offset: u64,
        s: &crate::format::BatchSection,
        sections: &[u8],
        sections_offset: usize,
        info: &mut SegmentInfo,
    ) -> Result<(), RecoveryError> {
        let region = s.region;
        if s.head.forget {
            return self.forget(seq, offset, region);
        }
        let log = self.regions.entry(region).or_insert_with(|| RegionLog::new(region));
        let missing = self.missing.remove(&region);
        let mut replay = Replay { log, missing };
        if let Some(snap) = s.head.snapshot {
            replay.log.reset_to_snapshot(snap.index, snap.term);
            replay.missing = None;
        }
        if let Some(first) = s.entries.first() {
            replay.make_room(region, first.index).map_err(|source| RecoveryError::Log { seq, offset, source })?;
            replay.log.put_entries(first.index, s.entries.len(), |k| {
                let e = &s.entries[k];
                let data = &sections[e.data_offset..e.data_offset + e.data_len];
                IndexEntry {
                    term: e.term,
                    ticket: 0,
                    seq,
                    offset: (sections_offset + e.data_offset) as u32,
                    len: e.data_len as u32,
                    crc: crc32c::crc32c(data),
                    entry_type: e.entry_type,
                }
            });
            let bytes: u64 = s.entries.iter().map(|e| e.data_len as u64).sum();
            self.report.entries_replayed += s.entries.len() as u64;
            self.report.bytes_replayed += bytes;
            info.entry_bytes += bytes;
        }
        if let Some((to, prev_term)) = s.head.compact {
            replay.raise_floor(to, prev_term);
        }
        if s.head.tombstone {
            replay.log.drop_log();
        }
        replay.normalize();
        let log = replay.log;
        let (first_index, prev_term) = (log.state.first_index, log.state.prev_term);
        apply_head(&mut log.state, Head::of_section(&s.head), !s.entries.is_empty());
        // the log operations above own the bounds
        (log.state.first_index, log.state.prev_term) = (first_index, prev_term);
        if let Some(m) = replay.missing {
            self.missing.insert(region, m);
        }
        Ok(())
    }

    /// A collected tombstone: the region is gone from the log. The writer
    /// forgets only a tombstone (and the section decoder refuses a forget
    /// with other parts); a live region forgotten is a damaged log (tolerant
    /// recovery, which may have skipped the tombstone's record, forgets the
    /// region as the writer meant to).
    fn forget(&mut self, seq: u64, offset: u64, region: RegionId) -> Result<(), RecoveryError> {
        let removed = self.regions.get(&region).is_some_and(|log| log.state.tombstone);
        if !removed && self.mode == RecoveryMode::Strict {
            return Err(RecoveryError::Log { seq, offset, source: LogError::Forget { region } });
        }
        self.regions.remove(&region);
        self.missing.remove(&region);
        Ok(())
    }

    /// Ends recovery: what is left pending is the torn tail. Fails if a
    /// region still misses entries below the ones it holds.
    pub fn finish(mut self) -> Result<Recovered, RecoveryError> {
        if let Some((&region, &(first, _))) = self.missing.iter().next() {
            let held = self.regions[&region].first_index();
            if self.mode == RecoveryMode::Strict {
                return Err(RecoveryError::MissingEntries { region, from: first, to: held });
            }
            self.report.needs_catch_up = true;
        }
        self.report.torn_tail = self.pending_tear.take();
        if self.catch_up_flag {
            self.report.needs_catch_up = true;
        }
        self.report.regions = self.regions.len();
        // everything recovered is on disk: the written view is the state (set
        // once here rather than after every replayed section)
        for log in self.regions.values_mut() {
            log.written = log.state.clone();
        }
        Ok(Recovered {
            regions: self.regions,
            segments: self.segments,
            empty_tail_segments: self.empty_run,
            empty_inner_segments: self.empty_inner,
            next_lsn: self.max_lsn + 1,
            report: self.report,
        })
    }
}
