//! One client of the kv bench: its own pipelined connections, its own
//! seeded choice of keys, its own histogram; the progress line reads what
//! the clients share.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::client::kv_client::KvError;
use engine::client::protocol::ClientReply;
use engine::spec::ClusterSpec;
use transport::SeededRng;

use crate::kv::pipeline::{Op, Outcome, Pipeline};
use crate::kv::{Distribution, KvBenchArgs, Shared};
use crate::latency::Latency;

/// Longest a client waits for answers before it looks at the clock again.
const POLL_MAX: Duration = Duration::from_millis(10);
/// Shortest wait of an open-loop client between sends: one send (one write
/// per connection) per millisecond instead of one per operation, which on a
/// small host would take the stores' CPU.
const OPEN_LOOP_TICK: Duration = Duration::from_millis(1);

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

/// Which keys the bench uses: `count` of them, spread evenly over the
/// regions that get load (all, or the first K by key).
pub struct Keys {
    count: u64,
    /// Start keys of the loaded regions.
    starts: Vec<Vec<u8>>,
    zipf: Option<Zipf>,
}

/// Zipfian ranks in [0, n) with θ = 0.99 (Gray et al.'s method, as YCSB):
/// rank 0 the hottest; each draw O(1) after an O(n) setup.
pub struct Zipf {
    n: f64,
    theta: f64,
    zetan: f64,
    alpha: f64,
    eta: f64,
}

impl Zipf {
    pub const THETA: f64 = 0.99;

    pub fn new(n: u64) -> Zipf {
        let theta = Self::THETA;
        let zeta = |n: u64| (1..=n).map(|i| 1.0 / (i as f64).powf(theta)).sum::<f64>();
        let (zetan, zeta2) = (zeta(n), zeta(2.min(n)));
        let eta = (1.0 - (2.0 / n as f64).powf(1.0 - theta)) / (1.0 - zeta2 / zetan);
        Zipf { n: n as f64, theta, zetan, alpha: 1.0 / (1.0 - theta), eta }
    }

    pub fn sample(&self, rng: &mut SeededRng) -> u64 {
        let u = rng.next_u64() as f64 / u64::MAX as f64;
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1;
        }
        ((self.n * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64).min(self.n as u64 - 1)
    }
}

impl Keys {
    pub fn new(spec: &ClusterSpec, count: u64, active: Option<u64>, distribution: Distribution) -> Keys {
        let mut metas = spec.region_metas();
        metas.sort_by(|a, b| a.start_key.cmp(&b.start_key));
        let k = active.map_or(metas.len(), |k| (k as usize).min(metas.len()));
        let zipf = (distribution == Distribution::Zipfian).then(|| Zipf::new(count));
        Keys { count, starts: metas[..k].iter().map(|m| m.start_key.clone()).collect(), zipf }
    }

    /// Key `k` (of `count`): its region's start key, then `-` and the number
    /// (inside the region for any start key not followed by a smaller end).
    pub fn key(&self, k: u64) -> Vec<u8> {
        let mut key = self.starts[(k % self.starts.len() as u64) as usize].clone();
        key.extend_from_slice(format!("-{k:012}").as_bytes());
        key
    }

    pub fn random(&self, rng: &mut SeededRng) -> Vec<u8> {
        match &self.zipf {
            None => self.key(rng.between(0, self.count - 1)),
            Some(z) => self.key(z.sample(rng)),
        }
    }
}

/// An error's kind, for the report.
pub fn kind(e: &KvError) -> &'static str {
    use engine::RegionError as R;
    match e {
        KvError::Ambiguous(_) => "ambiguous",
        KvError::Unavailable { .. } => "unavailable",
        KvError::Pd(_) => "routing",
        KvError::Region(r) => match r {
            R::NotLeader { .. } => "not_leader",
            R::StoreNotMatch { .. } => "store_not_match",
            R::ClusterNotMatch { .. } => "cluster_not_match",
            R::DiskFull => "disk_full",
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

pub fn run(
    client_no: usize,
    spec: Arc<ClusterSpec>,
    args: &KvBenchArgs,
    keys: &Keys,
    shared: &Shared,
    start: Instant,
) -> Totals {
    let mut pipe = Pipeline::new(spec, vec![b'v'; args.value_bytes]);
    pipe.set_request_timeout(args.request_timeout);
    let mut rng = SeededRng::new(0x6b76_0000 + client_no as u64);
    let mut totals = Totals::default();
    let writes_per_million = (args.write_ratio * 1e6) as u32;
    // open loop: this client's share of the rate, staggered among the clients
    let per_client = args.rate.map(|r| r as f64 / args.clients as f64);
    let due = |n: u64| {
        let per = per_client.expect("open loop");
        start + Duration::from_secs_f64((client_no as f64 / args.clients as f64 + n as f64) / per)
    };
    let mut next = 0u64;
    let mut make = |from: Instant| {
        let key = keys.random(&mut rng);
        Op::new(key, rng.chance(writes_per_million), from)
    };
    while !shared.stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        // keep `depth` in flight (closed loop), or send what fell due (open
        // loop: if `depth` are out, the rest wait — counted from their due time)
        let wait = match per_client {
            None => {
                // (as many as are missing: one decided at once — a store that
                // cannot be reached — does not count as in flight)
                for _ in pipe.in_flight()..args.depth {
                    pipe.send(make(Instant::now()));
                }
                POLL_MAX
            }
            Some(_) => {
                while pipe.in_flight() < args.depth && due(next) <= now {
                    pipe.send(make(due(next)));
                    next += 1;
                }
                // (no sooner than OPEN_LOOP_TICK: ops due meanwhile go out together,
                // their latency still counted from when each fell due)
                due(next).saturating_duration_since(Instant::now()).clamp(OPEN_LOOP_TICK, POLL_MAX)
            }
        };
        pipe.flush();
        let outcomes = pipe.poll(wait);
        let done = Instant::now();
        pipe.flush(); // (what poll sent again)
        let measuring = shared.measuring.load(Ordering::Relaxed);
        let mut second = Latency::default();
        let (mut ok, mut errors) = (0, 0);
        for o in outcomes {
            match o {
                Outcome::Done { op, reply } => {
                    ok += 1;
                    second.record(done - op.from);
                    if measuring {
                        totals.ok += 1;
                        totals.latency.record(done - op.from);
                        let value = match reply {
                            ClientReply::Value(v) => v.map_or(0, |v| v.len()),
                            _ => 0,
                        };
                        if op.put {
                            totals.puts += 1;
                            totals.bytes += (op.key.len() + args.value_bytes) as u64;
                        } else {
                            totals.gets += 1;
                            totals.bytes += (op.key.len() + value) as u64;
                        }
                    }
                }
                Outcome::Failed { kind, .. } => {
                    errors += 1;
                    if measuring {
                        *totals.errors.entry(kind).or_default() += 1;
                    }
                }
            }
        }
        if ok + errors > 0 {
            shared.ok.fetch_add(ok, Ordering::Relaxed);
            shared.errors.fetch_add(errors, Ordering::Relaxed);
            shared.second.lock().expect("a client panicked").add(&second);
        }
    }
    totals
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_fall_inside_the_loaded_regions_and_only_those() {
        for regions in [1, 64, 1024] {
            let spec = ClusterSpec::local(1, 3, 1, regions, 20_000);
            let metas = spec.region_metas();
            for active in [None, Some(5)] {
                let keys = Keys::new(&spec, 10_000, active, Distribution::Uniform);
                let mut hit = std::collections::BTreeSet::new();
                for k in 0..10_000 {
                    let key = keys.key(k);
                    let m = metas.iter().find(|m| m.contains(&key)).expect("the spec covers every key");
                    assert!(m.start_key.is_empty() || key.starts_with(&m.start_key), "{key:?} in region {}", m.id);
                    hit.insert(m.id);
                }
                let want = active.map_or(regions, |a| a.min(regions)) as usize;
                assert_eq!(hit.len(), want, "{regions} regions, active {active:?}");
            }
        }
    }

    #[test]
    fn zipfian_ranks_are_skewed_toward_the_first_and_stay_in_range() {
        let z = Zipf::new(10_000);
        let mut rng = SeededRng::new(7);
        let mut counts = vec![0u32; 10_000];
        for _ in 0..200_000 {
            counts[z.sample(&mut rng) as usize] += 1;
        }
        // θ≈1: rank 0 takes about 1/H(n) ≈ 10% of draws, rank 1 about half of that
        assert!((15_000..25_000).contains(&counts[0]), "rank 0: {}", counts[0]);
        assert!(counts[1] > counts[10] && counts[10] > counts[1000], "{} {} {}", counts[1], counts[10], counts[1000]);
        assert!(counts.iter().filter(|c| **c > 0).count() > 5_000, "the tail is drawn too");
    }
}
