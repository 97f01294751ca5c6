//! One client of the kv bench: its own connections (a `KvClient`), its own
//! seeded choice of keys, its own histogram; the progress line reads what
//! the clients share.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::client::kv_client::{KvClient, KvError};
use engine::client::protocol::ClientOp;
use engine::kv::Command;
use engine::spec::ClusterSpec;
use transport::SeededRng;

use crate::kv::{KvBenchArgs, Shared};
use crate::latency::Latency;

/// What one client measured in the window.
#[derive(Default)]
pub struct Totals {
    pub ok: u64,
    pub puts: u64,
    pub gets: u64,
    /// Key and value bytes of the operations answered.
    pub bytes: u64,
    pub errors: BTreeMap<&'static str, u64>,
    pub latency: Latency,
}

impl Totals {
    pub fn add(&mut self, other: Totals) {
        self.ok += other.ok;
        self.puts += other.puts;
        self.gets += other.gets;
        self.bytes += other.bytes;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.latency.add(&other.latency);
    }
}

/// The bench's key `k`: 16 bytes, spread over the regions of a local
/// cluster (whose boundaries are 4-digit prefixes).
pub fn key(k: u64) -> Vec<u8> {
    format!("{:04}{:012}", (k * 7919) % 10_000, k).into_bytes()
}

/// An error's kind, for the report.
pub fn kind(e: &KvError) -> &'static str {
    use engine::RegionError as R;
    match e {
        KvError::Ambiguous(_) => "ambiguous",
        KvError::Unavailable { .. } => "unavailable",
        KvError::Region(r) => match r {
            R::NotLeader { .. } => "not_leader",
            R::StoreNotMatch { .. } => "store_not_match",
            R::RegionNotFound { .. } => "region_not_found",
            R::KeyNotInRegion { .. } => "key_not_in_region",
            R::EpochNotMatch { .. } => "epoch_not_match",
            R::TooLarge { .. } => "too_large",
            R::MemoryFull { .. } => "memory_full",
            R::ServerIsBusy { .. } => "server_is_busy",
            R::Ambiguous { .. } => "ambiguous",
            R::Refused { .. } => "refused",
        },
    }
}

pub fn run(client_no: usize, spec: Arc<ClusterSpec>, args: &KvBenchArgs, shared: &Shared, start: Instant) -> Totals {
    let mut client = KvClient::new(spec);
    let mut rng = SeededRng::new(0x6b76_0000 + client_no as u64);
    let mut totals = Totals::default();
    let value = vec![b'v'; args.value_bytes];
    let writes_per_million = (args.write_ratio * 1e6) as u32;
    // open loop: this client's share of the rate, staggered among the clients
    let per_client = args.rate.map(|r| r as f64 / args.clients as f64);
    let due = |n: u64| {
        let per = per_client.expect("open loop");
        start + Duration::from_secs_f64((client_no as f64 / args.clients as f64 + n as f64) / per)
    };
    let mut next = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let mut sent_at = vec![];
        let count = match per_client {
            None => args.depth,
            Some(_) => {
                if due(next) > now {
                    std::thread::sleep((due(next) - now).min(Duration::from_millis(50)));
                    continue;
                }
                let mut n = 0;
                while n < args.depth && due(next) <= now {
                    sent_at.push(due(next));
                    next += 1;
                    n += 1;
                }
                n
            }
        };
        let mut ops = Vec::with_capacity(count);
        let mut is_put = Vec::with_capacity(count);
        for _ in 0..count {
            let key = key(rng.between(0, args.keys - 1));
            let put = rng.chance(writes_per_million);
            is_put.push(put);
            ops.push(if put {
                ClientOp::Write(Command::Put { key, value: value.clone() })
            } else {
                ClientOp::Get { key }
            });
        }
        let bytes: Vec<u64> = ops
            .iter()
            .zip(&is_put)
            .map(|(op, put)| op.key().len() as u64 + if *put { value.len() as u64 } else { 0 })
            .collect();
        let results = client.many(ops);
        let done = Instant::now();
        let measuring = shared.measuring.load(Ordering::Relaxed);
        let mut second = Latency::default();
        let (mut ok, mut errors) = (0, 0);
        for (i, r) in results.iter().enumerate() {
            // closed loop: from the round's start; open loop: from the op's due time
            let from = sent_at.get(i).copied().unwrap_or(now);
            match r {
                Ok(reply) => {
                    ok += 1;
                    second.record(done - from);
                    if measuring {
                        totals.ok += 1;
                        totals.latency.record(done - from);
                        if is_put[i] {
                            totals.puts += 1;
                            totals.bytes += bytes[i];
                        } else {
                            totals.gets += 1;
                            let v = match reply {
                                engine::client::protocol::ClientReply::Value(v) => v.as_ref().map_or(0, |v| v.len()),
                                _ => 0,
                            };
                            totals.bytes += bytes[i] + v as u64;
                        }
                    }
                }
                Err(e) => {
                    errors += 1;
                    if measuring {
                        *totals.errors.entry(kind(e)).or_default() += 1;
                    }
                }
            }
        }
        shared.ok.fetch_add(ok, Ordering::Relaxed);
        shared.errors.fetch_add(errors, Ordering::Relaxed);
        shared.second.lock().expect("a client panicked").add(&second);
    }
    totals
}
