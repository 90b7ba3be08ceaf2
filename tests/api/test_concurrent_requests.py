"""Handlers running side by side in the gateway's thread pool each read their own request."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from notify_core.security.scopes import EVENTS_WRITE, RECOMMENDATIONS_READ
from tests.api.conftest import Served
from tests.events.helpers import click


@pytest.fixture
def eager_thread_switches() -> Iterator[None]:
    """The GIL handed between threads every microsecond instead of every 5 ms: a race between two requests'
    handlers shows in a few hundred requests instead of one in hundreds of thousands."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


@pytest.mark.usefixtures("eager_thread_switches")
def test_concurrent_event_posts_each_capture_their_own_body(served: Served) -> None:
    """Powertools keeps the event being resolved in a class attribute shared by every resolver; handlers
    in the gateway's threads must still each read their own request's body (else one client's batch is
    acknowledged and another's captured in its place)."""
    token = served.key(EVENTS_WRITE)

    def post(i: int) -> tuple[int, int]:
        count = 1 + i % 7
        events = [click(i * 10 + j) for j in range(count)]
        reply = served.client.post("/v1/events", json={"events": events}, headers={"x-api-key": token})
        assert reply.status_code == 202, reply.text
        return count, int(reply.json()["accepted"])

    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(post, range(300)))
    wrong = [(sent, accepted) for sent, accepted in results if sent != accepted]
    assert not wrong, f"{len(wrong)} of {len(results)} requests captured another request's events: {wrong[:5]}"


@pytest.mark.usefixtures("eager_thread_switches")
def test_concurrent_recommendations_each_answer_their_own_user_and_limit(served: Served) -> None:
    """The path parameter and the query string of each request, read through the edge while other
    requests resolve: each reply is its own user's, cut at its own limit."""
    token = served.key(RECOMMENDATIONS_READ)

    def get(i: int) -> tuple[str, int, str, int]:
        user, limit = ("u1", "u2", "u_new")[i % 3], 1 + i % 4
        reply = served.client.get(f"/v1/users/{user}/recommendations?limit={limit}", headers={"x-api-key": token})
        assert reply.status_code == 200, reply.text
        body = reply.json()
        return user, limit, body["user_id"], len(body["recommendations"])

    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(get, range(240)))
    wrong = [r for r in results if r[0] != r[2] or r[1] != r[3]]
    assert not wrong, f"{len(wrong)} of {len(results)} replies answered another request: {wrong[:5]}"


def test_recommendations_waiting_together_are_answered_in_one_batch_each_its_own(
        served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    """The gateway's coalesced route on one event loop (a worker's): requests that arrive together run as a
    batch (notify_core.coalesce; their users ranked by one recommend_each) and each reply is the one the
    request gets alone: its own user, limit and scores, its own request id; a bad request in the batch gets
    its own 4xx."""
    import asyncio

    import httpx

    from lambdas import gateway

    token = served.key(RECOMMENDATIONS_READ)
    headers = {"x-api-key": token}
    asks = [(("u1", "u2", "u_new")[i % 3], 1 + i % 4) for i in range(24)]
    alone = {ask: served.client.get(f"/v1/users/{ask[0]}/recommendations?limit={ask[1]}", headers=headers).json()
             for ask in set(asks)}  # one at a time (each a batch of one)
    batches: list[int] = []
    together = gateway.run_together

    def counted(calls: Any) -> Any:
        batches.append(len(calls))
        return together(calls)

    monkeypatch.setattr(gateway, "run_together", counted)
    each = served.world.recommender.recommend_each
    resolved: list[int] = []
    monkeypatch.setattr(served.world.recommender, "recommend_each",
                        lambda items, **kw: resolved.append(len(items)) or each(items, **kw))

    async def burst() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=served.client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            requests = [client.get(f"/v1/users/{user}/recommendations?limit={limit}", headers=headers)
                        for user, limit in asks]
            requests += [client.get("/v1/users/nobody/recommendations", headers=headers),
                         client.get("/v1/users/u1/recommendations?limit=0", headers=headers)]
            return await asyncio.gather(*requests)

    replies = asyncio.run(burst())
    assert [r.json() for r in replies[:len(asks)]] == [alone[ask] for ask in asks]
    assert [r.status_code for r in replies[len(asks):]] == [404, 400]
    assert len({r.headers["x-request-id"] for r in replies}) == len(replies)
    assert sum(batches) == len(replies) and max(batches) > 1 and max(batches) <= gateway.TOGETHER
    assert max(resolved) > 1  # the batch's users ranked by one call


def test_a_batch_that_fails_leaves_no_request_waiting(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch that raises (a bug, not a handler's error: those are replies) answers its own requests with the
    gateway's 500 and leaves the route working: no request of it waits forever, and the next batch runs."""
    import asyncio

    import httpx

    from lambdas import gateway

    headers = {"x-api-key": served.key(RECOMMENDATIONS_READ)}
    assert served.client.get("/v1/users/u1/recommendations", headers=headers).status_code == 200  # cold start
    real, failed = gateway.run_together, []

    def failing_once(calls: Any) -> Any:
        if not failed:
            failed.append(len(calls))
            raise RuntimeError("a bug in the batch")
        return real(calls)

    monkeypatch.setattr(gateway, "run_together", failing_once)

    async def bursts() -> tuple[list[int], list[int]]:
        transport = httpx.ASGITransport(app=served.client.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            async def burst() -> list[int]:
                replies = await asyncio.wait_for(asyncio.gather(*[
                    client.get(f"/v1/users/{user}/recommendations", headers=headers) for user in ("u1", "u2") * 3]),
                    timeout=10)
                return [r.status_code for r in replies]
            return await burst(), await burst()

    first, second = asyncio.run(bursts())
    assert failed and first.count(500) == failed[0] and set(first) <= {200, 500}
    assert second == [200] * 6
