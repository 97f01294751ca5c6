//! PD's decoders answer bytes they did not make with an error, never a
//! panic: requests and answers come off sockets anyone can connect to, and
//! the state file off a disk that can rot (docs/reliability.md, "fuzzing of
//! the decoders"). For each decoder: a valid encoding decodes to what was
//! encoded; cut short or lengthened it is refused (messages and the state
//! file know their own end); damaged (bytes flipped, cut, appended) or
//! replaced by noise it is answered, Ok or Err — a panic fails the test.

use std::net::SocketAddr;

use pd::meta::{Epoch, PeerInfo, RegionInfo, RegionStats, StoreInfo, StoreState};
use pd::protocol::{
    decode, encode, PdError, PdRequest, PdResponse, RegionReport, RegionView, RequestFrame, ResponseFrame,
};
use pd::storage::{decode_state, encode_state, ClusterState, STATE_FORMAT_VERSION, STATE_HEADER_BYTES, STATE_MAGIC};
use proptest::prelude::*;

#[path = "../../tests/support/decode_mutations.rs"]
mod decode_mutations;
use decode_mutations::{any_bytes, check, mutations};

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1], port))
}

/// A region of `peers` voters from `start` (ids small enough to multiply by 10).
fn region((id, start, peers): (u64, Vec<u8>, u64)) -> RegionInfo {
    let mut end = start.clone();
    end.push(0xff);
    RegionInfo {
        id,
        start_key: start,
        end_key: end,
        epoch: Epoch { conf_ver: id % 7, version: id % 5 },
        peers: (1..=peers).map(|p| PeerInfo::voter(id * 10 + p, p, (p % 4) as u16)).collect(),
        max_peer_id: id * 10 + peers,
    }
}

fn region_args() -> impl Strategy<Value = (u64, Vec<u8>, u64)> {
    (1..1u64 << 40, any_bytes(0..24), 1..=7u64)
}

fn request() -> impl Strategy<Value = RequestFrame> {
    let body = prop_oneof![
        any::<(u64, u64, u16)>().prop_map(|(store_id, token, port)| PdRequest::RegisterStore {
            store_id,
            token,
            shards: 2,
            peer_addr: addr(port),
            client_addr: addr(port ^ 1),
            capacity_bytes: token >> 3,
        }),
        (region_args(), any::<u64>()).prop_map(|(args, term)| {
            let region = region(args);
            let leader = region.peers[0];
            let pending_peers = vec![region.max_peer_id];
            let report = RegionReport { region, leader, term, stats: RegionStats::default(), pending_peers };
            PdRequest::RegionHeartbeats { store_id: 1, reports: vec![report] }
        }),
        (any_bytes(0..64), any::<u32>()).prop_map(|(start_key, limit)| PdRequest::ScanRegions { start_key, limit }),
        any_bytes(0..64).prop_map(|key| PdRequest::GetRegionByKey { key }),
        Just(PdRequest::GetCluster),
    ];
    (any::<(u64, u64)>(), body).prop_map(|((id, cluster_id), body)| RequestFrame { id, cluster_id, body })
}

type Answer = Result<PdResponse, PdError>;

fn response() -> impl Strategy<Value = ResponseFrame> {
    let result = prop_oneof![
        (region_args(), any::<u64>()).prop_map(|(args, term)| {
            let region = region(args);
            let leader = Some(region.peers[0]);
            let view = RegionView { region, leader, term, stats: RegionStats::default(), pending_peers: vec![] };
            Answer::Ok(PdResponse::Regions(vec![view]))
        }),
        any::<(u64, u32)>().prop_map(|(first, count)| Answer::Ok(PdResponse::Ids { first, count })),
        region_args().prop_map(|args| {
            let current = Box::new(region(args));
            Answer::Err(PdError::StaleEpoch { region_id: current.id, reported: Epoch::default(), current })
        }),
        any_bytes(0..40).prop_map(|b| Answer::Err(PdError::Invalid(String::from_utf8_lossy(&b).into_owned()))),
    ];
    (any::<(u64, u64)>(), result).prop_map(|((id, cluster_id), result)| ResponseFrame { id, cluster_id, result })
}

fn cluster_state() -> impl Strategy<Value = ClusterState> {
    (any::<u64>(), 1..=5u16, any::<bool>(), prop::collection::vec(region_args(), 0..6)).prop_map(
        |(cluster_id, stores, bootstrapped, regions)| ClusterState {
            cluster_id,
            replicas: 3,
            initial_regions: regions.len() as u32,
            bootstrapped,
            ids_reserved_until: cluster_id >> 1,
            stores_version: u64::from(stores),
            stores: (1..=stores)
                .map(|id| StoreInfo {
                    id: u64::from(id),
                    peer_addr: addr(2 * id),
                    client_addr: addr(2 * id + 1),
                    shards: 2,
                    capacity_bytes: 1 << 30,
                    token: cluster_id ^ u64::from(id),
                    state: StoreState::Serving,
                })
                .collect(),
            regions: regions.into_iter().map(region).collect(),
        },
    )
}

/// A state file around `payload`, with its length and a checksum that matches it.
fn state_file(payload: &[u8]) -> Vec<u8> {
    let mut file = STATE_MAGIC.to_vec();
    file.extend_from_slice(&STATE_FORMAT_VERSION.to_le_bytes());
    file.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    file.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    file.extend_from_slice(payload);
    file
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::with_cases(512) })]

    #[test]
    fn requests_round_trip_and_damaged_ones_are_answered(q in request(), m in mutations()) {
        check(decode::<RequestFrame>, &q, &encode(&q), &m)?;
    }

    #[test]
    fn answers_round_trip_and_damaged_ones_are_answered(r in response(), m in mutations()) {
        check(decode::<ResponseFrame>, &r, &encode(&r), &m)?;
    }

    #[test]
    fn state_files_round_trip_and_damaged_ones_are_answered(state in cluster_state(), m in mutations()) {
        let file = encode_state(&state);
        prop_assert_eq!(&state_file(&file[STATE_HEADER_BYTES..]), &file, "the header as the file format says");
        check(|b: &[u8]| decode_state("pd-state", b), &state, &file, &m)?;
    }

    /// The checksum stops damage before the payload decoder; a payload
    /// damaged and then given a matching checksum (a writer's bug) reaches
    /// it, and it must answer too.
    #[test]
    fn a_state_damaged_behind_a_matching_checksum_is_answered(state in cluster_state(), m in mutations()) {
        let file = encode_state(&state);
        let flipped = m.flipped(&file[STATE_HEADER_BYTES..]);
        let _ = decode_state("pd-state", &state_file(&flipped));
        let _ = decode_state("pd-state", &state_file(&flipped[..m.cut % flipped.len()]));
    }
}

/// Behind a matching checksum (a writer's bug), a state whose store count
/// claims more than its payload holds is an error, never a reservation of
/// room for every store claimed.
#[test]
fn a_state_claiming_more_stores_than_its_bytes_hold_is_an_error() {
    // cluster_id, replicas, initial_regions, bootstrapped, ids_reserved_until and
    // stores_version (a byte each), then the store count: varint tag 253, a u64 follows
    let mut payload = vec![0, 0, 0, 0, 0, 0, 253];
    payload.extend_from_slice(&u64::MAX.to_le_bytes());
    assert!(decode_state("pd-state", &state_file(&payload)).is_err());
}
