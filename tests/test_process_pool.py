"""ProcessPoolExecutor (SPEC C9): the stdlib's contract, through the public API.

Most tests use the fork start method (fast); the start-method tests and those that
matter with pickling by value also run with spawn and forkserver. Task functions live
at module level, so that a spawned worker can import them.
"""

from __future__ import annotations

import concurrent.futures as cf
import concurrent.futures.process as cf_process
import gc
import multiprocessing as mp
import os
import pickle
import signal
import sys
import threading
import time
import weakref

import pytest

import ferropool
from ferropool import BrokenProcessPool, ProcessPoolExecutor

pytestmark = pytest.mark.timeout(60)

FORK = mp.get_context("fork")
METHODS = ["fork", "spawn", "forkserver"]


# ---------------------------------------------------------------------------
# Tasks (module level: importable by spawned workers)
# ---------------------------------------------------------------------------


def square(x):
    return x * x


def add(a, b=0, *, c=0):
    return a + b + c


def pid_of(_=None):
    return os.getpid()


def sleep_then(seconds, value=None):
    time.sleep(seconds)
    return value


def fail(message):
    raise ValueError(message)


def raise_base_exception():
    raise SystemExit(7)


def exit_now(code):
    os._exit(code)


def kill_self(sig):
    os.kill(os.getpid(), sig)
    time.sleep(10)


def segfault():
    import ctypes
    import faulthandler

    faulthandler.disable()  # no "Fatal Python error" noise in the test output
    ctypes.string_at(0)


def identity(x):
    return x


def make_lock():
    return threading.Lock()


class Payload:
    pass


class UnpicklableError(Exception):
    def __init__(self, message):
        super().__init__(message)
        self.lock = threading.Lock()


def raise_unpicklable():
    raise UnpicklableError("cannot travel")


def _set_global(value):
    global _INITIALIZED
    _INITIALIZED = value


def read_global(_=None):
    return globals().get("_INITIALIZED")


def failing_initializer():
    raise RuntimeError("initializer says no")


def cpu(n):
    total = 0
    for i in range(n):
        total += i * i
    return total


@pytest.fixture
def pool():
    ex = ProcessPoolExecutor(2, mp_context=FORK)
    try:
        yield ex
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


# ---------------------------------------------------------------------------
# Types and the stdlib's contract
# ---------------------------------------------------------------------------


def test_is_a_stdlib_executor_and_hands_out_ferropool_futures(pool):
    assert isinstance(pool, cf.ProcessPoolExecutor)
    assert isinstance(pool, cf.Executor)
    fut = pool.submit(square, 7)
    assert isinstance(fut, ferropool.Future)
    assert isinstance(fut, cf.Future)
    assert fut.result(timeout=10) == 49
    assert ferropool.BrokenProcessPool is cf_process.BrokenProcessPool
    assert "ProcessPoolExecutor" in ferropool.__all__ and "BrokenProcessPool" in ferropool.__all__


def test_submit_passes_args_and_kwargs(pool):
    assert pool.submit(add, 1, 2, c=3).result(timeout=10) == 6
    assert pool.submit(add, a=5).result(timeout=10) == 5
    with pytest.raises(TypeError):
        pool.submit()


def test_default_max_workers_is_the_stdlibs():
    ours = ProcessPoolExecutor(mp_context=FORK)
    theirs = cf.ProcessPoolExecutor(mp_context=FORK)
    try:
        assert ours._max_workers == theirs._max_workers
    finally:
        ours.shutdown()
        theirs.shutdown()


BAD_ARGUMENTS = [
    dict(max_workers=0),
    dict(max_workers=-1),
    dict(initializer=42),
    dict(max_tasks_per_child=0),
    dict(max_tasks_per_child="3"),
    dict(max_tasks_per_child=2, mp_context=mp.get_context("fork")),
]


@pytest.mark.parametrize("kwargs", BAD_ARGUMENTS, ids=lambda kw: ",".join(map(str, kw)))
def test_bad_arguments_raise_what_the_stdlib_raises(kwargs):
    def outcome(cls):
        try:
            ex = cls(**kwargs)
        except Exception as exc:  # noqa: BLE001
            return type(exc), str(exc)
        ex.shutdown()
        return None

    if "max_tasks_per_child" in kwargs and sys.version_info < (3, 11):
        # The stdlib has it from 3.11; ferropool has it everywhere, with 3.11's checks.
        with pytest.raises((TypeError, ValueError)):
            ProcessPoolExecutor(**kwargs)
        return
    expected = outcome(cf.ProcessPoolExecutor)
    assert expected is not None
    assert outcome(ProcessPoolExecutor) == expected


def test_max_tasks_per_child_defaults_to_spawn():
    ex = ProcessPoolExecutor(1, max_tasks_per_child=3)
    try:
        assert ex._mp_context.get_start_method() == "spawn"
    finally:
        ex.shutdown()


def test_submit_after_shutdown_raises_the_stdlibs_error(pool):
    pool.submit(square, 2).result(timeout=10)
    pool.shutdown()
    with pytest.raises(RuntimeError, match="^cannot schedule new futures after shutdown$"):
        pool.submit(square, 3)
    pool.shutdown()  # idempotent


def test_shutdown_without_any_submit_returns_at_once():
    ex = ProcessPoolExecutor(2, mp_context=FORK)
    started = time.monotonic()
    ex.shutdown(wait=True)
    assert time.monotonic() - started < 1
    assert ex._processes == {}


def test_context_manager_waits_for_the_work():
    with ProcessPoolExecutor(2, mp_context=FORK) as ex:
        futures = [ex.submit(sleep_then, 0.05, i) for i in range(6)]
    assert all(f.done() for f in futures)
    assert [f.result() for f in futures] == list(range(6))
    assert ex._processes == {}


def test_shutdown_cancel_futures_cancels_what_has_not_started():
    ex = ProcessPoolExecutor(1, mp_context=FORK)
    running = ex.submit(sleep_then, 0.5, "ran")
    while not running.running():
        time.sleep(0.005)
    queued = [ex.submit(square, i) for i in range(50)]
    ex.shutdown(wait=True, cancel_futures=True)
    assert running.result() == "ran"
    cancelled = [f for f in queued if f.cancelled()]
    assert cancelled, "nothing queued was cancelled"
    assert all(f.done() for f in queued)
    done, not_done = ferropool.wait(queued, timeout=5)
    assert not not_done


def test_cancel_a_queued_future():
    with ProcessPoolExecutor(1, mp_context=FORK) as ex:
        first = ex.submit(sleep_then, 0.3)
        while not first.running():
            time.sleep(0.005)
        later = [ex.submit(square, i) for i in range(5)]
        assert later[-1].cancel()
        assert later[-1].cancelled()
        assert [f.result(timeout=10) for f in later[:-1]] == [0, 1, 4, 9]
    with pytest.raises(cf.CancelledError):
        later[-1].result()


def test_wait_and_as_completed_work_on_its_futures(pool):
    futures = [pool.submit(sleep_then, 0.01 * (5 - i), i) for i in range(5)]
    done, not_done = ferropool.wait(futures, timeout=10)
    assert len(done) == 5 and not not_done
    assert sorted(f.result() for f in ferropool.as_completed(futures)) == list(range(5))
    # The stdlib's functions accept them too.
    done, _ = cf.wait(futures, timeout=10)
    assert done == set(futures)


def test_done_callbacks_run(pool):
    seen = []
    event = threading.Event()
    fut = pool.submit(square, 9)
    fut.add_done_callback(lambda f: (seen.append(f.result()), event.set()))
    assert event.wait(10)
    assert seen == [81]


def test_shutdown_wait_from_a_done_callback_does_not_hang():
    ex = ProcessPoolExecutor(1, mp_context=FORK)
    outcome = []
    event = threading.Event()

    def callback(_):
        try:
            ex.shutdown(wait=True)  # runs on the pool's own thread: it cannot wait
        except RuntimeError as exc:
            outcome.append(str(exc))
        event.set()

    ex.submit(square, 2).add_done_callback(callback)
    assert event.wait(10)
    assert outcome == ["cannot join current thread"]  # what the stdlib says there
    ex.shutdown(wait=True)
    with pytest.raises(RuntimeError):
        ex.submit(square, 1)


def test_an_executor_dropped_without_shutdown_finishes_its_work_and_stops():
    ex = ProcessPoolExecutor(2, mp_context=FORK)
    futures = [ex.submit(sleep_then, 0.05, i) for i in range(8)]
    pids = list(ex._processes)
    ref = weakref.ref(ex)
    del ex
    gc.collect()
    assert ref() is None
    assert [f.result(timeout=20) for f in futures] == list(range(8))
    deadline = time.monotonic() + 10
    while any(os.path.exists(f"/proc/{pid}") and _running(pid) for pid in pids):
        assert time.monotonic() < deadline, "workers of a dropped executor kept running"
        time.sleep(0.02)


def _running(pid):
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_pool_whose_threads_cannot_start_fails_cleanly(monkeypatch):
    def no_threads(name, target):
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(ferropool._process, "_start_thread", no_threads)
    ex = ProcessPoolExecutor(2, mp_context=FORK)
    with pytest.raises(RuntimeError, match="can't start new thread"):
        ex.submit(square, 3)
    assert ex._broken
    with pytest.raises(BrokenProcessPool):
        ex.submit(square, 3)
    assert ex._processes == {}  # the workers it had started are gone
    started = time.monotonic()
    ex.shutdown(wait=True)
    assert time.monotonic() - started < 5


def test_many_threads_submitting_at_once(pool):
    results = {}

    def client(base):
        futures = [pool.submit(square, base + i) for i in range(200)]
        results[base] = [f.result(timeout=30) for f in futures]

    threads = [threading.Thread(target=client, args=(k * 1000,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for base, values in results.items():
        assert values == [(base + i) ** 2 for i in range(200)]
    assert len(results) == 4


def test_large_arguments_and_results_travel_intact(pool):
    blob = os.urandom(8 << 20)
    assert pool.submit(identity, blob).result(timeout=30) == blob
    assert pool.submit(len, blob).result(timeout=30) == len(blob)


def test_arguments_are_not_kept_by_the_parent(pool):
    payload = Payload()
    ref = weakref.ref(payload)
    gate = pool.submit(sleep_then, 0.2)
    fut = pool.submit(identity, payload)
    del payload
    gc.collect()
    # Pickled at submit: the parent holds bytes, not the object, from then on.
    assert ref() is None
    assert isinstance(fut.result(timeout=10), Payload)
    gate.result(timeout=10)


def _open_fds():
    return len(os.listdir(f"/proc/{os.getpid()}/fd"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts /proc/self/fd")
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_pools_leave_no_descriptor_or_process_behind(method):
    ctx = mp.get_context(method)
    with ProcessPoolExecutor(2, mp_context=ctx) as ex:  # warm up: imports, tracker...
        ex.submit(square, 1).result(timeout=30)
    gc.collect()
    before = _open_fds()
    children = set(mp.active_children())
    for i in range(4 if method == "spawn" else 12):
        ex = ProcessPoolExecutor(2, mp_context=ctx)
        assert list(ex.map(square, range(10))) == [x * x for x in range(10)]
        if i % 2:
            ex.shutdown(wait=True)
        else:
            ex.shutdown(wait=True, cancel_futures=True)
        assert ex._processes == {}
    del ex
    gc.collect()
    assert _open_fds() <= before
    assert set(mp.active_children()) <= children


def test_threads_submitting_cancelling_and_shutting_down_at_once():
    ex = ProcessPoolExecutor(2, mp_context=FORK)
    futures = []
    lock = threading.Lock()
    stop = threading.Event()

    def submitter(seed):
        import random

        rng = random.Random(seed)
        while not stop.is_set():
            try:
                kind = rng.random()
                if kind < 0.1:
                    fut = ex.submit(fail, "x")
                elif kind < 0.2:
                    fut = ex.submit(sleep_then, 0.001, seed)
                else:
                    fut = ex.submit(square, seed)
            except RuntimeError:
                return  # shut down
            with lock:
                futures.append((kind, seed, fut))
            if rng.random() < 0.2:
                fut.cancel()

    threads = [threading.Thread(target=submitter, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    ex.shutdown(wait=True, cancel_futures=True)
    stop.set()
    for t in threads:
        t.join(10)
    assert futures
    for kind, seed, fut in futures:
        assert fut.done(), fut
        if fut.cancelled():
            continue
        if kind < 0.1:
            assert isinstance(fut.exception(), ValueError)
        elif kind < 0.2:
            assert fut.result() == seed
        else:
            assert fut.result() == seed * seed
    done, not_done = ferropool.wait([f for _, _, f in futures], timeout=5)
    assert not not_done


# ---------------------------------------------------------------------------
# map
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("chunksize", [1, 3, 1000])
def test_map_yields_results_in_input_order(pool, chunksize):
    assert list(pool.map(square, range(100), chunksize=chunksize)) == [x * x for x in range(100)]
    assert list(pool.map(add, range(10), range(10, 25), chunksize=chunksize)) == [
        a + b for a, b in zip(range(10), range(10, 20))
    ]
    assert list(pool.map(square, [], chunksize=chunksize)) == []


def test_map_rejects_a_chunksize_below_one_like_the_stdlib(pool):
    with cf.ProcessPoolExecutor(1, mp_context=FORK) as stdlib:
        with pytest.raises(ValueError) as expected:
            stdlib.map(square, [1], chunksize=0)
    with pytest.raises(ValueError) as actual:
        pool.map(square, [1], chunksize=0)
    assert str(actual.value) == str(expected.value)


def test_map_sends_chunks(pool):
    pids = list(pool.map(pid_of, range(40), chunksize=20))
    # One chunk runs in one worker, in one go.
    assert len(set(pids[:20])) == 1 and len(set(pids[20:])) == 1


def test_map_raises_an_items_exception_when_it_is_reached(pool):
    results = pool.map(square, [1, 2, "x", 4], chunksize=1)
    assert next(results) == 1
    assert next(results) == 4
    with pytest.raises(TypeError):
        next(results)


def test_map_times_out_counting_from_the_call(pool):
    results = pool.map(sleep_then, [1, 1], timeout=0.3)
    with pytest.raises(cf.TimeoutError):
        list(results)


def test_map_with_buffersize_is_lazy(pool):
    consumed = []

    def numbers():
        for i in range(20):
            consumed.append(i)
            yield i

    results = pool.map(square, numbers(), buffersize=2, chunksize=1)
    assert len(consumed) == 2
    assert next(results) == 0
    assert list(results) == [i * i for i in range(1, 20)]
    with pytest.raises(ValueError, match="buffersize must be None or > 0"):
        pool.map(square, [1], buffersize=0)
    with pytest.raises(TypeError, match="buffersize must be an integer or None"):
        pool.map(square, [1], buffersize=1.5)


def test_closing_the_map_iterator_cancels_what_has_not_started():
    with ProcessPoolExecutor(1, mp_context=FORK) as ex:
        results = ex.map(sleep_then, [0.2] + [0.01] * 50)
        next(results)
        results.close()
        started = time.monotonic()
    assert time.monotonic() - started < 5


# ---------------------------------------------------------------------------
# Exceptions, pickling
# ---------------------------------------------------------------------------


def test_a_task_exception_carries_the_remote_traceback_as_cause(pool):
    fut = pool.submit(fail, "bad input")
    exc = fut.exception(timeout=10)
    assert isinstance(exc, ValueError) and str(exc) == "bad input"
    cause = exc.__cause__
    assert isinstance(cause, cf_process._RemoteTraceback)
    assert "in fail" in str(cause) and 'raise ValueError(message)' in str(cause)
    with pytest.raises(ValueError, match="bad input"):
        fut.result()


def test_a_base_exception_is_stored_and_the_worker_survives():
    with ProcessPoolExecutor(1, mp_context=FORK) as ex:
        pid = ex.submit(pid_of).result(timeout=10)
        exc = ex.submit(raise_base_exception).exception(timeout=10)
        assert isinstance(exc, SystemExit) and exc.code == 7
        assert ex.submit(pid_of).result(timeout=10) == pid


def test_an_unpicklable_argument_fails_only_its_future(pool):
    bad = pool.submit(identity, threading.Lock())
    good = pool.submit(square, 5)
    exc = bad.exception(timeout=10)
    assert isinstance(exc, (TypeError, pickle.PicklingError))
    assert isinstance(exc.__cause__, cf_process._RemoteTraceback)
    assert good.result(timeout=10) == 25
    assert pool.submit(square, 6).result(timeout=10) == 36


def test_an_unpicklable_result_fails_only_its_future(pool):
    bad = pool.submit(make_lock)
    exc = bad.exception(timeout=10)
    assert isinstance(exc, (TypeError, pickle.PicklingError))
    assert "lock" in str(exc)
    assert pool.submit(square, 4).result(timeout=10) == 16


def test_an_exception_that_does_not_pickle_still_comes_back(pool):
    exc = pool.submit(raise_unpicklable).exception(timeout=10)
    assert isinstance(exc, Exception)
    assert "UnpicklableError" in str(exc.__cause__) and "cannot travel" in str(exc.__cause__)
    assert pool.submit(square, 3).result(timeout=10) == 9


def test_a_function_the_worker_cannot_find_fails_only_its_future(pool):
    # Pickled by reference, then the reference breaks: the worker's unpickling fails.
    pool.submit(square, 1).result(timeout=10)  # the workers exist before the module
    module = type(sys)("ferropool_test_vanishing")
    exec("def f():\n    return 1\n", module.__dict__)
    sys.modules[module.__name__] = module
    try:
        fut = pool.submit(module.f)
    finally:
        del sys.modules[module.__name__]
    assert isinstance(fut.exception(timeout=10), (ImportError, ModuleNotFoundError))
    assert pool.submit(square, 2).result(timeout=10) == 4


@pytest.mark.skipif(not ferropool._process._cloudpickle(), reason="cloudpickle not installed")
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_lambdas_and_closures_travel_with_cloudpickle(method):
    offset = 10

    def closure(x):
        return x + offset

    with ProcessPoolExecutor(1, mp_context=mp.get_context(method)) as ex:
        assert ex.submit(lambda x: x * 3, 4).result(timeout=30) == 12
        assert ex.submit(closure, 1).result(timeout=30) == 11
        assert list(ex.map(lambda x: -x, range(5), chunksize=2)) == [0, -1, -2, -3, -4]


def test_without_cloudpickle_a_lambda_fails_its_own_future(pool, monkeypatch):
    monkeypatch.setattr(ferropool._process, "_CLOUDPICKLE", False)
    fut = pool.submit(lambda: 1)
    exc = fut.exception(timeout=10)
    assert isinstance(exc, (pickle.PicklingError, AttributeError, TypeError)), exc
    assert "lambda" in str(exc)
    assert isinstance(exc.__cause__, cf_process._RemoteTraceback)
    assert pool.submit(square, 3).result(timeout=10) == 9


# ---------------------------------------------------------------------------
# Start methods
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_every_start_method_is_honoured(method):
    ctx = mp.get_context(method)
    with ProcessPoolExecutor(2, mp_context=ctx) as ex:
        assert ex.submit(square, 3).result(timeout=30) == 9
        assert list(ex.map(square, range(20), chunksize=4)) == [x * x for x in range(20)]
        processes = list(ex._processes.values())
        assert processes
        assert all(type(p) is type(ctx.Process()) for p in processes)
        pids = set(ex.map(pid_of, range(8)))
        assert os.getpid() not in pids


# ---------------------------------------------------------------------------
# Initializer, max_tasks_per_child
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_the_initializer_runs_in_every_worker(method):
    with ProcessPoolExecutor(
        2, mp_context=mp.get_context(method), initializer=_set_global, initargs=("ready",)
    ) as ex:
        assert set(ex.map(read_global, range(10))) == {"ready"}


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_failing_initializer_breaks_the_pool(method):
    ex = ProcessPoolExecutor(2, mp_context=mp.get_context(method), initializer=failing_initializer)
    try:
        futures = [ex.submit(square, 0)]
        try:
            futures += [ex.submit(square, i) for i in range(3)]
        except BrokenProcessPool:
            pass  # the pool may break before these are in, as with the stdlib
        for fut in futures:
            exc = fut.exception(timeout=30)
            assert isinstance(exc, BrokenProcessPool)
        assert "initializer" in str(exc)
        assert isinstance(exc.__cause__, RuntimeError)
        assert "initializer says no" in str(exc.__cause__)
        assert ex._broken
        with pytest.raises(BrokenProcessPool):
            ex.submit(square, 1)
    finally:
        ex.shutdown(wait=True)


def test_max_tasks_per_child_replaces_workers():
    with ProcessPoolExecutor(1, max_tasks_per_child=2) as ex:
        pids = [ex.submit(pid_of).result(timeout=30) for _ in range(6)]
        assert len(set(pids)) == 3
        assert pids[0] == pids[1] and pids[2] == pids[3] and pids[4] == pids[5]
        # Batched submissions respect the quota too.
        pids = [f.result(timeout=30) for f in [ex.submit(pid_of) for _ in range(6)]]
        assert all(pids.count(pid) <= 2 for pid in pids)
        assert list(ex.map(square, range(7))) == [x * x for x in range(7)]


# ---------------------------------------------------------------------------
# Worker death
# ---------------------------------------------------------------------------


DEATHS = {
    "os._exit(3)": (exit_now, (3,), "exited with code 3"),
    "SIGKILL": (kill_self, (signal.SIGKILL,), "killed by signal 9 (SIGKILL)"),
    "SIGTERM": (kill_self, (signal.SIGTERM,), "killed by signal 15 (SIGTERM)"),
    "segfault": (segfault, (), "(SIGSEGV)"),
}


@pytest.mark.parametrize("death", list(DEATHS))
def test_a_worker_death_breaks_the_pool_and_names_the_cause(death):
    fn, args, words = DEATHS[death]
    ex = ProcessPoolExecutor(2, mp_context=FORK)
    try:
        assert ex.submit(square, 2).result(timeout=10) == 4
        # Submitted together: the pool breaks after they are all in.
        before = [ex.submit(sleep_then, 0.2, i) for i in range(3)]
        doomed = ex.submit(fn, *args)
        waiting = before + [ex.submit(sleep_then, 0.2, i) for i in range(3)]
        exc = doomed.exception(timeout=20)
        assert isinstance(exc, BrokenProcessPool), exc
        assert words in str(exc)
        assert "terminated abruptly" in str(exc)
        for fut in waiting:
            # Finished before the death or failed with it: never left hanging.
            assert fut.done() or fut.exception(timeout=20) is not None
            if fut.exception(timeout=20) is not None:
                assert isinstance(fut.exception(), BrokenProcessPool)
        with pytest.raises(BrokenProcessPool, match="process pool is not usable anymore"):
            ex.submit(square, 1)
    finally:
        ex.shutdown(wait=True)
    assert ex._processes == {}


def test_a_worker_killed_from_outside_breaks_the_pool():
    ex = ProcessPoolExecutor(1, mp_context=FORK)
    try:
        pid = ex.submit(pid_of).result(timeout=10)
        fut = ex.submit(sleep_then, 30)
        while not fut.running():
            time.sleep(0.005)
        os.kill(pid, signal.SIGKILL)
        exc = fut.exception(timeout=20)
        assert isinstance(exc, BrokenProcessPool)
        assert f"worker process {pid} was killed by signal 9" in str(exc)
    finally:
        ex.shutdown(wait=True)


# ---------------------------------------------------------------------------
# install()
# ---------------------------------------------------------------------------


def test_install_swaps_the_process_pool_too():
    original = cf.ProcessPoolExecutor
    ferropool.install()
    try:
        assert cf.ProcessPoolExecutor is ProcessPoolExecutor
        with cf.ProcessPoolExecutor(1, mp_context=FORK) as ex:
            assert isinstance(ex, ProcessPoolExecutor)
            assert ex.submit(square, 5).result(timeout=10) == 25
    finally:
        ferropool.uninstall()
    assert cf.ProcessPoolExecutor is original
