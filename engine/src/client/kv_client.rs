//! The KV client library (blocking sockets; for tests, tools and the bench
//! driver). It routes each key to its region by a cache of the regions —
//! loaded from PD and refreshed from it when a region error says the cache
//! is stale (`RegionNotFound`, `KeyNotInRegion`, an `EpochNotMatch` after a
//! split, `StoreNotMatch`), or fixed by a cluster spec — and sends to the
//! region's leader as it last learned it. What it does when a send fails is
//! not decided here but by the clients' shared policy
//! ([`crate::client::policy`]): follow a `NotLeader` hint at once (without
//! asking PD), fix the route and send again, wait and send again, or stop;
//! reads and definite failures are sent again, a write whose fate is unknown
//! never is: that comes back as `KvError::Ambiguous`. This file carries the
//! decisions out (sockets, sleeps, the route cache). `put_many` pipelines:
//! every request of a pass goes out before any reply is read.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use transport::{FrameDecoder, FrameKind};

use crate::client::policy::{self, Decision, Failure, GiveUp, OpKind, Route};
use crate::client::protocol::{
    decode, encode_frame, encoded_len, ClientOp, ClientReply, ClientRequest, ClientResponse, Rows,
    CLIENT_MESSAGE_BYTES_MAX, REQUEST_OVERHEAD_BYTES_MAX, SCAN_ROWS_MAX,
};
use crate::directory::{Directory, StoreAddrs};
use crate::error::RegionError;
use crate::kv::Command;
use crate::region::meta::{PeerChange, RegionMeta};
use crate::spec::ClusterSpec;

/// Bytes read from a connection at a time.
const READ_BYTES: usize = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// The write may or may not have been applied.
    #[error("the write's outcome is unknown ({0})")]
    Ambiguous(String),
    /// Definitely not applied, and retrying did not help.
    #[error(transparent)]
    Region(RegionError),
    #[error("gave up after {attempts} attempts: {last}")]
    Unavailable { attempts: usize, last: String },
    /// PD could not be asked, or answered with an error.
    #[error("routing: {0}")]
    Pd(#[from] pd::PdClientError),
}

impl KvError {
    /// Whether a write that ended in this error may have taken effect (its
    /// outcome is unknown); otherwise it certainly had none.
    pub fn may_have_applied(&self) -> bool {
        match self {
            KvError::Ambiguous(_) | KvError::Unavailable { .. } => true,
            KvError::Region(r) => !r.is_definite(),
            KvError::Pd(_) => false,
        }
    }
}

struct Conn {
    stream: TcpStream,
    decoder: FrameDecoder,
    /// Requests sent on it and not yet answered.
    outstanding: usize,
    /// Read buffer, reused across replies.
    buf: Vec<u8>,
}

impl Conn {
    /// Whether the store has not closed the connection. Asked only when no
    /// request is outstanding on it: then nothing should be readable, and
    /// anything that is (the end of the stream) means it is gone.
    fn is_open(&self) -> bool {
        if self.stream.set_nonblocking(true).is_err() {
            return false;
        }
        let mut byte = [0u8; 1];
        let open = matches!(self.stream.peek(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
        open && self.stream.set_nonblocking(false).is_ok() && self.decoder.buffered() == 0
    }
}

pub struct KvClient {
    /// Where to refresh routes from; None: the spec's are all there is.
    pd: Option<pd::PdClient>,
    stores: BTreeMap<u64, StoreAddrs>,
    /// The regions as this client knows them, by id.
    metas: BTreeMap<u64, RegionMeta>,
    leaders: BTreeMap<u64, u64>,
    conns: BTreeMap<(u64, u16), Conn>,
    next_id: u64,
    timeout: Duration,
    /// The cluster every request names (the spec's, or learned from PD).
    cluster_id: u64,
}

impl KvClient {
    /// A client routing by a fixed cluster spec.
    pub fn new(spec: Arc<ClusterSpec>) -> KvClient {
        let metas = spec.region_metas().into_iter().map(|m| (m.id, m)).collect();
        KvClient {
            pd: None,
            stores: Directory::from_spec(&spec).all(),
            metas,
            leaders: BTreeMap::new(),
            conns: BTreeMap::new(),
            next_id: 1,
            timeout: Duration::from_secs(5),
            cluster_id: spec.cluster_id,
        }
    }

    /// A client routing by PD at `pd_addr`: loads every region and store now.
    pub fn with_pd(pd_addr: std::net::SocketAddr) -> Result<KvClient, KvError> {
        let mut client = KvClient {
            pd: Some(pd::PdClient::new(pd_addr, 0)),
            stores: BTreeMap::new(),
            metas: BTreeMap::new(),
            leaders: BTreeMap::new(),
            conns: BTreeMap::new(),
            next_id: 1,
            timeout: Duration::from_secs(5),
            cluster_id: 0,
        };
        client.refresh_stores()?;
        // (PD named it in its first answer)
        client.cluster_id = client.pd.as_ref().expect("set above").cluster_id();
        let views = client.pd.as_mut().expect("set above").all_regions()?;
        for v in views {
            client.learn(v);
        }
        Ok(client)
    }

    /// Takes a region as PD has it into the cache, dropping what it replaces.
    fn learn(&mut self, view: pd::protocol::RegionView) {
        self.learn_meta(RegionMeta::from(&view.region), view.leader.map(|l| l.store_id));
    }

    /// Takes `meta` into the cache unless the cache knows a newer epoch of
    /// it; regions it overlaps are dropped (they are older: a split).
    fn learn_meta(&mut self, meta: RegionMeta, leader_store: Option<u64>) {
        if policy::is_stale(&meta, self.metas.values()) {
            return; // the cache already knows better (PD hears of changes a heartbeat later)
        }
        let overlaps = |m: &RegionMeta| m.overlaps(&meta.start_key, &meta.end_key);
        let stale: Vec<u64> = self.metas.values().filter(|m| m.id != meta.id && overlaps(m)).map(|m| m.id).collect();
        for id in stale {
            self.metas.remove(&id);
            self.leaders.remove(&id);
        }
        if let Some(store) = leader_store {
            self.leaders.insert(meta.id, store);
        }
        self.metas.insert(meta.id, meta);
    }

    /// Routes an operation again after the cache changed: by its key, or
    /// (an admin operation) by its region's id.
    fn reroute(&mut self, item: &mut (RegionMeta, ClientOp)) {
        let found = match Self::route_key(&item.1) {
            None => self.metas.get(&item.0.id),
            Some(key) => self.metas.values().find(|m| m.contains(key)),
        };
        if let Some(m) = found {
            item.0 = m.clone();
        }
    }

    fn refresh_stores(&mut self) -> Result<(), KvError> {
        let Some(pd) = self.pd.as_mut() else { return Ok(()) };
        let (stores, _) = pd.stores()?;
        self.stores = stores.iter().map(|v| (v.store.id, StoreAddrs::from(&v.store))).collect();
        Ok(())
    }

    /// Asks PD again for the region holding `key`, or (`None`) region `id`.
    /// Without PD: nothing to ask.
    fn refresh_region(&mut self, key: Option<&[u8]>, id: u64) -> Result<(), KvError> {
        let Some(pd) = self.pd.as_mut() else { return Ok(()) };
        let view = match key {
            Some(k) => pd.region_by_key(k)?,
            None => pd.region_by_id(id)?,
        };
        self.learn(view);
        Ok(())
    }

    /// What an operation is routed by: its key, or (`None`, admin) its region.
    fn route_key(op: &ClientOp) -> Option<&[u8]> {
        op.routes_by_key().then(|| op.key())
    }

    /// The region holding `key` (asking PD when the cache has none).
    pub fn region_of(&mut self, key: &[u8]) -> Result<RegionMeta, KvError> {
        if let Some(m) = self.metas.values().find(|m| m.contains(key)) {
            return Ok(m.clone());
        }
        self.refresh_region(Some(key), 0)?;
        match self.metas.values().find(|m| m.contains(key)) {
            Some(m) => Ok(m.clone()),
            None => Err(KvError::Unavailable { attempts: 1, last: format!("no region holds key {key:?}") }),
        }
    }

    /// Every region this client knows, in no particular order.
    pub fn known_regions(&self) -> impl Iterator<Item = &RegionMeta> {
        self.metas.values()
    }

    fn target(&self, region: &RegionMeta) -> (u64, u16) {
        let cached = self.leaders.get(&region.id).and_then(|s| region.peer_on(*s));
        let peer = cached.unwrap_or(region.first_voter());
        (peer.store_id, peer.shard)
    }

    /// Region `region_id` as this client knows it (from the spec, PD or since).
    fn known(&mut self, region_id: u64) -> Result<RegionMeta, KvError> {
        if !self.metas.contains_key(&region_id) {
            self.refresh_region(None, region_id)?;
        }
        self.metas.get(&region_id).cloned().ok_or(KvError::Region(RegionError::RegionNotFound { region: region_id }))
    }

    /// The region as this client knows it now (its membership may have
    /// changed since an operation was routed).
    fn current(&self, region: &RegionMeta) -> RegionMeta {
        self.metas.get(&region.id).unwrap_or(region).clone()
    }

    /// Moves to the peer of a region after the one on `from_store` (no leader known).
    fn rotate(&mut self, region: &RegionMeta, from_store: u64) {
        self.leaders.insert(region.id, region.next_voter_after(from_store).store_id);
    }

    fn conn(&mut self, target: (u64, u16)) -> std::io::Result<&mut Conn> {
        // a cached connection whose store closed it (it restarted): reconnect
        // before sending, or the request would be lost and look ambiguous
        if self.conns.get(&target).is_some_and(|c| c.outstanding == 0 && !c.is_open()) {
            self.conns.remove(&target);
        }
        if !self.conns.contains_key(&target) {
            if !self.stores.contains_key(&target.0) {
                self.refresh_stores().map_err(std::io::Error::other)?;
            }
            let store = self.stores.get(&target.0).ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::NotFound, format!("store {} is not known", target.0))
            })?;
            let addr = store.client_addr_of(target.1);
            let stream = match TcpStream::connect_timeout(&addr, self.timeout) {
                Ok(s) => s,
                // it may have moved (restarted elsewhere): PD knows its address now
                Err(e) if self.pd.is_some() => {
                    let _ = self.refresh_stores();
                    let moved = self.stores.get(&target.0).map(|s| s.client_addr_of(target.1)).filter(|a| *a != addr);
                    match moved {
                        Some(new) => TcpStream::connect_timeout(&new, self.timeout)?,
                        None => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            };
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(self.timeout))?;
            self.conns.insert(
                target,
                Conn { stream, decoder: FrameDecoder::new(), outstanding: 0, buf: vec![0; READ_BYTES] },
            );
        }
        Ok(self.conns.get_mut(&target).unwrap())
    }

    fn send(&mut self, target: (u64, u16), req: &ClientRequest) -> std::io::Result<()> {
        let mut frame = vec![];
        encode_frame(&mut frame, FrameKind::ClientRequest, req);
        let c = self.conn(target)?;
        c.outstanding += 1;
        c.stream.write_all(&frame)
    }

    fn receive(&mut self, target: (u64, u16)) -> std::io::Result<ClientResponse> {
        let c = self.conns.get_mut(&target).ok_or_else(|| std::io::Error::other("no connection"))?;
        loop {
            match c.decoder.next_frame() {
                Ok(Some(f)) if f.kind == FrameKind::ClientResponse => {
                    c.outstanding = c.outstanding.saturating_sub(1);
                    return decode(&f.payload).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e));
                }
                Ok(Some(f)) => return Err(std::io::Error::other(format!("unexpected {:?} frame", f.kind))),
                Ok(None) => {}
                Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            }
            let n = c.stream.read(&mut c.buf)?;
            if n == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the store closed the connection"));
            }
            c.decoder.push(&c.buf[..n]);
        }
    }

    fn request(&mut self, region: &RegionMeta, store_id: u64, op: ClientOp) -> ClientRequest {
        let id = self.next_id;
        self.next_id += 1;
        ClientRequest {
            id,
            cluster_id: self.cluster_id,
            store_id,
            region: region.id,
            conf_ver: region.conf_ver,
            version: region.version,
            op,
        }
    }

    /// One operation on the region holding its key, with retries as the module doc says.
    pub fn call(&mut self, op: ClientOp) -> Result<ClientReply, KvError> {
        let region = self.region_of(op.key())?;
        self.call_in(region, op)
    }

    /// One operation on `region`.
    fn call_in(&mut self, region: RegionMeta, op: ClientOp) -> Result<ClientReply, KvError> {
        self.many_in(vec![(region, op)]).pop().expect("one operation, one outcome")
    }

    pub fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        match self.call(ClientOp::Get { key: key.to_vec() })? {
            ClientReply::Value(v) => Ok(v),
            other => panic!("a get answered {other:?}"),
        }
    }

    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), KvError> {
        self.call(ClientOp::Write(Command::Put { key: key.to_vec(), value: value.to_vec() })).map(|_| ())
    }

    pub fn delete(&mut self, key: &[u8]) -> Result<(), KvError> {
        self.call(ClientOp::Write(Command::Delete { key: key.to_vec() })).map(|_| ())
    }

    /// Sets `key` to `new` iff it holds `expect`; whether it did.
    pub fn cas(&mut self, key: &[u8], expect: Option<&[u8]>, new: Option<&[u8]>) -> Result<bool, KvError> {
        let op = ClientOp::Write(Command::Cas {
            key: key.to_vec(),
            expect: expect.map(<[u8]>::to_vec),
            new: new.map(<[u8]>::to_vec),
        });
        match self.call(op)? {
            ClientReply::Cas(ok) => Ok(ok),
            other => panic!("a cas answered {other:?}"),
        }
    }

    /// Rows of [start, end) (end empty: to the end of the key space), at most
    /// `limit`, region after region; each region's part is linearizable.
    pub fn scan(&mut self, start: &[u8], end: &[u8], limit: usize) -> Result<Rows, KvError> {
        let mut rows = vec![];
        let mut from = start.to_vec();
        loop {
            let region = self.region_of(&from)?;
            let want = (limit - rows.len()).min(u32::MAX as usize) as u32;
            let op = ClientOp::Scan { start: from.clone(), end: end.to_vec(), limit: want };
            let got = match self.call_in(region.clone(), op)? {
                ClientReply::Rows(r) => r,
                other => panic!("a scan answered {other:?}"),
            };
            // the region that answered: the one routed by, unless an error on the
            // way taught the cache another (a split): then the one holding `from` now
            let region = self.metas.values().find(|m| m.contains(&from)).cloned().unwrap_or(region);
            // a full answer may have left rows in this region: go on right after the last
            let full = !got.is_empty() && got.len() >= (want as usize).min(SCAN_ROWS_MAX);
            let next_in_region = got.last().map(|(k, _)| [k.as_slice(), &[0]].concat());
            rows.extend(got);
            if full && rows.len() < limit {
                from = next_in_region.expect("a full answer has rows");
                continue;
            }
            let last_region = region.end_key.is_empty() || (!end.is_empty() && region.end_key.as_slice() >= end);
            if rows.len() >= limit || last_region {
                rows.truncate(limit);
                return Ok(rows);
            }
            from = region.end_key.clone();
        }
    }

    /// Asks region `region_id`'s leader to hand leadership to its peer on
    /// `to_store` (best effort: returns once the leader started the transfer).
    pub fn transfer_leader(&mut self, region_id: u64, to_store: u64) -> Result<(), KvError> {
        let region = self.known(region_id)?;
        let to_peer = region.peer_on(to_store).ok_or(KvError::Region(RegionError::epoch_not_match(&region)))?.peer_id;
        self.call_in(region, ClientOp::TransferLeader { to_peer }).map(|_| ())
    }

    /// Region `region_id` as its leader has it now (this client's view of
    /// it follows: an epoch it routed by that has changed is refreshed).
    pub fn region(&mut self, region_id: u64) -> Result<RegionMeta, KvError> {
        let region = self.known(region_id)?;
        match self.call_in(region, ClientOp::DescribeRegion)? {
            ClientReply::Region(meta) => {
                if let Some(m) = self.metas.get_mut(&region_id).filter(|m| m.version == meta.version) {
                    *m = (*meta).clone();
                }
                Ok(*meta)
            }
            other => {
                Err(KvError::Unavailable { attempts: 1, last: format!("a region description answered with {other:?}") })
            }
        }
    }

    /// Adds or removes a peer of region `region_id` (admin). Answered once
    /// the change is applied on the leader, which checks it against the
    /// region as it is then.
    pub fn change_peer(&mut self, region_id: u64, change: PeerChange) -> Result<(), KvError> {
        let region = self.region(region_id)?;
        self.call_in(region, ClientOp::ChangePeer(change))?;
        // (the next request routed by the old epoch refreshes it)
        Ok(())
    }

    /// Splits region `region_id` at `split.split_key` with the ids PD
    /// allocated (admin): answered once applied on the leader, with the
    /// region as it is now and the new one (both are learned here).
    pub fn split(
        &mut self,
        region_id: u64,
        split: crate::shard::SplitRequest,
    ) -> Result<(RegionMeta, RegionMeta), KvError> {
        let region = self.region(region_id)?;
        // (sent under the epoch the leader has now, not a stale cached one)
        self.learn_meta(region.clone(), None);
        match self.call_in(region, ClientOp::Split(split))? {
            ClientReply::Split(halves) => {
                let (left, right) = *halves;
                self.learn_meta(left.clone(), None);
                self.learn_meta(right.clone(), None);
                Ok((left, right))
            }
            other => Err(KvError::Unavailable { attempts: 1, last: format!("a split answered with {other:?}") }),
        }
    }

    /// Puts many keys, pipelined (see `many`). Returns each put's outcome, in order.
    pub fn put_many(&mut self, items: &[(Vec<u8>, Vec<u8>)]) -> Vec<Result<(), KvError>> {
        let ops =
            items.iter().map(|(k, v)| ClientOp::Write(Command::Put { key: k.clone(), value: v.clone() })).collect();
        self.many(ops).into_iter().map(|r| r.map(|_| ())).collect()
    }

    /// Reads many keys, pipelined (see `many`); each read is linearizable.
    pub fn get_many(&mut self, keys: &[Vec<u8>]) -> Vec<Result<Option<Vec<u8>>, KvError>> {
        let ops = keys.iter().map(|k| ClientOp::Get { key: k.clone() }).collect();
        self.many(ops)
            .into_iter()
            .map(|r| {
                r.map(|reply| match reply {
                    ClientReply::Value(v) => v,
                    other => panic!("a get answered {other:?}"),
                })
            })
            .collect()
    }

    /// Many operations, pipelined: every request of a pass goes out before
    /// any reply is read; definite failures (not the leader, busy) and reads
    /// that got no answer go again in a later pass, when the policy says. A
    /// write that got no answer is ambiguous. Returns each operation's
    /// outcome, in order.
    pub fn many(&mut self, ops: Vec<ClientOp>) -> Vec<Result<ClientReply, KvError>> {
        let mut routed = Vec::with_capacity(ops.len());
        let mut unroutable = BTreeMap::new();
        for (i, op) in ops.into_iter().enumerate() {
            match self.region_of(op.key()) {
                Ok(region) => routed.push((region, op)),
                Err(e) => {
                    unroutable.insert(i, e);
                }
            }
        }
        if unroutable.is_empty() {
            return self.many_in(routed);
        }
        let mut done = self.many_in(routed).into_iter();
        let n = done.len() + unroutable.len();
        (0..n).map(|i| unroutable.remove(&i).map_or_else(|| done.next().expect("one per routed op"), Err)).collect()
    }

    /// `many`, each operation on the region given with it. Each operation
    /// goes again when the policy says and not before; a pass sends every
    /// operation that is due, then reads every answer of the pass.
    fn many_in(&mut self, mut ops: Vec<(RegionMeta, ClientOp)>) -> Vec<Result<ClientReply, KvError>> {
        let mut results: Vec<Option<Result<ClientReply, KvError>>> = (0..ops.len()).map(|_| None).collect();
        let start = Instant::now();
        let mut tries = vec![Tries { attempts: 0, first: None, due: start }; ops.len()];
        let mut todo: Vec<usize> = vec![];
        for (i, (region, op)) in ops.iter().enumerate() {
            // never sent if it cannot fit a frame: definitely not applied
            let bytes = encoded_len(op) + REQUEST_OVERHEAD_BYTES_MAX;
            if bytes > CLIENT_MESSAGE_BYTES_MAX {
                let max = CLIENT_MESSAGE_BYTES_MAX;
                results[i] = Some(Err(KvError::Region(RegionError::TooLarge { region: region.id, bytes, max })));
            } else {
                todo.push(i);
            }
        }
        let mut misaddressed = BTreeSet::new();
        // each pass sends at least one operation or sleeps until one is due,
        // and the policy allows an operation ATTEMPTS_MAX sends: this ends
        while !todo.is_empty() {
            let now = Instant::now();
            let (ready, mut again): (Vec<usize>, Vec<usize>) = todo.iter().partition(|&&i| tries[i].due <= now);
            if ready.is_empty() {
                let next = again.iter().map(|&i| tries[i].due).min().expect("something is still to do");
                std::thread::sleep(next.saturating_duration_since(now));
                continue;
            }
            // send the pass: (item, target, request id)
            let mut sent: Vec<(usize, (u64, u16), u64)> = vec![];
            for i in ready {
                tries[i].attempts += 1;
                tries[i].first.get_or_insert(now);
                let region = self.current(&ops[i].0);
                let target = self.target(&region);
                let req = self.request(&region, target.0, ops[i].1.clone());
                match self.send(target, &req) {
                    Ok(()) => sent.push((i, target, req.id)),
                    Err(_) => {
                        self.conns.remove(&target);
                        let failure = Failure::NotSent;
                        match self.follow(&mut ops[i], &mut tries[i], target, failure, "", &mut misaddressed) {
                            Some(outcome) => results[i] = Some(outcome),
                            None => again.push(i),
                        }
                    }
                }
            }
            // replies come back per connection in any order
            let mut by_target: BTreeMap<(u64, u16), BTreeMap<u64, usize>> = BTreeMap::new();
            for (i, t, id) in sent {
                by_target.entry(t).or_default().insert(id, i);
            }
            for (target, mut waiting) in by_target {
                while !waiting.is_empty() {
                    match self.receive(target) {
                        Ok(resp) => {
                            let Some(i) = waiting.remove(&resp.id) else { continue };
                            let failure = match resp.result {
                                Ok(reply) => {
                                    results[i] = Some(Ok(reply));
                                    continue;
                                }
                                Err(e) => Failure::Refused(e),
                            };
                            match self.follow(&mut ops[i], &mut tries[i], target, failure, "", &mut misaddressed) {
                                Some(outcome) => results[i] = Some(outcome),
                                None => again.push(i),
                            }
                        }
                        Err(e) => {
                            self.conns.remove(&target);
                            let why = format!("store {} did not answer: {e}", target.0);
                            for (_, i) in std::mem::take(&mut waiting) {
                                let failure = Failure::Lost;
                                match self.follow(&mut ops[i], &mut tries[i], target, failure, &why, &mut misaddressed)
                                {
                                    Some(outcome) => results[i] = Some(outcome),
                                    None => again.push(i),
                                }
                            }
                        }
                    }
                }
            }
            if !misaddressed.is_empty() {
                // (after the pass: other answers were still to come on those connections)
                for t in std::mem::take(&mut misaddressed) {
                    self.conns.remove(&t);
                }
                let _ = self.refresh_stores();
            }
            again.sort_unstable();
            todo = again;
        }
        results.into_iter().map(|r| r.expect("every item has an outcome")).collect()
    }

    /// Carries out what the policy decides after `failure` of a send of
    /// `item` to `target`: its outcome, or `None` and `tries.due` set when
    /// it goes again. `lost_why`: what broke, when the connection did.
    fn follow(
        &mut self,
        item: &mut (RegionMeta, ClientOp),
        tries: &mut Tries,
        target: (u64, u16),
        failure: Failure,
        lost_why: &str,
        misaddressed: &mut BTreeSet<(u64, u16)>,
    ) -> Option<Result<ClientReply, KvError>> {
        let lost = matches!(failure, Failure::Lost);
        let region = self.current(&item.0);
        let req = policy::Request {
            kind: OpKind::of(&item.1),
            attempts: tries.attempts,
            elapsed: tries.first.map_or(Duration::ZERO, |f| f.elapsed()),
            region: &region,
            store_id: target.0,
            can_refresh: self.pd.is_some(),
        };
        let (route, wait) = match policy::decide(&req, failure) {
            Decision::Retry { route, wait } => (route, wait),
            Decision::Ambiguous => {
                let why = if lost { lost_why.to_string() } else { "the store lost track of it".to_string() };
                return Some(Err(KvError::Ambiguous(why)));
            }
            Decision::GiveUp(GiveUp::Refused(e)) => return Some(Err(KvError::Region(e))),
            Decision::GiveUp(GiveUp::Unavailable { attempts, last }) => {
                return Some(Err(KvError::Unavailable { attempts: attempts as usize, last }))
            }
        };
        match route {
            Route::Same => {}
            Route::Leader { store_id } => {
                self.leaders.insert(region.id, store_id);
            }
            Route::NextPeer => self.rotate(&region, target.0),
            Route::Membership { current } => {
                if let Some(m) = self.metas.get_mut(&current.id).filter(|m| m.conf_ver < current.conf_ver) {
                    *m = *current;
                }
            }
            Route::RefreshRegion => {
                if self.refresh_region(Self::route_key(&item.1), region.id).is_ok() {
                    self.reroute(item);
                }
                // (unless PD named another leader: not the store that just said it has no such region)
                let region = self.current(&item.0);
                if self.target(&region).0 == target.0 {
                    self.rotate(&region, target.0);
                }
            }
            Route::Learn { regions, store_id } => {
                // (the split's halves start led where the answering store leads)
                for m in regions {
                    self.learn_meta(m, Some(store_id));
                }
                let key = item.1.key();
                if !self.metas.values().any(|m| m.contains(key)) && self.refresh_region(Some(key), region.id).is_err() {
                    return Some(Err(KvError::Region(RegionError::epoch_not_match(&region))));
                }
                self.reroute(item);
            }
            Route::RefreshRange { refused } => {
                if let RegionError::EpochNotMatch { current, .. } = &refused {
                    self.learn_meta((**current).clone(), None);
                }
                if self.refresh_region(Some(item.1.key()), region.id).is_err() {
                    return Some(Err(KvError::Region(refused)));
                }
                self.reroute(item);
            }
            // its connection goes after the pass (other answers are on it)
            Route::RefreshStores => {
                misaddressed.insert(target);
            }
        }
        tries.due = Instant::now() + wait;
        None
    }
}

/// One operation's sends so far, when it was first tried, and when it may go again.
#[derive(Clone, Copy)]
struct Tries {
    attempts: u32,
    first: Option<Instant>,
    due: Instant,
}

#[cfg(test)]
mod tests {
    use std::net::{SocketAddr, TcpListener};
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::spec::{PeerSpec, RegionSpec, StoreSpec};

    /// A one-store cluster whose store answers request `n` (counted from 1
    /// over every connection) as `script` says; `None`: it closes the
    /// connection unanswered. Returns the spec and the count of requests seen.
    fn scripted_store(
        script: impl Fn(usize, &ClientRequest) -> Option<Result<ClientReply, RegionError>> + Send + 'static,
    ) -> (Arc<ClusterSpec>, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let seen = Arc::new(AtomicUsize::new(0));
        let count = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut s) = conn else { return };
                let mut decoder = FrameDecoder::new();
                let mut buf = vec![0u8; 4096];
                'conn: loop {
                    while let Ok(Some(f)) = decoder.next_frame() {
                        let req: ClientRequest = decode(&f.payload).unwrap();
                        let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                        let Some(result) = script(n, &req) else { break 'conn };
                        let mut out = vec![];
                        encode_frame(&mut out, FrameKind::ClientResponse, &ClientResponse { id: req.id, result });
                        s.write_all(&out).unwrap();
                    }
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => decoder.push(&buf[..n]),
                    }
                }
            }
        });
        let spec = ClusterSpec {
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
        };
        (Arc::new(spec), seen)
    }

    #[test]
    fn a_busy_store_is_asked_again_after_its_backoff_and_a_write_lost_with_its_connection_is_ambiguous() {
        let (spec, seen) = scripted_store(|n, req| match n {
            1 => Some(Err(RegionError::ServerIsBusy { region: req.region, backoff_ms: 20 })),
            2 => Some(Ok(ClientReply::Done)),
            3 => None, // the put of "b": the connection dies with it unanswered
            4 => None, // the get of "c", the first time
            _ => Some(Ok(ClientReply::Value(Some(b"x".to_vec())))),
        });
        let mut client = KvClient::new(spec);
        let t0 = std::time::Instant::now();
        client.put(b"a", b"1").expect("the busy store takes it the second time");
        assert!(t0.elapsed() >= Duration::from_millis(20), "sent again only after the store's backoff");
        assert!(matches!(client.put(b"b", b"2"), Err(KvError::Ambiguous(_))));
        assert_eq!(client.get(b"c").expect("a read is sent again"), Some(b"x".to_vec()));
        assert_eq!(seen.load(Ordering::SeqCst), 5, "the ambiguous put was never sent again");
    }

    #[test]
    fn a_refusal_sending_again_cannot_change_comes_back_at_once() {
        let (spec, seen) =
            scripted_store(|_, req| Some(Err(RegionError::Refused { region: req.region, reason: "no".into() })));
        let mut client = KvClient::new(spec);
        assert!(matches!(client.put(b"a", b"1"), Err(KvError::Region(RegionError::Refused { .. }))));
        assert_eq!(seen.load(Ordering::SeqCst), 1);
    }
}
