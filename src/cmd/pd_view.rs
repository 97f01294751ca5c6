//! `ringraft ctl --pd … stores|store|regions|region`: the cluster as PD
//! sees it, as a table or (`--json`) one JSON document for scripts.

use pd::protocol::{OperatorView, RegionView, StoreView};
use serde_json::{json, Value};

use super::ctl::Target;

fn pd_client(target: &Target) -> Result<pd::PdClient, String> {
    match target {
        Target::Pd(addr) => Ok(pd::PdClient::new(*addr, 0)),
        Target::Spec(_) => Err("this asks PD: give --pd HOST:PORT".into()),
    }
}

/// A key as text: printable ASCII as is, other bytes escaped (`\\xNN`).
fn key_text(k: &[u8]) -> String {
    k.escape_ascii().to_string()
}

fn region_json(v: &RegionView) -> Value {
    let r = &v.region;
    json!({
        "id": r.id,
        "start_key": key_text(&r.start_key),
        "end_key": key_text(&r.end_key),
        "conf_ver": r.epoch.conf_ver,
        "version": r.epoch.version,
        "peers": r.peers.iter().map(|p| json!({"peer_id": p.peer_id, "store_id": p.store_id, "shard": p.shard, "role": p.role.name()})).collect::<Vec<_>>(),
        "leader": v.leader.map(|l| l.store_id),
        "leader_peer": v.leader.map(|l| l.peer_id),
        "term": v.term,
        "approximate_bytes": v.stats.approximate_bytes,
        "approximate_keys": v.stats.approximate_keys,
        "pending_peers": v.pending_peers,
    })
}

fn store_json(v: &StoreView) -> Value {
    let s = &v.store;
    json!({
        "id": s.id,
        "peer_addr": s.peer_addr.to_string(),
        "client_addr": s.client_addr.to_string(),
        "shards": s.shards,
        "capacity_bytes": s.capacity_bytes,
        "up": v.up,
        "down": v.down,
        "state": store_state(v),
        "last_heartbeat_ms_ago": v.last_heartbeat_ms_ago,
        "region_count": v.stats.region_count,
        "leader_count": v.stats.leader_count,
        "used_bytes": v.stats.used_bytes,
        "writes_per_sec": v.stats.writes_per_sec,
        "regions_fenced": v.stats.regions_fenced,
    })
}

/// A store's state in a word: what an operator decided of it (draining,
/// removed), else what PD hears of it (up, disconnected, down).
fn store_state(v: &StoreView) -> &'static str {
    match v.store.state {
        pd::meta::StoreState::Serving if v.down => "down",
        pd::meta::StoreState::Serving if !v.up => "disconnected",
        pd::meta::StoreState::Serving => "up",
        other => other.name(),
    }
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).expect("JSON values print"));
}

fn bound(k: &[u8]) -> String {
    if k.is_empty() {
        "-".into()
    } else {
        key_text(k)
    }
}

fn print_regions(views: &[RegionView]) {
    println!(
        "{:>8}  {:<12} {:<12} {:>8} {:>7}  {:<10} {:>10} {:>10}  peers",
        "region", "start", "end", "conf_ver", "version", "leader", "keys", "bytes"
    );
    for v in views {
        let r = &v.region;
        let leader = v.leader.map_or("-".to_string(), |l| format!("store {}", l.store_id));
        // (a learner marked "(learner)", a peer in a joint change by its role)
        let peers: Vec<String> = r
            .peers
            .iter()
            .map(|p| match p.role {
                pd::PeerRole::Voter => format!("{}@{}/{}", p.peer_id, p.store_id, p.shard),
                role => format!("{}@{}/{}({})", p.peer_id, p.store_id, p.shard, role.name()),
            })
            .collect();
        println!(
            "{:>8}  {:<12} {:<12} {:>8} {:>7}  {:<10} {:>10} {:>10}  {}",
            r.id,
            bound(&r.start_key),
            bound(&r.end_key),
            r.epoch.conf_ver,
            r.epoch.version,
            leader,
            v.stats.approximate_keys,
            v.stats.approximate_bytes,
            peers.join(" ")
        );
    }
}

fn print_stores(views: &[StoreView]) {
    println!(
        "{:>6}  {:<22} {:<22} {:>6} {:<12} {:>8} {:>8} {:>10} {:>7}",
        "store", "peer addr", "client addr", "shards", "state", "regions", "leaders", "writes/s", "fenced"
    );
    for v in views {
        let s = &v.store;
        println!(
            "{:>6}  {:<22} {:<22} {:>6} {:<12} {:>8} {:>8} {:>10} {:>7}",
            s.id,
            s.peer_addr.to_string(),
            s.client_addr.to_string(),
            s.shards,
            store_state(v),
            v.stats.region_count,
            v.stats.leader_count,
            v.stats.writes_per_sec,
            v.stats.regions_fenced
        );
    }
}

fn operator_json(v: &OperatorView) -> Value {
    json!({
        "id": v.id,
        "region": v.region_id,
        "kind": v.kind,
        "steps": v.steps,
        "step": v.current,
        "age_ms": v.age_ms,
        "step_age_ms": v.step_age_ms,
    })
}

fn print_operators(views: &[OperatorView]) {
    if views.is_empty() {
        println!("no operator under way");
    }
    for v in views {
        println!(
            "operator {} region {} {} (started {:.1} s ago; this step {:.1} s ago)",
            v.id,
            v.region_id,
            v.kind,
            v.age_ms as f64 / 1000.0,
            v.step_age_ms as f64 / 1000.0
        );
        for (i, s) in v.steps.iter().enumerate() {
            let mark = match (i as u32).cmp(&v.current) {
                std::cmp::Ordering::Less => "done",
                std::cmp::Ordering::Equal => "now ",
                std::cmp::Ordering::Greater => "    ",
            };
            println!("  {mark} {s}");
        }
    }
}

/// `ctl operators`: what PD is doing.
pub fn operators(target: &Target, json: bool) -> Result<(), String> {
    let ops = pd_client(target)?.operators().map_err(|e| e.to_string())?;
    match json {
        true => print_json(&Value::Array(ops.iter().map(operator_json).collect())),
        false => print_operators(&ops),
    }
    Ok(())
}

/// `ctl move`: an operator by hand.
pub fn move_region(target: &Target, region: u64, from: u64, to: u64, json: bool) -> Result<(), String> {
    let ops = pd_client(target)?.move_region(region, from, to).map_err(|e| e.to_string())?;
    match json {
        true => print_json(&Value::Array(ops.iter().map(operator_json).collect())),
        false => print_operators(&ops),
    }
    Ok(())
}

/// `ctl drain-store`.
pub fn drain_store(target: &Target, store: u64, json: bool) -> Result<(), String> {
    let v = pd_client(target)?.drain_store(store).map_err(|e| e.to_string())?;
    match json {
        true => print_json(&store_json(&v)),
        false => println!(
            "store {store}: draining — its replicas move to other stores (`ctl operators`), then it is removed"
        ),
    }
    Ok(())
}

pub fn stores(target: &Target, json: bool) -> Result<(), String> {
    let (views, _) = pd_client(target)?.stores().map_err(|e| e.to_string())?;
    if json {
        print_json(&Value::Array(views.iter().map(store_json).collect()));
    } else {
        print_stores(&views);
    }
    Ok(())
}

pub fn store(target: &Target, id: u64, json: bool) -> Result<(), String> {
    let v = pd_client(target)?.store(id).map_err(|e| e.to_string())?;
    if json {
        print_json(&store_json(&v));
    } else {
        print_stores(&[v]);
    }
    Ok(())
}

pub fn regions(target: &Target, json: bool) -> Result<(), String> {
    let views = pd_client(target)?.all_regions().map_err(|e| e.to_string())?;
    if json {
        print_json(&Value::Array(views.iter().map(region_json).collect()));
    } else {
        print_regions(&views);
    }
    Ok(())
}

fn print_region(v: RegionView, json: bool) {
    if json {
        print_json(&region_json(&v));
    } else {
        print_regions(&[v]);
    }
}

pub fn region_by_key(target: &Target, key: &str, json: bool) -> Result<(), String> {
    let v = pd_client(target)?.region_by_key(key.as_bytes()).map_err(|e| e.to_string())?;
    print_region(v, json);
    Ok(())
}

pub fn region_by_id(target: &Target, id: u64, json: bool) -> Result<(), String> {
    let v = pd_client(target)?.region_by_id(id).map_err(|e| e.to_string())?;
    print_region(v, json);
    Ok(())
}
