"""The deployed pods as an operator runs them: what Prometheus can scrape, what the containers may do.

Found by the session-40 audit of the deploy templates (docs/audit-findings.md): each test here failed on the
templates as they were.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from notify_cli import deploy_templates
from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[2]


def _consumer_container() -> dict[str, Any]:
    [container] = deploy_templates.consumer_manifest()["spec"]["template"]["spec"]["containers"]
    assert isinstance(container, dict)
    return container


def test_the_consumer_pod_serves_its_metrics_on_an_address_prometheus_can_reach(tmp_path: Path) -> None:
    """Prometheus scrapes a pod at its IP. The consumer Deployment's own command, run here, must answer on an
    address other than 127.0.0.1 (127.0.0.2 stands for the pod IP): it used to bind loopback only, so the
    consumer-lag and pipeline-success rules never had a series to read."""
    command = list(_consumer_container()["command"])
    assert command[:2] == ["notify", "consume"]
    port = free_port()
    command[command.index("--metrics-port") + 1] = str(port)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFY_")} | {"NOTIFY_ENV": "local"}
    consumer = subprocess.Popen(
        [sys.executable, "-m", "notify_cli.stream_commands", *command[1:], "--data-dir", str(tmp_path),
         "--idle-exit", "60"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        body, deadline = "", time.monotonic() + 30
        while time.monotonic() < deadline and consumer.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.2:{port}/metrics", timeout=2) as answer:
                    body = answer.read().decode()
                break
            except OSError:
                time.sleep(0.2)
        assert "notify_consumer_lag_seconds" in body, "the consumer's metrics are not reachable off loopback"
        # and the liveness probe, as the manifest asks it, finds the consumer turning
        probe = _consumer_container()["livenessProbe"]["httpGet"]
        with urllib.request.urlopen(f"http://127.0.0.2:{port}{probe['path']}", timeout=2) as answer:
            assert (answer.status, answer.read()) == (200, b"ok\n")
    finally:
        if consumer.poll() is None:
            consumer.send_signal(signal.SIGTERM)
            try:
                consumer.wait(30)
            except subprocess.TimeoutExpired:
                consumer.kill()
                consumer.wait()


# -- the app image's pods: an unprivileged user, no capabilities, and (the consumer) a read-only root ---------
APP_DOCKERFILE = ROOT / deploy_templates.APP_IMAGE


def _dockerfile(word: str) -> list[str]:
    text = APP_DOCKERFILE.read_text().replace("\\\n", " ")
    return [line.strip().partition(" ")[2].strip() for line in text.splitlines()
            if line.strip().upper().startswith(word + " ")]


def _image_env() -> dict[str, str]:
    return dict(item.split("=", 1) for args in _dockerfile("ENV") for item in shlex.split(args))


def _as_the_pod(command: list[str], *, writable: list[str], env: dict[str, str], timeout: float
                ) -> subprocess.CompletedProcess[str]:
    """Run ``command`` with the root filesystem read-only and an empty tmpfs at each ``writable`` path, as a
    container with ``readOnlyRootFilesystem`` and emptyDir volumes there sees it (a private mount namespace:
    nothing outside this process changes)."""
    mounts = "".join(f" && mount -t tmpfs tmpfs {shlex.quote(path)}" for path in writable)
    script = f'mount --bind / / && mount -o remount,bind,ro /{mounts} && cd {shlex.quote(str(ROOT))} && exec "$@"'
    try:
        return subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", *command], env=env, capture_output=True,
                              text=True, timeout=timeout)
    except FileNotFoundError as exc:  # a missing prerequisite fails, never skips
        raise AssertionError("unshare (util-linux) is needed to run a pod's command on a read-only root") from exc


def _pod_env(extra: dict[str, str]) -> dict[str, str]:
    """This interpreter's environment with the image's ENV, run locally (embedded log and Store)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFY_") and k != "DAGSTER_HOME"}
    return base | _image_env() | {"PYTHONPATH": str(ROOT), "NOTIFY_ENV": "local"} | extra


def test_our_pods_run_as_the_images_unprivileged_user_without_capabilities() -> None:
    uid, _, gid = _dockerfile("USER")[-1].partition(":")
    values = deploy_templates.dagster_values()
    [code_server] = values["dagster-user-deployments"]["deployments"]
    run_pods = values["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]
    consumer_pod = deploy_templates.consumer_manifest()["spec"]["template"]["spec"]
    pods = {"consumer": consumer_pod["securityContext"], "code server": code_server["podSecurityContext"],
            "run pods": run_pods["podSpecConfig"]["securityContext"]}
    containers = {"consumer": _consumer_container()["securityContext"], "code server": code_server["securityContext"],
                  "run pods": run_pods["containerConfig"]["securityContext"]}
    for name, pod in pods.items():
        assert pod["runAsNonRoot"] is True, name
        assert (str(pod["runAsUser"]), str(pod["runAsGroup"])) == (uid, gid) and int(uid) > 0, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
    for name, container in containers.items():
        assert container["allowPrivilegeEscalation"] is False, name
        assert container["capabilities"]["drop"] == ["ALL"] and "add" not in container["capabilities"], name
    assert containers["consumer"]["readOnlyRootFilesystem"] is True
    assert _consumer_container()["resources"]["limits"]["memory"]
    volumes = {v["name"]: v for v in consumer_pod["volumes"]}
    assert all("emptyDir" in volumes[m["name"]] for m in _consumer_container()["volumeMounts"])


def test_the_consumer_command_runs_on_a_read_only_root_with_only_its_volumes_writable() -> None:
    """The Deployment's command, with the image's ENV, where only its emptyDir mounts are writable: it used to
    have no such volume, and the image no data directory outside the root-owned WORKDIR."""
    container = _consumer_container()
    command = list(container["command"])
    command[command.index("--metrics-port") + 1] = "0"
    writable = [m["mountPath"] for m in container.get("volumeMounts", [])]
    done = _as_the_pod([sys.executable, "-m", "notify_cli.stream_commands", *command[1:], "--idle-exit", "1"],
                       writable=writable, env=_pod_env({}), timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert '"lag": 0' in done.stdout, done.stdout


def test_the_code_location_loads_where_only_the_images_scratch_is_writable() -> None:
    """The app image runs as uid 10001 in a WORKDIR root owns: loading the definitions writes the data
    directory (``deployed_on``), which used to default to ``.notify`` in that WORKDIR (EACCES in the pod; the
    existing code-server test passed NOTIFY_DATA_DIR itself, so it never saw it). Here everything but /tmp
    (writable for every user in the image) is read-only."""
    load = "import notify_assets.definitions as m; m.defs.load_fn(); print('loaded')"
    done = _as_the_pod([sys.executable, "-W", "ignore", "-c", load], writable=["/tmp"], env=_pod_env({}),
                       timeout=180)
    assert done.returncode == 0 and "loaded" in done.stdout, done.stderr[-3000:]
