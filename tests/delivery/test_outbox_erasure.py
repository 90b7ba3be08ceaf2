"""The outbox while a user is erased from it: the erasure rewrites the file (a new one, renamed over the old)
while ``notify worker`` keeps appending. Every send acknowledged before, during and after is in the outbox;
the erased user's lines are not."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

from notify_core.clock import ManualClock
from notify_core.delivery.channels import Message, OutboxChannel, read_outbox
from notify_core.erasure import erase_from_files
from tests.delivery.conftest import NOW

MSG = Message(notification_id="n", user_id="keep", campaign_id="c1", title="T", body="hello", link="http://x/t/n",
              open_pixel="http://x/o/n", send_at=NOW.strftime("%Y-%m-%dT%H:%M:%SZ"))


def _send(channel: OutboxChannel, user: str, key: str) -> None:
    assert channel.send(dataclasses.replace(MSG, user_id=user, notification_id=key), idempotency_key=key).ok


def test_a_send_after_the_erasure_lands_in_the_outbox_readers_see(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox" / "outbox.jsonl"
    channel = OutboxChannel(outbox, clock=ManualClock(NOW))  # the running worker's channel
    try:
        _send(channel, "keep", "before")
        _send(channel, "gone", "erased")
        assert erase_from_files([outbox], frozenset({"gone"})) == {str(outbox): 1}
        _send(channel, "keep", "after")
    finally:
        channel.close()
    assert [r["idempotency_key"] for r in read_outbox(outbox)] == ["before", "after"]


def test_sends_racing_erasures_are_all_kept_and_the_erased_user_is_gone(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox" / "outbox.jsonl"
    channel = OutboxChannel(outbox, clock=ManualClock(NOW))
    sent: list[str] = []
    done = threading.Event()

    def worker() -> None:
        for i in range(1500):
            _send(channel, "keep" if i % 3 else "gone", key := f"k{i}")
            sent.append(key)
        done.set()

    thread = threading.Thread(target=worker)
    thread.start()
    erasures = 0
    while not done.is_set():
        erase_from_files([outbox], frozenset({"gone"}))
        erasures += 1
    thread.join()
    erase_from_files([outbox], frozenset({"gone"}))
    channel.close()
    kept = [r["idempotency_key"] for r in read_outbox(outbox)]
    assert erasures >= 3
    assert kept == [k for i, k in enumerate(sent) if int(k[1:]) % 3], "an acknowledged send went missing"
