//! Backends: what executes a graph's ops.
//!
//! The executor (`exec::Session`) owns the plan's order, the arena and the ports; a
//! backend only runs one op over operands the executor has already located. The CPU
//! backend ([`Cpu`]) is the first; an accelerator backend implements the same trait
//! (keeping its own copies of weights and arena where it needs them) without changing
//! what any op means: `runtime/tests/ops.rs` checks every op on every backend against the
//! scalar reference.

mod cpu;

pub use cpu::Cpu;

use crate::ops::{Op, OpContext};
use crate::Error;

/// Executes ops. `Send`: a session may run its graph on another thread (see
/// [`Backend::on_pool`]).
pub trait Backend: Send {
    /// A short name for reports ("cpu/x86-avx512vnni").
    fn name(&self) -> &'static str;

    /// Threads a whole graph should run on, from a worker of the thread pool with the
    /// others spinning beside it as its team (std only; 0 or 1: on the caller's thread).
    /// A backend that splits ops across threads then hands each block over in well
    /// under a microsecond, where every hand-off to a sleeping worker costs a wake-up —
    /// which, a decoder step's hundred small matrix–vector products each paying it,
    /// costs what the second core saves.
    fn on_pool(&self) -> usize {
        0
    }

    /// Called before a graph's first op: forget anything carried from the last op.
    fn begin(&mut self) {}

    /// Scratch bytes `op` needs on this backend (the arena must hold the largest).
    fn scratch_bytes(&self, op: &Op) -> usize;

    /// Runs one op.
    fn execute(&mut self, op: &Op, cx: &mut OpContext) -> Result<(), Error>;
}
