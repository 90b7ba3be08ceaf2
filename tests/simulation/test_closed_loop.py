"""The closed-loop simulator (issue 19, item 7): real planner, worker, tracking and consumer in the loop."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from notify_cli.main import app
from notify_core.clock import ManualClock
from notify_core.errors import ValidationError
from notify_core.lifecycle import DELIVERED_STATES
from notify_core.simulation import SimOptions, run_policy, simulate
from notify_core.simulation.closed_loop import build_world, markdown_table
from notify_core.store import tables
from notify_core.store.sqlite import SqliteStore
from tests.retail_fixture import generated_retail

REAL = Path(__file__).resolve().parents[2] / "../shared/data/online_retail/online_retail.parquet"


def _check_loop(workdir: Path, policy: str, result: object) -> None:
    """Invariants at the end of a run, read back from the policy's own Store."""
    from notify_core.simulation.closed_loop import SimResult

    assert isinstance(result, SimResult)
    store = SqliteStore(workdir / policy / "store.sqlite", clock=ManualClock(0))
    try:
        stored_clicks = sum(int(r.get("clicked") or 0) for r in store.table(tables.CAMPAIGN_STATS).scan())
        stored_sent = sum(int(r.get("sent") or 0) for r in store.table(tables.CAMPAIGN_STATS).scan())
        # every click the users made went through tracking -> campaign_stats (unique clicks)
        assert stored_clicks == sum(d.clicks for d in result.days)
        assert stored_sent == sum(d.delivered for d in result.days)
        for d in result.days:  # nothing planned was stranded: the worker delivered the whole day
            assert d.delivered == d.planned and d.failed == 0, d
        # an opted-out user is never planned again
        for user, day in result.opted_out.items():
            later = [i for i in store.table(tables.PLANS).query(user) if str(i["plan_day"]) > day]
            assert later == [], (user, day)
        # the consumer wrote every click as a user event: what the next plan's history and fatigue read
        clicks = [e for e in store.table(tables.USER_EVENTS).scan() if e.get("type") == "notification_click"]
        assert len(clicks) == stored_clicks
        sent_items = [i for i in store.table(tables.PLANS).scan() if i.get("status") in DELIVERED_STATES]
        assert len(sent_items) == stored_sent
    finally:
        store.close()


def test_a_short_loop_on_a_generated_export(tmp_path: Path) -> None:
    source = generated_retail(tmp_path / "retail.parquet", invoices=1500)
    options = SimOptions(users=15, days=2, campaigns=6, ctr_max=0.9)
    world = build_world(source, options=options)
    result = run_policy(world, "notify", workdir=tmp_path / "sim", options=options)
    assert [d.day for d in result.days] == ["2026-01-05", "2026-01-06"]
    assert result.days[0].delivered > 0 and sum(d.clicks for d in result.days) > 0
    _check_loop(tmp_path / "sim", "notify", result)
    # a second run into the same folder (e.g. after a killed one) is refused, never mixed with the old Store
    with pytest.raises(ValidationError, match="earlier simulation"):
        run_policy(world, "notify", workdir=tmp_path / "sim", options=options)


def test_bad_input_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError):
        SimOptions(daily_cap=9)
    source = generated_retail(tmp_path / "retail.parquet", invoices=300)
    options = SimOptions(users=5, days=1, campaigns=4)
    with pytest.raises(ValidationError):
        run_policy(build_world(source, options=options), "spam-everyone", workdir=tmp_path, options=options)
    reply = CliRunner().invoke(app, ["simulate", "--source", str(tmp_path / "missing.parquet"), "--users", "5",
                                     "--days", "1", "--output", str(tmp_path / "out.json")])
    assert reply.exit_code == 2 and "error" in reply.output and not (tmp_path / "out.json").exists()


@pytest.mark.slow
def test_three_policies_on_the_real_purchases(tmp_path: Path) -> None:
    if not REAL.exists():
        pytest.skip("the shipped Online Retail file is not here")
    options = SimOptions(users=200, days=7)
    report = simulate(REAL, workdir=tmp_path, options=options)
    totals = {name: r["totals"] for name, r in report["policies"].items()}
    assert set(totals) == {"notify", "cap_and_drop", "random"}
    for name, t in totals.items():
        assert t["delivered"] > 0 and t["failed"] == 0, name
    # the personalised policy beats random on CTR under the model (its relevance tracks the preferences)
    assert totals["notify"]["ctr"] > totals["random"]["ctr"]
    assert "| notify |" in markdown_table(report)


def test_a_killed_run_is_never_mixed_into_the_next(tmp_path: Path) -> None:
    """kill -9 mid-way: the folder it leaves is refused (exit 2); a fresh folder runs to the end."""
    import signal
    import subprocess
    import sys
    import time

    source = generated_retail(tmp_path / "retail.parquet", invoices=1500)
    args = [sys.executable, "-m", "notify_cli.main", "simulate", "--source", str(source), "--users", "15",
            "--campaigns", "6", "--policy", "notify"]
    work = tmp_path / "work"
    private_tmp = tmp_path / "tmp"  # the killed run must leave nothing in TMPDIR: its folder is --workdir
    private_tmp.mkdir()
    proc = subprocess.Popen([*args, "--days", "30", "--workdir", str(work), "--output", str(tmp_path / "a.json")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "TMPDIR": str(private_tmp)})
    try:
        deadline = time.monotonic() + 120
        while not (work / "notify" / "outbox" / "outbox.jsonl").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL and not (tmp_path / "a.json").exists()
    assert not list(private_tmp.iterdir()), "a kill -9 left a temporary folder behind"
    again = subprocess.run([*args, "--days", "1", "--workdir", str(work), "--output", str(tmp_path / "b.json")],
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "earlier simulation" in again.stdout and not (tmp_path / "b.json").exists()
    fresh = subprocess.run([*args, "--days", "1", "--workdir", str(tmp_path / "fresh"),
                            "--output", str(tmp_path / "c.json")], capture_output=True, text=True, timeout=300)
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    assert (tmp_path / "c.json").exists()
