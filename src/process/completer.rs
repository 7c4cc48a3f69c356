//! The completer: the pool's only thread that needs the GIL. A Python thread (so the
//! interpreter's own shutdown joins it) that keeps one thread state for its life.
//!
//! Detached, it polls the reply pipes, the process sentinels and its wake-up pipe;
//! reads replies, cuts them into entries, pairs them with the futures in flight (which
//! frees room in the windows: the dispatcher is woken if tasks wait), and notices
//! workers that are gone. Then, attached, it handles the batch: unpickle replies and
//! complete their futures, acknowledge cancels, join exited processes, start
//! replacements, and fail everything when the pool breaks.
//!
//! Reading here rather than in the dispatcher saves a thread hop per reply: a reply
//! wakes the completer, which wakes the thread blocked in `result()`.

use std::io::Read;
use std::mem;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyBytes;

use super::link::RxLink;
use super::sys::{self, PoolFd, POLLIN};
use super::wire::{self, Reply};
use super::{
    cancel_tasks, fail_future, running, BrokenProcessPool, Event, Payload, Shared, Task, BROKEN,
};
use crate::errors::{log_error, InvalidStateError};
use crate::future::{FutureCore, Outcome};

/// How long a process that is gone (pipe closed, sentinel fired) may take to be joined
/// before it is killed: it can only be one that closed its pipe and lives on.
const JOIN_TIMEOUT_S: f64 = 5.0;
/// How long a terminated worker has to exit before it is killed.
const TERMINATE_GRACE: Duration = Duration::from_secs(2);

/// The body of the completer thread: `threading.Thread(target=completer)`.
#[pyclass(frozen, module = "ferropool._core")]
pub struct Completer {
    shared: Arc<Shared>,
    wake: PoolFd,
}

impl Completer {
    pub(crate) fn new(shared: Arc<Shared>, wake: PoolFd) -> Self {
        Completer { shared, wake }
    }
}

#[pymethods]
impl Completer {
    fn __call__(&self, py: Python<'_>) {
        let shared = &self.shared;
        let _ = shared.completer_thread.set(std::thread::current().id());
        let mut reader = Reader {
            shared: Arc::clone(shared),
            wake: &self.wake,
            links: Vec::new(),
            pollfds: Vec::new(),
        };
        loop {
            let events = py.detach(|| reader.collect());
            let mut done = false;
            for event in events {
                match event {
                    Event::Replies { data, items } => complete(py, &data, items),
                    Event::Cancelled(tasks) => {
                        for task in tasks {
                            report(
                                py,
                                FutureCore::start_running(task.future.bind(py)).map(drop),
                            );
                        }
                    }
                    Event::Release(tasks) => drop(tasks),
                    Event::CancelNow(tasks) => cancel_tasks(py, tasks),
                    Event::Exited { id } => {
                        join(py, shared, id);
                        maybe_spawn(py, shared);
                    }
                    Event::Broken {
                        id,
                        pid,
                        init_failure,
                        futures,
                    } => {
                        let exitcode = join(py, shared, id);
                        let (message, cause) = broken_reason(py, pid, exitcode, init_failure);
                        for task in futures {
                            let error = BrokenProcessPool::new_err(message.clone());
                            if let Some(cause) = &cause {
                                error.set_cause(py, Some(PyErr::from_value(cause.clone())));
                            }
                            fail_future(py, task.future.bind(py), error);
                        }
                    }
                    Event::Done => done = true,
                }
            }
            if done {
                return stop(py, shared);
            }
        }
    }
}

/// The completer's detached half.
struct Reader<'a> {
    shared: Arc<Shared>,
    wake: &'a PoolFd,
    links: Vec<RxLink>,
    pollfds: Vec<sys::pollfd>,
}

impl Reader<'_> {
    /// Blocks until there is something to handle attached, and returns it.
    fn collect(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        loop {
            self.adopt_new_workers();
            for link in &mut self.links {
                link.read();
            }
            self.pair_replies(&mut events);
            self.reap(&mut events);
            self.kill_overdue();
            events.append(&mut self.shared.events.lock());
            if !events.is_empty() {
                return events;
            }
            self.sleep();
        }
    }

    fn adopt_new_workers(&mut self) {
        let new_workers = mem::take(&mut self.shared.state.lock().new_workers);
        self.links.extend(new_workers);
    }

    /// Polls until a worker writes or goes, or someone wakes us.
    fn sleep(&mut self) {
        let shared = &self.shared;
        self.pollfds.clear();
        self.pollfds.push(sys::pollfd(self.wake.raw(), POLLIN));
        let mut deadline: Option<Instant> = None;
        for link in &self.links {
            if let Some(fd) = link.replies_fd() {
                self.pollfds.push(sys::pollfd(fd, POLLIN));
            }
            if let Some(fd) = link.sentinel_fd() {
                self.pollfds.push(sys::pollfd(fd, POLLIN));
            }
            if let (Some(doomed), false) = (link.doomed, link.killed) {
                let kill_at = doomed + TERMINATE_GRACE;
                deadline = Some(deadline.map_or(kill_at, |d| d.min(kill_at)));
            }
        }
        shared.completer_sleeping.store(true, Ordering::SeqCst);
        // Look once more after saying we sleep: an event pushed in between is not missed
        // (new workers come with a wake-up of their own).
        let events_wait = !shared.events.lock().is_empty();
        let timeout = if events_wait {
            Some(Duration::ZERO)
        } else {
            deadline.map(|at| at.saturating_duration_since(Instant::now()))
        };
        if sys::poll(&mut self.pollfds, timeout).is_err() {
            std::thread::sleep(Duration::from_millis(1));
        }
        shared.completer_sleeping.store(false, Ordering::SeqCst);
        if self.pollfds[0].revents != 0 {
            let mut sink = [0u8; 256];
            while matches!(self.wake.file().read(&mut sink), Ok(read) if read > 0) {}
        }
        // A fired sentinel stays readable: note it (the link is then reaped).
        let fired: Vec<i32> = self.pollfds[1..]
            .iter()
            .filter(|pollfd| pollfd.revents != 0)
            .map(|pollfd| pollfd.fd)
            .collect();
        for link in &mut self.links {
            if link.sentinel_fd().is_some_and(|fd| fired.contains(&fd)) {
                link.sentinel_fired = true;
            }
        }
    }

    /// Cuts replies into entries and pairs them with the futures in flight.
    fn pair_replies(&mut self, events: &mut Vec<Event>) {
        let mut batches = Vec::new();
        for (index, link) in self.links.iter_mut().enumerate() {
            if let Some((data, answers)) = link.take_entries() {
                if !answers.is_empty() {
                    batches.push((index, data, answers));
                }
            }
        }
        if batches.is_empty() {
            return;
        }
        let mut completed = 0;
        let mut released = Vec::new();
        let mut cancelled = Vec::new();
        let tasks_wait = {
            let mut state = self.shared.state.lock();
            let state = &mut *state;
            for (index, data, answers) in batches {
                let link = &mut self.links[index];
                let Some(tx) = state.links.iter_mut().find(|tx| tx.id == link.id) else {
                    continue;
                };
                let mut items = Vec::with_capacity(answers.len());
                let mut returned = Vec::new();
                for reply in answers {
                    let Some(sent) = tx.in_flight.pop_front() else {
                        // A terminated worker's futures were failed already; otherwise
                        // a reply for nothing means the stream cannot be trusted.
                        if link.doomed.is_none() {
                            link.garbled = true;
                        }
                        continue;
                    };
                    if reply.status == wire::RETURNED {
                        // Handed back unstarted: pending again, first in the queue.
                        tx.returned();
                        let task = Task {
                            future: sent.future,
                            payload: Payload::Entry(sent.entry),
                        };
                        if task.future.get().unstart_detached() {
                            returned.push(task);
                        } else {
                            completed += 1;
                            released.push(task);
                        }
                    } else {
                        tx.measured(reply.elapsed_us);
                        items.push((sent.future, reply));
                    }
                }
                if tx.in_flight.is_empty() && state.queue.is_empty() && returned.is_empty() {
                    // The stream stopped: whatever comes next has an unknown length.
                    tx.warm = false;
                }
                if state.cancel_queued {
                    completed += returned.len();
                    cancelled.extend(returned);
                } else {
                    state.push_front_all(returned);
                }
                if !items.is_empty() {
                    completed += items.len();
                    events.push(Event::Replies { data, items });
                }
            }
            !state.queue.is_empty() || state.closing
        };
        if !released.is_empty() {
            events.push(Event::Release(released));
        }
        if !cancelled.is_empty() {
            events.push(Event::CancelNow(cancelled));
        }
        self.shared
            .outstanding
            .fetch_sub(completed, Ordering::AcqRel);
        // Replies freed room in the windows: the dispatcher needs to know if tasks wait,
        // if the pool closes (STOP goes to workers that hold nothing), or if it sleeps
        // for want of room (a task may come any moment).
        if tasks_wait || self.shared.dispatcher_starved.swap(false, Ordering::SeqCst) {
            self.shared.force_wake_dispatcher();
        }
    }

    /// Removes the workers that are gone; a death without BYE breaks the pool.
    fn reap(&mut self, events: &mut Vec<Event>) {
        let mut index = 0;
        let mut reaped = false;
        while index < self.links.len() {
            if !self.links[index].gone() {
                index += 1;
                continue;
            }
            reaped = true;
            let link = self.links.swap_remove(index);
            let tx = {
                let mut state = self.shared.state.lock();
                state.workers -= 1;
                let position = state.links.iter().position(|tx| tx.id == link.id);
                position.map(|position| state.links.swap_remove(position))
            };
            // Dropped here, without the lock: this closes the task pipe.
            let unanswered: Vec<Task> = tx
                .map(|tx| tx.in_flight)
                .unwrap_or_default()
                .into_iter()
                .map(|sent| Task::bare(sent.future))
                .collect();
            let normal = link.bye && unanswered.is_empty() && !link.garbled;
            if normal || link.doomed.is_some() {
                events.push(Event::Exited { id: link.id });
                if !unanswered.is_empty() {
                    events.push(Event::Release(unanswered));
                }
            } else {
                self.break_pool(link, unanswered, events);
            }
        }
        if reaped {
            self.shared.force_wake_dispatcher();
        }
    }

    /// A worker died: as the stdlib, fail everything pending and terminate the others.
    fn break_pool(&mut self, mut culprit: RxLink, unanswered: Vec<Task>, events: &mut Vec<Event>) {
        let mut futures = unanswered;
        {
            let mut state = self.shared.state.lock();
            let state = &mut *state;
            if state.broken.is_none() {
                state.broken = Some(BROKEN.to_owned());
            }
            state.closing = true;
            futures.extend(state.drain_queue());
            for tx in &mut state.links {
                futures.extend(tx.close().into_iter().map(Task::bare));
            }
        }
        let now = Instant::now();
        for link in &mut self.links {
            if link.doomed.is_none() {
                sys::kill(link.pid, sys::SIGTERM);
                link.doomed = Some(now);
            }
        }
        self.shared.outstanding.store(0, Ordering::Release);
        events.push(Event::Broken {
            id: culprit.id,
            pid: culprit.pid,
            init_failure: culprit.init_failure.take(),
            futures,
        });
    }

    fn kill_overdue(&mut self) {
        let now = Instant::now();
        for link in &mut self.links {
            if let (Some(doomed), false) = (link.doomed, link.killed) {
                if now >= doomed + TERMINATE_GRACE {
                    sys::kill(link.pid, sys::SIGKILL);
                    link.killed = true;
                }
            }
        }
    }
}

/// Unpickles each reply and completes its future.
fn complete(py: Python<'_>, data: &[u8], items: Vec<(Py<FutureCore>, Reply)>) {
    static LOADS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let loads = match LOADS.import(py, "pickle", "loads") {
        Ok(loads) => loads,
        Err(err) => {
            let error = err.into_value(py).into_any();
            for (future, _) in items {
                let outcome = Outcome::Error(error.clone_ref(py));
                report(py, FutureCore::finish(future.bind(py), outcome));
            }
            return;
        }
    };
    for (future, reply) in items {
        let payload = PyBytes::new(py, &data[reply.payload]);
        let outcome = match loads.call1((payload,)) {
            Ok(value) if reply.status == wire::OK => Outcome::Value(value.unbind()),
            Ok(error) => Outcome::Error(error.unbind()),
            // A result that pickled in the worker but does not unpickle here fails only
            // its own future.
            Err(err) => Outcome::Error(err.into_value(py).into_any()),
        };
        report(py, FutureCore::finish(future.bind(py), outcome));
    }
}

/// A transition that failed: a future completed by hand (InvalidStateError) is not an
/// error; a BaseException from a done callback is logged, and the completer goes on.
fn report(py: Python<'_>, outcome: PyResult<()>) {
    if let Err(err) = outcome {
        if !err.is_instance_of::<InvalidStateError>(py) {
            log_error(
                py,
                "critical",
                "Exception in the process pool",
                &[],
                Some(&err),
            );
        }
    }
}

/// Joins worker `id` (killing it if it lingers), closes its `Process`, and returns its
/// exit code.
fn join(py: Python<'_>, shared: &Shared, id: u64) -> Option<i32> {
    let process = {
        let mut processes = shared.processes.lock();
        let index = processes.iter().position(|(worker, _, _)| *worker == id)?;
        processes.swap_remove(index).2
    };
    let process = process.bind(py);
    let exitcode = (|| -> PyResult<Option<i32>> {
        process.call_method1("join", (JOIN_TIMEOUT_S,))?;
        if process.getattr("exitcode")?.is_none() {
            let sentinel: i32 = process.getattr("sentinel")?.extract()?;
            if !readable(sentinel) {
                process.call_method0("kill")?;
                process.call_method0("join")?;
            }
            // Gone, yet not reaped here: another thread polled the same `Process` at
            // the same instant (multiprocessing's `active_children()`, which every
            // `Process.start()` calls) and reaped it first; its `Popen` reports the
            // process as running until that thread stores the exit code. Wait for it.
            let mut tries = 0;
            while process.getattr("exitcode")?.is_none() {
                tries += 1;
                if tries > 200 {
                    // Reaped by something else entirely (`os.waitpid(-1)`): the exit
                    // code is lost, and `close()` would refuse.
                    return Ok(None);
                }
                process.call_method1("join", (0.005,))?;
            }
        }
        let exitcode = process.getattr("exitcode")?.extract()?;
        // Before 3.11, `Process.start()` in another thread (multiprocessing's
        // `_cleanup()`) may still be about to poll this process from its list of
        // children, and fails if `close()` emptied it meanwhile; the process is joined,
        // and its descriptors are closed with it when it is collected.
        if py.version_info() >= (3, 11) {
            process.call_method0("close")?;
        }
        Ok(exitcode)
    })();
    match exitcode {
        Ok(exitcode) => exitcode,
        Err(err) => {
            log_error(
                py,
                "error",
                "Could not join a worker process",
                &[],
                Some(&err),
            );
            None
        }
    }
}

/// True if `fd` (a process sentinel) is readable now: the process is gone.
fn readable(fd: i32) -> bool {
    let mut pollfds = [sys::pollfd(fd, POLLIN)];
    sys::poll(&mut pollfds, Some(Duration::ZERO)).is_ok() && pollfds[0].revents != 0
}

/// Starts workers if queued work needs more than are running (replacements for workers
/// that retired after `max_tasks_per_child`).
fn maybe_spawn(py: Python<'_>, shared: &Arc<Shared>) {
    let Ok(config) = shared.config() else {
        return;
    };
    let spawns = {
        let mut state = shared.state.lock();
        if state.queue.is_empty() && state.closing {
            0
        } else {
            shared.plan_spawns(&mut state, config)
        }
    };
    if spawns > 0 {
        if let Err(err) = shared.spawn_workers(py, spawns) {
            log_error(
                py,
                "error",
                "Could not start a worker process",
                &[],
                Some(&err),
            );
        }
    }
}

/// The message of the exception that the futures of a broken pool get, naming what
/// happened, and its cause (the initializer's exception, if that is what happened).
fn broken_reason<'py>(
    py: Python<'py>,
    pid: i32,
    exitcode: Option<i32>,
    init_failure: Option<Vec<u8>>,
) -> (String, Option<Bound<'py, PyAny>>) {
    let initializer_error = init_failure.and_then(|payload| {
        let loads = py.import("pickle").and_then(|m| m.getattr("loads")).ok()?;
        loads.call1((PyBytes::new(py, &payload),)).ok()
    });
    let what = match (&initializer_error, exitcode) {
        (Some(error), _) => {
            let repr = error.repr().map(|r| r.to_string()).unwrap_or_default();
            format!("the initializer of worker process {pid} raised {repr}")
        }
        (None, Some(code)) if code < 0 => {
            let name = py
                .import("signal")
                .and_then(|signal| signal.getattr("Signals")?.call1((-code,))?.getattr("name"))
                .map(|name| name.to_string())
                .unwrap_or_else(|_| "unknown signal".to_owned());
            format!(
                "worker process {pid} was killed by signal {} ({name})",
                -code
            )
        }
        (None, Some(code)) => format!("worker process {pid} exited with code {code}"),
        (None, None) => format!("worker process {pid} stopped answering"),
    };
    let message = format!(
        "A process in the process pool was terminated abruptly while the future was \
         running or pending: {what}."
    );
    (message, initializer_error)
}

/// The dispatcher is done and every worker reaped: the pool is stopped.
fn stop(py: Python<'_>, shared: &Arc<Shared>) {
    let leftovers: Vec<u64> = shared
        .processes
        .lock()
        .iter()
        .map(|(id, _, _)| *id)
        .collect();
    for id in leftovers {
        join(py, shared, id);
    }
    running(py).lock().retain(|pool| !Arc::ptr_eq(pool, shared));
    *shared.stopped.lock() = true;
    shared.stopped_signal.notify_all();
}
