"""`DaskExecutor`: a `concurrent.futures.Executor` over a dask.distributed cluster.

The same program that runs on ferropool's thread or process pool runs on a Dask
cluster by changing the line that builds the executor::

    from ferropool.dask import DaskExecutor

    with DaskExecutor("tcp://scheduler:8786") as executor:   # or a distributed.Client
        for result in executor.map(work, items):
            ...

Needs ``distributed`` (``pip install "ferropool[dask]"``); ``import ferropool`` alone
never imports it. Workers need ferropool installed only for `map` (its chunks run
``ferropool.dask._run_chunk`` there); `submit` sends the function alone.

- `submit` returns a ferropool `Future` (a `concurrent.futures.Future`): ``wait``,
  ``as_completed``, ``asyncio.wrap_future`` take it beside any other executor's futures.
  It stays pending until the task's outcome is back; ``cancel()`` succeeds until then
  and cancels the Dask task (a task already running on a worker finishes there, and its
  result is dropped).
- `map` sends one Dask task per chunk of items, not one per item. Each item's outcome
  is kept apart inside its chunk, so an item that raises raises at its own place in the
  results, after the items before it. ``chunksize=None`` (the default) sizes the chunks
  by itself: see `DaskExecutor.map`.
- `shutdown(wait, cancel_futures)` as the stdlib's, over the Dask tasks; an executor
  built from an address (not from a Client) closes its Client.

A worker that dies (killed, out of memory) is Dask's business: the scheduler runs the
tasks that were on it (running or queued there) again on other workers; a task that was
on ``distributed.scheduler.allowed-failures`` + 1 workers when they died (4 by default)
fails with ``distributed.KilledWorker``. In a `map`, that is raised at the first item of
the chunk that has not been yielded yet. So a call may run more than once.
"""

from __future__ import annotations

import collections
import concurrent.futures as _cf
import itertools
import math
import pickle
import threading
import time
import traceback
import uuid
import weakref
from concurrent.futures.process import _RemoteTraceback

try:
    import distributed
    from dask.utils import apply as _apply
    from dask.utils import funcname as _funcname
except ImportError as _error:
    raise ImportError(
        "ferropool.dask needs dask.distributed, which is not installed:"
        ' pip install "ferropool[dask]"',
        name=_error.name,
    ) from _error

from ._future import Future, _result_or_cancel
from ._thread import ThreadPoolExecutor
from ._future import wait as _wait

__all__ = ["DaskExecutor"]

# Options of Client.submit that an executor may fix for all of its tasks.
_SUBMIT_OPTIONS = frozenset(
    ["pure", "workers", "resources", "allow_other_workers", "retries", "priority", "fifo_timeout"]
)

# With chunksize=None and an input of known size, the chunks shrink as the input runs
# out (guided self-scheduling): each is 1/(_GUIDED * threads) of what is left, so the
# first ones are big and the last ones are single items that even out the finish.
_GUIDED = 2
# With chunksize=None and a buffersize, the input's size is unknown: chunks start at one
# item and grow (at most doubling) towards this much measured work per chunk.
_TARGET_CHUNK_SECONDS = 0.05


def _run_chunk(fn, chunk):
    """Runs on a worker: ``fn(*args)`` for each args tuple of `chunk`.

    Returns ``(values, errors, seconds)``: the values in order (None where a call
    raised), ``errors`` as ``(index, exception, traceback text)`` for each call that
    raised, and the time the chunk took. One failing item does not fail the chunk.
    """
    start = time.perf_counter()
    values = []
    errors = []
    for index, args in enumerate(chunk):
        try:
            values.append(fn(*args))
        except Exception as exc:  # noqa: BLE001 - handed back to the caller, at its item
            values.append(None)
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            try:
                pickle.dumps(exc)
            except Exception as error:  # noqa: BLE001 - the chunk must still come back
                exc = RuntimeError(f"{exc!r} (unpicklable: {error!r})")
            errors.append((index, exc, text))
    return values, errors, time.perf_counter() - start


def _unpack(outcome):
    """The list of `_run_chunk`'s outcomes: a value, or an exception to raise, per item."""
    values, errors, _ = outcome
    for index, exc, text in errors:
        exc.__cause__ = _RemoteTraceback('\n"""\n{}"""'.format(text))
        values[index] = _Raise(exc)
    return values


class _Raise:
    __slots__ = ("exc",)

    def __init__(self, exc):
        self.exc = exc


async def _relay(dask_future, future, lock):
    """On the client's event loop: waits for the Dask future (as distributed's own
    ClientExecutor does), then hands its outcome to the completer thread."""
    try:
        outcome = await dask_future._result(raiseit=False)
        status = dask_future.status
    except BaseException as exc:  # noqa: BLE001 - e.g. the client closed under us
        outcome, status = exc, "raised"
    _hand_over((future, lock, status, outcome))


def _complete(future, lock, status, outcome):
    """Completes `future` with a Dask task's outcome. `lock` orders this against the
    acknowledgement of a cancel() from another thread (see `on_done`)."""
    if status == "cancelled":
        future.cancel()  # a no-op if it is cancelled already
        return
    with lock:
        if future.cancelled() or not future.set_running_or_notify_cancel():
            return
    if status == "finished":
        future.set_result(outcome)
    elif status == "raised":
        future.set_exception(outcome)
    else:
        _, exc, tb = outcome
        future.set_exception(exc.with_traceback(tb))


# Futures are completed on threads of ours, not on the Client's event loop: their done
# callbacks (the caller's code) may block, or wait for other tasks, which on the event
# loop would stall every Dask future of the process. A thread pool, not one thread: a
# completion that finds every completer blocked in a callback starts another, so a
# callback may wait for a future that the next completion completes.
_completers = None
_completers_lock = threading.Lock()


def _hand_over(item):
    global _completers
    if _completers is None:
        with _completers_lock:
            if _completers is None:
                _completers = ThreadPoolExecutor(64, thread_name_prefix="ferropool-dask")
    try:
        _completers.submit(_complete, *item)
    except RuntimeError:  # the interpreter is exiting: no new work for the pool
        _complete(*item)


async def _cancel(client, dask_futures):
    await client.cancel(dask_futures, asynchronous=True)


class DaskExecutor(_cf.Executor):
    """An Executor that runs calls as tasks on a dask.distributed cluster.

    Args:
        client_or_address: A ``distributed.Client`` (used as it is, left open at
            shutdown), or what ``distributed.Client()`` takes: a scheduler address such
            as ``"tcp://127.0.0.1:8786"`` or a cluster object (a Client is made for the
            executor and closed at shutdown).
        **submit_options: Passed to ``Client.submit`` for every task: ``workers``,
            ``resources``, ``allow_other_workers``, ``retries``, ``priority``,
            ``fifo_timeout``, ``pure``. ``pure`` is False by default (the Client's
            default is True, which runs two submits of the same call once): an executor
            runs every call it is given.
    """

    def __init__(self, client_or_address, **submit_options):
        unknown = set(submit_options) - _SUBMIT_OPTIONS
        if unknown:
            raise TypeError(f"unsupported arguments to DaskExecutor: {sorted(unknown)}")
        if isinstance(client_or_address, distributed.Client):
            client, owned = client_or_address, False
        else:
            client, owned = distributed.Client(client_or_address, set_as_default=False), True
        if client.asynchronous:
            if owned:
                client.close()
            raise ValueError("DaskExecutor needs a synchronous Client (asynchronous=False)")
        self._client = client
        self._owns_client = owned
        self._options = {"pure": False, **submit_options}
        self._lock = threading.Lock()
        self._pending = set()  # our futures whose Dask task has not reported back
        self._shutdown = False
        self._closer = None

    @property
    def client(self):
        """The ``distributed.Client`` that the tasks go through."""
        return self._client

    # --- tasks -----------------------------------------------------------------------------

    def _submit_task(self, key, fn, args, options=None):
        """One Dask task ``fn(*args)`` and the ferropool Future that reports it. The
        caller holds no lock; the shutdown check is under ours."""
        future = Future()
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._pending.add(future)
        try:
            dask_future = self._client.submit(fn, *args, key=key, **(options or self._options))
        except BaseException:
            with self._lock:
                self._pending.discard(future)
            raise
        client = self._client
        pending = self._pending
        lock = self._lock
        # Only until the future is done: a Dask future keeps its result in the
        # cluster's memory for as long as it lives.
        holder = [dask_future]

        def on_done(f):
            with lock:
                pending.discard(f)
                cancelled = f.cancelled()
                if cancelled:
                    # Acknowledged at once, so that wait() and as_completed() see it
                    # done (the Dask task's own cancellation comes later, or never).
                    f.set_running_or_notify_cancel()
            task = holder.pop() if holder else None
            if cancelled:
                if task is not None and task.status == "pending":
                    client.loop.add_callback(_cancel, client, [task])

        future.add_done_callback(on_done)
        client.loop.add_callback(_relay, dask_future, future, lock)
        return future

    def submit(self, fn, /, *args, **kwargs):
        """Submits a callable to be executed with the given arguments.

        Schedules the callable to be executed as fn(*args, **kwargs) on a Dask worker
        and returns a Future instance representing the execution of the callable.

        Returns:
            A Future representing the given call.
        """
        key = f"{_funcname(fn)}-{uuid.uuid4().hex}"
        if kwargs:
            return self._submit_task(key, _apply, (fn, args, kwargs))
        return self._submit_task(key, fn, args)

    def _threads(self) -> int:
        try:
            return max(sum(self._client.nthreads().values()), 1)
        except Exception:  # noqa: BLE001 - only a hint for the chunk sizes
            return 1

    def map(self, fn, *iterables, timeout=None, chunksize=None, buffersize=None):
        """Returns an iterator equivalent to map(fn, iter), run as Dask tasks.

        Args:
            fn: A callable that will take as many arguments as there are
                passed iterables.
            timeout: The maximum number of seconds to wait, counted from this call.
                If None, then there is no limit on the wait time.
            chunksize: Items per Dask task. None (the default) sizes the chunks:
                without buffersize, the input is collected at once and cut into
                chunks that shrink as it runs out (the first ones hold
                1/(2 x the cluster's threads) of the items, the last ones one
                item each); with buffersize, chunks start at one item and grow
                towards about 50 ms of measured work each.
            buffersize: The number of chunks (Dask tasks) in flight: at most this
                many are submitted and not yet collected; the next chunk is taken
                from the iterables each time the oldest one's results are collected
                (before they are yielded). If None, all input elements are eagerly
                collected and submitted.

        Returns:
            An iterator equivalent to: map(func, *iterables) but the calls may
            be evaluated out-of-order. Closing it (or dropping it) cancels the
            Dask tasks that have not reported back.

        Raises:
            TimeoutError: If the entire result iterator could not be generated
                before the given timeout.
            Exception: If fn(*args) raises for any values: raised at that item,
                after the items before it. What fails a whole chunk (a
                BaseException that is not an Exception, the task lost with its
                worker: ``distributed.KilledWorker``) is raised at the first item of
                the chunk that has not been yielded.
        """
        if chunksize is not None and chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        if buffersize is not None and not isinstance(buffersize, int):
            raise TypeError("buffersize must be an integer or None")
        if buffersize is not None and buffersize < 1:
            raise ValueError("buffersize must be None or > 0")
        if timeout is not None:
            end_time = timeout + time.monotonic()

        name = f"{_funcname(fn)}-map-{uuid.uuid4().hex}"
        numbers = itertools.count()
        options = self._options

        def submit(executor, chunk):
            key = f"{name}-{next(numbers)}"
            return executor._submit_task(key, _run_chunk, (fn, chunk), options)

        zipped = zip(*iterables)
        fs = collections.deque()
        try:
            if buffersize is None:
                sizer = None
                items = list(zipped)
                for chunk in _chunks(items, chunksize, self._threads() if items else 1):
                    fs.append(submit(self, chunk))
                del items
            else:
                sizer = _Sizer(chunksize)
                for _ in range(buffersize):
                    chunk = tuple(itertools.islice(zipped, sizer.size))
                    if not chunk:
                        break
                    fs.append(submit(self, chunk))
        except BaseException:
            for future in fs:  # shut down meanwhile, or the input raised
                future.cancel()
            raise
        executor_ref = weakref.ref(self)

        # A closure, so that everything is submitted before the first result is asked for.
        def result_iterator():
            try:
                while fs:
                    future = fs.popleft()
                    if timeout is None:
                        outcome = _result_or_cancel(future)
                    else:
                        outcome = _result_or_cancel(future, end_time - time.monotonic())
                    del future
                    if sizer is not None:
                        sizer.update(outcome)
                        executor = executor_ref()
                        if executor is not None:
                            chunk = tuple(itertools.islice(zipped, sizer.size))
                            if chunk:
                                fs.append(submit(executor, chunk))
                        del executor
                    values = _unpack(outcome)
                    del outcome
                    values.reverse()
                    while values:
                        value = values.pop()
                        if type(value) is _Raise:
                            raise value.exc
                        yield value
                    del value
            finally:
                for future in fs:
                    future.cancel()

        return result_iterator()

    # --- shutdown --------------------------------------------------------------------------

    def shutdown(self, wait=True, *, cancel_futures=False):
        """Clean-up the resources associated with the Executor.

        It is safe to call this method several times. Otherwise, no other
        methods can be called after this one.

        Args:
            wait: If True then shutdown will not return until all submitted
                calls (and map chunks) have reported back from the cluster.
            cancel_futures: If True then shutdown will cancel every future that
                has not completed, and the Dask task behind it (a task already
                running on a worker finishes there; its result is dropped).
        """
        with self._lock:
            self._shutdown = True
            pending = list(self._pending)
        if cancel_futures:
            for future in pending:
                future.cancel()
        if wait:
            wait_for = [f for f in pending if not f.done()]
            if wait_for:
                _wait(wait_for)
        if self._owns_client:
            self._close_client(wait)

    def _close_client(self, wait):
        with self._lock:
            if self._closer is not None:
                closer = self._closer
            else:
                closer = self._closer = threading.Thread(
                    target=self._close_when_idle, name="ferropool-dask-close", daemon=True
                )
                closer.start()
        if wait:
            closer.join()

    def _close_when_idle(self):
        # shutdown(wait=False) must not lose what is still running: the Client closes
        # once every pending future has reported back.
        while True:
            with self._lock:
                pending = list(self._pending)
            if not pending:
                break
            _wait(pending)
        self._client.close()

    def __repr__(self):
        state = "shut down" if self._shutdown else "open"
        return f"<{type(self).__name__} {state}, client={self._client!r}>"


class _Sizer:
    """Chunk sizes for map with buffersize: `chunksize` if given, else one item at first,
    then grown (at most doubling, or shrunk) towards _TARGET_CHUNK_SECONDS of work,
    after each chunk's measured time."""

    def __init__(self, chunksize):
        self._fixed = chunksize is not None
        self.size = chunksize or 1

    def update(self, outcome):
        if self._fixed:
            return
        values, _, seconds = outcome
        if not values:
            return
        per_item = seconds / len(values)
        wanted = _TARGET_CHUNK_SECONDS / per_item if per_item > 0 else math.inf
        self.size = max(1, int(min(wanted, 2 * self.size)))


def _chunks(items, chunksize, threads):
    """`items` cut into tuples: of `chunksize` each, or (None) shrinking as they run out."""
    n = len(items)
    start = 0
    while start < n:
        if chunksize is None:
            size = max(1, math.ceil((n - start) / (_GUIDED * threads)))
        else:
            size = chunksize
        yield tuple(items[start : start + size])
        start += size
