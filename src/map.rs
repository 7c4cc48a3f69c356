//! `Executor.map` without a future per item: one shared batch per call.
//!
//! Workers claim items through an atomic cursor, in grains that shrink as the batch
//! runs out (guided self-scheduling): cheap calls are claimed by the hundred, so the
//! queue and the GIL change hands rarely, while a short map of slow calls (I/O) still
//! spreads one item per worker. The iterator yields results in input order, raises an
//! item's exception when it reaches it, and cancels what has not started when it is
//! closed, times out, or hits an exception, as the stdlib's generator does.
//!
//! Memory ordering: a slot's cell is written only by the worker that claimed its index
//! (claims are unique), which then publishes it with a Release store of the slot's
//! state; the iterator reads the cell only after an Acquire load saw it finished, and
//! it is the cell's only user from then on.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::errors::{CancelledError, TimeoutError};
use crate::waiter::{block_until, Deadline};

/// Larger grains would only delay the first results.
const MAX_GRAIN: usize = 256;

const QUEUED: u8 = 0;
const FINISHED: u8 = 1;
const SKIPPED: u8 = 2;

/// The arguments of one call: `fn(item)` for one iterable, `fn(*args)` for several.
pub(crate) enum Args {
    One(Py<PyAny>),
    Many(Py<PyTuple>),
}

enum Cell {
    Input(Args),
    Returned(Py<PyAny>),
    Raised(Py<PyAny>),
    Taken,
}

struct Slot {
    state: AtomicU8,
    cell: UnsafeCell<Cell>,
}

/// One `map` call's work, shared by the workers that run it and its iterator.
pub(crate) struct MapBatch {
    func: Py<PyAny>,
    slots: Box<[Slot]>,
    next_claim: AtomicUsize,
    parallelism: usize,
    cancelled: AtomicBool,
    consumer_waiting: AtomicBool,
    wakeup_lock: Mutex<()>,
    wakeup: Condvar,
}

// SAFETY: the cells are handed from one thread to another through the slots' atomic
// states, as described in the module docs; everything else is Sync on its own.
unsafe impl Sync for MapBatch {}

impl MapBatch {
    pub(crate) fn new(func: Py<PyAny>, inputs: Vec<Args>, parallelism: usize) -> Self {
        MapBatch {
            func,
            slots: inputs
                .into_iter()
                .map(|args| Slot {
                    state: AtomicU8::new(QUEUED),
                    cell: UnsafeCell::new(Cell::Input(args)),
                })
                .collect(),
            next_claim: AtomicUsize::new(0),
            parallelism: parallelism.max(1),
            cancelled: AtomicBool::new(false),
            consumer_waiting: AtomicBool::new(false),
            wakeup_lock: Mutex::new(()),
            wakeup: Condvar::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    fn claim(&self) -> Option<std::ops::Range<usize>> {
        let len = self.slots.len();
        let claimed = self.next_claim.load(Ordering::Relaxed);
        let grain = (len.saturating_sub(claimed) / (2 * self.parallelism)).clamp(1, MAX_GRAIN);
        let start = self.next_claim.fetch_add(grain, Ordering::Relaxed);
        (start < len).then(|| start..(start + grain).min(len))
    }

    /// A worker's share: claims and runs items until none are left or the batch is
    /// cancelled.
    pub(crate) fn run(&self, py: Python<'_>) {
        let func = self.func.bind(py);
        while let Some(range) = self.claim() {
            for index in range {
                let slot = &self.slots[index];
                if self.cancelled.load(Ordering::Relaxed) {
                    slot.state.store(SKIPPED, Ordering::Release);
                    continue;
                }
                // SAFETY: this worker claimed `index`; nobody else touches the cell
                // until the Release store below.
                let cell = unsafe { &mut *slot.cell.get() };
                let returned = match std::mem::replace(cell, Cell::Taken) {
                    Cell::Input(Args::One(item)) => func.call1((item,)),
                    Cell::Input(Args::Many(args)) => func.call1(args.bind(py)),
                    _ => unreachable!("a slot is claimed once"),
                };
                *cell = match returned {
                    Ok(value) => Cell::Returned(value.unbind()),
                    Err(err) => Cell::Raised(err.into_value(py).into_any()),
                };
                slot.state.store(FINISHED, Ordering::Release);
            }
            if self.consumer_waiting.load(Ordering::Acquire) {
                let _guard = self.wakeup_lock.lock();
                self.wakeup.notify_all();
            }
        }
    }

    fn is_ready(&self, index: usize) -> bool {
        self.slots[index].state.load(Ordering::Acquire) != QUEUED
    }

    fn wait_ready(&self, py: Python<'_>, index: usize, deadline: Deadline) -> PyResult<bool> {
        if self.is_ready(index) {
            return Ok(true);
        }
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
        let len = self.slots.len();
        let first_unclaimed = self.next_claim.swap(len, Ordering::Relaxed).min(len);
        for slot in &self.slots[first_unclaimed..] {
            let state = match error {
                Some(error) => {
                    // SAFETY: claimed by the swap above, as a worker would.
                    unsafe {
                        *slot.cell.get() =
                            Cell::Raised(error.clone_ref(py).into_value(py).into_any())
                    };
                    FINISHED
                }
                None => SKIPPED,
            };
            slot.state.store(state, Ordering::Release);
        }
        let _guard = self.wakeup_lock.lock();
        self.wakeup.notify_all();
    }
}

/// The iterator that `ThreadPoolExecutor.map` returns.
#[pyclass(module = "ferropool._core")]
pub struct MapIterator {
    batch: Option<Arc<MapBatch>>,
    position: usize,
    deadline: Deadline,
}

impl MapIterator {
    pub(crate) fn new(batch: Option<Arc<MapBatch>>, deadline: Deadline) -> Self {
        MapIterator {
            batch,
            position: 0,
            deadline,
        }
    }

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

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let Some(batch) = self.batch.clone() else {
            return Ok(None);
        };
        let index = self.position;
        if index >= batch.len() {
            self.finish();
            return Ok(None);
        }
        match batch.wait_ready(py, index, self.deadline) {
            Ok(true) => {}
            Ok(false) => {
                self.finish();
                return Err(TimeoutError::new_err(()));
            }
            Err(err) => {
                self.finish();
                return Err(err);
            }
        }
        self.position += 1;
        if batch.slots[index].state.load(Ordering::Acquire) == SKIPPED {
            self.finish();
            return Err(CancelledError::new_err(()));
        }
        // SAFETY: the Acquire load in `wait_ready` saw the slot finished; the worker
        // that ran it is done with the cell and this iterator is its only user now.
        let cell = unsafe { &mut *batch.slots[index].cell.get() };
        match std::mem::replace(cell, Cell::Taken) {
            Cell::Returned(value) => Ok(Some(value)),
            Cell::Raised(error) => {
                self.finish();
                Err(PyErr::from_value(error.into_bound(py)))
            }
            Cell::Input(_) | Cell::Taken => {
                unreachable!("a finished slot holds an outcome, taken once")
            }
        }
    }

    /// Stops the iteration early: items that have not started are cancelled.
    fn close(&mut self) {
        self.finish();
    }
}

impl Drop for MapIterator {
    fn drop(&mut self) {
        self.finish();
    }
}
