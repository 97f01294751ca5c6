//! One client operation as the checker sees it: who asked, which key, what
//! operation, when it was called and when its answer arrived, and what the
//! answer was. The simulator builds these in memory; a real client run writes
//! them as JSON lines ([`crate::write_event`]) and the checker reads them back.

/// What a client asked for. Every operation touches exactly one key (the [`Event`]'s).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Get,
    Put(Vec<u8>),
    Delete,
    /// Sets the key to `new` (None: deletes it) iff its value is `expect` (None: absent).
    Cas {
        expect: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    },
}

/// What the client was told. In JSON the answers are `"outcome": "ok"` with a `result`, [`Outcome::Ambiguous`] is
/// `"unknown"` and [`Outcome::Failed`] is `"fail"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Answers [`Op::Get`]: the value, None when absent.
    Get(Option<Vec<u8>>),
    /// Answers [`Op::Put`]: it took effect.
    Put,
    /// Answers [`Op::Delete`]: it took effect.
    Delete,
    /// Answers [`Op::Cas`]: whether it matched (and so wrote).
    Cas(bool),
    /// A write whose fate is unknown: it may or may not have taken effect, at any time after its call. Its `ret` is
    /// ignored (treated as +∞). An ambiguous read carries no information and is dropped.
    Ambiguous,
    /// Definitely not applied: dropped from the history.
    Failed,
}

/// One client request. Times are in any one unit from one clock (the simulator's and the JSON lines' are
/// microseconds); the checker only compares them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub client: u64,
    pub key: Vec<u8>,
    pub op: Op,
    /// When the client invoked it (`invoke_us` in JSON).
    pub call: u64,
    /// When the answer arrived (`complete_us` in JSON); must be ≥ `call` unless the outcome is
    /// [`Outcome::Ambiguous`].
    pub ret: u64,
    pub outcome: Outcome,
}
