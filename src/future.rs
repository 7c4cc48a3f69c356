//! `Future`: the state machine behind `ferropool.Future`, a real
//! `concurrent.futures.Future` (the Python class inherits from this one and from the
//! stdlib's).
//!
//! States and transitions are the stdlib's:
//!
//! ```text
//! PENDING --set_running_or_notify_cancel--> RUNNING --set_result/set_exception--> FINISHED
//!    |  \---------------------------------set_result/set_exception-------------------^
//!    +--cancel--> CANCELLED --set_running_or_notify_cancel--> CANCELLED_AND_NOTIFIED
//! ```
//!
//! Locking: one `parking_lot` mutex per future guards its state; it is held only for
//! field updates and never while Python code runs or while blocking. Callbacks, waiter
//! notifications and decrefs happen after it is released. Only a future that a stdlib
//! function touched (through `_condition` / `_waiters` / `_state`) pays for the stdlib's
//! protocol: from then on its transitions also take that `threading.Condition`, so the
//! stdlib's check-then-install of waiters cannot miss a completion.

use std::sync::Arc;

use parking_lot::{Condvar, Mutex};
use pyo3::exceptions::{PyException, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyList, PyTuple, PyType};
use pyo3::{ffi, intern};
use pyo3::{PyTraverseError, PyVisit};

use crate::errors::{log_error, logger, CancelledError, InvalidStateError, TimeoutError};
use crate::waiter::{block_until, Completion, Deadline, Waiter};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    Pending,
    Running,
    Cancelled,
    CancelledAndNotified,
    Finished,
}

impl State {
    pub(crate) fn is_done(self) -> bool {
        matches!(
            self,
            State::Cancelled | State::CancelledAndNotified | State::Finished
        )
    }

    fn is_cancelled(self) -> bool {
        matches!(self, State::Cancelled | State::CancelledAndNotified)
    }

    /// The stdlib's `_state` value.
    fn name(self) -> &'static str {
        match self {
            State::Pending => "PENDING",
            State::Running => "RUNNING",
            State::Cancelled => "CANCELLED",
            State::CancelledAndNotified => "CANCELLED_AND_NOTIFIED",
            State::Finished => "FINISHED",
        }
    }

    /// The stdlib's `_STATE_TO_DESCRIPTION_MAP`, used by `repr`.
    fn description(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Running => "running",
            State::Cancelled | State::CancelledAndNotified => "cancelled",
            State::Finished => "finished",
        }
    }
}

/// What a finished future holds.
#[derive(Debug)]
pub(crate) enum Outcome {
    Empty,
    Value(Py<PyAny>),
    /// Usually an exception instance; `set_exception` accepts anything, as the stdlib does.
    Error(Py<PyAny>),
}

impl Outcome {
    fn clone_ref(&self, py: Python<'_>) -> Outcome {
        match self {
            Outcome::Empty => Outcome::Empty,
            Outcome::Value(value) => Outcome::Value(value.clone_ref(py)),
            Outcome::Error(error) => Outcome::Error(error.clone_ref(py)),
        }
    }

    fn completion(&self) -> Completion {
        match self {
            Outcome::Error(_) => Completion::Exception,
            _ => Completion::Result,
        }
    }
}

/// What `FutureCore::try_start_running_detached` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(unix), allow(dead_code))]
pub(crate) enum DetachedStart {
    /// PENDING to RUNNING: the call may be sent.
    Started,
    /// Cancelled before it started: acknowledge it with `start_running`, attached.
    Cancelled,
    /// Already running or done (completed by hand): the call must not run.
    Unexpected,
}

/// The stdlib's synchronisation state, built the first time a stdlib function asks.
#[derive(Debug)]
struct StdlibProtocol {
    condition: Py<PyAny>,
    waiters: Py<PyList>,
}

/// A Rust waiter watching this future, and the future's index in that wait.
#[derive(Debug)]
struct WaiterLink {
    waiter: Arc<Waiter>,
    index: usize,
}

#[derive(Debug)]
struct Inner {
    state: State,
    outcome: Outcome,
    callbacks: Vec<Py<PyAny>>,
    links: Vec<WaiterLink>,
    stdlib: Option<Box<StdlibProtocol>>,
}

/// Base class of `ferropool.Future`; see the module docs.
#[pyclass(subclass, frozen, name = "Future", module = "ferropool._core")]
#[derive(Debug)]
pub struct FutureCore {
    inner: Mutex<Inner>,
    /// Wakes threads blocked in `result()` / `exception()`.
    done_signal: Condvar,
}

/// What a transition leaves to do once the future's own lock is released.
struct Aftermath {
    callbacks: Vec<Py<PyAny>>,
    links: Vec<WaiterLink>,
    stdlib_waiters: Option<Py<PyList>>,
}

impl Aftermath {
    fn none() -> Self {
        Aftermath {
            callbacks: Vec::new(),
            links: Vec::new(),
            stdlib_waiters: None,
        }
    }
}

/// The acquired `_condition` of a future that the stdlib protocol has touched.
struct HeldCondition<'py>(Bound<'py, PyAny>);

impl<'py> HeldCondition<'py> {
    fn acquire(condition: Bound<'py, PyAny>) -> PyResult<Self> {
        condition.call_method0(intern!(condition.py(), "acquire"))?;
        Ok(HeldCondition(condition))
    }

    /// `notify_all()` then `release()`, as the stdlib does when leaving `with _condition`.
    fn release(self) -> PyResult<()> {
        let py = self.0.py();
        let notified = self.0.call_method0(intern!(py, "notify_all"));
        self.0.call_method0(intern!(py, "release"))?;
        notified.map(drop)
    }
}

/// The Python class that executors instantiate (`ferropool.Future`), registered by the
/// package at import.
static FUTURE_CLASS: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// Registers `ferropool.Future`, the class that executors hand out.
#[pyfunction]
pub(crate) fn _register_future_class(py: Python<'_>, cls: Bound<'_, PyType>) -> PyResult<()> {
    if !cls.is_subclass_of::<FutureCore>()? {
        return Err(pyo3::exceptions::PyTypeError::new_err(
            "the future class must derive from ferropool._core.Future",
        ));
    }
    FUTURE_CLASS
        .set(py, cls.unbind())
        .map_err(|_| PyRuntimeError::new_err("the future class is already registered"))
}

/// A new pending `ferropool.Future`, made without running any `__init__` (the hot path
/// of `submit`: `tp_new` alone, no argument parsing, no Python frame).
pub(crate) fn new_future(py: Python<'_>) -> PyResult<Bound<'_, FutureCore>> {
    let Some(cls) = FUTURE_CLASS.get(py) else {
        return Bound::new(py, FutureCore::new_pending());
    };
    let cls = cls.bind(py);
    let empty = PyTuple::empty(py);
    // SAFETY: `cls` is a heap type deriving from `FutureCore`, so `tp_new` is PyO3's
    // constructor for it (never NULL); it gets a valid type, an args tuple and NULL
    // kwargs, and returns a new reference or NULL with an exception set.
    let object = unsafe {
        let tp_new = ffi::PyType_GetSlot(cls.as_type_ptr(), ffi::Py_tp_new);
        let tp_new: ffi::newfunc = std::mem::transmute(tp_new);
        Bound::from_owned_ptr_or_err(
            py,
            tp_new(cls.as_type_ptr(), empty.as_ptr(), std::ptr::null_mut()),
        )?
    };
    Ok(object.cast_into::<FutureCore>()?)
}

impl FutureCore {
    pub(crate) fn new_pending() -> Self {
        FutureCore {
            inner: Mutex::new(Inner {
                state: State::Pending,
                outcome: Outcome::Empty,
                callbacks: Vec::new(),
                links: Vec::new(),
                stdlib: None,
            }),
            done_signal: Condvar::new(),
        }
    }

    pub(crate) fn state(&self) -> State {
        self.inner.lock().state
    }

    /// How a settled future ended (`None` while it is not settled). Settled is done as
    /// `wait` and `as_completed` see it: a future cancelled but not yet acknowledged by
    /// its executor is still waited for, as in the stdlib.
    pub(crate) fn settled_as(&self) -> Option<Completion> {
        let inner = self.inner.lock();
        match inner.state {
            State::CancelledAndNotified => Some(Completion::Cancelled),
            State::Finished => Some(inner.outcome.completion()),
            _ => None,
        }
    }

    /// Registers `waiter` unless the future is already settled, atomically with the
    /// check, so that no completion falls between the two. Returns how it ended if it
    /// already had.
    pub(crate) fn watch(&self, waiter: &Arc<Waiter>, index: usize) -> Option<Completion> {
        let mut inner = self.inner.lock();
        match inner.state {
            State::CancelledAndNotified => Some(Completion::Cancelled),
            State::Finished => Some(inner.outcome.completion()),
            _ => {
                inner.links.push(WaiterLink {
                    waiter: Arc::clone(waiter),
                    index,
                });
                None
            }
        }
    }

    pub(crate) fn unwatch(&self, waiter: &Arc<Waiter>) {
        let mut inner = self.inner.lock();
        inner
            .links
            .retain(|link| !Arc::ptr_eq(&link.waiter, waiter));
    }

    /// Runs `transition` under the future's lock, also holding the stdlib `_condition`
    /// if a stdlib function has ever looked at this future.
    fn transition<'py, R>(
        slf: &Bound<'py, Self>,
        mut transition: impl FnMut(&mut Inner) -> R,
    ) -> PyResult<(R, Option<HeldCondition<'py>>)> {
        let py = slf.py();
        let mut held: Option<HeldCondition<'py>> = None;
        loop {
            let mut inner = slf.get().inner.lock();
            match (&inner.stdlib, &held) {
                (Some(stdlib), None) => {
                    // The stdlib's lock comes first; never wait for it holding ours.
                    let condition = stdlib.condition.clone_ref(py).into_bound(py);
                    drop(inner);
                    held = Some(HeldCondition::acquire(condition)?);
                }
                _ => return Ok((transition(&mut inner), held)),
            }
        }
    }

    /// Runs what a transition left to do: stdlib waiters (under the held condition),
    /// threads blocked in `result()`, Rust waiters, then the done callbacks.
    fn settle(
        slf: &Bound<'_, Self>,
        aftermath: Aftermath,
        held: Option<HeldCondition<'_>>,
        how: Option<Completion>,
    ) -> PyResult<()> {
        let py = slf.py();
        slf.get().done_signal.notify_all();
        let mut stdlib_result = Ok(());
        if let (Some(waiters), Some(how)) = (&aftermath.stdlib_waiters, how) {
            let method = match how {
                Completion::Result => intern!(py, "add_result"),
                Completion::Exception => intern!(py, "add_exception"),
                Completion::Cancelled => intern!(py, "add_cancelled"),
            };
            for waiter in waiters.bind(py).iter() {
                if let Err(err) = waiter.call_method1(method, (slf,)) {
                    stdlib_result = Err(err);
                    break;
                }
            }
        }
        if let Some(held) = held {
            held.release()?;
        }
        stdlib_result?;
        if let Some(how) = how {
            for link in &aftermath.links {
                link.waiter.notify(link.index, how);
            }
        }
        invoke_callbacks(slf, aftermath.callbacks)
    }

    /// `set_result` / `set_exception`: PENDING or RUNNING to FINISHED.
    pub(crate) fn finish(slf: &Bound<'_, Self>, outcome: Outcome) -> PyResult<()> {
        let py = slf.py();
        let how = outcome.completion();
        let mut outcome = Some(outcome);
        let (transition, held) = Self::transition(slf, |inner| {
            if inner.state.is_done() {
                return Err(inner.state);
            }
            inner.state = State::Finished;
            inner.outcome = outcome.take().unwrap_or(Outcome::Empty);
            Ok(Aftermath {
                callbacks: std::mem::take(&mut inner.callbacks),
                links: std::mem::take(&mut inner.links),
                stdlib_waiters: inner.stdlib.as_ref().map(|s| s.waiters.clone_ref(py)),
            })
        })?;
        match transition {
            Ok(aftermath) => Self::settle(slf, aftermath, held, Some(how)),
            Err(state) => {
                if let Some(held) = held {
                    held.release()?;
                }
                Err(InvalidStateError::new_err(format!(
                    "{}: {}",
                    state.name(),
                    slf.repr()?
                )))
            }
        }
    }

    /// PENDING to RUNNING (true), or CANCELLED to CANCELLED_AND_NOTIFIED (false).
    pub(crate) fn start_running(slf: &Bound<'_, Self>) -> PyResult<bool> {
        let py = slf.py();
        let (transition, held) = Self::transition(slf, |inner| match inner.state {
            State::Pending => {
                inner.state = State::Running;
                Ok(None)
            }
            State::Cancelled => {
                inner.state = State::CancelledAndNotified;
                Ok(Some(Aftermath {
                    callbacks: Vec::new(),
                    links: std::mem::take(&mut inner.links),
                    stdlib_waiters: inner.stdlib.as_ref().map(|s| s.waiters.clone_ref(py)),
                }))
            }
            state => Err(state),
        })?;
        match transition {
            Ok(None) => {
                if let Some(held) = held {
                    // Entering RUNNING notifies nobody in the stdlib either.
                    held.0.call_method0(intern!(py, "release"))?;
                }
                Ok(true)
            }
            Ok(Some(aftermath)) => {
                Self::settle(slf, aftermath, held, Some(Completion::Cancelled))?;
                Ok(false)
            }
            Err(state) => {
                if let Some(held) = held {
                    held.release()?;
                }
                let id = slf.as_ptr() as usize;
                logger(py)?.call_method1(
                    intern!(py, "critical"),
                    ("Future %s in unexpected state: %s", id, state.name()),
                )?;
                Err(PyRuntimeError::new_err("Future in unexpected state"))
            }
        }
    }

    /// PENDING to RUNNING without the interpreter, for a dispatcher that runs detached
    /// (the process pool's dispatcher). Entering RUNNING notifies nobody, not even the
    /// stdlib protocol (see `start_running`), so the future's own lock is all it takes.
    /// A cancelled future is left as it is: acknowledging the cancel wakes waiters, which
    /// is `start_running`'s job, attached.
    #[cfg_attr(not(unix), allow(dead_code))]
    pub(crate) fn try_start_running_detached(&self) -> DetachedStart {
        let mut inner = self.inner.lock();
        match inner.state {
            State::Pending => {
                inner.state = State::Running;
                DetachedStart::Started
            }
            State::Cancelled => DetachedStart::Cancelled,
            _ => DetachedStart::Unexpected,
        }
    }

    /// RUNNING back to PENDING, without the interpreter: a process-pool worker handed
    /// the call back unstarted, so it may be cancelled again. Entering and leaving
    /// RUNNING notify nobody (see `start_running`). False if the future is not RUNNING
    /// (completed by hand meanwhile).
    #[cfg_attr(not(unix), allow(dead_code))]
    pub(crate) fn unstart_detached(&self) -> bool {
        let mut inner = self.inner.lock();
        if inner.state == State::Running {
            inner.state = State::Pending;
            true
        } else {
            false
        }
    }

    /// PENDING to CANCELLED; true if the future is (now) cancelled.
    pub(crate) fn cancel_future(slf: &Bound<'_, Self>) -> PyResult<bool> {
        let (transition, held) = Self::transition(slf, |inner| match inner.state {
            State::Running | State::Finished => (false, None),
            State::Cancelled | State::CancelledAndNotified => (true, None),
            State::Pending => {
                inner.state = State::Cancelled;
                let mut aftermath = Aftermath::none();
                aftermath.callbacks = std::mem::take(&mut inner.callbacks);
                (true, Some(aftermath))
            }
        })?;
        match transition {
            (cancelled, Some(aftermath)) => {
                // Only `result()` waiters and callbacks hear of a plain cancel; `wait`
                // and `as_completed` learn of it from set_running_or_notify_cancel.
                Self::settle(slf, aftermath, held, None)?;
                Ok(cancelled)
            }
            (cancelled, None) => {
                if let Some(held) = held {
                    held.release()?;
                }
                Ok(cancelled)
            }
        }
    }

    /// Blocks (detached, interruptible) until the future is done or the timeout passes.
    /// A done future never looks at `timeout`, as in the stdlib.
    fn wait_done(&self, py: Python<'_>, timeout: Option<&Bound<'_, PyAny>>) -> PyResult<State> {
        let state = self.state();
        if state.is_done() {
            return Ok(state);
        }
        let deadline = Deadline::from_timeout(timeout)?;
        block_until(py, deadline, |slice| {
            let mut inner = self.inner.lock();
            if !inner.state.is_done() {
                self.done_signal.wait_for(&mut inner, slice);
            }
            inner.state.is_done()
        })?;
        Ok(self.state())
    }

    fn snapshot(&self, py: Python<'_>) -> (State, Outcome) {
        let inner = self.inner.lock();
        (inner.state, inner.outcome.clone_ref(py))
    }

    fn stdlib_protocol(&self, py: Python<'_>) -> PyResult<(Py<PyAny>, Py<PyList>)> {
        if let Some(stdlib) = &self.inner.lock().stdlib {
            return Ok((stdlib.condition.clone_ref(py), stdlib.waiters.clone_ref(py)));
        }
        // Built outside the lock: making a Condition runs Python code.
        static CONDITION: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        let condition = CONDITION
            .import(py, "threading", "Condition")?
            .call0()?
            .unbind();
        let waiters = PyList::empty(py).unbind();
        let mut inner = self.inner.lock();
        let stdlib = inner
            .stdlib
            .get_or_insert_with(|| Box::new(StdlibProtocol { condition, waiters }));
        Ok((stdlib.condition.clone_ref(py), stdlib.waiters.clone_ref(py)))
    }
}

/// Calls each callback with the future. An `Exception` is logged to the
/// `concurrent.futures` logger and swallowed; a `BaseException` propagates.
pub(crate) fn invoke_callbacks(
    future: &Bound<'_, FutureCore>,
    callbacks: Vec<Py<PyAny>>,
) -> PyResult<()> {
    let py = future.py();
    for callback in callbacks {
        call_callback(future, callback.bind(py))?;
    }
    Ok(())
}

fn call_callback(future: &Bound<'_, FutureCore>, callback: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = future.py();
    match callback.call1((future,)) {
        Ok(_) => Ok(()),
        Err(err) if err.is_instance_of::<PyException>(py) => {
            log_error(
                py,
                "error",
                "exception calling callback for %r",
                &[future.as_any()],
                Some(&err),
            );
            Ok(())
        }
        Err(err) => Err(err),
    }
}

/// The error that `result()` raises for a stored exception (or a non-exception value
/// given to `set_exception`, which raises TypeError, as `raise value` would).
fn stored_error(error: Py<PyAny>, py: Python<'_>) -> PyErr {
    PyErr::from_value(error.into_bound(py))
}

#[pymethods]
impl FutureCore {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn py_new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyAny>>) -> Self {
        FutureCore::new_pending()
    }

    /// Cancel the future if possible. Returns True if the future was cancelled, False
    /// otherwise. A future cannot be cancelled if it is running or has already completed.
    fn cancel(slf: &Bound<'_, Self>) -> PyResult<bool> {
        Self::cancel_future(slf)
    }

    /// Return True if the future was cancelled.
    fn cancelled(&self) -> bool {
        self.state().is_cancelled()
    }

    /// Return True if the future is currently executing.
    fn running(&self) -> bool {
        self.state() == State::Running
    }

    /// Return True if the future was cancelled or finished executing.
    fn done(&self) -> bool {
        self.state().is_done()
    }

    /// Return the result of the call that the future represents.
    ///
    /// Waits up to `timeout` seconds (forever if None); raises TimeoutError if the
    /// future did not finish in time, CancelledError if it was cancelled, and the
    /// call's exception if it raised.
    #[pyo3(signature = (timeout=None))]
    fn result(&self, py: Python<'_>, timeout: Option<&Bound<'_, PyAny>>) -> PyResult<Py<PyAny>> {
        let state = self.wait_done(py, timeout)?;
        match state {
            State::Finished => match self.snapshot(py).1 {
                Outcome::Value(value) => Ok(value),
                Outcome::Error(error) => Err(stored_error(error, py)),
                Outcome::Empty => Ok(py.None()),
            },
            State::Cancelled | State::CancelledAndNotified => Err(CancelledError::new_err(())),
            State::Pending | State::Running => Err(TimeoutError::new_err(())),
        }
    }

    /// Return the exception raised by the call that the future represents (None if it
    /// completed without raising). Waits like `result()`.
    #[pyo3(signature = (timeout=None))]
    fn exception(&self, py: Python<'_>, timeout: Option<&Bound<'_, PyAny>>) -> PyResult<Py<PyAny>> {
        let state = self.wait_done(py, timeout)?;
        match state {
            State::Finished => match self.snapshot(py).1 {
                Outcome::Error(error) => Ok(error),
                _ => Ok(py.None()),
            },
            State::Cancelled | State::CancelledAndNotified => Err(CancelledError::new_err(())),
            State::Pending | State::Running => Err(TimeoutError::new_err(())),
        }
    }

    /// Attach a callable to be called with the future when it is cancelled or finishes.
    /// If the future is already done, the callable is called at once, in this thread.
    #[pyo3(signature = (r#fn, /))]
    fn add_done_callback(slf: &Bound<'_, Self>, r#fn: Bound<'_, PyAny>) -> PyResult<()> {
        {
            let mut inner = slf.get().inner.lock();
            if !inner.state.is_done() {
                inner.callbacks.push(r#fn.unbind());
                return Ok(());
            }
        }
        call_callback(slf, &r#fn)
    }

    /// Mark the future as running or process any cancel notifications. Should only be
    /// used by Executor implementations and unit tests.
    fn set_running_or_notify_cancel(slf: &Bound<'_, Self>) -> PyResult<bool> {
        Self::start_running(slf)
    }

    /// Set the return value of work associated with the future. Should only be used by
    /// Executor implementations and unit tests.
    fn set_result(slf: &Bound<'_, Self>, result: Bound<'_, PyAny>) -> PyResult<()> {
        Self::finish(slf, Outcome::Value(result.unbind()))
    }

    /// Set the exception raised by the work associated with the future. Should only be
    /// used by Executor implementations and unit tests.
    fn set_exception(slf: &Bound<'_, Self>, exception: Bound<'_, PyAny>) -> PyResult<()> {
        Self::finish(slf, Outcome::Error(exception.unbind()))
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        let py = slf.py();
        let (state, outcome) = slf.get().snapshot(py);
        let class_name = slf.get_type().name()?;
        let id = slf.as_ptr() as usize;
        let head = format!("<{class_name} at {id:#x} state={}", state.description());
        let type_name = |object: &Py<PyAny>| object.bind(py).get_type().name();
        Ok(match (state, outcome) {
            (State::Finished, Outcome::Error(error)) => {
                format!("{head} raised {}>", type_name(&error)?)
            }
            (State::Finished, Outcome::Value(value)) => {
                format!("{head} returned {}>", type_name(&value)?)
            }
            (State::Finished, Outcome::Empty) => format!("{head} returned NoneType>"),
            _ => format!("{head}>"),
        })
    }

    /// The objects a future holds, for the cyclic GC: a result, an exception (and its
    /// traceback's frames) or a callback that refers back to the future forms a cycle.
    /// A future whose lock is taken at this instant reports nothing, which only keeps
    /// its referents alive one collection longer; traversal must never block.
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        let Some(inner) = self.inner.try_lock() else {
            return Ok(());
        };
        if let Outcome::Value(object) | Outcome::Error(object) = &inner.outcome {
            visit.call(object)?;
        }
        for callback in &inner.callbacks {
            visit.call(callback)?;
        }
        if let Some(stdlib) = &inner.stdlib {
            visit.call(&stdlib.condition)?;
            visit.call(&stdlib.waiters)?;
        }
        Ok(())
    }

    fn __clear__(&self) {
        let released = {
            let mut inner = self.inner.lock();
            (
                std::mem::replace(&mut inner.outcome, Outcome::Empty),
                std::mem::take(&mut inner.callbacks),
                inner.stdlib.take(),
            )
        };
        // Decrefs may run arbitrary Python code: only once the lock is released.
        drop(released);
    }

    // The stdlib's private protocol, read by concurrent.futures.wait / as_completed.

    #[getter]
    fn _state(&self) -> &'static str {
        self.state().name()
    }

    #[getter]
    fn _condition(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(self.stdlib_protocol(py)?.0)
    }

    #[getter]
    fn _waiters(&self, py: Python<'_>) -> PyResult<Py<PyList>> {
        Ok(self.stdlib_protocol(py)?.1)
    }

    #[getter]
    fn _result(&self, py: Python<'_>) -> Py<PyAny> {
        match self.snapshot(py).1 {
            Outcome::Value(value) => value,
            _ => py.None(),
        }
    }

    #[getter]
    fn _exception(&self, py: Python<'_>) -> Py<PyAny> {
        match self.snapshot(py).1 {
            Outcome::Error(error) => error,
            _ => py.None(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::waiter::WaitMode;
    use pyo3::types::PyInt;

    fn with_future(test: impl FnOnce(&Bound<'_, FutureCore>)) {
        Python::attach(|py| {
            let future = Bound::new(py, FutureCore::new_pending()).unwrap();
            test(&future);
        });
    }

    #[test]
    fn pending_to_running_to_finished() {
        with_future(|future| {
            let py = future.py();
            assert_eq!(future.get().state(), State::Pending);
            assert!(FutureCore::start_running(future).unwrap());
            assert_eq!(future.get().state(), State::Running);
            assert!(!FutureCore::cancel_future(future).unwrap());
            FutureCore::finish(
                future,
                Outcome::Value(PyInt::new(py, 7).into_any().unbind()),
            )
            .unwrap();
            assert_eq!(future.get().state(), State::Finished);
            let value = future.get().result(py, None).unwrap();
            assert_eq!(value.extract::<i64>(py).unwrap(), 7);
        });
    }

    #[test]
    fn a_finished_future_cannot_finish_again() {
        with_future(|future| {
            let py = future.py();
            FutureCore::finish(future, Outcome::Value(py.None())).unwrap();
            let err = FutureCore::finish(future, Outcome::Value(py.None())).unwrap_err();
            assert!(err.is_instance_of::<InvalidStateError>(py));
            assert!(err.to_string().contains("FINISHED: <Future at 0x"));
        });
    }

    #[test]
    fn cancel_then_notify_reaches_waiters_only_on_notify() {
        with_future(|future| {
            let waiter = Arc::new(Waiter::new(WaitMode::AllCompleted, 1));
            assert_eq!(future.get().watch(&waiter, 0), None);
            assert!(FutureCore::cancel_future(future).unwrap());
            assert_eq!(future.get().state(), State::Cancelled);
            assert!(future.get().settled_as().is_none());
            assert!(waiter.take_finished().is_empty());
            assert!(!FutureCore::start_running(future).unwrap());
            assert_eq!(future.get().state(), State::CancelledAndNotified);
            assert_eq!(waiter.take_finished(), vec![0]);
            assert_eq!(future.get().settled_as(), Some(Completion::Cancelled));
        });
    }

    #[test]
    fn set_running_twice_is_an_error() {
        with_future(|future| {
            assert!(FutureCore::start_running(future).unwrap());
            let err = FutureCore::start_running(future).unwrap_err();
            assert!(err.is_instance_of::<PyRuntimeError>(future.py()));
        });
    }

    #[test]
    fn unwatch_removes_the_link() {
        with_future(|future| {
            let py = future.py();
            let waiter = Arc::new(Waiter::new(WaitMode::FirstCompleted, 1));
            assert_eq!(future.get().watch(&waiter, 3), None);
            future.get().unwatch(&waiter);
            FutureCore::finish(future, Outcome::Value(py.None())).unwrap();
            assert!(waiter.take_finished().is_empty());
            assert_eq!(future.get().watch(&waiter, 3), Some(Completion::Result));
        });
    }

    #[test]
    fn racing_finish_and_cancel_have_exactly_one_winner() {
        Python::attach(|py| {
            for _ in 0..200 {
                let future = Bound::new(py, FutureCore::new_pending()).unwrap().unbind();
                let other = future.clone_ref(py);
                let finisher = std::thread::spawn(move || {
                    Python::attach(|py| {
                        FutureCore::finish(other.bind(py), Outcome::Value(py.None())).is_ok()
                    })
                });
                let cancelled = FutureCore::cancel_future(future.bind(py)).unwrap();
                let finished = py.detach(|| finisher.join().unwrap());
                assert!(
                    cancelled != finished,
                    "cancelled={cancelled} finished={finished}"
                );
            }
        });
    }
}
