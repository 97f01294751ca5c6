//! Client writes and admin commands as log entries, and the state machine
//! they are applied to.

pub mod admin;
pub mod command;
pub mod state_machine;

pub use command::{Command, CommandRef, WriteBatch, WriteBatchRef, ENTRY_BYTES_MAX};
pub use state_machine::{Applied, MemKv, StateMachine};
