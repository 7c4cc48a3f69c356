"""R6: bad input gets the stdlib's errors (type and message); nothing is left half-done.

Every case runs the same call on concurrent.futures and on ferropool
(`assert_same_outcome`), so the expected type and message are the running stdlib's.
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
import time

import pytest

import ferropool
from conftest import FERRO, SHORT, STDLIB, assert_same_outcome

pytestmark = pytest.mark.timeout(20)


def _construct(**kwargs):
    def call(api):
        ex = api.ThreadPoolExecutor(**kwargs)
        ex.shutdown()
        return "constructed"

    return call


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_workers": 0},
        {"max_workers": -1},
        {"max_workers": -(2**70)},
        {"max_workers": "x"},
        {"max_workers": [1]},
        {"max_workers": 1, "initializer": 5},
        {"max_workers": 1, "initializer": "not callable"},
        {"max_workers": 0, "initializer": 5},  # max_workers is checked first
        {"initializer": object()},
    ],
    ids=repr,
)
def test_bad_constructor_arguments(kwargs):
    kind, *rest = assert_same_outcome(_construct(**kwargs))
    assert kind == "raised"


def test_max_workers_zero_message():
    with pytest.raises(ValueError) as info:
        ferropool.ThreadPoolExecutor(max_workers=0)
    assert str(info.value) == "max_workers must be greater than 0"


def test_non_callable_initializer_message():
    with pytest.raises(TypeError) as info:
        ferropool.ThreadPoolExecutor(initializer=42)
    assert str(info.value) == "initializer must be a callable"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_workers": None},
        {"max_workers": 1},
        {"max_workers": 1, "initializer": None},
        {"max_workers": 2, "thread_name_prefix": None},
        {"max_workers": 2, "initargs": ()},
    ],
    ids=repr,
)
def test_good_constructor_arguments(kwargs):
    assert assert_same_outcome(_construct(**kwargs)) == ("returned", "constructed")


@pytest.mark.parametrize(
    "args, kwargs",
    [
        ((1, "p", None, (), "extra"), {}),
        ((), {"workers": 2}),
        ((), {"max_workers": 1, "bogus": True}),
    ],
    ids=repr,
)
def test_constructor_arity_errors(args, kwargs):
    def call(api):
        api.ThreadPoolExecutor(*args, **kwargs).shutdown()

    assert_same_outcome(call, arity=True)


def _with_executor(body):
    def call(api):
        with api.ThreadPoolExecutor(max_workers=2) as ex:
            return body(api, ex)

    return call


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(lambda api, ex: ex.submit(), id="submit()"),
        pytest.param(lambda api, ex: ex.submit(fn=abs), id="submit(fn=)"),
        pytest.param(lambda api, ex: ex.map(), id="map()"),
        pytest.param(lambda api, ex: ex.shutdown(True, True), id="shutdown(True, True)"),
        pytest.param(lambda api, ex: ex.shutdown(bogus=1), id="shutdown(bogus=1)"),
        pytest.param(lambda api, ex: ex.map(abs, [1], bogus=1), id="map(bogus=1)"),
        pytest.param(lambda api, ex: api.Future(1), id="Future(1)"),
        pytest.param(lambda api, ex: api.Future().add_done_callback(), id="add_done_callback()"),
        pytest.param(lambda api, ex: api.Future().set_result(), id="set_result()"),
        pytest.param(lambda api, ex: api.Future().set_exception(), id="set_exception()"),
        pytest.param(lambda api, ex: api.wait(), id="wait()"),
    ],
)
def test_arity_errors(body):
    assert_same_outcome(_with_executor(body), arity=True)


@pytest.mark.parametrize(
    "method", ["cancel", "cancelled", "running", "done", "set_running_or_notify_cancel"]
)
def test_argument_to_an_argless_future_method_is_a_type_error(method):
    # The stdlib's type; the wording is CPython's for a method implemented in C
    # ("takes no arguments (1 given)"), not that of a Python function.
    future = ferropool.Future()
    with pytest.raises(TypeError, match=r"\(\) takes no arguments \(1 given\)"):
        getattr(future, method)(1)
    assert not future.done(), "a rejected call must leave the future as it was"


def _wait_all_done_bogus(api, ex):
    # The stdlib validates return_when only when it has to wait: no error here.
    fut = ex.submit(abs, 1)
    fut.result(timeout=SHORT)
    return len(api.wait([fut], return_when="bogus").done)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(lambda api, ex: type(ex.submit(5).exception(timeout=SHORT)), id="submit(5)"),
        pytest.param(
            lambda api, ex: str(ex.submit(None).exception(timeout=SHORT)), id="submit(None)"
        ),
        pytest.param(lambda api, ex: ex.map(abs, 5), id="map(non-iterable)"),
        pytest.param(lambda api, ex: ex.map(abs, [1], None), id="map(iterable, None)"),
        pytest.param(lambda api, ex: list(ex.map(5, [1])), id="map(non-callable)"),
        pytest.param(lambda api, ex: list(ex.map(abs, ["x"])), id="map(abs, ['x'])"),
        pytest.param(lambda api, ex: ex.shutdown() or ex.shutdown(), id="shutdown twice"),
        pytest.param(lambda api, ex: ex.shutdown(wait=False) or ex.submit(abs, 1),
                     id="submit after shutdown(wait=False)"),
        pytest.param(lambda api, ex: list(ex.map(abs, [-1], timeout=None)), id="map timeout None"),
        pytest.param(lambda api, ex: api.wait([]), id="wait([])"),
        pytest.param(lambda api, ex: list(api.as_completed([])), id="as_completed([])"),
        pytest.param(lambda api, ex: api.wait(5), id="wait(5)"),
        pytest.param(lambda api, ex: list(api.as_completed(5)), id="as_completed(5)"),
        pytest.param(lambda api, ex: list(api.as_completed(None)), id="as_completed(None)"),
        pytest.param(lambda api, ex: api.wait([], return_when="bogus"), id="wait([], bogus)"),
        pytest.param(
            lambda api, ex: api.wait([api.Future()], timeout=0, return_when="bogus"),
            id="wait([pending], bogus)",
        ),
        pytest.param(
            lambda api, ex: api.wait([api.Future()], timeout=0, return_when=None),
            id="wait([pending], return_when=None)",
        ),
        pytest.param(_wait_all_done_bogus, id="wait([done], bogus)"),
    ],
)
def test_bad_calls_match_stdlib(body):
    assert_same_outcome(_with_executor(body))


def test_submit_non_callable_future_holds_type_error(executor):
    fut = executor.submit(5)
    exc = fut.exception(timeout=SHORT)
    assert type(exc) is TypeError
    assert str(exc) == "'int' object is not callable"
    # and the pool is fine
    assert executor.submit(abs, -1).result(timeout=SHORT) == 1


def test_map_non_iterable_submits_nothing():
    ran = []
    with ferropool.ThreadPoolExecutor(max_workers=1) as ex:
        with pytest.raises(TypeError):
            ex.map(ran.append, [1, 2], 5)
    assert ran == []


def test_map_with_failing_input_iterator():
    # The stdlib's map() submits while it zips, so the items before the failure have
    # been submitted (and run) when the input's exception propagates. ferropool may do
    # that or submit nothing; it must raise the same error and run no other item.
    def call(api):
        ran = []
        lock = threading.Lock()

        def record(x):
            with lock:
                ran.append(x)

        def gen():
            yield 1
            yield 2
            raise OSError("broken input")

        with api.ThreadPoolExecutor(max_workers=1) as ex:
            try:
                ex.map(record, gen())
            except OSError as exc:
                outcome = str(exc)
            else:
                outcome = None
        return outcome, sorted(ran)

    stdlib_outcome, stdlib_ran = call(STDLIB)
    assert (stdlib_outcome, stdlib_ran) == ("broken input", [1, 2])
    outcome, ran = call(FERRO)
    assert outcome == "broken input"
    assert ran in ([], [1, 2])


@pytest.mark.parametrize("method", ["result", "exception"])
def test_negative_timeout_on_pending_is_immediate(method):
    fut = ferropool.Future()
    start = time.monotonic()
    with pytest.raises(cf.TimeoutError):
        getattr(fut, method)(timeout=-1)
    assert time.monotonic() - start < 1.0


@pytest.mark.parametrize("method", ["result", "exception"])
def test_negative_timeout_on_done_returns(method):
    fut = ferropool.Future()
    fut.set_result(3)
    assert getattr(fut, method)(timeout=-1) == (3 if method == "result" else None)


def test_timeout_error_message_matches_stdlib():
    def call(api):
        try:
            api.Future().result(timeout=0)
        except cf.TimeoutError as exc:
            return type(exc), str(exc), exc.args

    assert_same_outcome(call)


def test_cancelled_error_matches_stdlib():
    def call(api):
        fut = api.Future()
        fut.cancel()
        out = []
        for method in ("result", "exception"):
            try:
                getattr(fut, method)()
            except cf.CancelledError as exc:
                out.append((type(exc), str(exc), exc.args))
        return out

    assert len(assert_same_outcome(call)[1]) == 2


def test_map_timeout_error_matches_stdlib():
    def call(api):
        gate = threading.Event()
        with api.ThreadPoolExecutor(max_workers=1) as ex:
            try:
                list(ex.map(gate.wait, [SHORT], timeout=0.01))
            except cf.TimeoutError as exc:
                return type(exc), str(exc)
            finally:
                gate.set()

    assert_same_outcome(call)


def test_shutdown_twice_is_fine():
    ex = ferropool.ThreadPoolExecutor(max_workers=1)
    ex.submit(abs, 1).result(timeout=SHORT)
    assert ex.shutdown() is None
    assert ex.shutdown() is None
    assert ex.shutdown(wait=False, cancel_futures=True) is None


def test_wait_invalid_return_when_leaves_no_waiter_behind():
    fut = ferropool.Future()
    with pytest.raises(ValueError, match="Invalid return condition"):
        ferropool.wait([fut], timeout=0, return_when="bogus")
    # the future still completes and wakes later waiters normally
    threading.Timer(0.02, fut.set_result, args=(1,)).start()
    assert ferropool.wait([fut], timeout=SHORT).done == {fut}
    assert list(fut._waiters) == []
