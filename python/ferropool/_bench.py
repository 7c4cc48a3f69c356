"""`python -m ferropool bench`: the SPEC P workloads, ferropool vs concurrent.futures.

Runs each workload on ferropool and on the stdlib's concurrent.futures side by side in
this one process (the memory workloads each in a fresh interpreter), repeated and
alternating (stdlib, ferropool, ferropool, stdlib, ...) after an untimed warm-up, and
prints one table: per row the median of each implementation, the ratio that the SPEC
target is about, the target, and whether it is met. Progress goes to stderr, the table
to stdout; --json writes every raw sample, --plot a bar chart (needs matplotlib:
pip install "ferropool[bench]"). The exit status is 0 whether or not the targets are
met, 1 if a workload failed to run, 2 for a usage error.

Timings depend on the machine and on what else it is doing: the report says how many
cores other processes kept busy during the run, and the load averages.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import importlib.util
import json
import os
import platform
import statistics
import sys
import sysconfig
import time
import traceback
from dataclasses import dataclass, field

from . import __version__
from ._showcase import _cpu_model, _positive_int

HELP = "run the SPEC P benchmark: ferropool vs concurrent.futures, table, --json, --plot"

STDLIB, OURS = "concurrent.futures", "ferropool"
_SCHEMA = "ferropool-bench/1"


# --- what a workload hands back ----------------------------------------------------------


@dataclass
class Row:
    """One line of the table, and one object in the JSON's "rows".

    `samples` are the raw timed (or measured) values per contestant, in `unit`, in the
    order they were taken; contestants are STDLIB and OURS, plus any baseline the row
    compares against ("sequential", "plain map"). `ratio` is the figure that the target
    is about (what `ratio_means` says), `score` is how far it is from the target, scaled
    so that 1.0 is exactly on target and more is better (the chart plots it).
    """

    id: str  # the SPEC item: "P4"
    key: str  # unique: "P4.wait"
    workload: str  # what the row measures, for the table
    unit: str
    samples: dict
    stdlib: str  # the table's cells
    ferropool: str
    ratio: float | None
    ratio_text: str
    ratio_means: str
    target: str
    met: bool | None  # None: could not be measured here (e.g. "n/a" before 3.14)
    score: float | None
    sizes: dict = field(default_factory=dict)  # items per sample, per contestant
    note: str = ""

    def medians(self) -> dict:
        return {name: statistics.median(s) if s else None for name, s in self.samples.items()}


@dataclass
class Bench:
    """What a workload provider gets: the sizes to use and the alternating runner."""

    quick: bool
    repeat: int  # timed runs per contestant
    mem_repeat: int  # runs per contestant for the memory workloads (one interpreter each)
    cores: int  # usable cores
    progress: _Progress
    args: argparse.Namespace | None = None  # the command line, for the report

    def alternate(self, label: str, contestants: dict, repeat: int | None = None) -> dict:
        """Runs each contestant's warm-up once, then `repeat` rounds of one sample each,
        the order reversed every other round (a, b, c / c, b, a / ...), so that neither
        side always runs first after the other. `contestants` maps a name to
        ``(run, warm)``: `run()` returns one sample, `warm()` (or None) is untimed.
        Returns {name: [samples]}."""
        repeat = repeat or self.repeat
        names = list(contestants)
        for name in names:
            warm = contestants[name][1]
            if warm is not None:
                self.progress.step(f"{label} [warm-up] {name}")
                warm()
        samples: dict = {name: [] for name in names}
        for i in range(repeat):
            for name in names if i % 2 == 0 else names[::-1]:
                self.progress.step(f"{label} [{i + 1}/{repeat}] {name}")
                samples[name].append(contestants[name][0]())
        return samples


class _Progress:
    """A status line on stderr: rewritten in place on a terminal, one line per step
    otherwise (a log then shows where a long run is)."""

    def __init__(self) -> None:
        self._tty = sys.stderr.isatty()
        self._ellipsis = _symbol("\u2026", "...", sys.stderr)

    def step(self, text: str) -> None:
        text = f"{text} {self._ellipsis}"
        if self._tty:
            sys.stderr.write("\r\033[K" + text)
        else:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()

    def done(self, text: str) -> None:
        sys.stderr.write(("\r\033[K" if self._tty else "") + text + "\n")
        sys.stderr.flush()


def _symbol(fancy: str, plain: str, stream) -> str:
    """`fancy` if `stream` can encode it, else `plain` (a C locale on an old system)."""
    try:
        fancy.encode(getattr(stream, "encoding", None) or "ascii")
    except (UnicodeEncodeError, LookupError):
        return plain
    return fancy


def _fmt_n(n: int) -> str:
    """1,000,000 -> "1M", 100,000 -> "100k", 2,000 -> "2,000": for progress labels."""
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 10_000 and n % 1_000 == 0:
        return f"{n // 1_000}k"
    return f"{n:,}"


# --- the workload providers ---------------------------------------------------------------
# A provider is (SPEC id, function(bench) -> list of Row); the table lists them in the
# order of _PROVIDER_MODULES, each module's PROVIDERS in its own order. `--only P4` runs
# the providers whose id is P4. To add workloads, add a module with PROVIDERS to the list.
# A module in the list that is missing is skipped (a build without the process pool has
# no P8 rows); one that is there but fails to import is an error, not a silent skip.

_PROVIDER_MODULES = ("_bench_threads", "_bench_memory", "_bench_process", "_bench_dask")


def _providers() -> list:
    providers = []
    for name in _PROVIDER_MODULES:
        qualified = f"{__package__}.{name}"
        if importlib.util.find_spec(qualified) is None:
            continue
        providers += list(importlib.import_module(qualified).PROVIDERS)
    return providers


# --- the command line ------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smaller workloads and fewer runs: the whole run takes under a minute"
        " (numbers are indicative only)",
    )
    parser.add_argument(
        "--repeat",
        type=_positive_int,
        metavar="N",
        help="runs per implementation for every workload (default: 5 timed runs and 3 runs"
        " of each memory workload; 3 and 1 with --quick)",
    )
    parser.add_argument(
        "--only",
        type=_workload_ids,
        metavar="P1,P3",
        help="run only these workloads (comma-separated SPEC ids)",
    )
    parser.add_argument("--json", metavar="FILE", help="write all samples and results as JSON")
    parser.add_argument(
        "--plot",
        metavar="FILE.png",
        help="write a bar chart of each result against its target (needs matplotlib:"
        ' pip install "ferropool[bench]")',
    )


def _workload_ids(text: str) -> list:
    known = [pid for pid, _ in _providers()]
    wanted = [part.strip().upper() for part in text.split(",") if part.strip()]
    if not wanted:
        raise argparse.ArgumentTypeError("no workload given")
    unknown = [pid for pid in wanted if pid not in known]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown workload {', '.join(unknown)} (known: {', '.join(known)})"
        )
    return wanted


def run(args: argparse.Namespace) -> int:
    # Only looked for here, imported after the measurements: matplotlib and numpy in the
    # heap make the cyclic GC's full collections, which run during the timed loops,
    # slower (by a third in P1 on a 2-core machine).
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        return _no_matplotlib("no module named 'matplotlib'")
    for path in (args.json, args.plot):
        if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            print(
                f"python -m ferropool bench: error: no such directory for {path}", file=sys.stderr
            )
            return 2

    cores = _usable_cores()
    bench = Bench(
        quick=args.quick,
        repeat=args.repeat or (3 if args.quick else 5),
        mem_repeat=args.repeat or (1 if args.quick else 3),
        cores=cores,
        progress=_Progress(),
        args=args,
    )
    machine = _machine()
    started = time.perf_counter()
    cpu_at_start = _cpu_seconds()
    rows, failed = [], []
    for pid, provider in _providers():
        if args.only and pid not in args.only:
            continue
        try:
            got = provider(bench)
        except Exception:  # one broken workload must not lose the others' numbers
            bench.progress.done(f"{pid}: failed")
            traceback.print_exc()
            failed.append(pid)
            continue
        for row in got:
            bench.progress.done(f"{row.key}: {row.ratio_text} (target {row.target})")
        rows.extend(got)
    duration = time.perf_counter() - started
    machine["load_average_end"] = _load_average()
    machine["other_processes_cores"] = _others_cores(cpu_at_start, _cpu_seconds(), duration)
    bench.progress.done(f"done in {duration:.1f} s")

    print("\n".join(_report(rows, bench, machine, failed)), flush=True)
    if args.json:
        _write_json(args.json, rows, bench, machine, failed, duration)
    if args.plot and rows:
        try:
            plt = _import_pyplot()
        except ImportError as exc:
            return _no_matplotlib(str(exc))
        _plot(plt, args.plot, rows, machine, bench)
    return 1 if failed else 0


def _no_matplotlib(why: str) -> int:
    print(
        f"python -m ferropool bench: error: --plot needs matplotlib ({why});"
        ' install it with: pip install "ferropool[bench]"',
        file=sys.stderr,
    )
    return 2


# --- the machine ------------------------------------------------------------------------------


def _usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def _load_average():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _cpu_seconds() -> tuple:
    """(CPU seconds the whole machine was busy, or None where /proc/stat is missing;
    CPU seconds of this process and of its finished children)."""
    own = os.times()
    own = own.user + own.system + own.children_user + own.children_system
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None, own
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    busy = sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK"), own


def _others_cores(start: tuple, end: tuple, wall: float):
    """How many cores other processes kept busy on average during the run: a noisy
    neighbour's share, to read the numbers by."""
    if start[0] is None or end[0] is None or wall <= 0:
        return None
    others = (end[0] - start[0]) - (end[1] - start[1])
    return round(max(others, 0.0) / wall, 2)


def _machine() -> dict:
    build, build_date = platform.python_build()
    flags = []
    if sysconfig.get_config_var("Py_GIL_DISABLED"):
        flags.append("free-threaded")
    if hasattr(sys, "gettotalrefcount"):
        flags.append("debug build")
    return {
        "cores": os.cpu_count(),
        "usable_cores": _usable_cores(),
        "cpu": _cpu_model(),
        "system": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "python_build": f"{build}, {build_date}, {platform.python_compiler()}"
        + "".join(f", {flag}" for flag in flags),
        "executable": sys.executable,
        "ferropool": __version__,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "load_average_start": _load_average(),
    }


def _machine_lines(machine: dict, bench: Bench) -> list:
    cores = f"{machine['cores']} cores"
    if machine["usable_cores"] != machine["cores"]:
        cores += f" ({machine['usable_cores']} usable)"
    load = ""
    if machine.get("load_average_start") is not None:
        fmt = "/".join
        load = (
            f"load average (1/5/15 min) {fmt(map(str, machine['load_average_start']))} at the"
            f" start, {fmt(map(str, machine['load_average_end'] or []))} at the end"
        )
    runs = f"median of {bench.repeat} timed run{'s' if bench.repeat > 1 else ''}"
    mem = f"{bench.mem_repeat} fresh interpreter{'s' if bench.mem_repeat > 1 else ''}"
    lines = [
        f"machine:   {cores}, {machine['cpu']}, {machine['system']}",
        f"python:    {machine['python']} ({machine['python_build']})",
        f"ferropool: {machine['ferropool']}",
        f"date:      {machine['date']}",
        f"method:    {runs} per implementation, alternating, after a warm-up;"
        f" memory: median of {mem} each",
    ]
    if load:
        others = machine.get("other_processes_cores")
        if others is not None:
            load += f"; other processes kept {others:.2f} of {machine['cores']} cores busy"
        lines.append(f"load:      {load}")
    return lines


# --- the report -------------------------------------------------------------------------------


def _report(rows: list, bench: Bench, machine: dict, failed: list) -> list:
    yes = _symbol("\u2713", "yes", sys.stdout)
    no = _symbol("\u2717", "NO", sys.stdout)
    title = f"ferropool bench: ferropool vs {STDLIB}, SPEC P targets"
    out = [title + (" (--quick: smaller N, fewer runs; indicative only)" if bench.quick else "")]
    out += [""] + _machine_lines(machine, bench)
    out += [f"command:   {' '.join(_command(bench.args))}", ""]
    table = [("id", "workload", STDLIB, OURS, "ratio", "target", "met")]
    for row in rows:
        met = "n/a" if row.met is None else yes if row.met else no
        target = _fancy_target(row.target)
        table.append(
            (row.key, row.workload, row.stdlib, row.ferropool, row.ratio_text, target, met)
        )
    out += _table(table, "llrrrlc") if rows else ["(no rows)"]
    counted = [row for row in rows if row.met is not None]
    out.append("")
    out.append(
        f"targets met: {sum(row.met for row in counted)} of {len(counted)}"
        + (f"; failed to run: {', '.join(failed)}" if failed else "")
    )
    notes = [f"{row.key}: {row.note}" for row in rows if row.note]
    means = {}
    for row in rows:
        means.setdefault(row.ratio_means, []).append(row.key)
    out.append("")
    out.append("ratio:")
    out += [f"  {', '.join(keys)}: {text}" for text, keys in means.items()]
    if notes:
        out.append("notes:")
        out += [f"  {note}" for note in notes]
    return out


def _table(rows: list, align: str) -> list:
    """Columns padded to their widest cell, aligned by `align` (l, r or c per column),
    a dashed rule under the header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    pad = {"l": str.ljust, "r": str.rjust, "c": str.center}
    lines = []
    for j, row in enumerate(rows):
        cells = [pad[a](cell, w) for cell, w, a in zip(row, widths, align)]
        lines.append("  ".join(cells).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def _fancy_target(text: str) -> str:
    for plain, fancy in ((">=", "\u2265"), ("<=", "\u2264")):
        text = text.replace(plain, _symbol(fancy, plain, sys.stdout))
    return text


def _command(args) -> list:
    """The command line that reproduces this run (its options in a canonical order)."""
    command = ["python", "-m", "ferropool", "bench"]
    if args is None:
        return command
    if args.quick:
        command.append("--quick")
    if args.repeat:
        command += ["--repeat", str(args.repeat)]
    if args.only:
        command += ["--only", ",".join(args.only)]
    if args.json:
        command += ["--json", args.json]
    if args.plot:
        command += ["--plot", args.plot]
    return command


def _write_json(path: str, rows: list, bench: Bench, machine: dict, failed: list, duration):
    doc = {
        "schema": _SCHEMA,
        "command": _command(bench.args),
        "quick": bench.quick,
        "repeat": bench.repeat,
        "memory_repeat": bench.mem_repeat,
        "duration_s": round(duration, 3),
        "machine": machine,
        "failed": failed,
        "rows": [
            {
                "id": row.id,
                "key": row.key,
                "workload": row.workload,
                "unit": row.unit,
                "sizes": row.sizes,
                "samples": row.samples,
                "medians": row.medians(),
                "stdlib": row.stdlib,
                "ferropool": row.ferropool,
                "ratio": row.ratio,
                "ratio_text": row.ratio_text,
                "ratio_means": row.ratio_means,
                "target": row.target,
                "met": row.met,
                "score": row.score,
                "note": row.note,
            }
            for row in rows
        ],
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1, ensure_ascii=False)
        f.write("\n")


# --- the chart --------------------------------------------------------------------------------

_SCORE_CAP = 10.0  # a result 10x better than its target is drawn as 10x
_MET_COLOR, _MISSED_COLOR = "#2a9d5c", "#d1495b"


def _import_pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot(plt, path: str, rows: list, machine: dict, bench: Bench) -> None:
    shown = [row for row in rows if row.score is not None]
    labels = [row.key for row in shown]
    scores = [min(max(row.score, 1 / _SCORE_CAP), _SCORE_CAP) for row in shown]
    colors = [_MET_COLOR if row.met else _MISSED_COLOR for row in shown]
    fig, ax = plt.subplots(figsize=(9, 4.2), dpi=100)
    bars = ax.bar(range(len(shown)), scores, color=colors)
    ax.axhline(1.0, color="black", linewidth=1)
    ax.set_yscale("log")
    ax.set_ylim(0.1 if min(scores, default=1) < 0.45 else 0.4, _SCORE_CAP * 2)
    ticks = [t for t in (0.1, 0.2, 0.5, 1, 2, 5, 10) if ax.get_ylim()[0] <= t <= _SCORE_CAP]
    ax.set_yticks(ticks)
    ax.set_yticklabels([f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_xticks(range(len(shown)))
    ax.set_xticklabels(labels, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel(f"result / SPEC target (> 1: met;\ncapped at {_SCORE_CAP:g})", fontsize=9)
    from matplotlib.patches import Patch

    ax.legend(
        handles=[
            Patch(color=_MET_COLOR, label="target met"),
            Patch(color=_MISSED_COLOR, label="missed"),
        ],
        loc="upper left",
        fontsize=8,
    )
    for bar, row, score in zip(bars, shown, scores):
        ax.annotate(
            row.ratio_text.replace(" ", "\n", 1),
            (bar.get_x() + bar.get_width() / 2, score),
            xytext=(0, 2),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=7,
        )
    quick = ", --quick" if bench.quick else ""
    others = machine.get("other_processes_cores")
    others = f", other processes busy on {others:.2f} cores" if others is not None else ""
    ax.set_title(
        f"ferropool {machine['ferropool']} vs concurrent.futures: SPEC P targets\n"
        f"{machine['usable_cores']} cores, {machine['cpu']}, {machine['python']},"
        f" {machine['date'][:10]}{quick}{others}",
        fontsize=9,
    )
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
