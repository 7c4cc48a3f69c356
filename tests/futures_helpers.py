"""Futures of every origin for the wait / as_completed tests (C6).

A "kind" says where a future comes from: made by hand (ferropool's or the stdlib's
Future class) or returned by an executor (ferropool's or the stdlib's). Each pending
future comes with a `trigger` that completes it, from whatever thread calls it.
"""

from __future__ import annotations

import concurrent.futures as cf
import threading

import pytest

import ferropool
from conftest import SHORT, STDLIB_TPE, wait_until

KINDS = ["ferro_hand", "stdlib_hand", "ferro_exec", "stdlib_exec"]


class Maker:
    def __init__(self):
        self.ferro_ex = ferropool.ThreadPoolExecutor(max_workers=8)
        self.stdlib_ex = STDLIB_TPE(max_workers=8)
        self.gates = []

    def close(self):
        for gate in self.gates:
            gate.set()
        self.ferro_ex.shutdown(wait=True, cancel_futures=True)
        self.stdlib_ex.shutdown(wait=True, cancel_futures=True)

    def pending(self, kind, value=None, exc=None):
        """A pending future and a trigger() that completes it with value or exc."""
        if kind in ("ferro_hand", "stdlib_hand"):
            fut = (ferropool.Future if kind == "ferro_hand" else cf.Future)()

            def trigger():
                if exc is not None:
                    fut.set_exception(exc)
                else:
                    fut.set_result(value)

            return fut, trigger

        gate = threading.Event()
        self.gates.append(gate)

        def task():
            if not gate.wait(SHORT * 2):
                raise AssertionError("test never triggered this task")
            if exc is not None:
                raise exc
            return value

        ex = self.ferro_ex if kind == "ferro_exec" else self.stdlib_ex
        fut = ex.submit(task)
        assert wait_until(fut.running)
        return fut, gate.set

    def done(self, kind, value=None, exc=None):
        fut, trigger = self.pending(kind, value, exc)
        trigger()
        assert wait_until(fut.done)
        return fut

    def cancelled(self, kind):
        """A cancelled future whose cancellation has been notified to waiters."""
        if kind in ("ferro_hand", "stdlib_hand"):
            fut = (ferropool.Future if kind == "ferro_hand" else cf.Future)()
            assert fut.cancel()
            assert fut.set_running_or_notify_cancel() is False
            return fut
        # Queue behind a busy single worker, cancel, let the worker pass it by.
        ex_class = ferropool.ThreadPoolExecutor if kind == "ferro_exec" else STDLIB_TPE
        with ex_class(max_workers=1) as ex:
            gate = threading.Event()
            ex.submit(gate.wait, SHORT)
            fut = ex.submit(abs, 1)
            assert fut.cancel()
            gate.set()
        return fut


def later(delay, func, *args):
    timer = threading.Timer(delay, func, args=args)
    timer.daemon = True
    timer.start()
    return timer


@pytest.fixture
def maker():
    """A Maker whose executors are shut down after the test."""
    m = Maker()
    try:
        yield m
    finally:
        m.close()
