//! Scheduling: how PD changes where replicas live (docs/pd.md, "Moving
//! replicas"), as TiKV PD does it.
//!
//! - [`step`]: one membership change or leadership transfer, what the
//!   leader is asked to do for it, and when a report shows it done.
//! - [`operator`]: the steps that take one region from its replicas to
//!   the ones wanted (a move: learner → joint change → leave → removal).
//! - [`controller`]: the operators under way, advanced by each report of
//!   their region's leader, within limits.
//! - [`replica_checker`]: what a region needs to have `--replicas` voters
//!   and nothing half-done.
//! - [`balance_region`], [`balance_leader`]: even out replica and leader
//!   counts across stores, within a tolerance, never undoing a move.
//!
//! All of it is logic without I/O, run under the cluster's lock: the
//! directives it makes go out with the answers to region heartbeats.

pub mod balance_leader;
pub mod balance_region;
pub mod controller;
pub mod operator;
pub mod replica_checker;
pub mod step;
