"""A step load that finds the saturation point.

Users grow by `--step-users` every `--step-seconds` up to `--step-max-users` (values in
`loadtests/locust.conf`), then the run stops. Throughput per step, set against users and p99, shows
where adding users stops adding requests/s and only adds latency: the saturation point
(`loadtests.charts.saturation_point` reads it off the stats history).

Locust uses a shape class automatically when one is defined in a loaded locustfile, so this file is
only added for step runs: `python -m loadtests run --step` (`-f locustfile.py,shapes.py`).
"""

from __future__ import annotations

from locust import LoadTestShape


class StepLoadShape(LoadTestShape):
    """Add `step_users` users every `step_seconds`, until `step_max_users`; then stop."""

    def _options(self) -> tuple[int, float, int]:
        options = self.runner.environment.parsed_options
        return (
            max(1, int(getattr(options, "step_users", 4))),
            float(getattr(options, "step_seconds", 10.0)),
            max(1, int(getattr(options, "step_max_users", 32))),
        )

    def tick(self) -> tuple[int, float] | None:
        """(users, spawn rate) for the current step, or None after the last one."""
        step_users, step_seconds, max_users = self._options()
        steps = -(-max_users // step_users)  # ceil: the last step reaches max_users
        step = int(self.get_run_time() // step_seconds)
        if step >= steps:
            return None
        users = min(max_users, (step + 1) * step_users)
        return users, float(step_users * 10)  # spawn each step within ~0.1 s
