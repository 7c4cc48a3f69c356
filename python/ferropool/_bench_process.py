"""SPEC P8: ferropool's process pool vs `concurrent.futures.ProcessPoolExecutor` vs
`multiprocessing.Pool`, side by side in this one process.

Five workloads, each a plain function that returns the median of its timed runs per
contestant, in seconds (``{"ferropool": ..., "concurrent.futures": ...,
"multiprocessing.Pool": ...}``, plus "sequential" where the target is a speedup):

- `bulk_submit`: submit n no-op tasks, then result() of each (seconds per task);
  `multiprocessing.Pool` does the same with apply_async / get.
- `round_trip`: one submit(noop).result() on an idle pool (the median round trip).
- `cpu_map`: a CPU-bound pure-Python function mapped over tasks of ~25 ms, against
  the same map run sequentially in this process (seconds for the whole map).
- `chunked_map`: map(square, range(n), chunksize=256), against Pool.map with the same
  chunksize (seconds for the whole map).
- `behind_long`: one long task, then short ones, right after a burst of tiny tasks:
  seconds until every short task is done (the stdlib's shared queue hands them to the
  free workers; a pool that queued them behind the long task makes them wait for it).

All pools use the same start method (the platform's default unless `method` is given)
and `workers` processes (the usable cores by default); each is started and warmed up
before anything is timed, and the contestants alternate from run to run. `P8` is the
same, as rows of ``python -m ferropool bench``.
"""

from __future__ import annotations

import concurrent.futures as _cf
import contextlib
import functools
import gc
import multiprocessing as _mp
import multiprocessing.pool
import os
import statistics
import time

import ferropool

from ._bench import OURS, STDLIB, Bench, Row, _fmt_n
from ._showcase import _fmt_seconds

POOL = "multiprocessing.Pool"
SEQUENTIAL = "sequential"
CHUNKSIZE = 256
TASK_SECONDS = 0.025


def _noop(*args):
    return None


def _square(x):
    return x * x


def _spin(n):
    total = 0
    for i in range(n):
        total += i * i
    return total


def _cores() -> int:
    cpu_count = getattr(os, "process_cpu_count", os.cpu_count)
    return cpu_count() or 1


@contextlib.contextmanager
def _pools(workers: int, method: str | None = None, which=(OURS, STDLIB, POOL)):
    """One pool per contestant, all started (every worker up) before they are timed."""
    context = _mp.get_context(method)
    makers = {
        OURS: lambda: ferropool.ProcessPoolExecutor(workers, mp_context=context),
        STDLIB: lambda: _cf.ProcessPoolExecutor(workers, mp_context=context),
        POOL: lambda: context.Pool(workers),
    }
    pools = {}
    try:
        for name in which:
            pools[name] = makers[name]()
            _start_every_worker(pools[name], workers)
        yield pools
    finally:
        for name, pool in pools.items():
            if name == POOL:
                pool.close()
                pool.join()
            else:
                pool.shutdown(wait=True, cancel_futures=True)


def _start_every_worker(pool, workers: int) -> None:
    # Pools that start workers on demand start them all once this many tasks overlap.
    if isinstance(pool, _mp.pool.Pool):
        pool.map(time.sleep, [0.05] * workers, chunksize=1)
    else:
        list(pool.map(time.sleep, [0.05] * workers))


def _timed(fn, *args) -> float:
    gc.collect()
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


# --- the bodies: what one timed run does, per kind of pool ---------------------------------


def _bulk(pool, n: int) -> None:
    if isinstance(pool, _mp.pool.Pool):
        results = [pool.apply_async(_noop) for _ in range(n)]
        done = [result.get() for result in results]
    else:
        futures = [pool.submit(_noop) for _ in range(n)]
        done = [future.result() for future in futures]
    if len(done) != n:
        raise RuntimeError("bulk submit lost tasks")


def _round_trips(pool, n: int) -> float:
    """The median of `n` round trips, each timed alone."""
    clock = time.perf_counter_ns
    call = (
        functools.partial(pool.apply, _noop)
        if isinstance(pool, _mp.pool.Pool)
        else lambda: pool.submit(_noop).result()
    )
    times = []
    for _ in range(n):
        start = clock()
        call()
        times.append(clock() - start)
    return statistics.median(times) * 1e-9


def _map(pool, fn, items, chunksize=None) -> list:
    if pool is None:
        return list(map(fn, items))
    if isinstance(pool, _mp.pool.Pool):
        return pool.map(fn, items, chunksize)
    return list(pool.map(fn, items, chunksize=chunksize or 1))


def _behind_long(pool, long_seconds: float, n: int, short_seconds: float) -> float:
    """Seconds from submitting one long task and `n` short ones until the short ones are
    all done; the long one is waited for afterwards, untimed."""
    list(pool.map(_noop, range(200)))  # what a pool that batches tiny tasks learns from
    gc.collect()
    start = time.perf_counter()
    long = pool.submit(time.sleep, long_seconds)
    shorts = [pool.submit(time.sleep, short_seconds) for _ in range(n)]
    _cf.wait(shorts)
    elapsed = time.perf_counter() - start
    long.result()
    return elapsed


def _checked_map(pool, fn, items, expected, chunksize=None) -> None:
    if _map(pool, fn, items, chunksize) != expected:
        raise RuntimeError(f"{fn.__name__} gave different results on {pool!r}")


def _calibrate(seconds: float) -> int:
    """The argument of `_spin` that takes about `seconds` here."""
    n = 20_000
    while True:
        elapsed = _timed(_spin, n)
        if elapsed > 0.005:
            return max(1, int(n * seconds / elapsed))
        n *= 4


# --- contestants for Bench.alternate: {name: (timed run, warm-up)} ---------------------------


def _bulk_contestants(pools, n):
    return {
        name: (
            functools.partial(lambda p: _timed(_bulk, p, n) / n, pool),
            functools.partial(_bulk, pool, max(n // 10, 1)),
        )
        for name, pool in pools.items()
    }


def _round_trip_contestants(pools, n):
    return {
        name: (functools.partial(_round_trips, pool, n), functools.partial(_round_trips, pool, 50))
        for name, pool in pools.items()
    }


def _map_contestants(pools, fn, items, chunksize, sequential: bool):
    expected = list(map(fn, items))
    every = ({SEQUENTIAL: None} if sequential else {}) | dict(pools)
    return {
        name: (
            functools.partial(_timed, _checked_map, pool, fn, items, expected, chunksize),
            functools.partial(_checked_map, pool, fn, items[: len(items) // 4 or 1],
                              expected[: len(items) // 4 or 1], chunksize),
        )
        for name, pool in every.items()
    }


def _behind_long_contestants(pools, long_seconds, n, short_seconds):
    return {
        name: (
            functools.partial(_behind_long, pool, long_seconds, n, short_seconds),
            functools.partial(_behind_long, pool, short_seconds, 2, short_seconds),
        )
        for name, pool in pools.items()
        if name in (OURS, STDLIB)
    }


def _simple_alternate(contestants: dict, repeat: int) -> dict:
    """`Bench.alternate` without the progress line: warm-up, then alternating runs."""
    for _, warm in contestants.values():
        warm()
    samples = {name: [] for name in contestants}
    names = list(contestants)
    for i in range(repeat):
        for name in names if i % 2 == 0 else names[::-1]:
            samples[name].append(contestants[name][0]())
    return samples


def _medians(samples: dict) -> dict:
    return {name: statistics.median(values) for name, values in samples.items()}


# --- the plain functions --------------------------------------------------------------------


def bulk_submit(n=20_000, workers=None, repeat=5, method=None) -> dict:
    """Seconds per task: submit `n` no-ops, then result() of each."""
    workers = workers or _cores()
    with _pools(workers, method) as pools:
        return _medians(_simple_alternate(_bulk_contestants(pools, n), repeat))


def round_trip(n=2_000, workers=None, repeat=5, method=None) -> dict:
    """Seconds per round trip: the median of `n` submit(noop).result() on an idle pool."""
    workers = workers or _cores()
    with _pools(workers, method) as pools:
        return _medians(_simple_alternate(_round_trip_contestants(pools, n), repeat))


def cpu_map(tasks=None, task_seconds=TASK_SECONDS, workers=None, repeat=5, method=None) -> dict:
    """Seconds for map(spin, ...) over `tasks` CPU-bound tasks of about `task_seconds`
    each (8 per worker by default), and for the same map run sequentially here."""
    workers = workers or _cores()
    items = [_calibrate(task_seconds)] * (tasks or 8 * workers)
    with _pools(workers, method) as pools:
        return _medians(_simple_alternate(_map_contestants(pools, _spin, items, None, True), repeat))


def chunked_map(n=200_000, chunksize=CHUNKSIZE, workers=None, repeat=5, method=None) -> dict:
    """Seconds for map(square, range(n), chunksize=chunksize)."""
    workers = workers or _cores()
    items = list(range(n))
    with _pools(workers, method) as pools:
        contestants = _map_contestants(pools, _square, items, chunksize, False)
        return _medians(_simple_alternate(contestants, repeat))


def behind_long(long_seconds=1.0, n=20, short_seconds=0.025, workers=None, repeat=5,
                method=None) -> dict:
    """Seconds until `n` short sleeps submitted right after one long sleep are done."""
    workers = workers or max(2, _cores())
    with _pools(workers, method, which=(OURS, STDLIB)) as pools:
        contestants = _behind_long_contestants(pools, long_seconds, n, short_seconds)
        return _medians(_simple_alternate(contestants, repeat))


# --- P8 rows for `python -m ferropool bench` --------------------------------------------------


def _x(value: float) -> str:
    digits = 0 if value >= 100 else 1 if value >= 10 else 2
    return f"{value:.{digits}f}x"


def p8(bench: Bench) -> list:
    workers = bench.cores
    method = _mp.get_context().get_start_method()
    setup = f"{workers} processes, {method}"
    rows = []
    n_bulk = 5_000 if bench.quick else 20_000
    n_trips = 500 if bench.quick else 2_000
    n_chunked = 50_000 if bench.quick else 200_000
    spin = _calibrate(TASK_SECONDS)
    cpu_items = [spin] * ((4 if bench.quick else 8) * workers)
    with _pools(workers) as pools:
        # Bulk submit + result.
        samples = bench.alternate("P8 bulk submit", _bulk_contestants(pools, n_bulk))
        med = _medians(samples)
        ratio = med[STDLIB] / med[OURS]
        rows.append(
            Row(
                id="P8",
                key="P8.bulk",
                workload=f"submit {_fmt_n(n_bulk)} no-ops, result() of each ({setup})",
                unit="seconds per task",
                samples=samples,
                sizes={name: n_bulk for name in samples},
                stdlib=f"{_fmt_seconds(med[STDLIB])}/task",
                ferropool=f"{_fmt_seconds(med[OURS])}/task",
                ratio=ratio,
                ratio_text=_x(ratio),
                ratio_means="throughput, stdlib time / ferropool time (higher is better)",
                target=">= 5x",
                met=ratio >= 5,
                score=ratio / 5,
                note=f"multiprocessing.Pool apply_async + get: {_fmt_seconds(med[POOL])}/task",
            )
        )
        # Round trip.
        samples = bench.alternate("P8 round trip", _round_trip_contestants(pools, n_trips))
        med = _medians(samples)
        ratio = med[STDLIB] / med[OURS]
        rows.append(
            Row(
                id="P8",
                key="P8.latency",
                workload=f"submit(noop).result() round trip ({setup})",
                unit="seconds (median of the round trips in a sample)",
                samples=samples,
                sizes={name: n_trips for name in samples},
                stdlib=_fmt_seconds(med[STDLIB]),
                ferropool=_fmt_seconds(med[OURS]),
                ratio=ratio,
                ratio_text=_x(ratio),
                ratio_means="latency, stdlib / ferropool (higher is better)",
                target=">= 3x",
                met=ratio >= 3,
                score=ratio / 3,
                note=f"multiprocessing.Pool apply: {_fmt_seconds(med[POOL])}",
            )
        )
        # CPU-bound map.
        samples = bench.alternate(
            "P8 CPU-bound map", _map_contestants(pools, _spin, cpu_items, None, True)
        )
        med = _medians(samples)
        speedup = {name: med[SEQUENTIAL] / med[name] for name in (OURS, STDLIB, POOL)}
        floor = 0.95 * workers
        rows.append(
            Row(
                id="P8",
                key="P8.cpu",
                workload=f"map(cpu task of ~{TASK_SECONDS * 1e3:g} ms) x {len(cpu_items)}"
                f" ({setup})",
                unit="seconds for the whole map",
                samples=samples,
                sizes={name: len(cpu_items) for name in samples},
                stdlib=f"{_fmt_seconds(med[STDLIB])} = {_x(speedup[STDLIB])} seq",
                ferropool=f"{_fmt_seconds(med[OURS])} = {_x(speedup[OURS])} seq",
                ratio=speedup[OURS],
                ratio_text=f"{_x(speedup[OURS])} seq",
                ratio_means="speedup, sequential time in this process / pool time"
                " (higher is better)",
                target=f">= {floor:.2f}x",
                met=speedup[OURS] >= floor,
                score=speedup[OURS] / floor,
                note=f"sequential: {_fmt_seconds(med[SEQUENTIAL])};"
                f" multiprocessing.Pool.map: {_x(speedup[POOL])} seq",
            )
        )
        # map(chunksize=256) against Pool.map.
        items = list(range(n_chunked))
        samples = bench.alternate(
            "P8 map chunksize=256", _map_contestants(pools, _square, items, CHUNKSIZE, False)
        )
        med = _medians(samples)
        ratio = med[POOL] / med[OURS]
        rows.append(
            Row(
                id="P8",
                key="P8.chunked",
                workload=f"map(square, range({_fmt_n(n_chunked)}), chunksize={CHUNKSIZE})"
                f" ({setup})",
                unit="seconds for the whole map",
                samples=samples,
                sizes={name: n_chunked for name in samples},
                stdlib=_fmt_seconds(med[STDLIB]),
                ferropool=_fmt_seconds(med[OURS]),
                ratio=ratio,
                ratio_text=f"{_x(ratio)} Pool",
                ratio_means="multiprocessing.Pool.map time / ferropool time (higher is better)",
                target=">= 1x Pool.map",
                met=ratio >= 1,
                score=ratio,
                note=f"multiprocessing.Pool.map: {_fmt_seconds(med[POOL])}",
            )
        )
        # Short tasks behind a long one.
        long_s, short_s, n_short = (0.4, 0.01, 20) if bench.quick else (1.0, 0.025, 20)
        samples = bench.alternate(
            "P8 short tasks behind a long one",
            _behind_long_contestants(pools, long_s, n_short, short_s),
        )
        med = _medians(samples)
        ratio = med[STDLIB] / med[OURS]
        ideal = n_short * short_s / max(1, workers - 1)
        rows.append(
            Row(
                id="P8",
                key="P8.behind",
                workload=f"{n_short} x sleep({short_s * 1e3:g} ms) behind one"
                f" sleep({long_s:g} s), after tiny tasks ({setup})",
                unit="seconds until the short tasks are done",
                samples=samples,
                sizes={name: n_short for name in samples},
                stdlib=_fmt_seconds(med[STDLIB]),
                ferropool=_fmt_seconds(med[OURS]),
                ratio=ratio,
                ratio_text=_x(ratio),
                ratio_means="stdlib time / ferropool time (higher is better)",
                target=">= 0.9x",
                met=ratio >= 0.9,
                score=ratio / 0.9,
                note=f"the short tasks on the other {max(1, workers - 1)} worker(s) alone:"
                f" {_fmt_seconds(ideal)}; the long task: {_fmt_seconds(long_s)}",
            )
        )
    return rows


PROVIDERS = [("P8", p8)]


def main() -> None:
    """Prints the five workloads as plain dicts (``python -m ferropool._bench_process``)."""
    # Through the module's import name, so that the tasks pickle as
    # ferropool._bench_process.*, not __main__.*.
    from ferropool import _bench_process as module

    for name in ("bulk_submit", "round_trip", "cpu_map", "chunked_map", "behind_long"):
        medians = getattr(module, name)()
        line = ", ".join(f"{k}: {_fmt_seconds(v)}" for k, v in medians.items())
        print(f"{name}: {line}", flush=True)


if __name__ == "__main__":
    main()
