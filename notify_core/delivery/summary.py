"""What the delivery loop is tuned by (:class:`WorkerOptions`) and what one pass did (:class:`PassSummary`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from notify_core.scheduling.ids import DEFAULT_SHARDS

RETRY_DELAYS_S: tuple[float, ...] = (1.0, 5.0, 20.0)  # requirement 4.1: 1 s -> 5 s -> 20 s, then dead letter

Kind = Literal["new", "reclaim", "retry"]
Result = Literal["delivered", "retried", "dead_lettered", "duplicate", "lost_claim", "suppressed"]
TOO_LATE = "too_late"  # the suppression reason of a notification found more than ``max_late_s`` after its time


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerOptions:
    """Knobs of the delivery loop. Defaults suit one machine; the Lambda uses the same ones."""

    concurrency: int = 16  # sending threads
    lease_s: float = 30.0  # a claim older than this may be re-claimed by another worker
    lookback_minutes: int = 15  # a first start looks this far back; the retry index's full look, once a minute
    # a notification found later than this after its send time (an outage, a clock stepped forward) is not
    # sent: it is finished as suppressed ``too_late`` (the user's window has passed; the outage stays visible)
    max_late_s: float = 3600.0
    prefetch_s: float = 5.0  # scan a minute this long before it starts
    max_batch: int = 1000  # items handed to the threads per pass (retries interleave with big minutes)
    shards: int = DEFAULT_SHARDS
    poll_s: float = 0.25  # idle poll interval (retries due, other workers' expired leases)
    retry_delays_s: tuple[float, ...] = RETRY_DELAYS_S
    orphan_grace_s: float = 60.0  # a retry_scheduled item this overdue without an index entry is retried
    worker_id: str | None = None
    heartbeat_s: float = 1.0  # how often a looping worker says it is alive (0: never; claims then wait the lease)
    liveness_s: float = 4.0  # a heartbeat older than this: the worker is dead and its claims are re-claimed now
    # Workers beating on one Store split each minute's items between them (:mod:`notify_core.delivery.claims`);
    # a worker takes another's share only once it is this overdue, and only while that worker falls behind
    steal_after_s: float = 1.0
    # the looping worker (``run_forever``) sends on one event loop when the channel can (the webhook):
    # ``concurrency`` coroutines instead of threads (notify_core/delivery/async_senders.py); False: threads
    async_senders: bool = True

    @property
    def max_attempts(self) -> int:
        return 1 + len(self.retry_delays_s)


@dataclass(slots=True)
class PassSummary:
    claimed: int = 0
    delivered: int = 0
    retried: int = 0
    dead_lettered: int = 0
    duplicates: int = 0  # suppressed by the 24 h dedupe window
    lost_claims: int = 0  # another worker had it first
    refused_claims: int = 0  # the Store refused the claim's writes (its disk full): due again after a pause
    stolen: int = 0  # claimed from another live worker's share, which it had not reached
    reclaimed: int = 0  # expired leases taken over
    suppressed: int = 0  # claimed but not sent: the user opted out since it was planned
    minutes_done: int = 0
    repaired: int = 0  # derived rows re-created at minute close
    lateness: list[float] = field(default_factory=list)
    next_due_at: float | None = None
    in_flight: int = 0  # handed to the senders and not finished at the end of this step (pipelined loop)

    def add(self, other: PassSummary) -> None:
        for name in ("claimed", "delivered", "retried", "dead_lettered", "duplicates", "lost_claims", "refused_claims",
                     "reclaimed", "minutes_done", "repaired", "suppressed", "stolen"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.lateness.extend(other.lateness)

    @property
    def attempts(self) -> int:
        return self.delivered + self.retried + self.dead_lettered

    def count(self, result: Result, lateness: float | None, reclaimed: bool) -> None:
        """One notification's result in this pass."""
        if result == "lost_claim":
            self.lost_claims += 1
            return
        self.claimed += 1
        self.reclaimed += int(reclaimed)
        if result == "delivered":
            self.delivered += 1
            if lateness is not None:
                self.lateness.append(lateness)
        elif result == "retried":
            self.retried += 1
        elif result == "dead_lettered":
            self.dead_lettered += 1
        elif result == "suppressed":
            self.suppressed += 1
        else:
            self.duplicates += 1

    def as_dict(self) -> dict[str, Any]:
        lat = sorted(self.lateness)
        return {
            "claimed": self.claimed, "delivered": self.delivered, "retried": self.retried,
            "dead_lettered": self.dead_lettered, "duplicates": self.duplicates, "lost_claims": self.lost_claims,
            "refused_claims": self.refused_claims, "stolen": self.stolen,
            "reclaimed": self.reclaimed, "suppressed": self.suppressed, "minutes_done": self.minutes_done,
            "repaired": self.repaired,
            "lateness_p50_s": percentile(lat, 50), "lateness_p99_s": percentile(lat, 99),
            "lateness_max_s": lat[-1] if lat else None,
        }


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an already sorted list (None when empty)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]
