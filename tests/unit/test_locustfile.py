"""Unit tests of the load-test pieces that need no server: traffic mix, settings from locust.conf,
pool, SLO gate (on real Locust statistics), step shape, result parsing, soak memory gate."""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
import time
from datetime import datetime

import numpy as np
import pytest

from project.paths import REPO_ROOT
from samples.digits import encode_png

# `import locust` monkey-patches the whole process with gevent (sockets, threads, ssl) unless told
# not to. In a shared pytest session that breaks the other tests (and an ssl module imported
# earlier: RecursionError), and these tests only need Locust's parser, stats and shape objects.
# So import it unpatched, and restore the environment so Locust subprocesses are patched normally.
_saved = os.environ.get("LOCUST_SKIP_MONKEY_PATCH")
os.environ["LOCUST_SKIP_MONKEY_PATCH"] = "1"
try:
    pytest.importorskip("locust")
    from locust import events as locust_events
    from locust.argument_parser import get_parser
    from locust.env import Environment
    from locust.util.timespan import parse_timespan

    from loadtests import LOCUST_CONF, LOCUSTFILE, charts, runner, slo, soak
    from loadtests import __main__ as cli
    from loadtests import locustfile as lf
    from loadtests.bench import constant_rate_users
    from loadtests.pool import ImagePool
    from loadtests.shapes import StepLoadShape
finally:
    if _saved is None:
        del os.environ["LOCUST_SKIP_MONKEY_PATCH"]
    else:
        os.environ["LOCUST_SKIP_MONKEY_PATCH"] = _saved


def tiny_pool(n: int = 12) -> ImagePool:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    return ImagePool([encode_png(img) for img in images], [i % 10 for i in range(n)],
                     list(range(n)))  # fmt: skip


def locust_options(*args: str):
    """Locust's own parser, with the project's options (locustfile, SLO gate), on `args`."""
    return get_parser().parse_args(list(args))


def config_options(*extra: str):
    """The options of a run that loads the real locust.conf."""
    return locust_options("--config", str(LOCUST_CONF), *extra)


def conf_value(key: str) -> str:
    """A value as written in locust.conf (the test's expectations come from the file itself)."""
    for line in LOCUST_CONF.read_text().splitlines():
        name, _, value = line.partition("=")
        if not line.startswith("#") and name.strip() == key:
            return value.strip()
    raise KeyError(key)


@pytest.mark.parametrize("users", [4, 100])
def test_locust_spawns_the_weighted_mix_plus_exactly_one_bad_input_user(users):
    """What Locust really starts for a user count: one paced bad-input user whatever the count,
    and the rest split by weight (the heaviest class gets the most users)."""
    from locust.dispatch import UsersDispatcher
    from locust.runners import WorkerNode

    classes = [cls for cls in vars(lf).values()
               if isinstance(cls, type) and issubclass(cls, lf.FastHttpUser) and not cls.abstract]
    dispatcher = UsersDispatcher(worker_nodes=[WorkerNode("w")], user_classes=classes)
    dispatcher.new_dispatch(target_user_count=users, spawn_rate=users)
    spawned = {}
    for dispatch in dispatcher:
        spawned = dispatch["w"]
    assert sum(spawned.values()) == users
    assert spawned["BadInputUser"] == 1
    regular = {k: v for k, v in spawned.items() if k != "BadInputUser"}
    assert max(regular, key=regular.get) == max(lf.USER_WEIGHTS, key=lf.USER_WEIGHTS.get)
    assert lf.BadInputUser.pace_rps > 0  # paced, never a free loop against the server


def test_locust_loads_the_file_with_the_config_and_lists_the_users():
    out = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--config", str(LOCUST_CONF),
         "--list"],
        capture_output=True, text=True, timeout=120, cwd=REPO_ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert set(out.stdout.split()) >= set(lf.USER_WEIGHTS) | {"BadInputUser"}


@pytest.mark.parametrize("cli_args", [[], ["-u", "4", "-r", "2", "-t", "5s"]])
def test_run_takes_locust_conf_values_unless_the_command_line_sets_them(tmp_path, cli_args):
    """`python -m loadtests run` without flags runs what locust.conf says; flags override it."""
    if cli_args:
        users, spawn_rate, run_time = 4, 2.0, "5s"
    else:
        users, spawn_rate = int(conf_value("users")), float(conf_value("spawn-rate"))
        run_time = conf_value("run-time")
    spec = cli.picked(runner.LoadSpec, cli.build_parser().parse_args(["run", *cli_args]))
    cmd = runner.locust_command(spec, tmp_path, tmp_path / "pool.json")
    assert ("-u" in cmd) == bool(cli_args)
    options = locust_options(*cmd[cmd.index("-f"):])
    assert (options.num_users, options.spawn_rate) == (users, spawn_rate)
    assert options.run_time == parse_timespan(run_time)
    # the runner's own time budget and ramp-up window read the same values
    assert (int(spec.setting("users")), spec.setting("run_time")) == (users, run_time)


def test_run_passes_user_classes_and_extra_locust_options_through(tmp_path):
    args = ["run", "--user-class", "SingleImageUser", "--user-class", "MultipartUser",
            "--locust-arg=--slo-p99-ms=50", "--locust-arg=--rps-per-user=2"]
    spec = cli.picked(runner.LoadSpec, cli.build_parser().parse_args(args))
    options = locust_options(*runner.locust_command(spec, tmp_path, tmp_path / "p.json")[3:])
    assert options.user_classes == ["SingleImageUser", "MultipartUser"]
    assert (options.slo_p99_ms, options.rps_per_user) == (50.0, 2.0)


def test_the_locustfile_refuses_to_run_without_locust_conf(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "-t", "1s",
         "-H", "http://127.0.0.1:9", "--pool", str(tiny_pool().save(tmp_path / "p.json"))],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode != 0 and "locust.conf" in out.stderr + out.stdout


def test_bad_inputs_are_really_not_decodable_images():
    from PIL import Image

    for _name, body, content_type in lf.bad_inputs(tiny_pool()):
        if content_type == "image/png":
            with pytest.raises(OSError):
                Image.open(io.BytesIO(body)).load()
        else:
            import base64
            import binascii

            (value,) = json.loads(body).values()
            with pytest.raises(binascii.Error):
                base64.b64decode(value, validate=True)


def test_pool_round_trips_through_its_json_file(tmp_path):
    pool = tiny_pool()
    path = pool.save(tmp_path / "pool.json")
    assert json.loads(path.read_text())["labels"] == pool.labels  # plain JSON, no pickle
    loaded = ImagePool.load(path)
    assert loaded.images == pool.images and loaded.labels == pool.labels
    assert loaded.b64 == pool.b64
    picks = loaded.pick(random.Random(1), 8)
    assert len(set(picks)) == 8  # distinct images within one multi-image request


def test_slo_bounds_come_from_locust_conf():
    bounds = slo.bounds_from_options(config_options())
    ratio, p99, least = (float(conf_value("slo-max-failure-ratio")),
                         float(conf_value("slo-p99-ms")), int(conf_value("slo-min-requests")))
    assert (bounds.max_failure_ratio, bounds.p99_ms, bounds.min_requests) == (ratio, p99, least)
    requests = 100 * least
    tolerated = int(ratio * requests)
    assert slo.evaluate(requests, tolerated, p99, bounds).passed
    assert not slo.evaluate(requests, tolerated + 1, p99, bounds).passed
    assert not slo.evaluate(requests, 0, p99 + 1, bounds).passed
    assert not slo.evaluate(least - 1, 0, 1.0, bounds).passed


def test_an_unconfigured_bound_fails_the_gate():
    verdict = slo.evaluate(1000, 0, 1.0, slo.SloBounds(max_failure_ratio=None, p99_ms=100.0))
    assert not verdict.passed and "not configured" in verdict.violations[0]


def _environment_with(response_times_ms: list[int], failures: int, *extra: str) -> Environment:
    env = Environment(parsed_options=config_options(*extra), events=locust_events)
    env.create_local_runner()
    for ms in response_times_ms:
        env.stats.log_request("POST", "single", ms, 100)
    for _ in range(failures):  # as Locust records a failed request: a request plus an error
        env.stats.log_error("POST", "single", RuntimeError("wrong digit"))
    return env


def test_gate_fails_a_slow_run_and_writes_its_verdict_file(tmp_path):
    verdict_file = tmp_path / "slo.json"
    env = _environment_with([5] * 990 + [3000] * 10, 0, "--slo-verdict-file", str(verdict_file))
    verdict = slo.gate(env)  # p99 3,000 ms > 2,000 ms in locust.conf
    assert not verdict.passed and env.process_exit_code == slo.SLO_EXIT_CODE
    written = json.loads(verdict_file.read_text())
    assert written["passed"] is False and written["p99_ms"] == verdict.p99_ms
    assert written["violations"] == verdict.violations and "p99" in written["violations"][0]


def test_gate_passes_tolerated_failures_with_exit_code_zero():
    env = _environment_with([5] * 2000, 1)  # 1 wrong answer in 2000 requests: 0.05 % < 0.1 %
    verdict = slo.gate(env)
    assert verdict.passed, verdict.violations
    assert env.process_exit_code == 0


def test_gate_fails_when_failures_exceed_the_configured_ratio():
    env = _environment_with([5] * 2000, 3)  # 0.15 % > 0.1 %
    verdict = slo.gate(env)
    assert not verdict.passed and "failure ratio" in verdict.violations[0]
    assert env.process_exit_code == slo.SLO_EXIT_CODE


def test_command_line_overrides_the_configured_bound():
    env = _environment_with([5] * 1000, 0, "--slo-p99-ms", "0.001")
    assert not slo.gate(env).passed


def test_step_shape_adds_users_per_step_then_stops():
    env = Environment(parsed_options=config_options("--step-users", "4", "--step-seconds", "10",
                                                     "--step-max-users", "10"))  # fmt: skip
    shape = StepLoadShape()
    shape.runner = env.create_local_runner()
    ticks = []
    for t in (0.5, 9.5, 10.5, 25.0, 31.0):
        shape.start_time = time.perf_counter() - t
        ticks.append(shape.tick())
    assert [tk[0] if tk else None for tk in ticks] == [4, 4, 8, 10, None]


def test_images_per_request_name():
    names = ("single", "json x8", "multipart x4", "bad: truncated PNG")
    assert [runner.images_in(n) for n in names] == [1, 8, 4, 0]


def test_saturation_point_is_where_more_users_stop_adding_throughput(tmp_path):
    history = tmp_path / "h.csv"
    rows = ["Timestamp,User Count,Type,Name,Requests/s,Failures/s,50%,95%,99%"]
    rps_per_step = {4: 400, 8: 800, 12: 990, 16: 1000, 20: 1000}
    t = 0
    for users, rps in rps_per_step.items():
        for _ in range(10):
            rows.append(f"{t},{users},,Aggregated,{rps},0,{users},{users * 2},{users * 3}")
            t += 1
    history.write_text("\n".join(rows) + "\n")
    sat = charts.saturation_point(history)
    assert sat["users"] == 12 and sat["max_rps"] == 1000
    assert charts.plot_run(history, tmp_path / "c.png").stat().st_size > 1000


def test_server_side_latency_comes_from_the_new_access_log_lines_of_the_window(tmp_path):
    """TorchServe's own timing of the measured requests: appended lines only, POSTs only, from
    the end of the ramp-up on."""
    log = tmp_path / "access_log.log"
    old = '2026-11-24T13:50:00,000 - /127.0.0.1:1 "POST /predictions/lenet HTTP/1.1" 200 900\n'
    log.write_text(old)
    offset = log.stat().st_size
    lines = [
        '2026-11-24T13:53:15,999 - /127.0.0.1:2 "POST /predictions/lenet HTTP/1.1" 200 700',  # ramp
        '2026-11-24T13:53:16,445 - /127.0.0.1:3 "GET /ping HTTP/1.1" 200 500',
        *(f'2026-11-24T13:53:16,{i:03d} - /127.0.0.1:4 "POST /predictions/lenet HTTP/1.1" 200 {i}'
          for i in range(500, 600)),  # 100 measured requests: 500..599 ms
        "a torn last line",
    ]  # fmt: skip
    with open(log, "a") as f:
        f.write("\n".join(lines) + "\n")
    p50, p99 = runner.server_latency(log, offset, datetime(2026, 11, 24, 13, 53, 16))
    assert p50 == pytest.approx(549.5) and p99 == pytest.approx(598.0, abs=0.1)


def test_paced_users_keep_their_own_schedule_after_a_late_wake_up():
    """Two users woken at the same late moment must not fall into step (the clumping that turns
    a constant rate into bursts); a user that fell behind catches up instead of dropping load."""
    clock = {"now": 100.0}
    users = [lf.FixedSchedule(10.0, random.Random(seed), clock=lambda: clock["now"])
             for seed in (1, 2)]  # fmt: skip
    phases = [u.next_due for u in users]  # 100 ms period, a random phase each
    assert phases[0] != phases[1]
    clock["now"] = 100.5  # both wake up late, together, 5 periods in
    owed = [[u.wait() for _ in range(5)] for u in users]
    assert all(w == 0.0 for ws in owed for w in ws)  # the owed requests go out at once
    nxt = [u.wait() for u in users]  # then each is back on ITS grid
    for u, phase, w in zip(users, phases, nxt, strict=True):
        assert w == pytest.approx(phase + 0.5 - 100.5) and w > 0
        assert u.next_due == pytest.approx(phase + 0.6)
    clock["now"] = 105.0  # a stall over MAX_LAG_S: restart the grid, no 40-request burst
    assert users[0].wait() == 0.0 and users[0].wait() == pytest.approx(0.1)


@pytest.mark.parametrize("rate, bound_ms", [(1016.0, 25.0), (50.0, 25.0), (3000.0, 10.0)])
def test_constant_rate_run_has_users_enough_to_wait_out_the_latency_bound(rate, bound_ms):
    users = constant_rate_users(rate, bound_ms)
    assert users / rate >= bound_ms / 1000  # each user's period covers a request at the bound
    assert users >= 4 and (users - 1) / rate < bound_ms / 1000 or users == 4  # and no more


def test_soak_memory_gate_compares_steady_medians_and_counts_restarted_workers():
    """RSS after the warm-up against the end, by median (one GC spike does not move it); a
    worker pid that shows up later is a restart, not a process to compare."""
    samples = [(float(t), (100.0 if t < 30 else 200.0, {7: 50.0 + (t >= 400) * 10}))
               for t in range(0, 600, 5)]  # fmt: skip
    samples[-3] = (samples[-3][0], (900.0, samples[-3][1][1]))  # a spike in the last minute
    samples[-1] = (samples[-1][0], (200.0, {7: 60.0, 8: 40.0}))  # worker 8 appears
    growth = {g["process"]: g["growth"] for g in soak.rss_growth(samples, warmup_s=60.0)}
    assert growth == {"frontend": pytest.approx(0.0), "worker 7": pytest.approx(0.2)}
    assert soak.worker_restarts(samples) == 1 and soak.worker_restarts(samples[:-1]) == 0
