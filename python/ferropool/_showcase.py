"""`python -m ferropool`: ferropool and concurrent.futures side by side, one table.

Runs a few built-in workloads on ``ferropool.ThreadPoolExecutor`` and on the stdlib's
``concurrent.futures.ThreadPoolExecutor`` in this one process, alternating the two
(after an untimed warm-up), and prints the median time of each and their ratio.
Progress goes to stderr, the table to stdout. A showcase, not the full benchmark:
timings depend on the machine and on what else it is doing.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import platform
import statistics
import sys
import time
from concurrent.futures.thread import ThreadPoolExecutor as _StdlibExecutor

from . import ThreadPoolExecutor as _FerropoolExecutor
from . import __version__

HELP = "run built-in workloads on ferropool and concurrent.futures, print a table (default)"

# Workload sizes: (bulk tasks, map items, sleeping tasks). --quick keeps a whole run
# well under 15 seconds on a loaded 2-core machine, stdlib side included.
_FULL = (100_000, 200_000, 1_000)
_QUICK = (20_000, 40_000, 300)
_SLEEP = 0.002  # seconds per sleeping task
_IO_WORKERS = 32
_WARMUP_FRACTION = 10  # the warm-up runs 1/10 of each workload


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smaller workloads and 3 runs each (a whole run takes a few seconds)",
    )
    parser.add_argument(
        "--repeat",
        type=_positive_int,
        metavar="N",
        help="timed runs of each workload per implementation (default 5, or 3 with --quick)",
    )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


# --- the tasks -----------------------------------------------------------------------


def _noop():
    pass


def _identity(x):
    return x


# --- the workloads: each takes an executor and a size and returns the seconds taken ---
# The executor is made (and its threads started by the warm-up) outside the timing:
# what is timed is the steady state a long-lived pool sees.


def _bulk(executor, n):
    gc.collect()
    start = time.perf_counter()
    futures = [executor.submit(_noop) for _ in range(n)]
    for future in futures:
        future.result()
    elapsed = time.perf_counter() - start
    if len(futures) != n or not all(f.done() for f in futures):
        raise RuntimeError(f"{type(executor).__module__}: bulk submit lost tasks")
    return elapsed


def _map(executor, n):
    gc.collect()
    start = time.perf_counter()
    results = list(executor.map(_identity, range(n)))
    elapsed = time.perf_counter() - start
    if results != list(range(n)):
        raise RuntimeError(f"{type(executor).__module__}: map returned wrong results")
    return elapsed


def _sleeping(executor, n):
    gc.collect()
    start = time.perf_counter()
    futures = [executor.submit(time.sleep, _SLEEP) for _ in range(n)]
    for future in futures:
        future.result()
    return time.perf_counter() - start


def _plain_map(n):
    start = time.perf_counter()
    list(map(_identity, range(n)))
    return time.perf_counter() - start


# --- running and reporting -------------------------------------------------------------

_IMPLEMENTATIONS = (("concurrent.futures", _StdlibExecutor), ("ferropool", _FerropoolExecutor))


class _Progress:
    """One line per workload on stderr; rewritten in place when stderr is a terminal."""

    def __init__(self) -> None:
        self._tty = sys.stderr.isatty()

    def update(self, text: str) -> None:
        if self._tty:
            sys.stderr.write("\r\033[K" + text)
            sys.stderr.flush()

    def done(self, text: str) -> None:
        sys.stderr.write(("\r\033[K" if self._tty else "") + text + "\n")
        sys.stderr.flush()


def _measure(label, workload, n, max_workers, repeat, progress):
    """Medians of `repeat` timed runs per implementation, alternating which goes first."""
    times = {name: [] for name, _ in _IMPLEMENTATIONS}
    executors = {name: cls(max_workers=max_workers) for name, cls in _IMPLEMENTATIONS}
    try:
        progress.update(f"{label}: warm-up")
        for name, _ in _IMPLEMENTATIONS:
            workload(executors[name], max(n // _WARMUP_FRACTION, 100))
        for i in range(repeat):
            order = _IMPLEMENTATIONS if i % 2 == 0 else _IMPLEMENTATIONS[::-1]
            for name, _ in order:
                progress.update(f"{label}: run {i + 1}/{repeat}, {name}")
                times[name].append(workload(executors[name], n))
    finally:
        for executor in executors.values():
            executor.shutdown(wait=True, cancel_futures=True)
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    progress.done(
        f"{label}: " + ", ".join(f"{name} {_fmt_seconds(t)}" for name, t in medians.items())
    )
    return medians


def _fmt_seconds(seconds: float) -> str:
    """Three significant digits in the unit that suits: 1.35 s, 48.2 ms, 7.28 us, 481 ns."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale * 0.9995:  # what rounds to 1000 us is 1.00 ms
            return _three_digits(seconds / scale) + " " + unit
    return _three_digits(seconds * 1e9) + " ns"


def _three_digits(value: float) -> str:
    return f"{value:.{2 if value < 10 else 1 if value < 100 else 0}f}"


def _fmt_ratio(ratio: float) -> str:
    digits = 0 if ratio >= 100 else 1 if ratio >= 10 else 2
    text = f"{ratio:.{digits}f}x"
    return f"{text} faster" if ratio >= 1 else f"{text} (slower)"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _machine_lines(repeat: int) -> list:
    cores = os.cpu_count() or 1
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    core_text = f"{cores} cores" + (f" ({usable} usable)" if usable != cores else "")
    return [
        f"machine:   {core_text}, {_cpu_model()}, {platform.system()} {platform.machine()}",
        f"python:    {platform.python_implementation()} {platform.python_version()}"
        f" ({sys.executable})",
        f"ferropool: {__version__}",
        f"method:    median of {repeat} timed run{'s' if repeat > 1 else ''} per implementation,"
        " alternating, after a warm-up",
    ]


def _default_workers() -> int:
    cpu_count = getattr(os, "process_cpu_count", os.cpu_count)
    return min(32, (cpu_count() or 1) + 4)


def _table(rows) -> list:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for j, row in enumerate(rows):
        cells = [
            cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths))
        ]
        lines.append("  ".join(cells).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def run(args: argparse.Namespace) -> int:
    n_bulk, n_map, n_sleep = _QUICK if args.quick else _FULL
    repeat = args.repeat or (3 if args.quick else 5)
    default_workers = None  # each executor's own default, the stdlib's min(32, cpu + 4)
    progress = _Progress()
    started = time.perf_counter()

    bulk = _measure(
        f"bulk submit + result, {n_bulk:,} tasks", _bulk, n_bulk, default_workers, repeat, progress
    )
    mapped = _measure(f"map over {n_map:,} items", _map, n_map, default_workers, repeat, progress)
    slept = _measure(
        f"{n_sleep:,} x sleep({_SLEEP * 1e3:g} ms) on {_IO_WORKERS} workers",
        _sleeping,
        n_sleep,
        _IO_WORKERS,
        repeat,
        progress,
    )
    plain = statistics.median(_plain_map(n_map) for _ in range(repeat))
    ideal = math.ceil(n_sleep / _IO_WORKERS) * _SLEEP
    progress.done(f"done in {time.perf_counter() - started:.1f} s")

    std, ours = (name for name, _ in _IMPLEMENTATIONS)
    rows = [("workload", std, ours, "ratio")]

    def per_item(medians, n, unit):
        return tuple(
            f"{_fmt_seconds(medians[name])}  {_fmt_seconds(medians[name] / n)}/{unit}"
            for name in (std, ours)
        )

    rows.append(
        (f"submit {n_bulk:,} no-op tasks, then result() of each", *per_item(bulk, n_bulk, "task"))
        + (_fmt_ratio(bulk[std] / bulk[ours]),)
    )
    rows.append(
        (f"list(executor.map(f, range({n_map:,})))", *per_item(mapped, n_map, "item"))
        + (_fmt_ratio(mapped[std] / mapped[ours]),)
    )
    rows.append(
        (
            f"{n_sleep:,} x time.sleep({_SLEEP * 1e3:g} ms) on {_IO_WORKERS} workers",
            *(
                f"{_fmt_seconds(slept[name])}  {slept[name] / ideal:.2f}x ideal"
                for name in (std, ours)
            ),
            _fmt_ratio(slept[std] / slept[ours]),
        )
    )

    out = [f"ferropool showcase: ferropool vs {std}, side by side in one process", ""]
    out += _machine_lines(repeat)
    out += [""]
    out += _table(rows)
    out += [
        "",
        f"max_workers = default for the first two rows: min(32, cpu + 4) = {_default_workers()};",
        f"ideal for the sleeping tasks = ceil({n_sleep:,} / {_IO_WORKERS}) x"
        f" {_SLEEP * 1e3:g} ms = {_fmt_seconds(ideal)};",
        f"plain list(map(f, range({n_map:,}))) without any pool takes {_fmt_seconds(plain)}.",
        f"ratio = {std} time / {ours} time; higher is better for ferropool.",
    ]
    print("\n".join(out), flush=True)
    return 0
