"""`python -m ferropool`: the showcase runs and prints its table.

Only the shape of the output is checked: timings never decide pass or fail.
"""

import platform
import re
import subprocess
import sys

import pytest

import ferropool

STDLIB, OURS = "concurrent.futures", "ferropool"
TIME = r"\d+(?:\.\d+)? (?:s|ms|us|ns)"
RATIO = r"\d+(?:\.\d+)?x (?:faster|\(slower\))"


def row(label, cell):
    """A table row: the workload, the stdlib's cell, ferropool's cell, the ratio."""
    return re.compile(rf"^{label} +{cell} +{cell} +{RATIO}$", re.MULTILINE)


ROWS = {
    "bulk": row(r"submit [\d,]+ no-op tasks, then result\(\) of each", rf"{TIME} +{TIME}/task"),
    "map": row(r"list\(executor\.map\(f, range\([\d,]+\)\)\)", rf"{TIME} +{TIME}/item"),
    "sleep": row(r"[\d,]+ x time\.sleep\(2 ms\) on 32 workers", rf"{TIME} +\d+\.\d\dx ideal"),
}


def run_module(*args, cwd, timeout=60):
    return subprocess.run(
        [sys.executable, "-m", "ferropool", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


def check_table(proc):
    assert (
        proc.returncode == 0
    ), f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    out = proc.stdout
    header = re.search(rf"^workload +{re.escape(STDLIB)} +{OURS} +ratio$", out, re.MULTILINE)
    assert header, out
    for name, row in ROWS.items():
        assert len(row.findall(out)) == 1, f"no {name} row in:\n{out}"
    return out


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    return run_module("--quick", cwd=tmp_path_factory.mktemp("showcase"))


@pytest.mark.timeout(90)
def test_quick_prints_both_implementations_and_ratios(quick):
    out = check_table(quick)
    assert "median of 3 timed runs" in out
    assert f"ferropool: {ferropool.__version__}" in out
    assert f"{platform.python_implementation()} {platform.python_version()}" in out
    assert re.search(r"^machine: +\d+ cores", out, re.MULTILINE), out


@pytest.mark.timeout(90)
def test_progress_goes_to_stderr_and_the_table_to_stdout(quick):
    progress = re.findall(rf"^.+: {STDLIB} {TIME}, {OURS} {TIME}$", quick.stderr, re.MULTILINE)
    assert len(progress) == 3, quick.stderr
    assert re.search(r"^done in \d+\.\d s$", quick.stderr, re.MULTILINE), quick.stderr
    assert not any(line in quick.stdout for line in progress) and "done in" not in quick.stdout
    assert "Traceback" not in quick.stderr, quick.stderr


@pytest.mark.timeout(90)
def test_showcase_is_a_subcommand_too(tmp_path):
    out = check_table(run_module("showcase", "--quick", "--repeat", "1", cwd=tmp_path))
    assert "median of 1 timed run per implementation" in out


@pytest.mark.timeout(30)
@pytest.mark.parametrize("args", [["--repeat", "0"], ["--repeat", "x"], ["no-such-command"]])
def test_bad_arguments_are_usage_errors(tmp_path, args):
    proc = run_module(*args, cwd=tmp_path)
    assert proc.returncode == 2, proc
    assert "usage: python -m ferropool" in proc.stderr
    assert proc.stdout == ""


@pytest.mark.timeout(30)
def test_help_and_version(tmp_path):
    proc = run_module("--help", cwd=tmp_path)
    assert proc.returncode == 0 and "showcase" in proc.stdout, proc
    proc = run_module("--version", cwd=tmp_path)
    assert (
        proc.returncode == 0 and proc.stdout.strip() == f"ferropool {ferropool.__version__}"
    ), proc
