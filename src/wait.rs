//! `wait` and `as_completed` over ferropool futures, with the stdlib's semantics
//! (`concurrent/futures/_base.py`). The Python layer sends inputs holding any other
//! kind of future to the stdlib's own functions, which speak the private protocol
//! that ferropool futures also serve.

use std::collections::VecDeque;
use std::sync::Arc;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PySet;

use crate::errors::TimeoutError;
use crate::future::FutureCore;
use crate::waiter::{Completion, Deadline, WaitMode, Waiter};

/// The stdlib's `return_when` constants; anything else is an error once it matters.
fn wait_mode(return_when: &Bound<'_, PyAny>) -> Option<WaitMode> {
    match return_when.extract::<String>().ok()?.as_str() {
        "FIRST_COMPLETED" => Some(WaitMode::FirstCompleted),
        "FIRST_EXCEPTION" => Some(WaitMode::FirstException),
        "ALL_COMPLETED" => Some(WaitMode::AllCompleted),
        _ => None,
    }
}

/// Registers `waiter` on every future not yet known to be settled. A future that
/// settled since it was looked at is reported to the waiter at once, since the waiter
/// counted it as pending.
fn watch_pending(futures: &[Bound<'_, FutureCore>], done: &[bool], waiter: &Arc<Waiter>) {
    for (index, future) in futures.iter().enumerate() {
        if !done[index] {
            if let Some(how) = future.get().watch(waiter, index) {
                waiter.notify(index, how);
            }
        }
    }
}

fn unwatch_all(futures: &[Bound<'_, FutureCore>], waiter: &Arc<Waiter>) {
    for future in futures {
        future.get().unwatch(waiter);
    }
}

fn done_and_not_done<'py>(
    py: Python<'py>,
    futures: &[Bound<'py, FutureCore>],
    done: &[bool],
) -> PyResult<Bound<'py, PyAny>> {
    static RESULT_TYPE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let done_set = PySet::empty(py)?;
    let not_done_set = PySet::empty(py)?;
    for (future, &is_done) in futures.iter().zip(done) {
        if is_done { &done_set } else { &not_done_set }.add(future)?;
    }
    RESULT_TYPE
        .import(py, "concurrent.futures._base", "DoneAndNotDoneFutures")?
        .call1((done_set, not_done_set))
}

/// `wait()` over distinct ferropool futures (the Python layer has made them a set).
#[pyfunction]
#[pyo3(signature = (futures, timeout, return_when))]
pub(crate) fn _wait<'py>(
    py: Python<'py>,
    futures: Vec<Bound<'py, FutureCore>>,
    timeout: Option<Bound<'py, PyAny>>,
    return_when: Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let settled: Vec<Option<Completion>> = futures.iter().map(|f| f.get().settled_as()).collect();
    let mut done: Vec<bool> = settled.iter().map(Option::is_some).collect();
    let done_count = done.iter().filter(|&&d| d).count();
    let mode = wait_mode(&return_when);
    let return_now = done_count == futures.len()
        || match mode {
            Some(WaitMode::FirstCompleted) => done_count > 0,
            Some(WaitMode::FirstException) => settled.contains(&Some(Completion::Exception)),
            _ => false,
        };
    if return_now {
        return done_and_not_done(py, &futures, &done);
    }
    // The stdlib validates return_when only once it has to wait; so do we.
    let Some(mode) = mode else {
        return Err(PyValueError::new_err(format!(
            "Invalid return condition: {}",
            return_when.repr()?
        )));
    };
    let deadline = Deadline::from_timeout(timeout.as_ref())?;
    let waiter = Arc::new(Waiter::new(mode, futures.len() - done_count));
    watch_pending(&futures, &done, &waiter);
    let outcome = waiter.wait(py, deadline);
    unwatch_all(&futures, &waiter);
    outcome?;
    for index in waiter.take_finished() {
        done[index] = true;
    }
    done_and_not_done(py, &futures, &done)
}

/// The iterator returned by `as_completed` over ferropool futures: settled futures
/// first, then each future as it settles; TimeoutError with the stdlib's message when
/// the deadline passes.
#[pyclass(module = "ferropool._core")]
pub struct AsCompleted {
    /// A future's slot is emptied once it is yielded, so the iterator stops keeping it
    /// alive (as the stdlib's `ref_collect` does).
    futures: Vec<Option<Py<FutureCore>>>,
    ready: VecDeque<usize>,
    unfinished: usize,
    total: usize,
    deadline: Deadline,
    waiter: Arc<Waiter>,
    exhausted: bool,
}

impl AsCompleted {
    fn release(&mut self) {
        if self.exhausted {
            return;
        }
        self.exhausted = true;
        for future in self.futures.iter().flatten() {
            future.get().unwatch(&self.waiter);
        }
        self.futures.clear();
        self.ready.clear();
    }

    fn take(&mut self, index: usize) -> Option<Py<FutureCore>> {
        self.futures.get_mut(index).and_then(Option::take)
    }
}

/// `as_completed()` over distinct ferropool futures (the Python layer made them a set).
#[pyfunction]
#[pyo3(signature = (futures, timeout))]
pub(crate) fn _as_completed(
    futures: Vec<Bound<'_, FutureCore>>,
    timeout: Option<Bound<'_, PyAny>>,
) -> PyResult<AsCompleted> {
    let deadline = Deadline::from_timeout(timeout.as_ref())?;
    let waiter = Arc::new(Waiter::new(WaitMode::AsCompleted, 0));
    let ready: VecDeque<usize> = futures
        .iter()
        .enumerate()
        .filter(|(index, future)| future.get().watch(&waiter, *index).is_some())
        .map(|(index, _)| index)
        .collect();
    Ok(AsCompleted {
        unfinished: futures.len() - ready.len(),
        total: futures.len(),
        futures: futures.into_iter().map(|f| Some(f.unbind())).collect(),
        ready,
        deadline,
        waiter,
        exhausted: false,
    })
}

#[pymethods]
impl AsCompleted {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(mut slf: PyRefMut<'_, Self>, py: Python<'_>) -> PyResult<Option<Py<FutureCore>>> {
        loop {
            while let Some(index) = slf.ready.pop_front() {
                if let Some(future) = slf.take(index) {
                    return Ok(Some(future));
                }
            }
            if slf.exhausted || slf.unfinished == 0 {
                slf.release();
                return Ok(None);
            }
            // The borrow stays held while blocked: another thread calling next() gets
            // "already borrowed", as a generator says "already executing".
            let waiter = Arc::clone(&slf.waiter);
            let fired = match waiter.wait(py, slf.deadline) {
                Ok(fired) => fired,
                Err(err) => {
                    slf.release();
                    return Err(err);
                }
            };
            let finished = waiter.take_finished();
            slf.unfinished -= finished.len();
            slf.ready.extend(finished);
            if !fired && slf.ready.is_empty() {
                let message = format!("{} (of {}) futures unfinished", slf.unfinished, slf.total);
                slf.release();
                return Err(TimeoutError::new_err(message));
            }
        }
    }

    /// Stops the iteration early and lets go of the futures, like a generator's close().
    fn close(&mut self) {
        self.release();
    }
}

impl Drop for AsCompleted {
    fn drop(&mut self) {
        for future in self.futures.iter().flatten() {
            future.get().unwatch(&self.waiter);
        }
    }
}
