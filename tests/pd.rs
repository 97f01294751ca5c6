//! A cluster run by PD, as real processes on loopback: `ringraft pd` and
//! three `ringraft server --pd` with 64 initial regions. Every region gets a
//! leader and PD's view matches the stores'; keys in every region (and at
//! every boundary) are written through a client routing by PD; PD killed
//! with SIGKILL and restarted keeps its state and its ids increasing while
//! stores and clients carry on (a store restarted while PD is down starts
//! from what it cached, and registers when PD is back); a store restarted
//! keeps its id and regions without asking PD for them; a client's stale cache is corrected by the
//! region errors; stale reports are refused; garbage and another cluster's
//! requests close the connection and leave PD serving. Children are killed
//! when the test ends; every wait has a deadline.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use engine::client::kv_client::KvClient;
use engine::client::protocol::ClientOp;
use engine::kv::Command;
use engine::region::meta::{PeerChange, RegionMeta};
use pd::protocol::RegionView;
use pd::{PdClient, PdClientError, PdError};

use common::pd_cluster::{wait_for, Cluster};
use common::with_deadline;

const REGIONS: usize = 64;

/// A key inside `r`, right after its start.
fn key_in(r: &RegionView, tag: &str) -> Vec<u8> {
    [r.region.start_key.as_slice(), b"-", tag.as_bytes()].concat()
}

fn durable(views: &[RegionView]) -> Vec<pd::RegionInfo> {
    views.iter().map(|v| v.region.clone()).collect()
}

#[test]
fn a_cluster_run_by_pd_routes_writes_and_survives_pd_and_store_restarts() {
    with_deadline(Duration::from_secs(400), || {
        let mut c = Cluster::new(7, REGIONS, &[]);
        c.start_pd();
        for n in 1..=3 {
            c.start_store(n);
        }
        let views = c.wait_all_led(Some(REGIONS));

        // PD's view is the stores' view: each region as its leader describes it
        let mut client = KvClient::with_pd(c.pd_addr).unwrap();
        for v in &views {
            assert_eq!(client.region(v.region.id).unwrap(), RegionMeta::from(&v.region), "region {}", v.region.id);
        }
        // a write in every region, and at every boundary, through the client routing by PD
        for v in &views {
            client.put(&key_in(v, "a"), b"1").unwrap();
            client.put(&v.region.start_key, b"edge").unwrap();
        }
        let mut pd = PdClient::new(c.pd_addr, 0);
        for w in views.windows(2) {
            assert_eq!(pd.region_by_key(&w[1].region.start_key).unwrap().region.id, w[1].region.id);
            let below = [w[1].region.start_key.as_slice(), &[0]].concat();
            assert_eq!(pd.region_by_key(&below).unwrap().region.id, w[1].region.id);
            let before = &w[1].region.start_key[..w[1].region.start_key.len() - 1];
            assert_eq!(pd.region_by_key(before).unwrap().region.id, w[0].region.id, "{before:?}");
        }

        // PD killed: the stores and a client with its routes carry on
        let ids_before = pd.alloc_ids(10).unwrap();
        let (stores_before, _) = pd.stores().unwrap();
        Cluster::kill(&mut c.pd);
        for v in &views {
            client.put(&key_in(v, "b"), b"2").unwrap();
        }
        c.assert_running();
        // a store restarted meanwhile starts from its own regions and the
        // addresses it cached, and serves; it registers once PD is back
        let id3 = c.store_id(3);
        Cluster::kill(&mut c.stores[2]);
        c.start_store(3);
        wait_for("store 3 to start without PD", || c.read_log("store-3.log").contains("PD does not answer"));
        // it serves: it takes the lead of a region and commits a put sent to it
        // (replicated to the stores it knows only from its cache)
        let led = &views[0];
        wait_for("store 3 to lead a region and commit a put sent to it", || {
            let _ = client.transfer_leader(led.region.id, id3);
            let put = ClientOp::Write(Command::Put { key: key_in(led, "led-by-3"), value: b"3".to_vec() });
            c.call_on(3, id3, led, put).is_some_and(|r| r.is_ok())
        });
        // (a put sent just as its store died may come back ambiguous: the same
        // put again is harmless, and must succeed once the store is back)
        for v in &views {
            wait_for("a put through the restarted store", || client.put(&key_in(v, "b3"), b"3").is_ok());
        }
        c.assert_running();
        c.start_pd();
        wait_for("store 3 to register with PD again", || {
            c.read_log("store-3.log").contains("registered with PD again")
        });
        let mut pd = PdClient::new(c.pd_addr, 0);
        assert_eq!(durable(&pd.all_regions().unwrap()), durable(&views), "PD's regions after its restart");
        let (stores_after, _) = pd.stores().unwrap();
        let info = |s: &[pd::protocol::StoreView]| s.iter().map(|v| v.store.clone()).collect::<Vec<_>>();
        assert_eq!(info(&stores_after), info(&stores_before));
        assert!(pd.alloc_ids(1).unwrap() >= ids_before + 10, "ids keep increasing across a PD restart");
        c.wait_all_led(Some(REGIONS));

        // a store restarted keeps its id and regions, and does not ask PD for them
        let id2 = c.store_id(2);
        Cluster::kill(&mut c.stores[1]);
        c.start_store(2);
        assert_eq!(c.store_id(2), id2);
        wait_for("store 2 to report its 64 regions", || {
            pd.store(id2).is_ok_and(|s| s.stats.region_count == REGIONS as u64 && s.up)
        });
        let log = c.read_log("store-2.log");
        assert_eq!(log.matches("first start").count(), 1, "only the first life asked PD for regions:\n{log}");
        c.wait_all_led(Some(REGIONS));
        // every leader sees the restarted store's peers as caught up again, idle regions
        // included (no write has moved them back to replicating)
        wait_for("no region to report pending peers", || {
            pd.all_regions().is_ok_and(|all| all.iter().all(|v| v.pending_peers.is_empty()))
        });
        for v in &views {
            assert_eq!(client.get(&key_in(v, "a")).unwrap().as_deref(), Some(&b"1"[..]));
            assert_eq!(client.get(&key_in(v, "b")).unwrap().as_deref(), Some(&b"2"[..]));
            assert_eq!(client.get(&key_in(v, "b3")).unwrap().as_deref(), Some(&b"3"[..]));
            assert_eq!(client.get(&v.region.start_key).unwrap().as_deref(), Some(&b"edge"[..]));
        }
        assert_eq!(client.get(&key_in(&views[0], "led-by-3")).unwrap().as_deref(), Some(&b"3"[..]));

        // a stale cache is corrected: another client removes a peer of a region
        // this client knows with its old membership
        let r = &views[5];
        let mut admin = KvClient::with_pd(c.pd_addr).unwrap();
        // (the leader refuses a removal while the peers left would not be a healthy
        // quorum — the restarted store may still be catching up — or of itself:
        // a refusal is definite, so ask again once PD's view shows all caught up)
        let mut leader_store = 0;
        wait_for("the peer's removal to be accepted", || {
            let Ok(v) = pd.region_by_id(r.region.id) else { return false };
            let Some(leader) = v.leader.filter(|_| v.pending_peers.is_empty()) else { return false };
            leader_store = leader.store_id;
            let victim = *r.region.peers.iter().find(|p| p.store_id != leader_store).unwrap();
            match admin.change_peer(r.region.id, PeerChange::RemovePeer(victim.into())) {
                Ok(()) => true,
                Err(engine::client::kv_client::KvError::Region(engine::RegionError::Refused { .. })) => false,
                Err(e) => panic!("removing {victim:?}: {e}"),
            }
        });
        client.put(&key_in(r, "c"), b"3").unwrap();
        assert_eq!(client.region(r.region.id).unwrap().conf_ver, 2);
        wait_for("PD to learn the new membership", || {
            pd.region_by_id(r.region.id).is_ok_and(|v| v.region.epoch.conf_ver == 2)
        });
        // a report of the old membership is stale now
        let stale = pd::protocol::RegionReport {
            region: r.region.clone(),
            leader: *r.region.peers.iter().find(|p| p.store_id == leader_store).unwrap(),
            term: u64::MAX,
            stats: Default::default(),
            pending_peers: vec![],
        };
        let (outcomes, _) = pd.region_heartbeats(leader_store, vec![stale]).unwrap();
        assert!(matches!(outcomes[0], Err(PdError::StaleEpoch { .. })), "{outcomes:?}");
        assert_eq!(pd.region_by_id(r.region.id).unwrap().region.epoch.conf_ver, 2);

        // garbage and another cluster's requests close the connection; PD serves on
        let mut raw = TcpStream::connect(c.pd_addr).unwrap();
        raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        raw.write_all(&[0xAB; 64]).unwrap();
        assert_eq!(raw.read(&mut [0u8; 16]).unwrap_or(0), 0, "garbage closes the connection");
        let cluster_id = pd.cluster().unwrap().cluster_id;
        let mut wrong = PdClient::new(c.pd_addr, cluster_id ^ 0x55);
        match wrong.cluster() {
            Err(PdClientError::Pd(PdError::ClusterMismatch { ours, .. })) => assert_eq!(ours, cluster_id),
            other => panic!("another cluster's request answered {other:?}"),
        }
        assert_eq!(pd.cluster().unwrap().regions, REGIONS as u32);
        c.assert_running();
    });
}
