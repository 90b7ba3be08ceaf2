"""``Table.set_many`` (issue 21, delivery) on both adapters: the same results as ``update_many`` for updates
of existing items, never a created item, conditions compared as values, and (SQLite) one transaction a
batch that a ``kill -9`` cannot tear."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from notify_core.errors import ValidationError
from notify_core.store.port import Condition, Store, Table, Update
from notify_core.store.sqlite import SqliteStore
from tests.contract import test_store_contract as contract

store = contract.store  # the adapters' fixtures: SQLite and DynamoDB Local
table = contract.table
_future = contract._future
_past = contract._past

REPO = Path(__file__).resolve().parents[2]


def test_set_many_applies_each_update_whose_condition_holds_and_never_creates(table: Table) -> None:
    table.batch_put([{"pk": "job", "sk": str(i), "state": "queued", "n": i, "blob": b"\x00\xff",
                      "nested": {"a": [1, 2]}} for i in range(4)])
    table.put({"pk": "job", "sk": "old", "state": "queued", "ttl": _past()})  # expired: absent
    results = table.set_many([
        Update("job", "0", {"state": "claimed", "by": "w1", "blob": b"\x01", "extra": {"k": None}},
               Condition.matches(state="queued")),
        Update("job", "1", {"state": "claimed"}, Condition.matches(state="sent")),  # loses
        Update("job", "2", {"state": "claimed", "none": None}),  # no condition: the item exists
        Update("job", "9", {"state": "new"}),  # missing: never created
        Update("job", "old", {"state": "fresh"}),  # expired counts as absent
        Update("job", "3", {"state": "x"}, Condition.matches(n=3.0, missing=None)),  # 3 == 3.0; missing == None
        Update("job", "1", {"state": "y"}, Condition.matches(n="1")),  # "1" is not 1
        Update("job", "0", {"state": "again"}, Condition.matches(state="claimed", by="w1")),  # sees the first
    ], returning=True)
    assert results == [
        {"pk": "job", "sk": "0", "state": "claimed", "n": 0, "blob": b"\x01", "nested": {"a": [1, 2]}, "by": "w1",
         "extra": {"k": None}},
        None,
        {"pk": "job", "sk": "2", "state": "claimed", "n": 2, "blob": b"\x00\xff", "nested": {"a": [1, 2]},
         "none": None},
        None, None,
        {"pk": "job", "sk": "3", "state": "x", "n": 3, "blob": b"\x00\xff", "nested": {"a": [1, 2]}},
        None,
        {"pk": "job", "sk": "0", "state": "again", "n": 0, "blob": b"\x01", "nested": {"a": [1, 2]}, "by": "w1",
         "extra": {"k": None}},
    ]
    assert table.get("job", "9") is None and table.get("job", "old") is None
    assert table.get("job", "1") == {"pk": "job", "sk": "1", "state": "queued", "n": 1, "blob": b"\x00\xff",
                                     "nested": {"a": [1, 2]}}
    assert table.get("job", "0") == results[-1]
    # without returning: the key of each applied update, None where it did not apply
    assert table.set_many([Update("job", "1", {"state": "z"}), Update("job", "9", {"state": "z"})]) == [
        {"pk": "job", "sk": "1"}, None]
    assert table.set_many([]) == []


def test_set_many_moves_the_ttl_with_the_item(table: Table) -> None:
    table.batch_put([{"pk": "t", "sk": "a", "v": 1}, {"pk": "t", "sk": "b", "v": 1, "ttl": _future()}])
    assert table.set_many([Update("t", "a", {"ttl": _past()}), Update("t", "b", {"v": 2, "ttl": None})]) == [
        {"pk": "t", "sk": "a"}, {"pk": "t", "sk": "b"}]
    assert table.get("t", "a") is None  # expired by the set ttl
    assert table.get("t", "b") == {"pk": "t", "sk": "b", "v": 2, "ttl": None}  # no longer expires
    assert table.set_many([Update("t", "a", {"v": 3})]) == [None]  # expired: absent to set_many too


def test_set_many_matches_update_many_over_a_large_mixed_batch(store: Store) -> None:
    """600 claims then 600 outcomes of two shapes on two tables, one through each method: same items."""
    n = 600
    seed = [{"pk": f"p{i % 7}", "sk": f"{i:05d}", "status": "pending", "attempt": 1, "payload": "é" * (i % 5),
             "ttl": _future()} for i in range(n)]
    a, b = store.table("via_update_many"), store.table("via_set_many")
    a.batch_put(seed)
    b.batch_put(seed)
    claims = [Update(s["pk"], s["sk"], {"status": "claimed", "claim_token": f"t{i}", "lease_until": 1.5 + i},
                     Condition.matches(status="pending")) for i, s in enumerate(seed)]
    outcomes = [Update(s["pk"], s["sk"], {"status": "sent", "detail": None} if i % 3 else
                       {"status": "retry_scheduled", "next_attempt_at": 9.25, "request_id": "r"},
                       Condition.matches(claim_token=f"t{i}" if i % 10 else "stolen")) for i, s in enumerate(seed)]
    assert b.set_many(claims, returning=True) == a.update_many(claims)
    expected = a.update_many(outcomes)
    assert b.set_many(outcomes, returning=True) == expected
    assert sum(1 for r in expected if r is None) == n // 10
    assert sorted(b.scan(), key=lambda i: (i["pk"], i["sk"])) == sorted(a.scan(), key=lambda i: (i["pk"], i["sk"]))


def test_set_many_claims_are_exclusive_across_threads(table: Table) -> None:
    keys = [str(i) for i in range(60)]
    table.batch_put([{"pk": "race", "sk": k, "state": "pending"} for k in keys])

    def claim(worker: int) -> int:
        won = table.set_many([Update("race", k, {"state": "claimed", "by": worker},
                                     Condition.matches(state="pending")) for k in keys])
        return sum(1 for r in won if r is not None)

    with ThreadPoolExecutor(4) as pool:
        wins = list(pool.map(claim, range(4)))
    assert sum(wins) == len(keys)


@pytest.mark.parametrize("bad", [
    Update("", "1", {"state": "x"}),
    Update("a", "1", {"pk": "other"}),
    Update("a", "1", {"state": "x"}, Condition.absent()),  # set_many never creates
    Update("a", "1", {"state": "x"}, Condition.matches(nested={"a": 1})),  # conditions compare scalars
    Update("a", "1", {'we"ird': "x"}),
    Update("a", "1", {"x": float("nan")}),
])
def test_set_many_refuses_bad_updates_before_writing(table: Table, bad: Update) -> None:
    table.put({"pk": "a", "sk": "1", "state": "queued"})
    with pytest.raises(ValidationError):
        table.set_many([Update("a", "1", {"state": "first"}), bad])
    assert table.get("a", "1") == {"pk": "a", "sk": "1", "state": "queued"}  # nothing of the batch written


_WRITER = """
import sys
from pathlib import Path
from notify_core.store.port import Condition, Update
from notify_core.store.sqlite import SqliteStore
store = SqliteStore(Path(sys.argv[1]))
table = store.table("jobs")
n = int(sys.argv[2])
round_ = 0
print("ready", flush=True)
while True:
    round_ += 1
    table.set_many([Update("j", f"{i:05d}", {"round": round_, "blob": b"x" * 64}, Condition.matches(round=round_ - 1))
                    for i in range(n)])
"""


def test_set_many_batch_is_atomic_under_kill_9(tmp_path: Path) -> None:
    """A process rewriting 5,000 items per batch, killed -9 at several points: every item always shows the
    same round (a batch is one transaction), the file passes integrity_check, and a restarted writer goes on."""
    path, n = tmp_path / "store.sqlite", 5000
    seed = SqliteStore(path)
    seed.table("jobs").batch_put([{"pk": "j", "sk": f"{i:05d}", "round": 0} for i in range(n)])
    seed.close()
    rounds_seen = []
    for delay in (0.3, 0.7, 1.1):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path), str(n)], cwd=REPO,
                                stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)})
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        check = SqliteStore(path)
        rounds = {item["round"] for item in check.table("jobs").scan()}
        assert len(rounds) == 1, f"a torn batch: rounds {sorted(rounds)}"
        rounds_seen.append(rounds.pop())
        conn = sqlite3.connect(path)
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        conn.close()
        check.close()
    assert rounds_seen == sorted(rounds_seen) and rounds_seen[-1] > 0  # each restart carried on from the last
