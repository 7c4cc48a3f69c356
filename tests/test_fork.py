"""R3: os.fork() in a process with a live pool.

Each scenario runs in a fresh interpreter (so the fork happens in a clean process, not
in pytest's). The forking parent waits for its child with a deadline (polling
waitpid(WNOHANG)) and kills it if it hangs; the child reports through its exit code.
"""

from __future__ import annotations

import os

import pytest

from conftest import run_python

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork"),
]

HARNESS = """
import os, signal, sys, threading, time, traceback
import ferropool

HANG = 97

def reap(pid, deadline=20.0):
    end = time.monotonic() + deadline
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > end:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return HANG
        time.sleep(0.01)

def in_child(body):
    '''Run body() in a forked child; return the child's exit code (HANG if it hung).'''
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = body()
        except BaseException:
            traceback.print_exc()
            sys.stderr.flush()
        finally:
            os._exit(code)
    return reap(pid)

def square(x):
    return x * x

def use_new_pool():
    with ferropool.ThreadPoolExecutor(max_workers=3) as ex2:
        assert list(ex2.map(square, range(200))) == [x * x for x in range(200)]
        assert ex2.submit(pow, 2, 10).result(timeout=10) == 1024
        fs = [ex2.submit(square, i) for i in range(100)]
        assert ferropool.wait(fs, timeout=10).not_done == set()
        assert sorted(f.result() for f in ferropool.as_completed(fs, timeout=10)) == [
            i * i for i in range(100)
        ]
    return 0
"""


def _run(body: str):
    result = run_python(HARNESS + body, timeout=60)
    assert "HANG" not in result.stdout, result.stdout + result.stderr
    assert result.returncode == 0, f"rc={result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


def test_child_can_make_and_use_a_new_pool():
    _run(
        """
ex = ferropool.ThreadPoolExecutor(max_workers=4)
assert list(ex.map(square, range(50))) == [x * x for x in range(50)]  # live and used
code = in_child(use_new_pool)
print("child", code)
assert code == 0, code
# the parent's pool is unaffected
assert ex.submit(square, 9).result(timeout=10) == 81
ex.shutdown()
"""
    )


def test_child_with_a_task_running_in_the_parent_pool():
    _run(
        """
ex = ferropool.ThreadPoolExecutor(max_workers=2)
gate = threading.Event()
busy = ex.submit(gate.wait, 30)
while not busy.running():
    time.sleep(0.001)
code = in_child(use_new_pool)
gate.set()
assert busy.result(timeout=10) is True
print("child", code)
assert code == 0, code
ex.shutdown()
"""
    )


def test_fork_repeatedly_while_the_parent_pool_is_busy():
    # Workers are running and taking work from the queue at the moment of fork: any lock
    # they hold is held forever in the child. The child's new pool must not need it.
    _run(
        """
ex = ferropool.ThreadPoolExecutor(max_workers=4)
stop = threading.Event()

def feeder():
    while not stop.is_set():
        fs = [ex.submit(square, i) for i in range(200)]
        for f in fs:
            f.result(timeout=10)

feeders = [threading.Thread(target=feeder) for _ in range(2)]
for t in feeders:
    t.start()
codes = []
try:
    for _ in range(10):
        time.sleep(0.01)
        codes.append(in_child(use_new_pool))
finally:
    stop.set()
    for t in feeders:
        t.join(30)
print("codes", codes)
assert codes == [0] * 10, codes
ex.shutdown()
"""
    )


def test_child_exits_normally_with_inherited_pool_around():
    # The child returns through the normal interpreter exit (atexit hooks, thread joins)
    # while the parent's pool object is still referenced: it must not hang.
    result = run_python(
        HARNESS
        + """
ex = ferropool.ThreadPoolExecutor(max_workers=4)
assert list(ex.map(square, range(50))) == [x * x for x in range(50)]
gate = threading.Event()
busy = ex.submit(gate.wait, 30)
while not busy.running():
    time.sleep(0.001)
pid = os.fork()
if pid == 0:
    use_new_pool()
    sys.exit(0)   # normal exit: runs the exit hooks with the inherited pool around
code = reap(pid)
gate.set()
ex.shutdown()
print("child", code)
assert code == 0, code
""",
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_inherited_pool_works_or_raises_a_clear_error():
    # ferropool's own contract (R3). The stdlib fails this: its inherited pool believes
    # it has idle workers that do not exist in the child, and submit() hangs forever.
    result = run_python(
        HARNESS
        + """
ex = ferropool.ThreadPoolExecutor(max_workers=4)
assert list(ex.map(square, range(50))) == [x * x for x in range(50)]

def use_inherited_pool():
    try:
        fut = ex.submit(square, 12)
        value = fut.result(timeout=5)
        assert value == 144, value
        assert list(ex.map(square, range(20), timeout=5)) == [x * x for x in range(20)]
        fs = [ex.submit(square, i) for i in range(20)]
        assert ferropool.wait(fs, timeout=5).not_done == set()
        ex.shutdown(wait=True)
        print("inherited pool works", flush=True)
        return 0
    except ferropool.TimeoutError:
        print("inherited pool timed out", flush=True)
        return 2
    except RuntimeError as exc:
        message = str(exc)
        print("inherited pool raised:", type(exc).__name__, message, flush=True)
        # a clear message says what happened
        return 0 if ("fork" in message.lower() and len(message) > 20) else 4

code = in_child(use_inherited_pool)
print("child", code)
assert code == 0, code
ex.shutdown()
""",
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_inherited_pending_future_does_not_hang_the_child():
    # A future whose task runs in the parent: in the child nobody will ever complete
    # it. A wait with a timeout must time out (not hang, not crash).
    _run(
        """
ex = ferropool.ThreadPoolExecutor(max_workers=1)
gate = threading.Event()
busy = ex.submit(gate.wait, 30)
while not busy.running():
    time.sleep(0.001)

def child():
    try:
        busy.result(timeout=0.2)
    except ferropool.TimeoutError:
        pass
    except RuntimeError:
        pass   # an explicit error about fork is fine too
    done, not_done = ferropool.wait([busy], timeout=0.2)
    return use_new_pool()

code = in_child(child)
gate.set()
ex.shutdown()
print("child", code)
assert code == 0, code
"""
    )
