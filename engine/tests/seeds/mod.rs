//! Which seeds a simulator test runs: `RINGRAFT_SEED=N` replays one,
//! `RINGRAFT_SEEDS=N` runs N of them (0..N), else the test's default count.

pub fn seeds(default_count: u64) -> Vec<u64> {
    match std::env::var("RINGRAFT_SEED") {
        Ok(s) => vec![s.parse().expect("RINGRAFT_SEED is a number")],
        Err(_) => {
            let count = std::env::var("RINGRAFT_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(default_count);
            (0..count).collect()
        }
    }
}

/// Runs `f` for every seed, naming the seed that failed. `RUST_LOG` set:
/// the engine's logs go to stderr (to follow one replayed seed).
pub fn for_seeds(default_count: u64, f: impl Fn(u64)) {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
    for seed in seeds(default_count) {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(seed)));
        if let Err(e) = result {
            eprintln!("failed with seed {seed}: replay with RINGRAFT_SEED={seed}");
            std::panic::resume_unwind(e);
        }
    }
}
