"""The ``pytest --ferropool`` plugin: run a test suite on ferropool's executors.

Registered through the ``pytest11`` entry point, so pytest loads it wherever ferropool is
installed; it does nothing unless asked:

- ``pytest --ferropool`` (or ``ferropool = true`` in the ini file) calls
  `ferropool.install()` before the conftest files and test modules are imported, so that
  ``concurrent.futures.ThreadPoolExecutor`` and ``ProcessPoolExecutor`` are ferropool's
  for the whole run, and `ferropool.uninstall()` at the end; the report header says so.
  ``--ferropool=threads`` swaps the thread pool only, ``--ferropool=processes`` the
  process pool only.
- The fixtures ``thread_pool`` and ``process_pool`` (always available) give each test a
  ferropool executor and shut it down after the test. Work the test leaves running fails
  the test at teardown, naming that work, instead of hanging it.

This module imports pytest: only pytest imports it, never ``import ferropool``.
"""

from __future__ import annotations

import itertools
import math
import reprlib
import sys
import threading
import time
import traceback
import typing

import pytest

import ferropool

__all__ = ["process_pool", "thread_pool"]

# What the command line and the ini value choose: which executors install() swaps.
_MODES = {
    "all": {"threads": True, "processes": True},
    "threads": {"threads": True, "processes": False},
    "processes": {"threads": False, "processes": True},
}
_INI_TRUE = {"true", "yes", "on", "1", "all"}
_INI_FALSE = {"false", "no", "off", "0", ""}

_DEFAULT_LEAK_TIMEOUT = 5.0

# On the config: the mode install() ran with, if it did; the fixtures' leak timeout.
_installed_key = pytest.StashKey[str]()
_leak_timeout_key = pytest.StashKey[float]()
# Worker threads that the thread_pool fixture found still running (for the summary).
_leaked_threads: list = []


def pytest_addoption(parser):
    group = parser.getgroup("ferropool", "ferropool (run on ferropool's executors)")
    # Three flags sharing one destination, rather than one option with an optional
    # value: `pytest --ferropool tests/` must not read "tests/" as the option's value.
    group.addoption(
        "--ferropool",
        action="store_const",
        const="all",
        dest="ferropool",
        default=None,
        help="make concurrent.futures.ThreadPoolExecutor and ProcessPoolExecutor "
        "ferropool's for this run (ferropool.install() before collection).",
    )
    group.addoption(
        "--ferropool=threads",
        action="store_const",
        const="threads",
        dest="ferropool",
        help="swap the thread pool only.",
    )
    group.addoption(
        "--ferropool=processes",
        action="store_const",
        const="processes",
        dest="ferropool",
        help="swap the process pool only.",
    )
    # pytest 9.2 types ini options; so a TOML `ferropool = true` is not a type error there.
    typed = tuple(getattr(pytest, "version_tuple", (0,))[:2]) >= (9, 2)
    parser.addini(
        "ferropool",
        "true (or all), threads, processes: as --ferropool[=threads|processes]; "
        "false by default. The command line option wins.",
        **({"type": typing.Union[bool, str], "default": False} if typed else {"default": "false"}),
    )
    parser.addini(
        "ferropool_leak_timeout",
        "seconds the thread_pool and process_pool fixtures wait at teardown for work "
        f"the test left running, before failing it (default {_DEFAULT_LEAK_TIMEOUT:g}).",
        **({"type": typing.Union[float, str]} if typed else {}),
        default=str(_DEFAULT_LEAK_TIMEOUT),
    )


def _mode(config, options):
    """'all', 'threads', 'processes', or None (not asked for)."""
    chosen = getattr(options, "ferropool", None)
    if chosen is not None:
        return chosen
    value = config.getini("ferropool")
    if isinstance(value, bool):
        return "all" if value else None
    value = str(value).strip().lower()
    if value in _INI_TRUE:
        return "all"
    if value in _INI_FALSE:
        return None
    if value in _MODES:
        return value
    raise pytest.UsageError(
        f"ini option ferropool = {value}: expected true, false, threads or processes"
    )


def _install(config, options):
    if _installed_key in config.stash:
        return
    mode = _mode(config, options)
    if mode is None:
        return
    ferropool.install(**_MODES[mode])
    config.stash[_installed_key] = mode


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config, parser, args):
    # Before the conftest files are imported: a pool they make at import time, or a
    # `from concurrent.futures import ThreadPoolExecutor` there, gets ferropool's. The
    # command line is not fully parsed yet: what is known of it is.
    _install(early_config, early_config.known_args_namespace)


def pytest_configure(config):
    # When the plugin was registered too late for the hook above (`pytest_plugins` in a
    # conftest file), it still installs before collection.
    _install(config, config.option)
    config.stash[_leak_timeout_key] = _leak_timeout(config)


def pytest_unconfigure(config):
    if _installed_key in config.stash:
        del config.stash[_installed_key]
        ferropool.uninstall()


def pytest_report_header(config):
    mode = config.stash.get(_installed_key, None)
    if mode is None:
        return None
    swapped = {
        "all": "ThreadPoolExecutor and ProcessPoolExecutor are",
        "threads": "ThreadPoolExecutor is",
        "processes": "ProcessPoolExecutor is",
    }[mode]
    return f"ferropool {ferropool.__version__}: concurrent.futures.{swapped} ferropool's"


def pytest_terminal_summary(terminalreporter):
    alive = [thread for thread in _leaked_threads if thread.is_alive()]
    _leaked_threads[:] = alive
    if alive:
        names = ", ".join(thread.name for thread in alive)
        terminalreporter.write_line(
            f"ferropool: {len(alive)} worker thread(s) that tests left running are still "
            f"running ({names}); the interpreter waits for them at exit, as for any "
            "concurrent.futures pool.",
            yellow=True,
        )


# ---------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------

_repr = reprlib.Repr()
_repr.maxstring = 60
_repr.maxother = 60
_repr.maxargs = 3


def _describe_call(fn, args, kwargs) -> str:
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    if name is None:
        name = _repr.repr(fn)
    else:
        module = getattr(fn, "__module__", None)
        if module and module != "builtins":
            name = f"{module}.{name}"
    try:
        parts = [_repr.repr(arg) for arg in args]
        parts += [f"{key}={_repr.repr(value)}" for key, value in kwargs.items()]
    except Exception:  # noqa: BLE001 - a broken __repr__ must not hide the report
        parts = ["..."]
    return f"{name}({', '.join(parts)})"


class _Calls:
    """The calls submitted to one executor that have not finished, with what they are.

    The executor's own ``submit`` is shadowed on the instance, so ``type(executor)`` stays
    ferropool's class; a done callback drops each call when it finishes.
    """

    def __init__(self, executor):
        self._executor = executor
        self._pending: dict = {}
        self._keys = itertools.count()
        submit = executor.submit
        pending = self._pending
        keys = self._keys

        def tracked_submit(fn, /, *args, **kwargs):
            future = submit(fn, *args, **kwargs)
            key = next(keys)
            pending[key] = (future, fn, args, kwargs)
            future.add_done_callback(lambda _, key=key: pending.pop(key, None))
            return future

        tracked_submit.__doc__ = submit.__doc__
        tracked_submit.__name__ = "submit"
        executor.submit = tracked_submit

    def detach(self):
        self._executor.__dict__.pop("submit", None)

    def unfinished(self):
        return [entry for entry in list(self._pending.values()) if not entry[0].done()]


def _leak_timeout(config) -> float:
    value = config.getini("ferropool_leak_timeout")
    try:
        timeout = float(value)
    except ValueError:
        timeout = math.nan
    if not 0 <= timeout < math.inf:
        raise pytest.UsageError(
            f"ini option ferropool_leak_timeout = {value}: expected a number of seconds >= 0"
        )
    return timeout


def _thread_stack(thread) -> str:
    frame = sys._current_frames().get(thread.ident)
    if frame is None:
        return ""
    # The worker's own frames (threading's bootstrap) say nothing about the task.
    entries = [
        entry
        for entry in traceback.extract_stack(frame)
        if entry.filename != threading.__file__
    ]
    return "".join(traceback.format_list(entries[-6:]))


def _thread_order(thread):
    # "prefix_10" after "prefix_9".
    prefix, _, number = thread.name.rpartition("_")
    return (prefix, int(number)) if number.isdigit() else (thread.name, -1)


def _leak_message(fixture, nodeid, timeout, calls, extra) -> str:
    lines = [
        f"{fixture}: work still running {timeout:g} s after {nodeid} ended "
        "(calls not started yet were cancelled):"
    ]
    lines += [f"  {_describe_call(fn, args, kwargs)}" for _, fn, args, kwargs in calls]
    lines += extra
    return "\n".join(lines)


@pytest.fixture
def thread_pool(request):
    """A `ferropool.ThreadPoolExecutor` for this test, shut down after it.

    At teardown, calls still queued are cancelled, and the running ones get
    ``ferropool_leak_timeout`` seconds (ini, 5 by default) to finish; if some do not,
    the test fails with what is still running and where.
    """
    timeout = request.config.stash[_leak_timeout_key]
    executor = ferropool.ThreadPoolExecutor()
    calls = _Calls(executor)
    yield executor

    calls.detach()
    executor.shutdown(wait=False, cancel_futures=True)
    deadline = time.monotonic() + timeout
    threads = list(executor._threads)
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    alive = sorted((thread for thread in threads if thread.is_alive()), key=_thread_order)
    if alive:
        _leaked_threads.extend(alive)
        extra = []
        for thread in alive:
            extra.append(f"  in thread {thread.name!r}:")
            stack = _thread_stack(thread) or "(in a built-in function: no Python frame)"
            extra += ["    " + line for line in stack.rstrip().splitlines()]
        extra.append(
            "A thread cannot be stopped: it keeps running, and the interpreter waits for "
            "it at exit, as for any concurrent.futures pool. Make the test wait for its "
            "work, or give it a way to stop."
        )
        pytest.fail(
            _leak_message("thread_pool", request.node.nodeid, timeout, calls.unfinished(), extra),
            pytrace=False,
        )


@pytest.fixture
def process_pool(request):
    """A `ferropool.ProcessPoolExecutor` for this test, shut down after it.

    At teardown, calls still queued are cancelled, and the running ones get
    ``ferropool_leak_timeout`` seconds (ini, 5 by default) to finish; if some do not,
    the worker processes are killed and the test fails with what was still running.
    """
    timeout = request.config.stash[_leak_timeout_key]
    executor = ferropool.ProcessPoolExecutor()
    calls = _Calls(executor)
    yield executor

    calls.detach()
    executor.shutdown(wait=False, cancel_futures=True)
    unfinished = calls.unfinished()
    _, not_done = ferropool.wait([entry[0] for entry in unfinished], timeout)
    if not_done:
        # What is still running would keep the workers, and the interpreter at exit,
        # waiting: unlike a thread, a process can be stopped.
        for process in list(executor._processes.values()):
            process.kill()
    executor.shutdown(wait=True)
    if not_done:
        pytest.fail(
            _leak_message(
                "process_pool",
                request.node.nodeid,
                timeout,
                [entry for entry in unfinished if entry[0] in not_done],
                ["The worker processes were killed."],
            ),
            pytrace=False,
        )
