//! A few threads kept awake for the length of one tridiagonalisation.
//!
//! The reduction splits a matrix–vector product over the cores once per column: 2,000 times at
//! N = 2,000, each a fraction of a millisecond. Handing each product to rayon wakes a sleeping
//! worker every time, and on this 2-core virtual machine that wake-up cost as much as the second
//! core gained (the products took 0.42 s on two threads, one thread alone streams them in about
//! 0.43 s, and two threads that never sleep in 0.21 s). A [`Team`] spins between tasks instead:
//! its threads wait for the next task by spinning, then by yielding the core, never by sleeping,
//! and only while the reduction runs.
//!
//! Work is given as a number of parts, fixed by the caller: part p runs on thread p mod T. What a
//! part computes never depends on T, so neither do the bits of the result.

use std::cell::UnsafeCell;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Spins of a waiting thread before it starts yielding its core to others.
const SPINS: usize = 1 << 14;

type Task<'a> = &'a (dyn Fn(usize) + Sync);

/// The caller's thread and `threads − 1` helpers (see the module documentation).
pub struct Team {
    threads: usize,
    /// Bumped (Release) after `task` and `parts` are written; helpers read them after seeing it
    /// (Acquire).
    generation: AtomicUsize,
    /// Helpers done with the current task.
    finished: AtomicUsize,
    /// Set by a helper whose part panicked; the caller panics in its place.
    panicked: AtomicBool,
    /// The current task, or `None` to send the helpers home.
    task: UnsafeCell<Option<Task<'static>>>,
    parts: UnsafeCell<usize>,
}

// SAFETY: `task` and `parts` are written only by the caller while no helper reads them (before a
// generation bump that helpers acquire, and after every helper has reported `finished` for the
// previous one); the task itself is `Sync`.
unsafe impl Sync for Team {}

/// Run `body` with a team of `threads` threads, the calling one included (1: no helpers).
pub fn with_team<R>(threads: usize, body: impl FnOnce(&Team) -> R) -> R {
    let team = Team {
        threads: threads.max(1),
        generation: AtomicUsize::new(0),
        finished: AtomicUsize::new(0),
        panicked: AtomicBool::new(false),
        task: UnsafeCell::new(None),
        parts: UnsafeCell::new(0),
    };
    std::thread::scope(|scope| {
        for index in 1..team.threads {
            let team = &team;
            scope.spawn(move || team.serve(index));
        }
        // Sends the helpers home however `body` ends, so that the scope can join them.
        struct Dismiss<'a>(&'a Team);
        impl Drop for Dismiss<'_> {
            fn drop(&mut self) {
                // SAFETY: no task is running (every `run` waits for its helpers).
                unsafe { *self.0.task.get() = None };
                self.0.generation.fetch_add(1, Ordering::Release);
            }
        }
        let _dismiss = Dismiss(&team);
        body(&team)
    })
}

impl Team {
    /// Run `task(p)` for every part p in 0..parts, part p on thread p mod T, and return when all
    /// are done.
    pub fn run(&self, parts: usize, task: &(dyn Fn(usize) + Sync)) {
        if self.threads == 1 || parts <= 1 {
            (0..parts).for_each(task);
            return;
        }
        // SAFETY: the helpers use `task` only between the bump below and their increment of
        // `finished`, and this function waits for every helper's increment before it returns
        // (or unwinds), so the borrow outlives every use; the lifetime is erased only to store it.
        unsafe {
            *self.task.get() = Some(std::mem::transmute::<Task<'_>, Task<'static>>(task));
            *self.parts.get() = parts;
        }
        self.finished.store(0, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::Release);
        let own = catch_unwind(AssertUnwindSafe(|| (0..parts).step_by(self.threads).for_each(task)));
        wait_until(|| self.finished.load(Ordering::Acquire) == self.threads - 1);
        if let Err(payload) = own {
            resume_unwind(payload);
        }
        assert!(
            !self.panicked.load(Ordering::Relaxed),
            "a helper thread of the tridiagonalisation panicked"
        );
    }

    fn serve(&self, index: usize) {
        let mut seen = 0;
        loop {
            wait_until(|| self.generation.load(Ordering::Acquire) != seen);
            seen = self.generation.load(Ordering::Acquire);
            // SAFETY: written before the bump just acquired, and not again until this helper
            // reports `finished` (see `run`).
            let (task, parts) = unsafe { (*self.task.get(), *self.parts.get()) };
            let Some(task) = task else { return };
            let done = catch_unwind(AssertUnwindSafe(|| (index..parts).step_by(self.threads).for_each(task)));
            if done.is_err() {
                self.panicked.store(true, Ordering::Relaxed);
            }
            self.finished.fetch_add(1, Ordering::Release);
        }
    }
}

/// Spin until `ready()`, then keep checking between yields of the core.
fn wait_until(ready: impl Fn() -> bool) {
    for _ in 0..SPINS {
        if ready() {
            return;
        }
        std::hint::spin_loop();
    }
    while !ready() {
        std::thread::yield_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_runs_once_whatever_the_team() {
        for threads in 1..=4 {
            with_team(threads, |team| {
                for parts in 0..10 {
                    let counts: Vec<AtomicUsize> = (0..parts).map(|_| AtomicUsize::new(0)).collect();
                    team.run(parts, &|p| {
                        counts[p].fetch_add(1, Ordering::Relaxed);
                    });
                    assert!(
                        counts.iter().all(|c| c.load(Ordering::Relaxed) == 1),
                        "{threads} threads, {parts} parts"
                    );
                }
            });
        }
    }

    #[test]
    fn a_panicking_part_panics_the_caller_and_the_team_ends() {
        for (threads, bad) in [(2, 0), (2, 1), (3, 2)] {
            let caught = std::panic::catch_unwind(|| {
                with_team(threads, |team| {
                    team.run(4, &|p| assert!(p != bad, "part {p} fails"));
                })
            });
            assert!(caught.is_err(), "{threads} threads, part {bad}: the panic was lost");
        }
    }
}
