//! Regions split online, as real processes: PD with one initial region and
//! three `ringraft server --pd --region-split-size 1MiB`. A write load makes
//! the one region many, all led, PD's view the stores'; a store killed with
//! SIGKILL mid-way and restarted; `ctl split KEY` makes a region starting
//! at KEY; the whole cluster killed and restarted from its data directories
//! serves every acknowledged write. Children die with the test; every wait
//! has a deadline.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use engine::client::kv_client::{KvClient, KvError};
use engine::region::meta::RegionMeta;
use pd::PdClient;

use common::pd_cluster::{wait_for, Cluster};
use common::{ringraft, with_deadline};

/// Bytes of each value: ≈ 32 MB in all, so at 1 MiB the region splits into
/// 16 or more (halves hold 0.5–1 MiB).
const VALUE_BYTES: usize = 1000;
const KEYS: u32 = 32_000;
const BATCH: u32 = 500;

fn key(i: u32) -> Vec<u8> {
    // (spread over the key space: every split half keeps getting writes)
    format!("{:04}-{i:06}", i.wrapping_mul(7919) % 10_000).into_bytes()
}

fn value(i: u32) -> Vec<u8> {
    let mut v = format!("{i}-").into_bytes();
    v.resize(VALUE_BYTES, b'x');
    v
}

/// Writes keys `range` in pipelined batches; records what was acknowledged.
/// A put whose outcome is unknown (its store was killed) is left out.
fn write(client: &mut KvClient, range: std::ops::Range<u32>, acked: &mut BTreeMap<Vec<u8>, Vec<u8>>) {
    let ids: Vec<u32> = range.collect();
    for chunk in ids.chunks(BATCH as usize) {
        let items: Vec<(Vec<u8>, Vec<u8>)> = chunk.iter().map(|i| (key(*i), value(*i))).collect();
        for (item, outcome) in items.iter().zip(client.put_many(&items)) {
            match outcome {
                Ok(()) => {
                    acked.insert(item.0.clone(), item.1.clone());
                }
                // (unknown, or definitely not applied after the client's retries ran
                // out while a store was down: not acknowledged either way)
                Err(KvError::Ambiguous(_) | KvError::Unavailable { .. }) => {}
                Err(e) => panic!("put of {:?}: {e}", String::from_utf8_lossy(&item.0)),
            }
        }
    }
}

/// Every acknowledged key reads back with its value.
fn read_back(client: &mut KvClient, acked: &BTreeMap<Vec<u8>, Vec<u8>>, when: &str) {
    let keys: Vec<Vec<u8>> = acked.keys().cloned().collect();
    for chunk in keys.chunks(BATCH as usize) {
        for (k, got) in chunk.iter().zip(client.get_many(chunk)) {
            let got = got.unwrap_or_else(|e| panic!("{when}: get {:?}: {e}", String::from_utf8_lossy(k)));
            assert!(got.as_ref() == acked.get(k), "{when}: {:?} lost or changed", String::from_utf8_lossy(k));
        }
    }
}

#[test]
fn one_region_splits_as_it_fills_and_every_acknowledged_write_survives_kills_and_restarts() {
    with_deadline(Duration::from_secs(600), || {
        let mut c = Cluster::new(11, 1, &["--region-split-size", "1MiB"]);
        c.start_pd();
        for n in 1..=3 {
            c.start_store(n);
        }
        c.wait_all_led(Some(1));
        let mut client = KvClient::with_pd(c.pd_addr).unwrap();
        let mut acked = BTreeMap::new();

        write(&mut client, 0..KEYS / 3, &mut acked);
        // a store killed mid-way: the writes go on with the other two
        Cluster::kill(&mut c.stores[1]);
        write(&mut client, KEYS / 3..2 * KEYS / 3, &mut acked);
        c.start_store(2);
        write(&mut client, 2 * KEYS / 3..KEYS, &mut acked);
        assert!(acked.len() as u32 > KEYS * 9 / 10, "{} of {KEYS} writes acknowledged", acked.len());

        // the one region became many, all led, and PD's view is the leaders'
        let mut pd = PdClient::new(c.pd_addr, 0);
        wait_for("16 or more regions, all led", || {
            pd.all_regions().is_ok_and(|v| v.len() >= 16 && v.iter().all(|r| r.leader.is_some()))
        });
        let views = c.wait_all_led(None);
        for v in &views {
            let led = client.region(v.region.id).unwrap();
            let reported = RegionMeta::from(&v.region);
            // (PD hears of a change a heartbeat later: the same, or about to be)
            assert!(led.version >= reported.version, "region {}: PD is ahead of its leader", v.region.id);
        }
        wait_for("PD's view to be every leader's", || {
            let views = pd.all_regions().unwrap();
            views.iter().all(|v| client.region(v.region.id).is_ok_and(|m| m == RegionMeta::from(&v.region)))
        });
        read_back(&mut client, &acked, "after the splits");

        // an operator's split at a key of their choosing
        let at = b"5000-split-here".to_vec();
        let out =
            ringraft().args(["ctl", "--pd", &c.pd_addr.to_string(), "split", "5000-split-here"]).output().unwrap();
        assert!(out.status.success(), "ctl split: {}", String::from_utf8_lossy(&out.stderr));
        wait_for("PD to show a region starting at the split key", || {
            pd.region_by_key(&at).is_ok_and(|v| v.region.start_key == at)
        });
        let again =
            ringraft().args(["ctl", "--pd", &c.pd_addr.to_string(), "split", "5000-split-here"]).output().unwrap();
        assert_eq!(again.status.code(), Some(2), "a key that starts a region already is refused");
        assert!(String::from_utf8_lossy(&again.stderr).contains("already starts region"));

        // the whole cluster killed and restarted from its data directories
        for n in 1..=3 {
            Cluster::kill(&mut c.stores[n - 1]);
        }
        Cluster::kill(&mut c.pd);
        c.start_pd();
        for n in 1..=3 {
            c.start_store(n);
        }
        let after = c.wait_all_led(None);
        assert!(after.len() > views.len(), "{} regions after the restart, {} before", after.len(), views.len());
        let mut client = KvClient::with_pd(c.pd_addr).unwrap();
        read_back(&mut client, &acked, "after the whole cluster restarted");
        c.assert_running();
    });
}
