//! Which copy of each arena buffer is current — the host's arena, the device's, or both —
//! and the copies that keep every op and every host read on current bytes. Apart from
//! the backend so that the rule can be tested without a GPU (below: random op sequences
//! on two simulated memories against one memory).
//!
//! The rule: before an op, each buffer it reads, and the buffer it writes (an op may
//! write only a window of it), is copied to the side the op runs on if only the other
//! side holds its current bytes; after it, the written buffer is current only there.
//! Buffers not yet written in a run count as current on both sides (nothing reads them
//! before an op writes them); input ports, just written by the host, on the host; state
//! buffers where the last run left them.

use std::ops::Range;

/// Where a buffer's current bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Loc {
    Host,
    Device,
    /// Both copies hold the same bytes (or neither holds anything yet).
    Both,
}

/// A copy to make: host to device, or device to host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Copy {
    Up(Range<usize>),
    Down(Range<usize>),
}

#[derive(Debug, Default)]
pub(crate) struct Residency {
    /// The running graph's buffers: arena byte range and where their bytes are.
    buffers: Vec<(Range<usize>, Loc)>,
    /// State buffers across runs (the same region in every graph of a model).
    state: Vec<(Range<usize>, Loc)>,
}

impl Residency {
    /// The device's arena is new: no state byte is on it.
    pub fn device_arena_replaced(&mut self) {
        for s in &mut self.state {
            s.1 = Loc::Host;
        }
    }

    /// A run begins over buffers with `ranges`; `states` and `inputs` index them.
    pub fn enter(
        &mut self,
        ranges: impl Iterator<Item = Range<usize>>,
        states: &[usize],
        inputs: &[usize],
    ) {
        self.buffers = ranges.map(|r| (r, Loc::Both)).collect();
        for &b in states {
            let r = self.buffers[b].0.clone();
            let loc = match self.state.iter().find(|s| s.0 == r) {
                Some(s) => s.1,
                None => {
                    self.state.push((r, Loc::Host));
                    Loc::Host
                }
            };
            self.buffers[b].1 = loc;
        }
        for &b in inputs {
            self.buffers[b].1 = Loc::Host;
        }
    }

    /// Makes buffer `b` current on the side `device` says; the copy, if one is needed.
    fn bring(&mut self, b: usize, device: bool, copies: &mut Vec<Copy>) {
        let Some((r, loc)) = self.buffers.get(b).cloned() else {
            return;
        };
        match (loc, device) {
            (Loc::Host, true) => copies.push(Copy::Up(r)),
            (Loc::Device, false) => copies.push(Copy::Down(r)),
            _ => return,
        }
        self.buffers[b].1 = Loc::Both;
    }

    /// Before an op that reads `reads` and writes `out` on the device (`on_device`) or
    /// the host; `host_too`, buffers its launch also reads on the host (a position).
    pub fn stage(
        &mut self,
        reads: &[u32],
        out: u32,
        on_device: bool,
        host_too: &[u32],
        copies: &mut Vec<Copy>,
    ) {
        for &b in reads {
            self.bring(b as usize, on_device, copies);
        }
        self.bring(out as usize, on_device, copies);
        for &p in host_too {
            self.bring(p as usize, false, copies);
        }
    }

    /// After the op: what it wrote is current only where it ran.
    pub fn executed(&mut self, out: u32, on_device: bool) {
        if let Some(b) = self.buffers.get_mut(out as usize) {
            b.1 = if on_device { Loc::Device } else { Loc::Host };
        }
    }

    /// The run ends: the output ports come to the host; the state's places are kept.
    pub fn leave(&mut self, outputs: &[usize], states: &[usize], copies: &mut Vec<Copy>) {
        for &b in outputs {
            self.bring(b, false, copies);
        }
        for &b in states {
            let (r, loc) = self.buffers[b].clone();
            if let Some(s) = self.state.iter_mut().find(|s| s.0 == r) {
                s.1 = loc;
            }
        }
    }

    /// The host is about to read bytes `range` (`to_host`), or has written them.
    pub fn sync(&mut self, range: Range<usize>, to_host: bool, copies: &mut Vec<Copy>) {
        let overlaps = |r: &Range<usize>| r.start < range.end && range.start < r.end;
        for s in &mut self.state {
            if !overlaps(&s.0) {
                continue;
            }
            if !to_host {
                s.1 = Loc::Host;
            } else if s.1 == Loc::Device {
                copies.push(Copy::Down(s.0.clone()));
                s.1 = Loc::Both;
            }
        }
        for b in 0..self.buffers.len() {
            if !overlaps(&self.buffers[b].0) {
                continue;
            }
            if !to_host {
                self.buffers[b].1 = Loc::Host;
            } else {
                // A state buffer the loop above just brought down is `Both` there but
                // may still say `Device` here: its copy is current, so no second one.
                let r = self.buffers[b].0.clone();
                if self.state.iter().any(|s| s.0 == r && s.1 == Loc::Both) {
                    self.buffers[b].1 = Loc::Both;
                }
                self.bring(b, false, copies);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// One op of a simulated graph: reads, the buffer it writes, whether it writes only
    /// the first half of it (a window), and where it runs.
    #[derive(Debug, Clone)]
    struct SimOp {
        reads: Vec<u32>,
        out: u32,
        window: bool,
        on_device: bool,
    }

    /// Each buffer is 4 slots of a simulated arena; buffers 0..STATES are state,
    /// STATES..STATES+INPUTS inputs, the last OUTPUTS output ports.
    const STATES: usize = 2;
    const INPUTS: usize = 2;
    const BUFFERS: usize = 8;
    const OUTPUTS: usize = 2;
    const SLOTS: usize = 4;

    fn range(b: usize) -> Range<usize> {
        b * SLOTS..(b + 1) * SLOTS
    }

    fn apply(op: &SimOp, mem: &mut [u64]) {
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        for &b in &op.reads {
            for &v in &mem[range(b as usize)] {
                h = (h ^ v).wrapping_mul(0x100_0000_01b3);
            }
        }
        let r = range(op.out as usize);
        let end = if op.window {
            r.start + SLOTS / 2
        } else {
            r.end
        };
        for (i, v) in mem[r.start..end].iter_mut().enumerate() {
            // A window update mixes in what was there (as a cache append keeps the
            // rows before it); a whole write does not.
            let old = if op.window { *v } else { 0 };
            *v = (h ^ old).wrapping_add(i as u64);
        }
    }

    fn copy(c: &Copy, host: &mut [u64], dev: &mut [u64]) {
        match c {
            Copy::Up(r) => dev[r.clone()].copy_from_slice(&host[r.clone()]),
            Copy::Down(r) => host[r.clone()].copy_from_slice(&dev[r.clone()]),
        }
    }

    fn op() -> impl Strategy<Value = SimOp> {
        (
            proptest::collection::vec(0..BUFFERS as u32, 0..3),
            // Never an input port: the host wrote those.
            prop_oneof![0..STATES as u32, (STATES + INPUTS) as u32..BUFFERS as u32],
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(reads, out, window, on_device)| SimOp {
                reads: reads.into_iter().filter(|&r| r != out).collect(),
                out,
                window,
                on_device,
            })
    }

    proptest! {
        /// Runs of random ops, each on a random side, with state carried between runs
        /// and read, reset or overwritten by the host between them, give the host the
        /// same bytes as one memory running every op.
        #[test]
        fn two_memories_give_what_one_gives(
            runs in proptest::collection::vec(
                (proptest::collection::vec(op(), 1..12), 0u8..4, any::<u64>()),
                1..5,
            ),
        ) {
            let n = BUFFERS * SLOTS;
            let (mut one, mut host, mut dev) = (vec![0u64; n], vec![0u64; n], vec![7u64; n]);
            let mut res = Residency::default();
            let states: Vec<usize> = (0..STATES).collect();
            let inputs: Vec<usize> = (STATES..STATES + INPUTS).collect();
            let outputs: Vec<usize> = (BUFFERS - OUTPUTS..BUFFERS).collect();
            let mut copies = Vec::new();
            let state_range = 0..STATES * SLOTS;
            for (ops, between, seed) in runs {
                // Between runs: the host reads the state, resets it, or overwrites it.
                match between {
                    1 => {
                        res.sync(state_range.clone(), true, &mut copies);
                        copies.drain(..).for_each(|c| copy(&c, &mut host, &mut dev));
                        prop_assert_eq!(&host[state_range.clone()], &one[state_range.clone()]);
                    }
                    2 | 3 => {
                        let v = if between == 2 { 0 } else { seed };
                        host[state_range.clone()].fill(v);
                        one[state_range.clone()].fill(v);
                        res.sync(state_range.clone(), false, &mut copies);
                        prop_assert!(copies.is_empty());
                    }
                    _ => {}
                }
                for &b in &inputs {
                    for (i, s) in range(b).enumerate() {
                        host[s] = seed.wrapping_add(i as u64 + b as u64);
                        one[s] = host[s];
                    }
                }
                res.enter((0..BUFFERS).map(range), &states, &inputs);
                // As a plan guarantees: within a run, no op reads a buffer before one has
                // written all of it (state and inputs hold bytes from the start).
                let mut defined = [false; BUFFERS];
                for &b in states.iter().chain(&inputs) {
                    defined[b] = true;
                }
                for op in &ops {
                    let mut op = op.clone();
                    op.reads.retain(|&b| defined[b as usize]);
                    if op.window && !defined[op.out as usize] {
                        continue;
                    }
                    let host_too: Vec<u32> = op.reads.iter().copied().take(usize::from(op.on_device)).collect();
                    res.stage(&op.reads, op.out, op.on_device, &host_too, &mut copies);
                    copies.drain(..).for_each(|c| copy(&c, &mut host, &mut dev));
                    apply(&op, if op.on_device { &mut dev } else { &mut host });
                    apply(&op, &mut one);
                    res.executed(op.out, op.on_device);
                    defined[op.out as usize] = true;
                }
                res.leave(&outputs, &states, &mut copies);
                copies.drain(..).for_each(|c| copy(&c, &mut host, &mut dev));
                for &b in outputs.iter().filter(|&&b| defined[b]) {
                    prop_assert_eq!(&host[range(b)], &one[range(b)]);
                }
            }
            res.sync(state_range.clone(), true, &mut copies);
            copies.drain(..).for_each(|c| copy(&c, &mut host, &mut dev));
            prop_assert_eq!(&host[state_range.clone()], &one[state_range]);
        }
    }
}
