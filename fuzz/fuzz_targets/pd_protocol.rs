//! Bytes on PD's port and in its state file: a request or answer frame's
//! payload decodes or is an error (the connection closes), and a state
//! file decodes or is refused naming its offset — never a panic. What
//! decodes encodes to something that decodes to the same message.
//!
//! `scripts/fuzz.sh pd_protocol 10` runs it for ten minutes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pd::protocol::{decode, encode, RequestFrame, ResponseFrame};
use pd::storage::{decode_state, encode_state};

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = decode::<RequestFrame>(data) {
        assert_eq!(decode::<RequestFrame>(&encode(&req)).as_ref(), Ok(&req));
    }
    if let Ok(resp) = decode::<ResponseFrame>(data) {
        assert_eq!(decode::<ResponseFrame>(&encode(&resp)).as_ref(), Ok(&resp));
    }
    if let Ok(state) = decode_state("fuzz", data) {
        let again = decode_state("fuzz", &encode_state(&state)).expect("an encoded state decodes");
        assert_eq!(again, state);
    }
});
