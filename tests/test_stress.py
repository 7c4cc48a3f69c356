"""R5: many threads submitting, cancelling, waiting and shutting down at once.

Invariants: every future whose submit returned ends up either cancelled (its task
never ran) or done with its own outcome (its task ran exactly once); a submit that
raised RuntimeError left no task behind; nothing deadlocks (pytest-timeout, and every
join has a deadline).
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import random
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ferropool
from conftest import SHORT

JOIN = 30.0


class Ledger:
    """What the tasks did, and what the threads saw."""

    def __init__(self):
        self.lock = threading.Lock()
        self.runs = collections.Counter()
        self.futures = {}  # key -> future, for every submit that returned
        self.rejected = set()  # keys whose submit raised RuntimeError
        self.cancel_true = set()  # keys whose cancel() returned True
        self.errors = []  # unexpected exceptions in helper threads

    def task(self, key, fail, sleep):
        with self.lock:
            self.runs[key] += 1
        if sleep:
            time.sleep(sleep)
        if fail:
            raise ValueError(key)
        return key


def _run_threads(threads):
    for t in threads:
        t.start()
    for t in threads:
        t.join(JOIN)
    stuck = [t.name for t in threads if t.is_alive()]
    assert not stuck, f"threads did not finish (deadlock?): {stuck}"


def _check(ledger):
    assert not ledger.errors, ledger.errors
    assert not (ledger.futures.keys() & ledger.rejected)
    for key in ledger.rejected:
        assert ledger.runs[key] == 0, f"rejected submit {key} ran"
    for key, fut in ledger.futures.items():
        assert fut.done(), f"{key}: {fut!r} not done after shutdown(wait=True)"
        if fut.cancelled():
            assert ledger.runs[key] == 0, f"cancelled {key} ran"
        else:
            assert key not in ledger.cancel_true, f"cancel() of {key} returned True"
            assert ledger.runs[key] == 1, f"{key} ran {ledger.runs[key]} times"
            exc = fut.exception(timeout=0)
            if exc is None:
                assert fut.result(timeout=0) == key
            else:
                assert isinstance(exc, ValueError) and exc.args == (key,)
    # no task ran that nobody submitted
    assert set(ledger.runs) <= set(ledger.futures)
    assert sum(ledger.runs.values()) == sum(
        1 for f in ledger.futures.values() if not f.cancelled()
    )


@pytest.mark.timeout(120)
@settings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    max_workers=st.integers(1, 4),
    n_submitters=st.integers(1, 4),
    n_tasks=st.integers(1, 300),
    n_cancellers=st.integers(0, 2),
    n_waiters=st.integers(0, 2),
    shutdown_after=st.one_of(st.none(), st.integers(0, 600)),
    shutdown_wait=st.booleans(),
    cancel_futures=st.booleans(),
    sleepy=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_concurrent_submit_cancel_wait_shutdown(
    max_workers,
    n_submitters,
    n_tasks,
    n_cancellers,
    n_waiters,
    shutdown_after,
    shutdown_wait,
    cancel_futures,
    sleepy,
    seed,
):
    ledger = Ledger()
    ex = ferropool.ThreadPoolExecutor(max_workers=max_workers)
    submitting = threading.Event()  # set when all submitters are finished
    submitted_count = [0]

    def guarded(fn):
        def run(*args):
            try:
                fn(*args)
            except BaseException as exc:  # noqa: BLE001
                ledger.errors.append(repr(exc))

        return run

    @guarded
    def submitter(sid):
        rng = random.Random(seed + sid)
        for i in range(n_tasks):
            key = (sid, i)
            fail = rng.random() < 0.2
            sleep = rng.random() * 0.001 if sleepy and rng.random() < 0.3 else 0
            try:
                fut = ex.submit(ledger.task, key, fail, sleep)
            except RuntimeError as exc:
                assert str(exc) == "cannot schedule new futures after shutdown", exc
                with ledger.lock:
                    ledger.rejected.add(key)
            else:
                with ledger.lock:
                    ledger.futures[key] = fut
            with ledger.lock:
                submitted_count[0] += 1
            if rng.random() < 0.05:
                time.sleep(0)

    @guarded
    def canceller(cid):
        rng = random.Random(seed ^ (cid + 1000))
        while not submitting.is_set() or rng.random() < 0.5:
            with ledger.lock:
                items = list(ledger.futures.items())
            if items:
                key, fut = rng.choice(items)
                if fut.cancel():
                    with ledger.lock:
                        ledger.cancel_true.add(key)
                    assert fut.cancelled()
            time.sleep(0)
            if submitting.is_set() and rng.random() < 0.2:
                break

    @guarded
    def waiter(wid):
        rng = random.Random(seed ^ (wid + 2000))
        while not submitting.is_set():
            with ledger.lock:
                fs = list(ledger.futures.values())
            if not fs:
                time.sleep(0.001)
                continue
            sample = rng.sample(fs, min(len(fs), 20))
            choice = rng.randrange(4)
            if choice == 0:
                done, not_done = ferropool.wait(sample, timeout=0.01)
                assert done | not_done == set(sample)
                assert all(f.done() for f in done)
            elif choice == 1:
                done, not_done = cf.wait(
                    sample, timeout=0.01, return_when=cf.FIRST_COMPLETED
                )
                assert done | not_done == set(sample)
            else:
                as_completed = ferropool.as_completed if choice == 2 else cf.as_completed
                try:
                    for f in as_completed(sample, timeout=0.01):
                        assert f.done()
                except cf.TimeoutError:
                    pass

    @guarded
    def shutter():
        while submitted_count[0] < shutdown_after and not submitting.is_set():
            time.sleep(0.0005)
        ex.shutdown(wait=shutdown_wait, cancel_futures=cancel_futures)

    threads = [threading.Thread(target=submitter, args=(s,), name=f"submitter-{s}")
               for s in range(n_submitters)]
    helpers = [threading.Thread(target=canceller, args=(c,), name=f"canceller-{c}")
               for c in range(n_cancellers)]
    helpers += [threading.Thread(target=waiter, args=(w,), name=f"waiter-{w}")
                for w in range(n_waiters)]
    if shutdown_after is not None:
        helpers.append(threading.Thread(target=shutter, name="shutter"))
    try:
        for t in helpers:
            t.start()
        _run_threads(threads)
        submitting.set()
        for t in helpers:
            t.join(JOIN)
        assert not [t.name for t in helpers if t.is_alive()], "helper threads hung"
    finally:
        submitting.set()
        ex.shutdown(wait=True)
    _check(ledger)
    if shutdown_after is None:
        assert not ledger.rejected


@pytest.mark.timeout(120)
@settings(max_examples=25, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(
    max_workers=st.integers(1, 4),
    n_items=st.integers(0, 200),
    close_after=st.integers(0, 200),
    timeout=st.one_of(st.none(), st.just(SHORT)),
)
def test_map_closed_at_a_random_point(max_workers, n_items, close_after, timeout):
    runs = collections.Counter()
    lock = threading.Lock()

    def task(i):
        with lock:
            runs[i] += 1
        return i * 2

    with ferropool.ThreadPoolExecutor(max_workers=max_workers) as ex:
        it = ex.map(task, range(n_items), timeout=timeout)
        got = []
        for value in it:
            got.append(value)
            if len(got) >= close_after:
                break
        it.close()
    assert got == [i * 2 for i in range(len(got))]
    assert all(count == 1 for count in runs.values())
    assert set(range(len(got))) <= set(runs)


# ---------------------------------------------------------------------------
# Hand-made futures: state-machine races
# ---------------------------------------------------------------------------

ROUNDS = 3000


def _race(n_threads, rounds, body):
    """Run body(round, thread_index) on n_threads threads, in lockstep per round."""
    barrier = threading.Barrier(n_threads, timeout=JOIN)
    errors = []

    def run(index):
        try:
            for r in range(rounds):
                barrier.wait()
                body(r, index)
        except BaseException as exc:  # noqa: BLE001
            errors.append(repr(exc))
            barrier.abort()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n_threads)]
    _run_threads(threads)
    assert not errors, errors[:3]


@pytest.mark.timeout(60)
def test_set_result_vs_cancel_vs_add_done_callback():
    futures = [ferropool.Future() for _ in range(ROUNDS)]
    early_calls = [0] * ROUNDS
    late_calls = [0] * ROUNDS
    set_ok = [None] * ROUNDS
    cancel_ok = [None] * ROUNDS
    callback_threads = [None] * ROUNDS

    for r, fut in enumerate(futures):
        def early(f, r=r):
            early_calls[r] += 1
        fut.add_done_callback(early)

    def body(r, index):
        fut = futures[r]
        if index == 0:
            try:
                fut.set_result(r)
                set_ok[r] = True
            except cf.InvalidStateError:
                set_ok[r] = False
        elif index == 1:
            cancel_ok[r] = fut.cancel()
        else:
            def late(f, r=r):
                late_calls[r] += 1
                callback_threads[r] = threading.get_ident()
            fut.add_done_callback(late)

    _race(3, ROUNDS, body)

    for r, fut in enumerate(futures):
        assert fut.done()
        assert set_ok[r] != cancel_ok[r], f"round {r}: set {set_ok[r]}, cancel {cancel_ok[r]}"
        if cancel_ok[r]:
            assert fut.cancelled()
        else:
            assert fut.result(timeout=0) == r
        assert early_calls[r] == 1, f"round {r}: early callback ran {early_calls[r]} times"
        assert late_calls[r] == 1, f"round {r}: late callback ran {late_calls[r]} times"


@pytest.mark.timeout(60)
def test_set_running_vs_cancel():
    futures = [ferropool.Future() for _ in range(ROUNDS)]
    running_ok = [None] * ROUNDS
    cancel_ok = [None] * ROUNDS

    def body(r, index):
        if index == 0:
            running_ok[r] = futures[r].set_running_or_notify_cancel()
        else:
            cancel_ok[r] = futures[r].cancel()

    _race(2, ROUNDS, body)
    for r, fut in enumerate(futures):
        assert running_ok[r] != cancel_ok[r], f"round {r}"
        if running_ok[r]:
            assert fut.running() and not fut.cancelled()
            fut.set_result(None)
        else:
            assert fut.cancelled() and not fut.running()


@pytest.mark.timeout(60)
def test_set_result_vs_set_exception():
    futures = [ferropool.Future() for _ in range(ROUNDS)]
    outcome = [[None, None] for _ in range(ROUNDS)]

    def body(r, index):
        try:
            if index == 0:
                futures[r].set_result("value")
            else:
                futures[r].set_exception(KeyError("error"))
            outcome[r][index] = True
        except cf.InvalidStateError:
            outcome[r][index] = False

    _race(2, ROUNDS, body)
    for r, fut in enumerate(futures):
        assert outcome[r] in ([True, False], [False, True]), f"round {r}: {outcome[r]}"
        if outcome[r][0]:
            assert fut.result(timeout=0) == "value"
        else:
            assert isinstance(fut.exception(timeout=0), KeyError)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("wait_name", ["ferropool.wait", "stdlib.wait",
                                       "ferropool.as_completed", "stdlib.as_completed",
                                       "result"])
def test_waiting_vs_completion(wait_name):
    rounds = 1000
    futures = [ferropool.Future() for _ in range(rounds)]
    seen = [None] * rounds

    def body(r, index):
        fut = futures[r]
        if index == 0:
            if r % 2:
                fut.set_result(r)
            else:
                fut.cancel()
                fut.set_running_or_notify_cancel()
        elif wait_name == "ferropool.wait":
            seen[r] = fut in ferropool.wait([fut], timeout=JOIN).done
        elif wait_name == "stdlib.wait":
            seen[r] = fut in cf.wait([fut], timeout=JOIN).done
        elif wait_name == "ferropool.as_completed":
            seen[r] = list(ferropool.as_completed([fut], timeout=JOIN)) == [fut]
        elif wait_name == "stdlib.as_completed":
            seen[r] = list(cf.as_completed([fut], timeout=JOIN)) == [fut]
        else:
            try:
                seen[r] = fut.result(timeout=JOIN) == r
            except cf.CancelledError:
                seen[r] = True

    start = time.monotonic()
    _race(2, rounds, body)
    assert all(seen), [r for r, s in enumerate(seen) if not s][:10]
    # a lost wake-up would only be noticed after JOIN seconds
    assert time.monotonic() - start < JOIN


@pytest.mark.timeout(60)
def test_many_submitters_one_pool_all_results():
    with ferropool.ThreadPoolExecutor(max_workers=4) as ex:
        results = {}
        lock = threading.Lock()

        def submitter(sid):
            fs = [ex.submit(pow, sid, i, 1_000_003) for i in range(500)]
            values = [f.result(timeout=JOIN) for f in fs]
            with lock:
                results[sid] = values

        _run_threads([threading.Thread(target=submitter, args=(s,)) for s in range(8)])
    assert results == {s: [pow(s, i, 1_000_003) for i in range(500)] for s in range(8)}


@pytest.mark.timeout(60)
def test_shutdown_races_with_submit_from_tasks():
    # Tasks that resubmit themselves while the main thread shuts the pool down.
    for _ in range(20):
        ex = ferropool.ThreadPoolExecutor(max_workers=3)
        runs = collections.Counter()
        lock = threading.Lock()
        children = []

        def task(depth):
            with lock:
                runs[depth] += 1
            if depth < 30:
                try:
                    fut = ex.submit(task, depth + 1)
                except RuntimeError:
                    return "stopped"
                with lock:
                    children.append(fut)
            return depth

        first = ex.submit(task, 0)
        time.sleep(random.random() * 0.005)
        ex.shutdown(wait=True)
        assert first.done()
        with lock:
            pending = [f for f in children if not f.done()]
        assert not pending, "a future accepted before shutdown was never run"
        assert all(count == 1 for count in runs.values())
