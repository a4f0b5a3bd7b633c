"""What the Ray engine runs on the cluster: the listing source, the decode tasks, the scorer actor.

    listing chunks (object store) -> decode_batch (Ray tasks, CPU, torch-free)
                                  -> Scorer (actor pool: the model loaded once per actor)

`scored_batches` builds that dataset and streams its batches: in the driver, or, for a driver
connected through Ray Client, in a `ClusterExecutor` actor on the head.

Paths travel as bytes (`os.fsencode`), so a name that is not UTF-8 survives Arrow's string
columns, and "no error" travels as "" (a column holding only nulls would come back as floats).
Every row carries the listing chunk it came from: that is how the driver checks that each file
comes back exactly once (`batch.ray_engine.ChunkLedger`). Torch is imported only inside the
actor, so decode tasks start as fast, and stay as small, as the local engine's workers.
"""

from __future__ import annotations

import itertools
import os
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

import numpy as np
import pyarrow as pa
import ray
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from batch.decode import prepare_chunk
from handler.inputs import Prepared
from handler.normalization import IMAGE_SIZE
from handler.schemas import NUM_CLASSES

LISTING_SCHEMA = pa.schema([("path", pa.binary()), ("chunk", pa.int64())])
ACTOR_START_TIMEOUT_S = 600  # a cold node may pull an image and import torch first


def listing_block(paths: list[str], chunk: int) -> pa.Table:
    """One chunk of the listing as the Arrow table the decode tasks read."""
    return pa.table({"path": pa.array([os.fsencode(p) for p in paths], pa.binary()),
                     "chunk": pa.array([chunk] * len(paths), pa.int64())},
                    schema=LISTING_SCHEMA)  # fmt: skip


def _fetch(ref) -> list[pa.Table]:
    return [ray.get(ref)]


class ListingDatasource(Datasource):
    """The listing, already in the object store as chunks: one read task per chunk.

    The driver walks the folder and `ray.put`s each chunk as it goes, so the file list never
    sits in the driver's heap; the read task only fetches its chunk (Ray Data fuses it with the
    decode task that follows).
    """

    def __init__(self, chunks: list[tuple[ray.ObjectRef, int, int]]) -> None:
        self._chunks = chunks  # (ref, rows, bytes)

    def estimate_inmemory_data_size(self) -> int:
        return sum(size for _, _, size in self._chunks)

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context=None) -> list[ReadTask]:  # fmt: skip
        return [ReadTask(partial(_fetch, ref),
                         BlockMetadata(num_rows=rows, size_bytes=size, input_files=None,
                                       exec_stats=None),
                         schema=LISTING_SCHEMA)
                for ref, rows, size in self._chunks]  # fmt: skip


def node_label() -> str:
    """This worker's node as shown in summaries: 'IP/first 8 hex digits of the node id'."""
    context = ray.get_runtime_context()
    return f"{ray.util.get_node_ip_address()}/{context.get_node_id()[:8]}"


def decode_batch(batch: dict[str, np.ndarray], root: str) -> dict[str, np.ndarray]:
    """Ray task: read and prepare a chunk of files (`batch.decode.prepare_chunk`, as locally).

    Columns out, one row per file: path, chunk, pixels (the model input, zeros where unusable),
    image_error (why the image is unusable: the predictor turns it into the row's error),
    read_error (the row's whole error when the file could not be read), decode_s (this row's
    share of the task's time, for sizing).
    """
    started = time.perf_counter()
    rels = [os.fsdecode(p) for p in batch["path"]]
    chunk_of = dict(zip(rels, batch["chunk"].tolist(), strict=True))
    readable, prepared, read_errors = prepare_chunk(root, rels)
    order = readable + [rel for rel, _ in read_errors]
    pixels = np.zeros((len(order), 1, IMAGE_SIZE, IMAGE_SIZE), np.float32)
    for i, row in enumerate(prepared.rows):
        if row is not None:
            pixels[i] = prepared.inputs[row]
    n = max(len(order), 1)
    return {
        "path": np.array([os.fsencode(rel) for rel in order], dtype=object),
        "chunk": np.array([chunk_of[rel] for rel in order], np.int64),
        "pixels": pixels,
        "image_error": np.array([e or "" for e in prepared.errors] + [""] * len(read_errors),
                                dtype=object),  # fmt: skip
        "read_error": np.array([""] * len(readable) + [m for _, m in read_errors], dtype=object),
        "decode_s": np.full(len(order), (time.perf_counter() - started) / n),
    }


class Scorer:
    """Actor: the predictor, loaded once from the model bytes the driver put in the object
    store (so worker nodes need no copy of the model file); scores batches."""

    def __init__(self, model: list, device: str, torch_threads: int) -> None:
        import torch

        from handler.predictor import Predictor

        torch.set_num_threads(torch_threads)
        data, suffix = ray.get(model[0])  # (bytes, ".pt" or ".mar")
        with tempfile.NamedTemporaryFile(suffix=suffix) as f:
            f.write(data)
            f.flush()
            self.predictor = Predictor.load(f.name, device)
        self.node = node_label()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from batch.local_engine import answer_rows
        from batch.output import Row

        started = time.perf_counter()
        paths = [os.fsdecode(p) for p in batch["path"]]
        readable = [i for i, e in enumerate(batch["read_error"]) if not e]
        image_errors = [batch["image_error"][i] or None for i in readable]
        good = [i for i, e in zip(readable, image_errors, strict=True) if e is None]
        rows_in_inputs = iter(range(len(good)))
        prepared = Prepared(batch["pixels"][good],
                            [None if e is not None else next(rows_in_inputs) for e in image_errors],
                            image_errors)  # fmt: skip
        answers = self.predictor.complete(prepared)
        rows = dict(zip(readable, answer_rows([paths[i] for i in readable], answers,
                                              self.predictor), strict=True))  # fmt: skip
        for i, message in enumerate(batch["read_error"]):
            if message:
                rows[i] = Row(paths[i], model=self.predictor.name,
                              model_version=self.predictor.version, error=message)  # fmt: skip
        ordered = [rows[i] for i in range(len(paths))]
        n = len(ordered)
        probabilities = np.full((n, NUM_CLASSES), np.nan)
        for i, row in enumerate(ordered):
            if row.probabilities is not None:
                probabilities[i] = row.probabilities
        return {
            "path": batch["path"],
            "chunk": batch["chunk"],
            "digit": np.array([-1 if r.digit is None else r.digit for r in ordered], np.int64),
            "confidence": np.array([np.nan if r.confidence is None else r.confidence
                                    for r in ordered], np.float64),  # fmt: skip
            "uncertain": np.array([bool(r.uncertain) for r in ordered]),
            "probabilities": probabilities,
            "model": np.array([r.model for r in ordered], dtype=object),
            "model_version": np.array([r.model_version for r in ordered], dtype=object),
            "error": np.array([r.error or "" for r in ordered], dtype=object),
            "node": np.array([self.node] * n, dtype=object),
            "decode_s": batch["decode_s"],
            "score_s": np.full(n, (time.perf_counter() - started) / max(n, 1)),
        }


def node_by_node(node_ids: list[str]):
    """Remote args for each new CPU actor: the next node in turn, any live node as fallback.

    Actors that reserve no CPU are not spread by Ray's SPREAD policy in any dependable way (its
    round-robin index also moves with every decode task), nor by soft node affinity, so two
    could share a node while the other's cores decode for both. A label selector on the node id
    with an empty fallback selector places each actor on its node, and an actor restarted after
    its node died on any live one. (`ray_remote_args_fn`, the per-actor hook, is deprecated after
    Ray 2.60, which is pinned.)
    """
    turn = itertools.cycle(node_ids)
    return lambda: {"label_selector": {"ray.io/node-id": next(turn)},
                    "fallback_strategy": [{"label_selector": {}}]}  # fmt: skip


@dataclass(frozen=True)
class Pipeline:
    """What the dataset is built from; picklable: over Ray Client it travels to the head."""

    root: str
    chunks: list  # (ObjectRef of a listing block, rows, bytes)
    model: list  # [ObjectRef of (model bytes, suffix)]
    device: str
    torch_threads: int
    batch_size: int
    decode_cpus: float
    actors: int
    actor_gpus: float
    actor_cpus: float
    nodes: list  # ids of the nodes with CPUs, for placing CPU actors one per node
    progress: bool


def scored_batches(p: Pipeline) -> Iterator[dict[str, np.ndarray]]:
    """Build the dataset (listing -> decode tasks -> scorer actors) and stream its batches."""
    from ray.util.annotations import RayDeprecationWarning

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = p.progress
    # Start feeding only once every actor has its model loaded: the first actor up would
    # otherwise take the whole of a short job, and a pool the cluster cannot place (say
    # GPUs asked of a CPU cluster) fails with a clear error instead of waiting for good.
    context.wait_for_min_actors_s = ACTOR_START_TIMEOUT_S
    with warnings.catch_warnings():  # `ray_remote_args_fn`'s deprecation: see node_by_node
        warnings.simplefilter("ignore", RayDeprecationWarning)
        dataset = (ray.data.read_datasource(ListingDatasource(p.chunks))
                   .map_batches(decode_batch, fn_kwargs={"root": p.root}, batch_size=None,
                                num_cpus=p.decode_cpus, batch_format="numpy")
                   .map_batches(Scorer, fn_constructor_args=(p.model, p.device, p.torch_threads),
                                batch_size=p.batch_size, batch_format="numpy",
                                compute=ray.data.ActorPoolStrategy(size=p.actors),
                                num_gpus=p.actor_gpus, num_cpus=p.actor_cpus,
                                ray_remote_args_fn=None if p.actor_gpus else node_by_node(p.nodes)))
    yield from dataset.iter_batches(batch_size=None, batch_format="numpy")


@ray.remote(num_cpus=0, resources={"node:__internal_head__": 0.001})
class ClusterExecutor:
    """`scored_batches` run on the head node for a driver connected through Ray Client, which can
    neither execute Ray Data nor receive a streaming generator: the client pulls batch by batch."""

    def __init__(self, p: Pipeline) -> None:
        self._batches = scored_batches(p)

    def next_batch(self) -> dict[str, np.ndarray] | None:
        """The next scored batch, or None once the dataset is done."""
        return next(self._batches, None)
