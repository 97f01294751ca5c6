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
    /// Every store as PD sees it: addresses, state (up, disconnected, down,
    /// draining, removed), regions and leaders (needs --pd).
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
    /// Split the region holding KEY at KEY (needs --pd, which hands out the
    /// new region's ids): the region keeps the keys below KEY, a new region
    /// on the same stores takes KEY and the keys above. Pre-splitting before
    /// a bulk load spreads it over leaders at once. KEY must not already
    /// start a region.
    Split { key: String },
    /// Remove region REGION's peer on STORE (not its leader: transfer
    /// leadership first). The removed peer leaves a tombstone.
    RemovePeer { region: u64, store: u64 },
    /// Move region REGION's replica on FROM_STORE to TO_STORE, safely
    /// (needs --pd, whose operator does it): a learner on TO_STORE first,
    /// filled by a snapshot; once it caught up, one joint change promotes
    /// it and demotes the old replica (leadership moves away first if the
    /// old replica leads); then the old replica goes. The region never has
    /// fewer voters meanwhile. Prints the operator; `ctl operators` follows it.
    Move { region: u64, from_store: u64, to_store: u64 },
    /// What PD is doing: its operators under way, each step and its age (needs --pd).
    Operators,
    /// Move every replica off store STORE, then remove it from the cluster
    /// (needs --pd). Refused when the other stores could not hold
    /// --replicas copies of every region. Works on a store that is down.
    /// Once removed, the store is refused if it comes back under its id;
    /// its addresses are free for a new store (an empty data directory).
    DrainStore { store: u64 },
    /// A simple write load (`ringraft bench kv` is the full benchmark): THREADS clients,
    /// each sending BATCH puts at a time (pipelined, each acknowledged on
    /// its own) for DURATION; prints writes/s and the batch round-trip times.
    /// With --rate, open loop instead: RATE puts/s in all, each due at its
    /// own time and its latency measured from then (a stall is not hidden:
    /// what fell due meanwhile goes out at once, up to BATCH per client,
    /// and counts from when it was due); prints per-put percentiles.
    Load(bench::kv::load::LoadArgs),
}

pub fn ctl(args: CtlArgs) -> Result<(), String> {
    // `ringraft ctl regions | head`: a reader that goes away ends the
    // command quietly, as it does any Unix tool (Rust ignores SIGPIPE, and
    // printing to the closed pipe would panic)
    // SAFETY: restoring a signal's default disposition, before any thread starts
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
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
        CtlOp::Operators => return cmd_pd_view::operators(&target, args.json),
        CtlOp::DrainStore { store } => return cmd_pd_view::drain_store(&target, store, args.json),
        CtlOp::Move { region, from_store, to_store } => {
            return cmd_pd_view::move_region(&target, region, from_store, to_store, args.json)
        }
        CtlOp::Region { key: Some(key), id: None } => return cmd_pd_view::region_by_key(&target, &key, args.json),
        CtlOp::Region { key: Some(_), id: Some(_) } => return Err("give a KEY or --id, not both".into()),
        CtlOp::Region { key: None, id: Some(id) } if matches!(target, Target::Pd(_)) => {
            return cmd_pd_view::region_by_id(&target, id, args.json)
        }
        _ => {}
    }
    if let CtlOp::Load(load) = &args.op {
        return bench::kv::load::run(load, || target.client());
    }
    let mut client = target.client()?;
    let opt = |s: &str| if s == "-" { None } else { Some(s.as_bytes().to_vec()) };
    match args.op {
        CtlOp::Load(_) => unreachable!("handled above"),
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
        CtlOp::Stores
        | CtlOp::Store { .. }
        | CtlOp::Regions
        | CtlOp::Operators
        | CtlOp::DrainStore { .. }
        | CtlOp::Move { .. }
        | CtlOp::Region { key: Some(_), .. } => {
            unreachable!("answered from PD above")
        }
        CtlOp::Region { id: Some(region), .. } => {
            let m = client.region(region).map_err(|e| e.to_string())?;
            println!("{}", region_line(&m));
            for p in &m.peers {
                println!("  peer {} on store {} shard {} ({})", p.peer_id, p.store_id, p.shard, p.role.name());
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
            let peer = engine::region::meta::PeerMeta::voter(peer_id, store, shard);
            let change = engine::region::meta::PeerChange::AddVoter(peer);
            client.change_peer(region, change).map_err(|e| e.to_string())?;
            println!("region {region}: peer {peer_id} added on store {store}");
        }
        CtlOp::RemovePeer { region, store } => {
            let meta = client.region(region).map_err(|e| e.to_string())?;
            let peer = *meta.peer_on(store).ok_or(format!("region {region} has no peer on store {store}"))?;
            client
                .change_peer(region, engine::region::meta::PeerChange::RemovePeer(peer))
                .map_err(|e| e.to_string())?;
            println!("region {region}: peer {} on store {store} removed", peer.peer_id);
        }
        CtlOp::Split { key } => {
            let Target::Pd(addr) = &target else {
                return Err("split needs --pd: PD hands out the new region's ids".into());
            };
            let key = key.into_bytes();
            let region = client.region_of(&key).map_err(|e| e.to_string())?;
            if key.is_empty() || key == region.start_key {
                return Err(format!(
                    "{:?} already starts region {}: a region cannot split at its start",
                    String::from_utf8_lossy(&key),
                    region.id
                ));
            }
            let mut pd = pd::PdClient::new(*addr, 0);
            let first =
                pd.alloc_ids(engine::shard::SplitRequest::ids_needed(region.peers.len())).map_err(|e| e.to_string())?;
            let split = engine::shard::SplitRequest::with_ids(key, first, region.peers.len());
            let (left, right) = client.split(region.id, split).map_err(|e| e.to_string())?;
            println!("split: {}", region_line(&left));
            println!("       {}", region_line(&right));
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

/// A region on one line: id, range (keys as text; unbounded ends named), epoch.
fn region_line(m: &engine::region::meta::RegionMeta) -> String {
    let key = |k: &[u8]| {
        if k.is_empty() {
            "(unbounded)".to_string()
        } else {
            format!("{:?}", String::from_utf8_lossy(k))
        }
    };
    format!(
        "region {} [{}, {}) conf_ver {} version {}",
        m.id,
        key(&m.start_key),
        key(&m.end_key),
        m.conf_ver,
        m.version
    )
}
