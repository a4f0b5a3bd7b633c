"""The SLO gate: a Locust run exits 3 when its answers are too often wrong or too slow.

The bounds live in `loadtests/locust.conf` (the command line may override them); one that is not
configured fails the run, as a gate that silently passes is worse than none. The check runs on
Locust's `quitting` event where the aggregated statistics are (the master, or the only process),
sets `environment.process_exit_code` and writes the verdict as JSON to `--slo-verdict-file`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

SLO_EXIT_CODE = 3  # distinct from Locust's own 1 (failures) and 2 (unhandled exceptions)


@dataclass(frozen=True)
class SloBounds:
    """The bounds a run must stay within; None means 'not configured' (and fails)."""

    max_failure_ratio: float | None
    p99_ms: float | None
    min_requests: int | None = None


@dataclass
class SloVerdict:
    """The outcome of checking one run's aggregated statistics against the bounds."""

    passed: bool
    requests: int
    failures: int
    failure_ratio: float
    p99_ms: float
    bounds: SloBounds
    violations: list[str] = field(default_factory=list)


def evaluate(requests: int, failures: int, p99_ms: float, bounds: SloBounds) -> SloVerdict:
    """Compare a run's totals with the bounds; every violated bound is listed."""
    ratio, violations = failures / requests if requests else 0.0, []
    for name, value, bound in (("failure ratio", ratio, bounds.max_failure_ratio),
                               ("p99 ms", p99_ms, bounds.p99_ms)):  # fmt: skip
        if bound is None:
            violations.append(f"the {name} bound is not configured")
        elif value > bound:
            violations.append(f"{name} {value:g} exceeds {bound:g}")
    if requests < (bounds.min_requests or 1):
        violations.append(f"only {requests} requests, fewer than {bounds.min_requests or 1}")
    return SloVerdict(not violations, requests, failures, ratio, float(p99_ms), bounds, violations)


def add_arguments(parser) -> None:
    """The gate's options on Locust's parser; their values live in locust.conf."""
    group = parser.add_argument_group("SLO gate (values in loadtests/locust.conf)")
    group.add_argument("--slo-max-failure-ratio", type=float,
                       help="Fail the run when failures/requests exceeds this (0.001 = 0.1 %%).")
    group.add_argument("--slo-p99-ms", type=float, help="Fail the run above this aggregated p99.")
    group.add_argument("--slo-min-requests", type=int, help="Fail a run with fewer requests.")
    group.add_argument("--slo-verdict-file", help="Write the verdict here as JSON.")


def bounds_from_options(options) -> SloBounds:
    """The bounds from Locust's parsed options."""
    return SloBounds(options.slo_max_failure_ratio, options.slo_p99_ms, options.slo_min_requests)


def gate(environment) -> SloVerdict | None:
    """Check the run, set `environment.process_exit_code`, write the verdict file; None on a
    worker process (workers hold partial statistics; the master decides)."""
    from locust.runners import WorkerRunner

    if isinstance(environment.runner, WorkerRunner):
        return None
    total, options = environment.stats.total, environment.parsed_options
    verdict = evaluate(total.num_requests, total.num_failures,
                       total.get_response_time_percentile(0.99) or 0.0,
                       bounds_from_options(options))  # fmt: skip
    # 0 on a pass on purpose: failures within the tolerated ratio must not fail the run
    # (Locust's own default is exit 1 on any failure).
    environment.process_exit_code = 0 if verdict.passed else SLO_EXIT_CODE
    logger.log(logging.INFO if verdict.passed else logging.ERROR, "SLO gate %s",
               "passed" if verdict.passed else "FAILED: " + "; ".join(verdict.violations))
    if options.slo_verdict_file:
        Path(options.slo_verdict_file).write_text(json.dumps(asdict(verdict), indent=2) + "\n")
    return verdict


def register(events) -> None:
    """Hook the gate and its options into a Locust `events` object."""
    events.init_command_line_parser.add_listener(add_arguments)
    events.quitting.add_listener(lambda environment, **_kw: gate(environment))
