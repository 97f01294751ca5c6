//! A snapshot file off a disk that can rot, or off a peer's stream: it
//! reads back as a region snapshot or is an error (the replica refuses
//! it) — never a panic, never an allocation a damaged length asks for.
//!
//! `scripts/fuzz.sh snapshot_file 10` runs it for ten minutes.

#![no_main]

use engine::snapshot::format;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = format::decode(data);
});
