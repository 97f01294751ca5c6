//! `ringraft`: one multi-call binary for the engine, its benchmarks and its tools.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// ringraft — a multi-raft replicated key-value engine.
///
/// Thousands of raft groups ("regions") per store; one thread, one
/// write-ahead log and one fdatasync per core for all of them.
#[derive(Parser)]
#[command(name = "ringraft", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run benchmarks: `kv`, `wal`, `transport` (`ringraft bench` alone runs
    /// `kv` with its defaults against a local cluster it starts: under a minute).
    Bench {
        #[command(subcommand)]
        which: Option<BenchCommand>,
    },
    /// Start a local cluster: stores of this binary on loopback, in a
    /// temporary directory unless --data-dir is given; prints the addresses
    /// and waits; Ctrl-C stops everything (and removes the temporary directory).
    Local(LocalArgs),
    /// Inspect a WAL offline and read-only: stat, dump, verify.
    Wal {
        #[command(subcommand)]
        command: tools::wal::WalCommand,
    },
    /// Run a store: one shard per core, each with its WAL, peer port and
    /// client port (base ports from the cluster spec, + shard index).
    Server(ServerArgs),
    /// Write a cluster spec for stores on loopback (JSON, to stdout).
    Spec(SpecArgs),
    /// Talk to a running cluster: get, put, delete, cas.
    Ctl(CtlArgs),
}

#[derive(clap::Args)]
struct ServerArgs {
    /// The cluster spec (JSON): stores, their addresses, the initial regions.
    #[arg(long, value_name = "FILE")]
    spec: std::path::PathBuf,
    /// This store's id in the spec.
    #[arg(long)]
    store_id: u64,
    /// The store's data directory (created on first start; its IDENT file
    /// fixes the store id, cluster and shard count).
    #[arg(long, value_name = "DIR")]
    data_dir: std::path::PathBuf,
    /// Memory the store's regions may use (every region's log and state are
    /// held in memory), split over its shards; past it writes are refused
    /// with a "memory limit reached" error ("8GiB", "512MiB") [default: 4 GiB per shard].
    #[arg(long, value_name = "BYTES", value_parser = bench::units::parse_bytes)]
    memory_limit: Option<u64>,
    /// Shards (one per core) this store runs; checked against the spec and,
    /// after the first start, against the data directory's IDENT.
    #[arg(long, value_name = "S")]
    cores: Option<u16>,
    /// Base peer address (shard i listens on PORT + i); checked against the spec.
    #[arg(long, value_name = "HOST:PORT")]
    peer_addr: Option<std::net::SocketAddr>,
    /// Base client address (shard i listens on PORT + i); checked against the spec.
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
    /// Only to measure what batching buys: one fdatasync per region ready
    /// and one frame per raft message (much slower; never for real use).
    #[arg(long)]
    no_batching: bool,
}

#[derive(clap::Args)]
struct SpecArgs {
    #[arg(long, default_value_t = 3)]
    stores: u64,
    /// Shards per store (one per core).
    #[arg(long, default_value_t = 1)]
    shards: u16,
    #[arg(long, default_value_t = 64)]
    regions: u64,
    /// Store i's peer ports start at base + (i-1)·128, its client ports 64 above.
    #[arg(long, default_value_t = 20160)]
    base_port: u16,
    #[arg(long, default_value_t = 1)]
    cluster_id: u64,
}

#[derive(clap::Args)]
struct CtlArgs {
    /// The cluster spec (JSON).
    #[arg(long, value_name = "FILE")]
    spec: std::path::PathBuf,
    #[command(subcommand)]
    op: CtlOp,
}

#[derive(Subcommand)]
enum CtlOp {
    /// Print a key's value (linearizable read).
    Get {
        key: String,
    },
    Put {
        key: String,
        value: String,
    },
    Delete {
        key: String,
    },
    /// Set KEY to NEW if it holds EXPECT ("-" means absent, for either).
    Cas {
        key: String,
        expect: String,
        new: String,
    },
    /// Print the rows of [START, END) ("" for either end: unbounded), in key order.
    Scan {
        start: String,
        end: String,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Ask region REGION's leader to hand leadership to its peer on STORE.
    TransferLeader {
        region: u64,
        store: u64,
    },
    /// Print region REGION as its leader has it: range, epoch, peers.
    Region {
        region: u64,
    },
    /// Add a voter of region REGION on STORE (and its SHARD), as peer PEER_ID
    /// (a new id, larger than any the region had). It starts empty and its
    /// leader sends it a snapshot.
    AddPeer {
        region: u64,
        store: u64,
        #[arg(long)]
        peer_id: u64,
        #[arg(long, default_value_t = 0)]
        shard: u16,
    },
    /// Remove region REGION's peer on STORE (not its leader: transfer
    /// leadership first). The removed peer leaves a tombstone.
    RemovePeer {
        region: u64,
        store: u64,
    },
    /// A simple write load (until `ringraft bench kv` exists): THREADS clients,
    /// each sending BATCH puts at a time (pipelined, each acknowledged on
    /// its own) for DURATION; prints writes/s and the batch round-trip times.
    /// With --rate, open loop instead: RATE puts/s in all, each due at its
    /// own time and its latency measured from then (a stall is not hidden:
    /// what fell due meanwhile goes out at once, up to BATCH per client,
    /// and counts from when it was due); prints per-put percentiles.
    Load {
        #[arg(long, default_value_t = 4)]
        threads: usize,
        #[arg(long, default_value_t = 64)]
        batch: usize,
        #[arg(long, default_value_t = 128)]
        value_bytes: usize,
        #[arg(long, default_value = "10s", value_parser = parse_secs)]
        duration: std::time::Duration,
        /// Puts per second in all (open loop); none: as fast as answered.
        #[arg(long)]
        rate: Option<u64>,
    },
}

fn parse_secs(s: &str) -> Result<std::time::Duration, String> {
    let n: f64 = s.trim_end_matches('s').parse().map_err(|_| format!("{s:?}: a duration in seconds, like 10s"))?;
    if !(0.1..=3600.0).contains(&n) {
        return Err(format!("{s:?}: between 0.1s and 3600s"));
    }
    Ok(std::time::Duration::from_secs_f64(n))
}

fn load(
    spec: engine::spec::ClusterSpec,
    threads: usize,
    batch: usize,
    value_bytes: usize,
    duration: std::time::Duration,
) -> Result<(), String> {
    if threads == 0 || batch == 0 || threads > 256 || batch > 10_000 {
        return Err("--threads in 1..=256 and --batch in 1..=10000".into());
    }
    let spec = std::sync::Arc::new(spec);
    let start = std::time::Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let spec = spec.clone();
            std::thread::spawn(move || {
                let mut client = engine::client::kv_client::KvClient::new(spec);
                let mut rounds_us = vec![];
                let (mut ok, mut failed, mut n) = (0u64, 0u64, 0u64);
                while start.elapsed() < duration {
                    let items: Vec<(Vec<u8>, Vec<u8>)> = (0..batch)
                        .map(|_| {
                            n += 1;
                            (load_key(t, n), vec![b'v'; value_bytes])
                        })
                        .collect();
                    let t0 = std::time::Instant::now();
                    for r in client.put_many(&items) {
                        if r.is_ok() {
                            ok += 1
                        } else {
                            failed += 1
                        }
                    }
                    rounds_us.push(t0.elapsed().as_micros() as u64);
                }
                (ok, failed, rounds_us)
            })
        })
        .collect();
    let (mut ok, mut failed, mut rounds) = (0, 0, vec![]);
    for w in workers {
        let (o, f, r) = w.join().map_err(|_| "a load thread panicked".to_string())?;
        ok += o;
        failed += f;
        rounds.extend(r);
    }
    let secs = start.elapsed().as_secs_f64();
    rounds.sort_unstable();
    let pct = |p: f64| rounds.get(((rounds.len() as f64 * p) as usize).min(rounds.len().saturating_sub(1))).copied();
    println!(
        "{ok} writes acknowledged, {failed} failed, in {secs:.1}s: {:.0} writes/s; a round of {batch} pipelined puts: p50 {} us, p99 {} us ({threads} clients)",
        ok as f64 / secs,
        pct(0.5).unwrap_or(0),
        pct(0.99).unwrap_or(0)
    );
    Ok(())
}

/// The load's key for put `n` of client `t` (spread over the regions).
fn load_key(t: usize, n: u64) -> Vec<u8> {
    format!("{:04}-{t}-{n}", (n * 7919 + t as u64 * 104_729) % 10_000).into_bytes()
}

/// Open loop: every put is due at its own time (RATE/s in all, spread over
/// the clients) and its latency counts from then (coordinated omission
/// corrected).
fn load_open(
    spec: engine::spec::ClusterSpec,
    threads: usize,
    batch: usize,
    value_bytes: usize,
    duration: std::time::Duration,
    rate: u64,
) -> Result<(), String> {
    if threads == 0 || batch == 0 || threads > 256 || batch > 10_000 || rate == 0 || rate > 10_000_000 {
        return Err("--threads in 1..=256, --batch in 1..=10000, --rate in 1..=10000000".into());
    }
    let spec = std::sync::Arc::new(spec);
    let start = std::time::Instant::now();
    let per_thread = rate as f64 / threads as f64;
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let spec = spec.clone();
            std::thread::spawn(move || {
                let mut client = engine::client::kv_client::KvClient::new(spec);
                let mut latency = bench::latency::Latency::default();
                let (mut ok, mut failed, mut next) = (0u64, 0u64, 0u64);
                // put n of this client is due at start + offset + n / per_thread
                let offset = t as f64 / rate as f64;
                let due = |n: u64| start + std::time::Duration::from_secs_f64(offset + n as f64 / per_thread);
                while due(next) < start + duration {
                    let now = std::time::Instant::now();
                    if due(next) > now {
                        std::thread::sleep(due(next) - now);
                        continue;
                    }
                    let mut items = vec![];
                    let mut dues = vec![];
                    while items.len() < batch && due(next) <= now && due(next) < start + duration {
                        items.push((load_key(t, next), vec![b'v'; value_bytes]));
                        dues.push(due(next));
                        next += 1;
                    }
                    let results = client.put_many(&items);
                    let done = std::time::Instant::now();
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
            })
        })
        .collect();
    let (mut ok, mut failed, mut latency) = (0, 0, bench::latency::Latency::default());
    for w in workers {
        let (o, f, l) = w.join().map_err(|_| "a load thread panicked".to_string())?;
        ok += o;
        failed += f;
        latency.add(&l);
    }
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

fn server(args: ServerArgs) -> Result<(), String> {
    // a panic anywhere is a bug in a storage engine: stop the whole store at
    // once rather than serve on with a dead shard
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        std::process::abort();
    }));
    let spec = engine::spec::ClusterSpec::load(&args.spec).map_err(|e| e.to_string())?;
    let me = spec
        .store(args.store_id)
        .ok_or_else(|| format!("store {} is not in the spec {}", args.store_id, args.spec.display()))?;
    // (the spec is where the other stores learn these: a flag may only confirm it)
    let disagree = |flag: &str, given: String, spec_has: String| {
        format!("--{flag} {given} disagrees with the spec, which gives store {} {spec_has}", args.store_id)
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
    // SIGTERM or Ctrl-C: the shards stop, the WAL is flushed, exit 0
    bench::signals::block();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                let sig = bench::signals::wait();
                eprintln!("ringraft server: {sig}: stopping");
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
            })
            .map_err(|e| format!("start the signal thread: {e}"))?;
    }
    let opts = engine::runtime::store::StoreOptions {
        spec: std::sync::Arc::new(spec),
        store_id: args.store_id,
        data_dir: args.data_dir,
        stop,
        memory_limit_bytes: args.memory_limit.map(|b| b as usize),
        status_addr: args.status_addr,
        snapshot_log_bytes_min: args.snapshot_log_min.map(|b| b as usize),
        no_batching: args.no_batching,
    };
    engine::runtime::store::run_store(opts).map_err(|e| e.to_string())
}

fn ctl(args: CtlArgs) -> Result<(), String> {
    let spec = engine::spec::ClusterSpec::load(&args.spec).map_err(|e| e.to_string())?;
    let mut client = engine::client::kv_client::KvClient::new(std::sync::Arc::new(spec));
    let opt = |s: &str| if s == "-" { None } else { Some(s.as_bytes().to_vec()) };
    if let CtlOp::Load { threads, batch, value_bytes, duration, rate: Some(rate) } = args.op {
        let spec = engine::spec::ClusterSpec::load(&args.spec).map_err(|e| e.to_string())?;
        return load_open(spec, threads, batch, value_bytes, duration, rate);
    }
    if let CtlOp::Load { threads, batch, value_bytes, duration, rate: None } = args.op {
        let spec = engine::spec::ClusterSpec::load(&args.spec).map_err(|e| e.to_string())?;
        return load(spec, threads, batch, value_bytes, duration);
    }
    match args.op {
        CtlOp::Load { .. } => unreachable!("handled above"),
        CtlOp::Get { key } => match client.get(key.as_bytes()).map_err(|e| e.to_string())? {
            Some(v) => println!("{}", String::from_utf8_lossy(&v)),
            None => println!("(absent)"),
        },
        CtlOp::Put { key, value } => client.put(key.as_bytes(), value.as_bytes()).map_err(|e| e.to_string())?,
        CtlOp::Delete { key } => client.delete(key.as_bytes()).map_err(|e| e.to_string())?,
        CtlOp::Scan { start, end, limit } => {
            for (k, v) in client.scan(start.as_bytes(), end.as_bytes(), limit).map_err(|e| e.to_string())? {
                println!("{}\t{}", String::from_utf8_lossy(&k), String::from_utf8_lossy(&v));
            }
        }
        CtlOp::Region { region } => {
            let m = client.region(region).map_err(|e| e.to_string())?;
            let key = |k: &[u8]| {
                if k.is_empty() {
                    "(unbounded)".to_string()
                } else {
                    format!("{:?}", String::from_utf8_lossy(k))
                }
            };
            println!(
                "region {}: [{}, {}) conf_ver {} version {}",
                m.id,
                key(&m.start_key),
                key(&m.end_key),
                m.conf_ver,
                m.version
            );
            for p in &m.peers {
                println!("  peer {} on store {} shard {}", p.peer_id, p.store_id, p.shard);
            }
        }
        CtlOp::AddPeer { region, store, peer_id, shard } => {
            let peer = engine::region::meta::PeerMeta { peer_id, store_id: store, shard };
            let change = engine::region::meta::PeerChange::AddVoter(peer);
            client.change_peer(region, change).map_err(|e| e.to_string())?;
            println!("region {region}: peer {peer_id} added on store {store}");
        }
        CtlOp::RemovePeer { region, store } => {
            let meta = client.region(region).map_err(|e| e.to_string())?;
            let peer = *meta.peer_on(store).ok_or(format!("region {region} has no peer on store {store}"))?;
            client
                .change_peer(region, engine::region::meta::PeerChange::RemoveVoter(peer))
                .map_err(|e| e.to_string())?;
            println!("region {region}: peer {} on store {store} removed", peer.peer_id);
        }
        CtlOp::TransferLeader { region, store } => {
            client.transfer_leader(region, store).map_err(|e| e.to_string())?;
            println!("region {region}: leadership transfer to store {store} started");
        }
        CtlOp::Cas { key, expect, new } => {
            let ok =
                client.cas(key.as_bytes(), opt(&expect).as_deref(), opt(&new).as_deref()).map_err(|e| e.to_string())?;
            println!("{}", if ok { "swapped" } else { "not swapped (value differs)" });
        }
    }
    Ok(())
}

#[derive(clap::Args)]
struct LocalArgs {
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
    /// Passed to every store (see `ringraft server --help`).
    #[arg(long, value_name = "BYTES", value_parser = bench::units::parse_bytes)]
    snapshot_log_min: Option<u64>,
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

fn local(args: LocalArgs) -> Result<(), String> {
    let opts = bench::local::LocalOptions {
        stores: args.stores,
        cores: args.cores.unwrap_or_else(|| local_cores(args.stores)),
        regions: args.initial_regions,
        data_dir: args.data_dir,
        base_port: args.base_port,
        snapshot_log_min: args.snapshot_log_min,
        no_batching: false,
    };
    // (before any thread starts, so that only the wait below sees Ctrl-C)
    bench::signals::block();
    let mut cluster = bench::local::LocalCluster::start(&opts).map_err(|e| e.to_string())?;
    println!(
        "ringraft local: {} stores, {} regions, every region led; data in {}",
        opts.stores,
        opts.regions,
        cluster.dir.display()
    );
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
    println!("try:  ringraft ctl --spec {} put hello world", cluster.spec_path.display());
    println!("Ctrl-C stops the cluster.");
    let sig = bench::signals::wait();
    eprintln!("ringraft local: {sig}: stopping the stores");
    let killed = cluster.stop();
    if !killed.is_empty() {
        return Err(format!("stores {killed:?} did not stop in time and were killed"));
    }
    Ok(())
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Puts and gets against a cluster (a local one it starts, by default):
    /// ops/s, latency percentiles, errors by kind, and the stores' batching
    /// figures and fsync p99 over the same window.
    Kv(bench::kv::KvBenchArgs),
    /// Fixed loads (small, medium, large), each PASS only when at least 90%
    /// of it is sustained with p99 under the engine's goal (5 ms); exits
    /// non-zero when any fails (like `etcdctl check perf`).
    Check(bench::kv::CheckArgs),
    /// One shard's WAL with many regions appending concurrently: appends/s,
    /// MB/s, fsyncs/s, regions per fsync, append-to-durable latency.
    Wal(bench::wal::WalBenchArgs),
    /// One shard's batched raft traffic to another store over loopback,
    /// against a plain TCP pump in the same run: messages/s, frames/s,
    /// messages per frame, MB/s, frame latency.
    Transport(bench::transport::TransportBenchArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("RINGRAFT_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Bench { which } => {
            let ran = match which {
                Some(BenchCommand::Wal(args)) => bench::wal::run(args),
                Some(BenchCommand::Transport(args)) => bench::transport::run(args),
                Some(BenchCommand::Kv(args)) => bench::kv::run(args),
                Some(BenchCommand::Check(args)) => bench::kv::check::run(args),
                None => bench::kv::run(bench::kv::KvBenchArgs::default_run()),
            };
            ran.map(|()| ExitCode::SUCCESS)
        }
        Command::Wal { command } => tools::wal::run(command, &mut std::io::stdout().lock())
            .map(|code| ExitCode::from(code as u8))
            .map_err(|e| e.to_string()),
        Command::Server(args) => server(args).map(|()| ExitCode::SUCCESS),
        Command::Local(args) => local(args).map(|()| ExitCode::SUCCESS),
        Command::Spec(a) => {
            let spec = engine::spec::ClusterSpec::local(a.cluster_id, a.stores, a.shards, a.regions, a.base_port);
            spec.validate().map_err(|e| e.to_string()).map(|()| {
                println!("{}", serde_json::to_string_pretty(&spec).expect("a spec serializes"));
                ExitCode::SUCCESS
            })
        }
        Command::Ctl(args) => ctl(args).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ringraft: {e}");
            ExitCode::from(2)
        }
    }
}
