"""Shared helpers for the ferropool test suite.

The suite is written against the contract in SPEC.md (sections C and R): ferropool must
behave like `concurrent.futures`. Many tests are *differential*: they run the same calls
on the stdlib and on ferropool and compare the outcomes, so that the expectation is
whatever the stdlib of the running interpreter does, not a hard-coded copy of it.
"""

from __future__ import annotations

import concurrent.futures as cf
import concurrent.futures.thread as cf_thread
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
import types
import warnings

import pytest

import ferropool

# Captured at import time, before any test calls ferropool.install().
STDLIB_TPE = cf_thread.ThreadPoolExecutor
STDLIB_FUTURE = cf.Future

STDLIB = types.SimpleNamespace(
    name="stdlib",
    ThreadPoolExecutor=STDLIB_TPE,
    Future=cf.Future,
    wait=cf.wait,
    as_completed=cf.as_completed,
)
FERRO = types.SimpleNamespace(
    name="ferropool",
    ThreadPoolExecutor=ferropool.ThreadPoolExecutor,
    Future=ferropool.Future,
    wait=ferropool.wait,
    as_completed=ferropool.as_completed,
)

# Generous bound for "this must not block" in tests that are not about timing.
SHORT = 5.0

_HEX_ID = re.compile(r"0x[0-9a-fA-F]+")
# "ThreadPoolExecutor.submit() missing ...", "Executor.map() missing ...": which class
# defines a method is an implementation detail; the rest of an arity error is compared.
_CALLABLE_NAME = re.compile(r"^[A-Za-z_][\w.]*\(\)")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: a test that takes several seconds")
    # When a property test fails, hypothesis's pytest plugin imports its patch writer
    # (and libcst, where installed) while reporting; with filterwarnings=error a
    # DeprecationWarning raised by that import turns the failure report into an
    # INTERNALERROR. Import it here, once, with warnings silenced.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import hypothesis.extra._patching  # noqa: F401
        except Exception:  # noqa: BLE001 - optional; the plugin copes without it
            pass


def normalize_message(message: str, *, arity: bool = False) -> str:
    message = _HEX_ID.sub("0x?", message)
    if arity:
        message = _CALLABLE_NAME.sub("<callable>()", message)
    return message


def outcome(call, *, arity: bool = False):
    """('returned', value) or ('raised', exception type, normalized message)."""
    try:
        value = call()
    except Exception as exc:  # noqa: BLE001 - that is the point
        return ("raised", type(exc), normalize_message(str(exc), arity=arity))
    return ("returned", value)


def assert_same_outcome(make_call, *, arity: bool = False):
    """Run `make_call(api)` with the stdlib's and with ferropool's API; same outcome.

    `make_call` gets a namespace with ThreadPoolExecutor, Future, wait, as_completed.
    It must return plain, comparable data. Exceptions are compared by type and by
    message (memory addresses normalized; with `arity=True` the leading
    ``Class.method()`` of an argument-count error is not compared).
    """
    expected = outcome(lambda: make_call(STDLIB), arity=arity)
    actual = outcome(lambda: make_call(FERRO), arity=arity)
    assert actual == expected, f"stdlib gave {expected!r}, ferropool gave {actual!r}"
    return actual


def wait_until(predicate, timeout: float = SHORT, interval: float = 0.001) -> bool:
    """Poll `predicate` until it is true or `timeout` passes; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return bool(predicate())
        time.sleep(interval)


@pytest.fixture
def executor():
    ex = ferropool.ThreadPoolExecutor(max_workers=4)
    try:
        yield ex
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


@pytest.fixture
def gate():
    """An Event that tests use to hold tasks; always released at teardown."""
    event = threading.Event()
    try:
        yield event
    finally:
        event.set()


# ---------------------------------------------------------------------------
# Subprocesses
# ---------------------------------------------------------------------------


def child_env() -> dict:
    """Environment for child interpreters: they must import the same ferropool."""
    env = dict(os.environ)
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(ferropool.__file__)))
    parts = [package_parent]
    if env.get("PYTHONPATH"):
        parts.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(parts)
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("PYTHONWARNINGS", None)
    return env


def script(code: str) -> str:
    return textwrap.dedent(code).lstrip()


def spawn_python(code: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", script(code)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
        **kwargs,
    )


def run_python(code: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter; kill it (and fail) if it outlives `timeout`."""
    proc = spawn_python(code)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(
            f"child interpreter hung for {timeout} s\nstdout:\n{out}\nstderr:\n{err}"
        )
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def run_many(code: str, runs: int, timeout: float = 60.0) -> list:
    """Start `runs` interpreters at once and collect them (killing any that hang)."""
    procs = [spawn_python(code) for _ in range(runs)]
    deadline = time.monotonic() + timeout
    results = []
    hung = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            hung.append(err)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    if hung:
        pytest.fail(f"{len(hung)} of {runs} child interpreters hung; stderr of one:\n{hung[0]}")
    return results
