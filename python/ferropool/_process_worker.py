"""The worker side of `ferropool.ProcessPoolExecutor`; runs in each worker process.

A loop over two anonymous pipes: it reads TASK entries from the task pipe, runs them in
order, and writes an OK or ERR reply for each to the reply pipe. The byte format is
described in ``src/process/wire.rs``; the constants below must match it.

Tasks arrive in batches; each reply is written as soon as its task ends, before the
next task starts: a worker that dies abruptly (``os._exit``, a signal) loses no result
of a task it finished, as with the stdlib.

The parent sends a worker several tasks at once only while that worker answers tiny
ones. After a task that ran 1 ms or more, the worker does not start the tasks it holds
behind it: it hands them back unstarted (RETURNED), and the parent gives them to
whichever worker frees up first, or lets them be cancelled.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import struct
import threading
import time
from concurrent.futures import _base
from concurrent.futures.process import _rebuild_exc
from traceback import format_exception

# Parent to worker: kind u8, payload length u64.
TASK = 1
STOP = 2
_TASK_HEADER = struct.Struct("<BQ")

# Worker to parent: status u8, task time in µs u32, payload length u64.
OK = 1
ERR = 2
INIT_FAILED = 3
BYE = 4
RETURNED = 5
_REPLY_HEADER = struct.Struct("<BIQ")

# Below glibc's mmap threshold, and a pipe's default capacity.
_READ_SIZE = 1 << 16
# Larger payloads are unpickled from a view of the read buffer, larger replies written
# with writev: no copy of either.
_COPY_LIMIT = 1 << 16
_MAX_ELAPSED_US = 0xFFFFFFFF
# After a task this long, the tasks held behind it are handed back (`LONG_TASK_US` in
# src/process/link.rs).
_LONG_TASK = 1e-3

# True while a task runs: only then does Ctrl-C interrupt (see `_on_sigint`).
_running_task = False


class _ExceptionWithTraceback:
    """Pickles as the stdlib's: the exception, rebuilt in the parent with the formatted
    remote traceback as ``__cause__`` (a ``concurrent.futures.process._RemoteTraceback``)."""

    def __init__(self, exc, tb):
        self.exc = exc
        self.tb = tb

    def __reduce__(self):
        return _rebuild_exc, (self.exc, self.tb)


def _formatted(exc):
    return "".join(format_exception(type(exc), exc, exc.__traceback__))


def _rebuild_exception(cls, args, state, tb):
    """Rebuilds an exception whose class does not unpickle from its ``args`` (an
    ``__init__`` with other parameters): made without calling ``__init__``, with the same
    ``args`` and attributes, and the remote traceback as ``__cause__``."""
    exc = cls.__new__(cls, *args)
    exc.args = args
    if state:
        exc.__dict__.update(state)
    return _rebuild_exc(exc, tb)


class _ExceptionByState:
    """Pickles an exception by class, ``args`` and ``__dict__`` (see `_rebuild_exception`)."""

    def __init__(self, exc, tb):
        self.exc = exc
        self.tb = tb

    def __reduce__(self):
        exc = self.exc
        return _rebuild_exception, (type(exc), exc.args, getattr(exc, "__dict__", None), self.tb)


def _dump_exception(exc):
    """The pickled exception with its traceback; if it does not pickle, the pickling
    error, with both tracebacks."""
    text = _formatted(exc)
    # The traceback's frames hold everything the task touched: release them now.
    exc.__traceback__ = None
    tb = '\n"""\n%s"""' % text
    try:
        data = pickle.dumps(_ExceptionWithTraceback(exc, tb), -1)
        try:
            pickle.loads(data)
        except BaseException:  # noqa: BLE001 - does not come back as it went
            # Most often an exception whose __init__ takes other parameters than the
            # `args` it stores: the parent could only get a TypeError from unpickling.
            try:
                by_state = pickle.dumps(_ExceptionByState(exc, tb), -1)
                pickle.loads(by_state)
                data = by_state
            except BaseException:  # noqa: BLE001 - keep the first pickle
                pass
        return data
    except BaseException as error:  # noqa: BLE001 - any failure to pickle
        text = "%s\nThe exception above could not be sent to the parent process:\n\n%s" % (
            text,
            _formatted(error),
        )
        error.__traceback__ = None
        try:
            return pickle.dumps(_ExceptionWithTraceback(error, '\n"""\n%s"""' % text), -1)
        except BaseException:  # noqa: BLE001
            fallback = RuntimeError("%s: %s" % (type(error).__name__, error))
            return pickle.dumps(_ExceptionWithTraceback(fallback, '\n"""\n%s"""' % text), -1)


def _process_chunk(fn, chunk):
    """Runs one chunk of a `map`: the same as the stdlib's."""
    return [fn(*args) for args in chunk]


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _write_chunks(fd, chunks):
    size = sum(map(len, chunks))
    if size > _COPY_LIMIT and len(chunks) <= 64:
        written = os.writev(fd, chunks)
        if written < size:  # interrupted part-way: rare, so the copy does not matter
            _write_all(fd, memoryview(b"".join(chunks))[written:])
    else:
        _write_all(fd, b"".join(chunks))


class _Reader:
    """Cuts the task pipe's stream into entries."""

    __slots__ = ("fd", "buf", "pos", "need", "views")

    def __init__(self, fd):
        self.fd = fd
        self.buf = bytearray()
        self.pos = 0
        self.need = _TASK_HEADER.size
        self.views = ()

    def next_entry(self):
        """The next complete entry already read, as (kind, payload), or None.

        A large payload is a view into the buffer, not a copy: valid until the next call.
        """
        self._release()
        buf = self.buf
        pos = self.pos
        available = len(buf) - pos
        if available < 9:
            self.need = 9 - available
            return None
        kind, length = _TASK_HEADER.unpack_from(buf, pos)
        end = pos + 9 + length
        if end > len(buf):
            self.need = end - len(buf)
            return None
        self.pos = end
        if length > _COPY_LIMIT:
            whole = memoryview(buf)
            payload = whole[pos + 9 : end]
            self.views = (payload, whole)
            return kind, payload
        payload = buf[pos + 9 : end]
        if end == len(buf):
            buf.clear()
            self.pos = 0
        return kind, payload

    def _release(self):
        if self.views:
            for view in self.views:
                view.release()
            self.views = ()
            if self.pos == len(self.buf):
                self.buf.clear()
                self.pos = 0

    def fill(self):
        """Blocks until more bytes arrive; False at EOF."""
        if self.pos:
            del self.buf[: self.pos]
            self.pos = 0
        need = self.need
        if need <= _READ_SIZE:
            data = os.read(self.fd, _READ_SIZE)
            if not data:
                return False
            self.buf += data
            return True
        # A large entry: read straight into place rather than through small buffers.
        start = len(self.buf)
        self.buf += bytearray(need)
        view = memoryview(self.buf)
        try:
            filled = 0
            while filled < need:
                read = os.readv(self.fd, [view[start + filled :]])
                if read == 0:
                    return False
                filled += read
        finally:
            view.release()
        return True


def _on_sigint(signum, frame):
    # Ctrl-C reaches the whole process group. A running task is interrupted (its
    # future gets KeyboardInterrupt, as with the stdlib); between tasks the worker
    # ignores it, so that the pipes' framing is never cut in the middle.
    if _running_task:
        raise KeyboardInterrupt


def _watch_parent(fd):
    """Exits the process when the parent is gone, even in the middle of a task.

    The parent holds the only write end of the task pipe, so the read end reports
    POLLHUP once the parent process has died (however it died).
    """

    def watch():
        poller = select.poll()
        poller.register(fd, 0)
        while True:
            for _, event in poller.poll():
                if event & select.POLLNVAL:
                    return  # The pipe was closed here: the worker is exiting.
                if event & (select.POLLHUP | select.POLLERR):
                    os._exit(1)

    threading.Thread(target=watch, name="ferropool-parent-watch", daemon=True).start()


def _serve(task_fd, reply_fd, max_tasks):
    global _running_task
    loads = pickle.loads
    dumps = pickle.dumps
    clock = time.perf_counter
    pack = _REPLY_HEADER.pack
    reader = _Reader(task_fd)
    out = []
    done = 0
    while True:
        entry = reader.next_entry()
        if entry is None:
            if not reader.fill():
                return  # EOF: the parent is gone.
            continue
        kind, payload = entry
        if kind != TASK:
            break
        start = clock()
        fn = args = kwargs = result = None
        try:
            fn, args, kwargs = loads(payload)
            del payload
            _running_task = True
            result = fn(*args, **kwargs) if kwargs else fn(*args)
            _running_task = False
        except BaseException as exc:  # noqa: BLE001 - stored on the future (C7)
            _running_task = False
            status = ERR
            data = _dump_exception(exc)
            del exc
        else:
            try:
                data = dumps(result, -1)
                status = OK
            except BaseException as exc:  # noqa: BLE001 - an unpicklable result
                status = ERR
                data = _dump_exception(exc)
                del exc
        # Release the call's inputs and result before anything else happens.
        fn = args = kwargs = result = None
        now = clock()
        elapsed = int((now - start) * 1e6)
        out.append(pack(status, min(elapsed, _MAX_ELAPSED_US), len(data)))
        out.append(data)
        del data
        done += 1
        if max_tasks is not None and done >= max_tasks:
            break
        if now - start >= _LONG_TASK:
            # The parent sent what follows expecting tiny tasks: hand back what has not
            # started (never a STOP: it only comes to a worker that holds nothing).
            stopping = False
            while True:
                held = reader.next_entry()
                if held is None:
                    break
                if held[0] != TASK:
                    stopping = True
                    break
                out.append(pack(RETURNED, 0, 0))
            held = None
            if stopping:
                break
        _write_chunks(reply_fd, out)
        out.clear()
    # STOP, or max_tasks_per_child reached: answer everything, then say goodbye.
    out.append(pack(BYE, 0, 0))
    _write_chunks(reply_fd, out)


def main(tasks, replies, init, max_tasks):
    """The target of each worker process.

    `tasks` and `replies` are the child's ends of the two pipes (`Connection` objects,
    so that `multiprocessing` hands the descriptors over with any start method); `init`
    is None, ``(initializer, initargs)`` (fork) or those pickled (spawn, forkserver).
    """
    task_fd = tasks.fileno()
    reply_fd = replies.fileno()
    _watch_parent(task_fd)
    if (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    ):
        signal.signal(signal.SIGINT, _on_sigint)
    try:
        if init is not None:
            try:
                initializer, initargs = pickle.loads(init) if isinstance(init, bytes) else init
                initializer(*initargs)
            except BaseException as exc:  # noqa: BLE001 - reported to the parent
                _base.LOGGER.critical("Exception in initializer:", exc_info=True)
                data = _dump_exception(exc)
                _write_all(reply_fd, _REPLY_HEADER.pack(INIT_FAILED, 0, len(data)) + data)
                return
            finally:
                initializer = initargs = None
        _serve(task_fd, reply_fd, max_tasks)
    except (BrokenPipeError, ConnectionError):
        pass  # The parent is gone: nobody is left to answer.
    finally:
        tasks.close()
        replies.close()
