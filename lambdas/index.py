"""The live recommendation index of a process, for the handlers that serve or update it."""

from __future__ import annotations

from notify_core.recommend.artefacts import build_artefact_store
from notify_core.recommend.serving import IndexHolder
from notify_core.settings import NotifySettings


def build_holder(settings: NotifySettings) -> IndexHolder:
    """The index holder over the environment's artefact store (``lambdas.runtime.Runtime.holder`` builds it
    once per process)."""
    return IndexHolder(build_artefact_store(settings), search_effort=settings.recommend_effort)
