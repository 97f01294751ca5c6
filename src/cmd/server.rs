//! `ringraft server`: one store.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use engine::runtime::pd_worker::PdOptions;
use engine::runtime::store::{ClusterSource, StoreOptions};

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("cluster").required(true).args(["pd", "spec"])))]
pub struct ServerArgs {
    /// The placement driver (HOST:PORT): the store registers there (its id
    /// comes from PD at the first start and is kept in IDENT), takes its
    /// regions from it at its first start only, and heartbeats to it.
    #[arg(long, value_name = "HOST:PORT")]
    pd: Option<std::net::SocketAddr>,
    /// Instead of PD: a fixed cluster spec (JSON) with the stores, their
    /// addresses and the initial regions (tests, fixed setups).
    #[arg(long, value_name = "FILE")]
    spec: Option<std::path::PathBuf>,
    /// This store's id in the spec (with --spec only: PD assigns ids).
    #[arg(long)]
    store_id: Option<u64>,
    /// The store's data directory (created on first start; its IDENT file
    /// fixes the store id, cluster and shard count).
    #[arg(long, value_name = "DIR")]
    data_dir: std::path::PathBuf,
    /// Memory the store's regions may use (every region's log and state are
    /// held in memory), split over its shards; past it writes are refused
    /// with a "memory limit reached" error ("8GiB", "512MiB") [default: 4 GiB per shard].
    #[arg(long, value_name = "BYTES", value_parser = bench::units::parse_bytes)]
    memory_limit: Option<u64>,
    /// Shards (one per core) this store runs [default with --pd: what its
    /// IDENT says, or 1 at the first start]; with --spec, checked against
    /// it; after the first start, against IDENT.
    #[arg(long, value_name = "S")]
    cores: Option<u16>,
    /// Base peer address (shard i listens on PORT + i) [required with --pd;
    /// with --spec, checked against it].
    #[arg(long, value_name = "HOST:PORT")]
    peer_addr: Option<std::net::SocketAddr>,
    /// Base client address (shard i listens on PORT + i) [required with
    /// --pd; with --spec, checked against it].
    #[arg(long, value_name = "HOST:PORT")]
    client_addr: Option<std::net::SocketAddr>,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long, value_name = "HOST:PORT")]
    status_addr: Option<std::net::SocketAddr>,
    /// A region snapshots its state (and compacts its log) once the log it
    /// applied since its last snapshot reaches this size and half its
    /// state's size ("4MiB", "64KiB") [default: 4 MiB].
    #[arg(long, value_name = "BYTES", value_parser = bench::units::parse_bytes)]
    snapshot_log_min: Option<u64>,
    /// A region whose state passes this size splits in two at its middle
    /// key by bytes, its leader asking PD for the new region's ids (with
    /// --pd only). A region that cannot split and grows past twice this
    /// refuses writes (busy) until it can ("96MiB", "1MiB") [default: 96 MiB].
    #[arg(long, value_name = "BYTES", value_parser = parse_split_size)]
    region_split_size: Option<u64>,
    /// How often the store tells PD it is alive, with its figures.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = super::parse_duration)]
    store_heartbeat: std::time::Duration,
    /// How often region leaders report their regions (meta, leader, size) to PD.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = super::parse_duration)]
    region_heartbeat: std::time::Duration,
    /// Only to measure what batching buys: one fdatasync per region ready
    /// and one frame per raft message (much slower; never for real use).
    #[arg(long)]
    no_batching: bool,
    /// What to do with a WAL record found damaged (one with a valid record
    /// after it: written whole, perhaps acknowledged). `strict` refuses to
    /// start, naming the segment and offset. `tolerant` drops it and starts
    /// that shard's regions as *needing catch-up*: they neither vote nor
    /// campaign until a leader has brought their logs up to date, so the
    /// cluster repairs the replica (safe while the region's other replicas
    /// are whole; docs/quickstart.md, "When a store refuses to start").
    #[arg(long, value_enum, value_name = "MODE", default_value = "strict")]
    wal_recovery: WalRecovery,
    /// For test clusters only (`ringraft chaos`): the status endpoint
    /// (`--status-addr`) then takes faults — `POST /faults?cut=2,3` makes
    /// this store send nothing to stores 2 and 3, `sync_delay_ms=40` slows
    /// every WAL fdatasync, `POST /faults` heals — so anyone who reaches
    /// that address can cut the store off. Needs --status-addr.
    #[arg(long, requires = "status_addr")]
    fault_injection: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum WalRecovery {
    Strict,
    Tolerant,
}

/// Where the store learns the cluster from, with the flags checked.
fn source(args: &ServerArgs) -> Result<ClusterSource, String> {
    if let Some(addr) = args.pd {
        if args.store_id.is_some() {
            return Err("--store-id goes with --spec; with --pd the store gets its id from PD".into());
        }
        let (Some(peer_addr), Some(client_addr)) = (args.peer_addr, args.client_addr) else {
            return Err("with --pd, give --peer-addr and --client-addr (the addresses registered with PD)".into());
        };
        return Ok(ClusterSource::Pd(PdOptions {
            addr,
            peer_addr,
            client_addr,
            // (a store restarted without --cores keeps what its IDENT says)
            shards: match args.cores {
                Some(c) => c,
                None => engine::runtime::data_dir::read_ident(&args.data_dir)
                    .map_err(|e| e.to_string())?
                    .map_or(1, |i| i.shards),
            },
            store_heartbeat: args.store_heartbeat,
            region_heartbeat: args.region_heartbeat,
        }));
    }
    let path = args.spec.as_ref().expect("clap requires --pd or --spec");
    let store_id = args.store_id.ok_or("with --spec, give --store-id (this store's id in the spec)")?;
    let spec = engine::spec::ClusterSpec::load(path).map_err(|e| e.to_string())?;
    let me = spec.store(store_id).ok_or_else(|| format!("store {store_id} is not in the spec {}", path.display()))?;
    // (the spec is where the other stores learn these: a flag may only confirm it)
    let disagree = |flag: &str, given: String, spec_has: String| {
        format!("--{flag} {given} disagrees with the spec, which gives store {store_id} {spec_has}")
    };
    if let Some(c) = args.cores.filter(|c| *c != me.shards) {
        return Err(disagree("cores", c.to_string(), format!("{} shards", me.shards)));
    }
    if let Some(a) = args.peer_addr.filter(|a| *a != me.peer_addr) {
        return Err(disagree("peer-addr", a.to_string(), format!("peer address {}", me.peer_addr)));
    }
    if let Some(a) = args.client_addr.filter(|a| *a != me.client_addr) {
        return Err(disagree("client-addr", a.to_string(), format!("client address {}", me.client_addr)));
    }
    Ok(ClusterSource::Spec { spec: Arc::new(spec), store_id })
}

/// The smallest split size: a region must hold a few entries' worth.
pub const REGION_SPLIT_SIZE_MIN: u64 = 64 << 10;

/// A split size: bytes ("96MiB"), at least `REGION_SPLIT_SIZE_MIN`.
pub fn parse_split_size(s: &str) -> Result<u64, String> {
    let b = bench::units::parse_bytes(s)?;
    if b < REGION_SPLIT_SIZE_MIN {
        return Err(format!("{b} bytes is below the smallest split size, {REGION_SPLIT_SIZE_MIN} bytes (64KiB)"));
    }
    Ok(b)
}

pub fn server(args: ServerArgs) -> Result<(), String> {
    // a panic anywhere is a bug in a storage engine: stop the whole store at
    // once rather than serve on with a dead shard
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        std::process::abort();
    }));
    let source = source(&args)?;
    let stop = stop_on_signal("ringraft server")?;
    let opts = StoreOptions {
        source,
        data_dir: args.data_dir,
        stop,
        memory_limit_bytes: args.memory_limit.map(|b| b as usize),
        status_addr: args.status_addr,
        snapshot_log_bytes_min: args.snapshot_log_min.map(|b| b as usize),
        region_split_bytes: args.region_split_size,
        no_batching: args.no_batching,
        wal_recovery: match args.wal_recovery {
            WalRecovery::Strict => wal::RecoveryMode::Strict,
            WalRecovery::Tolerant => wal::RecoveryMode::Tolerant,
        },
        fault_injection: args.fault_injection,
    };
    engine::runtime::store::run_store(opts).map_err(|e| e.to_string())
}

/// SIGTERM or Ctrl-C sets the returned flag (the caller stops in order).
pub fn stop_on_signal(who: &'static str) -> Result<Arc<AtomicBool>, String> {
    bench::signals::block();
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let sig = bench::signals::wait();
            eprintln!("{who}: {sig}: stopping");
            s.store(true, Ordering::Relaxed);
        })
        .map_err(|e| format!("start the signal thread: {e}"))?;
    Ok(stop)
}
