//! The sans-IO transport: whatever the chunking TCP applies, what one shard
//! pushes for a destination comes out of the decoder whole and in order; bad
//! bytes are errors, never panics; one frame per destination per flush.

use bytes::Bytes;
use proptest::prelude::*;
use transport::envelope::MESSAGE_BYTES_MAX;
use transport::outbox::{OUTBOX_MESSAGES_MAX, SPARE_BUFFERS_MAX};
use transport::*;

fn envelope(region: u64, msg: Vec<u8>, key: u8) -> Envelope {
    Envelope {
        region_id: region,
        start_key: Bytes::from(vec![key; (key % 5) as usize]),
        end_key: Bytes::from(vec![key.wrapping_add(1); (key % 7) as usize]),
        epoch: Epoch { conf_ver: region % 3, version: region % 11 },
        from: Peer { peer_id: region * 10 + 1, store_id: 1, shard: 0 },
        to: Target { peer_id: region * 10 + 2, store_id: 2, shard: 0 },
        message: Bytes::from(msg),
    }
}

/// Decodes a byte stream fed in the given chunk sizes into raft envelopes.
fn decode_stream(stream: &[u8], chunks: &[usize]) -> Vec<Envelope> {
    let mut d = FrameDecoder::new();
    let mut out = vec![];
    let mut at = 0;
    let mut sizes = chunks.iter().cycle();
    while at < stream.len() {
        let n = (*sizes.next().unwrap()).clamp(1, stream.len() - at);
        d.push(&stream[at..at + n]);
        at += n;
        while let Some(f) = d.next_frame().expect("valid stream") {
            assert_eq!(f.kind, FrameKind::Raft);
            out.extend(decode_raft_batch(&f.payload).expect("valid batch"));
        }
    }
    d.finish().expect("ends on a frame boundary");
    out
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn messages_round_trip_through_frames_and_any_tcp_chunking(
        iterations in prop::collection::vec(
            prop::collection::vec((0u64..50, 0u16..3, prop::collection::vec(any::<u8>(), 0..300), any::<u8>()), 0..40),
            1..6,
        ),
        chunks in prop::collection::vec(1usize..5000, 1..20),
    ) {
        let mut outboxes = Outboxes::new();
        let mut streams: std::collections::BTreeMap<Destination, Vec<u8>> = Default::default();
        let mut sent: std::collections::BTreeMap<Destination, Vec<Envelope>> = Default::default();
        for iteration in &iterations {
            for (region, shard, msg, key) in iteration {
                let to = Destination { store_id: 2, shard: *shard };
                let e = envelope(*region, msg.clone(), *key);
                outboxes.push(to, &e).unwrap();
                sent.entry(to).or_default().push(e);
            }
            let frames = outboxes.flush();
            let destinations: std::collections::BTreeSet<u16> = iteration.iter().map(|m| m.1).collect();
            prop_assert_eq!(frames.len(), destinations.len(), "one frame per destination per flush");
            for f in frames {
                streams.entry(f.to).or_default().extend_from_slice(&f.bytes);
                // the transport hands written buffers back, bytes and all
                outboxes.recycle(f.bytes);
            }
        }
        for (to, stream) in &streams {
            prop_assert_eq!(&decode_stream(stream, &chunks), &sent[to]);
        }
    }

    #[test]
    fn random_bytes_are_errors_or_need_more_never_a_panic(bytes in prop::collection::vec(any::<u8>(), 0..2000)) {
        let mut d = FrameDecoder::new();
        d.push(&bytes);
        for _ in 0..bytes.len() + 1 {
            match d.next_frame() {
                Ok(Some(f)) => {
                    let _ = decode_raft_batch(&f.payload);
                    let _ = Handshake::accept(&f.payload, 1, 1, 0);
                }
                Ok(None) | Err(_) => break,
            }
        }
    }

    #[test]
    fn a_damaged_raft_payload_is_an_error_never_a_panic(cut in 0usize..400, flip in 0usize..400) {
        let mut payload = vec![];
        let es: Vec<_> = (0..5).map(|r| envelope(r, vec![r as u8; 40], r as u8)).collect();
        encode_raft_batch(&mut payload, es.iter());
        let mut damaged = payload.clone();
        let i = flip % damaged.len();
        damaged[i] ^= 0xa5;
        let _ = decode_raft_batch(&Bytes::from(damaged));
        let cut = cut % payload.len();
        prop_assert!(decode_raft_batch(&Bytes::from(payload[..cut].to_vec())).is_err());
    }
}

#[test]
fn ten_thousand_regions_make_one_frame_per_destination() {
    let mut outboxes = Outboxes::new();
    for region in 0..10_000u64 {
        let to = Destination { store_id: 2 + region % 2, shard: (region % 2) as u16 };
        outboxes.push(to, &envelope(region, vec![0; 40], 1)).unwrap();
    }
    let frames = outboxes.flush();
    assert_eq!(frames.len(), 2);
    assert_eq!(frames.iter().map(|f| f.messages).sum::<usize>(), 10_000);
    assert_eq!(outboxes.stats().messages_per_frame(), 5_000.0);
    assert!(outboxes.flush().is_empty(), "a flush empties the outboxes");
}

#[test]
fn written_frames_buffers_are_reused_for_later_frames_and_only_a_few_are_kept() {
    let mut outboxes = Outboxes::new();
    let to = Destination { store_id: 2, shard: 0 };
    outboxes.push(to, &envelope(1, vec![7; 3000], 1)).unwrap();
    let first = outboxes.flush().pop().unwrap();
    let (ptr, capacity) = (first.bytes.as_ptr(), first.bytes.capacity());
    outboxes.recycle(first.bytes);
    // the next frame is built in it, and carries only its own message
    outboxes.push(to, &envelope(2, vec![8; 10], 1)).unwrap();
    let second = outboxes.flush().pop().unwrap();
    assert_eq!((second.bytes.as_ptr(), second.bytes.capacity()), (ptr, capacity), "built in the recycled buffer");
    assert_eq!(decode_stream(&second.bytes, &[second.bytes.len()]), vec![envelope(2, vec![8; 10], 1)]);

    // a burst of returned buffers: only SPARE_BUFFERS_MAX stay, so the next
    // frames get that many reused buffers and fresh ones after
    let kept: Vec<*const u8> = (0..SPARE_BUFFERS_MAX + 5)
        .map(|_| {
            let b = Vec::with_capacity(4096);
            let p = b.as_ptr();
            outboxes.recycle(b);
            p
        })
        .collect();
    // (only the first SPARE_BUFFERS_MAX are kept: the others were freed, and
    // the allocator may hand their addresses out again)
    let kept = &kept[..SPARE_BUFFERS_MAX];
    let mut reused = 0;
    for r in 0..(SPARE_BUFFERS_MAX + 5) as u64 {
        outboxes.push(to, &envelope(r, vec![1; 10], 1)).unwrap();
        let f = outboxes.flush().pop().unwrap();
        reused += usize::from(kept.contains(&f.bytes.as_ptr()));
        std::mem::forget(f); // keep its address from being handed out again
    }
    assert_eq!(reused, SPARE_BUFFERS_MAX);
}

#[test]
fn a_full_outbox_drops_and_names_the_destination_and_oversize_is_refused_not_truncated() {
    let mut outboxes = Outboxes::new();
    let to = Destination { store_id: 9, shard: 1 };
    for r in 0..OUTBOX_MESSAGES_MAX as u64 {
        outboxes.push(to, &envelope(r, vec![], 0)).unwrap();
    }
    assert_eq!(outboxes.push(to, &envelope(1, vec![], 0)), Err(PushError::Full(to)));
    assert_eq!(outboxes.stats().dropped, 1);
    let other = Destination { store_id: 9, shard: 2 };
    outboxes.push(other, &envelope(1, vec![], 0)).expect("other destinations are unaffected");

    let huge = envelope(3, vec![0; MESSAGE_BYTES_MAX + 1], 0);
    assert!(matches!(outboxes.push(other, &huge), Err(PushError::Envelope(_))));
}
