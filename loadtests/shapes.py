"""Step load for `python -m loadtests run --step`: `charts.saturation_point` finds where more
users stop adding requests/s. Step sizes live in locust.conf. Locust uses a shape class whenever a
loaded locustfile defines one, so this file is loaded for step runs only."""

from __future__ import annotations

import math

from locust import LoadTestShape


class StepLoadShape(LoadTestShape):
    """Add `step_users` users every `step_seconds`, until `step_max_users`; then stop."""

    def tick(self) -> tuple[int, float] | None:
        """(users, spawn rate) for the current step, or None after the last one."""
        options = self.runner.environment.parsed_options
        step_users, max_users = max(1, options.step_users), max(1, options.step_max_users)
        step = int(self.get_run_time() // options.step_seconds)
        if step >= math.ceil(max_users / step_users):  # the last step reaches max_users
            return None
        return min(max_users, (step + 1) * step_users), float(step_users * 10)  # ~0.1 s ramp
