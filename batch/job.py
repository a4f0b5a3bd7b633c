"""One scoring run: discover -> skip done -> engine -> output rows, progress and summary."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import threading

from tqdm import tqdm

from batch.discover import iter_files
from batch.output import OutputError, check_output, open_output
from batch.summary import Summary

logger = logging.getLogger(__name__)


class JobError(RuntimeError):
    """The job cannot run or cannot go on (exit status 2)."""


def run_job(args: argparse.Namespace, make_engine) -> Summary:
    """Score `args.input_dir` into `args.output`; returns the summary (whole output file).

    Raises JobError for failures of the job itself: output exists/corrupt, model missing or
    unloadable, TorchServe refusing the token.
    """
    from batch.http_engine import JobFailed
    from handler.artifact import ArtifactError

    summary = Summary(engine=args.engine)
    with contextlib.ExitStack() as stack:
        try:
            # Refuse a bad output before loading anything, and load the model before creating
            # the output, so a failed start leaves no empty file that blocks the next run.
            check_output(args.output, resume=args.resume, overwrite=args.overwrite)
            engine = stack.enter_context(make_engine(args))
            writer, done = open_output(args.output, resume=args.resume,
                                       overwrite=args.overwrite,
                                       on_existing_row=lambda r: summary.add(r, resumed=True))
        except (OutputError, ArtifactError, JobFailed, OSError) as exc:
            raise JobError(str(exc)) from exc
        stack.callback(summary.finish)
        stack.callback(writer.close)
        summary.model = engine.model_name
        summary.model_version = engine.model_version
        csv_output = writer.fmt == "csv"

        def todo():
            for rel in iter_files(args.input_dir, args.glob):
                if rel in done:
                    continue
                if csv_output and ("\n" in rel or "\r" in rel):
                    logger.warning("skipping %r: a newline in a name cannot go into CSV; "
                                   "use .jsonl", rel)
                    continue
                yield rel

        progress = stack.enter_context(tqdm(
            unit="img", file=sys.stderr, disable=args.no_progress, dynamic_ncols=True,
            desc="scoring", smoothing=0.1))

        def count_total() -> None:
            # A second, cheap walk (names only) gives the bar its total and ETA without
            # holding the file list; scoring starts at once instead of waiting for it.
            try:
                progress.total = sum(1 for _ in todo())
            except OSError:
                pass

        if not args.no_progress:
            threading.Thread(target=count_total, name="batch-count", daemon=True).start()
        try:
            for row in engine.score(args.input_dir, todo()):
                writer.write(row)
                summary.add(row)
                progress.update(1)
        except JobFailed as exc:
            raise JobError(str(exc)) from exc
    summary.worker_peak_rss_mb = getattr(engine, "worker_peak_rss_mb", [])  # known once closed
    if args.summary:
        summary.write_json(args.summary)
    if args.plot:
        summary.plot(args.plot)
    return summary
