//! Stores that learn the cluster from PD, in one process: PD (its real
//! server, state in memory) and three stores on real I/O. They register,
//! take the regions PD laid out, elect leaders and report them; region
//! statistics reach PD; a directive PD hands out with a heartbeat answer
//! is carried out by the region's leader.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::client::kv_client::KvClient;
use engine::runtime::pd_worker::PdOptions;
use engine::runtime::store::{run_store, ClusterSource, StoreOptions};
use pd::cluster::ClusterConfig;
use pd::protocol::{Directive, DirectiveAction, RegionView};
use pd::server::PdServer;
use pd::storage::MemMetaStore;
use pd::PdClient;

mod common;
use common::with_deadline;

const REGIONS: usize = 8;

/// Two free loopback ports, far apart (a store's peer and client port).
fn free_ports() -> (SocketAddr, SocketAddr) {
    let take = || TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    (take(), take())
}

/// Polls `done` every 20 ms; fails after 60 s.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "waited 60 s for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn all_led(pd: &mut PdClient) -> Option<Vec<RegionView>> {
    let views = pd.all_regions().ok()?;
    (views.len() == REGIONS && views.iter().all(|v| v.leader.is_some())).then_some(views)
}

#[test]
fn stores_join_through_pd_report_their_regions_and_carry_out_a_directive() {
    with_deadline(Duration::from_secs(180), run);
}

fn run() {
    let config = ClusterConfig {
        new_cluster_id: 77,
        replicas: 3,
        initial_regions: REGIONS as u32,
        store_down_after_ms: 5000,
        initial_stores: 0,
        max_store_down_ms: 1_800_000,
    };
    let cluster = pd::Cluster::open(MemMetaStore::default(), &config).unwrap();
    let server = PdServer::start(cluster, "127.0.0.1:0".parse().unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stores: Vec<_> = (1..=3)
        .map(|n| {
            let (peer_addr, client_addr) = free_ports();
            let source = ClusterSource::Pd(PdOptions {
                addr: server.addr(),
                peer_addr,
                client_addr,
                shards: 1,
                store_heartbeat: Duration::from_millis(100),
                region_heartbeat: Duration::from_millis(100),
            });
            let opts = StoreOptions::new(source, dir.path().join(format!("store-{n}")), stop.clone());
            std::thread::spawn(move || run_store(opts).map_err(|e| e.to_string()))
        })
        .collect();
    let mut pd = PdClient::new(server.addr(), 0);
    let mut views = vec![];
    wait_for("every region led, as PD sees it", || {
        views = all_led(&mut pd).unwrap_or_default();
        !views.is_empty()
    });
    assert_eq!(pd.cluster_id(), 77);

    // writes reach the region's statistics at PD
    let r = views[3].clone();
    let mut client = KvClient::with_pd(server.addr()).unwrap();
    for i in 0..10 {
        client.put(&[r.region.start_key.as_slice(), format!("-{i}").as_bytes()].concat(), b"v").unwrap();
    }
    wait_for("PD to count the region's keys", || {
        pd.region_by_id(r.region.id).is_ok_and(|v| v.stats.approximate_keys == 10)
    });

    // PD asks the leader to hand the region to another store: it does
    let from = pd.region_by_id(r.region.id).unwrap().leader.unwrap().store_id;
    let to = r.region.peers.iter().map(|p| p.store_id).find(|s| *s != from).unwrap();
    let directive = Directive {
        region_id: r.region.id,
        epoch: r.region.epoch,
        action: DirectiveAction::TransferLeader { to_store: to },
    };
    server.with_cluster(|c| c.add_directive(directive)).unwrap();
    wait_for("the leadership to move as PD directed", || {
        pd.region_by_id(r.region.id).is_ok_and(|v| v.leader.is_some_and(|l| l.store_id == to))
    });
    client.put(&[r.region.start_key.as_slice(), b"-after"].concat(), b"v").unwrap();

    stop.store(true, Ordering::Relaxed);
    for s in stores {
        s.join().unwrap().unwrap();
    }
    server.stop();
}
