"""The SNS adapter of the channel port (the aws environment): boto3 is imported here only."""

from __future__ import annotations

import hashlib
import re
from typing import Any

from notify_core.delivery.channels import (
    LIST_UNSUBSCRIBE_HEADER,
    LIST_UNSUBSCRIBE_POST_HEADER,
    LIST_UNSUBSCRIBE_POST_VALUE,
    Message,
    Outcome,
    SendResult,
)

# SNS Publish: "Subjects must be UTF-8 text with no line breaks or control characters, and less than 100
# characters long"; a FIFO MessageGroupId is 1-128 characters of ASCII letters, digits and punctuation.
_SUBJECT_MAX = 99
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_GROUP_ID = re.compile(r"^[\x21-\x7e]{1,128}$")
# Error codes as they come on the wire (``Error.Code``), not the service model's shape names: SNS answers a
# throttled KMS call on an encrypted topic with ``KMSThrottling`` (shape ``KMSThrottlingException``), HTTP 400,
# and its own throttling with ``Throttled`` (shape ``ThrottledException``), HTTP 429.
_SNS_RETRYABLE = frozenset({"Throttling", "ThrottlingException", "Throttled", "ThrottledException", "InternalError",
                            "InternalFailure", "ServiceUnavailable", "KMSThrottling", "KMSThrottlingException"})


class SnsChannel:
    """AWS SNS (the aws environment). FIFO topics get the key as ``MessageDeduplicationId``."""

    name = "sns"

    def __init__(self, topic_arn: str, *, region: str, client: Any = None, endpoint_url: str | None = None) -> None:
        if client is None:
            import boto3

            client = boto3.client("sns", region_name=region, endpoint_url=endpoint_url)
        self._client = client
        self.topic_arn = topic_arn
        self._fifo = topic_arn.endswith(".fifo")

    def send(self, message: Message, *, idempotency_key: str) -> SendResult:
        from botocore.exceptions import BotoCoreError, ClientError

        params: dict[str, Any] = {
            "TopicArn": self.topic_arn,
            "Message": message.to_json().decode(),
            "Subject": sns_subject(message.title),
            "MessageAttributes": {
                "idempotency_key": {"DataType": "String", "StringValue": idempotency_key},
                "user_id": {"DataType": "String", "StringValue": message.user_id},
                "campaign_id": {"DataType": "String", "StringValue": message.campaign_id},
            },
        }
        if message.unsubscribe:  # RFC 8058 one-click unsubscribe, named as the webhook's headers: for a relay
            params["MessageAttributes"] |= {  # that maps attributes to mail headers (the link is in the body too)
                LIST_UNSUBSCRIBE_HEADER: {"DataType": "String", "StringValue": f"<{message.unsubscribe}>"},
                LIST_UNSUBSCRIBE_POST_HEADER: {"DataType": "String", "StringValue": LIST_UNSUBSCRIBE_POST_VALUE}}
        if self._fifo:
            params["MessageDeduplicationId"] = idempotency_key
            params["MessageGroupId"] = message_group_id(message.user_id)
        try:
            self._client.publish(**params)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            retry = code in _SNS_RETRYABLE or status >= 500 or status == 429
            return SendResult(Outcome.RETRYABLE if retry else Outcome.PERMANENT, status=status or None,
                              detail=f"SNS {code}")
        except BotoCoreError as exc:  # endpoint unreachable, read timeout
            return SendResult(Outcome.RETRYABLE, detail=f"SNS {type(exc).__name__}")
        return SendResult(Outcome.DELIVERED, status=200)

    def close(self) -> None:
        return None


def sns_subject(title: str) -> str:
    """``title`` as SNS accepts a subject: control characters and line breaks as spaces, runs of spaces as one,
    at most 99 characters, valid UTF-8. Why: the webhook delivers any title, while SNS refused (a permanent
    400, so a dead letter) one of 100 characters or with a line break, which ``title[:100]`` passed on."""
    text = " ".join(_CONTROL.sub(" ", title).split())
    text = text.encode("utf-8", "replace").decode("utf-8")  # a lone surrogate is not UTF-8 text
    return text[:_SUBJECT_MAX].rstrip() or "Notify"


def message_group_id(user_id: str) -> str:
    """A FIFO topic's ``MessageGroupId`` for ``user_id`` (one group per user keeps a user's messages in order):
    the id itself when SNS accepts it, else a digest of it (an id with a space, non-ASCII or over 128)."""
    if _GROUP_ID.match(user_id):
        return user_id
    return "u-" + hashlib.sha256(user_id.encode("utf-8", "surrogatepass")).hexdigest()
