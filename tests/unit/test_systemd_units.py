"""The one-machine systemd units (deploy/systemd/, notify_cli/systemd_units.py): valid for systemd, hardened, and
every unit's commands run as written.

This machine has no systemd as PID 1, so no unit is started by systemd here: ``systemd-analyze verify`` checks
each file as systemd would load it (keys, values, executables), ``systemd-analyze security --offline`` scores
its sandbox, and the test below runs each unit's ``ExecStartPre``/``ExecStart`` with the unit's environment
and working directory, checks that each process does its job (the API healthy, the worker, consumer and
backup holding the data directory's Store, the Dagster UI reporting the daemon's heartbeat over the same
instance), stops each with the unit's stop signal within its stop timeout, and restores the backup the
backup unit made, as the runbook says (stop the target, restore, start it).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections import defaultdict
from pathlib import Path

import httpx
import psutil
import pytest

from notify_cli import alarms
from notify_cli.systemd_units import DAGSTER_YAML, PROMETHEUS_YAML, TARGET, Layout, services, units
from notify_core.settings import NotifySettings, load_settings
from notify_core.sqlite_tx import OPEN_SUFFIX, lock_holders
from notify_core.store.adapter import build_adapter
from notify_core.stream import open_stream
from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None,
                                   reason="systemd-analyze not installed (scripts/setup.sh installs it)")
BASE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


def _render(tmp_path: Path, **layout: object) -> tuple[Layout, Path]:
    folder = tmp_path / "units"
    folder.mkdir()
    rendered = Layout(install_dir=ROOT, data_dir=tmp_path / "data", backup_dir=tmp_path / "backup",
                      units_dir=folder, **layout)  # type: ignore[arg-type]
    for name, text in units(rendered, repository_yaml=(ROOT / "dagster.yaml").read_text()).items():
        (folder / name).write_text(text)
    return rendered, folder


def _service_section(text: str) -> dict[str, list[str]]:
    keys: dict[str, list[str]] = defaultdict(list)
    section = ""
    for line in text.splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif section == "Service" and "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            keys[key].append(value)
    return keys


@needs_analyze
def test_every_unit_loads_in_systemd_without_a_warning(tmp_path: Path) -> None:
    _, folder = _render(tmp_path)
    names = sorted(p.name for p in folder.iterdir() if p.suffix in (".service", ".target"))
    assert TARGET in names and len(names) == len(services(Layout())) + 1
    out = subprocess.run([str(ANALYZE), "verify", *names], cwd=folder, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    broken = folder / "broken.service"  # the check is real: a misspelt key and a missing program are caught
    broken.write_text((folder / "notify-worker.service").read_text().replace("Restart=", "Restartt=")
                      .replace(str(ROOT / ".venv" / "bin" / "notify"), "/nonexistent/notify"))
    out = subprocess.run([str(ANALYZE), "verify", broken.name], cwd=folder, capture_output=True, text=True, timeout=60)
    assert "Unknown key" in out.stderr and "not executable" in out.stderr


@needs_analyze
def test_every_service_is_sandboxed(tmp_path: Path) -> None:
    """systemd's own exposure score (0 best, 10 worst; up to 3.9 it calls "OK"), per service."""
    _, folder = _render(tmp_path)
    for service in services(Layout()):
        out = subprocess.run([str(ANALYZE), "security", "--offline=true", f"{service.name}.service"], cwd=folder,
                             capture_output=True, text=True, timeout=60)
        found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out.stdout)
        assert found is not None, out.stdout[-2000:] + out.stderr
        assert float(found.group(1)) <= 2.5, (service.name, found.group(1))


def test_the_committed_units_are_what_the_code_renders() -> None:
    out = subprocess.run([str(ROOT / ".venv" / "bin" / "notify"), "templates", "--check"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    committed = (ROOT / "deploy" / "systemd" / "notify-worker.service").read_text()
    assert "User=notify" in committed and "StateDirectory=notify" in committed
    assert "Environment=NOTIFY_DATA_DIR=/var/lib/notify" in committed and "Restart=on-failure" in committed


def _start(keys: dict[str, list[str]], *, home: Path) -> subprocess.Popen[bytes]:
    env = {**BASE_ENV, "HOME": str(home)}  # systemd's HOME for User=: the README's user has the data directory
    for assignment in keys["Environment"]:
        name, value = shlex.split(assignment)[0].split("=", 1)
        env[name] = value
    umask = int(keys["UMask"][0], 8)
    for command in keys.get("ExecStartPre", []):
        subprocess.run(shlex.split(command), cwd=keys["WorkingDirectory"][0], env=env, check=True, timeout=60,
                       preexec_fn=lambda: os.umask(umask))
    return subprocess.Popen(shlex.split(keys["ExecStart"][0]), cwd=keys["WorkingDirectory"][0], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=lambda: os.umask(umask))


def _wait(check: object, *, what: str, process: subprocess.Popen[bytes], timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():  # type: ignore[operator]
                return
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            pytest.fail(f"{what} exited {process.returncode}: {process.stderr.read()[-3000:]!r}")  # type: ignore[union-attr]
        assert time.monotonic() < deadline, f"{what} not ready in {timeout} s"
        time.sleep(0.5)


def _in_start_order(folder: Path, keys: dict[str, dict[str, list[str]]]) -> list[str]:
    """The services in an order their ``After=`` allows (each ``ExecStartPre`` runs to its end before the next
    unit starts, as systemd does for a ``Type=exec`` unit ordered after it)."""
    after = {}
    for name in keys:
        unit = (folder / f"{name}.service").read_text()
        found = re.search(r"^After=(.*)$", unit, flags=re.MULTILINE)
        after[name] = {dep.removesuffix(".service") for dep in (found.group(1).split() if found else [])} & set(keys)
    order: list[str] = []
    while len(order) < len(keys):
        ready = [name for name in keys if name not in order and after[name] <= set(order)]
        assert ready, f"a cycle in After=: {after}"
        order += ready
    # one unit creates (and migrates) the instance before the other starts: started together on a new instance
    # they raced to create its tables, and the daemon died
    assert "notify-dagster-daemon" in after["notify-dagster-webserver"]
    assert any(pre.endswith("dagster instance migrate") for pre in keys["notify-dagster-daemon"]["ExecStartPre"])
    return order


def _group_gone(pgid: int, *, deadline: float) -> None:
    """Until no process of the group is left (a Dagster code server outlives its parent by a moment); what is
    left at ``deadline`` is killed, as systemd kills what remains of a unit at its stop timeout."""
    def alive() -> list[psutil.Process]:
        found = []
        for process in psutil.process_iter():
            with contextlib.suppress(psutil.Error):
                if os.getpgid(process.pid) == pgid and process.status() != psutil.STATUS_ZOMBIE:
                    found.append(process)
        return found

    while (left := alive()) and time.monotonic() < deadline:
        time.sleep(0.1)
    for process in left:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(left, timeout=10)


def _prometheus_scrapes_every_target(layout: Layout, folder: Path, tmp_path: Path) -> None:
    """A real Prometheus (the binary ``scripts/setup.sh`` unpacks) with the rendered ``prometheus.yml``: the
    configuration and its alert rules load, and every target the units serve is up."""
    promtool = alarms.promtool()
    if promtool is None:
        return  # setup could not unpack Debian's prometheus package: test_slo says so too
    config = folder / PROMETHEUS_YAML
    checked = subprocess.run([promtool, "check", "config", str(config)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0 and "SUCCESS" in checked.stdout, checked.stdout + checked.stderr
    port = free_port()
    server = subprocess.Popen([str(Path(promtool).with_name("prometheus")), f"--config.file={config}",
                               f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def all_up() -> bool:
            answer = httpx.get(f"http://127.0.0.1:{port}/api/v1/targets", timeout=5)
            if answer.status_code != 200:  # still starting: 503 in plain text
                return False
            targets = answer.json()["data"]["activeTargets"]
            return len(targets) == 4 and all(t["health"] == "up" for t in targets)
        _wait(all_up, what="Prometheus scraping the units' four targets", process=server, timeout=60)
        rules = httpx.get(f"http://127.0.0.1:{port}/api/v1/rules", timeout=5).json()["data"]["groups"]
        assert sum(len(group["rules"]) for group in rules) > 0
    finally:
        server.terminate()
        server.wait(30)


def _daemon_heartbeat_seen(webserver: str) -> bool:
    query = "{ instance { daemonHealth { allDaemonStatuses { daemonType healthy } } } }"
    reply = httpx.post(f"{webserver}/graphql", json={"query": query}, timeout=10)
    if reply.status_code != 200:
        return False
    statuses = reply.json()["data"]["instance"]["daemonHealth"]["allDaemonStatuses"]
    return any(s["daemonType"] == "SENSOR" and s["healthy"] for s in statuses)


def test_each_units_commands_run_as_written_stop_on_its_signal_and_the_runbooks_restore_works(
        tmp_path: Path) -> None:
    layout, folder = _render(tmp_path, serve_port=free_port(), webserver_port=free_port(),
                             consumer_metrics_port=free_port(), worker_metrics_port=free_port(),
                             backup_metrics_port=free_port())
    keys = {s.name: _service_section((folder / f"{s.name}.service").read_text()) for s in services(layout)}
    store = layout.data_dir / "store.sqlite"
    running: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name in _in_start_order(folder, keys):
            running[name] = _start(keys[name], home=layout.data_dir)
        serve, web = running["notify-serve"], running["notify-dagster-webserver"]
        _wait(lambda: httpx.get(f"http://127.0.0.1:{layout.serve_port}/healthz", timeout=2).status_code == 200,
              what="notify-serve", process=serve)
        for name in ("notify-worker", "notify-consume", "notify-backup"):
            process = running[name]
            _wait(lambda p=process: store.exists() and p.pid in lock_holders(Path(f"{store}{OPEN_SUFFIX}")),
                  what=name, process=process)
        for name, port in (("notify-worker", layout.worker_metrics_port),
                           ("notify-consume", layout.consumer_metrics_port),
                           ("notify-backup", layout.backup_metrics_port)):
            _wait(lambda port=port: httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200,
                  what=f"{name}'s /healthz", process=running[name])
            assert "notify_" in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        # the backup's replicas keep up with their databases: the gauge the backup alert reads says 0
        _wait(lambda: 'notify_backup_replica_behind_seconds{database="store"} 0.0' in httpx.get(
            f"http://127.0.0.1:{layout.backup_metrics_port}/metrics", timeout=5).text,
              what="the backup's replica gauge", process=running["notify-backup"])
        webserver = f"http://127.0.0.1:{layout.webserver_port}"
        _wait(lambda: httpx.get(f"{webserver}/server_info", timeout=2).status_code == 200, what="the Dagster UI",
              process=web)
        _wait(lambda: _daemon_heartbeat_seen(webserver), what="the Dagster daemon's heartbeat",
              process=running["notify-dagster-daemon"])
        _prometheus_scrapes_every_target(layout, folder, tmp_path)
        assert (layout.dagster_home / DAGSTER_YAML).stat().st_mode & 0o777 == 0o600
        assert (layout.data_dir / "dagster" / "storage").is_dir()  # the instance under the data directory
        modes = {oct(p.stat().st_mode & 0o777) for p in layout.data_dir.rglob("*") if p.is_file()}
        assert modes <= {"0o600"}, modes  # UMask=0077: every file the services wrote is the user's alone
    finally:
        stopped = {}
        for process in running.values():  # `systemctl stop notify.target`: each gets SIGTERM
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for name, process in running.items():
            limit = float(keys[name]["TimeoutStopSec"][0])
            started = time.monotonic()
            try:
                process.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)  # what systemd does at TimeoutStopSec
                process.wait()
            stopped[name] = (process.returncode, round(time.monotonic() - started, 1))
            _group_gone(process.pid, deadline=started + limit)  # systemd waits for the unit's whole cgroup
    for name, (code, _seconds) in stopped.items():
        assert code in (0, -signal.SIGTERM), (name, stopped, running[name].stderr.read()[-2000:])  # type: ignore[union-attr]

    # the runbook: with the target stopped, the backup the backup unit made restores
    env = {**BASE_ENV, "NOTIFY_ENV": "local", "NOTIFY_DATA_DIR": str(layout.data_dir)}
    out = subprocess.run([str(ROOT / ".venv" / "bin" / "notify"), "restore", "--from", str(layout.backup_dir),
                          "--force"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout)["databases"]["store"] == "restored"


def _synchronous(settings: NotifySettings) -> tuple[int, int]:
    """``PRAGMA synchronous`` of the stream log and of the Store (adapter, and as the plan writer process opens it
    again) the commands open (1 NORMAL, 2 FULL)."""
    stream, store = open_stream(settings), build_adapter(settings)
    try:
        elsewhere = store.reopener()(clock=settings.clock())  # type: ignore[attr-defined]  # the plan writer's
        levels = {store.connection().execute("PRAGMA synchronous").fetchone()[0],  # type: ignore[attr-defined]
                  elsewhere.connection().execute("PRAGMA synchronous").fetchone()[0]}
        elsewhere.close()
        assert len(levels) == 1
        return (stream._conn().execute("PRAGMA synchronous").fetchone()[0],  # type: ignore[attr-defined]
                levels.pop())
    finally:
        stream.close()
        store.close()


def test_the_units_fsync_the_logs_and_the_stores_commits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the API answered 2xx for must survive a power cut on one machine, not only a killed process: the
    units' environment, read as every command reads it, opens the log and the Store with ``synchronous=FULL``."""
    layout, folder = _render(tmp_path)
    for assignment in _service_section((folder / "notify-serve.service").read_text())["Environment"]:
        name, value = shlex.split(assignment)[0].split("=", 1)
        monkeypatch.setenv(name, value)
    assert _synchronous(load_settings()) == (2, 2)
    monkeypatch.delenv("NOTIFY_STREAM_FSYNC")
    monkeypatch.delenv("NOTIFY_STORE_FSYNC")
    assert _synchronous(load_settings()) == (1, 1)  # the embedded default without the units: a kill -9 only


def test_a_refusal_stops_the_unit_instead_of_restarting_it(tmp_path: Path) -> None:
    """``notify backup``, as its unit runs it, on a data directory wiped while the backup target still holds its
    replica: it refuses with exit 2 (``notify restore`` first), and exit 2 is the one code the units never restart
    on, so the supervisor does not replace the good backup nor loop every 5 s."""
    layout, folder = _render(tmp_path)
    keys = _service_section((folder / "notify-backup.service").read_text())
    assert keys["RestartPreventExitStatus"] == ["2"] and keys["Restart"] == ["on-failure"]
    first = _start(keys, home=layout.data_dir)  # a first backup of a new data directory, then stopped
    store = layout.data_dir / "store.sqlite"
    _wait(lambda: any((layout.backup_dir / "store").rglob("*.ltx")), what="the first backup", process=first)
    os.killpg(first.pid, signal.SIGTERM)
    assert first.wait(float(keys["TimeoutStopSec"][0])) == 0
    shutil.rmtree(layout.data_dir)  # the disk lost; the supervisor starts the backup again
    again = _start(keys, home=layout.data_dir)
    _out, err = again.communicate(timeout=120)
    assert again.returncode == 2 and b"notify restore" in err, err[-2000:]
    assert not store.exists()  # nothing replicated over the good backup
