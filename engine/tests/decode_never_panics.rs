//! The engine's decoders answer bytes they did not make with an error, never
//! a panic (docs/reliability.md, "fuzzing of the decoders"): client requests
//! come off a socket; every replica applies the entries its leader proposed,
//! and one that does not decode must fence its region there (shard/fence.rs),
//! not stop the store at every restart; region states, snapshot files and
//! vote tables come off a disk that can rot. For each decoder: a valid
//! encoding decodes to what was encoded; cut short or lengthened it is
//! refused (each format knows its own end); damaged (bytes flipped, then
//! cut or lengthened) or replaced by noise it is answered, Ok or Err — a
//! panic fails the test.

use engine::client::protocol::{decode, encode, ClientOp, ClientReply, ClientRequest, ClientResponse};
use engine::kv::admin::{is_admin, AdminCommand, SplitCommand};
use engine::kv::{Command, MemKv, StateMachine, WriteBatch, WriteBatchRef};
use engine::region::meta::{PeerMeta, RegionLocalState, RegionMeta};
use engine::shard::SplitRequest;
use engine::snapshot::{format as snapshot_file, RegionSnapshot, SnapshotConf};
use engine::votes::VoteTable;
use engine::RegionError;
use proptest::prelude::*;

#[path = "../../tests/support/decode_mutations.rs"]
mod decode_mutations;
use decode_mutations::{any_bytes, check, mutations};

fn command() -> impl Strategy<Value = Command> {
    let maybe = || prop::option::of(any_bytes(0..16));
    prop_oneof![
        (any_bytes(0..24), any_bytes(0..64)).prop_map(|(key, value)| Command::Put { key, value }),
        any_bytes(0..24).prop_map(|key| Command::Delete { key }),
        (any_bytes(0..24), maybe(), maybe()).prop_map(|(key, expect, new)| Command::Cas { key, expect, new }),
    ]
}

fn write_batch() -> impl Strategy<Value = WriteBatch> {
    (any::<(u64, u64)>(), prop::collection::vec(command(), 0..8))
        .prop_map(|((conf_ver, version), commands)| WriteBatch { conf_ver, version, commands })
}

fn split() -> impl Strategy<Value = AdminCommand> {
    (any::<(u64, u64, u64)>(), any_bytes(0..64), prop::collection::vec(any::<u64>(), 0..7)).prop_map(
        |((conf_ver, version, new_region_id), split_key, new_peer_ids)| {
            AdminCommand::Split(SplitCommand { conf_ver, version, split_key, new_region_id, new_peer_ids })
        },
    )
}

fn region_meta() -> impl Strategy<Value = RegionMeta> {
    let peer = (any::<(u64, u64, u16)>(), any::<bool>()).prop_map(|((id, store, shard), learner)| {
        if learner {
            PeerMeta::learner(id, store, shard)
        } else {
            PeerMeta::voter(id, store, shard)
        }
    });
    (any::<u64>(), any_bytes(0..16), any_bytes(0..16), any::<(u64, u64)>(), prop::collection::vec(peer, 1..=7))
        .prop_map(|(id, start_key, end_key, (conf_ver, version), peers)| RegionMeta {
            id,
            start_key,
            end_key,
            conf_ver,
            version,
            max_peer_id: peers.iter().map(|p| p.peer_id).max().unwrap_or(0),
            peers,
        })
}

fn client_request() -> impl Strategy<Value = ClientRequest> {
    let op = prop_oneof![
        any_bytes(0..24).prop_map(|key| ClientOp::Get { key }),
        command().prop_map(ClientOp::Write),
        (any_bytes(0..24), any_bytes(0..24), any::<u32>()).prop_map(|(start, end, limit)| ClientOp::Scan {
            start,
            end,
            limit
        }),
        (any_bytes(0..24), any::<u64>(), prop::collection::vec(any::<u64>(), 0..7)).prop_map(
            |(split_key, new_region_id, new_peer_ids)| ClientOp::Split(SplitRequest {
                split_key,
                new_region_id,
                new_peer_ids
            })
        ),
        Just(ClientOp::DescribeRegion),
    ];
    (any::<[u64; 6]>(), op).prop_map(|([id, cluster_id, store_id, region, conf_ver, version], op)| ClientRequest {
        id,
        cluster_id,
        store_id,
        region,
        conf_ver,
        version,
        op,
    })
}

type Reply = Result<ClientReply, RegionError>;

fn client_response() -> impl Strategy<Value = ClientResponse> {
    let result = prop_oneof![
        prop::option::of(any_bytes(0..64)).prop_map(|v| Reply::Ok(ClientReply::Value(v))),
        prop::collection::vec((any_bytes(0..24), any_bytes(0..64)), 0..8)
            .prop_map(|rows| Reply::Ok(ClientReply::Rows(rows))),
        (region_meta(), region_meta()).prop_map(|halves| Reply::Ok(ClientReply::Split(Box::new(halves)))),
        region_meta().prop_map(|current| {
            let split_off = vec![current.clone()];
            Reply::Err(RegionError::EpochNotMatch { current: Box::new(current), split_off })
        }),
        any::<(u64, u64)>()
            .prop_map(|(region, backoff_ms)| Reply::Err(RegionError::ServerIsBusy { region, backoff_ms })),
    ];
    (any::<u64>(), result).prop_map(|(id, result)| ClientResponse { id, result })
}

fn region_snapshot() -> impl Strategy<Value = RegionSnapshot> {
    let rows = prop::collection::btree_map(any_bytes(0..24), any_bytes(0..64), 0..16);
    (region_meta(), 1..u64::MAX, any::<u64>(), rows).prop_map(|(meta, index, term, rows)| RegionSnapshot {
        // a range without ends holds every row drawn
        meta: RegionMeta { start_key: vec![], end_key: vec![], ..meta },
        index,
        term,
        conf_state: SnapshotConf { voters: vec![1, 2, 3], learners: vec![4], ..Default::default() },
        kv: MemKv::from_rows(rows),
    })
}

/// The snapshot file reader over bytes in memory (it reads any `io::Read`).
fn read_snapshot(file: &[u8]) -> Result<RegionSnapshot, snapshot_file::DecodeError> {
    snapshot_file::decode(file)
}

fn vote_table() -> impl Strategy<Value = VoteTable> {
    (any::<u64>(), prop::collection::btree_map(any::<u64>(), any::<(u64, u64)>(), 0..16))
        .prop_map(|(generation, votes)| VoteTable { generation, votes })
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::with_cases(256) })]

    #[test]
    fn client_requests_and_answers_round_trip_and_damaged_ones_are_answered(
        q in client_request(),
        r in client_response(),
        m in mutations(),
    ) {
        check(decode::<ClientRequest>, &q, &encode(&q), &m)?;
        check(decode::<ClientResponse>, &r, &encode(&r), &m)?;
    }

    #[test]
    fn entries_round_trip_and_damaged_ones_are_answered(batch in write_batch(), cmd in split(), m in mutations()) {
        let (valid, admin) = (batch.encode(), cmd.encode());
        check(WriteBatch::decode, &batch, &valid, &m)?;
        check(AdminCommand::decode, &cmd, &admin, &m)?;
        // apply tells the two apart by the first byte, never by trying
        prop_assert!(!is_admin(&valid) && is_admin(&admin));
        prop_assert!(WriteBatchRef::decode(&admin).is_err());
        // the in-place reader replicas apply with sees the same commands, and takes exactly the same bytes
        let read = WriteBatchRef::decode(&valid).expect("a valid batch reads in place");
        prop_assert_eq!((read.conf_ver, read.version), (batch.conf_ver, batch.version));
        prop_assert_eq!(read.commands, batch.commands.iter().map(Command::as_ref).collect::<Vec<_>>());
        for bytes in [m.flipped(&valid), m.noise.clone()] {
            prop_assert_eq!(WriteBatchRef::decode(&bytes).is_ok(), WriteBatch::decode(&bytes).is_ok());
        }
    }

    #[test]
    fn region_states_round_trip_and_damaged_ones_are_answered(
        meta in region_meta(),
        snapshot in prop::option::of(any::<(u64, u64)>()),
        removed_peer in prop::option::of(any::<u64>()),
        member_at_conf_ver in any::<u64>(),
        m in mutations(),
    ) {
        check(RegionMeta::decode, &meta, &meta.encode(), &m)?;
        let state = RegionLocalState { meta, snapshot, removed_peer, member_at_conf_ver };
        let valid = state.encode();
        // (cut just before its last field, a state is one an older build
        // wrote whole: it reads with that field 0, and only so)
        let older = RegionLocalState { member_at_conf_ver: 0, ..state.clone() };
        let decode = |b: &[u8]| match RegionLocalState::decode(b) {
            Ok(s) if b.len() + 8 == valid.len() && s == older => Err("the older layout".to_string()),
            other => other.map_err(|e| e.to_string()),
        };
        check(decode, &state, &valid, &m)?;
    }

    #[test]
    fn snapshot_files_and_vote_tables_round_trip_and_damaged_ones_are_answered(
        snap in region_snapshot(),
        votes in vote_table(),
        m in mutations(),
    ) {
        let mut file: Vec<u8> = vec![];
        snapshot_file::encode(&snap, &mut file).expect("writing to memory");
        check(read_snapshot, &snap, &file, &m)?;
        check(VoteTable::decode, &votes, &votes.encode(), &m)?;
    }
}

/// A batch whose lengths claim more than its bytes hold is an error, never a
/// reservation of room for all of it: a capacity-overflow panic (an abort,
/// for a claim just small enough to try to allocate) would stop the store
/// on every restart, where the entry must only fence its region
/// (`kv::command`'s decode limit).
#[test]
fn a_batch_claiming_more_than_its_bytes_hold_is_an_error() {
    // conf_ver 0, version 0, then the command count: varint tag 253, a u64 follows
    for claimed in [u64::MAX, 1 << 40, 1 << 32] {
        let mut count = vec![0, 0, 253];
        count.extend_from_slice(&claimed.to_le_bytes());
        assert!(WriteBatchRef::decode(&count).is_err(), "{claimed} commands");
        assert!(WriteBatch::decode(&count).is_err(), "{claimed} commands");
    }
    // one command, a put (variant 0), whose key claims 2^64 - 1 bytes
    let mut key = vec![0, 0, 1, 0, 253];
    key.extend_from_slice(&u64::MAX.to_le_bytes());
    assert!(WriteBatchRef::decode(&key).is_err());
    assert!(WriteBatch::decode(&key).is_err());
}
