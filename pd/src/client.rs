//! PD's client: one blocking connection, reopened when it breaks. Stores
//! (their PD thread), the KV client and `ringraft ctl` use it. The cluster
//! id is learned from PD's first answer when the caller does not know it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use transport::{FrameDecoder, FrameKind};

use crate::meta::StoreStats;
use crate::protocol::{
    decode, encode_frame, ClusterView, OperatorView, PdError, PdRequest, PdResponse, RegionReport, RegionView,
    RequestFrame, ResponseFrame, StoreView, PD_MESSAGE_BYTES_MAX, SCAN_REGIONS_MAX,
};

/// Bytes read at a time.
const READ_BYTES: usize = 64 << 10;
/// Waits between attempts of `call_until`: doubles from the first to the last.
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_LAST: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum PdClientError {
    /// PD could not be reached or the connection broke: the request may or
    /// may not have been handled (every PD request is safe to repeat).
    #[error("PD at {addr}: {op}: {source}")]
    Io { op: &'static str, addr: SocketAddr, source: std::io::Error },
    /// PD answered with an error.
    #[error(transparent)]
    Pd(#[from] PdError),
    #[error("PD at {addr}: {what}")]
    Protocol { addr: SocketAddr, what: String },
    #[error("PD at {addr} answered {what} to a request for something else")]
    Unexpected { addr: SocketAddr, what: String },
}

impl PdClientError {
    /// Whether trying again later may succeed (PD down, restarting).
    pub fn is_transient(&self) -> bool {
        matches!(self, PdClientError::Io { .. } | PdClientError::Protocol { .. })
    }
}

/// PD's answer to a batch of region reports: one outcome per report, in
/// order, and the directives for the reporting leaders.
pub type HeartbeatAnswer = (Vec<Result<(), PdError>>, Vec<crate::protocol::Directive>);

pub struct PdClient {
    addr: SocketAddr,
    cluster_id: u64,
    conn: Option<(TcpStream, FrameDecoder)>,
    next_id: u64,
    timeout: Duration,
}

impl PdClient {
    /// A client of PD at `addr` (connects on first use). `cluster_id`: the
    /// cluster the caller belongs to, or 0 to learn it from PD.
    pub fn new(addr: SocketAddr, cluster_id: u64) -> PdClient {
        PdClient { addr, cluster_id, conn: None, next_id: 1, timeout: Duration::from_secs(5) }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The cluster id (0 until PD first answered, if it was not given).
    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
        self.conn = None;
    }

    fn io(&self, op: &'static str) -> impl FnOnce(std::io::Error) -> PdClientError {
        let addr = self.addr;
        move |source| PdClientError::Io { op, addr, source }
    }

    /// One request, one answer. A connection kept from earlier that turns
    /// out broken (PD restarted, or closed it as idle) is replaced once.
    pub fn call(&mut self, body: PdRequest) -> Result<PdResponse, PdClientError> {
        let reused = self.conn.is_some();
        let mut r = self.call_once(body.clone());
        if reused && matches!(r, Err(PdClientError::Io { .. })) {
            self.conn = None;
            r = self.call_once(body);
        }
        if matches!(r, Err(PdClientError::Io { .. } | PdClientError::Protocol { .. })) {
            self.conn = None;
        }
        r
    }

    /// Repeats `body` while PD cannot be reached, until `deadline`.
    pub fn call_until(&mut self, body: PdRequest, deadline: Instant) -> Result<PdResponse, PdClientError> {
        let mut wait = RETRY_FIRST;
        loop {
            match self.call(body.clone()) {
                Err(e) if e.is_transient() && Instant::now() + wait < deadline => {
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(RETRY_LAST);
                }
                r => return r,
            }
        }
    }

    fn call_once(&mut self, body: PdRequest) -> Result<PdResponse, PdClientError> {
        if self.cluster_id == 0 && !body.may_omit_cluster_id() {
            // PD answers a request without the id only when the id is what it asks for
            self.call_once(PdRequest::GetCluster)?;
        }
        if self.conn.is_none() {
            let stream = TcpStream::connect_timeout(&self.addr, self.timeout).map_err(self.io("connect"))?;
            stream.set_nodelay(true).map_err(self.io("set TCP_NODELAY"))?;
            stream.set_read_timeout(Some(self.timeout)).map_err(self.io("set read timeout"))?;
            stream.set_write_timeout(Some(self.timeout)).map_err(self.io("set write timeout"))?;
            self.conn = Some((stream, FrameDecoder::with_limit(PD_MESSAGE_BYTES_MAX)));
        }
        let id = self.next_id;
        self.next_id += 1;
        let mut out = vec![];
        encode_frame(&mut out, FrameKind::PdRequest, &RequestFrame { id, cluster_id: self.cluster_id, body });
        let addr = self.addr;
        let protocol = |what: String| PdClientError::Protocol { addr, what };
        let (stream, decoder) = self.conn.as_mut().expect("connected above");
        stream.write_all(&out).map_err(|source| PdClientError::Io { op: "send", addr, source })?;
        let mut buf = vec![0u8; READ_BYTES];
        let resp: ResponseFrame = loop {
            match decoder.next_frame().map_err(|e| protocol(e.to_string()))? {
                Some(f) if f.kind == FrameKind::PdResponse => {
                    let r: ResponseFrame = decode(&f.payload).map_err(|e| protocol(e.to_string()))?;
                    if r.id == id {
                        break r;
                    }
                    // an answer to an earlier request that timed out: skip it
                }
                Some(f) => return Err(protocol(format!("a {:?} frame", f.kind))),
                None => {
                    let n =
                        stream.read(&mut buf).map_err(|source| PdClientError::Io { op: "receive", addr, source })?;
                    if n == 0 {
                        let source = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "PD closed the connection");
                        return Err(PdClientError::Io { op: "receive", addr, source });
                    }
                    decoder.push(&buf[..n]);
                }
            }
        };
        if self.cluster_id == 0 {
            self.cluster_id = resp.cluster_id;
        }
        Ok(resp.result?)
    }

    fn unexpected(&self, r: PdResponse) -> PdClientError {
        PdClientError::Unexpected { addr: self.addr, what: format!("{r:?}") }
    }

    pub fn cluster(&mut self) -> Result<ClusterView, PdClientError> {
        match self.call(PdRequest::GetCluster)? {
            PdResponse::Cluster(v) => Ok(v),
            r => Err(self.unexpected(r)),
        }
    }

    /// Every store, and the version of the store set.
    pub fn stores(&mut self) -> Result<(Vec<StoreView>, u64), PdClientError> {
        match self.call(PdRequest::GetStores)? {
            PdResponse::Stores { stores, stores_version } => Ok((stores, stores_version)),
            r => Err(self.unexpected(r)),
        }
    }

    pub fn store(&mut self, store_id: u64) -> Result<StoreView, PdClientError> {
        match self.call(PdRequest::GetStore { store_id })? {
            PdResponse::Store(v) => Ok(v),
            r => Err(self.unexpected(r)),
        }
    }

    pub fn region_by_key(&mut self, key: &[u8]) -> Result<RegionView, PdClientError> {
        match self.call(PdRequest::GetRegionByKey { key: key.to_vec() })? {
            PdResponse::Region(v) => Ok(v),
            r => Err(self.unexpected(r)),
        }
    }

    pub fn region_by_id(&mut self, region_id: u64) -> Result<RegionView, PdClientError> {
        match self.call(PdRequest::GetRegionById { region_id })? {
            PdResponse::Region(v) => Ok(v),
            r => Err(self.unexpected(r)),
        }
    }

    /// The operators under way.
    pub fn operators(&mut self) -> Result<Vec<OperatorView>, PdClientError> {
        match self.call(PdRequest::GetOperators)? {
            PdResponse::Operators(v) => Ok(v),
            r => Err(self.unexpected(r)),
        }
    }

    /// Starts moving `region_id`'s replica on `from_store` to `to_store`; the operator.
    pub fn move_region(
        &mut self,
        region_id: u64,
        from_store: u64,
        to_store: u64,
    ) -> Result<Vec<OperatorView>, PdClientError> {
        match self.call(PdRequest::MoveRegion { region_id, from_store, to_store })? {
            PdResponse::Operators(v) => Ok(v),
            r => Err(self.unexpected(r)),
        }
    }

    /// Starts draining a store (its replicas move elsewhere, then it is removed).
    pub fn drain_store(&mut self, store_id: u64) -> Result<StoreView, PdClientError> {
        match self.call(PdRequest::DrainStore { store_id })? {
            PdResponse::Store(v) => Ok(v),
            r => Err(self.unexpected(r)),
        }
    }

    /// Every region, in key order (page by page).
    pub fn all_regions(&mut self) -> Result<Vec<RegionView>, PdClientError> {
        let mut all: Vec<RegionView> = vec![];
        let mut from = vec![];
        loop {
            let page = match self.call(PdRequest::ScanRegions { start_key: from.clone(), limit: SCAN_REGIONS_MAX })? {
                PdResponse::Regions(v) => v,
                r => return Err(self.unexpected(r)),
            };
            // a page ends where PD's count or byte bound did; the key space ends at an empty end key
            let last_end = page.last().map(|v| v.region.end_key.clone());
            all.extend(page);
            match last_end {
                Some(end) if !end.is_empty() => from = end,
                _ => return Ok(all),
            }
        }
    }

    pub fn alloc_ids(&mut self, count: u32) -> Result<u64, PdClientError> {
        match self.call(PdRequest::AllocIds { count })? {
            PdResponse::Ids { first, .. } => Ok(first),
            r => Err(self.unexpected(r)),
        }
    }

    pub fn store_heartbeat(&mut self, store_id: u64, stats: StoreStats) -> Result<u64, PdClientError> {
        match self.call(PdRequest::StoreHeartbeat { store_id, stats })? {
            PdResponse::Heartbeat { stores_version } => Ok(stores_version),
            r => Err(self.unexpected(r)),
        }
    }

    pub fn region_heartbeats(
        &mut self,
        store_id: u64,
        reports: Vec<RegionReport>,
    ) -> Result<HeartbeatAnswer, PdClientError> {
        match self.call(PdRequest::RegionHeartbeats { store_id, reports })? {
            PdResponse::RegionHeartbeats { outcomes, directives } => Ok((outcomes, directives)),
            r => Err(self.unexpected(r)),
        }
    }
}
