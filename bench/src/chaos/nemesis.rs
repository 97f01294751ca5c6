//! The process nemesis: what `ringraft chaos` does to the cluster's
//! processes and links, on two timelines drawn from the run's seed.
//!
//! - **Crashes**: every `kill_interval` (±50%) a store is killed with
//!   SIGKILL — the one leading most regions, two times in three — or, one
//!   time in eight, PD; it is started again on its data after up to a
//!   second (PD: up to three).
//! - **Disruptions**, one at a time, every `fault_interval` (±50%): a
//!   SIGSTOP pause of a store (0.5–3 s, then SIGCONT); a partition between
//!   stores (1–5 s: one store cut off from all, two stores cut from each
//!   other, or one direction only); a slow disk on one store (every WAL
//!   fdatasync 5–100 ms late, for 2–6 s).
//!
//! The first crash comes after one interval and the first disruption is a
//! partition, so every run longer than a few intervals has both.
//! Partitions and slow disks go through the stores' fault endpoints
//! (`--fault-injection`, the engine's `runtime::fault_control`); a store
//! restarted while one is in effect is given it again once it answers.
//! Every fault's end is recorded: the run measures how long the cluster
//! took to serve again after each.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use transport::SeededRng;

use crate::local::{metric, scrape, LocalCluster};

/// How long a fault endpoint may take to answer.
const FAULT_CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a restarted store may take to answer its fault endpoint.
const REAPPLY_WAIT: Duration = Duration::from_secs(5);

/// A kind of fault, as the report counts them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    Kill,
    PdKill,
    Pause,
    Partition,
    SlowDisk,
    Split,
    Move,
    TransferLeader,
}

impl FaultKind {
    pub const ALL: [FaultKind; 8] = [
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::PdKill,
        FaultKind::Partition,
        FaultKind::SlowDisk,
        FaultKind::Split,
        FaultKind::Move,
        FaultKind::TransferLeader,
    ];

    /// Its name in the report's `faults`.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::PdKill => "pd_kill",
            FaultKind::Pause => "pause",
            FaultKind::Partition => "partition",
            FaultKind::SlowDisk => "slow_disk",
            FaultKind::Split => "split",
            FaultKind::Move => "move",
            FaultKind::TransferLeader => "transfer_leader",
        }
    }
}

/// One fault the nemesis injected, on the clients' clock.
#[derive(Clone, Debug)]
pub struct FaultRecord {
    pub kind: FaultKind,
    /// What it did, for the log ("kill store 2 (id 4)").
    pub what: String,
    pub start_us: u64,
    /// When it was healed (the process restarted, the link restored); None
    /// for faults with no end (splits, moves, transfers).
    pub end_us: Option<u64>,
}

#[derive(Clone, Debug)]
pub struct NemesisConfig {
    pub seed: u64,
    pub kill_interval: Duration,
    pub fault_interval: Duration,
}

/// What is scheduled next on a timeline.
#[derive(Clone, Debug)]
enum Step {
    Crash,
    Restart { slot: u64, record: usize },
    RestartPd { record: usize },
    Disrupt,
    Heal { record: usize },
}

/// The nemesis between runs of `step`: what is broken now and what comes next.
pub struct Nemesis {
    cfg: NemesisConfig,
    rng: SeededRng,
    origin: Instant,
    /// (due, order, step): two timelines in one queue.
    queue: BTreeMap<(Instant, u64), Step>,
    order: u64,
    /// Stores killed and not yet restarted, and whether PD is.
    down: BTreeSet<u64>,
    pd_down: bool,
    paused: BTreeSet<u64>,
    /// Each store's injected faults now: the store ids it sends nothing
    /// to, and its fdatasync delay.
    cut: BTreeMap<u64, BTreeSet<u64>>,
    slow: BTreeMap<u64, Duration>,
    disruptions: u64,
    pub records: Vec<FaultRecord>,
    /// Calls that failed (a fault endpoint that did not answer…), for the log.
    pub errors: Vec<String>,
}

fn jitter(rng: &mut SeededRng, around: Duration) -> Duration {
    let ms = around.as_millis() as u64;
    Duration::from_millis(rng.between(ms / 2, ms + ms / 2).max(1))
}

fn millis(rng: &mut SeededRng, lo: u64, hi: u64) -> Duration {
    Duration::from_millis(rng.between(lo, hi))
}

impl Nemesis {
    pub fn new(cfg: NemesisConfig, origin: Instant) -> Nemesis {
        let mut rng = SeededRng::new(cfg.seed ^ 0x006e_656d_6573_6973);
        let now = Instant::now();
        let mut n = Nemesis {
            queue: BTreeMap::new(),
            order: 0,
            down: BTreeSet::new(),
            pd_down: false,
            paused: BTreeSet::new(),
            cut: BTreeMap::new(),
            slow: BTreeMap::new(),
            disruptions: 0,
            records: vec![],
            errors: vec![],
            rng: SeededRng::new(0),
            origin,
            cfg: cfg.clone(),
        };
        let first_crash = jitter(&mut rng, cfg.kill_interval);
        let first_disruption = jitter(&mut rng, cfg.fault_interval);
        n.rng = rng;
        n.schedule(now + first_crash, Step::Crash);
        n.schedule(now + first_disruption, Step::Disrupt);
        n
    }

    fn schedule(&mut self, at: Instant, step: Step) {
        self.order += 1;
        self.queue.insert((at, self.order), step);
    }

    fn now_us(&self) -> u64 {
        self.origin.elapsed().as_micros() as u64
    }

    /// When the next step is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.queue.keys().next().map(|&(at, _)| at)
    }

    fn record(&mut self, kind: FaultKind, what: String) -> usize {
        tracing::info!("chaos: {what}");
        self.records.push(FaultRecord { kind, what, start_us: self.now_us(), end_us: None });
        self.records.len() - 1
    }

    fn ended(&mut self, record: usize) {
        self.records[record].end_us = Some(self.now_us());
    }

    /// Carries out every step due by now.
    pub fn step(&mut self, cluster: &mut LocalCluster) {
        let now = Instant::now();
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let step = entry.remove();
            self.run(cluster, step);
        }
    }

    fn run(&mut self, cluster: &mut LocalCluster, step: Step) {
        let now = Instant::now();
        match step {
            Step::Crash => {
                self.crash(cluster, now);
                let next = jitter(&mut self.rng, self.cfg.kill_interval);
                self.schedule(now + next, Step::Crash);
            }
            Step::Restart { slot, record } => match cluster.start_store(slot) {
                Ok(_) => {
                    self.down.remove(&slot);
                    self.ended(record);
                    self.reapply(cluster, slot);
                }
                Err(e) => {
                    self.errors.push(format!("restart store {slot}: {e}"));
                    self.schedule(now + Duration::from_millis(500), Step::Restart { slot, record });
                }
            },
            Step::RestartPd { record } => match cluster.start_pd() {
                Ok(()) => {
                    self.pd_down = false;
                    self.ended(record);
                }
                Err(e) => {
                    self.errors.push(format!("restart PD: {e}"));
                    self.schedule(now + Duration::from_millis(500), Step::RestartPd { record });
                }
            },
            Step::Disrupt => match self.disrupt(cluster) {
                Some((record, hold)) => self.schedule(now + hold, Step::Heal { record }),
                None => {
                    // (a store is down: nothing to disrupt among fewer than two)
                    let next = jitter(&mut self.rng, self.cfg.fault_interval);
                    self.schedule(now + next, Step::Disrupt);
                }
            },
            Step::Heal { record } => {
                self.heal(cluster);
                self.ended(record);
                let next = jitter(&mut self.rng, self.cfg.fault_interval);
                self.schedule(now + next, Step::Disrupt);
            }
        }
    }

    /// Stores running now (not killed).
    fn up(&self, cluster: &LocalCluster) -> Vec<u64> {
        cluster.running().into_iter().filter(|n| !self.down.contains(n)).collect()
    }

    fn crash(&mut self, cluster: &mut LocalCluster, now: Instant) {
        if !self.pd_down && self.rng.between(0, 7) == 0 {
            cluster.kill_pd();
            self.pd_down = true;
            let record = self.record(FaultKind::PdKill, "kill -9 PD".into());
            let down = millis(&mut self.rng, 0, 3000);
            self.schedule(now + down, Step::RestartPd { record });
            return;
        }
        let up = self.up(cluster);
        // (one store down at a time from this timeline: with three, a second
        // would only stall the cluster until the first is back)
        if up.is_empty() || !self.down.is_empty() {
            return;
        }
        let slot = if self.rng.between(0, 2) < 2 {
            self.most_leaders(cluster, &up)
        } else {
            up[self.rng.between(0, up.len() as u64 - 1) as usize]
        };
        cluster.kill_store(slot);
        self.paused.remove(&slot);
        self.down.insert(slot);
        let id = cluster.store_id(slot).unwrap_or(0);
        let record = self.record(FaultKind::Kill, format!("kill -9 store {slot} (id {id})"));
        let down = millis(&mut self.rng, 0, 1000);
        self.schedule(now + down, Step::Restart { slot, record });
    }

    /// The running store leading the most regions (by its metrics; a paused
    /// store is not asked: it would not answer).
    fn most_leaders(&self, cluster: &LocalCluster, up: &[u64]) -> u64 {
        let mut best = (f64::MIN, up[0]);
        for &slot in up.iter().filter(|s| !self.paused.contains(s)) {
            let leaders = scrape(cluster.status_of(slot)).map_or(0.0, |m| metric(&m, "ringraft_leaders"));
            if leaders > best.0 {
                best = (leaders, slot);
            }
        }
        best.1
    }

    /// Starts a disruption; its record and how long it holds. None with
    /// fewer than two stores up.
    fn disrupt(&mut self, cluster: &mut LocalCluster) -> Option<(usize, Duration)> {
        let up = self.up(cluster);
        if up.len() < 2 {
            return None;
        }
        self.disruptions += 1;
        let pick = |rng: &mut SeededRng, from: &[u64]| from[rng.between(0, from.len() as u64 - 1) as usize];
        let kind = match self.disruptions {
            1 => FaultKind::Partition,
            _ => match self.rng.between(0, 9) {
                0..=4 => FaultKind::Partition,
                5..=7 => FaultKind::Pause,
                _ => FaultKind::SlowDisk,
            },
        };
        Some(match kind {
            FaultKind::Pause => {
                let slot = pick(&mut self.rng, &up);
                if let Some(pid) = cluster.store_pid(slot) {
                    // SAFETY: kill(2) on our own child's pid
                    unsafe { libc::kill(pid as libc::pid_t, libc::SIGSTOP) };
                    self.paused.insert(slot);
                }
                let record = self.record(FaultKind::Pause, format!("SIGSTOP store {slot}"));
                (record, millis(&mut self.rng, 500, 3000))
            }
            FaultKind::SlowDisk => {
                let slot = pick(&mut self.rng, &up);
                let delay = millis(&mut self.rng, 5, 100);
                self.slow.insert(slot, delay);
                self.apply(cluster, slot);
                let record = self.record(FaultKind::SlowDisk, format!("store {slot}: every fdatasync {delay:?} late"));
                (record, millis(&mut self.rng, 2000, 6000))
            }
            _ => {
                let a = pick(&mut self.rng, &up);
                let others: Vec<u64> = up.iter().copied().filter(|&s| s != a).collect();
                let b = pick(&mut self.rng, &others);
                let id = |s: u64| cluster.store_id(s).unwrap_or(0);
                let what = match self.rng.between(0, 2) {
                    0 => {
                        // a cut off from every other store, both ways
                        for &o in &others {
                            self.cut.entry(a).or_default().insert(id(o));
                            self.cut.entry(o).or_default().insert(id(a));
                        }
                        format!("partition: store {a} cut off from the others")
                    }
                    1 => {
                        self.cut.entry(a).or_default().insert(id(b));
                        self.cut.entry(b).or_default().insert(id(a));
                        format!("partition: stores {a} and {b} cut from each other")
                    }
                    _ => {
                        self.cut.entry(a).or_default().insert(id(b));
                        format!("partition: store {a} sends nothing to store {b} (one way)")
                    }
                };
                for s in up {
                    self.apply(cluster, s);
                }
                let record = self.record(FaultKind::Partition, what);
                (record, millis(&mut self.rng, 1000, 5000))
            }
        })
    }

    /// Ends every disruption: paused stores continue, links and disks heal.
    pub fn heal(&mut self, cluster: &mut LocalCluster) {
        for slot in std::mem::take(&mut self.paused) {
            if let Some(pid) = cluster.store_pid(slot) {
                // SAFETY: kill(2) on our own child's pid
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGCONT) };
            }
        }
        let touched: BTreeSet<u64> = self.cut.keys().chain(self.slow.keys()).copied().collect();
        self.cut.clear();
        self.slow.clear();
        for slot in touched {
            if !self.down.contains(&slot) {
                self.apply(cluster, slot);
            }
        }
    }

    /// Brings back whatever is down (at the end of the run).
    pub fn restore(&mut self, cluster: &mut LocalCluster) -> Result<(), String> {
        self.heal(cluster);
        let open: Vec<(usize, Step)> = std::mem::take(&mut self.queue)
            .into_values()
            .filter_map(|s| match s {
                Step::Restart { record, .. } | Step::RestartPd { record } | Step::Heal { record } => Some((record, s)),
                _ => None,
            })
            .collect();
        if self.pd_down {
            cluster.start_pd().map_err(|e| format!("restart PD: {e}"))?;
            self.pd_down = false;
        }
        for slot in std::mem::take(&mut self.down) {
            cluster.start_store(slot).map_err(|e| format!("restart store {slot}: {e}"))?;
        }
        for (record, _) in open {
            self.ended(record);
        }
        Ok(())
    }

    /// Sends store `slot` its injected faults as they stand.
    fn apply(&mut self, cluster: &LocalCluster, slot: u64) {
        let cut = self.cut.get(&slot).cloned().unwrap_or_default();
        let delay = self.slow.get(&slot).copied().unwrap_or_default();
        if let Err(e) = set_faults(cluster.status_of(slot), &cut, delay) {
            self.errors.push(format!("store {slot}: set faults: {e}"));
        }
    }

    /// After a restart: the store's faults again, once its endpoint answers.
    fn reapply(&mut self, cluster: &LocalCluster, slot: u64) {
        if !self.cut.contains_key(&slot) && !self.slow.contains_key(&slot) {
            return;
        }
        let deadline = Instant::now() + REAPPLY_WAIT;
        let cut = self.cut.get(&slot).cloned().unwrap_or_default();
        let delay = self.slow.get(&slot).copied().unwrap_or_default();
        loop {
            match set_faults(cluster.status_of(slot), &cut, delay) {
                Ok(()) => return,
                Err(e) if Instant::now() > deadline => {
                    self.errors.push(format!("store {slot}: faults after restart: {e}"));
                    return;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

/// Sets a store's injected faults (`POST /faults` on its status endpoint).
pub fn set_faults(status: SocketAddr, cut: &BTreeSet<u64>, sync_delay: Duration) -> Result<(), String> {
    let cut: Vec<String> = cut.iter().map(u64::to_string).collect();
    let target = format!("/faults?cut={}&sync_delay_ms={}", cut.join(","), sync_delay.as_millis());
    let fail = |e: std::io::Error| format!("POST {target} to {status}: {e}");
    let mut s = TcpStream::connect_timeout(&status, FAULT_CALL_TIMEOUT).map_err(fail)?;
    s.set_read_timeout(Some(FAULT_CALL_TIMEOUT)).map_err(fail)?;
    s.write_all(format!("POST {target} HTTP/1.1\r\nHost: ringraft\r\n\r\n").as_bytes()).map_err(fail)?;
    let mut reply = String::new();
    s.read_to_string(&mut reply).map_err(fail)?;
    match reply.split_ascii_whitespace().nth(1) {
        Some("200") => Ok(()),
        _ => Err(format!("POST {target} to {status}: {}", reply.lines().last().unwrap_or("no answer"))),
    }
}
