"""`install()` / `uninstall()`: make `concurrent.futures` hand out ferropool executors."""

from __future__ import annotations

import concurrent.futures as _cf

from ._process import ProcessPoolExecutor
from ._thread import ThreadPoolExecutor

__all__ = ["install", "uninstall"]

_STDLIB = {
    "ThreadPoolExecutor": _cf.ThreadPoolExecutor,
    "ProcessPoolExecutor": _cf.ProcessPoolExecutor,
}
_OURS = {
    "ThreadPoolExecutor": ThreadPoolExecutor,
    "ProcessPoolExecutor": ProcessPoolExecutor,
}


def install(*, threads: bool = True, processes: bool = True) -> None:
    """Make ``concurrent.futures.ThreadPoolExecutor`` and ``ProcessPoolExecutor`` be ferropool's.

    Code that looks the name up after this call (``concurrent.futures.ThreadPoolExecutor(...)``,
    asyncio's default executor, ``from concurrent.futures import ThreadPoolExecutor`` in a
    module imported later) gets ferropool executors. Idempotent.

    ``threads=False`` leaves ``ThreadPoolExecutor`` as it is, ``processes=False`` leaves
    ``ProcessPoolExecutor`` as it is.
    """
    chosen = {"ThreadPoolExecutor": threads, "ProcessPoolExecutor": processes}
    for name, executor_class in _OURS.items():
        if chosen[name]:
            setattr(_cf, name, executor_class)


def uninstall() -> None:
    """Undo `install()`: ``concurrent.futures`` hands out its own executors again."""
    for name, executor_class in _STDLIB.items():
        setattr(_cf, name, executor_class)
