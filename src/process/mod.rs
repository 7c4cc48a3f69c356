//! `ProcessPoolExecutor`: a process pool whose parent-side data path is Rust.
//!
//! **Processes and pipes.** Workers are `multiprocessing` processes started through the
//! executor's `mp_context` (fork, spawn or forkserver) that run
//! `ferropool/_process_worker.py`, a small Python loop over two anonymous pipes per
//! worker: tasks in, replies out. Nothing else connects the parent and its children
//! (SPEC R7). With fork all workers start at the first `submit`, before any pool thread
//! exists (as the stdlib does); with spawn and forkserver they start on demand.
//!
//! **Messages** ([`wire`]). Each pipe carries a stream of entries: a fixed header and a
//! pickle. The parent sends TASK (`(fn, args, kwargs)`) and STOP; a worker answers
//! every task in order with OK or ERR (the exception, which unpickles with its remote
//! traceback as `__cause__` through the stdlib's own `_rebuild_exc`; one whose
//! `__init__` does not take its `args` is rebuilt from its args and attributes), or
//! RETURNED for a task it hands back unstarted, and says INIT_FAILED or BYE before it
//! exits. Since a worker takes its tasks in order, replies are matched to futures by
//! position: each worker has a FIFO of the tasks it was sent. A worker writes each reply
//! as its task ends, so an abrupt death loses no finished result.
//!
//! **Threads in the parent.**
//! - `submit` (any Python thread, attached) pickles the call while the queue holds less
//!   than 1 MiB of pickles; beyond that it keeps a reference to the call, as the
//!   stdlib does, so memory for pending work does not grow with argument size times
//!   queue length. If a worker is idle and nothing is queued, it writes the task to that
//!   worker's pipe itself (non-blocking); otherwise it queues it and wakes the
//!   dispatcher, only if that one sleeps with room for tasks.
//! - The dispatcher ([`dispatcher`], a plain Rust thread) moves queued tasks into the
//!   workers' windows (their futures go PENDING to RUNNING without the GIL) and writes
//!   them with non-blocking `writev`, polling the full pipes and a wake-up pipe. It
//!   takes the GIL only to pickle calls kept by reference, just before they are sent
//!   (the head of the queue is taken out under the lock, pickled without it, and put
//!   back in front); a call that does not pickle fails its own future, as at `submit`.
//! - The completer ([`completer`], a Python thread with one thread state for its life)
//!   polls the reply pipes, the process sentinels and its wake-up pipe, detached; reads
//!   and cuts replies, pairs them with futures (which frees room: the dispatcher is
//!   woken if tasks wait or if it starved); then, attached, unpickles and completes the
//!   futures in one batch, acknowledges cancels, joins exited processes, starts
//!   replacements (`max_tasks_per_child`) and fails everything when the pool breaks.
//!
//! A round trip on an idle pool is thus: caller writes, worker runs and writes,
//! completer reads and completes, caller wakes: no other thread in between.
//!
//! **Scheduling and batching.** A task is
//! - *pending* while queued in the parent: `cancel()`, `shutdown(cancel_futures=True)`,
//!   a closed, dropped, timed-out or interrupted `map` cancel it; a crash fails it;
//! - *committed* (RUNNING, as the items of the stdlib's call queue) once written to a
//!   worker's pipe: no longer cancellable; a crash fails it unless its reply came;
//! - *started* when the worker takes it; *done* when its reply is paired.
//!
//! A committed task that the worker hands back unstarted (RETURNED) goes back to
//! pending, first in the queue. The window (how many tasks a worker may hold) keeps
//! commitments few: a cold worker (new, idle with nothing queued, or whose last task
//! took 1 ms or more) holds one task, since the next one's length is unknown; a worker
//! that answers tiny tasks right now holds about 500 µs of them at its measured pace (at
//! most 64), enough to cover a round trip, so short tasks still travel by the dozen per
//! write, per read and per GIL acquisition. Tasks are dealt one at a time, idle workers
//! first, so the workers go through the queue side by side in its order, as from the
//! stdlib's shared queue: no task waits in one window while a later one runs elsewhere,
//! and none waits behind a task of unknown length while a worker is free. When tiny
//! tasks give way to long ones, the worker that meets the first long one hands back
//! the rest of its window once that task ends, and becomes cold. STOP goes to a worker
//! only once it holds nothing, so it never has a task to hand back after STOP. `map`
//! sends chunks of `chunksize` items, each one task.
//!
//! **Locks.** `Shared::state` (the queue, the workers' send halves with their FIFOs,
//! flags and counts) is held for field updates only, never across a system call, a call
//! into Python or a release of the GIL: by Python threads while attached and by the two
//! pool threads. Lock order: `state`, then a future's own lock. The event queue, the
//! process table and the `stopped` flag have their own locks, never held together with
//! another. Wake-up flags (`dispatcher_sleeping`, `dispatcher_starved`) are set under
//! `state` and checked by the other side after its own change under `state`, so no
//! wake-up is lost. No Python object is dropped without the GIL: the dispatcher moves
//! futures (and calls) detached, drops them only attached, and hands the rest to the
//! completer. Nobody waits for the GIL while holding `state`.
//!
//! **Crash detection.** A worker is gone when its reply pipe reaches EOF or its process
//! sentinel fires. Without a BYE first, the pool is broken as in the stdlib: every
//! pending future fails with `BrokenProcessPool` naming the worker's exit code or signal,
//! the other workers are terminated (SIGTERM, then SIGKILL after 2 s), and later submits
//! raise. Workers watch their task pipe for POLLHUP and exit when the parent is gone,
//! even in the middle of a task, so none outlives it; an at-fork hook closes the
//! parent's pipe ends in every forked child ([`sys`]), so that only the parent holds
//! them. At interpreter exit a hook runs what is queued and stops every pool, as the
//! stdlib's does; a child forked from a process with a running pool gets a clear error
//! from the inherited pool and can make new ones.

mod completer;
mod dispatcher;
mod link;
mod sys;
mod wire;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::{Condvar, Mutex};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyTuple};

use crate::future::{new_future, FutureCore, Outcome, State as FutureState};
use crate::waiter::{block_until, Deadline};

pub use completer::Completer;

pyo3::import_exception!(concurrent.futures.process, BrokenProcessPool);

/// The stdlib's message for submits to a broken pool.
const BROKEN: &str = "A child process terminated abruptly, the process pool is not usable anymore";

/// Set by the exit hook: from then on no process pool accepts work, as in the stdlib.
static INTERPRETER_EXIT: AtomicBool = AtomicBool::new(false);

/// Counts forks (in the children): a pool made in another generation belongs to an
/// ancestor process whose threads and workers do not exist here.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// One call on its way to a worker: the call or its TASK entry, and the future it
/// reports to.
pub(crate) struct Task {
    future: Py<FutureCore>,
    payload: Payload,
}

pub(crate) enum Payload {
    /// The TASK entry, ready to be written (and kept while the worker has not answered,
    /// to be sent again if it hands the task back).
    Entry(Arc<Vec<u8>>),
    /// `(fn, args, kwargs)`, pickled only when a worker has room for it: a long queue
    /// keeps references, not copies, as the stdlib's does. Dropped attached only.
    Call(Py<PyAny>),
}

impl Task {
    /// A task whose payload no longer matters (failed or released with its future).
    fn bare(future: Py<FutureCore>) -> Task {
        Task {
            future,
            payload: Payload::Entry(Arc::new(Vec::new())),
        }
    }

    fn entry_len(&self) -> usize {
        match &self.payload {
            Payload::Entry(entry) => entry.len(),
            Payload::Call(_) => 0,
        }
    }
}

/// `submit` pickles at once while the queue holds less than this many bytes of pickled
/// calls (tiny tasks then go out without another thread taking the GIL); beyond it, it
/// keeps a reference and the dispatcher pickles as the task goes out.
const EAGER_BYTES: usize = 1 << 20;

/// Set once by `ProcessPoolExecutor.__init__`.
pub(crate) struct Config {
    max_workers: usize,
    /// The fork start method: all workers start at the first submit, never replaced.
    fork: bool,
    max_tasks: Option<u64>,
    mp_context: Py<PyAny>,
    /// What each worker gets to run its initializer (None without one).
    init: Py<PyAny>,
    /// `(mp_context, init, max_tasks) -> (process, pid, task_fd, reply_fd, sentinel)`.
    spawn_worker: Py<PyAny>,
    /// `(name, target) -> Thread`, started.
    start_thread: Py<PyAny>,
    /// `(obj, error) -> bytes`, or the exception to fail the future with.
    dumps_fallback: Py<PyAny>,
    /// Pickles that name `__main__` go through `dumps_fallback` (cloudpickle): the
    /// workers cannot import this `__main__`.
    main_by_value: bool,
    name: String,
}

pub(crate) struct State {
    queue: VecDeque<Task>,
    /// Bytes of the TASK entries in `queue`.
    queued_bytes: usize,
    /// The dispatcher took the head of the queue out to pickle it (attached, without
    /// the lock): nothing may overtake it, and it comes back at the front.
    staging: bool,
    /// `shutdown(cancel_futures=True)` was called: what comes back from staging or from
    /// a worker's hands unstarted is cancelled too.
    cancel_queued: bool,
    /// `shutdown()` was called (the stdlib's `_shutdown_thread`).
    shutdown: bool,
    /// No more work comes: shutdown, garbage collection or interpreter exit. Workers
    /// get STOP once the queue is empty.
    closing: bool,
    broken: Option<String>,
    threads_started: bool,
    /// Worker processes being started or running and not yet reported gone.
    workers: usize,
    spawning: usize,
    ever_spawned: bool,
    /// The send halves of the workers.
    links: Vec<link::TxLink>,
    /// The receive halves of started workers that the completer has not adopted yet.
    new_workers: Vec<link::RxLink>,
    next_worker_id: u64,
}

/// What the pool's threads hand to the completer's attached half.
pub(crate) enum Event {
    /// Replies, with the bytes they index.
    Replies {
        data: Vec<u8>,
        items: Vec<(Py<FutureCore>, wire::Reply)>,
    },
    /// Tasks cancelled while queued: acknowledge (CANCELLED_AND_NOTIFIED).
    Cancelled(Vec<Task>),
    /// Tasks completed by hand while queued, or answered by nobody: just release them.
    Release(Vec<Task>),
    /// Tasks handed back unstarted after `shutdown(cancel_futures=True)`: cancel them.
    CancelNow(Vec<Task>),
    /// A worker exited normally (BYE) or after being terminated: join it.
    Exited { id: u64 },
    /// A worker died: the pool is broken; fail `futures`.
    Broken {
        id: u64,
        pid: i32,
        init_failure: Option<Vec<u8>>,
        futures: Vec<Task>,
    },
    /// The dispatcher is done: no worker is left and no work will come.
    Done,
}

/// What the executor, its threads and the exit hook share.
pub(crate) struct Shared {
    config: OnceLock<Config>,
    generation: AtomicU64,
    state: Mutex<State>,
    /// Tasks queued or in flight.
    outstanding: AtomicUsize,
    /// The write ends of the threads' wake-up pipes, once the threads run.
    dispatcher_wake: OnceLock<sys::PoolFd>,
    completer_wake: OnceLock<sys::PoolFd>,
    /// The dispatcher blocks in poll with room for tasks: `submit` must wake it.
    dispatcher_sleeping: AtomicBool,
    /// The dispatcher blocks in poll with every window full: freed room must wake it.
    dispatcher_starved: AtomicBool,
    /// The completer blocks in poll: a new event must wake it.
    completer_sleeping: AtomicBool,
    /// Threads started: set once, read without the lock (fork checks).
    started: AtomicBool,
    /// The completer's thread, which must never wait for the pool to stop.
    completer_thread: OnceLock<std::thread::ThreadId>,
    /// Events for the completer from other threads (the dispatcher's).
    events: Mutex<Vec<Event>>,
    /// `(worker id, pid, Process)` of the workers not yet joined.
    processes: Mutex<Vec<(u64, i32, Py<PyAny>)>>,
    stopped: Mutex<bool>,
    stopped_signal: Condvar,
}

/// The pools whose threads run, for the exit hook. Only touched attached, and reset in
/// a forked child (see `_process_after_fork_in_child`).
static RUNNING: PyOnceLock<Mutex<Vec<Arc<Shared>>>> = PyOnceLock::new();

fn running(py: Python<'_>) -> &Mutex<Vec<Arc<Shared>>> {
    RUNNING.get_or_init(py, || Mutex::new(Vec::new()))
}

impl State {
    fn push_back(&mut self, task: Task) {
        self.queued_bytes += task.entry_len();
        self.queue.push_back(task);
    }

    /// Puts `tasks` back at the front of the queue, in their order.
    fn push_front_all(&mut self, tasks: Vec<Task>) {
        for task in tasks.into_iter().rev() {
            self.queued_bytes += task.entry_len();
            self.queue.push_front(task);
        }
    }

    fn pop_front(&mut self) -> Option<Task> {
        let task = self.queue.pop_front()?;
        self.queued_bytes -= task.entry_len();
        Some(task)
    }

    fn drain_queue(&mut self) -> Vec<Task> {
        self.queued_bytes = 0;
        self.queue.drain(..).collect()
    }
}

/// Cancels tasks that were pending (or handed back unstarted) and acknowledges it, as
/// `shutdown(cancel_futures=True)` does; attached.
fn cancel_tasks(py: Python<'_>, tasks: Vec<Task>) {
    for task in tasks {
        let future = task.future.bind(py);
        if let Ok(true) = FutureCore::cancel_future(future) {
            let _ = FutureCore::start_running(future);
        }
    }
}

impl Shared {
    fn new() -> Self {
        Shared {
            config: OnceLock::new(),
            generation: AtomicU64::new(GENERATION.load(Ordering::Acquire)),
            state: Mutex::new(State {
                queue: VecDeque::new(),
                queued_bytes: 0,
                staging: false,
                cancel_queued: false,
                shutdown: false,
                closing: false,
                broken: None,
                threads_started: false,
                workers: 0,
                spawning: 0,
                ever_spawned: false,
                links: Vec::new(),
                new_workers: Vec::new(),
                next_worker_id: 0,
            }),
            outstanding: AtomicUsize::new(0),
            dispatcher_wake: OnceLock::new(),
            completer_wake: OnceLock::new(),
            dispatcher_sleeping: AtomicBool::new(false),
            dispatcher_starved: AtomicBool::new(false),
            completer_sleeping: AtomicBool::new(false),
            started: AtomicBool::new(false),
            completer_thread: OnceLock::new(),
            events: Mutex::new(Vec::new()),
            processes: Mutex::new(Vec::new()),
            stopped: Mutex::new(false),
            stopped_signal: Condvar::new(),
        }
    }

    fn config(&self) -> PyResult<&Config> {
        self.config
            .get()
            .ok_or_else(|| PyRuntimeError::new_err("ProcessPoolExecutor.__init__() was not called"))
    }

    /// True if this pool's threads belong to an ancestor process (we are a forked
    /// child): its locks may be held forever and its workers are not ours. A pool that
    /// never started is adopted by the child instead.
    fn inherited(&self) -> bool {
        let now = GENERATION.load(Ordering::Acquire);
        if self.generation.load(Ordering::Acquire) == now {
            return false;
        }
        if self.started.load(Ordering::Acquire) {
            return true;
        }
        self.generation.store(now, Ordering::Release);
        false
    }

    fn refuse(state: &State) -> PyResult<()> {
        if let Some(message) = &state.broken {
            return Err(BrokenProcessPool::new_err(message.clone()));
        }
        if state.shutdown {
            return Err(PyRuntimeError::new_err(
                "cannot schedule new futures after shutdown",
            ));
        }
        if INTERPRETER_EXIT.load(Ordering::Acquire) {
            return Err(PyRuntimeError::new_err(
                "cannot schedule new futures after interpreter shutdown",
            ));
        }
        Ok(())
    }

    /// Wakes the dispatcher if it sleeps with room for tasks.
    fn wake_dispatcher(&self) {
        if self.dispatcher_sleeping.swap(false, Ordering::SeqCst) {
            self.force_wake_dispatcher();
        }
    }

    /// Wakes the dispatcher whatever it waits for (room in the windows, new workers,
    /// shutdown).
    fn force_wake_dispatcher(&self) {
        poke(&self.dispatcher_wake);
    }

    /// Hands an event to the completer, waking it if it sleeps.
    fn push_event(&self, event: Event) {
        self.events.lock().push(event);
        if self.completer_sleeping.swap(false, Ordering::SeqCst) {
            poke(&self.completer_wake);
        }
    }

    /// Takes a submitted task, under the lock: straight to an idle worker if nothing is
    /// queued before it (the caller then writes it: the returned `Output`), else into
    /// the queue. Returns how many workers to start, too.
    fn admit(
        &self,
        state: &mut State,
        config: &Config,
        task: Task,
    ) -> (usize, Option<link::Output>) {
        self.outstanding.fetch_add(1, Ordering::AcqRel);
        let mut task = Some(task);
        let mut direct = None;
        if state.queue.is_empty() && !state.staging {
            for link in &mut state.links {
                match link.take_direct(task.take().expect("one task")) {
                    Ok(output) => {
                        direct = Some(output);
                        break;
                    }
                    Err(back) => task = Some(back),
                }
            }
        }
        if let Some(task) = task {
            state.push_back(task);
        }
        (self.plan_spawns(state, config), direct)
    }

    /// How many workers to start now, counted as started; called under the lock.
    fn plan_spawns(&self, state: &mut State, config: &Config) -> usize {
        if state.broken.is_some() {
            return 0;
        }
        let wanted = if config.fork {
            // Forking once the pool's threads run could copy a held lock into the
            // child: with fork, the stdlib also starts every worker up front.
            if state.ever_spawned {
                return 0;
            }
            config.max_workers
        } else {
            config
                .max_workers
                .min(self.outstanding.load(Ordering::Acquire))
        };
        let count = wanted.saturating_sub(state.workers);
        state.workers += count;
        state.spawning += count;
        state.ever_spawned |= count > 0;
        count
    }

    /// Starts `count` workers (already counted by `plan_spawns`).
    fn spawn_workers(self: &Arc<Self>, py: Python<'_>, count: usize) -> PyResult<()> {
        let config = self.config()?;
        let mut outcome = Ok(());
        for _ in 0..count {
            match self.spawn_one(py, config) {
                Ok(()) => {}
                Err(err) => {
                    let mut state = self.state.lock();
                    state.spawning -= 1;
                    state.workers -= 1;
                    let none_left = state.workers == 0 && state.spawning == 0;
                    drop(state);
                    if none_left && outcome.is_ok() {
                        // Nothing would ever run the queued tasks: fail them.
                        self.break_without_workers(py, &err);
                    }
                    if outcome.is_ok() {
                        outcome = Err(err);
                    }
                }
            }
        }
        outcome
    }

    fn spawn_one(self: &Arc<Self>, py: Python<'_>, config: &Config) -> PyResult<()> {
        let spawned = config.spawn_worker.bind(py).call1((
            config.mp_context.bind(py),
            config.init.bind(py),
            config.max_tasks,
        ))?;
        let (process, pid, task_fd, reply_fd, sentinel): (Bound<'_, PyAny>, i32, i32, i32, i32) =
            spawned.extract()?;
        // SAFETY: `spawn_worker` hands over both descriptors (registered for fork,
        // detached from any Python object): this is now their only owner.
        let (tasks, replies) =
            unsafe { (sys::PoolFd::adopt(task_fd), sys::PoolFd::adopt(reply_fd)) };
        sys::set_nonblocking(tasks.raw())?;
        sys::set_nonblocking(replies.raw())?;
        let mut state = self.state.lock();
        let id = state.next_worker_id;
        state.next_worker_id += 1;
        state.spawning -= 1;
        state
            .links
            .push(link::TxLink::new(id, tasks, config.max_tasks));
        state
            .new_workers
            .push(link::RxLink::new(id, pid, replies, sentinel));
        drop(state);
        self.processes.lock().push((id, pid, process.unbind()));
        self.force_wake_dispatcher();
        poke(&self.completer_wake);
        Ok(())
    }

    /// The last worker could not be started: queued futures fail, later submits too.
    fn break_without_workers(&self, py: Python<'_>, cause: &PyErr) {
        let queued: Vec<Task> = {
            let mut state = self.state.lock();
            if state.broken.is_none() {
                state.broken = Some(BROKEN.to_owned());
            }
            state.closing = true;
            state.drain_queue()
        };
        self.outstanding.fetch_sub(queued.len(), Ordering::AcqRel);
        for task in queued {
            let error = BrokenProcessPool::new_err(format!(
                "A process in the process pool could not be started: {cause}"
            ));
            error.set_cause(py, Some(cause.clone_ref(py)));
            fail_future(py, task.future.bind(py), error);
        }
        self.force_wake_dispatcher();
    }

    /// Starts the dispatcher and the completer, once.
    fn ensure_threads(self: &Arc<Self>, py: Python<'_>) -> PyResult<()> {
        if self.started.load(Ordering::Acquire) {
            return Ok(());
        }
        {
            let mut state = self.state.lock();
            if state.threads_started {
                return Ok(());
            }
            state.threads_started = true;
        }
        let started = self.start_threads(py);
        if let Err(err) = &started {
            self.abandon(py, err);
        }
        started
    }

    fn start_threads(self: &Arc<Self>, py: Python<'_>) -> PyResult<()> {
        let config = self.config()?;
        let (dispatcher_read, dispatcher_write) = sys::nonblocking_pipe()?;
        let (completer_read, completer_write) = sys::nonblocking_pipe()?;
        let _ = self.dispatcher_wake.set(dispatcher_write);
        let _ = self.completer_wake.set(completer_write);
        let completer = Completer::new(Arc::clone(self), completer_read);
        config
            .start_thread
            .bind(py)
            .call1((format!("{}-completer", config.name), completer))?;
        self.started.store(true, Ordering::Release);
        running(py).lock().push(Arc::clone(self));
        let shared = Arc::clone(self);
        let dispatcher = std::thread::Builder::new()
            .name(format!("{}-dispatcher", config.name))
            .spawn(move || dispatcher::run(shared, dispatcher_read));
        if let Err(err) = dispatcher {
            // The completer runs: let it stop (abandon() fails the futures first).
            self.push_event(Event::Done);
            return Err(err.into());
        }
        Ok(())
    }

    /// The pool's threads could not start: fail every future, stop the workers.
    fn abandon(&self, py: Python<'_>, cause: &PyErr) {
        let (mut futures, links, new_workers) = {
            let mut state = self.state.lock();
            state.broken.get_or_insert_with(|| BROKEN.to_owned());
            state.closing = true;
            let mut futures: Vec<Task> = state.drain_queue();
            for link in &mut state.links {
                futures.extend(link.close().into_iter().map(Task::bare));
            }
            let links = std::mem::take(&mut state.links);
            let new_workers = std::mem::take(&mut state.new_workers);
            (futures, links, new_workers)
        };
        drop((links, new_workers));
        self.outstanding.store(0, Ordering::Release);
        let processes = std::mem::take(&mut *self.processes.lock());
        for (_, pid, process) in processes {
            sys::kill(pid, sys::SIGKILL);
            let _ = process.bind(py).call_method1("join", (1.0,));
        }
        for task in futures.drain(..) {
            let error = BrokenProcessPool::new_err(format!(
                "the process pool could not start its threads: {cause}"
            ));
            error.set_cause(py, Some(cause.clone_ref(py)));
            fail_future(py, task.future.bind(py), error);
        }
    }

    /// Stops taking work: workers get STOP once the queue is drained.
    fn close(&self, mark_shutdown: bool) {
        {
            let mut state = self.state.lock();
            state.shutdown |= mark_shutdown;
            state.closing = true;
        }
        self.force_wake_dispatcher();
    }

    /// Blocks (detached, interruptible) until the pool's threads are done and its
    /// processes joined.
    fn wait_stopped(&self, py: Python<'_>) -> PyResult<()> {
        if !self.started.load(Ordering::Acquire) {
            return Ok(());
        }
        if self.completer_thread.get() == Some(&std::thread::current().id()) {
            // shutdown(wait=True) from a done callback: the stdlib's manager thread
            // refuses to join itself the same way, instead of waiting forever.
            return Err(PyRuntimeError::new_err("cannot join current thread"));
        }
        block_until(py, Deadline::Never, |slice| {
            let mut stopped = self.stopped.lock();
            if !*stopped {
                self.stopped_signal.wait_for(&mut stopped, slice);
            }
            *stopped
        })?;
        Ok(())
    }
}

/// The dispatcher's turn with the GIL: pickles the calls kept by reference among the
/// tasks that the workers have room for, just before they are sent. The head of the
/// queue is taken out under the lock, pickled attached without it, and put back at the
/// front. A call that does not pickle fails its own future, as at `submit`.
pub(crate) fn pickle_queued(shared: &Shared) {
    let Ok(config) = shared.config() else {
        return;
    };
    let mut head: Vec<Task> = {
        let mut state = shared.state.lock();
        let state = &mut *state;
        if state.staging || state.broken.is_some() {
            return;
        }
        let room: usize = state.links.iter().map(|link| link.credit()).sum();
        let count = room.min(state.queue.len());
        if !state
            .queue
            .iter()
            .take(count)
            .any(|task| matches!(task.payload, Payload::Call(_)))
        {
            return;
        }
        state.staging = true;
        (0..count).filter_map(|_| state.pop_front()).collect()
    };
    Python::attach(|py| {
        let mut failed = 0;
        head.retain_mut(|task| {
            let Payload::Call(call) = &task.payload else {
                return true;
            };
            if task.future.get().state().is_done() {
                return true; // Cancelled: dispatch acknowledges it.
            }
            let pickled = match call.bind(py).cast::<PyTuple>() {
                Ok(call) => pickle_call(py, config, call),
                Err(err) => Err(PyErr::from(err).into_value(py).into_any()),
            };
            match pickled {
                Ok(entry) => {
                    task.payload = Payload::Entry(Arc::new(entry));
                    true
                }
                Err(error) => {
                    let error = PyErr::from_value(error.into_bound(py));
                    fail_future(py, task.future.bind(py), error);
                    failed += 1;
                    false
                }
            }
        });
        shared.outstanding.fetch_sub(failed, Ordering::AcqRel);
        let leftover = {
            let mut state = shared.state.lock();
            state.staging = false;
            if state.broken.is_some() || state.cancel_queued {
                Some((state.broken.clone(), head))
            } else {
                state.push_front_all(head);
                None
            }
        };
        if let Some((broken, tasks)) = leftover {
            shared.outstanding.fetch_sub(tasks.len(), Ordering::AcqRel);
            match broken {
                Some(message) => {
                    for task in tasks {
                        let error = BrokenProcessPool::new_err(message.clone());
                        fail_future(py, task.future.bind(py), error);
                    }
                }
                None => cancel_tasks(py, tasks),
            }
        }
    });
}

/// Fails `future` with `error`; a cancelled future is acknowledged instead.
pub(crate) fn fail_future(py: Python<'_>, future: &Bound<'_, FutureCore>, error: PyErr) {
    let outcome = Outcome::Error(error.into_value(py).into_any());
    if FutureCore::finish(future, outcome).is_err()
        && future.get().state() == FutureState::Cancelled
    {
        // Cancelled while queued: waiters still need CANCELLED_AND_NOTIFIED.
        let _ = FutureCore::start_running(future);
    }
}

/// `pickle.dumps(obj, HIGHEST_PROTOCOL)`, the C implementation.
fn dumps<'py>(py: Python<'py>, obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    static DUMPS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    const HIGHEST_PROTOCOL: u8 = 5;
    let dumps = DUMPS.import(py, "pickle", "dumps")?;
    Ok(dumps
        .call1((obj, HIGHEST_PROTOCOL))?
        .cast_into::<PyBytes>()?)
}

/// Pickles a call for a worker: plain pickle, and the fallback (cloudpickle) for what
/// plain pickle refuses or for `__main__` objects the workers cannot import. `Err` holds
/// the exception the call's future fails with, as the stdlib's feeder thread does.
fn pickle_call(
    py: Python<'_>,
    config: &Config,
    call: &Bound<'_, PyTuple>,
) -> Result<Vec<u8>, Py<PyAny>> {
    let fallback = config.dumps_fallback.bind(py);
    match dumps(py, call.as_any()) {
        Ok(bytes) => {
            let bytes = bytes.as_bytes();
            if config.main_by_value && contains(bytes, b"__main__") {
                // `(obj, None)`: bytes by value, or None to keep the plain pickle.
                if let Ok(by_value) = fallback.call1((call, py.None())) {
                    if let Ok(by_value) = by_value.cast::<PyBytes>() {
                        return Ok(wire::task(by_value.as_bytes()));
                    }
                }
            }
            Ok(wire::task(bytes))
        }
        Err(error) => {
            // `(obj, error)`: bytes, or the exception to fail the future with.
            let error = error.into_value(py).into_any();
            match fallback.call1((call, &error)) {
                Ok(result) => match result.cast::<PyBytes>() {
                    Ok(bytes) => Ok(wire::task(bytes.as_bytes())),
                    Err(_) => Err(result.unbind()),
                },
                Err(err) => Err(err.into_value(py).into_any()),
            }
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// Base class of `ferropool.ProcessPoolExecutor`: the queue, the threads, `submit` and
/// the core of `shutdown`. Arguments are checked and processes started by the Python
/// class (`ferropool/_process.py`).
#[pyclass(
    subclass,
    frozen,
    name = "ProcessPoolExecutor",
    module = "ferropool._core"
)]
pub struct ProcessPoolCore {
    shared: Arc<Shared>,
}

#[pymethods]
impl ProcessPoolCore {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn py_new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyAny>>) -> Self {
        ProcessPoolCore {
            shared: Arc::new(Shared::new()),
        }
    }

    /// Sets the pool up; called once by `ProcessPoolExecutor.__init__` after it checked
    /// the arguments.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (*, max_workers, fork, max_tasks, mp_context, init, spawn_worker, start_thread, dumps_fallback, main_by_value, name))]
    fn _configure(
        &self,
        max_workers: usize,
        fork: bool,
        max_tasks: Option<u64>,
        mp_context: Py<PyAny>,
        init: Py<PyAny>,
        spawn_worker: Py<PyAny>,
        start_thread: Py<PyAny>,
        dumps_fallback: Py<PyAny>,
        main_by_value: bool,
        name: String,
    ) -> PyResult<()> {
        self.shared
            .config
            .set(Config {
                max_workers: max_workers.max(1),
                fork,
                max_tasks,
                mp_context,
                init,
                spawn_worker,
                start_thread,
                dumps_fallback,
                main_by_value,
                name,
            })
            .map_err(|_| PyRuntimeError::new_err("the executor is already initialized"))
    }

    /// Submits a callable to be executed with the given arguments.
    ///
    /// Schedules the callable to be executed as fn(*args, **kwargs) in a worker process
    /// and returns a Future instance representing the execution of the callable.
    #[pyo3(signature = (r#fn, /, *args, **kwargs))]
    fn submit<'py>(
        &self,
        py: Python<'py>,
        r#fn: Bound<'py, PyAny>,
        args: Bound<'py, PyTuple>,
        kwargs: Option<Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, FutureCore>> {
        let shared = &self.shared;
        if shared.inherited() {
            return Err(inherited_error());
        }
        let config = shared.config()?;
        Shared::refuse(&shared.state.lock())?;
        let kwargs = match kwargs {
            Some(kwargs) if !kwargs.is_empty() => kwargs.into_any(),
            _ => py.None().into_bound(py),
        };
        let call = PyTuple::new(py, [r#fn, args.into_any(), kwargs])?;
        let future = new_future(py)?;
        let eager = shared.state.lock().queued_bytes < EAGER_BYTES;
        let payload = if eager {
            match pickle_call(py, config, &call) {
                Ok(entry) => Payload::Entry(Arc::new(entry)),
                Err(error) => {
                    FutureCore::finish(&future, Outcome::Error(error))?;
                    return Ok(future);
                }
            }
        } else {
            Payload::Call(call.into_any().unbind())
        };
        let task = Task {
            future: future.clone().unbind(),
            payload,
        };
        let admitted = {
            let mut state = shared.state.lock();
            let state = &mut *state;
            if let Err(err) = Shared::refuse(state) {
                // Shut down meanwhile; the task (a decref) goes once the lock is released.
                Err((err, task))
            } else {
                Ok(shared.admit(state, config, task))
            }
        };
        let (spawns, direct) = match admitted {
            Ok(admitted) => admitted,
            Err((err, task)) => {
                drop(task);
                return Err(err);
            }
        };
        let queued = match direct {
            Some(mut output) => {
                output.write();
                // The dispatcher only hears of it if part of it did not fit the pipe.
                if output.finish(&mut shared.state.lock()) {
                    shared.force_wake_dispatcher();
                }
                false
            }
            None => true,
        };
        if spawns > 0 {
            shared.spawn_workers(py, spawns)?;
        }
        shared.ensure_threads(py)?;
        if queued {
            shared.wake_dispatcher();
        }
        Ok(future)
    }

    /// Stops taking work; with `cancel_futures`, cancels what has not been sent to a
    /// worker. Workers exit once they have answered everything sent to them.
    fn _begin_shutdown(&self, py: Python<'_>, cancel_futures: bool) -> PyResult<()> {
        let shared = &self.shared;
        if shared.inherited() {
            return Ok(());
        }
        let queued: Vec<Task> = {
            let mut state = shared.state.lock();
            state.shutdown = true;
            state.closing = true;
            if cancel_futures {
                state.cancel_queued = true;
                state.drain_queue()
            } else {
                Vec::new()
            }
        };
        shared.outstanding.fetch_sub(queued.len(), Ordering::AcqRel);
        shared.force_wake_dispatcher();
        for task in queued {
            let future = task.future.bind(py);
            if FutureCore::cancel_future(future)? {
                FutureCore::start_running(future)?;
            }
        }
        Ok(())
    }

    /// Blocks until the workers exited and were joined (Ctrl-C interrupts the wait).
    fn _join(&self, py: Python<'_>) -> PyResult<()> {
        if self.shared.inherited() {
            return Ok(());
        }
        self.shared.wait_stopped(py)
    }

    /// The live worker processes by pid (the stdlib's private `_processes`).
    #[getter]
    fn _processes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let processes = PyDict::new(py);
        if self.shared.inherited() {
            return Ok(processes);
        }
        let entries: Vec<(i32, Py<PyAny>)> = self
            .shared
            .processes
            .lock()
            .iter()
            .map(|(_, pid, process)| (*pid, process.clone_ref(py)))
            .collect();
        for (pid, process) in entries {
            processes.set_item(pid, process)?;
        }
        Ok(processes)
    }

    /// True once `shutdown()` was called (the stdlib's private `_shutdown_thread`).
    #[getter]
    fn _shutdown_thread(&self) -> bool {
        !self.shared.inherited() && self.shared.state.lock().shutdown
    }

    /// The broken-pool message, or False (the stdlib's private `_broken`).
    #[getter]
    fn _broken(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let broken = if self.shared.inherited() {
            None
        } else {
            self.shared.state.lock().broken.clone()
        };
        Ok(match broken {
            Some(message) => message.into_pyobject(py)?.into_any().unbind(),
            None => false.into_pyobject(py)?.to_owned().into_any().unbind(),
        })
    }
}

impl Drop for ProcessPoolCore {
    fn drop(&mut self) {
        // Dropped without shutdown(): the queued work still runs, then workers exit.
        if !self.shared.inherited() {
            self.shared.close(false);
        }
    }
}

fn inherited_error() -> PyErr {
    BrokenProcessPool::new_err(
        "this process pool was started by a parent process before os.fork(); its worker \
         processes and threads belong to the parent: create a new ProcessPoolExecutor here",
    )
}

/// Called by the exit hook, before threads are joined: no pool takes work any more;
/// each runs what is queued, stops its workers and its threads (as the stdlib's
/// `_python_exit` does). Blocks until they are done; Ctrl-C interrupts the wait.
#[pyfunction]
pub(crate) fn _process_python_exit(py: Python<'_>) -> PyResult<()> {
    INTERPRETER_EXIT.store(true, Ordering::Release);
    let pools: Vec<Arc<Shared>> = running(py).lock().clone();
    for pool in &pools {
        pool.close(false);
    }
    for pool in &pools {
        pool.wait_stopped(py)?;
    }
    Ok(())
}

/// In a child after `os.fork()` (any fork: a worker's or the user's): close the
/// parent's pipe ends, and forget the parent's running pools without touching them.
#[pyfunction]
pub(crate) fn _process_after_fork_in_child(py: Python<'_>) {
    sys::close_registered_after_fork();
    GENERATION.fetch_add(1, Ordering::AcqRel);
    if let Some(pools) = RUNNING.get(py) {
        // The registry is only locked attached and never across a release of the GIL,
        // so the forking thread (which holds the GIL) cannot have left it locked. The
        // parent's pools are forgotten, not dropped: their threads do not exist here.
        let parents = std::mem::take(&mut *pools.lock());
        std::mem::forget(parents);
    }
}

/// `_register_fork_fd(fd)`: a pipe end the parent keeps, closed in forked children.
#[pyfunction]
pub(crate) fn _register_fork_fd(fd: i32) {
    sys::register_for_fork(fd);
}

/// `_unregister_fork_fd(fd)`: undoes `_register_fork_fd` before the fd is closed.
#[pyfunction]
pub(crate) fn _unregister_fork_fd(fd: i32) {
    sys::unregister_for_fork(fd);
}

/// Writes a byte to a wake-up pipe; a full pipe means a wake-up is already pending.
fn poke(wake: &OnceLock<sys::PoolFd>) {
    if let Some(wake) = wake.get() {
        let _ = std::io::Write::write(&mut wake.file(), &[1]);
    }
}
