"""The process pool's scheduling, against the stdlib in the same test: a task is running
only once a worker took it, so it does not wait behind a long task while a worker is
free, and cancel(), shutdown(cancel_futures=True), a closed or timed-out map, Ctrl-C
and a crash treat the tasks that have not started as pending. Also: the memory kept for
queued calls, a clean stderr when pools are dropped, and exceptions that do not
unpickle from their args.

Comparisons are counts or orderings, never timings, apart from generous bounds.
"""

from __future__ import annotations

import concurrent.futures as cf
import concurrent.futures.process as cf_process
import multiprocessing as mp
import os
import signal
import sys
import threading
import time

import pytest

import ferropool
from conftest import run_python, spawn_python

pytestmark = pytest.mark.timeout(90)

FORK = mp.get_context("fork")
IMPLEMENTATIONS = [cf, ferropool]


def noop(x=None):
    return x


def crash():
    os._exit(1)


def mark_then_sleep(directory, index, seconds):
    """Leaves a file behind to say it ran, then sleeps."""
    with open(os.path.join(directory, str(index)), "w"):
        pass
    time.sleep(seconds)
    return index


class ErrorWithArgs(Exception):
    """An exception whose __init__ does not take the args it stores."""

    def __init__(self, code, reason):
        super().__init__(f"code {code}: {reason}")
        self.code = code


def raise_error_with_args(code, reason):
    raise ErrorWithArgs(code, reason)


def warm_up(ex, workers):
    """Tiny tasks first: the pool learns that tasks are tiny and batches them."""
    for _ in range(10):
        ex.submit(noop).result()
    list(ex.map(noop, range(300)))


def ran(directory):
    return len(os.listdir(directory))


# ---------------------------------------------------------------------------
# Head-of-line blocking
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("mod", IMPLEMENTATIONS, ids=lambda m: m.__name__)
def test_short_tasks_do_not_wait_behind_a_long_one(mod):
    # One 3 s task, then 20 x 50 ms, on 2 workers: the short ones all run on the
    # free worker (about 1 s) while the long one still runs.
    with mod.ProcessPoolExecutor(2, mp_context=FORK) as ex:
        warm_up(ex, 2)
        long = ex.submit(time.sleep, 3)
        shorts = [ex.submit(time.sleep, 0.05) for _ in range(20)]
        cf.wait(shorts, timeout=30)
        assert all(f.done() for f in shorts)
        assert not long.done(), "a short task waited for the long one"


# ---------------------------------------------------------------------------
# Cancelling what has not started
# ---------------------------------------------------------------------------


def cancel_after_fast_items(mod):
    ex = mod.ProcessPoolExecutor(1, mp_context=FORK)
    ex.submit(noop).result()
    items = ex.map(noop, range(2000))
    slow = [ex.submit(time.sleep, 0.02) for _ in range(300)]
    list(items)
    cancelled = sum(f.cancel() for f in slow)
    ex.shutdown()
    return cancelled


def test_cancel_after_a_stream_of_fast_items_matches_the_stdlib():
    stdlib = cancel_after_fast_items(cf)
    ours = cancel_after_fast_items(ferropool)
    print(f"cancelled of 300: stdlib {stdlib}, ferropool {ours}")
    # At most a window of tiny tasks' worth is committed to the worker at once (the
    # stdlib commits max_workers + 1); before the fix: 0 to 52 of 300.
    assert ours >= 0.7 * stdlib


def shutdown_cancelling(mod):
    ex = mod.ProcessPoolExecutor(1, mp_context=FORK)
    warm_up(ex, 1)
    fs = [ex.submit(time.sleep, 0.2) for _ in range(7)]
    time.sleep(0.05)
    ex.shutdown(cancel_futures=True)
    assert all(f.done() for f in fs)
    return sum(f.cancelled() for f in fs)


def test_shutdown_cancel_futures_cancels_what_has_not_started():
    stdlib = shutdown_cancelling(cf)
    ours = shutdown_cancelling(ferropool)
    print(f"cancelled of 7: stdlib {stdlib}, ferropool {ours}")
    assert ours >= min(stdlib, 5)


def map_stopped_early(mod, directory, how):
    ex = mod.ProcessPoolExecutor(2, mp_context=FORK)
    warm_up(ex, 2)
    timeout = 0.1 if how == "timeout" else None
    results = ex.map(mark_then_sleep, [directory] * 10, range(10), [0.3] * 10, timeout=timeout)
    if how == "timeout":
        with pytest.raises(cf.TimeoutError):
            list(results)
    else:
        assert next(results) == 0
        results.close()
    ex.shutdown()
    return ran(directory)


@pytest.mark.parametrize("how", ["timeout", "close"])
def test_a_map_stopped_early_runs_no_more_than_the_stdlibs(tmp_path, how):
    (tmp_path / "stdlib").mkdir()
    (tmp_path / "ours").mkdir()
    stdlib = map_stopped_early(cf, str(tmp_path / "stdlib"), how)
    ours = map_stopped_early(ferropool, str(tmp_path / "ours"), how)
    print(f"items run of 10 ({how}): stdlib {stdlib}, ferropool {ours}")
    assert ours <= stdlib
    assert ours < 10


CTRL_C_MAP = """
import concurrent.futures as cf, multiprocessing as mp, os, sys, time
import ferropool
from test_process_scheduling import mark_then_sleep, warm_up
mod = ferropool if sys.argv[1] == "ferropool" else cf
ex = mod.ProcessPoolExecutor(2, mp_context=mp.get_context("fork"))
warm_up(ex, 2)
print("ready", flush=True)
try:
    list(ex.map(mark_then_sleep, [sys.argv[2]] * 20, range(20), [0.5] * 20))
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""


def interrupted_map(mod, directory):
    proc = spawn_python(
        CTRL_C_MAP.replace("sys.argv[1]", repr(mod.__name__)).replace("sys.argv[2]", repr(directory)),
        cwd=os.path.dirname(__file__),
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.7)
        os.kill(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert "interrupted" in out, err
    return ran(directory)


def test_ctrl_c_during_map_stops_the_remaining_items(tmp_path):
    (tmp_path / "stdlib").mkdir()
    (tmp_path / "ours").mkdir()
    stdlib = interrupted_map(cf, str(tmp_path / "stdlib"))
    ours = interrupted_map(ferropool, str(tmp_path / "ours"))
    print(f"items run of 20 after Ctrl-C: stdlib {stdlib}, ferropool {ours}")
    assert ours <= stdlib + 1
    assert ours < 20


# ---------------------------------------------------------------------------
# A crash
# ---------------------------------------------------------------------------


def failed_by_a_crash(mod):
    ex = mod.ProcessPoolExecutor(1, mp_context=FORK)
    warm_up(ex, 1)
    fs = [ex.submit(noop, i) for i in range(39)] + [ex.submit(crash)]
    cf.wait(fs, timeout=30)
    ex.shutdown()
    assert isinstance(fs[-1].exception(), cf_process.BrokenProcessPool)
    return sum(f.exception() is not None for f in fs)


def test_a_crash_fails_no_task_that_the_worker_finished():
    # The 39 tiny tasks before the crashing one are done (their results sent) before
    # it runs; before the fix, results the worker still held back for a batched
    # write were lost, and up to 39 more futures failed.
    stdlib = max(failed_by_a_crash(cf) for _ in range(5))
    ours = max(failed_by_a_crash(ferropool) for _ in range(5))
    print(f"failed of 40: stdlib {stdlib}, ferropool {ours}")
    assert ours <= stdlib + 1


# ---------------------------------------------------------------------------
# Memory of queued calls
# ---------------------------------------------------------------------------

QUEUED_MEMORY = """
import multiprocessing as mp, time
import ferropool

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096

big = b"x" * (20 << 20)
ex = ferropool.ProcessPoolExecutor(1, mp_context=mp.get_context("fork"))
ex.submit(len, b"").result()
ex.submit(time.sleep, 1)
before = rss()
fs = [ex.submit(len, big) for _ in range(40)]
grown = rss() - before
assert [f.result() for f in fs] == [len(big)] * 40
ex.shutdown()
print(grown >> 20)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_queued_calls_keep_references_not_pickled_copies():
    # 40 queued calls sharing one 20 MB argument: pickled at submit they took 800 MB.
    result = run_python(QUEUED_MEMORY, timeout=60)
    assert result.returncode == 0, result.stderr
    grown_mb = int(result.stdout.split()[-1])
    print(f"RSS growth for 40 x 20 MB queued: {grown_mb} MB")
    assert grown_mb < 100


def test_an_unpicklable_call_kept_by_reference_fails_only_its_own_future():
    big = b"x" * (4 << 20)  # past what submit pickles at once
    with ferropool.ProcessPoolExecutor(1, mp_context=FORK) as ex:
        ex.submit(noop).result()
        blocker = ex.submit(time.sleep, 0.5)
        before = [ex.submit(len, big) for _ in range(3)]
        bad = ex.submit(noop, threading.Lock())
        after = ex.submit(len, big)
        with pytest.raises(TypeError, match="pickle"):
            bad.result(timeout=30)
        assert isinstance(bad.exception().__cause__, cf_process._RemoteTraceback)
        assert [f.result(timeout=30) for f in before] == [len(big)] * 3
        assert after.result(timeout=30) == len(big)
        blocker.result(timeout=30)


def test_cancelling_a_call_kept_by_reference():
    big = b"x" * (4 << 20)
    with ferropool.ProcessPoolExecutor(1, mp_context=FORK) as ex:
        ex.submit(noop).result()
        blocker = ex.submit(time.sleep, 0.3)
        queued = [ex.submit(len, big) for _ in range(4)]
        assert queued[-1].cancel()
        ex.shutdown(cancel_futures=True)
        assert blocker.result() is None
        assert all(f.cancelled() for f in queued[1:])


# ---------------------------------------------------------------------------
# stderr when pools are dropped or shut down without waiting
# ---------------------------------------------------------------------------

DROPPED_POOLS = """
import multiprocessing as mp
import ferropool

def ident(x):
    return x

if __name__ == "__main__":
    for i in range(30):
        ex = ferropool.ProcessPoolExecutor(2, mp_context=mp.get_context("fork"))
        assert list(ex.map(ident, range(10))) == list(range(10))
        if i % 2:
            del ex
        else:
            ex.shutdown(wait=False)
    print("done")
"""


def test_dropped_pools_leave_stderr_clean():
    # Starting a pool's workers polls every child process (multiprocessing's
    # active_children()) while the completer of a dropped pool joins its own: the
    # join must not report the worker as still running.
    for _ in range(3):
        result = run_python(DROPPED_POOLS, timeout=60)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "done"
        assert result.stderr == ""


# ---------------------------------------------------------------------------
# Exceptions that do not unpickle from their args
# ---------------------------------------------------------------------------


def test_an_exception_with_other_init_arguments_comes_back_whole():
    with ferropool.ProcessPoolExecutor(1, mp_context=FORK) as ex:
        error = ex.submit(raise_error_with_args, 7, "no luck").exception(timeout=30)
    # The stdlib breaks the pool (BrokenProcessPool, "A result has failed to
    # un-pickle"); ferropool rebuilds the exception, without calling __init__.
    assert type(error) is ErrorWithArgs
    assert str(error) == "code 7: no luck"
    assert error.code == 7
    cause = error.__cause__
    assert isinstance(cause, cf_process._RemoteTraceback)
    assert "raise ErrorWithArgs(code, reason)" in str(cause)
    assert "ErrorWithArgs: code 7: no luck" in str(cause)

