//! The payloads of the request/answer protocols on transport frames (the
//! client protocol on a shard's client port, PD's protocol): bincode 2,
//! standard configuration, little-endian with variable-length integers,
//! and decoded exactly — a payload over the protocol's limit or with bytes
//! left over is not a message. Decoding is bounded too: a length prefix
//! claiming more than `MESSAGE_BYTES_MAX` is refused before anything is
//! allocated for it (a 20-byte frame must not ask for a terabyte).

use bincode::{Decode, Encode};

use crate::frame::{begin_frame, finish_frame, FrameKind};

/// Largest payload of either protocol; what a decoded message may claim in all.
pub const MESSAGE_BYTES_MAX: usize = 8 << 20;

const _: () = assert!(MESSAGE_BYTES_MAX <= crate::frame::FRAME_BYTES_MAX);

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_little_endian().with_variable_int_encoding()
}

/// The same encoding, with what a message may claim bounded.
fn decode_config() -> impl bincode::config::Config {
    bincode::config::standard().with_little_endian().with_variable_int_encoding().with_limit::<MESSAGE_BYTES_MAX>()
}

/// `m`'s bytes (a frame's payload).
pub fn encode<T: Encode>(m: &T) -> Vec<u8> {
    bincode::encode_to_vec(m, config()).expect("protocol messages always encode")
}

/// Appends `m` to `out` as one frame of `kind`, encoded in place.
pub fn encode_frame<T: Encode>(out: &mut Vec<u8>, kind: FrameKind, m: &T) {
    let at = begin_frame(out);
    bincode::encode_into_std_write(m, out, config()).expect("protocol messages always encode");
    finish_frame(out, at, kind);
}

/// Bytes `m` encodes to, without encoding it anywhere.
pub fn encoded_len<T: Encode>(m: &T) -> usize {
    let mut w = bincode::enc::write::SizeWriter::default();
    bincode::encode_into_writer(m, &mut w, config()).expect("protocol messages always encode");
    w.bytes_written
}

/// Decodes a whole payload of at most `bytes_max` (≤ `MESSAGE_BYTES_MAX`);
/// the error says why not.
pub fn decode_exact<T: Decode<()>>(payload: &[u8], bytes_max: usize) -> Result<T, String> {
    if payload.len() > bytes_max.min(MESSAGE_BYTES_MAX) {
        return Err(format!("{} bytes, over {}", payload.len(), bytes_max.min(MESSAGE_BYTES_MAX)));
    }
    let (m, used) = bincode::decode_from_slice(payload, decode_config()).map_err(|e| e.to_string())?;
    if used != payload.len() {
        return Err(format!("{} trailing bytes", payload.len() - used));
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_decodes_exactly_or_says_why_not() {
        let m = (7u64, String::from("seven"));
        let bytes = encode(&m);
        assert_eq!(encoded_len(&m), bytes.len());
        assert_eq!(decode_exact::<(u64, String)>(&bytes, 64), Ok(m));
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_exact::<(u64, String)>(&longer, 64).unwrap_err().contains("1 trailing bytes"));
        assert!(decode_exact::<(u64, String)>(&bytes, 3).unwrap_err().contains("over 3"));
        assert!(decode_exact::<(u64, String)>(&[0xff; 5], 64).is_err());
    }

    #[test]
    fn a_length_prefix_claiming_too_much_is_refused_before_allocating() {
        // varint 253 = a u64 follows: a byte string "of 2^40 bytes", then nothing
        let mut bytes = vec![253];
        bytes.extend_from_slice(&(1u64 << 40).to_le_bytes());
        let err = decode_exact::<Vec<u8>>(&bytes, 64).unwrap_err();
        assert!(err.to_lowercase().contains("limit"), "{err}");
        let err = decode_exact::<Vec<(u64, String)>>(&bytes, 64).unwrap_err();
        assert!(err.to_lowercase().contains("limit"), "{err}");
    }
}
