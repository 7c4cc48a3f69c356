"""The timed workloads of `python -m ferropool bench`: SPEC P1-P6, in this process.

Each provider makes one executor per implementation (its threads started by the
warm-up), so what is timed is the steady state of a long-lived pool, and shuts both
down at the end. Each implementation is paired with its own module's functions:
ferropool's pool with `ferropool.wait`/`as_completed`, the stdlib's with the stdlib's.
"""

from __future__ import annotations

import concurrent.futures as _cf
import contextlib
import functools
import gc
import hashlib
import os
import random
import statistics
import time
import zlib

import ferropool

from ._bench import OURS, STDLIB, Bench, Row, _fmt_n
from ._showcase import _default_workers, _fmt_seconds

_IMPLS = {
    STDLIB: (_cf.ThreadPoolExecutor, _cf.as_completed, _cf.wait),
    OURS: (ferropool.ThreadPoolExecutor, ferropool.as_completed, ferropool.wait),
}


def _noop(*args):
    pass


@contextlib.contextmanager
def _pools(**kwargs):
    pools = {name: impl[0](**kwargs) for name, impl in _IMPLS.items()}
    try:
        yield pools
    finally:
        for pool in pools.values():
            pool.shutdown(wait=True, cancel_futures=True)


def _timed(fn, *args):
    gc.collect()
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def _per_pool(pools: dict, body, n: int, warm_n: int, extra=None, per_item=True) -> dict:
    """Contestants for `Bench.alternate`, one per pool: a sample is the time of
    ``body(pool, n, *extra[name])`` (per item unless `per_item` is false); the warm-up
    runs it untimed on `warm_n` items."""
    extra = extra or {}
    return {
        name: (
            functools.partial(_timed_body, body, pool, n, extra.get(name, ()), per_item),
            functools.partial(body, pool, warm_n, *extra.get(name, ())),
        )
        for name, pool in pools.items()
    }


def _timed_body(body, pool, n, extra, per_item):
    elapsed = _timed(body, pool, n, *extra)
    return elapsed / n if per_item else elapsed


def _x(value: float) -> str:
    digits = 0 if value >= 100 else 1 if value >= 10 else 2
    return f"{value:.{digits}f}x"


def _at_least(ratio: float, target: float) -> tuple:
    return ratio >= target, ratio / target


def _at_most(ratio: float, target: float) -> tuple:
    return ratio <= target, target / ratio if ratio > 0 else float("inf")


# --- P1: bulk submit, then result() of each ------------------------------------------------


def _submit_all(pool, n):
    futures = [pool.submit(_noop) for _ in range(n)]
    for future in futures:
        future.result()
    if len(futures) != n:
        raise RuntimeError("bulk submit lost tasks")


def p1(bench: Bench) -> list:
    n = 20_000 if bench.quick else 100_000
    label = f"P1 submit {_fmt_n(n)}"
    with _pools() as pools:
        samples = bench.alternate(label, _per_pool(pools, _submit_all, n, n // 10))
    row = _throughput_row(
        "P1", "P1", f"submit {_fmt_n(n)} no-ops, result() of each", samples, n, "task", 25
    )
    row.note = f"P1-P4 use the default max_workers, min(32, cpu + 4) = {_default_workers()}"
    return [row]


def _throughput_row(pid, key, workload, samples, n, per, target) -> Row:
    std, ours = statistics.median(samples[STDLIB]), statistics.median(samples[OURS])
    ratio = std / ours
    met, score = _at_least(ratio, target)
    return Row(
        id=pid,
        key=key,
        workload=workload,
        unit=f"seconds per {per}",
        samples=samples,
        sizes={STDLIB: n, OURS: n},
        stdlib=f"{_fmt_seconds(std)}/{per}",
        ferropool=f"{_fmt_seconds(ours)}/{per}",
        ratio=ratio,
        ratio_text=_x(ratio),
        ratio_means="throughput, stdlib time / ferropool time (higher is better)",
        target=f">= {target}x",
        met=met,
        score=score,
    )


# --- P2: map against plain map --------------------------------------------------------------


def _pool_map(pool, n):
    results = list(pool.map(_noop, range(n)))
    if len(results) != n:
        raise RuntimeError("map lost items")


def _plain_map(n):
    list(map(_noop, range(n)))


def p2(bench: Bench) -> list:
    n = 200_000 if bench.quick else 1_000_000
    n_std = n // 10  # the stdlib's map of 1M items takes ~15 s a run: timed on fewer
    label = f"P2 map {_fmt_n(n)}"
    with _pools() as pools:
        contestants = {
            "plain map": (lambda: _timed(_plain_map, n) / n, lambda: _plain_map(n)),
            **_per_pool({STDLIB: pools[STDLIB]}, _pool_map, n_std, n_std // 10),
            **_per_pool({OURS: pools[OURS]}, _pool_map, n, n),
        }
        samples = bench.alternate(label, contestants)
    plain, std, ours = (statistics.median(samples[k]) for k in ("plain map", STDLIB, OURS))
    ratio = ours / plain
    met, score = _at_most(ratio, 2)
    return [
        Row(
            id="P2",
            key="P2",
            workload=f"list(ex.map(noop, range({_fmt_n(n)})))",
            unit="seconds per item",
            samples=samples,
            sizes={"plain map": n, STDLIB: n_std, OURS: n},
            stdlib=f"{_fmt_seconds(std)}/item = {_x(std / plain)} plain",
            ferropool=f"{_fmt_seconds(ours)}/item = {_x(ours / plain)} plain",
            ratio=ratio,
            ratio_text=f"{_x(ratio)} plain",
            ratio_means="map time / plain list(map(noop, ...)) time (lower is better)",
            target="<= 2x plain",
            met=met,
            score=score,
            note=f"plain list(map(noop, range({n:,}))) took {_fmt_seconds(plain * n)}"
            f" ({_fmt_seconds(plain)}/item); the stdlib's map was timed over {n_std:,} items"
            " and is shown per item",
        )
    ]


# --- P3: round-trip latency -----------------------------------------------------------------


def _round_trips(pool, n):
    """The median of `n` submit(noop).result() round trips, each timed alone."""
    clock = time.perf_counter_ns
    times = []
    for _ in range(n):
        start = clock()
        pool.submit(_noop).result()
        times.append(clock() - start)
    return statistics.median(times) * 1e-9


def p3(bench: Bench) -> list:
    n = 500 if bench.quick else 2000
    with _pools() as pools:
        gc.collect()
        samples = bench.alternate(
            "P3 round trip",
            {
                name: (
                    functools.partial(_round_trips, pool, n),
                    functools.partial(_round_trips, pool, 200),
                )
                for name, pool in pools.items()
            },
        )
    std, ours = statistics.median(samples[STDLIB]), statistics.median(samples[OURS])
    ratio = std / ours
    met, score = _at_least(ratio, 4)
    return [
        Row(
            id="P3",
            key="P3",
            workload="submit(noop).result() round trip",
            unit="seconds (median of the round trips in a sample)",
            samples=samples,
            sizes={STDLIB: n, OURS: n},
            stdlib=_fmt_seconds(std),
            ferropool=_fmt_seconds(ours),
            ratio=ratio,
            ratio_text=_x(ratio),
            ratio_means="latency, stdlib / ferropool (higher is better)",
            target=">= 4x",
            met=met,
            score=score,
            note=f"each sample is the median of {n:,} round trips timed one by one",
        )
    ]


# --- P4: as_completed and wait ---------------------------------------------------------------


def _then_as_completed(pool, n, as_completed):
    futures = [pool.submit(_noop) for _ in range(n)]
    count = sum(1 for _ in as_completed(futures))
    if count != n:
        raise RuntimeError("as_completed lost futures")


def _then_wait(pool, n, wait):
    futures = [pool.submit(_noop) for _ in range(n)]
    done, not_done = wait(futures)
    if len(done) != n or not_done:
        raise RuntimeError("wait lost futures")


def p4(bench: Bench) -> list:
    n = 20_000 if bench.quick else 100_000
    rows = []
    with _pools() as pools:
        for key, name, body, index in (
            ("P4.as_completed", "as_completed", _then_as_completed, 1),
            ("P4.wait", "wait", _then_wait, 2),
        ):
            functions = {impl: (_IMPLS[impl][index],) for impl in pools}
            samples = bench.alternate(
                f"P4 {name} {_fmt_n(n)}", _per_pool(pools, body, n, n // 10, functions)
            )
            rows.append(
                _throughput_row(
                    "P4", key, f"submit {_fmt_n(n)} no-ops, {name}()", samples, n, "future", 20
                )
            )
    return rows


# --- P5: work that releases the GIL ----------------------------------------------------------


def _text(size: int) -> bytes:
    """Compressible, deterministic pseudo-text of `size` bytes."""
    rng = random.Random(5)
    words = [
        bytes(rng.choices(b"abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 10))) for _ in range(4096)
    ]
    out = b" ".join(rng.choices(words, k=size // 5))
    while len(out) < size:
        out += out
    return out[:size]


def _sha256(buf):
    return hashlib.sha256(buf).digest()


def _compress(buf):
    return len(zlib.compress(buf))


def _sequential(_, tasks, fn, buf, expected):
    for _ in range(tasks):
        if fn(buf) != expected:
            raise RuntimeError(f"{fn.__name__} gave a different result")


def _pooled(pool, tasks, fn, buf, expected):
    if list(pool.map(fn, [buf] * tasks)) != [expected] * tasks:
        raise RuntimeError(f"{fn.__name__} on a pool gave different results")


def p5(bench: Bench) -> list:
    cores = bench.cores
    mib = 1 << 20
    cases = (
        # key, what, function, buffer, tasks
        (
            "P5.sha256",
            "hashlib.sha256",
            _sha256,
            os.urandom(8 * mib),
            (8 if bench.quick else 32) * cores,
        ),
        ("P5.zlib", "zlib.compress", _compress, _text(1 * mib), (4 if bench.quick else 8) * cores),
    )
    rows = []
    with _pools(max_workers=cores) as pools:
        for key, what, fn, buf, tasks in cases:
            job = (fn, buf, fn(buf))
            size = f"{len(buf) // mib} MiB"
            contestants = {
                "sequential": (
                    functools.partial(_timed, _sequential, None, tasks, *job),
                    functools.partial(_sequential, None, tasks, *job),
                ),
                **_per_pool(pools, _pooled, tasks, tasks, {n: job for n in pools}, per_item=False),
            }
            samples = bench.alternate(f"P5 {what} {tasks}x{size.replace(' ', '')}", contestants)
            seq, std, ours = (statistics.median(samples[k]) for k in ("sequential", STDLIB, OURS))
            std_speedup, our_speedup = seq / std, seq / ours
            floor = 0.95 * cores
            met = our_speedup >= floor and our_speedup >= std_speedup
            rows.append(
                Row(
                    id="P5",
                    key=key,
                    workload=f"{what}, map {tasks} x {size}, {cores} workers",
                    unit="seconds for all the tasks",
                    samples=samples,
                    sizes={"sequential": tasks, STDLIB: tasks, OURS: tasks},
                    stdlib=f"{_fmt_seconds(std)} = {_x(std_speedup)} seq",
                    ferropool=f"{_fmt_seconds(ours)} = {_x(our_speedup)} seq",
                    ratio=our_speedup,
                    ratio_text=f"{_x(our_speedup)} seq",
                    ratio_means="speedup, sequential time in this process / pool time"
                    " (higher is better)",
                    target=f">= {floor:.2f}x and >= stdlib",
                    met=met,
                    score=min(our_speedup / floor, our_speedup / std_speedup),
                    note=f"sequential: {_fmt_seconds(seq)}",
                )
            )
    return rows


# --- P6: sleeping tasks on 100 workers ----------------------------------------------------------

_SLEEP = 0.005
_SLEEP_WORKERS = 100


def _sleep_submit(pool, n):
    for future in [pool.submit(time.sleep, _SLEEP) for _ in range(n)]:
        future.result()


def _sleep_map(pool, n):
    for _ in pool.map(time.sleep, [_SLEEP] * n):
        pass


def _sleep_in_a_row(_, n):
    for _ in range(n):
        time.sleep(_SLEEP)


def p6(bench: Bench) -> list:
    n = 1000 if bench.quick else 2000
    rounds = n // _SLEEP_WORKERS
    ideal = rounds * _SLEEP
    # What the OS alone adds: one thread sleeping as many times in a row as each worker.
    floor = statistics.median(
        _timed(_sleep_in_a_row, None, rounds) for _ in range(max(bench.repeat, 3))
    )
    rows = []
    with _pools(max_workers=_SLEEP_WORKERS) as pools:
        for key, name, body in (
            ("P6.submit", "submit + result", _sleep_submit),
            ("P6.map", "map", _sleep_map),
        ):
            samples = bench.alternate(
                f"P6 sleep {name}", _per_pool(pools, body, n, n, per_item=False)
            )
            std, ours = statistics.median(samples[STDLIB]), statistics.median(samples[OURS])
            ratio = ours / ideal
            met, score = _at_most(ratio, 1.05)
            rows.append(
                Row(
                    id="P6",
                    key=key,
                    workload=f"{n:,} x sleep({_SLEEP * 1e3:g} ms), {_SLEEP_WORKERS} workers,"
                    f" {name}",
                    unit="seconds (wall)",
                    samples=samples,
                    sizes={STDLIB: n, OURS: n},
                    stdlib=f"{_fmt_seconds(std)} = {std / ideal:.3f}x ideal",
                    ferropool=f"{_fmt_seconds(ours)} = {ours / ideal:.3f}x ideal",
                    ratio=ratio,
                    ratio_text=f"{ratio:.3f}x ideal",
                    ratio_means=f"ferropool wall time / ideal ({n:,} x {_SLEEP * 1e3:g} ms /"
                    f" {_SLEEP_WORKERS} = {_fmt_seconds(ideal)}; lower is better)",
                    target="<= 1.05x ideal",
                    met=met,
                    score=score,
                    note=f"one thread sleeping {rounds} x {_SLEEP * 1e3:g} ms in a row, no pool,"
                    f" takes {_fmt_seconds(floor)} = {floor / ideal:.3f}x ideal"
                    if key == "P6.submit"
                    else "",
                )
            )
    return rows


PROVIDERS = [("P1", p1), ("P2", p2), ("P3", p3), ("P4", p4), ("P5", p5), ("P6", p6)]
