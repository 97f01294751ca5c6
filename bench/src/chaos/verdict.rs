//! What a chaos run's history says: whether every key's operations are
//! linearizable (the `history` crate's checker, key by key so that each
//! broken key is counted), whether a write that was acknowledged is missing
//! from what the final reads found, and how long the cluster took to serve
//! again after each fault.

use std::collections::BTreeMap;

use history::{Event, Op, Outcome, Verdict};

use super::nemesis::FaultRecord;

/// A key whose history has no linearization.
#[derive(Clone, Debug)]
pub struct Anomaly {
    pub key: Vec<u8>,
    pub explanation: String,
}

/// The history judged.
#[derive(Clone, Debug, Default)]
pub struct Judgement {
    pub anomalies: Vec<Anomaly>,
    /// Keys the checker ran out of steps on (not a failure: no verdict).
    pub undecided: Vec<Vec<u8>>,
    /// Keys whose final read lost an acknowledged write, each explained.
    pub acknowledged_lost: Vec<String>,
}

/// Checks every key of `events`; `final_reads` are the reads made after
/// every store restarted (also in `events`), by key.
pub fn judge(events: &[Event], final_reads: &BTreeMap<Vec<u8>, Option<Vec<u8>>>) -> Judgement {
    let mut by_key: BTreeMap<&[u8], Vec<Event>> = BTreeMap::new();
    for e in events {
        by_key.entry(&e.key).or_default().push(e.clone());
    }
    let mut out = Judgement::default();
    for (key, ops) in &by_key {
        match history::check(ops) {
            Verdict::Linearizable => {}
            Verdict::NotLinearizable { key, explanation } => out.anomalies.push(Anomaly { key, explanation }),
            Verdict::Unknown { key } => out.undecided.push(key),
        }
        if let Some(read) = final_reads.get(*key) {
            if let Some(lost) = lost_write(key, ops, read) {
                out.acknowledged_lost.push(lost);
            }
        }
    }
    out
}

/// A write that took effect (or may have): the value it left, when it was
/// invoked, and when it was acknowledged (None: its outcome is unknown).
struct Effect<'a> {
    value: Option<&'a [u8]>,
    call: u64,
    acked: Option<u64>,
    client: u64,
}

fn effects(ops: &[Event]) -> Vec<Effect<'_>> {
    let mut out = vec![];
    for e in ops {
        let value = match &e.op {
            Op::Get => continue,
            Op::Put(v) => Some(v.as_slice()),
            Op::Delete => None,
            Op::Cas { new, .. } => new.as_deref(),
        };
        let acked = match &e.outcome {
            Outcome::Put | Outcome::Delete | Outcome::Cas(true) => Some(e.ret),
            Outcome::Ambiguous => None,
            _ => continue,
        };
        out.push(Effect { value, call: e.call, acked, client: e.client });
    }
    out
}

/// Whether the value read back at the end (`read`) lost an acknowledged
/// write: it must be the value of a write not certainly overwritten — one
/// acknowledged no earlier than the last acknowledged write was invoked,
/// or one whose outcome is unknown (it may have happened at any time) —
/// or absent when no write was acknowledged. Values are unique, so the
/// read names the write it came from.
pub fn lost_write(key: &[u8], ops: &[Event], read: &Option<Vec<u8>>) -> Option<String> {
    let effects = effects(ops);
    let last_acked = effects.iter().filter(|e| e.acked.is_some()).max_by_key(|e| e.call);
    let Some(last) = last_acked else {
        // nothing acknowledged: whatever is there lost nothing acknowledged
        return None;
    };
    let fits = |e: &Effect| e.value == read.as_deref() && e.acked.is_none_or(|acked| acked >= last.call);
    if effects.iter().any(fits) {
        return None;
    }
    let shown = |v: Option<&[u8]>| v.map_or("absent".to_string(), |v| format!("{:?}", String::from_utf8_lossy(v)));
    Some(format!(
        "key {:?}: read back {} after every store restarted, but client {}'s write of {} (invoked at {} µs, \
         acknowledged at {} µs) came after any write that could have left it",
        String::from_utf8_lossy(key),
        shown(read.as_deref()),
        last.client,
        shown(last.value),
        last.call,
        last.acked.unwrap_or_default(),
    ))
}

/// After each fault that ended: how long until every client that went on
/// had an operation invoked after the end answered — the cluster serving
/// again — in µs. Faults no client operation followed are left out.
pub fn recovery_us(events: &[Event], faults: &[FaultRecord]) -> Vec<u64> {
    let mut by_client: BTreeMap<u64, Vec<(u64, u64)>> = BTreeMap::new();
    for e in events.iter().filter(|e| answered(&e.outcome)) {
        by_client.entry(e.client).or_default().push((e.call, e.ret));
    }
    for ops in by_client.values_mut() {
        ops.sort_unstable();
    }
    let mut out = vec![];
    for end in faults.iter().filter_map(|f| f.end_us) {
        let waits: Vec<u64> = by_client
            .values()
            .filter_map(|ops| {
                let i = ops.partition_point(|&(call, _)| call < end);
                ops.get(i).map(|&(_, ret)| ret.saturating_sub(end))
            })
            .collect();
        if let Some(&worst) = waits.iter().max() {
            out.push(worst);
        }
    }
    out
}

fn answered(o: &Outcome) -> bool {
    !matches!(o, Outcome::Ambiguous | Outcome::Failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(client: u64, op: Op, call: u64, ret: u64, outcome: Outcome) -> Event {
        Event { client, key: b"k".to_vec(), op, call, ret, outcome }
    }

    fn put(v: &str) -> Op {
        Op::Put(v.as_bytes().to_vec())
    }

    fn some(v: &str) -> Option<Vec<u8>> {
        Some(v.as_bytes().to_vec())
    }

    #[test]
    fn a_read_that_misses_the_last_acknowledged_write_is_a_loss_and_one_that_may_be_late_is_not() {
        let ops = vec![ev(1, put("a"), 0, 10, Outcome::Put), ev(2, put("b"), 20, 30, Outcome::Put)];
        assert!(lost_write(b"k", &ops, &some("b")).is_none());
        assert!(lost_write(b"k", &ops, &some("a")).unwrap().contains("\"b\""));
        assert!(lost_write(b"k", &ops, &None).is_some(), "absent after an acknowledged put");
        // overlapping writes: either may be last
        let ops = vec![ev(1, put("a"), 0, 40, Outcome::Put), ev(2, put("b"), 20, 30, Outcome::Put)];
        assert!(lost_write(b"k", &ops, &some("a")).is_none());
        // a write of unknown outcome may land at any time after its call
        let ops = vec![ev(1, put("a"), 0, 5, Outcome::Ambiguous), ev(2, put("b"), 20, 30, Outcome::Put)];
        assert!(lost_write(b"k", &ops, &some("a")).is_none());
        // nothing acknowledged: nothing to lose
        let ops = vec![ev(1, put("a"), 0, 5, Outcome::Ambiguous)];
        assert!(lost_write(b"k", &ops, &None).is_none());
        // a failed write and an unmatched cas leave nothing
        let ops = vec![
            ev(1, put("a"), 0, 5, Outcome::Put),
            ev(2, put("x"), 10, 15, Outcome::Failed),
            ev(3, Op::Cas { expect: some("z"), new: some("y") }, 20, 25, Outcome::Cas(false)),
        ];
        assert!(lost_write(b"k", &ops, &some("a")).is_none());
        assert!(lost_write(b"k", &ops, &some("x")).is_some());
        assert!(lost_write(b"k", &ops, &some("y")).is_some());
    }

    #[test]
    fn a_broken_key_is_counted_with_its_explanation() {
        let mut events = vec![ev(1, put("a"), 0, 10, Outcome::Put), ev(2, Op::Get, 20, 30, Outcome::Get(None))];
        let mut other = ev(1, put("v"), 0, 10, Outcome::Put);
        other.key = b"j".to_vec();
        events.push(other);
        let j = judge(&events, &BTreeMap::from([(b"j".to_vec(), some("v"))]));
        assert_eq!(j.anomalies.len(), 1);
        assert_eq!(j.anomalies[0].key, b"k");
        assert!(j.acknowledged_lost.is_empty() && j.undecided.is_empty());
    }

    #[test]
    fn recovery_is_the_longest_wait_of_the_clients_for_an_answer_after_a_fault_ends() {
        let events = vec![
            ev(1, Op::Get, 90, 95, Outcome::Get(None)),
            ev(1, Op::Get, 100, 150, Outcome::Failed),
            ev(1, Op::Get, 160, 170, Outcome::Get(None)),
            ev(2, Op::Get, 105, 130, Outcome::Get(None)),
        ];
        let fault = |end| FaultRecord {
            kind: super::super::nemesis::FaultKind::Kill,
            what: String::new(),
            start_us: 0,
            end_us: end,
        };
        assert_eq!(recovery_us(&events, &[fault(Some(100)), fault(None), fault(Some(500))]), vec![70]);
    }
}
