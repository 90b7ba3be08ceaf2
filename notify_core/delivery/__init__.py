"""Delivery (issue 7): claim due notifications, render, send through a channel, record, retry, feed back.

``worker.DeliveryWorker`` is the loop (the ``deliver_notifications`` Lambda and ``notify worker`` both run
it); ``channels`` holds the Channel port and its outbox / webhook / SNS adapters; ``render`` fills
templates and adds tracking links; ``tracking`` resolves a tracking link to its event and redirect;
``feedback`` turns deliveries, opens and clicks into campaign CTR, fatigue state and planner inputs.
No Dagster and no Lambda imports here.
"""

from notify_core.clock import Clock, ManualClock, OffsetClock, SystemClock
from notify_core.delivery.channels import (
    Channel,
    Message,
    OutboxChannel,
    Outcome,
    SendResult,
    SnsChannel,
    WebhookChannel,
    build_channel,
    read_outbox,
    sign,
    verify_signature,
)
from notify_core.delivery.worker import RETRY_DELAYS_S, DeliveryWorker, PassSummary, WorkerOptions, build_worker

__all__ = [
    "RETRY_DELAYS_S",
    "Channel",
    "Clock",
    "DeliveryWorker",
    "ManualClock",
    "OffsetClock",
    "Message",
    "OutboxChannel",
    "Outcome",
    "PassSummary",
    "SendResult",
    "SnsChannel",
    "SystemClock",
    "WebhookChannel",
    "WorkerOptions",
    "build_channel",
    "build_worker",
    "read_outbox",
    "sign",
    "verify_signature",
]
