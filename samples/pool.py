"""A pool of labelled uploads for load tests and benches: the images (PNG, JPEG) with their
labels, MNIST indices and `samples.mix` kinds, as one JSON file (no pickle), and random draws
of as many images as one request may carry. Which model checks a pool, and where it is cached,
is the load tests' business (`loadtests.pool.ensure_pool`)."""

from __future__ import annotations

import base64
import json
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

from handler import limits
from samples.mix import pack


@dataclass
class ImagePool:
    """Encoded images (PNG, JPEG) with their labels and `samples.mix` kinds; `b64` holds the
    base64 text of each, `costs` each one's pixel cost in a request (`handler.limits`)."""

    images: list[bytes] = field(repr=False)
    labels: list[int]
    mnist_indices: list[int]
    model_sha256: str = ""
    kinds: list[str] = field(default_factory=list)  # empty: every image an MNIST PNG

    def __post_init__(self) -> None:
        if not self.images or len(self.images) != len(self.labels):
            raise ValueError(f"a pool needs images, one label each: {len(self.labels)} labels "
                             f"for {len(self.images)} images")  # fmt: skip
        self.kinds = self.kinds or ["mnist"] * len(self.images)
        self.b64 = [base64.b64encode(data).decode("ascii") for data in self.images]
        self.costs = [limits.probe(data).cost for data in self.images]  # headers only: fast
        self._fitting: dict[int, list[int]] = {}  # max_bytes -> positions whose base64 fits

    def __len__(self) -> int:
        return len(self.images)

    def pick(self, rng: random.Random, count: int = 1, max_bytes: int | None = None) -> list[int]:
        """Up to `count` random pool positions, distinct within one call (see `request`); with
        `max_bytes`, only images whose base64 text fits in it (a client sends a photo too large
        for that raw, never base64)."""
        if max_bytes is None:
            fitting = range(len(self))
        else:  # once per limit, not per request: a Locust user draws on every task
            fitting = self._fitting.get(max_bytes)
            if fitting is None:
                fitting = [i for i in range(len(self)) if len(self.b64[i]) <= max_bytes]
                self._fitting[max_bytes] = fitting
        return self.request(rng.sample(fitting, k=min(count, len(fitting))), max_bytes)

    def request(self, picks: list[int], max_bytes: int | None = None) -> list[int]:
        """The first of `picks` that one request may carry (at least one): under the handler's
        pixel cost limit and, given `max_bytes`, a server's body limit for their base64 text,
        as a client splits a mix."""
        groups = pack([self.costs[i] for i in picks], len(picks),
                      sizes=[len(self.b64[i]) for i in picks], max_bytes=max_bytes)  # fmt: skip
        return list(picks)[: len(groups[0])]

    def subset(self, kind: str) -> ImagePool:
        """The images of one kind only."""
        keep = [i for i, k in enumerate(self.kinds) if k == kind]
        return ImagePool(*([getattr(self, f)[i] for i in keep] for f in ("images", "labels",
                         "mnist_indices")), self.model_sha256, [kind] * len(keep))  # fmt: skip

    def save(self, path: Path) -> Path:
        """Write the pool as JSON, atomically (parallel runs share the cache)."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(path).with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(asdict(self) | {"images": self.b64}))
        return tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> ImagePool:
        """Read a pool written by `save`."""
        if not Path(path).is_file():
            raise FileNotFoundError(f"no image pool {path}: `python -m loadtests pool` builds one")
        data = json.loads(Path(path).read_text())
        return cls(**data | {"images": [base64.b64decode(text) for text in data["images"]]})
