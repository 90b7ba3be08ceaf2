"""`notify serve` runs on uvloop + httptools (issue 21): the C loop and parser, not asyncio + h11; the parser
is httptools' protocol with a deadline on each request's headers."""

from __future__ import annotations

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from lambdas.gateway import build_app, uvicorn_stack


def test_the_gateway_names_uvloop_and_httptools() -> None:
    stack = uvicorn_stack()
    assert stack["loop"] == "uvloop" and issubclass(stack["http"], HttpToolsProtocol)


def test_uvicorn_loads_the_httptools_protocol_with_those_options() -> None:
    config = uvicorn.Config(build_app(), access_log=False, **uvicorn_stack())
    config.load()
    assert issubclass(config.http_protocol_class, HttpToolsProtocol)
    assert config.http_protocol_class.__name__ == "HeadersDeadlineProtocol"
    assert config.loop == "uvloop"
