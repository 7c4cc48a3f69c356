//! Waiters: how a thread blocked in `wait`, `as_completed` or `result` learns that
//! futures completed, and the one blocking primitive every user-facing wait goes through.
//!
//! A [`Waiter`] is the Rust twin of the stdlib's `_Waiter` classes: futures hold
//! `(Arc<Waiter>, index)` links and report their completion to it after they have
//! released their own lock (lock order: a future's lock, then a waiter's lock; never
//! the reverse). A waiter holds indices only, never Python objects, so it can be
//! notified and dropped without the GIL.

use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// How long a blocked thread stays detached before it looks at pending signals. Ctrl-C
/// must surface within 100 ms (SPEC R2); Rust never sees the signal by itself.
pub(crate) const SIGNAL_CHECK_INTERVAL: Duration = Duration::from_millis(20);

/// How a future ended, as reported to the waiters that watch it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Completion {
    Result,
    Exception,
    Cancelled,
}

/// When a waiter considers its wait over, mirroring `_FirstCompletedWaiter`,
/// `_AllCompletedWaiter(stop_on_exception)` and `_AsCompletedWaiter`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WaitMode {
    FirstCompleted,
    FirstException,
    AllCompleted,
    AsCompleted,
}

#[derive(Debug)]
struct WaiterState {
    mode: WaitMode,
    /// Futures still expected to report (all-completed modes).
    pending: usize,
    /// Indices of the futures that reported, in completion order.
    finished: Vec<usize>,
    fired: bool,
}

#[derive(Debug)]
pub(crate) struct Waiter {
    state: Mutex<WaiterState>,
    wakeup: Condvar,
}

impl Waiter {
    pub(crate) fn new(mode: WaitMode, pending: usize) -> Self {
        Waiter {
            state: Mutex::new(WaiterState {
                mode,
                pending,
                finished: Vec::new(),
                fired: false,
            }),
            wakeup: Condvar::new(),
        }
    }

    /// Called by a future (never under its lock) when it completes.
    pub(crate) fn notify(&self, index: usize, how: Completion) {
        let mut state = self.state.lock();
        state.finished.push(index);
        let fire = match state.mode {
            WaitMode::FirstCompleted | WaitMode::AsCompleted => true,
            WaitMode::FirstException if how == Completion::Exception => true,
            WaitMode::FirstException | WaitMode::AllCompleted => {
                state.pending = state.pending.saturating_sub(1);
                state.pending == 0
            }
        };
        if fire {
            state.fired = true;
            self.wakeup.notify_one();
        }
    }

    /// Takes the indices reported so far and re-arms the waiter (as_completed).
    pub(crate) fn take_finished(&self) -> Vec<usize> {
        let mut state = self.state.lock();
        state.fired = false;
        std::mem::take(&mut state.finished)
    }

    /// Waits at most `slice` for the waiter to fire; true if it has fired.
    fn wait_fired(&self, slice: Duration) -> bool {
        let mut state = self.state.lock();
        if !state.fired {
            self.wakeup.wait_for(&mut state, slice);
        }
        state.fired
    }

    /// Blocks, detached and interruptible, until the waiter fires or `deadline` passes.
    pub(crate) fn wait(&self, py: Python<'_>, deadline: Deadline) -> PyResult<bool> {
        block_until(py, deadline, |slice| self.wait_fired(slice))
    }
}

/// How long a thread that is about to block first polls, detached, for the event it
/// waits for. On the latency path (one submit, then `result()`), the event usually comes
/// within microseconds: polling saves two futex sleeps and wake-ups (SPEC P3).
pub(crate) const SPIN_BEFORE_PARKING: Duration = Duration::from_micros(50);

/// Polls `ready` for at most `limit`: a few busy iterations, then yielding the core.
pub(crate) fn spin_until(limit: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    let mut round = 0u32;
    loop {
        if ready() {
            return true;
        }
        if round < 64 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
            if start.elapsed() >= limit {
                return false;
            }
        }
        round += 1;
    }
}

/// A wait's end, from a Python `timeout` argument (`None` means forever).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Deadline {
    Never,
    At(Instant),
}

impl Deadline {
    /// Reads a `timeout` the way `threading.Condition.wait` does: `None` blocks forever,
    /// a value <= 0 does not block, NaN is an error, a huge value is forever.
    pub(crate) fn from_timeout(timeout: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let Some(timeout) = timeout.filter(|t| !t.is_none()) else {
            return Ok(Deadline::Never);
        };
        let seconds: f64 = timeout.extract()?;
        if seconds.is_nan() {
            return Err(PyValueError::new_err("Invalid value NaN (not a number)"));
        }
        let now = Instant::now();
        if seconds <= 0.0 {
            return Ok(Deadline::At(now));
        }
        Ok(Duration::try_from_secs_f64(seconds)
            .ok()
            .and_then(|d| now.checked_add(d))
            .map_or(Deadline::Never, Deadline::At))
    }

    /// Time left, or `None` when there is no deadline.
    pub(crate) fn remaining(&self) -> Option<Duration> {
        match self {
            Deadline::Never => None,
            Deadline::At(at) => Some(at.saturating_duration_since(Instant::now())),
        }
    }
}

/// The only way a user-facing call blocks: after a short detached spin, loops over
/// short detached waits (`wait_slice(max)` returns true once the condition holds) and
/// looks at pending signals between them, so Ctrl-C raises promptly on the main thread.
/// Returns false if the deadline passed first.
pub(crate) fn block_until<F>(py: Python<'_>, deadline: Deadline, wait_slice: F) -> PyResult<bool>
where
    F: Fn(Duration) -> bool + Sync,
{
    let may_spin = deadline
        .remaining()
        .is_none_or(|left| left >= SPIN_BEFORE_PARKING);
    if may_spin && py.detach(|| spin_until(SPIN_BEFORE_PARKING, || wait_slice(Duration::ZERO))) {
        return Ok(true);
    }
    loop {
        let slice = match deadline.remaining() {
            None => SIGNAL_CHECK_INTERVAL,
            Some(left) if left.is_zero() => return Ok(wait_slice(Duration::ZERO)),
            Some(left) => left.min(SIGNAL_CHECK_INTERVAL),
        };
        if py.detach(|| wait_slice(slice)) {
            return Ok(true);
        }
        py.check_signals()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn all_completed_fires_after_every_pending_future() {
        let waiter = Waiter::new(WaitMode::AllCompleted, 3);
        waiter.notify(0, Completion::Result);
        waiter.notify(2, Completion::Exception);
        assert!(!waiter.wait_fired(Duration::ZERO));
        waiter.notify(1, Completion::Cancelled);
        assert!(waiter.wait_fired(Duration::ZERO));
        assert_eq!(waiter.take_finished(), vec![0, 2, 1]);
    }

    #[test]
    fn first_exception_fires_on_an_exception_or_when_all_are_done() {
        let waiter = Waiter::new(WaitMode::FirstException, 3);
        waiter.notify(0, Completion::Result);
        assert!(!waiter.wait_fired(Duration::ZERO));
        waiter.notify(1, Completion::Exception);
        assert!(waiter.wait_fired(Duration::ZERO));

        let waiter = Waiter::new(WaitMode::FirstException, 2);
        waiter.notify(0, Completion::Result);
        waiter.notify(1, Completion::Cancelled);
        assert!(waiter.wait_fired(Duration::ZERO));
    }

    #[test]
    fn first_completed_and_as_completed_fire_at_once_and_rearm() {
        for mode in [WaitMode::FirstCompleted, WaitMode::AsCompleted] {
            let waiter = Waiter::new(mode, 2);
            waiter.notify(1, Completion::Result);
            assert!(waiter.wait_fired(Duration::ZERO));
            assert_eq!(waiter.take_finished(), vec![1]);
            assert!(!waiter.wait_fired(Duration::ZERO));
        }
    }

    #[test]
    fn a_notification_from_another_thread_wakes_the_waiter() {
        let waiter = Arc::new(Waiter::new(WaitMode::FirstCompleted, 1));
        let notifier = {
            let waiter = Arc::clone(&waiter);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                waiter.notify(0, Completion::Result);
            })
        };
        let started = Instant::now();
        while !waiter.wait_fired(Duration::from_secs(5)) {}
        assert!(started.elapsed() < Duration::from_secs(5));
        notifier.join().unwrap();
    }
}
