"""Lambda ``upsert_campaign``: ``POST /v1/campaigns`` creates or edits a campaign, recommendable at once.

Embeds only that campaign (only if its text changed) and adds it to the live index overlay (see
:mod:`notify_core.recommend.updates`): no rebuild. 201 for a new campaign, 200 for an edit, 400 for a
bad body (an unsafe URL included). Scope ``campaigns:write``. Every create and edit is written to the
audit trail with the campaign before and after. The embedding model loads lazily on the first create (a
few seconds, once per process). State comes from :mod:`lambdas.runtime` (the same index holder the
recommendations of this process read), never from another handler's module.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import orjson
from aws_lambda_powertools.event_handler import Response

from lambdas import runtime
from lambdas.coldstart import ColdStart
from lambdas.edge import Edge, current
from lambdas.index import build_holder
from notify_core.clock import Clock, utcnow
from notify_core.embeddings.embedder import Embedder
from notify_core.lake import Lake, lake_for
from notify_core.recommend.serving import IndexHolder
from notify_core.recommend.updates import CampaignIn, UpsertResult, upsert_campaign
from notify_core.security import audit
from notify_core.store import tables
from notify_core.store.factory import seal_store
from notify_core.store.port import Store

log = logging.getLogger("lambdas.upsert_campaign")
MAX_BODY = 64 * 1024


@dataclass
class UpsertState:
    store: Store
    embedder: Embedder
    holder: IndexHolder
    lake: Lake | None
    clock: Clock
    allowed_url_domains: tuple[str, ...] = ()


def _build() -> UpsertState:
    from notify_core.embeddings.embedder import SentenceTransformerEmbedder

    rt = runtime.get()
    return UpsertState(store=rt.store(seal_store), embedder=SentenceTransformerEmbedder(),
                       holder=rt.holder(build_holder), lake=lake_for(rt.settings),
                       allowed_url_domains=rt.settings.campaign_url_domains, clock=rt.clock)


_state = ColdStart(_build)
get_state = _state.get
use_state = _state.use


edge = Edge("campaigns")


@edge.route("POST", "/v1/campaigns", summary="Create or edit a campaign",
            max_body=MAX_BODY, response_model=UpsertResult)  # the domain's dataclass: one list of fields
def campaigns(campaign: CampaignIn) -> Any:  # a Response: serialised by the route, not validated again
    started = time.perf_counter()
    request = current()
    state = get_state()
    payload = campaign.model_dump(mode="json")
    before = state.store.table(tables.CAMPAIGNS).get(campaign.campaign_id, tables.CAMPAIGN_SK, consistent=True)
    result = upsert_campaign(payload, store=state.store, embedder=state.embedder, holder=state.holder,
                             lake=state.lake, allowed_url_domains=state.allowed_url_domains, now=utcnow(state.clock))
    audit.record(state.store, clock=state.clock, action="campaign.create" if result.created else "campaign.update",
                 actor=request.actor, source=request.source, request_id=request.request_id,
                 target=campaign.campaign_id, before=before and {k: v for k, v in before.items()
                                                                 if k not in ("pk", "sk")}, after=payload)
    # Nested, not spread: a field named like a LogRecord attribute ("created") would make logging raise.
    log.info("upsert_campaign", extra={"request_id": request.request_id, "campaign": result.as_dict(),
                                       "latency_ms": round((time.perf_counter() - started) * 1000, 3)})
    return Response(201 if result.created else 200, "application/json", orjson.dumps(result.as_dict()).decode())


handler = edge.handler
