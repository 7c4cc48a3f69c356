"""DASK rows of `python -m ferropool bench`: `ferropool.dask.DaskExecutor` on a local
Dask cluster, against distributed's own `ClientExecutor` (``Client.get_executor()``).

One `distributed.LocalCluster` of 2 worker processes with one thread each, on loopback,
started before anything is timed (and warmed up) and closed at the end. Two workloads:

- DASK.tiny: ``list(executor.map(square, range(2,000)))``; ClientExecutor makes one Dask
  task per item, DaskExecutor one per chunk. Target: DaskExecutor at least 20x faster.
- DASK.cpu: ``map`` of 32 CPU-bound tasks of ~25 ms each, against the same map run
  sequentially in this process. Target: a speedup of at least 1.8x on the 2 workers.

Skipped, with a message, where ``distributed`` is not installed
(``pip install "ferropool[dask]"``).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util

from ._bench import OURS, STDLIB, Bench, Row, _fmt_n
from ._bench_process import (
    SEQUENTIAL,
    TASK_SECONDS,
    _calibrate,
    _medians,
    _spin,
    _square,
    _timed,
    _x,
)
from ._showcase import _fmt_seconds

WORKERS = 2
CLIENT_EXECUTOR = "ClientExecutor"


@contextlib.contextmanager
def _executors():
    """{OURS: DaskExecutor, STDLIB: ClientExecutor}, both on one fresh LocalCluster."""
    import distributed

    from .dask import DaskExecutor

    with distributed.LocalCluster(
        n_workers=WORKERS,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        # Its /health and /metrics server: on any free port, not on 8787.
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
    ) as cluster, distributed.Client(cluster, set_as_default=False) as client:
        client.wait_for_workers(WORKERS, timeout=120)
        ours = DaskExecutor(client)
        theirs = client.get_executor(pure=False)
        try:
            yield {STDLIB: theirs, OURS: ours}
        finally:
            ours.shutdown(wait=True, cancel_futures=True)
            theirs.shutdown(wait=True)


def _checked_map(executor, fn, items, expected):
    if executor is None:
        got = list(map(fn, items))
    else:
        got = list(executor.map(fn, items))
    if got != expected:
        raise RuntimeError(f"{fn.__name__} gave different results on {executor!r}")


def _contestants(executors: dict, fn, items, warm_items):
    expected = list(map(fn, items))
    warm_expected = expected[: len(warm_items)]
    return {
        name: (
            functools.partial(_timed, _checked_map, executor, fn, items, expected),
            functools.partial(_checked_map, executor, fn, warm_items, warm_expected),
        )
        for name, executor in executors.items()
    }


def dask_rows(bench: Bench) -> list:
    if importlib.util.find_spec("distributed") is None:
        bench.progress.done(
            'DASK: skipped: distributed is not installed (pip install "ferropool[dask]")'
        )
        return []
    setup = f"LocalCluster, {WORKERS} worker processes"
    n_tiny = 500 if bench.quick else 2_000
    # ClientExecutor takes ~5 ms per tiny task: fewer runs keep the row under a minute.
    tiny_repeat = min(bench.repeat, 3)
    spin = _calibrate(TASK_SECONDS)
    cpu_items = [spin] * (16 if bench.quick else 32)
    rows = []
    bench.progress.step("DASK starting a LocalCluster")
    with _executors() as executors:
        items = list(range(n_tiny))
        samples = bench.alternate(
            "DASK tiny map",
            _contestants(executors, _square, items, items[:100]),
            repeat=tiny_repeat,
        )
        med = _medians(samples)
        ratio = med[STDLIB] / med[OURS]
        rows.append(
            Row(
                id="DASK",
                key="DASK.tiny",
                workload=f"map(square, range({_fmt_n(n_tiny)})) ({setup});"
                f" left: distributed's {CLIENT_EXECUTOR}",
                unit="seconds for the whole map",
                samples=samples,
                sizes={name: n_tiny for name in samples},
                stdlib=f"{_fmt_seconds(med[STDLIB])} ({CLIENT_EXECUTOR})",
                ferropool=_fmt_seconds(med[OURS]),
                ratio=ratio,
                ratio_text=_x(ratio),
                ratio_means=f"distributed's {CLIENT_EXECUTOR}.map time / DaskExecutor.map time"
                " (higher is better)",
                target=">= 20x",
                met=ratio >= 20,
                score=ratio / 20,
                note=f"{CLIENT_EXECUTOR}.map: {_fmt_seconds(med[STDLIB] / n_tiny)}/item;"
                f" DaskExecutor.map: {_fmt_seconds(med[OURS] / n_tiny)}/item",
            )
        )
        samples = bench.alternate(
            "DASK CPU-bound map",
            _contestants({SEQUENTIAL: None, **executors}, _spin, cpu_items, cpu_items[:4]),
        )
        med = _medians(samples)
        speedup = {name: med[SEQUENTIAL] / med[name] for name in (OURS, STDLIB)}
        floor = 1.8
        rows.append(
            Row(
                id="DASK",
                key="DASK.cpu",
                workload=f"map(cpu task of ~{TASK_SECONDS * 1e3:g} ms) x {len(cpu_items)}"
                f" ({setup}); left: {CLIENT_EXECUTOR}",
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
                note=f"sequential: {_fmt_seconds(med[SEQUENTIAL])}",
            )
        )
    return rows


PROVIDERS = [("DASK", dask_rows)]
