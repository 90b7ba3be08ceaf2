"""``python -m notify_cli.<module>``: one module's commands run without the ``notify`` group (the tests
start the gateway, the consumer and the worker this way), with what ``notify`` gives every subcommand: the
private umask, so no way of starting a command writes files others can read, and a Notify error the command
did not handle said in one ``error:`` line with its exit code (:func:`notify_cli.fail`), never a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import typer

from notify_cli import exit_code
from notify_core.errors import NotifyError
from notify_core.security.files import use_private_umask


def run_standalone(*commands: Callable[..., Any]) -> None:
    """Run ``commands`` as a stand-alone app (one command: no subcommand name) under the private umask."""
    use_private_umask()
    app = typer.Typer(add_completion=False, no_args_is_help=len(commands) > 1)
    for command in commands:
        app.command()(command)
    try:
        app()
    except NotifyError as exc:  # raised past click (typer.Exit is click's only inside it)
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exit_code(exc))
