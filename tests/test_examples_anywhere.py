"""examples/thumbnails_anywhere.py: one workload on threads, processes or a Dask cluster,
chosen by --executor. The dask run starts its own LocalCluster (the run against a
running scheduler, --scheduler, is in test_dask.py). Needs Pillow; the dask run also
needs distributed (CPython >= 3.10)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("PIL", reason="Pillow is not installed")

from conftest import child_env  # noqa: E402

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "thumbnails_anywhere.py"
HAS_DISTRIBUTED = importlib.util.find_spec("distributed") is not None


def run_example(tmp_path, *args, timeout=150):
    folder = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), "--images", "6", "--size", "320", "--folder", str(folder),
         *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env(),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stdout, folder


def check_output(out, folder, executor_name, mode, where):
    assert re.search(rf"^making 6 thumbnails on {executor_name}$", out, re.M), out
    lines = re.findall(r"^image\d{3} 320x240 -> image\d{3}\.thumb\.jpg 128x96$", out, re.M)
    assert len(lines) == 6, out
    assert re.search(
        rf"^summary: 6 thumbnails of 6 images in [\d.]+ s on {mode}, in {where}$", out, re.M
    ), out
    thumbs = sorted(os.listdir(folder))
    assert thumbs == [f"image{i:03d}.thumb.jpg" for i in range(6)]
    for name in thumbs:
        assert (folder / name).read_bytes()[:2] == b"\xff\xd8"  # JPEG


@pytest.mark.timeout(200)
@pytest.mark.parametrize(
    "mode, executor_name, where",
    [
        ("threads", "ThreadPoolExecutor", "this process"),
        ("processes", "ProcessPoolExecutor", r"[12] other processes"),
        pytest.param(
            "dask", "DaskExecutor", r"[12] other processes",
            marks=pytest.mark.skipif(not HAS_DISTRIBUTED, reason="distributed is not installed"),
        ),
    ],
)
def test_thumbnails_anywhere(tmp_path, mode, executor_name, where):
    out, folder = run_example(tmp_path, "--executor", mode, "--workers", "2")
    check_output(out, folder, executor_name, mode, where)
