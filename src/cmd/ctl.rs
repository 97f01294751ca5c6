//! `ringraft ctl`: talk to a running cluster.

use clap::Subcommand;
use engine::client::kv_client::KvClient;

use super::pd_view as cmd_pd_view;

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("cluster").required(true).args(["pd", "spec"])))]
pub struct CtlArgs {
    /// The placement driver (HOST:PORT): routes come from it.
    #[arg(long, value_name = "HOST:PORT")]
    pd: Option<std::net::SocketAddr>,
    /// Instead of PD: a fixed cluster spec (JSON).
    #[arg(long, value_name = "FILE")]
    spec: Option<std::path::PathBuf>,
    /// Print `stores`, `store`, `regions` and `region` as JSON (for scripts).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    op: CtlOp,
}

/// The cluster a command talks to.
#[derive(Clone)]
pub enum Target {
    Spec(std::sync::Arc<engine::spec::ClusterSpec>),
    Pd(std::net::SocketAddr),
}

impl Target {
    /// `n` clients, made before any load starts: a cluster that cannot be
    /// reached is an error, not a run of zeros.
    fn clients(&self, n: usize) -> Result<Vec<KvClient>, String> {
        (0..n).map(|_| self.client()).collect()
    }

    pub fn client(&self) -> Result<KvClient, String> {
        match self {
            Target::Spec(spec) => Ok(KvClient::new(spec.clone())),
            Target::Pd(addr) => KvClient::with_pd(*addr).map_err(|e| e.to_string()),
        }
    }
}

#[derive(Subcommand)]
pub enum CtlOp {
    /// Print a key's value (linearizable read).
    Get { key: String },
    /// Set KEY to VALUE (acknowledged once a quorum holds it).
    Put { key: String, value: String },
    /// Remove KEY.
    Delete { key: String },
    /// Set KEY to NEW if it holds EXPECT ("-" means absent, for either).
    Cas { key: String, expect: String, new: String },
    /// Print the rows of [START, END) ("" for either end: unbounded), in key order.
    Scan {
        start: String,
        end: String,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Ask region REGION's leader to hand leadership to its peer on STORE.
    TransferLeader { region: u64, store: u64 },
    /// A region. With --pd: the one holding KEY (or region --id N) as PD
    /// sees it, with its leader. With --spec: region --id N as its leader has it.
    Region {
        key: Option<String>,
        #[arg(long)]
        id: Option<u64>,
    },
    /// Every region as PD sees it, in key order (needs --pd).
    Regions,
    /// Every store as PD sees it: addresses, up or down, figures (needs --pd).
    Stores,
    /// Store STORE as PD sees it (needs --pd).
    Store { store: u64 },
    /// Add a voter of region REGION on STORE (and its SHARD), as peer PEER_ID
    /// (a new id, larger than any the region had; with --pd, PD hands one
    /// out when none is given). It starts empty and its leader sends it a snapshot.
    AddPeer {
        region: u64,
        store: u64,
        #[arg(long)]
        peer_id: Option<u64>,
        #[arg(long, default_value_t = 0)]
        shard: u16,
    },
    /// Remove region REGION's peer on STORE (not its leader: transfer
    /// leadership first). The removed peer leaves a tombstone.
    RemovePeer { region: u64, store: u64 },
    /// A simple write load (`ringraft bench kv` is the full benchmark): THREADS clients,
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
    target: Target,
    threads: usize,
    batch: usize,
    value_bytes: usize,
    duration: std::time::Duration,
) -> Result<(), String> {
    if threads == 0 || batch == 0 || threads > 256 || batch > 10_000 {
        return Err("--threads in 1..=256 and --batch in 1..=10000".into());
    }
    let (ok, failed, per_client, start) = run_clients(&target, threads, move |t, mut client, start| {
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
    })?;
    let mut rounds: Vec<u64> = per_client.into_iter().flatten().collect();
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

/// Runs `work(t, client, start)` on `threads` threads, a client each, all
/// from one start; returns the acknowledged and failed puts summed, each
/// thread's own figures, and the start.
fn run_clients<R: Send + 'static>(
    target: &Target,
    threads: usize,
    work: impl Fn(usize, KvClient, std::time::Instant) -> (u64, u64, R) + Send + Sync + 'static,
) -> Result<(u64, u64, Vec<R>, std::time::Instant), String> {
    let clients = target.clients(threads)?;
    let work = std::sync::Arc::new(work);
    let start = std::time::Instant::now();
    let workers: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(t, client)| {
            let work = work.clone();
            std::thread::spawn(move || work(t, client, start))
        })
        .collect();
    let (mut ok, mut failed, mut each) = (0, 0, vec![]);
    for w in workers {
        let (o, f, r) = w.join().map_err(|_| "a load thread panicked".to_string())?;
        ok += o;
        failed += f;
        each.push(r);
    }
    Ok((ok, failed, each, start))
}

/// Open loop: every put is due at its own time (RATE/s in all, spread over
/// the clients) and its latency counts from then (coordinated omission
/// corrected).
fn load_open(
    target: Target,
    threads: usize,
    batch: usize,
    value_bytes: usize,
    duration: std::time::Duration,
    rate: u64,
) -> Result<(), String> {
    if threads == 0 || batch == 0 || threads > 256 || batch > 10_000 || rate == 0 || rate > 10_000_000 {
        return Err("--threads in 1..=256, --batch in 1..=10000, --rate in 1..=10000000".into());
    }
    let per_thread = rate as f64 / threads as f64;
    let (ok, failed, per_client, start) = run_clients(&target, threads, move |t, mut client, start| {
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
    })?;
    let mut latency = bench::latency::Latency::default();
    per_client.iter().for_each(|l| latency.add(l));
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

pub fn ctl(args: CtlArgs) -> Result<(), String> {
    let target = match (&args.pd, &args.spec) {
        (Some(addr), _) => Target::Pd(*addr),
        (None, Some(path)) => {
            Target::Spec(std::sync::Arc::new(engine::spec::ClusterSpec::load(path).map_err(|e| e.to_string())?))
        }
        (None, None) => unreachable!("clap requires --pd or --spec"),
    };
    match args.op {
        CtlOp::Stores => return cmd_pd_view::stores(&target, args.json),
        CtlOp::Store { store } => return cmd_pd_view::store(&target, store, args.json),
        CtlOp::Regions => return cmd_pd_view::regions(&target, args.json),
        CtlOp::Region { key: Some(key), id: None } => return cmd_pd_view::region_by_key(&target, &key, args.json),
        CtlOp::Region { key: Some(_), id: Some(_) } => return Err("give a KEY or --id, not both".into()),
        CtlOp::Region { key: None, id: Some(id) } if matches!(target, Target::Pd(_)) => {
            return cmd_pd_view::region_by_id(&target, id, args.json)
        }
        _ => {}
    }
    let mut client = target.client()?;
    let opt = |s: &str| if s == "-" { None } else { Some(s.as_bytes().to_vec()) };
    if let CtlOp::Load { threads, batch, value_bytes, duration, rate: Some(rate) } = args.op {
        return load_open(target, threads, batch, value_bytes, duration, rate);
    }
    if let CtlOp::Load { threads, batch, value_bytes, duration, rate: None } = args.op {
        return load(target, threads, batch, value_bytes, duration);
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
        CtlOp::Region { id: None, .. } => return Err("give the region's KEY (with --pd) or --id N".into()),
        CtlOp::Stores | CtlOp::Store { .. } | CtlOp::Regions | CtlOp::Region { key: Some(_), .. } => {
            unreachable!("answered from PD above")
        }
        CtlOp::Region { id: Some(region), .. } => {
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
            let peer_id = match (peer_id, &target) {
                (Some(id), Target::Spec(_)) => id,
                (given, Target::Pd(addr)) => {
                    let mut pd = pd::PdClient::new(*addr, 0);
                    let s = pd.store(store).map_err(|e| e.to_string())?;
                    if shard >= s.store.shards {
                        return Err(format!(
                            "store {store} has {} shard(s); there is no shard {shard}",
                            s.store.shards
                        ));
                    }
                    match given {
                        Some(id) => id,
                        None => pd.alloc_ids(1).map_err(|e| e.to_string())?,
                    }
                }
                (None, Target::Spec(_)) => return Err("with --spec, give the new peer's id (--peer-id)".into()),
            };
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
