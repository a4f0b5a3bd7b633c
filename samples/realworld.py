"""The real-world digit set: other people's handwriting, presented as clients upload it.

Two halves, built deterministically from one seed:
- `val`: everything tuned (training choices, temperature, the `uncertain` threshold) looks only
  at this half;
- `test`: only reported.
The halves share no font and no writer: fonts are assigned to a half in `samples.fonts.FONTS`,
stroke writers come from disjoint id ranges (`WRITER_IDS`), and training data that uses the
stroke model draws its writers from `TRAIN_WRITER_BASE` upwards, far from both.

Item `i` of a half is fully determined by `(seed, half, i)`: its label is `i % 10`, items
alternate between a font and a stroke writer in runs of ten, and each run of twenty shares one
presentation, one font and one writer (a writer's sheet of 0-9). So the first `n` items are the
same whether `n` or the whole half is built, every block of 100 is balanced over labels, sources
and presentations, and a CI subset is a prefix.

Built sets are cached under `artifacts/realworld/` as image files plus `index.json` (label,
source, style, presentation, drawing parameters, sha256). The cache key includes a fingerprint of
the generator's code and fonts, so a changed generator never serves stale images.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL

from handler import preprocessing
from samples import fonts, render, strokes

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = REPO_ROOT / "artifacts" / "realworld"
HALVES = ("val", "test")
DEFAULT_COUNT = 3000  # per half: 1,500 font digits and 1,500 stroke digits (150 writers)
DEFAULT_SEED = 14
_HALF_CODE = {"val": 1, "test": 2}
RUN = 20  # items per (presentation, font, writer) run: one writer's sheet of 0-9, twice
WRITER_IDS = {"val": range(0, 10_000), "test": range(10_000, 20_000)}
TRAIN_WRITER_BASE = 1_000_000  # training writers: ids from here up, disjoint from both halves


@dataclass(frozen=True)
class RealWorldSet:
    """One half (or a prefix of it): upload bytes and one metadata dict per image."""

    half: str
    uploads: list[bytes]
    items: list[dict]
    fingerprint: str
    folder: Path | None = None

    @property
    def labels(self) -> np.ndarray:
        """The true digit of every image, `(N,)` int64."""
        return np.array([item["label"] for item in self.items], dtype=np.int64)

    def column(self, key: str) -> list[str]:
        """One metadata field of every item, e.g. `source`, `style`, `presentation`."""
        return [str(item[key]) for item in self.items]


def item_plan(half: str, index: int) -> dict:
    """What item `index` of `half` is: label, source kind, presentation, font, writer id."""
    if half not in HALVES:
        raise ValueError(f"unknown half {half!r}; expected one of {HALVES}")
    run = index // RUN
    half_fonts = fonts.fonts_for(half)
    kind = "font" if (index // 10) % 2 == 0 else "stroke"
    plan = {
        "index": index,
        "half": half,
        "label": index % 10,
        "source_kind": kind,
        "presentation": render.PRESENTATIONS[run % len(render.PRESENTATIONS)],
    }
    if kind == "font":
        font = half_fonts[run % len(half_fonts)]
        plan["source"] = f"font:{font.name}"
        plan["font"] = font.name
    else:
        writer_ids = WRITER_IDS[half]
        if run >= len(writer_ids):
            raise ValueError(f"{half} has writers for {len(writer_ids) * RUN} items, not more")
        plan["source"] = "stroke"
        plan["writer"] = writer_ids[run]
    return plan


def render_item(half: str, index: int, seed: int = DEFAULT_SEED) -> tuple[bytes, dict]:
    """The upload bytes and metadata of item `index` of `half` (deterministic)."""
    plan = item_plan(half, index)
    rng = np.random.default_rng([seed, _HALF_CODE[half], index])
    if plan["source_kind"] == "font":
        font = next(f for f in fonts.FONTS if f.name == plan["font"])
        mask, params = fonts.render_font_digit(font, plan["label"], rng)
        style = fonts.slant_style(params["slant_deg"])
    else:
        writer = strokes.Writer.from_id(plan["writer"])
        mask, style = writer.draw(plan["label"], rng)
        params = {"slant_deg": round(writer.slant_deg, 2), "pen": round(writer.pen, 4)}
    data = render.present(mask, plan["presentation"], rng)
    meta = plan | {
        "style": style,
        "params": params,
        "format": "jpg" if data[:2] == b"\xff\xd8" else "png",
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    return data, meta


def fingerprint() -> str:
    """A short hash of everything that decides the images: generator code, fonts, libraries."""
    digest = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for name in (
        "digit_shapes.py",
        "distort.py",
        "fonts.py",
        "realworld.py",
        "render.py",
        "strokes.py",
    ):
        digest.update((here / name).read_bytes())
    for font in fonts.FONTS:
        digest.update(font.path.read_bytes())
    digest.update(f"numpy {np.__version__} pillow {PIL.__version__}".encode())
    return digest.hexdigest()[:12]


def build(
    half: str,
    count: int = DEFAULT_COUNT,
    seed: int = DEFAULT_SEED,
    workers: int | None = None,
    start: int = 0,
) -> RealWorldSet:
    """Render items `start..count-1` of `half` (in parallel processes when `workers` > 1)."""
    if not 0 <= start < count:
        raise ValueError(f"need 0 <= start < count, got start={start}, count={count}")
    workers = workers if workers is not None else min(2, os.cpu_count() or 1)
    indices = range(start, count)
    if workers > 1 and len(indices) >= 200:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(_render_chunk, _chunks(half, indices, seed, size=100)))
        pairs = [pair for chunk in results for pair in chunk]
    else:
        pairs = [render_item(half, i, seed) for i in indices]
    return RealWorldSet(
        half=half,
        uploads=[data for data, _ in pairs],
        items=[meta for _, meta in pairs],
        fingerprint=fingerprint(),
    )


def load(
    half: str,
    count: int = DEFAULT_COUNT,
    seed: int = DEFAULT_SEED,
    cache_dir: Path = DEFAULT_CACHE,
    workers: int | None = None,
) -> RealWorldSet:
    """The first `count` items of `half`, from the cache when it holds them, else built and cached.

    A cached build of the same half, seed and generator serves any prefix of it, and a smaller
    one is extended rather than rebuilt. Caches of an older generator are deleted.
    """
    fp = fingerprint()
    cache_dir = Path(cache_dir)
    cached = sorted(cache_dir.glob(f"{half}-*-seed{seed}-*"), key=_cached_count)
    for folder in cached:
        if not folder.name.endswith(f"-{fp}"):
            shutil.rmtree(folder, ignore_errors=True)  # an older generator's images
    cached = [f for f in cached if f.name.endswith(f"-{fp}") and f.is_dir()]
    for folder in cached:
        if _cached_count(folder) >= count:
            return _read(folder, half, count, fp)
    prefix = _read(cached[-1], half, _cached_count(cached[-1]), fp) if cached else None
    start = len(prefix.items) if prefix else 0
    rest = build(half, count, seed, workers, start=start)
    built = RealWorldSet(
        half,
        (prefix.uploads if prefix else []) + rest.uploads,
        (prefix.items if prefix else []) + rest.items,
        fp,
    )
    folder = cache_dir / f"{half}-{count}-seed{seed}-{fp}"
    _write(built, folder, carry=prefix.folder if prefix else None)
    if prefix:
        shutil.rmtree(prefix.folder, ignore_errors=True)
    logger.info("real-world %s half: %d images cached in %s", half, count, folder)
    return RealWorldSet(built.half, built.uploads, built.items, fp, folder)


def model_inputs(dataset: RealWorldSet) -> np.ndarray:
    """`(N, 1, 28, 28)` float32 inputs of `dataset` through the serving preprocessing.

    `handler.preprocessing.preprocess` on every upload, in two processes. Cached in the set's
    folder, keyed by the preprocessing code; a cached prefix is extended, not recomputed.
    """
    code = b"".join(path.read_bytes() for path in preprocessing.SOURCE_FILES)
    key = hashlib.sha256(code).hexdigest()[:12]
    cache = dataset.folder / f"inputs-{key}.npy" if dataset.folder else None
    done = np.load(cache) if cache is not None and cache.is_file() else None
    if done is not None and len(done) >= len(dataset.uploads):
        return done[: len(dataset.uploads)]
    todo = dataset.uploads[len(done) if done is not None else 0 :]
    workers = min(2, os.cpu_count() or 1)
    if workers > 1 and len(todo) >= 200:
        with ProcessPoolExecutor(workers) as pool:
            fresh = list(pool.map(preprocessing.preprocess, todo, chunksize=50))
    else:
        fresh = [preprocessing.preprocess(data) for data in todo]
    inputs = np.concatenate([done, np.stack(fresh)]) if done is not None else np.stack(fresh)
    if cache is not None:
        for stale in dataset.folder.glob("inputs-*.npy"):
            stale.unlink()
        tmp = cache.with_name(f".{cache.stem}.{os.getpid()}.npy")
        np.save(tmp, inputs)
        os.replace(tmp, cache)
    return inputs


def _chunks(half: str, indices: range, seed: int, size: int) -> Iterable[tuple]:
    for start in range(indices.start, indices.stop, size):
        yield half, range(start, min(start + size, indices.stop)), seed


def _render_chunk(args: tuple) -> list[tuple[bytes, dict]]:
    half, indices, seed = args
    return [render_item(half, i, seed) for i in indices]


def _cached_count(folder: Path) -> int:
    try:
        return int(folder.name.split("-")[1])
    except (IndexError, ValueError):
        return -1


def _write(built: RealWorldSet, folder: Path, carry: Path | None = None) -> None:
    """Write images and index.json into a temporary folder, then rename it into place.

    `carry` is a smaller cached prefix whose preprocessed inputs are kept for the new folder.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        for inputs in carry.glob("inputs-*.npy") if carry else ():
            shutil.copy2(inputs, tmp / inputs.name)
        for data, item in zip(built.uploads, built.items, strict=True):
            (tmp / _file_name(item)).write_bytes(data)
        index = {"half": built.half, "fingerprint": built.fingerprint, "items": built.items}
        (tmp / "index.json").write_text(json.dumps(index, indent=1) + "\n")
        if folder.exists():  # another process cached it meanwhile: keep theirs
            shutil.rmtree(tmp)
            return
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _read(folder: Path, half: str, count: int, fp: str) -> RealWorldSet:
    index = json.loads((folder / "index.json").read_text())
    items = index["items"][:count]
    uploads = [(folder / _file_name(item)).read_bytes() for item in items]
    for data, item in zip(uploads, items, strict=True):
        if hashlib.sha256(data).hexdigest() != item["sha256"]:
            raise RuntimeError(f"{folder / _file_name(item)} changed on disk; delete {folder}")
    return RealWorldSet(half, uploads, items, fp, folder)


def _file_name(item: dict) -> str:
    return f"{item['index']:05d}-{item['label']}.{item['format']}"
