"""C6: ferropool.as_completed and concurrent.futures.as_completed, futures of any origin."""

from __future__ import annotations

import concurrent.futures as cf
import itertools
import queue
import threading
import time

import pytest

import ferropool
from conftest import SHORT, assert_same_outcome
from futures_helpers import KINDS, later, maker  # noqa: F401  (maker: a fixture)

AS_COMPLETEDS = {
    "ferropool.as_completed": ferropool.as_completed,
    "stdlib.as_completed": cf.as_completed,
}

pytestmark = pytest.mark.timeout(20)


@pytest.fixture(params=list(AS_COMPLETEDS), ids=list(AS_COMPLETEDS))
def as_completed(request):
    return AS_COMPLETEDS[request.param]


def test_empty(as_completed):
    assert list(as_completed([])) == []
    assert list(as_completed([], timeout=0)) == []


def test_returns_an_iterator(as_completed):
    f = ferropool.Future()
    f.set_result(1)
    it = as_completed([f])
    assert iter(it) is it
    assert next(it) is f
    with pytest.raises(StopIteration):
        next(it)


@pytest.mark.parametrize("kind", KINDS)
def test_all_done(as_completed, maker, kind):
    fs = [maker.done(kind, i) for i in range(4)] + [maker.cancelled(kind)]
    fs.append(maker.done(kind, exc=ValueError()))
    assert set(as_completed(fs, timeout=0)) == set(fs)
    assert sorted(map(id, as_completed(fs))) == sorted(map(id, fs))


@pytest.mark.parametrize("kind", KINDS)
def test_finished_ones_come_first(as_completed, maker, kind):
    p1, trigger1 = maker.pending(kind, "p1")
    p2, trigger2 = maker.pending(kind, "p2")
    d1 = maker.done(kind, "d1")
    c1 = maker.cancelled(kind)
    d2 = maker.done(kind, exc=OSError())
    it = as_completed([p1, d1, p2, c1, d2], timeout=SHORT)
    first = {next(it), next(it), next(it)}
    assert first == {d1, c1, d2}
    assert not p1.done() and not p2.done()
    trigger2()
    assert next(it) is p2
    trigger1()
    assert next(it) is p1
    with pytest.raises(StopIteration):
        next(it)


@pytest.mark.parametrize("kind", KINDS)
def test_yields_in_finishing_order(as_completed, maker, kind):
    pairs = [maker.pending(kind, i) for i in range(5)]
    fs = [f for f, _ in pairs]
    out: queue.Queue = queue.Queue()

    def consume():
        for f in as_completed(fs, timeout=SHORT):
            out.put(f)

    consumer = threading.Thread(target=consume)
    consumer.start()
    # The first completion makes sure the consumer is past its initial snapshot;
    # the rest complete back to back, and must come out in that order.
    pairs[3][1]()
    assert out.get(timeout=SHORT) is fs[3]
    order = [4, 0, 2, 1]
    for i in order:
        pairs[i][1]()
        if kind.endswith("exec"):
            fs[i].result(timeout=SHORT)  # the executor decides when it finishes
    consumer.join(SHORT)
    assert [out.get_nowait() for _ in order] == [fs[i] for i in order]


@pytest.mark.parametrize("kind", KINDS)
def test_duplicates_are_yielded_once(as_completed, maker, kind):
    a = maker.done(kind, 1)
    b, trigger = maker.pending(kind, 2)
    timer = later(0.03, trigger)
    got = list(as_completed([a, b, a, b, b], timeout=SHORT))
    timer.join()
    assert len(got) == 2
    assert set(got) == {a, b}
    assert got[0] is a


@pytest.mark.parametrize("kind", KINDS)
def test_timeout_message(as_completed, maker, kind):
    p1, _ = maker.pending(kind)
    p2, _ = maker.pending(kind)
    d = maker.done(kind, 0)
    got = []
    start = time.monotonic()
    with pytest.raises(cf.TimeoutError) as info:
        for f in as_completed([p1, d, p2], timeout=0.1):
            got.append(f)
    elapsed = time.monotonic() - start
    assert got == [d]
    assert str(info.value) == "2 (of 3) futures unfinished"
    assert 0.08 <= elapsed < 2.0


@pytest.mark.parametrize("kind", KINDS)
def test_timeout_message_counts_distinct_futures(as_completed, maker, kind):
    p, _ = maker.pending(kind)
    d = maker.done(kind, 0)
    with pytest.raises(cf.TimeoutError) as info:
        list(as_completed([p, p, d, d, p], timeout=0.05))
    assert str(info.value) == "1 (of 2) futures unfinished"


@pytest.mark.parametrize("kind", KINDS)
def test_timeout_counts_progress(as_completed, maker, kind):
    a, trigger_a = maker.pending(kind, 1)
    b, _ = maker.pending(kind)
    c, _ = maker.pending(kind)
    timer = later(0.02, trigger_a)
    got = []
    with pytest.raises(cf.TimeoutError) as info:
        for f in as_completed([a, b, c], timeout=0.3):
            got.append(f)
    timer.join()
    assert got == [a]
    assert str(info.value) == "2 (of 3) futures unfinished"


@pytest.mark.parametrize("timeout", [0, -1])
def test_zero_timeout_with_pending_matches_stdlib(timeout):
    def call(api):
        done = api.Future()
        done.set_result(1)
        got = []
        try:
            for f in api.as_completed([api.Future(), done, api.Future()], timeout=timeout):
                got.append(f is done)
        except cf.TimeoutError as exc:
            return got, str(exc)
        return got, None

    assert assert_same_outcome(call) == ("returned", ([True], "2 (of 3) futures unfinished"))


def test_cancelled_but_not_notified_is_not_finished_matches_stdlib():
    def call(api):
        fut = api.Future()
        fut.cancel()
        try:
            return [f.cancelled() for f in api.as_completed([fut], timeout=0.05)]
        except cf.TimeoutError as exc:
            return str(exc)

    assert_same_outcome(call)


def test_cancelled_future_yielded_once_notified(as_completed):
    fut = ferropool.Future()
    fut.cancel()
    timer = later(0.05, fut.set_running_or_notify_cancel)
    assert list(as_completed([fut], timeout=SHORT)) == [fut]
    timer.join()


def test_non_iterable_matches_stdlib():
    assert_same_outcome(lambda api: list(api.as_completed(5)))


@pytest.mark.parametrize("first, second", list(itertools.permutations(KINDS, 2)))
def test_mix_of_origins(as_completed, maker, first, second):
    d1 = maker.done(first, 1)
    d2 = maker.done(second, 2)
    p1, t1 = maker.pending(first, 3)
    p2, t2 = maker.pending(second, exc=ValueError())
    def complete_in_order():
        time.sleep(0.02)
        t2()
        p2.exception(timeout=SHORT)  # p2 has finished before p1 is released
        t1()

    completer = threading.Thread(target=complete_in_order)
    completer.start()
    got = list(as_completed([p1, d1, p2, d2], timeout=SHORT))
    completer.join()
    assert set(got[:2]) == {d1, d2}
    assert got[2:] == [p2, p1]


@pytest.mark.parametrize("executor_kind", ["ferropool", "stdlib"])
def test_over_executor_work(as_completed, executor_kind):
    def task(i):
        time.sleep(0.0005 * (i % 7))
        if i % 11 == 0:
            raise KeyError(i)
        return i

    ex_class = (
        ferropool.ThreadPoolExecutor
        if executor_kind == "ferropool"
        else cf.thread.ThreadPoolExecutor
    )
    with ex_class(max_workers=4) as ex:
        fs = [ex.submit(task, i) for i in range(300)]
        got = list(as_completed(fs, timeout=SHORT * 2))
    assert len(got) == 300
    assert set(got) == set(fs)
    assert all(f.done() for f in got)


def test_every_yielded_future_is_done(as_completed, maker):
    pairs = [maker.pending("ferro_exec", i) for i in range(6)]
    for i, (_, trigger) in enumerate(pairs):
        later(0.01 * i, trigger)
    for f in as_completed([f for f, _ in pairs], timeout=SHORT):
        assert f.done()


def test_breaking_out_early_leaves_futures_usable(as_completed, maker):
    d = maker.done("ferro_hand", 0)
    p, trigger = maker.pending("ferro_hand", 1)
    it = as_completed([d, p])
    assert next(it) is d
    it.close()
    del it
    trigger()
    assert p.result(timeout=0) == 1
    assert list(p._waiters) == []
    assert list(as_completed([p])) == [p]


def test_two_as_completed_over_the_same_futures(maker):
    pairs = [maker.pending("ferro_hand", i) for i in range(4)]
    fs = [f for f, _ in pairs]
    results = {}

    def consume(name, fn):
        results[name] = list(fn(fs, timeout=SHORT))

    threads = [
        threading.Thread(target=consume, args=(name, fn))
        for name, fn in AS_COMPLETEDS.items()
    ]
    for t in threads:
        t.start()
    for _, trigger in pairs:
        trigger()
    for t in threads:
        t.join(SHORT * 2)
    for got in results.values():
        assert sorted(map(id, got)) == sorted(map(id, fs))
    assert len(results) == 2
