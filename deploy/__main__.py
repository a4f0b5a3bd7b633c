"""`python -m deploy archive|serve|stop|status`: build lenet.mar and run TorchServe locally.

- `archive`: build model_store/lenet.mar from artifacts/lenet.pt (deploy/archive.py);
- `serve`:   start TorchServe in the background, return once /ping is healthy and the workers
             are READY; print where it listens (pid file and logs in the run dir);
- `stop`:    stop the background server and check nothing of it is left;
- `status`:  health and workers of the background server.
Set LENET_TOKEN_AUTH=off for a tokens-off local run (no key file, clients send no header).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path

import psutil
import requests

from deploy import keys
from deploy.archive import ArchiveError, archive_contents, build_archive
from deploy.config import ServerConfig
from deploy.server import ServeError, TorchServe
from handler import MODEL_NAME
from project import paths

# The background server's process group, the identity of its leader (command line and start
# time, so a pid reused by another program is never signalled), and its config.
PID_FILE_NAME = "torchserve.pid"


class PidFileError(RuntimeError):
    """The pid file cannot be trusted: unreadable, or it names a process that is not ours."""


class StalePidFile(PidFileError):
    """The pid file named a process group now led by another program (removed, not signalled)."""


def _pid_file(run_dir: Path) -> Path:
    return run_dir / PID_FILE_NAME


def _identity(pid: int) -> dict:
    """What identifies a process beyond its (reusable) pid: command line and start time."""
    proc = psutil.Process(pid)
    return {"leader_cmdline": proc.cmdline(), "leader_create_time": proc.create_time()}


def _load_running(run_dir: Path) -> TorchServe | None:
    """The background server recorded in the run dir's pid file, if it is still that server.

    None when there is no pid file or the server is gone (the stale file is removed). Raises
    PidFileError, signalling nothing, when the file is unreadable or its process group is now
    led by another program (a reused pid).
    """
    path = _pid_file(run_dir)
    try:
        record = json.loads(path.read_text())
        pgid = int(record.pop("pgid"))
        expected = {k: record.pop(k) for k in ("leader_cmdline", "leader_create_time")}
        config = ServerConfig(**record)
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as exc:  # empty, truncated, edited, old format
        raise PidFileError(f"pid file {path} is unreadable ({type(exc).__name__}: {exc}); "
                           "nothing was signalled. If TorchServe still runs, stop it by hand "
                           "(see `ps -ef | grep torchserve`), then delete the file") from None
    try:
        actual = _identity(pgid)
    except psutil.NoSuchProcess:
        actual = None
    except psutil.AccessDenied:
        actual = {}
    if actual is None:
        path.unlink(missing_ok=True)  # stale: the leader is gone (TorchServe.stop kills groups)
        return None
    if actual.get("leader_cmdline") != expected["leader_cmdline"] or abs(
            actual.get("leader_create_time", 0) - expected["leader_create_time"]) > 0.01:
        path.unlink(missing_ok=True)
        now = " ".join(actual.get("leader_cmdline") or ["(a process we may not inspect)"])
        raise StalePidFile(f"pid file {path} was stale: process {pgid} is now {now[:120]!r}, "
                           "not the TorchServe it recorded; nothing was signalled and the file "
                           "was removed")  # fmt: skip
    return TorchServe(config, run_dir).attach(pgid)


def cmd_archive(args) -> int:
    try:
        mar = build_archive(args.artifact, args.model_store, version=args.version)
    except (ArchiveError, RuntimeError) as exc:
        print(f"archive failed: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {mar}")
    for name in archive_contents(mar):
        print(f"  {name}")
    return 0


def cmd_serve(args) -> int:
    run_dir = args.run_dir.resolve()
    try:
        running = _load_running(run_dir)
    except PidFileError as exc:
        print(f"warning: {exc}", file=sys.stderr)
        running = None
    if running is not None:
        print(f"TorchServe already running (pid {running.pid}) at {running.inference_url}; "
              "`python -m deploy stop` first")  # fmt: skip
        return 1
    run_dir.mkdir(parents=True, exist_ok=True)
    config = ServerConfig(model_store=args.model_store, inference_port=args.inference_port,
                          management_port=args.management_port, metrics_port=args.metrics_port)
    server = TorchServe(config, run_dir)
    try:
        server.start(timeout=args.timeout)
    except ServeError as exc:
        print(f"TorchServe failed to start:\n{exc}", file=sys.stderr)
        return 1
    record = {"pgid": server.pid, **_identity(server.pid), **dataclasses.asdict(config),
              "model_store": str(config.model_store)}  # fmt: skip
    _pid_file(run_dir).write_text(json.dumps(record, indent=2) + "\n")
    workers = server.workers()
    print(f"TorchServe is serving {MODEL_NAME} (pid {server.pid}, {len(workers)} worker(s))")
    print(f"  predict:    POST {server.predict_url}")
    print(f"  management: {server.management_url}   metrics: {server.metrics_url}/metrics")
    auth = f"on, keys in {server.key_file}" if config.token_auth else "OFF (LENET_TOKEN_AUTH=off)"
    print(f"  token auth: {auth}")
    print(f"  logs:       {run_dir / 'logs'}   stop with: make stop")
    return 0


def _running_or_say(
    run_dir: Path, command: str, when_none: int
) -> tuple[TorchServe | None, int]:
    """The background server of `run_dir` and 0; or None and the exit code `command` ends with,
    after a line saying why: `when_none` when none runs (a stale pid file is removed, nothing
    signalled), 1 for a pid file that cannot be trusted."""
    try:
        server = _load_running(run_dir)
    except StalePidFile as exc:
        print(f"no TorchServe running from {run_dir}: {exc}")
        return None, when_none
    except PidFileError as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return None, 1
    if server is None:
        print(f"no TorchServe running from {run_dir}")
        return None, when_none
    return server, 0


def cmd_stop(args) -> int:
    run_dir = args.run_dir.resolve()
    server, code = _running_or_say(run_dir, "stop", when_none=0)
    if server is None:
        return code
    pid = server.pid
    try:
        server.stop(timeout=args.timeout)
    except ServeError as exc:
        print(f"stop failed: {exc}", file=sys.stderr)
        return 1
    _pid_file(run_dir).unlink(missing_ok=True)
    print(f"TorchServe (pid {pid}) stopped; no process or port left")
    return 0


def cmd_status(args) -> int:
    server, code = _running_or_say(args.run_dir.resolve(), "status", when_none=1)
    if server is None:
        return code
    try:
        ping = requests.get(f"{server.inference_url}/ping", timeout=5,
                            headers=keys.auth_headers(server.inference_token))  # fmt: skip
        health = ping.json().get("status", ping.text) if ping.ok else f"HTTP {ping.status_code}"
        workers = server.workers()
    except Exception as exc:  # any failure to ask is itself the status to report
        print(f"TorchServe pid {server.pid} is running but not answering: {exc}")
        return 1
    print(f"TorchServe pid {server.pid} at {server.inference_url}: {health}")
    for w in workers:
        print(f"  worker {w['id']}: pid {w['pid']} {w['status']}")
    ready = health == "Healthy" and workers and all(w["status"] == "READY" for w in workers)
    return 0 if ready else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m deploy", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)
    fmt = argparse.ArgumentDefaultsHelpFormatter

    a = sub.add_parser("archive", help="build model_store/lenet.mar", formatter_class=fmt)
    where = a.add_argument_group("paths")
    where.add_argument("--artifact", type=Path, default=paths.DEFAULT_ARTIFACT,
                       help="TorchScript model")
    where.add_argument("--model-store", type=Path, default=paths.model_store(),
                       help="output dir (env LENET_MODEL_STORE)")
    a.add_argument("--version", help="model version (default: from the artifact's metadata)")
    a.set_defaults(func=cmd_archive)

    for name, func, text in (
        ("serve", cmd_serve, "start TorchServe in the background"),
        ("stop", cmd_stop, "stop the background TorchServe"),
        ("status", cmd_status, "health and workers of the background TorchServe"),
    ):
        p = sub.add_parser(name, help=text, formatter_class=fmt)
        where = p.add_argument_group("where")
        where.add_argument("--run-dir", type=Path, default=paths.run_dir(),
                           help="pid file, key file and logs (env LENET_RUN_DIR)")  # fmt: skip
        if name == "serve":
            where.add_argument("--model-store", type=Path, default=paths.model_store(),
                               help="directory holding lenet.mar")  # fmt: skip
            ports = p.add_argument_group("ports (127.0.0.1)")
            ports.add_argument("--inference-port", type=int, default=8080, help="predictions")
            ports.add_argument("--management-port", type=int, default=8081, help="management")
            ports.add_argument("--metrics-port", type=int, default=8082, help="Prometheus")
        if name != "status":
            p.add_argument("--timeout", type=float, default=180.0 if name == "serve" else 30.0,
                           help="seconds to wait for ready / for exit")  # fmt: skip
        p.set_defaults(func=func)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m deploy`."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "WARNING"), stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")  # fmt: skip
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
