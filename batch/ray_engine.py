"""Scoring on a Ray cluster with Ray Data: decode tasks on CPUs, the model in an actor pool.

Pipeline:

    discover (here, streaming) -> chunks of `chunk_size` paths `ray.put` into the object store
    -> Ray Data: read chunk + decode/preprocess (tasks, `batch.decode.prepare_chunk`, torch-free)
    -> `map_batches(Scorer)`: an actor pool, the predictor loaded once per actor, GPUs when asked
    -> `iter_batches()` back here -> rows, written by the job through the append-only writer.

Exactly once: Ray retries the tasks and restarts the actors of a node that dies (Ray Data's
defaults: task retries and actor restarts without limit), and every row carries its listing
chunk, so `ChunkLedger` drops a row that would come back twice and fails the job if one never
does. A driver killed at any moment loses only rows it had not written; `--resume` lists the
folder again without them. Why not Ray Data's own checkpointing: batch/README.md.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from batch.job import JobError
from batch.output import Row
from project import paths

logger = logging.getLogger(__name__)

LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": a Ray node on 127.0.0.1 only
AUTH_MODE_ENV, AUTH_TOKEN_ENV = "RAY_AUTH_MODE", "RAY_AUTH_TOKEN"
CONNECT_TIMEOUT_S = 5.0
# On a CPU, LeNet's forward pass and the answers cost about half of what reading and decoding
# an MNIST PNG costs (0.06-0.09 vs 0.12-0.16 ms of CPU; batch/README.md), so one actor keeps up
# with the decode tasks of about two cores, and takes a third core's worth of time itself.
CPU_CORES_PER_ACTOR = 3


class RayEngineError(JobError):
    """The Ray engine cannot start (Ray missing, no cluster at the address) or lost files."""


@dataclass
class RayOptions:
    """How the ray engine runs (the CLI's `ray engine` options); None = sized from the cluster."""

    address: str | None = None  # None: $RAY_ADDRESS, else a private single-node Ray (loopback)
    model: Path | None = None  # .pt or .mar; default: project.paths.default_model()
    device: str = "auto"
    # Per block of rows, Ray Data costs about as much as decoding a few dozen PNGs in scheduling,
    # transfers and the driver's loop: blocks larger than the local engine's keep that small.
    batch_size: int = 1024  # images per actor call (one forward pass)
    chunk_size: int = 512  # files per decode task (and what a retried task does again)
    actors: int | None = None  # default: see `plan_actors`
    actor_gpus: float | None = None  # default: 1 when the cluster has GPUs, else 0
    actor_cpus: float | None = None  # default: 1 with GPUs, else 0 (see `plan_actors`)
    decode_cpus: float = 1.0
    torch_threads: int = 1
    num_cpus: int | None = None  # private instance only: its CPUs (default: all)
    progress: bool = True  # Ray Data's progress bars on stderr


@dataclass
class ActorPlan:
    """How many scorer actors and what each reserves."""

    actors: int
    gpus: float
    cpus: float


def plan_actors(resources: dict, nodes: int, options: RayOptions) -> ActorPlan:
    """The actor pool for a cluster with these total `resources` and `nodes` alive nodes.

    With GPUs: one actor per GPU, each holding one CPU to feed it. Without: one actor per
    CPU_CORES_PER_ACTOR cores, at least one per node, holding no CPU, so that every core runs
    decode tasks and the actors share the cores with them.
    """
    cluster_gpus = int(resources.get("GPU", 0))
    gpus = options.actor_gpus if options.actor_gpus is not None else (1 if cluster_gpus else 0)
    if gpus and gpus > cluster_gpus:
        # Ray would wait for a GPU that no node has (the actors' start timeout) before failing.
        raise RayEngineError(f"--actor-gpus {gpus:g}, but the cluster has {cluster_gpus} GPUs")
    cpus = options.actor_cpus if options.actor_cpus is not None else (1 if gpus else 0)
    if options.actors is not None:
        actors = options.actors
    elif gpus:
        actors = max(1, int(cluster_gpus / gpus))
    else:
        actors = max(1, nodes, round(resources.get("CPU", 0) / CPU_CORES_PER_ACTOR))
    return ActorPlan(actors, gpus, cpus)


class ChunkLedger:
    """Rows still owed per listing chunk: a row delivered twice is dropped, a lost one is found.

    Holds one count per chunk and the paths of chunks still in flight only, so its memory is
    bounded by the chunks Ray Data has in flight, not by the number of files.
    """

    def __init__(self) -> None:
        self.expected: dict[int, int] = {}
        self._seen: dict[int, set[str]] = {}
        self.duplicates = 0

    def add(self, chunk: int, rows: int) -> None:
        self.expected[chunk] = rows

    def accept(self, chunk: int, path: str) -> bool:
        """True the first time `path` of `chunk` comes back, False for a repeat."""
        if chunk not in self.expected:
            self.duplicates += 1  # the chunk is complete already
            return False
        seen = self._seen.setdefault(chunk, set())
        if path in seen:
            self.duplicates += 1
            return False
        seen.add(path)
        if len(seen) == self.expected[chunk]:
            del self.expected[chunk], self._seen[chunk]
        return True

    def missing(self) -> int:
        """Rows listed but never delivered."""
        return sum(n - len(self._seen.get(c, ())) for c, n in self.expected.items())


def import_ray(private: bool):
    """`ray` and `ray.data`, or RayEngineError saying how to install them.

    A private instance must be bound to 127.0.0.1: Ray reads LOCAL_ONLY_ENV at import time and
    then gives the node the loopback address instead of the host's first interface. A cluster
    with token authentication needs `RAY_AUTH_MODE=token` and the token (`RAY_AUTH_TOKEN` or
    `RAY_AUTH_TOKEN_PATH`) in this process's environment, as for any Ray driver.
    """
    if private:
        os.environ.setdefault(LOCAL_ONLY_ENV, "0")
        if AUTH_MODE_ENV not in os.environ and not os.environ.get(AUTH_TOKEN_ENV):
            # Ray turns token authentication on for a new local instance and, lacking a token,
            # writes one to ~/.ray/auth_token, which then switches every later `ray start` on
            # this host to token mode. A token for this job only, in the environment its Ray
            # processes inherit, keeps the protection without that side effect.
            os.environ[AUTH_TOKEN_ENV] = secrets.token_hex(32)
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise RayEngineError(f"the ray engine needs Ray ({exc}); install it with "
                             "pip install '.[ray]'") from exc  # fmt: skip
    return ray


def resolve_address(address: str) -> str:
    """The HOST:PORT behind `address` ('auto' looked up as Ray does, `ray://` dropped), checked
    reachable.

    `ray.init` retries an unreachable GCS for minutes; a refused TCP connection here is a clear
    error at once.
    """
    target = address.removeprefix("ray://")
    if address == "auto":
        from ray._private.services import get_ray_address_from_environment

        try:
            target = get_ray_address_from_environment("auto", None)
        except ConnectionError as exc:
            raise RayEngineError(f"--address auto: {exc}") from exc
    host, _, port = target.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except (OSError, ValueError) as exc:
        raise RayEngineError(
            f"no Ray cluster reachable at {address} ({target}: {exc}); start one with "
            "`ray start --head` or pass the head's --address HOST:PORT or ray://HOST:PORT"
        ) from exc
    return target


class RayEngine:
    """Ray Data on a cluster (`--address`) or on a private single-node Ray started for the job."""

    name = "ray"

    def __init__(self, options: RayOptions | None = None) -> None:
        from handler.predictor import Predictor

        self.options = options = options or RayOptions()
        address = options.address or os.environ.get("RAY_ADDRESS") or None
        # Load the model here first: a bad model fails the job before any cluster work, and
        # the rows name the version the actors will load from these same bytes.
        model_path = Path(options.model or paths.default_model())
        predictor = Predictor.load(model_path, "cpu")
        self.model_name, self.model_version = predictor.name, predictor.version
        self._model = (model_path.read_bytes(), model_path.suffix)
        del predictor
        if address and address.startswith("ray://"):
            # Each Ray Client connection starts a server process on the head first; on a busy
            # head that takes longer than the client's default 5 s first wait (3 tries in all).
            os.environ.setdefault("RAY_CLIENT_INITIAL_CONNECTION_TIMEOUT_S", "30")
        self.ray = ray = import_ray(private=address is None)
        init = {"logging_level": logging.WARNING, "log_to_driver": True}
        if address is None:
            init.update(address="local", include_dashboard=False, num_cpus=options.num_cpus)
        else:
            resolved = resolve_address(address)
            init["address"] = f"ray://{resolved}" if address.startswith("ray://") else resolved
        self.client = init["address"].startswith("ray://")
        try:
            ray.init(**init)
        except Exception as exc:  # Ray raises several kinds (connection, auth, runtime)
            hint = ("; a cluster with token authentication needs RAY_AUTH_MODE=token and "
                    "RAY_AUTH_TOKEN here" if "auth" in str(exc).lower() else "")
            raise RayEngineError(f"cannot connect to Ray at {address or 'a new local instance'}: "
                                 f"{type(exc).__name__}: {str(exc).splitlines()[0]}{hint}") from exc
        self.rows_per_node: Counter = Counter()
        self.decode_s = 0.0  # decode task time, all rows (for sizing: s per image per core)
        self.score_s: Counter = Counter()  # actor busy time per node
        self.duplicates_dropped = 0
        self.plan: ActorPlan | None = None

    def close(self) -> None:
        """Disconnect (a private instance is stopped)."""
        if self.ray.is_initialized():
            self.ray.shutdown()

    def __enter__(self) -> RayEngine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _put_listing(self, paths_: Iterable[str], ledger: ChunkLedger) -> list[tuple]:
        from batch.ray_worker import listing_block

        chunks, it = [], iter(paths_)
        for number, rels in enumerate(iter(lambda: list(islice(it, self.options.chunk_size)),
                                           [])):  # fmt: skip
            table = listing_block(rels, number)
            chunks.append((self.ray.put(table), table.num_rows, table.nbytes))
            ledger.add(number, table.num_rows)
        return chunks

    def _pipeline(self, root: str, chunks: list[tuple]):
        from batch.ray_worker import Pipeline

        ray, options = self.ray, self.options
        nodes = [n["NodeID"] for n in ray.nodes()
                 if n.get("Alive") and n.get("Resources", {}).get("CPU")]  # fmt: skip
        self.plan = plan = plan_actors(ray.cluster_resources(), len(nodes), options)
        logger.info("ray engine: %d node(s) with CPUs, %s; %d scorer actor(s) x (%g GPU, %g CPU)",
                    len(nodes), ray.cluster_resources(), plan.actors, plan.gpus, plan.cpus)
        device = options.device if options.device != "auto" else ("cuda" if plan.gpus else "cpu")
        # The model goes to the actors by reference (in a list, so that Ray does not resolve it
        # into the constructor arguments): a restarted actor fetches it again.
        return Pipeline(root=root, chunks=chunks, model=[ray.put(self._model)], device=device,
                        torch_threads=options.torch_threads, batch_size=options.batch_size,
                        decode_cpus=options.decode_cpus, actors=plan.actors,
                        actor_gpus=plan.gpus, actor_cpus=plan.cpus, nodes=nodes,
                        progress=options.progress)  # fmt: skip

    def score(self, root: str | Path, paths_: Iterable[str]) -> Iterator[Row]:
        """Yield one Row per path (relative to `root`), in the order the actors finish them."""
        from batch.ray_worker import ClusterExecutor, scored_batches

        ledger = ChunkLedger()
        started = time.perf_counter()
        chunks = self._put_listing(paths_, ledger)
        logger.info("listed %d files in %d chunks in %.1f s", sum(c[1] for c in chunks),
                    len(chunks), time.perf_counter() - started)
        if not chunks:
            return
        # Workers on other nodes read the files themselves: the folder must be at the same
        # absolute path on every node (a shared or identically mounted file system).
        pipeline = self._pipeline(str(Path(root).resolve()), chunks)
        if self.client:
            # Ray Data cannot execute from a Ray Client driver: its executor runs in an actor on
            # the head instead, and this process pulls the scored batches from it.
            executor = ClusterExecutor.remote(pipeline)
            batches = iter(lambda: self.ray.get(executor.next_batch.remote()), None)
        else:
            batches = scored_batches(pipeline)
        try:
            for batch in batches:
                yield from self._rows(batch, ledger)
        except self.ray.exceptions.RayError as exc:
            # What Ray could not retry ends the job; the rows written so far stay.
            raise RayEngineError(f"the job failed on the cluster: {type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0]}; --resume continues it") from exc
        self.duplicates_dropped = ledger.duplicates
        missing = ledger.missing()
        if missing:
            raise RayEngineError(f"{missing} listed files never came back from the cluster; "
                                 "run again with --resume to score them")  # fmt: skip

    def _rows(self, batch: dict, ledger: ChunkLedger) -> Iterator[Row]:
        # Whole columns to Python lists first: one C loop each, not a numpy scalar per cell.
        columns = zip(batch["path"].tolist(), batch["chunk"].tolist(), batch["digit"].tolist(),
                      batch["confidence"].tolist(), batch["uncertain"].tolist(),
                      batch["probabilities"].tolist(),
                      batch["model"].tolist(), batch["model_version"].tolist(),
                      batch["error"].tolist(), batch["node"].tolist(),
                      batch["score_s"].tolist(), strict=True)  # fmt: skip
        self.decode_s += float(batch["decode_s"].sum())
        for raw, chunk, digit, confidence, uncertain, probabilities, model, version, error, node, \
                score_s in columns:
            path = os.fsdecode(raw)
            if not ledger.accept(chunk, path):
                logger.warning("dropped a second row for %r (a retried task delivered it "
                               "again)", path)  # fmt: skip
                continue
            self.rows_per_node[node] += 1
            self.score_s[node] += score_s
            if error:
                yield Row(path, model=model, model_version=version, error=error)
            else:
                yield Row(path, digit, confidence, probabilities, model, version,
                          uncertain=uncertain)
