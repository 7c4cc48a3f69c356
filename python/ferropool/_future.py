"""`Future`, `wait` and `as_completed`: Rust fast paths, with the stdlib's semantics."""

from __future__ import annotations

import concurrent.futures as _cf
from concurrent.futures import ALL_COMPLETED

from . import _core

__all__ = ["Future", "wait", "as_completed"]


class Future(_core.Future, _cf.Future):
    """Represents the result of an asynchronous computation.

    A `concurrent.futures.Future` (``isinstance`` holds), whose state machine lives in
    Rust. Can be made and completed by hand, as executor authors and tests do.
    """

    def __init__(self) -> None:
        """Initializes the future. Should not be called by clients."""


_core._register_future_class(Future)


def _result_or_cancel(future, timeout=None):
    """`future.result(timeout)`, cancelling the future if that raises (for `map`)."""
    try:
        try:
            return future.result(timeout)
        finally:
            future.cancel()
    finally:
        # Break a reference cycle with the exception in future._exception
        del future


def _all_ours(fs):
    return all(isinstance(f, _core.Future) for f in fs)


def wait(fs, timeout=None, return_when=ALL_COMPLETED):
    """Wait for the futures in the given sequence to complete.

    Same contract as `concurrent.futures.wait`: returns a named 2-tuple of sets,
    ``done`` and ``not_done``. Accepts futures from any executor; ferropool futures are
    waited for in Rust, other futures through the stdlib.
    """
    fs = set(fs)
    if _all_ours(fs):
        return _core._wait(list(fs), timeout, return_when)
    return _cf.wait(fs, timeout=timeout, return_when=return_when)


def as_completed(fs, timeout=None):
    """An iterator over the given futures that yields each as it completes.

    Same contract as `concurrent.futures.as_completed`: finished futures first, then
    each as it finishes; raises TimeoutError("N (of M) futures unfinished") once
    `timeout` seconds have passed since the call. Duplicates are yielded once.
    """
    fs = set(fs)
    if _all_ours(fs):
        return _core._as_completed(list(fs), timeout)
    return _cf.as_completed(fs, timeout=timeout)
