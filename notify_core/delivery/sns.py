"""The SNS adapter of the channel port (the aws environment): boto3 is imported here only."""

from __future__ import annotations

from typing import Any

from notify_core.delivery.channels import Message, Outcome, SendResult

_SNS_RETRYABLE = frozenset({"Throttling", "ThrottlingException", "ThrottledException", "InternalError",
                            "InternalFailure", "ServiceUnavailable", "KMSThrottlingException"})


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
            "Subject": message.title[:100] or "Notify",
            "MessageAttributes": {
                "idempotency_key": {"DataType": "String", "StringValue": idempotency_key},
                "user_id": {"DataType": "String", "StringValue": message.user_id},
                "campaign_id": {"DataType": "String", "StringValue": message.campaign_id},
            },
        }
        if self._fifo:
            params["MessageDeduplicationId"] = idempotency_key
            params["MessageGroupId"] = message.user_id
        try:
            self._client.publish(**params)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            retry = code in _SNS_RETRYABLE or status >= 500
            return SendResult(Outcome.RETRYABLE if retry else Outcome.PERMANENT, status=status or None,
                              detail=f"SNS {code}")
        except BotoCoreError as exc:  # endpoint unreachable, read timeout
            return SendResult(Outcome.RETRYABLE, detail=f"SNS {type(exc).__name__}")
        return SendResult(Outcome.DELIVERED, status=200)

    def close(self) -> None:
        return None
