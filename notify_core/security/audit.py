"""The audit trail: an append-only, hash-chained log of every administrative action.

Each entry holds who (``actor``: an API key id, or ``cli:<user>``), from where (``source``: the client
IP, or ``cli``), the request id, the time (from the injected clock), the action, its target and, for
campaign changes, the state before and after. Entry ``n`` stores ``sha256(entry n-1's hash + entry n's
canonical JSON)``, and a head row stores the last sequence number and hash, so :func:`verify` finds
any edited field (its hash no longer matches), any deleted entry (a gap in the sequence, or a broken
link) and a deleted tail (the head names an entry that is gone). An attacker who rewrites the whole
chain and the head is out of reach of any in-store check: print the head hash (``notify audit
verify``) and keep it elsewhere to anchor it.

Rows live in the Store's ``audit_log`` table (pk ``"log"``, sk the 12-digit sequence), so the trail
works on SQLite and DynamoDB alike; appends are conditional puts on the next sequence number (a
concurrent writer loses the race, rereads the tail and retries), never overwrites.

:func:`record` is the one function to call; user deletion, backup and restore call it too.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from notify_core.clock import Clock
from notify_core.errors import ConditionFailedError
from notify_core.store import tables
from notify_core.store.port import Condition, KeyRange, Store

log = logging.getLogger(__name__)

LOG_PK = "log"
HEAD_PK = "head"
GENESIS = "0" * 64
_FIELDS = ("seq", "at", "actor", "source", "request_id", "action", "target", "before", "after", "detail",
           "prev_hash")


@dataclass(frozen=True, slots=True)
class AuditEntry:
    seq: int
    at: str
    actor: str
    source: str
    request_id: str | None
    action: str
    target: str | None
    before: Any
    after: Any
    detail: Any
    prev_hash: str
    hash: str

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in (*_FIELDS, "hash")}


def _canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=True).encode()


def chain_hash(prev_hash: str, body: dict[str, Any]) -> str:
    return hashlib.sha256(prev_hash.encode() + _canonical(body)).hexdigest()


def _sk(seq: int) -> str:
    return f"{seq:012d}"


def _to_item(entry: AuditEntry) -> dict[str, Any]:
    # JSON text for the free-form parts: the hash covers exactly these bytes on either backend.
    body = entry.as_dict()
    item = {k: v for k, v in body.items() if k not in ("before", "after", "detail")}
    item |= {f"{k}_json": _canonical({"v": body[k]}).decode() for k in ("before", "after", "detail")}
    return {"pk": LOG_PK, "sk": _sk(entry.seq), **item}


def _from_item(item: dict[str, Any]) -> AuditEntry:
    loaded = {k: json.loads(item.get(f"{k}_json") or '{"v":null}')["v"] for k in ("before", "after", "detail")}
    return AuditEntry(seq=int(item["seq"]), at=str(item["at"]), actor=str(item["actor"]),
                      source=str(item["source"]), request_id=item.get("request_id"), action=str(item["action"]),
                      target=item.get("target"), prev_hash=str(item["prev_hash"]), hash=str(item["hash"]), **loaded)


def _tail(store: Store) -> tuple[int, str]:
    last = store.table(tables.AUDIT_LOG).query(LOG_PK, limit=1, descending=True, consistent=True)
    if not last:
        return 0, GENESIS
    return int(last[0]["seq"]), str(last[0]["hash"])


def record(store: Store, *, clock: Clock, action: str, actor: str, source: str, request_id: str | None = None,
           target: str | None = None, before: Any = None, after: Any = None, detail: Any = None,
           attempts: int = 50) -> AuditEntry:
    """Append one entry (chained to the last) and move the head; returns it. Retries a lost race."""
    table = store.table(tables.AUDIT_LOG)
    at = datetime.fromtimestamp(clock.now(), UTC).isoformat(timespec="microseconds")
    for _ in range(attempts):
        seq, prev = _tail(store)
        body = {"seq": seq + 1, "at": at, "actor": actor, "source": source, "request_id": request_id,
                "action": action, "target": target, "before": before, "after": after, "detail": detail,
                "prev_hash": prev}
        # Round-trip through JSON first so the hash covers what verify will read back.
        body = json.loads(_canonical(body))
        entry = AuditEntry(**body, hash=chain_hash(prev, body))
        try:
            table.put(_to_item(entry), condition=Condition.absent())
        except ConditionFailedError:
            continue
        _advance_head(table, entry, attempts=attempts)
        log.info("audit", extra={"audit_action": action, "actor": actor, "target": target, "seq": entry.seq,
                                 "request_id": request_id})
        return entry
    raise ConditionFailedError(f"audit append lost the race {attempts} times")


def _advance_head(table: Any, entry: AuditEntry, *, attempts: int) -> None:
    """Move the head to ``entry`` unless a later entry's writer already moved it further: a conditional
    put on the head's current seq, so a slow writer can never move the head back."""
    for _ in range(attempts):
        head = table.get(HEAD_PK, HEAD_PK, consistent=True)
        if head is not None and int(head["seq"]) >= entry.seq:
            return
        condition = Condition.absent() if head is None else Condition.matches(seq=head["seq"])
        try:
            table.put({"pk": HEAD_PK, "sk": HEAD_PK, "seq": entry.seq, "hash": entry.hash}, condition=condition)
            return
        except ConditionFailedError:
            continue
    raise ConditionFailedError(f"audit head update lost the race {attempts} times")


def entries(store: Store, *, page: int = 1000) -> Iterator[AuditEntry]:
    """Every entry in sequence order (paged by sort key)."""
    table = store.table(tables.AUDIT_LOG)
    start = _sk(0)
    while True:
        rows = table.query(LOG_PK, key_range=KeyRange(start=start, end=_sk(10**12 - 1)), limit=page,
                           consistent=True)
        for row in rows:
            yield _from_item(row)
        if len(rows) < page:
            return
        start = _sk(int(rows[-1]["seq"]) + 1)


@dataclass
class VerifyReport:
    entries: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "entries": self.entries, "head_seq": self.head_seq, "head_hash": self.head_hash,
                "problems": self.problems}


def verify(store: Store) -> VerifyReport:
    """Walk the chain: every hash recomputed, every link and sequence number checked, the head matched."""
    report = VerifyReport()
    expected_seq, prev = 1, GENESIS
    for entry in entries(store):
        report.entries += 1
        if entry.seq != expected_seq:
            report.problems.append(f"entry {expected_seq}..{entry.seq - 1} missing (deleted)")
        if entry.prev_hash != prev:
            report.problems.append(f"entry {entry.seq}: link to the previous entry broken")
        body = {k: v for k, v in entry.as_dict().items() if k != "hash"}
        if chain_hash(entry.prev_hash, body) != entry.hash:
            report.problems.append(f"entry {entry.seq}: contents do not match its hash (edited)")
        expected_seq, prev = entry.seq + 1, entry.hash
    head = store.table(tables.AUDIT_LOG).get(HEAD_PK, HEAD_PK, consistent=True)
    if head is not None:
        report.head_seq, report.head_hash = int(head["seq"]), str(head["hash"])
        if report.head_seq != expected_seq - 1 or report.head_hash != prev:
            report.problems.append(f"head names entry {report.head_seq} but the chain ends at {expected_seq - 1} "
                                   "(entries deleted from the end, or the head edited)")
    elif report.entries:
        report.problems.append("the head row is missing")
    return report
