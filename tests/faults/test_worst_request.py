"""The worst requests the limits admit, against a private TorchServe with the committed
configuration (batchSize 32, responseTimeout 30 s, one worker): a whole batch of them, then a
stream of them from one client beside other clients. The worker must never restart and every
request must be answered; the timings are printed and recorded, and gated only by
responseTimeout (docs/reliability.md, "Limits", has the figures of record from
`python -m tools.limits_bench all`).
"""

from __future__ import annotations

import pytest

from tools.limits_attack import measure_attack, victim_png
from tools.limits_batch import RESPONSE_TIMEOUT_S, measure_batch
from tools.limits_candidates import candidates

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.integration]


@pytest.fixture(scope="module")
def worst():
    found = {c.name: c for c in candidates()}
    return found["png-6mp-rgba16"], found["photo-progressive"]  # the most CPU each


def test_a_batch_of_the_worst_admitted_requests_is_answered(torchserve_factory, worst):
    server = torchserve_factory()
    for cand in worst:
        result = measure_batch(server, cand, rounds=1)
        print(f"batch of 32 x {cand.name}: {result['rounds'][0]['batch_s']} s, worker memory "
              f"{result['worker_memory_after']}, frontend {result['frontend_rss_mb_after']} MiB")
        assert not result["worker_restarted"], result
        assert result["rounds"][0]["statuses"] == [200], result
        assert result["worst_batch_s"] < RESPONSE_TIMEOUT_S, result


def test_a_stream_of_them_never_restarts_the_worker(torchserve_factory, worst):
    server = torchserve_factory()
    result = measure_attack(server, worst[0], victim_png(), rate=20, rounds=1, seconds=6)
    print(f"victims alone {result['alone']}, beside the stream {result['attacked']}, "
          f"attacker {result['attacker_statuses']}")
    assert not result["worker_restarted"], result
    assert set(result["victim_statuses"]) == {"200"}, result
    assert set(result["attacker_statuses"]) == {"200"}, result
