"""ferropool.dask.DaskExecutor against a real dask.distributed cluster.

One `LocalCluster` for the module: a scheduler in this process and two worker processes
of one thread each, on loopback, started by the fixture and closed at the end. No mocks.
Skipped where `distributed` is not installed: it supports CPython >= 3.10 (the [test]
extra installs it there).

The task functions live at module level: the workers are spawned with this process's
sys.path, so they import them from this file.
"""

from __future__ import annotations

import concurrent.futures as cf
import copyreg
import importlib.util
import itertools
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures.process import _RemoteTraceback

import pytest

distributed = pytest.importorskip(
    "distributed", reason="needs dask.distributed (on CPython >= 3.10: pip install distributed)"
)


def _undo_tblib_pickling():
    """Importing distributed (and a task's error passing through its scheduler) registers
    tblib's reducer for exception classes in `copyreg.dispatch_table`, process-wide,
    which changes how exceptions pickle in the rest of the suite (with tblib 3.2.2, a
    SystemExit sent back by a process pool loses its code). The Dask tests do not need
    it in this process (tracebacks from the workers unpickle without it): removed."""
    for cls, reducer in list(copyreg.dispatch_table.items()):
        if getattr(reducer, "__module__", "").startswith("tblib"):
            del copyreg.dispatch_table[cls]


_undo_tblib_pickling()

import ferropool  # noqa: E402
from ferropool.dask import DaskExecutor  # noqa: E402

from conftest import child_env  # noqa: E402

# Cluster start, and a worker's restart after it is killed, take seconds on a busy machine.
pytestmark = pytest.mark.timeout(180)

WAIT = 60  # generous bound for "this completes"


# --- task functions (run on the workers) ------------------------------------------------------


def square(x):
    return x * x


def add(x, y=0, *, pure=None, key=None, workers=None):
    # Keyword arguments named like Client.submit's options reach the function.
    return (x + y, pure, key, workers)


def fail_on(x, bad):
    if x == bad:
        raise ValueError(f"bad item {x}")
    return x


def task_key(x):
    """(x, the key of the Dask task that ran this call)."""
    return x, distributed.get_worker().get_current_task()


def sleep_and_mark(seconds, path):
    """Sleeps, then creates `path` (a trace that the call ran to its end)."""
    time.sleep(seconds)
    with open(path, "w"):
        pass
    return path


def slow_square(x):
    time.sleep(0.05)
    return x * x


def die_on(x, bad):
    if x == bad:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


# --- the cluster ---------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def _no_tblib_pickling_after_this_module():
    yield
    _undo_tblib_pickling()


@pytest.fixture(scope="module")
def cluster():
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        scheduler_kwargs={
            # A task is tried on at most 2 workers that die under it (Dask's default is
            # 4), to keep the killed-worker tests short.
            "allowed_failures": 1,
            # Without a dashboard the scheduler still serves /health and /metrics, on
            # port 8787 unless told otherwise; another cluster on this machine (another
            # test run, a benchmark) may hold that port.
            "dashboard_address": "127.0.0.1:0",
        },
    )
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def client(cluster):
    client = distributed.Client(cluster, set_as_default=False)
    try:
        client.wait_for_workers(2, timeout=WAIT)
        yield client
    finally:
        client.close()


@pytest.fixture
def executor(client):
    # Every test starts with both workers up (a killed one is restarted by its nanny).
    client.wait_for_workers(2, timeout=WAIT)
    executor = DaskExecutor(client)
    try:
        yield executor
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def scheduler_task_count(client):
    return client.run_on_scheduler(_count_tasks)


def _count_tasks(dask_scheduler=None):
    return len(dask_scheduler.tasks)


def eventually(predicate, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# --- optional dependency -------------------------------------------------------------------------


def test_import_ferropool_does_not_import_dask():
    code = (
        "import sys, ferropool\n"
        "ferropool.ThreadPoolExecutor(1).submit(int).result()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=child_env(), timeout=WAIT
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_missing_distributed_raises_import_error_naming_the_extra():
    code = (
        "import sys\n"
        "sys.modules['distributed'] = None  # as if it were not installed\n"
        "try:\n"
        "    import ferropool.dask\n"
        "except ImportError as exc:\n"
        "    print(type(exc).__name__, exc.name, '|', exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=child_env(), timeout=WAIT
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ImportError distributed |"), out.stdout
    assert 'pip install "ferropool[dask]"' in out.stdout


# --- construction --------------------------------------------------------------------------------


def test_is_an_executor_and_rejects_unknown_options(client):
    executor = DaskExecutor(client, retries=1, priority=2)
    assert isinstance(executor, cf.Executor)
    assert executor.client is client
    executor.shutdown()
    with pytest.raises(TypeError, match=r"unsupported arguments to DaskExecutor: \['bogus'\]"):
        DaskExecutor(client, bogus=1)


def test_from_an_address_owns_its_client(cluster, client):
    client.wait_for_workers(2, timeout=WAIT)
    with DaskExecutor(cluster.scheduler_address) as executor:
        assert executor.client is not client
        assert executor.submit(square, 7).result(timeout=WAIT) == 49
    assert executor.client.status == "closed"
    assert client.status == "running"  # the one given to other executors stays open


# --- submit --------------------------------------------------------------------------------------


def test_submit_returns_concurrent_futures(executor):
    future = executor.submit(square, 12)
    assert isinstance(future, cf.Future)
    assert isinstance(future, ferropool.Future)
    assert future.result(timeout=WAIT) == 144
    assert future.done() and not future.cancelled()
    assert future.exception() is None


def test_submit_passes_keyword_arguments_to_the_function(executor):
    future = executor.submit(add, 1, y=2, pure="p", key="k", workers="w")
    assert future.result(timeout=WAIT) == (3, "p", "k", "w")


def test_submit_exception(executor):
    future = executor.submit(fail_on, 3, bad=3)
    with pytest.raises(ValueError, match="bad item 3"):
        future.result(timeout=WAIT)
    assert isinstance(future.exception(), ValueError)


def test_submit_runs_every_call(executor):
    # Client.submit's default, pure=True, would run two identical calls once.
    values = [executor.submit(random.random).result(timeout=WAIT) for _ in range(2)]
    assert values[0] != values[1]


def test_cancel_a_pending_future_cancels_its_task(executor, client, tmp_path):
    blockers = [executor.submit(time.sleep, 1.0) for _ in range(2)]  # both workers busy
    marker = tmp_path / "ran"
    future = executor.submit(sleep_and_mark, 0, str(marker))
    assert future.cancel()
    assert future.cancelled()
    done, not_done = ferropool.wait([future], timeout=5)
    assert done == {future} and not not_done
    with pytest.raises(cf.CancelledError):
        future.result()
    ferropool.wait(blockers, timeout=WAIT)
    time.sleep(0.5)
    assert not marker.exists()


def test_submit_after_shutdown_raises(client):
    executor = DaskExecutor(client)
    executor.shutdown()
    with pytest.raises(RuntimeError, match="^cannot schedule new futures after shutdown$"):
        executor.submit(square, 1)
    with pytest.raises(RuntimeError, match="^cannot schedule new futures after shutdown$"):
        executor.map(square, [1])
    executor.shutdown()  # again: no error


# --- map -----------------------------------------------------------------------------------------


def test_map_results_in_order(executor):
    assert list(executor.map(square, range(500))) == [x * x for x in range(500)]
    assert list(executor.map(pow, [2, 3, 4], [5, 6])) == [32, 729]
    assert list(executor.map(square, [])) == []


def test_map_chunksize_is_honoured(executor):
    results = list(executor.map(task_key, range(50), chunksize=7))
    assert [x for x, _ in results] == list(range(50))
    keys = [key for _, key in results]
    sizes = [len(list(group)) for _, group in itertools.groupby(keys)]
    assert sizes == [7] * 7 + [1]
    assert len(set(keys)) == 8


def test_map_chunks_by_default_shrinking(executor):
    results = list(executor.map(task_key, range(200)))
    assert [x for x, _ in results] == list(range(200))
    sizes = [len(list(group)) for _, group in itertools.groupby(key for _, key in results)]
    assert len(set(key for _, key in results)) == len(sizes)  # each chunk is one run
    assert 2 < len(sizes) < 200
    assert sizes == sorted(sizes, reverse=True)
    assert sizes[-1] == 1
    # chunksize=1: one task per item.
    results = list(executor.map(task_key, range(10), chunksize=1))
    assert len({key for _, key in results}) == 10


def test_map_exception_at_its_item(executor):
    iterator = executor.map(fail_on, range(20), [7] * 20, chunksize=5)
    got = []
    with pytest.raises(ValueError, match="bad item 7") as info:
        for value in iterator:
            got.append(value)
    assert got == list(range(7))  # the items before it, from its own chunk too
    assert isinstance(info.value.__cause__, _RemoteTraceback)
    assert "fail_on" in str(info.value.__cause__)
    assert list(iterator) == []  # a generator that raised is finished


def test_map_unpicklable_exception_comes_back(executor):
    iterator = executor.map(_raise_unpicklable, [0, 1, 2], chunksize=3)
    assert next(iterator) == 0
    with pytest.raises(RuntimeError, match="unpicklable"):
        next(iterator)


class _Unpicklable(Exception):
    def __reduce__(self):
        raise TypeError("no pickling")


def _raise_unpicklable(x):
    if x == 1:
        raise _Unpicklable(x)
    return x


def test_map_bad_arguments(executor):
    with pytest.raises(ValueError, match="chunksize must be >= 1"):
        executor.map(square, [1], chunksize=0)
    with pytest.raises(ValueError, match="buffersize must be None or > 0"):
        executor.map(square, [1], buffersize=0)
    with pytest.raises(TypeError, match="buffersize must be an integer or None"):
        executor.map(square, [1], buffersize=2.0)


def test_map_buffersize_bounds_what_is_taken(executor):
    taken = []

    def numbers():
        for i in itertools.count():
            taken.append(i)
            yield i

    iterator = executor.map(square, numbers(), buffersize=2, chunksize=3)
    assert len(taken) == 6  # two chunks of three in flight
    assert [next(iterator) for _ in range(4)] == [0, 1, 4, 9]
    # Two chunks have been collected, so two more were submitted.
    assert len(taken) == 12
    iterator.close()
    # An endless input with adaptive chunks.
    iterator = executor.map(square, itertools.count(), buffersize=4)
    assert list(itertools.islice(iterator, 300)) == [x * x for x in range(300)]
    iterator.close()


def test_map_timeout_counts_from_the_call(executor):
    start = time.monotonic()
    iterator = executor.map(time.sleep, [0, 4], chunksize=1, timeout=1)
    assert next(iterator) is None
    with pytest.raises(cf.TimeoutError):
        next(iterator)
    assert time.monotonic() - start < 3.5  # not the 4 s of the second item


def test_closing_the_map_cancels_what_has_not_run(executor, client, tmp_path):
    paths = [str(tmp_path / f"item{i}") for i in range(40)]
    iterator = executor.map(sleep_and_mark, [0.2] * 40, paths, chunksize=1)
    assert next(iterator) == paths[0]
    iterator.close()
    assert eventually(lambda: scheduler_task_count(client) == 0)
    time.sleep(0.5)
    ran = sum(os.path.exists(p) for p in paths)
    assert ran < 10, ran  # 2 workers; at most a few ran


# --- shutdown ------------------------------------------------------------------------------------


def test_shutdown_waits(client):
    executor = DaskExecutor(client)
    futures = [executor.submit(slow_square, i) for i in range(6)]
    executor.shutdown(wait=True)
    assert all(f.done() for f in futures)
    assert [f.result() for f in futures] == [i * i for i in range(6)]


def test_shutdown_cancel_futures(client, tmp_path):
    client.wait_for_workers(2, timeout=WAIT)
    executor = DaskExecutor(client)
    paths = [str(tmp_path / f"item{i}") for i in range(20)]
    futures = [executor.submit(sleep_and_mark, 0.3, p) for p in paths]
    executor.shutdown(wait=True, cancel_futures=True)
    assert all(f.done() for f in futures)
    assert sum(f.cancelled() for f in futures) >= 15
    assert eventually(lambda: scheduler_task_count(client) == 0)
    time.sleep(0.6)
    assert sum(os.path.exists(p) for p in paths) < 5


def test_shutdown_without_wait_leaves_tasks_running(cluster, client):
    client.wait_for_workers(2, timeout=WAIT)
    executor = DaskExecutor(cluster.scheduler_address)
    futures = [executor.submit(slow_square, i) for i in range(4)]
    executor.shutdown(wait=False)
    with pytest.raises(RuntimeError):
        executor.submit(square, 1)
    assert [f.result(timeout=WAIT) for f in futures] == [0, 1, 4, 9]
    # Its own Client closes once they have all reported back.
    assert eventually(lambda: executor.client.status == "closed")


# --- wait and as_completed over a mix ---------------------------------------------------------


def test_wait_and_as_completed_over_a_mix_of_futures(executor, client):
    threads = ferropool.ThreadPoolExecutor(2)
    client_executor = client.get_executor(pure=False)
    try:
        ours = [threads.submit(square, i) for i in range(3)]
        dask = [executor.submit(square, i) for i in range(3, 6)]
        theirs = [client_executor.submit(square, i) for i in range(6, 9)]
        manual = ferropool.Future()
        every = ours + dask + theirs
        done, not_done = ferropool.wait(every, timeout=WAIT)
        assert done == set(every) and not not_done
        assert sorted(f.result() for f in ferropool.as_completed(every, timeout=WAIT)) == [
            i * i for i in range(9)
        ]
        # FIRST_COMPLETED: the finished ones, not the one that never finishes.
        slow = executor.submit(time.sleep, 2)
        done, not_done = ferropool.wait(
            [slow, manual, *ours, *dask], timeout=WAIT, return_when=cf.FIRST_COMPLETED
        )
        assert done == set(ours + dask) and not_done == {slow, manual}
        # as_completed yields a Dask future as it completes, beside a thread pool's.
        quick = executor.submit(square, 11)
        later = threads.submit(time.sleep, 0.5)
        order = list(ferropool.as_completed([later, quick], timeout=WAIT))
        assert set(order) == {later, quick}
        slow.cancel()
        with pytest.raises(cf.TimeoutError, match=r"1 \(of 1\) futures unfinished"):
            list(ferropool.as_completed([manual], timeout=0.2))
    finally:
        threads.shutdown()
        client_executor.shutdown(wait=False)


# --- a worker dies -------------------------------------------------------------------------------


def test_worker_killed_in_the_middle_of_a_map(executor, client):
    """Dask runs the dead worker's tasks again on the other worker (and on the one its
    nanny starts): the map completes, in order, with every result."""
    iterator = executor.map(slow_square, range(80), chunksize=4)
    assert next(iterator) == 0
    pids = client.run(os.getpid)  # {worker address: pid}
    assert len(pids) == 2
    os.kill(next(iter(pids.values())), signal.SIGKILL)
    assert list(iterator) == [x * x for x in range(1, 80)]
    client.wait_for_workers(2, timeout=WAIT)


def test_item_that_kills_its_worker_fails_with_killed_worker(executor, client):
    """After allowed_failures + 1 (here 2) dead workers, Dask gives up on the chunk: its
    KilledWorker is raised at the first item of that chunk not yet yielded; the chunks
    before it are yielded. (buffersize=1: one chunk on the cluster at a time, as Dask
    counts every task that was on a dying worker, queued ones too, against its limit.)"""
    iterator = executor.map(die_on, range(8), [5] * 8, chunksize=2, buffersize=1)
    got = []
    with pytest.raises(distributed.KilledWorker):
        for value in iterator:
            got.append(value)
    assert got == [0, 1, 2, 3]
    client.wait_for_workers(2, timeout=WAIT)
    # The executor and the cluster go on working.
    assert list(executor.map(square, range(5))) == [0, 1, 4, 9, 16]


def test_concurrent_submits_from_threads(executor):
    results = []

    def submit_some(base):
        results.extend(executor.submit(square, base + i).result(timeout=WAIT) for i in range(10))

    threads = [threading.Thread(target=submit_some, args=(b,)) for b in (0, 100, 200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert sorted(results) == sorted(x * x for b in (0, 100, 200) for x in range(b, b + 10))


# --- the example, against this cluster --------------------------------------------------------


@pytest.mark.skipif(importlib.util.find_spec("PIL") is None, reason="Pillow is not installed")
def test_example_on_a_running_scheduler(cluster, client, tmp_path):
    import test_examples_anywhere as example

    client.wait_for_workers(2, timeout=WAIT)
    out, folder = example.run_example(
        tmp_path, "--executor", "dask", "--scheduler", cluster.scheduler_address
    )
    example.check_output(out, folder, "DaskExecutor", "dask", r"[12] other processes")


# --- the benchmark rows ---------------------------------------------------------------------------


@pytest.mark.timeout(240)
def test_bench_dask_rows(tmp_path):
    """`python -m ferropool bench --only DASK` starts its own cluster and reports both
    rows (their numbers are the benchmark's business, not the test's)."""
    import json

    proc = subprocess.run(
        [sys.executable, "-m", "ferropool", "bench", "--quick", "--only", "DASK", "--repeat", "1",
         "--json", "out.json"],
        capture_output=True, text=True, timeout=220, cwd=tmp_path, env=child_env(),
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    rows = {row["key"]: row for row in json.loads((tmp_path / "out.json").read_text())["rows"]}
    assert sorted(rows) == ["DASK.cpu", "DASK.tiny"]
    assert rows["DASK.tiny"]["target"] == ">= 20x" and rows["DASK.tiny"]["ratio"] > 0
    assert rows["DASK.cpu"]["target"] == ">= 1.80x" and rows["DASK.cpu"]["ratio"] > 0
    assert set(rows["DASK.cpu"]["samples"]) == {"sequential", "concurrent.futures", "ferropool"}
    assert re.search(r"^DASK\.tiny +map\(square, range\(500\)\)", proc.stdout, re.M), proc.stdout


def test_map_input_that_raises_submits_nothing(executor, client):
    def numbers():
        yield 1
        yield 2
        raise ZeroDivisionError("input")

    with pytest.raises(ZeroDivisionError, match="input"):
        executor.map(square, numbers())
    assert eventually(lambda: scheduler_task_count(client) == 0)


def test_done_callbacks_may_wait_for_other_tasks(executor):
    """Done callbacks run on a thread of ferropool's, not on the Client's event loop: one
    that blocks on another task's result does not stall the tasks it waits for."""
    got = []
    first = executor.submit(square, 2)
    first.add_done_callback(lambda f: got.append(executor.submit(square, 3).result(timeout=WAIT)))
    assert first.result(timeout=WAIT) == 4
    assert eventually(lambda: got == [9], timeout=WAIT)
