"""Command line: `python -m batch score ...` and `python -m batch bench ...`."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from batch import EXIT_INTERRUPTED, EXIT_JOB_FAILED, EXIT_OK, EXIT_ROW_ERRORS
from handler import MODEL_NAME

logger = logging.getLogger(__name__)

EPILOG = f"""exit status:
  {EXIT_OK}  every file was scored
  {EXIT_ROW_ERRORS}  finished, but some rows are errors (see the error column / --summary)
  {EXIT_JOB_FAILED}  the job failed: bad arguments, model missing, output exists without
     --resume/--overwrite or is in use by another run, --resume over another model's rows,
     a write failed (disk full: no row is torn), TorchServe refused the token (401 / 400
     InvalidKeyException) or does not know the model (404), Ray is not installed or no Ray
     cluster is reachable
  {EXIT_INTERRUPTED}  stopped by SIGTERM or Ctrl-C: the rows scored so far are written whole;
     --resume continues
"""


def build_parser() -> argparse.ArgumentParser:
    """The `score` and `bench` sub-commands."""
    parser = argparse.ArgumentParser(prog="python -m batch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=EPILOG)
    sub = parser.add_subparsers(dest="command", required=True)
    score = sub.add_parser(
        "score", help="score every image under a folder into a CSV/JSONL/Parquet file",
        description="Score every image under INPUT_DIR exactly once; one row per file.",
        formatter_class=lambda prog: argparse.RawDescriptionHelpFormatter(prog, width=100),
        epilog=EPILOG)
    add_score_arguments(score)
    bench = sub.add_parser("bench", help="measure ceiling, local, ray and http engines (images/s)",
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    from batch.bench import add_arguments as add_bench_arguments

    add_bench_arguments(bench)
    return parser


def add_score_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `score` (defaults shown in each help line)."""
    p.add_argument("input_dir", type=Path, metavar="INPUT_DIR", help="folder to walk recursively")
    io = p.add_argument_group("input and output")
    io.add_argument("--output", "-o", type=Path, required=True,
                    help="predictions file; .csv, .jsonl or .parquet decides the format")
    io.add_argument("--glob", default=None,
                    help="fnmatch pattern on the relative path (or the name, if it has no '/') "
                         "instead of the default: every extension Pillow reads")
    io.add_argument("--resume", action="store_true",
                    help="continue an existing output: skip files already in it (default: off)")
    io.add_argument("--overwrite", action="store_true",
                    help="replace an existing output (default: refuse)")
    io.add_argument("--allow-mixed-models", action="store_true",
                    help="let --resume add rows of a model version other than the one the "
                         "existing rows were scored with (default: refuse)")
    io.add_argument("--summary", type=Path, default=None, help="also write the summary as JSON")
    io.add_argument("--plot", type=Path, default=None,
                    help="PNG with histograms of predicted digits and confidence")
    io.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    eng = p.add_argument_group("engine")
    eng.add_argument("--engine", choices=("local", "http", "ray"), default="local",
                     help="local: TorchScript in-process; http: TorchServe; ray: Ray Data on a "
                          "Ray cluster (default: local)")
    loc = p.add_argument_group("local and ray engines")
    loc.add_argument("--model", type=Path, default=None,
                     help="TorchScript .pt or .mar archive (default: $LENET_MODEL, else "
                         "artifacts/lenet.pt, else model_store/lenet.mar)")
    loc.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                     help="local: preprocessing processes; 0 = in the main process "
                          f"(default: cores = {os.cpu_count()})")
    loc.add_argument("--batch-size", type=int, default=None,
                     help="images per forward pass (default: local 256, ray 1024)")
    loc.add_argument("--chunk-size", type=int, default=None,
                     help="files per preprocessing task (default: local 64, ray 512)")
    loc.add_argument("--torch-threads", type=int, default=1,
                     help="intra-op threads for inference on CPU (default: 1; the model is "
                          "tiny, decoding dominates)")
    loc.add_argument("--device", default="auto",
                     help="auto (CUDA when available), cpu, cuda, cuda:N (default: auto)")
    ray = p.add_argument_group(
        "ray engine",
        "Decoding runs as Ray tasks (one CPU each), inference in a pool of actors that load the "
        "model once each. The files must be at the same absolute path on every node. Install "
        "with pip install '.[ray]'.")
    ray.add_argument("--address", default=None,
                     help="cluster: auto, HOST:PORT (the head's GCS) or ray://HOST:PORT (Ray "
                          "Client) (default: $RAY_ADDRESS, else a private single-node Ray on "
                          "127.0.0.1 for this job)")
    ray.add_argument("--actors", type=int, default=None,
                     help="scorer actors (default: one per GPU, else one per 3 CPUs and at "
                          "least one per node)")
    ray.add_argument("--actor-gpus", type=float, default=None,
                     help="GPUs per actor (default: 1 when the cluster has GPUs, else 0)")
    ray.add_argument("--actor-cpus", type=float, default=None,
                     help="CPUs each actor reserves (default: 1 with GPUs, else 0: the actor "
                          "shares the node's cores with the decode tasks)")
    http = p.add_argument_group(
        "http engine",
        "The inference key comes from deploy.keys: $LENET_INFERENCE_TOKEN, else the key file "
        "$LENET_KEY_FILE, else .run/key_file.json (the launcher's run dir); re-read after a "
        "refusal, so a TorchServe restart mid-run is survived.")
    http.add_argument("--url", action="append", default=None,
                      help="inference API base URL; repeat to spread round-robin "
                           "(default: http://127.0.0.1:8080)")
    http.add_argument("--model-name", default=MODEL_NAME,
                      help=f"registered model (default: {MODEL_NAME})")
    http.add_argument("--management-url", default=None,
                      help="management API, for the model version when the server sends no "
                           "X-Model-Version header (older handlers; default: none)")
    http.add_argument("--concurrency", type=int, default=8,
                      help="requests in flight (default: 8)")
    http.add_argument("--images-per-request", type=int, default=8,
                      help="images per multipart request (default: 8)")
    http.add_argument("--max-attempts", type=int, default=10,
                      help="tries per request on connection errors/5xx/503 (default: 10)")
    http.add_argument("--timeout", type=float, default=30.0,
                      help="seconds per HTTP request (default: 30)")


def make_engine(args: argparse.Namespace):
    """A factory of the engine the options ask for (the job opens it once the output is OK)."""
    if args.engine == "local":
        from batch.local_engine import LocalEngine, LocalOptions

        options = LocalOptions(model=args.model, device=args.device, workers=args.workers,
                               batch_size=args.batch_size or 256, chunk_size=args.chunk_size or 64,
                               torch_threads=args.torch_threads)  # fmt: skip
        return lambda: LocalEngine(options)
    if args.engine == "ray":
        from batch.ray_engine import RayEngine, RayOptions

        options = RayOptions(address=args.address, model=args.model, device=args.device,
                             batch_size=args.batch_size or RayOptions.batch_size,
                             chunk_size=args.chunk_size or RayOptions.chunk_size,
                             actors=args.actors, actor_gpus=args.actor_gpus,
                             actor_cpus=args.actor_cpus, torch_threads=args.torch_threads,
                             progress=not args.no_progress)  # fmt: skip
        return lambda: RayEngine(options)
    from batch.http_engine import HttpEngine, RetryPolicy

    return lambda: HttpEngine(args.url or ["http://127.0.0.1:8080"], model_name=args.model_name,
                              concurrency=args.concurrency,
                              images_per_request=args.images_per_request,
                              retry=RetryPolicy(max_attempts=args.max_attempts),
                              timeout=args.timeout, management_url=args.management_url)


def validate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Reject inconsistent options before any work starts (argparse exits with status 2)."""
    if args.resume and args.overwrite:
        parser.error("--resume and --overwrite exclude each other")
    for name in ("batch_size", "chunk_size", "torch_threads", "concurrency",
                 "images_per_request", "max_attempts", "actors"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.workers < 0:
        parser.error("--workers must be 0 or more")
    for name in ("actor_gpus", "actor_cpus"):
        if getattr(args, name) is not None and getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be 0 or more")
    if not args.input_dir.is_dir():
        parser.error(f"INPUT_DIR {args.input_dir} is not a folder")
    for option in ("summary", "plot"):  # checked now, not after hours of scoring
        path = getattr(args, option)
        if path is not None and not path.parent.is_dir():
            parser.error(f"--{option} {path}: folder {path.parent} does not exist")
    if args.allow_mixed_models and not args.resume:
        parser.error("--allow-mixed-models only applies with --resume")


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status documented in the epilog."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "bench":
        from batch.bench import run as run_bench
        from train.mnist import MnistError

        try:
            return run_bench(args)
        except MnistError as exc:  # no local MNIST and no mirror: one clear message
            print(f"batch bench: error: {exc}", file=sys.stderr)
            return EXIT_JOB_FAILED
    validate(args, parser)
    from batch.job import JobError, JobOptions, run_job

    options = JobOptions(input_dir=args.input_dir, output=args.output, glob=args.glob,
                         resume=args.resume, overwrite=args.overwrite, summary=args.summary,
                         plot=args.plot, progress=not args.no_progress,
                         allow_mixed_models=args.allow_mixed_models)  # fmt: skip
    # SIGTERM unwinds like Ctrl-C: the engine stops, its workers exit, written rows are synced.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        summary = run_job(options, make_engine(args))
    except JobError as exc:
        print(f"batch score: error: {exc}", file=sys.stderr)
        return EXIT_JOB_FAILED
    except KeyboardInterrupt:
        print(f"batch score: interrupted; the rows scored so far are in {args.output} "
              "(--resume continues)", file=sys.stderr)  # fmt: skip
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(summary.text(), file=sys.stderr)
    return EXIT_ROW_ERRORS if summary.errors else EXIT_OK


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


if __name__ == "__main__":
    raise SystemExit(main())
