"""Capture: validate a request body, route each good event to its topic keyed by user, produce durably.

The reply lists every event of the request with its fate. Good events are produced in one
``produce_batch`` (one transaction on the local log, one wait for acks on Kafka) before the reply, so a
202 means "durably in the stream". If the stream fails, the whole call raises ``BackendError`` (503) and
the client retries the same body: event ids make the retry harmless.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from notify_core.clock import Clock, utcnow
from notify_core.events.models import VALIDATED_HEADERS, encode_event, parse_batch, topic_for
from notify_core.metrics import observe_capture
from notify_core.observability import current_request_id
from notify_core.stream.port import REQUEST_ID_HEADER, Message, Stream

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EventResult:
    index: int
    event_id: str | None
    status: str  # "accepted" | "rejected"
    topic: str | None = None
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index, "event_id": self.event_id, "status": self.status}
        if self.topic is not None:
            out["topic"] = self.topic
        if self.reason is not None:
            out["reason"] = self.reason
        return out


@dataclass(frozen=True, slots=True)
class CaptureResult:
    results: list[EventResult]
    accepted: int
    rejected: int

    @property
    def status_code(self) -> int:
        """202 when anything was accepted; 400 when every event was rejected."""
        return 202 if self.accepted else 400

    def as_dict(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "rejected": self.rejected, "results": [r.as_dict() for r in self.results]}


def capture_events(raw: bytes | str, *, stream: Stream, clock: Clock) -> CaptureResult:
    """Validate, route and produce; raises ``ValidationError``/``PayloadTooLargeError``/``BackendError``.

    ``clock`` dates the sane window of event times (no more than a day ahead of it).
    """
    parsed = parse_batch(raw, now=utcnow(clock))
    messages: list[Message] = []
    results: list[EventResult] = []
    rid = current_request_id()  # the HTTP edge's request id travels in each record's headers to the Store row
    # ... and the mark that these models validated each event, so the consumer may skip decoding it again
    headers: tuple[tuple[str, bytes], ...] = ((REQUEST_ID_HEADER, rid.encode()),) if rid else ()
    headers += VALIDATED_HEADERS
    for item in parsed.accepted:
        event = item.event
        topic = topic_for(event)
        messages.append(Message(topic, event.user_id.encode(), encode_event(event), headers))
        results.append(EventResult(item.index, event.event_id, "accepted", topic=topic))
    results.extend(EventResult(r.index, r.event_id, "rejected", reason=r.reason) for r in parsed.rejected)
    results.sort(key=lambda r: r.index)
    stream.produce_batch(messages)
    observe_capture(accepted=len(messages), rejected=len(parsed.rejected))
    if log.isEnabledFor(logging.INFO):
        log.info("events captured", extra={"accepted": len(messages), "rejected": len(parsed.rejected),
                                           "topics": sorted({m.topic for m in messages})})
    return CaptureResult(results, accepted=len(messages), rejected=len(parsed.rejected))
