//! Real WAL directories for the tools' tests, written by the `wal` crate
//! itself through its in-memory disk (no glommio, no io_uring) and copied to
//! a temporary directory, with what was written kept beside them so tests
//! can check the tools' numbers against it.

use std::collections::BTreeMap;
use std::path::Path;

use futures_lite::future::block_on;
use wal::disk::MemDisk;
use wal::layout::{parse_name, FileKind};
use wal::{Entry, FlushStart, HardState, RegionWrite, Wal, WalOptions};

/// Segment size of test WALs: small, so a few dozen flushes roll segments
/// (15 one-block records after the header block).
pub const SEGMENT_BYTES: u64 = 64 << 10;

/// The workload. Every round is one flush (one batch record), then the seal
/// that acknowledges it: a one-block batch record with no sections, or the
/// checkpoint record of a new segment when the seal opens one. The
/// compaction after the last round is one more batch and seal:
/// `2 * (rounds + 1)` records.
/// - region 1: 3 entries and a HardState committing them;
/// - region 2: 2 entries; after the last round it is compacted to its last 2
///   (which sit in the segment before the newest: that one holds only the
///   compaction and its seal);
/// - region 3: 5 entries and a vote in round 1, a tombstone in the last round;
/// - region 7: a HardState only (no entries) in the first and last rounds.
#[derive(Clone, Debug)]
pub struct Plan {
    pub rounds: u64,
}

impl Default for Plan {
    fn default() -> Self {
        Plan { rounds: 30 }
    }
}

/// What a region should look like after recovery.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expected {
    pub first_index: u64,
    pub last_index: u64,
    pub entries: u64,
    pub live_bytes: u64,
    pub tombstone: bool,
    pub hard_state: Option<HardState>,
}

/// What was written.
#[derive(Debug)]
pub struct Written {
    /// Segment files, numbered 1..=segments.
    pub segments: u64,
    /// Entries appended, all regions (including ones later compacted or dropped).
    pub entries_written: u64,
    /// Records written: one per flush, seals included.
    pub records: u64,
    /// Of those, seals: records carrying no write (no sections).
    pub seals: u64,
    pub regions: BTreeMap<u64, Expected>,
}

/// Data length of an entry: varied, so byte counts catch off-by-one errors.
pub fn data_len(region: u64, index: u64) -> usize {
    150 + ((region * 31 + index * 7) % 100) as usize
}

/// Writes the plan's WAL into a new temporary directory.
pub fn build(plan: &Plan) -> (tempfile::TempDir, Written) {
    let dir = tempfile::tempdir().expect("tempdir");
    let written = build_into(plan, dir.path());
    (dir, written)
}

/// Writes the plan's WAL into `dir` (created if needed).
pub fn build_into(plan: &Plan, dir: &Path) -> Written {
    assert!(plan.rounds >= 30, "several segments, region 2's last 2 entries in an older one than the newest");
    let disk = MemDisk::new();
    let opts = WalOptions { segment_bytes: SEGMENT_BYTES, batch_bytes_max: 16 << 10, ..Default::default() };
    let (mut wal, _) = block_on(Wal::open(disk.clone(), opts)).expect("open an empty WAL");
    let mut entries_written = 0;
    let mut flushes = Flushes::default();
    let entries = |region: u64, first: u64, n: u64, term: u64| -> Vec<Entry> {
        (first..first + n)
            .map(|index| Entry {
                index,
                term,
                entry_type: (index % 3 == 0) as u8,
                data: vec![index as u8; data_len(region, index)].into(),
            })
            .collect()
    };
    let r = plan.rounds;
    for round in 1..=r {
        let term = 1 + round / 10;
        let w1 = entries(1, 3 * (round - 1) + 1, 3, term);
        let hs1 = HardState { term, vote: 1, commit: 3 * round };
        wal.append(1, RegionWrite { entries: w1, hard_state: Some(hs1), ..Default::default() }).unwrap();
        wal.append(2, RegionWrite { entries: entries(2, 2 * (round - 1) + 1, 2, 1), ..Default::default() }).unwrap();
        entries_written += 5;
        if round == 1 {
            let hs = HardState { term: 1, vote: 3, commit: 0 };
            wal.append(3, RegionWrite { entries: entries(3, 1, 5, 1), hard_state: Some(hs), ..Default::default() })
                .unwrap();
            entries_written += 5;
        }
        if round == 1 || round == r {
            let hs = HardState { term: round, vote: 7, commit: 0 };
            wal.append(7, RegionWrite { hard_state: Some(hs), ..Default::default() }).unwrap();
        }
        if round == r {
            wal.append(3, RegionWrite { tombstone: true, ..Default::default() }).unwrap();
        }
        flushes.all(&mut wal);
    }
    wal.compact_to(2, 2 * r - 1).unwrap();
    flushes.all(&mut wal);

    let mut segments = 0;
    std::fs::create_dir_all(dir).expect("create WAL directory");
    for name in disk.file_names() {
        if let Some(FileKind::Segment(_)) = parse_name(&name) {
            segments += 1;
        }
        std::fs::write(dir.join(&name), disk.contents(&name).expect("listed file")).expect("write WAL file");
    }

    let live = |region: u64, lo: u64, hi: u64| (lo..=hi).map(|i| data_len(region, i) as u64).sum();
    let regions = BTreeMap::from([
        (
            1,
            Expected {
                first_index: 1,
                last_index: 3 * r,
                entries: 3 * r,
                live_bytes: live(1, 1, 3 * r),
                tombstone: false,
                hard_state: Some(HardState { term: 1 + r / 10, vote: 1, commit: 3 * r }),
            },
        ),
        (
            2,
            Expected {
                first_index: 2 * r - 1,
                last_index: 2 * r,
                entries: 2,
                live_bytes: live(2, 2 * r - 1, 2 * r),
                tombstone: false,
                hard_state: None,
            },
        ),
        (
            3,
            Expected {
                first_index: 1,
                last_index: 0,
                entries: 0,
                live_bytes: 0,
                tombstone: true,
                hard_state: Some(HardState { term: 1, vote: 3, commit: 0 }),
            },
        ),
        (
            7,
            Expected {
                first_index: 1,
                last_index: 0,
                entries: 0,
                live_bytes: 0,
                tombstone: false,
                hard_state: Some(HardState { term: r, vote: 7, commit: 0 }),
            },
        ),
    ]);
    Written { segments, entries_written, records: flushes.records, seals: flushes.seals, regions }
}

/// Records written so far: every flush writes one.
#[derive(Default)]
struct Flushes {
    records: u64,
    seals: u64,
}

impl Flushes {
    /// Runs flushes (preparing segments as needed) until nothing is staged
    /// and the last record is sealed.
    fn all(&mut self, wal: &mut Wal<MemDisk>) {
        loop {
            match wal.start_flush() {
                FlushStart::Flush(f) => {
                    self.records += 1;
                    self.seals += u64::from(f.writes == 0);
                    let r = block_on(f.execute());
                    wal.finish_flush(r).expect("flush");
                }
                FlushStart::NeedSpare => {
                    let job = wal.spare_job().expect("no spare job in flight");
                    let spare = block_on(job.run());
                    wal.add_spare(spare).expect("prepare a segment");
                }
                FlushStart::Idle => break,
            }
        }
        assert_eq!(wal.durable_ticket(), wal.last_ticket(), "every write is acknowledged");
    }
}

/// Offsets of the valid records of a segment file, in order.
pub fn record_offsets(path: &Path, seq: u64) -> Vec<usize> {
    wal::format::record_offsets(&std::fs::read(path).expect("read segment"), seq)
}

/// Offsets of the valid records of a segment file that carry writes (with
/// sections): every record but the seals, in order.
pub fn batch_offsets(path: &Path, seq: u64) -> Vec<usize> {
    let bytes = std::fs::read(path).expect("read segment");
    wal::format::record_offsets(&bytes, seq)
        .into_iter()
        .filter(|&offset| {
            wal::format::decode_record(&bytes, offset, seq).expect("listed as valid").header.section_count > 0
        })
        .collect()
}

/// Damages the record at `record` (its offset) of a segment file so that its
/// checksum fails, whatever the record: flips a bit of its sequence number,
/// in the header. (A seal has no payload: past its header is zero padding,
/// which no checksum covers.)
pub fn damage_header(path: &Path, record: usize) {
    flip_byte(path, record + 17);
}

/// Flips one bit of the byte at `offset` of a file.
pub fn flip_byte(path: &Path, offset: usize) {
    let mut bytes = std::fs::read(path).expect("read file");
    bytes[offset] ^= 0x10;
    std::fs::write(path, bytes).expect("write file");
}
