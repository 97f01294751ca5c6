//! PD's server: blocking sockets, a thread per connection (PD answers a
//! few requests per store per second; its cost is the fsync, not the
//! threads), one lock around the [`Cluster`]. A request that changes the
//! state is answered only after the state is durable; a failure to make it
//! durable stops the process (nothing may be answered as done that a
//! restart would forget).
//!
//! A connection is closed, and counted, on bytes that are not frames, a
//! frame that is not a request, or a request for another cluster, or one
//! without the cluster id that needs it (answered with `ClusterMismatch`
//! first, so the caller learns why).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use transport::{FrameDecoder, FrameKind};

use crate::cluster::Cluster;
use crate::protocol::{decode, encode, PdError, RequestFrame, ResponseFrame, PD_MESSAGE_BYTES_MAX};
use crate::storage::MetaStore;

/// Connections served at once; more are closed at accept.
pub const CONNECTIONS_MAX: usize = 512;
/// Bytes read from a connection at a time.
const READ_BYTES: usize = 64 << 10;
/// A connection silent this long is closed (its slot freed); a client's
/// next request reconnects. Stores heartbeat far more often.
pub const IDLE_CONNECTION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// What the server counts (tests and logs read them).
#[derive(Default, Debug)]
pub struct ServerStats {
    pub connections_accepted: AtomicU64,
    pub connections_refused_over_limit: AtomicU64,
    /// Closed for bytes that are not PD requests.
    pub connections_closed_malformed: AtomicU64,
    /// Closed for a request of another cluster.
    pub connections_closed_cluster_mismatch: AtomicU64,
    pub requests: AtomicU64,
}

struct Shared<S: MetaStore> {
    cluster: Mutex<Cluster<S>>,
    cluster_id: u64,
    started: Instant,
    stop: AtomicBool,
    open: AtomicUsize,
    stats: ServerStats,
    /// Clones of the open connections, shut down when the server stops.
    conns: Mutex<Vec<(u64, TcpStream)>>,
}

pub struct PdServer<S: MetaStore + 'static> {
    shared: Arc<Shared<S>>,
    addr: SocketAddr,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl<S: MetaStore + 'static> PdServer<S> {
    /// Listens on `listen` and serves `cluster` until [`PdServer::stop`].
    pub fn start(cluster: Cluster<S>, listen: SocketAddr) -> std::io::Result<PdServer<S>> {
        let listener = TcpListener::bind(listen)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            cluster_id: cluster.cluster_id(),
            cluster: Mutex::new(cluster),
            started: Instant::now(),
            stop: AtomicBool::new(false),
            open: AtomicUsize::new(0),
            stats: ServerStats::default(),
            conns: Mutex::new(vec![]),
        });
        let s = shared.clone();
        let accept = std::thread::Builder::new().name("pd-accept".into()).spawn(move || accept_loop(listener, s))?;
        Ok(PdServer { shared, addr, accept: Some(accept) })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stats(&self) -> &ServerStats {
        &self.shared.stats
    }

    /// Renders PD's metrics (Prometheus text): the server's counters and
    /// the cluster's gauges, on each call.
    pub fn metrics_renderer(&self) -> impl Fn() -> String + Send + 'static {
        let shared = self.shared.clone();
        move || {
            let mut out = String::new();
            let mut put = |name: &str, kind: &str, help: &str, v: u64| {
                out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"));
            };
            let s = &shared.stats;
            let counters: [(&str, &str, &AtomicU64); 5] = [
                ("ringraft_pd_requests_total", "requests answered or refused", &s.requests),
                ("ringraft_pd_connections_accepted_total", "connections accepted", &s.connections_accepted),
                (
                    "ringraft_pd_connections_refused_total",
                    "connections closed at accept (over CONNECTIONS_MAX)",
                    &s.connections_refused_over_limit,
                ),
                (
                    "ringraft_pd_connections_malformed_total",
                    "connections closed for bytes that are not PD requests",
                    &s.connections_closed_malformed,
                ),
                (
                    "ringraft_pd_connections_cluster_mismatch_total",
                    "connections closed for another cluster's request",
                    &s.connections_closed_cluster_mismatch,
                ),
            ];
            for (name, help, c) in counters {
                put(name, "counter", help, c.load(Ordering::Relaxed));
            }
            let now_ms = shared.started.elapsed().as_millis() as u64;
            // (one lock: every figure of a scrape from the same moment)
            let (gauges, ops, per_store, caught_up) = shared
                .cluster
                .lock()
                .map(|c| (c.gauges(now_ms), c.operator_counts(), c.store_counts(), c.learners_caught_up()))
                .unwrap_or_default();
            for (name, help, v) in gauges {
                put(name, "gauge", help, v);
            }
            put(
                "ringraft_pd_move_snapshots_total",
                "counter",
                "learners PD's operators added that caught up: each was sent a snapshot",
                caught_up,
            );
            out.push_str("# HELP ringraft_pd_store_regions replicas (any role) on each store, as PD sees the regions\n# TYPE ringraft_pd_store_regions gauge\n");
            for (store, (regions, _)) in &per_store {
                out.push_str(&format!("ringraft_pd_store_regions{{store=\"{store}\"}} {regions}\n"));
            }
            out.push_str("# HELP ringraft_pd_store_leaders regions led on each store, as the leaders reported\n# TYPE ringraft_pd_store_leaders gauge\n");
            for (store, (_, leaders)) in &per_store {
                out.push_str(&format!("ringraft_pd_store_leaders{{store=\"{store}\"}} {leaders}\n"));
            }
            out.push_str("# HELP ringraft_pd_operators_total operators by kind and how they went (started, finished, abandoned: timed out or the region changed under it, replaced by an admin move)\n# TYPE ringraft_pd_operators_total counter\n");
            for (kind, c) in ops {
                for (outcome, v) in [
                    ("started", c.started),
                    ("finished", c.finished),
                    ("abandoned", c.abandoned),
                    ("replaced", c.replaced),
                ] {
                    out.push_str(&format!(
                        "ringraft_pd_operators_total{{kind=\"{kind}\",outcome=\"{outcome}\"}} {v}\n"
                    ));
                }
            }
            out
        }
    }

    /// Runs `f` on the cluster under the server's lock (operators, tests).
    pub fn with_cluster<T>(&self, f: impl FnOnce(&mut Cluster<S>) -> T) -> T {
        f(&mut self.shared.cluster.lock().expect("a PD thread panicked"))
    }

    /// Stops accepting, closes every connection, and waits for the acceptor.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // wake the blocking accept
        let _ = TcpStream::connect_timeout(&self.addr, std::time::Duration::from_secs(1));
        for (_, c) in self.shared.conns.lock().expect("not poisoned").drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

impl<S: MetaStore + 'static> Drop for PdServer<S> {
    fn drop(&mut self) {
        if self.accept.is_some() {
            self.shutdown();
        }
    }
}

fn accept_loop<S: MetaStore + 'static>(listener: TcpListener, shared: Arc<Shared<S>>) {
    let mut next_conn = 0u64;
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        if shared.open.load(Ordering::SeqCst) >= CONNECTIONS_MAX {
            shared.stats.connections_refused_over_limit.fetch_add(1, Ordering::Relaxed);
            continue; // dropped: closed
        }
        shared.stats.connections_accepted.fetch_add(1, Ordering::Relaxed);
        shared.open.fetch_add(1, Ordering::SeqCst);
        next_conn += 1;
        let conn_id = next_conn;
        if let Ok(c) = stream.try_clone() {
            shared.conns.lock().expect("not poisoned").push((conn_id, c));
        }
        let s = shared.clone();
        let spawned = std::thread::Builder::new().name("pd-conn".into()).spawn(move || {
            // the slot is given back however the connection ends (a panic included)
            let _slot = Slot { shared: &s, conn_id };
            let peer = stream.peer_addr().ok();
            if let Err(why) = serve(stream, &s) {
                tracing::debug!(?peer, "PD connection closed: {why}");
            }
        });
        if spawned.is_err() {
            shared.open.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// A connection's place among the open ones, released when it ends.
struct Slot<'a, S: MetaStore> {
    shared: &'a Shared<S>,
    conn_id: u64,
}

impl<S: MetaStore> Drop for Slot<'_, S> {
    fn drop(&mut self) {
        if let Ok(mut conns) = self.shared.conns.lock() {
            conns.retain(|(id, _)| *id != self.conn_id);
        }
        self.shared.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Serves one connection until it closes or misbehaves.
fn serve<S: MetaStore>(mut stream: TcpStream, shared: &Shared<S>) -> Result<(), String> {
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(IDLE_CONNECTION_TIMEOUT)).map_err(|e| e.to_string())?;
    let mut decoder = FrameDecoder::with_limit(PD_MESSAGE_BYTES_MAX);
    let mut buf = vec![0u8; READ_BYTES];
    let malformed = |why: String| {
        shared.stats.connections_closed_malformed.fetch_add(1, Ordering::Relaxed);
        Err(why)
    };
    loop {
        let frame = match decoder.next_frame() {
            Ok(Some(f)) => f,
            Ok(None) => {
                let n = stream.read(&mut buf).map_err(|e| e.to_string())?;
                if n == 0 {
                    return decoder.finish().map_err(|e| e.to_string());
                }
                decoder.push(&buf[..n]);
                continue;
            }
            Err(e) => return malformed(e.to_string()),
        };
        if frame.kind != FrameKind::PdRequest {
            return malformed(format!("a {:?} frame on PD's port", frame.kind));
        }
        let req: RequestFrame = match decode(&frame.payload) {
            Ok(r) => r,
            Err(e) => return malformed(e.to_string()),
        };
        shared.stats.requests.fetch_add(1, Ordering::Relaxed);
        let ours = shared.cluster_id;
        let unknown_allowed = req.cluster_id == 0 && req.body.may_omit_cluster_id();
        if req.cluster_id != ours && !unknown_allowed {
            shared.stats.connections_closed_cluster_mismatch.fetch_add(1, Ordering::Relaxed);
            let result = Err(PdError::ClusterMismatch { theirs: req.cluster_id, ours });
            let _ = reply(&mut stream, &ResponseFrame { id: req.id, cluster_id: ours, result });
            return Err(format!("a request for cluster {}", req.cluster_id));
        }
        let now_ms = shared.started.elapsed().as_millis() as u64;
        let result = {
            let mut cluster = shared.cluster.lock().map_err(|_| "a PD thread panicked".to_string())?;
            let result = cluster.handle(req.body, now_ms);
            if let Err(PdError::Storage(what)) = &result {
                // the change is in memory and not durable: answering anything now
                // could hand out what a restart forgets — and another connection
                // would read it the moment the lock went, so it never goes
                eprintln!("ringraft pd: fatal: cannot make the state durable: {what}");
                std::process::abort();
            }
            result
        };
        reply(&mut stream, &ResponseFrame { id: req.id, cluster_id: ours, result }).map_err(|e| e.to_string())?;
    }
}

fn reply(stream: &mut TcpStream, resp: &ResponseFrame) -> std::io::Result<()> {
    let mut payload = encode(resp);
    if payload.len() > PD_MESSAGE_BYTES_MAX {
        let why = format!("the answer would be {} bytes, over {PD_MESSAGE_BYTES_MAX}: ask for less", payload.len());
        payload = encode(&ResponseFrame { result: Err(PdError::Invalid(why)), ..resp.clone() });
    }
    let mut out = vec![];
    transport::frame::encode_frame(&mut out, FrameKind::PdResponse, &[&payload]);
    stream.write_all(&out)
}
