//! `ringraft verify`: the whole multi-raft story on real processes, with
//! every acknowledged write checked after each phase (behind
//! `scripts/verify-multiraft.sh`).
//!
//! A local cluster (PD and stores of this binary on loopback) starts with a
//! few regions on three stores and a small split size; a writer puts keys
//! the whole time and records each acknowledged put. The phases: regions
//! split by size and by hand (`ctl split`); a fourth and a fifth store join
//! and PD balances replicas onto them; a replica moves by hand (`ctl
//! move`); a store killed stays down past PD's down time and its replicas
//! are rebuilt on the others; a store is drained and removed; every store
//! is restarted. After each, every acknowledged write is read back. The
//! last line printed is a JSON summary; the exit status is non-zero on any
//! lost write or any phase that does not converge in its time. Every
//! process started dies with this one, however it ends.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use engine::client::kv_client::KvClient;
use pd::protocol::RegionView;
use pd::PdClient;

use crate::local::{LocalCluster, LocalOptions};

/// Regions the cluster starts with.
const INITIAL_REGIONS: u64 = 4;
/// The split size the stores run with: small, so regions split in seconds.
const SPLIT_BYTES: u64 = 256 << 10;
/// Regions there must be after the writer ran a while (from 4).
const REGIONS_AFTER_SPLITS: usize = 8;
/// PD's down time: a store silent this long has its replicas rebuilt.
const DOWN_TIME: &str = "8s";
/// The value of every put (big enough that regions split by size).
const VALUE_BYTES: usize = 512;
/// How long one phase may take to converge.
const PHASE_LIMIT: Duration = Duration::from_secs(120);
/// Puts the writer sends at a time.
const WRITER_BATCH: u64 = 8;
/// The writer's pause between batches once regions have split (writes go
/// on through every phase, without growing the cluster much: ≈ 40 puts/s).
const WRITER_PAUSE_MS: u64 = 200;

#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// First port of the local cluster (stores, then their metrics ports, then PD).
    #[arg(long, default_value_t = 23160)]
    pub base_port: u16,
    /// Keep the cluster's directory (logs, data) after a successful run too.
    #[arg(long)]
    pub keep: bool,
}

/// The writer's record: every put a store acknowledged.
type Ledger = Arc<Mutex<BTreeMap<Vec<u8>, Vec<u8>>>>;

struct Phase {
    name: &'static str,
    seconds: f64,
    ok: bool,
    detail: String,
}

pub struct Verify {
    cluster: LocalCluster,
    ledger: Ledger,
    /// The writer's pause between batches (0 while regions must grow).
    pause_ms: Arc<AtomicU64>,
    phases: Vec<Phase>,
    moves: u64,
    repairs: u64,
    lost: u64,
    drained_store_removed: bool,
}

/// Runs the story; prints each phase and the JSON summary; `Err` (with
/// the summary printed) if anything failed.
pub fn run(args: &VerifyArgs) -> Result<(), String> {
    let opts = LocalOptions {
        stores: 3,
        later_stores: 2,
        regions: INITIAL_REGIONS,
        base_port: args.base_port,
        region_split_size: Some(SPLIT_BYTES),
        pd_args: ["--store-down-after", "1s", "--max-store-down-time", DOWN_TIME].map(String::from).to_vec(),
        ..LocalOptions::default()
    };
    eprintln!("verify: starting PD and 3 stores ...");
    let cluster = LocalCluster::start(&opts).map_err(|e| e.to_string())?;
    eprintln!("verify: the cluster's logs and data are in {}", cluster.dir.display());
    let mut v = Verify {
        cluster,
        ledger: Arc::default(),
        pause_ms: Arc::new(AtomicU64::new(0)),
        phases: vec![],
        moves: 0,
        repairs: 0,
        lost: 0,
        drained_store_removed: false,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, ledger, pd, pause) = (stop.clone(), v.ledger.clone(), v.cluster.pd_addr, v.pause_ms.clone());
        std::thread::spawn(move || write_until(pd, &stop, &pause, &ledger))
    };
    let outcome = v.phases();
    stop.store(true, Ordering::Relaxed);
    let _ = writer.join();
    // (one more check with the writer stopped: everything it recorded)
    if outcome.is_ok() {
        v.phase("final read-back", |_| Ok("the writer stopped".into()));
    }
    v.print_summary();
    let ok = outcome.is_ok() && v.lost == 0 && v.phases.iter().all(|p| p.ok);
    if !ok || args.keep {
        v.cluster.keep_dir();
    }
    match (ok, outcome) {
        (true, _) => Ok(()),
        (false, Err(e)) => Err(format!("{e}; logs and data kept in {}", v.cluster.dir.display())),
        (false, Ok(())) => Err(format!("a phase failed; logs and data kept in {}", v.cluster.dir.display())),
    }
}

/// Puts keys spread over the key space until told to stop, recording the
/// acknowledged ones (a put that failed or whose outcome is unknown is
/// not recorded: it may or may not be there).
fn write_until(
    pd: std::net::SocketAddr,
    stop: &AtomicBool,
    pause_ms: &AtomicU64,
    ledger: &Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
) {
    let mut client = match KvClient::with_pd(pd) {
        Ok(c) => c,
        Err(e) => return eprintln!("verify: the writer cannot reach PD ({e}): nothing will be written"),
    };
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let batch: Vec<(Vec<u8>, Vec<u8>)> = (0..WRITER_BATCH)
            .map(|i| {
                let k = n + i;
                let key = format!("{:04}-{k:08}", (k * 7_919) % 10_000).into_bytes();
                let mut value = format!("v{k}-").into_bytes();
                value.resize(VALUE_BYTES, b'x');
                (key, value)
            })
            .collect();
        n += batch.len() as u64;
        let results = client.put_many(&batch);
        {
            let mut l = ledger.lock().expect("the ledger");
            for ((k, v), r) in batch.into_iter().zip(results) {
                if r.is_ok() {
                    l.insert(k, v);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(pause_ms.load(Ordering::Relaxed)));
    }
}

impl Verify {
    fn phases(&mut self) -> Result<(), String> {
        self.phase("splits by size", |v| {
            let n = v.settle(|views| views.len() >= REGIONS_AFTER_SPLITS);
            // (enough: from here on writes go on slowly, so later phases move
            // a cluster of about this size)
            v.pause_ms.store(WRITER_PAUSE_MS, Ordering::Relaxed);
            n.map(|n| format!("{n} regions"))
        });
        self.phase("split by hand", |v| v.split_by_hand());
        self.phase("stores 4 and 5 join and are balanced", |v| v.join_and_balance());
        self.phase("a move by hand", |v| v.move_by_hand());
        self.phase("a store down past the down time, rebuilt", |v| v.store_down());
        self.phase("a store drained and removed", |v| v.drain());
        self.phase("every store restarted", |v| v.restart_all());
        match self.phases.iter().find(|p| !p.ok) {
            Some(p) => Err(format!("phase \"{}\" failed: {}", p.name, p.detail)),
            None => Ok(()),
        }
    }

    /// Runs one phase (skipped once one failed) and reads every
    /// acknowledged write back after it.
    fn phase(&mut self, name: &'static str, f: impl FnOnce(&mut Verify) -> Result<String, String>) {
        if self.phases.iter().any(|p| !p.ok) {
            return;
        }
        let started = Instant::now();
        eprintln!("verify: {name} ...");
        let result = f(self).and_then(|detail| self.read_back().map(|read| format!("{detail}; {read}")));
        let seconds = started.elapsed().as_secs_f64();
        let (ok, detail) = match result {
            Ok(d) => (true, d),
            Err(e) => (false, e),
        };
        eprintln!("verify: {name}: {} in {seconds:.1} s: {detail}", if ok { "ok" } else { "FAILED" });
        self.phases.push(Phase { name, seconds, ok, detail });
    }

    fn pd(&self) -> PdClient {
        PdClient::new(self.cluster.pd_addr, 0)
    }

    /// Every acknowledged write reads back (a missing or different value is lost).
    fn read_back(&mut self) -> Result<String, String> {
        let expected = self.ledger.lock().expect("the ledger").clone();
        let mut client = KvClient::with_pd(self.cluster.pd_addr).map_err(|e| e.to_string())?;
        let mut lost = 0;
        for (k, v) in &expected {
            match client.get(k) {
                Ok(Some(got)) if got == *v => {}
                Ok(_) => lost += 1,
                Err(e) => return Err(format!("reading back {:?}: {e}", String::from_utf8_lossy(k))),
            }
        }
        self.lost = self.lost.max(lost);
        match lost {
            0 => Ok(format!("{} acknowledged writes read back", expected.len())),
            n => Err(format!("{n} of {} acknowledged writes lost", expected.len())),
        }
    }

    /// Waits until PD has no operator under way, every region is led with
    /// three voters, and `done` holds of PD's view; the region count.
    fn settle(&mut self, done: impl Fn(&[RegionView]) -> bool) -> Result<usize, String> {
        let mut pd = self.pd();
        let deadline = Instant::now() + PHASE_LIMIT;
        loop {
            let views = pd.all_regions().unwrap_or_default();
            let idle = pd.operators().is_ok_and(|ops| ops.is_empty());
            let whole = !views.is_empty()
                && views.iter().all(|v| {
                    v.leader.is_some()
                        && v.region.peers.len() == 3
                        && v.region.peers.iter().all(|p| p.role == pd::PeerRole::Voter)
                });
            if idle && whole && done(&views) {
                return Ok(views.len());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "not converged after {PHASE_LIMIT:?}: {} regions, operators {:?}, replicas per store {:?}",
                    views.len(),
                    pd.operators().map(|o| o.len()),
                    replicas_per_store(&views)
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn split_by_hand(&mut self) -> Result<String, String> {
        let mut client = KvClient::with_pd(self.cluster.pd_addr).map_err(|e| e.to_string())?;
        let key = b"5555-by-hand".to_vec();
        let region = client.region_of(&key).map_err(|e| e.to_string())?;
        let peers = region.peers.len();
        let first = self.pd().alloc_ids(engine::shard::SplitRequest::ids_needed(peers)).map_err(|e| e.to_string())?;
        let split = engine::shard::SplitRequest::with_ids(key.clone(), first, peers);
        let (_, right) = client.split(region.id, split).map_err(|e| e.to_string())?;
        let n = self.settle(|views| views.iter().any(|v| v.region.start_key == key))?;
        Ok(format!("region {} starts at {:?}; {n} regions", right.id, String::from_utf8_lossy(&key)))
    }

    fn join_and_balance(&mut self) -> Result<String, String> {
        for n in [4, 5] {
            self.cluster.start_store(n).map_err(|e| e.to_string())?;
        }
        self.settle(|views| {
            let n = replicas_per_store(views);
            n.len() == 5 && n.values().max().unwrap() - n.values().min().unwrap() <= 3
        })?;
        let views = self.pd().all_regions().map_err(|e| e.to_string())?;
        Ok(format!("replicas per store {:?}", replicas_per_store(&views)))
    }

    fn move_by_hand(&mut self) -> Result<String, String> {
        let mut pd = self.pd();
        let views = pd.all_regions().map_err(|e| e.to_string())?;
        let (stores, _) = pd.stores().map_err(|e| e.to_string())?;
        let ids: Vec<u64> = stores.iter().map(|s| s.store.id).collect();
        let (region, from, to) = views
            .iter()
            .find_map(|v| {
                let from = v.region.peers.first()?.store_id;
                let to = *ids.iter().find(|s| v.region.peer_on(**s).is_none())?;
                Some((v.region.id, from, to))
            })
            .ok_or("no region to move")?;
        pd.move_region(region, from, to).map_err(|e| e.to_string())?;
        self.settle(|views| {
            views
                .iter()
                .any(|v| v.region.id == region && v.region.peer_on(to).is_some() && v.region.peer_on(from).is_none())
        })?;
        self.moves += 1;
        Ok(format!("region {region} moved from store {from} to store {to}"))
    }

    fn store_down(&mut self) -> Result<String, String> {
        // store slot 2: its id is the one PD gave it
        let id = self.store_id(2)?;
        let views = self.pd().all_regions().map_err(|e| e.to_string())?;
        let held = views.iter().filter(|v| v.region.peer_on(id).is_some()).count();
        self.cluster.kill_store(2);
        self.settle(|views| !replicas_per_store(views).contains_key(&id))?;
        self.repairs += held as u64;
        Ok(format!("store {id} killed; its {held} replicas rebuilt on the others"))
    }

    fn drain(&mut self) -> Result<String, String> {
        let id = self.store_id(3)?;
        let mut pd = self.pd();
        pd.drain_store(id).map_err(|e| e.to_string())?;
        self.settle(|views| !replicas_per_store(views).contains_key(&id))?;
        let deadline = Instant::now() + PHASE_LIMIT;
        while !pd.store(id).is_ok_and(|v| v.store.state == pd::meta::StoreState::Removed) {
            if Instant::now() > deadline {
                return Err(format!("store {id} drained but not removed"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        self.drained_store_removed = true;
        self.cluster.stop_store(3);
        Ok(format!("store {id} drained and removed"))
    }

    fn restart_all(&mut self) -> Result<String, String> {
        // (the drained store stays out: it was removed; the killed one comes back)
        let running = self.cluster.running();
        for n in &running {
            self.cluster.stop_store(*n);
        }
        let mut ids = vec![];
        for n in running.iter().chain([2].iter()) {
            ids.push(self.cluster.start_store(*n).map_err(|e| e.to_string())?);
        }
        let n = self.settle(|_| true)?;
        Ok(format!("stores {ids:?} restarted (the killed one too); {n} regions led"))
    }

    fn store_id(&self, slot: u64) -> Result<u64, String> {
        let ident = self.cluster.dir.join(format!("store-{slot}")).join("IDENT");
        let text = std::fs::read_to_string(&ident).map_err(|e| format!("{}: {e}", ident.display()))?;
        let ident: engine::runtime::data_dir::Ident = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        Ok(ident.store_id)
    }

    fn print_summary(&mut self) {
        let regions = self.pd().all_regions().map(|v| v.len()).unwrap_or(0);
        let acknowledged = self.ledger.lock().expect("the ledger").len();
        let phases: Vec<serde_json::Value> = self
            .phases
            .iter()
            .map(|p| serde_json::json!({"name": p.name, "ok": p.ok, "seconds": (p.seconds * 10.0).round() / 10.0, "detail": p.detail}))
            .collect();
        let summary = serde_json::json!({
            "regions": regions,
            "moves": self.moves,
            "repairs": self.repairs,
            "acknowledged": acknowledged,
            "lost": self.lost,
            "drained_store_removed": self.drained_store_removed,
            "phases": phases,
        });
        println!("{summary}");
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
