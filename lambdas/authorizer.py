"""Lambda ``authorizer``: API Gateway's request authorizer, the same key check as the handler edge.

For an HTTP API (payload 2.0, "simple responses") it answers ``{"isAuthorized": bool, "context": {...}}``;
for a REST API (``TOKEN`` / ``REQUEST`` authorizer) an IAM policy for the method ARN. It calls
:meth:`notify_core.security.keycheck.KeyCheck.authorize` with the scope the route needs (from the handler
one route table, :data:`lambdas.routes.ROUTES`, from which the handler edges take their scopes too), without the rate
limit: API Gateway throttles in front, and the handler edge (which checks the key again, defence in
depth) applies the per-key limit. A refusal never says why (API Gateway answers 401/403 itself).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from lambdas import runtime
from lambdas.routes import http_api_path, requested
from notify_core.errors import NotifyError
from notify_core.security.keycheck import bearer_token

log = logging.getLogger("lambdas.authorizer")


def _request(event: Mapping[str, Any]) -> tuple[str, str, Any]:
    if event.get("version") == "2.0":
        http = (event.get("requestContext") or {}).get("http") or {}
        return str(http.get("method", "")), http_api_path(event), event.get("headers") or {}
    token = event.get("authorizationToken")  # a TOKEN authorizer gets only the header's value
    headers = {"authorization": token} if token else (event.get("headers") or {})
    method, path = event.get("httpMethod"), event.get("path")
    if not method:  # TOKEN events carry only methodArn: arn:...:api/stage/METHOD/the/path
        parts = str(event.get("methodArn", "")).split("/", 3)
        method, path = (parts[2], "/" + parts[3]) if len(parts) == 4 else ("", "")
    return str(method), str(path), headers


def decide(event: Mapping[str, Any]) -> tuple[bool, dict[str, str]]:
    """(allowed, context for the integration): one key check, the scope of the route asked for."""
    method, path, headers = _request(event)
    spec = requested(event, method, path)
    if spec is None:
        return False, {}
    if spec.scope is None:
        return True, {"key_id": "", "scopes": ""}
    gate = runtime.auth()
    if gate.keyring is None:
        return True, {"key_id": "anonymous", "scopes": ""}
    try:
        key = gate.keyring.authorize(bearer_token(headers), spec.scope, rate_limit=False)
    except NotifyError as exc:
        log.info("authorizer refused", extra={"status": exc.http_status, "path": path})
        return False, {}
    return True, {"key_id": key.key_id, "scopes": ",".join(key.scopes)}


def handler(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    allowed, ctx = decide(event)
    if event.get("version") == "2.0":
        return {"isAuthorized": allowed, "context": ctx}
    return {"principalId": ctx.get("key_id") or "anonymous", "context": ctx,
            "policyDocument": {"Version": "2012-10-17", "Statement": [{
                "Action": "execute-api:Invoke", "Effect": "Allow" if allowed else "Deny",
                "Resource": event.get("methodArn", "*")}]}}
