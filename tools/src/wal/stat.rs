//! `ringraft wal stat`: what is in a WAL and why it takes the space it does.
//!
//! Per segment: its size, records, how far it is written, and how many of
//! its entry bytes are still live versus garbage. Per region: its log bounds,
//! live bytes, state, and whether it holds back purge (its oldest live entry
//! sits in a segment older than the one being written). Then what recovery
//! finds (torn tail, dropped records).
//!
//! The numbers come from the `wal` crate's own recovery, run over the
//! read-only mappings in *tolerant* mode so that a damaged WAL can still be
//! described; anything tolerant mode had to drop is listed, and means the
//! server (strict by default) would refuse to open it — `verify` says where.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;

use serde::Serialize;
use wal::recovery::{Recovery, RecoveryMode};

use super::json::{Dropped, HardState, TornTail};
use super::open::{SegmentProblem, WalDir};

#[derive(Debug, Serialize)]
pub struct StatReport {
    pub dir: PathBuf,
    pub wals: Vec<WalStat>,
}

#[derive(Debug, Serialize)]
pub struct WalStat {
    pub shard: Option<u32>,
    pub dir: PathBuf,
    pub segments: Vec<SegmentStat>,
    /// Purged segments kept for recycling.
    pub free_segments: Vec<u64>,
    /// Segments whose zero-fill never finished (removed when the log opens).
    pub tmp_segments: Vec<u64>,
    /// Files the log does not own.
    pub unknown_files: Vec<String>,
    pub regions: Vec<RegionStat>,
    pub purge: PurgeStat,
    pub recovery: RecoveryStat,
}

#[derive(Debug, Serialize)]
pub struct SegmentStat {
    pub seq: u64,
    pub file: PathBuf,
    pub file_bytes: u64,
    /// Size according to its header (absent when the header is unreadable).
    pub segment_bytes: Option<u64>,
    /// `live` (holds records), `spare` (prepared, no records yet), `empty`
    /// (no records, between live ones), `unreadable` (bad header), `failed`
    /// (recovery stopped in it) or `not_scanned` (after a failure).
    pub state: &'static str,
    pub records: u64,
    /// End of the last valid record: where a writer would continue.
    pub used_bytes: u64,
    /// Entry data written into this segment.
    pub entry_bytes: u64,
    /// Entry data some region still needs.
    pub live_entry_bytes: u64,
    /// Entry data no region needs any more (compacted, overwritten, dropped).
    pub garbage_bytes: u64,
    pub problem: Option<ProblemStat>,
}

#[derive(Debug, Serialize)]
pub struct ProblemStat {
    pub kind: &'static str,
    pub offset: u64,
    pub message: String,
}

#[derive(Debug, Serialize)]
pub struct RegionStat {
    pub region: u64,
    pub entries: u64,
    /// The log's bounds; an empty log has `last_index == first_index - 1`.
    pub first_index: u64,
    pub last_index: u64,
    pub live_bytes: u64,
    /// Oldest segment holding one of its live entries.
    pub oldest_segment: Option<u64>,
    /// Its oldest live entry is in a segment older than the active one.
    pub blocks_purge: bool,
    pub tombstone: bool,
    pub hard_state: Option<HardState>,
}

#[derive(Debug, Serialize)]
pub struct PurgeStat {
    /// Newest segment with records: the one being written, never purged.
    pub active_segment: Option<u64>,
    /// Segments no region needs: a purge would recycle them now.
    pub purgeable_segments: Vec<u64>,
    pub blocking_regions: usize,
    /// The region holding back the oldest segment.
    pub oldest_pin: Option<Pin>,
}

#[derive(Debug, Serialize)]
pub struct Pin {
    pub region: u64,
    pub segment: u64,
}

#[derive(Debug, Serialize)]
pub struct RecoveryStat {
    /// Always `tolerant` (see the module docs).
    pub mode: &'static str,
    /// Recovery got through every segment; otherwise `error` says where it
    /// stopped and the numbers cover what came before.
    pub complete: bool,
    pub error: Option<String>,
    pub segments: usize,
    pub records: u64,
    pub entries_replayed: u64,
    pub bytes_replayed: u64,
    pub regions: usize,
    /// Sequence number the next record would get.
    pub next_lsn: u64,
    pub torn_tail: Option<TornTail>,
    /// Records tolerant mode skipped; a strict open refuses the WAL.
    pub dropped: Vec<Dropped>,
    pub needs_catch_up: bool,
}

pub fn stat(dir: PathBuf, wals: &[WalDir]) -> StatReport {
    StatReport { dir, wals: wals.iter().map(stat_wal).collect() }
}

/// Exit code: 0 when recovery got through every WAL, 1 when the description is partial.
pub fn exit_code(report: &StatReport) -> i32 {
    if report.wals.iter().all(|w| w.recovery.complete) {
        0
    } else {
        1
    }
}

fn stat_wal(wal: &WalDir) -> WalStat {
    let mut recovery = Recovery::new(RecoveryMode::Tolerant);
    let mut failed = None;
    for seg in &wal.segments {
        if let Err(e) = recovery.add_segment(seg.seq, seg.bytes()) {
            failed = Some((Some(seg.seq), e));
            break;
        }
    }
    // Tolerant recovery does not fail at the end, but if it ever did there
    // would be no result to describe: the segments are still listed.
    let rec = match recovery.finish() {
        Ok(rec) => Some(rec),
        Err(e) => {
            failed.get_or_insert((None, e));
            None
        }
    };
    let rec = rec.as_ref();
    let live_by_segment = rec.map(|r| r.live_bytes_by_segment()).unwrap_or_default();
    let infos = rec.map_or(&[][..], |r| &r.segments[..]);
    let spare: BTreeSet<u64> = rec.map(|r| r.empty_tail_segments.iter().copied().collect()).unwrap_or_default();
    let empty: BTreeSet<u64> = rec.map(|r| r.empty_inner_segments.iter().copied().collect()).unwrap_or_default();
    let active = infos.last().map(|s| s.seq);

    let segments = wal
        .segments
        .iter()
        .map(|seg| {
            let problem = seg.problem();
            let info = infos.iter().find(|i| i.seq == seg.seq);
            let state = match (&problem, info) {
                (Some(SegmentProblem::Header(_) | SegmentProblem::SeqMismatch { .. }), _) => "unreadable",
                (_, Some(_)) => "live",
                _ if spare.contains(&seg.seq) => "spare",
                _ if empty.contains(&seg.seq) => "empty",
                _ if failed.as_ref().is_some_and(|(s, _)| *s == Some(seg.seq)) => "failed",
                _ => "not_scanned",
            };
            let entry_bytes = info.map_or(0, |i| i.entry_bytes);
            let live = live_by_segment.get(&seg.seq).copied().unwrap_or(0);
            SegmentStat {
                seq: seg.seq,
                file: seg.path.clone(),
                file_bytes: seg.file_bytes(),
                segment_bytes: seg.header.as_ref().ok().map(|h| h.segment_bytes),
                state,
                records: info.map_or(0, |i| i.records),
                used_bytes: info.map_or(0, |i| i.used_bytes),
                entry_bytes,
                live_entry_bytes: live,
                garbage_bytes: entry_bytes.saturating_sub(live),
                problem: problem.map(|p| ProblemStat { kind: p.kind(), offset: p.offset(), message: p.to_string() }),
            }
        })
        .collect();

    let regions: Vec<RegionStat> = rec
        .into_iter()
        .flat_map(|rec| rec.regions())
        .map(|r| RegionStat {
            region: r.region,
            entries: r.entries,
            first_index: r.first_index,
            last_index: r.last_index,
            live_bytes: r.live_bytes,
            oldest_segment: r.oldest_segment,
            blocks_purge: matches!((r.oldest_segment, active), (Some(o), Some(a)) if o < a),
            tombstone: r.tombstone,
            hard_state: r.hard_state.map(HardState::from),
        })
        .collect();

    // As `Wal::purge` decides: everything below the oldest pin goes.
    let oldest_pin = regions
        .iter()
        .filter(|r| r.blocks_purge)
        .filter_map(|r| Some(Pin { region: r.region, segment: r.oldest_segment? }))
        .min_by_key(|p| (p.segment, p.region));
    let floor = oldest_pin.as_ref().map(|p| p.segment).or(active);
    let purge = PurgeStat {
        active_segment: active,
        purgeable_segments: infos.iter().map(|s| s.seq).filter(|&s| floor.is_some_and(|f| s < f)).collect(),
        blocking_regions: regions.iter().filter(|r| r.blocks_purge).count(),
        oldest_pin,
    };

    let report = rec.map(|r| r.report.clone()).unwrap_or_default();
    let recovery = RecoveryStat {
        mode: "tolerant",
        complete: failed.is_none(),
        error: failed.as_ref().map(|(_, e)| e.to_string()),
        segments: report.segments,
        records: report.records,
        entries_replayed: report.entries_replayed,
        bytes_replayed: report.bytes_replayed,
        regions: report.regions,
        next_lsn: rec.map_or(0, |r| r.next_lsn),
        // after a failure, what recovery holds pending is no tail
        torn_tail: if failed.is_none() { report.torn_tail.as_ref().map(TornTail::from) } else { None },
        dropped: report.dropped.iter().map(Dropped::from).collect(),
        needs_catch_up: report.needs_catch_up,
    };

    WalStat {
        shard: wal.shard,
        dir: wal.path.clone(),
        segments,
        free_segments: wal.free.clone(),
        tmp_segments: wal.tmp.clone(),
        unknown_files: wal.unknown.clone(),
        regions,
        purge,
        recovery,
    }
}

fn seq_or_dash(seq: Option<u64>) -> String {
    seq.map_or_else(|| "-".into(), |s| format!("{s:016x}"))
}

fn seq_list(seqs: &[u64]) -> String {
    seqs.iter().map(|s| format!("{s:016x}")).collect::<Vec<_>>().join(" ")
}

pub fn write_text(report: &StatReport, out: &mut dyn Write) -> std::io::Result<()> {
    for (k, w) in report.wals.iter().enumerate() {
        if k > 0 {
            writeln!(out)?;
        }
        match w.shard {
            Some(i) => writeln!(out, "WAL of shard-{i}: {}", w.dir.display())?,
            None => writeln!(out, "WAL {}", w.dir.display())?,
        }
        write_segments(w, out)?;
        write_regions(w, out)?;
        write_purge_and_recovery(w, out)?;
    }
    Ok(())
}

fn write_segments(w: &WalStat, out: &mut dyn Write) -> std::io::Result<()> {
    let total: u64 = w.segments.iter().map(|s| s.file_bytes).sum();
    if w.segments.is_empty() {
        writeln!(out, "  segments: none (an empty WAL)")?;
    } else {
        writeln!(out, "  segments: {} ({total} bytes)", w.segments.len())?;
        writeln!(
            out,
            "    {:<16}  {:>10}  {:>7}  {:>10}  {:>11}  {:>10}  {:>13}  state",
            "segment", "file_bytes", "records", "used_bytes", "entry_bytes", "live_bytes", "garbage_bytes"
        )?;
    }
    for s in &w.segments {
        write!(
            out,
            "    {:016x}  {:>10}  {:>7}  {:>10}  {:>11}  {:>10}  {:>13}  {}",
            s.seq, s.file_bytes, s.records, s.used_bytes, s.entry_bytes, s.live_entry_bytes, s.garbage_bytes, s.state
        )?;
        match &s.problem {
            Some(p) => writeln!(out, ": {}", p.message)?,
            None => writeln!(out)?,
        }
    }
    for (what, list) in
        [("free (kept for recycling)", &w.free_segments), ("tmp (unfinished, removed on open)", &w.tmp_segments)]
    {
        if !list.is_empty() {
            writeln!(out, "  {what}: {}", seq_list(list))?;
        }
    }
    if !w.unknown_files.is_empty() {
        writeln!(out, "  other files: {}", w.unknown_files.join(" "))?;
    }
    Ok(())
}

fn write_regions(w: &WalStat, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(out, "  regions: {}", w.regions.len())?;
    if w.regions.is_empty() {
        return Ok(());
    }
    writeln!(
        out,
        "    {:>8}  {:>8}  {:>11}  {:>10}  {:>10}  {:<16}  {:<12}  {:<9}  hard_state",
        "region", "entries", "first_index", "last_index", "live_bytes", "oldest_segment", "blocks_purge", "tombstone"
    )?;
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    for r in &w.regions {
        writeln!(
            out,
            "    {:>8}  {:>8}  {:>11}  {:>10}  {:>10}  {:<16}  {:<12}  {:<9}  {}",
            r.region,
            r.entries,
            r.first_index,
            r.last_index,
            r.live_bytes,
            seq_or_dash(r.oldest_segment),
            yes_no(r.blocks_purge),
            yes_no(r.tombstone),
            r.hard_state.map_or_else(|| "-".into(), |h| h.to_string())
        )?;
    }
    Ok(())
}

fn write_purge_and_recovery(w: &WalStat, out: &mut dyn Write) -> std::io::Result<()> {
    let p = &w.purge;
    let live = w.segments.iter().filter(|s| s.state == "live").count();
    write!(
        out,
        "  purge: {} of {live} segments with records purgeable now (active segment {}); {} regions block purge",
        p.purgeable_segments.len(),
        seq_or_dash(p.active_segment),
        p.blocking_regions
    )?;
    match &p.oldest_pin {
        Some(pin) => writeln!(out, ", oldest: region {} pins segment {:016x}", pin.region, pin.segment)?,
        None => writeln!(out)?,
    }
    let r = &w.recovery;
    writeln!(
        out,
        "  recovery ({}): {} segments, {} records, {} entries ({} bytes) replayed, {} regions, next lsn {}",
        r.mode, r.segments, r.records, r.entries_replayed, r.bytes_replayed, r.regions, r.next_lsn
    )?;
    if let Some(t) = &r.torn_tail {
        writeln!(out, "    {t}")?;
    }
    for d in &r.dropped {
        writeln!(out, "    {d}")?;
    }
    if !r.dropped.is_empty() {
        writeln!(out, "    records were dropped: the server (strict) refuses this WAL; run `ringraft wal verify` for the first problem")?;
    }
    if r.needs_catch_up {
        writeln!(out, "    opened tolerant, every region would need catch-up before it may vote")?;
    }
    if let Some(e) = &r.error {
        writeln!(out, "    recovery stopped, the numbers above are partial: {e}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::open::open;
    use crate::wal::testkit::{self, Plan};
    use wal::layout::segment_name;

    fn run(dir: &std::path::Path) -> (StatReport, String) {
        let report = stat(dir.to_path_buf(), &open(dir).unwrap());
        let mut text = vec![];
        write_text(&report, &mut text).unwrap();
        (report, String::from_utf8(text).unwrap())
    }

    #[test]
    fn regions_match_what_was_written() {
        let (dir, w) = testkit::build(&Plan::default());
        let (report, text) = run(dir.path());
        assert_eq!(exit_code(&report), 0);
        let s = &report.wals[0];
        let got: Vec<(u64, testkit::Expected)> = s
            .regions
            .iter()
            .map(|r| {
                let e = testkit::Expected {
                    first_index: r.first_index,
                    last_index: r.last_index,
                    entries: r.entries,
                    live_bytes: r.live_bytes,
                    tombstone: r.tombstone,
                    hard_state: r.hard_state.map(|h| wal::HardState { term: h.term, vote: h.vote, commit: h.commit }),
                };
                (r.region, e)
            })
            .collect();
        assert_eq!(got, w.regions.clone().into_iter().collect::<Vec<_>>(), "{text}");
        assert!(text.contains("regions: 4"), "{text}");
    }

    #[test]
    fn segments_account_for_every_entry_byte_as_live_or_garbage() {
        let (dir, w) = testkit::build(&Plan::default());
        let (report, _) = run(dir.path());
        let s = &report.wals[0];
        assert_eq!(s.segments.len() as u64, w.segments);
        assert!(s
            .segments
            .iter()
            .all(|g| g.state == "live" && g.file_bytes == testkit::SEGMENT_BYTES && g.problem.is_none()));
        let written: u64 = s.segments.iter().map(|g| g.entry_bytes).sum();
        let all_entries: u64 = [(1, 90), (2, 60), (3, 5)]
            .iter()
            .map(|&(region, n)| (1..=n).map(|i| testkit::data_len(region, i) as u64).sum::<u64>())
            .sum();
        assert_eq!(written, all_entries);
        let live: u64 = s.segments.iter().map(|g| g.live_entry_bytes).sum();
        assert_eq!(live, w.regions.values().map(|r| r.live_bytes).sum::<u64>());
        let garbage: u64 = s.segments.iter().map(|g| g.garbage_bytes).sum();
        assert_eq!(live + garbage, written);
        assert_eq!(s.recovery.records, s.segments.iter().map(|g| g.records).sum::<u64>());
        assert!(s.recovery.complete && s.recovery.torn_tail.is_none() && s.recovery.dropped.is_empty());
    }

    #[test]
    fn purge_is_blocked_by_regions_with_entries_in_old_segments() {
        let (dir, w) = testkit::build(&Plan::default());
        let (report, text) = run(dir.path());
        let s = &report.wals[0];
        let region = |id: u64| s.regions.iter().find(|r| r.region == id).unwrap();
        // region 1 kept every entry since segment 1; region 2 compacted to its
        // last 2 entries (in the segment before the active one, which holds
        // only the compaction and its seal), regions 3 and 7 hold no entries
        assert!(region(1).blocks_purge);
        assert_eq!(region(1).oldest_segment, Some(1));
        assert_eq!(region(2).oldest_segment, Some(w.segments - 1));
        assert!(region(2).blocks_purge);
        assert!(!region(3).blocks_purge && !region(7).blocks_purge);
        assert_eq!(s.purge.active_segment, Some(w.segments));
        assert!(s.purge.purgeable_segments.is_empty());
        assert_eq!(s.purge.blocking_regions, 2);
        assert!(text.contains("oldest: region 1 pins segment 0000000000000001"), "{text}");
    }

    #[test]
    fn damage_is_described_not_fatal() {
        let (dir, w) = testkit::build(&Plan::default());
        let seg = dir.path().join(segment_name(1));
        // round 4's batch; its seal after it is valid
        let victim = testkit::batch_offsets(&seg, 1)[3];
        testkit::flip_byte(&seg, victim + 100);
        std::fs::write(dir.path().join(segment_name(w.segments + 1)), b"junk").unwrap();
        let (report, text) = run(dir.path());
        let s = &report.wals[0];
        assert_eq!(s.recovery.dropped.len(), 2, "{text}");
        let d = &s.recovery.dropped[0];
        assert_eq!((d.segment, d.offset, d.bytes), (1, victim as u64, wal::format::BLOCK_BYTES as u64), "{text}");
        assert_eq!(s.recovery.entries_replayed, w.entries_written - 5, "{text}");
        assert!(s.recovery.needs_catch_up);
        let junk = s.segments.last().unwrap();
        assert_eq!(junk.state, "unreadable");
        assert!(text.contains("not a WAL segment: file is shorter than a segment header (4 bytes)"), "{text}");
        assert!(text.contains("the server (strict) refuses this WAL"), "{text}");
    }

    #[test]
    fn a_torn_tail_is_reported() {
        let (dir, w) = testkit::build(&Plan::default());
        let seg = dir.path().join(segment_name(w.segments));
        // the last record: the seal of the compaction
        let tail = *testkit::record_offsets(&seg, w.segments).last().unwrap();
        testkit::damage_header(&seg, tail);
        let (report, text) = run(dir.path());
        let r = &report.wals[0].recovery;
        let t = r.torn_tail.as_ref().unwrap();
        assert_eq!((t.segment, t.offset), (w.segments, tail as u64));
        assert!(r.dropped.is_empty() && !r.needs_catch_up, "{text}");
        assert_eq!((r.records, r.entries_replayed), (w.records - 1, w.entries_written), "{text}");
        assert!(text.contains("torn tail at segment"), "{text}");
        assert_eq!(exit_code(&report), 0);
    }

    #[test]
    fn json_has_stable_snake_case_fields() {
        let (dir, _) = testkit::build(&Plan::default());
        let (report, _) = run(dir.path());
        let v: serde_json::Value = serde_json::to_value(&report).unwrap();
        let wal = &v["wals"][0];
        assert!(wal["shard"].is_null());
        assert_eq!(wal["segments"][0]["seq"], 1);
        assert_eq!(wal["segments"][0]["state"], "live");
        assert_eq!(wal["regions"][0]["region"], 1);
        assert_eq!(wal["regions"][0]["hard_state"]["vote"], 1);
        assert_eq!(wal["regions"][0]["blocks_purge"], true);
        assert_eq!(wal["recovery"]["mode"], "tolerant");
        assert!(wal["recovery"]["torn_tail"].is_null());
    }
}
