//! The thread pool: a crossbeam queue of jobs and worker loops that run on real Python
//! threads (`threading.Thread`, started by the Python layer), so names, `threading.local`,
//! `threading.settrace` and interpreter-exit joining behave as with the stdlib.
//!
//! A worker holds its thread state for its whole life. It runs jobs attached and drains
//! the queue before it lets go of the interpreter; it detaches only to block on an empty
//! queue. The pool's lock guards the queue's sender and the flags `submit` checks; it is
//! never held while Python code runs: everything that may call Python (decrefs of jobs,
//! starting threads, completing futures) happens after it is released.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use parking_lot::{Mutex, MutexGuard};
use pyo3::exceptions::PyRuntimeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PySet, PyTuple};

use crate::errors::{log_error, BrokenThreadPool};
use crate::future::{new_future, FutureCore, Outcome};
use crate::map::{Inputs, MapBatch, MapIterator};
use crate::waiter::{spin_until, Deadline, SPIN_BEFORE_PARKING};

/// Set by the exit hook: from then on no pool accepts work, as in the stdlib.
static INTERPRETER_SHUTDOWN: AtomicBool = AtomicBool::new(false);

const BROKEN_BY_INITIALIZER: &str =
    "A thread initializer failed, the thread pool is not usable anymore";

/// What the queue carries.
pub(crate) enum Job {
    /// One `submit`.
    Call(Call),
    /// A worker's share of a `map`: as many copies are queued as workers may help.
    Map(Arc<MapBatch>),
}

impl Job {
    fn run(self, py: Python<'_>) {
        match self {
            Job::Call(call) => call.run(py),
            Job::Map(batch) => batch.run(py),
        }
    }

    /// Fails the job's future(s) without running it (a broken pool).
    fn fail(self, py: Python<'_>, error: PyErr) {
        match self {
            Job::Call(call) => {
                let future = call.future.into_bound(py);
                // A cancelled future stays cancelled.
                let _ =
                    FutureCore::finish(&future, Outcome::Error(error.into_value(py).into_any()));
            }
            Job::Map(batch) => batch.abort(py, Some(&error)),
        }
    }

    /// Cancels the job's pending future(s) (`shutdown(cancel_futures=True)`), reporting
    /// them to waiters at once.
    fn cancel(self, py: Python<'_>) -> PyResult<()> {
        match self {
            Job::Call(call) => {
                let future = call.future.bind(py);
                if FutureCore::cancel_future(future)? {
                    FutureCore::start_running(future)?;
                }
                Ok(())
            }
            Job::Map(batch) => {
                batch.abort(py, None);
                Ok(())
            }
        }
    }
}

/// One `submit`: the call and the future that reports it.
pub(crate) struct Call {
    future: Py<FutureCore>,
    func: Py<PyAny>,
    args: Py<PyTuple>,
    kwargs: Option<Py<PyDict>>,
}

impl Call {
    fn run(self, py: Python<'_>) {
        let Call {
            future,
            func,
            args,
            kwargs,
        } = self;
        let future = future.into_bound(py);
        match FutureCore::start_running(&future) {
            Ok(true) => {}
            Ok(false) => return,
            Err(err) => return log_error(py, "critical", "Exception in worker", &[], Some(&err)),
        }
        let returned = func
            .bind(py)
            .call(args.bind(py), kwargs.as_ref().map(|kwargs| kwargs.bind(py)));
        // The call's inputs are released before anyone can see the result (SPEC R4).
        drop((func, args, kwargs));
        let outcome = match returned {
            Ok(value) => Outcome::Value(value.unbind()),
            Err(err) => Outcome::Error(err.into_value(py).into_any()),
        };
        if let Err(err) = FutureCore::finish(&future, outcome) {
            // A BaseException from a done callback: the stdlib's worker would die of it;
            // this one reports it and keeps serving.
            log_error(py, "critical", "Exception in worker", &[], Some(&err));
        }
    }
}

/// Set once by `ThreadPoolExecutor.__init__`.
struct PoolConfig {
    max_workers: usize,
    name_prefix: String,
    initializer: Option<Py<PyAny>>,
    initargs: Py<PyTuple>,
    /// `start_worker(name, loop) -> Thread`, from the Python layer.
    start_worker: Py<PyAny>,
}

struct PoolState {
    /// `None` once the pool stops taking work: the workers then drain the queue and exit.
    sender: Option<Sender<Job>>,
    receiver: Receiver<Job>,
    shutdown: bool,
    broken: Option<&'static str>,
    /// Threads started or being started; names are `{prefix}_{index}`.
    started: usize,
    threads: Vec<Py<PyAny>>,
}

impl PoolState {
    fn new() -> Self {
        let (sender, receiver) = crossbeam_channel::unbounded();
        PoolState {
            sender: Some(sender),
            receiver,
            shutdown: false,
            broken: None,
            started: 0,
            threads: Vec::new(),
        }
    }

    fn drain(&self) -> Vec<Job> {
        self.receiver.try_iter().collect()
    }
}

/// A mutex that a child process can re-create in place after `fork()`, as CPython's
/// `_at_fork_reinit` does for its own locks: a lock held by a parent's thread at the
/// moment of the fork would otherwise stay locked forever in the child.
struct ForkSafeMutex<T>(UnsafeCell<Mutex<T>>);

// SAFETY: all access goes through the inner `Mutex`, except `reinit_after_fork`, whose
// caller guarantees that no other thread exists.
unsafe impl<T: Send> Sync for ForkSafeMutex<T> {}

impl<T> ForkSafeMutex<T> {
    fn new(value: T) -> Self {
        ForkSafeMutex(UnsafeCell::new(Mutex::new(value)))
    }

    fn lock(&self) -> MutexGuard<'_, T> {
        // SAFETY: shared access to the mutex, which synchronises itself.
        unsafe { (*self.0.get()).lock() }
    }

    /// Replaces the mutex with a fresh, unlocked one, returning the old contents
    /// without touching the old lock word.
    ///
    /// # Safety
    /// Only in a child after `fork()`, before any other thread starts, with no guard of
    /// this lock alive in the calling thread.
    unsafe fn reinit_after_fork(&self, value: T) -> T {
        std::ptr::replace(self.0.get(), Mutex::new(value)).into_inner()
    }
}

/// What the pool and its workers share. Workers hold it, never the executor object,
/// so an executor dropped without `shutdown()` still lets its workers finish and exit.
pub(crate) struct PoolShared {
    config: OnceLock<PoolConfig>,
    state: ForkSafeMutex<PoolState>,
    /// Workers parked on an empty queue and not yet claimed by a submit, like the
    /// stdlib's `_idle_semaphore`: a submit that claims one starts no new thread.
    idle_workers: AtomicUsize,
}

/// What `enqueue` decided, to be carried out once the pool's lock is released.
enum Admission {
    Queued,
    QueuedStartWorker(usize, Receiver<Job>),
}

impl PoolShared {
    fn config(&self) -> PyResult<&PoolConfig> {
        self.config
            .get()
            .ok_or_else(|| PyRuntimeError::new_err("ThreadPoolExecutor.__init__() was not called"))
    }

    /// Queues `job` or says why not. The job is dropped (a decref, maybe Python code)
    /// only after the lock is released, since it is declared before the guard.
    fn enqueue(&self, job: Job, max_workers: usize) -> PyResult<Admission> {
        let mut state = self.state.lock();
        if let Some(message) = state.broken {
            return Err(BrokenThreadPool::new_err(message));
        }
        if state.shutdown {
            return Err(PyRuntimeError::new_err(
                "cannot schedule new futures after shutdown",
            ));
        }
        if INTERPRETER_SHUTDOWN.load(Ordering::Acquire) {
            return Err(PyRuntimeError::new_err(
                "cannot schedule new futures after interpreter shutdown",
            ));
        }
        let Some(sender) = &state.sender else {
            return Err(PyRuntimeError::new_err(
                "cannot schedule new futures after shutdown",
            ));
        };
        if sender.send(job).is_err() {
            unreachable!("the pool keeps a receiver for as long as it has a sender");
        }
        let claimed_idle = self
            .idle_workers
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok();
        if claimed_idle || state.started >= max_workers {
            return Ok(Admission::Queued);
        }
        state.started += 1;
        Ok(Admission::QueuedStartWorker(
            state.started - 1,
            state.receiver.clone(),
        ))
    }

    fn start_worker(
        self: &Arc<Self>,
        py: Python<'_>,
        index: usize,
        receiver: Receiver<Job>,
    ) -> PyResult<()> {
        let config = self.config()?;
        let name = format!("{}_{}", config.name_prefix, index);
        let worker = Worker {
            shared: Arc::clone(self),
            receiver,
        };
        match config.start_worker.bind(py).call1((name, worker)) {
            Ok(thread) => {
                self.state.lock().threads.push(thread.unbind());
                Ok(())
            }
            Err(err) => {
                self.state.lock().started -= 1;
                Err(err)
            }
        }
    }

    /// Stops taking work; returns the jobs still queued if `take_queued`.
    fn close(&self, mark_shutdown: bool, take_queued: bool) -> (Option<Sender<Job>>, Vec<Job>) {
        let mut state = self.state.lock();
        state.shutdown |= mark_shutdown;
        let queued = if take_queued {
            state.drain()
        } else {
            Vec::new()
        };
        (state.sender.take(), queued)
    }

    fn initializer_failed(&self, py: Python<'_>) {
        let queued = {
            let mut state = self.state.lock();
            state.broken = Some(BROKEN_BY_INITIALIZER);
            state.drain()
        };
        for job in queued {
            job.fail(py, BrokenThreadPool::new_err(BROKEN_BY_INITIALIZER));
        }
    }
}

/// Base class of `ferropool.ThreadPoolExecutor`: the queue, the workers, `submit` and
/// the core of `shutdown`. Arguments are checked and threads started by the Python class.
#[pyclass(
    subclass,
    frozen,
    name = "ThreadPoolExecutor",
    module = "ferropool._core"
)]
pub struct ThreadPoolCore {
    shared: Arc<PoolShared>,
}

#[pymethods]
impl ThreadPoolCore {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn py_new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyAny>>) -> Self {
        ThreadPoolCore {
            shared: Arc::new(PoolShared {
                config: OnceLock::new(),
                state: ForkSafeMutex::new(PoolState::new()),
                idle_workers: AtomicUsize::new(0),
            }),
        }
    }

    /// Sets the pool up; called once by `ThreadPoolExecutor.__init__` after it checked
    /// the arguments.
    fn _configure(
        &self,
        max_workers: usize,
        name_prefix: String,
        initializer: Option<Py<PyAny>>,
        initargs: Py<PyTuple>,
        start_worker: Py<PyAny>,
    ) -> PyResult<()> {
        self.shared
            .config
            .set(PoolConfig {
                max_workers,
                name_prefix,
                initializer,
                initargs,
                start_worker,
            })
            .map_err(|_| PyRuntimeError::new_err("the executor is already initialized"))
    }

    /// Submits a callable to be executed with the given arguments.
    ///
    /// Schedules the callable to be executed as fn(*args, **kwargs) and returns a Future
    /// instance representing the execution of the callable.
    #[pyo3(signature = (r#fn, /, *args, **kwargs))]
    fn submit<'py>(
        &self,
        py: Python<'py>,
        r#fn: Bound<'py, PyAny>,
        args: Bound<'py, PyTuple>,
        kwargs: Option<Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, FutureCore>> {
        let max_workers = self.shared.config()?.max_workers;
        let future = new_future(py)?;
        let job = Job::Call(Call {
            future: future.clone().unbind(),
            func: r#fn.unbind(),
            args: args.unbind(),
            kwargs: kwargs.map(Bound::unbind),
        });
        self.schedule(py, job, max_workers)?;
        Ok(future)
    }

    /// The core of `map(fn, *iterables, timeout=timeout)`: the inputs are collected at
    /// once, as the stdlib does, and run as one batch; see `map.rs`.
    #[pyo3(signature = (r#fn, iterables, timeout=None))]
    fn _map(
        &self,
        py: Python<'_>,
        r#fn: Bound<'_, PyAny>,
        iterables: Bound<'_, PyTuple>,
        timeout: Option<Bound<'_, PyAny>>,
    ) -> PyResult<MapIterator> {
        let deadline = Deadline::from_timeout(timeout.as_ref())?;
        let max_workers = self.shared.config()?.max_workers;
        let inputs = collect_inputs(&iterables)?;
        let len = match &inputs {
            Inputs::Items(list) | Inputs::ArgTuples(list) => list.bind(py).len(),
        };
        if len == 0 {
            return Ok(MapIterator::new(None, deadline));
        }
        let helpers = max_workers.min(len);
        let batch = Arc::new(MapBatch::new(py, r#fn.unbind(), inputs, helpers));
        for _ in 0..helpers {
            if let Err(err) = self.schedule(py, Job::Map(Arc::clone(&batch)), max_workers) {
                batch.abort(py, None);
                return Err(err);
            }
        }
        Ok(MapIterator::new(Some(batch), deadline))
    }

    /// Stops taking work and returns the worker threads to join. With
    /// `cancel_futures`, the queued futures are cancelled (and reported to waiters).
    fn _begin_shutdown(&self, py: Python<'_>, cancel_futures: bool) -> PyResult<Vec<Py<PyAny>>> {
        let (sender, queued) = self.shared.close(true, cancel_futures);
        drop(sender);
        for job in queued {
            job.cancel(py)?;
        }
        let state = self.shared.state.lock();
        Ok(state.threads.iter().map(|t| t.clone_ref(py)).collect())
    }

    /// Stops taking work so that the workers exit once the queue is empty, without
    /// marking the executor shut down (interpreter exit, as the stdlib's `_python_exit`).
    fn _close(&self) {
        drop(self.shared.close(false, false));
    }

    /// The worker threads started so far (the stdlib's private `_threads`).
    #[getter]
    fn _threads<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PySet>> {
        let threads: Vec<Py<PyAny>> = {
            let state = self.shared.state.lock();
            state.threads.iter().map(|t| t.clone_ref(py)).collect()
        };
        PySet::new(py, threads)
    }

    /// True once `shutdown()` was called (the stdlib's private `_shutdown`).
    #[getter]
    fn _shutdown(&self) -> bool {
        self.shared.state.lock().shutdown
    }

    /// The broken-pool message, or False (the stdlib's private `_broken`).
    #[getter]
    fn _broken(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(match self.shared.state.lock().broken {
            Some(message) => message.into_pyobject(py)?.into_any().unbind(),
            None => false.into_pyobject(py)?.to_owned().into_any().unbind(),
        })
    }

    /// In a child process after `os.fork()`: the parent's workers do not exist here and
    /// its queue and lock may have been in use by them at the moment of the fork. Start
    /// afresh: new lock state, new queue, no threads. Jobs queued in the parent are
    /// forgotten (running them here would run them twice).
    fn _reset_after_fork(&self) {
        let shared = &self.shared;
        let mut fresh = PoolState::new();
        // SAFETY: after fork() only the calling thread exists, so no guard of this lock
        // is alive anywhere that can still run.
        let parent = unsafe { shared.state.reinit_after_fork(PoolState::new()) };
        fresh.shutdown = parent.shutdown;
        fresh.broken = parent.broken;
        if parent.sender.is_none() {
            fresh.sender = None;
        }
        // The parent's queue may be mid-operation by a thread that no longer exists:
        // never touch it again, not even to drop it.
        std::mem::forget(parent);
        *shared.state.lock() = fresh;
        shared.idle_workers.store(0, Ordering::Release);
    }
}

impl Drop for ThreadPoolCore {
    fn drop(&mut self) {
        // An executor dropped without shutdown(): its workers finish the queue and exit.
        drop(self.shared.close(false, false));
    }
}

impl ThreadPoolCore {
    fn schedule(&self, py: Python<'_>, job: Job, max_workers: usize) -> PyResult<()> {
        if let Admission::QueuedStartWorker(index, receiver) =
            self.shared.enqueue(job, max_workers)?
        {
            self.shared.start_worker(py, index, receiver)?;
        }
        Ok(())
    }
}

/// `list(zip(*iterables))`, without the tuples when there is only one iterable.
fn collect_inputs(iterables: &Bound<'_, PyTuple>) -> PyResult<Inputs> {
    let py = iterables.py();
    let list = |iterable: Bound<'_, PyAny>| -> PyResult<Py<PyList>> {
        // A copy even of a list: the caller may change theirs while the map runs.
        // SAFETY: PySequence_List takes any iterable and returns a new list or NULL
        // with an exception set.
        let list =
            unsafe { Bound::from_owned_ptr_or_err(py, ffi::PySequence_List(iterable.as_ptr()))? };
        Ok(list.cast_into::<PyList>()?.unbind())
    };
    if iterables.len() == 1 {
        return Ok(Inputs::Items(list(iterables.get_item(0)?)?));
    }
    let zip = py.import("builtins")?.getattr("zip")?.call1(iterables)?;
    Ok(Inputs::ArgTuples(list(zip)?))
}

/// The body of one worker thread: `threading.Thread(target=worker)`.
#[pyclass(frozen, module = "ferropool._core")]
pub struct Worker {
    shared: Arc<PoolShared>,
    receiver: Receiver<Job>,
}

#[pymethods]
impl Worker {
    fn __call__(&self, py: Python<'_>) -> PyResult<()> {
        let config = self.shared.config()?;
        if let Some(initializer) = &config.initializer {
            if let Err(err) = initializer.bind(py).call1(config.initargs.bind(py)) {
                log_error(py, "critical", "Exception in initializer:", &[], Some(&err));
                self.shared.initializer_failed(py);
                return Ok(());
            }
        }
        loop {
            // Drain what is queued while attached; detach only to wait for more.
            let job = match self.receiver.try_recv() {
                Ok(job) => job,
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {
                    self.shared.idle_workers.fetch_add(1, Ordering::AcqRel);
                    match py.detach(|| self.next_job_detached()) {
                        Ok(job) => job,
                        Err(_) => break,
                    }
                }
            };
            job.run(py);
        }
        Ok(())
    }
}

impl Worker {
    /// Waits for work without the interpreter: polls briefly first, since on a busy
    /// pool the next job typically arrives within microseconds, then parks.
    fn next_job_detached(&self) -> Result<Job, crossbeam_channel::RecvError> {
        let mut polled = None;
        spin_until(SPIN_BEFORE_PARKING, || match self.receiver.try_recv() {
            Ok(job) => {
                polled = Some(Ok(job));
                true
            }
            Err(TryRecvError::Disconnected) => {
                polled = Some(Err(crossbeam_channel::RecvError));
                true
            }
            Err(TryRecvError::Empty) => false,
        });
        polled.unwrap_or_else(|| self.receiver.recv())
    }
}

/// Called by the exit hook before the worker threads are joined.
#[pyfunction]
pub(crate) fn _mark_interpreter_shutdown() {
    INTERPRETER_SHUTDOWN.store(true, Ordering::Release);
}
