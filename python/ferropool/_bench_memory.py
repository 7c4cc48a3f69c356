"""The memory workloads of `python -m ferropool bench`: SPEC P7.

Each measurement runs in a fresh interpreter (``python -m ferropool._bench_memory ...``,
which prints one JSON object), so that one implementation's freed-but-kept memory does
not count against the other's. Memory is the resident set size: the current RSS from
/proc/self/statm where there is one, else the peak RSS from getrusage.
"""

from __future__ import annotations

import concurrent.futures as _cf
import gc
import inspect
import itertools
import json
import os
import statistics
import subprocess
import sys
import threading

from ._bench import OURS, STDLIB, Bench, Row, _fmt_n

_MB = 1e6


def _noop(*args):
    pass


# --- in the child interpreter ----------------------------------------------------------------


def _rss() -> int:
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def _executor_class(impl: str):
    if impl == OURS:
        import ferropool

        return ferropool.ThreadPoolExecutor
    return _cf.ThreadPoolExecutor


def _pending(impl: str, n: int) -> dict:
    """RSS per pending future: `n` no-op tasks queued behind a blocked 1-worker pool."""
    pool = _executor_class(impl)(max_workers=1)
    running, release = threading.Event(), threading.Event()

    def block():
        running.set()
        release.wait()

    pool.submit(block)
    running.wait()
    for future in [pool.submit(_noop) for _ in range(1000)]:  # warm the submit path
        future.cancel()
    futures = [None] * n  # the caller's list is not the futures' cost
    gc.collect()
    before = _rss()
    for i in range(n):
        futures[i] = pool.submit(_noop)
    after = _rss()
    release.set()
    for future in futures:
        future.result()
    pool.shutdown()
    return {"value": (after - before) / n, "rss_before": before, "rss_after": after}


def _flat(impl: str, mode: str, n: int, checkpoint: int, batch: int) -> dict:
    """RSS growth from `checkpoint` to `n` no-op tasks, run in batches of `batch`."""
    pool = _executor_class(impl)()

    def one_batch():
        if mode == "map":
            for _ in pool.map(_noop, range(batch)):
                pass
        else:
            futures = [pool.submit(_noop) for _ in range(batch)]
            for future in futures:
                future.result()

    one_batch()  # warm-up: threads started
    done, at_checkpoint, peak = 0, None, 0
    while done < n:
        one_batch()
        done += batch
        if done == checkpoint:
            gc.collect()
            at_checkpoint = _rss()
        peak = max(peak, _rss())
    gc.collect()
    end = _rss()
    pool.shutdown()
    return {
        "value": end - at_checkpoint,
        "rss_checkpoint": at_checkpoint,
        "rss_end": end,
        "rss_peak": peak,
    }


def _endless(impl: str, n: int, buffersize: int) -> dict:
    """Peak RSS growth while `map(fn, itertools.count(), buffersize=...)` yields `n` items."""
    pool = _executor_class(impl)()
    warm = pool.map(_noop, itertools.count(), buffersize=buffersize)
    for _ in itertools.islice(warm, 1000):
        pass
    del warm
    gc.collect()
    base = _rss()
    peak = base
    results = pool.map(_noop, itertools.count(), buffersize=buffersize)
    for i, _ in enumerate(itertools.islice(results, n)):
        if i % 10_000 == 0:
            peak = max(peak, _rss())
    peak = max(peak, _rss())
    del results
    pool.shutdown()
    return {"value": peak - base, "rss_base": base, "rss_peak": peak}


def _child(argv: list) -> int:
    what, impl, *numbers = argv
    numbers = [int(x) for x in numbers]
    if what == "pending":
        result = _pending(impl, *numbers)
    elif what in ("submit", "map"):
        result = _flat(impl, what, *numbers)
    elif what == "endless":
        result = _endless(impl, *numbers)
    else:
        raise SystemExit(f"unknown measurement {what!r}")
    print(json.dumps(result))
    return 0


# --- in the benchmark process -------------------------------------------------------------------


def _measure(*args) -> dict:
    """Runs one measurement in a fresh interpreter that imports this same ferropool."""
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-m", f"{__package__}._bench_memory", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"memory measurement {' '.join(map(str, args))} exited {proc.returncode}:\n"
            + proc.stderr
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _stdlib_has_buffersize() -> bool:
    return "buffersize" in inspect.signature(_cf.ThreadPoolExecutor.map).parameters


def _fmt_bytes(value: float) -> str:
    return f"{value:,.0f} B"


def _fmt_mb(value: float) -> str:
    return f"{value / _MB:+.2f} MB"


def _rss_row(key, workload, samples, sizes, limit_mb, means, note="") -> Row:
    medians = {name: statistics.median(s) if s else None for name, s in samples.items()}
    ours = medians[OURS]
    std = medians.get(STDLIB)
    limit = limit_mb * _MB
    return Row(
        id="P7",
        key=key,
        workload=workload,
        unit="bytes of RSS",
        samples=samples,
        sizes=sizes,
        stdlib=_fmt_mb(std) if std is not None else "n/a (3.14+)",
        ferropool=_fmt_mb(ours),
        ratio=ours / _MB,
        ratio_text=_fmt_mb(ours),
        ratio_means=f"ferropool's {means}, in MB (lower is better)",
        target=f"< {limit_mb} MB",
        met=ours < limit,
        score=limit / max(ours, limit / 1000),
        note=note,
    )


def p7(bench: Bench) -> list:
    quick = bench.quick
    n_pending = 50_000 if quick else 200_000
    n_tasks, checkpoint, batch = (
        (200_000, 40_000, 10_000) if quick else (1_000_000, 200_000, 10_000)
    )
    n_endless, buffersize = (200_000 if quick else 1_000_000), 64
    rows = []

    def contestants(*args, impls=(STDLIB, OURS)):
        return {
            impl: (lambda impl=impl: _measure(args[0], impl, *args[1:])["value"], None)
            for impl in impls
        }

    samples = bench.alternate(
        f"P7a {_fmt_n(n_pending)} pending", contestants("pending", n_pending), bench.mem_repeat
    )
    std, ours = statistics.median(samples[STDLIB]), statistics.median(samples[OURS])
    ratio = std / ours
    rows.append(
        Row(
            id="P7",
            key="P7a",
            workload=f"RSS per pending future ({_fmt_n(n_pending)} queued)",
            unit="bytes of RSS per future",
            samples=samples,
            sizes={STDLIB: n_pending, OURS: n_pending},
            stdlib=_fmt_bytes(std),
            ferropool=_fmt_bytes(ours),
            ratio=ratio,
            ratio_text=f"{ratio:.1f}x smaller",
            ratio_means="memory per pending future, stdlib / ferropool (higher is better)",
            target=">= 3x smaller",
            met=ratio >= 3,
            score=ratio / 3,
            note=f"RSS after submitting {n_pending:,} no-ops to a 1-worker pool blocked on an"
            " Event, minus RSS before, per future; each run in a fresh interpreter",
        )
    )

    span = f"from {_fmt_n(checkpoint)} to {_fmt_n(n_tasks)} tasks"
    for mode, text in (("submit", "submit + result"), ("map", "map")):
        samples = bench.alternate(
            f"P7b {text} {_fmt_n(n_tasks)}",
            contestants(mode, n_tasks, checkpoint, batch),
            bench.mem_repeat,
        )
        rows.append(
            _rss_row(
                f"P7b.{mode}",
                f"RSS growth {_fmt_n(checkpoint)} -> {_fmt_n(n_tasks)} tasks, {text}",
                samples,
                {STDLIB: n_tasks, OURS: n_tasks},
                10,
                f"RSS growth {span}",
                note=f"batches of {batch:,} tasks; RSS read after gc.collect() at"
                f" {checkpoint:,} and at {n_tasks:,} tasks"
                if mode == "submit"
                else "",
            )
        )

    impls = (STDLIB, OURS) if _stdlib_has_buffersize() else (OURS,)
    samples = bench.alternate(
        f"P7c map(count(), buffersize={buffersize}) {_fmt_n(n_endless)}",
        contestants("endless", n_endless, buffersize, impls=impls),
        bench.mem_repeat,
    )
    rows.append(
        _rss_row(
            "P7c",
            f"peak RSS, map(count(), buffersize={buffersize}), {_fmt_n(n_endless)}",
            samples,
            {impl: n_endless for impl in impls},
            20,
            "peak RSS growth over the run",
            note="RSS sampled every 10,000 items, over the RSS after a 1,000-item warm-up"
            + (
                ""
                if STDLIB in impls
                else "; the stdlib's map takes buffersize from CPython 3.14 on"
            ),
        )
    )
    return rows


PROVIDERS = [("P7", p7)]

if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
