"""`make dev` (scripts/dagster_dev.sh -> `dagster dev -w workspace.yaml`) starts, loads the Definitions,
serves the asset graph (GraphQL), leaves nothing in the repo root and stops on SIGTERM."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
QUERY = "{ assetNodes { assetKey { path } groupName dependencyKeys { path } } }"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _diagnose(pid: int) -> str:
    """The script's state and its children (signal masks, what each waits on), for a failure message: the
    script has twice not stopped on SIGTERM inside the full suite only, never alone (see the closing note)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        status = ""
    signals = " ".join(line for line in status.splitlines() if line.startswith(("State", "SigBlk", "SigIgn", "SigCgt")))
    tree = subprocess.run(["ps", "-o", "pid,pgid,stat,wchan:24,cmd", "--ppid", str(pid)],
                          capture_output=True, text=True, check=False).stdout
    return f"{signals}\n{tree}"


def _default_signals() -> None:
    """Start the script as a shell or supervisor would, with TERM/INT/HUP/QUIT at their defaults. A suite
    started in the background inherits some of them ignored (``nohup`` ignores HUP, a non-interactive shell's
    ``&`` job INT and QUIT: SigIgn 0x181001007 measured for ``(nohup .ci/run &)``), a shell cannot trap a
    signal ignored on entry, and the script then never saw SIGTERM. No test changes them (the signal guard
    in conftest.py checks every test)."""
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(signum, signal.SIG_DFL)


def _child_groups(pid: int) -> set[int]:
    """The process groups of ``pid``'s children (dagster dev leads its own, see the script's ``set -m``)."""
    out = subprocess.run(["ps", "-o", "pgid=", "--ppid", str(pid)], capture_output=True, text=True, check=False).stdout
    return {int(group) for group in out.split()}


def test_dagster_dev_shows_the_asset_graph(tmp_path: Path) -> None:
    port = _free_port()
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\nnux:\n  enabled: false\n")
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "NOTIFY_DATA_DIR": str(tmp_path / "data")}
    before = {p.name for p in REPO.iterdir()}
    proc = subprocess.Popen(
        [str(REPO / "scripts" / "dagster_dev.sh"), "-h", "127.0.0.1", "-p", str(port), "-w", "workspace.yaml"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        preexec_fn=_default_signals,
    )
    try:
        deadline = time.monotonic() + 90
        nodes = None
        while time.monotonic() < deadline and nodes is None:
            time.sleep(1)
            assert proc.poll() is None, "dagster dev exited early"
            try:
                reply = httpx.post(f"http://127.0.0.1:{port}/graphql", json={"query": QUERY}, timeout=5)
                body = reply.json()
                if reply.status_code == 200 and body.get("data", {}).get("assetNodes"):
                    nodes = body["data"]["assetNodes"]
            except (httpx.HTTPError, ValueError):
                continue
        assert nodes is not None, "dagster dev did not serve the asset graph within 90 s"
        graph = {"/".join(n["assetKey"]["path"]): {"/".join(d["path"]) for d in n["dependencyKeys"]} for n in nodes}
        assert {"online_retail_landing", "users", "products", "campaigns", "purchases", "user_features",
                "product_features", "user_product"} <= set(graph)
        assert graph["purchases"] == {"online_retail_landing"}
        assert {"users", "products", "purchases"} <= graph["user_features"]
        proc.send_signal(signal.SIGTERM)  # the script only, as a supervisor would
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            pytest.fail(f"scripts/dagster_dev.sh did not stop within 40 s of SIGTERM: {_diagnose(proc.pid)}")
        with pytest.raises(httpx.HTTPError):
            httpx.post(f"http://127.0.0.1:{port}/graphql", json={"query": QUERY}, timeout=5)
        assert not {"logs", ".logs_queue"} & ({p.name for p in REPO.iterdir()} - before)
    finally:
        if proc.poll() is None:
            # dagster dev runs in a process group of its own (the script's `set -m`): killing the script's
            # group would orphan it. SIGTERM makes the script stop that group; SIGKILL only as a last resort.
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:  # the script's group and dagster's own, so nothing outlives the test
                for group in _child_groups(proc.pid) | {proc.pid}:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(group, signal.SIGKILL)
                proc.wait(timeout=10)


def test_make_dev_and_make_demo_open_the_same_instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README: `make dev` is the UI "over the same instance `make demo` writes to". `make demo` sets
    DAGSTER_HOME to the repo root; the script uses .notify/dagster_home with a link to the repo's
    dagster.yaml. Both must resolve the storage to the same .notify/dagster folders (its paths are relative
    to the working directory, the repo root for both), or the UI would show none of `notify run`'s runs."""
    from dagster import DagsterInstance

    script = (REPO / "scripts" / "dagster_dev.sh").read_text()
    assert "home=.notify/dagster_home" in script and 'ln -sfn ../../dagster.yaml "$home/dagster.yaml"' in script
    assert "DAGSTER_HOME=$(CURDIR) $(VENV)/bin/notify run" in (REPO / "Makefile").read_text()
    root = tmp_path / "repo"  # a copy of the layout, so the test writes nothing under the real repo
    (root / ".notify" / "dagster_home").mkdir(parents=True)
    (root / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    (root / ".notify" / "dagster_home" / "dagster.yaml").symlink_to("../../dagster.yaml")
    monkeypatch.chdir(root)
    seen = []
    for home in (root, root / ".notify" / "dagster_home"):  # make demo's, make dev's
        instance = DagsterInstance.from_config(str(home))
        try:
            seen.append((str(instance.run_storage._conn_string),
                         os.path.abspath(instance._local_artifact_storage.base_dir)))
        finally:
            instance.dispose()
    assert seen[0] == seen[1], seen
    assert seen[0][0].endswith("/repo/.notify/dagster/storage/history/runs.db")
