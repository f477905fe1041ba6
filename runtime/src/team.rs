//! A team of spinning helpers for the length of one graph run.
//!
//! A decoder step is a few hundred ops of tens of microseconds each. Splitting them with
//! `rayon::join` alone hands each second half to a pool worker that, having found nothing
//! to do since the last op, has gone to sleep: waking it costs a futex wake-up and a
//! reschedule, tens of microseconds on a virtual machine — as much as the half it was
//! handed. So for one graph run (`Session::run_rows` on more than one thread) the other
//! workers are borrowed through `rayon::join` once, and spin on a slot each, waiting for
//! work; a split inside the run ([`join`]) posts its second half to an idle helper's slot
//! and takes it back when done: a cache-line hand-off, no system call. After the run the
//! helpers go back to rayon (and to sleep). llama.cpp's thread pool spins between ops for
//! the same reason.
//!
//! Written by hand: rayon has no spinning mode, and a pool of our own threads would
//! double the threads a host runs; this borrows rayon's. Nothing here allocates: the team
//! lives on the leader's stack, jobs are closures on the stack of the [`join`] that posts
//! them (it waits for them before returning, even when unwinding).
#![allow(unsafe_code)]

use core::cell::{Cell, UnsafeCell};
use core::sync::atomic::{AtomicU32, Ordering};

/// Helpers at most (threads beyond one).
const MAX_HELPERS: usize = 31;

/// A slot's states: its helper has not started; waits for work; is being given a job; has
/// a job to run; has run it; has panicked running it; is to leave.
const ABSENT: u32 = 0;
const IDLE: u32 = 1;
const CLAIMED: u32 = 2;
const JOB: u32 = 3;
const DONE: u32 = 4;
const PANICKED: u32 = 5;
const EXIT: u32 = 6;

/// Spins between polite yields while idle, so a helper sharing its core with the leader
/// (more threads than cores) still lets the leader run.
const SPINS_PER_YIELD: u32 = 1 << 12;

type Job = *mut (dyn FnMut() + Send);

struct Slot {
    state: AtomicU32,
    job: UnsafeCell<Option<Job>>,
}

pub(crate) struct Team {
    slots: [Slot; MAX_HELPERS],
}

// SAFETY: a slot's `job` is written only by the thread that moved the slot from IDLE to
// CLAIMED, before it publishes JOB (release); it is read only by the slot's helper after
// it sees JOB (acquire), and the poster waits for DONE or PANICKED before the job's stack
// frame goes away. The job is `Send`.
unsafe impl Sync for Team {}

std::thread_local! {
    /// The team the current thread leads or helps, if any.
    static TEAM: Cell<*const Team> = const { Cell::new(core::ptr::null()) };
}

impl Team {
    fn new() -> Self {
        Self {
            slots: core::array::from_fn(|_| Slot {
                state: AtomicU32::new(ABSENT),
                job: UnsafeCell::new(None),
            }),
        }
    }

    /// An idle helper's slot, now reserved for one job.
    fn claim(&self) -> Option<&Slot> {
        self.slots.iter().find(|s| {
            s.state
                .compare_exchange(IDLE, CLAIMED, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        })
    }

    /// A helper's loop: run each job posted to `slot` until told to leave.
    fn serve(&self, slot: &Slot) {
        // A thread already in a team (this one or another) can steal a helper's start only
        // while it waits inside a rayon join of its own; serving here would keep it from
        // returning to that join until the team ends, and the team may be waiting for it.
        // It leaves the slot ABSENT, which no join claims.
        if !TEAM.with(|t| t.get()).is_null() {
            return;
        }
        // A helper stolen after the run ended finds EXIT and leaves at once.
        if slot
            .state
            .compare_exchange(ABSENT, IDLE, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        let _member = Member::enter(self);
        let mut spins = 0u32;
        loop {
            match slot.state.load(Ordering::Acquire) {
                JOB => {
                    // SAFETY: see `impl Sync for Team`: the job was written before JOB
                    // was published, and its frame lives until this slot says DONE.
                    let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe {
                        if let Some(job) = *slot.job.get() {
                            (*job)();
                        }
                    }))
                    .is_ok();
                    slot.state
                        .store(if ok { DONE } else { PANICKED }, Ordering::Release);
                    spins = 0;
                }
                EXIT => return,
                _ => spins = pause(spins),
            }
        }
    }

    /// Sends every helper away (no job is outstanding: every [`join`] has returned).
    fn finish(&self) {
        for s in &self.slots {
            s.state.store(EXIT, Ordering::Release);
        }
    }
}

/// One round of a spin wait, yielding now and then so that a waiter sharing its core
/// (more threads than cores) lets the thread it waits for run.
fn pause(spins: u32) -> u32 {
    let spins = spins.wrapping_add(1);
    if spins.is_multiple_of(SPINS_PER_YIELD) {
        std::thread::yield_now();
    } else {
        core::hint::spin_loop();
    }
    spins
}

/// Sets the thread's team while alive, restoring the previous one after.
struct Member(*const Team);

impl Member {
    fn enter(team: &Team) -> Self {
        Self(TEAM.with(|t| t.replace(team)))
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        TEAM.with(|t| t.set(self.0));
    }
}

/// Runs `f` on this (pool) thread with up to `threads - 1` other pool workers spinning
/// as its team: [`join`]s inside `f` hand work to them.
pub(crate) fn lead<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    let team = Team::new();
    let helpers = threads.saturating_sub(1).min(MAX_HELPERS);
    start(&team, 0, helpers, f)
}

fn start<R: Send>(team: &Team, i: usize, helpers: usize, f: impl FnOnce() -> R + Send) -> R {
    if i == helpers {
        struct Finish<'t>(&'t Team);
        impl Drop for Finish<'_> {
            fn drop(&mut self) {
                self.0.finish();
            }
        }
        let _finish = Finish(team);
        let _member = Member::enter(team);
        return f();
    }
    rayon::join(
        || start(team, i + 1, helpers, f),
        || team.serve(&team.slots[i]),
    )
    .0
}

/// Waits for a posted job to end, even while unwinding: the job borrows the poster's
/// stack.
struct Wait<'s>(&'s Slot);

impl Wait<'_> {
    /// True when the job panicked.
    fn done(&self) -> bool {
        let mut spins = 0;
        loop {
            match self.0.state.load(Ordering::Acquire) {
                DONE => break false,
                PANICKED => break true,
                _ => spins = pause(spins),
            }
        }
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        self.done();
        // SAFETY: the helper is done with the job; clear it before the slot is reused.
        unsafe { *self.0.job.get() = None };
        self.0.state.store(IDLE, Ordering::Release);
    }
}

/// `a` here and `b` beside it: on an idle helper of this thread's team when there is
/// one, else on rayon's pool.
pub(crate) fn join(a: impl FnOnce() + Send, b: impl FnOnce() + Send) {
    let team = TEAM.with(|t| t.get());
    // SAFETY: a team pointer is set only while its `lead` frame (which owns the team)
    // runs this thread or keeps it as a helper.
    let Some(team) = (unsafe { team.as_ref() }) else {
        rayon::join(a, b);
        return;
    };
    let Some(slot) = team.claim() else {
        // Whoever steals `b` joins the team while running it: its own splits may then use
        // the helpers, and, waiting inside them, it will not start serving this team (see
        // `serve`) while the team waits for `b`.
        rayon::join(a, || {
            let _member = Member::enter(team);
            b()
        });
        return;
    };
    let mut b = Some(b);
    let mut call = move || {
        if let Some(b) = b.take() {
            b()
        }
    };
    let job: *mut (dyn FnMut() + Send + '_) = &mut call;
    // SAFETY: only the lifetime is erased; `Wait` keeps `call` alive until the helper
    // has run it.
    unsafe {
        *slot.job.get() = Some(core::mem::transmute::<*mut (dyn FnMut() + Send + '_), Job>(
            job,
        ))
    };
    slot.state.store(JOB, Ordering::Release);
    let wait = Wait(slot);
    a();
    if wait.done() {
        panic!("a block of work panicked on another thread");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::sync::atomic::AtomicUsize;

    /// Every block runs exactly once, whoever runs it, nested or not.
    #[test]
    fn joins_run_every_block_once() {
        for threads in [1, 2, 3, 8] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let counts: Vec<AtomicUsize> = (0..64).map(|_| AtomicUsize::new(0)).collect();
            fn blocks(c: &[AtomicUsize]) {
                if c.len() == 1 {
                    c[0].fetch_add(1, Ordering::Relaxed);
                    return;
                }
                let (l, r) = c.split_at(c.len() / 2);
                join(|| blocks(l), || blocks(r));
            }
            pool.install(|| {
                for _ in 0..100 {
                    lead(threads, || blocks(&counts));
                }
            });
            assert!(
                counts.iter().all(|c| c.load(Ordering::Relaxed) == 100),
                "{threads} threads"
            );
        }
    }

    /// A member of a team that steals a helper's start (while waiting in a rayon join)
    /// must not serve: it would spin until the team ends, and the team may wait for it.
    #[test]
    fn a_member_does_not_serve() {
        let (tx, rx) = std::sync::mpsc::channel();
        // On a thread of its own: a member that served would spin here for good.
        std::thread::spawn(move || {
            let team = Team::new();
            lead(1, || team.serve(&team.slots[0]));
            tx.send(team.slots[0].state.load(Ordering::Acquire))
                .unwrap();
        });
        let state = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("a member of a team served a helper's slot and never returned");
        assert_eq!(state, ABSENT);
    }

    /// More threads than cores, with most splits falling back to rayon: the case where a
    /// waiting member steals a helper's start.
    #[test]
    fn joins_finish_with_more_threads_than_cores() {
        let threads = 4 * std::thread::available_parallelism().map_or(2, |n| n.get());
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let count = AtomicUsize::new(0);
        fn blocks(depth: u32, count: &AtomicUsize) {
            if depth == 0 {
                count.fetch_add(1, Ordering::Relaxed);
                return;
            }
            join(|| blocks(depth - 1, count), || blocks(depth - 1, count));
        }
        pool.install(|| {
            for _ in 0..200 {
                lead(threads, || blocks(8, &count));
            }
        });
        assert_eq!(count.load(Ordering::Relaxed), 200 << 8);
    }

    #[test]
    fn a_panicking_block_panics_the_join() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let r = pool.install(|| {
            std::panic::catch_unwind(|| {
                lead(2, || {
                    for _ in 0..1000 {
                        join(|| {}, || panic!("boom"));
                    }
                })
            })
        });
        assert!(r.is_err());
    }
}
