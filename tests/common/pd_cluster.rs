//! A cluster run by PD, as real processes on loopback: `ringraft pd` and
//! three `ringraft server --pd`, each child killed when the test ends (and
//! with it, by its parent-death signal). Logs are appended under the
//! cluster's root, so a killed life's log survives its restart.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use engine::client::one_shot::call_once;
use engine::client::protocol::{ClientOp, ClientReply, ClientRequest};
use engine::RegionError;
use pd::protocol::RegionView;
use pd::PdClient;

use super::{free_base_port, ringraft};

pub struct Cluster {
    pub root: tempfile::TempDir,
    pub base: u16,
    pub pd_addr: SocketAddr,
    pub pd: Option<Child>,
    pub stores: Vec<Option<Child>>,
    /// `--initial-regions` of PD.
    pub regions: usize,
    /// Passed to every store, after the flags every store gets.
    pub store_args: Vec<String>,
    /// Passed to PD, after the flags it always gets.
    pub pd_args: Vec<String>,
    /// The cluster's id, once PD answered (requests to stores name it).
    pub cluster_id: u64,
}

impl Cluster {
    /// A cluster of up to five stores (none started yet; three make the
    /// cluster bootstrap) on a free port range.
    pub fn new(salt: u32, regions: usize, store_args: &[&str]) -> Cluster {
        let base = free_base_port(salt);
        Cluster {
            root: tempfile::tempdir().unwrap(),
            base,
            pd_addr: SocketAddr::from(([127, 0, 0, 1], base + 390)),
            pd: None,
            stores: vec![None, None, None, None, None],
            regions,
            store_args: store_args.iter().map(|s| s.to_string()).collect(),
            pd_args: vec![],
            cluster_id: 0,
        }
    }

    pub fn log(&self, name: &str) -> std::fs::File {
        std::fs::OpenOptions::new().create(true).append(true).open(self.root.path().join(name)).unwrap()
    }

    pub fn read_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.root.path().join(name)).unwrap_or_default()
    }

    pub fn start_pd(&mut self) {
        let child = ringraft()
            .args(["pd", "--data-dir"])
            .arg(self.root.path().join("pd"))
            .args(["--listen", &self.pd_addr.to_string(), "--initial-regions", &self.regions.to_string()])
            .args(&self.pd_args)
            .stdout(Stdio::null())
            .stderr(self.log("pd.log"))
            .spawn()
            .unwrap();
        self.pd = Some(child);
        let mut c = PdClient::new(self.pd_addr, 0);
        wait_for("PD to answer", || c.cluster().is_ok());
        self.cluster_id = c.cluster_id();
    }

    pub fn store_dir(&self, n: usize) -> PathBuf {
        self.root.path().join(format!("store-{n}"))
    }

    /// Store `n`'s base peer port (its client port is 64 above).
    fn peer_port(&self, n: usize) -> u16 {
        match n {
            1..=3 => self.base + (n as u16 - 1) * 128,
            _ => self.base + 512 + (n as u16 - 4) * 128,
        }
    }

    pub fn start_store(&mut self, n: usize) {
        let peer = self.peer_port(n);
        let child = ringraft()
            .args(["server", "--pd", &self.pd_addr.to_string(), "--data-dir"])
            .arg(self.store_dir(n))
            .args(["--peer-addr", &format!("127.0.0.1:{peer}"), "--client-addr", &format!("127.0.0.1:{}", peer + 64)])
            .args(["--store-heartbeat", "200ms", "--region-heartbeat", "200ms"])
            .args(&self.store_args)
            .stdout(Stdio::null())
            .stderr(self.log(&format!("store-{n}.log")))
            .spawn()
            .unwrap();
        self.stores[n - 1] = Some(child);
    }

    /// Kills a child with SIGKILL and reaps it.
    pub fn kill(child: &mut Option<Child>) {
        if let Some(mut c) = child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    pub fn store_id(&self, n: usize) -> u64 {
        let text = std::fs::read_to_string(self.store_dir(n).join("IDENT")).unwrap();
        serde_json::from_str::<serde_json::Value>(&text).unwrap()["store_id"].as_u64().unwrap()
    }

    /// `op` in region `r`, sent to store `n` (id `store_id`) itself: `Ok` only
    /// where that store leads the region; `None` while it does not answer.
    pub fn call_on(
        &self,
        n: usize,
        store_id: u64,
        r: &RegionView,
        op: ClientOp,
    ) -> Option<Result<ClientReply, RegionError>> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.peer_port(n) + 64));
        let req = ClientRequest {
            id: 1,
            cluster_id: self.cluster_id,
            store_id,
            region: r.region.id,
            conf_ver: r.region.epoch.conf_ver,
            version: r.region.epoch.version,
            op,
        };
        call_once(addr, &req, Duration::from_secs(2)).ok().map(|resp| resp.result)
    }

    pub fn assert_running(&mut self) {
        for (i, c) in self.stores.iter_mut().enumerate() {
            if let Some(status) = c.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("store {} exited ({status}); logs in {}", i + 1, self.root.path().display());
            }
        }
    }

    /// Waits until PD knows a region layout covering the key space with
    /// every region led (`count`: exactly that many regions); returns PD's view.
    pub fn wait_all_led(&mut self, count: Option<usize>) -> Vec<RegionView> {
        let mut pd = PdClient::new(self.pd_addr, 0);
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            self.assert_running();
            if let Ok(views) = pd.all_regions() {
                let covers = views.first().is_some_and(|v| v.region.start_key.is_empty())
                    && views.last().is_some_and(|v| v.region.end_key.is_empty())
                    && views.windows(2).all(|w| w[0].region.end_key == w[1].region.start_key);
                let counted = count.is_none_or(|n| views.len() == n);
                if covers && counted && views.iter().all(|v| v.leader.is_some()) {
                    return views;
                }
            }
            assert!(
                Instant::now() < deadline,
                "not every region led after 90 s; logs in {}",
                self.root.path().display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in self.stores.iter_mut() {
            Cluster::kill(c);
        }
        Cluster::kill(&mut self.pd);
    }
}

/// Polls `done` every 50 ms for up to 60 s.
pub fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "waited 60 s for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
