"""`ProcessPoolExecutor`: argument checks, process start, `map`, and the exit and fork hooks.

The queue, the pipes, `submit` and the core of `shutdown` are in Rust
(`ferropool._core.ProcessPoolExecutor`; the design is at the top of
``src/process/mod.rs``). This class adds what touches `multiprocessing`, the way
``concurrent/futures/process.py`` does, with the same contract: arguments, defaults,
errors and messages.
"""

from __future__ import annotations

import collections
import concurrent.futures as _cf
import itertools
import math
import multiprocessing as mp
import multiprocessing.connection as mp_connection
import os
import pickle
import sys
import threading
import time
import traceback
import weakref

try:
    import fcntl
except ImportError:  # not on Windows
    fcntl = None
from concurrent.futures.process import BrokenProcessPool, _RemoteTraceback

from . import _core, _process_worker
from ._future import Future, _result_or_cancel  # noqa: F401  (Future: registers the class first)

__all__ = ["BrokenProcessPool", "ProcessPoolExecutor"]

# The native pool speaks POSIX (pipes, poll(2), fork hooks). Where the extension has
# none, ferropool hands out the stdlib's ProcessPoolExecutor (see the end of the file).
_NATIVE = hasattr(_core, "ProcessPoolExecutor")

_pool_numbers = itertools.count()


def _default_max_workers() -> int:
    cpu_count = getattr(os, "process_cpu_count", os.cpu_count)
    return cpu_count() or 1


_CLOUDPICKLE = None


def _cloudpickle():
    """The `cloudpickle` module if it is installed (an optional dependency), else None."""
    global _CLOUDPICKLE
    if _CLOUDPICKLE is None:
        try:
            import cloudpickle
        except ImportError:
            cloudpickle = False
        _CLOUDPICKLE = cloudpickle
    return _CLOUDPICKLE or None


def _with_remote_traceback(exc):
    # As the stdlib's feeder thread does for a call that does not pickle.
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    exc.__cause__ = _RemoteTraceback('\n"""\n{}"""'.format(text))
    return exc


def _dumps_fallback(obj, error):
    """Called by `submit` when plain pickle is not enough.

    Plain pickle goes first because it is several times faster; cloudpickle (when it is
    installed) then takes what plain pickle refuses (lambdas, closures, functions and
    classes defined in ``__main__`` or in a notebook) and, with ``error`` None,
    ``__main__`` objects that a spawned worker could not import. Returns the bytes, or
    (``error`` given) the exception the call's future fails with, or (``error`` None)
    None to keep the plain pickle.
    """
    cloudpickle = _cloudpickle()
    if cloudpickle is not None:
        try:
            return cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # noqa: BLE001 - fall back to the plain pickle's error
            pass
    if error is None:
        return None
    return _with_remote_traceback(error)


def _main_is_importable() -> bool:
    """True if a spawned worker can import ``__main__`` (as `multiprocessing` does:
    by module name, or from the script's path)."""
    main = sys.modules.get("__main__")
    if main is None:
        return True
    if getattr(getattr(main, "__spec__", None), "name", None):
        return True
    return getattr(main, "__file__", None) is not None


def _start_thread(name, target):
    thread = threading.Thread(name=name, target=target)
    thread.start()
    return thread


class _InitializerError:
    """Stands for an initializer that could not be pickled: raised when a worker starts
    (at `submit`, as with the stdlib, whose `Process.start()` raises there)."""

    def __init__(self, error):
        self.error = error


# Linux's F_SETPIPE_SZ (fcntl has the name from 3.10).
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031) if fcntl is not None else None
_PIPE_SIZE = 1 << 20


def _grow_pipe(fd):
    """Best effort: a 1 MiB pipe instead of 64 KiB (Linux; the unprivileged maximum by
    default) moves large arguments and results with 16 times fewer wake-ups."""
    if _F_SETPIPE_SZ is not None and sys.platform.startswith("linux"):
        try:
            fcntl.fcntl(fd, _F_SETPIPE_SZ, _PIPE_SIZE)
        except OSError:
            pass


def _spawn_worker(mp_context, init, max_tasks):
    """Starts one worker; returns (process, pid, task_fd, reply_fd, sentinel).

    Two anonymous pipes per worker (SPEC R7). The parent's ends are registered to be
    closed in any forked child, and handed to Rust, which owns them from then on. The
    child's ends travel as `Connection` objects, which `multiprocessing` passes to the
    child with any start method, and are closed here once the child has them.
    """
    if isinstance(init, _InitializerError):
        raise init.error
    task_read, task_write = os.pipe()
    reply_read, reply_write = os.pipe()
    _grow_pipe(task_write)
    _grow_pipe(reply_write)
    for fd in (task_write, reply_read):
        _core._register_fork_fd(fd)
    try:
        child_tasks = mp_connection.Connection(task_read, writable=False)
        child_replies = mp_connection.Connection(reply_write, readable=False)
        try:
            process = mp_context.Process(
                target=_process_worker.main,
                args=(child_tasks, child_replies, init, max_tasks),
            )
            process.start()
        finally:
            child_tasks.close()
            child_replies.close()
    except BaseException:
        for fd in (task_write, reply_read):
            _core._unregister_fork_fd(fd)
            os.close(fd)
        raise
    return process, process.pid, task_write, reply_read, process.sentinel


def _batched(iterable, n):
    batched = getattr(itertools, "batched", None)
    if batched is not None:
        return batched(iterable, n)
    return _batched_fallback(iterable, n)


def _batched_fallback(iterable, n):
    iterator = iter(iterable)
    while chunk := tuple(itertools.islice(iterator, n)):
        yield chunk


_BASES = (_core.ProcessPoolExecutor, _cf.ProcessPoolExecutor) if _NATIVE else (_cf.Executor,)


class ProcessPoolExecutor(*_BASES):
    """An Executor that runs calls in a pool of at most `max_workers` processes.

    A drop-in for `concurrent.futures.ProcessPoolExecutor` (``isinstance`` holds) with
    the same arguments, defaults, errors and behaviour at exit. Its futures are
    `ferropool.Future` objects.
    """

    def __init__(
        self,
        max_workers=None,
        mp_context=None,
        initializer=None,
        initargs=(),
        *,
        max_tasks_per_child=None,
    ):
        """Initializes a new ProcessPoolExecutor instance.

        Args:
            max_workers: The maximum number of processes that can be used to
                execute the given calls. If None or not given then as many
                worker processes will be created as the machine has processors.
            mp_context: A multiprocessing context to launch the workers created
                using the multiprocessing.get_context('start method') API.
            initializer: A callable used to initialize worker processes.
            initargs: A tuple of arguments to pass to the initializer.
            max_tasks_per_child: The maximum number of tasks a worker process
                can complete before it will exit and be replaced with a fresh
                worker process. The default of None means worker process will
                live as long as the executor. Requires a non-'fork' mp_context
                start method. When given, we default to using 'spawn' if no
                mp_context is supplied.
        """
        if max_workers is None:
            self._max_workers = _default_max_workers()
        else:
            if max_workers <= 0:
                raise ValueError("max_workers must be greater than 0")
            self._max_workers = max_workers

        if mp_context is None:
            if max_tasks_per_child is not None:
                mp_context = mp.get_context("spawn")
            else:
                mp_context = mp.get_context()
        self._mp_context = mp_context
        start_method = mp_context.get_start_method(allow_none=False)
        self._safe_to_dynamically_spawn_children = start_method != "fork"

        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        self._initializer = initializer
        self._initargs = initargs

        if max_tasks_per_child is not None:
            if not isinstance(max_tasks_per_child, int):
                raise TypeError("max_tasks_per_child must be an integer")
            elif max_tasks_per_child <= 0:
                raise ValueError("max_tasks_per_child must be >= 1")
            if start_method == "fork":
                # https://github.com/python/cpython/issues/90622
                raise ValueError(
                    "max_tasks_per_child is incompatible with"
                    " the 'fork' multiprocessing start method;"
                    " supply a different mp_context."
                )
        self._max_tasks_per_child = max_tasks_per_child

        if initializer is None:
            init = None
        elif start_method == "fork":
            # A forked worker inherits the objects themselves, as with the stdlib.
            init = (initializer, initargs)
        else:
            try:
                init = pickle.dumps((initializer, initargs), pickle.HIGHEST_PROTOCOL)
            except Exception as error:  # noqa: BLE001 - reported at submit
                by_value = _dumps_fallback((initializer, initargs), None)
                init = by_value if by_value is not None else _InitializerError(error)

        self._configure(
            max_workers=math.ceil(self._max_workers),
            fork=start_method == "fork",
            max_tasks=max_tasks_per_child,
            mp_context=mp_context,
            init=init,
            spawn_worker=_spawn_worker,
            start_thread=_start_thread,
            dumps_fallback=_dumps_fallback,
            main_by_value=(
                start_method != "fork" and not _main_is_importable() and _cloudpickle() is not None
            ),
            name=f"ferropool-process-{next(_pool_numbers)}",
        )

    def map(self, fn, *iterables, timeout=None, chunksize=1, buffersize=None):
        """Returns an iterator equivalent to map(fn, iter).

        Args:
            fn: A callable that will take as many arguments as there are
                passed iterables.
            timeout: The maximum number of seconds to wait. If None, then there
                is no limit on the wait time.
            chunksize: If greater than one, the iterables will be chopped into
                chunks of size chunksize and submitted to the process pool.
                If set to one, the items in the list will be sent one at a time.
            buffersize: The number of submitted chunks whose results have not
                yet been yielded. If the buffer is full, iteration over the
                iterables pauses until a result is yielded from the buffer.
                If None, all input elements are eagerly collected, and a chunk
                is submitted for each.

        Returns:
            An iterator equivalent to: map(func, *iterables) but the calls may
            be evaluated out-of-order.

        Raises:
            TimeoutError: If the entire result iterator could not be generated
                before the given timeout.
            Exception: If fn(*args) raises for any values.
        """
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        if buffersize is not None and not isinstance(buffersize, int):
            raise TypeError("buffersize must be an integer or None")
        if buffersize is not None and buffersize < 1:
            raise ValueError("buffersize must be None or > 0")
        if timeout is not None:
            end_time = timeout + time.monotonic()

        if chunksize == 1:
            units = zip(*iterables)

            def submit(executor, args):
                return executor.submit(fn, *args)

        else:
            units = _batched(zip(*iterables), chunksize)

            def submit(executor, chunk):
                return executor.submit(_process_worker._process_chunk, fn, chunk)

        if buffersize:
            fs = collections.deque(submit(self, unit) for unit in itertools.islice(units, buffersize))
        else:
            fs = [submit(self, unit) for unit in units]
        executor_ref = weakref.ref(self)

        # The generator is a closure so that everything is submitted before the first
        # result is asked for, as with the stdlib.
        def result_iterator():
            try:
                fs.reverse()
                while fs:
                    if buffersize and (executor := executor_ref()) is not None:
                        unit = next(units, None)
                        if unit is not None:
                            fs.appendleft(submit(executor, unit))
                        del executor
                    if timeout is None:
                        result = _result_or_cancel(fs.pop())
                    else:
                        result = _result_or_cancel(fs.pop(), end_time - time.monotonic())
                    if chunksize == 1:
                        yield result
                    else:
                        # Do not keep references to what was yielded.
                        result.reverse()
                        while result:
                            yield result.pop()
                    del result
            finally:
                for future in fs:
                    future.cancel()

        return result_iterator()

    def shutdown(self, wait=True, *, cancel_futures=False):
        self._begin_shutdown(cancel_futures)
        if wait:
            self._join()

    shutdown.__doc__ = _cf.Executor.shutdown.__doc__


def _python_exit():
    # Runs before the interpreter joins non-daemon threads and finalizes: every pool runs
    # what is queued, stops its workers and its threads, as with the stdlib.
    _core._process_python_exit()


if _NATIVE:
    threading._register_atexit(_python_exit)
    os.register_at_fork(after_in_child=_core._process_after_fork_in_child)
else:  # pragma: no cover - not POSIX
    ProcessPoolExecutor = _cf.ProcessPoolExecutor  # noqa: F811
