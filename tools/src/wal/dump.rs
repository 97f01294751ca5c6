//! `ringraft wal dump`: every record and every entry as written, one line each.
//!
//! This is the raw view, below recovery: it walks each segment record by
//! record (`wal::format::decode_record`), so it also shows entries a later
//! write overwrote or a compaction dropped, and it keeps going past a bad
//! record to the next valid one, saying what it skipped. Where no valid
//! record follows, a segment's records end; non-zero bytes there are a torn
//! write or bytes left from the segment's earlier life (segments are
//! recycled), which only recovery, knowing the sequence numbers, can tell
//! apart. `stat` is the recovered view.
//!
//! Output is streamed (a WAL can hold millions of entries): text lines of
//! `key=value` words, or with `--json` one JSON object per line (JSON Lines)
//! with a `type` field: `wal`, `segment`, `record`, `checkpoint_region`,
//! `section`, `entry`, `bad_record`, `malformed`, `end`, `summary`.

use std::io::Write;
use std::path::Path;

use serde::Serialize;
use wal::format::{
    decode_batch, decode_checkpoint, decode_record, RecordError, RecordKind, RecordView, BLOCK_BYTES,
    SEGMENT_HEADER_BYTES,
};
use wal::recovery::find_next_valid;

use super::error::ToolError;
use super::json::{entry_type_name, ConfState, HardState, Snapshot};
use super::open::{Segment, WalDir};

/// Which records and entries to show.
#[derive(Clone, Copy, Debug, Default)]
pub struct Filter {
    pub region: Option<u64>,
    /// Lowest entry index shown (inclusive).
    pub from: Option<u64>,
    /// Highest entry index shown (inclusive).
    pub to: Option<u64>,
}

impl Filter {
    pub fn new(region: Option<u64>, from: Option<u64>, to: Option<u64>) -> Result<Filter, ToolError> {
        if let (Some(f), Some(t)) = (from, to) {
            if f > t {
                return Err(ToolError::Usage(format!("--from {f} is past --to {t}: the range is empty")));
            }
        }
        Ok(Filter { region, from, to })
    }

    fn is_empty(&self) -> bool {
        self.region.is_none() && !self.by_index()
    }

    fn by_index(&self) -> bool {
        self.from.is_some() || self.to.is_some()
    }

    fn region_shown(&self, region: u64) -> bool {
        self.region.is_none_or(|r| r == region)
    }

    fn index_shown(&self, index: u64) -> bool {
        self.from.is_none_or(|f| index >= f) && self.to.is_none_or(|t| index <= t)
    }
}

/// One output line.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Line<'a> {
    Wal {
        shard: Option<u32>,
        dir: &'a Path,
    },
    Segment {
        seq: u64,
        file: &'a Path,
        file_bytes: u64,
        segment_bytes: Option<u64>,
        problem: Option<String>,
    },
    Record {
        segment: u64,
        offset: u64,
        kind: &'static str,
        lsn: u64,
        payload_bytes: u32,
        sections: u32,
    },
    /// One region's state in a checkpoint record.
    CheckpointRegion {
        segment: u64,
        offset: u64,
        region: u64,
        first_index: u64,
        prev_term: u64,
        hard_state: Option<HardState>,
        conf_state: Option<ConfState>,
        meta_bytes: Option<usize>,
        snapshot: Option<Snapshot>,
        tombstone: bool,
    },
    /// One region's write in a batch record.
    Section {
        segment: u64,
        offset: u64,
        region: u64,
        entries: usize,
        first_index: Option<u64>,
        last_index: Option<u64>,
        snapshot: Option<Snapshot>,
        compact_to: Option<u64>,
        hard_state: Option<HardState>,
        conf_state: Option<ConfState>,
        meta_bytes: Option<usize>,
        tombstone: bool,
        /// The region's tombstone was collected: the log forgets it here.
        forget: bool,
    },
    Entry {
        segment: u64,
        /// Offset of the entry's data in the segment.
        data_offset: u64,
        region: u64,
        index: u64,
        term: u64,
        entry_type: u8,
        data_bytes: usize,
    },
    /// No valid record where one was expected, and valid ones after it.
    BadRecord {
        segment: u64,
        offset: u64,
        reason: String,
        /// Where the walk resumes.
        next_valid_offset: u64,
    },
    /// The segment's records end here, and what follows is not zeros.
    End {
        segment: u64,
        offset: u64,
        reason: String,
    },
    /// A record that passed its checksum but does not decode.
    Malformed {
        segment: u64,
        offset: u64,
        reason: String,
    },
    Summary {
        records: u64,
        entries: u64,
        bad_records: u64,
    },
}

struct Dumper<'o> {
    out: &'o mut dyn Write,
    json: bool,
    filter: Filter,
    records: u64,
    entries: u64,
    bad_records: u64,
}

/// Dumps every WAL in turn. Always exit code 0: judging is `verify`'s job.
pub fn dump(wals: &[WalDir], filter: Filter, json: bool, out: &mut dyn Write) -> std::io::Result<i32> {
    let mut d = Dumper { out, json, filter, records: 0, entries: 0, bad_records: 0 };
    for wal in wals {
        d.emit(&Line::Wal { shard: wal.shard, dir: &wal.path })?;
        for seg in &wal.segments {
            d.segment(seg)?;
        }
    }
    let summary = Line::Summary { records: d.records, entries: d.entries, bad_records: d.bad_records };
    d.emit(&summary)?;
    Ok(0)
}

impl Dumper<'_> {
    fn segment(&mut self, seg: &Segment) -> std::io::Result<()> {
        let problem = seg.problem();
        self.emit(&Line::Segment {
            seq: seg.seq,
            file: &seg.path,
            file_bytes: seg.file_bytes(),
            segment_bytes: seg.header.as_ref().ok().map(|h| h.segment_bytes),
            problem: problem.map(|p| p.to_string()),
        })?;
        // Records are checksummed with the sequence number they were written
        // under, which is the header's (even in a file renamed by hand).
        let Ok(header) = &seg.header else {
            return Ok(());
        };
        let (bytes, seq) = (seg.bytes(), header.seq);
        let mut offset = SEGMENT_HEADER_BYTES;
        while offset < bytes.len() {
            match decode_record(bytes, offset, seq) {
                Ok(rec) => {
                    self.record(seg.seq, &rec)?;
                    offset = rec.next_offset();
                }
                Err(e) => {
                    let reason = match e {
                        RecordError::Zero => {
                            "zeroed block where a record was expected (a write went missing)".to_string()
                        }
                        e => e.to_string(),
                    };
                    let (segment, at) = (seg.seq, offset as u64);
                    match find_next_valid(bytes, offset + BLOCK_BYTES, seq) {
                        Some(next) => {
                            self.bad_records += 1;
                            self.emit(&Line::BadRecord {
                                segment,
                                offset: at,
                                reason,
                                next_valid_offset: next as u64,
                            })?;
                            offset = next;
                        }
                        None => {
                            // zeros to the end are the unwritten rest of the segment: say nothing
                            if bytes[offset..].iter().any(|&b| b != 0) {
                                self.emit(&Line::End { segment, offset: at, reason })?;
                            }
                            break;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn record(&mut self, segment: u64, rec: &RecordView<'_>) -> std::io::Result<()> {
        let h = &rec.header;
        let offset = rec.offset as u64;
        let filter = self.filter;
        let line = Line::Record {
            segment,
            offset,
            kind: h.kind.name(),
            lsn: h.lsn,
            payload_bytes: h.payload_bytes,
            sections: h.section_count,
        };
        let malformed = |e: wal::format::Malformed| Line::Malformed { segment, offset, reason: e.to_string() };
        // A checkpoint record holds the checkpoint part, then batch sections
        // like a batch record.
        let (regions, sections_at) = match h.kind {
            RecordKind::Checkpoint => match decode_checkpoint(rec.payload) {
                Ok((cp, used)) => (cp.regions, used),
                Err(e) => return self.emit(&line).and_then(|()| self.emit(&malformed(e))),
            },
            RecordKind::Batch => (vec![], 0),
        };
        let sections = match decode_batch(&rec.payload[sections_at..], h.section_count) {
            Ok(s) => s,
            Err(e) => return self.emit(&line).and_then(|()| self.emit(&malformed(e))),
        };
        // checkpoint entries hold no log entries: an index filter hides them
        let shown_regions: Vec<_> =
            regions.iter().filter(|c| filter.region_shown(c.region) && !filter.by_index()).collect();
        let shown: Vec<_> = sections
            .iter()
            .filter(|s| {
                filter.region_shown(s.region)
                    && (!filter.by_index() || s.entries.iter().any(|e| filter.index_shown(e.index)))
            })
            .collect();
        if filter.is_empty() || !shown_regions.is_empty() || !shown.is_empty() {
            self.records += 1;
            self.emit(&line)?;
        }
        for c in shown_regions {
            self.emit(&Line::CheckpointRegion {
                segment,
                offset,
                region: c.region,
                first_index: c.first_index,
                prev_term: c.prev_term,
                hard_state: c.hard_state.map(HardState::from),
                conf_state: c.conf_state.as_ref().map(ConfState::from),
                meta_bytes: c.meta.as_ref().map(|m| m.len()),
                snapshot: c.snapshot.map(Snapshot::from),
                tombstone: c.tombstone,
            })?;
        }
        for s in shown {
            self.emit(&Line::Section {
                segment,
                offset,
                region: s.region,
                entries: s.entries.len(),
                first_index: s.entries.first().map(|e| e.index),
                last_index: s.entries.last().map(|e| e.index),
                snapshot: s.head.snapshot.map(Snapshot::from),
                compact_to: s.head.compact.map(|(to, _)| to),
                hard_state: s.head.hard_state.map(HardState::from),
                conf_state: s.head.conf_state.as_ref().map(ConfState::from),
                meta_bytes: s.head.meta.as_ref().map(|m| m.len()),
                tombstone: s.head.tombstone,
                forget: s.head.forget,
            })?;
            for e in s.entries.iter().filter(|e| filter.index_shown(e.index)) {
                self.entries += 1;
                self.emit(&Line::Entry {
                    segment,
                    data_offset: (rec.payload_offset() + sections_at + e.data_offset) as u64,
                    region: s.region,
                    index: e.index,
                    term: e.term,
                    entry_type: e.entry_type,
                    data_bytes: e.data_len,
                })?;
            }
        }
        Ok(())
    }

    fn emit(&mut self, line: &Line<'_>) -> std::io::Result<()> {
        if self.json {
            serde_json::to_writer(&mut *self.out, line)?;
            return writeln!(self.out);
        }
        write_text(line, self.out)
    }
}

/// Optional `key=value` words, in order, skipping the absent ones.
fn opt_words(parts: &[(&str, Option<String>)]) -> String {
    parts.iter().filter_map(|(k, v)| v.as_ref().map(|v| format!(" {k}={v}"))).collect()
}

fn hard_state_word(h: &HardState) -> String {
    format!("term:{},vote:{},commit:{}", h.term, h.vote, h.commit)
}

fn write_text(line: &Line<'_>, out: &mut dyn Write) -> std::io::Result<()> {
    match line {
        Line::Wal { shard: Some(i), dir } => writeln!(out, "wal shard={i} dir={}", dir.display()),
        Line::Wal { shard: None, dir } => writeln!(out, "wal dir={}", dir.display()),
        Line::Segment { seq, file, file_bytes, segment_bytes, problem } => {
            write!(out, "segment seq={seq:016x} file={} file_bytes={file_bytes}", file.display())?;
            if let Some(b) = segment_bytes {
                write!(out, " segment_bytes={b}")?;
            }
            match problem {
                Some(p) => writeln!(out, " PROBLEM: {p}"),
                None => writeln!(out),
            }
        }
        Line::Record { segment, offset, kind, lsn, payload_bytes, sections } => writeln!(
            out,
            "  record segment={segment:016x} offset={offset} kind={kind} lsn={lsn} payload_bytes={payload_bytes} sections={sections}"
        ),
        Line::CheckpointRegion {
            region, first_index, prev_term, hard_state, conf_state, meta_bytes, snapshot, tombstone, ..
        } => {
            let extra = opt_words(&[
                ("hard_state", hard_state.as_ref().map(hard_state_word)),
                ("conf_state", conf_state.as_ref().map(ConfState::to_string)),
                ("meta_bytes", meta_bytes.map(|m| m.to_string())),
                ("snapshot", snapshot.map(|s| format!("index:{},term:{}", s.index, s.term))),
            ]);
            let tomb = if *tombstone { " tombstone" } else { "" };
            writeln!(out, "    checkpoint region={region} first_index={first_index} prev_term={prev_term}{extra}{tomb}")
        }
        Line::Section {
            region,
            entries,
            first_index,
            last_index,
            snapshot,
            compact_to,
            hard_state,
            conf_state,
            meta_bytes,
            tombstone,
            forget,
            ..
        } => {
            let range = match (first_index, last_index) {
                (Some(f), Some(l)) => format!(" index={f}..{l}"),
                _ => String::new(),
            };
            let extra = opt_words(&[
                ("snapshot", snapshot.map(|s| format!("index:{},term:{}", s.index, s.term))),
                ("compact_to", compact_to.map(|c| c.to_string())),
                ("hard_state", hard_state.as_ref().map(hard_state_word)),
                ("conf_state", conf_state.as_ref().map(ConfState::to_string)),
                ("meta_bytes", meta_bytes.map(|m| m.to_string())),
            ]);
            let tomb = if *tombstone { " tombstone" } else { "" };
            let forget = if *forget { " forget" } else { "" };
            writeln!(out, "    section region={region} entries={entries}{range}{extra}{tomb}{forget}")
        }
        Line::Entry { region, index, term, entry_type, data_bytes, data_offset, .. } => writeln!(
            out,
            "      entry region={region} index={index} term={term} type={} data_bytes={data_bytes} data_offset={data_offset}",
            entry_type_name(*entry_type)
        ),
        Line::BadRecord { segment, offset, reason, next_valid_offset } => writeln!(
            out,
            "  BAD record segment={segment:016x} offset={offset}: {reason}; next valid record at offset {next_valid_offset}"
        ),
        Line::End { segment, offset, reason } => writeln!(
            out,
            "  end of records segment={segment:016x} offset={offset}: then {reason} (a torn write, or bytes from the segment's earlier life)"
        ),
        Line::Malformed { segment, offset, reason } => {
            writeln!(out, "  MALFORMED record segment={segment:016x} offset={offset}: passed its checksum but {reason}")
        }
        Line::Summary { records, entries, bad_records } => {
            writeln!(out, "{records} records, {entries} entries shown; {bad_records} bad records")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::open::open;
    use crate::wal::testkit::{self, Plan};
    use wal::layout::segment_name;

    fn run(dir: &Path, filter: Filter, json: bool) -> String {
        let mut out = vec![];
        assert_eq!(dump(&open(dir).unwrap(), filter, json, &mut out).unwrap(), 0);
        String::from_utf8(out).unwrap()
    }

    fn lines_starting<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
        text.lines().filter(|l| l.trim_start().starts_with(prefix)).collect()
    }

    #[test]
    fn every_record_and_every_entry_written_is_listed() {
        let (dir, w) = testkit::build(&Plan::default());
        let text = run(dir.path(), Filter::default(), false);
        let records = lines_starting(&text, "record ");
        // one record per flush: a batch (at a segment's start a checkpoint
        // with the batch), then the seal acknowledging it, one block with no
        // sections (at a segment's start a checkpoint with none)
        assert_eq!(w.records, 2 * (Plan::default().rounds + 1), "each round and the compaction, each sealed");
        assert_eq!(records.len() as u64, w.records, "{text}");
        let seals: Vec<_> = records.iter().filter(|l| l.ends_with(" sections=0")).collect();
        assert_eq!(seals.len() as u64, w.seals, "{text}");
        assert_eq!(lines_starting(&text, "entry ").len() as u64, w.entries_written);
        assert_eq!(lines_starting(&text, "segment ").len() as u64, w.segments);
        assert!(records[0].contains("segment=0000000000000001 offset=4096 kind=checkpoint lsn=1"), "{}", records[0]);
        assert!(records[1].contains("offset=8192 kind=batch lsn=2 payload_bytes=0 sections=0"), "{}", records[1]);
        assert!(records[2].contains("offset=12288 kind=batch lsn=3"), "{}", records[2]);
        assert!(records.last().unwrap().ends_with(&format!("lsn={} payload_bytes=0 sections=0", w.records)), "{text}");
        let e = "entry region=1 index=1 term=1 type=normal data_bytes=";
        assert!(text.contains(&format!("{e}{} ", testkit::data_len(1, 1))), "{text}");
        assert!(text.contains("section region=3 entries=0 tombstone"), "{text}");
        assert!(text.contains("section region=2 entries=0 compact_to=59"), "{text}");
        assert!(!text.contains("BAD"), "{text}");
    }

    #[test]
    fn region_and_index_filters_select_exactly_the_entries_asked_for() {
        let (dir, _) = testkit::build(&Plan::default());
        let text = run(dir.path(), Filter::new(Some(2), Some(52), Some(55)).unwrap(), false);
        let entries = lines_starting(&text, "entry ");
        let indexes: Vec<&str> = entries.iter().map(|l| l.split_whitespace().nth(2).unwrap()).collect();
        assert_eq!(indexes, ["index=52", "index=53", "index=54", "index=55"], "{text}");
        assert!(entries.iter().all(|l| l.contains("region=2 ")));
        // 2 entries per round: 52..55 are in the records of 51-52, 53-54 and 55-56
        assert_eq!(lines_starting(&text, "record ").len(), 3, "{text}");
        assert!(lines_starting(&text, "checkpoint ").is_empty());
    }

    #[test]
    fn a_region_filter_keeps_its_checkpoint_state() {
        let (dir, w) = testkit::build(&Plan::default());
        let text = run(dir.path(), Filter::new(Some(7), None, None).unwrap(), false);
        assert!(lines_starting(&text, "entry ").is_empty());
        // written twice, then carried by the checkpoint of every later segment
        assert_eq!(lines_starting(&text, "section region=7").len(), 2, "{text}");
        assert_eq!(lines_starting(&text, "checkpoint region=7").len() as u64, w.segments - 1, "{text}");
        assert!(text.contains("hard_state=term:1,vote:7,commit:0"), "{text}");
        assert!(
            text.contains("checkpoint region=7 first_index=1 prev_term=0 hard_state=term:30,vote:7,commit:0"),
            "{text}"
        );
        // the records holding those, and no batch seal: it holds no region
        assert_eq!(lines_starting(&text, "record ").len() as u64, 2 + w.segments - 1, "{text}");
        assert!(!text.contains("kind=batch lsn=2 "), "{text}");
    }

    #[test]
    fn an_empty_index_range_is_a_usage_error() {
        let err = Filter::new(None, Some(9), Some(3)).unwrap_err();
        assert!(matches!(err, ToolError::Usage(_)));
        assert!(err.to_string().contains("--from 9 is past --to 3"));
    }

    #[test]
    fn the_walk_goes_past_a_bad_record_and_says_so() {
        let (dir, w) = testkit::build(&Plan::default());
        let seg = dir.path().join(segment_name(1));
        let offsets = testkit::record_offsets(&seg, 1);
        // round 2's batch (5 entries), then its seal
        let victim = testkit::batch_offsets(&seg, 1)[1];
        assert_eq!(victim, offsets[2]);
        testkit::flip_byte(&seg, victim + 50);
        let text = run(dir.path(), Filter::default(), false);
        let want = format!(
            "BAD record segment=0000000000000001 offset={victim}: record checksum mismatch; next valid record at offset {}",
            offsets[3]
        );
        assert!(text.contains(&want), "{text}");
        assert_eq!(lines_starting(&text, "record ").len() as u64, w.records - 1);
        let summary = format!("{} records, {} entries shown; 1 bad records\n", w.records - 1, w.entries_written - 5);
        assert!(text.ends_with(&summary), "{text}");
    }

    #[test]
    fn records_end_where_nothing_valid_follows() {
        let (dir, w) = testkit::build(&Plan::default());
        let seg = dir.path().join(segment_name(w.segments));
        // the last record: the seal of the compaction
        let tail = *testkit::record_offsets(&seg, w.segments).last().unwrap();
        assert!(!testkit::batch_offsets(&seg, w.segments).contains(&tail));
        testkit::damage_header(&seg, tail);
        let text = run(dir.path(), Filter::default(), false);
        let want = format!("end of records segment={:016x} offset={tail}: then record checksum mismatch", w.segments);
        assert!(text.contains(&want), "{text}");
        assert_eq!(lines_starting(&text, "end of records").len(), 1, "{text}");
        let summary = format!("{} records, {} entries shown; 0 bad records\n", w.records - 1, w.entries_written);
        assert!(text.ends_with(&summary), "{text}");
    }

    #[test]
    fn json_lines_each_parse_with_a_type() {
        let (dir, w) = testkit::build(&Plan::default());
        let text = run(dir.path(), Filter::new(Some(1), None, Some(3)).unwrap(), true);
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let of = |t: &str| lines.iter().filter(|v| v["type"] == t).collect::<Vec<_>>();
        assert_eq!(of("segment").len() as u64, w.segments);
        let entries = of("entry");
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[2]["index"], 3);
        assert_eq!(entries[2]["entry_type"], 1);
        assert_eq!(entries[0]["data_bytes"], testkit::data_len(1, 1));
        assert_eq!(of("section")[0]["hard_state"]["commit"], 3);
        assert_eq!(of("summary")[0]["entries"], 3);
    }
}
