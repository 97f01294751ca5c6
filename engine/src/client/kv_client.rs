//! The KV client library (blocking sockets; for tests, tools and the bench
//! driver). It routes each key to its region by a cache of the regions —
//! loaded from PD and refreshed from it when a region error says the cache
//! is stale (`RegionNotFound`, `KeyNotInRegion`, an `EpochNotMatch` after a
//! split, `StoreNotMatch`), or fixed by a cluster spec — sends to
//! the region's leader as it last learned it, follows `NotLeader` hints (without asking PD),
//! retries reads and definite failures with backoff, and never retries a
//! write whose fate is unknown: that comes back as `KvError::Ambiguous`.
//! `put_many` pipelines: every request goes out before any reply is read.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use transport::{FrameDecoder, FrameKind};

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
/// Attempts per request before the client gives up.
pub const ATTEMPTS_MAX: usize = 40;
/// Wait between attempts: doubles from the first to the last.
const BACKOFF_FIRST: Duration = Duration::from_millis(20);
const BACKOFF_LAST: Duration = Duration::from_millis(500);

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
        };
        client.refresh_stores()?;
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
        if let Some(cur) = self.metas.get(&meta.id) {
            let (ours, theirs) = (cur.epoch(), meta.epoch());
            if ours.conf_ver > theirs.conf_ver || ours.version > theirs.version {
                return; // the cache already knows better (PD hears of changes a heartbeat later)
            }
        }
        let overlaps = |m: &RegionMeta| {
            (meta.end_key.is_empty() || m.start_key < meta.end_key)
                && (m.end_key.is_empty() || meta.start_key < m.end_key)
        };
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
        let peer = cached.unwrap_or(&region.peers[0]);
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

    /// Moves to the next peer of a region (no leader known).
    fn rotate(&mut self, region: &RegionMeta) {
        let cur = self.target(region).0;
        let i = region.peers.iter().position(|p| p.store_id == cur).unwrap_or(0);
        self.leaders.insert(region.id, region.peers[(i + 1) % region.peers.len()].store_id);
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
        ClientRequest { id, store_id, region: region.id, conf_ver: region.conf_ver, version: region.version, op }
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
        let to_peer = region
            .peer_on(to_store)
            .ok_or(KvError::Region(RegionError::EpochNotMatch { current: Box::new(region.clone()) }))?
            .peer_id;
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

    /// Many operations, pipelined: every request of a round goes out before
    /// any reply is read; definite failures (not the leader, busy) go again in
    /// the next round, and so do reads that got no answer. A write that got no
    /// answer is ambiguous. Returns each operation's outcome, in order.
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

    /// `many`, each operation on the region given with it.
    fn many_in(&mut self, mut ops: Vec<(RegionMeta, ClientOp)>) -> Vec<Result<ClientReply, KvError>> {
        let mut results: Vec<Option<Result<ClientReply, KvError>>> = (0..ops.len()).map(|_| None).collect();
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
        // (a membership change unanswered may be applied: never blindly sent again)
        let is_write = |(_, op): &(RegionMeta, ClientOp)| matches!(op, ClientOp::Write(_) | ClientOp::ChangePeer(_));
        let mut backoff = BACKOFF_FIRST;
        let mut misaddressed = std::collections::BTreeSet::new();
        for _ in 0..ATTEMPTS_MAX {
            if todo.is_empty() {
                break;
            }
            // send the round: (item, target, request id)
            let mut sent: Vec<(usize, (u64, u16), u64)> = vec![];
            for &i in &todo {
                let region = self.current(&ops[i].0);
                let target = self.target(&region);
                let req = self.request(&region, target.0, ops[i].1.clone());
                match self.send(target, &req) {
                    Ok(()) => sent.push((i, target, req.id)),
                    Err(_) => {
                        self.conns.remove(&target);
                        self.rotate(&region);
                    }
                }
            }
            let mut again = vec![];
            let sent_ids: std::collections::BTreeSet<usize> = sent.iter().map(|s| s.0).collect();
            again.extend(todo.iter().copied().filter(|i| !sent_ids.contains(i)));
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
                            let region = self.current(&ops[i].0);
                            match resp.result {
                                Ok(reply) => results[i] = Some(Ok(reply)),
                                Err(RegionError::NotLeader { leader: Some(l), .. }) => {
                                    self.leaders.insert(region.id, l.store_id);
                                    again.push(i);
                                }
                                Err(RegionError::NotLeader { .. }) => {
                                    self.rotate(&region);
                                    again.push(i);
                                }
                                Err(RegionError::RegionNotFound { .. }) => {
                                    // that store no longer has it (moved, removed): ask PD, then others
                                    if self.refresh_region(Self::route_key(&ops[i].1), region.id).is_ok() {
                                        self.reroute(&mut ops[i]);
                                    }
                                    self.rotate(&self.current(&ops[i].0));
                                    again.push(i);
                                }
                                Err(RegionError::StoreNotMatch { .. }) => {
                                    // a store now at the address this client had for another: its
                                    // connection goes after this round (other answers are on it)
                                    misaddressed.insert(target);
                                    again.push(i);
                                }
                                Err(RegionError::ServerIsBusy { .. }) => again.push(i),
                                // a membership change since (the same range, other peers):
                                // route by it and send again — except a membership change,
                                // which was made against the old membership and is refused
                                Err(RegionError::EpochNotMatch { current })
                                    if current.id == region.id
                                        && current.version == region.version
                                        && current.conf_ver != region.conf_ver
                                        && !matches!(ops[i].1, ClientOp::ChangePeer(_)) =>
                                {
                                    // (an older one: a new leader that has not applied it yet)
                                    if current.conf_ver > region.conf_ver {
                                        if let Some(m) = self.metas.get_mut(&current.id) {
                                            *m = *current;
                                        }
                                    }
                                    again.push(i);
                                }
                                // the range changed (a split): the key may live in another region now
                                Err(e @ (RegionError::KeyNotInRegion { .. } | RegionError::EpochNotMatch { .. }))
                                    if self.pd.is_some() && ops[i].1.routes_by_key() =>
                                {
                                    if let RegionError::EpochNotMatch { current } = &e {
                                        self.learn_meta((**current).clone(), None);
                                    }
                                    match self.refresh_region(Some(ops[i].1.key()), region.id) {
                                        Ok(()) => {
                                            self.reroute(&mut ops[i]);
                                            again.push(i);
                                        }
                                        Err(_) => results[i] = Some(Err(KvError::Region(e))),
                                    }
                                }
                                Err(RegionError::Ambiguous { .. }) => {
                                    results[i] = Some(Err(KvError::Ambiguous("the store lost track of it".into())))
                                }
                                Err(e) => results[i] = Some(Err(KvError::Region(e))),
                            }
                        }
                        Err(e) => {
                            self.conns.remove(&target);
                            for (_, i) in std::mem::take(&mut waiting) {
                                if is_write(&ops[i]) {
                                    let why = format!("store {} did not answer: {e}", target.0);
                                    results[i] = Some(Err(KvError::Ambiguous(why)));
                                } else {
                                    let region = self.current(&ops[i].0);
                                    self.rotate(&region);
                                    again.push(i);
                                }
                            }
                        }
                    }
                }
            }
            if !misaddressed.is_empty() {
                for t in std::mem::take(&mut misaddressed) {
                    self.conns.remove(&t);
                }
                let _ = self.refresh_stores();
            }
            if !again.is_empty() {
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(BACKOFF_LAST);
            }
            again.sort_unstable();
            todo = again;
        }
        for i in todo {
            results[i] = Some(Err(KvError::Unavailable { attempts: ATTEMPTS_MAX, last: "still failing".into() }));
        }
        results.into_iter().map(|r| r.expect("every item has an outcome")).collect()
    }
}
