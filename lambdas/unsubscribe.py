"""Lambda ``unsubscribe``: the one-click unsubscribe link every message carries (public, signed).

* ``GET /u/{token}``: a confirmation page (HTML) with the button that POSTs. A GET never unsubscribes:
  mail scanners and link previews fetch links on their own (RFC 8058 section 3.2).
* ``POST /u/{token}``: opts the user out of the campaign's category (``?scope=all``: of everything) and
  answers a short HTML page. This is the RFC 8058 one-click request a mail client sends with the body
  ``List-Unsubscribe=One-Click`` (form-encoded: accepted here, never parsed). Idempotent.

The token is ``<notification_id>.<kid>.<mac>`` signed like the tracking links under its own link kind
(:mod:`notify_core.delivery.tracking`); anything that does not verify, or names no known notification, is
a 404. Each opt-out is written to the audit trail (``preferences.unsubscribe``, actor
``unsubscribe-link``) and is an ``opt_out`` event (:func:`notify_core.preferences.opt_out_from_link`).
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Path, Query

from lambdas import runtime
from lambdas.coldstart import ColdStart
from lambdas.edge import Edge, current
from notify_core.clock import SYSTEM_CLOCK, Clock, today, utcnow
from notify_core.delivery.tracking import TRACKING_PURPOSE, lookup, verify_token
from notify_core.preferences import opt_out_from_link
from notify_core.security import audit
from notify_core.security.keyring import KeyRing, Ring
from notify_core.security.vault import build_vault
from notify_core.store import tables
from notify_core.store.factory import seal_store
from notify_core.store.port import Store

ACTOR = "unsubscribe-link"
Token = Annotated[str, Path(min_length=1, max_length=256)]
_HEADERS = {"cache-control": "no-store", "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; "
            "form-action 'self'", "x-frame-options": "DENY", "referrer-policy": "no-referrer"}


@dataclass(frozen=True, slots=True)
class _Deps:
    store: Store
    keys: Ring
    clock: Clock


def _build() -> _Deps:
    rt = runtime.get()
    store = rt.store(seal_store)
    return _Deps(store, build_vault(rt.settings, store=store).live_ring(TRACKING_PURPOSE, clock=rt.clock), rt.clock)


_deps = ColdStart(_build)


def use(*, store: Store | None, keys: KeyRing | None = None, clock: Clock = SYSTEM_CLOCK) -> None:
    """Install the Store, tracking keys and clock (None: build from settings on next use)."""
    _deps.use(None if store is None or keys is None else _Deps(store, keys, clock))


def _page(title: str, body: str) -> Response[str]:
    doc = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
           '<meta name="viewport" content="width=device-width, initial-scale=1"></head>'
           f'<body style="font-family:sans-serif;max-width:32rem;margin:3rem auto">{body}</body></html>')
    return Response(200, "text/html; charset=utf-8", doc, headers=dict(_HEADERS))


edge = Edge("unsubscribe")


@edge.route("GET", "/u/<token>", summary="Unsubscribe link: a confirmation page (a GET changes nothing)")
def confirm(token: Token) -> Any:  # a Response: an HTML page
    deps = _deps.get()
    when = utcnow(deps.clock)
    ref = lookup(deps.store, verify_token(deps.keys, token, kind="unsubscribe", now=when), now=when)
    campaign = deps.store.table(tables.CAMPAIGNS).get(ref.campaign_id, tables.CAMPAIGN_SK) or {}
    category = str(campaign.get("category") or "")
    action = html.escape(f"/u/{token}", quote=True)
    what = f"“{html.escape(category)}” notifications" if category else "all notifications"
    return _page("Unsubscribe", f"<h1>Unsubscribe</h1><p>Stop receiving {what}?</p>"
                 f'<form method="post" action="{action}"><button type="submit">Unsubscribe</button></form>'
                 f'<form method="post" action="{action}?scope=all"><button type="submit">'
                 "Unsubscribe from everything</button></form>")


@edge.route("POST", "/u/<token>", summary="One-click unsubscribe (RFC 8058)", forms=True)
def unsubscribe(token: Token, scope: Annotated[Literal["category", "all"], Query()] = "category") -> Any:
    deps = _deps.get()
    info = current()
    when = utcnow(deps.clock)
    ref = lookup(deps.store, verify_token(deps.keys, token, kind="unsubscribe", now=when), now=when)
    result = opt_out_from_link(deps.store, user_id=ref.user_id, campaign_id=ref.campaign_id,
                               notification_id=ref.notification_id, day=today(deps.clock).isoformat(), now=when,
                               scope=scope)
    audit.record(deps.store, clock=deps.clock, action="preferences.unsubscribe", actor=ACTOR, source=info.source,
                 request_id=info.request_id, target=ref.user_id, before=result.before.model_dump(mode="json"),
                 after=result.after.model_dump(mode="json"),
                 detail={"notification_id": ref.notification_id, "campaign_id": ref.campaign_id,
                         "scope": result.scope, "first": result.first})
    what = (f"“{html.escape(result.category)}” notifications" if result.scope == "category" and result.category
            else "all notifications")
    return _page("Unsubscribed", f"<h1>Unsubscribed</h1><p>You will no longer receive {what}.</p>")


handler = edge.handler
