//! Replicas moving between real stores, run by PD (`ringraft pd` and up to
//! five `ringraft server --pd` on loopback), under a writer that records
//! every acknowledged write: a fourth store joins and PD balances regions
//! onto it; `ringraft ctl move` moves a replica and its old store keeps
//! nothing of it (its WAL holds the region as a tombstone); a store killed
//! past `--max-store-down-time` has its replicas rebuilt on the others; a
//! store drained with `ringraft ctl drain-store` empties and is removed.
//! Every acknowledged write is read back after each phase. Children are
//! killed when the test ends; every wait has a deadline.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use engine::client::kv_client::KvClient;
use pd::protocol::RegionView;
use pd::PdClient;

use common::pd_cluster::Cluster;
use common::{ringraft, with_deadline};

const REGIONS: usize = 8;

/// Writes keys one after another until told to stop; what was acknowledged.
fn writer(pd: std::net::SocketAddr, stop: Arc<AtomicBool>, acked: Arc<Mutex<BTreeMap<Vec<u8>, Vec<u8>>>>) {
    let mut client = KvClient::with_pd(pd).unwrap();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        // (spread over the regions' four-digit prefixes)
        let key = format!("{:04}-w{n}", (n * 1_237) % 10_000).into_bytes();
        let value = format!("v{n}").into_bytes();
        if client.put(&key, &value).is_ok() {
            acked.lock().unwrap().insert(key, value);
        }
        n += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Every acknowledged write reads back.
fn read_back(c: &Cluster, acked: &Mutex<BTreeMap<Vec<u8>, Vec<u8>>>, phase: &str) {
    let expected = acked.lock().unwrap().clone();
    assert!(!expected.is_empty(), "{phase}: nothing was acknowledged");
    let mut client = KvClient::with_pd(c.pd_addr).unwrap();
    for (k, v) in &expected {
        let got = client.get(k).unwrap_or_else(|e| panic!("{phase}: reading {k:?}: {e}"));
        assert_eq!(got.as_deref(), Some(v.as_slice()), "{phase}: key {:?}", String::from_utf8_lossy(k));
    }
}

/// Replicas (any role) per store id, as PD sees the regions.
fn replicas_per_store(views: &[RegionView]) -> BTreeMap<u64, usize> {
    let mut n = BTreeMap::new();
    for v in views {
        for p in &v.region.peers {
            *n.entry(p.store_id).or_default() += 1;
        }
    }
    n
}

/// Waits (up to `limit`) until PD has no operator under way, every region is
/// led with three voters and no learner, and `done` holds of PD's view.
fn settle(c: &mut Cluster, what: &str, limit: Duration, done: impl Fn(&[RegionView]) -> bool) -> Vec<RegionView> {
    let mut pd = PdClient::new(c.pd_addr, 0);
    let deadline = Instant::now() + limit;
    loop {
        c.assert_running();
        let views = pd.all_regions().unwrap_or_default();
        let idle = pd.operators().is_ok_and(|ops| ops.is_empty());
        let whole = views.len() >= REGIONS
            && views.iter().all(|v| {
                v.leader.is_some()
                    && v.region.peers.len() == 3
                    && v.region.peers.iter().all(|p| p.role == pd::PeerRole::Voter)
            });
        if idle && whole && done(&views) {
            return views;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not done after {limit:?}: operators {:?}; regions per store {:?}; logs in {}",
            pd.operators(),
            replicas_per_store(&views),
            c.root.path().display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether `ringraft wal stat --json` output lists `region` as a tombstone.
fn is_tombstone(v: &serde_json::Value, region: u64) -> bool {
    match v {
        serde_json::Value::Object(m) => {
            (m.get("region") == Some(&region.into()) && m.get("tombstone") == Some(&true.into()))
                || m.values().any(|v| is_tombstone(v, region))
        }
        serde_json::Value::Array(a) => a.iter().any(|v| is_tombstone(v, region)),
        _ => false,
    }
}

fn ctl(c: &Cluster, args: &[&str]) -> String {
    let out = ringraft().args(["ctl", "--pd", &c.pd_addr.to_string()]).args(args).output().unwrap();
    assert!(out.status.success(), "ctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn replicas_move_balance_are_rebuilt_and_drain_while_writes_go_on() {
    with_deadline(Duration::from_secs(400), || {
        let mut c = Cluster::new(11, REGIONS, &[]);
        c.pd_args = ["--store-down-after", "1s", "--max-store-down-time", "6s"].map(String::from).to_vec();
        c.start_pd();
        for n in 1..=3 {
            c.start_store(n);
        }
        c.wait_all_led(Some(REGIONS));
        let acked = Arc::new(Mutex::new(BTreeMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let w = {
            let (stop, acked, pd) = (stop.clone(), acked.clone(), c.pd_addr);
            std::thread::spawn(move || writer(pd, stop, acked))
        };

        // a fourth store joins: PD moves replicas onto it until counts are even
        c.start_store(4);
        let views = settle(&mut c, "balance onto store 4", Duration::from_secs(120), |views| {
            let n = replicas_per_store(views);
            n.len() == 4 && n.values().max().unwrap() - n.values().min().unwrap() <= 2
        });
        let ids: Vec<u64> = (1..=4).map(|n| c.store_id(n)).collect();
        let s = |n: usize| ids[n - 1];
        assert!(replicas_per_store(&views)[&s(4)] >= 4, "{:?}", replicas_per_store(&views));
        read_back(&c, &acked, "after balancing");

        // a move by hand, through ctl; the old store keeps nothing of the region
        let r = views.iter().find(|v| v.region.peer_on(s(1)).is_some() && v.region.peer_on(s(4)).is_none()).unwrap();
        let id = r.region.id;
        let out = ctl(&c, &["move", &id.to_string(), &s(1).to_string(), &s(4).to_string()]);
        assert!(out.contains("admin-move"), "{out}");
        settle(&mut c, "the move", Duration::from_secs(60), |views| {
            let r = views.iter().find(|v| v.region.id == id).unwrap();
            r.region.peer_on(s(4)).is_some() && r.region.peer_on(s(1)).is_none()
        });
        read_back(&c, &acked, "after the move");
        // (the WAL tools read a store's directory while it is stopped)
        Cluster::kill(&mut c.stores[0]);
        let stat = ringraft().args(["wal", "stat", "--json"]).arg(c.store_dir(1)).output().unwrap();
        assert!(stat.status.success(), "wal stat: {}", String::from_utf8_lossy(&stat.stderr));
        let stat: serde_json::Value = serde_json::from_slice(&stat.stdout).unwrap();
        assert!(is_tombstone(&stat, id), "store 1's WAL does not hold region {id} as a tombstone: {stat}");
        c.start_store(1);

        // a store down past the down time: its replicas are rebuilt on the others
        let gone = s(2);
        Cluster::kill(&mut c.stores[1]);
        settle(&mut c, "rebuilding store 2's replicas", Duration::from_secs(120), |views| {
            !replicas_per_store(views).contains_key(&gone)
        });
        read_back(&c, &acked, "after the rebuild");

        // a store drained: it empties, then PD removes it (a fifth store
        // joins first: the others must hold three replicas of every region)
        c.start_store(5);
        let mut pd = PdClient::new(c.pd_addr, 0);
        common::pd_cluster::wait_for("store 5 to register", || pd.stores().is_ok_and(|(v, _)| v.len() == 5));
        let drained = s(3);
        let out = ctl(&c, &["drain-store", &drained.to_string()]);
        assert!(out.contains("draining"), "{out}");
        settle(&mut c, "draining store 3", Duration::from_secs(120), |views| {
            !replicas_per_store(views).contains_key(&drained)
        });
        let removed = || pd.store(drained).is_ok_and(|v| v.store.state == pd::meta::StoreState::Removed);
        common::pd_cluster::wait_for("the drained store to be removed", removed);
        let stores = ctl(&c, &["stores"]);
        assert!(stores.contains("removed"), "{stores}");

        stop.store(true, Ordering::Relaxed);
        w.join().unwrap();
        read_back(&c, &acked, "at the end");
    });
}
