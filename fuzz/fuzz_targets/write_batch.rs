//! A committed entry's bytes: a write batch or an admin command decodes,
//! or is an error that fences its region — never a panic (a panic would
//! stop the store at every restart). The in-place reader and the owning
//! one agree on what is valid, and a valid batch encodes back to itself.
//!
//! `scripts/fuzz.sh write_batch 10` runs it for ten minutes.

#![no_main]

use engine::kv::admin::AdminCommand;
use engine::kv::{WriteBatch, WriteBatchRef};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let owned = WriteBatch::decode(data);
    assert_eq!(WriteBatchRef::decode(data).is_ok(), owned.is_ok(), "the two readers disagree");
    if let Ok(batch) = owned {
        assert_eq!(WriteBatch::decode(&batch.encode()).as_ref(), Ok(&batch));
    }
    let _ = AdminCommand::decode(data);
});
