"""One scoring run: lock the output -> skip done -> engine -> output rows, progress, summary."""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from batch.discover import iter_files
from batch.open_output import check_output, open_output
from batch.output import Existing, OutputError
from batch.output_lock import OutputLock
from batch.summary import Summary

logger = logging.getLogger(__name__)

PROGRESS_LOG_S = 30.0  # off a terminal: one progress line this often instead of a live bar


class JobError(RuntimeError):
    """The job cannot run or cannot go on (exit status 2)."""


@dataclass
class JobOptions:
    """What to score and where the rows go (the CLI's `input and output` options)."""

    input_dir: Path
    output: Path
    glob: str | None = None
    resume: bool = False
    overwrite: bool = False
    summary: Path | None = None
    plot: Path | None = None
    progress: bool = True
    allow_mixed_models: bool = False  # --resume over rows another model version wrote


def run_job(options: JobOptions, make_engine: Callable[[], object]) -> Summary:
    """Score `options.input_dir` into `options.output` with the engine `make_engine()` builds;
    returns the summary of the whole output file.

    Raises JobError for failures of the job itself: output in use, exists or corrupt, model
    missing or unloadable, TorchServe refusing the token, a resume over another model's rows,
    a write that failed (disk full).
    """
    from batch.http_engine import JobFailed
    from handler.artifact import ArtifactError

    summary = Summary()
    with contextlib.ExitStack() as stack:
        try:
            # Refuse a bad output before loading anything, and load the model before creating
            # the output, so a failed start leaves no empty file that blocks the next run.
            check_output(options.output, resume=options.resume, overwrite=options.overwrite)
            stack.enter_context(OutputLock(options.output))
            engine = stack.enter_context(make_engine())
            writer, existing = open_output(options.output, resume=options.resume,
                                           overwrite=options.overwrite,
                                           on_existing_row=lambda r: summary.add(r, resumed=True))
        except (OutputError, ArtifactError, JobFailed, OSError) as exc:
            raise JobError(str(exc)) from exc
        stack.callback(summary.finish)
        stack.callback(writer.close)
        summary.engine = engine.name
        summary.model = engine.model_name
        summary.model_version = engine.model_version
        summary.retried_rows = existing.retried
        check_model = _model_guard(options, existing)
        check_model(engine.model_name, engine.model_version)  # known up front (local engine)
        done = existing.done

        def todo():
            for rel in iter_files(options.input_dir, options.glob):
                if rel not in done:
                    yield rel

        # A live bar on a terminal; off one (a log file, CI), tqdm stays silent (disable=None)
        # and a line every PROGRESS_LOG_S seconds says how far the job is instead.
        progress = stack.enter_context(tqdm(
            unit="img", file=sys.stderr, disable=None if options.progress else True,
            dynamic_ncols=True, desc="scoring", smoothing=0.1))
        log_progress = options.progress and progress.disable

        def count_total() -> None:
            # A second, cheap walk (names only) gives the bar its total and ETA without
            # holding the file list; scoring starts at once instead of waiting for it.
            try:
                progress.total = sum(1 for _ in todo())
            except OSError:
                pass

        if not progress.disable:
            threading.Thread(target=count_total, name="batch-count", daemon=True).start()
        scored, last_log = 0, time.monotonic()
        try:
            for row in engine.score(options.input_dir, todo()):
                check_model(row.model, row.model_version)
                writer.write(row)
                summary.add(row)
                progress.update(1)
                scored += 1
                if log_progress and time.monotonic() - last_log >= PROGRESS_LOG_S:
                    last_log = time.monotonic()
                    logger.info("scored %d files so far (%.0f/s)", scored,
                                scored / max(summary.elapsed, 1e-9))
        except (JobFailed, OutputError) as exc:
            raise JobError(str(exc)) from exc
    summary.worker_peak_rss_mb = getattr(engine, "worker_peak_rss_mb", [])  # known once closed
    summary.rows_per_node = dict(getattr(engine, "rows_per_node", {}))
    try:
        if options.summary:
            summary.write_json(options.summary)
        if options.plot:
            summary.plot(options.plot)
    except OSError as exc:
        raise JobError(f"rows are complete in {options.output}, but the summary or plot could "
                       f"not be written: {exc.strerror}: {exc.filename}") from exc  # fmt: skip
    return summary


def _model_guard(options: JobOptions, existing: Existing) -> Callable[[str, str], None]:
    """A check that refuses a row of a model version the resumed rows were not scored with
    (unless `allow_mixed_models`): one output, one model, unless the user asks otherwise."""
    earlier = {key for key in existing.models if key[1]}

    def check(model: str, version: str) -> None:
        if options.allow_mixed_models or not earlier or not version:
            return
        if (model, version) not in earlier:
            found = ", ".join(f"{m} {v} ({existing.models[(m, v)]} rows)"
                              for m, v in sorted(earlier))  # fmt: skip
            raise JobError(
                f"{options.output} holds rows of {found}; this run scores with {model} "
                f"{version}: resuming would mix models in one file. Use a new --output, "
                "--overwrite, or --allow-mixed-models"
            )

    return check
