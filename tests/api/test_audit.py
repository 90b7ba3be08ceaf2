"""The audit trail: hash-chained, tamper-evident, and written by every administrative route and command."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lambdas import unsubscribe
from lambdas.openapi import openapi_document
from notify_core.clock import ManualClock
from notify_core.erasure_register import pseudonym
from notify_core.security import audit
from notify_core.store import tables
from notify_core.store.sqlite import SqliteStore
from tests.api.conftest import Served
from tests.api.test_attack import _requests
from tests.servers import free_port, stop_process, wait_healthy

# Mutating routes that are not administrative actions, and why. Everything else that mutates is audited.
NOT_ADMINISTRATIVE_ROUTES = {("POST", "/v1/events"): "data plane: the app's purchase/click events",
                             ("POST", "/v1/campaigns/{campaign_id}/preview"): "renders only: writes nothing"}
# Every CLI command: audited (administrative) or why not.
CLI_COMMANDS = {
    "run": "audited", "ingest": "audited", "features": "audited", "serve": "audited",
    "keys create": "audited", "keys rotate": "audited", "keys revoke": "audited",
    "keys list": "read-only", "audit verify": "read-only", "audit show": "read-only",
    "consume": "data plane: persists the app's events", "worker": "data plane: delivers planned notifications",
    "evaluate": "read-only on the data (writes a report file)", "templates": "renders files from the code",
    "capacity": "read-only (prints a cost model)", "secrets list": "read-only (key ids, never secrets)",
    "secrets rotate": "audited", "secrets show-webhook": "audited", "users delete": "audited",
    "backup": "audited", "restore": "audited", "users reapply-erasures": "audited",
    "users sweep-erasures": "audited (test_erasure_sweep; an empty queue changes nothing and writes no entry)",
    "simulate": "read-only on the data (its own throwaway Stores; writes a report file)",
    "deliveries redrive": "audited (tests/delivery/test_redrive.py)", "deliveries dead-letters": "read-only",
    "events refused": "read-only (its own consumer group, which never commits)",
}


def _store(tmp_path: Path) -> SqliteStore:
    return SqliteStore(tmp_path / "store.sqlite")


def _fill(store: SqliteStore, clock: ManualClock, n: int = 5) -> None:
    for i in range(n):
        audit.record(store, clock=clock, action="campaign.update", actor="k1", source="203.0.113.1",
                     request_id=f"r{i}", target=f"c{i}", before={"url": "https://a.example"},
                     after={"url": "https://b.example", "budget": i})
        clock.advance(1)


def test_a_clean_chain_verifies(tmp_path: Path) -> None:
    store, clock = _store(tmp_path), ManualClock(1_700_000_000)
    _fill(store, clock)
    report = audit.verify(store)
    assert report.ok and report.entries == 5 and report.head_seq == 5
    first = next(audit.entries(store))
    assert first.prev_hash == audit.GENESIS and first.at.startswith("2023-11-14T22:13:20")


@pytest.mark.parametrize("field", ["actor", "after_json", "at", "action"])
def test_an_edited_row_is_caught(tmp_path: Path, field: str) -> None:
    store, clock = _store(tmp_path), ManualClock(1_700_000_000)
    _fill(store, clock)
    table = store.table(tables.AUDIT_LOG)
    row = table.get(audit.LOG_PK, "000000000003")
    assert row is not None
    row[field] = '{"v":{"url":"https://evil.example"}}' if field == "after_json" else "forged"
    table.put(row)
    report = audit.verify(store)
    assert not report.ok and any("entry 3" in p for p in report.problems)


@pytest.mark.parametrize("seq", [1, 3, 5])
def test_a_deleted_row_is_caught_first_middle_or_last(tmp_path: Path, seq: int) -> None:
    store, clock = _store(tmp_path), ManualClock(1_700_000_000)
    _fill(store, clock)
    store.table(tables.AUDIT_LOG).delete(audit.LOG_PK, f"{seq:012d}")
    report = audit.verify(store)
    assert not report.ok, report.as_dict()


def test_notify_audit_verify_exits_1_on_a_tampered_row(tmp_path: Path) -> None:
    from notify_cli.main import app

    store, clock = _store(tmp_path), ManualClock(1_700_000_000)
    _fill(store, clock)
    runner = CliRunner()
    ok = runner.invoke(app, ["audit", "verify", "--data-dir", str(tmp_path)])
    assert ok.exit_code == 0 and json.loads(ok.stdout)["ok"] is True
    row = store.table(tables.AUDIT_LOG).get(audit.LOG_PK, "000000000002")
    assert row is not None
    store.table(tables.AUDIT_LOG).put({**row, "source": "10.0.0.1"})
    bad = runner.invoke(app, ["audit", "verify", "--data-dir", str(tmp_path)])
    assert bad.exit_code == 1 and "entry 2" in bad.stdout


def test_concurrent_appends_keep_one_unbroken_chain(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    store, clock = _store(tmp_path), ManualClock(1_700_000_000)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: audit.record(store, clock=clock, action="x", actor=f"a{i}", source="t"), range(80)))
    report = audit.verify(store)
    assert report.ok and report.entries == 80


def test_a_writer_killed_between_entry_and_head_is_reported_then_repaired_by_the_next_append(
        tmp_path: Path) -> None:
    """kill -9 after the entry row, before the head row: verify names it; the next append moves the head."""
    store, clock = _store(tmp_path), ManualClock(1_700_000_000)
    _fill(store, clock, n=2)
    code = ("import sys, os\nfrom notify_core.security import audit\nfrom notify_core.clock import ManualClock\n"
            "from notify_core.store.sqlite import SqliteStore\n"
            "from notify_core.store.port import Store\n"
            "s = SqliteStore(sys.argv[1])\nt = s.table('audit_log')\norig = t.put\n"
            "def put(item, **kw):\n    orig(item, **kw)\n    if item['pk'] == 'log': os._exit(9)\n"
            "t.put = put\ns.table = lambda name: t\n"
            "audit.record(s, clock=ManualClock(1_700_000_100), action='x', actor='a', source='s')\n")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "store.sqlite")], check=False)
    assert done.returncode == 9
    assert not audit.verify(store).ok  # the head lags the chain: visible, not silent
    audit.record(store, clock=clock, action="y", actor="a", source="s")
    report = audit.verify(store)
    assert report.ok and report.entries == 4


def test_every_mutating_route_writes_an_audit_entry(served: Served) -> None:
    token = served.key("admin")
    requests = _requests(served)
    mutating = [(m.upper(), p) for p, item in openapi_document()["paths"].items() for m in item
                if m.upper() in {"POST", "PUT", "PATCH", "DELETE"}]
    assert mutating
    for op in mutating:
        before = audit.verify(served.world.store).entries
        spec = requests[op]
        reply = served.client.request(op[0], spec["path"], json=spec.get("json"), headers={"x-api-key": token})
        assert reply.status_code in spec["ok"], reply.text
        after = list(audit.entries(served.world.store))
        if op in NOT_ADMINISTRATIVE_ROUTES:
            assert len(after) == before
            continue
        assert len(after) == before + 1, op
        entry = after[-1]
        # the public unsubscribe link has no key: its entries name the link as the actor
        actor = token.split("_")[1] if spec["scope"] else unsubscribe.ACTOR
        assert entry.actor == actor and entry.request_id and entry.source
    campaign = [e for e in audit.entries(served.world.store) if e.action.startswith("campaign.")][-1]
    assert campaign.after["url"] == "https://shop.example.com/lanterns" and campaign.before is None
    # an edit records the state before it
    edit = {**requests[("POST", "/v1/campaigns")]["json"], "name": "lanterns v2"}
    served.client.post("/v1/campaigns", json=edit, headers={"x-api-key": token})
    last = list(audit.entries(served.world.store))[-1]
    assert last.action == "campaign.update" and last.before["name"] == "lanterns" and \
        last.after["name"] == "lanterns v2"
    assert audit.verify(served.world.store).ok


def _commands() -> set[str]:
    from notify_cli.main import app

    names = {c.name or c.callback.__name__ for c in app.registered_commands if c.callback}
    for group in app.registered_groups:
        names |= {f"{group.name} {c.name or c.callback.__name__}" for c in group.typer_instance.registered_commands
                  if c.callback}
    return names


def test_every_cli_command_is_classified() -> None:
    assert _commands() == set(CLI_COMMANDS)


@pytest.fixture
def own_logging() -> Iterator[None]:
    """CLI commands configure Notify's loggers onto CliRunner's stream (closed afterwards): put them back."""
    import logging

    names = ("notify_core", "lambdas", "notify_cli")
    saved = [(lg.handlers[:], lg.level, lg.propagate) for lg in map(logging.getLogger, names)]
    yield
    for lg, (handlers, level, propagate) in zip(map(logging.getLogger, names), saved, strict=True):
        lg.handlers, lg.propagate = handlers, propagate
        lg.setLevel(level)


def test_every_audited_cli_command_writes_an_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   own_logging: None) -> None:
    from types import SimpleNamespace

    from notify_cli import main, run_command

    # the audit, not Dagster, is under test: the run itself is a stub that succeeds
    monkeypatch.setattr(run_command, "run_main", lambda settings, **kw: SimpleNamespace(success=True))
    monkeypatch.setattr(run_command, "print_summary", lambda console, outcome: None)
    runner = CliRunner()
    data = ["--data-dir", str(tmp_path)]
    store = _store(tmp_path)

    def count() -> int:
        return audit.verify(store).entries

    for command in (["run"], ["ingest"], ["features"]):
        before = count()
        runner.invoke(main.app, [*command, *data])
        assert count() == before + 1, command
    created = runner.invoke(main.app, ["keys", "create", "--name", "ci", "--scope", "events:write", *data])
    assert created.exit_code == 0, created.output
    key_id = created.stdout.strip().split("_")[1]
    rotated = runner.invoke(main.app, ["keys", "rotate", key_id, *data])
    assert rotated.exit_code == 0, rotated.output
    revoked = runner.invoke(main.app, ["keys", "revoke", key_id, *data])
    assert revoked.exit_code == 0, revoked.output
    actions = [e.action for e in audit.entries(store)]
    assert actions == ["pipeline.run"] * 3 + ["key.create", "key.rotate", "key.revoke"]
    assert all(e.actor.startswith("cli:") and e.source == "cli" for e in audit.entries(store))
    listed = runner.invoke(main.app, ["keys", "list", *data])
    assert listed.exit_code == 0 and "hash" not in listed.stdout and count() == 6

    # secrets, erasure, backup and restore (issue 14 item 7: user deletion, backup / restore)
    for command in (["secrets", "rotate", "--purpose", "tracking"], ["secrets", "show-webhook"],
                    ["users", "delete", "u-gone"], ["backup", "--once", "--to", str(tmp_path / "bk")]):
        before = count()
        done = runner.invoke(main.app, [*command, *data])
        assert done.exit_code == 0, (command, done.output)
        assert count() == before + 1, command
    new_actions = [e.action for e in audit.entries(store)][6:]
    assert new_actions == ["secrets.rotate", "secrets.show", "user.delete", "backup.run"]
    erased = [e for e in audit.entries(store) if e.action == "user.delete"][0]
    assert erased.target == pseudonym("u-gone") and erased.detail == {"rows_removed": 0}  # never the id
    head_before = audit.verify(store).head_hash
    store.close()
    restored = runner.invoke(main.app, ["restore", "--from", str(tmp_path / "bk"), "--force", *data])
    assert restored.exit_code == 0, restored.output
    store = _store(tmp_path)
    last = list(audit.entries(store))[-1]
    assert last.action == "backup.restore" and last.detail["replaced_audit_head"]["head_hash"] == head_before
    assert audit.verify(store).ok

    # serve: the first start writes an admin key (0600) and an audit entry; the insecure flag is loud
    for insecure in (False, True):
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "notify_cli.stream_commands", "serve", *data, "--port",
                                   str(port), *(["--insecure-no-auth"] if insecure else [])],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_healthy(server, f"http://127.0.0.1:{port}")
        finally:
            stop_process(server)
        stderr = server.stderr.read().decode() if server.stderr else ""
        if insecure:
            assert "NO API KEYS CHECKED" in stderr
    served_entries = [e for e in audit.entries(store) if e.action == "settings.serve"]
    assert [e.detail["auth"] for e in served_entries] == ["api-keys", "DISABLED"]
    assert [e for e in audit.entries(store) if e.action == "key.create" and e.actor == "bootstrap"] == []
    assert audit.verify(store).ok
