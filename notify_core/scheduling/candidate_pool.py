"""The recommender's candidates of each chunk, ranked in worker processes: every core of the box.

Why: the recommender ranks each user in Python (~2 ms of CPU a real demo user on the 2-core box, where the
bare ANN top 20 costs ~0.03 ms: ``bench/bench_daily_plan.py``), holding its process's GIL, and a day's plan
asks it for every user. In the planning process alone, a 2-core box plans at half its speed and a 16-core
one at a sixteenth. Here each chunk's users are cut where the recommender cuts its batched ANN searches
(``SEARCH_BLOCK``, 1,000 users); the workers take the blocks as they come free, each ranking with its own
Store connection and the index version the run pinned, and the blocks come back in order. So every user's
cosines, to the last bit, and the chunk's frame are the ones the planning process would have built.

The workers are spawned (never forked: a forked SQLite connection or OpenMP pool is undefined behaviour),
open their backends with the caller's picklable ``reopen``, and load the pinned version itself, whatever
the pointer says by then. The overlay (campaigns created since that build) is read once by each worker at
its start. A worker that dies (kill -9, out of memory) fails the plan with a :class:`BackendError` naming
it, never a hang: the chunks written before it are whole, and a re-run re-plans idempotently.
"""

from __future__ import annotations

import math
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING

import polars as pl

from notify_core.errors import BackendError
from notify_core.recommend.recommender import SEARCH_BLOCK
from notify_core.scheduling.models import CANDIDATES

if TYPE_CHECKING:
    from notify_core.recommend.artefacts import ArtefactStore
    from notify_core.recommend.recommender import Recommender
    from notify_core.settings import NotifySettings
    from notify_core.store.port import Store

# Opens the backends a worker ranks from: the Store (sealed as the caller's is) and the artefact store.
# Must pickle (a module-level function, or a functools.partial of one over the settings).
Reopen = Callable[[], "tuple[Store, ArtefactStore]"]
# Below this many users in the whole run the pool is not started: spawning a worker (imports, the index
# loaded) costs ~2-3 s, ~1,000 users' ranking on the 2-core box.
POOL_MIN_USERS = 20_000


def backends_of(settings: NotifySettings) -> tuple[Store, ArtefactStore]:
    """A worker's Store and artefact store, built from the deployment's settings as every entry point builds
    them (the asset passes ``functools.partial(backends_of, settings)`` as ``reopen``)."""
    from notify_core.recommend.artefacts import build_artefact_store
    from notify_core.store.factory import build_store

    return build_store(settings), build_artefact_store(settings)


def recommended_frame(recommender: Recommender, user_ids: list[str], *, k: int, now: datetime) -> pl.DataFrame:
    """The recommender's top ``k`` of ``user_ids`` as the planner's CANDIDATES (relevance on the planner's
    scale: :meth:`Recommender.relevance`), users in the order asked, each user's best first."""
    ranked = recommender.rank_many(user_ids, limit=k, now=now)
    return pl.DataFrame({"user_id": ranked.user_ids, "campaign_id": ranked.campaign_ids,
                         "relevance": recommender.relevance(ranked.scores)}, schema=CANDIDATES)


def pinned_recommender(store: Store, artefacts: ArtefactStore, *, version: str | None, now: datetime,
                       ) -> Recommender | None:
    """A recommender whose index never changes under it: ``version`` (None: the one published now), polled
    once; None when no version is published. Its clock stands at ``now`` (cooldowns, campaign dates)."""
    from notify_core.clock import ManualClock
    from notify_core.recommend.index import load_version
    from notify_core.recommend.recommender import Recommender
    from notify_core.recommend.serving import IndexHolder

    if version is None:
        holder = IndexHolder(artefacts, refresh_seconds=math.inf)
    else:
        holder = IndexHolder(artefacts, refresh_seconds=math.inf, loader=lambda a, _current: load_version(a, version))
    loaded = holder.snapshot().base
    if version is not None and (loaded is None or loaded.version != version):
        raise BackendError(f"index version {version} did not load here: {holder.last_error or 'another one did'}")
    if loaded is None:
        return None
    return Recommender(store=store, holder=holder, clock=ManualClock(now))


# -- the worker process's side -------------------------------------------------------------------
_worker: tuple[Recommender, int, datetime] | Exception | None = None


def _start(reopen: Reopen, version: str, now: datetime, k: int) -> None:
    """Open the backends and the pinned version. A failure is kept and raised by the first :func:`_rank`: an
    initializer's exception would only mark the pool broken, and the caller would never see its reason."""
    global _worker
    try:
        store, artefacts = reopen()
        recommender = pinned_recommender(store, artefacts, version=version, now=now)
        if recommender is None:
            raise BackendError(f"index version {version} is not readable from a worker")
        _worker = (recommender, k, now)
    except Exception as exc:  # handed to the caller whole by _rank
        _worker = exc


def _rank(user_ids: list[str]) -> pl.DataFrame:
    if _worker is None:
        raise BackendError("candidate worker used before it started")
    if isinstance(_worker, Exception):
        raise _worker
    recommender, k, now = _worker
    return recommended_frame(recommender, user_ids, k=k, now=now)


# -- the planning process's side -----------------------------------------------------------------
class CandidatePool:
    """A :data:`~notify_core.scheduling.service.CandidateSource` that ranks in ``workers`` processes.

    A context manager: the workers start on the first chunk and stop when the block ends."""

    def __init__(self, *, reopen: Reopen, version: str, now: datetime, k: int, workers: int) -> None:
        if workers < 2:
            raise ValueError("a pool of fewer than 2 workers: rank in the planning process instead")
        self.workers = workers
        self._start_args = (reopen, version, now, k)
        self._executor: ProcessPoolExecutor | None = None

    def __call__(self, user_ids: list[str]) -> pl.DataFrame:
        if not user_ids:
            return pl.DataFrame(schema=CANDIDATES)
        if self._executor is None:
            self._executor = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                                 initializer=_start, initargs=self._start_args)
        # one task a search block of the recommender, in order: each worker searches the blocks one process
        # would (Recommender.recommend_many: a user's cosines depend on its block, to the last bit), and
        # whichever worker is free takes the next block
        slices = [user_ids[lo : lo + SEARCH_BLOCK] for lo in range(0, len(user_ids), SEARCH_BLOCK)]
        try:
            frames = list(self._executor.map(_rank, slices))
        except BrokenProcessPool as exc:
            raise BackendError(f"a candidate worker process died ({exc}); the chunks written before it are "
                               "whole, and planning the day again completes it") from exc
        return pl.concat(frames) if frames else pl.DataFrame(schema=CANDIDATES)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def __enter__(self) -> CandidatePool:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()


def worker_count(setting: int, *, users: int) -> int:
    """Workers for a run of ``users``: ``setting``, or with 0 one per core this process may use (its CPU
    affinity and its container's CPU quota: ``joblib.cpu_count``, not the host's count, so a pod limited to 2
    CPUs on a 64-core node starts 2); 1 for a run too small to pay for them."""
    import joblib

    wanted = setting or max(1, int(joblib.cpu_count(only_physical_cores=False)))
    return wanted if users >= POOL_MIN_USERS else 1
