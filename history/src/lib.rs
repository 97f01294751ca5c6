//! Client histories of a key-value store, and whether they are linearizable.
//!
//! A *history* is what the clients saw: every operation, when it was
//! invoked, when its outcome arrived, and the outcome. ringraft's simulator
//! records one in memory as [`Event`]s; a run of real `ringraft server`
//! processes writes one as JSON lines ([`write_event`], [`write_history`]),
//! and [`read_history`] reads it back for [`check`]. The user's view of the
//! format is `docs/history-format.md`.
//!
//! # A line
//! One JSON object per line, one line per operation, in any order (the
//! checker orders them by time):
//!
//! | field | holds |
//! |---|---|
//! | `client` | u64: who asked (the checker's explanations name it) |
//! | `op` | `"get"`, `"put"`, `"delete"` or `"cas"` (compare-and-swap); scans are not modelled |
//! | `key` | bytes (below) |
//! | `value` | put: the value written; cas: the value written if it matched, `null` for a cas that deletes |
//! | `expected` | cas: the value it expects, `null` for "absent" |
//! | `invoke_us` | u64: when the client sent it, in µs |
//! | `complete_us` | u64: when its outcome arrived (`unknown`: when the client gave up); ≥ `invoke_us` unless `unknown` |
//! | `outcome` | `"ok"`: answered; `"fail"`: definitely not applied (not leader, no such region, too large…); `"unknown"`: a timeout, a lost connection, an ambiguous error — it may or may not have taken effect |
//! | `result` | ok get: the value read, `null` when absent; ok cas: `true` if it matched (and wrote), `false` if not |
//!
//! A field that does not apply to the line's op and outcome (`value` and
//! `expected` of a get, `result` of a put or of a failed operation) must be
//! left out; `null` is a value ("absent"), not a missing field. Fields the
//! format does not name are ignored, so a recorder may add its own. A line
//! that breaks these rules, is not JSON, or is longer than
//! [`LINE_BYTES_MAX`] is a [`ReadError`] naming its line number; nothing a
//! reader is given makes it panic, and nothing it returns makes [`check`]
//! panic.
//!
//! # Bytes
//! Keys and values are bytes. A JSON string stands for its UTF-8 bytes, and
//! is how bytes that are valid UTF-8 are written; other bytes are written as
//! `{"hex": "ff00"}`, two lowercase digits per byte (either case is read).
//! Every byte string round trips, and the common case stays readable.
//!
//! # What the checker decides
//! [`check`] answers whether some total order of the operations exists that
//! (1) respects real time: if `a` completed before `b` was invoked
//! (`a.complete_us < b.invoke_us`; equal times count as overlapping), `a`
//! comes first; and (2) replayed against a map that starts empty, gives
//! every answer the clients saw. An `ok` operation took effect exactly once,
//! between its invocation and its completion; a `fail` one never did; an
//! `unknown` write (put, delete, cas) took effect once at any time after its
//! invocation, or never — both are tried. A get whose outcome is `fail` or
//! `unknown` says nothing and is dropped. The verdict is
//! [`Verdict::Linearizable`], [`Verdict::NotLinearizable`] with the first
//! broken key and an explanation (the furthest any order got, and why no
//! remaining operation fits), or [`Verdict::Unknown`] when a key needs more
//! than [`CHECK_STEPS_MAX`] steps of search. Keys are checked independently
//! (linearizability is local); the search and its cost are described in
//! the checker's source (`src/linearizability.rs`).
//!
//! Times are compared across clients, so they must come from one clock:
//! clients in one process reading one monotonic clock. Clocks of different
//! machines drift apart, and a history stamped by them can be judged
//! broken when it is not (or the reverse).
//!
//! ```
//! let lines = r#"
//! {"client":1,"op":"put","key":"k","value":"v1","invoke_us":100,"complete_us":180,"outcome":"ok"}
//! {"client":2,"op":"get","key":"k","invoke_us":150,"complete_us":210,"outcome":"ok","result":"v1"}
//! {"client":3,"op":"cas","key":"k","value":"v2","expected":"v1","invoke_us":220,"complete_us":290,"outcome":"ok","result":true}
//! {"client":1,"op":"delete","key":"k","invoke_us":300,"complete_us":1300,"outcome":"unknown"}
//! {"client":2,"op":"put","key":{"hex":"ff00"},"value":"x","invoke_us":310,"complete_us":330,"outcome":"fail"}
//! {"client":2,"op":"get","key":"k","invoke_us":1400,"complete_us":1450,"outcome":"ok","result":"v2"}
//! "#;
//! let events = history::read_history(lines.as_bytes())?;
//! assert_eq!(history::check(&events), history::Verdict::Linearizable);
//! # Ok::<(), history::ReadError>(())
//! ```

mod event;
mod json;
mod linearizability;

pub use event::{Event, Op, Outcome};
pub use json::{read_history, write_event, write_history, ReadError, LINE_BYTES_MAX};
pub use linearizability::{check, Verdict, CHECK_STEPS_MAX};
