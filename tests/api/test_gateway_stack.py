"""`notify serve` runs on uvloop + httptools (issue 21): the C loop and parser, not asyncio + h11."""

from __future__ import annotations

import uvicorn

from lambdas.gateway import build_app, uvicorn_stack


def test_the_gateway_names_uvloop_and_httptools() -> None:
    assert uvicorn_stack() == {"loop": "uvloop", "http": "httptools"}


def test_uvicorn_loads_the_httptools_protocol_with_those_options() -> None:
    config = uvicorn.Config(build_app(), access_log=False, **uvicorn_stack())
    config.load()
    assert config.http_protocol_class.__name__ == "HttpToolsProtocol"
    assert config.loop == "uvloop"
