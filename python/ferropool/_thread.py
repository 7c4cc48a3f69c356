"""`ThreadPoolExecutor`: argument checks, thread start, and the exit and fork hooks.

The queue, the worker loop, `submit` and the core of `shutdown` are in Rust
(`ferropool._core.ThreadPoolExecutor`); this class adds what touches the `threading`
module, the way `concurrent/futures/thread.py` does.
"""

from __future__ import annotations

import collections
import concurrent.futures as _cf
import itertools
import math
import os
import sys
import threading
import time
import weakref

from . import _core
from ._future import Future, _result_or_cancel  # noqa: F401  (Future: registers the class first)

__all__ = ["ThreadPoolExecutor"]

# Executors not yet garbage-collected, and the worker threads still running: the exit
# hook closes the former and joins the latter, the fork hook resets the former.
_live_executors: weakref.WeakSet = weakref.WeakSet()
_worker_threads: weakref.WeakSet = weakref.WeakSet()


def _default_max_workers() -> int:
    cpu_count = getattr(os, "process_cpu_count", os.cpu_count)
    return min(32, (cpu_count() or 1) + 4)


def _start_worker(name, work):
    thread = threading.Thread(name=name, target=work)
    thread.start()
    _worker_threads.add(thread)
    return thread


class ThreadPoolExecutor(_core.ThreadPoolExecutor, _cf.ThreadPoolExecutor):
    """An Executor that runs calls on a pool of at most `max_workers` threads.

    A drop-in for `concurrent.futures.ThreadPoolExecutor` (``isinstance`` holds) with
    the same arguments, defaults, errors and behaviour at exit.
    """

    # Shared with the stdlib, so default thread names number on from its executors.
    _counter = _cf.ThreadPoolExecutor._counter

    def __init__(self, max_workers=None, thread_name_prefix="", initializer=None, initargs=()):
        """Initializes a new ThreadPoolExecutor instance.

        Args:
            max_workers: The maximum number of threads that can be used to
                execute the given calls.
            thread_name_prefix: An optional name prefix to give our threads.
            initializer: A callable used to initialize worker threads.
            initargs: A tuple of arguments to pass to the initializer.
        """
        if max_workers is None:
            max_workers = _default_max_workers()
        if max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        self._max_workers = max_workers
        self._thread_name_prefix = thread_name_prefix or ("ThreadPoolExecutor-%d" % self._counter())
        self._initializer = initializer
        self._initargs = initargs
        # The stdlib starts a thread while `started < max_workers`, which accepts any
        # number (1.5 allows two threads): the Rust pool counts in whole threads.
        thread_limit = min(math.ceil(max_workers), sys.maxsize)
        self._configure(
            thread_limit, self._thread_name_prefix, initializer, tuple(initargs), _start_worker
        )
        _live_executors.add(self)

    def map(self, fn, *iterables, timeout=None, chunksize=1, buffersize=None):
        """Returns an iterator equivalent to map(fn, iter).

        Args:
            fn: A callable that will take as many arguments as there are
                passed iterables.
            timeout: The maximum number of seconds to wait. If None, then there
                is no limit on the wait time.
            chunksize: Ignored, as by the stdlib's ThreadPoolExecutor: items are
                handed to the workers in adaptive chunks anyway.
            buffersize: The number of submitted tasks whose results have not
                yet been yielded. If the buffer is full, iteration over the
                iterables pauses until a result is yielded from the buffer.
                If None, all input elements are eagerly collected (the
                CPython 3.14 parameter, available on every version here).

        Returns:
            An iterator equivalent to: map(func, *iterables) but the calls may
            be evaluated out-of-order.

        Raises:
            TimeoutError: If the entire result iterator could not be generated
                before the given timeout.
            Exception: If fn(*args) raises for any values.
        """
        if buffersize is not None and not isinstance(buffersize, int):
            raise TypeError("buffersize must be an integer or None")
        if buffersize is not None and buffersize < 1:
            raise ValueError("buffersize must be None or > 0")
        if buffersize is None:
            return self._map(fn, iterables, timeout)
        return _buffered_map(self, fn, iterables, timeout, buffersize)

    def shutdown(self, wait=True, *, cancel_futures=False):
        threads = self._begin_shutdown(cancel_futures)
        if wait:
            for thread in threads:
                thread.join()

    shutdown.__doc__ = _cf.Executor.shutdown.__doc__


def _buffered_map(executor, fn, iterables, timeout, buffersize):
    """`map(..., buffersize=N)` as CPython 3.14 defines it: at most N calls in flight,
    the next input taken from the iterables each time a result is yielded."""
    if timeout is not None:
        end_time = timeout + time.monotonic()
    zipped_iterables = zip(*iterables)
    fs = collections.deque(
        executor.submit(fn, *args) for args in itertools.islice(zipped_iterables, buffersize)
    )
    # The iterator must not keep the executor alive.
    executor_weakref = weakref.ref(executor)
    del executor

    def result_iterator():
        try:
            fs.reverse()
            while fs:
                if (executor := executor_weakref()) and (args := next(zipped_iterables, None)):
                    fs.appendleft(executor.submit(fn, *args))
                del executor
                if timeout is None:
                    yield _result_or_cancel(fs.pop())
                else:
                    yield _result_or_cancel(fs.pop(), end_time - time.monotonic())
        finally:
            for future in fs:
                future.cancel()

    return result_iterator()


def _python_exit():
    # Runs before the interpreter joins non-daemon threads and finalizes: workers must
    # not try to run Python code during finalization.
    _core._mark_interpreter_shutdown()
    for executor in list(_live_executors):
        executor._close()
    for thread in list(_worker_threads):
        thread.join()


def _after_fork_in_child():
    # The parent's workers do not exist in the child; pools start afresh, lazily.
    _worker_threads.clear()
    for executor in list(_live_executors):
        executor._reset_after_fork()


threading._register_atexit(_python_exit)
os.register_at_fork(after_in_child=_after_fork_in_child)
