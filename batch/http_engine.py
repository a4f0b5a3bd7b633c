"""Scoring through TorchServe's inference API: concurrent multi-image requests with retries.

Each request carries up to `images_per_request` images, encoded by `client.multipart_body`, and
is answered with a `MultiPrediction` (or a `Prediction` for a single image), in input order.

Failure policy, chosen so that a restart of the server never loses or doubles a row:
- connection errors, timeouts, 429 and 5xx (including the 503 of a full queue): retried on the
  next URL with exponential backoff and jitter, at most `max_attempts` times; then the images
  become error rows saying so;
- a 400/413/422 for a multi-image request: split and resent one image per request, so only the
  bad image gets the error; for a single image, the server's message becomes that row's error;
- an `ImageError` slot in a multi-image answer: that row's error, neighbours unaffected;
- a refused token (401/403, or TorchServe's own refusal, see `deploy.keys.TOKEN_REFUSED_STATUS`):
  the key is re-read (deploy.keys, i.e. the key file TorchServe rewrites at every
  start); a changed key is retried, the same key refused again fails the whole job
  (`JobFailed`), as does a 404 (model not registered): every further request would fail too.
The status sets, the refused-token test and a refused image's row error: `batch.http_status`.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import requests
from pydantic import ValidationError

from batch.decode import describe_error, read_input
from batch.http_status import (
    FATAL_STATUS,
    PER_IMAGE_STATUS,
    RETRY_STATUS,
    error_text,
    is_auth_failure,
)
from batch.output import Row
from client import multipart_body
from deploy.keys import auth_headers, inference_token, management_token
from handler import MODEL_NAME
from handler.schemas import (
    MODEL_VERSION_HEADER,
    ErrorResponse,
    ImageError,
    MultiPrediction,
    Prediction,
    parse_response,
)

logger = logging.getLogger(__name__)

_DONE = object()


class JobFailed(RuntimeError):
    """An error that dooms every request (bad token, unknown model): stop the job."""


class _Retryable(Exception):
    """A transient failure worth another attempt."""


@dataclass
class RetryPolicy:
    """Exponential backoff with jitter: attempt k waits d/2 + U(0, d/2), d = min(cap, base*2^k).

    Half the delay is fixed so a server restart is bridged in bounded time; the random half
    keeps many clients from retrying in lockstep.
    """

    max_attempts: int = 10
    base: float = 0.25
    cap: float = 8.0

    def delay(self, attempt: int) -> float:
        d = min(self.cap, self.base * (2 ** attempt))
        return d / 2 + random.uniform(0, d / 2)


class HttpEngine:
    """Scores files by POSTing them to one or more TorchServe inference endpoints."""

    name = "http"

    def __init__(self, urls: list[str], *, model_name: str = MODEL_NAME,
                 token_source: Callable[[], str | None] = inference_token,
                 concurrency: int = 8, images_per_request: int = 8,
                 retry: RetryPolicy | None = None, timeout: float = 30.0,
                 management_url: str | None = None,
                 management_key: str | None = None) -> None:
        if not urls:
            raise ValueError("at least one --url is needed")
        self.urls = [u.rstrip("/") for u in urls]
        self.model_name = model_name
        # The key is re-read after a 401: a restarted TorchServe writes NEW keys, and a job
        # must survive a restart. Only a 401 with the same key as the refused one is fatal.
        self.token_source = token_source
        self._token_lock = threading.Lock()
        self.token = token_source()
        self.concurrency = max(1, concurrency)
        self.images_per_request = max(1, images_per_request)
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self._url_cycle = itertools.cycle(self.urls)
        self._url_lock = threading.Lock()
        self.requests_sent = 0
        self.retries = 0
        self.model_version = ""
        if management_url:
            self.model_version = self._fetch_version(
                management_url.rstrip("/"),
                management_key if management_key is not None else management_token())

    def _fetch_version(self, management_url: str, key: str | None) -> str:
        url = f"{management_url}/models/{self.model_name}"
        try:
            resp = requests.get(url, headers=auth_headers(key), timeout=self.timeout)
        except requests.RequestException as exc:
            raise JobFailed(f"cannot reach the management API at {url}: {exc}") from exc
        if resp.status_code != 200:
            raise JobFailed(f"GET {url} answered {resp.status_code}: {resp.text[:200]}")
        return str(resp.json()[0].get("modelVersion", ""))

    def _next_url(self) -> str:
        with self._url_lock:
            return next(self._url_cycle)

    def close(self) -> None:
        """Nothing to release: sessions live in the scoring threads."""

    def __enter__(self) -> HttpEngine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- one request ------------------------------------------------------------------------
    def _row(self, rel: str, pred: Prediction | None = None, error: str | None = None,
             version: str | None = None) -> Row:
        version = version or self.model_version
        if pred is None:
            return Row(rel, model=self.model_name, model_version=version, error=error)
        return Row.of(rel, pred, self.model_name, version)

    def _post_once(self, session: requests.Session, items: list[tuple[str, bytes]]):
        url = f"{self._next_url()}/predictions/{self.model_name}"
        # Field and file names are image<i>: a file's own name (not UTF-8, quotes, line breaks)
        # never reaches the request; the rows map answers back by position.
        body, content_type = multipart_body([data for _, data in items])
        self.requests_sent += 1
        token = self.token
        try:
            resp = session.post(url, data=body, timeout=self.timeout,
                                headers={"Content-Type": content_type, **auth_headers(token)})
        except requests.RequestException as exc:
            raise _Retryable(f"{type(exc).__name__} from {url}") from exc
        if is_auth_failure(resp):
            if self._refresh_token(token):
                raise _Retryable(f"HTTP {resp.status_code} from {url}: key changed, retrying")
            raise JobFailed(f"POST {url} answered HTTP {resp.status_code}: the inference token "
                            "was refused (wrong, expired or missing key; the client reads it "
                            "via deploy.keys: LENET_KEY_FILE / LENET_INFERENCE_TOKEN / the run "
                            f"dir's key_file.json) ({resp.text[:200].strip()})")
        if resp.status_code in FATAL_STATUS:
            raise JobFailed(f"POST {url} answered HTTP {resp.status_code}: "
                            f"{FATAL_STATUS[resp.status_code]} ({resp.text[:200].strip()})")
        if resp.status_code in RETRY_STATUS:
            raise _Retryable(f"HTTP {resp.status_code} from {url}: {resp.text[:200].strip()}")
        return resp

    def _refresh_token(self, refused: str | None) -> bool:
        """Re-read the key after a 401; True when it differs from the refused one."""
        with self._token_lock:
            if self.token != refused:  # another thread already picked up a new key
                return True
            try:
                fresh = self.token_source()
            except RuntimeError as exc:
                # Half-written key file (TorchServe is starting): try again later; the bounded
                # attempts still end the job if the key never becomes valid.
                logger.info("cannot re-read the inference key yet: %s", exc)
                return True
            if fresh is None and refused is not None:
                # No key file, or a half-written one: a restarting server is rewriting it. Keep
                # the old key and retry; the bounded attempts end the job if no key appears.
                logger.info("no inference key readable yet (server restarting?); retrying")
                return True
            if fresh == refused:
                return False
            logger.info("inference key changed (server restarted?); retrying with the new one")
            self.token = fresh
            return True

    def _post(self, session: requests.Session, items: list[tuple[str, bytes]]) -> list[Row]:
        """Rows for `items` (path, bytes): retried, split on a 400, never raises but JobFailed."""
        last = ""
        for attempt in range(self.retry.max_attempts):
            if attempt:
                self.retries += 1
                time.sleep(self.retry.delay(attempt - 1))
            try:
                resp = self._post_once(session, items)
                break
            except _Retryable as exc:
                last = str(exc)
                logger.info("attempt %d/%d failed: %s", attempt + 1, self.retry.max_attempts, last)
        else:
            msg = f"GaveUp: {self.retry.max_attempts} attempts failed, last: {last}"
            return [self._row(rel, error=msg) for rel, _ in items]

        if resp.status_code in PER_IMAGE_STATUS:
            if len(items) > 1:  # find out which image was bad: one request per image
                return [row for item in items for row in self._post(session, [item])]
            return [self._row(items[0][0], error=error_text(resp, len(items[0][1])))]
        if resp.status_code != 200:
            msg = f"HTTP {resp.status_code}: {resp.text[:200].strip()}"
            return [self._row(rel, error=msg) for rel, _ in items]
        try:
            answer = parse_response(resp.content)
        except ValidationError as exc:
            msg = f"BadResponse: {exc.error_count()} schema errors in the server's answer"
            return [self._row(rel, error=msg) for rel, _ in items]
        slots = answer.predictions if isinstance(answer, MultiPrediction) else [answer]
        if len(slots) != len(items):
            msg = f"BadResponse: {len(slots)} predictions for {len(items)} images"
            return [self._row(rel, error=msg) for rel, _ in items]
        # The version of the model that answered THIS request (the handler's header), so rows
        # stay right when the server is upgraded part-way through a run.
        version = resp.headers.get(MODEL_VERSION_HEADER)
        rows = []
        for (rel, _), slot in zip(items, slots, strict=True):
            if isinstance(slot, Prediction):
                rows.append(self._row(rel, slot, version=version))
            elif isinstance(slot, ImageError | ErrorResponse):
                body = slot.error if isinstance(slot, ImageError) else slot
                rows.append(self._row(rel, error=f"{body.type}: {body.message}", version=version))
        return rows

    # -- the job ----------------------------------------------------------------------------
    def score(self, root: str | Path, paths: Iterable[str]) -> Iterator[Row]:
        """Yield one Row per path; raises JobFailed on an authorisation/model error."""
        root = str(root)
        stop = threading.Event()
        # Bounded queues: the walk never runs more than a few requests ahead of the senders.
        tasks: queue.Queue = queue.Queue(maxsize=self.concurrency * 2)
        results: queue.Queue = queue.Queue(maxsize=self.concurrency * 4)
        failure: list[BaseException] = []

        def put(q: queue.Queue, item) -> bool:
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.2)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            try:
                it = iter(paths)
                while not stop.is_set():
                    group = list(itertools.islice(it, self.images_per_request))
                    if not group or not put(tasks, group):
                        break
            except BaseException as exc:  # noqa: BLE001 - reported by the consumer
                failure.append(exc)
                stop.set()
            finally:
                for _ in range(self.concurrency):
                    put(tasks, _DONE)

        def send() -> None:
            session = requests.Session()
            try:
                while not stop.is_set():
                    try:
                        group = tasks.get(timeout=0.2)
                    except queue.Empty:
                        continue
                    if group is _DONE:
                        break
                    rows, items = [], []
                    for rel in group:
                        try:
                            items.append((rel, read_input(os.path.join(root, rel))))
                        except OSError as exc:  # vanished, not a regular file, too large
                            rows.append(self._row(rel, error=describe_error(exc)))
                    if items:
                        rows.extend(self._post(session, items))
                    if not put(results, rows):
                        break
            except BaseException as exc:  # noqa: BLE001 - JobFailed or a bug: stop everyone
                failure.append(exc)
                stop.set()
            finally:
                session.close()
                put(results, _DONE)

        threads = [threading.Thread(target=produce, name="batch-walk", daemon=True)]
        threads += [threading.Thread(target=send, name=f"batch-http-{i}", daemon=True)
                    for i in range(self.concurrency)]
        for t in threads:
            t.start()
        finished = 0
        try:
            while finished < self.concurrency and not stop.is_set():
                try:
                    item = results.get(timeout=0.2)
                except queue.Empty:
                    continue
                if item is _DONE:
                    finished += 1
                    continue
                yield from item
        finally:
            stop.set()
            for t in threads:
                t.join()
        if failure:
            raise failure[0]
