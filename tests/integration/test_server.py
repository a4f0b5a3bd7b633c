"""`deploy.server.TorchServe` and `python -m deploy` against real TorchServe processes: settings
honoured, the archive's own code served, restart and clean shutdown, loud failure.

Each test starts its own private server(s) (`torchserve_factory`, ~5 s per start on 2 cores).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

import psutil
import pytest
import requests

from deploy.keys import auth_headers
from deploy.server import ServeError, TorchServe
from handler import MODEL_NAME
from project.paths import REPO_ROOT
from project.ports import free_port, port_in_use


def predict_ok(server: TorchServe, png: bytes) -> int:
    resp = requests.post(server.predict_url, data=png, timeout=30,
                         headers={"Content-Type": "image/png",
                                  **auth_headers(server.inference_token)})  # fmt: skip
    assert resp.status_code == 200, resp.text
    return resp.json()["digit"]


def test_model_config_overrides_reach_torchserve(torchserve_factory, mnist_png):
    """What the load-test sweeps rely on: batchSize, delay, workers and threads per run."""
    png, label = mnist_png
    server = torchserve_factory(
        model_config_overrides={"batchSize": 4, "maxBatchDelay": 9, "workers": 2,
                                "torch_threads": 1},
    )  # fmt: skip
    (model,) = requests.get(f"{server.management_url}/models/{MODEL_NAME}", timeout=10,
                            headers=auth_headers(server.management_token)).json()  # fmt: skip
    assert (model["batchSize"], model["maxBatchDelay"]) == (4, 9)
    assert (model["minWorkers"], model["maxWorkers"]) == (2, 2)
    assert len(server.worker_pids()) == 2
    assert predict_ok(server, png) == label


def test_stop_leaves_no_process_and_no_port(torchserve_factory, mnist_png):
    server = torchserve_factory()
    assert predict_ok(server, mnist_png[0]) == mnist_png[1]
    group = server.group_processes()
    workers = set(server.worker_pids().values())
    pids = {p.pid for p in group}
    assert workers and workers <= pids, "workers are not in the server's process group"
    assert any("java" in " ".join(p.cmdline()) for p in group)
    ports = list(server.ports)
    server.stop()
    alive = [pid for pid in pids | workers if psutil.pid_exists(pid)
             and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]  # fmt: skip
    assert not alive, f"left behind: {alive}"
    assert not [p for p in ports if port_in_use(p)]
    for port in ports[:3]:  # and the ports can be bound again right away
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_worker_imports_the_handler_from_the_archive(torchserve_factory, mnist_png):
    """The worker runs the `handler` package shipped in the .mar, not the repository's copy
    (which is importable too: the project is installed in the same environment). Python's
    verbose import log names the file each module's code came from."""
    server = torchserve_factory(env={"PYTHONVERBOSE": "1"})
    assert predict_ok(server, mnist_png[0]) == mnist_png[1]
    log = (server.run_dir / "logs" / "model_log.log").read_text(errors="replace")
    sources = set(re.findall(r"(?:code object from|matches) (\S*/handler/\w+\.py)\b", log))
    assert {"preprocessing.py", "predictor.py"} <= {src.rsplit("/", 1)[1] for src in sources}
    extracted = str(server.run_dir / "tmp" / "models") + "/"
    assert all(src.startswith(extracted) for src in sources), sorted(sources)


def test_restart_gives_fresh_workers_and_keys_on_the_same_ports(torchserve_factory, mnist_png):
    """What a restart does to the server; what it does to a client mid-run is
    tests/faults/test_batch_exactly_once.py::test_server_restart_during_batch."""
    server = torchserve_factory()
    before_workers, before_key = set(server.worker_pids().values()), server.inference_token
    ports = list(server.ports)
    server.restart()
    assert list(server.ports) == ports
    assert set(server.worker_pids().values()).isdisjoint(before_workers)
    assert server.inference_token != before_key  # keys are regenerated at every start
    assert predict_ok(server, mnist_png[0]) == mnist_png[1]


def test_token_auth_off(torchserve_factory, mnist_png):
    server = torchserve_factory(token_auth=False)
    assert server.inference_token is None
    assert not server.key_file.exists()
    assert predict_ok(server, mnist_png[0]) == mnist_png[1]


def test_port_in_use_fails_with_torchservers_own_error(torchserve_factory):
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        busy = blocker.getsockname()[1]
        server = torchserve_factory(start=False, inference_port=busy)
        with pytest.raises(ServeError) as info:
            server.start(timeout=90)
    message = str(info.value)
    assert "Address already in use" in message  # Java's own BindException text
    assert "TorchServe output" in message  # the tail of TorchServe's log is attached
    assert not server.group_processes()


def test_cli_serve_status_stop(mar_path, tmp_path, mnist_png):
    """`python -m deploy serve` returns once ready and leaves the server running; `stop` ends it;
    a second `serve` on a busy port exits non-zero with TorchServe's error."""
    ports = [str(free_port()) for _ in range(3)]
    env = {**os.environ, "LENET_RUN_DIR": str(tmp_path / "run")}
    cli = [sys.executable, "-m", "deploy"]
    port_args = ["--inference-port", ports[0], "--management-port", ports[1],
                 "--metrics-port", ports[2], "--model-store", str(mar_path.parent)]  # fmt: skip

    def run(*args, run_dir=None):
        env_run = {**env, "LENET_RUN_DIR": str(run_dir)} if run_dir else env
        return subprocess.run([*cli, *args], cwd=REPO_ROOT, env=env_run, capture_output=True,
                              text=True, timeout=240)  # fmt: skip

    served = run("serve", *port_args)
    try:
        assert served.returncode == 0, served.stderr
        assert f"http://127.0.0.1:{ports[0]}/predictions/lenet" in served.stdout
        status = run("status")
        assert status.returncode == 0 and "READY" in status.stdout, status.stdout
        clash = run("serve", *port_args, run_dir=tmp_path / "other")
        assert clash.returncode != 0
        assert "Address already in use" in clash.stderr, clash.stderr  # TorchServe's own error
    finally:
        stopped = run("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert not port_in_use(int(ports[0]))
    assert run("status").returncode != 0
