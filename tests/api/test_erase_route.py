"""DELETE /v1/users/{user_id}: the right to erasure over HTTP (admin only, audited, idempotent)."""

from __future__ import annotations

from notify_core.erasure import belongs_to
from notify_core.erasure_register import pseudonym
from notify_core.security import audit
from notify_core.security.keys import ADMIN, EVENTS_WRITE
from notify_core.store import tables
from tests.api.conftest import Served


def _rows_of(served: Served, user_id: str) -> int:
    store = served.world.store
    names = store.table_names() if hasattr(store, "table_names") else list(tables.ALL_TABLES)
    return sum(1 for name in names for item in store.table(name).scan()
               if belongs_to(item, user_id, rule=tables.USER_ITEMS.get(name, tables.UserKey.ATTRIBUTE)))


def test_an_admin_erases_a_user_everywhere_once_and_each_call_is_audited(served: Served) -> None:
    user = "u1"
    assert _rows_of(served, user) > 0  # the world has this user's profile, features, matrix rows...
    token = served.key(ADMIN)
    first = served.client.delete(f"/v1/users/{user}", headers={"x-api-key": token})
    assert first.status_code == 200, first.text
    assert first.json()["total"] > 0 and first.json()["user_id"] == user
    assert _rows_of(served, user) == 0
    again = served.client.delete(f"/v1/users/{user}", headers={"x-api-key": token})  # idempotent
    assert again.status_code == 200 and again.json()["total"] == 0
    erased = [e for e in audit.entries(served.world.store) if e.action == "user.delete"]
    assert [e.target for e in erased] == [pseudonym(user)] * 2 and erased[0].detail["rows_removed"] > 0
    assert all(e.actor == token.split("_")[1] and e.request_id for e in erased)
    assert audit.verify(served.world.store).ok  # the chain survived the erasure


def test_erasure_is_refused_without_admin_and_bad_ids_are_400(served: Served) -> None:
    assert served.client.delete("/v1/users/u2").status_code == 401
    assert served.client.delete("/v1/users/u2", headers={"x-api-key": served.key(EVENTS_WRITE)}).status_code == 403
    assert _rows_of(served, "u2") > 0  # nothing was erased by the refused calls
    reply = served.client.delete("/v1/users/" + "x" * 257, headers={"x-api-key": served.key(ADMIN)})
    assert reply.status_code == 400 and reply.json()["error"]["type"] == "ValidationError"


def test_an_erasure_that_outruns_its_budget_answers_202_and_the_sweep_finishes_it(served: Served) -> None:
    """At the spec's scale the erasure's walks take far longer than a request: the route works for its budget
    (here none at all), answers 202 with ``pending``, and the user waits in the erasure queue, already in the
    register. The sweep finishes it; a DELETE afterwards answers 200 with nothing left to remove."""
    from lambdas import erase_user
    from notify_core.erasure import sweep_erasures
    from notify_core.erasure_queue import queued_erasures

    store = served.world.store
    erase_user.use(store=store, stream=served.log, roots=(served.world.root,), clock=served.clock, budget_s=1e-9)
    token = served.key(ADMIN)
    begun = served.client.delete("/v1/users/u1", headers={"x-api-key": token})
    assert begun.status_code == 202, begun.text
    assert begun.json()["pending"] is True and begun.json()["user_id"] == "u1"
    assert _rows_of(served, "u1") > 0 and list(queued_erasures(store)) == ["u1"]
    assert [e.detail for e in audit.entries(store) if e.action == "user.delete"] == [
        {"rows_removed": begun.json()["total"], "pending": True}]

    report = sweep_erasures(store, file_roots=(served.world.root,), stream_log=served.log)
    assert report.users_finished == 1 and _rows_of(served, "u1") == 0 and queued_erasures(store) == {}
    assert _rows_of(served, "u2") > 0  # nobody else's
    erase_user.use(store=store, stream=served.log, roots=(served.world.root,), clock=served.clock)
    done = served.client.delete("/v1/users/u1", headers={"x-api-key": token})
    assert done.status_code == 200 and done.json() | {"erased_at": ""} == {
        "user_id": "u1", "store_rows": {}, "file_rows": {}, "stream_messages": 0, "total": 0, "pending": False,
        "erased_at": ""}


def test_erasure_needs_admin_itself_not_every_other_scope(served: Served) -> None:
    """Only ``admin`` erases: a key holding every other scope (``users:write`` included, the closest one) is
    refused, and nothing of the user goes."""
    from notify_core.security.scopes import SCOPES

    others = served.key(*[s for s in SCOPES if s != ADMIN])
    assert served.client.delete("/v1/users/u2", headers={"x-api-key": others}).status_code == 403
    assert _rows_of(served, "u2") > 0
