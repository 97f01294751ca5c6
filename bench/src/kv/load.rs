//! `ringraft ctl load`: a simple write load through the KV library client
//! (`engine::client::kv_client`, with its retries and ambiguity rules):
//! THREADS clients, each sending BATCH puts at a time, pipelined and each
//! acknowledged on its own. Closed loop by default (a client sends its next
//! batch when the last is answered; the figure is the batch's round trip),
//! or open loop with `--rate` (every put due at its own time, its latency
//! counted from then, so a stall is not hidden).
//!
//! `ringraft bench kv` is the full benchmark (its own pipelined client, gets,
//! warmup, the stores' figures); this load is what the first engine tables
//! of docs/benchmarks.md and `scripts/bench-engine.sh` measure, so its one
//! output line keeps the layout they quote. It lives in the bench crate so
//! that its percentiles come from the bench's histograms (`crate::latency`)
//! like every other figure.

use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::client::kv_client::KvClient;

use crate::latency::Latency;
use crate::units::{check_duration_range, check_range, parse_duration};

/// Most client threads.
pub const THREADS_MAX: usize = 256;
/// Most puts a client sends at a time.
pub const BATCH_MAX: usize = 10_000;
/// Most puts per second asked of an open loop.
pub const RATE_MAX: u64 = 10_000_000;
/// Shortest and longest load.
pub const DURATION_MIN: Duration = Duration::from_millis(100);
pub const DURATION_MAX: Duration = Duration::from_secs(3600);

#[derive(clap::Args, Clone, Debug)]
pub struct LoadArgs {
    /// Client threads, each with its own KV client.
    #[arg(long, default_value_t = 4)]
    pub threads: usize,
    /// Puts a client sends at a time (open loop: at most this many of those due).
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    #[arg(long, default_value_t = 128)]
    pub value_bytes: usize,
    /// How long the load runs ("10s", "500ms", "2m").
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Puts per second in all (open loop); none: as fast as answered.
    #[arg(long)]
    pub rate: Option<u64>,
}

impl LoadArgs {
    pub fn check(&self) -> Result<(), String> {
        check_range("threads", self.threads, 1, THREADS_MAX)?;
        check_range("batch", self.batch, 1, BATCH_MAX)?;
        if let Some(rate) = self.rate {
            if !(1..=RATE_MAX).contains(&rate) {
                return Err(format!("--rate {rate} is out of range 1..={RATE_MAX}"));
            }
        }
        check_duration_range("duration", self.duration, DURATION_MIN, DURATION_MAX)?;
        Ok(())
    }
}

/// Runs the load and prints its line. `client` makes each thread's client,
/// all before the load starts: a cluster that cannot be reached is an
/// error, not a run of zeros.
pub fn run(args: &LoadArgs, client: impl Fn() -> Result<KvClient, String>) -> Result<(), String> {
    args.check()?;
    let clients = (0..args.threads).map(|_| client()).collect::<Result<Vec<_>, _>>()?;
    match args.rate {
        None => closed_loop(args, clients),
        Some(rate) => open_loop(args, clients, rate),
    }
}

/// Each client sends a batch, waits for all its answers, sends the next:
/// writes/s, and the batch round trip's percentiles.
fn closed_loop(args: &LoadArgs, clients: Vec<KvClient>) -> Result<(), String> {
    let (batch, value_bytes, duration) = (args.batch, args.value_bytes, args.duration);
    let (ok, failed, rounds, start) = run_clients(clients, move |t, mut client, start| {
        let mut rounds = Latency::default();
        let (mut ok, mut failed, mut n) = (0u64, 0u64, 0u64);
        while start.elapsed() < duration {
            let items: Vec<(Vec<u8>, Vec<u8>)> = (0..batch)
                .map(|_| {
                    n += 1;
                    (key(t, n), vec![b'v'; value_bytes])
                })
                .collect();
            let t0 = Instant::now();
            for r in client.put_many(&items) {
                if r.is_ok() {
                    ok += 1
                } else {
                    failed += 1
                }
            }
            rounds.record(t0.elapsed());
        }
        (ok, failed, rounds)
    })?;
    let secs = start.elapsed().as_secs_f64();
    let s = rounds.summary();
    println!(
        "{ok} writes acknowledged, {failed} failed, in {secs:.1}s: {:.0} writes/s; a round of {batch} pipelined puts: p50 {} us, p99 {} us ({} clients)",
        ok as f64 / secs,
        s.p50_us,
        s.p99_us,
        args.threads
    );
    Ok(())
}

/// Open loop: every put is due at its own time (RATE/s in all, spread over
/// the clients) and its latency counts from then (coordinated omission
/// corrected): what fell due during a stall goes out at once, up to BATCH
/// per client.
fn open_loop(args: &LoadArgs, clients: Vec<KvClient>, rate: u64) -> Result<(), String> {
    let (threads, batch, value_bytes, duration) = (args.threads, args.batch, args.value_bytes, args.duration);
    let per_thread = rate as f64 / threads as f64;
    let (ok, failed, latency, start) = run_clients(clients, move |t, mut client, start| {
        let mut latency = Latency::default();
        let (mut ok, mut failed, mut next) = (0u64, 0u64, 0u64);
        // put n of this client is due at start + offset + n / per_thread
        let offset = t as f64 / rate as f64;
        let due = |n: u64| start + Duration::from_secs_f64(offset + n as f64 / per_thread);
        while due(next) < start + duration {
            let now = Instant::now();
            if due(next) > now {
                std::thread::sleep(due(next) - now);
                continue;
            }
            let mut items = vec![];
            let mut dues = vec![];
            while items.len() < batch && due(next) <= now && due(next) < start + duration {
                items.push((key(t, next), vec![b'v'; value_bytes]));
                dues.push(due(next));
                next += 1;
            }
            let results = client.put_many(&items);
            let done = Instant::now();
            for (r, d) in results.into_iter().zip(dues) {
                match r {
                    Ok(()) => {
                        ok += 1;
                        latency.record(done - d);
                    }
                    Err(_) => failed += 1,
                }
            }
        }
        (ok, failed, latency)
    })?;
    let secs = start.elapsed().as_secs_f64();
    let s = latency.summary();
    println!(
        "open loop at {rate} puts/s: {ok} acknowledged, {failed} failed, in {secs:.1}s ({:.0}/s); per put from its due time: p50 {} us, p99 {} us, p99.9 {} us, max {} us ({threads} clients)",
        ok as f64 / secs,
        s.p50_us,
        s.p99_us,
        s.p999_us,
        s.max_us
    );
    Ok(())
}

/// The key of put `n` of client `t` (spread over the regions of a spec made
/// by `ringraft spec`, whose split keys are 4-digit prefixes).
fn key(t: usize, n: u64) -> Vec<u8> {
    format!("{:04}-{t}-{n}", (n * 7919 + t as u64 * 104_729) % 10_000).into_bytes()
}

/// Runs `work(t, client, start)` on a thread per client, all from one
/// start; returns the acknowledged and failed puts and the latencies, summed
/// over the threads, and the start.
fn run_clients(
    clients: Vec<KvClient>,
    work: impl Fn(usize, KvClient, Instant) -> (u64, u64, Latency) + Send + Sync + 'static,
) -> Result<(u64, u64, Latency, Instant), String> {
    let work = Arc::new(work);
    let start = Instant::now();
    let workers: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(t, client)| {
            let work = work.clone();
            std::thread::spawn(move || work(t, client, start))
        })
        .collect();
    let (mut ok, mut failed, mut latency) = (0, 0, Latency::default());
    for w in workers {
        let (o, f, l) = w.join().map_err(|_| "a load thread panicked".to_string())?;
        ok += o;
        failed += f;
        latency.add(&l);
    }
    Ok((ok, failed, latency, start))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> LoadArgs {
        LoadArgs { threads: 8, batch: 256, value_bytes: 128, duration: Duration::from_secs(10), rate: None }
    }

    #[test]
    fn limits_are_checked_before_any_client_is_made() {
        assert_eq!(args().check(), Ok(()));
        let refused = |a: LoadArgs| {
            let made = std::cell::Cell::new(0);
            let r = run(&a, || {
                made.set(made.get() + 1);
                Err("no cluster here".into())
            });
            assert_eq!(made.get(), 0, "{a:?}");
            r.expect_err("out of range")
        };
        assert_eq!(refused(LoadArgs { threads: 0, ..args() }), "--threads 0 is out of range 1..=256");
        assert_eq!(refused(LoadArgs { batch: 10_001, ..args() }), "--batch 10001 is out of range 1..=10000");
        assert_eq!(refused(LoadArgs { rate: Some(0), ..args() }), "--rate 0 is out of range 1..=10000000");
        assert_eq!(
            refused(LoadArgs { duration: Duration::from_secs(3601), ..args() }),
            "--duration 3601s is out of range 100ms..=3600s"
        );
    }

    #[test]
    fn keys_carry_a_four_digit_prefix_and_differ_between_clients() {
        for (t, n) in [(0, 1), (3, 77), (255, 1 << 40)] {
            let k = String::from_utf8(key(t, n)).unwrap();
            assert!(k[..4].bytes().all(|b| b.is_ascii_digit()) && &k[4..5] == "-", "{k}");
        }
        assert_ne!(key(0, 5), key(1, 5));
    }
}
