"""Short headless Locust runs with the SLO gate against the real TorchServe (CI smoke).

Three runs, about 35 s of load in all: the weighted traffic mix must pass the gate with every
answer checked; the gate must fail a run whose pool carries wrong labels (every answer then
disagrees) and a run whose p99 bound cannot be met. A gate that cannot fail is a defect.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadtests import slo
from loadtests.pool import ImagePool, ensure_pool, model_in_archive
from loadtests.runner import LoadSpec, run_locust

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def pool_path(torchserve):
    """Digits that the model inside the served archive classifies correctly offline."""
    return ensure_pool(model_path=model_in_archive(Path(torchserve.model_store) / "lenet.mar"))


def target(server) -> tuple[str, object]:
    """Inference URL and key file of the conftest's TorchServe."""
    return server.inference_url, server.key_file


def test_mixed_traffic_passes_the_slo_gate(torchserve, pool_path, tmp_path):
    url, key_file = target(torchserve)
    spec = LoadSpec(host=url, users=8, spawn_rate=8, run_time="20s")
    result = run_locust(spec, tmp_path, pool_path, key_file=key_file)
    assert result.exit_code == 0, (result.slo, result.per_name)
    assert result.slo and result.slo["passed"], result.slo
    assert result.failures == 0, (tmp_path / "locust_failures.csv").read_text()
    # every kind of request in the mix really ran and was checked
    names = set(result.per_name)
    assert {"single", "json x8", "multipart x4"} <= names, names
    assert any(n.startswith("bad") for n in names), names
    assert result.requests >= 100
    for artifact in ("report.html", "chart.png", "summary.json", "locust.json"):
        assert (tmp_path / artifact).stat().st_size > 0, artifact
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["slo"]["passed"] and summary["rps"] > 0


def test_gate_fails_a_run_with_wrong_answers(torchserve, pool_path, tmp_path):
    url, key_file = target(torchserve)
    good = ImagePool.load(pool_path)
    wrong = ImagePool(good.pngs, [(d + 1) % 10 for d in good.labels], good.mnist_indices)
    wrong_path = wrong.save(tmp_path / "wrong-labels.npz")
    spec = LoadSpec(host=url, users=4, spawn_rate=4, run_time="6s",
                    user_classes=["SingleImageUser"])  # fmt: skip
    result = run_locust(spec, tmp_path / "run", wrong_path, key_file=key_file)
    assert result.exit_code == slo.SLO_EXIT_CODE
    assert not result.slo["passed"] and "failure ratio" in " ".join(result.slo["violations"])
    assert result.failures == result.requests > 0
    assert "wrong digit" in (tmp_path / "run" / "locust_failures.csv").read_text()


def test_gate_fails_a_run_that_misses_the_p99_bound(torchserve, pool_path, tmp_path):
    url, key_file = target(torchserve)
    spec = LoadSpec(
        host=url, users=2, spawn_rate=2, run_time="5s",
        user_classes=["SingleImageUser"], extra_args=["--slo-p99-ms", "0.001"],
    )  # fmt: skip
    result = run_locust(spec, tmp_path, pool_path, key_file=key_file)
    assert result.exit_code == slo.SLO_EXIT_CODE
    assert result.failures == 0  # the answers were right; only the latency bound failed
    assert any("p99" in v for v in result.slo["violations"]), result.slo

