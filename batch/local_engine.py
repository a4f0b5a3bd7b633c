"""Scoring in-process: parallel decode/preprocess in worker processes, batched inference here.

Pipeline (all bounded, so memory does not grow with the number of files):

    discover (generator) -> chunks of `chunk_size` paths -> process pool (read + preprocess,
    at most `workers * 8` chunks in flight) -> batches of `batch_size` arrays -> TorchScript
    forward on CUDA when available -> rows, yielded as they complete.

Preprocessing is `handler.preprocessing.preprocess`, the very function the TorchServe handler
calls, and probabilities go through `Prediction.from_probabilities` like the handler's do, so a
file gets the same answer from this engine as from the HTTP API.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import tempfile
import zipfile
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from itertools import islice
from pathlib import Path

import numpy as np
import torch

from batch.decode import preprocess_chunk, ready
from batch.output import Row
from handler.artifact import ArtifactError, load_torchscript
from handler.schemas import Prediction

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
SINGLE_THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
DEFAULT_MODEL_CANDIDATES = (REPO_ROOT / "artifacts" / "lenet.pt",
                            REPO_ROOT / "model_store" / "lenet.mar")


def default_model_path() -> Path:
    """`artifacts/lenet.pt` when it exists, else `model_store/lenet.mar`."""
    for candidate in DEFAULT_MODEL_CANDIDATES:
        if candidate.is_file():
            return candidate
    return DEFAULT_MODEL_CANDIDATES[0]


def load_model(path: str | Path, device: str | torch.device = "cpu"):
    """Load `(module, metadata)` from a TorchScript `.pt` or from the `.mar` that ships it.

    For a `.mar`, the serialized file named in `MAR-INF/MANIFEST.json` is extracted to a
    private temporary folder, loaded with `handler.artifact.load_torchscript`, and deleted.
    """
    path = Path(path)
    if path.suffix != ".mar":
        return load_torchscript(path, device)
    if not path.is_file():
        raise ArtifactError(f"model archive {path} not found; build it with `python -m deploy "
                            "archive`")
    try:
        with zipfile.ZipFile(path) as mar:
            manifest = json.loads(mar.read("MAR-INF/MANIFEST.json"))
            serialized = manifest["model"]["serializedFile"]
            with tempfile.TemporaryDirectory(prefix="batch-mar-") as tmp:
                target = Path(tmp) / Path(serialized).name
                target.write_bytes(mar.read(serialized))
                module, metadata = load_torchscript(target, device)
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path} is not a usable model archive: {exc!r}") from exc
    metadata.setdefault("name", manifest["model"].get("modelName"))
    metadata.setdefault("version", manifest["model"].get("modelVersion"))
    return module, metadata


def pick_device(requested: str = "auto") -> torch.device:
    """'auto' -> CUDA when available, else CPU."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(requested)


def peak_rss_mb(pid: int) -> float | None:
    """A live process's peak resident memory (Linux `VmHWM`), MiB; None where unknown."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


class LocalEngine:
    """The TorchScript model in this process, fed by a pool of preprocessing workers."""

    name = "local"

    def __init__(self, model_path: str | Path | None = None, *, device: str = "auto",
                 workers: int | None = None, batch_size: int = 256,
                 chunk_size: int = 64, torch_threads: int = 1) -> None:
        self.workers = (os.cpu_count() or 1) if workers is None else workers
        self.batch_size = batch_size
        self.chunk_size = chunk_size
        self.device = pick_device(device)
        # The pool starts before torch does any work, through a fork server that preloads the
        # preprocessing module: workers start fast and never inherit torch's thread pools.
        self._pool = None
        self.worker_peak_rss_mb: list[float | None] = []  # per worker, filled in by close()
        if self.workers > 0:
            # Each decoder process must stay on one core: numpy's BLAS/OpenMP pools would
            # otherwise start a thread per core in every worker and fight each other (measured:
            # 2 workers went from ~740 to ~1800 images/s on 2 cores). Workers inherit this env.
            for var in SINGLE_THREAD_ENV:
                os.environ.setdefault(var, "1")
            ctx = mp.get_context("forkserver")
            ctx.set_forkserver_preload(["batch.decode"])
            self._pool = ProcessPoolExecutor(self.workers, mp_context=ctx)
        if self.device.type == "cpu":
            # LeNet's forward costs ~30 us per image on ONE core, an order of magnitude less
            # than decoding it, so intra-op threads buy nothing and, next to `workers` busy
            # decoder processes, make OpenMP threads spin against them (measured on 2 cores:
            # 7 ms -> 200 ms per 256-image batch with 2 threads). Hence 1 by default.
            torch.set_num_threads(torch_threads)
        try:
            # Workers start (in the background) while the model loads, not on the first chunk.
            warming = [self._pool.submit(ready) for _ in range(self.workers)] if self._pool else []
            self.module, self.metadata = load_model(model_path or default_model_path(),
                                                    self.device)
            for future in warming:
                future.result()
        except BaseException:
            self.close()
            raise
        self.model_name = str(self.metadata.get("name") or "lenet")
        self.model_version = str(self.metadata.get("version") or "")

    def close(self) -> None:
        """Stop the worker processes (recording their peak RSS first)."""
        if self._pool is not None:
            # The fork-server's workers are not our children, so RUSAGE_CHILDREN never sees
            # them: read each one's high-water mark while it still exists.
            pids = list(getattr(self._pool, "_processes", None) or {})
            self.worker_peak_rss_mb = [peak_rss_mb(pid) for pid in pids]
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> LocalEngine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def predict(self, inputs: np.ndarray) -> np.ndarray:
        """(N, 1, 28, 28) normalised inputs -> (N, 10) float32 softmax probabilities."""
        with torch.inference_mode():
            logits = self.module(torch.from_numpy(inputs).to(self.device))
            return torch.softmax(logits.float(), dim=1).cpu().numpy()

    def _rows_for(self, rels: list[str], inputs: np.ndarray) -> Iterator[Row]:
        for start in range(0, len(rels), self.batch_size):
            probs = self.predict(inputs[start:start + self.batch_size])
            for rel, p in zip(rels[start:start + self.batch_size], probs, strict=True):
                pred = Prediction.from_probabilities(p)
                yield Row(rel, pred.digit, pred.confidence, pred.probabilities,
                          self.model_name, self.model_version)

    def _chunks(self, root: str, paths: Iterable[str]) -> Iterator[tuple]:
        it = iter(paths)
        chunks = iter(lambda: list(islice(it, self.chunk_size)), [])
        if self._pool is None:
            for rels in chunks:
                yield preprocess_chunk(root, rels)
            return
        in_flight: deque[Future] = deque()
        # Bounded (16 chunks x 64 images x 3 KB = 3 MB for 2 workers), but deep enough that
        # the workers keep going while this process waits for the CPU on a busy machine.
        limit = self.workers * 8
        for rels in chunks:
            in_flight.append(self._pool.submit(preprocess_chunk, root, rels))
            if len(in_flight) >= limit:
                yield in_flight.popleft().result()
        while in_flight:
            yield in_flight.popleft().result()

    def score(self, root: str | Path, paths: Iterable[str]) -> Iterator[Row]:
        """Yield one Row per path (relative to `root`), successes in batches, errors at once."""
        root = str(root)
        pending_rels: list[str] = []
        pending: list[np.ndarray] = []
        count = 0
        for ok, stacked, errors in self._chunks(root, paths):
            for rel, message in errors:
                yield Row(rel, model=self.model_name, model_version=self.model_version,
                          error=message)
            if ok:
                pending_rels.extend(ok)
                pending.append(stacked)
                count += len(ok)
            if count >= self.batch_size:
                yield from self._rows_for(pending_rels, np.concatenate(pending))
                pending_rels, pending, count = [], [], 0
        if pending_rels:
            yield from self._rows_for(pending_rels, np.concatenate(pending))
