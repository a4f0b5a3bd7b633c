"""Scoring in-process: parallel decode/preprocess in worker processes, batched inference here.

Pipeline (all bounded, so memory does not grow with the number of files):

    discover (generator) -> chunks of `chunk_size` paths -> process pool (read + prepare, at
    most `workers * 8` chunks in flight) -> batches of `batch_size` images -> the predictor's
    forward pass (CUDA when available) -> rows, yielded as they complete.

The workers run `handler.inputs.prepare` and this process `handler.predictor.Predictor.complete`:
the two halves of `Predictor.predict`, which the TorchServe handler runs too, so a file gets the
same answer from this engine as from the HTTP API.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import torch

from batch.decode import PARENT_PID_ENV, prepare_chunk, ready, worker_init
from batch.output import Row
from handler.inputs import Prepared
from handler.predictor import Predictor
from project import paths
from project.memory import peak_rss_mb

logger = logging.getLogger(__name__)

SINGLE_THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass
class LocalOptions:
    """How the local engine runs (the CLI's `local engine` options)."""

    model: Path | None = None  # .pt or .mar; default: project.paths.default_model()
    device: str = "auto"
    workers: int = os.cpu_count() or 1  # decode processes; 0 = in this process
    batch_size: int = 256
    chunk_size: int = 64
    torch_threads: int = 1


def answer_rows(rels: Iterable[str], answers: Iterable,
                predictor: Predictor) -> Iterator[Row]:  # fmt: skip
    """One Row per path from the predictor's answers: every engine builds its rows here."""
    for rel, answer in zip(rels, answers, strict=True):
        yield Row.of(rel, answer, predictor.name, predictor.version)


class LocalEngine:
    """The predictor in this process, fed by a pool of decode workers."""

    name = "local"

    def __init__(self, options: LocalOptions | None = None) -> None:
        self.options = options = options or LocalOptions()
        self._pool = None
        self.worker_peak_rss_mb: list[float | None] = []  # per worker, filled in by close()
        if options.workers > 0:
            # Each decode process must stay on one core: numpy's BLAS/OpenMP pools would
            # otherwise start a thread per core in every worker and fight each other. Workers
            # inherit this environment; the fork server preloads the torch-free decode module.
            for var in SINGLE_THREAD_ENV:
                os.environ.setdefault(var, "1")
            # No orphans: the fork server dies with this process (batch.forkserver_guard) and
            # each worker with the fork server (worker_init), whatever signal ends the job.
            os.environ[PARENT_PID_ENV] = str(os.getpid())
            ctx = mp.get_context("forkserver")
            ctx.set_forkserver_preload(["batch.forkserver_guard", "batch.decode"])
            self._pool = ProcessPoolExecutor(options.workers, mp_context=ctx,
                                             initializer=worker_init)  # fmt: skip
        # LeNet's forward pass costs a fraction of decoding an image, so intra-op threads buy
        # nothing and, beside busy decode workers, make OpenMP threads spin against them.
        torch.set_num_threads(options.torch_threads)
        try:
            # Workers start (in the background) while the model loads, not on the first chunk.
            starting = options.workers if self._pool else 0
            warming = [self._pool.submit(ready) for _ in range(starting)]
            self.predictor = Predictor.load(options.model or paths.default_model(), options.device)
            for future in warming:
                future.result()
        except BaseException:
            self.close()
            raise
        self.model_name = self.predictor.name
        self.model_version = self.predictor.version

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

    def _rows_for(self, rels: list[str], prepared: Prepared) -> Iterator[Row]:
        return answer_rows(rels, self.predictor.complete(prepared), self.predictor)

    def _error_row(self, rel: str, message: str) -> Row:
        return Row(rel, model=self.model_name, model_version=self.model_version, error=message)

    def _chunks(self, root: str, paths_: Iterable[str]) -> Iterator[tuple]:
        it = iter(paths_)
        chunks = iter(lambda: list(islice(it, self.options.chunk_size)), [])
        if self._pool is None:
            for rels in chunks:
                yield prepare_chunk(root, rels)
            return
        in_flight: deque[Future] = deque()
        # Bounded (16 chunks x 64 images x 3 KB = 3 MB for 2 workers), but deep enough that
        # the workers keep going while this process waits for the CPU on a busy machine.
        limit = self.options.workers * 8
        for rels in chunks:
            in_flight.append(self._pool.submit(prepare_chunk, root, rels))
            if len(in_flight) >= limit:
                yield in_flight.popleft().result()
        while in_flight:
            yield in_flight.popleft().result()

    def score(self, root: str | Path, paths_: Iterable[str]) -> Iterator[Row]:
        """Yield one Row per path (relative to `root`), successes in batches, errors at once."""
        pending_rels: list[str] = []
        pending: list[Prepared] = []
        count = 0
        for rels, prepared, read_errors in self._chunks(str(root), paths_):
            for rel, message in read_errors:
                yield self._error_row(rel, message)
            pending_rels.extend(rels)
            pending.append(prepared)
            count += len(prepared.inputs)
            if count >= self.options.batch_size:
                yield from self._rows_for(pending_rels, Prepared.concat(pending))
                pending_rels, pending, count = [], [], 0
        if pending_rels:
            yield from self._rows_for(pending_rels, Prepared.concat(pending))
