"""Make thumbnails of a folder of images with a process pool.

The classic ``concurrent.futures`` recipe for CPU-bound work (decode, resize, encode
with Pillow in worker processes, collect with ``as_completed``), running on ferropool:
the only change from a stdlib script is the import line. The images are generated
first (in the pool too, with ``map``), so the script needs nothing but Pillow.

    python examples/thumbnails.py [--images N] [--size PX] [--workers N] [--folder DIR]
                                  [--compare]

``--compare`` also times the same thumbnails made one by one in this process.
"""

import argparse
import os
import random
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

# was: from concurrent.futures import ProcessPoolExecutor, as_completed
from ferropool import ProcessPoolExecutor, as_completed

THUMBNAIL_SIZE = (128, 128)


def make_image(path, seed, size):
    """Draws a reproducible picture (a gradient, shapes, a blur) and saves it as PNG."""
    rng = random.Random(seed)
    width, height = size, size * 3 // 4
    image = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(40):
        x, y = rng.randrange(width), rng.randrange(height)
        r = rng.randrange(5, max(6, size // 8))
        colour = tuple(rng.randrange(256) for _ in range(3))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(2))
    image.save(path)
    return path


def make_thumbnail(path, out_dir):
    """Opens one image, shrinks it to fit THUMBNAIL_SIZE, saves it as JPEG."""
    with Image.open(path) as image:
        original = image.size
        image = image.convert("RGB")
        image.thumbnail(THUMBNAIL_SIZE, Image.Resampling.LANCZOS)
        target = Path(out_dir) / (Path(path).stem + ".thumb.jpg")
        image.save(target, "JPEG", quality=85)
        return str(target), original, image.size, os.getpid()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--size", type=int, default=1600, help="width of the generated images")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--folder", default=None, help="where to put them (default: a temp dir)")
    parser.add_argument("--compare", action="store_true", help="also time it sequentially")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(args.folder or scratch)
        sources = folder / "images"
        thumbs = folder / "thumbnails"
        sources.mkdir(parents=True, exist_ok=True)
        thumbs.mkdir(parents=True, exist_ok=True)

        with ProcessPoolExecutor(max_workers=args.workers) as executor:
            name = f"{type(executor).__module__.split('.')[0]}.{type(executor).__name__}"
            workers = executor._max_workers
            print(f"making {args.images} images of {args.size} px on {workers} processes ({name})")
            paths = [sources / f"image{i:03d}.png" for i in range(args.images)]
            list(executor.map(make_image, paths, range(args.images), [args.size] * args.images,
                              chunksize=4))

            started = time.perf_counter()
            future_to_path = {executor.submit(make_thumbnail, path, thumbs): path for path in paths}
            pids = set()
            for future in as_completed(future_to_path):
                path = future_to_path[future]
                try:
                    target, original, size, pid = future.result()
                except Exception as exc:
                    print(f"{path.name} generated an exception: {exc}")
                else:
                    pids.add(pid)
                    print(f"{path.name} {original[0]}x{original[1]} -> "
                          f"{Path(target).name} {size[0]}x{size[1]}")
            elapsed = time.perf_counter() - started

        made = sorted(thumbs.glob("*.thumb.jpg"))
        print(f"summary: {len(made)} thumbnails of {len(paths)} images in {elapsed:.2f} s "
              f"by {len(pids)} worker processes")
        if args.compare:
            started = time.perf_counter()
            for path in paths:
                make_thumbnail(path, scratch)
            sequential = time.perf_counter() - started
            print(f"sequential: {sequential:.2f} s, speedup {sequential / elapsed:.2f}x")


if __name__ == "__main__":
    main()
