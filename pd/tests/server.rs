//! PD's server and client over loopback, in process: a new cluster is
//! saved before it answers and comes back whole from its file; a
//! registration repeated with the same token gets the same id, another
//! token on the same address is refused with the address's owner; garbage,
//! a frame of the wrong kind and another cluster's request each close
//! their connection and are counted, while PD serves everyone else.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::time::Duration;

use pd::cluster::ClusterConfig;
use pd::server::PdServer;
use pd::storage::FileMetaStore;
use pd::{Cluster, PdClient, PdClientError, PdError, PdRequest, PdResponse};

fn config() -> ClusterConfig {
    ClusterConfig {
        new_cluster_id: 4242,
        replicas: 1,
        initial_regions: 4,
        store_down_after_ms: 10_000,
        initial_stores: 0,
        max_store_down_ms: 1_800_000,
    }
}

fn start(dir: &std::path::Path) -> PdServer<FileMetaStore> {
    let cluster = Cluster::open(FileMetaStore::open(dir).unwrap(), &config()).unwrap();
    PdServer::start(cluster, "127.0.0.1:0".parse().unwrap()).unwrap()
}

fn register(pd: &mut PdClient, token: u64, port: u16) -> Result<u64, PdClientError> {
    let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    let req = PdRequest::RegisterStore {
        store_id: 0,
        token,
        shards: 1,
        peer_addr: addr(port),
        client_addr: addr(port + 1),
        capacity_bytes: 1 << 30,
    };
    match pd.call(req)? {
        PdResponse::Registered { store_id, .. } => Ok(store_id),
        other => panic!("a registration answered {other:?}"),
    }
}

/// Reads until the peer closes (0) or the timeout (an error: still open).
fn closed(mut s: TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn registrations_are_idempotent_by_token_and_addresses_are_never_shared() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let mut pd = PdClient::new(server.addr(), 0);
    let id = register(&mut pd, 7, 40_000).unwrap();
    assert_eq!(pd.cluster_id(), 4242, "learned from the first answer");
    assert_eq!(register(&mut pd, 7, 40_000).unwrap(), id, "a repeat after a crash gets the same id");
    match register(&mut pd, 8, 40_001) {
        Err(PdClientError::Pd(PdError::DuplicateStoreAddress { store_id, .. })) => assert_eq!(store_id, id),
        other => panic!("a shared address answered {other:?}"),
    }
    // one store is enough replicas here: the cluster is bootstrapped with 4 regions
    let regions = pd.all_regions().unwrap();
    assert_eq!(regions.len(), 4);
    let first_free = pd.alloc_ids(5).unwrap();
    assert!(regions.iter().all(|r| r.region.max_peer_id < first_free && r.region.id < first_free));
    server.stop();

    // the state came back from its file; ids go on above what was handed out
    let server = start(dir.path());
    let mut pd = PdClient::new(server.addr(), 4242);
    assert_eq!(
        pd.all_regions().unwrap(),
        regions
            .iter()
            .map(|v| pd::protocol::RegionView {
                leader: None,
                term: 0,
                stats: Default::default(),
                pending_peers: vec![],
                region: v.region.clone(),
            })
            .collect::<Vec<_>>()
    );
    assert!(pd.alloc_ids(1).unwrap() >= first_free + 5);
    assert_eq!(pd.store(id).unwrap().store.peer_addr.port(), 40_000);
    server.stop();
}

#[test]
fn bad_bytes_and_another_cluster_close_only_their_connection() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let mut good = PdClient::new(server.addr(), 0);
    assert_eq!(good.cluster().unwrap().cluster_id, 4242);

    let mut garbage = TcpStream::connect(server.addr()).unwrap();
    garbage.write_all(&[0x5A; 100]).unwrap();
    assert!(closed(garbage), "garbage closes the connection");

    // a well-formed frame of another kind (a client request) is not a PD request
    let mut wrong_kind = TcpStream::connect(server.addr()).unwrap();
    let mut frame = vec![];
    transport::frame::encode_frame(&mut frame, transport::FrameKind::ClientRequest, &[b"hello".as_slice()]);
    wrong_kind.write_all(&frame).unwrap();
    assert!(closed(wrong_kind), "a frame of another kind closes the connection");

    let mut other = PdClient::new(server.addr(), 99);
    match other.cluster() {
        Err(PdClientError::Pd(PdError::ClusterMismatch { theirs: 99, ours: 4242 })) => {}
        other => panic!("another cluster's request answered {other:?}"),
    }
    // the connection was closed after the answer: the next call must reconnect and is refused again
    assert!(matches!(other.cluster(), Err(PdClientError::Pd(PdError::ClusterMismatch { .. }))));

    // a request that needs the cluster id and names none (0) is refused the same way: only
    // asking for the cluster and a new store's first registration may come without it
    let mut blind = TcpStream::connect(server.addr()).unwrap();
    blind.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut frame = vec![];
    let req = pd::protocol::RequestFrame { id: 1, cluster_id: 0, body: PdRequest::GetStores };
    pd::protocol::encode_frame(&mut frame, transport::FrameKind::PdRequest, &req);
    blind.write_all(&frame).unwrap();
    let mut decoder = transport::FrameDecoder::new();
    let answer = loop {
        if let Some(f) = decoder.next_frame().unwrap() {
            break pd::protocol::decode::<pd::protocol::ResponseFrame>(&f.payload).unwrap();
        }
        let mut buf = [0u8; 4096];
        let n = blind.read(&mut buf).unwrap();
        assert!(n > 0, "closed without an answer");
        decoder.push(&buf[..n]);
    };
    assert_eq!(answer.result, Err(PdError::ClusterMismatch { theirs: 0, ours: 4242 }));
    assert!(closed(blind), "and the connection closed");
    // (a client that knows no id asks for it first, so it is served)
    assert!(PdClient::new(server.addr(), 0).stores().is_ok());

    let stats = server.stats();
    assert_eq!(stats.connections_closed_malformed.load(Ordering::Relaxed), 2);
    assert_eq!(stats.connections_closed_cluster_mismatch.load(Ordering::Relaxed), 3);
    let metrics = server.metrics_renderer()();
    for line in [
        "ringraft_pd_connections_malformed_total 2",
        "ringraft_pd_connections_cluster_mismatch_total 3",
        "ringraft_pd_stores 0",
        "ringraft_pd_bootstrapped 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line:?} missing from:\n{metrics}");
    }
    assert_eq!(good.cluster().unwrap().cluster_id, 4242, "PD serves the others on");
    server.stop();
}
