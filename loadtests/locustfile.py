"""Locust users for `POST /predictions/<model>`: real MNIST digits, every answer checked.

Each request carries PNGs from the image pool (`loadtests/pool.py`: digits the model gets right
offline), so a 200 answer whose digit differs from the label is a real failure and is reported
with `resp.failure(...)`. Bad-input requests must answer 400 with the JSON error body; anything
else fails them.

The traffic mix is set in ONE place, `USER_WEIGHTS` below. Pick classes on the command line to
run one kind only (e.g. `... SingleImageUser`). Options (pool path, pacing, SLO bounds, step
shape) are custom Locust options; their values live in `loadtests/locust.conf`.

Run it through `python -m loadtests run` (which builds the pool and starts the server), or
directly: `locust -f loadtests/locustfile.py --config loadtests/locust.conf -H URL --pool P`.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

from locust import FastHttpUser, events, task
from locust.runners import MasterRunner

try:  # Locust imports this file by path; make the repo's packages importable either way.
    import loadtests  # noqa: F401
except ImportError:  # pragma: no cover - depends on how locust was started
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deploy.keys import auth_headers, inference_token
from handler.schemas import ErrorResponse, MultiPrediction, Prediction
from loadtests import slo
from loadtests.pool import ImagePool

# --- the traffic mix: the ONE place where user weights and request sizes are set ---------------
USER_WEIGHTS = {
    "SingleImageUser": 80,  # one raw PNG per request: the common client
    "JsonMultiImageUser": 12,  # {"images": [b64, ...]}
    "MultipartUser": 8,  # multipart/form-data, one distinct field name per image
}
IMAGES_PER_JSON_REQUEST = 8
IMAGES_PER_MULTIPART_REQUEST = 4
# Malformed requests: always exactly one such user (a weight would round it away at a few users),
# paced so it stays a small share of the traffic (~1 % at the ~1,000 req/s of a local run).
BAD_INPUT_USERS = 1
BAD_INPUT_RPS = 10.0

# Filled once per process by `_load_pool` (each --processes worker loads its own copy).
STATE: dict = {"pool": None, "headers": {}, "path": "/predictions/lenet"}

slo.register(events)


class FixedSchedule:
    """Paces one user at `rate` requests/s on its own fixed grid of start times.

    Locust's `constant_throughput` counts each period from the moment the user actually woke
    up. Users woken together (a batch of answers arriving at once, a busy event loop) then stay
    in step for the rest of the run, and the "constant" load turns into bursts that queue in the
    server (measured: 64 paced users at 1,000 req/s gave TorchServe's own p50 16 ms with the
    server half idle; 16 users at the same rate, 5 ms). Here the k-th request of a user is due
    at `phase + k / rate` whatever happened before, with a random phase per user, so the
    arrivals stay spread. A user that fell behind (a slow answer) catches up at once, as an
    open-loop client would, instead of silently dropping the load it owed.
    """

    MAX_LAG_S = 1.0  # after a longer stall, restart the grid rather than fire a long burst

    def __init__(self, rate: float, rng: random.Random, clock=time.perf_counter) -> None:
        self.period = 1.0 / rate
        self.clock = clock
        self.next_due = clock() + rng.random() * self.period

    def wait(self) -> float:
        """Seconds to sleep before the next request (0 when it is already due)."""
        now = self.clock()
        if now - self.next_due > self.MAX_LAG_S:
            self.next_due = now
        delay = max(0.0, self.next_due - now)
        self.next_due += self.period
        return delay


@events.init_command_line_parser.add_listener
def _add_options(parser) -> None:
    group = parser.add_argument_group("LeNet load test")
    group.add_argument("--pool", default=None, help="Image pool .npz (python -m loadtests pool).")
    group.add_argument("--model-name", default="lenet", help="Model name in the URL.")
    group.add_argument(
        "--rps-per-user",
        type=float,
        default=0.0,
        help="Pace each user to this many requests/s on a fixed schedule; 0 = no wait.",
    )
    shape = parser.add_argument_group("Step load shape (loadtests/shapes.py)")
    shape.add_argument("--step-users", type=int, default=4, help="Users added per step.")
    shape.add_argument("--step-seconds", type=float, default=10.0, help="Length of each step.")
    shape.add_argument("--step-max-users", type=int, default=32, help="Users in the last step.")


@events.init.add_listener
def _load_pool(environment, **_kw) -> None:
    if isinstance(environment.runner, MasterRunner):
        return  # the master only aggregates; its workers send the requests
    options = environment.parsed_options
    if not options or not options.pool:
        raise SystemExit("no image pool: pass --pool (python -m loadtests pool builds one)")
    STATE["pool"] = ImagePool.load(Path(options.pool))
    STATE["path"] = f"/predictions/{options.model_name}"
    STATE["headers"] = auth_headers(inference_token())


class _PredictionUser(FastHttpUser):
    """Shared plumbing: pacing, auth header, random pool draws."""

    abstract = True

    pace_rps: float | None = None  # a class's own fixed rate; None: the run's --rps-per-user

    def on_start(self) -> None:
        self.rng = random.Random()
        rate = self.pace_rps or getattr(self.environment.parsed_options, "rps_per_user", 0.0)
        self._pacer = FixedSchedule(rate, self.rng) if rate else None

    def wait_time(self) -> float:
        return self._pacer.wait() if self._pacer else 0.0

    @property
    def pool(self) -> ImagePool:
        return STATE["pool"]

    def post(self, name: str, body: bytes, content_type: str):
        headers = {"Content-Type": content_type, **STATE["headers"]}
        return self.client.post(
            STATE["path"], data=body, headers=headers, name=name, catch_response=True
        )


def check_single(resp, expected: int) -> None:
    """A 200 with a valid `Prediction` whose digit is the label; anything else fails."""
    if resp.status_code != 200:
        resp.failure(f"HTTP {resp.status_code}: {resp.text[:200] if resp.text else ''}")
        return
    try:
        answer = Prediction.model_validate_json(resp.content)
    except ValueError as exc:
        resp.failure(f"answer breaks the Prediction contract: {exc}")
        return
    if answer.digit != expected:
        resp.failure(f"wrong digit: expected {expected}, got {answer.digit}")
    else:
        resp.success()


def check_multi(resp, expected: list[int]) -> None:
    """A 200 `MultiPrediction` with one correct `Prediction` per image, in input order."""
    if resp.status_code != 200:
        resp.failure(f"HTTP {resp.status_code}: {resp.text[:200] if resp.text else ''}")
        return
    try:
        answer = MultiPrediction.model_validate_json(resp.content)
    except ValueError as exc:
        resp.failure(f"answer breaks the MultiPrediction contract: {exc}")
        return
    got = [getattr(p, "digit", None) for p in answer.predictions]
    if got != expected:
        resp.failure(f"wrong digits: expected {expected}, got {got}")
    else:
        resp.success()


def multipart_body(files: list[bytes], boundary: str) -> bytes:
    """multipart/form-data with one distinct field per image (TorchServe keeps one per name)."""
    parts = []
    for i, png in enumerate(files):
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="image{i}"; '
            f'filename="digit{i}.png"\r\nContent-Type: image/png\r\n\r\n'.encode()
            + png
            + b"\r\n"
        )
    return b"".join(parts) + f"--{boundary}--\r\n".encode()


class SingleImageUser(_PredictionUser):
    """One raw PNG body per request (Content-Type image/png)."""

    weight = USER_WEIGHTS["SingleImageUser"]

    @task
    def predict_one(self) -> None:
        (i,) = self.pool.pick(self.rng, 1)
        with self.post("single", self.pool.pngs[i], "image/png") as resp:
            check_single(resp, self.pool.labels[i])


class JsonMultiImageUser(_PredictionUser):
    """`{"images": [b64, ...]}` with IMAGES_PER_JSON_REQUEST digits per request."""

    weight = USER_WEIGHTS["JsonMultiImageUser"]

    @task
    def predict_many(self) -> None:
        picks = self.pool.pick(self.rng, IMAGES_PER_JSON_REQUEST)
        body = json.dumps({"images": [self.pool.b64[i] for i in picks]}).encode()
        with self.post(f"json x{len(picks)}", body, "application/json") as resp:
            check_multi(resp, [self.pool.labels[i] for i in picks])


class MultipartUser(_PredictionUser):
    """multipart/form-data, IMAGES_PER_MULTIPART_REQUEST images under distinct field names."""

    weight = USER_WEIGHTS["MultipartUser"]

    @task
    def predict_form(self) -> None:
        picks = self.pool.pick(self.rng, IMAGES_PER_MULTIPART_REQUEST)
        boundary = f"lenet{self.rng.getrandbits(64):016x}"
        body = multipart_body([self.pool.pngs[i] for i in picks], boundary)
        content_type = f"multipart/form-data; boundary={boundary}"
        with self.post(f"multipart x{len(picks)}", body, content_type) as resp:
            check_multi(resp, [self.pool.labels[i] for i in picks])


def bad_inputs(pool: ImagePool) -> list[tuple[str, bytes, str]]:
    """Malformed requests a client could send: (name, body, content type)."""
    png = pool.pngs[0]
    return [
        ("bad: not an image", b"this is not a PNG" * 4, "image/png"),
        ("bad: truncated PNG", png[: len(png) // 2], "image/png"),
        ("bad: invalid base64", b'{"image": "%%not base64%%"}', "application/json"),
    ]


class BadInputUser(_PredictionUser):
    """Malformed input: a 400 with the JSON error body is the correct answer."""

    fixed_count = BAD_INPUT_USERS
    pace_rps = BAD_INPUT_RPS  # its own rate, whatever the run's --rps-per-user

    @task
    def send_bad_input(self) -> None:
        name, body, content_type = self.rng.choice(bad_inputs(self.pool))
        with self.post(name, body, content_type) as resp:
            if resp.status_code != 400:
                resp.failure(f"expected HTTP 400 for {name!r}, got {resp.status_code}")
                return
            try:
                ErrorResponse.model_validate_json(resp.content)
            except ValueError as exc:
                resp.failure(f"400 body breaks the ErrorResponse contract: {exc}")
                return
            resp.success()
