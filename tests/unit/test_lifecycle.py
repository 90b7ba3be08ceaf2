"""The notification lifecycle (notify_core/lifecycle.py) is the one owner of statuses and moves: the
planner and the worker import it, and the moves they make are the ones it allows."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from notify_core import lifecycle
from notify_core.lifecycle import InvalidTransition, Status, can_move, check_move

ROOT = Path(__file__).resolve().parents[2] / "notify_core"


@pytest.mark.parametrize(("old", "new", "allowed"), [
    ("pending", "claimed", True), ("pending", "cancelled", True), ("pending", "sent", False),
    ("cancelled", "pending", True), ("cancelled", "claimed", False),
    ("claimed", "sent", True), ("claimed", "retry_scheduled", True), ("claimed", "dead_lettered", True),
    ("claimed", "duplicate", True), ("claimed", "claimed", True), ("claimed", "cancelled", False),
    ("claimed", "pending", False), ("retry_scheduled", "claimed", True), ("retry_scheduled", "sent", False),
    ("sent", "claimed", False), ("sent", "cancelled", False), ("dead_lettered", "claimed", False),
    ("duplicate", "sent", False), ("nonsense", "sent", False), ("pending", "nonsense", False),
])
def test_moves(old: str, new: str, allowed: bool) -> None:
    assert can_move(old, new) is allowed
    if allowed:
        assert check_move(old, new) == Status(new)
    else:
        with pytest.raises(InvalidTransition, match="cannot go from"):
            check_move(old, new)


def test_terminal_statuses_go_nowhere_and_the_planner_owns_only_unclaimed_items() -> None:
    assert {Status.SENT, Status.DEAD_LETTERED, Status.DUPLICATE, Status.CANCELLED} == lifecycle.TERMINAL
    assert all(not lifecycle.TRANSITIONS[s] for s in lifecycle.TERMINAL - {Status.CANCELLED})
    assert lifecycle.PLANNER_OWNED.isdisjoint(lifecycle.DELIVERED_STATES)
    assert set(lifecycle.TRANSITIONS) == set(Status)


def test_statuses_are_defined_only_in_the_lifecycle_module() -> None:
    """No second copy: no other module assigns a status string to a module-level name."""
    values = {s.value for s in Status}
    owners = []
    for path in ROOT.rglob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
                    and node.value.value in values):
                owners.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert owners == []
