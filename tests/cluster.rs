//! Real `ringraft server` processes on loopback: three stores with 64
//! regions, 100,000 keys written through the KV client; one store killed with SIGKILL
//! while writes go on and restarted; then all three killed and restarted.
//! Every acknowledged write must be read back afterwards (a write whose
//! outcome the client could not know may be there or not). Children are
//! killed when the test ends, pass or fail; the test has its own deadline.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::client::kv_client::{KvClient, KvError};
use engine::spec::ClusterSpec;

use common::{free_base_port, ringraft};

/// The store processes; killed on drop.
struct Stores {
    spec_path: PathBuf,
    root: PathBuf,
    children: Vec<Option<Child>>,
}

impl Stores {
    fn start(&mut self, id: u64) {
        self.start_with(id, &[], &[]);
    }

    /// Starts store `id` with more flags and environment variables.
    fn start_with(&mut self, id: u64, flags: &[&str], env: &[(&str, &str)]) {
        // appended, so a crashed life's log survives the restart
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join(format!("store-{id}.log")))
            .unwrap();
        // (if the test process dies — deadline, abort — its stores die with it)
        let child = ringraft()
            .args(["server", "--spec"])
            .arg(&self.spec_path)
            .args(["--store-id", &id.to_string(), "--data-dir"])
            .arg(self.root.join(format!("store-{id}")))
            .args(flags)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start ringraft server");
        self.children[id as usize - 1] = Some(child);
        self.wait_serving(id);
    }

    /// Waits until the store answers on its client port (and has not exited).
    fn wait_serving(&mut self, id: u64) {
        let spec: ClusterSpec = serde_json::from_slice(&std::fs::read(&self.spec_path).unwrap()).unwrap();
        let addr = spec.store(id).unwrap().client_addr_of(0);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let child = self.children[id as usize - 1].as_mut().unwrap();
            if let Some(status) = child.try_wait().unwrap() {
                panic!("store {id} exited ({status}) at start; see its log in {}", self.root.display());
            }
            if std::net::TcpStream::connect(addr).is_ok() {
                return;
            }
            assert!(Instant::now() < deadline, "store {id} not serving after 30 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: nothing is flushed or closed cleanly.
    fn kill(&mut self, id: u64) {
        if let Some(mut c) = self.children[id as usize - 1].take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }
}

impl Drop for Stores {
    fn drop(&mut self) {
        for id in 1..=self.children.len() as u64 {
            self.kill(id);
        }
    }
}

/// What the client knows of each key it wrote.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Known {
    Acked,
    Maybe,
}

fn write(client: &mut KvClient, keys: std::ops::Range<u32>, known: &mut Vec<(Vec<u8>, Vec<u8>, Known)>) {
    let items: Vec<(Vec<u8>, Vec<u8>)> = keys.map(|i| (key(i), format!("value-{i}").into_bytes())).collect();
    for chunk in items.chunks(1000) {
        for ((k, v), r) in chunk.iter().zip(client.put_many(chunk)) {
            let k2 = (k.clone(), v.clone());
            match r {
                Ok(()) => known.push((k2.0, k2.1, Known::Acked)),
                Err(KvError::Ambiguous(_)) => known.push((k2.0, k2.1, Known::Maybe)),
                Err(e) => panic!("put {:?} failed definitely: {e}", String::from_utf8_lossy(k)),
            }
        }
    }
}

fn key(i: u32) -> Vec<u8> {
    // spread over the regions, whose boundaries are 4-digit prefixes
    format!("{:04}-{i:06}", (i as u64 * 7919) % 10_000).into_bytes()
}

fn read_back(client: &mut KvClient, known: &[(Vec<u8>, Vec<u8>, Known)], when: &str) {
    for chunk in known.chunks(2000) {
        let keys: Vec<Vec<u8>> = chunk.iter().map(|(k, _, _)| k.clone()).collect();
        for ((k, v, kind), got) in chunk.iter().zip(client.get_many(&keys)) {
            let got = got.unwrap_or_else(|e| panic!("{when}: get {:?}: {e}", String::from_utf8_lossy(k)));
            match kind {
                Known::Acked => {
                    assert_eq!(got.as_ref(), Some(v), "{when}: acknowledged {:?} lost", String::from_utf8_lossy(k))
                }
                Known::Maybe => assert!(
                    got.is_none() || got.as_ref() == Some(v),
                    "{when}: {:?} has a value nobody wrote",
                    String::from_utf8_lossy(k)
                ),
            }
        }
    }
}

fn run(root: &Path) {
    let spec = ClusterSpec::local(17, 3, 1, 64, free_base_port(5));
    let spec_path = root.join("spec.json");
    std::fs::write(&spec_path, serde_json::to_string(&spec).unwrap()).unwrap();
    let spec = Arc::new(spec);
    let mut stores = Stores { spec_path, root: root.to_path_buf(), children: vec![None, None, None] };
    for id in 1..=3 {
        stores.start(id);
    }
    let mut client = KvClient::new(spec.clone());
    let mut known = vec![];
    let t0 = Instant::now();
    write(&mut client, 0..100_000, &mut known);
    eprintln!("100,000 keys written in {:?}", t0.elapsed());

    stores.kill(1);
    write(&mut client, 100_000..110_000, &mut known);
    stores.start(1);
    read_back(&mut client, &known, "after one store was killed and restarted");

    for id in 1..=3 {
        stores.kill(id);
    }
    for id in 1..=3 {
        stores.start(id);
    }
    let mut client = KvClient::new(spec);
    read_back(&mut client, &known, "after all three were killed and restarted");
    let maybe = known.iter().filter(|k| k.2 == Known::Maybe).count();
    eprintln!("{} keys read back ({maybe} of uncertain outcome) in {:?}", known.len(), t0.elapsed());
}

#[test]
fn three_server_processes_keep_every_acknowledged_write_through_kill_9_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let (tx, rx) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        let r = std::panic::catch_unwind(|| run(&root));
        let _ = tx.send(());
        r
    });
    match rx.recv_timeout(Duration::from_secs(300)) {
        Ok(()) => {
            if let Err(e) = worker.join().unwrap() {
                std::panic::resume_unwind(e);
            }
        }
        Err(_) => panic!("the cluster test did not finish in 300 s (store logs in {})", dir.path().display()),
    }
}

/// A flag that contradicts the spec is refused at once, saying what the spec has.
#[test]
fn a_server_flag_that_contradicts_the_spec_is_refused_with_what_the_spec_says() {
    let dir = tempfile::tempdir().unwrap();
    let spec = ClusterSpec::local(17, 3, 1, 4, 39_000);
    let spec_path = dir.path().join("spec.json");
    std::fs::write(&spec_path, serde_json::to_string(&spec).unwrap()).unwrap();
    let run = |extra: &[&str]| {
        ringraft()
            .args(["server", "--spec"])
            .arg(&spec_path)
            .args(["--store-id", "1", "--data-dir"])
            .arg(dir.path().join("store-1"))
            .args(extra)
            .output()
            .unwrap()
    };
    let out = run(&["--cores", "2"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--cores 2 disagrees with the spec") && err.contains("1 shards"),
        "{err}"
    );
    let out = run(&["--peer-addr", "127.0.0.1:1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("peer address 127.0.0.1:39000"), "{err}");
    assert!(!dir.path().join("store-1").exists(), "nothing was created");
}

/// Runs `f` with the cluster test's deadline (a hang fails instead of eating CI's time).
fn with_deadline(limit: Duration, f: impl FnOnce(&Path) + Send + std::panic::UnwindSafe + 'static) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let (tx, rx) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        let r = std::panic::catch_unwind(move || f(&root));
        let _ = tx.send(());
        r
    });
    match rx.recv_timeout(limit) {
        Ok(()) => {
            if let Err(e) = worker.join().unwrap() {
                std::panic::resume_unwind(e);
            }
        }
        Err(_) => panic!("the test did not finish in {limit:?} (store logs in {})", dir.path().display()),
    }
}

/// Starts a store that is expected to refuse to start; its exit status and stderr.
fn refused_start(spec_path: &Path, root: &Path, id: u64) -> (Option<i32>, String) {
    let mut child = common::Killed(
        ringraft()
            .args(["server", "--spec"])
            .arg(spec_path)
            .args(["--store-id", &id.to_string(), "--data-dir"])
            .arg(root.join(format!("store-{id}")))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ringraft server"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "store {id} did not refuse to start within 30 s: it is running");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(child.0.stderr.as_mut().unwrap(), &mut err).unwrap();
    (status.code(), err)
}

/// A replica must never rejoin having forgotten what it acknowledged: a
/// store whose shard WAL was deleted refuses to start (exit status 2, the
/// WAL named) while the cluster serves on and loses nothing; a store left
/// alone restarts as usual, and so does one that holds no region (a store
/// added after bootstrap: an empty WAL is not a forgotten one), and one
/// whose first start ended before it recorded its WALs.
#[test]
fn a_store_whose_wal_was_deleted_refuses_to_start_and_the_cluster_loses_nothing() {
    with_deadline(Duration::from_secs(240), |root| {
        let mut spec = ClusterSpec::local(23, 4, 1, 8, free_base_port(9));
        for r in &mut spec.regions {
            r.peers.retain(|p| p.store_id != 4);
        }
        let spec_path = root.join("spec.json");
        std::fs::write(&spec_path, serde_json::to_string(&spec).unwrap()).unwrap();
        let spec = Arc::new(spec);
        let mut stores =
            Stores { spec_path: spec_path.clone(), root: root.to_path_buf(), children: (0..4).map(|_| None).collect() };
        for id in 1..=4 {
            stores.start(id);
        }
        let ident = |id: u64| -> serde_json::Value {
            serde_json::from_slice(&std::fs::read(root.join(format!("store-{id}/IDENT"))).unwrap()).unwrap()
        };
        assert!(ident(4)["wals"].is_array(), "a store is initialized once it started: {}", ident(4));
        let mut client = KvClient::new(spec.clone());
        let mut known = vec![];
        write(&mut client, 0..2_000, &mut known);

        stores.kill(2);
        let wal = root.join("store-2/shard-0/wal");
        std::fs::remove_dir_all(&wal).unwrap();
        let (code, err) = refused_start(&spec_path, root, 2);
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains(&wal.display().to_string()) && err.contains("missing"), "{err}");
        assert!(!wal.exists(), "a refused start creates nothing");

        write(&mut client, 2_000..3_000, &mut known);
        read_back(&mut client, &known, "with store 2 refused");
        stores.kill(3);
        stores.start(3);
        stores.kill(4);
        stores.start(4);
        read_back(&mut client, &known, "after store 3 and store 4 (no regions) restarted");

        // a first start that ended before it recorded its WALs starts again, and records them
        stores.kill(1);
        let mut first = ident(1);
        first.as_object_mut().unwrap().remove("wals");
        std::fs::write(root.join("store-1/IDENT"), serde_json::to_vec(&first).unwrap()).unwrap();
        stores.start(1);
        // (the killed process's listening socket can outlive it briefly in the
        // kernel's io_uring teardown, so "serving" is not proof: wait for IDENT)
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ident(1)["wals"].is_array() {
            assert!(Instant::now() < deadline, "store 1 did not record its WALs in 30 s: {}", ident(1));
            std::thread::sleep(Duration::from_millis(20));
        }
        read_back(&mut client, &known, "after store 1 restarted from an uninitialized IDENT");
    });
}

/// The newest record of a WAL directory that holds region writes and has a
/// record after it — acknowledged, then (a batch the process was killed
/// before sealing has none, and was never acknowledged): (file, offset).
fn last_acknowledged_batch(wal_dir: &Path) -> (PathBuf, usize) {
    let mut segments: Vec<u64> = std::fs::read_dir(wal_dir)
        .unwrap()
        .filter_map(|e| match wal::layout::parse_name(e.unwrap().file_name().to_str()?) {
            Some(wal::layout::FileKind::Segment(seq)) => Some(seq),
            _ => None,
        })
        .collect();
    segments.sort_unstable();
    let mut records = vec![]; // (file, offset, holds region writes), oldest first
    for seq in segments {
        let path = wal_dir.join(wal::layout::segment_name(seq));
        let bytes = std::fs::read(&path).unwrap();
        for off in wal::format::record_offsets(&bytes, seq) {
            let batch = wal::format::decode_record(&bytes, off, seq).is_ok_and(|r| r.header.section_count > 0);
            records.push((path.clone(), off, batch));
        }
    }
    records.pop(); // the last record: nothing follows it
    let (path, off, _) = records.into_iter().rev().find(|r| r.2).expect("an acknowledged batch");
    (path, off)
}

/// A store's last acknowledged WAL batch is damaged on disk (a record after
/// it says it was written whole): a strict start refuses (exit status 2,
/// segment and offset named); started with `--wal-recovery tolerant` it
/// drops the record and says every region caught up once leaders have
/// repaired them (that it votes for no one until then is the simulator's
/// test) — and then its vote counts again: with another store down, the two
/// left serve everything ever acknowledged.
#[test]
fn a_damaged_acknowledged_wal_record_is_refused_or_repaired_by_the_cluster_when_asked() {
    with_deadline(Duration::from_secs(240), |root| {
        let spec = ClusterSpec::local(29, 3, 1, 8, free_base_port(11));
        let spec_path = root.join("spec.json");
        std::fs::write(&spec_path, serde_json::to_string(&spec).unwrap()).unwrap();
        let spec = Arc::new(spec);
        let mut stores =
            Stores { spec_path: spec_path.clone(), root: root.to_path_buf(), children: (0..3).map(|_| None).collect() };
        for id in 1..=3 {
            stores.start(id);
        }
        let mut client = KvClient::new(spec.clone());
        let mut known = vec![];
        write(&mut client, 0..2_000, &mut known);

        stores.kill(2);
        let (segment, offset) = last_acknowledged_batch(&root.join("store-2/shard-0/wal"));
        let mut bytes = std::fs::read(&segment).unwrap();
        bytes[offset + 40] ^= 0x55;
        std::fs::write(&segment, bytes).unwrap();
        let (code, err) = refused_start(&spec_path, root, 2);
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains("corruption") && err.contains(&format!("offset {offset}")), "{err}");

        write(&mut client, 2_000..3_000, &mut known);
        stores.start_with(2, &["--wal-recovery", "tolerant"], &[("RINGRAFT_LOG", "warn,engine::shard=info")]);
        let log = root.join("store-2.log");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = std::fs::read_to_string(&log).unwrap();
            if text.contains("every region caught up") {
                assert!(text.contains("the WAL lost records"), "{text}");
                break;
            }
            assert!(Instant::now() < deadline, "store 2 did not catch up in 60 s; its log: {}", log.display());
            std::thread::sleep(Duration::from_millis(50));
        }
        // store 2's vote counts again: with store 3 down, stores 1 and 2 serve
        stores.kill(3);
        write(&mut client, 3_000..4_000, &mut known);
        read_back(&mut client, &known, "with store 2 repaired and store 3 down");
    });
}
