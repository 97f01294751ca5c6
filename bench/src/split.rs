//! `ringraft bench split`: what a split of a region of a given size costs
//! the shard loop. A split applies in O(1) — both halves share the state
//! machine — and each half then drops the other's keys
//! `SPLIT_TRIM_KEYS_PER_ITERATION` per loop iteration; finding the middle
//! key runs off the loop on an O(1) clone. This measures each of those on
//! a state machine of the region's size (with a snapshot's clone held, as
//! one often is, so the trims copy the shared tree's nodes), and prints the
//! longest step the loop takes against the bound (10 ms).

use std::time::{Duration, Instant};

use engine::kv::{CommandRef, MemKv, StateMachine};
use engine::shard::SPLIT_TRIM_KEYS_PER_ITERATION;

/// The longest loop step a split may add.
const LOOP_STEP_BOUND: Duration = Duration::from_millis(10);

#[derive(clap::Args, Clone, Debug)]
pub struct SplitBenchArgs {
    /// The region's size when it splits (the default split size).
    #[arg(long, default_value = "96MiB", value_parser = crate::units::parse_bytes)]
    pub region_bytes: u64,
    #[arg(long, default_value_t = 1000)]
    pub value_bytes: usize,
}

pub fn run(args: SplitBenchArgs) -> Result<(), String> {
    if args.value_bytes == 0 || args.value_bytes > 1 << 20 {
        return Err(format!("--value-bytes {} is not in 1..=1MiB", args.value_bytes));
    }
    let mut kv = MemKv::default();
    let value = vec![b'v'; args.value_bytes];
    let mut n = 0u64;
    while (kv.bytes() as u64) < args.region_bytes {
        // (keys in a scattered order, as a write load makes them)
        let key = format!("{:04}-{n:010}", n.wrapping_mul(7919) % 10_000);
        kv.apply(CommandRef::Put { key: key.as_bytes(), value: &value });
        n += 1;
    }
    println!("split bench: a region of {} MiB ({n} keys of {} bytes)", kv.bytes() >> 20, args.value_bytes);
    let t = Instant::now();
    let (bytes, key) = kv.middle_key(b"", b"");
    let find = t.elapsed();
    let key = key.ok_or("the region has one key: it cannot split")?;
    // the split itself: the child shares the parent's map
    let t = Instant::now();
    let (mut left, mut right) = (kv.clone(), kv);
    let cut = t.elapsed();
    let (mut longest, mut total, mut steps) = (Duration::ZERO, Duration::ZERO, 0u64);
    for (half, start, end) in [(&mut left, &b""[..], key.as_slice()), (&mut right, key.as_slice(), &b""[..])] {
        loop {
            let snapshot = half.clone(); // (a snapshot being written holds the tree)
            let t = Instant::now();
            let done = half.trim_to(start, end, SPLIT_TRIM_KEYS_PER_ITERATION);
            let took = t.elapsed();
            drop(snapshot);
            (longest, total, steps) = (longest.max(took), total + took, steps + 1);
            if done {
                break;
            }
        }
    }
    println!("  finding the middle key (off the loop): {:.1} ms over {} MiB", find.as_secs_f64() * 1e3, bytes >> 20);
    println!("  the split's cut (in the loop): {:.1} µs", cut.as_secs_f64() * 1e6);
    println!(
        "  trimming both halves: {steps} loop steps of {SPLIT_TRIM_KEYS_PER_ITERATION} keys, {:.1} ms in all, \
         the longest {:.2} ms (bound {} ms): {}",
        total.as_secs_f64() * 1e3,
        longest.as_secs_f64() * 1e3,
        LOOP_STEP_BOUND.as_millis(),
        if longest.max(cut) <= LOOP_STEP_BOUND { "within" } else { "OVER" }
    );
    Ok(())
}
