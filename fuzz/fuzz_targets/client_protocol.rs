//! Bytes on a shard's client port: a frame's payload must decode to a
//! request or an answer, or be an error that closes the connection —
//! never a panic. What decodes encodes to something that decodes to the
//! same message.
//!
//! `scripts/fuzz.sh client_protocol 10` runs it for ten minutes.

#![no_main]

use engine::client::protocol::{decode, encode, ClientRequest, ClientResponse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = decode::<ClientRequest>(data) {
        assert_eq!(decode::<ClientRequest>(&encode(&req)).as_ref(), Ok(&req));
    }
    if let Ok(resp) = decode::<ClientResponse>(data) {
        assert_eq!(decode::<ClientResponse>(&encode(&resp)).as_ref(), Ok(&resp));
    }
});
