"""C2: Executor.map: order, eagerness, timeout, exceptions, closing early."""

from __future__ import annotations

import concurrent.futures as cf
import gc
import random
import threading
import time

import pytest

import ferropool
from conftest import SHORT, assert_same_outcome, wait_until

pytestmark = pytest.mark.timeout(30)

TPE = ferropool.ThreadPoolExecutor


def test_map_results_in_input_order(executor):
    delays = [random.random() * 0.01 for _ in range(40)]

    def task(i, d):
        time.sleep(d)
        return i

    assert list(executor.map(task, range(40), delays)) == list(range(40))


def test_map_in_order_when_later_items_finish_first(executor):
    def task(i):
        time.sleep(0.02 * (3 - i))
        return i * 10

    assert list(executor.map(task, range(4))) == [0, 10, 20, 30]


def test_map_large(executor):
    assert list(executor.map(abs, range(-20000, 0))) == list(range(20000, 0, -1))


def test_map_several_iterables_stop_at_the_shortest(executor):
    assert list(executor.map(pow, [2, 3, 4], [5, 6])) == [32, 729]
    assert list(executor.map(pow, [], [1])) == []


def test_map_empty(executor):
    assert list(executor.map(abs, [])) == []
    assert list(executor.map(abs, iter(()))) == []


def test_map_without_iterables_matches_stdlib():
    def call(api):
        with api.ThreadPoolExecutor(max_workers=1) as ex:
            return list(ex.map(abs))

    assert assert_same_outcome(call) == ("returned", [])


def test_map_chunksize_is_accepted_and_ignored(executor):
    for chunksize in (1, 5, 1000):
        assert list(executor.map(abs, range(-50, 50), chunksize=chunksize)) == [
            abs(i) for i in range(-50, 50)
        ]


def test_map_chunksize_zero_matches_stdlib():
    def call(api):
        with api.ThreadPoolExecutor(max_workers=1) as ex:
            return list(ex.map(abs, [-1, -2], chunksize=0))

    assert_same_outcome(call)


def test_map_returns_an_iterator(executor):
    it = executor.map(abs, [-1, -2])
    assert iter(it) is it
    assert next(it) == 1
    assert next(it) == 2
    with pytest.raises(StopIteration):
        next(it)


def test_map_consumes_its_input_eagerly(executor):
    consumed = []

    def gen():
        for i in range(5):
            consumed.append(i)
            yield i

    it = executor.map(abs, gen())
    assert consumed == [0, 1, 2, 3, 4]
    assert list(it) == [0, 1, 2, 3, 4]


@pytest.mark.timeout(10)
def test_map_submits_without_iteration(executor):
    # CPython's test_map_submits_without_iteration
    finished = []
    lock = threading.Lock()

    def record(i):
        with lock:
            finished.append(i)

    executor.map(record, range(10))
    assert wait_until(lambda: len(finished) == 10)
    assert sorted(finished) == list(range(10))


@pytest.mark.timeout(10)
def test_map_exception_surfaces_at_its_item(executor):
    def task(i):
        if i == 3:
            raise ValueError(f"bad {i}")
        return i

    it = executor.map(task, range(6))
    assert [next(it), next(it), next(it)] == [0, 1, 2]
    with pytest.raises(ValueError, match="bad 3"):
        next(it)
    # like the stdlib's generator, the iterator is finished after raising
    with pytest.raises(StopIteration):
        next(it)


@pytest.mark.timeout(10)
def test_map_exception_after_iteration_matches_stdlib():
    def call(api):
        def task(i):
            if i == 1:
                raise KeyError(i)
            return i

        got = []
        with api.ThreadPoolExecutor(max_workers=2) as ex:
            it = ex.map(task, range(4))
            try:
                for value in it:
                    got.append(value)
            except KeyError as exc:
                got.append(("raised", exc.args))
            got.append(list(it))
        return got

    assert assert_same_outcome(call) == ("returned", [0, ("raised", (1,)), []])


@pytest.mark.timeout(10)
def test_map_non_callable_matches_stdlib():
    def call(api):
        with api.ThreadPoolExecutor(max_workers=1) as ex:
            return list(ex.map(5, [1, 2]))

    assert_same_outcome(call)


@pytest.mark.timeout(10)
def test_map_timeout_raises_at_the_slow_item(executor, gate):
    # CPython's test_map_timeout, with an Event instead of a 6 s sleep.
    results = []
    start = time.monotonic()
    with pytest.raises(cf.TimeoutError):
        for value in executor.map(lambda x: gate.wait(SHORT) if x else x, [0, 0, 1],
                                  timeout=0.3):
            results.append(value)
    elapsed = time.monotonic() - start
    assert results == [0, 0]
    assert 0.25 <= elapsed < 2.0


@pytest.mark.timeout(10)
def test_map_timeout_is_counted_from_the_call(executor, gate):
    it = executor.map(lambda x: gate.wait(SHORT), [1], timeout=0.2)
    time.sleep(0.3)
    start = time.monotonic()
    with pytest.raises(cf.TimeoutError):
        next(it)
    assert time.monotonic() - start < 0.5


@pytest.mark.timeout(10)
def test_map_timeout_not_hit(executor):
    assert list(executor.map(abs, [-1, -2, -3], timeout=SHORT)) == [1, 2, 3]


@pytest.mark.timeout(10)
def test_map_timeout_zero_with_finished_items_matches_stdlib():
    def call(api):
        with api.ThreadPoolExecutor(max_workers=1) as ex:
            gate = threading.Event()
            it = ex.map(lambda x: gate.wait(SHORT), [1, 2], timeout=0)
            try:
                return list(it)
            except cf.TimeoutError as exc:
                return ("timeout", str(exc))
            finally:
                gate.set()

    assert_same_outcome(call)


def _closing_early(executor_workers, finish):
    started = []
    release = threading.Event()
    lock = threading.Lock()

    def task(i):
        with lock:
            started.append(i)
        if i == 1:
            release.wait(SHORT)
        return i

    ex = TPE(max_workers=executor_workers)
    try:
        it = ex.map(task, range(10))
        assert next(it) == 0
        assert wait_until(lambda: 1 in started)
        finish(it)
        release.set()
        ex.shutdown(wait=True)
    finally:
        release.set()
        ex.shutdown(wait=True)
    return started


@pytest.mark.timeout(10)
def test_map_close_cancels_what_has_not_started():
    started = _closing_early(1, lambda it: it.close())
    assert started == [0, 1]


@pytest.mark.timeout(10)
def test_map_dropping_the_iterator_cancels_what_has_not_started():
    started = []
    release = threading.Event()
    lock = threading.Lock()

    def task(i):
        with lock:
            started.append(i)
        if i == 1:
            release.wait(SHORT)
        return i

    ex = TPE(max_workers=1)
    try:
        holder = [ex.map(task, range(10))]
        assert next(holder[0]) == 0
        assert wait_until(lambda: 1 in started)
        holder.clear()
        gc.collect()
        release.set()
        ex.shutdown(wait=True)
    finally:
        release.set()
        ex.shutdown(wait=True)
    assert started == [0, 1]


@pytest.mark.timeout(10)
def test_map_break_out_of_for_loop_cancels_the_rest():
    started = []
    release = threading.Event()

    def task(i):
        started.append(i)
        if i == 1:
            release.wait(SHORT)
        return i

    ex = TPE(max_workers=1)
    try:
        for value in ex.map(task, range(10)):
            assert value == 0
            assert wait_until(lambda: 1 in started)
            break
        gc.collect()
        release.set()
        ex.shutdown(wait=True)
    finally:
        release.set()
        ex.shutdown(wait=True)
    assert started == [0, 1]


@pytest.mark.timeout(10)
def test_map_exception_cancels_the_rest():
    started = []
    release = threading.Event()

    def task(i):
        started.append(i)
        if i == 0:
            raise RuntimeError("first fails")
        release.wait(SHORT)
        return i

    ex = TPE(max_workers=1)
    try:
        it = ex.map(task, range(10))
        assert wait_until(lambda: 1 in started)
        with pytest.raises(RuntimeError, match="first fails"):
            next(it)
        release.set()
        ex.shutdown(wait=True)
    finally:
        release.set()
        ex.shutdown(wait=True)
    assert started == [0, 1]


@pytest.mark.timeout(10)
def test_map_timeout_cancels_the_rest():
    started = []
    release = threading.Event()

    def task(i):
        started.append(i)
        release.wait(SHORT)
        return i

    ex = TPE(max_workers=1)
    try:
        it = ex.map(task, range(5), timeout=0.1)
        with pytest.raises(cf.TimeoutError):
            next(it)
        release.set()
        ex.shutdown(wait=True)
    finally:
        release.set()
        ex.shutdown(wait=True)
    assert started == [0]


def test_map_after_shutdown_matches_stdlib():
    def call(api):
        ex = api.ThreadPoolExecutor(max_workers=1)
        ex.shutdown()
        return list(ex.map(abs, [1]))

    assert_same_outcome(call)


def test_map_after_shutdown_on_empty_input_matches_stdlib():
    # The stdlib submits lazily per item: with nothing to submit there is no error.
    def call(api):
        ex = api.ThreadPoolExecutor(max_workers=1)
        ex.shutdown()
        return list(ex.map(abs, []))

    assert_same_outcome(call)


def test_map_non_iterable_matches_stdlib():
    def call(api):
        with api.ThreadPoolExecutor(max_workers=1) as ex:
            ex.map(abs, 5)

    assert_same_outcome(call)


def test_map_non_iterable_raises_at_the_call(executor):
    with pytest.raises(TypeError):
        executor.map(abs, [1], 5)


def test_map_iterable_that_raises_matches_stdlib():
    def call(api):
        def gen():
            yield -1
            raise OSError("input failed")

        with api.ThreadPoolExecutor(max_workers=1) as ex:
            ex.map(abs, gen())

    assert_same_outcome(call)


@pytest.mark.timeout(10)
def test_map_of_base_exception(executor):
    def task(i):
        if i == 2:
            raise SystemExit(i)
        return i

    it = executor.map(task, range(4))
    assert [next(it), next(it)] == [0, 1]
    with pytest.raises(SystemExit):
        next(it)
    assert executor.submit(abs, -9).result(timeout=SHORT) == 9
