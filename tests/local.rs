//! `ringraft local` and `ringraft bench kv` as a user runs them: a local
//! cluster starts, serves `ringraft ctl`, and stops cleanly on Ctrl-C
//! (removing its temporary directory); the bench runs a short workload
//! against a cluster of its own and writes its JSON; bad flags explain
//! themselves. Every child is killed when a test ends, and every wait has a
//! deadline.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use common::{free_base_port, ringraft, wait_exit, with_deadline, Killed};

#[test]
fn a_local_cluster_serves_ctl_and_stops_cleanly_on_ctrl_c() {
    with_deadline(Duration::from_secs(120), || {
        let base = free_base_port(1);
        let child = ringraft()
            .args(["local", "--initial-regions", "8", "--base-port", &base.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut local = Killed(child);
        let mut lines = BufReader::new(local.0.stdout.take().unwrap()).lines();
        let mut out = vec![];
        for line in lines.by_ref() {
            let line = line.unwrap();
            let done = line.contains("Ctrl-C stops");
            out.push(line);
            if done {
                break;
            }
        }
        let text = out.join("\n");
        assert!(text.contains("every region led") && text.contains("store 3:"), "{text}");
        let dir = text.split("data in ").nth(1).unwrap().lines().next().unwrap().trim().to_string();
        let pd = text.split("pd: ").nth(1).unwrap().split_whitespace().next().unwrap().to_string();
        let put = ringraft().args(["ctl", "--pd", &pd, "put", "hello", "world"]).output().unwrap();
        assert!(put.status.success(), "{}", String::from_utf8_lossy(&put.stderr));
        let get = ringraft().args(["ctl", "--pd", &pd, "get", "hello"]).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&get.stdout).trim(), "world");
        // what a script records: one JSON object per operation, its outcome the exit status
        let json = |args: &[&str]| {
            let out = ringraft().args(["ctl", "--pd", &pd, "--json"]).args(args).output().unwrap();
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            (out.status.code(), v)
        };
        let (code, cas) = json(&["cas", "hello", "world", "there"]);
        assert_eq!((code, &cas["outcome"], &cas["swapped"]), (Some(0), &"ok".into(), &true.into()), "{cas}");
        let (code, cas) = json(&["cas", "hello", "world", "again"]);
        assert_eq!((code, &cas["swapped"]), (Some(0), &false.into()), "{cas}");
        let (code, get) = json(&["get", "hello"]);
        assert_eq!((code, &get["value"], &get["outcome"]), (Some(0), &"there".into(), &"ok".into()), "{get}");
        let (code, del) = json(&["delete", "hello"]);
        assert_eq!((code, &del["outcome"]), (Some(0), &"ok".into()), "{del}");
        let (code, get) = json(&["get", "hello"]);
        assert_eq!((code, &get["value"]), (Some(0), &serde_json::Value::Null), "{get}");
        // PD knows the three stores, all up, and 8 regions each with a leader
        let stores = ringraft().args(["ctl", "--pd", &pd, "--json", "stores"]).output().unwrap();
        let stores: serde_json::Value = serde_json::from_slice(&stores.stdout).unwrap();
        assert_eq!(stores.as_array().unwrap().len(), 3, "{stores}");
        let regions = ringraft().args(["ctl", "--pd", &pd, "--json", "regions"]).output().unwrap();
        let regions: serde_json::Value = serde_json::from_slice(&regions.stdout).unwrap();
        assert_eq!(regions.as_array().unwrap().len(), 8, "{regions}");
        // PD serves its metrics too
        let pd_line = text.lines().find(|l| l.trim_start().starts_with("pd: ")).unwrap();
        let status = pd_line.split("http://").nth(1).unwrap().split('/').next().unwrap();
        let mut conn = std::net::TcpStream::connect(status).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        std::io::Write::write_all(&mut conn, b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
        let mut metrics = String::new();
        std::io::Read::read_to_string(&mut conn, &mut metrics).unwrap();
        assert!(metrics.lines().any(|l| l == "ringraft_pd_regions 8"), "{metrics}");
        assert!(metrics.lines().any(|l| l == "ringraft_pd_stores_up 3"), "{metrics}");

        // Ctrl-C: every store stops in order, the temporary directory goes
        // SAFETY: kill(2) on our own child's pid
        unsafe { libc::kill(local.0.id() as libc::pid_t, libc::SIGINT) };
        let status = wait_exit(&mut local.0, Duration::from_secs(30), "ringraft local to stop on Ctrl-C");
        let mut err = String::new();
        std::io::Read::read_to_string(&mut local.0.stderr.take().unwrap(), &mut err).unwrap();
        assert!(status.success(), "exit {status}: {err}");
        assert!(err.contains("interrupted: stopping the stores"), "{err}");
        assert!(!std::path::Path::new(&dir).exists(), "{dir} was left behind");
    });
}

#[test]
fn the_kv_bench_runs_against_its_own_cluster_and_writes_its_json() {
    with_deadline(Duration::from_secs(180), || {
        let base = free_base_port(2);
        let dir = tempfile::tempdir().unwrap();
        let (json, hist, svg) = (dir.path().join("kv.json"), dir.path().join("kv.hgrm"), dir.path().join("kv.svg"));
        let out = ringraft()
            .args(["bench", "kv", "--duration", "3s", "--warmup", "1s", "--regions", "8", "--clients", "4"])
            .args(["--depth", "32", "--distribution", "zipfian", "--base-port", &base.to_string(), "--json"])
            .arg(&json)
            .arg("--hist")
            .arg(&hist)
            .arg("--svg")
            .arg(&svg)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains("ops/s") && stdout.contains("region writes per fsync"), "{stdout}");
        let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        for field in [
            "ops_per_sec",
            "mb_per_sec",
            "p50_us",
            "p90_us",
            "p99_us",
            "p999_us",
            "max_us",
            "errors",
            "regions_per_fsync",
            "messages_per_frame",
        ] {
            assert!(report.get(field).is_some_and(|v| !v.is_null()), "{field} missing: {report}");
        }
        assert_eq!(report["errors"], 0, "{report}");
        assert_eq!(report["killed_at_stop"], serde_json::json!([]), "every store stopped on SIGTERM: {report}");
        assert!(report["ops_per_sec"].as_f64().unwrap() > 0.0 && report["p99_us"].as_u64().unwrap() > 0, "{report}");
        assert!(report["regions_per_fsync"].as_f64().unwrap() >= 1.0, "{report}");
        let hist = std::fs::read_to_string(&hist).unwrap();
        assert!(hist.contains("Percentile") && hist.contains("#[Mean ="), "{hist}");
        let svg = std::fs::read_to_string(&svg).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("<polyline"), "{svg}");
    });
}

#[test]
fn an_interrupted_bench_stops_its_cluster_and_removes_it() {
    with_deadline(Duration::from_secs(120), || {
        let base = free_base_port(3);
        let child = ringraft()
            .args(["bench", "kv", "--duration", "60s", "--warmup", "0.5s", "--regions", "4", "--clients", "2"])
            .args(["--base-port", &base.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut bench = Killed(child);
        let mut lines = BufReader::new(bench.0.stdout.take().unwrap()).lines();
        let mut dir = None;
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(rest) = line.strip_prefix("kv bench: a local cluster in ") {
                dir = Some(rest.split(';').next().unwrap().to_string());
            }
            if line.contains("ops/s") {
                break; // the first progress line: the load runs
            }
        }
        let dir = dir.expect("the bench names its cluster's directory");
        assert!(std::path::Path::new(&dir).exists());
        // SAFETY: kill(2) on our own child's pid
        unsafe { libc::kill(bench.0.id() as libc::pid_t, libc::SIGINT) };
        let status = wait_exit(&mut bench.0, Duration::from_secs(45), "the bench to stop on Ctrl-C");
        let mut err = String::new();
        std::io::Read::read_to_string(&mut bench.0.stderr.take().unwrap(), &mut err).unwrap();
        assert!(!status.success() && err.contains("interrupted"), "exit {status}: {err}");
        assert!(!std::path::Path::new(&dir).exists(), "{dir} was left behind");
    });
}

#[test]
fn bench_check_prints_a_verdict_and_exits_by_it() {
    with_deadline(Duration::from_secs(120), || {
        let base = free_base_port(4);
        let out = ringraft()
            .args(["bench", "check", "--load", "small", "--duration", "2s", "--warmup", "0.5s", "--regions", "4"])
            .args(["--base-port", &base.to_string()])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let row =
            stdout.lines().find(|l| l.starts_with("small ")).unwrap_or_else(|| panic!("no verdict row:\n{stdout}"));
        let passed = row.ends_with("PASS");
        assert!(passed || row.ends_with("FAIL"), "{row}");
        assert_eq!(
            out.status.success(),
            passed,
            "exit status follows the verdict: {row}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("verdict") && stdout.contains("sustained/s"), "{stdout}");
    });
}

#[test]
fn bad_flags_explain_themselves() {
    let cases: [(&[&str], &str); 4] = [
        (&["bench", "kv", "--write-ratio", "2"], "--write-ratio 2 is not between 0 and 1"),
        (&["bench", "check", "--load", "huge"], "one of small, medium, large"),
        (&["bench", "kv", "--clients", "0"], "--clients"),
        (&["local", "--stores", "0"], "--stores must be 1..="),
    ];
    for (args, want) in cases {
        let out = ringraft().args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(want), "{args:?}: {err}");
    }
}

/// A key operation that cannot reach its cluster certainly had no effect:
/// exit status 1 and, with `--json`, the outcome "fail" and why.
#[test]
fn a_key_operation_that_reaches_no_cluster_says_it_failed() {
    with_deadline(Duration::from_secs(60), || {
        // (port 1 on loopback: nothing listens, the connection is refused at once)
        let out = ringraft().args(["ctl", "--pd", "127.0.0.1:1", "--json", "put", "k", "v"]).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!((&v["op"], &v["key"], &v["outcome"]), (&"put".into(), &"k".into(), &"fail".into()), "{v}");
        assert!(v["error"].as_str().is_some_and(|e| e.contains("127.0.0.1:1")), "{v}");
        let out = ringraft().args(["ctl", "--pd", "127.0.0.1:1", "get", "k"]).output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("fail"));
    });
}
