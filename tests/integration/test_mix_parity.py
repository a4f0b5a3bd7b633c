"""One small realistic mix (`samples.mix`: MNIST PNGs, scans and drawings, 1-3 MP photos and a
12 MP photo) answered identically by the three paths that serve it: the handler in a real
TorchServe (the session `torchserve`), the batch job's local engine (`python -m batch score`),
and the load-test pool's in-process path (`samples.pool.ImagePool` through its JSON file, then
`handler.predictor.Predictor.predict`, as `loadtests.bench.in_process_ceiling` runs it).

Requests to the server are split as a client splits a mix (`samples.mix.pack`): at most 4
images, under the handler's per-request pixel cost and the server's body limit.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from client import LenetClient
from handler.predictor import Predictor
from handler.schemas import Prediction
from loadtests.pool import MAX_BODY_BYTES
from samples import mix
from samples.pool import ImagePool

SEED = 24


def test_server_batch_job_and_pool_answer_a_mix_identically(torchserve, mar_path, tmp_path,
                                                             mnist_test, batch_cli):  # fmt: skip
    items = (mix.build_mix(23, SEED, digits=mnist_test)
             + mix.build_mix(1, SEED, ["photo12mp"], digits=mnist_test))  # fmt: skip
    assert set(Counter(i.kind for i in items)) == set(mix.KINDS)

    with LenetClient(torchserve.inference_url, token=torchserve.inference_token,
                     timeout=60) as client:  # fmt: skip
        groups = mix.pack([i.cost for i in items], 4, sizes=[len(i.data) for i in items],
                          max_bytes=MAX_BODY_BYTES)  # fmt: skip
        served = [a for g in groups for a in client.predict([items[i].data for i in g])]

    folder = tmp_path / "mix"
    folder.mkdir()
    mix.write_folder(folder, items)
    out = tmp_path / "local.jsonl"
    proc = batch_cli.run("score", folder, "-o", out, "--model", mar_path, "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    rows = {r.path: r for r in batch_cli.rows(out)}
    rels = [line.split(",")[0] for line in (folder / "labels.csv").read_text().splitlines()[1:]]
    batch = [rows[rel] for rel in rels]

    pool = ImagePool([i.data for i in items], [i.label for i in items],
                     [i.mnist_index for i in items], kinds=[i.kind for i in items])  # fmt: skip
    pool = ImagePool.load(pool.save(tmp_path / "pool.json"))
    in_process = Predictor.load(mar_path, "cpu").predict(pool.images)

    for n, (item, s, b, p) in enumerate(zip(items, served, batch, in_process, strict=True)):
        where = f"item {n} ({item.kind}, {item.fmt}, {len(item.data):,} bytes)"
        assert isinstance(s, Prediction) and isinstance(p, Prediction), f"{where}: {s} / {p}"
        assert b.error is None, f"{where}: {b.error}"
        assert s.digit == b.digit == p.digit, where
        assert s.uncertain == b.uncertain == p.uncertain, where
        np.testing.assert_allclose(s.probabilities, p.probabilities, atol=1e-5, err_msg=where)
        np.testing.assert_allclose(b.probabilities, p.probabilities, atol=1e-5, err_msg=where)
    right = sum(p.digit == i.label for i, p in zip(items, in_process, strict=True))
    assert right >= 0.9 * len(items), f"{right} of {len(items)} right"
