"""``python -m notify_cli.<module>``: one module's commands run without the ``notify`` group (the tests
start the gateway, the consumer and the worker this way), with the same private umask ``notify`` sets
before every subcommand, so no way of starting a command writes files others can read."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer

from notify_core.security.files import use_private_umask


def run_standalone(*commands: Callable[..., Any]) -> None:
    """Run ``commands`` as a stand-alone app (one command: no subcommand name) under the private umask."""
    use_private_umask()
    app = typer.Typer(add_completion=False, no_args_is_help=len(commands) > 1)
    for command in commands:
        app.command()(command)
    app()
