"""Make thumbnails on threads, on processes or on a Dask cluster: one flag decides.

The thumbnails workload of ``thumbnails.py`` (decode, resize, encode with Pillow), with
the images travelling as bytes instead of paths, so that the workers need no shared
folder: the same code runs on a thread pool, a process pool, or the workers of a Dask
cluster, anywhere. Only the line that builds the executor differs (``EXECUTORS``);
the rest is plain ``concurrent.futures``: ``map`` with a ``chunksize``, then ``submit``
and ``as_completed``.

    python examples/thumbnails_anywhere.py --executor threads|processes|dask
        [--scheduler ADDRESS] [--workers N] [--images N] [--size PX] [--folder DIR]

``--executor dask`` starts a local cluster of ``--workers`` worker processes unless
``--scheduler tcp://host:8786`` names a running one (its workers need Pillow and
ferropool installed).
"""

import argparse
import contextlib
import io
import os
import random
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

from ferropool import ProcessPoolExecutor, ThreadPoolExecutor, as_completed

THUMBNAIL_SIZE = (128, 128)


def dask_executor(address):
    from ferropool.dask import DaskExecutor  # needs: pip install "ferropool[dask]"

    return DaskExecutor(address)


# The one place where the three runs differ.
EXECUTORS = {
    "threads": lambda args: ThreadPoolExecutor(args.workers),
    "processes": lambda args: ProcessPoolExecutor(args.workers),
    "dask": lambda args: dask_executor(args.scheduler),
}


def make_image(seed, size):
    """Draws a reproducible picture (a gradient, shapes, a blur): PNG bytes."""
    rng = random.Random(seed)
    width, height = size, size * 3 // 4
    image = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(40):
        x, y = rng.randrange(width), rng.randrange(height)
        r = rng.randrange(5, max(6, size // 8))
        colour = tuple(rng.randrange(256) for _ in range(3))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
    out = io.BytesIO()
    image.filter(ImageFilter.GaussianBlur(2)).save(out, "PNG")
    return out.getvalue()


def make_thumbnail(png):
    """Shrinks one image to fit THUMBNAIL_SIZE: (JPEG bytes, original size, size, pid)."""
    with Image.open(io.BytesIO(png)) as image:
        original = image.size
        image = image.convert("RGB")
        image.thumbnail(THUMBNAIL_SIZE, Image.Resampling.LANCZOS)
        out = io.BytesIO()
        image.save(out, "JPEG", quality=85)
        return out.getvalue(), original, image.size, os.getpid()


def thumbnails(executor, images, size, folder):
    """The workload: the same for every kind of executor."""
    pngs = list(executor.map(make_image, range(images), [size] * images, chunksize=4))
    started = time.perf_counter()
    future_to_name = {
        executor.submit(make_thumbnail, png): f"image{i:03d}" for i, png in enumerate(pngs)
    }
    pids = set()
    for future in as_completed(future_to_name):
        name = future_to_name[future]
        try:
            jpeg, original, thumb, pid = future.result()
        except Exception as exc:
            print(f"{name} generated an exception: {exc}")
            continue
        pids.add(pid)
        (folder / f"{name}.thumb.jpg").write_bytes(jpeg)
        print(f"{name} {original[0]}x{original[1]} -> {name}.thumb.jpg {thumb[0]}x{thumb[1]}")
    return time.perf_counter() - started, pids


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executor", choices=sorted(EXECUTORS), default="threads")
    parser.add_argument("--scheduler", help="a Dask scheduler's address (default: start one)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--size", type=int, default=800, help="width of the generated images")
    parser.add_argument("--folder", default=None, help="where to put them (default: a temp dir)")
    args = parser.parse_args()

    with contextlib.ExitStack() as stack:
        if args.executor == "dask" and args.scheduler is None:
            from distributed import LocalCluster

            args.scheduler = stack.enter_context(
                LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                             host="127.0.0.1", dashboard_address=None,
                             scheduler_kwargs={"dashboard_address": "127.0.0.1:0"})
            )
        folder = Path(args.folder or stack.enter_context(tempfile.TemporaryDirectory()))
        folder.mkdir(parents=True, exist_ok=True)

        with EXECUTORS[args.executor](args) as executor:
            print(f"making {args.images} thumbnails on {type(executor).__name__}")
            elapsed, pids = thumbnails(executor, args.images, args.size, folder)

        where = "this process" if pids == {os.getpid()} else f"{len(pids)} other processes"
        made = len(list(folder.glob("*.thumb.jpg")))
        print(f"summary: {made} thumbnails of {args.images} images in {elapsed:.2f} s"
              f" on {args.executor}, in {where}")


if __name__ == "__main__":
    main()
