"""Channels: outbox lines, webhook signature + Idempotency-Key on a real loopback sink, error classes, SNS."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from notify_core.clock import ManualClock
from notify_core.delivery import channels
from notify_core.delivery.channels import (
    ALREADY_IN_OUTBOX,
    Message,
    OutboxChannel,
    Outcome,
    WebhookChannel,
    classify_status,
    read_outbox,
    sign,
    verify_signature,
)
from notify_core.delivery.sns import SnsChannel
from tests.delivery.conftest import NOW, SECRET, SinkProcess, start_sink

MSG = Message(notification_id="n1", user_id="u1", campaign_id="c1", title="T", body="hello http://x/t/n1",
              link="http://x/t/n1", open_pixel="http://x/o/n1", send_at=NOW.strftime("%Y-%m-%dT%H:%M:%SZ"))


def test_outbox_appends_one_flushed_line_per_send_and_skips_a_torn_tail(tmp_path: Path, clock: ManualClock) -> None:
    channel = OutboxChannel(tmp_path / "out.jsonl", clock=clock)
    assert channel.send(MSG, idempotency_key="n1").ok
    assert channel.send(MSG, idempotency_key="n1").ok
    with (tmp_path / "out.jsonl").open("ab") as handle:
        handle.write(b'{"idempotency_key": "torn')  # what a kill -9 mid-write leaves
    rows = read_outbox(tmp_path / "out.jsonl")
    channel.close()
    assert [r["idempotency_key"] for r in rows] == ["n1", "n1"]
    assert rows[0]["body"] == MSG.body and rows[0]["link"] == MSG.link and rows[0]["sent_at"] == clock.now()


def test_a_restarted_outbox_ends_a_torn_line_so_the_next_send_is_readable(tmp_path: Path, clock: ManualClock) -> None:
    """What the 100k kill -9 loop found: the kernel stopped a killed worker's write at a 4 KiB page boundary,
    and the restarted worker's next line, appended to the fragment, was unreadable: a send recorded as
    sent and lost to the outbox's reader."""
    path = tmp_path / "out.jsonl"
    first = OutboxChannel(path, clock=clock)
    assert first.send(MSG, idempotency_key="before").ok
    first.close()
    whole = path.read_bytes()
    with path.open("ab") as handle:
        handle.write(whole[: len(whole) // 2])  # half of a line, as a write cut short by SIGKILL leaves it
    restarted = OutboxChannel(path, clock=clock)
    assert restarted.send(MSG, idempotency_key="after-1").ok and restarted.send(MSG, idempotency_key="after-2").ok
    restarted.close()
    assert [r["idempotency_key"] for r in read_outbox(path)] == ["before", "after-1", "after-2"]
    lines = path.read_bytes().split(b"\n")
    assert lines[1] == whole[: len(whole) // 2]  # the fragment is a line of its own, skipped by readers
    assert [json.loads(line)["idempotency_key"] for line in lines[2:] if line] == ["after-1", "after-2"]


def test_a_restarted_outbox_answers_its_predecessors_sends_without_writing_them_again(
        tmp_path: Path, clock: ManualClock) -> None:
    """A worker killed between its send and the outcome's commit: the restarted one re-claims the send and
    sends it again. The outbox already holds it, so it answers DELIVERED and writes nothing; a send that a
    kill tore is not in the outbox (readers skip it), so it is written again."""
    path = tmp_path / "out.jsonl"
    killed = OutboxChannel(path, clock=clock)
    assert killed.send(MSG, idempotency_key="written, not recorded").ok
    killed.close()
    with path.open("ab") as handle:
        handle.write(b'{"idempotency_key":"torn","sent_at":17964031')
    restarted = OutboxChannel(path, clock=clock)
    again = restarted.send(MSG, idempotency_key="written, not recorded")
    assert again.ok and again.detail == ALREADY_IN_OUTBOX
    assert restarted.send(MSG, idempotency_key="torn").detail != ALREADY_IN_OUTBOX
    assert restarted.send(MSG, idempotency_key="new").detail != ALREADY_IN_OUTBOX
    restarted.close()
    assert [r["idempotency_key"] for r in read_outbox(path)] == ["written, not recorded", "torn", "new"]


def test_the_outbox_reads_only_its_recent_end_for_a_predecessors_sends(
        tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """Opening a large outbox reads its last window only, and the window's first line, maybe cut, is not
    taken for a record: an older send is written again (a duplicate readers dedupe), never dropped."""
    path = tmp_path / "out.jsonl"
    first = OutboxChannel(path, clock=clock)
    for key in ("old", "recent"):
        assert first.send(MSG, idempotency_key=key).ok
    first.close()
    line_bytes = path.stat().st_size // 2
    monkeypatch.setattr(channels, "_RECENT_BYTES", line_bytes + line_bytes // 2)  # "old" cut in half
    restarted = OutboxChannel(path, clock=clock)
    assert restarted.send(MSG, idempotency_key="old").detail != ALREADY_IN_OUTBOX
    assert restarted.send(MSG, idempotency_key="recent").detail == ALREADY_IN_OUTBOX
    restarted.close()
    assert [r["idempotency_key"] for r in read_outbox(path)] == ["old", "recent", "old"]


def test_workers_sharing_an_outbox_answer_each_others_sends(tmp_path: Path, clock: ManualClock) -> None:
    """Two workers on one outbox, one killed after a send it had not recorded: the survivor takes the claim
    over and sends it again. Holding the file's lock it reads what the victim appended since its own last
    line, so it answers the victim's send without writing it, even as its very next send; a send it has not
    seen is written."""
    path = tmp_path / "out.jsonl"
    victim, survivor = OutboxChannel(path, clock=clock), OutboxChannel(path, clock=clock)
    assert survivor.send(MSG, idempotency_key="survivor's own").ok
    assert victim.send(MSG, idempotency_key="victim's, not recorded").ok
    victim.close()
    again = survivor.send(MSG, idempotency_key="victim's, not recorded")
    assert again.ok and again.detail == ALREADY_IN_OUTBOX
    assert survivor.send(MSG, idempotency_key="survivor's next").detail != ALREADY_IN_OUTBOX
    assert survivor.send(MSG, idempotency_key="victim's, not recorded").detail == ALREADY_IN_OUTBOX
    survivor.close()
    assert [r["idempotency_key"] for r in read_outbox(path)] == [
        "survivor's own", "victim's, not recorded", "survivor's next"]


def test_the_reader_keeps_a_record_glued_behind_another_writers_torn_line(tmp_path: Path, clock: ManualClock) -> None:
    """Two worker processes appending to one outbox: one is killed mid-line while the other keeps writing,
    so the live one's next record lands behind the fragment. The reader finds it at its record start."""
    path = tmp_path / "out.jsonl"
    live = OutboxChannel(path, clock=clock)
    assert live.send(MSG, idempotency_key="one").ok
    with path.open("ab") as killed:
        killed.write(b'{"idempotency_key":"torn","sent_at":17964031')  # the killed process's fragment
    assert live.send(MSG, idempotency_key="two").ok and live.send(MSG, idempotency_key="three").ok
    live.close()
    assert [r["idempotency_key"] for r in read_outbox(path)] == ["one", "two", "three"]
    assert len(path.read_bytes().split(b"\n")) == 4  # "two" really is glued to the fragment


def test_webhook_signs_the_body_and_sends_the_idempotency_key(sink: SinkProcess, clock: ManualClock) -> None:
    channel = WebhookChannel(sink.url, secret=SECRET, clock=clock, timeout_s=2.0)
    results = [channel.send(MSG, idempotency_key=f"key-{i}") for i in range(5)]
    channel.close()
    receipts = sink.stop()
    assert all(r.ok and r.status == 200 for r in results)
    assert [r["key"] for r in receipts] == [f"key-{i}" for i in range(5)]
    assert all(r["sig"] == 1 for r in receipts)  # the sink verified every HMAC signature


def test_webhook_with_a_wrong_secret_is_rejected_by_the_receiver(sink: SinkProcess, clock: ManualClock) -> None:
    channel = WebhookChannel(sink.url, secret="not-the-secret", clock=clock)
    result = channel.send(MSG, idempotency_key="k")
    channel.close()
    assert result.outcome is Outcome.PERMANENT and result.status == 401


def test_signature_verification_rejects_tampering_and_stale_timestamps() -> None:
    body = MSG.to_json()
    now = NOW.timestamp()
    ts = f"{now:.3f}"
    good = sign(SECRET, body, ts)
    assert verify_signature(SECRET, body, timestamp=ts, signature=good, now=now + 10)
    assert not verify_signature(SECRET, body + b" ", timestamp=ts, signature=good, now=now)
    assert not verify_signature("other", body, timestamp=ts, signature=good, now=now)
    old = f"{now - 3600:.3f}"
    assert not verify_signature(SECRET, body, timestamp=old, signature=sign(SECRET, body, old), now=now)


@pytest.mark.parametrize(("status", "outcome"), [(200, Outcome.DELIVERED), (204, Outcome.DELIVERED),
                                                 (500, Outcome.RETRYABLE), (503, Outcome.RETRYABLE),
                                                 (429, Outcome.RETRYABLE), (408, Outcome.RETRYABLE),
                                                 (425, Outcome.RETRYABLE), (502, Outcome.RETRYABLE),
                                                 (400, Outcome.PERMANENT), (404, Outcome.PERMANENT),
                                                 (410, Outcome.PERMANENT), (301, Outcome.PERMANENT)])
def test_status_classes(status: int, outcome: Outcome) -> None:
    assert classify_status(status) is outcome


def test_webhook_5xx_is_retryable_4xx_permanent_timeout_and_refused_retryable(tmp_path: Path,
                                                                             clock: ManualClock) -> None:
    failing = start_sink(tmp_path, "--fail-rate", "1", name="a.jsonl")
    rejecting = start_sink(tmp_path, "--permanent-rate", "1", name="b.jsonl")
    slow = start_sink(tmp_path, "--delay", "1.0", name="c.jsonl")
    try:
        failed = WebhookChannel(failing.url, secret=SECRET, clock=clock).send(MSG, idempotency_key="k")
        assert failed.outcome is Outcome.RETRYABLE
        rejected = WebhookChannel(rejecting.url, secret=SECRET, clock=clock).send(MSG, idempotency_key="k")
        assert rejected.outcome is Outcome.PERMANENT
        timed = WebhookChannel(slow.url, secret=SECRET, clock=clock, timeout_s=0.2).send(MSG, idempotency_key="k")
        assert timed.outcome is Outcome.RETRYABLE and "timeout" in timed.detail
    finally:
        for s in (failing, rejecting, slow):
            s.stop()
    port = int(failing.url.split(":")[2].split("/")[0])
    closed = WebhookChannel(f"http://127.0.0.1:{port}/hook", secret=SECRET, clock=clock, timeout_s=0.5)
    refused = closed.send(MSG, idempotency_key="k")
    assert refused.outcome is Outcome.RETRYABLE


@mock_aws
def test_sns_channel_publishes_with_the_key_as_deduplication_id() -> None:
    client = boto3.client("sns", region_name="eu-west-1")
    arn = client.create_topic(Name="notify.fifo", Attributes={"FifoTopic": "true"})["TopicArn"]
    channel = SnsChannel(arn, region="eu-west-1", client=client)
    assert channel.send(MSG, idempotency_key="n1").ok
    missing = SnsChannel(arn.replace("notify.fifo", "missing.fifo"), region="eu-west-1", client=client)
    assert missing.send(MSG, idempotency_key="n1").outcome is Outcome.PERMANENT


def test_a_header_value_with_a_line_break_is_permanent_and_never_sent(sink: SinkProcess, clock: ManualClock) -> None:
    """A CR/LF in a header value would split the request (header injection): refused before any byte goes."""
    channel = WebhookChannel(sink.url, secret=SECRET, clock=clock)
    bad = Message(**{**MSG.payload(), "unsubscribe": "http://x/u\r\nX-Evil: 1"})
    results = [channel.send(MSG, idempotency_key="k\r\nX-Evil: 1"), channel.send(bad, idempotency_key="k2")]
    channel.close()
    assert [r.outcome for r in results] == [Outcome.PERMANENT, Outcome.PERMANENT]
    assert sink.stop() == []


def test_the_sns_subject_and_group_id_are_what_sns_accepts() -> None:
    """SNS refuses a subject of 100 characters or more, or with a line break or a control character, and a
    FIFO group id outside 1-128 printable ASCII: such a notification was a permanent failure on SNS while
    the webhook delivered it. The subject keeps the title's words; the group id stays one per user."""
    from notify_core.delivery.sns import message_group_id, sns_subject

    long_title = "Autumn\r\nsale\ton \x00\u2028lanterns, " + "lanterns, " * 20
    subject = sns_subject(long_title)
    assert len(subject) < 100 and subject.startswith("Autumn sale on lanterns, lanterns,")
    assert not any(ord(c) < 32 or 127 <= ord(c) <= 159 or c in "\u2028\u2029" for c in subject)
    assert sns_subject("Line one\nline two") == "Line one line two"
    assert sns_subject("\r\n\t") == sns_subject("") == "Notify"
    assert sns_subject("caf\udce9 time").encode("utf-8")  # a lone surrogate becomes valid UTF-8
    assert message_group_id("12345") == "12345"
    for odd in ("user with spaces", "ünïcode", "x" * 129):
        group = message_group_id(odd)
        assert 1 <= len(group) <= 128 and group.isascii() and " " not in group
        assert group == message_group_id(odd) != message_group_id(odd + "!")


@mock_aws
def test_the_sns_channel_sends_the_cleaned_subject() -> None:
    client = boto3.client("sns", region_name="eu-west-1")
    arn = client.create_topic(Name="notify.fifo", Attributes={"FifoTopic": "true"})["TopicArn"]
    sent: list[dict[str, object]] = []
    client.meta.events.register("provide-client-params.sns.Publish", lambda params, **_: sent.append(params))
    channel = SnsChannel(arn, region="eu-west-1", client=client)
    title = "A" * 150 + "\n"
    assert channel.send(Message(**{**MSG.payload(), "title": title, "user_id": "a user"}), idempotency_key="n1").ok
    assert sent[0]["Subject"] == "A" * 99 and sent[0]["MessageGroupId"] != "a user"


@mock_aws
def test_the_sns_channel_carries_the_one_click_unsubscribe_as_message_attributes() -> None:
    """The webhook sends ``List-Unsubscribe`` and ``List-Unsubscribe-Post`` (RFC 8058); an SNS message carried
    the link only inside its JSON body, so a relay mapping attributes to mail headers had nothing to map."""
    client = boto3.client("sns", region_name="eu-west-1")
    arn = client.create_topic(Name="notify")["TopicArn"]
    sent: list[dict[str, Any]] = []
    client.meta.events.register("provide-client-params.sns.Publish", lambda params, **_: sent.append(params))
    channel = SnsChannel(arn, region="eu-west-1", client=client)
    link = "https://notify.example.com/u/n1.k1.sig"
    assert channel.send(Message(**{**MSG.payload(), "unsubscribe": link}), idempotency_key="n1").ok
    assert channel.send(MSG, idempotency_key="n2").ok  # no link: no attributes for it
    attributes = [{k: v["StringValue"] for k, v in p["MessageAttributes"].items()} for p in sent]
    assert attributes[0]["List-Unsubscribe"] == f"<{link}>"
    assert attributes[0]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "List-Unsubscribe" not in attributes[1] and attributes[1]["idempotency_key"] == "n2"


@mock_aws
@pytest.mark.parametrize(("code", "status", "outcome"), [
    ("KMSThrottling", 400, Outcome.RETRYABLE),  # SNS's own code for a throttled KMS call (botocore's model)
    ("Throttling", 400, Outcome.RETRYABLE),
    ("Throttled", 429, Outcome.RETRYABLE),  # the model's ThrottledException, on the wire as Throttled, HTTP 429
    ("InternalError", 500, Outcome.RETRYABLE),
    ("EndpointDisabled", 400, Outcome.PERMANENT),
    ("InvalidParameter", 400, Outcome.PERMANENT),  # e.g. a message over SNS's 256 KB
    ("KMSDisabled", 400, Outcome.PERMANENT),
])
def test_an_sns_error_lands_as_retry_or_dead_letter_by_its_code(code: str, status: int, outcome: Outcome) -> None:
    """SNS answers a throttled KMS call on an encrypted topic with the error code ``KMSThrottling`` (HTTP 400;
    ``KMSThrottlingException`` is the shape's name in the service model, not the code on the wire). The
    retryable set held only the shape's name, so a burst on an encrypted topic dead-lettered its
    notifications as permanent failures instead of retrying them a moment later."""
    client = boto3.client("sns", region_name="eu-west-1")
    arn = client.create_topic(Name="notify")["TopicArn"]

    def refuse(**_: Any) -> None:
        from botocore.exceptions import ClientError

        raise ClientError({"Error": {"Code": code, "Type": "Sender", "Message": "refused"},
                           "ResponseMetadata": {"HTTPStatusCode": status}}, "Publish")

    client.meta.events.register("before-call.sns.Publish", refuse)
    result = SnsChannel(arn, region="eu-west-1", client=client).send(MSG, idempotency_key="n1")
    assert (result.outcome, result.detail) == (outcome, f"SNS {code}")
