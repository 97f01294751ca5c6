//! The engine on real I/O, in one process: three stores (glommio executors,
//! WAL on disk, TCP transport, client ports on loopback), written through
//! the KV client, stopped and started again from their data directories.

use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::client::kv_client::KvClient;
use engine::runtime::store::{run_store, StoreOptions};
use engine::spec::ClusterSpec;

/// A base port whose whole range (3 stores × peer and client ports) is free now.
fn free_base_port() -> u16 {
    for attempt in 0..200u16 {
        let base = 20_000 + (std::process::id() as u16 % 200) * 100 + attempt * 397 % 20_000;
        let ports: Vec<u16> = (0..3u16).flat_map(|s| [base + s * 128, base + s * 128 + 64]).collect();
        if ports.iter().all(|p| TcpListener::bind(("127.0.0.1", *p)).is_ok()) {
            return base;
        }
    }
    panic!("no free port range on loopback");
}

struct Cluster {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<Result<(), String>>>,
}

fn start(spec: &Arc<ClusterSpec>, root: &Path) -> Cluster {
    let stop = Arc::new(AtomicBool::new(false));
    let threads = spec
        .stores
        .iter()
        .map(|s| {
            let opts = StoreOptions {
                spec: spec.clone(),
                store_id: s.id,
                data_dir: root.join(format!("store-{}", s.id)),
                stop: stop.clone(),
            };
            std::thread::spawn(move || run_store(opts).map_err(|e| e.to_string()))
        })
        .collect();
    Cluster { stop, threads }
}

impl Cluster {
    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("store thread").expect("store ran cleanly");
        }
    }
}

/// Fails the test (instead of hanging CI) if `f` takes longer than `limit`.
fn with_deadline<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).unwrap_or_else(|_| panic!("still running after {limit:?}"))
}

#[test]
fn three_stores_replicate_writes_and_keep_them_across_a_restart() {
    with_deadline(Duration::from_secs(180), || {
        let dir = tempfile::tempdir().unwrap();
        let spec = Arc::new(ClusterSpec::local(9, 3, 1, 8, free_base_port()));
        let cluster = start(&spec, dir.path());
        let mut client = KvClient::new(spec.clone());
        let items: Vec<(Vec<u8>, Vec<u8>)> = (0..2000u32)
            .map(|i| (format!("{:04}-{i}", i * 7 % 10_000).into_bytes(), i.to_le_bytes().to_vec()))
            .collect();
        let t0 = Instant::now();
        for r in client.put_many(&items) {
            r.expect("every put succeeds on a healthy cluster");
        }
        eprintln!("2000 pipelined puts in {:?}", t0.elapsed());
        for (k, v) in items.iter().step_by(7) {
            assert_eq!(client.get(k).unwrap().as_ref(), Some(v), "key {:?}", String::from_utf8_lossy(k));
        }
        assert!(client.cas(b"0001-x", None, Some(b"one")).unwrap());
        assert!(!client.cas(b"0001-x", None, Some(b"two")).unwrap());
        cluster.stop();

        // every store starts again from its own WAL
        let cluster = start(&spec, dir.path());
        let mut client = KvClient::new(spec.clone());
        for (k, v) in &items {
            assert_eq!(client.get(k).unwrap().as_ref(), Some(v), "after restart, key {:?}", String::from_utf8_lossy(k));
        }
        assert_eq!(client.get(b"0001-x").unwrap(), Some(b"one".to_vec()));
        cluster.stop();
    });
}
