"""C7: exceptions raised by tasks, with their tracebacks; BaseException in a task."""

from __future__ import annotations

import threading
import traceback

import pytest

import ferropool
from conftest import SHORT

pytestmark = pytest.mark.timeout(20)


def failing_task_function(x):
    return helper_that_raises(x)


def helper_that_raises(x):
    raise ValueError(f"task failed with {x}")


class CustomError(Exception):
    def __init__(self, a, b):
        super().__init__(a, b)
        self.a = a
        self.b = b


class CustomBase(BaseException):
    pass


def test_exception_comes_back_with_its_traceback(executor):
    fut = executor.submit(failing_task_function, 7)
    with pytest.raises(ValueError) as info:
        fut.result(timeout=SHORT)
    exc = info.value
    assert str(exc) == "task failed with 7"
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    assert "failing_task_function" in text
    assert "helper_that_raises" in text
    assert "task failed with 7" in text
    # the task's own frames are in the traceback chain, innermost last
    frames = [f.name for f in traceback.extract_tb(exc.__traceback__)]
    assert frames[-2:] == ["failing_task_function", "helper_that_raises"]


def test_exception_object_is_the_one_raised(executor):
    raised = []

    def task():
        exc = CustomError(1, [2])
        raised.append(exc)
        raise exc

    fut = executor.submit(task)
    exc = fut.exception(timeout=SHORT)
    assert exc is raised[0]
    assert (exc.a, exc.b) == (1, [2])
    with pytest.raises(CustomError) as info:
        fut.result()
    assert info.value is exc
    # raising it again does not lose the task's frames
    with pytest.raises(CustomError) as info2:
        fut.result()
    frames = [f.name for f in traceback.extract_tb(info2.value.__traceback__)]
    assert "task" in frames


def test_exception_traceback_on_exception_method(executor):
    exc = executor.submit(failing_task_function, 1).exception(timeout=SHORT)
    frames = [f.name for f in traceback.extract_tb(exc.__traceback__)]
    assert "failing_task_function" in frames


def test_chained_exceptions_are_kept(executor):
    def task():
        try:
            {}["missing"]
        except KeyError as inner:
            raise RuntimeError("outer") from inner

    exc = executor.submit(task).exception(timeout=SHORT)
    assert isinstance(exc, RuntimeError)
    assert isinstance(exc.__cause__, KeyError)


def test_exception_in_map_has_traceback(executor):
    with pytest.raises(ValueError) as info:
        list(executor.map(failing_task_function, [1, 2]))
    text = "".join(traceback.format_exception(info.type, info.value, info.tb))
    assert "failing_task_function" in text


@pytest.mark.parametrize(
    "make_exc",
    [
        lambda: SystemExit(3),
        lambda: KeyboardInterrupt(),
        lambda: CustomBase("custom"),
        lambda: GeneratorExit(),
    ],
    ids=["SystemExit", "KeyboardInterrupt", "CustomBase", "GeneratorExit"],
)
def test_base_exception_is_stored_and_the_worker_survives(make_exc):
    raised = []

    def task():
        exc = make_exc()
        raised.append(exc)
        raise exc

    with ferropool.ThreadPoolExecutor(max_workers=1) as ex:
        before = ex.submit(threading.get_ident).result(timeout=SHORT)
        fut = ex.submit(task)
        exc = fut.exception(timeout=SHORT)
        assert exc is raised[0]
        assert fut.done() and not fut.cancelled()
        with pytest.raises(type(exc)):
            fut.result(timeout=SHORT)
        # the (only) worker is alive and still the same thread
        assert ex.submit(pow, 2, 3).result(timeout=SHORT) == 8
        assert ex.submit(threading.get_ident).result(timeout=SHORT) == before


def test_system_exit_code_is_kept(executor):
    def task():
        raise SystemExit(42)

    exc = executor.submit(task).exception(timeout=SHORT)
    assert isinstance(exc, SystemExit)
    assert exc.code == 42


def test_many_failures_do_not_exhaust_the_pool():
    def task(i):
        if i % 2:
            raise KeyboardInterrupt(i)
        raise SystemExit(i)

    with ferropool.ThreadPoolExecutor(max_workers=2) as ex:
        fs = [ex.submit(task, i) for i in range(200)]
        excs = [f.exception(timeout=SHORT) for f in fs]
        assert ex.submit(abs, -1).result(timeout=SHORT) == 1
    assert [type(e) for e in excs] == [
        KeyboardInterrupt if i % 2 else SystemExit for i in range(200)
    ]


def test_exception_repr_in_future_repr(executor):
    fut = executor.submit(failing_task_function, 0)
    fut.exception(timeout=SHORT)
    assert "state=finished raised ValueError" in repr(fut)
