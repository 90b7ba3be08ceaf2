"""`notify serve --workers N` with one SO_REUSEPORT socket per worker (issue 21: on one shared socket the
first worker to wake accepted a burst of keep-alive connections and the other idled).

Real processes on a free port, stopped by PID: the workers each listen (the parent holds no listening
socket that would take connections and never accept them), a port in use fails at once, and a worker
killed with SIGKILL leaves the survivor answering every new connection.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.servers import free_port, stop_process, wait_healthy

pytestmark = pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="needs SO_REUSEPORT (Linux)")


def _serve(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "notify_cli.stream_commands", "serve", "--data-dir",
                             str(data_dir), "--port", str(port), "--workers", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _children(pid: int) -> list[int]:
    return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _listening_inodes(port: int) -> set[str]:
    """Socket inodes in LISTEN state on ``port`` (IPv4, from /proc/net/tcp)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == "0A":
            found.add(fields[9])
    return found


def _socket_inodes(pid: int) -> set[str]:
    out = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(target[8:-1])
    return out


def test_each_worker_listens_on_its_own_socket_and_the_parent_on_none(tmp_path: Path) -> None:
    port = free_port()
    server = _serve(tmp_path, port)
    try:
        wait_healthy(server, f"http://127.0.0.1:{port}")
        workers = _children(server.pid)
        assert len(workers) == 2
        listening = _listening_inodes(port)
        assert len(listening) == 2  # one socket per worker in the port's reuseport group
        assert not _socket_inodes(server.pid) & listening
        assert all(len(_socket_inodes(w) & listening) == 1 for w in workers)
        with httpx.Client() as client:  # new connections spread over both: all answered
            assert all(client.get(f"http://127.0.0.1:{port}/healthz", headers={"connection": "close"}).status_code
                       == 200 for _ in range(20))
    finally:
        stop_process(server)


def test_a_port_in_use_fails_at_once(tmp_path: Path) -> None:
    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        server = _serve(tmp_path, taken.getsockname()[1])
        try:
            assert server.wait(60) != 0
        finally:
            stop_process(server)
    finally:
        taken.close()


def test_a_killed_worker_leaves_the_other_answering_every_new_connection(tmp_path: Path) -> None:
    port = free_port()
    server = _serve(tmp_path, port)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(server, base)
        victim = _children(server.pid)[0]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while len(_listening_inodes(port)) != 1 and time.monotonic() < deadline:  # the kernel drops its socket
            time.sleep(0.05)
        statuses = []
        for _ in range(40):  # fresh connections: none hashed to the dead worker's socket
            with httpx.Client() as client:
                statuses.append(client.get(f"{base}/healthz", timeout=10).status_code)
        assert statuses == [200] * 40
    finally:
        stop_process(server)
