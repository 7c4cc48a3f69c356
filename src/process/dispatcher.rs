//! The dispatcher thread: moves queued tasks into the workers' windows and writes them.
//! Plain Rust, detached, so dispatch goes on while Python code holds the GIL: it moves
//! futures (never drops them) and starts them through `Py::get`, which frozen, `Sync`
//! classes allow without the GIL. It attaches only to pickle calls that `submit` kept
//! by reference, just before they go out (`pickle_queued`).
//!
//! A round: pickle what is about to go out, deal queued tasks into the windows (one at
//! a time, idle workers first, in queue order), write without blocking, then poll the wake-up pipe and the task pipes that are full. It is woken
//! by `submit` (only when it said it sleeps with room for tasks), by the completer when
//! replies free room, and by anything that changes the workers or the pool's state.

use std::io::Read;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::sys::{self, PoolFd, POLLIN, POLLOUT};
use super::{pickle_queued, Event, Payload, Shared, Task};
use crate::future::DetachedStart;

pub(super) fn run(shared: Arc<Shared>, wake: PoolFd) {
    let mut pollfds = Vec::new();
    loop {
        pickle_queued(&shared);
        dispatch(&shared);
        write_pending(&shared);
        if finished(&shared) {
            shared.push_event(Event::Done);
            return;
        }
        let sleep = prepare_poll(&shared, &wake, &mut pollfds);
        if sys::poll(&mut pollfds, sleep).is_err() {
            // EINVAL/ENOMEM: nothing to do but try again a little later.
            std::thread::sleep(Duration::from_millis(1));
        }
        shared.dispatcher_sleeping.store(false, Ordering::SeqCst);
        shared.dispatcher_starved.store(false, Ordering::SeqCst);
        if pollfds[0].revents != 0 {
            let mut sink = [0u8; 256];
            while matches!(wake.file().read(&mut sink), Ok(read) if read > 0) {}
        }
    }
}

/// Moves queued tasks into the windows of the workers, in queue order: idle workers
/// first, one task each unless they are warm (answering tiny tasks right now), so that
/// no task waits behind another of unknown length while a worker is free. STOP goes to
/// every worker that holds nothing once a closing pool's queue is empty.
fn dispatch(shared: &Shared) {
    let mut cancelled = Vec::new();
    let mut released = Vec::new();
    {
        let mut state = shared.state.lock();
        let state = &mut *state;
        if state.broken.is_some() {
            return;
        }
        if !state.queue.is_empty() && !state.staging {
            // Dealt one at a time, idle workers first: the workers go through the queue
            // side by side in its order, as from the stdlib's shared queue, so a task
            // does not wait in one window while a later one runs in another.
            let mut order: Vec<(usize, usize)> = (0..state.links.len())
                .map(|i| (i, state.links[i].credit()))
                .filter(|&(_, credit)| credit > 0)
                .collect();
            order.sort_by_key(|&(i, _)| state.links[i].in_flight.len());
            'deal: while !order.is_empty() {
                for slot in &mut order {
                    // A call kept by reference is pickled first (`pickle_queued`).
                    if matches!(state.queue.front(), Some(Task { payload: Payload::Call(_), future })
                        if !future.get().state().is_done())
                    {
                        break 'deal;
                    }
                    let Some(task) = state.pop_front() else {
                        break 'deal;
                    };
                    match task.future.get().try_start_running_detached() {
                        DetachedStart::Started => {
                            let Task { future, payload } = task;
                            let Payload::Entry(entry) = payload else {
                                unreachable!("a call is pickled before it is sent")
                            };
                            state.links[slot.0].push(future, entry);
                            slot.1 -= 1;
                        }
                        DetachedStart::Cancelled => cancelled.push(task),
                        DetachedStart::Unexpected => released.push(task),
                    }
                }
                order.retain(|&(_, credit)| credit > 0);
            }
        }
        if state.closing && state.queue.is_empty() && !state.staging {
            for link in &mut state.links {
                link.stop();
            }
        }
    }
    let dropped = cancelled.len() + released.len();
    if dropped > 0 {
        shared.outstanding.fetch_sub(dropped, Ordering::AcqRel);
    }
    if !cancelled.is_empty() {
        shared.push_event(Event::Cancelled(cancelled));
    }
    if !released.is_empty() {
        shared.push_event(Event::Release(released));
    }
}

/// Writes what is pending to every worker, without blocking and without the lock.
fn write_pending(shared: &Shared) {
    let mut outputs: Vec<_> = {
        let mut state = shared.state.lock();
        state
            .links
            .iter_mut()
            .filter_map(|link| link.take_output())
            .collect()
    };
    if outputs.is_empty() {
        return;
    }
    for output in &mut outputs {
        output.write();
    }
    let mut state = shared.state.lock();
    for output in outputs {
        output.finish(&mut state);
    }
}

fn finished(shared: &Shared) -> bool {
    let state = shared.state.lock();
    state.closing
        && state.queue.is_empty()
        && !state.staging
        && state.spawning == 0
        && state.new_workers.is_empty()
        && state.links.is_empty()
}

/// Fills the poll set (the wake-up pipe first); returns how long poll may block.
fn prepare_poll(
    shared: &Shared,
    wake: &PoolFd,
    pollfds: &mut Vec<sys::pollfd>,
) -> Option<Duration> {
    pollfds.clear();
    pollfds.push(sys::pollfd(wake.raw(), POLLIN));
    let state = shared.state.lock();
    for link in &state.links {
        if link.blocked() {
            pollfds.push(sys::pollfd(link.tasks_fd(), POLLOUT));
        }
    }
    // Both flags are set under the lock that guards what they describe, and read by the
    // other side after its own change under that lock: no wake-up falls in between.
    if state.links.iter().any(|link| link.credit() > 0) {
        // Room for tasks: `submit` wakes us when it queues one.
        shared.dispatcher_sleeping.store(true, Ordering::SeqCst);
        if !state.queue.is_empty() {
            return Some(Duration::ZERO);
        }
    } else {
        // No room: the completer wakes us when replies free some.
        shared.dispatcher_starved.store(true, Ordering::SeqCst);
    }
    None
}
