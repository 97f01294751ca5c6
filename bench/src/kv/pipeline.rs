//! The bench's client: many requests in flight on each connection, each
//! answered on its own (matched by id), so an operation's latency is its own
//! and not its batch's — what an open-loop measurement needs. It routes by
//! the cluster's regions (fixed for the run) and, when a send fails, does
//! what the KV clients' shared policy (`engine::client::policy`) decides:
//! follow a `NotLeader` hint at once, take a newer membership from an
//! answer, send again after a wait that grows with each attempt (or after a
//! busy store's own `backoff_ms`), or stop — a put whose connection died
//! unanswered counts as ambiguous (a get is sent again), a refusal that
//! sending again cannot change counts by its kind. Apart from the policy,
//! the bench gives up on an operation unanswered for `REQUEST_TIMEOUT`
//! ("timeout"; a put's fate is then unknown, and it is never sent again).
//! (The library client, `engine::client::kv_client`, follows the same
//! policy but waits for a whole pass of replies instead.)

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use engine::client::kv_client::KvError;
use engine::client::policy::{self, Decision, Failure, GiveUp, OpKind, Route};
use engine::client::protocol::{decode, encode_frame, ClientOp, ClientReply, ClientRequest, ClientResponse};
use engine::kv::Command;
use engine::region::meta::RegionMeta;
use engine::spec::ClusterSpec;
use engine::RegionError;
use transport::{FrameDecoder, FrameKind};

/// Bytes read from a connection at once.
const READ_BYTES: usize = 256 << 10;
/// Time to connect to a store before the operation is tried elsewhere.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// An operation unanswered this long is given up ("timeout"; a put's fate is then unknown).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Sends of an operation whose key no known region holds, before it fails
/// ("key_not_in_region"), each `ROUTE_RETRY` after asking PD again.
const ROUTE_ATTEMPTS_MAX: u32 = 40;
const ROUTE_RETRY: Duration = Duration::from_millis(50);
/// How often unanswered operations are checked against `REQUEST_TIMEOUT`.
const TIMEOUT_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// One operation, as the bench made it.
#[derive(Clone, Debug)]
pub struct Op {
    pub key: Vec<u8>,
    pub put: bool,
    /// Where its latency counts from: its due time (open loop) or its first send.
    pub from: Instant,
    /// Sends so far (a send that could not go out included).
    pub attempts: u32,
    /// When it was first tried (the policy's time budget counts from then).
    first_tried: Option<Instant>,
    /// When it was last sent (its timeout counts from then).
    sent: Instant,
    /// The store it was last sent to.
    store_id: u64,
}

impl Op {
    /// An operation not sent yet; its latency counts from `from`.
    pub fn new(key: Vec<u8>, put: bool, from: Instant) -> Op {
        Op { key, put, from, attempts: 0, first_tried: None, sent: from, store_id: 0 }
    }
}

pub enum Outcome {
    Done { op: Op, reply: ClientReply },
    Failed { kind: &'static str },
}

enum Event {
    Reply(Op, Result<ClientReply, RegionError>),
    /// The connection closed with the operation unanswered.
    Lost(Op),
}

/// A connection's unanswered operations; `closed` once its reader ended
/// (then nothing more may be added: nobody would answer it).
#[derive(Default)]
struct Pending {
    closed: bool,
    ops: BTreeMap<u64, Op>,
}

struct Conn {
    stream: TcpStream,
    /// Requests not yet written (one write per connection per `flush`).
    out: Vec<u8>,
    pending: Arc<Mutex<Pending>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Both);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

pub struct Pipeline {
    spec: Arc<ClusterSpec>,
    metas: Vec<RegionMeta>,
    /// Index into `metas` by start key (a key's region: the last start at or below it).
    by_start: BTreeMap<Vec<u8>, usize>,
    leaders: BTreeMap<u64, u64>,
    conns: BTreeMap<(u64, u16), Conn>,
    tx: Sender<Event>,
    rx: Receiver<Event>,
    next_id: u64,
    value: Vec<u8>,
    in_flight: usize,
    /// Outcomes decided while sending (a store that cannot be reached).
    ready: Vec<Outcome>,
    /// Operations waiting to be sent again, by when (a busy store, an election).
    delayed: BTreeMap<(Instant, u64), Op>,
    delayed_seq: u64,
    last_timeout_check: Instant,
    request_timeout: Duration,
    /// PD's client (one connection, kept), when the layout came from PD.
    pd: Option<pd::PdClient>,
}

impl Pipeline {
    pub fn new(spec: Arc<ClusterSpec>, value: Vec<u8>) -> Pipeline {
        let (tx, rx) = channel();
        let metas = spec.region_metas();
        let by_start = metas.iter().enumerate().map(|(i, m)| (m.start_key.clone(), i)).collect();
        Pipeline {
            spec,
            metas,
            by_start,
            leaders: BTreeMap::new(),
            conns: BTreeMap::new(),
            tx,
            rx,
            next_id: 1,
            value,
            in_flight: 0,
            ready: vec![],
            delayed: BTreeMap::new(),
            delayed_seq: 0,
            last_timeout_check: Instant::now(),
            request_timeout: REQUEST_TIMEOUT,
            pd: None,
        }
    }

    /// Gives up on an operation unanswered for `timeout` (default `REQUEST_TIMEOUT`).
    pub fn set_request_timeout(&mut self, timeout: Duration) {
        self.request_timeout = timeout;
    }

    /// Sends `op` again after `wait`.
    fn later(&mut self, op: Op, wait: Duration) {
        self.delayed_seq += 1;
        self.delayed.insert((Instant::now() + wait, self.delayed_seq), op);
    }

    /// Gives up on operations unanswered for `REQUEST_TIMEOUT`.
    fn expire(&mut self) {
        let now = Instant::now();
        if now.duration_since(self.last_timeout_check) < TIMEOUT_CHECK_INTERVAL {
            return;
        }
        self.last_timeout_check = now;
        let mut expired = 0;
        for conn in self.conns.values() {
            let mut p = conn.pending.lock().expect("a reader panicked");
            let before = p.ops.len();
            p.ops.retain(|_, op| now.duration_since(op.sent) < self.request_timeout);
            expired += before - p.ops.len();
        }
        for _ in 0..expired {
            self.decide(Outcome::Failed { kind: "timeout" });
        }
    }

    /// Operations sent and not yet decided.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Sends `op` to its region's leader (as far as this client knows).
    pub fn send(&mut self, op: Op) {
        self.in_flight += 1;
        self.dispatch(op);
    }

    /// The region holding `key`, as the spec (and answers since) have it.
    fn region_of(&self, key: &[u8]) -> Option<&RegionMeta> {
        let bound = (std::ops::Bound::Unbounded, std::ops::Bound::Included(key));
        let found = self.by_start.range::<[u8], _>(bound).next_back().map(|(_, i)| &self.metas[*i]);
        found.filter(|m| m.contains(key))
    }

    /// The region holding `key`: as known, or (splits this client has not
    /// all seen) as PD has it now, when the layout came from PD.
    fn route(&mut self, key: &[u8]) -> Option<RegionMeta> {
        if let Some(m) = self.region_of(key) {
            return Some(m.clone());
        }
        self.ask_pd(key);
        self.region_of(key).cloned()
    }

    /// Learns the region holding `key` as PD has it now (if the layout came
    /// from PD; PD may lag its stores by a heartbeat).
    fn ask_pd(&mut self, key: &[u8]) {
        let Some(addr) = self.spec.pd_addr else { return };
        let cluster_id = self.spec.cluster_id;
        let pd = self.pd.get_or_insert_with(|| {
            let mut pd = pd::PdClient::new(addr, cluster_id);
            pd.set_timeout(CONNECT_TIMEOUT);
            pd
        });
        match pd.region_by_key(key) {
            Ok(v) => {
                let meta = RegionMeta::from(&v.region);
                let leader = v.leader.map_or(meta.first_voter().store_id, |l| l.store_id);
                self.learn(vec![meta], leader);
            }
            Err(e) => tracing::debug!("asking PD for a key's region: {e}"),
        }
    }

    fn dispatch(&mut self, mut op: Op) {
        let now = Instant::now();
        op.attempts += 1;
        op.sent = now;
        op.first_tried.get_or_insert(now);
        let Some(region) = self.route(&op.key) else {
            if self.spec.pd_addr.is_some() && op.attempts < ROUTE_ATTEMPTS_MAX {
                // (PD hears of a split a heartbeat after its stores)
                return self.later(op, ROUTE_RETRY);
            }
            return self.decide(Outcome::Failed { kind: "key_not_in_region" });
        };
        let peer = self.leaders.get(&region.id).and_then(|s| region.peer_on(*s)).unwrap_or(region.first_voter());
        let target = (peer.store_id, peer.shard);
        op.store_id = target.0;
        let id = self.next_id;
        self.next_id += 1;
        let command = if op.put {
            ClientOp::Write(Command::Put { key: op.key.clone(), value: self.value.clone() })
        } else {
            ClientOp::Get { key: op.key.clone() }
        };
        let req = ClientRequest {
            id,
            cluster_id: self.spec.cluster_id,
            store_id: target.0,
            region: region.id,
            conf_ver: region.conf_ver,
            version: region.version,
            op: command,
        };
        let Ok(conn) = self.conn(target) else {
            return self.settle(op, Failure::NotSent);
        };
        // pending before the write: the answer may come before the write returns
        let mut pending = conn.pending.lock().expect("a reader panicked");
        if pending.closed {
            drop(pending);
            self.conns.remove(&target); // the store closed it: the next send connects again
            return self.settle(op, Failure::NotSent);
        }
        pending.ops.insert(id, op);
        drop(pending);
        encode_frame(&mut conn.out, FrameKind::ClientRequest, &req);
    }

    /// Carries out what the policy decides after `failure` of `op`'s last send.
    fn settle(&mut self, op: Op, failure: Failure) {
        let Some(region) = self.route(&op.key) else {
            return self.dispatch(op); // (which waits for PD to learn the key's region, or gives up)
        };
        let req = policy::Request {
            kind: if op.put { OpKind::PUT } else { OpKind::GET },
            attempts: op.attempts,
            elapsed: op.first_tried.map_or(Duration::ZERO, |t| t.elapsed()),
            region: &region,
            store_id: op.store_id,
            // (a layout from PD: asked again after splits the answers did not name)
            can_refresh: self.spec.pd_addr.is_some(),
        };
        let (route, wait) = match policy::decide(&req, failure) {
            Decision::Retry { route, wait } => (route, wait),
            Decision::Ambiguous => return self.decide(Outcome::Failed { kind: "ambiguous" }),
            Decision::GiveUp(GiveUp::Unavailable { .. }) => {
                return self.decide(Outcome::Failed { kind: "unavailable" })
            }
            Decision::GiveUp(GiveUp::Refused(e)) => {
                let kind = crate::kv::worker::kind(&KvError::Region(e));
                return self.decide(Outcome::Failed { kind });
            }
        };
        match route {
            Route::Same => {}
            Route::Leader { store_id } => {
                self.leaders.insert(region.id, store_id);
            }
            Route::NextPeer => self.rotate(&region, op.store_id),
            // (the same range: `by_start` still holds)
            Route::Membership { current } => {
                if let Some(m) = self.metas.iter_mut().find(|m| m.id == current.id && m.conf_ver < current.conf_ver) {
                    *m = *current;
                }
            }
            Route::Learn { regions, store_id } => self.learn(regions, store_id),
            Route::RefreshRange { refused } => {
                if let RegionError::EpochNotMatch { current, .. } = refused {
                    self.learn(vec![*current], op.store_id);
                }
                self.ask_pd(&op.key);
            }
            Route::RefreshRegion => self.ask_pd(&op.key),
            // (the stores of a run keep their addresses)
            Route::RefreshStores => {}
        }
        if wait.is_zero() {
            self.dispatch(op)
        } else {
            self.later(op, wait)
        }
    }

    /// Routes by `regions` from now on (a split, as the store that answered
    /// has it): each replaces the regions it overlaps unless one of them is
    /// newer; their leaders are taken to be on `store_id` until told otherwise.
    fn learn(&mut self, regions: Vec<RegionMeta>, store_id: u64) {
        for m in regions {
            if policy::is_stale(&m, &self.metas) {
                continue;
            }
            self.metas.retain(|o| !o.overlaps(&m.start_key, &m.end_key));
            self.leaders.insert(m.id, store_id);
            self.metas.push(m);
        }
        self.by_start = self.metas.iter().enumerate().map(|(i, m)| (m.start_key.clone(), i)).collect();
    }

    /// Writes what was sent since the last flush: one write per connection.
    /// A connection that fails is dropped; its unanswered operations come
    /// back from `poll` as lost (a put: ambiguous; a get: sent again).
    pub fn flush(&mut self) {
        let mut failed = vec![];
        for (target, conn) in self.conns.iter_mut() {
            if !conn.out.is_empty() {
                if conn.stream.write_all(&conn.out).is_err() {
                    failed.push(*target);
                }
                conn.out.clear();
            }
        }
        for target in failed {
            self.conns.remove(&target);
            for m in
                self.metas.iter().filter(|m| self.leaders.get(&m.id) == Some(&target.0)).cloned().collect::<Vec<_>>()
            {
                self.rotate(&m, target.0);
            }
        }
    }

    fn conn(&mut self, target: (u64, u16)) -> std::io::Result<&mut Conn> {
        if !self.conns.contains_key(&target) {
            let store = self.spec.store(target.0).expect("leaders are stores of the spec");
            let stream = TcpStream::connect_timeout(&store.client_addr_of(target.1), CONNECT_TIMEOUT)?;
            stream.set_nodelay(true)?;
            stream.set_write_timeout(Some(CONNECT_TIMEOUT * 5))?;
            let pending: Arc<Mutex<Pending>> = Arc::default();
            let reader = {
                let (stream, pending, tx) = (stream.try_clone()?, pending.clone(), self.tx.clone());
                std::thread::Builder::new().name("bench-reader".into()).spawn(move || read(stream, pending, tx))?
            };
            self.conns.insert(target, Conn { stream, out: vec![], pending, reader: Some(reader) });
        }
        Ok(self.conns.get_mut(&target).expect("just made"))
    }

    fn rotate(&mut self, region: &RegionMeta, from_store: u64) {
        self.leaders.insert(region.id, region.next_voter_after(from_store).store_id);
    }

    fn decide(&mut self, outcome: Outcome) {
        self.in_flight -= 1;
        self.ready.push(outcome);
    }

    /// Outcomes decided since the last call, waiting up to `timeout` for the first.
    pub fn poll(&mut self, timeout: Duration) -> Vec<Outcome> {
        let now = Instant::now();
        let mut resent = false;
        while let Some(entry) = self.delayed.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let op = entry.remove();
            self.dispatch(op);
            resent = true;
        }
        if resent {
            self.flush();
        }
        self.expire();
        let mut events = vec![];
        if self.ready.is_empty() {
            // (woken for the next delayed operation, or to check timeouts)
            let next_delayed = self.delayed.keys().next().map(|(at, _)| at.saturating_duration_since(now));
            let wait = timeout.min(next_delayed.unwrap_or(timeout)).min(TIMEOUT_CHECK_INTERVAL);
            match self.rx.recv_timeout(wait) {
                Ok(e) => events.push(e),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => unreachable!("the pipeline holds a sender"),
            }
        }
        events.extend(self.rx.try_iter());
        for e in events {
            match e {
                // (a put may have happened: the policy says ambiguous; a get goes again)
                Event::Lost(op) => self.settle(op, Failure::Lost),
                Event::Reply(op, Ok(reply)) => self.decide(Outcome::Done { op, reply }),
                Event::Reply(op, Err(err)) => self.settle(op, Failure::Refused(err)),
            }
        }
        std::mem::take(&mut self.ready)
    }
}

/// A connection's reading half: answers to their operations, and every
/// unanswered one reported lost when the connection ends.
fn read(mut stream: TcpStream, pending: Arc<Mutex<Pending>>, tx: Sender<Event>) {
    let mut decoder = FrameDecoder::new();
    let mut buf = vec![0u8; READ_BYTES];
    'conn: loop {
        loop {
            match decoder.next_frame() {
                Ok(Some(f)) if f.kind == FrameKind::ClientResponse => {
                    let Ok(resp) = decode::<ClientResponse>(&f.payload) else { break 'conn };
                    let op = pending.lock().expect("the pipeline panicked").ops.remove(&resp.id);
                    if let Some(op) = op {
                        if tx.send(Event::Reply(op, resp.result)).is_err() {
                            return;
                        }
                    }
                }
                Ok(None) => break,
                _ => break 'conn,
            }
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => decoder.push(&buf[..n]),
        }
    }
    let lost = {
        let mut p = pending.lock().expect("the pipeline panicked");
        p.closed = true;
        std::mem::take(&mut p.ops)
    };
    for op in lost.into_values() {
        let _ = tx.send(Event::Lost(op));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::client::protocol::encode_frame as encode_response;
    use engine::spec::{PeerSpec, RegionSpec, StoreSpec};

    /// A store that answers the first request busy, the second done, and never the third.
    fn fake_store() -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut decoder = FrameDecoder::new();
            let mut buf = vec![0u8; 4096];
            let mut seen = 0;
            loop {
                while let Ok(Some(f)) = decoder.next_frame() {
                    let req: ClientRequest = decode(&f.payload).unwrap();
                    seen += 1;
                    let result = match seen {
                        1 => Err(RegionError::ServerIsBusy { region: req.region, backoff_ms: 30 }),
                        2 => Ok(ClientReply::Done),
                        _ => continue, // never answered
                    };
                    let mut out = vec![];
                    encode_response(&mut out, FrameKind::ClientResponse, &ClientResponse { id: req.id, result });
                    s.write_all(&out).unwrap();
                }
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => decoder.push(&buf[..n]),
                }
            }
        });
        addr
    }

    use std::net::SocketAddr;

    /// A store that answers gets and, on a put, closes the connection with
    /// everything on it unanswered.
    fn store_closing_on_puts() -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut s) = conn else { return };
                let mut decoder = FrameDecoder::new();
                let mut buf = vec![0u8; 4096];
                'conn: loop {
                    while let Ok(Some(f)) = decoder.next_frame() {
                        let req: ClientRequest = decode(&f.payload).unwrap();
                        let result = match req.op {
                            ClientOp::Get { .. } => Ok(ClientReply::Value(None)),
                            _ => break 'conn,
                        };
                        let mut out = vec![];
                        encode_response(&mut out, FrameKind::ClientResponse, &ClientResponse { id: req.id, result });
                        s.write_all(&out).unwrap();
                    }
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => decoder.push(&buf[..n]),
                    }
                }
            }
        });
        addr
    }

    fn one_store_spec(addr: SocketAddr) -> ClusterSpec {
        ClusterSpec {
            cluster_id: 1,
            stores: vec![StoreSpec { id: 1, peer_addr: "127.0.0.1:1".parse().unwrap(), client_addr: addr, shards: 1 }],
            regions: vec![RegionSpec {
                id: 1,
                start_key: String::new(),
                end_key: String::new(),
                peers: vec![PeerSpec { peer_id: 1, store_id: 1, shard: 0 }],
            }],
            pd_regions: None,
            pd_addr: None,
        }
    }

    #[test]
    fn a_put_whose_connection_dies_unanswered_is_ambiguous_and_a_get_on_it_is_sent_again() {
        let mut pipe = Pipeline::new(Arc::new(one_store_spec(store_closing_on_puts())), b"v".to_vec());
        // one write: the put closes the connection before the get is answered
        pipe.send(Op::new(b"p".to_vec(), true, Instant::now()));
        pipe.send(Op::new(b"g".to_vec(), false, Instant::now()));
        pipe.flush();
        let mut outcomes = vec![];
        let deadline = Instant::now() + Duration::from_secs(10);
        while pipe.in_flight() > 0 {
            assert!(Instant::now() < deadline, "still in flight: {}", pipe.in_flight());
            outcomes.extend(pipe.poll(Duration::from_millis(50)));
        }
        let ambiguous = outcomes.iter().filter(|o| matches!(o, Outcome::Failed { kind: "ambiguous" })).count();
        let gets = outcomes.iter().filter_map(|o| match o {
            Outcome::Done { op, reply: ClientReply::Value(None) } if !op.put => Some(op.attempts),
            _ => None,
        });
        let gets: Vec<u32> = gets.collect();
        assert_eq!((outcomes.len(), ambiguous), (2, 1), "the put is ambiguous, never sent again");
        assert!(matches!(gets[..], [attempts] if attempts >= 2), "the get was sent again: {gets:?}");
    }

    #[test]
    fn a_busy_store_is_asked_again_after_its_backoff_and_a_silent_one_times_out() {
        let mut pipe = Pipeline::new(Arc::new(one_store_spec(fake_store())), b"v".to_vec());
        pipe.set_request_timeout(Duration::from_millis(300));
        let op = |key: &str| Op::new(key.into(), true, Instant::now());
        let t0 = Instant::now();
        pipe.send(op("a"));
        pipe.flush();
        let mut outcomes = vec![];
        let deadline = Instant::now() + Duration::from_secs(10);
        while outcomes.is_empty() {
            assert!(Instant::now() < deadline, "no outcome for the busy put");
            outcomes.extend(pipe.poll(Duration::from_millis(50)));
        }
        match &outcomes[0] {
            Outcome::Done { op, reply: ClientReply::Done } => assert_eq!(op.attempts, 2, "sent again once"),
            Outcome::Failed { kind } => panic!("the busy put was not retried to success: {kind}"),
            Outcome::Done { reply, .. } => panic!("the busy put answered {reply:?}"),
        }
        assert!(t0.elapsed() >= Duration::from_millis(30), "retried only after the store's backoff");

        let t1 = Instant::now();
        pipe.send(op("b"));
        pipe.flush();
        let mut outcomes = vec![];
        while outcomes.is_empty() {
            assert!(Instant::now() < deadline, "the unanswered put never timed out");
            outcomes.extend(pipe.poll(Duration::from_millis(50)));
        }
        assert!(matches!(outcomes[0], Outcome::Failed { kind: "timeout" }));
        assert!(t1.elapsed() >= Duration::from_millis(300));
        assert_eq!(pipe.in_flight(), 0);
    }
}
