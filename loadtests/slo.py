"""The SLO gate: a Locust run fails (non-zero exit) when its answers are too often wrong or slow.

The bounds are configuration, not code: `slo-max-failure-ratio` and `slo-p99-ms` are custom
Locust options whose values live in `loadtests/locust.conf` (and can be overridden on the command
line or with `LOCUST_SLO_P99_MS`-style environment variables). A bound that is not configured fails
the run: a gate that silently passes is worse than none.

The check runs on Locust's `quitting` event in the process that owns the aggregated statistics
(the master, or the single local process) and sets `environment.process_exit_code`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field

logger = logging.getLogger(__name__)

SLO_EXIT_CODE = 3  # distinct from Locust's own 1 (errors) and 2 (unhandled exceptions)


@dataclass(frozen=True)
class SloBounds:
    """The bounds a run must stay within; None means 'not configured' (and fails)."""

    max_failure_ratio: float | None
    p99_ms: float | None
    min_requests: int = 1


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

    def to_json(self) -> str:
        """The verdict as one JSON line (logged by the gate, parsed by the runner)."""
        return json.dumps({"slo": asdict(self)}, sort_keys=True)


def evaluate(requests: int, failures: int, p99_ms: float, bounds: SloBounds) -> SloVerdict:
    """Compare a run's totals with the bounds; every violated bound is listed."""
    ratio = failures / requests if requests else 0.0
    violations = []
    if bounds.max_failure_ratio is None:
        violations.append("slo-max-failure-ratio is not configured")
    elif ratio > bounds.max_failure_ratio:
        violations.append(
            f"failure ratio {ratio:.4%} ({failures}/{requests}) exceeds "
            f"{bounds.max_failure_ratio:.4%}"
        )
    if bounds.p99_ms is None:
        violations.append("slo-p99-ms is not configured")
    elif p99_ms > bounds.p99_ms:
        violations.append(f"p99 {p99_ms:.1f} ms exceeds {bounds.p99_ms:g} ms")
    if requests < bounds.min_requests:
        violations.append(f"only {requests} requests, fewer than the {bounds.min_requests} needed")
    return SloVerdict(
        passed=not violations,
        requests=requests,
        failures=failures,
        failure_ratio=ratio,
        p99_ms=float(p99_ms),
        bounds=bounds,
        violations=violations,
    )


def add_arguments(parser) -> None:
    """Register the SLO options on Locust's argument parser (values come from locust.conf)."""
    group = parser.add_argument_group("SLO gate (values in loadtests/locust.conf)")
    group.add_argument(
        "--slo-max-failure-ratio",
        type=float,
        default=None,
        help="Fail the run when failures/requests exceeds this (0.001 = 0.1 %%).",
    )
    group.add_argument(
        "--slo-p99-ms",
        type=float,
        default=None,
        help="Fail the run when the aggregated p99 response time exceeds this many ms.",
    )
    group.add_argument(
        "--slo-min-requests",
        type=int,
        default=1,
        help="Fail the run when it made fewer requests than this.",
    )


def bounds_from_options(options) -> SloBounds:
    """The bounds from Locust's parsed options."""
    return SloBounds(
        max_failure_ratio=getattr(options, "slo_max_failure_ratio", None),
        p99_ms=getattr(options, "slo_p99_ms", None),
        min_requests=getattr(options, "slo_min_requests", 1) or 1,
    )


def gate(environment) -> SloVerdict | None:
    """Check the run and set `environment.process_exit_code`; None on a worker process."""
    from locust.runners import WorkerRunner

    if isinstance(environment.runner, WorkerRunner):
        return None  # workers hold partial stats; the master decides
    total = environment.stats.total
    verdict = evaluate(
        requests=total.num_requests,
        failures=total.num_failures,
        p99_ms=total.get_response_time_percentile(0.99) or 0.0,
        bounds=bounds_from_options(environment.parsed_options),
    )
    # 0 on a pass on purpose: failures within the tolerated ratio must not fail the run
    # (Locust's default is exit 1 on any failure).
    environment.process_exit_code = 0 if verdict.passed else SLO_EXIT_CODE
    if verdict.passed:
        logger.info("SLO gate passed: %s", verdict.to_json())
    else:
        logger.error("SLO gate FAILED: %s; %s", "; ".join(verdict.violations), verdict.to_json())
    return verdict


def register(events) -> None:
    """Hook the gate and its options into a Locust `events` object."""
    events.init_command_line_parser.add_listener(add_arguments)
    events.quitting.add_listener(lambda environment, **_kw: gate(environment))
