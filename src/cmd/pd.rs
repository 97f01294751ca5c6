//! `ringraft pd`: the placement driver.

#[derive(clap::Args)]
pub struct PdArgs {
    /// PD's data directory: its state (cluster id, stores, regions, id
    /// allocator) is one file there, replaced atomically on every change.
    #[arg(long, value_name = "DIR")]
    data_dir: std::path::PathBuf,
    /// Where stores and clients reach PD.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:2379")]
    listen: std::net::SocketAddr,
    /// Regions the cluster starts with, splitting the key space (at
    /// four-digit decimal prefixes); laid out once enough stores registered.
    #[arg(long, default_value_t = 64)]
    initial_regions: u32,
    /// Replicas per region, each on a distinct store (the cluster
    /// bootstraps when this many stores have registered).
    #[arg(long, default_value_t = 3)]
    replicas: u32,
    /// A store silent for this long is disconnected: shown so, and no new
    /// replica or leadership goes to it.
    #[arg(long, value_name = "DURATION", default_value = "20s", value_parser = super::parse_duration)]
    store_down_after: std::time::Duration,
    /// A store silent for this long is down: its replicas are rebuilt on the
    /// other stores (each region keeps --replicas voters). After PD
    /// restarts it waits this long before calling any store down, since it
    /// knows nothing of who was alive. Units: ms, s, m, h.
    #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = super::parse_duration)]
    max_store_down_time: std::time::Duration,
    /// The id of a new cluster [default: random]; an existing one keeps its own.
    #[arg(long)]
    cluster_id: Option<u64>,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long, value_name = "HOST:PORT")]
    status_addr: Option<std::net::SocketAddr>,
}

/// A random non-zero cluster id.
fn random_cluster_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.finish() | 1
}

pub fn pd(args: PdArgs) -> Result<(), String> {
    if args.cluster_id == Some(0) {
        return Err("--cluster-id 0 is reserved (it means 'not known yet' on the wire)".into());
    }
    let config = pd::cluster::ClusterConfig {
        new_cluster_id: args.cluster_id.unwrap_or_else(random_cluster_id),
        replicas: args.replicas,
        initial_regions: args.initial_regions,
        store_down_after_ms: args.store_down_after.as_millis() as u64,
        initial_stores: 0,
        max_store_down_ms: args.max_store_down_time.as_millis() as u64,
    };
    let storage = pd::storage::FileMetaStore::open(&args.data_dir).map_err(|e| e.to_string())?;
    let cluster = pd::Cluster::open(storage, &config).map_err(|e| e.to_string())?;
    let cluster_id = cluster.cluster_id();
    let view = cluster.cluster_view();
    if view.bootstrapped && (view.replicas != args.replicas || view.initial_regions != args.initial_regions) {
        eprintln!(
            "ringraft pd: the cluster was laid out with --replicas {} --initial-regions {}; this start's flags change nothing",
            view.replicas, view.initial_regions
        );
    }
    if args.cluster_id.is_some_and(|id| id != cluster_id) {
        eprintln!(
            "ringraft pd: this data directory holds cluster {cluster_id}; --cluster-id applies to a new cluster only"
        );
    }
    // (before any thread starts, so that only the wait below sees the signals)
    bench::signals::block();
    let server =
        pd::server::PdServer::start(cluster, args.listen).map_err(|e| format!("listen on {}: {e}", args.listen))?;
    let status = match args.status_addr {
        None => None,
        Some(addr) => Some(
            transport::status::serve_metrics(addr, "pd-status".into(), server.metrics_renderer())
                .map_err(|e| format!("status address {addr}: {e}"))?,
        ),
    };
    println!("ringraft pd: cluster {cluster_id}, listening on {}, state in {}", server.addr(), args.data_dir.display());
    let sig = bench::signals::wait();
    eprintln!("ringraft pd: {sig}: stopping");
    if let Some(s) = status {
        s.stop();
    }
    server.stop();
    Ok(())
}
