//! Linearizability checker for client histories: the simulator's, recorded
//! in memory, and real clients', read from JSON lines ([`crate::read_history`]).
//!
//! Clients log every request as an [`Event`]: who asked, which key, what
//! operation, the time it was called and returned, and what it answered.
//! [`check`] decides whether some total order of those operations
//! (a *linearization*) exists that (1) respects real time: if `a` returned
//! before `b` was called (`a.ret < b.call`; equal times count as concurrent),
//! `a` comes first; and (2) replayed against a plain map, starting empty,
//! produces exactly the answers the clients saw. If none exists, ringraft lost
//! a write, served a stale read or applied something twice, and the verdict
//! names the key and the operations that could not be placed.
//!
//! # Per key is enough
//! Every operation touches one key and the map is a product of independent
//! registers, one per key. Linearizability is *local* (Herlihy & Wing 1990,
//! "P-compositionality" in Horn & Kroening 2015): a history of such an object
//! is linearizable iff each key's sub-history is. (Given a linearization per
//! key, merge them by each operation's chosen point in real time; each point
//! lies inside its operation's interval, so the merge respects real time, and
//! an operation only sees its own key's register, so answers are unchanged.)
//! So the history is split by key and each register is searched alone: the
//! search is exponential in the number of *concurrent* operations, and per key
//! that number is small.
//!
//! # The search (Wing & Gong 1993, Lowe 2017, as in Porcupine)
//! A key's operations with known outcomes become call and return entries in
//! one list sorted by time (calls before returns at equal times). The ones
//! whose call precedes the first return entry are exactly those that may take
//! effect next: anything called later must wait for the op owning that
//! return. The depth-first search tries such a candidate against the
//! register's value; if its answer fits, the op is placed (its entries are
//! unlinked, dancing-links style, so backing up relinks them in O(1)) and the
//! search goes on from the new value; when no candidate leads anywhere it
//! backs up. Lowe's memoization prunes it: two nodes with the same placed set
//! and the same value have the same future, so each is expanded once. The set
//! is keyed as the first unplaced op (all before it are placed) plus a bitset
//! window from there to the last placed op, so a cache entry is as wide as
//! the concurrency, not as long as the history.
//!
//! Reads go first, and only one: a read (or failed CAS) that fits the value
//! can be moved to the front of any completion (it changes nothing, and as a
//! candidate nothing pending must precede it), so the first one that fits is
//! the node's only choice. Writes are branched on only when no read fits.
//!
//! # Ambiguous writes
//! An [`Outcome::Ambiguous`] write (a timeout, a lost connection) may take
//! effect at any time after its call, or never. Its return is +∞, so it holds
//! nothing back; it waits in a list of its own and is tried after the ops
//! with known outcomes at every node. The search succeeds once every op with
//! a known outcome is placed: the ambiguous writes still pending never took
//! effect. Which ones took effect is state, and it multiplies the nodes, so:
//! * fewer applied is better: a node with the same value and placed ops but
//!   a subset of the ambiguous writes applied has every future of one with
//!   more (the extra ones may still take effect, or never), so the cache keeps
//!   only the minimal applied sets per (value, placed set) and prunes nodes
//!   whose set contains one;
//! * ambiguous writes with the same effect are interchangeable once both are
//!   called: only the earliest pending one is tried;
//! * an ambiguous write followed directly by a blind write (Put, Delete) had
//!   no visible effect: that order is not tried, the blind write alone is.
//!
//! Each pruned node is dominated by one the search enters, so by induction on
//! the length of the shortest completion a linearizable history is always
//! recognized; the brute-force property test below checks it.
//!
//! Failed requests (definitely not applied) and ambiguous or failed reads
//! carry no information and are dropped. `Cas(false)` means the value was not
//! `expect` when it took effect. Before searching, a key whose ops saw a value
//! that nothing ever writes to it is rejected at once.
//!
//! # Limits
//! Trying one op against one value is one step; a key that needs more than
//! [`CHECK_STEPS_MAX`] steps gets [`Verdict::Unknown`] instead of hanging the
//! simulator. Each step enters at most one node (a cache entry of about 100
//! bytes: the key, a bitset window of 1 bit per overlapping op, and a set of
//! 1 bit per ambiguous write), so the same constant bounds memory. A history
//! without overlap costs one step per op; in general nodes are at most
//! (reachable placed sets) × (values) × (minimal applied sets), and the
//! reachable sets grow as 2^c with the number `c` of ops that overlap.
//! Measured (release build; a debug build is 5–7× slower): 10 000 ops on one
//! key from 10 overlapping clients with 5% ambiguous writes check in ~5 ms,
//! from 20 clients in ~0.1 s (~1 M steps); a stale read at the end of 6 600
//! ops with 70 ambiguous writes is found in ~80 ms; a key that exhausts the
//! budget does so in ~0.35 s (~1.8 s in debug) with ~170 MB at the peak.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use crate::event::{Event, Op, Outcome};

/// Most steps (one operation tried against one value) the search takes for one key before answering
/// [`Verdict::Unknown`]. Also bounds the memo cache: at most one node entered per step.
pub const CHECK_STEPS_MAX: u64 = 1 << 21;

/// Most operations an explanation lists in each of its parts (the placed prefix, the operations that would not fit).
const EXPLAIN_OPS_MAX: usize = 8;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// The first key (in byte order) whose sub-history has no linearization, with the furthest dead end the search
    /// found: the last operations placed, the value then, and the operations none of which could go next.
    NotLinearizable {
        key: Vec<u8>,
        explanation: String,
    },
    /// The search for this key (the first, in byte order, with no verdict) ran out of [`CHECK_STEPS_MAX`] steps,
    /// and no key was found broken.
    Unknown {
        key: Vec<u8>,
    },
}

/// Whether `history` is linearizable as a map from keys to values that starts empty. Panics on malformed events
/// (an outcome that does not answer its op, a completed op that returned before its call): those are bugs of the
/// recorder that built them. [`crate::read_history`] rejects such lines, so a history read never panics here.
pub fn check(history: &[Event]) -> Verdict {
    check_with_steps_max(history, CHECK_STEPS_MAX)
}

fn check_with_steps_max(history: &[Event], steps_max: u64) -> Verdict {
    let mut by_key: BTreeMap<&[u8], Vec<&Event>> = BTreeMap::new();
    for event in history {
        validate(event);
        if carries_information(event) {
            by_key.entry(&event.key).or_default().push(event);
        }
    }
    let mut unknown = None;
    for (key, events) in by_key {
        match KeyHistory::new(&events).search(steps_max) {
            Search::Linearizable => {}
            Search::NotLinearizable(explanation) => {
                return Verdict::NotLinearizable {
                    key: key.to_vec(),
                    explanation: format!("key {}: {explanation}", show(Some(key))),
                };
            }
            Search::Unknown => {
                unknown.get_or_insert(key);
            }
        }
    }
    match unknown {
        Some(key) => Verdict::Unknown { key: key.to_vec() },
        None => Verdict::Linearizable,
    }
}

fn validate(event: &Event) {
    let answers = matches!(
        (&event.op, &event.outcome),
        (_, Outcome::Ambiguous | Outcome::Failed)
            | (Op::Get, Outcome::Get(_))
            | (Op::Put(_), Outcome::Put)
            | (Op::Delete, Outcome::Delete)
            | (Op::Cas { .. }, Outcome::Cas(_))
    );
    assert!(answers, "{}: outcome {:?} does not answer {:?}", describe(event), event.outcome, event.op);
    if event.outcome != Outcome::Ambiguous {
        assert!(event.ret >= event.call, "{}: returned before it was called", describe(event));
    }
}

/// Whether the event constrains the history: failed requests and reads without an answer do not.
fn carries_information(event: &Event) -> bool {
    match event.outcome {
        Outcome::Failed => false,
        Outcome::Ambiguous => event.op != Op::Get,
        _ => true,
    }
}

/// Register values are interned per key: 0 is "absent", `i > 0` is `values[i]`.
type Value = u32;
const ABSENT: Value = 0;

/// An operation as the register model sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Step {
    Read(Value),
    /// Put or Delete (of a known or an ambiguous outcome: a write always fits).
    Write(Value),
    CasSucceeded {
        expect: Value,
        new: Value,
    },
    CasFailed {
        expect: Value,
    },
    CasAmbiguous {
        expect: Value,
        new: Value,
    },
}

impl Step {
    /// Whether it sets the value without looking at it.
    fn is_blind(self) -> bool {
        matches!(self, Step::Write(_))
    }

    /// The value after this step from `value`, or None if the answer the client saw is impossible there.
    fn apply(self, value: Value) -> Option<Value> {
        match self {
            Step::Read(read) => (read == value).then_some(value),
            Step::Write(new) => Some(new),
            Step::CasSucceeded { expect, new } => (expect == value).then_some(new),
            Step::CasFailed { expect } => (expect != value).then_some(value),
            Step::CasAmbiguous { expect, new } => Some(if expect == value { new } else { value }),
        }
    }
}

struct KeyOp<'a> {
    event: &'a Event,
    call: u64,
    /// u64::MAX for an ambiguous write.
    ret: u64,
    step: Step,
    /// None for an op with a known outcome; for an ambiguous write, its number among the key's ambiguous writes.
    ambiguous: Option<usize>,
    /// For an ambiguous write: the latest ambiguous write (op index) called before it with the same effect.
    same_before: Option<usize>,
}

impl KeyOp<'_> {
    fn pass(&self) -> Pass {
        match self.step {
            _ if self.ambiguous.is_some() => Pass::Ambiguous,
            Step::Read(_) | Step::CasFailed { .. } => Pass::ReadOnly,
            Step::Write(_) | Step::CasSucceeded { .. } | Step::CasAmbiguous { .. } => Pass::Writes,
        }
    }
}

/// One key's informative events, sorted by call time, values interned.
struct KeyHistory<'a> {
    ops: Vec<KeyOp<'a>>,
    /// Interned values; `values[0]` is None (absent).
    values: Vec<Option<&'a [u8]>>,
    /// How many ops have known outcomes, and how many are ambiguous writes.
    required: usize,
    ambiguous: usize,
}

enum Search {
    Linearizable,
    NotLinearizable(String),
    Unknown,
}

/// The order a search node tries its candidates in: one pass over them per kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pass {
    /// Reads (and failed CAS) that fit the value. Placing one first is never wrong, so the first that fits is the
    /// node's only choice: if the search fails after it, the node fails.
    ReadOnly,
    /// Writes with known outcomes, each a real choice.
    Writes,
    /// Ambiguous writes called before the first pending return, taking effect now.
    Ambiguous,
}

/// The pending ops' entries in two circular doubly linked lists sharing the arrays (entry `2i` is op `i`'s call,
/// `2i + 1` its return): `main` threads the ops with known outcomes, both entries, by time (calls first at equal
/// times); `ambiguous` threads the ambiguous writes' calls by time (their returns, at +∞, would close nothing).
/// An unlinked entry keeps its own links, so relinking in reverse order undoes unlinking (dancing links).
struct Links {
    next: Vec<usize>,
    prev: Vec<usize>,
    main: usize,
    ambiguous: usize,
}

impl Links {
    fn new(ops: &[KeyOp<'_>]) -> Links {
        let n = ops.len();
        let (main, ambiguous) = (2 * n, 2 * n + 1);
        let mut links = Links { next: vec![0; 2 * n + 2], prev: vec![0; 2 * n + 2], main, ambiguous };
        let mut entries: Vec<usize> = (0..2 * n).filter(|&e| ops[e / 2].ambiguous.is_none() || !is_return(e)).collect();
        entries.sort_by_key(|&e| (if is_return(e) { ops[e / 2].ret } else { ops[e / 2].call }, is_return(e), e / 2));
        let (mut last_main, mut last_ambiguous) = (main, ambiguous);
        for e in entries {
            let last = if ops[e / 2].ambiguous.is_some() { &mut last_ambiguous } else { &mut last_main };
            links.next[*last] = e;
            links.prev[e] = *last;
            *last = e;
        }
        for (sentinel, last) in [(main, last_main), (ambiguous, last_ambiguous)] {
            links.next[last] = sentinel;
            links.prev[sentinel] = last;
        }
        links
    }

    fn unlink(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p] = n;
        self.prev[n] = p;
    }

    fn relink(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p] = e;
        self.prev[n] = e;
    }

    /// The first pending return of an op with a known outcome (there is one while any such op is pending).
    fn first_return(&self) -> usize {
        let mut e = self.next[self.main];
        while !is_return(e) {
            e = self.next[e];
        }
        e
    }
}

/// A search node to come back to: `op` was placed in `pass`; the rest is the state to restore.
struct Frame {
    op: usize,
    pass: Pass,
    value: Value,
    placed_high: usize,
    applied_high: usize,
}

/// Where the search is: the ops placed so far, the value they leave, and the way back.
struct Searcher<'h, 'a> {
    history: &'h KeyHistory<'a>,
    links: Links,
    /// Placed ops with known outcomes, by index; `placed_high` is one past the highest.
    placed: Vec<u64>,
    placed_high: usize,
    /// Ambiguous writes placed (taking effect), by ambiguous number; `applied_high` is one past the highest.
    applied: Vec<u64>,
    applied_high: usize,
    value: Value,
    required_left: usize,
    stack: Vec<Frame>,
    /// Every node entered, for pruning. Keyed by the value and the placed ops with known outcomes (see
    /// [`Searcher::state_key`]); each holds the sets of ambiguous writes applied, keeping only the minimal ones: with
    /// fewer applied the future is a superset (the others may still take effect, or not), so a node whose set
    /// contains one already entered adds nothing.
    cache: HashMap<Box<[u64]>, Vec<Box<[u64]>>>,
    key: Vec<u64>,
}

impl<'h, 'a> Searcher<'h, 'a> {
    fn new(history: &'h KeyHistory<'a>) -> Self {
        Searcher {
            history,
            links: Links::new(&history.ops),
            placed: vec![0; history.ops.len().div_ceil(64)],
            placed_high: 0,
            applied: vec![0; history.ambiguous.div_ceil(64)],
            applied_high: 0,
            value: ABSENT,
            required_left: history.required,
            stack: Vec::new(),
            cache: HashMap::new(),
            key: Vec::new(),
        }
    }

    /// Places op `i`, moving the register to `value`, unless the node it leads to was entered before (or one that
    /// dominates it): then changes nothing and returns false.
    fn place(&mut self, i: usize, value: Value, pass: Pass) -> bool {
        let op = &self.history.ops[i];
        let saved =
            Frame { op: i, pass, value: self.value, placed_high: self.placed_high, applied_high: self.applied_high };
        self.mark(i, true);
        if let Some(a) = op.ambiguous {
            self.applied_high = self.applied_high.max(a + 1);
        } else {
            self.placed_high = self.placed_high.max(i + 1);
        }
        self.value = value;
        if self.enter() {
            self.required_left -= usize::from(op.ambiguous.is_none());
            self.stack.push(saved);
            true
        } else {
            self.restore(&saved);
            false
        }
    }

    fn is_placed(&self, i: usize) -> bool {
        let (bits, bit) = match self.history.ops[i].ambiguous {
            Some(a) => (&self.applied, a),
            None => (&self.placed, i),
        };
        bits[bit / 64] & (1 << (bit % 64)) != 0
    }

    /// Undoes the latest placement.
    fn unplace(&mut self) -> Option<Frame> {
        let frame = self.stack.pop()?;
        self.required_left += usize::from(self.history.ops[frame.op].ambiguous.is_none());
        self.restore(&frame);
        Some(frame)
    }

    fn restore(&mut self, frame: &Frame) {
        self.mark(frame.op, false);
        self.value = frame.value;
        self.placed_high = frame.placed_high;
        self.applied_high = frame.applied_high;
    }

    /// Sets or clears op `i`'s bit and unlinks or relinks its entries.
    fn mark(&mut self, i: usize, placed: bool) {
        let entries = [2 * i, 2 * i + 1];
        let (bits, bit, entries) = match self.history.ops[i].ambiguous {
            Some(a) => (&mut self.applied, a, &entries[..1]), // its return is in no list
            None => (&mut self.placed, i, &entries[..]),
        };
        if placed {
            bits[bit / 64] |= 1 << (bit % 64);
            entries.iter().for_each(|&e| self.links.unlink(e));
        } else {
            bits[bit / 64] &= !(1 << (bit % 64));
            entries.iter().rev().for_each(|&e| self.links.relink(e));
        }
    }

    /// Records the current node as entered; false if it (or a node dominating it) was entered before.
    fn enter(&mut self) -> bool {
        self.state_key();
        let applied = &self.applied[..self.applied_high.div_ceil(64)];
        let Some(sets) = self.cache.get_mut(self.key.as_slice()) else {
            self.cache.insert(self.key.as_slice().into(), vec![applied.into()]);
            return true;
        };
        if sets.iter().any(|seen| is_subset(seen, applied)) {
            return false;
        }
        sets.retain(|seen| !is_subset(applied, seen));
        sets.push(applied.into());
        true
    }

    /// Canonical words for (value, placed ops with known outcomes): `[value, first, window…]` where every op with a
    /// known outcome before `first` is placed, `first` is not, and the window is the placed bits from `first`'s word
    /// to the highest placed — as wide as the concurrency, not as long as the history.
    fn state_key(&mut self) {
        let first = self.links.next[self.links.main] / 2;
        debug_assert!(self.history.ops[first].ambiguous.is_none() && self.required_left > 0);
        self.key.clear();
        self.key.extend([u64::from(self.value), first as u64]);
        if self.placed_high > first {
            self.key.extend_from_slice(&self.placed[first / 64..self.placed_high.div_ceil(64)]);
        }
    }
}

/// Whether every bit of `a` is in `b` (both without trailing zero words).
fn is_subset(a: &[u64], b: &[u64]) -> bool {
    a.len() <= b.len() && a.iter().zip(b).all(|(a, b)| a & !b == 0)
}

/// The furthest point the search got stuck at, for the explanation.
struct DeadEnd {
    /// Ops with known outcomes placed.
    depth: usize,
    /// Ops placed, ambiguous writes included.
    placed: usize,
    value: Value,
    /// The last ops placed, oldest first.
    placed_tail: Vec<usize>,
    /// The ops with known outcomes that could have gone next, in call order.
    candidates: Vec<usize>,
    /// The op whose return closed the candidates.
    blocking: usize,
    /// Ambiguous writes that could have taken effect next.
    ambiguous: usize,
}

impl<'a> KeyHistory<'a> {
    fn new(events: &[&'a Event]) -> KeyHistory<'a> {
        let mut values: Vec<Option<&'a [u8]>> = vec![None];
        let mut ids: HashMap<&'a [u8], Value> = HashMap::new();
        let mut intern = |v: Option<&'a Vec<u8>>| -> Value {
            let Some(v) = v else { return ABSENT };
            *ids.entry(v.as_slice()).or_insert_with(|| {
                values.push(Some(v.as_slice()));
                Value::try_from(values.len() - 1).expect("fewer than 2^32 distinct values per key")
            })
        };
        let mut ops: Vec<KeyOp<'a>> = events
            .iter()
            .map(|&event| {
                let step = match (&event.op, &event.outcome) {
                    (Op::Get, Outcome::Get(v)) => Step::Read(intern(v.as_ref())),
                    (Op::Put(v), _) => Step::Write(intern(Some(v))),
                    (Op::Delete, _) => Step::Write(ABSENT),
                    (Op::Cas { expect, new }, outcome) => {
                        let (expect, new) = (intern(expect.as_ref()), intern(new.as_ref()));
                        match outcome {
                            Outcome::Cas(true) => Step::CasSucceeded { expect, new },
                            Outcome::Cas(false) => Step::CasFailed { expect },
                            _ => Step::CasAmbiguous { expect, new },
                        }
                    }
                    _ => unreachable!("validated and filtered before: {event:?}"),
                };
                let ambiguous = event.outcome == Outcome::Ambiguous;
                let ret = if ambiguous { u64::MAX } else { event.ret };
                KeyOp { event, call: event.call, ret, step, ambiguous: ambiguous.then_some(0), same_before: None }
            })
            .collect();
        ops.sort_by_key(|op| op.call); // stable: ties keep history order
        let mut ambiguous = 0;
        let mut latest: HashMap<Step, usize> = HashMap::new();
        for (i, op) in ops.iter_mut().enumerate().filter(|(_, op)| op.ambiguous.is_some()) {
            op.ambiguous = Some(ambiguous);
            op.same_before = latest.insert(op.step, i);
            ambiguous += 1;
        }
        KeyHistory { required: ops.len() - ambiguous, ambiguous, ops, values }
    }

    fn search(&self, steps_max: u64) -> Search {
        if self.required == 0 {
            return Search::Linearizable;
        }
        if let Some(explanation) = self.unwritten_value_seen() {
            return Search::NotLinearizable(explanation);
        }
        let mut s = Searcher::new(self);
        let mut steps = 0u64;
        let mut deepest: Option<DeadEnd> = None;
        let mut pass = Pass::ReadOnly;
        let mut entry = s.links.next[s.links.main];
        // In the ambiguous pass: the time of the first pending return; writes called later cannot go yet.
        let mut limit = 0u64;
        loop {
            let candidate = match pass {
                Pass::ReadOnly | Pass::Writes if !is_return(entry) => Some(entry / 2),
                Pass::ReadOnly => {
                    pass = Pass::Writes;
                    entry = s.links.next[s.links.main];
                    continue;
                }
                Pass::Writes => {
                    pass = Pass::Ambiguous;
                    limit = self.ops[entry / 2].ret;
                    entry = s.links.next[s.links.ambiguous];
                    continue;
                }
                Pass::Ambiguous => {
                    (entry != s.links.ambiguous && self.ops[entry / 2].call <= limit).then_some(entry / 2)
                }
            };
            let Some(i) = candidate else {
                // Every candidate of this node failed: the op owning the first pending return cannot be placed in
                // time. Keep the furthest such node (fewest ambiguous writes applied among equals) to explain, then
                // back up past every forced placement, to the latest real choice.
                let depth = self.required - s.required_left;
                if deepest.as_ref().is_none_or(|d| (depth, d.placed) > (d.depth, s.stack.len())) {
                    deepest = Some(self.dead_end(&s, limit));
                }
                loop {
                    let Some(frame) = s.unplace() else {
                        return Search::NotLinearizable(self.explain(&deepest.expect("recorded just before")));
                    };
                    if frame.pass != Pass::ReadOnly {
                        pass = frame.pass;
                        entry = s.links.next[2 * frame.op];
                        if pass == Pass::Ambiguous {
                            limit = self.ops[s.links.first_return() / 2].ret;
                        }
                        break;
                    }
                }
                continue;
            };
            let op = &self.ops[i];
            let hidden = s.stack.last().is_some_and(|f| self.ops[f.op].ambiguous.is_some());
            if op.pass() != pass || op.same_before.is_some_and(|j| !s.is_placed(j)) || (hidden && op.step.is_blind()) {
                entry = s.links.next[entry];
                continue;
            }
            steps += 1;
            if steps > steps_max {
                return Search::Unknown;
            }
            let Some(value) = op.step.apply(s.value) else {
                entry = s.links.next[entry];
                continue;
            };
            if op.ambiguous.is_none() && s.required_left == 1 {
                return Search::Linearizable; // ambiguous writes still pending never took effect
            }
            if s.place(i, value, pass) {
                pass = Pass::ReadOnly;
                entry = s.links.next[s.links.main];
            } else if pass == Pass::ReadOnly {
                // The forced choice leads where the search has been: this node fails with it.
                pass = Pass::Ambiguous;
                limit = self.ops[s.links.first_return() / 2].ret;
                entry = s.links.ambiguous;
            } else {
                entry = s.links.next[entry];
            }
        }
    }

    /// A quick verdict the search might need a long time for: an op saw a value that nothing ever writes to this key.
    fn unwritten_value_seen(&self) -> Option<String> {
        let mut written = vec![false; self.values.len()];
        written[ABSENT as usize] = true;
        for op in &self.ops {
            if let Step::Write(new) | Step::CasSucceeded { new, .. } | Step::CasAmbiguous { new, .. } = op.step {
                written[new as usize] = true;
            }
        }
        self.ops.iter().find_map(|op| match op.step {
            Step::Read(seen) | Step::CasSucceeded { expect: seen, .. } if !written[seen as usize] => Some(format!(
                "{}: impossible, no operation on this key ever writes {}",
                describe(op.event),
                self.show_value(seen)
            )),
            _ => None,
        })
    }

    fn dead_end(&self, s: &Searcher<'_, 'a>, limit: u64) -> DeadEnd {
        let links = &s.links;
        let mut candidates = Vec::new();
        let mut e = links.next[links.main];
        while !is_return(e) {
            candidates.push(e / 2);
            e = links.next[e];
        }
        let mut ambiguous = 0;
        let mut a = links.next[links.ambiguous];
        while a != links.ambiguous && self.ops[a / 2].call <= limit {
            ambiguous += 1;
            a = links.next[a];
        }
        let tail = &s.stack[s.stack.len().saturating_sub(EXPLAIN_OPS_MAX)..];
        DeadEnd {
            depth: self.required - s.required_left,
            placed: s.stack.len(),
            value: s.value,
            placed_tail: tail.iter().map(|f| f.op).collect(),
            candidates,
            blocking: e / 2,
            ambiguous,
        }
    }

    /// Why the furthest dead end is one: what was placed, the value then, and why each candidate does not fit it.
    fn explain(&self, dead: &DeadEnd) -> String {
        let mut s = format!("no linearization of its {} operations", self.ops.len());
        if self.ambiguous > 0 {
            let _ = write!(s, " ({} with known outcomes, {} ambiguous write(s))", self.required, self.ambiguous);
        }
        if dead.placed == 0 {
            s.push_str("; none can go first: initially the value is ");
        } else {
            let _ = write!(s, "; the furthest any order gets places {} with known outcomes", dead.depth);
            if dead.placed > dead.placed_tail.len() {
                let _ = write!(s, " (last {} shown)", dead.placed_tail.len());
            }
            s.push(':');
            for &i in &dead.placed_tail {
                let note = if self.ops[i].ambiguous.is_some() { " — taking effect" } else { "" };
                let _ = write!(s, "\n  {}{note}", describe(self.ops[i].event));
            }
            s.push_str("\nthen the value is ");
        }
        let _ = write!(
            s,
            "{}, and none of the {} operation(s) that may go next fits it",
            self.show_value(dead.value),
            dead.candidates.len()
        );
        if dead.ambiguous > 0 {
            let _ = write!(s, " (nor does letting any of {} ambiguous write(s) take effect first)", dead.ambiguous);
        }
        s.push(':');
        for &i in dead.candidates.iter().take(EXPLAIN_OPS_MAX) {
            let op = &self.ops[i];
            let _ = write!(s, "\n  {}: {}", describe(op.event), self.misfit(op.step, dead.value));
            if i == dead.blocking {
                s.push_str(" (and it must take effect before anything called after its return)");
            }
        }
        if dead.candidates.len() > EXPLAIN_OPS_MAX {
            let _ = write!(s, "\n  … and {} more", dead.candidates.len() - EXPLAIN_OPS_MAX);
        }
        s
    }

    fn misfit(&self, step: Step, value: Value) -> String {
        let now = self.show_value(value);
        match step {
            Step::Read(_) => format!("impossible, the value is {now}"),
            Step::CasSucceeded { expect, .. } => {
                format!("impossible, the value is {now}, not the expected {}", self.show_value(expect))
            }
            Step::CasFailed { .. } => format!("impossible, the value is {now}, the expected one"),
            Step::Write(_) | Step::CasAmbiguous { .. } => "fits, but every order placing it next fails later".into(),
        }
    }

    fn show_value(&self, value: Value) -> String {
        show(self.values[value as usize])
    }
}

/// Entry `2i` is op `i`'s call, `2i + 1` its return.
fn is_return(entry: usize) -> bool {
    entry & 1 == 1
}

fn show(value: Option<&[u8]>) -> String {
    match value {
        None => "absent".into(),
        Some(v) => format!("\"{}\"", v.escape_ascii()),
    }
}

fn describe(event: &Event) -> String {
    let show_opt = |v: &Option<Vec<u8>>| show(v.as_deref());
    let op = match &event.op {
        Op::Get => "get".to_string(),
        Op::Put(v) => format!("put {}", show(Some(v))),
        Op::Delete => "delete".to_string(),
        Op::Cas { expect, new } => format!("cas {} -> {}", show_opt(expect), show_opt(new)),
    };
    let outcome = match &event.outcome {
        Outcome::Get(v) => format!(" returned {}", show_opt(v)),
        Outcome::Put | Outcome::Delete => String::new(),
        Outcome::Cas(true) => " succeeded".into(),
        Outcome::Cas(false) => " failed".into(),
        Outcome::Ambiguous => " (ambiguous)".into(),
        Outcome::Failed => " (failed)".into(),
    };
    let ret = if event.outcome == Outcome::Ambiguous { "?".to_string() } else { event.ret.to_string() };
    format!("client {} {op}{outcome} [call {}, ret {ret}]", event.client, event.call)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    fn ev(client: u64, key: &str, op: Op, call: u64, ret: u64, outcome: Outcome) -> Event {
        Event { client, key: key.as_bytes().to_vec(), op, call, ret, outcome }
    }
    fn v(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }
    fn put(client: u64, key: &str, value: &str, call: u64, ret: u64) -> Event {
        ev(client, key, Op::Put(v(value)), call, ret, Outcome::Put)
    }
    fn get(client: u64, key: &str, seen: Option<&str>, call: u64, ret: u64) -> Event {
        ev(client, key, Op::Get, call, ret, Outcome::Get(seen.map(v)))
    }
    fn cas(client: u64, expect: Option<&str>, new: Option<&str>, call: u64, ret: u64, ok: bool) -> Event {
        ev(client, "k", Op::Cas { expect: expect.map(v), new: new.map(v) }, call, ret, Outcome::Cas(ok))
    }
    fn ambiguous_put(client: u64, value: &str, call: u64) -> Event {
        ev(client, "k", Op::Put(v(value)), call, 0, Outcome::Ambiguous)
    }
    fn is_linearizable(history: &[Event]) -> bool {
        match check(history) {
            Verdict::Linearizable => true,
            Verdict::NotLinearizable { .. } => false,
            Verdict::Unknown { key } => panic!("no verdict for key {key:?}"),
        }
    }

    #[test]
    fn empty_and_sequential_histories_are_linearizable() {
        assert_eq!(check(&[]), Verdict::Linearizable);
        let history = [
            get(1, "k", None, 0, 1),
            put(1, "k", "a", 2, 3),
            get(2, "k", Some("a"), 4, 5),
            ev(2, "k", Op::Delete, 6, 7, Outcome::Delete),
            get(1, "k", None, 8, 9),
            put(2, "k", "b", 10, 11),
            get(1, "k", Some("b"), 12, 13),
        ];
        assert_eq!(check(&history), Verdict::Linearizable);
    }

    #[test]
    fn stale_read_after_a_completed_write_is_not_linearizable() {
        let history = [put(1, "k", "a", 0, 1), put(1, "k", "b", 2, 3), get(2, "k", Some("a"), 4, 5)];
        assert!(!is_linearizable(&history));
        // The same read overlapping the second write may still see the first.
        let history = [put(1, "k", "a", 0, 1), put(1, "k", "b", 2, 5), get(2, "k", Some("a"), 4, 6)];
        assert!(is_linearizable(&history));
    }

    #[test]
    fn overlapping_writes_may_take_effect_in_either_order() {
        for seen in ["a", "b"] {
            let history = [put(1, "k", "a", 0, 10), put(2, "k", "b", 1, 9), get(3, "k", Some(seen), 11, 12)];
            assert!(is_linearizable(&history), "read of {seen}");
        }
        // But once one reader saw b then a, a later reader cannot see b again.
        let history = [
            put(1, "k", "a", 0, 10),
            put(2, "k", "b", 1, 9),
            get(3, "k", Some("b"), 2, 3),
            get(3, "k", Some("a"), 11, 12),
            get(4, "k", Some("b"), 13, 14),
        ];
        assert!(!is_linearizable(&history));
    }

    #[test]
    fn read_of_a_value_no_write_produced_is_not_linearizable() {
        let history = [put(1, "k", "a", 0, 10), get(2, "k", Some("z"), 1, 2)];
        assert!(!is_linearizable(&history));
        // Found without searching, however many writes overlap.
        let mut history: Vec<Event> = (0..40).map(|c| put(c, "k", &format!("v{c}"), 0, 100)).collect();
        history.push(get(99, "k", Some("v40"), 101, 102));
        let Verdict::NotLinearizable { explanation, .. } = check_with_steps_max(&history, 0) else {
            panic!("a read of v40 passed")
        };
        assert!(explanation.contains("client 99 get returned \"v40\" [call 101, ret 102]: impossible, no operation"));
        // Nor may a key read as present before anything was written, or before the write that produces the value.
        assert!(!is_linearizable(&[get(1, "k", Some("a"), 0, 1)]));
        assert!(!is_linearizable(&[get(1, "k", Some("a"), 0, 1), put(2, "k", "a", 2, 3)]));
    }

    #[test]
    fn equal_return_and_call_times_count_as_concurrent() {
        let history = [put(1, "k", "a", 0, 5), get(2, "k", None, 5, 6)];
        assert!(is_linearizable(&history));
        let history = [put(1, "k", "a", 0, 4), get(2, "k", None, 5, 6)];
        assert!(!is_linearizable(&history));
    }

    #[test]
    fn cas_succeeds_only_on_the_expected_value_and_writes_the_new_one() {
        // From absent: expect None succeeds and writes; expect Some fails.
        let history = [
            cas(1, Some("x"), Some("y"), 0, 1, false),
            cas(1, None, Some("a"), 2, 3, true),
            get(2, "k", Some("a"), 4, 5),
            cas(2, Some("a"), None, 6, 7, true),
            get(1, "k", None, 8, 9),
        ];
        assert!(is_linearizable(&history));
        // A success on a value that was not the expected one (any more).
        let history = [put(1, "k", "b", 0, 1), put(1, "k", "a", 2, 3), cas(2, Some("b"), Some("c"), 4, 5, true)];
        assert!(!is_linearizable(&history));
        // A success must have written: a later read of the old value is stale.
        let history = [put(1, "k", "a", 0, 1), cas(2, Some("a"), Some("c"), 2, 3, true), get(1, "k", Some("a"), 4, 5)];
        assert!(!is_linearizable(&history));
    }

    #[test]
    fn cas_fails_only_when_the_value_is_not_the_expected_one_and_writes_nothing() {
        let history = [put(1, "k", "a", 0, 1), cas(2, Some("b"), Some("c"), 2, 3, false), get(1, "k", Some("a"), 4, 5)];
        assert!(is_linearizable(&history));
        // A failure although the expected value was there.
        let history = [put(1, "k", "a", 0, 1), cas(2, Some("a"), Some("c"), 2, 3, false)];
        assert!(!is_linearizable(&history));
        // Two racing CAS from the same value: exactly one may win.
        let race = |ok1, ok2| {
            [put(1, "k", "a", 0, 1), cas(2, Some("a"), Some("b"), 2, 5, ok1), cas(3, Some("a"), Some("c"), 2, 5, ok2)]
        };
        assert!(is_linearizable(&race(true, false)));
        assert!(is_linearizable(&race(false, true)));
        assert!(!is_linearizable(&race(true, true)));
        assert!(!is_linearizable(&race(false, false)));
    }

    #[test]
    fn ambiguous_write_may_take_effect_at_any_later_time() {
        let history = [
            put(1, "k", "a", 0, 1),
            ambiguous_put(2, "b", 2),
            get(3, "k", Some("a"), 3, 4),
            get(3, "k", Some("a"), 50, 51),
            get(3, "k", Some("b"), 100, 101),
        ];
        assert!(is_linearizable(&history));
    }

    #[test]
    fn ambiguous_write_may_never_take_effect() {
        let history = [
            put(1, "k", "a", 0, 1),
            ambiguous_put(2, "b", 2),
            get(3, "k", Some("a"), 3, 4),
            put(1, "k", "c", 5, 6),
            get(3, "k", Some("c"), 100, 101),
        ];
        assert!(is_linearizable(&history));
        // Ambiguous writes alone constrain nothing.
        assert!(is_linearizable(&[ambiguous_put(1, "a", 0), ambiguous_put(2, "b", 0)]));
    }

    #[test]
    fn ambiguous_write_takes_effect_at_most_once() {
        let history = [
            ambiguous_put(2, "b", 0),
            get(3, "k", Some("b"), 1, 2),
            put(1, "k", "a", 3, 4),
            get(3, "k", Some("b"), 5, 6),
        ];
        assert!(!is_linearizable(&history));
    }

    #[test]
    fn identical_ambiguous_writes_each_take_effect_at_most_once() {
        // Three ambiguous puts of b, called at 0, 5 and 15; b is read back after each of `times` puts of a (the reads
        // end at 4, 14, 24, …), so each read needs a fresh one, called before it.
        let seen_b_after_each_put_a = |times: u64| {
            let mut history = vec![ambiguous_put(1, "b", 0), ambiguous_put(2, "b", 5), ambiguous_put(4, "b", 15)];
            for t in 0..times {
                history.push(put(3, "k", "a", 10 * t + 1, 10 * t + 2));
                history.push(get(3, "k", Some("b"), 10 * t + 3, 10 * t + 4));
            }
            history
        };
        assert!(is_linearizable(&seen_b_after_each_put_a(3)));
        assert!(!is_linearizable(&seen_b_after_each_put_a(4)));
    }

    #[test]
    fn ambiguous_write_used_up_on_one_path_is_still_available_on_another() {
        // b is needed twice: first from a (the put or the CAS can make it), then from d (only the put can). A search
        // that remembered "value b after the first read" without which ambiguous write made it would miss this.
        let amb_cas = ev(3, "k", Op::Cas { expect: Some(v("a")), new: Some(v("b")) }, 2, 0, Outcome::Ambiguous);
        let history = [
            put(1, "k", "a", 0, 1),
            ambiguous_put(2, "b", 2),
            amb_cas,
            get(4, "k", Some("b"), 3, 4),
            put(1, "k", "d", 5, 6),
            get(4, "k", Some("b"), 7, 8),
        ];
        assert!(is_linearizable(&history));
    }

    #[test]
    fn read_of_an_ambiguous_value_before_its_call_is_not_linearizable() {
        let history = [get(3, "k", Some("b"), 0, 1), ambiguous_put(2, "b", 2)];
        assert!(!is_linearizable(&history));
    }

    #[test]
    fn ambiguous_cas_takes_effect_only_if_the_value_matches() {
        let amb =
            |expect: &str| ev(2, "k", Op::Cas { expect: Some(v(expect)), new: Some(v("c")) }, 2, 0, Outcome::Ambiguous);
        let history = [put(1, "k", "a", 0, 1), amb("a"), get(3, "k", Some("c"), 5, 6)];
        assert!(is_linearizable(&history));
        let history = [put(1, "k", "a", 0, 1), amb("x"), get(3, "k", Some("c"), 5, 6)];
        assert!(!is_linearizable(&history));
    }

    #[test]
    fn failed_writes_and_unanswered_reads_are_dropped() {
        let history = [
            put(1, "k", "a", 0, 1),
            ev(2, "k", Op::Put(v("b")), 2, 3, Outcome::Failed),
            ev(3, "k", Op::Get, 2, 3, Outcome::Ambiguous),
            ev(3, "k", Op::Get, 4, 5, Outcome::Failed),
            get(1, "k", Some("a"), 6, 7),
        ];
        assert!(is_linearizable(&history));
        let history =
            [put(1, "k", "a", 0, 1), ev(2, "k", Op::Put(v("b")), 2, 3, Outcome::Failed), get(1, "k", Some("b"), 6, 7)];
        assert!(!is_linearizable(&history));
    }

    #[test]
    fn only_the_broken_key_is_reported_among_several() {
        let history = [
            put(1, "a", "1", 0, 1),
            put(2, "b", "1", 0, 1),
            put(3, "c", "1", 0, 1),
            get(1, "a", Some("1"), 2, 3),
            put(2, "b", "2", 2, 3),
            get(3, "c", Some("1"), 2, 3),
            get(1, "b", Some("1"), 4, 5), // stale
            get(2, "a", Some("1"), 4, 5),
            get(3, "c", Some("1"), 4, 5),
        ];
        match check(&history) {
            Verdict::NotLinearizable { key, .. } => assert_eq!(key, b"b"),
            other => panic!("expected key b to be broken, got {other:?}"),
        }
    }

    #[test]
    fn explanation_names_the_op_that_cannot_be_placed_with_its_times_and_the_value() {
        let history = [put(1, "k", "a", 0, 1), put(1, "k", "b", 2, 3), get(7, "k", Some("a"), 4, 5)];
        let Verdict::NotLinearizable { key, explanation } = check(&history) else { panic!("stale read passed") };
        assert_eq!(key, b"k");
        assert!(explanation.starts_with("key \"k\": "), "{explanation}");
        assert!(explanation.contains("the furthest any order gets places 2 with known outcomes"), "{explanation}");
        assert!(explanation.contains("client 1 put \"b\" [call 2, ret 3]"), "{explanation}");
        assert!(
            explanation.contains("client 7 get returned \"a\" [call 4, ret 5]: impossible, the value is \"b\""),
            "{explanation}"
        );
    }

    #[test]
    fn search_over_its_step_budget_reports_unknown_for_that_key() {
        // Many overlapping writes, then two reads no order explains: the search must try many orders to conclude.
        let mut history: Vec<Event> = (0..12).map(|c| put(c, "k", &format!("v{c}"), 0, 100)).collect();
        history.push(get(98, "k", Some("v0"), 101, 102));
        history.push(get(99, "k", Some("v1"), 103, 104));
        history.push(put(1, "a", "1", 0, 1));
        assert_eq!(check_with_steps_max(&history, 50), Verdict::Unknown { key: v("k") });
        assert!(!is_linearizable(&history));
        // A broken key wins over a key without a verdict.
        history.push(get(1, "a", Some("0"), 2, 3));
        assert!(matches!(check_with_steps_max(&history, 50), Verdict::NotLinearizable { key, .. } if key == b"a"));
    }

    #[test]
    fn long_sequential_history_costs_about_one_step_per_op() {
        let mut history = Vec::new();
        for t in 0..20_000u64 {
            let value = format!("{}", t / 2);
            history.push(if t % 2 == 0 {
                put(t % 5, "k", &value, 2 * t, 2 * t + 1)
            } else {
                get(t % 5, "k", Some(&value), 2 * t, 2 * t + 1)
            });
        }
        assert_eq!(check_with_steps_max(&history, 20_000), Verdict::Linearizable);
    }

    #[test]
    #[should_panic(expected = "returned before it was called")]
    fn completed_op_returning_before_its_call_is_rejected() {
        check(&[put(1, "k", "a", 5, 4)]);
    }

    #[test]
    #[should_panic(expected = "does not answer")]
    fn outcome_that_does_not_answer_its_op_is_rejected() {
        check(&[ev(1, "k", Op::Get, 0, 1, Outcome::Put)]);
    }

    // ---- brute force and property tests ----

    /// Tries every order of the whole (multi-key) history that respects real time, for every choice of which
    /// ambiguous writes took effect, against one map: no per-key split, no pruning but [`permute`]'s one shortcut.
    fn brute_force(history: &[Event]) -> bool {
        let ops: Vec<&Event> = history.iter().filter(|e| carries_information(e)).collect();
        let ambiguous: Vec<usize> = (0..ops.len()).filter(|&i| ops[i].outcome == Outcome::Ambiguous).collect();
        (0u32..1 << ambiguous.len()).any(|mask| {
            let chosen: Vec<&Event> = (0..ops.len())
                .filter(|i| ambiguous.iter().position(|a| a == i).is_none_or(|bit| mask & (1 << bit) != 0))
                .map(|i| ops[i])
                .collect();
            permute(&chosen, 0, &mut BTreeMap::new(), &mut HashSet::new())
        })
    }

    fn ret_of(e: &Event) -> u64 {
        if e.outcome == Outcome::Ambiguous {
            u64::MAX
        } else {
            e.ret
        }
    }

    type Map = BTreeMap<Vec<u8>, Vec<u8>>;

    /// Extends the order `placed` (a bit per op) that left `map` by each op allowed next, depth first. The one
    /// shortcut: a (placed, map) pair that led nowhere once is not tried again (`failed`).
    fn permute(ops: &[&Event], placed: u32, map: &mut Map, failed: &mut HashSet<(u32, Map)>) -> bool {
        let pending = |j: usize| placed & (1 << j) == 0;
        if (0..ops.len()).all(|j| !pending(j)) {
            return true;
        }
        if failed.contains(&(placed, map.clone())) {
            return false;
        }
        for i in (0..ops.len()).filter(|&i| pending(i)) {
            if (0..ops.len()).any(|j| j != i && pending(j) && ret_of(ops[j]) < ops[i].call) {
                continue;
            }
            let before = map.get(&ops[i].key).cloned();
            let Some(after) = brute_apply(ops[i], before.clone()) else { continue };
            set(map, &ops[i].key, after);
            let found = permute(ops, placed | 1 << i, map, failed);
            set(map, &ops[i].key, before);
            if found {
                return true;
            }
        }
        failed.insert((placed, map.clone()));
        false
    }

    fn set(map: &mut Map, key: &[u8], value: Option<Vec<u8>>) {
        match value {
            Some(value) => map.insert(key.to_vec(), value),
            None => map.remove(key),
        };
    }

    /// The value after `e` from `before`, None if `e`'s outcome is impossible there.
    fn brute_apply(e: &Event, before: Option<Vec<u8>>) -> Option<Option<Vec<u8>>> {
        match (&e.op, &e.outcome) {
            (Op::Get, Outcome::Get(seen)) => (*seen == before).then_some(before),
            (Op::Put(value), _) => Some(Some(value.clone())),
            (Op::Delete, _) => Some(None),
            (Op::Cas { expect, new }, Outcome::Cas(ok)) => match (*expect == before, ok) {
                (true, true) => Some(new.clone()),
                (false, false) => Some(before),
                _ => None,
            },
            (Op::Cas { expect, new }, Outcome::Ambiguous) => Some(if *expect == before { new.clone() } else { before }),
            _ => unreachable!("{e:?}"),
        }
    }

    /// One generated request: what it is, when, where its effect lands, and how its answer is reported.
    #[derive(Clone, Debug)]
    struct Planned {
        key: u8,
        kind: u8,
        value: u8,
        expect: Option<u8>,
        call: u64,
        len: u64,
        /// Where in [call, ret] (sixteenths) it takes effect; for ambiguous writes, in [call, call + len + 8].
        at: u64,
        /// 0..=6 completes; 7 ambiguous, applied; 8 ambiguous, not applied; 9 failed, not applied.
        fate: u8,
        /// Some: report this wrong answer instead (reads: the value; CAS: flip the result; failed: applied anyway).
        lie: Option<Option<u8>>,
    }

    /// `fates` picks from 0..10 (see [`Planned::fate`]); `lies`: one answer in three is wrong.
    fn planned(keys: u8, calls: u64, fates: std::ops::Range<u8>, lies: bool) -> impl Strategy<Value = Planned> {
        (
            (0..keys, 0u8..4, 0u8..3, proptest::option::of(0u8..3)),
            (0..calls, 0u64..6, 0u64..=16, fates),
            (0u8..3, proptest::option::of(0u8..3)),
        )
            .prop_map(move |((key, kind, value, expect), (call, len, at, fate), (lie, wrong))| Planned {
                key,
                kind,
                value,
                expect,
                call,
                len,
                at,
                fate,
                lie: (lies && lie == 0).then_some(wrong),
            })
    }

    /// Runs the planned requests against a map in the order their effects land, and records what clients saw.
    fn record(plan: &[Planned]) -> Vec<Event> {
        let byte = |b: u8| vec![b'x' + b];
        let mut order: Vec<usize> = (0..plan.len()).collect();
        let lands =
            |p: &Planned| if p.fate == 7 { 16 * p.call + p.at * (p.len + 8) } else { 16 * p.call + p.at * p.len };
        order.sort_by_key(|&i| (lands(&plan[i]), i));
        let mut map: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut events: Vec<Option<Event>> = vec![None; plan.len()];
        for i in order {
            let p = &plan[i];
            let key = vec![b'a' + p.key];
            let op = match p.kind {
                0 => Op::Get,
                1 => Op::Put(byte(p.value)),
                2 => Op::Delete,
                _ => Op::Cas { expect: p.expect.map(byte), new: (p.value != 2).then(|| byte(p.value)) },
            };
            let applied = matches!(p.fate, 0..=7) || (p.fate == 9 && p.lie.is_some());
            let mut outcome = match p.fate {
                7 | 8 => Outcome::Ambiguous,
                9 => Outcome::Failed,
                _ => Outcome::Put, // replaced below
            };
            if applied {
                let before = map.get(&key).cloned();
                let after = match &op {
                    Op::Get => before.clone(),
                    Op::Put(value) => Some(value.clone()),
                    Op::Delete => None,
                    Op::Cas { expect, new } => {
                        if *expect == before {
                            new.clone()
                        } else {
                            before.clone()
                        }
                    }
                };
                if p.fate <= 6 {
                    outcome = match (&op, p.lie) {
                        (Op::Get, Some(wrong)) => Outcome::Get(wrong.map(byte)),
                        (Op::Get, None) => Outcome::Get(before.clone()),
                        (Op::Put(_), _) => Outcome::Put,
                        (Op::Delete, _) => Outcome::Delete,
                        (Op::Cas { expect, .. }, lie) => Outcome::Cas((*expect == before) != lie.is_some()),
                    };
                }
                set(&mut map, &key, after);
            }
            events[i] = Some(Event { client: i as u64, key, op, call: p.call, ret: p.call + p.len, outcome });
        }
        events.into_iter().map(|e| e.expect("every op recorded")).collect()
    }

    fn agrees_with_brute_force(history: &[Event]) -> Result<(), TestCaseError> {
        let expected = brute_force(history);
        match check(history) {
            Verdict::Linearizable => prop_assert!(expected, "checker passed a history brute force rejects"),
            Verdict::NotLinearizable { key, explanation } => {
                prop_assert!(!expected, "checker rejected a linearizable history: {}", explanation);
                let sub: Vec<Event> = history.iter().filter(|e| e.key == key).cloned().collect();
                prop_assert!(!brute_force(&sub), "reported key {:?} is fine on its own", key);
            }
            Verdict::Unknown { key } => prop_assert!(false, "no verdict for key {:?}", key),
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn agrees_with_brute_force_on_small_histories(
            plan in (1u8..=2).prop_flat_map(|keys| proptest::collection::vec(planned(keys, 8, 0..10, true), 0..=7))
        ) {
            agrees_with_brute_force(&record(&plan))?;
        }

    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]

        /// A third of the requests ambiguous, on one key, overlapping a lot: exercises the pruning of applied sets.
        #[test]
        fn agrees_with_brute_force_on_small_histories_full_of_ambiguous_writes(
            plan in proptest::collection::vec(planned(1, 8, 4..10, true), 1..=12)
        ) {
            agrees_with_brute_force(&record(&plan))?;
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn histories_recorded_from_a_real_execution_are_linearizable(
            plan in proptest::collection::vec(planned(3, 60, 0..10, false), 0..=120)
        ) {
            let history = record(&plan);
            prop_assert_eq!(check(&history), Verdict::Linearizable);
        }
    }
}
