//! `Executor.map` without a future per item: one shared batch per call.
//!
//! Workers claim items through an atomic cursor, in grains that shrink as the batch
//! runs out (guided self-scheduling): cheap calls are claimed by the hundred, so the
//! queue and the GIL change hands rarely, while a short map of slow calls (I/O) still
//! spreads one item per worker. The iterator yields results in input order, raises an
//! item's exception when it reaches it, and cancels what has not started when it is
//! closed, times out, or hits an exception, as the stdlib's generator does.
//!
//! The batch's list holds each input and then its outcome: an index is written only by
//! the worker that claimed it (claims are unique), which then publishes it with a
//! Release store of the index's state byte; the iterator reads it only after an Acquire
//! load saw it finished. (All list accesses also hold the GIL.)

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};
use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};

use crate::call::call_one;
use crate::errors::{CancelledError, TimeoutError};
use crate::waiter::{block_until, Deadline};

/// Larger grains would only delay the first results.
const MAX_GRAIN: usize = 256;

/// A slot's state; the outcome itself is in the batch's list, at the same index.
const QUEUED: u8 = 0;
const RETURNED: u8 = 1;
const RAISED: u8 = 2;
const SKIPPED: u8 = 3;

/// A batch's inputs, collected at once as the stdlib does (at C speed: `list(...)`).
/// The same list then carries the outcomes: a worker replaces each input with what its
/// call returned or raised, and the iterator replaces that with None as it yields it,
/// so an argument or a result lives no longer than with the stdlib's futures.
pub(crate) enum Inputs {
    /// One iterable: `fn(item)`.
    Items(Py<PyList>),
    /// Several iterables: `fn(*args)` for each tuple of `zip(*iterables)`.
    ArgTuples(Py<PyList>),
}

impl Inputs {
    pub(crate) fn list(&self) -> &Py<PyList> {
        match self {
            Inputs::Items(list) | Inputs::ArgTuples(list) => list,
        }
    }
}

/// One `map` call's work, shared by the workers that run it and its iterator.
pub(crate) struct MapBatch {
    func: Py<PyAny>,
    inputs: Inputs,
    states: Box<[AtomicU8]>,
    next_claim: AtomicUsize,
    parallelism: usize,
    cancelled: AtomicBool,
    consumer_waiting: AtomicBool,
    wakeup_lock: Mutex<()>,
    wakeup: Condvar,
}

impl MapBatch {
    pub(crate) fn new(py: Python<'_>, func: Py<PyAny>, inputs: Inputs, parallelism: usize) -> Self {
        let len = inputs.list().bind(py).len();
        MapBatch {
            func,
            inputs,
            states: (0..len).map(|_| AtomicU8::new(QUEUED)).collect(),
            next_claim: AtomicUsize::new(0),
            parallelism: parallelism.max(1),
            cancelled: AtomicBool::new(false),
            consumer_waiting: AtomicBool::new(false),
            wakeup_lock: Mutex::new(()),
            wakeup: Condvar::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.states.len()
    }

    fn claim(&self) -> Option<std::ops::Range<usize>> {
        let len = self.states.len();
        let claimed = self.next_claim.load(Ordering::Relaxed);
        let grain = (len.saturating_sub(claimed) / (2 * self.parallelism)).clamp(1, MAX_GRAIN);
        let start = self.next_claim.fetch_add(grain, Ordering::Relaxed);
        (start < len).then(|| start..(start + grain).min(len))
    }

    /// A worker's share: claims and runs items until none are left or the batch is
    /// cancelled.
    pub(crate) fn run(&self, py: Python<'_>) {
        let func = self.func.bind(py);
        let list = self.inputs.list().bind(py);
        while let Some(range) = self.claim() {
            for index in range {
                let state = &self.states[index];
                if self.cancelled.load(Ordering::Relaxed) {
                    state.store(SKIPPED, Ordering::Release);
                    continue;
                }
                let (outcome, how) = match self.call(func, list, index) {
                    Ok(value) => (value, RETURNED),
                    Err(err) => (err.into_value(py).into_bound(py).into_any(), RAISED),
                };
                // Replaces (and so releases) the input; this worker claimed the index
                // and nobody reads it until the Release store below.
                if list.set_item(index, outcome).is_err() {
                    unreachable!("the index is within the list, which never shrinks");
                }
                state.store(how, Ordering::Release);
            }
            if self.consumer_waiting.load(Ordering::Acquire) {
                let _guard = self.wakeup_lock.lock();
                self.wakeup.notify_all();
            }
        }
    }

    fn call<'py>(
        &self,
        func: &Bound<'py, PyAny>,
        list: &Bound<'py, PyList>,
        index: usize,
    ) -> PyResult<Bound<'py, PyAny>> {
        let input = list.get_item(index)?;
        match &self.inputs {
            Inputs::Items(_) => call_one(func, &input),
            Inputs::ArgTuples(_) => func.call1(input.cast_into::<PyTuple>()?),
        }
    }

    fn is_ready(&self, index: usize) -> bool {
        self.states[index].load(Ordering::Acquire) != QUEUED
    }

    fn wait_ready(&self, py: Python<'_>, index: usize, deadline: Deadline) -> PyResult<bool> {
        self.consumer_waiting.store(true, Ordering::Release);
        let ready = block_until(py, deadline, |slice| {
            let mut guard = self.wakeup_lock.lock();
            if !self.is_ready(index) {
                self.wakeup.wait_for(&mut guard, slice);
            }
            self.is_ready(index)
        });
        self.consumer_waiting.store(false, Ordering::Release);
        ready
    }

    fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    /// Ends the batch from outside (a shutdown that cancels pending work, a broken
    /// pool): every item not yet claimed is claimed here and marked cancelled, or
    /// failed with `error`, so that the iterator never waits for work nobody will run.
    pub(crate) fn abort(&self, py: Python<'_>, error: Option<&PyErr>) {
        let len = self.states.len();
        let first_unclaimed = self.next_claim.swap(len, Ordering::Relaxed).min(len);
        let list = self.inputs.list().bind(py);
        for index in first_unclaimed..len {
            let state = match error {
                Some(error) => {
                    // Claimed by the swap above, as a worker would.
                    let _ = list.set_item(index, error.clone_ref(py).into_value(py));
                    RAISED
                }
                None => SKIPPED,
            };
            self.states[index].store(state, Ordering::Release);
        }
        let _guard = self.wakeup_lock.lock();
        self.wakeup.notify_all();
    }
}

/// The iterator that `ThreadPoolExecutor.map` returns.
///
/// Frozen, with its state in a cell that only a thread holding the GIL touches: PyO3's
/// borrow flag for a mutable class is an atomic read-modify-write on every `next()`,
/// which showed up as a tenth of the time of a `map` over cheap calls.
#[pyclass(frozen, module = "ferropool._core")]
pub struct MapIterator {
    state: GilCell<IterState>,
}

struct IterState {
    batch: Option<Arc<MapBatch>>,
    position: usize,
    deadline: Deadline,
    /// Set while `next()` waits with the GIL released: a second caller meanwhile gets
    /// ValueError, as a generator says "already executing".
    busy: bool,
}

/// Interior mutability guarded by the GIL. This module is built for the stable ABI,
/// which free-threaded CPython cannot load, so every method of the class below runs
/// holding the GIL; `MapIterator` never lets the GIL go while it holds a reference into
/// the cell (it marks itself busy and takes what it needs out first).
struct GilCell<T>(std::cell::UnsafeCell<T>);

// SAFETY: see `GilCell`: accesses are serialised by the GIL.
unsafe impl<T: Send> Sync for GilCell<T> {}

impl<T> GilCell<T> {
    /// # Safety
    /// The caller holds the GIL and does not release it while the reference lives.
    #[allow(clippy::mut_from_ref)]
    unsafe fn get(&self, _py: Python<'_>) -> &mut T {
        &mut *self.0.get()
    }
}

impl MapIterator {
    pub(crate) fn new(batch: Option<Arc<MapBatch>>, deadline: Deadline) -> Self {
        MapIterator {
            state: GilCell(std::cell::UnsafeCell::new(IterState {
                batch,
                position: 0,
                deadline,
                busy: false,
            })),
        }
    }
}

impl IterState {
    /// Ends the iteration: what has not started will not run.
    fn finish(&mut self) {
        if let Some(batch) = self.batch.take() {
            batch.cancel();
        }
    }
}

#[pymethods]
impl MapIterator {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        // SAFETY: attached; the reference is dropped before the GIL is released below.
        let state = unsafe { self.state.get(py) };
        if state.busy {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "map iterator already executing",
            ));
        }
        let Some(batch) = &state.batch else {
            return Ok(None);
        };
        let index = state.position;
        if index >= batch.len() {
            state.finish();
            return Ok(None);
        }
        if !batch.is_ready(index) {
            let batch = Arc::clone(batch);
            let deadline = state.deadline;
            state.busy = true;
            let ready = batch.wait_ready(py, index, deadline);
            // SAFETY: attached again; the earlier reference is no longer used.
            let state = unsafe { self.state.get(py) };
            state.busy = false;
            match ready {
                Ok(true) => {}
                Ok(false) => {
                    state.finish();
                    return Err(TimeoutError::new_err(()));
                }
                Err(err) => {
                    state.finish();
                    return Err(err);
                }
            }
        }
        // SAFETY: attached; nothing below releases the GIL.
        let state = unsafe { self.state.get(py) };
        let Some(batch) = &state.batch else {
            return Ok(None);
        };
        state.position += 1;
        let flag = batch.states[index].load(Ordering::Acquire);
        if flag == SKIPPED {
            state.finish();
            return Err(CancelledError::new_err(()));
        }
        // The Acquire load saw the index finished: its worker is done with it. Take the
        // outcome out, so the batch does not keep it alive.
        let list = batch.inputs.list().bind(py);
        let outcome = list.get_item(index)?;
        list.set_item(index, py.None())?;
        if flag == RAISED {
            state.finish();
            return Err(PyErr::from_value(outcome));
        }
        Ok(Some(outcome.unbind()))
    }

    fn __length_hint__(&self, py: Python<'_>) -> usize {
        // SAFETY: attached; nothing here releases the GIL.
        let state = unsafe { self.state.get(py) };
        state
            .batch
            .as_ref()
            .map_or(0, |batch| batch.len().saturating_sub(state.position))
    }

    /// Stops the iteration early: items that have not started are cancelled.
    fn close(&self, py: Python<'_>) {
        // SAFETY: attached; nothing here releases the GIL.
        let state = unsafe { self.state.get(py) };
        if !state.busy {
            state.finish();
        }
    }
}

impl Drop for MapIterator {
    fn drop(&mut self) {
        self.state.0.get_mut().finish();
    }
}
