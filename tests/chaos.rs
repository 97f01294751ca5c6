//! `ringraft chaos` as a user runs it: a short run of real processes under
//! the nemesis (crashes, partitions, pauses, slow disks, splits, moves and
//! transfers) ends with every acknowledged write read back and a history
//! the checker finds linearizable, and writes the JSON report the soak
//! script reads. Every wait has a deadline; the run's processes die with it.

mod common;

use std::time::Duration;

use common::{free_base_port, ringraft, with_deadline};

#[test]
fn a_short_chaos_run_crashes_and_partitions_real_stores_and_its_history_checks_out() {
    with_deadline(Duration::from_secs(300), || {
        let base = free_base_port(21);
        let root = tempfile::tempdir().unwrap();
        let (run_dir, json) = (root.path().join("run"), root.path().join("report.json"));
        let out = ringraft()
            .args(["chaos", "--duration", "12s", "--seed", "7", "--stores", "4", "--clients", "3"])
            .args(["--kill-interval", "2s", "--fault-interval", "1500ms", "--op-interval", "1s"])
            .args(["--base-port", &base.to_string(), "--dir"])
            .arg(&run_dir)
            .arg("--json")
            .arg(&json)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        for field in ["anomalies", "acknowledged_lost", "unread"] {
            assert_eq!(report[field], 0, "{field}: {report}");
        }
        assert!(report["ok"].as_u64().unwrap() > 0, "{report}");
        let faults = &report["faults"];
        for kind in ["kill", "pause", "pd_kill", "partition", "slow_disk", "split", "move", "transfer_leader"] {
            assert!(faults[kind].is_u64(), "every kind is named: {kind} in {faults}");
        }
        assert!(faults["kill"].as_u64().unwrap() >= 1 && faults["partition"].as_u64().unwrap() >= 1, "{faults}");
        assert!(report["recovery_ms"]["p99"].is_number(), "{report}");
        // the history is the checker's format, every client operation in it (and the final reads)
        let path = report["history"].as_str().unwrap();
        let events = history::read_history(std::io::BufReader::new(std::fs::File::open(path).unwrap())).unwrap();
        let clients_ops = events.iter().filter(|e| e.client != 0).count() as u64;
        assert_eq!(clients_ops, report["ops"].as_u64().unwrap());
        assert!(events.len() as u64 > clients_ops, "the final reads are recorded too");
        let verdict = history::check(&events);
        assert!(!matches!(verdict, history::Verdict::NotLinearizable { .. }), "{verdict:?}");
        // the partitions reached the stores: their fault endpoints applied a cut
        let logs: String = (1..=4)
            .map(|n| {
                std::fs::read_to_string(run_dir.join("cluster").join(format!("store-{n}.log"))).unwrap_or_default()
            })
            .collect();
        assert!(logs.contains("fault injection: now in effect"), "no store took a fault");
    });
}

#[test]
fn chaos_flags_explain_themselves() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("left-over"), b"x").unwrap();
    let dir = dir.path().to_str().unwrap().to_string();
    let cases: [(&[&str], &str); 5] = [
        (&["chaos", "--stores", "2"], "a chaos cluster has 3 to 5"),
        (&["chaos", "--kill-interval", "1ms"], "--kill-interval 1ms: at least"),
        (&["chaos", "--dir", &dir], "not empty"),
        (&["chaos", "--clients", "0"], "--clients 0"),
        (&["chaos", "--duration", "fast"], "--duration"),
    ];
    for (args, want) in cases {
        let out = ringraft().args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(want), "{args:?}: {err}");
    }
}
