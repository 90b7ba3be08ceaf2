"""Lambda ``erase_user``: ``DELETE /v1/users/{user_id}`` (scope ``admin``), the right to erasure over HTTP.

The same erasure as ``notify users delete ID`` (:func:`notify_core.erasure.erase_user`): every Store table
(the audit trail, API keys and the erasure register excepted), the files under every path
:func:`notify_core.erasure.erasure_paths` lists (data directory, landing folder, outbox), in aws every version
of the objects under the S3 prefix (:func:`notify_core.erasure.erasure_objects`) and of their copies in
the replica bucket (:func:`notify_core.erasure.erasure_replicas`), and the embedded
stream log's messages keyed by the user (Kafka records age out with the topic's retention). The erasure is
recorded in the register first, so the next pipeline run does not bring the user back.
Written to the audit trail as ``user.delete`` with the caller's key id, source and request id. Runs
without compacting the SQLite file (a serving process should not rebuild it under load: deletes are
``secure_delete`` and the WAL is checkpointed; ``notify users delete`` compacts). Idempotent: a second
call removes 0 rows and is audited again.

Bounded in time: the erasure walks tables not keyed by user, every file and every object version, which
at the spec's 10M users takes far longer than a request (or the function's 30 s timeout). It works for
``erasure_request_budget_s`` (10 s), then answers **202** with ``pending: true`` and the counts of the steps
it finished; the user stays in the erasure queue and the ``erasure_sweep`` job finishes it (with every
other queued erasure, in one pass). Done within the budget: **200**, ``pending: false``. The register is
written first either way, so from the first answer no ingest, replay or restore brings the user back, and
the delivery worker sends them nothing more.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Path as PathParam
from pydantic import BaseModel

from lambdas import runtime
from lambdas.coldstart import ColdStart
from lambdas.edge import Edge, current
from notify_core.clock import Clock
from notify_core.erasure import ObjectArea, erase_user, erasure_objects, erasure_paths, erasure_replicas
from notify_core.security import audit
from notify_core.settings import NotifySettings
from notify_core.store.factory import seal_store
from notify_core.store.port import Store

MAX_USER_ID = 256


@dataclass(frozen=True, slots=True)
class _Deps:
    store: Store
    stream: Any  # the embedded log (erase_key) or a Kafka client (none: records age out)
    roots: tuple[Path, ...]
    clock: Clock
    budget_s: float  # the erasure's time before answering 202 (erasure_request_budget_s)
    objects: tuple[ObjectArea, ...] = ()
    replicas: tuple[ObjectArea, ...] = ()


def _build() -> _Deps:
    from notify_core.stream import open_stream

    rt = runtime.get()
    return _Deps(rt.store(seal_store), open_stream(rt.settings), erasure_paths(rt.settings), rt.clock,
                 rt.settings.erasure_request_budget_s, erasure_objects(rt.settings), erasure_replicas(rt.settings))


_deps = ColdStart(_build)


def use(*, store: Store | None, stream: Any = None, roots: tuple[Path, ...] = (), clock: Clock | None = None,
        objects: tuple[ObjectArea, ...] = (), replicas: tuple[ObjectArea, ...] = (),
        budget_s: float | None = None) -> None:
    """Install the Store, stream, file roots, object areas, their replicas, clock and time budget (tests);
    ``store=None``: from settings on next use. ``budget_s=None``: the settings' default."""
    if budget_s is None:
        budget_s = NotifySettings.model_fields["erasure_request_budget_s"].default
    _deps.use(None if store is None or clock is None
              else _Deps(store, stream, roots, clock, budget_s, objects, replicas))


class ErasedOut(BaseModel):
    user_id: str
    store_rows: dict[str, int]
    file_rows: dict[str, int]
    stream_messages: int
    total: int
    pending: bool  # true (status 202): the time budget ran out; the erasure sweep finishes the rest


edge = Edge("users")


@edge.route("DELETE", "/v1/users/<user_id>", summary="Erase a user from every table, file and the stream log",
            response_model=ErasedOut, also={202: "Begun; the erasure sweep finishes it (pending: true)"})
def erase(user_id: Annotated[str, PathParam(min_length=1, max_length=MAX_USER_ID)]) -> Response[str]:
    info = current()
    deps = _deps.get()

    def audited(action: str, detail: Mapping[str, Any]) -> None:
        audit.record(deps.store, clock=deps.clock, action=action, actor=info.actor, source=info.source,
                     request_id=info.request_id, target=str(detail["target"]),
                     detail={"rows_removed": detail.get("rows_removed"), "pending": detail.get("pending")})

    report = erase_user(user_id, store=deps.store, file_roots=deps.roots, object_areas=deps.objects,
                        replica_areas=deps.replicas, stream_log=deps.stream, audit=audited, actor=info.actor,
                        compact=False, clock=deps.clock, deadline=time.monotonic() + deps.budget_s)
    reply = ErasedOut(**report.as_dict())
    return Response(202 if report.pending else 200, "application/json", reply.model_dump_json())


handler = edge.handler
