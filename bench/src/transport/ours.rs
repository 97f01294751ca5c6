//! One run of ringraft's transport: a sending endpoint on one executor,
//! `--destinations` receiving endpoints on another, over loopback. Each
//! iteration every region pushes one message into its destination's outbox
//! and the shard flushes once: one frame per destination. The sender keeps
//! at most `QUEUE_HIGH_BYTES` queued per destination (a closed loop at the
//! socket's pace, nothing dropped); the receiver counts what it decodes and
//! times each frame from its flush (the send time rides in the first
//! message) to its decoding.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use glommio::LocalExecutorBuilder;
use transport::{Destination, Endpoint, EndpointConfig, Envelope, Epoch, Incoming, Outboxes, Peer, Target};

use super::args::TransportBenchArgs;
use super::placement;
use crate::latency::Latency;

/// Bytes the sender lets queue per destination before it waits: a few frames,
/// so frame latency is the network's, not a deep queue's.
const QUEUE_HIGH_BYTES: usize = 1 << 20;
/// Cluster id of the benchmark's two stores.
const CLUSTER_ID: u64 = 0xbe9c;
const SENDER_STORE: u64 = 1;
const RECEIVER_STORE: u64 = 2;
/// io_memory of each executor: these executors do network I/O only.
const IO_MEMORY_BYTES: usize = 1 << 20;

/// What one run measured, over the measurement window only.
pub struct OursResult {
    pub messages: u64,
    pub frames: u64,
    /// Frame bytes on the wire (header + payload).
    pub wire_bytes: u64,
    /// Message bytes (the raft messages alone, no envelopes).
    pub message_bytes: u64,
    pub iterations: u64,
    /// Frames the sender flushed in the window.
    pub frames_flushed: u64,
    pub elapsed: Duration,
    pub latency: Latency,
    /// Frames the sender dropped (must be 0 in a closed loop).
    pub dropped: u64,
}

/// Counters the receiver updates and the sender reads at the window's edges.
#[derive(Default)]
struct Received {
    messages: AtomicU64,
    frames: AtomicU64,
    wire_bytes: AtomicU64,
    message_bytes: AtomicU64,
    /// Frames sent in [window_start_ns, window_end_ns) are timed.
    window_start_ns: AtomicU64,
    window_end_ns: AtomicU64,
    stop: AtomicBool,
}

fn dest(shard: usize) -> Destination {
    Destination { store_id: RECEIVER_STORE, shard: shard as u16 }
}

fn key(region: usize) -> Bytes {
    Bytes::from(format!("t{region:015}"))
}

pub fn run(args: &TransportBenchArgs) -> Result<OursResult, String> {
    let base = Instant::now();
    let received = Arc::new(Received::default());
    received.window_start_ns.store(u64::MAX, Relaxed);
    received.window_end_ns.store(u64::MAX, Relaxed);
    let scratch = tempfile::tempdir().map_err(|e| format!("scratch directory: {e}"))?;
    let snap_dir = scratch.path().to_path_buf();

    let (addr_tx, addr_rx) = mpsc::channel::<Result<Vec<SocketAddr>, String>>();
    let receiver = {
        let received = received.clone();
        let destinations = args.destinations;
        LocalExecutorBuilder::new(placement::executor(1))
            .name("bench-rx")
            .io_memory(IO_MEMORY_BYTES)
            .spawn(move || async move { receive(destinations, snap_dir, base, received, addr_tx).await })
            .map_err(|e| format!("start the receiving executor: {e}"))?
    };
    let addrs = match addr_rx.recv() {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err("the receiving executor stopped before listening".into()),
    };
    let send_args = args.clone();
    let sender_received = received.clone();
    let sent = LocalExecutorBuilder::new(placement::executor(0))
        .name("bench-tx")
        .io_memory(IO_MEMORY_BYTES)
        .spawn(move || async move { send(send_args, addrs, base, sender_received).await })
        .map_err(|e| format!("start the sending executor: {e}"))?
        .join()
        .map_err(|e| format!("sending executor: {e}"))?;
    received.stop.store(true, Relaxed);
    let latency = receiver.join().map_err(|e| format!("receiving executor: {e}"))?;
    let mut r = sent?;
    r.latency = latency;
    Ok(r)
}

/// The receiving store: one endpoint per destination shard, each drained by its own task.
async fn receive(
    destinations: usize,
    snap_dir: std::path::PathBuf,
    base: Instant,
    received: Arc<Received>,
    addr_tx: mpsc::Sender<Result<Vec<SocketAddr>, String>>,
) -> Latency {
    glommio::timer::sleep(Duration::from_millis(1)).await; // the first timer of an executor is slow
    let latency = std::rc::Rc::new(std::cell::RefCell::new(Latency::default()));
    let mut endpoints = vec![];
    let mut addrs = vec![];
    for shard in 0..destinations {
        let listen = "127.0.0.1:0".parse().unwrap();
        let config = EndpointConfig::new(CLUSTER_ID, RECEIVER_STORE, shard as u16, listen, snap_dir.clone());
        match Endpoint::start(config) {
            Ok((e, inbox)) => {
                addrs.push(e.local_addr());
                let (received, latency) = (received.clone(), latency.clone());
                let drain = glommio::spawn_local(async move {
                    while let Some(item) = inbox.recv().await {
                        let Incoming::Raft { batch, .. } = item else { continue };
                        let now_ns = base.elapsed().as_nanos() as u64;
                        let messages: usize = batch.iter().map(|e| e.message().len()).sum();
                        received.messages.fetch_add(batch.len() as u64, Relaxed);
                        received.frames.fetch_add(1, Relaxed);
                        received
                            .wire_bytes
                            .fetch_add((batch.payload_bytes() + transport::FRAME_HEADER_BYTES) as u64, Relaxed);
                        received.message_bytes.fetch_add(messages as u64, Relaxed);
                        let sent_ns = u64::from_le_bytes(batch.get(0).message()[..8].try_into().unwrap());
                        let window = received.window_start_ns.load(Relaxed)..received.window_end_ns.load(Relaxed);
                        if window.contains(&sent_ns) {
                            latency.borrow_mut().record(Duration::from_nanos(now_ns.saturating_sub(sent_ns)));
                        }
                    }
                });
                endpoints.push((e, drain));
            }
            Err(e) => {
                let _ = addr_tx.send(Err(format!("start receiving endpoint {shard}: {e}")));
                return Latency::default();
            }
        }
    }
    let _ = addr_tx.send(Ok(addrs));
    while !received.stop.load(Relaxed) {
        glommio::timer::sleep(Duration::from_millis(20)).await;
    }
    for (e, _drain) in &endpoints {
        e.shutdown();
    }
    drop(endpoints);
    std::rc::Rc::try_unwrap(latency).map(|l| l.into_inner()).unwrap_or_else(|rc| {
        let mut copy = Latency::default();
        copy.add(&rc.borrow());
        copy
    })
}

/// The sending shard: build, flush, send, keep the queues shallow, repeat.
async fn send(
    args: TransportBenchArgs,
    addrs: Vec<SocketAddr>,
    base: Instant,
    received: Arc<Received>,
) -> Result<OursResult, String> {
    glommio::timer::sleep(Duration::from_millis(1)).await;
    let scratch = tempfile::tempdir().map_err(|e| format!("scratch directory: {e}"))?;
    let config =
        EndpointConfig::new(CLUSTER_ID, SENDER_STORE, 0, "127.0.0.1:0".parse().unwrap(), scratch.path().into());
    let (endpoint, _inbox) = Endpoint::start(config).map_err(|e| format!("start the sending endpoint: {e}"))?;
    for (shard, addr) in addrs.iter().enumerate() {
        endpoint.set_address(dest(shard), *addr);
    }
    // one envelope per region, built once: the transport's cost is measured, not
    // the making of raft messages; only the first carries a fresh send time
    let filler = Bytes::from(vec![0x5au8; args.message_bytes]);
    let mut envelopes: Vec<Envelope> = (0..args.regions)
        .map(|r| Envelope {
            region_id: r as u64 + 1,
            start_key: key(r),
            end_key: key(r + 1),
            epoch: Epoch { conf_ver: 5, version: 9 },
            from: Peer { peer_id: 3 * r as u64 + 1, store_id: SENDER_STORE, shard: 0 },
            to: Target { peer_id: 3 * r as u64 + 2, store_id: RECEIVER_STORE, shard: (r % args.destinations) as u16 },
            message: filler.clone(),
        })
        .collect();
    let mut outboxes = Outboxes::new();
    let start = Instant::now();
    let window_start = start + args.warmup;
    let window_end = window_start + args.duration;
    let mut at_start: Option<(u64, u64, u64, u64, u64, u64, Instant)> = None;
    let mut iterations = 0u64;
    let snapshot = |iterations: u64, flushed: u64| {
        (
            received.messages.load(Relaxed),
            received.frames.load(Relaxed),
            received.wire_bytes.load(Relaxed),
            received.message_bytes.load(Relaxed),
            iterations,
            flushed,
            Instant::now(),
        )
    };
    loop {
        let now = Instant::now();
        if at_start.is_none() && now >= window_start {
            received.window_start_ns.store(base.elapsed().as_nanos() as u64, Relaxed);
            at_start = Some(snapshot(iterations, outboxes.stats().frames));
        }
        if now >= window_end {
            break;
        }
        let sent_ns = base.elapsed().as_nanos() as u64;
        let mut stamped = vec![0x5au8; args.message_bytes];
        stamped[..8].copy_from_slice(&sent_ns.to_le_bytes());
        let stamped = Bytes::from(stamped);
        // every destination's first message carries the time
        for e in envelopes.iter_mut().take(args.destinations) {
            e.message = stamped.clone();
        }
        for e in &envelopes {
            let to = Destination { store_id: RECEIVER_STORE, shard: e.to.shard };
            outboxes.push(to, e).map_err(|e| format!("outbox: {e}"))?;
        }
        endpoint.send(outboxes.flush());
        iterations += 1;
        for shard in 0..args.destinations {
            endpoint.wait_queued_below(dest(shard), QUEUE_HIGH_BYTES).await;
        }
        futures_lite::future::yield_now().await;
    }
    received.window_end_ns.store(base.elapsed().as_nanos() as u64, Relaxed);
    let end = snapshot(iterations, outboxes.stats().frames);
    let s = at_start.expect("the window started before it ended");
    let stats = endpoint.stats();
    endpoint.shutdown();
    Ok(OursResult {
        messages: end.0 - s.0,
        frames: end.1 - s.1,
        wire_bytes: end.2 - s.2,
        message_bytes: end.3 - s.3,
        iterations: end.4 - s.4,
        frames_flushed: end.5 - s.5,
        elapsed: end.6 - s.6,
        latency: Latency::default(),
        dropped: stats.frames_dropped_total(),
    })
}
