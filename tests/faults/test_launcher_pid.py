"""`python -m deploy stop|status` against pid files that lie: a process group now led by another
program (a reused pid), an empty file, a corrupt one. Real processes, real signals, the real CLI.

The stand-in "other program" is a `sleep` in its own session: if `stop` trusted the pid file it
would kill it.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from deploy.__main__ import PID_FILE_NAME
from deploy.config import ServerConfig
from project.paths import REPO_ROOT

pytestmark = pytest.mark.faults


def deploy(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deploy", *map(str, args)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


@pytest.fixture
def other_program():
    """A process leading its own group, as a reused pid would be."""
    proc = subprocess.Popen(["sleep", "600"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


def write_record(run_dir: Path, pid: int, cmdline: list[str], create_time: float) -> Path:
    config = ServerConfig.on_free_ports(model_store=run_dir, token_auth=False)
    record = {"pgid": pid, "leader_cmdline": cmdline, "leader_create_time": create_time,
              **dataclasses.asdict(config), "model_store": str(config.model_store)}  # fmt: skip
    path = run_dir / PID_FILE_NAME
    path.write_text(json.dumps(record))
    return path


def test_stop_never_signals_a_group_now_led_by_another_program(tmp_path, other_program):
    """The pid file recorded TorchServe (its command line, its start time); the pid now leads a
    `sleep`: nothing is signalled, the stale file goes, and `stop` says why."""
    torchserve_then = [sys.executable, "torchserve", "--start", "--foreground"]
    pid_file = write_record(tmp_path, other_program.pid, torchserve_then,
                            psutil.Process(other_program.pid).create_time() - 3600)  # fmt: skip
    proc = deploy("stop", "--run-dir", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "stale" in proc.stdout and "nothing was signalled" in proc.stdout, proc.stdout
    assert other_program.poll() is None, "stop killed a program that is not its TorchServe"
    assert not pid_file.exists()


def test_same_command_line_but_another_start_time_is_not_ours(tmp_path, other_program):
    """A pid reused by a new instance of the same command is still not the recorded process."""
    leader = psutil.Process(other_program.pid)
    write_record(tmp_path, other_program.pid, leader.cmdline(), leader.create_time() - 5)
    proc = deploy("stop", "--run-dir", tmp_path)
    assert proc.returncode == 0 and "stale" in proc.stdout, proc.stdout + proc.stderr
    assert other_program.poll() is None


def test_a_matching_record_is_stopped(tmp_path, other_program):
    """The check is not a blanket refusal: the recorded process itself is stopped, group and all."""
    leader = psutil.Process(other_program.pid)
    write_record(tmp_path, other_program.pid, leader.cmdline(), leader.create_time())
    proc = deploy("stop", "--run-dir", tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert other_program.wait(10) is not None
    assert "stopped" in proc.stdout


@pytest.mark.parametrize("content", ["", "{\"pgid\": 12", "not json", "{\"pgid\": \"x\"}"],
                         ids=["empty", "truncated", "garbage", "wrong-type"])  # fmt: skip
@pytest.mark.parametrize("command", ["stop", "status"])
def test_unreadable_pid_file_is_one_clear_line(tmp_path, content, command):
    (tmp_path / PID_FILE_NAME).write_text(content)
    proc = deploy(command, "--run-dir", tmp_path)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "unreadable" in lines[0] and "nothing was signalled" in lines[0]
