"""Issue 20: one way for the planner to get candidates. The cosine fallback serves only when no index is
published; an artefact store that fails is an error of the plan, not a silent switch to the fallback."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from notify_core.errors import BackendError
from notify_core.recommend.artefacts import LocalArtefactStore
from notify_core.scheduling.service import candidates_for
from notify_core.store.sqlite import SqliteStore

NOW = datetime(2031, 5, 14, 9, 0, tzinfo=UTC)


class _Unreachable(LocalArtefactStore):
    """An artefact store whose backend is down (S3 unreachable): every read fails."""

    def stamp(self, name: str) -> str | None:
        raise BackendError("S3 get campaign_index/CURRENT failed: connection refused")


def _fallback(calls: list[tuple[list[str], list[str], int]]):
    def fallback(user_ids: list[str], campaign_ids: list[str], k: int) -> pl.DataFrame:
        calls.append((user_ids, campaign_ids, k))
        return pl.DataFrame({"user_id": user_ids, "campaign_id": campaign_ids[:1] * len(user_ids),
                             "relevance": [0.5] * len(user_ids)})
    return fallback


def test_without_a_published_index_the_cosine_fallback_serves(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.sqlite")
    calls: list[tuple[list[str], list[str], int]] = []
    for artefacts in (None, LocalArtefactStore(tmp_path / "artefacts")):  # none configured; none published
        frame, source = candidates_for(store, ["u1", "u2"], ["c1", "c2"], artefacts=artefacts,
                                       fallback=_fallback(calls), k=7, now=NOW)
        assert source == "cosine_fallback" and frame["user_id"].to_list() == ["u1", "u2"]
    assert calls == [(["u1", "u2"], ["c1", "c2"], 7)] * 2
    store.close()


def test_a_failing_artefact_store_fails_the_plan_instead_of_degrading_it(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.sqlite")
    calls: list[tuple[list[str], list[str], int]] = []
    with pytest.raises(BackendError, match="connection refused"):
        candidates_for(store, ["u1"], ["c1"], artefacts=_Unreachable(tmp_path / "a"), fallback=_fallback(calls),
                       k=5, now=NOW)
    assert calls == []  # before issue 20: a warning, and the fallback's plan
    store.close()


def test_plan_for_users_surfaces_it_too(tmp_path: Path) -> None:
    from notify_core.scheduling.service import plan_for_users

    store = SqliteStore(tmp_path / "s.sqlite")
    with pytest.raises(BackendError):
        plan_for_users(store, ["u1"], plan_day=date(2031, 5, 14), now=NOW, artefacts=_Unreachable(tmp_path / "a"))
    store.close()


def test_the_learned_rankers_candidates_are_planned_even_below_even_odds(tmp_path: Path) -> None:
    """The learned ranker scores a logit: most candidates are under even odds (score < 0). The planner sends
    only relevance > 0, so the candidates must reach it as the ranker's probability, in (0, 1) and in the
    recommender's order; with the raw logit (the bug) these users' plans came out empty."""
    from notify_core.recommend.recommender import Recommender
    from notify_core.scheduling.service import plan_for_users
    from tests.recommend.conftest import make_world

    world = make_world(tmp_path)
    now = datetime.fromtimestamp(world.clock.now(), UTC)
    users = ["u1", "u2"]
    ranker = Recommender(store=world.store, holder=world.holder, clock=world.clock)  # the serving default
    assert ranker.ranker is not None
    answers = {r.user_id: r.items for r in ranker.recommend_many(users, limit=5, now=now)}
    scores = [item.score for items in answers.values() for item in items]
    assert scores and max(scores) < 0  # every candidate of these users is under even odds

    frame, source = candidates_for(world.store, users, world.campaigns["campaign_id"].to_list(),
                                   artefacts=world.artefacts, fallback=_fallback([]), k=5, now=now)
    assert source == "recommender"
    for user in users:
        mine = frame.filter(pl.col("user_id") == user)
        assert mine["campaign_id"].to_list() == [item.campaign_id for item in answers[user]]  # the ranker's order
        relevance = mine["relevance"].to_list()
        assert all(0 < r < 1 for r in relevance) and relevance == sorted(relevance, reverse=True)

    run = plan_for_users(world.store, users, plan_day=now.date(), now=now, artefacts=world.artefacts, k=5)
    assert run.candidate_source == "recommender"
    assert run.stats.users_planned == len(users), run.stats  # both users get notifications
    assert (run.stats.users_reachable, run.stats.users_below_floor) == (len(users), 0)
    world.store.close()


def test_the_reach_check_catches_candidates_on_the_logit_scale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               ) -> None:
    """The bug the reach check is for, put back: the ranker's logit passed as the relevance. Every other
    check of the plan passes on what comes out; the reach figures name both users as lost."""
    from notify_core.recommend.recommender import Recommender
    from notify_core.scheduling.checks import reaches_users
    from notify_core.scheduling.service import plan_for_users
    from tests.recommend.conftest import make_world

    world = make_world(tmp_path)
    now = datetime.fromtimestamp(world.clock.now(), UTC)
    monkeypatch.setattr(Recommender, "relevance", lambda self, scores: np.asarray(scores, dtype=np.float64))
    run = plan_for_users(world.store, ["u1", "u2"], plan_day=now.date(), now=now, artefacts=world.artefacts, k=5)
    assert run.candidate_source == "recommender" and run.stats.notifications == 0
    assert run.violations == {k: 0 for k in run.violations}  # cap, quiet hours, capacity: all clean
    assert (run.stats.users_reachable, run.stats.users_below_floor) == (2, 2)
    assert not reaches_users(reachable=run.stats.users_reachable, reached=run.stats.users_planned)
    world.store.close()


def test_a_days_plan_asks_the_recommender_chunk_by_chunk_and_ranks_every_chunk_with_one_version(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The daily asset and the Lambda plan through one path: before, it asked the recommender for every
    user at once (10M users' contexts and candidates in memory) and only then planned in chunks. Now each
    chunk asks for its own users, and a version published during the run does not change the ranking of
    the chunks after it."""
    from notify_core.recommend.recommender import Recommender
    from notify_core.scheduling.service import plan_for_users
    from tests.recommend.conftest import make_world

    world = make_world(tmp_path)
    now = datetime.fromtimestamp(world.clock.now(), UTC)
    first = world.versions[-1]
    asked: list[list[str]] = []
    ranked_with: set[str] = set()
    rank_many = Recommender.rank_many

    def spy(self: Recommender, user_ids: list[str], **options: object) -> object:
        ranked = rank_many(self, user_ids, **options)  # type: ignore[arg-type]
        asked.append(list(user_ids))
        ranked_with.add(str(self.holder.snapshot().version))  # the snapshot the ranking read
        if len(asked) == 1:
            world.build_version()  # published while the run is under way
        return ranked

    monkeypatch.setattr(Recommender, "rank_many", spy)
    run = plan_for_users(world.store, ["u2", "u_new", "u1"], plan_day=now.date(), now=now, artefacts=world.artefacts,
                         k=5, chunk_users=1)
    assert asked == [["u1"], ["u2"], ["u_new"]]
    assert world.versions[-1] != first and ranked_with == {first}
    assert run.candidate_source == "recommender" and run.stats.users == 3 and run.stats.users_planned >= 2
    world.store.close()


def test_the_lake_fallback_ranks_only_the_users_it_is_asked_for() -> None:
    """Asked chunk by chunk, the lake's cosine fallback gives each chunk its own users' rows, the same rows
    it gives them when asked for everyone (before, every call ranked the whole lake)."""
    from notify_core.embeddings.store import CAMPAIGN, USER, state_schema, vector_series
    from notify_core.scheduling.candidates import LakeEmbeddings, candidates_from_embeddings

    rng = np.random.default_rng(3)

    def table(kind: str, ids: list[str]) -> pl.DataFrame:
        schema = state_schema(kind, 8)
        return pl.DataFrame({"id": ids}).with_columns(
            vector_series(rng.normal(size=(len(ids), 8)).astype(np.float32))).select(
            pl.col(c) if c in ("id", "vector") else pl.lit(None).alias(c) for c in schema).cast(schema)

    users = [f"u{i}" for i in range(9)]
    embeddings = LakeEmbeddings(users=table(USER, users), campaigns=table(CAMPAIGN, [f"c{i}" for i in range(6)]))
    eligible = ["c0", "c2", "c3", "c5"]
    everyone = candidates_from_embeddings(embeddings, eligible, user_ids=users, k=3)
    assert everyone.height == 9 * 3 and set(everyone["campaign_id"]) <= set(eligible)
    chunks = [candidates_from_embeddings(embeddings, eligible, user_ids=users[lo:lo + 4], k=3) for lo in (0, 4, 8)]
    for lo, chunk in zip((0, 4, 8), chunks, strict=True):
        assert set(chunk["user_id"]) == set(users[lo:lo + 4])
    assert pl.concat(chunks).equals(everyone)
    assert candidates_from_embeddings(None, eligible, user_ids=users, k=3).is_empty()
