"""examples/thumbnails.py: Pillow thumbnails on ferropool's process pool, unchanged but
for its import line. Skipped only if Pillow is not installed (CI installs it)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("PIL", reason="Pillow is not installed")

from PIL import Image  # noqa: E402

from conftest import child_env  # noqa: E402

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "thumbnails.py"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("workers", [1, 2])
def test_thumbnails(tmp_path, workers):
    images = 10
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), "--images", str(images), "--size", "640",
         "--workers", str(workers), "--folder", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=100,
        env=child_env(),
        cwd=tmp_path,
    )
    out = proc.stdout
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{out}\nstderr:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    assert re.search(
        rf"^making {images} images of 640 px on {workers} processes "
        r"\(ferropool\.ProcessPoolExecutor\)$",
        out,
        re.MULTILINE,
    ), out
    lines = re.findall(r"^image\d{3}\.png 640x480 -> image\d{3}\.thumb\.jpg 128x96$", out, re.M)
    assert len(lines) == images, out
    summary = re.search(
        r"^summary: (\d+) thumbnails of (\d+) images in [\d.]+ s by (\d+) worker processes$",
        out,
        re.MULTILINE,
    )
    assert summary, out
    made, total, used = map(int, summary.groups())
    assert made == total == images
    assert 1 <= used <= workers
    thumbs = sorted((tmp_path / "thumbnails").glob("*.thumb.jpg"))
    assert len(thumbs) == images
    for thumb in thumbs:
        with Image.open(thumb) as image:
            assert image.format == "JPEG"
            assert image.size == (128, 96)
