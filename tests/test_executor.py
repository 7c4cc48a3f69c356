"""C2: submit, shutdown, the context manager and the broken-initializer path."""

from __future__ import annotations

import concurrent.futures as cf
import logging
import threading
import time

import pytest

import ferropool
from conftest import SHORT, assert_same_outcome, wait_until

pytestmark = pytest.mark.timeout(30)

TPE = ferropool.ThreadPoolExecutor


# ---------------------------------------------------------------------------
# submit
# ---------------------------------------------------------------------------


def test_submit_args_and_kwargs(executor):
    def f(a, b=0, *rest, c=1, **kw):
        return a, b, rest, c, kw

    assert executor.submit(f, 1).result(timeout=SHORT) == (1, 0, (), 1, {})
    assert executor.submit(f, 1, 2, 3, 4, c=5, d=6).result(timeout=SHORT) == (
        1,
        2,
        (3, 4),
        5,
        {"d": 6},
    )


def test_submit_kwarg_named_fn_is_passed_to_the_task(executor):
    def f(**kwargs):
        return kwargs

    assert executor.submit(f, fn=1, self=2).result(timeout=SHORT) == {"fn": 1, "self": 2}


def test_submit_kwarg_named_fn_alongside_positional(executor):
    def f(x, fn):
        return x, fn

    assert executor.submit(f, 1, fn="g").result(timeout=SHORT) == (1, "g")


def test_submit_fn_only_as_keyword_is_an_error():
    def call(api):
        with api.ThreadPoolExecutor(max_workers=1) as ex:
            ex.submit(fn=abs)

    assert_same_outcome(call, arity=True)


def test_submit_without_arguments_is_an_error():
    def call(api):
        with api.ThreadPoolExecutor(max_workers=1) as ex:
            ex.submit()

    assert_same_outcome(call, arity=True)


def test_submit_builtins_and_methods_and_callables(executor):
    class C:
        def __init__(self):
            self.v = 3

        def method(self, x):
            return self.v * x

        def __call__(self, x):
            return -x

    c = C()
    assert executor.submit(c.method, 2).result(timeout=SHORT) == 6
    assert executor.submit(c, 2).result(timeout=SHORT) == -2
    assert executor.submit(sorted, [3, 1, 2]).result(timeout=SHORT) == [1, 2, 3]
    assert executor.submit(lambda: "lam").result(timeout=SHORT) == "lam"
    assert executor.submit(C).result(timeout=SHORT).v == 3


def test_submit_many(executor):
    futures = [executor.submit(pow, i, 3) for i in range(2000)]
    assert [f.result(timeout=SHORT) for f in futures] == [i**3 for i in range(2000)]


def test_submit_non_callable_future_holds_type_error():
    def call(api):
        with api.ThreadPoolExecutor(max_workers=1) as ex:
            exc = ex.submit(5).exception(timeout=SHORT)
        return type(exc), str(exc)

    assert assert_same_outcome(call)[1][0] is TypeError


def test_submit_from_inside_a_task(executor):
    def outer():
        return executor.submit(pow, 2, 8)

    inner = executor.submit(outer).result(timeout=SHORT)
    assert isinstance(inner, ferropool.Future)
    assert inner.result(timeout=SHORT) == 256


def test_task_runs_on_another_thread(executor):
    assert executor.submit(threading.get_ident).result(timeout=SHORT) != threading.get_ident()


def test_futures_are_distinct(executor):
    a = executor.submit(int)
    b = executor.submit(int)
    assert a is not b
    assert a.result(timeout=SHORT) == b.result(timeout=SHORT) == 0


# ---------------------------------------------------------------------------
# shutdown
# ---------------------------------------------------------------------------


def test_submit_after_shutdown_raises_runtime_error():
    ex = TPE(max_workers=2)
    ex.shutdown()
    with pytest.raises(RuntimeError) as info:
        ex.submit(abs, 1)
    assert str(info.value) == "cannot schedule new futures after shutdown"
    assert type(info.value) is RuntimeError


def test_submit_after_shutdown_without_wait_raises():
    ex = TPE(max_workers=2)
    ex.submit(abs, 1).result(timeout=SHORT)
    ex.shutdown(wait=False)
    with pytest.raises(RuntimeError, match="^cannot schedule new futures after shutdown$"):
        ex.submit(abs, 1)


def test_submit_after_shutdown_matches_stdlib():
    def call(api):
        ex = api.ThreadPoolExecutor(max_workers=1)
        ex.shutdown()
        ex.submit(abs, 1)

    assert_same_outcome(call)


@pytest.mark.timeout(10)
def test_shutdown_twice_is_fine():
    ex = TPE(max_workers=2)
    fut = ex.submit(abs, -1)
    ex.shutdown()
    ex.shutdown()
    ex.shutdown(wait=False)
    ex.shutdown(wait=True, cancel_futures=True)
    assert fut.result(timeout=0) == 1


@pytest.mark.timeout(10)
def test_shutdown_of_unused_executor():
    TPE(max_workers=3).shutdown()
    TPE(max_workers=3).shutdown(wait=False)
    TPE(max_workers=3).shutdown(cancel_futures=True)


@pytest.mark.timeout(10)
def test_shutdown_wait_runs_all_queued_work():
    ex = TPE(max_workers=2)
    ran = []
    lock = threading.Lock()

    def task(i):
        time.sleep(0.002)
        with lock:
            ran.append(i)
        return i

    futures = [ex.submit(task, i) for i in range(100)]
    ex.shutdown(wait=True)
    assert all(f.done() for f in futures)
    assert sorted(ran) == list(range(100))
    assert [f.result(timeout=0) for f in futures] == list(range(100))


@pytest.mark.timeout(10)
def test_shutdown_without_wait_returns_at_once_and_work_still_runs(gate):
    ex = TPE(max_workers=1)
    first = ex.submit(gate.wait, SHORT)
    queued = ex.submit(abs, -5)
    assert wait_until(first.running)
    start = time.monotonic()
    ex.shutdown(wait=False)
    assert time.monotonic() - start < 1.0
    assert not queued.done()
    gate.set()
    assert first.result(timeout=SHORT) is True
    assert queued.result(timeout=SHORT) == 5


@pytest.mark.timeout(10)
def test_shutdown_wait_blocks_until_running_task_finished():
    ex = TPE(max_workers=1)
    started = threading.Event()

    def task():
        started.set()
        time.sleep(0.2)
        return "finished"

    fut = ex.submit(task)
    assert started.wait(SHORT)
    ex.shutdown(wait=True)
    assert fut.done()
    assert fut.result(timeout=0) == "finished"


@pytest.mark.timeout(10)
@pytest.mark.parametrize("wait", [True, False])
def test_shutdown_cancel_futures(wait, gate):
    ex = TPE(max_workers=1)
    ran = []
    started = threading.Event()

    def blocker():
        started.set()
        gate.wait(SHORT)
        return "blocker"

    first = ex.submit(blocker)
    assert started.wait(SHORT)
    queued = [ex.submit(ran.append, i) for i in range(20)]
    if wait:
        threading.Timer(0.1, gate.set).start()
    ex.shutdown(wait=wait, cancel_futures=True)
    assert all(f.cancelled() for f in queued)
    assert not first.cancelled()
    gate.set()
    assert first.result(timeout=SHORT) == "blocker"
    ex.shutdown(wait=True)
    assert ran == []
    for f in queued:
        with pytest.raises(cf.CancelledError):
            f.result(timeout=0)


@pytest.mark.timeout(10)
def test_shutdown_cancel_futures_runs_their_callbacks(gate):
    ex = TPE(max_workers=1)
    ex.submit(gate.wait, SHORT)
    fut = ex.submit(abs, 1)
    calls = []
    fut.add_done_callback(lambda f: calls.append(f.cancelled()))
    ex.shutdown(wait=False, cancel_futures=True)
    gate.set()
    ex.shutdown(wait=True)
    assert calls == [True]


@pytest.mark.timeout(10)
def test_shutdown_cancel_futures_keeps_finished_results():
    ex = TPE(max_workers=2)
    futures = [ex.submit(pow, 2, i) for i in range(10)]
    cf.wait(futures, timeout=SHORT)
    ex.shutdown(cancel_futures=True)
    assert [f.result(timeout=0) for f in futures] == [2**i for i in range(10)]


def test_shutdown_positional_cancel_futures_is_an_error():
    def call(api):
        ex = api.ThreadPoolExecutor(max_workers=1)
        try:
            ex.shutdown(True, True)
        finally:
            ex.shutdown()

    assert_same_outcome(call, arity=True)


@pytest.mark.timeout(10)
def test_cancelled_queued_future_never_runs(gate):
    ex = TPE(max_workers=1)
    ran = []
    blocker = ex.submit(gate.wait, SHORT)
    victim = ex.submit(ran.append, "victim")
    after = ex.submit(ran.append, "after")
    assert victim.cancel() is True
    gate.set()
    assert after.result(timeout=SHORT) is None
    ex.shutdown()
    assert blocker.result(timeout=0) is True
    assert ran == ["after"]
    assert victim.cancelled()


# ---------------------------------------------------------------------------
# context manager
# ---------------------------------------------------------------------------


@pytest.mark.timeout(10)
def test_context_manager_returns_the_executor_and_waits():
    with TPE(max_workers=2) as ex:
        assert isinstance(ex, TPE)
        futures = [ex.submit(time.sleep, 0.01) for _ in range(10)]
    assert all(f.done() for f in futures)
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        ex.submit(abs, 1)


@pytest.mark.timeout(10)
def test_context_manager_propagates_exceptions_and_shuts_down():
    with pytest.raises(ZeroDivisionError):
        with TPE(max_workers=2) as ex:
            fut = ex.submit(time.sleep, 0.05)
            1 / 0
    assert fut.done()
    with pytest.raises(RuntimeError):
        ex.submit(abs, 1)


def test_exit_returns_false():
    ex = TPE(max_workers=1)
    assert ex.__enter__() is ex
    assert ex.__exit__(None, None, None) is False


# ---------------------------------------------------------------------------
# broken initializer
# ---------------------------------------------------------------------------

BROKEN_MESSAGE = "A thread initializer failed, the thread pool is not usable anymore"


def _bad_initializer():
    raise ValueError("initializer failed")


@pytest.mark.timeout(20)
@pytest.mark.parametrize("max_workers", [1, 3])
def test_failing_initializer_breaks_the_pool(max_workers, caplog):
    with caplog.at_level(logging.CRITICAL, logger="concurrent.futures"):
        ex = TPE(max_workers=max_workers, initializer=_bad_initializer)
        try:
            futures = []
            for _ in range(10):
                try:
                    futures.append(ex.submit(abs, -1))
                except ferropool.BrokenThreadPool:
                    break  # the pool broke while we were still submitting
            # (An executor that starts its workers eagerly may already know at the
            # first submit; either way, no future may be left hanging.)
            for fut in futures:
                exc = fut.exception(timeout=SHORT)
                assert type(exc) is ferropool.BrokenThreadPool
                assert str(exc) == BROKEN_MESSAGE
                with pytest.raises(ferropool.BrokenThreadPool):
                    fut.result(timeout=0)
            # Once a future has failed, the pool is known to be broken.
            with pytest.raises(ferropool.BrokenThreadPool) as info:
                ex.submit(abs, -1)
            assert str(info.value) == BROKEN_MESSAGE
            assert isinstance(info.value, cf.BrokenExecutor)
            assert isinstance(info.value, RuntimeError)
        finally:
            ex.shutdown(wait=True)


@pytest.mark.timeout(20)
def test_failing_initializer_is_logged(caplog):
    with caplog.at_level(logging.CRITICAL, logger="concurrent.futures"):
        ex = TPE(max_workers=1, initializer=_bad_initializer)
        try:
            fut = ex.submit(abs, 1)
            assert isinstance(fut.exception(timeout=SHORT), ferropool.BrokenThreadPool)
        finally:
            ex.shutdown(wait=True)
    records = [
        r
        for r in caplog.records
        if r.name == "concurrent.futures" and r.levelno == logging.CRITICAL
    ]
    assert records, "the initializer's exception must be logged"
    assert any(r.exc_info and r.exc_info[0] is ValueError for r in records)


@pytest.mark.timeout(20)
def test_failing_initializer_broken_pool_matches_stdlib(caplog):
    def call(api):
        ex = api.ThreadPoolExecutor(max_workers=1, initializer=_bad_initializer)
        try:
            fut = ex.submit(abs, 1)
            exc = fut.exception(timeout=SHORT)
            try:
                ex.submit(abs, 1)
            except Exception as later:  # noqa: BLE001
                later_outcome = (type(later), str(later))
            else:
                later_outcome = None
            return type(exc), str(exc), later_outcome
        finally:
            ex.shutdown(wait=True)

    with caplog.at_level(logging.CRITICAL, logger="concurrent.futures"):
        assert_same_outcome(call)


@pytest.mark.timeout(20)
def test_failing_initializer_base_exception_breaks_the_pool_too(caplog):
    def init():
        raise SystemExit(3)

    with caplog.at_level(logging.CRITICAL, logger="concurrent.futures"):
        ex = TPE(max_workers=2, initializer=init)
        try:
            fut = ex.submit(abs, 1)
            assert isinstance(fut.exception(timeout=SHORT), ferropool.BrokenThreadPool)
        finally:
            ex.shutdown(wait=True)


@pytest.mark.timeout(20)
def test_shutdown_of_broken_pool_does_not_hang(caplog):
    with caplog.at_level(logging.CRITICAL, logger="concurrent.futures"):
        with TPE(max_workers=2, initializer=_bad_initializer) as ex:
            fut = ex.submit(abs, 1)
            fut.exception(timeout=SHORT)
        ex.shutdown(wait=True)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("api", [cf, ferropool], ids=["stdlib", "ferropool"])
def test_a_fractional_max_workers_is_accepted_as_by_the_stdlib(api):
    # The stdlib starts a thread while the count is below max_workers: 1.5 means two.
    gate = threading.Barrier(2, timeout=10)
    names = set()

    def task():
        names.add(threading.current_thread().name)
        gate.wait()

    with api.ThreadPoolExecutor(max_workers=1.5) as ex:
        assert ex._max_workers == 1.5
        for future in [ex.submit(task) for _ in range(4)]:
            future.result(timeout=10)
    assert len(names) == 2, names


@pytest.mark.timeout(30)
def test_shutdown_cancel_futures_acknowledges_what_it_cancels():
    # ferropool reports these cancellations to waiters at once; the stdlib's stay merely
    # CANCELLED, so its wait() would block on them (python/cpython#109934).
    release = threading.Event()
    ex = ferropool.ThreadPoolExecutor(max_workers=1)
    blocker = ex.submit(release.wait, 10)
    queued = [ex.submit(abs, -i) for i in range(5)]
    assert wait_until(blocker.running)
    ex.shutdown(wait=False, cancel_futures=True)
    try:
        done, not_done = ferropool.wait(queued, timeout=5)
        assert done == set(queued) and not not_done
        assert all(f.cancelled() for f in queued)
        assert set(cf.as_completed(queued, timeout=5)) == set(queued)
        assert cf.wait(queued, timeout=5).not_done == set()
    finally:
        release.set()
        ex.shutdown(wait=True)
    assert blocker.result() is True
