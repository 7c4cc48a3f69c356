"""R1: a script that never calls shutdown exits cleanly, after its queued work ran.

Each scenario runs in fresh interpreters, several times at once, because exit-time
bugs (hangs, crashes in finalization) are intermittent.
"""

from __future__ import annotations

import os

import pytest

from conftest import run_many, run_python

RUNS = 10
N = 200

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(os.name != "posix", reason="exit-time behaviour checked on POSIX"),
]

TASK = """
import os, sys, time, threading
import ferropool

def out(line):
    # one write(2) per line: lines from several threads never interleave
    os.write(1, (line + "\\n").encode())

def task(i):
    time.sleep(0.001)
    out(f"task {i}")
    return i
"""

SCENARIOS = {
    "no_shutdown": TASK + f"""
ex = ferropool.ThreadPoolExecutor(max_workers=4)
futures = [ex.submit(task, i) for i in range({N})]
out("main done")
""",
    "dropped_executor": TASK + f"""
import gc
def submit_and_forget():
    ex = ferropool.ThreadPoolExecutor(max_workers=4)
    for i in range({N}):
        ex.submit(task, i)
submit_and_forget()
gc.collect()
out("main done")
""",
    "dropped_executor_and_futures": TASK + f"""
ex = ferropool.ThreadPoolExecutor(max_workers=3)
for i in range({N}):
    ex.submit(task, i)
del ex
out("main done")
""",
    "pending_with_slow_running_task": TASK + f"""
ex = ferropool.ThreadPoolExecutor(max_workers=2)
ex.submit(time.sleep, 0.2)
futures = [ex.submit(task, i) for i in range({N})]
out("main done")
""",
    "sys_exit_with_pending_work": TASK + f"""
ex = ferropool.ThreadPoolExecutor(max_workers=4)
futures = [ex.submit(task, i) for i in range({N})]
out("main done")
sys.exit(0)
""",
    "map_not_consumed": TASK + f"""
ex = ferropool.ThreadPoolExecutor(max_workers=4)
it = ex.map(task, range({N}))
out("main done")
""",
    "several_executors": TASK + f"""
executors = [ferropool.ThreadPoolExecutor(max_workers=2) for _ in range(4)]
for i in range({N}):
    executors[i % 4].submit(task, i)
out("main done")
""",
    "main_thread_raises": TASK + f"""
ex = ferropool.ThreadPoolExecutor(max_workers=4)
futures = [ex.submit(task, i) for i in range({N})]
out("main done")
raise SystemExit(0)
""",
}


def _check(result, n=N):
    assert result.returncode == 0, f"rc={result.returncode}\nstderr:\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    assert "Fatal Python error" not in result.stderr, result.stderr
    lines = result.stdout.splitlines()
    assert "main done" in lines
    ran = sorted(int(line.split()[1]) for line in lines if line.startswith("task "))
    assert ran == list(range(n)), f"{len(ran)} of {n} tasks ran"


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_exit_without_shutdown_runs_queued_work(scenario):
    for result in run_many(SCENARIOS[scenario], RUNS, timeout=90):
        _check(result)


def test_exit_with_idle_pool():
    code = """
    import ferropool
    ex = ferropool.ThreadPoolExecutor(max_workers=8)
    assert list(ex.map(abs, range(-100, 0))) == list(range(100, 0, -1))
    print("main done", flush=True)
    """
    for result in run_many(code, RUNS, timeout=60):
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "main done"
        assert "Traceback" not in result.stderr


def test_exit_with_unused_pools():
    code = """
    import ferropool
    pools = [ferropool.ThreadPoolExecutor() for _ in range(5)]
    print("main done", flush=True)
    """
    for result in run_many(code, RUNS, timeout=60):
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "main done"


def test_exit_after_shutdown_wait_false():
    code = TASK + f"""
ex = ferropool.ThreadPoolExecutor(max_workers=4)
futures = [ex.submit(task, i) for i in range({N})]
ex.shutdown(wait=False)
out("main done")
"""
    for result in run_many(code, RUNS, timeout=60):
        _check(result)


def test_exit_with_hand_made_pending_future():
    code = """
    import ferropool
    f = ferropool.Future()
    g = ferropool.Future()
    g.set_result(1)
    print("main done", flush=True)
    """
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "main done"


def test_exit_while_tasks_submit_more_work():
    # Tasks that submit follow-up work while the interpreter is exiting: the stdlib
    # refuses the late submissions with RuntimeError; nothing may hang or crash.
    code = """
    import time
    import ferropool
    ex = ferropool.ThreadPoolExecutor(max_workers=2)
    def chain(i):
        time.sleep(0.001)
        if i < 50:
            try:
                ex.submit(chain, i + 1)
            except RuntimeError:
                pass
        return i
    ex.submit(chain, 0)
    print("main done", flush=True)
    """
    for result in run_many(code, RUNS, timeout=60):
        assert result.returncode == 0, result.stderr
        assert "Fatal Python error" not in result.stderr
