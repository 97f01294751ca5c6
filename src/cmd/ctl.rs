//! `ringraft ctl`: talk to a running cluster.

use std::process::ExitCode;

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
    /// Print as JSON (for scripts): `stores`, `store`, `regions`, `region`,
    /// and one object per `get`, `put`, `delete` or `cas` with its outcome
    /// ("ok", "fail": it had no effect, "unknown": a write that may have
    /// happened) — also the exit status of those four: 0, 1 and 3.
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

/// How a key operation ended, as a script records it (the exit status).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Ok,
    /// It certainly had no effect.
    Failed,
    /// A write that may or may not have happened.
    Unknown,
}

impl Outcome {
    fn of(e: &engine::client::kv_client::KvError, write: bool) -> Outcome {
        // (a read changes nothing, whatever became of it)
        match write && e.may_have_applied() {
            true => Outcome::Unknown,
            false => Outcome::Failed,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "fail",
            Outcome::Unknown => "unknown",
        }
    }

    fn exit_code(self) -> ExitCode {
        ExitCode::from(match self {
            Outcome::Ok => 0,
            Outcome::Failed => 1,
            Outcome::Unknown => 3,
        })
    }
}

/// Text as it prints: a value, or none.
fn text(bytes: Option<&[u8]>) -> serde_json::Value {
    bytes.map_or(serde_json::Value::Null, |b| String::from_utf8_lossy(b).into())
}

/// A `get`, `put`, `delete` or `cas`: printed (as JSON with `--json`), its
/// outcome the exit status.
fn key_op(client: &mut KvClient, op: CtlOp, json: bool) -> ExitCode {
    let opt = |s: &str| if s == "-" { None } else { Some(s.as_bytes().to_vec()) };
    let (name, key, write) = match &op {
        CtlOp::Get { key } => ("get", key.clone(), false),
        CtlOp::Put { key, .. } => ("put", key.clone(), true),
        CtlOp::Delete { key } => ("delete", key.clone(), true),
        CtlOp::Cas { key, .. } => ("cas", key.clone(), true),
        _ => unreachable!("a key operation"),
    };
    let mut report = serde_json::json!({ "op": name, "key": key });
    let done: Result<String, engine::client::kv_client::KvError> = match op {
        CtlOp::Get { key } => client.get(key.as_bytes()).map(|v| {
            report["value"] = text(v.as_deref());
            v.map_or("(absent)".into(), |v| String::from_utf8_lossy(&v).into_owned())
        }),
        CtlOp::Put { key, value } => {
            report["value"] = value.clone().into();
            client.put(key.as_bytes(), value.as_bytes()).map(|()| String::new())
        }
        CtlOp::Delete { key } => client.delete(key.as_bytes()).map(|()| String::new()),
        CtlOp::Cas { key, expect, new } => {
            let (expect, new) = (opt(&expect), opt(&new));
            report["expect"] = text(expect.as_deref());
            report["new"] = text(new.as_deref());
            client.cas(key.as_bytes(), expect.as_deref(), new.as_deref()).map(|swapped| {
                report["swapped"] = swapped.into();
                if swapped { "swapped" } else { "not swapped (value differs)" }.to_string()
            })
        }
        _ => unreachable!("a key operation"),
    };
    let outcome = done.as_ref().map_or_else(|e| Outcome::of(e, write), |_| Outcome::Ok);
    report["outcome"] = outcome.name().into();
    match (&done, json) {
        (Ok(shown), false) if !shown.is_empty() => println!("{shown}"),
        (Ok(_), false) => {}
        (Err(e), false) => eprintln!("ringraft: {name} {key:?}: {} ({e})", outcome.name()),
        (Err(e), true) => {
            report["error"] = e.to_string().into();
            println!("{report}");
        }
        (Ok(_), true) => println!("{report}"),
    }
    outcome.exit_code()
}

pub fn ctl(args: CtlArgs) -> Result<ExitCode, String> {
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
    let done = |r: Result<(), String>| r.map(|()| ExitCode::SUCCESS);
    match args.op {
        CtlOp::Stores => return done(cmd_pd_view::stores(&target, args.json)),
        CtlOp::Store { store } => return done(cmd_pd_view::store(&target, store, args.json)),
        CtlOp::Regions => return done(cmd_pd_view::regions(&target, args.json)),
        CtlOp::Operators => return done(cmd_pd_view::operators(&target, args.json)),
        CtlOp::DrainStore { store } => return done(cmd_pd_view::drain_store(&target, store, args.json)),
        CtlOp::Move { region, from_store, to_store } => {
            return done(cmd_pd_view::move_region(&target, region, from_store, to_store, args.json))
        }
        CtlOp::Region { key: Some(key), id: None } => {
            return done(cmd_pd_view::region_by_key(&target, &key, args.json))
        }
        CtlOp::Region { key: Some(_), id: Some(_) } => return Err("give a KEY or --id, not both".into()),
        CtlOp::Region { key: None, id: Some(id) } if matches!(target, Target::Pd(_)) => {
            return done(cmd_pd_view::region_by_id(&target, id, args.json))
        }
        _ => {}
    }
    if let CtlOp::Load(load) = &args.op {
        return done(bench::kv::load::run(load, || target.client()));
    }
    let named = match &args.op {
        CtlOp::Get { key } => Some(("get", key)),
        CtlOp::Put { key, .. } => Some(("put", key)),
        CtlOp::Delete { key } => Some(("delete", key)),
        CtlOp::Cas { key, .. } => Some(("cas", key)),
        _ => None,
    };
    let mut client = match (target.client(), named) {
        (Ok(client), _) => client,
        // (nothing was sent: a key operation certainly had no effect)
        (Err(e), Some((name, key))) if args.json => {
            let failed = Outcome::Failed.name();
            println!("{}", serde_json::json!({ "op": name, "key": key, "outcome": failed, "error": e }));
            return Ok(Outcome::Failed.exit_code());
        }
        (Err(e), Some((name, key))) => {
            eprintln!("ringraft: {name} {key:?}: {} ({e})", Outcome::Failed.name());
            return Ok(Outcome::Failed.exit_code());
        }
        (Err(e), None) => return Err(e),
    };
    match args.op {
        CtlOp::Load(_) => unreachable!("handled above"),
        op @ (CtlOp::Get { .. } | CtlOp::Put { .. } | CtlOp::Delete { .. } | CtlOp::Cas { .. }) => {
            return Ok(key_op(&mut client, op, args.json))
        }
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
    }
    Ok(ExitCode::SUCCESS)
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

#[cfg(test)]
mod tests {
    use super::*;
    use engine::client::kv_client::KvError;
    use engine::RegionError;

    #[test]
    fn a_write_whose_fate_is_unknown_exits_3_and_one_that_had_no_effect_exits_1() {
        let ambiguous = KvError::Ambiguous("timed out".into());
        let region_ambiguous = KvError::Region(RegionError::Ambiguous { region: 1 });
        let not_leader = KvError::Region(RegionError::NotLeader { region: 1, leader: None });
        let gave_up = KvError::Unavailable { attempts: 3, last: "timed out".into() };
        for unknown in [&ambiguous, &region_ambiguous, &gave_up] {
            assert_eq!(Outcome::of(unknown, true), Outcome::Unknown, "{unknown}");
            // (a read changes nothing, whatever became of it)
            assert_eq!(Outcome::of(unknown, false), Outcome::Failed, "{unknown}");
        }
        assert_eq!(Outcome::of(&not_leader, true), Outcome::Failed);
        let codes = [Outcome::Ok, Outcome::Failed, Outcome::Unknown].map(|o| format!("{:?}", o.exit_code()));
        assert_eq!(codes, [ExitCode::from(0), ExitCode::from(1), ExitCode::from(3)].map(|c| format!("{c:?}")));
    }
}
