//! `ringraft local`: a cluster of child processes on loopback.

#[derive(clap::Args)]
pub struct LocalArgs {
    #[arg(long, default_value_t = 3)]
    stores: u64,
    /// Shards (cores) per store. On a host with fewer cores than 2 × stores
    /// (like a 2-core machine), 1: one unpinned shard per store.
    #[arg(long)]
    cores: Option<u16>,
    /// Initial regions, splitting the key space (4-digit key prefixes).
    #[arg(long, default_value_t = 64)]
    initial_regions: u64,
    /// Keep the stores' data here (kept after stopping); default: a temporary directory.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<std::path::PathBuf>,
    /// First port: store i's peer ports start at base + (i−1)·128, its
    /// client ports 64 above; the metrics ports follow all the stores'.
    #[arg(long, default_value_t = 20160)]
    base_port: u16,
    /// PD's address [default: 127.0.0.1, the port after the stores' metrics ports].
    #[arg(long, value_name = "HOST:PORT")]
    pd_addr: Option<std::net::SocketAddr>,
    /// Passed to every store (see `ringraft server --help`).
    #[arg(long, value_name = "BYTES", value_parser = bench::units::parse_bytes)]
    snapshot_log_min: Option<u64>,
    /// Passed to every store (see `ringraft server --help`): with a small
    /// size ("1MiB") a cluster started with `--initial-regions 1` splits as
    /// it fills.
    #[arg(long, value_name = "BYTES", value_parser = parse_split_size)]
    region_split_size: Option<u64>,
}

/// A split size: bytes ("96MiB"), at least `super::server::REGION_SPLIT_SIZE_MIN`.
fn parse_split_size(s: &str) -> Result<u64, String> {
    super::server::parse_split_size(s)
}

/// Shards per store for a local cluster on this host: one per core when
/// every store can have at least two, otherwise one.
fn local_cores(stores: u64) -> u16 {
    let stores = stores.max(1); // (0 is refused with its reason when the cluster starts)
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    if cores < 2 * stores {
        1
    } else {
        (cores / stores).min(16) as u16
    }
}

pub fn local(args: LocalArgs) -> Result<(), String> {
    let opts = bench::local::LocalOptions {
        stores: args.stores,
        cores: args.cores.unwrap_or_else(|| local_cores(args.stores)),
        regions: args.initial_regions,
        data_dir: args.data_dir,
        base_port: args.base_port,
        snapshot_log_min: args.snapshot_log_min,
        region_split_size: args.region_split_size,
        no_batching: false,
        pd_addr: args.pd_addr,
        ..Default::default()
    };
    // (before any thread starts, so that only the wait below sees Ctrl-C)
    bench::signals::block();
    let mut cluster = bench::local::LocalCluster::start(&opts).map_err(|e| e.to_string())?;
    println!(
        "ringraft local: {} stores, {} regions, every region led; data in {}",
        opts.stores,
        cluster.regions,
        cluster.dir.display()
    );
    println!("  pd: {} (metrics http://{}/metrics)", cluster.pd_addr, cluster.pd_status_addr());
    for s in &cluster.spec.stores {
        println!(
            "  store {}: peers {}, clients {} ({} shard{}), metrics http://{}/metrics",
            s.id,
            s.peer_addr,
            s.client_addr,
            s.shards,
            if s.shards == 1 { "" } else { "s" },
            cluster.status[&s.id]
        );
    }
    println!("try:  ringraft ctl --pd {} put hello world", cluster.pd_addr);
    println!("Ctrl-C stops the cluster.");
    let sig = bench::signals::wait();
    eprintln!("ringraft local: {sig}: stopping the stores");
    let killed = cluster.stop();
    if !killed.is_empty() {
        return Err(format!("{} did not stop in time and were killed", killed.join(", ")));
    }
    Ok(())
}
