"""Measure `handler.preprocessing` against its previous implementation, and preview its output.

    python -m tools.preprocess_bench                  # speed per input kind (make bench-preprocess)
    python -m tools.preprocess_bench accuracy         # accuracy, same uploads, same model
    python -m tools.preprocess_bench preview a.jpg --out-dir d   # the 28x28 the model sees

The baseline is `tools.legacy_preprocessing`, the module as it was before its pixel work moved
to OpenCV; it lives only here, so every figure below is a ratio from one run on one machine.

Speed: per input kind, the median milliseconds per image on one thread of the legacy module,
of today's module and of a plain full Pillow decode of the same bytes (`Image.open().load()`).
The kinds take turns in blocks, so they share the machine's conditions over the whole run. The
kinds: a 28x28 MNIST test PNG (MNIST's form: passes through), the same digit inverted (every
step), a 300x300 RGB JPEG, a 4000x3000 photo-like JPEG, and sets of MNIST test digits as
uploads of 64-400 px: scans (dark ink on paper, PNG and JPEG, samples/render.py) and drawings
(light on dark, and dark ink on a transparent sheet). JSON first, then a table and the targets.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from handler import preprocessing
from handler.normalization import IMAGE_SIZE, normalize
from tools import legacy_preprocessing as legacy

BLOCK = 10  # consecutive timed runs of one kind and implementation before the next one's turn
PNG_MAGIC = b"\x89PNG"


@dataclass
class Kind:
    """One input kind: its uploads (timed in turn) and their labels where known."""

    uploads: list[bytes]
    labels: np.ndarray | None = None
    max_side: int = field(init=False)  # the longest side among the uploads, in pixels

    def __post_init__(self) -> None:
        self.max_side = max(max(Image.open(io.BytesIO(data)).size) for data in self.uploads)


# Targets of the speed run (issue 13). The least "speedup" (legacy/new) per kind ...
SPEEDUP_TARGETS = {
    "jpeg_300x300_rgb": 8.0,
    "jpeg_4000x3000_photo": 4.0,
    "png_28x28_inverted": 3.0,
    "png_28x28_mnist": 1.0,  # no slower
}
MAX_PER_DECODE = 3.0  # ... and the most "per_decode" (new / a plain Pillow decode) for kinds up to
PER_DECODE_MAX_SIDE = 400  # ... this many pixels on its longer side


# --- inputs -----------------------------------------------------------------------------------


def _encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def _synthetic_digit(size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """A photo-like 'dark seven on grey paper' with a lighting gradient and sensor noise."""
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    paper = 205 + 30 * (xx / width) - 15 * (yy / height)
    paper += rng.normal(0, 6, size=(height, width)).astype(np.float32)
    canvas = Image.fromarray(np.clip(paper, 0, 255).astype(np.uint8), mode="L")
    draw = ImageDraw.Draw(canvas)
    s = min(width, height)
    x0, y0 = width * 0.35, height * 0.25
    stroke = max(1, s // 25)
    draw.line([(x0, y0), (x0 + s * 0.3, y0), (x0 + s * 0.12, y0 + s * 0.5)], fill=40, width=stroke)
    return canvas


def _drawing(digit28: np.ndarray, rng: np.random.Generator, transparent: bool) -> bytes:
    """A digit drawn in an app, 64-400 px: light strokes on a dark canvas, or dark strokes on a
    transparent sheet (the ink only in the alpha channel, as drawing apps export it)."""
    rows, cols = np.flatnonzero(digit28.any(axis=1)), np.flatnonzero(digit28.any(axis=0))
    crop = digit28[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    side = int(rng.integers(64, 401))
    height = max(8, int(rng.uniform(0.4, 0.8) * side))
    width = max(2, min(side - 4, round(crop.shape[1] * height / crop.shape[0])))
    strokes = Image.fromarray(crop).resize((width, height), Image.Resampling.BICUBIC)
    ink = np.zeros((side, side), dtype=np.uint8)
    top, left = int(rng.integers(2, side - height - 1)), int(rng.integers(2, side - width - 1))
    ink[top : top + height, left : left + width] = np.asarray(strokes)
    if transparent:
        rgba = np.zeros((side, side, 4), dtype=np.uint8)
        rgba[..., :3] = rng.integers(0, 80, size=3)  # the pen's colour, where it is opaque
        rgba[..., 3] = ink
        return _encode(Image.fromarray(rgba, "RGBA"), "PNG")
    background, pen = rng.uniform(0, 60), rng.uniform(180, 255)
    return _encode(Image.fromarray((background + (pen - background) * (ink / 255.0)).astype(
        np.uint8), "L"), "PNG")


def _mnist(mnist_dir: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """MNIST's test digits and labels from `mnist_dir`, or None (never downloads)."""
    from train.mnist import MnistError, load_test_digits

    try:
        return load_test_digits(mnist_dir)
    except MnistError:
        return None


def bench_inputs(mnist_dir: Path, per_set: int, seed: int = 0) -> dict[str, Kind]:
    """The input kinds; sets of `per_set` uploads made from MNIST test digits (a synthetic digit
    stands in for the 28x28 kinds, and the sets are left out, when MNIST is not on disk)."""
    from samples.render import render_realistic

    rng = np.random.default_rng(seed)
    mnist = _mnist(mnist_dir)
    digit28 = (255 - np.asarray(_synthetic_digit((IMAGE_SIZE, IMAGE_SIZE), rng))
               if mnist is None else mnist[0][0])  # fmt: skip
    kinds = {
        "png_28x28_mnist": Kind([_encode(Image.fromarray(digit28, "L"), "PNG")]),
        "png_28x28_inverted": Kind([_encode(Image.fromarray(255 - digit28, "L"), "PNG")]),
        "jpeg_300x300_rgb": Kind(
            [_encode(_synthetic_digit((300, 300), rng).convert("RGB"), "JPEG", quality=90)]
        ),
        "jpeg_4000x3000_photo": Kind(
            [_encode(_synthetic_digit((4000, 3000), rng).convert("RGB"), "JPEG", quality=90)]
        ),
    }
    if mnist is None:
        return kinds
    images, labels = mnist
    picked = rng.choice(len(images), size=min(len(images), 4 * per_set), replace=False)
    scans: dict[str, list] = {"png": [], "jpeg": []}
    for index in picked:  # render_realistic picks the format: sort until both sets are full
        data = render_realistic(images[index], rng)
        bucket = scans["png" if data.startswith(PNG_MAGIC) else "jpeg"]
        if len(bucket) < per_set:
            bucket.append((data, labels[index]))
    drawings = picked[:per_set]
    for fmt, rows in scans.items():
        kinds[f"scan_{fmt}_dark_on_light"] = Kind(
            [d for d, _ in rows], np.asarray([y for _, y in rows])
        )
    kinds["drawing_png_light_on_dark"] = Kind(
        [_drawing(images[i], rng, transparent=False) for i in drawings], labels[drawings]
    )
    kinds["drawing_png_transparent"] = Kind(
        [_drawing(images[i], rng, transparent=True) for i in drawings], labels[drawings]
    )
    return kinds


# --- speed ------------------------------------------------------------------------------------


def _pillow_decode(data: bytes) -> None:
    with Image.open(io.BytesIO(data)) as image:
        image.load()


IMPLEMENTATIONS: dict[str, Callable[[bytes], object]] = {
    "decode": _pillow_decode,
    "legacy": legacy.preprocess,
    "new": preprocessing.preprocess,
}


def bench(kinds: dict[str, Kind], repeat: int, repeat_large: int) -> dict:
    """Median ms per image for each kind and implementation, `repeat` runs each (kinds over a
    megapixel: `repeat_large`), in blocks of BLOCK runs that take turns."""
    runs = {
        name: repeat_large if kind.max_side > 1000 else repeat for name, kind in kinds.items()
    }
    for kind in kinds.values():  # warm-up: imports, plugin registration, allocator
        for data in kind.uploads:
            for run in IMPLEMENTATIONS.values():
                run(data)
    wall = {(k, i): [] for k in kinds for i in IMPLEMENTATIONS}
    cpu = {(k, i): [] for k in kinds for i in IMPLEMENTATIONS}
    for first in range(0, max(runs.values()), BLOCK):
        for name, kind in kinds.items():
            for impl, run in IMPLEMENTATIONS.items():
                for n in range(first, min(first + BLOCK, runs[name])):
                    data = kind.uploads[n % len(kind.uploads)]
                    start, start_cpu = time.perf_counter(), time.thread_time()
                    run(data)
                    cpu[name, impl].append(time.thread_time() - start_cpu)
                    wall[name, impl].append(time.perf_counter() - start)
    results = {}
    for name, kind in kinds.items():
        row = {"images": len(kind.uploads), "max_side": kind.max_side, "runs": runs[name],
               "bytes_median": int(statistics.median(len(d) for d in kind.uploads))}  # fmt: skip
        for impl in IMPLEMENTATIONS:
            row[f"{impl}_ms"] = round(1000 * statistics.median(wall[name, impl]), 4)
            row[f"{impl}_cpu_ms"] = round(1000 * statistics.median(cpu[name, impl]), 4)
        row["speedup"] = round(row["legacy_ms"] / row["new_ms"], 2)
        row["per_decode"] = round(row["new_ms"] / row["decode_ms"], 2)
        row["legacy_per_decode"] = round(row["legacy_ms"] / row["decode_ms"], 2)
        results[name] = row
    return results


def targets(results: dict) -> list[dict]:
    """Each target with the measured value and whether it is met."""
    out = []
    for name, minimum in SPEEDUP_TARGETS.items():
        if name in results:
            value = results[name]["speedup"]
            out.append({"target": f"{name}: legacy/new >= {minimum:g}", "value": value,
                        "met": value >= minimum})  # fmt: skip
    for name, row in results.items():
        if row["max_side"] <= PER_DECODE_MAX_SIDE:
            value = row["per_decode"]
            out.append({"target": f"{name}: new/decode <= {MAX_PER_DECODE:g}", "value": value,
                        "met": value <= MAX_PER_DECODE})  # fmt: skip
    return out


def _print_speed(results: dict, checks: list[dict]) -> None:
    header = (f"{'input':<28}{'imgs':>5}{'side':>6}{'decode ms':>11}{'legacy ms':>11}"
              f"{'new ms':>9}{'legacy/new':>12}{'new/decode':>12}{'legacy/decode':>15}")
    print(header)
    print("-" * len(header))
    for name, r in results.items():
        print(f"{name:<28}{r['images']:>5}{r['max_side']:>6}{r['decode_ms']:>11.3f}"
              f"{r['legacy_ms']:>11.3f}{r['new_ms']:>9.3f}{r['speedup']:>11.1f}x"
              f"{r['per_decode']:>11.2f}x{r['legacy_per_decode']:>14.1f}x")  # fmt: skip
    print()
    for check in checks:
        print(f"{'met    ' if check['met'] else 'NOT met'}  {check['target']} ({check['value']:g})")


# --- accuracy ---------------------------------------------------------------------------------


def accuracy(mnist_dir: Path, model_path: Path, count: int, seed: int) -> dict:
    """Accuracy of the model through the legacy and today's preprocessing on the same uploads:
    the realistic set and tight crops of tests/test_realistic_offline.py (same count and seeds
    there), the drawing kinds, and the 10,000 MNIST test digits as PNGs (with how many of them
    come back pixel-exact)."""
    import torch

    from handler.artifact import load_torchscript
    from samples.digits import encode_png
    from samples.render import render_realistic_set, render_tight_crop

    mnist = _mnist(mnist_dir)
    if mnist is None:
        raise SystemExit("accuracy needs MNIST: set MNIST_DIR or pass --mnist-dir")
    images, labels = mnist
    model, _ = load_torchscript(model_path)
    uploads, upload_labels = render_realistic_set(images, labels, count, seed)
    rng = np.random.default_rng(seed + 1)
    tight = rng.choice(len(images), size=count // 2, replace=False)
    kinds = bench_inputs(mnist_dir, per_set=min(count // 2, 2500), seed=seed + 2)
    sets = {
        "realistic uploads": (uploads, upload_labels),
        "tight crops": ([render_tight_crop(images[i], rng) for i in tight], labels[tight]),
        **{name: (k.uploads, k.labels) for name, k in kinds.items() if k.labels is not None},
    }

    def predict(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return torch.cat([model(torch.from_numpy(c)) for c in np.array_split(
                batch, max(1, len(batch) // 500))]).argmax(dim=1).numpy()  # fmt: skip

    results = {}
    for name, (data, truth) in sets.items():
        row = {"images": len(data)}
        for label, module in (("legacy", legacy), ("new", preprocessing)):
            hits = predict(np.stack([module.preprocess(d) for d in data])) == truth
            row[label] = round(float(hits.mean()), 5)
        results[name] = row
    pngs = [encode_png(image) for image in images]
    exact_pixels = images.astype(np.float32) * (1 / 255)
    row = {"images": len(pngs)}
    for label, module in (("legacy", legacy), ("new", preprocessing)):
        pixels = np.stack([module.to_mnist(module.decode_image(d)) for d in pngs])
        row[label] = round(float((predict(normalize(pixels)[:, None]) == labels).mean()), 5)
        row[f"{label}_pixel_exact"] = int(((pixels == exact_pixels).all(axis=(1, 2))).sum())
    results["MNIST test PNGs"] = row
    return results


def _print_accuracy(results: dict) -> None:
    header = f"{'set':<28}{'images':>8}{'legacy':>9}{'new':>9}"
    print(header)
    print("-" * len(header))
    for name, r in results.items():
        print(f"{name:<28}{r['images']:>8}{r['legacy']:>9.2%}{r['new']:>9.2%}")
    exact = results.get("MNIST test PNGs")
    if exact:
        print(f"MNIST test PNGs passed through pixel-exact: legacy "
              f"{exact['legacy_pixel_exact']:,}, new {exact['new_pixel_exact']:,} of "
              f"{exact['images']:,}")


# --- preview ----------------------------------------------------------------------------------


def preview(paths: list[Path], out_dir: Path | None) -> int:
    """Print what today's preprocessing makes of each file; write the 28x28 PNGs to `out_dir`."""
    failures = 0
    for path in paths:
        try:
            pixels = preprocessing.to_mnist(preprocessing.decode_image(path.read_bytes()))
        except (OSError, preprocessing.InvalidImage) as exc:
            print(f"{path}: {exc}", file=sys.stderr)
            failures += 1
            continue
        print(f"{path}: ink mass {pixels.sum():.1f}, max {pixels.max():.2f}")
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            target = out_dir / f"{path.stem}.mnist.png"
            Image.fromarray((pixels * 255).round().astype(np.uint8), "L").save(target)
            print(f"  wrote {target}")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    """CLI: `bench` (the default), `accuracy` or `preview FILES`."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.preprocess_bench",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("command", nargs="?", default="bench",
                        choices=("bench", "accuracy", "preview"), help="what to do")
    parser.add_argument("files", nargs="*", type=Path, help="preview: image files")
    from train.mnist import DEFAULT_CACHE_DIR

    data = parser.add_argument_group("data")
    data.add_argument("--mnist-dir", type=Path,
                      default=Path(os.environ.get("MNIST_DIR") or DEFAULT_CACHE_DIR),
                      help="MNIST IDX folder (env MNIST_DIR; else train.mnist's cache). "
                      "Without it the speed run uses a synthetic digit and no sets")
    speed = parser.add_argument_group("bench")
    speed.add_argument("--repeat", type=int, default=200, help="timed runs per kind")
    speed.add_argument("--repeat-large", type=int, default=20,
                       help="timed runs per kind over a megapixel")
    speed.add_argument("--per-set", type=int, default=50, help="uploads in each set kind")
    acc = parser.add_argument_group("accuracy")
    acc.add_argument("--model", type=Path,
                     default=Path(os.environ.get("LENET_MODEL", "artifacts/lenet.pt")),
                     help="TorchScript model (env LENET_MODEL)")
    acc.add_argument("--count", type=int, default=1000, help="realistic uploads")
    acc.add_argument("--seed", type=int, default=20260415,
                     help="seed of the realistic set (tests/test_realistic_offline.py's)")
    look = parser.add_argument_group("preview")
    look.add_argument("--out-dir", type=Path, help="write each 28x28 result here as PNG")
    args = parser.parse_args(argv)  # fmt: skip

    if args.command == "preview":
        if not args.files:
            parser.error("preview needs image files")
        return preview(args.files, args.out_dir)
    if args.files:
        parser.error(f"{args.command} takes no files")
    if args.command == "accuracy":
        results = accuracy(args.mnist_dir, args.model, args.count, args.seed)
        print(json.dumps({"accuracy": results}, indent=2))
        _print_accuracy(results)
        return 0
    if min(args.repeat, args.repeat_large, args.per_set) < 1:
        parser.error("--repeat, --repeat-large and --per-set must be at least 1")
    results = bench(bench_inputs(args.mnist_dir, args.per_set), args.repeat, args.repeat_large)
    checks = targets(results)
    print(json.dumps({"preprocess_ms": results, "targets": checks}, indent=2))
    _print_speed(results, checks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
