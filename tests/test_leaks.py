"""R4: arguments and results are released as soon as nobody needs them; flat RSS.

Adapted from CPython's test_concurrent_futures (test_free_reference,
test_no_stale_references, test_free_reference_yielded_future). A worker may drop its
own reference a moment after the future completes, so "released" is polled for a short
while rather than checked at one instant.
"""

from __future__ import annotations

import concurrent.futures as cf
import gc
import sys
import threading
import time
import weakref

import pytest

import ferropool
from conftest import SHORT, run_python, wait_until

pytestmark = pytest.mark.timeout(60)


class Dummy:
    """Weak-referenceable, and unique per call."""

    def __init__(self, i=None):
        self.i = i

    def method(self):
        return self.i


def make_dummy_object(i):
    return Dummy(i)


def identity(x):
    return x


def _released(ref, timeout=SHORT):
    def gone():
        gc.collect()
        return ref() is None

    return wait_until(gone, timeout=timeout, interval=0.005)


def _released_without_gc(ref, timeout=SHORT):
    return wait_until(lambda: ref() is None, timeout=timeout, interval=0.005)


def test_map_results_are_released_as_iteration_moves_on(executor):
    # CPython: test_free_reference (issue #14406)
    for obj in executor.map(make_dummy_object, range(10)):
        wr = weakref.ref(obj)
        del obj
        assert _released(wr)


def test_map_results_are_released_without_gc(executor):
    gc.disable()
    try:
        for obj in executor.map(make_dummy_object, range(10)):
            wr = weakref.ref(obj)
            del obj
            assert _released_without_gc(wr)
    finally:
        gc.enable()


def test_result_released_once_the_future_is_gone(executor):
    fut = executor.submit(make_dummy_object, 1)
    obj = fut.result(timeout=SHORT)
    wr = weakref.ref(obj)
    del obj
    assert wr() is not None  # the future still holds it
    del fut
    assert _released(wr)


def test_argument_released_after_the_task_ran_while_the_future_is_kept(executor):
    # CPython: test_no_stale_references (issue #16284), keeping the future.
    obj = Dummy()
    wr = weakref.ref(obj)
    fut = executor.submit(obj.method)
    fut.result(timeout=SHORT)
    del obj
    assert _released(wr)
    assert fut.done()


def test_argument_released_when_the_future_is_discarded(executor):
    obj = Dummy()
    collected = threading.Event()
    wr = weakref.ref(obj, lambda _: collected.set())
    executor.submit(obj.method)  # future deliberately discarded
    del obj
    assert collected.wait(SHORT), "stale reference not collected"
    assert wr() is None


def test_positional_and_keyword_arguments_released(executor):
    a, b = Dummy(), Dummy()
    wa, wb = weakref.ref(a), weakref.ref(b)
    fut = executor.submit(lambda x, *, y: None, a, y=b)
    fut.result(timeout=SHORT)
    del a, b
    assert _released(wa) and _released(wb)


def test_map_arguments_released(executor):
    args = [Dummy(i) for i in range(20)]
    refs = [weakref.ref(a) for a in args]
    results = list(executor.map(Dummy.method, args))
    assert results == list(range(20))
    del args
    assert all(_released(r) for r in refs)


def test_cancelled_task_releases_its_arguments(gate):
    ex = ferropool.ThreadPoolExecutor(max_workers=1)
    try:
        ex.submit(gate.wait, SHORT)
        obj = Dummy()
        wr = weakref.ref(obj)
        fut = ex.submit(identity, obj)
        del obj
        assert fut.cancel()
        gate.set()
        ex.shutdown(wait=True)
        assert _released(wr)
        assert fut.cancelled()
    finally:
        gate.set()
        ex.shutdown()


def test_cancel_futures_shutdown_releases_arguments(gate):
    ex = ferropool.ThreadPoolExecutor(max_workers=1)
    try:
        ex.submit(gate.wait, SHORT)
        objs = [Dummy() for _ in range(10)]
        refs = [weakref.ref(o) for o in objs]
        futures = [ex.submit(identity, o) for o in objs]
        del objs
        ex.shutdown(wait=False, cancel_futures=True)
        gate.set()
        ex.shutdown(wait=True)
        assert all(f.cancelled() for f in futures)
        assert all(_released(r) for r in refs)
    finally:
        gate.set()
        ex.shutdown()


def test_exception_result_released_with_the_future(executor):
    class Boom(Exception):
        pass

    def task():
        raise Boom()

    fut = executor.submit(task)
    exc = fut.exception(timeout=SHORT)
    wr = weakref.ref(exc)
    del exc
    del fut
    assert _released(wr)


@pytest.mark.parametrize("mode", ["result", "exception", "untouched", "keep_exception"])
def test_failed_future_is_freed_by_refcount_alone(mode):
    # The stdlib breaks the cycle future -> exception -> traceback -> frame -> future
    # (Future.result sets `self = None`; _WorkItem.run drops `self`): a failed future
    # dies without the cycle collector, even while its exception is kept alive.
    def task():
        raise ValueError("x")

    with ferropool.ThreadPoolExecutor(max_workers=1) as ex:
        gc.collect()
        gc.disable()
        try:
            fut = ex.submit(task)
            ferropool.wait([fut], timeout=SHORT)
            kept = None
            if mode in ("result", "keep_exception"):
                try:
                    fut.result()
                except ValueError as e:
                    kept = e
            elif mode == "exception":
                kept = fut.exception()
            wr = weakref.ref(fut)
            del fut
            if mode != "keep_exception":
                kept = None
            assert _released_without_gc(wr), "a failed future is only freed by the gc"
            del kept
        finally:
            gc.enable()


def test_hand_made_failed_future_is_freed_by_refcount_alone():
    gc.collect()
    gc.disable()
    try:
        fut = ferropool.Future()
        try:
            raise KeyError("k")
        except KeyError as e:
            fut.set_exception(e)
        try:
            fut.result()
        except KeyError as e:
            kept = e
        wr = weakref.ref(fut)
        del fut
        assert wr() is None
        del kept
    finally:
        gc.enable()


def test_yielded_futures_are_not_kept_by_as_completed():
    # CPython: test_free_reference_yielded_future
    futures_list = [ferropool.Future() for _ in range(8)]
    cancelled = ferropool.Future()
    cancelled.cancel()
    cancelled.set_running_or_notify_cancel()
    finished = ferropool.Future()
    finished.set_result(42)
    futures_list += [cancelled, finished]
    del cancelled, finished

    with pytest.raises(cf.TimeoutError):
        for future in ferropool.as_completed(futures_list, timeout=0):
            futures_list.remove(future)
            wr = weakref.ref(future)
            del future
            gc.collect()
            assert wr() is None

    futures_list[0].set_result("test")
    for future in ferropool.as_completed(futures_list):
        futures_list.remove(future)
        wr = weakref.ref(future)
        del future
        gc.collect()
        assert wr() is None
        if futures_list:
            futures_list[0].set_result("test")


def test_wait_does_not_keep_futures():
    fs = [ferropool.Future() for _ in range(5)]
    refs = [weakref.ref(f) for f in fs]
    for f in fs[:3]:
        f.set_result(None)
    ferropool.wait(fs, timeout=0.01)
    ferropool.wait(fs, timeout=0, return_when=cf.FIRST_COMPLETED)
    cf.wait(fs, timeout=0.01)
    del fs, f
    gc.collect()
    assert all(r() is None for r in refs)


def test_callbacks_are_released_with_the_future():
    called = []

    class Callback:
        def __call__(self, f):
            called.append(f.result())

    fut = ferropool.Future()
    cb = Callback()
    wr = weakref.ref(cb)
    fut.add_done_callback(cb)
    del cb
    fut.set_result(1)
    assert called == [1]
    del fut
    assert _released(wr)


# ---------------------------------------------------------------------------
# Reference counts
# ---------------------------------------------------------------------------


def _refcount(obj):
    return sys.getrefcount(obj)


def _refcount_settles(obj, baseline, timeout=SHORT):
    """Poll until obj's refcount is back to `baseline` (as measured by _refcount)."""
    deadline = time.monotonic() + timeout
    while sys.getrefcount(obj) != baseline:  # same frames as in _refcount
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


def test_refcount_of_submitted_argument_returns_to_baseline(executor):
    arg = object()
    baseline = _refcount(arg)
    for _ in range(200):
        executor.submit(id, arg).result(timeout=SHORT)
    futures = [executor.submit(identity, arg) for _ in range(200)]
    for f in futures:
        assert f.result(timeout=SHORT) is arg
    del futures, f
    assert _refcount_settles(arg, baseline), (sys.getrefcount(arg), baseline)


def test_refcount_of_keyword_argument_returns_to_baseline(executor):
    arg = object()
    baseline = _refcount(arg)
    for _ in range(200):
        executor.submit(lambda *, x: None, x=arg).result(timeout=SHORT)
    assert _refcount_settles(arg, baseline), (sys.getrefcount(arg), baseline)


def test_refcount_through_map_returns_to_baseline(executor):
    arg = object()
    baseline = _refcount(arg)
    assert list(executor.map(identity, [arg] * 500)) == [arg] * 500
    for item in executor.map(identity, [arg] * 500, timeout=SHORT):
        assert item is arg
    del item
    assert _refcount_settles(arg, baseline), (sys.getrefcount(arg), baseline)


def test_refcount_of_function_and_result(executor):
    result = object()

    def fn():
        return result

    fn_base = _refcount(fn)
    res_base = _refcount(result)
    for _ in range(200):
        executor.submit(fn).result(timeout=SHORT)
    assert _refcount_settles(fn, fn_base)
    assert _refcount_settles(result, res_base)


def test_refcount_of_hand_made_future_results():
    value = object()
    baseline = _refcount(value)
    for _ in range(100):
        f = ferropool.Future()
        f.set_result(value)
        assert f.result() is value
        assert f.result(timeout=0) is value
        f.add_done_callback(lambda g: g.result())
    del f
    gc.collect()
    assert _refcount(value) == baseline


def test_refcount_of_cancelled_argument(gate):
    arg = object()
    baseline = _refcount(arg)
    ex = ferropool.ThreadPoolExecutor(max_workers=1)
    try:
        ex.submit(gate.wait, SHORT)
        futures = [ex.submit(identity, arg) for _ in range(100)]
        for f in futures:
            f.cancel()
        gate.set()
        ex.shutdown(wait=True)
        del futures, f
        assert _refcount_settles(arg, baseline)
    finally:
        gate.set()
        ex.shutdown()


# ---------------------------------------------------------------------------
# RSS over 1M tasks
# ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_rss_is_flat_over_a_million_tasks():
    result = run_python(
        """
        import gc, os
        import ferropool

        PAGE = os.sysconf("SC_PAGE_SIZE")

        def rss():
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * PAGE

        def noop(x=None):
            return None

        ex = ferropool.ThreadPoolExecutor(max_workers=4)
        BATCH = 10_000
        done = 0
        marks = {}
        for batch in range(100):
            if batch % 2 == 0:
                fs = [ex.submit(noop, i) for i in range(BATCH)]
                for f in fs:
                    f.result()
                del fs, f
            else:
                for _ in ex.map(noop, range(BATCH)):
                    pass
            done += BATCH
            if done in (200_000, 1_000_000):
                gc.collect()
                marks[done] = rss()
        ex.shutdown()
        print(marks[200_000], marks[1_000_000], flush=True)
        """,
        timeout=170,
    )
    assert result.returncode == 0, result.stderr
    at_200k, at_1m = map(int, result.stdout.split())
    growth = at_1m - at_200k
    print(f"RSS {at_200k / 2**20:.1f} MB after 200k tasks, {at_1m / 2**20:.1f} MB after 1M")
    assert growth < 20 * 2**20, f"RSS grew by {growth / 2**20:.1f} MB"
