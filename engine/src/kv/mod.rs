//! Client writes as log entries, and the state machine they are applied to.

pub mod command;
pub mod state_machine;

pub use command::{Command, WriteBatch, ENTRY_BYTES_MAX};
pub use state_machine::{Applied, MemKv, StateMachine};
