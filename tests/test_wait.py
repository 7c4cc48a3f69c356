"""C6: ferropool.wait and concurrent.futures.wait over futures of any origin."""

from __future__ import annotations

import concurrent.futures as cf
import itertools
import threading
import time

import pytest

import ferropool
from conftest import SHORT, STDLIB_TPE, assert_same_outcome
from futures_helpers import KINDS, later, maker  # noqa: F401  (maker: a fixture)

WAITS = {"ferropool.wait": ferropool.wait, "stdlib.wait": cf.wait}
RETURN_WHENS = [cf.ALL_COMPLETED, cf.FIRST_COMPLETED, cf.FIRST_EXCEPTION]

pytestmark = pytest.mark.timeout(20)


@pytest.fixture(params=list(WAITS), ids=list(WAITS))
def wait(request):
    return WAITS[request.param]


def _is_done_and_not_done(result):
    return (
        isinstance(result, tuple)
        and type(result).__name__ == "DoneAndNotDoneFutures"
        and result._fields == ("done", "not_done")
        and type(result.done) is set
        and type(result.not_done) is set
    )


@pytest.mark.parametrize("return_when", RETURN_WHENS)
def test_wait_empty(wait, return_when):
    result = wait([], return_when=return_when)
    assert _is_done_and_not_done(result)
    assert result == (set(), set())


def test_wait_result_type_is_the_stdlib_namedtuple():
    result = ferropool.wait([ferropool.Future()], timeout=0)
    assert isinstance(result, cf._base.DoneAndNotDoneFutures)
    done, not_done = result
    assert done == set() and len(not_done) == 1


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("return_when", RETURN_WHENS)
def test_wait_all_done_returns_at_once(wait, maker, kind, return_when):
    fs = [maker.done(kind, i) for i in range(3)] + [maker.done(kind, exc=ValueError())]
    fs.append(maker.cancelled(kind))
    start = time.monotonic()
    result = wait(fs, return_when=return_when)
    assert time.monotonic() - start < 1.0
    assert _is_done_and_not_done(result)
    assert result.done == set(fs)
    assert result.not_done == set()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("return_when", RETURN_WHENS)
def test_wait_timeout_with_pending(wait, maker, kind, return_when):
    pending, _ = maker.pending(kind)
    done = maker.done(kind, 1)
    start = time.monotonic()
    result = wait([pending, done], timeout=0.1, return_when=return_when)
    elapsed = time.monotonic() - start
    if return_when == cf.FIRST_COMPLETED:
        assert elapsed < 1.0  # something is done already
    else:
        assert 0.08 <= elapsed < 2.0
    assert result.done == {done}
    assert result.not_done == {pending}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("timeout", [0, -1])
def test_wait_zero_or_negative_timeout(wait, maker, kind, timeout):
    pending, _ = maker.pending(kind)
    done = maker.done(kind, 1)
    start = time.monotonic()
    result = wait([pending, done], timeout=timeout)
    assert time.monotonic() - start < 1.0
    assert result == ({done}, {pending})


@pytest.mark.parametrize("kind", KINDS)
def test_wait_all_completed_waits_for_all(wait, maker, kind):
    a, trigger_a = maker.pending(kind, 1)
    b, trigger_b = maker.pending(kind, exc=KeyError())
    c, trigger_c = maker.pending(kind, 3)
    timers = [later(0.02, trigger_a), later(0.05, trigger_b), later(0.08, trigger_c)]
    result = wait([a, b, c], timeout=SHORT)
    for t in timers:
        t.join()
    assert result.done == {a, b, c}
    assert result.not_done == set()


@pytest.mark.parametrize("kind", KINDS)
def test_wait_first_completed(wait, maker, kind):
    a, _ = maker.pending(kind)
    b, trigger_b = maker.pending(kind, "b")
    timer = later(0.05, trigger_b)
    start = time.monotonic()
    result = wait([a, b], timeout=SHORT, return_when=cf.FIRST_COMPLETED)
    timer.join()
    assert time.monotonic() - start < SHORT - 1
    assert result.done == {b}
    assert result.not_done == {a}


@pytest.mark.parametrize("kind", KINDS)
def test_wait_first_completed_with_one_already_done(wait, maker, kind):
    a, _ = maker.pending(kind)
    b = maker.done(kind, 2)
    result = wait([a, b], return_when=cf.FIRST_COMPLETED)
    assert result == ({b}, {a})


@pytest.mark.parametrize("kind", ["ferro_hand", "stdlib_hand"])
def test_wait_first_completed_woken_by_cancel(wait, kind, maker):
    a, _ = maker.pending(kind)
    b, _ = maker.pending(kind)

    def cancel_b():
        assert b.cancel()
        b.set_running_or_notify_cancel()

    timer = later(0.05, cancel_b)
    result = wait([a, b], timeout=SHORT, return_when=cf.FIRST_COMPLETED)
    timer.join()
    assert result == ({b}, {a})


@pytest.mark.parametrize("kind", KINDS)
def test_wait_first_exception_returns_at_the_exception(wait, maker, kind):
    a, _ = maker.pending(kind)
    b, trigger_b = maker.pending(kind, exc=ValueError("b"))
    timer = later(0.05, trigger_b)
    start = time.monotonic()
    result = wait([a, b], timeout=SHORT, return_when=cf.FIRST_EXCEPTION)
    timer.join()
    assert time.monotonic() - start < SHORT - 1
    assert result == ({b}, {a})


@pytest.mark.parametrize("kind", KINDS)
def test_wait_first_exception_already_failed(wait, maker, kind):
    a, _ = maker.pending(kind)
    b = maker.done(kind, exc=OSError())
    c = maker.done(kind, 3)
    result = wait([a, b, c], return_when=cf.FIRST_EXCEPTION)
    assert result == ({b, c}, {a})


@pytest.mark.parametrize("kind", KINDS)
def test_wait_first_exception_without_exception_is_all_completed(wait, maker, kind):
    a, trigger_a = maker.pending(kind, 1)
    b, trigger_b = maker.pending(kind, 2)
    c = maker.cancelled(kind)  # a cancellation is not an exception
    timers = [later(0.03, trigger_a), later(0.08, trigger_b)]
    result = wait([a, b, c], timeout=SHORT, return_when=cf.FIRST_EXCEPTION)
    for t in timers:
        t.join()
    assert result == ({a, b, c}, set())


@pytest.mark.parametrize("kind", KINDS)
def test_wait_first_exception_timeout(wait, maker, kind):
    a, _ = maker.pending(kind)
    b = maker.done(kind, 1)
    result = wait([a, b], timeout=0.05, return_when=cf.FIRST_EXCEPTION)
    assert result == ({b}, {a})


@pytest.mark.parametrize("kind", KINDS)
def test_wait_duplicates(wait, maker, kind):
    a = maker.done(kind, 1)
    b, _ = maker.pending(kind)
    result = wait([a, a, b, b, a], timeout=0.05)
    assert result == ({a}, {b})


@pytest.mark.parametrize("kind", KINDS)
def test_wait_accepts_any_iterable(wait, maker, kind):
    fs = [maker.done(kind, i) for i in range(3)]
    assert wait(iter(fs)).done == set(fs)
    assert wait(set(fs)).done == set(fs)
    assert wait(dict.fromkeys(fs)).done == set(fs)
    assert wait(tuple(fs)).done == set(fs)


@pytest.mark.parametrize("first, second", list(itertools.permutations(KINDS, 2)))
def test_wait_on_a_mix_of_origins(wait, maker, first, second):
    done = maker.done(first, 1)
    a, trigger_a = maker.pending(first, 2)
    b, trigger_b = maker.pending(second, exc=IndexError())
    # FIRST_COMPLETED woken by the second kind
    c, trigger_c = maker.pending(second, 4)
    timer = later(0.03, trigger_c)
    assert wait([a, b, c], timeout=SHORT, return_when=cf.FIRST_COMPLETED) == ({c}, {a, b})
    timer.join()
    # FIRST_EXCEPTION woken by the second kind
    timer = later(0.03, trigger_b)
    assert wait([a, b, done], timeout=SHORT, return_when=cf.FIRST_EXCEPTION) == (
        {b, done},
        {a},
    )
    timer.join()
    # ALL_COMPLETED over everything
    timer = later(0.03, trigger_a)
    assert wait([a, b, c, done], timeout=SHORT) == ({a, b, c, done}, set())
    timer.join()


@pytest.mark.parametrize("kind", ["ferropool", "stdlib"])
def test_wait_on_executor_work(wait, kind):
    def task(i):
        time.sleep(0.001 * (i % 5))
        if i % 7 == 0:
            raise ValueError(i)
        return i

    ex_class = ferropool.ThreadPoolExecutor if kind == "ferropool" else STDLIB_TPE
    with ex_class(max_workers=4) as ex:
        fs = [ex.submit(task, i) for i in range(200)]
        result = wait(fs, timeout=SHORT * 2)
    assert result.done == set(fs)
    assert result.not_done == set()


def test_stdlib_wait_removes_its_waiters_from_ferropool_futures(maker):
    pending, trigger = maker.pending("ferro_hand", 1)
    done = maker.done("ferro_exec", 1)
    for return_when in RETURN_WHENS * 3:
        cf.wait([pending, done], timeout=0, return_when=return_when)
        cf.wait([pending], timeout=0.01, return_when=return_when)
    assert list(pending._waiters) == []
    trigger()  # completing after the waiters left must work
    assert pending.result(timeout=0) == 1
    assert cf.wait([pending]).done == {pending}
    assert list(pending._waiters) == []


def test_stdlib_wait_woken_by_ferropool_worker():
    with ferropool.ThreadPoolExecutor(max_workers=2) as ex:
        gate = threading.Event()
        fut = ex.submit(gate.wait, SHORT)
        timer = later(0.05, gate.set)
        start = time.monotonic()
        result = cf.wait([fut], timeout=SHORT)
        timer.join()
        assert time.monotonic() - start < SHORT - 1
        assert result.done == {fut}


def test_many_threads_waiting_on_the_same_futures(maker):
    fs_and_triggers = [maker.pending("ferro_hand", i) for i in range(5)]
    fs = [f for f, _ in fs_and_triggers]
    results = []
    lock = threading.Lock()

    def waiter(wait_fn, return_when):
        r = wait_fn(fs, timeout=SHORT, return_when=return_when)
        with lock:
            results.append((return_when, len(r.done)))

    threads = [
        threading.Thread(target=waiter, args=(w, rw))
        for w in WAITS.values()
        for rw in (cf.ALL_COMPLETED, cf.FIRST_COMPLETED)
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    time.sleep(0.05)
    for _, trigger in fs_and_triggers:
        trigger()
    for t in threads:
        t.join(SHORT * 2)
    assert len(results) == len(threads)
    for return_when, n_done in results:
        assert n_done == 5 if return_when == cf.ALL_COMPLETED else n_done >= 1


# ---------------------------------------------------------------------------
# The stdlib's corner cases, compared directly
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("return_when", RETURN_WHENS)
def test_cancelled_but_not_notified_is_not_done_for_wait(return_when):
    # The stdlib treats CANCELLED (cancel() called, set_running_or_notify_cancel() not
    # yet) as not finished in wait(), although done() is True.
    def call(api):
        fut = api.Future()
        fut.cancel()
        result = api.wait([fut], timeout=0.05, return_when=return_when)
        return fut.done(), len(result.done), len(result.not_done)

    assert_same_outcome(call)


@pytest.mark.parametrize("return_when", RETURN_WHENS)
def test_wait_on_cancelled_future_is_woken_by_notify(wait, return_when):
    fut = ferropool.Future()
    fut.cancel()
    timer = later(0.05, fut.set_running_or_notify_cancel)
    start = time.monotonic()
    result = wait([fut], timeout=SHORT, return_when=return_when)
    timer.join()
    assert time.monotonic() - start < SHORT - 1
    assert result == ({fut}, set())


@pytest.mark.parametrize("state", ["pending", "done", "empty", "cancelled"])
def test_invalid_return_when_matches_stdlib(state):
    def call(api):
        fs = []
        if state in ("pending", "done"):
            f = api.Future()
            if state == "done":
                f.set_result(1)
            fs.append(f)
            g = api.Future()
            g.set_result(2)
            fs.append(g)
        elif state == "cancelled":
            f = api.Future()
            f.cancel()
            fs.append(f)
        result = api.wait(fs, timeout=0.01, return_when="bogus")
        return len(result.done), len(result.not_done)

    assert_same_outcome(call)


def test_wait_non_iterable_matches_stdlib():
    assert_same_outcome(lambda api: api.wait(5))


def test_wait_first_exception_with_cancelled_and_done_matches_stdlib():
    def call(api):
        a = api.Future()
        a.cancel()
        a.set_running_or_notify_cancel()
        b = api.Future()
        b.set_result(None)
        c = api.Future()
        r = api.wait([a, b, c], timeout=0.05, return_when=cf.FIRST_EXCEPTION)
        return len(r.done), len(r.not_done)

    assert_same_outcome(call)
