"""The handler edge: every HTTP handler's routing, validation, authentication and errors, in one place.

Built on AWS Lambda Powertools' event-handler resolvers with ``enable_validation=True``: request and
response models are pydantic, path and query parameters are typed, and the OpenAPI document is
generated from the same declarations (:func:`openapi_document`). Each handler module declares its routes
on its own :class:`Edge` and exports ``handler = edge.handler``; that one function answers

* API Gateway HTTP API events (payload 2.0, ``"version": "2.0"``) through ``APIGatewayHttpResolver``,
* API Gateway REST API ``aws-proxy`` events (payload 1.0) through ``APIGatewayRestResolver`` (always a
  proxy reply: a bare dict would make a REST API answer 502),
* direct invocations (no ``requestContext``) through the module's ``direct`` function, if it has one.

Before a route runs, :meth:`Edge.handler` checks the API key (``Authorization: Bearer nk_...`` or
``X-API-Key``) against the route's scope with :meth:`notify_core.security.keycheck.KeyCheck.authorize`: 401
without a valid key, 403 without the scope, 429 with ``Retry-After`` over the key's rate. Routes with
``scope=None`` (the signed tracking links) are public. The check is bound to the route Powertools resolves,
not to the edge's own reading of the path: every scoped route is registered with a middleware
(:func:`_scope_guard`), and a request that reaches it without its scope checked is checked there. The edge's
early check (before the body is parsed) reads the path as Powertools does (a named HTTP API stage cut off,
REST's trailing slashes), but it is the wrapper that makes a difference between the two fail closed: a path
Powertools routes and the edge did not match once answered an admin route with no key (``/v1/users/u2//``
on a REST API event).

Every error is one JSON shape, ``{"error": {"type", "message", "request_id"}}``, built by
:func:`error_reply` from a ``NotifyError`` subclass (its ``http_status``) or from Powertools' validation
error (400). Nothing else becomes anything but a logged 500 without internals.

Resolvers keep the current event on themselves, so each thread gets its own pair (the local gateway runs
handlers on a thread pool); the request's id, caller and source travel in a context variable
(:func:`current`).
"""

from __future__ import annotations

import binascii
import contextvars
import dataclasses
import json
import logging
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.api_gateway import ApiGatewayResolver
from aws_lambda_powertools.event_handler.exceptions import NotFoundError as RouteNotFound
from aws_lambda_powertools.event_handler.middlewares import NextMiddleware
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)
from pydantic import BaseModel

from lambdas import runtime
from lambdas.http import error_payload, error_reply, json_reply, observed
from lambdas.routes import declared, http_api_path
from notify_core.errors import PayloadTooLargeError, UnsupportedMediaTypeError
from notify_core.security.keycheck import ApiKey, bearer_token

log = logging.getLogger("lambdas.edge")

SECURITY_SCHEME = "apiKey"
_FORM_TYPES = ("multipart/", "application/x-www-form-urlencoded")


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """What a route may want to know about its caller (for the audit trail and logs)."""

    request_id: str
    key: ApiKey | None
    source: str
    headers: Mapping[str, str] = field(default_factory=dict)
    checked: str | None = None  # the scope whose key check this request passed (None: none yet)

    @property
    def actor(self) -> str:
        return self.key.key_id if self.key is not None else "anonymous"


class ErrorBody(BaseModel):
    type: str
    message: str
    request_id: str


class ErrorOut(BaseModel):
    """Every error reply."""

    error: ErrorBody


_ERRORS = {400: "Bad request", 401: "No valid API key", 403: "The key lacks the scope",
           404: "Not found", 413: "Body too large", 415: "Body not JSON", 429: "Over the key's rate (see Retry-After)",
           503: "A backing service failed; retry after Retry-After seconds"}

_current: contextvars.ContextVar[RequestInfo] = contextvars.ContextVar("notify_request")


def current() -> RequestInfo:
    """The request being handled (inside a route function)."""
    return _current.get()


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:10]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body",)) or "request"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)


def _powertools_error(exc: Exception) -> Response[Any]:
    rid = current().request_id if _current.get(None) is not None else uuid.uuid4().hex
    if isinstance(exc, RequestValidationError):
        status, kind, message = 400, "ValidationError", _validation_message(exc)
    elif isinstance(exc, RequestUnsupportedContentType):
        status, kind, message = 415, "UnsupportedMediaTypeError", "the request body must be application/json"
    elif isinstance(exc, (UnicodeDecodeError, binascii.Error)):
        status, kind, message = 400, "ValidationError", "request body is not valid UTF-8 / base64"
    elif isinstance(exc, RecursionError):
        status, kind, message = 400, "ValidationError", "request body is nested too deeply"
    elif isinstance(exc, RouteNotFound):
        status, kind, message = 404, "NotFoundError", "no such route"
    else:
        reply = error_reply(exc, rid=rid)
        return Response(status_code=reply["statusCode"], content_type="application/json", body=reply["body"],
                        headers={k: v for k, v in reply["headers"].items() if k != "content-type"})
    return Response(status_code=status, content_type="application/json",
                    body=json.dumps(error_payload(kind, message, rid)))


def _template_regex(path: str) -> re.Pattern[str]:
    """The paths of a route template, at least every path either Powertools resolver routes to it: a
    parameter is any run of characters but ``/`` (Powertools' is a narrower set), trailing slashes allowed
    (the REST resolver's rule; the HTTP one has none, and a path it does not route is its 404)."""
    return re.compile("^" + re.sub(r"<(\w+)>", r"(?P<\1>[^/]+)", path) + "/*$")


def _authorize(headers: Mapping[str, str], scope: str) -> ApiKey | None:
    """The key of a request allowed ``scope`` (raises 401/403/429); None when auth is off (the explicit
    ``--insecure-no-auth``)."""
    gate = runtime.auth()
    return gate.keyring.authorize(bearer_token(headers), scope) if gate.keyring is not None else None


def _scope_guard(scope: str) -> Callable[[ApiGatewayResolver, NextMiddleware], Response[Any]]:
    """The middleware of a route needing ``scope``: the key check unless the edge already checked this
    request for that scope. Powertools runs it for the route it resolved, so a path the edge's early check
    read differently (another stage, another spelling) is still checked, against the scope of the route
    that actually runs (after request validation: such a request may see a 400 before its 401)."""

    def guard(app: ApiGatewayResolver, next_middleware: NextMiddleware) -> Response[Any]:
        info = _current.get(None) or RequestInfo(request_id=uuid.uuid4().hex, key=None, source="")
        if info.checked != scope:  # (no RequestInfo: not called through the edge; no headers, so a 401)
            _current.set(dataclasses.replace(info, key=_authorize(info.headers, scope), checked=scope))
        return next_middleware(app)

    return guard


@dataclass(frozen=True)
class RouteSpec:
    method: str
    path: str  # Powertools syntax: /v1/users/<user_id>/recommendations
    scope: str | None  # None: public
    func: Callable[..., Any]
    status_code: int
    summary: str
    max_body: int | None
    regex: re.Pattern[str]
    response_model: Any = None  # documented in OpenAPI (the reply itself is built by the route)
    validate: bool = True  # False: a binary reply Powertools' response validation cannot serialise
    forms: bool = False  # True: a form body is accepted (and never read): RFC 8058 one-click unsubscribe POSTs
    also: Mapping[int, str] = field(default_factory=dict)  # other success statuses, same model: status -> meaning

    @property
    def template(self) -> str:
        """The API Gateway / Starlette syntax of :attr:`path`: /v1/users/{user_id}/recommendations."""
        return re.sub(r"<(\w+)>", r"{\1}", self.path)


class Edge:
    """One handler module's HTTP API: routes with scopes, and :meth:`handler` for every event shape."""

    def __init__(self, name: str, *, direct: Callable[[Any, Any], Any] | None = None) -> None:
        self.name = name
        self.direct = direct
        self.routes: list[RouteSpec] = []
        # Idle Powertools resolvers (by payload version 2.0 or not): each request in flight takes one for
        # itself, so requests side by side (the gateway's threads, or the calls of one coalesced batch on
        # one thread: notify_core.coalesce) never share a resolver's request state. ``_in_flight``: the
        # resolver this thread's (or greenlet's) request holds.
        self._idle: dict[bool, list[ApiGatewayResolver]] = {True: [], False: []}
        self._in_flight: contextvars.ContextVar[ApiGatewayResolver] = contextvars.ContextVar(f"edge_{name}")

    def route(self, method: str, path: str, *, summary: str, status_code: int = 200,
              max_body: int | None = None, response_model: Any = None, validate: bool = True,
              forms: bool = False, also: Mapping[int, str] | None = None,
              ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Declare a route of :data:`lambdas.routes.ROUTES` (its scope comes from there: one owner). ``also``:
        other success statuses the route answers with the same model (documented in OpenAPI)."""
        scope = declared(method, re.sub(r"<(\w+)>", r"{\1}", path)).scope

        def register(func: Callable[..., Any]) -> Callable[..., Any]:
            self.routes.append(RouteSpec(method=method.upper(), path=path, scope=scope, func=func,
                                         status_code=status_code, summary=summary, max_body=max_body,
                                         regex=_template_regex(path), response_model=response_model, validate=validate,
                                         forms=forms, also=dict(also or {})))
            self._idle = {True: [], False: []}  # resolvers built before this route are stale
            return func

        return register

    def register_on(self, app: ApiGatewayResolver) -> None:
        """Declare this module's routes (and the one error shape) on a Powertools resolver."""
        for spec in self.routes:
            responses: dict[int, Any] = {code: {"description": text, "content": {"application/json": {
                "model": ErrorOut}}} for code, text in _ERRORS.items() if spec.scope or code not in (401, 403, 429)}
            if spec.response_model is not None:
                for code, meaning in {spec.status_code: "OK", **spec.also}.items():
                    responses[code] = {"description": meaning, "content": {"application/json": {
                        "model": spec.response_model}}}
            app.route(spec.path, spec.method, summary=spec.summary, status_code=spec.status_code,
                      responses=responses or None, enable_validation=spec.validate,
                      operation_id=f"{self.name}_{spec.func.__name__}",
                      security=[{SECURITY_SCHEME: [spec.scope]}] if spec.scope else None,
                      tags=[self.name], middlewares=[_scope_guard(spec.scope)] if spec.scope else None)(spec.func)
        app.exception_handler([RequestValidationError, RequestUnsupportedContentType, RecursionError, RouteNotFound,
                               UnicodeDecodeError, binascii.Error, Exception])(
            _powertools_error)

    def _resolver(self, v2: bool) -> ApiGatewayResolver:
        """An idle resolver for one request (built on first need; :meth:`_handle` gives it back)."""
        idle = self._idle[v2]
        try:
            return idle.pop()
        except IndexError:
            app = APIGatewayHttpResolver(enable_validation=True) if v2 else \
                APIGatewayRestResolver(enable_validation=True)
            self.register_on(app)
            return app

    def current_event(self) -> Any:
        """The Powertools event object of the request being handled here (raw body access)."""
        app = self._in_flight.get(None)
        if app is None:
            raise RuntimeError("no request in progress")
        return app.current_event

    def _match(self, method: str, path: str) -> RouteSpec | None:
        for spec in self.routes:
            if spec.method == method and spec.regex.match(path):
                return spec
        return None

    def handler(self, event: Any, context: Any) -> Any:
        """The Lambda entry point (see the module doc for the event shapes it answers), observed: the
        request id on every log line and produced record (:func:`notify_core.observability.request_context`),
        the cold start, and on Lambda one EMF line per invocation (:func:`lambdas.http.observed`)."""
        ctx = event.get("requestContext") if isinstance(event, Mapping) else None
        rid = str(ctx.get("requestId") or uuid.uuid4().hex) if isinstance(ctx, Mapping) else uuid.uuid4().hex
        function = str(getattr(context, "function_name", None) or f"lambdas.{self.name}")
        with observed(function, rid) as call:
            call.reply = self._handle(event, context, rid)
        return call.reply

    def _handle(self, event: Any, context: Any, rid: str) -> Any:
        if not isinstance(event, Mapping) or not isinstance(event.get("requestContext"), Mapping):
            if self.direct is None:
                return json_reply(400, error_payload("ValidationError", "not an API Gateway event", "direct"),
                                  rid="direct")
            return self.direct(event, context)
        ctx = event["requestContext"]
        v2 = event.get("version") == "2.0"
        if v2:
            http = ctx.get("http") or {}
            method, path, source = str(http.get("method", "")), http_api_path(event), str(http.get("sourceIp", ""))
        else:
            ident = ctx.get("identity") or {}
            method, path = str(event.get("httpMethod", "")), str(event.get("path", ""))
            source = str(ident.get("sourceIp", "")) if isinstance(ident, Mapping) else ""
        headers = event.get("headers") or {}
        try:
            spec = self._match(method.upper(), path)
            key = None
            checked = None
            if spec is not None and spec.scope is not None:
                key, checked = _authorize(headers, spec.scope), spec.scope
            if spec is not None and spec.method != "GET" and not spec.forms:
                kind = str(headers.get("content-type") or headers.get("Content-Type") or "").lower()
                if kind.startswith(_FORM_TYPES):  # routes read JSON; Powertools would try to parse these
                    raise UnsupportedMediaTypeError(f"the request body must be application/json, not {kind[:60]}")
            if spec is not None and spec.max_body is not None:
                body = event.get("body") or ""
                size = len(body) * 3 // 4 if event.get("isBase64Encoded") else len(body.encode())
                if size > spec.max_body:
                    raise PayloadTooLargeError(f"request body is {size} bytes; the limit is {spec.max_body}")
        except Exception as exc:
            return error_reply(exc, rid=rid)
        token = _current.set(RequestInfo(request_id=rid, key=key, source=source, headers=headers, checked=checked))
        app = self._resolver(v2)
        holding = self._in_flight.set(app)
        try:
            payload = dict(event)
            # Powertools keeps the event being resolved in a class attribute (``BaseRouter.current_event``), one
            # for every resolver of the process: right on Lambda (one request at a time), a race in the gateway,
            # whose threads resolve side by side (a handler read another request's body: 53 of 300 concurrent
            # event posts in tests/api/test_concurrent_requests.py). This request's own resolver gets the event
            # as instance attributes, which every read through it (routes, validation, the response) sees first.
            app.current_event = app._to_proxy_event(payload)
            app.lambda_context = context
            reply: dict[str, Any] = app.resolve(payload, context)
        except Exception as exc:  # a malformed event Powertools cannot read: still our 500 shape
            return error_reply(exc, rid=rid)
        finally:
            self._in_flight.reset(holding)
            self._idle[v2].append(app)
            _current.reset(token)
        # One spelling of header names on both payload versions (lower case, as HTTP/2 sends them).
        if reply.get("headers"):
            reply["headers"] = {k.lower(): v for k, v in reply["headers"].items()}
            reply["headers"]["x-request-id"] = rid
        elif "multiValueHeaders" in reply:
            reply["multiValueHeaders"] = {k.lower(): v for k, v in reply["multiValueHeaders"].items()}
            reply["multiValueHeaders"]["x-request-id"] = [rid]
        else:
            reply["headers"] = {"x-request-id": rid}
        return reply
