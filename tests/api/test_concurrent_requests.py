"""Handlers running side by side in the gateway's thread pool each read their own request."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

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
