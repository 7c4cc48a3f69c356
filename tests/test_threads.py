"""C3: workers are real Python threads: names, threading.local, the initializer."""

from __future__ import annotations

import re
import threading

import pytest

import ferropool
from conftest import SHORT, STDLIB_TPE

pytestmark = pytest.mark.timeout(30)

TPE = ferropool.ThreadPoolExecutor


def _names_of_all_workers(ex, n):
    """Run n tasks that must all be running at once; return their thread names."""
    barrier = threading.Barrier(n, timeout=SHORT)

    def task():
        barrier.wait()
        return threading.current_thread().name

    futures = [ex.submit(task) for _ in range(n)]
    return [f.result(timeout=SHORT * 2) for f in futures]


@pytest.mark.timeout(20)
def test_thread_names_with_prefix():
    with TPE(max_workers=4, thread_name_prefix="mypool") as ex:
        names = _names_of_all_workers(ex, 4)
        # later tasks run on the same, named workers
        more = {ex.submit(lambda: threading.current_thread().name).result(timeout=SHORT)
                for _ in range(20)}
    assert sorted(names) == ["mypool_0", "mypool_1", "mypool_2", "mypool_3"]
    assert more <= set(names)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("prefix", ["", None])
def test_default_thread_names(prefix):
    kwargs = {} if prefix == "" else {"thread_name_prefix": prefix}
    with TPE(max_workers=3, **kwargs) as a, TPE(max_workers=2, **kwargs) as b:
        names_a = _names_of_all_workers(a, 3)
        names_b = _names_of_all_workers(b, 2)
    pattern = re.compile(r"ThreadPoolExecutor-(\d+)_(\d+)")
    parsed_a = [pattern.fullmatch(n) for n in names_a]
    parsed_b = [pattern.fullmatch(n) for n in names_b]
    assert all(parsed_a) and all(parsed_b), (names_a, names_b)
    # one executor number per executor, a different one for the next executor
    (num_a,) = {m.group(1) for m in parsed_a}
    (num_b,) = {m.group(1) for m in parsed_b}
    assert int(num_b) > int(num_a)
    assert sorted(int(m.group(2)) for m in parsed_a) == [0, 1, 2]
    assert sorted(int(m.group(2)) for m in parsed_b) == [0, 1]


@pytest.mark.timeout(20)
def test_default_prefix_numbering_is_unique_across_executors():
    numbers = []
    for _ in range(3):
        with TPE(max_workers=1) as ex:
            name = ex.submit(lambda: threading.current_thread().name).result(timeout=SHORT)
        numbers.append(int(re.fullmatch(r"ThreadPoolExecutor-(\d+)_0", name).group(1)))
    assert len(set(numbers)) == 3


@pytest.mark.timeout(20)
def test_mixing_with_stdlib_executors_gives_no_duplicate_default_names():
    # Default names must stay unique even when stdlib executors are created too.
    with TPE(max_workers=1) as a, STDLIB_TPE(max_workers=1) as b, TPE(max_workers=1) as c:
        names = [
            ex.submit(lambda: threading.current_thread().name).result(timeout=SHORT)
            for ex in (a, b, c)
        ]
    assert len(set(names)) == 3, names


@pytest.mark.timeout(20)
def test_worker_is_a_live_python_thread(executor):
    def probe():
        t = threading.current_thread()
        return (
            t.name,
            t.ident == threading.get_ident(),
            t.is_alive(),
            t in threading.enumerate(),
            threading.main_thread() is not t,
        )

    name, same_ident, alive, listed, not_main = executor.submit(probe).result(timeout=SHORT)
    assert same_ident and alive and listed and not_main
    assert any(t.name == name for t in threading.enumerate())


@pytest.mark.timeout(20)
def test_threading_local_survives_across_tasks():
    local = threading.local()

    def put(value):
        local.value = value
        return threading.get_ident()

    def get():
        return getattr(local, "value", None), threading.get_ident()

    marker = object()
    with TPE(max_workers=1) as ex:
        ident = ex.submit(put, marker).result(timeout=SHORT)
        for _ in range(50):
            value, ident2 = ex.submit(get).result(timeout=SHORT)
            assert ident2 == ident
            assert value is marker
    # the main thread never saw it
    assert getattr(local, "value", None) is None


class _Session:
    count = 0
    lock = threading.Lock()

    def __init__(self):
        with _Session.lock:
            _Session.count += 1
        self.owner = threading.get_ident()


@pytest.mark.timeout(20)
def test_initializer_opens_one_session_per_thread():
    # The requests pattern: one session per worker thread, kept in a threading.local.
    local = threading.local()
    _Session.count = 0

    def init():
        local.session = _Session()

    def task(i):
        session = local.session  # AttributeError if the local was lost
        assert session.owner == threading.get_ident()
        return id(session), threading.get_ident()

    with TPE(max_workers=3, initializer=init) as ex:
        _names_of_all_workers(ex, 3)
        pairs = [f.result(timeout=SHORT) for f in [ex.submit(task, i) for i in range(300)]]
    sessions_by_thread = {}
    for session_id, ident in pairs:
        sessions_by_thread.setdefault(ident, set()).add(session_id)
    assert all(len(s) == 1 for s in sessions_by_thread.values())
    assert _Session.count <= 3
    assert _Session.count >= len(sessions_by_thread)


@pytest.mark.timeout(20)
def test_initializer_runs_once_per_worker_on_that_worker_with_initargs():
    calls = []
    lock = threading.Lock()
    local = threading.local()

    def init(a, b, *, nothing=None):
        local.initialized = (a, b)
        with lock:
            calls.append((threading.get_ident(), threading.current_thread().name, a, b))

    def task(i):
        return getattr(local, "initialized", None), threading.get_ident()

    with TPE(max_workers=3, thread_name_prefix="init", initializer=init,
             initargs=("x", 2)) as ex:
        _names_of_all_workers(ex, 3)
        results = [ex.submit(task, i).result(timeout=SHORT) for i in range(100)]
        results += [f.result(timeout=SHORT) for f in [ex.submit(task, i) for i in range(100)]]

    idents = [c[0] for c in calls]
    assert len(idents) == len(set(idents)) == 3, calls  # once per worker, 3 workers
    assert {c[1] for c in calls} == {"init_0", "init_1", "init_2"}
    assert all(c[2:] == ("x", 2) for c in calls)
    assert all(tag == ("x", 2) for tag, _ in results)  # ran before every task
    assert {ident for _, ident in results} <= set(idents)
    assert threading.get_ident() not in idents


@pytest.mark.timeout(20)
def test_initializer_without_initargs():
    calls = []

    def init(*args):
        calls.append(args)

    with TPE(max_workers=1, initializer=init) as ex:
        ex.submit(abs, 1).result(timeout=SHORT)
        ex.submit(abs, 1).result(timeout=SHORT)
    assert calls == [()]


@pytest.mark.timeout(20)
def test_initializer_initargs_as_list():
    calls = []
    with TPE(max_workers=1, initializer=lambda *a: calls.append(a), initargs=[1, 2]) as ex:
        ex.submit(abs, 1).result(timeout=SHORT)
    assert calls == [(1, 2)]
