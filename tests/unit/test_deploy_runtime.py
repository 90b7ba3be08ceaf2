"""The deployed pods as an operator runs them: what Prometheus can scrape, what the containers may do.

Found by the session-40 audit of the deploy templates (docs/audit-findings.md): each test here failed on the
templates as they were.
"""

from __future__ import annotations

import os
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
    finally:
        if consumer.poll() is None:
            consumer.send_signal(signal.SIGTERM)
            try:
                consumer.wait(30)
            except subprocess.TimeoutExpired:
                consumer.kill()
                consumer.wait()
