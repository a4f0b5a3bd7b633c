"""What preprocessing makes of uploads: the model's accuracy through the baseline and today's
module on the same uploads (`python -m tools.preprocess_bench accuracy`), and a preview of the
28x28 the model sees (`python -m tools.preprocess_bench preview FILES`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

from handler import preprocessing
from handler.normalization import normalize
from tools import legacy_baseline
from tools.preprocess_inputs import bench_inputs, load_mnist


def accuracy(mnist_dir: Path, model_path: Path, count: int, seed: int) -> dict:
    """Accuracy of the model through the legacy and today's preprocessing on the same uploads:
    the realistic set and tight crops of tests/test_realistic_offline.py (same count and seeds
    there), the drawing kinds, and the 10,000 MNIST test digits as PNGs (with how many of them
    come back pixel-exact)."""
    import torch

    from handler.artifact import load_torchscript
    from samples.digits import encode_png
    from samples.render import render_realistic_set, render_tight_crop

    legacy = legacy_baseline.load()
    mnist = load_mnist(mnist_dir)
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


def print_accuracy(results: dict) -> None:
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
