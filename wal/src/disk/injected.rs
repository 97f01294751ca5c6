//! A slow disk on demand: `ringraft chaos` makes one store's fdatasyncs
//! slow through the status endpoint of a store started with
//! `--fault-injection` (the engine's `runtime::fault_control`). Every
//! [`super::GlommioDisk`] file of the process waits this long (on the
//! executor's timer, so the shard runs on meanwhile, as it does while a
//! real slow flush is in flight) before each fdatasync. Process-wide, as a
//! slow device is.
//!
//! Off (zero) the cost is one relaxed atomic load per fdatasync.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// The longest delay one fdatasync may be given.
pub const SYNC_DELAY_MAX: Duration = Duration::from_secs(10);

static SYNC_DELAY_US: AtomicU64 = AtomicU64::new(0);

/// From now on every fdatasync waits `delay` first (zero: none).
pub fn set_sync_delay(delay: Duration) -> Result<(), String> {
    if delay > SYNC_DELAY_MAX {
        return Err(format!("a sync delay of {delay:?} is above the most allowed, {SYNC_DELAY_MAX:?}"));
    }
    SYNC_DELAY_US.store(delay.as_micros() as u64, Relaxed);
    Ok(())
}

/// The delay each fdatasync waits first.
pub fn sync_delay() -> Duration {
    Duration::from_micros(SYNC_DELAY_US.load(Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delay_is_kept_until_changed_and_one_too_long_is_refused() {
        set_sync_delay(Duration::from_millis(40)).unwrap();
        assert_eq!(sync_delay(), Duration::from_millis(40));
        assert!(set_sync_delay(SYNC_DELAY_MAX + Duration::from_millis(1)).is_err());
        assert_eq!(sync_delay(), Duration::from_millis(40));
        set_sync_delay(Duration::ZERO).unwrap();
        assert_eq!(sync_delay(), Duration::ZERO);
    }
}
