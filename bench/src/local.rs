//! A local cluster: a placement driver and `ringraft server` processes of
//! this same binary on loopback, in a temporary directory unless one is
//! given. Behind `ringraft local` and, when no cluster is named,
//! `ringraft bench kv`.
//!
//! PD starts first; the stores register with it (their ids come from PD),
//! and once enough have registered PD lays out the initial regions, which
//! the stores fetch and start. The children die with the process that
//! started them (`PR_SET_PDEATHSIG`), are asked to stop with SIGTERM (a
//! store then stops its shards and exits 0; PD after the stores) and
//! killed if they do not within `STOP_WAIT`. The cluster counts as up once
//! every region has a leader, read from the stores' own metrics.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::spec::ClusterSpec;

/// How long stores get to stop on SIGTERM before they are killed.
pub const STOP_WAIT: Duration = Duration::from_secs(30);
/// How long a cluster may take to start serving and elect every leader.
pub const START_WAIT: Duration = Duration::from_secs(60);
/// Most stores a local cluster runs.
pub const LOCAL_STORES_MAX: u64 = 7;

#[derive(Clone, Debug)]
pub struct LocalOptions {
    pub stores: u64,
    /// Shards (cores) per store.
    pub cores: u16,
    pub regions: u64,
    /// Where the stores keep their data; `None`: a temporary directory,
    /// removed when the cluster stops.
    pub data_dir: Option<PathBuf>,
    /// First port: store i's peer ports start at base + (i−1)·128, its
    /// client ports 64 above; the status ports follow all stores'.
    pub base_port: u16,
    /// Passed to every store (`--snapshot-log-min`), when given.
    pub snapshot_log_min: Option<u64>,
    /// Passed to every store (`--region-split-size`), when given.
    pub region_split_size: Option<u64>,
    /// Stores without batching (`--no-batching`), to measure what it buys.
    pub no_batching: bool,
    /// PD's address; `None`: the port after the stores' status ports.
    pub pd_addr: Option<SocketAddr>,
    /// Stores started later (`add_store`): their ports are kept free too,
    /// after the first `stores`'.
    pub later_stores: u64,
    /// More flags for PD (`--max-store-down-time 10s`, …).
    pub pd_args: Vec<String>,
    /// More flags for every store (`--fault-injection`, …).
    pub store_args: Vec<String>,
}

impl Default for LocalOptions {
    fn default() -> Self {
        LocalOptions {
            stores: 3,
            cores: 1,
            regions: 64,
            data_dir: None,
            base_port: 20160,
            snapshot_log_min: None,
            region_split_size: None,
            no_batching: false,
            pd_addr: None,
            later_stores: 0,
            pd_args: vec![],
            store_args: vec![],
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("{0}")]
    Options(String),
    #[error("{op} {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: std::io::Error },
    #[error("port {port} on 127.0.0.1 is in use (another cluster?); choose another --base-port")]
    PortInUse { port: u16 },
    #[error("{what} exited at start ({status}); its log: {log}")]
    Exited { what: String, status: String, log: PathBuf },
    #[error("{what} after {waited:?}; the stores' logs are in {dir}")]
    Timeout { what: String, waited: Duration, dir: PathBuf },
}

/// A running local cluster; stopped (and its temporary directory removed) on drop.
pub struct LocalCluster {
    pub pd_addr: SocketAddr,
    /// The cluster as PD laid it out (stores by the ids PD gave them).
    pub spec: Arc<ClusterSpec>,
    pub dir: PathBuf,
    /// Each store's metrics address (`GET /metrics`), by store id.
    pub status: BTreeMap<u64, SocketAddr>,
    /// Regions the cluster has (PD's count once it started).
    pub regions: u64,
    /// The stores, by their number in this cluster (1..=stores; not their ids).
    children: BTreeMap<u64, Child>,
    /// The id PD gave each store, by its number.
    ids: BTreeMap<u64, u64>,
    opts: LocalOptions,
    pd: Option<Child>,
    _temp: Option<tempfile::TempDir>,
}

/// Store `n`'s (1-based) base peer and client addresses.
fn store_addrs(base_port: u16, n: u64) -> (SocketAddr, SocketAddr) {
    let port = u32::from(base_port) + (n as u32 - 1) * 2 * 64;
    let at = |p: u32| SocketAddr::from(([127, 0, 0, 1], p.min(u32::from(u16::MAX)) as u16));
    (at(port), at(port + 64))
}

impl LocalCluster {
    /// Starts PD and the stores and waits until they serve and every region has a leader.
    pub fn start(opts: &LocalOptions) -> Result<LocalCluster, LocalError> {
        if opts.stores == 0 || opts.stores > LOCAL_STORES_MAX {
            return Err(LocalError::Options(format!("--stores must be 1..={LOCAL_STORES_MAX}")));
        }
        if opts.cores == 0 || opts.cores > 64 {
            return Err(LocalError::Options("--cores must be 1..=64".into()));
        }
        let slots = opts.stores + opts.later_stores;
        if slots > LOCAL_STORES_MAX {
            return Err(LocalError::Options(format!("at most {LOCAL_STORES_MAX} stores in all")));
        }
        let status_base = u32::from(opts.base_port) + slots as u32 * 128;
        if status_base + slots as u32 + 2 > u32::from(u16::MAX) {
            return Err(LocalError::Options(format!(
                "--base-port {} leaves no room for the status and PD ports",
                opts.base_port
            )));
        }
        let status_of = |n: u64| SocketAddr::from(([127, 0, 0, 1], (status_base + n as u32 - 1) as u16));
        let pd_addr =
            opts.pd_addr.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], (status_base + slots as u32) as u16)));
        // a port already answering is another cluster: it would take our clients
        let pd_status = SocketAddr::new(pd_addr.ip(), pd_addr.port().wrapping_add(1));
        let mut ports: Vec<SocketAddr> = vec![pd_addr, pd_status];
        for n in 1..=slots {
            let (peer, client) = store_addrs(opts.base_port, n);
            ports.push(status_of(n));
            for i in 0..opts.cores {
                ports.extend([peer, client].map(|a| SocketAddr::new(a.ip(), a.port() + i)));
            }
        }
        for p in ports {
            if std::net::TcpListener::bind(p).is_err() {
                return Err(LocalError::PortInUse { port: p.port() });
            }
        }
        let (temp, dir) = match &opts.data_dir {
            Some(d) => (None, d.clone()),
            None => {
                let t = tempfile::Builder::new().prefix("ringraft-local-").tempdir().map_err(|source| {
                    LocalError::Io { op: "create a temporary directory", path: "/tmp".into(), source }
                })?;
                let d = t.path().to_path_buf();
                (Some(t), d)
            }
        };
        std::fs::create_dir_all(&dir).map_err(|source| LocalError::Io { op: "create", path: dir.clone(), source })?;
        let mut cluster = LocalCluster {
            pd_addr,
            spec: Arc::new(ClusterSpec {
                cluster_id: 0,
                stores: vec![],
                regions: vec![],
                pd_regions: None,
                pd_addr: None,
            }),
            dir,
            status: BTreeMap::new(),
            regions: opts.regions,
            children: BTreeMap::new(),
            ids: BTreeMap::new(),
            opts: opts.clone(),
            pd: None,
            _temp: temp,
        };
        let started = cluster.spawn_pd(opts).and_then(|()| {
            (1..=opts.stores).try_for_each(|n| cluster.spawn_store(n, opts, status_of(n)))?;
            (1..=opts.stores).try_for_each(|n| cluster.learn_id(n, status_of(n), START_WAIT).map(|_| ()))?;
            // (a cluster started again from its --data-dir has the regions PD laid out
            // then, whatever this start's --initial-regions says)
            let mut pd = pd::PdClient::new(cluster.pd_addr, 0);
            let view = pd.cluster().map_err(|e| LocalError::Options(format!("asking PD: {e}")))?;
            cluster.regions = u64::from(view.regions);
            cluster.wait_led(START_WAIT)?;
            let spec = ClusterSpec::from_pd(cluster.pd_addr).map_err(LocalError::Options)?;
            cluster.spec = Arc::new(spec);
            Ok(())
        });
        if let Err(e) = started {
            // the error names the logs: keep them
            if let Some(t) = cluster._temp.take() {
                let _ = t.keep();
            }
            return Err(e);
        }
        Ok(cluster)
    }

    fn command(&self, log_name: &str) -> Result<Command, LocalError> {
        let exe = std::env::current_exe().map_err(|source| LocalError::Io {
            op: "find this binary",
            path: "/proc/self/exe".into(),
            source,
        })?;
        if exe.to_string_lossy().ends_with(" (deleted)") {
            // (a rebuild replaced it: starting that one would mix versions in one cluster)
            return Err(LocalError::Options(format!(
                "this binary ({}) was replaced or removed while the cluster ran; it cannot start another process",
                exe.display()
            )));
        }
        let log_path = self.dir.join(log_name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|source| LocalError::Io { op: "open", path: log_path.clone(), source })?;
        let mut cmd = Command::new(exe);
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
        // SAFETY: prctl in the child before exec only sets its parent-death signal
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        Ok(cmd)
    }

    /// PD's metrics address: the port after PD's.
    pub fn pd_status_addr(&self) -> SocketAddr {
        SocketAddr::new(self.pd_addr.ip(), self.pd_addr.port().wrapping_add(1))
    }

    fn spawn_pd(&mut self, opts: &LocalOptions) -> Result<(), LocalError> {
        let mut cmd = self.command("pd.log")?;
        cmd.args(["pd", "--data-dir"])
            .arg(self.dir.join("pd"))
            .args(["--listen", &self.pd_addr.to_string()])
            .args(["--status-addr", &self.pd_status_addr().to_string()])
            .args(["--initial-regions", &opts.regions.to_string()])
            .args(["--replicas", &opts.stores.min(3).to_string()])
            .args(&opts.pd_args);
        let child =
            cmd.spawn().map_err(|source| LocalError::Io { op: "start PD in", path: self.dir.clone(), source })?;
        self.pd = Some(child);
        Ok(())
    }

    fn spawn_store(&mut self, n: u64, opts: &LocalOptions, status: SocketAddr) -> Result<(), LocalError> {
        let (peer, client) = store_addrs(opts.base_port, n);
        let mut cmd = self.command(&format!("store-{n}.log"))?;
        cmd.args(["server", "--pd", &self.pd_addr.to_string(), "--data-dir"])
            .arg(self.dir.join(format!("store-{n}")))
            .args(["--peer-addr", &peer.to_string(), "--client-addr", &client.to_string()])
            .args(["--cores", &opts.cores.to_string(), "--status-addr", &status.to_string()])
            .args(["--store-heartbeat", "1s", "--region-heartbeat", "1s"]);
        if let Some(b) = opts.snapshot_log_min {
            cmd.args(["--snapshot-log-min", &b.to_string()]);
        }
        if let Some(b) = opts.region_split_size {
            cmd.args(["--region-split-size", &b.to_string()]);
        }
        if opts.no_batching {
            cmd.arg("--no-batching");
        }
        cmd.args(&opts.store_args);
        let child = cmd.spawn().map_err(|source| LocalError::Io {
            op: "start a store from",
            path: self.dir.clone(),
            source,
        })?;
        self.children.insert(n, child);
        Ok(())
    }

    /// Fails if a child exited (one killed through `kill_store` or
    /// `kill_pd` is no longer a child).
    pub fn check_children(&mut self) -> Result<(), LocalError> {
        if let Some(Ok(Some(status))) = self.pd.as_mut().map(|c| c.try_wait()) {
            let log = self.dir.join("pd.log");
            return Err(LocalError::Exited { what: "PD".into(), status: status.to_string(), log });
        }
        for (n, c) in self.children.iter_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                let log = self.dir.join(format!("store-{n}.log"));
                return Err(LocalError::Exited { what: format!("store {n}"), status: status.to_string(), log });
            }
        }
        Ok(())
    }

    /// Waits until store `n` wrote the id PD gave it, and keys its status
    /// address by it; its id.
    fn learn_id(&mut self, n: u64, status: SocketAddr, limit: Duration) -> Result<u64, LocalError> {
        let deadline = Instant::now() + limit;
        let ident = self.dir.join(format!("store-{n}")).join("IDENT");
        loop {
            self.check_children()?;
            let id = std::fs::read_to_string(&ident)
                .ok()
                .and_then(|t| serde_json::from_str::<engine::runtime::data_dir::Ident>(&t).ok())
                .map_or(0, |i| i.store_id);
            if id != 0 {
                self.status.insert(id, status);
                self.ids.insert(n, id);
                return Ok(id);
            }
            if Instant::now() > deadline {
                return Err(LocalError::Timeout {
                    what: format!("store {n} has not registered with PD"),
                    waited: limit,
                    dir: self.dir.clone(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Store `n`'s metrics address.
    pub fn status_of(&self, n: u64) -> SocketAddr {
        let slots = self.opts.stores + self.opts.later_stores;
        let status_base = u32::from(self.opts.base_port) + slots as u32 * 128;
        SocketAddr::from(([127, 0, 0, 1], (status_base + n as u32 - 1) as u16))
    }

    /// Starts store `n` (one of the `later_stores` slots, or one stopped
    /// before) and waits until it registered; its id.
    pub fn start_store(&mut self, n: u64) -> Result<u64, LocalError> {
        let opts = self.opts.clone();
        if n == 0 || n > opts.stores + opts.later_stores {
            return Err(LocalError::Options(format!("no store slot {n}")));
        }
        if self.children.contains_key(&n) {
            return Err(LocalError::Options(format!("store {n} runs already")));
        }
        let status = self.status_of(n);
        self.spawn_store(n, &opts, status)?;
        self.learn_id(n, status, START_WAIT)
    }

    /// Kills store `n` with SIGKILL (no clean stop: a crash).
    pub fn kill_store(&mut self, n: u64) {
        if let Some(mut c) = self.children.remove(&n) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops store `n` cleanly (SIGTERM, killed after `STOP_WAIT`).
    pub fn stop_store(&mut self, n: u64) {
        if let Some(c) = self.children.remove(&n) {
            stop_children(BTreeMap::from([(n, c)]));
        }
    }

    /// The id PD gave store `n` (once it registered).
    pub fn store_id(&self, n: u64) -> Option<u64> {
        self.ids.get(&n).copied()
    }

    /// The process id of store `n`, while it runs.
    pub fn store_pid(&self, n: u64) -> Option<u32> {
        self.children.get(&n).map(Child::id)
    }

    /// Kills PD with SIGKILL (a crash); `start_pd` brings it back on its data.
    pub fn kill_pd(&mut self) {
        if let Some(mut c) = self.pd.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts PD again (after `kill_pd`) with the flags it first had.
    pub fn start_pd(&mut self) -> Result<(), LocalError> {
        if self.pd.is_some() {
            return Err(LocalError::Options("PD runs already".into()));
        }
        let opts = self.opts.clone();
        self.spawn_pd(&opts)
    }

    /// Keeps the cluster's directory (logs, data) when the cluster goes.
    pub fn keep_dir(&mut self) {
        if let Some(t) = self._temp.take() {
            let _ = t.keep();
        }
    }

    /// The store slots running now.
    pub fn running(&self) -> Vec<u64> {
        self.children.keys().copied().collect()
    }

    /// Waits until every store answers and every region has a leader.
    pub fn wait_led(&mut self, limit: Duration) -> Result<(), LocalError> {
        let deadline = Instant::now() + limit;
        let regions = self.regions as f64;
        loop {
            self.check_children()?;
            let leaders: f64 =
                self.status.values().filter_map(|a| scrape(*a).ok()).map(|m| metric(&m, "ringraft_leaders")).sum();
            if leaders >= regions {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(LocalError::Timeout {
                    what: format!("{leaders} of {regions} regions have a leader"),
                    waited: limit,
                    dir: self.dir.clone(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every store's metrics, by store id.
    pub fn metrics(&self) -> BTreeMap<u64, BTreeMap<String, f64>> {
        self.status.iter().filter_map(|(id, a)| scrape(*a).ok().map(|m| (*id, m))).collect()
    }

    /// Asks every store to stop (SIGTERM), waits for them, kills those that
    /// do not stop in time. Returns the stores that had to be killed.
    pub fn stop(&mut self) -> Vec<String> {
        let mut killed: Vec<String> =
            stop_children(std::mem::take(&mut self.children)).into_iter().map(|n| format!("store {n}")).collect();
        if let Some(pd) = self.pd.take() {
            killed.extend(stop_children(BTreeMap::from([(0, pd)])).into_iter().map(|_| "PD".to_string()));
        }
        killed
    }
}

/// SIGTERM to every child, then waits; kills those that do not stop in
/// `STOP_WAIT`. Returns the keys of the killed ones.
fn stop_children(children: BTreeMap<u64, Child>) -> Vec<u64> {
    for c in children.values() {
        // SAFETY: kill(2) on our own child's pid
        unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
    }
    let deadline = Instant::now() + STOP_WAIT;
    let mut killed = vec![];
    let asked = Instant::now();
    for (id, mut c) in children {
        loop {
            match c.try_wait() {
                Ok(Some(_)) => {
                    tracing::debug!(child = id, "stopped {:?} after SIGTERM", asked.elapsed());
                    break;
                }
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                _ => {
                    let _ = c.kill();
                    let _ = c.wait();
                    killed.push(id);
                    break;
                }
            }
        }
    }
    killed
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for c in self.children.values_mut().chain(self.pd.as_mut()) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A store's metrics by name: counters and counts summed over its shards,
/// latency percentiles (`*_p50`, `*_p99`) the worst shard's.
pub fn scrape(addr: SocketAddr) -> std::io::Result<BTreeMap<String, f64>> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: ringraft\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("ringraft_")) {
        let (Some(name), Some(value)) = (line.split('{').next(), line.rsplit(' ').next()) else { continue };
        if let Ok(v) = value.parse::<f64>() {
            add_metric(&mut out, name, v);
        }
    }
    Ok(out)
}

/// Adds one shard's or store's figure to a total: counters and counts sum,
/// latency percentiles (`*_p50`, `*_p99`) keep the worst.
pub fn add_metric(total: &mut BTreeMap<String, f64>, name: &str, v: f64) {
    let e = total.entry(name.to_string()).or_insert(0.0);
    *e = if name.ends_with("_p50") || name.ends_with("_p99") { e.max(v) } else { *e + v };
}

/// A metric of a scrape (0 when absent).
pub fn metric(m: &BTreeMap<String, f64>, name: &str) -> f64 {
    m.get(name).copied().unwrap_or(0.0)
}
