"""`python -m ferropool bench`: the table's and the JSON's shape, the options' errors.

Only the structure of the output is checked: the numbers never decide pass or fail
(a busy machine misses targets; that is the benchmark's to report, not the suite's).
"""

import importlib.util
import json
import platform
import re
import subprocess
import sys

import ferropool
import pytest

STDLIB, OURS = "concurrent.futures", "ferropool"
MET = r"(?:✓|✗|yes|NO|n/a)"
# The rows of `--only P3,P7`, by key, and a pattern for their cells.
NUM = r"[\d,]+(?:\.\d+)?"
TIME = rf"{NUM} (?:s|ms|us|ns)"
MB = rf"[+-]{NUM} MB"
QUICK_ROWS = {
    "P3": rf"{TIME} +{TIME} +{NUM}x +(?:≥|>=) 4x",
    "P7a": rf"{NUM} B +{NUM} B +{NUM}x smaller +(?:≥|>=) 3x smaller",
    "P7b.submit": rf"{MB} +{MB} +{MB} +< 10 MB",
    "P7b.map": rf"{MB} +{MB} +{MB} +< 10 MB",
    "P7c": rf"(?:{MB}|n/a \(3\.14\+\)) +{MB} +{MB} +< 20 MB",
}
ROW_KEYS = {
    "id", "key", "workload", "unit", "sizes", "samples", "medians", "stdlib", "ferropool",
    "ratio", "ratio_text", "ratio_means", "target", "met", "score", "note",
}  # fmt: skip


def run_bench(*args, cwd, timeout=170, prelude=None):
    """`python -m ferropool bench ARGS` in a fresh interpreter; `prelude` is Python run
    before it in that interpreter (to hide a module, say)."""
    if prelude is None:
        command = [sys.executable, "-m", "ferropool", "bench", *args]
    else:
        main = "import sys; from ferropool.__main__ import main; sys.exit(main(sys.argv[1:]))"
        command = [sys.executable, "-c", f"{prelude}\n{main}", "bench", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=cwd)


def ok(proc):
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("bench")
    proc = run_bench("--quick", "--only", "P3,P7", "--repeat", "1", "--json", "out.json", cwd=cwd)
    return proc, cwd / "out.json"


@pytest.mark.timeout(180)
def test_table_has_a_row_per_workload_with_target_and_verdict(quick):
    out = ok(quick[0])
    header = rf"^id +workload +{re.escape(STDLIB)} +{OURS} +ratio +target +met$"
    assert re.search(header, out, re.MULTILINE), out
    for key, cells in QUICK_ROWS.items():
        pattern = rf"^{re.escape(key)} +\S.*?  +{cells} +{MET}$"
        assert len(re.findall(pattern, out, re.MULTILINE)) == 1, f"no {key} row in:\n{out}"
    assert not re.search(r"^P[1245]", out, re.MULTILINE), "--only ran other workloads"
    assert re.search(r"^targets met: \d+ of \d+$", out, re.MULTILINE), out


@pytest.mark.timeout(180)
def test_the_machine_the_method_and_the_command_are_stated(quick):
    out = ok(quick[0])
    assert "--quick" in out.splitlines()[0]  # says that the numbers are from a quick run
    assert re.search(r"^machine: +\d+ cores", out, re.MULTILINE), out
    assert f"{platform.python_implementation()} {platform.python_version()}" in out
    assert f"ferropool: {ferropool.__version__}" in out
    assert re.search(r"^date: +\d{4}-\d\d-\d\dT", out, re.MULTILINE), out
    assert "median of 1 timed run per implementation" in out
    expected = "python -m ferropool bench --quick --repeat 1 --only P3,P7 --json out.json"
    assert f"command:   {expected}" in out


@pytest.mark.timeout(180)
def test_progress_goes_to_stderr(quick):
    proc = quick[0]
    ok(proc)
    assert re.search(rf"^P3 round trip \[1/1\] {OURS} ", proc.stderr, re.MULTILINE), proc.stderr
    assert re.search(r"^done in \d+\.\d s$", proc.stderr, re.MULTILINE), proc.stderr
    assert "[1/1]" not in proc.stdout and "done in" not in proc.stdout


@pytest.mark.timeout(180)
def test_json_has_every_sample_and_the_machine(quick):
    proc, path = quick
    ok(proc)
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert doc["schema"] == "ferropool-bench/1"
    assert doc["quick"] is True and doc["repeat"] == 1 and doc["memory_repeat"] == 1
    assert doc["failed"] == []
    assert doc["command"][:4] == ["python", "-m", "ferropool", "bench"]
    machine = doc["machine"]
    assert machine["ferropool"] == ferropool.__version__
    assert machine["python"] == f"{platform.python_implementation()} {platform.python_version()}"
    assert isinstance(machine["cores"], int) and isinstance(machine["usable_cores"], int)
    for key in ("cpu", "python_build", "date", "system"):
        assert isinstance(machine[key], str) and machine[key]
    assert [row["key"] for row in doc["rows"]] == list(QUICK_ROWS)
    for row in doc["rows"]:
        assert set(row) == ROW_KEYS, row["key"]
        assert row["id"] == row["key"][:2]
        assert OURS in row["samples"]
        for name, samples in row["samples"].items():
            assert len(samples) == 1 and all(isinstance(x, (int, float)) for x in samples)
            assert row["medians"][name] == samples[0]
            assert isinstance(row["sizes"][name], int)
        assert isinstance(row["ratio"], (int, float))
        assert row["met"] in (True, False) and isinstance(row["score"], (int, float))
        assert (row["score"] >= 1) == row["met"], row  # the chart's bars agree with the table
        for key in (
            "workload",
            "unit",
            "stdlib",
            "ferropool",
            "ratio_text",
            "ratio_means",
            "target",
        ):
            assert isinstance(row[key], str) and row[key], (row["key"], key)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "args, message",
    [
        (["--only", "P9"], "unknown workload P9"),
        (["--only", ","], "no workload given"),
        (["--repeat", "0"], "must be at least 1"),
        (["--no-such-option"], "unrecognized arguments"),
    ],
)
def test_bad_arguments_are_usage_errors(tmp_path, args, message):
    proc = run_bench(*args, cwd=tmp_path)
    assert proc.returncode == 2, proc
    assert "usage: python -m ferropool" in proc.stderr and message in proc.stderr, proc.stderr
    assert proc.stdout == ""


@pytest.mark.timeout(60)
def test_plot_without_matplotlib_is_a_clear_error_before_anything_runs(tmp_path):
    proc = run_bench(
        "--quick",
        "--plot",
        "chart.png",
        cwd=tmp_path,
        prelude="import sys; sys.modules['matplotlib'] = None",
    )
    assert proc.returncode == 2, proc
    assert 'pip install "ferropool[bench]"' in proc.stderr, proc.stderr
    assert proc.stdout == "" and "[1/" not in proc.stderr  # nothing was measured
    assert not (tmp_path / "chart.png").exists()


@pytest.mark.timeout(120)
def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    ok(run_bench("--quick", "--only", "P3", "--repeat", "1", "--plot", "chart.png", cwd=tmp_path))
    assert (tmp_path / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.timeout(60)
def test_bench_is_listed_in_the_help(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "ferropool", "--help"], capture_output=True, text=True, cwd=tmp_path
    )
    assert proc.returncode == 0 and re.search(r"^ +bench +\S", proc.stdout, re.MULTILINE), proc
    proc = run_bench("--help", cwd=tmp_path)
    assert proc.returncode == 0, proc
    for option in ("--quick", "--repeat N", "--only", "--json FILE", "--plot FILE.png"):
        assert option in proc.stdout


def test_workloads_are_the_spec_items_in_order():
    from ferropool import _bench

    ids = [pid for pid, _ in _bench._providers()]
    has_process_rows = importlib.util.find_spec("ferropool._bench_process") is not None
    assert ids == ["P1", "P2", "P3", "P4", "P5", "P6", "P7"] + (
        ["P8"] if has_process_rows else []
    ) + ["DASK"]


@pytest.mark.timeout(60)
def test_dask_rows_are_skipped_with_a_message_without_distributed(tmp_path):
    proc = run_bench(
        "--only", "DASK", cwd=tmp_path, prelude="import sys; sys.modules['distributed'] = None"
    )
    out = ok(proc)
    assert 'DASK: skipped: distributed is not installed (pip install "ferropool[dask]")' in (
        proc.stderr
    )
    assert "(no rows)" in out and "targets met: 0 of 0" in out
