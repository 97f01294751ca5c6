//! What the `decode_never_panics` tests of each crate do to a valid
//! encoding, shared by path (`#[path]`): each crate's test includes it, so
//! the rule is written once.

use std::fmt::Debug;

use proptest::prelude::*;

/// What a property does to a valid encoding, and the noise it sends instead:
/// a strict prefix (`cut`) and a longer encoding (`tail`) must be refused;
/// the encoding with bytes flipped (`flips`), alone, cut or lengthened, must
/// be answered.
#[derive(Clone, Debug)]
pub struct Mutations {
    pub flips: Vec<(usize, u8)>,
    pub cut: usize,
    pub tail: Vec<u8>,
    pub noise: Vec<u8>,
}

pub fn mutations() -> impl Strategy<Value = Mutations> {
    // half the flips fall in the first 64 bytes, where the lengths and tags a decoder branches on are
    let flip = (prop_oneof![0usize..64, any::<usize>()], 1..=u8::MAX);
    (prop::collection::vec(flip, 1..4), any::<usize>(), any_bytes(1..16), any_bytes(0..512))
        .prop_map(|(flips, cut, tail, noise)| Mutations { flips, cut, tail, noise })
}

impl Mutations {
    /// `valid` (not empty) with the bytes at `flips` XORed with their masks.
    pub fn flipped(&self, valid: &[u8]) -> Vec<u8> {
        let mut bytes = valid.to_vec();
        for &(at, mask) in &self.flips {
            let at = at % bytes.len();
            bytes[at] ^= mask;
        }
        bytes
    }
}

pub fn any_bytes(len: std::ops::Range<usize>) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), len)
}

/// `decode` gives `value` back from its encoding `valid`, refuses `valid`
/// cut short or lengthened, and answers it damaged, and the noise.
pub fn check<T: PartialEq + Debug, E: Debug>(
    decode: impl Fn(&[u8]) -> Result<T, E>,
    value: &T,
    valid: &[u8],
    m: &Mutations,
) -> Result<(), TestCaseError> {
    match decode(valid) {
        Ok(back) => prop_assert_eq!(&back, value),
        Err(e) => return Err(TestCaseError::fail(format!("a valid encoding was refused: {e:?}"))),
    }
    let cut = m.cut % valid.len();
    prop_assert!(decode(&valid[..cut]).is_err(), "decoded when cut to {} of {} bytes", cut, valid.len());
    let longer = [valid, &m.tail[..]].concat();
    prop_assert!(decode(&longer[..]).is_err(), "decoded with {} bytes appended", m.tail.len());
    let flipped = m.flipped(valid);
    let _ = decode(&flipped[..]);
    let _ = decode(&flipped[..cut]);
    let _ = decode(&[&flipped[..], &m.tail[..]].concat()[..]);
    let _ = decode(&m.noise[..]);
    Ok(())
}
