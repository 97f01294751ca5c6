//! Offline tools for ringraft data directories, behind the `ringraft` binary.
//!
//! - [`wal`]: `ringraft wal stat|dump|verify`, a read-only WAL inspector.
//!
//! Tools never write to a data directory and never run beside a live server
//! on the same files: they are for operators and scripts looking at a store
//! that is stopped (or a copy of one).

pub mod wal;
