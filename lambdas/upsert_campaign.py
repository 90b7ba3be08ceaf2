"""Lambda ``upsert_campaign``: ``POST /v1/campaigns`` creates or edits a campaign, recommendable at once.

Embeds only that campaign (only if its text changed) and adds it to the live index overlay (see
:mod:`notify_core.recommend.updates`): no rebuild. 201 for a new campaign, 200 for an edit, 400 for a
bad body. The embedding model loads lazily on the first create (a few seconds, once per process).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from lambdas.coldstart import ColdStart
from lambdas.http import ApiEvent, ApiResponse, api_handler, body_bytes, json_response, request_id
from notify_core.clock import Clock, utcnow
from notify_core.embeddings.embedder import Embedder
from notify_core.errors import ValidationError
from notify_core.lake import Lake, lake_for
from notify_core.recommend.serving import IndexHolder
from notify_core.recommend.updates import upsert_campaign
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


def _build() -> UpsertState:
    from lambdas.get_recommended_campaigns import get_recommender
    from notify_core.embeddings.embedder import SentenceTransformerEmbedder

    recommender = get_recommender()  # share the Store and holder: an upsert is live in this process at once
    from notify_core.settings import load_settings

    settings = load_settings()
    return UpsertState(store=recommender.store, embedder=SentenceTransformerEmbedder(), holder=recommender.holder,
                       lake=lake_for(settings), clock=recommender.clock)


_state = ColdStart(_build)
get_state = _state.get
use_state = _state.use


@api_handler
def handler(event: ApiEvent, context: Any) -> ApiResponse:
    started = time.perf_counter()
    rid = request_id(event)
    raw = body_bytes(event, limit=MAX_BODY)
    try:
        payload = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError):
        raise ValidationError("body is not valid JSON") from None
    state = get_state()
    result = upsert_campaign(payload, store=state.store, embedder=state.embedder, holder=state.holder,
                             lake=state.lake, now=utcnow(state.clock))
    # Nested, not spread: a field named like a LogRecord attribute ("created") would make logging raise.
    log.info("upsert_campaign", extra={"request_id": rid, "campaign": result.as_dict(),
                                       "latency_ms": round((time.perf_counter() - started) * 1000, 3)})
    return json_response(201 if result.created else 200, result.as_dict(), headers={"x-request-id": rid})
