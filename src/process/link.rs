//! A worker's two halves, and the reads and writes on its pipes.
//!
//! The send half ([`TxLink`]: bytes to write, the FIFO of futures sent) lives in the
//! pool's `State`, so that `submit` can hand a task straight to an idle worker and the
//! completer can pop the futures that replies answer. Whoever writes takes the bytes out
//! under the lock (`writing`) and writes without it, never blocking. The receive half
//! ([`RxLink`]: the reply pipe, the sentinel, the bytes read) belongs to the completer.

use std::collections::VecDeque;
use std::io::{ErrorKind, IoSlice, Write};
use std::mem;
use std::sync::Arc;
use std::time::Instant;

use pyo3::prelude::*;

use super::sys::PoolFd;
use super::{wire, Payload, State, Task};
use crate::future::{DetachedStart, FutureCore};

/// Work a warm worker may hold, in expected task time: enough to cover a round trip
/// (reply, completer, dispatcher, write), with room to spare.
const WINDOW_TARGET_US: f64 = 500.0;
/// Tasks that take this long go one at a time: whichever worker frees up takes the
/// next. The worker hands back what it holds after such a task (`_process_worker.py`
/// has the same threshold).
pub(crate) const LONG_TASK_US: u32 = 1000;
/// Tasks sent to a worker go RUNNING (as the stdlib's call queue items do) and can no
/// longer be cancelled: when tiny tasks give way to long ones, this many at most are
/// committed to a worker at once.
const MAX_WINDOW: usize = 64;

/// Bytes read from one worker per round, so that one busy worker cannot starve others.
const READ_BUDGET: usize = 16 << 20;
const READ_CHUNK: usize = 64 << 10;
/// Buffers grow towards a large announced entry by at most this much per read.
const MAX_RESERVE: usize = 64 << 20;
/// Entries per `writev` call.
const MAX_IOVECS: usize = 64;

/// The send half of a worker, in the pool's `State`.
pub(crate) struct TxLink {
    pub(super) id: u64,
    tasks: Arc<PoolFd>,
    /// TASK/STOP entries not yet written; `out_pos` bytes of the first one were.
    out: VecDeque<Arc<Vec<u8>>>,
    out_pos: usize,
    /// Someone writes to `tasks` without the lock, holding entries taken from `out`.
    writing: bool,
    /// The tasks sent (their futures RUNNING), in order: replies come back in this
    /// order. The entry is kept, to be sent again if the worker hands the task back.
    pub(super) in_flight: VecDeque<Sent>,
    /// The worker is answering tiny tasks right now: it may hold a window of them.
    /// A cold worker (just started, idle with nothing queued, or busy with a long task)
    /// holds one task at a time, since the next task's length is unknown.
    pub(super) warm: bool,
    /// Moving average of this worker's task times, in µs.
    avg_us: Option<f64>,
    /// How many more tasks it may be sent (`max_tasks_per_child`).
    quota: Option<u64>,
    stop_sent: bool,
    write_failed: bool,
    /// Gone or terminated: it takes nothing more.
    closed: bool,
}

impl TxLink {
    pub(super) fn new(id: u64, tasks: PoolFd, quota: Option<u64>) -> Self {
        TxLink {
            id,
            tasks: Arc::new(tasks),
            out: VecDeque::new(),
            out_pos: 0,
            writing: false,
            in_flight: VecDeque::new(),
            warm: false,
            avg_us: None,
            quota,
            stop_sent: false,
            write_failed: false,
            closed: false,
        }
    }

    /// How many tasks this worker may hold: one while cold, else about
    /// `WINDOW_TARGET_US` of work at its measured pace.
    pub(super) fn window(&self) -> usize {
        match self.avg_us {
            Some(average) if self.warm && average < f64::from(LONG_TASK_US) => {
                ((2.0 + WINDOW_TARGET_US / average.max(1.0)) as usize).min(MAX_WINDOW)
            }
            _ => 1,
        }
    }

    /// Notes the task times of a batch of replies; `last` is the latest one.
    pub(super) fn measured(&mut self, elapsed_us: u32) {
        let elapsed = f64::from(elapsed_us);
        self.avg_us = Some(match self.avg_us {
            None => elapsed,
            Some(average) => average + (elapsed - average) / 8.0,
        });
        // A long task makes the worker cold at once: the tasks after it may be long too.
        self.warm = elapsed_us < LONG_TASK_US;
    }

    /// How many more tasks this worker may be sent now.
    pub(super) fn credit(&self) -> usize {
        if self.closed || self.stop_sent || self.write_failed {
            return 0;
        }
        let credit = self.window().saturating_sub(self.in_flight.len());
        match self.quota {
            Some(quota) => credit.min(usize::try_from(quota).unwrap_or(usize::MAX)),
            None => credit,
        }
    }

    /// Takes a task whose future just went RUNNING.
    pub(super) fn push(&mut self, future: Py<FutureCore>, entry: Arc<Vec<u8>>) {
        self.out.push_back(Arc::clone(&entry));
        self.in_flight.push_back(Sent { future, entry });
        if let Some(quota) = &mut self.quota {
            *quota -= 1;
        }
    }

    /// The worker handed a task back unstarted: it may be sent once more.
    pub(super) fn returned(&mut self) {
        if let Some(quota) = &mut self.quota {
            *quota += 1;
        }
        self.warm = false;
    }

    /// Queues STOP once the worker holds nothing (so that it never has a task to hand
    /// back after STOP), unless it leaves by itself (quota spent) or is gone.
    pub(super) fn stop(&mut self) {
        if !self.stop_sent && !self.closed && self.quota != Some(0) && self.in_flight.is_empty() {
            self.out.push_back(Arc::new(wire::stop()));
            self.stop_sent = true;
        }
    }

    /// The pool broke: nothing more is sent; returns the futures in flight.
    pub(super) fn close(&mut self) -> Vec<Py<FutureCore>> {
        self.closed = true;
        self.out.clear();
        mem::take(&mut self.in_flight)
            .into_iter()
            .map(|sent| sent.future)
            .collect()
    }

    /// True if bytes wait for the pipe to have room (poll it for POLLOUT).
    pub(super) fn blocked(&self) -> bool {
        !self.out.is_empty() && !self.writing && !self.write_failed
    }

    pub(super) fn tasks_fd(&self) -> i32 {
        self.tasks.raw()
    }

    /// Takes the pending bytes out, to be written without the lock.
    pub(super) fn take_output(&mut self) -> Option<Output> {
        if !self.blocked() {
            return None;
        }
        self.writing = true;
        Some(Output {
            id: self.id,
            tasks: Arc::clone(&self.tasks),
            out: mem::take(&mut self.out),
            pos: mem::take(&mut self.out_pos),
        })
    }

    /// `submit`'s shortcut: if this worker has nothing in hand and nobody writes to it,
    /// the caller writes `task` itself.
    pub(super) fn take_direct(&mut self, task: Task) -> Result<Output, Task> {
        if !matches!(task.payload, Payload::Entry(_))
            || !self.in_flight.is_empty()
            || !self.out.is_empty()
            || self.writing
            || self.credit() == 0
        {
            return Err(task);
        }
        match task.future.get().try_start_running_detached() {
            DetachedStart::Started => {}
            // Cancelled or completed by hand already: the dispatcher sorts it out.
            _ => return Err(task),
        }
        let Task {
            future,
            payload: Payload::Entry(entry),
        } = task
        else {
            unreachable!("checked above")
        };
        self.push(future, entry);
        Ok(self.take_output().expect("bytes were just queued"))
    }

    /// Takes back what `Output::write` could not write; true if bytes still wait.
    fn put_back(&mut self, output: Output) -> bool {
        self.writing = false;
        if output.failed() {
            self.write_failed = true;
            self.out.clear();
            return false;
        }
        if !output.out.is_empty() {
            // Ahead of anything queued meanwhile (STOP).
            let mut pending = output.out;
            pending.append(&mut self.out);
            self.out = pending;
            self.out_pos = output.pos;
        }
        !self.out.is_empty()
    }
}

/// A task sent to a worker.
pub(crate) struct Sent {
    pub(super) future: Py<FutureCore>,
    pub(super) entry: Arc<Vec<u8>>,
}

/// Bytes taken out of a `TxLink` to be written without the pool's lock.
pub(crate) struct Output {
    id: u64,
    tasks: Arc<PoolFd>,
    out: VecDeque<Arc<Vec<u8>>>,
    pos: usize,
}

impl Output {
    const FAILED: usize = usize::MAX;

    fn failed(&self) -> bool {
        self.pos == Self::FAILED
    }

    /// Writes without blocking, as much as the pipe takes.
    pub(super) fn write(&mut self) {
        if write_nonblocking(&self.tasks, &mut self.out, &mut self.pos) {
            self.pos = Self::FAILED;
        }
    }

    /// Hands the rest back to its link; true if bytes still wait for room in the pipe.
    pub(super) fn finish(self, state: &mut State) -> bool {
        match state.links.iter_mut().find(|link| link.id == self.id) {
            Some(link) => link.put_back(self),
            None => false,
        }
    }
}

/// Writes `out` (the first entry from `pos`) without blocking; true if the pipe is
/// closed (the worker is gone or going: its reply pipe or sentinel will say how).
fn write_nonblocking(tasks: &PoolFd, out: &mut VecDeque<Arc<Vec<u8>>>, pos: &mut usize) -> bool {
    while !out.is_empty() {
        let mut slices = Vec::with_capacity(out.len().min(MAX_IOVECS));
        for (index, entry) in out.iter().take(MAX_IOVECS).enumerate() {
            let skip = if index == 0 { *pos } else { 0 };
            slices.push(IoSlice::new(&entry[skip..]));
        }
        match tasks.file().write_vectored(&slices) {
            Ok(written) => advance(out, pos, written),
            Err(err) if err.kind() == ErrorKind::WouldBlock => return false,
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(_) => {
                out.clear();
                return true;
            }
        }
    }
    false
}

fn advance(out: &mut VecDeque<Arc<Vec<u8>>>, pos: &mut usize, mut written: usize) {
    while written > 0 {
        let Some(first) = out.front() else {
            return;
        };
        let left = first.len() - *pos;
        if written >= left {
            written -= left;
            out.pop_front();
            *pos = 0;
        } else {
            *pos += written;
            written = 0;
        }
    }
}

/// The receive half of a worker: the completer's own.
pub(crate) struct RxLink {
    pub(super) id: u64,
    pub(super) pid: i32,
    replies: PoolFd,
    /// Owned by the `Process` object, which the completer closes only once the worker
    /// is gone (and no longer polled).
    sentinel: i32,
    inbuf: Vec<u8>,
    /// The size `inbuf` must reach to hold the next complete entry.
    wanted: usize,
    pub(super) bye: bool,
    pub(super) init_failure: Option<Vec<u8>>,
    reply_eof: bool,
    pub(super) sentinel_fired: bool,
    pub(super) garbled: bool,
    /// Terminated (the pool broke) at this instant; killed after the grace period.
    pub(super) doomed: Option<Instant>,
    pub(super) killed: bool,
}

impl RxLink {
    pub(super) fn new(id: u64, pid: i32, replies: PoolFd, sentinel: i32) -> Self {
        RxLink {
            id,
            pid,
            replies,
            sentinel,
            inbuf: Vec::new(),
            wanted: wire::RESULT_HEADER,
            bye: false,
            init_failure: None,
            reply_eof: false,
            sentinel_fired: false,
            garbled: false,
            doomed: None,
            killed: false,
        }
    }

    pub(super) fn gone(&self) -> bool {
        self.reply_eof || self.sentinel_fired || self.garbled
    }

    /// The descriptors to poll: the reply pipe and the sentinel, while they matter.
    pub(super) fn replies_fd(&self) -> Option<i32> {
        (!self.reply_eof).then(|| self.replies.raw())
    }

    pub(super) fn sentinel_fd(&self) -> Option<i32> {
        (!self.sentinel_fired).then_some(self.sentinel)
    }

    /// Reads what the worker wrote, without blocking, up to the round's budget.
    pub(super) fn read(&mut self) {
        let mut budget = READ_BUDGET;
        while !self.reply_eof && budget > 0 {
            let spare = self
                .wanted
                .saturating_sub(self.inbuf.len())
                .clamp(READ_CHUNK, MAX_RESERVE);
            self.inbuf.reserve(spare);
            let len = self.inbuf.len();
            let room = self.inbuf.capacity() - len;
            // SAFETY: read(2) writes at most `room` bytes into the vector's spare
            // capacity, which `reserve` made at least that large; only the bytes it
            // reports written become part of the vector.
            let read = unsafe {
                libc::read(
                    self.replies.raw(),
                    self.inbuf.as_mut_ptr().add(len).cast(),
                    room,
                )
            };
            if read > 0 {
                let read = read as usize;
                // SAFETY: see above, `read <= room` bytes were initialised.
                unsafe { self.inbuf.set_len(len + read) };
                budget = budget.saturating_sub(read);
                continue;
            }
            if read == 0 {
                self.reply_eof = true;
                break;
            }
            match std::io::Error::last_os_error().kind() {
                ErrorKind::WouldBlock => break,
                ErrorKind::Interrupted => {}
                _ => {
                    self.reply_eof = true;
                    break;
                }
            }
        }
    }

    /// Cuts the complete entries out of what was read: the bytes and the entries that
    /// index them. INIT_FAILED and BYE are noted on the link; OK and ERR are returned.
    pub(super) fn take_entries(&mut self) -> Option<(Vec<u8>, Vec<wire::Reply>)> {
        if self.inbuf.len() < self.wanted || self.garbled {
            return None;
        }
        let mut entries = Vec::new();
        let consumed = match wire::parse_replies(&self.inbuf, &mut entries, &mut self.wanted) {
            Ok(consumed) => consumed,
            Err(wire::Garbled) => {
                self.garbled = true;
                return None;
            }
        };
        let rest = self.inbuf.split_off(consumed);
        let data = mem::replace(&mut self.inbuf, rest);
        self.wanted -= consumed;
        let mut answers = Vec::with_capacity(entries.len());
        for entry in entries {
            match entry.status {
                wire::OK | wire::ERR => answers.push(entry),
                wire::INIT_FAILED => self.init_failure = Some(data[entry.payload].to_vec()),
                wire::RETURNED => answers.push(entry),
                _ => self.bye = true,
            }
        }
        Some((data, answers))
    }
}

#[cfg(test)]
mod tests {
    use super::super::sys;
    use super::*;

    #[test]
    fn credit_follows_window_quota_and_state() {
        let (_, tasks) = sys::nonblocking_pipe().unwrap();
        let mut link = TxLink::new(0, tasks, Some(3));
        assert_eq!(link.credit(), 1, "a cold worker holds one task");
        link.measured(10);
        assert!(link.warm);
        assert_eq!(link.credit(), 3, "the quota caps a warm window");
        link.quota = None;
        assert_eq!(link.credit(), 52);
        link.measured(LONG_TASK_US);
        assert_eq!(link.credit(), 1, "a long task makes it cold at once");
        link.stop();
        assert_eq!(link.credit(), 0);
        assert!(link.blocked(), "STOP waits to be written");
    }

    #[test]
    fn partial_writes_advance_through_entries() {
        let mut out = VecDeque::from([Arc::new(vec![1, 2, 3]), Arc::new(vec![4, 5])]);
        let mut pos = 0;
        advance(&mut out, &mut pos, 2);
        assert_eq!(pos, 2);
        advance(&mut out, &mut pos, 2);
        assert_eq!((out.len(), pos), (1, 1));
        advance(&mut out, &mut pos, 1);
        assert!(out.is_empty());
    }

    #[test]
    fn written_entries_are_read_back_and_eof_is_seen() {
        let (replies, tasks) = sys::nonblocking_pipe().unwrap();
        let mut ok = vec![wire::OK, 5, 0, 0, 0];
        ok.extend_from_slice(&2u64.to_le_bytes());
        ok.extend_from_slice(b"hi");
        let mut bye = vec![wire::BYE, 0, 0, 0, 0];
        bye.extend_from_slice(&0u64.to_le_bytes());
        let mut out = VecDeque::from([Arc::new(ok), Arc::new(bye)]);
        let mut pos = 0;
        assert!(!write_nonblocking(&tasks, &mut out, &mut pos));
        assert!(out.is_empty());
        drop(tasks);
        let mut link = RxLink::new(0, 0, replies, -1);
        link.read();
        assert!(link.reply_eof && link.gone());
        let (data, answers) = link.take_entries().unwrap();
        assert_eq!(answers.len(), 1);
        assert_eq!(answers[0].elapsed_us, 5);
        assert_eq!(&data[answers[0].payload.clone()], b"hi");
        assert!(link.bye);
    }

    #[test]
    fn a_full_pipe_keeps_the_rest_for_later() {
        let (_replies, tasks) = sys::nonblocking_pipe().unwrap();
        let mut out = VecDeque::from([Arc::new(vec![7u8; 1 << 20])]);
        let mut pos = 0;
        assert!(!write_nonblocking(&tasks, &mut out, &mut pos));
        assert_eq!(out.len(), 1);
        assert!(pos > 0 && pos < 1 << 20);
    }
}
