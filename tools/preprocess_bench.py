"""Measure `handler.preprocessing` against its previous implementation, and preview its output.

    python -m tools.preprocess_bench                  # speed per input kind (make bench-preprocess)
    python -m tools.preprocess_bench accuracy         # accuracy, same uploads, same model
    python -m tools.preprocess_bench preview a.jpg --out-dir d   # the 28x28 the model sees

The baseline ("legacy") is `handler/preprocessing.py` as of commit bf77909, the module as it was
before its pixel work moved to OpenCV, loaded from git by `tools.legacy_baseline` (a shallow clone
lacks it: `git fetch --unshallow`; `bench` and `accuracy` then exit 1, `preview` still works).
Every figure below is a ratio from one run on one machine.

Speed: per input kind, the median milliseconds per image on one thread of the legacy module,
of today's module and of a plain full Pillow decode of the same bytes (`Image.open().load()`).
The kinds take turns in blocks, so they share the machine's conditions over the whole run. The
kinds, from a 28x28 MNIST PNG to a 12 MP photo and sets of scans and drawings of MNIST digits,
are made by `tools.preprocess_inputs`. JSON first, then a table and the targets. Accuracy and
preview: `tools.preprocess_quality`.
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
from pathlib import Path

from PIL import Image

from handler import preprocessing
from tools import legacy_baseline
from tools.preprocess_inputs import Kind, bench_inputs
from tools.preprocess_quality import accuracy, preview, print_accuracy

BLOCK = 10  # consecutive timed runs of one kind and implementation before the next one's turn

# Targets of the speed run (issue 13). The least "speedup" (legacy/new) per kind ...
SPEEDUP_TARGETS = {
    "jpeg_300x300_rgb": 8.0,
    "jpeg_4000x3000_photo": 4.0,
    "png_28x28_inverted": 3.0,
    "png_28x28_mnist": 1.0,  # no slower
}
MAX_PER_DECODE = 3.0  # ... and the most "per_decode" (new / a plain Pillow decode) for kinds up to
PER_DECODE_MAX_SIDE = 400  # ... this many pixels on its longer side


# --- speed ------------------------------------------------------------------------------------


def _pillow_decode(data: bytes) -> None:
    with Image.open(io.BytesIO(data)) as image:
        image.load()


def implementations() -> dict[str, Callable[[bytes], object]]:
    """What is timed, by name: a plain decode, the baseline (from git) and today's module."""
    return {
        "decode": _pillow_decode,
        "legacy": legacy_baseline.load().preprocess,
        "new": preprocessing.preprocess,
    }


def bench(kinds: dict[str, Kind], repeat: int, repeat_large: int) -> dict:
    """Median ms per image for each kind and implementation, `repeat` runs each (kinds over a
    megapixel: `repeat_large`), in blocks of BLOCK runs that take turns."""
    timed = implementations()
    runs = {
        name: repeat_large if kind.max_side > 1000 else repeat for name, kind in kinds.items()
    }
    for kind in kinds.values():  # warm-up: imports, plugin registration, allocator
        for data in kind.uploads:
            for run in timed.values():
                run(data)
    wall = {(k, i): [] for k in kinds for i in timed}
    cpu = {(k, i): [] for k in kinds for i in timed}
    for first in range(0, max(runs.values()), BLOCK):
        for name, kind in kinds.items():
            for impl, run in timed.items():
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
        for impl in timed:
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
    try:  # before any work: both commands compare against the baseline
        legacy_baseline.load()
    except legacy_baseline.BaselineUnavailable as exc:
        print(f"{parser.prog} {args.command}: {exc}", file=sys.stderr)
        return 1
    if args.command == "accuracy":
        results = accuracy(args.mnist_dir, args.model, args.count, args.seed)
        print(json.dumps({"accuracy": results}, indent=2))
        print_accuracy(results)
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
