"""C5: every Future method, on hand-made futures and on futures from the executor."""

from __future__ import annotations

import concurrent.futures as cf
import logging
import re
import threading
import time

import pytest

import ferropool
from conftest import SHORT, assert_same_outcome, wait_until

pytestmark = pytest.mark.timeout(30)

Future = ferropool.Future


def finished(result):
    fut = Future()
    fut.set_result(result)
    return fut


def failed(exc):
    fut = Future()
    fut.set_exception(exc)
    return fut


def cancelled():
    fut = Future()
    assert fut.cancel() is True
    return fut


def running():
    fut = Future()
    assert fut.set_running_or_notify_cancel() is True
    return fut


# ---------------------------------------------------------------------------
# States
# ---------------------------------------------------------------------------


def test_new_future_is_pending():
    fut = Future()
    assert not fut.done()
    assert not fut.running()
    assert not fut.cancelled()


def test_set_result():
    fut = Future()
    fut.set_result(42)
    assert fut.done() and not fut.running() and not fut.cancelled()
    assert fut.result() == 42
    assert fut.result(timeout=0) == 42
    assert fut.exception() is None
    assert fut.exception(timeout=0) is None


def test_result_is_the_same_object():
    value = object()
    assert finished(value).result() is value


def test_set_exception():
    exc = ValueError("boom")
    fut = failed(exc)
    assert fut.done() and not fut.cancelled()
    assert fut.exception() is exc
    with pytest.raises(ValueError) as info:
        fut.result()
    assert info.value is exc


def test_set_exception_base_exception():
    exc = KeyboardInterrupt()
    fut = failed(exc)
    assert fut.exception() is exc
    with pytest.raises(KeyboardInterrupt):
        fut.result()


def test_running_transition():
    fut = Future()
    assert fut.set_running_or_notify_cancel() is True
    assert fut.running() and not fut.done() and not fut.cancelled()
    fut.set_result("x")
    assert not fut.running() and fut.done()
    assert fut.result() == "x"


def test_running_future_can_fail():
    fut = running()
    fut.set_exception(OSError("x"))
    assert isinstance(fut.exception(), OSError)


def test_cancel_pending():
    fut = Future()
    assert fut.cancel() is True
    assert fut.cancelled() and fut.done() and not fut.running()
    with pytest.raises(cf.CancelledError):
        fut.result()
    with pytest.raises(cf.CancelledError):
        fut.exception()
    with pytest.raises(cf.CancelledError):
        fut.result(timeout=0)


def test_cancel_twice_returns_true():
    fut = cancelled()
    assert fut.cancel() is True
    assert fut.cancelled()


def test_cancel_running_returns_false():
    fut = running()
    assert fut.cancel() is False
    assert fut.running() and not fut.cancelled()


@pytest.mark.parametrize("make", [lambda: finished(1), lambda: failed(ValueError())])
def test_cancel_finished_returns_false(make):
    fut = make()
    assert fut.cancel() is False
    assert not fut.cancelled() and fut.done()


def test_set_running_or_notify_cancel_on_cancelled():
    fut = cancelled()
    assert fut.set_running_or_notify_cancel() is False
    assert fut.cancelled() and fut.done() and not fut.running()
    assert fut.cancel() is True
    with pytest.raises(cf.CancelledError):
        fut.result()


@pytest.mark.parametrize(
    "prepare",
    ["running", "finished", "failed", "notified"],
)
def test_set_running_or_notify_cancel_in_unexpected_state(prepare, caplog):
    def call(api):
        fut = api.Future()
        if prepare == "running":
            fut.set_running_or_notify_cancel()
        elif prepare == "finished":
            fut.set_result(1)
        elif prepare == "failed":
            fut.set_exception(ValueError())
        else:
            fut.cancel()
            fut.set_running_or_notify_cancel()
        fut.set_running_or_notify_cancel()

    with caplog.at_level(logging.CRITICAL, logger="concurrent.futures"):
        assert_same_outcome(call)
    # the stdlib logs 'Future <id> in unexpected state: <STATE>' at CRITICAL, both times
    records = [r for r in caplog.records if r.name == "concurrent.futures"]
    assert len(records) == 2
    assert all(r.levelno == logging.CRITICAL for r in records)
    assert records[0].getMessage().split()[-1] == records[1].getMessage().split()[-1]


# ---------------------------------------------------------------------------
# InvalidStateError
# ---------------------------------------------------------------------------

SETTERS = ["set_result", "set_exception"]
DONE_STATES = ["finished", "failed", "cancelled", "cancelled_notified"]


def _prepare(api, state):
    fut = api.Future()
    if state == "finished":
        fut.set_result(7)
    elif state == "failed":
        fut.set_exception(ValueError("v"))
    elif state == "cancelled":
        fut.cancel()
    elif state == "cancelled_notified":
        fut.cancel()
        fut.set_running_or_notify_cancel()
    return fut


@pytest.mark.parametrize("state", DONE_STATES)
@pytest.mark.parametrize("setter", SETTERS)
def test_setting_a_done_future_raises_invalid_state(setter, state):
    fut = _prepare(ferropool, state)
    arg = 8 if setter == "set_result" else KeyError("k")
    with pytest.raises(cf.InvalidStateError) as info:
        getattr(fut, setter)(arg)
    # The stdlib's message is '<STATE>: <repr>'
    message = str(info.value)
    assert message.endswith(repr(fut))
    # and the future kept its first outcome
    if state == "finished":
        assert fut.result() == 7
    elif state == "failed":
        assert isinstance(fut.exception(), ValueError)
    else:
        assert fut.cancelled()


@pytest.mark.parametrize("state", DONE_STATES)
@pytest.mark.parametrize("setter", SETTERS)
def test_invalid_state_message_matches_stdlib(setter, state):
    def call(api):
        fut = _prepare(api, state)
        getattr(fut, setter)(8 if setter == "set_result" else KeyError("k"))

    assert_same_outcome(call)


def test_invalid_state_error_is_a_stdlib_error():
    with pytest.raises(cf._base.Error):
        finished(1).set_result(2)


# ---------------------------------------------------------------------------
# repr
# ---------------------------------------------------------------------------

ADDR = r"0x[0-9a-f]+"


@pytest.mark.parametrize(
    "make, pattern",
    [
        (Future, r"state=pending"),
        (running, r"state=running"),
        (cancelled, r"state=cancelled"),
        (lambda: finished(3), r"state=finished returned int"),
        (lambda: finished(None), r"state=finished returned NoneType"),
        (lambda: finished("s"), r"state=finished returned str"),
        (lambda: failed(ValueError("x")), r"state=finished raised ValueError"),
    ],
)
def test_repr(make, pattern):
    fut = make()
    text = repr(fut)
    assert re.fullmatch(rf"<Future at {ADDR} {pattern}>", text), text
    assert "%#x" % id(fut) in text


def test_repr_cancelled_and_notified():
    fut = cancelled()
    fut.set_running_or_notify_cancel()
    assert re.fullmatch(rf"<Future at {ADDR} state=cancelled>", repr(fut))


@pytest.mark.parametrize(
    "state", ["pending", "running", "cancelled", "finished", "failed", "notified"]
)
def test_repr_matches_stdlib(state):
    def call(api):
        fut = api.Future()
        if state == "running":
            fut.set_running_or_notify_cancel()
        elif state == "cancelled":
            fut.cancel()
        elif state == "finished":
            fut.set_result([1])
        elif state == "failed":
            fut.set_exception(LookupError())
        elif state == "notified":
            fut.cancel()
            fut.set_running_or_notify_cancel()
        return re.sub(ADDR, "ADDR", repr(fut))

    assert_same_outcome(call)


def test_repr_of_subclass_uses_its_name():
    class MyFuture(ferropool.Future):
        pass

    fut = MyFuture()
    assert re.fullmatch(rf"<MyFuture at {ADDR} state=pending>", repr(fut))
    fut.set_result(1.5)
    assert re.fullmatch(rf"<MyFuture at {ADDR} state=finished returned float>", repr(fut))


def test_repr_of_executor_future(executor, gate):
    fut = executor.submit(gate.wait, SHORT)
    assert wait_until(fut.running)
    assert re.fullmatch(rf"<Future at {ADDR} state=running>", repr(fut))
    gate.set()
    fut.result(timeout=SHORT)
    assert re.fullmatch(rf"<Future at {ADDR} state=finished returned bool>", repr(fut))


# ---------------------------------------------------------------------------
# result / exception with timeouts
# ---------------------------------------------------------------------------


@pytest.mark.timeout(10)
@pytest.mark.parametrize("method", ["result", "exception"])
@pytest.mark.parametrize("timeout", [0, -1, 0.1])
def test_timeout_on_pending(method, timeout):
    fut = Future()
    start = time.monotonic()
    with pytest.raises(cf.TimeoutError):
        getattr(fut, method)(timeout=timeout)
    elapsed = time.monotonic() - start
    assert elapsed < 2.0
    if timeout > 0:
        assert elapsed >= timeout * 0.8
    assert not fut.done()


@pytest.mark.timeout(10)
def test_timeout_error_is_stdlib_class():
    with pytest.raises(ferropool.TimeoutError) as info:
        Future().result(timeout=0.01)
    assert type(info.value) is cf.TimeoutError


@pytest.mark.timeout(10)
@pytest.mark.parametrize("method", ["result", "exception"])
def test_timeout_positional_argument(method):
    with pytest.raises(cf.TimeoutError):
        getattr(Future(), method)(0.01)
    assert getattr(finished(5), method)(0.01) in (5, None)


@pytest.mark.timeout(10)
@pytest.mark.parametrize("method", ["result", "exception"])
def test_blocking_wait_is_woken_by_set_result(method):
    fut = Future()
    timer = threading.Timer(0.05, fut.set_result, args=("late",))
    timer.start()
    try:
        value = getattr(fut, method)()
    finally:
        timer.join()
    assert value == ("late" if method == "result" else None)


@pytest.mark.timeout(10)
def test_blocking_wait_is_woken_by_set_exception():
    fut = Future()
    timer = threading.Timer(0.05, fut.set_exception, args=(ZeroDivisionError("z"),))
    timer.start()
    try:
        with pytest.raises(ZeroDivisionError):
            fut.result(timeout=SHORT)
    finally:
        timer.join()


@pytest.mark.timeout(10)
@pytest.mark.parametrize("method", ["result", "exception"])
def test_blocking_wait_is_woken_by_cancel(method):
    fut = Future()
    timer = threading.Timer(0.05, fut.cancel)
    timer.start()
    try:
        with pytest.raises(cf.CancelledError):
            getattr(fut, method)(timeout=SHORT)
    finally:
        timer.join()


@pytest.mark.timeout(10)
def test_many_threads_waiting_on_one_future():
    fut = Future()
    results = []

    def waiter():
        results.append(fut.result(timeout=SHORT))

    threads = [threading.Thread(target=waiter) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.05)
    fut.set_result("all")
    for t in threads:
        t.join(SHORT)
    assert results == ["all"] * 8


# ---------------------------------------------------------------------------
# Done callbacks
# ---------------------------------------------------------------------------


def test_callback_on_done_future_runs_at_once_in_caller_thread():
    fut = finished(1)
    calls = []
    fut.add_done_callback(lambda f: calls.append((f, threading.get_ident())))
    assert calls == [(fut, threading.get_ident())]


def test_callback_on_cancelled_future_runs_at_once():
    fut = cancelled()
    calls = []
    fut.add_done_callback(lambda f: calls.append(f.cancelled()))
    assert calls == [True]


def test_callbacks_run_in_order_on_set_result_in_the_setting_thread():
    fut = Future()
    calls = []
    for i in range(5):
        fut.add_done_callback(lambda f, i=i: calls.append((i, f.result(), threading.get_ident())))
    assert calls == []
    idents = []

    def setter():
        idents.append(threading.get_ident())
        fut.set_result("r")

    t = threading.Thread(target=setter)
    t.start()
    t.join(SHORT)
    assert calls == [(i, "r", idents[0]) for i in range(5)]


def test_callbacks_see_the_future_done():
    fut = Future()
    seen = []
    fut.add_done_callback(lambda f: seen.append((f is fut, f.done(), f.exception())))
    exc = RuntimeError("e")
    fut.set_exception(exc)
    assert seen == [(True, True, exc)]


def test_callbacks_run_on_cancel_exactly_once():
    fut = Future()
    calls = []
    fut.add_done_callback(lambda f: calls.append(f.cancelled()))
    assert fut.cancel()
    assert calls == [True]
    assert fut.cancel()  # already cancelled: no second call
    fut.set_running_or_notify_cancel()
    assert calls == [True]


def test_callbacks_not_run_on_running():
    fut = Future()
    calls = []
    fut.add_done_callback(calls.append)
    fut.set_running_or_notify_cancel()
    assert calls == []
    fut.set_result(None)
    assert calls == [fut]


def test_callback_added_twice_runs_twice():
    fut = Future()
    calls = []
    fut.add_done_callback(calls.append)
    fut.add_done_callback(calls.append)
    fut.set_result(0)
    assert calls == [fut, fut]


def _callback_records(caplog):
    return [
        r
        for r in caplog.records
        if r.name == "concurrent.futures" and "exception calling callback" in r.getMessage()
    ]


def test_raising_callback_on_done_future_is_logged_and_swallowed(caplog):
    fut = finished(1)

    def bad(f):
        raise ValueError("callback failed")

    with caplog.at_level(logging.ERROR, logger="concurrent.futures"):
        fut.add_done_callback(bad)  # must not raise
    records = _callback_records(caplog)
    assert len(records) == 1
    record = records[0]
    assert record.levelno == logging.ERROR
    assert record.exc_info and record.exc_info[0] is ValueError
    assert repr(fut) in record.getMessage()


def test_raising_callback_on_set_result_is_logged_and_others_still_run(caplog):
    fut = Future()
    calls = []

    def bad(f):
        raise KeyError("k")

    fut.add_done_callback(calls.append)
    fut.add_done_callback(bad)
    fut.add_done_callback(calls.append)
    with caplog.at_level(logging.ERROR, logger="concurrent.futures"):
        fut.set_result(3)  # must not raise
    assert calls == [fut, fut]
    records = _callback_records(caplog)
    assert len(records) == 1
    assert records[0].exc_info[0] is KeyError
    assert fut.result() == 3


@pytest.mark.timeout(10)
def test_raising_callback_in_worker_is_logged(caplog, executor):
    done = threading.Event()

    def bad(f):
        try:
            raise ArithmeticError("in worker")
        finally:
            done.set()

    with caplog.at_level(logging.ERROR, logger="concurrent.futures"):
        gate = threading.Event()
        fut = executor.submit(gate.wait, SHORT)
        fut.add_done_callback(bad)
        gate.set()
        assert done.wait(SHORT)
        assert wait_until(lambda: _callback_records(caplog))
    assert _callback_records(caplog)[0].exc_info[0] is ArithmeticError
    # the worker survived
    assert executor.submit(abs, -2).result(timeout=SHORT) == 2


class _Fatal(BaseException):
    pass


def test_base_exception_from_callback_propagates_like_stdlib():
    # The stdlib only swallows Exception: a BaseException raised by a callback
    # propagates out of add_done_callback (done future) ...
    def call_done(api):
        fut = api.Future()
        fut.set_result(1)

        def cb(f):
            raise _Fatal("stop")

        try:
            fut.add_done_callback(cb)
        except _Fatal:
            return "propagated"
        return "swallowed"

    assert assert_same_outcome(call_done) == ("returned", "propagated")

    # ... and out of set_result, which has finished the future all the same.
    def call_pending(api):
        fut = api.Future()
        calls = []

        def cb(f):
            raise _Fatal("stop")

        fut.add_done_callback(cb)
        fut.add_done_callback(calls.append)
        try:
            fut.set_result(1)
        except _Fatal:
            outcome = "propagated"
        else:
            outcome = "swallowed"
        return outcome, fut.done(), fut.result(), len(calls)

    assert_same_outcome(call_pending)


def test_callback_may_add_another_callback():
    fut = Future()
    calls = []

    def first(f):
        calls.append("first")
        f.add_done_callback(lambda g: calls.append("nested"))

    fut.add_done_callback(first)
    fut.set_result(None)
    assert calls == ["first", "nested"]


def test_callback_may_call_result_without_deadlock():
    fut = Future()
    out = []
    fut.add_done_callback(lambda f: out.append(f.result(timeout=SHORT)))
    fut.set_result("ok")
    assert out == ["ok"]


@pytest.mark.timeout(10)
def test_executor_future_callback_runs_once_after_completion(executor):
    calls = []
    lock = threading.Lock()

    def cb(f):
        with lock:
            calls.append(f.result())

    futures = [executor.submit(pow, i, 2) for i in range(50)]
    for fut in futures:
        fut.add_done_callback(cb)
    cf.wait(futures, timeout=SHORT)
    assert wait_until(lambda: len(calls) == 50)
    assert sorted(calls) == sorted(i * i for i in range(50))


@pytest.mark.timeout(10)
def test_executor_future_states(executor, gate):
    started = threading.Event()

    def task():
        started.set()
        gate.wait(SHORT)
        return "done"

    fut = executor.submit(task)
    assert started.wait(SHORT)
    assert fut.running() and not fut.done()
    assert fut.cancel() is False
    gate.set()
    assert fut.result(timeout=SHORT) == "done"
    assert fut.done() and not fut.running() and not fut.cancelled()
    with pytest.raises(cf.InvalidStateError):
        fut.set_result("again")
