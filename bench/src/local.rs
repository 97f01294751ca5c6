//! A local cluster: `ringraft server` processes of this same binary on
//! loopback, from a generated cluster spec, in a temporary directory unless
//! one is given. Behind `ringraft local` and, when no cluster is named,
//! `ringraft bench kv`.
//!
//! The stores are child processes: they die with the process that started
//! them (`PR_SET_PDEATHSIG`), are asked to stop with SIGTERM (a store then
//! stops its shards and exits 0) and killed if they do not within
//! `STOP_WAIT`. The cluster counts as up once every region has a leader,
//! read from the stores' own metrics.

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
    /// Stores without batching (`--no-batching`), to measure what it buys.
    pub no_batching: bool,
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
            no_batching: false,
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
    #[error("store {store} exited at start ({status}); its log: {log}")]
    StoreExited { store: u64, status: String, log: PathBuf },
    #[error("{what} after {waited:?}; the stores' logs are in {dir}")]
    Timeout { what: String, waited: Duration, dir: PathBuf },
}

/// A running local cluster; stopped (and its temporary directory removed) on drop.
pub struct LocalCluster {
    pub spec: Arc<ClusterSpec>,
    pub spec_path: PathBuf,
    pub dir: PathBuf,
    /// Each store's metrics address (`GET /metrics`), by store id.
    pub status: BTreeMap<u64, SocketAddr>,
    children: BTreeMap<u64, Child>,
    _temp: Option<tempfile::TempDir>,
}

impl LocalCluster {
    /// Writes the spec, starts the stores and waits until they serve and
    /// every region has a leader.
    pub fn start(opts: &LocalOptions) -> Result<LocalCluster, LocalError> {
        if opts.stores == 0 || opts.stores > LOCAL_STORES_MAX {
            return Err(LocalError::Options(format!("--stores must be 1..={LOCAL_STORES_MAX}")));
        }
        let spec = ClusterSpec::local(1, opts.stores, opts.cores, opts.regions, opts.base_port);
        spec.validate().map_err(|e| LocalError::Options(format!("this layout is not a valid cluster: {e}")))?;
        let status_base = u32::from(opts.base_port) + opts.stores as u32 * 128;
        if status_base + opts.stores as u32 > u32::from(u16::MAX) {
            return Err(LocalError::Options(format!(
                "--base-port {} leaves no room for the status ports",
                opts.base_port
            )));
        }
        let status: BTreeMap<u64, SocketAddr> = (1..=opts.stores)
            .map(|id| (id, SocketAddr::from(([127, 0, 0, 1], (status_base + id as u32 - 1) as u16))))
            .collect();
        // a port already answering is another cluster: it would take our clients
        let mut ports: Vec<SocketAddr> = status.values().copied().collect();
        for s in &spec.stores {
            ports.extend((0..s.shards).flat_map(|i| [s.peer_addr_of(i), s.client_addr_of(i)]));
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
        let spec_path = dir.join("spec.json");
        let text = serde_json::to_string_pretty(&spec).expect("a spec encodes");
        std::fs::write(&spec_path, text).map_err(|source| LocalError::Io {
            op: "write",
            path: spec_path.clone(),
            source,
        })?;
        let mut cluster =
            LocalCluster { spec: Arc::new(spec), spec_path, dir, status, children: BTreeMap::new(), _temp: temp };
        let started = (1..=opts.stores).try_for_each(|id| cluster.spawn(id, opts));
        if let Err(e) = started.and_then(|()| cluster.wait_led(START_WAIT)) {
            // the error names the stores' logs: keep them
            if let Some(t) = cluster._temp.take() {
                let _ = t.keep();
            }
            return Err(e);
        }
        Ok(cluster)
    }

    fn spawn(&mut self, id: u64, opts: &LocalOptions) -> Result<(), LocalError> {
        let exe = std::env::current_exe().map_err(|source| LocalError::Io {
            op: "find this binary",
            path: "/proc/self/exe".into(),
            source,
        })?;
        let log_path = self.dir.join(format!("store-{id}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|source| LocalError::Io { op: "open", path: log_path.clone(), source })?;
        let mut cmd = Command::new(exe);
        cmd.args(["server", "--spec"])
            .arg(&self.spec_path)
            .args(["--store-id", &id.to_string(), "--data-dir"])
            .arg(self.dir.join(format!("store-{id}")))
            .args(["--status-addr", &self.status[&id].to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(b) = opts.snapshot_log_min {
            cmd.args(["--snapshot-log-min", &b.to_string()]);
        }
        if opts.no_batching {
            cmd.arg("--no-batching");
        }
        // SAFETY: prctl in the child before exec only sets its parent-death signal
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|source| LocalError::Io {
            op: "start a store from",
            path: self.dir.clone(),
            source,
        })?;
        self.children.insert(id, child);
        Ok(())
    }

    /// Waits until every store answers and every region has a leader.
    pub fn wait_led(&mut self, limit: Duration) -> Result<(), LocalError> {
        let deadline = Instant::now() + limit;
        let regions = self.spec.regions.len() as f64;
        loop {
            for (id, c) in self.children.iter_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    let log = self.dir.join(format!("store-{id}.log"));
                    return Err(LocalError::StoreExited { store: *id, status: status.to_string(), log });
                }
            }
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
    pub fn stop(&mut self) -> Vec<u64> {
        for c in self.children.values() {
            // SAFETY: kill(2) on our own child's pid
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
        }
        let deadline = Instant::now() + STOP_WAIT;
        let mut killed = vec![];
        let asked = Instant::now();
        for (id, mut c) in std::mem::take(&mut self.children) {
            loop {
                match c.try_wait() {
                    Ok(Some(_)) => {
                        tracing::debug!(store = id, "stopped {:?} after SIGTERM", asked.elapsed());
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
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for c in self.children.values_mut() {
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
