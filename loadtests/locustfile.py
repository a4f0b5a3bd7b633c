"""Locust users for `POST /predictions/lenet`: real uploads, every answer checked.

Requests carry pool images (`loadtests/pool.py`: the realistic mix of `samples.mix`, or MNIST
PNGs), as many as fit one request's limits, so a digit other than the label is a failure;
bad input must get a 400 with the JSON error body. The mix is set once, in `USER_WEIGHTS`. Every
run loads `loadtests/locust.conf`, home of the custom options' values: `locust -f
loadtests/locustfile.py --config loadtests/locust.conf -H URL --pool P`, or `python -m loadtests
run`."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import gevent
from locust import FastHttpUser, events, task
from locust.runners import MasterRunner

from client import multipart_body
from deploy.keys import auth_headers, inference_token
from handler import MODEL_NAME
from handler.schemas import ErrorResponse, MultiPrediction, Prediction
from loadtests import slo
from loadtests.pool import MAX_BODY_BYTES, ImagePool

# --- the traffic mix: the ONE place where user weights and request sizes are set ---------------
USER_WEIGHTS = {
    "SingleImageUser": 80,  # one raw PNG per request: the common client
    "JsonMultiImageUser": 12,  # {"images": [b64, ...]}
    "MultipartUser": 8,  # multipart/form-data, one distinct field name per image
}
IMAGES_PER_JSON_REQUEST = 8
IMAGES_PER_MULTIPART_REQUEST = 4
# Malformed requests: always exactly one such user (a weight would round it away at a few users),
# paced so it stays a small share of the traffic.
BAD_INPUT_USERS = 1
BAD_INPUT_RPS = 10.0

PATH = f"/predictions/{MODEL_NAME}"
STATE: dict = {"pool": None, "headers": {}}  # filled by `_load_pool` in each Locust process

slo.register(events)


class FixedSchedule:
    """Paces one user at `rate` requests/s on its own fixed grid of start times.

    Locust's `constant_throughput` counts each period from when the user woke up, so users woken
    together stay in step and a "constant" load turns into bursts that queue in the server. Here
    the k-th request is due at `phase + k / rate` (a random phase per user) whatever happened
    before; a user that fell behind catches up, as an open-loop client would.
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
    group = parser.add_argument_group("LeNet load test (values in loadtests/locust.conf)")
    group.add_argument("--pool", help="Image pool file (`python -m loadtests pool` prints one).")
    group.add_argument("--rps-per-user", type=float,
                       help="Pace each user to this many requests/s on a fixed schedule; 0: none.")
    shape = parser.add_argument_group("Step load shape (loadtests/shapes.py)")
    shape.add_argument("--step-users", type=int, help="Users added per step.")
    shape.add_argument("--step-seconds", type=float, help="Length of each step.")
    shape.add_argument("--step-max-users", type=int, help="Users in the last step.")


@events.init.add_listener
def _load_pool(environment, **_kw) -> None:
    # --run-time counts from the loop's clock, which stood still while this process started.
    gevent.get_hub().loop.update_now()
    options = environment.parsed_options
    if options is None:
        return  # a library Environment (tests) with no command line
    if options.rps_per_user is None:
        raise SystemExit("no load-test settings: pass --config loadtests/locust.conf")
    if isinstance(environment.runner, MasterRunner):
        return  # the master only aggregates; its workers send the requests
    if not options.pool:
        raise SystemExit("no image pool: pass --pool (`python -m loadtests pool` builds one)")
    STATE["pool"] = ImagePool.load(Path(options.pool))
    STATE["headers"] = auth_headers(inference_token())


class _PredictionUser(FastHttpUser):
    """Pacing, auth header and random pool draws."""
    abstract = True
    pace_rps: float | None = None  # a class's own fixed rate; None: the run's --rps-per-user

    def on_start(self) -> None:
        self.pool: ImagePool = STATE["pool"]
        self.rng = random.Random()
        rate = self.pace_rps or self.environment.parsed_options.rps_per_user
        self._pacer = FixedSchedule(rate, self.rng) if rate else None

    def wait_time(self) -> float:
        return self._pacer.wait() if self._pacer else 0.0

    def send(self, name: str, body: bytes, content_type: str, picks: list[int] | None = None,
             status: int = 200, schema=None) -> None:  # fmt: skip
        """Post; fails unless answered `status` with a body valid under `schema` (default: one
        image's `Prediction`, else `MultiPrediction`) whose digits are the labels of `picks`."""
        schema = schema or (Prediction if picks and len(picks) == 1 else MultiPrediction)
        headers = {"Content-Type": content_type, **STATE["headers"]}
        with self.client.post(PATH, data=body, headers=headers, name=name,
                              catch_response=True) as resp:  # fmt: skip
            if resp.status_code != status:
                resp.failure(f"HTTP {resp.status_code}, not {status}: {(resp.text or '')[:200]}")
                return
            try:
                answer = schema.model_validate_json(resp.content)
            except ValueError as exc:
                resp.failure(f"answer breaks the {schema.__name__} contract: {exc}")
                return
            got = [getattr(a, "digit", None) for a in getattr(answer, "predictions", [answer])]
            expected = [self.pool.labels[i] for i in picks or []]
            if picks is not None and got != expected:
                resp.failure(f"wrong digit: expected {expected}, got {got}")
            else:
                resp.success()


class SingleImageUser(_PredictionUser):
    """One raw image body per request (Content-Type image/png or image/jpeg)."""

    weight = USER_WEIGHTS["SingleImageUser"]

    @task
    def predict_one(self) -> None:
        picks = self.pool.pick(self.rng, 1)
        data = self.pool.images[picks[0]]
        kind = "image/jpeg" if data[:2] == b"\xff\xd8" else "image/png"
        self.send("single", data, kind, picks)


class JsonMultiImageUser(_PredictionUser):
    """`{"images": [b64, ...]}` with up to IMAGES_PER_JSON_REQUEST images per request."""

    weight = USER_WEIGHTS["JsonMultiImageUser"]

    @task
    def predict_many(self) -> None:
        picks = self.pool.pick(self.rng, IMAGES_PER_JSON_REQUEST, MAX_BODY_BYTES)
        body = json.dumps({"images": [self.pool.b64[i] for i in picks]}).encode()
        self.send(f"json x{len(picks)}", body, "application/json", picks)


class MultipartUser(_PredictionUser):
    """multipart/form-data, up to IMAGES_PER_MULTIPART_REQUEST images (`client.multipart_body`)."""

    weight = USER_WEIGHTS["MultipartUser"]

    @task
    def predict_form(self) -> None:
        picks = self.pool.pick(self.rng, IMAGES_PER_MULTIPART_REQUEST, MAX_BODY_BYTES)
        body, content_type = multipart_body([self.pool.images[i] for i in picks])
        self.send(f"multipart x{len(picks)}", body, content_type, picks)


def bad_inputs(pool: ImagePool) -> list[tuple[str, bytes, str]]:
    """Malformed requests a client could send: (name, body, content type)."""
    png = next((x for x in pool.images if x[:4] == b"\x89PNG"), pool.images[0])
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
        self.send(name, body, content_type, status=400, schema=ErrorResponse)
