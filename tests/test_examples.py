"""The scripts in examples/ run unchanged on ferropool (only their import line says so)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name, *args, cwd, timeout=45):
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


SUMMARY = re.compile(
    r"^summary: (?P<fetched>\d+) pages fetched, (?P<errors>\d+) errors, (?P<urls>\d+) URLs; "
    r"(?P<used>\d+) of (?P<threads>\d+) worker threads made (?P<client_requests>\d+) requests "
    r"on (?P<client_connections>\d+) connections; the server accepted "
    r"(?P<server_connections>\d+) connections for (?P<server_requests>\d+) requests$",
    re.MULTILINE,
)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("workers", [1, 4])
def test_fetch_pages(tmp_path, workers):
    pages, missing = 20, 4
    proc = run_example(
        "fetch_pages.py", "--workers", workers, "--pages", pages, "--missing", missing, cwd=tmp_path
    )
    out = proc.stdout
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{out}\nstderr:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr

    # It ran on ferropool's executor, by the import line alone.
    assert re.search(
        r"^fetching \d+ URLs from http://127\.0\.0\.1:\d+ on \d+ threads "
        r"\(ferropool\.ThreadPoolExecutor\)$",
        out,
        re.MULTILINE,
    ), out

    # Every page once; every missing URL reported, each with its own error.
    fetched = re.findall(
        r"^'(http://127\.0\.0\.1:\d+/page/\d+)' page is \d+ bytes$", out, re.MULTILINE
    )
    failed = re.findall(
        r"^'(http://127\.0\.0\.1:\d+/no-such-page/\d+)' generated an exception: "
        r"HTTP Error 404: Not Found$",
        out,
        re.MULTILINE,
    )
    assert len(fetched) == len(set(fetched)) == pages, out
    assert len(failed) == len(set(failed)) == missing, out

    summary = SUMMARY.search(out)
    assert summary, out
    n = {key: int(value) for key, value in summary.groupdict().items()}
    assert (n["fetched"], n["errors"], n["urls"]) == (pages, missing, pages + missing)
    assert n["client_requests"] == n["server_requests"] == pages + missing

    # The initializer ran once per worker thread (stdlib naming: prefix_i), and each
    # worker kept its threading.local session: one connection per thread, reused.
    per_thread = re.findall(r"^(\S+): (\d+) requests on (\d+) connection\(s\)$", out, re.MULTILINE)
    assert len(per_thread) == n["threads"] <= workers, out
    assert {name for name, _, _ in per_thread} <= {f"fetch_{i}" for i in range(workers)}, out
    assert sum(int(requests) for _, requests, _ in per_thread) == pages + missing, out
    assert all(conns == ("1" if int(requests) else "0") for _, requests, conns in per_thread), out
    assert n["server_connections"] == n["client_connections"] == n["used"] <= workers, out
    if workers > 1:
        assert n["used"] >= 2, f"the work did not spread over the workers:\n{out}"
