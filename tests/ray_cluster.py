"""A real Ray cluster on this machine, for tests/integration/test_batch_ray.py: `RayCluster` starts
a head and a worker node, each a `ray start --block` process group (`RayNode`) on its own loopback
address (127.0.0.2, 127.0.0.3) with every port chosen free, its own temp dir, and token
authentication with a token of its own; `stop()` ends every process a node started, and the
caller checks with `alive` and `listening_ports` that nothing is left.

Nothing here imports Ray: the nodes are the `ray` CLI beside this interpreter, so that the test
module decides whether Ray is there (it skips without the extra).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

RAY = Path(sys.executable).with_name("ray")
START_TIMEOUT_S = 120


def free_ports(n: int) -> list[int]:
    """`n` distinct ports that are free on loopback right now."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class RayNode:
    """One `ray start --block` (its own process group): a head or a worker node."""

    def __init__(self, temp_dir: Path, ip: str, head_address: str | None, env: dict,
                 log: Path) -> None:  # fmt: skip
        self.temp_dir, self.ip = temp_dir, ip
        names = ("port", "ray-client-server-port", "dashboard-port", "node-manager-port",
                 "object-manager-port", "metrics-export-port", "runtime-env-agent-port",
                 "dashboard-agent-listen-port", "dashboard-agent-grpc-port")  # fmt: skip
        self.ports = dict(zip(names, free_ports(len(names)), strict=True))
        if head_address is None:
            role = ["--head", "--include-dashboard", "false"]
            self.address = f"{ip}:{self.ports['port']}"
        else:  # a worker node has no GCS, client server or dashboard of its own
            role = ["--address", head_address]
            for name in ("port", "ray-client-server-port", "dashboard-port"):
                del self.ports[name]
            self.address = head_address
        command = [str(RAY), "start", "--block", *role, "--node-ip-address", ip,
                   "--num-cpus", "1", "--num-gpus", "0", "--temp-dir", str(temp_dir),
                   "--object-store-memory", str(200 * 2**20), "--disable-usage-stats",
                   # Workers bind ports the kernel picks (0), so none can collide.
                   "--min-worker-port", "0", "--max-worker-port", "0"]  # fmt: skip
        for name, port in self.ports.items():
            command += [f"--{name}", str(port)]
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True, env=env)  # fmt: skip

    def processes(self) -> list[psutil.Process]:
        """Every live process of this node: its process group, anything naming its temp dir,
        and their descendants (Ray Data's helper actors run in process groups of their own).
        Zombies waiting for init to reap them hold nothing and are not counted."""
        found = {}
        for p in psutil.process_iter(["pid", "cmdline"]):
            try:
                if (os.getpgid(p.pid) == self.proc.pid
                        or str(self.temp_dir) in " ".join(p.info["cmdline"] or ())):
                    found[p.pid] = p
                    found.update((c.pid, c) for c in p.children(recursive=True))
            except (ProcessLookupError, psutil.Error):
                continue
        return [p for p in found.values() if alive(p)]

    def raylet(self) -> psutil.Process:
        return next(p for p in self.processes() if p.name() == "raylet")

    def stop(self, grace_s: float = 3.0) -> list[psutil.Process]:
        """SIGTERM the node's processes, then SIGKILL any still there; returns all it saw.

        This is `ray stop --force` for this node only (`ray stop` would stop every Ray process
        of the host, other users' clusters included).
        """
        seen = {p.pid: p for p in self.processes()}
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for p in list(seen.values()):
                try:
                    p.send_signal(sig)
                except psutil.Error:
                    pass
            gone_by = time.monotonic() + grace_s
            while time.monotonic() < gone_by:
                seen.update((p.pid, p) for p in self.processes())  # children forked meanwhile
                if not any(alive(p) for p in seen.values()):
                    break
                time.sleep(0.2)
        self.proc.wait(timeout=30)
        return list(seen.values())


class RayCluster:
    """A head and worker nodes on this machine; `stop()` leaves nothing behind."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.nodes: list[RayNode] = []
        # Token authentication with a token of this cluster's own, passed to each node and
        # driver (the job included) in the environment, as Ray documents it.
        self.env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
                    "RAY_USAGE_STATS_ENABLED": "0"}  # fmt: skip

    def start(self) -> RayCluster:
        """The head, then (once its GCS answers) one worker node."""
        self.head = self._start(None)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:  # a driver asking a GCS that is not up yet would wait for minutes
            try:
                socket.create_connection((self.head.ip, self.head.ports["port"]), 1).close()
                break
            except OSError:
                assert self.head.proc.poll() is None, self.log(0)
                assert time.monotonic() < deadline, "the head's GCS never listened"
                time.sleep(0.5)
        self.wait_for_nodes(1)
        self.worker = self.add_worker()
        return self

    def _start(self, head_address: str | None) -> RayNode:
        n = len(self.nodes)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        node = RayNode(self.root / f"n{n}", f"127.0.0.{n + 2}", head_address,
                       {**env, **self.env}, self.root / f"node{n}.log")  # fmt: skip
        self.nodes.append(node)
        return node

    def add_worker(self) -> RayNode:
        node = self._start(self.head.address)
        self.wait_for_nodes(sum(1 for n in self.nodes if n.proc.poll() is None))
        return node

    def alive_nodes(self) -> list[dict]:
        """The nodes the head's GCS says are alive, asked by a driver of its own."""
        code = ("import json, sys, ray; ray.init(address=sys.argv[1], logging_level='ERROR'); "
                "print(json.dumps([n for n in ray.nodes() if n['Alive']]))")
        out = subprocess.run([sys.executable, "-c", code, self.head.address], capture_output=True,
                             text=True, timeout=120, env={**os.environ, **self.env})  # fmt: skip
        return json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else []

    def wait_for_nodes(self, count: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while len(self.alive_nodes()) < count:
            assert self.head.proc.poll() is None, self.log(0)
            assert time.monotonic() < deadline, (
                f"{count} Ray nodes not up in time: {self.log(len(self.nodes) - 1)}")
            time.sleep(1)

    def log(self, n: int) -> str:
        return (self.root / f"node{n}.log").read_text(errors="replace")[-2000:]

    def ports(self) -> set[int]:
        return {port for node in self.nodes for port in node.ports.values()}

    def stop(self) -> list[psutil.Process]:
        """Stop every node; returns every process seen on the way (for the leftover check)."""
        return [p for node in reversed(self.nodes) for p in node.stop()]


def listening_ports() -> set[int]:
    return {c.laddr.port for c in psutil.net_connections("tcp") if c.status == "LISTEN"}
