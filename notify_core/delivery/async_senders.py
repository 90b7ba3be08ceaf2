"""The ``notify worker`` loop's senders on one event loop instead of ``concurrency`` threads.

Why: with one blocking connection per sending thread, 16 senders take turns on one GIL, and every socket
read, every SQLite statement and every wait for an outcome commit hands it to another thread and back;
the profile of the threaded worker (docs/peak-performance.md, "Delivery") had that glue and those
hand-backs spread over the whole delivery. Here ``concurrency`` coroutines in one thread each take the next
claim, render it, send it over their own keep-alive connection (:class:`AsyncWebhookSender`) and wait for
their outcome's commit; one committer thread commits whatever outcomes are waiting in one transaction
(the group grows with the load instead of the senders queueing on the write lock).

What stays the same (the invariants of the threaded senders):

* each sender waits for its own outcome's commit before it takes the next claim, so a ``kill -9`` can
  repeat at most ``concurrency`` sends (the reverted writer-thread design let senders run ahead of their
  commits and broke the duplicate budget; this does not);
* a retry's index entry is written before its status, in the committer's same turn;
* claims are sent in the order they were handed over, the next batch behind the current one, and
  :meth:`AsyncBatch.collect` (the stop path included) waits for the whole batch.

Used by :meth:`DeliveryWorker.run_forever` when the channel offers ``async_sender()`` (the webhook
channel) and ``WorkerOptions.async_senders`` is on; ``run_pass`` (Lambda, Dagster, tests) keeps the threads.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from notify_core.delivery.channels import Message, Outcome, SendResult
from notify_core.delivery.outcomes import OutcomeHealth, Outcomes, _Finish
from notify_core.delivery.summary import PassSummary, Result
from notify_core.errors import BackendError, NotifyError
from notify_core.store.port import Item

if TYPE_CHECKING:
    from notify_core.delivery.claims import _Claim

log = logging.getLogger("notify_core.delivery.worker")

Delivered = tuple[Result, float | None, bool]


class AsyncSender(Protocol):
    """One coroutine's sender (:class:`notify_core.delivery.channels.AsyncWebhookSender`)."""

    def send(self, message: Message, *, idempotency_key: str) -> Awaitable[SendResult]: ...

    def close(self) -> None: ...


class AsyncBatch:
    """One batch handed to the async senders; :meth:`collect` waits for all of it and counts it."""

    def __init__(self, claims: list[_Claim], profiles: Mapping[str, Item]) -> None:
        self.size = len(claims)
        self.profiles = profiles
        self._left = len(claims)
        self._done = threading.Event()
        if not claims:
            self._done.set()
        self.results: list[Delivered] = []
        self.errors: list[BaseException] = []

    def finished_one(self) -> None:  # the loop thread only
        self._left -= 1
        if self._left <= 0:
            self._done.set()

    def collect(self, summary: PassSummary) -> None:
        self._done.wait()
        for result in self.results:
            summary.count(*result)
        if self.errors:
            raise self.errors[0]


class AsyncSenders:
    """``concurrency`` sender coroutines in one event-loop thread, and one outcome committer thread."""

    def __init__(
        self, *, outcomes: Outcomes, concurrency: int, new_sender: Callable[[], AsyncSender],
        prepare: Callable[[_Claim, Mapping[str, Item]], Message | tuple[dict[str, Any], str]],
        now: Callable[[], float], request_id: Callable[[], str | None],
        on_send_time: Callable[[float], None], health: OutcomeHealth | None = None,
    ) -> None:
        self._outcomes = outcomes
        self._health = health or OutcomeHealth()
        self._concurrency = max(1, concurrency)
        self._new_sender = new_sender
        self._prepare = prepare
        self._now = now
        self._request_id = request_id
        self._on_send_time = on_send_time
        self._todo: deque[tuple[_Claim, AsyncBatch]] = deque()
        self._pending: list[tuple[_Finish, Item | None, asyncio.Future[None]]] = []
        self._pending_lock = threading.Lock()
        self._commit_wake = threading.Event()
        self._stopping = False
        self._loop = _new_loop()
        self._wake: asyncio.Event | None = None
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), name="deliver-async", daemon=True)
        self._committer = threading.Thread(target=self._commit_loop, name="deliver-commit", daemon=True)
        self._thread.start()
        started.wait()
        self._committer.start()

    # -- the main thread's side ----------------------------------------------------------------------
    def submit(self, claims: list[_Claim], profiles: Mapping[str, Item]) -> AsyncBatch:
        batch = AsyncBatch(claims, profiles)
        self._loop.call_soon_threadsafe(self._enqueue, claims, batch)
        return batch

    def close(self) -> None:
        """Stop after the claims handed over so far are finished (callers collect their batches first)."""
        if self._stopping:
            return
        self._stopping = True
        self._loop.call_soon_threadsafe(self._stop_senders)
        self._thread.join()
        self._commit_wake.set()
        self._committer.join()
        self._loop.close()

    # -- the loop thread -------------------------------------------------------------------------------
    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._wake = asyncio.Event()
        started.set()
        self._loop.run_until_complete(self._main())

    async def _main(self) -> None:
        await asyncio.gather(*(self._sender() for _ in range(self._concurrency)))

    def _enqueue(self, claims: list[_Claim], batch: AsyncBatch) -> None:
        self._todo.extend((claim, batch) for claim in claims)
        assert self._wake is not None
        self._wake.set()

    def _stop_senders(self) -> None:
        self._stopping = True
        assert self._wake is not None
        self._wake.set()

    async def _sender(self) -> None:
        sender = self._new_sender()
        todo, wake = self._todo, self._wake
        assert wake is not None
        try:
            while True:
                if not todo:
                    if self._stopping:
                        return
                    wake.clear()
                    await wake.wait()
                    continue
                claim, batch = todo.popleft()
                try:
                    if self._health.refusing:  # the Store refuses outcomes: do not send what cannot be recorded
                        batch.results.append(("lost_claim", None, False))
                        continue
                    batch.results.append(await self._deliver(sender, claim, batch.profiles))
                    self._health.ok()
                except NotifyError as exc:
                    # A Store failure mid-flight: the claim's lease expires and another pass re-claims it.
                    self._health.failed(exc)
                    log.warning("delivery step failed; the lease will expire and the item be retried",  # a trace: a bug
                                extra={"schedule_pk": claim.work.pk, "schedule_sk": claim.work.sk, "error": str(exc)},
                                exc_info=not isinstance(exc, BackendError))
                    batch.results.append(("lost_claim", None, False))
                except Exception as exc:  # noqa: BLE001 - raised again by collect, after the rest of the batch
                    batch.errors.append(exc)
                finally:
                    batch.finished_one()
        finally:
            sender.close()

    async def _deliver(self, sender: AsyncSender, claim: _Claim, profiles: Mapping[str, Item]) -> Delivered:
        item, outcomes, reclaimed = claim.item, self._outcomes, claim.work.kind == "reclaim"
        prepared = self._prepare(claim, profiles)
        if isinstance(prepared, tuple):  # suppressed by the user's preferences: nothing is sent
            fields, reason = prepared
            if not await self._commit(item, outcomes.pending(item, claim.token, fields), None):
                return "lost_claim", None, reclaimed
            return outcomes.suppressed(item, fields, claim.attempt, reason, reclaimed=reclaimed)
        started = time.perf_counter()
        try:
            result = await sender.send(prepared, idempotency_key=str(item["notification_id"]))
        except Exception as exc:  # noqa: BLE001 - a channel bug must not kill the worker: treat as retryable
            result = SendResult(Outcome.RETRYABLE, detail=f"{type(exc).__name__}: {exc}")
        self._on_send_time(time.perf_counter() - started)
        attempt = outcomes.prepare(item, claim.attempt, result, self._now(), request_id=self._request_id())
        if not await self._commit(item, outcomes.pending(item, claim.token, attempt.fields), attempt.retry_entry):
            return "lost_claim", None, reclaimed
        return outcomes.recorded(item, attempt, reclaimed=reclaimed)

    async def _commit(self, item: Item, entry: _Finish, retry_entry: Item | None) -> bool:
        """Queue the outcome for the committer and wait for its commit (the sender's own commit: see the
        module docstring); whether it stands (:meth:`Outcomes.committed`)."""
        done: asyncio.Future[None] = self._loop.create_future()
        with self._pending_lock:
            self._pending.append((entry, retry_entry, done))
        self._commit_wake.set()
        await done
        return self._outcomes.committed(item, entry)

    # -- the committer thread --------------------------------------------------------------------------
    def _commit_loop(self) -> None:
        while True:
            self._commit_wake.wait()
            self._commit_wake.clear()
            with self._pending_lock:
                batch, self._pending = self._pending, []
            if not batch:
                if self._stopping and not self._thread.is_alive():
                    return
                continue
            retries = [r for _, r, _ in batch if r is not None]
            try:
                if retries:
                    self._outcomes.write_retries(retries)
                self._outcomes.commit([entry for entry, _, _ in batch])
            except NotifyError as exc:
                for entry, _, _ in batch:
                    entry.error = exc
            except Exception as exc:  # noqa: BLE001 - a bug here must not leave every sender waiting for ever
                log.exception("outcome commit failed")
                error = BackendError(f"outcome commit failed: {type(exc).__name__}: {exc}")  # one error, as above:
                for entry, _, _ in batch:  # OutcomeHealth counts a commit's failure once
                    entry.error = error
            finally:
                self._loop.call_soon_threadsafe(_resolve, [done for _, _, done in batch])


def _resolve(futures: list[asyncio.Future[None]]) -> None:
    for done in futures:
        if not done.done():
            done.set_result(None)


def _new_loop() -> asyncio.AbstractEventLoop:
    """uvloop where installed (``notify serve`` already runs on it), else asyncio's own loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
