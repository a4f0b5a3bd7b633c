"""How much of a worker explanations may use: the 429 `ExplanationsBusy` limit.

Explanations (`POST /explanations/lenet`) share the worker, and its batches, with predictions:
integrated gradients run `handler.predictor.EXPLAIN_STEPS` forward and backward passes per
image, ~5 ms of one core against ~0.1 ms for a prediction (decode, preprocessing and its share
of a batched forward pass), so a few clients asking for explanations back to back would take
most of the worker. Two limits keep predictions' pace:
`handler.limits.MAX_IMAGES_PER_EXPLANATION` bounds one request (~35 ms), and `ExplanationBudget`
lets explanations use at most `EXPLAIN_SHARE` of the worker's time, with at most
`EXPLAIN_BURST_S` saved up: an explanations request that finds it spent gets 429
`ExplanationsBusy` with `Retry-After`, before any of its pixels is decoded. So a batch never
carries more than the burst plus one request of explanation work, and predictions keep at least
1 - `EXPLAIN_SHARE` of the worker's compute whatever the explanation traffic (refused requests
still cost the frontend and the worker protocol a little each: `python -m tools.explain_bench`
measures the whole effect). `handler: explain_share` in model-config.yaml sets the share per
deployment (1 switches the budget off).

Imports only the standard library; `handler.limits` re-exports these names beside every other
limit.
"""

from __future__ import annotations

import math
import time

# 10 % of the worker: ~20 single-image explanations a second per worker (a page asks one per
# stroke), and never more than a tenth of the predictions' capacity.
EXPLAIN_SHARE = 0.1
# What a quiet worker saves up: ten single-image explanations at once, and the most explanation
# work a batch may add to the predictions batched with it (plus one request).
EXPLAIN_BURST_S = 0.05


class ExplanationsBusy(ValueError):
    """Explanations have used their share of the worker: 429 (`ExplanationBudget.retry_after`)."""

    status = 429
    type = "ExplanationsBusy"


class ExplanationBudget:
    """A token bucket of explanation seconds: it refills at `share` seconds per second, up to
    `burst_s`. A request is admitted while the bucket is not empty (it may run it into debt by
    its own cost), and charged what its explanations really took (`settle`)."""

    def __init__(self, share: float = EXPLAIN_SHARE, burst_s: float = EXPLAIN_BURST_S,
                 clock=time.monotonic) -> None:  # fmt: skip
        self.share, self.burst_s, self.clock = float(share), float(burst_s), clock
        self.tokens, self.last = self.burst_s, clock()

    def admit(self, cost_s: float) -> None:
        """Take `cost_s` (an estimate) for one request; raise ExplanationsBusy when empty."""
        if self.share >= 1:
            return
        if self.share <= 0:
            raise ExplanationsBusy("explanations are switched off on this server "
                                   "(model-config.yaml handler: explain_share 0)")  # fmt: skip
        now = self.clock()
        self.tokens = min(self.burst_s, self.tokens + (now - self.last) * self.share)
        self.last = now
        if self.tokens <= 0:
            raise ExplanationsBusy(
                f"explanations may use {self.share:.0%} of the model's time and have used it; "
                f"retry in {self.retry_after():.2f} s, or POST /predictions for the digits alone")
        self.tokens -= cost_s

    def retry_after(self) -> float:
        """Seconds until the bucket is no longer empty (inf when explanations are off)."""
        if self.share <= 0:
            return math.inf
        return max(0.0, -self.tokens / self.share) if self.share < 1 else 0.0

    def settle(self, estimated_s: float, actual_s: float) -> None:
        """Correct the estimates taken by `admit` with what the explanations really cost."""
        if self.share < 1:
            self.tokens += estimated_s - actual_s
