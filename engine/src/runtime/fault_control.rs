//! Faults a store takes at run time, for `ringraft chaos`: on a store
//! started with `--fault-injection`, its status endpoint answers
//!
//! - `GET /faults`: what is injected now, one `name value` line each;
//! - `POST /faults?cut=2,3&sync_delay_ms=40`: sets both at once (a field
//!   left out is cleared): this process sends nothing to stores 2 and 3
//!   (`transport::injected`: raft frames dropped, snapshot sends failed) and
//!   waits 40 ms before each WAL fdatasync (`wal::disk::injected`).
//!   `POST /faults` alone heals everything.
//!
//! Anyone who reaches the status address may then cut the store off or
//! slow it down, so a store without the flag refuses these requests (403),
//! and the flag is for test clusters only. What is injected lives in the
//! process: a restarted store starts without faults.

use std::collections::BTreeSet;
use std::time::Duration;

use transport::status::StatusReply;

/// What is injected into this process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Injected {
    /// Stores this process sends nothing to.
    pub cut: BTreeSet<u64>,
    /// Added before every WAL fdatasync.
    pub sync_delay: Duration,
}

impl Injected {
    /// Parses a `POST /faults` query (`cut=2,3&sync_delay_ms=40`, or empty).
    pub fn parse_query(query: &str) -> Result<Injected, String> {
        let mut out = Injected::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').ok_or_else(|| format!("{pair:?}: expected NAME=VALUE"))?;
            match name {
                "cut" => {
                    for id in value.split(',').filter(|v| !v.is_empty()) {
                        let id = id.parse::<u64>().map_err(|e| format!("cut: store id {id:?}: {e}"))?;
                        out.cut.insert(id);
                    }
                }
                "sync_delay_ms" => {
                    let ms = value.parse::<u64>().map_err(|e| format!("sync_delay_ms {value:?}: {e}"))?;
                    out.sync_delay = Duration::from_millis(ms);
                }
                other => return Err(format!("unknown fault {other:?} (cut, sync_delay_ms)")),
            }
        }
        Ok(out)
    }

    /// Makes this process's faults what `self` says.
    pub fn apply(&self) -> Result<(), String> {
        // (checked before either takes effect: a refused request changes nothing)
        if self.sync_delay > wal::disk::injected::SYNC_DELAY_MAX {
            return Err(format!("sync_delay_ms: at most {}", wal::disk::injected::SYNC_DELAY_MAX.as_millis()));
        }
        transport::injected::set_cut_stores(self.cut.clone())?;
        wal::disk::injected::set_sync_delay(self.sync_delay)
    }

    /// What is injected into this process now.
    pub fn current() -> Injected {
        Injected { cut: transport::injected::cut_stores(), sync_delay: wal::disk::injected::sync_delay() }
    }

    /// `cut 2,3` and `sync_delay_ms 40`, a line each.
    pub fn render(&self) -> String {
        let cut: Vec<String> = self.cut.iter().map(u64::to_string).collect();
        format!("cut {}\nsync_delay_ms {}\n", cut.join(","), self.sync_delay.as_millis())
    }
}

/// Answers a `/faults` request; `None` for any other target.
pub fn handle(enabled: bool, method: &str, target: &str) -> Option<StatusReply> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path != "/faults" {
        return None;
    }
    if !enabled {
        return Some(StatusReply {
            status: "403 Forbidden",
            body: "fault injection is off: a store takes faults only when started with --fault-injection\n".into(),
        });
    }
    let bad = |e: String| StatusReply { status: "400 Bad Request", body: format!("{e}\n") };
    Some(match method {
        "GET" => StatusReply::ok(Injected::current().render()),
        "POST" => match Injected::parse_query(query).and_then(|f| f.apply().map(|()| f)) {
            Ok(f) => {
                tracing::warn!(cut = ?f.cut, sync_delay = ?f.sync_delay, "fault injection: now in effect");
                StatusReply::ok(f.render())
            }
            Err(e) => bad(e),
        },
        _ => bad(format!("{method} /faults: use GET or POST")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_names_every_fault_and_anything_else_is_refused() {
        let f = Injected::parse_query("cut=2,3&sync_delay_ms=40").unwrap();
        assert_eq!(f, Injected { cut: BTreeSet::from([2, 3]), sync_delay: Duration::from_millis(40) });
        assert_eq!(Injected::parse_query("").unwrap(), Injected::default());
        assert_eq!(Injected::parse_query("cut=").unwrap(), Injected::default());
        for bad in ["cut=x", "sync_delay_ms=-1", "speed=3", "cut"] {
            assert!(Injected::parse_query(bad).is_err(), "{bad}");
        }
        assert_eq!(f.render(), "cut 2,3\nsync_delay_ms 40\n");
    }

    #[test]
    fn a_store_without_the_flag_refuses_and_other_targets_are_not_its_business() {
        let r = handle(false, "POST", "/faults?cut=2").unwrap();
        assert_eq!(r.status, "403 Forbidden");
        assert!(transport::injected::cut_stores().is_empty(), "nothing was applied");
        assert!(handle(true, "GET", "/metrics").is_none());
        assert_eq!(handle(true, "PUT", "/faults").unwrap().status, "400 Bad Request");
        assert_eq!(handle(true, "POST", "/faults?sync_delay_ms=99999999").unwrap().status, "400 Bad Request");
    }
}
