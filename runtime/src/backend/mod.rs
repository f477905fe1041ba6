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

    /// Whether a whole graph should run on a worker of the thread pool (std only): a
    /// backend that splits ops across threads hands each block to a worker in
    /// microseconds from there, while every hand-off from outside the pool wakes two
    /// sleeping threads — which, a decoder step's hundred small matrix–vector products
    /// each paying it, costs what the second core saves.
    fn on_pool(&self) -> bool {
        false
    }

    /// Called before a graph's first op: forget anything carried from the last op.
    fn begin(&mut self) {}

    /// Scratch bytes `op` needs on this backend (the arena must hold the largest).
    fn scratch_bytes(&self, op: &Op) -> usize;

    /// Runs one op.
    fn execute(&mut self, op: &Op, cx: &mut OpContext) -> Result<(), Error>;
}
