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

use core::ops::Range;

use crate::graph::Graph;
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

    // A backend with memory of its own (an accelerator's) keeps activations there from
    // one op to the next; the arena stays the host's copy, brought up to date only where
    // the host reads it. The CPU backend works in the arena itself and needs none of the
    // four hooks below.

    /// Called once a run's inputs are in the arena, before its first op: the host has
    /// just written `graph`'s input ports.
    fn enter(&mut self, graph: &Graph, arena: &mut [u8]) -> Result<(), Error> {
        let _ = (graph, arena);
        Ok(())
    }

    /// Called before each op with the whole arena: brings the op's operands to where the
    /// backend will run it (into the arena, for an op it leaves to the CPU's code).
    fn stage(&mut self, op: &Op, graph: &Graph, arena: &mut [u8]) -> Result<(), Error> {
        let _ = (op, graph, arena);
        Ok(())
    }

    /// Called after a run's last op: brings `graph`'s output ports into the arena.
    fn leave(&mut self, graph: &Graph, arena: &mut [u8]) -> Result<(), Error> {
        let _ = (graph, arena);
        Ok(())
    }

    /// Outside the ops' order: with `to_host`, brings bytes `range` of the arena up to
    /// date before the host reads them (an observer, `Session::state`); without, the
    /// host has just written them (`Session::set_state`, `reset_state`).
    fn sync(&mut self, range: Range<usize>, arena: &mut [u8], to_host: bool) -> Result<(), Error> {
        let _ = (range, arena, to_host);
        Ok(())
    }

    /// Scratch bytes `op` needs on this backend (the arena must hold the largest).
    fn scratch_bytes(&self, op: &Op) -> usize;

    /// Runs one op.
    fn execute(&mut self, op: &Op, cx: &mut OpContext) -> Result<(), Error>;
}

/// Forwards every method to the backend behind a pointer.
macro_rules! forward_backend {
    ($(#[$m:meta])* $ptr:ty) => {
        $(#[$m])*
        impl<B: Backend + ?Sized> Backend for $ptr {
            fn name(&self) -> &'static str {
                (**self).name()
            }

            fn on_pool(&self) -> usize {
                (**self).on_pool()
            }

            fn begin(&mut self) {
                (**self).begin()
            }

            fn enter(&mut self, graph: &Graph, arena: &mut [u8]) -> Result<(), Error> {
                (**self).enter(graph, arena)
            }

            fn stage(&mut self, op: &Op, graph: &Graph, arena: &mut [u8]) -> Result<(), Error> {
                (**self).stage(op, graph, arena)
            }

            fn leave(&mut self, graph: &Graph, arena: &mut [u8]) -> Result<(), Error> {
                (**self).leave(graph, arena)
            }

            fn sync(
                &mut self,
                range: Range<usize>,
                arena: &mut [u8],
                to_host: bool,
            ) -> Result<(), Error> {
                (**self).sync(range, arena, to_host)
            }

            fn scratch_bytes(&self, op: &Op) -> usize {
                (**self).scratch_bytes(op)
            }

            fn execute(&mut self, op: &Op, cx: &mut OpContext) -> Result<(), Error> {
                (**self).execute(op, cx)
            }
        }
    };
}

forward_backend!(
    /// A borrowed backend is one: a session can run on a backend its caller keeps (a
    /// `&mut dyn Backend` chosen at run time, a device backend reused across sessions).
    &mut B
);
forward_backend!(
    /// A boxed backend is one: a backend chosen at run time (the CPU or a device) behind
    /// one type.
    #[cfg(feature = "std")]
    std::boxed::Box<B>
);
