//! A few threads kept awake for the length of one tridiagonalisation.
//!
//! The reduction splits a matrix–vector product over the cores once per column: 2,000 times at
//! N = 2,000, each a fraction of a millisecond. Handing each product to rayon wakes a sleeping
//! worker every time, and on this 2-core virtual machine that wake-up cost as much as the second
//! core gained (the products took 0.42 s on two threads, one thread alone streams them in about
//! 0.43 s, and two threads that never sleep in 0.21 s). A team's helpers wait for the next task
//! by spinning for a short while ([`SPIN_TIME`]) and only then sleep, so back-to-back tasks find
//! them awake, while a team that waits longer (or shares its cores with other work) gives the
//! cores back.
//!
//! Work is given as a number of parts, fixed by the caller: part p runs on thread p mod T. What a
//! part computes never depends on T, so neither do the bits of the result.

use std::any::Any;
use std::cell::UnsafeCell;
use std::marker::PhantomData;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// How long a waiting thread spins before it sleeps (helpers) or yields its core (the caller):
/// longer than the serial work between two tasks of a reduction (tens of µs at N = 2,000).
/// Measured at N = 2,000 on 2 cores, `none`: spinning 50 µs 0.44–0.46 s, 200 µs 0.42–0.44 s,
/// 1 ms 0.42–0.43 s.
const SPIN_TIME: Duration = Duration::from_micros(200);

type Task<'a> = &'a (dyn Fn(usize) + Sync);

/// What the caller's thread and its helpers share.
struct Shared {
    threads: usize,
    /// Bumped (SeqCst) after `task` and `parts` are written; helpers read them after seeing it.
    generation: AtomicUsize,
    /// Helpers done with the current task.
    finished: AtomicUsize,
    /// The first panic of a helper's part, re-raised by the caller.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    /// The current task, or `None` to send the helpers home.
    task: UnsafeCell<Option<Task<'static>>>,
    parts: UnsafeCell<usize>,
    /// Each helper's thread, and whether it may be asleep (then the caller wakes it).
    helpers: Vec<(OnceLock<Thread>, AtomicBool)>,
}

// SAFETY: `task` and `parts` are written only by the caller while no helper reads them (before a
// generation bump that helpers acquire, and after every helper has reported `finished` for the
// previous one); the task itself is `Sync`. Only the [`Team`] handle writes them, and it is
// neither `Sync` nor `Send`, and `run` takes it by `&mut`: tasks cannot start tasks.
unsafe impl Sync for Shared {}

/// The caller's handle on its team: [`Team::run`] hands out work.
pub struct Team<'a> {
    shared: &'a Shared,
    _not_shared: PhantomData<*const ()>,
}

/// Run `body` with a team of up to `threads` threads, the calling one included: no more than
/// the machine has cores (spinning threads sharing a core slow each other down), and 1 means no
/// helpers.
pub fn with_team<R>(threads: usize, body: impl FnOnce(&mut Team<'_>) -> R) -> R {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = threads.clamp(1, cores);
    let shared = Shared {
        threads,
        generation: AtomicUsize::new(0),
        finished: AtomicUsize::new(0),
        panic: Mutex::new(None),
        task: UnsafeCell::new(None),
        parts: UnsafeCell::new(0),
        helpers: (1..threads)
            .map(|_| (OnceLock::new(), AtomicBool::new(false)))
            .collect(),
    };
    std::thread::scope(|scope| {
        // Sends the helpers home however this ends (even if starting one fails), so that the
        // scope can join them.
        struct Dismiss<'a>(&'a Shared);
        impl Drop for Dismiss<'_> {
            fn drop(&mut self) {
                // SAFETY: no task is running (every `run` waits for its helpers).
                unsafe { *self.0.task.get() = None };
                self.0.bump();
            }
        }
        let _dismiss = Dismiss(&shared);
        for index in 1..threads {
            let shared = &shared;
            scope.spawn(move || shared.serve(index));
        }
        body(&mut Team {
            shared: &shared,
            _not_shared: PhantomData,
        })
    })
}

impl Team<'_> {
    /// Run `task(p)` for every part p in 0..parts, part p on thread p mod T, and return when all
    /// are done. A panic in any part is raised here once every part has stopped.
    pub fn run(&mut self, parts: usize, task: &(dyn Fn(usize) + Sync)) {
        let shared = self.shared;
        if shared.threads == 1 || parts <= 1 {
            (0..parts).for_each(task);
            return;
        }
        // SAFETY: the helpers use `task` only between the bump below and their increment of
        // `finished`, and this function waits for every helper's increment before it returns
        // (or unwinds), so the borrow outlives every use; the lifetime is erased only to store it.
        unsafe {
            *shared.task.get() = Some(std::mem::transmute::<Task<'_>, Task<'static>>(task));
            *shared.parts.get() = parts;
        }
        shared.finished.store(0, Ordering::Relaxed);
        shared.bump();
        let own = catch_unwind(AssertUnwindSafe(|| (0..parts).step_by(shared.threads).for_each(task)));
        let all_done = || shared.finished.load(Ordering::Acquire) == shared.threads - 1;
        if !spin_until(&all_done) {
            while !all_done() {
                std::thread::yield_now();
            }
        }
        if let Err(payload) = own {
            resume_unwind(payload);
        }
        if let Some(payload) = shared.panic.lock().unwrap_or_else(|e| e.into_inner()).take() {
            resume_unwind(payload);
        }
    }
}

impl Shared {
    /// Publish the task (or the dismissal) and wake the helpers that went to sleep.
    fn bump(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        for (thread, asleep) in &self.helpers {
            if asleep.load(Ordering::SeqCst) {
                if let Some(thread) = thread.get() {
                    thread.unpark();
                }
            }
        }
    }

    fn serve(&self, index: usize) {
        let (thread, asleep) = &self.helpers[index - 1];
        let _ = thread.set(std::thread::current());
        let mut seen = 0;
        loop {
            let fresh = || self.generation.load(Ordering::SeqCst) != seen;
            if !spin_until(&fresh) {
                // Announce the sleep, then look once more: either this sees the bump or the
                // bump sees the announcement and unparks (both SeqCst). Wake-ups without a bump
                // loop back here.
                asleep.store(true, Ordering::SeqCst);
                while !fresh() {
                    std::thread::park();
                }
                asleep.store(false, Ordering::SeqCst);
            }
            seen = self.generation.load(Ordering::SeqCst);
            // SAFETY: written before the bump just seen, and not again until this helper
            // reports `finished` (see `Team::run`).
            let (task, parts) = unsafe { (*self.task.get(), *self.parts.get()) };
            let Some(task) = task else { return };
            let done = catch_unwind(AssertUnwindSafe(|| (index..parts).step_by(self.threads).for_each(task)));
            if let Err(payload) = done {
                self.panic
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_or_insert(payload);
            }
            self.finished.fetch_add(1, Ordering::Release);
        }
    }
}

/// Spin for `ready()` up to [`SPIN_TIME`]; whether it came.
fn spin_until(ready: &impl Fn() -> bool) -> bool {
    let start = Instant::now();
    loop {
        for _ in 0..64 {
            if ready() {
                return true;
            }
            std::hint::spin_loop();
        }
        if start.elapsed() >= SPIN_TIME {
            return ready();
        }
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
    fn helpers_that_fell_asleep_are_woken_for_the_next_task() {
        with_team(2, |team| {
            for round in 0..3 {
                // Long enough for every helper to stop spinning and park.
                std::thread::sleep(std::time::Duration::from_millis(20));
                let count = AtomicUsize::new(0);
                team.run(4, &|_| {
                    count.fetch_add(1, Ordering::Relaxed);
                });
                assert_eq!(count.into_inner(), 4, "round {round}");
            }
        });
    }

    #[test]
    fn a_panicking_part_panics_the_caller_with_its_message_and_the_team_ends() {
        for (threads, bad) in [(2, 0), (2, 1), (3, 2)] {
            let caught = std::panic::catch_unwind(|| {
                with_team(threads, |team| {
                    team.run(4, &|p| assert!(p != bad, "part {p} fails"));
                })
            });
            let payload = caught.expect_err("the panic was lost");
            let message = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("");
            assert!(
                message.contains(&format!("part {bad} fails")),
                "{threads} threads, part {bad}: got {message:?}"
            );
        }
    }
}
