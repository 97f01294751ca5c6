//! Knobs of one log, with the limits they must respect.

use crate::format::{align_up, BLOCK_BYTES, CHECKPOINT_HEAD_BYTES, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use crate::recovery::RecoveryMode;

/// Default segment size.
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 << 20;
/// Smallest segment (tests use small ones to roll often).
pub const SEGMENT_BYTES_MIN: u64 = 64 << 10;
/// Largest segment: offsets in the index are 32-bit.
pub const SEGMENT_BYTES_MAX: u64 = 1 << 30;
/// Default largest group-commit write.
pub const BATCH_BYTES_DEFAULT: usize = 8 << 20;
/// Default bytes that may wait for the disk before appends are refused.
pub const STAGED_BYTES_DEFAULT: usize = 64 << 20;
/// Default purged segments kept for recycling.
pub const FREE_SEGMENTS_DEFAULT: usize = 4;
/// Most regions one log holds (tombstones included).
pub const REGIONS_MAX: usize = 1 << 16;
/// Most regions a purge names as blocking it.
pub const BLOCKING_REPORT_MAX: usize = 16;

const _: () = assert!(SEGMENT_BYTES_MAX <= u32::MAX as u64);
const _: () = assert!((SEGMENT_BYTES_MIN as usize).is_multiple_of(BLOCK_BYTES));
const _: () = assert!(BATCH_BYTES_DEFAULT as u64 <= SEGMENT_BYTES_DEFAULT / 2);

#[derive(Clone, Debug)]
pub struct WalOptions {
    /// Size of every segment file.
    pub segment_bytes: u64,
    /// Largest record one flush writes. Must fit half a segment: the other
    /// half is the budget for the checkpoint that opens each segment.
    pub batch_bytes_max: usize,
    /// Bytes appended but not yet written; past it appends get `Busy`.
    pub staged_bytes_max: usize,
    /// Purged segments kept for reuse (overwriting written blocks is about
    /// twice as cheap as writing fresh ones); more are deleted.
    pub free_segments_max: usize,
    pub recovery_mode: RecoveryMode,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            batch_bytes_max: BATCH_BYTES_DEFAULT,
            staged_bytes_max: STAGED_BYTES_DEFAULT,
            free_segments_max: FREE_SEGMENTS_DEFAULT,
            recovery_mode: RecoveryMode::Strict,
        }
    }
}

impl WalOptions {
    /// Checks how the knobs relate; called on open.
    pub fn validate(&self) -> Result<(), String> {
        let s = self.segment_bytes;
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&s) || !s.is_multiple_of(BLOCK_BYTES as u64) {
            return Err(format!(
                "segment size {s} must be a multiple of {BLOCK_BYTES} between {SEGMENT_BYTES_MIN} and {SEGMENT_BYTES_MAX}"
            ));
        }
        if self.batch_bytes_max < BLOCK_BYTES || self.record_max() as u64 > s / 2 {
            return Err(format!(
                "batch limit {} must be at least {BLOCK_BYTES} and fit half a segment ({} bytes)",
                self.batch_bytes_max,
                s / 2
            ));
        }
        if self.staged_bytes_max < self.batch_bytes_max {
            return Err(format!(
                "staged limit {} is below the batch limit {}",
                self.staged_bytes_max, self.batch_bytes_max
            ));
        }
        Ok(())
    }

    /// Disk bytes of the largest batch record.
    pub(crate) fn record_max(&self) -> usize {
        align_up(RECORD_HEADER_BYTES + self.batch_bytes_max)
    }

    /// Payload budget of the checkpoint that opens each segment: what is left
    /// after the header block and the largest batch.
    pub fn checkpoint_bytes_max(&self) -> usize {
        // the checkpoint record is align_up(header + checkpoint + batch) <=
        // record_max + checkpoint + one block of padding
        self.segment_bytes as usize - SEGMENT_HEADER_BYTES - self.record_max() - BLOCK_BYTES - CHECKPOINT_HEAD_BYTES
    }
}
