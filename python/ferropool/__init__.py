"""ferropool: a Rust-powered, drop-in replacement for `concurrent.futures` executors.

Change one import line::

    from ferropool import ThreadPoolExecutor, as_completed, wait

or call `ferropool.install()` so that code building its own `concurrent.futures`
executors gets ferropool's. Exceptions and constants are the stdlib's own objects, so
existing ``except`` clauses keep working.

PYTEST_DONT_REWRITE: the package ships a pytest plugin, so pytest would assert-rewrite it,
and warn when it was imported before pytest started; this marker tells pytest not to.
"""

from concurrent.futures import (
    ALL_COMPLETED,
    FIRST_COMPLETED,
    FIRST_EXCEPTION,
    BrokenExecutor,
    CancelledError,
    Executor,
    InvalidStateError,
    TimeoutError,
)
from concurrent.futures.process import BrokenProcessPool
from concurrent.futures.thread import BrokenThreadPool

from ._core import __version__
from ._future import Future, as_completed, wait
from ._install import install, uninstall
from ._process import ProcessPoolExecutor
from ._thread import ThreadPoolExecutor

__all__ = [
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "BrokenExecutor",
    "BrokenProcessPool",
    "BrokenThreadPool",
    "CancelledError",
    "Executor",
    "Future",
    "InvalidStateError",
    "ProcessPoolExecutor",
    "ThreadPoolExecutor",
    "TimeoutError",
    "__version__",
    "as_completed",
    "install",
    "uninstall",
    "wait",
]
