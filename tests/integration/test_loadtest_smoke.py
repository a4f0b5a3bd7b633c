"""Short headless Locust runs with the SLO gate against the real TorchServe (CI smoke).

Three runs, about 35 s of load in all: the weighted traffic mix must pass the gate with every
answer checked; the gate must fail a run whose pool carries wrong labels (every answer then
disagrees) and a run whose p99 bound cannot be met. A gate that cannot fail is a defect.
"""

from __future__ import annotations

import json

import pytest

from loadtests import slo
from loadtests.pool import ImagePool, ensure_pool
from loadtests.runner import LoadSpec, run_locust

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pool_path(torchserve):
    """Digits that the model inside the served archive classifies correctly offline."""
    return ensure_pool(torchserve.config.archive)


def test_mixed_traffic_passes_the_slo_gate(torchserve, pool_path, tmp_path):
    spec = LoadSpec(users=8, spawn_rate=8, run_time="20s")
    result = run_locust(spec, tmp_path, pool_path, server=torchserve)
    assert result.exit_code == 0, (result.slo, result.per_name)
    assert result.slo["passed"], result.slo
    assert result.failures == 0, (tmp_path / "locust_failures.csv").read_text()
    # every kind of request in the mix really ran and was checked
    names = set(result.per_name)
    assert {"single", "json x8", "multipart x4"} <= names, names
    assert any(n.startswith("bad") for n in names), names
    assert result.requests >= 100 and result.images_per_s > result.rps
    assert result.wall_s >= 20  # the whole --run-time, even when Locust starts slowly
    for artifact in ("report.html", "chart.png", "summary.json", "locust.json", "slo.json"):
        assert (tmp_path / artifact).stat().st_size > 0, artifact
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["slo"] == json.loads((tmp_path / "slo.json").read_text())
    assert summary["rps"] > 0 and summary["server_cpu_cores"] > 0
    # TorchServe timed the same requests; its own p99 cannot exceed the client-side one by more
    # than the rounding of its whole milliseconds
    assert 0 <= summary["server_p99_ms"] <= summary["p99_ms"] + 1


def test_gate_fails_a_run_with_wrong_answers(torchserve, pool_path, tmp_path):
    good = ImagePool.load(pool_path)
    wrong = ImagePool(good.images, [(d + 1) % 10 for d in good.labels], good.mnist_indices)
    wrong_path = wrong.save(tmp_path / "wrong-labels.json")
    spec = LoadSpec(users=4, spawn_rate=4, run_time="6s", user_classes=["SingleImageUser"])
    result = run_locust(spec, tmp_path / "run", wrong_path, server=torchserve)
    assert result.exit_code == slo.SLO_EXIT_CODE
    assert not result.slo["passed"] and "failure ratio" in " ".join(result.slo["violations"])
    assert result.failures == result.requests > 0
    assert "wrong digit" in (tmp_path / "run" / "locust_failures.csv").read_text()


def test_gate_fails_a_run_that_misses_the_p99_bound(torchserve, pool_path, tmp_path):
    spec = LoadSpec(users=2, spawn_rate=2, run_time="5s", user_classes=["SingleImageUser"],
                    extra_args=["--slo-p99-ms", "0.001"])  # fmt: skip
    result = run_locust(spec, tmp_path, pool_path, server=torchserve)
    assert result.exit_code == slo.SLO_EXIT_CODE
    assert result.failures == 0  # the answers were right; only the latency bound failed
    assert any("p99" in v for v in result.slo["violations"]), result.slo
