"""C1/C2: public names, identity with the stdlib, signatures and defaults."""

from __future__ import annotations

import concurrent.futures as cf
import concurrent.futures.thread as cf_thread
import inspect
import os
import pathlib
import re
import threading
import time

import pytest

import ferropool
from conftest import SHORT, STDLIB_TPE

pytestmark = pytest.mark.timeout(30)

SAME_OBJECTS = [
    "Executor",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "ALL_COMPLETED",
    "CancelledError",
    "TimeoutError",
    "InvalidStateError",
    "BrokenExecutor",
]


@pytest.mark.parametrize("name", SAME_OBJECTS)
def test_name_is_the_stdlib_object(name):
    assert getattr(ferropool, name) is getattr(cf, name)


def test_broken_thread_pool_is_the_stdlib_class():
    assert ferropool.BrokenThreadPool is cf_thread.BrokenThreadPool
    assert issubclass(ferropool.BrokenThreadPool, ferropool.BrokenExecutor)


def test_constants_have_stdlib_values():
    assert ferropool.FIRST_COMPLETED == "FIRST_COMPLETED"
    assert ferropool.FIRST_EXCEPTION == "FIRST_EXCEPTION"
    assert ferropool.ALL_COMPLETED == "ALL_COMPLETED"


@pytest.mark.parametrize(
    "name",
    ["ThreadPoolExecutor", "Future", "wait", "as_completed", "install", "uninstall"],
)
def test_public_callables_exist(name):
    assert callable(getattr(ferropool, name))


def test_star_import_exports_the_api():
    namespace: dict = {}
    exec("from ferropool import *", namespace)
    for name in SAME_OBJECTS + [
        "BrokenThreadPool",
        "ThreadPoolExecutor",
        "Future",
        "wait",
        "as_completed",
    ]:
        assert namespace[name] is getattr(ferropool, name), name


def test_executor_is_a_stdlib_subclass():
    assert issubclass(ferropool.ThreadPoolExecutor, cf.ThreadPoolExecutor)
    assert issubclass(ferropool.ThreadPoolExecutor, STDLIB_TPE)
    assert issubclass(ferropool.ThreadPoolExecutor, cf.Executor)


def test_future_is_a_stdlib_subclass():
    assert issubclass(ferropool.Future, cf.Future)
    assert isinstance(ferropool.Future(), cf.Future)


def test_submit_returns_a_ferropool_future_that_is_a_stdlib_future(executor):
    fut = executor.submit(pow, 2, 5)
    assert isinstance(fut, ferropool.Future)
    assert isinstance(fut, cf.Future)
    assert fut.result(timeout=SHORT) == 32


def test_executor_instance_is_a_stdlib_executor():
    with ferropool.ThreadPoolExecutor(max_workers=1) as ex:
        assert isinstance(ex, cf.ThreadPoolExecutor)
        assert isinstance(ex, cf.Executor)


def test_future_class_getitem_like_stdlib():
    alias = ferropool.Future[int]
    assert alias.__origin__ is ferropool.Future
    assert alias.__args__ == (int,)


def test_version_is_a_string():
    assert isinstance(ferropool.__version__, str)
    assert re.fullmatch(r"\d+\.\d+\.\d+([.-]?\w+)*", ferropool.__version__)


def test_version_matches_cargo_toml():
    cargo = pathlib.Path(__file__).resolve().parents[1] / "Cargo.toml"
    if not cargo.exists():
        pytest.skip("not running from a source checkout")
    match = re.search(r'^version\s*=\s*"([^"]+)"', cargo.read_text(), re.MULTILINE)
    assert match, "no version in Cargo.toml"
    assert ferropool.__version__ == match.group(1)


# ---------------------------------------------------------------------------
# Signatures (C2)
# ---------------------------------------------------------------------------


def _params(func):
    return [
        (p.name, p.kind, p.default)
        for p in inspect.signature(func).parameters.values()
    ]


@pytest.mark.parametrize("method", ["__init__", "submit", "shutdown"])
def test_signature_matches_stdlib(method):
    assert _params(getattr(ferropool.ThreadPoolExecutor, method)) == _params(
        getattr(STDLIB_TPE, method)
    )


def test_map_signature_extends_stdlib():
    # ferropool may add parameters (3.14's buffersize), but the stdlib's come first,
    # with the same kinds and defaults.
    ours = _params(ferropool.ThreadPoolExecutor.map)
    theirs = _params(STDLIB_TPE.map)
    assert ours[: len(theirs)] == theirs
    for _name, kind, default in ours[len(theirs):]:
        assert kind is inspect.Parameter.KEYWORD_ONLY
        assert default is not inspect.Parameter.empty


def test_submit_fn_is_positional_only():
    params = inspect.signature(ferropool.ThreadPoolExecutor.submit).parameters
    assert params["fn"].kind is inspect.Parameter.POSITIONAL_ONLY


# ---------------------------------------------------------------------------
# Defaults (C2)
# ---------------------------------------------------------------------------


def _expected_default_workers():
    cpu_count = getattr(os, "process_cpu_count", os.cpu_count)
    return min(32, (cpu_count() or 1) + 4)


def test_default_max_workers_attribute_matches_stdlib():
    stdlib = STDLIB_TPE()
    ours = ferropool.ThreadPoolExecutor()
    try:
        assert ours._max_workers == stdlib._max_workers == _expected_default_workers()
    finally:
        ours.shutdown()
        stdlib.shutdown()


def _max_concurrency(ex, n_tasks, hold=0.05):
    lock = threading.Lock()
    state = {"now": 0, "max": 0}

    def task():
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(hold)
        with lock:
            state["now"] -= 1

    futures = [ex.submit(task) for _ in range(n_tasks)]
    for fut in futures:
        fut.result(timeout=SHORT * 4)
    return state["max"]


@pytest.mark.timeout(30)
def test_default_max_workers_by_behaviour():
    expected = _expected_default_workers()
    with ferropool.ThreadPoolExecutor() as ex:
        # Everyone must be able to run at once (a barrier of `expected` parties) ...
        barrier = threading.Barrier(expected, timeout=SHORT)
        futures = [ex.submit(barrier.wait) for _ in range(expected)]
        for fut in futures:
            fut.result(timeout=SHORT * 2)
        # ... and never more than that.
        assert _max_concurrency(ex, 2 * expected + 1, hold=0.1) <= expected


@pytest.mark.timeout(30)
@pytest.mark.parametrize("max_workers", [1, 2, 3])
def test_max_workers_bounds_concurrency(max_workers):
    with ferropool.ThreadPoolExecutor(max_workers=max_workers) as ex:
        seen = _max_concurrency(ex, 4 * max_workers + 2)
    assert seen <= max_workers
    if max_workers > 1:
        assert seen >= 2  # tasks actually ran in parallel


def test_init_keyword_arguments_are_stored_like_stdlib():
    def init(a, b):
        pass

    with ferropool.ThreadPoolExecutor(
        max_workers=3, thread_name_prefix="kw", initializer=init, initargs=(1, 2)
    ) as ex:
        assert ex._max_workers == 3
        assert ex.submit(lambda: threading.current_thread().name).result(
            timeout=SHORT
        ).startswith("kw_")


def test_init_positional_arguments():
    calls = []
    with ferropool.ThreadPoolExecutor(2, "pos", calls.append, ("x",)) as ex:
        name = ex.submit(lambda: threading.current_thread().name).result(timeout=SHORT)
    assert name.startswith("pos_")
    assert calls and set(calls) == {"x"}
